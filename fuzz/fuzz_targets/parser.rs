//! The client-protocol parser never panics, never claims more bytes than it
//! was given, and finds the same operations however the bytes are split
//! into reads. Subjects it accepts go through the sublist without panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_protocol::{ClientOp, Parsed, Parser, ParserLimits};

const LIMITS: ParserLimits = ParserLimits {
    max_control_line: 256,
    max_payload: 4096,
};

/// What a run over `data` produced: debug strings of the operations, and
/// the error that ended it, if any.
fn run(data: &[u8], chunk: usize) -> (Vec<String>, Option<String>) {
    let mut parser = Parser::new(LIMITS);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut ops = Vec::new();
    loop {
        match parser.parse(&buf) {
            Ok(Parsed::Op(op, len)) => {
                assert!(
                    len > 0 && len <= buf.len(),
                    "op length {len} of {}",
                    buf.len()
                );
                ops.push(format!("{op:?}"));
                exercise(&op);
                buf.drain(..len);
            }
            Ok(Parsed::Skip(len)) if len > 0 => {
                assert!(len <= buf.len());
                buf.drain(..len);
            }
            Ok(Parsed::Skip(_)) | Ok(Parsed::Incomplete) => {
                if fed == data.len() {
                    return (ops, None);
                }
                let next = (fed + chunk).min(data.len());
                buf.extend_from_slice(&data[fed..next]);
                fed = next;
            }
            Err(e) => return (ops, Some(format!("{e:?}"))),
        }
        assert!(ops.len() <= data.len() + 1, "more ops than bytes");
    }
}

/// Feeds what the server would do next with an operation to the code that
/// does it: subject checks, the sublist, header decoding.
fn exercise(op: &ClientOp<'_>) {
    match op {
        ClientOp::Sub { subject, queue, .. } => {
            if tern_protocol::subject::is_valid_subscription_subject(subject) {
                if let Ok(s) = std::str::from_utf8(subject) {
                    let q = queue.and_then(|q| std::str::from_utf8(q).ok());
                    let mut list = tern_routing::Sublist::new();
                    let _ = list.insert(s, q, 1u8);
                    let _ = list.match_subject(s);
                    let _ = list.remove(s, q, &1u8);
                }
            }
        }
        ClientOp::HPub {
            headers, subject, ..
        } => {
            let _ = tern_protocol::Headers::decode(headers);
            let _ = tern_protocol::subject::is_valid_publish_subject(subject);
        }
        ClientOp::Pub { subject, .. } => {
            let _ = tern_protocol::subject::is_valid_publish_subject(subject);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let whole = run(rest, rest.len().max(1));
    let chunked = run(rest, usize::from(first % 16) + 1);
    // A pending payload may turn an op into an error only at the very end;
    // the operations found before must agree.
    assert_eq!(whole.0, chunked.0, "chunking changed the operations");
    assert_eq!(whole.1, chunked.1, "chunking changed the error");
});
