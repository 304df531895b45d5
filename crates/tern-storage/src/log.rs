//! The message log: where the file store writes message blocks when every
//! batch is fsynced ([`SyncPolicy::Always`](crate::SyncPolicy)).
//!
//! sled keeps values inside its B-tree leaves and rewrites a whole leaf,
//! values included, every few updates and on every split: a block of
//! messages is written to disk about three times over. So under
//! `SyncPolicy::Always` a batch's blocks go to an append-only log instead,
//! and sled keeps pointers to them (17 bytes for one block; a pointer may
//! name several, see below).
//!
//! # Write-ahead
//!
//! The log is also the write-ahead log of the sled changes a batch makes. A
//! batch becomes one *record*: its sled operations (the pointers among them)
//! followed by its block data, sealed with a CRC. A commit appends the
//! record, fsyncs the log (one fsync shared by every batch appended
//! meanwhile: group commit) and only then applies the operations to sled,
//! in log order, together with the log position they reach (the *applied
//! position*). The batch is acknowledged after that; sled itself is flushed
//! in the background.
//!
//! So sled never holds a pointer to log data that is not on disk, and after
//! a crash sled holds a prefix of the records (sled recovers a prefix of its
//! own writes). Opening the store replays every whole record after the
//! applied position and cuts a torn one off the end.
//!
//! # Segments
//!
//! The log is a directory of segment files `NNNNNNNNNN.seg`, a new one
//! every 64 MiB. Every segment is counted: the blocks in it that sled's
//! pointers name and their bytes, taken from what sled actually replaced as
//! records are applied. A segment that no pointer names any more, and whose
//! records are all applied, is deleted after a sled flush makes both facts
//! durable. A closed, applied segment that moving its live blocks would at
//! least halve (counting each move's own op, so what compaction writes
//! qualifies again only where the moves logged long lists of removed
//! messages, and then once) is compacted in the background: its live blocks
//! are appended again as compare-and-swap moves (a block a stream rewrote
//! meanwhile keeps the stream's version), which leaves it empty.
//!
//! ```text
//! record := len u32 LE | crc u32 LE | body        (len = body length)
//! body   := count u32 LE, count × op, block data
//! op     := key len u32 LE, key, 0 (remove)
//!                                | 1 value (put)
//!                                | 2 expected value, new value (swap)
//! value  := len u32 LE, bytes
//! crc    := crc32 over segment id u32 BE ++ record offset u64 BE ++ body
//! pointer (sled value) := 0xFF, segment u32 BE, offset u64 BE, len u32 BE
//!                        | 0xFE, segment, offset, len, live u32 BE, removed
//!                        | 0xFD, n u8, n × extent, [removed]
//! extent  := delta u32 BE, segment, offset, len, live
//! removed := the sequences removed from the block(s), as a subject list
//! ```
//!
//! # Pointers that name several blocks
//!
//! Every sled key costs sled memory for as long as it exists, so a batch
//! does not add a key for its blocks when the stream's last pointer has
//! room: it rewrites that pointer with its blocks added as *extents* (0xFD),
//! up to [`GROUP_MAX_EXTENTS`] blocks, [`GROUP_MAX_BYTES`] bytes and
//! [`GROUP_MAX_SPAN`] sequences under one key. Each extent is a block of its
//! own, sealed with its own first sequence (the key's plus `delta`), and
//! counts its own `live` bytes in its segment; a list of removed messages
//! covers the whole key. A point read reads only the extent that may hold
//! its sequence.
//!
//! # Removals
//!
//! Removing messages from a logged block does not write it again: its
//! pointer becomes a *thinned* one (0xFE) that lists the removed sequences
//! and counts only the block's `live` bytes (what the remaining messages
//! would take rewritten). Readers see the block without them; compaction
//! moves it without them. A block left with nothing leaves its pointer, and
//! the key goes with the pointer's last block. A segment's live bytes sum
//! the blocks' `live`, so thinned blocks make it sparse.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use sled::{Batch, IVec};

use crate::error::StorageError;

type Result<T> = std::result::Result<T, StorageError>;

