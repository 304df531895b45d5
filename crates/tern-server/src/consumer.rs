//! Pull consumers: which message a consumer hands out next, what is waiting
//! for an acknowledgement, and when it is delivered again. No I/O here; the
//! JetStream service reads messages from the store and sends them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use tern_protocol::jetstream::{AckPolicy, ConsumerConfig, DeliverPolicy, NextRequest};
use tern_storage::ConsumerState;

/// Bytes a flow-controlled push consumer sends between flow control requests.
pub(crate) const FLOW_CONTROL_BYTES: u64 = 256 * 1024;

/// A message handed out and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    /// The consumer sequence of its first delivery (nats-server keeps that
    /// one; the ack floor counts on it).
    pub(crate) consumer_seq: u64,
    /// How many times it has been delivered.
    pub(crate) deliveries: u64,
    /// When it is delivered again if not acknowledged (unix ns).
    pub(crate) deadline_ns: u64,
    /// When it was last delivered (unix ns; 0 if unknown, after a restart),
    /// for the ack time of `sample_freq` metrics.
    pub(crate) delivered_ns: u64,
}

/// A `MSG.NEXT` request still waiting for messages.
#[derive(Debug, Clone)]
pub(crate) struct PullRequest {
    pub(crate) reply: Bytes,
    pub(crate) remaining: u64,
    /// `max_bytes` of the request still available, if it set one.
    pub(crate) remaining_bytes: Option<u64>,
    pub(crate) no_wait: bool,
    pub(crate) expires_ns: Option<u64>,
    pub(crate) heartbeat_ns: Option<u64>,
    pub(crate) next_heartbeat_ns: u64,
    /// Whether anything was delivered to it (a `no_wait` request that got
    /// something ends quietly... with a 404 only when it got nothing).
    pub(crate) delivered: u64,
}

/// One consumer of a stream.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) name: String,
    pub(crate) config: ConsumerConfig,
    pub(crate) created_ns: i64,
    /// The next stream sequence to look at for new messages.
    pub(crate) next_seq: u64,
    pub(crate) delivered_consumer_seq: u64,
    pub(crate) delivered_stream_seq: u64,
    pub(crate) ack_floor_consumer_seq: u64,
    pub(crate) ack_floor_stream_seq: u64,
    pub(crate) pending: BTreeMap<u64, Pending>,
    /// Stream sequences due for redelivery, oldest first.
    pub(crate) redeliver: BTreeSet<u64>,
    pub(crate) waiting: VecDeque<PullRequest>,
    pub(crate) redelivered_count: u64,
    /// Unsaved changes to persist at the end of the turn.
    pub(crate) dirty: bool,
    /// Stream sequences to hand out before anything new: the last message
    /// of each subject, for `last_per_subject`.
    pub(crate) initial: BTreeSet<u64>,
    /// `last_per_subject`: the stream's last sequence at creation, which
    /// `initial` was taken up to (0 for other policies).
    pub(crate) initial_upto: u64,
    /// When the consumer last delivered, and last took an ack (unix ns; 0
    /// for never): the `last_active` of its info.
    pub(crate) last_delivery_ns: u64,
    pub(crate) last_ack_ns: u64,
    /// `rate_limit_bps` of a push consumer: bytes it may send now, and when
    /// that was worked out (unix ns).
    pub(crate) rate_tokens: f64,
    pub(crate) rate_updated_ns: u64,
    /// When the consumer last had interest or requests (unix ns), for
    /// removing idle ephemeral consumers.
    pub(crate) last_active_ns: u64,
    /// When a push consumer last sent something (unix ns), for heartbeats.
    pub(crate) last_sent_ns: u64,
    /// The reply subject of an unanswered flow control request: a push
    /// consumer with `flow_control` sends nothing more until it is answered.
    pub(crate) flow_control_pending: Option<String>,
    /// Bytes pushed since the last flow control request.
    pub(crate) bytes_since_flow_control: u64,
    flow_control_count: u64,
    /// For `replay_policy: original`: when replay started (unix ns) and the
    /// timestamp of the first message replayed.
    pub(crate) replay_origin: Option<(u64, u64)>,
}

/// How an acknowledgement body reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    Ack,
    Nak { delay_ns: Option<u64> },
    Progress,
    Term,
    Next,
}

