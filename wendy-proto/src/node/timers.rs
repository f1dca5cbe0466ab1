//! The timer table: every deadline of the node is its own entry, and `poll_timeout` is the
//! earliest of them (quinn-proto's `TimerTable`, extended to per-connection and per-peer
//! entries, each kind kept in a sorted ring buffer of its own).
//!
//! Entries due at the same instant fire in a fixed order (node timers first, in the order of
//! [`NodeTimer`], then connections by id, then peers by id), so a run is deterministic.
//! Connection and peer timers are re-armed lazily: activity on a connection or from a peer
//! only records a timestamp, and when the entry fires the owner computes its real deadline
//! from it, acting if it has passed and re-arming otherwise. So the table is touched only
//! when a deadline changes in kind (a dial, an open, a suspicion), never per message.

use std::collections::VecDeque;

use crate::id::NodeId;
use crate::output::ConnId;
use crate::time::Instant;

use super::vec_map::{gallop, Start};

/// Timers of the node as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum NodeTimer {
    /// The current join attempt gives up and the next one starts.
    Join,
    /// The announcement to the leaf set is considered answered.
    Announce,
    /// Heartbeats to the leaf set, and housekeeping.
    Heartbeat,
    /// The periodic leaf-set exchange (asks right after a join, then our leaf set on a heartbeat).
    LeafExchange,
}

const NODE_TIMERS: usize = 4;

/// What a deadline belongs to. Keys of one instant fire in this order: node timers, then
/// connections, peers and in-flight checks, each by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A node-wide timer.
    Node(NodeTimer),
    /// A connection's set-up, close or idle deadline.
    Conn(ConnId),
    /// A peer's liveness deadline: silence before a probe, or a probe's answer. The peer is
    /// known by the first 32 bits of its id ([`peer_key`]); the node fires every peer of that
    /// key whose recorded deadline is the entry's, and removes an entry only when no other
    /// peer of the key records it (see [`Node::arm_peer`](super::Node::arm_peer)).
    Peer(u32),
    /// A connection's in-flight check: routed messages it has not acknowledged.
    Ack(ConnId),
}

/// The deadlines: each kind of entry in a sorted ring buffer of its own, ordered by (instant, id),
/// so that an entry is 16 bytes (a peer's 12, [`PeerEntry`]) rather than the 24 of one set of
/// (instant, any key), with no
/// per-node overhead of a tree. The next entry to fire is the earliest of the
/// vectors' first ones, ties broken in [`TimerKey`]'s order: the same order as one set of
/// (instant, key) would give.
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    node: [Option<Instant>; NODE_TIMERS],
    conns: Sorted<(Instant, ConnId)>,
    peers: Sorted<PeerEntry>,
    acks: Sorted<(Instant, ConnId)>,
    /// The earliest deadline, kept beside the vectors: `poll_timeout` is asked after every
    /// input, and reading it here saves a look at each vector.
    earliest: Option<Instant>,
}

/// Distinct entries in a ring buffer sorted in increasing order: the first (smallest) entry
/// is the front, so that firing it moves nothing, and a deadline later than every other (a
/// timer re-armed some interval from now, the usual case) is appended, with neither a search
/// nor a move. Inserting or removing another moves the entries on the shorter side of it; a
/// table holds a few hundred at most (one per connection and table member), and entries
/// change only when a deadline changes in kind.
#[derive(Debug)]
struct Sorted<T>(VecDeque<T>);

impl<T> Default for Sorted<T> {
    fn default() -> Self {
        Sorted(VecDeque::new())
    }
}

impl<T: Ord + Copy> Sorted<T> {
    fn insert(&mut self, e: T) {
        if self.0.back().is_none_or(|last| *last < e) {
            self.0.push_back(e);
        } else if let Err(i) = self.locate(&e) {
            self.0.insert(i, e);
        }
    }

