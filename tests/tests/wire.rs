//! Exact bytes on raw sockets: framing, `+OK`, `-ERR` texts, and which errors
//! close the connection — as nats-server 2.9 behaves (see
//! `docs/nats-wire-behaviour.md` for the observations these encode).

use std::time::{Duration, Instant};

use tern_tests::{Launch, RawClient, TernServer};

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);
const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn info_line_shape() {
    let server = TernServer::start();
    let client = RawClient::connect(server.addr);
    assert!(
        client.info.starts_with("INFO {\"server_id\":\"N"),
        "{}",
        client.info
    );
    assert!(
        client.info.ends_with("} \r\n"),
        "INFO ends with a space before CRLF: {:?}",
        client.info
    );
    let info = client.info_json();
    let keys: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "server_id",
            "server_name",
            "version",
            "proto",
            "go",
            "host",
            "port",
            "headers",
            "max_payload",
            "client_id",
            "client_ip"
        ]
    );
    assert_eq!(info["proto"], 1);
    assert_eq!(info["headers"], true);
    assert_eq!(info["max_payload"], 1048576);
    assert_eq!(info["port"], server.addr.port());
    assert_eq!(info["client_ip"], "127.0.0.1");
    assert_eq!(info["server_id"].as_str().unwrap().len(), 56);
}

#[test]
fn verbose_and_pedantic_are_on_until_connect_says_otherwise() {
    let server = TernServer::start();
    let mut c = RawClient::connect(server.addr);
    c.send(b"CONNECT {}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPUB foo.* 0\r\n\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "+OK\r\n+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n-ERR 'Invalid Publish Subject'\r\n+OK\r\nPONG\r\n"
    );
    // A second CONNECT changes only what it names.
    c.send(b"CONNECT {\"verbose\":false}\r\nPUB foo.* 0\r\n\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "-ERR 'Invalid Publish Subject'\r\nPONG\r\n"
    );
}

#[test]
fn msg_and_hmsg_framing() {
    let server = TernServer::start();
    let mut c = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true}"#,
    );
    c.send(b"SUB foo.> 7\r\nPUB foo.bar r.1 2\r\nhi\r\nPUB foo.bar 0\r\n\r\n");
    c.send(b"HPUB foo.h 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nHPUB foo.h rep 12 12\r\nNATS/1.0\r\n\r\n\r\n");
    c.send(b"HPUB foo.z 0 2\r\nhi\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "MSG foo.bar 7 r.1 2\r\nhi\r\nMSG foo.bar 7 0\r\n\r\n\
         HMSG foo.h 7 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nHMSG foo.h 7 rep 12 12\r\nNATS/1.0\r\n\r\n\r\n\
         MSG foo.z 7 2\r\nhi\r\nPONG\r\n"
    );
}

#[test]
fn headers_are_stripped_for_clients_without_header_support() {
    let server = TernServer::start();
    let mut plain = RawClient::connect_with(server.addr, QUIET);
    plain.send(b"SUB foo 1\r\n");
    plain.ping_pong();
    let mut pubr = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true}"#,
    );
    pubr.send(b"HPUB foo 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\n");
    pubr.ping_pong();
    assert_eq!(text(&plain.ping_pong()), "MSG foo 1 2\r\nhi\r\nPONG\r\n");
}

#[test]
fn lenient_parsing() {
    let server = TernServer::start();
    let mut c = RawClient::connect_with(server.addr, QUIET);
    c.send(b"sub \t foo  \t 1\r\npub  \tfoo\t \t1  \r\nx\r\nPING\nPINGX\r\nPING x\r\n");
    assert_eq!(
        text(&c.read_until(b"PONG\r\nPONG\r\nPONG\r\n", LONG)),
        "MSG foo 1 1\r\nx\r\nPONG\r\nPONG\r\nPONG\r\n"
    );
}

