//! Who is in the cluster: the member table, how gossip merges into it, and
//! failure detection.
//!
//! Every node raises its own heartbeat counter each gossip round and sends
//! its whole table to its peers. A member whose counter stops rising for
//! `down_after` is *down* here (each node judges for itself); it is *up*
//! again as soon as the counter moves. A restarted node has a higher
//! incarnation, which replaces everything known about the old one. A node
//! that leaves on purpose is marked *left* and forgotten after a while.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::pb::{Member, MemberState};
use crate::FastMap;

/// Members a table holds at most: gossip naming more is not believed.
pub(crate) const MAX_MEMBERS: usize = 1024;

/// How long a departed member is remembered, so stale gossip about it does
/// not bring it back.
const LEFT_TOMBSTONE: Duration = Duration::from_secs(60);

/// The liveness of a member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its heartbeat is rising.
    Up,
    /// Its heartbeat stopped rising.
    Down,
    /// It left the cluster on purpose.
    Left,
}

impl Liveness {
    /// Lowercase name, for logs and monitoring.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::Down => "down",
            Liveness::Left => "left",
        }
    }
}

/// One member as this node knows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// What the member says about itself (addresses filled in when it
    /// advertised an unspecified host).
    pub member: Member,
    /// Up, down or left, by this node's judgement.
    pub liveness: Liveness,
    /// When its heartbeat last rose here.
    pub last_seen: Instant,
    /// When it was first learned of.
    pub since: Instant,
}

/// The member table of one node.
pub(crate) struct Membership {
    me: String,
    members: FastMap<String, MemberView>,
    down_after: Duration,
}

/// What a merge or a sweep changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Members that became up (new, restarted or back).
    pub(crate) up: Vec<String>,
    /// Members that became down or left.
    pub(crate) gone: Vec<String>,
    /// Something clients are told about changed (lame duck mode).
    pub(crate) updated: bool,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        self.up.is_empty() && self.gone.is_empty() && !self.updated
    }
}

impl Membership {
    pub(crate) fn new(me: Member, down_after: Duration) -> Self {
        let now = Instant::now();
        let id = me.node_id.clone();
        let mut members = FastMap::default();
        members.insert(
            id.clone(),
            MemberView {
                member: me,
                liveness: Liveness::Up,
                last_seen: now,
                since: now,
            },
        );
        Self {
            me: id,
            members,
            down_after,
        }
    }

    #[cfg(test)]
    pub(crate) fn me(&self) -> &Member {
        &self.members[&self.me].member
    }

    /// Raises this node's heartbeat for a new gossip round.
    pub(crate) fn beat(&mut self) {
        if let Some(view) = self.members.get_mut(&self.me) {
            view.member.heartbeat += 1;
            view.last_seen = Instant::now();
        }
    }

    /// Marks this node as in lame duck mode; peers hear it with the next
    /// heartbeat.
    pub(crate) fn set_lame_duck(&mut self) {
        if let Some(view) = self.members.get_mut(&self.me) {
            view.member.lame_duck = true;
        }
    }

    /// Marks this node as leaving.
    pub(crate) fn leave(&mut self) {
        if let Some(view) = self.members.get_mut(&self.me) {
            view.member.state = MemberState::Left as i32;
            view.liveness = Liveness::Left;
        }
    }

    /// The table as gossip sends it: every member but the long-forgotten.
    pub(crate) fn snapshot(&self) -> Vec<Member> {
        self.members.values().map(|v| v.member.clone()).collect()
    }

    pub(crate) fn views(&self) -> Vec<MemberView> {
        let mut views: Vec<_> = self.members.values().cloned().collect();
        views.sort_by(|a, b| a.member.name.cmp(&b.member.name));
        views
    }

    pub(crate) fn get(&self, node_id: &str) -> Option<&MemberView> {
        self.members.get(node_id)
    }

