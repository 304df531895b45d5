//! The monitoring HTTP endpoints, with nats-server's paths and JSON field
//! names so existing NATS tooling reads them, plus Prometheus `/metrics`.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::client::ClientShared;
use crate::server::{ServerShared, NATS_COMPAT_VERSION, VERSION};
use crate::timefmt;

type Shared = Arc<ServerShared>;

/// Binds the monitoring listener and serves it in a task.
pub(crate) async fn start(
    shared: Shared,
    port: u16,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let host = shared.opts.http_host.clone();
    let listener = crate::server::listen(&host, port)
        .await
        .map_err(|e| anyhow::anyhow!("can not listen for monitoring on {host}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = app(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "monitoring server stopped");
        }
    });
    Ok((addr, task))
}

/// Binds the HTTPS monitoring listener (`https_port`) and serves it in a
/// task, with the client TLS certificate (reloaded with it).
pub(crate) async fn start_https(
    shared: Shared,
    port: u16,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let host = shared.opts.http_host.clone();
    let listener = crate::server::listen(&host, port).await.map_err(|e| {
        anyhow::anyhow!("can not listen for https monitoring on {host}:{port}: {e}")
    })?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = tokio::spawn(tls_handshakes(shared.clone(), listener, tx));
    let app = app(shared);
    let task = tokio::spawn(async move {
        let listener = TlsListener { rx, addr };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "https monitoring server stopped");
        }
        handshakes.abort();
    });
    Ok((addr, task))
}

/// How long an HTTPS client has for the TLS handshake.
const HTTPS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Accepts TCP connections and hands those that complete the TLS handshake
/// to the HTTP server; each handshake runs on its own, bounded in time.
async fn tls_handshakes(
    shared: Shared,
    listener: tokio::net::TcpListener,
    tx: tokio::sync::mpsc::Sender<(TlsStream, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::error!(error = %e, "error accepting https monitoring connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(acceptor) = shared.tls_acceptor() else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HTTPS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "https monitoring handshake failed")
                }
                Err(_) => tracing::debug!(%peer, "https monitoring handshake timed out"),
            }
        });
    }
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Connections that finished their TLS handshake, as axum's listener.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The handshake task is gone: nothing more will arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The monitoring endpoints.
fn app(shared: Shared) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/varz", get(varz))
        .route("/connz", get(connz))
        .route("/subsz", get(subsz))
        .route("/subscriptionsz", get(subsz))
        .route("/routez", get(routez))
        .route("/jsz", get(jsz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

async fn root() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>tern-server</h1><ul>\
         <li><a href=\"varz\">varz</a></li><li><a href=\"connz\">connz</a></li>\
         <li><a href=\"subsz\">subsz</a></li><li><a href=\"routez\">routez</a></li>\
         <li><a href=\"healthz\">healthz</a></li><li><a href=\"metrics\">metrics</a></li>\
         </ul></body></html>",
    )
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

fn now() -> String {
    timefmt::rfc3339(SystemTime::now())
}

/// Resident set size in bytes, from `/proc/self/statm`.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn varz(State(s): State<Shared>) -> Response {
    let o = &s.opts;
    let st = &s.stats;
    let subscriptions = s.global_account().with_sublist(|l| l.count());
    // Connected route links, as nats-server counts routes.
    let routes = s
        .cluster
        .get()
        .map_or(0, |c| c.peers().iter().filter(|p| p.is_connected()).count());
    json_response(&json!({
        "server_id": s.server_id,
        "server_name": s.server_name,
        "version": NATS_COMPAT_VERSION,
        "tern_version": VERSION,
        "proto": 1,
        "go": format!("tern {VERSION}"),
        "host": o.host,
        "port": s.client_addr.port(),
        "auth_required": o.auth.required(),
        "max_connections": o.max_connections,
        "ping_interval": o.ping_interval.as_nanos() as u64,
        "ping_max": o.max_pings_out,
        "http_host": o.http_host,
        "http_port": s.http_addr.lock().map_or(0, |a| a.port()),
        "http_base_path": "",
        "https_port": s.https_addr.lock().map_or(0, |a| a.port()),
        "auth_timeout": o.auth_timeout.as_secs_f64(),
        "max_control_line": o.max_control_line,
        "max_payload": o.max_payload,
        "max_pending": o.max_pending,
        "max_subscriptions": o.max_subscriptions,
        "cluster": match s.cluster.get() {
            Some(cluster) => json!({
                "name": cluster.name(),
                "addr": cluster.listen_addr().ip().to_string(),
                "cluster_port": cluster.listen_addr().port(),
                "auth_timeout": 0,
                "urls": o.cluster.routes,
                "members": cluster.members().iter().map(|m| json!({
                    "node_id": m.member.node_id,
                    "name": m.member.name,
                    "state": m.liveness.as_str(),
                    "cluster_addr": m.member.cluster_addr,
                    "client_addr": m.member.client_addr,
                })).collect::<Vec<_>>(),
            }),
            None => json!({
                "name": "",
                "addr": "",
                "cluster_port": 0,
                "auth_timeout": 0,
            }),
        },
        "connect_urls": s.connect_urls.lock().clone(),
        "gateway": {},
        "leaf": {},
        "mqtt": {},
        "websocket": {},
        "jetstream": {},
        "tls_timeout": 2,
        "write_deadline": o.write_deadline.as_nanos() as u64,
        "start": timefmt::rfc3339(s.started_at),
        "now": now(),
        "uptime": timefmt::uptime(s.started.elapsed()),
        "mem": rss_bytes(),
        "cores": num_cores(),
        "gomaxprocs": num_cores(),
        "cpu": 0,
        "connections": s.num_clients(),
        "total_connections": st.total_connections.load(Ordering::Relaxed),
        "routes": routes,
        "remotes": routes,
        "leafnodes": 0,
        "in_msgs": st.in_msgs.load(Ordering::Relaxed),
        "out_msgs": st.out_msgs.load(Ordering::Relaxed),
        "in_bytes": st.in_bytes.load(Ordering::Relaxed),
        "out_bytes": st.out_bytes.load(Ordering::Relaxed),
        "slow_consumers": st.slow_consumers.load(Ordering::Relaxed),
        "subscriptions": subscriptions,
        "http_req_stats": {},
        "config_load_time": timefmt::rfc3339(s.started_at),
        "system_account": "",
    }))
}

