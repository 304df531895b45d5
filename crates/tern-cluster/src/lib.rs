//! Tern's cluster layer: membership gossip, route links between nodes, and
//! the transport raft traffic will use, all as one tonic gRPC service
//! (`proto/cluster.proto`) on each node's cluster port.
//!
//! This crate owns the inter-node network and nothing else: it knows no
//! NATS clients and no subscriptions. The server hands it a
//! [`RouteHandler`] that applies peers' interest to its routing tables and
//! delivers forwarded messages to local subscribers, and tells it about
//! local interest through the [`InterestRegistry`].

mod interest;
mod membership;
mod packed;
mod raft;
mod route;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

pub use interest::InterestRegistry;
pub use membership::{Liveness, MemberView};
pub use packed::{unpack, Forwarded, MalformedBatch, Received, Unpack};
pub use raft::{RaftGroupHandler, RaftGroups};
pub use route::{LinkStats, Peer};

use membership::{Changes, Membership};
use pb::cluster_client::ClusterClient;

/// Generated gRPC types and services of `proto/cluster.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("tern.cluster.v1");
}

pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Largest gRPC message a node accepts from a peer. Route batches are cut at
/// about 1 MiB, but one message may be as large as `max_payload` allows.
const MAX_GRPC_MESSAGE: usize = 128 * 1024 * 1024;
/// How long one gossip exchange may take before the peer counts as silent
/// for that round.
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster listener could not be bound.
    #[error("can not listen for cluster connections on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A peer address is not a valid endpoint.
    #[error("invalid peer address {0:?}")]
    BadAddress(String),
    /// The TLS settings were refused.
    #[error("cluster tls: {0}")]
    Tls(String),
    /// A peer refused or failed a call.
    #[error("peer call failed: {0}")]
    Status(#[from] tonic::Status),
    /// The stream to a peer ended.
    #[error("the peer closed the stream")]
    Closed,
}

/// Mutual TLS on the cluster port: every node presents `cert_pem` and
/// accepts only peers whose certificate `ca_pem` signed, in both
/// directions.
#[derive(Clone)]
pub struct ClusterTls {
    /// This node's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Its private key (PEM).
    pub key_pem: Vec<u8>,
    /// The CA that signs every node's certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The name peers' certificates are checked against; the host of the
    /// address dialled when `None`.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Shared-secret credentials routes present to each other. `Debug` hides
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for RouteAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteAuth")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// How one node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name; nodes of different clusters refuse each other.
    pub name: String,
    /// This node's stable id.
    pub node_id: String,
    /// This node's server name.
    pub server_name: String,
    /// Where the cluster (gRPC) listener binds.
    pub listen: SocketAddr,
    /// The cluster address peers are told (`host:port`); the bound address
    /// when `None`. An unspecified host is filled in by each peer with the
    /// IP it sees this node connect from.
    pub advertise: Option<String>,
    /// The address NATS clients use for this node (`host:port`), announced
    /// to peers for their clients' `connect_urls`.
    pub client_addr: String,
    /// The monitoring address (`host:port`), empty if none.
    pub monitor_addr: String,
    /// Seed routes: `host:port` of other nodes (names may resolve to several
    /// addresses).
    pub seeds: Vec<String>,
    /// Credentials routes must present, if any.
    pub auth: Option<RouteAuth>,
    /// Mutual TLS between nodes, if any.
    pub tls: Option<ClusterTls>,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// A member whose heartbeat does not rise for this long is down.
    pub down_after: Duration,
}

/// A batch of messages a peer forwarded, for local delivery; read it with
/// [`unpack`].
pub type MessageBatch = pb::MessageBatch;

