//! Configuration: defaults < file (`-c`) < `TERN_*` environment < flags.
//!
//! Keys are nats-server's names and units, so an existing `nats-server.conf`
//! works unchanged. The file is nats-server's format ([`natsconf`]) or TOML
//! (by `.toml` extension). Environment variables are `TERN_<KEY>`, with `__`
//! between nested keys (`TERN_JETSTREAM__STORE_DIR`). Keys Tern does not
//! implement yet produce a warning naming them; keys nobody knows, and values
//! of the wrong shape, are errors that name the key.

pub mod cli;
pub mod natsconf;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use thiserror::Error;

pub use cli::{normalize_args, Cli};

use crate::options::{ServerOptions, UserOptions};

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or environment could not be read or parsed.
    #[error("{0}")]
    Source(#[from] config::ConfigError),
    /// A key nobody knows.
    #[error("unknown configuration key \"{0}\"")]
    UnknownKey(String),
    /// A value of the wrong type or out of range.
    #[error("invalid value for \"{key}\": {reason}")]
    InvalidValue {
        /// The full key, dotted for nested blocks.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A feature that is asked for and would be unsafe to silently ignore.
    #[error("\"{key}\" is not implemented yet: {why}")]
    NotImplemented {
        /// The key or flag.
        key: String,
        /// What to do instead.
        why: &'static str,
    },
}

/// The merged configuration and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The resolved options.
    pub options: ServerOptions,
    /// Keys accepted but not implemented yet; to be logged at start-up.
    pub warnings: Vec<String>,
}

/// Keys nats-server knows that Tern accepts but does not act on yet.
const NOT_YET_IMPLEMENTED: &[&str] = &[
    "system_account",
    "no_system_account",
    "no_auth_user",
    "leafnodes",
    "leaf",
    "gateway",
    "mqtt",
    "syslog",
    "remote_syslog",
    "logfile_size_limit",
    "max_traced_msg_len",
    "connect_error_reports",
    "reconnect_error_reports",
    "disable_sublist_cache",
    "http_base_path",
    "https",
    "no_header_support",
    "server_tags",
    "max_closed_clients",
    "ocsp",
    "ocsp_cache",
    "default_js_domain",
    "client_advertise",
    "tls_timeout",
    "jetstream_max_memory",
    "jetstream_max_store",
];

/// Loads the configuration for `cli`: file, then environment, then flags.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    let vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TERN_") && !is_reserved_env(k))
        .collect();
    load_with_env(cli, Environment::with_prefix("TERN").source(Some(vars)))
}

/// `TERN_*` variables that are not configuration keys: the log filter and
/// the test harness's own switches.
fn is_reserved_env(name: &str) -> bool {
    name == "TERN_LOG" || name == "TERN_SERVER_BIN" || name.starts_with("TERN_TEST_")
}

fn load_with_env(cli: &Cli, env: Environment) -> Result<Loaded, ConfigError> {
    let mut builder = Config::builder();
    let mut variables = std::collections::BTreeSet::new();
    if let Some(path) = &cli.config {
        check_readable(path)?;
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            // Parsed once more only to learn which entries are variables.
            variables = natsconf::parse_file_with_variables(path)
                .map(|(_, used)| used)
                .map_err(|e| ConfigError::InvalidValue {
                    key: "config".into(),
                    reason: e.to_string(),
                })?;
        }
        let name = path.to_string_lossy();
        builder = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => builder.add_source(File::new(&name, FileFormat::Toml)),
            _ => builder.add_source(File::new(&name, natsconf::NatsConfFormat)),
        };
    }
    builder = builder.add_source(
        env.prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("cluster.routes"),
    );
    builder = apply_flags(builder, cli)?;
    let map: Map<String, Value> = builder.build()?.try_deserialize()?;
    let mut warnings = Vec::new();
    let options = build_options(&map, &variables, &mut warnings)?;
    Ok(Loaded { options, warnings })
}

/// Checked up front so the error names the file rather than a format.
fn check_readable(path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConfigError::InvalidValue {
            key: "config".into(),
            reason: format!("can not read {}: {e}", path.display()),
        })
}

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

