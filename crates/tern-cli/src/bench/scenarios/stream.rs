//! Publish-stream scenarios: `pub`, `pubsub`, `fanout` and `queue`.
//!
//! Method: subscribers (one connection each) subscribe and `flush()` so the
//! server knows their interest; then one publisher calls
//! `client.publish(subject, payload)` in a tight loop (async-nats batches the
//! writes) and finally `flush()`, whose PONG proves the server has read
//! everything. The publish rate is measured to that PONG; the receive rate
//! from the first to the last message received by any subscriber.
//!
//! Pacing: every [`PACING_CHECK_EVERY`] messages the publisher checks how far
//! the slowest subscriber (or, for a queue group, the group) lags. Beyond
//! [`PACING_WINDOW_BYTES`] of messages it sleeps in 1 ms steps until the lag
//! halves. On one client core the async-nats receive path is slower than its
//! send path, so without this the server would buffer the difference and cut
//! the subscriber off as a slow consumer (64 MiB `max_pending`) at 1 KiB.
//! The number of pauses is reported as a note; the publish rate of these
//! scenarios therefore includes pacing and tracks the receive rate.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;

use super::{AbortOnDrop, ServerProbe, Session};
use crate::bench::{Better, Figure, Outcome, ScenarioSpec};

/// Subscribers in `fanout` and `queue`.
const GROUP_SUBSCRIBERS: usize = 4;

/// Bytes a subscriber may lag behind the publisher before the publisher
/// pauses. nats-server cuts a subscriber off as a slow consumer once 64 MiB
/// are pending for it (default `max_pending`); a quarter of that keeps the
/// pipeline full without ever getting near the limit.
const PACING_WINDOW_BYTES: u64 = 16 << 20;

/// Approximate wire overhead per delivered message (`MSG <subject> <sid> <len>\r\n...\r\n`).
const MSG_OVERHEAD_BYTES: u64 = 40;

/// Publish calls between two pacing checks.
const PACING_CHECK_EVERY: u64 = 1024;
fn rate_figures(
    outcome: &mut Outcome,
    who: &'static str,
    msgs: u64,
    size: usize,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let (msg_key, msg_label, mb_key, mb_label) = match who {
        "pub" => (
            "pub_msgs_per_sec",
            "publish rate",
            "pub_mb_per_sec",
            "publish payload throughput",
        ),
        _ => (
            "recv_msgs_per_sec",
            "receive rate (all subscribers)",
            "recv_mb_per_sec",
            "receive payload throughput",
        ),
    };
    outcome.figures.push(Figure {
        key: msg_key,
        label: msg_label,
        unit: "msg/s",
        value: msgs as f64 / secs,
        better: Better::Higher,
    });
    outcome.figures.push(Figure {
        key: mb_key,
        label: mb_label,
        unit: "MB/s",
        value: msgs as f64 * size as f64 / secs / 1e6,
        better: Better::Higher,
    });
}

/// Publishes `spec.msgs` messages (or for `spec.duration`), calling `pace`
/// every [`PACING_CHECK_EVERY`] messages. Returns the number published.
async fn publish_stream<F, Fut>(
    client: &Client,
    subject: &Subject,
    payload: &Bytes,
    spec: &ScenarioSpec,
    mut pace: F,
) -> Result<u64>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let deadline = spec.duration.map(|d| Instant::now() + d);
    let mut sent = 0u64;
    loop {
        match deadline {
            Some(deadline) => {
                if sent % PACING_CHECK_EVERY == 0 && Instant::now() >= deadline {
                    break;
                }
            }
            None => {
                if sent >= spec.msgs {
                    break;
                }
            }
        }
        client
            .publish(subject.clone(), payload.clone())
            .await
            .context("publish")?;
        sent += 1;
        if sent % PACING_CHECK_EVERY == 0 {
            pace(sent).await?;
        }
    }
    Ok(sent)
}

pub(super) async fn publish_only(
    session: &Session,
    spec: &ScenarioSpec,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    let publisher = session.connect("tern-bench-pub").await?;
    let subject = Subject::from_static("tern.bench.pub");
    let payload = Bytes::from(vec![b'x'; spec.size]);
    probe.start()?;
    let start = Instant::now();
    let sent = session
        .guard("publishing", async {
            let sent =
                publish_stream(&publisher, &subject, &payload, spec, |_| async { Ok(()) }).await?;
            // The server has processed everything once the PONG is back.
            publisher.flush().await.context("flush")?;
            Ok(sent)
        })
        .await?;
    let elapsed = start.elapsed();
    outcome.count = sent;
    rate_figures(outcome, "pub", sent, spec.size, elapsed);
    probe.finish(sent, "msg")?.append_to(outcome);
    Ok(())
}

