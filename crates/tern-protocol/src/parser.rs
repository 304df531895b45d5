//! Incremental parser for the operations a client sends.
//!
//! The parser reads the front of the connection's read buffer and returns the
//! next complete operation with its subjects and payload *borrowed* from that
//! buffer, together with how many bytes it spans. Nothing is copied and no
//! reference count is touched per message; the caller handles the operation,
//! then drops the consumed bytes. When an operation is incomplete the parser
//! reports that nothing was consumed, and [`Parser::bytes_needed`] says how
//! much a pending payload needs, so the reader can reserve once.

use crate::ProtocolError;

/// One client operation, borrowing from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT {json}`; the JSON text is left to the caller to decode.
    Connect(&'a [u8]),
    /// `PUB subject [reply] size` followed by the payload.
    Pub {
        /// The subject published to.
        subject: &'a [u8],
        /// The reply subject, if any.
        reply: Option<&'a [u8]>,
        /// The message payload.
        payload: &'a [u8],
    },
    /// `HPUB subject [reply] header_size total_size` followed by headers and payload.
    HPub {
        /// The subject published to.
        subject: &'a [u8],
        /// The reply subject, if any.
        reply: Option<&'a [u8]>,
        /// The header block, `NATS/1.0...\r\n\r\n`.
        headers: &'a [u8],
        /// The message payload after the header block.
        payload: &'a [u8],
    },
    /// `SUB subject [queue] sid`.
    Sub {
        /// The subject, possibly with wildcards.
        subject: &'a [u8],
        /// The queue group, if any.
        queue: Option<&'a [u8]>,
        /// The client-chosen subscription id.
        sid: &'a [u8],
    },
    /// `UNSUB sid [max_msgs]`.
    Unsub {
        /// The subscription id.
        sid: &'a [u8],
        /// Unsubscribe after this many messages in total, if given.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO {json}` from a client; nats-server accepts and ignores it.
    Info(&'a [u8]),
}

/// What one call to [`Parser::parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A complete operation spanning `len` bytes.
    Op(ClientOp<'a>, usize),
    /// `len` bytes of an over-long `PING`/`PONG` line to drop; call again.
    Skip(usize),
    /// More bytes are needed; nothing was consumed.
    Incomplete,
}

/// Limits the parser enforces while reading.
#[derive(Debug, Clone, Copy)]
pub struct ParserLimits {
    /// Longest control line accepted (its arguments), without CRLF.
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

/// The incremental client-operation parser of one connection.
#[derive(Debug)]
pub struct Parser {
    limits: ParserLimits,
    /// Bytes the pending operation spans, when its payload is still arriving.
    needed: Option<usize>,
    /// Set while discarding the rest of an over-long `PING`/`PONG` line.
    skipping: Option<ClientOp<'static>>,
}

impl Parser {
    /// Creates a parser enforcing `limits`.
    pub fn new(limits: ParserLimits) -> Self {
        Self {
            limits,
            needed: None,
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
        self.needed
    }

    /// Parses the next complete operation at the front of `buf`.
    ///
    /// An error is final for the connection: the caller reports it and, where
    /// nats-server does, closes.
    pub fn parse<'a>(&mut self, buf: &'a [u8]) -> Result<Parsed<'a>, ProtocolError> {
        if let Some(op) = self.skipping.take() {
            return Ok(self.skip_line(buf, op));
        }
        let line_end = match self.find_line_end(buf)? {
            LineEnd::At(pos) => pos,
            LineEnd::Incomplete => return Ok(Parsed::Incomplete),
            LineEnd::Skip(parsed) => return Ok(parsed),
        };
        let mut line = &buf[..line_end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let consumed = line_end + 1;
        let (op, rest) = split_op(line);
        // nats-server reads the op by its first letters and skips the rest of
        // a PING or PONG line, so `PINGX` and `PING x` are pings.
        if starts_with_ignore_case(op, b"PING") {
            return Ok(Parsed::Op(ClientOp::Ping, consumed));
        }
        if starts_with_ignore_case(op, b"PONG") {
            return Ok(Parsed::Op(ClientOp::Pong, consumed));
        }
        let Some(rest) = rest else {
            // An op word with no separator after it (`PUB\r\n`) is not an op at all.
            return if op.eq_ignore_ascii_case(b"CONNECT") {
                Ok(Parsed::Op(ClientOp::Connect(&[]), consumed))
            } else {
                Err(ProtocolError::UnknownOperation)
            };
        };
        if rest.len() > self.limits.max_control_line {
            return Err(ProtocolError::MaxControlLine);
        }
        let op = match op.len() {
            3 if op.eq_ignore_ascii_case(b"PUB") => {
                let (subject, reply, size) = match Args::<3>::split(rest).as_slice() {
                    [subject, size] => (*subject, None, *size),
                    [subject, reply, size] => (*subject, Some(*reply), *size),
                    _ => return Err(ProtocolError::InvalidPubArgs),
                };
                let total = parse_size(size).ok_or(ProtocolError::InvalidPubArgs)?;
                let Some(payload) = self.payload(buf, consumed, total)? else {
                    return Ok(Parsed::Incomplete);
                };
                ClientOp::Pub {
                    subject,
                    reply,
                    payload,
                }
            }
            4 if op.eq_ignore_ascii_case(b"HPUB") => {
                let (subject, reply, hdr, total) = match Args::<4>::split(rest).as_slice() {
                    [subject, hdr, total] => (*subject, None, *hdr, *total),
                    [subject, reply, hdr, total] => (*subject, Some(*reply), *hdr, *total),
                    _ => return Err(ProtocolError::InvalidHPubArgs),
                };
                let header_len = parse_size(hdr).ok_or(ProtocolError::InvalidHPubArgs)?;
                let total = parse_size(total).ok_or(ProtocolError::InvalidHPubArgs)?;
                if header_len > total {
                    return Err(ProtocolError::InvalidHPubArgs);
                }
                let Some(body) = self.payload(buf, consumed, total)? else {
                    return Ok(Parsed::Incomplete);
                };
                let (headers, payload) = body.split_at(header_len);
                ClientOp::HPub {
                    subject,
                    reply,
                    headers,
                    payload,
                }
            }
            3 if op.eq_ignore_ascii_case(b"SUB") => match Args::<3>::split(rest).as_slice() {
                [subject, sid] => ClientOp::Sub {
                    subject,
                    queue: None,
                    sid,
                },
                [subject, queue, sid] => ClientOp::Sub {
                    subject,
                    queue: Some(queue),
                    sid,
                },
                _ => return Err(ProtocolError::InvalidSubArgs),
            },
            5 if op.eq_ignore_ascii_case(b"UNSUB") => match Args::<2>::split(rest).as_slice() {
                [sid] => ClientOp::Unsub { sid, max: None },
                // A max that is not a number removes the subscription at
                // once, as nats-server does with `UNSUB 1 x` or `UNSUB 1 -1`.
                [sid, max] => ClientOp::Unsub {
                    sid,
                    max: Some(parse_size(max).map_or(0, |m| m as u64)),
                },
                _ => return Err(ProtocolError::InvalidUnsubArgs),
            },
            7 if op.eq_ignore_ascii_case(b"CONNECT") => ClientOp::Connect(rest),
            4 if op.eq_ignore_ascii_case(b"INFO") => ClientOp::Info(rest),
            _ => return Err(ProtocolError::UnknownOperation),
        };
        let len = match op {
            ClientOp::Pub { .. } | ClientOp::HPub { .. } => self.needed.take().unwrap_or(consumed),
            _ => consumed,
        };
        Ok(Parsed::Op(op, len))
    }

    /// The `total` payload bytes after a control line of `line_len` bytes,
    /// once they and their CRLF have arrived.
    fn payload<'a>(
        &mut self,
        buf: &'a [u8],
        line_len: usize,
        total: usize,
    ) -> Result<Option<&'a [u8]>, ProtocolError> {
        if total > self.limits.max_payload {
            return Err(ProtocolError::MaxPayload);
        }
        let end = line_len + total;
        if buf.len() < end + 2 {
            self.needed = Some(end + 2);
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            self.needed = None;
            return Err(ProtocolError::PayloadNotTerminated);
        }
        self.needed = Some(end + 2);
        Ok(Some(&buf[line_len..end]))
    }

    /// Finds the `\n` ending the control line at the front of `buf`.
    ///
    /// Errors once the arguments are known to exceed `max_control_line`, with
    /// or without a terminator, so a client cannot make the server buffer an
    /// endless line. A long `PING`/`PONG` line is skipped instead of buffered.
    fn find_line_end<'a>(&mut self, buf: &'a [u8]) -> Result<LineEnd<'a>, ProtocolError> {
        let max = self.limits.max_control_line;
        // The op word, its separators and a CRLF come on top of the arguments.
        let window = &buf[..buf.len().min(max + OP_ALLOWANCE)];
        if let Some(pos) = memchr::memchr(b'\n', window) {
            return Ok(LineEnd::At(pos));
        }
        if buf.len() < max + OP_ALLOWANCE {
            return Ok(LineEnd::Incomplete);
        }
        let (op, _) = split_op(buf);
        for (word, ping) in [
            (&b"PING"[..], ClientOp::Ping),
            (&b"PONG"[..], ClientOp::Pong),
        ] {
            if starts_with_ignore_case(op, word) {
                return Ok(LineEnd::Skip(self.skip_line(buf, ping)));
            }
        }
        Err(ProtocolError::MaxControlLine)
    }

    /// Drops bytes up to the end of a too-long `PING`/`PONG` line: the op once
    /// the line is complete, else everything so far, remembering to go on.
    fn skip_line<'a>(&mut self, buf: &'a [u8], op: ClientOp<'static>) -> Parsed<'a> {
        match memchr::memchr(b'\n', buf) {
            Some(pos) => Parsed::Op(op, pos + 1),
            None => {
                self.skipping = Some(op);
                Parsed::Skip(buf.len())
            }
        }
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
enum LineEnd<'a> {
    /// At this index (of its `\n`).
    At(usize),
    /// Not yet received.
    Incomplete,
    /// An over-long `PING`/`PONG` line, being skipped.
    Skip(Parsed<'a>),
}

/// Room for the op word, separators and CRLF beyond `max_control_line`.
const OP_ALLOWANCE: usize = 16;

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let s = &s[start..];
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    &s[..end]
}