fn apply_flags(mut b: Builder, cli: &Cli) -> Result<Builder, ConfigError> {
    fn set<T: Into<Value>>(b: Builder, key: &str, v: T) -> Result<Builder, ConfigError> {
        Ok(b.set_override(key, v)?)
    }
    if let Some(v) = &cli.addr {
        b = set(b, "host", v.as_str())?;
    }
    if let Some(v) = cli.port {
        b = set(b, "port", i64::from(v))?;
    }
    if let Some(v) = &cli.name {
        b = set(b, "server_name", v.as_str())?;
    }
    if let Some(v) = cli.http_port {
        b = set(b, "http_port", i64::from(v))?;
    }
    if let Some(v) = cli.https_port {
        b = set(b, "https_port", i64::from(v))?;
    }
    if let Some(v) = &cli.log {
        b = set(b, "log_file", v.to_string_lossy().as_ref())?;
    }
    if let Some(v) = &cli.pid {
        b = set(b, "pid_file", v.to_string_lossy().as_ref())?;
    }
    if cli.debug {
        b = set(b, "debug", true)?;
    }
    if cli.trace {
        b = set(b, "trace", true)?;
    }
    if let Some(v) = cli.logtime {
        b = set(b, "logtime", v)?;
    }
    if cli.log_json {
        b = set(b, "log_json", true)?;
    }
    if let Some(v) = &cli.user {
        b = set(b, "authorization.user", v.as_str())?;
    }
    if let Some(v) = &cli.pass {
        b = set(b, "authorization.password", v.as_str())?;
    }
    if let Some(v) = &cli.auth {
        b = set(b, "authorization.token", v.as_str())?;
    }
    if cli.jetstream {
        b = set(b, "jetstream.enabled", true)?;
    }
    if let Some(v) = &cli.store_dir {
        b = set(b, "jetstream.store_dir", v.to_string_lossy().as_ref())?;
    }
    if let Some(v) = &cli.cluster {
        b = set(b, "cluster.listen", v.as_str())?;
    }
    if let Some(v) = &cli.cluster_name {
        b = set(b, "cluster.name", v.as_str())?;
    }
    if let Some(v) = &cli.routes {
        let routes: Vec<String> = v
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        b = set(b, "cluster.routes", routes)?;
    }
    if let Some(v) = &cli.tlscert {
        b = set(b, "tls.cert_file", v.to_string_lossy().as_ref())?;
    }
    if let Some(v) = &cli.tlskey {
        b = set(b, "tls.key_file", v.to_string_lossy().as_ref())?;
    }
    if let Some(v) = &cli.tlscacert {
        b = set(b, "tls.ca_file", v.to_string_lossy().as_ref())?;
    }
    if cli.tlsverify {
        b = set(b, "tls.verify", true)?;
    }
    if cli.tls && cli.tlscert.is_none() {
        return Err(invalid(
            "--tls",
            "--tls needs --tlscert and --tlskey (or a tls block in the file)",
        ));
    }
    Ok(b)
}

