//! Random operation sequences give the same results, state, reads and
//! snapshot on the memory store and the file store (also after reopening).

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use tern_storage::{
    Append, ConsumerState, DiscardPolicy, MemoryStore, PurgeRequest, Storage, StreamLimits,
    StreamOp, StreamStore,
};

const SUBJECTS: &[&str] = &["a", "b.c", "b.d", "e.f.g", "kv.x", "kv.y"];
const FILTERS: &[&str] = &[
    ">", "", "a", "b.*", "*.c", "e.>", "kv.x", "kv.*", "zz", "*.*.*",
];

fn limits() -> impl Strategy<Value = StreamLimits> {
    (
        proptest::option::weighted(0.25, 0u64..30),
        proptest::option::weighted(0.25, 0u64..1500),
        proptest::option::weighted(0.3, 0u64..6),
        proptest::option::weighted(0.2, 0u64..40),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(max_msgs, max_bytes, per_subject, max_size, new, new_per)| StreamLimits {
                max_msgs,
                max_bytes,
                max_age: None,
                max_msgs_per_subject: per_subject,
                max_msg_size: max_size,
                discard: if new {
                    DiscardPolicy::New
                } else {
                    DiscardPolicy::Old
                },
                discard_new_per_subject: new_per,
            },
        )
}

/// An operation with its timestamp left relative; made absolute in order.
#[derive(Debug, Clone)]
enum Gen {
    Append {
        subject: usize,
        payload: usize,
        headers: bool,
        ts_step: u64,
        expect_last: Option<u64>,
        expect_subject: Option<u64>,
    },
    /// Delete at a fraction (per mille) of the current first..=last span.
    Delete(u64, bool),
    /// Filter, up-to sequence as a fraction of the span, keep.
    Purge(Option<usize>, Option<u64>, Option<u64>),
    /// Expire the oldest timestamps up to first_ts plus this.
    Expire(u64),
    Limits(StreamLimits),
    Consumer(usize, u64),
    DeleteConsumer(usize),
    Config(u8),
}

fn gen_op() -> impl Strategy<Value = Gen> {
    prop_oneof![
        12 => (
            0..SUBJECTS.len(),
            0usize..24,
            any::<bool>(),
            0u64..3,
            proptest::option::weighted(0.05, 0u64..40),
            proptest::option::weighted(0.05, 0u64..40),
        )
            .prop_map(|(subject, payload, headers, ts_step, expect_last, expect_subject)| {
                Gen::Append { subject, payload, headers, ts_step, expect_last, expect_subject }
            }),
        4 => (0u64..1100, any::<bool>()).prop_map(|(s, e)| Gen::Delete(s, e)),
        1 => (
            proptest::option::weighted(0.7, 0..FILTERS.len()),
            proptest::option::weighted(0.4, 0u64..1300),
            proptest::option::weighted(0.4, 0u64..6),
        )
            .prop_map(|(f, s, k)| Gen::Purge(f, s, k)),
        1 => (0u64..4).prop_map(Gen::Expire),
        1 => limits().prop_map(Gen::Limits),
        1 => (0usize..3, 0u64..50).prop_map(|(c, s)| Gen::Consumer(c, s)),
        1 => (0usize..3).prop_map(Gen::DeleteConsumer),
        1 => any::<u8>().prop_map(Gen::Config),
    ]
}

/// Turns generated operations into real ones, aimed at what `store` holds
/// now (both stores get the same operations).
fn materialize(gens: &[Gen], ts: &mut u64, store: &dyn StreamStore) -> Vec<StreamOp> {
    let st = store.state().unwrap();
    let span = st.last_seq + 1 - st.first_seq.min(st.last_seq + 1) + 2;
    let at = |per_mille: u64| st.first_seq.saturating_sub(1) + span * per_mille / 1000;
    gens.iter()
        .map(|g| match g.clone() {
            Gen::Append {
                subject,
                payload,
                headers,
                ts_step,
                expect_last,
                expect_subject,
            } => {
                *ts += ts_step;
                let mut a = Append::new(
                    Bytes::from_static(SUBJECTS[subject].as_bytes()),
                    Bytes::from(vec![b'x'; payload]),
                    *ts,
                );
                if headers {
                    a = a.with_headers(Bytes::from_static(b"NATS/1.0\r\nK: v\r\n\r\n"));
                }
                a.expected_last_seq = expect_last;
                a.expected_last_subject_seq = expect_subject;
                StreamOp::Append(a)
            }
            Gen::Delete(frac, erase) => StreamOp::Delete {
                seq: at(frac),
                erase,
            },
            Gen::Purge(filter, up_to, keep) => StreamOp::Purge(PurgeRequest {
                filter: filter.map(|f| Bytes::from_static(FILTERS[f].as_bytes())),
                up_to_seq: up_to.map(at),
                keep,
            }),
            Gen::Expire(after) => StreamOp::ExpireBefore {
                timestamp_ns: st.first_ts + after,
            },
            Gen::Limits(l) => StreamOp::UpdateLimits(l),
            Gen::Consumer(c, seq) => {
                let mut state = ConsumerState {
                    delivered_stream_seq: seq,
                    delivered_consumer_seq: seq / 2,
                    ..ConsumerState::default()
                };
                state.pending.insert(seq, (seq / 2, *ts));
                state.redelivered.insert(seq, 1);
                StreamOp::SaveConsumerState {
                    name: format!("c{c}"),
                    state,
                }
            }
            Gen::DeleteConsumer(c) => StreamOp::DeleteConsumer {
                name: format!("c{c}"),
            },
            Gen::Config(b) => StreamOp::SaveStreamConfig(Bytes::from(vec![b; 3])),
        })
        .collect()
}

