//! Stream semantics written once, over a backend: what each [`StreamOp`]
//! does to sequences, counters and limits, and how reads pick messages.
//!
//! Both stores run this code, so they cannot drift apart; they differ only
//! in the [`View`]/[`Backend`] primitives (a `BTreeMap` or three sled trees).
//!
//! Invariants kept here:
//! - `first_seq` is the lowest stored sequence, or `last_seq + 1` when the
//!   stream is empty; anything below `first_seq` is dead even if a backend
//!   still has it (sled removes it lazily after a purge);
//! - `last_seq` only grows (a purge up to a sequence beyond it moves it to
//!   that sequence minus one, as nats-server does);
//! - `subjects` holds one count per stored subject: memory is O(subjects),
//!   never O(messages).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use bytes::Bytes;
use tern_protocol::subject;

use crate::codec::Counters;
use crate::error::StorageError;
use crate::types::{
    stored_size, Append, ConsumerState, DiscardPolicy, OpResult, PurgeRequest, StoredMessage,
    StreamLimits, StreamOp, StreamState,
};

type Result<T> = std::result::Result<T, StorageError>;

/// Linear scans for a wildcard filter give up after this many records and
/// switch to the per-subject index when few subjects match.
const LINEAR_SCAN_PROBE: usize = 256;
/// Most matching subjects for which the per-subject index is used.
const INDEX_FANOUT: usize = 1024;

/// Called per stored sequence with its subject, if readable; `Break` stops.
pub(crate) type ScanVisitor<'a> = dyn FnMut(u64, Option<&[u8]>) -> ControlFlow<()> + 'a;

/// What a backend removed.
pub(crate) struct Removed {
    /// Its subject, when known (a corrupt record's may not be).
    pub(crate) subject: Option<Bytes>,
    /// Its [`StoredMessage::stored_size`] (an estimate for a corrupt record).
    pub(crate) size: u64,
}

/// Reads of physically stored messages; the core applies the `first_seq`
/// fence on top.
pub(crate) trait View {
    /// The message at `seq`, `None` if absent.
    fn load(&self, seq: u64) -> Result<Option<StoredMessage>>;
    /// The smallest stored sequence `>= from`.
    fn next_seq(&self, from: u64) -> Result<Option<u64>>;
    /// The largest stored sequence `< before`.
    fn prev_seq(&self, before: u64) -> Result<Option<u64>>;
    /// Visits stored sequences `>= from` in order, each with its subject as
    /// far as it can be read without verifying the record (`None` if not).
    fn scan(&self, from: u64, visit: &mut ScanVisitor<'_>) -> Result<()>;
    /// Visits the stored sequences of one literal subject `>= from`, in order.
    fn scan_subject(
        &self,
        subject: &[u8],
        from: u64,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) -> Result<()>;
    /// The highest stored sequence of one literal subject.
    fn subject_last(&self, subject: &[u8]) -> Result<Option<u64>>;
}

/// Mutations. A backend may buffer them until its store commits the batch,
/// but its [`View`] must already show them.
pub(crate) trait Backend: View {
    fn insert(&mut self, msg: StoredMessage) -> Result<()>;
    fn remove(&mut self, seq: u64, erase: bool) -> Result<Option<Removed>>;
    /// Every message below `fence` is gone; free it now or later.
    fn drop_below(&mut self, fence: u64) -> Result<()>;
    fn put_limits(&mut self, limits: &StreamLimits);
    fn put_config(&mut self, config: &Bytes);
    fn put_consumer_config(&mut self, name: &str, config: &Bytes);
    fn put_consumer_state(&mut self, name: &str, state: &ConsumerState);
    fn delete_consumer(&mut self, name: &str);
}

/// The in-memory figures of one stream.
#[derive(Debug, Clone)]
pub(crate) struct StreamCore {
    pub(crate) name: String,
    pub(crate) limits: StreamLimits,
    pub(crate) c: Counters,
    pub(crate) subjects: HashMap<Bytes, u64>,
    pub(crate) consumers: BTreeSet<String>,
}

/// A limit of 0 means unlimited, as in nats-server.
fn limit(v: Option<u64>) -> Option<u64> {
    v.filter(|v| *v > 0)
}

/// A filter that selects every message.
fn is_all(filter: &[u8]) -> bool {
    filter.is_empty() || filter == b">"
}

fn check_filter(filter: &[u8]) -> Result<()> {
    if is_all(filter) || subject::is_valid_subscription_subject(filter) {
        Ok(())
    } else {
        Err(StorageError::InvalidSubject)
    }
}

pub(crate) fn valid_subject(subject: &[u8]) -> bool {
    // NUL separates subject and sequence in the sled subject index.
    subject::is_valid_publish_subject(subject) && !subject.contains(&0)
}

impl StreamCore {
    pub(crate) fn new(name: String, limits: StreamLimits) -> Self {
        StreamCore {
            name,
            limits,
            c: Counters::default(),
            subjects: HashMap::new(),
            consumers: BTreeSet::new(),
        }
    }

