//! JetStream streams through the official `async-nats` client: stream
//! CRUD, publish acknowledgements, de-duplication, expectations, message
//! get/delete, purge, Key/Value put/get, and persistence across a restart and
//! a SIGKILL.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage as Publish, stream};
use bytes::Bytes;
use tern_tests::{connect, free_port, Launch, TernServer};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

fn launch_js(dir: &std::path::Path, port: Option<u16>) -> TernServer {
    TernServer::launch(Launch {
        port,
        ..Launch::default().args(&["-js", "-sd", dir.to_str().unwrap()])
    })
}

fn orders() -> stream::Config {
    stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    }
}

/// A work-queue stream of jobs.
fn jobs() -> stream::Config {
    stream::Config {
        name: "JOBS".into(),
        subjects: vec!["jobs.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    }
}

/// A durable pull consumer "w" with explicit acks.
fn worker() -> async_nats::jetstream::consumer::pull::Config {
    async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("w".into()),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

/// A stream's message count, asked until it is `expected` or 10 s pass;
/// the last count seen.
async fn messages_eventually(client: &async_nats::Client, stream: &str, expected: u64) -> u64 {
    let deadline = std::time::Instant::now() + WAIT.min(Duration::from_secs(10));
    loop {
        let reply = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        let seen = info["state"]["messages"].as_u64().unwrap_or(0);
        if seen == expected || std::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stream_create_publish_info_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let mut stream = timeout(WAIT, js.create_stream(orders()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.info().await.unwrap().config.name, "ORDERS");
    // Creating it again with the same config is fine; with another is not.
    js.create_stream(orders()).await.unwrap();
    let other = stream::Config {
        subjects: vec!["other.>".into()],
        ..orders()
    };
    assert!(js.create_stream(other).await.is_err());

    for i in 1..=5u64 {
        let ack = js
            .publish(format!("orders.{i}"), format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.stream, "ORDERS");
        assert_eq!(ack.sequence, i);
        assert!(!ack.duplicate);
    }
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 5);
    assert_eq!(info.state.first_sequence, 1);
    assert_eq!(info.state.last_sequence, 5);

    let msg = stream.get_raw_message(3).await.unwrap();
    assert_eq!(msg.subject.as_str(), "orders.3");
    assert_eq!(msg.payload, Bytes::from("order 3"));
    let last = stream
        .get_last_raw_message_by_subject("orders.5")
        .await
        .unwrap();
    assert_eq!(last.sequence, 5);

    assert!(stream.delete_message(2).await.unwrap());
    assert!(stream.get_raw_message(2).await.is_err());
    assert_eq!(stream.info().await.unwrap().state.messages, 4);

    let names: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
        .await
        .unwrap();
    assert_eq!(names, vec!["ORDERS".to_string()]);

    let purged = stream.purge().await.unwrap();
    assert_eq!(purged.purged, 4);
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 0);
    assert_eq!(
        info.state.first_sequence, 6,
        "sequences keep growing after a purge"
    );
    let ack = js
        .publish("orders.x", "after".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 6);

    assert!(js.delete_stream("ORDERS").await.unwrap().success);
    assert!(js.get_stream("ORDERS").await.is_err());
    // With the stream gone nobody stores orders: the publish has no responders.
    assert!(js
        .publish("orders.y", "gone".into())
        .await
        .unwrap()
        .await
        .is_err());
}

#[tokio::test]
async fn dedupe_and_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    js.create_stream(orders()).await.unwrap();
    let publish = |id: &str| Publish::build().message_id(id).payload("x".into());
    let first = js
        .send_publish("orders.a", publish("m-1"))
        .await
        .unwrap()
        .await
        .unwrap();
    let again = js
        .send_publish("orders.a", publish("m-1"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(first.sequence, 1);
    assert_eq!(again.sequence, 1);
    assert!(again.duplicate);

    let ok = js
        .send_publish(
            "orders.b",
            Publish::build()
                .expected_last_sequence(1)
                .payload("y".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok.sequence, 2);
    let wrong = js
        .send_publish(
            "orders.b",
            Publish::build()
                .expected_last_sequence(1)
                .payload("z".into()),
        )
        .await
        .unwrap()
        .await;
    let err = wrong.unwrap_err().to_string();
    assert!(err.contains("wrong last sequence"), "{err}");
    let wrong_stream = js
        .send_publish(
            "orders.c",
            Publish::build()
                .expected_stream("OTHER")
                .payload("z".into()),
        )
        .await
        .unwrap()
        .await;
    assert!(wrong_stream.is_err());
    let subject_ok = js
        .send_publish(
            "orders.b",
            Publish::build()
                .expected_last_subject_sequence(2)
                .payload("w".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(subject_ok.sequence, 3);
}

#[tokio::test]
async fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let mut stream = js
        .create_stream(stream::Config {
            name: "LIMITED".into(),
            subjects: vec!["lim.>".into()],
            max_messages: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..10 {
        js.publish("lim.x", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 3);
    assert_eq!(info.state.first_sequence, 8);
    let mut new = js
        .create_stream(stream::Config {
            name: "NEW".into(),
            subjects: vec!["new.>".into()],
            max_messages: 2,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    js.publish("new.a", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("new.a", "2".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(js
        .publish("new.a", "3".into())
        .await
        .unwrap()
        .await
        .is_err());
    assert_eq!(new.info().await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn key_value_put_get_create_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "settings".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let rev = kv.put("color", "blue".into()).await.unwrap();
    assert_eq!(kv.get("color").await.unwrap(), Some(Bytes::from("blue")));
    let rev2 = kv.update("color", "green".into(), rev).await.unwrap();
    assert!(rev2 > rev);
    assert!(
        kv.update("color", "red".into(), rev).await.is_err(),
        "stale revision refused"
    );
    assert!(
        kv.create("color", "x".into()).await.is_err(),
        "create refuses an existing key"
    );
    kv.create("size", "L".into()).await.unwrap();
    assert_eq!(kv.get("color").await.unwrap(), Some(Bytes::from("green")));
    kv.delete("size").await.unwrap();
    assert_eq!(kv.get("size").await.unwrap(), None);
    assert_eq!(kv.get("missing").await.unwrap(), None);
}

#[tokio::test]
async fn streams_survive_restart_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut acked = Vec::new();
    {
        let server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        js.create_stream(orders()).await.unwrap();
        for i in 0..50u64 {
            let ack = js
                .publish("orders.p", format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
            acked.push((ack.sequence, i));
        }
        // Graceful stop.
        let mut server = server;
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    {
        let mut server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        let mut stream = js.get_stream("ORDERS").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 50);
        // Publish with many acks in flight, then SIGKILL: every acknowledged
        // message must be there after the restart.
        let mut futures = Vec::new();
        for i in 50..300u64 {
            futures.push((
                i,
                js.publish("orders.p", format!("{i}").into()).await.unwrap(),
            ));
        }
        for (i, ack) in futures.drain(..200) {
            acked.push((ack.await.unwrap().sequence, i));
        }
        server.signal("KILL");
        let _ = server.wait_exit(Duration::from_secs(5));
    }
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.get_stream("ORDERS").await.unwrap();
    for (seq, i) in acked {
        let msg = stream
            .get_raw_message(seq)
            .await
            .unwrap_or_else(|e| panic!("acked seq {seq} lost: {e}"));
        assert_eq!(msg.payload, Bytes::from(format!("{i}")), "seq {seq}");
    }
}

#[tokio::test]
async fn unknown_and_consumer_apis_answer_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let resp = timeout(WAIT, client.request("$JS.API.INFO", "".into()))
        .await
        .unwrap()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&resp.payload).unwrap();
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
    let resp = client
        .request("$JS.API.STREAM.INFO.NOPE", "".into())
        .await
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&resp.payload).unwrap();
    assert_eq!(err["error"]["err_code"], 10059);
    assert_eq!(err["error"]["code"], 404);
    let resp = client
        .request("$JS.API.STREAM.CREATE.BAD", "{not json".into())
        .await
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&resp.payload).unwrap();
    assert_eq!(err["error"]["err_code"], 10025);
    let resp = client
        .request("$JS.API.CONSUMER.INFO.S.C", "".into())
        .await
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&resp.payload).unwrap();
    assert_eq!(err["error"]["err_code"], 10059, "no such stream");
    let resp = client
        .request("$JS.API.CONSUMER.PAUSE.S.C", "".into())
        .await
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&resp.payload).unwrap();
    assert!(err["error"]["description"]
        .as_str()
        .unwrap()
        .contains("not implemented"));
}

#[tokio::test]
async fn jsz_and_metrics_show_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TernServer::launch(Launch::monitored().args(&["-js", "-sd", dir.path().to_str().unwrap()]));
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.create_stream(orders()).await.unwrap();
    stream
        .create_consumer(worker())
        .await
        .expect("a consumer to count");
    for i in 0..3 {
        js.publish("orders.m", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let jsz = server.http_json("/jsz");
    assert_eq!(jsz["streams"], 1);
    assert_eq!(jsz["messages"], 3);
    // The figures follow at the service's next tick (50 ms).
    let mut jsz = jsz;
    for _ in 0..100 {
        if jsz["consumers"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        jsz = server.http_json("/jsz");
    }
    assert_eq!(jsz["consumers"], 1, "{jsz}");
    assert_eq!(jsz["accounts"], 1, "{jsz}");
    let info = js.query_account().await.unwrap();
    assert_eq!(info.consumers, 1);
    assert_eq!(info.streams, 1);
    assert!(jsz["api"]["total"].as_u64().unwrap() >= 1);
    assert!(jsz["config"]["store_dir"]
        .as_str()
        .unwrap()
        .ends_with("jetstream"));
    let metrics = server.http_get("/metrics").body;
    assert!(metrics.contains("tern_jetstream_messages 3"), "{metrics}");
    assert!(metrics.contains("tern_jetstream_consumers 1"), "{metrics}");
    assert!(
        metrics.contains("tern_jetstream_storage_bytes "),
        "{metrics}"
    );
    // Without -js, /jsz says it is disabled.
    let plain = TernServer::launch(Launch::monitored());
    assert_eq!(plain.http_json("/jsz")["disabled"], true);
}

#[tokio::test]
async fn pull_consumer_fetch_ack_redeliver_and_survive_restart() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        let stream = js.create_stream(orders()).await.unwrap();
        for i in 0..10u64 {
            js.publish(format!("orders.{i}"), format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_millis(1500),
                ..Default::default()
            })
            .await
            .unwrap();
        // Fetch 4, ack 3 of them; the fourth comes back after ack_wait.
        let mut batch = consumer.fetch().max_messages(4).messages().await.unwrap();
        let mut got = Vec::new();
        while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
            let msg = msg.unwrap();
            got.push(msg.payload.clone());
            if msg.payload != "3" {
                msg.ack().await.unwrap();
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from("0"),
                Bytes::from("1"),
                Bytes::from("2"),
                Bytes::from("3")
            ]
        );
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
        let redelivered = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(
            redelivered.payload,
            Bytes::from("3"),
            "unacked message is redelivered first"
        );
        assert_eq!(redelivered.info().unwrap().delivered, 2);
        redelivered.ack().await.unwrap();
        let next = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(next.payload, Bytes::from("4"));
        next.double_ack().await.unwrap();
        let mut consumer = consumer;
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_pending, 5);
        assert_eq!(info.num_ack_pending, 0);
        assert_eq!(info.ack_floor.stream_sequence, 5);
    }
    // After a restart the consumer goes on where it was.
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.get_stream("ORDERS").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer("workers").await.unwrap();
    let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut rest = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        rest.push(msg.payload.clone());
        msg.ack().await.unwrap();
    }
    assert_eq!(
        rest,
        (5..10)
            .map(|i| Bytes::from(i.to_string()))
            .collect::<Vec<_>>()
    );
    // Nothing left: a fetch ends at once with no messages.
    let mut empty = consumer.fetch().max_messages(3).messages().await.unwrap();
    assert!(timeout(WAIT, empty.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn pull_consumer_waits_for_new_messages() {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.create_stream(orders()).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("live".into()),
            filter_subject: "orders.eu.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let publisher = js.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher
            .publish("orders.us.1", "skip".into())
            .await
            .unwrap()
            .await
            .unwrap();
        publisher
            .publish("orders.eu.1", "take".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let msg = timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "orders.eu.1");
    assert_eq!(msg.payload, Bytes::from("take"));
    msg.ack().await.unwrap();
}

#[tokio::test]
async fn key_value_watch_keys_and_history() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "cfg".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    kv.put("a", "1".into()).await.unwrap();
    kv.put("a", "2".into()).await.unwrap();
    kv.put("b", "x".into()).await.unwrap();
    let mut keys: Vec<String> = futures::TryStreamExt::try_collect(kv.keys().await.unwrap())
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    let history: Vec<_> = futures::TryStreamExt::try_collect(kv.history("a").await.unwrap())
        .await
        .unwrap();
    let values: Vec<Bytes> = history.iter().map(|e| e.value.clone()).collect();
    assert_eq!(values, vec![Bytes::from("1"), Bytes::from("2")]);

    let mut watch = kv.watch("a").await.unwrap();
    let writer = kv.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.put("a", "3".into()).await.unwrap();
    });
    let entry = timeout(WAIT, watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(entry.key, "a");
    assert_eq!(entry.value, Bytes::from("3"));
}

#[tokio::test]
async fn durable_push_consumer_delivers_and_takes_acks() {
    use async_nats::jetstream::consumer::{push, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js.create_stream(orders()).await.unwrap();
    for i in 0..5u64 {
        js.publish(format!("orders.{i}"), format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer: jetstream::consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("pusher".into()),
            deliver_subject: client.new_inbox(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    for i in 0..5u64 {
        let msg = timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.payload, Bytes::from(i.to_string()));
        msg.ack().await.unwrap();
    }
    js.publish("orders.late", "late".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let msg = timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, Bytes::from("late"));
}

#[tokio::test]
async fn object_store_put_get_list_delete_20_mib() {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let bucket = js
        .create_object_store(jetstream::object_store::Config {
            bucket: "files".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut reader = std::io::Cursor::new(data.clone());
    let info = timeout(Duration::from_secs(120), bucket.put("big.bin", &mut reader))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.size, data.len());
    let mut object = bucket.get("big.bin").await.unwrap();
    let mut back = Vec::new();
    timeout(Duration::from_secs(120), object.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "object content differs");
    let names: Vec<String> = bucket
        .list()
        .await
        .unwrap()
        .map(|o| o.unwrap().name)
        .collect()
        .await;
    assert_eq!(names, vec!["big.bin".to_string()]);
    bucket.delete("big.bin").await.unwrap();
    assert!(bucket.get("big.bin").await.is_err());
}

#[tokio::test]
async fn rollups_and_key_value_purge() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "roll".into(),
            history: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    for v in ["1", "2", "3"] {
        kv.put("k", v.into()).await.unwrap();
    }
    kv.put("other", "x".into()).await.unwrap();
    kv.purge("k").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap(), None);
    let mut stream = js.get_stream("KV_roll").await.unwrap();
    // The purge marker replaced k's history; `other` is untouched.
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    assert_eq!(kv.get("other").await.unwrap(), Some(Bytes::from("x")));

    // Rollups need allow_rollup_hdrs.
    js.create_stream(orders()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    let refused = js
        .publish_with_headers("orders.a", headers.clone(), "x".into())
        .await
        .unwrap()
        .await;
    assert!(refused.is_err());
    js.update_stream(stream::Config {
        allow_rollup: true,
        ..orders()
    })
    .await
    .unwrap();
    for i in 0..3 {
        js.publish("orders.a", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.publish("orders.b", "b".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let ack = js
        .publish_with_headers("orders.a", headers, "last".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut orders_stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(orders_stream.info().await.unwrap().state.messages, 2);
    assert_eq!(
        orders_stream
            .get_last_raw_message_by_subject("orders.a")
            .await
            .unwrap()
            .sequence,
        ack.sequence
    );
    let mut all = async_nats::HeaderMap::new();
    all.insert("Nats-Rollup", "all");
    js.publish_with_headers("orders.c", all, "only".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(orders_stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn workqueue_and_interest_retention() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);

    let mut wq = js.create_stream(jobs()).await.unwrap();
    for i in 0..3 {
        js.publish("jobs.x", format!("{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let worker: jetstream::consumer::PullConsumer = wq.create_consumer(worker()).await.unwrap();
    // A second unfiltered consumer is refused on a work queue.
    assert!(wq
        .create_consumer(pull::Config {
            durable_name: Some("w2".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .is_err());
    let mut batch = worker.fetch().max_messages(2).messages().await.unwrap();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        msg.unwrap().double_ack().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        wq.info().await.unwrap().state.messages,
        1,
        "acked jobs leave the queue"
    );

    let mut interest = js
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await
        .unwrap();
    js.publish("events.a", "nobody".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        interest.info().await.unwrap().state.messages,
        0,
        "no interest, not kept"
    );
    let reader: jetstream::consumer::PullConsumer = interest
        .create_consumer(pull::Config {
            durable_name: Some("r".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    js.publish("events.a", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(interest.info().await.unwrap().state.messages, 1);
    let mut batch = reader.fetch().max_messages(1).messages().await.unwrap();
    let msg = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(msg.payload, Bytes::from("kept"));
    msg.double_ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        interest.info().await.unwrap().state.messages,
        0,
        "acked by all, gone"
    );
}

/// The deletes of messages acked on a work queue are written with the
/// consumer's positions, not one fsync per ack; a request, a publish and a
/// restart still find them gone.
#[tokio::test]
async fn work_queue_acks_remove_messages_before_requests_publishes_and_restarts() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = stream::Config {
        max_messages: 10,
        discard: stream::DiscardPolicy::New,
        ..jobs()
    };
    let worker_config = worker();
    {
        let mut server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        let mut jobs = js.create_stream(config.clone()).await.unwrap();
        let worker: jetstream::consumer::PullConsumer =
            jobs.create_consumer(worker_config.clone()).await.unwrap();
        for round in 0..3 {
            for i in 0..10 {
                js.publish("jobs.x", format!("{round}.{i}").into())
                    .await
                    .unwrap()
                    .await
                    .unwrap_or_else(|e| panic!("round {round}, job {i}: {e}"));
            }
            // Full: one more is refused.
            let refused = js.publish("jobs.x", "extra".into()).await.unwrap().await;
            assert!(refused.is_err(), "round {round}: the queue is full");
            let mut batch = worker.fetch().max_messages(10).messages().await.unwrap();
            let mut got = 0;
            while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
                // A plain ack: no reply, nothing waits for a write.
                msg.unwrap().ack().await.unwrap();
                got += 1;
            }
            assert_eq!(got, 10, "round {round}");
            client.flush().await.unwrap();
            if round == 0 {
                // A request right after the acks sees them applied.
                let state = jobs.info().await.unwrap().state.clone();
                assert_eq!(state.messages, 0, "round {round}: acked jobs left");
            }
            // Round 1 and 2 publish right after the acks: the queue has room.
        }
        let state = jobs.info().await.unwrap().state.clone();
        assert_eq!((state.messages, state.last_sequence), (0, 30));
        // Ten more, acked just before a graceful stop.
        for i in 0..10 {
            js.publish("jobs.x", format!("last.{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut batch = worker.fetch().max_messages(10).messages().await.unwrap();
        while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
            msg.unwrap().ack().await.unwrap();
        }
        client.flush().await.unwrap();
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let mut jobs = js.get_stream("JOBS").await.unwrap();
    let state = jobs.info().await.unwrap().state.clone();
    assert_eq!(
        (state.messages, state.last_sequence),
        (0, 40),
        "acked before the stop, gone after it"
    );
}

/// A SIGKILL while a work queue is consumed with plain acks loses no job:
/// after the restart every job not acked before the kill is delivered, and
/// only jobs acked just before it (the deletes written with the positions,
/// every 50 ms) may come again.
#[tokio::test]
async fn a_work_queue_killed_mid_consumption_loses_no_job() {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    use std::collections::BTreeSet;
    use std::time::Instant;
    const JOBS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = jobs();
    let worker_config = pull::Config {
        ack_wait: Duration::from_secs(2),
        ..worker()
    };
    // Each job acked before the kill, and when.
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    let killed_at;
    {
        let mut server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        let jobs = js.create_stream(config.clone()).await.unwrap();
        let mut window = Vec::new();
        for i in 0..JOBS {
            window.push(js.publish("jobs.x", i.to_string().into()).await.unwrap());
            if window.len() == 64 {
                for ack in window.drain(..) {
                    ack.await.unwrap();
                }
            }
        }
        for ack in window.drain(..) {
            ack.await.unwrap();
        }
        let worker: jetstream::consumer::PullConsumer =
            jobs.create_consumer(worker_config.clone()).await.unwrap();
        // Ack half, 100 at a time over a second or more, then kill the
        // server right after the last acks.
        for round in 0..10 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut batch = worker.fetch().max_messages(100).messages().await.unwrap();
            while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
                let msg = msg.unwrap();
                msg.ack().await.unwrap();
                let job = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
                acked.push((job, Instant::now()));
            }
        }
        client.flush().await.unwrap();
        server.signal("KILL");
        killed_at = Instant::now();
        let _ = server.wait_exit(Duration::from_secs(5));
    }
    assert_eq!(acked.len(), 1_000);
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let jobs = js.get_stream("JOBS").await.unwrap();
    let worker: jetstream::consumer::PullConsumer = jobs.get_consumer("w").await.unwrap();
    let mut after: BTreeSet<u64> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut batch = worker
            .fetch()
            .max_messages(200)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut got = 0;
        while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
            let msg = msg.unwrap();
            msg.double_ack().await.unwrap();
            after.insert(std::str::from_utf8(&msg.payload).unwrap().parse().unwrap());
            got += 1;
        }
        if got == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still consuming after 60 s");
    }
    let before: BTreeSet<u64> = acked.iter().map(|&(job, _)| job).collect();
    let lost: Vec<u64> = (0..JOBS)
        .filter(|i| !before.contains(i) && !after.contains(i))
        .collect();
    assert!(lost.is_empty(), "jobs never delivered: {lost:?}");
    // Jobs delivered again were acked in the last moments before the kill
    // (their deletes are written every 50 ms; 500 ms leaves room for a
    // loaded machine), never earlier.
    for &(job, at) in &acked {
        if after.contains(&job) {
            let before_kill = killed_at.duration_since(at);
            assert!(
                before_kill <= Duration::from_millis(500),
                "job {job}, acked {before_kill:?} before the kill, came back"
            );
        }
    }
    assert!(after.len() >= (JOBS / 2) as usize);
}

/// `Nats-Msg-Id`s stored within the duplicate window are still duplicates
/// after a restart, and `Nats-Expected-Last-Msg-Id` still knows the last
/// message's id (none when the last message had none), as in nats-server.
#[tokio::test]
async fn dedupe_and_last_msg_id_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = |id: Option<&str>, expected: Option<&str>| {
        let mut p = Publish::build().payload("x".into());
        if let Some(id) = id {
            p = p.message_id(id);
        }
        if let Some(expected) = expected {
            p = p.expected_last_message_id(expected);
        }
        p
    };
    {
        let mut server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        js.create_stream(orders()).await.unwrap();
        for id in ["m-1", "m-2"] {
            js.send_publish("orders.a", publish(Some(id), None))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let again = js
        .send_publish("orders.a", publish(Some("m-1"), None))
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.sequence, 1);
    let ack = js
        .send_publish("orders.a", publish(None, Some("m-2")))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 3, "m-2 was the last id");
    // That message had no id: the last id is none now.
    let wrong = js
        .send_publish("orders.a", publish(None, Some("m-2")))
        .await
        .unwrap()
        .await;
    assert!(wrong.is_err(), "{wrong:?}");
}

/// On an interest stream, an `all` ack finishes every message below it, and a
/// consumer with ack policy `none` is done with a message once it has it;
/// a pull consumer with `headers_only` gets no payloads, only their sizes.
#[tokio::test]
async fn interest_retention_with_ack_all_and_none_and_headers_only_pulls() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .create_stream(stream::Config {
            name: "INT".into(),
            subjects: vec!["int.>".into()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = |name: &str, ack_policy: AckPolicy, headers_only: bool| pull::Config {
        durable_name: Some(name.into()),
        ack_policy,
        headers_only,
        ..Default::default()
    };
    let all: jetstream::consumer::PullConsumer = stream
        .create_consumer(consumer("all", AckPolicy::All, false))
        .await
        .unwrap();
    let none: jetstream::consumer::PullConsumer = stream
        .create_consumer(consumer("none", AckPolicy::None, true))
        .await
        .unwrap();
    for i in 1..=5 {
        js.publish(format!("int.{i}"), format!("payload {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // "none" takes all five, headers only: nothing to ack.
    let mut batch = none.fetch().max_messages(5).messages().await.unwrap();
    let mut sizes = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        assert!(msg.payload.is_empty(), "headers only");
        let size = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Size"));
        sizes.push(size.map(|v| v.as_str().to_owned()));
    }
    assert_eq!(sizes, vec![Some("9".to_owned()); 5]);
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        5,
        "all has them"
    );
    // "all" takes all five and acks the fourth: one to four are done.
    let mut batch = all.fetch().max_messages(5).messages().await.unwrap();
    let mut msgs = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        msgs.push(msg.unwrap());
    }
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0].payload, "payload 1");
    msgs[3].ack().await.unwrap();
    assert_eq!(
        messages_eventually(&client, "INT", 1).await,
        1,
        "only the fifth is still wanted"
    );
    msgs[4].ack().await.unwrap();
    assert_eq!(messages_eventually(&client, "INT", 0).await, 0);
}

/// On an interest stream, the messages only a deleted consumer still wanted
/// go with it; the others stay for the consumers that want them.
#[tokio::test]
async fn deleting_an_interest_consumer_removes_what_only_it_wanted() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .create_stream(stream::Config {
            name: "INT".into(),
            subjects: vec!["int.>".into()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = |name: &str, filter: &str| pull::Config {
        durable_name: Some(name.into()),
        ack_policy: AckPolicy::Explicit,
        filter_subject: filter.into(),
        ..Default::default()
    };
    let everything: jetstream::consumer::PullConsumer =
        stream.create_consumer(consumer("all", "")).await.unwrap();
    stream
        .create_consumer::<pull::Config>(consumer("a", "int.a"))
        .await
        .unwrap();
    stream
        .create_consumer::<pull::Config>(consumer("b", "int.b"))
        .await
        .unwrap();
    for subject in ["int.a", "int.b", "int.a", "int.b", "int.c"] {
        js.publish(subject, "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // "all" acks everything; "a" and "b" ack nothing.
    let mut batch = everything
        .fetch()
        .max_messages(10)
        .messages()
        .await
        .unwrap();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        msg.unwrap().double_ack().await.unwrap();
    }
    let count = |expected: u64| messages_eventually(&client, "INT", expected);
    assert_eq!(count(4).await, 4, "int.c went; a's and b's wait");
    stream.delete_consumer("a").await.unwrap();
    assert_eq!(count(2).await, 2, "a's messages went with it");
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.first_sequence, 2, "b's stay: {:?}", info.state);
    stream.delete_consumer("b").await.unwrap();
    stream.delete_consumer("all").await.unwrap();
    assert_eq!(count(0).await, 0);
}

/// After a restart, ephemeral consumers are gone: on an interest stream,
/// the messages only they wanted go too. A durable updated without its
/// durable name stays durable.
#[tokio::test]
async fn interest_messages_of_ephemerals_go_after_a_restart() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    {
        let mut server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        let stream = js
            .create_stream(stream::Config {
                name: "INT".into(),
                subjects: vec!["int.>".into()],
                retention: stream::RetentionPolicy::Interest,
                ..Default::default()
            })
            .await
            .unwrap();
        stream
            .create_consumer::<pull::Config>(pull::Config {
                ack_policy: AckPolicy::Explicit,
                filter_subject: "int.e".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        stream
            .create_consumer::<pull::Config>(pull::Config {
                durable_name: Some("d".into()),
                ack_policy: AckPolicy::Explicit,
                filter_subject: "int.d".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        for subject in ["int.e", "int.d", "int.e", "int.d"] {
            js.publish(subject, "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        // An update of "d" that leaves the durable name out.
        let reply = client
            .request(
                "$JS.API.CONSUMER.CREATE.INT.d",
                r#"{"stream_name":"INT","config":{"name":"d","ack_policy":"explicit","filter_subject":"int.d","max_deliver":7}}"#.into(),
            )
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["config"]["durable_name"], "d", "{reply}");
        assert_eq!(reply["config"]["max_deliver"], 7, "{reply}");
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("INT").await.unwrap();
    assert_eq!(
        messages_eventually(&client, "INT", 2).await,
        2,
        "only d's messages stay"
    );
    let d = stream.consumer_info("d").await.unwrap();
    assert_eq!(d.config.max_deliver, 7, "the update was saved");
    assert_eq!(d.num_pending, 2);
}

/// A durable `last_per_subject` consumer stopped before it handed out every
/// subject's last message goes on with the rest after a restart, rather than
/// from the start of the stream; a subject written to meanwhile gets its
/// newer message.
#[tokio::test]
async fn last_per_subject_goes_on_after_a_restart() {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fetch = |consumer: jetstream::consumer::PullConsumer, max: usize| async move {
        let mut batch = consumer.fetch().max_messages(max).messages().await.unwrap();
        let mut got = Vec::new();
        while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
            let msg = msg.unwrap();
            msg.ack().await.unwrap();
            got.push(String::from_utf8_lossy(&msg.payload).into_owned());
        }
        got
    };
    {
        let mut server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        let stream = js.create_stream(orders()).await.unwrap();
        // Three rounds over four subjects: the lasts are a3, b3, c3, d3.
        for round in 1..=3 {
            for subject in ["a", "b", "c", "d"] {
                js.publish(
                    format!("orders.{subject}"),
                    format!("{subject}{round}").into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
        }
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("lps".into()),
                deliver_policy: DeliverPolicy::LastPerSubject,
                // nats-server 2.9 wants a filter with this policy.
                filter_subject: "orders.>".into(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(fetch(consumer, 2).await, ["a3", "b3"]);
        // c gets a newer message before the restart.
        js.publish("orders.c", "c4".into())
            .await
            .unwrap()
            .await
            .unwrap();
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.get_stream("ORDERS").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer("lps").await.unwrap();
    assert_eq!(fetch(consumer.clone(), 10).await, ["d3", "c4"]);
    js.publish("orders.a", "a5".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(fetch(consumer, 10).await, ["a5"]);
}

/// A message whose bytes were damaged on disk is reported as an error by
/// `MSG.GET` and `DIRECT.GET`, never as "no message found" (a Key/Value
/// client would take that for a missing key), and never served: consumers
/// pass over it.
#[tokio::test]
async fn a_damaged_message_is_an_error_not_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let payload = |i: u64| format!("payload-{i:04}-{}", "x".repeat(100));
    {
        let mut server = launch_js(dir.path(), Some(port));
        let js = jetstream::new(connect(&server.url()).await);
        js.create_stream(stream::Config {
            allow_direct: true,
            ..orders()
        })
        .await
        .unwrap();
        for i in 1..=20u64 {
            js.publish(format!("orders.{i}"), payload(i).into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    // Flip a byte inside message 11's payload, wherever the log keeps it.
    let needle = payload(11);
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path().join("jetstream").join("log")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        {
            bytes[at + 20] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "message 11 found once in the log");
    let server = launch_js(dir.path(), Some(port));
    let client = connect(&server.url()).await;
    let ask = |subject: String, body: &'static str| {
        let client = client.clone();
        async move {
            timeout(WAIT, client.request(subject, body.into()))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let reply = ask("$JS.API.STREAM.MSG.GET.ORDERS".into(), r#"{"seq":11}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], 500, "{body}");
    assert_eq!(body["error"]["err_code"], 10051, "{body}");
    let reply = ask(
        "$JS.API.STREAM.MSG.GET.ORDERS".into(),
        r#"{"last_by_subj":"orders.11"}"#,
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], 500, "{body}");
    let reply = ask("$JS.API.DIRECT.GET.ORDERS".into(), r#"{"seq":11}"#).await;
    assert_eq!(reply.status.map(u16::from), Some(500), "{reply:?}");
    assert!(reply.payload.is_empty());
    // Its neighbours read as ever, and a message that is not there is 404.
    let reply = ask("$JS.API.STREAM.MSG.GET.ORDERS".into(), r#"{"seq":12}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["message"]["seq"], 12, "{body}");
    let reply = ask("$JS.API.STREAM.MSG.GET.ORDERS".into(), r#"{"seq":99}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], 404, "{body}");
    let reply = ask("$JS.API.DIRECT.GET.ORDERS".into(), r#"{"seq":99}"#).await;
    assert_eq!(reply.status.map(u16::from), Some(404), "{reply:?}");
    // Neither a sequence nor a subject, or no JSON: 408, as nats-server.
    let reply = ask("$JS.API.DIRECT.GET.ORDERS".into(), "{}").await;
    assert_eq!(reply.status.map(u16::from), Some(408), "{reply:?}");
    assert_eq!(reply.description.as_deref(), Some("Empty Request"));
    let reply = ask("$JS.API.DIRECT.GET.ORDERS".into(), "junk").await;
    assert_eq!(reply.status.map(u16::from), Some(408), "{reply:?}");
    assert_eq!(reply.description.as_deref(), Some("Malformed Request"));
    // A consumer passes over the damaged message, which stays in the
    // stream, reported as damaged, until it is deleted.
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream("ORDERS").await.unwrap();
    let reader: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("r".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let read = |max: usize| {
        let reader = reader.clone();
        async move {
            let mut batch = reader
                .fetch()
                .max_messages(max)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            let mut seqs = Vec::new();
            while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
                let msg = msg.unwrap();
                msg.ack().await.unwrap();
                seqs.push(msg.info().unwrap().stream_sequence);
            }
            seqs
        }
    };
    let all_but_11: Vec<u64> = (1..=20).filter(|s| *s != 11).collect();
    assert_eq!(read(20).await, all_but_11);
    assert!(read(20).await.is_empty());
    let reply = ask("$JS.API.STREAM.MSG.GET.ORDERS".into(), r#"{"seq":11}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        body["error"]["code"], 500,
        "still there, still damaged: {body}"
    );
    // So does a consumer filtered on the damaged message's own subject, and
    // one that reaches it among other subjects' messages.
    for filter in ["orders.11", "orders.*"] {
        let only: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter.into(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = only
            .fetch()
            .max_messages(20)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut seqs = Vec::new();
        while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
            seqs.push(msg.unwrap().info().unwrap().stream_sequence);
        }
        let expected = if filter == "orders.11" {
            Vec::new()
        } else {
            all_but_11.clone()
        };
        assert_eq!(seqs, expected, "filter {filter}");
    }
    let reply = ask(
        "$JS.API.STREAM.MSG.DELETE.ORDERS".into(),
        r#"{"seq":11,"no_erase":true}"#,
    )
    .await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["success"], true, "{body}");
    let reply = ask("$JS.API.STREAM.MSG.GET.ORDERS".into(), r#"{"seq":11}"#).await;
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["error"]["code"], 404, "deleted: {body}");
}

/// A direct get whose subject ends like a pull request's is still a
/// request that must not find an acked work-queue message.
#[tokio::test]
async fn a_direct_get_after_an_ack_does_not_find_the_acked_job() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let jobs = js
        .create_stream(stream::Config {
            allow_direct: true,
            ..jobs()
        })
        .await
        .unwrap();
    let subject = "jobs.MSG.NEXT.x";
    js.publish(subject, "job".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let worker: jetstream::consumer::PullConsumer = jobs.create_consumer(worker()).await.unwrap();
    let mut batch = worker.fetch().max_messages(1).messages().await.unwrap();
    let msg = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
    msg.ack().await.unwrap();
    let reply = timeout(
        WAIT,
        client.request(format!("$JS.API.DIRECT.GET.JOBS.{subject}"), "".into()),
    )
    .await
    .unwrap()
    .unwrap();
    let status = reply.status.map(u16::from);
    assert_eq!(status, Some(404), "the acked job is gone: {reply:?}");
}

#[tokio::test]
async fn max_deliver_and_term_raise_advisories_and_dead_letters() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js.create_stream(orders()).await.unwrap();
    let mut dlq = js
        .create_stream(stream::Config {
            name: "DLQ".into(),
            subjects: vec!["dlq.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut advisories = client.subscribe("$JS.EVENT.ADVISORY.>").await.unwrap();
    tern_tests::round_trip(&client).await;
    js.publish("orders.poison", "poison".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("orders.bad", "bad".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("careful".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(1000),
            max_deliver: 2,
            metadata: [(
                "tern.dead_letter_subject".to_string(),
                "dlq.orders".to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // First delivery of both: ignore the poison, terminate the bad one.
    let mut batch = consumer.fetch().max_messages(2).messages().await.unwrap();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        if msg.payload == "bad" {
            msg.ack_with(AckKind::Term).await.unwrap();
        }
    }
    // Second delivery of the poison after ack_wait; ignored again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let again = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(again.payload, Bytes::from("poison"));
    // After another ack_wait it has reached max_deliver.
    let mut kinds = Vec::new();
    for _ in 0..50 {
        if kinds.len() == 2 {
            break;
        }
        let adv = timeout(WAIT, advisories.next()).await.unwrap().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&adv.payload).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        // Only the ones about messages (API audits and actions come too).
        if kind.ends_with(".max_deliver") || kind.ends_with(".terminated") {
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "io.nats.jetstream.advisory.v1.max_deliver",
            "io.nats.jetstream.advisory.v1.terminated"
        ]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = dlq.info().await.unwrap();
    assert_eq!(
        info.state.messages, 2,
        "both went to the dead-letter stream"
    );
    let dead = dlq.get_raw_message(1).await.unwrap();
    assert!(dead.headers.get("Nats-Dead-Letter-Reason").is_some());
}

#[tokio::test]
async fn sync_interval_is_an_explicit_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "jetstream {{ store_dir: \"{}\", sync_interval: \"1s\" }}\n",
        dir.path().display()
    );
    let server = TernServer::launch(Launch::monitored().config(&config));
    assert!(
        server.log().contains("sync_interval"),
        "the looser durability is logged"
    );
    assert_eq!(server.http_json("/jsz")["config"]["sync_always"], false);
    let js = jetstream::new(connect(&server.url()).await);
    js.create_stream(orders()).await.unwrap();
    let ack = js
        .publish("orders.x", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 1);
    let always = TernServer::launch(Launch::monitored().args(&[
        "-js",
        "-sd",
        dir.path().join("b").to_str().unwrap(),
    ]));
    assert_eq!(always.http_json("/jsz")["config"]["sync_always"], true);
}

#[tokio::test]
async fn nak_with_delay_and_progress() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.create_stream(orders()).await.unwrap();
    js.publish("orders.1", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("n".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_millis(2000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let msg = timeout(WAIT, batch.next()).await.unwrap().unwrap().unwrap();
    // Work in progress keeps it ours past ack_wait.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    msg.ack_with(AckKind::Progress).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut early = consumer.fetch().max_messages(1).messages().await.unwrap();
    assert!(
        timeout(WAIT, early.next()).await.unwrap().is_none(),
        "not redelivered while in progress"
    );
    // A NAK with a delay brings it back after the delay, not before.
    msg.ack_with(AckKind::Nak(Some(Duration::from_millis(300))))
        .await
        .unwrap();
    let mut soon = consumer.fetch().max_messages(1).messages().await.unwrap();
    assert!(timeout(WAIT, soon.next()).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut later = consumer.fetch().max_messages(1).messages().await.unwrap();
    let again = timeout(WAIT, later.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(again.payload, Bytes::from("one"));
    assert_eq!(again.info().unwrap().delivered, 2);
}

#[tokio::test]
async fn flow_controlled_push_consumer_gets_everything() {
    use async_nats::jetstream::consumer::{push, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js.create_stream(orders()).await.unwrap();
    let payload = Bytes::from(vec![7u8; 10 * 1024]);
    for _ in 0..200 {
        js.publish("orders.big", payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer: jetstream::consumer::PushConsumer = stream
        .create_consumer(push::Config {
            durable_name: Some("fc".into()),
            deliver_subject: client.new_inbox(),
            ack_policy: AckPolicy::None,
            flow_control: true,
            idle_heartbeat: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    for i in 0..200u64 {
        let msg = timeout(WAIT, messages.next())
            .await
            .unwrap_or_else(|_| panic!("stalled at {i}"))
            .unwrap()
            .unwrap();
        assert_eq!(msg.payload.len(), payload.len());
    }
}

#[tokio::test]
async fn pull_max_bytes_info_filters_and_direct_get() {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            allow_direct: true,
            ..orders()
        })
        .await
        .unwrap();
    for i in 0..4 {
        js.publish(format!("orders.{}", i % 2), Bytes::from(vec![b'x'; 1000]))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stream.delete_message(2).await.unwrap();
    let info = stream.info_with_subjects("orders.*").await.unwrap();
    let subjects: std::collections::HashMap<String, usize> =
        futures::TryStreamExt::try_collect(info).await.unwrap();
    assert_eq!(subjects.get("orders.0"), Some(&2));
    assert_eq!(subjects.get("orders.1"), Some(&1));
    // DIRECT.GET with a JSON body, and for the last message of a subject.
    let direct = stream.direct_get(3).await.unwrap();
    assert_eq!(direct.sequence, 3);
    let last = stream
        .direct_get_last_for_subject("orders.1")
        .await
        .unwrap();
    assert_eq!(last.sequence, 4);
    // A pull limited to 2500 bytes gets two 1000-byte messages, then ends.
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bytes".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .max_bytes(2500)
        .messages()
        .await
        .unwrap();
    let mut got = 0;
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        if msg.is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, 2);
}

#[tokio::test]
async fn replay_original_keeps_the_original_pace() {
    use async_nats::jetstream::consumer::{push, AckPolicy, ReplayPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js.create_stream(orders()).await.unwrap();
    js.publish("orders.a", "first".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    js.publish("orders.b", "second".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer: jetstream::consumer::PushConsumer = stream
        .create_consumer(push::Config {
            deliver_subject: client.new_inbox(),
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Original,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let first = timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(first.payload, Bytes::from("first"));
    let second = timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.payload, Bytes::from("second"));
    let gap = started.elapsed();
    assert!(
        gap >= Duration::from_millis(450),
        "replayed {gap:?} apart, stored 600 ms apart"
    );
}

#[tokio::test]
async fn each_account_has_its_own_jetstream() {
    use futures::TryStreamExt;
    let dir = tempfile::tempdir().unwrap();
    let config = "accounts {\n  A { users = [ { user: a, password: p } ], jetstream: enabled }\n  B { users = [ { user: b, password: p } ], jetstream: enabled }\n  C { users = [ { user: c, password: p } ] }\n}\n";
    let start = || {
        TernServer::launch(Launch::default().config(config).args(&[
            "-js",
            "-sd",
            dir.path().to_str().unwrap(),
        ]))
    };
    let user = |server: &TernServer, name: &str| {
        let url = server.url();
        let options = async_nats::ConnectOptions::with_user_and_password(name.into(), "p".into());
        async move { tern_tests::connect_with(&url, options).await }
    };
    let server = start();
    let ja = jetstream::new(user(&server, "a").await);
    let jb = jetstream::new(user(&server, "b").await);
    ja.create_stream(orders()).await.expect("A creates ORDERS");
    // B does not see A's stream, and may have one of the same name.
    let names: Vec<String> = jb.stream_names().try_collect().await.unwrap();
    assert!(names.is_empty(), "B sees {names:?}");
    assert!(jb.get_stream("ORDERS").await.is_err());
    jb.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["b.orders".into()],
        ..Default::default()
    })
    .await
    .expect("B creates its own ORDERS");
    let ack = timeout(WAIT, ja.publish("orders.1", "in A".into()).await.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.sequence, 1);
    let mut a_orders = ja.get_stream("ORDERS").await.unwrap();
    let mut b_orders = jb.get_stream("ORDERS").await.unwrap();
    assert_eq!(a_orders.info().await.unwrap().state.messages, 1);
    assert_eq!(b_orders.info().await.unwrap().state.messages, 0);
    // An account without JetStream gets no answer from anyone's.
    let c = user(&server, "c").await;
    let err = timeout(WAIT, c.request("$JS.API.INFO", Bytes::new()))
        .await
        .unwrap()
        .expect_err("C has no JetStream");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
    drop((ja, jb, c, a_orders, b_orders));
    drop(server);

    // Each account's streams come back from its own store.
    let server = start();
    let ja = jetstream::new(user(&server, "a").await);
    let jb = jetstream::new(user(&server, "b").await);
    let mut a_orders = ja.get_stream("ORDERS").await.unwrap();
    assert_eq!(a_orders.info().await.unwrap().state.messages, 1);
    assert_eq!(a_orders.cached_info().config.subjects, vec!["orders.>"]);
    let mut b_orders = jb.get_stream("ORDERS").await.unwrap();
    assert_eq!(
        b_orders.info().await.unwrap().config.subjects,
        vec!["b.orders"]
    );
}

/// Stream features Tern does not have yet are refused with an error that
/// says so, never taken and ignored.
#[tokio::test]
async fn unimplemented_stream_features_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    for (extra, words) in [(
        r#""mirror":{"name":"OTHER"}"#,
        "mirrors are not implemented",
    )] {
        let body = format!(r#"{{"name":"R","subjects":["r.>"],{extra}}}"#);
        let reply = timeout(WAIT, client.request("$JS.API.STREAM.CREATE.R", body.into()))
            .await
            .unwrap()
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["error"]["err_code"], 10052, "{reply}");
        assert!(
            reply["error"]["description"]
                .as_str()
                .unwrap()
                .contains(words),
            "{reply}"
        );
    }
}

/// Timers: a pull request ends with `408` at its `expires` and sends `100`
/// heartbeats meanwhile; redeliveries follow `backoff`; `max_age` expires
/// messages; an idle ephemeral consumer goes after `inactive_threshold`.
#[tokio::test]
async fn pull_timers_backoff_max_age_and_inactive_threshold() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            max_age: Duration::from_secs(1),
            ..orders()
        })
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("b".into()),
            ack_policy: AckPolicy::Explicit,
            backoff: vec![Duration::from_millis(300), Duration::from_millis(600)],
            max_deliver: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    // Nothing stored: heartbeats, then 408 at expiry.
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let asked = std::time::Instant::now();
    client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.ORDERS.b",
            inbox,
            r#"{"batch":1,"expires":700000000,"idle_heartbeat":200000000}"#.into(),
        )
        .await
        .unwrap();
    let mut statuses = Vec::new();
    loop {
        let msg = timeout(WAIT, sub.next()).await.unwrap().unwrap();
        let code = msg.status.map(u16::from);
        statuses.push(code);
        if code != Some(100) {
            break;
        }
    }
    assert!(
        asked.elapsed() >= Duration::from_millis(650),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(statuses.last(), Some(&Some(408)), "{statuses:?}");
    assert!(
        statuses.len() >= 2,
        "heartbeats before the end: {statuses:?}"
    );
    // One message, never acked: delivered at 0, then after 300 ms and 600 ms.
    js.publish("orders.1", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut at = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..3 {
        let msg = timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        at.push(start.elapsed());
        assert_eq!(msg.info().unwrap().delivered as usize, at.len());
    }
    assert!(at[1] - at[0] >= Duration::from_millis(280), "{at:?}");
    assert!(at[2] - at[1] >= Duration::from_millis(580), "{at:?}");
    drop(messages);
    // max_age: the message goes within a few seconds of its second.
    assert_eq!(
        messages_eventually(&client, "ORDERS", 0).await,
        0,
        "expired by max_age"
    );
    // An ephemeral consumer nobody uses goes after inactive_threshold.
    let ephemeral: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            inactive_threshold: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap();
    let name = ephemeral.cached_info().name.clone();
    let mut gone = false;
    for _ in 0..100 {
        if stream.consumer_info(&name).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "ephemeral consumer {name} still there");
}

/// `filter_subjects` (2.10): a consumer takes several subjects, in stream
/// order.
#[tokio::test]
async fn filter_subjects_take_several_subjects() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let js = jetstream::new(connect(&server.url()).await);
    let stream = js.create_stream(orders()).await.unwrap();
    for (i, subject) in ["a", "b", "c", "a", "c", "b"].iter().enumerate() {
        js.publish(format!("orders.{subject}"), format!("{subject}{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("ac".into()),
            ack_policy: AckPolicy::Explicit,
            filter_subjects: vec!["orders.a".into(), "orders.c".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        msg.ack().await.unwrap();
        got.push(String::from_utf8_lossy(&msg.payload).into_owned());
    }
    assert_eq!(got, ["a0", "c2", "a3", "c4"]);
    let mut consumer = consumer;
    assert_eq!(consumer.info().await.unwrap().num_pending, 0);
}

/// A push consumer moved to another deliver subject sends what the old
/// subscriber had not acked to the new one at once, as nats-server does.
#[tokio::test]
async fn a_push_consumer_moved_to_a_new_subject_sends_the_unacked_again() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    js.create_stream(orders()).await.unwrap();
    for i in 0..3 {
        js.publish(format!("orders.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let create = |deliver: &str| {
        format!(
            r#"{{"stream_name":"ORDERS","config":{{"durable_name":"p","ack_policy":"explicit","deliver_subject":"{deliver}"}}}}"#
        )
    };
    let mut first = client.subscribe("first.inbox").await.unwrap();
    let reply = client
        .request(
            "$JS.API.CONSUMER.CREATE.ORDERS.p",
            create("first.inbox").into(),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&reply.payload).contains("error"));
    for _ in 0..3 {
        timeout(WAIT, first.next()).await.unwrap().unwrap();
    }
    first.unsubscribe().await.unwrap();
    tern_tests::round_trip(&client).await;
    let mut second = client.subscribe("second.inbox").await.unwrap();
    let reply = client
        .request(
            "$JS.API.CONSUMER.CREATE.ORDERS.p",
            create("second.inbox").into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        reply["config"]["deliver_subject"], "second.inbox",
        "{reply}"
    );
    let mut sequences = Vec::new();
    for _ in 0..3 {
        let msg = timeout(WAIT, second.next()).await.unwrap().unwrap();
        let ack = msg.reply.unwrap().to_string();
        // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...
        let tokens: Vec<&str> = ack.split('.').collect();
        assert_eq!(tokens[4], "2", "a redelivery: {ack}");
        sequences.push(tokens[5].to_owned());
    }
    assert_eq!(sequences, ["1", "2", "3"]);
}

/// A durable push consumer comes back after a restart: what was not acked
/// is delivered again, then the rest, to whoever subscribes.
#[tokio::test]
async fn a_durable_push_consumer_goes_on_after_a_restart() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let create = r#"{"stream_name":"ORDERS","config":{"durable_name":"p","ack_policy":"explicit","deliver_subject":"push.inbox"}}"#;
    {
        let mut server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        js.create_stream(orders()).await.unwrap();
        for i in 1..=4 {
            js.publish(format!("orders.{i}"), format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut sub = client.subscribe("push.inbox").await.unwrap();
        client
            .request("$JS.API.CONSUMER.CREATE.ORDERS.p", create.into())
            .await
            .unwrap();
        // Ack the first two of four.
        for i in 1..=4 {
            let msg = timeout(WAIT, sub.next()).await.unwrap().unwrap();
            assert_eq!(msg.payload, i.to_string());
            if i <= 2 {
                client
                    .request(msg.reply.unwrap(), "+ACK".into())
                    .await
                    .unwrap();
            }
        }
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    js.publish("orders.5", "5".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut sub = client.subscribe("push.inbox").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = timeout(WAIT, sub.next()).await.unwrap().unwrap();
        got.push(String::from_utf8_lossy(&msg.payload).into_owned());
    }
    assert_eq!(got, ["3", "4", "5"]);
}

/// nats-server 2.10's checks of consumer names and filter lists.
#[tokio::test]
async fn consumer_names_and_filter_lists_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    js.create_stream(orders()).await.unwrap();
    for (subject, config, err_code) in [
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.X",
            r#"{"name":"X","durable_name":"X2"}"#,
            10017,
        ),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS",
            r#"{"name":"X","durable_name":"Y"}"#,
            10020,
        ),
        ("$JS.API.CONSUMER.CREATE.ORDERS.X", r#"{"name":"Y"}"#, 0),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.Z",
            r#"{"name":"Z","durable_name":"Z"}"#,
            0,
        ),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.F",
            r#"{"filter_subject":"orders.a","filter_subjects":["orders.b"]}"#,
            10136,
        ),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.F",
            r#"{"filter_subjects":["orders.a",""]}"#,
            10139,
        ),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.F",
            r#"{"filter_subjects":["orders.*","orders.a"]}"#,
            10138,
        ),
        (
            "$JS.API.CONSUMER.CREATE.ORDERS.F.orders.a",
            r#"{"filter_subjects":["orders.a","orders.b"]}"#,
            10137,
        ),
    ] {
        let body = format!(r#"{{"stream_name":"ORDERS","config":{config}}}"#);
        let reply = timeout(WAIT, client.request(subject, body.into()))
            .await
            .unwrap()
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        if err_code == 0 {
            assert!(reply.get("error").is_none(), "{subject} {config}: {reply}");
        } else {
            assert_eq!(
                reply["error"]["err_code"], err_code,
                "{subject} {config}: {reply}"
            );
        }
    }
    // Both names set and different (no name in the subject to check them
    // against first): 10132.
    let reply = timeout(
        WAIT,
        client.request(
            "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.D",
            r#"{"stream_name":"ORDERS","config":{"durable_name":"D","name":"N"}}"#.into(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["error"]["err_code"], 10132, "{reply}");
}

/// A stream's `subject_transform` (2.10) stores messages under the mapped
/// subject; what the source does not match is stored as it came.
#[tokio::test]
async fn a_subject_transform_names_what_is_stored() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let reply = client
        .request(
            "$JS.API.STREAM.CREATE.T",
            r#"{"name":"T","subjects":["in.>"],"subject_transform":{"src":"in.*","dest":"out.{{wildcard(1)}}"}}"#.into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply.get("error").is_none(), "{reply}");
    let js = jetstream::new(client.clone());
    for subject in ["in.a", "in.b.c"] {
        js.publish(subject, subject.to_owned().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let stream = js.get_stream("T").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(5).messages().await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        let msg = msg.unwrap();
        got.push(format!(
            "{} {}",
            msg.subject,
            String::from_utf8_lossy(&msg.payload)
        ));
    }
    assert_eq!(got, ["out.a in.a", "in.b.c in.b.c"]);
    // A consumer may filter on the mapped subjects.
    let mapped: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            filter_subject: "out.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = mapped.fetch().max_messages(5).messages().await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = timeout(WAIT, batch.next()).await.unwrap() {
        got.push(msg.unwrap().subject.to_string());
    }
    assert_eq!(got, ["out.a"]);
    // An invalid mapping is refused.
    let reply = client
        .request(
            "$JS.API.STREAM.CREATE.U",
            r#"{"name":"U","subjects":["u.>"],"subject_transform":{"src":"u.*","dest":"v.$2"}}"#
                .into(),
        )
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["error"]["err_code"], 10052, "{reply}");
}

/// A stream's sources go on after a restart from where they were, with no
/// copy made twice.
#[tokio::test]
async fn sources_go_on_after_a_restart_without_copying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let count = |client: async_nats::Client, expected: u64| async move {
        messages_eventually(&client, "ALL", expected).await
    };
    {
        let mut server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        js.create_stream(orders()).await.unwrap();
        let reply = client
            .request(
                "$JS.API.STREAM.CREATE.ALL",
                r#"{"name":"ALL","sources":[{"name":"ORDERS"}]}"#.into(),
            )
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&reply.payload).contains("error"));
        for i in 0..300 {
            js.publish(format!("orders.{i}"), "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        assert_eq!(count(client.clone(), 300).await, 300);
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let server = launch_js(dir.path(), Some(port));
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    for i in 300..310 {
        js.publish(format!("orders.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(count(client.clone(), 310).await, 310);
    // Nothing more comes: no copy twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(client.clone(), 310).await, 310);
    let reply = client
        .request("$JS.API.STREAM.INFO.ALL", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(info["sources"][0]["name"], "ORDERS", "{info}");
    assert_eq!(info["sources"][0]["lag"], 0, "{info}");
}

/// SIGKILL while a stream copies its source: after the restart the copy
/// catches up with every origin message exactly once (the copies of the
/// pass the kill interrupted are found in the stream's newest messages).
#[tokio::test]
async fn sources_killed_mid_copy_copy_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let info = |client: async_nats::Client, stream: &'static str| async move {
        let reply = client
            .request(format!("$JS.API.STREAM.INFO.{stream}"), "".into())
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
    };
    {
        let server = launch_js(dir.path(), Some(port));
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        js.create_stream(orders()).await.unwrap();
        client
            .request(
                "$JS.API.STREAM.CREATE.ALL",
                r#"{"name":"ALL","sources":[{"name":"ORDERS"}]}"#.into(),
            )
            .await
            .unwrap();
        // Publish with acks in flight, and kill while the copy runs.
        let mut acks = Vec::new();
        for i in 0..3000 {
            acks.push(js.publish(format!("orders.{i}"), "x".into()).await.unwrap());
            if acks.len() >= 256 {
                for ack in acks.drain(..) {
                    ack.await.unwrap();
                }
            }
        }
        for ack in acks.drain(..) {
            ack.await.unwrap();
        }
        server.signal("KILL");
    }
    let server = launch_js(dir.path(), Some(port));
    let client = connect(&server.url()).await;
    let origin = info(client.clone(), "ORDERS").await["state"]["messages"]
        .as_u64()
        .unwrap();
    assert_eq!(origin, 3000, "every acked publish is there");
    let copied = messages_eventually(&client, "ALL", origin).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copied_after = info(client.clone(), "ALL").await["state"]["messages"]
        .as_u64()
        .unwrap();
    assert_eq!(
        (copied, copied_after),
        (3000, 3000),
        "each origin message once"
    );
}

/// Two streams sourcing each other copy each other's messages once, and a
/// long run of copies of its own messages does not stop a stream copying
/// what comes after; an interest stream keeps what its sourcing streams
/// have not copied yet, then lets it go.
#[tokio::test]
async fn sources_in_a_circle_and_from_an_interest_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = launch_js(dir.path(), None);
    let client = connect(&server.url()).await;
    let js = jetstream::new(client.clone());
    let create = |body: &'static str, name: &'static str| {
        let client = client.clone();
        async move {
            let reply = client
                .request(format!("$JS.API.STREAM.CREATE.{name}"), body.into())
                .await
                .unwrap();
            let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert!(reply.get("error").is_none(), "{reply}");
        }
    };
    let messages = |name: &'static str, expected: u64| messages_eventually(&client, name, expected);
    create(
        r#"{"name":"A","subjects":["a.>"],"sources":[{"name":"B"}]}"#,
        "A",
    )
    .await;
    create(
        r#"{"name":"B","subjects":["b.>"],"sources":[{"name":"A"}]}"#,
        "B",
    )
    .await;
    for i in 0..300 {
        js.publish(format!("a.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(messages("B", 300).await, 300);
    for i in 0..5 {
        js.publish(format!("b.{i}"), "y".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(
        messages("A", 305).await,
        305,
        "B's own come after 300 copies"
    );
    assert_eq!(messages("B", 305).await, 305);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(messages("A", 305).await, 305, "nothing copied twice");

    // An interest stream nobody consumes, copied by another.
    create(
        r#"{"name":"I","subjects":["i.>"],"retention":"interest"}"#,
        "I",
    )
    .await;
    create(r#"{"name":"C","sources":[{"name":"I"}]}"#, "C").await;
    for i in 0..50 {
        js.publish(format!("i.{i}"), "z".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(messages("C", 50).await, 50, "every one copied");
    assert_eq!(messages("I", 0).await, 0, "then let go");
}
