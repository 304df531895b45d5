//! Test harness: starts real `tern-server` processes on ephemeral loopback
//! ports, talks to them over raw sockets and HTTP, and cleans up after itself.
//!
//! Every wait here is bounded; a server that does not come up within
//! [`START_TIMEOUT`] fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod pki;

/// How long a server may take to print `Server is ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `tern-server` binary next to the test binary, built on first use if missing.
///
/// An existing binary is used as is, even if stale: `make test` and
/// `cargo test --workspace` build it, but after changing the server, run
/// `cargo build -p tern-server` before `cargo test -p tern-tests` alone (or
/// point `TERN_SERVER_BIN` at the binary to test).
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("TERN_SERVER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> -> target/<profile>/tern-server
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = profile_dir.join("tern-server");
        if !bin.exists() {
            let release = profile_dir.ends_with("release");
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "tern-server", "--bin", "tern-server"]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "building tern-server failed");
        }
        bin
    })
    .clone()
}

/// A running `tern-server` process, killed on drop.
pub struct TernServer {
    child: Option<Child>,
    /// Client address.
    pub addr: SocketAddr,
    /// Monitoring address, if monitoring is on.
    pub http: Option<SocketAddr>,
    /// Cluster (route) address, if the server joined a cluster.
    pub cluster: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// Options for starting a server.
#[derive(Default, Clone)]
pub struct Launch {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Configuration file text, written to `server.conf` (or `server.toml`).
    pub config: Option<String>,
    /// Write the configuration as TOML instead of nats-server format.
    pub toml: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Fixed client port instead of an ephemeral one.
    pub port: Option<u16>,
    /// Turn monitoring on (on an ephemeral port).
    pub monitor: bool,
    /// Pass no `-a`/`-p` of our own: `args` (or the configuration) say where
    /// to listen. The log's `Listening for client connections on` line still
    /// gives the address.
    pub bare: bool,
}

impl Launch {
    /// A server with monitoring on.
    pub fn monitored() -> Self {
        Launch {
            monitor: true,
            ..Launch::default()
        }
    }

    /// Adds arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Sets the configuration file text.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_owned());
        self
    }
}

impl TernServer {
    /// Starts a server with default options on an ephemeral port.
    pub fn start() -> TernServer {
        Self::launch(Launch::default())
    }

    /// Starts a server as `launch` says and waits until it is ready.
    pub fn launch(launch: Launch) -> TernServer {
        Self::try_launch(launch).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server; an error carries the server's output.
    pub fn try_launch(launch: Launch) -> Result<TernServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(server_binary());
        cmd.current_dir(dir.path());
        if !launch.bare {
            let port = launch.port.map_or("-1".to_owned(), |p| p.to_string());
            cmd.args(["-a", "127.0.0.1", "-p", &port]);
        }
        if launch.monitor {
            cmd.args(["-m", "-1"]);
        }
        if let Some(text) = &launch.config {
            let name = if launch.toml {
                "server.toml"
            } else {
                "server.conf"
            };
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            cmd.arg("-c").arg(path);
        }
        cmd.args(&launch.args);
        if std::env::var_os("TERN_TEST_SERVER_DEBUG").is_some() {
            cmd.arg("-DV");
        }
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn tern-server: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = ready_tx.send(line.clone());
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut addr = None;
        let mut http = None;
        let mut cluster = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(line) => {
                    let line = log_message(&line);
                    if let Some(a) = line.split("Listening for client connections on ").nth(1) {
                        addr = a.trim().parse().ok();
                    }
                    if let Some(a) = line.split("Starting http monitor on ").nth(1) {
                        let port: u16 = a
                            .trim()
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0);
                        http = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                    }
                    if let Some(a) = line.split(" listening for routes on ").nth(1) {
                        cluster = a.trim().parse().ok();
                    }
                    if line.contains("Server is ready") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let log = log.lock().unwrap().join("\n");
                    return Err(format!(
                        "tern-server did not become ready ({status:?}):\n{log}"
                    ));
                }
            }
        }
        let addr = addr.ok_or("no client address in the log")?;
        Ok(TernServer {
            child: Some(child),
            addr,
            http,
            cluster,
            log,
            _dir: dir,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS:") * 1024
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
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

    /// Fetches a monitoring endpoint: status, content type and body.
    pub fn http_get(&self, path: &str) -> HttpResponse {
        http_get(self.http.expect("monitoring is on"), path)
    }

    /// Fetches a monitoring endpoint and parses it as JSON, expecting 200.
    pub fn http_json(&self, path: &str) -> serde_json::Value {
        let resp = self.http_get(path);
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
        serde_json::from_str(&resp.body)
            .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", resp.body))
    }
}

impl Drop for TernServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tern-server log ----\n{}\n-------------------------",
                self.log()
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The message of a log line: the line itself, or for a JSON line
/// (`--log_json`) its `fields.message` (or `message`).
pub fn log_message(line: &str) -> String {
    if line.trim_start().starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let msg = v
                .pointer("/fields/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("msg"))
                .and_then(serde_json::Value::as_str);
            if let Some(msg) = msg {
                return msg.to_owned();
            }
        }
    }
    line.to_owned()
}

