//! Two and three in-process cluster nodes on loopback: membership, interest
//! and forwarded messages through the real gRPC service, and the raft
//! transport's dispatch by group.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tern_cluster::{
    Cluster, ClusterConfig, Forwarded, InboundSink, InterestRegistry, Liveness, MemberView,
    MessageBatch, Peer, RaftGroupHandler, RouteHandler,
};

/// (subject, payload) of every message delivered.
type Delivered = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// Records what the cluster layer tells the server.
#[derive(Default)]
struct Recorder {
    interest: Mutex<Vec<(String, String, String, bool)>>,
    peers: Mutex<Vec<Arc<Peer>>>,
    /// (subject, payload) of every delivered message.
    delivered: Delivered,
}

impl RouteHandler for Recorder {
    fn interest(
        &self,
        peer: &Arc<Peer>,
        account: &str,
        subject: &str,
        queue: Option<&str>,
        add: bool,
    ) {
        let mut peers = self.peers.lock();
        if !peers.iter().any(|p| Arc::ptr_eq(p, peer)) {
            peers.push(peer.clone());
        }
        self.interest.lock().push((
            peer.node_id().to_owned(),
            format!("{account}/{subject}"),
            queue.unwrap_or_default().to_owned(),
            add,
        ));
    }

    fn peer_reset(&self, peer: &Arc<Peer>) {
        self.interest
            .lock()
            .retain(|(id, _, _, _)| id != peer.node_id());
    }

    fn inbound(&self, _from: &str) -> Box<dyn InboundSink> {
        Box::new(Sink(self.delivered.clone()))
    }

    fn members_changed(&self, _members: &[MemberView]) {}
}

struct Sink(Delivered);

impl InboundSink for Sink {
    fn deliver(&mut self, batch: MessageBatch) {
        let mut delivered = self.0.lock();
        for message in tern_cluster::unpack(&batch.packed) {
            let message = message.expect("well-formed batch");
            delivered.push((message.subject.to_vec(), message.payload.to_vec()));
        }
    }
}

struct Node {
    cluster: Cluster,
    interest: Arc<InterestRegistry>,
    recorder: Arc<Recorder>,
}