/// Walks the merged map into [`ServerOptions`].
fn build_options(
    map: &Map<String, Value>,
    variables: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<ServerOptions, ConfigError> {
    let mut o = ServerOptions::default();
    let mut http_host_set = false;
    // `listen` and `http` (host:port) go first so the specific keys (`host`,
    // `port`, `http_port`, which flags set) override them, whatever the order
    // of the merged map.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by_key(|(k, _)| !matches!(k.as_str(), "listen" | "http"));
    for (key, value) in entries {
        let k = key.as_str();
        match k {
            "host" | "net" | "addr" => o.host = string(k, value)?,
            "listen" => {
                let listen = string(k, value)?;
                let (host, port) = split_host_port(k, &listen)?;
                if !host.is_empty() {
                    o.host = host;
                }
                o.port = port_value(k, i64::from(port))?;
            }
            "port" => o.port = port_value(k, int(k, value)?)?,
            "server_name" | "name" => o.server_name = string(k, value)?,
            "http_port" | "monitor_port" => o.http_port = Some(port_value(k, int(k, value)?)?),
            "https_port" => o.https_port = Some(port_value(k, int(k, value)?)?),
            "http" => {
                let listen = match &value.kind {
                    ValueKind::I64(p) => format!(":{p}"),
                    _ => string(k, value)?,
                };
                let (host, port) = split_host_port(k, &listen)?;
                if !host.is_empty() {
                    o.http_host = host;
                    http_host_set = true;
                }
                o.http_port = Some(port);
            }
            "http_host" => {
                o.http_host = string(k, value)?;
                http_host_set = true;
            }
            "max_payload" => o.max_payload = size(k, value, 1, 64 * 1024 * 1024)?,
            "max_control_line" => o.max_control_line = size(k, value, 32, 1024 * 1024)?,
            "max_connections" | "max_conn" => o.max_connections = size(k, value, 0, i64::MAX)?,
            "max_subscriptions" | "max_subs" => o.max_subscriptions = size(k, value, 0, i64::MAX)?,
            "max_pending" => o.max_pending = size(k, value, 1024, i64::MAX)?,
            "ping_interval" => o.ping_interval = duration(k, value)?,
            "ping_max" => o.max_pings_out = size(k, value, 1, 1000)? as u32,
            "write_deadline" => o.write_deadline = duration(k, value)?,
            "lame_duck_duration" => o.lame_duck_duration = duration(k, value)?,
            "lame_duck_grace_period" => o.lame_duck_grace_period = duration(k, value)?,
            "debug" => o.log.debug = boolean(k, value)?,
            "trace" | "trace_verbose" => o.log.trace = boolean(k, value)?,
            "logtime" => o.log.time = boolean(k, value)?,
            "log_json" => o.log.json = boolean(k, value)?,
            "log_file" | "logfile" => o.log.file = Some(PathBuf::from(string(k, value)?)),
            "pid_file" | "pidfile" => o.pid_file = Some(PathBuf::from(string(k, value)?)),
            "authorization" => authorization(value, &mut o, variables, warnings)?,
            "jetstream" => jetstream(value, &mut o, variables, warnings)?,
            "store_dir" => o.jetstream.store_dir = Some(PathBuf::from(string(k, value)?)),
            "cluster" => cluster(value, &mut o, variables, warnings)?,
            "accounts" => accounts(value, &mut o, variables, warnings)?,
            "operator" | "operators" => {
                let entries = match &value.kind {
                    ValueKind::Array(items) => items
                        .iter()
                        .map(|i| string(k, i))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => vec![string(k, value)?],
                };
                for entry in entries {
                    o.auth.operators.push(read_jwt(k, &entry)?);
                }
            }
            "resolver" => {
                let kind = match &value.kind {
                    ValueKind::Table(t) => t
                        .get("type")
                        .map(|v| string(k, v))
                        .transpose()?
                        .unwrap_or_default(),
                    _ => string(k, value)?,
                };
                if !kind.eq_ignore_ascii_case("memory") {
                    return Err(ConfigError::NotImplemented {
                        key: "resolver".into(),
                        why: "only the MEMORY resolver (with resolver_preload) is implemented",
                    });
                }
            }
            "resolver_preload" => {
                for (account, jwt) in table(k, value)? {
                    o.auth.resolver_preload.push((
                        account.clone(),
                        string(&format!("resolver_preload.{account}"), jwt)?,
                    ));
                }
            }
            "tls" => o.tls = Some(tls(value)?),
            "websocket" | "ws" => o.websocket = websocket(value)?,
            // An entry that only serves as a `$variable` is no setting.
            _ if variables.contains(k) => {}
            "trusted" | "trusted_keys" => {
                return Err(ConfigError::NotImplemented {
                    key: k.to_owned(),
                    why: "trust without an operator JWT is not implemented; set `operator` \
                          instead (ignoring it would let unauthenticated clients in)",
                })
            }
            _ if NOT_YET_IMPLEMENTED.contains(&k) => {
                warnings.push(format!(
                    "configuration key \"{k}\" is not implemented yet and is ignored"
                ));
            }
            _ => return Err(ConfigError::UnknownKey(k.to_owned())),
        }
    }
    let auth = &o.auth;
    let users_configured =
        !auth.users.is_empty() || auth.accounts.iter().any(|(_, u)| !u.is_empty());
    if !auth.operators.is_empty()
        && (auth.token.is_some() || auth.user.is_some() || users_configured)
    {
        return Err(invalid(
            "operator",
            "operator (JWT) mode can not be combined with users or a token",
        ));
    }
    if auth.token.is_some() && users_configured {
        return Err(invalid(
            "authorization",
            "a token and users can not both be set",
        ));
    }
    if auth.user.is_some() && users_configured {
        return Err(invalid(
            "authorization",
            "a single user and a users list can not both be set",
        ));
    }
    if o.max_payload > o.max_pending {
        return Err(invalid(
            "max_payload",
            &format!(
                "max_payload ({}) cannot be higher than max_pending ({})",
                o.max_payload, o.max_pending
            ),
        ));
    }
    // Monitoring listens where clients do unless told otherwise, as in nats-server.
    if !http_host_set {
        o.http_host = o.host.clone();
    }
    Ok(o)
}

fn table<'a>(key: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    match &value.kind {
        ValueKind::Table(t) => Ok(t),
        _ => Err(invalid(key, "expected a block")),
    }
}

fn authorization(
    value: &Value,
    o: &mut ServerOptions,
    variables: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (k, v) in table("authorization", value)? {
        let key = format!("authorization.{k}");
        match k.as_str() {
            "user" | "username" => o.auth.user = Some(string(&key, v)?),
            "password" | "pass" => o.auth.password = Some(string(&key, v)?),
            "token" => o.auth.token = Some(string(&key, v)?),
            "timeout" => o.auth_timeout = duration_secs_f64(&key, v)?,
            "users" => o.auth.users = users(&key, v)?,
            "default_permissions" | "permissions" => {
                o.auth.default_permissions = Some(permissions(&key, v)?)
            }
            "auth_callout" => {
                warnings.push(format!(
                    "configuration key \"{key}\" is not implemented yet and is ignored"
                ));
            }
            _ if variables.contains(k.as_str()) => {}
            _ => return Err(ConfigError::UnknownKey(key)),
        }
    }
    if o.auth.user.is_some() && o.auth.token.is_some() {
        return Err(invalid(
            "authorization",
            "a token and a user can not both be set",
        ));
    }
    Ok(())
}

