//! Slow consumers against a real `tern-server`: a subscriber that does not
//! read is cut off once its queued output passes `max_pending` (or a write
//! takes longer than `write_deadline`), while the publisher and a healthy
//! subscriber carry on, and the server's memory stays bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tern_tests::{
    connect, connect_with, proc_status_kb, round_trip, Launch, RawClient, TernServer,
};

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;
const RSS_LIMIT: u64 = 200 * 1024 * 1024;

/// Samples the server's RSS every 25 ms until stopped; returns the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                // Bounded: at most 2 minutes of samples.
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let rss = proc_status_kb(pid, "VmRSS:") * 1024;
                    peak.fetch_max(rss, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(25));
                }
            })
        };
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Reads the slow subscriber's socket to the end; returns (closed, bytes read).
fn drain(slow: &mut RawClient) -> (bool, Vec<u8>) {
    let closed = slow.is_closed_within(Duration::from_secs(15));
    let rest = slow.read_for(Duration::from_millis(50));
    (closed, rest)
}

/// Records every event an `async-nats` client reports.
fn recording_options(events: Arc<Mutex<Vec<String>>>) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new().event_callback(move |event| {
        let events = events.clone();
        async move {
            events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.to_string());
        }
    })
}

fn no_disconnects(events: &Mutex<Vec<String>>) -> Vec<String> {
    events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|e| *e != "connected")
        .cloned()
        .collect()
}

/// What the healthy subscriber saw.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Received {
    count: usize,
    /// `(expected, got)` at the first message out of sequence, if any.
    first_gap: Option<(u64, u64)>,
}

/// The scenario: with `max_pending: 1MB`, a raw subscriber that never reads,
/// a healthy `async-nats` subscriber, and a publisher sending `COUNT` x 1 KiB.
/// With `window`, the publisher keeps at most that many messages ahead of the
/// healthy subscriber; without, it publishes as fast as it can.
async fn slow_consumer_scenario(window: Option<usize>) {
    const COUNT: usize = 20_000;
    const SIZE: usize = 1024;
    let server = TernServer::launch(Launch::monitored().config("max_pending: 1MB\n"));

    // A subscriber that never reads.
    let mut slow = RawClient::connect_with(server.addr, QUIET);
    slow.send(b"SUB load 1\r\n");
    assert_eq!(slow.ping_pong(), b"PONG\r\n");
    let slow_addr = slow.local_addr();

    // A healthy subscriber that reads everything and checks the sequence.
    let healthy_events = Arc::new(Mutex::new(Vec::new()));
    let healthy = connect_with(&server.url(), recording_options(healthy_events.clone())).await;
    let mut sub = healthy.subscribe("load").await.unwrap();
    round_trip(&healthy).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let counter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut seen = Received::default();
            while seen.count < COUNT {
                // Stop once nothing more comes for 5 s (or at the deadline).
                let idle = (tokio::time::Instant::now() + Duration::from_secs(5)).min(deadline);
                let msg = match tokio::time::timeout_at(idle, sub.next()).await {
                    Ok(Some(msg)) => msg,
                    _ => break,
                };
                let seq = u64::from_be_bytes(msg.payload[..8].try_into().unwrap());
                if seq != seen.count as u64 && seen.first_gap.is_none() {
                    seen.first_gap = Some((seen.count as u64, seq));
                }
                assert_eq!(msg.payload.len(), SIZE);
                seen.count += 1;
                progress.store(seen.count, Ordering::Relaxed);
            }
            seen
        })
    };

    let publisher_events = Arc::new(Mutex::new(Vec::new()));
    let publisher = connect_with(&server.url(), recording_options(publisher_events.clone())).await;
    let sampler = RssSampler::start(server.pid());
    let started = Instant::now();
    let pace_deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..COUNT {
        if let Some(window) = window {
            while i >= window + progress.load(Ordering::Relaxed) && Instant::now() < pace_deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let mut payload = vec![b'x'; SIZE];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher
            .publish("load", Bytes::from(payload))
            .await
            .expect("publish");
    }
    publisher.flush().await.unwrap();
    round_trip(&publisher).await;
    let seen = tokio::time::timeout(Duration::from_secs(70), counter)
        .await
        .expect("the counter finishes")
        .unwrap();
    let elapsed = started.elapsed();
    let peak = sampler.finish();
    let hwm = proc_status_kb(server.pid(), "VmHWM:") * 1024;
    println!(
        "published {COUNT} x {SIZE} B in {elapsed:?} (window {window:?}); server RSS peak sampled {} MiB, VmHWM {} MiB, now {} MiB",
        peak / (1024 * 1024),
        hwm / (1024 * 1024),
        server.rss_bytes() / (1024 * 1024)
    );
    let events_seen = no_disconnects(&healthy_events);
    assert_eq!(
        seen,
        Received {
            count: COUNT,
            first_gap: None
        },
        "the healthy subscriber receives every message, in order (its events besides `connected`: {events_seen:?})"
    );

    // The slow one was cut off: EOF (or reset) after what it had been sent, no -ERR.
    let (closed, tail) = drain(&mut slow);
    assert!(closed, "the slow subscriber's connection was closed");
    assert!(
        !String::from_utf8_lossy(&tail).contains("-ERR"),
        "no -ERR for a slow consumer"
    );

    // The publisher and the healthy subscriber never noticed.
    assert_eq!(
        publisher.connection_state(),
        async_nats::connection::State::Connected
    );
    assert_eq!(no_disconnects(&publisher_events), Vec::<String>::new());
    assert_eq!(no_disconnects(&healthy_events), Vec::<String>::new());
    round_trip(&publisher).await;
    round_trip(&healthy).await;

    let varz = server.http_json("/varz");
    assert_eq!(varz["slow_consumers"], 1, "varz slow_consumers");
    assert_eq!(
        varz["connections"], 2,
        "publisher and healthy subscriber remain"
    );
    assert_eq!(varz["total_connections"], 3, "nobody reconnected");
    // Every publish arrived, plus the four round-trip requests.
    assert_eq!(varz["in_msgs"].as_u64().unwrap() as usize, COUNT + 4);
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.to_lowercase().contains("slow consumer"))
        .unwrap_or_else(|| panic!("the log mentions the slow consumer:\n{log}"));
    assert!(
        line.contains(&slow_addr.to_string()),
        "the slow consumer line names its address {slow_addr}: {line}"
    );
    assert!(
        peak < RSS_LIMIT && hwm < RSS_LIMIT,
        "server memory stays bounded: peak {peak}, VmHWM {hwm}"
    );
}

