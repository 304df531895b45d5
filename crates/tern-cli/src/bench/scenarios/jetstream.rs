//! JetStream scenarios: `js-pub-sync`, `js-pub-async`, `js-disk`,
//! `js-pull` and `js-workqueue`.
//!
//! Each run creates its own file-storage stream `BENCH_<scenario>_<size>`
//! (subject `bench.js.<scenario>.<size>`, default limits) with
//! `jetstream::Context::create_stream`, deleting any leftover of that name
//! first, and deletes it again at the end, also when the run failed.
//!
//! - `js-pub-sync`: one publish at a time, each ack awaited before the next;
//!   ack rate and ack latency percentiles.
//! - `js-pub-async`: `jetstream::Context::publish` returns a future for the
//!   ack; up to [`ASYNC_WINDOW`] of them are kept outstanding and awaited
//!   oldest first. The rate is measured to the last ack.
//! - `js-disk`: the `js-pub-async` workload, then the growth of the server's
//!   store directory (file sizes summed recursively, and allocated blocks)
//!   divided by the messages the stream reports as stored.
//! - `js-pull`: the `js-pub-async` workload (untimed) fills the stream, then
//!   a durable pull consumer with explicit acks (`consumer.messages()`, the
//!   client's continuous pull) reads it all, acking each message; the rate
//!   is measured from the start of consumption to the last message.
//! - `js-workqueue`: `js-pull` on a stream with work-queue retention, so
//!   each ack removes its message; afterwards the stream must be empty.
//!
//! Every ack is checked: right stream, consecutive sequence, no duplicate.
//! A short warm-up (stored too, counted in the stream) precedes the timed
//! phase. Note that nats-server acknowledges before its data reaches the disk
//! (fsync every 2 minutes by default) while Tern fsyncs before acking.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, context::PublishAckFuture, stream, Context};
use async_nats::Subject;
use bytes::Bytes;

use super::reqrep::{push_latency_figures, LatencyNames};
use super::{ScenarioKind, ServerProbe, Session};
use crate::bench::report::size_label;
use crate::bench::{Better, Figure, Outcome, ScenarioSpec};

/// Publish acks kept in flight by `js-pub-async` and `js-disk`.
pub(crate) const ASYNC_WINDOW: usize = 256;

/// Timeout of JetStream API requests and of each publish ack.
const JS_TIMEOUT: Duration = Duration::from_secs(10);

/// Warm-up publishes before the timed phase (at most a tenth of the run).
const WARMUP_MSGS: u64 = 100;