/// `authorization.users`: a list of `{ user, password, permissions }` or
/// `{ nkey, permissions }` blocks.
fn users(key: &str, value: &Value) -> Result<Vec<UserOptions>, ConfigError> {
    let ValueKind::Array(items) = &value.kind else {
        return Err(invalid(key, "expected a list of users"));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let mut user = UserOptions::default();
        for (k, v) in table(&key, item)? {
            let field = format!("{key}.{k}");
            match k.as_str() {
                "user" | "username" => user.user = Some(string(&field, v)?),
                "password" | "pass" => user.password = Some(string(&field, v)?),
                "nkey" => user.nkey = Some(string(&field, v)?),
                "permissions" => user.permissions = Some(permissions(&field, v)?),
                "allowed_connection_types" => {
                    return Err(ConfigError::NotImplemented {
                        key: field,
                        why: "accounts and connection types come with the security work",
                    })
                }
                _ => return Err(ConfigError::UnknownKey(field)),
            }
        }
        if user.user.is_none() && user.nkey.is_none() {
            return Err(invalid(
                &key,
                "a user needs `user` (with `password`) or `nkey`",
            ));
        }
        if let Some(nkey) = &user.nkey {
            if !nkey.starts_with('U') {
                return Err(invalid(
                    &key,
                    "an nkey user needs a public user nkey (starting with U)",
                ));
            }
        }
        out.push(user);
    }
    Ok(out)
}

/// `permissions { publish, subscribe, allow_responses }`, where publish and
/// subscribe are a subject, a list, or `{ allow, deny }`.
fn permissions(key: &str, value: &Value) -> Result<tern_auth::Permissions, ConfigError> {
    let mut out = tern_auth::Permissions::default();
    for (k, v) in table(key, value)? {
        let field = format!("{key}.{k}");
        match k.as_str() {
            "publish" | "pub" => out.publish = subject_permission(&field, v)?,
            "subscribe" | "sub" => out.subscribe = subject_permission(&field, v)?,
            "allow_responses" => out.allow_responses = allow_responses(&field, v)?,
            _ => return Err(ConfigError::UnknownKey(field)),
        }
    }
    Ok(out)
}

/// `allow_responses: true` (one reply within two minutes, nats-server's
/// default) or `{ max: N, expires: "1m" }`; `false` turns it off.
fn allow_responses(
    key: &str,
    value: &Value,
) -> Result<Option<tern_auth::ResponsePermission>, ConfigError> {
    match &value.kind {
        ValueKind::Boolean(false) => Ok(None),
        ValueKind::Boolean(true) => Ok(Some(tern_auth::ResponsePermission::from_nats(0, 0))),
        ValueKind::Table(t) => {
            let mut max = 0i64;
            let mut expires_ns = 0i64;
            for (k, v) in t {
                let field = format!("{key}.{k}");
                match k.as_str() {
                    "max" => max = int(&field, v)?,
                    "expires" | "ttl" => {
                        expires_ns =
                            i64::try_from(duration(&field, v)?.as_nanos()).unwrap_or(i64::MAX)
                    }
                    _ => return Err(ConfigError::UnknownKey(field)),
                }
            }
            Ok(Some(tern_auth::ResponsePermission::from_nats(
                max, expires_ns,
            )))
        }
        _ => Err(invalid(key, "expected true, false or { max, expires }")),
    }
}

fn subject_permission(
    key: &str,
    value: &Value,
) -> Result<tern_auth::SubjectPermission, ConfigError> {
    let list = |key: &str, v: &Value| -> Result<Vec<String>, ConfigError> {
        match &v.kind {
            ValueKind::Array(items) => items.iter().map(|i| string(key, i)).collect(),
            _ => Ok(vec![string(key, v)?]),
        }
    };
    match &value.kind {
        ValueKind::Table(t) => {
            let mut out = tern_auth::SubjectPermission::default();
            for (k, v) in t {
                let field = format!("{key}.{k}");
                match k.as_str() {
                    "allow" => out.allow = list(&field, v)?,
                    "deny" => out.deny = list(&field, v)?,
                    _ => return Err(ConfigError::UnknownKey(field)),
                }
            }
            Ok(out)
        }
        _ => Ok(tern_auth::SubjectPermission {
            allow: list(key, value)?,
            deny: Vec::new(),
        }),
    }
}

