//! The behaviour every `StreamStore` must have, run against both stores.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{msg, put, seqs, sibling, subjects, Factory};
use tern_storage::{
    Append, ConsumerState, DiscardPolicy, OpResult, PurgeRequest, StorageError, StreamLimits,
    StreamOp, StreamState,
};

fn size(subject: &str, payload: &str) -> u64 {
    (subject.len() + payload.len() + 16) as u64
}

fn purge(filter: Option<&'static str>, up_to_seq: Option<u64>, keep: Option<u64>) -> PurgeRequest {
    PurgeRequest {
        filter: filter.map(|f| Bytes::from_static(f.as_bytes())),
        up_to_seq,
        keep,
    }
}

fn append_get(mk: Factory) {
    let s = mk(StreamLimits::default());
    let (seq, ts) = s
        .append(
            msg("orders.eu", "one", 100)
                .with_headers(Bytes::from_static(b"NATS/1.0\r\nA: b\r\n\r\n")),
        )
        .unwrap();
    assert_eq!((seq, ts), (1, 100));
    assert_eq!(put(&s, "orders.us", "two", 200), 2);
    assert_eq!(put(&s, "orders.eu", "", 300), 3);

    let m = s.get(1).unwrap();
    assert_eq!(m.seq, 1);
    assert_eq!(&m.subject[..], b"orders.eu");
    assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0\r\nA: b\r\n\r\n"[..]));
    assert_eq!(&m.payload[..], b"one");
    assert_eq!(m.timestamp_ns, 100);
    let m = s.get(3).unwrap();
    assert_eq!((m.headers, &m.payload[..]), (None, &b""[..]));
    assert_eq!(s.get(0), Err(StorageError::NotFound));
    assert_eq!(s.get(4), Err(StorageError::NotFound));

    assert_eq!(
        s.append(msg("bad subject", "x", 1)),
        Err(StorageError::InvalidSubject)
    );
    assert_eq!(
        s.append(msg("orders.*", "x", 1)),
        Err(StorageError::InvalidSubject)
    );
    assert_eq!(s.append(msg("", "x", 1)), Err(StorageError::InvalidSubject));
    assert_eq!(s.state().unwrap().last_seq, 3);
}

fn state_figures(mk: Factory) {
    let s = mk(StreamLimits::default());
    assert_eq!(
        s.state().unwrap(),
        StreamState {
            first_seq: 1,
            ..StreamState::default()
        }
    );
    put(&s, "a", "xx", 10);
    put(&s, "b.c", "yyy", 20);
    put(&s, "a", "z", 30);
    put(&s, "d", "", 40);
    s.delete_msg(2, false).unwrap();
    s.save_consumer("c1", &ConsumerState::default()).unwrap();
    let st = s.state().unwrap();
    assert_eq!(
        st,
        StreamState {
            messages: 3,
            bytes: size("a", "xx") + size("a", "z") + size("d", ""),
            first_seq: 1,
            first_ts: 10,
            last_seq: 4,
            last_ts: 40,
            num_subjects: 2,
            num_deleted: 1,
            consumer_count: 1,
        }
    );
    assert_eq!(s.deleted_seqs().unwrap(), vec![2]);
    assert_eq!(subjects(&s, ">"), vec![("a".into(), 2), ("d".into(), 1)]);
    assert_eq!(subjects(&s, "a"), vec![("a".into(), 2)]);
    assert_eq!(subjects(&s, "b.*"), vec![]);
    s.delete_msg(1, false).unwrap();
    let st = s.state().unwrap();
    assert_eq!((st.first_seq, st.first_ts, st.num_deleted), (3, 30, 0));
}

