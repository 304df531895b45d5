//! What the server maps its configuration into. Parsing the config file is
//! the server's job; these types only say what each method needs.

use std::collections::BTreeMap;
use std::fmt;

use subtle::ConstantTimeEq;

use crate::permissions::Permissions;

/// The account clients land in when no account is configured for them.
pub const DEFAULT_ACCOUNT: &str = "$G";

/// How clients must authenticate.
#[derive(Debug, Clone, Default)]
pub enum AuthConfig {
    /// No authentication: everyone is admitted to [`DEFAULT_ACCOUNT`].
    #[default]
    None,
    /// One shared token (`authorization { token }`), plain or bcrypt.
    Token(Password),
    /// Named users with passwords, nkey users, or both; optionally users
    /// mapped from TLS client certificates instead of passwords.
    Users(UsersConfig),
    /// Decentralized JWT authentication: operator → account → user JWTs.
    Decentralized(OperatorConfig),
}

/// Users and nkey users (`authorization { users }`, `accounts { … users }`).
#[derive(Debug, Clone, Default)]
pub struct UsersConfig {
    /// Users authenticating by name and password (or by certificate, with `tls_map`).
    pub users: Vec<User>,
    /// Users authenticating by signing the nonce with an nkey.
    pub nkeys: Vec<NkeyUser>,
    /// `tls { verify_and_map: true }`: a user is chosen by a TLS client
    /// certificate identity equal to its name, and no password is checked.
    pub tls_map: bool,
}

/// A user with a name and password.
#[derive(Debug, Clone)]
pub struct User {
    /// The user name (with `tls_map`, a certificate identity: e-mail, DNS name or DN).
    pub name: String,
    /// The password; unused with `tls_map`.
    pub password: Password,
    /// `None` allows everything.
    pub permissions: Option<Permissions>,
    /// The account the user belongs to.
    pub account: String,
}

/// A user identified by a public user nkey (`U…`).
#[derive(Debug, Clone)]
pub struct NkeyUser {
    /// The public nkey.
    pub public_key: String,
    /// `None` allows everything.
    pub permissions: Option<Permissions>,
    /// The account the user belongs to.
    pub account: String,
}

/// A configured password or token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Compared in constant time.
    Plain(String),
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    Bcrypt(String),
}

impl Password {
    /// Reads a configured value as nats-server does: a bcrypt hash if it looks
    /// like one (`$2[abxy]$NN$…`), plain text otherwise.
    pub fn from_config(value: impl Into<String>) -> Self {
        let value = value.into();
        if looks_like_bcrypt(&value) {
            Password::Bcrypt(value)
        } else {
            Password::Plain(value)
        }
    }

    /// Whether `given` matches. Plain text is compared in constant time
    /// (the length may leak, as with Go's `subtle.ConstantTimeCompare`).
    pub fn verify(&self, given: &str) -> bool {
        match self {
            Password::Plain(expected) => constant_time_eq(expected.as_bytes(), given.as_bytes()),
            Password::Bcrypt(hash) => bcrypt::verify(given, hash).unwrap_or(false),
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(<redacted>)"),
            Password::Bcrypt(_) => f.write_str("Bcrypt(<redacted>)"),
        }
    }
}

fn looks_like_bcrypt(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() > 7
        && bytes.starts_with(b"$2")
        && matches!(bytes[2], b'a' | b'b' | b'x' | b'y')
        && bytes[3] == b'$'
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
}

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    expected.ct_eq(given).into()
}

/// Decentralized JWT authentication (`operator`, `resolver: MEMORY`,
/// `resolver_preload`).
#[derive(Debug, Clone, Default)]
pub struct OperatorConfig {
    /// Trusted operator JWTs (self-signed).
    pub operators: Vec<String>,
    /// The account JWTs.
    pub resolver: MemoryResolver,
}

/// A memory resolver: account public key → account JWT.
#[derive(Debug, Clone, Default)]
pub struct MemoryResolver {
    accounts: BTreeMap<String, String>,
}

impl MemoryResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `jwt` for `account` (a public account nkey), replacing any other.
    pub fn insert(&mut self, account: impl Into<String>, jwt: impl Into<String>) {
        self.accounts.insert(account.into(), jwt.into());
    }

    /// The stored account JWTs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.accounts.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MemoryResolver {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut resolver = Self::new();
        for (k, v) in iter {
            resolver.insert(k, v);
        }
        resolver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passwords_use_the_constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // `Password::verify` agrees with it on every case above.
        for (a, b) in [("secret", "secret"), ("secret", "secreT"), ("", "x")] {
            assert_eq!(
                Password::Plain(a.into()).verify(b),
                constant_time_eq(a.as_bytes(), b.as_bytes())
            );
        }
    }

    #[test]
    fn bcrypt_detection_follows_nats_server() {
        assert!(looks_like_bcrypt("$2a$11$abc"));
        assert!(looks_like_bcrypt("$2y$04$abc"));
        assert!(!looks_like_bcrypt("$2a$1$abc"));
        assert!(!looks_like_bcrypt("$2z$11$abc"));
        assert!(!looks_like_bcrypt("$2a$11"));
    }
}
