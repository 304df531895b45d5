//! The server: listeners, the registry of connections, shared counters and
//! orderly shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tern_protocol::{ConnectInfo, ServerInfo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::account::{Account, GLOBAL_ACCOUNT};
use crate::client::{self, ClientShared, SubRef};
use crate::options::ServerOptions;

/// The NATS server version whose client protocol Tern speaks; clients gate
/// features on it.
pub const NATS_COMPAT_VERSION: &str = "2.10.0";
/// Tern's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Server-wide message counters.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) in_msgs: AtomicU64,
    pub(crate) out_msgs: AtomicU64,
    pub(crate) in_bytes: AtomicU64,
    pub(crate) out_bytes: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) total_connections: AtomicU64,
}

/// JetStream figures for monitoring, kept up to date by the service.
#[derive(Debug, Default)]
pub(crate) struct JetStreamStats {
    pub(crate) enabled: std::sync::atomic::AtomicBool,
    pub(crate) streams: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) memory: AtomicU64,
    pub(crate) storage: AtomicU64,
    pub(crate) api_total: AtomicU64,
    pub(crate) api_errors: AtomicU64,
    pub(crate) consumers: AtomicU64,
    /// Accounts with JetStream: each account's service counts itself.
    pub(crate) accounts: AtomicU64,
    pub(crate) store_dir: Mutex<Option<std::path::PathBuf>>,
}

/// State shared by every task of one server.
pub(crate) struct ServerShared {
    pub(crate) opts: ServerOptions,
    pub(crate) server_id: String,
    pub(crate) server_name: String,
    pub(crate) client_addr: SocketAddr,
    pub(crate) http_addr: Mutex<Option<SocketAddr>>,
    pub(crate) https_addr: Mutex<Option<SocketAddr>>,
    pub(crate) stats: ServerStats,
    pub(crate) js: JetStreamStats,
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    account: Arc<Account>,
    /// Accounts other than the default one.
    accounts: Mutex<HashMap<String, Arc<Account>>>,
    authenticator: tern_auth::Authenticator,
    /// Set when clients must speak TLS; replaced when certificates are
    /// reloaded (SIGHUP), so new connections get the new ones.
    pub(crate) tls: parking_lot::RwLock<Option<tokio_rustls::TlsAcceptor>>,
    /// The same for the WebSocket listener.
    pub(crate) ws_tls: parking_lot::RwLock<Option<tokio_rustls::TlsAcceptor>>,
    clients: Mutex<HashMap<u64, Arc<ClientShared>>>,
    next_cid: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Local interest announced to the cluster; `None` when running alone.
    pub(crate) interest: Option<Arc<tern_cluster::InterestRegistry>>,
    /// The cluster this node is part of, once joined.
    pub(crate) cluster: std::sync::OnceLock<Arc<tern_cluster::Cluster>>,
    /// Client URLs of the cluster's live nodes, for `INFO.connect_urls`.
    pub(crate) connect_urls: Mutex<Vec<String>>,
    /// Tells this server's service-import reply subjects apart.
    pub(crate) reply_token: String,
}

impl ServerShared {
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn global_account(&self) -> Arc<Account> {
        self.account.clone()
    }

