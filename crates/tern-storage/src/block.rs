//! Message blocks and subject lists: how the file store packs many messages
//! into one sled value.
//!
//! A sled insert costs the same few microseconds whether it carries 40 bytes
//! or 4 KiB, and every key costs sled memory for as long as it exists. So the
//! messages a batch appends are written as blocks of consecutive sequences,
//! and the subject index holds one list per (subject, batch) instead of one
//! key per message.
//!
//! A block, stored under its *base* (the first sequence it was written with):
//!
//! ```text
//! version u8                 (BLOCK_VERSION)
//! count u32 LE
//! count × { delta u32 LE, end u32 LE }   seq = base + delta, ascending;
//!                                         record = data[prev end .. end]
//! crc32 u32 LE               over base (u64 BE) ++ everything above
//! data                       the message records (see codec), each sealed
//!                            with its own sequence
//! ```
//!
//! The header is checked once when a block is read; each record keeps its
//! own checksum, so one damaged record spoils only itself. Removing messages
//! from a block stored inline rewrites it without them (its base stays); a
//! block in the message log stays where it is, and its pointer lists the
//! sequences removed from it (see `log`). A block left empty is removed.
//!
//! A subject list holds the sequences of one subject that one batch wrote
//! (or, in a restore, one chunk), stored under (subject, its first
//! sequence, the list's *base*). A subject's lists never overlap.
//!
//! ```text
//! count varint, count × delta varint (seq - previous seq, the first from base)
//! crc32 u32 LE               over base ++ everything above
//! ```

use bytes::Bytes;

use crate::codec::{self, Reader, Writer};

const BLOCK_VERSION: u8 = 1;
const HEADER_FIXED: usize = 1 + 4;
const ENTRY: usize = 8;

/// Data bytes after which a block stored inline in sled is closed: with
/// sled's default 512 KiB segments, a leaf of 16 such values stays under
/// its 128 KiB blob limit.
pub(crate) const BLOCK_DATA_TARGET: usize = 8 << 10;
/// Data bytes after which a block written to the message log is closed.
/// Each block costs 24 bytes of a pointer that is rewritten with each batch
/// a pointer names (at most 16, see `log`), and, before pointers named
/// several, a sled key whose insert cost sled about as much CPU as its
/// 1 KiB messages cost all else. Removing messages does not rewrite a
/// logged block, so its size costs nothing there.
pub(crate) const LOGGED_BLOCK_DATA_TARGET: usize = 32 << 10;
/// Most messages in one block.
pub(crate) const BLOCK_MAX_MSGS: usize = 1024;

/// Builds one block from records in ascending sequence order.
pub(crate) struct BlockBuilder {
    base: u64,
    entries: Vec<(u32, u32)>,
    data: Vec<u8>,
    /// Data bytes after which the block is full.
    target: usize,
}

impl BlockBuilder {
    /// A block to be stored inline.
    pub(crate) fn new(base: u64) -> Self {
        Self::with_target(base, BLOCK_DATA_TARGET)
    }

    /// A block closed once its data reaches `target` bytes.
    pub(crate) fn with_target(base: u64, target: usize) -> Self {
        BlockBuilder {
            base,
            entries: Vec::new(),
            data: Vec::new(),
            target,
        }
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest sequence added (the base while it is empty).
    pub(crate) fn last_seq(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.base, |(delta, _)| self.base + u64::from(*delta))
    }

    /// Whether a record of `len` bytes at `seq` may still join this block.
    pub(crate) fn fits(&self, seq: u64, len: usize) -> bool {
        if self.entries.is_empty() {
            return seq >= self.base && seq - self.base <= u64::from(u32::MAX);
        }
        let last = self.base + u64::from(self.entries[self.entries.len() - 1].0);
        seq > last
            && seq - self.base <= u64::from(u32::MAX)
            && self.entries.len() < BLOCK_MAX_MSGS
            && self.data.len() + len <= self.target
            && self.data.len() + len <= u32::MAX as usize
    }

