//! The packed layout of forwarded messages (see `MessageBatch` in
//! `proto/cluster.proto`): written straight into a peer's buffer, read back
//! as slices of the received batch without copying.

use bytes::{Buf, BufMut, BytesMut};
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

const PLAIN: u8 = 1;
const REPLY: u8 = 2;
const HEADERS: u8 = 4;
const DISPLAY: u8 = 8;

/// A message to forward, borrowed from the publisher's buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarded<'a> {
    /// The account it was published in.
    pub account: &'a str,
    /// The subject subscriptions are matched against.
    pub subject: &'a [u8],
    /// The subject subscribers see, when it differs (JetStream push
    /// delivery); empty otherwise.
    pub display_subject: &'a [u8],
    /// Reply subject; empty for none.
    pub reply: &'a [u8],
    /// NATS header block; empty for none.
    pub headers: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Deliver to the receiver's plain subscriptions.
    pub plain: bool,
    /// Queue groups the receiver was picked for.
    pub queues: &'a [&'a str],
}

impl Forwarded<'_> {
    /// Bytes this message takes in a batch.
    pub fn encoded_len(&self) -> usize {
        fn field(len: usize) -> usize {
            encoded_len_varint(len as u64) + len
        }
        let mut n = 1 + field(self.account.len()) + field(self.subject.len());
        if !self.display_subject.is_empty() {
            n += field(self.display_subject.len());
        }
        if !self.reply.is_empty() {
            n += field(self.reply.len());
        }
        if !self.headers.is_empty() {
            n += field(self.headers.len());
        }
        n += field(self.payload.len());
        n += encoded_len_varint(self.queues.len() as u64);
        n += self.queues.iter().map(|q| field(q.len())).sum::<usize>();
        n
    }

    /// Appends the message to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        fn put(buf: &mut BytesMut, bytes: &[u8]) {
            encode_varint(bytes.len() as u64, buf);
            buf.put_slice(bytes);
        }
        buf.reserve(self.encoded_len());
        let mut flags = 0;
        if self.plain {
            flags |= PLAIN;
        }
        if !self.reply.is_empty() {
            flags |= REPLY;
        }
        if !self.headers.is_empty() {
            flags |= HEADERS;
        }
        if !self.display_subject.is_empty() {
            flags |= DISPLAY;
        }
        buf.put_u8(flags);
        put(buf, self.account.as_bytes());
        put(buf, self.subject);
        if !self.display_subject.is_empty() {
            put(buf, self.display_subject);
        }
        if !self.reply.is_empty() {
            put(buf, self.reply);
        }
        if !self.headers.is_empty() {
            put(buf, self.headers);
        }
        put(buf, self.payload);
        encode_varint(self.queues.len() as u64, buf);
        for queue in self.queues {
            put(buf, queue.as_bytes());
        }
    }
}

/// A batch that does not follow the packed layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message batch: {0}")]
pub struct MalformedBatch(&'static str);

/// One received message, borrowed from its batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received<'a> {
    /// The account.
    pub account: &'a str,
    /// The subject to match.
    pub subject: &'a [u8],
    /// The subject to show: `subject` unless the sender set another.
    pub display_subject: &'a [u8],
    /// Reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// Header block, if any.
    pub headers: Option<&'a [u8]>,
    /// Payload.
    pub payload: &'a [u8],
    /// Deliver to plain subscriptions.
    pub plain: bool,
    queues: &'a [u8],
    queue_count: usize,
}

impl<'a> Received<'a> {
    /// The queue groups the receiver was picked for.
    pub fn queues(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.queues;
        (0..self.queue_count).map_while(move |_| {
            let field = take(&mut rest).ok()?;
            std::str::from_utf8(field).ok()
        })
    }
}

fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], MalformedBatch> {
    let len = decode_varint(rest).map_err(|_| MalformedBatch("bad length"))? as usize;
    if len > rest.len() {
        return Err(MalformedBatch("field past the end"));
    }
    let (field, tail) = rest.split_at(len);
    *rest = tail;
    Ok(field)
}

