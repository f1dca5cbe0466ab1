//! The Pastry node: a deterministic state machine driven by inputs and drained of outputs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use bytes::Bytes;

use crate::config::Config;
use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::leaf_set::{LeafSet, Side};
use crate::neighbourhood::Neighbourhood;
use crate::output::{
    CommandError, ConnId, Delivery, Event, ForwardHook, Forwarding, NodeError, Output, RejectReason, Stats, Target,
};
use crate::rng::Rng;
use crate::routing_table::{RoutingTable, UNKNOWN_PROXIMITY};
use crate::time::{duration_micros, Instant};
use crate::wire::{self, Direct, FrameDecoder, Message, Route, NONCE_LEN};

const ROLE_ACCEPTOR: u8 = 1;
const ROLE_DIALER: u8 = 2;

/// A Pastry node. See the [crate documentation](crate) for how a driver runs it.
///
/// Methods come in four kinds: constructors; `handle_*` inputs (bytes and connection events
/// from the driver, timer deadlines); application commands ([`join`](Node::join),
/// [`send`](Node::send), [`send_to`](Node::send_to), [`leave`](Node::leave)); and outputs
/// ([`poll_output`](Node::poll_output), [`poll_timeout`](Node::poll_timeout)). Getters take `&self`.
pub struct Node {
    cfg: Config,
    rng: Rng,
    state: State,
    leaf: LeafSet,
    table: RoutingTable,
    hood: Neighbourhood,
    // Boxed: a B-tree node allocates room for 11 values, so large values inline would cost
    // twice their size in a sparsely filled map; a box costs a pointer.
    peers: BTreeMap<NodeId, Box<Peer>>,
    conns: BTreeMap<ConnId, Box<Conn>>,
    next_conn: u64,
    held: VecDeque<Held>,
    failed: BTreeMap<NodeId, Instant>,
    /// Leaf-set members declared gone, re-probed at every leaf-set exchange for a while, so
    /// that two halves of a partitioned ring find each other again once it heals.
    lost_leaves: BTreeMap<NodeId, (NodeInfo, Instant)>,
    out: VecDeque<Output>,
    pending_total: usize,
    next_tick: Instant,
    next_exchange: Instant,
    last_now: Instant,
    leaf_dirty: bool,
    stats: Stats,
    hook: Option<Box<dyn ForwardHook>>,
    seq: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// A ring of one: ready, root for every key, may still join another ring.
    Alone,
    /// Waiting for the root's state.
    Joining { bootstrap: SocketAddr, attempt: u32, deadline: Instant },
    /// Announced; waiting for the leaf set's answers before acting as root.
    Announcing { awaiting: BTreeSet<NodeId>, deadline: Instant },
    /// A full member.
    Ready,
    /// Left the ring; inert.
    Left,
}

#[derive(Debug)]
struct Peer {
    info: NodeInfo,
    proximity: u64,
    added: Instant,
    last_heard: Option<Instant>,
    suspected: Option<Instant>,
    ping: Option<(u32, Instant)>,
    conn: Option<ConnId>,
}

#[derive(Debug)]
struct Conn {
    addr: SocketAddr,
    phase: Phase,
    decoder: FrameDecoder,
    pending: VecDeque<Message>,
    opened: Instant,
    last_active: Instant,
    /// When we sent our first handshake message: its answer gives a free round-trip sample.
    handshake_sent: Option<Instant>,
    /// When we sent `Closing` on it: it carries nothing more from us and closes on the answer.
    closing: Option<Instant>,
    expected: Option<NodeId>,
    peer: Option<NodeId>,
}

#[derive(Debug)]
enum Phase {
    Dialing { nonce: [u8; NONCE_LEN] },
    AwaitHelloAck { nonce: [u8; NONCE_LEN] },
    AwaitHello,
    AwaitAuth { dialer_nonce: [u8; NONCE_LEN], my_nonce: [u8; NONCE_LEN], info: Box<NodeInfo> },
    Open,
}

#[derive(Debug)]
enum Held {
    Route(Route),
    Join { joiner: NodeInfo, hops: u8, via: Option<ConnId> },
}

enum Hop {
    Here,
    Next(NodeId),
    /// Not ready and nobody better known: keep it until ready.
    Hold,
}

enum SendFail {
    Unknown,
    Full,
}

impl Node {
    /// A node that is, until it joins another, a ring of one.
    pub fn new(config: Config, now: Instant) -> Self {
        let me = config.info.id;
        Node {
            rng: Rng::new(config.seed),
            state: State::Alone,
            leaf: LeafSet::new(me, config.leaf_set_size),
            table: RoutingTable::new(me),
            hood: Neighbourhood::new(config.neighbourhood_size),
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            held: VecDeque::new(),
            failed: BTreeMap::new(),
            lost_leaves: BTreeMap::new(),
            out: VecDeque::new(),
            pending_total: 0,
            next_tick: now + config.heartbeat_interval,
            next_exchange: now + config.leaf_exchange_interval,
            last_now: now,
            leaf_dirty: false,
            stats: Stats::default(),
            hook: None,
            seq: 0,
            cfg: config,
        }
    }

    /// Installs the hook consulted before every routed message leaves this node.
    pub fn set_forward_hook(&mut self, hook: Box<dyn ForwardHook>) {
        self.hook = Some(hook);
    }

    // ----- inputs -------------------------------------------------------------------------

    /// The driver accepted an inbound connection from `remote`; returns its name.
    pub fn handle_accepted(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        self.tick_now(now);
        let id = self.alloc_conn();
        if self.conns.len() >= self.cfg.max_connections || self.state == State::Left {
            self.out.push_back(Output::Close { conn: id });
            return id;
        }
        self.conns.insert(id, Box::new(Conn::new(remote, Phase::AwaitHello, now, None, self.cfg.max_frame_size)));
        id
    }

