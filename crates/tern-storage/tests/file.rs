//! File storage only: persistence across reopen, corruption, stream
//! lifecycle, cleanup after purges.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{put, seqs, subjects};
use tern_storage::{
    ConsumerState, DiscardPolicy, PurgeRequest, Storage, StorageError, StorageOptions,
    StreamLimits, StreamStore, SyncPolicy,
};

const TAG_NAME: u8 = 0x01;
const TAG_MSG: u8 = 0x03;
const TAG_SUBJ: u8 = 0x04;

/// Opens the database directly (the storage must be closed) and runs `f`
/// on the streams tree.
fn raw<R>(dir: &Path, f: impl FnOnce(&sled::Tree) -> R) -> R {
    // sled's background threads may hold the lock briefly after a drop.
    let mut tries = 0;
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if tries < 200 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("raw open: {e}"),
        }
    };
    let tree = db.open_tree("streams").expect("tree");
    let r = f(&tree);
    db.flush().expect("flush");
    r
}

/// Where the blocks live when a sled value is a pointer into the message
/// log (0xFF: the whole block; 0xFE: the block less the messages its value
/// lists; 0xFD: several blocks): (segment file, offset, length) of each.
fn pointer(dir: &Path, value: &[u8]) -> Option<Vec<(std::path::PathBuf, u64, usize)>> {
    let place = |at: &[u8]| {
        let seg = u32::from_be_bytes(at[0..4].try_into().unwrap());
        let off = u64::from_be_bytes(at[4..12].try_into().unwrap());
        let len = u32::from_be_bytes(at[12..16].try_into().unwrap());
        (
            dir.join("log").join(format!("{seg:010}.seg")),
            off,
            len as usize,
        )
    };
    match value.first()? {
        0xff if value.len() == 17 => Some(vec![place(&value[1..])]),
        0xfe if value.len() > 21 => Some(vec![place(&value[1..])]),
        0xfd => {
            let n = usize::from(value[1]);
            Some((0..n).map(|i| place(&value[2 + i * 24 + 4..])).collect())
        }
        _ => None,
    }
}

/// The bytes of the stored block(s) of a key: its sled value, or what it
/// points to (the blocks one after the other).
fn block_bytes(dir: &Path, value: &[u8]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    match pointer(dir, value) {
        Some(places) => {
            let mut out = Vec::new();
            for (path, off, len) in places {
                let mut buf = vec![0; len];
                std::fs::File::open(path)
                    .unwrap()
                    .read_exact_at(&mut buf, off)
                    .unwrap();
                out.extend_from_slice(&buf);
            }
            out
        }
        None => value.to_vec(),
    }
}

/// Stores a key's block bytes back where they live (the same length).
fn put_block(dir: &Path, tree: &sled::Tree, key: &[u8], bytes: Vec<u8>) {
    use std::os::unix::fs::FileExt;
    let value = tree.get(key).unwrap().unwrap();
    match pointer(dir, &value) {
        Some(places) => {
            assert_eq!(places.iter().map(|p| p.2).sum::<usize>(), bytes.len());
            let mut rest = &bytes[..];
            for (path, off, len) in places {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all_at(&rest[..len], off).unwrap();
                f.sync_all().unwrap();
                rest = &rest[len..];
            }
        }
        None => {
            tree.insert(key, bytes).unwrap();
        }
    }
}

fn count_tag(tree: &sled::Tree, tag: u8) -> usize {
    tree.scan_prefix([tag]).count()
}

/// The key whose block(s) may hold `seq`: the last at or before it.
fn message_key(tree: &sled::Tree, seq: u64) -> sled::IVec {
    tree.scan_prefix([TAG_MSG])
        .map(|item| item.expect("scan").0)
        .filter(|k| k[k.len() - 8..] <= seq.to_be_bytes()[..])
        .last()
        .expect("message key")
}

struct Snapshot {
    state: tern_storage::StreamState,
    msgs: Vec<Option<tern_storage::StoredMessage>>,
    consumers: std::collections::BTreeMap<String, tern_storage::StoredConsumer>,
    config: Option<Bytes>,
    limits: StreamLimits,
    deleted: Vec<u64>,
    subjects: Vec<(String, u64)>,
}

