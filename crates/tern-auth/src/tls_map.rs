//! `verify_and_map`: choosing a user from a verified TLS client certificate.

/// Whether certificate `identity` names the user called `user_name`.
///
/// The server extracts the certificate's identities — as nats-server: SAN
/// e-mail addresses, SAN DNS names, SAN URIs, then the subject DN in RFC 2253
/// form (`CN=alice,OU=eng,O=Acme`) — and passes them in that order; the first
/// identity naming a user wins. A user matches an identity equal to its name;
/// DNs also match when they hold the same attributes in another order or with
/// other spacing, as nats-server compares DNs by their RDNs.
pub fn tls_identity_matches(identity: &str, user_name: &str) -> bool {
    if identity == user_name {
        return true;
    }
    match (parse_dn(identity), parse_dn(user_name)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The attribute/value pairs of a DN, attribute types upper-cased, sorted.
/// `None` if `text` is not a DN (some part lacks `=`).
fn parse_dn(text: &str) -> Option<Vec<(String, String)>> {
    let mut rdns = Vec::new();
    let mut part = String::new();
    let mut chars = text.chars();
    let mut parts = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                part.push(c);
                part.extend(chars.next());
            }
            ',' | '+' => parts.push(std::mem::take(&mut part)),
            _ => part.push(c),
        }
    }
    parts.push(part);
    for p in parts {
        let (kind, value) = p.split_once('=')?;
        let (kind, value) = (kind.trim(), value.trim());
        if kind.is_empty() {
            return None;
        }
        rdns.push((kind.to_ascii_uppercase(), value.to_owned()));
    }
    rdns.sort();
    Some(rdns)
}
