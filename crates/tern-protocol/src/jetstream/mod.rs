//! The JSON of the JetStream API (`$JS.API.*`), field for field as nats-server
//! writes and reads it.
//!
//! Every type here serializes with nats-server's field names, enum strings and
//! omission rules (Go's `omitempty` becomes `skip_serializing_if`), and
//! deserializes absent fields to Go's zero values, so a request a client
//! wrote for nats-server parses and a response Tern writes is one the client
//! already understands. Server defaults are applied explicitly by
//! [`StreamConfig::with_defaults`] and [`ConsumerConfig::with_defaults`].
//!
//! Conventions: durations are `i64` nanoseconds (Go's `time.Duration`); times
//! are [`Timestamp`]s, written as RFC 3339 with nanoseconds; byte payloads in
//! JSON are base64.
//!
//! Responses are wrapped in [`ApiResponse`], which adds the `type` field and
//! carries either the payload or an [`ApiError`]. Publish acknowledgements
//! ([`PubAckResponse`]) have no `type`.

mod account;
mod base64;
mod consumer;
mod error;
mod stream;
mod time;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use account::{AccountInfo, AccountLimits, AccountTier, ApiStats, PubAck, PubAckResponse};
pub use consumer::{
    AckPolicy, ConsumerAction, ConsumerConfig, ConsumerInfo, ConsumerListResponse,
    ConsumerNamesResponse, ConsumersRequest, CreateConsumerRequest, DeliverPolicy, NextRequest,
    ReplayPolicy, SequenceInfo, DEFAULT_ACK_WAIT, DEFAULT_EPHEMERAL_INACTIVE_THRESHOLD,
    DEFAULT_MAX_ACK_PENDING, DEFAULT_MAX_WAITING,
};
pub use error::{store_error, ApiError, ApiErrorCode};
pub use stream::{
    ClusterInfo, Compression, ConsumerLimits, DirectGetRequest, DiscardPolicy, ExternalStream,
    LostStreamData, MsgDeleteRequest, MsgGetRequest, MsgGetResponse, PeerInfo, Placement,
    Republish, RetentionPolicy, StorageType, StoredMessage, StreamConfig, StreamInfo,
    StreamInfoRequest, StreamInfoResponse, StreamListRequest, StreamListResponse,
    StreamNamesRequest, StreamNamesResponse, StreamPurgeRequest, StreamPurgeResponse, StreamSource,
    StreamSourceInfo, StreamState, SubjectTransform, SuccessResponse, DEFAULT_DUPLICATE_WINDOW,
};
pub use time::{rfc3339_to_unix_nanos, unix_nanos_to_rfc3339, Timestamp, TimestampError};

/// One second in the nanoseconds every JetStream duration is written in.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Page size nats-server uses for `STREAM.NAMES` and `CONSUMER.NAMES` (`JSApiNamesLimit`).
pub const NAMES_PAGE_LIMIT: u64 = 1024;
/// Page size nats-server uses for `STREAM.LIST` and `CONSUMER.LIST` (`JSApiListLimit`).
pub const LIST_PAGE_LIMIT: u64 = 256;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Paging of list responses; nats-server always writes all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paged {
    /// Items in all pages.
    #[serde(default)]
    pub total: u64,
    /// Index of the first item of this page.
    #[serde(default)]
    pub offset: u64,
    /// Page size.
    #[serde(default)]
    pub limit: u64,
}

/// The `type` of a JetStream API response: `io.nats.jetstream.api.v1.<x>_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseType {
    /// `INFO`.
    AccountInfo,
    /// `STREAM.CREATE`.
    StreamCreate,
    /// `STREAM.UPDATE`.
    StreamUpdate,
    /// `STREAM.INFO`.
    StreamInfo,
    /// `STREAM.LIST`.
    StreamList,
    /// `STREAM.NAMES`.
    StreamNames,
    /// `STREAM.DELETE`.
    StreamDelete,
    /// `STREAM.PURGE`.
    StreamPurge,
    /// `STREAM.MSG.GET`.
    StreamMsgGet,
    /// `STREAM.MSG.DELETE`.
    StreamMsgDelete,
    /// `CONSUMER.CREATE` and `CONSUMER.DURABLE.CREATE`.
    ConsumerCreate,
    /// `CONSUMER.INFO`.
    ConsumerInfo,
    /// `CONSUMER.LIST`.
    ConsumerList,
    /// `CONSUMER.NAMES`.
    ConsumerNames,
    /// `CONSUMER.DELETE`.
    ConsumerDelete,
}