/// Up to `N` whitespace-separated arguments of a control line.
struct Args<'a, const N: usize> {
    args: [&'a [u8]; N],
    len: usize,
    overflow: bool,
}

impl<'a, const N: usize> Args<'a, N> {
    fn split(rest: &'a [u8]) -> Self {
        let mut out = Args {
            args: [&[][..]; N],
            len: 0,
            overflow: false,
        };
        // A hand-rolled scan: this runs for every message.
        let mut i = 0;
        while i < rest.len() {
            while i < rest.len() && (rest[i] == b' ' || rest[i] == b'\t') {
                i += 1;
            }
            if i == rest.len() {
                break;
            }
            let start = i;
            while i < rest.len() && rest[i] != b' ' && rest[i] != b'\t' {
                i += 1;
            }
            if out.len == N {
                out.overflow = true;
                break;
            }
            out.args[out.len] = &rest[start..i];
            out.len += 1;
        }
        out
    }

    fn as_slice(&self) -> &[&'a [u8]] {
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

    /// Every op in `input`, borrowing from it.
    fn parse_all(input: &[u8]) -> Result<Vec<ClientOp<'_>>, ProtocolError> {
        parse_all_with(&mut Parser::new(ParserLimits::default()), input)
    }

    fn parse_all_with<'a>(
        parser: &mut Parser,
        input: &'a [u8],
    ) -> Result<Vec<ClientOp<'a>>, ProtocolError> {
        let mut ops = Vec::new();
        let mut start = 0;
        loop {
            match parser.parse(&input[start..])? {
                Parsed::Op(op, len) => {
                    ops.push(op);
                    start += len;
                }
                Parsed::Skip(len) => start += len,
                Parsed::Incomplete => return Ok(ops),
            }
        }
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
        assert_eq!(ops[0], ClientOp::Connect(b"{\"verbose\":false}"));
        assert_eq!(
            ops[1],
            ClientOp::Pub {
                subject: b"foo",
                reply: None,
                payload: b"hello"
            }
        );
        assert_eq!(
            ops[2],
            ClientOp::Pub {
                subject: b"foo",
                reply: Some(b"bar"),
                payload: b""
            }
        );
        assert_eq!(
            ops[3],
            ClientOp::HPub {
                subject: b"h",
                reply: Some(b"r"),
                headers: b"NATS/1.0\r\n\r\n",
                payload: b"hi",
            }
        );
        assert_eq!(
            ops[5],
            ClientOp::Sub {
                subject: b"foo",
                queue: Some(b"q"),
                sid: b"2"
            }
        );
        assert_eq!(
            ops[7],
            ClientOp::Unsub {
                sid: b"2",
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
        assert!(matches!(&ops[1], ClientOp::Pub { payload, .. } if *payload == b"x"));
        assert!(matches!(&ops[2], ClientOp::Sub { sid, .. } if *sid == b"7"));
    }

    #[test]
    fn incremental_byte_by_byte() {
        let input: &[u8] =
            b"PUB foo.bar reply 11\r\nhello world\r\nHPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\nPING\r\n";
        let mut parser = Parser::new(ParserLimits::default());
        let mut buf = Vec::new();
        let mut ops = Vec::new();
        for &b in input {
            buf.push(b);
            while let Parsed::Op(op, len) = parser.parse(&buf).unwrap() {
                ops.push(format!("{op:?}"));
                buf.drain(..len);
            }
        }
        let whole: Vec<String> = parse_all(input)
            .unwrap()
            .iter()
            .map(|op| format!("{op:?}"))
            .collect();
        assert_eq!(ops, whole);
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
        assert!(matches!(&ops[3], ClientOp::Pub { payload, .. } if *payload == b"x"));
        assert_eq!(
            ops[4],
            ClientOp::Unsub {
                sid: b"1",
                max: Some(0)
            }
        );
        assert_eq!(
            ops[5],
            ClientOp::Unsub {
                sid: b"2",
                max: Some(0)
            }
        );
        assert_eq!(
            parse_all(b"CONNECT\r\n").unwrap(),
            vec![ClientOp::Connect(b"")]
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
        assert!(matches!(
            parser.parse(b"SUB abcdefghijklmn 1\r\n").unwrap(),
            Parsed::Op(..)
        ));
        assert_eq!(
            parser.parse(b"SUB abcdefghijklmno 1\r\n").unwrap_err(),
            ProtocolError::MaxControlLine
        );
        assert_eq!(
            parser.parse(&[b'A'; 40]).unwrap_err(),
            ProtocolError::MaxControlLine
        );
        assert_eq!(parser.parse(&[b'A'; 20]).unwrap(), Parsed::Incomplete);
    }

    #[test]
    fn long_ping_lines_are_skipped_not_buffered() {
        let limits = ParserLimits {
            max_control_line: 16,
            max_payload: 64,
        };
        let mut parser = Parser::new(limits);
        let mut first = b"PING".to_vec();
        first.extend_from_slice(&[b' '; 100]);
        assert_eq!(
            parser.parse(&first).unwrap(),
            Parsed::Skip(104),
            "skipped bytes are dropped"
        );
        let rest = b"   \r\nPONG\r\n";
        assert_eq!(parser.parse(rest).unwrap(), Parsed::Op(ClientOp::Ping, 5));
        assert_eq!(
            parser.parse(&rest[5..]).unwrap(),
            Parsed::Op(ClientOp::Pong, 6)
        );
    }

    #[test]
    fn payload_slices_borrow_the_read_buffer() {
        let mut parser = Parser::new(ParserLimits::default());
        let buf = b"PUB foo 5\r\nhello\r\n";
        let Parsed::Op(ClientOp::Pub { payload, .. }, len) = parser.parse(buf).unwrap() else {
            panic!("expected a PUB");
        };
        assert_eq!(len, buf.len());
        assert_eq!(
            payload.as_ptr() as usize,
            buf.as_ptr() as usize + 11,
            "payload was copied"
        );
    }

    #[test]
    fn bytes_needed_reports_pending_payload() {
        let mut parser = Parser::new(ParserLimits::default());
        assert_eq!(
            parser.parse(b"PUB foo 100\r\nabc").unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(parser.bytes_needed(), Some(115));
    }
}