fn capture(s: &Arc<dyn StreamStore>) -> Snapshot {
    let state = s.state().unwrap();
    Snapshot {
        msgs: (0..=state.last_seq + 1).map(|q| s.get(q).ok()).collect(),
        state,
        consumers: s.load_consumers().unwrap(),
        config: s.stream_config().unwrap(),
        limits: s.limits(),
        deleted: s.deleted_seqs().unwrap(),
        subjects: subjects(s, ">"),
    }
}

fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.state, b.state);
    assert_eq!(a.msgs, b.msgs);
    assert_eq!(a.consumers, b.consumers);
    assert_eq!(a.config, b.config);
    assert_eq!(a.limits, b.limits);
    assert_eq!(a.deleted, b.deleted);
    assert_eq!(a.subjects, b.subjects);
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StreamLimits {
        max_msgs: Some(1000),
        max_msgs_per_subject: Some(3),
        max_age: Some(Duration::from_secs(60)),
        discard: DiscardPolicy::New,
        ..StreamLimits::default()
    };
    let (before_s, before_t) = {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", limits.clone()).unwrap();
        let t = storage.create_stream("T", StreamLimits::default()).unwrap();
        for i in 0..40u64 {
            let subject = Bytes::from(format!("orders.{}", i % 9));
            let payload = Bytes::from(format!("payload-{i}"));
            s.append(tern_storage::Append::new(subject, payload, 1_000 + i))
                .unwrap();
        }
        put(&t, "t.one", "x", 5);
        put(&t, "t.two", "y", 6);
        s.delete_msg(38, false).unwrap();
        s.purge(PurgeRequest {
            filter: Some(Bytes::from_static(b"orders.1")),
            ..PurgeRequest::default()
        })
        .unwrap();
        s.save_stream_config(b"{\"name\":\"S\"}").unwrap();
        let mut cs = ConsumerState {
            delivered_consumer_seq: 5,
            delivered_stream_seq: 30,
            ack_floor_consumer_seq: 4,
            ack_floor_stream_seq: 29,
            ..ConsumerState::default()
        };
        cs.pending.insert(30, (5, 123));
        cs.redelivered.insert(30, 1);
        s.save_consumer("durable", &cs).unwrap();
        s.save_consumer_config("durable", b"cfg").unwrap();
        t.purge(PurgeRequest::default()).unwrap();
        (capture(&s), capture(&t))
    };
    let storage = Storage::open(dir.path()).unwrap();
    assert_eq!(storage.list_streams().unwrap(), vec!["S", "T"]);
    let s = storage.open_stream("S").unwrap();
    let t = storage.open_stream("T").unwrap();
    assert_same(&capture(&s), &before_s);
    assert_same(&capture(&t), &before_t);
    assert_eq!(before_t.state.first_seq, 3);
    assert_eq!(before_s.state.consumer_count, 1);
    // Sequences and limits go on where they were.
    assert_eq!(put(&t, "t.one", "z", 7), 3);
    let next = before_s.state.last_seq + 1;
    assert_eq!(put(&s, "orders.new", "z", 7), next);
    assert!(Arc::ptr_eq(&s, &storage.open_stream("S").unwrap()));
    assert_eq!(
        storage.create_stream("S", StreamLimits::default()).err(),
        Some(StorageError::StreamExists)
    );
    assert_eq!(
        storage.open_stream("nope").err(),
        Some(StorageError::StreamNotFound)
    );
    assert!(storage.size_on_disk().unwrap() > 0);
}

#[test]
fn corrupt_record_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        put(&s, "a", "one", 1);
        put(&s, "a", "two", 2);
        put(&s, "b", "three", 3);
    }
    raw(dir.path(), |tree| {
        // Three batches, three blocks under one key.
        assert_eq!(count_tag(tree, TAG_MSG), 1);
        let (key, mut value, at) = block_with(dir.path(), tree, b"two");
        value[at + 1] ^= 0x01; // inside the payload
        put_block(dir.path(), tree, &key, value);
    });
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    let corrupt = StorageError::Corrupt {
        stream: "S".into(),
        seq: 2,
    };
    assert_eq!(s.get(2), Err(corrupt.clone()));
    assert_eq!(&s.get(1).unwrap().payload[..], b"one");
    assert_eq!(&s.get(3).unwrap().payload[..], b"three");
    assert_eq!(s.next_matching(2, b">").err(), Some(corrupt.clone()));
    assert_eq!(s.next_matching(2, b"a").err(), Some(corrupt.clone()));
    assert_eq!(s.last_by_subject(b"a").err(), Some(corrupt.clone()));
    assert_eq!(s.next_matching(2, b"b").unwrap().unwrap().seq, 3);
    assert_eq!(s.snapshot().err(), Some(corrupt.clone()));
    assert_eq!(s.state().unwrap().messages, 3);
    // A reader may skip it; a delete removes it.
    assert_eq!(s.next_matching(3, b">").unwrap().unwrap().seq, 3);
    s.delete_msg(2, false).unwrap();
    let st = s.state().unwrap();
    assert_eq!((st.messages, st.num_deleted), (2, 1));
    assert_eq!(st.bytes, (1 + 3 + 16) + (1 + 5 + 16));
    assert_eq!(subjects(&s, ">"), vec![("a".into(), 1), ("b".into(), 1)]);
    assert!(s.snapshot().is_ok());
}

