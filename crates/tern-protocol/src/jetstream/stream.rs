//! Streams: configuration, state, info and the `$JS.API.STREAM.*` and
//! `DIRECT.GET` request and response bodies.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::ApiError;
use super::time::Timestamp;
use super::{is_false, is_zero_i64, is_zero_u64, Paged, NANOS_PER_SECOND};

/// nats-server's default `duplicate_window`: two minutes, in nanoseconds.
pub const DEFAULT_DUPLICATE_WINDOW: i64 = 120 * NANOS_PER_SECOND;

/// How messages are retained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionPolicy {
    /// Kept until a limit (`max_msgs`, `max_bytes`, `max_age`, …) removes them.
    #[default]
    Limits,
    /// Kept while a consumer has yet to acknowledge them.
    Interest,
    /// Removed once one consumer acknowledges them.
    #[serde(rename = "workqueue")]
    WorkQueue,
}

/// What to do when a limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscardPolicy {
    /// Remove the oldest messages.
    #[default]
    Old,
    /// Refuse the new message.
    New,
}

/// Where messages are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// On disk.
    #[default]
    File,
    /// In memory only.
    Memory,
}

/// Compression of stored messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// S2 compression.
    S2,
}

/// Cluster and tags a stream should be placed on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Cluster name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Server tags that must all match.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tags: Vec<String>,
    /// Preferred leader (nats-server refuses it in stream configs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub preferred: String,
}

/// A subject mapping `src` → `dest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTransform {
    /// Source subject filter.
    #[serde(default)]
    pub src: String,
    /// Destination template.
    #[serde(default)]
    pub dest: String,
}

/// Republish stored messages to another subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Republish {
    /// Which stored subjects to republish; empty means all (`>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub src: String,
    /// Destination template.
    #[serde(default)]
    pub dest: String,
    /// Republish headers only, with `Nats-Msg-Size`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers_only: bool,
}

/// A stream in another account or domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalStream {
    /// API prefix of the other JetStream.
    #[serde(default)]
    pub api: String,
    /// Delivery prefix.
    #[serde(default)]
    pub deliver: String,
}

/// A stream this stream mirrors or sources from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSource {
    /// Name of the origin stream.
    pub name: String,
    /// First origin sequence to copy.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub opt_start_seq: u64,
    /// First origin time to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<Timestamp>,
    /// Only copy these subjects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Filter-and-map pairs.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub subject_transforms: Vec<SubjectTransform>,
    /// Origin in another account or domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStream>,
}

/// Defaults and ceilings for consumers of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerLimits {
    /// Default and maximum `inactive_threshold` (ns); 0 for none.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub inactive_threshold: i64,
    /// Default and maximum `max_ack_pending`; 0 for none.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_ack_pending: i64,
}

