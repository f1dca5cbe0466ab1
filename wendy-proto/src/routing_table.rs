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
/// Rows are allocated only up to the deepest one in use, so a node in a ring of N nodes keeps
/// about log16(N) rows.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: NodeId,
    rows: Vec<Row>,
    len: usize,
}

/// One row: 16 cells and a mask of those in use, 392 bytes where 16 `Option<Cell>`s take 512
/// (an id has no spare value to mark an empty cell with).
#[derive(Clone, Copy, Debug)]
struct Row {
    cells: [Cell; BASE],
    /// Bit `c` set: column `c` holds `cells[c]`.
    used: u16,
}

impl Row {
    const EMPTY: Row = Row { cells: [Cell { id: NodeId::from_u128(0), proximity: 0 }; BASE], used: 0 };

    fn get(&self, col: usize) -> Option<Cell> {
        (self.used >> col & 1 == 1).then(|| self.cells[col])
    }

    fn iter(&self) -> impl Iterator<Item = Cell> + '_ {
        (0..BASE).filter_map(|c| self.get(c))
    }
}

impl RoutingTable {
    /// An empty table for node `me`.
    pub fn new(me: NodeId) -> Self {
        RoutingTable { me, rows: Vec::new(), len: 0 }
    }

    /// The (row, column) where `id` belongs, `None` for our own id.
    pub fn slot(&self, id: NodeId) -> Option<(usize, usize)> {
        let row = self.me.common_prefix_len(id);
        (row < DIGITS).then(|| (row, usize::from(id.digit(row))))
    }

    /// Offers `id` for its cell; it wins an empty cell, or a contested one with strictly lower
    /// proximity. True if the table changed.
    pub fn insert(&mut self, id: NodeId, proximity: u64) -> bool {
        let Some((r, c)) = self.slot(id) else { return false };
        if self.rows.len() <= r {
            // Exactly as many rows as the deepest in use: a doubled vector would hold up to
            // twice as many empty 512-byte rows.
            self.rows.reserve_exact(r + 1 - self.rows.len());
            self.rows.resize(r + 1, Row::EMPTY);
        }
        let row = &mut self.rows[r];
        let cur = &mut row.cells[c];
        if row.used >> c & 1 == 0 {
            *cur = Cell { id, proximity };
            row.used |= 1 << c;
            self.len += 1;
            true
        } else if cur.id == id {
            cur.proximity = proximity.min(cur.proximity);
            false
        } else if proximity >= cur.proximity {
            false
        } else {
            *cur = Cell { id, proximity };
            true
        }
    }

    /// Records a new proximity measurement for `id` if it is in the table.
    pub fn update_proximity(&mut self, id: NodeId, proximity: u64) {
        if let Some((r, c)) = self.slot(id) {
            if let Some(row) = self.rows.get_mut(r).filter(|row| row.used >> c & 1 == 1) {
                if row.cells[c].id == id {
                    row.cells[c].proximity = proximity;
                }
            }
        }
    }

    /// Removes `id`; returns its former (row, column) if it was present.
    pub fn remove(&mut self, id: NodeId) -> Option<(usize, usize)> {
        let (r, c) = self.slot(id)?;
        let row = self.rows.get_mut(r)?;
        if row.get(c).is_some_and(|x| x.id == id) {
            row.used &= !(1 << c);
            self.len -= 1;
            while self.rows.last().is_some_and(|row| row.used == 0) {
                self.rows.pop();
            }
            return Some((r, c));
        }
        None
    }

    /// The cell at (row, column).
    pub fn get(&self, row: usize, col: usize) -> Option<Cell> {
        self.rows.get(row).filter(|_| col < BASE).and_then(|r| r.get(col))
    }

    /// True if `id` is in the table.
    pub fn contains(&self, id: NodeId) -> bool {
        self.slot(id).and_then(|(r, c)| self.get(r, c)).is_some_and(|cell| cell.id == id)
    }

    /// The entries of one row, by column.
    pub fn row(&self, row: usize) -> impl Iterator<Item = Cell> + '_ {
        self.rows.get(row).into_iter().flat_map(Row::iter)
    }

    /// Number of rows in use.
    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// Every entry, row by row.
    pub fn iter(&self) -> impl Iterator<Item = Cell> + '_ {
        self.rows.iter().flat_map(Row::iter)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated for the rows.
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * core::mem::size_of::<Row>()
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
    fn a_row_is_a_mask_and_sixteen_cells() {
        assert_eq!(core::mem::size_of::<Option<Cell>>(), 32);
        assert_eq!(core::mem::size_of::<Row>(), 392);
        let me = NodeId::from_u128(0);
        let mut t = RoutingTable::new(me);
        // A cell whose id is all zeros in its other digits is not mistaken for an empty one.
        let a = NodeId::from_u128(1 << 124);
        assert_eq!(t.get(0, 1), None);
        assert!(t.insert(a, 7));
        assert_eq!(t.get(0, 1), Some(Cell { id: a, proximity: 7 }));
        assert_eq!((t.get(0, 0), t.get(0, 2), t.get(0, BASE)), (None, None, None));
        t.update_proximity(a, 3);
        assert_eq!(t.iter().collect::<Vec<_>>(), [Cell { id: a, proximity: 3 }]);
        assert_eq!(t.heap_bytes(), 392);
    }
}