/// `websocket { host, port, listen, tls { ... }, no_tls }`.
fn websocket(value: &Value) -> Result<Option<crate::options::WebsocketOptions>, ConfigError> {
    let mut out = crate::options::WebsocketOptions::default();
    let mut no_tls = false;
    for (k, v) in table("websocket", value)? {
        let key = format!("websocket.{k}");
        match k.as_str() {
            "host" | "net" => out.host = string(&key, v)?,
            "port" => out.port = port_value(&key, int(&key, v)?)?,
            "listen" => {
                let (host, port) = split_host_port(&key, &string(&key, v)?)?;
                out.host = host;
                out.port = port;
            }
            "no_tls" => no_tls = boolean(&key, v)?,
            "tls" => out.tls = Some(tls(v)?),
            "compression" | "same_origin" | "allowed_origins" | "handshake_timeout"
            | "authorization" | "no_auth_user" | "jwt_cookie" => {
                return Err(ConfigError::NotImplemented {
                    key,
                    why:
                        "this WebSocket option is not implemented yet; refusing to start without it",
                })
            }
            _ => return Err(ConfigError::UnknownKey(key)),
        }
    }
    if no_tls {
        out.tls = None;
    } else if out.tls.is_none() {
        // As nats-server: plain ws:// only when asked for.
        return Err(invalid(
            "websocket",
            "needs a tls { cert_file, key_file } block, or no_tls: true for plain ws://",
        ));
    }
    Ok(Some(out))
}

/// `tls { cert_file, key_file, ca_file, verify, timeout }`.
fn tls(value: &Value) -> Result<crate::options::TlsOptions, ConfigError> {
    let mut out = crate::options::TlsOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    for (k, v) in table("tls", value)? {
        let key = format!("tls.{k}");
        match k.as_str() {
            "cert_file" => out.cert_file = PathBuf::from(string(&key, v)?),
            "key_file" => out.key_file = PathBuf::from(string(&key, v)?),
            "ca_file" => out.ca_file = Some(PathBuf::from(string(&key, v)?)),
            "verify" => out.verify = boolean(&key, v)?,
            "verify_and_map" => out.verify_and_map = boolean(&key, v)?,
            "timeout" => out.timeout = duration(&key, v)?,
            "handshake_first" | "pinned_certs" | "cipher_suites" | "curve_preferences"
            | "insecure" | "verify_cert_and_check_known_urls" | "ocsp_peer" | "cert_store" | "cert_match" => {
                return Err(ConfigError::NotImplemented {
                    key,
                    why: "this TLS option comes with the rest of the security work; refusing to start without it",
                })
            }
            _ => return Err(ConfigError::UnknownKey(key)),
        }
    }
    if out.cert_file.as_os_str().is_empty() || out.key_file.as_os_str().is_empty() {
        return Err(invalid("tls", "cert_file and key_file are required"));
    }
    if out.verify_and_map {
        out.verify = true;
    }
    if out.verify && out.ca_file.is_none() {
        return Err(invalid(
            "tls.verify",
            "verifying client certificates needs tls.ca_file",
        ));
    }
    Ok(out)
}

/// An operator JWT given inline, or the path of a file holding one.
fn read_jwt(key: &str, entry: &str) -> Result<String, ConfigError> {
    let trimmed = entry.trim();
    if trimmed.starts_with("eyJ") {
        return Ok(trimmed.to_owned());
    }
    let text = std::fs::read_to_string(trimmed).map_err(|e| {
        invalid(
            key,
            &format!("can not read operator JWT file {trimmed}: {e}"),
        )
    })?;
    // nsc writes the JWT alone or between BEGIN/END markers.
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("eyJ"))
        .map(str::to_owned)
        .ok_or_else(|| invalid(key, &format!("no JWT in {trimmed}")))
}

