//! Subject shape as the trie needs it; the syntax rules themselves live in
//! `tern_protocol::subject`, the one place that defines them.

use tern_protocol::subject as syntax;

/// What a syntactically valid subject contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubjectKind {
    /// No wildcard tokens: can be published to.
    Literal,
    /// At least one `*` or `>` token: can only be subscribed to.
    Wildcard,
}

/// `None` if `subject` is not a valid subscription subject.
pub(crate) fn classify(subject: &str) -> Option<SubjectKind> {
    let bytes = subject.as_bytes();
    if !syntax::is_valid_subscription_subject(bytes) {
        None
    } else if syntax::is_literal(bytes) {
        Some(SubjectKind::Literal)
    } else {
        Some(SubjectKind::Wildcard)
    }
}

/// Whether `queue` is an acceptable queue group name.
pub(crate) fn is_valid_queue_name(queue: &str) -> bool {
    syntax::is_valid_queue_name(queue.as_bytes())
}

/// Splits the first token off `rest`; the tail is `None` after the last
/// token.
#[inline]
pub(crate) fn split_first_token(rest: &str) -> (&str, Option<&str>) {
    match rest.as_bytes().iter().position(|&b| b == b'.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify("foo.bar"), Some(SubjectKind::Literal));
        assert_eq!(classify("foo*.b>"), Some(SubjectKind::Literal));
        assert_eq!(classify("foo.*"), Some(SubjectKind::Wildcard));
        assert_eq!(classify(">"), Some(SubjectKind::Wildcard));
        assert_eq!(classify("a..b"), None);
        assert_eq!(classify("a.>.b"), None);
        assert_eq!(classify("ünïcode.ok"), Some(SubjectKind::Literal));
    }

    #[test]
    fn split_tokens() {
        assert_eq!(split_first_token("a.b.c"), ("a", Some("b.c")));
        assert_eq!(split_first_token("c"), ("c", None));
        assert_eq!(split_first_token("a."), ("a", Some("")));
    }
}