impl AckKind {
    pub(crate) fn parse(body: &[u8]) -> Option<AckKind> {
        let text = body.trim_ascii();
        if text.is_empty() || text == b"+ACK" {
            return Some(AckKind::Ack);
        }
        if text.starts_with(b"-NAK") {
            let delay_ns = std::str::from_utf8(&text[4..])
                .ok()
                .and_then(|rest| serde_json::from_str::<serde_json::Value>(rest.trim()).ok())
                .and_then(|v| v.get("delay").and_then(serde_json::Value::as_u64));
            return Some(AckKind::Nak { delay_ns });
        }
        if text.starts_with(b"+WPI") {
            return Some(AckKind::Progress);
        }
        if text.starts_with(b"+TERM") {
            return Some(AckKind::Term);
        }
        if text.starts_with(b"+NXT") {
            return Some(AckKind::Next);
        }
        None
    }
}

impl Consumer {
    /// A new consumer starting where its deliver policy says, given the
    /// stream's first and last sequences and, for `by_start_time`, the first
    /// sequence at or after that time.
    pub(crate) fn new(
        name: String,
        config: ConsumerConfig,
        created_ns: i64,
        first_seq: u64,
        last_seq: u64,
        seq_for_time: Option<u64>,
    ) -> Consumer {
        let next_seq = match config.deliver_policy {
            DeliverPolicy::All | DeliverPolicy::LastPerSubject => first_seq.max(1),
            DeliverPolicy::Last => last_seq.max(1),
            DeliverPolicy::New => last_seq + 1,
            DeliverPolicy::ByStartSequence => config.opt_start_seq.max(1),
            DeliverPolicy::ByStartTime => seq_for_time.unwrap_or(last_seq + 1),
        };
        Consumer {
            name,
            config,
            created_ns,
            next_seq,
            delivered_consumer_seq: 0,
            delivered_stream_seq: next_seq.saturating_sub(1),
            ack_floor_consumer_seq: 0,
            // Nothing acked yet: 0, whatever the start (as nats-server).
            ack_floor_stream_seq: 0,
            pending: BTreeMap::new(),
            redeliver: BTreeSet::new(),
            waiting: VecDeque::new(),
            redelivered_count: 0,
            dirty: true,
            initial: BTreeSet::new(),
            initial_upto: 0,
            last_delivery_ns: 0,
            last_ack_ns: 0,
            rate_tokens: 0.0,
            rate_updated_ns: 0,
            last_active_ns: u64::try_from(created_ns).unwrap_or(0),
            last_sent_ns: u64::try_from(created_ns).unwrap_or(0),
            flow_control_pending: None,
            bytes_since_flow_control: 0,
            flow_control_count: 0,
            replay_origin: None,
        }
    }

    /// A consumer reloaded from its saved state.
    pub(crate) fn restore(
        name: String,
        config: ConsumerConfig,
        created_ns: i64,
        state: &ConsumerState,
    ) -> Consumer {
        let mut consumer = Consumer::new(name, config, created_ns, 1, 0, None);
        consumer.delivered_consumer_seq = state.delivered_consumer_seq;
        consumer.delivered_stream_seq = state.delivered_stream_seq;
        consumer.ack_floor_consumer_seq = state.ack_floor_consumer_seq;
        consumer.ack_floor_stream_seq = state.ack_floor_stream_seq;
        consumer.next_seq = state.delivered_stream_seq + 1;
        for (&seq, &(consumer_seq, _ts)) in &state.pending {
            let deliveries = state.redelivered.get(&seq).copied().unwrap_or(0) + 1;
            consumer.pending.insert(
                seq,
                Pending {
                    consumer_seq,
                    deliveries,
                    deadline_ns: 0,
                    delivered_ns: 0,
                },
            );
            // Everything unacknowledged at shutdown is due again, but what
            // reached `max_deliver` is left to `expire_pending` to give up on.
            let max = consumer.config.max_deliver;
            if max <= 0 || deliveries < max as u64 {
                consumer.redeliver.insert(seq);
            }
        }
        consumer.dirty = false;
        consumer
    }

    /// The state to persist.
    pub(crate) fn state(&self) -> ConsumerState {
        ConsumerState {
            delivered_consumer_seq: self.delivered_consumer_seq,
            delivered_stream_seq: self.delivered_stream_seq,
            ack_floor_consumer_seq: self.ack_floor_consumer_seq,
            ack_floor_stream_seq: self.ack_floor_stream_seq,
            pending: self
                .pending
                .iter()
                .map(|(&s, p)| (s, (p.consumer_seq, p.deadline_ns)))
                .collect(),
            redelivered: self
                .pending
                .iter()
                .filter(|(_, p)| p.deliveries > 1)
                .map(|(&s, p)| (s, p.deliveries - 1))
                .collect(),
        }
    }