/// The sled key of the applied position: segment u32 BE, offset u64 BE.
pub(crate) const APPLIED_KEY: [u8; 1] = [0x05];
const PTR_TAG: u8 = 0xFF;
const PTR_LEN: usize = 17;
/// A pointer to a block that messages were removed from: the pointer, the
/// bytes of the block still live (u32 BE), then the removed sequences.
const THIN_TAG: u8 = 0xFE;
const THIN_LEN: usize = PTR_LEN + 4;
/// A pointer to several blocks: the tag, their count, then each block.
const GROUP_TAG: u8 = 0xFD;
const GROUP_HEAD: usize = 2;
const EXTENT_LEN: usize = 24;
/// Most blocks one pointer names.
pub(crate) const GROUP_MAX_EXTENTS: usize = 16;
/// Most bytes the blocks of one pointer take: compaction moves them
/// together, and a removal under an interval policy reads them together.
pub(crate) const GROUP_MAX_BYTES: usize = 256 << 10;
/// Most sequences one pointer spans (a block read whole holds at most
/// 65,536 messages).
pub(crate) const GROUP_MAX_SPAN: u64 = 4096;
const HEADER: usize = 8;
/// A segment is closed once it holds this much (little in unit tests, so
/// they see many segments).
#[cfg(not(test))]
const SEGMENT_TARGET: u64 = 64 << 20;
#[cfg(test)]
const SEGMENT_TARGET: u64 = 64 << 10;
/// Segments grow by allocated chunks of this size: an fdatasync after a
/// write into allocated space need not commit a new file size as well.
#[cfg(not(test))]
const PREALLOCATE: u64 = 1 << 20;
#[cfg(test)]
const PREALLOCATE: u64 = 16 << 10;
/// How long a deleted segment's file stays open, for readers that found a
/// pointer into it just before its blocks moved; closing it gives its
/// space back to the file system.
#[cfg(not(test))]
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
#[cfg(test)]
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The first byte of the sled keys whose values are blocks (inline) or
/// pointers to them: the only keys the log counts pointers of.
pub(crate) const BLOCK_KEY_TAG: u8 = 0x03;
/// Segments whose live blocks take less than this share of them are
/// compacted: their live blocks are copied to the end of the log, so disk
/// use stays under twice the live data (plus the segment being written).
const COMPACT_BELOW_LIVE_SHARE: f64 = 0.5;
/// What moving one block costs in the log besides its bytes: its op (key,
/// expected pointer, new pointer, lengths and tag), rounded up; a thinned
/// pointer's list of removed messages is counted apart (`Segment::listed`).
/// Counted per block, though the blocks of one pointer move in one op (so
/// for those it overstates, and compaction waits a little longer).
const MOVE_OVERHEAD: u64 = 80;
/// No block is longer: one holds either records of up to 8 KiB together or
/// a single record, and no message reaches 64 MiB (NATS's `max_payload`
/// ceiling).
const MAX_BLOCK_LEN: u32 = 128 << 20;

/// One sled operation from the log.
enum SledOp {
    Put(IVec),
    Remove,
    /// Put `new` only if the key still holds `expected` (a block moved by
    /// compaction, unless a write changed it meanwhile).
    Swap {
        expected: IVec,
        new: IVec,
    },
}

type SledOps = Vec<(IVec, SledOp)>;

/// What the log knows of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Blocks in it that sled's pointers name.
    pub(crate) pointers: u64,
    /// Bytes of the blocks they point to.
    pub(crate) live: u64,
    /// Bytes of the lists of removed messages in thinned pointers to it:
    /// moving such a block logs its pointer, list included.
    pub(crate) listed: u64,
    /// Its length once it is closed; 0 while it is written to.
    size: u64,
}

type Segments = BTreeMap<u32, Segment>;

/// Counts a pointer sled now holds (`add`) or no longer holds; returns
/// whether a segment is left with none. Each block a pointer names counts
/// once in its segment; a list of removed messages counts in the segment of
/// each (moving any of them logs the list).
fn account(segments: &mut Segments, raw: &[u8], add: bool) -> bool {
    let Some(extents) = Ptr::extents(raw) else {
        return false;
    };
    let listed = Ptr::removed(raw).map_or(0, |l| l.len() as u64);
    let mut emptied = false;
    for Extent { ptr: p, .. } in extents {
        let Some(s) = segments.get_mut(&p.seg) else {
            if add {
                tracing::error!(
                    segment = p.seg,
                    "a pointer into a segment the log does not know"
                );
            }
            continue;
        };
        if add {
            s.pointers += 1;
            s.live += u64::from(p.live);
            s.listed += listed;
            continue;
        }
        if s.pointers == 0 {
            tracing::error!(segment = p.seg, "log pointer released twice");
            continue;
        }
        s.pointers -= 1;
        s.live = s.live.saturating_sub(u64::from(p.live));
        s.listed = s.listed.saturating_sub(listed);
        emptied |= s.pointers == 0;
    }
    emptied
}

/// Applies operations to sled one by one, then the log position they
/// reach. Not a sled batch: sled writes its buffers out on every batch, and
/// the log already makes a record all-or-nothing (a record half applied
/// when the process died is applied again, whole, on open). Pointers are
/// counted from what sled actually replaced, so a block moved by compaction
/// and rewritten by a stream at the same time is counted once. Returns
/// whether a segment was left without pointers.
fn apply(
    tree: &sled::Tree,
    ops: SledOps,
    seg: u32,
    end: u64,
    segments: Option<&Mutex<Segments>>,
) -> Result<bool> {
    let mut emptied = false;
    for (key, op) in ops {
        #[cfg(test)]
        test_hooks::maybe_die_in_apply();
        // A block key's change and its count happen under the counts' lock,
        // so a concurrent removal (cleanup, a wipe) is counted in the same
        // order sled saw it.
        let counted = segments.filter(|_| key.first() == Some(&BLOCK_KEY_TAG));
        let mut guard = counted.map(|s| s.lock());
        let (old, new) = match op {
            SledOp::Put(v) => (tree.insert(&key, v.clone())?, Some(v)),
            SledOp::Remove => (tree.remove(&key)?, None),
            SledOp::Swap { expected, new } => {
                match tree.compare_and_swap(&key, Some(&expected), Some(new.clone()))? {
                    Ok(()) => (Some(expected), Some(new)),
                    Err(_) => (None, None),
                }
            }
        };
        if let Some(segments) = guard.as_deref_mut() {
            if let Some(new) = &new {
                account(segments, new, true);
            }
            if let Some(old) = &old {
                emptied |= account(segments, old, false);
            }
        }
    }
    tree.insert(APPLIED_KEY, &encode_applied(seg, end)[..])?;
    Ok(emptied)
}

