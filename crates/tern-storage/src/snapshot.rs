//! The snapshot format: a header and a sequence of checksummed frames.
//!
//! ```text
//! "TERNSNAP" version u8 (1)
//! frame*: tag u8, body_len u32 LE, body, crc32 u32 LE over tag ++ len ++ body
//!   1 header    limits record, counters record (each length-prefixed)
//!   2 config    the stream's config blob
//!   3 consumer  name, config blob, state record (each length-prefixed)
//!   4 message   seq varint, message record (with its own checksum)
//!   5 end       message count, consumer count (varints); nothing may follow
//! ```

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;

use crate::codec::{self, Counters, Reader, Writer};
use crate::core::StreamCore;
use crate::error::StorageError;
use crate::types::{StoredConsumer, StoredMessage, StreamLimits};

const MAGIC: &[u8; 8] = b"TERNSNAP";
const VERSION: u8 = 1;

const TAG_HEADER: u8 = 1;
const TAG_CONFIG: u8 = 2;
const TAG_CONSUMER: u8 = 3;
const TAG_MESSAGE: u8 = 4;
const TAG_END: u8 = 5;

type Result<T> = std::result::Result<T, StorageError>;

/// Writes frames and counts them for the end frame.
pub(crate) struct SnapshotWriter<'a> {
    out: &'a mut dyn Write,
    messages: u64,
    consumers: u64,
}

impl<'a> SnapshotWriter<'a> {
    pub(crate) fn start(
        out: &'a mut dyn Write,
        limits: &StreamLimits,
        counters: &Counters,
    ) -> Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        let mut w = SnapshotWriter {
            out,
            messages: 0,
            consumers: 0,
        };
        let mut body = Writer::default();
        body.bytes(&codec::encode_limits(limits));
        body.bytes(&codec::encode_counters(counters));
        w.frame(TAG_HEADER, &body.buf)?;
        Ok(w)
    }

    fn frame(&mut self, tag: u8, body: &[u8]) -> Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| StorageError::InvalidRequest("snapshot record larger than 4 GiB"))?;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(body);
        self.out.write_all(&head)?;
        self.out.write_all(body)?;
        self.out.write_all(&h.finalize().to_le_bytes())?;
        Ok(())
    }

    pub(crate) fn config(&mut self, config: &[u8]) -> Result<()> {
        self.frame(TAG_CONFIG, config)
    }

    pub(crate) fn consumer(&mut self, name: &str, consumer: &StoredConsumer) -> Result<()> {
        let mut body = Writer::default();
        body.bytes(name.as_bytes());
        body.bytes(&consumer.config);
        body.bytes(&codec::encode_consumer_state(&consumer.state));
        self.consumers += 1;
        self.frame(TAG_CONSUMER, &body.buf)
    }

    /// A message given as its already verified stored record.
    pub(crate) fn message_record(&mut self, seq: u64, record: &[u8]) -> Result<()> {
        let mut body = Writer::with_capacity(record.len() + 10);
        body.var(seq);
        body.buf.extend_from_slice(record);
        self.messages += 1;
        self.frame(TAG_MESSAGE, &body.buf)
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        let mut body = Writer::default();
        body.var(self.messages);
        body.var(self.consumers);
        self.frame(TAG_END, &body.buf)?;
        self.out.flush()?;
        Ok(())
    }
}

