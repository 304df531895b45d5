//! The `Cluster` gRPC service every node serves on its cluster port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::pb::cluster_server::{Cluster, ClusterServer};
use crate::pb::{
    self, route_frame, GossipMessage, LeaveReply, LeaveRequest, RaftReply, RaftRequest, RouteFrame,
};
use crate::{LinkStats, NodeShared, MAX_GRPC_MESSAGE};

/// How long a dialing node has to send its hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest a forwarded batch waits for the sender's interest to arrive on
/// the other stream before it is delivered anyway.
const INTEREST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

struct Service {
    node: Arc<NodeShared>,
}

/// Serves the cluster service on `listener` until the task is aborted.
pub(crate) fn serve(
    node: Arc<NodeShared>,
    listener: tokio::net::TcpListener,
) -> Result<tokio::task::JoinHandle<()>, crate::ClusterError> {
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(5)));
    if let Some(tls) = &node.config.tls {
        // Mutual TLS: a peer without a certificate from our CA is refused
        // in the handshake, before any call.
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &tls.cert_pem,
                &tls.key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        builder = builder
            .tls_config(config)
            .map_err(|e| crate::ClusterError::Tls(e.to_string()))?;
    }
    let guard = node.clone();
    let service = ClusterServer::new(Service { node })
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    // Credentials are checked from the headers, before any request body is
    // read: a caller without them cannot make this node decode anything.
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        move |request: Request<()>| -> Result<Request<()>, Status> {
            match &guard.config.auth {
                Some(auth) if !credentials_match(&request, auth) => {
                    let peer = request
                        .remote_addr()
                        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
                    if guard.warn_once(format!("auth {peer}")) {
                        warn!(%peer, "refusing route: authorization violation");
                    }
                    Err(Status::unauthenticated("route authorization violation"))
                }
                _ => Ok(request),
            }
        },
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(tokio::spawn(async move {
        let result = builder
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            warn!(error = %e, "cluster listener stopped");
        }
    }))
}

impl Service {
    /// Refuses peers of another cluster. (Route credentials are checked by
    /// the interceptor in [`serve`], before any request body is read.)
    fn check_name(&self, peer: Option<SocketAddr>, cluster_name: &str) -> Result<(), Status> {
        if cluster_name == self.node.config.name {
            return Ok(());
        }
        let peer = peer.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        if self.node.warn_once(format!("name {peer}")) {
            warn!(
                %peer,
                ours = %self.node.config.name,
                theirs = %cluster_name,
                "refusing route: cluster name mismatch"
            );
        }
        Err(Status::failed_precondition(format!(
            "cluster name mismatch: this node is in cluster \"{}\", the peer is in \"{cluster_name}\"",
            self.node.config.name
        )))
    }
}