#[test]
fn corrupt_metadata_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        storage.create_stream("S", StreamLimits::default()).unwrap();
    }
    raw(dir.path(), |tree| {
        for item in tree.scan_prefix([0x02]) {
            let (k, v) = item.unwrap();
            let mut v = v.to_vec();
            v[0] ^= 0xff;
            tree.insert(k, v).unwrap();
        }
    });
    let storage = Storage::open(dir.path()).unwrap();
    assert!(matches!(
        storage.open_stream("S"),
        Err(StorageError::CorruptMeta { .. })
    ));
}

#[test]
fn delete_stream_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        let keep = storage.create_stream("K", StreamLimits::default()).unwrap();
        for _ in 0..100 {
            put(&s, "a.b", "x", 1);
        }
        put(&keep, "k", "x", 1);
        s.save_consumer("c", &ConsumerState::default()).unwrap();
        storage.delete_stream("S").unwrap();
        assert_eq!(s.get(1), Err(StorageError::StreamDeleted));
        assert_eq!(
            s.append(common::msg("a", "x", 1)).err(),
            Some(StorageError::StreamDeleted)
        );
        assert_eq!(storage.list_streams().unwrap(), vec!["K"]);
        assert_eq!(
            storage.delete_stream("S").err(),
            Some(StorageError::StreamNotFound)
        );
        let again = storage.create_stream("S", StreamLimits::default()).unwrap();
        assert_eq!(again.state().unwrap().last_seq, 0);
        assert!(again.load_consumers().unwrap().is_empty());
        storage.delete_stream("S").unwrap();
    }
    raw(dir.path(), |tree| {
        assert_eq!(count_tag(tree, TAG_MSG), 1);
        assert_eq!(count_tag(tree, TAG_SUBJ), 1);
    });
}

#[test]
fn interrupted_deletion_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        put(&s, "a", "x", 1);
    }
    // As if the process died right after removing the name.
    raw(dir.path(), |tree| {
        let name: Vec<u8> = [&[TAG_NAME][..], b"S"].concat();
        tree.remove(name).unwrap();
    });
    let storage = Storage::open(dir.path()).unwrap();
    assert!(storage.list_streams().unwrap().is_empty());
    drop(storage);
    // Only the storage format marker and the log's applied position are
    // left.
    raw(dir.path(), |tree| {
        let keys: Vec<u8> = tree.iter().keys().map(|k| k.unwrap()[0]).collect();
        assert_eq!(keys, vec![0x00, 0x05]);
    });
}

#[test]
fn purge_all_cleans_up_and_reopen_finishes_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        let ops = (0..5000u64)
            .map(|i| {
                tern_storage::StreamOp::Append(tern_storage::Append::new(
                    Bytes::from(format!("sub.{}", i % 50)),
                    Bytes::from_static(b"payload"),
                    i,
                ))
            })
            .collect();
        assert!(s.apply_batch(ops).iter().all(Result::is_ok));
        assert_eq!(s.purge(PurgeRequest::default()).unwrap(), 5000);
        put(&s, "after", "x", 1);
    }
    raw(dir.path(), |tree| {
        assert_eq!(count_tag(tree, TAG_MSG), 1);
        assert_eq!(count_tag(tree, TAG_SUBJ), 1);
        // Leave dead records behind, as a crash before cleanup would.
        let live = message_key(tree, 5001);
        let mut dead = live.to_vec();
        let n = dead.len();
        dead[n - 8..].copy_from_slice(&7u64.to_be_bytes());
        tree.insert(dead, tree.get(&live).unwrap().unwrap())
            .unwrap();
        let mut idx = vec![TAG_SUBJ];
        idx.extend_from_slice(&live[1..9]);
        idx.extend_from_slice(b"dead.subject\0");
        idx.extend_from_slice(&7u64.to_be_bytes());
        tree.insert(idx, &[][..]).unwrap();
    });
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.open_stream("S").unwrap();
        let st = s.state().unwrap();
        assert_eq!(
            (st.messages, st.first_seq, st.last_seq, st.num_subjects),
            (1, 5001, 5001, 1)
        );
        assert_eq!(s.get(7), Err(StorageError::NotFound));
        assert_eq!(subjects(&s, ">"), vec![("after".into(), 1)]);
        assert_eq!(seqs(&s), vec![5001]);
    }
    raw(dir.path(), |tree| {
        assert_eq!(count_tag(tree, TAG_MSG), 1);
        assert_eq!(count_tag(tree, TAG_SUBJ), 1);
    });
}