    /// Adds a record; the caller checked [`BlockBuilder::fits`] (or the
    /// block is empty and the record is alone however big).
    pub(crate) fn push(&mut self, seq: u64, record: &[u8]) {
        self.push_with(seq, |data| data.extend_from_slice(record));
    }

    /// Adds the record that `write` appends to the block's data.
    pub(crate) fn push_with(&mut self, seq: u64, write: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(seq >= self.base);
        write(&mut self.data);
        self.entries
            .push(((seq - self.base) as u32, self.data.len() as u32));
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let header_len = HEADER_FIXED + self.entries.len() * ENTRY;
        let mut w = Writer::with_capacity(header_len + 4 + self.data.len());
        w.u8(BLOCK_VERSION);
        w.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (delta, end) in &self.entries {
            w.buf.extend_from_slice(&delta.to_le_bytes());
            w.buf.extend_from_slice(&end.to_le_bytes());
        }
        let mut out = w.seal(self.base);
        out.extend_from_slice(&self.data);
        out
    }
}

/// A block read from disk whose header checked out: its entries, or only
/// those not removed from it.
#[derive(Clone)]
pub(crate) struct Block {
    base: u64,
    raw: Bytes,
    /// Entries seen (all, or the live ones).
    count: usize,
    data_at: usize,
    /// The positions of the live entries among all, when some are removed.
    live: Option<std::sync::Arc<[u16]>>,
    /// The base of the key whose pointer names this block among others,
    /// and that pointer, when this is only one of them (read alone: a point
    /// read, or a step of a walk).
    part_of: Option<(u64, sled::IVec)>,
}

impl Block {
    /// Checks the header of the block stored under `base`; `None` if it is
    /// damaged.
    pub(crate) fn parse(base: u64, raw: Bytes) -> Option<Block> {
        if *raw.first()? != BLOCK_VERSION {
            return None;
        }
        let count = u32::from_le_bytes(raw.get(1..5)?.try_into().ok()?) as usize;
        let header_len = HEADER_FIXED.checked_add(count.checked_mul(ENTRY)?)?;
        let data_at = header_len.checked_add(4)?;
        codec::unseal(raw.get(..data_at)?, base)?;
        let block = Block {
            base,
            raw,
            count,
            data_at,
            live: None,
            part_of: None,
        };
        // Deltas ascend and record ends stay inside the data.
        let data_len = block.raw.len() - data_at;
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..count {
            let (delta, end) = block.slot(i);
            if end as usize > data_len || prev.is_some_and(|(d, e)| delta <= d || end < e) {
                return None;
            }
            prev = Some((delta, end));
        }
        Some(block)
    }

    /// The block without the entries whose sequences `removed` lists
    /// (ascending); `None` if one of them is not in it.
    pub(crate) fn thinned(self, removed: &[u64]) -> Option<Block> {
        if removed.is_empty() {
            return Some(self);
        }
        let mut live = Vec::with_capacity(self.count.saturating_sub(removed.len()));
        let mut gone = removed.iter().peekable();
        for i in 0..self.count {
            let p = self.position(i);
            let seq = self.base + u64::from(self.slot(p).0);
            if gone.peek() == Some(&&seq) {
                gone.next();
            } else {
                live.push(u16::try_from(p).ok()?);
            }
        }
        if gone.next().is_some() {
            return None;
        }
        Some(Block {
            count: live.len(),
            live: Some(live.into()),
            ..self
        })
    }

    /// The blocks `parts` (ascending, none overlapping) as one, under
    /// `base`; `None` if they are out of order. Removed entries of the
    /// parts are left out.
    pub(crate) fn merge(base: u64, parts: &[Block]) -> Option<Block> {
        let mut b = BlockBuilder::with_target(base, usize::MAX);
        for part in parts {
            for i in 0..part.len() {
                let seq = part.seq(i);
                if seq < base || (!b.is_empty() && seq <= b.last_seq()) {
                    return None;
                }
                b.push(seq, &part.record(i));
            }
        }
        Block::parse(base, Bytes::from(b.finish()))
    }

