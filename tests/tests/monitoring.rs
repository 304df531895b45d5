//! The monitoring endpoints (`-m PORT`) against a real `tern-server`: field
//! names, order and figures as nats-server serves them (see
//! `docs/nats-wire-behaviour.md` §12), plus Prometheus `/metrics`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use tern_tests::{eventually, Launch, RawClient, TernServer};

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;
const WAIT: Duration = Duration::from_secs(5);

/// nats-server 2.9's `/varz` top-level keys, in its order.
const VARZ_KEYS: &[&str] = &[
    "server_id",
    "server_name",
    "version",
    "proto",
    "go",
    "host",
    "port",
    "max_connections",
    "ping_interval",
    "ping_max",
    "http_host",
    "http_port",
    "http_base_path",
    "https_port",
    "auth_timeout",
    "max_control_line",
    "max_payload",
    "max_pending",
    "cluster",
    "gateway",
    "leaf",
    "mqtt",
    "websocket",
    "jetstream",
    "tls_timeout",
    "write_deadline",
    "start",
    "now",
    "uptime",
    "mem",
    "cores",
    "gomaxprocs",
    "cpu",
    "connections",
    "total_connections",
    "routes",
    "remotes",
    "leafnodes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "slow_consumers",
    "subscriptions",
    "http_req_stats",
    "config_load_time",
    "system_account",
];

/// nats-server's connz connection object keys, in order, for a client that
/// sent name, lang and version.
const CONN_KEYS: &[&str] = &[
    "cid",
    "kind",
    "type",
    "ip",
    "port",
    "start",
    "last_activity",
    "rtt",
    "uptime",
    "idle",
    "pending_bytes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "subscriptions",
    "name",
    "lang",
    "version",
];

/// nats-server's sublist statistics keys, in order.
const SUBLIST_STATS_KEYS: &[&str] = &[
    "num_subscriptions",
    "num_cache",
    "num_inserts",
    "num_removes",
    "num_matches",
    "cache_hit_rate",
    "max_fanout",
    "avg_fanout",
];

/// The `tern_*` metrics docs/operations.md promises.
const METRICS: &[&str] = &[
    "tern_connections",
    "tern_connections_total",
    "tern_subscriptions",
    "tern_in_msgs_total",
    "tern_out_msgs_total",
    "tern_in_bytes_total",
    "tern_out_bytes_total",
    "tern_slow_consumers_total",
    "tern_uptime_seconds",
    "tern_memory_rss_bytes",
];

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn key_set(v: &Value) -> BTreeSet<String> {
    keys(v).into_iter().collect()
}

/// Every key of `want` is present in `got`, in `want`'s relative order.
fn assert_keys_in_order(got: &[String], want: &[&str], what: &str) {
    let missing: Vec<&&str> = want
        .iter()
        .filter(|k| !got.iter().any(|g| g == *k))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: missing keys {missing:?} in {got:?}"
    );
    let positions: Vec<usize> = want
        .iter()
        .map(|k| got.iter().position(|g| g == k).unwrap())
        .collect();
    for (pair, keys) in positions.windows(2).zip(want.windows(2)) {
        assert!(
            pair[0] < pair[1],
            "{what}: {:?} should come before {:?}; got order {got:?}",
            keys[0],
            keys[1]
        );
    }
}

fn names(want: &[&str]) -> Vec<String> {
    want.iter().map(|s| s.to_string()).collect()
}

/// Polls `path` until `done` holds (bounded), and returns the last body.
fn poll_json(server: &TernServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    eventually(WAIT, || {
        last = server.http_json(path);
        done(&last)
    });
    last
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned number in {v}"))
}

/// A raw client with CONNECT name/lang/version, its subscriptions made.
fn named_client(server: &TernServer, name: &str, subs: &[&str]) -> RawClient {
    let mut c = RawClient::connect_with(
        server.addr,
        &format!(
            r#"{{"verbose":false,"pedantic":false,"name":"{name}","lang":"rust","version":"1.2.3"}}"#
        ),
    );
    for (i, sub) in subs.iter().enumerate() {
        c.send(format!("SUB {sub} {}\r\n", i + 1).as_bytes());
    }
    assert!(c.ping_pong().ends_with(b"PONG\r\n"));
    c
}

fn cid_of(c: &RawClient) -> u64 {
    c.info_json()["client_id"].as_u64().expect("client_id")
}