/// A stream's configuration: the body of `STREAM.CREATE` and `STREAM.UPDATE`
/// and the `config` of [`StreamInfo`].
///
/// Deserializing fills absent fields with Go's zero values, as nats-server's
/// JSON decoder does; [`StreamConfig::with_defaults`] then applies the server's
/// defaults. Fields are written in nats-server's order and left out exactly
/// where it leaves them out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Stream name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Subjects captured; defaults to the name.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub subjects: Vec<String>,
    /// Retention policy.
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// Maximum consumers; -1 unlimited.
    #[serde(default)]
    pub max_consumers: i64,
    /// Maximum messages; -1 unlimited.
    #[serde(default)]
    pub max_msgs: i64,
    /// Maximum bytes; -1 unlimited.
    #[serde(default)]
    pub max_bytes: i64,
    /// Maximum age in nanoseconds; 0 unlimited.
    #[serde(default)]
    pub max_age: i64,
    /// Maximum messages per subject; -1 unlimited.
    #[serde(default)]
    pub max_msgs_per_subject: i64,
    /// Largest message accepted; -1 unlimited.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub max_msg_size: i32,
    /// What to do at a limit.
    #[serde(default)]
    pub discard: DiscardPolicy,
    /// File or memory.
    #[serde(default)]
    pub storage: StorageType,
    /// Replica count.
    #[serde(default)]
    pub num_replicas: i64,
    /// Do not acknowledge publishes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_ack: bool,
    /// Window of `Nats-Msg-Id` de-duplication, nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub duplicate_window: i64,
    /// Placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Mirror of another stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSource>,
    /// Streams sourced from.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub sources: Vec<StreamSource>,
    /// Compression.
    #[serde(default)]
    pub compression: Compression,
    /// First sequence of a new stream.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub first_seq: u64,
    /// Transform applied to incoming subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<SubjectTransform>,
    /// Republish after storing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<Republish>,
    /// Serve `DIRECT.GET`.
    #[serde(default)]
    pub allow_direct: bool,
    /// Serve `DIRECT.GET` of the mirrored stream.
    #[serde(default)]
    pub mirror_direct: bool,
    /// `discard: new` applies per subject.
    #[serde(default, skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    /// No messages in or out, no deletes, no purges.
    #[serde(default)]
    pub sealed: bool,
    /// Refuse `MSG.DELETE`.
    #[serde(default)]
    pub deny_delete: bool,
    /// Refuse `PURGE`.
    #[serde(default)]
    pub deny_purge: bool,
    /// Honour `Nats-Rollup`.
    #[serde(default)]
    pub allow_rollup_hdrs: bool,
    /// Defaults and ceilings for consumers.
    #[serde(default, deserialize_with = "null_as_default")]
    pub consumer_limits: ConsumerLimits,
    /// Honour `Nats-TTL` (nats-server 2.11).
    #[serde(default)]
    pub allow_msg_ttl: bool,
    /// TTL of subject delete markers, nanoseconds (2.11).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub subject_delete_marker_ttl: i64,
    /// Counter CRDT stream (2.12).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_msg_counter: bool,
    /// Atomic batch publish (2.12).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_atomic: bool,
    /// Message schedules (2.12).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_msg_schedules: bool,
    /// Fast batch publish (2.14).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_batched: bool,
    /// User metadata.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub metadata: BTreeMap<String, String>,
}

impl StreamConfig {
    /// The configuration with nats-server's defaults applied, as `checkStreamCfg`
    /// does before a stream is created (v2.14, without server or account limits):
    /// replicas 1; `max_msgs`, `max_msgs_per_subject`, `max_bytes`,
    /// `max_msg_size` and `max_consumers` -1 when 0 (or below -1);
    /// `duplicate_window` two minutes, or `max_age` if shorter, unless a mirror
    /// or sources are set; subjects `[name]` when none and no mirror or sources;
    /// an empty placement dropped; an empty republish source made `>`.
    ///
    /// It does not validate: a negative `max_age` stays negative for the caller
    /// to refuse.
    pub fn with_defaults(mut self) -> StreamConfig {
        if self.num_replicas == 0 {
            self.num_replicas = 1;
        }
        for limit in [
            &mut self.max_msgs,
            &mut self.max_msgs_per_subject,
            &mut self.max_bytes,
            &mut self.max_consumers,
        ] {
            if *limit == 0 || *limit < -1 {
                *limit = -1;
            }
        }
        if self.max_msg_size == 0 || self.max_msg_size < -1 {
            self.max_msg_size = -1;
        }
        let copies = self.mirror.is_some() || !self.sources.is_empty();
        // A mirror has no window of its own; a stream with sources does
        // (nats-server 2.9 reports one for it).
        if self.duplicate_window == 0 && self.mirror.is_none() {
            self.duplicate_window = if self.max_age > 0 && self.max_age < DEFAULT_DUPLICATE_WINDOW {
                self.max_age
            } else {
                DEFAULT_DUPLICATE_WINDOW
            };
        }
        if self.subjects.is_empty() && !copies {
            self.subjects.push(self.name.clone());
        }
        if self
            .placement
            .as_ref()
            .is_some_and(|p| *p == Placement::default())
        {
            self.placement = None;
        }
        if let Some(republish) = &mut self.republish {
            if republish.src.is_empty() {
                republish.src = ">".to_owned();
            }
        }
        self
    }
}

/// Data lost to corruption, as reported in [`StreamState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostStreamData {
    /// Sequences lost.
    #[serde(default, deserialize_with = "null_as_default")]
    pub msgs: Vec<u64>,
    /// Bytes lost.
    #[serde(default)]
    pub bytes: u64,
}

