//! The trait every stream store implements.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use bytes::Bytes;

use crate::error::StorageError;
use crate::types::{
    Append, ConsumerState, OpResult, PurgeRequest, StoredConsumer, StoredMessage, StreamLimits,
    StreamOp, StreamState,
};

/// One stream's messages, limits, config blob and consumer states.
///
/// Mutations go through [`StreamStore::apply`] / [`StreamStore::apply_batch`]
/// as [`StreamOp`] values so a replication layer can log and replay them; the
/// other mutating methods are shorthands for one operation. Every method is
/// synchronous and may block on disk: call it from a blocking thread.
///
/// Subject filters accept `*` and `>` wildcards; an empty filter or `>`
/// selects every message.
pub trait StreamStore: Send + Sync + fmt::Debug {
    /// The stream's name.
    fn name(&self) -> &str;

    /// Applies a batch in order and returns one result per operation.
    ///
    /// An operation that fails with anything but a backend error leaves the
    /// stream unchanged and the batch goes on. A file store commits the whole
    /// batch at once and, with [`crate::SyncPolicy::Always`], fsyncs once
    /// before returning; a backend error fails every operation of the batch.
    fn apply_batch(&self, ops: Vec<StreamOp>) -> Vec<Result<OpResult, StorageError>>;

    /// Applies one operation (a batch of one).
    fn apply(&self, op: StreamOp) -> Result<OpResult, StorageError> {
        self.apply_batch(vec![op])
            .pop()
            .unwrap_or(Err(StorageError::BatchAborted))
    }

    /// The message with sequence `seq`.
    fn get(&self, seq: u64) -> Result<StoredMessage, StorageError>;

    /// The first message at or after `start_seq` whose subject matches `filter`.
    fn next_matching(
        &self,
        start_seq: u64,
        filter: &[u8],
    ) -> Result<Option<StoredMessage>, StorageError>;

    /// The newest message whose subject matches `filter` (usually a literal
    /// subject: answered from the subject index).
    fn last_by_subject(&self, filter: &[u8]) -> Result<Option<StoredMessage>, StorageError>;

    /// The stream's figures.
    fn state(&self) -> Result<StreamState, StorageError>;

    /// Messages and bytes stored: the figures of [`StreamStore::state`]
    /// that need no message read (its first timestamp does).
    fn totals(&self) -> Result<(u64, u64), StorageError>;

    /// The deleted sequences between `first_seq` and `last_seq`. Scans the
    /// stream: O(messages).
    fn deleted_seqs(&self) -> Result<Vec<u64>, StorageError>;

    /// Message count per stored subject matching `filter`.
    fn subjects_state(&self, filter: &[u8]) -> Result<BTreeMap<Bytes, u64>, StorageError>;

    /// Messages at or after `from_seq` matching `filter` (a consumer's
    /// pending count). O(1) per subject from the first sequence, a scan
    /// otherwise.
    fn count_matching(&self, filter: &[u8], from_seq: u64) -> Result<u64, StorageError>;

    /// The first sequence whose timestamp is at or after `timestamp_ns`.
    fn seq_for_time(&self, timestamp_ns: u64) -> Result<Option<u64>, StorageError>;

    /// The limits in force.
    fn limits(&self) -> StreamLimits;

    /// The stream's opaque config blob, if one was saved.
    fn stream_config(&self) -> Result<Option<Bytes>, StorageError>;

    /// Every saved consumer by name.
    fn load_consumers(&self) -> Result<BTreeMap<String, StoredConsumer>, StorageError>;

    /// Writes a self-checking snapshot of the whole stream (limits, state,
    /// config, consumers, messages) to `out`. Mutations wait until it is done.
    fn snapshot_to(&self, out: &mut dyn Write) -> Result<(), StorageError>;

    /// Replaces the whole stream with a snapshot's contents. The snapshot is
    /// verified completely before anything is replaced.
    fn restore(&self, snapshot: &[u8]) -> Result<(), StorageError>;

    /// Makes every applied operation durable.
    fn flush(&self) -> Result<(), StorageError>;

    // ----- shorthands ------------------------------------------------------

    /// Appends a message; returns `(seq, timestamp_ns)`.
    fn append(&self, append: Append) -> Result<(u64, u64), StorageError> {
        match self.apply(StreamOp::Append(append))? {
            OpResult::Appended { seq, timestamp_ns } => Ok((seq, timestamp_ns)),
            _ => Err(StorageError::BatchAborted),
        }
    }

    /// Deletes one message, overwriting its bytes first when `erase`.
    fn delete_msg(&self, seq: u64, erase: bool) -> Result<(), StorageError> {
        self.apply(StreamOp::Delete { seq, erase }).map(drop)
    }

    /// Purges; returns the number of messages removed.
    fn purge(&self, request: PurgeRequest) -> Result<u64, StorageError> {
        match self.apply(StreamOp::Purge(request))? {
            OpResult::Purged { purged } => Ok(purged),
            _ => Err(StorageError::BatchAborted),
        }
    }

    /// Expires by `max_age` as of `now_ns`; returns the number removed.
    fn expire(&self, now_ns: u64) -> Result<u64, StorageError> {
        let Some(cutoff) = self.limits().expiry_cutoff(now_ns) else {
            return Ok(0);
        };
        match self.apply(StreamOp::ExpireBefore {
            timestamp_ns: cutoff,
        })? {
            OpResult::Expired { removed } => Ok(removed),
            _ => Err(StorageError::BatchAborted),
        }
    }

    /// Saves the stream's opaque config blob.
    fn save_stream_config(&self, config: &[u8]) -> Result<(), StorageError> {
        self.apply(StreamOp::SaveStreamConfig(Bytes::copy_from_slice(config)))
            .map(drop)
    }

    /// Saves a consumer's delivery state.
    fn save_consumer(&self, name: &str, state: &ConsumerState) -> Result<(), StorageError> {
        self.apply(StreamOp::SaveConsumerState {
            name: name.to_owned(),
            state: state.clone(),
        })
        .map(drop)
    }

    /// Saves a consumer's opaque config blob.
    fn save_consumer_config(&self, name: &str, config: &[u8]) -> Result<(), StorageError> {
        self.apply(StreamOp::SaveConsumerConfig {
            name: name.to_owned(),
            config: Bytes::copy_from_slice(config),
        })
        .map(drop)
    }

    /// Deletes a consumer; returns whether it existed.
    fn delete_consumer(&self, name: &str) -> Result<bool, StorageError> {
        match self.apply(StreamOp::DeleteConsumer {
            name: name.to_owned(),
        })? {
            OpResult::ConsumerDeleted { existed } => Ok(existed),
            _ => Err(StorageError::BatchAborted),
        }
    }

    /// A snapshot in memory; see [`StreamStore::snapshot_to`].
    fn snapshot(&self) -> Result<Vec<u8>, StorageError> {
        let mut out = Vec::new();
        self.snapshot_to(&mut out)?;
        Ok(out)
    }
}
