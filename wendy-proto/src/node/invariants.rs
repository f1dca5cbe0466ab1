//! The node's invariants, checked by tests and the fuzzer.

use super::Node;

impl Node {
    /// Checks the node's invariants; used by tests and the fuzzer. `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        let me = self.id();
        let leaf = &self.leaf;
        if leaf.cw().len() > leaf.half() || leaf.ccw().len() > leaf.half() {
            return Err("leaf set over its bound".into());
        }
        if leaf.contains(me) {
            return Err("leaf set contains ourselves".into());
        }
        if !leaf.cw().windows(2).all(|w| me.cw_distance(w[0]) < me.cw_distance(w[1]))
            || !leaf.ccw().windows(2).all(|w| w[0].cw_distance(me) < w[1].cw_distance(me))
        {
            return Err("leaf set not sorted or has duplicates".into());
        }
        for r in 0..self.table.row_count() {
            for c in 0..crate::id::BASE {
                if let Some(cell) = self.table.get(r, c) {
                    if me.common_prefix_len(cell.id) != r || usize::from(cell.id.digit(r)) != c {
                        return Err(format!("routing-table cell ({r},{c}) holds {}", cell.id));
                    }
                }
            }
        }
        if self.hood.len() > self.cfg.neighbourhood_size {
            return Err("neighbourhood over its bound".into());
        }
        for id in self.table_members() {
            if !self.peers.contains_key(&id) {
                return Err(format!("table member {id} has no peer entry"));
            }
        }
        let queued: usize = self.conns.values().map(|c| c.pending.len()).sum::<usize>() + self.held.len();
        if queued != self.pending_total || queued > self.cfg.max_pending_total {
            return Err(format!("pending count {} vs {queued}", self.pending_total));
        }
        if self.conns.values().any(|c| c.pending.len() > self.cfg.max_pending_per_peer) {
            return Err("a per-peer queue is over its bound".into());
        }
        if self.conns.len() > self.cfg.max_connections {
            return Err("too many connections".into());
        }
        if let Some(t) = self.poll_timeout() {
            if t < self.last_now {
                return Err("poll_timeout is in the past".into());
            }
        }
        Ok(())
    }
}
