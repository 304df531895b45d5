//! `reqrep`: one requester, one responder, sequential requests.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_nats::Subject;
use bytes::Bytes;
use futures::StreamExt;

use super::{AbortOnDrop, ServerProbe, Session};
use crate::bench::{Better, Figure, Outcome, ScenarioSpec};

pub(super) async fn request_reply(
    session: &Session,
    spec: &ScenarioSpec,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    let responder = session.connect("tern-bench-responder").await?;
    let mut inbound = responder.subscribe("tern.bench.reqrep").await?;
    responder.flush().await?;
    let reply_client = responder.clone();
    let _responder_task = AbortOnDrop(vec![tokio::spawn(async move {
        while let Some(msg) = inbound.next().await {
            if let Some(reply) = msg.reply {
                if reply_client.publish(reply, msg.payload).await.is_err() {
                    break;
                }
            }
        }
    })]);

    let requester = session.connect("tern-bench-requester").await?;
    let subject = Subject::from_static("tern.bench.reqrep");
    let payload = Bytes::from(vec![b'x'; spec.size]);
    // Warm up the reply subscription and both connections.
    session
        .guard("warming up", async {
            for _ in 0..spec.msgs.min(1_000) {
                requester.request(subject.clone(), payload.clone()).await?;
            }
            Ok(())
        })
        .await?;
    probe.start()?;
    let (latencies, elapsed) = session
        .guard("requesting", async {
            let mut latencies = Vec::with_capacity(spec.msgs as usize);
            let start = Instant::now();
            for _ in 0..spec.msgs {
                let t = Instant::now();
                let reply = requester.request(subject.clone(), payload.clone()).await?;
                latencies.push(t.elapsed());
                if reply.payload.len() != spec.size {
                    bail!(
                        "reply payload {} bytes, expected {}",
                        reply.payload.len(),
                        spec.size
                    );
                }
            }
            Ok((latencies, start.elapsed()))
        })
        .await?;
    push_latency_figures(
        outcome,
        latencies,
        elapsed,
        &LatencyNames {
            rate: ("req_per_sec", "request rate (sequential)", "req/s"),
            quantiles: [
                ("rtt_p50_us", "round trip p50", 0.50),
                ("rtt_p99_us", "round trip p99", 0.99),
                ("rtt_p999_us", "round trip p99.9", 0.999),
            ],
            mean: ("rtt_mean_us", "round trip mean"),
        },
    );
    probe.finish(outcome.count, "req")?.append_to(outcome);
    Ok(())
}

/// Names of the figures a latency series produces: the rate, then p50,
/// p99, p99.9 and mean, each as (key, label).
pub(super) struct LatencyNames {
    pub(super) rate: (&'static str, &'static str, &'static str),
    pub(super) quantiles: [(&'static str, &'static str, f64); 3],
    pub(super) mean: (&'static str, &'static str),
}

/// Adds the rate and latency figures of `latencies` (measured over
/// `elapsed`) to `outcome`.
pub(super) fn push_latency_figures(
    outcome: &mut Outcome,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    names: &LatencyNames,
) {
    outcome.count = latencies.len() as u64;
    latencies.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = latencies.iter().map(|d| us(*d)).sum::<f64>() / latencies.len().max(1) as f64;
    let (key, label, unit) = names.rate;
    outcome.figures.push(Figure {
        key,
        label,
        unit,
        value: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        better: Better::Higher,
    });
    for (key, label, q) in names.quantiles {
        outcome.figures.push(Figure {
            key,
            label,
            unit: "µs",
            value: us(percentile(&latencies, q)),
            better: Better::Lower,
        });
    }
    let (key, label) = names.mean;
    outcome.figures.push(Figure {
        key,
        label,
        unit: "µs",
        value: mean,
        better: Better::Lower,
    });
}

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_micros(500));
        assert_eq!(percentile(&v, 0.99), Duration::from_micros(990));
        assert_eq!(percentile(&v, 0.999), Duration::from_micros(999));
        assert_eq!(percentile(&v[..1], 0.999), Duration::from_micros(1));
    }
}
