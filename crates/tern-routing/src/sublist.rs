//! The subject trie.

use crate::FastMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::subject::{classify, is_valid_queue_name, split_first_token};
use crate::RoutingError;

/// Members of one queue group that matched a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup<T> {
    /// The queue group name, shared with the trie (cloning is cheap).
    pub name: Arc<str>,
    /// Every matching subscription of the group; never empty in a
    /// [`MatchResult`]. Deliver to one of them ([`crate::pick_member`]).
    pub members: Vec<T>,
}

/// Everything a published subject matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchResult<T> {
    /// Plain subscriptions: each one gets the message.
    pub plain: Vec<T>,
    /// Queue groups, each name once, members merged across all matching
    /// subscription subjects: each group gets the message once.
    pub queues: Vec<QueueGroup<T>>,
}

impl<T> Default for MatchResult<T> {
    fn default() -> Self {
        Self {
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl<T> MatchResult<T> {
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }

    /// How many deliveries one message makes: one per plain subscription
    /// plus one per queue group (the fan-out).
    pub fn len(&self) -> usize {
        self.plain.len() + self.queues.len()
    }
}

/// Counters for the monitoring `/subsz` endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SublistStats {
    /// Subscriptions currently stored.
    pub num_subscriptions: usize,
    /// Successful inserts since creation.
    pub num_inserts: u64,
    /// Successful removes since creation.
    pub num_removes: u64,
    /// Calls to [`Sublist::match_subject`] since creation.
    pub num_matches: u64,
    /// Trie nodes below the root; zero once every subscription is removed.
    pub num_nodes: usize,
}

/// Subscriptions ending at one trie node.
struct Subs<T> {
    plain: Vec<T>,
    queues: Vec<QueueGroup<T>>,
}

impl<T: Clone + PartialEq> Subs<T> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }

    fn insert(&mut self, queue: Option<&str>, value: T) {
        let Some(queue) = queue else {
            self.plain.push(value);
            return;
        };
        match self.queues.iter_mut().find(|g| &*g.name == queue) {
            Some(group) => group.members.push(value),
            None => self.queues.push(QueueGroup {
                name: Arc::from(queue),
                members: vec![value],
            }),
        }
    }

    /// Removes one entry equal to `value`; empty groups are dropped so a
    /// match never reports a memberless group.
    fn remove(&mut self, queue: Option<&str>, value: &T) -> bool {
        let Some(queue) = queue else {
            return remove_one(&mut self.plain, value);
        };
        let Some(gi) = self.queues.iter().position(|g| &*g.name == queue) else {
            return false;
        };
        let removed = remove_one(&mut self.queues[gi].members, value);
        if self.queues[gi].members.is_empty() {
            self.queues.swap_remove(gi);
        }
        removed
    }

    fn collect_into(&self, out: &mut MatchResult<T>) {
        out.plain.extend_from_slice(&self.plain);
        for group in &self.queues {
            // Few queue groups match any one subject, so a linear scan
            // beats hashing here.
            match out.queues.iter_mut().find(|g| g.name == group.name) {
                Some(merged) => merged.members.extend_from_slice(&group.members),
                None => out.queues.push(group.clone()),
            }
        }
    }
}

/// Removes the first element equal to `value`. Order within a node does not
/// matter, so `swap_remove` keeps this O(position).
fn remove_one<T: PartialEq>(values: &mut Vec<T>, value: &T) -> bool {
    match values.iter().position(|v| v == value) {
        Some(i) => {
            values.swap_remove(i);
            true
        }
        None => false,
    }
}

/// One trie level: the subscriptions whose subject ends here and the
/// children for the next token.
struct Node<T> {
    subs: Subs<T>,
    literal: FastMap<Box<str>, Node<T>>,
    /// Child for a `*` token.
    pwc: Option<Box<Node<T>>>,
    /// Child for a `>` token; it never has children of its own.
    fwc: Option<Box<Node<T>>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            subs: Subs {
                plain: Vec::new(),
                queues: Vec::new(),
            },
            literal: FastMap::default(),
            pwc: None,
            fwc: None,
        }
    }
}

