//! Consumers: configuration, info, the create request and the pull request
//! of `$JS.API.CONSUMER.*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::stream::{null_as_default, ClusterInfo, ConsumerLimits};
use super::time::Timestamp;
use super::{is_false, is_zero_i64, is_zero_u64, Paged, NANOS_PER_SECOND};

/// nats-server's default `ack_wait` for `explicit` and `all`: 30 s in nanoseconds.
pub const DEFAULT_ACK_WAIT: i64 = 30 * NANOS_PER_SECOND;
/// nats-server's default `max_ack_pending` when acks are required.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// nats-server's default `max_waiting` of pull consumers (`JSWaitQueueDefaultMax`).
pub const DEFAULT_MAX_WAITING: i64 = 512;
/// nats-server's `inactive_threshold` for ephemeral consumers that set none: 5 s.
pub const DEFAULT_EPHEMERAL_INACTIVE_THRESHOLD: i64 = 5 * NANOS_PER_SECOND;

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// From the first message.
    #[default]
    All,
    /// From the last message.
    Last,
    /// Only messages stored after creation.
    New,
    /// From `opt_start_seq`.
    ByStartSequence,
    /// From the first message at or after `opt_start_time`.
    ByStartTime,
    /// The last message of each subject, then new ones.
    LastPerSubject,
}

/// How deliveries are acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// No acks; Go's zero value, so the default when the field is absent.
    #[default]
    None,
    /// Acking a sequence acks all before it.
    All,
    /// Every message is acked on its own.
    Explicit,
}

/// Pace of redelivering stored messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    /// As fast as possible.
    #[default]
    Instant,
    /// At the pace they were stored.
    Original,
}

/// A consumer's configuration: `config` of [`CreateConsumerRequest`] and [`ConsumerInfo`].
///
/// Deserializing fills absent fields with Go's zero values;
/// [`ConsumerConfig::with_defaults`] then applies the server's defaults. Fields
/// are written in nats-server's order, left out where it leaves them out.
/// Durations are nanoseconds. An empty `deliver_subject` makes a pull consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    /// Durable name: set for durables, empty for ephemerals.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub durable_name: String,
    /// Consumer name (nats-server 2.9+).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Start position.
    #[serde(default)]
    pub deliver_policy: DeliverPolicy,
    /// Start sequence for `by_start_sequence`.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub opt_start_seq: u64,
    /// Start time for `by_start_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<Timestamp>,
    /// Ack policy.
    #[serde(default)]
    pub ack_policy: AckPolicy,
    /// Redeliver after this long without an ack.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ack_wait: i64,
    /// Deliveries per message; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_deliver: i64,
    /// Redelivery delays, one per attempt.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub backoff: Vec<i64>,
    /// Only this subject filter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Only these subject filters (2.10+).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub filter_subjects: Vec<String>,
    /// Replay pace.
    #[serde(default)]
    pub replay_policy: ReplayPolicy,
    /// Push delivery rate limit, bits per second.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rate_limit_bps: u64,
    /// Ack sampling, e.g. `"100%"` or `"30"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sample_freq: String,
    /// Pull requests that may wait at once.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_waiting: i64,
    /// Deliveries that may await an ack at once; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_ack_pending: i64,
    /// Push flow control.
    #[serde(default, skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Deliver headers only, with `Nats-Msg-Size`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
    /// Largest `batch` a pull request may ask for.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_batch: i64,
    /// Longest `expires` a pull request may ask for.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_expires: i64,
    /// Largest `max_bytes` a pull request may ask for.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_bytes: i64,
    /// Push: where messages are delivered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deliver_subject: String,
    /// Push: queue group of the subscribers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deliver_group: String,
    /// Push: idle heartbeat interval.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub idle_heartbeat: i64,
    /// Delete after this long without interest.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub inactive_threshold: i64,
    /// Replica count; 0 inherits the stream's.
    #[serde(default)]
    pub num_replicas: i64,
    /// Keep state in memory.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    /// User metadata.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub metadata: BTreeMap<String, String>,
    /// Paused until this time (2.11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_until: Option<Timestamp>,
}

impl ConsumerConfig {
    /// Whether this is a pull consumer (no `deliver_subject`).
    pub fn is_pull(&self) -> bool {
        self.deliver_subject.is_empty()
    }

