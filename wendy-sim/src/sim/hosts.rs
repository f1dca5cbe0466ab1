//! Hosting: one simulated machine per node, the driver loop of each node (feed an input,
//! drain every output, re-arm its one timer), and the host-level faults (crash, bounce, leave).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use wendy_proto::rng::splitmix64;
use wendy_proto::store::{MemoryBackend, Store, StoreConfig};
use wendy_proto::{Config, Event, Instant, Node, NodeError, NodeId};

use std::net::SocketAddr;

use super::{Sim, NEVER, NONE};
use crate::net::{host_addr, Place, MAX_HOSTS};
use crate::queue::{Ctl, Ev};

/// Bootstraps given to a joining node: it tries them in turn (and, from its second attempt,
/// the node it has learned closest to its id).
pub(super) const BOOTSTRAPS: usize = 3;

/// Names of the node error kinds, in the order of [`error_kind`].
pub(super) const ERROR_KINDS: [&str; 8] =
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
pub(super) struct Host {
    pub(super) node: Option<Box<Node>>,
    pub(super) up: bool,
    pub(super) id: NodeId,
    pub(super) place: Place,
    /// Incarnation: bumped at every crash, so connections of an earlier life are recognised.
    pub(super) inc: u32,
    pub(super) timer_gen: u32,
    pub(super) timer_at: u64,
    /// The node's connections: ConnId -> link << 1 | side.
    pub(super) conns: ConnMap,
    /// Position in the oracle's joined list, `NONE` if not joined.
    pub(super) joined_pos: u32,
    pub(super) join_started: u64,
    /// Control frames and bytes already counted from the node's stats, modulo 2^32 ([`Seen`]).
    pub(super) ctl_seen: [Seen; 2],
    /// The node's ack and reroute counters as last seen, modulo 2^32.
    pub(super) ack_seen: [Seen; 3],
    /// Split side (0 or 1).
    pub(super) side: u8,
    /// The node's storage layer, with the key-value workload (in memory: lost in a crash).
    pub(super) store: Option<Box<Store>>,
    /// Storage bytes and maintenance bytes already counted from the store's stats, modulo 2^32.
    pub(super) kv_seen: [Seen; 2],
}

/// A node's counter as last seen, in its low 32 bits: what it grew by since is the wrapping
/// difference, exact as long as it grows by less than 2^32 between two looks (one event's
/// output). Every host keeps seven, so 28 bytes of its record rather than 56.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seen(u32);

impl Seen {
    /// What `counter` grew by since it was last seen, and remembers it.
    pub(super) fn take(&mut self, counter: u64) -> u64 {
        let low = counter as u32;
        let grew = low.wrapping_sub(self.0);
        self.0 = low;
        u64::from(grew)
    }
}

/// Hashes a `NodeId` by folding its (already uniformly random) bits: ids and lookup keys are
/// drawn at random, so this is as good as any hash and much cheaper than SipHash. Maps keyed by
/// it are only ever looked up, never iterated, so their order cannot reach any output.
#[derive(Default)]
pub(super) struct IdHasher(u64);

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
pub(super) type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// A host's connections, ConnId -> link << 1 | side, as an open-addressing table with linear
/// probing: a node names its connections with consecutive numbers, so the number itself
/// (masked) spreads them over the slots, and a look-up (one per frame sent) reads one slot,
/// where a binary search over a sorted vector waited on a cache miss at every step.
///
/// The table is a power of two of 8-byte slots (the conn number as 32 bits, the code), at most
/// 7/8 full, and shrinks when under a quarter full; removals shift the following entries back
/// (no tombstones). A node would have to open four billion connections in one life before its
/// numbers no longer fit in 32 bits; those that do not wait in an ordered map beside the table.
#[derive(Debug, Default)]
pub(super) struct ConnMap {
    /// `(conn, code)`; `EMPTY` as conn marks a free slot. Empty or a power of two long.
    slots: Box<[(u32, u32)]>,
    len: u32,
    /// Entries whose conn does not fit the table (`EMPTY` or more), boxed: no host of a run
    /// has opened four billion connections, and an empty map is 24 bytes of every host.
    #[allow(clippy::box_collection)] // 8 bytes in every host rather than the map's 24
    wide: Option<Box<std::collections::BTreeMap<u64, u32>>>,
}

/// The conn of a free slot.
const EMPTY: u32 = u32::MAX;