/// Sends `input` after a quiet CONNECT and returns what came back and whether it closed.
fn exchange(server: &TernServer, input: &[u8]) -> (String, bool) {
    let mut c = RawClient::connect_with(server.addr, QUIET);
    c.send(input);
    let closed = c.is_closed_within(Duration::from_millis(500));
    let got = c.read_for(Duration::from_millis(50));
    let got = if closed {
        got
    } else {
        [got, c.ping_pong()].concat()
    };
    (text(&got), closed)
}

#[test]
fn errors_that_close_with_a_message() {
    let server = TernServer::start();
    for (input, want) in [
        (&b"FOO\r\n"[..], "-ERR 'Unknown Protocol Operation'\r\n"),
        (b"\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (b" PING\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (b"PUB\r\n", "-ERR 'Unknown Protocol Operation'\r\n"),
        (
            b"MSG foo 1 2\r\nhi\r\n",
            "-ERR 'Unknown Protocol Operation'\r\n",
        ),
        (
            b"PUB foo 3\r\nabcdef\r\n",
            "-ERR 'Unknown Protocol Operation'\r\n",
        ),
        (
            b"PUB foo 1048577\r\n",
            "-ERR 'Maximum Payload Violation'\r\n",
        ),
        (
            b"HPUB foo 12 1048577\r\n",
            "-ERR 'Maximum Payload Violation'\r\n",
        ),
    ] {
        let (got, closed) = exchange(&server, input);
        assert_eq!(got, want, "for {:?}", text(input));
        assert!(closed, "connection closed after {:?}", text(input));
    }
    let mut long = b"SUB ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 4095));
    long.extend_from_slice(b" 1\r\n");
    let (got, closed) = exchange(&server, &long);
    assert_eq!(got, "-ERR 'maximum control line exceeded'\r\n");
    assert!(closed);
    // Without a line end at all, the error comes as soon as the limit is passed.
    let endless = [b'x'; 5000];
    let (got, closed) = exchange(&server, &endless);
    assert_eq!(got, "-ERR 'maximum control line exceeded'\r\n");
    assert!(closed);
    // Exactly at the limit is fine.
    let mut at_limit = b"SUB ".to_vec();
    at_limit.extend(std::iter::repeat_n(b'a', 4094));
    at_limit.extend_from_slice(b" 1\r\n");
    let (got, closed) = exchange(&server, &at_limit);
    assert_eq!(got, "PONG\r\n");
    assert!(!closed);
}

#[test]
fn errors_that_close_silently() {
    let server = TernServer::start();
    for input in [
        &b"PUB foo\r\n"[..],
        b"PUB foo bar\r\n",
        b"PUB foo -1\r\n",
        b"PUB a b c 1\r\n",
        b"PUB \r\n",
        b"SUB foo\r\n",
        b"SUB foo q 1 2\r\n",
        b"UNSUB 1 2 3\r\n",
        b"HPUB foo 14 12\r\n",
        b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
        b"CONNECT notjson\r\n",
        b"CONNECT {\"verbose\":\"yes\"}\r\n",
    ] {
        let (got, closed) = exchange(&server, input);
        assert_eq!(got, "", "no -ERR for {:?}", text(input));
        assert!(closed, "connection closed after {:?}", text(input));
    }
}

#[test]
fn errors_that_keep_the_connection() {
    let server = TernServer::start();
    for (input, want) in [
        (
            &b"SUB foo..bar 1\r\n"[..],
            "-ERR 'Invalid Subject'\r\nPONG\r\n",
        ),
        (b"SUB foo.>.bar 1\r\n", "-ERR 'Invalid Subject'\r\nPONG\r\n"),
        (b"UNSUB 99\r\n", "PONG\r\n"),
        (b"INFO {}\r\n", "PONG\r\n"),
        (b"PONG\r\n", "PONG\r\n"),
    ] {
        let (got, closed) = exchange(&server, input);
        assert_eq!(got, want, "for {:?}", text(input));
        assert!(!closed);
    }
    // Pedantic publish errors keep the connection too.
    let mut c = RawClient::connect_with(server.addr, r#"{"verbose":false,"pedantic":true}"#);
    c.send(b"PUB foo..bar 0\r\n\r\nPUB > 0\r\n\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "-ERR 'Invalid Publish Subject'\r\n-ERR 'Invalid Publish Subject'\r\nPONG\r\n"
    );
}

#[test]
fn connect_errors() {
    let server = TernServer::start();
    let mut c = RawClient::connect(server.addr);
    c.send(b"CONNECT {\"protocol\":2}\r\n");
    assert!(c.is_closed_within(LONG));
    assert_eq!(
        text(&c.read_for(SHORT)),
        "-ERR 'invalid client protocol'\r\n"
    );
    let mut c = RawClient::connect(server.addr);
    c.send(b"CONNECT {\"no_responders\":true}\r\n");
    assert!(c.is_closed_within(LONG));
    assert_eq!(
        text(&c.read_for(SHORT)),
        "-ERR 'no responders requires headers support'\r\n"
    );
}

#[test]
fn no_responders_status() {
    let server = TernServer::start();
    let mut c = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true}"#,
    );
    c.send(b"SUB _INBOX.x 1\r\nPUB nobody _INBOX.x 0\r\n\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "HMSG _INBOX.x 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPONG\r\n"
    );
    // A requester that did not ask for it gets nothing.
    let mut quiet = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"headers":true}"#,
    );
    quiet.send(b"SUB _INBOX.y 1\r\nPUB nobody _INBOX.y 0\r\n\r\n");
    assert_eq!(text(&quiet.ping_pong()), "PONG\r\n");
}

