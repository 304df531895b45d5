//! Configuration against a real `tern-server`: nats-server's file format and
//! TOML, `TERN_*` environment variables, flags, their precedence, and how bad
//! or unsupported settings are reported (see docs/configuration.md).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use tern_tests::{free_port, run_server_to_exit, Finished, Launch, RawClient, TernServer};

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;
const EXIT_WAIT: Duration = Duration::from_secs(15);
/// How long a server that should refuse to start may take to exit.
const REFUSAL_WAIT: Duration = Duration::from_secs(8);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether a CONNECT with these credentials is accepted (`PONG`) or refused.
fn login_ok(server: &TernServer, connect_json: &str) -> bool {
    let mut c = RawClient::connect_with(server.addr, connect_json);
    c.send(b"PING\r\n");
    let got = text(&c.read_until(b"\r\n", Duration::from_secs(5)));
    match got.as_str() {
        "PONG\r\n" => true,
        "-ERR 'Authorization Violation'\r\n" => false,
        other => panic!("unexpected answer to CONNECT {connect_json}: {other:?}"),
    }
}

/// Writes `files` into a new directory and returns it.
fn conf_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

fn path_arg(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// Runs the server with `-a 127.0.0.1 -p PORT ARGS`, expecting it to refuse to
/// start: a non-zero exit, and nothing listening on PORT afterwards.
fn expect_refusal(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let mut all = vec!["-a", "127.0.0.1", "-p", &port_s];
    all.extend_from_slice(args);
    let done = run_server_to_exit(&all, env, dir.path(), REFUSAL_WAIT);
    assert!(
        !done.timed_out,
        "the server should have refused to start, but it ran: {}",
        done.stderr
    );
    assert!(
        matches!(done.code, Some(c) if c != 0),
        "non-zero exit expected, got {:?}: {}",
        done.code,
        done.stderr
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "nothing listens on {addr}"
    );
    done
}

#[test]
fn nats_format_file_with_include_blocks_units_and_comments() {
    let dir = conf_dir(&[
        (
            "main.conf",
            r#"
# A nats-server style file.
// Both comment styles work.
server_name: $NODE_LABEL   # a variable from the environment
max_payload: 2MB
include limits.conf

authorization {
  user: app
  password = "s3cret"   // quoted or not
}
"#,
        ),
        (
            "limits.conf",
            "max_control_line 512\nmax_connections = 100\nping_interval: \"45s\"\n",
        ),
    ]);
    let conf = path_arg(dir.path(), "main.conf");
    let server = TernServer::launch(Launch {
        monitor: true,
        args: vec!["-c".into(), conf],
        env: env(&[("NODE_LABEL", "conf-node")]),
        ..Launch::default()
    });
    let c = RawClient::connect(server.addr);
    let info = c.info_json();
    assert_eq!(info["max_payload"], 2 * 1024 * 1024, "2MB is 2 MiB");
    assert_eq!(info["server_name"], "conf-node");
    assert_eq!(info["auth_required"], true);
    let varz = server.http_json("/varz");
    assert_eq!(varz["max_payload"], 2097152);
    assert_eq!(varz["max_control_line"], 512, "from the included file");
    assert_eq!(varz["max_connections"], 100, "from the included file");
    assert_eq!(varz["ping_interval"], 45_000_000_000u64);
    assert_eq!(varz["server_name"], "conf-node");
    assert!(login_ok(
        &server,
        r#"{"verbose":false,"user":"app","pass":"s3cret"}"#
    ));
    assert!(!login_ok(
        &server,
        r#"{"verbose":false,"user":"app","pass":"nope"}"#
    ));
}

/// As in nats-server, an entry that only serves as a variable (`NAME = value`
/// referenced as `$NAME`) is not an unknown key.
#[test]
fn nats_format_variables_defined_in_the_file() {
    let server = TernServer::launch(Launch::monitored().config(
        "PAYLOAD = 2MB\nNAME: \"var-node\"\nmax_payload: $PAYLOAD\nserver_name: $NAME\n\
         authorization {\n  SECRET = s3cret\n  user: app\n  password: $SECRET\n}\n",
    ));
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["max_payload"], 2097152);
    assert_eq!(c.info_json()["server_name"], "var-node");
    assert!(login_ok(
        &server,
        r#"{"verbose":false,"user":"app","pass":"s3cret"}"#
    ));
}

