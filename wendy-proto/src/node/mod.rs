//! The Pastry node: a deterministic state machine driven by inputs and drained of outputs.
//!
//! The node is one type whose state and methods are spread over modules by concern, as
//! quinn-proto spreads its connection: [`session`] (handshake), [`connections`] (dial, accept,
//! close, failures), [`transmit`] (queues, frames, sealing), [`routing`] (next hop, delivery), [`join`], [`membership`] (learning peers,
//! proximity), [`liveness`] (heartbeats, probes, failure and repair) and [`invariants`]. This
//! file holds the public surface and the dispatcher of incoming messages.

mod acks;
mod connections;
mod counters;
mod custody;
mod footprint;
mod invariants;
mod join;
mod kbr;
mod layers;
pub use layers::LAYER_PURPOSES;
mod liveness;
mod membership;
mod peer;
mod recent;
mod repair;
mod routing;
mod session;
mod timers;
mod transmit;
mod tuning;
mod vec_map;
mod window;

use std::collections::VecDeque;
use std::net::SocketAddr;

use thin_vec::ThinVec;

use bytes::Bytes;
use litemap::LiteMap;

use crate::config::{Config, ConfigError};
use crate::id::NodeId;
use crate::identity::Identity;
use crate::info::NodeInfo;
use crate::leaf_set::LeafSet;
use crate::neighbourhood::Neighbourhood;
use crate::output::{CommandError, ConnId, Event, ForwardHook, NodeError, Output, Stats, Target};
use crate::rng::Rng;
use crate::routing_table::{RoutingTable, UNKNOWN_PROXIMITY};
use crate::time::{Instant, Span};
use crate::wire::{Direct, Message, Route};

use connections::{Conn, Phase, SendFail};
use join::Held;
use peer::Peer;
use routing::Hop;
use timers::{NodeTimer, TimerKey, TimerTable};
use vec_map::VecMap;

