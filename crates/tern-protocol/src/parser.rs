//! Incremental parser for the operations a client sends.
//!
//! The parser works on the connection's read buffer: each call consumes at
//! most one complete operation from the front of the buffer and hands out
//! subjects and payloads as [`Bytes`] slices of that buffer, so payloads are
//! never copied. When an operation is incomplete it consumes nothing (or, for
//! a payload still arriving, only the already-parsed control line) and
//! returns `Ok(None)`; the caller reads more bytes and calls again.

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtocolError;

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`; the JSON text is left to the caller to decode.
    Connect(Bytes),
    /// `PUB subject [reply] size` followed by the payload.
    Pub {
        /// The subject published to.
        subject: Bytes,
        /// The reply subject, if any.
        reply: Option<Bytes>,
        /// The message payload.
        payload: Bytes,
    },
    /// `HPUB subject [reply] header_size total_size` followed by headers and payload.
    HPub {
        /// The subject published to.
        subject: Bytes,
        /// The reply subject, if any.
        reply: Option<Bytes>,
        /// The header block, `NATS/1.0...\r\n\r\n`.
        headers: Bytes,
        /// The message payload after the header block.
        payload: Bytes,
    },
    /// `SUB subject [queue] sid`.
    Sub {
        /// The subject, possibly with wildcards.
        subject: Bytes,
        /// The queue group, if any.
        queue: Option<Bytes>,
        /// The client-chosen subscription id.
        sid: Bytes,
    },
    /// `UNSUB sid [max_msgs]`.
    Unsub {
        /// The subscription id.
        sid: Bytes,
        /// Unsubscribe after this many messages in total, if given.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO {json}` from a client; nats-server accepts and ignores it.
    Info(Bytes),
}

/// Limits the parser enforces while reading.
#[derive(Debug, Clone, Copy)]
pub struct ParserLimits {
    /// Longest control line accepted, without its CRLF.
    pub max_control_line: usize,
    /// Largest payload (headers included) accepted.
    pub max_payload: usize,
}

impl Default for ParserLimits {
    fn default() -> Self {
        Self {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
        }
    }
}

/// A publish whose control line is parsed and whose payload is still arriving.
#[derive(Debug)]
struct PendingPayload {
    subject: Bytes,
    reply: Option<Bytes>,
    /// Header block length; `None` for a plain `PUB`.
    header_len: Option<usize>,
    total_len: usize,
}

/// The incremental client-operation parser of one connection.
#[derive(Debug)]
pub struct Parser {
    limits: ParserLimits,
    pending: Option<PendingPayload>,
    /// Set while discarding the rest of an over-long `PING`/`PONG` line.
    skipping: Option<ClientOp>,
}

impl Parser {
    /// Creates a parser enforcing `limits`.
    pub fn new(limits: ParserLimits) -> Self {
        Self {
            limits,
            pending: None,
            skipping: None,
        }
    }

    /// Replaces the limits (e.g. after a configuration reload).
    pub fn set_limits(&mut self, limits: ParserLimits) {
        self.limits = limits;
    }

    /// How many bytes the buffer must hold before the next call can make
    /// progress, when a payload is pending. Lets the reader reserve once.
    pub fn bytes_needed(&self) -> Option<usize> {
        self.pending.as_ref().map(|p| p.total_len + 2)
    }

