//! The leaf set: the numerically closest node ids on each side of our own.

use crate::id::NodeId;

/// The `half` closest ids clockwise (above) and the `half` closest counter-clockwise (below).
///
/// On a ring with fewer than `half` other nodes both sides hold every node, so a node can sit on
/// both sides; [`LeafSet::members`] lists each once. Each side is kept sorted nearest first.
#[derive(Clone, Debug)]
pub struct LeafSet {
    me: NodeId,
    half: usize,
    /// Nearest first by clockwise distance from `me`.
    cw: Vec<NodeId>,
    /// Nearest first by counter-clockwise distance from `me`.
    ccw: Vec<NodeId>,
}

/// Which side of the leaf set an id sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Ids above ours (clockwise).
    Cw,
    /// Ids below ours (counter-clockwise).
    Ccw,
}

impl LeafSet {
    /// Starts loading both sides (a hint, [`crate::Node::prefetch`]).
    pub(crate) fn prefetch(&self) {
        crate::hint::warm_slice(&self.cw);
        crate::hint::warm_slice(&self.ccw);
    }

    /// An empty leaf set of `size` members in all (`size / 2` each side, at least 1).
    pub fn new(me: NodeId, size: usize) -> Self {
        let half = (size / 2).max(1);
        LeafSet { me, half, cw: Vec::with_capacity(half), ccw: Vec::with_capacity(half) }
    }

    /// Considers `id` for membership; true if the leaf set changed.
    pub fn insert(&mut self, id: NodeId) -> bool {
        self.insert_evicting(id).0
    }

    /// Inserts `id` like [`LeafSet::insert`], and also returns the members it pushed out of
    /// the set (the farthest of a full side), at most one per side.
    pub fn insert_evicting(&mut self, id: NodeId) -> (bool, [Option<NodeId>; 2]) {
        if id == self.me {
            return (false, [None, None]);
        }
        let me = self.me;
        let (a, out_a) = insert_side(&mut self.cw, self.half, id, |x| me.cw_distance(x));
        let (b, out_b) = insert_side(&mut self.ccw, self.half, id, |x| x.cw_distance(me));
        let gone = |x: Option<NodeId>| x.filter(|&x| !self.cw.contains(&x) && !self.ccw.contains(&x));
        (a || b, [gone(out_a), gone(out_b)])
    }

    /// True if [`LeafSet::insert_evicting`] would take `id` now (it is not a member, and it
    /// is nearer than a full side's farthest member, or a side has room), without changing
    /// anything.
    pub fn would_take(&self, id: NodeId) -> bool {
        self.would_change(id) && !self.contains(id)
    }

    /// True if [`LeafSet::insert_evicting`] would change a side now: `id` is not on it and is
    /// nearer than its farthest member, or it has room. (In a ring of at most L other nodes a
    /// member of one side may enter the other.) A full side rejects a farther id at once.
    pub(crate) fn would_change(&self, id: NodeId) -> bool {
        let me = self.me;
        let half = self.half;
        let fits = |side: &[NodeId], d: u128, dist: &dyn Fn(NodeId) -> u128| {
            if side.len() >= half && side.last().is_some_and(|&far| d > dist(far)) {
                return false;
            }
            matches!(side.binary_search_by_key(&d, |&x| dist(x)), Err(pos) if pos < half)
        };
        id != me
            && (fits(&self.cw, me.cw_distance(id), &|x| me.cw_distance(x))
                || fits(&self.ccw, id.cw_distance(me), &|x| x.cw_distance(me)))
    }

    /// Removes `id`; returns the sides it was removed from (empty if it was not a member).
    pub fn remove(&mut self, id: NodeId) -> Vec<Side> {
        let mut sides = Vec::new();
        if let Some(i) = self.cw.iter().position(|&x| x == id) {
            self.cw.remove(i);
            sides.push(Side::Cw);
        }
        if let Some(i) = self.ccw.iter().position(|&x| x == id) {
            self.ccw.remove(i);
            sides.push(Side::Ccw);
        }
        sides
    }

