//! JetStream API errors: the `{"code", "err_code", "description"}` object and
//! the table of nats-server's error constants.
//!
//! Codes and texts are nats-server's (`server/errors.json`), so clients that
//! match on `err_code` (every official client does for "stream not found",
//! "consumer not found", "wrong last sequence", …) behave as against nats-server.

use std::fmt;

use serde::{Deserialize, Serialize};

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// The `error` object of a JetStream API response or publish acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{description} (status {code}, err_code {err_code})")]
pub struct ApiError {
    /// HTTP-like status: 400, 404, 409, 429, 500, 503.
    pub code: u16,
    /// The JetStream error code, 10000 and up; 0 is left out of the JSON.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub err_code: u16,
    /// Human-readable text; left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl ApiError {
    /// The error for `code` with its description as written in the table.
    ///
    /// For the templated entries (description with `{…}`) use [`ApiErrorCode::with`].
    pub fn new(code: ApiErrorCode) -> ApiError {
        ApiError {
            code: code.code,
            err_code: code.err_code,
            description: code.description.to_owned(),
        }
    }

    /// The table entry with this `err_code`, if it is one Tern knows.
    pub fn kind(&self) -> Option<ApiErrorCode> {
        ApiErrorCode::from_err_code(self.err_code)
    }

    /// Whether this error is `code` (compares `err_code` only, as clients do).
    pub fn is(&self, code: ApiErrorCode) -> bool {
        self.err_code == code.err_code
    }
}

impl From<ApiErrorCode> for ApiError {
    fn from(code: ApiErrorCode) -> Self {
        ApiError::new(code)
    }
}

/// One of nats-server's JetStream error constants: status, `err_code` and the
/// description text, where `{seq}`, `{err}`, … mark values filled in per error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiErrorCode {
    /// HTTP-like status.
    pub code: u16,
    /// The JetStream error code.
    pub err_code: u16,
    /// The description, possibly with `{name}` placeholders.
    pub description: &'static str,
}

impl ApiErrorCode {
    /// The error with each `{…}` placeholder of the description replaced, in
    /// order, by the next of `args`; placeholders without an argument stay.
    ///
    /// `ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[&5])` gives
    /// `"wrong last sequence: 5"`.
    pub fn with(self, args: &[&dyn fmt::Display]) -> ApiError {
        let mut description = String::with_capacity(self.description.len() + 16);
        let mut rest = self.description;
        let mut args = args.iter();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            description.push_str(&rest[..open]);
            match args.next() {
                Some(arg) => description.push_str(&arg.to_string()),
                None => description.push_str(&rest[open..=open + close]),
            }
            rest = &rest[open + close + 1..];
        }
        description.push_str(rest);
        ApiError {
            code: self.code,
            err_code: self.err_code,
            description,
        }
    }

    /// The entry with this `err_code`, if it is in [`ApiErrorCode::ALL`].
    pub fn from_err_code(err_code: u16) -> Option<ApiErrorCode> {
        ApiErrorCode::ALL
            .iter()
            .map(|(_, c)| *c)
            .find(|c| c.err_code == err_code)
    }
}

macro_rules! error_codes {
    ($( $name:ident = $go:literal, $code:literal, $err:literal, $desc:literal; )*) => {
        impl ApiErrorCode {
            $(
                #[doc = concat!("`", $go, "` (", $code, "/", $err, "): \"", $desc, "\".")]
                pub const $name: ApiErrorCode =
                    ApiErrorCode { code: $code, err_code: $err, description: $desc };
            )*

            /// Every entry with the name of its nats-server constant, in `err_code` order.
            pub const ALL: &'static [(&'static str, ApiErrorCode)] = &[$(($go, ApiErrorCode::$name),)*];
        }
    };
}

