//! What the node asks of its driver and tells its application.

use core::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::wire::WireError;

/// A connection, named by the node. The driver maps it to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// One thing the node wants done or reported. Drain with [`Node::poll_output`](crate::Node::poll_output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a stream connection to `addr`; report [`handle_connected`](crate::Node::handle_connected)
    /// or [`handle_connect_failed`](crate::Node::handle_connect_failed) for `conn`.
    Connect {
        /// The connection's name.
        conn: ConnId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Write `data` on `conn`, in order after earlier transmits on it: one whole frame in
    /// plaintext mode; on an encrypted connection, the sealed records of every frame the node
    /// queued for it since the previous poll.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        data: Bytes,
    },
    /// Close `conn` after writing what was transmitted on it; do not report it closed.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A message reached its destination: this node.
    Deliver(Delivery),
    /// A routed message was passed on to `next`.
    Forwarded {
        /// The message's key.
        key: NodeId,
        /// The message's purpose.
        purpose: u8,
        /// The node that first sent it.
        origin: NodeId,
        /// The next hop.
        next: NodeId,
        /// Hops taken, including this one.
        hops: u8,
    },
    /// Something happened the application may want to know.
    Event(Event),
}

/// A delivered application message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The key it was routed towards (our own id for a direct message).
    pub key: NodeId,
    /// The application's purpose byte, 16..=255.
    pub purpose: u8,
    /// The node that sent it.
    pub origin: NodeId,
    /// Hops it took (0 if sent by ourselves to ourselves).
    pub hops: u8,
    /// True if it was sent straight to us rather than routed by key.
    pub direct: bool,
    /// True if this node is not (necessarily) the key's root: the forward hook consumed the
    /// message on its way ([`Verdict::Consume`]).
    pub intercepted: bool,
    /// The payload.
    pub payload: Bytes,
}

/// An event for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The join completed: the node now takes part in routing and is root for its keys.
    Joined,
    /// A node entered our state tables.
    NodeJoined(NodeInfo),
    /// A node left our state tables: it left gracefully or stopped answering.
    NodeLeft(NodeInfo),
    /// The leaf set changed (the common API's `update`): who entered it, in ring order, and
    /// who left it, since the last such event. Coalesced per input.
    LeafSetChanged {
        /// New members.
        added: Vec<NodeInfo>,
        /// Former members.
        removed: Vec<NodeId>,
    },
    /// A heartbeat (from our nearest clockwise leaf-set member) or a liveness probe arrived
    /// from a node.
    Heartbeat(NodeId),
    /// A peer failed the credentials handshake; it was not added to any table.
    PeerRejected {
        /// Where it connected from or was dialled at.
        addr: SocketAddr,
        /// The id it claimed.
        claimed: Option<NodeId>,
        /// Why it was rejected.
        reason: RejectReason,
    },
    /// The peer at `addr` refused our handshake and told us why (a wrong shared secret shows
    /// up here on the side that has it wrong, at once).
    RejectedByPeer {
        /// The address of the connection.
        addr: SocketAddr,
        /// The reason the peer gave.
        reason: RejectReason,
    },
    /// After [`Node::leave`](crate::Node::leave): the node holds nothing more to send. Once
    /// the driver has written every transmit it was given, it may close its sockets and stop.
    Drained,
    /// An error the node recovered from.
    Error(NodeError),
}

/// Why a peer was rejected during the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Its credential proof did not verify.
    BadCredentials,
    /// It claimed our own id.
    SelfId,
    /// It answered with another id than the node we dialled.
    WrongId,
    /// Its node id is not the one derived from the key it proved: it claims an id it does not
    /// own (or it runs in the trusting mode, [`Config::with_trusted_id`](crate::Config::with_trusted_id),
    /// and we do not).
    WrongKey,
    /// A reason code this version does not know (from a newer peer).
    Other(u8),
}

impl RejectReason {
    /// The reason's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            RejectReason::BadCredentials => 1,
            RejectReason::SelfId => 2,
            RejectReason::WrongId => 3,
            RejectReason::WrongKey => 4,
            RejectReason::Other(c) => c,
        }
    }

    /// The reason for a code received on the wire.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => RejectReason::BadCredentials,
            2 => RejectReason::SelfId,
            3 => RejectReason::WrongId,
            4 => RejectReason::WrongKey,
            c => RejectReason::Other(c),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::BadCredentials => {
                f.write_str("bad credentials (a different pre-shared key, or a key the cluster does not admit)")
            }
            RejectReason::SelfId => f.write_str("it claimed the other side's own id"),
            RejectReason::WrongId => f.write_str("it answered with another id than the one dialled"),
            RejectReason::WrongKey => f.write_str("its node id is not derived from the key it proved"),
            RejectReason::Other(c) => write!(f, "unknown reason {c}"),
        }
    }
}