    /// True if `id` is a member: a binary search of each side by distance from us (the sides
    /// are kept sorted that way, and distinct ids lie at distinct distances).
    pub fn contains(&self, id: NodeId) -> bool {
        let me = self.me;
        // A side is searched only if the id lies within its farthest member's distance (most
        // ids asked about are not members, and lie beyond both).
        let (cw, ccw) = (me.cw_distance(id), id.cw_distance(me));
        let on_cw = self.cw.last().is_some_and(|&far| cw <= me.cw_distance(far))
            && self.cw.binary_search_by_key(&cw, |&x| me.cw_distance(x)).is_ok();
        on_cw
            || (self.ccw.last().is_some_and(|&far| ccw <= far.cw_distance(me))
                && self.ccw.binary_search_by_key(&ccw, |&x| x.cw_distance(me)).is_ok())
    }

    /// The members clockwise of us, nearest first.
    pub fn cw(&self) -> &[NodeId] {
        &self.cw
    }

    /// The members counter-clockwise of us, nearest first.
    pub fn ccw(&self) -> &[NodeId] {
        &self.ccw
    }

    /// Every member once, in ring order from the farthest below to the farthest above.
    pub fn members(&self) -> Vec<NodeId> {
        let mut v = Vec::with_capacity(self.cw.len() + self.ccw.len());
        v.extend(self.ccw.iter().rev().copied());
        if self.sides_apart() {
            v.extend_from_slice(&self.cw);
        } else {
            for &x in &self.cw {
                if !v.contains(&x) {
                    v.push(x);
                }
            }
        }
        v
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        if self.sides_apart() {
            return self.cw.len() + self.ccw.len();
        }
        self.cw.len() + self.ccw.iter().filter(|x| !self.cw.contains(x)).count()
    }

    /// True if no id is on both sides: the clockwise arc out to the farthest clockwise member
    /// and the counter-clockwise one out to the farthest counter-clockwise member do not meet,
    /// as in any ring of more than a leaf set's nodes. (An id on both sides would be at
    /// clockwise distance `d` and counter-clockwise distance `2^128 - d`, and the arcs' lengths
    /// would add up to `2^128` or more.) Then the sides need no comparison of one with the
    /// other to be listed or counted.
    fn sides_apart(&self) -> bool {
        let (Some(&far_cw), Some(&far_ccw)) = (self.cw.last(), self.ccw.last()) else { return true };
        self.me.cw_distance(far_cw).checked_add(far_ccw.cw_distance(self.me)).is_some()
    }

    /// True if there are no members.
    pub fn is_empty(&self) -> bool {
        self.cw.is_empty() && self.ccw.is_empty()
    }

    /// Members per side.
    pub fn half(&self) -> usize {
        self.half
    }

    /// Bytes allocated for the two sides.
    pub fn heap_bytes(&self) -> usize {
        (self.cw.capacity() + self.ccw.capacity()) * core::mem::size_of::<NodeId>()
    }

    /// True if the leaf set spans the whole ring: a side is not full (so it holds every node
    /// known), or the two sides meet (a ring of at most L other nodes, seen from both sides).
    pub fn is_whole_ring(&self) -> bool {
        if self.cw.len() < self.half || self.ccw.len() < self.half {
            return true;
        }
        // The sides meet when the clockwise arc to the farthest member above and the
        // counter-clockwise arc to the farthest member below add up to the whole ring.
        match (self.cw.last(), self.ccw.last()) {
            (Some(&hi), Some(&lo)) => self.me.cw_distance(hi).checked_add(lo.cw_distance(self.me)).is_none(),
            _ => true,
        }
    }

    /// True if `key` lies within the range the leaf set spans (from its farthest member below to
    /// its farthest member above), so the node closest to it is a member or ourselves.
    pub fn covers(&self, key: NodeId) -> bool {
        if self.is_whole_ring() {
            return true;
        }
        let lo = self.ccw.last().copied().unwrap_or(self.me);
        let hi = self.cw.last().copied().unwrap_or(self.me);
        lo.cw_distance(key) <= lo.cw_distance(hi)
    }

