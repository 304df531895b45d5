//! This node's subscription interest, counted per (account, subject, queue),
//! and the route links that must hear when it changes.
//!
//! Peers only need to know *whether* this node has interest, so only the
//! first subscription and the last unsubscription of a key are announced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::pb::{Interest, InterestBatch};
use crate::FastMap;

/// Changes a listener may fall behind by before it is cut off; its peer then
/// reconnects and receives a fresh snapshot instead.
const MAX_LISTENER_BACKLOG: usize = 1_000_000;

type Key = (Arc<str>, Arc<str>, Option<Arc<str>>);

/// Interest entries per frame, so a frame stays far below the gRPC message
/// limit however much interest a node has.
pub(crate) const FRAME_ITEMS: usize = 10_000;

/// Counts local subscriptions and tells route links about changes.
#[derive(Default)]
pub struct InterestRegistry {
    inner: Mutex<Registry>,
    /// Changes announced so far; raised under `inner`'s lock.
    version: AtomicU64,
}

#[derive(Default)]
struct Registry {
    counts: FastMap<Key, u32>,
    listeners: Vec<Arc<InterestListener>>,
}

/// The pending interest changes for one inbound route stream.
pub(crate) struct InterestListener {
    pending: Mutex<ListenerState>,
    ready: Notify,
}

#[derive(Default)]
struct ListenerState {
    items: Vec<Interest>,
    /// The registry version once `items` are applied.
    version: u64,
    /// Set when the listener fell too far behind or was removed.
    closed: bool,
}

impl InterestListener {
    /// The next changes, waiting for some; `None` once the listener is cut
    /// off.
    pub(crate) async fn next(&self) -> Option<InterestBatch> {
        loop {
            let ready = self.ready.notified();
            {
                let mut state = self.pending.lock();
                if state.closed {
                    return None;
                }
                if !state.items.is_empty() {
                    // At most one frame's worth at a time, so no frame gets
                    // near the gRPC message limit.
                    let take = state.items.len().min(FRAME_ITEMS);
                    let rest = state.items.split_off(take);
                    let version = if rest.is_empty() { state.version } else { 0 };
                    let items = std::mem::replace(&mut state.items, rest);
                    return Some(InterestBatch {
                        snapshot: false,
                        items,
                        version,
                    });
                }
            }
            ready.await;
        }
    }

    fn push(&self, item: Interest, version: u64) {
        let mut state = self.pending.lock();
        if state.items.len() >= MAX_LISTENER_BACKLOG {
            state.closed = true;
        } else {
            state.items.push(item);
            state.version = version;
        }
        drop(state);
        self.ready.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.pending.lock().closed
    }

    pub(crate) fn close(&self) {
        let mut state = self.pending.lock();
        state.closed = true;
        state.items = Vec::new();
        drop(state);
        self.ready.notify_one();
    }
}

impl InterestRegistry {
    /// Counts one more local subscription on `subject` (in `queue`, if any).
    pub fn add(&self, account: &str, subject: &str, queue: Option<&str>) {
        self.change(account, subject, queue, true);
    }

    /// Counts one local subscription less.
    pub fn remove(&self, account: &str, subject: &str, queue: Option<&str>) {
        self.change(account, subject, queue, false);
    }

