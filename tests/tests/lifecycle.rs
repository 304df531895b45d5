//! Process lifecycle of a real `tern-server`: signals and graceful shutdown,
//! pid files, `--signal`, log files and JSON logs (see docs/operations.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern_tests::{
    eventually, free_port, run_server_to_exit, server_binary, Launch, RawClient, TernServer,
};

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;
const EXIT_WAIT: Duration = Duration::from_secs(15);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits for the server to exit after a signal and checks it shut down cleanly.
fn assert_graceful_exit(server: &mut TernServer, what: &str) {
    let code = server.wait_exit(EXIT_WAIT);
    assert_eq!(code, Some(0), "{what}: exit code; log:\n{}", server.log());
    // The reader thread may lag the exit by a moment.
    let logged = eventually(Duration::from_secs(2), || {
        server.log().contains("Server Exiting..")
    });
    assert!(
        logged,
        "{what}: log has `Server Exiting..`:\n{}",
        server.log()
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut server = TernServer::start();
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    server.signal("TERM");
    assert_graceful_exit(&mut server, "SIGTERM");
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "clients are closed"
    );
}

#[test]
fn sigint_shuts_down_gracefully() {
    let mut server = TernServer::start();
    server.signal("INT");
    assert_graceful_exit(&mut server, "SIGINT");
    assert!(
        server.log().contains("Initiating Shutdown..."),
        "{}",
        server.log()
    );
}

/// Counts the `MSG` frames in `bytes` (skipping server `PING`s), checking the framing.
fn count_msgs(bytes: &[u8], subject: &str, payload_len: usize) -> usize {
    let header = format!("MSG {subject} 1 {payload_len}\r\n");
    let mut rest = bytes;
    let mut n = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b"PING\r\n") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix(header.as_bytes()) {
            assert!(r.len() >= payload_len + 2, "truncated message {n}");
            assert_eq!(&r[payload_len..payload_len + 2], b"\r\n", "framing of {n}");
            rest = &r[payload_len + 2..];
            n += 1;
        } else {
            panic!(
                "unexpected bytes after {n} messages: {:?}",
                text(&rest[..rest.len().min(80)])
            );
        }
    }
    n
}

#[test]
fn queued_messages_reach_a_subscriber_before_shutdown_closes_it() {
    let mut server = TernServer::launch(Launch::monitored());
    let mut sub = RawClient::connect_with(server.addr, QUIET);
    sub.send(b"SUB foo 1\r\n");
    assert_eq!(sub.ping_pong(), b"PONG\r\n");
    // 8 MiB the subscriber does not read yet: more than the socket buffers
    // hold, so part of it waits in the server.
    const COUNT: usize = 8192;
    const SIZE: usize = 1024;
    let mut publisher = RawClient::connect_with(server.addr, QUIET);
    let mut batch = Vec::new();
    for _ in 0..COUNT {
        batch.extend_from_slice(format!("PUB foo {SIZE}\r\n").as_bytes());
        batch.extend(std::iter::repeat_n(b'x', SIZE));
        batch.extend_from_slice(b"\r\n");
    }
    publisher.send(&batch);
    assert_eq!(publisher.ping_pong(), b"PONG\r\n");
    let mut pending = 0;
    eventually(Duration::from_secs(5), || {
        let connz = server.http_json("/connz?sort=pending&limit=1");
        pending = connz["connections"][0]["pending_bytes"]
            .as_u64()
            .unwrap_or(0);
        pending > 0
    });
    assert!(
        pending > 0,
        "precondition: messages are queued in the server"
    );
    server.signal("TERM");
    // Now read everything up to the close.
    let closed = sub.is_closed_within(Duration::from_secs(15));
    let got = sub.read_for(Duration::from_millis(100));
    assert!(closed, "the subscriber is closed at shutdown");
    assert_eq!(
        count_msgs(&got, "foo", SIZE),
        COUNT,
        "every queued message arrives"
    );
    assert_graceful_exit(&mut server, "SIGTERM with queued messages");
}

#[test]
fn pid_file_is_written_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("tern.pid");
    let mut server =
        TernServer::launch(Launch::default().args(&["-P", pid_file.to_str().unwrap()]));
    let written = std::fs::read_to_string(&pid_file).expect("pid file exists once ready");
    assert_eq!(written.trim(), server.pid().to_string());
    server.signal("TERM");
    assert_graceful_exit(&mut server, "SIGTERM");
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

/// Runs `tern-server ARGS` (a `--signal` call) and returns its exit code and stderr.
fn signal_command(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let done = run_server_to_exit(args, &[], dir.path(), EXIT_WAIT);
    assert!(!done.timed_out, "--signal returns: {}", done.stderr);
    (done.code, done.stderr)
}

