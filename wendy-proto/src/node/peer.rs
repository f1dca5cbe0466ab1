//! A node's record of a peer: what it told of itself, what we heard of it, and what probing
//! it needs, kept small since a node holds about a hundred.

use std::net::{SocketAddr, SocketAddrV4};
use std::num::NonZeroU64;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::ConnId;
use crate::routing_table::{held_proximity, hold_proximity};
use crate::time::Instant;

use super::liveness::MIN_STEP;
use super::timers::{peer_key, TimerKey};
use super::Node;

/// What a node keeps of a peer: 64 bytes (an allocator's 64-byte class), where a table
/// holds about a hundred of them. The id is the key of [`Node::peers`], not repeated here;
/// what a probe of it needs is boxed while a probe or a suspicion stands ([`Probe`]), which
/// is seldom for any one peer.
#[derive(Debug)]
pub(super) struct Peer {
    /// Its addresses and region, compacted ([`Peer::info`] gives them back whole).
    addrs: Addrs,
    /// When we last heard from it directly, if `HEARD` is set; else when the record was made.
    heard_at: Instant,
    /// The connection messages to it go on ([`Peer::conn`]): 8 bytes where an
    /// `Option<ConnId>` takes 16 (connection ids start at 1).
    conn: Option<NonZeroU64>,
    /// This peer's liveness entry in the timer table (table members only).
    pub(super) timer: Option<Instant>,
    /// The probe awaiting its answer and the suspicion, if either stands.
    probe: Option<Box<Probe>>,
    /// Its proximity ([`Peer::proximity`]), held in 32 bits ([`hold_proximity`]).
    proximity: u32,
    /// Smoothed round trip of per-hop acks, in microseconds (0: none measured yet).
    pub(super) srtt: u32,
    /// Its mean deviation, in microseconds.
    pub(super) rttvar: u32,
    /// Connections that name it as their peer (opened, not yet forgotten): when its current
    /// one closes, the others are looked for only if there are any ([`Node::detach`]).
    pub(super) named_by: u16,
    /// `HEARD` and `REPORTED`.
    flags: u8,
}

/// A peer's probe state: boxed in its record while a probe awaits its answer or the peer is
/// suspected, and dropped when neither holds.
#[derive(Debug, Default)]
struct Probe {
    /// Since when it is suspected.
    suspected: Option<Instant>,
    /// When the probe awaiting its answer went ([`Peer::ping`]).
    ping_sent: Option<Instant>,
    /// The number of the probe awaiting its answer, if `ping_sent` is set.
    ping_seq: u32,
    /// Probes sent since it was suspected.
    probes: u8,
}

/// [`Peer::flags`]: we heard from it directly ([`Peer::last_heard`]).
const HEARD: u8 = 1;
/// [`Peer::flags`]: its other neighbour told us it found it dead ([`Node::detected_failure`]).
const REPORTED: u8 = 2;

/// A node's addresses and region as a peer record keeps them: 16 bytes where a [`NodeInfo`]
/// takes 104. Two IPv4 addresses and no region (the common case) inline; anything else boxed.
#[derive(Debug)]
enum Addrs {
    V4(SocketAddrV4, SocketAddrV4),
    Other(Box<Rare>),
}

/// Addresses other than two IPv4 ones, or a region.
#[derive(Debug)]
struct Rare {
    local: SocketAddr,
    global: SocketAddr,
    region: Box<str>,
}

impl Addrs {
    fn new(info: NodeInfo) -> Self {
        match (info.local, info.global) {
            (SocketAddr::V4(l), SocketAddr::V4(g)) if info.region.is_empty() => Addrs::V4(l, g),
            (local, global) => Addrs::Other(Box::new(Rare { local, global, region: info.region.into_boxed_str() })),
        }
    }

    fn local_global(&self) -> (SocketAddr, SocketAddr) {
        match self {
            Addrs::V4(l, g) => (SocketAddr::V4(*l), SocketAddr::V4(*g)),
            Addrs::Other(r) => (r.local, r.global),
        }
    }

    fn region(&self) -> &str {
        match self {
            Addrs::V4(..) => "",
            Addrs::Other(r) => &r.region,
        }
    }
}

