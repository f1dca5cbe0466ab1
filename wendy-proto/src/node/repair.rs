//! Upkeep of the routing table's rows: cells emptied by failed entries are refilled from a
//! member of their row, and near nodes are asked for rows to improve proximity over time.
//!
//! A hole left by a failed entry is not asked about at once. It waits one table probe period
//! (the self-tuned one, [`super::tuning`]: minutes while the ring is calm, down to a
//! heartbeat during a burst of failures), the time a dead entry may itself go unnoticed.
//! Meanwhile any node we learn of (an arrival that announces itself, a row asked of a near
//! node, a leaf set) fills it for free, and the holes of one row share one ask. A message
//! whose cell is empty takes Pastry's rare-case hop (a node with as long a prefix, numerically
//! closer): a hole costs a route a hop at most, where a dead entry would cost it a reroute.
//! Asked at once, each failure of a member cost a row's request and answer and the vetting of
//! the entry that filled the hole (a connection and a probe): at a 30-minute median session
//! on 1,000 nodes, 0.05 of the 0.68 control messages per node per second; deferred, 0.02.

use core::time::Duration;

use crate::id::NodeId;
use crate::time::Instant;
use crate::wire::Message;

use super::Node;

/// Near nodes asked for a row at each leaf-set exchange in the first minute after a join,
/// while the asks win cells (one at a time once they stop, and later). After a wave of
/// joins (500 a second) every table starts far from its best (the held entry of a first-row
/// cell was on average the 10th nearest candidate at 1,000 nodes, 18th at 10,000), and each
/// near node's row, compared with ours, improves it a little: twelve asks a round took the
/// simulator's mean stretch on the sphere from 1.95 to 1.58 (1,000 nodes) and from 1.91 to
/// 1.58 (10,000), for 10 % more messages per join at 1,000 nodes and 26 % at 10,000.
pub(super) const EARLY_ROW_ASKS: usize = 12;

/// The gap between two asks for a near node's routing-table row while they improve the table.
pub(super) const ROW_ASK_GAP: Duration = Duration::from_secs(30);

/// The state of the row upkeep.
#[derive(Debug)]
pub(super) struct Rows {
    /// When near nodes are next asked for a row (`ask_near_row`).
    pub(super) ask_at: Instant,
    /// The gap after that ask.
    pub(super) ask_gap: Duration,
    /// A candidate won a cell since the last ask.
    pub(super) won: bool,
    /// The (node, row) asks not answered yet.
    pub(super) asked: Vec<(NodeId, u8)>,
    /// Cells (row, column) emptied by a failed entry since the last repair, each once: at
    /// most one per cell of the table.
    holes: Vec<(u8, u8)>,
    /// When the oldest of them opened.
    holes_since: Option<Instant>,
}

impl Rows {
    pub(super) fn new(now: Instant) -> Self {
        Rows {
            ask_at: now + ROW_ASK_GAP,
            ask_gap: ROW_ASK_GAP,
            won: false,
            asked: Vec::new(),
            holes: Vec::new(),
            holes_since: None,
        }
    }

    /// Heap bytes held (for [`Node::memory_footprint`]).
    pub(super) fn heap_bytes(&self) -> usize {
        self.asked.capacity() * core::mem::size_of::<(NodeId, u8)>()
            + self.holes.capacity() * core::mem::size_of::<(u8, u8)>()
    }
}

impl Node {
    /// Proximity neighbour selection over time: ask `asks` distinct random members of the
    /// neighbourhood set (the nodes nearest to us by measured round trip), each for a
    /// routing-table row we share with it. Its entries were chosen near it, so they are
    /// likely near us too; each that contends for a cell is measured and wins it if it is
    /// nearer (`learn`, `measure`).
    ///
    /// Each measurement costs a connection, so the asks back off: the gap between two asks
    /// doubles (up to `table_probe_interval`) after an ask whose candidates all lost, and
    /// halves (down to [`ROW_ASK_GAP`]) after one that won a cell.
    pub(super) fn ask_near_row(&mut self, now: Instant, asks: usize) {
        let won = std::mem::take(&mut self.rows.won);
        let longest = self.cfg.table_probe_interval.max(ROW_ASK_GAP);
        let gap = self.rows.ask_gap;
        self.rows.ask_gap = if won { (gap / 2).max(ROW_ASK_GAP) } else { (gap * 2).min(longest) };
        self.rows.ask_at = now + self.rows.ask_gap;
        let mut near: Vec<NodeId> = self.hood.iter().map(|e| e.1).collect();
        // Unanswered asks are forgotten: a row that comes after the next round is hearsay.
        self.rows.asked.clear();
        if self.table.row_count() == 0 {
            return;
        }
        for _ in 0..asks.min(near.len()) {
            let x = near.swap_remove(self.rng.below(near.len() as u64) as usize);
            let shared = self.id().common_prefix_len(x).min(self.table.row_count() - 1);
            let row = self.rng.below(shared as u64 + 1);
            if let Ok(row) = u8::try_from(row) {
                self.rows.asked.push((x, row));
                let _ = self.send_msg(now, x, Message::RowRequest { row });
            }
        }
    }

    /// A routing-table entry at (`row`, `col`) failed: its cell is refilled later
    /// ([`Node::repair_holes`]).
    pub(super) fn note_hole(&mut self, now: Instant, row: usize, col: usize) {
        let (Ok(row), Ok(col)) = (u8::try_from(row), u8::try_from(col)) else { return };
        if !self.rows.holes.contains(&(row, col)) {
            self.rows.holes.push((row, col));
        }
        self.rows.holes_since.get_or_insert(now);
    }

    /// At a heartbeat: once the oldest hole has waited the current table probe period, ask
    /// for each row that still has an empty one (one ask per row, however many holes).
    pub(super) fn repair_holes(&mut self, now: Instant) {
        let Some(since) = self.rows.holes_since else { return };
        if now < since + self.table_probe {
            return;
        }
        self.rows.holes_since = None;
        let mut holes = std::mem::take(&mut self.rows.holes);
        holes.sort_unstable();
        let mut asked = None;
        for &(row, col) in &holes {
            let (row, col) = (usize::from(row), usize::from(col));
            if asked == Some(row) || self.table.get(row, col).is_some() {
                continue;
            }
            asked = Some(row);
            self.repair_row(now, row, col);
        }
        // The vector is kept for the next holes, its capacity bounded by the table's cells.
        holes.clear();
        self.rows.holes = holes;
    }

    /// Asks a member of `row` in another column (or, if there is none, a member of the next
    /// row) for that row: its entry for `col` shares our prefix as ours did.
    pub(super) fn repair_row(&mut self, now: Instant, row: usize, col: usize) {
        let ask = self
            .table
            .row(row)
            .find(|c| usize::from(c.id.digit(row)) != col)
            .or_else(|| self.table.row(row + 1).next())
            .map(|c| c.id);
        if let (Some(id), Ok(row)) = (ask, u8::try_from(row)) {
            let _ = self.send_msg(now, id, Message::RowRequest { row });
        }
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
