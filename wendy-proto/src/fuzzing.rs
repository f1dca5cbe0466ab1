//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and the stable replay test.
//!
//! Each target takes raw fuzzer bytes and panics when it finds a bug; it never panics on an
//! input that merely fails to parse. The same functions run under libFuzzer (nightly,
//! `cargo +nightly fuzz run <target>`) and in the workspace's stable test that replays the
//! committed corpus (`tests/tests/fuzz_replay.rs`), so a corpus entry means the same thing in
//! both places.
//!
//! - [`decoder`]: arbitrary bytes, fed to a [`FrameDecoder`] in arbitrary chunk sizes, with a
//!   small or default maximum frame size. It must never panic, never hold more than one
//!   incomplete frame, never hand out a body above the maximum, and split the stream the same
//!   way whatever the chunking; every body it accepts must survive re-encoding.
//! - [`round_trip`]: an arbitrary [`Message`] encodes to one frame that decodes to itself (or,
//!   if the message breaks a bound, to [`WireError::OutOfBounds`]), through
//!   [`decode_frame`](wire::decode_frame) and byte by byte through a [`FrameDecoder`].
//! - [`node`]: one [`Node`] driven by an arbitrary sequence of [`Op`]s: peers dialling it and
//!   completing (or botching) the handshake, the node's own dials answered honestly or not,
//!   raw bytes, well-formed hostile messages, replies to the node's requests, timer jumps,
//!   application commands, joins and leaves. After every step it checks
//!   [`Node::check_invariants`] and the harness's own checks (see [`NodeHarness::check`]).
//!
//! This module exists only with the `arbitrary` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::config::Config;
use crate::id::{NodeId, DIGITS};
use crate::info::NodeInfo;
use crate::node::Node;
use crate::output::{ConnId, Event, Forwarding, Output, Target};
use crate::time::Instant;
use crate::wire::{
    self, FrameDecoder, Message, Route, DEFAULT_MAX_FRAME, LENGTH_PREFIX, MAX_HANDSHAKE_FRAME, NONCE_LEN,
};

/// Maximum frame sizes the decoder target picks from (the first input byte chooses).
const DECODER_MAX_FRAMES: [usize; 8] = [0, 1, 5, 16, 64, 512, 4096, DEFAULT_MAX_FRAME];

/// Most operations one node input runs (bounds the work per fuzz input).
const MAX_OPS: usize = 2048;

/// Whether [`NodeHarness::check`] also requires that the node never forgets a connection
/// without an `Output::Close` (fuzz finding 2, regression test
/// `wendy-proto/tests/fuzz_regressions.rs::stalled_handshake_is_closed`).
const CHECK_FORGOTTEN_CONNS: bool = true;

/// Number of fake peers whose ids are placed around the node's id.
const POOL: usize = 24;

// ----- target 1: the frame decoder ------------------------------------------------------------

/// Target 1: the frame decoder over arbitrary bytes in arbitrary chunkings.
///
/// Input layout: byte 0 picks the maximum frame size, byte 1 the number `k` of chunk bytes that
/// follow (0..=15), then `k` chunk bytes (used cyclically), then the stream. A chunk byte gives
/// the chunk's size (its low 6 bits, plus one), whether it is pushed as an owned `Bytes`
/// (`push_bytes`, zero-copy slicing) or copied (`push`) (bit 7), and whether the decoder is
/// drained after it or the next chunk is pushed first (bit 6).
///
/// # Panics
/// On a bug: a panic inside the decoder, a body over the maximum, more than one incomplete frame
/// buffered, a result that depends on the chunking, or an accepted message that does not
/// survive re-encoding.
pub fn decoder(data: &[u8]) {
    let (max_frame, chunks, stream) = match data {
        [m, k, rest @ ..] => {
            let k = usize::from(k & 0x0f).min(rest.len());
            let (chunks, stream) = rest.split_at(k);
            (DECODER_MAX_FRAMES[usize::from(m & 7)], chunks.to_vec(), stream)
        }
        _ => (DEFAULT_MAX_FRAME, Vec::new(), data),
    };
    // One owned chunk, as a driver hands over a read buffer.
    let whole = decode_stream(max_frame, stream, &[], true);
    if !chunks.is_empty() {
        let chunked = decode_stream(max_frame, stream, &chunks, false);
        assert_eq!(whole, chunked, "the decoder's results depend on the chunking");
    }
    let bytewise = decode_stream(max_frame, stream, &[0], false);
    assert_eq!(whole, bytewise, "the decoder's results depend on the chunking (byte by byte)");
}

