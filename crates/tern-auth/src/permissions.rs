//! Per-user publish and subscribe permissions, with nats-server's semantics.
//!
//! * An empty `allow` list allows everything, except that a publish allow
//!   list is "closed" when `allow_responses` is set (nats-server turns the
//!   blanket allow off so the user may publish only replies).
//! * `deny` always wins over `allow`.
//! * Publishing: the literal subject is matched against the patterns, as a
//!   message against subscriptions.
//! * Subscribing: the subscription subject must be a *subset* of an allowed
//!   pattern: allow `foo.>` permits `foo.*`, allow `foo.bar` does not permit
//!   `foo.*`, allow `foo.*` does not permit `foo.>`. A subscription is refused
//!   only when it is a subset of a denied pattern; one that merely overlaps a
//!   denied pattern (deny `foo.bar`, subscribe `foo.*`) is accepted, and the
//!   server must then drop denied messages at delivery — see
//!   [`Permissions::needs_delivery_filter`] and [`Permissions::can_receive`].
//!   (nats-server matches the subscription's tokens literally against the
//!   lists, so it would let allow `foo.*` admit `foo.>`; Tern does not.)
//! * Subscribe entries may name a queue group: `"foo.> workers"`. With a queue
//!   subscription, if any queue entry covers the subject, the queue must match
//!   one of them (queue names may use wildcards). Without a queue, queue
//!   entries are ignored. A deny entry with a queue denies only that queue.
//!
//! The checks allocate nothing; the server may cache results per subject.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tern_protocol::subject::{is_literal, matches};

/// nats-server's default for `allow_responses.max`.
pub const DEFAULT_RESPONSE_MAX_MSGS: u64 = 1;
/// nats-server's default for `allow_responses.expires`.
pub const DEFAULT_RESPONSE_EXPIRES: Duration = Duration::from_secs(120);

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish: SubjectPermission,
    /// Subjects (optionally `"subject queue"`) the user may subscribe to.
    pub subscribe: SubjectPermission,
    /// Whether, and for how long, the user may publish to reply subjects of
    /// requests it received.
    pub allow_responses: Option<ResponsePermission>,
}

/// Allow and deny lists of subject patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPermission {
    /// Patterns allowed; empty means all (see the module docs for the publish exception).
    pub allow: Vec<String>,
    /// Patterns denied; deny wins over allow.
    pub deny: Vec<String>,
}

impl SubjectPermission {
    /// Whether both lists are empty.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Limits on replies to received requests (`allow_responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    /// Replies allowed per request; `None` is unlimited.
    pub max_msgs: Option<u64>,
    /// How long after the request a reply may be sent; `None` is forever.
    pub expires: Option<Duration>,
}

impl Default for ResponsePermission {
    fn default() -> Self {
        Self {
            max_msgs: Some(DEFAULT_RESPONSE_MAX_MSGS),
            expires: Some(DEFAULT_RESPONSE_EXPIRES),
        }
    }
}

impl ResponsePermission {
    /// From nats-server's encoding (config `max`/`expires`, JWT `max`/`ttl`):
    /// zero takes the default, a negative value means unlimited.
    pub fn from_nats(max_msgs: i64, expires_nanos: i64) -> Self {
        let max_msgs = match max_msgs {
            0 => Some(DEFAULT_RESPONSE_MAX_MSGS),
            n if n < 0 => None,
            n => Some(n.unsigned_abs()),
        };
        let expires = match expires_nanos {
            0 => Some(DEFAULT_RESPONSE_EXPIRES),
            n if n < 0 => None,
            n => Some(Duration::from_nanos(n.unsigned_abs())),
        };
        Self { max_msgs, expires }
    }
}

impl Permissions {
    /// Whether the user may publish to the literal `subject`, by the lists
    /// alone. A `false` may still be overruled by a [`ResponseTracker`].
    pub fn can_publish(&self, subject: &str) -> bool {
        let list = &self.publish;
        let allowed = if list.allow.is_empty() {
            self.allow_responses.is_none()
        } else {
            list.allow
                .iter()
                .any(|p| matches(p.as_bytes(), subject.as_bytes()))
        };
        allowed
            && !list
                .deny
                .iter()
                .any(|p| matches(p.as_bytes(), subject.as_bytes()))
    }

    /// Whether the user may subscribe to `subject` (which may hold wildcards),
    /// optionally in queue group `queue`.
    pub fn can_subscribe(&self, subject: &str, queue: Option<&str>) -> bool {
        let list = &self.subscribe;
        let allowed = list.allow.is_empty() || {
            let mut plain = false;
            let mut queue_entry_covers = false;
            let mut queue_allowed = false;
            for (pattern, entry_queue) in list.allow.iter().map(|e| split_entry(e)) {
                if !is_subset(subject, pattern) {
                    continue;
                }
                match entry_queue {
                    None => plain = true,
                    Some(q) => {
                        queue_entry_covers = true;
                        queue_allowed |= queue.is_some_and(|name| queue_matches(name, q));
                    }
                }
            }
            // As nats-server: with a queue, queue entries covering the subject decide.
            if queue.is_some() && queue_entry_covers {
                queue_allowed
            } else {
                plain
            }
        };
        allowed
            && !list
                .deny
                .iter()
                .map(|e| split_entry(e))
                .any(|(pattern, entry_queue)| {
                    is_subset(subject, pattern)
                        && match entry_queue {
                            None => true,
                            Some(q) => queue.is_some_and(|name| queue_matches(name, q)),
                        }
                })
    }