    /// The account called `name`, made on first use. Accounts never share
    /// subscriptions: a message published in one reaches no other.
    pub(crate) fn account(&self, name: &str) -> Arc<Account> {
        if name == self.account.name {
            return self.account.clone();
        }
        self.accounts
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Account::new(name, self.interest.clone())))
            .clone()
    }

    /// The TLS acceptor for new client connections, if TLS is on.
    pub(crate) fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.read().clone()
    }

    /// Reads the TLS certificates and keys again (client, WebSocket). A
    /// set that fails to load leaves the old one in place. Existing
    /// connections keep the certificates they were made with.
    pub(crate) fn reload_tls(&self) -> anyhow::Result<bool> {
        let mut reloaded = false;
        if let Some(opts) = &self.opts.tls {
            *self.tls.write() = Some(crate::tls::acceptor(opts)?);
            reloaded = true;
        }
        if let Some(opts) = self.opts.websocket.as_ref().and_then(|w| w.tls.as_ref()) {
            *self.ws_tls.write() = Some(crate::tls::acceptor(opts)?);
            reloaded = true;
        }
        Ok(reloaded)
    }

    /// The account called `name` if the configuration knows it (the
    /// default account, `accounts {}` entries, preloaded JWT accounts) or it
    /// exists already: what a peer names is never allowed to create
    /// accounts without bound.
    pub(crate) fn known_account(&self, name: &str) -> Option<Arc<Account>> {
        if name == self.account.name {
            return Some(self.account.clone());
        }
        if let Some(account) = self.accounts.lock().get(name) {
            return Some(account.clone());
        }
        let auth = &self.opts.auth;
        let configured = auth.accounts.iter().any(|(a, _)| a == name)
            || auth.resolver_preload.iter().any(|(a, _)| a == name);
        configured.then(|| self.account(name))
    }

    /// Every account made so far, the default one first.
    pub(crate) fn all_accounts(&self) -> Vec<Arc<Account>> {
        let mut all = vec![self.account.clone()];
        all.extend(self.accounts.lock().values().cloned());
        all
    }

    /// The `INFO` sent to a new connection.
    pub(crate) fn client_info(&self, client_id: u64, addr: SocketAddr) -> ServerInfo {
        self.client_info_with_nonce(client_id, addr, String::new())
    }

    /// The `INFO` for a connection that must sign `nonce`.
    pub(crate) fn client_info_with_nonce(
        &self,
        client_id: u64,
        addr: SocketAddr,
        nonce: String,
    ) -> ServerInfo {
        ServerInfo {
            server_id: self.server_id.clone(),
            server_name: self.server_name.clone(),
            version: NATS_COMPAT_VERSION.into(),
            proto: 1,
            git_commit: String::new(),
            go: format!("tern {VERSION}"),
            host: self.opts.host.clone(),
            port: self.client_addr.port(),
            headers: true,
            max_payload: self.opts.max_payload as i64,
            jetstream: self.opts.jetstream.enabled,
            auth_required: self.opts.auth.required(),
            tls_required: self.opts.tls.is_some(),
            tls_verify: self
                .opts
                .tls
                .as_ref()
                .is_some_and(|t| t.verify || t.verify_and_map),
            client_id,
            client_ip: addr.ip().to_string(),
            nonce,
            cluster: self
                .cluster
                .get()
                .map(|c| c.name().to_owned())
                .unwrap_or_default(),
            connect_urls: self.connect_urls.lock().clone(),
            ..ServerInfo::default()
        }
    }

    /// Adds a connection to the registry; false when `max_connections` is reached.
    pub(crate) fn register(&self, client: &Arc<ClientShared>) -> bool {
        let mut clients = self.clients.lock();
        if clients.len() >= self.opts.max_connections {
            return false;
        }
        clients.insert(client.id, client.clone());
        self.stats.total_connections.fetch_add(1, Ordering::Relaxed);
        true
    }

    pub(crate) fn unregister(&self, client: &ClientShared) {
        self.clients.lock().remove(&client.id);
    }

    /// A snapshot of the open connections, for monitoring.
    pub(crate) fn clients(&self) -> Vec<Arc<ClientShared>> {
        self.clients.lock().values().cloned().collect()
    }

    pub(crate) fn num_clients(&self) -> usize {
        self.clients.lock().len()
    }

    /// Checks a client's credentials against the configured ones.
    /// Checks a client's credentials; the nonce is the one its `INFO` carried.
    pub(crate) fn authenticate(
        &self,
        info: &ConnectInfo,
        nonce: &str,
        tls_identities: &[String],
    ) -> Result<tern_auth::Authenticated, tern_auth::AuthError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.authenticator.authenticate(
            &tern_auth::Credentials::from(info),
            nonce.as_bytes(),
            tls_identities,
            now,
        )
    }

    /// A fresh nonce for a connection's `INFO`, when nkeys are in use.
    pub(crate) fn new_nonce(&self) -> String {
        if !self.authenticator.needs_nonce() {
            return String::new();
        }
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..22)
            .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
            .collect()
    }

    /// Removes a subscription from routing and from its owner.
    pub(crate) fn remove_subscription(&self, account: &Account, sub: &SubRef) {
        account.unsubscribe(sub);
        sub.client.subs.lock().retain(|s| s != sub);
    }

    /// A receiver that changes once, when the server shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    shared: Arc<ServerShared>,
    accept_task: JoinHandle<()>,
    monitor_task: Option<JoinHandle<()>>,
    https_task: Option<JoinHandle<()>>,
    websocket_task: Option<JoinHandle<()>>,
    /// The JetStream services: a stop waits for them to write what they
    /// hold (consumer positions, deletes of consumed messages).
    jetstream_tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listeners and starts serving.
    pub async fn start(opts: ServerOptions) -> anyhow::Result<Server> {
        let listener = listen(&opts.host, opts.port)
            .await
            .map_err(|e| anyhow::anyhow!("can not listen on {}:{}: {e}", opts.host, opts.port))?;
        let client_addr = listener.local_addr()?;
        // A clustered node keeps its id across restarts, in its data
        // directory; peers know it by that id.
        let clustered = opts.cluster.configured();
        let server_id = match (&opts.jetstream.store_dir, clustered) {
            (Some(dir), true) => crate::cluster::load_node_id(dir).map_err(|e| {
                anyhow::anyhow!("can not keep the node id in {}: {e}", dir.display())
            })?,
            (None, true) => {
                tracing::warn!(
                    "no data directory (-sd / jetstream.store_dir): the node id changes on every restart"
                );
                generate_server_id()
            }
            _ => generate_server_id(),
        };
        let interest = clustered.then(|| Arc::new(tern_cluster::InterestRegistry::default()));
        let server_name = if opts.server_name.is_empty() {
            server_id.clone()
        } else {
            opts.server_name.clone()
        };
        let mut auth_config = opts.auth.auth_config();
        if opts.tls.as_ref().is_some_and(|t| t.verify_and_map) {
            match &mut auth_config {
                tern_auth::AuthConfig::Users(users) if !users.users.is_empty() => {
                    users.tls_map = true;
                }
                _ => anyhow::bail!(
                    "tls.verify_and_map needs users (authorization.users or accounts) named after certificate identities"
                ),
            }
        }
        let authenticator = tern_auth::Authenticator::new(auth_config)
            .map_err(|e| anyhow::anyhow!("invalid authorization configuration: {e}"))?;
        let tls = match &opts.tls {
            Some(tls) => Some(crate::tls::acceptor(tls)?),
            None => None,
        };
        let ws_tls = match opts.websocket.as_ref().and_then(|ws| ws.tls.as_ref()) {
            Some(tls) => Some(crate::tls::acceptor(tls)?),
            None => None,
        };
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(ServerShared {
            opts,
            server_id,
            server_name,
            client_addr,
            http_addr: Mutex::new(None),
            https_addr: Mutex::new(None),
            stats: ServerStats::default(),
            js: JetStreamStats::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            account: Arc::new(Account::new(GLOBAL_ACCOUNT, interest.clone())),
            accounts: Mutex::new(HashMap::new()),
            authenticator,
            tls: parking_lot::RwLock::new(tls),
            ws_tls: parking_lot::RwLock::new(ws_tls),
            clients: Mutex::new(HashMap::new()),
            next_cid: AtomicU64::new(1),
            shutdown,
            interest,
            cluster: std::sync::OnceLock::new(),
            connect_urls: Mutex::new(Vec::new()),
            reply_token: crate::imports::server_token(),
        });
        crate::imports::install(
            &shared,
            &shared.opts.auth.exports,
            &shared.opts.auth.imports,
        )?;

        info!("Starting tern-server");
        info!("  Version:  {VERSION} (NATS protocol {NATS_COMPAT_VERSION})");
        info!("  Name:     {}", shared.server_name);
        info!("  ID:       {}", shared.server_id);
        if let Some(dir) = &shared.opts.jetstream.store_dir {
            info!("  Data dir: {}", dir.display());
        }

        let monitor_task = match shared.opts.http_port {
            Some(port) => {
                let (addr, task) = crate::monitor::start(shared.clone(), port).await?;
                *shared.http_addr.lock() = Some(addr);
                info!(
                    "Starting http monitor on {}:{}",
                    shared.opts.http_host,
                    addr.port()
                );
                Some(task)
            }
            None => None,
        };

        let https_task = match shared.opts.https_port {
            Some(port) => {
                if shared.opts.tls.is_none() {
                    anyhow::bail!("https_port needs the tls settings (cert_file, key_file)");
                }
                let (addr, task) = crate::monitor::start_https(shared.clone(), port).await?;
                *shared.https_addr.lock() = Some(addr);
                info!(
                    "Starting https monitor on {}:{}",
                    shared.opts.http_host,
                    addr.port()
                );
                Some(task)
            }
            None => None,
        };

        let mut jetstream_tasks = Vec::new();
        if shared.opts.jetstream.enabled {
            let store_dir = shared
                .opts
                .jetstream
                .store_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("tern"));
            let service = crate::jetstream::JetStream::start(
                shared.clone(),
                store_dir.clone(),
                shared.global_account(),
            )?;
            jetstream_tasks.push(tokio::spawn(service));
            // Accounts configured with `jetstream: enabled` each get their
            // own service and store.
            for name in &shared.opts.auth.jetstream_accounts {
                let service = crate::jetstream::JetStream::start(
                    shared.clone(),
                    store_dir.clone(),
                    shared.account(name),
                )?;
                jetstream_tasks.push(tokio::spawn(service));
            }
        }
        let websocket_task = match &shared.opts.websocket {
            Some(ws) => {
                let host = if ws.host.is_empty() {
                    shared.opts.host.clone()
                } else {
                    ws.host.clone()
                };
                let listener = listen(&host, ws.port).await.map_err(|e| {
                    anyhow::anyhow!(
                        "can not listen for websocket clients on {host}:{}: {e}",
                        ws.port
                    )
                })?;
                let port = listener.local_addr()?.port();
                let scheme = if ws.tls.is_some() { "wss" } else { "ws" };
                info!("Listening for websocket clients on {scheme}://{host}:{port}");
                Some(tokio::spawn(crate::websocket::accept_loop(
                    shared.clone(),
                    listener,
                )))
            }
            None => None,
        };
        let cluster_config = crate::cluster::config(
            &shared.opts.cluster,
            shared.server_id.clone(),
            &shared.server_name,
            client_addr,
            *shared.http_addr.lock(),
        )?;
        if let Some(config) = cluster_config {
            let glue = Arc::new(crate::cluster::ClusterGlue::new());
            let cluster = crate::cluster::start(&shared, glue, config).await?;
            info!(
                "Cluster {} listening for routes on {}",
                cluster.name(),
                cluster.listen_addr()
            );
            let _ = shared.cluster.set(cluster);
        }
        info!(
            "Listening for client connections on {}:{}",
            shared.opts.host,
            client_addr.port()
        );
        info!("Server is ready");
        let accept_task = tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Server {
            shared,
            accept_task,
            monitor_task,
            https_task,
            websocket_task,
            jetstream_tasks,
        })
    }

    /// Reloads what can change without a restart: the TLS certificates
    /// and keys (read again from the configured files). Logs the outcome.
    pub fn reload(&self) {
        match self.shared.reload_tls() {
            Ok(true) => info!("Reloaded TLS certificates"),
            Ok(false) => info!("Reload: nothing to reload (only TLS certificates are reloadable; other settings need a restart)"),
            Err(e) => error!(error = %format!("{e:#}"), "Reloading TLS certificates failed; keeping the old ones"),
        }
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.shared.client_addr
    }

    /// The monitoring address, if monitoring is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        *self.shared.http_addr.lock()
    }

    /// Lame duck mode, as nats-server's: stop accepting, tell every client
    /// (`INFO` with `ldm: true`) so it can move elsewhere, wait the grace
    /// period, then close the clients spread over the rest of
    /// `lame_duck_duration`, and shut down.
    pub async fn lame_duck(self) {
        info!("Entering lame duck mode, stop accepting new clients");
        self.accept_task.abort();
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.enter_lame_duck();
        }
        if let Some(task) = &self.websocket_task {
            task.abort();
        }
        let shared = &self.shared;
        for client in shared.clients() {
            let mut info = shared.client_info(client.id, client.addr);
            info.ldm = true;
            let mut line = bytes::BytesMut::new();
            tern_protocol::encode_info(&mut line, &info);
            client.send_now(&line);
        }
        let grace = shared
            .opts
            .lame_duck_grace_period
            .min(shared.opts.lame_duck_duration);
        tokio::time::sleep(grace).await;
        let clients = shared.clients();
        let spread = shared.opts.lame_duck_duration.saturating_sub(grace);
        // Close in up to 100 steps so reconnecting clients do not all land at once.
        let steps = clients.len().clamp(1, 100);
        let per_step = clients.len().div_ceil(steps);
        let pause = spread / steps as u32;
        for batch in clients.chunks(per_step.max(1)) {
            for client in batch {
                client.close(client::CloseReason::ServerShutdown);
            }
            tokio::time::sleep(pause).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, tells every connection to flush and close, and waits
    /// (bounded) for them to finish.
    pub async fn shutdown(self) {
        info!("Initiating Shutdown...");
        self.accept_task.abort();
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.shutdown().await;
        }
        if let Some(task) = &self.https_task {
            task.abort();
        }
        if let Some(task) = &self.monitor_task {
            task.abort();
        }
        if let Some(task) = &self.websocket_task {
            task.abort();
        }
        let _ = self.shared.shutdown.send(true);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while self.shared.num_clients() > 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // JetStream writes what it holds before the process goes.
        for task in self.jetstream_tasks {
            let wait = std::time::Duration::from_secs(5);
            if tokio::time::timeout(wait, task).await.is_err() {
                tracing::warn!("JetStream did not stop in time");
            }
        }
        info!("Server Exiting..");
    }
}

/// Pending connections the kernel may queue for us: a burst of clients
/// (a fleet reconnecting after a restart) must not see dropped SYNs.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with address reuse (restarts on the same port work while
/// old sockets linger in TIME_WAIT) and a deep accept queue.
pub(crate) async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other(format!("no address for {host}"))))
}

async fn accept_loop(shared: Arc<ServerShared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                tokio::spawn(client::serve(shared.clone(), stream, addr));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                error!(error = %e, "error accepting client connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A server id in the shape nats-server uses: 56 base32 characters starting with `N`.
pub(crate) fn generate_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::with_capacity(56);
    id.push('N');
    for _ in 1..56 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}