/// The most a call of [`decoder`] on `len` input bytes may allocate at once (checked by the
/// cargo-fuzz target with a measuring allocator): proportional to the bytes received, never
/// to what a length prefix or an element count announces.
pub fn decoder_alloc_bound(len: usize) -> usize {
    32 * len + 32 * 1024
}

/// What a connection sees of a stream: the messages decoded (re-encoded, concatenated, so that
/// comparing chunkings costs memory in proportion to the input only), how many, and the error
/// that closed the connection, if any.
#[derive(Debug, PartialEq, Eq)]
struct StreamResult {
    encoded: Vec<u8>,
    count: usize,
    error: Option<wire::WireError>,
}

/// Feeds `stream` to a decoder in the chunks that `chunks` describe (cyclically; see
/// [`decoder`]), or in one owned chunk if `chunks` is empty, as a node does: the first error
/// ends the connection.
fn decode_stream(max_frame: usize, stream: &[u8], chunks: &[u8], whole: bool) -> StreamResult {
    let mut dec = FrameDecoder::new(max_frame);
    let mut res = StreamResult { encoded: Vec::new(), count: 0, error: None };
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let (n, owned, drain) = if whole {
            (rest.len(), true, true)
        } else {
            let c = chunks[i % chunks.len()];
            (usize::from(c & 0x3f) + 1, c & 0x80 != 0, c & 0x40 == 0)
        };
        i += 1;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        if owned {
            dec.push_bytes(Bytes::copy_from_slice(chunk));
        } else {
            dec.push(chunk);
        }
        if !drain && !rest.is_empty() {
            continue;
        }
        loop {
            match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => {
                    assert!(body.len() <= max_frame, "body of {} bytes over the maximum {max_frame}", body.len());
                    match wire::decode_body(body) {
                        Ok(msg) => {
                            check_reencodes(&msg, &mut res.encoded);
                            res.count += 1;
                        }
                        Err(e) => {
                            res.error = Some(e);
                            return res;
                        }
                    }
                }
                Err(e) => {
                    assert!(matches!(e, wire::WireError::FrameTooLarge { .. }), "unexpected framing error {e:?}");
                    assert_eq!(dec.buffered(), 0, "an oversized frame's bytes stay buffered");
                    res.error = Some(e);
                    return res;
                }
            }
        }
        // Only an incomplete frame (or an incomplete length prefix) may stay buffered.
        assert!(
            dec.buffered() < LENGTH_PREFIX + max_frame,
            "decoder holds {} bytes with a maximum frame of {max_frame}",
            dec.buffered()
        );
    }
    res
}

/// A message the decoder accepted must respect the bounds and encode to a frame that decodes
/// to the same message; the frame is appended to `out`.
fn check_reencodes(msg: &Message, out: &mut Vec<u8>) {
    assert!(msg.validate().is_ok(), "decoder accepted a message that breaks a bound: {msg:?}");
    let start = out.len();
    wire::encode_into(msg, out);
    let frame = Bytes::copy_from_slice(&out[start..]);
    let again = wire::decode_frame(frame, usize::MAX).expect("a decoded message re-encodes to a valid frame");
    assert_eq!(&again, msg, "decode(encode(decode(bytes))) differs");
}

// ----- target 2: the codec round trip ---------------------------------------------------------