/// One sled operation of a batch.
pub(crate) enum Op {
    Remove,
    Put(Vec<u8>),
    /// A message block: logged, with a pointer in sled (or stored inline
    /// when the batch is not logged).
    Block(Vec<u8>),
    /// A logged block copied to the end of the log, if its key still
    /// points where it did.
    Move {
        expected: IVec,
        block: Vec<u8>,
    },
    /// Blocks logged under one pointer: the pointer `old` (read while the
    /// batch holds off compaction) with these blocks added, each with its
    /// first sequence's distance from the key's.
    Group {
        old: Option<IVec>,
        blocks: Vec<(u32, Vec<u8>)>,
    },
}

/// The sled operations of one batch, in order.
#[derive(Default)]
pub(crate) struct Ops {
    list: Vec<(Vec<u8>, Op)>,
    /// Old values of the block keys this batch overwrites or removes, for
    /// a batch stored inline (a logged batch counts what sled replaced).
    released: Vec<IVec>,
}

impl Ops {
    pub(crate) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.list.push((key.into(), Op::Put(value.into())));
    }

    pub(crate) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.list.push((key.into(), Op::Remove));
    }

    pub(crate) fn block(&mut self, key: impl Into<Vec<u8>>, block: Vec<u8>) {
        self.list.push((key.into(), Op::Block(block)));
    }

    /// Blocks logged under one key: added to the pointer `old` the key
    /// holds, or under a new pointer.
    pub(crate) fn group(
        &mut self,
        key: impl Into<Vec<u8>>,
        old: Option<IVec>,
        blocks: Vec<(u32, Vec<u8>)>,
    ) {
        self.list.push((key.into(), Op::Group { old, blocks }));
    }

    /// Moves a block that `expected` points to (compaction).
    pub(crate) fn move_block(&mut self, key: impl Into<Vec<u8>>, expected: IVec, block: Vec<u8>) {
        self.list.push((key.into(), Op::Move { expected, block }));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Notes the old value of a block key this batch overwrites or removes.
    pub(crate) fn release(&mut self, old: IVec) {
        if Ptr::extents(&old).is_some() {
            self.released.push(old);
        }
    }

    /// The operations as one sled batch with blocks stored inline.
    pub(crate) fn into_inline(self) -> (Batch, Vec<IVec>) {
        let mut batch = Batch::default();
        for (key, op) in self.list {
            match op {
                Op::Remove => batch.remove(key),
                Op::Put(v) | Op::Block(v) => batch.insert(key, v),
                // Moves only come from compacting the log.
                Op::Move { .. } => {}
                // Only logged batches group blocks; stored inline, each is
                // a key of its own.
                Op::Group { blocks, .. } => {
                    let at = key.len().saturating_sub(8);
                    let base = u64::from_be_bytes(key[at..].try_into().unwrap_or_default());
                    for (delta, block) in blocks {
                        let mut own = key[..at].to_vec();
                        own.extend_from_slice(&(base + u64::from(delta)).to_be_bytes());
                        batch.insert(own, block);
                    }
                }
            }
        }
        (batch, self.released)
    }
}

/// Where a block lives in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ptr {
    seg: u32,
    off: u64,
    len: u32,
    /// Bytes of the block still in use: less than `len` once messages
    /// were removed from it.
    live: u32,
}

impl Ptr {
    fn new(seg: u32, off: u64, len: u32) -> Ptr {
        Ptr {
            seg,
            off,
            len,
            live: len,
        }
    }