#[test]
fn healthz_is_ok() {
    let server = TernServer::launch(Launch::monitored());
    let resp = server.http_get("/healthz");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, r#"{"status":"ok"}"#);
    assert!(
        resp.content_type.starts_with("application/json"),
        "{}",
        resp.content_type
    );
}

#[test]
fn varz_has_nats_server_keys_and_defaults() {
    let server = TernServer::launch(Launch::monitored());
    let resp = server.http_get("/varz");
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type.starts_with("application/json"),
        "{}",
        resp.content_type
    );
    let varz: Value = serde_json::from_str(&resp.body).expect("varz json");
    assert_keys_in_order(&keys(&varz), VARZ_KEYS, "/varz");

    let http = server.http.unwrap();
    assert_eq!(varz["proto"], 1);
    assert_eq!(varz["host"], "127.0.0.1");
    assert_eq!(varz["port"], server.addr.port());
    assert_eq!(varz["http_port"], http.port());
    assert_eq!(varz["max_connections"], 65536);
    assert_eq!(varz["max_control_line"], 4096);
    assert_eq!(varz["max_payload"], 1048576);
    assert_eq!(varz["max_pending"], 67108864);
    assert_eq!(varz["ping_interval"], 120_000_000_000u64);
    assert_eq!(varz["ping_max"], 2);
    assert_eq!(varz["write_deadline"], 10_000_000_000u64);
    assert_eq!(varz["auth_timeout"].as_f64(), Some(2.0));
    assert_eq!(varz["connections"], 0);
    assert_eq!(varz["total_connections"], 0);
    assert_eq!(varz["routes"], 0);
    assert_eq!(varz["in_msgs"], 0);
    assert_eq!(varz["out_msgs"], 0);
    assert_eq!(varz["slow_consumers"], 0);
    assert_eq!(varz["subscriptions"], 0);
    assert!(u64_of(&varz, "mem") > 0, "mem is the RSS");
    assert!(u64_of(&varz, "cores") >= 1);
    // Without -n the name is the id.
    let id = varz["server_id"].as_str().unwrap();
    assert_eq!(id.len(), 56, "{id}");
    assert_eq!(varz["server_name"], id);
    // The INFO clients get agrees.
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["server_id"], id);
}

#[test]
fn varz_server_name_from_flag() {
    let server = TernServer::launch(Launch::monitored().args(&["-n", "monitored-node"]));
    let varz = server.http_json("/varz");
    assert_eq!(varz["server_name"], "monitored-node");
    assert_ne!(varz["server_id"], "monitored-node");
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["server_name"], "monitored-node");
}

#[test]
fn varz_counts_exact_traffic() {
    let server = TernServer::launch(Launch::monitored());
    let mut sub = named_client(&server, "sub", &["foo", "bar"]);
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    // 4 messages in (5 + 3 + 4 + 0 = 12 bytes); 3 of them delivered (8 bytes).
    publisher.send(
        b"PUB foo 5\r\nhello\r\nPUB bar 3\r\nabc\r\nPUB nobody 4\r\nxxxx\r\nPUB foo 0\r\n\r\n",
    );
    assert_eq!(publisher.ping_pong(), b"PONG\r\n");
    assert_eq!(
        String::from_utf8_lossy(&sub.ping_pong()),
        "MSG foo 1 5\r\nhello\r\nMSG bar 2 3\r\nabc\r\nMSG foo 1 0\r\n\r\nPONG\r\n"
    );
    // A third connection that comes and goes counts in the total only.
    let mut gone = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(gone.ping_pong(), b"PONG\r\n");
    drop(gone);

    let varz = poll_json(&server, "/varz", |v| {
        v["in_msgs"] == 4 && v["out_msgs"] == 3 && v["connections"] == 2
    });
    assert_eq!(varz["in_msgs"], 4, "in_msgs");
    assert_eq!(varz["in_bytes"], 12, "in_bytes");
    assert_eq!(varz["out_msgs"], 3, "out_msgs");
    assert_eq!(varz["out_bytes"], 8, "out_bytes");
    assert_eq!(varz["connections"], 2, "connections");
    assert_eq!(varz["total_connections"], 3, "total_connections");
    assert_eq!(varz["subscriptions"], 2, "subscriptions");
    assert_eq!(varz["slow_consumers"], 0);

    // The same figures per connection.
    let connz = server.http_json("/connz");
    let conns = connz["connections"].as_array().unwrap();
    let by_cid = |cid: u64| {
        conns
            .iter()
            .find(|c| c["cid"] == cid)
            .unwrap_or_else(|| panic!("cid {cid} in {connz}"))
    };
    let s = by_cid(cid_of(&sub));
    assert_eq!(
        (
            &s["in_msgs"],
            &s["out_msgs"],
            &s["in_bytes"],
            &s["out_bytes"]
        ),
        (
            &Value::from(0),
            &Value::from(3),
            &Value::from(0),
            &Value::from(8)
        )
    );
    assert_eq!(s["subscriptions"], 2);
    let p = by_cid(cid_of(&publisher));
    assert_eq!(
        (
            &p["in_msgs"],
            &p["out_msgs"],
            &p["in_bytes"],
            &p["out_bytes"]
        ),
        (
            &Value::from(4),
            &Value::from(0),
            &Value::from(12),
            &Value::from(0)
        )
    );
}

