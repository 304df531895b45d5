//! `tern bench compare`: run every scenario against Tern and nats-server,
//! each freshly started and CPU-pinned, and tabulate medians and ratios.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::report::{better_text, format_value};
use super::scenarios::{self, ScenarioKind};
use super::{procstat, Better, CompareArgs, Outcome, ScenarioSpec};

/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two contestants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Tern,
    Nats,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Tern => "tern",
            Side::Nats => "nats-server",
        }
    }
}

/// A running server process, killed when dropped (also on error and Ctrl-C).
struct ServerGuard {
    child: Child,
    port: u16,
    log: PathBuf,
    /// JetStream store directory (`-sd`), created for this start and removed
    /// with the server.
    store_dir: Option<PathBuf>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        if let Some(dir) = &self.store_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl ServerGuard {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

/// How to start one side.
struct ServerCommand {
    side: Side,
    bin: PathBuf,
    extra_args: Vec<String>,
    pin_cpu: Option<usize>,
}

impl ServerCommand {
    /// Starts `nodes` servers on free loopback ports as one cluster (named
    /// `bench`, every node seeded with every other), or one server when
    /// `nodes` is 0 or 1.
    fn start_all(&self, jetstream: bool, nodes: usize) -> Result<Vec<ServerGuard>> {
        if nodes <= 1 {
            return Ok(vec![self.start(jetstream, &[])?]);
        }
        let cluster_ports = (0..nodes)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut guards = Vec::with_capacity(nodes);
        for (i, port) in cluster_ports.iter().enumerate() {
            let args = vec![
                "-n".to_owned(),
                format!("bench-{}", i + 1),
                "--cluster_name".to_owned(),
                "bench".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            guards.push(self.start(jetstream, &args)?);
        }
        Ok(guards)
    }

    /// Starts the server on a free loopback port; with `jetstream`, also with
    /// `-js -sd <fresh empty directory>`.
    fn start(&self, jetstream: bool, cluster_args: &[String]) -> Result<ServerGuard> {
        let port = free_port()?;
        let stem = format!(
            "tern-bench-{}-{}-{port}",
            self.side.name(),
            std::process::id()
        );
        let log = std::env::temp_dir().join(format!("{stem}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let store_dir = if jetstream {
            let dir = std::env::temp_dir().join(format!("{stem}-store"));
            // A leftover of a killed run on the same port must not count.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(dir)
        } else {
            None
        };
        let mut command = match self.pin_cpu {
            // taskset execs the server, so the child pid is the server's pid.
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(dir) = &store_dir {
            command.arg("-js").arg("-sd").arg(dir);
        }
        command
            .args(cluster_args)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                if let Some(dir) = &store_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(err).with_context(|| format!("starting {}", self.bin.display()));
            }
        };
        Ok(ServerGuard {
            child,
            port,
            log,
            store_dir,
        })
    }
}

/// A port that was free a moment ago (bind `:0`, read it, release it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until the server sends its `INFO` line; returns the advertised version.
async fn wait_ready(server: &mut ServerGuard) -> Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let addr = format!("127.0.0.1:{}", server.port);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "server exited during startup ({status}); log tail:\n{}",
                server.log_tail()
            );
        }
        let attempt = async {
            let mut stream = TcpStream::connect(&addr).await?;
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while !buf[..len].windows(2).any(|w| w == b"\r\n") && len < buf.len() {
                let n = stream.read(&mut buf[len..]).await?;
                if n == 0 {
                    anyhow::bail!("closed before INFO");
                }
                len += n;
            }
            anyhow::Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
        };
        if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            if let Some(json) = info.trim().strip_prefix("INFO ") {
                let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                return Ok(value["version"].as_str().unwrap_or("?").to_owned());
            }
            bail!("server did not greet with INFO: {:?}", info.trim());
        }
        if Instant::now() >= deadline {
            bail!(
                "server not ready on {addr} after {READY_TIMEOUT:?}; log tail:\n{}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One row of the comparison: a figure of a scenario, values per round per side.
struct Row {
    scenario: String,
    label: &'static str,
    unit: &'static str,
    better: Better,
    values: HashMap<Side, Vec<f64>>,
}

/// Collected results of all rounds.
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    index: HashMap<(String, &'static str), usize>,
    errors: Vec<String>,
    versions: HashMap<Side, String>,
}

impl Results {
    fn add(&mut self, side: Side, round: usize, outcome: &Outcome) {
        let scenario = outcome.label();
        for figure in &outcome.figures {
            let key = (scenario.clone(), figure.key);
            let idx = *self.index.entry(key).or_insert_with(|| {
                self.rows.push(Row {
                    scenario: scenario.clone(),
                    label: figure.label,
                    unit: figure.unit,
                    better: figure.better,
                    values: HashMap::new(),
                });
                self.rows.len() - 1
            });
            self.rows[idx]
                .values
                .entry(side)
                .or_default()
                .push(figure.value);
        }
        for error in &outcome.errors {
            self.errors.push(format!(
                "round {} {} {scenario}: {error}",
                round + 1,
                side.name()
            ));
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Half the min–max range relative to the median, in percent.
fn spread_percent(values: &[f64]) -> Option<f64> {
    let med = median(values)?;
    if values.len() < 2 || med == 0.0 {
        return None;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    Some((max - min) / 2.0 / med.abs() * 100.0)
}

/// Machine description printed above the table.
fn machine_description() -> String {
    let nproc = Command::new("nproc")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!("machine: {nproc} CPUs, {model}, Linux {kernel}")
}

/// Pins every thread of this process to `cpu` with `taskset(1)`.
fn pin_self(cpu: usize) -> Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!(
            "taskset -a -cp {cpu} {} failed: {status}",
            std::process::id()
        );
    }
    Ok(())
}

/// Entry point of `tern bench compare`.
pub(crate) fn main(args: CompareArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    for bin in [&args.tern_bin, &args.nats_bin] {
        if !Path::new(bin).exists() {
            bail!("server binary {} does not exist", bin.display());
        }
    }
    let machine = machine_description();
    let specs = args.workload.specs();
    if specs.iter().any(|s| s.kind.is_cluster()) && args.cluster < 2 {
        bail!("cluster-pubsub and cluster-fanout need --cluster N (N >= 2)");
    }
    if specs.iter().any(|s| s.kind == ScenarioKind::IdleConns) {
        let limit = procstat::raise_nofile_limit()?;
        if (limit as usize) < args.workload.conns + 256 {
            eprintln!(
                "warning: open-file limit {limit} is below --conns {} + margin; idle-conns may fail",
                args.workload.conns
            );
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin;
    if pin {
        if args.server_cpu == args.client_cpu || cpus < 2 {
            bail!("pinning needs two distinct CPUs (have {cpus}); use --no-pin");
        }
        // Before the runtime exists, so every worker thread inherits the mask.
        pin_self(args.client_cpu)?;
    }
    let servers = [
        ServerCommand {
            side: Side::Tern,
            bin: args.tern_bin.clone(),
            extra_args: args.tern_args.clone(),
            pin_cpu: pin.then_some(args.server_cpu),
        },
        ServerCommand {
            side: Side::Nats,
            bin: args.nats_bin.clone(),
            extra_args: args.nats_args.clone(),
            pin_cpu: pin.then_some(args.server_cpu),
        },
    ];
    let mut raw = match &args.raw_json {
        Some(path) => {
            Some(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => None,
    };
    eprintln!("{machine}");
    if pin {
        eprintln!(
            "pinning: servers on CPU {}, client on CPU {}",
            args.server_cpu, args.client_cpu
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let results = runtime.block_on(async {
        let work = run_rounds(&servers, &specs, args.rounds, args.cluster, raw.as_mut());
        tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; servers stopped"),
        }
    })?;

    let mut doc = String::new();
    let _ = writeln!(doc, "{machine}  ");
    let _ = writeln!(
        doc,
        "tern: `{}` (version {}); nats-server: `{}` (version {})  ",
        args.tern_bin.display(),
        results
            .versions
            .get(&Side::Tern)
            .map_or("?", String::as_str),
        args.nats_bin.display(),
        results
            .versions
            .get(&Side::Nats)
            .map_or("?", String::as_str),
    );
    let _ = writeln!(
        doc,
        "{} rounds, median per figure; {}; run took {:.0} s.\n",
        args.rounds,
        if pin {
            format!(
                "server pinned to CPU {}, client to CPU {}",
                args.server_cpu, args.client_cpu
            )
        } else {
            "no CPU pinning".to_owned()
        },
        started.elapsed().as_secs_f64()
    );
    doc.push_str(&markdown_table(
        &results,
        specs.iter().any(|s| s.kind.is_jetstream()),
    ));
    print!("{doc}");
    if let Some(path) = &args.out {
        std::fs::write(path, &doc).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if !results.errors.is_empty() {
        bail!(
            "{} scenario runs reported errors (listed above)",
            results.errors.len()
        );
    }
    Ok(())
}

async fn run_rounds(
    servers: &[ServerCommand; 2],
    specs: &[ScenarioSpec],
    rounds: usize,
    nodes: usize,
    mut raw: Option<&mut File>,
) -> Result<Results> {
    let mut results = Results::default();
    for round in 0..rounds {
        // Alternate which server goes first, so drift (thermal, page cache)
        // does not always favour the same side.
        let order: [&ServerCommand; 2] = if round % 2 == 0 {
            [&servers[0], &servers[1]]
        } else {
            [&servers[1], &servers[0]]
        };
        for server in order {
            for spec in specs {
                let mut guards = server.start_all(spec.kind.is_jetstream(), nodes)?;
                for guard in &mut guards {
                    let version = wait_ready(guard).await.with_context(|| {
                        format!("{} ({})", server.side.name(), server.bin.display())
                    })?;
                    results.versions.insert(server.side, version);
                }
                let urls: Vec<String> = guards.iter().map(ServerGuard::url).collect();
                let pids: Vec<u32> = guards.iter().map(ServerGuard::pid).collect();
                let outcome =
                    scenarios::run(&urls, &pids, guards[0].store_dir.as_deref(), spec).await;
                drop(guards);
                eprintln!(
                    "round {}/{rounds} {:<11} {:<15} {}{}",
                    round + 1,
                    server.side.name(),
                    outcome.label(),
                    outcome
                        .figures
                        .first()
                        .map(|f| format!("{} {}", format_value(f.value), f.unit))
                        .unwrap_or_default(),
                    if outcome.errors.is_empty() {
                        String::new()
                    } else {
                        format!("  ERROR: {}", outcome.errors.join("; "))
                    }
                );
                if let Some(file) = raw.as_deref_mut() {
                    let mut value = serde_json::to_value(&outcome)?;
                    value["server"] = server.side.name().into();
                    value["round"] = (round + 1).into();
                    writeln!(file, "{value}")?;
                }
                results.add(server.side, round, &outcome);
            }
        }
    }
    Ok(results)
}

fn markdown_table(results: &Results, jetstream: bool) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | figure | unit | better | tern | nats-server | ratio (tern/nats) | spread tern / nats |\n",
    );
    out.push_str("|---|---|---|---|---:|---:|---:|---:|\n");
    for row in &results.rows {
        let tern = row
            .values
            .get(&Side::Tern)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let nats = row
            .values
            .get(&Side::Nats)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let (mt, mn) = (median(tern), median(nats));
        let ratio = match (mt, mn) {
            (Some(t), Some(n)) if n != 0.0 => format!("{:.2}", t / n),
            _ => "n/a".to_owned(),
        };
        let spread =
            |v: &[f64]| spread_percent(v).map_or("n/a".to_owned(), |s| format!("±{s:.1}%"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.scenario,
            row.label,
            row.unit,
            better_text(row.better),
            mt.map_or("n/a".to_owned(), format_value),
            mn.map_or("n/a".to_owned(), format_value),
            ratio,
            spread(tern),
            spread(nats),
        );
    }
    out.push_str(
        "\nratio = tern median / nats-server median: above 1 is better where `better` is \
         \"higher\", below 1 is better where it is \"lower\". spread = half the min–max range \
         over rounds, relative to the median.\n",
    );
    if jetstream {
        out.push_str(
            "\njs-* scenarios: both servers run with `-js -sd <fresh temporary directory>`, one \
             file-storage stream per run, otherwise default settings. nats-server acknowledges a \
             publish before its data reaches the disk (it fsyncs every 2 minutes by default); \
             Tern fsyncs each message before acknowledging it, so its acks promise durability \
             that nats-server's do not. js-pub-sync awaits each ack before the next publish; \
             js-pub-async keeps 256 acks in flight; js-disk runs js-pub-async, then divides the \
             growth of the store directory (sum of file sizes, and of allocated blocks) by the \
             messages the stream holds; js-pull fills a stream, then reads it with a durable pull \
             consumer, acking each message (explicit acks); js-workqueue does the same on a \
             work-queue stream, where each ack removes its message (Tern's removals go through \
             its fsynced log too).\n",
        );
    }
    if !results.errors.is_empty() {
        out.push_str("\nErrors:\n");
        for error in &results.errors {
            let _ = writeln!(out, "- {error}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn spreads() {
        assert_eq!(spread_percent(&[9.0, 10.0, 11.0]), Some(10.0));
        assert_eq!(spread_percent(&[5.0]), None);
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