    /// The outbound connection `conn` (from [`Output::Connect`]) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        self.tick_now(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Phase::Dialing { nonce } = c.phase else { return };
        c.phase = Phase::AwaitHelloAck { nonce };
        c.last_active = now;
        c.handshake_sent = Some(now);
        let hello = Message::Hello { info: self.cfg.info.clone(), nonce };
        self.transmit(conn, &hello);
        self.finish();
    }

    /// The outbound connection `conn` could not be established.
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        self.tick_now(now);
        if self.conns.contains_key(&conn) {
            self.conn_failed(now, conn);
        }
        self.finish();
    }

    /// `conn` was closed by the peer or broke.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.tick_now(now);
        let open = self.conns.get(&conn).map(|c| matches!(c.phase, Phase::Open));
        match open {
            Some(true) => self.drop_conn(now, conn),
            Some(false) => self.conn_failed(now, conn),
            None => {}
        }
        self.finish();
    }

    /// Bytes arrived on `conn`, in any chunking of the stream. They are copied once; a driver
    /// that owns its read buffer as [`Bytes`] should call [`Node::handle_bytes`] instead.
    pub fn handle_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        self.handle_bytes(now, conn, Bytes::copy_from_slice(data));
    }

    /// Bytes arrived on `conn`, in any chunking of the stream; frames that lie whole in `data`
    /// are decoded without copying (their payloads are slices of it).
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, data: Bytes) {
        self.tick_now(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if matches!(c.phase, Phase::Dialing { .. }) {
            self.protocol_error(now, conn, "data before the connection was established");
            self.finish();
            return;
        }
        c.decoder.push_bytes(data);
        c.last_active = now;
        while let Some(c) = self.conns.get_mut(&conn) {
            match c.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => match wire::decode_body(body) {
                    Ok(msg) => {
                        self.stats.frames_in += 1;
                        self.on_message(now, conn, msg);
                    }
                    Err(error) => self.decode_error(now, conn, error),
                },
                Err(error) => self.decode_error(now, conn, error),
            }
        }
        self.finish();
    }

    /// A timer deadline passed. Calling it early, or twice, is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick_now(now);
        if now >= self.next_tick && self.state != State::Left {
            self.next_tick = now + self.cfg.heartbeat_interval;
            if self.out.is_empty() {
                // A burst (a join, a repair) must not pin its peak output queue for the node's
                // lifetime; between ticks a busy node keeps its capacity.
                self.out.shrink_to(64);
            }
            self.maintenance(now);
        }
        self.finish();
    }

    // ----- application commands -----------------------------------------------------------

    /// Joins the ring that the node at `bootstrap` belongs to.
    ///
    /// Only a node that is still a ring of one may join. [`Event::Joined`] follows when the
    /// node has its state and has been acknowledged by its leaf set; [`NodeError::JoinFailed`]
    /// if it could not.
    pub fn join(&mut self, now: Instant, bootstrap: SocketAddr) -> Result<(), CommandError> {
        self.tick_now(now);
        match self.state {
            State::Left => return Err(CommandError::Left),
            State::Alone if self.peers.is_empty() => {}
            _ => return Err(CommandError::AlreadyJoined),
        }
        if bootstrap == self.cfg.info.local || bootstrap == self.cfg.info.global {
            return Err(CommandError::SelfBootstrap);
        }
        self.state = State::Joining { bootstrap, attempt: 1, deadline: now + self.cfg.join_timeout };
        self.send_join_request(now, bootstrap);
        self.finish();
        Ok(())
    }

    /// Routes `payload` towards `key`; it is delivered at the live node numerically closest.
    pub fn send(&mut self, now: Instant, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        self.tick_now(now);
        self.check_app(purpose, payload.len())?;
        let me = self.id();
        let route = Route { key, purpose, origin: me, hops: 0, payload };
        let r = self.route_app(now, route, true);
        self.finish();
        r
    }

    /// Sends `payload` straight to one node, by id or by address (the Go wendy's SendToIP).
    pub fn send_to(&mut self, now: Instant, target: Target, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        self.tick_now(now);
        self.check_app(purpose, payload.len())?;
        let msg = Message::Direct(Direct { purpose, origin: self.id(), payload });
        let r = match target {
            Target::Node(id) if id == self.id() => {
                self.deliver_direct(msg);
                Ok(())
            }
            Target::Node(id) => match self.send_msg(now, id, msg) {
                Ok(()) => Ok(()),
                Err(SendFail::Unknown) => Err(CommandError::UnknownNode(id)),
                Err(SendFail::Full) => Err(CommandError::Backpressure),
            },
            Target::Addr(addr) if addr == self.cfg.info.local || addr == self.cfg.info.global => {
                self.deliver_direct(msg);
                Ok(())
            }
            Target::Addr(addr) => {
                let conn = self.conn_to_addr(now, addr);
                if conn.is_some_and(|c| self.enqueue(c, msg)) {
                    Ok(())
                } else {
                    Err(CommandError::Backpressure)
                }
            }
        };
        self.finish();
        r
    }

    /// Leaves the ring gracefully: tells every node in our tables that we have a connection
    /// to (leaf-set members always: heartbeats keep theirs open), then goes inert.
    ///
    /// Drain [`poll_output`](Node::poll_output) and write the transmits before closing sockets.
    pub fn leave(&mut self, now: Instant) {
        self.tick_now(now);
        if self.state == State::Left {
            return;
        }
        let was_member = !matches!(self.state, State::Joining { .. });
        self.state = State::Left;
        if was_member {
            for id in self.table_members() {
                // Best effort: a full queue towards one peer must not stop the others.
                let _ = self.send_msg(now, id, Message::Leaving);
            }
        }
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            if let Held::Route(r) = h {
                self.report(NodeError::Undeliverable { key: r.key });
                self.stats.dropped += 1;
            }
        }
        self.finish();
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next output, in the order the node produced them. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Node::handle_timeout) should next be called; `None` once left.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != State::Left).then_some(self.next_tick)
    }

    // ----- getters ------------------------------------------------------------------------

    /// Our id.
    pub fn id(&self) -> NodeId {
        self.cfg.info.id
    }

    /// Our id, addresses and region.
    pub fn info(&self) -> &NodeInfo {
        &self.cfg.info
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// True if the node acts as root for keys: a ring of one, or joined and acknowledged.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Alone | State::Ready)
    }

    /// True once the node has left.
    pub fn has_left(&self) -> bool {
        self.state == State::Left
    }

    /// True while a join is in progress.
    pub fn is_joining(&self) -> bool {
        matches!(self.state, State::Joining { .. } | State::Announcing { .. })
    }

    /// The leaf set.
    pub fn leaf_set(&self) -> &LeafSet {
        &self.leaf
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// The neighbourhood set.
    pub fn neighbourhood(&self) -> &Neighbourhood {
        &self.hood
    }

    /// What we know of a node, if anything.
    pub fn peer(&self, id: NodeId) -> Option<&NodeInfo> {
        self.peers.get(&id).map(|p| &p.info)
    }

    /// Measured proximity of a node (round trip in microseconds, times the region factor).
    pub fn proximity(&self, id: NodeId) -> Option<u64> {
        self.peers.get(&id).map(|p| p.proximity).filter(|&p| p != UNKNOWN_PROXIMITY)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of open or opening connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Messages queued inside the node (per-peer queues and messages held while joining).
    pub fn pending_messages(&self) -> usize {
        self.pending_total
    }

    /// Where a message for `key` would go now: `None` means it would be delivered here (or
    /// held, if the node is not ready).
    pub fn next_hop(&self, key: NodeId) -> Option<NodeId> {
        match self.decide(key, None) {
            Hop::Next(n) => Some(n),
            Hop::Here | Hop::Hold => None,
        }
    }

    /// Checks the node's invariants; used by tests and the fuzzer. `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let me = self.id();
        let leaf = &self.leaf;
        if leaf.cw().len() > leaf.half() || leaf.ccw().len() > leaf.half() {
            return Err("leaf set over its bound".into());
        }
        if leaf.contains(me) {
            return Err("leaf set contains ourselves".into());
        }
        if !leaf.cw().windows(2).all(|w| me.cw_distance(w[0]) < me.cw_distance(w[1]))
            || !leaf.ccw().windows(2).all(|w| w[0].cw_distance(me) < w[1].cw_distance(me))
        {
            return Err("leaf set not sorted or has duplicates".into());
        }
        for r in 0..self.table.row_count() {
            for c in 0..crate::id::BASE {
                if let Some(cell) = self.table.get(r, c) {
                    if me.common_prefix_len(cell.id) != r || usize::from(cell.id.digit(r)) != c {
                        return Err(format!("routing-table cell ({r},{c}) holds {}", cell.id));
                    }
                }
            }
        }
        if self.hood.len() > self.cfg.neighbourhood_size {
            return Err("neighbourhood over its bound".into());
        }
        for id in self.table_members() {
            if !self.peers.contains_key(&id) {
                return Err(format!("table member {id} has no peer entry"));
            }
        }
        let queued: usize = self.conns.values().map(|c| c.pending.len()).sum::<usize>() + self.held.len();
        if queued != self.pending_total || queued > self.cfg.max_pending_total {
            return Err(format!("pending count {} vs {queued}", self.pending_total));
        }
        if self.conns.values().any(|c| c.pending.len() > self.cfg.max_pending_per_peer) {
            return Err("a per-peer queue is over its bound".into());
        }
        if self.conns.len() > self.cfg.max_connections {
            return Err("too many connections".into());
        }
        if let Some(t) = self.poll_timeout() {
            if t < self.last_now {
                return Err("poll_timeout is in the past".into());
            }
        }
        Ok(())
    }

    // ----- message handling ---------------------------------------------------------------

    fn on_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.phase, Phase::Open) {
            self.on_handshake(now, conn, msg);
            return;
        }
        let Some(from) = c.peer else { return };
        if msg.is_handshake() {
            self.protocol_error(now, conn, "handshake message on an open connection");
            return;
        }
        if self.state == State::Left {
            return;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.last_heard = Some(now);
            p.suspected = None;
        }
        match msg {
            Message::Route(r) => {
                if r.purpose < 16 {
                    self.protocol_error(now, conn, "routed message with a reserved purpose");
                    return;
                }
                // A failure was already counted and reported inside route_app.
                let _ = self.route_app(now, r, false);
            }
            Message::Direct(d) => {
                if d.purpose < 16 {
                    self.protocol_error(now, conn, "direct message with a reserved purpose");
                    return;
                }
                self.deliver_direct(Message::Direct(d));
            }
            Message::JoinRequest { joiner, hops } => self.route_join(now, joiner, hops, Some(conn)),
            Message::JoinState { rows, hood, leaves } => {
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                for i in rows.into_iter().chain(hood) {
                    self.learn(now, i, false);
                }
                let is_root = leaves.is_some();
                for i in leaves.unwrap_or_default() {
                    self.learn(now, i, false);
                }
                if is_root && matches!(self.state, State::Joining { .. }) {
                    self.announce(now);
                }
            }
            Message::Announce { seq } => {
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                let leaves = if self.leaf.covers(from) { self.leaf_infos() } else { Vec::new() };
                let ready = self.is_ready();
                let _ = self.send_msg(now, from, Message::Welcome { seq, ready, leaves });
            }
            Message::Welcome { seq, ready, leaves } => {
                self.measure(now, from, seq);
                if ready {
                    if let Some(info) = self.peer_info(from) {
                        self.learn(now, info, true);
                    }
                }
                for i in leaves {
                    self.learn(now, i, false);
                }
                if let State::Announcing { awaiting, .. } = &mut self.state {
                    awaiting.remove(&from);
                    if awaiting.is_empty() {
                        self.become_ready(now);
                    }
                }
            }
            Message::LeafSetRequest => {
                let leaves = self.leaf_infos();
                let _ = self.send_msg(now, from, Message::LeafSet { leaves });
            }
            Message::LeafSet { leaves } => {
                for i in leaves {
                    self.learn(now, i, false);
                }
            }
            Message::RowRequest { row } => {
                let entries = self
                    .table
                    .row(usize::from(row))
                    .filter_map(|c| self.peers.get(&c.id).map(|p| p.info.clone()))
                    .collect();
                let _ = self.send_msg(now, from, Message::Row { row, entries });
            }
            Message::Row { entries, .. } => {
                for i in entries {
                    self.learn(now, i, false);
                }
            }
            Message::Ping { seq } => {
                self.out.push_back(Output::Event(Event::Heartbeat(from)));
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                let ready = self.is_ready();
                let _ = self.send_msg(now, from, Message::Pong { seq, ready });
            }
            Message::Pong { seq, ready } => {
                self.measure(now, from, seq);
                if ready {
                    if let Some(info) = self.peer_info(from) {
                        self.learn(now, info, true);
                    }
                }
            }
            Message::Leaving => {
                self.peer_failed(now, from);
            }
            Message::Closing => {
                let we_asked = self.conns.get(&conn).is_some_and(|c| c.closing.is_some());
                if !we_asked {
                    // Answer, and send nothing more here: the answer is the last frame.
                    self.detach(from, conn);
                    self.transmit(conn, &Message::Closing);
                }
                self.out.push_back(Output::Close { conn });
                self.drop_conn(now, conn);
            }
            Message::Hello { .. } | Message::HelloAck { .. } | Message::Auth { .. } => {}
        }
    }

    fn on_handshake(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let me = self.cfg.info.id;
        let phase = std::mem::replace(&mut c.phase, Phase::AwaitHello);
        match (phase, msg) {
            (Phase::AwaitHello, Message::Hello { info, nonce }) => {
                if info.id == me {
                    self.reject(now, conn, Some(info.id), RejectReason::SelfId);
                    return;
                }
                let mut my_nonce = [0u8; NONCE_LEN];
                self.rng.fill_bytes(&mut my_nonce);
                let proof = self.prove(&transcript(ROLE_ACCEPTOR, &nonce, &my_nonce, me, info.id));
                let ack = Message::HelloAck { info: self.cfg.info.clone(), nonce: my_nonce, proof };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::AwaitAuth { dialer_nonce: nonce, my_nonce, info: Box::new(info) };
                    c.handshake_sent = Some(now);
                }
                self.transmit(conn, &ack);
            }
            (Phase::AwaitHelloAck { nonce }, Message::HelloAck { info, nonce: their, proof }) => {
                let expected = c.expected;
                let reason = if info.id == me {
                    Some(RejectReason::SelfId)
                } else if expected.is_some_and(|e| e != info.id) {
                    Some(RejectReason::WrongId)
                } else if !self.verify(&transcript(ROLE_ACCEPTOR, &nonce, &their, info.id, me), &proof) {
                    Some(RejectReason::BadCredentials)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.reject(now, conn, Some(info.id), reason);
                    return;
                }
                let proof = self.prove(&transcript(ROLE_DIALER, &nonce, &their, me, info.id));
                self.transmit(conn, &Message::Auth { proof });
                self.open(now, conn, info);
            }
            (Phase::AwaitAuth { dialer_nonce, my_nonce, info }, Message::Auth { proof }) => {
                if self.verify(&transcript(ROLE_DIALER, &dialer_nonce, &my_nonce, info.id, me), &proof) {
                    self.open(now, conn, *info);
                } else {
                    self.reject(now, conn, Some(info.id), RejectReason::BadCredentials);
                }
            }
            (phase, _) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = phase;
                }
                self.protocol_error(now, conn, "unexpected message during the handshake");
            }
        }
    }

    fn open(&mut self, now: Instant, conn: ConnId, info: NodeInfo) {
        let id = info.id;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.phase = Phase::Open;
        c.peer = Some(id);
        c.decoder.set_max_frame(self.cfg.max_frame_size);
        c.last_active = now;
        let rtt = c.handshake_sent.map(|t| now - t);
        let pending = std::mem::take(&mut c.pending);
        self.pending_total -= pending.len();
        let peer = self.peers.entry(id).or_insert_with(|| Box::new(Peer::new(info.clone(), now)));
        peer.info = info;
        if let Some(rtt) = rtt {
            peer.proximity = proximity(rtt, &peer.info.region, &self.cfg.info.region, self.cfg.region_factor);
        }
        let current_open = peer
            .conn
            .is_some_and(|pc| pc != conn && self.conns.get(&pc).is_some_and(|x| matches!(x.phase, Phase::Open)));
        if !current_open {
            peer.conn = Some(conn);
        }
        for m in pending {
            self.transmit(conn, &m);
        }
    }

    // ----- routing ------------------------------------------------------------------------

    fn decide(&self, key: NodeId, exclude: Option<NodeId>) -> Hop {
        let me = self.id();
        let ok = |id: NodeId| Some(id) != exclude;
        if !self.is_ready() {
            let best = self.table_members().into_iter().filter(|&x| ok(x)).fold(None, |b: Option<NodeId>, x| match b {
                Some(b) if !key.is_closer(x, b) => Some(b),
                _ => Some(x),
            });
            return match best {
                Some(b) if key.is_closer(b, me) => Hop::Next(b),
                _ => Hop::Hold,
            };
        }
        if self.leaf.covers(key) {
            let best = match exclude {
                Some(x) => self.leaf.closest_excluding(key, x),
                None => self.leaf.closest(key),
            };
            return if best == me { Hop::Here } else { Hop::Next(best) };
        }
        let row = me.common_prefix_len(key);
        if row >= crate::id::DIGITS {
            return Hop::Here;
        }
        if let Some(cell) = self.table.get(row, usize::from(key.digit(row))) {
            if ok(cell.id) {
                return Hop::Next(cell.id);
            }
        }
        // The rare case: anyone sharing as long a prefix and numerically closer.
        let mut best = me;
        let candidates = self.leaf.cw().iter().chain(self.leaf.ccw()).copied();
        let candidates = candidates.chain(self.table.iter().map(|c| c.id)).chain(self.hood.iter().map(|e| e.1));
        for x in candidates {
            if ok(x) && x.common_prefix_len(key) >= row && key.is_closer(x, best) {
                best = x;
            }
        }
        if best == me {
            Hop::Here
        } else {
            Hop::Next(best)
        }
    }

    fn route_app(&mut self, now: Instant, mut route: Route, local: bool) -> Result<(), CommandError> {
        match self.decide(route.key, None) {
            Hop::Here => {
                self.stats.delivered += 1;
                self.out.push_back(Output::Deliver(Delivery {
                    key: route.key,
                    purpose: route.purpose,
                    origin: route.origin,
                    hops: route.hops,
                    direct: false,
                    payload: route.payload,
                }));
                Ok(())
            }
            Hop::Hold => {
                if self.pending_total >= self.cfg.max_pending_total {
                    return self.drop_msg(None, local);
                }
                self.pending_total += 1;
                self.held.push_back(Held::Route(route));
                Ok(())
            }
            Hop::Next(next) => {
                if route.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                    self.report(NodeError::HopLimit { key: route.key });
                    return Ok(());
                }
                if let Some(hook) = self.hook.as_mut() {
                    let info = &self.peers[&next].info;
                    let mut f = Forwarding {
                        key: route.key,
                        purpose: route.purpose,
                        origin: route.origin,
                        hops: route.hops,
                        payload: route.payload,
                    };
                    let pass = hook.on_forward(&mut f, info) && f.purpose >= 16;
                    route.purpose = f.purpose;
                    route.payload = f.payload;
                    if !pass {
                        self.stats.dropped += 1;
                        return Ok(());
                    }
                }
                route.hops = route.hops.saturating_add(1);
                let (key, purpose, origin, hops) = (route.key, route.purpose, route.origin, route.hops);
                match self.send_msg(now, next, Message::Route(route)) {
                    Ok(()) => {
                        self.stats.forwarded += u64::from(!local);
                        self.out.push_back(Output::Forwarded { key, purpose, origin, next, hops });
                        Ok(())
                    }
                    Err(_) => self.drop_msg(Some(next), local),
                }
            }
        }
    }

    fn drop_msg(&mut self, peer: Option<NodeId>, local: bool) -> Result<(), CommandError> {
        if local {
            return Err(CommandError::Backpressure);
        }
        self.stats.dropped += 1;
        self.report(NodeError::QueueFull { peer });
        Ok(())
    }

    /// Handles a join request; `via` is the connection it came on, used to answer the joiner
    /// directly when the joiner itself sent it (no new connection, no dial on a peer's say-so).
    fn route_join(&mut self, now: Instant, joiner: NodeInfo, hops: u8, via: Option<ConnId>) {
        let me = self.id();
        if joiner.id == me || hops >= self.cfg.max_hops {
            return;
        }
        let hop = self.decide(joiner.id, Some(joiner.id));
        if let Hop::Hold = hop {
            if self.pending_total < self.cfg.max_pending_total {
                self.pending_total += 1;
                self.held.push_back(Held::Join { joiner, hops, via });
            }
            return;
        }
        if self.is_ready() {
            let depth = me.common_prefix_len(joiner.id);
            let mut rows: Vec<NodeInfo> = (0..=depth.min(crate::id::DIGITS - 1))
                .flat_map(|r| self.table.row(r).collect::<Vec<_>>())
                .filter(|c| c.id != joiner.id)
                .filter_map(|c| self.peers.get(&c.id).map(|p| p.info.clone()))
                .collect();
            rows.push(self.cfg.info.clone());
            let hood = if hops == 0 { self.infos(self.hood.iter().map(|e| e.1)) } else { Vec::new() };
            let leaves = matches!(hop, Hop::Here)
                .then(|| self.infos(self.leaf.members().into_iter().filter(|&x| x != joiner.id)));
            let state = Message::JoinState { rows, hood, leaves };
            let direct =
                via.filter(|c| self.conns.get(c).is_some_and(|c| c.peer == Some(joiner.id) && c.closing.is_none()));
            match direct {
                Some(conn) => {
                    self.enqueue(conn, state);
                }
                None => {
                    self.peers.entry(joiner.id).or_insert_with(|| Box::new(Peer::new(joiner.clone(), now)));
                    let _ = self.send_msg(now, joiner.id, state);
                }
            }
            self.stats.join_messages += 1;
        }
        if let Hop::Next(next) = hop {
            if self.send_msg(now, next, Message::JoinRequest { joiner, hops: hops + 1 }).is_ok() {
                self.stats.join_messages += 1;
            }
        }
    }

    fn send_join_request(&mut self, now: Instant, bootstrap: SocketAddr) {
        let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 0 };
        // If no connection can be had now, the join deadline retries.
        if let Some(conn) = self.conn_to_addr(now, bootstrap) {
            self.enqueue(conn, msg);
            self.stats.join_messages += 1;
        }
    }

    fn announce(&mut self, now: Instant) {
        let targets = self.table_members();
        let awaiting: BTreeSet<NodeId> = self.leaf.members().into_iter().collect();
        for id in targets {
            self.probe(now, id, true);
            self.stats.join_messages += 1;
        }
        self.state = State::Announcing { awaiting, deadline: now + self.cfg.connect_timeout };
        if matches!(&self.state, State::Announcing { awaiting, .. } if awaiting.is_empty()) {
            self.become_ready(now);
        }
    }

    fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.next_exchange = now + self.cfg.leaf_exchange_interval;
        self.out.push_back(Output::Event(Event::Joined));
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            match h {
                Held::Route(r) => {
                    let _ = self.route_app(now, r, false);
                }
                Held::Join { joiner, hops, via } => self.route_join(now, joiner, hops, via),
            }
        }
    }

    // ----- state tables -------------------------------------------------------------------

    /// Adds what we heard of `info` to the tables. `direct`: heard from the node itself.
    fn learn(&mut self, now: Instant, info: NodeInfo, direct: bool) {
        let id = info.id;
        if id == self.id() || self.state == State::Left || !info.is_valid() {
            return;
        }
        if direct {
            self.failed.remove(&id);
            self.lost_leaves.remove(&id);
            if self.state == State::Alone {
                self.state = State::Ready;
            }
        } else if self.failed.contains_key(&id) {
            return;
        }
        let was_member = self.in_tables(id);
        let was_known = self.peers.contains_key(&id);
        let peer = self.peers.entry(id).or_insert_with(|| Box::new(Peer::new(info, now)));
        if direct {
            peer.last_heard = Some(now);
            peer.suspected = None;
        }
        let heard = peer.last_heard.is_some();
        let prox = peer.proximity;
        let leaf_changed = self.leaf.insert(id);
        self.table.insert(id, prox);
        if prox != UNKNOWN_PROXIMITY {
            self.hood.insert(id, prox);
        }
        if leaf_changed {
            self.leaf_dirty = true;
        }
        if !self.in_tables(id) {
            // Hearsay that found no place in any table is not kept: a peer cannot make us
            // remember more nodes than our tables hold.
            if !was_known {
                self.peers.remove(&id);
            }
            return;
        }
        if !was_member {
            let info = self.peers[&id].info.clone();
            self.out.push_back(Output::Event(Event::NodeJoined(info)));
        }
        let probing = matches!(self.state, State::Ready | State::Announcing { .. });
        if leaf_changed && !heard && probing && self.peers[&id].ping.is_none() {
            self.probe(now, id, true);
        }
    }

    /// Sends an `Announce` (or a `Ping`) to `id`, remembering when, to measure the round trip.
    fn probe(&mut self, now: Instant, id: NodeId, announce: bool) {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        if let Some(p) = self.peers.get_mut(&id) {
            p.ping = Some((seq, now));
        }
        let msg = if announce { Message::Announce { seq } } else { Message::Ping { seq } };
        let _ = self.send_msg(now, id, msg);
    }

    fn measure(&mut self, now: Instant, from: NodeId, seq: u32) {
        let region = &self.cfg.info.region;
        let factor = self.cfg.region_factor;
        let Some(p) = self.peers.get_mut(&from) else { return };
        let Some((s, sent)) = p.ping else { return };
        if s != seq {
            return;
        }
        p.ping = None;
        let prox = proximity(now - sent, &p.info.region, region, factor);
        p.proximity = prox;
        self.table.update_proximity(from, prox);
        self.table.insert(from, prox);
        if self.in_tables(from) || self.hood.len() < self.cfg.neighbourhood_size {
            self.hood.insert(from, prox);
        }
    }

    /// `id` left or stopped answering: remove it everywhere and repair.
    fn peer_failed(&mut self, now: Instant, id: NodeId) {
        let was_member = self.in_tables(id);
        let sides = self.leaf.remove(id);
        let slot = self.table.remove(id);
        self.hood.remove(id);
        self.failed.insert(id, now + self.cfg.detection_time() * 2);
        if let State::Announcing { awaiting, .. } = &mut self.state {
            awaiting.remove(&id);
            if awaiting.is_empty() {
                self.become_ready(now);
            }
        }
        let conns: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.peer == Some(id) || c.expected == Some(id)).map(|(&k, _)| k).collect();
        let info = self.peers.remove(&id).map(|p| p.info);
        if let (false, Some(info)) = (sides.is_empty(), &info) {
            self.remember_lost_leaf(now, info.clone());
        }
        for conn in conns {
            self.out.push_back(Output::Close { conn });
            self.drop_conn(now, conn);
        }
        if let (true, Some(info)) = (was_member, info) {
            self.out.push_back(Output::Event(Event::NodeLeft(info)));
        }
        if !sides.is_empty() {
            self.leaf_dirty = true;
        }
        if self.state == State::Left {
            return;
        }
        if !sides.is_empty() {
            self.repair_leaf(now, &sides);
        }
        if let Some((row, col)) = slot {
            self.repair_row(now, row, col);
        }
    }

    fn repair_leaf(&mut self, now: Instant, sides: &[Side]) {
        let mut asked = Vec::new();
        for side in sides {
            let (same, other) = match side {
                Side::Cw => (self.leaf.cw(), self.leaf.ccw()),
                Side::Ccw => (self.leaf.ccw(), self.leaf.cw()),
            };
            let target = same.last().or(other.last()).copied();
            let target = target.or_else(|| self.table.iter().next().map(|c| c.id));
            if let Some(t) = target {
                if !asked.contains(&t) {
                    asked.push(t);
                    let _ = self.send_msg(now, t, Message::LeafSetRequest);
                }
            }
        }
    }

    fn repair_row(&mut self, now: Instant, row: usize, col: usize) {
        let ask = self
            .table
            .row(row)
            .find(|c| usize::from(c.id.digit(row)) != col)
            .or_else(|| self.table.row(row + 1).next())
            .map(|c| c.id);
        if let (Some(id), Ok(row)) = (ask, u8::try_from(row)) {
            let _ = self.send_msg(now, id, Message::RowRequest { row });
        }
    }

    fn peer_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.peers.get(&id).map(|p| p.info.clone())
    }

    fn in_tables(&self, id: NodeId) -> bool {
        self.leaf.contains(id) || self.table.contains(id) || self.hood.contains(id)
    }

    /// Everyone in the leaf set, routing table and neighbourhood, each once, in id order.
    fn table_members(&self) -> Vec<NodeId> {
        let mut set: BTreeSet<NodeId> = self.leaf.members().into_iter().collect();
        set.extend(self.table.iter().map(|c| c.id));
        set.extend(self.hood.iter().map(|e| e.1));
        set.into_iter().collect()
    }

    fn infos(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeInfo> {
        ids.into_iter().filter_map(|id| self.peers.get(&id).map(|p| p.info.clone())).collect()
    }

    fn leaf_infos(&self) -> Vec<NodeInfo> {
        self.infos(self.leaf.members())
    }

    // ----- timers -------------------------------------------------------------------------

    fn maintenance(&mut self, now: Instant) {
        match &self.state {
            State::Joining { bootstrap, attempt, deadline } if now >= *deadline => {
                let (bootstrap, attempt) = (*bootstrap, *attempt);
                if attempt < self.cfg.join_attempts {
                    self.state =
                        State::Joining { bootstrap, attempt: attempt + 1, deadline: now + self.cfg.join_timeout };
                    self.send_join_request(now, bootstrap);
                } else {
                    self.state = State::Alone;
                    self.report(NodeError::JoinFailed { attempts: attempt });
                    self.forget_all(now);
                }
            }
            State::Announcing { deadline, .. } if now >= *deadline => self.become_ready(now),
            _ => {}
        }
        if matches!(self.state, State::Ready | State::Announcing { .. }) {
            self.heartbeats(now);
        }
        // Connections that took too long to set up, or sat idle.
        let mut slow = Vec::new();
        let mut idle = Vec::new();
        let mut unanswered = Vec::new();
        for (&id, c) in &self.conns {
            if !matches!(c.phase, Phase::Open) {
                if now - c.opened >= self.cfg.connect_timeout {
                    slow.push(id);
                }
            } else if let Some(t) = c.closing {
                if now - t >= self.cfg.connect_timeout {
                    unanswered.push(id);
                }
            } else if now - c.last_active >= self.cfg.idle_timeout && !c.peer.is_some_and(|p| self.leaf.contains(p)) {
                idle.push(id);
            }
        }
        for id in unanswered {
            self.out.push_back(Output::Close { conn: id });
            self.drop_conn(now, id);
        }
        for id in slow {
            // The driver still holds this socket (connecting, or a peer that stalls its
            // handshake): tell it to close before forgetting the connection.
            self.out.push_back(Output::Close { conn: id });
            self.conn_failed(now, id);
        }
        for id in idle {
            self.start_closing(now, id);
        }
        self.failed.retain(|_, until| *until > now);
        // Forget peers that are in no table and have no connection.
        let conns = &self.conns;
        let (leaf, table, hood) = (&self.leaf, &self.table, &self.hood);
        self.peers.retain(|&id, p| {
            leaf.contains(id)
                || table.contains(id)
                || hood.contains(id)
                || p.conn.is_some_and(|c| conns.contains_key(&c))
        });
        if self.state == State::Ready && now >= self.next_exchange {
            self.next_exchange = now + self.cfg.leaf_exchange_interval;
            let near: Vec<NodeId> =
                self.leaf.cw().first().into_iter().chain(self.leaf.ccw().first()).copied().collect();
            let mut asked = Vec::new();
            for id in near {
                if !asked.contains(&id) {
                    asked.push(id);
                    let _ = self.send_msg(now, id, Message::LeafSetRequest);
                }
            }
            self.reprobe_lost_leaves(now);
        }
    }

    /// Keeps a departed leaf-set member's address for `LOST_LEAF_MEMORY`, at most L of them.
    fn remember_lost_leaf(&mut self, now: Instant, info: NodeInfo) {
        if self.lost_leaves.contains_key(&info.id) {
            return;
        }
        self.lost_leaves.insert(info.id, (info, now + LOST_LEAF_MEMORY));
        while self.lost_leaves.len() > self.cfg.leaf_set_size.max(1) {
            let oldest = self.lost_leaves.iter().min_by_key(|(&id, (_, until))| (*until, id)).map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.lost_leaves.remove(&id);
            }
        }
    }

    /// Pings the departed leaf-set members we still remember: one that answers is alive (a
    /// healed partition, a false suspicion) and is learned again.
    fn reprobe_lost_leaves(&mut self, now: Instant) {
        self.lost_leaves.retain(|_, (_, until)| *until > now);
        let lost: Vec<NodeInfo> = self.lost_leaves.values().map(|(info, _)| info.clone()).collect();
        for info in lost {
            let id = info.id;
            if self.peers.contains_key(&id) {
                continue;
            }
            self.peers.insert(id, Box::new(Peer::new(info, now)));
            self.probe(now, id, false);
        }
    }

    /// Heartbeats to leaf-set members every tick; every other table member is pinged when it
    /// has been silent for `table_probe_interval`. A member silent that long is suspected and probed;
    /// one that does not answer within `probe_timeout` is removed.
    fn heartbeats(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for id in self.table_members() {
            let is_leaf = self.leaf.contains(id);
            let Some(p) = self.peers.get_mut(&id) else { continue };
            let since = now - p.last_heard.unwrap_or(p.added);
            let silence_limit = if is_leaf { self.cfg.suspect_timeout } else { self.cfg.table_probe_interval };
            match p.suspected {
                Some(t) if now - t >= self.cfg.probe_timeout => dead.push(id),
                Some(_) => {}
                None if since >= silence_limit => {
                    p.suspected = Some(now);
                    self.probe(now, id, false);
                }
                None if !is_leaf => {}
                // Silence shorter than one interval needs no heartbeat: we just heard from it.
                None if since < self.cfg.heartbeat_interval && p.last_heard.is_some() => {}
                None => self.probe(now, id, false),
            }
        }
        for id in dead {
            self.peer_failed(now, id);
        }
    }

    fn forget_all(&mut self, now: Instant) {
        for id in self.table_members() {
            self.leaf.remove(id);
            self.table.remove(id);
            self.hood.remove(id);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.out.push_back(Output::Close { conn: c });
            self.drop_conn(now, c);
        }
        self.peers.clear();
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            if let Held::Route(r) = h {
                // A ring of one is root for everything.
                let _ = self.route_app(now, r, false);
            }
        }
        self.leaf_dirty = true;
    }

    // ----- connections --------------------------------------------------------------------

    fn alloc_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Starts a connection to `addr`; `None` if `max_connections` are open and none can be
    /// given up (connections count against the limit in both directions).
    fn dial(&mut self, now: Instant, addr: SocketAddr, expected: Option<NodeId>) -> Option<ConnId> {
        if self.conns.len() >= self.cfg.max_connections && !self.make_room(now) {
            return None;
        }
        let id = self.alloc_conn();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        self.conns
            .insert(id, Box::new(Conn::new(addr, Phase::Dialing { nonce }, now, expected, self.cfg.max_frame_size)));
        self.out.push_back(Output::Connect { conn: id, addr });
        Some(id)
    }

    /// Frees a connection slot at once: a connection already closing gracefully, else the least
    /// recently used open one that no leaf-set member depends on. This is the hard limit, so
    /// the close is abrupt (idle connections normally close gracefully long before).
    fn make_room(&mut self, now: Instant) -> bool {
        let closing = self.conns.iter().filter(|(_, c)| c.closing.is_some()).min_by_key(|(&k, c)| (c.closing, k));
        let victim = closing.map(|(&k, _)| k).or_else(|| {
            self.conns
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Open))
                .filter(|(_, c)| !c.peer.is_some_and(|p| self.leaf.contains(p)))
                .min_by_key(|(&k, c)| (c.last_active, k))
                .map(|(&k, _)| k)
        });
        let Some(victim) = victim else { return false };
        self.out.push_back(Output::Close { conn: victim });
        self.drop_conn(now, victim);
        true
    }

    /// Begins the graceful close of an open connection: `Closing` goes out, nothing more is
    /// sent on it, and it closes when the peer answers (or after `connect_timeout`).
    fn start_closing(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.closing = Some(now);
        let peer = c.peer;
        self.transmit(conn, &Message::Closing);
        if let Some(pid) = peer {
            self.detach(pid, conn);
        }
    }

    /// Stops sending to `peer` over `conn`: its next message uses another open connection or a
    /// new one.
    fn detach(&mut self, peer: NodeId, conn: ConnId) {
        let other = self
            .conns
            .iter()
            .find(|(&k, x)| k != conn && x.peer == Some(peer) && matches!(x.phase, Phase::Open) && x.closing.is_none())
            .map(|(&k, _)| k);
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.conn == Some(conn) {
                p.conn = other;
            }
        }
    }

    /// A connection to `addr` we dialled (open or opening), or a new one.
    fn conn_to_addr(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let existing = self
            .conns
            .iter()
            .find(|(_, c)| {
                c.addr == addr && c.closing.is_none() && !matches!(c.phase, Phase::AwaitHello | Phase::AwaitAuth { .. })
            })
            .map(|(&k, _)| k);
        existing.or_else(|| self.dial(now, addr, None))
    }

    /// Sends `msg` to a known node, dialling it if needed.
    fn send_msg(&mut self, now: Instant, to: NodeId, msg: Message) -> Result<(), SendFail> {
        let Some(peer) = self.peers.get(&to) else { return Err(SendFail::Unknown) };
        let conn = match peer.conn.filter(|c| self.conns.contains_key(c)) {
            Some(c) => c,
            // A node that has left only says goodbye on the connections it has.
            None if self.state == State::Left => return Err(SendFail::Unknown),
            None => {
                let addr = peer.info.addr_from(&self.cfg.info.region);
                let Some(c) = self.dial(now, addr, Some(to)) else {
                    self.stats.dropped += 1;
                    return Err(SendFail::Full);
                };
                if let Some(p) = self.peers.get_mut(&to) {
                    p.conn = Some(c);
                }
                c
            }
        };
        if self.enqueue(conn, msg) {
            Ok(())
        } else {
            Err(SendFail::Full)
        }
    }

    /// Transmits on an open connection, or queues until it opens. False if the queue is full.
    fn enqueue(&mut self, conn: ConnId, msg: Message) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        if c.closing.is_some() {
            return false;
        }
        if matches!(c.phase, Phase::Open) {
            c.last_active = self.last_now;
            self.transmit(conn, &msg);
            return true;
        }
        if c.pending.len() >= self.cfg.max_pending_per_peer || self.pending_total >= self.cfg.max_pending_total {
            return false;
        }
        c.pending.push_back(msg);
        self.pending_total += 1;
        true
    }

    fn transmit(&mut self, conn: ConnId, msg: &Message) {
        let data = wire::encode(msg);
        self.stats.frames_out += 1;
        self.stats.bytes_out += data.len() as u64;
        if !msg.is_application() {
            self.stats.control_frames_out += 1;
            self.stats.control_bytes_out += data.len() as u64;
        }
        self.out.push_back(Output::Transmit { conn, data });
    }

    /// Forgets a connection; what was queued on it is re-routed or dropped.
    fn drop_conn(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        self.pending_total -= c.pending.len();
        if let Some(pid) = c.peer.or(c.expected) {
            self.detach(pid, conn);
        }
        for m in c.pending {
            self.requeue(now, m);
        }
    }

    /// A message whose connection failed before it was written: route it again if it can be.
    fn requeue(&mut self, now: Instant, m: Message) {
        if self.state == State::Left {
            return;
        }
        match m {
            Message::Route(r) => {
                let _ = self.route_app(now, r, false);
            }
            Message::JoinRequest { joiner, hops } if joiner.id != self.id() => self.route_join(now, joiner, hops, None),
            Message::Direct(_) => {
                self.stats.dropped += 1;
            }
            _ => {}
        }
    }

    /// An outbound connection failed, or a connection failed before its handshake completed.
    fn conn_failed(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, expected) = (c.addr, c.expected);
        self.stats.connect_failures += 1;
        self.report(NodeError::ConnectFailed { addr });
        if let State::Joining { bootstrap, deadline, .. } = &mut self.state {
            if *bootstrap == addr {
                *deadline = (*deadline).min(now + self.cfg.heartbeat_interval);
            }
        }
        match expected {
            Some(id) => {
                // peer_failed closes and drops every connection of that peer, this one included.
                self.drop_conn(now, conn);
                self.peer_failed(now, id);
            }
            None => self.drop_conn(now, conn),
        }
    }

    fn decode_error(&mut self, now: Instant, conn: ConnId, error: wire::WireError) {
        self.stats.decode_errors += 1;
        self.report(NodeError::Decode { conn, error });
        self.close_bad(now, conn);
    }

    fn protocol_error(&mut self, now: Instant, conn: ConnId, what: &'static str) {
        self.stats.protocol_errors += 1;
        self.report(NodeError::Protocol { conn, what });
        self.close_bad(now, conn);
    }

    fn reject(&mut self, now: Instant, conn: ConnId, claimed: Option<NodeId>, reason: RejectReason) {
        self.stats.rejected_peers += 1;
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, expected) = (c.addr, c.expected);
        self.out.push_back(Output::Event(Event::PeerRejected { addr, claimed, reason }));
        self.out.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
        if let Some(id) = expected {
            self.peer_failed(now, id);
        }
    }

    fn close_bad(&mut self, now: Instant, conn: ConnId) {
        let expected =
            self.conns.get(&conn).and_then(|c| if matches!(c.phase, Phase::Open) { None } else { c.expected });
        self.out.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
        if let Some(id) = expected {
            self.peer_failed(now, id);
        }
    }

    // ----- helpers ------------------------------------------------------------------------

    fn check_app(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        if self.state == State::Left {
            return Err(CommandError::Left);
        }
        if purpose < 16 {
            return Err(CommandError::ReservedPurpose(purpose));
        }
        let max = self.cfg.max_frame_size.saturating_sub(64);
        if len > max {
            return Err(CommandError::PayloadTooLarge { len, max });
        }
        Ok(())
    }

    fn deliver_direct(&mut self, msg: Message) {
        if let Message::Direct(d) = msg {
            self.stats.delivered += 1;
            self.out.push_back(Output::Deliver(Delivery {
                key: self.id(),
                purpose: d.purpose,
                origin: d.origin,
                hops: u8::from(d.origin != self.id()),
                direct: true,
                payload: d.payload,
            }));
        }
    }

    fn prove(&self, transcript: &[u8]) -> Vec<u8> {
        self.cfg.credentials.as_ref().map(|c| c.prove(transcript)).unwrap_or_default()
    }

    fn verify(&self, transcript: &[u8], proof: &[u8]) -> bool {
        self.cfg.credentials.as_ref().is_none_or(|c| c.verify(transcript, proof))
    }

    fn report(&mut self, e: NodeError) {
        self.out.push_back(Output::Event(Event::Error(e)));
    }

    /// Time only moves forward: an earlier `now` than seen before is treated as the latest seen.
    fn tick_now(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    /// Emits what accumulated during one input: the coalesced leaf-set change.
    fn finish(&mut self) {
        if std::mem::take(&mut self.leaf_dirty) {
            let leaves = self.leaf_infos();
            self.out.push_back(Output::Event(Event::LeafSetChanged(leaves)));
        }
    }
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id())
            .field("state", &self.state)
            .field("leaves", &self.leaf.len())
            .field("table", &self.table.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Peer {
    fn new(info: NodeInfo, now: Instant) -> Self {
        Peer {
            info,
            proximity: UNKNOWN_PROXIMITY,
            added: now,
            last_heard: None,
            suspected: None,
            ping: None,
            conn: None,
        }
    }
}

impl Conn {
    fn new(addr: SocketAddr, phase: Phase, now: Instant, expected: Option<NodeId>, max_frame: usize) -> Self {
        Conn {
            addr,
            phase,
            decoder: FrameDecoder::new(max_frame.min(wire::MAX_HANDSHAKE_FRAME)),
            pending: VecDeque::new(),
            opened: now,
            last_active: now,
            handshake_sent: None,
            closing: None,
            expected,
            peer: None,
        }
    }
}

/// How long a departed leaf-set member is re-probed before it is forgotten.
const LOST_LEAF_MEMORY: core::time::Duration = core::time::Duration::from_secs(600);

/// Proximity of a node: the round trip in microseconds, times `factor` across regions.
fn proximity(rtt: core::time::Duration, their_region: &str, our_region: &str, factor: u64) -> u64 {
    let rtt = duration_micros(rtt).max(1);
    if their_region == our_region {
        rtt
    } else {
        rtt.saturating_mul(factor)
    }
}

/// What each side of a handshake signs: both nonces, both ids, and the prover's role.
fn transcript(role: u8, dialer_nonce: &[u8], acceptor_nonce: &[u8], prover: NodeId, verifier: NodeId) -> Vec<u8> {
    let mut t = Vec::with_capacity(18 + 1 + 32 + 32);
    t.extend_from_slice(b"wendy/handshake/v1");
    t.push(role);
    t.extend_from_slice(dialer_nonce);
    t.extend_from_slice(acceptor_nonce);
    t.extend_from_slice(&prover.to_bytes());
    t.extend_from_slice(&verifier.to_bytes());
    t
}
