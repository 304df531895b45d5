//! Subject transforms, as streams' `republish` uses them: a source pattern
//! (`*` and a trailing `>`) and a destination made of literal tokens,
//! references to the source's `*` tokens (`{{wildcard(n)}}` or `$n`,
//! counted from 1) and a trailing `>` for what the source's `>` matched.

/// One token of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Literal(String),
    /// The n-th (from 0) `*` token of the source.
    Wildcard(usize),
    /// What the source's trailing `>` matched.
    Rest,
}

/// A checked source → destination mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transform {
    src: Vec<String>,
    dest: Vec<Dest>,
}

impl Transform {
    /// The mapping, or None when it is not valid: an invalid subject on
    /// either side, a `*` in the destination, a reference to a `*` the
    /// source does not have, or a `>` the source does not end with.
    pub(crate) fn new(src: &str, dest: &str) -> Option<Transform> {
        let src: Vec<String> = src.split('.').map(str::to_owned).collect();
        if src.iter().any(|t| t.is_empty() || has_space_or_control(t))
            || src[..src.len() - 1].iter().any(|t| t == ">")
            || src.iter().any(|t| t.len() > 1 && t.contains(['*', '>']))
        {
            return None;
        }
        let stars = src.iter().filter(|t| *t == "*").count();
        let src_rest = src.last().is_some_and(|t| t == ">");
        let tokens: Vec<&str> = dest.split('.').collect();
        let mut out = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            if token.is_empty() || (has_space_or_control(token) && reference(token).is_none()) {
                return None;
            }
            if *token == ">" {
                if i + 1 != tokens.len() || !src_rest {
                    return None;
                }
                out.push(Dest::Rest);
            } else if token.contains('*') || token.contains('>') {
                return None;
            } else if let Some(n) = reference(token) {
                if n == 0 || n > stars {
                    return None;
                }
                out.push(Dest::Wildcard(n - 1));
            } else if token.contains("{{") || token.starts_with('$') {
                return None;
            } else {
                out.push(Dest::Literal((*token).to_owned()));
            }
        }
        Some(Transform { src, dest: out })
    }

    /// The destination for `subject`, or None when the source does not
    /// match it.
    pub(crate) fn apply(&self, subject: &str) -> Option<String> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut stars = Vec::new();
        let mut rest: &[&str] = &[];
        for (i, pattern) in self.src.iter().enumerate() {
            match pattern.as_str() {
                ">" => {
                    if tokens.len() <= i {
                        return None;
                    }
                    rest = &tokens[i..];
                    break;
                }
                "*" => stars.push(*tokens.get(i)?),
                literal => {
                    if tokens.get(i) != Some(&literal) {
                        return None;
                    }
                }
            }
        }
        if rest.is_empty() && tokens.len() != self.src.len() {
            return None;
        }
        let mut out: Vec<&str> = Vec::with_capacity(self.dest.len() + rest.len());
        for token in &self.dest {
            match token {
                Dest::Literal(text) => out.push(text),
                Dest::Wildcard(n) => out.push(stars.get(*n)?),
                Dest::Rest => out.extend_from_slice(rest),
            }
        }
        Some(out.join("."))
    }
}

/// Whether a subject token holds a space or a control character (CR and LF
/// would let a destination forge protocol lines).
fn has_space_or_control(token: &str) -> bool {
    token.bytes().any(|b| b <= b' ' || b == 0x7f)
}

/// `{{wildcard(n)}}` (spaces allowed inside the braces) or `$n`: n.
fn reference(token: &str) -> Option<usize> {
    if let Some(n) = token.strip_prefix('$') {
        return n.parse().ok();
    }
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let args = inner.strip_prefix("wildcard")?.trim_start();
    args.strip_prefix('(')?
        .strip_suffix(')')?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str, dest: &str, subject: &str) -> Option<String> {
        Transform::new(src, dest).expect("valid").apply(subject)
    }

    #[test]
    fn maps_as_nats_server_republishes() {
        assert_eq!(map("s.>", "r.>", "s.a.b").as_deref(), Some("r.a.b"));
        assert_eq!(map(">", "all.>", "s.a").as_deref(), Some("all.s.a"));
        assert_eq!(
            map("s.*.*", "r.{{wildcard(2)}}.{{wildcard(1)}}", "s.a.b").as_deref(),
            Some("r.b.a")
        );
        assert_eq!(map("s.*", "r.$1", "s.a").as_deref(), Some("r.a"));
        assert_eq!(
            map("s.*.>", "r.{{ wildcard(1) }}.>", "s.a.b.c").as_deref(),
            Some("r.a.b.c")
        );
        assert_eq!(map("s.*", "r.x", "s.a").as_deref(), Some("r.x"));
        // Not matched: nothing.
        assert_eq!(map("s.*.>", "r.>", "s.a"), None);
        assert_eq!(map("s.*", "r.$1", "s.a.b"), None);
        assert_eq!(map("s.x", "r", "s.y"), None);
    }

    #[test]
    fn refuses_what_nats_server_refuses() {
        for (src, dest) in [
            ("s.*", "r.{{wildcard(3)}}"),
            ("s.*", "r.>"),
            ("s.*", "r.*"),
            ("s..x", "r.x"),
            ("s.*", ""),
            ("s.>", "r.{{ wildcard(1) }}"),
            ("s.>.x", "r.x"),
            ("s.*", "r.$0"),
            ("s.*", "r.{{partition(3)}}"),
            ("s.*", "r.x\r\nMSG evil 1 2"),
            ("s.*", "r.\u{7f}"),
            ("s\n.*", "r.x"),
        ] {
            assert_eq!(Transform::new(src, dest), None, "{src} -> {dest}");
        }
    }
}