    /// The subjects it takes (`filter_subjects`, then `filter_subject`);
    /// empty for all.
    pub fn filters(&self) -> Vec<&str> {
        let mut filters: Vec<&str> = self.filter_subjects.iter().map(String::as_str).collect();
        if !self.filter_subject.is_empty() {
            filters.push(&self.filter_subject);
        }
        filters
    }

    /// Whether this is a durable (nats-server: `durable_name` set).
    pub fn is_durable(&self) -> bool {
        !self.durable_name.is_empty()
    }

    /// The configuration with nats-server's defaults applied, as
    /// `setConsumerConfigDefaults` does (v2.14, without server or account
    /// limits), plus the ephemeral `inactive_threshold` stamped at creation:
    /// `max_deliver` -1; negative `max_waiting`, `max_batch`, `max_expires`,
    /// `max_bytes`, `idle_heartbeat`, `inactive_threshold` made 0; pull
    /// `max_waiting` 512; `ack_wait` 30 s for `explicit`/`all`, or the first
    /// `backoff`; `max_ack_pending` and `inactive_threshold` from the stream's
    /// `consumer_limits`, then `max_ack_pending` 1000 when acks are required;
    /// ephemerals' `inactive_threshold` 5 s.
    pub fn with_defaults(mut self, stream_limits: &ConsumerLimits) -> ConsumerConfig {
        if self.max_deliver == 0 || self.max_deliver < -1 {
            self.max_deliver = -1;
        }
        for value in [
            &mut self.max_waiting,
            &mut self.max_batch,
            &mut self.max_expires,
            &mut self.max_bytes,
            &mut self.idle_heartbeat,
            &mut self.inactive_threshold,
        ] {
            *value = (*value).max(0);
        }
        if self.max_ack_pending < -1 {
            self.max_ack_pending = -1;
        }
        if self.is_pull() && self.max_waiting == 0 {
            self.max_waiting = DEFAULT_MAX_WAITING;
        }
        if self.ack_wait == 0 && self.ack_policy != AckPolicy::None {
            self.ack_wait = DEFAULT_ACK_WAIT;
        }
        if let Some(&first) = self.backoff.first() {
            self.ack_wait = first;
        }
        if self.max_ack_pending == 0 {
            self.max_ack_pending = stream_limits.max_ack_pending;
        }
        if self.inactive_threshold == 0 {
            self.inactive_threshold = stream_limits.inactive_threshold;
        }
        if self.max_ack_pending == 0 && self.ack_policy != AckPolicy::None {
            self.max_ack_pending = DEFAULT_MAX_ACK_PENDING;
        }
        if !self.is_durable() && self.inactive_threshold == 0 {
            self.inactive_threshold = DEFAULT_EPHEMERAL_INACTIVE_THRESHOLD;
        }
        self
    }
}

/// What `CONSUMER.CREATE` may do: nats-server's `""`, `"create"`, `"update"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ConsumerAction {
    /// `""`: create, or update if it exists.
    #[default]
    CreateOrUpdate,
    /// `"create"`: fail if it exists with another configuration.
    Create,
    /// `"update"`: fail if it does not exist.
    Update,
}

impl ConsumerAction {
    /// The JSON string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerAction::CreateOrUpdate => "",
            ConsumerAction::Create => "create",
            ConsumerAction::Update => "update",
        }
    }
}

impl Serialize for ConsumerAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConsumerAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        match &*text {
            "" => Ok(ConsumerAction::CreateOrUpdate),
            "create" => Ok(ConsumerAction::Create),
            "update" => Ok(ConsumerAction::Update),
            other => Err(serde::de::Error::custom(format!(
                "unknown consumer action: {other:?}"
            ))),
        }
    }
}

/// Body of `CONSUMER.CREATE.<stream>[.<consumer>[.<filter>]]` and the legacy
/// `CONSUMER.DURABLE.CREATE.<stream>.<durable>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateConsumerRequest {
    /// Stream name; must match the subject.
    #[serde(default)]
    pub stream_name: String,
    /// The configuration.
    #[serde(default)]
    pub config: ConsumerConfig,
    /// Create, update or either.
    #[serde(default)]
    pub action: ConsumerAction,
    /// Refuse instead of silently correcting the configuration.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pedantic: bool,
}

/// A consumer and a stream sequence with the time of the last activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceInfo {
    /// Consumer sequence.
    #[serde(default)]
    pub consumer_seq: u64,
    /// Stream sequence.
    #[serde(default)]
    pub stream_seq: u64,
    /// Last delivery or ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active: Option<Timestamp>,
}