#[test]
fn signal_term_by_pid_stops_the_server() {
    let mut server = TernServer::start();
    let (code, stderr) = signal_command(&["--signal", &format!("term={}", server.pid())]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_graceful_exit(&mut server, "--signal term=PID");
}

#[test]
fn signal_term_by_pid_file_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("tern.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let mut server = TernServer::launch(Launch::default().args(&["-P", pid_arg]));
    let (code, stderr) = signal_command(&["--signal", &format!("term={pid_arg}")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_graceful_exit(&mut server, "--signal term=PIDFILE");
}

#[test]
fn signal_finds_the_server_through_the_pid_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("tern.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let mut server = TernServer::launch(Launch::default().args(&["-P", pid_arg]));
    let (code, stderr) = signal_command(&["--signal", "quit", "-P", pid_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_graceful_exit(&mut server, "--signal quit -P PIDFILE");
}

#[test]
fn signal_with_an_unknown_command_fails() {
    let (code, stderr) = signal_command(&["--signal", "bogus=1"]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}");
    assert!(
        stderr.contains("unknown signal \"bogus\""),
        "names the bad command: {stderr}"
    );
}

#[test]
fn signal_with_a_missing_pid_file_fails() {
    let (code, stderr) = signal_command(&["--signal", "term=/nonexistent/tern.pid"]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?}");
    assert!(stderr.contains("/nonexistent/tern.pid"), "{stderr}");
}

/// A server whose log goes to a file: started by hand, since the harness
/// reads readiness from stderr. Killed on drop.
struct FileLogged {
    child: Option<Child>,
    log: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl FileLogged {
    fn start() -> FileLogged {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tern.log");
        let stderr = dir.path().join("stderr.txt");
        let port = free_port().to_string();
        let child = Command::new(server_binary())
            .current_dir(dir.path())
            .args(["-a", "127.0.0.1", "-p", &port, "-l", log.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn tern-server");
        FileLogged {
            child: Some(child),
            log,
            stderr,
            _dir: dir,
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for FileLogged {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn log_flag_writes_the_log_to_a_file() {
    let mut server = FileLogged::start();
    let ready = eventually(Duration::from_secs(20), || {
        FileLogged::read(&server.log).contains("Server is ready")
    });
    assert!(
        ready,
        "log file:\n{}\nstderr:\n{}",
        FileLogged::read(&server.log),
        FileLogged::read(&server.stderr)
    );
    let log = FileLogged::read(&server.log);
    let addr: std::net::SocketAddr = log
        .lines()
        .find_map(|l| l.split("Listening for client connections on ").nth(1))
        .expect("listening line")
        .trim()
        .parse()
        .unwrap();
    let mut c = RawClient::connect_with(addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    let pid = server.child.as_ref().unwrap().id();
    assert!(
        log.lines()
            .next()
            .unwrap()
            .starts_with(&format!("[{pid}] ")),
        "{log}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.wait_exit(EXIT_WAIT), Some(0));
    let log = FileLogged::read(&server.log);
    assert!(log.contains("Server Exiting.."), "{log}");
    assert_eq!(
        FileLogged::read(&server.stderr),
        "",
        "nothing goes to stderr with -l"
    );
}

#[test]
fn log_json_writes_json_lines() {
    let mut server = TernServer::launch(Launch::default().args(&["--log_json"]));
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_WAIT), Some(0), "{}", server.log());
    let exited = eventually(Duration::from_secs(2), || {
        server.log().contains("Server Exiting..")
    });
    assert!(exited, "{}", server.log());
    let log = server.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v.is_object(), "{line}");
        messages.push(tern_tests::log_message(line));
    }
    assert!(
        messages.iter().any(|m| m == "Server is ready"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Listening for client connections on ")),
        "{messages:?}"
    );
}

#[test]
fn sighup_keeps_running_and_says_what_it_reloads() {
    let mut server = TernServer::start();
    server.signal("HUP");
    let logged = eventually(Duration::from_secs(5), || {
        server.log().to_lowercase().contains("reload")
    });
    assert!(logged, "the log mentions reload:\n{}", server.log());
    assert!(
        server
            .log()
            .contains("only TLS certificates are reloadable"),
        "and what a reload covers:\n{}",
        server.log()
    );
    assert_eq!(
        server.wait_exit(Duration::from_millis(300)),
        None,
        "still running"
    );
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
}

#[test]
fn sigusr1_is_logged_and_ignored() {
    let mut server = TernServer::start();
    server.signal("USR1");
    let logged = eventually(Duration::from_secs(5), || {
        let log = server.log().to_lowercase();
        log.contains("reopen") || log.contains("re-open")
    });
    assert!(logged, "logged:\n{}", server.log());
    assert_eq!(
        server.wait_exit(Duration::from_millis(300)),
        None,
        "still running"
    );
    let mut c = RawClient::connect_with(server.addr, QUIET);
    assert_eq!(c.ping_pong(), b"PONG\r\n");
}

#[test]
fn lame_duck_mode_tells_clients_then_closes_them_and_exits() {
    let mut server = TernServer::launch(
        Launch::default().config("lame_duck_duration: \"2s\"\nlame_duck_grace_period: \"500ms\"\n"),
    );
    let mut clients: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect_with(server.addr, QUIET))
        .collect();
    for c in &mut clients {
        assert_eq!(c.ping_pong(), b"PONG\r\n");
    }
    let start = Instant::now();
    server.signal("USR2");
    // Every client hears about it first: an INFO with ldm set.
    for c in &mut clients {
        let line = c.read_line(Duration::from_secs(5)).expect("INFO with ldm");
        assert!(line.starts_with("INFO {"), "{line:?}");
        let info: serde_json::Value =
            serde_json::from_str(line.trim_start_matches("INFO ").trim_end()).unwrap();
        assert_eq!(info["ldm"], true);
    }
    // No new clients are taken.
    let refused = eventually(Duration::from_secs(2), || {
        std::net::TcpStream::connect(server.addr).is_err()
    });
    assert!(refused, "new connections are refused in lame duck mode");
    // Then they are closed and the server exits cleanly.
    for c in &mut clients {
        assert!(c.is_closed_within(Duration::from_secs(10)), "client closed");
    }
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "grace period honoured"
    );
    assert!(
        server.log().contains("Entering lame duck mode"),
        "{}",
        server.log()
    );
}

/// The server turns transparent huge pages off for itself (see main.rs):
/// with them, every 2 MiB page its allocator touches counts whole in RSS.
#[test]
fn transparent_huge_pages_are_off_for_the_server() {
    let mut server = TernServer::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    // Kernels since 6.0 report the flag; older ones say nothing to check.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    server.signal("TERM");
    assert_graceful_exit(&mut server, "SIGTERM");
}
