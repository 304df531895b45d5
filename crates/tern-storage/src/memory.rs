//! Memory storage: JetStream's `storage: memory`, gone with the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::ops::ControlFlow;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::codec;
use crate::core::{Backend, Removed, ScanVisitor, StreamCore, View};
use crate::error::StorageError;
use crate::snapshot::{self, Frame, SnapshotWriter};
use crate::store::StreamStore;
use crate::types::{
    ConsumerState, OpResult, StoredConsumer, StoredMessage, StreamLimits, StreamOp, StreamState,
};

type Result<T> = std::result::Result<T, StorageError>;

/// A stream held in memory: a `BTreeMap` by sequence plus a per-subject
/// index of sequences.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    inner: RwLock<Inner>,
}

#[derive(Debug)]
struct Inner {
    core: StreamCore,
    data: MemData,
}

#[derive(Debug, Default)]
struct MemData {
    msgs: BTreeMap<u64, StoredMessage>,
    by_subject: HashMap<Bytes, BTreeSet<u64>>,
    config: Option<Bytes>,
    consumers: BTreeMap<String, StoredConsumer>,
}

impl MemoryStore {
    /// An empty stream.
    pub fn new(name: impl Into<String>, limits: StreamLimits) -> Self {
        let name = name.into();
        MemoryStore {
            inner: RwLock::new(Inner {
                core: StreamCore::new(name.clone(), limits),
                data: MemData::default(),
            }),
            name,
        }
    }
}

impl View for MemData {
    fn load(&self, seq: u64) -> Result<Option<StoredMessage>> {
        Ok(self.msgs.get(&seq).cloned())
    }

    fn next_seq(&self, from: u64) -> Result<Option<u64>> {
        Ok(self.msgs.range(from..).next().map(|(s, _)| *s))
    }

    fn prev_seq(&self, before: u64) -> Result<Option<u64>> {
        Ok(self.msgs.range(..before).next_back().map(|(s, _)| *s))
    }

