//! Delivery of one published message to everyone interested in it, shared
//! by client connections and the server's internal publishers.
//!
//! A [`Router`] belongs to one publisher (a connection's reader, or an
//! internal service). It matches subjects through its own cache of the
//! account's sublist, queues encoded messages on the receivers, and at the
//! end of a batch wakes each receiver's writer once and reports the
//! receivers the publisher should wait for.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tern_cluster::{Forwarded, Received};
use tern_routing::{MatchCache, MatchResult};
use tracing::warn;

use crate::account::{Account, PeerRef};
use crate::client::{ClientShared, Enqueued, SubRef};
use crate::server::ServerShared;

/// The connections a reader queued bytes for during one read batch; each
/// writer is woken once at the end of the batch instead of once per message.
#[derive(Default)]
pub(crate) struct Flusher {
    owed: Vec<Arc<ClientShared>>,
}

impl Flusher {
    fn note(&mut self, client: &Arc<ClientShared>) {
        if client.claim_flush() {
            self.owed.push(client.clone());
        }
    }

    fn flush_all(&mut self) {
        for client in self.owed.drain(..) {
            client.flush();
        }
    }

    /// Wakes every writer owed a wake-up and returns the connections whose
    /// queue is past half of `max_pending`: the publisher waits for those.
    fn flush_all_and_check(&mut self, stalls: &mut Vec<Arc<ClientShared>>) {
        for client in self.owed.drain(..) {
            client.flush();
            if client.pending_bytes() > client.stall_threshold() {
                stalls.push(client);
            }
        }
    }
}

/// Queued bytes past which a publisher waits for a receiver that is still
/// reading (or half of `max_pending`, if smaller). Enough for several full
/// socket buffers, so steady streams never wait.
pub(crate) const STALL_PENDING: usize = 4 * 1024 * 1024;
/// Longest a publisher is held back in one read batch for receivers that
/// fall behind.
const MAX_STALL: Duration = Duration::from_secs(1);
/// A receiver whose socket takes nothing for this long is not waited for:
/// it is stuck, and will be cut off at `max_pending` instead. Long enough
/// that a reader starved of CPU for a moment on a loaded machine is not
/// mistaken for a stuck one.
const STALL_STEP: Duration = Duration::from_millis(250);

