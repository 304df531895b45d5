//! Error types. They exist for logs and operators: a client is always told
//! only `-ERR 'Authorization Violation'`. No variant carries a password, a
//! token, a seed or a signature; user names and public keys are not secrets.

use thiserror::Error;

/// Why a `CONNECT` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server requires a credential the client did not send.
    #[error("missing credential: {0}")]
    MissingCredential(&'static str),
    /// The token does not match the configured one.
    #[error("token does not match")]
    BadToken,
    /// No configured user has this name.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The user exists but the password does not match.
    #[error("wrong password for user {0:?}")]
    BadPassword(String),
    /// The nkey is not among the configured nkey users.
    #[error("unknown nkey {0}")]
    UnknownNkey(String),
    /// The `sig` field is not base64 or not an Ed25519 signature.
    #[error("malformed nonce signature")]
    MalformedSignature,
    /// The `sig` field does not verify over the nonce with the client's key.
    #[error("nonce signature does not verify for {0}")]
    BadNonceSignature(String),
    /// A JWT could not be decoded or its signature does not verify.
    #[error("{kind} jwt rejected: {source}")]
    Jwt {
        /// Which JWT: `user`, `account` or `operator`.
        kind: &'static str,
        /// What is wrong with it.
        #[source]
        source: JwtError,
    },
    /// A JWT's `exp` is in the past.
    #[error("{kind} jwt expired at {exp}")]
    Expired {
        /// Which JWT: `user`, `account` or `operator`.
        kind: &'static str,
        /// Its `exp`, in Unix seconds.
        exp: i64,
    },
    /// A JWT's `nbf` is in the future.
    #[error("{kind} jwt not valid before {nbf}")]
    NotYetValid {
        /// Which JWT: `user`, `account` or `operator`.
        kind: &'static str,
        /// Its `nbf`, in Unix seconds.
        nbf: i64,
    },
    /// The resolver holds no JWT for the user's account.
    #[error("unknown account {0}")]
    UnknownAccount(String),
    /// The account JWT is not issued by a trusted operator or one of its signing keys.
    #[error("account {0} is not issued by a trusted operator")]
    UntrustedAccount(String),
    /// The user JWT is issued by neither the account nor one of its signing keys.
    #[error("user jwt issuer {issuer} is not account {account} nor one of its signing keys")]
    UntrustedUserIssuer {
        /// The user JWT's `iss`.
        issuer: String,
        /// The account the user claims to belong to.
        account: String,
    },
    /// A user issued by a scoped signing key carries permissions of its own.
    #[error("user {0} issued by a scoped signing key must not carry its own permissions")]
    ScopedUserWithPermissions(String),
    /// The account revoked this user.
    #[error("user {0} is revoked")]
    Revoked(String),
    /// The user JWT is a bearer token but the account disallows bearer tokens.
    #[error("account {0} does not allow bearer tokens")]
    BearerNotAllowed(String),
    /// With `verify_and_map`, no certificate identity names a configured user.
    #[error("no tls certificate identity maps to a user")]
    NoTlsUser,
}

/// What is wrong with a JWT.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON in the expected shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The header's `alg` is not `ed25519-nkey`.
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    /// The signature does not verify with the issuer's key.
    #[error("signature does not verify")]
    BadSignature,
    /// `nats.type` is not the expected claim type.
    #[error("claim type {found:?}, expected {expected:?}")]
    WrongType {
        /// The type the caller asked for.
        expected: &'static str,
        /// The type found in the JWT.
        found: String,
    },
    /// A field that must hold a public nkey of a given kind does not.
    #[error("{field} {key:?} is not an {expected} public key")]
    BadKey {
        /// The claim field, e.g. `iss`.
        field: &'static str,
        /// Its value (a public key, never a seed).
        key: String,
        /// The nkey kind it must be.
        expected: &'static str,
    },
}

/// Why an [`AuthConfig`](crate::AuthConfig) cannot become an
/// [`Authenticator`](crate::Authenticator).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An nkey user's public key is not a valid user nkey.
    #[error("nkey {0:?} is not a valid user public key")]
    InvalidNkey(String),
    /// A bcrypt hash cannot be parsed.
    #[error("bcrypt hash for {0:?} is malformed")]
    InvalidBcrypt(String),
    /// Two users share a name, or two nkey users a key.
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
    /// Decentralized mode needs at least one operator JWT.
    #[error("no trusted operator jwt configured")]
    NoOperator,
    /// An operator JWT cannot be decoded or verified.
    #[error("operator jwt: {0}")]
    Operator(#[source] JwtError),
    /// An account JWT in the resolver cannot be decoded or verified.
    #[error("account jwt for {key}: {source}")]
    Account {
        /// The resolver key it was stored under.
        key: String,
        /// What is wrong with it.
        #[source]
        source: JwtError,
    },
    /// An account JWT is stored under a key other than its `sub`.
    #[error("account jwt stored under {key} has subject {subject}")]
    AccountKeyMismatch {
        /// The resolver key.
        key: String,
        /// The JWT's `sub`.
        subject: String,
    },
}
