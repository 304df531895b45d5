//! Protocol errors and the exact `-ERR` texts nats-server sends for them.

use thiserror::Error;

/// A violation found while parsing a client's bytes.
///
/// Every variant is final for the connection, as in nats-server: the server
/// sends [`ProtocolError::err_text`] (if any) and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// An operation name nobody knows, or trailing junk after `PING`/`PONG`.
    #[error("unknown protocol operation")]
    UnknownOperation,
    /// A control line longer than `max_control_line`.
    #[error("maximum control line exceeded")]
    MaxControlLine,
    /// A declared payload larger than `max_payload`.
    #[error("maximum payload violation")]
    MaxPayload,
    /// `PUB` with a missing or malformed argument.
    #[error("malformed PUB arguments")]
    InvalidPubArgs,
    /// `HPUB` with a missing or malformed argument, or header size > total size.
    #[error("malformed HPUB arguments")]
    InvalidHPubArgs,
    /// `SUB` with a missing or extra argument.
    #[error("malformed SUB arguments")]
    InvalidSubArgs,
    /// `UNSUB` with a missing or malformed argument.
    #[error("malformed UNSUB arguments")]
    InvalidUnsubArgs,
    /// A payload not followed by CRLF where its declared size says it ends.
    #[error("payload longer than declared")]
    PayloadNotTerminated,
}

impl ProtocolError {
    /// The text nats-server puts in `-ERR '...'` for this violation, if it sends one.
    pub fn err_text(self) -> Option<&'static str> {
        match self {
            ProtocolError::MaxControlLine => Some(crate::err::MAX_CONTROL_LINE),
            ProtocolError::MaxPayload => Some(crate::err::MAX_PAYLOAD),
            ProtocolError::UnknownOperation | ProtocolError::PayloadNotTerminated => {
                Some(crate::err::UNKNOWN_OPERATION)
            }
            // nats-server closes on malformed arguments without a word.
            ProtocolError::InvalidPubArgs
            | ProtocolError::InvalidHPubArgs
            | ProtocolError::InvalidSubArgs
            | ProtocolError::InvalidUnsubArgs => None,
        }
    }
}
