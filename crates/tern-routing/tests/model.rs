//! Property tests: the sublist and match cache against a brute-force model.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tern_routing::{MatchCache, MatchResult, Sublist};

/// One subscription in the reference model.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    subject: String,
    queue: Option<String>,
    id: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Entry),
    /// Removes the model entry at this index (modulo its length), or a
    /// missing entry when the model is empty.
    RemoveExisting(usize),
    /// Removes an entry that may or may not exist.
    RemoveAny(Entry),
    /// Only used by the cache property.
    Match(String),
}

/// `a`, `b`, `c`, `*` tokens, 1 to 4 of them, optionally ending in `>`.
fn subscription_subject() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof!["a", "b", "c", "\\*"], 1..=4),
        any::<bool>(),
    )
        .prop_map(|(mut tokens, fwc)| {
            if fwc {
                *tokens.last_mut().unwrap() = ">".to_owned();
            }
            tokens.join(".")
        })
}

/// Literal subjects one token longer than subscriptions can be, so `>`
/// gets exercised past the subscription depth.
fn publish_subject() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["a", "b", "c"], 1..=5).prop_map(|t| t.join("."))
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        subscription_subject(),
        prop::option::of(prop_oneof!["q1", "q2"]),
        0u8..4,
    )
        .prop_map(|(subject, queue, id)| Entry { subject, queue, id })
}

fn mutation() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => entry().prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::RemoveExisting),
        1 => entry().prop_map(Op::RemoveAny),
    ]
}

/// The obvious token-by-token matcher.
fn reference_matches(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let subject: Vec<&str> = subject.split('.').collect();
    for (i, p) in pattern.iter().enumerate() {
        match *p {
            ">" => return subject.len() > i,
            "*" if i < subject.len() => {}
            literal if subject.get(i) == Some(&literal) => {}
            _ => return false,
        }
    }
    pattern.len() == subject.len()
}

/// A match result in comparable form: sorted plain ids and, per queue
/// name, sorted member ids.
type Normalized = (Vec<u8>, BTreeMap<String, Vec<u8>>);

fn reference_match(model: &[Entry], subject: &str) -> Normalized {
    let mut plain = Vec::new();
    let mut queues: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in model
        .iter()
        .filter(|e| reference_matches(&e.subject, subject))
    {
        match &e.queue {
            None => plain.push(e.id),
            Some(q) => queues.entry(q.clone()).or_default().push(e.id),
        }
    }
    plain.sort_unstable();
    for members in queues.values_mut() {
        members.sort_unstable();
    }
    (plain, queues)
}

fn normalize(result: &MatchResult<u8>) -> Normalized {
    let mut plain = result.plain.clone();
    plain.sort_unstable();
    let mut queues = BTreeMap::new();
    for group in &result.queues {
        assert!(
            !group.members.is_empty(),
            "empty queue group {}",
            group.name
        );
        let mut members = group.members.clone();
        members.sort_unstable();
        let previous = queues.insert(group.name.to_string(), members);
        assert!(previous.is_none(), "queue {} listed twice", group.name);
    }
    (plain, queues)
}

/// Trie nodes the model implies: one per distinct token prefix.
fn reference_node_count(model: &[Entry]) -> usize {
    let mut prefixes = BTreeSet::new();
    for e in model {
        let tokens: Vec<&str> = e.subject.split('.').collect();
        for n in 1..=tokens.len() {
            prefixes.insert(tokens[..n].join("."));
        }
    }
    prefixes.len()
}

/// Applies a mutation to both the sublist and the model, checking that
/// they agree on whether it changed anything.
fn apply(list: &mut Sublist<u8>, model: &mut Vec<Entry>, op: &Op) {
    let before = list.generation();
    let changed = match op {
        Op::Insert(e) => {
            list.insert(&e.subject, e.queue.as_deref(), e.id).unwrap();
            model.push(e.clone());
            true
        }
        Op::RemoveExisting(i) if !model.is_empty() => {
            let e = model.remove(i % model.len());
            assert!(list.remove(&e.subject, e.queue.as_deref(), &e.id));
            true
        }
        Op::RemoveExisting(_) => {
            assert!(!list.remove("a", None, &0));
            false
        }
        Op::RemoveAny(e) => {
            let found = model.iter().position(|m| m == e);
            let removed = list.remove(&e.subject, e.queue.as_deref(), &e.id);
            assert_eq!(removed, found.is_some());
            if let Some(i) = found {
                model.remove(i);
            }
            removed
        }
        Op::Match(_) => false,
    };
    assert_eq!(list.generation() != before, changed);
}

proptest! {
    #[test]
    fn sublist_agrees_with_reference(
        ops in prop::collection::vec(mutation(), 1..40),
        probes in prop::collection::vec(publish_subject(), 1..8),
    ) {
        let mut list = Sublist::new();
        let mut model = Vec::new();
        for op in &ops {
            apply(&mut list, &mut model, op);
            prop_assert_eq!(list.count(), model.len());
            prop_assert_eq!(list.stats().num_nodes, reference_node_count(&model));
            for subject in &probes {
                prop_assert_eq!(
                    normalize(&list.match_subject(subject)),
                    reference_match(&model, subject),
                    "subject {}", subject
                );
            }
        }

        let mut listed: Vec<_> = list
            .subjects()
            .into_iter()
            .map(|(s, q, id)| (s, q.map(|q| q.to_string()), id))
            .collect();
        let mut expected: Vec<_> = model
            .iter()
            .map(|e| (e.subject.clone(), e.queue.clone(), e.id))
            .collect();
        listed.sort();
        expected.sort();
        prop_assert_eq!(listed, expected);

        // Draining the model must leave an empty, fully pruned trie.
        while !model.is_empty() {
            apply(&mut list, &mut model, &Op::RemoveExisting(0));
        }
        prop_assert_eq!(list.count(), 0);
        prop_assert_eq!(list.stats().num_nodes, 0);
    }

    #[test]
    fn match_cache_never_stale(
        ops in prop::collection::vec(
            prop_oneof![
                2 => mutation(),
                3 => publish_subject().prop_map(Op::Match),
            ],
            1..60,
        ),
        capacity in 0usize..6,
    ) {
        let mut list = Sublist::new();
        let mut model = Vec::new();
        let mut cache = MatchCache::new(capacity);
        for op in &ops {
            match op {
                Op::Match(subject) => {
                    let cached = cache.get_or_match(&list, subject);
                    prop_assert!(cache.len() <= capacity);
                    prop_assert_eq!(normalize(&cached), reference_match(&model, subject));
                }
                _ => apply(&mut list, &mut model, op),
            }
        }
        let lookups = ops.iter().filter(|op| matches!(op, Op::Match(_))).count() as u64;
        prop_assert_eq!(cache.hits() + cache.misses(), lookups);
    }
}
