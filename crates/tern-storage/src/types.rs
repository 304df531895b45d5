//! Values that cross the crate boundary: messages, limits, operations, state.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

/// One message as stored in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Stream sequence, from 1.
    pub seq: u64,
    /// Literal subject the message was published to.
    pub subject: Bytes,
    /// The NATS header block (`NATS/1.0\r\n...`), when the message had one.
    pub headers: Option<Bytes>,
    /// Payload bytes.
    pub payload: Bytes,
    /// Timestamp chosen by the stream leader, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
}

impl StoredMessage {
    /// The bytes this message counts against `max_bytes` and in
    /// [`StreamState::bytes`]: subject, headers and payload plus 16 for the
    /// sequence and timestamp (nats-server's memory-store accounting, used for
    /// both stores so they report the same figures).
    pub fn stored_size(&self) -> u64 {
        stored_size(&self.subject, self.headers.as_deref(), &self.payload)
    }
}

pub(crate) fn stored_size(subject: &[u8], headers: Option<&[u8]>, payload: &[u8]) -> u64 {
    (subject.len() + headers.map_or(0, <[u8]>::len) + payload.len() + 16) as u64
}

/// What a stream does when a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscardPolicy {
    /// Remove the oldest messages to make room (the default).
    #[default]
    Old,
    /// Reject the new message with a limit error.
    New,
}

/// The limits of a stream. `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamLimits {
    /// Most messages the stream holds.
    pub max_msgs: Option<u64>,
    /// Most bytes (by [`StoredMessage::stored_size`]) the stream holds.
    pub max_bytes: Option<u64>,
    /// Oldest a message may get before an [`StreamOp::ExpireBefore`] removes it.
    pub max_age: Option<Duration>,
    /// Most messages kept per subject; the oldest of the subject goes first
    /// unless `discard_new_per_subject` rejects the new one.
    pub max_msgs_per_subject: Option<u64>,
    /// Largest headers plus payload accepted.
    pub max_msg_size: Option<u64>,
    /// What happens at `max_msgs` / `max_bytes`.
    pub discard: DiscardPolicy,
    /// With [`DiscardPolicy::New`], also reject at `max_msgs_per_subject`
    /// instead of removing the subject's oldest message.
    pub discard_new_per_subject: bool,
}

impl StreamLimits {
    /// The cutoff for [`StreamOp::ExpireBefore`] at time `now_ns`, or `None`
    /// when the stream has no `max_age`.
    pub fn expiry_cutoff(&self, now_ns: u64) -> Option<u64> {
        let age = self.max_age?;
        let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        Some(now_ns.saturating_sub(age_ns))
    }
}

/// An append: the message plus optional expectations checked atomically
/// with it (nats-server's `Nats-Expected-Last-Sequence` and
/// `Nats-Expected-Last-Subject-Sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// Literal subject.
    pub subject: Bytes,
    /// Header block, if any.
    pub headers: Option<Bytes>,
    /// Payload.
    pub payload: Bytes,
    /// Timestamp chosen by the leader; apply never reads the clock.
    pub timestamp_ns: u64,
    /// Reject unless the stream's last sequence is this.
    pub expected_last_seq: Option<u64>,
    /// Reject unless the subject's last sequence is this (0: no message).
    pub expected_last_subject_seq: Option<u64>,
}

impl Append {
    /// An append without headers or expectations.
    pub fn new(subject: impl Into<Bytes>, payload: impl Into<Bytes>, timestamp_ns: u64) -> Self {
        Append {
            subject: subject.into(),
            headers: None,
            payload: payload.into(),
            timestamp_ns,
            expected_last_seq: None,
            expected_last_subject_seq: None,
        }
    }

    /// Sets the header block.
    pub fn with_headers(mut self, headers: impl Into<Bytes>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Requires the stream's last sequence to be `seq`.
    pub fn expect_last_seq(mut self, seq: u64) -> Self {
        self.expected_last_seq = Some(seq);
        self
    }

    /// Requires the subject's last sequence to be `seq` (0: no message yet).
    pub fn expect_last_subject_seq(mut self, seq: u64) -> Self {
        self.expected_last_subject_seq = Some(seq);
        self
    }
}

/// A purge, composed as nats-server composes `$JS.API.STREAM.PURGE`.
///
/// - no field: remove everything; the next append gets `last_seq + 1`;
/// - `filter`: only messages whose subject matches (wildcards allowed);
/// - `up_to_seq`: only messages with a sequence below it; without a filter a
///   value beyond `last_seq + 1` moves the sequence forward (`first_seq`
///   becomes `up_to_seq`);
/// - `keep`: leave the newest `keep` messages (of those matching the filter).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurgeRequest {
    /// Subject filter; `None`, empty or `>` means every message.
    pub filter: Option<Bytes>,
    /// Purge only sequences below this one.
    pub up_to_seq: Option<u64>,
    /// Keep this many newest messages.
    pub keep: Option<u64>,
}

