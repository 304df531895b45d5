//! Clusters of real `tern-server` processes driven with `async-nats`:
//! messages, queue groups and requests across nodes, failure detection,
//! failover, rejoin, growth and refusal.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tern_tests::cluster::TernCluster;
use tern_tests::{connect, connect_with, eventually, round_trip};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// Everything `sub` receives until nothing arrives for `quiet`.
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while let Ok(Some(msg)) = timeout(quiet, sub.next()).await {
        out.push(msg);
        assert!(out.len() < 100_000, "runaway subscription");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_nodes_with_wildcards_and_headers() {
    let cluster = TernCluster::start(3);
    let a = connect(&cluster.url(0)).await;
    let b = connect(&cluster.url(1)).await;
    let c = connect(&cluster.url(2)).await;
    let mut plain = b.subscribe("orders.eu.created").await.unwrap();
    let mut star = c.subscribe("orders.*.created").await.unwrap();
    let mut full = c.subscribe("orders.>").await.unwrap();
    round_trip(&b).await;
    round_trip(&c).await;
    cluster.wait_interest(0, "orders.eu.created", 1);
    cluster.wait_interest(0, "orders.*.created", 1);
    cluster.wait_interest(0, "orders.>", 1);

    a.publish("orders.eu.created", "one".into()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Trace-Id", "abc123");
    headers.append("Multi", "x");
    headers.append("Multi", "y");
    a.publish_with_headers("orders.us.created", headers, "two".into())
        .await
        .unwrap();
    a.publish("orders.eu.shipped", "three".into())
        .await
        .unwrap();
    a.flush().await.unwrap();

    let m = next(&mut plain).await;
    assert_eq!(m.payload, Bytes::from("one"));
    let m = next(&mut star).await;
    assert_eq!(m.subject.as_str(), "orders.eu.created");
    let m = next(&mut star).await;
    assert_eq!(m.subject.as_str(), "orders.us.created");
    let h = m.headers.expect("headers survive the hop");
    assert_eq!(h.get("Trace-Id").map(|v| v.as_str()), Some("abc123"));
    let multi: Vec<_> = h.get_all("Multi").map(|v| v.as_str().to_owned()).collect();
    assert_eq!(multi, vec!["x", "y"]);
    let got: Vec<_> = drain(&mut full, Duration::from_millis(500))
        .await
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        got,
        vec![Bytes::from("one"), Bytes::from("two"), Bytes::from("three")]
    );
    // Exactly once: nothing more arrives at the others either.
    assert!(drain(&mut plain, Duration::from_millis(300))
        .await
        .is_empty());
    assert!(drain(&mut star, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_across_three_nodes_gets_each_message_once() {
    let cluster = TernCluster::start(3);
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for node in 0..3 {
        let client = connect(&cluster.url(node)).await;
        for _ in 0..2 {
            subs.push(
                client
                    .queue_subscribe("jobs", "workers".into())
                    .await
                    .unwrap(),
            );
        }
        round_trip(&client).await;
        clients.push(client);
    }
    for node in 0..3 {
        // Each node sees one (jobs, workers) entry from each of the others.
        cluster.wait_interest(node, "jobs workers", 2);
    }
    const N: usize = 300;
    // Publish from a node with members and from a client on each node.
    for i in 0..N {
        clients[i % 3]
            .publish("jobs", i.to_string().into())
            .await
            .unwrap();
    }
    for client in &clients {
        client.flush().await.unwrap();
    }
    let mut seen = Vec::new();
    let mut per_sub = Vec::new();
    for sub in &mut subs {
        let got = drain(sub, Duration::from_millis(700)).await;
        per_sub.push(got.len());
        seen.extend(
            got.into_iter()
                .map(|m| String::from_utf8(m.payload.to_vec()).unwrap()),
        );
    }
    assert_eq!(
        seen.len(),
        N,
        "every message exactly once in total: {per_sub:?}"
    );
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), N);

    // A publisher on a node without members: the group is served remotely.
    let cluster_d = connect(&cluster.url(0)).await;
    drop(subs.drain(0..2)); // node 0's members go away
    round_trip(&clients[0]).await;
    cluster.wait_interest(1, "jobs workers", 1);
    cluster.wait_interest(2, "jobs workers", 1);
    for i in 0..60 {
        cluster_d
            .publish("jobs", i.to_string().into())
            .await
            .unwrap();
    }
    cluster_d.flush().await.unwrap();
    let mut total = 0;
    for sub in &mut subs {
        total += drain(sub, Duration::from_millis(700)).await.len();
    }
    assert_eq!(total, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_and_no_responders_across_nodes() {
    let cluster = TernCluster::start(3);
    let requester = connect(&cluster.url(0)).await;
    let responder = connect(&cluster.url(2)).await;
    let mut service = responder.subscribe("svc.echo").await.unwrap();
    round_trip(&responder).await;
    cluster.wait_interest(0, "svc.echo", 1);
    let handle = tokio::spawn(async move {
        for _ in 0..5 {
            let Some(msg) = service.next().await else {
                break;
            };
            let reply = msg.reply.clone().expect("a request has a reply subject");
            let mut body = b"echo:".to_vec();
            body.extend_from_slice(&msg.payload);
            responder.publish(reply, body.into()).await.unwrap();
        }
        responder.flush().await.unwrap();
    });
    for i in 0..5 {
        let answer = timeout(WAIT, requester.request("svc.echo", format!("{i}").into()))
            .await
            .expect("request timed out")
            .expect("request");
        assert_eq!(answer.payload, Bytes::from(format!("echo:{i}")));
    }
    handle.await.unwrap();
    // Nobody anywhere: the requester's node answers 503 at once.
    let err = timeout(WAIT, requester.request("svc.nobody", "x".into()))
        .await
        .expect("no-responders answer timed out")
        .expect_err("nobody listens");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_comes_and_goes_within_a_bound() {
    let cluster = TernCluster::start(2);
    let b = connect(&cluster.url(1)).await;
    let sub = b.subscribe("late.subject").await.unwrap();
    b.flush().await.unwrap();
    let started = std::time::Instant::now();
    cluster.wait_interest(0, "late.subject", 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The same subject twice is one entry; it goes when the last one goes.
    let sub2 = b.subscribe("late.subject").await.unwrap();
    round_trip(&b).await;
    drop(sub);
    round_trip(&b).await;
    assert_eq!(cluster.interest_count(0, "late.subject"), 1);
    drop(sub2);
    round_trip(&b).await;
    cluster.wait_interest(0, "late.subject", 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_learn_every_node_from_connect_urls() {
    let cluster = TernCluster::start(3);
    let raw = tern_tests::RawClient::connect(cluster.node(0).addr);
    let info = raw.info_json();
    let urls: HashSet<String> = info["connect_urls"]
        .as_array()
        .expect("connect_urls")
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    for node in 1..3 {
        assert!(
            urls.contains(&cluster.node(node).addr.to_string()),
            "{urls:?}"
        );
    }
    assert_eq!(info["cluster"], "tern-test");
    // /varz counts the routes like nats-server.
    let varz = cluster.node(0).http_json("/varz");
    assert_eq!(varz["routes"], 2);
    assert_eq!(varz["cluster"]["name"], "tern-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_fail_over_and_the_node_rejoins() {
    let mut cluster = TernCluster::start(3);
    let publisher = connect(&cluster.url(0)).await;
    // This client is only told about node 3; it learns the others from
    // connect_urls.
    let options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100));
    let mover = connect_with(&cluster.url(2), options).await;
    let mut sub = mover.subscribe("moving.>").await.unwrap();
    round_trip(&mover).await;
    cluster.wait_interest(0, "moving.>", 1);
    publisher
        .publish("moving.before", "1".into())
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.payload, Bytes::from("1"));

    cluster.kill(2);
    // The survivors declare it down within a few seconds.
    assert!(eventually(Duration::from_secs(10), || {
        cluster.routez(0)["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["remote_name"] == "n3" && r["state"] == "down")
    }));
    // The client reconnects to a survivor and its subscription is back.
    assert!(eventually(Duration::from_secs(20), || {
        matches!(
            mover.connection_state(),
            async_nats::connection::State::Connected
        )
    }));
    round_trip(&mover).await;
    let delivered = async {
        for attempt in 0..100u32 {
            publisher
                .publish("moving.after", attempt.to_string().into())
                .await
                .unwrap();
            if let Ok(Some(m)) = timeout(Duration::from_millis(200), sub.next()).await {
                return m;
            }
        }
        panic!("no message after failover");
    };
    let m = timeout(Duration::from_secs(30), delivered).await.unwrap();
    assert_eq!(m.subject.as_str(), "moving.after");
    // The survivors carry on between themselves.
    let other = connect(&cluster.url(1)).await;
    let mut s1 = other.subscribe("survivors").await.unwrap();
    round_trip(&other).await;
    cluster.wait_interest(0, "survivors", 1);
    publisher.publish("survivors", "ok".into()).await.unwrap();
    assert_eq!(next(&mut s1).await.payload, Bytes::from("ok"));

    // The node returns with its data directory: same node id, back up.
    let id_before = cluster.routez(0)["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["remote_name"] == "n3")
        .unwrap()["remote_id"]
        .clone();
    cluster.start_node(2);
    cluster.wait_mesh();
    let back = cluster.routez(0)["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["remote_name"] == "n3")
        .unwrap()
        .clone();
    assert_eq!(back["remote_id"], id_before);
    assert_eq!(back["state"], "up");
    let returner = connect(&cluster.url(2)).await;
    let mut s3 = returner.subscribe("rejoined").await.unwrap();
    round_trip(&returner).await;
    cluster.wait_interest(0, "rejoined", 1);
    publisher.publish("rejoined", "yes".into()).await.unwrap();
    assert_eq!(next(&mut s3).await.payload, Bytes::from("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_leaves_cleanly() {
    let mut cluster = TernCluster::start(3);
    cluster.stop(1);
    assert!(eventually(Duration::from_secs(5), || {
        cluster.routez(0)["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["remote_name"] == "n2" && r["state"] == "left")
    }));
    let info = tern_tests::RawClient::connect(cluster.node(0).addr).info_json();
    let urls: Vec<_> = info["connect_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.len(), 2, "this node and node 3 remain: {urls:?}");
    assert!(urls.contains(&cluster.node(2).addr.to_string()), "{urls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_cluster() {
    let mut cluster = TernCluster::start(2);
    let a = connect(&cluster.url(0)).await;
    // An existing client hears about the new node through an async INFO.
    let mut raw = tern_tests::RawClient::connect_with(
        cluster.node(0).addr,
        r#"{"verbose":false,"protocol":1}"#,
    );
    let index = cluster.add_node();
    cluster.wait_mesh();
    let new_addr = cluster.node(index).addr.to_string();
    let got = raw.read_until(new_addr.as_bytes(), Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&got).contains(&new_addr),
        "no INFO with the new node: {}",
        String::from_utf8_lossy(&got)
    );
    let c = connect(&cluster.url(index)).await;
    let mut sub = c.subscribe("grown").await.unwrap();
    round_trip(&c).await;
    cluster.wait_interest(0, "grown", 1);
    a.publish("grown", "hi".into()).await.unwrap();
    assert_eq!(next(&mut sub).await.payload, Bytes::from("hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_fan_out_once_each() {
    let cluster = TernCluster::start(5);
    let mut clients = Vec::new();
    let mut subs = Vec::new();
    for node in 0..5 {
        let client = connect(&cluster.url(node)).await;
        subs.push(client.subscribe("fan.>").await.unwrap());
        round_trip(&client).await;
        clients.push(client);
    }
    for node in 0..5 {
        cluster.wait_interest(node, "fan.>", 4);
    }
    for (i, client) in clients.iter().enumerate() {
        client
            .publish(format!("fan.{i}"), "x".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
    }
    for sub in &mut subs {
        let got = drain(sub, Duration::from_millis(700)).await;
        let subjects: HashSet<_> = got.iter().map(|m| m.subject.to_string()).collect();
        assert_eq!(got.len(), 5, "each subscriber gets each message once");
        assert_eq!(subjects.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let cluster = TernCluster::start(2);
    let seeds = format!("nats-route://{}", cluster.cluster_addr(0));
    let stranger = tern_tests::TernServer::launch(tern_tests::Launch::monitored().args(&[
        "--cluster",
        "nats://127.0.0.1:-1",
        "--cluster_name",
        "other",
        "--routes",
        &seeds,
    ]));
    assert!(
        eventually(Duration::from_secs(10), || {
            stranger.log().contains("peer refused this node")
                && cluster.node(0).log().contains("cluster name mismatch")
        }),
        "stranger log:\n{}",
        stranger.log()
    );
    assert_eq!(stranger.http_json("/routez")["num_routes"], 0);
    assert_eq!(cluster.routez(0)["num_routes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_with_credentials_refuse_a_node_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = |user: &str, pass: &str| {
        format!("cluster {{ name: sec, listen: \"127.0.0.1:-1\", authorization {{ user: {user}, password: {pass} }} }}\n")
    };
    let first = tern_tests::TernServer::launch(
        tern_tests::Launch::monitored().config(&conf("route", "s3cret")),
    );
    let seeds = format!("nats-route://{}", first.cluster.unwrap());
    let second = tern_tests::TernServer::launch(
        tern_tests::Launch::monitored()
            .config(&conf("route", "s3cret"))
            .args(&["--routes", &seeds]),
    );
    assert!(eventually(Duration::from_secs(10), || {
        first.http_json("/routez")["routes"][0]["connected"] == true
            && second.http_json("/routez")["routes"][0]["connected"] == true
    }));
    let intruder = tern_tests::TernServer::launch(
        tern_tests::Launch::monitored()
            .config(&conf("route", "wrong"))
            .args(&["--routes", &seeds]),
    );
    assert!(eventually(Duration::from_secs(10), || {
        first.log().contains("authorization violation")
    }));
    assert_eq!(intruder.http_json("/routez")["num_routes"], 0);
    assert_eq!(first.http_json("/routez")["num_routes"], 1);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_lame_duck_mode_is_withdrawn_from_connect_urls() {
    let cluster = TernCluster::start(3);
    let ducking = cluster.node(2).addr.to_string();
    let mut raw = tern_tests::RawClient::connect_with(
        cluster.node(2).addr,
        r#"{"verbose":false,"protocol":1}"#,
    );
    raw.ping_pong();
    cluster.node(2).signal("USR2");
    let mut lines = Vec::new();
    for _ in 0..20 {
        match raw.read_line(Duration::from_secs(10)) {
            Some(line) => {
                let ldm = line.contains("\"ldm\":true");
                lines.push(line);
                if ldm {
                    break;
                }
            }
            None => break,
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("\"ldm\":true")),
        "no INFO with ldm: {lines:?}"
    );
    // Peers stop offering it to clients; it still routes meanwhile.
    assert!(eventually(Duration::from_secs(5), || {
        let info = tern_tests::RawClient::connect(cluster.node(0).addr).info_json();
        let urls: Vec<String> = info["connect_urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        !urls.contains(&ducking) && urls.len() == 2
    }));
    assert!(cluster.meshed(0));
}

/// A CA and a node certificate for 127.0.0.1 signed by it, as PEM files in
/// `dir` named after `prefix`: (ca, cert, key).
fn node_pki(dir: &std::path::Path, prefix: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(format!("{prefix}-{name}"));
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_mutual_tls_refuse_a_node_with_a_foreign_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = node_pki(dir.path(), "good");
    let (_, bad_cert, bad_key) = node_pki(dir.path(), "bad");
    let conf = |cert: &str, key: &str| {
        format!(
            "cluster {{\n  name: tls\n  listen: \"127.0.0.1:-1\"\n  tls {{ cert_file: \"{cert}\", key_file: \"{key}\", ca_file: \"{ca}\" }}\n}}\n"
        )
    };
    let first =
        tern_tests::TernServer::launch(tern_tests::Launch::monitored().config(&conf(&cert, &key)));
    let seeds = format!("nats-route://{}", first.cluster.unwrap());
    let second = tern_tests::TernServer::launch(
        tern_tests::Launch::monitored()
            .config(&conf(&cert, &key))
            .args(&["--routes", &seeds]),
    );
    assert!(eventually(Duration::from_secs(10), || {
        first.http_json("/routez")["routes"][0]["connected"] == true
            && second.http_json("/routez")["routes"][0]["connected"] == true
    }));
    // Messages cross the TLS routes.
    let a = connect(&first.url()).await;
    let b = connect(&second.url()).await;
    let mut sub = b.subscribe("secure").await.unwrap();
    round_trip(&b).await;
    assert!(eventually(Duration::from_secs(10), || {
        first.http_json("/routez?subs=1")["routes"][0]["subscriptions_list"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s == "secure"))
    }));
    a.publish("secure", "over tls".into()).await.unwrap();
    assert_eq!(next(&mut sub).await.payload, Bytes::from("over tls"));

    // A certificate from another CA fails the handshake both ways.
    let intruder = tern_tests::TernServer::launch(
        tern_tests::Launch::monitored()
            .config(&conf(&bad_cert, &bad_key))
            .args(&["--routes", &seeds]),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(intruder.http_json("/routez")["num_routes"], 0);
    assert_eq!(first.http_json("/routez")["num_routes"], 1);
    // And a node without TLS cannot join either.
    let plain = tern_tests::TernServer::launch(tern_tests::Launch::monitored().args(&[
        "--cluster",
        "nats://127.0.0.1:-1",
        "--cluster_name",
        "tls",
        "--routes",
        &seeds,
    ]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(plain.http_json("/routez")["num_routes"], 0);
    assert_eq!(first.http_json("/routez")["num_routes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_by_dns_name_is_resolved() {
    let first = tern_tests::TernServer::launch(tern_tests::Launch::monitored().args(&[
        "--cluster",
        "nats://127.0.0.1:-1",
        "--cluster_name",
        "dns",
    ]));
    let port = first.cluster.unwrap().port();
    // `localhost` may resolve to ::1 as well, where nobody listens: every
    // address is tried and the one that answers is enough.
    let seed = format!("nats-route://localhost:{port}");
    let second = tern_tests::TernServer::launch(tern_tests::Launch::monitored().args(&[
        "--cluster",
        "nats://127.0.0.1:-1",
        "--cluster_name",
        "dns",
        "--routes",
        &seed,
    ]));
    assert!(eventually(Duration::from_secs(10), || {
        first.http_json("/routez")["routes"][0]["connected"] == true
            && second.http_json("/routez")["routes"][0]["connected"] == true
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_marked_down_and_comes_back() {
    let cluster = TernCluster::start(3);
    let a = connect(&cluster.url(0)).await;
    let c = connect(&cluster.url(2)).await;
    let mut on_c = c.subscribe("paused.test").await.unwrap();
    round_trip(&c).await;
    cluster.wait_interest(0, "paused.test", 1);

    // SIGSTOP: the process is alive but silent, as a hung or partitioned node.
    cluster.node(1).signal("STOP");
    let state_of_n2 = || {
        cluster.routez(0)["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["remote_name"] == "n2")
            .map(|r| r["state"].as_str().unwrap_or("").to_owned())
    };
    let stopped = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(10), || state_of_n2()
        .as_deref()
        == Some("down")));
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "down after {:?}",
        stopped.elapsed()
    );
    // The others carry on meanwhile.
    a.publish("paused.test", "during".into()).await.unwrap();
    assert_eq!(next(&mut on_c).await.payload, Bytes::from("during"));

    cluster.node(1).signal("CONT");
    assert!(eventually(Duration::from_secs(10), || state_of_n2()
        .as_deref()
        == Some("up")));
    cluster.wait_mesh();
    let b = connect(&cluster.url(1)).await;
    let mut on_b = b.subscribe("paused.test").await.unwrap();
    round_trip(&b).await;
    cluster.wait_interest(0, "paused.test", 2);
    a.publish("paused.test", "after".into()).await.unwrap();
    assert_eq!(next(&mut on_b).await.payload, Bytes::from("after"));
    assert_eq!(next(&mut on_c).await.payload, Bytes::from("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_messages_never_reach_another_nodes_jetstream() {
    // Each node runs its own JetStream. A wildcard subscriber on node 2
    // makes node 1 forward everything there, JetStream API requests
    // included; node 2's JetStream must not act on them.
    let cluster = TernCluster::start_with("tern-test", 2, &["-js"]);
    let watcher = connect(&cluster.url(1)).await;
    let mut everything = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();
    cluster.wait_interest(0, ">", 1);
    let js = async_nats::jetstream::new(connect(&cluster.url(0)).await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ONLY_ON_N1".into(),
        subjects: vec!["n1.>".into()],
        ..Default::default()
    })
    .await
    .expect("one answer, from node 1");
    // The watcher saw the API request go by…
    let seen = next(&mut everything).await;
    assert!(
        seen.subject.as_str().starts_with("$JS.API."),
        "{}",
        seen.subject
    );
    // …and node 2 has no stream (its own JetStream answers there).
    let js2 = async_nats::jetstream::new(connect(&cluster.url(1)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = futures::TryStreamExt::try_collect(js2.stream_names())
        .await
        .unwrap();
    assert!(
        names.is_empty(),
        "node 2 acted on node 1's API request: {names:?}"
    );
}

/// A client's first request subscribes its reply inbox and publishes at
/// once; the responder's node must know that subscription by the time the
/// reply comes (interest and messages travel on different streams, so a
/// forwarded batch waits for the interest its sender announced before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_clients_first_request_across_nodes_gets_its_reply() {
    let cluster = TernCluster::start(2);
    let responder = connect(&cluster.url(1)).await;
    let mut service = responder.subscribe("svc.first").await.unwrap();
    round_trip(&responder).await;
    cluster.wait_interest(0, "svc.first", 1);
    let handle = tokio::spawn(async move {
        for _ in 0..20 {
            let Some(msg) = service.next().await else {
                break;
            };
            let reply = msg.reply.clone().expect("a request has a reply subject");
            responder.publish(reply, msg.payload.clone()).await.unwrap();
            responder.flush().await.unwrap();
        }
    });
    for i in 0..20 {
        let requester = connect(&cluster.url(0)).await;
        let answer = timeout(WAIT, requester.request("svc.first", format!("{i}").into()))
            .await
            .expect("request timed out")
            .expect("first request of a new client");
        assert_eq!(answer.payload, Bytes::from(format!("{i}")));
    }
    handle.await.unwrap();
}
