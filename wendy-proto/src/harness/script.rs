//! Helpers that drive one [`Node`] by hand, for tests that script a peer's every frame.
//!
//! The [`Harness`](super::Harness) moves frames between whole nodes; these helpers are for a
//! test that *is* the other side: it feeds the node hand-made messages (well-formed or
//! hostile) and inspects exactly what the node answers. They speak the plaintext handshake,
//! so the node must run with [`Config::insecure_plaintext`](crate::Config::insecure_plaintext)
//! (the encrypted transport has tests of its own, in `tests/secure.rs`).
//!
//! ```
//! use wendy_proto::harness::script::{self, closed, errors};
//! use wendy_proto::wire::Message;
//! use wendy_proto::{Config, Instant, Node, NodeError, NodeId, NodeInfo};
//!
//! let now = Instant::from_secs(1);
//! let me = Config::with_trusted_id(NodeId::from_u128(1 << 127), script::addr(1, 1)).insecure_plaintext();
//! let mut node = Node::new(me, now).unwrap();
//! // A peer completes the handshake, then sends a second Hello: a protocol error.
//! let peer = NodeInfo::new(NodeId::from_u128(5), script::addr(2, 2));
//! let conn = script::authed(&mut node, now, &peer);
//! let outs = script::send(&mut node, now, conn, &script::hello(&peer));
//! assert!(closed(&outs, conn));
//! assert!(matches!(errors(&outs)[..], [NodeError::Protocol { .. }]));
//! ```

use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::node::Node;
use crate::output::{ConnId, Event, NodeError, Output, RejectReason};
use crate::time::Instant;
use crate::wire::{self, Message, NONCE_LEN};

/// `10.0.a.b:7000`: an address for a node or peer of a scripted test.
pub fn addr(a: u8, b: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, a, b], 7000))
}

/// A node description: id `id` at [`addr`]`(a, b)`.
pub fn info(id: u128, a: u8, b: u8) -> NodeInfo {
    NodeInfo::new(NodeId::from_u128(id), addr(a, b))
}

/// Every output the node has queued, in order; then checks the node's invariants.
///
/// # Panics
/// If [`Node::check_invariants`] reports a broken invariant.
pub fn drain(node: &mut Node) -> Vec<Output> {
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    if let Err(e) = node.check_invariants() {
        panic!("invariant broken after {outs:?}: {e}");
    }
    outs
}

/// Feeds `msg`, encoded, to the node on `conn`; returns what the node answers ([`drain`]).
pub fn send(node: &mut Node, now: Instant, conn: ConnId, msg: &Message) -> Vec<Output> {
    node.handle_data(now, conn, &wire::encode(msg));
    drain(node)
}

/// A `Hello` claiming to be `who` (fixed nonce).
pub fn hello(who: &NodeInfo) -> Message {
    Message::Hello { info: who.clone(), nonce: [3; NONCE_LEN] }
}

/// A peer dials the node from `who`'s address and authenticates as `who` (`Hello`, then an
/// empty `Auth`, which a node without credentials accepts). Returns the node's name for the
/// connection.
///
/// # Panics
/// If the node closes the connection during the handshake.
pub fn authed(node: &mut Node, now: Instant, who: &NodeInfo) -> ConnId {
    let conn = node.handle_accepted(now, who.global);
    let mut outs = send(node, now, conn, &hello(who));
    outs.extend(send(node, now, conn, &Message::Auth { proof: Vec::new(), probe: None }));
    assert!(!closed(&outs, conn), "handshake as {} failed: {outs:?}", who.id);
    conn
}

/// The frames sent on `conn`, in order.
pub fn transmits(outs: &[Output], conn: ConnId) -> Vec<Bytes> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit { conn: c, data } if *c == conn => Some(data.clone()),
            _ => None,
        })
        .collect()
}

/// The messages sent on `conn`, decoded, in order.
///
/// # Panics
/// If the node sent a frame that does not decode.
pub fn messages(outs: &[Output], conn: ConnId) -> Vec<Message> {
    transmits(outs, conn)
        .into_iter()
        .map(|f| wire::decode_frame(f, usize::MAX).unwrap_or_else(|e| panic!("the node sent a bad frame: {e}")))
        .collect()
}

/// True if the node asked the driver to close `conn`.
pub fn closed(outs: &[Output], conn: ConnId) -> bool {
    closes(outs).contains(&conn)
}

/// The connections the node asked the driver to close, in order.
pub fn closes(outs: &[Output]) -> Vec<ConnId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Close { conn } => Some(*conn),
            _ => None,
        })
        .collect()
}

/// The connections the node asked the driver to dial, in order.
pub fn connects(outs: &[Output]) -> Vec<ConnId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

/// The errors the node reported ([`Event::Error`]), in order.
pub fn errors(outs: &[Output]) -> Vec<NodeError> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Error(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Why the node refused peers' handshakes ([`Event::PeerRejected`]), in order.
pub fn rejections(outs: &[Output]) -> Vec<RejectReason> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(Event::PeerRejected { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Every id in the node's leaf set, routing table and neighbourhood set (with repeats).
pub fn table_members(node: &Node) -> Vec<NodeId> {
    let mut v = node.leaf_set().members();
    v.extend(node.routing_table().iter().map(|c| c.id));
    v.extend(node.neighbourhood().iter().map(|e| e.1));
    v
}

/// What [`handshake`] saw.
#[derive(Debug)]
pub struct Handshake {
    /// The dialling node's name for the connection.
    pub conn_a: ConnId,
    /// The accepting node's name for it.
    pub conn_b: ConnId,
    /// Every frame the dialling node sent on it.
    pub a_frames: Vec<Bytes>,
    /// Every output of the accepting node.
    pub b_outputs: Vec<Output>,
}

/// Connects two real nodes by hand: `a` must just have asked to dial (`Output::Connect`
/// queued, e.g. after `join` or `send_to`); `b` accepts, and the handshake's frames are carried
/// both ways at `now` until `a` has sent its last handshake message.
///
/// # Panics
/// If `a` has no dial queued.
pub fn handshake(a: &mut Node, b: &mut Node, now: Instant) -> Handshake {
    let conn_a = *connects(&drain(a)).first().expect("a dials");
    let conn_b = b.handle_accepted(now, a.info().local);
    a.handle_connected(now, conn_a);
    let mut a_frames = transmits(&drain(a), conn_a);
    for f in &a_frames {
        b.handle_data(now, conn_b, f);
    }
    let mut b_outputs = drain(b);
    for f in transmits(&b_outputs, conn_b) {
        a.handle_data(now, conn_a, &f);
    }
    let more = transmits(&drain(a), conn_a);
    for f in &more {
        b.handle_data(now, conn_b, f);
    }
    b_outputs.extend(drain(b));
    a_frames.extend(more);
    Handshake { conn_a, conn_b, a_frames, b_outputs }
}