fn sequence_monotonic_across_purge(mk: Factory) {
    let s = mk(StreamLimits::default());
    for _ in 0..5 {
        put(&s, "a", "x", 1);
    }
    assert_eq!(s.purge(PurgeRequest::default()).unwrap(), 5);
    let st = s.state().unwrap();
    assert_eq!(
        (
            st.messages,
            st.bytes,
            st.first_seq,
            st.last_seq,
            st.num_subjects
        ),
        (0, 0, 6, 5, 0)
    );
    assert_eq!(st.last_ts, 1);
    assert_eq!(s.get(5), Err(StorageError::NotFound));
    assert_eq!(s.next_matching(0, b">").unwrap(), None);
    assert_eq!(put(&s, "a", "y", 2), 6);
    assert_eq!(s.state().unwrap().first_seq, 6);
    assert_eq!(s.next_matching(0, b"a").unwrap().unwrap().seq, 6);
    // Purging up to a sequence beyond the end moves the sequence on.
    assert_eq!(s.purge(purge(None, Some(100), None)).unwrap(), 1);
    let st = s.state().unwrap();
    assert_eq!((st.first_seq, st.last_seq, st.messages), (100, 99, 0));
    assert_eq!(put(&s, "a", "z", 3), 100);
    assert_eq!(s.last_by_subject(b"a").unwrap().unwrap().seq, 100);
}

fn next_matching_filters(mk: Factory) {
    let s = mk(StreamLimits::default());
    put(&s, "a.b.c", "1", 1); // 1
    put(&s, "a.x.c", "2", 2); // 2
    put(&s, "a.b.d", "3", 3); // 3
    put(&s, "b.b.c", "4", 4); // 4
    put(&s, "a.b.c", "5", 5); // 5
    let next = |start: u64, filter: &str| {
        s.next_matching(start, filter.as_bytes())
            .unwrap()
            .map(|m| m.seq)
    };
    assert_eq!(next(0, ">"), Some(1));
    assert_eq!(next(0, ""), Some(1));
    assert_eq!(next(2, ">"), Some(2));
    assert_eq!(next(1, "a.*.c"), Some(1));
    assert_eq!(next(2, "a.*.c"), Some(2));
    assert_eq!(next(3, "a.*.c"), Some(5));
    assert_eq!(next(6, "a.*.c"), None);
    assert_eq!(next(1, "*.b.c"), Some(1));
    assert_eq!(next(2, "*.b.c"), Some(4));
    assert_eq!(next(0, "a.>"), Some(1));
    assert_eq!(next(4, "a.>"), Some(5));
    assert_eq!(next(2, "a.b.c"), Some(5));
    assert_eq!(next(1, "a.b.d"), Some(3));
    assert_eq!(next(1, "zzz"), None);
    assert_eq!(next(1, "a"), None);
    assert_eq!(next(1, "*"), None);
    assert_eq!(
        s.next_matching(1, b"a..b"),
        Err(StorageError::InvalidSubject)
    );
    s.delete_msg(1, false).unwrap();
    assert_eq!(next(0, "a.b.c"), Some(5));
    assert_eq!(next(0, "a.*.c"), Some(2));

    // A sparse wildcard match behind many others goes through the index.
    for _ in 0..600 {
        put(&s, "noise.n", "", 6);
    }
    let rare = put(&s, "rare.one", "", 7);
    for _ in 0..10 {
        put(&s, "noise.n", "", 8);
    }
    let rare2 = put(&s, "rare.two", "", 9);
    assert_eq!(next(0, "rare.*"), Some(rare));
    assert_eq!(next(rare + 1, "rare.*"), Some(rare2));
    assert_eq!(next(rare2 + 1, "rare.*"), None);
    assert_eq!(next(0, "rare.>"), Some(rare));
    assert_eq!(s.count_matching(b"rare.*", 0).unwrap(), 2);
    assert_eq!(s.count_matching(b"rare.*", rare + 1).unwrap(), 1);
    assert_eq!(s.count_matching(b">", 0).unwrap(), 4 + 612);
    assert_eq!(s.count_matching(b">", rare).unwrap(), 12);
    assert_eq!(s.count_matching(b"noise.n", rare).unwrap(), 10);
    assert_eq!(s.count_matching(b"noise.n", 0).unwrap(), 610);
}