/// What the server does with traffic from peers.
pub trait RouteHandler: Send + Sync + 'static {
    /// `peer` gained (`add`) or lost interest in `subject` (in `queue`).
    fn interest(
        &self,
        peer: &Arc<Peer>,
        account: &str,
        subject: &str,
        queue: Option<&str>,
        add: bool,
    );
    /// Forget all interest of `peer`: its link went down or a new snapshot
    /// follows.
    fn peer_reset(&self, peer: &Arc<Peer>);
    /// A sink for the messages one peer forwards on one inbound stream.
    fn inbound(&self, from_node_id: &str) -> Box<dyn InboundSink>;
    /// The set of members that are up changed.
    fn members_changed(&self, members: &[MemberView]);
}

/// Delivers the messages of one inbound route stream to local subscribers.
pub trait InboundSink: Send {
    /// Delivers one batch. Messages go to local subscribers only.
    fn deliver(&mut self, batch: MessageBatch);
}

/// A running cluster node.
pub struct Cluster {
    node: Arc<NodeShared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    listen_addr: SocketAddr,
}

/// State shared by the cluster's tasks.
pub(crate) struct NodeShared {
    pub(crate) config: ClusterConfig,
    pub(crate) handler: Arc<dyn RouteHandler>,
    pub(crate) interest: Arc<InterestRegistry>,
    pub(crate) raft: RaftGroups,
    pub(crate) membership: Mutex<Membership>,
    /// Peers by node id, with the task that runs the link and its stop flag.
    links: Mutex<FastMap<String, PeerLink>>,
    /// Inbound link counters by node id.
    pub(crate) inbound_stats: Mutex<FastMap<String, Arc<LinkStats>>>,
    /// gRPC channels by address (lazy: they connect on first use and
    /// reconnect by themselves).
    channels: Mutex<FastMap<String, Channel>>,
    /// Seed addresses that turned out to be this node.
    self_addrs: Mutex<std::collections::HashSet<SocketAddr>>,
    /// Seeds whose cluster name mismatch was already logged.
    pub(crate) warned: Mutex<std::collections::HashSet<String>>,
    shutdown: watch::Sender<bool>,
    incarnation: u64,
}

impl NodeShared {
    /// The peer with an outbound link, by node id.
    pub(crate) fn peer(&self, node_id: &str) -> Option<Arc<Peer>> {
        self.links.lock().get(node_id).map(|l| l.peer.clone())
    }
}

struct PeerLink {
    peer: Arc<Peer>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Cluster {
    /// Binds the cluster listener, starts gossip with the seeds and keeps
    /// route links to every member that is up.
    pub async fn start(
        config: ClusterConfig,
        interest: Arc<InterestRegistry>,
        handler: Arc<dyn RouteHandler>,
    ) -> Result<Cluster, ClusterError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ClusterError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let listen_addr = listener
            .local_addr()
            .map_err(|source| ClusterError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let me = pb::Member {
            node_id: config.node_id.clone(),
            name: config.server_name.clone(),
            incarnation,
            heartbeat: 0,
            state: pb::MemberState::Alive as i32,
            cluster_addr: config
                .advertise
                .clone()
                .unwrap_or_else(|| listen_addr.to_string()),
            client_addr: config.client_addr.clone(),
            monitor_addr: config.monitor_addr.clone(),
            lame_duck: false,
        };
        let (shutdown, _) = watch::channel(false);
        let node = Arc::new(NodeShared {
            membership: Mutex::new(Membership::new(me, config.down_after)),
            config,
            handler,
            interest,
            raft: RaftGroups::default(),
            links: Mutex::new(FastMap::default()),
            inbound_stats: Mutex::new(FastMap::default()),
            channels: Mutex::new(FastMap::default()),
            self_addrs: Mutex::new(Default::default()),
            warned: Mutex::new(Default::default()),
            shutdown,
            incarnation,
        });
        info!(
            cluster = %node.config.name,
            node_id = %node.config.node_id,
            addr = %listen_addr,
            "listening for route connections"
        );
        let server = service::serve(node.clone(), listener)?;
        let gossip = tokio::spawn(gossip_loop(node.clone()));
        node.handler
            .members_changed(&node.membership.lock().views());
        Ok(Cluster {
            node,
            tasks: Mutex::new(vec![server, gossip]),
            listen_addr,
        })
    }

    /// The bound cluster address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.node.config.name
    }