/// State of a consumer: the payload of `CONSUMER.CREATE` and `CONSUMER.INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// Stream consumed.
    pub stream_name: String,
    /// Consumer name.
    pub name: String,
    /// When it was created.
    #[serde(default)]
    pub created: Timestamp,
    /// Configuration, defaults applied.
    pub config: ConsumerConfig,
    /// Last delivered.
    #[serde(default)]
    pub delivered: SequenceInfo,
    /// Everything up to here is acknowledged.
    #[serde(default)]
    pub ack_floor: SequenceInfo,
    /// Delivered, not yet acknowledged.
    #[serde(default)]
    pub num_ack_pending: u64,
    /// Redelivered messages pending.
    #[serde(default)]
    pub num_redelivered: u64,
    /// Pull requests waiting.
    #[serde(default)]
    pub num_waiting: u64,
    /// Messages matching the filter not yet delivered.
    #[serde(default)]
    pub num_pending: u64,
    /// Leader and replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// Push: a subscriber is bound to the deliver subject.
    #[serde(default, skip_serializing_if = "is_false")]
    pub push_bound: bool,
    /// Paused (2.11).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Pause left, nanoseconds (2.11).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub pause_remaining: i64,
    /// When this info was gathered.
    #[serde(default)]
    pub ts: Timestamp,
}

/// `CONSUMER.NAMES` and `CONSUMER.LIST` request body (optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumersRequest {
    /// Page offset.
    #[serde(default)]
    pub offset: u64,
}

/// `CONSUMER.NAMES` response payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerNamesResponse {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// Names on this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub consumers: Vec<String>,
}

/// `CONSUMER.LIST` response payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerListResponse {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// Infos on this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub consumers: Vec<ConsumerInfo>,
    /// Consumers that did not answer (clustered).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub missing: Vec<String>,
}

/// Body of a pull request to `CONSUMER.MSG.NEXT.<stream>.<consumer>`.
///
/// Clients may also send an empty body (one message) or a bare number (that
/// many); [`NextRequest::parse`] reads all three. Extra fields clients send
/// (`min_pending`, `group`, … as `null`) are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRequest {
    /// Wait at most this long, nanoseconds; 0 waits until the batch is full.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub expires: i64,
    /// Messages wanted.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub batch: i64,
    /// Stop before exceeding this many bytes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_bytes: i64,
    /// Answer 404 at once instead of waiting when nothing is pending.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_wait: bool,
    /// Send a `100 Idle Heartbeat` this often while waiting, nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub idle_heartbeat: i64,
}

impl NextRequest {
    /// Reads a pull request body: empty means a batch of one, a bare integer
    /// is the batch size, anything else must be the JSON object.
    pub fn parse(body: &[u8]) -> Result<NextRequest, serde_json::Error> {
        let text = body.trim_ascii();
        if text.is_empty() {
            return Ok(NextRequest {
                batch: 1,
                ..NextRequest::default()
            });
        }
        if text.iter().all(u8::is_ascii_digit) {
            let batch: i64 = serde_json::from_slice(text)?;
            return Ok(NextRequest {
                batch,
                ..NextRequest::default()
            });
        }
        serde_json::from_slice(text)
    }

    /// The batch size to serve: at least one.
    pub fn effective_batch(&self) -> i64 {
        self.batch.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_pull_durable_gets_nats_server_defaults() {
        let req: CreateConsumerRequest = serde_json::from_str(
            r#"{"stream_name":"ORDERS","config":{"durable_name":"C","ack_policy":"explicit"}}"#,
        )
        .unwrap();
        assert_eq!(req.action, ConsumerAction::CreateOrUpdate);
        let cfg = req.config.with_defaults(&ConsumerLimits::default());
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            concat!(
                r#"{"durable_name":"C","deliver_policy":"all","ack_policy":"explicit","#,
                r#""ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","#,
                r#""max_waiting":512,"max_ack_pending":1000,"num_replicas":0}"#
            )
        );
    }

    #[test]
    fn push_ephemeral_defaults() {
        let cfg = ConsumerConfig {
            deliver_subject: "_INBOX.x".into(),
            backoff: vec![NANOS_PER_SECOND, 2 * NANOS_PER_SECOND],
            ack_policy: AckPolicy::All,
            ..Default::default()
        }
        .with_defaults(&ConsumerLimits {
            inactive_threshold: 0,
            max_ack_pending: 50,
        });
        assert_eq!(cfg.max_waiting, 0);
        assert_eq!(cfg.ack_wait, NANOS_PER_SECOND);
        assert_eq!(cfg.max_ack_pending, 50);
        assert_eq!(cfg.inactive_threshold, DEFAULT_EPHEMERAL_INACTIVE_THRESHOLD);
        let none = ConsumerConfig::default().with_defaults(&ConsumerLimits::default());
        assert_eq!((none.ack_wait, none.max_ack_pending), (0, 0));
    }

