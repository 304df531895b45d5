//! The header block of `HPUB`/`HMSG`: `NATS/1.0[ status[ description]]\r\n`,
//! then `Name: value\r\n` lines, then an empty line.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The version line every header block starts with.
pub const HEADER_LINE: &str = "NATS/1.0";

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// The block does not start with `NATS/1.0`.
    #[error("header block does not start with NATS/1.0")]
    MissingVersion,
    /// The block does not end with an empty line.
    #[error("header block is not terminated by an empty line")]
    Unterminated,
    /// A status code that is not three digits.
    #[error("invalid status code in header block")]
    InvalidStatus,
    /// A header line without `:`.
    #[error("header line without a colon")]
    InvalidLine,
    /// Bytes that are not UTF-8.
    #[error("header block is not valid utf-8")]
    NotUtf8,
}

/// A decoded header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Status code from the version line (e.g. `503`), if any.
    pub status: Option<u16>,
    /// Description after the status code, if any.
    pub description: Option<String>,
    /// Header fields in order; names keep their case, repeats are kept.
    pub fields: Vec<(String, String)>,
}

impl Headers {
    /// Decodes a header block.
    pub fn decode(block: &[u8]) -> Result<Self, HeaderError> {
        let text = std::str::from_utf8(block).map_err(|_| HeaderError::NotUtf8)?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or(HeaderError::Unterminated)?;
        let mut lines = body.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let rest = first
            .strip_prefix(HEADER_LINE)
            .ok_or(HeaderError::MissingVersion)?;
        let mut headers = Headers::default();
        let rest = rest.trim_start();
        if !rest.is_empty() {
            let (code, description) = match rest.split_once(' ') {
                Some((code, d)) => (code, Some(d.trim())),
                None => (rest, None),
            };
            if code.len() != 3 {
                return Err(HeaderError::InvalidStatus);
            }
            headers.status = Some(code.parse().map_err(|_| HeaderError::InvalidStatus)?);
            headers.description = description.filter(|d| !d.is_empty()).map(str::to_owned);
        }
        for line in lines {
            let (name, value) = line.split_once(':').ok_or(HeaderError::InvalidLine)?;
            headers
                .fields
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(headers)
    }

    /// The first value of `name`, matched exactly, else case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .or_else(|| {
                self.fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.as_str())
    }

    /// Encodes the block, ready to be sent as the header part of an `HMSG`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(HEADER_LINE.as_bytes());
        if let Some(status) = self.status {
            out.put_u8(b' ');
            out.put_slice(itoa::Buffer::new().format(status).as_bytes());
            if let Some(description) = &self.description {
                out.put_u8(b' ');
                out.put_slice(description.as_bytes());
            }
        }
        out.put_slice(b"\r\n");
        for (name, value) in &self.fields {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }

    /// A status-only block such as the `503` no-responders reply.
    pub fn status(code: u16, description: Option<&str>) -> Self {
        Headers {
            status: Some(code),
            description: description.map(str::to_owned),
            fields: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let raw = b"NATS/1.0\r\nNats-Msg-Id: 1\r\nA: b: c\r\n\r\n";
        let h = Headers::decode(raw).unwrap();
        assert_eq!(h.status, None);
        assert_eq!(h.get("nats-msg-id"), Some("1"));
        assert_eq!(h.get("A"), Some("b: c"));
        assert_eq!(h.encode().as_ref(), raw);
    }

    #[test]
    fn status_lines() {
        let h = Headers::decode(b"NATS/1.0 503\r\n\r\n").unwrap();
        assert_eq!(h.status, Some(503));
        assert_eq!(h.description, None);
        let h = Headers::decode(b"NATS/1.0 408 Request Timeout\r\n\r\n").unwrap();
        assert_eq!(h.status, Some(408));
        assert_eq!(h.description.as_deref(), Some("Request Timeout"));
        assert_eq!(
            Headers::status(503, None).encode().as_ref(),
            b"NATS/1.0 503\r\n\r\n"
        );
    }

    #[test]
    fn bad_blocks() {
        assert_eq!(
            Headers::decode(b"HTTP/1.1\r\n\r\n"),
            Err(HeaderError::MissingVersion)
        );
        assert_eq!(
            Headers::decode(b"NATS/1.0\r\n"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            Headers::decode(b"NATS/1.0 5x3\r\n\r\n"),
            Err(HeaderError::InvalidStatus)
        );
        assert_eq!(
            Headers::decode(b"NATS/1.0\r\nnocolon\r\n\r\n"),
            Err(HeaderError::InvalidLine)
        );
    }
}
