//! Command-line flags, named and meant as nats-server's.

use std::path::PathBuf;

use clap::Parser;

/// tern-server: a NATS-compatible event bus node.
///
/// Flags take nats-server's names and meanings; Go-style single-dash long
/// flags (`-js`, `-sd`, `-port 4222`, `-DV`) work as well. Flags override the
/// configuration file and `TERN_*` environment variables.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "tern-server",
    disable_version_flag = true,
    allow_negative_numbers = true
)]
pub struct Cli {
    /// Bind to host address (default: 0.0.0.0).
    #[arg(short = 'a', long = "addr", visible_aliases = ["net", "host"], value_name = "HOST")]
    pub addr: Option<String>,
    /// Use port for clients (default: 4222); -1 picks a free port.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<i32>,
    /// Server name (default: the generated server id).
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "server_name",
        value_name = "NAME"
    )]
    pub name: Option<String>,
    /// Use port for HTTP monitoring; -1 picks a free port.
    #[arg(short = 'm', long = "http_port", value_name = "PORT")]
    pub http_port: Option<i32>,
    /// Use port for HTTPS monitoring (needs the `tls` settings); -1 picks a free port.
    #[arg(long = "https_port", visible_alias = "ms", value_name = "PORT")]
    pub https_port: Option<i32>,
    /// Configuration file: nats-server format, or TOML when it ends in `.toml`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the log to this file instead of standard error.
    #[arg(
        short = 'l',
        long = "log",
        visible_alias = "log_file",
        value_name = "FILE"
    )]
    pub log: Option<PathBuf>,
    /// Write the process id to this file.
    #[arg(short = 'P', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,
    /// Enable debug logging.
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// Enable protocol trace logging.
    #[arg(short = 'V', long = "trace")]
    pub trace: bool,
    /// Timestamp log lines (default: true).
    #[arg(short = 'T', long = "logtime", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub logtime: Option<bool>,
    /// Log JSON lines instead of nats-server's text format.
    #[arg(long = "log_json")]
    pub log_json: bool,
    /// User required for connections.
    #[arg(long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Password required for connections.
    #[arg(long = "pass", value_name = "PASSWORD")]
    pub pass: Option<String>,
    /// Authorization token required for connections.
    #[arg(long = "auth", value_name = "TOKEN")]
    pub auth: Option<String>,
    /// Enable JetStream (not implemented yet: accepted and reported).
    #[arg(long = "jetstream", visible_alias = "js")]
    pub jetstream: bool,
    /// JetStream storage directory.
    #[arg(long = "store_dir", visible_alias = "sd", value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
    /// Cluster listen URL, e.g. nats://0.0.0.0:6222 (the gRPC cluster port).
    #[arg(long = "cluster", value_name = "URL")]
    pub cluster: Option<String>,
    /// Cluster name; nodes of different clusters refuse each other.
    #[arg(long = "cluster_name", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Seed routes of other nodes, comma separated (nats-route://host:port).
    #[arg(long = "routes", value_name = "URLS")]
    pub routes: Option<String>,
    /// Enable TLS (not implemented yet: refused).
    #[arg(long = "tls")]
    pub tls: bool,
    /// Server certificate file (TLS is not implemented yet).
    #[arg(long = "tlscert", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Private key for the server certificate (TLS is not implemented yet).
    #[arg(long = "tlskey", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Verify client certificates (TLS is not implemented yet).
    #[arg(long = "tlsverify")]
    pub tlsverify: bool,
    /// Client certificate CA for verification (TLS is not implemented yet).
    #[arg(long = "tlscacert", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Show version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Send a signal to a running server: stop, quit, reload, reopen, term or
    /// ldm, optionally `=<pid>` or `=<pid file>`.
    #[arg(long = "signal", visible_alias = "sl", value_name = "SIGNAL[=PID]")]
    pub signal: Option<String>,
}

/// Long flags that Go's flag package also accepts with a single dash.
const LONG_FLAGS: &[&str] = &[
    "addr",
    "net",
    "host",
    "port",
    "name",
    "server_name",
    "http_port",
    "https_port",
    "ms",
    "config",
    "log",
    "log_file",
    "pid",
    "debug",
    "trace",
    "logtime",
    "log_json",
    "user",
    "pass",
    "auth",
    "jetstream",
    "js",
    "store_dir",
    "sd",
    "cluster",
    "cluster_name",
    "routes",
    "tls",
    "tlscert",
    "tlskey",
    "tlsverify",
    "tlscacert",
    "signal",
    "sl",
    "help",
    "version",
];

/// Rewrites nats-server style arguments into the shape clap expects:
/// `-js` → `--js`, `-port=4222` → `--port=4222`, `-DV` → `-D -V`.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    for arg in args {
        let Some(body) = arg.strip_prefix('-').filter(|b| !b.starts_with('-')) else {
            out.push(arg);
            continue;
        };
        let name = body.split('=').next().unwrap_or_default();
        if name.len() > 1 && LONG_FLAGS.contains(&name) {
            out.push(format!("-{arg}"));
        } else if matches!(body, "DV" | "VD" | "DVV" | "VV") {
            out.push("-D".into());
            out.push("-V".into());
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let args = normalize_args(args.iter().map(|s| s.to_string()));
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn nats_server_style_flags() {
        let cli = parse(&[
            "tern-server",
            "-p",
            "-1",
            "-js",
            "-sd",
            "/tmp/x",
            "-DV",
            "-m",
            "8222",
            "-ms",
            "8443",
        ]);
        assert_eq!(cli.https_port, Some(8443));
        assert_eq!(cli.port, Some(-1));
        assert!(cli.jetstream && cli.debug && cli.trace);
        assert_eq!(cli.store_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cli.http_port, Some(8222));
        let cli = parse(&[
            "tern-server",
            "-port=4333",
            "--net",
            "127.0.0.1",
            "-user",
            "a",
            "--pass=b",
        ]);
        assert_eq!(cli.port, Some(4333));
        assert_eq!(cli.addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(cli.user.as_deref(), Some("a"));
        assert_eq!(cli.pass.as_deref(), Some("b"));
        let cli = parse(&["tern-server", "--signal", "stop=123", "-a", "::1"]);
        assert_eq!(cli.signal.as_deref(), Some("stop=123"));
    }
}
