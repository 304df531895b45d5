//! Account information (`$JS.API.INFO`) and publish acknowledgements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::is_false;
use super::stream::null_as_default;

/// JetStream limits of an account; -1 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    /// Bytes of memory storage.
    pub max_memory: i64,
    /// Bytes of file storage.
    pub max_storage: i64,
    /// Streams.
    pub max_streams: i64,
    /// Consumers.
    pub max_consumers: i64,
    /// Largest `max_ack_pending` a consumer may set.
    pub max_ack_pending: i64,
    /// Largest `max_bytes` of a memory stream.
    pub memory_max_stream_bytes: i64,
    /// Largest `max_bytes` of a file stream.
    pub storage_max_stream_bytes: i64,
    /// Streams must set `max_bytes`.
    pub max_bytes_required: bool,
}

impl AccountLimits {
    /// No limits, what nats-server reports for an account without configured limits.
    pub const UNLIMITED: AccountLimits = AccountLimits {
        max_memory: -1,
        max_storage: -1,
        max_streams: -1,
        max_consumers: -1,
        max_ack_pending: -1,
        memory_max_stream_bytes: -1,
        storage_max_stream_bytes: -1,
        max_bytes_required: false,
    };
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits::UNLIMITED
    }
}

/// API call counters of an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    /// JetStream API level the server supports (2.11+).
    #[serde(default)]
    pub level: u32,
    /// Requests received.
    #[serde(default)]
    pub total: u64,
    /// Requests answered with an error.
    #[serde(default)]
    pub errors: u64,
    /// Requests in progress.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inflight: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Usage and limits of one replica tier (`R1`, `R3`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTier {
    /// Bytes of memory storage used.
    pub memory: u64,
    /// Bytes of file storage used.
    pub storage: u64,
    /// Bytes of memory reserved by `max_bytes`.
    pub reserved_memory: u64,
    /// Bytes of file storage reserved by `max_bytes`.
    pub reserved_storage: u64,
    /// Streams.
    pub streams: u64,
    /// Consumers.
    pub consumers: u64,
    /// Limits.
    pub limits: AccountLimits,
}

/// Payload of `$JS.API.INFO` (`account_info_response`), nats-server's
/// `JetStreamAccountStats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Bytes of memory storage used.
    pub memory: u64,
    /// Bytes of file storage used.
    pub storage: u64,
    /// Bytes of memory reserved by `max_bytes`.
    #[serde(default)]
    pub reserved_memory: u64,
    /// Bytes of file storage reserved by `max_bytes`.
    #[serde(default)]
    pub reserved_storage: u64,
    /// Streams.
    pub streams: u64,
    /// Consumers.
    pub consumers: u64,
    /// Limits.
    pub limits: AccountLimits,
    /// JetStream domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// API counters.
    #[serde(default)]
    pub api: ApiStats,
    /// Per-tier usage, when tiered limits are configured.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tiers: BTreeMap<String, AccountTier>,
}

/// A successful publish to a stream: `{"stream":"S","seq":5}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAck {
    /// Stream that stored the message.
    pub stream: String,
    /// Its sequence (0 on an error ack).
    #[serde(default)]
    pub seq: u64,
    /// JetStream domain; left out when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// The `Nats-Msg-Id` was seen within the duplicate window; left out when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

/// The reply to a publish into a stream: an ack, or an error with the stream
/// name and sequence 0 (`{"error":{…},"stream":"S","seq":0}`), as nats-server
/// writes it. Publish replies carry no `type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubAckResponse {
    /// Why the message was not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The ack (on error: stream name, sequence 0).
    #[serde(flatten)]
    pub ack: PubAck,
}

impl PubAckResponse {
    /// A successful ack.
    pub fn ok(ack: PubAck) -> PubAckResponse {
        PubAckResponse { error: None, ack }
    }

    /// A failed publish into `stream`.
    pub fn err(stream: impl Into<String>, error: ApiError) -> PubAckResponse {
        PubAckResponse {
            error: Some(error),
            ack: PubAck {
                stream: stream.into(),
                ..PubAck::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jetstream::ApiErrorCode;

    #[test]
    fn pub_ack_leaves_out_false_and_empty() {
        let ack = PubAck {
            stream: "S".into(),
            seq: 5,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"stream":"S","seq":5}"#
        );
        let dup = PubAck {
            duplicate: true,
            domain: "hub".into(),
            ..ack.clone()
        };
        let json = serde_json::to_string(&dup).unwrap();
        assert_eq!(
            json,
            r#"{"stream":"S","seq":5,"domain":"hub","duplicate":true}"#
        );
        assert_eq!(serde_json::from_str::<PubAck>(&json).unwrap(), dup);
        let ok = PubAckResponse::ok(ack);
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"stream":"S","seq":5}"#
        );
    }

    #[test]
    fn error_ack_shape() {
        let e = PubAckResponse::err("S", ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[&1]));
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"S","seq":0}"#
        );
        assert_eq!(serde_json::from_str::<PubAckResponse>(&json).unwrap(), e);
    }

    #[test]
    fn account_info_round_trips() {
        let info = AccountInfo {
            memory: 1,
            storage: 2,
            streams: 3,
            consumers: 4,
            api: ApiStats {
                level: 1,
                total: 10,
                errors: 1,
                inflight: 0,
            },
            tiers: BTreeMap::from([("R1".to_owned(), AccountTier::default())]),
            ..Default::default()
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<AccountInfo>(&json).unwrap(), info);
        assert!(json.contains(r#""limits":{"max_memory":-1,"max_storage":-1,"max_streams":-1"#));
    }
}