fn bad_request(text: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// JSON as nats-server writes it: indented by two spaces, with `<`, `>` and
/// `&` escaped the way Go's encoder does. Those characters only occur inside
/// strings, so replacing them in the text keeps the JSON valid.
fn json_response(value: &Value) -> Response {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let text = text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// One connection's figures, gathered once so sorting compares the same values.
struct ConnRow {
    client: Arc<ClientShared>,
    pending: usize,
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    subs: usize,
    last_ms: u64,
}

async fn connz(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let sort = q.get("sort").map(String::as_str).unwrap_or("cid");
    let offset: usize = match q.get("offset").map(|v| v.parse()) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return bad_request("invalid offset".into()),
    };
    let limit: usize = match q.get("limit").map(|v| v.parse()) {
        None => 1024,
        Some(Ok(v)) => v,
        Some(Err(_)) => return bad_request("invalid limit".into()),
    };
    let subs_mode = q.get("subs").map(String::as_str).unwrap_or("");
    let (subs_list, subs_detail) = match subs_mode {
        "detail" => (false, true),
        "1" | "true" => (true, false),
        _ => (false, false),
    };
    let mut rows: Vec<ConnRow> = s
        .clients()
        .into_iter()
        .map(|client| {
            let (out_msgs, out_bytes) = client.out_counts();
            let subs = client.subs.lock().len();
            ConnRow {
                pending: client.pending_bytes(),
                in_msgs: client.in_msgs.load(Ordering::Relaxed),
                in_bytes: client.in_bytes.load(Ordering::Relaxed),
                out_msgs,
                out_bytes,
                subs,
                last_ms: client.last_activity_ms.load(Ordering::Relaxed),
                client,
            }
        })
        .collect();
    // Descending for figures, as nats-server sorts them.
    match sort {
        "cid" => rows.sort_by_key(|r| r.client.id),
        "start" => rows.sort_by_key(|r| r.client.started),
        "subs" => rows.sort_by_key(|r| Reverse(r.subs)),
        "pending" => rows.sort_by_key(|r| Reverse(r.pending)),
        "msgs_to" => rows.sort_by_key(|r| Reverse(r.out_msgs)),
        "msgs_from" => rows.sort_by_key(|r| Reverse(r.in_msgs)),
        "bytes_to" => rows.sort_by_key(|r| Reverse(r.out_bytes)),
        "bytes_from" => rows.sort_by_key(|r| Reverse(r.in_bytes)),
        "last" => rows.sort_by_key(|r| Reverse(r.last_ms)),
        "idle" => rows.sort_by_key(|r| r.last_ms),
        "uptime" => rows.sort_by_key(|r| r.client.started),
        other => return bad_request(format!("invalid sorting option: {other}")),
    }
    let total = rows.len();
    let now_sys = SystemTime::now();
    let connections: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| {
            let c = &r.client;
            let meta = c.meta.lock().clone();
            let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(r.last_ms);
            let mut v = json!({
                "cid": c.id,
                "kind": "Client",
                "type": "nats",
                "ip": c.addr.ip().to_string(),
                "port": c.addr.port(),
                "start": timefmt::rfc3339(c.started),
                "last_activity": timefmt::rfc3339(last),
                "rtt": timefmt::go_duration(meta.rtt.unwrap_or_default()),
                "uptime": timefmt::uptime(now_sys.duration_since(c.started).unwrap_or_default()),
                "idle": timefmt::uptime(now_sys.duration_since(last).unwrap_or_default()),
                "pending_bytes": r.pending,
                "in_msgs": r.in_msgs,
                "out_msgs": r.out_msgs,
                "in_bytes": r.in_bytes,
                "out_bytes": r.out_bytes,
                "subscriptions": r.subs,
            });
            // Empty fields are left out, as nats-server's omitempty does.
            for (key, value) in [
                ("name", &meta.name),
                ("lang", &meta.lang),
                ("version", &meta.version),
            ] {
                if !value.is_empty() {
                    v[key] = json!(value);
                }
            }
            if !meta.user.is_empty() {
                v["authorized_user"] = json!(meta.user);
            }
            if subs_list {
                let list: Vec<String> = c.subs.lock().iter().map(|s| s.subject.clone()).collect();
                if !list.is_empty() {
                    v["subscriptions_list"] = json!(list);
                }
            }
            if subs_detail {
                let list: Vec<Value> = c
                    .subs
                    .lock()
                    .iter()
                    .map(|sub| sub_detail(None, sub, c.id))
                    .collect();
                if !list.is_empty() {
                    v["subscriptions_list_detail"] = json!(list);
                }
            }
            v
        })
        .collect();
    json_response(&json!({
        "server_id": s.server_id,
        "now": now(),
        "num_connections": connections.len(),
        "total": total,
        "offset": offset,
        "limit": limit,
        "connections": connections,
    }))
}