    fn encode(self) -> [u8; PTR_LEN] {
        let mut out = [0u8; PTR_LEN];
        out[0] = PTR_TAG;
        out[1..5].copy_from_slice(&self.seg.to_be_bytes());
        out[5..13].copy_from_slice(&self.off.to_be_bytes());
        out[13..17].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// The same block with `live` of its bytes in use.
    pub(crate) fn with_live(self, live: u32) -> Ptr {
        Ptr {
            live: live.min(self.len),
            ..self
        }
    }

    /// The segment it points into.
    pub(crate) fn seg(self) -> u32 {
        self.seg
    }

    /// Where the block starts in its segment.
    #[cfg(test)]
    pub(crate) fn off(self) -> u64 {
        self.off
    }

    /// The block's length.
    pub(crate) fn len(self) -> u32 {
        self.len
    }

    /// Bytes of the block still in use.
    #[cfg(test)]
    pub(crate) fn live(self) -> u32 {
        self.live
    }

    /// The value of this pointer once messages were removed from its
    /// block: `live` bytes of it are still in use, and `removed` is the
    /// encoded list of their sequences.
    pub(crate) fn thinned(self, live: u32, removed: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(THIN_LEN + removed.len());
        out.push(THIN_TAG);
        out.extend_from_slice(&self.encode()[1..]);
        out.extend_from_slice(&live.min(self.len).to_be_bytes());
        out.extend_from_slice(removed);
        out
    }

    /// A pointer, if `raw` is one, thinned or not (blocks stored inline
    /// start with their version byte, never 0xFF, 0xFE or 0xFD).
    pub(crate) fn decode(raw: &[u8]) -> Option<Ptr> {
        let thin = match *raw.first()? {
            PTR_TAG if raw.len() == PTR_LEN => false,
            THIN_TAG if raw.len() > THIN_LEN => true,
            _ => return None,
        };
        let len = u32::from_be_bytes(raw[13..17].try_into().ok()?);
        Some(Ptr {
            seg: u32::from_be_bytes(raw[1..5].try_into().ok()?),
            off: u64::from_be_bytes(raw[5..13].try_into().ok()?),
            len,
            live: if thin {
                u32::from_be_bytes(raw[17..21].try_into().ok()?).min(len)
            } else {
                len
            },
        })
    }

    /// The encoded list of sequences removed from the block(s), if `raw` is
    /// a thinned pointer.
    pub(crate) fn removed(raw: &[u8]) -> Option<&[u8]> {
        match *raw.first()? {
            THIN_TAG => (raw.len() > THIN_LEN).then(|| &raw[THIN_LEN..]),
            GROUP_TAG => {
                let end = GROUP_HEAD + usize::from(*raw.get(1)?) * EXTENT_LEN;
                (raw.len() > end).then(|| &raw[end..])
            }
            _ => None,
        }
    }

    /// The blocks a pointer `raw` names, in sequence order: one for a plain
    /// or thinned pointer. `None` if `raw` is no pointer (or a damaged one).
    pub(crate) fn extents(raw: &[u8]) -> Option<Vec<Extent>> {
        if *raw.first()? != GROUP_TAG {
            return Ptr::decode(raw).map(|ptr| vec![Extent { delta: 0, ptr }]);
        }
        let n = usize::from(*raw.get(1)?);
        if n == 0 || n > GROUP_MAX_EXTENTS {
            return None;
        }
        let body = raw.get(GROUP_HEAD..GROUP_HEAD + n * EXTENT_LEN)?;
        let mut out: Vec<Extent> = Vec::with_capacity(n);
        for e in body.chunks_exact(EXTENT_LEN) {
            let word = |at: usize| u32::from_be_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            let len = word(16);
            let extent = Extent {
                delta: word(0),
                ptr: Ptr {
                    seg: word(4),
                    off: u64::from_be_bytes(e[8..16].try_into().expect("8 bytes")),
                    len,
                    live: word(20).min(len),
                },
            };
            if out.last().is_some_and(|prev| prev.delta >= extent.delta) {
                return None;
            }
            out.push(extent);
        }
        Some(out)
    }

    /// The pointer value naming `extents` (ascending), with `removed` (an
    /// encoded list of removed sequences, or nothing): a plain or thinned
    /// pointer when it is one block under its own first sequence.
    pub(crate) fn encode_extents(extents: &[Extent], removed: &[u8]) -> Vec<u8> {
        if let [only] = extents {
            if only.delta == 0 {
                let p = only.ptr;
                return if removed.is_empty() {
                    Ptr::new(p.seg, p.off, p.len).encode().to_vec()
                } else {
                    p.thinned(p.live, removed)
                };
            }
        }
        let mut out = Vec::with_capacity(group_len(extents.len(), removed.len()));
        out.push(GROUP_TAG);
        out.push(u8::try_from(extents.len()).unwrap_or(u8::MAX));
        for e in extents {
            out.extend_from_slice(&e.delta.to_be_bytes());
            out.extend_from_slice(&e.ptr.seg.to_be_bytes());
            out.extend_from_slice(&e.ptr.off.to_be_bytes());
            out.extend_from_slice(&e.ptr.len.to_be_bytes());
            out.extend_from_slice(&e.ptr.live.min(e.ptr.len).to_be_bytes());
        }
        out.extend_from_slice(removed);
        out
    }
}

/// The length of the value [`Ptr::encode_extents`] makes.
fn encoded_extents_len(n: usize, first_delta: u32, removed: usize) -> usize {
    match (n, first_delta, removed) {
        (1, 0, 0) => PTR_LEN,
        (1, 0, r) => THIN_LEN + r,
        (n, _, r) => group_len(n, r),
    }
}

fn group_len(n: usize, removed: usize) -> usize {
    GROUP_HEAD + n * EXTENT_LEN + removed
}

/// One block a pointer names: its first sequence is the key's plus `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) delta: u32,
    pub(crate) ptr: Ptr,
}

struct Active {
    id: u32,
    file: Arc<File>,
    len: u64,
    allocated: u64,
}

/// A record appended and not yet applied to sled.
struct Pending {
    ticket: u64,
    ops: SledOps,
    seg: u32,
    end: u64,
}

struct Writer {
    active: Option<Active>,
    next_id: u32,
    next_ticket: u64,
    pending: VecDeque<Pending>,
}

#[derive(Default)]
struct Group {
    /// Every ticket up to this one is fsynced and applied.
    durable: u64,
    flushing: bool,
}

/// The message log of one data directory.
pub(crate) struct Log {
    dir: PathBuf,
    writer: Mutex<Writer>,
    group: Mutex<Group>,
    flushed: Condvar,
    /// Set when the log's state on disk is unknown (a failed fsync or a
    /// failed undo of a partial write): writes fail until a restart.
    broken: Mutex<Option<String>>,
    is_broken: AtomicBool,
    /// Open segment files. A deleted segment's stays open (its data
    /// readable) for [`RETIRED_GRACE`], for readers that found a pointer
    /// into it just before it was moved.
    files: RwLock<HashMap<u32, Arc<File>>>,
    /// Deleted segments whose files are still open, and when each went.
    retired: Mutex<Vec<(u32, std::time::Instant)>>,
    /// Every segment file with the pointers into it that sled holds.
    refs: Mutex<Segments>,
    /// Segments already given to compaction: a block it could not move
    /// (unreadable) must not make every pass scan again.
    compacted: Mutex<std::collections::HashSet<u32>>,
    /// The end of the last record applied to sled.
    applied: Mutex<(u32, u64)>,
    gc_due: AtomicBool,
    gc: Mutex<()>,
    /// Records replayed when the log was opened.
    #[cfg(test)]
    replayed: u64,
}