/// A stream's contents at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Messages stored.
    #[serde(default)]
    pub messages: u64,
    /// Bytes stored.
    #[serde(default)]
    pub bytes: u64,
    /// First stored sequence (0 when never written).
    #[serde(default)]
    pub first_seq: u64,
    /// Time of the first stored message; [`Timestamp::ZERO`] when empty.
    #[serde(default)]
    pub first_ts: Timestamp,
    /// Last assigned sequence.
    #[serde(default)]
    pub last_seq: u64,
    /// Time of the last message; [`Timestamp::ZERO`] when never written.
    #[serde(default)]
    pub last_ts: Timestamp,
    /// Distinct subjects stored.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_subjects: u64,
    /// Messages per subject, when `subjects_filter` asked for them.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub subjects: BTreeMap<String, u64>,
    /// Deleted sequences between first and last.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_deleted: u64,
    /// Those sequences, when `deleted_details` asked for them.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub deleted: Vec<u64>,
    /// Data lost to corruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostStreamData>,
    /// Consumers of the stream.
    #[serde(default)]
    pub consumer_count: u64,
}

/// One server holding a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Server name.
    pub name: String,
    /// Whether it is caught up.
    #[serde(default)]
    pub current: bool,
    /// Whether it is offline.
    #[serde(default, skip_serializing_if = "is_false")]
    pub offline: bool,
    /// Nanoseconds since it was last seen.
    #[serde(default)]
    pub active: i64,
    /// Entries behind.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub lag: u64,
    /// Peer id.
    #[serde(default)]
    pub peer: String,
}

/// Where a stream or consumer lives. On a single server nats-server reports
/// the leader only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Raft group name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raft_group: String,
    /// Leader's server name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub leader: String,
    /// When the leader was elected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_since: Option<Timestamp>,
    /// The other replicas.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub replicas: Vec<PeerInfo>,
}

/// Progress of a mirror or source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSourceInfo {
    /// Origin stream.
    pub name: String,
    /// Origin in another account or domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalStream>,
    /// Messages behind.
    #[serde(default)]
    pub lag: u64,
    /// Nanoseconds since last contact; -1 never.
    #[serde(default)]
    pub active: i64,
    /// Why it is not progressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// Filter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// Transforms.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub subject_transforms: Vec<SubjectTransform>,
}

/// Configuration and state of a stream: the payload of `STREAM.CREATE`,
/// `STREAM.UPDATE` and (inside [`StreamInfoResponse`]) `STREAM.INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Configuration, defaults applied.
    pub config: StreamConfig,
    /// When the stream was created.
    #[serde(default)]
    pub created: Timestamp,
    /// Current state.
    #[serde(default)]
    pub state: StreamState,
    /// JetStream domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Leader and replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// Mirror progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<StreamSourceInfo>,
    /// Sources progress.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub sources: Vec<StreamSourceInfo>,
    /// When this info was gathered.
    #[serde(default)]
    pub ts: Timestamp,
}

/// `STREAM.INFO` response payload: the info plus the page of `state.subjects`
/// (nats-server always writes `total`, `offset`, `limit` here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfoResponse {
    /// Paging of `state.subjects`.
    #[serde(flatten)]
    pub paged: Paged,
    /// The info.
    #[serde(flatten)]
    pub info: StreamInfo,
}

/// `STREAM.INFO` request body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfoRequest {
    /// Page offset into the subjects map.
    #[serde(default)]
    pub offset: u64,
    /// Include the list of deleted sequences.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted_details: bool,
    /// Include per-subject counts for subjects matching this filter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subjects_filter: String,
}

/// `STREAM.NAMES` and `STREAM.LIST` request body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamNamesRequest {
    /// Page offset.
    #[serde(default)]
    pub offset: u64,
    /// Only streams capturing this subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
}

/// `STREAM.LIST` takes the same body as `STREAM.NAMES`.
pub type StreamListRequest = StreamNamesRequest;

/// `STREAM.NAMES` response payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamNamesResponse {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// Names on this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub streams: Vec<String>,
}

/// `STREAM.LIST` response payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamListResponse {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// Infos on this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub streams: Vec<StreamInfo>,
    /// Streams that did not answer (clustered).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub missing: Vec<String>,
}

/// Payload of responses that only report success (`STREAM.DELETE`,
/// `STREAM.MSG.DELETE`, `CONSUMER.DELETE`); `success` is left out when false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessResponse {
    /// Whether it was done.
    #[serde(default, skip_serializing_if = "is_false")]
    pub success: bool,
}