/// How subscribers are arranged in [`publish_subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// One subscriber.
    Single,
    /// Every subscriber gets every message.
    Fanout,
    /// Subscribers share one queue group; each message goes to exactly one.
    Queue,
    /// Cluster: one subscriber on the second node.
    Remote,
    /// Cluster: one subscriber on every node, each gets every message.
    EveryNode,
}

/// Received-message bookkeeping shared by the subscriber tasks.
struct Tally {
    /// Messages received by all subscribers together.
    total: AtomicU64,
    /// Messages received per subscriber.
    per_sub: Vec<AtomicU64>,
    /// `total` at which the run is complete; `u64::MAX` until known.
    target: AtomicU64,
    first_at: OnceLock<Instant>,
    last_at: OnceLock<Instant>,
    done: AtomicBool,
}

impl Tally {
    fn new(subs: usize) -> Self {
        Self {
            total: AtomicU64::new(0),
            per_sub: (0..subs).map(|_| AtomicU64::new(0)).collect(),
            target: AtomicU64::new(u64::MAX),
            first_at: OnceLock::new(),
            last_at: OnceLock::new(),
            done: AtomicBool::new(false),
        }
    }

    fn on_message(&self, sub: usize) {
        self.first_at.get_or_init(Instant::now);
        self.per_sub[sub].fetch_add(1, Ordering::Relaxed);
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if total >= self.target.load(Ordering::Acquire) {
            self.complete();
        }
    }

    /// Sets the target once the publisher knows how many it sent.
    fn set_target(&self, target: u64) {
        self.target.store(target, Ordering::Release);
        // Everything may already have arrived before the target was known;
        // the recorded end is then late by at most the time since the last
        // publish call, which is negligible.
        if self.total.load(Ordering::Acquire) >= target {
            self.complete();
        }
    }

    fn complete(&self) {
        self.last_at.get_or_init(Instant::now);
        self.done.store(true, Ordering::Release);
    }

    /// Messages the slowest subscriber has seen (fanout / single), or the
    /// group total (queue): what the publisher is measured against.
    fn received_for_pacing(&self, shape: Shape) -> u64 {
        match shape {
            Shape::Queue => self.total.load(Ordering::Relaxed),
            Shape::Single | Shape::Fanout | Shape::Remote | Shape::EveryNode => self
                .per_sub
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0),
        }
    }
}

