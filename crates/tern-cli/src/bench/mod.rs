//! `tern bench`: server-agnostic load scenarios and a side-by-side comparison
//! of two server binaries.
//!
//! Scenarios speak NATS through the official `async-nats` client (except
//! `idle-conns`, which uses raw sockets), so they run against Tern and
//! nats-server alike. Server-side cost (CPU per message, resident memory) is
//! read from `/proc/<pid>` when the server's pid is known.

pub(crate) mod compare;
pub(crate) mod procstat;
pub(crate) mod report;
pub(crate) mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use scenarios::ScenarioKind;

/// Message sizes used when `--size` is not given.
const DEFAULT_SIZES: [usize; 2] = [16, 1024];

/// `tern bench` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Run scenarios against one already running server.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Start Tern and nats-server in turn, run every scenario on each, and
    /// print medians and tern/nats ratios.
    #[command(after_help = COMPARE_EXAMPLES)]
    Compare(CompareArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  tern bench run --url nats://127.0.0.1:4222 --scenario all
  tern bench run --server-pid \"$(pgrep -n nats-server)\" --store-dir /tmp/js --scenario js-pub-sync,js-pub-async,js-disk
      (JetStream scenarios: the server must run with JetStream, e.g. `nats-server -js -sd /tmp/js`)
  tern bench run --url nats://127.0.0.1:4222 --server-pid \"$(pgrep -n nats-server)\" --scenario pub,pubsub --size 16 --json
Makefile:
  bench:
  \t$(TERN) bench run --url nats://127.0.0.1:$(PORT) --server-pid $$(cat $(PIDFILE)) --scenario all";

const COMPARE_EXAMPLES: &str = "\
Servers are started on 127.0.0.1 with `-a 127.0.0.1 -p <free port>`, pinned with
`taskset -c <server-cpu>`; this process pins itself to <client-cpu>. Each scenario
gets a freshly started server, so peak RSS is per scenario. For the JetStream
scenarios (js-*) the servers also get `-js -sd <fresh temporary directory>`,
removed afterwards; nats-server keeps its defaults (it acks before fsync, Tern
fsyncs before acking).

Examples:
  tern bench compare --tern-bin target/release/tern-server --nats-bin \"$(which nats-server)\"
  tern bench compare --tern-bin ./tern-server --nats-bin ./nats-server --rounds 5 --scenarios pub,reqrep --out docs/bench.md
Makefile:
  bench-compare: release
  \t$(TERN) bench compare --tern-bin target/release/tern-server --nats-bin $$(which nats-server) --out docs/bench.md";

/// Scenario names accepted on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScenarioArg {
    /// Every scenario.
    All,
    /// 1 publisher, no subscribers.
    Pub,
    /// 1 publisher, 1 subscriber.
    Pubsub,
    /// 1 publisher, 4 subscribers on the same subject.
    Fanout,
    /// 1 publisher, 4 subscribers in one queue group.
    Queue,
    /// Sequential request-reply latency.
    Reqrep,
    /// Memory per idle connection (raw TCP).
    IdleConns,
    /// JetStream publish, awaiting each ack before the next (needs JetStream).
    JsPubSync,
    /// JetStream publish with 256 acks in flight (needs JetStream).
    JsPubAsync,
    /// js-pub-async, then store-dir bytes per stored message (needs --store-dir).
    JsDisk,
    /// Fill a stream, then consume it with a durable pull consumer and explicit acks (needs JetStream).
    JsPull,
    /// js-pull on a work-queue stream: each ack removes its message (needs JetStream).
    JsWorkqueue,
    /// Cluster: publisher on the first node, subscriber on the second (needs
    /// several --url, or `compare --cluster`). Not part of `all`.
    ClusterPubsub,
    /// Cluster: publisher on the first node, a subscriber on every node. Not
    /// part of `all`.
    ClusterFanout,
}

