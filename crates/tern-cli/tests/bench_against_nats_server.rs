//! `tern bench run` and `tern bench compare` end to end against a real
//! nats-server on loopback. `nats-server` must be on `PATH`: `make test`
//! and `.ci/run` install Debian's package (`make nats-server`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn nats_server() -> Option<PathBuf> {
    let output = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let path = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Kills the server and removes its JetStream store however the test ends.
struct Server(Child, PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts `bin` with JetStream on a fresh store directory (`-js -sd`).
fn start_server(bin: &PathBuf) -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = std::env::temp_dir().join(format!(
        "tern-bench-test-store-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).unwrap();
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child, store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

#[test]
fn run_every_scenario_small() {
    let bin = nats_server().expect("nats-server is not on PATH: run `make nats-server`");
    let (server, port) = start_server(&bin);
    let output = Command::new(TERN)
        .args(["bench", "run", "--json", "--msgs", "3000", "--conns", "100"])
        .args(["--url", &format!("nats://127.0.0.1:{port}")])
        .args(["--server-pid", &server.0.id().to_string()])
        .arg("--store-dir")
        .arg(&server.1)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tern failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcomes: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // (5 core + 5 JetStream sized scenarios) × 2 default sizes + idle-conns.
    assert_eq!(outcomes.len(), 21, "{stdout}");
    for outcome in &outcomes {
        assert_eq!(outcome["errors"].as_array().unwrap().len(), 0, "{outcome}");
        let figures = outcome["figures"].as_array().unwrap();
        assert!(figures.iter().any(|f| f["key"] == "server_cpu_ns_per_msg"
            || f["key"] == "server_cpu_ns_per_req"
            || f["key"] == "server_cpu_ns_per_conn"));
    }
    let queue = outcomes.iter().find(|o| o["scenario"] == "queue").unwrap();
    assert_eq!(queue["count"], 3000);
    let figure = |scenario: &str, key: &str| -> f64 {
        let outcome = outcomes
            .iter()
            .find(|o| o["scenario"] == scenario && o["size"] == 1024)
            .unwrap();
        outcome["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {outcome}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert!(figure("js-pub-sync", "ack_p99_us") > 0.0);
    assert!(figure("js-pub-async", "acked_msgs_per_sec") > 0.0);
    // The scenario itself checks that the acks emptied the work queue.
    assert!(figure("js-workqueue", "consumed_msgs_per_sec") > 0.0);
    // 1 KiB payloads: at least the payload per stored message, and not absurd.
    let disk = figure("js-disk", "disk_bytes_per_msg");
    assert!((1024.0..8192.0).contains(&disk), "{disk} B per msg");
}

#[test]
fn compare_nats_with_itself() {
    let bin = nats_server().expect("nats-server is not on PATH: run `make nats-server`");
    let out = std::env::temp_dir().join(format!("tern-compare-test-{}.md", std::process::id()));
    let child = Command::new(TERN)
        .args(["bench", "compare", "--rounds", "2", "--no-pin"])
        .args([
            "--scenarios",
            "pub,reqrep,js-disk",
            "--size",
            "16",
            "--msgs",
            "2000",
        ])
        .arg("--tern-bin")
        .arg(&bin)
        .arg("--nats-bin")
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tern_pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(table.contains("| ratio (tern/nats) |"), "{table}");
    assert!(
        table.contains("| pub 16B | publish rate | msg/s | higher |"),
        "{table}"
    );
    assert!(
        table.contains("| reqrep 16B | round trip p99 | µs | lower |"),
        "{table}"
    );
    assert!(
        table
            .contains("| js-disk 16B | store dir growth per stored msg (file sizes) | B | lower |"),
        "{table}"
    );
    assert!(table.contains("fsync"), "{table}");
    // The per-start store directories are gone.
    let marker = format!("-{tern_pid}-");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("tern-bench-") && name.contains(&marker))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
