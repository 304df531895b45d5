//! File storage on sled: one database per data directory, one tree for all
//! streams.
//!
//! # Key layout (tree `streams`)
//!
//! ```text
//! 0x00 "format"                          -> storage format (u8)
//! 0x01 name                              -> stream id (u64 BE, sealed)
//! 0x02 id kind [consumer name]           -> metadata record (sealed)
//!        kind: 'l' limits, 's' counters, 'c' config blob,
//!              'k' consumer config, 'p' consumer state
//! 0x03 id base                           -> message block (see block), or a
//!                                           pointer to it, or to several
//!                                           consecutive ones, in the log
//!                                           (see log)
//! 0x04 id subject 0x00 base              -> sequences of the subject that
//!                                           one batch, or a run of batches,
//!                                           wrote, base the first (see
//!                                           block)
//! 0x05                                   -> the log's applied position
//! ```
//!
//! Ids and sequences are big-endian so byte order is numeric order: a
//! stream's blocks are one contiguous range, a subject's lists another. One
//! tree, not one per stream (sled grows badly with many trees) and not one
//! per kind: sled's `apply_batch` is atomic within one tree, so a batch of
//! operations — blocks, subject lists and the counters record — commits all
//! or nothing.
//!
//! The messages one batch appends become blocks of up to 8 KiB, so sled sees
//! a few keys per batch rather than two per message: that is most of the
//! write cost, and sled's memory grows with its keys. Under
//! `SyncPolicy::Always` the blocks themselves go to the message log and sled
//! holds pointers to them (see the `log` module for why, and for how
//! the log doubles as the write-ahead log of the batch); a batch adds its
//! blocks to the stream's last pointer while that has room, so a key stands
//! for up to 16 batches. Blocks never overlap: a block holds sequences from
//! its base up to below the next block's base. Removing messages rewrites
//! their block (and subject lists) without them, or, in the log, makes the
//! pointer list them.
//!
//! # What stays in memory
//!
//! Per stream only the [`StreamCore`]: counters, limits, one count per
//! subject and the consumer names. Nothing per message: the deleted
//! sequences are `last - first + 1 - msgs` and listed by a scan on demand.
//! sled keeps a page per few dozen keys; with blocks that is memory per
//! hundreds of messages.
//!
//! # Purges
//!
//! A purge of everything (or a compaction that keeps few messages) commits
//! only the new `first_seq`; records below it are dead from that moment and
//! are removed afterwards in chunks, outside the stream's lock. If the
//! process dies first, opening the stream finishes the job. A block that
//! straddles `first_seq` stays until all of it is below; readers skip its
//! dead part.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use sled::{Batch, IVec};

use crate::block::{self, Block, BlockBuilder};
use crate::codec::{self, Counters};
use crate::core::{Backend, Removed, ScanVisitor, StreamCore, View};
use crate::error::StorageError;
use crate::log::{self, Extent, Log, Ops, Ptr};
use crate::snapshot::{self, Frame, SnapshotWriter};
use crate::store::StreamStore;
use crate::types::{
    ConsumerState, OpResult, StoredConsumer, StoredMessage, StreamLimits, StreamOp, StreamState,
    SyncPolicy,
};

type Result<T> = std::result::Result<T, StorageError>;

const TAG_FORMAT: u8 = 0x00;
const TAG_NAME: u8 = 0x01;
const TAG_META: u8 = 0x02;
const TAG_MSG: u8 = crate::log::BLOCK_KEY_TAG;
const TAG_SUBJ: u8 = 0x04;

const KIND_LIMITS: u8 = b'l';
const KIND_COUNTERS: u8 = b's';
const KIND_CONFIG: u8 = b'c';
const KIND_CONSUMER_CONFIG: u8 = b'k';
const KIND_CONSUMER_STATE: u8 = b'p';

/// The layout written here: 5 is blocks in the message log or inline, with
/// pointers that name one block or several and list messages removed from
/// them; 4 (pointers to one block), 3 (no lists of removed messages) and 2
/// (blocks inline only) are read and upgraded in place; 1 (a key per
/// message) had no marker.
const FORMAT: u8 = 5;

/// Keys removed per batch by background cleanup and stream deletion.
const CHUNK: usize = 4096;

/// A batch extends the subject lists of the batch before it up to this many
/// sequences (about 512 bytes for consecutive ones): one key per subject
/// per batch made the index a key per 100–200 small messages, and sled's
/// page table grows with its keys.
const LIST_EXTEND_MAX: usize = 512;

/// A batch extends a list only while the list holds at most this many times
/// the entries it adds: many subjects with a message or two per batch
/// would otherwise rewrite (and log) hundreds of entries per subject for
/// each one added.
const LIST_EXTEND_RATIO: usize = 8;

/// Subjects whose last list a stream remembers, to extend it; past this the
/// memory is given back and lists start afresh.
const TAILS_MAX: usize = 1024;