    /// Every member this node knows, itself included.
    pub fn members(&self) -> Vec<MemberView> {
        self.node.membership.lock().views()
    }

    /// The peers with an outbound link (task), by node id.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let mut peers: Vec<_> = self
            .node
            .links
            .lock()
            .values()
            .map(|l| l.peer.clone())
            .collect();
        peers.sort_by(|a, b| a.node_id().cmp(b.node_id()));
        peers
    }

    /// Counters of what each peer sent this node, by node id.
    pub fn inbound_stats(&self, node_id: &str) -> Option<Arc<LinkStats>> {
        self.node.inbound_stats.lock().get(node_id).cloned()
    }

    /// The raft groups this node hosts.
    pub fn raft_groups(&self) -> &RaftGroups {
        &self.node.raft
    }

    /// Sends one raft RPC of `group` to `node_id` and returns its answer.
    pub async fn raft_call(
        &self,
        node_id: &str,
        group: &str,
        kind: &str,
        payload: bytes::Bytes,
    ) -> Result<bytes::Bytes, ClusterError> {
        let addr = self
            .node
            .cluster_addr_of(node_id)
            .ok_or_else(|| ClusterError::BadAddress(node_id.to_owned()))?;
        let mut client = self.node.client(&addr)?;
        let request = self.node.authorize(tonic::Request::new(pb::RaftRequest {
            group: group.to_owned(),
            kind: kind.to_owned(),
            from_node_id: self.node.config.node_id.clone(),
            payload,
        }));
        Ok(client.raft(request).await?.into_inner().payload)
    }

    /// Lame duck mode: this node keeps routing, but peers stop offering it
    /// to clients (`connect_urls`) from their next gossip round.
    pub fn enter_lame_duck(&self) {
        self.node.membership.lock().set_lame_duck();
        let views = self.node.membership.lock().views();
        self.node.handler.members_changed(&views);
    }

    /// Leaves the cluster: tells every peer, then stops gossip, links and
    /// the listener.
    pub async fn shutdown(&self) {
        let peers: Vec<String> = {
            let mut table = self.node.membership.lock();
            table.leave();
            table
                .views()
                .into_iter()
                .filter(|v| {
                    v.liveness == Liveness::Up && v.member.node_id != self.node.config.node_id
                })
                .map(|v| v.member.cluster_addr)
                .collect()
        };
        let leave = pb::LeaveRequest {
            cluster_name: self.node.config.name.clone(),
            node_id: self.node.config.node_id.clone(),
            incarnation: self.node.incarnation,
        };
        let calls = peers.into_iter().filter_map(|addr| {
            let mut client = self.node.client(&addr).ok()?;
            let request = self.node.authorize(tonic::Request::new(leave.clone()));
            Some(async move {
                let _ = tokio::time::timeout(GOSSIP_TIMEOUT, client.leave(request)).await;
            })
        });
        futures::future::join_all(calls).await;
        let _ = self.node.shutdown.send(true);
        let links: Vec<PeerLink> = self.node.links.lock().drain().map(|(_, l)| l).collect();
        for link in links {
            let _ = link.stop.send(true);
            let _ = link.task.await;
        }
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        info!("left the cluster");
    }
}