/// Target 2: an arbitrary message encodes and decodes to itself.
///
/// # Panics
/// If encoding then decoding does not give back the message (or `OutOfBounds` for a message
/// that breaks a bound), or if the frame's length prefix is wrong.
pub fn round_trip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(prefix_len) = u.int_in_range(0u8..=7) else { return };
    let Ok(msg) = Message::arbitrary(&mut u) else { return };
    let frame = wire::encode(&msg);
    let body_len = u32::from_be_bytes(frame[..LENGTH_PREFIX].try_into().expect("4 bytes"));
    assert_eq!(body_len as usize, frame.len() - LENGTH_PREFIX, "wrong length prefix");

    // encode_into appends after whatever the buffer held.
    let mut buf = vec![0xAA; usize::from(prefix_len)];
    wire::encode_into(&msg, &mut buf);
    assert_eq!(&buf[usize::from(prefix_len)..], &frame[..], "encode_into differs from encode");

    let expected = msg.validate().map(|()| on_the_wire(msg.clone()));
    let got = wire::decode_frame(frame.clone(), DEFAULT_MAX_FRAME);
    if frame.len() - LENGTH_PREFIX > DEFAULT_MAX_FRAME {
        assert!(matches!(got, Err(wire::WireError::FrameTooLarge { .. })));
        return;
    }
    assert_eq!(got, expected, "round trip changed the message");

    // The same through the stream decoder, one byte at a time.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut bodies = Vec::new();
    for b in frame.iter() {
        dec.push(std::slice::from_ref(b));
        while let Some(body) = dec.next_frame().expect("a frame of ours is within the maximum") {
            bodies.push(body);
        }
    }
    assert_eq!(bodies.len(), 1, "one frame in, one body out");
    assert_eq!(dec.buffered(), 0);
    let body = bodies.pop().expect("one body");
    assert_eq!(wire::decode_body(body), expected, "stream decoding changed the message");
}

/// `msg` as it can arrive: the wire carries an IPv6 socket address as address and port only,
/// so its flow label and scope id (host-local values) read back as zero (fuzz finding 3).
fn on_the_wire(mut msg: Message) -> Message {
    let strip = |i: &mut NodeInfo| {
        for a in [&mut i.local, &mut i.global] {
            if let SocketAddr::V6(v6) = a {
                v6.set_flowinfo(0);
                v6.set_scope_id(0);
            }
        }
    };
    match &mut msg {
        Message::Hello { info, .. } | Message::HelloAck { info, .. } => strip(info),
        Message::JoinRequest { joiner, .. } => strip(joiner),
        Message::JoinState { rows, hood, leaves } => {
            rows.iter_mut().chain(hood.iter_mut()).chain(leaves.iter_mut().flatten()).for_each(strip)
        }
        Message::Welcome { leaves, .. } | Message::LeafSet { leaves } => leaves.iter_mut().for_each(strip),
        Message::Row { entries, .. } => entries.iter_mut().for_each(strip),
        _ => {}
    }
    msg
}

// ----- target 3: the whole node ----------------------------------------------------------------

