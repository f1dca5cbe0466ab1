//! The engine: hosts running real `wendy_proto` nodes, connections carrying their encoded
//! frames, one event queue, the oracle, and the scenario that drives a whole run.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use wendy_proto::rng::{splitmix64, Rng};
use wendy_proto::{Config, ConnId, Delivery, Event, Instant, Node, NodeError, NodeId, Output};

use crate::config::{SessionDist, SimConfig, SplitMode};
use crate::net::{addr_host, ephemeral_addr, host_addr, Net, Place, MAX_HOSTS};
use crate::queue::{Ctl, Ev, Queue};
use crate::report::{peak_rss_bytes, quantile, Bucket, ChurnReport, CrashReport, Report, Window};
use crate::trace::TraceHash;

/// The purpose byte of lookups.
pub const LOOKUP_PURPOSE: u8 = 16;
const NONE: u32 = u32::MAX;
const NEVER: u64 = u64::MAX;
const SEC: u64 = 1_000_000;

/// How a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered at the numerically closest live, joined node.
    Correct,
    /// Delivered at another node.
    Incorrect,
    /// Not delivered in time.
    Lost,
}

/// Names of the node error kinds, in the order of [`error_kind`].
const ERROR_KINDS: [&str; 8] =
    ["decode", "protocol", "connect_failed", "join_failed", "queue_full", "hop_limit", "undeliverable", "other"];

fn error_kind(e: &NodeError) -> usize {
    match e {
        NodeError::Decode { .. } => 0,
        NodeError::Protocol { .. } => 1,
        NodeError::ConnectFailed { .. } => 2,
        NodeError::JoinFailed { .. } => 3,
        NodeError::QueueFull { .. } => 4,
        NodeError::HopLimit { .. } => 5,
        NodeError::Undeliverable { .. } => 6,
        _ => 7,
    }
}

/// One simulated machine. Its `Node` is `None` while it is down.
#[derive(Debug)]
struct Host {
    node: Option<Box<Node>>,
    up: bool,
    id: NodeId,
    place: Place,
    /// Incarnation: bumped at every crash, so connections of an earlier life are recognised.
    inc: u32,
    timer_gen: u32,
    timer_at: u64,
    /// The node's connections: ConnId -> link << 1 | side.
    conns: ConnMap,
    /// Position in `Sim::joined_list`, `NONE` if not joined.
    joined_pos: u32,
    join_started: u64,
    /// Control frames and bytes already counted from the node's stats.
    ctl_seen: (u64, u64),
    /// Split side (0 or 1).
    side: u8,
}

/// Hashes a `NodeId` by folding its (already uniformly random) bits: ids and lookup keys are
/// drawn at random, so this is as good as any hash and much cheaper than SipHash. Maps keyed by
/// it are only ever looked up, never iterated, so their order cannot reach any output.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
    }
}

/// A map from ids (or keys) that is looked up only, never iterated.
type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// A host's connections, ConnId -> link << 1 | side, as a sorted vector: a node names its
/// connections with increasing numbers, so inserts append, and look-ups touch one array.
#[derive(Debug, Default)]
struct ConnMap(Vec<(u64, u32)>);

impl ConnMap {
    fn insert(&mut self, conn: u64, code: u32) {
        match self.0.binary_search_by_key(&conn, |e| e.0) {
            Ok(i) => self.0[i].1 = code,
            Err(i) => self.0.insert(i, (conn, code)),
        }
    }

    fn get(&self, conn: u64) -> Option<u32> {
        self.0.binary_search_by_key(&conn, |e| e.0).ok().map(|i| self.0[i].1)
    }

    fn remove(&mut self, conn: u64) -> Option<u32> {
        let i = self.0.binary_search_by_key(&conn, |e| e.0).ok()?;
        let code = self.0.remove(i).1;
        if self.0.capacity() > 64 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
        Some(code)
    }
}

/// A stream connection between two hosts. Side 0 dialled, side 1 accepted.
#[derive(Debug, Default)]
struct Link {
    gen: u32,
    host: [u32; 2],
    inc: [u32; 2],
    /// The node's name for it on each side (0: not named yet).
    conn: [u64; 2],
    /// The side has not closed it.
    open: [bool; 2],
    lat: u64,
    /// Latest arrival scheduled towards each side: frames never overtake each other.
    last: [u64; 2],
    /// Frames in flight towards each side, in order; `None` is the close.
    fifo: [VecDeque<Option<Bytes>>; 2],
    /// The event during which the last segment towards each side was queued: frames written
    /// on one connection while handling one input travel together, as one write.
    batch: [u64; 2],
}

#[derive(Debug)]
struct LookupRec {
    issued: u64,
    key: NodeId,
    origin: u32,
    path_us: u64,
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Drop,
    Hold,
}

/// Counters of the run.
#[derive(Debug, Default)]
struct Metrics {
    issued: u64,
    delivered: u64,
    correct: u64,
    incorrect: u64,
    lost: u64,
    duplicates: u64,
    send_errors: u64,
    hops: Vec<u64>,
    stretch: Vec<f32>,
    join_times: Vec<u64>,
    join_failures: u64,
    ctl_frames: u64,
    ctl_bytes: u64,
    frames: u64,
    bytes: u64,
    errors: [u64; ERROR_KINDS.len()],
    buckets: Vec<Bucket>,
    /// (issue time, outcome) of every lookup, for the crash windows.
    outcomes: Vec<(u64, Outcome)>,
    arrivals: u64,
    crashes: u64,
    leaves: u64,
}

/// A simulation: hosts, network, queue, oracle and measurements.
///
/// Most users call [`run`](crate::run) with a [`SimConfig`]. The methods here are the
/// building blocks, named after turmoil's: [`crash`](Sim::crash), [`bounce`](Sim::bounce),
/// [`partition`](Sim::partition)/[`repair`](Sim::repair), [`hold`](Sim::hold)/[`release`](Sim::release),
/// [`step`](Sim::step) and [`run_until`](Sim::run_until).
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    queue: Queue,
    net: Net,
    hosts: Vec<Host>,
    links: Vec<Link>,
    free_links: Vec<u32>,
    /// Every host's id (ids are never reused by another host).
    ids: IdMap<u32>,
    /// The oracle: live, joined nodes.
    joined: BTreeMap<NodeId, u32>,
    joined_list: Vec<u32>,
    rng_net: Rng,
    rng_work: Rng,
    rng_churn: Rng,
    rng_place: Rng,
    trace: TraceHash,
    recs: VecDeque<LookupRec>,
    recs_base: u64,
    by_key: IdMap<u64>,
    m: Metrics,
    events: u64,
    alive: u64,
    peak_alive: u64,
    /// Integrals of live and joined counts over time (node-microseconds), and when last updated.
    live_int: u128,
    joined_int: u128,
    int_at: u64,
    bucket_us: u64,
    split: Option<SplitMode>,
    drop_pairs: BTreeSet<(u32, u32)>,
    hold_pairs: BTreeSet<(u32, u32)>,
    held: Vec<(u32, u32, u8)>,
    // Scenario state.
    to_join: usize,
    measure_start: u64,
    measure_end: u64,
    last_issue: u64,
    crash_at: Option<u64>,
    crashed: u64,
    ring_at: Option<u64>,
    clean_at: Option<u64>,
    repair_at: Option<u64>,
    exact_at: Option<u64>,
    labels: BTreeMap<u32, u32>,
    /// Print every node error to stderr (environment variable `WENDY_SIM_DEBUG`).
    debug: bool,
}

