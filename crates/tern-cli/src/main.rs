//! `tern`: the Tern command-line tool.
//!
//! Today it carries `tern bench`, a server-agnostic benchmark that drives any
//! NATS server through the official `async-nats` client and compares Tern
//! with nats-server side by side.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Tern command-line tool.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about)]
#[command(
    after_help = "Makefile:\n  bench:\n  \t$(TERN) bench run --url nats://127.0.0.1:$(PORT) --scenario all"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark a NATS server, or compare Tern with nats-server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(command) => bench::main(command),
    }
}