    fn change(&self, account: &str, subject: &str, queue: Option<&str>, add: bool) {
        let mut inner = self.inner.lock();
        let key: Key = (account.into(), subject.into(), queue.map(Into::into));
        let announce = if add {
            let count = inner.counts.entry(key).or_insert(0);
            *count += 1;
            *count == 1
        } else {
            match inner.counts.get_mut(&key) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    inner.counts.remove(&key);
                    true
                }
                None => false,
            }
        };
        if !announce {
            return;
        }
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        if inner.listeners.is_empty() {
            return;
        }
        let item = Interest {
            account: account.to_owned(),
            subject: subject.to_owned(),
            queue: queue.unwrap_or_default().to_owned(),
            add,
        };
        for listener in &inner.listeners {
            listener.push(item.clone(), version);
        }
        inner.listeners.retain(|l| !l.is_closed());
    }

    /// Everything this node is interested in, and a listener that gets every
    /// change made after it, with no gap and no overlap.
    pub(crate) fn subscribe(&self) -> (Vec<InterestBatch>, Arc<InterestListener>) {
        let mut inner = self.inner.lock();
        let items = inner
            .counts
            .keys()
            .map(|(account, subject, queue)| Interest {
                account: account.to_string(),
                subject: subject.to_string(),
                queue: queue.as_deref().unwrap_or_default().to_owned(),
                add: true,
            })
            .collect();
        let listener = Arc::new(InterestListener {
            pending: Mutex::new(ListenerState::default()),
            ready: Notify::new(),
        });
        inner.listeners.push(listener.clone());
        // The snapshot in frames of FRAME_ITEMS; the first one says it
        // replaces what the peer knew (and is sent even when empty).
        let version = self.version.load(Ordering::Acquire);
        let mut items: Vec<Interest> = items;
        let mut frames = Vec::new();
        loop {
            let rest = items.split_off(items.len().min(FRAME_ITEMS));
            frames.push(InterestBatch {
                snapshot: frames.is_empty(),
                items,
                version: if rest.is_empty() { version } else { 0 },
            });
            if rest.is_empty() {
                break;
            }
            items = rest;
        }
        (frames, listener)
    }

    /// Stops feeding `listener`.
    pub(crate) fn unsubscribe(&self, listener: &Arc<InterestListener>) {
        listener.close();
        self.inner
            .lock()
            .listeners
            .retain(|l| !Arc::ptr_eq(l, listener));
    }

    /// Interest changes announced so far: a message forwarded after a
    /// change carries at least this.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// How many distinct (account, subject, queue) keys have local interest.
    pub fn len(&self) -> usize {
        self.inner.lock().counts.len()
    }

    /// Whether no local interest exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn announces_only_first_and_last() {
        let registry = InterestRegistry::default();
        registry.add("$G", "a", None);
        let (snapshot, listener) = registry.subscribe();
        assert_eq!(snapshot.len(), 1);
        assert!(snapshot[0].snapshot);
        assert_eq!(snapshot[0].items.len(), 1);
        assert_eq!(snapshot[0].version, 1);
        registry.add("$G", "a", None);
        registry.add("$G", "b", Some("q"));
        registry.remove("$G", "a", None);
        registry.remove("$G", "a", None);
        registry.remove("$G", "a", None);
        let batch = listener.next().await.unwrap();
        let seen: Vec<_> = batch
            .items
            .iter()
            .map(|i| (i.subject.as_str(), i.queue.as_str(), i.add))
            .collect();
        assert_eq!(seen, vec![("b", "q", true), ("a", "", false)]);
        // Two more announced changes; repeats of a key announce nothing.
        assert_eq!(batch.version, 3);
        assert_eq!(registry.version(), 3);
        assert_eq!(registry.len(), 1);
        registry.unsubscribe(&listener);
        assert!(listener.next().await.is_none());
    }

    #[tokio::test]
    async fn big_snapshots_and_backlogs_go_in_frames() {
        let registry = InterestRegistry::default();
        for i in 0..(FRAME_ITEMS * 2 + 5) {
            registry.add("$G", &format!("s.{i}"), None);
        }
        let (snapshot, listener) = registry.subscribe();
        let sizes: Vec<_> = snapshot
            .iter()
            .map(|b| (b.snapshot, b.items.len()))
            .collect();
        assert_eq!(
            sizes,
            vec![(true, FRAME_ITEMS), (false, FRAME_ITEMS), (false, 5)]
        );
        for i in 0..(FRAME_ITEMS + 1) {
            registry.add("$G", &format!("t.{i}"), None);
        }
        let first = listener.next().await.unwrap();
        assert_eq!((first.items.len(), first.version), (FRAME_ITEMS, 0));
        let last = listener.next().await.unwrap();
        assert_eq!(last.items.len(), 1);
        assert_eq!(last.version, registry.version());
    }

    #[tokio::test]
    async fn a_listener_that_falls_too_far_behind_is_cut_off() {
        let registry = InterestRegistry::default();
        let (_, listener) = registry.subscribe();
        for i in 0..=MAX_LISTENER_BACKLOG {
            registry.add("$G", &format!("s.{i}"), None);
        }
        assert!(listener.next().await.is_none());
        assert!(registry.inner.lock().listeners.is_empty());
    }
}