/// `STREAM.PURGE` request body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPurgeRequest {
    /// Purge up to, not including, this sequence.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seq: u64,
    /// Only subjects matching this filter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Keep this many newest messages.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub keep: u64,
}

/// `STREAM.PURGE` response payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPurgeResponse {
    /// Whether it was done.
    #[serde(default, skip_serializing_if = "is_false")]
    pub success: bool,
    /// Messages removed.
    #[serde(default)]
    pub purged: u64,
}

/// `STREAM.MSG.GET` request body, also the JSON form of `DIRECT.GET.<stream>`.
///
/// nats-server uses one type for both; the batch fields are for direct gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgGetRequest {
    /// This sequence (or, with `next_by_subj`, the first at or after it).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seq: u64,
    /// The last message on this subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_by_subj: String,
    /// The first message at or after `seq` matching this subject.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_by_subj: String,
    /// Direct get: up to this many messages.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub batch: i64,
    /// Direct get: up to this many bytes.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub max_bytes: i64,
    /// Direct get: first message at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// Direct get: the last message of each of these subjects.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub multi_last: Vec<String>,
    /// Direct get with `multi_last`: as of this sequence.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub up_to_seq: u64,
    /// Direct get with `multi_last`: as of this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_time: Option<Timestamp>,
}

/// The JSON body of `$JS.API.DIRECT.GET.<stream>` (the other form,
/// `DIRECT.GET.<stream>.<subject>`, has no body).
pub type DirectGetRequest = MsgGetRequest;

/// A stored message as `STREAM.MSG.GET` returns it: headers and payload in base64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Subject it was published to.
    pub subject: String,
    /// Stream sequence.
    pub seq: u64,
    /// The raw `NATS/1.0` header block; left out when empty.
    #[serde(
        default,
        skip_serializing_if = "Bytes::is_empty",
        with = "super::base64"
    )]
    pub hdrs: Bytes,
    /// Payload; left out when empty.
    #[serde(
        default,
        skip_serializing_if = "Bytes::is_empty",
        with = "super::base64"
    )]
    pub data: Bytes,
    /// When it was stored.
    pub time: Timestamp,
}

/// `STREAM.MSG.GET` response payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgGetResponse {
    /// The message.
    pub message: StoredMessage,
}