/// Whether a request carries the route credentials.
fn credentials_match<T>(request: &Request<T>, auth: &crate::RouteAuth) -> bool {
    let metadata = request.metadata();
    let user = metadata
        .get("tern-route-user")
        .and_then(|v| v.to_str().ok());
    let password = metadata
        .get("tern-route-password")
        .and_then(|v| v.to_str().ok());
    user.is_some_and(|u| constant_time_eq(u, &auth.user))
        & password.is_some_and(|p| constant_time_eq(p, &auth.password))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<RouteFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for Service {
    async fn gossip(
        &self,
        request: Request<GossipMessage>,
    ) -> Result<Response<GossipMessage>, Status> {
        self.check_name(request.remote_addr(), &request.get_ref().cluster_name)?;
        let ip = request.remote_addr().map(|a| a.ip());
        let message = request.into_inner();
        if message.members.len() > crate::membership::MAX_MEMBERS {
            return Err(Status::invalid_argument(
                "too many members in one gossip message",
            ));
        }
        let (changes, reply) = {
            let mut table = self.node.membership.lock();
            let changes = if message.from_node_id == self.node.config.node_id {
                Default::default()
            } else {
                table.merge(
                    message.members,
                    ip.map(|ip| (message.from_node_id.as_str(), ip)),
                )
            };
            let reply = GossipMessage {
                cluster_name: self.node.config.name.clone(),
                from_node_id: self.node.config.node_id.clone(),
                members: table.snapshot(),
            };
            (changes, reply)
        };
        self.node.apply(changes);
        Ok(Response::new(reply))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        self.check_name(request.remote_addr(), &request.get_ref().cluster_name)?;
        let leave = request.into_inner();
        let changes = self
            .node
            .membership
            .lock()
            .mark_left(&leave.node_id, leave.incarnation);
        self.node.apply(changes);
        Ok(Response::new(LeaveReply {}))
    }

    type RouteStream = FrameStream;

    async fn route(
        &self,
        request: Request<Streaming<RouteFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let remote = request.remote_addr();
        let mut frames = request.into_inner();
        // A peer that opens a route and says nothing does not get to hold
        // the stream.
        let first = tokio::time::timeout(HELLO_TIMEOUT, frames.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello on the route stream"))??;
        let hello = match first {
            Some(RouteFrame {
                kind: Some(route_frame::Kind::Hello(hello)),
            }) => hello,
            _ => return Err(Status::invalid_argument("a route stream starts with hello")),
        };
        self.check_name(remote, &hello.cluster_name)?;
        if hello.node_id == self.node.config.node_id {
            return Err(Status::invalid_argument("a node does not route to itself"));
        }
        debug!(peer = %hello.node_id, "inbound route stream");
        let stats = {
            let mut all = self.node.inbound_stats.lock();
            match all.get(&hello.node_id) {
                Some(stats) => stats.clone(),
                // Bounded like the member table; beyond it, not recorded.
                None if all.len() >= crate::membership::MAX_MEMBERS => {
                    Arc::new(LinkStats::default())
                }
                None => all
                    .entry(hello.node_id.clone())
                    .or_insert_with(|| Arc::new(LinkStats::default()))
                    .clone(),
            }
        };
        let mut sink = self.node.handler.inbound(&hello.node_id);
        let (snapshot, listener) = self.node.interest.subscribe();
        // Forwarded messages are delivered by their own task; when the
        // dialing node goes away, its interest listener goes too.
        let node = self.node.clone();
        let reader_listener = listener.clone();
        let peer_id = hello.node_id.clone();
        tokio::spawn(async move {
            loop {
                match frames.message().await {
                    Ok(Some(RouteFrame {
                        kind: Some(route_frame::Kind::Messages(batch)),
                    })) => {
                        stats
                            .in_msgs
                            .fetch_add(u64::from(batch.count), Ordering::Relaxed);
                        stats
                            .in_bytes
                            .fetch_add(batch.packed.len() as u64, Ordering::Relaxed);
                        // Interest comes on the other stream: hold the batch
                        // until what the sender announced before it is here.
                        if let Some(peer) = node.peer(&peer_id) {
                            peer.await_interest(batch.interest_version, INTEREST_WAIT)
                                .await;
                        }
                        sink.deliver(batch);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            node.interest.unsubscribe(&reader_listener);
        });
        let snapshot: Vec<Result<RouteFrame, Status>> = snapshot
            .into_iter()
            .map(|batch| {
                Ok(RouteFrame {
                    kind: Some(route_frame::Kind::Interest(batch)),
                })
            })
            .collect();
        let changes = futures::stream::unfold(listener, |listener| async move {
            let batch = listener.next().await?;
            let frame = RouteFrame {
                kind: Some(route_frame::Kind::Interest(batch)),
            };
            Some((Ok(frame), listener))
        });
        let stream = futures::stream::iter(snapshot).chain(changes);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        // Raft traffic has no cluster name of its own: it is only accepted
        // from members, which passed the name check in gossip (and the
        // interceptor checked the credentials).
        let request = request.into_inner();
        if self
            .node
            .membership
            .lock()
            .get(&request.from_node_id)
            .is_none()
        {
            return Err(Status::permission_denied(format!(
                "{} is not a member of this cluster",
                request.from_node_id
            )));
        }
        let Some(group) = self.node.raft.get(&request.group) else {
            return Err(Status::not_found(format!(
                "raft group {:?} is not hosted on this node",
                request.group
            )));
        };
        let payload = group
            .handle(&request.kind, &request.from_node_id, request.payload)
            .await
            .map_err(Status::internal)?;
        Ok(Response::new(pb::RaftReply { payload }))
    }
}

use futures::StreamExt;