#[test]
fn echo_off() {
    let server = TernServer::start();
    let mut c = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"echo":false}"#,
    );
    c.send(b"SUB foo 1\r\nPUB foo 1\r\na\r\n");
    assert_eq!(text(&c.ping_pong()), "PONG\r\n");
    let mut e = RawClient::connect_with(server.addr, QUIET);
    e.send(b"SUB foo 1\r\nPUB foo 1\r\na\r\n");
    assert_eq!(text(&e.ping_pong()), "MSG foo 1 1\r\na\r\nPONG\r\n");
}

#[test]
fn unsub_with_max() {
    let server = TernServer::start();
    let mut c = RawClient::connect_with(server.addr, QUIET);
    c.send(b"SUB foo 1\r\nUNSUB 1 2\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "MSG foo 1 1\r\na\r\nMSG foo 1 1\r\nb\r\nPONG\r\n"
    );
    // A non-numeric max removes at once.
    c.send(b"SUB bar 2\r\nUNSUB 2 x\r\nPUB bar 1\r\na\r\n");
    assert_eq!(text(&c.ping_pong()), "PONG\r\n");
    // A max already reached removes at once; the sid can be reused after.
    c.send(b"SUB baz 3\r\nPUB baz 1\r\na\r\nUNSUB 3 1\r\nPUB baz 1\r\nb\r\nSUB baz 3\r\nPUB baz 1\r\nc\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "MSG baz 3 1\r\na\r\nMSG baz 3 1\r\nc\r\nPONG\r\n"
    );
}