/// `accounts { NAME { users = [...], exports, imports, jetstream } }`.
fn accounts(
    value: &Value,
    o: &mut ServerOptions,
    variables: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (name, block) in table("accounts", value)? {
        if variables.contains(name.as_str()) {
            continue;
        }
        let key = format!("accounts.{name}");
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(invalid(&key, "invalid account name"));
        }
        let mut users = Vec::new();
        for (k, v) in table(&key, block)? {
            let field = format!("{key}.{k}");
            match k.as_str() {
                "users" => users = self::users(&field, v)?,
                "jetstream" => {
                    let enabled = match &v.kind {
                        ValueKind::Boolean(b) => *b,
                        ValueKind::String(text) => match text.to_ascii_lowercase().as_str() {
                            "enabled" | "enable" | "true" | "on" | "yes" => true,
                            "disabled" | "disable" | "false" | "off" | "no" => false,
                            _ => return Err(invalid(&field, "expected enabled or disabled")),
                        },
                        // A block of per-account limits: enabled (the limits
                        // themselves are not enforced yet).
                        ValueKind::Table(_) => {
                            warnings.push(format!(
                                "per-account JetStream limits in \"{field}\" are not enforced yet"
                            ));
                            true
                        }
                        _ => return Err(invalid(&field, "expected enabled, disabled or a block")),
                    };
                    if enabled {
                        o.auth.jetstream_accounts.push(name.clone());
                    }
                }
                "exports" => {
                    for export in exports(&field, v)? {
                        o.auth.exports.push((name.clone(), export));
                    }
                }
                "imports" => {
                    for import in imports(&field, v)? {
                        o.auth.imports.push((name.clone(), import));
                    }
                }
                "mappings" | "limits" | "default_permissions" => {
                    warnings.push(format!(
                        "configuration key \"{field}\" is not implemented yet and is ignored"
                    ));
                }
                _ if variables.contains(k.as_str()) => {}
                _ => return Err(ConfigError::UnknownKey(field)),
            }
        }
        o.auth.accounts.push((name.clone(), users));
    }
    Ok(())
}

/// The entries of a list (or a single block) as tables.
fn entries<'a>(key: &str, value: &'a Value) -> Result<Vec<&'a Map<String, Value>>, ConfigError> {
    match &value.kind {
        ValueKind::Array(items) => items.iter().map(|i| table(key, i)).collect(),
        ValueKind::Table(t) => Ok(vec![t]),
        _ => Err(invalid(key, "expected a list of blocks")),
    }
}

fn subject_value(key: &str, value: &Value) -> Result<String, ConfigError> {
    let subject = string(key, value)?;
    if !tern_protocol::subject::is_valid_subscription_subject(subject.as_bytes()) {
        return Err(invalid(key, &format!("invalid subject {subject:?}")));
    }
    Ok(subject)
}

/// `exports = [ { stream: SUBJECT }, { service: SUBJECT, accounts: [..],
/// response_type: singleton|stream|chunked } ]`.
fn exports(key: &str, value: &Value) -> Result<Vec<crate::options::ExportOptions>, ConfigError> {
    use crate::options::{ExportKind, ExportOptions};
    let mut out = Vec::new();
    for entry in entries(key, value)? {
        let mut export = ExportOptions {
            kind: ExportKind::Stream,
            subject: String::new(),
            accounts: Vec::new(),
            multiple_responses: false,
        };
        for (k, v) in entry {
            let field = format!("{key}.{k}");
            match k.as_str() {
                "stream" => {
                    export.kind = ExportKind::Stream;
                    export.subject = subject_value(&field, v)?;
                }
                "service" => {
                    export.kind = ExportKind::Service;
                    export.subject = subject_value(&field, v)?;
                }
                "accounts" => {
                    export.accounts = match &v.kind {
                        ValueKind::Array(items) => items
                            .iter()
                            .map(|i| string(&field, i))
                            .collect::<Result<_, _>>()?,
                        _ => vec![string(&field, v)?],
                    }
                }
                "response_type" | "response" => {
                    export.multiple_responses =
                        match string(&field, v)?.to_ascii_lowercase().as_str() {
                            "singleton" | "single" => false,
                            "stream" | "chunked" => true,
                            _ => {
                                return Err(invalid(
                                    &field,
                                    "expected singleton, stream or chunked",
                                ))
                            }
                        }
                }
                "response_threshold" | "latency" | "account_token_position" | "advertise" => {
                    return Err(ConfigError::NotImplemented {
                        key: field,
                        why: "this export option is not implemented yet; refusing to start without it",
                    })
                }
                _ => return Err(ConfigError::UnknownKey(field)),
            }
        }
        if export.subject.is_empty() {
            return Err(invalid(key, "an export needs stream or service"));
        }
        out.push(export);
    }
    Ok(out)
}