/// A Pastry node. See the [crate documentation](crate) for how a driver runs it.
///
/// Methods come in four kinds: constructors; `handle_*` inputs (bytes and connection events
/// from the driver, timer deadlines); application commands ([`join`](Node::join),
/// [`send`](Node::send), [`send_to`](Node::send_to), [`leave`](Node::leave)); and outputs
/// ([`poll_output`](Node::poll_output), [`poll_timeout`](Node::poll_timeout)). Getters take `&self`.
#[repr(C)]
pub struct Node {
    // Laid out in this order (`repr(C)`), the fields most inputs touch first: a simulator of
    // many nodes finds a node's struct out of the cache at almost every input, and each cache
    // line an input touches is a miss.
    last_now: Instant,
    /// [`Node::stall_limit_of`] our configuration, read at every input.
    stall_limit: Span,
    state: State,
    // Sorted vectors of (key, box): 24 and 16 bytes an entry, where a B-tree's nodes, two-thirds
    // full on average and allocated one by one, cost about twice that. Boxed values: moving an
    // entry on insertion moves a pointer, and a record keeps its size whatever the map's fill.
    // Each remembers where it found its last key ([`VecMap`]): an input finds the same record
    // several times.
    peers: VecMap<NodeId, Box<Peer>>,
    conns: VecMap<ConnId, Box<Conn>>,
    out: VecDeque<Output>,
    pending_total: usize,
    /// Connections that received routed messages during this input: acknowledged in `finish`.
    ack_due: ThinVec<ConnId>,
    /// Hearsay that entered our tables in this input ([`Node::vet_learned`]); `true`: the leaf set.
    learned: ThinVec<(NodeId, bool)>,
    /// Rerouted messages waiting for a suspected root's probe to settle ([`acks`]).
    parked: acks::ParkedSet,
    /// The leaf set's members before its first change in the current input, which the
    /// input's `Event::LeafSetChanged` is reported against; `None` between inputs. (Every
    /// change is reported at the end of its input, so these are the members last reported: a
    /// node used to keep a copy of them at all times, 512 bytes at the default size.)
    leaves_before: Option<ThinVec<NodeId>>,
    seq: u32,
    /// Enabled layer purposes, one bit each ([`layers`]).
    layers: u16,
    /// `Event::Drained` was emitted (after `leave`).
    drained: bool,
    /// The next heartbeat carries our leaf set (the periodic exchange, once the gaps are long).
    push_leaves: bool,
    timers: TimerTable,
    leaf: LeafSet,
    hood: Neighbourhood,
    table: RoutingTable,
    /// Transmit and receive buffers, reused from frame to frame.
    tx: transmit::Tx,
    held: ThinVec<Held>,
    /// The routed message being handled (its reroutes and custody), and copies held for peers.
    custody: custody::Custody,
    /// Routed messages delivered here lately, so that a rerouted copy is not delivered twice.
    recent: recent::Recent,
    rng: Rng,
    next_conn: u64,
    /// The number of the next message we originate (from a random start).
    route_seq: u64,
    /// Our static key pair when the configuration gives none ([`Config::identity`]): derived
    /// from the cryptographic generator's first draw, and only at the first encrypted
    /// handshake ([`Node::identity`]); plaintext handshakes never need it. Boxed: 8 bytes of
    /// the node's struct, not 64.
    identity: Option<Box<Identity>>,
    /// Seeds drawn from the cryptographic generator (handshake ephemeral keys;
    /// [`crate::secure::crypto_draw`]).
    crypto_draws: u64,
    /// Candidates for occupied routing-table cells being measured, with when their probe went.
    candidates: LiteMap<NodeId, Instant>,
    failed: LiteMap<NodeId, Instant>,
    /// Leaf-set members declared gone, re-probed at every leaf-set exchange for a while, so
    /// that two halves of a partitioned ring find each other again once it heals.
    lost_leaves: LiteMap<NodeId, (NodeInfo, Instant)>,
    /// Live leaf-set members a nearer node pushed out, kept (peer record and connection) until
    /// the given time: at a leaf set's edge the same nodes leave and come back with every
    /// arrival and departure, and one back within this time needs no announcement anew.
    former_leaves: LiteMap<NodeId, Instant>,
    /// Candidates measured lately that lost, until when they are not measured (`MEASURED_MEMORY`
    /// at most), by the first 64 bits of their ids ([`membership::measured_key`]: 16 bytes an
    /// entry, not 24).
    measured: LiteMap<u64, Instant>,
    /// Upkeep of the routing table's rows: proximity asks and the repair of holes ([`repair`]).
    rows: repair::Rows,
    /// Failures of table members observed, for the self-tuned probe period ([`tuning`]).
    churn: tuning::ChurnEstimate,
    /// The current probe period of table members other than the neighbours ([`tuning`]).
    table_probe: Span,
    /// The longest probe period a table member's deadline may still be armed with: the tuned
    /// period's highest value since the members were last brought forward ([`Node::retune`]).
    armed_probe: Span,
    /// The gap to the next leaf-set exchange: 1/64 of the interval after joining (at most a
    /// heartbeat), doubling up to `leaf_exchange_interval`, so that neighbours that joined at
    /// the same time find each other within seconds.
    exchange_gap: Span,
    /// Leaf-set members that did not answer our announcement, and rounds of [`Node::reannounce`].
    unwelcomed: Option<Box<join::Unwelcomed>>,
    /// Set when our join failed (`JoinFailed`): the joiners we answered as their root since,
    /// the only nodes whose announcement makes this ring of one a ring of two.
    gave_up_join: Option<ThinVec<NodeId>>,
    hook: Option<Box<dyn ForwardHook>>,
    stats: counters::Counters,
    cfg: Config,
}

/// Kept small: a node's struct has no room to spare (`a_node_struct_fits_in_1792_bytes`), so
/// the lists of the two passing states are thin vectors (the awaited ids sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// A ring of one: ready, root for every key, may still join another ring.
    Alone,
    /// Waiting for the root's state; first, looking for a node near us to join through.
    Joining { bootstraps: ThinVec<SocketAddr>, attempt: u32, near: Option<Box<join::Near>> },
    /// Announced; waiting for the leaf set's answers before acting as root.
    Announcing { awaiting: ThinVec<NodeId> },
    /// A full member.
    Ready,
    /// Left the ring; inert.
    Left,
}

