#![recursion_limit = "256"]
//! The `tern-server` node: listeners, client connections, configuration,
//! monitoring and signals.
//!
//! This crate wires the sans-IO crates (`tern-protocol`, `tern-routing`) to
//! tokio sockets and stays thin: protocol rules live in `tern-protocol`,
//! subject matching in `tern-routing`. It is a library as well as a binary so
//! integration tests can run servers in-process on real sockets.

mod account;
mod client;
mod cluster;
pub mod config;
mod consumer;
mod imports;
mod jetstream;
pub mod logging;
mod monitor;
pub mod options;
mod router;
mod server;
pub mod signals;
mod timefmt;
mod tls;
mod transform;
mod websocket;

pub use options::ServerOptions;
pub use server::{Server, NATS_COMPAT_VERSION, VERSION};