impl ConnMap {
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `conn`, if any.
    fn find(&self, conn: u32) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = conn as usize & mask;
        loop {
            let k = self.slots[i].0;
            if k == conn {
                return Some(i);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the table's slots, at most its first 16 cache lines (a hint, as
    /// [`wendy_proto::Node::prefetch`]): a node about to run looks its connections up in it
    /// for every frame it sends.
    pub(super) fn prefetch(&self) {
        let per_line = 64 / std::mem::size_of::<(u32, u32)>();
        for i in (0..self.slots.len().min(16 * per_line)).step_by(per_line) {
            prefetch_index::prefetch_index(&self.slots, i);
        }
    }

    /// Rebuilds the table with `cap` slots (a power of two above the count).
    fn rehash(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![(EMPTY, 0); cap].into_boxed_slice());
        for &(conn, code) in old.iter().filter(|e| e.0 != EMPTY) {
            self.place(conn, code);
        }
    }

    /// Puts an entry not in the table into its first free slot.
    fn place(&mut self, conn: u32, code: u32) {
        let mask = self.mask();
        let mut i = conn as usize & mask;
        while self.slots[i].0 != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (conn, code);
    }

    /// `conn` as a key of the table, if it fits.
    fn narrow(conn: u64) -> Option<u32> {
        u32::try_from(conn).ok().filter(|&c| c != EMPTY)
    }

    pub(super) fn insert(&mut self, conn: u64, code: u32) {
        let Some(conn) = Self::narrow(conn) else {
            self.wide.get_or_insert_default().insert(conn, code);
            return;
        };
        if let Some(i) = self.find(conn) {
            self.slots[i].1 = code;
            return;
        }
        if (self.len as usize + 1) * 8 > self.slots.len() * 7 {
            self.rehash((self.slots.len() * 2).max(8));
        }
        self.place(conn, code);
        self.len += 1;
    }

    pub(super) fn get(&self, conn: u64) -> Option<u32> {
        match Self::narrow(conn) {
            Some(c) => self.find(c).map(|i| self.slots[i].1),
            None => self.wide.as_ref().and_then(|w| w.get(&conn).copied()),
        }
    }

    pub(super) fn remove(&mut self, conn: u64) -> Option<u32> {
        let Some(conn) = Self::narrow(conn) else {
            return self.wide.as_mut().and_then(|w| w.remove(&conn));
        };
        let mut hole = self.find(conn)?;
        let code = self.slots[hole].1;
        let mask = self.mask();
        // Shift back every following entry of the run that may not stay behind the hole.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j].0;
            if k == EMPTY {
                break;
            }
            let home = k as usize & mask;
            // The entry at `j` may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = (EMPTY, 0);
        self.len -= 1;
        // Down to 8 slots: a host keeps a few connections between bursts, and a table of 64
        // held after one was 0.5 KB of every host of a 100,000-node run.
        if self.slots.len() > 8 && (self.len as usize) * 4 < self.slots.len() {
            self.rehash((self.len as usize * 2).next_power_of_two().max(8));
        }
        Some(code)
    }

    /// Heap bytes the map holds (the ordered map of wide conns counted by entry).
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<(u32, u32)>()
            + self.wide.as_ref().map_or(0, |w| w.len()) * std::mem::size_of::<(u64, u32)>() * 2
    }

    /// The entries, by increasing conn.
    pub(super) fn into_sorted(self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> =
            self.slots.iter().filter(|e| e.0 != EMPTY).map(|&(c, code)| (u64::from(c), code)).collect();
        v.sort_unstable_by_key(|e| e.0);
        // Every wide conn is above every narrow one.
        v.extend(self.wide.into_iter().flat_map(|w| *w));
        v
    }
}