/// Errors the node reports as events; none of them stops the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// Bytes on a connection could not be decoded; the connection was closed.
    Decode {
        /// The connection.
        conn: ConnId,
        /// What was wrong.
        error: WireError,
    },
    /// A peer sent a message that is not allowed at this point; the connection was closed.
    Protocol {
        /// The connection.
        conn: ConnId,
        /// What was wrong.
        what: &'static str,
    },
    /// A connection could not be set up in time or was refused.
    ConnectFailed {
        /// The address dialled.
        addr: SocketAddr,
    },
    /// The join did not complete after the configured attempts.
    JoinFailed {
        /// Attempts made.
        attempts: u32,
    },
    /// A message this node was forwarding was dropped because a queue was full (or no
    /// connection slot could be freed for its next hop). Reported here; its origin is sent
    /// [`NodeError::Undeliverable`].
    QueueFull {
        /// The peer it was queued for, if any.
        peer: Option<NodeId>,
    },
    /// A routed message exceeded the hop limit and was dropped. Reported here; its origin, if
    /// another node, is sent [`NodeError::Undeliverable`].
    HopLimit {
        /// Its key.
        key: NodeId,
    },
    /// A routed message could not be delivered: its next hops failed (it was rerouted
    /// `max_reroutes` times) or no route was left, a node on its way had no room to queue it
    /// or it exceeded the hop limit there, or the node left while holding it. Reported at the
    /// message's origin: the node that gives up routes the report back to it.
    Undeliverable {
        /// Its key.
        key: NodeId,
        /// Its purpose.
        purpose: u8,
    },
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Decode { conn, error } => write!(f, "{conn}: {error}"),
            NodeError::Protocol { conn, what } => write!(f, "{conn}: protocol violation: {what}"),
            NodeError::ConnectFailed { addr } => write!(f, "could not connect to {addr}"),
            NodeError::JoinFailed { attempts } => write!(f, "join failed after {attempts} attempts"),
            NodeError::QueueFull { peer: Some(p) } => write!(f, "queue for {p} full: message dropped"),
            NodeError::QueueFull { peer: None } => f.write_str("queue full: message dropped"),
            NodeError::HopLimit { key } => write!(f, "message towards {key} exceeded the hop limit"),
            NodeError::Undeliverable { key, purpose } => {
                write!(f, "message (purpose {purpose}) towards {key} could not be delivered: its next hops failed or had no room")
            }
        }
    }
}

impl std::error::Error for NodeError {}

/// Why an application command was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Purposes below 16 are reserved for wendy's own messages.
    ReservedPurpose(u8),
    /// The payload does not fit in a frame.
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// The queue towards the next hop is full; try again later.
    Backpressure,
    /// No node with this id is known.
    UnknownNode(NodeId),
    /// The node has left the ring.
    Left,
    /// The node is already joining or joined.
    AlreadyJoined,
    /// The bootstrap address is our own.
    SelfBootstrap,
    /// No bootstrap address was given.
    NoBootstrap,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::ReservedPurpose(p) => write!(f, "purpose {p} is reserved (use 16..=255)"),
            CommandError::PayloadTooLarge { len, max } => write!(f, "payload of {len} bytes exceeds {max}"),
            CommandError::Backpressure => f.write_str("queue towards the next hop is full"),
            CommandError::UnknownNode(id) => write!(f, "node {id} is not known"),
            CommandError::Left => f.write_str("the node has left the ring"),
            CommandError::AlreadyJoined => f.write_str("the node is already joining or joined"),
            CommandError::SelfBootstrap => f.write_str("cannot join through our own address"),
            CommandError::NoBootstrap => f.write_str("no bootstrap address to join through"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Where a direct message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A node we know by id.
    Node(NodeId),
    /// Whatever node listens at this address (the Go wendy's SendToIP).
    Addr(SocketAddr),
}

/// A routed message about to be forwarded, as shown to a [`ForwardHook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// The key (fixed: the next hop was chosen by it).
    pub key: NodeId,
    /// The purpose; the hook may change it (a value below 16 counts as a veto).
    pub purpose: u8,
    /// The node that sent it.
    pub origin: NodeId,
    /// Hops so far.
    pub hops: u8,
    /// The payload; the hook may replace it.
    pub payload: Bytes,
}