impl Sim {
    /// A simulation with no hosts yet.
    pub fn new(cfg: SimConfig) -> Self {
        let mut s = cfg.seed;
        let mut derive = || Rng::new(splitmix64(&mut s));
        let (rng_net, rng_work, rng_churn, rng_place) = (derive(), derive(), derive(), derive());
        Sim {
            net: Net::new(cfg.net.clone()),
            cfg,
            now: 0,
            queue: Queue::default(),
            hosts: Vec::new(),
            links: Vec::new(),
            free_links: Vec::new(),
            ids: IdMap::default(),
            joined: BTreeMap::new(),
            joined_list: Vec::new(),
            rng_net,
            rng_work,
            rng_churn,
            rng_place,
            trace: TraceHash::default(),
            recs: VecDeque::new(),
            recs_base: 0,
            by_key: IdMap::default(),
            m: Metrics { hops: vec![0; 65], ..Metrics::default() },
            events: 0,
            alive: 0,
            peak_alive: 0,
            live_int: 0,
            joined_int: 0,
            int_at: 0,
            bucket_us: SEC,
            split: None,
            drop_pairs: BTreeSet::new(),
            hold_pairs: BTreeSet::new(),
            held: Vec::new(),
            to_join: 0,
            measure_start: 0,
            measure_end: NEVER,
            last_issue: 0,
            crash_at: None,
            crashed: 0,
            ring_at: None,
            clean_at: None,
            repair_at: None,
            exact_at: None,
            labels: BTreeMap::new(),
            debug: std::env::var_os("WENDY_SIM_DEBUG").is_some(),
        }
    }

    // ----- hosts --------------------------------------------------------------------------

    /// Adds a host with a fresh random id and place and starts its node (a ring of one).
    /// Returns its index.
    ///
    /// # Panics
    /// If more than 2^24 hosts are created (the address plan is full).
    pub fn add_host(&mut self) -> u32 {
        assert!(self.hosts.len() < MAX_HOSTS, "the address plan holds at most 2^24 hosts");
        let h = self.hosts.len() as u32;
        let mut id = NodeId::from_u128(self.rng_place.next_u128());
        while self.ids.contains_key(&id) {
            id = NodeId::from_u128(self.rng_place.next_u128());
        }
        let place = self.net.place(&mut self.rng_place);
        self.ids.insert(id, h);
        self.hosts.push(Host {
            node: None,
            up: false,
            id,
            place,
            inc: 0,
            timer_gen: 0,
            timer_at: NEVER,
            conns: ConnMap::default(),
            joined_pos: NONE,
            join_started: NEVER,
            ctl_seen: (0, 0),
            side: 0,
        });
        self.start(h);
        h
    }

    /// Starts a fresh node on a down host (same id and address as before).
    fn start(&mut self, h: u32) {
        let host = &self.hosts[h as usize];
        debug_assert!(!host.up);
        let local = host_addr(h, false);
        let mut seed = self.cfg.seed ^ (u64::from(h) << 20 | u64::from(host.inc)).wrapping_mul(0xA24B_AED4_963E_E407);
        let mut cfg = Config::new(host.id, local).with_seed(splitmix64(&mut seed));
        if self.net.cfg().regions > 0 {
            cfg = cfg.with_region(format!("r{}", host.place.region), local, host_addr(h, true));
        }
        self.cfg.node.apply(&mut cfg);
        let node =
            Node::new(cfg, Instant::from_micros(self.now)).expect("node parameters are validated before the run");
        let host = &mut self.hosts[h as usize];
        host.node = Some(Box::new(node));
        host.up = true;
        host.ctl_seen = (0, 0);
        self.count_alive(1);
        let node = self.hosts[h as usize].node.take().expect("just started");
        self.finish(h, node);
    }

    /// Makes `h` (a ring of one) join through a random joined node; false if none is joined.
    pub fn join_random(&mut self, h: u32) -> bool {
        let candidates = self.joined_list.len();
        if candidates == 0 || (candidates == 1 && self.joined_list[0] == h) {
            return false;
        }
        let b = loop {
            let b = self.joined_list[self.rng_work.below(candidates as u64) as usize];
            if b != h {
                break b;
            }
        };
        self.join(h, b)
    }

    /// Makes `h` join the ring through host `bootstrap`. False if the node refused.
    pub fn join(&mut self, h: u32, bootstrap: u32) -> bool {
        let addr = self.addr_from(bootstrap, h);
        let Some(mut node) = self.take(h) else { return false };
        let ok = node.join(Instant::from_micros(self.now), &[addr]).is_ok();
        if ok {
            self.hosts[h as usize].join_started = self.now;
        }
        self.finish(h, node);
        ok
    }

    /// Marks `h` as joined for the oracle (for a first node, which is a ring of one).
    pub fn mark_joined(&mut self, h: u32) {
        self.add_joined(h);
    }

    /// Crashes `h`: its node disappears silently. No close reaches its peers; frames to it
    /// vanish; connection attempts to it are refused or go unanswered (see
    /// [`NetConfig::refuse_dead`](crate::NetConfig::refuse_dead)).
    pub fn crash(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if !host.up {
            return;
        }
        host.up = false;
        host.node = None;
        host.inc += 1;
        host.timer_gen += 1;
        host.timer_at = NEVER;
        host.join_started = NEVER;
        let links: Vec<u32> = std::mem::take(&mut host.conns).0.into_iter().map(|(_, c)| c >> 1).collect();
        self.remove_joined(h);
        self.count_alive(-1);
        for l in links {
            self.maybe_free(l);
        }
    }

    /// Bounce: crash `h` now and restart it (fresh node, same id and address, joining again)
    /// after `downtime`.
    pub fn bounce(&mut self, h: u32, downtime: core::time::Duration) {
        self.crash(h);
        self.queue.push(self.now + downtime.as_micros() as u64, Ev::Ctl(Ctl::Restart { host: h }));
    }

    /// Makes `h` leave gracefully; it is removed once its goodbyes are on the wire.
    pub fn leave(&mut self, h: u32) {
        let Some(mut node) = self.take(h) else { return };
        self.remove_joined(h);
        node.leave(Instant::from_micros(self.now));
        self.finish(h, node);
        let inc = self.hosts[h as usize].inc;
        self.queue.push(self.now + SEC, Ev::Ctl(Ctl::Kill { host: h, inc }));
    }

    /// Partition: drop everything between `a` and `b` (both directions) until [`Sim::repair`].
    pub fn partition(&mut self, a: u32, b: u32) {
        self.drop_pairs.insert((a.min(b), a.max(b)));
    }

    /// Repairs a partition between `a` and `b`.
    pub fn repair(&mut self, a: u32, b: u32) {
        self.drop_pairs.remove(&(a.min(b), a.max(b)));
    }

    /// Hold: frames between `a` and `b` wait, in order, until [`Sim::release`].
    pub fn hold(&mut self, a: u32, b: u32) {
        self.hold_pairs.insert((a.min(b), a.max(b)));
    }

    /// Releases held frames between `a` and `b`.
    pub fn release(&mut self, a: u32, b: u32) {
        let pair = (a.min(b), a.max(b));
        self.hold_pairs.remove(&pair);
        self.release_where(|s, l| {
            let (x, y) = (s.links[l as usize].host[0], s.links[l as usize].host[1]);
            (x.min(y), x.max(y)) == pair
        });
    }