/// nats-server counts a message's whole size, headers included, in and out;
/// a subscriber without header support gets (and is counted for) the payload only.
#[test]
fn varz_byte_counters_include_headers() {
    let server = TernServer::launch(Launch::monitored());
    let mut with_headers = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true}"#,
    );
    with_headers.send(b"SUB foo 1\r\n");
    with_headers.ping_pong();
    let mut plain = RawClient::connect_with(server.addr, QUIET);
    plain.send(b"SUB foo 1\r\n");
    plain.ping_pong();
    let mut publisher = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true}"#,
    );
    publisher.send(b"HPUB foo 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\n");
    publisher.ping_pong();
    assert_eq!(
        String::from_utf8_lossy(&with_headers.ping_pong()),
        "HMSG foo 1 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nPONG\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&plain.ping_pong()),
        "MSG foo 1 2\r\nhi\r\nPONG\r\n"
    );
    let varz = poll_json(&server, "/varz", |v| v["out_msgs"] == 2);
    assert_eq!(varz["in_msgs"], 1);
    assert_eq!(varz["in_bytes"], 20, "in_bytes counts headers + payload");
    assert_eq!(varz["out_msgs"], 2);
    assert_eq!(
        varz["out_bytes"], 22,
        "out_bytes: 20 to the header subscriber + 2 to the plain one"
    );
    let connz = server.http_json("/connz");
    let hs = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cid"] == cid_of(&with_headers))
        .unwrap()
        .clone();
    assert_eq!(
        hs["out_bytes"], 20,
        "connz out_bytes of the header subscriber"
    );
}

