//! One client connection: a reader that parses and routes operations, and a
//! writer that drains the connection's bounded outbound buffer.
//!
//! Publishers never write to another connection's socket. They append the
//! encoded `MSG` to the target's [`Outbound`] buffer under a short lock and,
//! once per read batch, wake the target's writer, which sends everything
//! queued with one write. A target whose queue passes `max_pending` is a slow
//! consumer: its buffer is dropped and the connection closed, so it can never
//! hold memory or stall the publisher.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tern_protocol::{err, subject, ClientOp, ConnectInfo, Headers, Parsed, Parser, ParserLimits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, trace, warn};

use crate::account::Account;
use crate::router::Router;
use crate::server::ServerShared;

/// Why a connection ended; the names match nats-server's `/connz` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    ClientClosed,
    ReadError,
    WriteError,
    SlowConsumerPendingBytes,
    SlowConsumerWriteDeadline,
    StaleConnection,
    ProtocolViolation,
    AuthenticationTimeout,
    AuthenticationViolation,
    AuthenticationExpired,
    MaxPayloadExceeded,
    MaxControlLineExceeded,
    MaxConnectionsExceeded,
    ServerShutdown,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxControlLineExceeded => "Maximum Control Line Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::ServerShutdown => "Server Shutdown",
        }
    }
}

/// A subscription of one client.
pub(crate) struct Subscription {
    pub(crate) client: Arc<ClientShared>,
    pub(crate) subject: String,
    pub(crate) queue: Option<String>,
    pub(crate) sid: Bytes,
    /// Auto-unsubscribe after this many messages; `0` means never.
    pub(crate) max: AtomicU64,
    /// Messages delivered so far.
    pub(crate) delivered: AtomicU64,
    /// Set when the owner's permissions deny part of what this wildcard
    /// subscription covers: each delivery is checked against them.
    pub(crate) filter: Option<Arc<tern_auth::Permissions>>,
}

/// A shared subscription compared by identity, as the sublist stores it.
#[derive(Clone)]
pub(crate) struct SubRef(pub(crate) Arc<Subscription>);

impl PartialEq for SubRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for SubRef {
    type Target = Subscription;
    fn deref(&self) -> &Subscription {
        &self.0
    }
}

/// Bytes waiting to be written to one connection.
pub(crate) struct Outbound {
    buf: BytesMut,
    /// Someone is writing to the socket: an inline flush or the writer task.
    /// Only one writes at a time, so bytes leave in the order they were queued.
    writing: bool,
    /// Bytes an inline flush could not finish; the writer task sends them
    /// before anything in `buf`.
    inflight: Option<BytesMut>,
    /// An empty buffer with capacity, swapped in when `buf` is taken.
    spare: BytesMut,
    pub(crate) closed: bool,
    reason: Option<CloseReason>,
    msgs: u64,
    bytes: u64,
}

/// Descriptive state of a connection, for monitoring.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientMeta {
    pub(crate) name: String,
    pub(crate) lang: String,
    pub(crate) version: String,
    pub(crate) user: String,
    pub(crate) rtt: Option<Duration>,
}

/// The part of a connection other connections can reach.
pub(crate) struct ClientShared {
    pub(crate) id: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) started: SystemTime,
    pub(crate) max_pending: usize,
    pub(crate) out: Mutex<Outbound>,
    /// The socket's write half, shared so a publisher's reader can write a
    /// small batch straight away instead of waking the writer task.
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The write half of a TLS or WebSocket connection; only the writer
    /// task writes it.
    tls: Option<Arc<tokio::sync::Mutex<StreamWriter>>>,
    /// Set for the server's own clients (JetStream): messages go to a channel.
    internal: Option<InternalSink>,
    /// Wakes the writer.
    write_ready: Notify,
    /// Set by whoever queued bytes and owes the writer a wake-up.
    flush_owed: AtomicBool,
    /// Wakes the reader when the connection must end.
    close_requested: Notify,
    /// Wakes publishers held back for this connection after each write.
    pub(crate) drained: Notify,
    /// Bytes handed to the socket so far; shows whether the client reads.
    pub(crate) bytes_written: AtomicU64,
    /// `bytes_written` when a publisher last waited for this connection in
    /// vain: until it moves, nobody waits for this connection again.
    pub(crate) stuck_at: AtomicU64,
    /// Whether the client understands `HMSG`.
    headers: AtomicBool,
    /// Replies this client may send under `allow_responses`; `tracks_responses`
    /// spares everyone else the lock on each delivery.
    pub(crate) responses: Mutex<Option<tern_auth::ResponseTracker>>,
    /// The account the client belongs to, for monitoring.
    pub(crate) account_name: Mutex<String>,
    pub(crate) tracks_responses: AtomicBool,
    pub(crate) meta: Mutex<ClientMeta>,
    pub(crate) subs: Mutex<Vec<SubRef>>,
    pub(crate) in_msgs: AtomicU64,
    pub(crate) in_bytes: AtomicU64,
    /// Milliseconds since the Unix epoch of the last inbound activity.
    pub(crate) last_activity_ms: AtomicU64,
}