/// `imports = [ { stream: { account: A, subject: S }, prefix: P },
/// { service: { account: A, subject: S }, to: T } ]`.
fn imports(key: &str, value: &Value) -> Result<Vec<crate::options::ImportOptions>, ConfigError> {
    use crate::options::{ExportKind, ImportOptions};
    let mut out = Vec::new();
    for entry in entries(key, value)? {
        let mut import = ImportOptions {
            kind: ExportKind::Stream,
            account: String::new(),
            subject: String::new(),
            to: None,
            prefix: None,
        };
        let mut prefix = None;
        for (k, v) in entry {
            let field = format!("{key}.{k}");
            match k.as_str() {
                "stream" | "service" => {
                    import.kind = if k == "stream" {
                        ExportKind::Stream
                    } else {
                        ExportKind::Service
                    };
                    for (ik, iv) in table(&field, v)? {
                        let ifield = format!("{field}.{ik}");
                        match ik.as_str() {
                            "account" => import.account = string(&ifield, iv)?,
                            "subject" => import.subject = subject_value(&ifield, iv)?,
                            _ => return Err(ConfigError::UnknownKey(ifield)),
                        }
                    }
                }
                "to" | "local_subject" => import.to = Some(subject_value(&field, v)?),
                "prefix" => prefix = Some(string(&field, v)?),
                "share" | "allow_trace" => {}
                _ => return Err(ConfigError::UnknownKey(field)),
            }
        }
        if import.account.is_empty() || import.subject.is_empty() {
            return Err(invalid(key, "an import needs { account, subject }"));
        }
        if let Some(prefix) = prefix {
            if import.kind == ExportKind::Service {
                return Err(invalid(key, "a service import takes to, not prefix"));
            }
            let prefix = prefix.trim_end_matches('.');
            if !tern_protocol::subject::is_valid_publish_subject(prefix.as_bytes()) {
                return Err(invalid(key, &format!("invalid prefix {prefix:?}")));
            }
            import.prefix = Some(prefix.to_owned());
        }
        if let Some(to) = &import.to {
            if !crate::imports::same_shape(&import.subject, to) {
                return Err(invalid(
                    key,
                    &format!(
                        "{to:?} must have the wildcards of {:?} in the same places",
                        import.subject
                    ),
                ));
            }
        }
        out.push(import);
    }
    Ok(out)
}

fn jetstream(
    value: &Value,
    o: &mut ServerOptions,
    variables: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match &value.kind {
        ValueKind::Boolean(b) => o.jetstream.enabled = *b,
        ValueKind::String(s) => match s.to_ascii_lowercase().as_str() {
            "enabled" | "enable" | "true" | "on" | "yes" => o.jetstream.enabled = true,
            "disabled" | "disable" | "false" | "off" | "no" => o.jetstream.enabled = false,
            _ => {
                return Err(invalid(
                    "jetstream",
                    "expected a boolean, enabled/disabled, or a block",
                ))
            }
        },
        ValueKind::Table(t) => {
            o.jetstream.enabled = true;
            for (k, v) in t {
                let key = format!("jetstream.{k}");
                match k.as_str() {
                    "enabled" | "enable" => o.jetstream.enabled = boolean(&key, v)?,
                    "store_dir" | "store" | "storedir" => {
                        o.jetstream.store_dir = Some(PathBuf::from(string(&key, v)?))
                    }
                    "sync_interval" => {
                        o.jetstream.sync_interval = match &v.kind {
                            ValueKind::String(text) if text.eq_ignore_ascii_case("always") => None,
                            _ => Some(duration(&key, v)?).filter(|d| !d.is_zero()),
                        };
                    }
                    "max_mem"
                    | "max_memory_store"
                    | "max_file"
                    | "max_file_store"
                    | "domain"
                    | "max_outstanding_catchup"
                    | "unique_tag"
                    | "cipher"
                    | "key"
                    | "limits"
                    | "compress_ok"
                    | "max_buffered_msgs"
                    | "max_buffered_size"
                    | "request_queue_limit" => {
                        warnings.push(format!(
                            "configuration key \"{key}\" is not implemented yet and is ignored"
                        ));
                    }
                    _ if variables.contains(k.as_str()) => {}
                    _ => return Err(ConfigError::UnknownKey(key)),
                }
            }
        }
        _ => {
            return Err(invalid(
                "jetstream",
                "expected a boolean, enabled/disabled, or a block",
            ))
        }
    }
    Ok(())
}