    pub(crate) fn corrupt(&self, seq: u64) -> StorageError {
        StorageError::Corrupt {
            stream: self.name.clone(),
            seq,
        }
    }

    // ----- mutations -------------------------------------------------------

    /// Applies one operation. On a non-backend error nothing was changed,
    /// except by an expiry, which keeps what it removed before the error.
    pub(crate) fn apply<B: Backend>(&mut self, b: &mut B, op: StreamOp) -> Result<OpResult> {
        match op {
            StreamOp::Append(a) => self.append(b, a),
            StreamOp::Delete { seq, erase } => {
                if seq < self.c.first_seq || seq > self.c.last_seq {
                    return Err(StorageError::NotFound);
                }
                if self.remove(b, seq, erase)? {
                    Ok(OpResult::Deleted { seq })
                } else {
                    Err(StorageError::NotFound)
                }
            }
            StreamOp::Purge(req) => self.purge(b, req).map(|purged| OpResult::Purged { purged }),
            StreamOp::ExpireBefore { timestamp_ns } => self
                .expire(b, timestamp_ns)
                .map(|removed| OpResult::Expired { removed }),
            StreamOp::UpdateLimits(limits) => self
                .update_limits(b, limits)
                .map(|removed| OpResult::LimitsUpdated { removed }),
            StreamOp::SaveStreamConfig(config) => {
                b.put_config(&config);
                Ok(OpResult::Saved)
            }
            StreamOp::SaveConsumerConfig { name, config } => {
                check_consumer_name(&name)?;
                b.put_consumer_config(&name, &config);
                self.consumers.insert(name);
                Ok(OpResult::Saved)
            }
            StreamOp::SaveConsumerState { name, state } => {
                check_consumer_name(&name)?;
                b.put_consumer_state(&name, &state);
                self.consumers.insert(name);
                Ok(OpResult::Saved)
            }
            StreamOp::DeleteConsumer { name } => {
                let existed = self.consumers.remove(&name);
                if existed {
                    b.delete_consumer(&name);
                }
                Ok(OpResult::ConsumerDeleted { existed })
            }
        }
    }