    /// The member or ourselves closest to `key`.
    ///
    /// The closest node is the key's nearest neighbour on one side or the other in ring
    /// order, so two binary searches (one per side, each sorted by distance from us) find it.
    pub fn closest(&self, key: NodeId) -> NodeId {
        let me = self.me;
        let d = me.cw_distance(key);
        let i = self.cw.partition_point(|&x| me.cw_distance(x) <= d);
        let e = key.cw_distance(me);
        let j = self.ccw.partition_point(|&x| x.cw_distance(me) <= e);
        let around = [
            i.checked_sub(1).map(|k| self.cw[k]),
            self.cw.get(i).copied(),
            j.checked_sub(1).map(|k| self.ccw[k]),
            self.ccw.get(j).copied(),
        ];
        around.into_iter().flatten().fold(me, |best, x| if key.is_closer(x, best) { x } else { best })
    }

    /// The member or ourselves closest to `key`, never `exclude`.
    pub fn closest_excluding(&self, key: NodeId, exclude: NodeId) -> NodeId {
        let best = self.closest(key);
        if best != exclude {
            return best;
        }
        self.cw.iter().chain(self.ccw.iter()).copied().filter(|&x| x != exclude).fold(self.me, |best, x| {
            if key.is_closer(x, best) {
                x
            } else {
                best
            }
        })
    }

    /// The side `id` would fall on if it were a member: the nearer way round.
    pub fn side_of(&self, id: NodeId) -> Side {
        if self.me.cw_distance(id) <= id.cw_distance(self.me) {
            Side::Cw
        } else {
            Side::Ccw
        }
    }
}

