//! Subject and queue-name syntax, as nats-server checks it.
//!
//! A subject is a non-empty sequence of non-empty tokens separated by `.`.
//! Tokens never contain whitespace. In a subscription, a token that is exactly
//! `*` matches one token and a last token that is exactly `>` matches one or
//! more tokens; `foo*` is an ordinary literal token.

/// Whether `b` is whitespace that ends a token in the NATS protocol.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Checks the token structure shared by every kind of subject.
///
/// Returns `Some(has_wildcard)` for a well-formed subject, `None` otherwise.
fn scan(subject: &[u8]) -> Option<bool> {
    if subject.is_empty() {
        return None;
    }
    let mut has_wildcard = false;
    let mut tokens = subject.split(|&b| b == b'.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() || token.iter().any(|&b| is_space(b)) {
            return None;
        }
        match token {
            b"*" => has_wildcard = true,
            b">" => {
                if tokens.peek().is_some() {
                    return None;
                }
                has_wildcard = true;
            }
            _ => {}
        }
    }
    Some(has_wildcard)
}

/// A subject a client may subscribe to: wildcards allowed, `>` only last.
pub fn is_valid_subscription_subject(subject: &[u8]) -> bool {
    scan(subject).is_some()
}

/// A subject a message may be published to: well-formed and without wildcards.
pub fn is_valid_publish_subject(subject: &[u8]) -> bool {
    scan(subject) == Some(false)
}

/// Whether a well-formed subject contains no wildcard token.
pub fn is_literal(subject: &[u8]) -> bool {
    !subject
        .split(|&b| b == b'.')
        .any(|token| token == b"*" || token == b">")
}

/// A queue group name: non-empty and free of whitespace.
pub fn is_valid_queue_name(queue: &[u8]) -> bool {
    !queue.is_empty() && !queue.iter().any(|&b| is_space(b))
}

/// Whether a literal `subject` matches the subscription `pattern`.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut pattern = pattern.split(|&b| b == b'.');
    let mut subject = subject.split(|&b| b == b'.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matching() {
        assert!(matches(b"foo.*", b"foo.bar"));
        assert!(matches(b"foo.>", b"foo.bar.baz"));
        assert!(matches(b">", b"foo"));
        assert!(matches(b"foo", b"foo"));
        assert!(!matches(b"foo.>", b"foo"));
        assert!(!matches(b"foo.*", b"foo.bar.baz"));
        assert!(!matches(b"foo.bar", b"foo"));
    }

    #[test]
    fn subscription_subjects() {
        for ok in [
            "foo",
            "foo.bar",
            "foo.*",
            "*",
            ">",
            "foo.>",
            "*.*.>",
            "foo*",
            "f>o",
            "$JS.API.>",
            ">b",
            "a*.b>",
            "foo.*.baz",
            "ünïcode.ok",
        ] {
            assert!(is_valid_subscription_subject(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "foo.",
            ".foo",
            "foo..bar",
            "foo.>.bar",
            ">.foo",
            "foo bar",
            "foo\tbar",
            "> ",
            "a\nb",
            "a\rb",
            "a\x0cb",
            "..",
            "a.>.>",
        ] {
            assert!(!is_valid_subscription_subject(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn publish_subjects() {
        assert!(is_valid_publish_subject(b"foo.bar"));
        assert!(is_valid_publish_subject(b"foo*.b>r"));
        assert!(!is_valid_publish_subject(b"foo.*"));
        assert!(!is_valid_publish_subject(b"foo.>"));
        assert!(!is_valid_publish_subject(b"foo..bar"));
    }

    #[test]
    fn queue_names() {
        assert!(is_valid_queue_name(b"workers"));
        assert!(is_valid_queue_name(b"w.*"));
        assert!(!is_valid_queue_name(b""));
        assert!(!is_valid_queue_name(b"a b"));
    }
}