    /// Whether messages are pushed to a deliver subject (rather than pulled).
    pub(crate) fn is_push(&self) -> bool {
        !self.config.deliver_subject.is_empty()
    }

    /// Durable consumers are saved and outlive their clients; ephemeral ones
    /// go when nobody uses them for `inactive_threshold`.
    pub(crate) fn is_durable(&self) -> bool {
        !self.config.durable_name.is_empty()
    }

    pub(crate) fn acks_required(&self) -> bool {
        self.config.ack_policy != AckPolicy::None
    }

    /// The subjects this consumer takes (`filter_subject(s)`), empty for all.
    pub(crate) fn filters(&self) -> Vec<&str> {
        self.config.filters()
    }

    /// Whether `rate_limit_bps` lets a push of `bytes` go now; takes them if
    /// so. The bucket holds a second's worth, at least `burst` bytes (the
    /// largest message a client can publish), and starts full.
    pub(crate) fn rate_allows(&mut self, bytes: u64, now_ns: u64, burst: u64) -> bool {
        let bps = self.config.rate_limit_bps;
        if bps == 0 {
            return true;
        }
        let per_second = bps as f64 / 8.0;
        let capacity = per_second.max(burst as f64);
        if self.rate_updated_ns == 0 {
            self.rate_tokens = capacity;
        } else {
            let elapsed = now_ns.saturating_sub(self.rate_updated_ns) as f64 / 1e9;
            self.rate_tokens = (self.rate_tokens + elapsed * per_second).min(capacity);
        }
        self.rate_updated_ns = now_ns;
        if self.rate_tokens >= bytes as f64 {
            self.rate_tokens -= bytes as f64;
            true
        } else {
            false
        }
    }

    /// Whether `sample_freq` picks this ack for a metric (`"50%"` or `"50"`).
    pub(crate) fn samples_ack(&self) -> bool {
        if self.config.sample_freq.is_empty() {
            return false;
        }
        let text = self.config.sample_freq.trim().trim_end_matches('%');
        match text.parse::<u32>() {
            Ok(0) | Err(_) => false,
            Ok(p) if p >= 100 => true,
            Ok(p) => fastrand::u32(0..100) < p,
        }
    }

    /// Whether the consumer's filters take `subject` (no filter: all).
    pub(crate) fn takes(&self, subject: &[u8]) -> bool {
        let filters = self.filters();
        filters.is_empty()
            || filters
                .iter()
                .any(|f| tern_protocol::subject::matches(f.as_bytes(), subject))
    }

    /// Puts back a message [`crate::jetstream`]'s `next_for` handed out but
    /// that is not sent now: to redelivery if it was pending, else where
    /// the walk was (`next_before`), or back among the last messages.
    pub(crate) fn put_back(&mut self, seq: u64, next_before: u64) {
        if self.pending.contains_key(&seq) {
            self.redeliver.insert(seq);
        } else if seq >= next_before {
            self.next_seq = seq;
        } else {
            self.initial.insert(seq);
        }
    }

    /// Whether `max_ack_pending` lets another message out.
    pub(crate) fn can_deliver_more(&self) -> bool {
        !self.acks_required()
            || self.config.max_ack_pending <= 0
            || (self.pending.len() as i64) < self.config.max_ack_pending
    }

    /// The ack wait before the `deliveries`-th redelivery (backoff aware).
    pub(crate) fn ack_wait_ns(&self, deliveries: u64) -> u64 {
        let backoff = &self.config.backoff;
        let wait = if backoff.is_empty() {
            self.config.ack_wait
        } else {
            let i = (deliveries.saturating_sub(1) as usize).min(backoff.len() - 1);
            backoff[i]
        };
        u64::try_from(wait).unwrap_or(30_000_000_000)
    }