/// Options shared by `run` and `compare` that shape the workload.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkloadArgs {
    /// Scenarios to run (comma separated, or `all`).
    #[arg(
        long = "scenario",
        visible_alias = "scenarios",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub(crate) scenarios: Vec<ScenarioArg>,
    /// Payload sizes in bytes (comma separated) [default: 16,1024].
    #[arg(long = "size", visible_alias = "sizes", value_delimiter = ',')]
    pub(crate) sizes: Vec<usize>,
    /// Messages (or requests) per scenario; default depends on scenario and size.
    #[arg(long)]
    pub(crate) msgs: Option<u64>,
    /// Publish for this long instead of a fixed message count (pub, pubsub, fanout, queue only).
    #[arg(long)]
    pub(crate) duration_secs: Option<f64>,
    /// Connections opened by `idle-conns`.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) conns: usize,
    /// Give up waiting for subscribers after this long without progress.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) stall_timeout_secs: f64,
}

/// `tern bench run` options.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Server URL (loopback recommended); for the cluster scenarios, every
    /// node's URL, comma separated (publishers use the first).
    #[arg(long, default_value = "nats://127.0.0.1:4222", value_delimiter = ',')]
    pub(crate) url: Vec<String>,
    /// Server process id: enables CPU/msg and RSS figures (required for
    /// idle-conns memory); several, comma separated, are summed.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,
    /// The server's JetStream store directory (its `-sd`): enables the
    /// bytes-per-message figures of js-disk.
    #[arg(long, value_name = "PATH")]
    pub(crate) store_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) workload: WorkloadArgs,
    /// Print one JSON object per scenario instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `tern bench compare` options.
#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Tern server binary (must accept `-a ADDR -p PORT`).
    #[arg(long)]
    pub(crate) tern_bin: PathBuf,
    /// nats-server binary.
    #[arg(long)]
    pub(crate) nats_bin: PathBuf,
    /// Extra argument for the Tern server (repeatable).
    #[arg(long = "tern-arg", allow_hyphen_values = true)]
    pub(crate) tern_args: Vec<String>,
    /// Extra argument for nats-server (repeatable).
    #[arg(long = "nats-arg", allow_hyphen_values = true)]
    pub(crate) nats_args: Vec<String>,
    /// Rounds; each figure is the median over rounds.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Start this many nodes of each server as one cluster (routes between
    /// all of them) for every scenario; CPU and memory figures are summed
    /// over the nodes. For `cluster-pubsub` and `cluster-fanout`.
    #[arg(long, default_value_t = 0)]
    pub(crate) cluster: usize,
    #[command(flatten)]
    pub(crate) workload: WorkloadArgs,
    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    pub(crate) server_cpu: usize,
    /// CPU this benchmark client pins itself to.
    #[arg(long, default_value_t = 1)]
    pub(crate) client_cpu: usize,
    /// Do not pin servers or the client to CPUs.
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// Also write the markdown table to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Also write every per-round result as JSON lines to this file.
    #[arg(long)]
    pub(crate) raw_json: Option<PathBuf>,
}

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Throughput-like figures.
    Higher,
    /// Latency, memory and CPU cost.
    Lower,
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable machine name, e.g. `recv_msgs_per_sec`.
    pub(crate) key: &'static str,
    /// Human label.
    pub(crate) label: &'static str,
    /// Unit of `value`.
    pub(crate) unit: &'static str,
    /// The measurement.
    pub(crate) value: f64,
    /// Which way is better.
    pub(crate) better: Better,
}

/// The result of running one scenario once.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// Scenario name (`pub`, `pubsub`, ...).
    pub(crate) scenario: &'static str,
    /// Payload size, when the scenario has one.
    pub(crate) size: Option<usize>,
    /// Messages published, requests made, or connections opened.
    pub(crate) count: u64,
    /// Measurements.
    pub(crate) figures: Vec<Figure>,
    /// Remarks that do not invalidate the run (pacing, timer resolution).
    pub(crate) notes: Vec<String>,
    /// Problems that make the figures suspect (loss, duplicates, errors).
    pub(crate) errors: Vec<String>,
}

impl Outcome {
    /// `pub 16B`, `idle-conns`, ...
    pub(crate) fn label(&self) -> String {
        match self.size {
            Some(size) => format!("{} {}", self.scenario, report::size_label(size)),
            None => self.scenario.to_owned(),
        }
    }
}