    fn remove(&mut self, e: &T) -> bool {
        if self.0.front() == Some(e) {
            self.0.pop_front();
            return true;
        }
        match self.locate(e) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    fn first(&self) -> Option<&T> {
        self.0.front()
    }

    /// Where `e` is (`Ok`) or would go (`Err`), as a binary search answers, searched from the
    /// back ([`gallop`]). Most entries inserted or removed are deadlines set a moment ago
    /// (a connection's set-up limit replaced by its idle check once it opens), which sit among
    /// the last few, in cache lines the last insertion touched; a binary search over the whole
    /// buffer read a line at each step, most of them not in the cache.
    fn locate(&self, e: &T) -> Result<usize, usize> {
        gallop(self.0.len(), Start::Back, |i| self.0[i].cmp(e))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * core::mem::size_of::<T>()
    }

    /// Gives back the room a burst left (see [`trimmed`]).
    fn trim(&mut self) {
        if let Some(keep) = trimmed(self.0.len(), self.0.capacity()) {
            self.0.shrink_to(keep);
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// What a peer's timer entry knows it by: the first 32 bits of its id (12 bytes an entry,
/// [`PeerEntry`]). Entries of one instant fire in the order of these keys, which is the order
/// of the ids. Two peers share a key if their ids share their first 32 bits: leaf-set
/// members, which are near each other in the id space, can (counted over a million random
/// ids with leaf sets of 32, 3.2 and 3.7 nodes in a thousand held such a pair, two draws;
/// 0.9 in a thousand at 100,000; more in larger rings); they then share entries as
/// [`Node::arm_peer`](super::Node::arm_peer) says, and each still fires at its own deadline.
pub(super) fn peer_key(id: NodeId) -> u32 {
    (id.as_u128() >> 96) as u32
}

/// A peer's timer entry: its deadline's microseconds (high word, then low) and its key
/// ([`peer_key`]) in three 32-bit words, 12 bytes where a tuple of an instant and a key takes
/// 16. The words compare in the order of (deadline, key): a table member's liveness deadline is
/// most of a node's entries, about a hundred of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PeerEntry([u32; 3]);

impl PeerEntry {
    fn new(at: Instant, key: u32) -> Self {
        let us = at.as_micros();
        PeerEntry([(us >> 32) as u32, us as u32, key])
    }

    fn at(self) -> Instant {
        Instant::from_micros(u64::from(self.0[0]) << 32 | u64::from(self.0[1]))
    }

    fn key(self) -> u32 {
        self.0[2]
    }
}

/// Entries a timer buffer or a node's map keeps room for however few it holds.
pub(super) const TRIM_MIN: usize = 8;

/// The capacity a buffer or map of `len` entries that has room for `capacity` is trimmed to at
/// the tick, if it holds more than a quarter again as many as it has (and more than
/// [`TRIM_MIN`]): an eighth again. A table member's timer entry and peer record change only
/// when a member comes or goes, so between two ticks a table grows by a few entries at most,
/// and a doubling's room (up to twice the entries) was held for the node's lifetime: at
/// 10,000 nodes (`closed`, neighbourhood 8) the timer buffers fell from 3.9 to 3.0 KB per
/// node at the end of the run.
pub(super) fn trimmed(len: usize, capacity: usize) -> Option<usize> {
    (capacity > (len + len / 4).max(TRIM_MIN)).then_some((len + len / 8).max(TRIM_MIN))
}

const NODE_ORDER: [NodeTimer; NODE_TIMERS] =
    [NodeTimer::Join, NodeTimer::Announce, NodeTimer::Heartbeat, NodeTimer::LeafExchange];

impl TimerTable {
    /// Sets node timer `t` to fire at `at`, replacing its previous deadline.
    pub(super) fn set(&mut self, t: NodeTimer, at: Instant) {
        if let Some(old) = self.node[t as usize].replace(at) {
            if self.earliest == Some(old) {
                self.earliest = self.least();
            }
        }
        self.lower_earliest(at);
    }

    fn lower_earliest(&mut self, at: Instant) {
        if self.earliest.is_none_or(|e| at < e) {
            self.earliest = Some(at);
        }
    }

    fn insert(&mut self, at: Instant, key: TimerKey) {
        match key {
            TimerKey::Node(t) => {
                self.set(t, at);
                return;
            }
            TimerKey::Conn(c) => self.conns.insert((at, c)),
            TimerKey::Peer(p) => self.peers.insert(PeerEntry::new(at, p)),
            TimerKey::Ack(c) => self.acks.insert((at, c)),
        };
        self.lower_earliest(at);
    }

    fn remove(&mut self, at: Instant, key: TimerKey) {
        let removed = match key {
            TimerKey::Node(t) => self.node[t as usize].take_if(|old| *old == at).is_some(),
            TimerKey::Conn(c) => self.conns.remove(&(at, c)),
            TimerKey::Peer(p) => self.peers.remove(&PeerEntry::new(at, p)),
            TimerKey::Ack(c) => self.acks.remove(&(at, c)),
        };
        if removed && self.earliest == Some(at) {
            self.earliest = self.least();
        }
    }

    /// The least deadline of all entries (what `earliest` keeps).
    fn least(&self) -> Option<Instant> {
        let node = self.node.iter().flatten().copied();
        let conn = self.conns.first().map(|e| e.0);
        let peer = self.peers.first().map(|e| e.at());
        let ack = self.acks.first().map(|e| e.0);
        node.chain(conn).chain(peer).chain(ack).min()
    }

    /// The entry that fires next: the earliest, ties broken in [`TimerKey`]'s order. The kinds
    /// are looked at in that order and the first whose first entry is due at the kept earliest
    /// deadline is it, so the vectors after it are not read (a connection's idle check, most
    /// of the entries that fire, leaves the peers' vector alone).
    fn head(&self) -> Option<(Instant, TimerKey)> {
        let at = self.earliest?;
        if let Some(t) = NODE_ORDER.into_iter().find(|&t| self.node[t as usize] == Some(at)) {
            return Some((at, TimerKey::Node(t)));
        }
        if let Some(&(_, c)) = self.conns.first().filter(|e| e.0 == at) {
            return Some((at, TimerKey::Conn(c)));
        }
        if let Some(e) = self.peers.first().filter(|e| e.at() == at) {
            return Some((at, TimerKey::Peer(e.key())));
        }
        self.acks.first().filter(|e| e.0 == at).map(|&(_, c)| (at, TimerKey::Ack(c)))
    }

    /// Stops node timer `t`.
    pub(super) fn stop(&mut self, t: NodeTimer) {
        if let Some(old) = self.node[t as usize] {
            self.remove(old, TimerKey::Node(t));
        }
    }

    /// When node timer `t` fires, if it is set.
    pub(super) fn get(&self, t: NodeTimer) -> Option<Instant> {
        self.node[t as usize]
    }

    /// Moves the entry of `key` from `old` (the deadline its owner recorded) to `at`; returns
    /// `at` for the owner to record.
    pub(super) fn arm(&mut self, key: TimerKey, old: Option<Instant>, at: Instant) -> Option<Instant> {
        if let Some(old) = old {
            self.remove(old, key);
        }
        self.insert(at, key);
        Some(at)
    }

    /// Removes the entry of `key` at `old` (the deadline its owner recorded), if any.
    pub(super) fn disarm(&mut self, key: TimerKey, old: Option<Instant>) {
        if let Some(old) = old {
            self.remove(old, key);
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.earliest
    }

    /// Removes and returns the earliest entry due at `now`, with its deadline. A node timer's
    /// slot is cleared; for the others the owner must forget its recorded deadline.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, TimerKey)> {
        if self.earliest? > now {
            return None;
        }
        let (at, key) = self.head()?;
        self.remove(at, key);
        Some((at, key))
    }

    /// Number of entries (for the invariant checks).
    pub(super) fn len(&self) -> usize {
        self.node.iter().flatten().count() + self.conns.len() + self.peers.len() + self.acks.len()
    }

    /// Bytes its vectors hold ([`Node::memory_footprint`](super::Node::memory_footprint)).
    pub(super) fn heap_bytes(&self) -> usize {
        self.conns.bytes() + self.peers.bytes() + self.acks.bytes()
    }

    /// Gives back the room a burst of deadlines left in the buffers (called every tick).
    pub(super) fn trim(&mut self) {
        self.conns.trim();
        self.peers.trim();
        self.acks.trim();
    }

    /// Forgets every deadline.
    pub(super) fn clear(&mut self) {
        self.conns.clear();
        self.peers.clear();
        self.acks.clear();
        self.node = [None; NODE_TIMERS];
        self.earliest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn entries_are_16_bytes_a_peers_12_and_one_set_would_take_24() {
        use core::mem::size_of;
        assert_eq!(size_of::<(Instant, ConnId)>(), 16);
        assert_eq!(size_of::<PeerEntry>(), 12);
        assert_eq!(size_of::<(Instant, TimerKey)>(), 24);
        let mut t = TimerTable::default();
        for i in 0..100u32 {
            t.arm(TimerKey::Conn(ConnId(i.into())), None, Instant::from_micros(1000 - u64::from(i)));
            t.arm(TimerKey::Peer(i), None, Instant::from_micros(i.into()));
        }
        assert_eq!(t.heap_bytes(), 128 * 16 + 128 * 12, "two vectors grown to 128 entries each");
    }

    #[test]
    fn a_peer_entry_keeps_its_deadline_whole_and_orders_as_deadline_then_key() {
        let far = Instant::from_micros(u64::MAX - 1);
        for (at, key) in [(Instant::ZERO, 0), (Instant::from_micros(u64::from(u32::MAX) + 1), 7), (far, u32::MAX)] {
            let e = PeerEntry::new(at, key);
            assert_eq!((e.at(), e.key()), (at, key));
        }
        let pairs = [(1u64 << 32, 0u32), ((1 << 32) + 1, 0), ((1 << 32) + 1, 9), (2 << 32, 1), (u64::MAX - 1, 0)];
        for w in pairs.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (ea, eb) =
                (PeerEntry::new(Instant::from_micros(a.0), a.1), PeerEntry::new(Instant::from_micros(b.0), b.1));
            assert!(ea < eb, "{a:?} before {b:?}");
        }
    }

    #[test]
    fn entries_fire_in_deadline_then_key_order() {
        let mut t = TimerTable::default();
        let at = |s| Instant::from_secs(s);
        t.set(NodeTimer::Heartbeat, at(5));
        let c = t.arm(TimerKey::Conn(ConnId(2)), None, at(3));
        t.arm(TimerKey::Peer(1), None, at(3));
        t.set(NodeTimer::Join, at(3));
        assert_eq!(t.next(), Some(at(3)));
        // Moving an entry removes the old one.
        t.arm(TimerKey::Conn(ConnId(2)), c, at(4));
        assert_eq!(t.pop_due(at(2)), None);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(at(10)).map(|e| e.1)).collect();
        assert_eq!(
            fired,
            vec![
                TimerKey::Node(NodeTimer::Join),
                TimerKey::Peer(1),
                TimerKey::Conn(ConnId(2)),
                TimerKey::Node(NodeTimer::Heartbeat),
            ]
        );
        assert_eq!(t.get(NodeTimer::Heartbeat), None);
        assert_eq!(t.len(), 0);
    }

    /// Key `k` of a small mixed set: node timers, connections, peers and in-flight checks,
    /// with ids that tie at one instant.
    fn key_of(k: u8) -> TimerKey {
        match k % 4 {
            0 => TimerKey::Node(NODE_ORDER[usize::from(k / 4) % NODE_TIMERS]),
            1 => TimerKey::Conn(ConnId(u64::from(k / 4))),
            2 => TimerKey::Peer(u32::from(k / 4) << 20 | 3),
            _ => TimerKey::Ack(ConnId(u64::from(k / 4))),
        }
    }

    proptest::proptest! {
        /// Searching from the back finds what a binary search finds, for entries present
        /// and absent, wherever the buffer's start has wrapped to.
        #[test]
        fn locate_answers_as_a_binary_search(
            mut v in proptest::collection::vec(0u32..400, 0..120),
            probes in proptest::collection::vec(0u32..401, 1..40),
            turn in 0usize..64,
        ) {
            v.sort_unstable();
            v.dedup();
            let mut s = Sorted::<u32>::default();
            // Pushing and popping first makes the ring buffer wrap.
            for i in 0..turn {
                s.0.push_back(1000 + i as u32);
                s.0.pop_front();
            }
            s.0.extend(v.iter().copied());
            for p in probes {
                proptest::prop_assert_eq!(s.locate(&p), v.binary_search(&p));
            }
        }

        /// The vectors fire in the order of one set of (instant, key), the table's order before
        /// it was split by kind, and the kept earliest is always the next entry's instant.
        #[test]
        fn the_split_table_fires_as_one_ordered_set(ops in proptest::collection::vec((0u8..4, 0u8..16, 0u64..50), 0..300)) {
            let mut t = TimerTable::default();
            let mut model: BTreeSet<(Instant, TimerKey)> = BTreeSet::new();
            let mut armed: [Option<Instant>; 16] = [None; 16];
            for (op, k, at) in ops {
                let key = key_of(k);
                let at = Instant::from_micros(at);
                let slot = usize::from(k);
                match (op, key) {
                    (0 | 1, TimerKey::Node(n)) => {
                        if let Some(old) = armed[slot] {
                            model.remove(&(old, key));
                        }
                        t.set(n, at);
                        model.insert((at, key));
                        armed[slot] = Some(at);
                    }
                    (0 | 1, _) => {
                        if let Some(old) = armed[slot] {
                            model.remove(&(old, key));
                        }
                        armed[slot] = t.arm(key, armed[slot], at);
                        model.insert((at, key));
                    }
                    (2, TimerKey::Node(n)) => {
                        t.stop(n);
                        if let Some(old) = armed[slot].take() {
                            model.remove(&(old, key));
                        }
                    }
                    (2, _) => {
                        let old = armed[slot].take();
                        t.disarm(key, old);
                        if let Some(old) = old {
                            model.remove(&(old, key));
                        }
                    }
                    _ => {
                        let fired = t.pop_due(at);
                        let due = model.first().copied().filter(|e| e.0 <= at);
                        proptest::prop_assert_eq!(fired, due);
                        if let Some(e) = due {
                            model.remove(&e);
                            let k = (0..16u8).find(|&k| key_of(k) == e.1).expect("a key of the set");
                            armed[usize::from(k)] = None;
                        }
                    }
                }
                proptest::prop_assert_eq!(t.next(), model.first().map(|e| e.0));
                proptest::prop_assert_eq!(t.len(), model.len());
            }
        }
    }

    #[test]
    fn the_buffers_give_back_the_room_a_burst_left() {
        let mut t = TimerTable::default();
        let peer = TimerKey::Peer;
        for i in 0..500u64 {
            t.arm(peer(i as u32), None, Instant::from_secs(i + 1));
            t.arm(TimerKey::Conn(ConnId(i + 1)), None, Instant::from_secs(i + 1));
        }
        let burst = t.heap_bytes();
        // All but the last ten of each fire.
        for i in 0..490u64 {
            let at = Instant::from_secs(i + 1);
            assert_eq!(t.pop_due(at), Some((at, TimerKey::Conn(ConnId(i + 1)))));
            assert_eq!(t.pop_due(at), Some((at, peer(i as u32))));
        }
        assert_eq!(t.heap_bytes(), burst, "firing moves nothing");
        t.trim();
        assert!(t.heap_bytes() <= 2 * TRIM_MIN * (16 + 12), "{} bytes held for 20 entries", t.heap_bytes());
        // The entries left still fire, in order.
        assert_eq!(t.len(), 20);
        let at = Instant::from_secs(491);
        assert_eq!(t.pop_due(at), Some((at, TimerKey::Conn(ConnId(491)))));
        assert_eq!(t.pop_due(at), Some((at, peer(490))));
    }

    #[test]
    fn setting_a_node_timer_again_replaces_it() {
        let mut t = TimerTable::default();
        t.set(NodeTimer::Join, Instant::from_secs(9));
        t.set(NodeTimer::Join, Instant::from_secs(4));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(NodeTimer::Join), Some(Instant::from_secs(4)));
        t.stop(NodeTimer::Join);
        assert_eq!(t.next(), None);
    }
}
