//! The routing table: 32 rows by 16 columns of nodes sharing ever longer prefixes with us.

use crate::id::{NodeId, BASE, DIGITS};

/// Proximity of a node whose round-trip time has not been measured yet.
pub const UNKNOWN_PROXIMITY: u64 = u64::MAX;

/// One routing-table cell: a node and its proximity (lower is nearer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The node.
    pub id: NodeId,
    /// Its proximity when inserted or last measured.
    pub proximity: u64,
}

/// Row `r`, column `d` holds a node sharing the first `r` digits with us whose digit `r` is `d`.
///
/// Only the cells in use are kept, in one vector sorted by (row, column): 24 bytes a cell and
/// a 64-byte mask of the cells in use (a cell is found by counting bits, not by a search),
/// where 16 cells of a row allocated whole take 392 bytes however few are in use. A node in a
/// ring of N nodes fills about 15 log16(N) cells, and its deepest rows hold one or two. A
/// proximity is held in 32 bits: one of `u32::MAX - 1` or more reads back as `u32::MAX - 1`
/// (in wendy's microseconds, a round trip of 71 minutes), and [`UNKNOWN_PROXIMITY`] as itself.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: NodeId,
    /// The cells in use, by (row, column).
    cells: Vec<Slot>,
    /// Bit `row * 16 + column` set: that cell is in use. A cell's place in `cells` is the
    /// number of bits set before its own, so that a look-up counts bits rather than searching.
    used: [u64; DIGITS * BASE / 64],
}

/// One cell in use.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: NodeId,
    /// [`RoutingTable`] says how a proximity is held.
    proximity: u32,
    /// Row times 16 plus column: the vector's order.
    at: u16,
}

impl Slot {
    fn cell(&self) -> Cell {
        Cell { id: self.id, proximity: held_proximity(self.proximity) }
    }
}

/// A proximity as a routing-table cell or a node's peer record holds it, in 32 bits:
/// [`UNKNOWN_PROXIMITY`] as `u32::MAX`, and one of `u32::MAX - 1` or more as `u32::MAX - 1`
/// (in wendy's microseconds, a round trip of 71 minutes).
pub(crate) fn hold_proximity(proximity: u64) -> u32 {
    match proximity {
        UNKNOWN_PROXIMITY => u32::MAX,
        p => u32::try_from(p).unwrap_or(u32::MAX - 1).min(u32::MAX - 1),
    }
}

/// The proximity a value of [`hold_proximity`] stands for.
pub(crate) fn held_proximity(held: u32) -> u64 {
    match held {
        u32::MAX => UNKNOWN_PROXIMITY,
        p => u64::from(p),
    }
}

fn at(row: usize, col: usize) -> u16 {
    (row * BASE + col) as u16
}