fn last_by_subject(mk: Factory) {
    let s = mk(StreamLimits::default());
    assert_eq!(s.last_by_subject(b"a").unwrap(), None);
    put(&s, "kv.a", "1", 1);
    put(&s, "kv.b", "2", 2);
    put(&s, "kv.a", "3", 3);
    put(&s, "other", "4", 4);
    let last = |f: &str| s.last_by_subject(f.as_bytes()).unwrap().map(|m| m.seq);
    assert_eq!(last("kv.a"), Some(3));
    assert_eq!(
        &s.last_by_subject(b"kv.a").unwrap().unwrap().payload[..],
        b"3"
    );
    assert_eq!(last("kv.b"), Some(2));
    assert_eq!(last("kv.*"), Some(3));
    assert_eq!(last(">"), Some(4));
    assert_eq!(last("kv.c"), None);
    s.delete_msg(3, false).unwrap();
    assert_eq!(last("kv.a"), Some(1));
    s.delete_msg(4, false).unwrap();
    assert_eq!(last(">"), Some(2));
    s.delete_msg(1, false).unwrap();
    assert_eq!(last("kv.a"), None);
}

fn delete_with_and_without_erase(mk: Factory) {
    let s = mk(StreamLimits::default());
    for i in 1..=5 {
        put(&s, "a", "secret", i);
    }
    s.delete_msg(2, false).unwrap();
    s.delete_msg(4, true).unwrap();
    assert_eq!(s.get(2), Err(StorageError::NotFound));
    assert_eq!(s.get(4), Err(StorageError::NotFound));
    assert_eq!(s.delete_msg(4, false), Err(StorageError::NotFound));
    assert_eq!(s.delete_msg(9, false), Err(StorageError::NotFound));
    assert_eq!(s.delete_msg(0, true), Err(StorageError::NotFound));
    let st = s.state().unwrap();
    assert_eq!(
        (st.messages, st.num_deleted, st.first_seq, st.last_seq),
        (3, 2, 1, 5)
    );
    assert_eq!(s.deleted_seqs().unwrap(), vec![2, 4]);
    assert_eq!(seqs(&s), vec![1, 3, 5]);
    s.delete_msg(1, true).unwrap();
    let st = s.state().unwrap();
    assert_eq!((st.first_seq, st.num_deleted), (3, 1));
    s.delete_msg(5, false).unwrap();
    s.delete_msg(3, false).unwrap();
    let st = s.state().unwrap();
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq, st.num_deleted),
        (0, 6, 5, 0)
    );
    assert_eq!(put(&s, "a", "x", 9), 6);
}

fn purge_variants(mk: Factory) {
    let fill = || {
        let s = mk(StreamLimits::default());
        // 1 a.1, 2 b, 3 a.2, 4 b, 5 a.1, 6 b, 7 a.2, 8 b
        for i in 0..8u64 {
            let subject = match i % 4 {
                0 => "a.1",
                2 => "a.2",
                _ => "b",
            };
            put(&s, subject, "p", i);
        }
        s
    };
    // Everything.
    let s = fill();
    assert_eq!(s.purge(purge(None, None, None)).unwrap(), 8);
    assert_eq!(seqs(&s), Vec::<u64>::new());
    // By filter.
    let s = fill();
    assert_eq!(s.purge(purge(Some("a.*"), None, None)).unwrap(), 4);
    assert_eq!(seqs(&s), vec![2, 4, 6, 8]);
    assert_eq!(s.state().unwrap().first_seq, 2);
    assert_eq!(subjects(&s, ">"), vec![("b".into(), 4)]);
    // Keep N (unfiltered).
    let s = fill();
    assert_eq!(s.purge(purge(None, None, Some(3))).unwrap(), 5);
    assert_eq!(seqs(&s), vec![6, 7, 8]);
    // Keep N counts stored messages, not sequences.
    let s = fill();
    s.delete_msg(7, false).unwrap();
    assert_eq!(s.purge(purge(Some(">"), None, Some(3))).unwrap(), 4);
    assert_eq!(seqs(&s), vec![5, 6, 8]);
    assert_eq!(s.purge(purge(None, None, Some(5))).unwrap(), 0);
    // Up to a sequence.
    let s = fill();
    assert_eq!(s.purge(purge(None, Some(4), None)).unwrap(), 3);
    assert_eq!(seqs(&s), vec![4, 5, 6, 7, 8]);
    assert_eq!(s.purge(purge(None, Some(2), None)).unwrap(), 0);
    // Filter + keep (KV purge keeps the newest of the key).
    let s = fill();
    assert_eq!(s.purge(purge(Some("b"), None, Some(1))).unwrap(), 3);
    assert_eq!(seqs(&s), vec![1, 3, 5, 7, 8]);
    // Filter + keep across several subjects keeps the newest overall.
    let s = fill();
    assert_eq!(s.purge(purge(Some("a.>"), None, Some(1))).unwrap(), 3);
    assert_eq!(seqs(&s), vec![2, 4, 6, 7, 8]);
    // Filter + sequence.
    let s = fill();
    assert_eq!(s.purge(purge(Some("a.1"), Some(5), None)).unwrap(), 1);
    assert_eq!(seqs(&s), vec![2, 3, 4, 5, 6, 7, 8]);
    // Filter + sequence + keep.
    let s = fill();
    assert_eq!(s.purge(purge(Some("b"), Some(7), Some(2))).unwrap(), 2);
    assert_eq!(seqs(&s), vec![1, 3, 5, 6, 7, 8]);
    // Keep with a big stream takes the "count what stays" path.
    let s = mk(StreamLimits::default());
    for i in 0..300u64 {
        put(&s, if i % 2 == 0 { "x.even" } else { "x.odd" }, "pp", i);
    }
    assert_eq!(s.purge(purge(None, None, Some(3))).unwrap(), 297);
    assert_eq!(seqs(&s), vec![298, 299, 300]);
    let st = s.state().unwrap();
    let bytes = 2 * size("x.odd", "pp") + size("x.even", "pp");
    assert_eq!((st.messages, st.bytes, st.first_seq), (3, bytes, 298));
    assert_eq!(
        subjects(&s, ">"),
        vec![("x.even".into(), 1), ("x.odd".into(), 2)]
    );
    assert_eq!(put(&s, "x.odd", "", 1), 301);
    assert_eq!(
        s.purge(purge(Some("bad..filter"), None, None)),
        Err(StorageError::InvalidSubject)
    );
}