#[test]
fn interval_sync_policy_persists_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        sync: SyncPolicy::Interval(Duration::from_millis(20)),
        ..StorageOptions::default()
    };
    {
        let storage = Storage::open_with(dir.path(), options).unwrap();
        assert_eq!(storage.sync_policy(), options.sync);
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        put(&s, "a", "x", 1);
        s.flush().unwrap();
        storage.flush().unwrap();
    }
    let storage = Storage::open_with(dir.path(), options).unwrap();
    let s = storage.open_stream("S").unwrap();
    assert_eq!(&s.get(1).unwrap().payload[..], b"x");
}

#[test]
fn restore_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mem = tern_storage::MemoryStore::new("M", StreamLimits::default());
    for i in 0..20u64 {
        mem.append(tern_storage::Append::new(
            Bytes::from(format!("m.{}", i % 3)),
            Bytes::from(vec![b'p'; i as usize]),
            i,
        ))
        .unwrap();
    }
    mem.delete_msg(4, false).unwrap();
    mem.save_consumer("c", &ConsumerState::default()).unwrap();
    let snap = mem.snapshot().unwrap();
    let before = {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        put(&s, "x", "old", 1);
        s.restore(&snap).unwrap();
        capture(&s)
    };
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    assert_same(&capture(&s), &before);
    assert_eq!(before.state.messages, 19);
    assert_eq!(s.snapshot().unwrap(), snap);
}

#[test]
fn concurrent_appends_get_distinct_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.create_stream("S", StreamLimits::default()).unwrap();
    let other = storage.create_stream("O", StreamLimits::default()).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = if t % 2 == 0 { s.clone() } else { other.clone() };
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| store.append(common::msg("c.x", "p", i)).unwrap().0)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut got: Vec<u64> = Vec::new();
    for (t, h) in threads.into_iter().enumerate() {
        let seqs = h.join().unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        if t % 2 == 0 {
            got.extend(seqs);
        }
    }
    got.sort_unstable();
    assert_eq!(got, (1..=150).collect::<Vec<u64>>());
    assert_eq!(seqs(&s), got);
    assert_eq!(other.state().unwrap().messages, 150);
}

/// Appends `n` messages in one batch: subjects `b.0`..`b.3`, payload
/// `payload-<seq>` (unique, so a test can find its bytes on disk).
fn append_batch(s: &Arc<dyn StreamStore>, n: u64) {
    let first = s.state().unwrap().last_seq + 1;
    let ops = (first..first + n)
        .map(|seq| {
            tern_storage::StreamOp::Append(tern_storage::Append::new(
                Bytes::from(format!("b.{}", seq % 4)),
                Bytes::from(format!("payload-{seq:06}")),
                seq,
            ))
        })
        .collect();
    assert!(s.apply_batch(ops).iter().all(Result::is_ok));
}

/// The key and value of the block holding the bytes `needle`.
fn block_with(dir: &Path, tree: &sled::Tree, needle: &[u8]) -> (sled::IVec, Vec<u8>, usize) {
    tree.scan_prefix([TAG_MSG])
        .map(|item| item.expect("scan"))
        .find_map(|(k, v)| {
            let v = block_bytes(dir, &v);
            let at = v.windows(needle.len()).position(|w| w == needle)?;
            Some((k, v, at))
        })
        .expect("a block with these bytes")
}