    // ----- getters ------------------------------------------------------------------------

    /// Simulated time now.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.now)
    }

    /// Hosts created so far.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Live, joined nodes (the oracle's view).
    pub fn joined_count(&self) -> usize {
        self.joined.len()
    }

    /// The node of host `h`, if it is up.
    pub fn node(&self, h: u32) -> Option<&Node> {
        self.hosts.get(h as usize).and_then(|x| x.node.as_deref())
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    /// The live, joined node numerically closest to `key`: where a lookup must be delivered.
    pub fn closest(&self, key: NodeId) -> Option<NodeId> {
        let succ = self.joined.range(key..).next().or_else(|| self.joined.iter().next()).map(|e| *e.0);
        let pred = self.joined.range(..key).next_back().or_else(|| self.joined.iter().next_back()).map(|e| *e.0);
        match (succ, pred) {
            (Some(s), Some(p)) => Some(if key.is_closer(p, s) { p } else { s }),
            (s, p) => s.or(p),
        }
    }

    // ----- running ------------------------------------------------------------------------

    /// Processes the next event; false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some((t, ev)) = self.queue.pop() else { return false };
        self.now = self.now.max(t);
        self.events += 1;
        match ev {
            Ev::Timer { host, gen } => self.on_timer(host, gen),
            Ev::Syn { link, gen } => self.on_syn(link, gen),
            Ev::SynAck { link, gen } => self.on_syn_ack(link, gen),
            Ev::Refused { link, gen } => self.on_refused(link, gen),
            Ev::Arrive { link, gen, side } => self.on_arrive(link, gen, side),
            Ev::Ctl(c) => self.on_ctl(c),
        }
        true
    }

    /// Processes every event due up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        let t = t.as_micros();
        while self.queue.peek_time().is_some_and(|x| x <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Routes a lookup from `origin` towards `key`; its outcome is recorded by the oracle.
    pub fn lookup(&mut self, origin: u32, key: NodeId) {
        let id = self.recs_base + self.recs.len() as u64;
        self.m.issued += 1;
        self.last_issue = self.now;
        self.recs.push_back(LookupRec { issued: self.now, key, origin, path_us: 0, done: false });
        self.by_key.insert(key, id);
        self.bucket(self.now).lookups.issued += 1;
        let mut payload = vec![0u8; self.cfg.payload_bytes.max(8)];
        payload[..8].copy_from_slice(&id.to_le_bytes());
        let Some(mut node) = self.take(origin) else {
            self.m.send_errors += 1;
            self.resolve(id, Outcome::Lost);
            return;
        };
        let r = node.send(Instant::from_micros(self.now), key, LOOKUP_PURPOSE, Bytes::from(payload));
        self.finish(origin, node);
        if r.is_err() {
            self.m.send_errors += 1;
            self.resolve(id, Outcome::Lost);
        }
    }

    // ----- node input and output ----------------------------------------------------------

    fn take(&mut self, h: u32) -> Option<Box<Node>> {
        let host = &mut self.hosts[h as usize];
        if host.up {
            host.node.take()
        } else {
            None
        }
    }

    /// Drains every output of `node` (host `h`), accounts, re-arms its timer, puts it back.
    fn finish(&mut self, h: u32, mut node: Box<Node>) {
        while let Some(out) = node.poll_output() {
            match out {
                Output::Connect { conn, addr } => self.on_connect(h, conn, addr),
                Output::Transmit { conn, data } => self.on_transmit(h, conn, data),
                Output::Close { conn } => self.on_close(h, conn),
                Output::Deliver(d) => self.on_deliver(h, d),
                Output::Forwarded { key, purpose, next, .. } => self.on_forwarded(h, key, purpose, next),
                Output::Event(e) => self.on_event(h, e),
            }
        }
        let st = node.stats();
        let host = &mut self.hosts[h as usize];
        let (df, db) = (st.control_frames_out - host.ctl_seen.0, st.control_bytes_out - host.ctl_seen.1);
        host.ctl_seen = (st.control_frames_out, st.control_bytes_out);
        let next = node.poll_timeout().map(|t| t.as_micros().max(self.now));
        host.node = Some(node);
        match next {
            Some(t) if t != host.timer_at => {
                host.timer_gen += 1;
                host.timer_at = t;
                let gen = host.timer_gen;
                self.queue.push(t, Ev::Timer { host: h, gen });
            }
            Some(_) => {}
            None => {
                host.timer_gen += 1;
                host.timer_at = NEVER;
            }
        }
        if df > 0 {
            self.m.ctl_frames += df;
            self.m.ctl_bytes += db;
            let b = self.bucket(self.now);
            b.control_msgs += df;
            b.control_bytes += db;
        }
    }

    fn on_timer(&mut self, h: u32, gen: u32) {
        let host = &mut self.hosts[h as usize];
        if host.timer_gen != gen || !host.up {
            return;
        }
        host.timer_at = NEVER;
        let Some(mut node) = self.take(h) else { return };
        node.handle_timeout(Instant::from_micros(self.now));
        self.finish(h, node);
    }

    fn on_connect(&mut self, h: u32, conn: ConnId, addr: SocketAddr) {
        let target = addr_host(addr).filter(|&t| (t as usize) < self.hosts.len());
        let lat = target.map_or(1_000, |t| self.latency(h, t));
        let l = self.alloc_link();
        let link = &mut self.links[l as usize];
        link.host = [h, target.unwrap_or(NONE)];
        link.inc = [self.hosts[h as usize].inc, 0];
        link.conn = [conn.0, 0];
        link.open = [true, false];
        link.lat = lat;
        link.last = [0, 0];
        let gen = link.gen;
        self.hosts[h as usize].conns.insert(conn.0, l << 1);
        match target {
            Some(_) => self.queue.push(self.now + lat, Ev::Syn { link: l, gen }),
            None => self.queue.push(self.now + lat, Ev::Refused { link: l, gen }),
        }
    }

    fn on_syn(&mut self, l: u32, gen: u32) {
        let link = &self.links[l as usize];
        if link.gen != gen {
            return;
        }
        let (d, t, lat) = (link.host[0], link.host[1], link.lat);
        if !self.end_live(l, 0) {
            self.maybe_free(l);
            return;
        }
        let blocked = self.blocked(d, t).is_some();
        if !self.hosts[t as usize].up || blocked {
            let delay = if self.net.cfg().refuse_dead && !blocked {
                lat
            } else {
                (self.net.cfg().syn_timeout.as_micros() as u64).saturating_sub(lat)
            };
            self.queue.push(self.now + delay, Ev::Refused { link: l, gen });
            return;
        }
        let global = self.hosts[d as usize].place.region != self.hosts[t as usize].place.region;
        let remote = ephemeral_addr(d, global && self.net.cfg().regions > 0, l);
        let Some(mut node) = self.take(t) else { return };
        let c = node.handle_accepted(Instant::from_micros(self.now), remote);
        let inc = self.hosts[t as usize].inc;
        let link = &mut self.links[l as usize];
        link.conn[1] = c.0;
        link.inc[1] = inc;
        link.open[1] = true;
        self.hosts[t as usize].conns.insert(c.0, l << 1 | 1);
        self.queue.push(self.now + lat, Ev::SynAck { link: l, gen });
        self.finish(t, node);
    }

    fn on_syn_ack(&mut self, l: u32, gen: u32) {
        let link = &self.links[l as usize];
        if link.gen != gen {
            return;
        }
        if !self.end_live(l, 0) {
            self.maybe_free(l);
            return;
        }
        let (d, conn) = (link.host[0], ConnId(link.conn[0]));
        let Some(mut node) = self.take(d) else { return };
        node.handle_connected(Instant::from_micros(self.now), conn);
        self.finish(d, node);
    }

    fn on_refused(&mut self, l: u32, gen: u32) {
        let link = &mut self.links[l as usize];
        if link.gen != gen {
            return;
        }
        let (d, conn) = (link.host[0], link.conn[0]);
        if self.end_live(l, 0) {
            self.links[l as usize].open[0] = false;
            self.hosts[d as usize].conns.remove(conn);
            if let Some(mut node) = self.take(d) {
                node.handle_connect_failed(Instant::from_micros(self.now), ConnId(conn));
                self.finish(d, node);
            }
        }
        self.maybe_free(l);
    }

    fn on_transmit(&mut self, h: u32, conn: ConnId, data: Bytes) {
        self.trace.frame(self.now, h, conn.0, &data);
        self.m.frames += 1;
        self.m.bytes += data.len() as u64;
        let Some(code) = self.hosts[h as usize].conns.get(conn.0) else { return };
        let (l, side) = (code >> 1, (code & 1) as u8);
        let other = 1 - side;
        if self.end_live(l, other) {
            self.send_on(l, other, Some(data));
        }
    }

    fn on_close(&mut self, h: u32, conn: ConnId) {
        let Some(code) = self.hosts[h as usize].conns.remove(conn.0) else { return };
        let (l, side) = (code >> 1, (code & 1) as u8);
        let other = 1 - side;
        self.links[l as usize].open[side as usize] = false;
        if self.end_live(l, other) {
            self.send_on(l, other, None);
        }
        self.maybe_free(l);
    }

    /// Queues a frame (or the close, `None`) towards side `to` of link `l`.
    fn send_on(&mut self, l: u32, to: u8, item: Option<Bytes>) {
        let t = usize::from(to);
        let link = &self.links[l as usize];
        let (from_host, to_host, lat, gen) = (link.host[1 - t], link.host[t], link.lat, link.gen);
        match self.blocked(from_host, to_host) {
            Some(Block::Drop) => return,
            Some(Block::Hold) => {
                self.links[l as usize].fifo[t].push_back(item);
                self.held.push((l, gen, to));
                return;
            }
            None => {}
        }
        let link = &mut self.links[l as usize];
        if let (Some(data), true) = (&item, link.batch[t] == self.events && self.net.cfg().coalesce) {
            if let Some(Some(last)) = link.fifo[t].back_mut() {
                let mut seg = BytesMut::with_capacity(last.len() + data.len());
                seg.extend_from_slice(last);
                seg.extend_from_slice(data);
                *last = seg.freeze();
                return;
            }
        }
        let delay = if item.is_some() { self.net.frame_delay(&mut self.rng_net, lat) } else { Some(lat) };
        let Some(delay) = delay else { return };
        let link = &mut self.links[l as usize];
        let at = (self.now + delay).max(link.last[t]);
        link.last[t] = at;
        link.batch[t] = self.events;
        link.fifo[t].push_back(item);
        self.queue.push(at, Ev::Arrive { link: l, gen, side: to });
    }

    fn on_arrive(&mut self, l: u32, gen: u32, side: u8) {
        let s = usize::from(side);
        let link = &mut self.links[l as usize];
        if link.gen != gen {
            return;
        }
        let Some(item) = link.fifo[s].pop_front() else { return };
        let (h, conn, inc, open) = (link.host[s], link.conn[s], link.inc[s], link.open[s]);
        if !self.end_live(l, side) {
            // A host that is up again (bounced), or up without the process (refuse_dead),
            // answers with a reset: the sender learns the connection is gone.
            let host = &self.hosts[h as usize];
            if open && (host.up || self.net.cfg().refuse_dead) && host.inc != inc {
                self.links[l as usize].open[s] = false;
                if self.end_live(l, 1 - side) {
                    self.send_on(l, 1 - side, None);
                }
            }
            self.maybe_free(l);
            return;
        }
        let Some(mut node) = self.take(h) else { return };
        let now = Instant::from_micros(self.now);
        match item {
            Some(data) => node.handle_data(now, ConnId(conn), &data),
            None => {
                self.links[l as usize].open[s] = false;
                self.hosts[h as usize].conns.remove(conn);
                node.handle_closed(now, ConnId(conn));
            }
        }
        self.finish(h, node);
        self.maybe_free(l);
    }

    fn on_deliver(&mut self, h: u32, d: Delivery) {
        if d.direct || d.purpose != LOOKUP_PURPOSE || d.payload.len() < 8 {
            return;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&d.payload[..8]);
        let id = u64::from_le_bytes(w);
        self.trace.delivery(self.now, h, id, d.hops);
        let Some(idx) = id.checked_sub(self.recs_base).map(|i| i as usize).filter(|&i| i < self.recs.len()) else {
            self.m.duplicates += u64::from(id < self.recs_base);
            return;
        };
        if self.recs[idx].done {
            self.m.duplicates += 1;
            return;
        }
        let me = self.hosts[h as usize].id;
        let right = self.closest(self.recs[idx].key) == Some(me);
        self.m.delivered += 1;
        self.m.hops[usize::from(d.hops).min(64)] += 1;
        let (origin, path) = (self.recs[idx].origin, self.recs[idx].path_us);
        if origin != h && path > 0 {
            let direct = self.latency(origin, h);
            self.m.stretch.push((path as f64 / direct as f64) as f32);
        }
        let issued = self.recs[idx].issued;
        self.bucket(issued).lookups.delivered += 1;
        self.resolve(id, if right { Outcome::Correct } else { Outcome::Incorrect });
    }

    fn on_forwarded(&mut self, h: u32, key: NodeId, purpose: u8, next: NodeId) {
        if purpose != LOOKUP_PURPOSE {
            return;
        }
        let (Some(&id), Some(&n)) = (self.by_key.get(&key), self.ids.get(&next)) else { return };
        let lat = self.latency(h, n);
        if let Some(r) = id.checked_sub(self.recs_base).and_then(|i| self.recs.get_mut(i as usize)) {
            r.path_us += lat;
        }
    }

    fn on_event(&mut self, h: u32, e: Event) {
        match e {
            Event::Joined => {
                let host = &mut self.hosts[h as usize];
                if host.join_started != NEVER {
                    self.m.join_times.push(self.now - host.join_started);
                    host.join_started = NEVER;
                }
                self.add_joined(h);
            }
            Event::Error(err) => {
                let k = error_kind(&err);
                if self.debug {
                    eprintln!("t={} host={h} joined={} {err}", self.now, self.hosts[h as usize].joined_pos != NONE);
                }
                self.m.errors[k] += 1;
                if let NodeError::JoinFailed { .. } = err {
                    self.m.join_failures += 1;
                    let inc = self.hosts[h as usize].inc;
                    self.queue.push(self.now + SEC, Ev::Ctl(Ctl::JoinRetry { host: h, inc }));
                }
            }
            _ => {}
        }
    }

    // ----- connections --------------------------------------------------------------------

    fn alloc_link(&mut self) -> u32 {
        if let Some(l) = self.free_links.pop() {
            return l;
        }
        self.links.push(Link::default());
        (self.links.len() - 1) as u32
    }

    /// True if side `s` of link `l` is open and its host still in the same life.
    fn end_live(&self, l: u32, s: u8) -> bool {
        let link = &self.links[l as usize];
        let s = usize::from(s);
        if !link.open[s] {
            return false;
        }
        let host = &self.hosts[link.host[s] as usize];
        host.up && host.inc == link.inc[s]
    }

    /// Frees the link once neither side can use it; events still in flight for it go stale.
    fn maybe_free(&mut self, l: u32) {
        if self.end_live(l, 0) || self.end_live(l, 1) {
            return;
        }
        let link = &mut self.links[l as usize];
        if link.host[0] == NONE && link.host[1] == NONE {
            return; // already free
        }
        link.gen = link.gen.wrapping_add(1);
        link.host = [NONE, NONE];
        link.open = [false, false];
        link.fifo[0].clear();
        link.fifo[1].clear();
        link.fifo[0].shrink_to(4);
        link.fifo[1].shrink_to(4);
        self.free_links.push(l);
    }

    fn blocked(&self, a: u32, b: u32) -> Option<Block> {
        if let Some(mode) = self.split {
            if self.hosts[a as usize].side != self.hosts[b as usize].side {
                return Some(match mode {
                    SplitMode::Partition => Block::Drop,
                    SplitMode::Hold => Block::Hold,
                });
            }
        }
        let pair = (a.min(b), a.max(b));
        if !self.drop_pairs.is_empty() && self.drop_pairs.contains(&pair) {
            return Some(Block::Drop);
        }
        if !self.hold_pairs.is_empty() && self.hold_pairs.contains(&pair) {
            return Some(Block::Hold);
        }
        None
    }

    /// Schedules the held frames of the links matching `pred`, in the order they were sent.
    fn release_where(&mut self, pred: impl Fn(&Sim, u32) -> bool) {
        let held = std::mem::take(&mut self.held);
        let mut keep = Vec::new();
        for (l, gen, side) in held {
            if self.links[l as usize].gen != gen {
                continue;
            }
            if !pred(self, l) {
                keep.push((l, gen, side));
                continue;
            }
            let link = &mut self.links[l as usize];
            let at = (self.now + link.lat).max(link.last[usize::from(side)]);
            link.last[usize::from(side)] = at;
            self.queue.push(at, Ev::Arrive { link: l, gen, side });
        }
        self.held = keep;
    }

    fn latency(&self, a: u32, b: u32) -> u64 {
        self.net.latency_us(&self.hosts[a as usize].place, &self.hosts[b as usize].place)
    }

    /// The address `from` uses to reach `to`: local in the same region, else global.
    fn addr_from(&self, to: u32, from: u32) -> SocketAddr {
        let global = self.net.cfg().regions > 0
            && self.hosts[to as usize].place.region != self.hosts[from as usize].place.region;
        host_addr(to, global)
    }

    // ----- oracle and measurements --------------------------------------------------------

    fn add_joined(&mut self, h: u32) {
        if self.hosts[h as usize].joined_pos != NONE {
            return;
        }
        self.integrate();
        self.hosts[h as usize].joined_pos = self.joined_list.len() as u32;
        self.joined_list.push(h);
        self.joined.insert(self.hosts[h as usize].id, h);
    }

    fn remove_joined(&mut self, h: u32) {
        let pos = self.hosts[h as usize].joined_pos;
        if pos == NONE {
            return;
        }
        self.integrate();
        self.joined_list.swap_remove(pos as usize);
        if let Some(&moved) = self.joined_list.get(pos as usize) {
            self.hosts[moved as usize].joined_pos = pos;
        }
        self.hosts[h as usize].joined_pos = NONE;
        self.joined.remove(&self.hosts[h as usize].id);
    }

    fn count_alive(&mut self, d: i64) {
        self.integrate();
        self.alive = self.alive.saturating_add_signed(d);
        self.peak_alive = self.peak_alive.max(self.alive);
    }

    fn integrate(&mut self) {
        let dt = u128::from(self.now - self.int_at);
        self.live_int += dt * u128::from(self.alive);
        self.joined_int += dt * self.joined.len() as u128;
        self.int_at = self.now;
    }

    fn bucket(&mut self, t: u64) -> &mut Bucket {
        let i = (t / self.bucket_us) as usize;
        if self.m.buckets.len() <= i {
            let w = self.bucket_us;
            let n = self.m.buckets.len();
            self.m.buckets.extend((n..=i).map(|k| Bucket { t_s: (k as u64 * w) as f64 / 1e6, ..Bucket::default() }));
        }
        &mut self.m.buckets[i]
    }

    fn resolve(&mut self, id: u64, outcome: Outcome) {
        let Some(r) = id.checked_sub(self.recs_base).and_then(|i| self.recs.get_mut(i as usize)) else { return };
        if r.done {
            return;
        }
        r.done = true;
        let (issued, key) = (r.issued, r.key);
        self.by_key.remove(&key);
        let b = self.bucket(issued);
        match outcome {
            Outcome::Correct => b.lookups.correct += 1,
            Outcome::Incorrect => b.lookups.incorrect += 1,
            Outcome::Lost => b.lookups.lost += 1,
        }
        match outcome {
            Outcome::Correct => self.m.correct += 1,
            Outcome::Incorrect => self.m.incorrect += 1,
            Outcome::Lost => self.m.lost += 1,
        }
        if self.cfg.crash_fraction > 0.0 {
            self.m.outcomes.push((issued, outcome));
        }
        // Forget finished lookups at the front.
        while self.recs.front().is_some_and(|r| r.done) {
            self.recs.pop_front();
            self.recs_base += 1;
        }
    }

    /// Declares lost every lookup older than the timeout (all pending ones if `all`).
    fn sweep(&mut self, all: bool) {
        let timeout = self.cfg.lookup_timeout.as_micros() as u64;
        while let Some(r) = self.recs.front() {
            if !r.done && !all && r.issued + timeout > self.now {
                break;
            }
            let id = self.recs_base;
            if r.done {
                self.recs.pop_front();
                self.recs_base += 1;
            } else {
                self.resolve(id, Outcome::Lost);
            }
        }
    }

    /// Checks the oracle's nodes after a crash: (every nearest leaf is the true ring
    /// neighbour, no leaf set or routing table names a node that is down, every leaf set is
    /// exactly the true one). Only the checks asked for are computed.
    fn ring_check(&self, want_clean: bool, want_exact: bool) -> (bool, bool, bool) {
        let ring: Vec<(NodeId, u32)> = self.joined.iter().map(|(&k, &v)| (k, v)).collect();
        let n = ring.len();
        let (mut near_ok, mut clean_ok, mut exact_ok) = (true, want_clean, want_exact);
        let is_up = |id: &NodeId| self.ids.get(id).is_some_and(|&h| self.hosts[h as usize].up);
        for (i, &(_, h)) in ring.iter().enumerate() {
            let Some(node) = self.hosts[h as usize].node.as_deref() else { continue };
            let leaf = node.leaf_set();
            if n > 1 {
                let succ = ring[(i + 1) % n].0;
                let pred = ring[(i + n - 1) % n].0;
                near_ok &= leaf.cw().first() == Some(&succ) && leaf.ccw().first() == Some(&pred);
            }
            if clean_ok {
                clean_ok =
                    leaf.cw().iter().chain(leaf.ccw()).all(is_up) && node.routing_table().iter().all(|c| is_up(&c.id));
            }
            if exact_ok && n > 1 {
                let k = leaf.half().min(n - 1);
                exact_ok = leaf.cw().len() == k
                    && leaf.ccw().len() == k
                    && (0..k).all(|j| leaf.cw()[j] == ring[(i + 1 + j) % n].0)
                    && (0..k).all(|j| leaf.ccw()[j] == ring[(i + n - 1 - j) % n].0);
            }
            if !near_ok && !clean_ok && !exact_ok {
                break;
            }
        }
        (near_ok, clean_ok, exact_ok)
    }

    // ----- scenario -----------------------------------------------------------------------

    fn on_ctl(&mut self, c: Ctl) {
        match c {
            Ctl::JoinNext => {
                if self.to_join == 0 {
                    return;
                }
                self.to_join -= 1;
                let h = self.add_host();
                self.join_random(h);
                if self.to_join > 0 {
                    let gap = (1e6 / self.cfg.join_rate.max(1e-6)) as u64;
                    self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::JoinNext));
                }
            }
            Ctl::JoinRetry { host, inc } => {
                let x = &self.hosts[host as usize];
                if x.up && x.inc == inc && x.joined_pos == NONE && x.node.as_ref().is_some_and(|n| !n.is_joining()) {
                    self.join_random(host);
                }
            }
            Ctl::Lookup => {
                self.sweep(false);
                if self.m.issued >= self.cfg.lookups {
                    return;
                }
                if !self.joined_list.is_empty() {
                    let origin = self.joined_list[self.rng_work.below(self.joined_list.len() as u64) as usize];
                    let key = NodeId::from_u128(self.rng_work.next_u128());
                    self.lookup(origin, key);
                }
                if self.m.issued < self.cfg.lookups {
                    let rate = self.cfg.effective_lookup_rate().max(1e-9);
                    let gap = exp_sample(&mut self.rng_work, 1e6 / rate) as u64;
                    self.queue.push(self.now + gap, Ev::Ctl(Ctl::Lookup));
                }
            }
            Ctl::CrashFraction => {
                let n = ((self.joined_list.len() as f64) * self.cfg.crash_fraction).round() as usize;
                let mut pool = self.joined_list.clone();
                pool.sort_unstable();
                let mut victims = Vec::with_capacity(n);
                for i in 0..n.min(pool.len()) {
                    let j = i + self.rng_churn.below((pool.len() - i) as u64) as usize;
                    pool.swap(i, j);
                    victims.push(pool[i]);
                }
                for &h in &victims {
                    match self.cfg.bounce_after {
                        Some(d) => self.bounce(h, d),
                        None => self.crash(h),
                    }
                }
                self.crashed = victims.len() as u64;
                self.crash_at = Some(self.now);
                self.queue.push(self.now + self.cfg.check_interval.as_micros() as u64, Ev::Ctl(Ctl::Check));
            }
            Ctl::Check => {
                let (near, clean, exact) = self.ring_check(self.clean_at.is_none(), self.exact_at.is_none());
                if near && self.ring_at.is_none() {
                    self.ring_at = Some(self.now);
                }
                if clean && self.clean_at.is_none() {
                    self.clean_at = Some(self.now);
                }
                if exact && self.exact_at.is_none() {
                    self.exact_at = Some(self.now);
                }
                if near && self.clean_at.is_some() && self.repair_at.is_none() {
                    self.repair_at = Some(self.now);
                }
                let give_up = self.crash_at.unwrap_or(0) + self.cfg.repair_timeout.as_micros() as u64;
                if (self.repair_at.is_none() || self.exact_at.is_none()) && self.now < give_up {
                    self.queue.push(self.now + self.cfg.check_interval.as_micros() as u64, Ev::Ctl(Ctl::Check));
                }
            }
            Ctl::Arrival => {
                if self.now >= self.measure_end {
                    return;
                }
                self.m.arrivals += 1;
                let h = self.add_host();
                self.join_random(h);
                self.schedule_departure(h);
                let churn = self.cfg.churn.as_ref().expect("arrivals are scheduled only with churn");
                let mean = mean_session_us(churn.median_session.as_micros() as f64, churn.dist);
                let rate_us = (self.cfg.nodes.max(1) as f64) / mean;
                let gap = exp_sample(&mut self.rng_churn, 1.0 / rate_us) as u64;
                self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::Arrival));
            }
            Ctl::Depart { host, inc } => {
                let x = &self.hosts[host as usize];
                if !x.up || x.inc != inc || self.now >= self.measure_end {
                    return;
                }
                let graceful = self.cfg.churn.as_ref().map_or(0.0, |c| c.graceful);
                if graceful > 0.0 && self.rng_churn.unit_f64() < graceful {
                    self.m.leaves += 1;
                    self.leave(host);
                } else {
                    self.m.crashes += 1;
                    self.crash(host);
                }
            }
            Ctl::Restart { host } => {
                if !self.hosts[host as usize].up {
                    self.start(host);
                    self.join_random(host);
                }
            }
            Ctl::Kill { host, inc } => {
                if self.hosts[host as usize].inc == inc {
                    self.crash(host);
                }
            }
            Ctl::Trace { idx } => self.on_trace(idx as usize),
            Ctl::Split => {
                let Some(plan) = self.cfg.split else { return };
                for i in 0..self.hosts.len() {
                    let side = u8::from(self.rng_churn.unit_f64() < plan.fraction);
                    self.hosts[i].side = side;
                }
                self.split = Some(plan.mode);
            }
            Ctl::Heal => {
                let was = self.split.take();
                if was == Some(SplitMode::Hold) {
                    let hold_pairs = std::mem::take(&mut self.hold_pairs);
                    self.release_where(|s, l| {
                        let (a, b) = (s.links[l as usize].host[0], s.links[l as usize].host[1]);
                        !hold_pairs.contains(&(a.min(b), a.max(b)))
                    });
                    self.hold_pairs = hold_pairs;
                }
            }
            Ctl::Sample => {
                self.sweep(false);
                let (alive, joined) = (self.alive, self.joined.len() as u64);
                let b = self.bucket(self.now);
                b.live = alive;
                b.joined = joined;
                self.queue.push(self.now + self.bucket_us, Ev::Ctl(Ctl::Sample));
            }
        }
    }

    fn on_trace(&mut self, idx: usize) {
        let Some(&rec) = self.cfg.churn_trace.get(idx) else { return };
        let known = self.labels.get(&rec.node).copied();
        match (rec.up, known) {
            (true, None) => {
                self.m.arrivals += 1;
                let h = self.add_host();
                self.labels.insert(rec.node, h);
                self.join_random(h);
            }
            (true, Some(h)) if !self.hosts[h as usize].up => {
                self.m.arrivals += 1;
                self.start(h);
                self.join_random(h);
            }
            (false, Some(h)) if self.hosts[h as usize].up => {
                self.m.crashes += 1;
                self.crash(h);
            }
            _ => {}
        }
        if let Some(next) = self.cfg.churn_trace.get(idx + 1) {
            let at = self.measure_start + next.time.as_micros() as u64;
            self.queue.push(at.max(self.now), Ev::Ctl(Ctl::Trace { idx: idx as u32 + 1 }));
        }
    }

    fn schedule_departure(&mut self, h: u32) {
        let Some(churn) = self.cfg.churn.as_ref() else { return };
        let s = session_sample(&mut self.rng_churn, churn.median_session.as_micros() as f64, churn.dist);
        let inc = self.hosts[h as usize].inc;
        self.queue.push(self.now + s as u64, Ev::Ctl(Ctl::Depart { host: h, inc }));
    }

    /// Runs the whole scenario of the configuration and reports.
    pub fn run(mut self, mut progress: impl FnMut(&Sim, f64)) -> Report {
        let wall = std::time::Instant::now();
        let cfg = self.cfg.clone();
        let measure_len = cfg.measure_length().as_micros() as u64;
        let join_est = ((cfg.nodes.saturating_sub(1)) as f64 / cfg.join_rate.max(1e-6) * 1e6) as u64;
        let planned = join_est + cfg.settle.as_micros() as u64 + measure_len + cfg.lookup_timeout.as_micros() as u64;
        self.bucket_us =
            cfg.bucket.map_or_else(|| (planned / 400).max(SEC) / SEC * SEC, |b| (b.as_micros() as u64).max(1));
        self.queue.push(0, Ev::Ctl(Ctl::Sample));
        let mut tick = |s: &Sim| {
            if s.events & 0xffff == 0 {
                progress(s, s.now as f64 / planned.max(1) as f64);
            }
        };

        // Phase 1: build the population through the real join protocol.
        if cfg.nodes > 0 {
            let first = self.add_host();
            self.mark_joined(first);
            self.to_join = cfg.nodes - 1;
            if self.to_join > 0 {
                self.queue.push(SEC / 10, Ev::Ctl(Ctl::JoinNext));
            }
        }
        let join_deadline = join_est + 600 * SEC;
        while self.joined.len() < cfg.nodes && self.now < join_deadline && self.step() {
            tick(&self);
        }
        let join_end = self.now;
        let (join_ctl, join_ctl_bytes) = (self.m.ctl_frames, self.m.ctl_bytes);
        self.integrate();
        let join_live_int = self.live_int;

        // Phase 2: settle.
        let settle_end = self.now + cfg.settle.as_micros() as u64;
        while self.queue.peek_time().is_some_and(|t| t <= settle_end) {
            self.step();
            tick(&self);
        }
        self.now = self.now.max(settle_end);

        // Phase 3: measure.
        self.measure_start = self.now;
        self.measure_end = self.now + measure_len;
        self.integrate();
        let (m_live0, m_joined0) = (self.live_int, self.joined_int);
        let (ctl0, ctl_bytes0) = (self.m.ctl_frames, self.m.ctl_bytes);
        if cfg.lookups > 0 {
            self.queue.push(self.now, Ev::Ctl(Ctl::Lookup));
        }
        if cfg.crash_fraction > 0.0 {
            let at = cfg.crash_at.map_or(measure_len / 4, |d| d.as_micros() as u64);
            self.queue.push(self.now + at, Ev::Ctl(Ctl::CrashFraction));
        }
        if let Some(churn) = &cfg.churn {
            let hosts: Vec<u32> = (0..self.hosts.len() as u32).filter(|&h| self.hosts[h as usize].up).collect();
            for h in hosts {
                self.schedule_departure(h);
            }
            let mean = mean_session_us(churn.median_session.as_micros() as f64, churn.dist);
            let gap = exp_sample(&mut self.rng_churn, mean / cfg.nodes.max(1) as f64) as u64;
            self.queue.push(self.now + gap, Ev::Ctl(Ctl::Arrival));
        }
        if let Some(first) = cfg.churn_trace.first() {
            for h in 0..self.hosts.len() as u32 {
                self.labels.insert(h, h);
            }
            self.queue.push(self.now + first.time.as_micros() as u64, Ev::Ctl(Ctl::Trace { idx: 0 }));
        }
        if let Some(split) = &cfg.split {
            let at = self.now + split.at.as_micros() as u64;
            self.queue.push(at, Ev::Ctl(Ctl::Split));
            self.queue.push(at + split.length.as_micros() as u64, Ev::Ctl(Ctl::Heal));
        }
        let timeout = cfg.lookup_timeout.as_micros() as u64;
        loop {
            let issued_all = self.m.issued >= cfg.lookups;
            let settled = self.recs.iter().all(|r| r.done) || self.now >= self.last_issue + timeout;
            let measured = self.now >= self.measure_end;
            let repaired = self.crash_at.is_none_or(|c| {
                (self.repair_at.is_some() && self.exact_at.is_some())
                    || self.now >= c + cfg.repair_timeout.as_micros() as u64
            });
            let crash_pending = cfg.crash_fraction > 0.0 && self.crash_at.is_none();
            if issued_all && settled && measured && repaired && !crash_pending {
                break;
            }
            if !self.step() {
                break;
            }
            tick(&self);
            // Cheap check of the "settled" condition: only when the front is done or old.
            if issued_all && self.now >= self.last_issue + timeout {
                self.sweep(true);
            }
        }
        self.sweep(true);
        self.integrate();
        let end = self.now;

        // Report.
        let up_nodes = self.hosts.iter().filter_map(|h| h.node.as_deref());
        let (mut n_up, mut n_conns) = (0u64, 0u64);
        for n in up_nodes {
            n_up += 1;
            n_conns += n.connection_count() as u64;
        }
        let links_live = (self.links.len() - self.free_links.len()) as u64;
        let wall_s = wall.elapsed().as_secs_f64();
        let m = &mut self.m;
        let delivered_hops: u64 = m.hops.iter().sum();
        let hops_sum: u64 = m.hops.iter().enumerate().map(|(h, &c)| h as u64 * c).sum();
        let mut sorted_hops = Vec::with_capacity(delivered_hops as usize);
        for (h, &c) in m.hops.iter().enumerate() {
            sorted_hops.extend(std::iter::repeat_n(h as u64, c as usize));
        }
        let mut hist = m.hops.clone();
        while hist.len() > 1 && hist.last() == Some(&0) {
            hist.pop();
        }
        m.stretch.sort_by(f32::total_cmp);
        m.join_times.sort_unstable();
        let jt: Vec<f64> = m.join_times.iter().map(|&t| t as f64 / 1e6).collect();
        let node_s = |int: u128| (int as f64 / 1e6).max(1e-9);
        let measure_node_s = node_s(self.live_int - m_live0);
        let join_node_s = node_s(join_live_int);
        let mut node_errors = BTreeMap::new();
        for (k, &v) in ERROR_KINDS.iter().zip(m.errors.iter()) {
            if v > 0 {
                node_errors.insert((*k).to_string(), v);
            }
        }
        let crash = self.crash_at.map(|c| {
            let repair = self.repair_at;
            let mut r = CrashReport {
                crashed: self.crashed,
                at_s: c as f64 / 1e6,
                repair_s: repair.map(|t| (t - c) as f64 / 1e6),
                ring_s: self.ring_at.map(|t| (t - c) as f64 / 1e6),
                tables_clean_s: self.clean_at.map(|t| (t - c) as f64 / 1e6),
                leaf_sets_exact_s: self.exact_at.map(|t| (t - c) as f64 / 1e6),
                ..CrashReport::default()
            };
            for &(t, o) in &m.outcomes {
                let w = if t < c {
                    &mut r.before
                } else if repair.is_none_or(|rt| t < rt) {
                    &mut r.during
                } else {
                    &mut r.after
                };
                add_outcome(w, o);
            }
            r
        });
        let measure_s = ((end - self.measure_start) as f64 / 1e6).max(1e-9);
        let churn = (cfg.churn.is_some() || !cfg.churn_trace.is_empty()).then(|| ChurnReport {
            arrivals: m.arrivals,
            crashes: m.crashes,
            leaves: m.leaves,
            mean_live: (self.live_int - m_live0) as f64 / 1e6 / measure_s,
            mean_joined: (self.joined_int - m_joined0) as f64 / 1e6 / measure_s,
        });
        let mut timeline = std::mem::take(&mut m.buckets);
        for b in &mut timeline {
            b.lookups.issued = b.lookups.issued.max(b.lookups.correct + b.lookups.incorrect + b.lookups.lost);
        }
        let peak_rss = peak_rss_bytes();
        let mut params = BTreeMap::new();
        let p = &cfg;
        for (k, v) in [
            ("heartbeat_ms", p.node.heartbeat.as_millis().to_string()),
            ("leaf_exchange_s", p.node.leaf_exchange.as_secs().to_string()),
            ("idle_timeout_s", p.node.idle_timeout.as_secs().to_string()),
            ("leaf_set_size", p.node.leaf_set_size.to_string()),
            ("join_rate", p.join_rate.to_string()),
            ("lookup_rate", p.effective_lookup_rate().to_string()),
            ("lookup_timeout_s", p.lookup_timeout.as_secs().to_string()),
            ("settle_s", p.settle.as_secs().to_string()),
            ("topology", format!("{:?}", p.net.topology)),
            ("diameter_ms", p.net.diameter.as_millis().to_string()),
            ("regions", p.net.regions.to_string()),
            ("jitter", p.net.jitter.to_string()),
            ("loss", p.net.loss.to_string()),
            ("loss_mode", format!("{:?}", p.net.loss_mode)),
            ("bucket_s", (self.bucket_us as f64 / 1e6).to_string()),
        ] {
            params.insert(k.to_string(), v);
        }
        Report {
            nodes: cfg.nodes as u64,
            lookups: cfg.lookups,
            seed: cfg.seed,
            issued: m.issued,
            delivered: m.delivered,
            correct: m.correct,
            incorrect: m.incorrect,
            lost: m.lost,
            duplicates: m.duplicates,
            send_errors: m.send_errors,
            delivery_ratio: ratio(m.delivered, m.issued),
            correct_ratio: ratio(m.correct, m.issued),
            hops_mean: if delivered_hops > 0 { hops_sum as f64 / delivered_hops as f64 } else { 0.0 },
            hops_p50: quantile(&sorted_hops, 0.5),
            hops_p99: quantile(&sorted_hops, 0.99),
            hops_max: sorted_hops.last().copied().unwrap_or(0),
            hops_log16_n: (cfg.nodes.max(1) as f64).log(16.0),
            hops_histogram: hist,
            stretch_mean: if m.stretch.is_empty() {
                0.0
            } else {
                m.stretch.iter().map(|&x| f64::from(x)).sum::<f64>() / m.stretch.len() as f64
            },
            stretch_p99: f64::from(quantile(&m.stretch, 0.99)),
            joins: m.join_times.len() as u64,
            join_failures: m.join_failures,
            join_time_mean_s: if jt.is_empty() { 0.0 } else { jt.iter().sum::<f64>() / jt.len() as f64 },
            join_time_p50_s: quantile(&jt, 0.5),
            join_time_p99_s: quantile(&jt, 0.99),
            join_time_max_s: jt.last().copied().unwrap_or(0.0),
            join_phase_s: join_end as f64 / 1e6,
            control_msgs_per_node_per_s: (m.ctl_frames - ctl0) as f64 / measure_node_s,
            control_bytes_per_node_per_s: (m.ctl_bytes - ctl_bytes0) as f64 / measure_node_s,
            join_control_msgs_per_node_per_s: join_ctl as f64 / join_node_s,
            join_control_bytes_per_node_per_s: join_ctl_bytes as f64 / join_node_s,
            frames: m.frames,
            bytes: m.bytes,
            events: self.events,
            events_per_s: self.events as f64 / wall_s.max(1e-9),
            peak_pending_events: self.queue.peak() as u64,
            sim_s: end as f64 / 1e6,
            wall_s,
            peak_rss_bytes: peak_rss,
            bytes_per_node: peak_rss / self.peak_alive.max(1),
            trace_hash: self.trace.hex(),
            conns_per_node: n_conns as f64 / n_up.max(1) as f64,
            links_per_node: links_live as f64 / n_up.max(1) as f64,
            node_errors,
            crash,
            churn,
            params,
            timeline,
        }
    }
}

