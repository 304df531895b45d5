//! The NATS client protocol, byte for byte, without I/O.
//!
//! This crate owns the wire format between clients and a Tern node: an
//! incremental [`Parser`] for client operations that never copies payloads,
//! encoders for server operations, the `INFO`/`CONNECT` JSON, the header
//! block codec, subject syntax and the exact `-ERR` texts nats-server sends.
//!
//! It must not do I/O, spawn tasks, read configuration or keep global state:
//! everything here is a pure function of its input, so it is unit-tested and
//! fuzzed directly.

mod encode;
mod error;
mod headers;
mod info;
pub mod jetstream;
mod parser;
pub mod subject;

pub use encode::{encode_err, encode_hmsg, encode_info, encode_msg, msg_frame_len, OK, PING, PONG};
pub use error::ProtocolError;
pub use headers::{HeaderError, Headers, HEADER_LINE};
pub use info::{ConnectInfo, ServerInfo};
pub use parser::{ClientOp, Parsed, Parser, ParserLimits};

/// The `-ERR` texts of nats-server, in one place so every path uses the same words.
pub mod err {
    /// An operation the parser does not know, or malformed arguments.
    pub const UNKNOWN_OPERATION: &str = "Unknown Protocol Operation";
    /// Control line longer than `max_control_line`.
    pub const MAX_CONTROL_LINE: &str = "maximum control line exceeded";
    /// Payload larger than `max_payload`.
    pub const MAX_PAYLOAD: &str = "Maximum Payload Violation";
    /// Failed authentication.
    pub const AUTHORIZATION_VIOLATION: &str = "Authorization Violation";
    /// The user's credentials (JWT) expired while connected.
    pub const AUTHENTICATION_EXPIRED: &str = "User Authentication Expired";
    /// No `CONNECT` within `auth_timeout`.
    pub const AUTHENTICATION_TIMEOUT: &str = "Authentication Timeout";
    /// Too many pings unanswered.
    pub const STALE_CONNECTION: &str = "Stale Connection";
    /// Too many client connections.
    pub const MAX_CONNECTIONS: &str = "maximum connections exceeded";
    /// Too many subscriptions on one connection.
    pub const MAX_SUBSCRIPTIONS: &str = "maximum subscriptions exceeded";
    /// A subscription subject that is not well-formed.
    pub const INVALID_SUBJECT: &str = "Invalid Subject";
    /// A publish subject with wildcards, in pedantic mode.
    pub const INVALID_PUBLISH_SUBJECT: &str = "Invalid Publish Subject";
    /// A `CONNECT` asking for a protocol level this server does not speak.
    pub const INVALID_CLIENT_PROTOCOL: &str = "invalid client protocol";
    /// A `CONNECT` asking for no-responders without headers.
    pub const NO_RESPONDERS_REQUIRES_HEADERS: &str = "no responders requires headers support";
}
