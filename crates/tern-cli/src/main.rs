//! `tern`: the Tern command-line tool. Its benchmark subcommands are being built.

fn main() {
    eprintln!("tern: no subcommands yet; see `make bench` once the benchmark lands");
    std::process::exit(2);
}
