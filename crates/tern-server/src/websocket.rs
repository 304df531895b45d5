//! NATS over WebSocket: each binary or text frame carries protocol bytes.
//! A connection is bridged to a byte stream and served like any other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{Limits, Message, ServerBuilder};
use tracing::{debug, error};

use crate::server::ServerShared;

/// Bytes buffered between a WebSocket and the protocol session, each way.
const BRIDGE_BUFFER: usize = 64 * 1024;
/// Time a client has to complete the HTTP upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The smallest cap on one frame's size; see `serve`.
const MIN_FRAME_LIMIT: usize = 8 * 1024 * 1024;
/// Time a peer has to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts WebSocket clients until the task is aborted.
pub(crate) async fn accept_loop(server: Arc<ServerShared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                match server.ws_tls.read().clone() {
                    None => {
                        tokio::spawn(serve(server.clone(), stream, addr));
                    }
                    Some(acceptor) => {
                        tokio::spawn(serve_tls(server.clone(), acceptor, stream, addr));
                    }
                }
            }
            Err(e) => {
                error!(error = %e, "error accepting websocket connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `wss://`: the TLS handshake first (bounded by `tls.timeout`), then the
/// WebSocket upgrade inside it.
async fn serve_tls(
    server: Arc<ServerShared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
) {
    let timeout = server
        .opts
        .websocket
        .as_ref()
        .and_then(|w| w.tls.as_ref())
        .map_or(Duration::from_secs(2), |t| t.timeout);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve(server, tls, addr).await,
        Ok(Err(e)) => debug!(%addr, error = %e, "websocket tls handshake failed"),
        Err(_) => debug!(%addr, "websocket tls handshake timed out"),
    }
}

async fn serve<S>(server: Arc<ServerShared>, stream: S, addr: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A frame is buffered whole, so its size is capped; clients batch several
    // messages into one frame, so the cap leaves room for a few maximal ones.
    // A bigger frame is refused from its header, before it is buffered.
    let max_frame = MIN_FRAME_LIMIT
        .max(2 * (server.opts.max_payload + server.opts.max_control_line) + BRIDGE_BUFFER);
    let builder = ServerBuilder::new().limits(Limits::default().max_payload_len(Some(max_frame)));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.accept(stream)).await {
        Ok(Ok((_request, ws))) => ws,
        Ok(Err(e)) => {
            debug!(%addr, error = %e, "websocket handshake failed");
            return;
        }
        Err(_) => {
            debug!(%addr, "websocket handshake timed out");
            return;
        }
    };
    let (session_side, bridge_side) = tokio::io::duplex(BRIDGE_BUFFER);
    let (mut bridge_reader, mut bridge_writer) = tokio::io::split(bridge_side);
    let (mut ws_sink, mut ws_stream) = ws.split();
    // Frames in -> bytes to the session.
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = ws_stream.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_binary() || message.is_text())
                && bridge_writer.write_all(message.as_payload()).await.is_err()
            {
                break;
            }
        }
        let _ = bridge_writer.shutdown().await;
    });
    // Bytes from the session -> binary frames out.
    let outbound = tokio::spawn(async move {
        // Read straight into the buffer each frame takes over, with no copy.
        let mut buf = bytes::BytesMut::new();
        loop {
            buf.reserve(BRIDGE_BUFFER);
            match bridge_reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if ws_sink
                        .send(Message::binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // Closing waits for the peer's close frame; a peer that never sends
        // one does not get to hold the connection open.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws_sink.close()).await;
    });
    let (reader, writer) = tokio::io::split(session_side);
    crate::client::serve_stream(server, Box::new(reader), Box::new(writer), addr).await;
    inbound.abort();
    let _ = outbound.await;
}