/// Knobs for tests that kill a child process at chosen points.
#[cfg(test)]
pub(crate) mod test_hooks {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    /// Never delete segments (so nothing flushes sled).
    pub(crate) static NO_GC: AtomicBool = AtomicBool::new(false);
    /// No background compaction (so the child writes only its workload).
    pub(crate) static NO_COMPACTION: AtomicBool = AtomicBool::new(false);
    /// Abort the process when this many more sled operations have been
    /// applied from the log (negative: never).
    pub(crate) static DIE_AFTER_APPLIED_OPS: AtomicI64 = AtomicI64::new(-1);

    pub(super) fn maybe_die_in_apply() {
        if DIE_AFTER_APPLIED_OPS.fetch_sub(1, Ordering::SeqCst) == 0 {
            std::process::abort();
        }
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Backend(format!("message log: {e}"))
}

pub(crate) fn decode_applied(raw: &[u8]) -> Option<(u32, u64)> {
    if raw.len() != 12 {
        return None;
    }
    Some((
        u32::from_be_bytes(raw[..4].try_into().ok()?),
        u64::from_be_bytes(raw[4..].try_into().ok()?),
    ))
}

fn encode_applied(seg: u32, end: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&seg.to_be_bytes());
    out[4..].copy_from_slice(&end.to_be_bytes());
    out
}

fn crc(seg: u32, off: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seg.to_be_bytes());
    h.update(&off.to_be_bytes());
    h.update(body);
    h.finalize()
}

/// Encodes `ops` as the record at `off` of segment `seg`; returns the record
/// and the sled operations it stands for.
///
/// An op is: key len u32, key, then 0 (remove), 1 and a value (put), or 2,
/// the expected value and the new one (swap); every value is len u32 +
/// bytes.
fn encode(seg: u32, off: u64, ops: Vec<(Vec<u8>, Op)>) -> Result<(Vec<u8>, SledOps)> {
    let mut ops_len = 4usize;
    let mut data_len = 0usize;
    for (key, op) in &ops {
        ops_len += 4 + key.len() + 1;
        ops_len += match op {
            Op::Remove => 0,
            Op::Put(v) => 4 + v.len(),
            Op::Block(b) => {
                data_len += b.len();
                4 + PTR_LEN
            }
            Op::Move { expected, block } => {
                data_len += block.len();
                4 + expected.len() + 4 + PTR_LEN
            }
            Op::Group { old, blocks } => {
                data_len += blocks.iter().map(|(_, b)| b.len()).sum::<usize>();
                let kept = old.as_deref().and_then(Ptr::extents).unwrap_or_default();
                let removed = old.as_deref().and_then(Ptr::removed).map_or(0, <[u8]>::len);
                let first = kept
                    .first()
                    .map(|e| e.delta)
                    .or(blocks.first().map(|b| b.0));
                4 + encoded_extents_len(kept.len() + blocks.len(), first.unwrap_or(0), removed)
            }
        };
    }
    let body_len = ops_len + data_len;
    let len = u32::try_from(body_len)
        .map_err(|_| StorageError::InvalidRequest("batch too large for one log record"))?;
    let mut out = Vec::with_capacity(HEADER + body_len);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    let mut sled_ops = SledOps::with_capacity(ops.len());
    let mut data_at = off + (HEADER + ops_len) as u64;
    let mut blocks = Vec::new();
    let value = |out: &mut Vec<u8>, v: &[u8]| {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    };
    for (key, op) in ops {
        value(&mut out, &key);
        let key = IVec::from(key);
        let mut place = |block: Vec<u8>| {
            let ptr = Ptr::new(seg, data_at, block.len() as u32);
            data_at += block.len() as u64;
            blocks.push(block);
            ptr
        };
        match op {
            Op::Remove => {
                out.push(0);
                sled_ops.push((key, SledOp::Remove));
            }
            Op::Put(v) => {
                out.push(1);
                value(&mut out, &v);
                sled_ops.push((key, SledOp::Put(v.into())));
            }
            Op::Block(b) => {
                let ptr = IVec::from(&place(b).encode()[..]);
                out.push(1);
                value(&mut out, &ptr);
                sled_ops.push((key, SledOp::Put(ptr)));
            }
            Op::Move { expected, block } => {
                let ptr = IVec::from(&place(block).encode()[..]);
                out.push(2);
                value(&mut out, &expected);
                value(&mut out, &ptr);
                sled_ops.push((key, SledOp::Swap { expected, new: ptr }));
            }
            Op::Group { old, blocks } => {
                let mut extents = old.as_deref().and_then(Ptr::extents).unwrap_or_default();
                for (delta, block) in blocks {
                    let ptr = place(block);
                    extents.push(Extent { delta, ptr });
                }
                let removed = old.as_deref().and_then(Ptr::removed).unwrap_or_default();
                let v = IVec::from(Ptr::encode_extents(&extents, removed));
                out.push(1);
                value(&mut out, &v);
                sled_ops.push((key, SledOp::Put(v)));
            }
        }
    }
    for b in blocks {
        out.extend_from_slice(&b);
    }
    let sum = crc(seg, off, &out[HEADER..]);
    out[4..8].copy_from_slice(&sum.to_le_bytes());
    Ok((out, sled_ops))
}

