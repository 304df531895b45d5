//! Route links: the messages this node forwards to one peer, and the
//! interest that peer announces back.
//!
//! For every peer that is up, this node dials one `Route` stream. On it this
//! node sends the messages the peer's subscribers want; the peer answers with
//! its interest, a full snapshot first and then each change. The peer dials
//! its own stream the other way, so each direction has one stream and no
//! duplicate links need resolving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::packed::Forwarded;
use crate::pb::{route_frame, MessageBatch};

/// Bytes queued for one peer beyond which further messages are dropped (and
/// counted) until the link catches up: a slow route never grows memory
/// without bound.
pub(crate) const MAX_PEER_PENDING: usize = 64 * 1024 * 1024;
/// A batch is sealed once it holds this many bytes and the next one begins,
/// so no gRPC message gets near the decoding limit and a slow link sends
/// in steady pieces.
const BATCH_BYTES: usize = 256 * 1024;

/// Counters of one peer link, for monitoring.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Messages forwarded to the peer.
    pub out_msgs: AtomicU64,
    /// Bytes forwarded to the peer (packed messages, with subjects).
    pub out_bytes: AtomicU64,
    /// Messages received from the peer.
    pub in_msgs: AtomicU64,
    /// Bytes received from the peer (packed messages, with subjects).
    pub in_bytes: AtomicU64,
    /// Messages dropped because the link was behind by more than its limit.
    pub dropped_msgs: AtomicU64,
    /// Times the outbound link was (re)established.
    pub connects: AtomicU64,
}

/// One peer node as a destination for forwarded messages.
///
/// Compared by identity: the routing layer keeps it in its sublist as the
/// value of the peer's interest.
pub struct Peer {
    node_id: String,
    queue: Mutex<PeerQueue>,
    ready: Notify,
    connected: AtomicBool,
    /// The peer's interest version applied here (see `InterestBatch`).
    interest_version: AtomicU64,
    interest_applied: Notify,
    /// Counters, shared with monitoring.
    pub stats: LinkStats,
}