#[test]
fn a_damaged_list_of_removed_messages_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        append_batch(&s, 10); // one block, 1..=10
        s.delete_msg(4, false).unwrap();
        assert!(s.get(4).is_err());
    }
    raw(dir.path(), |tree| {
        let key = message_key(tree, 1); // the block's key: its base
        let mut value = tree.get(&key).unwrap().unwrap().to_vec();
        assert_eq!(value[0], 0xfe, "a thinned pointer");
        // The list's count, which its checksum covers.
        value[21] ^= 0x02;
        tree.insert(&key, value).unwrap();
    });
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    // Neither the removed message nor its neighbours are served as if
    // nothing happened.
    for seq in [4, 5] {
        assert!(
            matches!(s.get(seq), Err(StorageError::Corrupt { .. })),
            "seq {seq}: {:?}",
            s.get(seq)
        );
    }
}

#[test]
fn a_batch_is_packed_into_few_blocks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        append_batch(&s, 3000);
        // Removals in the middle of blocks leave them where they are.
        for seq in [1, 2, 500, 1500, 2998] {
            s.delete_msg(seq, seq % 2 == 0).unwrap();
        }
        s.purge(PurgeRequest {
            filter: Some("b.1".into()),
            ..PurgeRequest::default()
        })
        .unwrap();
    }
    raw(dir.path(), |tree| {
        // ~35-byte records in 32 KiB blocks of at most 1024 messages, all
        // under one key.
        assert_eq!(count_tag(tree, TAG_MSG), 1);
        let value = tree.scan_prefix([TAG_MSG]).next().unwrap().unwrap().1;
        let blocks = pointer(dir.path(), &value).expect("a pointer").len();
        let lists = count_tag(tree, TAG_SUBJ);
        assert!((3..=5).contains(&blocks), "{blocks} blocks");
        // The removals made its pointer list them; no block was rewritten.
        assert_eq!(value[0], 0xfd, "a pointer to several blocks");
        assert!(value.len() > 2 + 24 * blocks, "removed messages listed");
        // One list per subject for the whole batch (b.1 was purged).
        assert_eq!(lists, 3, "subject lists");
    });
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    let st = s.state().unwrap();
    let expect: Vec<u64> = (1..=3000)
        .filter(|q| q % 4 != 1 && ![2, 500, 1500, 2998].contains(q))
        .collect();
    assert_eq!(seqs(&s), expect);
    assert_eq!((st.messages, st.first_seq, st.last_seq), (2246, 3, 3000));
    assert_eq!(
        subjects(&s, ">"),
        vec![
            ("b.0".into(), 748),
            ("b.2".into(), 748),
            ("b.3".into(), 750)
        ]
    );
    assert_eq!(&s.get(1499).unwrap().payload[..], b"payload-001499");
    assert_eq!(s.last_by_subject(b"b.3").unwrap().unwrap().seq, 2999);
    assert_eq!(s.next_matching(1500, b"b.2").unwrap().unwrap().seq, 1502);
}

#[test]
fn a_corrupt_record_in_a_block_spoils_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        append_batch(&s, 10);
    }
    raw(dir.path(), |tree| {
        let (key, mut value, at) = block_with(dir.path(), tree, b"payload-000005");
        value[at + 3] ^= 0x01;
        put_block(dir.path(), tree, &key, value);
    });
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    let corrupt = StorageError::Corrupt {
        stream: "S".into(),
        seq: 5,
    };
    assert_eq!(s.get(5), Err(corrupt.clone()));
    for seq in [1, 4, 6, 10] {
        assert_eq!(
            s.get(seq).unwrap().payload,
            Bytes::from(format!("payload-{seq:06}"))
        );
    }
    assert_eq!(s.next_matching(5, b">").err(), Some(corrupt.clone()));
    assert_eq!(s.next_matching(6, b">").unwrap().unwrap().seq, 6);
    assert_eq!(s.snapshot().err(), Some(corrupt));
    s.delete_msg(5, false).unwrap();
    assert_eq!(s.state().unwrap().messages, 9);
    assert_eq!(subjects(&s, "b.1"), vec![("b.1".into(), 2)]);
    assert!(s.snapshot().is_ok());
}