#[test]
fn user_password_authentication() {
    let server =
        TernServer::launch(Launch::default().args(&["--user", "alice", "--pass", "s3cret"]));
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["auth_required"], true);
    let keys: Vec<String> = c.info_json().as_object().unwrap().keys().cloned().collect();
    let pos = |k: &str| keys.iter().position(|x| x == k).unwrap();
    assert!(pos("headers") < pos("auth_required") && pos("auth_required") < pos("max_payload"));

    let mut early = RawClient::connect(server.addr);
    early.send(b"PING\r\n");
    assert!(early.is_closed_within(LONG));
    assert_eq!(
        text(&early.read_for(SHORT)),
        "-ERR 'Authorization Violation'\r\n"
    );

    let mut wrong = RawClient::connect(server.addr);
    wrong.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"nope\"}\r\n");
    assert!(wrong.is_closed_within(LONG));
    assert_eq!(
        text(&wrong.read_for(SHORT)),
        "-ERR 'Authorization Violation'\r\n"
    );

    let mut good = RawClient::connect(server.addr);
    good.send(b"CONNECT {\"user\":\"alice\",\"pass\":\"s3cret\",\"verbose\":true}\r\n");
    assert_eq!(text(&good.ping_pong()), "+OK\r\nPONG\r\n");
    assert!(
        !server.log().contains("s3cret"),
        "passwords never reach the log"
    );
}

#[test]
fn token_authentication_and_timeout() {
    let server = TernServer::launch(
        Launch::default().config("authorization { token: t0k, timeout: 0.5 }\n"),
    );
    let mut good = RawClient::connect(server.addr);
    good.send(b"CONNECT {\"auth_token\":\"t0k\",\"verbose\":false}\r\n");
    assert_eq!(text(&good.ping_pong()), "PONG\r\n");
    let mut bad = RawClient::connect(server.addr);
    bad.send(b"CONNECT {\"auth_token\":\"x\"}\r\n");
    assert!(bad.is_closed_within(LONG));
    assert_eq!(
        text(&bad.read_for(SHORT)),
        "-ERR 'Authorization Violation'\r\n"
    );
    let start = Instant::now();
    let mut silent = RawClient::connect(server.addr);
    assert!(silent.is_closed_within(LONG));
    let waited = start.elapsed();
    assert_eq!(
        text(&silent.read_for(SHORT)),
        "-ERR 'Authentication Timeout'\r\n"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn max_connections() {
    let server = TernServer::launch(Launch::default().config("max_connections: 1\n"));
    let mut first = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(text(&first.ping_pong()), "PONG\r\n");
    let mut second = RawClient::connect(server.addr);
    assert!(second.is_closed_within(LONG));
    assert_eq!(
        text(&second.read_for(SHORT)),
        "-ERR 'maximum connections exceeded'\r\n"
    );
    assert_eq!(text(&first.ping_pong()), "PONG\r\n");
}

#[test]
fn max_subscriptions() {
    let server = TernServer::launch(Launch::default().config("max_subscriptions: 2\n"));
    let mut c = RawClient::connect_with(server.addr, r#"{"verbose":true,"pedantic":false}"#);
    c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n");
    assert_eq!(
        text(&c.ping_pong()),
        "+OK\r\n+OK\r\n+OK\r\n-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n"
    );
    c.send(b"UNSUB 1\r\nSUB c 3\r\n");
    assert_eq!(text(&c.ping_pong()), "+OK\r\n+OK\r\nPONG\r\n");
}

#[test]
fn stale_connection() {
    let server =
        TernServer::launch(Launch::default().config("ping_interval: \"300ms\"\nping_max: 2\n"));
    let mut c = RawClient::connect(server.addr);
    let start = Instant::now();
    assert!(c.is_closed_within(Duration::from_secs(5)));
    let waited = start.elapsed();
    assert_eq!(
        text(&c.read_for(SHORT)),
        "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n"
    );
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
}

#[test]
fn answered_pings_keep_the_connection() {
    let server =
        TernServer::launch(Launch::default().config("ping_interval: \"200ms\"\nping_max: 1\n"));
    let mut c = RawClient::connect(server.addr);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pings = 0;
    while Instant::now() < deadline {
        if let Some(line) = c.read_line(Duration::from_millis(500)) {
            assert_eq!(line, "PING\r\n");
            pings += 1;
            c.send(b"PONG\r\n");
        }
    }
    assert!(pings >= 3, "{pings} pings");
    assert_eq!(text(&c.ping_pong()), "PONG\r\n");
}