// Source: nats-server `server/errors.json` (main branch; the entries below are
// the same in v2.10 through v2.14). Only the facts are copied: status,
// err_code and description.
error_codes! {
    ACCOUNT_RESOURCES_EXCEEDED = "JSAccountResourcesExceededErr", 400, 10002, "resource limits exceeded for account";
    BAD_REQUEST = "JSBadRequestErr", 400, 10003, "bad request";
    CLUSTER_NOT_AVAILABLE = "JSClusterNotAvailErr", 503, 10008, "JetStream system temporarily unavailable";
    CONSUMER_CREATE = "JSConsumerCreateErrF", 500, 10012, "{err}";
    CONSUMER_NAME_EXIST = "JSConsumerNameExistErr", 400, 10013, "consumer name already in use";
    CONSUMER_NOT_FOUND = "JSConsumerNotFoundErr", 404, 10014, "consumer not found";
    SNAPSHOT_DELIVER_SUBJECT_INVALID = "JSSnapshotDeliverSubjectInvalidErr", 400, 10015, "deliver subject not valid";
    CONSUMER_DURABLE_NAME_NOT_IN_SUBJECT = "JSConsumerDurableNameNotInSubjectErr", 400, 10016, "consumer expected to be durable but no durable name set in subject";
    CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT = "JSConsumerDurableNameNotMatchSubjectErr", 400, 10017, "consumer name in subject does not match durable name in request";
    CONSUMER_DURABLE_NAME_NOT_SET = "JSConsumerDurableNameNotSetErr", 400, 10018, "consumer expected to be durable but a durable name was not set";
    CONSUMER_EPHEMERAL_WITH_DURABLE_IN_SUBJECT = "JSConsumerEphemeralWithDurableInSubjectErr", 400, 10019, "consumer expected to be ephemeral but detected a durable name set in subject";
    CONSUMER_EPHEMERAL_WITH_DURABLE_NAME = "JSConsumerEphemeralWithDurableNameErr", 400, 10020, "consumer expected to be ephemeral but a durable name was set in request";
    INSUFFICIENT_RESOURCES = "JSInsufficientResourcesErr", 503, 10023, "insufficient resources";
    INVALID_JSON = "JSInvalidJSONErr", 400, 10025, "invalid JSON: {err}";
    MAXIMUM_CONSUMERS_LIMIT = "JSMaximumConsumersLimitErr", 400, 10026, "maximum consumers limit reached";
    MAXIMUM_STREAMS_LIMIT = "JSMaximumStreamsLimitErr", 400, 10027, "maximum number of streams reached";
    MEMORY_RESOURCES_EXCEEDED = "JSMemoryResourcesExceededErr", 500, 10028, "insufficient memory resources available";
    MIRROR_WITH_SUBJECTS = "JSMirrorWithSubjectsErr", 400, 10034, "stream mirrors can not contain subjects";
    NO_ACCOUNT = "JSNoAccountErr", 503, 10035, "account not found";
    NO_MESSAGE_FOUND = "JSNoMessageFoundErr", 404, 10037, "no message found";
    NOT_EMPTY_REQUEST = "JSNotEmptyRequestErr", 400, 10038, "expected an empty request payload";
    NOT_ENABLED_FOR_ACCOUNT = "JSNotEnabledForAccountErr", 503, 10039, "JetStream not enabled for account";
    SEQUENCE_NOT_FOUND = "JSSequenceNotFoundErrF", 400, 10043, "sequence {seq} not found";
    STORAGE_RESOURCES_EXCEEDED = "JSStorageResourcesExceededErr", 500, 10047, "insufficient storage resources available";
    STREAM_CREATE = "JSStreamCreateErrF", 500, 10049, "{err}";
    STREAM_DELETE = "JSStreamDeleteErrF", 500, 10050, "{err}";
    STREAM_GENERAL = "JSStreamGeneralErrorF", 500, 10051, "{err}";
    STREAM_INVALID_CONFIG = "JSStreamInvalidConfigF", 500, 10052, "{err}";
    STREAM_LIMITS = "JSStreamLimitsErrF", 500, 10053, "{err}";
    STREAM_MESSAGE_EXCEEDS_MAXIMUM = "JSStreamMessageExceedsMaximumErr", 400, 10054, "message size exceeds maximum allowed";
    STREAM_MIRROR_NOT_UPDATABLE = "JSStreamMirrorNotUpdatableErr", 400, 10055, "stream mirror configuration can not be updated";
    STREAM_MISMATCH = "JSStreamMismatchErr", 400, 10056, "stream name in subject does not match request";
    STREAM_MSG_DELETE_FAILED = "JSStreamMsgDeleteFailedF", 500, 10057, "{err}";
    STREAM_NAME_EXIST = "JSStreamNameExistErr", 400, 10058, "stream name already in use with a different configuration";
    STREAM_NOT_FOUND = "JSStreamNotFoundErr", 404, 10059, "stream not found";
    STREAM_NOT_MATCH = "JSStreamNotMatchErr", 400, 10060, "expected stream does not match";
    STREAM_REPLICAS_NOT_UPDATABLE = "JSStreamReplicasNotUpdatableErr", 400, 10061, "Replicas configuration can not be updated";
    STREAM_RESTORE = "JSStreamRestoreErrF", 500, 10062, "restore failed: {err}";
    STREAM_SEQUENCE_NOT_MATCH = "JSStreamSequenceNotMatchErr", 503, 10063, "expected stream sequence does not match";
    STREAM_SNAPSHOT = "JSStreamSnapshotErrF", 500, 10064, "snapshot failed: {err}";
    STREAM_SUBJECT_OVERLAP = "JSStreamSubjectOverlapErr", 400, 10065, "subjects overlap with an existing stream";
    STREAM_UPDATE = "JSStreamUpdateErrF", 500, 10069, "{err}";
    STREAM_WRONG_LAST_MSG_ID = "JSStreamWrongLastMsgIDErrF", 400, 10070, "wrong last msg ID: {id}";
    STREAM_WRONG_LAST_SEQUENCE = "JSStreamWrongLastSequenceErrF", 400, 10071, "wrong last sequence: {seq}";
    STREAM_REPLICAS_NOT_SUPPORTED = "JSStreamReplicasNotSupportedErr", 500, 10074, "replicas > 1 not supported in non-clustered mode";
    NOT_ENABLED = "JSNotEnabledErr", 503, 10076, "JetStream not enabled";
    STREAM_STORE_FAILED = "JSStreamStoreFailedF", 503, 10077, "{err}";
    CONSUMER_CONFIG_REQUIRED = "JSConsumerConfigRequiredErr", 400, 10078, "consumer config required";
    CONSUMER_DELIVER_TO_WILDCARDS = "JSConsumerDeliverToWildcardsErr", 400, 10079, "consumer deliver subject has wildcards";
    CONSUMER_PUSH_MAX_WAITING = "JSConsumerPushMaxWaitingErr", 400, 10080, "consumer in push mode can not set max waiting";
    CONSUMER_DELIVER_CYCLE = "JSConsumerDeliverCycleErr", 400, 10081, "consumer deliver subject forms a cycle";
    CONSUMER_MAX_PENDING_ACK_POLICY_REQUIRED = "JSConsumerMaxPendingAckPolicyRequiredErr", 400, 10082, "consumer requires ack policy for max ack pending";
    CONSUMER_SMALL_HEARTBEAT = "JSConsumerSmallHeartbeatErr", 400, 10083, "consumer idle heartbeat needs to be >= 100ms";
    CONSUMER_PULL_REQUIRES_ACK = "JSConsumerPullRequiresAckErr", 400, 10084, "consumer in pull mode requires explicit ack policy on workqueue stream";
    CONSUMER_PULL_NOT_DURABLE = "JSConsumerPullNotDurableErr", 400, 10085, "consumer in pull mode requires a durable name";
    CONSUMER_PULL_WITH_RATE_LIMIT = "JSConsumerPullWithRateLimitErr", 400, 10086, "consumer in pull mode can not have rate limit set";
    CONSUMER_MAX_WAITING_NEGATIVE = "JSConsumerMaxWaitingNegativeErr", 400, 10087, "consumer max waiting needs to be positive";
    CONSUMER_HB_REQUIRES_PUSH = "JSConsumerHBRequiresPushErr", 400, 10088, "consumer idle heartbeat requires a push based consumer";
    CONSUMER_FC_REQUIRES_PUSH = "JSConsumerFCRequiresPushErr", 400, 10089, "consumer flow control requires a push based consumer";
    CONSUMER_FILTER_NOT_SUBSET = "JSConsumerFilterNotSubsetErr", 400, 10093, "consumer filter subject is not a valid subset of the interest subjects";
    CONSUMER_INVALID_POLICY = "JSConsumerInvalidPolicyErrF", 400, 10094, "{err}";
    CONSUMER_INVALID_SAMPLING = "JSConsumerInvalidSamplingErrF", 400, 10095, "failed to parse consumer sampling configuration: {err}";
    STREAM_INVALID = "JSStreamInvalidErr", 500, 10096, "stream not valid";
    STREAM_HEADER_EXCEEDS_MAXIMUM = "JSStreamHeaderExceedsMaximumErr", 400, 10097, "header size exceeds maximum allowed of 64k";
    CONSUMER_WQ_REQUIRES_EXPLICIT_ACK = "JSConsumerWQRequiresExplicitAckErr", 400, 10098, "workqueue stream requires explicit ack";
    CONSUMER_WQ_MULTIPLE_UNFILTERED = "JSConsumerWQMultipleUnfilteredErr", 400, 10099, "multiple non-filtered consumers not allowed on workqueue stream";
    CONSUMER_WQ_CONSUMER_NOT_UNIQUE = "JSConsumerWQConsumerNotUniqueErr", 400, 10100, "filtered consumer not unique on workqueue stream";
    CONSUMER_WQ_CONSUMER_NOT_DELIVER_ALL = "JSConsumerWQConsumerNotDeliverAllErr", 400, 10101, "consumer must be deliver all on workqueue stream";
    CONSUMER_NAME_TOO_LONG = "JSConsumerNameTooLongErrF", 400, 10102, "consumer name is too long, maximum allowed is {max}";
    CONSUMER_BAD_DURABLE_NAME = "JSConsumerBadDurableNameErr", 400, 10103, "durable name can not contain '.', '*', '>'";
    CONSUMER_STORE_FAILED = "JSConsumerStoreFailedErrF", 500, 10104, "error creating store for consumer: {err}";
    CONSUMER_EXISTING_ACTIVE = "JSConsumerExistingActiveErr", 400, 10105, "consumer already exists and is still active";
    CONSUMER_REPLACEMENT_WITH_DIFFERENT_NAME = "JSConsumerReplacementWithDifferentNameErr", 400, 10106, "consumer replacement durable config not the same";
    CONSUMER_DESCRIPTION_TOO_LONG = "JSConsumerDescriptionTooLongErrF", 400, 10107, "consumer description is too long, maximum allowed is {max}";
    CONSUMER_WITH_FLOW_CONTROL_NEEDS_HEARTBEATS = "JSConsumerWithFlowControlNeedsHeartbeats", 400, 10108, "consumer with flow control also needs heartbeats";
    STREAM_SEALED = "JSStreamSealedErr", 400, 10109, "invalid operation on sealed stream";
    STREAM_PURGE_FAILED = "JSStreamPurgeFailedF", 500, 10110, "{err}";
    STREAM_ROLLUP_FAILED = "JSStreamRollupFailedF", 500, 10111, "{err}";
    CONSUMER_INVALID_DELIVER_SUBJECT = "JSConsumerInvalidDeliverSubject", 400, 10112, "invalid push consumer deliver subject";
    STREAM_MAX_BYTES_REQUIRED = "JSStreamMaxBytesRequired", 400, 10113, "account requires a stream config to have max bytes set";
    CONSUMER_MAX_REQUEST_BATCH_NEGATIVE = "JSConsumerMaxRequestBatchNegativeErr", 400, 10114, "consumer max request batch needs to be > 0";
    CONSUMER_MAX_REQUEST_EXPIRES_TOO_SMALL = "JSConsumerMaxRequestExpiresTooSmall", 400, 10115, "consumer max request expires needs to be >= 1ms";
    CONSUMER_MAX_DELIVER_BACKOFF = "JSConsumerMaxDeliverBackoffErr", 400, 10116, "max deliver is required to be > length of backoff values";
    STREAM_INFO_MAX_SUBJECTS = "JSStreamInfoMaxSubjectsErr", 500, 10117, "subject details would exceed maximum allowed";
    STREAM_OFFLINE = "JSStreamOfflineErr", 500, 10118, "stream is offline";
    CONSUMER_OFFLINE = "JSConsumerOfflineErr", 500, 10119, "consumer is offline";
    NO_LIMITS = "JSNoLimitsErr", 400, 10120, "no JetStream default or applicable tiered limit present";
    CONSUMER_MAX_PENDING_ACK_EXCESS = "JSConsumerMaxPendingAckExcessErrF", 400, 10121, "consumer max ack pending exceeds system limit of {limit}";
    STREAM_MAX_STREAM_BYTES_EXCEEDED = "JSStreamMaxStreamBytesExceeded", 400, 10122, "stream max bytes exceeds account limit max stream bytes";
    CONSUMER_MAX_REQUEST_BATCH_EXCEEDED = "JSConsumerMaxRequestBatchExceededF", 400, 10125, "consumer max request batch exceeds server limit of {limit}";
    CONSUMER_REPLICAS_EXCEEDS_STREAM = "JSConsumerReplicasExceedsStream", 400, 10126, "consumer config replica count exceeds parent stream";
    CONSUMER_NAME_CONTAINS_PATH_SEPARATORS = "JSConsumerNameContainsPathSeparatorsErr", 400, 10127, "Consumer name can not contain path separators";
    STREAM_NAME_CONTAINS_PATH_SEPARATORS = "JSStreamNameContainsPathSeparatorsErr", 400, 10128, "Stream name can not contain path separators";
    CONSUMER_CREATE_FILTER_SUBJECT_MISMATCH = "JSConsumerCreateFilterSubjectMismatchErr", 400, 10131, "Consumer create request did not match filtered subject from create subject";
    CONSUMER_CREATE_DURABLE_AND_NAME_MISMATCH = "JSConsumerCreateDurableAndNameMismatch", 400, 10132, "Consumer Durable and Name have to be equal if both are provided";
    REPLICAS_COUNT_CANNOT_BE_NEGATIVE = "JSReplicasCountCannotBeNegative", 400, 10133, "replicas count cannot be negative";
    CONSUMER_REPLICAS_SHOULD_MATCH_STREAM = "JSConsumerReplicasShouldMatchStream", 400, 10134, "consumer config replicas must match interest retention stream's replicas";
    CONSUMER_METADATA_LENGTH = "JSConsumerMetadataLengthErrF", 400, 10135, "consumer metadata exceeds maximum size of {limit}";
    CONSUMER_DUPLICATE_FILTER_SUBJECTS = "JSConsumerDuplicateFilterSubjects", 400, 10136, "consumer cannot have both FilterSubject and FilterSubjects specified";
    CONSUMER_MULTIPLE_FILTERS_NOT_ALLOWED = "JSConsumerMultipleFiltersNotAllowed", 400, 10137, "consumer with multiple subject filters cannot use subject based API";
    CONSUMER_OVERLAPPING_SUBJECT_FILTERS = "JSConsumerOverlappingSubjectFilters", 400, 10138, "consumer subject filters cannot overlap";
    CONSUMER_EMPTY_FILTER = "JSConsumerEmptyFilter", 400, 10139, "consumer filter in FilterSubjects cannot be empty";
    CONSUMER_ALREADY_EXISTS = "JSConsumerAlreadyExists", 400, 10148, "consumer already exists";
    CONSUMER_DOES_NOT_EXIST = "JSConsumerDoesNotExist", 400, 10149, "consumer does not exist";
    CONSUMER_INACTIVE_THRESHOLD_EXCESS = "JSConsumerInactiveThresholdExcess", 400, 10153, "consumer inactive threshold exceeds system limit of {limit}";
    PEDANTIC = "JSPedanticErrF", 400, 10157, "pedantic mode: {err}";
    STREAM_DUPLICATE_MESSAGE_CONFLICT = "JSStreamDuplicateMessageConflict", 409, 10158, "duplicate message id is in process";
    STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY = "JSStreamExpectedLastSeqPerSubjectNotReady", 503, 10163, "expected last sequence per subject temporarily unavailable";
    STREAM_WRONG_LAST_SEQUENCE_CONSTANT = "JSStreamWrongLastSequenceConstantErr", 400, 10164, "wrong last sequence";
    MESSAGE_TTL_INVALID = "JSMessageTTLInvalidErr", 400, 10165, "invalid per-message TTL";
    MESSAGE_TTL_DISABLED = "JSMessageTTLDisabledErr", 400, 10166, "per-message TTL is disabled";
    STREAM_TOO_MANY_REQUESTS = "JSStreamTooManyRequests", 429, 10167, "too many requests";
    CONSUMER_ACK_POLICY_INVALID = "JSConsumerAckPolicyInvalidErr", 400, 10181, "consumer ack policy invalid";
    CONSUMER_REPLAY_POLICY_INVALID = "JSConsumerReplayPolicyInvalidErr", 400, 10182, "consumer replay policy invalid";
    CONSUMER_ACK_WAIT_NEGATIVE = "JSConsumerAckWaitNegativeErr", 400, 10183, "consumer ack wait needs to be positive";
    CONSUMER_BACK_OFF_NEGATIVE = "JSConsumerBackOffNegativeErr", 400, 10184, "consumer backoff needs to be positive";
    STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_INVALID = "JSStreamExpectedLastSeqPerSubjectInvalid", 400, 10193, "missing sequence for expected last sequence per subject";
}

