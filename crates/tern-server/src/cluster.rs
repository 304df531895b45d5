//! Joins the server to a cluster: builds the cluster configuration from the
//! options, keeps the node id stable in the data directory, applies peers'
//! interest to the accounts, delivers forwarded messages and keeps clients'
//! `connect_urls` current.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tern_cluster::{
    ClusterConfig, ClusterTls, InboundSink, Liveness, MemberView, MessageBatch, Peer, RouteAuth,
    RouteHandler,
};
use tracing::{info, warn};

use crate::options::ClusterOptions;
use crate::router::Router;
use crate::server::ServerShared;

/// The cluster port nats-server uses when none is given.
pub(crate) const DEFAULT_CLUSTER_PORT: u16 = 6222;
/// The cluster name when none is configured.
pub(crate) const DEFAULT_CLUSTER_NAME: &str = "tern";
/// The file in the data directory that keeps the node id across restarts.
const NODE_ID_FILE: &str = "node_id";

/// `nats-route://user:pass@host:port` (or `nats://`, or bare `host:port`)
/// split into the address and any credentials in it.
pub(crate) fn parse_route_url(url: &str) -> (String, Option<RouteAuth>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                Some(RouteAuth {
                    user: user.to_owned(),
                    password: password.to_owned(),
                }),
                hostport,
            )
        }
        None => (None, rest),
    };
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p == "-1" || p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:{DEFAULT_CLUSTER_PORT}")
    };
    (hostport, auth)
}

/// The node id kept in `dir`, made and saved on first start.
pub(crate) fn load_node_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let id = crate::server::generate_server_id();
    let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// The cluster configuration for this server, or `None` when it runs alone.
pub(crate) fn config(
    opts: &ClusterOptions,
    node_id: String,
    server_name: &str,
    client_addr: SocketAddr,
    monitor_addr: Option<SocketAddr>,
) -> anyhow::Result<Option<ClusterConfig>> {
    if !opts.configured() {
        return Ok(None);
    }
    let (listen, listen_auth) = parse_route_url(
        opts.listen
            .as_deref()
            .unwrap_or(&format!("0.0.0.0:{DEFAULT_CLUSTER_PORT}")),
    );
    // Port -1 asks for a random port, as nats-server's `-p -1` does.
    let listen = match listen.strip_suffix(":-1") {
        Some(host) => format!("{host}:0"),
        None => listen,
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&listen)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow::anyhow!("invalid cluster listen address {listen:?}"))?,
    };
    let mut auth = opts.authorization.clone().or(listen_auth);
    let mut seeds = Vec::new();
    for route in &opts.routes {
        let (addr, route_auth) = parse_route_url(route);
        if auth.is_none() {
            auth = route_auth;
        }
        seeds.push(addr);
    }
    let tls = match &opts.tls {
        Some(t) => {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cluster tls: can not read {}: {e}", path.display())
                })
            };
            let ca_file = t
                .ca_file
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("cluster tls needs ca_file"))?;
            Some(ClusterTls {
                cert_pem: read(&t.cert_file)?,
                key_pem: read(&t.key_file)?,
                ca_pem: read(ca_file)?,
                server_name: None,
            })
        }
        None => None,
    };
    Ok(Some(ClusterConfig {
        name: opts
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned()),
        node_id,
        server_name: server_name.to_owned(),
        listen,
        advertise: opts.advertise.clone(),
        client_addr: client_addr.to_string(),
        monitor_addr: monitor_addr.map(|a| a.to_string()).unwrap_or_default(),
        seeds,
        auth,
        tls,
        gossip_interval: Duration::from_millis(250),
        down_after: Duration::from_secs(3),
    }))
}

/// The server's side of the cluster: what to do with peers' traffic.
pub(crate) struct ClusterGlue {
    server: std::sync::OnceLock<Weak<ServerShared>>,
}

impl ClusterGlue {
    pub(crate) fn new() -> Self {
        Self {
            server: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn attach(&self, server: &Arc<ServerShared>) {
        let _ = self.server.set(Arc::downgrade(server));
    }

    fn server(&self) -> Option<Arc<ServerShared>> {
        self.server.get()?.upgrade()
    }
}

impl RouteHandler for ClusterGlue {
    fn interest(
        &self,
        peer: &Arc<Peer>,
        account: &str,
        subject: &str,
        queue: Option<&str>,
        add: bool,
    ) {
        if let Some(account) = self.server().and_then(|s| s.known_account(account)) {
            account.remote_interest(peer, subject, queue, add);
        }
    }

    fn peer_reset(&self, peer: &Arc<Peer>) {
        if let Some(server) = self.server() {
            for account in server.all_accounts() {
                account.remove_peer(peer);
            }
        }
    }

    fn inbound(&self, _from_node_id: &str) -> Box<dyn InboundSink> {
        Box::new(RouteInbound {
            server: self.server.get().cloned().unwrap_or_default(),
            routers: HashMap::new(),
        })
    }

    fn members_changed(&self, members: &[MemberView]) {
        if let Some(server) = self.server() {
            update_connect_urls(&server, members);
        }
    }
}

/// Delivers the messages one peer forwards, with a router per account so
/// each keeps its match cache.
struct RouteInbound {
    server: Weak<ServerShared>,
    routers: HashMap<String, Router>,
}

impl InboundSink for RouteInbound {
    fn deliver(&mut self, batch: MessageBatch) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        for message in tern_cluster::unpack(&batch.packed) {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    warn!(error = %e, "dropping the rest of a route batch");
                    break;
                }
            };
            let router = match self.routers.get_mut(message.account) {
                Some(router) => router,
                None => {
                    // An account this node does not know has no subscribers.
                    let Some(account) = server.known_account(message.account) else {
                        continue;
                    };
                    self.routers
                        .entry(message.account.to_owned())
                        .or_insert_with(|| Router::new(server.clone(), account))
                }
            };
            router.deliver_routed(&message);
        }
        for router in self.routers.values_mut() {
            router.finish_batch();
        }
    }
}

/// Recomputes the client URLs of the live members and, when they changed,
/// sends every client a new `INFO` so it can fail over to nodes it was
/// never told about.
fn update_connect_urls(server: &Arc<ServerShared>, members: &[MemberView]) {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| m.liveness == Liveness::Up && !m.member.lame_duck)
        .map(|m| m.member.client_addr.clone())
        .filter(|addr| !addr.is_empty() && !addr_unspecified(addr))
        .collect();
    urls.sort();
    urls.dedup();
    {
        let mut current = server.connect_urls.lock();
        if *current == urls {
            return;
        }
        info!(urls = ?urls, "cluster client urls changed");
        *current = urls;
    }
    for client in server.clients() {
        if client.is_internal() {
            continue;
        }
        let info = server.client_info(client.id, client.addr);
        let mut line = bytes::BytesMut::new();
        tern_protocol::encode_info(&mut line, &info);
        client.send_now(&line);
    }
}

fn addr_unspecified(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
}

/// Starts the cluster for `server`, if configured.
pub(crate) async fn start(
    server: &Arc<ServerShared>,
    glue: Arc<ClusterGlue>,
    config: ClusterConfig,
) -> anyhow::Result<Arc<tern_cluster::Cluster>> {
    glue.attach(server);
    let interest = server
        .interest
        .clone()
        .ok_or_else(|| anyhow::anyhow!("cluster started without an interest registry"))?;
    let cluster = tern_cluster::Cluster::start(config, interest, glue)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if cluster.members().len() == 1 && server.opts.cluster.routes.is_empty() {
        warn!("cluster has no seed routes: this node waits for others to join it");
    }
    Ok(Arc::new(cluster))
}