/// What a [`ForwardHook`] decides for a message about to be forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it to the next hop (with whatever purpose and payload the hook left).
    Forward,
    /// Drop it (a veto); it is counted in [`Stats::dropped`].
    Drop,
    /// This node handles it: it is not forwarded but delivered here, as an
    /// [`Output::Deliver`] with [`Delivery::intercepted`] set (a cache or a storage layer
    /// answering on the way).
    Consume,
}

impl From<bool> for Verdict {
    /// `true` forwards, `false` drops (the Go wendy's `OnForward` answer).
    fn from(forward: bool) -> Self {
        if forward {
            Verdict::Forward
        } else {
            Verdict::Drop
        }
    }
}

/// Decides synchronously what happens to a message this node is about to forward (the Go
/// wendy's `OnForward`, the common API's `forward`).
///
/// It runs inside the state machine, so it must not block or do I/O: look at the message,
/// perhaps rewrite its purpose or payload, and answer. A closure returning `bool` (forward or
/// drop) or a [`Verdict`] is a hook.
pub trait ForwardHook: Send {
    /// Forward, drop, or consume the message; `next` is the hop it would go to.
    fn on_forward(&mut self, msg: &mut Forwarding, next: &NodeInfo) -> Verdict;
}

impl<F, R> ForwardHook for F
where
    F: FnMut(&mut Forwarding, &NodeInfo) -> R + Send,
    R: Into<Verdict>,
{
    fn on_forward(&mut self, msg: &mut Forwarding, next: &NodeInfo) -> Verdict {
        self(msg, next).into()
    }
}

/// Counters kept by the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Frames received and decoded.
    pub frames_in: u64,
    /// Frames transmitted.
    pub frames_out: u64,
    /// Bytes transmitted (on encrypted connections: the sealed records, tags included).
    pub bytes_out: u64,
    /// Frames transmitted that were not application messages.
    pub control_frames_out: u64,
    /// Bytes of control frames transmitted (on encrypted connections, before sealing: a
    /// record is shared by many frames).
    pub control_bytes_out: u64,
    /// Connections closed for undecodable bytes.
    pub decode_errors: u64,
    /// Connections closed for protocol violations.
    pub protocol_errors: u64,
    /// Connections closed because a frame failed authentication (also counted in
    /// `decode_errors`): tampering, replays, or a peer without the session's keys.
    pub auth_failures: u64,
    /// Handshakes failed (bad credentials, wrong or own id).
    pub rejected_peers: u64,
    /// Handshakes the other side refused (it sent its reason).
    pub rejected_by_peers: u64,
    /// Connections that could not be set up.
    pub connect_failures: u64,
    /// Application messages the node took charge of and then dropped (a full queue, the hop
    /// limit, a veto, no route), each counted once. A command refused with an error is not
    /// counted: its caller still holds the message.
    pub dropped: u64,
    /// Acknowledgement frames sent (one per connection per input that received routed messages).
    pub acks_out: u64,
    /// Routed messages sent again through another hop (their hop failed or stayed silent).
    pub reroutes: u64,
    /// Of those, copies routed again because the hop that had received them was declared
    /// failed before it handed them on (custody: see `Message::Ack`).
    pub custody_reroutes: u64,
    /// Routed messages taken off a connection still being set up after
    /// `2 * ack_timeout_max` and routed again around its peer (counted in `reroutes` too).
    pub slow_setup_reroutes: u64,
    /// Routed messages given up on and reported [`NodeError::Undeliverable`].
    pub undeliverable: u64,
    /// Routed messages not delivered here because a copy of them (same origin and number)
    /// was delivered here within the last 30 s: the sender had rerouted it.
    pub duplicates_dropped: u64,
    /// Application messages delivered here.
    pub delivered: u64,
    /// Application messages forwarded.
    pub forwarded: u64,
    /// Join-protocol messages this node sent: its own join requests and announcements, and
    /// the join requests it forwarded and join state it answered for other joiners.
    pub join_messages: u64,
    /// Control frames transmitted, by kind: index `i` counts the frames of kind
    /// [`FRAME_KINDS`](crate::wire::FRAME_KINDS)`[i]`. (Last: the scalar counters before it
    /// share the struct's first cache lines.)
    pub control_frames_by_kind: [u64; crate::wire::FRAME_KINDS.len()],
}