/// One subscription as nats-server's `SubDetail`: the account only where
/// nats-server gives it (`/subsz`), `qgroup` and `max` only when set.
fn sub_detail(account: Option<&str>, s: &crate::client::Subscription, cid: u64) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(account) = account {
        v.insert("account".into(), json!(account));
    }
    v.insert("subject".into(), json!(s.subject));
    if let Some(q) = &s.queue {
        v.insert("qgroup".into(), json!(q));
    }
    v.insert("sid".into(), json!(String::from_utf8_lossy(&s.sid)));
    v.insert("msgs".into(), json!(s.delivered.load(Ordering::Relaxed)));
    let max = s.max.load(Ordering::Relaxed);
    if max > 0 {
        v.insert("max".into(), json!(max));
    }
    v.insert("cid".into(), json!(cid));
    Value::Object(v)
}

async fn subsz(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let test = q.get("test").cloned();
    if let Some(t) = &test {
        if !tern_protocol::subject::is_valid_publish_subject(t.as_bytes()) {
            return bad_request(format!(
                "invalid test subject, must be valid publish subject: {t}"
            ));
        }
    }
    let account = s.global_account();
    let (stats, subs) = account.with_sublist(|l| (l.stats(), l.subjects()));
    let mut fanouts: HashMap<&str, usize> = HashMap::new();
    for (subject, _, _) in &subs {
        *fanouts.entry(subject.as_str()).or_default() += 1;
    }
    let max_fanout = fanouts.values().copied().max().unwrap_or(0);
    let avg_fanout = if fanouts.is_empty() {
        0.0
    } else {
        subs.len() as f64 / fanouts.len() as f64
    };
    let list_subs = matches!(
        q.get("subs").map(String::as_str),
        Some("1" | "true" | "detail")
    );
    let mut body = serde_json::Map::new();
    // nats-server names the server only in the listing form.
    if list_subs {
        body.insert("server_id".into(), json!(s.server_id));
        body.insert("now".into(), json!(now()));
    }
    for (key, value) in [
        ("num_subscriptions", json!(stats.num_subscriptions)),
        ("num_cache", json!(0)),
        ("num_inserts", json!(stats.num_inserts)),
        ("num_removes", json!(stats.num_removes)),
        ("num_matches", json!(stats.num_matches)),
        ("cache_hit_rate", json!(0.0)),
        ("max_fanout", json!(max_fanout)),
        ("avg_fanout", json!(avg_fanout)),
    ] {
        body.insert(key.into(), value);
    }
    if list_subs {
        let offset: usize = q.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(1024);
        let matching: Vec<&(String, Option<std::sync::Arc<str>>, crate::client::SubRef)> = subs
            .iter()
            .filter(|(subject, _, _)| {
                test.as_deref().is_none_or(|t| {
                    tern_protocol::subject::matches(subject.as_bytes(), t.as_bytes())
                })
            })
            .collect();
        let list: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, _, sub)| sub_detail(Some(&account.name), sub, sub.client.id))
            .collect();
        body.insert("total".into(), json!(matching.len()));
        body.insert("offset".into(), json!(offset));
        body.insert("limit".into(), json!(limit));
        body.insert("subscriptions_list".into(), json!(list));
    }
    json_response(&Value::Object(body))
}