    #[test]
    fn enums_use_nats_server_strings() {
        let policies = [
            (DeliverPolicy::All, "all"),
            (DeliverPolicy::Last, "last"),
            (DeliverPolicy::New, "new"),
            (DeliverPolicy::ByStartSequence, "by_start_sequence"),
            (DeliverPolicy::ByStartTime, "by_start_time"),
            (DeliverPolicy::LastPerSubject, "last_per_subject"),
        ];
        for (policy, text) in policies {
            assert_eq!(serde_json::to_value(policy).unwrap(), text);
        }
        assert_eq!(
            serde_json::to_value(AckPolicy::Explicit).unwrap(),
            "explicit"
        );
        assert_eq!(
            serde_json::to_value(ReplayPolicy::Original).unwrap(),
            "original"
        );
        for action in [
            ConsumerAction::CreateOrUpdate,
            ConsumerAction::Create,
            ConsumerAction::Update,
        ] {
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(
                serde_json::from_str::<ConsumerAction>(&json).unwrap(),
                action
            );
        }
        assert!(serde_json::from_str::<ConsumerAction>(r#""upsert""#).is_err());
    }

    #[test]
    fn full_config_and_info_round_trip() {
        let cfg = ConsumerConfig {
            durable_name: "D".into(),
            name: "D".into(),
            description: "d".into(),
            deliver_policy: DeliverPolicy::ByStartTime,
            opt_start_seq: 0,
            opt_start_time: Some(Timestamp::from_unix_nanos(1_704_067_200_000_000_123)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: 10,
            max_deliver: 5,
            backoff: vec![1, 2, 3],
            filter_subject: String::new(),
            filter_subjects: vec!["a".into(), "b".into()],
            replay_policy: ReplayPolicy::Original,
            rate_limit_bps: 100,
            sample_freq: "50%".into(),
            max_waiting: 0,
            max_ack_pending: 7,
            flow_control: true,
            headers_only: true,
            max_batch: 0,
            max_expires: 0,
            max_bytes: 0,
            deliver_subject: "d.x".into(),
            deliver_group: "g".into(),
            idle_heartbeat: NANOS_PER_SECOND,
            inactive_threshold: 9,
            num_replicas: 1,
            mem_storage: true,
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            pause_until: Some(Timestamp::from_unix_nanos(5)),
        };
        let info = ConsumerInfo {
            stream_name: "S".into(),
            name: "D".into(),
            created: Timestamp::from_unix_nanos(1),
            config: cfg,
            delivered: SequenceInfo {
                consumer_seq: 3,
                stream_seq: 4,
                last_active: Some(Timestamp::from_unix_nanos(2)),
            },
            ack_floor: SequenceInfo {
                consumer_seq: 1,
                stream_seq: 2,
                last_active: None,
            },
            num_ack_pending: 2,
            num_redelivered: 1,
            num_waiting: 0,
            num_pending: 10,
            cluster: Some(ClusterInfo {
                leader: "n1".into(),
                ..Default::default()
            }),
            push_bound: true,
            paused: false,
            pause_remaining: 0,
            ts: Timestamp::from_unix_nanos(3),
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<ConsumerInfo>(&json).unwrap(), info);
    }

    #[test]
    fn next_request_body_forms() {
        assert_eq!(NextRequest::parse(b"").unwrap().batch, 1);
        assert_eq!(NextRequest::parse(b" 25 ").unwrap().batch, 25);
        let r = NextRequest::parse(
            br#"{"batch":10,"expires":5000000000,"no_wait":true,"max_bytes":0,"idle_heartbeat":0,"min_pending":null,"group":null}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            NextRequest {
                expires: 5_000_000_000,
                batch: 10,
                max_bytes: 0,
                no_wait: true,
                idle_heartbeat: 0
            }
        );
        assert_eq!(NextRequest::parse(b"{}").unwrap().effective_batch(), 1);
        assert!(NextRequest::parse(b"{").is_err());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"expires":5000000000,"batch":10,"no_wait":true}"#
        );
    }
}