/// Reads the messages of a packed batch in order. Stops with an error at
/// the first malformed one.
pub struct Unpack<'a> {
    rest: &'a [u8],
}

/// The messages of `packed`.
pub fn unpack(packed: &[u8]) -> Unpack<'_> {
    Unpack { rest: packed }
}

impl<'a> Unpack<'a> {
    fn next_message(&mut self) -> Result<Received<'a>, MalformedBatch> {
        let rest = &mut self.rest;
        if !rest.has_remaining() {
            return Err(MalformedBatch("empty"));
        }
        let flags = rest.get_u8();
        let account = std::str::from_utf8(take(rest)?).map_err(|_| MalformedBatch("account"))?;
        let subject = take(rest)?;
        let display_subject = if flags & DISPLAY != 0 {
            take(rest)?
        } else {
            subject
        };
        let reply = if flags & REPLY != 0 {
            Some(take(rest)?)
        } else {
            None
        };
        let headers = if flags & HEADERS != 0 {
            Some(take(rest)?)
        } else {
            None
        };
        let payload = take(rest)?;
        let queue_count =
            decode_varint(rest).map_err(|_| MalformedBatch("bad queue count"))? as usize;
        let start = *rest;
        for _ in 0..queue_count {
            let queue = take(rest)?;
            std::str::from_utf8(queue).map_err(|_| MalformedBatch("queue name"))?;
        }
        let queues = &start[..start.len() - rest.len()];
        Ok(Received {
            account,
            subject,
            display_subject,
            reply,
            headers,
            payload,
            plain: flags & PLAIN != 0,
            queues,
            queue_count,
        })
    }
}

impl<'a> Iterator for Unpack<'a> {
    type Item = Result<Received<'a>, MalformedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.next_message();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = BytesMut::new();
        let first = Forwarded {
            account: "$G",
            subject: b"orders.eu",
            payload: b"hello",
            plain: true,
            ..Default::default()
        };
        let second = Forwarded {
            account: "ACC",
            subject: b"inbox.1",
            display_subject: b"orders.us",
            reply: b"$JS.ACK.x",
            headers: b"NATS/1.0\r\nA: b\r\n\r\n",
            payload: b"",
            plain: false,
            queues: &["workers", "auditors"],
        };
        first.encode(&mut buf);
        assert_eq!(buf.len(), first.encoded_len());
        second.encode(&mut buf);
        assert_eq!(buf.len(), first.encoded_len() + second.encoded_len());
        let got: Vec<_> = unpack(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].account, "$G");
        assert_eq!(got[0].display_subject, b"orders.eu");
        assert!(got[0].plain && got[0].reply.is_none() && got[0].headers.is_none());
        assert_eq!(got[0].queues().count(), 0);
        assert_eq!(got[1].subject, b"inbox.1");
        assert_eq!(got[1].display_subject, b"orders.us");
        assert_eq!(got[1].reply, Some(&b"$JS.ACK.x"[..]));
        assert_eq!(got[1].headers, Some(&b"NATS/1.0\r\nA: b\r\n\r\n"[..]));
        assert_eq!(
            got[1].queues().collect::<Vec<_>>(),
            vec!["workers", "auditors"]
        );
        assert!(!got[1].plain);
    }

    #[test]
    fn truncated_or_garbage_batches_are_errors_not_panics() {
        let mut buf = BytesMut::new();
        Forwarded {
            account: "$G",
            subject: b"a",
            payload: b"0123456789",
            plain: true,
            queues: &["q"],
            ..Default::default()
        }
        .encode(&mut buf);
        for cut in 0..buf.len() {
            let results: Vec<_> = unpack(&buf[..cut]).collect();
            if cut > 0 {
                assert!(results.last().unwrap().is_err(), "cut at {cut}");
            }
        }
        let garbage = [0xffu8; 32];
        assert!(unpack(&garbage).any(|r| r.is_err()));
    }
}
