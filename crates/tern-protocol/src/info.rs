//! The `INFO` a server sends and the `CONNECT` a client answers with.

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// The JSON of the server's `INFO` operation, field for field as nats-server sends it.
///
/// Optional fields are left out when empty or false, as nats-server does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Unique id of this server process.
    pub server_id: String,
    /// The server's configured (or generated) name.
    pub server_name: String,
    /// The NATS server version whose protocol this server speaks.
    pub version: String,
    /// Protocol level: 1 supports dynamic `INFO` updates.
    pub proto: i32,
    /// Build identifier.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_commit: String,
    /// Toolchain name (nats-server puts its Go version here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go: String,
    /// Address the client listener is bound to.
    pub host: String,
    /// Port of the client listener.
    pub port: u16,
    /// Whether headers (`HPUB`/`HMSG`) are supported.
    pub headers: bool,
    /// Whether the client must authenticate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auth_required: bool,
    /// Whether TLS is required.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_required: bool,
    /// Whether client certificates are verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    /// Whether TLS is available but optional.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_available: bool,
    /// Largest accepted payload in bytes.
    pub max_payload: i64,
    /// Whether JetStream is enabled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub jetstream: bool,
    /// The id the server gave this connection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub client_id: u64,
    /// The client's address as the server sees it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Challenge for NKey and JWT authentication.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// Name of the cluster this server belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Client URLs of the other servers in the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Whether the server is in lame duck mode.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ldm: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_true() -> bool {
    true
}

/// The JSON of a client's `CONNECT` operation. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectInfo {
    /// Acknowledge every operation with `+OK`.
    #[serde(default)]
    pub verbose: bool,
    /// Check subjects strictly.
    #[serde(default)]
    pub pedantic: bool,
    /// The client requires TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Token for token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// Client-chosen connection name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client library language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Client library version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Protocol level the client supports.
    #[serde(default)]
    pub protocol: i32,
    /// Whether the client wants its own messages delivered back to it.
    #[serde(default = "default_true")]
    pub echo: bool,
    /// NKey signature of the server's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// User JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// Public NKey of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// The client understands `HMSG`.
    #[serde(default)]
    pub headers: bool,
    /// The client wants a `503` status when a request has no responders.
    #[serde(default)]
    pub no_responders: bool,
}

impl Default for ConnectInfo {
    fn default() -> Self {
        Self {
            verbose: false,
            pedantic: false,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            echo: true,
            sig: None,
            jwt: None,
            nkey: None,
            headers: false,
            no_responders: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_defaults_and_unknown_fields() {
        let c: ConnectInfo = serde_json::from_str(r#"{"lang":"rust","x":1}"#).unwrap();
        assert!(c.echo);
        assert!(!c.verbose);
        assert_eq!(c.lang.as_deref(), Some("rust"));
        let c: ConnectInfo =
            serde_json::from_str(r#"{"echo":false,"headers":true,"no_responders":true}"#).unwrap();
        assert!(!c.echo && c.headers && c.no_responders);
    }

    #[test]
    fn info_leaves_out_empty_fields() {
        let info = ServerInfo {
            server_id: "N1".into(),
            server_name: "n".into(),
            version: "2.10.0".into(),
            proto: 1,
            host: "0.0.0.0".into(),
            port: 4222,
            headers: true,
            max_payload: 1048576,
            client_id: 3,
            ..Default::default()
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(
            json,
            r#"{"server_id":"N1","server_name":"n","version":"2.10.0","proto":1,"host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576,"client_id":3}"#
        );
    }
}
