//! Property tests: the parser never panics, never loops, never reads past its
//! buffer, and gives the same operations however the bytes are split.

use proptest::prelude::*;
use tern_protocol::{Parsed, Parser, ParserLimits, ProtocolError};

const LIMITS: ParserLimits = ParserLimits {
    max_control_line: 64,
    max_payload: 128,
};

/// Feeds `input` in the given chunk sizes; returns the ops (as debug text,
/// since they borrow the buffer) and the first error.
fn feed(input: &[u8], chunks: &[usize]) -> (Vec<String>, Option<ProtocolError>) {
    let mut parser = Parser::new(LIMITS);
    let mut buf: Vec<u8> = Vec::new();
    let mut ops = Vec::new();
    let mut offset = 0;
    let mut chunk_sizes = chunks.iter().cycle();
    while offset < input.len() {
        let n = (*chunk_sizes.next().unwrap_or(&1))
            .max(1)
            .min(input.len() - offset);
        buf.extend_from_slice(&input[offset..offset + n]);
        offset += n;
        // Every call either consumes bytes or asks for more, so this loop is bounded.
        for _ in 0..=input.len() {
            match parser.parse(&buf) {
                Ok(Parsed::Op(op, len)) => {
                    assert!(
                        len > 0 && len <= buf.len(),
                        "op spans {len} of {} bytes",
                        buf.len()
                    );
                    ops.push(format!("{op:?}"));
                    buf.drain(..len);
                }
                Ok(Parsed::Skip(len)) => {
                    assert!(len <= buf.len());
                    buf.drain(..len);
                }
                Ok(Parsed::Incomplete) => {
                    if let Some(needed) = parser.bytes_needed() {
                        assert!(needed > buf.len(), "needs {needed} but has {}", buf.len());
                    }
                    break;
                }
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

/// Byte strings that look like protocol traffic more often than noise does.
fn protocol_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"PUB foo 3\r\nabc\r\n".to_vec()),
        Just(b"HPUB foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n".to_vec()),
        Just(b"SUB foo.* q 1\r\n".to_vec()),
        Just(b"UNSUB 1 5\r\n".to_vec()),
        Just(b"PING\r\n".to_vec()),
        Just(b"pong\n".to_vec()),
        Just(b"CONNECT {}\r\n".to_vec()),
        Just(b"PUB x 200\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400),
                                   chunks in proptest::collection::vec(1usize..50, 1..8)) {
        let _ = feed(&input, &chunks);
    }

    #[test]
    fn chunking_does_not_change_the_result(input in protocol_like(),
                                           chunks in proptest::collection::vec(1usize..20, 1..8)) {
        let whole = feed(&input, &[input.len().max(1)]);
        let split = feed(&input, &chunks);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn payloads_are_exactly_the_declared_size(subject in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
                                              payload in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut input = format!("PUB {} {}\r\n", subject, payload.len()).into_bytes();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\r\n");
        let (ops, err) = feed(&input, &[7]);
        prop_assert_eq!(err, None);
        prop_assert_eq!(ops.len(), 1);
        let want = format!("{:?}", tern_protocol::ClientOp::Pub { subject: subject.as_bytes(), reply: None, payload: &payload });
        prop_assert_eq!(&ops[0], &want);
    }
}
