//! The one error type of the crate.

/// Why a storage operation failed.
///
/// The limit variants are the discard-`new` rejections; the JetStream layer
/// maps each to its nats-server error code. Every variant except
/// [`StorageError::Backend`] and [`StorageError::BatchAborted`] leaves the
/// stream exactly as it was before the failing operation (a
/// [`StorageError::Corrupt`] met in the middle of an expiry keeps what was
/// expired before it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// No message with that sequence (never stored, deleted or purged).
    #[error("no message found")]
    NotFound,
    /// Discard `new`: the stream holds `max_msgs` messages.
    #[error("maximum messages exceeded")]
    MaximumMessagesExceeded,
    /// Discard `new`: the message would take the stream past `max_bytes`.
    #[error("maximum bytes exceeded")]
    MaximumBytesExceeded,
    /// Headers plus payload are larger than `max_msg_size`.
    #[error("message size exceeds maximum allowed")]
    MaxMessageSizeExceeded,
    /// Discard `new` per subject: the subject holds `max_msgs_per_subject` messages.
    #[error("maximum messages per subject exceeded")]
    MaximumMessagesPerSubjectExceeded,
    /// An append expected another last sequence of the stream.
    #[error("wrong last sequence: {current}")]
    WrongLastSequence {
        /// The stream's last sequence when the append was applied.
        current: u64,
    },
    /// An append expected another last sequence for its subject.
    #[error("wrong last sequence: {current}")]
    WrongLastSubjectSequence {
        /// The subject's last sequence (0 for none) when the append was applied.
        current: u64,
    },
    /// The subject is empty, has a wildcard, whitespace or a NUL byte.
    #[error("invalid subject")]
    InvalidSubject,
    /// A request whose fields contradict each other.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// No stream by that name in the storage.
    #[error("stream not found")]
    StreamNotFound,
    /// A stream by that name already exists.
    #[error("stream name already in use")]
    StreamExists,
    /// The stream was deleted while this handle was held.
    #[error("stream was deleted")]
    StreamDeleted,
    /// A stored message failed its checksum or could not be decoded. It is
    /// never served as data.
    #[error("corrupt record in stream {stream:?} at sequence {seq}")]
    Corrupt {
        /// Stream name.
        stream: String,
        /// Sequence of the bad record.
        seq: u64,
    },
    /// A stream or consumer metadata record failed its checksum.
    #[error("corrupt {what} record in stream {stream:?}")]
    CorruptMeta {
        /// Stream name.
        stream: String,
        /// Which record: `limits`, `state`, `config`, `consumer`, ...
        what: &'static str,
    },
    /// A snapshot that is truncated, has a bad checksum or an unknown record.
    #[error("corrupt snapshot: {0}")]
    CorruptSnapshot(&'static str),
    /// The batch was not applied because another operation in it failed
    /// (a [`StorageError::Backend`] error, or a damaged record it had to
    /// read).
    #[error("batch aborted")]
    BatchAborted,
    /// The disk or the embedded database failed. Nothing of the batch is
    /// known to be durable.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StorageError {
    /// Whether the error comes from the disk or database rather than from the
    /// request or the data; such errors abort a whole batch.
    pub fn is_backend(&self) -> bool {
        matches!(self, StorageError::Backend(_))
    }
}

impl From<sled::Error> for StorageError {
    fn from(err: sled::Error) -> Self {
        StorageError::Backend(err.to_string())
    }
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        StorageError::Backend(err.to_string())
    }
}