    /// Records a delivery of stream sequence `seq`; returns (consumer seq,
    /// delivery count).
    pub(crate) fn record_delivery(&mut self, seq: u64, now_ns: u64) -> (u64, u64) {
        self.delivered_consumer_seq += 1;
        let consumer_seq = self.delivered_consumer_seq;
        self.dirty = true;
        self.last_delivery_ns = now_ns;
        let redelivery = self.pending.get(&seq).map_or(0, |p| p.deliveries);
        let deliveries = redelivery + 1;
        if redelivery > 0 {
            self.redelivered_count += 1;
        }
        if seq > self.delivered_stream_seq {
            self.delivered_stream_seq = seq;
        }
        if self.acks_required() {
            let deadline_ns = now_ns.saturating_add(self.ack_wait_ns(deliveries));
            // A redelivery keeps the first delivery's consumer sequence, as
            // nats-server's pending list does: the ack floor counts on it.
            let first_consumer_seq = self
                .pending
                .get(&seq)
                .map_or(consumer_seq, |p| p.consumer_seq);
            self.pending.insert(
                seq,
                Pending {
                    consumer_seq: first_consumer_seq,
                    deliveries,
                    deadline_ns,
                    delivered_ns: now_ns,
                },
            );
        } else {
            self.ack_floor_consumer_seq = consumer_seq;
            self.ack_floor_stream_seq = seq;
        }
        (consumer_seq, deliveries)
    }