#[test]
fn connz_lists_connections_with_nats_server_fields() {
    let server = TernServer::launch(Launch::monitored());
    let a = named_client(&server, "alice", &["foo"]);
    let b = named_client(&server, "bob", &["foo", "bar"]);
    let c = named_client(&server, "carol", &["baz"]);
    let connz = server.http_json("/connz");
    assert_eq!(
        keys(&connz),
        names(&[
            "server_id",
            "now",
            "num_connections",
            "total",
            "offset",
            "limit",
            "connections"
        ])
    );
    assert_eq!(connz["num_connections"], 3);
    assert_eq!(connz["total"], 3);
    assert_eq!(connz["offset"], 0);
    assert_eq!(connz["limit"], 1024);
    let conns = connz["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 3);
    // Sorted by cid by default.
    let cids: Vec<u64> = conns.iter().map(|c| u64_of(c, "cid")).collect();
    assert_eq!(cids, [cid_of(&a), cid_of(&b), cid_of(&c)]);
    for (conn, (client, name, subs)) in
        conns
            .iter()
            .zip([(&a, "alice", 1), (&b, "bob", 2), (&c, "carol", 1)])
    {
        assert_eq!(keys(conn), names(CONN_KEYS), "connection keys");
        assert_eq!(conn["kind"], "Client");
        assert_eq!(conn["type"], "nats");
        assert_eq!(conn["ip"], "127.0.0.1");
        assert_eq!(conn["port"], client.local_addr().port());
        assert_eq!(conn["name"], name);
        assert_eq!(conn["lang"], "rust");
        assert_eq!(conn["version"], "1.2.3");
        assert_eq!(conn["subscriptions"], subs);
        assert_eq!(conn["pending_bytes"], 0);
        for k in ["start", "last_activity", "rtt", "uptime", "idle"] {
            assert!(conn[k].is_string(), "{k} is a string: {conn}");
        }
    }
}

#[test]
fn connz_omits_empty_name_lang_version_and_subscription_list() {
    let server = TernServer::launch(Launch::monitored());
    let mut anon = RawClient::connect_with(server.addr, QUIET);
    anon.ping_pong();
    let connz = server.http_json("/connz?subs=1");
    let conn = &connz["connections"][0];
    for absent in ["name", "lang", "version", "subscriptions_list"] {
        assert!(
            conn.get(absent).is_none(),
            "nats-server omits empty {absent:?}: {conn}"
        );
    }
    assert_eq!(conn["subscriptions"], 0);
}

#[test]
fn connz_sort_by_msgs_to_is_descending() {
    let server = TernServer::launch(Launch::monitored());
    let mut one = named_client(&server, "one", &["t.1"]);
    let mut three = named_client(&server, "three", &["t.3"]);
    let mut two = named_client(&server, "two", &["t.2"]);
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    publisher.send(b"PUB t.1 1\r\na\r\n");
    for _ in 0..3 {
        publisher.send(b"PUB t.3 1\r\na\r\n");
    }
    for _ in 0..2 {
        publisher.send(b"PUB t.2 1\r\na\r\n");
    }
    publisher.ping_pong();
    for c in [&mut one, &mut three, &mut two] {
        assert!(c.ping_pong().ends_with(b"PONG\r\n"));
    }
    let connz = poll_json(&server, "/connz?sort=msgs_to", |v| {
        v["connections"][0]["out_msgs"] == 3
    });
    let order: Vec<(String, u64)> = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                u64_of(c, "out_msgs"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("three".to_owned(), 3),
            ("two".to_owned(), 2),
            ("one".to_owned(), 1),
            (String::new(), 0)
        ],
        "sort=msgs_to"
    );
    // sort=msgs_from puts the publisher first.
    let from = server.http_json("/connz?sort=msgs_from");
    assert_eq!(from["connections"][0]["cid"], cid_of(&publisher));
    assert_eq!(from["connections"][0]["in_msgs"], 6);
}

#[test]
fn connz_limit_and_offset() {
    let server = TernServer::launch(Launch::monitored());
    let _a = named_client(&server, "a", &[]);
    let b = named_client(&server, "b", &[]);
    let _c = named_client(&server, "c", &[]);
    let connz = server.http_json("/connz?limit=1&offset=1");
    assert_eq!(
        connz["num_connections"], 1,
        "num_connections is what is returned"
    );
    assert_eq!(connz["total"], 3);
    assert_eq!(connz["offset"], 1);
    assert_eq!(connz["limit"], 1);
    let conns = connz["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0]["cid"], cid_of(&b));
    assert_eq!(conns[0]["name"], "b");
    // Past the end: nothing, but the total still says 3.
    let past = server.http_json("/connz?offset=5");
    assert_eq!(past["num_connections"], 0);
    assert_eq!(past["total"], 3);
    assert_eq!(past["connections"], Value::Array(vec![]));
}

#[test]
fn connz_subscription_lists() {
    let server = TernServer::launch(Launch::monitored());
    let mut alice = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"name":"alice","lang":"rust","version":"1.2.3"}"#,
    );
    alice.send(b"SUB foo 1\r\nSUB bar.* q1 2\r\nSUB _INBOX.> 3\r\n");
    alice.ping_pong();
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    publisher.send(b"PUB foo 1\r\nx\r\nPUB foo 1\r\nx\r\nPUB bar.x 1\r\ny\r\n");
    publisher.ping_pong();
    alice.ping_pong();
    let cid = cid_of(&alice);

    let connz = server.http_json(&format!("/connz?cid={cid}&subs=1"));
    let conn = connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cid"] == cid)
        .unwrap()
        .clone();
    let mut want_keys = names(CONN_KEYS);
    want_keys.push("subscriptions_list".into());
    assert_eq!(keys(&conn), want_keys);
    let mut list: Vec<String> = conn["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    list.sort();
    assert_eq!(list, ["_INBOX.>", "bar.*", "foo"]);

    let detail = poll_json(&server, "/connz?subs=detail", |v| {
        v["connections"][0]["subscriptions_list_detail"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["subject"] == "foo" && s["msgs"] == 2))
    });
    let conn = detail["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cid"] == cid)
        .unwrap()
        .clone();
    let mut want_keys = names(CONN_KEYS);
    want_keys.push("subscriptions_list_detail".into());
    assert_eq!(keys(&conn), want_keys);
    let subs = conn["subscriptions_list_detail"].as_array().unwrap();
    assert_eq!(subs.len(), 3);
    let find = |subject: &str| {
        subs.iter()
            .find(|s| s["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject} in {subs:?}"))
    };
    let plain_keys: BTreeSet<String> = ["subject", "sid", "msgs", "cid"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut queue_keys = plain_keys.clone();
    queue_keys.insert("qgroup".into());

    let foo = find("foo");
    assert_eq!(key_set(foo), plain_keys, "plain sub detail keys: {foo}");
    assert_eq!(foo["sid"], "1", "sid is a string");
    assert_eq!(foo["msgs"], 2);
    assert_eq!(foo["cid"], cid);

    let bar = find("bar.*");
    assert_eq!(key_set(bar), queue_keys, "queue sub detail keys: {bar}");
    assert_eq!(bar["qgroup"], "q1");
    assert_eq!(bar["sid"], "2");
    assert_eq!(bar["msgs"], 1);

    let inbox = find("_INBOX.>");
    assert_eq!(key_set(inbox), plain_keys);
    assert_eq!(inbox["sid"], "3");
    assert_eq!(inbox["msgs"], 0);
}

