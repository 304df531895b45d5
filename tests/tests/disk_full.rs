//! A full disk: JetStream publishes get error acks that say so, every
//! acknowledged message stays readable, and once a purge frees space the
//! stream takes publishes again, also after a restart. The store lives on a
//! 100 MiB tmpfs the test mounts, so it needs root (it says so and passes
//! without checking anything otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tern_tests::{connect, free_port, Launch, TernServer};

/// A tmpfs mounted for the test; unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn launch(dir: &Path, port: u16) -> TernServer {
    let store: PathBuf = dir.join("js");
    TernServer::launch(Launch {
        port: Some(port),
        ..Launch::default().args(&["-js", "-sd", store.to_str().unwrap()])
    })
}

fn payload(i: u64) -> Bytes {
    let mut body = vec![(i % 251) as u8; 64 << 10];
    body[..8].copy_from_slice(&i.to_be_bytes());
    Bytes::from(body)
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_clearly_and_recovers_after_a_purge() {
    let Some(tmpfs) = Tmpfs::mount("100m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let port = free_port();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    {
        let mut server = launch(tmpfs.path(), port);
        let client = connect(&server.url()).await;
        let js = jetstream::new(client.clone());
        let mut s = js
            .create_stream(stream::Config {
                name: "S".into(),
                subjects: vec!["s.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        // 64 KiB messages, 16 acks in flight, until the disk says no: 100
        // MiB hold at most 1,600 of them.
        let mut refused = None;
        let mut next = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while refused.is_none() && next < 3_000 && Instant::now() < deadline {
            let mut window = Vec::new();
            for _ in 0..16 {
                window.push((next, js.publish("s.a", payload(next)).await.unwrap()));
                next += 1;
            }
            for (i, ack) in window {
                match ack.await {
                    Ok(ack) => acked.push((ack.sequence, i)),
                    Err(e) => refused = refused.or(Some(e.to_string())),
                }
            }
        }
        let refused = refused.expect("the disk filled up and a publish was refused");
        assert!(
            acked.len() > 500,
            "only {} acked before: {refused}",
            acked.len()
        );
        // The error ack, as nats-server words a store failure. (What is
        // left may still take a message or two.)
        let mut body = serde_json::Value::Null;
        for _ in 0..50 {
            let reply = client
                .request("s.a", payload(next))
                .await
                .expect("an answer, not a timeout");
            body = serde_json::from_slice(&reply.payload).unwrap();
            match body["seq"].as_u64() {
                Some(seq) if body["error"].is_null() => acked.push((seq, next)),
                _ => break,
            }
            next += 1;
        }
        assert_eq!(body["error"]["code"], 503, "{body}");
        assert_eq!(body["error"]["err_code"], 10077, "{body}");
        let description = body["error"]["description"].as_str().unwrap();
        assert!(description.contains("No space left"), "{body}");
        // Everything acknowledged is there, in order.
        let state = s.info().await.unwrap().state.clone();
        assert_eq!(state.messages, acked.len() as u64);
        for &(seq, i) in acked.iter().step_by(50).chain(acked.iter().rev().take(5)) {
            let msg = s.get_raw_message(seq).await.unwrap();
            assert_eq!(msg.payload, payload(i), "seq {seq}");
        }
        // A purge that keeps the newest 100 frees the segments before them;
        // publishing works again within seconds.
        s.purge().keep(100).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match js.publish("s.a", payload(next)).await.unwrap().await {
                Ok(ack) => {
                    acked.push((ack.sequence, next));
                    next += 1;
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("still refused 20 s after the purge: {e}"),
            }
        }
        for _ in 0..50 {
            let ack = js
                .publish("s.a", payload(next))
                .await
                .unwrap()
                .await
                .unwrap();
            acked.push((ack.sequence, next));
            next += 1;
        }
        server.signal("TERM");
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    }
    // After a restart: the 100 kept and the 51 published since.
    let server = launch(tmpfs.path(), port);
    let js = jetstream::new(connect(&server.url()).await);
    let mut s = js.get_stream("S").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 151);
    for &(seq, i) in acked.iter().rev().take(151) {
        let msg = s.get_raw_message(seq).await.unwrap();
        assert_eq!(msg.payload, payload(i), "seq {seq}");
    }
    let ack = js.publish("s.a", payload(0)).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, acked.last().unwrap().0 + 1);
}