    fn scan(&self, from: u64, visit: &mut ScanVisitor<'_>) -> Result<()> {
        for (seq, m) in self.msgs.range(from..) {
            if visit(*seq, Some(&m.subject)).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn scan_subject(
        &self,
        subject: &[u8],
        from: u64,
        visit: &mut dyn FnMut(u64) -> ControlFlow<()>,
    ) -> Result<()> {
        if let Some(seqs) = self.by_subject.get(subject) {
            for seq in seqs.range(from..) {
                if visit(*seq).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }

    fn subject_last(&self, subject: &[u8]) -> Result<Option<u64>> {
        Ok(self.by_subject.get(subject).and_then(|s| s.last().copied()))
    }
}

impl Backend for MemData {
    fn insert(&mut self, msg: StoredMessage) -> Result<()> {
        // Own the bytes: the caller's may be slices of a large read buffer.
        let msg = StoredMessage {
            subject: Bytes::copy_from_slice(&msg.subject),
            headers: msg.headers.as_deref().map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(&msg.payload),
            ..msg
        };
        self.by_subject
            .entry(msg.subject.clone())
            .or_default()
            .insert(msg.seq);
        self.msgs.insert(msg.seq, msg);
        Ok(())
    }

    fn remove(&mut self, seq: u64, _erase: bool) -> Result<Option<Removed>> {
        // Erase needs nothing more here: the bytes are freed, never on disk.
        let Some(msg) = self.msgs.remove(&seq) else {
            return Ok(None);
        };
        if let Some(seqs) = self.by_subject.get_mut(&msg.subject) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_subject.remove(&msg.subject);
            }
        }
        Ok(Some(Removed {
            size: msg.stored_size(),
            subject: Some(msg.subject),
        }))
    }

    fn drop_below(&mut self, fence: u64) -> Result<()> {
        self.msgs = self.msgs.split_off(&fence);
        self.by_subject.retain(|_, seqs| {
            *seqs = seqs.split_off(&fence);
            !seqs.is_empty()
        });
        Ok(())
    }

    fn put_limits(&mut self, _limits: &StreamLimits) {}

    fn put_config(&mut self, config: &Bytes) {
        self.config = Some(config.clone());
    }

    fn put_consumer_config(&mut self, name: &str, config: &Bytes) {
        self.consumers.entry(name.to_owned()).or_default().config = config.clone();
    }

    fn put_consumer_state(&mut self, name: &str, state: &ConsumerState) {
        self.consumers.entry(name.to_owned()).or_default().state = state.clone();
    }

    fn delete_consumer(&mut self, name: &str) {
        self.consumers.remove(name);
    }
}

impl StreamStore for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply_batch(&self, ops: Vec<StreamOp>) -> Vec<Result<OpResult>> {
        let mut inner = self.inner.write();
        let Inner { core, data } = &mut *inner;
        ops.into_iter().map(|op| core.apply(data, op)).collect()
    }

    fn get(&self, seq: u64) -> Result<StoredMessage> {
        let inner = self.inner.read();
        inner.core.get(&inner.data, seq)
    }

    fn next_matching(&self, start_seq: u64, filter: &[u8]) -> Result<Option<StoredMessage>> {
        let inner = self.inner.read();
        inner.core.next_matching(&inner.data, start_seq, filter)
    }

    fn last_by_subject(&self, filter: &[u8]) -> Result<Option<StoredMessage>> {
        let inner = self.inner.read();
        inner.core.last_by_subject(&inner.data, filter)
    }

    fn state(&self) -> Result<StreamState> {
        let inner = self.inner.read();
        inner.core.state(&inner.data)
    }

    fn totals(&self) -> Result<(u64, u64)> {
        let inner = self.inner.read();
        Ok((inner.core.c.msgs, inner.core.c.bytes))
    }

    fn deleted_seqs(&self) -> Result<Vec<u64>> {
        let inner = self.inner.read();
        inner.core.deleted_seqs(&inner.data)
    }

    fn subjects_state(&self, filter: &[u8]) -> Result<BTreeMap<Bytes, u64>> {
        self.inner.read().core.subjects_state(filter)
    }

    fn count_matching(&self, filter: &[u8], from_seq: u64) -> Result<u64> {
        let inner = self.inner.read();
        inner.core.count_matching(&inner.data, filter, from_seq)
    }

    fn seq_for_time(&self, timestamp_ns: u64) -> Result<Option<u64>> {
        let inner = self.inner.read();
        inner.core.seq_for_time(&inner.data, timestamp_ns)
    }

    fn limits(&self) -> StreamLimits {
        self.inner.read().core.limits.clone()
    }

    fn stream_config(&self) -> Result<Option<Bytes>> {
        Ok(self.inner.read().data.config.clone())
    }

    fn load_consumers(&self) -> Result<BTreeMap<String, StoredConsumer>> {
        Ok(self.inner.read().data.consumers.clone())
    }

    fn snapshot_to(&self, out: &mut dyn Write) -> Result<()> {
        let inner = self.inner.read();
        let mut w = SnapshotWriter::start(out, &inner.core.limits, &inner.core.c)?;
        if let Some(config) = &inner.data.config {
            w.config(config)?;
        }
        for (name, consumer) in &inner.data.consumers {
            w.consumer(name, consumer)?;
        }
        for (seq, msg) in &inner.data.msgs {
            w.message_record(*seq, &codec::encode_msg(msg))?;
        }
        w.finish()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<()> {
        let header = snapshot::verify(snapshot)?;
        let mut core = snapshot::core_from(&self.name, header);
        let mut data = MemData::default();
        snapshot::read(snapshot, |frame| {
            match frame {
                Frame::Config(c) => data.config = Some(Bytes::copy_from_slice(c)),
                Frame::Consumer(name, consumer) => {
                    core.consumers.insert(name.clone());
                    data.consumers.insert(name, consumer);
                }
                Frame::Message(msg, _) => data.insert(msg)?,
            }
            Ok(())
        })?;
        *self.inner.write() = Inner { core, data };
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