impl Node {
    /// A node that is, until it joins another, a ring of one; `Err` if the configuration
    /// cannot run ([`Config::validate`]).
    pub fn new(config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let me = config.info.id;
        let crypto = session::crypto_seed(&config);
        let mut crypto_draws = 0;
        let mut draw = || {
            crypto_draws += 1;
            crate::secure::crypto_draw(crypto, crypto_draws - 1)
        };
        if config.identity.is_none() {
            // The first draw is the key pair's secret, derived when first needed.
            draw();
        }
        // Message numbers start at random (the driver's entropy), so that a restarted node's
        // numbers do not repeat its previous life's.
        let seq_seed = draw();
        let route_seq = u64::from_be_bytes(seq_seed[..8].try_into().unwrap_or_default());
        let mut node = Node {
            rng: Rng::new(config.seed),
            crypto_draws,
            identity: None,
            state: State::Alone,
            leaf: LeafSet::new(me, config.leaf_set_size),
            table: RoutingTable::new(me),
            hood: Neighbourhood::new(config.neighbourhood_size),
            peers: VecMap::new(),
            conns: VecMap::new(),
            next_conn: 0,
            held: ThinVec::new(),
            parked: acks::ParkedSet::default(),
            candidates: LiteMap::new(),
            route_seq,
            recent: recent::Recent::default(),
            failed: LiteMap::new(),
            lost_leaves: LiteMap::new(),
            former_leaves: LiteMap::new(),
            out: VecDeque::new(),
            pending_total: 0,
            timers: TimerTable::default(),
            last_now: now,
            stall_limit: Span::of(Self::stall_limit_of(&config)),
            stats: counters::Counters::default(),
            hook: None,
            seq: 0,
            drained: false,
            layers: 0,
            leaves_before: None,
            ack_due: ThinVec::new(),
            custody: custody::Custody::default(),
            tx: transmit::Tx::default(),
            exchange_gap: Span::of(config.leaf_exchange_interval),
            push_leaves: false,
            churn: tuning::ChurnEstimate::default(),
            table_probe: Span::of(config.table_probe_interval),
            armed_probe: Span::of(config.table_probe_interval),
            rows: repair::Rows::new(now),
            measured: LiteMap::new(),
            unwelcomed: None,
            gave_up_join: None,
            learned: ThinVec::new(),
            cfg: config,
        };
        node.table_probe = Span::of(node.tuned_probe_period());
        node.armed_probe = node.table_probe;
        node.timers.set(NodeTimer::Heartbeat, now + node.cfg.heartbeat_interval);
        node.timers.set(NodeTimer::LeafExchange, now + node.cfg.leaf_exchange_interval);
        Ok(node)
    }

    /// Installs the hook consulted before every routed message leaves this node.
    pub fn set_forward_hook(&mut self, hook: Box<dyn ForwardHook>) {
        self.hook = Some(hook);
    }

    // ----- inputs -------------------------------------------------------------------------

    /// The driver accepted an inbound connection from `remote`; returns its name.
    pub fn handle_accepted(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        let now = self.tick_now(now);
        let id = self.alloc_conn();
        if self.conns.len() >= self.cfg.max_connections || self.state == State::Left {
            self.out.push_back(Output::Close { conn: id });
            return id;
        }
        self.conns.insert(id, Box::new(Conn::new(remote, Phase::AwaitHello, now, None, self.cfg.max_frame_size)));
        self.arm_conn(id, now + self.cfg.connect_timeout);
        id
    }

