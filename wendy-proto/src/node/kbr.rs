//! The key-based routing getters of Pastry's common API (Dabek et al., "Towards a common API
//! for structured peer-to-peer overlays", IPTPS 2003): `local_lookup`, `neighbor_set`,
//! `replica_set` and `range`. `route`, `deliver`, `forward` and `update` are
//! [`Node::send`], [`Output::Deliver`](crate::Output::Deliver), the
//! [`ForwardHook`](crate::ForwardHook) and [`Event::LeafSetChanged`](crate::Event::LeafSetChanged).

use crate::id::{KeyRange, NodeId};
use crate::info::NodeInfo;

use super::Node;

impl Node {
    /// Up to `num` nodes that can be the next hop of a message towards `key`, best first:
    /// the first is the one [`Node::next_hop`] picks. Every node listed makes progress: it
    /// shares a longer prefix with the key than we do, or it is numerically closer to it. With `safe`, only nodes that have answered us themselves are
    /// listed, not nodes we have only heard of from others. Empty when this node is the
    /// key's root (or knows nobody better).
    pub fn local_lookup(&self, key: NodeId, num: usize, safe: bool) -> Vec<NodeInfo> {
        let me = self.id();
        let mine = me.common_prefix_len(key);
        let covered = self.is_ready() && self.leaf.covers(key);
        let mut cands: Vec<NodeId> = self
            .table_members()
            .into_iter()
            .filter(|&x| {
                let p = x.common_prefix_len(key);
                p > mine || key.is_closer(x, me)
            })
            .filter(|x| !safe || self.peers.get(x).is_some_and(|p| p.last_heard().is_some()))
            .collect();
        if covered {
            cands.sort_by(|&a, &b| key.cmp_closeness(a, b));
        } else {
            cands.sort_by(|&a, &b| {
                b.common_prefix_len(key).cmp(&a.common_prefix_len(key)).then(key.cmp_closeness(a, b))
            });
        }
        if let Some(first) = self.next_hop(key).filter(|n| cands.contains(n)) {
            cands.retain(|&x| x != first);
            cands.insert(0, first);
        }
        cands.truncate(num);
        self.infos(cands)
    }

    /// Up to `num` members of the leaf set, nearest to us (numerically) first.
    pub fn neighbor_set(&self, num: usize) -> Vec<NodeInfo> {
        let me = self.id();
        let mut ids = self.leaf.members();
        ids.sort_by(|&a, &b| me.cmp_closeness(a, b));
        ids.truncate(num);
        self.infos(ids)
    }

    /// The nodes that should hold replicas of `key`, closest first: up to `max_rank` of this
    /// node and its leaf set, numerically closest to the key (at most L/2 + 1 of them, which
    /// the leaf set always holds around its own node). Exact, that is the `max_rank` live
    /// nodes closest to the key, when this node is among them and its leaf set is correct.
    pub fn replica_set(&self, key: NodeId, max_rank: usize) -> Vec<NodeInfo> {
        let mut ids = self.leaf.members();
        ids.push(self.id());
        ids.sort_by(|&a, &b| key.cmp_closeness(a, b));
        ids.truncate(max_rank.min(self.leaf.half() + 1));
        ids.into_iter()
            .filter_map(|id| if id == self.id() { Some(self.cfg.info.clone()) } else { self.peer(id) })
            .collect()
    }

    /// The keys for which `node` (this node or a leaf-set member) is among the `rank + 1`
    /// numerically closest nodes: rank 0 is the keys `node` is root for, rank 1 adds those for
    /// which it is second closest, and so on. `None` when this node cannot tell: `node` is
    /// not in its leaf set, or the leaf set does not reach `rank + 1` nodes past `node` on
    /// each side.
    pub fn range(&self, node: NodeId, rank: usize) -> Option<KeyRange> {
        let me = self.id();
        // The ring as we know it, in clockwise order starting with us.
        let mut ring = self.leaf.members();
        ring.push(me);
        ring.sort_by_key(|&x| me.cw_distance(x));
        let n = ring.len();
        let i = ring.iter().position(|&x| x == node)?;
        let step = rank.checked_add(1)?;
        let (pred, succ) = if self.leaf.is_whole_ring() {
            if step >= n {
                return Some(KeyRange { start: node, end: node });
            }
            (ring[(i + n - step % n) % n], ring[(i + step) % n])
        } else {
            // Not the whole ring: the ordered list runs from our farthest member below to our
            // farthest member above; rotate so that it does.
            let below = self.leaf.ccw().len();
            let line: Vec<NodeId> = ring[n - below..].iter().chain(&ring[..n - below]).copied().collect();
            let i = line.iter().position(|&x| x == node)?;
            (*line.get(i.checked_sub(step)?)?, *line.get(i + step)?)
        };
        let half_up = |d: u128| d / 2 + d % 2;
        let start = NodeId::from_u128(pred.as_u128().wrapping_add(half_up(pred.cw_distance(node))));
        let end = NodeId::from_u128(node.as_u128().wrapping_add(half_up(node.cw_distance(succ))));
        Some(KeyRange { start, end })
    }
}