/// The record at `off` of `data` (segment `seg`) as sled operations, with
/// its end; `None` if it is not whole and sealed there.
fn decode(seg: u32, off: u64, data: &[u8]) -> Option<(SledOps, u64)> {
    let at = usize::try_from(off).ok()?;
    let head = data.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let body = data.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    if crc(seg, off, body) != sum {
        return None;
    }
    let mut r = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = (r.get(..n)?, r.get(n..)?);
        r = rest;
        Some(head)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
    let count = u32_at(take(4)?);
    let mut sled_ops = SledOps::new();
    for _ in 0..count {
        let klen = u32_at(take(4)?);
        let key = IVec::from(take(klen)?);
        let op = match take(1)?[0] {
            0 => SledOp::Remove,
            1 => {
                let vlen = u32_at(take(4)?);
                SledOp::Put(IVec::from(take(vlen)?))
            }
            2 => {
                let elen = u32_at(take(4)?);
                let expected = IVec::from(take(elen)?);
                let nlen = u32_at(take(4)?);
                SledOp::Swap {
                    expected,
                    new: IVec::from(take(nlen)?),
                }
            }
            _ => return None,
        };
        sled_ops.push((key, op));
    }
    Some((sled_ops, off + (HEADER + len) as u64))
}

fn segment_name(id: u32) -> String {
    format!("{id:010}.seg")
}

impl Log {
    /// Opens the log in `dir`/log, replays into `tree` every record after the
    /// applied position, and counts the pointers into each segment.
    /// `block_values` shows the visitor every block value stored in `tree`.
    pub(crate) fn open(
        dir: &Path,
        tree: &sled::Tree,
        block_values: impl Fn(&mut dyn FnMut(&[u8])) -> Result<()>,
    ) -> Result<Log> {
        let dir = dir.join("log");
        fs::create_dir_all(&dir).map_err(io)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u32>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut applied = match tree.get(APPLIED_KEY)? {
            Some(raw) => decode_applied(&raw).ok_or_else(|| {
                StorageError::Backend("the message log's applied position is damaged".into())
            })?,
            None => (0, 0),
        };
        let last = ids.last().copied();
        let mut replayed = 0u64;
        let from = applied.0;
        for &id in ids.iter().filter(|id| **id >= from) {
            let path = dir.join(segment_name(id));
            // What a dead process wrote may still be only in the page
            // cache: make it durable before sled is made to point at it.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            let data = fs::read(&path).map_err(io)?;
            let mut pos = if id == applied.0 { applied.1 } else { 0 };
            while pos < data.len() as u64 {
                let Some((ops, end)) = decode(id, pos, &data) else {
                    // Allocated space past the last record reads as zeros.
                    let rest = data.get(pos as usize..).unwrap_or_default();
                    if rest.iter().all(|b| *b == 0) {
                        if Some(id) == last {
                            file.set_len(pos).map_err(io)?;
                            file.sync_all().map_err(io)?;
                        }
                        break;
                    }
                    if Some(id) != last {
                        return Err(StorageError::Backend(format!(
                            "message log segment {id} is damaged at offset {pos}, \
                             and later segments hold acknowledged writes"
                        )));
                    }
                    tracing::warn!(
                        segment = id,
                        offset = pos,
                        "cutting an incomplete record off the message log"
                    );
                    file.set_len(pos).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    break;
                };
                apply(tree, ops, id, end, None)?;
                applied = (id, end);
                pos = end;
                replayed += 1;
            }
        }
        if replayed > 0 {
            tree.flush()?;
            tracing::info!(records = replayed, "replayed the message log");
        }
        let mut refs = Segments::new();
        for &id in &ids {
            let size = match fs::metadata(dir.join(segment_name(id))) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            refs.insert(
                id,
                Segment {
                    size,
                    ..Segment::default()
                },
            );
        }
        block_values(&mut |raw| {
            account(&mut refs, raw, true);
        })?;
        let log = Log {
            dir,
            writer: Mutex::new(Writer {
                active: None,
                next_id: last.unwrap_or(0).max(applied.0) + 1,
                next_ticket: 1,
                pending: VecDeque::new(),
            }),
            group: Mutex::new(Group::default()),
            flushed: Condvar::new(),
            broken: Mutex::new(None),
            is_broken: AtomicBool::new(false),
            files: RwLock::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            refs: Mutex::new(refs),
            compacted: Mutex::new(std::collections::HashSet::new()),
            applied: Mutex::new(applied),
            gc_due: AtomicBool::new(true),
            gc: Mutex::new(()),
            #[cfg(test)]
            replayed,
        };
        log.collect(tree)?;
        Ok(log)
    }

    fn check(&self) -> Result<()> {
        if self.is_broken.load(Ordering::Acquire) {
            let why = self.broken.lock().clone().unwrap_or_default();
            return Err(StorageError::Backend(format!(
                "the message log failed ({why}); restart the server to recover it"
            )));
        }
        Ok(())
    }

    fn break_with(&self, why: String) {
        tracing::error!(error = %why, "the message log failed; writes stop until a restart");
        *self.broken.lock() = Some(why);
        self.is_broken.store(true, Ordering::Release);
    }

