//! What a node's memory holds, by structure: estimated from element sizes, lengths and
//! allocated capacities ([`Node::memory_footprint`]). A counting allocator would measure
//! exactly but needs `unsafe` code, which the crate forbids; the estimate is what a simulator
//! of many nodes needs to see where its memory goes. And [`Node::prefetch`], which has that
//! memory start coming into the cache before an input reads it.

use std::mem::size_of;

use litemap::LiteMap;
use thin_vec::ThinVec;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{ConnId, Output};
use crate::time::Instant;
use crate::wire::Message;

use super::connections::{Conn, ConnIo, Phase};
use super::join::Held;
use super::peer::Peer;
use super::timers::trimmed;
use super::Node;

/// Estimated heap bytes of a `BTreeMap` of `len` entries of `(K, V)`: std's B-tree nodes hold
/// up to 11 entries and are on average about two-thirds full; each internal node adds 12 edges.
/// (The node's maps are sorted vectors now; this is what they are compared with.)
#[cfg(test)]
fn btree_bytes<K, V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let leaf = 11 * (size_of::<K>() + size_of::<V>()) + 16;
    let leaves = len.div_ceil(7);
    let internal = if leaves > 1 { leaves.div_ceil(7) } else { 0 };
    leaves * leaf + internal * (leaf + 12 * size_of::<usize>())
}

/// Estimated heap bytes of a sorted-vector map ([`litemap::LiteMap`]) of `len` entries of
/// `(K, V)`: a vector grown one entry at a time holds a power of two of them, at least 4. It
/// does not shrink when entries go, so after a peak this counts less than it holds.
pub(super) fn vec_map_bytes<K, V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    len.next_power_of_two().max(4) * size_of::<(K, V)>()
}

/// Heap bytes of a region name (empty names do not allocate).
fn info_heap(info: &NodeInfo) -> usize {
    info.region.capacity()
}

/// Gives back an empty thin vector's room: 8 bytes and no allocation until its next burst.
pub(super) fn free_if_empty<T>(v: &mut ThinVec<T>) {
    if v.is_empty() {
        *v = ThinVec::new();
    }
}

/// Gives back the room a burst left in a map ([`trimmed`]).
fn trim_map<K, V>(m: &mut LiteMap<K, V>) {
    let mut v = core::mem::take(m).into_tuple_vec();
    if let Some(keep) = trimmed(v.len(), v.capacity()) {
        v.shrink_to(keep);
    }
    *m = LiteMap::from_sorted_store_unchecked(v);
}

/// Starts loading the cache line of each place (a hint, [`crate::hint`]).
macro_rules! warm {
    ($($place:expr),* $(,)?) => {
        $(crate::hint::warm(&$place);)*
    };
}

impl Node {
    /// Asks the processor to start loading what almost every input reads: the node's own
    /// struct (1.75 KB, 28 cache lines), the sorted indexes of its peers and
    /// connections (of an index over 2 KB, the lines a binary search reads first), and its
    /// leaf set. (Not the peer and connection records themselves, nor the routing table and
    /// the deadlines: loading those for every input cost more than it saved in the
    /// simulator.) Nothing is read or changed, so it cannot affect behaviour; a caller that
    /// runs many nodes and knows which one runs next (the simulator, a few events ahead) has
    /// the loads overlap its current work instead of waiting on each miss in turn. Where the
    /// target has no prefetch instruction this does nothing.
    ///
    /// The same as [`Node::prefetch_struct`] then [`Node::prefetch_contents`]. The second
    /// reads the struct (where its vectors are), so it waits for the struct's lines if they
    /// are not in the cache yet: a caller that knows the next nodes two inputs ahead does
    /// better calling the first for the later node and the second for the nearer one.
    pub fn prefetch(&self) {
        self.prefetch_struct();
        self.prefetch_contents();
    }

