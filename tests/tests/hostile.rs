//! Hostile input: floods of connections, clients that never speak or speak
//! one byte at a time, oversized and malformed input. The server stays up,
//! answers a well-behaved client throughout, and its memory stays bounded.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tern_tests::{Launch, RawClient, TernServer};

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;

fn rss_mib(server: &TernServer) -> f64 {
    server.rss_bytes() as f64 / (1024.0 * 1024.0)
}

#[test]
fn connection_floods_and_garbage_leave_memory_bounded() {
    let server = TernServer::launch(Launch::default());
    let mut witness = RawClient::connect_with(server.addr, QUIET);
    witness.send(b"SUB canary 1\r\n");
    assert_eq!(witness.ping_pong(), b"PONG\r\n");
    let before = rss_mib(&server);

    // 3000 connections opened and dropped, half of them after sending junk.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..3000 {
        assert!(Instant::now() < deadline, "flood took too long at {i}");
        let Ok(mut s) = TcpStream::connect(server.addr) else {
            continue;
        };
        if i % 2 == 0 {
            let _ = s.write_all(b"PUB foo 99999999999\r\n\x00\x01garbage\r\n");
        }
        if i % 3 == 0 {
            let _ = s.write_all(&[b'A'; 8192]);
        }
    }
    // Clients that never send CONNECT, and one that sends a byte at a time.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    for b in b"CONNECT {}\r\nPIN" {
        slow.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Huge and deeply nested CONNECT JSON is refused without harm.
    let mut nested = RawClient::connect(server.addr);
    let mut json = "[".repeat(3000);
    json.push_str(&"]".repeat(3000));
    nested.send(format!("CONNECT {json}\r\n").as_bytes());
    assert!(nested.is_closed_within(Duration::from_secs(5)));
    let mut huge = RawClient::connect(server.addr);
    huge.send(format!("CONNECT {{\"name\":\"{}\"}}\r\n", "x".repeat(100_000)).as_bytes());
    let got = huge.read_for(Duration::from_millis(500));
    assert!(String::from_utf8_lossy(&got).contains("maximum control line exceeded"));

    // The well-behaved client never noticed.
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    publisher.send(b"PUB canary 2\r\nok\r\n");
    publisher.ping_pong();
    // (The server's own round-trip PING may arrive in between.)
    let seen = String::from_utf8_lossy(&witness.ping_pong()).into_owned();
    assert!(
        seen.contains("MSG canary 1 2\r\nok\r\n") && !seen.contains("-ERR"),
        "{seen:?}"
    );

    // Once the idle clients go, memory comes back down.
    drop(idle);
    drop(slow);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_mib(&server);
    println!("server RSS: {before:.1} MiB before, {after:.1} MiB after the flood");
    assert!(
        after < before + 64.0,
        "RSS grew from {before:.1} to {after:.1} MiB"
    );
    let seen = String::from_utf8_lossy(&witness.ping_pong()).into_owned();
    assert!(
        seen.ends_with("PONG\r\n") && !seen.contains("-ERR"),
        "{seen:?}"
    );
}

/// Garbage, half-finished handshakes and idle sockets on `addr`, `n` times.
fn flood(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle = Vec::new();
    for i in 0..n {
        assert!(Instant::now() < deadline, "flood took too long at {i}");
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = match i % 4 {
            0 => s.write_all(b"\x00\x01\x02garbage\r\n\r\n"),
            // A WebSocket upgrade or HTTP request that never finishes.
            1 => s.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ",
            ),
            // An HTTP/2 preface followed by junk frames.
            2 => s.write_all(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x04\x00\x00\x00\x00\x00junk",
            ),
            _ => s.write_all(&[b'A'; 16384]),
        };
        if i % 10 == 0 {
            idle.push(s);
        }
    }
    idle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_monitoring_and_cluster_ports_survive_garbage() {
    use futures::StreamExt;
    // Every node gets a WebSocket port of its own (-1: a free one).
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ws.conf");
    std::fs::write(&conf, "websocket {\n  port: -1\n  no_tls: true\n}\n").unwrap();
    let cluster =
        tern_tests::cluster::TernCluster::start_with("hostile", 2, &["-c", conf.to_str().unwrap()]);
    let node = cluster.node(0);
    let ws_port: u16 = node
        .log()
        .lines()
        .find_map(|l| {
            l.split("Listening for websocket clients on ws://")
                .nth(1)
                .map(str::to_owned)
        })
        .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
        .expect("websocket port in the log");
    let before = rss_mib(node);
    let ws_addr = std::net::SocketAddr::from(([127, 0, 0, 1], ws_port));
    let mut held = flood(ws_addr, 400);
    held.extend(flood(node.http.unwrap(), 400));
    held.extend(flood(cluster.cluster_addr(0), 400));

    // Every listener still does its job.
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(format!("ws://127.0.0.1:{ws_port}")),
    )
    .await
    .unwrap()
    .expect("websocket client after the flood");
    let far = tern_tests::connect(&cluster.url(1)).await;
    let mut sub = far.subscribe("after.flood").await.unwrap();
    tern_tests::round_trip(&far).await;
    cluster.wait_interest(0, "after.flood", 1);
    ws.publish("after.flood", "still here".into())
        .await
        .unwrap();
    ws.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("still here"));
    assert_eq!(node.http_json("/varz")["server_name"], "n1");
    assert!(cluster.meshed(0) && cluster.meshed(1));

    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(node);
    println!("node RSS: {before:.1} MiB before, {after:.1} MiB after the floods");
    assert!(
        after < before + 64.0,
        "RSS grew from {before:.1} to {after:.1} MiB"
    );
}