#[test]
fn connz_bad_sort_is_400() {
    let server = TernServer::launch(Launch::monitored());
    let resp = server.http_get("/connz?sort=bogus");
    assert_eq!(resp.status, 400);
    assert_eq!(resp.content_type, "text/plain; charset=utf-8");
    assert_eq!(resp.body, "invalid sorting option: bogus");
}

#[test]
fn subsz_statistics_and_filtered_listing() {
    let server = TernServer::launch(Launch::monitored());
    let mut a = RawClient::connect_with(server.addr, QUIET);
    a.send(b"SUB foo.bar 1\r\nSUB foo.* q1 2\r\nSUB bar 3\r\nSUB gone 4\r\nUNSUB 4\r\n");
    a.ping_pong();
    let mut b = RawClient::connect_with(server.addr, QUIET);
    b.send(b"SUB foo.> 1\r\nSUB > 2\r\nSUB foo.baz 3\r\n");
    b.ping_pong();

    let resp = server.http_get("/subsz");
    assert_eq!(resp.status, 200);
    let stats: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(keys(&stats), names(SUBLIST_STATS_KEYS), "/subsz keys");
    assert_eq!(stats["num_subscriptions"], 6);
    assert_eq!(stats["num_inserts"], 7);
    assert_eq!(stats["num_removes"], 1);

    let listed = server.http_json("/subsz?subs=1");
    let mut want = vec!["server_id", "now"];
    want.extend_from_slice(SUBLIST_STATS_KEYS);
    want.extend_from_slice(&["total", "offset", "limit", "subscriptions_list"]);
    assert_eq!(keys(&listed), names(&want), "/subsz?subs=1 keys");
    let all = listed["subscriptions_list"].as_array().unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(listed["total"], 6);
    assert_eq!(listed["offset"], 0);
    assert_eq!(listed["limit"], 1024);
    for s in all {
        assert_eq!(s["account"], "$G", "{s}");
        assert!(s["sid"].is_string() && s["cid"].is_u64(), "{s}");
    }

    let filtered = server.http_json("/subsz?subs=1&test=foo.bar");
    let mut subjects: Vec<String> = filtered["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    assert_eq!(subjects, [">", "foo.*", "foo.>", "foo.bar"]);
    assert_eq!(
        filtered["total"], 4,
        "total counts the listed (matching) subscriptions"
    );
    let queue = filtered["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "foo.*")
        .unwrap();
    assert_eq!(queue["qgroup"], "q1");
    assert_eq!(queue["cid"], cid_of(&a));
}

/// nats-server only filters by a literal subject: a wildcard is a 400.
#[test]
fn subsz_rejects_a_wildcard_test_subject() {
    let server = TernServer::launch(Launch::monitored());
    let mut a = RawClient::connect_with(server.addr, QUIET);
    a.send(b"SUB foo.bar 1\r\n");
    a.ping_pong();
    let resp = server.http_get("/subsz?subs=1&test=foo.*");
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(
        resp.body,
        "invalid test subject, must be valid publish subject: foo.*"
    );
}

#[test]
fn routez_has_no_routes() {
    let server = TernServer::launch(Launch::monitored());
    let routez = server.http_json("/routez");
    assert_eq!(
        keys(&routez),
        names(&["server_id", "now", "num_routes", "routes"])
    );
    assert_eq!(routez["num_routes"], 0);
    assert_eq!(routez["routes"], Value::Array(vec![]));
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut values = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            panic!("bad metrics line {line:?}");
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        values.insert(name.to_owned(), value);
    }
    values
}

#[test]
fn metrics_are_prometheus_text_consistent_with_varz() {
    let server = TernServer::launch(Launch::monitored());
    let mut sub = RawClient::connect_with(server.addr, QUIET);
    sub.send(b"SUB foo 1\r\nSUB bar 2\r\n");
    sub.ping_pong();
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    publisher.send(b"PUB foo 3\r\nabc\r\nPUB nobody 2\r\nxy\r\n");
    publisher.ping_pong();
    sub.ping_pong();
    let varz = poll_json(&server, "/varz", |v| {
        v["out_msgs"] == 1 && v["in_msgs"] == 2
    });

    let resp = server.http_get("/metrics");
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type.starts_with("text/plain"),
        "{}",
        resp.content_type
    );
    for name in METRICS {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            resp.body.contains(&format!("# HELP {name} ")),
            "HELP for {name}:\n{}",
            resp.body
        );
        assert!(
            resp.body.contains(&format!("# TYPE {name} {kind}\n")),
            "TYPE {kind} for {name}:\n{}",
            resp.body
        );
    }
    let m = parse_metrics(&resp.body);
    for (metric, key) in [
        ("tern_connections", "connections"),
        ("tern_connections_total", "total_connections"),
        ("tern_subscriptions", "subscriptions"),
        ("tern_in_msgs_total", "in_msgs"),
        ("tern_out_msgs_total", "out_msgs"),
        ("tern_in_bytes_total", "in_bytes"),
        ("tern_out_bytes_total", "out_bytes"),
        ("tern_slow_consumers_total", "slow_consumers"),
    ] {
        let got = m
            .get(metric)
            .copied()
            .unwrap_or_else(|| panic!("{metric} missing"));
        assert_eq!(got, varz[key].as_f64().unwrap(), "{metric} vs varz {key}");
    }
    assert_eq!(m["tern_connections"], 2.0);
    assert_eq!(m["tern_subscriptions"], 2.0);
    assert_eq!(m["tern_in_msgs_total"], 2.0);
    assert_eq!(m["tern_in_bytes_total"], 5.0);
    assert_eq!(m["tern_out_msgs_total"], 1.0);
    assert_eq!(m["tern_out_bytes_total"], 3.0);
    assert!(m["tern_uptime_seconds"] > 0.0);
    assert!(
        m["tern_memory_rss_bytes"] > 1_000_000.0,
        "{}",
        m["tern_memory_rss_bytes"]
    );
}