fn cluster(
    value: &Value,
    o: &mut ServerOptions,
    variables: &std::collections::BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (k, v) in table("cluster", value)? {
        let key = format!("cluster.{k}");
        match k.as_str() {
            "name" => o.cluster.name = Some(string(&key, v)?),
            "listen" => o.cluster.listen = Some(string(&key, v)?),
            "host" | "port" => {
                let text = match &v.kind {
                    ValueKind::I64(n) => n.to_string(),
                    _ => string(&key, v)?,
                };
                let listen = o.cluster.listen.take().unwrap_or_default();
                let (host, port) = listen.split_once(':').unwrap_or((&listen, ""));
                o.cluster.listen = Some(if k == "host" {
                    format!("{text}:{port}")
                } else {
                    format!("{host}:{text}")
                });
            }
            "routes" => {
                o.cluster.routes = match &v.kind {
                    ValueKind::Array(items) => items
                        .iter()
                        .map(|i| string(&key, i))
                        .collect::<Result<_, _>>()?,
                    _ => string(&key, v)?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                };
            }
            "advertise" | "cluster_advertise" => o.cluster.advertise = Some(string(&key, v)?),
            "authorization" => {
                let mut user = None;
                let mut password = None;
                for (ak, av) in table(&key, v)? {
                    let akey = format!("{key}.{ak}");
                    match ak.as_str() {
                        "user" | "username" => user = Some(string(&akey, av)?),
                        "password" | "pass" => password = Some(string(&akey, av)?),
                        "timeout" => {}
                        _ => return Err(ConfigError::UnknownKey(akey)),
                    }
                }
                let user = user.ok_or_else(|| invalid(&key, "needs a user"))?;
                o.cluster.authorization = Some(tern_cluster::RouteAuth {
                    user,
                    password: password.unwrap_or_default(),
                });
            }
            "tls" => {
                let tls = tls(v)?;
                if tls.ca_file.is_none() {
                    return Err(invalid(
                        "cluster.tls",
                        "routes verify each other: ca_file is required",
                    ));
                }
                o.cluster.tls = Some(tls);
            }
            "no_advertise" | "connect_retries" | "pool_size" | "compression" | "accounts" => {
                warnings.push(format!(
                    "configuration key \"{key}\" is not implemented yet and is ignored"
                ));
            }
            _ if variables.contains(k.as_str()) => {}
            _ => return Err(ConfigError::UnknownKey(key)),
        }
    }
    Ok(())
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

fn string(key: &str, value: &Value) -> Result<String, ConfigError> {
    match &value.kind {
        ValueKind::String(s) => Ok(s.clone()),
        ValueKind::I64(n) => Ok(n.to_string()),
        ValueKind::U64(n) => Ok(n.to_string()),
        ValueKind::Float(f) => Ok(f.to_string()),
        ValueKind::Boolean(b) => Ok(b.to_string()),
        _ => Err(invalid(key, "expected a string")),
    }
}

fn int(key: &str, value: &Value) -> Result<i64, ConfigError> {
    match &value.kind {
        ValueKind::I64(n) => Ok(*n),
        ValueKind::U64(n) => i64::try_from(*n).map_err(|_| invalid(key, "number too large")),
        ValueKind::String(s) => s
            .trim()
            .parse()
            .map_err(|_| invalid(key, &format!("expected an integer, got {s:?}"))),
        _ => Err(invalid(key, "expected an integer")),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, ConfigError> {
    match &value.kind {
        ValueKind::Boolean(b) => Ok(*b),
        ValueKind::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(invalid(key, &format!("expected a boolean, got {s:?}"))),
        },
        ValueKind::I64(n) => Ok(*n != 0),
        _ => Err(invalid(key, "expected a boolean")),
    }
}

/// A size: an integer, or a string with a unit (`1MB`, `64KiB`).
fn size(key: &str, value: &Value, min: i64, max: i64) -> Result<usize, ConfigError> {
    let n = match &value.kind {
        ValueKind::String(s) => {
            natsconf::parse_size(s).map_err(|e| invalid(key, &e.to_string()))?
        }
        _ => int(key, value)?,
    };
    if n < min || n > max {
        return Err(invalid(key, &format!("{n} is out of range {min}..={max}")));
    }
    usize::try_from(n).map_err(|_| invalid(key, "out of range"))
}

/// A duration: a Go duration string (`2m`, `500ms`) or an integer of seconds,
/// as nats-server reads them.
fn duration(key: &str, value: &Value) -> Result<Duration, ConfigError> {
    match &value.kind {
        ValueKind::String(s) => {
            natsconf::parse_duration(s).map_err(|e| invalid(key, &e.to_string()))
        }
        ValueKind::I64(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        ValueKind::U64(n) => Ok(Duration::from_secs(*n)),
        ValueKind::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
        _ => Err(invalid(
            key,
            "expected a duration such as \"2m\" or a number of seconds",
        )),
    }
}

/// Seconds as a number (possibly fractional), or a duration string.
fn duration_secs_f64(key: &str, value: &Value) -> Result<Duration, ConfigError> {
    duration(key, value)
}

fn port_value(key: &str, n: i64) -> Result<u16, ConfigError> {
    match n {
        -1 | 0 => Ok(0),
        1..=65535 => Ok(n as u16),
        _ => Err(invalid(key, &format!("port {n} is out of range"))),
    }
}

fn split_host_port(key: &str, listen: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, &format!("expected host:port, got {listen:?}")))?;
    let port: i64 = port
        .parse()
        .map_err(|_| invalid(key, &format!("invalid port in {listen:?}")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, port_value(key, port)?))
}