impl ResponseType {
    const ALL: [ResponseType; 15] = [
        ResponseType::AccountInfo,
        ResponseType::StreamCreate,
        ResponseType::StreamUpdate,
        ResponseType::StreamInfo,
        ResponseType::StreamList,
        ResponseType::StreamNames,
        ResponseType::StreamDelete,
        ResponseType::StreamPurge,
        ResponseType::StreamMsgGet,
        ResponseType::StreamMsgDelete,
        ResponseType::ConsumerCreate,
        ResponseType::ConsumerInfo,
        ResponseType::ConsumerList,
        ResponseType::ConsumerNames,
        ResponseType::ConsumerDelete,
    ];

    /// The full `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::AccountInfo => "io.nats.jetstream.api.v1.account_info_response",
            ResponseType::StreamCreate => "io.nats.jetstream.api.v1.stream_create_response",
            ResponseType::StreamUpdate => "io.nats.jetstream.api.v1.stream_update_response",
            ResponseType::StreamInfo => "io.nats.jetstream.api.v1.stream_info_response",
            ResponseType::StreamList => "io.nats.jetstream.api.v1.stream_list_response",
            ResponseType::StreamNames => "io.nats.jetstream.api.v1.stream_names_response",
            ResponseType::StreamDelete => "io.nats.jetstream.api.v1.stream_delete_response",
            ResponseType::StreamPurge => "io.nats.jetstream.api.v1.stream_purge_response",
            ResponseType::StreamMsgGet => "io.nats.jetstream.api.v1.stream_msg_get_response",
            ResponseType::StreamMsgDelete => "io.nats.jetstream.api.v1.stream_msg_delete_response",
            ResponseType::ConsumerCreate => "io.nats.jetstream.api.v1.consumer_create_response",
            ResponseType::ConsumerInfo => "io.nats.jetstream.api.v1.consumer_info_response",
            ResponseType::ConsumerList => "io.nats.jetstream.api.v1.consumer_list_response",
            ResponseType::ConsumerNames => "io.nats.jetstream.api.v1.consumer_names_response",
            ResponseType::ConsumerDelete => "io.nats.jetstream.api.v1.consumer_delete_response",
        }
    }
}

impl fmt::Display for ResponseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `type` string this crate does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown JetStream response type: {0:?}")]
pub struct UnknownResponseType(pub String);

impl FromStr for ResponseType {
    type Err = UnknownResponseType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResponseType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownResponseType(s.to_owned()))
    }
}

/// A JetStream API response: `{"type": …, <payload fields>}` on success,
/// `{"type": …, "error": {…}}` on failure.
///
/// On failure nats-server also writes the zero values of the payload's
/// non-omitted fields (`"purged":0`, `"total":0`, …); clients look at `error`
/// first, and this type writes only `type` and `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse<T> {
    /// Which response this is.
    pub kind: ResponseType,
    /// The payload or the error.
    pub result: Result<T, ApiError>,
}

impl<T> ApiResponse<T> {
    /// A successful response.
    pub fn ok(kind: ResponseType, payload: T) -> ApiResponse<T> {
        ApiResponse {
            kind,
            result: Ok(payload),
        }
    }

    /// A failed response.
    pub fn err(kind: ResponseType, error: impl Into<ApiError>) -> ApiResponse<T> {
        ApiResponse {
            kind,
            result: Err(error.into()),
        }
    }
}

impl<T: Serialize> ApiResponse<T> {
    /// The JSON bytes to send as the reply.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every map key is a string and
        // no Serialize impl here returns an error.
        serde_json::to_vec(self).expect("JetStream responses always serialize")
    }
}

