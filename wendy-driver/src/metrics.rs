//! A snapshot of what a node is doing, for monitoring (the `wendy` command serves it as
//! Prometheus text).

use wendy_proto::store::StoreStats;
use wendy_proto::Stats;

/// What a node is doing, at one moment (see `NodeHandle::metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The node has joined (or started a ring of its own) and routes.
    pub ready: bool,
    /// Members of its leaf set.
    pub leaf_set_size: usize,
    /// Entries of its routing table.
    pub routing_table_size: usize,
    /// Connections open or being set up.
    pub connections: usize,
    /// Messages waiting for a connection to a peer or for room in its window (or for the join
    /// to finish).
    pub pending_messages: usize,
    /// Bytes waiting to be written to sockets.
    pub queued_bytes: usize,
    /// Tasks of the node still running (accept loop, dials, connection writers).
    pub tasks: usize,
    /// Events dropped because the application did not read them.
    pub events_dropped: u64,
    /// The protocol's counters: delivered, forwarded, rejected peers, decode errors, ...
    /// (`delivered` counts the storage layer's messages too: see `store`).
    pub stats: Stats,
    /// The storage layer's counters, if the node runs one.
    pub store: Option<StoreStats>,
}