    /// Parses the next complete operation at the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. An error is final for
    /// the bytes at hand: the caller reports it and, where nats-server does,
    /// closes the connection.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, ProtocolError> {
        if let Some(pending) = &self.pending {
            return self.finish_payload(buf, pending.total_len);
        }
        if let Some(op) = self.skipping.take() {
            return Ok(self.skip_line(buf, op));
        }
        let line_end = match self.find_line_end(buf)? {
            LineEnd::At(pos) => pos,
            LineEnd::Incomplete => return Ok(None),
            LineEnd::Skipped(op) => return Ok(Some(op)),
        };
        // The line without its terminator; a bare `\n` is accepted like nats-server does.
        let mut line = buf.split_to(line_end + 1);
        line.truncate(line_end);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        let line = line.freeze();
        let (op, rest) = split_op(&line);
        // nats-server reads the op by its first letters and skips the rest of
        // a PING or PONG line, so `PINGX` and `PING x` are pings.
        if starts_with_ignore_case(op, b"PING") {
            return Ok(Some(ClientOp::Ping));
        }
        if starts_with_ignore_case(op, b"PONG") {
            return Ok(Some(ClientOp::Pong));
        }
        let Some(rest) = rest else {
            // An op word with no separator after it (`PUB\r\n`) is not an op at all.
            return if op.eq_ignore_ascii_case(b"CONNECT") {
                Ok(Some(ClientOp::Connect(Bytes::new())))
            } else {
                Err(ProtocolError::UnknownOperation)
            };
        };
        if rest.len() > self.limits.max_control_line {
            return Err(ProtocolError::MaxControlLine);
        }
        match op.len() {
            3 if op.eq_ignore_ascii_case(b"PUB") => {
                let args = Args::split::<3>(&line, rest);
                let (subject, reply, size) = match args.as_slice() {
                    [subject, size] => (subject.clone(), None, size),
                    [subject, reply, size] => (subject.clone(), Some(reply.clone()), size),
                    _ => return Err(ProtocolError::InvalidPubArgs),
                };
                let total_len = parse_size(size).ok_or(ProtocolError::InvalidPubArgs)?;
                self.start_payload(buf, subject, reply, None, total_len)
            }
            4 if op.eq_ignore_ascii_case(b"HPUB") => {
                let args = Args::split::<4>(&line, rest);
                let (subject, reply, hdr, total) = match args.as_slice() {
                    [subject, hdr, total] => (subject.clone(), None, hdr, total),
                    [subject, reply, hdr, total] => {
                        (subject.clone(), Some(reply.clone()), hdr, total)
                    }
                    _ => return Err(ProtocolError::InvalidHPubArgs),
                };
                let header_len = parse_size(hdr).ok_or(ProtocolError::InvalidHPubArgs)?;
                let total_len = parse_size(total).ok_or(ProtocolError::InvalidHPubArgs)?;
                if header_len > total_len {
                    return Err(ProtocolError::InvalidHPubArgs);
                }
                self.start_payload(buf, subject, reply, Some(header_len), total_len)
            }
            3 if op.eq_ignore_ascii_case(b"SUB") => {
                let args = Args::split::<3>(&line, rest);
                match args.as_slice() {
                    [subject, sid] => Ok(Some(ClientOp::Sub {
                        subject: subject.clone(),
                        queue: None,
                        sid: sid.clone(),
                    })),
                    [subject, queue, sid] => Ok(Some(ClientOp::Sub {
                        subject: subject.clone(),
                        queue: Some(queue.clone()),
                        sid: sid.clone(),
                    })),
                    _ => Err(ProtocolError::InvalidSubArgs),
                }
            }
            5 if op.eq_ignore_ascii_case(b"UNSUB") => {
                let args = Args::split::<2>(&line, rest);
                match args.as_slice() {
                    [sid] => Ok(Some(ClientOp::Unsub {
                        sid: sid.clone(),
                        max: None,
                    })),
                    // A max that is not a number removes the subscription at
                    // once, as nats-server does with `UNSUB 1 x` or `UNSUB 1 -1`.
                    [sid, max] => Ok(Some(ClientOp::Unsub {
                        sid: sid.clone(),
                        max: Some(parse_size(max).map_or(0, |m| m as u64)),
                    })),
                    _ => Err(ProtocolError::InvalidUnsubArgs),
                }
            }
            7 if op.eq_ignore_ascii_case(b"CONNECT") => {
                Ok(Some(ClientOp::Connect(line.slice_ref(rest))))
            }
            4 if op.eq_ignore_ascii_case(b"INFO") => Ok(Some(ClientOp::Info(line.slice_ref(rest)))),
            _ => Err(ProtocolError::UnknownOperation),
        }
    }

    /// Finds the `\n` ending the control line at the front of `buf`.
    ///
    /// Errors once the arguments are known to exceed `max_control_line`, with
    /// or without a terminator, so a client cannot make the server buffer an
    /// endless line. A long `PING`/`PONG` line is skipped instead of buffered.
    fn find_line_end(&mut self, buf: &mut BytesMut) -> Result<LineEnd, ProtocolError> {
        let max = self.limits.max_control_line;
        // The op word, its separators and a CRLF come on top of the arguments.
        let window = &buf[..buf.len().min(max + OP_ALLOWANCE)];
        if let Some(pos) = memchr::memchr(b'\n', window) {
            return Ok(LineEnd::At(pos));
        }
        if buf.len() < max + OP_ALLOWANCE {
            return Ok(LineEnd::Incomplete);
        }
        let (op, _) = split_op(&buf[..]);
        for (word, ping) in [
            (&b"PING"[..], ClientOp::Ping),
            (&b"PONG"[..], ClientOp::Pong),
        ] {
            if starts_with_ignore_case(op, word) {
                return Ok(match self.skip_line(buf, ping) {
                    Some(op) => LineEnd::Skipped(op),
                    None => LineEnd::Incomplete,
                });
            }
        }
        Err(ProtocolError::MaxControlLine)
    }

    /// Discards bytes up to the end of a too-long `PING`/`PONG` line; returns
    /// the op once the line is complete, else remembers to keep skipping.
    fn skip_line(&mut self, buf: &mut BytesMut, op: ClientOp) -> Option<ClientOp> {
        match memchr::memchr(b'\n', buf) {
            Some(pos) => {
                buf.advance(pos + 1);
                Some(op)
            }
            None => {
                buf.clear();
                self.skipping = Some(op);
                None
            }
        }
    }

    fn start_payload(
        &mut self,
        buf: &mut BytesMut,
        subject: Bytes,
        reply: Option<Bytes>,
        header_len: Option<usize>,
        total_len: usize,
    ) -> Result<Option<ClientOp>, ProtocolError> {
        if total_len > self.limits.max_payload {
            return Err(ProtocolError::MaxPayload);
        }
        self.pending = Some(PendingPayload {
            subject,
            reply,
            header_len,
            total_len,
        });
        self.finish_payload(buf, total_len)
    }

    fn finish_payload(
        &mut self,
        buf: &mut BytesMut,
        total_len: usize,
    ) -> Result<Option<ClientOp>, ProtocolError> {
        if buf.len() < total_len + 2 {
            return Ok(None);
        }
        if &buf[total_len..total_len + 2] != b"\r\n" {
            self.pending = None;
            return Err(ProtocolError::PayloadNotTerminated);
        }
        let Some(pending) = self.pending.take() else {
            debug_assert!(false, "finish_payload without a pending publish");
            return Err(ProtocolError::UnknownOperation);
        };
        let mut payload = buf.split_to(total_len).freeze();
        buf.advance(2);
        Ok(Some(match pending.header_len {
            None => ClientOp::Pub {
                subject: pending.subject,
                reply: pending.reply,
                payload,
            },
            Some(header_len) => {
                let headers = payload.split_to(header_len);
                ClientOp::HPub {
                    subject: pending.subject,
                    reply: pending.reply,
                    headers,
                    payload,
                }
            }
        }))
    }
}