    /// Applies an acknowledgement of stream sequence `seq`, whose ack subject
    /// named consumer sequence `delivery_seq`. Returns the sequences it
    /// finished with (acked or terminated): `seq`, and under ack policy `all`
    /// every pending one below it; empty for the others.
    pub(crate) fn on_ack(
        &mut self,
        seq: u64,
        kind: AckKind,
        now_ns: u64,
        delivery_seq: u64,
    ) -> Vec<u64> {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return Vec::new();
        };
        self.dirty = true;
        match kind {
            AckKind::Ack | AckKind::Next | AckKind::Term => {
                self.last_ack_ns = now_ns;
                if self.config.ack_policy == AckPolicy::All {
                    // Everything up to it, and the floor straight to it, as
                    // nats-server does; an ack at or below the floor (by
                    // either sequence) changes nothing there either.
                    if delivery_seq <= self.ack_floor_consumer_seq
                        || seq <= self.ack_floor_stream_seq
                    {
                        return Vec::new();
                    }
                    let done: Vec<u64> = self.pending.range(..=seq).map(|(&s, _)| s).collect();
                    for &s in &done {
                        self.pending.remove(&s);
                        self.redeliver.remove(&s);
                    }
                    self.ack_floor_stream_seq = seq;
                    self.ack_floor_consumer_seq = delivery_seq;
                    return done;
                }
                self.redeliver.remove(&seq);
                if let Some(p) = self.pending.remove(&seq) {
                    self.floor_after_ack(p.consumer_seq, seq);
                }
                vec![seq]
            }
            AckKind::Nak { delay_ns } => {
                let exhausted = self.config.max_deliver > 0
                    && pending.deliveries >= self.config.max_deliver as u64;
                match delay_ns {
                    Some(delay) if delay > 0 => pending.deadline_ns = now_ns.saturating_add(delay),
                    // Due now. At `max_deliver` it is left to
                    // `expire_pending`, which gives up on it, rather than
                    // delivered once more.
                    _ if exhausted => pending.deadline_ns = now_ns,
                    _ => {
                        pending.deadline_ns = now_ns;
                        self.redeliver.insert(seq);
                    }
                }
                Vec::new()
            }
            AckKind::Progress => {
                let deliveries = pending.deliveries;
                let wait = self.ack_wait_ns(deliveries);
                if let Some(pending) = self.pending.get_mut(&seq) {
                    pending.deadline_ns = now_ns.saturating_add(wait);
                }
                Vec::new()
            }
        }
    }

    /// The ack floor is the last sequence below which everything is acked.
    pub(crate) fn advance_ack_floor(&mut self) {
        // Without an ack (a message given up on, or gone): the floor moves
        // only once nothing is pending.
        if self.pending.is_empty() {
            self.ack_floor_consumer_seq = self.delivered_consumer_seq;
            self.ack_floor_stream_seq = self.delivered_stream_seq;
        }
    }

    /// The ack floor after the delivery `consumer_seq` of stream sequence
    /// `seq` was acked, as nats-server moves it: everything delivered once
    /// nothing is pending; else, when the ack is the one right above the
    /// floor, up to just below the next pending message.
    fn floor_after_ack(&mut self, consumer_seq: u64, seq: u64) {
        if self.pending.is_empty() {
            self.ack_floor_consumer_seq = self.delivered_consumer_seq;
            self.ack_floor_stream_seq = self.delivered_stream_seq;
        } else if consumer_seq == self.ack_floor_consumer_seq + 1 {
            self.ack_floor_consumer_seq = consumer_seq;
            self.ack_floor_stream_seq = seq;
            if let Some((&next, p)) = self.pending.range(seq + 1..).next() {
                if p.consumer_seq > 0 {
                    self.ack_floor_consumer_seq = p.consumer_seq - 1;
                    self.ack_floor_stream_seq = next - 1;
                }
            }
        }
    }

    /// Moves messages whose ack wait passed to the redelivery queue; returns
    /// those that reached `max_deliver` (they are dropped from pending).
    pub(crate) fn expire_pending(&mut self, now_ns: u64) -> Vec<u64> {
        let mut exhausted = Vec::new();
        let max = self.config.max_deliver;
        for (&seq, p) in &self.pending {
            if p.deadline_ns <= now_ns && !self.redeliver.contains(&seq) {
                if max > 0 && p.deliveries >= max as u64 {
                    exhausted.push(seq);
                } else {
                    self.redeliver.insert(seq);
                }
            }
        }
        for seq in &exhausted {
            self.pending.remove(seq);
        }
        if !exhausted.is_empty() {
            self.advance_ack_floor();
            self.dirty = true;
        }
        exhausted
    }

    /// After pushing `bytes`, whether a flow control request is due; returns
    /// its reply subject (and remembers it as outstanding).
    pub(crate) fn flow_control_due(&mut self, stream: &str, bytes: u64) -> Option<String> {
        if !self.config.flow_control {
            return None;
        }
        self.bytes_since_flow_control += bytes;
        if self.bytes_since_flow_control < FLOW_CONTROL_BYTES || self.flow_control_pending.is_some()
        {
            return None;
        }
        self.bytes_since_flow_control = 0;
        self.flow_control_count += 1;
        let reply = format!("$JS.FC.{stream}.{}.{}", self.name, self.flow_control_count);
        self.flow_control_pending = Some(reply.clone());
        Some(reply)
    }

    /// Queues a pull request; returns false if `max_waiting` is reached.
    pub(crate) fn add_request(&mut self, reply: Bytes, request: &NextRequest, now_ns: u64) -> bool {
        // Requests come from the network: always bounded, 512 (nats-server's
        // default) when the configuration sets no positive limit.
        let max_waiting = if self.config.max_waiting > 0 {
            self.config.max_waiting
        } else {
            512
        };
        if self.waiting.len() as i64 >= max_waiting {
            return false;
        }
        let positive = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
        let heartbeat_ns = positive(request.idle_heartbeat);
        self.waiting.push_back(PullRequest {
            reply,
            remaining: positive(request.batch).unwrap_or(1),
            remaining_bytes: positive(request.max_bytes),
            no_wait: request.no_wait,
            expires_ns: positive(request.expires).map(|e| now_ns + e),
            heartbeat_ns,
            next_heartbeat_ns: heartbeat_ns.map_or(0, |h| now_ns + h),
            delivered: 0,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(ack: AckPolicy) -> Consumer {
        let config = ConsumerConfig {
            durable_name: "c".into(),
            ack_policy: ack,
            ack_wait: 1_000,
            max_deliver: 3,
            ..ConsumerConfig::default()
        };
        Consumer::new("c".into(), config, 0, 1, 10, None)
    }

    #[test]
    fn ack_kinds() {
        assert_eq!(AckKind::parse(b""), Some(AckKind::Ack));
        assert_eq!(AckKind::parse(b"+ACK"), Some(AckKind::Ack));
        assert_eq!(
            AckKind::parse(b"-NAK"),
            Some(AckKind::Nak { delay_ns: None })
        );
        assert_eq!(
            AckKind::parse(b"-NAK {\"delay\": 5000}"),
            Some(AckKind::Nak {
                delay_ns: Some(5000)
            })
        );
        assert_eq!(AckKind::parse(b"+WPI"), Some(AckKind::Progress));
        assert_eq!(AckKind::parse(b"+TERM reason"), Some(AckKind::Term));
        assert_eq!(AckKind::parse(b"+NXT {\"batch\":2}"), Some(AckKind::Next));
        assert_eq!(AckKind::parse(b"junk"), None);
    }

    #[test]
    fn explicit_acks_move_the_floor_and_redeliver_after_ack_wait() {
        let mut c = consumer(AckPolicy::Explicit);
        c.record_delivery(1, 0);
        c.record_delivery(2, 0);
        assert_eq!(c.on_ack(2, AckKind::Ack, 10, 2), [2]);
        assert_eq!(c.ack_floor_stream_seq, 0, "1 is still pending");
        assert!(c.expire_pending(500).is_empty());
        assert!(c.redeliver.is_empty());
        c.expire_pending(1_001);
        assert!(c.redeliver.contains(&1));
        // Redelivered twice more, then max_deliver is reached.
        c.redeliver.clear();
        c.record_delivery(1, 1_001);
        c.expire_pending(3_000);
        c.redeliver.clear();
        c.record_delivery(1, 3_000);
        assert_eq!(c.expire_pending(10_000), vec![1]);
        assert!(c.pending.is_empty());
        assert_eq!(c.ack_floor_stream_seq, 2);
    }

    #[test]
    fn ack_all_acks_everything_below() {
        let mut c = consumer(AckPolicy::All);
        for seq in 1..=3 {
            c.record_delivery(seq, 0);
        }
        assert_eq!(c.on_ack(2, AckKind::Ack, 0, 2), [1, 2]);
        assert_eq!(c.pending.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(c.ack_floor_stream_seq, 2);
    }

    #[test]
    fn a_nak_at_max_deliver_gives_up_instead_of_redelivering() {
        let mut c = consumer(AckPolicy::Explicit);
        for round in 1..=3u64 {
            c.redeliver.clear();
            c.record_delivery(1, round);
            assert!(c
                .on_ack(1, AckKind::Nak { delay_ns: None }, round, round)
                .is_empty());
            assert_eq!(c.redeliver.contains(&1), round < 3, "round {round}");
        }
        assert_eq!(c.expire_pending(3), vec![1]);
        assert!(c.pending.is_empty());
    }

    #[test]
    fn a_restored_message_at_max_deliver_is_not_redelivered() {
        let mut c = consumer(AckPolicy::Explicit);
        for at in 0..3 {
            c.redeliver.clear();
            c.record_delivery(1, at);
        }
        c.record_delivery(2, 3);
        let state = c.state();
        let mut back = Consumer::restore("c".into(), c.config.clone(), 0, &state);
        assert_eq!(back.redeliver.iter().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(back.expire_pending(10), vec![1]);
    }

    #[test]
    fn the_ack_floor_moves_past_a_redelivered_message_as_nats_servers_does() {
        let mut c = consumer(AckPolicy::Explicit);
        for seq in 1..=3 {
            c.record_delivery(seq, 0);
        }
        // 1 comes again as delivery 4; acked there, then 2.
        c.on_ack(1, AckKind::Nak { delay_ns: None }, 1, 1);
        c.redeliver.clear();
        let (consumer_seq, deliveries) = c.record_delivery(1, 2);
        assert_eq!((consumer_seq, deliveries), (4, 2));
        c.on_ack(1, AckKind::Ack, 3, 4);
        assert_eq!((c.ack_floor_consumer_seq, c.ack_floor_stream_seq), (1, 1));
        c.on_ack(2, AckKind::Ack, 3, 2);
        assert_eq!((c.ack_floor_consumer_seq, c.ack_floor_stream_seq), (2, 2));
        c.on_ack(3, AckKind::Ack, 3, 3);
        assert_eq!((c.ack_floor_consumer_seq, c.ack_floor_stream_seq), (4, 3));
        // Ack all: the floor goes straight to the acked delivery.
        let mut all = consumer(AckPolicy::All);
        for seq in 1..=4 {
            all.record_delivery(seq, 0);
        }
        all.pending.remove(&1);
        assert_eq!(all.on_ack(3, AckKind::Ack, 1, 3), [2, 3]);
        assert_eq!(
            (all.ack_floor_consumer_seq, all.ack_floor_stream_seq),
            (3, 3)
        );
    }

    #[test]
    fn nak_redelivers_now_and_term_finishes() {
        let mut c = consumer(AckPolicy::Explicit);
        c.record_delivery(1, 0);
        c.record_delivery(2, 0);
        assert!(c
            .on_ack(1, AckKind::Nak { delay_ns: None }, 5, 1)
            .is_empty());
        assert!(c.redeliver.contains(&1));
        assert_eq!(c.on_ack(2, AckKind::Term, 5, 2), [2]);
        assert!(!c.pending.contains_key(&2));
    }
}