impl Peer {
    pub(super) fn new(info: NodeInfo, now: Instant) -> Self {
        Peer {
            addrs: Addrs::new(info),
            heard_at: now,
            conn: None,
            timer: None,
            probe: None,
            proximity: u32::MAX,
            srtt: 0,
            rttvar: 0,
            named_by: 0,
            flags: 0,
        }
    }

    /// When we last heard from it directly, if ever.
    pub(super) fn last_heard(&self) -> Option<Instant> {
        (self.flags & HEARD != 0).then_some(self.heard_at)
    }

    /// When we last heard from it directly, or if never, when we learned of it: what its
    /// silence is counted from.
    pub(super) fn silent_since(&self) -> Instant {
        self.heard_at
    }

    /// We heard from it directly at `now`.
    pub(super) fn set_heard(&mut self, now: Instant) {
        self.heard_at = now;
        self.flags |= HEARD;
    }

    /// It spoke to us at `now`: heard from directly, no longer a suspect, and no report of its
    /// failure stands.
    pub(super) fn heard_directly(&mut self, now: Instant) {
        self.set_heard(now);
        self.clear_suspicion();
        self.set_reported(false);
    }

    /// Its other neighbour told us it found it dead ([`Node::detected_failure`]).
    pub(super) fn reported(&self) -> bool {
        self.flags & REPORTED != 0
    }

    pub(super) fn set_reported(&mut self, reported: bool) {
        if reported {
            self.flags |= REPORTED;
        } else {
            self.flags &= !REPORTED;
        }
    }

    /// True if it answered us (we heard from it directly) and we do not suspect it now: a
    /// member trusted to fill a place in another table at once.
    pub(super) fn answered(&self) -> bool {
        self.last_heard().is_some() && self.suspected().is_none()
    }

    /// The connection messages to it go on.
    pub(super) fn conn(&self) -> Option<ConnId> {
        self.conn.map(|c| ConnId(c.get()))
    }

    /// Sets the connection messages to it go on. Connection ids start at 1 ([`Node::alloc_conn`]).
    pub(super) fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.and_then(|c| NonZeroU64::new(c.0));
    }

    /// What it told of itself; `id` is its id (the key it is kept under).
    pub(super) fn info(&self, id: NodeId) -> NodeInfo {
        let (local, global) = self.addrs.local_global();
        NodeInfo { id, local, global, region: self.addrs.region().to_string() }
    }

    /// Replaces what it told of itself.
    pub(super) fn set_info(&mut self, info: NodeInfo) {
        self.addrs = Addrs::new(info);
    }

    /// Its region (empty: none).
    pub(super) fn region(&self) -> &str {
        self.addrs.region()
    }

    /// The address a node in `from_region` should use to reach it ([`NodeInfo::addr_from`]).
    pub(super) fn addr_from(&self, from_region: &str) -> SocketAddr {
        let (local, global) = self.addrs.local_global();
        if self.addrs.region() == from_region {
            local
        } else {
            global
        }
    }

    /// Bytes its record holds beyond itself: addresses other than two IPv4 ones, a region.
    pub(super) fn heap_bytes(&self) -> usize {
        let probe = self.probe.as_ref().map_or(0, |_| std::mem::size_of::<Probe>());
        probe
            + match &self.addrs {
                Addrs::V4(..) => 0,
                Addrs::Other(r) => std::mem::size_of::<Rare>() + r.region.len(),
            }
    }

    /// The probe awaiting its answer: its number and when it went.
    pub(super) fn ping(&self) -> Option<(u32, Instant)> {
        let p = self.probe.as_deref()?;
        p.ping_sent.map(|t| (p.ping_seq, t))
    }

    /// Records the probe awaiting its answer, or none.
    pub(super) fn set_ping(&mut self, ping: Option<(u32, Instant)>) {
        self.probe_state(|p| {
            p.ping_seq = ping.map_or(0, |p| p.0);
            p.ping_sent = ping.map(|p| p.1);
        });
    }

    /// Since when it is suspected, if it is.
    pub(super) fn suspected(&self) -> Option<Instant> {
        self.probe.as_deref().and_then(|p| p.suspected)
    }

    /// It is suspected from `now`, with one probe sent.
    pub(super) fn suspect(&mut self, now: Instant) {
        self.probe_state(|p| (p.suspected, p.probes) = (Some(now), 1));
    }

    /// It is no longer suspected.
    pub(super) fn clear_suspicion(&mut self) {
        if self.probe.is_some() {
            self.probe_state(|p| (p.suspected, p.probes) = (None, 0));
        }
    }

    /// Probes sent since it was suspected (0 when it is not).
    pub(super) fn probes(&self) -> u8 {
        self.probe.as_deref().map_or(0, |p| p.probes)
    }

    /// One more probe went while it is suspected.
    pub(super) fn add_probe(&mut self) {
        self.probe_state(|p| p.probes = p.probes.saturating_add(1));
    }

    /// Changes the probe state, boxing it for the change and dropping the box when neither a
    /// probe nor a suspicion stands after it.
    fn probe_state(&mut self, f: impl FnOnce(&mut Probe)) {
        let p = self.probe.get_or_insert_with(Box::default);
        f(p);
        if p.suspected.is_none() && p.ping_sent.is_none() {
            self.probe = None;
        }
    }

    /// Its proximity (lower is nearer; [`crate::routing_table::UNKNOWN_PROXIMITY`] until
    /// measured).
    pub(super) fn proximity(&self) -> u64 {
        held_proximity(self.proximity)
    }

    /// Sets its proximity ([`Peer::proximity`] says how it is held).
    pub(super) fn set_proximity(&mut self, proximity: u64) {
        self.proximity = hold_proximity(proximity);
    }
}