/// A per-peer metric: name, type, help and how to read it.
type PeerMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RouteView) -> u64,
);

/// One peer as `/routez` and `/metrics` show it.
struct RouteView {
    node_id: String,
    name: String,
    state: &'static str,
    connected: bool,
    addr: String,
    client_addr: String,
    since: std::time::Instant,
    last_seen: std::time::Instant,
    out: Option<Arc<tern_cluster::Peer>>,
    inbound: Option<Arc<tern_cluster::LinkStats>>,
    /// The peer's interest entries: `subject` or `subject queue`.
    subscriptions: Vec<String>,
}

/// Every other member of the cluster, with its link counters.
fn route_views(s: &ServerShared) -> Vec<RouteView> {
    let Some(cluster) = s.cluster.get() else {
        return Vec::new();
    };
    let peers = cluster.peers();
    let mut subscriptions: HashMap<String, Vec<String>> = HashMap::new();
    for account in s.all_accounts() {
        for (subject, queue, node) in account.remote_subjects() {
            let entry = match queue {
                Some(queue) => format!("{subject} {queue}"),
                None => subject,
            };
            subscriptions.entry(node).or_default().push(entry);
        }
    }
    cluster
        .members()
        .into_iter()
        .filter(|m| m.member.node_id != s.server_id)
        .map(|m| {
            let id = m.member.node_id.clone();
            let out = peers.iter().find(|p| p.node_id() == id).cloned();
            RouteView {
                name: m.member.name.clone(),
                state: m.liveness.as_str(),
                connected: out.as_ref().is_some_and(|p| p.is_connected()),
                addr: m.member.cluster_addr.clone(),
                client_addr: m.member.client_addr.clone(),
                since: m.since,
                last_seen: m.last_seen,
                inbound: cluster.inbound_stats(&id),
                subscriptions: subscriptions.remove(&id).unwrap_or_default(),
                out,
                node_id: id,
            }
        })
        .collect()
}