/// Runs one JetStream scenario on a stream of its own.
pub(super) async fn run(
    session: &Session,
    spec: &ScenarioSpec,
    store_dir: Option<&Path>,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    let client = session.connect("tern-bench-js").await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(JS_TIMEOUT)
        .build(client);
    let name = format!("BENCH_{}_{}", spec.kind.name(), size_label(spec.size));
    let subject = Subject::from(format!(
        "bench.js.{}.{}",
        spec.kind.name(),
        size_label(spec.size)
    ));
    // A leftover from an interrupted run would make sequences start elsewhere.
    let _ = js.delete_stream(&name).await;
    // Store-directory size before the stream exists, so only its growth counts.
    let baseline = match (spec.kind, store_dir) {
        (ScenarioKind::JsDisk, Some(dir)) => Some(settled_dir_usage(dir).await?),
        _ => None,
    };
    session
        .guard("creating the stream", async {
            js.create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![subject.to_string()],
                storage: stream::StorageType::File,
                retention: if spec.kind == ScenarioKind::JsWorkQueue {
                    stream::RetentionPolicy::WorkQueue
                } else {
                    stream::RetentionPolicy::Limits
                },
                ..Default::default()
            })
            .await
            .with_context(|| {
                format!("creating stream {name} (is JetStream enabled? nats-server needs -js)")
            })
        })
        .await?;
    let mut run = Run {
        js: &js,
        stream: &name,
        subject,
        payload: Bytes::from(vec![b'x'; spec.size]),
        next_seq: 1,
    };
    let work = async {
        match spec.kind {
            ScenarioKind::JsPubSync => publish_sync(session, spec, &mut run, probe, outcome).await,
            ScenarioKind::JsPubAsync => {
                publish_async(session, spec, &mut run, probe, outcome).await
            }
            ScenarioKind::JsPull => {
                session
                    .guard("filling the stream", run.publish_windowed(spec.msgs))
                    .await?;
                consume_pull(session, &js, &name, spec, probe, outcome).await
            }
            ScenarioKind::JsWorkQueue => {
                session
                    .guard("filling the stream", run.publish_windowed(spec.msgs))
                    .await?;
                consume_pull(session, &js, &name, spec, probe, outcome).await?;
                session
                    .guard("waiting for the acks to empty the stream", async {
                        drained(&js, &name).await
                    })
                    .await
            }
            ScenarioKind::JsDisk => {
                publish_async(session, spec, &mut run, probe, outcome).await?;
                // Disk figures first: they are what this scenario is about.
                let server_figures = std::mem::take(&mut outcome.figures);
                let result = disk_usage(&js, &name, spec, store_dir, baseline, outcome).await;
                outcome.figures.extend(server_figures);
                result
            }
            other => bail!("{} is not a JetStream scenario", other.name()),
        }
    };
    let result = work.await;
    if let Err(err) = js.delete_stream(&name).await {
        outcome
            .errors
            .push(format!("deleting stream {name}: {err:#}"));
    }
    result
}

/// The stream being published to and the sequence the next ack must carry.
struct Run<'a> {
    js: &'a Context,
    stream: &'a str,
    subject: Subject,
    payload: Bytes,
    next_seq: u64,
}

impl Run<'_> {
    /// Sends one publish; the returned future resolves to its ack.
    async fn send(&self) -> Result<PublishAckFuture> {
        self.js
            .publish(self.subject.clone(), self.payload.clone())
            .await
            .context("publishing")
    }

    /// Awaits an ack and checks it is the next one of this stream.
    async fn ack(&mut self, ack: PublishAckFuture) -> Result<()> {
        let ack = ack
            .await
            .with_context(|| format!("waiting for the ack of sequence {}", self.next_seq))?;
        if ack.stream != self.stream || ack.sequence != self.next_seq || ack.duplicate {
            bail!(
                "unexpected ack {ack:?}: expected stream {} sequence {}",
                self.stream,
                self.next_seq
            );
        }
        self.next_seq += 1;
        Ok(())
    }

    /// Publishes `msgs` messages with up to [`ASYNC_WINDOW`] acks outstanding.
    async fn publish_windowed(&mut self, msgs: u64) -> Result<()> {
        let mut window = VecDeque::with_capacity(ASYNC_WINDOW);
        for _ in 0..msgs {
            if window.len() == ASYNC_WINDOW {
                let oldest = window.pop_front().expect("window is full");
                self.ack(oldest).await?;
            }
            window.push_back(self.send().await?);
        }
        while let Some(oldest) = window.pop_front() {
            self.ack(oldest).await?;
        }
        Ok(())
    }
}

fn warmup_msgs(spec: &ScenarioSpec) -> u64 {
    WARMUP_MSGS.min(spec.msgs / 10)
}

