//! Publish and subscribe permission semantics (nats-server's, with the
//! subset rule for wildcard subscriptions).

use std::time::{Duration, Instant};

use tern_auth::{is_subset, Permissions, ResponsePermission, ResponseTracker, SubjectPermission};

/// (allow, deny, subject, queue, allowed)
type SubscribeCase<'a> = (&'a [&'a str], &'a [&'a str], &'a str, Option<&'a str>, bool);

fn list(allow: &[&str], deny: &[&str]) -> SubjectPermission {
    SubjectPermission {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    }
}

fn publish(allow: &[&str], deny: &[&str]) -> Permissions {
    Permissions {
        publish: list(allow, deny),
        ..Default::default()
    }
}

fn subscribe(allow: &[&str], deny: &[&str]) -> Permissions {
    Permissions {
        subscribe: list(allow, deny),
        ..Default::default()
    }
}

#[test]
fn publish_table() {
    // (allow, deny, subject, allowed)
    let cases: &[(&[&str], &[&str], &str, bool)] = &[
        (&[], &[], "anything.at.all", true),
        (&["foo"], &[], "foo", true),
        (&["foo"], &[], "bar", false),
        (&["foo.*"], &[], "foo.bar", true),
        (&["foo.*"], &[], "foo.bar.baz", false),
        (&["foo.>"], &[], "foo.bar.baz", true),
        (&["foo.>"], &[], "foo", false),
        (&[">"], &["$SYS.>"], "$SYS.REQ", false),
        (&[">"], &["$SYS.>"], "app.events", true),
        (&[], &["secret.*"], "secret.x", false),
        (&[], &["secret.*"], "secret.x.y", true),
        (&["foo.>"], &["foo.bar"], "foo.bar", false),
        (&["foo.>"], &["foo.bar"], "foo.baz", true),
        (&["a", "b.*"], &[], "b.1", true),
    ];
    for &(allow, deny, subject, expected) in cases {
        assert_eq!(
            publish(allow, deny).can_publish(subject),
            expected,
            "allow {allow:?} deny {deny:?} publish {subject}"
        );
    }
}

#[test]
fn subscribe_table() {
    let cases: &[SubscribeCase<'_>] = &[
        (&[], &[], "foo.>", None, true),
        (&["foo.bar"], &[], "foo.bar", None, true),
        (&["foo.bar"], &[], "foo.baz", None, false),
        // Subset rule for wildcard subscriptions.
        (&["foo.>"], &[], "foo.*", None, true),
        (&["foo.>"], &[], "foo.>", None, true),
        (&["foo.>"], &[], "foo.*.baz", None, true),
        (&["foo.bar"], &[], "foo.*", None, false),
        (&["foo.*"], &[], "foo.*", None, true),
        (&["foo.*"], &[], "foo.>", None, false),
        (&["foo.*"], &[], "foo.bar", None, true),
        (&["*.bar"], &[], "foo.*", None, false),
        (&[">"], &[], "*.*.>", None, true),
        (&["_INBOX.>"], &[], ">", None, false),
        // Deny wins when the subscription is inside the denied space...
        (&["foo.>"], &["foo.secret"], "foo.secret", None, false),
        (&["foo.>"], &["foo.secret.>"], "foo.secret.*", None, false),
        (&[], &["foo.*"], "foo.bar", None, false),
        (&[], &[">"], "any", None, false),
        // ...and a subscription that only overlaps it is accepted (filtered at delivery).
        (&["foo.>"], &["foo.secret"], "foo.*", None, true),
        // Queue entries.
        (&["jobs.> workers"], &[], "jobs.a", Some("workers"), true),
        (&["jobs.> workers"], &[], "jobs.a", Some("others"), false),
        (&["jobs.> workers"], &[], "jobs.a", None, false),
        (&["jobs.>", "jobs.> workers"], &[], "jobs.a", None, true),
        (
            &["jobs.>", "jobs.> workers"],
            &[],
            "jobs.a",
            Some("others"),
            false,
        ),
        (&["jobs.>"], &[], "jobs.a", Some("anyone"), true),
        (&["jobs.> w.*"], &[], "jobs.a", Some("w.1"), true),
        (&["jobs.> w.*"], &[], "jobs.a", Some("x.1"), false),
        (&[], &["jobs.> spies"], "jobs.a", Some("spies"), false),
        (&[], &["jobs.> spies"], "jobs.a", Some("workers"), true),
        (&[], &["jobs.> spies"], "jobs.a", None, true),
    ];
    for &(allow, deny, subject, queue, expected) in cases {
        assert_eq!(
            subscribe(allow, deny).can_subscribe(subject, queue),
            expected,
            "allow {allow:?} deny {deny:?} subscribe {subject} queue {queue:?}"
        );
    }
}

#[test]
fn delivery_filter_for_overlapping_deny() {
    let perms = subscribe(&["foo.>"], &["foo.secret", "q.> workers"]);
    assert!(perms.can_subscribe("foo.*", None));
    assert!(perms.needs_delivery_filter("foo.*"));
    assert!(!perms.can_receive("foo.secret"));
    assert!(perms.can_receive("foo.public"));
    // Literal subscriptions were fully checked at subscribe time.
    assert!(!perms.needs_delivery_filter("foo.public"));
    // A wildcard that cannot meet the deny list needs no filter.
    assert!(!perms.needs_delivery_filter("bar.*"));
    // Queue-scoped deny entries do not filter deliveries.
    assert!(!perms.needs_delivery_filter("q.*"));
}

#[test]
fn subset_relation() {
    for (subject, pattern, expected) in [
        ("foo.bar", "foo.bar", true),
        ("foo.bar", "foo.*", true),
        ("foo.bar", "foo.>", true),
        ("foo.*", "foo.>", true),
        ("foo.*", "foo.*", true),
        ("foo.*", "*.*", true),
        ("foo.*", "foo.bar", false),
        ("foo.>", "foo.*", false),
        ("foo.>", "foo.>", true),
        ("foo.>", ">", true),
        ("*", ">", true),
        (">", "*", false),
        ("foo.*.baz", "foo.>", true),
        ("foo.*.baz", "foo.*.*", true),
        ("foo.*.baz", "foo.bar.baz", false),
        ("foo.*", "foo.*.bar", false),
        ("foo.*.bar", "foo.*", false),
    ] {
        assert_eq!(
            is_subset(subject, pattern),
            expected,
            "{subject} within {pattern}"
        );
    }
}

#[test]
fn allow_responses_closes_blanket_publish() {
    let perms = Permissions {
        allow_responses: Some(ResponsePermission::default()),
        ..Default::default()
    };
    assert!(!perms.can_publish("anything"));

    let perms = Permissions {
        publish: list(&["events.>"], &[]),
        allow_responses: Some(ResponsePermission::default()),
        ..Default::default()
    };
    assert!(perms.can_publish("events.x"));
    assert!(!perms.can_publish("other"));
}

#[test]
fn response_permission_from_nats_defaults() {
    let p = ResponsePermission::from_nats(0, 0);
    assert_eq!(p, ResponsePermission::default());
    assert_eq!(p.max_msgs, Some(1));
    assert_eq!(p.expires, Some(Duration::from_secs(120)));
    let p = ResponsePermission::from_nats(-1, -1);
    assert_eq!((p.max_msgs, p.expires), (None, None));
    let p = ResponsePermission::from_nats(3, 5_000_000_000);
    assert_eq!(
        (p.max_msgs, p.expires),
        (Some(3), Some(Duration::from_secs(5)))
    );
}

#[test]
fn response_tracker_counts_and_expires() {
    let start = Instant::now();
    let mut tracker = ResponseTracker::new(ResponsePermission {
        max_msgs: Some(2),
        expires: Some(Duration::from_secs(10)),
    });
    assert!(!tracker.try_respond("_INBOX.a", start));

    tracker.on_request_delivered("_INBOX.a", start);
    assert!(tracker.try_respond("_INBOX.a", start));
    assert!(tracker.try_respond("_INBOX.a", start));
    assert!(!tracker.try_respond("_INBOX.a", start), "max_msgs is 2");
    assert!(tracker.is_empty());

    tracker.on_request_delivered("_INBOX.b", start);
    assert!(!tracker.try_respond("_INBOX.b", start + Duration::from_secs(11)));
    assert!(tracker.is_empty());
}

#[test]
fn response_tracker_stays_bounded() {
    let start = Instant::now();
    let mut tracker = ResponseTracker::new(ResponsePermission {
        max_msgs: None,
        expires: None,
    });
    for i in 0..200_000u32 {
        tracker.on_request_delivered(
            &format!("_INBOX.{i}"),
            start + Duration::from_nanos(i.into()),
        );
    }
    assert!(tracker.len() <= 16 * 4096, "{} tracked", tracker.len());
    assert!(tracker.try_respond("_INBOX.199999", start));
}