fn add_outcome(w: &mut Window, o: Outcome) {
    w.issued += 1;
    match o {
        Outcome::Correct => {
            w.delivered += 1;
            w.correct += 1;
        }
        Outcome::Incorrect => {
            w.delivered += 1;
            w.incorrect += 1;
        }
        Outcome::Lost => w.lost += 1,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// An exponential sample with the given mean.
fn exp_sample(rng: &mut Rng, mean: f64) -> f64 {
    -(1.0 - rng.unit_f64()).ln() * mean
}

/// Mean session (µs) of a distribution with the given median (µs).
fn mean_session_us(median: f64, dist: SessionDist) -> f64 {
    match dist {
        SessionDist::Exponential => median / std::f64::consts::LN_2,
        SessionDist::Pareto { shape } => {
            let shape = shape.max(1.0001);
            let xm = median / 2f64.powf(1.0 / shape);
            shape * xm / (shape - 1.0)
        }
    }
}

/// A session time (µs) with the given median (µs).
fn session_sample(rng: &mut Rng, median: f64, dist: SessionDist) -> f64 {
    let u = 1.0 - rng.unit_f64();
    match dist {
        SessionDist::Exponential => -u.ln() * median / std::f64::consts::LN_2,
        SessionDist::Pareto { shape } => {
            let shape = shape.max(1.0001);
            median / 2f64.powf(1.0 / shape) * u.powf(-1.0 / shape)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_medians() {
        let mut rng = Rng::new(9);
        for dist in [SessionDist::Exponential, SessionDist::Pareto { shape: 1.5 }] {
            let mut v: Vec<f64> = (0..20_001).map(|_| session_sample(&mut rng, 100.0, dist)).collect();
            v.sort_by(f64::total_cmp);
            let med = v[10_000];
            assert!((90.0..110.0).contains(&med), "{dist:?}: median {med}");
        }
    }

    #[test]
    fn oracle_picks_the_closest_both_ways_round() {
        let mut sim = Sim::new(SimConfig { nodes: 0, ..SimConfig::default() });
        for _ in 0..50 {
            let h = sim.add_host();
            sim.mark_joined(h);
        }
        let ids: Vec<NodeId> = sim.joined.keys().copied().collect();
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let key = NodeId::from_u128(rng.next_u128());
            let brute = ids.iter().copied().reduce(|b, x| if key.is_closer(x, b) { x } else { b });
            assert_eq!(sim.closest(key), brute);
        }
    }
}
