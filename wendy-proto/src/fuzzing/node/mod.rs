//! Target 3: one node driven by an arbitrary sequence of operations, and the harness that
//! plays the network around it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::config::Config;
use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::node::Node;
use crate::output::{ConnId, Forwarding};
use crate::time::Instant;
use crate::wire::{self, Message, NONCE_LEN};

mod apply;
mod checks;
mod input;
mod model;

pub use input::{DialOutcome, FuzzConfig, Key, Op, StateKind, Who};
use model::{pool_info, ConnModel};

/// Most operations one node input runs (bounds the work per fuzz input).
const MAX_OPS: usize = 2048;

/// Whether [`NodeHarness::check`] also requires that the node never forgets a connection
/// without an `Output::Close` (fuzz finding 2, regression test
/// `wendy-proto/tests/fuzz_regressions.rs::stalled_handshake_is_closed`).
const CHECK_FORGOTTEN_CONNS: bool = true;

/// Number of fake peers whose ids are placed around the node's id.
const POOL: usize = 24;

/// Target 3: one node driven by an arbitrary [`FuzzConfig`] and sequence of [`Op`]s (in
/// plaintext); then, for one input in eight (first byte a multiple of 8), an encrypted node by
/// the rest of the bytes ([`node_secure`](super::node_secure)).
///
/// # Panics
/// When the node panics, or when a check of [`NodeHarness::check`] fails after any step.
pub fn node(data: &[u8]) {
    if let Some((cfg, ops)) = node_input(data) {
        run_node(&cfg, ops);
    }
    // One input in eight also drives the encrypted half (after its first byte): each of its
    // sessions costs a handshake's X25519 operations, which would otherwise dominate.
    if let Some((&first, rest)) = data.split_first() {
        if first & 7 == 0 {
            super::secure::node_secure(rest);
        }
    }
}

/// The configuration and operations a node-target input stands for (`None` if it is too short
/// for a configuration). Useful to print a fuzzer finding.
pub fn node_input(data: &[u8]) -> Option<(FuzzConfig, Vec<Op>)> {
    let mut u = Unstructured::new(data);
    let cfg = FuzzConfig::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        ops.push(op);
    }
    Some((cfg, ops))
}

/// Runs `ops` against a node configured by `cfg`, checking after every step.
///
/// # Panics
/// As [`node`].
pub fn run_node(cfg: &FuzzConfig, ops: impl IntoIterator<Item = Op>) {
    let mut h = NodeHarness::new(cfg);
    h.check("start");
    for op in ops {
        h.apply(op);
    }
}

/// One node and the fake network around it, with the checks of the node target.
///
/// Public so that regression tests can script a node with the same machinery.
pub struct NodeHarness {
    node: Node,
    cfg: Config,
    now: Instant,
    pool: Vec<NodeInfo>,
    conns: Vec<ConnModel>,
    by_id: BTreeMap<ConnId, usize>,
    /// Ids that reached the node over an authenticated connection (or authenticated themselves).
    allowed: BTreeSet<NodeId>,
    /// Who the harness believes lives at an address (pool members and every node it described).
    known: BTreeMap<SocketAddr, NodeInfo>,
    left: bool,
}

impl NodeHarness {
    /// A node configured from `cfg`, at time 1 s.
    pub fn new(cfg: &FuzzConfig) -> Self {
        let config = cfg.to_config();
        let now = Instant::from_secs(1);
        let mut node = Node::new(config.clone(), now).expect("the fuzz harness config is valid");
        if cfg.hook {
            node.set_forward_hook(Box::new(|f: &mut Forwarding, _: &NodeInfo| {
                match f.payload.first().copied().unwrap_or(0) % 4 {
                    0 => true,
                    1 => false,
                    2 => {
                        f.purpose = f.purpose.wrapping_sub(1);
                        true
                    }
                    _ => {
                        f.payload = Bytes::from_static(b"rewritten");
                        true
                    }
                }
            }));
        }
        let me = config.info.id;
        let pool: Vec<NodeInfo> = (0..POOL).map(|i| pool_info(me, i)).collect();
        let mut known = BTreeMap::new();
        for p in &pool {
            known.insert(p.local, p.clone());
            known.insert(p.global, p.clone());
        }
        NodeHarness {
            node,
            cfg: config,
            now,
            pool,
            conns: Vec::new(),
            by_id: BTreeMap::new(),
            allowed: BTreeSet::new(),
            known,
            left: false,
        }
    }

    /// The node under test.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The fake peers placed around the node's id.
    pub fn pool(&self) -> &[NodeInfo] {
        &self.pool
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A peer dials the node: `handle_accepted`. Returns the connection's name.
    pub fn accept(&mut self) -> ConnId {
        let addr = SocketAddr::from((Ipv4Addr::new(172, 16, 0, 1), 40_000 + (self.conns.len() % 20_000) as u16));
        let id = self.node.handle_accepted(self.now, addr);
        self.add_conn(id, addr, false);
        self.drain("handle_accepted");
        id
    }

    /// A peer dials the node and completes the handshake as `info`. Returns the connection.
    pub fn dial_as(&mut self, info: NodeInfo) -> ConnId {
        let conn = self.accept();
        self.send(conn, &Message::Hello { info, nonce: [7; NONCE_LEN] });
        self.send(conn, &Message::Auth { proof: Vec::new(), probe: None });
        conn
    }

    /// Sends one message on `conn`, as its encoded frame.
    pub fn send(&mut self, conn: ConnId, msg: &Message) {
        self.describe_all(msg);
        let frame = wire::encode(msg);
        self.send_owned(conn, frame);
    }

    /// Sends raw bytes on `conn` (`handle_data`, copied), mirroring what the node decodes.
    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(&i) = self.by_id.get(&conn) else { return };
        self.mirror(i, bytes);
        self.node.handle_data(self.now, conn, bytes);
        self.drain("handle_data");
    }

    /// Sends an owned chunk on `conn` (`handle_bytes`, zero-copy), mirroring what the node decodes.
    pub fn send_owned(&mut self, conn: ConnId, bytes: Bytes) {
        let Some(&i) = self.by_id.get(&conn) else { return };
        self.mirror(i, &bytes);
        self.node.handle_bytes(self.now, conn, bytes);
        self.drain("handle_bytes");
    }

    /// Lets `d` pass, firing due timers at their deadlines as a driver would.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.fire_timers("advance");
    }
}

impl core::fmt::Debug for NodeHarness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NodeHarness").field("node", &self.node).field("now", &self.now).finish_non_exhaustive()
    }
}

/// The address of the node under test.
fn node_addr() -> SocketAddr {
    SocketAddr::from(([10, 255, 255, 1], 7000))
}