/// Inserts `id` in one side if it is among the `half` nearest; returns whether it went in and
/// the member it pushed out.
fn insert_side(
    side: &mut Vec<NodeId>,
    half: usize,
    id: NodeId,
    dist: impl Fn(NodeId) -> u128,
) -> (bool, Option<NodeId>) {
    let d = dist(id);
    match side.binary_search_by_key(&d, |&x| dist(x)) {
        Ok(_) => (false, None),
        Err(pos) if pos < half => {
            // The farthest goes first when the side is full, so that the vector never holds
            // more than `half` (inserting first grew a full side's room to twice its size).
            let out = if side.len() >= half { side.pop() } else { None };
            side.insert(pos, id);
            (true, out)
        }
        Err(_) => (false, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn expected(me: NodeId, all: &BTreeSet<NodeId>, half: usize) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut cw: Vec<NodeId> = all.iter().copied().filter(|&x| x != me).collect();
        cw.sort_by_key(|&x| me.cw_distance(x));
        let mut ccw = cw.clone();
        ccw.sort_by_key(|&x| x.cw_distance(me));
        cw.truncate(half);
        ccw.truncate(half);
        (cw, ccw)
    }

    #[test]
    fn full_overlapping_sides_cover_the_whole_ring() {
        // A ring of 20: both sides of 16 are full and share members.
        let me = NodeId::from_u128(0);
        let mut ls = LeafSet::new(me, 32);
        for i in 1..=19u128 {
            ls.insert(NodeId::from_u128(i << 120));
        }
        assert!(ls.is_whole_ring());
        assert!(ls.covers(NodeId::from_u128(1)));
        assert_eq!(ls.closest(NodeId::from_u128(1)), me);
    }

    #[test]
    fn small_ring_overlaps() {
        let me = NodeId::from_u128(10);
        let mut ls = LeafSet::new(me, 8);
        for v in [20, 5] {
            ls.insert(NodeId::from_u128(v));
        }
        assert_eq!(ls.len(), 2);
        assert_eq!(ls.cw(), &[NodeId::from_u128(20), NodeId::from_u128(5)]);
        assert_eq!(ls.ccw(), &[NodeId::from_u128(5), NodeId::from_u128(20)]);
        assert!(ls.is_whole_ring());
        assert!(ls.covers(NodeId::MAX));
        assert_eq!(ls.closest(NodeId::from_u128(16)), NodeId::from_u128(20));
        assert_eq!(ls.closest(NodeId::from_u128(14)), me);
    }

    proptest! {
        #[test]
        fn matches_reference_model(me in any::<u128>(), ids in proptest::collection::vec(any::<u128>(), 0..80), size in 2usize..40) {
            let me = NodeId::from_u128(me);
            let mut ls = LeafSet::new(me, size);
            let mut model = BTreeSet::new();
            for v in ids {
                let id = NodeId::from_u128(v);
                // `would_take` says what inserting does, without doing it.
                let (taken, _) = ls.clone().insert_evicting(id);
                prop_assert_eq!(ls.would_take(id), taken);
                ls.insert(id);
                model.insert(id);
                let (cw, ccw) = expected(me, &model, ls.half());
                prop_assert_eq!(ls.cw(), &cw[..]);
                prop_assert_eq!(ls.ccw(), &ccw[..]);
                // A full side never grows its room past its size.
                let half = (size / 2).max(1);
                prop_assert_eq!(ls.heap_bytes(), 2 * half * core::mem::size_of::<NodeId>());
            }
            // With every node in the leaf set, every key is covered.
            if model.iter().filter(|&&x| x != me).count() < 2 * ls.half() {
                for probe in [0u128, 1 << 64, u128::MAX, me.as_u128().wrapping_add(1), me.as_u128().wrapping_sub(1)] {
                    prop_assert!(ls.covers(NodeId::from_u128(probe)));
                }
            }
            // closest() agrees with brute force over the members, covered or not.
            for probe in [0u128, 1 << 64, 1 << 127, u128::MAX, me.as_u128().wrapping_add(1), me.as_u128() ^ (1 << 100)] {
                let key = NodeId::from_u128(probe);
                let members = ls.members();
                let best = members.iter().copied().fold(me, |b, x| if key.is_closer(x, b) { x } else { b });
                prop_assert_eq!(ls.closest(key), best);
                if let Some(&ex) = members.first() {
                    let best = members.iter().copied().filter(|&x| x != ex).fold(me, |b, x| if key.is_closer(x, b) { x } else { b });
                    prop_assert_eq!(ls.closest_excluding(key, ex), best);
                }
            }
            // covers() agrees with brute force: inside the span the closest member is the
            // closest of all inserted nodes.
            for probe in [0u128, 1 << 64, u128::MAX, me.as_u128().wrapping_add(1)] {
                let key = NodeId::from_u128(probe);
                if ls.covers(key) {
                    let best = model.iter().copied().chain([me]).fold(me, |b, x| if key.is_closer(x, b) { x } else { b });
                    prop_assert_eq!(ls.closest(key), best);
                }
            }
        }

        #[test]
        fn invariants_under_inserts_and_removes(me in any::<u128>(), ops in proptest::collection::vec((any::<bool>(), 0u128..64), 0..200)) {
            let me = NodeId::from_u128(me % 64);
            let mut ls = LeafSet::new(me, 8);
            let mut model = BTreeSet::new();
            for (ins, v) in ops {
                let id = NodeId::from_u128(v);
                // `would_change` says whether inserting changes a side (here a member may enter
                // the other side once a removal made room), without doing it.
                let mut copy = ls.clone();
                let before = (copy.cw().to_vec(), copy.ccw().to_vec());
                copy.insert_evicting(id);
                prop_assert_eq!(ls.would_change(id), (copy.cw().to_vec(), copy.ccw().to_vec()) != before);
                if ins { ls.insert(id); model.insert(id); } else { ls.remove(id); model.remove(&id); }
                prop_assert!(ls.cw().len() <= 4 && ls.ccw().len() <= 4);
                prop_assert!(!ls.contains(me));
                prop_assert!(ls.cw().windows(2).all(|w| me.cw_distance(w[0]) < me.cw_distance(w[1])));
                prop_assert!(ls.ccw().windows(2).all(|w| w[0].cw_distance(me) < w[1].cw_distance(me)));
                let members = ls.members();
                let unique: BTreeSet<_> = members.iter().copied().collect();
                prop_assert_eq!(unique.len(), members.len());
                prop_assert_eq!(ls.len(), members.len());
                // Counter-clockwise side farthest first, then the clockwise side's members
                // not listed already: what the shortcut for sides apart must give too.
                let mut listed: Vec<NodeId> = ls.ccw().iter().rev().copied().collect();
                for &x in ls.cw() {
                    if !listed.contains(&x) {
                        listed.push(x);
                    }
                }
                prop_assert_eq!(&members, &listed);
                prop_assert!(unique.iter().all(|x| model.contains(x)));
                for x in (0..64).map(NodeId::from_u128) {
                    prop_assert_eq!(ls.contains(x), members.contains(&x));
                }
            }
        }
    }
}
