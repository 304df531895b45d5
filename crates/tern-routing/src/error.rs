//! The routing crate's error type.

/// Why the [`Sublist`](crate::Sublist) refused a subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// The subscription subject is empty, has an empty token, contains
    /// whitespace, or has `>` somewhere other than the last token.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// The queue group name is empty or contains whitespace.
    #[error("invalid queue name {0:?}")]
    InvalidQueue(String),
}
