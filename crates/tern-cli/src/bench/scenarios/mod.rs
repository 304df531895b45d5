//! The load scenarios. Each takes a resolved [`ScenarioSpec`] and returns an
//! [`Outcome`]; failures are recorded in the outcome rather than aborting, so
//! one bad scenario does not hide the others.
//!
//! - [`stream`]: `pub`, `pubsub`, `fanout`, `queue` (throughput, with pacing);
//! - [`reqrep`]: sequential request-reply latency;
//! - [`idle`]: memory per idle raw-TCP connection;
//! - [`jetstream`]: `js-pub-sync`, `js-pub-async`, `js-disk` (JetStream
//!   publish with acks to a file-storage stream; needs JetStream enabled).

mod idle;
mod jetstream;
mod reqrep;
mod stream;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;

use super::procstat::{self, ProcSample};
use super::{Better, Figure, Outcome, ScenarioSpec};

/// Capacity of each async-nats subscription channel. The client *drops*
/// messages (and raises `SlowConsumer`) when it is full; pacing keeps the
/// number in flight far below this.
const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// Whole-scenario timeout, a backstop against a hung server.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);
/// What a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScenarioKind {
    /// 1 publisher, no subscribers.
    Pub,
    /// 1 publisher, 1 subscriber.
    PubSub,
    /// 1 publisher, 4 subscribers on one subject.
    Fanout,
    /// 1 publisher, 4 subscribers in one queue group.
    Queue,
    /// Sequential request-reply.
    ReqRep,
    /// Raw idle connections, memory per connection.
    IdleConns,
    /// JetStream publish, each ack awaited before the next publish.
    JsPubSync,
    /// JetStream publish with up to 256 acks in flight.
    JsPubAsync,
    /// `JsPubAsync`, then store-directory bytes per stored message.
    JsDisk,
    /// Fill a stream, then consume it with a durable pull consumer and
    /// explicit acks.
    JsPull,
    /// `JsPull` on a work-queue stream, where each ack removes its message.
    JsWorkQueue,
    /// Cluster: publisher on the first node, 1 subscriber on the second.
    ClusterPubSub,
    /// Cluster: publisher on the first node, 1 subscriber on every node.
    ClusterFanout,
}

impl ScenarioKind {
    /// The command-line name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ScenarioKind::Pub => "pub",
            ScenarioKind::PubSub => "pubsub",
            ScenarioKind::Fanout => "fanout",
            ScenarioKind::Queue => "queue",
            ScenarioKind::ReqRep => "reqrep",
            ScenarioKind::IdleConns => "idle-conns",
            ScenarioKind::JsPubSync => "js-pub-sync",
            ScenarioKind::JsPubAsync => "js-pub-async",
            ScenarioKind::JsDisk => "js-disk",
            ScenarioKind::JsPull => "js-pull",
            ScenarioKind::JsWorkQueue => "js-workqueue",
            ScenarioKind::ClusterPubSub => "cluster-pubsub",
            ScenarioKind::ClusterFanout => "cluster-fanout",
        }
    }

    /// Whether the scenario needs JetStream (and a store directory).
    pub(crate) fn is_jetstream(self) -> bool {
        matches!(
            self,
            ScenarioKind::JsPubSync
                | ScenarioKind::JsPubAsync
                | ScenarioKind::JsDisk
                | ScenarioKind::JsPull
                | ScenarioKind::JsWorkQueue
        )
    }

    /// Whether the scenario is a publish stream (so `--duration-secs` applies).
    pub(crate) fn is_stream(self) -> bool {
        matches!(
            self,
            ScenarioKind::Pub
                | ScenarioKind::PubSub
                | ScenarioKind::Fanout
                | ScenarioKind::Queue
                | ScenarioKind::ClusterPubSub
                | ScenarioKind::ClusterFanout
        )
    }

    /// Whether the scenario needs a cluster (several URLs).
    pub(crate) fn is_cluster(self) -> bool {
        matches!(
            self,
            ScenarioKind::ClusterPubSub | ScenarioKind::ClusterFanout
        )
    }

    /// Default message count, chosen so that a 3-round compare of every
    /// scenario at 16 B and 1 KiB stays within ~4 minutes on 2 cores while
    /// each timed phase lasts 1.5–2 s (so 10 ms CPU ticks resolve to ~1%).
    pub(crate) fn default_msgs(self, size: usize) -> u64 {
        let (small, kib) = match self {
            ScenarioKind::Pub => (5_000_000, 2_000_000),
            ScenarioKind::PubSub => (2_000_000, 1_000_000),
            ScenarioKind::Fanout | ScenarioKind::ClusterFanout => (1_000_000, 300_000),
            ScenarioKind::ClusterPubSub => (2_000_000, 1_000_000),
            ScenarioKind::Queue => (2_000_000, 1_000_000),
            ScenarioKind::ReqRep => return 20_000,
            ScenarioKind::IdleConns => return 0,
            // Tern fsyncs every acked message to file storage: keep it short.
            ScenarioKind::JsPubSync => return 5_000,
            ScenarioKind::JsPubAsync
            | ScenarioKind::JsDisk
            | ScenarioKind::JsPull
            | ScenarioKind::JsWorkQueue => (100_000, 50_000),
        };
        if size <= 256 {
            small
        } else {
            (kib * 1024 / size as u64).max(10_000)
        }
    }
}

