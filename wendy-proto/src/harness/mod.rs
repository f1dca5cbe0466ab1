//! An in-memory network of nodes on a virtual clock, for protocol tests.
//!
//! The harness moves real encoded frames between [`Node`]s over modelled stream connections,
//! with a fixed per-pair latency, in a single event queue ordered by (time, sequence). It is
//! deterministic: the same calls give the same run. Tests read like a script:
//!
//! ```
//! use wendy_proto::harness::Harness;
//! use wendy_proto::NodeId;
//! use core::time::Duration;
//!
//! let mut h = Harness::new(7);
//! let a = h.add_node(NodeId::hash(b"a"));
//! let b = h.add_node(NodeId::hash(b"b"));
//! h.join(b, a);
//! h.run_for(Duration::from_secs(2));
//! assert!(h.node(b).is_ready());
//! let key = NodeId::hash(b"some key");
//! h.send(a, key, 16, b"payload");
//! h.run_for(Duration::from_secs(1));
//! assert_eq!(h.deliveries().len(), 1);
//! assert_eq!(h.deliveries()[0].node, h.closest_ready(key).unwrap());
//! ```
//!
//! To play the other side of one node frame by hand instead, see [`script`] (plaintext) and
//! [`secure_peer`] (the encrypted transport).

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;

use crate::config::Config;
use crate::id::NodeId;
use crate::output::{ConnId, Delivery, Event, Output};
use crate::rng::{splitmix64, Rng};
use crate::store::{MemoryBackend, OpId, Outcome, Store, StoreConfig, StoreError, StoreEvent};
use crate::time::Instant;
use crate::wire::{self, Message};
use crate::Node;

pub mod chain;
pub mod script;
pub mod secure_peer;

/// A delivery observed by the harness.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Index of the node it was delivered at.
    pub node: usize,
    /// When.
    pub at: Instant,
    /// What.
    pub delivery: Delivery,
}

#[derive(Debug)]
enum Ev {
    Accept { from: usize, conn: ConnId, to: usize },
    Connected { node: usize, conn: ConnId },
    ConnectFailed { node: usize, conn: ConnId },
    Data { node: usize, conn: ConnId, data: Bytes },
    Closed { node: usize, conn: ConnId },
    Timer { node: usize },
}

/// N nodes, a virtual clock and the frames in flight between them.
pub struct Harness {
    seed: u64,
    now: Instant,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    group: Vec<u8>,
    /// (dialler, acceptor) pairs whose dials go unanswered ([`Harness::block_dials`]).
    blocked: BTreeSet<(usize, usize)>,
    addrs: BTreeMap<SocketAddr, usize>,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    queue: BTreeMap<(Instant, u64), Ev>,
    armed: Vec<Option<Instant>>,
    seq: u64,
    deliveries: Vec<Observed>,
    events: Vec<(usize, Instant, Event)>,
    trace: u64,
    frames: u64,
    heartbeats: u64,
    closes: u64,
    closing_frames: u64,
    /// The encoded `Closing` frame, to count graceful closes without decoding every frame.
    closing_frame: Bytes,
    dials: Vec<(usize, SocketAddr)>,
    /// Each node's storage layer, when [`Harness::enable_store`] was called before it was added.
    stores: Vec<Option<Store>>,
    store_config: Option<StoreConfig>,
    store_events: Vec<(usize, StoreEvent)>,
    /// Messages sent between nodes, as (sender, receiver, message), once
    /// [`Harness::record_messages`] was called (plaintext frames only).
    recorded: Option<Vec<(usize, usize, Message)>>,
    /// Builds each node's config from its id and address; change it before adding nodes.
    /// By default [`Config::with_trusted_id`] (tests choose ids), encrypted; the harness then
    /// sets the node's seed and entropy from its own seed.
    pub configure: Box<dyn FnMut(NodeId, SocketAddr) -> Config>,
}

impl Harness {
    /// An empty network; `seed` decides per-node seeds and link latencies.
    pub fn new(seed: u64) -> Self {
        Harness {
            seed,
            now: Instant::ZERO,
            nodes: Vec::new(),
            alive: Vec::new(),
            group: Vec::new(),
            blocked: BTreeSet::new(),
            addrs: BTreeMap::new(),
            links: BTreeMap::new(),
            queue: BTreeMap::new(),
            armed: Vec::new(),
            seq: 0,
            deliveries: Vec::new(),
            events: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            frames: 0,
            heartbeats: 0,
            closes: 0,
            closing_frames: 0,
            closing_frame: wire::encode(&Message::Closing),
            dials: Vec::new(),
            stores: Vec::new(),
            store_config: None,
            store_events: Vec::new(),
            recorded: None,
            configure: Box::new(Config::with_trusted_id),
        }
    }