#[test]
fn nats_format_units_and_durations() {
    let server = TernServer::launch(Launch::monitored().config(
        "max_payload: 2m            # bare m is a size: 2,000,000\n\
         max_control_line: 2KiB\n\
         max_pending: 100MB\n\
         ping_interval: \"1m30s\"\n\
         write_deadline: \"1500ms\"\n\
         authorization { token: t0k, timeout: 0.5 }\n",
    ));
    let varz = server.http_json("/varz");
    assert_eq!(varz["max_payload"], 2_000_000);
    assert_eq!(varz["max_control_line"], 2048);
    assert_eq!(varz["max_pending"], 100 * 1024 * 1024);
    assert_eq!(varz["ping_interval"], 90_000_000_000u64);
    assert_eq!(varz["write_deadline"], 1_500_000_000u64);
    assert_eq!(varz["auth_timeout"].as_f64(), Some(0.5));
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["max_payload"], 2_000_000);
}

#[test]
fn toml_file_is_honoured() {
    let server = TernServer::launch(Launch {
        monitor: true,
        toml: true,
        config: Some(
            r#"
# TOML holds the same keys.
server_name = "toml-node"
max_payload = "2MB"
max_control_line = 1024
ping_interval = "30s"

[authorization]
user = "app"
password = "s3cret"
"#
            .into(),
        ),
        ..Launch::default()
    });
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["max_payload"], 2097152);
    assert_eq!(c.info_json()["server_name"], "toml-node");
    assert_eq!(c.info_json()["auth_required"], true);
    let varz = server.http_json("/varz");
    assert_eq!(varz["max_control_line"], 1024);
    assert_eq!(varz["ping_interval"], 30_000_000_000u64);
    assert_eq!(varz["server_name"], "toml-node");
    assert!(login_ok(
        &server,
        r#"{"verbose":false,"user":"app","pass":"s3cret"}"#
    ));
    assert!(!login_ok(&server, r#"{"verbose":false}"#));
}

#[test]
fn environment_overrides_the_file() {
    let server = TernServer::launch(Launch {
        monitor: true,
        config: Some("max_payload: 2MB\nserver_name: from-file\n".into()),
        env: env(&[("TERN_MAX_PAYLOAD", "3MB")]),
        ..Launch::default()
    });
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["max_payload"], 3 * 1024 * 1024);
    // What the environment does not name still comes from the file.
    assert_eq!(c.info_json()["server_name"], "from-file");
    assert_eq!(server.http_json("/varz")["max_payload"], 3145728);
}

