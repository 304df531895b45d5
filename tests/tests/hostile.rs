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