/// Holds the publisher back while receivers it fed drain their queues, so a
/// burst does not turn a reading-but-slower subscriber into a slow consumer.
/// Receivers that read nothing are not waited for; nobody waits longer than
/// [`MAX_STALL`] per batch.
async fn stall_for(targets: &[Arc<ClientShared>]) {
    let deadline = tokio::time::Instant::now() + MAX_STALL;
    for target in targets {
        loop {
            let drained = target.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let closed = target.out.lock().closed;
            if closed || target.pending_bytes() <= target.stall_threshold() {
                break;
            }
            let written = target.bytes_written.load(Ordering::Relaxed);
            if target.stuck_at.load(Ordering::Relaxed) == written {
                break;
            }
            let step = tokio::time::timeout(STALL_STEP, drained).await;
            let progressed = target.bytes_written.load(Ordering::Relaxed) != written;
            if step.is_err() && !progressed {
                target.stuck_at.store(written, Ordering::Relaxed);
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
}

/// One peer's share of a forwarded message.
struct Forward {
    peer: PeerRef,
    plain: bool,
    queues: Vec<Arc<str>>,
}

fn forward_to<'a>(forwards: &'a mut Vec<Forward>, peer: &PeerRef) -> &'a mut Forward {
    let index = match forwards.iter().position(|f| f.peer == *peer) {
        Some(index) => index,
        None => {
            forwards.push(Forward {
                peer: peer.clone(),
                plain: false,
                queues: Vec::new(),
            });
            forwards.len() - 1
        }
    };
    &mut forwards[index]
}

/// Routes messages for one publisher; see the module docs.
pub(crate) struct Router {
    server: Arc<ServerShared>,
    account: Arc<Account>,
    cache: MatchCache<SubRef>,
    /// Peers' interest, matched the same way.
    remote_cache: MatchCache<PeerRef>,
    /// Queue groups served locally by the message being routed: peers are
    /// not offered those.
    served_queues: Vec<Arc<str>>,
    /// Where the message being routed goes among peers.
    forwards: Vec<Forward>,
    /// Routers into the accounts this one's exports and imports lead to,
    /// made on first use.
    others: std::collections::HashMap<String, Box<Router>>,
    /// Set on those: a message that arrived through a link is not passed
    /// on through further links.
    imported: bool,
    flusher: Flusher,
    /// Receivers past their stall threshold after the last batch; only
    /// collected for a publisher that waits for them (`waits`).
    stalls: Vec<Arc<ClientShared>>,
    /// Whether the owner calls [`Router::wait_for_stalled`] (a client's
    /// reader); other routers must not collect stalls they never clear.
    waits: bool,
    batch_out_msgs: u64,
    batch_out_bytes: u64,
}

impl Router {
    /// A router for a client's reader, which waits for receivers that fall
    /// behind after each batch ([`Router::wait_for_stalled`]).
    pub(crate) fn for_publisher(server: Arc<ServerShared>, account: Arc<Account>) -> Self {
        let mut router = Self::new(server, account);
        router.waits = true;
        router
    }

    pub(crate) fn new(server: Arc<ServerShared>, account: Arc<Account>) -> Self {
        Self {
            server,
            account,
            cache: MatchCache::new(1024),
            remote_cache: MatchCache::new(1024),
            served_queues: Vec::new(),
            forwards: Vec::new(),
            others: std::collections::HashMap::new(),
            imported: false,
            flusher: Flusher::default(),
            stalls: Vec::new(),
            waits: false,
            batch_out_msgs: 0,
            batch_out_bytes: 0,
        }
    }

    /// Delivers a message to every plain subscriber and one member of each
    /// queue group; true if anyone subscribes to the subject. `origin` is the
    /// publishing connection and whether it wants its own messages (echo).
    pub(crate) fn route(
        &mut self,
        origin: Option<(&Arc<ClientShared>, bool)>,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        self.route_to(origin, subject, subject, reply, headers, payload)
    }

    /// Delivers to the subscribers of `deliver` a message that carries
    /// `subject`, as JetStream hands a stored message to a consumer's inbox.
    pub(crate) fn route_to(
        &mut self,
        origin: Option<(&Arc<ClientShared>, bool)>,
        deliver: &[u8],
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if self.account.links.has_responses() && deliver.starts_with(crate::imports::REPLY_PREFIX) {
            if let Some((importer, original)) = self.account.links.take_response(deliver) {
                return self
                    .other(&importer)
                    .route_to(None, &original, &original, reply, headers, payload);
            }
        }
        let linked = !self.imported && self.account.links.any();
        let Some(result) = self.lookup(deliver) else {
            return false;
        };
        let skip = origin.and_then(|(client, echo)| (!echo).then_some(client));
        for sub in &result.plain {
            self.deliver(skip, sub, subject, reply, headers, payload);
        }
        let clustered = self.account.has_remote();
        self.served_queues.clear();
        for group in &result.queues {
            // Start at a random member and take the first that accepts.
            let n = group.members.len();
            let start = fastrand::usize(..n);
            for i in 0..n {
                let member = &group.members[(start + i) % n];
                if self.deliver(skip, member, subject, reply, headers, payload) {
                    if clustered {
                        self.served_queues.push(group.name.clone());
                    }
                    break;
                }
            }
        }
        let mut interest = !result.is_empty();
        if clustered {
            interest |= self.forward(deliver, subject, reply, headers, payload);
        }
        if linked {
            interest |= self.follow_links(deliver, reply, headers, payload);
        }
        interest
    }

    /// The router into `account`, for messages crossing a link.
    fn other(&mut self, account: &Arc<Account>) -> &mut Router {
        let server = &self.server;
        self.others.entry(account.name.clone()).or_insert_with(|| {
            let mut router = Router::new(server.clone(), account.clone());
            router.imported = true;
            Box::new(router)
        })
    }

    /// Delivers a message published in this account to the accounts that
    /// import it: stream importers get a copy under their subject; a
    /// request matching an imported service goes to the exporting account
    /// with a reply subject that leads back here. True if anyone there has
    /// interest.
    fn follow_links(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let mut interest = false;
        let streams = self.account.links.streams_out.read().clone();
        for link in streams.iter().filter(|l| l.matches(subject)) {
            let local = link.local_subject(subject);
            interest |= self
                .other(&link.importer)
                .route_to(None, &local, &local, reply, headers, payload);
        }
        let services = self.account.links.services_in.read().clone();
        for link in services.iter().filter(|l| l.matches(subject)) {
            let remote = link.remote_subject(subject);
            let routed_reply = match reply {
                Some(reply) => {
                    match link.exporter.links.open_response(
                        &self.server.reply_token,
                        &self.account,
                        reply,
                        link.multiple(),
                    ) {
                        Some(r) => Some(r),
                        // The reply table is full: the reply could not
                        // come back, so the request is not sent.
                        None => continue,
                    }
                }
                None => None,
            };
            let answered = self.other(&link.exporter).route_to(
                None,
                &remote,
                &remote,
                routed_reply.as_deref(),
                headers,
                payload,
            );
            if !answered {
                // Nobody got the request: no reply will come.
                if let Some(reply) = &routed_reply {
                    link.exporter.links.close_response(reply);
                }
            }
            interest |= answered;
        }
        interest
    }

    /// Hands a message to the peers interested in it: every peer with a
    /// plain subscription, and for each queue group not served here one
    /// peer that has members. True if any peer has interest.
    fn forward(
        &mut self,
        deliver: &[u8],
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let Some(remote) = self.lookup_remote(deliver) else {
            return false;
        };
        if remote.is_empty() {
            return false;
        }
        self.forwards.clear();
        for peer in &remote.plain {
            forward_to(&mut self.forwards, peer).plain = true;
        }
        for group in &remote.queues {
            if self.served_queues.contains(&group.name) {
                continue;
            }
            // A random peer among those with members whose link is up.
            let n = group.members.len();
            let start = fastrand::usize(..n);
            if let Some(peer) = (0..n)
                .map(|i| &group.members[(start + i) % n])
                .find(|p| p.0.is_connected())
            {
                forward_to(&mut self.forwards, peer)
                    .queues
                    .push(group.name.clone());
            }
        }
        let display: &[u8] = if deliver == subject { b"" } else { subject };
        for forward in self.forwards.drain(..) {
            let queues: Vec<&str> = forward.queues.iter().map(|q| &**q).collect();
            forward.peer.0.send(&Forwarded {
                account: &self.account.name,
                subject: deliver,
                display_subject: display,
                reply: reply.unwrap_or_default(),
                headers: headers.unwrap_or_default(),
                payload,
                plain: forward.plain,
                queues: &queues,
            });
        }
        true
    }

    /// Delivers a message a peer forwarded: to local plain subscribers if
    /// the peer says so, and to one local member of each queue group it
    /// picked this node for. Never forwarded again.
    pub(crate) fn deliver_routed(&mut self, message: &Received<'_>) {
        // A reply to a service request this node sent across accounts.
        if self.account.links.has_responses()
            && message.subject.starts_with(crate::imports::REPLY_PREFIX)
        {
            if let Some((importer, original)) = self.account.links.take_response(message.subject) {
                self.other(&importer).route_to(
                    None,
                    &original,
                    &original,
                    message.reply,
                    message.headers,
                    message.payload,
                );
                return;
            }
        }
        let Some(result) = self.lookup(message.subject) else {
            return;
        };
        let shown = message.display_subject;
        // The server's own subscriptions (JetStream) are never announced to
        // peers, so nothing a peer forwards is for them.
        if message.plain {
            for sub in result.plain.iter().filter(|s| !s.client.is_internal()) {
                self.deliver(
                    None,
                    sub,
                    shown,
                    message.reply,
                    message.headers,
                    message.payload,
                );
            }
        }
        for queue in message.queues() {
            let Some(group) = result.queues.iter().find(|g| &*g.name == queue) else {
                continue;
            };
            let n = group.members.len();
            let start = fastrand::usize(..n);
            for i in 0..n {
                let member = &group.members[(start + i) % n];
                if member.client.is_internal() {
                    continue;
                }
                if self.deliver(
                    None,
                    member,
                    shown,
                    message.reply,
                    message.headers,
                    message.payload,
                ) {
                    break;
                }
            }
        }
    }

    /// Peers interested in `subject`, from the cache when it is current.
    fn lookup_remote(&mut self, subject: &[u8]) -> Option<Arc<MatchResult<PeerRef>>> {
        let generation = self.account.remote_generation();
        if let Some(hit) = self.remote_cache.get(subject, generation) {
            return Some(hit);
        }
        let (result, generation) = self
            .account
            .match_remote(std::str::from_utf8(subject).ok()?);
        self.remote_cache.offer(subject, generation, result.clone());
        Some(result)
    }

    /// Who gets a message on `subject`: from the cache when it is current,
    /// else from the sublist (and cached if the subject missed before: a
    /// reply inbox or an ack subject is published once). `None` for a
    /// subject that is not UTF-8, which no subscription can match.
    pub(crate) fn lookup(&mut self, subject: &[u8]) -> Option<Arc<MatchResult<SubRef>>> {
        let generation = self.account.generation();
        if let Some(hit) = self.cache.get(subject, generation) {
            return Some(hit);
        }
        let (result, generation) = self
            .account
            .match_subject(std::str::from_utf8(subject).ok()?);
        self.cache.offer(subject, generation, result.clone());
        Some(result)
    }

    /// Offers a message to one subscription; true if it was queued.
    /// Subscriptions of `skip` (a publisher with echo off) are passed over.
    fn deliver(
        &mut self,
        skip: Option<&Arc<ClientShared>>,
        sub: &SubRef,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if skip.is_some_and(|origin| Arc::ptr_eq(&sub.client, origin)) {
            return false;
        }
        if let Some(permissions) = &sub.filter {
            // A wildcard subscription that overlaps a denied subject.
            if !permissions.can_receive(&String::from_utf8_lossy(subject)) {
                return false;
            }
        }
        let max = sub.max.load(Ordering::Relaxed);
        let delivered = sub.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        if max > 0 && delivered > max {
            return false;
        }
        let outcome = sub
            .client
            .enqueue_msg(subject, &sub.sid, reply, headers, payload);
        match outcome {
            Enqueued::Queued(bytes) => {
                if let Some(reply) = reply {
                    if sub.client.tracks_responses.load(Ordering::Relaxed) {
                        if let Some(tracker) = sub.client.responses.lock().as_mut() {
                            tracker.on_request_delivered(
                                &String::from_utf8_lossy(reply),
                                std::time::Instant::now(),
                            );
                        }
                    }
                }
                self.flusher.note(&sub.client);
                self.batch_out_msgs += 1;
                self.batch_out_bytes += bytes;
            }
            Enqueued::SlowConsumer => {
                self.server
                    .stats
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    cid = sub.client.id,
                    addr = %sub.client.addr,
                    max_pending = self.server.opts.max_pending,
                    "slow consumer detected: pending bytes exceeded, closing connection"
                );
            }
            Enqueued::Closed => {}
        }
        if max > 0 && delivered == max {
            self.server.remove_subscription(&self.account, sub);
        }
        matches!(outcome, Enqueued::Queued(_))
    }

    /// Remembers that `client` has bytes queued and needs its writer woken.
    pub(crate) fn note(&mut self, client: &Arc<ClientShared>) {
        self.flusher.note(client);
    }

    /// Wakes every writer owed a wake-up now.
    pub(crate) fn flush(&mut self) {
        for other in self.others.values_mut() {
            other.flush();
        }
        self.flusher.flush_all();
    }

    /// Ends a batch: wakes writers, notes receivers to wait for, and adds the
    /// batch's delivery counters to the server's.
    pub(crate) fn finish_batch(&mut self) {
        // Receivers reached through account links are flushed but not
        // waited for (those routers do not collect stalls).
        for other in self.others.values_mut() {
            other.finish_batch();
        }
        if self.waits {
            self.flusher.flush_all_and_check(&mut self.stalls);
        } else {
            self.flusher.flush_all();
        }
        if self.batch_out_msgs > 0 {
            let stats = &self.server.stats;
            stats
                .out_msgs
                .fetch_add(self.batch_out_msgs, Ordering::Relaxed);
            stats
                .out_bytes
                .fetch_add(self.batch_out_bytes, Ordering::Relaxed);
            self.batch_out_msgs = 0;
            self.batch_out_bytes = 0;
        }
    }

    /// Holds the publisher back for receivers that fell behind in the last
    /// batch (see [`stall_for`]).
    pub(crate) async fn wait_for_stalled(&mut self) {
        if !self.stalls.is_empty() {
            stall_for(&self.stalls).await;
            self.stalls.clear();
        }
    }
}
