//! The neighbourhood set: the nodes nearest to us by proximity.

use crate::id::NodeId;

/// Up to `capacity` nodes with the lowest proximity, sorted nearest first, each once.
#[derive(Clone, Debug)]
pub struct Neighbourhood {
    capacity: usize,
    entries: Vec<(u64, NodeId)>,
}

impl Neighbourhood {
    /// An empty set holding at most `capacity` nodes.
    pub fn new(capacity: usize) -> Self {
        Neighbourhood { capacity, entries: Vec::with_capacity(capacity) }
    }

    /// Offers `id` at `proximity` (re-positioning it if present); true if the membership changed.
    pub fn insert(&mut self, id: NodeId, proximity: u64) -> bool {
        let was = self.entries.iter().position(|&(_, x)| x == id);
        if let Some(i) = was {
            self.entries.remove(i);
        }
        let pos = self.entries.partition_point(|&e| e < (proximity, id));
        if pos >= self.capacity {
            return was.is_some();
        }
        // The farthest goes first when the set is full, so that the vector never holds more
        // than `capacity` (inserting first grew its room to twice the capacity).
        let dropped = self.entries.len() >= self.capacity;
        if dropped {
            self.entries.pop();
        }
        self.entries.insert(pos, (proximity, id));
        was.is_none() || dropped
    }

    /// Removes `id`; true if it was present.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, x)| x != id);
        before != self.entries.len()
    }

    /// True if `id` is present.
    pub fn contains(&self, id: NodeId) -> bool {
        self.entries.iter().any(|&(_, x)| x == id)
    }

    /// The members, nearest first, with their proximity.
    pub fn iter(&self) -> impl Iterator<Item = (u64, NodeId)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes allocated for the entries.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<(u64, NodeId)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn keeps_the_nearest_sorted_without_duplicates(ops in proptest::collection::vec((any::<bool>(), 0u128..40, 0u64..1000), 0..300)) {
            let mut n = Neighbourhood::new(8);
            let mut model: BTreeMap<NodeId, u64> = BTreeMap::new();
            // Only while every operation inserted a new id is "the nearest 8" exact: a removal
            // or an update can leave a gap that earlier evictions are not remembered to fill.
            let mut fresh_only = true;
            for (ins, v, p) in ops {
                let id = NodeId::from_u128(v);
                fresh_only &= ins && !model.contains_key(&id);
                if ins { n.insert(id, p); model.insert(id, p); } else { n.remove(id); model.remove(&id); }
                let got: Vec<_> = n.iter().collect();
                prop_assert!(got.len() <= 8);
                prop_assert_eq!(n.heap_bytes(), 8 * core::mem::size_of::<(u64, NodeId)>(), "room for 8, never more");
                prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
                for &(p, id) in &got { prop_assert_eq!(model.get(&id), Some(&p)); }
                if fresh_only {
                    let mut all: Vec<(u64, NodeId)> = model.iter().map(|(&id, &p)| (p, id)).collect();
                    all.sort();
                    all.truncate(8);
                    prop_assert_eq!(&got, &all);
                }
            }
        }
    }
}
