//! Encoders for the operations a server sends, writing straight into a
//! connection's outbound buffer.

use bytes::{BufMut, BytesMut};

use crate::ServerInfo;

/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`, sent after each operation in verbose mode.
pub const OK: &[u8] = b"+OK\r\n";

/// Bytes `MSG`/`HMSG` need besides subject, sid, reply, and payload:
/// the op name, spaces, two sizes and two CRLFs. Used to reserve once.
const FRAME_OVERHEAD: usize = 5 + 4 + 2 * 20 + 4;

/// The exact size [`encode_msg`] or [`encode_hmsg`] will write, bounded above
/// by a few bytes; callers use it to check pending limits before encoding.
pub fn msg_frame_len(subject: &[u8], sid: &[u8], reply: Option<&[u8]>, len: usize) -> usize {
    FRAME_OVERHEAD + subject.len() + sid.len() + reply.map_or(0, |r| r.len() + 1) + len
}

/// Writes `MSG <subject> <sid> [reply] <size>\r\n<payload>\r\n`.
pub fn encode_msg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    out.reserve(msg_frame_len(subject, sid, reply, payload.len()));
    out.put_slice(b"MSG ");
    put_head(out, subject, sid, reply);
    out.put_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// Writes `HMSG <subject> <sid> [reply] <hdr_size> <total_size>\r\n<headers><payload>\r\n`.
pub fn encode_hmsg(
    out: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let total = headers.len() + payload.len();
    out.reserve(msg_frame_len(subject, sid, reply, total));
    out.put_slice(b"HMSG ");
    put_head(out, subject, sid, reply);
    let mut itoa = itoa::Buffer::new();
    out.put_slice(itoa.format(headers.len()).as_bytes());
    out.put_u8(b' ');
    out.put_slice(itoa.format(total).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(headers);
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

fn put_head(out: &mut BytesMut, subject: &[u8], sid: &[u8], reply: Option<&[u8]>) {
    out.put_slice(subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
}

/// Writes `INFO {json} \r\n`, with the space before CRLF that nats-server sends.
pub fn encode_info(out: &mut BytesMut, info: &ServerInfo) {
    out.put_slice(b"INFO ");
    // Serializing a struct of strings and numbers into memory cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    out.put_slice(&json);
    out.put_slice(b" \r\n");
}

/// Writes `-ERR '<text>'\r\n`.
pub fn encode_err(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 9);
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_framing() {
        let mut out = BytesMut::new();
        encode_msg(&mut out, b"foo.bar", b"9", None, b"hello");
        encode_msg(&mut out, b"foo", b"1", Some(b"_INBOX.x"), b"");
        assert_eq!(
            &out[..],
            b"MSG foo.bar 9 5\r\nhello\r\nMSG foo 1 _INBOX.x 0\r\n\r\n"
        );
    }

    #[test]
    fn hmsg_framing() {
        let mut out = BytesMut::new();
        encode_hmsg(
            &mut out,
            b"foo",
            b"2",
            Some(b"r"),
            b"NATS/1.0\r\n\r\n",
            b"hi",
        );
        assert_eq!(&out[..], b"HMSG foo 2 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
    }

    #[test]
    fn frame_len_is_an_upper_bound() {
        let mut out = BytesMut::new();
        encode_hmsg(&mut out, b"s", b"1", Some(b"r"), b"NATS/1.0\r\n\r\n", b"x");
        assert!(out.len() <= msg_frame_len(b"s", b"1", Some(b"r"), 13));
    }

    #[test]
    fn err_framing() {
        let mut out = BytesMut::new();
        encode_err(&mut out, "Stale Connection");
        assert_eq!(&out[..], b"-ERR 'Stale Connection'\r\n");
    }
}
