//! `idle-conns`: server memory per idle connection, using raw TCP sockets
//! so that no client library overhead or behaviour is involved.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ServerProbe, Session};
use crate::bench::{procstat, Better, Figure, Outcome, ScenarioSpec};

/// Concurrent handshakes in `idle-conns`.
const IDLE_CONNECT_CONCURRENCY: usize = 128;
/// Host and port of a `nats://host:port` URL.
async fn socket_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let hostport = hostport.trim_end_matches('/');
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:4222")
    };
    let resolved = tokio::net::lookup_host(&hostport).await?.next();
    resolved.ok_or_else(|| anyhow!("{hostport} did not resolve"))
}

/// Opens one raw connection and completes the NATS handshake.
async fn raw_handshake(addr: SocketAddr) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    read_until(&mut stream, b"\r\n")
        .await
        .context("reading INFO")?;
    stream
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n")
        .await?;
    read_until(&mut stream, b"PONG\r\n")
        .await
        .context("waiting for PONG")?;
    Ok(stream)
}

/// Reads until `needle` has been seen (the server sends nothing else here).
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by server");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(needle.len()).any(|w| w == needle) {
            return Ok(());
        }
        if buf.starts_with(b"-ERR") {
            bail!("server said {}", String::from_utf8_lossy(&buf).trim());
        }
        if buf.len() > 64 * 1024 {
            bail!("no {:?} within 64 KiB", String::from_utf8_lossy(needle));
        }
    }
}

pub(super) async fn idle_conns(
    session: &Session,
    spec: &ScenarioSpec,
    probe: &mut ServerProbe,
    outcome: &mut Outcome,
) -> Result<()> {
    let addr = socket_addr(&session.url).await?;
    let before = probe
        .pids
        .first()
        .copied()
        .map(procstat::sample)
        .transpose()?;
    if probe.pids.is_empty() {
        outcome
            .notes
            .push("no --server-pid: memory per connection not measured".to_owned());
    }
    probe.start()?;
    let start = Instant::now();
    let results: Vec<Result<TcpStream>> = futures::stream::iter(0..spec.conns)
        .map(|_| async move {
            tokio::time::timeout(Duration::from_secs(10), raw_handshake(addr))
                .await
                .map_err(|_| anyhow!("handshake timed out"))?
        })
        .buffer_unordered(IDLE_CONNECT_CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let mut streams = Vec::with_capacity(results.len());
    let mut first_error = None;
    let mut failed = 0usize;
    for result in results {
        match result {
            Ok(stream) => streams.push(stream),
            Err(err) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        outcome.errors.push(format!(
            "{failed} of {} connections failed, first: {err:#}",
            spec.conns
        ));
    }
    let open = streams.len() as u64;
    outcome.count = open;
    // Let the server finish per-connection setup work before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    outcome.figures.push(Figure {
        key: "connect_per_sec",
        label: "connect+handshake rate",
        unit: "conn/s",
        value: open as f64 / elapsed.as_secs_f64().max(1e-9),
        better: Better::Higher,
    });
    if let (Some(pid), Some(before)) = (probe.pids.first().copied(), before) {
        let after = procstat::sample(pid)?;
        let grown = after.rss_bytes as f64 - before.rss_bytes as f64;
        outcome.figures.push(Figure {
            key: "rss_bytes_per_conn",
            label: "server RSS growth per idle conn",
            unit: "B",
            value: grown / open.max(1) as f64,
            better: Better::Lower,
        });
    }
    probe.finish(open, "conn")?.append_to(outcome);
    drop(streams);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn url_to_socket_addr() {
        let a = socket_addr("nats://127.0.0.1:4333").await.unwrap();
        assert_eq!(a, "127.0.0.1:4333".parse().unwrap());
        let b = socket_addr("nats://u:p@127.0.0.1").await.unwrap();
        assert_eq!(b.port(), 4222);
    }
}