/// Store failure texts nats-server puts in the description of
/// [`ApiErrorCode::STREAM_STORE_FAILED`] (503/10077) publish errors, and of
/// other `{err}` entries. Source: nats-server `server/store.go`.
pub mod store_error {
    /// `ErrMaxMsgs`: discard `new` and `max_msgs` reached.
    pub const MAX_MSGS: &str = "maximum messages exceeded";
    /// `ErrMaxBytes`: discard `new` and `max_bytes` reached.
    pub const MAX_BYTES: &str = "maximum bytes exceeded";
    /// `ErrMaxMsgsPerSubject`: discard `new` and `max_msgs_per_subject` reached.
    pub const MAX_MSGS_PER_SUBJECT: &str = "maximum messages per subject exceeded";
    /// `ErrStoreMsgNotFound`: the sequence is not (or no longer) stored.
    pub const MSG_NOT_FOUND: &str = "no message found";
    /// `ErrStoreEOF`: the sequence is past the last one.
    pub const EOF: &str = "stream store EOF";
    /// `ErrStoreClosed`.
    pub const CLOSED: &str = "store is closed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_codes_are_unique_and_sorted() {
        let codes: Vec<u16> = ApiErrorCode::ALL.iter().map(|(_, c)| c.err_code).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
    }

    #[test]
    fn fills_placeholders_in_order() {
        let e = ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[&5]);
        assert_eq!(e.description, "wrong last sequence: 5");
        assert_eq!((e.code, e.err_code), (400, 10071));
        let e = ApiErrorCode::INVALID_JSON.with(&[]);
        assert_eq!(e.description, "invalid JSON: {err}");
        let e = ApiErrorCode::STREAM_STORE_FAILED.with(&[&store_error::MAX_MSGS_PER_SUBJECT]);
        assert_eq!(e.description, "maximum messages per subject exceeded");
    }

    #[test]
    fn json_shape_matches_nats_server() {
        let e = ApiError::new(ApiErrorCode::STREAM_NOT_FOUND);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"code":404,"err_code":10059,"description":"stream not found"}"#
        );
        let back: ApiError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.kind(), Some(ApiErrorCode::STREAM_NOT_FOUND));
        let bare: ApiError = serde_json::from_str(r#"{"code":503}"#).unwrap();
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"code":503}"#);
    }
}