/// Runs one scenario; never panics on server trouble, errors land in the outcome.
///
/// `store_dir` is the server's JetStream store directory, used by `js-disk` only.
///
/// `urls` are the servers' client URLs: one, or every node of a cluster
/// (publishers use the first); `server_pids` the processes whose CPU and
/// memory are measured (summed).
pub(crate) async fn run(
    urls: &[String],
    server_pids: &[u32],
    store_dir: Option<&Path>,
    spec: &ScenarioSpec,
) -> Outcome {
    let mut outcome = Outcome {
        scenario: spec.kind.name(),
        size: (spec.kind != ScenarioKind::IdleConns).then_some(spec.size),
        count: 0,
        figures: Vec::new(),
        notes: Vec::new(),
        errors: Vec::new(),
    };
    let session = Session::new(urls);
    let mut probe = ServerProbe::new(server_pids);
    let work = async {
        let (session, probe, outcome) = (&session, &mut probe, &mut outcome);
        match spec.kind {
            ScenarioKind::Pub => stream::publish_only(session, spec, probe, outcome).await,
            ScenarioKind::PubSub => {
                stream::publish_subscribe(session, spec, stream::Shape::Single, probe, outcome)
                    .await
            }
            ScenarioKind::Fanout => {
                stream::publish_subscribe(session, spec, stream::Shape::Fanout, probe, outcome)
                    .await
            }
            ScenarioKind::Queue => {
                stream::publish_subscribe(session, spec, stream::Shape::Queue, probe, outcome).await
            }
            ScenarioKind::ReqRep => reqrep::request_reply(session, spec, probe, outcome).await,
            ScenarioKind::IdleConns => idle::idle_conns(session, spec, probe, outcome).await,
            ScenarioKind::JsPubSync
            | ScenarioKind::JsPubAsync
            | ScenarioKind::JsDisk
            | ScenarioKind::JsPull
            | ScenarioKind::JsWorkQueue => {
                jetstream::run(session, spec, store_dir, probe, outcome).await
            }
            ScenarioKind::ClusterPubSub => {
                stream::publish_subscribe(session, spec, stream::Shape::Remote, probe, outcome)
                    .await
            }
            ScenarioKind::ClusterFanout => {
                stream::publish_subscribe(session, spec, stream::Shape::EveryNode, probe, outcome)
                    .await
            }
        }
    };
    match tokio::time::timeout(SCENARIO_TIMEOUT, work).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => outcome.errors.push(format!("{err:#}")),
        Err(_) => outcome
            .errors
            .push(format!("scenario timed out after {SCENARIO_TIMEOUT:?}")),
    }
    session.report_events(&mut outcome);
    outcome
}

/// Samples the server's `/proc` counters around the timed phase.
pub(super) struct ServerProbe {
    pub(super) pids: Vec<u32>,
    start: Option<ProcSample>,
}

/// The sum of the samples of several processes (a cluster counts as one).
fn sample_all(pids: &[u32]) -> Result<ProcSample> {
    let mut total = ProcSample::default();
    for pid in pids {
        let one = procstat::sample(*pid)?;
        total.cpu_ticks += one.cpu_ticks;
        total.rss_bytes += one.rss_bytes;
        total.hwm_bytes += one.hwm_bytes;
    }
    Ok(total)
}

impl ServerProbe {
    fn new(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start: None,
        }
    }

    /// Marks the start of the timed phase.
    pub(super) fn start(&mut self) -> Result<()> {
        if !self.pids.is_empty() {
            self.start = Some(sample_all(&self.pids)?);
        }
        Ok(())
    }

    /// CPU per operation and memory figures for the phase since `start`.
    pub(super) fn finish(&self, ops: u64, op: &'static str) -> Result<ServerFigures> {
        let mut out = ServerFigures::default();
        let Some(start) = self.start else {
            return Ok(out);
        };
        let end = sample_all(&self.pids)?;
        let ticks = end.cpu_ticks.saturating_sub(start.cpu_ticks);
        let cpu_ns = ticks as f64 * 1e9 / procstat::clock_ticks_per_sec() as f64;
        let (key, label) = match op {
            "conn" => ("server_cpu_ns_per_conn", "server CPU per connection"),
            "req" => ("server_cpu_ns_per_req", "server CPU per request"),
            "consumed" => ("server_cpu_ns_per_msg", "server CPU per consumed msg"),
            _ => ("server_cpu_ns_per_msg", "server CPU per published msg"),
        };
        out.figures.push(Figure {
            key,
            label,
            unit: "ns",
            value: cpu_ns / ops.max(1) as f64,
            better: Better::Lower,
        });
        if ticks < 50 {
            out.notes.push(format!(
                "server CPU measured over only {ticks} clock ticks (±1 tick = {:.0}%)",
                100.0 / ticks.max(1) as f64
            ));
        }
        out.figures.push(Figure {
            key: "server_peak_rss_mib",
            label: "server peak RSS (VmHWM)",
            unit: "MiB",
            value: end.hwm_bytes as f64 / MIB,
            better: Better::Lower,
        });
        out.figures.push(Figure {
            key: "server_rss_mib",
            label: "server RSS at end",
            unit: "MiB",
            value: end.rss_bytes as f64 / MIB,
            better: Better::Lower,
        });
        Ok(out)
    }
}

