//! A bounded per-reader cache of match results.

use crate::FastMap;
use std::sync::Arc;

use crate::{MatchResult, Sublist};

/// Caches [`MatchResult`]s by published subject for one reader (e.g. one
/// connection task), so hot subjects skip the trie.
///
/// Every entry belongs to one [`Sublist::generation`]: a lookup or insert
/// at any other generation clears the cache first, so a result is never
/// returned for a generation other than the one it was computed at. When
/// the cache is full an arbitrary half of it is dropped, which keeps
/// inserts O(1) amortized without per-entry bookkeeping. Readers that see
/// many subjects only once (reply inboxes, JetStream ack subjects) use
/// [`MatchCache::offer`], which caches a subject on its second miss.
#[derive(Debug)]
pub struct MatchCache<T> {
    /// Keyed by the subject's bytes, so a reader can look up straight from
    /// its read buffer without validating UTF-8 first.
    entries: FastMap<Box<[u8]>, Arc<MatchResult<T>>>,
    generation: u64,
    max_entries: usize,
    hits: u64,
    misses: u64,
    /// Hashes of subjects offered once lately (see [`MatchCache::offer`]),
    /// one per slot; a newer subject overwrites an older one's slot.
    seen: Box<[u64]>,
    hasher: foldhash::fast::RandomState,
}

impl<T: Clone + PartialEq> MatchCache<T> {
    /// A cache holding at most `max_entries` subjects; 0 disables caching.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: FastMap::default(),
            generation: 0,
            max_entries,
            hits: 0,
            misses: 0,
            seen: vec![0; max_entries.next_power_of_two()].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The cached result for `subject`, if it was computed at
    /// `generation`.
    pub fn get<S: AsRef<[u8]> + ?Sized>(
        &mut self,
        subject: &S,
        generation: u64,
    ) -> Option<Arc<MatchResult<T>>> {
        let subject = subject.as_ref();
        self.sync_generation(generation);
        match self.entries.get(subject) {
            Some(result) => {
                self.hits += 1;
                Some(Arc::clone(result))
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Stores `result`, which must have been computed for `subject` at
    /// `generation`.
    pub fn insert<S: AsRef<[u8]> + ?Sized>(
        &mut self,
        subject: &S,
        generation: u64,
        result: Arc<MatchResult<T>>,
    ) {
        let subject = subject.as_ref();
        self.sync_generation(generation);
        if self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(subject) {
            self.evict_half();
        }
        self.entries.insert(Box::from(subject), result);
    }

    /// Stores `result` (computed for `subject` at `generation`) only if
    /// `subject` was offered before lately: a subject published once, such
    /// as a request's reply inbox or a JetStream ack subject, would take an
    /// entry (and, the cache full, evict half of the others) for nothing.
    /// A subject published twice is cached from its second miss on.
    pub fn offer<S: AsRef<[u8]> + ?Sized>(
        &mut self,
        subject: &S,
        generation: u64,
        result: Arc<MatchResult<T>>,
    ) {
        let subject = subject.as_ref();
        if self.seen.is_empty() {
            return;
        }
        use std::hash::BuildHasher;
        // 0 marks an empty slot.
        let hash = self.hasher.hash_one(subject) | 1;
        let slot = &mut self.seen[(hash as usize) & (self.seen.len() - 1)];
        if *slot == hash {
            *slot = 0;
            self.insert(subject, generation, result);
        } else {
            *slot = hash;
        }
    }

    /// The match for `subject` in `sublist`, from the cache when it is
    /// current, otherwise computed and cached.
    pub fn get_or_match(&mut self, sublist: &Sublist<T>, subject: &str) -> Arc<MatchResult<T>> {
        let generation = sublist.generation();
        if let Some(result) = self.get(subject, generation) {
            return result;
        }
        let result = Arc::new(sublist.match_subject(subject));
        self.insert(subject, generation, Arc::clone(&result));
        result
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that found nothing current.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Subjects currently cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry when the caller's generation differs from ours.
    fn sync_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
        }
    }

    fn evict_half(&mut self) {
        // HashMap iteration order is arbitrary, which serves as a cheap
        // random choice of victims.
        let mut keep = self.entries.len() / 2;
        self.entries.retain(|_, _| {
            if keep == 0 {
                return false;
            }
            keep -= 1;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_after_insert_same_generation() {
        let mut list = Sublist::new();
        list.insert("foo", None, 1u32).unwrap();
        let mut cache = MatchCache::new(8);
        let first = cache.get_or_match(&list, "foo");
        let second = cache.get_or_match(&list, "foo");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
    }

    #[test]
    fn generation_change_invalidates() {
        let mut list = Sublist::new();
        list.insert("foo", None, 1u32).unwrap();
        let mut cache = MatchCache::new(8);
        assert_eq!(cache.get_or_match(&list, "foo").plain, [1]);
        list.insert("foo", None, 2).unwrap();
        let mut plain = cache.get_or_match(&list, "foo").plain.clone();
        plain.sort_unstable();
        assert_eq!(plain, [1, 2]);
        assert_eq!(cache.misses(), 2);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stale_insert_never_served_for_newer_generation() {
        let mut cache = MatchCache::<u32>::new(8);
        cache.insert("foo", 5, Arc::new(MatchResult::default()));
        assert!(cache.get("foo", 6).is_none());
        cache.insert("foo", 5, Arc::new(MatchResult::default()));
        assert!(cache.get("foo", 5).is_some());
        assert!(cache.get("foo", 4).is_none());
    }

    #[test]
    fn stays_bounded() {
        let mut cache = MatchCache::<u32>::new(4);
        for i in 0..100 {
            cache.insert(&format!("s{i}"), 1, Arc::new(MatchResult::default()));
            assert!(cache.len() <= 4);
        }
        // The newest entry always survives its own insert.
        assert!(cache.get("s99", 1).is_some());
    }

    #[test]
    fn an_offered_subject_is_cached_from_its_second_miss() {
        let mut cache = MatchCache::<u32>::new(8);
        let result = Arc::new(MatchResult::default());
        cache.offer("foo", 1, Arc::clone(&result));
        assert!(cache.get("foo", 1).is_none());
        cache.offer("foo", 1, Arc::clone(&result));
        assert!(cache.get("foo", 1).is_some());
        // Across a generation change the subject counts as seen: its next
        // miss caches it again.
        assert!(cache.get("foo", 2).is_none());
        cache.offer("foo", 2, Arc::clone(&result));
        cache.offer("foo", 2, Arc::clone(&result));
        assert!(cache.get("foo", 2).is_some());
    }

    #[test]
    fn subjects_offered_once_take_no_entries() {
        let mut cache = MatchCache::<u32>::new(4);
        cache.offer("hot", 1, Arc::new(MatchResult::default()));
        cache.offer("hot", 1, Arc::new(MatchResult::default()));
        for i in 0..1000 {
            let inbox = format!("_INBOX.abc.{i}");
            assert!(cache.get(&inbox, 1).is_none());
            cache.offer(&inbox, 1, Arc::new(MatchResult::default()));
        }
        // The one-off subjects never evicted the hot one.
        assert_eq!(cache.len(), 1);
        assert!(cache.get("hot", 1).is_some());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut cache = MatchCache::<u32>::new(0);
        cache.insert("foo", 1, Arc::new(MatchResult::default()));
        cache.offer("foo", 1, Arc::new(MatchResult::default()));
        cache.offer("foo", 1, Arc::new(MatchResult::default()));
        assert!(cache.is_empty());
        assert!(cache.get("foo", 1).is_none());
    }
}