async fn publish_sync(
    session: &Session,
    spec: &ScenarioSpec,
    run: &mut Run<'_>,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    session
        .guard("warming up", async {
            for _ in 0..warmup_msgs(spec) {
                let ack = run.send().await?;
                run.ack(ack).await?;
            }
            Ok(())
        })
        .await?;
    probe.start()?;
    let (latencies, elapsed) = session
        .guard("publishing with acks", async {
            let mut latencies = Vec::with_capacity(spec.msgs as usize);
            let start = Instant::now();
            for _ in 0..spec.msgs {
                let t = Instant::now();
                let ack = run.send().await?;
                run.ack(ack).await?;
                latencies.push(t.elapsed());
            }
            Ok((latencies, start.elapsed()))
        })
        .await?;
    push_latency_figures(
        outcome,
        latencies,
        elapsed,
        &LatencyNames {
            rate: ("acks_per_sec", "acked publish rate (sequential)", "ack/s"),
            quantiles: [
                ("ack_p50_us", "ack latency p50", 0.50),
                ("ack_p99_us", "ack latency p99", 0.99),
                ("ack_p999_us", "ack latency p99.9", 0.999),
            ],
            mean: ("ack_mean_us", "ack latency mean"),
        },
    );
    probe.finish(outcome.count, "msg")?.append_to(outcome);
    Ok(())
}

async fn publish_async(
    session: &Session,
    spec: &ScenarioSpec,
    run: &mut Run<'_>,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    session
        .guard("warming up", run.publish_windowed(warmup_msgs(spec)))
        .await?;
    probe.start()?;
    let start = Instant::now();
    session
        .guard("publishing with acks", run.publish_windowed(spec.msgs))
        .await?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    outcome.count = spec.msgs;
    if spec.kind == ScenarioKind::JsPubAsync {
        outcome.figures.push(Figure {
            key: "acked_msgs_per_sec",
            label: "acked publish rate (256 in flight)",
            unit: "msg/s",
            value: spec.msgs as f64 / secs,
            better: Better::Higher,
        });
        outcome.figures.push(Figure {
            key: "acked_mb_per_sec",
            label: "acked payload throughput",
            unit: "MB/s",
            value: spec.msgs as f64 * spec.size as f64 / secs / 1e6,
            better: Better::Higher,
        });
    }
    probe.finish(outcome.count, "msg")?.append_to(outcome);
    Ok(())
}

/// `js-pull`: a durable pull consumer with explicit acks reads the whole
/// stream; every message is acked and checked to be the next sequence.
async fn consume_pull(
    session: &Session,
    js: &Context,
    name: &str,
    spec: &ScenarioSpec,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;

    let stream = js.get_stream(name).await.context("getting the stream")?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("creating the pull consumer")?;
    probe.start()?;
    let start = Instant::now();
    let consumed = session
        .guard("consuming", async {
            let mut messages = consumer.messages().await.context("starting to pull")?;
            let mut seen = 0u64;
            while seen < spec.msgs {
                let message = tokio::time::timeout(spec.stall_timeout, messages.next())
                    .await
                    .with_context(|| {
                        format!("no message for {:?} after {seen}", spec.stall_timeout)
                    })?
                    .context("the pull stream ended")?
                    .map_err(|e| anyhow::anyhow!("pull: {e}"))?;
                let info = message
                    .info()
                    .map_err(|e| anyhow::anyhow!("ack subject: {e}"))?;
                if info.stream_sequence != seen + 1 {
                    bail!(
                        "expected stream sequence {}, got {}",
                        seen + 1,
                        info.stream_sequence
                    );
                }
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                seen += 1;
            }
            Ok(seen)
        })
        .await?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    outcome.count = consumed;
    outcome.figures.push(Figure {
        key: "consumed_msgs_per_sec",
        label: if spec.kind == ScenarioKind::JsWorkQueue {
            "work-queue consume rate (each ack removes)"
        } else {
            "pull consume rate (explicit acks)"
        },
        unit: "msg/s",
        value: consumed as f64 / secs,
        better: Better::Higher,
    });
    probe.finish(consumed, "consumed")?.append_to(outcome);
    Ok(())
}