/// A fully resolved scenario to run.
#[derive(Debug, Clone)]
pub(crate) struct ScenarioSpec {
    /// What to run.
    pub(crate) kind: ScenarioKind,
    /// Payload size in bytes (unused by `idle-conns`).
    pub(crate) size: usize,
    /// Messages or requests.
    pub(crate) msgs: u64,
    /// Publish for this long instead of `msgs`.
    pub(crate) duration: Option<Duration>,
    /// Connections for `idle-conns`.
    pub(crate) conns: usize,
    /// Give up on subscribers after this long without progress.
    pub(crate) stall_timeout: Duration,
}

impl WorkloadArgs {
    /// Expands names and sizes into the list of scenario runs, in a fixed order.
    pub(crate) fn specs(&self) -> Vec<ScenarioSpec> {
        let all = self.scenarios.is_empty() || self.scenarios.contains(&ScenarioArg::All);
        // `all` means the single-server scenarios; cluster ones are named.
        let wanted = |arg: ScenarioArg| {
            self.scenarios.contains(&arg)
                || (all && !matches!(arg, ScenarioArg::ClusterPubsub | ScenarioArg::ClusterFanout))
        };
        let sizes: Vec<usize> = if self.sizes.is_empty() {
            DEFAULT_SIZES.to_vec()
        } else {
            self.sizes.clone()
        };
        let table = [
            (ScenarioArg::Pub, ScenarioKind::Pub),
            (ScenarioArg::Pubsub, ScenarioKind::PubSub),
            (ScenarioArg::Fanout, ScenarioKind::Fanout),
            (ScenarioArg::Queue, ScenarioKind::Queue),
            (ScenarioArg::Reqrep, ScenarioKind::ReqRep),
            (ScenarioArg::IdleConns, ScenarioKind::IdleConns),
            (ScenarioArg::JsPubSync, ScenarioKind::JsPubSync),
            (ScenarioArg::JsPubAsync, ScenarioKind::JsPubAsync),
            (ScenarioArg::JsDisk, ScenarioKind::JsDisk),
            (ScenarioArg::JsPull, ScenarioKind::JsPull),
            (ScenarioArg::JsWorkqueue, ScenarioKind::JsWorkQueue),
            (ScenarioArg::ClusterPubsub, ScenarioKind::ClusterPubSub),
            (ScenarioArg::ClusterFanout, ScenarioKind::ClusterFanout),
        ];
        let mut specs = Vec::new();
        for (arg, kind) in table {
            if !wanted(arg) {
                continue;
            }
            let kind_sizes = if kind == ScenarioKind::IdleConns {
                vec![0]
            } else {
                sizes.clone()
            };
            for size in kind_sizes {
                specs.push(ScenarioSpec {
                    kind,
                    size,
                    msgs: self.msgs.unwrap_or_else(|| kind.default_msgs(size)),
                    duration: self
                        .duration_secs
                        .filter(|_| kind.is_stream())
                        .map(Duration::from_secs_f64),
                    conns: self.conns,
                    stall_timeout: Duration::from_secs_f64(self.stall_timeout_secs),
                });
            }
        }
        specs
    }
}

/// Entry point of `tern bench`.
pub(crate) fn main(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Run(args) => run_main(args),
        BenchCommand::Compare(args) => compare::main(args),
    }
}

fn run_main(args: RunArgs) -> Result<()> {
    let specs = args.workload.specs();
    if specs.iter().any(|s| s.kind == ScenarioKind::IdleConns) {
        procstat::raise_nofile_limit()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut outcomes = Vec::new();
    runtime.block_on(async {
        for spec in &specs {
            let outcome =
                scenarios::run(&args.url, &args.server_pid, args.store_dir.as_deref(), spec).await;
            if args.json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                eprintln!("done: {}", outcome.label());
            }
            outcomes.push(outcome);
        }
        anyhow::Ok(())
    })?;
    if !args.json {
        print!("{}", report::run_table(&outcomes));
    }
    if outcomes.iter().any(|o| !o.errors.is_empty()) {
        anyhow::bail!("some scenarios reported errors");
    }
    Ok(())
}
