//! Store factories shared by the test binaries.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use bytes::Bytes;
use tempfile::TempDir;
use tern_storage::{Append, MemoryStore, Storage, StreamLimits, StreamStore};

/// A store plus whatever must outlive it.
pub struct Fixture {
    pub store: Arc<dyn StreamStore>,
    pub storage: Option<Storage>,
    pub dir: Option<TempDir>,
}

impl std::ops::Deref for Fixture {
    type Target = dyn StreamStore;
    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// Anything the helpers can read a store from.
pub trait AsStore {
    fn store(&self) -> &dyn StreamStore;
}

impl AsStore for Fixture {
    fn store(&self) -> &dyn StreamStore {
        &*self.store
    }
}

impl AsStore for dyn StreamStore {
    fn store(&self) -> &dyn StreamStore {
        self
    }
}

impl AsStore for Arc<dyn StreamStore> {
    fn store(&self) -> &dyn StreamStore {
        &**self
    }
}

pub type Factory = fn(StreamLimits) -> Fixture;

pub fn memory(limits: StreamLimits) -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new("S", limits)),
        storage: None,
        dir: None,
    }
}

pub fn sled(limits: StreamLimits) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let store = storage.create_stream("S", limits).expect("create stream");
    Fixture {
        store,
        storage: Some(storage),
        dir: Some(dir),
    }
}

/// A fresh empty store of the same kind as `f` (for restore targets).
pub fn sibling(f: &Fixture, name: &str) -> Arc<dyn StreamStore> {
    match &f.storage {
        Some(storage) => storage
            .create_stream(name, StreamLimits::default())
            .expect("create sibling"),
        None => Arc::new(MemoryStore::new(name, StreamLimits::default())),
    }
}

pub fn msg(subject: &'static str, payload: &'static str, ts: u64) -> Append {
    Append::new(
        Bytes::from_static(subject.as_bytes()),
        Bytes::from_static(payload.as_bytes()),
        ts,
    )
}

/// Appends `subject`/`payload` at timestamp `seq * 10` style callers choose.
pub fn put(
    store: &(impl AsStore + ?Sized),
    subject: &'static str,
    payload: &'static str,
    ts: u64,
) -> u64 {
    store
        .store()
        .append(msg(subject, payload, ts))
        .expect("append")
        .0
}

pub fn subjects(store: &(impl AsStore + ?Sized), filter: &str) -> Vec<(String, u64)> {
    store
        .store()
        .subjects_state(filter.as_bytes())
        .expect("subjects_state")
        .into_iter()
        .map(|(s, n)| (String::from_utf8(s.to_vec()).expect("utf8"), n))
        .collect()
}

/// Every stored sequence, read one by one.
pub fn seqs(store: &(impl AsStore + ?Sized)) -> Vec<u64> {
    let store = store.store();
    let st = store.state().expect("state");
    (st.first_seq..=st.last_seq)
        .filter(|s| store.get(*s).is_ok())
        .collect()
}