    /// Starts loading the node's own struct, every line of it, without reading any of it
    /// (the addresses are the struct's own): a hint, as [`Node::prefetch`].
    pub fn prefetch_struct(&self) {
        // Every field of the struct in its order (`repr(C)`), the counters and the
        // configuration last, by a few of their own fields: a field added to `Node` belongs
        // here too.
        warm!(
            self.last_now,
            self.stall_limit,
            self.state,
            self.peers,
            self.conns,
            self.out,
            self.pending_total,
            self.ack_due,
            self.learned,
            self.parked,
            self.leaves_before,
            self.seq,
            self.layers,
            self.drained,
            self.push_leaves,
            self.timers,
            self.leaf,
            self.hood,
            self.table,
            self.tx,
            self.held,
            self.custody,
            self.recent,
            self.rng,
            self.next_conn,
            self.route_seq,
            self.identity,
            self.crypto_draws,
            self.candidates,
            self.failed,
            self.lost_leaves,
            self.former_leaves,
            self.measured,
            self.rows,
            self.churn,
            self.table_probe,
            self.armed_probe,
            self.exchange_gap,
            self.unwelcomed,
            self.gave_up_join,
            self.hook,
        );
        self.stats.prefetch();
        let cfg = &self.cfg;
        warm!(
            cfg.info,
            cfg.seed,
            cfg.leaf_set_size,
            cfg.neighbourhood_size,
            cfg.region_factor,
            cfg.heartbeat_interval,
            cfg.suspect_timeout,
            cfg.probe_timeout,
            cfg.table_probe_interval,
            cfg.connect_timeout,
            cfg.idle_timeout,
            cfg.member_connections,
            cfg.leaf_exchange_interval,
            cfg.max_frame_size,
            cfg.max_pending_per_peer,
            cfg.max_connections,
            cfg.ack_timeout_min,
            cfg.ack_timeout_max,
            cfg.credentials,
            cfg.identity,
            cfg.insecure_plaintext,
        );
    }

    /// Starts loading what the struct points to and almost every input reads: the sorted
    /// indexes of the node's peers and connections and its leaf set (a hint, as
    /// [`Node::prefetch`]). It reads the struct's vector headers to find them.
    pub fn prefetch_contents(&self) {
        crate::hint::warm_index(self.peers.as_slice());
        crate::hint::warm_index(self.conns.as_slice());
        self.leaf.prefetch();
    }

    /// Gives back the room a burst left in the node's largest containers: a join or a repair
    /// learns of and connects to many more nodes than the node keeps, and a vector keeps its
    /// peak capacity otherwise. Called every tick, after the housekeeping.
    pub(super) fn trim(&mut self) {
        self.timers.trim();
        self.peers.trim();
        self.conns.trim();
        trim_map(&mut self.failed);
        trim_map(&mut self.lost_leaves);
        trim_map(&mut self.former_leaves);
        trim_map(&mut self.measured);
        trim_map(&mut self.candidates);
        // Queues a burst filled and left empty hold nothing between bursts.
        self.custody.trim();
        self.recent.trim(self.last_now);
        free_if_empty(&mut self.rows.asked);
        free_if_empty(&mut self.ack_due);
        free_if_empty(&mut self.held);
    }

