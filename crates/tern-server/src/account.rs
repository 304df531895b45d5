//! An account: one subject space with its own subscriptions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tern_cluster::{InterestRegistry, Peer};
use tern_routing::{MatchResult, RoutingError, Sublist};

use crate::client::SubRef;

/// A peer node as the value of its interest in the remote sublist; compared
/// by identity.
#[derive(Clone, Debug)]
pub(crate) struct PeerRef(pub(crate) Arc<Peer>);

impl PartialEq for PeerRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The default account's name, as in nats-server.
pub(crate) const GLOBAL_ACCOUNT: &str = "$G";

/// A subject space. Messages never cross accounts.
pub(crate) struct Account {
    pub(crate) name: String,
    sublist: RwLock<Sublist<SubRef>>,
    /// Mirrors the sublist's generation so readers can validate their match
    /// caches without taking the lock on every message.
    generation: AtomicU64,
    /// Where local interest is announced to the cluster, when clustered.
    interest: Option<Arc<InterestRegistry>>,
    /// Interest of peer nodes, by peer.
    remote: RwLock<Sublist<PeerRef>>,
    remote_generation: AtomicU64,
    /// Entries in `remote`, so an account without remote interest skips the
    /// second match entirely.
    remote_entries: AtomicUsize,
    /// Exports and imports linking this account to others.
    pub(crate) links: crate::imports::Links,
}

impl Account {
    pub(crate) fn new(name: &str, interest: Option<Arc<InterestRegistry>>) -> Self {
        Self {
            name: name.to_owned(),
            sublist: RwLock::new(Sublist::new()),
            generation: AtomicU64::new(0),
            interest,
            remote: RwLock::new(Sublist::new()),
            remote_generation: AtomicU64::new(0),
            remote_entries: AtomicUsize::new(0),
            links: crate::imports::Links::default(),
        }
    }

    /// Tells the cluster about a local subscription coming or going. The
    /// server's own (JetStream) subscriptions stay on this node: each node
    /// answers its own JetStream API until streams are replicated.
    fn announce(&self, sub: &SubRef, add: bool) {
        if let Some(interest) = &self.interest {
            if sub.client.is_internal() {
                return;
            }
            if add {
                interest.add(&self.name, &sub.subject, sub.queue.as_deref());
            } else {
                interest.remove(&self.name, &sub.subject, sub.queue.as_deref());
            }
        }
    }

    /// Whether any peer node has interest in this account.
    pub(crate) fn has_remote(&self) -> bool {
        self.remote_entries.load(Ordering::Acquire) > 0
    }

    pub(crate) fn remote_generation(&self) -> u64 {
        self.remote_generation.load(Ordering::Acquire)
    }

    /// Records that `peer` gained or lost interest in `subject` (`queue`).
    /// Invalid subjects from a peer are ignored.
    pub(crate) fn remote_interest(
        &self,
        peer: &Arc<Peer>,
        subject: &str,
        queue: Option<&str>,
        add: bool,
    ) {
        let mut remote = self.remote.write();
        let value = PeerRef(peer.clone());
        let changed = if add {
            remote.insert(subject, queue, value).is_ok()
        } else {
            remote.remove(subject, queue, &value)
        };
        if changed {
            self.remote_entries.store(remote.count(), Ordering::Release);
            self.remote_generation
                .store(remote.generation(), Ordering::Release);
        }
    }

    /// Forgets every interest of `peer`.
    pub(crate) fn remove_peer(&self, peer: &Arc<Peer>) {
        let mut remote = self.remote.write();
        if remote.is_empty() {
            return;
        }
        let value = PeerRef(peer.clone());
        for (subject, queue, entry) in remote.subjects() {
            if entry == value {
                remote.remove(&subject, queue.as_deref(), &value);
            }
        }
        self.remote_entries.store(remote.count(), Ordering::Release);
        self.remote_generation
            .store(remote.generation(), Ordering::Release);
    }

    /// Matches peers' interest under the read lock.
    pub(crate) fn match_remote(&self, subject: &str) -> (Arc<MatchResult<PeerRef>>, u64) {
        let remote = self.remote.read();
        (Arc::new(remote.match_subject(subject)), remote.generation())
    }

    /// Peers' interest entries: (subject, queue, peer node id).
    pub(crate) fn remote_subjects(&self) -> Vec<(String, Option<Arc<str>>, String)> {
        self.remote
            .read()
            .subjects()
            .into_iter()
            .map(|(s, q, p)| (s, q, p.0.node_id().to_owned()))
            .collect()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn subscribe(&self, sub: &SubRef) -> Result<(), RoutingError> {
        let mut sublist = self.sublist.write();
        sublist.insert(&sub.subject, sub.queue.as_deref(), sub.clone())?;
        self.generation
            .store(sublist.generation(), Ordering::Release);
        self.announce(sub, true);
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, sub: &SubRef) -> bool {
        let mut sublist = self.sublist.write();
        let removed = sublist.remove(&sub.subject, sub.queue.as_deref(), sub);
        self.generation
            .store(sublist.generation(), Ordering::Release);
        if removed {
            self.announce(sub, false);
        }
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