#[test]
fn environment_sets_plain_and_nested_keys() {
    let server = TernServer::launch(Launch {
        monitor: true,
        env: env(&[
            ("TERN_SERVER_NAME", "env-node"),
            ("TERN_MAX_CONTROL_LINE", "1024"),
            ("TERN_AUTHORIZATION__TOKEN", "t0k"),
        ]),
        ..Launch::default()
    });
    let varz = server.http_json("/varz");
    assert_eq!(varz["server_name"], "env-node");
    assert_eq!(varz["max_control_line"], 1024);
    assert_eq!(
        RawClient::connect(server.addr).info_json()["auth_required"],
        true
    );
    assert!(login_ok(&server, r#"{"verbose":false,"auth_token":"t0k"}"#));
    assert!(!login_ok(&server, r#"{"verbose":false,"auth_token":"x"}"#));
}

#[test]
fn flag_overrides_environment_name() {
    let server = TernServer::launch(Launch {
        args: vec!["-n".into(), "from-flag".into()],
        env: env(&[("TERN_SERVER_NAME", "from-env")]),
        ..Launch::default()
    });
    let c = RawClient::connect(server.addr);
    assert_eq!(c.info_json()["server_name"], "from-flag");
}

#[test]
fn flag_overrides_environment_credentials() {
    let server = TernServer::launch(Launch {
        args: ["--user", "flaguser", "--pass", "flagpass"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: env(&[
            ("TERN_AUTHORIZATION__USER", "envuser"),
            ("TERN_AUTHORIZATION__PASSWORD", "envpass"),
        ]),
        ..Launch::default()
    });
    assert!(login_ok(
        &server,
        r#"{"verbose":false,"user":"flaguser","pass":"flagpass"}"#
    ));
    assert!(!login_ok(
        &server,
        r#"{"verbose":false,"user":"envuser","pass":"envpass"}"#
    ));
}

#[test]
fn unknown_key_is_fatal_and_nothing_listens() {
    let dir = conf_dir(&[("bad.conf", "port: 4222\nbogus_setting: 1\n")]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "bad.conf")], &[]);
    assert!(
        done.stderr.contains("bogus_setting"),
        "stderr names the key: {}",
        done.stderr
    );
    assert!(!done.stderr.contains("Server is ready"), "{}", done.stderr);
}

/// `trusted_keys` without an operator would, if ignored, leave the server
/// open to anyone; it is refused instead.
#[test]
fn trusted_keys_without_operator_is_refused() {
    let dir = conf_dir(&[(
        "trust.conf",
        "trusted_keys: [\"ODSKR7MYFQZ5MMAJ6FPMEEZYIGAJ7HJXQXPNPN5IOMYHZHEU2ZE3OOUZ\"]\n",
    )]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "trust.conf")], &[]);
    assert!(
        done.stderr.contains("trusted_keys") && done.stderr.contains("operator"),
        "{}",
        done.stderr
    );
}

#[test]
fn unknown_nested_key_is_fatal() {
    let dir = conf_dir(&[(
        "bad.conf",
        "authorization {\n  user: a\n  password: b\n  colour: red\n}\n",
    )]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "bad.conf")], &[]);
    assert!(
        done.stderr.contains("authorization.colour"),
        "stderr names the nested key: {}",
        done.stderr
    );
}

#[test]
fn unknown_environment_key_is_fatal() {
    let done = expect_refusal(&[], &[("TERN_BOGUS_SETTING", "1")]);
    assert!(
        done.stderr.contains("bogus_setting"),
        "stderr names the key: {}",
        done.stderr
    );
}

#[test]
fn bad_value_names_the_key() {
    let dir = conf_dir(&[("bad.conf", "max_payload: \"lots\"\n")]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "bad.conf")], &[]);
    assert!(
        done.stderr.contains("max_payload"),
        "stderr names the key: {}",
        done.stderr
    );
    // A value of the wrong shape for a duration too.
    let dir = conf_dir(&[("bad.conf", "ping_interval: [1, 2]\n")]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "bad.conf")], &[]);
    assert!(
        done.stderr.contains("ping_interval"),
        "stderr names the key: {}",
        done.stderr
    );
}

#[test]
fn unparsable_file_is_fatal() {
    let dir = conf_dir(&[("broken.conf", "authorization {\n  user: a\n")]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "broken.conf")], &[]);
    assert!(!done.stderr.trim().is_empty(), "an error is printed");
}

#[test]
fn missing_config_file_is_fatal() {
    let done = expect_refusal(&["-c", "/nonexistent/tern/server.conf"], &[]);
    assert!(
        done.stderr.contains("/nonexistent/tern/server.conf"),
        "stderr names the file: {}",
        done.stderr
    );
}

/// nats-server refuses `max_payload` above `max_pending` (§10 of the wire notes).
#[test]
fn max_payload_above_max_pending_is_refused() {
    let dir = conf_dir(&[("c.conf", "max_pending: 65536\n")]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "c.conf")], &[]);
    assert!(
        done.stderr.contains("max_payload") && done.stderr.contains("max_pending"),
        "the error names both: {}",
        done.stderr
    );
}

#[test]
fn not_yet_implemented_keys_run_with_a_warning() {
    let server = TernServer::launch(Launch::default().config(
        "mqtt {\n  port: 1883\n}\n\
         leafnodes {\n  port: 7422\n}\n",
    ));
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    let log = server.log();
    for key in ["mqtt", "leafnodes"] {
        assert!(
            log.lines().any(|l| l.contains("[WRN]") && l.contains(key)),
            "a warning names {key}:\n{log}"
        );
    }
}