async fn routez(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let list = q
        .get("subs")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "detail"));
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let routes: Vec<Value> = route_views(&s)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (ip, port) = r
                .addr
                .rsplit_once(':')
                .map_or((r.addr.as_str(), 0), |(h, p)| (h, p.parse().unwrap_or(0)));
            let started = SystemTime::now() - r.since.elapsed();
            let last = SystemTime::now() - r.last_seen.elapsed();
            let mut route = json!({
                "rid": i + 1,
                "remote_id": r.node_id,
                "remote_name": r.name,
                "state": r.state,
                "connected": r.connected,
                "did_solicit": true,
                "is_configured": true,
                "ip": ip.trim_start_matches('[').trim_end_matches(']'),
                "port": port,
                "client_url": r.client_addr,
                "start": timefmt::rfc3339(started),
                "last_activity": timefmt::rfc3339(last),
                "uptime": timefmt::uptime(r.since.elapsed()),
                "idle": timefmt::uptime(r.last_seen.elapsed()),
                "pending_size": 0,
                "in_msgs": r.inbound.as_ref().map_or(0, |st| load(&st.in_msgs)),
                "in_bytes": r.inbound.as_ref().map_or(0, |st| load(&st.in_bytes)),
                "out_msgs": r.out.as_ref().map_or(0, |p| load(&p.stats.out_msgs)),
                "out_bytes": r.out.as_ref().map_or(0, |p| load(&p.stats.out_bytes)),
                "dropped_msgs": r.out.as_ref().map_or(0, |p| load(&p.stats.dropped_msgs)),
                "connects": r.out.as_ref().map_or(0, |p| load(&p.stats.connects)),
                "subscriptions": r.subscriptions.len(),
            });
            if list {
                let mut subs = r.subscriptions.clone();
                subs.sort();
                route["subscriptions_list"] = json!(subs);
            }
            route
        })
        .collect();
    // Unclustered, the shape is exactly nats-server's; clustered, the server
    // and cluster names are added.
    let body = match s.cluster.get() {
        Some(cluster) => json!({
            "server_id": s.server_id,
            "server_name": s.server_name,
            "now": now(),
            "cluster": cluster.name(),
            "num_routes": routes.len(),
            "routes": routes,
        }),
        None => json!({
            "server_id": s.server_id,
            "now": now(),
            "num_routes": 0,
            "routes": [],
        }),
    };
    json_response(&body)
}

async fn jsz(State(s): State<Shared>) -> Response {
    let js = &s.js;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    if !js.enabled.load(Ordering::Relaxed) {
        return json_response(&json!({
            "server_id": s.server_id,
            "now": now(),
            "disabled": true,
            "config": {},
            "memory": 0, "storage": 0, "reserved_memory": 0, "reserved_storage": 0,
            "accounts": 0, "ha_assets": 0,
            "api": {"total": 0, "errors": 0},
            "streams": 0, "consumers": 0, "messages": 0, "bytes": 0,
        }));
    }
    let store_dir = js.store_dir.lock().clone().unwrap_or_default();
    json_response(&json!({
        "server_id": s.server_id,
        "now": now(),
        "config": {
            "max_memory": -1,
            "max_storage": -1,
            "store_dir": store_dir.join("jetstream").display().to_string(),
            "sync_interval": s.opts.jetstream.sync_interval.map_or(0, |d| d.as_nanos() as u64),
            "sync_always": s.opts.jetstream.sync_interval.is_none(),
        },
        "memory": load(&js.memory),
        "storage": load(&js.storage),
        "reserved_memory": 0,
        "reserved_storage": 0,
        "accounts": load(&js.accounts),
        "ha_assets": 0,
        "api": {"total": load(&js.api_total), "errors": load(&js.api_errors)},
        "streams": load(&js.streams),
        "consumers": load(&js.consumers),
        "messages": load(&js.messages),
        "bytes": load(&js.bytes),
    }))
}