#[derive(Serialize)]
struct OkEnvelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    payload: &'a T,
}

#[derive(Serialize)]
struct ErrEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'a ApiError,
}

impl<T: Serialize> Serialize for ApiResponse<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind.as_str();
        match &self.result {
            Ok(payload) => OkEnvelope { kind, payload }.serialize(serializer),
            Err(error) => ErrEnvelope { kind, error }.serialize(serializer),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for ApiResponse<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::deserialize(deserializer)?;
        let kind = match map.remove("type") {
            Some(serde_json::Value::String(kind)) => kind.parse().map_err(D::Error::custom)?,
            _ => return Err(D::Error::missing_field("type")),
        };
        let result =
            match map.remove("error") {
                Some(error) if !error.is_null() => {
                    Err(serde_json::from_value(error).map_err(D::Error::custom)?)
                }
                _ => Ok(serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(D::Error::custom)?),
            };
        Ok(ApiResponse { kind, result })
    }
}

/// Parses an API request body; an empty (or all-whitespace) body is `T::default()`,
/// as nats-server accepts for the requests whose body is optional. Bad JSON is
/// nats-server's `invalid JSON: …` error (400/10025).
pub fn parse_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    let body = body.trim_ascii();
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiErrorCode::INVALID_JSON.with(&[&e]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_type_strings_parse_back() {
        for kind in ResponseType::ALL {
            assert_eq!(kind.as_str().parse::<ResponseType>(), Ok(kind));
            assert!(kind.as_str().starts_with("io.nats.jetstream.api.v1."));
            assert!(kind.as_str().ends_with("_response"));
        }
        assert!("io.nats.jetstream.api.v1.nope"
            .parse::<ResponseType>()
            .is_err());
    }

    #[test]
    fn envelope_flattens_payload_after_type() {
        let ok = ApiResponse::ok(
            ResponseType::StreamPurge,
            StreamPurgeResponse {
                success: true,
                purged: 3,
            },
        );
        let json = String::from_utf8(ok.to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":3}"#
        );
        assert_eq!(
            serde_json::from_str::<ApiResponse<StreamPurgeResponse>>(&json).unwrap(),
            ok
        );

        let err: ApiResponse<StreamInfo> =
            ApiResponse::err(ResponseType::StreamInfo, ApiErrorCode::STREAM_NOT_FOUND);
        let json = String::from_utf8(err.to_vec()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","#,
                r#""error":{"code":404,"err_code":10059,"description":"stream not found"}}"#
            )
        );
        assert_eq!(
            serde_json::from_str::<ApiResponse<StreamInfo>>(&json).unwrap(),
            err
        );
    }

    #[test]
    fn names_response_pages() {
        let names = StreamNamesResponse {
            paged: Paged {
                total: 1,
                offset: 0,
                limit: NAMES_PAGE_LIMIT,
            },
            streams: vec!["S".into()],
        };
        let json =
            String::from_utf8(ApiResponse::ok(ResponseType::StreamNames, names).to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"io.nats.jetstream.api.v1.stream_names_response","total":1,"offset":0,"limit":1024,"streams":["S"]}"#
        );
    }

    #[test]
    fn parse_request_handles_empty_and_bad_bodies() {
        assert_eq!(
            parse_request::<StreamInfoRequest>(b"").unwrap(),
            StreamInfoRequest::default()
        );
        assert_eq!(
            parse_request::<StreamInfoRequest>(b" \r\n").unwrap(),
            StreamInfoRequest::default()
        );
        let e = parse_request::<StreamInfoRequest>(b"{nope").unwrap_err();
        assert!(e.is(ApiErrorCode::INVALID_JSON));
        assert!(
            e.description.starts_with("invalid JSON: "),
            "{}",
            e.description
        );
        let e =
            parse_request::<StreamConfig>(br#"{"name":"S","retention":"forever"}"#).unwrap_err();
        assert_eq!((e.code, e.err_code), (400, 10025));
    }
}
