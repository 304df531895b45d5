//! Hand-rolled binary records, each sealed with a CRC-32.
//!
//! A message record (the value under `stream id ++ seq` in the `msgs` tree,
//! and the body of a message in a snapshot):
//!
//! ```text
//! flags u8            high nibble: format version (1), bit 0: has headers
//! timestamp_ns u64 LE
//! subject_len varint, subject
//! [headers_len varint, headers]   when bit 0 is set
//! payload             the rest
//! crc32 u32 LE        over seq (u64 BE) ++ everything above
//! ```
//!
//! The sequence lives in the key, not the record, but it is folded into the
//! checksum so a record read under the wrong key is caught too. Metadata
//! records (limits, counters, consumer state, config blobs) end with the
//! same kind of checksum, salted with 0.

use std::time::Duration;

use bytes::Bytes;

use crate::types::{ConsumerState, DiscardPolicy, StoredMessage, StreamLimits};

const MSG_VERSION: u8 = 1;
const META_VERSION: u8 = 1;

/// Appends bytes and integers to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn opt(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.var(v);
            }
        }
    }

    /// Appends the checksum and returns the sealed record.
    pub(crate) fn seal(mut self, salt: u64) -> Vec<u8> {
        let crc = checksum(salt, &self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Reads what [`Writer`] wrote; every getter returns `None` past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let end = self.pos.checked_add(8)?;
        let v = u64::from_le_bytes(self.buf.get(self.pos..end)?.try_into().ok()?);
        self.pos = end;
        Some(v)
    }

    pub(crate) fn var(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A length-prefixed slice, as its range in the buffer.
    pub(crate) fn range(&mut self) -> Option<std::ops::Range<usize>> {
        let len = usize::try_from(self.var()?).ok()?;
        let end = self.pos.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        let r = self.pos..end;
        self.pos = end;
        Some(r)
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let r = self.range()?;
        Some(&self.buf[r])
    }

    fn opt(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.var()?)),
            _ => None,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }
}

pub(crate) fn checksum(salt: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_be_bytes());
    h.update(body);
    h.finalize()
}

/// The body of a sealed record, if its checksum holds.
pub(crate) fn unseal(raw: &[u8], salt: u64) -> Option<&[u8]> {
    let split = raw.len().checked_sub(4)?;
    let (body, crc) = raw.split_at(split);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    (checksum(salt, body) == crc).then_some(body)
}

/// Encodes a message record for sequence `seq`.
pub(crate) fn encode_msg(msg: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_msg_len(msg));
    encode_msg_into(&mut out, msg);
    out
}

/// An upper bound of the length of `msg`'s record.
pub(crate) fn encoded_msg_len(msg: &StoredMessage) -> usize {
    1 + 8
        + 10
        + msg.subject.len()
        + msg.headers.as_ref().map_or(0, |h| h.len() + 10)
        + msg.payload.len()
        + 4
}

/// Appends the record of `msg` to `out`.
pub(crate) fn encode_msg_into(out: &mut Vec<u8>, msg: &StoredMessage) {
    let start = out.len();
    let headers = msg.headers.as_deref();
    let mut w = Writer {
        buf: std::mem::take(out),
    };
    w.buf.reserve(encoded_msg_len(msg));
    w.u8(MSG_VERSION << 4 | u8::from(headers.is_some()));
    w.u64(msg.timestamp_ns);
    w.bytes(&msg.subject);
    if let Some(h) = headers {
        w.bytes(h);
    }
    w.buf.extend_from_slice(&msg.payload);
    let crc = checksum(msg.seq, &w.buf[start..]);
    w.buf.extend_from_slice(&crc.to_le_bytes());
    *out = w.buf;
}

/// Decodes a message record stored under `seq`; `None` if the checksum or
/// the layout is wrong. Subject, headers and payload share `raw`'s buffer.
pub(crate) fn decode_msg(seq: u64, raw: Bytes) -> Option<StoredMessage> {
    let body_len = unseal(&raw, seq)?.len();
    let mut r = Reader::new(&raw[..body_len]);
    let flags = r.u8()?;
    if flags >> 4 != MSG_VERSION || flags & 0x0e != 0 {
        return None;
    }
    let timestamp_ns = r.u64()?;
    let subject = r.range()?;
    let headers = if flags & 1 == 1 {
        Some(r.range()?)
    } else {
        None
    };
    let payload = r.pos()..body_len;
    Some(StoredMessage {
        seq,
        subject: raw.slice(subject),
        headers: headers.map(|h| raw.slice(h)),
        payload: raw.slice(payload),
        timestamp_ns,
    })
}

/// The subject of a message record without verifying its checksum: only to
/// skip records that cannot match a filter; a match is decoded in full.
pub(crate) fn peek_subject(raw: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(raw);
    r.u8()?;
    r.u64()?;
    r.bytes()
}

pub(crate) fn encode_limits(l: &StreamLimits) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(META_VERSION);
    w.opt(l.max_msgs);
    w.opt(l.max_bytes);
    w.opt(
        l.max_age
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    );
    w.opt(l.max_msgs_per_subject);
    w.opt(l.max_msg_size);
    w.u8(match l.discard {
        DiscardPolicy::Old => 0,
        DiscardPolicy::New => 1,
    });
    w.u8(u8::from(l.discard_new_per_subject));
    w.seal(0)
}

pub(crate) fn decode_limits(raw: &[u8]) -> Option<StreamLimits> {
    let mut r = Reader::new(unseal(raw, 0)?);
    if r.u8()? != META_VERSION {
        return None;
    }
    let limits = StreamLimits {
        max_msgs: r.opt()?,
        max_bytes: r.opt()?,
        max_age: r.opt()?.map(Duration::from_nanos),
        max_msgs_per_subject: r.opt()?,
        max_msg_size: r.opt()?,
        discard: match r.u8()? {
            0 => DiscardPolicy::Old,
            1 => DiscardPolicy::New,
            _ => return None,
        },
        discard_new_per_subject: match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        },
    };
    r.is_empty().then_some(limits)
}