#[test]
fn tls_without_usable_certificates_is_refused() {
    let done = expect_refusal(&["--tls"], &[]);
    assert!(
        done.stderr.contains("--tlscert"),
        "the message says what is missing: {}",
        done.stderr
    );
    let dir = conf_dir(&[(
        "tls.conf",
        "tls {\n  cert_file: \"./cert.pem\"\n  key_file: \"./key.pem\"\n}\n",
    )]);
    let done = expect_refusal(&["-c", &path_arg(dir.path(), "tls.conf")], &[]);
    assert!(
        done.stderr.contains("cert.pem"),
        "the message names the file: {}",
        done.stderr
    );
}

#[test]
fn jetstream_flags_start_jetstream() {
    let store = tempfile::tempdir().unwrap();
    let server =
        TernServer::launch(Launch::default().args(&["-js", "-sd", store.path().to_str().unwrap()]));
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    assert_eq!(c.info_json()["jetstream"], true);
    let log = server.log();
    assert!(log.contains("Starting JetStream"), "{log}");
    assert!(log.contains("Store Directory:"), "{log}");
}

#[test]
fn help_lists_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let done = run_server_to_exit(&["--help"], &[], dir.path(), EXIT_WAIT);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    for flag in [
        "--port",
        "--http_port",
        "--jetstream",
        "--signal",
        "--config",
    ] {
        assert!(
            done.stdout.contains(flag),
            "--help lists {flag}:\n{}",
            done.stdout
        );
    }
}

#[test]
fn version_flag_prints_the_version() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["-v", "--version"] {
        let done = run_server_to_exit(&[flag], &[], dir.path(), EXIT_WAIT);
        assert_eq!(done.code, Some(0), "{flag}: {}", done.stderr);
        let out = done.stdout.trim();
        assert!(out.starts_with("tern-server: v"), "{flag}: {out:?}");
        let version = out
            .trim_start_matches("tern-server: v")
            .split_whitespace()
            .next()
            .unwrap_or("");
        assert_eq!(
            version
                .split('.')
                .filter(|p| p.parse::<u32>().is_ok())
                .count(),
            3,
            "a semantic version: {out:?}"
        );
    }
}

#[test]
fn unknown_flag_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let done = run_server_to_exit(&["--no-such-flag"], &[], dir.path(), EXIT_WAIT);
    assert!(!done.timed_out);
    assert!(matches!(done.code, Some(c) if c != 0), "{:?}", done.code);
    assert!(done.stderr.contains("no-such-flag"), "{}", done.stderr);
}

#[test]
fn go_style_single_dash_flags() {
    let port = free_port();
    let server = TernServer::launch(Launch {
        bare: true,
        args: vec![
            "-a".into(),
            "127.0.0.1".into(),
            format!("-port={port}"),
            "-DV".into(),
            "-name".into(),
            "go-style".into(),
        ],
        ..Launch::default()
    });
    assert_eq!(server.addr.port(), port);
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.info_json()["server_name"], "go-style");
    c.send(b"SUB foo 1\r\n");
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    let traced = tern_tests::eventually(Duration::from_secs(5), || {
        let log = server.log();
        log.contains("[DBG]") && log.contains("[TRC]")
    });
    assert!(traced, "-DV turns on debug and trace:\n{}", server.log());
}

#[test]
fn flags_override_listen_and_http_from_the_file() {
    // Both ports named in the file are taken; the server only starts if the
    // `-p -1` and `-m -1` flags the harness passes win over them.
    let taken_client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "listen: {}\nhttp: {}\n",
        taken_client.local_addr().unwrap(),
        taken_http.local_addr().unwrap()
    );
    let server = TernServer::launch(Launch::monitored().config(&text));
    assert_ne!(server.addr, taken_client.local_addr().unwrap());
    assert_eq!(server.http_json("/healthz")["status"], "ok");
}