    /// Estimated bytes this node holds, by structure: `(name, bytes)` in a fixed order, the
    /// node's own struct (`node`) included. The estimate counts element sizes times lengths or
    /// allocated capacities, and sorted-vector maps (whose capacity cannot be read) at the
    /// power of two their growth gives them: after the tick has trimmed a map to an eighth
    /// more than it holds, that counts more than the map's room (up to its entries' size
    /// again). So it is close to, but not exactly, what the allocator handed out (its own
    /// slack is not counted).
    pub fn memory_footprint(&self) -> Vec<(&'static str, usize)> {
        let peers = vec_map_bytes::<NodeId, Box<Peer>>(self.peers.len())
            + self.peers.values().map(|p| size_of::<Peer>() + p.heap_bytes()).sum::<usize>();
        let mut conns = vec_map_bytes::<ConnId, Box<Conn>>(self.conns.len());
        let mut conn_queues = 0;
        let mut acks = 0;
        for c in self.conns.values() {
            conns += size_of::<Conn>() + c.addr_heap_bytes();
            conns += match &c.phase {
                Phase::AwaitAuth(w) => size_of::<super::connections::AwaitAuth>() + info_heap(&w.info),
                Phase::AwaitReply(_) | Phase::AwaitFinish(_) => size_of::<crate::secure::Handshake>(),
                _ => 0,
            };
            conns += c.channel.as_ref().map_or(0, |_| size_of::<crate::secure::Channel>());
            if let Some(io) = &c.io {
                conns += size_of::<ConnIo>();
                conn_queues += io.pending.capacity() * size_of::<Message>() + io.tx.capacity() + io.rx.capacity();
            }
            acks += c.flight.as_ref().map_or(0, |f| f.heap_bytes());
        }
        let timers = self.timers.heap_bytes();
        let tables = self.table.heap_bytes() + self.leaf.heap_bytes() + self.hood.heap_bytes() + self.rows.heap_bytes();
        let failed = vec_map_bytes::<NodeId, Instant>(self.failed.len())
            + vec_map_bytes::<NodeId, (NodeInfo, Instant)>(self.lost_leaves.len())
            + vec_map_bytes::<NodeId, Instant>(self.former_leaves.len())
            + vec_map_bytes::<u64, Instant>(self.measured.len())
            + self.lost_leaves.values().map(|(i, _)| info_heap(i)).sum::<usize>();
        let queues = self.out.capacity() * size_of::<Output>()
            + self.held.capacity() * size_of::<Held>()
            + self.ack_due.capacity() * size_of::<ConnId>()
            + self.leaves_before.as_ref().map_or(0, |v| v.capacity() * size_of::<NodeId>())
            + self.tx.heap_bytes()
            + self.parked.heap_bytes()
            + self.recent.heap_bytes()
            + self.custody.heap_bytes()
            + self.stats.heap_bytes()
            + self.identity.as_ref().map_or(0, |_| size_of::<crate::identity::Identity>())
            + vec_map_bytes::<NodeId, Instant>(self.candidates.len());
        vec![
            ("node", size_of::<Node>()),
            ("peers", peers),
            ("conns", conns),
            ("conn_queues", conn_queues),
            ("acks", acks),
            ("timers", timers),
            ("tables", tables),
            ("failed", failed),
            ("queues", queues),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::timers::TRIM_MIN;

    #[test]
    fn btree_estimate_grows_with_entries() {
        assert_eq!(btree_bytes::<u64, u64>(0), 0);
        let one = btree_bytes::<u64, u64>(1);
        assert!(one >= 11 * 16);
        assert!(btree_bytes::<u64, u64>(1000) > 1000 * 16, "at least the entries themselves");
        assert!(btree_bytes::<u64, u64>(1000) < 1000 * 16 * 3, "and not wildly more");
    }

    #[test]
    fn vec_map_estimate_is_a_grown_vectors_capacity() {
        assert_eq!(vec_map_bytes::<u64, u64>(0), 0);
        assert_eq!(vec_map_bytes::<u64, u64>(1), 4 * 16);
        assert_eq!(vec_map_bytes::<u64, u64>(5), 8 * 16);
        let mut v: Vec<(u64, u64)> = Vec::new();
        for i in 0..1000 {
            v.push((i, i));
            assert!(v.capacity() * 16 >= vec_map_bytes::<u64, u64>(v.len()), "never more than a grown vector holds");
        }
    }

    #[test]
    fn peers_and_connections_cost_a_sorted_vector_entry_not_a_tree_nodes_share() {
        // `Node::peers` and `Node::conns`: 24 and 16 bytes an entry, where a B-tree's nodes cost
        // about twice that.
        assert_eq!(size_of::<(NodeId, Box<Peer>)>(), 24);
        assert_eq!(size_of::<(ConnId, Box<Conn>)>(), 16);
        for n in [100, 222, 1000] {
            assert!(btree_bytes::<NodeId, Box<Peer>>(n) * 10 > vec_map_bytes::<NodeId, Box<Peer>>(n) * 15);
            assert!(btree_bytes::<NodeId, Box<Peer>>(n) > 2 * n * 24 * 9 / 10);
        }
    }

    #[test]
    fn a_map_gives_back_the_room_a_burst_left() {
        let mut m: LiteMap<u32, u64> = LiteMap::new();
        for i in 0..1000 {
            m.insert(i, u64::from(i));
        }
        for i in 0..990 {
            m.remove(&(i * 7 % 1000));
        }
        let kept: Vec<(u32, u64)> = m.iter().map(|(&k, &v)| (k, v)).collect();
        trim_map(&mut m);
        let v = m.into_tuple_vec();
        assert_eq!(v, kept, "the same entries, in order");
        assert!(v.capacity() <= 2 * TRIM_MIN, "room for {} entries kept for {}", v.capacity(), v.len());
        // A map holding about what it has room for is left alone.
        let mut v: Vec<(u32, u64)> = Vec::with_capacity(120);
        v.extend((0..100).map(|i| (i, 0)));
        let mut m = LiteMap::from_sorted_store_unchecked(v);
        trim_map(&mut m);
        assert!(m.into_tuple_vec().capacity() >= 120);
        // One that doubled for its last entries keeps an eighth again.
        let mut m: LiteMap<u32, u64> = (0..80).map(|i| (i, 0)).collect();
        m.insert(80, 0);
        trim_map(&mut m);
        let v = m.into_tuple_vec();
        assert!((81..=91).contains(&v.capacity()), "room for {} entries kept for 81", v.capacity());
    }

    #[test]
    fn trimming_keeps_an_eighth_again_once_a_quarter_again_is_spare() {
        assert_eq!(trimmed(80, 100), None);
        assert_eq!(trimmed(80, 101), Some(90));
        assert_eq!(trimmed(80, 160), Some(90));
        assert_eq!(trimmed(0, TRIM_MIN), None, "a few entries' room is always kept");
        assert_eq!(trimmed(0, TRIM_MIN + 1), Some(TRIM_MIN));
        assert_eq!(trimmed(4, 16), Some(TRIM_MIN));
    }

    #[test]
    fn a_fresh_node_reports_every_structure() {
        let cfg = crate::Config::with_trusted_id(NodeId::from_u128(7), "127.0.0.1:1".parse().unwrap());
        let node = Node::new(cfg, Instant::ZERO).unwrap();
        let f = node.memory_footprint();
        let names: Vec<&str> = f.iter().map(|e| e.0).collect();
        assert_eq!(names, ["node", "peers", "conns", "conn_queues", "acks", "timers", "tables", "failed", "queues"]);
        assert_eq!(f[0].1, size_of::<Node>());
        assert_eq!(f[1].1, 0, "no peers yet");
    }

    #[test]
    fn a_drained_output_queue_gives_its_room_back_at_most_every_100_ms() {
        let cfg = crate::Config::with_trusted_id(NodeId::from_u128(7), "127.0.0.1:1".parse().unwrap());
        let mut node = Node::new(cfg, Instant::ZERO).unwrap();
        let bootstraps: Vec<std::net::SocketAddr> = (2..6).map(|i| ([127, 0, 0, i], 1).into()).collect();
        let drain = |node: &mut Node| {
            let mut n = 0;
            while node.poll_output().is_some() {
                n += 1;
            }
            n
        };
        // Joining dials the bootstraps: outputs, then a drained queue that holds no room.
        node.join(Instant::from_secs(1), &bootstraps).unwrap();
        assert!(node.out.capacity() > 0);
        assert!(drain(&mut node) > 0);
        assert_eq!(node.out.capacity(), 0);
        // Outputs again within 100 ms: the room is kept for the next burst.
        let later = Instant::from_secs(1) + core::time::Duration::from_millis(50);
        node.handle_timeout(later);
        node.out.push_back(Output::Event(crate::output::Event::Joined));
        drain(&mut node);
        assert!(node.out.capacity() > 0, "kept between inputs 50 ms apart");
        // And given back at the first drain 100 ms after the last time.
        node.out.push_back(Output::Event(crate::output::Event::Joined));
        node.last_now = Instant::from_secs(1) + core::time::Duration::from_millis(100);
        drain(&mut node);
        assert_eq!(node.out.capacity(), 0);
    }

    /// A simulator or a host of many nodes allocates each node's struct by itself: at 1,792
    /// bytes or less it takes jemalloc's 1,792-byte size class (the simulator's allocator), a
    /// few bytes more the next one up, 2 KiB. Rarely used queues are thin vectors (8 bytes
    /// while empty), intervals 8-byte spans, counters 32-bit words ([`super::counters`]) and
    /// the derived key pair boxed for that reason.
    #[test]
    fn a_node_struct_fits_in_1792_bytes() {
        assert!(size_of::<Node>() <= 1792, "Node is {} bytes", size_of::<Node>());
    }

    #[test]
    fn empty_queues_give_their_room_back_at_the_tick() {
        let cfg = crate::Config::with_trusted_id(NodeId::from_u128(7), "127.0.0.1:1".parse().unwrap());
        let mut node = Node::new(cfg, Instant::ZERO).unwrap();
        node.rows.asked.push((NodeId::from_u128(9), 1));
        node.ack_due.push(ConnId(3));
        node.custody.buf.push((ConnId(3), 1));
        node.rows.asked.clear();
        node.ack_due.clear();
        node.custody.buf.clear();
        let held = node.memory_footprint()[8].1;
        node.trim();
        let (asked, due, buf) = (node.rows.asked.capacity(), node.ack_due.capacity(), node.custody.buf.capacity());
        assert_eq!((asked, due, buf), (0, 0, 0));
        assert!(node.memory_footprint()[8].1 < held, "the queues' bytes fell");
        // One that holds something keeps it.
        node.ack_due.push(ConnId(4));
        node.trim();
        assert_eq!(node.ack_due, [ConnId(4)]);
    }
}