    /// This block as one of those the pointer `raw` under `key` names.
    pub(crate) fn part_of(self, key: u64, raw: sled::IVec) -> Block {
        Block {
            part_of: Some((key, raw)),
            ..self
        }
    }

    /// The pointer this block was read from, if it is one of several the
    /// pointer names.
    pub(crate) fn pointer(&self) -> Option<&sled::IVec> {
        self.part_of.as_ref().map(|(_, raw)| raw)
    }

    /// Whether this is only one of the blocks its key names.
    pub(crate) fn is_part(&self) -> bool {
        self.part_of.is_some()
    }

    /// The base of the key this block is stored under.
    pub(crate) fn key_base(&self) -> u64 {
        self.part_of.as_ref().map_or(self.base, |(key, _)| *key)
    }

    /// Bytes that the live entries with sequences in `lo..hi` would take
    /// as a block of their own (0 if there are none).
    pub(crate) fn live_bytes_between(&self, lo: u64, hi: u64) -> usize {
        let (from, to) = (self.lower_bound(lo), self.lower_bound(hi));
        if from >= to {
            return 0;
        }
        (from..to)
            .map(|i| self.record(i).len() + ENTRY)
            .sum::<usize>()
            + self.data_at
            - self.stored_len() * ENTRY
    }

    /// Entries the block holds, removed ones included.
    pub(crate) fn stored_len(&self) -> usize {
        u32::from_le_bytes(self.raw[1..5].try_into().expect("4 bytes")) as usize
    }

    /// Bytes of the block that its live entries take (their records and
    /// header entries).
    #[cfg(test)]
    pub(crate) fn live_bytes(&self) -> usize {
        (0..self.count)
            .map(|i| self.record(i).len() + ENTRY)
            .sum::<usize>()
            + self.data_at
            - self.stored_len() * ENTRY
    }

    /// Where the `i`th entry seen is among all.
    fn position(&self, i: usize) -> usize {
        match &self.live {
            Some(live) => usize::from(live[i]),
            None => i,
        }
    }

    fn entry(&self, i: usize) -> (u32, u32) {
        self.slot(self.position(i))
    }

    /// The header entry at position `p` among all.
    fn slot(&self, p: usize) -> (u32, u32) {
        let at = HEADER_FIXED + p * ENTRY;
        let word =
            |at: usize| u32::from_le_bytes(self.raw[at..at + 4].try_into().expect("4 bytes"));
        (word(at), word(at + 4))
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn seq(&self, i: usize) -> u64 {
        self.base + u64::from(self.entry(i).0)
    }

    /// The highest sequence in the block (`None` if it is empty).
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.count.checked_sub(1).map(|i| self.seq(i))
    }

    /// The record of entry `i`, sharing the block's buffer.
    pub(crate) fn record(&self, i: usize) -> Bytes {
        let p = self.position(i);
        let start = if p == 0 {
            0
        } else {
            self.slot(p - 1).1 as usize
        };
        let end = self.slot(p).1 as usize;
        self.raw.slice(self.data_at + start..self.data_at + end)
    }

