//! Core NATS behaviour through the official `async-nats` client against a
//! real `tern-server` process.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tern_tests::{connect, connect_with, round_trip, Launch, TernServer};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

#[tokio::test]
async fn publish_subscribe() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let mut sub = client.subscribe("orders.eu.created").await.unwrap();
    round_trip(&client).await;
    client
        .publish("orders.eu.created", "hello".into())
        .await
        .unwrap();
    let msg = next(&mut sub).await;
    assert_eq!(msg.subject.as_str(), "orders.eu.created");
    assert_eq!(msg.payload, Bytes::from("hello"));
}

#[tokio::test]
async fn wildcards() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let mut star = client.subscribe("orders.*.created").await.unwrap();
    let mut tail = client.subscribe("orders.>").await.unwrap();
    let mut exact = client.subscribe("orders.us.created").await.unwrap();
    client.flush().await.unwrap();
    for subject in [
        "orders.eu.created",
        "orders.us.created",
        "orders.eu.created.late",
        "orders",
    ] {
        client.publish(subject, subject.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(next(&mut star).await.subject.as_str(), "orders.eu.created");
    assert_eq!(next(&mut star).await.subject.as_str(), "orders.us.created");
    assert_eq!(next(&mut tail).await.subject.as_str(), "orders.eu.created");
    assert_eq!(next(&mut tail).await.subject.as_str(), "orders.us.created");
    assert_eq!(
        next(&mut tail).await.subject.as_str(),
        "orders.eu.created.late"
    );
    assert_eq!(next(&mut exact).await.subject.as_str(), "orders.us.created");
    // Nothing else arrives: `orders` matches none of them.
    client.publish("done", "".into()).await.unwrap();
    client.flush().await.unwrap();
    assert!(timeout(Duration::from_millis(200), star.next())
        .await
        .is_err());
    assert!(timeout(Duration::from_millis(200), tail.next())
        .await
        .is_err());
}

#[tokio::test]
async fn queue_group_delivers_each_message_exactly_once() {
    let server = TernServer::start();
    let publisher = connect(&server.url()).await;
    const MEMBERS: usize = 5;
    const MESSAGES: usize = 2000;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let c = connect(&server.url()).await;
        let sub = c.queue_subscribe("jobs", "workers".into()).await.unwrap();
        round_trip(&c).await;
        members.push((c, sub));
    }
    // A plain subscriber on the same subject gets every message as well.
    let mut watcher = publisher.subscribe("jobs").await.unwrap();
    publisher.flush().await.unwrap();
    for i in 0..MESSAGES {
        publisher
            .publish("jobs", i.to_string().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for _ in 0..MESSAGES {
        next(&mut watcher).await;
    }
    let mut seen = HashSet::new();
    let mut per_member = Vec::new();
    for (_, sub) in &mut members {
        let mut count = 0;
        while let Ok(Some(msg)) = timeout(Duration::from_millis(300), sub.next()).await {
            let n: usize = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
            assert!(seen.insert(n), "message {n} delivered twice");
            count += 1;
        }
        per_member.push(count);
    }
    assert_eq!(
        seen.len(),
        MESSAGES,
        "every message delivered once in total: {per_member:?}"
    );
    assert!(
        per_member.iter().all(|&c| c > 0),
        "spread over members: {per_member:?}"
    );
}

#[tokio::test]
async fn request_reply() {
    let server = TernServer::start();
    let service = connect(&server.url()).await;
    let mut requests = service.subscribe("svc.echo").await.unwrap();
    round_trip(&service).await;
    let responder = tokio::spawn({
        let service = service.clone();
        async move {
            for _ in 0..3 {
                let msg = requests.next().await.unwrap();
                let reply = msg.reply.unwrap();
                let mut body = b"echo: ".to_vec();
                body.extend_from_slice(&msg.payload);
                service.publish(reply, body.into()).await.unwrap();
            }
        }
    });
    let client = connect(&server.url()).await;
    for i in 0..3 {
        let resp = timeout(WAIT, client.request("svc.echo", format!("{i}").into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.payload, Bytes::from(format!("echo: {i}")));
    }
    responder.await.unwrap();
}

#[tokio::test]
async fn request_without_responders_fails_fast() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let err = timeout(WAIT, client.request("nobody.home", "".into()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
}

#[tokio::test]
async fn headers_round_trip() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let mut sub = client.subscribe("h").await.unwrap();
    client.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "abc-1");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    client
        .publish_with_headers("h", headers, "body".into())
        .await
        .unwrap();
    let msg = next(&mut sub).await;
    let got = msg.headers.expect("headers");
    assert_eq!(got.get("Nats-Msg-Id").map(|v| v.as_str()), Some("abc-1"));
    let multi: Vec<&str> = got.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(msg.payload, Bytes::from("body"));
}

#[tokio::test]
async fn unsubscribe_after_max_messages() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let mut sub = client.subscribe("limited").await.unwrap();
    sub.unsubscribe_after(3).await.unwrap();
    client.flush().await.unwrap();
    for i in 0..10 {
        client
            .publish("limited", i.to_string().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(msg)) = timeout(Duration::from_secs(2), sub.next()).await {
        got.push(msg.payload);
    }
    assert_eq!(
        got,
        vec![Bytes::from("0"), Bytes::from("1"), Bytes::from("2")]
    );
}

#[tokio::test]
async fn drain_delivers_pending_then_closes() {
    let server = TernServer::start();
    let client = connect(&server.url()).await;
    let mut sub = client.subscribe("drain.me").await.unwrap();
    round_trip(&client).await;
    let publisher = connect(&server.url()).await;
    for i in 0..100 {
        publisher
            .publish("drain.me", i.to_string().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    // Let the messages reach the subscriber's connection before draining.
    let first = next(&mut sub).await;
    assert_eq!(first.payload, Bytes::from("0"));
    sub.drain().await.unwrap();
    let mut count = 1;
    while let Ok(Some(_)) = timeout(WAIT, sub.next()).await {
        count += 1;
    }
    assert_eq!(count, 100, "drain delivers what was in flight, then ends");
}

#[tokio::test]
async fn echo_off_suppresses_own_messages() {
    let server = TernServer::start();
    let quiet = connect_with(&server.url(), async_nats::ConnectOptions::new().no_echo()).await;
    let other = connect(&server.url()).await;
    let mut own = quiet.subscribe("chat").await.unwrap();
    let mut theirs = other.subscribe("chat").await.unwrap();
    round_trip(&quiet).await;
    round_trip(&other).await;
    quiet.publish("chat", "from quiet".into()).await.unwrap();
    quiet.flush().await.unwrap();
    assert_eq!(next(&mut theirs).await.payload, Bytes::from("from quiet"));
    assert!(
        timeout(Duration::from_millis(300), own.next())
            .await
            .is_err(),
        "echo was off"
    );
    other.publish("chat", "from other".into()).await.unwrap();
    assert_eq!(next(&mut own).await.payload, Bytes::from("from other"));
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    let port = tern_tests::free_port();
    let launch = Launch {
        port: Some(port),
        ..Launch::default()
    };
    let server = TernServer::launch(launch.clone());
    let options = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .max_reconnects(None);
    let client = connect_with(&server.url(), options).await;
    let mut sub = client.subscribe("after.restart").await.unwrap();
    client.flush().await.unwrap();
    drop(server);
    let server = TernServer::launch(launch);
    // The client resubscribes on reconnect; publish until the message gets through.
    let publisher = connect(&server.url()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        publisher
            .publish("after.restart", "back".into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        if let Ok(Some(msg)) = timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(msg.payload, Bytes::from("back"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "client did not come back"
        );
    }
}

#[tokio::test]
async fn payloads_up_to_max_payload() {
    let server = TernServer::launch(Launch::default().config("max_payload: 65536\n"));
    let client = connect(&server.url()).await;
    assert_eq!(client.server_info().max_payload, 65536);
    let mut sub = client.subscribe("big").await.unwrap();
    client.flush().await.unwrap();
    for size in [0usize, 1, 4095, 4096, 65535, 65536 - 200, 65536] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // async-nats counts headers too; a plain publish carries none.
        client.publish("big", payload.clone().into()).await.unwrap();
        let msg = next(&mut sub).await;
        assert_eq!(msg.payload.len(), size);
        assert_eq!(&msg.payload[..], &payload[..]);
    }
    // One byte more is refused by the client before it reaches the wire.
    let too_big = vec![0u8; 65537];
    assert!(client.publish("big", too_big.into()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections() {
    let server = TernServer::start();
    let url = server.url();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let options =
                async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(30));
            let client = tern_tests::connect_with(&url, options).await;
            let subject = format!("conn.{i}");
            let mut sub = client.subscribe(subject.clone()).await.unwrap();
            client.publish(subject, "x".into()).await.unwrap();
            let msg = timeout(Duration::from_secs(30), sub.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(msg.payload, Bytes::from("x"));
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let varz_client = connect(&url).await;
    // A broadcast reaches all 1000.
    let mut all = varz_client.subscribe("conn.*").await.unwrap();
    round_trip(&varz_client).await;
    for c in clients.iter().take(10) {
        c.publish("conn.0", "again".into()).await.unwrap();
        c.flush().await.unwrap();
    }
    for _ in 0..10 {
        next(&mut all).await;
    }
    assert_eq!(clients.len(), 1000);
}
