//! Tern's routing core: given a published subject, who gets the message.
//!
//! This crate owns three things:
//!
//! - [`Sublist`], the subject trie (like nats-server's sublist) holding every
//!   subscription, with `*` (exactly one token) and `>` (one or more trailing
//!   tokens) wildcards, grouping queue subscribers by queue name;
//! - [`MatchCache`], a bounded per-reader cache of match results, validated
//!   by the sublist's [`generation`](Sublist::generation);
//! - queue member selection ([`pick_member`]): each message goes to exactly
//!   one member of each matching queue group, spread uniformly at random.
//!
//! Subject syntax itself is `tern_protocol::subject`'s; this crate only
//! applies it.
//!
//! What it must not do: no I/O, no async, no tasks or threads, no global
//! state and no configuration. Everything here is plain data structures,
//! so it is unit-tested and property-tested directly; locking and sharing
//! (e.g. `RwLock<Sublist<Arc<Subscription>>>`) are the server's business.
//!
//! Auto-unsubscribe (`UNSUB <sid> <max>`) and echo suppression
//! (`echo: false`) are not routing concerns: the server enforces them with
//! per-subscription counters and connection ids when it delivers the
//! matches this crate returns.

/// Seeded per process (foldhash): fast on the per-message path, and not
/// predictable enough for a client to pick colliding subjects.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

mod cache;
mod error;
mod queue;
mod subject;
mod sublist;

pub use cache::MatchCache;
pub use error::RoutingError;
pub use queue::{pick_member, pick_member_with};
pub use sublist::{MatchResult, QueueGroup, Sublist, SublistStats};
