//! A cluster of real `tern-server` processes on loopback ports, each with
//! its own data directory (so a restarted node keeps its node id), seeded
//! from the nodes started before it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{eventually, Launch, TernServer};

/// How long a cluster may take to form a full mesh.
pub const MESH_TIMEOUT: Duration = Duration::from_secs(20);

/// Several `tern-server` processes forming one cluster; killed on drop.
pub struct TernCluster {
    /// The cluster's name.
    pub name: String,
    /// The nodes; `None` for a node that is stopped.
    pub nodes: Vec<Option<TernServer>>,
    /// The data directory of each node, kept across restarts.
    dirs: Vec<tempfile::TempDir>,
    /// Extra arguments every node gets.
    extra: Vec<String>,
}

impl TernCluster {
    /// Starts `n` nodes named `n1`..`nN` and waits for the full mesh.
    pub fn start(n: usize) -> TernCluster {
        Self::start_with("tern-test", n, &[])
    }

    /// Starts `n` nodes of cluster `name`, each with `extra` arguments, and
    /// waits for the full mesh.
    pub fn start_with(name: &str, n: usize, extra: &[&str]) -> TernCluster {
        let mut cluster = TernCluster {
            name: name.to_owned(),
            nodes: Vec::new(),
            dirs: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster.wait_mesh();
        cluster
    }

    /// Starts one more node, seeded with every running node; returns its
    /// index. Does not wait for the mesh.
    pub fn add_node(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("data dir");
        self.dirs.push(dir);
        self.nodes.push(None);
        let index = self.nodes.len() - 1;
        self.start_node(index);
        index
    }

    /// The seed routes for a node: every other running node.
    fn seeds(&self, except: usize) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .filter_map(|(_, n)| n.as_ref()?.cluster)
            .map(|a| format!("nats-route://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) node `index` with its data directory.
    pub fn start_node(&mut self, index: usize) {
        assert!(self.nodes[index].is_none(), "node {index} is running");
        let seeds = self.seeds(index);
        let name = format!("n{}", index + 1);
        let dir = self.dirs[index].path().to_string_lossy().to_string();
        let mut args = vec![
            "--cluster".to_owned(),
            "nats://127.0.0.1:-1".to_owned(),
            "--cluster_name".to_owned(),
            self.name.clone(),
            "-n".to_owned(),
            name,
            "-sd".to_owned(),
            dir,
        ];
        if !seeds.is_empty() {
            args.push("--routes".to_owned());
            args.push(seeds);
        }
        args.extend(self.extra.iter().cloned());
        let launch = Launch {
            args,
            ..Launch::monitored()
        };
        let server = TernServer::launch(launch);
        assert!(
            server.cluster.is_some(),
            "node has no cluster address:\n{}",
            server.log()
        );
        self.nodes[index] = Some(server);
    }

    /// Node `index`, which must be running.
    pub fn node(&self, index: usize) -> &TernServer {
        self.nodes[index].as_ref().expect("node is running")
    }

    /// The client URL of node `index`.
    pub fn url(&self, index: usize) -> String {
        self.node(index).url()
    }

    /// Client URLs of every running node, comma separated (for clients that
    /// take a server list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.url()).collect()
    }

    /// Kills node `index` with SIGKILL: no goodbye to its peers.
    pub fn kill(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].take() {
            node.signal("KILL");
            drop(node);
        }
    }

    /// Stops node `index` with SIGTERM, so it leaves the cluster cleanly.
    pub fn stop(&mut self, index: usize) {
        if let Some(mut node) = self.nodes[index].take() {
            node.signal("TERM");
            node.wait_exit(Duration::from_secs(10));
        }
    }

    /// `/routez` of node `index`.
    pub fn routez(&self, index: usize) -> serde_json::Value {
        self.node(index).http_json("/routez")
    }

    /// Whether node `index` has an up, connected route to every other
    /// running node.
    pub fn meshed(&self, index: usize) -> bool {
        let running = self.nodes.iter().flatten().count();
        let routez = self.routez(index);
        let connected = routez["routes"]
            .as_array()
            .map(|routes| {
                routes
                    .iter()
                    .filter(|r| r["state"] == "up" && r["connected"] == true)
                    .count()
            })
            .unwrap_or(0);
        connected == running - 1
    }

    /// Waits until every running node is meshed with every other.
    pub fn wait_mesh(&self) {
        let ok = eventually(MESH_TIMEOUT, || {
            self.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.is_some())
                .all(|(i, _)| self.meshed(i))
        });
        if !ok {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node {
                    eprintln!("---- node {i} routez ----\n{}", self.routez(i));
                    eprintln!("---- node {i} log ----\n{}", node.log());
                }
            }
            panic!("cluster did not form a full mesh within {MESH_TIMEOUT:?}");
        }
    }

    /// The interest entries node `index` knows from its peers: `subject`
    /// or `subject queue`, one per peer that has it.
    pub fn remote_interest(&self, index: usize) -> Vec<String> {
        let routez = self.node(index).http_json("/routez?subs=1");
        let mut out: Vec<String> = routez["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| {
                r["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        out.sort();
        out
    }

    /// How many peers of node `index` announced interest `entry`.
    pub fn interest_count(&self, index: usize, entry: &str) -> usize {
        self.remote_interest(index)
            .iter()
            .filter(|e| *e == entry)
            .count()
    }

    /// Waits until exactly `n` peers of node `index` announced `entry`
    /// (`subject` or `subject queue`).
    pub fn wait_interest(&self, index: usize, entry: &str, n: usize) {
        assert!(
            eventually(Duration::from_secs(10), || self
                .interest_count(index, entry)
                == n),
            "node {index}: wanted {n} peers with interest {entry:?}, have {:?}",
            self.remote_interest(index)
        );
    }

    /// The cluster address of node `index`.
    pub fn cluster_addr(&self, index: usize) -> SocketAddr {
        self.node(index).cluster.expect("cluster address")
    }
}