/// The publisher keeps within 512 messages of the healthy subscriber, so
/// only the reader that never reads can pass `max_pending`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_without_hurting_others() {
    slow_consumer_scenario(Some(512)).await;
}

/// The same with the publisher going flat out: nats-server stalls a producer
/// whose messages pile up for a subscriber (see §10 of the wire notes), so a
/// subscriber that does read is not pushed over `max_pending` and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_publisher_does_not_push_a_reading_subscriber_over_max_pending() {
    slow_consumer_scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_deadline_cuts_off_a_stuck_subscriber() {
    const COUNT: usize = 60;
    const SIZE: usize = 512 * 1024;
    let server = TernServer::launch(Launch::monitored().config("write_deadline: \"500ms\"\n"));
    let mut slow = RawClient::connect_with(server.addr, QUIET);
    slow.send(b"SUB big 1\r\n");
    assert_eq!(slow.ping_pong(), b"PONG\r\n");

    let events = Arc::new(Mutex::new(Vec::new()));
    let publisher = connect_with(&server.url(), recording_options(events.clone())).await;
    let payload = Bytes::from(vec![b'y'; SIZE]);
    let sampler = RssSampler::start(server.pid());
    for _ in 0..COUNT {
        publisher.publish("big", payload.clone()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    round_trip(&publisher).await;

    // Without reading the stuck socket, wait (bounded) for the write deadline
    // to pass and the server to drop the connection; then read to the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.http_json("/varz")["connections"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (closed, tail) = drain(&mut slow);
    let peak = sampler.finish();
    println!(
        "published {COUNT} x {SIZE} B; server RSS peak sampled {} MiB",
        peak / (1024 * 1024)
    );
    assert!(closed, "the stuck subscriber's connection was closed");
    assert!(!String::from_utf8_lossy(&tail).contains("-ERR"));
    assert_eq!(no_disconnects(&events), Vec::<String>::new());
    round_trip(&publisher).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut varz = server.http_json("/varz");
    while varz["slow_consumers"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        varz = server.http_json("/varz");
    }
    assert!(
        server.log().to_lowercase().contains("slow consumer"),
        "{}",
        server.log()
    );
    assert_eq!(varz["connections"], 1, "only the publisher remains");
    assert_eq!(
        varz["slow_consumers"], 1,
        "varz slow_consumers counts write-deadline slow consumers too"
    );
    let other = connect(&server.url()).await;
    round_trip(&other).await;
    assert!(peak < RSS_LIMIT, "server memory stays bounded: {peak}");
}
