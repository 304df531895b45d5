//! The raft transport: one gRPC method carries every raft RPC of every
//! group, named in the request, to the group's handler on the receiving
//! node. Consensus itself (openraft) registers its groups here; this module
//! only moves bytes.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::FastMap;

/// Receives the raft RPCs of one group.
pub trait RaftGroupHandler: Send + Sync + 'static {
    /// Handles one RPC of `kind` from `from_node_id`; returns the serialized
    /// answer or an error text for the caller.
    fn handle(
        &self,
        kind: &str,
        from_node_id: &str,
        payload: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send + '_>>;
}

/// The raft groups hosted on this node, by name.
#[derive(Default)]
pub struct RaftGroups {
    groups: RwLock<FastMap<String, Arc<dyn RaftGroupHandler>>>,
}

impl RaftGroups {
    /// Hosts `group`; replaces an earlier handler of the same name.
    pub fn register(&self, group: &str, handler: Arc<dyn RaftGroupHandler>) {
        self.groups.write().insert(group.to_owned(), handler);
    }

    /// Stops hosting `group`.
    pub fn unregister(&self, group: &str) {
        self.groups.write().remove(group);
    }

    pub(crate) fn get(&self, group: &str) -> Option<Arc<dyn RaftGroupHandler>> {
        self.groups.read().get(group).cloned()
    }
}