    fn append<B: Backend>(&mut self, b: &mut B, a: Append) -> Result<OpResult> {
        if !valid_subject(&a.subject) {
            return Err(StorageError::InvalidSubject);
        }
        if let Some(expected) = a.expected_last_seq {
            if expected != self.c.last_seq {
                return Err(StorageError::WrongLastSequence {
                    current: self.c.last_seq,
                });
            }
        }
        if let Some(expected) = a.expected_last_subject_seq {
            let current = self.subject_last_seq(b, &a.subject)?.unwrap_or(0);
            if expected != current {
                return Err(StorageError::WrongLastSubjectSequence { current });
            }
        }
        let body = a.headers.as_ref().map_or(0, Bytes::len) + a.payload.len();
        if limit(self.limits.max_msg_size).is_some_and(|max| body as u64 > max) {
            return Err(StorageError::MaxMessageSizeExceeded);
        }
        let size = stored_size(&a.subject, a.headers.as_deref(), &a.payload);
        let per_subject = limit(self.limits.max_msgs_per_subject);
        let subject_count = self.subjects.get(&a.subject).copied().unwrap_or(0);
        let subject_full = per_subject.is_some_and(|max| subject_count >= max);

        if self.limits.discard == DiscardPolicy::New {
            if subject_full && self.limits.discard_new_per_subject {
                return Err(StorageError::MaximumMessagesPerSubjectExceeded);
            }
            // At the per-subject limit the subject's oldest message makes
            // room, so the totals only grow by the difference.
            let (freed_msgs, freed_bytes) = if subject_full {
                match self.first_of_subject(b, &a.subject)? {
                    Some(seq) => (1, b.load(seq).ok().flatten().map_or(0, |m| m.stored_size())),
                    None => (0, 0),
                }
            } else {
                (0, 0)
            };
            if limit(self.limits.max_msgs).is_some_and(|max| self.c.msgs + 1 - freed_msgs > max) {
                return Err(StorageError::MaximumMessagesExceeded);
            }
            if limit(self.limits.max_bytes)
                .is_some_and(|max| (self.c.bytes + size).saturating_sub(freed_bytes) > max)
            {
                return Err(StorageError::MaximumBytesExceeded);
            }
        }

        let seq = self.c.last_seq + 1;
        let timestamp_ns = a.timestamp_ns;
        let subject = a.subject;
        match self.subjects.get_mut(&subject) {
            Some(n) => *n += 1,
            // A copy, so the map never pins a caller's larger buffer.
            None => {
                self.subjects.insert(Bytes::copy_from_slice(&subject), 1);
            }
        }
        b.insert(StoredMessage {
            seq,
            subject: subject.clone(),
            headers: a.headers,
            payload: a.payload,
            timestamp_ns,
        })?;
        debug_assert!(self.c.msgs > 0 || self.c.first_seq == seq);
        if self.c.msgs == 0 {
            self.c.first_seq = seq;
        }
        self.c.msgs += 1;
        self.c.bytes += size;
        self.c.last_seq = seq;
        self.c.last_ts = timestamp_ns;

        if let Some(max) = per_subject {
            while self.subjects.get(&subject).is_some_and(|n| *n > max) {
                let Some(oldest) = self.first_of_subject(b, &subject)? else {
                    break;
                };
                if !self.remove(b, oldest, false)? {
                    debug_assert!(false, "indexed message {oldest} missing");
                    break;
                }
            }
        }
        if self.limits.discard == DiscardPolicy::Old {
            self.enforce_totals(b)?;
        }
        Ok(OpResult::Appended { seq, timestamp_ns })
    }