/// Where a consumer stands in its stream. Sequences are stream sequences
/// unless named `consumer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerState {
    /// Last consumer sequence delivered.
    pub delivered_consumer_seq: u64,
    /// Stream sequence of the last delivery.
    pub delivered_stream_seq: u64,
    /// Consumer sequence below which everything is acknowledged.
    pub ack_floor_consumer_seq: u64,
    /// Stream sequence below which everything is acknowledged.
    pub ack_floor_stream_seq: u64,
    /// Delivered, unacknowledged messages: stream seq → (consumer seq, delivery time ns).
    pub pending: BTreeMap<u64, (u64, u64)>,
    /// Stream seq → number of redeliveries.
    pub redelivered: BTreeMap<u64, u64>,
}

/// A consumer as saved with the stream: the JetStream layer's opaque config
/// blob and the delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredConsumer {
    /// Opaque config bytes (empty until saved).
    pub config: Bytes,
    /// Delivery and ack state (default until saved).
    pub state: ConsumerState,
}

/// A deterministic mutation of a stream.
///
/// Applying the same operations in the same order to two empty stores gives
/// the same messages, sequences and state: every input, including the
/// timestamp of an append and the cutoff of an expiry, is inside the
/// operation, so a raft layer can log operations and apply them on every
/// replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOp {
    /// Store a message, enforcing the limits.
    Append(Append),
    /// Remove one message; `erase` also overwrites its bytes first.
    Delete {
        /// Sequence to remove.
        seq: u64,
        /// Overwrite the stored bytes before removal.
        erase: bool,
    },
    /// Remove messages, see [`PurgeRequest`].
    Purge(PurgeRequest),
    /// Remove messages from the front while their timestamp is below
    /// `timestamp_ns` (the server computes it with
    /// [`StreamLimits::expiry_cutoff`]).
    ExpireBefore {
        /// Cutoff in nanoseconds since the Unix epoch.
        timestamp_ns: u64,
    },
    /// Replace the limits and enforce them on what is stored.
    UpdateLimits(StreamLimits),
    /// Replace the stream's opaque config blob.
    SaveStreamConfig(Bytes),
    /// Replace a consumer's opaque config blob (creates the consumer).
    SaveConsumerConfig {
        /// Consumer name.
        name: String,
        /// Config bytes.
        config: Bytes,
    },
    /// Replace a consumer's delivery state (creates the consumer).
    SaveConsumerState {
        /// Consumer name.
        name: String,
        /// New state.
        state: ConsumerState,
    },
    /// Remove a consumer's config and state.
    DeleteConsumer {
        /// Consumer name.
        name: String,
    },
}

/// What an applied [`StreamOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The message got this sequence.
    Appended {
        /// Stream sequence.
        seq: u64,
        /// The append's timestamp.
        timestamp_ns: u64,
    },
    /// The message was removed.
    Deleted {
        /// Its sequence.
        seq: u64,
    },
    /// A purge removed this many messages.
    Purged {
        /// Messages removed.
        purged: u64,
    },
    /// An expiry removed this many messages.
    Expired {
        /// Messages removed.
        removed: u64,
    },
    /// New limits are in force; this many messages were removed to meet them.
    LimitsUpdated {
        /// Messages removed.
        removed: u64,
    },
    /// A config blob or consumer state was saved.
    Saved,
    /// A consumer was deleted.
    ConsumerDeleted {
        /// Whether it existed.
        existed: bool,
    },
}

impl OpResult {
    /// The sequence of an append or delete.
    pub fn seq(&self) -> Option<u64> {
        match self {
            OpResult::Appended { seq, .. } | OpResult::Deleted { seq } => Some(*seq),
            _ => None,
        }
    }
}

/// The figures of a stream (nats-server's `StreamState`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored, by [`StoredMessage::stored_size`].
    pub bytes: u64,
    /// Sequence of the oldest message; `last_seq + 1` when empty.
    pub first_seq: u64,
    /// Timestamp of the oldest message; 0 when empty.
    pub first_ts: u64,
    /// Highest sequence ever assigned (kept across purges).
    pub last_seq: u64,
    /// Timestamp of the last append.
    pub last_ts: u64,
    /// Distinct subjects stored.
    pub num_subjects: u64,
    /// Gaps between `first_seq` and `last_seq` (deleted interior messages).
    pub num_deleted: u64,
    /// Consumers saved with the stream.
    pub consumer_count: u64,
}

/// When an acknowledged write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every `apply_batch` ends with an fsync before it returns (the default):
    /// what it reports as applied survives power loss.
    #[default]
    Always,
    /// No fsync per batch; the database flushes in the background at this
    /// interval. Writes acknowledged within the last interval can be lost when
    /// the process or the machine dies (sled buffers writes in process memory).
    Interval(Duration),
}
