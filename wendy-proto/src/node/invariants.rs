//! The node's invariants, checked by tests and the fuzzer.

use super::timers::NodeTimer;
use super::{Node, State};

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
        let queued: usize =
            self.conns.values().map(|c| c.pending_len()).sum::<usize>() + self.held.len() + self.parked.len();
        if queued != self.pending_total || queued > self.cfg.max_pending_total {
            return Err(format!("pending count {} vs {queued}", self.pending_total));
        }
        if self.conns.values().any(|c| c.pending_len() > self.cfg.max_pending_per_peer) {
            return Err("a per-peer queue is over its bound".into());
        }
        if self.conns.len() > self.cfg.max_connections {
            return Err("too many connections".into());
        }
        if self.custody.orphans() > super::custody::MAX_ORPHANS {
            return Err("too many copies kept for peers".into());
        }
        if let Some(t) = self.poll_timeout() {
            if t < self.last_now {
                return Err("poll_timeout is in the past".into());
            }
        }
        self.check_timers()
    }

    /// Every connection has a deadline (until the node has drained), every table member of a
    /// taking-part node is watched, and the timer table holds nothing else.
    fn check_timers(&self) -> Result<(), String> {
        if self.drained {
            return if self.timers.len() == 0 { Ok(()) } else { Err("timers left after Drained".into()) };
        }
        if let Some((id, _)) = self.conns.iter().find(|(_, c)| c.timer.is_none()) {
            return Err(format!("{id} has no deadline"));
        }
        if matches!(self.state, State::Ready | State::Announcing { .. }) {
            if let Some(id) = self.table_members().into_iter().find(|id| self.peers[id].timer.is_none()) {
                return Err(format!("table member {id} is not watched"));
            }
        }
        let node_timers = [NodeTimer::Join, NodeTimer::Announce, NodeTimer::Heartbeat, NodeTimer::LeafExchange]
            .into_iter()
            .filter(|&t| self.timers.get(t).is_some())
            .count();
        let owned = node_timers
            + self.conns.values().filter(|c| c.timer.is_some()).count()
            // Peers whose ids share their first 32 bits and record one deadline share its entry.
            + self.peers.iter().filter_map(|(id, p)| Some((super::timers::peer_key(*id), p.timer?))).collect::<std::collections::BTreeSet<_>>().len()
            + self.conns.values().filter(|c| c.flight.as_ref().is_some_and(|f| f.timer.is_some())).count();
        if owned != self.timers.len() {
            return Err(format!("{} timer entries, {owned} owned", self.timers.len()));
        }
        Ok(())
    }
}