/// One decoded frame.
pub(crate) enum Frame<'a> {
    Config(&'a [u8]),
    Consumer(String, StoredConsumer),
    /// A message and its stored record (valid under its sequence).
    Message(StoredMessage, &'a [u8]),
}

/// What a verified snapshot holds besides its frames.
pub(crate) struct SnapshotHeader {
    pub(crate) limits: StreamLimits,
    pub(crate) counters: Counters,
    pub(crate) subjects: HashMap<Bytes, u64>,
}

const BAD: StorageError = StorageError::CorruptSnapshot("bad record");

/// Walks a snapshot. [`verify`] runs it once completely before a restore
/// replaces anything; the restore then runs it again to apply the frames.
pub(crate) fn read(
    snapshot: &[u8],
    mut visit: impl FnMut(Frame<'_>) -> Result<()>,
) -> Result<(StreamLimits, Counters)> {
    let rest = snapshot
        .strip_prefix(MAGIC.as_slice())
        .ok_or(StorageError::CorruptSnapshot("not a snapshot"))?;
    let (&version, mut rest) = rest
        .split_first()
        .ok_or(StorageError::CorruptSnapshot("truncated"))?;
    if version != VERSION {
        return Err(StorageError::CorruptSnapshot("unknown version"));
    }
    let mut header = None;
    let mut messages = 0u64;
    let mut consumers = 0u64;
    let mut last_seq = 0u64;
    loop {
        if rest.len() < 9 {
            return Err(StorageError::CorruptSnapshot("truncated"));
        }
        let tag = rest[0];
        let len = u32::from_le_bytes(rest[1..5].try_into().map_err(|_| BAD)?) as usize;
        let total = len.checked_add(9).ok_or(BAD)?;
        if rest.len() < total {
            return Err(StorageError::CorruptSnapshot("truncated"));
        }
        let (frame, tail) = rest.split_at(total);
        rest = tail;
        let (head_body, crc) = frame.split_at(5 + len);
        if crc32fast::hash(head_body) != u32::from_le_bytes(crc.try_into().map_err(|_| BAD)?) {
            return Err(StorageError::CorruptSnapshot("checksum mismatch"));
        }
        let body = &head_body[5..];
        let mut r = Reader::new(body);
        if header.is_none() && tag != TAG_HEADER {
            return Err(StorageError::CorruptSnapshot("missing header"));
        }
        match tag {
            TAG_HEADER if header.is_none() => {
                let limits = codec::decode_limits(r.bytes().ok_or(BAD)?).ok_or(BAD)?;
                let counters = codec::decode_counters(r.bytes().ok_or(BAD)?).ok_or(BAD)?;
                header = Some((limits, counters));
            }
            TAG_CONFIG => visit(Frame::Config(body))?,
            TAG_CONSUMER => {
                let name = std::str::from_utf8(r.bytes().ok_or(BAD)?).map_err(|_| BAD)?;
                let config = Bytes::copy_from_slice(r.bytes().ok_or(BAD)?);
                let state = codec::decode_consumer_state(r.bytes().ok_or(BAD)?).ok_or(BAD)?;
                consumers += 1;
                visit(Frame::Consumer(
                    name.to_owned(),
                    StoredConsumer { config, state },
                ))?;
            }
            TAG_MESSAGE => {
                let seq = r.var().ok_or(BAD)?;
                if seq <= last_seq {
                    return Err(StorageError::CorruptSnapshot("messages out of order"));
                }
                last_seq = seq;
                let record = &body[r.pos()..];
                let msg = codec::decode_msg(seq, Bytes::copy_from_slice(record)).ok_or(BAD)?;
                messages += 1;
                visit(Frame::Message(msg, record))?;
            }
            TAG_END => {
                if r.var() != Some(messages) || r.var() != Some(consumers) || !rest.is_empty() {
                    return Err(StorageError::CorruptSnapshot("counts do not match"));
                }
                let (limits, counters) = header.ok_or(BAD)?;
                if counters.msgs != messages {
                    return Err(StorageError::CorruptSnapshot("counts do not match"));
                }
                return Ok((limits, counters));
            }
            _ => return Err(StorageError::CorruptSnapshot("unknown record")),
        }
    }
}

/// Checks a whole snapshot and returns what a restore needs to rebuild the
/// in-memory figures.
pub(crate) fn verify(snapshot: &[u8]) -> Result<SnapshotHeader> {
    let mut subjects: HashMap<Bytes, u64> = HashMap::new();
    let mut bytes = 0u64;
    let mut first = None;
    let mut last = 0;
    let (limits, counters) = read(snapshot, |frame| {
        if let Frame::Message(m, _) = frame {
            bytes += m.stored_size();
            first.get_or_insert(m.seq);
            last = m.seq;
            match subjects.get_mut(&m.subject) {
                Some(n) => *n += 1,
                None => {
                    subjects.insert(Bytes::copy_from_slice(&m.subject), 1);
                }
            }
        }
        Ok(())
    })?;
    let consistent = bytes == counters.bytes
        && last <= counters.last_seq
        && counters.first_seq == first.unwrap_or(counters.last_seq + 1)
        && counters.first_seq <= counters.last_seq + 1;
    if !consistent {
        return Err(StorageError::CorruptSnapshot(
            "state does not match messages",
        ));
    }
    Ok(SnapshotHeader {
        limits,
        counters,
        subjects,
    })
}

/// A core as the snapshot describes it (consumers are added by the caller).
pub(crate) fn core_from(name: &str, header: SnapshotHeader) -> StreamCore {
    let mut core = StreamCore::new(name.to_owned(), header.limits);
    core.c = header.counters;
    core.subjects = header.subjects;
    core
}