async fn metrics(State(s): State<Shared>) -> Response {
    let st = &s.stats;
    let subscriptions = s.global_account().with_sublist(|l| l.count());
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "tern_connections",
        "gauge",
        "Open client connections.",
        s.num_clients().to_string(),
    );
    metric(
        "tern_connections_total",
        "counter",
        "Client connections accepted since start.",
        st.total_connections.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_subscriptions",
        "gauge",
        "Active subscriptions.",
        subscriptions.to_string(),
    );
    metric(
        "tern_in_msgs_total",
        "counter",
        "Messages received from clients.",
        st.in_msgs.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_out_msgs_total",
        "counter",
        "Messages delivered to clients.",
        st.out_msgs.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_in_bytes_total",
        "counter",
        "Payload bytes received from clients.",
        st.in_bytes.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_out_bytes_total",
        "counter",
        "Payload bytes delivered to clients.",
        st.out_bytes.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_slow_consumers_total",
        "counter",
        "Connections closed as slow consumers.",
        st.slow_consumers.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "tern_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        format!("{:.3}", s.started.elapsed().as_secs_f64()),
    );
    metric(
        "tern_memory_rss_bytes",
        "gauge",
        "Resident memory of the server.",
        rss_bytes().to_string(),
    );
    let js = &s.js;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    metric(
        "tern_jetstream_streams",
        "gauge",
        "JetStream streams.",
        load(&js.streams),
    );
    metric(
        "tern_jetstream_consumers",
        "gauge",
        "JetStream consumers.",
        load(&js.consumers),
    );
    metric(
        "tern_jetstream_memory_bytes",
        "gauge",
        "Bytes stored in memory streams.",
        load(&js.memory),
    );
    metric(
        "tern_jetstream_storage_bytes",
        "gauge",
        "Bytes stored in file streams.",
        load(&js.storage),
    );
    metric(
        "tern_jetstream_messages",
        "gauge",
        "Messages stored in streams.",
        load(&js.messages),
    );
    metric(
        "tern_jetstream_bytes",
        "gauge",
        "Bytes stored in streams.",
        load(&js.bytes),
    );
    metric(
        "tern_jetstream_api_requests_total",
        "counter",
        "JetStream API requests.",
        load(&js.api_total),
    );
    metric(
        "tern_jetstream_api_errors_total",
        "counter",
        "JetStream API requests answered with an error.",
        load(&js.api_errors),
    );
    let routes = route_views(&s);
    if s.cluster.get().is_some() {
        let up = routes.iter().filter(|r| r.state == "up").count();
        metric(
            "tern_cluster_members_up",
            "gauge",
            "Other cluster members that are up.",
            up.to_string(),
        );
        metric(
            "tern_cluster_members",
            "gauge",
            "Other cluster members known, up or not.",
            routes.len().to_string(),
        );
    }
    let per_peer: [PeerMetric; 7] = [
        (
            "tern_route_up",
            "gauge",
            "1 if the outbound route link to the peer is up.",
            |r| u64::from(r.connected),
        ),
        (
            "tern_route_out_msgs_total",
            "counter",
            "Messages forwarded to the peer.",
            |r| {
                r.out
                    .as_ref()
                    .map_or(0, |p| p.stats.out_msgs.load(Ordering::Relaxed))
            },
        ),
        (
            "tern_route_out_bytes_total",
            "counter",
            "Bytes forwarded to the peer.",
            |r| {
                r.out
                    .as_ref()
                    .map_or(0, |p| p.stats.out_bytes.load(Ordering::Relaxed))
            },
        ),
        (
            "tern_route_in_msgs_total",
            "counter",
            "Messages received from the peer.",
            |r| {
                r.inbound
                    .as_ref()
                    .map_or(0, |st| st.in_msgs.load(Ordering::Relaxed))
            },
        ),
        (
            "tern_route_in_bytes_total",
            "counter",
            "Bytes received from the peer.",
            |r| {
                r.inbound
                    .as_ref()
                    .map_or(0, |st| st.in_bytes.load(Ordering::Relaxed))
            },
        ),
        (
            "tern_route_dropped_msgs_total",
            "counter",
            "Messages not forwarded because the link was too far behind.",
            |r| {
                r.out
                    .as_ref()
                    .map_or(0, |p| p.stats.dropped_msgs.load(Ordering::Relaxed))
            },
        ),
        (
            "tern_route_subscriptions",
            "gauge",
            "Interest entries the peer announced.",
            |r| r.subscriptions.len() as u64,
        ),
    ];
    if !routes.is_empty() {
        for (name, kind, help, value) in per_peer {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for r in &routes {
                out.push_str(&format!(
                    "{name}{{peer=\"{}\",peer_id=\"{}\"}} {}\n",
                    r.name,
                    r.node_id,
                    value(r)
                ));
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