/// Splits the operation word off the line. The rest is `None` when no
/// separator follows the word, and the arguments (trimmed) otherwise.
fn split_op(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(pos) => (&line[..pos], Some(trim(&line[pos..]))),
        None => (line, None),
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Where the control line at the front of the buffer ends.
enum LineEnd {
    /// At this index (of its `\n`).
    At(usize),
    /// Not yet received.
    Incomplete,
    /// An over-long `PING`/`PONG` line was skipped whole.
    Skipped(ClientOp),
}

/// Room for the op word, separators and CRLF beyond `max_control_line`.
const OP_ALLOWANCE: usize = 16;

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    &s[start..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    &s[..end]
}

/// Up to `N` whitespace-separated arguments, as slices of the line.
struct Args {
    args: [Bytes; 4],
    len: usize,
    overflow: bool,
}

impl Args {
    fn split<const N: usize>(line: &Bytes, rest: &[u8]) -> Self {
        let mut out = Args {
            args: Default::default(),
            len: 0,
            overflow: false,
        };
        for arg in rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|a| !a.is_empty())
        {
            if out.len == N {
                out.overflow = true;
                break;
            }
            out.args[out.len] = line.slice_ref(arg);
            out.len += 1;
        }
        out
    }

    fn as_slice(&self) -> &[Bytes] {
        if self.overflow {
            &[]
        } else {
            &self.args[..self.len]
        }
    }
}