#[test]
fn a_damaged_block_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        append_batch(&s, 20); // block 1..=20
        append_batch(&s, 5); // block 21..=25
    }
    raw(dir.path(), |tree| {
        let (key, mut value, _) = block_with(dir.path(), tree, b"payload-000002");
        value[1] ^= 0x01; // the entry count
        put_block(dir.path(), tree, &key, value);
    });
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    assert!(matches!(s.get(3), Err(StorageError::Corrupt { .. })));
    assert!(s.snapshot().is_err());
    assert_eq!(&s.get(22).unwrap().payload[..], b"payload-000022");
    assert_eq!(s.next_matching(21, b">").unwrap().unwrap().seq, 21);
    // Single messages of it cannot be removed; a purge of everything below
    // the next block removes it unread.
    assert!(s.delete_msg(3, false).is_err());
    s.purge(PurgeRequest {
        up_to_seq: Some(21),
        ..PurgeRequest::default()
    })
    .unwrap();
    assert_eq!(seqs(&s), (21..=25).collect::<Vec<_>>());
    assert_eq!(s.state().unwrap().messages, 5);
    assert!(s.snapshot().is_ok());
}

#[test]
fn an_older_storage_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        storage.create_stream("S", StreamLimits::default()).unwrap();
    }
    // Formats 2 to 4 are upgraded in place: the marker says 5 afterwards.
    for older in [2u8, 3, 4] {
        raw(dir.path(), |tree| {
            tree.insert([0x00], &[older]).unwrap();
        });
        Storage::open(dir.path()).unwrap();
        raw(dir.path(), |tree| {
            assert_eq!(tree.get([0x00]).unwrap().unwrap().as_ref(), [5]);
        });
    }
    raw(dir.path(), |tree| {
        tree.insert([0x00], &[9]).unwrap();
    });
    let err = Storage::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("storage format 9"), "{err}");
    raw(dir.path(), |tree| {
        tree.remove([0x00]).unwrap();
    });
    let err = Storage::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("storage format 1"), "{err}");
    // An empty directory is simply new.
    let empty = tempfile::tempdir().unwrap();
    Storage::open(empty.path()).unwrap();
    Storage::open(empty.path()).unwrap();
}

#[test]
fn a_write_that_meets_a_damaged_block_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StreamLimits {
        max_msgs: Some(5),
        ..StreamLimits::default()
    };
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", limits).unwrap();
        append_batch(&s, 5); // one block, 1..=5
    }
    raw(dir.path(), |tree| {
        let (key, mut value, _) = block_with(dir.path(), tree, b"payload-000002");
        value[1] ^= 0x01;
        put_block(dir.path(), tree, &key, value);
    });
    for _ in 0..2 {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.open_stream("S").unwrap();
        // Each append must drop message 1 to stay within max_msgs, cannot
        // read it, and so stores nothing.
        for _ in 0..3 {
            assert!(matches!(
                s.append(common::msg("b.x", "new", 1)),
                Err(StorageError::Corrupt { .. })
            ));
        }
        assert_eq!(s.get(6), Err(StorageError::NotFound));
        assert!(matches!(
            s.delete_msg(1, false),
            Err(StorageError::Corrupt { .. })
        ));
    }
    // A purge of everything needs no read; then the stream works again.
    let storage = Storage::open(dir.path()).unwrap();
    let s = storage.open_stream("S").unwrap();
    assert_eq!(s.purge(PurgeRequest::default()).unwrap(), 5);
    assert_eq!(s.append(common::msg("b.x", "new", 1)).unwrap().0, 6);
    assert_eq!(seqs(&s), vec![6]);
}

#[test]
fn cleanup_keeps_a_damaged_subject_list_that_may_be_live() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.create_stream("S", StreamLimits::default()).unwrap();
        append_batch(&s, 20); // one list per subject, b.1's is 1, 5, ... 17
    }
    raw(dir.path(), |tree| {
        let key = tree
            .scan_prefix([TAG_SUBJ])
            .map(|item| item.unwrap().0)
            .find(|k| k.windows(4).any(|w| w == b"b.1\0"))
            .expect("list of b.1");
        tree.insert(key, &b"damaged"[..]).unwrap();
    });
    {
        let storage = Storage::open(dir.path()).unwrap();
        let s = storage.open_stream("S").unwrap();
        // Keeps few, so only the fence moves and cleanup removes what is
        // below it; b.1's list straddles the fence (17 is live).
        s.purge(PurgeRequest {
            up_to_seq: Some(16),
            ..PurgeRequest::default()
        })
        .unwrap();
        assert_eq!(seqs(&s), vec![16, 17, 18, 19, 20]);
    }
    raw(dir.path(), |tree| {
        assert!(tree.scan_prefix([TAG_SUBJ]).any(|item| item
            .unwrap()
            .0
            .windows(4)
            .any(|w| w == b"b.1\0")));
    });
}
