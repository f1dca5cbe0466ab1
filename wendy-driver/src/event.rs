//! What the node tells the application.

use wendy_proto::{Delivery, Event, NodeId};

/// What the node tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A message arrived at its destination: this node.
    Deliver(Delivery),
    /// A routed message was passed on.
    Forwarded(Forwarded),
    /// A protocol event: joined, node joined or left, leaf set changed, heartbeat, peer
    /// rejected, or an error the node recovered from.
    Event(Event),
}

/// A routed message passed on to its next hop (the Go wendy's `OnForward`, after the fact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The message's key.
    pub key: NodeId,
    /// Its purpose.
    pub purpose: u8,
    /// The node that sent it first.
    pub origin: NodeId,
    /// The next hop.
    pub next: NodeId,
    /// Hops taken, this one included.
    pub hops: u8,
}