/// Parses a decimal size the way nats-server does: digits only, no sign.
fn parse_size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(d - b'0');
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<ClientOp>, ProtocolError> {
        let mut parser = Parser::new(ParserLimits::default());
        let mut buf = BytesMut::from(input);
        let mut ops = Vec::new();
        while let Some(op) = parser.parse(&mut buf)? {
            ops.push(op);
        }
        Ok(ops)
    }

    #[test]
    fn parses_every_operation() {
        let ops = parse_all(
            b"CONNECT {\"verbose\":false}\r\nPUB foo 5\r\nhello\r\nPUB foo bar 0\r\n\r\n\
              HPUB h r 12 14\r\nNATS/1.0\r\n\r\nhi\r\nSUB foo 1\r\nSUB foo q 2\r\n\
              UNSUB 1\r\nUNSUB 2 10\r\nPING\r\nPONG\r\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 10);
        assert_eq!(
            ops[0],
            ClientOp::Connect(Bytes::from_static(b"{\"verbose\":false}"))
        );
        assert_eq!(
            ops[1],
            ClientOp::Pub {
                subject: Bytes::from_static(b"foo"),
                reply: None,
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(
            ops[2],
            ClientOp::Pub {
                subject: Bytes::from_static(b"foo"),
                reply: Some(Bytes::from_static(b"bar")),
                payload: Bytes::new()
            }
        );
        assert_eq!(
            ops[3],
            ClientOp::HPub {
                subject: Bytes::from_static(b"h"),
                reply: Some(Bytes::from_static(b"r")),
                headers: Bytes::from_static(b"NATS/1.0\r\n\r\n"),
                payload: Bytes::from_static(b"hi"),
            }
        );
        assert_eq!(
            ops[5],
            ClientOp::Sub {
                subject: Bytes::from_static(b"foo"),
                queue: Some(Bytes::from_static(b"q")),
                sid: Bytes::from_static(b"2")
            }
        );
        assert_eq!(
            ops[7],
            ClientOp::Unsub {
                sid: Bytes::from_static(b"2"),
                max: Some(10)
            }
        );
        assert_eq!(ops[8], ClientOp::Ping);
        assert_eq!(ops[9], ClientOp::Pong);
    }

    #[test]
    fn lowercase_tabs_and_bare_newlines() {
        let ops = parse_all(b"ping\npub\tfoo  \t 1\r\nx\r\nsub  foo   7 \r\n").unwrap();
        assert_eq!(ops[0], ClientOp::Ping);
        assert!(matches!(&ops[1], ClientOp::Pub { payload, .. } if payload.as_ref() == b"x"));
        assert!(matches!(&ops[2], ClientOp::Sub { sid, .. } if sid.as_ref() == b"7"));
    }

    #[test]
    fn incremental_byte_by_byte() {
        let input: &[u8] =
            b"PUB foo.bar reply 11\r\nhello world\r\nHPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\nPING\r\n";
        let mut parser = Parser::new(ParserLimits::default());
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(op) = parser.parse(&mut buf).unwrap() {
                ops.push(op);
            }
        }
        assert_eq!(ops, parse_all(input).unwrap());
        assert_eq!(ops.len(), 3);
        assert!(buf.is_empty());
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"FOO\r\n", ProtocolError::UnknownOperation),
            (b"\r\n", ProtocolError::UnknownOperation),
            (b" PING\r\n", ProtocolError::UnknownOperation),
            (b"PUB\r\n", ProtocolError::UnknownOperation),
            (b"SUB\r\n", ProtocolError::UnknownOperation),
            (b"MSG foo 1 1\r\n", ProtocolError::UnknownOperation),
            (b"PUB \r\n", ProtocolError::InvalidPubArgs),
            (b"PUB foo\r\n", ProtocolError::InvalidPubArgs),
            (b"PUB foo bar\r\n", ProtocolError::InvalidPubArgs),
            (b"PUB foo -1\r\n", ProtocolError::InvalidPubArgs),
            (b"PUB foo +1\r\n", ProtocolError::InvalidPubArgs),
            (b"PUB a b c 1\r\n", ProtocolError::InvalidPubArgs),
            (
                b"PUB foo 3\r\nabcdef\r\n",
                ProtocolError::PayloadNotTerminated,
            ),
            (
                b"PUB foo 3\r\nabc\nPING\r\n",
                ProtocolError::PayloadNotTerminated,
            ),
            (b"HPUB foo 5 3\r\n", ProtocolError::InvalidHPubArgs),
            (b"HPUB foo 12\r\n", ProtocolError::InvalidHPubArgs),
            (b"SUB foo\r\n", ProtocolError::InvalidSubArgs),
            (b"SUB foo q 1 2\r\n", ProtocolError::InvalidSubArgs),
            (b"UNSUB 1 2 3\r\n", ProtocolError::InvalidUnsubArgs),
            (b"PUB foo 1048577\r\n", ProtocolError::MaxPayload),
            (b"HPUB foo 12 1048577\r\n", ProtocolError::MaxPayload),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_all(input).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn lenient_forms_nats_server_accepts() {
        let ops = parse_all(
            b"PINGX\r\nPING x\r\nPONGY\r\nPUB foo 01\r\nx\r\nUNSUB 1 x\r\nUNSUB 2 -1\r\n",
        )
        .unwrap();
        assert_eq!(ops[0], ClientOp::Ping);
        assert_eq!(ops[1], ClientOp::Ping);
        assert_eq!(ops[2], ClientOp::Pong);
        assert!(matches!(&ops[3], ClientOp::Pub { payload, .. } if payload.as_ref() == b"x"));
        assert_eq!(
            ops[4],
            ClientOp::Unsub {
                sid: Bytes::from_static(b"1"),
                max: Some(0)
            }
        );
        assert_eq!(
            ops[5],
            ClientOp::Unsub {
                sid: Bytes::from_static(b"2"),
                max: Some(0)
            }
        );
        assert_eq!(
            parse_all(b"CONNECT\r\n").unwrap(),
            vec![ClientOp::Connect(Bytes::new())]
        );
    }

    #[test]
    fn control_line_limit_counts_arguments() {
        let limits = ParserLimits {
            max_control_line: 16,
            max_payload: 64,
        };
        let mut parser = Parser::new(limits);
        // "abcdefghijklmn 1" is 16 bytes of arguments: allowed.
        let mut exact = BytesMut::from(&b"SUB abcdefghijklmn 1\r\n"[..]);
        assert!(parser.parse(&mut exact).unwrap().is_some());
        let mut long = BytesMut::from(&b"SUB abcdefghijklmno 1\r\n"[..]);
        assert_eq!(
            parser.parse(&mut long).unwrap_err(),
            ProtocolError::MaxControlLine
        );
        let mut endless = BytesMut::from(&[b'A'; 40][..]);
        assert_eq!(
            parser.parse(&mut endless).unwrap_err(),
            ProtocolError::MaxControlLine
        );
        let mut short = BytesMut::from(&[b'A'; 20][..]);
        assert_eq!(parser.parse(&mut short).unwrap(), None);
    }

    #[test]
    fn long_ping_lines_are_skipped_not_buffered() {
        let limits = ParserLimits {
            max_control_line: 16,
            max_payload: 64,
        };
        let mut parser = Parser::new(limits);
        let mut buf = BytesMut::from(&b"PING"[..]);
        buf.extend_from_slice(&[b' '; 100]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "skipped bytes must not be kept");
        buf.extend_from_slice(b"   \r\nPONG\r\n");
        assert_eq!(parser.parse(&mut buf).unwrap(), Some(ClientOp::Ping));
        assert_eq!(parser.parse(&mut buf).unwrap(), Some(ClientOp::Pong));
    }

    #[test]
    fn payload_slices_share_the_read_buffer() {
        let mut parser = Parser::new(ParserLimits::default());
        let mut buf = BytesMut::from(&b"PUB foo 5\r\nhello\r\n"[..]);
        let base = buf.as_ptr() as usize;
        let Some(ClientOp::Pub { payload, .. }) = parser.parse(&mut buf).unwrap() else {
            panic!("expected a PUB");
        };
        assert_eq!(payload.as_ptr() as usize, base + 11, "payload was copied");
    }

    #[test]
    fn bytes_needed_reports_pending_payload() {
        let mut parser = Parser::new(ParserLimits::default());
        let mut buf = BytesMut::from(&b"PUB foo 100\r\nabc"[..]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        assert_eq!(parser.bytes_needed(), Some(102));
    }
}