    /// The index of the first entry with a sequence `>= seq`.
    pub(crate) fn lower_bound(&self, seq: u64) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.seq(mid) < seq {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The index of the entry holding `seq`.
    pub(crate) fn find(&self, seq: u64) -> Option<usize> {
        let i = self.lower_bound(seq);
        (i < self.count && self.seq(i) == seq).then_some(i)
    }

    /// The block without the entries `drop` selects, under the same base;
    /// `None` if nothing is left.
    pub(crate) fn without(&self, mut drop: impl FnMut(u64) -> bool) -> Option<Vec<u8>> {
        let mut b = BlockBuilder::new(self.base);
        for i in 0..self.count {
            let seq = self.seq(i);
            if !drop(seq) {
                b.push(seq, &self.record(i));
            }
        }
        (!b.is_empty()).then(|| b.finish())
    }
}

impl Block {
    /// Like [`Block::without`], in blocks of up to `target` data bytes (a
    /// record alone may pass it): the first under this block's base, the
    /// others under their first sequence.
    pub(crate) fn split_without(
        &self,
        mut drop: impl FnMut(u64) -> bool,
        target: usize,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = BlockBuilder::with_target(self.base, target);
        for i in 0..self.count {
            let seq = self.seq(i);
            if drop(seq) {
                continue;
            }
            let record = self.record(i);
            if !b.is_empty() && !b.fits(seq, record.len()) {
                let full = std::mem::replace(&mut b, BlockBuilder::with_target(seq, target));
                out.push((full.base(), full.finish()));
            }
            b.push(seq, &record);
        }
        if !b.is_empty() {
            out.push((b.base(), b.finish()));
        }
        out
    }
}

/// Encodes the sequences (ascending, none below `base`) of one subject.
pub(crate) fn encode_list(base: u64, seqs: &[u64]) -> Vec<u8> {
    let mut w = Writer::with_capacity(2 + seqs.len() * 2 + 4);
    w.var(seqs.len() as u64);
    let mut prev = base;
    for &seq in seqs {
        w.var(seq - prev);
        prev = seq;
    }
    w.seal(base)
}

/// Decodes a subject list stored under `base`; `None` if it is damaged.
pub(crate) fn decode_list(base: u64, raw: &[u8]) -> Option<Vec<u64>> {
    let body = codec::unseal(raw, base)?;
    let mut r = Reader::new(body);
    let count = usize::try_from(r.var()?).ok()?;
    // Each delta takes at least one byte: a count past that is damage.
    if count > body.len() {
        return None;
    }
    let mut seqs = Vec::with_capacity(count);
    let mut prev = base;
    for i in 0..count {
        let delta = r.var()?;
        if i > 0 && delta == 0 {
            return None;
        }
        prev = prev.checked_add(delta)?;
        seqs.push(prev);
    }
    r.is_empty().then_some(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(base: u64, seqs: &[u64]) -> Block {
        let mut b = BlockBuilder::new(base);
        for &s in seqs {
            b.push(s, format!("rec{s}").as_bytes());
        }
        Block::parse(base, Bytes::from(b.finish())).expect("valid block")
    }

    #[test]
    fn block_round_trip_and_lookup() {
        let b = build(10, &[10, 11, 13, 20]);
        assert_eq!(b.len(), 4);
        assert_eq!(b.last_seq(), Some(20));
        assert_eq!(&b.record(2)[..], b"rec13");
        assert_eq!(b.find(13), Some(2));
        assert_eq!(b.find(12), None);
        assert_eq!(b.lower_bound(12), 2);
        assert_eq!(b.lower_bound(21), 4);
        assert_eq!(b.lower_bound(0), 0);
        let rest = b.without(|s| s == 11 || s == 20).expect("entries left");
        let rest = Block::parse(10, Bytes::from(rest)).expect("valid");
        assert_eq!(
            (0..rest.len()).map(|i| rest.seq(i)).collect::<Vec<_>>(),
            vec![10, 13]
        );
        assert_eq!(&rest.record(1)[..], b"rec13");
        assert!(b.without(|_| true).is_none());
        // Split: the first block keeps the base, the others start at their
        // first sequence; each holds what fits.
        let parts = b.split_without(|s| s == 11, 10);
        let bases: Vec<u64> = parts.iter().map(|p| p.0).collect();
        assert_eq!(bases, vec![10, 20]);
        let first = Block::parse(10, Bytes::from(parts[0].1.clone())).unwrap();
        assert_eq!((first.len(), first.seq(0), first.seq(1)), (2, 10, 13));
        let second = Block::parse(20, Bytes::from(parts[1].1.clone())).unwrap();
        assert_eq!((second.len(), &second.record(0)[..]), (1, &b"rec20"[..]));
        assert!(b.split_without(|_| true, 10).is_empty());
    }

    #[test]
    fn a_thinned_block_shows_only_its_live_entries() {
        let b = build(10, &[10, 11, 13, 20, 21]);
        assert_eq!(b.stored_len(), 5);
        let whole = b.live_bytes();
        let thin = b
            .clone()
            .thinned(&[10, 13, 21])
            .expect("all listed are in it");
        assert_eq!(thin.len(), 2);
        assert_eq!(thin.stored_len(), 5);
        assert_eq!((thin.seq(0), thin.seq(1)), (11, 20));
        assert_eq!(thin.last_seq(), Some(20));
        assert_eq!(
            (&thin.record(0)[..], &thin.record(1)[..]),
            (&b"rec11"[..], &b"rec20"[..])
        );
        assert_eq!(
            (thin.find(11), thin.find(13), thin.find(20)),
            (Some(0), None, Some(1))
        );
        assert_eq!((thin.lower_bound(12), thin.lower_bound(21)), (1, 2));
        // What it would take rewritten: exactly the block `without` makes.
        let rest = thin.without(|_| false).expect("entries left");
        assert_eq!(thin.live_bytes(), rest.len());
        assert_eq!(whole, b.without(|_| false).unwrap().len());
        // Thinning again, and a list naming what the block lacks.
        let thinner = thin.clone().thinned(&[11]).unwrap();
        assert_eq!((thinner.len(), thinner.seq(0)), (1, 20));
        assert!(thin.clone().thinned(&[13]).is_none());
        assert!(b.clone().thinned(&[12]).is_none());
        assert_eq!(b.clone().thinned(&[]).map(|b| b.len()), Some(5));
    }

    #[test]
    fn damaged_or_misplaced_headers_are_refused() {
        let mut b = BlockBuilder::new(5);
        b.push(5, b"abc");
        b.push(6, b"def");
        let raw = b.finish();
        assert!(Block::parse(5, Bytes::from(raw.clone())).is_some());
        // Under another base the checksum fails.
        assert!(Block::parse(6, Bytes::from(raw.clone())).is_none());
        for at in 0..HEADER_FIXED + 2 * ENTRY + 4 {
            let mut bad = raw.clone();
            bad[at] ^= 0x10;
            assert!(Block::parse(5, Bytes::from(bad)).is_none(), "byte {at}");
        }
        // Truncated data: the last record's end points past it.
        assert!(Block::parse(5, Bytes::from(raw[..raw.len() - 1].to_vec())).is_none());
        assert!(Block::parse(5, Bytes::new()).is_none());
    }

    #[test]
    fn builder_limits_blocks() {
        let mut b = BlockBuilder::new(1);
        assert!(b.fits(1, BLOCK_DATA_TARGET * 4)); // alone, any size
        b.push(1, &[0; 100]);
        assert!(!b.fits(1, 1)); // not ascending
        assert!(!b.fits(2, BLOCK_DATA_TARGET));
        assert!(b.fits(2, 100));
        assert!(!b.fits(1 + (1 << 32), 1)); // delta past u32
    }

    #[test]
    fn lists_round_trip_and_detect_damage() {
        let raw = encode_list(100, &[100, 101, 400]);
        assert_eq!(decode_list(100, &raw), Some(vec![100, 101, 400]));
        assert_eq!(decode_list(99, &raw), None);
        let mut bad = raw.clone();
        bad[1] ^= 1;
        assert_eq!(decode_list(100, &bad), None);
        assert_eq!(decode_list(7, &[]), None);
        assert_eq!(decode_list(7, &encode_list(7, &[])), Some(vec![]));
    }
}