    /// Adds a node (a ring of one until it joins); returns its index.
    pub fn add_node(&mut self, id: NodeId) -> usize {
        let i = self.nodes.len();
        let addr = Self::addr_of(i);
        let mut s = self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let seed = splitmix64(&mut s);
        let mut entropy = [0u8; 32];
        for w in entropy.chunks_mut(8) {
            w.copy_from_slice(&splitmix64(&mut s).to_le_bytes());
        }
        let cfg = (self.configure)(id, addr).with_seed(seed).with_entropy(entropy);
        // A node is reachable at its local and its global address.
        self.addrs.insert(cfg.info.local, i);
        self.addrs.insert(cfg.info.global, i);
        let mut node = Node::new(cfg, self.now).unwrap_or_else(|e| panic!("node {i}: {e}"));
        let store = self
            .store_config
            .clone()
            .map(|c| Store::new(c, Box::new(MemoryBackend::new()), &mut node).expect("a memory backend does not fail"));
        self.nodes.push(node);
        self.stores.push(store);
        self.alive.push(true);
        self.group.push(0);
        self.armed.push(None);
        self.addrs.insert(addr, i);
        self.drain(i);
        i
    }

    /// The address node `i` listens on.
    pub fn addr_of(i: usize) -> SocketAddr {
        let i = i as u32;
        SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 7000))
    }

    /// Adds `n` nodes with ids drawn from `rng`, each joining through a random node added
    /// before it: `spacing` apart in time, or, with `None`, each once the previous is ready.
    /// (The first node of an empty harness stays a ring of one.) Returns their indices.
    pub fn grow(&mut self, n: usize, rng: &mut Rng, spacing: Option<Duration>) -> core::ops::Range<usize> {
        let first = self.nodes.len();
        for _ in 0..n {
            self.add_node(NodeId::from_u128(rng.next_u128()));
        }
        for i in first.max(1)..first + n {
            let via = rng.below(i as u64) as usize;
            self.join(i, via);
            match spacing {
                Some(d) => self.run_for(d),
                None => {
                    self.run_until_ready(Duration::from_secs(30));
                }
            }
        }
        first..first + n
    }

    /// From now on, keeps every message a node sends to another (in plaintext frames, that is
    /// between nodes configured with `insecure_plaintext`; encrypted frames are not read).
    pub fn record_messages(&mut self) {
        self.recorded.get_or_insert_with(Vec::new);
    }

    /// The messages kept since [`Harness::record_messages`]: (sender, receiver, message).
    pub fn messages(&self) -> &[(usize, usize, Message)] {
        self.recorded.as_deref().unwrap_or_default()
    }

    /// Node `i` joins through node `via`.
    pub fn join(&mut self, i: usize, via: usize) {
        let now = self.now;
        let addr = Self::addr_of(via);
        // A refused join is a test bug: surface it.
        self.nodes[i].join(now, &[addr]).unwrap_or_else(|e| panic!("join of node {i} refused: {e}"));
        self.drain(i);
    }

    /// Node `i` joins through the first of `addrs` that answers (the node's own retry policy).
    pub fn join_through(&mut self, i: usize, addrs: &[SocketAddr]) {
        let now = self.now;
        self.nodes[i].join(now, addrs).unwrap_or_else(|e| panic!("join of node {i} refused: {e}"));
        self.drain(i);
    }

    /// Node `i` routes `payload` towards `key` with an application `purpose` (16..=255).
    pub fn send(&mut self, i: usize, key: NodeId, purpose: u8, payload: &[u8]) {
        let now = self.now;
        let r = self.nodes[i].send(now, key, purpose, Bytes::copy_from_slice(payload));
        r.unwrap_or_else(|e| panic!("send from node {i} refused: {e}"));
        self.drain(i);
    }

    /// Gives every node added from now on a storage layer ([`crate::store`]) over memory.
    pub fn enable_store(&mut self, config: StoreConfig) {
        self.store_config = Some(config);
    }

    /// The storage layer of node `i`.
    ///
    /// # Panics
    /// If node `i` has none ([`Harness::enable_store`] was not called before it was added).
    pub fn store(&self, i: usize) -> &Store {
        self.stores[i].as_ref().expect("the node has a store (Harness::enable_store)")
    }

    /// Node `i` puts `value` under `key`.
    ///
    /// # Panics
    /// If the node has no store or refuses the command (a test bug).
    pub fn put(&mut self, i: usize, key: NodeId, value: Bytes) -> OpId {
        let r = self.store_op(i, |s, now, n| s.put(now, n, key, value, None));
        r.unwrap_or_else(|e| panic!("put at node {i} refused: {e}"))
    }

    /// Node `i` deletes `key`.
    ///
    /// # Panics
    /// If the node has no store or refuses the command.
    pub fn delete(&mut self, i: usize, key: NodeId) -> OpId {
        let r = self.store_op(i, |s, now, n| s.delete(now, n, key));
        r.unwrap_or_else(|e| panic!("delete at node {i} refused: {e}"))
    }

    /// Node `i` reads `key`.
    ///
    /// # Panics
    /// If the node has no store or refuses the command.
    pub fn get(&mut self, i: usize, key: NodeId) -> OpId {
        let r = self.store_op(i, |s, now, n| s.get(now, n, key));
        r.unwrap_or_else(|e| panic!("get at node {i} refused: {e}"))
    }

    /// Runs a command on node `i`'s store, then drains the node.
    ///
    /// # Panics
    /// If the node has no store.
    pub fn store_op<T>(&mut self, i: usize, f: impl FnOnce(&mut Store, Instant, &mut Node) -> T) -> T {
        let now = self.now;
        let store = self.stores[i].as_mut().expect("the node has a store (Harness::enable_store)");
        let r = f(store, now, &mut self.nodes[i]);
        self.drain(i);
        r
    }

    /// How node `i`'s operation `op` ended, if it has.
    pub fn store_result(&self, i: usize, op: OpId) -> Option<Result<Outcome, StoreError>> {
        self.store_events.iter().find(|(n, e)| *n == i && e.op == op).map(|(_, e)| e.result.clone())
    }

    /// Every completed store operation so far: (node, event).
    pub fn store_events(&self) -> &[(usize, StoreEvent)] {
        &self.store_events
    }

    /// Node `i` leaves gracefully (its frames still go out), then goes silent.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].leave(now);
        self.drain(i);
    }

    /// Splits the network: nodes in `side` and the others can no longer reach each other.
    /// Connections across the cut go silent (frames vanish, nobody is told); dials across it
    /// are never answered.
    pub fn partition(&mut self, side: &[usize]) {
        for g in &mut self.group {
            *g = 0;
        }
        for &i in side {
            self.group[i] = 1;
        }
        let group = &self.group;
        self.links.retain(|&(a, _), &mut (b, _)| group[a] == group[b]);
    }

    /// `from` can no longer reach `to`, while `to` still reaches `from` (a node behind a
    /// firewall or a NAT that takes no incoming connections from `from`): the connections
    /// between them go silent (frames vanish, nobody is told), and from now on dials from
    /// `from` to `to` are never answered. Connections that `to` dials work both ways.
    pub fn block_dials(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
        self.links.retain(|&(a, _), &mut (b, _)| !((a, b) == (from, to) || (a, b) == (to, from)));
    }

    /// Node `a`'s connections with `b` break under it: `a` is told at once (its driver saw
    /// them reset), while `b`'s ends go silent, as if the reset were still on its way. Dials
    /// between them still work.
    pub fn sever(&mut self, a: usize, b: usize) {
        let mine: Vec<ConnId> =
            self.links.iter().filter(|(&(x, _), &(y, _))| x == a && y == b).map(|(&(_, c), _)| c).collect();
        self.links.retain(|&(x, _), &mut (y, _)| !((x, y) == (a, b) || (x, y) == (b, a)));
        let now = self.now;
        for conn in mine {
            self.nodes[a].handle_closed(now, conn);
        }
        self.drain(a);
    }

    /// Heals a partition (and [`Harness::block_dials`]): every node can reach every other
    /// again (severed connections stay dead; the nodes must notice and dial anew).
    pub fn repair(&mut self) {
        for g in &mut self.group {
            *g = 0;
        }
        self.blocked.clear();
    }

    /// Node `i` stops at once: no goodbye, frames to it vanish, connecting to it fails.
    pub fn crash(&mut self, i: usize) {
        self.alive[i] = false;
        self.links.retain(|&(a, _), &mut (b, _)| a != i && b != i);
    }

    /// Node `i`'s process dies (`kill -9`): like [`Harness::crash`], and its operating system
    /// resets its connections, so each peer sees its end close one latency later.
    pub fn kill(&mut self, i: usize) {
        let ends: Vec<(usize, ConnId)> =
            self.links.iter().filter(|(&(a, _), _)| a == i).map(|(_, &(b, conn))| (b, conn)).collect();
        self.crash(i);
        for (b, conn) in ends {
            let at = self.now + self.latency(i, b);
            self.push(at, Ev::Closed { node: b, conn });
        }
    }

    /// Mutable access to a node (drain afterwards with [`Harness::drain`] if you feed it input).
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// A node.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True if node `i` has not crashed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Deliveries so far.
    pub fn deliveries(&self) -> &[Observed] {
        &self.deliveries
    }

    /// Forgets recorded deliveries, events and dials.
    pub fn clear_observations(&mut self) {
        self.deliveries.clear();
        self.events.clear();
        self.dials.clear();
    }

    /// Connections dialled so far: (dialling node, address dialled).
    pub fn dials(&self) -> &[(usize, SocketAddr)] {
        &self.dials
    }

    /// Events so far: (node, time, event), except `Heartbeat` (counted by [`Harness::heartbeats`]).
    pub fn events(&self) -> &[(usize, Instant, Event)] {
        &self.events
    }

    /// Heartbeat events seen so far.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// A hash of every frame transmitted and every delivery, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Frames transmitted so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Connections the nodes closed so far (`Output::Close`), for whatever reason.
    pub fn closes(&self) -> u64 {
        self.closes
    }

    /// `Closing` frames transmitted so far: a node sends one when it starts the graceful close
    /// of a connection that sat idle, and the other end answers with one. Recognised by their
    /// bytes, so only between nodes in plaintext (`Config::insecure_plaintext`).
    pub fn closing_frames(&self) -> u64 {
        self.closing_frames
    }

    /// The live, ready node whose id is closest to `key`, the correct root.
    pub fn closest_ready(&self, key: NodeId) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.alive[i] && self.nodes[i].is_ready() && !self.nodes[i].has_left())
            .min_by(|&a, &b| key.cmp_closeness(self.nodes[a].id(), self.nodes[b].id()))
    }

    /// The one-way latency between two nodes: 1 to 20 ms, fixed per pair.
    pub fn latency(&self, a: usize, b: usize) -> Duration {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let mut s = self.seed ^ lo.wrapping_mul(0x1000_0000_01b3) ^ hi.rotate_left(32);
        Duration::from_micros(1_000 + splitmix64(&mut s) % 19_000)
    }

    /// Processes events until none is left before `now + d`, then sets the clock there.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Processes events up to `until`, then sets the clock there.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((t, _), ev) = entry.remove_entry();
            self.now = t;
            self.dispatch(ev);
        }
        self.now = until;
    }

    /// Runs until every live node that was asked to join is ready, or `limit` passes; true if all are.
    pub fn run_until_ready(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            self.run_for(Duration::from_millis(100));
            if (0..self.nodes.len()).all(|i| !self.alive[i] || self.nodes[i].has_left() || self.nodes[i].is_ready()) {
                return true;
            }
        }
        false
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn dispatch(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Accept { from, conn, to } => {
                if self.group[from] != self.group[to] || self.blocked.contains(&(from, to)) {
                    // Across a partition the dial is never answered; the dialler times out.
                    return;
                }
                if !self.alive[to] || !self.alive[from] || self.nodes[to].has_left() {
                    let at = now + self.latency(from, to);
                    self.push(at, Ev::ConnectFailed { node: from, conn });
                    return;
                }
                let theirs = self.nodes[to].handle_accepted(now, Self::addr_of(from));
                self.links.insert((from, conn), (to, theirs));
                self.links.insert((to, theirs), (from, conn));
                let at = now + self.latency(from, to);
                self.push(at, Ev::Connected { node: from, conn });
                self.drain(to);
            }
            Ev::Connected { node, conn } => {
                if self.alive[node] {
                    self.nodes[node].handle_connected(now, conn);
                    self.drain(node);
                }
            }
            Ev::ConnectFailed { node, conn } => {
                if self.alive[node] {
                    self.nodes[node].handle_connect_failed(now, conn);
                    self.drain(node);
                }
            }
            Ev::Data { node, conn, data } => {
                if self.alive[node] && self.links.contains_key(&(node, conn)) {
                    self.nodes[node].handle_data(now, conn, &data);
                    self.drain(node);
                }
            }
            Ev::Closed { node, conn } => {
                // The close travelled behind the frames written before it, as TCP's FIN does.
                self.links.remove(&(node, conn));
                if self.alive[node] {
                    self.nodes[node].handle_closed(now, conn);
                    self.drain(node);
                }
            }
            Ev::Timer { node } => {
                if self.alive[node] && self.armed[node] == Some(now) {
                    self.armed[node] = None;
                    self.nodes[node].handle_timeout(now);
                    if let Some(s) = self.stores[node].as_mut() {
                        s.handle_timeout(now, &mut self.nodes[node]);
                    }
                    self.drain(node);
                }
            }
        }
    }

    /// Carries out every output of node `i` and re-arms its timer.
    pub fn drain(&mut self, i: usize) {
        let now = self.now;
        while let Some(out) = self.nodes[i].poll_output() {
            if !self.alive[i] {
                continue;
            }
            let out = match self.stores[i].as_mut() {
                Some(s) => match s.handle_output(now, &mut self.nodes[i], out) {
                    Some(out) => out,
                    None => continue,
                },
                None => out,
            };
            match out {
                Output::Connect { conn, addr } => match self.addrs.get(&addr).copied() {
                    Some(to) => {
                        self.dials.push((i, addr));
                        let at = now + self.latency(i, to);
                        self.push(at, Ev::Accept { from: i, conn, to });
                    }
                    None => {
                        let at = now + Duration::from_millis(1);
                        self.push(at, Ev::ConnectFailed { node: i, conn });
                    }
                },
                Output::Transmit { conn, data } => {
                    self.frames += 1;
                    if data == self.closing_frame {
                        self.closing_frames += 1;
                    }
                    self.mix(i as u64);
                    self.mix_bytes(&data);
                    if let Some(&(to, theirs)) = self.links.get(&(i, conn)) {
                        if let Some(r) = self.recorded.as_mut() {
                            if let Ok(msg) = wire::decode_frame(data.clone(), usize::MAX) {
                                r.push((i, to, msg));
                            }
                        }
                        let at = now + self.latency(i, to);
                        self.push(at, Ev::Data { node: to, conn: theirs, data });
                    }
                }
                Output::Close { conn } => {
                    self.closes += 1;
                    if let Some((to, theirs)) = self.links.remove(&(i, conn)) {
                        // The other end keeps its side until the close reaches it, so the
                        // frames written before the close arrive first.
                        let at = now + self.latency(i, to);
                        self.push(at, Ev::Closed { node: to, conn: theirs });
                    }
                }
                Output::Deliver(d) => {
                    self.mix(0xde11_0000 + i as u64);
                    self.mix_bytes(&d.payload);
                    self.deliveries.push(Observed { node: i, at: now, delivery: d });
                }
                Output::Forwarded { .. } => {}
                Output::Event(Event::Heartbeat(_)) => self.heartbeats += 1,
                Output::Event(e) => self.events.push((i, now, e)),
            }
        }
        if let Some(s) = self.stores[i].as_mut() {
            while let Some(e) = s.poll_event() {
                self.store_events.push((i, e));
            }
        }
        let store_t = self.stores[i].as_ref().and_then(Store::poll_timeout);
        let t = match (self.nodes[i].poll_timeout(), store_t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = t {
            let t = t.max(now);
            if self.armed[i] != Some(t) {
                self.armed[i] = Some(t);
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn mix_bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.mix(u64::from(x));
        }
    }

    /// Ids of every live, ready node, sorted.
    pub fn ready_ids(&self) -> BTreeSet<NodeId> {
        (0..self.nodes.len())
            .filter(|&i| self.alive[i] && self.nodes[i].is_ready() && !self.nodes[i].has_left())
            .map(|i| self.nodes[i].id())
            .collect()
    }
}