    /// Whether an accepted subscription on `subject` can receive messages the
    /// subscribe deny list forbids, so the server must check each delivery
    /// with [`Permissions::can_receive`].
    pub fn needs_delivery_filter(&self, subject: &str) -> bool {
        !is_literal(subject.as_bytes())
            && self
                .subscribe
                .deny
                .iter()
                .map(|e| split_entry(e))
                .any(|(pattern, queue)| queue.is_none() && intersects(subject, pattern))
    }

    /// Whether a message on the literal `subject` may be delivered to this
    /// user, by the subscribe deny list.
    pub fn can_receive(&self, subject: &str) -> bool {
        !self
            .subscribe
            .deny
            .iter()
            .map(|e| split_entry(e))
            .any(|(pattern, queue)| {
                queue.is_none() && matches(pattern.as_bytes(), subject.as_bytes())
            })
    }
}

/// Splits a subscribe entry `"subject [queue]"`.
fn split_entry(entry: &str) -> (&str, Option<&str>) {
    let mut fields = entry.split_ascii_whitespace();
    let subject = fields.next().unwrap_or("");
    (subject, fields.next())
}

fn queue_matches(queue: &str, pattern: &str) -> bool {
    queue == pattern || (!is_literal(pattern.as_bytes()) && is_subset(queue, pattern))
}

/// Whether every subject matched by `subject` (which may hold wildcards) is
/// also matched by `pattern`.
pub fn is_subset(subject: &str, pattern: &str) -> bool {
    if is_literal(subject.as_bytes()) {
        return matches(pattern.as_bytes(), subject.as_bytes());
    }
    let mut s = subject.split('.');
    let mut p = pattern.split('.');
    loop {
        match (s.next(), p.next()) {
            (None, None) => return true,
            (Some(_), Some(">")) => return true,
            (Some(">"), _) => return false,
            (Some("*"), Some("*")) => {}
            (Some("*"), _) => return false,
            (Some(st), Some(pt)) if pt == "*" || st == pt => {}
            _ => return false,
        }
    }
}

/// Whether some literal subject is matched by both patterns.
fn intersects(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

/// The reply subjects a user with `allow_responses` may publish to: the reply
/// subjects of requests delivered to it, each for a limited number of
/// messages and time. Sans-IO: the caller passes `now`.
#[derive(Debug)]
pub struct ResponseTracker {
    permission: ResponsePermission,
    replies: HashMap<String, Reply>,
}

#[derive(Debug, Clone, Copy)]
struct Reply {
    received: Instant,
    sent: u64,
}

/// Above this many tracked replies, expired ones are pruned on insert
/// (nats-server's `replyPermLimit`).
const PRUNE_THRESHOLD: usize = 4096;

/// If pruning leaves more than this (replies that never expire), the older
/// half is forgotten, so memory stays bounded whatever the limits.
const HARD_LIMIT: usize = 16 * PRUNE_THRESHOLD;

impl ResponseTracker {
    /// A tracker enforcing `permission`.
    pub fn new(permission: ResponsePermission) -> Self {
        Self {
            permission,
            replies: HashMap::new(),
        }
    }

    /// Records that a message with reply subject `reply` was delivered to the user.
    pub fn on_request_delivered(&mut self, reply: &str, now: Instant) {
        if self.replies.len() >= PRUNE_THRESHOLD {
            self.prune(now);
        }
        self.replies.insert(
            reply.to_owned(),
            Reply {
                received: now,
                sent: 0,
            },
        );
    }

    /// Whether the user may publish to `subject` as a reply, counting the
    /// publish if so. Call only when [`Permissions::can_publish`] said no.
    pub fn try_respond(&mut self, subject: &str, now: Instant) -> bool {
        let Some(reply) = self.replies.get_mut(subject) else {
            return false;
        };
        if self
            .permission
            .expires
            .is_some_and(|ttl| now.duration_since(reply.received) > ttl)
        {
            self.replies.remove(subject);
            return false;
        }
        reply.sent += 1;
        if let Some(max) = self.permission.max_msgs {
            if reply.sent >= max {
                self.replies.remove(subject);
            }
        }
        true
    }

    /// How many reply subjects are tracked.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether no reply subject is tracked.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn prune(&mut self, now: Instant) {
        if let Some(ttl) = self.permission.expires {
            self.replies
                .retain(|_, r| now.duration_since(r.received) <= ttl);
        }
        if self.replies.len() >= HARD_LIMIT {
            let mut received: Vec<Instant> = self.replies.values().map(|r| r.received).collect();
            let mid = received.len() / 2;
            let (_, cut, _) = received.select_nth_unstable(mid);
            let cut = *cut;
            self.replies.retain(|_, r| r.received > cut);
        }
    }
}