impl<T: Clone + PartialEq> Node<T> {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.literal.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }

    fn child_mut(&mut self, token: &str) -> &mut Node<T> {
        match token {
            "*" => self.pwc.get_or_insert_with(Box::default),
            ">" => self.fwc.get_or_insert_with(Box::default),
            _ => self.literal.entry(Box::from(token)).or_default(),
        }
    }

    /// Collects matches for the tokens of `rest` (at least one token left).
    fn collect(&self, rest: &str, out: &mut MatchResult<T>) {
        let (token, tail) = split_first_token(rest);
        // `>` here covers this token and everything after it.
        if let Some(fwc) = &self.fwc {
            fwc.subs.collect_into(out);
        }
        if let Some(pwc) = &self.pwc {
            pwc.collect_or_end(tail, out);
        }
        if let Some(child) = self.literal.get(token) {
            child.collect_or_end(tail, out);
        }
    }

    fn collect_or_end(&self, tail: Option<&str>, out: &mut MatchResult<T>) {
        match tail {
            Some(tail) => self.collect(tail, out),
            None => self.subs.collect_into(out),
        }
    }

    /// Removes one subscription under `rest`, pruning children left empty.
    fn remove(&mut self, rest: &str, queue: Option<&str>, value: &T) -> bool {
        let (token, tail) = split_first_token(rest);
        let child = match token {
            "*" => self.pwc.as_deref_mut(),
            ">" => self.fwc.as_deref_mut(),
            _ => self.literal.get_mut(token),
        };
        let Some(child) = child else {
            return false;
        };
        let removed = match tail {
            Some(tail) => child.remove(tail, queue, value),
            None => child.subs.remove(queue, value),
        };
        if removed && child.is_empty() {
            match token {
                "*" => self.pwc = None,
                ">" => self.fwc = None,
                _ => {
                    self.literal.remove(token);
                }
            }
        }
        removed
    }

    fn count_nodes(&self) -> usize {
        let children = self
            .literal
            .values()
            .chain(self.pwc.as_deref())
            .chain(self.fwc.as_deref());
        children.map(|c| 1 + c.count_nodes()).sum()
    }

    fn list(&self, prefix: &mut String, out: &mut Vec<(String, Option<Arc<str>>, T)>) {
        for v in &self.subs.plain {
            out.push((prefix.clone(), None, v.clone()));
        }
        for group in &self.subs.queues {
            for v in &group.members {
                out.push((prefix.clone(), Some(group.name.clone()), v.clone()));
            }
        }
        let children = self
            .literal
            .iter()
            .map(|(token, node)| (&**token, node))
            .chain(self.pwc.as_deref().map(|n| ("*", n)))
            .chain(self.fwc.as_deref().map(|n| (">", n)));
        for (token, node) in children {
            let len = prefix.len();
            if len > 0 {
                prefix.push('.');
            }
            prefix.push_str(token);
            node.list(prefix, out);
            prefix.truncate(len);
        }
    }
}

/// The subscription trie: maps published subjects to the subscriptions
/// (plain and queue) they reach.
///
/// `T` is the server's subscription handle, typically an
/// `Arc<Subscription>` whose `PartialEq` is pointer equality. The same
/// value may be inserted more than once; each insert is a separate entry
/// and each [`remove`](Self::remove) takes one away. Removing a value
/// scans the values stored on its exact subject and queue, so it is linear
/// in how many share that subject.
///
/// `match_subject` takes `&self` so many readers can match at once under
/// a read lock; it counts matches in a relaxed atomic for the stats. Put a
/// [`MatchCache`](crate::MatchCache) per reader in front of it so repeated
/// subjects skip the trie (and that counter) entirely.
pub struct Sublist<T> {
    root: Node<T>,
    count: usize,
    generation: u64,
    num_inserts: u64,
    num_removes: u64,
    num_matches: AtomicU64,
}

impl<T> Default for Sublist<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            count: 0,
            generation: 0,
            num_inserts: 0,
            num_removes: 0,
            num_matches: AtomicU64::new(0),
        }
    }
}

