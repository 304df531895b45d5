//! The resolved settings of one server, after defaults, file, environment and
//! flags have been merged (see [`crate::config`]).

use std::path::PathBuf;
use std::time::Duration;

/// Everything a running server needs to know, with nats-server's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// Server name; a generated id when not configured.
    pub server_name: String,
    /// Address the client listener binds to.
    pub host: String,
    /// Client port; `0` picks a free port (the `-p -1` of nats-server).
    pub port: u16,
    /// Monitoring host.
    pub http_host: String,
    /// Monitoring port; `None` disables monitoring, `Some(0)` picks a free port.
    pub http_port: Option<u16>,
    /// HTTPS monitoring port (`https_port`, `-ms`), served with the `tls`
    /// certificate; `0` picks a free one.
    pub https_port: Option<u16>,
    /// Largest payload a client may publish (headers included).
    pub max_payload: usize,
    /// Longest control line a client may send.
    pub max_control_line: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most subscriptions per connection; `0` means unlimited.
    pub max_subscriptions: usize,
    /// Most bytes queued for one connection before it is a slow consumer.
    pub max_pending: usize,
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// Unanswered pings before the connection is stale.
    pub max_pings_out: u32,
    /// Time a client has to authenticate.
    pub auth_timeout: Duration,
    /// Time one write may take before the client is a slow consumer.
    pub write_deadline: Duration,
    /// Authentication settings.
    pub auth: AuthOptions,
    /// TLS for client connections, when configured.
    pub tls: Option<TlsOptions>,
    /// The WebSocket listener, when configured (`websocket {}`).
    pub websocket: Option<WebsocketOptions>,
    /// JetStream settings.
    pub jetstream: JetStreamOptions,
    /// Cluster settings (accepted now, implemented by the cluster work).
    pub cluster: ClusterOptions,
    /// Logging settings.
    pub log: LogOptions,
    /// Where to write the process id, if anywhere.
    pub pid_file: Option<PathBuf>,
    /// How long lame duck mode takes to move all clients away.
    pub lame_duck_duration: Duration,
    /// Grace period before lame duck mode starts closing clients.
    pub lame_duck_grace_period: Duration,
}

/// Authentication as the `authorization` block and the `--user`/`--pass`/
/// `--auth` flags configure it: one user, a token, or a list of users.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthOptions {
    /// Required user name (single-user form).
    pub user: Option<String>,
    /// Its password, plain or bcrypt.
    pub password: Option<String>,
    /// Required token, plain or bcrypt.
    pub token: Option<String>,
    /// `authorization { users = [...] }`.
    pub users: Vec<UserOptions>,
    /// Permissions of users that name none.
    pub default_permissions: Option<tern_auth::Permissions>,
    /// `accounts { NAME { users = [...] } }`: each account is its own subject
    /// space; its users land in it.
    pub accounts: Vec<(String, Vec<UserOptions>)>,
    /// Accounts of `accounts {}` with `jetstream: enabled`: each gets its own
    /// JetStream (API, streams, storage) when JetStream is on.
    pub jetstream_accounts: Vec<String>,
    /// `accounts { NAME { exports = [...] } }`, by exporting account.
    pub exports: Vec<(String, ExportOptions)>,
    /// `accounts { NAME { imports = [...] } }`, by importing account.
    pub imports: Vec<(String, ImportOptions)>,
    /// Trusted operator JWTs (decentralized authentication).
    pub operators: Vec<String>,
    /// Account JWTs by account public key (`resolver: MEMORY` with
    /// `resolver_preload`).
    pub resolver_preload: Vec<(String, String)>,
}

/// One entry of `authorization.users`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserOptions {
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password, plain or bcrypt.
    pub password: Option<String>,
    /// Public user nkey (instead of user and password).
    pub nkey: Option<String>,
    /// What the user may publish and subscribe to.
    pub permissions: Option<tern_auth::Permissions>,
}

impl AuthOptions {
    /// Whether clients must present credentials.
    pub fn required(&self) -> bool {
        !self.operators.is_empty()
            || self.user.is_some()
            || self.token.is_some()
            || !self.users.is_empty()
            || self.accounts.iter().any(|(_, users)| !users.is_empty())
    }