fn limits_discard_old(mk: Factory) {
    // max_msgs
    let s = mk(StreamLimits {
        max_msgs: Some(3),
        ..StreamLimits::default()
    });
    for i in 1..=5 {
        put(&s, "a", "x", i);
    }
    assert_eq!(seqs(&s), vec![3, 4, 5]);
    // max_bytes
    let s = mk(StreamLimits {
        max_bytes: Some(3 * size("a", "xxxx")),
        ..StreamLimits::default()
    });
    for i in 1..=5 {
        put(&s, "a", "xxxx", i);
    }
    assert_eq!(seqs(&s), vec![3, 4, 5]);
    assert_eq!(s.state().unwrap().bytes, 3 * size("a", "xxxx"));
    // max_msgs_per_subject
    let s = mk(StreamLimits {
        max_msgs_per_subject: Some(2),
        ..StreamLimits::default()
    });
    for (i, subj) in ["k.a", "k.b", "k.a", "k.a", "k.b", "k.a"]
        .iter()
        .enumerate()
    {
        put(&s, subj, "v", i as u64);
    }
    assert_eq!(seqs(&s), vec![2, 4, 5, 6]);
    assert_eq!(
        subjects(&s, ">"),
        vec![("k.a".into(), 2), ("k.b".into(), 2)]
    );
    // max_msg_size applies whatever the discard policy.
    let s = mk(StreamLimits {
        max_msg_size: Some(4),
        ..StreamLimits::default()
    });
    put(&s, "a", "1234", 1);
    assert_eq!(
        s.append(msg("a", "12345", 2)),
        Err(StorageError::MaxMessageSizeExceeded)
    );
    assert_eq!(
        s.append(msg("a", "123", 2).with_headers(Bytes::from_static(b"hh"))),
        Err(StorageError::MaxMessageSizeExceeded)
    );
    assert_eq!(s.state().unwrap().messages, 1);
}

