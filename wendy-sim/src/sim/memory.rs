//! The simulator's memory, by structure, computed from element sizes and allocated capacities
//! (`--memory-report`): the simulator's own structures, and the nodes' by
//! [`Node::memory_footprint`] summed over live nodes (`node.*`). The binary's allocator
//! counts the heap in use exactly ([`crate::SimConfig::heap_in_use`]), which says how much the
//! estimates miss.

use std::collections::BTreeMap;
use std::mem::size_of;

use bytes::Bytes;
use wendy_proto::{Node, NodeId};

use super::hosts::IdMap;
use super::oracle::LookupRec;
use super::Sim;
use crate::report::{rss_bytes, Bucket, MemoryReport};

/// Heap bytes of a hash map of `(K, V)` entries with this capacity (hashbrown's layout: a
/// power of two of buckets at most 7/8 full, one control byte per bucket and a group).
fn map_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets =
        if capacity < 8 { (capacity + 1).next_power_of_two() } else { (capacity * 8 / 7).next_power_of_two() };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

fn id_map_bytes<V>(m: &IdMap<V>) -> usize {
    map_bytes::<NodeId, V>(m.capacity())
}

impl Sim {
    /// Measures the simulator's structures now.
    pub(super) fn memory_report(&self) -> MemoryReport {
        let mut s: BTreeMap<String, u64> = BTreeMap::new();
        let mut put = |name: &str, bytes: usize| {
            s.insert(name.to_string(), bytes as u64);
        };
        let live = self.hosts.iter().filter(|h| h.node.is_some()).count();
        put("hosts", self.hosts.capacity() * size_of::<super::hosts::Host>());
        put("host_conn_maps", self.hosts.iter().map(|h| h.conns.heap_bytes()).sum());
        put("node_structs_shallow", live * size_of::<Node>());
        let mut node_parts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for n in self.hosts.iter().filter_map(|h| h.node.as_deref()) {
            // The struct itself is `node_structs_shallow`.
            for (name, bytes) in n.memory_footprint().into_iter().filter(|e| e.0 != "node") {
                *node_parts.entry(name).or_default() += bytes;
            }
        }
        for (name, bytes) in node_parts {
            put(&format!("node.{name}"), bytes);
        }
        put("ids", id_map_bytes(&self.ids));
        let links = &self.links;
        put("links", links.all.capacity() * size_of::<super::links::Link>() + links.free.capacity() * size_of::<u32>());
        let in_flight: usize = links.segments.iter().flatten().map(Bytes::len).sum();
        put(
            "link_fifos",
            links.segments.capacity() * size_of::<Option<Bytes>>() + links.free_segments.capacity() * size_of::<u32>(),
        );
        put("frames_in_flight", in_flight);
        put("event_queue", self.queue.heap_bytes());
        let o = &self.oracle;
        put("oracle_joined", o.joined.len() * size_of::<(NodeId, u32)>() + o.joined_list.capacity() * size_of::<u32>());
        put(
            "lookups_in_flight",
            o.recs.capacity() * size_of::<LookupRec>()
                + id_map_bytes(&o.by_key)
                + o.late.len() * size_of::<(u64, LookupRec)>(),
        );
        let m = &self.m;
        put(
            "measures",
            m.stretch.capacity() * size_of::<f32>()
                + (m.initial_join_times.capacity() + m.later_join_times.capacity()) * size_of::<u64>()
                + m.outcomes.capacity() * size_of::<(u64, super::Outcome)>()
                + m.buckets.capacity() * size_of::<Bucket>()
                + m.bucket_live.capacity() * size_of::<u128>()
                + m.hops.capacity() * size_of::<u64>(),
        );
        let total: u64 = s.values().sum();
        let rss = rss_bytes();
        MemoryReport {
            at_s: self.now as f64 / 1e6,
            hosts: self.hosts.len() as u64,
            live: live as u64,
            structures: s,
            total_bytes: total,
            rss_bytes: rss,
            rest_per_live_host: rss.saturating_sub(total) / live.max(1) as u64,
            heap_bytes: self.cfg.heap_in_use.map(|f| f()),
        }
    }
}