impl Drop for Cluster {
    /// Stops every task without a goodbye; [`Cluster::shutdown`] leaves
    /// cleanly first.
    fn drop(&mut self) {
        let _ = self.node.shutdown.send(true);
        for (_, link) in self.node.links.lock().drain() {
            let _ = link.stop.send(true);
            link.task.abort();
        }
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl NodeShared {
    /// A client for the node at `addr`, sharing one HTTP/2 connection per
    /// address.
    pub(crate) fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, ClusterError> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(addr) {
                Some(channel) => channel.clone(),
                None => {
                    let scheme = if self.config.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
                        .map_err(|_| ClusterError::BadAddress(addr.to_owned()))?;
                    if let Some(tls) = &self.config.tls {
                        let host = addr
                            .rsplit_once(':')
                            .map_or(addr, |(h, _)| h)
                            .trim_start_matches('[')
                            .trim_end_matches(']');
                        let config = tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem))
                            .identity(tonic::transport::Identity::from_pem(
                                &tls.cert_pem,
                                &tls.key_pem,
                            ))
                            .domain_name(
                                tls.server_name.clone().unwrap_or_else(|| host.to_owned()),
                            );
                        endpoint = endpoint
                            .tls_config(config)
                            .map_err(|e| ClusterError::Tls(e.to_string()))?;
                    }
                    let endpoint = endpoint
                        .connect_timeout(Duration::from_secs(2))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .initial_stream_window_size(4 * 1024 * 1024)
                        .initial_connection_window_size(16 * 1024 * 1024);
                    let channel = endpoint.connect_lazy();
                    channels.insert(addr.to_owned(), channel.clone());
                    channel
                }
            }
        };
        Ok(ClusterClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE))
    }

    /// Adds the route credentials to an outgoing request.
    pub(crate) fn authorize<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        if let Some(auth) = &self.config.auth {
            if let (Ok(user), Ok(password)) = (auth.user.parse(), auth.password.parse()) {
                request.metadata_mut().insert("tern-route-user", user);
                request
                    .metadata_mut()
                    .insert("tern-route-password", password);
            }
        }
        request
    }

    pub(crate) fn hello_frame(&self) -> pb::RouteFrame {
        pb::RouteFrame {
            kind: Some(pb::route_frame::Kind::Hello(pb::Hello {
                cluster_name: self.config.name.clone(),
                node_id: self.config.node_id.clone(),
                incarnation: self.incarnation,
            })),
        }
    }

    /// True the first time `key` is seen: for logging a refusal once. The
    /// set is bounded; when full it starts over (a warning may repeat).
    pub(crate) fn warn_once(&self, key: String) -> bool {
        const MAX_WARNED: usize = 256;
        let mut warned = self.warned.lock();
        if warned.len() >= MAX_WARNED {
            warned.clear();
        }
        warned.insert(key)
    }

    /// Where `node_id` listens for cluster connections, if it is known and
    /// has not left.
    pub(crate) fn cluster_addr_of(&self, node_id: &str) -> Option<String> {
        let table = self.membership.lock();
        let view = table.get(node_id)?;
        (view.liveness != Liveness::Left).then(|| view.member.cluster_addr.clone())
    }

    /// Applies membership changes: starts links to members that came up and
    /// stops links to members that left.
    pub(crate) fn apply(self: &Arc<Self>, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let views = self.membership.lock().views();
        for id in &changes.gone {
            if let Some(view) = views.iter().find(|v| &v.member.node_id == id) {
                match view.liveness {
                    Liveness::Left => {
                        info!(peer = %id, name = %view.member.name, "member left the cluster")
                    }
                    Liveness::Up => info!(peer = %id, name = %view.member.name, "member restarted"),
                    Liveness::Down => warn!(peer = %id, name = %view.member.name, "member is down"),
                }
            }
            // Whatever the reason, the link goes: a member that is down may
            // still hold an open connection for a while, and must not be
            // picked for queue groups or sent messages it cannot take. A
            // member that comes back gets a new link.
            if let Some(link) = self.links.lock().remove(id) {
                let _ = link.stop.send(true);
            }
        }
        for id in &changes.up {
            let Some(view) = views.iter().find(|v| &v.member.node_id == id) else {
                continue;
            };
            info!(
                peer = %id,
                name = %view.member.name,
                addr = %view.member.cluster_addr,
                "member is up"
            );
            let mut links = self.links.lock();
            let restart = links.get(id).is_some_and(|l| l.task.is_finished());
            if restart {
                links.remove(id);
            }
            if !links.contains_key(id) {
                let peer = Arc::new(Peer::new(id.clone()));
                let (stop, stop_rx) = watch::channel(false);
                let task = tokio::spawn(route::run_link(self.clone(), peer.clone(), stop_rx));
                links.insert(id.clone(), PeerLink { peer, stop, task });
            }
        }
        self.handler.members_changed(&views);
    }
}

