//! An account: one subject space with its own subscriptions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tern_routing::{MatchResult, RoutingError, Sublist};

use crate::client::SubRef;

/// The default account's name, as in nats-server.
pub(crate) const GLOBAL_ACCOUNT: &str = "$G";

/// A subject space. Messages never cross accounts.
pub(crate) struct Account {
    pub(crate) name: String,
    sublist: RwLock<Sublist<SubRef>>,
    /// Mirrors the sublist's generation so readers can validate their match
    /// caches without taking the lock on every message.
    generation: AtomicU64,
}

impl Account {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            sublist: RwLock::new(Sublist::new()),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self, sub: &SubRef) -> Result<(), RoutingError> {
        let mut sublist = self.sublist.write();
        sublist.insert(&sub.subject, sub.queue.as_deref(), sub.clone())?;
        self.generation
            .store(sublist.generation(), Ordering::Release);
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, sub: &SubRef) -> bool {
        let mut sublist = self.sublist.write();
        let removed = sublist.remove(&sub.subject, sub.queue.as_deref(), sub);
        self.generation
            .store(sublist.generation(), Ordering::Release);
        removed
    }

    /// Matches under the read lock; returns the result and the generation it
    /// belongs to.
    pub(crate) fn match_subject(&self, subject: &str) -> (Arc<MatchResult<SubRef>>, u64) {
        let sublist = self.sublist.read();
        (
            Arc::new(sublist.match_subject(subject)),
            sublist.generation(),
        )
    }

    pub(crate) fn with_sublist<R>(&self, f: impl FnOnce(&Sublist<SubRef>) -> R) -> R {
        f(&self.sublist.read())
    }
}