pub(super) async fn publish_subscribe(
    session: &Session,
    spec: &ScenarioSpec,
    shape: Shape,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    let nodes = session.urls.len();
    if matches!(shape, Shape::Remote | Shape::EveryNode) && nodes < 2 {
        bail!(
            "{} needs a cluster (at least two server URLs)",
            spec.kind.name()
        );
    }
    let subs = match shape {
        Shape::Single | Shape::Remote => 1,
        Shape::Fanout | Shape::Queue => GROUP_SUBSCRIBERS,
        Shape::EveryNode => nodes,
    };
    let subject_name = format!("tern.bench.{}", spec.kind.name());
    let tally = Arc::new(Tally::new(subs));

    let mut sub_clients = Vec::with_capacity(subs);
    let mut tasks = AbortOnDrop(Vec::with_capacity(subs));
    let mut ready_flags = Vec::new();
    for i in 0..subs {
        let url = match shape {
            Shape::Remote => &session.urls[1],
            Shape::EveryNode => &session.urls[i],
            _ => &session.url,
        };
        let client = session
            .connect_to(&format!("tern-bench-sub-{i}"), url)
            .await?;
        let mut subscriber = match shape {
            Shape::Queue => {
                client
                    .queue_subscribe(subject_name.clone(), "tern-bench-q".to_owned())
                    .await?
            }
            _ => client.subscribe(subject_name.clone()).await?,
        };
        // Interest must be registered on the server before the first publish.
        client.flush().await.context("flush subscriber")?;
        if nodes > 1 {
            // In a cluster, interest reaches the publisher's node a moment
            // later. Interest travels in order, so once a readiness subject
            // subscribed after the bench subject is seen there, so is the
            // bench subject.
            let mut ready = client.subscribe(format!("tern.bench.ready.{i}")).await?;
            client.flush().await.context("flush subscriber")?;
            let flag = Arc::new(AtomicBool::new(false));
            let seen = flag.clone();
            tasks.0.push(tokio::spawn(async move {
                if ready.next().await.is_some() {
                    seen.store(true, Ordering::Release);
                }
            }));
            ready_flags.push(flag);
        }
        let tally = tally.clone();
        tasks.0.push(tokio::spawn(async move {
            while subscriber.next().await.is_some() {
                tally.on_message(i);
            }
        }));
        sub_clients.push(client);
    }

    let publisher = session.connect("tern-bench-pub").await?;
    if !ready_flags.is_empty() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready_flags.iter().all(|f| f.load(Ordering::Acquire)) {
            if Instant::now() > deadline {
                bail!("subscriptions did not reach the publisher's node within 30 s");
            }
            for (i, flag) in ready_flags.iter().enumerate() {
                if !flag.load(Ordering::Acquire) {
                    publisher
                        .publish(format!("tern.bench.ready.{i}"), Bytes::new())
                        .await?;
                }
            }
            publisher.flush().await.context("flush readiness probes")?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let subject = Subject::from(subject_name.as_str());
    let payload = Bytes::from(vec![b'x'; spec.size]);
    let window = (PACING_WINDOW_BYTES / (spec.size as u64 + MSG_OVERHEAD_BYTES)).max(1024);
    let pauses = Arc::new(AtomicU64::new(0));

    probe.start()?;
    let start = Instant::now();
    let pace = |sent: u64| {
        let tally = tally.clone();
        let pauses = pauses.clone();
        let stall = spec.stall_timeout;
        async move {
            if sent.saturating_sub(tally.received_for_pacing(shape)) <= window {
                return Ok(());
            }
            // Too far ahead: wait until the subscribers have drained half the window.
            pauses.fetch_add(1, Ordering::Relaxed);
            let mut seen = tally.total.load(Ordering::Relaxed);
            let mut progress_at = Instant::now();
            while sent.saturating_sub(tally.received_for_pacing(shape)) > window / 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let now_seen = tally.total.load(Ordering::Relaxed);
                if now_seen != seen {
                    seen = now_seen;
                    progress_at = Instant::now();
                } else if progress_at.elapsed() > stall {
                    bail!(
                        "subscribers stalled at {} of {sent} published messages",
                        tally.received_for_pacing(shape)
                    );
                }
            }
            Ok(())
        }
    };
    let sent = session
        .guard(
            "publishing",
            publish_stream(&publisher, &subject, &payload, spec, pace),
        )
        .await?;
    let target = match shape {
        Shape::Single | Shape::Queue | Shape::Remote => sent,
        Shape::Fanout | Shape::EveryNode => sent * subs as u64,
    };
    tally.set_target(target);
    session
        .guard("flushing the publisher", async {
            Ok(publisher.flush().await?)
        })
        .await?;
    let pub_elapsed = start.elapsed();
    outcome.count = sent;

    // Wait for everything, giving up after `stall_timeout` without progress
    // or at the first connection trouble.
    let mut seen = tally.total.load(Ordering::Relaxed);
    let mut progress_at = Instant::now();
    while !tally.done.load(Ordering::Acquire) && !session.in_trouble() {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now_seen = tally.total.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            progress_at = Instant::now();
        } else if progress_at.elapsed() > spec.stall_timeout {
            break;
        }
    }
    let completed = tally.done.load(Ordering::Acquire);
    let end = tally.last_at.get().copied().unwrap_or_else(Instant::now);
    let server_figures = probe.finish(sent, "msg")?;
    // A short grace period lets duplicates (a routing bug) show up in the count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tasks);
    let received = tally.total.load(Ordering::Acquire);

    if let Some(first) = tally.first_at.get() {
        // Receive rate over what actually arrived, first to last message.
        rate_figures(
            outcome,
            "recv",
            received.min(target),
            spec.size,
            end.saturating_duration_since(*first),
        );
    }
    outcome.figures.push(Figure {
        key: "pub_msgs_per_sec",
        label: "publish rate (incl. pacing)",
        unit: "msg/s",
        value: sent as f64 / pub_elapsed.as_secs_f64().max(1e-9),
        better: Better::Higher,
    });
    server_figures.append_to(outcome);
    let pauses = pauses.load(Ordering::Relaxed);
    if pauses > 0 {
        outcome.notes.push(format!(
            "publisher paused {pauses} times to keep each subscriber within {window} msgs ({} MiB)",
            PACING_WINDOW_BYTES >> 20
        ));
    }
    if !completed || received < target {
        let cause = if session.in_trouble() {
            "connection trouble".to_owned()
        } else {
            format!("no progress for {:?}", spec.stall_timeout)
        };
        outcome.errors.push(format!(
            "lost {} of {target} expected deliveries ({cause})",
            target - received.min(target),
        ));
    }
    if received > target {
        outcome.errors.push(format!(
            "received {received} deliveries, expected exactly {target} (duplicates)"
        ));
    }
    if shape == Shape::Queue {
        let per: Vec<u64> = tally
            .per_sub
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        outcome
            .notes
            .push(format!("queue members received {per:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_completes_when_target_already_reached() {
        let t = Tally::new(1);
        t.on_message(0);
        t.on_message(0);
        assert!(!t.done.load(Ordering::Acquire));
        t.set_target(2);
        assert!(t.done.load(Ordering::Acquire));
    }
}