impl Sim {
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
            ctl_seen: Default::default(),
            ack_seen: Default::default(),
            side: 0,
            store: None,
            kv_seen: Default::default(),
        });
        self.start(h);
        h
    }

    /// Starts a fresh node on a down host (same id and address as before).
    pub(super) fn start(&mut self, h: u32) {
        let host = &self.hosts[h as usize];
        debug_assert!(!host.up);
        let local = host_addr(h, false);
        let mut seed = self.cfg.seed ^ (u64::from(h) << 20 | u64::from(host.inc)).wrapping_mul(0xA24B_AED4_963E_E407);
        // The simulator places ids itself (trusting mode); every connection is still encrypted
        // unless the run asks for plaintext, with entropy from the run's seed so runs replay.
        let node_seed = splitmix64(&mut seed);
        let mut entropy = [0u8; 32];
        for w in entropy.chunks_mut(8) {
            w.copy_from_slice(&splitmix64(&mut seed).to_le_bytes());
        }
        let mut cfg = Config::with_trusted_id(host.id, local).with_seed(node_seed).with_entropy(entropy);
        if self.net.cfg().regions > 0 {
            cfg = cfg.with_region(format!("r{}", host.place.region), local, host_addr(h, true));
        }
        let cfg = self.cfg.node.apply(cfg);
        let mut node = Node::new(cfg, Instant::from_micros(self.now))
            .expect("the node parameters are valid (NodeParams::validate; the CLI checks them)");
        let store = self.cfg.kv.as_ref().map(|kv| {
            let c = StoreConfig::default().with_replicas(kv.replicas).with_max_value_size(kv.value_size.max(1));
            Box::new(Store::new(c, Box::new(MemoryBackend::new()), &mut node).expect("a memory backend does not fail"))
        });
        let host = &mut self.hosts[h as usize];
        host.node = Some(Box::new(node));
        host.store = store;
        host.kv_seen = Default::default();
        host.up = true;
        host.ctl_seen = Default::default();
        host.ack_seen = Default::default();
        self.count_alive(1);
        let node = self.hosts[h as usize].node.take().expect("just started");
        self.finish(h, node);
    }

    /// Makes `h` (a ring of one) join through up to `BOOTSTRAPS` (3) distinct random joined
    /// nodes, which it tries in turn (wendy-proto's retry policy); false if none is joined.
    pub fn join_random(&mut self, h: u32) -> bool {
        let list = &self.oracle.joined_list;
        let others = list.len() - usize::from(self.hosts[h as usize].joined_pos != NONE);
        if others == 0 {
            return false;
        }
        // The first from the workload stream (as when there was one bootstrap), the others
        // from a stream of their own, so that adding them left the other draws as they were.
        let first = loop {
            let b = list[self.sc.rng_work.below(list.len() as u64) as usize];
            if b != h {
                break b;
            }
        };
        let mut boots = vec![first];
        while boots.len() < BOOTSTRAPS.min(others) {
            let b = list[self.sc.rng_boot.below(list.len() as u64) as usize];
            if b != h && !boots.contains(&b) {
                boots.push(b);
            }
        }
        self.join_via(h, &boots)
    }

    /// Makes `h` join the ring through host `bootstrap`. False if the node refused.
    pub fn join(&mut self, h: u32, bootstrap: u32) -> bool {
        self.join_via(h, &[bootstrap])
    }

    /// Makes `h` join the ring through the hosts `bootstraps`, tried in turn. False if the
    /// node refused.
    pub fn join_via(&mut self, h: u32, bootstraps: &[u32]) -> bool {
        let addrs: Vec<SocketAddr> = bootstraps.iter().map(|&b| self.addr_from(b, h)).collect();
        let Some(mut node) = self.take(h) else { return false };
        let ok = node.join(Instant::from_micros(self.now), &addrs).is_ok();
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
        if self.debug {
            let ready = host.node.as_deref().is_some_and(|n| n.is_ready());
            eprintln!("{:.3}s crash of host {h} (ready {ready})", self.now as f64 / 1e6);
        }
        if let Some(node) = host.node.take() {
            for (s, n) in self.m.gone_by_kind.iter_mut().zip(node.stats().control_frames_by_kind) {
                *s += n;
            }
        }
        let host = &mut self.hosts[h as usize];
        let store = host.store.take();
        host.inc += 1;
        host.timer_gen += 1;
        host.timer_at = NEVER;
        host.join_started = NEVER;
        // By conn, as the links were once listed: the order they are freed in is the order they
        // are reused in, which names the ephemeral addresses later nodes see.
        let links: Vec<u32> = std::mem::take(&mut host.conns).into_sorted().into_iter().map(|(_, c)| c).collect();
        self.remove_joined(h);
        self.count_alive(-1);
        self.kv_on_crash(h, store);
        for code in links {
            let l = code >> 1;
            // Dialled by the crashed host and never handed to the other node: the other
            // host's kernel drops it, unseen.
            if code & 1 == 0 {
                self.drop_unfed(l);
            }
            self.maybe_free(l);
        }
    }

    /// Bounce: crash `h` now and restart it (fresh node, same id and address, joining again)
    /// after `downtime`.
    pub fn bounce(&mut self, h: u32, downtime: core::time::Duration) {
        self.crash(h);
        self.queue.push(self.now + downtime.as_micros() as u64, Ev::Ctl(Ctl::Restart { host: h }));
    }

    /// Makes `h` leave gracefully; it is removed when it reports `Event::Drained` (its
    /// goodbyes are on the wire).
    pub fn leave(&mut self, h: u32) {
        let Some(mut node) = self.take(h) else { return };
        self.remove_joined(h);
        node.leave(Instant::from_micros(self.now));
        self.finish(h, node);
    }

    /// Takes the node of `h` out of its host to feed it an input (`None` if it is down).
    pub(super) fn take(&mut self, h: u32) -> Option<Box<Node>> {
        let host = &mut self.hosts[h as usize];
        if host.up {
            host.node.take()
        } else {
            None
        }
    }

    pub(super) fn on_event(&mut self, h: u32, e: Event) {
        match e {
            Event::Joined => {
                let host = &mut self.hosts[h as usize];
                if host.join_started != NEVER {
                    let t = self.now - host.join_started;
                    if (h as usize) < self.cfg.nodes && host.inc == 0 {
                        self.m.initial_join_times.push(t);
                    } else {
                        self.m.later_join_times.push(t);
                    }
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
                }
            }
            Event::Drained => {
                // Removed once this input's outputs are drained (the node is out of its host
                // while they are).
                let inc = self.hosts[h as usize].inc;
                self.queue.push(self.now, Ev::Ctl(Ctl::Kill { host: h, inc }));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Random inserts and removals of mostly consecutive conn numbers (as a node names them),
    /// some long-lived, against a sorted map: the same look-ups, and the table stays within
    /// its bounds (at most 7/8 full, at least a quarter full above 64 slots).
    #[test]
    fn a_conn_map_is_small() {
        assert_eq!(std::mem::size_of::<ConnMap>(), 32);
        assert_eq!(std::mem::size_of::<(u32, u32)>(), 8);
    }

    /// A host's record is 144 bytes (192 when its counters were whole and the map of wide
    /// conns was inline): at a million hosts, 46 MiB less.
    #[test]
    fn a_host_record_is_144_bytes() {
        assert_eq!(std::mem::size_of::<Host>(), 144);
    }

    /// A counter seen in its low 32 bits gives what it grew by across a wrap of those bits,
    /// and from zero after a restart's reset.
    #[test]
    fn a_seen_counter_takes_the_growth_across_wraps() {
        let mut s = Seen::default();
        assert_eq!(s.take(5), 5);
        assert_eq!(s.take(5), 0);
        assert_eq!(s.take(u64::from(u32::MAX) + 3), u64::from(u32::MAX) - 2);
        // The most it can tell: a growth of 2^32 - 1 between two looks.
        assert_eq!(s.take((1 << 33) + 1), u64::from(u32::MAX));
        let mut fresh = Seen::default();
        assert_eq!(fresh.take(3_000_000_000), 3_000_000_000);
    }

    /// Conns that do not fit in 32 bits (a node four billion connections into its life) are
    /// kept too, and listed after the others.
    #[test]
    fn wide_conns_are_kept() {
        let mut m = ConnMap::default();
        let wide = [u64::from(u32::MAX), 1 << 32, u64::MAX - 1];
        for (i, &c) in wide.iter().enumerate() {
            m.insert(c, i as u32);
            m.insert(c - (1 << 31), 10 + i as u32);
        }
        for (i, &c) in wide.iter().enumerate() {
            assert_eq!(m.get(c), Some(i as u32));
        }
        assert_eq!(m.remove(1 << 32), Some(1));
        assert_eq!(m.get(1 << 32), None);
        let sorted = m.into_sorted();
        let keys: Vec<u64> = sorted.iter().map(|e| e.0).collect();
        let mut want = keys.clone();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn conn_map_agrees_with_a_sorted_map() {
        let mut rng = wendy_proto::rng::Rng::new(3);
        let mut m = ConnMap::default();
        let mut reference = BTreeMap::new();
        let mut next = 0u64;
        for step in 0..100_000u32 {
            let grow = if (step / 5_000) % 2 == 0 { 6 } else { 4 };
            if rng.below(10) < grow {
                next += 1;
                m.insert(next, step);
                reference.insert(next, step);
            } else if let Some(&k) = reference.keys().nth(rng.below(reference.len().max(1) as u64) as usize) {
                assert_eq!(m.remove(k), reference.remove(&k));
            }
            let probe = next.saturating_sub(rng.below(200));
            assert_eq!(m.get(probe), reference.get(&probe).copied());
            assert_eq!(m.remove(next + 1), None);
            let len = m.len as usize;
            assert_eq!(len, reference.len());
            assert!(len * 8 <= m.slots.len() * 7);
            assert!(m.slots.len() <= 8 || len * 4 >= m.slots.len());
        }
        let all: Vec<(u64, u32)> = reference.into_iter().collect();
        assert_eq!(m.into_sorted(), all);
    }
}