    /// Starts a new segment; the old one is fsynced first, so a later
    /// segment never holds a record while an earlier one may lack one.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        if let Some(old) = &w.active {
            // Its pending records are covered by this fsync alone; after a
            // failed one the file's state is unknown.
            if let Err(e) = old
                .file
                .set_len(old.len)
                .and_then(|()| old.file.sync_data())
            {
                self.break_with(format!("closing segment {}: {e}", old.id));
                return Err(io(e));
            }
            if let Some(s) = self.refs.lock().get_mut(&old.id) {
                s.size = old.len;
            }
        }
        let id = w.next_id;
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        let file = Arc::new(file);
        self.files.write().insert(id, file.clone());
        self.refs.lock().insert(id, Segment::default());
        w.next_id = id + 1;
        if w.active.is_some() {
            self.gc_due.store(true, Ordering::Release);
        }
        w.active = Some(Active {
            id,
            file,
            len: 0,
            allocated: 0,
        });
        Ok(())
    }

    /// Appends a batch as one record; it is applied to sled by
    /// [`Log::sync_to`] with the returned ticket.
    pub(crate) fn append(&self, ops: Ops) -> Result<u64> {
        self.check()?;
        let mut w = self.writer.lock();
        if w.active.as_ref().is_none_or(|a| a.len >= SEGMENT_TARGET) {
            self.rotate(&mut w)?;
        }
        let Some(active) = w.active.as_mut() else {
            return Err(StorageError::Backend("message log has no segment".into()));
        };
        let (record, batch) = encode(active.id, active.len, ops.list)?;
        let needed = active.len + record.len() as u64;
        if needed > active.allocated {
            let to = needed.div_ceil(PREALLOCATE) * PREALLOCATE;
            let (from, len) = (active.allocated as i64, (to - active.allocated) as i64);
            nix::fcntl::posix_fallocate(&*active.file, from, len)
                .map_err(|e| io(std::io::Error::from(e)))?;
            active.allocated = to;
        }
        if let Err(e) = active.file.write_all_at(&record, active.len) {
            // Undo a partial write, so the next record does not follow junk.
            match active.file.set_len(active.len) {
                Ok(()) => active.allocated = active.len,
                Err(undo) => {
                    self.break_with(format!("write failed ({e}), then truncate failed ({undo})"))
                }
            }
            return Err(io(e));
        }
        active.len += record.len() as u64;
        let (seg, end) = (active.id, active.len);
        let ticket = w.next_ticket;
        w.next_ticket += 1;
        w.pending.push_back(Pending {
            ticket,
            ops: batch,
            seg,
            end,
        });
        Ok(ticket)
    }

    /// Returns once the record of `ticket` is fsynced and applied to
    /// `tree`. One fsync covers every record appended before it started.
    pub(crate) fn sync_to(&self, ticket: u64, tree: &sled::Tree) -> Result<()> {
        let mut g = self.group.lock();
        loop {
            if g.durable >= ticket {
                return Ok(());
            }
            self.check()?;
            if g.flushing {
                self.flushed.wait(&mut g);
                continue;
            }
            g.flushing = true;
            let done = MutexGuard::unlocked(&mut g, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.flush_and_apply(tree)
                }))
                .unwrap_or_else(|_| Err(StorageError::Backend("panic while flushing".into())))
            });
            g.flushing = false;
            match done {
                Ok(upto) => g.durable = g.durable.max(upto),
                Err(e) => self.break_with(e.to_string()),
            }
            self.flushed.notify_all();
        }
    }

    /// Fsyncs the active segment, then applies the pending records in log
    /// order; returns the last ticket applied.
    fn flush_and_apply(&self, tree: &sled::Tree) -> Result<u64> {
        let (file, pending) = {
            let mut w = self.writer.lock();
            let file = w.active.as_ref().map(|a| a.file.clone());
            (file, std::mem::take(&mut w.pending))
        };
        if let Some(file) = file {
            file.sync_data().map_err(io)?;
        }
        let mut upto = 0;
        for p in pending {
            if apply(tree, p.ops, p.seg, p.end, Some(&self.refs))? {
                self.gc_due.store(true, Ordering::Release);
            }
            *self.applied.lock() = (p.seg, p.end);
            upto = p.ticket;
        }
        Ok(upto)
    }

    /// Removes a block key from sled and counts the pointer it held, under
    /// the counts' lock (see [`apply`]).
    pub(crate) fn remove_block(&self, tree: &sled::Tree, key: &[u8]) -> Result<()> {
        let mut refs = self.refs.lock();
        if let Some(old) = tree.remove(key)? {
            if account(&mut refs, &old, false) {
                self.gc_due.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Drops pointers that sled no longer holds (their batch is applied).
    pub(crate) fn release(&self, values: &[IVec]) {
        if values.is_empty() {
            return;
        }
        let mut refs = self.refs.lock();
        for raw in values {
            if account(&mut refs, raw, false) {
                self.gc_due.store(true, Ordering::Release);
            }
        }
    }

    /// Deletes the segments that no pointer names and whose records are all
    /// applied, once a sled flush has made that durable.
    pub(crate) fn collect(&self, tree: &sled::Tree) -> Result<()> {
        #[cfg(test)]
        if test_hooks::NO_GC.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.close_retired();
        if !self.gc_due.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let _gc = self.gc.lock();
        let applied_seg = self.applied.lock().0;
        let active = self.writer.lock().active.as_ref().map(|a| a.id);
        let (mut dead, mut waiting) = (Vec::new(), false);
        for (id, seg) in self.refs.lock().iter() {
            if seg.pointers == 0 && Some(*id) != active {
                if *id < applied_seg {
                    dead.push(*id);
                } else {
                    waiting = true;
                }
            }
        }
        if waiting {
            // Unused, but its records are not all applied yet: next time.
            self.gc_due.store(true, Ordering::Release);
        }
        if dead.is_empty() {
            return Ok(());
        }
        tree.flush()?;
        let mut retired = self.retired.lock();
        for id in dead {
            match fs::remove_file(self.dir.join(segment_name(id))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.gc_due.store(true, Ordering::Release);
                    return Err(io(e));
                }
            }
            self.refs.lock().remove(&id);
            self.compacted.lock().remove(&id);
            retired.push((id, std::time::Instant::now()));
        }
        Ok(())
    }

    /// Closes the files of segments deleted at least [`RETIRED_GRACE`] ago:
    /// until then the file system cannot give their space back. Cheap when
    /// there are none; runs with every [`Log::collect`], which the
    /// compaction thread also calls twice a second.
    fn close_retired(&self) {
        let mut retired = self.retired.lock();
        if retired.is_empty() {
            return;
        }
        retired.retain(|&(id, at)| {
            let keep = at.elapsed() < RETIRED_GRACE;
            if !keep {
                self.files.write().remove(&id);
            }
            keep
        });
    }

    /// How many deleted segments still have their files open (for tests).
    #[cfg(test)]
    pub(crate) fn retired_open(&self) -> usize {
        self.retired.lock().len()
    }

    /// Closed, applied segments that moving their live blocks would at
    /// least halve, not given to compaction before: the ones to compact
    /// now. Cheap: no I/O. A moved block costs its bytes plus its move op,
    /// so what compaction writes does not qualify again, except a segment
    /// of moves that logged long lists of removed messages (their expected
    /// values), once: its new pointers carry no list.
    pub(crate) fn sparse_segments(&self) -> Vec<u32> {
        let applied_seg = self.applied.lock().0;
        let mut compacted = self.compacted.lock();
        let sparse: Vec<u32> = self
            .refs
            .lock()
            .iter()
            .filter(|(id, s)| {
                let moved = s.live + MOVE_OVERHEAD * s.pointers + s.listed;
                **id < applied_seg
                    && !compacted.contains(*id)
                    && s.size > 0
                    && s.pointers > 0
                    && (moved as f64) < s.size as f64 * COMPACT_BELOW_LIVE_SHARE
            })
            .map(|(id, _)| *id)
            .collect();
        compacted.extend(&sparse);
        sparse
    }

    /// Gives segments back to a later compaction (this one failed).
    pub(crate) fn unmark_compacted(&self, ids: &[u32]) {
        let mut compacted = self.compacted.lock();
        for id in ids {
            compacted.remove(id);
        }
    }

    /// Bytes the segment files take (allocated space included).
    pub(crate) fn size_on_disk(&self) -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            match entry.and_then(|e| e.metadata()) {
                Ok(m) => total += m.len(),
                // Deleted meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(total)
    }

    /// The block a pointer names; `None` if the log does not hold it.
    pub(crate) fn read(&self, ptr: Ptr) -> Result<Option<Bytes>> {
        let file = self.files.read().get(&ptr.seg).cloned();
        let file = match file {
            Some(f) => f,
            None => {
                let path = self.dir.join(segment_name(ptr.seg));
                match File::open(&path) {
                    Ok(f) => {
                        let f = Arc::new(f);
                        // Kept open only while the segment is in use.
                        if self.refs.lock().contains_key(&ptr.seg) {
                            self.files.write().entry(ptr.seg).or_insert(f).clone()
                        } else {
                            f
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(e)),
                }
            }
        };
        // A damaged pointer must not make us allocate gigabytes; one past
        // the end of the file reads short (below).
        if ptr.len > MAX_BLOCK_LEN {
            return Ok(None);
        }
        let mut buf = vec![0u8; ptr.len as usize];
        match file.read_exact_at(&mut buf, ptr.off) {
            Ok(()) => Ok(Some(Bytes::from(buf))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Records replayed when the log was opened (for tests).
    #[cfg(test)]
    pub(crate) fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Segment ids with their pointer counts and live bytes (for tests).
    #[cfg(test)]
    pub(crate) fn refs(&self) -> BTreeMap<u32, (u64, u64)> {
        self.refs
            .lock()
            .iter()
            .map(|(id, s)| (*id, (s.pointers, s.live)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: usize) -> Ops {
        let mut o = Ops::default();
        o.insert(b"k".to_vec(), b"v".to_vec());
        for i in 0..n {
            o.block(vec![3, i as u8], vec![1; 10 + i]);
        }
        o.remove(b"gone".to_vec());
        o
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        let (rec, sled_ops) = encode(7, 100, ops(3).list).unwrap();
        assert_eq!(sled_ops.len(), 5);
        let mut seg = vec![0u8; 100];
        seg.extend_from_slice(&rec);
        let (_, end) = decode(7, 100, &seg).unwrap();
        assert_eq!(end, seg.len() as u64);
        // Another segment or offset does not validate; nor a torn or
        // flipped record.
        assert!(decode(8, 100, &seg).is_none());
        assert!(decode(7, 100, &seg[..seg.len() - 1]).is_none());
        let last = seg.len() - 1;
        seg[last] ^= 1;
        assert!(decode(7, 100, &seg).is_none());
    }

    #[test]
    fn pointers_are_not_blocks() {
        let p = Ptr::new(1, 2, 3000);
        assert_eq!(Ptr::decode(&p.encode()), Some(p));
        assert_eq!(Ptr::decode(&[1; PTR_LEN]), None);
        assert_eq!(Ptr::decode(&p.encode()[..16]), None);
        assert_eq!(Ptr::removed(&p.encode()), None);
        let thin = p.thinned(1000, b"list");
        let live = Ptr { live: 1000, ..p };
        assert_eq!(Ptr::decode(&thin), Some(live));
        assert_eq!(Ptr::removed(&thin), Some(&b"list"[..]));
        // Never more live than the block holds; a list is required.
        assert_eq!(Ptr::decode(&p.thinned(5000, b"x")), Some(p));
        assert_eq!(Ptr::decode(&thin[..THIN_LEN]), None);
    }
}
