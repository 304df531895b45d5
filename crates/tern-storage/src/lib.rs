//! Stream storage for Tern: the messages of each JetStream stream, its
//! limits, its consumers' positions, and snapshots of all of it.
//!
//! # What this crate owns
//!
//! - The [`StreamStore`] trait, one stream's storage, with two
//!   implementations: [`SledStore`] (file storage: every file-backed stream
//!   of a server lives in one sled database, opened through [`Storage`]) and
//!   [`MemoryStore`] (JetStream's `memory` storage). Both run the same
//!   stream logic over different primitives, so they behave identically;
//!   a property test holds them to it.
//! - Every mutation as a deterministic [`StreamOp`] value applied with
//!   [`StreamStore::apply`] or [`StreamStore::apply_batch`]. The timestamp of
//!   an append and the cutoff of an expiry are inside the operation — apply
//!   never reads the clock — so a raft layer can log operations and apply
//!   them on every replica with the same result.
//! - Limits as nats-server enforces them on append: `max_msgs`, `max_bytes`,
//!   `max_msgs_per_subject`, `max_msg_size`, discard `old`/`new`,
//!   `discard_new_per_subject`, with typed [`StorageError`]s for discard-new
//!   rejections; `max_age` through [`StreamOp::ExpireBefore`], which the
//!   server issues periodically.
//! - Sequences as nats-server keeps them: they only grow; a purge moves
//!   `first_seq` to `last_seq + 1` and the next append gets `last_seq + 1`.
//! - Consumer state ([`ConsumerState`]) and opaque config blobs for the
//!   stream and each consumer, saved with the stream.
//! - Integrity: every record carries a CRC-32 (folded with its sequence);
//!   a record that fails it is reported as [`StorageError::Corrupt`] and
//!   never served as data. Snapshots are checksummed frame by frame and
//!   verified whole before a restore replaces anything.
//!
//! # Durability
//!
//! Under [`SyncPolicy::Always`] (the default),
//! [`SledStore::apply_batch`](StreamStore::apply_batch) appends the batch as
//! one record to the message log (the write-ahead log that also holds the
//! message blocks), fsyncs it, and applies it to sled before it returns:
//! whatever it reports as applied is on disk, and a record cut short by a
//! crash is dropped whole on the next open. Batches of concurrent callers
//! share one fsync, and batching concurrent publishes into one call is how
//! the server gets group commit. [`SyncPolicy::Interval`] writes to sled
//! directly (one atomic sled batch, blocks inline) and leaves the fsync to
//! sled's background flusher; acknowledged writes of the last interval can
//! then be lost if the process or machine dies.
//!
//! # Memory
//!
//! A file-backed stream keeps in memory its counters, its limits, one count
//! per distinct subject and its consumer names — never anything per message.
//! Deleted sequences are `last_seq - first_seq + 1 - messages` and listed by
//! a scan only when asked ([`StreamStore::deleted_seqs`]). sled's own page
//! cache is capped by [`StorageOptions::cache_capacity_bytes`].
//!
//! # Layout on disk
//!
//! See the `file` module: one sled tree, keys `stream id ++ sequence`
//! (big-endian) for message blocks, `stream id ++ subject ++ 0 ++ sequence`
//! for the subject lists, and per-stream metadata records; and the `log`
//! module: segment files beside the database holding the blocks that sled
//! points to.
//!
//! # What it must not do
//!
//! No networking, no async runtime, no configuration files or environment
//! variables, no clock reads in operations, no JetStream API semantics
//! (retention policies, dedupe windows, acks are the JetStream layer's: it
//! stores their results here). Methods are synchronous and may block on
//! disk; async callers use `spawn_blocking` or a dedicated thread. sled stays
//! inside this crate: no sled type appears in the public API.

mod block;
mod codec;
mod core;
mod error;
mod file;
mod log;
mod memory;
mod snapshot;
mod store;
mod types;

pub use error::StorageError;
pub use file::{SledStore, Storage, StorageOptions, StreamWipe};
pub use memory::MemoryStore;
pub use store::StreamStore;
pub use types::{
    Append, ConsumerState, DiscardPolicy, OpResult, PurgeRequest, StoredConsumer, StoredMessage,
    StreamLimits, StreamOp, StreamState, SyncPolicy,
};