#[derive(Default)]
struct PeerQueue {
    /// Full batches waiting to be sent, oldest first: bytes and count.
    sealed: VecDeque<(Bytes, u32)>,
    /// The batch being filled.
    open: BytesMut,
    open_count: u32,
    /// Bytes in `sealed` and `open`.
    bytes: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Peer {
    pub(crate) fn new(node_id: String) -> Self {
        Self {
            node_id,
            queue: Mutex::new(PeerQueue::default()),
            ready: Notify::new(),
            connected: AtomicBool::new(false),
            interest_version: AtomicU64::new(0),
            interest_applied: Notify::new(),
            stats: LinkStats::default(),
        }
    }

    /// The peer's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the outbound link is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Queues a message for the peer: one copy into its buffer. False if
    /// the link is down or too far behind; the message is then not
    /// delivered there.
    pub fn send(&self, message: &Forwarded<'_>) -> bool {
        if !self.is_connected() {
            return false;
        }
        let size = message.encoded_len();
        let mut queue = self.queue.lock();
        // Checked again under the lock: a link that went down meanwhile has
        // cleared the queue, and nothing may slip into the next connection.
        if !self.is_connected() {
            return false;
        }
        if queue.bytes + size > MAX_PEER_PENDING && queue.bytes > 0 {
            drop(queue);
            self.stats.dropped_msgs.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let wake = queue.bytes == 0;
        message.encode(&mut queue.open);
        queue.open_count += 1;
        queue.bytes += size;
        if queue.open.len() >= BATCH_BYTES {
            let count = std::mem::take(&mut queue.open_count);
            let batch = queue.open.split().freeze();
            queue.sealed.push_back((batch, count));
        }
        drop(queue);
        self.stats.out_msgs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .out_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// The oldest queued batch, waiting for one.
    async fn next_batch(&self) -> MessageBatch {
        loop {
            let ready = self.ready.notified();
            {
                let mut queue = self.queue.lock();
                let batch = match queue.sealed.pop_front() {
                    Some(sealed) => Some(sealed),
                    None if queue.open_count > 0 => {
                        let count = std::mem::take(&mut queue.open_count);
                        Some((queue.open.split().freeze(), count))
                    }
                    None => None,
                };
                if let Some((packed, count)) = batch {
                    queue.bytes -= packed.len();
                    return MessageBatch {
                        packed,
                        count,
                        interest_version: 0,
                    };
                }
            }
            ready.await;
        }
    }

    /// Waits until this peer's interest is applied up to `version`, or
    /// `limit` passed, or the link that brings it is down (then there is
    /// nothing to wait for).
    pub(crate) async fn await_interest(&self, version: u64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let applied = self.interest_applied.notified();
            if self.interest_version.load(Ordering::Acquire) >= version || !self.is_connected() {
                return;
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                debug!(
                    peer = self.node_id(),
                    version, "delivering before the peer's interest caught up"
                );
                return;
            }
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        if !up {
            let mut queue = self.queue.lock();
            queue.sealed.clear();
            queue.open.clear();
            queue.open_count = 0;
            queue.bytes = 0;
        }
    }
}

/// Runs one outbound link to `peer` until `stop` fires, reconnecting with
/// backoff while the peer stays in the cluster.
pub(crate) async fn run_link(
    node: Arc<crate::NodeShared>,
    peer: Arc<Peer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(addr) = node.cluster_addr_of(peer.node_id()) else {
            break;
        };
        let outcome = tokio::select! {
            outcome = link_once(&node, &peer, &addr) => outcome,
            _ = stop.changed() => Ok(()),
        };
        peer.set_connected(false);
        node.handler.peer_reset(&peer);
        match outcome {
            Ok(()) => debug!(peer = peer.node_id(), "route link closed"),
            Err(e) => debug!(peer = peer.node_id(), %addr, error = %e, "route link failed"),
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    peer.set_connected(false);
    node.handler.peer_reset(&peer);
}

async fn link_once(
    node: &Arc<crate::NodeShared>,
    peer: &Arc<Peer>,
    addr: &str,
) -> Result<(), crate::ClusterError> {
    let mut client = node.client(addr)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(node.hello_frame())
        .await
        .map_err(|_| crate::ClusterError::Closed)?;
    let request = node.authorize(tonic::Request::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    let mut inbound = client.route(request).await?.into_inner();
    // The first answer is the peer's interest snapshot: only then is the
    // link up, so no message is sent before the peer's interest is known.
    let first = inbound
        .message()
        .await?
        .ok_or(crate::ClusterError::Closed)?;
    node.handler.peer_reset(peer);
    apply_frame(node, peer, first);
    peer.set_connected(true);
    peer.stats.connects.fetch_add(1, Ordering::Relaxed);
    info!(peer = peer.node_id(), %addr, "route link established");
    let sender = async {
        loop {
            let mut batch = peer.next_batch().await;
            // Read after the batch's messages were queued: it covers every
            // interest change made before them.
            batch.interest_version = node.interest.version();
            let frame = crate::pb::RouteFrame {
                kind: Some(route_frame::Kind::Messages(batch)),
            };
            if tx.send(frame).await.is_err() {
                break;
            }
        }
    };
    let receiver = async {
        loop {
            match inbound.message().await {
                Ok(Some(frame)) => apply_frame(node, peer, frame),
                Ok(None) => return Ok(()),
                Err(status) => return Err(crate::ClusterError::from(status)),
            }
        }
    };
    tokio::select! {
        _ = sender => Ok(()),
        result = receiver => result,
    }
}

fn apply_frame(node: &crate::NodeShared, peer: &Arc<Peer>, frame: crate::pb::RouteFrame) {
    match frame.kind {
        Some(route_frame::Kind::Interest(batch)) => {
            if batch.snapshot {
                node.handler.peer_reset(peer);
            }
            for item in &batch.items {
                let queue = (!item.queue.is_empty()).then_some(item.queue.as_str());
                node.handler
                    .interest(peer, &item.account, &item.subject, queue, item.add);
            }
            if batch.snapshot {
                peer.interest_version
                    .store(batch.version, Ordering::Release);
            } else if batch.version > 0 {
                peer.interest_version
                    .fetch_max(batch.version, Ordering::AcqRel);
            }
            peer.interest_applied.notify_waiters();
        }
        other => {
            warn!(peer = peer.node_id(), frame = ?other.map(|_| "non-interest"), "unexpected frame on route answer stream")
        }
    }
}
