//! What a node-target input stands for: the node's configuration and the operations.

use std::net::SocketAddr;

use arbitrary::Arbitrary;

use crate::config::Config;
use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::wire::{Message, DEFAULT_MAX_FRAME, NONCE_LEN};

use super::node_addr;

/// The node's configuration, chosen by the fuzzer within sensible ranges (small bounds, so
/// that the fuzzer reaches them).
#[derive(Arbitrary, Clone, Debug)]
pub struct FuzzConfig {
    /// The node's id.
    pub id: u128,
    /// RNG seed.
    pub seed: u64,
    /// Leaf-set size, 2..=32 after mapping.
    pub leaf_set_size: u8,
    /// Per-peer queue bound, 1..=8 after mapping.
    pub max_pending_per_peer: u8,
    /// Per-node queue bound, 1..=32 after mapping.
    pub max_pending_total: u8,
    /// Connection bound, 16..=63 after mapping.
    pub max_connections: u8,
    /// Hop limit, 1..=64 after mapping.
    pub max_hops: u8,
    /// False: 1 MiB frames; true: 64 KiB.
    pub small_frames: bool,
    /// Put the node in region "eu" (half the pool is there too).
    pub regional: bool,
    /// Install a forward hook that vetoes or rewrites some messages.
    pub hook: bool,
}

impl FuzzConfig {
    /// The node configuration this stands for.
    pub fn to_config(&self) -> Config {
        let me = NodeId::from_u128(self.id);
        // Plaintext: the harness plays every peer by hand and reads what the node sends, which
        // is what lets it reach deep states; the encrypted layer has tests of its own.
        let mut c = Config::with_trusted_id(me, node_addr()).insecure_plaintext();
        if self.regional {
            c = c.with_region("eu", SocketAddr::from(([192, 168, 255, 1], 7000)), node_addr());
        }
        c.seed = self.seed;
        // An even size (half on each side), as `Config::validate` requires; the leaf set of an
        // odd size used to hold the even size below it, so corpus inputs keep their meaning.
        c.leaf_set_size = (2 + usize::from(self.leaf_set_size % 31)) & !1;
        c.max_pending_per_peer = 1 + usize::from(self.max_pending_per_peer % 8);
        c.max_pending_total = 1 + usize::from(self.max_pending_total % 32);
        c.max_connections = 16 + usize::from(self.max_connections % 48);
        c.max_hops = 1 + self.max_hops % 64;
        c.max_frame_size = if self.small_frames { 64 * 1024 } else { DEFAULT_MAX_FRAME };
        c
    }
}

/// Who a fake peer claims to be.
#[derive(Arbitrary, Clone, Debug)]
pub enum Who {
    /// One of the fake peers placed around the node's id (index modulo the pool).
    Pool(u8),
    /// Anyone at all.
    Stranger(NodeInfo),
    /// The node itself (a peer claiming our id).
    Me,
}

/// A key or node id for an operation.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Key {
    /// A pool member's id.
    Pool(u8),
    /// The node's id plus a small signed offset.
    Near(i16),
    /// Any id.
    Any(NodeId),
}

/// What a dial of the node becomes.
#[derive(Arbitrary, Clone, Debug)]
pub enum DialOutcome {
    /// The connection could not be established.
    Failed,
    /// Established; the handshake is left to later operations.
    Connected,
    /// Established and answered by whoever the harness knows lives at that address.
    Honest,
    /// Established and answered as `Who`.
    As(Who),
}

/// A state message built from pool members.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum StateKind {
    /// [`Message::LeafSet`].
    LeafSet,
    /// [`Message::Row`].
    Row(u8),
    /// [`Message::JoinState`], with or without leaves.
    JoinState(bool),
    /// [`Message::Welcome`].
    Welcome(u32, bool),
}

/// One step of the node target. Connection operands (`conn`) index, modulo their number, every
/// connection the node has ever named, including closed ones.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// A peer dials the node and completes the handshake as `Who`.
    Dial(Who),
    /// A peer dials the node; the handshake is left to later operations.
    Accept,
    /// Sends `Hello` on a connection.
    Hello {
        /// Which connection.
        conn: u8,
        /// The identity claimed.
        who: Who,
        /// The dialler's nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// Sends `Auth` on a connection.
    Auth {
        /// Which connection.
        conn: u8,
        /// The proof (ignored by a node without credentials).
        proof: Vec<u8>,
    },
    /// Answers one of the node's outbound dials.
    AnswerDial {
        /// Which pending dial.
        dial: u8,
        /// How.
        outcome: DialOutcome,
    },
    /// Answers every pending dial honestly.
    AnswerAllDials,
    /// Sends `HelloAck` as `Who` on a connection.
    HelloAck {
        /// Which connection.
        conn: u8,
        /// The identity claimed.
        who: Who,
    },
    /// Sends a well-formed (possibly hostile) message.
    Msg {
        /// Which connection.
        conn: u8,
        /// The message.
        msg: Message,
    },
    /// Sends a state message listing pool members.
    State {
        /// Which connection.
        conn: u8,
        /// Which message.
        kind: StateKind,
        /// Pool indices.
        members: Vec<u8>,
    },
    /// Sends a routed application message.
    Route {
        /// Which connection.
        conn: u8,
        /// Its key.
        key: Key,
        /// Its purpose.
        purpose: u8,
        /// Hops so far.
        hops: u8,
        /// Payload length.
        len: u8,
    },
    /// Answers every request the node sent on a connection (pings, announces, requests for
    /// state, join requests), listing pool members where state is asked for.
    Reply {
        /// Which connection.
        conn: u8,
        /// Pool indices for state answers.
        members: Vec<u8>,
    },
    /// Sends raw bytes, split in two inputs at `split`.
    Raw {
        /// Which connection.
        conn: u8,
        /// The bytes.
        bytes: Vec<u8>,
        /// Where to split them.
        split: u8,
    },
    /// Sends a correctly framed body of arbitrary bytes behind the right version byte.
    Body {
        /// Which connection.
        conn: u8,
        /// The body after the version byte.
        body: Vec<u8>,
    },
    /// Sends a bare length prefix (perhaps huge) and a few bytes.
    Prefix {
        /// Which connection.
        conn: u8,
        /// The announced length.
        len: u32,
        /// Bytes after it.
        bytes: Vec<u8>,
    },
    /// The peer closes a connection.
    Close {
        /// Which connection.
        conn: u8,
    },
    /// Time passes (milliseconds); due timers fire as a driver would fire them.
    Advance(u16),
    /// A long jump forward (seconds); the driver wakes late, once.
    Jump(u32),
    /// A spurious `handle_timeout` with an earlier instant (microseconds back).
    EarlyTimeout(u32),
    /// Application: route a message towards a key.
    Send {
        /// The key.
        key: Key,
        /// The purpose (may be reserved).
        purpose: u8,
        /// Payload length.
        len: u16,
    },
    /// Application: send straight to a node by id.
    SendToNode {
        /// The node.
        key: Key,
        /// The purpose (may be reserved).
        purpose: u8,
    },
    /// Application: send straight to an address.
    SendToAddr {
        /// The node at that address.
        who: Who,
        /// The purpose (may be reserved).
        purpose: u8,
    },
    /// Application: join through the node at `who`'s address.
    Join(Who),
    /// Application: leave.
    Leave,
}
