//! NATS over WebSocket with async-nats (`ws://`), talking to TCP clients.

use std::time::Duration;

use futures::StreamExt;
use tern_tests::{connect, free_port, Launch, TernServer};

#[tokio::test]
async fn websocket_and_tcp_clients_talk() {
    let port = free_port();
    let server = TernServer::launch(Launch::default().config(&format!(
        "websocket {{\n  port: {port}\n  no_tls: true\n}}\n"
    )));
    assert!(server.log().contains(&format!(
        "Listening for websocket clients on ws://127.0.0.1:{port}"
    )));
    let ws = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::connect(format!("ws://127.0.0.1:{port}")),
    )
    .await
    .unwrap()
    .expect("websocket connect");
    let tcp = connect(&server.url()).await;
    let mut from_tcp = ws.subscribe("greet.ws").await.unwrap();
    let mut from_ws = tcp.subscribe("greet.tcp").await.unwrap();
    tern_tests::round_trip(&ws).await;
    tern_tests::round_trip(&tcp).await;
    tcp.publish("greet.ws", "hello over tcp".into())
        .await
        .unwrap();
    let payload: bytes::Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ws.publish("greet.tcp", payload.clone()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), from_tcp.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("hello over tcp"));
    let msg = tokio::time::timeout(Duration::from_secs(10), from_ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, payload, "a 100 KB message crosses intact");
    // Request/reply across the two.
    let mut service = tcp.subscribe("svc").await.unwrap();
    tern_tests::round_trip(&tcp).await;
    let responder = tokio::spawn({
        let tcp = tcp.clone();
        async move {
            let req = service.next().await.unwrap();
            tcp.publish(req.reply.unwrap(), "pong".into())
                .await
                .unwrap();
        }
    });
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.request("svc", "ping".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.payload, bytes::Bytes::from("pong"));
    responder.await.unwrap();
}

#[test]
fn websocket_without_tls_needs_no_tls() {
    let err = TernServer::try_launch(Launch::default().config("websocket { port: 0 }\n"))
        .err()
        .expect("refused without tls or no_tls");
    assert!(err.contains("no_tls"), "{err}");
}

#[tokio::test]
async fn websocket_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tern_tests::pki::make_pki(dir.path());
    let port = free_port();
    let server = TernServer::launch(Launch::default().config(&format!(
        "websocket {{\n  port: {port}\n  tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    )));
    assert!(server.log().contains(&format!(
        "Listening for websocket clients on wss://127.0.0.1:{port}"
    )));
    let wss = tokio::time::timeout(
        Duration::from_secs(10),
        async_nats::ConnectOptions::new()
            .add_root_certificates(pki.ca.clone())
            .connect(format!("wss://localhost:{port}")),
    )
    .await
    .unwrap()
    .expect("wss connect");
    let tcp = connect(&server.url()).await;
    let mut sub = tcp.subscribe("over.wss").await.unwrap();
    tern_tests::round_trip(&tcp).await;
    wss.publish("over.wss", "encrypted".into()).await.unwrap();
    wss.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("encrypted"));
    // Plain ws:// on the TLS port gets no upgrade.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .max_reconnects(Some(1))
            .connect(format!("ws://127.0.0.1:{port}")),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "plain ws must not connect to a wss port"
    );
}

/// A frame announcing more than a couple of maximal messages is refused from
/// its header: the server closes the connection instead of buffering it.
#[tokio::test]
async fn oversized_websocket_frame_is_refused_before_buffering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let server = TernServer::launch(Launch::default().config(&format!(
        "websocket {{\n  port: {port}\n  no_tls: true\n}}\n"
    )));
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    sock.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("upgrade answered")
            .unwrap();
        assert!(n > 0 && seen.len() < 64 * 1024, "upgrade response");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 101"), "{seen:?}");
    // FIN + binary, masked, 64-bit length of 32 MiB (the cap is 8 MiB with the
    // default 1 MiB max_payload); no body follows.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(32u64 * 1024 * 1024).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    sock.write_all(&frame).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is closed at the frame header"
    );
    // The server is still serving others.
    let client = connect(&server.url()).await;
    tern_tests::round_trip(&client).await;
}