/// Waits (up to 10 s) until the work-queue stream `name` holds nothing:
/// the consumer acked every message, and each ack removes one.
async fn drained(js: &Context, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = js.get_stream(name).await.context("getting the stream")?;
    loop {
        let left = stream.info().await.context("stream info")?.state.messages;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("stream {name} still holds {left} messages after every ack");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Disk figures of `js-disk`, read after the publish phase.
async fn disk_usage(
    js: &Context,
    name: &str,
    spec: &ScenarioSpec,
    store_dir: Option<&Path>,
    baseline: Option<DirUsage>,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("looking up stream {name}"))?;
    let state = stream
        .info()
        .await
        .with_context(|| format!("reading info of stream {name}"))?
        .state
        .clone();
    let expected = spec.msgs + warmup_msgs(spec);
    if state.messages != expected {
        bail!(
            "stream {name} reports {} messages stored, {expected} were acked",
            state.messages
        );
    }
    let stored = state.messages.max(1) as f64;
    let (Some(dir), Some(before)) = (store_dir, baseline) else {
        outcome
            .notes
            .push("no --store-dir given: disk bytes per stored message not measured".to_owned());
        outcome
            .figures
            .push(server_bytes_figure(state.bytes, stored));
        return Ok(());
    };
    let after = settled_dir_usage(dir).await?;
    outcome.figures.push(Figure {
        key: "disk_bytes_per_msg",
        label: "store dir growth per stored msg (file sizes)",
        unit: "B",
        value: after.file_bytes.saturating_sub(before.file_bytes) as f64 / stored,
        better: Better::Lower,
    });
    outcome.figures.push(Figure {
        key: "disk_alloc_bytes_per_msg",
        label: "store dir growth per stored msg (allocated blocks)",
        unit: "B",
        value: after.alloc_bytes.saturating_sub(before.alloc_bytes) as f64 / stored,
        better: Better::Lower,
    });
    outcome
        .figures
        .push(server_bytes_figure(state.bytes, stored));
    outcome.notes.push(format!(
        "{} messages of {} B stored; store dir {} grew from {} to {} bytes ({} files)",
        state.messages,
        spec.size,
        dir.display(),
        before.file_bytes,
        after.file_bytes,
        after.files
    ));
    Ok(())
}

fn server_bytes_figure(bytes: u64, stored: f64) -> Figure {
    Figure {
        key: "stream_bytes_per_msg",
        label: "stream bytes per msg (server's stream info)",
        unit: "B",
        value: bytes as f64 / stored,
        better: Better::Lower,
    }
}

/// Sizes of every file under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DirUsage {
    /// Sum of file lengths (`du --apparent-size`).
    pub(crate) file_bytes: u64,
    /// Sum of allocated 512-byte blocks, in bytes (`du`).
    pub(crate) alloc_bytes: u64,
    /// Regular files counted.
    pub(crate) files: u64,
}

/// Recursively sums the files under `dir` (symlinks are not followed; a
/// missing directory counts as empty, files vanishing mid-walk are skipped).
pub(crate) fn dir_usage(dir: &Path) -> Result<DirUsage> {
    use std::os::unix::fs::MetadataExt as _;
    let mut usage = DirUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("listing {}", path.display())),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.path().symlink_metadata() {
                Ok(meta) => meta,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                usage.file_bytes += meta.len();
                usage.alloc_bytes += meta.blocks() * 512;
                usage.files += 1;
            }
        }
    }
    Ok(usage)
}

/// [`dir_usage`] once two readings 200 ms apart agree (at most ~2 s), so
/// writes the server still buffers or flushes in the background are counted.
async fn settled_dir_usage(dir: &Path) -> Result<DirUsage> {
    let mut last = dir_usage(dir)?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = dir_usage(dir)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_usage_sums_nested_files() {
        let root = std::env::temp_dir().join(format!("tern-bench-du-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("x"), vec![0u8; 100]).unwrap();
        std::fs::write(root.join("a/b/y"), vec![0u8; 4000]).unwrap();
        let usage = dir_usage(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(usage.file_bytes, 4100);
        assert_eq!(usage.files, 2);
        assert_eq!(dir_usage(&root).unwrap(), DirUsage::default());
    }
}