fn block_key(id: u64, seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = TAG_MSG;
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn stream_prefix(tag: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn idx_key(id: u64, subject: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18 + subject.len());
    k.extend_from_slice(&stream_prefix(TAG_SUBJ, id));
    k.extend_from_slice(subject);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence in the last eight bytes of a block or subject list key.
fn key_seq(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn meta_key(id: u64, kind: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + name.len());
    k.extend_from_slice(&stream_prefix(TAG_META, id));
    k.push(kind);
    k.extend_from_slice(name.as_bytes());
    k
}

fn name_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(TAG_NAME);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The exclusive end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Options for [`Storage::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// When writes are fsynced; [`SyncPolicy::Always`] by default.
    pub sync: SyncPolicy,
    /// sled's page cache in bytes (8 MiB by default; sled's own default is
    /// 1 GiB, which would look like memory growing with stored messages).
    /// sled holds the index (block pointers, subject lists, metadata), not
    /// the message bytes; its pages take about two and a half times their
    /// cached size in memory. With 16-byte messages an 8 MiB cache filled at
    /// about 6 million of them when each batch added a key (a pointer now
    /// names up to 16 batches' blocks). A 2 MiB cache filled sooner but cost
    /// 10–12% of the acked publish rate in more CPU (2026-11-27).
    pub cache_capacity_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync: SyncPolicy::Always,
            cache_capacity_bytes: 8 << 20,
        }
    }
}

struct Db {
    db: sled::Db,
    tree: sled::Tree,
    sync: SyncPolicy,
    /// Where blocks go under [`SyncPolicy::Always`]; see [`crate::log`].
    log: Log,
    /// A batch holds this shared from reading the pointers it thins or
    /// extends until it is applied; compaction holds it alone from reading
    /// the pointers it moves until the moves are applied. Otherwise a batch
    /// could rewrite a pointer that a move just replaced, putting back a
    /// pointer into a segment that is about to be deleted.
    moves: RwLock<()>,
}

impl Db {
    /// The block stored under `key` from its sled value `raw` (inline, or
    /// a pointer into the log; all the blocks a pointer names, as one);
    /// `None` if it is missing or damaged.
    fn block(&self, key: &[u8], raw: IVec) -> Result<Option<Block>> {
        self.read_block(key, raw, None)
    }

    /// The block under `key` that would hold `seq`: of the blocks a pointer
    /// names, only the one with the greatest base `<= seq` is read.
    fn block_holding(&self, key: &[u8], raw: IVec, seq: u64) -> Result<Option<Block>> {
        self.read_block(key, raw, Some(seq))
    }

    fn read_block(&self, key: &[u8], raw: IVec, seq: Option<u64>) -> Result<Option<Block>> {
        let base = key_seq(key);
        if let Some(found) = self.logged_block(base, &raw, seq)? {
            return Ok(found);
        }
        // Moved by compaction, and its old segment deleted, since `raw` was
        // read: read where it is now.
        match self.tree.get(key)? {
            Some(now) if now != raw => Ok(self.logged_block(base, &now, seq)?.flatten()),
            _ => Ok(None),
        }
    }

    fn block_from(&self, base: u64, raw: IVec) -> Result<Option<Block>> {
        Ok(self.logged_block(base, &raw, None)?.flatten())
    }

    /// The block(s) the value `raw` under `base` holds or points to, less
    /// the messages its pointer lists as removed; `Some(None)` if damaged
    /// (a removed list that does not decode, or names what the blocks
    /// lack, is damage: they are reported, not served half removed), and
    /// `None` if the log no longer holds a block it names.
    fn logged_block(
        &self,
        base: u64,
        raw: &IVec,
        seq: Option<u64>,
    ) -> Result<Option<Option<Block>>> {
        let Some(extents) = Ptr::extents(raw) else {
            return Ok(Some(Block::parse(base, Bytes::from_owner(raw.clone()))));
        };
        let removed = match Ptr::removed(raw) {
            None => Vec::new(),
            Some(list) => match block::decode_list(base, list) {
                Some(removed) => removed,
                None => return Ok(Some(None)),
            },
        };
        let start = |e: &Extent| base + u64::from(e.delta);
        let wanted = match seq {
            Some(seq) => {
                let i = extents
                    .partition_point(|e| start(e) <= seq)
                    .saturating_sub(1);
                i..i + 1
            }
            None => 0..extents.len(),
        };
        let mut parts = Vec::with_capacity(wanted.len());
        for e in &extents[wanted.clone()] {
            let Some(bytes) = self.log.read(e.ptr)? else {
                return Ok(None);
            };
            let Some(part) = Block::parse(start(e), bytes) else {
                return Ok(Some(None));
            };
            parts.push(part);
        }
        if extents.len() == 1 && extents[0].delta == 0 {
            return Ok(Some(parts.pop().and_then(|b| b.thinned(&removed))));
        }
        if seq.is_none() {
            return Ok(Some(
                Block::merge(base, &parts).and_then(|b| b.thinned(&removed)),
            ));
        }
        let lo = start(&extents[wanted.start]);
        let hi = extents.get(wanted.end).map_or(u64::MAX, start);
        let gone: Vec<u64> = removed
            .into_iter()
            .filter(|s| (lo..hi).contains(s))
            .collect();
        Ok(Some(
            parts
                .pop()
                .and_then(|b| b.thinned(&gone))
                .map(|b| b.part_of(base, raw.clone())),
        ))
    }

    /// Writes a batch. Under [`SyncPolicy::Always`] it goes through the log
    /// and is on disk when this returns; otherwise it is applied to sled
    /// directly and sled's background flusher makes it durable.
    fn write(&self, ops: Ops) -> Result<()> {
        if self.sync == SyncPolicy::Always {
            let ticket = self.log.append(ops)?;
            self.log.sync_to(ticket, &self.tree)?;
        } else {
            let (batch, released) = ops.into_inline();
            self.tree.apply_batch(batch)?;
            self.log.release(&released);
        }
        Ok(())
    }

    /// Removes a block key, releasing the log pointer it held, if any.
    fn remove_block(&self, key: &[u8]) -> Result<()> {
        self.log.remove_block(&self.tree, key)
    }

    /// Copies the live blocks of sparse log segments to the end of the log,
    /// so the segments can be deleted; a block a stream rewrites meanwhile
    /// keeps its new version (each move is a compare-and-swap). Returns the
    /// blocks moved.
    fn compact(&self, stop: &dyn Fn() -> bool) -> Result<usize> {
        if self.sync != SyncPolicy::Always {
            return Ok(0);
        }
        let sparse = self.log.sparse_segments();
        if sparse.is_empty() {
            return Ok(0);
        }
        let moved = self.move_blocks_out_of(&sparse, stop);
        if moved.is_err() {
            self.log.unmark_compacted(&sparse);
        }
        self.collect();
        moved
    }

    /// Moves the blocks that point into `sparse`, a chunk at a time; gives
    /// up (an error) once `stop` says the storage is being closed. Each
    /// chunk reads its pointers again, and applies its moves, with no batch
    /// in between (see [`Db::moves`]).
    fn move_blocks_out_of(&self, sparse: &[u32], stop: &dyn Fn() -> bool) -> Result<usize> {
        let in_sparse = |value: &[u8]| {
            Ptr::extents(value).filter(|ext| ext.iter().any(|e| sparse.contains(&e.ptr.seg())))
        };
        let mut keys = Vec::new();
        for (n, item) in self.tree.scan_prefix([TAG_MSG]).enumerate() {
            if n % 1024 == 0 && stop() {
                return Err(StorageError::Backend("storage closed".into()));
            }
            let (key, value) = item?;
            if in_sparse(&value).is_some() {
                keys.push(key);
            }
        }
        let mut moved = 0;
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            if stop() {
                return Err(StorageError::Backend("storage closed".into()));
            }
            let _moves = self.moves.write();
            let (mut ops, mut bytes) = (Ops::default(), 0);
            for key in keys.by_ref() {
                let Some(value) = self.tree.get(&key)? else {
                    continue;
                };
                let Some(extents) = in_sparse(&value) else {
                    continue;
                };
                // A block the log cannot produce stays where it is (and is
                // reported to its readers). A block that messages were
                // removed from moves without them; the blocks one pointer
                // names move as one.
                let block = match extents[..] {
                    [only] if only.delta == 0 && Ptr::removed(&value).is_none() => {
                        self.log.read(only.ptr)?.map(|b| b.to_vec())
                    }
                    _ => match self.block_from(key_seq(&key), value.clone())? {
                        Some(b) => b.without(|_| false),
                        None => None,
                    },
                };
                let Some(block) = block else {
                    continue;
                };
                bytes += block.len();
                ops.move_block(key.to_vec(), value, block);
                moved += 1;
                if bytes >= 1 << 20 {
                    break;
                }
            }
            if !ops.is_empty() {
                self.write(ops)?;
            }
        }
        Ok(moved)
    }

    /// Deletes log segments nothing points into any more.
    fn collect(&self) {
        if let Err(e) = self.log.collect(&self.tree) {
            tracing::warn!(error = %e, "removing unused message log segments failed");
        }
    }
}

/// The file storage of one server: a sled database in a data directory
/// holding every file-backed stream. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    db: Arc<Db>,
    streams: Arc<Mutex<HashMap<String, Arc<SledStore>>>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("sync", &self.db.sync)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (or creates) the storage in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Storage> {
        Storage::open_with(dir, StorageOptions::default())
    }

    /// Opens (or creates) the storage in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, options: StorageOptions) -> Result<Storage> {
        let mut config = sled::Config::new()
            .path(dir.as_ref())
            .cache_capacity(options.cache_capacity_bytes);
        if let SyncPolicy::Interval(every) = options.sync {
            let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
            config = config.flush_every_ms(Some(ms));
        }
        #[cfg(test)]
        if tests::NO_BACKGROUND_FLUSH.load(std::sync::atomic::Ordering::SeqCst) {
            config = config.flush_every_ms(None);
        }
        let db = open_retrying(&config)?;
        let tree = db.open_tree("streams")?;
        let upgrade = check_format(&tree)?;
        let log = Log::open(dir.as_ref(), &tree, |visit| {
            for item in tree.scan_prefix([TAG_MSG]) {
                visit(&item?.1);
            }
            Ok(())
        })?;
        if upgrade {
            tree.insert([TAG_FORMAT], &[FORMAT])?;
            tree.flush()?;
        }
        let db = Arc::new(Db {
            db,
            tree,
            sync: options.sync,
            log,
            moves: RwLock::new(()),
        });
        if options.sync == SyncPolicy::Always {
            let weak = Arc::downgrade(&db);
            std::thread::Builder::new()
                .name("tern-log-compact".into())
                .spawn(move || compactor(weak))
                .map_err(|e| StorageError::Backend(format!("starting log compaction: {e}")))?;
        }
        let storage = Storage {
            db,
            streams: Arc::new(Mutex::new(HashMap::new())),
        };
        storage.remove_orphans()?;
        Ok(storage)
    }

    /// Creates an empty stream.
    pub fn create_stream(&self, name: &str, limits: StreamLimits) -> Result<Arc<dyn StreamStore>> {
        if name.is_empty() {
            return Err(StorageError::InvalidRequest("empty stream name"));
        }
        let mut streams = self.streams.lock();
        let t = &self.db.tree;
        if t.contains_key(name_key(name))? {
            return Err(StorageError::StreamExists);
        }
        let id = self.db.db.generate_id()?;
        let core = StreamCore::new(name.to_owned(), limits);
        let mut batch = Batch::default();
        batch.insert(name_key(name), codec::encode_blob(&id.to_be_bytes()));
        batch.insert(
            meta_key(id, KIND_LIMITS, ""),
            codec::encode_limits(&core.limits),
        );
        batch.insert(
            meta_key(id, KIND_COUNTERS, ""),
            codec::encode_counters(&core.c),
        );
        t.apply_batch(batch)?;
        t.flush()?;
        let store = Arc::new(SledStore::new(name, id, self.db.clone(), core));
        streams.insert(name.to_owned(), store.clone());
        Ok(store)
    }

    /// Opens an existing stream (the same handle for every caller).
    pub fn open_stream(&self, name: &str) -> Result<Arc<dyn StreamStore>> {
        let mut streams = self.streams.lock();
        if let Some(s) = streams.get(name) {
            return Ok(s.clone());
        }
        let id = self.stream_id(name)?.ok_or(StorageError::StreamNotFound)?;
        let core = load_core(&self.db, id, name, true)?;
        let store = Arc::new(SledStore::new(name, id, self.db.clone(), core));
        streams.insert(name.to_owned(), store.clone());
        Ok(store)
    }

    /// Deletes a stream with its messages and consumers. Handles still held
    /// fail with [`StorageError::StreamDeleted`] from then on.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        self.begin_delete_stream(name)?.finish()
    }

    /// Deletes a stream in two steps: this call removes its name (durably,
    /// so the stream is gone for good and the name can be reused at once)
    /// and returns the [`StreamWipe`] that removes its records, which can
    /// take a while for a big stream and may run later or elsewhere. A wipe
    /// that never runs is finished by the next [`Storage::open`].
    pub fn begin_delete_stream(&self, name: &str) -> Result<StreamWipe> {
        let mut streams = self.streams.lock();
        let id = self.stream_id(name)?.ok_or(StorageError::StreamNotFound)?;
        let open = streams.remove(name);
        if let Some(s) = &open {
            let _maintenance = s.maintenance.lock();
            s.slot.write().status = Status::Deleted;
        }
        // Once the name is gone the rest is garbage that a later open would
        // also remove (`remove_orphans`).
        self.db.tree.remove(name_key(name))?;
        self.db.tree.flush()?;
        Ok(StreamWipe {
            db: self.db.clone(),
            id,
        })
    }

    /// Names of all streams, sorted.
    pub fn list_streams(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for item in self.db.tree.scan_prefix([TAG_NAME]) {
            let (k, _) = item?;
            names.push(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(names)
    }

    /// Fsyncs everything written so far.
    pub fn flush(&self) -> Result<()> {
        self.db.tree.flush()?;
        Ok(())
    }

    /// Bytes the database and the message log take on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.db.size_on_disk()? + self.db.log.size_on_disk()?)
    }

    /// The sync policy the storage was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.db.sync
    }

    fn stream_id(&self, name: &str) -> Result<Option<u64>> {
        let Some(raw) = self.db.tree.get(name_key(name))? else {
            return Ok(None);
        };
        let id = codec::decode_blob(&raw)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StorageError::CorruptMeta {
                stream: name.to_owned(),
                what: "name",
            })?;
        Ok(Some(id))
    }

    /// Removes data of streams whose deletion was interrupted.
    fn remove_orphans(&self) -> Result<()> {
        let t = &self.db.tree;
        let mut live = std::collections::HashSet::new();
        for item in t.scan_prefix([TAG_NAME]) {
            let (_, v) = item?;
            if let Some(id) = codec::decode_blob(&v).and_then(|b| b.try_into().ok()) {
                live.insert(u64::from_be_bytes(id));
            }
        }
        let mut orphans = std::collections::BTreeSet::new();
        for tag in [TAG_META, TAG_MSG, TAG_SUBJ] {
            let mut from = vec![tag];
            // One seek per distinct id: jump past each id's range.
            while let Some(item) = t.range(from.clone()..prefix_end(&[tag])).next() {
                let (k, _) = item?;
                let Some(id) = k.get(1..9).and_then(|b| b.try_into().ok()) else {
                    break;
                };
                let id = u64::from_be_bytes(id);
                if !live.contains(&id) {
                    orphans.insert(id);
                }
                from = prefix_end(&stream_prefix(tag, id));
            }
        }
        for id in orphans {
            tracing::warn!(stream_id = id, "removing data of a deleted stream");
            wipe_stream(&self.db, id)?;
        }
        self.db.collect();
        Ok(())
    }
}

/// Compacts the message log in the background while the storage is open:
/// twice a second it looks (in memory) for sparse segments, and closes the
/// files of segments deleted long enough ago (see `Log::collect`).
fn compactor(db: std::sync::Weak<Db>) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let Some(db) = db.upgrade() else {
            return;
        };
        #[cfg(test)]
        let skip = crate::log::test_hooks::NO_COMPACTION.load(std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(test))]
        let skip = false;
        let closing = || std::sync::Arc::strong_count(&db) == 1;
        match if skip { Ok(0) } else { db.compact(&closing) } {
            Ok(0) => {}
            Err(_) if closing() => return,
            Ok(moved) => tracing::debug!(blocks = moved, "compacted the message log"),
            Err(e) => tracing::warn!(error = %e, "compacting the message log failed"),
        }
        // Deleted segments' files close even while nothing is written.
        db.collect();
    }
}

/// Opens the database, waiting up to two seconds for its file lock: after a
/// `Storage` of the same directory is dropped in this process, sled's
/// background threads may hold the lock a moment longer.
fn open_retrying(config: &sled::Config) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// The records of a deleted stream, still to be removed; see
/// [`Storage::begin_delete_stream`].
#[must_use = "a wipe does nothing until finish() runs"]
pub struct StreamWipe {
    db: Arc<Db>,
    id: u64,
}

impl fmt::Debug for StreamWipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWipe").field("id", &self.id).finish()
    }
}

impl StreamWipe {
    /// Removes the records, in chunks; may take a while for a big stream.
    pub fn finish(self) -> Result<()> {
        wipe_stream(&self.db, self.id)?;
        self.db.collect();
        Ok(())
    }
}

/// Removes every key of a stream, in chunks.
fn wipe_stream(db: &Db, id: u64) -> Result<()> {
    for tag in [TAG_MSG, TAG_SUBJ, TAG_META] {
        remove_range(db, &stream_prefix(tag, id))?;
    }
    Ok(())
}

/// Removes the keys under `prefix`, `CHUNK` per batch.
fn remove_range(db: &Db, prefix: &[u8]) -> Result<()> {
    if prefix.first() == Some(&TAG_MSG) {
        // One by one: each releases the log pointer it actually removed.
        for item in db.tree.scan_prefix(prefix).keys() {
            db.remove_block(&item?)?;
        }
        return Ok(());
    }
    loop {
        let mut batch = Batch::default();
        let mut seen = 0;
        for item in db.tree.scan_prefix(prefix).keys().take(CHUNK) {
            batch.remove(item?);
            seen += 1;
        }
        db.tree.apply_batch(batch)?;
        if seen < CHUNK {
            return Ok(());
        }
    }
}

/// Rebuilds a stream's in-memory figures from disk and, if `finish_cleanup`,
/// finishes any interrupted cleanup below `first_seq`.
fn load_core(db: &Db, id: u64, name: &str, finish_cleanup: bool) -> Result<StreamCore> {
    let t = &db.tree;
    let corrupt = |what| StorageError::CorruptMeta {
        stream: name.to_owned(),
        what,
    };
    let limits = t
        .get(meta_key(id, KIND_LIMITS, ""))?
        .and_then(|raw| codec::decode_limits(&raw))
        .ok_or_else(|| corrupt("limits"))?;
    let counters = t
        .get(meta_key(id, KIND_COUNTERS, ""))?
        .and_then(|raw| codec::decode_counters(&raw))
        .ok_or_else(|| corrupt("state"))?;
    let mut core = StreamCore::new(name.to_owned(), limits);
    core.c = counters;
    for kind in [KIND_CONSUMER_CONFIG, KIND_CONSUMER_STATE] {
        let prefix = meta_key(id, kind, "");
        for item in t.scan_prefix(&prefix) {
            let (k, _) = item?;
            core.consumers
                .insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
    }
    let first = counters.first_seq;
    let prefix = stream_prefix(TAG_SUBJ, id);
    let mut dead = false;
    for item in t.scan_prefix(prefix) {
        let (k, v) = item?;
        let base = key_seq(&k);
        let subject = &k[prefix.len()..k.len().saturating_sub(9)];
        let Some(seqs) = block::decode_list(base, &v) else {
            if base < first {
                dead = true;
            } else {
                tracing::warn!(stream = name, base, "damaged subject list");
            }
            continue;
        };
        let live = seqs.iter().filter(|s| **s >= first).count() as u64;
        dead |= live < seqs.len() as u64;
        if live == 0 {
            continue;
        }
        match core.subjects.get_mut(subject) {
            Some(n) => *n += live,
            None => {
                core.subjects.insert(Bytes::copy_from_slice(subject), live);
            }
        }
    }
    let below_first = t
        .range(block_key(id, 0)..block_key(id, first))
        .next()
        .transpose()?
        .is_some();
    if finish_cleanup && (dead || below_first) {
        cleanup_below(db, id, first)?;
        db.collect();
    }
    let indexed: u64 = core.subjects.values().sum();
    if indexed != counters.msgs {
        tracing::warn!(
            stream = name,
            indexed,
            counted = counters.msgs,
            "subject index and message count disagree"
        );
    }
    Ok(core)
}

/// Removes the blocks and subject lists wholly below `fence`; a block that
/// straddles it stays (readers skip its dead part).
fn cleanup_below(db: &Db, id: u64, fence: u64) -> Result<()> {
    let t = &db.tree;
    let mut batch = Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut Batch, pending: &mut usize| -> Result<()> {
        *pending += 1;
        if *pending >= CHUNK {
            t.apply_batch(std::mem::take(batch))?;
            *pending = 0;
        }
        Ok(())
    };
    // A block is dead when the next one starts at or below the fence.
    let mut prev: Option<(IVec, IVec)> = None;
    for item in t.range(block_key(id, 0)..=block_key(id, fence)) {
        let (k, v) = item?;
        if let Some((dead, _)) = prev.replace((k, v)) {
            db.remove_block(&dead)?;
        }
    }
    if let Some((k, v)) = prev {
        let base = key_seq(&k);
        // The last block the key names holds its last sequence.
        let below = db
            .block_holding(&k, v, u64::MAX)?
            .and_then(|b| b.last_seq())
            .is_some_and(|last| last < fence);
        if base < fence && below {
            db.remove_block(&k)?;
        }
    }
    for item in t.scan_prefix(stream_prefix(TAG_SUBJ, id)) {
        let (k, v) = item?;
        let base = key_seq(&k);
        if base >= fence {
            continue;
        }
        let live = match block::decode_list(base, &v) {
            Some(seqs) => seqs.last().is_some_and(|last| *last >= fence),
            // A damaged list may still name live messages: those of its
            // subject from the fence up to where its next list starts.
            None => {
                let mut next = k.to_vec();
                next.push(0);
                let mut end = k[..k.len() - 8].to_vec();
                end.extend_from_slice(&u64::MAX.to_be_bytes());
                let until = t
                    .range(next..=end)
                    .next()
                    .transpose()?
                    .map_or(u64::MAX, |(n, _)| key_seq(&n));
                let subject = &k[9..k.len() - 9];
                let live = until > fence && has_subject_between(db, id, subject, fence, until)?;
                if live {
                    tracing::warn!(base, "damaged subject list kept: it names live messages");
                }
                live
            }
        };
        if !live {
            batch.remove(k);
            flush(&mut batch, &mut pending)?;
        }
    }
    #[cfg(test)]
    tests::before_cleanup_removes();
    t.apply_batch(batch)?;
    Ok(())
}

/// The sequence in the key of the last entry in `lo..=hi` (a block or a
/// subject list starting at or before `hi`'s sequence), else `hi`'s: where a
/// forward walk from `hi`'s sequence must start, since that entry may hold it.
fn walk_start(t: &sled::Tree, lo: &[u8], hi: &[u8]) -> Result<u64> {
    Ok(t.range(lo..=hi)
        .next_back()
        .transpose()?
        .map_or(key_seq(hi), |(k, _)| key_seq(&k)))
}

/// The next entry of `iter`, from the back when `rev`.
fn step(iter: &mut sled::Iter, rev: bool) -> Option<Result<(IVec, IVec)>> {
    let item = if rev { iter.next_back() } else { iter.next() };
    item.map(|r| r.map_err(StorageError::from))
}

/// Whether a stored message in `from..until` has `subject` (or a subject
/// that cannot be read, which might be it).
fn has_subject_between(db: &Db, id: u64, subject: &[u8], from: u64, until: u64) -> Result<bool> {
    let t = &db.tree;
    let start = walk_start(t, &block_key(id, 0), &block_key(id, from))?;
    for item in t.range(block_key(id, start)..block_key(id, until)) {
        let (k, v) = item?;
        let Some(b) = db.block(&k, v)? else {
            return Ok(true);
        };
        for i in b.lower_bound(from)..b.len() {
            if b.seq(i) >= until {
                break;
            }
            if codec::peek_subject(&b.record(i)).is_none_or(|s| s == subject) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Refuses a data directory written in another layout, and marks a new one.
/// Returns whether it is to be marked as this format once it opened.
fn check_format(t: &sled::Tree) -> Result<bool> {
    match t.get([TAG_FORMAT])? {
        Some(v) if v.as_ref() == [FORMAT] => Ok(false),
        // Format 4 is format 5 without pointers to several blocks; 3 is 4
        // without lists of removed messages; 2 is 3 without pointers into
        // the log.
        Some(v) if matches!(v.as_ref(), [2..=4]) => Ok(true),
        Some(v) => Err(StorageError::Backend(format!(
            "the data directory is in storage format {}; this version reads formats 2 to {FORMAT}",
            v.first().copied().unwrap_or(0)
        ))),
        None if t.scan_prefix([TAG_NAME]).next().is_some() => Err(StorageError::Backend(format!(
            "the data directory holds streams in storage format 1 (a key per message); \
             this version reads format {FORMAT} only: back the streams up with a client \
             and restore them into a new directory"
        ))),
        None => Ok(true),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Live,
    Deleted,
    /// Reloading after a failed batch failed too; the stream needs a reopen.
    Broken(String),
}

#[derive(Debug)]
struct Slot {
    core: StreamCore,
    status: Status,
}

impl Slot {
    fn check(&self) -> Result<()> {
        match &self.status {
            Status::Live => Ok(()),
            Status::Deleted => Err(StorageError::StreamDeleted),
            Status::Broken(e) => Err(StorageError::Backend(e.clone())),
        }
    }
}

/// One file-backed stream of a [`Storage`].
pub struct SledStore {
    name: String,
    id: u64,
    db: Arc<Db>,
    slot: RwLock<Slot>,
    /// Serializes cleanup below the fence with restore and deletion.
    maintenance: Mutex<()>,
    /// The block read last: a consumer reads a block's messages one call
    /// at a time, and this saves a seek and a header check for each.
    /// Cleared when a batch rewrites or removes stored blocks, or adds blocks
    /// to the pointer it came from; a compaction move leaves it (the
    /// messages stay the same), which is why a block read as one of a
    /// pointer's several never stands for a pointer that names one.
    last_block: Mutex<Option<Block>>,
    /// The last subject list written for each subject that batches wrote to
    /// lately (up to [`TAILS_MAX`]): subject → the base of the list. A batch
    /// extends those lists rather than adding a key per subject per batch
    /// (see [`LIST_EXTEND_MAX`]).
    tails: Mutex<HashMap<Bytes, u64>>,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    fn new(name: &str, id: u64, db: Arc<Db>, core: StreamCore) -> Self {
        SledStore {
            name: name.to_owned(),
            id,
            db,
            slot: RwLock::new(Slot {
                core,
                status: Status::Live,
            }),
            maintenance: Mutex::new(()),
            last_block: Mutex::new(None),
            tails: Mutex::new(HashMap::new()),
        }
    }

    fn txn(&self) -> SledTxn<'_> {
        SledTxn {
            db: &self.db,
            tree: &self.db.tree,
            id: self.id,
            stream: &self.name,
            msgs: BTreeMap::new(),
            idx: HashMap::new(),
            meta: BTreeMap::new(),
            dropped: BTreeMap::new(),
            drop_fence: None,
            last_block: &self.last_block,
            tails: &self.tails,
        }
    }

    fn read<R>(&self, f: impl FnOnce(&StreamCore, &SledTxn<'_>) -> Result<R>) -> Result<R> {
        let slot = self.slot.read();
        slot.check()?;
        f(&slot.core, &self.txn())
    }

    /// Removes dead records below `fence` without holding the stream lock.
    fn cleanup(&self, fence: u64) -> Result<()> {
        let _maintenance = self.maintenance.lock();
        let fence = {
            let slot = self.slot.read();
            if slot.status != Status::Live {
                return Ok(());
            }
            // A restore since may have put live records below the old fence.
            fence.min(slot.core.c.first_seq)
        };
        let done = cleanup_below(&self.db, self.id, fence);
        *self.last_block.lock() = None;
        self.db.collect();
        done
    }

    fn meta_blob(&self, kind: u8, name: &str, what: &'static str) -> Result<Option<Bytes>> {
        let Some(raw) = self.db.tree.get(meta_key(self.id, kind, name))? else {
            return Ok(None);
        };
        codec::decode_blob(&raw)
            .map(|b| Some(Bytes::copy_from_slice(b)))
            .ok_or_else(|| self.corrupt_meta(what))
    }

    /// Reads the saved consumers; the caller holds the slot lock.
    fn consumers_unlocked(&self) -> Result<BTreeMap<String, StoredConsumer>> {
        let mut out: BTreeMap<String, StoredConsumer> = BTreeMap::new();
        for kind in [KIND_CONSUMER_CONFIG, KIND_CONSUMER_STATE] {
            let prefix = meta_key(self.id, kind, "");
            for item in self.db.tree.scan_prefix(&prefix) {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let entry = out.entry(name).or_default();
                if kind == KIND_CONSUMER_CONFIG {
                    let blob =
                        codec::decode_blob(&v).ok_or_else(|| self.corrupt_meta("consumer"))?;
                    entry.config = Bytes::copy_from_slice(blob);
                } else {
                    entry.state = codec::decode_consumer_state(&v)
                        .ok_or_else(|| self.corrupt_meta("consumer"))?;
                }
            }
        }
        Ok(out)
    }

    fn corrupt_meta(&self, what: &'static str) -> StorageError {
        StorageError::CorruptMeta {
            stream: self.name.clone(),
            what,
        }
    }
}

impl StreamStore for SledStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply_batch(&self, ops: Vec<StreamOp>) -> Vec<Result<OpResult>> {
        let n = ops.len();
        let mut slot = self.slot.write();
        if let Err(e) = slot.check() {
            return vec![Err(e); n];
        }
        let before = slot.core.c;
        let mut txn = self.txn();
        let mut results = Vec::with_capacity(n);
        let mut failed = None;
        for op in ops {
            if failed.is_some() {
                results.push(Err(StorageError::BatchAborted));
                continue;
            }
            let r = slot.core.apply(&mut txn, op);
            if let Err(e) = &r {
                if aborts_batch(e) {
                    failed = Some(e.clone());
                }
            }
            results.push(r);
        }
        if failed.is_none() && txn.is_empty() && slot.core.c == before {
            return results; // nothing to write: every op was rejected
        }
        // The stream stays locked until the batch is durable: readers must
        // not find counters that name messages sled does not hold yet.
        let committed = match failed {
            Some(e) => Err(e),
            None => {
                let _moves = self.db.moves.read();
                txn.commit(&slot.core.c).and_then(|(ops, fence)| {
                    #[cfg(test)]
                    tests::after_commit(&self.name);
                    self.db.write(ops)?;
                    Ok(fence)
                })
            }
        };
        let fence = match committed {
            Ok(fence) => fence,
            Err(e) => {
                *self.last_block.lock() = None;
                // Lists this batch meant to write may not exist (extending
                // re-reads them anyway, so this only keeps it simple).
                self.tails.lock().clear();
                // The in-memory figures ran ahead of the disk: reload them.
                // No cleanup from here: one may be running already (it
                // holds `maintenance`, not the slot); the next one, or the
                // next open, finishes the job.
                slot.status = match load_core(&self.db, self.id, &self.name, false) {
                    Ok(core) => {
                        slot.core = core;
                        Status::Live
                    }
                    // Kept as the text of a backend error, without its prefix.
                    Err(StorageError::Backend(text)) => Status::Broken(text),
                    Err(reload) => Status::Broken(reload.to_string()),
                };
                return abort(results, &e);
            }
        };
        drop(slot);
        self.db.collect();
        if let Some(fence) = fence {
            if let Err(e) = self.cleanup(fence) {
                tracing::warn!(stream = %self.name, error = %e, "cleanup after purge failed");
            }
        }
        results
    }

    fn get(&self, seq: u64) -> Result<StoredMessage> {
        self.read(|core, v| core.get(v, seq))
    }

    fn next_matching(&self, start_seq: u64, filter: &[u8]) -> Result<Option<StoredMessage>> {
        self.read(|core, v| core.next_matching(v, start_seq, filter))
    }

    fn last_by_subject(&self, filter: &[u8]) -> Result<Option<StoredMessage>> {
        self.read(|core, v| core.last_by_subject(v, filter))
    }

    fn state(&self) -> Result<StreamState> {
        self.read(|core, v| core.state(v))
    }

    fn totals(&self) -> Result<(u64, u64)> {
        self.read(|core, _| Ok((core.c.msgs, core.c.bytes)))
    }

    fn deleted_seqs(&self) -> Result<Vec<u64>> {
        self.read(|core, v| core.deleted_seqs(v))
    }

    fn subjects_state(&self, filter: &[u8]) -> Result<BTreeMap<Bytes, u64>> {
        self.read(|core, _| core.subjects_state(filter))
    }

    fn count_matching(&self, filter: &[u8], from_seq: u64) -> Result<u64> {
        self.read(|core, v| core.count_matching(v, filter, from_seq))
    }

    fn seq_for_time(&self, timestamp_ns: u64) -> Result<Option<u64>> {
        self.read(|core, v| core.seq_for_time(v, timestamp_ns))
    }

    fn limits(&self) -> StreamLimits {
        self.slot.read().core.limits.clone()
    }

    fn stream_config(&self) -> Result<Option<Bytes>> {
        self.read(|_, _| self.meta_blob(KIND_CONFIG, "", "config"))
    }

    fn load_consumers(&self) -> Result<BTreeMap<String, StoredConsumer>> {
        self.read(|_, _| self.consumers_unlocked())
    }

    fn snapshot_to(&self, out: &mut dyn Write) -> Result<()> {
        // The read lock keeps mutations out until the snapshot is written.
        self.read(|core, txn| {
            let mut w = SnapshotWriter::start(out, &core.limits, &core.c)?;
            if let Some(config) = self.meta_blob(KIND_CONFIG, "", "config")? {
                w.config(&config)?;
            }
            for (name, consumer) in &self.consumers_unlocked()? {
                w.consumer(name, consumer)?;
            }
            for item in txn.disk_entries(core.c.first_seq, false)? {
                let (seq, record) = item?;
                if codec::decode_msg(seq, record.clone()).is_none() {
                    return Err(core.corrupt(seq));
                }
                w.message_record(seq, &record)?;
            }
            w.finish()
        })
    }

    fn restore(&self, snapshot: &[u8]) -> Result<()> {
        let header = snapshot::verify(snapshot)?;
        let _maintenance = self.maintenance.lock();
        let mut slot = self.slot.write();
        slot.check()?;
        let t = &self.db.tree;
        let id = self.id;
        // Counters first: a crash mid-restore leaves a stream that refuses to
        // open (corrupt state) rather than one that looks whole.
        t.remove(meta_key(id, KIND_COUNTERS, ""))?;
        *self.last_block.lock() = None;
        self.tails.lock().clear();
        wipe_stream(&self.db, id)?;
        let mut core = snapshot::core_from(&self.name, header);
        // Restored blocks are stored inline: a restore is one big write,
        // flushed once at its end.
        let mut batch = Ops::default();
        let mut blocks = Blocks::new(id, block::BLOCK_DATA_TARGET, false);
        let mut pending = 0;
        batch.insert(
            meta_key(id, KIND_LIMITS, ""),
            codec::encode_limits(&core.limits),
        );
        snapshot::read(snapshot, |frame| {
            match frame {
                Frame::Config(c) => {
                    batch.insert(meta_key(id, KIND_CONFIG, ""), codec::encode_blob(c))
                }
                Frame::Consumer(name, consumer) => {
                    batch.insert(
                        meta_key(id, KIND_CONSUMER_CONFIG, &name),
                        codec::encode_blob(&consumer.config),
                    );
                    batch.insert(
                        meta_key(id, KIND_CONSUMER_STATE, &name),
                        codec::encode_consumer_state(&consumer.state),
                    );
                    core.consumers.insert(name);
                }
                Frame::Message(msg, record) => {
                    blocks.push_record(&mut batch, msg.seq, &msg.subject, record);
                    pending += 1;
                }
            }
            if pending >= CHUNK {
                blocks.finish_all(&mut batch);
                t.apply_batch(std::mem::take(&mut batch).into_inline().0)?;
                pending = 0;
            }
            Ok(())
        })?;
        blocks.finish_all(&mut batch);
        batch.insert(
            meta_key(id, KIND_COUNTERS, ""),
            codec::encode_counters(&core.c),
        );
        t.apply_batch(batch.into_inline().0)?;
        t.flush()?;
        slot.core = core;
        self.db.collect();
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.tree.flush()?;
        Ok(())
    }
}

/// Errors after which a batch is not committed: the disk failed, or a
/// stored record that an operation had to read was unreadable. Such an
/// operation may have changed the batch halfway (an append inserts before
/// it enforces limits), so nothing of the batch is kept and the in-memory
/// figures are reloaded.
fn aborts_batch(e: &StorageError) -> bool {
    e.is_backend()
        || matches!(
            e,
            StorageError::Corrupt { .. } | StorageError::CorruptMeta { .. }
        )
}

/// Every result of a batch that did not reach the disk becomes an error.
fn abort(results: Vec<Result<OpResult>>, err: &StorageError) -> Vec<Result<OpResult>> {
    results
        .into_iter()
        .map(|r| match r {
            // The disk failed: nothing of the batch is known to be there.
            Ok(_) if err.is_backend() => Err(err.clone()),
            // Another op's damaged record stopped the batch: this one was
            // fine, and may be tried again.
            Ok(_) => Err(StorageError::BatchAborted),
            Err(e) if aborts_batch(&e) => Err(e),
            Err(_) => Err(StorageError::BatchAborted),
        })
        .collect()
}

/// Packs appended messages into blocks and subject lists, and puts them in
/// a batch: each block as it closes (or, logged, each pointer as it fills),
/// the lists when told to.
struct Blocks {
    id: u64,
    /// Data bytes per block.
    target: usize,
    open: Option<BlockBuilder>,
    lists: HashMap<Bytes, Vec<u64>>,
    /// Logged blocks go under pointers that name several (see `log`).
    grouped: bool,
    /// The pointer the closed blocks go under, while it has room.
    group: Option<Group>,
}

/// The blocks of a batch under one pointer: a new one, or the stream's
/// last one extended.
struct Group {
    base: u64,
    old: Option<IVec>,
    extents: usize,
    bytes: usize,
    blocks: Vec<(u32, Vec<u8>)>,
}

impl Group {
    /// A pointer under `base` that names `extents` (`old`'s, if any) and
    /// takes blocks after them.
    fn new(base: u64, old: Option<IVec>, extents: &[Extent]) -> Self {
        Group {
            base,
            old,
            extents: extents.len(),
            bytes: extents.iter().map(|e| e.ptr.len() as usize).sum(),
            blocks: Vec::new(),
        }
    }

    fn fits(&self, base: u64, last: u64, len: usize) -> bool {
        base > self.base
            && self.extents < log::GROUP_MAX_EXTENTS
            && self.bytes + len <= log::GROUP_MAX_BYTES
            && last - self.base < log::GROUP_MAX_SPAN
    }
}

impl Blocks {
    fn new(id: u64, target: usize, grouped: bool) -> Self {
        Blocks {
            id,
            target,
            open: None,
            lists: HashMap::new(),
            grouped,
            group: None,
        }
    }

    /// Adds the blocks to come to the pointer `old` under `base` while it
    /// has room.
    fn extend(&mut self, base: u64, old: IVec, extents: &[Extent]) {
        self.group = Some(Group::new(base, Some(old), extents));
    }

    /// Adds a message; sequences come in ascending order.
    fn push(&mut self, batch: &mut Ops, m: &StoredMessage) {
        self.push_with(
            batch,
            m.seq,
            &m.subject,
            codec::encoded_msg_len(m),
            |data| codec::encode_msg_into(data, m),
        );
    }

    /// Adds an encoded record (from a snapshot).
    fn push_record(&mut self, batch: &mut Ops, seq: u64, subject: &Bytes, record: &[u8]) {
        self.push_with(batch, seq, subject, record.len(), |data| {
            data.extend_from_slice(record)
        });
    }

    fn push_with(
        &mut self,
        batch: &mut Ops,
        seq: u64,
        subject: &Bytes,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.open.as_ref().is_some_and(|b| !b.fits(seq, len)) {
            self.finish_block(batch);
        }
        let target = self.target;
        let open = self
            .open
            .get_or_insert_with(|| BlockBuilder::with_target(seq, target));
        open.push_with(seq, write);
        match self.lists.get_mut(subject) {
            Some(seqs) => seqs.push(seq),
            None => {
                self.lists.insert(subject.clone(), vec![seq]);
            }
        }
    }

    /// Closes the open block, if any.
    fn finish_block(&mut self, batch: &mut Ops) {
        let Some(b) = self.open.take() else {
            return;
        };
        let (base, last) = (b.base(), b.last_seq());
        let data = b.finish();
        if !self.grouped {
            batch.block(&block_key(self.id, base)[..], data);
            return;
        }
        if !self
            .group
            .as_ref()
            .is_some_and(|g| g.fits(base, last, data.len()))
        {
            self.finish_group(batch);
            self.group = Some(Group::new(base, None, &[]));
        }
        if let Some(g) = &mut self.group {
            g.extents += 1;
            g.bytes += data.len();
            g.blocks.push(((base - g.base) as u32, data));
        }
    }

    /// Puts the pointer being filled in the batch.
    fn finish_group(&mut self, batch: &mut Ops) {
        if let Some(g) = self.group.take() {
            if !g.blocks.is_empty() {
                batch.group(&block_key(self.id, g.base)[..], g.old, g.blocks);
            }
        }
    }

    /// Closes the open block and writes the subject lists gathered so far,
    /// each under its first sequence.
    fn finish_all(&mut self, batch: &mut Ops) {
        self.finish_block(batch);
        self.finish_group(batch);
        for (subject, seqs) in self.lists.drain() {
            let base = seqs[0];
            batch.insert(
                idx_key(self.id, &subject, base),
                block::encode_list(base, &seqs),
            );
        }
    }

    /// Closes the open block and hands over the subject lists gathered so
    /// far, to be written by the caller.
    fn finish_into_lists(&mut self, batch: &mut Ops) -> HashMap<Bytes, Vec<u64>> {
        self.finish_block(batch);
        self.finish_group(batch);
        std::mem::take(&mut self.lists)
    }
}

/// The stored messages of a stream in sequence order, forward from a
/// sequence or backward from one, block by block (each block of a pointer
/// that names several on its own: a damaged one stops only the walks that
/// reach it, as a damaged block did before pointers named several).
struct DiskEntries<'a> {
    stream: &'a str,
    db: &'a Db,
    blocks: sled::Iter,
    rev: bool,
    /// Forward: the first sequence wanted; backward: the last.
    bound: u64,
    cur: Option<Block>,
    /// Forward: the next entry; backward: one past it.
    pos: usize,
    done: bool,
    /// Where blocks read forward are remembered.
    cache: Option<&'a Mutex<Option<Block>>>,
    /// The key being walked when its pointer names several blocks: its
    /// value and the first sequences of the blocks still to read, in
    /// walking order.
    key: Option<(IVec, IVec)>,
    parts: VecDeque<u64>,
    /// A key whose blocks after the one `cur` started as (the cached one)
    /// are still to be queued: its key, pointer and the block's base.
    /// Queued only once `cur` is done (a reader usually wants one message).
    rest_of: Option<([u8; 17], IVec, u64)>,
    /// The last sequence returned: a block read again whole (its pointer
    /// moved by compaction meanwhile) does not return it twice.
    last: Option<u64>,
}

impl DiskEntries<'_> {
    /// Queues the blocks of a pointer that names several, less those wholly
    /// outside the walk; `false` if `raw` names one block.
    fn queue_parts(&mut self, key: &IVec, raw: &IVec) -> bool {
        let Some(extents) = Ptr::extents(raw) else {
            return false;
        };
        if extents.len() == 1 && extents[0].delta == 0 {
            return false;
        }
        let base = key_seq(key);
        let starts: Vec<u64> = extents.iter().map(|e| base + u64::from(e.delta)).collect();
        self.parts.clear();
        for (i, &lo) in starts.iter().enumerate() {
            let hi = starts.get(i + 1).copied().unwrap_or(u64::MAX);
            let wanted = if self.rev {
                lo <= self.bound
            } else {
                hi > self.bound
            };
            if wanted {
                if self.rev {
                    self.parts.push_front(lo);
                } else {
                    self.parts.push_back(lo);
                }
            }
        }
        self.key = Some((key.clone(), raw.clone()));
        true
    }
}

impl Iterator for DiskEntries<'_> {
    type Item = Result<(u64, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(b) = &self.cur {
                let item = if !self.rev && self.pos < b.len() {
                    self.pos += 1;
                    Some(self.pos - 1)
                } else if self.rev && self.pos > 0 {
                    self.pos -= 1;
                    Some(self.pos)
                } else {
                    None
                };
                if let Some(i) = item {
                    self.last = Some(b.seq(i));
                    return Some(Ok((b.seq(i), b.record(i))));
                }
                self.cur = None;
            }
            if let Some((key, raw, read)) = self.rest_of.take() {
                self.queue_parts(&IVec::from(&key[..]), &raw);
                self.parts.retain(|start| *start > read);
            }
            let (k, raw, part) = match self.parts.pop_front() {
                Some(start) => match &self.key {
                    Some((k, raw)) => (k.clone(), raw.clone(), Some(start)),
                    None => continue,
                },
                None => {
                    let (k, raw) = match step(&mut self.blocks, self.rev)? {
                        Ok(kv) => kv,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    };
                    if self.queue_parts(&k, &raw) {
                        continue;
                    }
                    (k, raw, None)
                }
            };
            let base = part.unwrap_or_else(|| key_seq(&k));
            let parsed = match part {
                Some(start) => self.db.block_holding(&k, raw, start),
                None => self.db.block(&k, raw),
            };
            let parsed = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let Some(b) = parsed else {
                self.done = true;
                return Some(Err(StorageError::Corrupt {
                    stream: self.stream.to_owned(),
                    seq: if self.rev { base } else { base.max(self.bound) },
                }));
            };
            if !b.is_part() {
                // The key's blocks all at once (moved meanwhile).
                self.parts.clear();
            }
            self.pos = if self.rev {
                let below = self.last.unwrap_or(u64::MAX);
                b.lower_bound(self.bound.saturating_add(1).min(below))
            } else {
                let after = self.last.map_or(0, |l| l.saturating_add(1));
                b.lower_bound(self.bound.max(after))
            };
            if let Some(cache) = self.cache {
                *cache.lock() = Some(b.clone());
            }
            self.cur = Some(b);
        }
    }
}

/// One subject's stored sequences in order, forward from a sequence or
/// backward from the end, list by list.
struct SubjectSeqs<'a> {
    stream: &'a str,
    lists: sled::Iter,
    rev: bool,
    from: u64,
    cur: Vec<u64>,
    pos: usize,
    done: bool,
}

impl Iterator for SubjectSeqs<'_> {
    type Item = Result<(u64, ())>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if !self.rev && self.pos < self.cur.len() {
                self.pos += 1;
                return Some(Ok((self.cur[self.pos - 1], ())));
            }
            if self.rev && self.pos > 0 {
                self.pos -= 1;
                return Some(Ok((self.cur[self.pos], ())));
            }
            let (k, raw) = match step(&mut self.lists, self.rev)? {
                Ok(kv) => kv,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let base = key_seq(&k);
            let Some(seqs) = block::decode_list(base, &raw) else {
                self.done = true;
                return Some(Err(StorageError::Corrupt {
                    stream: self.stream.to_owned(),
                    seq: base,
                }));
            };
            self.cur = seqs;
            self.pos = if self.rev {
                self.cur.len()
            } else {
                self.cur.partition_point(|s| *s < self.from)
            };
        }
    }
}

/// The operations of one batch on top of the committed tree: reads see both,
/// writes stay here until [`SledTxn::commit`].
struct SledTxn<'a> {
    db: &'a Db,
    tree: &'a sled::Tree,
    id: u64,
    stream: &'a str,
    /// `None`: removed in this batch.
    msgs: BTreeMap<u64, Option<StoredMessage>>,
    /// Subject → sequence → present.
    idx: HashMap<Bytes, BTreeMap<u64, bool>>,
    meta: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Stored messages removed in this batch: sequence → (base of their
    /// block, subject if known).
    dropped: BTreeMap<u64, (u64, Option<Bytes>)>,
    /// Records below this are dead; clean them up after the commit.
    drop_fence: Option<u64>,
    /// The store's cache of the block read last.
    last_block: &'a Mutex<Option<Block>>,
    /// The store's subject lists that the next batch may extend.
    tails: &'a Mutex<HashMap<Bytes, u64>>,
}

enum Src<D, P> {
    Disk(D),
    Pending(P),
}

/// Walks a disk range and a pending range in key order (or reverse order
/// when `rev`), the pending entry winning on equal keys; `None` pending
/// values hide the disk entry.
fn merge<D, P>(
    mut disk: impl Iterator<Item = Result<(u64, D)>>,
    mut pending: impl Iterator<Item = (u64, Option<P>)>,
    rev: bool,
    mut visit: impl FnMut(u64, Src<D, P>) -> ControlFlow<()>,
) -> Result<()> {
    let mut d = disk.next().transpose()?;
    let mut p = pending.next();
    loop {
        let disk_first = match (&d, &p) {
            (None, None) => return Ok(()),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ds, _)), Some((ps, _))) => {
                if rev {
                    ds > ps
                } else {
                    ds < ps
                }
            }
        };
        let flow = if disk_first {
            let Some((seq, value)) = d.take() else {
                return Ok(());
            };
            d = disk.next().transpose()?;
            visit(seq, Src::Disk(value))
        } else {
            let Some((seq, value)) = p.take() else {
                return Ok(());
            };
            p = pending.next();
            if d.as_ref().is_some_and(|(ds, _)| *ds == seq) {
                d = disk.next().transpose()?;
            }
            match value {
                Some(v) => visit(seq, Src::Pending(v)),
                None => ControlFlow::Continue(()),
            }
        };
        if flow.is_break() {
            return Ok(());
        }
    }
}

impl SledTxn<'_> {
    fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.meta.is_empty() && self.drop_fence.is_none()
    }

    fn corrupt(&self, seq: u64) -> StorageError {
        StorageError::Corrupt {
            stream: self.stream.to_owned(),
            seq,
        }
    }

    /// The stored block that would hold `seq` (the one with the greatest
    /// base `<= seq`, of the key with the greatest base `<= seq`), if any;
    /// it holds `seq` only if [`Block::find`] says so.
    fn block_for(&self, seq: u64) -> Result<Option<Block>> {
        if let Some(b) = self.cached(seq) {
            return Ok(Some(b));
        }
        let found = self
            .tree
            .range(block_key(self.id, 0)..=block_key(self.id, seq))
            .next_back()
            .transpose()?;
        let Some((k, raw)) = found else {
            return Ok(None);
        };
        let b = self
            .db
            .block_holding(&k, raw, seq)?
            .ok_or_else(|| self.corrupt(seq))?;
        *self.last_block.lock() = Some(b.clone());
        Ok(Some(b))
    }

    /// The cached block, if it spans `seq`.
    fn cached(&self, seq: u64) -> Option<Block> {
        let cached = self.last_block.lock();
        let b = cached.as_ref()?;
        (b.base() <= seq && b.last_seq().is_some_and(|last| seq <= last)).then(|| b.clone())
    }

    /// The record of a stored `seq` with the base of its block's key.
    fn stored(&self, seq: u64) -> Result<Option<(u64, Bytes)>> {
        Ok(self
            .block_for(seq)?
            .and_then(|b| b.find(seq).map(|i| (b.key_base(), b.record(i)))))
    }

    /// Stored messages from `bound` on (or, `rev`, up to `bound`).
    fn disk_entries(&self, bound: u64, rev: bool) -> Result<DiskEntries<'_>> {
        let mut cur = None;
        let mut parts = None;
        let blocks = if rev {
            self.tree
                .range(block_key(self.id, 0)..=block_key(self.id, bound))
        } else if let Some(b) = self.cached(bound) {
            // A block that is one of several under its key: the walk goes
            // on with the key's blocks after it (as its pointer named them
            // when it was read: one that has moved since is read where it
            // is now, whole, and what was returned already is skipped).
            if let Some(raw) = b.pointer() {
                parts = Some((block_key(self.id, b.key_base()), raw.clone(), b.base()));
            }
            let after = b.key_base().saturating_add(1);
            cur = Some(b);
            self.tree
                .range(block_key(self.id, after)..=block_key(self.id, u64::MAX))
        } else {
            // Start at the block that may hold `bound`.
            let start = walk_start(
                self.tree,
                &block_key(self.id, 0),
                &block_key(self.id, bound),
            )?;
            self.tree
                .range(block_key(self.id, start)..=block_key(self.id, u64::MAX))
        };
        let pos = cur.as_ref().map_or(0, |b| b.lower_bound(bound));
        Ok(DiskEntries {
            stream: self.stream,
            db: self.db,
            blocks,
            rev,
            bound,
            cur,
            pos,
            done: false,
            cache: (!rev).then_some(self.last_block),
            key: None,
            parts: VecDeque::new(),
            rest_of: parts,
            last: None,
        })
    }

    /// The stored sequences of `subject` from `from` on, or all of them
    /// backward (`rev`).
    fn disk_subject(&self, subject: &[u8], from: u64, rev: bool) -> Result<SubjectSeqs<'_>> {
        let start = if rev {
            0
        } else {
            walk_start(
                self.tree,
                &idx_key(self.id, subject, 0),
                &idx_key(self.id, subject, from),
            )?
        };
        Ok(SubjectSeqs {
            stream: self.stream,
            lists: self
                .tree
                .range(idx_key(self.id, subject, start)..=idx_key(self.id, subject, u64::MAX)),
            rev,
            from,
            cur: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn pending_subject(&self, subject: &[u8]) -> Option<&BTreeMap<u64, bool>> {
        self.idx.get(subject)
    }

    /// The subject of a record whose own bytes cannot be trusted, from the
    /// subject lists (a scan of them all: only for corrupt records).
    fn subject_of(&self, seq: u64) -> Result<Option<Bytes>> {
        let prefix = stream_prefix(TAG_SUBJ, self.id);
        for item in self.tree.scan_prefix(prefix) {
            let (k, v) = item?;
            let base = key_seq(&k);
            if base <= seq
                && block::decode_list(base, &v).is_some_and(|seqs| seqs.binary_search(&seq).is_ok())
            {
                let subject = &k[prefix.len()..k.len() - 9];
                return Ok(Some(Bytes::copy_from_slice(subject)));
            }
        }
        Ok(None)
    }

    /// Removes `seqs` (ascending) from the lists of `subject` that hold
    /// them: one lookup per list, one rewrite per list. Returns the bases of
    /// the lists it rewrote or removed.
    fn drop_from_lists(&self, batch: &mut Ops, subject: &[u8], seqs: &[u64]) -> Result<Vec<u64>> {
        struct List {
            base: u64,
            seqs: Vec<u64>,
            last: u64,
            gone: Vec<u64>,
        }
        let mut touched = Vec::new();
        let mut write = |batch: &mut Ops, mut l: List| {
            if l.gone.is_empty() {
                return;
            }
            touched.push(l.base);
            let key = idx_key(self.id, subject, l.base);
            l.seqs.retain(|s| l.gone.binary_search(s).is_err());
            if l.seqs.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, block::encode_list(l.base, &l.seqs));
            }
        };
        let mut cur: Option<List> = None;
        for &seq in seqs {
            if cur.as_ref().is_none_or(|l| seq > l.last) {
                if let Some(l) = cur.take() {
                    write(batch, l);
                }
                let found = self
                    .tree
                    .range(idx_key(self.id, subject, 0)..=idx_key(self.id, subject, seq))
                    .next_back()
                    .transpose()?;
                let Some((k, v)) = found else { continue };
                let base = key_seq(&k);
                let Some(list) = block::decode_list(base, &v) else {
                    tracing::warn!(stream = self.stream, base, "damaged subject list");
                    continue;
                };
                let last = list.last().copied().unwrap_or(base);
                cur = Some(List {
                    base,
                    seqs: list,
                    last,
                    gone: Vec::new(),
                });
            }
            if let Some(l) = cur.as_mut() {
                if l.seqs.binary_search(&seq).is_ok() {
                    l.gone.push(seq);
                }
            }
        }
        if let Some(l) = cur {
            write(batch, l);
        }
        Ok(touched)
    }

    /// The subject's list under `base` followed by `seqs`, if that list is
    /// still there, ends below them and has room; else `seqs` as a list of
    /// its own. A list is extended only while it is at most
    /// [`LIST_EXTEND_RATIO`] times what is added to it, so that rewriting
    /// it costs a small multiple of the new entries. `base` is the last
    /// list a batch wrote for the subject, so
    /// no later list of the subject exists: only batches write lists (and
    /// record them in the tails), removals shrink or delete them, and a
    /// restore forgets the tails.
    fn extend_list(&self, subject: &[u8], base: u64, seqs: Vec<u64>) -> Result<(u64, Vec<u64>)> {
        let Some(raw) = self.tree.get(idx_key(self.id, subject, base))? else {
            return Ok((seqs[0], seqs));
        };
        match block::decode_list(base, &raw) {
            Some(mut list)
                if list.last() < seqs.first()
                    && list.len() + seqs.len() <= LIST_EXTEND_MAX
                    && list.len() <= LIST_EXTEND_RATIO * seqs.len() =>
            {
                list.extend_from_slice(&seqs);
                Ok((base, list))
            }
            _ => Ok((seqs[0], seqs)),
        }
    }

    /// The batch's sled operations, the counters record last, and the fence
    /// below which records are to be cleaned up after it is written.
    fn commit(self, counters: &Counters) -> Result<(Ops, Option<u64>)> {
        let t = self.tree;
        let mut batch = Ops::default();
        // Removed messages: rewrite each block once, and each subject list.
        let mut by_block: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut by_subject: HashMap<Bytes, Vec<u64>> = HashMap::new();
        for (seq, (base, subject)) in &self.dropped {
            by_block.entry(*base).or_default().push(*seq);
            if let Some(subject) = subject {
                by_subject.entry(subject.clone()).or_default().push(*seq);
            }
        }
        for (base, seqs) in &by_block {
            let key = block_key(self.id, *base);
            let cached = self.last_block.lock().take();
            let raw = t.get(key)?.ok_or_else(|| self.corrupt(seqs[0]))?;
            let logged = Ptr::extents(&raw).filter(|_| self.db.sync == SyncPolicy::Always);
            if let Some(extents) = logged {
                // A block in the log stays there: its pointer lists what
                // was removed from it, so a removal writes no message data.
                // (A batch stored inline could not count a new pointer.)
                let mut gone = match Ptr::removed(&raw) {
                    Some(list) => {
                        block::decode_list(*base, list).ok_or_else(|| self.corrupt(seqs[0]))?
                    }
                    None => Vec::new(),
                };
                gone.extend_from_slice(seqs);
                gone.sort_unstable();
                gone.dedup();
                // Each block the pointer names counts the bytes its live
                // messages take; only those losing messages now are read.
                // One left with none leaves the pointer, and its removed
                // messages leave the list.
                let start = |e: &Extent| *base + u64::from(e.delta);
                let mut kept = Vec::with_capacity(extents.len());
                // The block read last stands for an extent only if it was
                // read as one of the same kind: a block of a pointer that
                // named several, cached before compaction moved them into
                // one, holds only some of that one's messages.
                let several = extents.len() > 1 || extents[0].delta != 0;
                let mut cached = cached.filter(|b| b.is_part() == several);
                for (i, e) in extents.iter().enumerate() {
                    let (lo, hi) = (start(e), extents.get(i + 1).map_or(u64::MAX, start));
                    let from = seqs.partition_point(|s| *s < lo);
                    let these = &seqs[from..from + seqs[from..].partition_point(|s| *s < hi)];
                    if these.is_empty() {
                        kept.push(*e);
                        continue;
                    }
                    let reuse = cached
                        .take()
                        .filter(|b| b.key_base() == *base && b.base() == lo);
                    let b = match reuse {
                        Some(b) => b,
                        None => self
                            .db
                            .block_holding(&key, raw.clone(), lo)?
                            .filter(|b| b.base() == lo)
                            .ok_or_else(|| self.corrupt(these[0]))?,
                    };
                    let rest = b.thinned(these).ok_or_else(|| self.corrupt(these[0]))?;
                    match rest.live_bytes_between(lo, hi) {
                        0 => gone.retain(|s| !(lo..hi).contains(s)),
                        live => kept.push(Extent {
                            ptr: e.ptr.with_live(u32::try_from(live).unwrap_or(u32::MAX)),
                            ..*e
                        }),
                    }
                }
                if kept.is_empty() {
                    batch.remove(&key[..]);
                } else {
                    let list = if gone.is_empty() {
                        Vec::new()
                    } else {
                        block::encode_list(*base, &gone)
                    };
                    batch.insert(&key[..], Ptr::encode_extents(&kept, &list));
                }
            } else {
                let b = match cached.filter(|b| b.base() == *base && !b.is_part()) {
                    Some(b) => b,
                    None => self
                        .db
                        .block(&key, raw.clone())?
                        .ok_or_else(|| self.corrupt(seqs[0]))?,
                };
                let dropped = |s: u64| seqs.binary_search(&s).is_ok();
                if Ptr::extents(&raw).is_some() {
                    // The block(s) a logged pointer named (up to 256 KiB,
                    // and compaction merges a key's blocks into one), stored
                    // inline: in blocks of the inline size, the first under
                    // the key.
                    let parts = b.split_without(dropped, block::BLOCK_DATA_TARGET);
                    if parts.is_empty() {
                        batch.remove(&key[..]);
                    }
                    for (part_base, data) in parts {
                        batch.block(&block_key(self.id, part_base)[..], data);
                    }
                } else {
                    match b.without(dropped) {
                        Some(rest) => batch.block(&key[..], rest),
                        None => batch.remove(&key[..]),
                    }
                }
            }
            batch.release(raw);
        }
        let mut rewritten: HashMap<&Bytes, Vec<u64>> = HashMap::new();
        for (subject, seqs) in &by_subject {
            let bases = self.drop_from_lists(&mut batch, subject, seqs)?;
            if !bases.is_empty() {
                rewritten.insert(subject, bases);
            }
        }
        // Appended messages, packed into new blocks; per subject one list
        // for the whole batch, or the entries added to the subject's list
        // of the batch before.
        let logged = self.db.sync == SyncPolicy::Always;
        let mut blocks = Blocks::new(
            self.id,
            if logged {
                block::LOGGED_BLOCK_DATA_TARGET
            } else {
                block::BLOCK_DATA_TARGET
            },
            logged,
        );
        if logged && self.msgs.values().flatten().next().is_some() {
            // The stream's last pointer takes this batch's blocks while it
            // has room, unless this batch rewrites it (its removals), or it
            // is below the first sequence: cleanup, which runs without the
            // stream's lock, may be removing it. The caller holds off
            // compaction (`Db::moves`) until the batch is applied.
            let last = t
                .range(block_key(self.id, 0)..=block_key(self.id, u64::MAX))
                .next_back()
                .transpose()?;
            if let Some((key, raw)) = last {
                let base = key_seq(&key);
                if base >= counters.first_seq && !by_block.contains_key(&base) {
                    if let Some(extents) = Ptr::extents(&raw) {
                        blocks.extend(base, raw, &extents);
                        // A cached block of this key would stand for it
                        // without the blocks added now.
                        let mut cached = self.last_block.lock();
                        if cached.as_ref().is_some_and(|b| b.key_base() == base) {
                            *cached = None;
                        }
                    }
                }
            }
        }
        for m in self.msgs.values().flatten() {
            blocks.push(&mut batch, m);
        }
        let lists = blocks.finish_into_lists(&mut batch);
        if !lists.is_empty() {
            let mut tails = self.tails.lock();
            if tails.len() + lists.len() > TAILS_MAX {
                tails.clear();
            }
            for (subject, seqs) in lists {
                // A list this batch already rewrote (its removals) is not
                // extended: that would write its old entries back. Nor is
                // one below the first sequence: cleanup, which runs without
                // the stream's lock, may be removing it.
                let tail = tails
                    .get(&subject)
                    .filter(|&&base| base >= counters.first_seq)
                    .filter(|base| rewritten.get(&subject).is_none_or(|r| !r.contains(base)));
                let (base, seqs) = match tail {
                    Some(&base) => self.extend_list(&subject, base, seqs)?,
                    None => (seqs[0], seqs),
                };
                batch.insert(
                    idx_key(self.id, &subject, base),
                    block::encode_list(base, &seqs),
                );
                // A remembered list must be the subject's last one, so an
                // entry is always updated; a new one waits for room.
                let room = tails.len() < TAILS_MAX;
                match tails.get_mut(&subject) {
                    Some(remembered) => *remembered = base,
                    None if room => {
                        // A copy: the subject may share a network buffer.
                        tails.insert(Bytes::copy_from_slice(&subject), base);
                    }
                    None => {}
                }
            }
        }
        for (key, value) in self.meta {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        batch.insert(
            meta_key(self.id, KIND_COUNTERS, ""),
            codec::encode_counters(counters),
        );
        Ok((batch, self.drop_fence))
    }
}

impl View for SledTxn<'_> {
    fn load(&self, seq: u64) -> Result<Option<StoredMessage>> {
        if let Some(pending) = self.msgs.get(&seq) {
            return Ok(pending.clone());
        }
        match self.stored(seq)? {
            Some((_, record)) => codec::decode_msg(seq, record)
                .map(Some)
                .ok_or_else(|| self.corrupt(seq)),
            None => Ok(None),
        }
    }

    fn next_seq(&self, from: u64) -> Result<Option<u64>> {
        let mut found = None;
        merge(
            self.disk_entries(from, false)?,
            self.msgs.range(from..).map(|(s, m)| (*s, m.as_ref())),
            false,
            |seq, _| {
                found = Some(seq);
                ControlFlow::Break(())
            },
        )?;
        Ok(found)
    }

    fn prev_seq(&self, before: u64) -> Result<Option<u64>> {
        if before == 0 {
            return Ok(None);
        }
        let mut found = None;
        merge(
            self.disk_entries(before - 1, true)?,
            self.msgs
                .range(..before)
                .rev()
                .map(|(s, m)| (*s, m.as_ref())),
            true,
            |seq, _| {
                found = Some(seq);
                ControlFlow::Break(())
            },
        )?;
        Ok(found)
    }

    fn scan(&self, from: u64, visit: &mut ScanVisitor<'_>) -> Result<()> {
        merge(
            self.disk_entries(from, false)?,
            self.msgs.range(from..).map(|(s, m)| (*s, m.as_ref())),
            false,
            |seq, src| match src {
                Src::Disk(raw) => visit(seq, codec::peek_subject(&raw)),
                Src::Pending(m) => visit(seq, Some(&m.subject)),
            },
        )
    }

    fn scan_subject(
        &self,
        subject: &[u8],
        from: u64,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) -> Result<()> {
        let pending = self
            .pending_subject(subject)
            .into_iter()
            .flat_map(|m| m.range(from..))
            .map(|(s, present)| (*s, present.then_some(())));
        merge(
            self.disk_subject(subject, from, false)?,
            pending,
            false,
            |seq, _| visit(seq),
        )
    }

    fn subject_last(&self, subject: &[u8]) -> Result<Option<u64>> {
        let pending = self
            .pending_subject(subject)
            .into_iter()
            .flat_map(|m| m.iter().rev())
            .map(|(s, present)| (*s, present.then_some(())));
        let mut found = None;
        merge(
            self.disk_subject(subject, 0, true)?,
            pending,
            true,
            |seq, _| {
                found = Some(seq);
                ControlFlow::Break(())
            },
        )?;
        Ok(found)
    }
}

impl Backend for SledTxn<'_> {
    fn insert(&mut self, msg: StoredMessage) -> Result<()> {
        self.idx
            .entry(msg.subject.clone())
            .or_default()
            .insert(msg.seq, true);
        self.msgs.insert(msg.seq, Some(msg));
        Ok(())
    }

    /// `erase` needs nothing more here: the record leaves the stream (a
    /// block in the message log keeps its bytes until compaction moves the
    /// block or its segment is deleted; sled's own log keeps an inline
    /// block's old bytes until it rewrites that segment).
    fn remove(&mut self, seq: u64, _erase: bool) -> Result<Option<Removed>> {
        let (subject, size) = match self.msgs.get(&seq) {
            Some(None) => return Ok(None),
            Some(Some(m)) => (Some(m.subject.clone()), m.stored_size()),
            None => {
                let Some((base, record)) = self.stored(seq)? else {
                    return Ok(None);
                };
                // Size estimate for a record that fails its checksum: exact
                // for records without headers and subjects under 128 bytes.
                let len = record.len() as u64 + 2;
                let (subject, size) = match codec::decode_msg(seq, record) {
                    Some(m) => (Some(m.subject.clone()), m.stored_size()),
                    None => {
                        // Removing a corrupt record is what a limit or purge
                        // asks for anyway; its subject comes from the index
                        // and its size is estimated from the record.
                        tracing::warn!(stream = self.stream, seq, "removing a corrupt record");
                        (self.subject_of(seq)?, len)
                    }
                };
                self.dropped.insert(seq, (base, subject.clone()));
                (subject, size)
            }
        };
        self.msgs.insert(seq, None);
        if let Some(subject) = &subject {
            self.idx
                .entry(subject.clone())
                .or_default()
                .insert(seq, false);
        }
        Ok(Some(Removed { subject, size }))
    }

    fn drop_below(&mut self, fence: u64) -> Result<()> {
        // Appends of this batch below the fence never reach the disk; the
        // committed records below it are removed after the commit.
        let kept = self.msgs.split_off(&fence);
        self.msgs.retain(|_, m| m.is_none());
        self.msgs.extend(kept);
        for seqs in self.idx.values_mut() {
            let kept = seqs.split_off(&fence);
            seqs.retain(|_, present| !*present);
            seqs.extend(kept);
        }
        // Blocks below the fence go whole; no need to rewrite them first.
        self.dropped = self.dropped.split_off(&fence);
        self.drop_fence = Some(self.drop_fence.map_or(fence, |f| f.max(fence)));
        Ok(())
    }

    fn put_limits(&mut self, limits: &StreamLimits) {
        self.meta.insert(
            meta_key(self.id, KIND_LIMITS, ""),
            Some(codec::encode_limits(limits)),
        );
    }

    fn put_config(&mut self, config: &Bytes) {
        self.meta.insert(
            meta_key(self.id, KIND_CONFIG, ""),
            Some(codec::encode_blob(config)),
        );
    }

    fn put_consumer_config(&mut self, name: &str, config: &Bytes) {
        self.meta.insert(
            meta_key(self.id, KIND_CONSUMER_CONFIG, name),
            Some(codec::encode_blob(config)),
        );
    }

    fn put_consumer_state(&mut self, name: &str, state: &ConsumerState) {
        self.meta.insert(
            meta_key(self.id, KIND_CONSUMER_STATE, name),
            Some(codec::encode_consumer_state(state)),
        );
    }

    fn delete_consumer(&mut self, name: &str) {
        for kind in [KIND_CONSUMER_CONFIG, KIND_CONSUMER_STATE] {
            self.meta.insert(meta_key(self.id, kind, name), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::memory::MemoryStore;
    use crate::types::{Append, PurgeRequest};

    /// Set in a test process that must leave sled unflushed when it dies.
    pub(super) static NO_BACKGROUND_FLUSH: AtomicBool = AtomicBool::new(false);

    fn appends(first: u64, n: u64, size: usize) -> Vec<StreamOp> {
        (first..first + n)
            .map(|i| StreamOp::Append(Append::new(format!("s.{}", i % 3), vec![i as u8; size], i)))
            .collect()
    }

    /// The pointers sled holds and the bytes they point to, per segment.
    fn scanned_refs(storage: &Storage) -> BTreeMap<u32, (u64, u64)> {
        let mut refs: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for item in storage.db.tree.scan_prefix([TAG_MSG]) {
            for e in Ptr::extents(&item.unwrap().1).unwrap_or_default() {
                let r = refs.entry(e.ptr.seg()).or_default();
                r.0 += 1;
                r.1 += u64::from(e.ptr.live());
            }
        }
        refs
    }

    fn counted_refs(storage: &Storage) -> BTreeMap<u32, (u64, u64)> {
        let mut refs = storage.db.log.refs();
        refs.retain(|_, (n, _)| *n > 0);
        refs
    }

    fn segment_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("log")).unwrap().count()
    }

    /// A file stream "S" in a new directory opened with `options`, and a
    /// memory stream with the same limits to compare it with.
    fn mirrored(
        options: StorageOptions,
        limits: StreamLimits,
    ) -> (
        tempfile::TempDir,
        MemoryStore,
        Storage,
        Arc<dyn StreamStore>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mirror = MemoryStore::new("S", limits.clone());
        let storage = Storage::open_with(dir.path(), options).unwrap();
        let s = storage.create_stream("S", limits).unwrap();
        (dir, mirror, storage, s)
    }

    fn same_messages(a: &dyn StreamStore, b: &dyn StreamStore) {
        let (sa, sb) = (a.state().unwrap(), b.state().unwrap());
        assert_eq!(sa, sb);
        for store in [a, b] {
            assert_eq!(store.totals().unwrap(), (sa.messages, sa.bytes));
        }
        for seq in sa.first_seq..=sa.last_seq {
            assert_eq!(a.get(seq).ok(), b.get(seq).ok(), "seq {seq}");
        }
    }

    /// The two streams of the workload below: `S` keeps 500 messages, `K`
    /// one per subject (as a KV bucket does).
    fn workload_streams() -> [(&'static str, StreamLimits); 2] {
        [
            (
                "S",
                StreamLimits {
                    max_msgs: Some(500),
                    ..StreamLimits::default()
                },
            ),
            (
                "K",
                StreamLimits {
                    max_msgs_per_subject: Some(1),
                    ..StreamLimits::default()
                },
            ),
        ]
    }

    /// The workload's streams in `storage`, created if need be.
    fn streams(storage: &Storage) -> (Arc<dyn StreamStore>, Arc<dyn StreamStore>) {
        let [s, kv] = workload_streams().map(|(name, limits)| {
            storage
                .open_stream(name)
                .or_else(|_| storage.create_stream(name, limits))
                .unwrap()
        });
        (s, kv)
    }

    /// Round `i` of the workload: an appended batch (its blocks logged), a
    /// delete in an older block (rewritten), and a batch on `K` that
    /// replaces the last one (the old block emptied, removed).
    fn round(s: &dyn StreamStore, kv: &dyn StreamStore, i: u64) {
        round_s(s, i);
        assert!(kv
            .apply_batch(appends(i * 3 + 1, 3, 100))
            .iter()
            .all(|r| r.is_ok()));
    }

    /// The first half of round `i`, on `S`.
    fn round_s(s: &dyn StreamStore, i: u64) {
        let mut ops = appends(i * 10 + 1, 10, 300);
        if i > 0 {
            ops.push(StreamOp::Delete {
                seq: i * 10 - 5,
                erase: false,
            });
        }
        assert!(s.apply_batch(ops).iter().all(|r| r.is_ok()));
    }

    /// The workload run on memory stores too, to compare with.
    struct Mirror {
        s: Arc<dyn StreamStore>,
        kv: Arc<dyn StreamStore>,
    }

    impl Mirror {
        fn new() -> Self {
            let [s, kv] = workload_streams().map(|(name, limits)| -> Arc<dyn StreamStore> {
                Arc::new(MemoryStore::new(name, limits))
            });
            Mirror { s, kv }
        }

        /// Runs `rounds` on the storage and on the mirror.
        fn run(&self, storage: &Storage, rounds: std::ops::Range<u64>) {
            let (s, kv) = streams(storage);
            for i in rounds {
                round(&*s, &*kv, i);
                round(&*self.s, &*self.kv, i);
            }
        }

        fn check(&self, storage: &Storage) {
            let (s, kv) = streams(storage);
            same_messages(&*s, &*self.s);
            same_messages(&*kv, &*self.kv);
        }
    }

    #[test]
    fn log_segments_are_counted_and_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new();
        {
            let storage = Storage::open(dir.path()).unwrap();
            mirror.run(&storage, 0..300);
            // About 1 MiB went through 64 KiB segments; what is left holds
            // 500 messages of S and three of K.
            assert_eq!(counted_refs(&storage), scanned_refs(&storage));
            let files = segment_files(dir.path());
            assert!(files <= 8, "{files} segments: {:?}", counted_refs(&storage));
            mirror.check(&storage);
        }
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        mirror.check(&storage);
        // Deleting the streams frees every segment but the one in use.
        storage.delete_stream("S").unwrap();
        storage.delete_stream("K").unwrap();
        assert!(counted_refs(&storage).is_empty());
        assert!(segment_files(dir.path()) <= 1);
    }

    /// Files this process holds open that were deleted from under `dir`.
    fn deleted_but_open(dir: &Path) -> usize {
        let dir = dir.to_string_lossy().into_owned();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with(&dir) && target.ends_with(" (deleted)"))
            .count()
    }

    #[test]
    fn deleted_segments_give_their_space_back_while_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        for i in 0..40 {
            let ops = appends(i * 10 + 1, 10, 2000);
            assert!(s.apply_batch(ops).iter().all(|r| r.is_ok()));
        }
        assert!(
            segment_files(dir.path()) >= 5,
            "the appends filled segments"
        );
        s.apply(StreamOp::Purge(PurgeRequest::default())).unwrap();
        // The purge's own write deleted the segments it emptied; their
        // files stay open a moment for readers that were on their way.
        assert!(segment_files(dir.path()) <= 2);
        // Then they close with nothing else written: the background
        // compaction pass (twice a second) closes them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while deleted_but_open(dir.path()) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(
            deleted_but_open(dir.path()),
            0,
            "deleted segments still open"
        );
        assert_eq!(storage.db.log.retired_open(), 0);
        // The stream goes on.
        assert!(s
            .apply_batch(appends(401, 10, 2000))
            .iter()
            .all(|r| r.is_ok()));
        assert_eq!(s.state().unwrap().messages, 10);
    }

    /// Checks streams `{prefix}0`.. that writer `t` filled with
    /// `batch(t, 0..batches)` against memory stores given the same, and the
    /// log's pointer counts against sled.
    fn check_writers(
        storage: &Storage,
        prefix: &str,
        writers: u64,
        batches: u64,
        limits: &StreamLimits,
        batch: impl Fn(u64, u64) -> Vec<StreamOp>,
    ) {
        for t in 0..writers {
            let mirror = MemoryStore::new("M", limits.clone());
            for i in 0..batches {
                mirror.apply_batch(batch(t, i));
            }
            same_messages(
                &*storage.open_stream(&format!("{prefix}{t}")).unwrap(),
                &mirror,
            );
        }
        assert_eq!(counted_refs(storage), scanned_refs(storage));
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let limits = StreamLimits {
            max_msgs: Some(300),
            ..StreamLimits::default()
        };
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (storage, limits) = (&storage, limits.clone());
                scope.spawn(move || {
                    let s = storage.create_stream(&format!("T{t}"), limits).unwrap();
                    for i in 0..150 {
                        let ops = appends(i * 7 + 1, 7, 200 + t * 50);
                        assert!(s.apply_batch(ops).iter().all(|r| r.is_ok()));
                    }
                });
            }
        });
        let batch = |t: u64, i: u64| appends(i * 7 + 1, 7, 200 + t as usize * 50);
        check_writers(&storage, "T", 4, 150, &limits, batch);
        drop(storage);
        check_writers(
            &Storage::open(dir.path()).unwrap(),
            "T",
            4,
            150,
            &limits,
            batch,
        );
    }

    #[test]
    fn compaction_frees_segments_pinned_by_a_few_live_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StreamLimits {
            max_msgs_per_subject: Some(1),
            ..StreamLimits::default()
        };
        let mirror = MemoryStore::new("K", limits.clone());
        let storage = Storage::open(dir.path()).unwrap();
        let kv = storage.create_stream("K", limits).unwrap();
        // One key written once, in a block of its own, then nine others
        // updated over and over: without compaction the first segment
        // would stay for the one block.
        for i in 0..400u64 {
            apply_all(&[&*kv, &mirror], kv_batch(i, 500));
        }
        let first = dir.path().join("log").join("0000000001.seg");
        storage.db.compact(&|| false).unwrap();
        assert!(!first.exists(), "{:?}", counted_refs(&storage));
        assert!(
            segment_files(dir.path()) <= 3,
            "{}",
            segment_files(dir.path())
        );
        same_messages(&*kv, &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        drop((kv, storage));
        let storage = Storage::open(dir.path()).unwrap();
        same_messages(&*storage.open_stream("K").unwrap(), &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    type Hook = Box<dyn Fn() + Send + Sync>;
    /// Run by a batch of the named stream between building its operations
    /// and writing them.
    static AFTER_COMMIT: Mutex<Option<(String, Hook)>> = Mutex::new(None);

    /// Run once by the next cleanup, between choosing the dead subject
    /// lists and removing them.
    static BEFORE_CLEANUP_REMOVES: Mutex<Option<Hook>> = Mutex::new(None);

    pub(super) fn before_cleanup_removes() {
        let hook = BEFORE_CLEANUP_REMOVES.lock().take();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Cleanup removes a subject list it found dead without the stream's
    /// lock; a batch that appended to that list meanwhile would lose its
    /// entries with it. Lists below the first sequence are not extended.
    #[test]
    fn a_list_cleanup_is_removing_is_not_extended() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StreamLimits::default();
        let mirror = Arc::new(MemoryStore::new("S", limits.clone()));
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", limits).unwrap();
        let appends = || {
            (0..5)
                .map(|i| StreamOp::Append(Append::new("x".to_owned(), vec![1; 10], i)))
                .collect::<Vec<_>>()
        };
        apply_all(&[&*s, &*mirror], appends());
        // While cleanup after the purge holds the dead list of `x`, a batch
        // appends to `x`.
        let (s2, m2) = (s.clone(), mirror.clone());
        *BEFORE_CLEANUP_REMOVES.lock() = Some(Box::new(move || {
            apply_all(&[&*s2, &*m2], appends());
        }));
        let all = PurgeRequest::default();
        // The mirror first: the hook appends to it during the store's purge.
        let purged = mirror.purge(all.clone()).unwrap();
        assert_eq!(s.purge(all).unwrap(), purged);
        assert!(BEFORE_CLEANUP_REMOVES.lock().is_none(), "cleanup ran");
        same_subjects(&*s, &*mirror, &["x", ">"]);
        same_messages(&*s, &*mirror);
    }

    pub(super) fn after_commit(stream: &str) {
        if let Some((name, hook)) = &*AFTER_COMMIT.lock() {
            if name == stream {
                hook();
            }
        }
    }

    #[test]
    fn a_removal_racing_compaction_keeps_its_block() {
        crate::log::test_hooks::NO_COMPACTION.store(true, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let limits = StreamLimits::default();
        let mirror = MemoryStore::new("RACE", limits.clone());
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("RACE", limits).unwrap();
        let stores = [&*s, &mirror as &dyn StreamStore];
        fill(&stores, 6, 250);
        // Nine in ten removed: the first segments are now sparse.
        remove_nine_in_ten(&stores, 1500, 50);
        // The next removal thins the pointer of the block holding 10 and
        // 20; while it has read that pointer, compaction runs (and deletes
        // the segments it empties) on another thread.
        let compaction = Arc::new(Mutex::new(None));
        let (db, handle) = (storage.db.clone(), compaction.clone());
        *AFTER_COMMIT.lock() = Some((
            "RACE".to_owned(),
            Box::new(move || {
                let db = db.clone();
                *handle.lock() = Some(std::thread::spawn(move || db.compact(&|| false)));
                std::thread::sleep(std::time::Duration::from_millis(300));
            }),
        ));
        apply_all(
            &stores,
            vec![StreamOp::Delete {
                seq: 10,
                erase: false,
            }],
        );
        *AFTER_COMMIT.lock() = None;
        let moved = compaction.lock().take().unwrap().join().unwrap().unwrap();
        assert!(moved > 0);
        same_messages(&*s, &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        drop((s, storage));
        let storage = Storage::open(dir.path()).unwrap();
        same_messages(&*storage.open_stream("RACE").unwrap(), &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    /// Applies one batch to each store; every op must succeed.
    fn apply_all(stores: &[&dyn StreamStore], ops: Vec<StreamOp>) {
        for store in stores {
            assert!(store.apply_batch(ops.clone()).iter().all(|r| r.is_ok()));
        }
    }

    /// Appends `batches` batches of `per_batch` 100-byte messages, on three
    /// subjects, to each store.
    fn fill(stores: &[&dyn StreamStore], batches: u64, per_batch: u64) {
        for batch in 0..batches {
            let ops = (0..per_batch)
                .map(|i| {
                    let subject = format!("s.{}", i % 3);
                    let ts = batch * per_batch + i;
                    StreamOp::Append(Append::new(subject, vec![b'x'; 100], ts))
                })
                .collect();
            apply_all(stores, ops);
        }
    }

    /// Removes nine messages in ten of `1..=last` from each store,
    /// `per_batch` at a time.
    fn remove_nine_in_ten(stores: &[&dyn StreamStore], last: u64, per_batch: usize) {
        let doomed: Vec<u64> = (1..=last).filter(|q| q % 10 != 0).collect();
        for chunk in doomed.chunks(per_batch) {
            let ops = chunk
                .iter()
                .map(|&seq| StreamOp::Delete { seq, erase: false })
                .collect();
            apply_all(stores, ops);
        }
    }

    /// Where each block of a pointer is: (segment, offset, length).
    type Places = Vec<(u32, u64, u32)>;

    /// The places of the blocks each block key points to, and whether the
    /// pointer lists removed messages.
    fn pointers(storage: &Storage) -> BTreeMap<Vec<u8>, (Places, bool)> {
        storage
            .db
            .tree
            .scan_prefix([TAG_MSG])
            .map(|item| {
                let (k, v) = item.unwrap();
                let extents = Ptr::extents(&v).expect("a logged block");
                let thin = Ptr::removed(&v).is_some();
                let places = extents
                    .iter()
                    .map(|e| (e.ptr.seg(), e.ptr.off(), e.ptr.len()))
                    .collect();
                (k.to_vec(), (places, thin))
            })
            .collect()
    }

    #[test]
    fn removing_messages_thins_pointers_and_compaction_drops_them() {
        let (dir, mirror, storage, s) =
            mirrored(StorageOptions::default(), StreamLimits::default());
        let stores = [&*s, &mirror as &dyn StreamStore];
        fill(&stores, 4, 300);
        let before = pointers(&storage);
        // Remove nine messages in ten, a few per batch, as acks would.
        remove_nine_in_ten(&stores, 1200, 7);
        // No block moved or was rewritten: their pointers list removals.
        let after = pointers(&storage);
        assert_eq!(after.len(), before.len());
        // The four batches' blocks went under one key.
        assert_eq!(after.len(), 1);
        assert!(after.values().all(|(places, _)| places.len() > 4));
        for (key, (places, thin)) in &after {
            assert_eq!(before[key], (places.clone(), false));
            assert!(*thin);
        }
        same_messages(&*s, &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        // Counted as live: about a tenth of what the blocks hold.
        let live: u64 = scanned_refs(&storage).values().map(|r| r.1).sum();
        let held: u64 = after
            .values()
            .flat_map(|(places, _)| places.iter().map(|p| u64::from(p.2)))
            .sum();
        assert!(live * 5 < held, "live {live} of {held}");
        // Compaction moves the blocks without their removed messages, each
        // key's as one.
        storage.db.compact(&|| false).unwrap();
        let moved = pointers(&storage);
        assert!(
            moved
                .values()
                .all(|(places, thin)| !thin && places.len() == 1),
            "{moved:?}"
        );
        // What compaction wrote does not qualify again.
        assert_eq!(storage.db.compact(&|| false).unwrap(), 0);
        same_messages(&*s, &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        drop((s, storage));
        let storage = Storage::open(dir.path()).unwrap();
        same_messages(&*storage.open_stream("S").unwrap(), &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    /// The number of blocks each block key's pointer names, in key order.
    fn extents_per_key(storage: &Storage) -> Vec<usize> {
        storage
            .db
            .tree
            .scan_prefix([TAG_MSG])
            .filter_map(|item| Ptr::extents(&item.unwrap().1).map(|e| e.len()))
            .collect()
    }

    /// Moves every logged block, as compaction does with sparse segments.
    fn move_everything(storage: &Storage) {
        let all: Vec<u32> = storage.db.log.refs().keys().copied().collect();
        storage.db.move_blocks_out_of(&all, &|| false).unwrap();
    }

    #[test]
    fn consecutive_batches_share_a_pointer() {
        let (dir, mirror, storage, s) =
            mirrored(StorageOptions::default(), StreamLimits::default());
        let stores = [&*s, &mirror as &dyn StreamStore];
        let subjects = ["s.0", "s.1", "s.2", ">"];
        // 40 batches of ten messages, a block each: 16 blocks per key.
        fill(&stores, 40, 10);
        assert_eq!(extents_per_key(&storage), vec![16, 16, 8]);
        same_messages(&*s, &mirror);
        same_subjects(&*s, &mirror, &subjects);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        // Larger batches (two blocks, 39 KiB each): the bytes limit closes
        // a pointer first, and no pointer passes any limit.
        fill(&stores, 30, 300);
        let all = pointers(&storage);
        let bytes: Vec<usize> = all
            .values()
            .map(|(places, _)| places.iter().map(|p| p.2 as usize).sum())
            .collect();
        assert!(
            bytes.iter().all(|b| *b <= log::GROUP_MAX_BYTES),
            "{bytes:?}"
        );
        assert!(
            bytes.iter().any(|b| *b > log::GROUP_MAX_BYTES * 3 / 4),
            "{bytes:?}"
        );
        assert!(all
            .values()
            .all(|(places, _)| places.len() <= log::GROUP_MAX_EXTENTS));
        let bases: Vec<u64> = all.keys().map(|k| key_seq(k)).collect();
        for pair in bases.windows(2) {
            assert!(pair[1] - pair[0] <= log::GROUP_MAX_SPAN, "{bases:?}");
        }
        // Every message of the second block of the first key removed: the
        // block leaves the pointer; then the first block's: the pointer
        // starts past its key.
        let second: Vec<u64> = (11..=20).collect();
        let first: Vec<u64> = (1..=10).collect();
        for seqs in [second, first] {
            let ops = seqs
                .iter()
                .map(|&seq| StreamOp::Delete { seq, erase: false })
                .collect();
            apply_all(&stores, ops);
        }
        assert_eq!(extents_per_key(&storage)[0], 14);
        same_messages(&*s, &mirror);
        same_subjects(&*s, &mirror, &subjects);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        // A purge into the middle of the last key, then appends: they do
        // not join a key below the first sequence.
        let last = mirror.state().unwrap().last_seq;
        apply_all(
            &stores,
            vec![StreamOp::Purge(PurgeRequest {
                up_to_seq: Some(last - 4),
                ..PurgeRequest::default()
            })],
        );
        assert!(
            *pointers(&storage)
                .keys()
                .map(|k| key_seq(k))
                .collect::<Vec<_>>()
                .last()
                .unwrap()
                < last - 4
        );
        let before = pointers(&storage).len();
        fill(&stores, 1, 10);
        assert!(pointers(&storage).len() > before);
        same_messages(&*s, &mirror);
        same_subjects(&*s, &mirror, &subjects);
        drop((s, storage));
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.open_stream("S").unwrap();
        same_messages(&*s, &mirror);
        same_subjects(&*s, &mirror, &subjects);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        // Moved, each key's blocks become one.
        move_everything(&storage);
        assert!(extents_per_key(&storage).iter().all(|n| *n == 1));
        same_messages(&*s, &mirror);
        same_subjects(&*s, &mirror, &subjects);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    #[test]
    fn a_block_read_before_its_pointer_moved_does_not_stand_for_the_moved_one() {
        let (_dir, mirror, storage, s) =
            mirrored(StorageOptions::default(), StreamLimits::default());
        let stores = [&*s, &mirror as &dyn StreamStore];
        fill(&stores, 19, 5);
        assert_eq!(extents_per_key(&storage), vec![16, 3]);
        // Read from the first block of the second key (the store remembers
        // it), move each key's blocks into one, then remove all that block
        // held (not the stream's first messages: a removal, not a purge).
        s.get(81).unwrap();
        move_everything(&storage);
        assert_eq!(extents_per_key(&storage), vec![1, 1]);
        let ops = (81..=85)
            .map(|seq| StreamOp::Delete { seq, erase: false })
            .collect();
        apply_all(&stores, ops);
        same_messages(&*s, &mirror);
        assert_eq!(s.state().unwrap().messages, 90);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    /// What a subject filter finds in each store: counts, the last message
    /// of each subject, and the next match from every sequence.
    fn same_subjects(a: &dyn StreamStore, b: &dyn StreamStore, subjects: &[&str]) {
        assert_eq!(
            a.subjects_state(b">").unwrap(),
            b.subjects_state(b">").unwrap()
        );
        let last = a.state().unwrap().last_seq;
        for subject in subjects.iter().map(|s| s.as_bytes()) {
            let seq = |m: Result<Option<StoredMessage>>| m.unwrap().map(|m| m.seq);
            assert_eq!(
                seq(a.last_by_subject(subject)),
                seq(b.last_by_subject(subject))
            );
            for from in 0..=last + 1 {
                let (x, y) = (
                    a.next_matching(from, subject),
                    b.next_matching(from, subject),
                );
                assert_eq!(
                    seq(x),
                    seq(y),
                    "{} from {from}",
                    String::from_utf8_lossy(subject)
                );
            }
        }
    }

    fn subject_lists(storage: &Storage) -> usize {
        storage.db.tree.scan_prefix([TAG_SUBJ]).count()
    }

    /// Appends one message on `subject` to each store.
    fn append_to(stores: &[&dyn StreamStore], subject: &str) {
        apply_all(
            stores,
            vec![StreamOp::Append(Append::new(
                subject.to_owned(),
                vec![1; 10],
                7,
            ))],
        );
    }

    /// Subject lists extended across batches, under both sync policies.
    fn extends_subject_lists(options: StorageOptions) {
        let (dir, mirror, storage, s) = mirrored(options, StreamLimits::default());
        let stores = [&*s, &mirror as &dyn StreamStore];
        let subjects = ["s.0", "s.1", "s.2", "s.>", ">"];
        // 100 messages per subject per batch: a list takes five batches
        // (500 sequences; a sixth would pass LIST_EXTEND_MAX).
        fill(&stores, 10, 300);
        assert_eq!(subject_lists(&storage), 6);
        same_subjects(&*s, &mirror, &subjects);
        // One message per subject per batch: a list grows while it holds at
        // most LIST_EXTEND_RATIO times what is added, so to nine.
        fill(&stores, 20, 3);
        assert_eq!(subject_lists(&storage), 6 + 3 * 3);
        // A batch that removes from a subject's last list and appends to
        // the subject: the list is rewritten without the removed message,
        // the appended one gets a list of its own.
        let last = mirror.last_by_subject(b"s.1").unwrap().unwrap().seq;
        let ops = vec![
            StreamOp::Delete {
                seq: last,
                erase: false,
            },
            StreamOp::Append(Append::new("s.1".to_owned(), vec![1; 10], 7)),
        ];
        apply_all(&stores, ops);
        assert_eq!(subject_lists(&storage), 16);
        same_subjects(&*s, &mirror, &subjects);
        // Removals from an older list of the subject do not stop the last
        // one from growing.
        let ops = vec![
            StreamOp::Delete {
                seq: 4,
                erase: false,
            },
            StreamOp::Append(Append::new("s.1".to_owned(), vec![1; 10], 7)),
        ];
        apply_all(&stores, ops);
        assert_eq!(subject_lists(&storage), 16);
        same_subjects(&*s, &mirror, &subjects);
        // A purge of one subject, then more batches.
        let purge = PurgeRequest {
            filter: Some(Bytes::from_static(b"s.1")),
            up_to_seq: None,
            keep: Some(5),
        };
        assert_eq!(
            s.purge(purge.clone()).unwrap(),
            mirror.purge(purge).unwrap()
        );
        fill(&stores, 3, 30);
        same_subjects(&*s, &mirror, &subjects);
        same_messages(&*s, &mirror);
        // After a purge of everything the next list starts above it.
        let all = PurgeRequest {
            filter: None,
            up_to_seq: None,
            keep: Some(10),
        };
        assert_eq!(s.purge(all.clone()).unwrap(), mirror.purge(all).unwrap());
        fill(&stores, 3, 30);
        same_subjects(&*s, &mirror, &subjects);
        // The lists read back the same after a restart.
        drop((s, storage));
        let storage = Storage::open_with(dir.path(), options).unwrap();
        let s = storage.open_stream("S").unwrap();
        same_subjects(&*s, &mirror, &subjects);
        same_messages(&*s, &mirror);
        fill(&[&*s, &mirror], 2, 30);
        same_subjects(&*s, &mirror, &subjects);
    }

    #[test]
    fn consecutive_batches_extend_their_subject_lists() {
        extends_subject_lists(StorageOptions::default());
        extends_subject_lists(StorageOptions {
            sync: SyncPolicy::Interval(std::time::Duration::from_millis(50)),
            ..StorageOptions::default()
        });
    }

    /// A stream at its limit removes its oldest messages in every batch;
    /// the lists it appends to still grow.
    #[test]
    fn a_stream_at_its_limit_extends_its_subject_lists() {
        let limits = StreamLimits {
            max_msgs: Some(1000),
            ..StreamLimits::default()
        };
        let (_dir, mirror, storage, s) = mirrored(StorageOptions::default(), limits);
        let stores = [&*s, &mirror as &dyn StreamStore];
        fill(&stores, 40, 300);
        // 333 live messages per subject in lists of up to 500: at most two
        // lists each that hold live ones, and cleanup removes dead lists.
        assert!(subject_lists(&storage) <= 9, "{}", subject_lists(&storage));
        same_subjects(&*s, &mirror, &["s.0", "s.1", "s.2", ">"]);
        same_messages(&*s, &mirror);
    }

    /// More subjects per batch than a stream remembers: the lists stay
    /// right, whichever are extended.
    #[test]
    fn batches_with_more_subjects_than_remembered_keep_their_lists_right() {
        let (_dir, mirror, _storage, s) =
            mirrored(StorageOptions::default(), StreamLimits::default());
        let stores = [&*s, &mirror as &dyn StreamStore];
        for (round, subjects) in [(0, 1100), (1, 1100), (2, 600), (3, 1100), (4, 1000)] {
            let ops = (0..subjects)
                .map(|i| StreamOp::Append(Append::new(format!("k.{i}"), vec![1; 10], round)))
                .collect();
            apply_all(&stores, ops);
        }
        same_subjects(
            &*s,
            &mirror,
            &["k.0", "k.599", "k.600", "k.1023", "k.1099", "k.*"],
        );
        same_messages(&*s, &mirror);
    }

    /// A restore replaces every list, so the lists remembered before it
    /// are not extended after it.
    #[test]
    fn a_restore_forgets_the_lists_to_extend() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StreamLimits::default();
        let storage = Storage::open(dir.path()).unwrap();
        let a = storage.create_stream("A", limits.clone()).unwrap();
        let b = storage.create_stream("B", limits.clone()).unwrap();
        let mirror = MemoryStore::new("A", limits);
        append_to(&[&*a], "s.0");
        // B: s.0 at 1 and 4201, s.1 between. A restore writes lists in
        // chunks of 4096 messages, so s.0 gets two lists, at 1 and 4201.
        let mut ops = vec![StreamOp::Append(Append::new(
            "s.0".to_owned(),
            vec![1; 10],
            1,
        ))];
        ops.extend(
            (2..=4200).map(|i| StreamOp::Append(Append::new("s.1".to_owned(), vec![1; 10], i))),
        );
        ops.push(StreamOp::Append(Append::new(
            "s.0".to_owned(),
            vec![1; 10],
            4201,
        )));
        apply_all(&[&*b, &mirror], ops);
        a.restore(&b.snapshot().unwrap()).unwrap();
        append_to(&[&*a, &mirror], "s.0");
        same_subjects(&*a, &mirror, &["s.0", "s.1"]);
        same_messages(&*a, &mirror);
    }

    /// Batch `i` of a KV-like stream: one key written once, nine updated.
    fn kv_batch(i: u64, size: usize) -> Vec<StreamOp> {
        let subject = if i == 0 {
            "keep".to_owned()
        } else {
            format!("k.{}", i % 9)
        };
        vec![StreamOp::Append(Append::new(subject, vec![7; size], i + 1))]
    }

    #[test]
    fn compaction_racing_writers_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let limits = StreamLimits {
            max_msgs_per_subject: Some(1),
            ..StreamLimits::default()
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..3)
                .map(|t| {
                    let (storage, limits) = (&storage, limits.clone());
                    scope.spawn(move || {
                        let s = storage.create_stream(&format!("K{t}"), limits).unwrap();
                        for i in 0..300 {
                            let ops = kv_batch(i, 300 + t * 100);
                            assert!(s.apply_batch(ops).iter().all(|r| r.is_ok()));
                        }
                    })
                })
                .collect();
            let compactor = scope.spawn(|| {
                let mut moved = 0;
                for _ in 0..2000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    moved += storage.db.compact(&|| false).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                moved
            });
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
            assert!(compactor.join().unwrap() > 0);
        });
        storage.db.compact(&|| false).unwrap();
        let batch = |t: u64, i: u64| kv_batch(i, 300 + t as usize * 100);
        check_writers(&storage, "K", 3, 300, &limits, batch);
        drop(storage);
        check_writers(
            &Storage::open(dir.path()).unwrap(),
            "K",
            3,
            300,
            &limits,
            batch,
        );
    }

    #[test]
    fn compaction_leaves_tiny_and_dense_blocks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let kv = storage
            .create_stream(
                "K",
                StreamLimits {
                    max_msgs_per_subject: Some(1),
                    ..StreamLimits::default()
                },
            )
            .unwrap();
        let plain = storage.create_stream("P", StreamLimits::default()).unwrap();
        // Many tiny keys, each written once in a block of its own, then
        // enough other writes to close several segments.
        for i in 0..600u64 {
            let op = StreamOp::Append(Append::new(format!("key.{i}"), vec![1; 8], i + 1));
            assert!(kv.apply_batch(vec![op]).iter().all(|r| r.is_ok()));
        }
        let kv_keys = storage.db.tree.scan_prefix([TAG_MSG]).count();
        assert!(kv_keys <= 600 / log::GROUP_MAX_EXTENTS + 1, "{kv_keys}");
        for round in 0..3u64 {
            for i in 0..200u64 {
                let ts = 10_000 + round * 1000 + i;
                assert!(plain
                    .apply_batch(appends(ts, 1, 400))
                    .iter()
                    .all(|r| r.is_ok()));
            }
            // Tiny blocks cost about as much to move as they free, and
            // plain appends leave nothing to free: neither is worth moving
            // (counting a block's bytes only, both looked sparse, and what
            // a pass moved looked sparse again once its segment closed).
            // But the segments the tiny blocks went to hold mostly the
            // pointers that each batch rewrote to add its block, so the
            // first pass may move the tiny blocks (each key's as one),
            // once.
            let moved = storage.db.compact(&|| false).unwrap();
            let at_most = if round == 0 { kv_keys } else { 0 };
            assert!(
                moved <= at_most,
                "round {round}: {moved} moved, {kv_keys} keys"
            );
        }
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        assert_eq!(kv.state().unwrap().messages, 600);
    }

    fn last_segment(dir: &Path) -> std::path::PathBuf {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names.pop().unwrap()
    }

    /// The applied position sled holds on disk (the storage must be closed;
    /// its background threads may hold sled's lock a moment longer).
    fn applied_on_disk(dir: &Path) -> (u32, u64) {
        let db = open_retrying(&sled::Config::new().path(dir)).unwrap();
        let raw = db
            .open_tree("streams")
            .unwrap()
            .get(crate::log::APPLIED_KEY)
            .unwrap();
        raw.map_or((0, 0), |raw| crate::log::decode_applied(&raw).unwrap())
    }

    #[test]
    fn a_torn_record_at_the_end_of_the_log_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new();
        mirror.run(&Storage::open(dir.path()).unwrap(), 0..20);
        // Half a record after the last one: a plausible header, then the
        // process died.
        let seg = last_segment(dir.path());
        let (_, len) = applied_on_disk(dir.path());
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9], len)
                .unwrap();
        }
        for _ in 0..2 {
            mirror.check(&Storage::open(dir.path()).unwrap());
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        }
        // The log goes on after it.
        mirror.run(&Storage::open(dir.path()).unwrap(), 20..21);
        mirror.check(&Storage::open(dir.path()).unwrap());
    }

    #[test]
    fn logged_blocks_stay_readable_under_an_interval_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::new();
        mirror.run(&Storage::open(dir.path()).unwrap(), 0..40);
        let options = StorageOptions {
            sync: SyncPolicy::Interval(std::time::Duration::from_millis(50)),
            ..StorageOptions::default()
        };
        {
            let storage = Storage::open_with(dir.path(), options).unwrap();
            mirror.check(&storage);
            // Rewrites of logged blocks are stored inline now.
            mirror.run(&storage, 40..80);
            mirror.check(&storage);
            assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        }
        let storage = Storage::open(dir.path()).unwrap();
        mirror.check(&storage);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    #[test]
    fn a_walk_from_a_block_whose_pointer_moved_and_whose_segment_went_reads_on_where_it_is() {
        let (dir, mirror, storage, s) =
            mirrored(StorageOptions::default(), StreamLimits::default());
        fill(&[&*s, &mirror], 3, 5); // one key: blocks 1..=5, 6..=10, 11..=15
        assert_eq!(extents_per_key(&storage), vec![3]);
        let first_segment = *storage.db.log.refs().keys().next().unwrap();
        // Another stream, enough to close the segment S is in.
        let filler = |name: &str| {
            let f = storage
                .create_stream(name, StreamLimits::default())
                .unwrap();
            fill(&[&*f], 20, 30);
        };
        filler("F");
        // The store remembers S's first block (a point read), with the
        // pointer it came from.
        s.get(2).unwrap();
        // Every block moves (S's three as one); with F gone, S's old
        // segment has nothing left and is deleted; moving and deleting
        // again closes its file.
        move_everything(&storage);
        storage.delete_stream("F").unwrap();
        storage.db.collect();
        filler("G");
        storage.delete_stream("G").unwrap();
        move_everything(&storage);
        storage.db.collect();
        assert!(!storage.db.log.refs().contains_key(&first_segment));
        let path = dir
            .path()
            .join("log")
            .join(format!("{first_segment:010}.seg"));
        assert!(!path.exists());
        // A walk from the remembered block goes on with the blocks its
        // pointer named: they are gone from there, so it reads the key
        // where it is now, and returns every message once.
        let (walked, expected) = (s.snapshot().unwrap(), mirror.snapshot().unwrap());
        assert!(walked == expected, "the walk returned other messages");
        assert_eq!(s.deleted_seqs().unwrap(), Vec::<u64>::new());
        same_messages(&*s, &mirror);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
    }

    /// Random batches, removals, purges and reads, with compaction moving
    /// everything and reopens between them, against a memory store: the
    /// pointers that name several blocks, the cached block and the segment
    /// counts stay right whatever the order.
    #[test]
    fn random_work_with_moves_and_reopens_matches_memory() {
        for seed in 1..=6u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            let limits = StreamLimits {
                max_msgs_per_subject: (seed == 2).then_some(20),
                ..StreamLimits::default()
            };
            let dir = tempfile::tempdir().unwrap();
            let mirror = MemoryStore::new("S", limits.clone());
            let mut storage = Storage::open(dir.path()).unwrap();
            let mut s = storage.create_stream("S", limits).unwrap();
            let subjects = ["s.0", "s.1", "s.2", "s.3", "s.>", ">"];
            let mut ts = 0;
            let mut most_extents = 0;
            for step in 0..300u64 {
                let state = mirror.state().unwrap();
                let span = state.last_seq.saturating_sub(state.first_seq) + 1;
                let ops: Vec<StreamOp> = match next(20) {
                    0..=7 => (0..1 + next(40))
                        .map(|_| {
                            ts += 1;
                            let subject = format!("s.{}", next(4));
                            let size = [10, 100, 1000, 5000][next(4) as usize];
                            StreamOp::Append(Append::new(subject, vec![b'x'; size], ts))
                        })
                        .collect(),
                    8..=9 => (0..1 + next(10))
                        .map(|_| StreamOp::Delete {
                            seq: state.first_seq + next(span),
                            erase: false,
                        })
                        .collect(),
                    // A run, as acks on a work queue remove them (it may
                    // empty a block of a pointer).
                    10..=13 => {
                        let from = state.first_seq + next(span);
                        (from..from + 1 + next(60))
                            .map(|seq| StreamOp::Delete { seq, erase: false })
                            .collect()
                    }
                    14 => vec![StreamOp::Purge(PurgeRequest {
                        up_to_seq: Some(state.first_seq + next(span / 4 + 1)),
                        ..PurgeRequest::default()
                    })],
                    15 => vec![StreamOp::Purge(PurgeRequest {
                        filter: Some(format!("s.{}", next(4)).into()),
                        keep: Some(next(30)),
                        ..PurgeRequest::default()
                    })],
                    16 => {
                        move_everything(&storage);
                        Vec::new()
                    }
                    17 => {
                        // Reopened under either policy: under an interval
                        // policy, removals rewrite logged blocks inline.
                        drop(s);
                        drop(storage);
                        let sync = if next(3) == 0 {
                            SyncPolicy::Interval(std::time::Duration::from_millis(50))
                        } else {
                            SyncPolicy::Always
                        };
                        let options = StorageOptions {
                            sync,
                            ..StorageOptions::default()
                        };
                        storage = Storage::open_with(dir.path(), options).unwrap();
                        s = storage.open_stream("S").unwrap();
                        Vec::new()
                    }
                    _ => {
                        // Reads, which leave a block in the cache.
                        let seq = state.first_seq + next(span);
                        assert_eq!(s.get(seq), mirror.get(seq), "seed {seed} step {step}");
                        let subject = format!("s.{}", next(4));
                        let (x, y) = (
                            s.next_matching(seq, subject.as_bytes()).unwrap(),
                            mirror.next_matching(seq, subject.as_bytes()).unwrap(),
                        );
                        assert_eq!(
                            x.map(|m| m.seq),
                            y.map(|m| m.seq),
                            "seed {seed} step {step}"
                        );
                        Vec::new()
                    }
                };
                if !ops.is_empty() {
                    let (a, b) = (s.apply_batch(ops.clone()), mirror.apply_batch(ops));
                    assert_eq!(a, b, "seed {seed} step {step}");
                }
                let most = extents_per_key(&storage).into_iter().max().unwrap_or(0);
                most_extents = most_extents.max(most);
                if step % 50 == 49 {
                    same_messages(&*s, &mirror);
                    same_subjects(&*s, &mirror, &subjects);
                    assert_eq!(counted_refs(&storage), scanned_refs(&storage));
                }
            }
            same_messages(&*s, &mirror);
            same_subjects(&*s, &mirror, &subjects);
            assert_eq!(counted_refs(&storage), scanned_refs(&storage));
            assert!(
                most_extents > 4,
                "seed {seed}: pointers named {most_extents} blocks at most"
            );
        }
    }

    #[test]
    fn a_pointer_to_several_blocks_is_rewritten_inline_in_blocks_of_the_inline_size() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StreamLimits::default();
        let mirror = MemoryStore::new("S", limits.clone());
        {
            let storage = Storage::open(dir.path()).unwrap();
            let s = storage.create_stream("S", limits).unwrap();
            fill(&[&*s, &mirror], 16, 10);
            assert_eq!(extents_per_key(&storage), vec![16]);
        }
        let options = StorageOptions {
            sync: SyncPolicy::Interval(std::time::Duration::from_millis(50)),
            ..StorageOptions::default()
        };
        {
            let storage = Storage::open_with(dir.path(), options).unwrap();
            let s = storage.open_stream("S").unwrap();
            apply_all(
                &[&*s, &mirror],
                vec![StreamOp::Delete {
                    seq: 5,
                    erase: false,
                }],
            );
            same_messages(&*s, &mirror);
            // About 21 KiB that one pointer named, now inline blocks of up
            // to 8 KiB.
            let inline: Vec<usize> = storage
                .db
                .tree
                .scan_prefix([TAG_MSG])
                .map(|item| item.unwrap().1.len())
                .collect();
            assert!(inline.len() >= 3, "{inline:?}");
            assert!(
                inline
                    .iter()
                    .all(|len| *len <= block::BLOCK_DATA_TARGET + 1024),
                "{inline:?}"
            );
            assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        }
        let storage = Storage::open(dir.path()).unwrap();
        same_messages(&*storage.open_stream("S").unwrap(), &mirror);
    }

    const CRASH_CHILD: &str = "TERN_STORAGE_CRASH_CHILD";
    const DIE_AFTER: &str = "TERN_STORAGE_DIE_AFTER_APPLIED_OPS";

    /// In a child process (this test binary, running `test` alone): runs the
    /// workload on `dir` with no sled flush at all (no background flusher,
    /// no segment deletion), then dies, or dies `die_after` sled operations
    /// into applying the log.
    fn crash_child(test: &str, dir: &Path, die_after: Option<i64>) {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture"])
            .env(CRASH_CHILD, dir);
        if let Some(n) = die_after {
            cmd.env(DIE_AFTER, n.to_string());
        }
        let out = cmd.output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "the child should abort: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child's side of [`crash_child`]; returns in the parent.
    fn as_crash_child() {
        let Some(dir) = std::env::var_os(CRASH_CHILD) else {
            return;
        };
        NO_BACKGROUND_FLUSH.store(true, Ordering::SeqCst);
        crate::log::test_hooks::NO_GC.store(true, Ordering::SeqCst);
        crate::log::test_hooks::NO_COMPACTION.store(true, Ordering::SeqCst);
        let storage = Storage::open(&dir).unwrap();
        let (s, kv) = streams(&storage);
        if let Some(n) = std::env::var_os(DIE_AFTER) {
            let n = n.to_str().unwrap().parse().unwrap();
            crate::log::test_hooks::DIE_AFTER_APPLIED_OPS.store(n, Ordering::SeqCst);
        }
        for i in 0..200 {
            round(&*s, &*kv, i);
        }
        std::process::abort();
    }

    #[test]
    fn a_crash_before_sled_flushes_loses_nothing_acknowledged() {
        as_crash_child();
        let dir = tempfile::tempdir().unwrap();
        crash_child(
            "file::tests::a_crash_before_sled_flushes_loses_nothing_acknowledged",
            dir.path(),
            None,
        );
        let mirror = Mirror::new();
        let (s, kv) = (&mirror.s, &mirror.kv);
        for i in 0..200 {
            round(&**s, &**kv, i);
        }
        // sled never flushed after the streams were created: every batch
        // comes back from the log (two records a round).
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(storage.db.log.replayed(), 400);
        mirror.check(&storage);
        assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        drop(storage);
        let storage = Storage::open(dir.path()).unwrap();
        assert_eq!(storage.db.log.replayed(), 0);
        mirror.check(&storage);
    }

    #[test]
    fn a_record_half_applied_when_the_process_died_is_applied_whole() {
        as_crash_child();
        // Several cut points, so that some fall inside a record.
        for die_after in 300..306 {
            let dir = tempfile::tempdir().unwrap();
            crash_child(
                "file::tests::a_record_half_applied_when_the_process_died_is_applied_whole",
                dir.path(),
                Some(die_after),
            );
            let storage = Storage::open(dir.path()).unwrap();
            let replayed = storage.db.log.replayed();
            assert!(replayed > 0);
            // The record being applied was on disk: it is there whole, and
            // nothing after it (there was nothing after it).
            let (s, kv) = streams(&storage);
            let s_batches = s.state().unwrap().last_seq / 10;
            let kv_batches = kv.state().unwrap().last_seq / 3;
            assert!(
                s_batches == kv_batches || s_batches == kv_batches + 1,
                "{s_batches} and {kv_batches} batches"
            );
            assert_eq!(replayed, s_batches + kv_batches);
            let mirror = Mirror::new();
            for i in 0..kv_batches {
                round(&*mirror.s, &*mirror.kv, i);
            }
            if s_batches > kv_batches {
                round_s(&*mirror.s, kv_batches);
            }
            mirror.check(&storage);
            assert_eq!(counted_refs(&storage), scanned_refs(&storage));
        }
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0xff, 0xff, 0xff]);
        let p = stream_prefix(TAG_MSG, 7);
        assert!(block_key(7, u64::MAX).as_slice() < prefix_end(&p).as_slice());
        assert!(block_key(8, 0).as_slice() >= prefix_end(&p).as_slice());
    }

    #[test]
    fn keys_sort_numerically_and_subjects_do_not_overlap() {
        assert!(block_key(1, 255) < block_key(1, 256));
        assert!(block_key(1, u64::MAX) < block_key(2, 0));
        assert_eq!(key_seq(&block_key(3, 99)), 99);
        assert_eq!(key_seq(&idx_key(3, b"a.b", 42)), 42);
        // Every key of subject "a" sorts before those of "a.b" and "a0".
        let a_max = idx_key(1, b"a", u64::MAX);
        assert!(a_max < idx_key(1, b"a.b", 0));
        assert!(a_max < idx_key(1, b"a0", 0));
        assert!(idx_key(1, b"a", 0) > idx_key(1, b"", u64::MAX));
    }

    fn collect(disk: &[u64], pending: &[(u64, Option<char>)], rev: bool) -> Vec<(u64, char)> {
        let mut out = Vec::new();
        let d: Vec<Result<(u64, char)>> = disk.iter().map(|s| Ok((*s, 'd'))).collect();
        merge(d.into_iter(), pending.iter().copied(), rev, |seq, src| {
            out.push((
                seq,
                match src {
                    Src::Disk(c) | Src::Pending(c) => c,
                },
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn merge_lets_pending_entries_win() {
        let pending = [(2, None), (3, Some('p')), (5, Some('p'))];
        assert_eq!(
            collect(&[1, 2, 3, 4], &pending, false),
            vec![(1, 'd'), (3, 'p'), (4, 'd'), (5, 'p')]
        );
        let rev: Vec<_> = pending.iter().rev().copied().collect();
        assert_eq!(
            collect(&[4, 3, 2, 1], &rev, true),
            vec![(5, 'p'), (4, 'd'), (3, 'p'), (1, 'd')]
        );
        assert_eq!(collect(&[], &[(1, None)], false), vec![]);
    }
}