/// Gossip rounds: raise the heartbeat, exchange tables with every member
/// (members that are down, and the seeds, less often), declare silent
/// members down.
async fn gossip_loop(node: Arc<NodeShared>) {
    let mut shutdown = node.shutdown.subscribe();
    let mut round: u64 = 0;
    let mut ticker = tokio::time::interval(node.config.gossip_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (message, targets) = {
            let mut table = node.membership.lock();
            table.beat();
            let message = pb::GossipMessage {
                cluster_name: node.config.name.clone(),
                from_node_id: node.config.node_id.clone(),
                members: table.snapshot(),
            };
            let targets: Vec<String> = table
                .views()
                .into_iter()
                .filter(|v| v.member.node_id != node.config.node_id)
                .filter(|v| match v.liveness {
                    Liveness::Up => true,
                    Liveness::Down => round % 4 == 0,
                    Liveness::Left => false,
                })
                .map(|v| v.member.cluster_addr)
                .collect();
            (message, targets)
        };
        let mut addrs: Vec<String> = targets;
        if round % 4 == 0 {
            // Seeds are resolved on their own task: a slow DNS answer must
            // not hold up this node's heartbeat.
            let node = node.clone();
            let message = message.clone();
            tokio::spawn(async move {
                for addr in seed_addrs(&node).await {
                    let node = node.clone();
                    let message = message.clone();
                    tokio::spawn(async move { gossip_with(&node, &addr, message).await });
                }
            });
        }
        addrs.sort();
        addrs.dedup();
        // Exchanges run on their own, each bounded by GOSSIP_TIMEOUT, so a
        // silent peer does not slow the rounds (and this node's heartbeat)
        // for everyone else.
        for addr in addrs {
            let node = node.clone();
            let message = message.clone();
            tokio::spawn(async move { gossip_with(&node, &addr, message).await });
        }
        let changes = node.membership.lock().sweep();
        node.apply(changes);
        round += 1;
    }
}

/// The seed addresses, resolved, without those known to be this node.
async fn seed_addrs(node: &NodeShared) -> Vec<String> {
    let mut out = Vec::new();
    for seed in &node.config.seeds {
        let lookup =
            tokio::time::timeout(GOSSIP_TIMEOUT * 2, tokio::net::lookup_host(seed.as_str()));
        let resolved = match lookup.await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "name lookup timed out",
            )),
        };
        match resolved {
            Ok(addrs) => {
                for addr in addrs {
                    if node.self_addrs.lock().contains(&addr) {
                        continue;
                    }
                    out.push(addr.to_string());
                }
            }
            Err(e) => {
                if node.warn_once(format!("resolve {seed}")) {
                    warn!(seed = %seed, error = %e, "can not resolve seed route");
                }
            }
        }
    }
    out
}

async fn gossip_with(node: &Arc<NodeShared>, addr: &str, message: pb::GossipMessage) {
    let Ok(mut client) = node.client(addr) else {
        return;
    };
    let request = node.authorize(tonic::Request::new(message));
    let reply = match tokio::time::timeout(GOSSIP_TIMEOUT, client.gossip(request)).await {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => {
            if matches!(
                status.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Unauthenticated
            ) && node.warn_once(format!("{addr} {}", status.message()))
            {
                warn!(%addr, reason = status.message(), "peer refused this node");
            }
            return;
        }
        Err(_) => return,
    };
    if reply.from_node_id == node.config.node_id {
        if let Ok(addr) = addr.parse() {
            node.self_addrs.lock().insert(addr);
        }
        return;
    }
    if reply.cluster_name != node.config.name {
        return;
    }
    let ip = addr.parse::<SocketAddr>().ok().map(|a| a.ip());
    let direct = ip.map(|ip| (reply.from_node_id.as_str(), ip));
    let changes = node.membership.lock().merge(reply.members.clone(), direct);
    node.apply(changes);
}
