//! Queue group member selection.

use crate::QueueGroup;

/// Picks the member of `group` that gets this message, uniformly at
/// random, so each message reaches exactly one member of each group and
/// load spreads over all of them.
///
/// # Panics
///
/// If `group` has no members. Groups in a [`MatchResult`](crate::MatchResult)
/// always have at least one.
pub fn pick_member<T>(group: &QueueGroup<T>) -> &T {
    &group.members[fastrand::usize(..group.members.len())]
}

/// Like [`pick_member`], drawing from `rng` so tests and simulations can
/// be deterministic.
///
/// # Panics
///
/// If `group` has no members.
pub fn pick_member_with<'a, T>(group: &'a QueueGroup<T>, rng: &mut fastrand::Rng) -> &'a T {
    &group.members[rng.usize(..group.members.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn picks_spread_over_all_members() {
        let group = QueueGroup {
            name: Arc::from("q"),
            members: vec![0usize, 1, 2, 3],
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[*pick_member_with(&group, &mut rng)] += 1;
        }
        // Each member expects 1000; a fair picker stays well inside this.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn single_member_always_picked() {
        let group = QueueGroup {
            name: Arc::from("q"),
            members: vec!["only"],
        };
        for _ in 0..10 {
            assert_eq!(*pick_member(&group), "only");
        }
    }
}