/// The persisted figures of a stream; everything else is rebuilt on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Lowest stored sequence, or `last_seq + 1` when empty. Records with a
    /// lower sequence are dead even if still on disk (see `SledStore`).
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_ts: u64,
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            first_seq: 1,
            last_seq: 0,
            last_ts: 0,
            msgs: 0,
            bytes: 0,
        }
    }
}

pub(crate) fn encode_counters(c: &Counters) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(META_VERSION);
    for v in [c.first_seq, c.last_seq, c.last_ts, c.msgs, c.bytes] {
        w.var(v);
    }
    w.seal(0)
}

pub(crate) fn decode_counters(raw: &[u8]) -> Option<Counters> {
    let mut r = Reader::new(unseal(raw, 0)?);
    if r.u8()? != META_VERSION {
        return None;
    }
    let c = Counters {
        first_seq: r.var()?,
        last_seq: r.var()?,
        last_ts: r.var()?,
        msgs: r.var()?,
        bytes: r.var()?,
    };
    r.is_empty().then_some(c)
}

pub(crate) fn encode_consumer_state(s: &ConsumerState) -> Vec<u8> {
    let mut w = Writer::with_capacity(32 + s.pending.len() * 12 + s.redelivered.len() * 6);
    w.u8(META_VERSION);
    w.var(s.delivered_consumer_seq);
    w.var(s.delivered_stream_seq);
    w.var(s.ack_floor_consumer_seq);
    w.var(s.ack_floor_stream_seq);
    w.var(s.pending.len() as u64);
    for (seq, (cseq, ts)) in &s.pending {
        w.var(*seq);
        w.var(*cseq);
        w.var(*ts);
    }
    w.var(s.redelivered.len() as u64);
    for (seq, n) in &s.redelivered {
        w.var(*seq);
        w.var(*n);
    }
    w.seal(0)
}

pub(crate) fn decode_consumer_state(raw: &[u8]) -> Option<ConsumerState> {
    let mut r = Reader::new(unseal(raw, 0)?);
    if r.u8()? != META_VERSION {
        return None;
    }
    let mut s = ConsumerState {
        delivered_consumer_seq: r.var()?,
        delivered_stream_seq: r.var()?,
        ack_floor_consumer_seq: r.var()?,
        ack_floor_stream_seq: r.var()?,
        ..ConsumerState::default()
    };
    for _ in 0..r.var()? {
        let seq = r.var()?;
        let cseq = r.var()?;
        let ts = r.var()?;
        s.pending.insert(seq, (cseq, ts));
    }
    for _ in 0..r.var()? {
        let seq = r.var()?;
        s.redelivered.insert(seq, r.var()?);
    }
    r.is_empty().then_some(s)
}

/// A checksummed opaque blob (stream or consumer config).
pub(crate) fn encode_blob(blob: &[u8]) -> Vec<u8> {
    let mut w = Writer::with_capacity(blob.len() + 4);
    w.buf.extend_from_slice(blob);
    w.seal(0)
}

pub(crate) fn decode_blob(raw: &[u8]) -> Option<&[u8]> {
    unseal(raw, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(headers: Option<&'static [u8]>) -> StoredMessage {
        StoredMessage {
            seq: 42,
            subject: Bytes::from_static(b"orders.eu"),
            headers: headers.map(Bytes::from_static),
            payload: Bytes::from_static(b"hello"),
            timestamp_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn message_round_trip() {
        for m in [msg(None), msg(Some(b"NATS/1.0\r\nA: b\r\n\r\n"))] {
            let raw = Bytes::from(encode_msg(&m));
            assert_eq!(decode_msg(42, raw.clone()), Some(m.clone()));
            assert_eq!(peek_subject(&raw), Some(&b"orders.eu"[..]));
            // Under another key the checksum fails.
            assert_eq!(decode_msg(43, raw), None);
        }
    }

    #[test]
    fn any_flipped_byte_is_caught() {
        let raw = encode_msg(&msg(Some(b"h")));
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(decode_msg(42, Bytes::from(bad)), None, "byte {i} bit {bit}");
            }
        }
        assert_eq!(
            decode_msg(42, Bytes::from(raw[..raw.len() - 1].to_vec())),
            None
        );
    }

    #[test]
    fn meta_round_trip() {
        let l = StreamLimits {
            max_msgs: Some(10),
            max_bytes: None,
            max_age: Some(Duration::from_secs(3)),
            max_msgs_per_subject: Some(1),
            max_msg_size: Some(1 << 20),
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
        };
        assert_eq!(decode_limits(&encode_limits(&l)), Some(l));
        let c = Counters {
            first_seq: 5,
            last_seq: 9,
            last_ts: u64::MAX,
            msgs: 3,
            bytes: 300,
        };
        assert_eq!(decode_counters(&encode_counters(&c)), Some(c));
        let mut s = ConsumerState {
            delivered_consumer_seq: 7,
            delivered_stream_seq: 9,
            ack_floor_consumer_seq: 3,
            ack_floor_stream_seq: 4,
            ..ConsumerState::default()
        };
        s.pending.insert(5, (4, 1234));
        s.redelivered.insert(5, 2);
        assert_eq!(decode_consumer_state(&encode_consumer_state(&s)), Some(s));
        let mut bad = encode_counters(&c);
        bad[1] ^= 1;
        assert_eq!(decode_counters(&bad), None);
    }
}