impl<T> std::fmt::Debug for Sublist<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sublist")
            .field("count", &self.count)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + PartialEq> Sublist<T> {
    /// An empty sublist at generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subscription on `subject` (wildcards allowed), in queue
    /// group `queue` if given.
    pub fn insert(
        &mut self,
        subject: &str,
        queue: Option<&str>,
        value: T,
    ) -> Result<(), RoutingError> {
        if classify(subject).is_none() {
            return Err(RoutingError::InvalidSubject(subject.to_owned()));
        }
        if let Some(q) = queue {
            if !is_valid_queue_name(q) {
                return Err(RoutingError::InvalidQueue(q.to_owned()));
            }
        }
        let mut node = &mut self.root;
        for token in subject.split('.') {
            node = node.child_mut(token);
        }
        node.subs.insert(queue, value);
        self.count += 1;
        self.num_inserts += 1;
        self.generation += 1;
        Ok(())
    }

    /// Removes one subscription equal to `value` from `subject` and
    /// `queue`, pruning trie nodes left empty. Returns whether one was
    /// found; the generation only moves if so.
    pub fn remove(&mut self, subject: &str, queue: Option<&str>, value: &T) -> bool {
        if subject.is_empty() || !self.root.remove(subject, queue, value) {
            return false;
        }
        debug_assert!(self.count > 0, "removed from a sublist counting no entries");
        self.count -= 1;
        self.num_removes += 1;
        self.generation += 1;
        true
    }

    /// Every subscription a message published on `subject` reaches.
    ///
    /// A `*` or `>` token in `subject` is matched as nats-server matches
    /// it: as an ordinary token, so only `*` and `>` subscriptions take it
    /// (clients do publish such subjects, e.g. a JetStream consumer create
    /// request that carries its filter `orders.>` in the subject). A subject
    /// that is not well-formed (empty tokens, whitespace) matches nothing.
    pub fn match_subject(&self, subject: &str) -> MatchResult<T> {
        self.num_matches.fetch_add(1, Ordering::Relaxed);
        let mut out = MatchResult::default();
        if classify(subject).is_some() {
            self.root.collect(subject, &mut out);
        }
        out
    }

    /// Changes on every successful insert or remove; a
    /// [`MatchCache`](crate::MatchCache) entry is valid only for the
    /// generation it was computed at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of subscriptions stored.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether no subscriptions are stored.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Counters for monitoring. Walks the trie to count nodes, so it costs
    /// O(nodes): call it from monitoring, not per message.
    pub fn stats(&self) -> SublistStats {
        SublistStats {
            num_subscriptions: self.count,
            num_inserts: self.num_inserts,
            num_removes: self.num_removes,
            num_matches: self.num_matches.load(Ordering::Relaxed),
            num_nodes: self.root.count_nodes(),
        }
    }

    /// Every stored subscription as `(subject, queue, value)`, in no
    /// particular order, for monitoring listings.
    pub fn subjects(&self) -> Vec<(String, Option<Arc<str>>, T)> {
        let mut out = Vec::with_capacity(self.count);
        self.root.list(&mut String::new(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_plain(list: &Sublist<u32>, subject: &str) -> Vec<u32> {
        let mut plain = list.match_subject(subject).plain;
        plain.sort_unstable();
        plain
    }

    fn list_with(subjects: &[&str]) -> Sublist<u32> {
        let mut list = Sublist::new();
        for (id, subject) in (0u32..).zip(subjects) {
            list.insert(subject, None, id).unwrap();
        }
        list
    }

    #[test]
    fn literal_match() {
        let list = list_with(&["foo", "foo.bar", "bar"]);
        assert_eq!(sorted_plain(&list, "foo"), [0]);
        assert_eq!(sorted_plain(&list, "foo.bar"), [1]);
        assert_eq!(sorted_plain(&list, "baz"), Vec::<u32>::new());
        assert_eq!(sorted_plain(&list, "foo.bar.baz"), Vec::<u32>::new());
    }

    #[test]
    fn partial_wildcard_matches_one_token() {
        let list = list_with(&["*", "foo.*", "*.*", "foo.*.baz"]);
        assert_eq!(sorted_plain(&list, "foo"), [0]);
        assert_eq!(sorted_plain(&list, "foo.bar"), [1, 2]);
        assert_eq!(sorted_plain(&list, "x.y"), [2]);
        assert_eq!(sorted_plain(&list, "foo.bar.baz"), [3]);
        assert_eq!(sorted_plain(&list, "foo.bar.qux"), Vec::<u32>::new());
    }

    #[test]
    fn star_does_not_match_two_tokens() {
        let list = list_with(&["*"]);
        assert!(list.match_subject("foo.bar").is_empty());
    }

    #[test]
    fn full_wildcard_matches_one_or_more_tokens() {
        let list = list_with(&[">", "foo.>", "foo.*.>"]);
        assert_eq!(sorted_plain(&list, "foo"), [0]);
        assert_eq!(sorted_plain(&list, "foo.bar"), [0, 1]);
        assert_eq!(sorted_plain(&list, "foo.bar.baz"), [0, 1, 2]);
        assert_eq!(sorted_plain(&list, "bar.baz"), [0]);
    }

    #[test]
    fn fwc_does_not_match_its_prefix() {
        let list = list_with(&["foo.>"]);
        assert!(list.match_subject("foo").is_empty());
    }

    #[test]
    fn malformed_subjects_match_nothing() {
        let list = list_with(&[">", "*", "foo.*"]);
        for s in ["", "foo..bar", "a b", "foo.", "a.>.b"] {
            assert!(list.match_subject(s).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn wildcard_tokens_in_published_subjects_match_as_nats_server_does() {
        // Subscriptions: 0 `>`, 1 `*`, 2 `foo.*`, 3 `foo.bar`.
        let list = list_with(&[">", "*", "foo.*", "foo.bar"]);
        assert_eq!(sorted_plain(&list, "foo.*"), [0, 2]);
        assert_eq!(sorted_plain(&list, ">"), [0, 1]);
        assert_eq!(
            sorted_plain(&list, "$JS.API.CONSUMER.CREATE.S.C.orders.>"),
            [0]
        );
    }

    #[test]
    fn wildcard_chars_inside_tokens_are_literal() {
        let list = list_with(&["foo*", ">b.c"]);
        assert_eq!(sorted_plain(&list, "foo*"), [0]);
        assert!(list.match_subject("fooX").is_empty());
        assert_eq!(sorted_plain(&list, ">b.c"), [1]);
        assert!(list.match_subject("a.c").is_empty());
    }

    #[test]
    fn queue_groups_merge_across_subjects() {
        let mut list = Sublist::new();
        list.insert("foo.*", Some("q1"), 1).unwrap();
        list.insert("foo.bar", Some("q1"), 2).unwrap();
        list.insert("foo.>", Some("q2"), 3).unwrap();
        list.insert("foo.bar", None, 4).unwrap();
        list.insert("foo.baz", Some("q1"), 5).unwrap();
        let mut result = list.match_subject("foo.bar");
        assert_eq!(result.plain, [4]);
        result.queues.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(result.queues.len(), 2);
        assert_eq!(&*result.queues[0].name, "q1");
        result.queues[0].members.sort_unstable();
        assert_eq!(result.queues[0].members, [1, 2]);
        assert_eq!(&*result.queues[1].name, "q2");
        assert_eq!(result.queues[1].members, [3]);
        assert_eq!(result.len(), 3);
    }

    #[test]
    fn remove_prunes_every_node() {
        let subjects = [
            "foo", "foo.bar", "foo.*", "foo.>", ">", "*.baz.*", "a.b.c.d",
        ];
        let mut list = list_with(&subjects);
        list.insert("foo.bar", Some("q"), 99).unwrap();
        assert!(list.stats().num_nodes > 0);
        for (id, subject) in (0u32..).zip(subjects) {
            assert!(list.remove(subject, None, &id), "{subject}");
        }
        assert!(
            !list.remove("foo.bar", None, &99),
            "queue entry is not plain"
        );
        assert!(list.remove("foo.bar", Some("q"), &99));
        assert_eq!(list.count(), 0);
        let stats = list.stats();
        assert_eq!(stats.num_nodes, 0);
        assert_eq!(stats.num_inserts, 8);
        assert_eq!(stats.num_removes, 8);
        assert!(list.match_subject("foo.bar").is_empty());
    }

    #[test]
    fn remove_keeps_shared_prefixes() {
        let mut list = list_with(&["a.b", "a.b.c"]);
        assert!(list.remove("a.b.c", None, &1));
        assert_eq!(sorted_plain(&list, "a.b"), [0]);
        assert_eq!(list.stats().num_nodes, 2);
    }

    #[test]
    fn remove_missing_leaves_generation() {
        let mut list = list_with(&["a.b"]);
        let generation = list.generation();
        assert!(!list.remove("a.b", None, &7));
        assert!(!list.remove("a.c", None, &0));
        assert!(!list.remove("a.b", Some("q"), &0));
        assert!(!list.remove("", None, &0));
        assert!(!list.remove("a..b", None, &0));
        assert_eq!(list.generation(), generation);
        assert_eq!(list.count(), 1);
    }

    #[test]
    fn invalid_subjects_rejected() {
        let mut list = Sublist::new();
        for s in ["", "a..b", ".a", "a.", "a.>.b", "a b", "\t"] {
            assert_eq!(
                list.insert(s, None, 0),
                Err(RoutingError::InvalidSubject(s.to_owned()))
            );
        }
        for q in ["", "a b"] {
            assert_eq!(
                list.insert("foo", Some(q), 0),
                Err(RoutingError::InvalidQueue(q.to_owned()))
            );
        }
        assert_eq!(list.count(), 0);
        assert_eq!(list.generation(), 0);
        assert_eq!(list.stats().num_nodes, 0);
    }

    #[test]
    fn duplicate_values_are_separate_entries() {
        let mut list = Sublist::new();
        list.insert("foo", None, 1).unwrap();
        list.insert("foo", None, 1).unwrap();
        assert_eq!(list.count(), 2);
        assert_eq!(sorted_plain(&list, "foo"), [1, 1]);
        assert!(list.remove("foo", None, &1));
        assert_eq!(sorted_plain(&list, "foo"), [1]);
        assert!(list.remove("foo", None, &1));
        assert!(!list.remove("foo", None, &1));
        assert_eq!(list.stats().num_nodes, 0);
    }

    #[test]
    fn generation_moves_on_each_change() {
        let mut list = Sublist::new();
        let g0 = list.generation();
        list.insert("a", None, 1).unwrap();
        let g1 = list.generation();
        assert_ne!(g0, g1);
        assert!(list.insert("a..", None, 1).is_err());
        assert_eq!(list.generation(), g1);
        assert!(list.remove("a", None, &1));
        assert_ne!(list.generation(), g1);
    }

    #[test]
    fn subjects_lists_everything() {
        let mut list = Sublist::new();
        list.insert("foo.*", None, 1).unwrap();
        list.insert("foo.>", Some("q"), 2).unwrap();
        list.insert(">", None, 3).unwrap();
        list.insert("a.b.c", None, 4).unwrap();
        let mut listed: Vec<_> = list
            .subjects()
            .into_iter()
            .map(|(s, q, v)| (s, q.map(|q| q.to_string()), v))
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                (">".to_owned(), None, 3),
                ("a.b.c".to_owned(), None, 4),
                ("foo.*".to_owned(), None, 1),
                ("foo.>".to_owned(), Some("q".to_owned()), 2),
            ]
        );
    }

    #[test]
    fn matches_are_counted() {
        let list = list_with(&["a"]);
        list.match_subject("a");
        list.match_subject("b");
        assert_eq!(list.stats().num_matches, 2);
    }

    #[test]
    fn sublist_is_send_and_sync() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<Sublist<Arc<u32>>>();
    }
}