    /// Removes from the front until `max_msgs` and `max_bytes` hold.
    fn enforce_totals<B: Backend>(&mut self, b: &mut B) -> Result<u64> {
        let max_msgs = limit(self.limits.max_msgs);
        let max_bytes = limit(self.limits.max_bytes);
        let mut removed = 0;
        while self.c.msgs > 0
            && (max_msgs.is_some_and(|m| self.c.msgs > m)
                || max_bytes.is_some_and(|m| self.c.bytes > m))
        {
            let first = self.c.first_seq;
            if !self.remove(b, first, false)? {
                debug_assert!(false, "first message {first} missing");
                break;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes one stored message and keeps the counters and `first_seq`.
    fn remove<B: Backend>(&mut self, b: &mut B, seq: u64, erase: bool) -> Result<bool> {
        let Some(removed) = b.remove(seq, erase)? else {
            return Ok(false);
        };
        self.c.msgs -= 1;
        self.c.bytes = self.c.bytes.saturating_sub(removed.size);
        if let Some(subject) = removed.subject {
            if let Some(n) = self.subjects.get_mut(&subject) {
                *n -= 1;
                if *n == 0 {
                    self.subjects.remove(&subject);
                }
            }
        }
        if seq == self.c.first_seq {
            self.c.first_seq = if self.c.msgs == 0 {
                self.c.last_seq + 1
            } else {
                b.next_seq(seq + 1)?.unwrap_or(self.c.last_seq + 1)
            };
        }
        Ok(true)
    }

    /// Drops every message; sequences go on from `last_seq + 1`.
    fn clear<B: Backend>(&mut self, b: &mut B) -> Result<u64> {
        let purged = self.c.msgs;
        b.drop_below(self.c.last_seq + 1)?;
        self.c.msgs = 0;
        self.c.bytes = 0;
        self.c.first_seq = self.c.last_seq + 1;
        self.subjects.clear();
        Ok(purged)
    }

    fn purge<B: Backend>(&mut self, b: &mut B, req: PurgeRequest) -> Result<u64> {
        if req.up_to_seq.is_some_and(|s| s > u64::MAX / 2) {
            return Err(StorageError::InvalidRequest("sequence out of range"));
        }
        if let Some(filter) = req.filter.as_deref().filter(|f| !is_all(f)) {
            check_filter(filter)?;
            return self.purge_filtered(b, filter, req.up_to_seq, req.keep);
        }
        let mut fence = match req.up_to_seq {
            None if req.keep.is_none() => return self.clear(b),
            None => self.c.last_seq + 1,
            Some(seq) => seq,
        };
        if let Some(keep) = req.keep {
            fence = fence.min(self.seq_keeping(b, keep)?);
        }
        self.compact(b, fence)
    }

    /// The sequence from which exactly `keep` messages are stored.
    fn seq_keeping<B: Backend>(&self, b: &B, keep: u64) -> Result<u64> {
        if keep >= self.c.msgs {
            return Ok(self.c.first_seq);
        }
        let drop = self.c.msgs - keep;
        let mut seq;
        if keep <= drop {
            seq = self.c.last_seq + 1;
            for _ in 0..keep {
                seq = b.prev_seq(seq)?.ok_or_else(|| self.corrupt(seq))?;
            }
        } else {
            seq = self.c.first_seq;
            for _ in 0..drop {
                seq = b.next_seq(seq + 1)?.ok_or_else(|| self.corrupt(seq))?;
            }
        }
        Ok(seq)
    }

    /// Removes every message below `fence`.
    fn compact<B: Backend>(&mut self, b: &mut B, fence: u64) -> Result<u64> {
        if fence <= self.c.first_seq {
            return Ok(0);
        }
        if fence > self.c.last_seq {
            let purged = self.clear(b)?;
            if fence > self.c.last_seq + 1 {
                // nats-server: compacting beyond the end moves the sequence on.
                self.c.last_seq = fence - 1;
                self.c.first_seq = fence;
            }
            return Ok(purged);
        }
        let span_removed = fence - self.c.first_seq;
        let span_kept = self.c.last_seq + 1 - fence;
        if span_kept < span_removed / 2 {
            // Cheaper to count what stays than what goes.
            let mut kept = Counters {
                first_seq: self.c.last_seq + 1,
                ..self.c
            };
            kept.msgs = 0;
            kept.bytes = 0;
            let mut subjects: HashMap<Bytes, u64> = HashMap::new();
            let mut seqs = Vec::new();
            b.scan(fence, &mut |seq, _| {
                seqs.push(seq);
                ControlFlow::Continue(())
            })?;
            for &seq in &seqs {
                let m = b.load(seq)?.ok_or_else(|| self.corrupt(seq))?;
                kept.first_seq = kept.first_seq.min(seq);
                kept.msgs += 1;
                kept.bytes += m.stored_size();
                *subjects
                    .entry(Bytes::copy_from_slice(&m.subject))
                    .or_insert(0) += 1;
            }
            let purged = self.c.msgs - kept.msgs;
            b.drop_below(fence)?;
            self.c = kept;
            self.subjects = subjects;
            return Ok(purged);
        }
        let mut purged = 0;
        while self.c.msgs > 0 && self.c.first_seq < fence {
            let first = self.c.first_seq;
            if !self.remove(b, first, false)? {
                debug_assert!(false, "first message {first} missing");
                break;
            }
            purged += 1;
        }
        Ok(purged)
    }

    fn purge_filtered<B: Backend>(
        &mut self,
        b: &mut B,
        filter: &[u8],
        up_to_seq: Option<u64>,
        keep: Option<u64>,
    ) -> Result<u64> {
        let matching: Vec<(Bytes, u64)> = self.matching_subjects(filter);
        let total: u64 = matching.iter().map(|(_, n)| n).sum();
        let to_remove = total.saturating_sub(keep.unwrap_or(0));
        if to_remove == 0 {
            return Ok(0);
        }
        let below = up_to_seq.unwrap_or(u64::MAX);
        let mut seqs = Vec::new();
        for (subject, _) in &matching {
            b.scan_subject(subject, self.c.first_seq, &mut |seq| {
                if seq >= below {
                    return ControlFlow::Break(());
                }
                seqs.push(seq);
                ControlFlow::Continue(())
            })?;
        }
        seqs.sort_unstable();
        seqs.truncate(usize::try_from(to_remove).unwrap_or(usize::MAX));
        let mut purged = 0;
        for seq in seqs {
            if self.remove(b, seq, false)? {
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn expire<B: Backend>(&mut self, b: &mut B, cutoff: u64) -> Result<u64> {
        let mut removed = 0;
        while self.c.msgs > 0 {
            let first = self.c.first_seq;
            let Some(m) = b.load(first)? else {
                debug_assert!(false, "first message {first} missing");
                break;
            };
            if m.timestamp_ns >= cutoff {
                break;
            }
            self.remove(b, first, false)?;
            removed += 1;
        }
        Ok(removed)
    }

    fn update_limits<B: Backend>(&mut self, b: &mut B, limits: StreamLimits) -> Result<u64> {
        b.put_limits(&limits);
        self.limits = limits;
        let mut removed = 0;
        if let Some(max) = limit(self.limits.max_msgs_per_subject) {
            let mut over: Vec<Bytes> = self
                .subjects
                .iter()
                .filter(|(_, n)| **n > max)
                .map(|(s, _)| s.clone())
                .collect();
            over.sort_unstable();
            for subject in over {
                while self.subjects.get(&subject).is_some_and(|n| *n > max) {
                    let Some(oldest) = self.first_of_subject(b, &subject)? else {
                        break;
                    };
                    if !self.remove(b, oldest, false)? {
                        break;
                    }
                    removed += 1;
                }
            }
        }
        // As nats-server: lowering max_msgs/max_bytes truncates only under
        // discard old; discard new just rejects further appends.
        if self.limits.discard == DiscardPolicy::Old {
            removed += self.enforce_totals(b)?;
        }
        Ok(removed)
    }

    // ----- reads -----------------------------------------------------------

    fn first_of_subject<V: View>(&self, v: &V, subject: &[u8]) -> Result<Option<u64>> {
        let mut found = None;
        v.scan_subject(subject, self.c.first_seq, &mut |seq| {
            found = Some(seq);
            ControlFlow::Break(())
        })?;
        Ok(found)
    }

    fn subject_last_seq<V: View>(&self, v: &V, subject: &[u8]) -> Result<Option<u64>> {
        if !self.subjects.contains_key(subject) {
            return Ok(None);
        }
        Ok(v.subject_last(subject)?.filter(|s| *s >= self.c.first_seq))
    }

    /// Stored subjects matching `filter`, sorted, with their counts.
    fn matching_subjects(&self, filter: &[u8]) -> Vec<(Bytes, u64)> {
        let mut out: Vec<(Bytes, u64)> = if is_all(filter) {
            self.subjects.iter().map(|(s, n)| (s.clone(), *n)).collect()
        } else if subject::is_literal(filter) {
            self.subjects
                .get_key_value(filter)
                .map(|(s, n)| (s.clone(), *n))
                .into_iter()
                .collect()
        } else {
            self.subjects
                .iter()
                .filter(|(s, _)| subject::matches(filter, s))
                .map(|(s, n)| (s.clone(), *n))
                .collect()
        };
        out.sort_unstable();
        out
    }

    fn load_existing<V: View>(&self, v: &V, seq: u64) -> Result<StoredMessage> {
        v.load(seq)?.ok_or(StorageError::NotFound)
    }

    pub(crate) fn get<V: View>(&self, v: &V, seq: u64) -> Result<StoredMessage> {
        if seq < self.c.first_seq || seq > self.c.last_seq {
            return Err(StorageError::NotFound);
        }
        self.load_existing(v, seq)
    }

    pub(crate) fn next_matching<V: View>(
        &self,
        v: &V,
        start: u64,
        filter: &[u8],
    ) -> Result<Option<StoredMessage>> {
        check_filter(filter)?;
        let start = start.max(self.c.first_seq);
        if start > self.c.last_seq || self.c.msgs == 0 {
            return Ok(None);
        }
        let seq = if is_all(filter) {
            v.next_seq(start)?
        } else if subject::is_literal(filter) {
            if !self.subjects.contains_key(filter) {
                return Ok(None);
            }
            let mut found = None;
            v.scan_subject(filter, start, &mut |seq| {
                found = Some(seq);
                ControlFlow::Break(())
            })?;
            found
        } else {
            self.next_wildcard(v, start, filter)?
        };
        seq.map(|seq| self.load_existing(v, seq)).transpose()
    }

    fn next_wildcard<V: View>(&self, v: &V, start: u64, filter: &[u8]) -> Result<Option<u64>> {
        // Dense matches: a short linear scan finds them. Sparse: the index.
        let mut found = None;
        let mut probed = 0;
        let mut resume = start;
        v.scan(start, &mut |seq, subj| {
            resume = seq;
            match subj {
                // Undecodable: let load report the corruption.
                None => {
                    found = Some(seq);
                    return ControlFlow::Break(());
                }
                Some(s) if subject::matches(filter, s) => {
                    found = Some(seq);
                    return ControlFlow::Break(());
                }
                Some(_) => {}
            }
            probed += 1;
            if probed >= LINEAR_SCAN_PROBE {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if found.is_some() || probed < LINEAR_SCAN_PROBE {
            return Ok(found);
        }
        let matching = self.matching_subjects(filter);
        if matching.len() <= INDEX_FANOUT {
            let mut best: Option<u64> = None;
            for (subj, _) in &matching {
                v.scan_subject(subj, resume, &mut |seq| {
                    best = Some(best.map_or(seq, |b| b.min(seq)));
                    ControlFlow::Break(())
                })?;
            }
            return Ok(best);
        }
        v.scan(resume, &mut |seq, subj| match subj {
            Some(s) if !subject::matches(filter, s) => ControlFlow::Continue(()),
            _ => {
                found = Some(seq);
                ControlFlow::Break(())
            }
        })?;
        Ok(found)
    }

    pub(crate) fn last_by_subject<V: View>(
        &self,
        v: &V,
        filter: &[u8],
    ) -> Result<Option<StoredMessage>> {
        check_filter(filter)?;
        let seq = if is_all(filter) {
            (self.c.msgs > 0).then_some(self.c.last_seq)
        } else {
            let mut best = None;
            for (subj, _) in self.matching_subjects(filter) {
                if let Some(seq) = self.subject_last_seq(v, &subj)? {
                    best = best.max(Some(seq));
                }
            }
            best
        };
        match seq {
            // With interior deletes the last sequence may be gone.
            Some(seq) if is_all(filter) => v
                .prev_seq(seq + 1)?
                .filter(|s| *s >= self.c.first_seq)
                .map(|s| self.load_existing(v, s))
                .transpose(),
            Some(seq) => self.load_existing(v, seq).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn state<V: View>(&self, v: &V) -> Result<StreamState> {
        let c = &self.c;
        let first_ts = if c.msgs > 0 {
            v.load(c.first_seq)?
                .ok_or_else(|| self.corrupt(c.first_seq))?
                .timestamp_ns
        } else {
            0
        };
        Ok(StreamState {
            messages: c.msgs,
            bytes: c.bytes,
            first_seq: c.first_seq,
            first_ts,
            last_seq: c.last_seq,
            last_ts: c.last_ts,
            num_subjects: self.subjects.len() as u64,
            num_deleted: if c.msgs > 0 {
                c.last_seq + 1 - c.first_seq - c.msgs
            } else {
                0
            },
            consumer_count: self.consumers.len() as u64,
        })
    }

    pub(crate) fn deleted_seqs<V: View>(&self, v: &V) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        if self.c.msgs == 0 {
            return Ok(out);
        }
        let mut expect = self.c.first_seq;
        let last = self.c.last_seq;
        v.scan(self.c.first_seq, &mut |seq, _| {
            if seq > last {
                return ControlFlow::Break(());
            }
            out.extend(expect..seq);
            expect = seq + 1;
            ControlFlow::Continue(())
        })?;
        out.extend(expect..=last);
        Ok(out)
    }

    pub(crate) fn subjects_state(&self, filter: &[u8]) -> Result<BTreeMap<Bytes, u64>> {
        check_filter(filter)?;
        Ok(self.matching_subjects(filter).into_iter().collect())
    }

    pub(crate) fn count_matching<V: View>(&self, v: &V, filter: &[u8], from: u64) -> Result<u64> {
        check_filter(filter)?;
        let from = from.max(self.c.first_seq);
        if self.c.msgs == 0 || from > self.c.last_seq {
            return Ok(0);
        }
        let at_start = from == self.c.first_seq;
        if is_all(filter) {
            if at_start {
                return Ok(self.c.msgs);
            }
            let mut n = 0;
            v.scan(from, &mut |_, _| {
                n += 1;
                ControlFlow::Continue(())
            })?;
            return Ok(n);
        }
        let mut n = 0;
        for (subj, count) in self.matching_subjects(filter) {
            if at_start {
                n += count;
                continue;
            }
            v.scan_subject(&subj, from, &mut |_| {
                n += 1;
                ControlFlow::Continue(())
            })?;
        }
        Ok(n)
    }

    /// The first stored sequence whose timestamp is at or after `ts`,
    /// assuming timestamps do not decrease with the sequence (the leader
    /// assigns them in order); a binary search with O(log n) reads.
    pub(crate) fn seq_for_time<V: View>(&self, v: &V, ts: u64) -> Result<Option<u64>> {
        if self.c.msgs == 0 {
            return Ok(None);
        }
        // Existing sequences below `lo` are older than `ts`; those at or
        // above `hi` are not.
        let (mut lo, mut hi) = (self.c.first_seq, self.c.last_seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match v.next_seq(mid)? {
                Some(s) if s < hi => {
                    let m = v.load(s)?.ok_or_else(|| self.corrupt(s))?;
                    if m.timestamp_ns >= ts {
                        hi = mid;
                    } else {
                        lo = s + 1;
                    }
                }
                _ => hi = mid,
            }
        }
        Ok(v.next_seq(lo)?.filter(|s| *s <= self.c.last_seq))
    }
}

fn check_consumer_name(name: &str) -> Result<()> {
    if name.is_empty() {
        Err(StorageError::InvalidRequest("empty consumer name"))
    } else {
        Ok(())
    }
}