    /// The authentication configuration these options describe.
    pub fn auth_config(&self) -> tern_auth::AuthConfig {
        use tern_auth::{AuthConfig, NkeyUser, Password, User, UsersConfig, DEFAULT_ACCOUNT};
        if !self.operators.is_empty() {
            let mut resolver = tern_auth::MemoryResolver::new();
            for (account, jwt) in &self.resolver_preload {
                resolver.insert(account.clone(), jwt.clone());
            }
            return AuthConfig::Decentralized(tern_auth::OperatorConfig {
                operators: self.operators.clone(),
                resolver,
            });
        }
        if let Some(token) = &self.token {
            return AuthConfig::Token(Password::from_config(token.clone()));
        }
        let mut users = UsersConfig::default();
        if let Some(user) = &self.user {
            users.users.push(User {
                name: user.clone(),
                password: Password::from_config(self.password.clone().unwrap_or_default()),
                permissions: self.default_permissions.clone(),
                account: DEFAULT_ACCOUNT.into(),
            });
        }
        let global = self.users.iter().map(|u| (DEFAULT_ACCOUNT, u));
        let scoped = self
            .accounts
            .iter()
            .flat_map(|(name, users)| users.iter().map(move |u| (name.as_str(), u)));
        for (account, entry) in global.chain(scoped) {
            let permissions = entry
                .permissions
                .clone()
                .or_else(|| self.default_permissions.clone());
            if let Some(nkey) = &entry.nkey {
                users.nkeys.push(NkeyUser {
                    public_key: nkey.clone(),
                    permissions,
                    account: account.into(),
                });
            } else if let Some(user) = &entry.user {
                users.users.push(User {
                    name: user.clone(),
                    password: Password::from_config(entry.password.clone().unwrap_or_default()),
                    permissions,
                    account: account.into(),
                });
            }
        }
        if users.users.is_empty() && users.nkeys.is_empty() {
            AuthConfig::None
        } else {
            AuthConfig::Users(users)
        }
    }
}

/// NATS over WebSocket (`websocket { host, port, no_tls }`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebsocketOptions {
    /// Address to listen on; the client host when empty.
    pub host: String,
    /// Port; `0` picks a free one.
    pub port: u16,
    /// TLS (`wss://`); `None` with `no_tls: true`.
    pub tls: Option<TlsOptions>,
}

/// Whether an export or import is of a stream or of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// Messages published in the exporting account are also delivered in
    /// the importing one.
    Stream,
    /// Requests published in the importing account are delivered in the
    /// exporting one, and the replies come back.
    Service,
}

/// One entry of an account's `exports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Stream or service.
    pub kind: ExportKind,
    /// The subject (wildcards allowed), in the exporting account.
    pub subject: String,
    /// Accounts allowed to import it; empty means every account.
    pub accounts: Vec<String>,
    /// Services: whether more than one reply may come back per request
    /// (`response_type: stream` or `chunked`) or just one (`singleton`).
    pub multiple_responses: bool,
}

/// One entry of an account's `imports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Stream or service.
    pub kind: ExportKind,
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account (within an export).
    pub subject: String,
    /// The subject in the importing account, if it differs (`to`: the same
    /// wildcards in the same places).
    pub to: Option<String>,
    /// Streams: put `PREFIX.` in front of the subject in the importing
    /// account.
    pub prefix: Option<String>,
}

/// TLS for client connections (`tls {}` or the `--tls*` flags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CAs that sign client certificates (PEM), for `verify`.
    pub ca_file: Option<PathBuf>,
    /// Require and verify client certificates.
    pub verify: bool,
    /// Verify client certificates and choose the user from them (by SAN
    /// e-mail, DNS name, URI or subject DN) instead of from `CONNECT`.
    pub verify_and_map: bool,
    /// Time the TLS handshake may take.
    pub timeout: std::time::Duration,
}

/// JetStream settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JetStreamOptions {
    /// Whether JetStream is on.
    pub enabled: bool,
    /// Directory for stream data.
    pub store_dir: Option<PathBuf>,
    /// `None` (the default, `sync_interval: always`): every write is fsynced
    /// before it is acknowledged. `Some(d)`: writes are fsynced every `d`,
    /// and acknowledged writes of the last interval can be lost on power loss.
    pub sync_interval: Option<std::time::Duration>,
}

/// Cluster settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterOptions {
    /// Cluster name.
    pub name: Option<String>,
    /// Cluster listen address (`host:port`).
    pub listen: Option<String>,
    /// Seed routes.
    pub routes: Vec<String>,
    /// Credentials routes present to each other (`cluster.authorization`).
    pub authorization: Option<tern_cluster::RouteAuth>,
    /// The cluster address announced to peers (`cluster.advertise`).
    pub advertise: Option<String>,
    /// Mutual TLS between nodes (`cluster.tls`): `ca_file` signs every
    /// node's certificate.
    pub tls: Option<TlsOptions>,
}

impl ClusterOptions {
    /// Whether any cluster setting was given.
    pub fn configured(&self) -> bool {
        self.name.is_some() || self.listen.is_some() || !self.routes.is_empty()
    }
}

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Debug output (`-D`).
    pub debug: bool,
    /// Protocol tracing (`-V`).
    pub trace: bool,
    /// Log to this file instead of standard error.
    pub file: Option<PathBuf>,
    /// JSON lines instead of nats-server's text format.
    pub json: bool,
    /// Whether to print timestamps.
    pub time: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            server_name: String::new(),
            host: "0.0.0.0".into(),
            port: 4222,
            http_host: "0.0.0.0".into(),
            http_port: None,
            https_port: None,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_pending: 64 * 1024 * 1024,
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            auth_timeout: Duration::from_secs(2),
            write_deadline: Duration::from_secs(10),
            auth: AuthOptions::default(),
            tls: None,
            websocket: None,
            jetstream: JetStreamOptions::default(),
            cluster: ClusterOptions::default(),
            log: LogOptions {
                time: true,
                ..LogOptions::default()
            },
            pid_file: None,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
        }
    }
}
