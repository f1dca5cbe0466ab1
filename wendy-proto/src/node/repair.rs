//! Upkeep of the routing table's rows: a cell emptied by a failed entry is refilled from a
//! member of its row, and near nodes are asked for rows to improve proximity over time. Also
//! the addresses of departed leaf-set members, re-probed for a while in case they come back.
//!
//! A hole is asked about as soon as its entry is declared failed. Waiting one table probe
//! period first, so that the holes of a row share one ask and arrivals fill some for free,
//! was tried (stop 27): it saved 0.025 of the 0.68 control messages per node per second at a
//! 30-minute median session, but after a crash of 30 % of 1,000 nodes the lookups' mean
//! stretch rose from 1.82 to 2.01 and their mean hops from 2.38 to 2.46 (seed 11): a route
//! that meets a hole takes Pastry's rare-case hop, a longer way round. Not kept.

use core::time::Duration;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::routing_table::UNKNOWN_PROXIMITY;
use crate::time::Instant;
use crate::wire::Message;

use super::peer::Peer;
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
    pub(super) asked: thin_vec::ThinVec<(NodeId, u8)>,
}

impl Rows {
    pub(super) fn new(now: Instant) -> Self {
        Rows { ask_at: now + ROW_ASK_GAP, ask_gap: ROW_ASK_GAP, won: false, asked: thin_vec::ThinVec::new() }
    }

    /// Heap bytes held (for [`Node::memory_footprint`]).
    pub(super) fn heap_bytes(&self) -> usize {
        self.asked.capacity() * core::mem::size_of::<(NodeId, u8)>()
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

    /// The routing-table entry at `row`, `col` is gone: a member of our other tables whose id
    /// fits that cell (a leaf-set or neighbourhood member the entry kept out), heard from, not
    /// suspected and measured, takes it at once, the nearest first, and is watched as a
    /// routing-table entry from now on ([`Node::silence_limit`]). True if one did: no row need
    /// be asked for (at a 30-minute median session, about half the rows that hole repairs
    /// asked for).
    pub(super) fn refill_cell(&mut self, row: usize, col: usize) -> bool {
        let best = self
            .known_members()
            .filter(|&id| self.table.slot(id) == Some((row, col)))
            .filter_map(|id| {
                let p = self.peers.get(&id).filter(|p| p.answered() && p.proximity() != UNKNOWN_PROXIMITY)?;
                Some((p.proximity(), id))
            })
            .min();
        let Some((prox, id)) = best else { return false };
        if !self.table.insert(id, prox) {
            return false;
        }
        self.watch_within(id, self.silence_limit(id));
        true
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

    /// Keeps a departed leaf-set member's address for `LOST_LEAF_MEMORY`, at most L of them.
    pub(super) fn remember_lost_leaf(&mut self, now: Instant, info: NodeInfo) {
        if self.lost_leaves.contains_key(&info.id) {
            return;
        }
        self.lost_leaves.insert(info.id, (info, now + LOST_LEAF_MEMORY));
        while self.lost_leaves.len() > self.cfg.leaf_set_size.max(1) {
            let oldest = self.lost_leaves.iter().min_by_key(|(&id, (_, until))| (*until, id)).map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.lost_leaves.remove(&id);
            }
        }
    }

    /// Pings the departed leaf-set members we still remember: one that answers is alive (a
    /// healed partition, a false suspicion) and is learned again.
    pub(super) fn reprobe_lost_leaves(&mut self, now: Instant) {
        self.lost_leaves.retain(|_, (_, until)| *until > now);
        let lost: Vec<NodeInfo> = self.lost_leaves.values().map(|(info, _)| info.clone()).collect();
        for info in lost {
            let id = info.id;
            if self.peers.contains_key(&id) {
                continue;
            }
            self.peers.insert(id, Box::new(Peer::new(info, now)));
            self.probe(now, id, false);
        }
    }

    /// Dials `id` at `addr` only to time the connection's set-up: closed once established,
    /// with nothing sent on it, it costs no frame ([`Node::timed`] gets the round trip).
    /// False if no connection can be had now.
    pub(super) fn dial_to_time(&mut self, now: Instant, addr: std::net::SocketAddr, id: NodeId) -> bool {
        let Some(conn) = self.dial(now, addr, Some(id)) else { return false };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.set_timing();
        }
        true
    }
}

/// How long a departed leaf-set member is re-probed before it is forgotten.
const LOST_LEAF_MEMORY: core::time::Duration = core::time::Duration::from_secs(600);