/// What a `tern-server` run that was expected to end produced.
#[derive(Debug)]
pub struct Finished {
    /// Exit code; `None` if it had to be killed at the timeout (or died by a signal).
    pub code: Option<i32>,
    /// Whether it was still running at the timeout (and was killed).
    pub timed_out: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `tern-server ARGS` in `dir` to completion, bounded by `timeout`
/// (killed if it is still running then), and collects its output.
pub fn run_server_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    timeout: Duration,
) -> Finished {
    let mut cmd = Command::new(server_binary());
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tern-server");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes;
/// returns its last answer.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS:`, `VmHWM:`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A minimal HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: String,
    /// Body text.
    pub body: String,
}

/// A bounded HTTP/1.0 GET, enough for the monitoring endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect http");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read http response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    HttpResponse {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// A raw protocol connection for exact-byte tests.
pub struct RawClient {
    stream: TcpStream,
    /// The `INFO` line the server greeted with.
    pub info: String,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and reads the `INFO` line.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut client = RawClient {
            stream,
            info: String::new(),
            buf: Vec::new(),
        };
        let info = client.read_line(Duration::from_secs(5)).expect("INFO line");
        assert!(info.starts_with("INFO {"), "unexpected greeting {info:?}");
        client.info = info;
        client
    }

    /// Connects and sends `CONNECT` with the given JSON.
    pub fn connect_with(addr: SocketAddr, connect_json: &str) -> RawClient {
        let mut c = Self::connect(addr);
        c.send(format!("CONNECT {connect_json}\r\n").as_bytes());
        c
    }

    /// The local (client-side) address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// The `INFO` JSON.
    pub fn info_json(&self) -> serde_json::Value {
        let json = self.info.trim_start_matches("INFO ").trim_end();
        serde_json::from_str(json).expect("INFO json")
    }

    /// Writes bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads until `want` bytes arrived or `timeout` passed; returns what came.
    pub fn read_for(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Reads until the received bytes end with `suffix` (bounded by `timeout`).
    pub fn read_until(&mut self, suffix: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while !self.buf.ends_with(suffix) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Sends `PING` and returns everything up to and including the `PONG`.
    pub fn ping_pong(&mut self) -> Vec<u8> {
        self.send(b"PING\r\n");
        self.read_until(b"PONG\r\n", Duration::from_secs(5))
    }

    /// Reads one CRLF-terminated line.
    pub fn read_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut byte = [0u8; 1];
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Whether the server closed the connection (EOF or reset) within `timeout`.
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
        false
    }
}

/// Connects an `async-nats` client with bounded retries.
pub async fn connect(url: &str) -> async_nats::Client {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

/// Connects an `async-nats` client with options, bounded.
pub async fn connect_with(url: &str, options: async_nats::ConnectOptions) -> async_nats::Client {
    tokio::time::timeout(Duration::from_secs(40), options.connect(url))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Waits until the server has processed everything `client` sent before.
///
/// A request to a subject nobody listens on comes back as a `503` only after
/// the server handled the connection's earlier operations, in order; this
/// works for clients with echo off too. (`async-nats`'s `flush` only empties
/// the client's buffer; it is no round trip.)
pub async fn round_trip(client: &async_nats::Client) {
    let subject = client.new_inbox();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, bytes::Bytes::new()),
    )
    .await
    .expect("round trip timed out");
    match result {
        Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {}
        other => panic!("round trip expected no responders, got {other:?}"),
    }
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