impl RoutingTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeId) -> Self {
        RoutingTable { me, cells: Vec::new(), used: [0; DIGITS * BASE / 64] }
    }

    /// The (row, column) where `id` belongs, `None` for our own id.
    pub fn slot(&self, id: NodeId) -> Option<(usize, usize)> {
        let row = self.me.common_prefix_len(id);
        (row < DIGITS).then(|| (row, usize::from(id.digit(row))))
    }

    /// Where the cell at `at` is in the vector, or where it would go.
    fn find(&self, at: u16) -> Result<usize, usize> {
        if usize::from(at) >= DIGITS * BASE {
            return Err(self.cells.len());
        }
        let (w, b) = (usize::from(at) / 64, at % 64);
        let below: u32 = self.used[..w].iter().map(|x| x.count_ones()).sum();
        let rank = (below + (self.used[w] & ((1u64 << b) - 1)).count_ones()) as usize;
        if self.used[w] >> b & 1 == 1 {
            Ok(rank)
        } else {
            Err(rank)
        }
    }

    fn mark(&mut self, at: u16, used: bool) {
        let (w, b) = (usize::from(at) / 64, at % 64);
        if used {
            self.used[w] |= 1 << b;
        } else {
            self.used[w] &= !(1 << b);
        }
    }

    /// Offers `id` for its cell; it wins an empty cell, or a contested one with strictly lower
    /// proximity. True if the table changed.
    pub fn insert(&mut self, id: NodeId, proximity: u64) -> bool {
        let Some((r, c)) = self.slot(id) else { return false };
        let proximity = hold_proximity(proximity);
        match self.find(at(r, c)) {
            Err(i) => {
                if self.cells.len() == self.cells.capacity() {
                    // An eighth more room, not double: the table grows a cell at a time and
                    // lives as long as the node.
                    self.cells.reserve_exact((self.cells.len() / 8).max(4));
                }
                self.cells.insert(i, Slot { id, proximity, at: at(r, c) });
                self.mark(at(r, c), true);
                true
            }
            Ok(i) => {
                let cur = &mut self.cells[i];
                if cur.id == id {
                    cur.proximity = proximity.min(cur.proximity);
                    false
                } else if proximity >= cur.proximity {
                    false
                } else {
                    *cur = Slot { id, proximity, at: cur.at };
                    true
                }
            }
        }
    }

    /// Records a new proximity measurement for `id` if it is in the table.
    pub fn update_proximity(&mut self, id: NodeId, proximity: u64) {
        if let Some((r, c)) = self.slot(id) {
            if let Ok(i) = self.find(at(r, c)) {
                if self.cells[i].id == id {
                    self.cells[i].proximity = hold_proximity(proximity);
                }
            }
        }
    }

    /// Removes `id`; returns its former (row, column) if it was present.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let (r, c) = self.slot(id)?;
        let i = self.find(at(r, c)).ok()?;
        if self.cells[i].id != id {
            return None;
        }
        let gone = self.cells.remove(i);
        self.mark(gone.at, false);
        Some((r, c))
    }

    /// The cell at (row, column).
    pub fn get(&self, row: usize, col: usize) -> Option<Cell> {
        if row >= DIGITS || col >= BASE {
            return None;
        }
        self.find(at(row, col)).ok().map(|i| self.cells[i].cell())
    }

    /// True if `id` is in the table.
    pub fn contains(&self, id: NodeId) -> bool {
        self.slot(id).and_then(|(r, c)| self.get(r, c)).is_some_and(|cell| cell.id == id)
    }

    /// The entries of one row, by column.
    pub fn row(&self, row: usize) -> impl Iterator<Item = Cell> + '_ {
        let cells = if row < DIGITS {
            let start = self.find(at(row, 0)).unwrap_or_else(|i| i);
            let end = self.find(at(row + 1, 0)).unwrap_or_else(|i| i);
            &self.cells[start..end]
        } else {
            &[]
        };
        cells.iter().map(Slot::cell)
    }

    /// Number of rows in use: one more than the deepest row holding a cell.
    pub fn row_count(&self) -> usize {
        self.cells.last().map_or(0, |s| usize::from(s.at) / BASE + 1)
    }

    /// Every entry, row by row.
    pub fn iter(&self) -> impl Iterator<Item = Cell> + '_ {
        self.cells.iter().map(Slot::cell)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Bytes allocated for the cells.
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * core::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #[test]
        fn cells_respect_prefixes_and_proximity(me in any::<u128>(), ops in proptest::collection::vec((any::<bool>(), any::<u128>(), 0u64..100), 0..200)) {
            let me = NodeId::from_u128(me);
            let mut t = RoutingTable::new(me);
            // reference: per slot, the set of live candidates and their proximity
            let mut live: BTreeMap<NodeId, u64> = BTreeMap::new();
            for (ins, v, p) in ops {
                // a narrow id space so cells are contested
                let id = NodeId::from_u128(me.as_u128() ^ (v >> 120));
                if ins { t.insert(id, p); if id != me { live.entry(id).or_insert(p); } } else { t.remove(id); live.remove(&id); }
                let mut n = 0;
                for r in 0..t.row_count() {
                    for c in 0..BASE {
                        if let Some(cell) = t.get(r, c) {
                            n += 1;
                            prop_assert_eq!(me.common_prefix_len(cell.id), r);
                            prop_assert_eq!(usize::from(cell.id.digit(r)), c);
                            prop_assert!(live.contains_key(&cell.id));
                            prop_assert!(cell.id != me);
                        }
                    }
                }
                prop_assert_eq!(n, t.len());
                prop_assert!(!t.contains(me));
            }
        }
    }

    #[test]
    fn lower_proximity_wins() {
        let me = NodeId::from_u128(0);
        let mut t = RoutingTable::new(me);
        let a = NodeId::from_u128(1 << 124);
        let b = NodeId::from_u128((1 << 124) + 5);
        assert!(t.insert(a, 50));
        assert!(!t.insert(b, 60));
        assert!(t.insert(b, 10));
        assert_eq!(t.get(0, 1).map(|c| c.id), Some(b));
        assert_eq!(t.remove(b), Some((0, 1)));
        assert!(t.is_empty());
        assert_eq!(t.row_count(), 0);
    }

    #[test]
    fn only_cells_in_use_are_kept_24_bytes_each() {
        assert_eq!(core::mem::size_of::<Slot>(), 24);
        let me = NodeId::from_u128(0);
        let mut t = RoutingTable::new(me);
        // A cell whose id is all zeros in its other digits is not mistaken for an empty one.
        let a = NodeId::from_u128(1 << 124);
        assert_eq!(t.get(0, 1), None);
        assert!(t.insert(a, 7));
        assert_eq!(t.get(0, 1), Some(Cell { id: a, proximity: 7 }));
        assert_eq!((t.get(0, 0), t.get(0, 2), t.get(0, BASE), t.get(DIGITS, 0)), (None, None, None, None));
        t.update_proximity(a, 3);
        assert_eq!(t.iter().collect::<Vec<_>>(), [Cell { id: a, proximity: 3 }]);
        assert_eq!(t.heap_bytes(), 4 * 24);
        // A deep row costs its cells, not a row's 16.
        let deep = NodeId::from_u128(5);
        assert!(t.insert(deep, UNKNOWN_PROXIMITY));
        assert_eq!(t.row_count(), DIGITS);
        assert_eq!(t.row(DIGITS - 1).collect::<Vec<_>>(), [Cell { id: deep, proximity: UNKNOWN_PROXIMITY }]);
        assert_eq!(t.row(DIGITS).count(), 0);
        assert_eq!(t.remove(deep), Some((DIGITS - 1, 5)));
        assert_eq!(t.row_count(), 1);
        // Proximities are held in 32 bits.
        let b = NodeId::from_u128(2 << 124);
        assert!(t.insert(b, u64::MAX - 1));
        assert_eq!(t.get(0, 2).map(|c| c.proximity), Some(u64::from(u32::MAX - 1)));
        assert!(!t.insert(NodeId::from_u128((2 << 124) + 1), u64::from(u32::MAX) + 5), "not strictly nearer as held");
    }

    proptest! {
        /// The sparse table reads as the dense one it replaced: 32 rows of 16 optional cells,
        /// with the same contests.
        #[test]
        fn reads_as_a_dense_table(me in any::<u128>(), ops in proptest::collection::vec((0u8..3, any::<u128>(), 0u64..100), 0..200)) {
            let me = NodeId::from_u128(me);
            let mut t = RoutingTable::new(me);
            let mut dense = vec![[None::<Cell>; BASE]; DIGITS];
            for (op, v, p) in ops {
                let id = NodeId::from_u128(me.as_u128() ^ (v >> (v % 128) as u32));
                let Some((r, c)) = t.slot(id) else { continue };
                let cell = &mut dense[r][c];
                match op {
                    0 => {
                        let changed = match cell {
                            None => { *cell = Some(Cell { id, proximity: p }); true }
                            Some(x) if x.id == id => { x.proximity = x.proximity.min(p); false }
                            Some(x) if p < x.proximity => { *x = Cell { id, proximity: p }; true }
                            _ => false,
                        };
                        prop_assert_eq!(t.insert(id, p), changed);
                    }
                    1 => {
                        let was = cell.filter(|x| x.id == id).map(|_| (r, c));
                        if was.is_some() { *cell = None; }
                        prop_assert_eq!(t.remove(id), was);
                    }
                    _ => {
                        if let Some(x) = cell.as_mut().filter(|x| x.id == id) { x.proximity = p; }
                        t.update_proximity(id, p);
                    }
                }
                let all: Vec<Cell> = dense.iter().flatten().flatten().copied().collect();
                prop_assert_eq!(t.iter().collect::<Vec<_>>(), all.clone());
                prop_assert_eq!(t.len(), all.len());
                let rows = dense.iter().rposition(|row| row.iter().any(Option::is_some)).map_or(0, |r| r + 1);
                prop_assert_eq!(t.row_count(), rows);
                for (r, row) in dense.iter().enumerate() {
                    prop_assert_eq!(t.row(r).collect::<Vec<_>>(), row.iter().flatten().copied().collect::<Vec<_>>());
                    for (c, x) in row.iter().enumerate() {
                        prop_assert_eq!(t.get(r, c), *x);
                    }
                }
            }
        }
    }
}