/// Everything observable about a stream, read through the trait.
fn observe(s: &dyn StreamStore) -> String {
    let st = s.state().unwrap();
    let mut out = format!("{st:?}\n{:?}\n", s.limits());
    for seq in 0..=st.last_seq + 1 {
        out += &format!("get {seq} {:?}\n", s.get(seq));
    }
    out += &format!("deleted {:?}\n", s.deleted_seqs());
    for f in FILTERS {
        let fb = f.as_bytes();
        out += &format!("subjects {f} {:?}\n", s.subjects_state(fb));
        out += &format!(
            "last {f} {:?}\n",
            s.last_by_subject(fb).map(|m| m.map(|m| m.seq))
        );
        for seq in [0, 1, st.first_seq, st.first_seq + 2, st.last_seq] {
            out += &format!(
                "next {f} {seq} {:?}\n",
                s.next_matching(seq, fb).map(|m| m.map(|m| m.seq))
            );
            out += &format!("count {f} {seq} {:?}\n", s.count_matching(fb, seq));
        }
    }
    for ts in [0, 5, 20, 60] {
        out += &format!("time {ts} {:?}\n", s.seq_for_time(ts));
    }
    out += &format!(
        "consumers {:?}\nconfig {:?}\n",
        s.load_consumers(),
        s.stream_config()
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 60,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_and_file_stores_agree(
        initial in limits(),
        gens in proptest::collection::vec(gen_op(), 1..120),
        cuts in proptest::collection::vec(1usize..12, 1..70),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemoryStore::new("S", initial.clone());
        let snapshot;
        {
            let storage = Storage::open(dir.path()).unwrap();
            let file: Arc<dyn StreamStore> = storage.create_stream("S", initial).unwrap();
            let mut rest = gens.as_slice();
            let mut cuts = cuts.iter().cycle();
            let mut ts = 0;
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap()).min(rest.len());
                let (gens, tail) = rest.split_at(n);
                rest = tail;
                let batch = materialize(gens, &mut ts, &mem);
                let a = mem.apply_batch(batch.to_vec());
                let b = file.apply_batch(batch.to_vec());
                prop_assert_eq!(a, b, "batch {:?}", batch);
                // Reads between batches, so caches outlive mutations.
                let st = mem.state().unwrap();
                let mid = st.first_seq + st.last_seq.saturating_sub(st.first_seq) / 2;
                for seq in [st.first_seq, mid, st.last_seq] {
                    prop_assert_eq!(mem.get(seq), file.get(seq));
                    prop_assert_eq!(mem.next_matching(seq, b">"), file.next_matching(seq, b">"));
                }
            }
            let expected = observe(&mem);
            prop_assert_eq!(&observe(&*file), &expected);
            snapshot = mem.snapshot().unwrap();
            prop_assert_eq!(&file.snapshot().unwrap(), &snapshot);
        }
        let storage = Storage::open(dir.path()).unwrap();
        let file = storage.open_stream("S").unwrap();
        prop_assert_eq!(observe(&*file), observe(&mem));
        prop_assert_eq!(file.snapshot().unwrap(), snapshot.clone());
        // And a memory store restored from the file store's snapshot.
        let copy = MemoryStore::new("S", StreamLimits::default());
        copy.restore(&snapshot).unwrap();
        prop_assert_eq!(observe(&copy), observe(&mem));
    }
}