#[test]
fn json_is_pretty_printed_and_escapes_gt() {
    let server = TernServer::launch(Launch::monitored());
    let mut c = RawClient::connect_with(server.addr, QUIET);
    c.send(b"SUB foo.> 1\r\n");
    c.ping_pong();
    let resp = server.http_get("/connz?subs=1");
    assert_eq!(resp.status, 200);
    assert!(
        resp.body.starts_with("{\n  \"server_id\": \""),
        "two-space indent: {}",
        resp.body
    );
    assert!(
        resp.body
            .contains("\n  \"connections\": [\n    {\n      \"cid\": "),
        "nested indent: {}",
        resp.body
    );
    assert!(
        resp.body.contains(r#""foo.\u003e""#),
        "> escaped as \\u003e: {}",
        resp.body
    );
    assert!(!resp.body.contains('>'), "no raw >: {}", resp.body);
    // Still valid JSON that decodes to the subject.
    let v: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(v["connections"][0]["subscriptions_list"][0], "foo.>");
    // varz is pretty too.
    let varz = server.http_get("/varz");
    assert!(
        varz.body.starts_with("{\n  \"server_id\": \""),
        "{}",
        varz.body
    );
}

#[test]
fn unknown_path_is_404() {
    let server = TernServer::launch(Launch::monitored());
    let resp = server.http_get("/no/such/thing");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.content_type, "text/plain; charset=utf-8");
    assert_eq!(resp.body, "404 page not found\n");
}