async fn node(id: &str, name: &str, seeds: Vec<String>) -> Node {
    let interest = Arc::new(InterestRegistry::default());
    let recorder = Arc::new(Recorder::default());
    let config = ClusterConfig {
        name: name.to_owned(),
        node_id: id.to_owned(),
        server_name: id.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        client_addr: "127.0.0.1:4222".to_owned(),
        monitor_addr: String::new(),
        seeds,
        auth: None,
        tls: None,
        gossip_interval: Duration::from_millis(50),
        down_after: Duration::from_millis(600),
    };
    let cluster = Cluster::start(config, interest.clone(), recorder.clone())
        .await
        .expect("start cluster node");
    Node {
        cluster,
        interest,
        recorder,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn up(node: &Node) -> usize {
    node.cluster
        .members()
        .iter()
        .filter(|m| m.liveness == Liveness::Up)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_learn_each_other_from_one_seed() {
    let a = node("a", "c", vec![]).await;
    let seed = vec![a.cluster.listen_addr().to_string()];
    let b = node("b", "c", seed.clone()).await;
    let c = node("c", "c", seed).await;
    eventually("full membership", || {
        up(&a) == 3 && up(&b) == 3 && up(&c) == 3
    })
    .await;
    // b never heard of c from a seed; gossip told it.
    assert!(b.cluster.members().iter().any(|m| m.member.node_id == "c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_and_messages_flow_over_the_route() {
    let a = node("a", "c", vec![]).await;
    let b = node("b", "c", vec![a.cluster.listen_addr().to_string()]).await;
    // Interest made before the link exists arrives in the snapshot.
    b.interest.add("$G", "early", None);
    eventually("links up", || {
        a.cluster.peers().iter().any(|p| p.is_connected())
            && b.cluster.peers().iter().any(|p| p.is_connected())
    })
    .await;
    b.interest.add("$G", "jobs", Some("workers"));
    eventually("interest at a", || a.recorder.interest.lock().len() == 2).await;
    let seen = a.recorder.interest.lock().clone();
    assert!(seen.contains(&("b".into(), "$G/early".into(), String::new(), true)));
    assert!(seen.contains(&("b".into(), "$G/jobs".into(), "workers".into(), true)));

    let peer = a.recorder.peers.lock()[0].clone();
    assert_eq!(peer.node_id(), "b");
    for i in 0..1000u32 {
        let payload = i.to_string();
        assert!(peer.send(&Forwarded {
            account: "$G",
            subject: b"early",
            payload: payload.as_bytes(),
            plain: true,
            ..Default::default()
        }));
    }
    eventually("messages at b", || {
        b.recorder.delivered.lock().len() == 1000
    })
    .await;
    let order: Vec<u32> = b
        .recorder
        .delivered
        .lock()
        .iter()
        .map(|(_, payload)| std::str::from_utf8(payload).unwrap().parse().unwrap())
        .collect();
    assert_eq!(order, (0..1000).collect::<Vec<_>>(), "in order, once each");
    let stats = b.cluster.inbound_stats("a").expect("inbound stats");
    assert_eq!(
        stats.in_msgs.load(std::sync::atomic::Ordering::Relaxed),
        1000
    );

    // The last unsubscribe withdraws interest.
    b.interest.remove("$G", "early", None);
    eventually("withdrawn", || {
        a.recorder
            .interest
            .lock()
            .iter()
            .any(|(_, s, _, add)| s == "$G/early" && !add)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_and_a_silent_one_goes_down() {
    let a = node("a", "c", vec![]).await;
    let seed = vec![a.cluster.listen_addr().to_string()];
    let b = node("b", "c", seed.clone()).await;
    let c = node("c", "c", seed).await;
    eventually("full membership", || up(&a) == 3).await;
    b.cluster.shutdown().await;
    eventually("b left", || {
        a.cluster
            .members()
            .iter()
            .any(|m| m.member.node_id == "b" && m.liveness == Liveness::Left)
    })
    .await;
    // Dropping c's tasks without a goodbye: its heartbeat stops.
    let started = Instant::now();
    drop(c);
    eventually("c down", || {
        a.cluster
            .members()
            .iter()
            .any(|m| m.member.node_id == "c" && m.liveness == Liveness::Down)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_with_different_names_do_not_merge() {
    let a = node("a", "one", vec![]).await;
    let b = node("b", "two", vec![a.cluster.listen_addr().to_string()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.cluster.members().len(), 1);
    assert_eq!(b.cluster.members().len(), 1);
}

struct Echo;

impl RaftGroupHandler for Echo {
    fn handle(
        &self,
        kind: &str,
        from: &str,
        payload: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send + '_>>
    {
        let answer = format!("{kind} from {from}: {}", String::from_utf8_lossy(&payload));
        Box::pin(async move { Ok(Bytes::from(answer)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_calls_reach_the_named_group() {
    let a = node("a", "c", vec![]).await;
    let b = node("b", "c", vec![a.cluster.listen_addr().to_string()]).await;
    eventually("membership", || up(&a) == 2 && up(&b) == 2).await;
    b.cluster.raft_groups().register("meta", Arc::new(Echo));
    let answer = a
        .cluster
        .raft_call("b", "meta", "vote", Bytes::from_static(b"term 3"))
        .await
        .expect("raft call");
    assert_eq!(answer, Bytes::from("vote from a: term 3"));
    let err = a
        .cluster
        .raft_call("b", "stream-orders", "vote", Bytes::new())
        .await
        .expect_err("unknown group");
    assert!(err.to_string().contains("not hosted"), "{err}");
    b.cluster.raft_groups().unregister("meta");
    assert!(a
        .cluster
        .raft_call("b", "meta", "vote", Bytes::new())
        .await
        .is_err());
}