/// Server-side figures from [`ServerProbe::finish`].
#[derive(Default)]
pub(super) struct ServerFigures {
    figures: Vec<Figure>,
    notes: Vec<String>,
}

impl ServerFigures {
    pub(super) fn append_to(self, outcome: &mut Outcome) {
        outcome.figures.extend(self.figures);
        outcome.notes.extend(self.notes);
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// The clients of one scenario run, and whether any of them hit connection
/// trouble (slow consumer, disconnect, server error). Any such event means
/// messages were lost, so the run is cut short instead of limping along: a
/// cut-off subscriber that reconnects would otherwise keep "making progress".
pub(super) struct Session {
    pub(super) url: String,
    /// Every node's URL (just `url` for a single server).
    pub(super) urls: Vec<String>,
    trouble: watch::Sender<bool>,
    logs: Mutex<Vec<(String, Arc<EventLog>)>>,
}

/// Distinct events seen by one client, with repeat counts.
#[derive(Default)]
struct EventLog {
    events: Mutex<Vec<(String, u64)>>,
}

impl EventLog {
    fn record(&self, event: &Event) {
        let text = event.to_string();
        if let Ok(mut events) = self.events.lock() {
            match events.iter_mut().find(|(seen, _)| *seen == text) {
                Some((_, count)) => *count += 1,
                None => events.push((text, 1)),
            }
        }
    }
}

impl Session {
    fn new(urls: &[String]) -> Self {
        Self {
            url: urls.first().cloned().unwrap_or_default(),
            urls: urls.to_vec(),
            trouble: watch::channel(false).0,
            logs: Mutex::new(Vec::new()),
        }
    }

    /// Connects a client whose events are watched, to the first server.
    pub(super) async fn connect(&self, name: &str) -> Result<Client> {
        self.connect_to(name, &self.url).await
    }

    /// Connects a client whose events are watched, to `url`.
    pub(super) async fn connect_to(&self, name: &str, url: &str) -> Result<Client> {
        let log = Arc::new(EventLog::default());
        let sink = log.clone();
        let trouble = self.trouble.clone();
        let client = ConnectOptions::new()
            .name(name)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            // `client_capacity` stays at its default (2048 commands): 128 and
            // 65536 both published 16 B messages 5–10% slower here.
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            // async-nats cannot disable reconnects (0 means unlimited); the
            // first `Disconnected` raises trouble and ends the run anyway.
            .max_reconnects(Some(1))
            .event_callback(move |event| {
                let sink = sink.clone();
                let trouble = trouble.clone();
                async move {
                    if matches!(event, Event::Connected | Event::Closed) {
                        return;
                    }
                    sink.record(&event);
                    trouble.send_replace(true);
                }
            })
            .connect(url)
            .await
            .with_context(|| format!("connecting {name} to {url}"))?;
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((name.to_owned(), log));
        }
        Ok(client)
    }

    pub(super) fn in_trouble(&self) -> bool {
        *self.trouble.borrow()
    }

    /// Runs `work`, abandoning it as soon as any client reports trouble.
    pub(super) async fn guard<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut trouble = self.trouble.subscribe();
        tokio::select! {
            result = work => result,
            _ = trouble.wait_for(|raised| *raised) => {
                bail!("connection trouble while {what}; abandoned")
            }
        }
    }

    /// Copies every client's events into the outcome's errors.
    fn report_events(&self, outcome: &mut Outcome) {
        let Ok(logs) = self.logs.lock() else { return };
        for (name, log) in logs.iter() {
            let Ok(events) = log.events.lock() else {
                continue;
            };
            for (event, count) in events.iter() {
                let times = if *count > 1 {
                    format!(" (×{count})")
                } else {
                    String::new()
                };
                outcome.errors.push(format!("{name}: {event}{times}"));
            }
        }
    }
}
/// Aborts spawned tasks however the scenario ends.
pub(super) struct AbortOnDrop(pub(super) Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
