//! Authentication and authorization for Tern, with nats-server's semantics.
//!
//! Owns: checking the credentials of a `CONNECT` — token, user and password
//! (plain or bcrypt), nkey signature over the `INFO` nonce, decentralized JWTs
//! (operator → account → user, memory resolver), TLS certificate identity
//! mapping — and the per-user publish/subscribe permissions and
//! `allow_responses` that follow. Also reads and writes `.creds` files.
//!
//! Must not: do I/O, spawn tasks, read the clock (callers pass `now`), parse
//! the configuration file (the server maps its config into [`AuthConfig`]), or
//! put a password, token, seed or signature in an error or `Debug` output.
//! Errors are for logs: clients only ever see `-ERR 'Authorization Violation'`.
//!
//! ```
//! use tern_auth::{AuthConfig, Authenticator, Credentials, Password};
//!
//! let auth = Authenticator::new(AuthConfig::Token(Password::from_config("s3cr3t"))).unwrap();
//! let creds = Credentials { auth_token: Some("s3cr3t".into()), ..Default::default() };
//! let client = auth.authenticate(&creds, b"nonce", &[], 0).unwrap();
//! assert_eq!(client.account, tern_auth::DEFAULT_ACCOUNT);
//! ```

mod authenticator;
mod config;
mod credentials;
mod error;
mod jwt;
mod permissions;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tls_map;

pub use authenticator::{Authenticated, Authenticator};
pub use config::{
    AuthConfig, MemoryResolver, NkeyUser, OperatorConfig, Password, User, UsersConfig,
    DEFAULT_ACCOUNT,
};
pub use credentials::{format_creds, parse_creds, Credentials, CredsError};
pub use error::{AuthError, ConfigError, JwtError};
pub use permissions::{
    is_subset, Permissions, ResponsePermission, ResponseTracker, SubjectPermission,
    DEFAULT_RESPONSE_EXPIRES, DEFAULT_RESPONSE_MAX_MSGS,
};
pub use tls_map::tls_identity_matches;

/// The nkeys crate this one verifies with, so callers (and tests) use the same version.
pub use nkeys;