/// Target 3: one node driven by an arbitrary [`FuzzConfig`] and sequence of [`Op`]s.
///
/// # Panics
/// When the node panics, or when a check of [`NodeHarness::check`] fails after any step.
pub fn node(data: &[u8]) {
    let Some((cfg, ops)) = node_input(data) else { return };
    run_node(&cfg, ops);
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

/// The harness's view of one connection.
#[derive(Debug)]
struct ConnModel {
    id: ConnId,
    addr: SocketAddr,
    /// The node dialled out (`Output::Connect`).
    outbound: bool,
    /// We reported it established (always true for inbound ones).
    established: bool,
    /// The node closed it, or we did.
    closed: bool,
    /// Mirror of the node's handshake phase, computed from what we sent.
    phase: Phase,
    /// Mirror of the node's decoder: what the node decodes from what we send.
    tx: FrameDecoder,
    /// Requests from the node not yet answered.
    requests: Vec<Message>,
}

/// The node's handshake phase as the harness can infer it. It errs towards `Open` (more ids
/// allowed in tables), never the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitAuth(NodeId),
    Dialing,
    AwaitHelloAck,
    Open,
    Dead,
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

    /// Runs one operation, then the checks.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Dial(who) => {
                let info = self.who(&who);
                let conn = self.accept();
                self.send(conn, &Message::Hello { info, nonce: [7; NONCE_LEN] });
                self.send(conn, &Message::Auth { proof: Vec::new() });
            }
            Op::Accept => {
                self.accept();
            }
            Op::Hello { conn, who, nonce } => {
                let info = self.who(&who);
                if let Some(c) = self.pick(conn) {
                    self.send(c, &Message::Hello { info, nonce });
                }
            }
            Op::Auth { conn, proof } => {
                if let Some(c) = self.pick(conn) {
                    self.send(c, &Message::Auth { proof });
                }
            }
            Op::AnswerDial { dial, outcome } => {
                let dials: Vec<usize> =
                    (0..self.conns.len()).filter(|&i| self.conns[i].phase == Phase::Dialing).collect();
                if let Some(&i) = dials.get(usize::from(dial) % dials.len().max(1)) {
                    self.answer_dial(i, outcome);
                }
            }
            Op::AnswerAllDials => {
                let dials: Vec<usize> =
                    (0..self.conns.len()).filter(|&i| self.conns[i].phase == Phase::Dialing).collect();
                for i in dials {
                    self.answer_dial(i, DialOutcome::Honest);
                }
            }
            Op::HelloAck { conn, who } => {
                let info = self.who(&who);
                if let Some(c) = self.pick(conn) {
                    self.send(c, &Message::HelloAck { info, nonce: [9; NONCE_LEN], proof: Vec::new() });
                }
            }
            Op::Msg { conn, msg } => {
                if let Some(c) = self.pick(conn) {
                    self.send(c, &msg);
                }
            }
            Op::State { conn, kind, members } => {
                let infos = self.pool_subset(&members);
                let msg = match kind {
                    StateKind::LeafSet => Message::LeafSet { leaves: infos },
                    StateKind::Row(row) => Message::Row { row: row % DIGITS as u8, entries: infos },
                    StateKind::JoinState(with_leaves) => {
                        let half = infos.len() / 2;
                        let (rows, hood) = infos.split_at(half);
                        let leaves = with_leaves.then(|| hood.to_vec());
                        Message::JoinState { rows: rows.to_vec(), hood: hood.to_vec(), leaves }
                    }
                    StateKind::Welcome(seq, ready) => Message::Welcome { seq, ready, leaves: infos },
                };
                if let Some(c) = self.pick(conn) {
                    self.send(c, &msg);
                }
            }
            Op::Route { conn, key, purpose, hops, len } => {
                let key = self.key(key);
                let origin = self.pool[usize::from(len) % POOL].id;
                let payload = Bytes::from(vec![len; usize::from(len)]);
                if let Some(c) = self.pick(conn) {
                    self.send(c, &Message::Route(Route { key, purpose, origin, hops, payload }));
                }
            }
            Op::Reply { conn, members } => {
                if let Some(c) = self.pick(conn) {
                    self.reply(c, &members);
                }
            }
            Op::Raw { conn, bytes, split } => {
                if let Some(c) = self.pick(conn) {
                    let at = usize::from(split).min(bytes.len());
                    let bytes = Bytes::from(bytes);
                    self.send_bytes(c, &bytes[..at]);
                    self.send_owned(c, bytes.slice(at..));
                }
            }
            Op::Body { conn, body } => {
                if let Some(c) = self.pick(conn) {
                    let mut frame = Vec::with_capacity(body.len() + 5);
                    let len = u32::try_from(body.len() + 1).unwrap_or(u32::MAX);
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.push(wire::PROTOCOL_VERSION);
                    frame.extend_from_slice(&body);
                    self.send_bytes(c, &frame);
                }
            }
            Op::Prefix { conn, len, bytes } => {
                if let Some(c) = self.pick(conn) {
                    let mut frame = len.to_be_bytes().to_vec();
                    frame.extend_from_slice(&bytes);
                    self.send_bytes(c, &frame);
                }
            }
            Op::Close { conn } => {
                if let Some(c) = self.pick(conn) {
                    let i = self.by_id[&c];
                    let was_closed = self.conns[i].closed;
                    self.conns[i].closed = true;
                    self.conns[i].phase = Phase::Dead;
                    if !was_closed {
                        self.node.handle_closed(self.now, c);
                        self.drain("handle_closed");
                    }
                }
            }
            Op::Advance(ms) => self.advance(Duration::from_millis(u64::from(ms))),
            Op::Jump(secs) => {
                self.now += Duration::from_secs(u64::from(secs));
                self.fire_timers("jump");
            }
            Op::EarlyTimeout(back) => {
                let t = Instant::from_micros(self.now.as_micros().saturating_sub(u64::from(back)));
                self.node.handle_timeout(t);
                self.drain("early handle_timeout");
            }
            Op::Send { key, purpose, len } => {
                let key = self.key(key);
                let payload = Bytes::from(vec![0x5a; usize::from(len)]);
                let _ = self.node.send(self.now, key, purpose, payload);
                self.drain("send");
            }
            Op::SendToNode { key, purpose } => {
                let id = self.key(key);
                let _ = self.node.send_to(self.now, Target::Node(id), purpose, Bytes::from_static(b"direct"));
                self.drain("send_to(node)");
            }
            Op::SendToAddr { who, purpose } => {
                let info = self.who(&who);
                self.describe(&info);
                let r = self.node.send_to(self.now, Target::Addr(info.global), purpose, Bytes::from_static(b"ip"));
                let _ = r;
                self.drain("send_to(addr)");
            }
            Op::Join(who) => {
                let info = self.who(&who);
                self.describe(&info);
                let _ = self.node.join(self.now, &[info.global]);
                self.drain("join");
            }
            Op::Leave => {
                // Leaving may dial table members to tell them; nothing after it may.
                self.node.leave(self.now);
                self.drain("leave");
                self.left = true;
            }
        }
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
        self.send(conn, &Message::Auth { proof: Vec::new() });
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

    /// Runs every check; panics naming `step` if one fails.
    ///
    /// The checks: [`Node::check_invariants`] (leaf set sorted, bounded, without ourselves or
    /// duplicates; routing-table cells' prefixes; queue bounds; `poll_timeout` not in the
    /// past); `poll_timeout` not before the driver's clock; every table member reached the
    /// node over an authenticated connection; pending messages and connections within their
    /// configured bounds.
    pub fn check(&self, step: &str) {
        if let Err(e) = self.node.check_invariants() {
            panic!("after {step}: invariant broken: {e}");
        }
        if let Some(t) = self.node.poll_timeout() {
            assert!(t >= self.now, "after {step}: poll_timeout {t} is before now {}", self.now);
        }
        let node = &self.node;
        let members = node
            .leaf_set()
            .members()
            .into_iter()
            .chain(node.routing_table().iter().map(|c| c.id))
            .chain(node.neighbourhood().iter().map(|e| e.1));
        for id in members {
            assert!(
                self.allowed.contains(&id),
                "after {step}: {id} is in a table but never came over an authenticated connection"
            );
        }
        assert!(
            node.pending_messages() <= self.cfg.max_pending_total,
            "after {step}: {} messages pending, bound {}",
            node.pending_messages(),
            self.cfg.max_pending_total
        );
        let driver_open = self.conns.iter().filter(|c| !c.closed).count();
        assert!(
            node.connection_count() <= driver_open,
            "after {step}: the node counts {} connections, the driver knows of {driver_open}",
            node.connection_count()
        );
        if CHECK_FORGOTTEN_CONNS {
            assert_eq!(
                node.connection_count(),
                driver_open,
                "after {step}: the node forgot a connection without closing it"
            );
        }
        let bound = self.cfg.max_connections;
        assert!(
            node.connection_count() <= bound,
            "after {step}: {} connections open, bound {bound}",
            node.connection_count()
        );
    }

    // ----- private ----------------------------------------------------------------------------

    fn add_conn(&mut self, id: ConnId, addr: SocketAddr, outbound: bool) {
        assert!(!self.by_id.contains_key(&id), "the node reused {id}");
        self.by_id.insert(id, self.conns.len());
        self.conns.push(ConnModel {
            id,
            addr,
            outbound,
            established: !outbound,
            closed: false,
            phase: if outbound { Phase::Dialing } else { Phase::AwaitHello },
            tx: FrameDecoder::new(MAX_HANDSHAKE_FRAME.min(self.cfg.max_frame_size)),
            requests: Vec::new(),
        });
    }

    fn pick(&self, sel: u8) -> Option<ConnId> {
        let n = self.conns.len();
        (n > 0).then(|| self.conns[usize::from(sel) % n].id)
    }

    fn who(&self, who: &Who) -> NodeInfo {
        match who {
            Who::Pool(i) => self.pool[usize::from(*i) % POOL].clone(),
            Who::Stranger(info) => info.clone(),
            Who::Me => self.cfg.info.clone(),
        }
    }

    fn key(&self, key: Key) -> NodeId {
        match key {
            Key::Pool(i) => self.pool[usize::from(i) % POOL].id,
            Key::Near(d) => NodeId::from_u128(self.cfg.info.id.as_u128().wrapping_add_signed(i128::from(d))),
            Key::Any(id) => id,
        }
    }

    fn pool_subset(&self, idx: &[u8]) -> Vec<NodeInfo> {
        idx.iter().take(64).map(|&i| self.pool[usize::from(i) % POOL].clone()).collect()
    }

    /// Remembers where the nodes a message describes live, to answer dials honestly.
    fn describe_all(&mut self, msg: &Message) {
        for info in infos_of(msg) {
            self.describe(&info);
        }
    }

    fn describe(&mut self, info: &NodeInfo) {
        self.known.entry(info.local).or_insert_with(|| info.clone());
        self.known.entry(info.global).or_insert_with(|| info.clone());
    }

    /// Feeds `bytes` to the mirror of the node's decoder and handshake for connection `i`.
    fn mirror(&mut self, i: usize, bytes: &[u8]) {
        let me = self.cfg.info.id;
        let c = &mut self.conns[i];
        if c.closed || c.phase == Phase::Dead {
            return;
        }
        if c.phase == Phase::Dialing {
            c.phase = Phase::Dead;
            return;
        }
        c.tx.push(bytes);
        let max_frame = self.cfg.max_frame_size;
        loop {
            let msg = match c.tx.next_frame() {
                Ok(None) => return,
                Ok(Some(body)) => match wire::decode_body(body) {
                    Ok(m) => m,
                    Err(_) => {
                        c.phase = Phase::Dead;
                        return;
                    }
                },
                Err(_) => {
                    c.phase = Phase::Dead;
                    return;
                }
            };
            let was_open = c.phase == Phase::Open;
            c.phase = match (c.phase, &msg) {
                (Phase::AwaitHello, Message::Hello { info, .. }) if info.id != me => Phase::AwaitAuth(info.id),
                (Phase::AwaitAuth(id), Message::Auth { .. }) => {
                    self.allowed.insert(id);
                    Phase::Open
                }
                (Phase::AwaitHelloAck, Message::HelloAck { info, .. }) if info.id != me => {
                    self.allowed.insert(info.id);
                    Phase::Open
                }
                (Phase::Open, m) if !m.is_handshake() => {
                    self.allowed.extend(infos_of(m).into_iter().map(|x| x.id));
                    Phase::Open
                }
                _ => Phase::Dead,
            };
            // The node accepts full-size frames once the handshake is done.
            if c.phase == Phase::Open && !was_open {
                c.tx.set_max_frame(max_frame);
            }
        }
    }

    fn answer_dial(&mut self, i: usize, outcome: DialOutcome) {
        let conn = self.conns[i].id;
        if matches!(outcome, DialOutcome::Failed) {
            self.conns[i].phase = Phase::Dead;
            self.conns[i].closed = true;
            self.node.handle_connect_failed(self.now, conn);
            self.drain("handle_connect_failed");
            return;
        }
        self.conns[i].established = true;
        self.conns[i].phase = Phase::AwaitHelloAck;
        self.node.handle_connected(self.now, conn);
        self.drain("handle_connected");
        let info = match outcome {
            DialOutcome::Failed | DialOutcome::Connected => return,
            DialOutcome::Honest => match self.known.get(&self.conns[i].addr) {
                Some(info) => info.clone(),
                None => return,
            },
            DialOutcome::As(who) => self.who(&who),
        };
        self.send(conn, &Message::HelloAck { info, nonce: [9; NONCE_LEN], proof: Vec::new() });
    }

    fn reply(&mut self, conn: ConnId, members: &[u8]) {
        let Some(&i) = self.by_id.get(&conn) else { return };
        let requests = std::mem::take(&mut self.conns[i].requests);
        let infos = self.pool_subset(members);
        for r in requests {
            let answer = match r {
                Message::Ping { seq } => Message::Pong { seq, ready: true },
                Message::Announce { seq } => Message::Welcome { seq, ready: true, leaves: infos.clone() },
                Message::LeafSetRequest => Message::LeafSet { leaves: infos.clone() },
                Message::RowRequest { row } => Message::Row { row, entries: infos.clone() },
                Message::JoinRequest { .. } => {
                    Message::JoinState { rows: infos.clone(), hood: infos.clone(), leaves: Some(infos.clone()) }
                }
                _ => continue,
            };
            self.send(conn, &answer);
        }
    }

    /// Fires due timers at their deadlines (at most a few; after that the driver wakes late,
    /// once, at `now`).
    fn fire_timers(&mut self, step: &str) {
        let target = self.now;
        for _ in 0..16 {
            match self.node.poll_timeout() {
                Some(t) if t <= target => {
                    // The driver's clock reads the deadline when it wakes for it.
                    self.now = t;
                    self.node.handle_timeout(t);
                    self.drain(step);
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        self.now = target;
        self.node.handle_timeout(target);
        self.drain(step);
    }

    /// Drains every output, checks each, then runs [`NodeHarness::check`].
    fn drain(&mut self, step: &str) {
        let mut n = 0usize;
        while let Some(out) = self.node.poll_output() {
            n += 1;
            assert!(n < 1_000_000, "after {step}: the node produces outputs without end");
            match out {
                Output::Connect { conn, addr } => {
                    assert!(!self.left, "after {step}: a node that left dials {addr}");
                    self.add_conn(conn, addr, true);
                }
                Output::Transmit { conn, data } => self.on_transmit(step, conn, data),
                Output::Close { conn } => {
                    let i = *self.by_id.get(&conn).unwrap_or_else(|| panic!("after {step}: close of unknown {conn}"));
                    self.conns[i].closed = true;
                    self.conns[i].phase = Phase::Dead;
                }
                Output::Deliver(d) => {
                    assert!(d.purpose >= 16, "after {step}: delivered a message with reserved purpose {}", d.purpose);
                }
                Output::Forwarded { purpose, next, .. } => {
                    assert!(purpose >= 16, "after {step}: forwarded a message with reserved purpose {purpose}");
                    assert!(next != self.cfg.info.id, "after {step}: forwarded to ourselves");
                }
                Output::Event(Event::Joined) => {}
                Output::Event(_) => {}
            }
        }
        self.check(step);
    }

    fn on_transmit(&mut self, step: &str, conn: ConnId, data: Bytes) {
        let i = *self.by_id.get(&conn).unwrap_or_else(|| panic!("after {step}: transmit on unknown {conn}"));
        let c = &mut self.conns[i];
        assert!(!c.closed, "after {step}: transmit on {conn} after it was closed");
        assert!(c.established, "after {step}: transmit on {conn} before it was established");
        assert!(
            data.len() <= LENGTH_PREFIX + self.cfg.max_frame_size,
            "after {step}: the node sends a frame of {} bytes over its own maximum",
            data.len()
        );
        let msg = match wire::decode_frame(data, usize::MAX) {
            Ok(m) => m,
            Err(e) => panic!("after {step}: the node sent an undecodable frame on {conn}: {e}"),
        };
        if c.outbound && matches!(msg, Message::Hello { .. }) {
            return;
        }
        if matches!(
            msg,
            Message::Ping { .. }
                | Message::Announce { .. }
                | Message::LeafSetRequest
                | Message::RowRequest { .. }
                | Message::JoinRequest { .. }
        ) && c.requests.len() < 64
        {
            c.requests.push(msg);
        }
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

/// Pool member `i`: a few leaf-set neighbours on each side, then nodes sharing 0..6 digits with
/// `me`, in various columns; every other one in region "eu" with distinct local and global
/// addresses.
fn pool_info(me: NodeId, i: usize) -> NodeInfo {
    let m = me.as_u128();
    let mix = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    let id = match i {
        0..=3 => m.wrapping_add((i as u128 + 1) << 90),
        4..=7 => m.wrapping_sub((i as u128 - 3) << 90),
        _ => {
            let row = (i - 8) % 6;
            let shift = 4 * (DIGITS - 1 - row);
            let digit = (u128::from(me.digit(row)) + 1 + (i as u128 - 8) / 6) % 16;
            let prefix = if row == 0 { 0 } else { m >> (128 - 4 * row) << (128 - 4 * row) };
            let low = mix & ((1u128 << shift) - 1);
            prefix | (digit << shift) | low
        }
    };
    let octet = u8::try_from(i + 1).unwrap_or(u8::MAX);
    let global = SocketAddr::from(([10, 0, 0, octet], 7000));
    let mut info = NodeInfo::new(NodeId::from_u128(id), global);
    if i % 2 == 1 {
        info.region = "eu".into();
        info.local = SocketAddr::from(([192, 168, 0, octet], 7000));
    }
    info
}

/// The node descriptions a message carries.
fn infos_of(msg: &Message) -> Vec<NodeInfo> {
    match msg {
        Message::Hello { info, .. } | Message::HelloAck { info, .. } => vec![info.clone()],
        Message::JoinRequest { joiner, .. } => vec![joiner.clone()],
        Message::JoinState { rows, hood, leaves } => {
            rows.iter().chain(hood).chain(leaves.iter().flatten()).cloned().collect()
        }
        Message::Welcome { leaves, .. } | Message::LeafSet { leaves } => leaves.clone(),
        Message::Row { entries, .. } => entries.clone(),
        _ => Vec::new(),
    }
}