impl Node {
    /// Sets the liveness deadline of a known peer (never before the next microsecond).
    pub(super) fn arm_peer(&mut self, id: NodeId, at: Instant) {
        let at = at.max(self.last_now + MIN_STEP);
        if self.drained {
            return;
        }
        let Some(old) = self.own_timer(id) else { return };
        let at = self.timers.arm(TimerKey::Peer(peer_key(id)), old, at);
        if let Some(p) = self.peers.get_mut(&id) {
            p.timer = at;
        }
    }

    /// The peers whose timer entries are known by `key` ([`peer_key`]), in id order: one,
    /// unless two ids share their first 32 bits.
    pub(super) fn peers_keyed(&self, key: u32) -> impl Iterator<Item = (NodeId, &Peer)> + '_ {
        let start = self.peers.find_index(&NodeId::from_u128(u128::from(key) << 96)).unwrap_or_else(|i| i);
        (start..self.peers.len())
            .map_while(move |i| self.peers.get_indexed(i).filter(|(id, _)| peer_key(**id) == key))
            .map(|(id, p)| (*id, &**p))
    }

    /// The deadline `id` records, as its own to remove from the timer table: none if another
    /// peer of its key records the same one, whose entry it then is too. `None` if `id` is
    /// not known.
    fn own_timer(&self, id: NodeId) -> Option<Option<Instant>> {
        let i = self.peers.find_index(&id).ok()?;
        let old = self.peers.get_indexed(i)?.1.timer;
        // Peers of one key sit next to each other in the map: look only at the neighbours
        // that share it (almost always none), not at the map again.
        let key = peer_key(id);
        let shares = |j: usize| self.peers.get_indexed(j).filter(|(q, _)| peer_key(**q) == key).map(|(_, p)| p.timer);
        let before = (0..i).rev().map_while(shares);
        let after = (i + 1..self.peers.len()).map_while(shares);
        Some(old.filter(|&t| !before.chain(after).any(|other| other == Some(t))))
    }

    /// A peer's timer entry fired at `at`: the liveness deadline of every peer of its key that
    /// records `at` (in id order; almost always one).
    pub(super) fn peer_timers(&mut self, now: Instant, key: u32, at: Instant) {
        let mut last: Option<NodeId> = None;
        loop {
            let (next, more) = {
                let mut due =
                    self.peers_keyed(key).filter(|(id, p)| p.timer == Some(at) && last.is_none_or(|l| *id > l));
                (due.next().map(|(id, _)| id), due.next().is_some())
            };
            let Some(id) = next else { break };
            last = Some(id);
            self.peer_timer(now, id);
            if !more {
                break;
            }
        }
    }

    /// Removes a peer's liveness deadline.
    pub(super) fn disarm_peer(&mut self, id: NodeId) {
        let Some(old) = self.own_timer(id) else { return };
        self.timers.disarm(TimerKey::Peer(peer_key(id)), old);
        if let Some(p) = self.peers.get_mut(&id) {
            p.timer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing_table::UNKNOWN_PROXIMITY;

    #[test]
    fn a_peer_record_is_64_bytes_and_keeps_the_info_whole() {
        // An allocator's 64-byte class: the id is the map's key, two IPv4 addresses without a
        // region inline (anything else boxed), "heard" a flag beside the time it was heard, the
        // probe state boxed while it stands.
        assert_eq!(std::mem::size_of::<NodeInfo>(), 104);
        assert_eq!(std::mem::size_of::<Addrs>(), 16);
        assert_eq!(std::mem::size_of::<Option<NonZeroU64>>(), 8);
        assert_eq!(std::mem::size_of::<Peer>(), 64);
        let v6 = NodeInfo {
            id: NodeId::from_u128(9),
            local: "[::1]:7".parse().unwrap(),
            global: "10.0.0.1:8".parse().unwrap(),
            region: "eu".into(),
        };
        let mut p = Peer::new(v6.clone(), Instant::ZERO);
        assert_eq!(p.info(v6.id), v6);
        assert_eq!((p.addr_from("eu"), p.addr_from("us")), (v6.local, v6.global));
        assert_eq!(p.region(), "eu");
        assert_eq!(p.heap_bytes(), std::mem::size_of::<Rare>() + 2);
        // IPv4 addresses with a region are kept whole too.
        let eu4 = NodeInfo { local: "10.0.0.3:1".parse().unwrap(), ..v6.clone() };
        p.set_info(eu4.clone());
        assert_eq!((p.info(v6.id), p.region()), (eu4, "eu"));
        let v4 = NodeInfo::new(NodeId::from_u128(9), "10.0.0.2:9".parse().unwrap());
        p.set_info(v4.clone());
        assert_eq!(p.info(v4.id), v4);
        assert_eq!((p.addr_from(""), p.region(), p.heap_bytes()), (v4.local, "", 0));
        // Silence counts from the record's making until it is heard from.
        let mut q = Peer::new(v4.clone(), Instant::from_secs(3));
        assert_eq!((q.last_heard(), q.silent_since()), (None, Instant::from_secs(3)));
        q.set_reported(true);
        q.set_heard(Instant::from_secs(5));
        assert_eq!(
            (q.last_heard(), q.silent_since(), q.reported()),
            (Some(Instant::from_secs(5)), Instant::from_secs(5), true)
        );
        q.set_reported(false);
        assert!(!q.reported() && q.last_heard().is_some());
        assert_eq!(p.conn(), None);
        p.set_conn(Some(ConnId(1)));
        assert_eq!(p.conn(), Some(ConnId(1)));
        p.set_conn(Some(ConnId(u64::MAX)));
        assert_eq!(p.conn(), Some(ConnId(u64::MAX)));
        p.set_conn(None);
        assert_eq!(p.conn(), None);
        let mut p = Peer::new(NodeInfo::new(NodeId::from_u128(1), "127.0.0.1:1".parse().unwrap()), Instant::ZERO);
        assert_eq!(p.ping(), None);
        p.set_ping(Some((7, Instant::from_secs(2))));
        assert_eq!(p.ping(), Some((7, Instant::from_secs(2))));
        p.set_ping(None);
        assert_eq!(p.ping(), None);
    }

    #[test]
    fn a_peer_holds_its_probe_state_only_while_it_stands() {
        let mut p = Peer::new(NodeInfo::new(NodeId::from_u128(1), "127.0.0.1:1".parse().unwrap()), Instant::ZERO);
        assert_eq!((p.ping(), p.suspected(), p.probes(), p.heap_bytes()), (None, None, 0, 0));
        let (t1, t2) = (Instant::from_secs(1), Instant::from_secs(2));
        p.suspect(t1);
        p.add_probe();
        p.set_ping(Some((3, t2)));
        assert_eq!((p.ping(), p.suspected(), p.probes()), (Some((3, t2)), Some(t1), 2));
        assert_eq!(p.heap_bytes(), std::mem::size_of::<Probe>());
        // The answer ends the probe; the suspicion stands until the peer is heard from.
        p.set_ping(None);
        assert_eq!((p.ping(), p.suspected(), p.probes()), (None, Some(t1), 2));
        p.heard_directly(t2);
        assert_eq!((p.ping(), p.suspected(), p.probes(), p.heap_bytes()), (None, None, 0, 0));
        // A probe alone boxes the state too, and its answer gives the box back.
        p.set_ping(Some((4, t2)));
        assert_eq!(p.heap_bytes(), std::mem::size_of::<Probe>());
        p.clear_suspicion();
        assert_eq!(p.ping(), Some((4, t2)));
        p.set_ping(None);
        assert_eq!(p.heap_bytes(), 0);
    }

    #[test]
    fn a_peer_proximity_is_held_in_32_bits_and_saturates() {
        let mut p = Peer::new(NodeInfo::new(NodeId::from_u128(1), "127.0.0.1:1".parse().unwrap()), Instant::ZERO);
        assert_eq!(p.proximity(), UNKNOWN_PROXIMITY);
        p.set_proximity(1_500);
        assert_eq!(p.proximity(), 1_500);
        p.set_proximity(u64::from(u32::MAX) + 7);
        assert_eq!(p.proximity(), u64::from(u32::MAX - 1), "a measured one stays measured");
        p.set_proximity(UNKNOWN_PROXIMITY);
        assert_eq!(p.proximity(), UNKNOWN_PROXIMITY);
    }

    #[test]
    fn peers_whose_ids_share_32_bits_share_one_timer_entry_and_each_fires() {
        let addr = |i: u8| SocketAddr::from(([127, 0, 0, i], 1));
        let cfg = crate::Config::with_trusted_id(NodeId::from_u128(1), addr(1)).insecure_plaintext();
        let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
        // a and b differ past their first 32 bits only (and in the 64 bits after those).
        let (a, b) = (NodeId::from_u128(7 << 96 | 1 << 64 | 5), NodeId::from_u128(7 << 96 | 2 << 64 | 5));
        let c = NodeId::from_u128(8 << 96);
        for (i, id) in [a, b, c].into_iter().enumerate() {
            node.peers.insert(id, Box::new(Peer::new(NodeInfo::new(id, addr(2 + i as u8)), Instant::ZERO)));
        }
        let (t1, t2) = (Instant::from_secs(5), Instant::from_secs(6));
        // The node's own timers (its heartbeat) are not counted below.
        let base = node.timers.len();
        node.arm_peer(a, t1);
        node.arm_peer(b, t1);
        node.arm_peer(c, t1);
        assert_eq!(node.timers.len() - base, 2, "a and b share (t1, 7)");
        // Moving a's deadline leaves b's entry in place.
        node.arm_peer(a, t2);
        assert_eq!(node.timers.len() - base, 3);
        assert_eq!((node.peers[&a].timer, node.peers[&b].timer), (Some(t2), Some(t1)));
        // b's own entry goes with it.
        node.disarm_peer(b);
        assert_eq!(node.timers.len() - base, 2);
        node.arm_peer(b, t2);
        assert_eq!(node.timers.len() - base, 2, "b joins a's entry at t2");
        node.disarm_peer(a);
        assert_eq!(node.timers.len() - base, 2, "still b's");
        node.arm_peer(a, t2);
        // Firing: c's entry at t1, then one entry at t2 that is both a's and b's deadline.
        assert_eq!(node.timers.pop_due(t1), Some((t1, TimerKey::Peer(8))));
        assert_eq!(node.timers.pop_due(t2), Some((t2, TimerKey::Peer(7))));
        assert_eq!(node.timers.pop_due(t2), None);
        node.peer_timers(t2, 7, t2);
        // Neither is a table member of this lone node: each fired and was let go.
        assert_eq!((node.peers[&a].timer, node.peers[&b].timer), (None, None));
        assert_eq!(node.peers_keyed(7).count(), 2);
        assert_eq!(node.peers_keyed(9).count(), 0);
    }
}