    /// The outbound connection `conn` (from [`Output::Connect`]) is established.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let now = self.tick_now(now);
        self.start_handshake(now, conn);
        self.finish();
    }

    /// The outbound connection `conn` could not be established.
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        let now = self.tick_now(now);
        if self.conns.contains_key(&conn) {
            self.conn_failed(now, conn);
        }
        self.finish();
    }

    /// `conn` was closed by the peer or broke.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let now = self.tick_now(now);
        // An accepted connection closed before it sent a byte failed nothing of ours: a
        // candidate's dialler timed its set-up (`time_candidate`), or a scanner.
        let state = self
            .conns
            .get(&conn)
            .map(|c| (matches!(c.phase, Phase::Open) || c.accepted && !c.in_use, c.closing.is_some()));
        match state {
            // The peer's answer to our `Closing`: a graceful close.
            Some((true, true)) => self.drop_conn(now, conn),
            Some((true, false)) => self.conn_lost(now, conn),
            Some((false, _)) => self.conn_failed(now, conn),
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
        let now = self.tick_now(now);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if matches!(c.phase, Phase::Dialing { .. }) {
            self.protocol_error(now, conn, "data before the connection was established");
            self.finish();
            return;
        }
        let fresh = !c.in_use;
        c.io().decoder.push_bytes(data);
        c.last_active = now;
        if fresh {
            self.recheck_idle(conn);
        }
        while let Some(c) = self.conns.get_mut(&conn) {
            match c.io().decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(body)) => self.on_frame(now, conn, body),
                Err(error) => self.decode_error(now, conn, error),
            }
        }
        if self.cfg.insecure_plaintext {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.trim_io();
            }
        }
        self.finish();
    }

    /// A timer deadline passed: every entry of the timer table due at `now` fires, in a
    /// fixed order. Calling it early, or twice, is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick_now(now);
        while let Some((at, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Node(NodeTimer::Join) => self.join_timer(now),
                TimerKey::Node(NodeTimer::Announce) => self.announce_timer(now),
                TimerKey::Node(NodeTimer::Heartbeat) => self.heartbeat_timer(now),
                TimerKey::Node(NodeTimer::LeafExchange) => self.leaf_exchange_timer(now),
                TimerKey::Conn(conn) => self.conn_timer(now, conn),
                TimerKey::Peer(key) => self.peer_timers(now, key, at),
                TimerKey::Ack(conn) => self.ack_timer(now, conn),
            }
        }
        self.finish();
    }

    // ----- application commands -----------------------------------------------------------

    /// Joins the ring that the node at `bootstrap` belongs to.
    ///
    /// Only a node that is still a ring of one may join. [`Event::Joined`] follows when the
    /// node has its state and has been acknowledged by its leaf set; [`NodeError::JoinFailed`]
    /// Routes `payload` towards `key`; it is delivered at the live node numerically closest.
    pub fn send(&mut self, now: Instant, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        let now = self.tick_now(now);
        self.check_app(purpose, payload.len())?;
        let me = self.id();
        let seq = self.next_route_seq();
        let route = Route { key, purpose, origin: me, hops: 0, seq, payload };
        let r = self.route_app(now, route, true);
        self.finish();
        r
    }

    /// Sends `payload` straight to one node, by id or by address (the Go wendy's SendToIP).
    pub fn send_to(&mut self, now: Instant, target: Target, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        let now = self.tick_now(now);
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

    /// Leaves the ring gracefully: tells every leaf-set member (over a new connection if a
    /// suspicion or a reset just closed ours) and every table member we have one to; goes inert.
    ///
    /// Messages held while joining are reported [`NodeError::Undeliverable`]. When nothing
    /// more is queued inside the node (at once, or when connections still being set up have
    /// opened or timed out), [`Event::Drained`] follows: write every transmit already
    /// polled, then close the sockets.
    pub fn leave(&mut self, now: Instant) {
        let now = self.tick_now(now);
        if self.state == State::Left {
            return;
        }
        let was_member = !matches!(self.state, State::Joining { .. });
        self.state = State::Left;
        for t in [NodeTimer::Join, NodeTimer::Announce, NodeTimer::Heartbeat, NodeTimer::LeafExchange] {
            self.timers.stop(t);
        }
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.disarm_peer(id);
        }
        if was_member {
            for id in self.table_members() {
                // Best effort: a full queue towards one peer must not stop the others.
                let _ = self.send_msg_dialling(now, id, Message::Leaving, self.leaf.contains(id));
            }
        }
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            if let Held::Route(r, token) = h {
                self.with_custody(token, |n| n.undeliverable(r));
            }
        }
        for p in self.parked.take_all() {
            self.pending_total -= 1;
            self.undeliverable(p.route);
        }
        self.finish();
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next output, in the order the node produced them. Drain until `None` after every input.
    ///
    /// The frames queued for an encrypted connection since the last poll are sealed together
    /// here, into one [`Output::Transmit`] in the place of the first of them.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.tx.has_pending() {
            self.seal_pending();
        }
        let out = self.out.pop_front();
        if out.is_some() {
            self.tx.polled += 1;
            // A drained queue gives its room back (at most every 100 ms, so that a busy node
            // keeps it between inputs): an output is 112 bytes, and in a large network most
            // nodes are idle most of the time. Room for 4 outputs kept by every node was 0.4 KB
            // of the 1.2 KB of output queues per node of a 100,000-node run after the joins.
            if self.out.is_empty() && self.out.capacity() > 0 && self.tx.may_shrink_out(self.last_now) {
                self.out = VecDeque::new();
            }
        }
        out
    }

    /// When [`handle_timeout`](Node::handle_timeout) should next be called: the earliest
    /// deadline in the node's timer table (never earlier than the latest `now` it was given);
    /// `None` once left and drained.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|t| t.max(self.last_now))
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

    /// What we know of a node, if anything (a copy: the node keeps peers compacted).
    pub fn peer(&self, id: NodeId) -> Option<NodeInfo> {
        self.peers.get(&id).map(|p| p.info(id))
    }

    /// Measured proximity of a node (round trip in microseconds, times the region factor).
    pub fn proximity(&self, id: NodeId) -> Option<u64> {
        self.peers.get(&id).map(|p| p.proximity()).filter(|&p| p != UNKNOWN_PROXIMITY)
    }

    /// The period after which a silent table member (other than our two neighbours) is
    /// probed now: tuned from
    /// the failures of table members this node has seen, between
    /// [`Config::table_probe_min`] and [`Config::table_probe_interval`] (see
    /// [`Config::table_stale_target`]).
    pub fn table_probe_period(&self) -> core::time::Duration {
        self.table_probe.get()
    }

    /// The failure rate of one table member, per second, as this node estimates it (from the
    /// failures it saw in the last 30 to 60 minutes, and a prior of one per member-hour).
    pub fn estimated_failure_rate(&self) -> f64 {
        self.churn.rate()
    }

    /// Counters. (Inline: a driver that reads a few of them after every input loads those, not
    /// a copy of them all.)
    #[inline]
    pub fn stats(&self) -> Stats {
        self.stats.stats()
    }

    /// Number of open or opening connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of peer records: table members, and the nodes of open connections and of
    /// recent failures still being settled.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Number of distinct members of the leaf set, routing table and neighbourhood set.
    pub fn member_count(&self) -> usize {
        self.table_members().len()
    }

    /// Messages queued inside the node (per-peer queues: while a connection is set up, or
    /// behind its window; messages held while joining; rerouted messages waiting for a
    /// suspected root's probe to settle).
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

    // ----- message handling ---------------------------------------------------------------

    /// Dispatches one decoded message to the layer that owns it.
    fn on_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.phase, Phase::Open) {
            self.on_handshake(now, conn, msg);
            return;
        }
        let Some(from) = c.peer() else { return };
        if msg.is_handshake() {
            self.protocol_error(now, conn, "handshake message on an open connection");
            return;
        }
        if !self.heard(now, from, &msg) {
            return;
        }
        match msg {
            Message::Route(_) | Message::Direct(_) => self.on_app_message(now, conn, msg),
            Message::JoinRequest { .. }
            | Message::JoinState { .. }
            | Message::Announce { .. }
            | Message::Welcome { .. } => self.on_join_message(now, conn, from, msg),
            Message::LeafSet { .. } | Message::Row { .. } if self.discovering() => {
                if let Some(msg) = self.on_near_reply(now, conn, from, msg) {
                    self.on_table_message(now, from, msg);
                }
            }
            Message::LeafSetRequest
            | Message::LeafSet { .. }
            | Message::RowRequest { .. }
            | Message::Row { .. }
            | Message::Locate { .. } => self.on_table_message(now, from, msg),
            Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Heartbeat { .. }
            | Message::Leaving
            | Message::Failed { .. }
            | Message::Unreachable { .. } => self.on_liveness_message(now, from, msg),
            Message::Closing => self.on_closing(now, conn, from),
            Message::Reject { reason } => self.on_rejected(now, conn, reason),
            Message::Ack { count, passed } => self.on_ack(now, conn, count, passed),
            Message::Bounce { origin, key, purpose, seq, hops } => self.on_bounce(now, origin, key, purpose, seq, hops),
            Message::Hello { .. } | Message::HelloAck { .. } | Message::Auth { .. } => {}
        }
    }

    // ----- helpers ------------------------------------------------------------------------

    fn report(&mut self, e: NodeError) {
        self.out.push_back(Output::Event(Event::Error(e)));
    }

    /// Time only moves forward: an earlier `now` than seen before is treated as the latest seen.
    /// A jump longer than [`Node::stall_limit_of`] on a node in the ring means it was not run
    /// meanwhile: see [`Node::recover_from_stall`].
    fn tick_now(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            let gap = now - self.last_now;
            self.last_now = now;
            if self.is_ready() && gap > self.stall_limit.get() {
                self.recover_from_stall(now);
            }
        }
        self.last_now
    }

    /// Emits what accumulated during one input: the coalesced leaf-set change.
    fn finish(&mut self) {
        if !self.parked.is_empty() {
            self.release_parked();
        }
        self.flush_acks();
        self.vet_learned();
        // A change noted its members before it ([`Node::note_leaves`]).
        if let Some(before) = self.leaves_before.take() {
            let now = self.leaf.members();
            let added: Vec<NodeId> = now.iter().copied().filter(|x| !before.contains(x)).collect();
            let removed: Vec<NodeId> = before.into_iter().filter(|x| !now.contains(x)).collect();
            if !added.is_empty() || !removed.is_empty() {
                let added = self.infos(added);
                self.out.push_back(Output::Event(Event::LeafSetChanged { added, removed }));
            }
        }
        if self.state == State::Left && !self.drained && self.pending_total == 0 {
            self.drained = true;
            self.timers.clear();
            self.out.push_back(Output::Event(Event::Drained));
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