fn limits_discard_new(mk: Factory) {
    let new = StreamLimits {
        discard: DiscardPolicy::New,
        ..StreamLimits::default()
    };
    let s = mk(StreamLimits {
        max_msgs: Some(2),
        ..new.clone()
    });
    put(&s, "a", "x", 1);
    put(&s, "a", "x", 2);
    assert_eq!(
        s.append(msg("a", "x", 3)),
        Err(StorageError::MaximumMessagesExceeded)
    );
    assert_eq!(seqs(&s), vec![1, 2]);
    assert_eq!(s.state().unwrap().last_seq, 2);
    s.delete_msg(1, false).unwrap();
    assert_eq!(put(&s, "a", "x", 4), 3);

    let s = mk(StreamLimits {
        max_bytes: Some(3 * size("a", "x")),
        ..new.clone()
    });
    put(&s, "a", "x", 1);
    put(&s, "a", "x", 2);
    assert_eq!(
        s.append(msg("a", "xx", 3)),
        Err(StorageError::MaximumBytesExceeded)
    );
    put(&s, "a", "x", 3); // fits exactly
    assert_eq!(s.state().unwrap().bytes, 3 * size("a", "x"));

    // Per subject, discard new per subject: rejected.
    let s = mk(StreamLimits {
        max_msgs_per_subject: Some(1),
        discard_new_per_subject: true,
        ..new.clone()
    });
    put(&s, "k.a", "1", 1);
    assert_eq!(
        s.append(msg("k.a", "2", 2)),
        Err(StorageError::MaximumMessagesPerSubjectExceeded)
    );
    put(&s, "k.b", "3", 3);
    assert_eq!(seqs(&s), vec![1, 2]);

    // Per subject without discard_new_per_subject: the subject's oldest goes,
    // even at max_msgs (the total does not grow).
    let s = mk(StreamLimits {
        max_msgs: Some(2),
        max_msgs_per_subject: Some(1),
        ..new.clone()
    });
    put(&s, "k.a", "1", 1);
    put(&s, "k.b", "2", 2);
    assert_eq!(put(&s, "k.a", "3", 3), 3);
    assert_eq!(seqs(&s), vec![2, 3]);
    assert_eq!(
        s.append(msg("k.c", "4", 4)),
        Err(StorageError::MaximumMessagesExceeded)
    );
}

fn max_age_expiry(mk: Factory) {
    let s = mk(StreamLimits {
        max_age: Some(Duration::from_nanos(100)),
        ..StreamLimits::default()
    });
    for ts in [10, 20, 30, 200, 210] {
        put(&s, "a", "x", ts);
    }
    assert_eq!(
        s.apply(StreamOp::ExpireBefore { timestamp_ns: 25 })
            .unwrap(),
        OpResult::Expired { removed: 2 }
    );
    assert_eq!(seqs(&s), vec![3, 4, 5]);
    // expire(now) uses max_age: cutoff 305 - 100 = 205.
    assert_eq!(s.expire(305).unwrap(), 2);
    assert_eq!(seqs(&s), vec![5]);
    assert_eq!(s.expire(1000).unwrap(), 1);
    let st = s.state().unwrap();
    assert_eq!((st.messages, st.first_seq, st.last_seq), (0, 6, 5));
    assert_eq!(s.expire(2000).unwrap(), 0);
    let unlimited = mk(StreamLimits::default());
    put(&unlimited, "a", "x", 1);
    assert_eq!(unlimited.expire(u64::MAX).unwrap(), 0);
}

fn update_limits_enforces(mk: Factory) {
    let s = mk(StreamLimits::default());
    for (i, subj) in ["a", "b", "a", "a", "b", "c"].iter().enumerate() {
        put(&s, subj, "v", i as u64);
    }
    let r = s
        .apply(StreamOp::UpdateLimits(StreamLimits {
            max_msgs_per_subject: Some(1),
            ..StreamLimits::default()
        }))
        .unwrap();
    assert_eq!(r, OpResult::LimitsUpdated { removed: 3 });
    assert_eq!(seqs(&s), vec![4, 5, 6]);
    let r = s
        .apply(StreamOp::UpdateLimits(StreamLimits {
            max_msgs: Some(1),
            discard: DiscardPolicy::New,
            ..StreamLimits::default()
        }))
        .unwrap();
    // Discard new does not truncate; it only rejects.
    assert_eq!(r, OpResult::LimitsUpdated { removed: 0 });
    assert_eq!(
        s.append(msg("d", "v", 9)),
        Err(StorageError::MaximumMessagesExceeded)
    );
    let r = s
        .apply(StreamOp::UpdateLimits(StreamLimits {
            max_msgs: Some(1),
            ..StreamLimits::default()
        }))
        .unwrap();
    assert_eq!(r, OpResult::LimitsUpdated { removed: 2 });
    assert_eq!(seqs(&s), vec![6]);
    assert_eq!(s.limits().max_msgs, Some(1));
}