/// `STREAM.MSG.DELETE` request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgDeleteRequest {
    /// Sequence to delete.
    #[serde(default)]
    pub seq: u64,
    /// Remove without overwriting the data.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_erase: bool,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// Go writes a nil slice or map as `null`; read it as empty.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `STREAM.INFO`'s `config` for `{"name":"ORDERS","subjects":["orders.>"]}`
    /// on nats-server 2.11+, field for field.
    const MINIMAL_STREAM_CONFIG: &str = concat!(
        r#"{"name":"ORDERS","subjects":["orders.>"],"retention":"limits","max_consumers":-1,"#,
        r#""max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"#,
        r#""discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"#,
        r#""compression":"none","allow_direct":false,"mirror_direct":false,"sealed":false,"#,
        r#""deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false,"consumer_limits":{},"#,
        r#""allow_msg_ttl":false}"#
    );

    #[test]
    fn minimal_stream_gets_nats_server_defaults() {
        let req: StreamConfig =
            serde_json::from_str(r#"{"name":"ORDERS","subjects":["orders.>"]}"#).unwrap();
        let json = serde_json::to_string(&req.with_defaults()).unwrap();
        assert_eq!(json, MINIMAL_STREAM_CONFIG);
    }

    #[test]
    fn subjects_default_to_the_name_and_window_to_max_age() {
        let cfg = StreamConfig {
            name: "S".into(),
            max_age: 30 * NANOS_PER_SECOND,
            ..Default::default()
        }
        .with_defaults();
        assert_eq!(cfg.subjects, ["S"]);
        assert_eq!(cfg.duplicate_window, 30 * NANOS_PER_SECOND);
        let mirror = StreamConfig {
            name: "M".into(),
            mirror: Some(StreamSource {
                name: "S".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_defaults();
        assert!(mirror.subjects.is_empty());
        assert_eq!(mirror.duplicate_window, 0);
    }

    #[test]
    fn full_config_round_trips() {
        let mut metadata = BTreeMap::new();
        metadata.insert("owner".to_owned(), "tern".to_owned());
        let cfg = StreamConfig {
            name: "KV_b".into(),
            description: "bucket".into(),
            subjects: vec!["$KV.b.>".into()],
            retention: RetentionPolicy::WorkQueue,
            max_consumers: 10,
            max_msgs: 100,
            max_bytes: 1 << 20,
            max_age: 3_600 * NANOS_PER_SECOND,
            max_msgs_per_subject: 5,
            max_msg_size: 1024,
            discard: DiscardPolicy::New,
            storage: StorageType::Memory,
            num_replicas: 3,
            no_ack: true,
            duplicate_window: NANOS_PER_SECOND,
            placement: Some(Placement {
                cluster: "c".into(),
                tags: vec!["az1".into()],
                preferred: String::new(),
            }),
            mirror: None,
            sources: vec![StreamSource {
                name: "A".into(),
                opt_start_seq: 7,
                opt_start_time: Some(Timestamp::from_unix_nanos(1)),
                filter_subject: "a.>".into(),
                subject_transforms: vec![],
                external: Some(ExternalStream {
                    api: "$JS.x.API".into(),
                    deliver: String::new(),
                }),
            }],
            compression: Compression::S2,
            first_seq: 10,
            subject_transform: Some(SubjectTransform {
                src: "in.>".into(),
                dest: "out.>".into(),
            }),
            republish: Some(Republish {
                src: ">".into(),
                dest: "rp.>".into(),
                headers_only: true,
            }),
            allow_direct: true,
            mirror_direct: false,
            discard_new_per_subject: true,
            sealed: false,
            deny_delete: true,
            deny_purge: false,
            allow_rollup_hdrs: true,
            consumer_limits: ConsumerLimits {
                inactive_threshold: 5,
                max_ack_pending: 6,
            },
            allow_msg_ttl: true,
            subject_delete_marker_ttl: NANOS_PER_SECOND,
            allow_msg_counter: false,
            allow_atomic: true,
            allow_msg_schedules: false,
            allow_batched: false,
            metadata,
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<StreamConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn empty_state_writes_go_zero_times() {
        let json = serde_json::to_string(&StreamState::default()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","#,
                r#""last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0}"#
            )
        );
        assert_eq!(
            serde_json::from_str::<StreamState>(&json).unwrap(),
            StreamState::default()
        );
    }

    #[test]
    fn stored_message_is_base64() {
        let msg = StoredMessage {
            subject: "a".into(),
            seq: 3,
            hdrs: Bytes::from_static(b"NATS/1.0\r\nX: 1\r\n\r\n"),
            data: Bytes::from_static(b"hello"),
            time: Timestamp::from_unix_nanos(1_704_067_200_000_000_000),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"subject":"a","seq":3,"hdrs":"TkFUUy8xLjANClg6IDENCg0K","data":"aGVsbG8=","#,
                r#""time":"2024-01-01T00:00:00Z"}"#
            )
        );
        assert_eq!(serde_json::from_str::<StoredMessage>(&json).unwrap(), msg);
        let bare = StoredMessage {
            hdrs: Bytes::new(),
            data: Bytes::new(),
            ..msg
        };
        let json = serde_json::to_string(&bare).unwrap();
        assert_eq!(
            json,
            r#"{"subject":"a","seq":3,"time":"2024-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn requests_read_empty_and_full_bodies() {
        let r: StreamPurgeRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r, StreamPurgeRequest::default());
        let r: StreamPurgeRequest =
            serde_json::from_str(r#"{"filter":"a.*","seq":0,"keep":2}"#).unwrap();
        assert_eq!(
            r,
            StreamPurgeRequest {
                seq: 0,
                filter: "a.*".into(),
                keep: 2
            }
        );
        let r: MsgGetRequest = serde_json::from_str(r#"{"last_by_subj":"k"}"#).unwrap();
        assert_eq!(r.last_by_subj, "k");
        let r: StreamInfoRequest =
            serde_json::from_str(r#"{"offset":0,"deleted_details":true,"subjects_filter":">"}"#)
                .unwrap();
        assert!(r.deleted_details);
        let r: StreamNamesResponse =
            serde_json::from_str(r#"{"total":0,"offset":0,"limit":1024,"streams":null}"#).unwrap();
        assert!(r.streams.is_empty());
    }
}