    /// Merges what a peer sent. `direct` is the sender's node id and the IP
    /// it connected from: the sender's own entry gets that IP where it
    /// advertised an unspecified host.
    pub(crate) fn merge(
        &mut self,
        incoming: Vec<Member>,
        direct: Option<(&str, IpAddr)>,
    ) -> Changes {
        let now = Instant::now();
        let mut changes = Changes::default();
        for mut member in incoming {
            if member.node_id.is_empty() || member.node_id == self.me {
                continue;
            }
            if let Some((sender, ip)) = direct {
                if sender == member.node_id {
                    member.cluster_addr = fill_host(&member.cluster_addr, ip);
                    member.client_addr = fill_host(&member.client_addr, ip);
                    member.monitor_addr = fill_host(&member.monitor_addr, ip);
                }
            }
            let left = member.state == MemberState::Left as i32;
            match self.members.get_mut(&member.node_id) {
                None => {
                    if left || self.members.len() >= MAX_MEMBERS {
                        continue;
                    }
                    changes.up.push(member.node_id.clone());
                    self.members.insert(
                        member.node_id.clone(),
                        MemberView {
                            member,
                            liveness: Liveness::Up,
                            last_seen: now,
                            since: now,
                        },
                    );
                }
                Some(view) => {
                    let known = &view.member;
                    if member.incarnation < known.incarnation {
                        continue;
                    }
                    let restarted = member.incarnation > known.incarnation;
                    if !restarted && view.liveness == Liveness::Left {
                        continue;
                    }
                    if !restarted && member.heartbeat <= known.heartbeat && !left {
                        continue;
                    }
                    // Keep addresses we filled in ourselves when the entry
                    // came second-hand with an unspecified host.
                    keep_specified(&mut member.cluster_addr, &known.cluster_addr);
                    keep_specified(&mut member.client_addr, &known.client_addr);
                    keep_specified(&mut member.monitor_addr, &known.monitor_addr);
                    let was = view.liveness;
                    if member.lame_duck != view.member.lame_duck {
                        changes.updated = true;
                    }
                    view.member = member;
                    view.last_seen = now;
                    if restarted {
                        view.since = now;
                    }
                    view.liveness = if left { Liveness::Left } else { Liveness::Up };
                    match (was, view.liveness) {
                        (Liveness::Up | Liveness::Down, Liveness::Left) => {
                            changes.gone.push(view.member.node_id.clone())
                        }
                        (Liveness::Down | Liveness::Left, Liveness::Up) => {
                            changes.up.push(view.member.node_id.clone())
                        }
                        (Liveness::Up, Liveness::Up) if restarted => {
                            // A quick restart: links must be made again.
                            changes.gone.push(view.member.node_id.clone());
                            changes.up.push(view.member.node_id.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
        changes
    }

    /// Marks left the member `node_id` in `incarnation`.
    pub(crate) fn mark_left(&mut self, node_id: &str, incarnation: u64) -> Changes {
        let mut changes = Changes::default();
        if node_id == self.me {
            return changes;
        }
        if let Some(view) = self.members.get_mut(node_id) {
            if view.member.incarnation == incarnation && view.liveness != Liveness::Left {
                changes.gone.push(node_id.to_owned());
                view.liveness = Liveness::Left;
                view.member.state = MemberState::Left as i32;
                view.last_seen = Instant::now();
            }
        }
        changes
    }

    /// Declares down the members whose heartbeat stalled and forgets those
    /// that left long ago.
    pub(crate) fn sweep(&mut self) -> Changes {
        let now = Instant::now();
        let mut changes = Changes::default();
        let down_after = self.down_after;
        let me = self.me.clone();
        self.members.retain(|id, view| {
            if *id == me {
                return true;
            }
            match view.liveness {
                Liveness::Up if now.duration_since(view.last_seen) > down_after => {
                    view.liveness = Liveness::Down;
                    changes.gone.push(id.clone());
                    true
                }
                Liveness::Left => now.duration_since(view.last_seen) < LEFT_TOMBSTONE,
                _ => true,
            }
        });
        changes
    }
}

/// `addr` with its host replaced by `ip` when the host is unspecified
/// (`0.0.0.0`, `::`) or missing.
pub(crate) fn fill_host(addr: &str, ip: IpAddr) -> String {
    if addr.is_empty() {
        return String::new();
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return addr.to_owned();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.parse::<IpAddr>().is_ok_and(|h| h.is_unspecified()) {
        match ip {
            IpAddr::V4(v4) => format!("{v4}:{port}"),
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        }
    } else {
        addr.to_owned()
    }
}

fn host_unspecified(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.is_empty() || host.parse::<IpAddr>().is_ok_and(|h| h.is_unspecified())
}

fn keep_specified(new: &mut String, known: &str) {
    if host_unspecified(new) && !host_unspecified(known) {
        let new_port = new.rsplit_once(':').map(|(_, p)| p);
        let known_port = known.rsplit_once(':').map(|(_, p)| p);
        if new_port == known_port {
            *new = known.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, incarnation: u64, heartbeat: u64) -> Member {
        Member {
            node_id: id.into(),
            name: id.into(),
            incarnation,
            heartbeat,
            state: MemberState::Alive as i32,
            cluster_addr: "0.0.0.0:7000".into(),
            client_addr: "127.0.0.1:4222".into(),
            monitor_addr: String::new(),
            lame_duck: false,
        }
    }

    #[test]
    fn learns_members_and_fills_the_senders_host() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_secs(3));
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let changes = table.merge(vec![member("b", 1, 1), member("c", 1, 1)], Some(("b", ip)));
        assert_eq!(changes.up.len(), 2);
        assert_eq!(table.get("b").unwrap().member.cluster_addr, "10.0.0.2:7000");
        assert_eq!(table.get("c").unwrap().member.cluster_addr, "0.0.0.0:7000");
        // Second-hand news about b with the unspecified host keeps ours.
        table.merge(vec![member("b", 1, 5)], None);
        assert_eq!(table.get("b").unwrap().member.cluster_addr, "10.0.0.2:7000");
        assert_eq!(table.get("b").unwrap().member.heartbeat, 5);
    }

    #[test]
    fn old_heartbeats_and_incarnations_are_ignored() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_secs(3));
        table.merge(vec![member("b", 2, 10)], None);
        assert!(table.merge(vec![member("b", 2, 3)], None).is_empty());
        assert!(table.merge(vec![member("b", 1, 99)], None).is_empty());
        assert_eq!(table.get("b").unwrap().member.heartbeat, 10);
        // Gossip about ourselves never changes our own entry.
        table.merge(vec![member("me", 9, 9)], None);
        assert_eq!(table.me().incarnation, 1);
    }

    #[test]
    fn stalled_heartbeat_is_down_and_rising_again_is_up() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_millis(0));
        table.merge(vec![member("b", 1, 1)], None);
        std::thread::sleep(Duration::from_millis(2));
        let changes = table.sweep();
        assert_eq!(changes.gone, vec!["b".to_owned()]);
        assert_eq!(table.get("b").unwrap().liveness, Liveness::Down);
        let changes = table.merge(vec![member("b", 1, 2)], None);
        assert_eq!(changes.up, vec!["b".to_owned()]);
    }

    #[test]
    fn a_left_member_stays_left_until_it_restarts() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_secs(3));
        table.merge(vec![member("b", 1, 1)], None);
        let changes = table.mark_left("b", 1);
        assert_eq!(changes.gone, vec!["b".to_owned()]);
        assert!(table.merge(vec![member("b", 1, 50)], None).is_empty());
        assert_eq!(table.get("b").unwrap().liveness, Liveness::Left);
        let changes = table.merge(vec![member("b", 2, 0)], None);
        assert_eq!(changes.up, vec!["b".to_owned()]);
    }

    #[test]
    fn a_quick_restart_is_reported_as_gone_and_up() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_secs(3));
        table.merge(vec![member("b", 1, 1)], None);
        let changes = table.merge(vec![member("b", 2, 0)], None);
        assert_eq!(changes.gone, vec!["b".to_owned()]);
        assert_eq!(changes.up, vec!["b".to_owned()]);
    }

    #[test]
    fn gossip_cannot_grow_the_table_without_bound() {
        let mut table = Membership::new(member("me", 1, 0), Duration::from_secs(3));
        let flood: Vec<Member> = (0..3 * MAX_MEMBERS)
            .map(|i| member(&format!("n{i}"), 1, 1))
            .collect();
        table.merge(flood, None);
        assert_eq!(table.views().len(), MAX_MEMBERS);
    }

    #[test]
    fn fill_host_handles_v6_and_named_hosts() {
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(fill_host("[::]:7000", v6), "[fd00::1]:7000");
        assert_eq!(fill_host("node-a:7000", v6), "node-a:7000");
        assert_eq!(fill_host(":7000", v6), "[fd00::1]:7000");
    }
}
