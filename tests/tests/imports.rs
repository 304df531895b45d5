//! Account exports and imports: streams from one account delivered in
//! another, services requested across accounts with replies routed back,
//! and the configurations that are refused.

use std::time::Duration;

use futures::StreamExt;
use tern_tests::cluster::TernCluster;
use tern_tests::{connect_with, Launch, TernServer};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
accounts {
  A {
    users = [ { user: a, password: p } ]
    exports = [
      { stream: "events.>" }
      { service: "help.>" }
      { stream: "private.>", accounts: [ B ] }
    ]
  }
  B {
    users = [ { user: b, password: p } ]
    imports = [
      { stream: { account: A, subject: "events.>" }, prefix: from_a }
      { stream: { account: A, subject: "private.>" } }
      { service: { account: A, subject: "help.>" }, to: "ahelp.>" }
    ]
  }
  C {
    users = [ { user: c, password: p } ]
  }
}
"#;

async fn login(url: &str, user: &str) -> async_nats::Client {
    connect_with(
        url,
        async_nats::ConnectOptions::with_user_and_password(user.into(), "p".into()),
    )
    .await
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    timeout(WAIT, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

async fn nothing(sub: &mut async_nats::Subscriber) {
    assert!(
        timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing expected"
    );
}

#[tokio::test]
async fn streams_cross_accounts_as_exported() {
    let server = TernServer::launch(Launch::default().config(CONFIG));
    let a = login(&server.url(), "a").await;
    let b = login(&server.url(), "b").await;
    let c = login(&server.url(), "c").await;
    let mut b_events = b.subscribe("from_a.events.>").await.unwrap();
    let mut b_private = b.subscribe("private.>").await.unwrap();
    let mut b_plain = b.subscribe("events.>").await.unwrap();
    let mut c_events = c.subscribe("events.>").await.unwrap();
    let mut c_prefixed = c.subscribe("from_a.>").await.unwrap();
    tern_tests::round_trip(&b).await;
    tern_tests::round_trip(&c).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Origin", "A");
    a.publish_with_headers("events.order.created", headers, "e1".into())
        .await
        .unwrap();
    a.publish("private.x", "p1".into()).await.unwrap();
    a.flush().await.unwrap();
    let m = next(&mut b_events).await;
    assert_eq!(m.subject.as_str(), "from_a.events.order.created");
    assert_eq!(m.payload, bytes::Bytes::from("e1"));
    assert_eq!(
        m.headers.unwrap().get("Origin").map(|v| v.as_str()),
        Some("A")
    );
    assert_eq!(next(&mut b_private).await.payload, bytes::Bytes::from("p1"));
    // Only under the import's name, and not in the account that imports nothing.
    nothing(&mut b_plain).await;
    nothing(&mut c_events).await;
    nothing(&mut c_prefixed).await;
    // Imports do not flow back: B's publish stays in B.
    let mut a_events = a.subscribe("events.>").await.unwrap();
    tern_tests::round_trip(&a).await;
    b.publish("events.back", "no".into()).await.unwrap();
    b.flush().await.unwrap();
    nothing(&mut a_events).await;
}

#[tokio::test]
async fn services_answer_across_accounts() {
    let server = TernServer::launch(Launch::default().config(CONFIG));
    let a = login(&server.url(), "a").await;
    let b = login(&server.url(), "b").await;
    // Without a responder the requester hears "no responders".
    let err = timeout(WAIT, b.request("ahelp.me", "?".into()))
        .await
        .unwrap()
        .expect_err("nobody answers yet");
    assert_eq!(
        err.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );

    let mut service = a.subscribe("help.>").await.unwrap();
    tern_tests::round_trip(&a).await;
    let responder = tokio::spawn({
        let a = a.clone();
        async move {
            for _ in 0..3 {
                let Some(request) = service.next().await else {
                    return;
                };
                let reply = request.reply.clone().expect("a reply subject");
                assert!(reply.as_str().starts_with("_R_."), "{reply}");
                let answer = format!("{} answered", request.subject);
                a.publish(reply, answer.into()).await.unwrap();
            }
            a.flush().await.unwrap();
        }
    });
    for i in 0..3 {
        let answer = timeout(WAIT, b.request(format!("ahelp.topic{i}"), "?".into()))
            .await
            .unwrap()
            .expect("an answer from account A");
        assert_eq!(
            answer.payload,
            bytes::Bytes::from(format!("help.topic{i} answered"))
        );
    }
    responder.await.unwrap();
}

#[test]
fn imports_need_a_matching_export() {
    let missing = "accounts {\n  A { users = [ { user: a, password: p } ] }\n  B { imports = [ { stream: { account: A, subject: \"x.>\" } } ] }\n}\n";
    let err = TernServer::try_launch(Launch::default().config(missing))
        .err()
        .expect("refused");
    assert!(err.contains("exports no stream covering it"), "{err}");
    let restricted = "accounts {\n  A { exports = [ { service: \"s\", accounts: [ B ] } ] }\n  B { }\n  C { imports = [ { service: { account: A, subject: \"s\" } } ] }\n}\n";
    let err = TernServer::try_launch(Launch::default().config(restricted))
        .err()
        .expect("refused");
    assert!(err.contains("may not import service"), "{err}");
    let wider = "accounts {\n  A { exports = [ { stream: \"e.*\" } ] }\n  B { imports = [ { stream: { account: A, subject: \"e.>\" } } ] }\n}\n";
    let err = TernServer::try_launch(Launch::default().config(wider))
        .err()
        .expect("an import wider than the export is refused");
    assert!(err.contains("exports no stream covering it"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_work_across_cluster_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("accounts.conf");
    std::fs::write(&conf, CONFIG).unwrap();
    let cluster = TernCluster::start_with("imports", 2, &["-c", conf.to_str().unwrap()]);
    // The responder and the stream publisher on node 1, B's clients on node 2.
    let a = login(&cluster.url(0), "a").await;
    let b = login(&cluster.url(1), "b").await;
    let mut service = a.subscribe("help.>").await.unwrap();
    tern_tests::round_trip(&a).await;
    let mut events = b.subscribe("from_a.events.>").await.unwrap();
    tern_tests::round_trip(&b).await;
    assert!(tern_tests::eventually(Duration::from_secs(10), || {
        cluster.interest_count(1, "help.>") == 1
            && cluster.interest_count(0, "from_a.events.>") == 1
    }));
    let responder = tokio::spawn({
        let a = a.clone();
        async move {
            let request = service.next().await.unwrap();
            a.publish(request.reply.unwrap(), "from node 1".into())
                .await
                .unwrap();
            a.flush().await.unwrap();
        }
    });
    let answer = timeout(WAIT, b.request("ahelp.remote", "?".into()))
        .await
        .unwrap()
        .expect("an answer across nodes and accounts");
    assert_eq!(answer.payload, bytes::Bytes::from("from node 1"));
    responder.await.unwrap();
    a.publish("events.cross", "e".into()).await.unwrap();
    a.flush().await.unwrap();
    let m = next(&mut events).await;
    assert_eq!(m.subject.as_str(), "from_a.events.cross");
}