fn expectations(mk: Factory) {
    let s = mk(StreamLimits::default());
    s.append(msg("kv.a", "1", 1).expect_last_seq(0)).unwrap();
    assert_eq!(
        s.append(msg("kv.a", "2", 2).expect_last_seq(0)),
        Err(StorageError::WrongLastSequence { current: 1 })
    );
    s.append(msg("kv.b", "2", 2).expect_last_subject_seq(0))
        .unwrap();
    assert_eq!(
        s.append(msg("kv.a", "3", 3).expect_last_subject_seq(0)),
        Err(StorageError::WrongLastSubjectSequence { current: 1 })
    );
    s.append(msg("kv.a", "3", 3).expect_last_subject_seq(1))
        .unwrap();
    assert_eq!(s.state().unwrap().last_seq, 3);
}

fn batch_results(mk: Factory) {
    let s = mk(StreamLimits {
        max_msgs: Some(2),
        discard: DiscardPolicy::New,
        ..StreamLimits::default()
    });
    let results = s.apply_batch(vec![
        StreamOp::Append(msg("a", "1", 1)),
        StreamOp::Append(msg("a", "2", 2)),
        StreamOp::Append(msg("a", "3", 3)),
        StreamOp::Delete {
            seq: 1,
            erase: false,
        },
        StreamOp::Append(msg("a", "4", 4)),
        StreamOp::Delete {
            seq: 7,
            erase: false,
        },
    ]);
    assert_eq!(
        results,
        vec![
            Ok(OpResult::Appended {
                seq: 1,
                timestamp_ns: 1
            }),
            Ok(OpResult::Appended {
                seq: 2,
                timestamp_ns: 2
            }),
            Err(StorageError::MaximumMessagesExceeded),
            Ok(OpResult::Deleted { seq: 1 }),
            Ok(OpResult::Appended {
                seq: 3,
                timestamp_ns: 4
            }),
            Err(StorageError::NotFound),
        ]
    );
    assert_eq!(seqs(&s), vec![2, 3]);
    assert_eq!(&s.get(3).unwrap().payload[..], b"4");
    // A batch that appends and purges everything commits nothing below.
    let results = s.apply_batch(vec![
        StreamOp::Purge(PurgeRequest::default()),
        StreamOp::Append(msg("b", "5", 5)),
        StreamOp::Purge(PurgeRequest::default()),
        StreamOp::Append(msg("c", "6", 6)),
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(seqs(&s), vec![5]);
    assert_eq!(subjects(&s, ">"), vec![("c".into(), 1)]);
}

fn consumers_and_config(mk: Factory) {
    let s = mk(StreamLimits::default());
    assert!(s.load_consumers().unwrap().is_empty());
    assert_eq!(s.stream_config().unwrap(), None);
    s.save_stream_config(b"{\"name\":\"S\"}").unwrap();
    assert_eq!(
        s.stream_config().unwrap().as_deref(),
        Some(&b"{\"name\":\"S\"}"[..])
    );
    let mut st = ConsumerState {
        delivered_consumer_seq: 10,
        delivered_stream_seq: 12,
        ack_floor_consumer_seq: 7,
        ack_floor_stream_seq: 9,
        ..ConsumerState::default()
    };
    st.pending.insert(10, (8, 1_700_000_000_000_000_000));
    st.pending.insert(12, (10, 1_700_000_000_000_000_001));
    st.redelivered.insert(10, 3);
    s.save_consumer_config("durable", b"cfg-1").unwrap();
    s.save_consumer("durable", &st).unwrap();
    s.save_consumer("other", &ConsumerState::default()).unwrap();
    let all = s.load_consumers().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(&all["durable"].config[..], b"cfg-1");
    assert_eq!(all["durable"].state, st);
    assert_eq!(all["other"].state, ConsumerState::default());
    assert!(all["other"].config.is_empty());
    assert_eq!(s.state().unwrap().consumer_count, 2);
    assert!(s.delete_consumer("other").unwrap());
    assert!(!s.delete_consumer("other").unwrap());
    assert_eq!(s.load_consumers().unwrap().len(), 1);
    assert_eq!(s.state().unwrap().consumer_count, 1);
    assert!(matches!(
        s.save_consumer("", &st),
        Err(StorageError::InvalidRequest(_))
    ));
}

fn snapshot_restore(mk: Factory) {
    let s = mk(StreamLimits {
        max_msgs_per_subject: Some(5),
        ..StreamLimits::default()
    });
    for i in 0..50u64 {
        let a = Append::new(
            Bytes::from(format!("snap.{}", i % 7)),
            Bytes::from(vec![i as u8; i as usize]),
            1000 + i,
        );
        let a = if i % 3 == 0 {
            a.with_headers(Bytes::from_static(b"NATS/1.0\r\nX: y\r\n\r\n"))
        } else {
            a
        };
        s.append(a).unwrap();
    }
    s.delete_msg(47, false).unwrap();
    s.save_stream_config(b"config").unwrap();
    let mut cs = ConsumerState::default();
    cs.pending.insert(48, (1, 2));
    s.save_consumer("c", &cs).unwrap();
    s.save_consumer_config("c", b"c-config").unwrap();

    let snap = s.snapshot().unwrap();
    let t = sibling(&s, "T");
    put(&*t, "old.stuff", "gone", 1);
    t.save_consumer("stale", &ConsumerState::default()).unwrap();
    t.restore(&snap).unwrap();
    assert_eq!(t.state().unwrap(), s.state().unwrap());
    assert_eq!(t.limits(), s.limits());
    assert_eq!(t.load_consumers().unwrap(), s.load_consumers().unwrap());
    assert_eq!(t.stream_config().unwrap(), s.stream_config().unwrap());
    assert!(t.deleted_seqs().unwrap().contains(&47));
    assert_eq!(t.deleted_seqs().unwrap(), s.deleted_seqs().unwrap());
    assert_eq!(
        t.subjects_state(b">").unwrap(),
        s.subjects_state(b">").unwrap()
    );
    for seq in 0..=51 {
        assert_eq!(t.get(seq), s.get(seq), "seq {seq}");
    }
    assert_eq!(t.get(1), Err(StorageError::NotFound)); // old.stuff replaced
                                                       // The restored stream goes on where the snapshot ended.
    assert_eq!(put(&*t, "snap.1", "more", 2000), 51);
    assert_eq!(&t.get(51).unwrap().payload[..], b"more");

    // A damaged snapshot is refused and changes nothing.
    let before = t.state().unwrap();
    for at in [0, 9, snap.len() / 2, snap.len() - 1] {
        let mut bad = snap.clone();
        bad[at] ^= 0x40;
        assert!(
            matches!(t.restore(&bad), Err(StorageError::CorruptSnapshot(_))),
            "flip at {at}"
        );
    }
    assert!(matches!(
        t.restore(&snap[..snap.len() - 3]),
        Err(StorageError::CorruptSnapshot(_))
    ));
    assert_eq!(t.state().unwrap(), before);
}

fn seq_for_time(mk: Factory) {
    let s = mk(StreamLimits::default());
    assert_eq!(s.seq_for_time(0).unwrap(), None);
    for ts in [10, 20, 20, 30, 40, 50] {
        put(&s, "a", "x", ts);
    }
    s.delete_msg(4, false).unwrap();
    let at = |ts| s.seq_for_time(ts).unwrap();
    assert_eq!(at(0), Some(1));
    assert_eq!(at(10), Some(1));
    assert_eq!(at(11), Some(2));
    assert_eq!(at(20), Some(2));
    assert_eq!(at(25), Some(5));
    assert_eq!(at(40), Some(5));
    assert_eq!(at(50), Some(6));
    assert_eq!(at(51), None);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test] fn $case() { super::$case(crate::common::memory) })*
        }
        mod sled {
            $(#[test] fn $case() { super::$case(crate::common::sled) })*
        }
    };
}

suite!(
    append_get,
    state_figures,
    sequence_monotonic_across_purge,
    next_matching_filters,
    last_by_subject,
    delete_with_and_without_erase,
    purge_variants,
    limits_discard_old,
    limits_discard_new,
    max_age_expiry,
    update_limits_enforces,
    expectations,
    batch_results,
    consumers_and_config,
    snapshot_restore,
    seq_for_time,
);