/// The write half of a client stream other than plain TCP (TLS, WebSocket).
pub(crate) type StreamWriter = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
/// Its read half.
pub(crate) type StreamReader = Box<dyn AsyncRead + Send + Unpin>;

/// A message delivered to one of the server's internal clients.
#[derive(Debug)]
pub(crate) struct InternalMsg {
    /// The subscription id that matched.
    pub(crate) sid: Bytes,
    pub(crate) subject: Bytes,
    pub(crate) reply: Option<Bytes>,
    pub(crate) headers: Option<Bytes>,
    pub(crate) payload: Bytes,
    /// Counted in the sink's pending bytes until the consumer drops it.
    size: usize,
    pending: Arc<AtomicUsize>,
}

impl InternalMsg {
    /// A message the server makes for one of its own services (a stream's
    /// sourced copy), counted against no client's queue.
    pub(crate) fn local(
        sid: Bytes,
        subject: Bytes,
        headers: Option<Bytes>,
        payload: Bytes,
    ) -> Self {
        InternalMsg {
            sid,
            subject,
            reply: None,
            headers,
            payload,
            size: 0,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Drop for InternalMsg {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// Where an internal client's messages go: a channel, bounded in bytes by
/// `max_pending` like a socket's queue.
struct InternalSink {
    tx: tokio::sync::mpsc::UnboundedSender<InternalMsg>,
    pending: Arc<AtomicUsize>,
}

impl InternalSink {
    fn deliver(
        &self,
        max_pending: usize,
        subject: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Enqueued {
        let size = subject.len()
            + reply.map_or(0, <[u8]>::len)
            + headers.map_or(0, <[u8]>::len)
            + payload.len();
        if self.pending.fetch_add(size, Ordering::Relaxed) + size > max_pending {
            // The service is overwhelmed: drop this message (a request then
            // times out, a publish is not acknowledged) rather than grow.
            self.pending.fetch_sub(size, Ordering::Relaxed);
            warn!(
                "internal client queue full: message on {} dropped",
                String::from_utf8_lossy(subject)
            );
            return Enqueued::Closed;
        }
        let msg = InternalMsg {
            sid: Bytes::copy_from_slice(sid),
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            headers: headers
                .filter(|h| !h.is_empty())
                .map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(payload),
            size,
            pending: self.pending.clone(),
        };
        match self.tx.send(msg) {
            Ok(()) => Enqueued::Queued(size as u64),
            Err(_) => Enqueued::Closed,
        }
    }
}

/// What happened to a message offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued; carries the message bytes counted as delivered (headers
    /// included when the client receives them).
    Queued(u64),
    Closed,
    SlowConsumer,
}

impl ClientShared {
    fn new(id: u64, addr: SocketAddr, max_pending: usize, socket: Arc<OwnedWriteHalf>) -> Self {
        Self::with_sink(id, addr, max_pending, Some(socket), None, None)
    }

    fn new_stream(id: u64, addr: SocketAddr, max_pending: usize, writer: StreamWriter) -> Self {
        Self::with_sink(
            id,
            addr,
            max_pending,
            None,
            Some(Arc::new(tokio::sync::Mutex::new(writer))),
            None,
        )
    }

    fn with_sink(
        id: u64,
        addr: SocketAddr,
        max_pending: usize,
        socket: Option<Arc<OwnedWriteHalf>>,
        tls: Option<Arc<tokio::sync::Mutex<StreamWriter>>>,
        internal: Option<InternalSink>,
    ) -> Self {
        Self {
            id,
            addr,
            started: SystemTime::now(),
            max_pending,
            socket,
            tls,
            internal,
            out: Mutex::new(Outbound {
                buf: BytesMut::new(),
                writing: false,
                inflight: None,
                spare: BytesMut::new(),
                closed: false,
                reason: None,
                msgs: 0,
                bytes: 0,
            }),
            write_ready: Notify::new(),
            flush_owed: AtomicBool::new(false),
            close_requested: Notify::new(),
            drained: Notify::new(),
            bytes_written: AtomicU64::new(0),
            stuck_at: AtomicU64::new(u64::MAX),
            headers: AtomicBool::new(false),
            responses: Mutex::new(None),
            account_name: Mutex::new(crate::account::GLOBAL_ACCOUNT.to_owned()),
            tracks_responses: AtomicBool::new(false),
            meta: Mutex::new(ClientMeta::default()),
            subs: Mutex::new(Vec::new()),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Whether this is one of the server's own clients (JetStream).
    pub(crate) fn is_internal(&self) -> bool {
        self.internal.is_some()
    }

    /// A client of the server itself: subscriptions made for it deliver into
    /// the returned channel, with headers, bounded by `max_pending` bytes.
    pub(crate) fn new_internal(
        id: u64,
        name: &str,
        max_pending: usize,
    ) -> (
        Arc<ClientShared>,
        tokio::sync::mpsc::UnboundedReceiver<InternalMsg>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = InternalSink {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
        };
        let client = ClientShared::with_sink(
            id,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            max_pending,
            None,
            None,
            Some(sink),
        );
        // Internal clients take headers as they are.
        client.headers.store(true, Ordering::Relaxed);
        client.meta.lock().name = name.to_owned();
        (Arc::new(client), rx)
    }

    /// Subscribes this (internal) client to `subject` under `sid`.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        account: &Account,
        subject: &str,
        queue: Option<&str>,
        sid: &str,
    ) -> Result<SubRef, tern_routing::RoutingError> {
        let sub = SubRef(Arc::new(Subscription {
            client: self.clone(),
            subject: subject.to_owned(),
            queue: queue.map(str::to_owned),
            sid: Bytes::copy_from_slice(sid.as_bytes()),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            filter: None,
        }));
        account.subscribe(&sub)?;
        self.subs.lock().push(sub.clone());
        Ok(sub)
    }

    /// Queues a message for this connection; the caller owes a flush when
    /// this returns `Queued` (see [`Flusher`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enqueue_msg(
        &self,
        subject: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Enqueued {
        if let Some(sink) = &self.internal {
            return sink.deliver(self.max_pending, subject, sid, reply, headers, payload);
        }
        // A client that never asked for headers gets the payload alone, as
        // nats-server does.
        let headers = headers.filter(|_| self.headers.load(Ordering::Relaxed));
        let size = tern_protocol::msg_frame_len(
            subject,
            sid,
            reply,
            headers.map_or(0, <[u8]>::len) + payload.len(),
        );
        let mut out = self.out.lock();
        if out.closed {
            return Enqueued::Closed;
        }
        if out.buf.len() + size > self.max_pending {
            // Drop what is queued at once: the memory is what we protect.
            out.buf = BytesMut::new();
            if out.inflight.take().is_some() {
                out.writing = false;
            }
            out.closed = true;
            out.reason = Some(CloseReason::SlowConsumerPendingBytes);
            drop(out);
            self.close_requested.notify_one();
            self.write_ready.notify_one();
            return Enqueued::SlowConsumer;
        }
        match headers {
            None => tern_protocol::encode_msg(&mut out.buf, subject, sid, reply, payload),
            Some(h) => tern_protocol::encode_hmsg(&mut out.buf, subject, sid, reply, h, payload),
        }
        let bytes = (headers.map_or(0, <[u8]>::len) + payload.len()) as u64;
        out.msgs += 1;
        out.bytes += bytes;
        Enqueued::Queued(bytes)
    }

    /// Queues raw protocol bytes (`PONG`, `+OK`, `-ERR`, `INFO`, `PING`).
    pub(crate) fn enqueue_raw(&self, bytes: &[u8]) {
        let mut out = self.out.lock();
        if !out.closed {
            out.buf.extend_from_slice(bytes);
        }
    }

    /// Queues raw bytes and wakes the writer at once (outside any read batch).
    pub(crate) fn send_now(&self, bytes: &[u8]) {
        self.enqueue_raw(bytes);
        self.flush();
    }

    /// Marks the connection closing: nothing more is queued, the writer
    /// flushes what is there and both sides stop.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut out = self.out.lock();
        if !out.closed {
            out.closed = true;
            out.reason = Some(reason);
        }
        drop(out);
        self.close_requested.notify_one();
        self.write_ready.notify_one();
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.out.lock().reason
    }

    /// Queue size past which publishers feeding this connection wait for it.
    pub(crate) fn stall_threshold(&self) -> usize {
        (self.max_pending / 2).min(crate::router::STALL_PENDING)
    }

    /// Bytes queued and not yet handed to the socket.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.out.lock().buf.len()
    }

    /// Messages and payload bytes queued to this client so far.
    pub(crate) fn out_counts(&self) -> (u64, u64) {
        let out = self.out.lock();
        (out.msgs, out.bytes)
    }

    /// Claims the duty to wake this connection's writer; true for the first
    /// claimant since the last wake-up.
    pub(crate) fn claim_flush(&self) -> bool {
        // A plain load first: when someone already owes the flush (the common
        // case inside a burst) this avoids a read-modify-write per message.
        !self.flush_owed.load(Ordering::Acquire) && !self.flush_owed.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn flush(&self) {
        self.flush_owed.store(false, Ordering::Release);
        if !self.try_write_inline() {
            self.write_ready.notify_one();
        }
    }

    /// Writes what is queued straight to the socket, without blocking and
    /// without waking the writer task, as nats-server's readers flush their
    /// receivers; true when everything queued was written. Anything the
    /// socket does not take goes to the writer task.
    fn try_write_inline(&self) -> bool {
        let Some(socket) = &self.socket else {
            // An internal client has nothing to write; a TLS one is written
            // by its writer task.
            return self.tls.is_none();
        };
        let mut data = {
            let mut out = self.out.lock();
            if out.writing || out.closed || out.buf.is_empty() || out.buf.len() > INLINE_WRITE_MAX {
                return false;
            }
            out.writing = true;
            let spare = std::mem::take(&mut out.spare);
            std::mem::replace(&mut out.buf, spare)
        };
        let mut written = 0;
        while written < data.len() {
            match socket.try_write(&data[written..]) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        self.bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        let mut out = self.out.lock();
        if written == data.len() {
            data.clear();
            out.spare = data;
            out.writing = false;
            // More may have been queued, or the connection closed, meanwhile:
            // the writer task deals with both.
            out.buf.is_empty() && !out.closed
        } else {
            // The writer task owns the rest, and the writing flag with it.
            let _ = data.split_to(written);
            out.inflight = Some(data);
            false
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Per-connection protocol state owned by the reader.
struct Session {
    server: Arc<ServerShared>,
    shared: Arc<ClientShared>,
    account: Arc<Account>,
    router: Router,
    /// The nonce this connection's `INFO` asked it to sign, if any.
    nonce: String,
    /// Identities of the verified TLS client certificate (verify_and_map).
    tls_identities: Vec<String>,
    /// What the authenticated user may do; `None` allows everything.
    permissions: Option<Arc<tern_auth::Permissions>>,
    /// When the user's credentials expire (unix seconds), until the read
    /// loop arms its timer with it.
    expires_at: Option<i64>,
    connected: bool,
    /// The client's options as its `CONNECT`s set them; nats-server starts
    /// with verbose and pedantic on, and a `CONNECT` changes only the fields it names.
    options: serde_json::Map<String, serde_json::Value>,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    pings_out: u32,
    /// Inbound bytes or outbound messages since the last ping tick.
    active_since_ping: bool,
    out_msgs_at_ping: u64,
    rtt_ping_sent: Option<Instant>,
    /// Counters gathered during one batch and published once.
    batch_in_msgs: u64,
    batch_in_bytes: u64,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(server: Arc<ServerShared>, mut stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = server.next_client_id();
    let nonce = server.new_nonce();
    let mut info = BytesMut::new();
    tern_protocol::encode_info(
        &mut info,
        &server.client_info_with_nonce(id, addr, nonce.clone()),
    );
    let max_pending = server.opts.max_pending;

    let acceptor = server.tls_acceptor();
    let mut tls_identities = Vec::new();
    let (shared, reader): (Arc<ClientShared>, Box<dyn AsyncRead + Unpin + Send>) = match &acceptor {
        None => {
            let (reader, writer) = stream.into_split();
            let shared = Arc::new(ClientShared::new(id, addr, max_pending, Arc::new(writer)));
            shared.enqueue_raw(&info);
            (shared, Box::new(reader))
        }
        Some(acceptor) => {
            // As nats-server: INFO in the clear, then the client starts TLS.
            let timeout = server
                .opts
                .tls
                .as_ref()
                .map_or(Duration::from_secs(2), |t| t.timeout);
            let handshake = async {
                stream.write_all(&info).await?;
                acceptor.clone().accept(stream).await
            };
            match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(tls)) => {
                    // The verified client certificate, for verify_and_map.
                    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                    {
                        tls_identities = crate::tls::certificate_identities(cert);
                    }
                    let (reader, writer) = tokio::io::split(tls);
                    (
                        Arc::new(ClientShared::new_stream(
                            id,
                            addr,
                            max_pending,
                            Box::new(writer),
                        )),
                        Box::new(reader),
                    )
                }
                Ok(Err(e)) => {
                    debug!(cid = id, %addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(cid = id, %addr, "TLS handshake timed out");
                    return;
                }
            }
        }
    };

    serve_session(server, shared, reader, nonce, tls_identities).await;
}

/// Serves a client over any byte stream (a WebSocket, bridged to bytes).
pub(crate) async fn serve_stream(
    server: Arc<ServerShared>,
    reader: StreamReader,
    writer: StreamWriter,
    addr: SocketAddr,
) {
    let id = server.next_client_id();
    let nonce = server.new_nonce();
    let mut info = BytesMut::new();
    tern_protocol::encode_info(
        &mut info,
        &server.client_info_with_nonce(id, addr, nonce.clone()),
    );
    let shared = Arc::new(ClientShared::new_stream(
        id,
        addr,
        server.opts.max_pending,
        writer,
    ));
    shared.enqueue_raw(&info);
    serve_session(server, shared, reader, nonce, Vec::new()).await;
}

/// Registers a connection and runs its reader and writer until it ends.
async fn serve_session(
    server: Arc<ServerShared>,
    shared: Arc<ClientShared>,
    reader: StreamReader,
    nonce: String,
    tls_identities: Vec<String>,
) {
    let id = shared.id;
    let addr = shared.addr;
    if !server.register(&shared) {
        shared.enqueue_raw(format!("-ERR '{}'\r\n", err::MAX_CONNECTIONS).as_bytes());
        shared.close(CloseReason::MaxConnectionsExceeded);
        write_loop(shared.clone(), server.clone()).await;
        debug!(cid = id, %addr, "refused connection: maximum connections exceeded");
        return;
    }
    debug!(cid = id, %addr, "client connection created");

    let writer_task = tokio::spawn(write_loop(shared.clone(), server.clone()));
    shared.flush();

    let account = server.global_account();
    let mut session = Session {
        server: server.clone(),
        shared: shared.clone(),
        router: Router::for_publisher(server.clone(), account.clone()),
        account,
        nonce,
        tls_identities,
        permissions: None,
        expires_at: None,
        connected: false,
        options: serde_json::Map::new(),
        verbose: true,
        pedantic: true,
        echo: true,
        headers: false,
        no_responders: false,
        pings_out: 0,
        active_since_ping: false,
        out_msgs_at_ping: 0,
        rtt_ping_sent: None,
        batch_in_msgs: 0,
        batch_in_bytes: 0,
    };
    session.read_loop(reader).await;

    // Stop routing to this client before anything else.
    session.remove_all_subscriptions();
    shared.close(CloseReason::ClientClosed);
    // Give the writer a bounded time to flush a final -ERR, then cut it off.
    let mut writer_task = writer_task;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer_task)
        .await
        .is_err()
    {
        writer_task.abort();
    }
    server.unregister(&shared);
    let reason = shared.close_reason().unwrap_or(CloseReason::ClientClosed);
    debug!(cid = id, %addr, reason = reason.as_str(), "client connection closed");
}

impl Session {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut reader: R) {
        let opts = &self.server.opts;
        let mut parser = Parser::new(ParserLimits {
            max_control_line: opts.max_control_line,
            max_payload: opts.max_payload,
        });
        // Idle connections keep a small buffer; busy ones grow it (see below).
        let mut buf = BytesMut::with_capacity(READ_BUFFER_START);
        let mut read_size = READ_BUFFER_START;
        let ping_interval = opts.ping_interval;
        let ping = tokio::time::sleep(ping_interval);
        tokio::pin!(ping);
        let mut rtt_ping_armed = false;
        let auth_required = opts.auth.required();
        let auth_deadline = tokio::time::sleep(opts.auth_timeout);
        tokio::pin!(auth_deadline);
        // When the user's JWT expires, set at CONNECT.
        let expiry = tokio::time::sleep(Duration::from_secs(u64::from(u32::MAX)));
        tokio::pin!(expiry);
        let mut expiry_armed = false;
        let mut shutdown = self.server.shutdown_signal();

        loop {
            // Room for a pending payload in one piece, and never a tiny read.
            let needed = parser.bytes_needed().unwrap_or(0).saturating_sub(buf.len());
            if buf.capacity() - buf.len() < needed.max(read_size / 2) {
                buf.reserve(needed.max(read_size));
            }
            tokio::select! {
                biased;
                _ = self.shared.close_requested.notified() => return,
                _ = shutdown.changed() => {
                    self.shared.close(CloseReason::ServerShutdown);
                    return;
                }
                read = reader.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => {
                            self.shared.close(CloseReason::ClientClosed);
                            return;
                        }
                        Ok(n) => {
                            // A read that filled the buffer means more is waiting:
                            // read bigger next time, up to READ_BUFFER_MAX.
                            if n >= read_size / 2 {
                                read_size = (read_size * 2).min(READ_BUFFER_MAX);
                            }
                            self.active_since_ping = true;
                            let keep_going = self.process(&mut parser, &mut buf);
                            self.end_batch();
                            if !keep_going {
                                return;
                            }
                            self.router.wait_for_stalled().await;
                            if let Some(at) = self.expires_at.take() {
                                let now = SystemTime::now()
                                    .duration_since(SystemTime::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_secs() as i64);
                                let left = Duration::from_secs(u64::try_from(at - now).unwrap_or(0));
                                expiry.as_mut().reset(tokio::time::Instant::now() + left);
                                expiry_armed = true;
                            }
                            if self.connected && !rtt_ping_armed {
                                // nats-server pings soon after CONNECT to measure the round trip.
                                rtt_ping_armed = true;
                                let first = ping_interval.min(FIRST_PING_DELAY);
                                let jitter = first.mul_f64(fastrand::f64() * 0.2);
                                ping.as_mut().reset(tokio::time::Instant::now() + first + jitter);
                                self.rtt_ping_sent = Some(Instant::now());
                                self.active_since_ping = false;
                            }
                        }
                        Err(e) => {
                            trace!(cid = self.shared.id, error = %e, "read error");
                            self.shared.close(CloseReason::ReadError);
                            return;
                        }
                    }
                }
                _ = &mut ping => {
                    if !self.on_ping_timer() {
                        return;
                    }
                    ping.as_mut().reset(tokio::time::Instant::now() + ping_interval);
                }
                _ = &mut auth_deadline, if auth_required && !self.connected => {
                    self.send_err(err::AUTHENTICATION_TIMEOUT);
                    self.shared.close(CloseReason::AuthenticationTimeout);
                    self.shared.flush();
                    return;
                }
                _ = &mut expiry, if expiry_armed => {
                    self.send_err(err::AUTHENTICATION_EXPIRED);
                    self.shared.close(CloseReason::AuthenticationExpired);
                    self.shared.flush();
                    return;
                }
            }
        }
    }

    /// Handles every complete operation in `buf` and drops the bytes they
    /// span; false when the connection must end.
    fn process(&mut self, parser: &mut Parser, buf: &mut BytesMut) -> bool {
        let mut consumed = 0;
        let keep_going = loop {
            match parser.parse(&buf[consumed..]) {
                Ok(Parsed::Op(op, len)) => {
                    consumed += len;
                    if !self.handle(op) {
                        break false;
                    }
                }
                Ok(Parsed::Skip(len)) => consumed += len,
                Ok(Parsed::Incomplete) => break true,
                Err(e) => {
                    debug!(cid = self.shared.id, error = %e, "protocol error");
                    if let Some(text) = e.err_text() {
                        self.send_err(text);
                    }
                    let reason = match e {
                        tern_protocol::ProtocolError::MaxPayload => CloseReason::MaxPayloadExceeded,
                        tern_protocol::ProtocolError::MaxControlLine => {
                            CloseReason::MaxControlLineExceeded
                        }
                        _ => CloseReason::ProtocolViolation,
                    };
                    self.shared.close(reason);
                    break false;
                }
            }
        };
        buf.advance(consumed);
        keep_going
    }

    fn end_batch(&mut self) {
        self.router.finish_batch();
        self.commit_in_counters();
        self.shared
            .last_activity_ms
            .store(now_ms(), Ordering::Relaxed);
    }

    /// Adds the batch's inbound message counts to the connection's and the
    /// server's.
    fn commit_in_counters(&mut self) {
        if self.batch_in_msgs > 0 {
            let stats = &self.server.stats;
            self.shared
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            self.shared
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            stats
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            stats
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            self.batch_in_msgs = 0;
            self.batch_in_bytes = 0;
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.shared.enqueue_raw(bytes);
        self.router.note(&self.shared);
    }

    fn send_err(&mut self, text: &str) {
        let mut out = BytesMut::with_capacity(text.len() + 9);
        tern_protocol::encode_err(&mut out, text);
        self.send_raw(&out);
    }

    fn ok(&mut self) {
        if self.verbose {
            self.send_raw(tern_protocol::OK);
        }
    }

    /// Sends a ping or declares the connection stale; false when it must end.
    fn on_ping_timer(&mut self) -> bool {
        let (out_msgs, _) = self.shared.out_counts();
        let active = self.active_since_ping || out_msgs != self.out_msgs_at_ping;
        self.active_since_ping = false;
        self.out_msgs_at_ping = out_msgs;
        // Traffic in either direction shows the client is alive: nats-server
        // postpones its ping then, except for the first, round-trip ping.
        let rtt_ping = self
            .rtt_ping_sent
            .is_some_and(|_| self.shared.meta.lock().rtt.is_none());
        if active && !rtt_ping {
            return true;
        }
        if self.pings_out >= self.server.opts.max_pings_out {
            self.send_err(err::STALE_CONNECTION);
            self.shared.close(CloseReason::StaleConnection);
            self.router.flush();
            return false;
        }
        if rtt_ping {
            self.rtt_ping_sent = Some(Instant::now());
        }
        self.pings_out += 1;
        self.send_raw(tern_protocol::PING);
        self.router.flush();
        true
    }

    /// Handles one operation; false when the connection must end.
    fn handle(&mut self, op: ClientOp<'_>) -> bool {
        match &op {
            // Credentials ride in CONNECT: never trace its body.
            ClientOp::Connect(_) => trace!(cid = self.shared.id, "<<- CONNECT"),
            other => trace!(cid = self.shared.id, "<<- {other:?}"),
        }
        if !self.connected
            && !matches!(op, ClientOp::Connect(_))
            && self.server.opts.auth.required()
        {
            self.send_err(err::AUTHORIZATION_VIOLATION);
            self.shared.close(CloseReason::AuthenticationViolation);
            return false;
        }
        match op {
            ClientOp::Connect(json) => return self.on_connect(json),
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => self.on_pub(subject, reply, None, payload),
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            } => {
                if !self.headers {
                    // nats-server closes without a word when headers were not negotiated.
                    self.shared.close(CloseReason::ProtocolViolation);
                    return false;
                }
                // An empty header block is a plain message.
                let headers = Some(headers).filter(|h| !h.is_empty());
                self.on_pub(subject, reply, headers, payload)
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => self.on_sub(subject, queue, sid),
            ClientOp::Unsub { sid, max } => self.on_unsub(sid, max),
            ClientOp::Ping => {
                // Whoever waits for this PONG may read the counters next:
                // they must include every message before the PING.
                self.commit_in_counters();
                self.send_raw(tern_protocol::PONG)
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.rtt_ping_sent {
                    let mut meta = self.shared.meta.lock();
                    if meta.rtt.is_none() {
                        meta.rtt = Some(sent.elapsed());
                    }
                }
            }
            ClientOp::Info(_) => {}
        }
        true
    }

    fn on_connect(&mut self, json: &[u8]) -> bool {
        // Malformed JSON closes the connection without a word, as nats-server does.
        let Ok(serde_json::Value::Object(fields)) =
            serde_json::from_slice::<serde_json::Value>(json)
        else {
            debug!(cid = self.shared.id, "invalid CONNECT json");
            self.shared.close(CloseReason::ProtocolViolation);
            return false;
        };
        self.options.extend(fields);
        let mut merged = self.options.clone();
        for (key, default) in [("verbose", true), ("pedantic", true)] {
            merged
                .entry(key)
                .or_insert(serde_json::Value::Bool(default));
        }
        let info: ConnectInfo = match serde_json::from_value(serde_json::Value::Object(merged)) {
            Ok(info) => info,
            Err(e) => {
                debug!(cid = self.shared.id, error = %e, "invalid CONNECT fields");
                self.shared.close(CloseReason::ProtocolViolation);
                return false;
            }
        };
        match self
            .server
            .authenticate(&info, &self.nonce, &self.tls_identities)
        {
            Ok(authenticated) => {
                if authenticated.account != self.account.name {
                    // The user's account is its subject space from now on.
                    // Anything subscribed before (possible only without
                    // authentication) stays where it was made.
                    self.account = self.server.account(&authenticated.account);
                    self.router = Router::for_publisher(self.server.clone(), self.account.clone());
                }
                *self.shared.account_name.lock() = authenticated.account.clone();
                self.expires_at = authenticated.expires_at;
                let responses = authenticated
                    .permissions
                    .as_ref()
                    .and_then(|p| p.allow_responses);
                *self.shared.responses.lock() = responses.map(tern_auth::ResponseTracker::new);
                self.shared
                    .tracks_responses
                    .store(responses.is_some(), Ordering::Relaxed);
                self.permissions = authenticated.permissions.map(Arc::new);
            }
            Err(e) => {
                // The reason goes to the debug log only; it never holds secrets.
                debug!(cid = self.shared.id, error = %e, "authentication failed");
                self.send_err(err::AUTHORIZATION_VIOLATION);
                self.shared.close(CloseReason::AuthenticationViolation);
                return false;
            }
        }
        if !(0..=1).contains(&info.protocol) {
            self.send_err(err::INVALID_CLIENT_PROTOCOL);
            self.shared.close(CloseReason::ProtocolViolation);
            return false;
        }
        if info.no_responders && !info.headers {
            self.send_err(err::NO_RESPONDERS_REQUIRES_HEADERS);
            self.shared.close(CloseReason::ProtocolViolation);
            return false;
        }
        self.verbose = info.verbose;
        self.pedantic = info.pedantic;
        self.echo = info.echo;
        self.headers = info.headers;
        self.no_responders = info.no_responders;
        self.shared.headers.store(info.headers, Ordering::Relaxed);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = info.name.unwrap_or_default();
            meta.lang = info.lang.unwrap_or_default();
            meta.version = info.version.unwrap_or_default();
            meta.user = info.user.unwrap_or_default();
        }
        self.connected = true;
        self.ok();
        true
    }

    fn on_pub(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        if self.pedantic && !subject::is_valid_publish_subject(subject) {
            self.send_err(err::INVALID_PUBLISH_SUBJECT);
            self.ok();
            return;
        }
        if let Some(permissions) = &self.permissions {
            let subject = String::from_utf8_lossy(subject);
            let allowed = permissions.can_publish(&subject)
                || self
                    .shared
                    .responses
                    .lock()
                    .as_mut()
                    .is_some_and(|tracker| tracker.try_respond(&subject, Instant::now()));
            if !allowed {
                let text = format!("Permissions Violation for Publish to \"{subject}\"");
                debug!(cid = self.shared.id, "{text}");
                self.send_err(&text);
                return;
            }
        }
        self.batch_in_msgs += 1;
        self.batch_in_bytes += (payload.len() + headers.map_or(0, |h| h.len())) as u64;
        self.ok();
        let matched = self.router.route(
            Some((&self.shared, self.echo)),
            subject,
            reply,
            headers,
            payload,
        );
        if !matched && self.no_responders {
            if let Some(reply) = reply {
                self.send_no_responders(reply);
            }
        }
    }

    /// Tells a requester nobody is listening: an empty `HMSG` with status 503
    /// on its own subscription for the reply subject.
    fn send_no_responders(&mut self, reply: &[u8]) {
        let Some(result) = self.router.lookup(reply) else {
            return;
        };
        // Only the requester's own plain subscription gets it, as in nats-server.
        let own = result
            .plain
            .iter()
            .find(|s| Arc::ptr_eq(&s.client, &self.shared))
            .cloned();
        if let Some(sub) = own {
            let headers = Headers::status(503, None).encode();
            let queued = self
                .shared
                .enqueue_msg(reply, &sub.sid, None, Some(&headers), b"");
            if matches!(queued, Enqueued::Queued(_)) {
                self.router.note(&self.shared);
            }
        }
    }

    fn on_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        let subject = match String::from_utf8(subject.to_vec()) {
            Ok(s) if subject::is_valid_subscription_subject(s.as_bytes()) => s,
            _ => {
                self.send_err(err::INVALID_SUBJECT);
                return;
            }
        };
        // nats-server does not check queue names beyond the protocol's syntax.
        let queue = queue.map(|q| String::from_utf8_lossy(q).into_owned());
        let filter = self
            .permissions
            .as_ref()
            .filter(|p| p.needs_delivery_filter(&subject))
            .cloned();
        if let Some(permissions) = &self.permissions {
            if !permissions.can_subscribe(&subject, queue.as_deref()) {
                let text = match &queue {
                    Some(q) => format!("Permissions Violation for Subscription to \"{subject}\" using queue \"{q}\""),
                    None => format!("Permissions Violation for Subscription to \"{subject}\""),
                };
                debug!(cid = self.shared.id, "{text}");
                self.send_err(&text);
                return;
            }
        }
        let max_subs = self.server.opts.max_subscriptions;
        {
            let subs = self.shared.subs.lock();
            if max_subs > 0 && subs.len() >= max_subs {
                drop(subs);
                self.send_err(err::MAX_SUBSCRIPTIONS);
                return;
            }
            // A repeated sid is ignored, as nats-server does.
            if subs.iter().any(|s| s.sid == *sid) {
                drop(subs);
                self.ok();
                return;
            }
        }
        let sub = SubRef(Arc::new(Subscription {
            client: self.shared.clone(),
            subject,
            queue,
            sid: Bytes::copy_from_slice(sid),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            filter,
        }));
        if self.account.subscribe(&sub).is_err() {
            self.send_err(err::INVALID_SUBJECT);
            return;
        }
        self.shared.subs.lock().push(sub);
        self.ok();
    }

    fn on_unsub(&mut self, sid: &[u8], max: Option<u64>) {
        let sub = self
            .shared
            .subs
            .lock()
            .iter()
            .find(|s| s.sid == *sid)
            .cloned();
        if let Some(sub) = sub {
            match max {
                Some(max) if max > sub.delivered.load(Ordering::Acquire) => {
                    sub.max.store(max, Ordering::Release);
                }
                _ => self.server.remove_subscription(&self.account, &sub),
            }
        }
        self.ok();
    }

    fn remove_all_subscriptions(&mut self) {
        let subs = std::mem::take(&mut *self.shared.subs.lock());
        for sub in &subs {
            self.account.unsubscribe(sub);
        }
    }
}

/// The round-trip ping after `CONNECT` comes this soon (plus jitter).
const FIRST_PING_DELAY: Duration = Duration::from_secs(2);
/// Read buffer of a new (or idle) connection.
const READ_BUFFER_START: usize = 2 * 1024;
/// Largest read; reached after reads keep filling the buffer.
const READ_BUFFER_MAX: usize = 64 * 1024;
/// Batches up to this size may be written inline by the publisher's reader;
/// larger ones go to the writer task, so one reader never spends long on
/// another connection's socket.
const INLINE_WRITE_MAX: usize = 64 * 1024;
/// A writer's spare buffer larger than this is freed after a burst.
const WRITE_BUFFER_KEEP: usize = 1024 * 1024;

/// Drains the outbound buffer with as few writes as possible until the
/// connection closes.
async fn write_loop(shared: Arc<ClientShared>, server: Arc<ServerShared>) {
    let socket = shared.socket.clone();
    let tls = shared.tls.clone();
    if socket.is_none() && tls.is_none() {
        return;
    }
    let deadline = server.opts.write_deadline;
    let mut data = BytesMut::new();
    'outer: loop {
        loop {
            let closing;
            {
                let mut out = shared.out.lock();
                closing = out.closed;
                if let Some(inflight) = out.inflight.take() {
                    // An inline flush left this; its writing flag is ours now.
                    data = inflight;
                } else if out.writing {
                    // An inline flush is writing; it hands over or finishes.
                    break;
                } else if !out.buf.is_empty() {
                    std::mem::swap(&mut out.buf, &mut data);
                    out.writing = true;
                } else if closing {
                    break 'outer;
                } else {
                    break;
                }
            }
            let result = tokio::time::timeout(deadline, async {
                match (&socket, &tls) {
                    (Some(socket), _) => write_all(socket, &data).await,
                    (None, Some(tls)) => {
                        let mut writer = tls.lock().await;
                        writer.write_all(&data).await?;
                        writer.flush().await
                    }
                    (None, None) => Ok(()),
                }
            })
            .await;
            shared.out.lock().writing = false;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    trace!(cid = shared.id, error = %e, "write error");
                    shared.close(CloseReason::WriteError);
                    break 'outer;
                }
                Err(_) => {
                    server.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        cid = shared.id,
                        addr = %shared.addr,
                        write_deadline = ?deadline,
                        pending = data.len(),
                        "slow consumer detected: write deadline exceeded"
                    );
                    shared.close(CloseReason::SlowConsumerWriteDeadline);
                    break 'outer;
                }
            }
            shared
                .bytes_written
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            shared.drained.notify_waiters();
            // Keep a big buffer while traffic is big: reallocating multi-MiB
            // buffers costs page faults on every burst. Give the memory back
            // once writes are small again.
            if data.capacity() > WRITE_BUFFER_KEEP && data.len() < data.capacity() / 16 {
                data = BytesMut::new();
            } else {
                data.clear();
            }
        }
        shared.write_ready.notified().await;
    }
    // Other connections may hold this one (in match caches) for a while, so
    // the socket is closed here, not when the last reference goes.
    if let Some(socket) = &socket {
        let stream: &TcpStream = socket.as_ref().as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
    if let Some(tls) = &tls {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            tls.lock().await.shutdown().await
        })
        .await;
    }
}

/// Writes all of `data` to a shared write half.
async fn write_all(socket: &OwnedWriteHalf, data: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < data.len() {
        socket.writable().await?;
        match socket.try_write(&data[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
