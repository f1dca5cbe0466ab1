//! What a node tells others about itself: id, addresses and region.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Longest region name accepted from the network, in bytes.
pub const MAX_REGION_LEN: usize = 64;

/// A node's identity and how to reach it.
///
/// Nodes in the same region talk over `local` addresses; nodes in different regions over
/// `global` ones, and see each other as `region_factor` times farther away (the Go wendy's
/// regions, meant for cloud providers where traffic inside a region is cheap).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Address reachable by nodes of the same region.
    pub local: SocketAddr,
    /// Address reachable by every node.
    pub global: SocketAddr,
    /// Region name; empty means "no region" (all such nodes share it).
    pub region: String,
}

impl NodeInfo {
    /// A node reachable at `addr` both locally and globally, with no region.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        NodeInfo { id, local: addr, global: addr, region: String::new() }
    }

    /// The address a node in `from_region` should use to reach this node.
    pub fn addr_from(&self, from_region: &str) -> SocketAddr {
        if self.region == from_region {
            self.local
        } else {
            self.global
        }
    }

    /// True if the info could have come from a well-behaved peer (bounded region name).
    pub fn is_valid(&self) -> bool {
        self.region.len() <= MAX_REGION_LEN
    }
}
