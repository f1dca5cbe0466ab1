//! The timer table: every deadline of the node is its own entry, and `poll_timeout` is the
//! earliest of them (quinn-proto's `TimerTable`, extended to per-connection and per-peer
//! entries).
//!
//! Entries due at the same instant fire in a fixed order (node timers first, in the order of
//! [`NodeTimer`], then connections by id, then peers by id), so a run is deterministic.
//! Connection and peer timers are re-armed lazily: activity on a connection or from a peer
//! only records a timestamp, and when the entry fires the owner computes its real deadline
//! from it, acting if it has passed and re-arming otherwise. So the table is touched only
//! when a deadline changes in kind (a dial, an open, a suspicion), never per message.

use std::collections::BTreeSet;

use crate::id::NodeId;
use crate::output::ConnId;
use crate::time::Instant;

/// Timers of the node as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum NodeTimer {
    /// The current join attempt gives up and the next one starts.
    Join,
    /// The announcement to the leaf set is considered answered.
    Announce,
    /// Heartbeats to the leaf set, and housekeeping.
    Heartbeat,
    /// The periodic leaf-set exchange with the nearest member on each side.
    LeafExchange,
}

const NODE_TIMERS: usize = 4;

/// What a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A node-wide timer.
    Node(NodeTimer),
    /// A connection's set-up, close or idle deadline.
    Conn(ConnId),
    /// A peer's liveness deadline: silence before a probe, or a probe's answer.
    Peer(NodeId),
    /// A connection's in-flight check: routed messages it has not acknowledged.
    Ack(ConnId),
}

/// The deadlines, ordered by (instant, key).
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    queue: BTreeSet<(Instant, TimerKey)>,
    node: [Option<Instant>; NODE_TIMERS],
    /// The earliest deadline, kept beside the tree: `poll_timeout` is asked after every input,
    /// and reading it here saves a descent through the tree's nodes.
    earliest: Option<Instant>,
}

impl TimerTable {
    /// Sets node timer `t` to fire at `at`, replacing its previous deadline.
    pub(super) fn set(&mut self, t: NodeTimer, at: Instant) {
        if let Some(old) = self.node[t as usize].replace(at) {
            self.remove(old, TimerKey::Node(t));
        }
        self.insert(at, TimerKey::Node(t));
    }

    fn insert(&mut self, at: Instant, key: TimerKey) {
        self.queue.insert((at, key));
        if self.earliest.is_none_or(|e| at < e) {
            self.earliest = Some(at);
        }
    }

    fn remove(&mut self, at: Instant, key: TimerKey) {
        if self.queue.remove(&(at, key)) && self.earliest == Some(at) {
            self.earliest = self.queue.first().map(|&(t, _)| t);
        }
    }

    /// Stops node timer `t`.
    pub(super) fn stop(&mut self, t: NodeTimer) {
        if let Some(old) = self.node[t as usize].take() {
            self.remove(old, TimerKey::Node(t));
        }
    }

    /// When node timer `t` fires, if it is set.
    pub(super) fn get(&self, t: NodeTimer) -> Option<Instant> {
        self.node[t as usize]
    }

    /// Moves the entry of `key` from `old` (the deadline its owner recorded) to `at`; returns
    /// `at` for the owner to record.
    pub(super) fn arm(&mut self, key: TimerKey, old: Option<Instant>, at: Instant) -> Option<Instant> {
        if let Some(old) = old {
            self.remove(old, key);
        }
        self.insert(at, key);
        Some(at)
    }

    /// Removes the entry of `key` at `old` (the deadline its owner recorded), if any.
    pub(super) fn disarm(&mut self, key: TimerKey, old: Option<Instant>) {
        if let Some(old) = old {
            self.remove(old, key);
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.earliest
    }

    /// Removes and returns the earliest entry due at `now`. A node timer's slot is cleared;
    /// for the others the owner must forget its recorded deadline.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        if self.earliest? > now {
            return None;
        }
        let (_, key) = self.queue.pop_first()?;
        self.earliest = self.queue.first().map(|&(t, _)| t);
        if let TimerKey::Node(t) = key {
            self.node[t as usize] = None;
        }
        Some(key)
    }

    /// Number of entries (for the invariant checks).
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Forgets every deadline.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.node = [None; NODE_TIMERS];
        self.earliest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_in_deadline_then_key_order() {
        let mut t = TimerTable::default();
        let at = |s| Instant::from_secs(s);
        t.set(NodeTimer::Heartbeat, at(5));
        let c = t.arm(TimerKey::Conn(ConnId(2)), None, at(3));
        t.arm(TimerKey::Peer(NodeId::from_u128(1)), None, at(3));
        t.set(NodeTimer::Join, at(3));
        assert_eq!(t.next(), Some(at(3)));
        // Moving an entry removes the old one.
        t.arm(TimerKey::Conn(ConnId(2)), c, at(4));
        assert_eq!(t.pop_due(at(2)), None);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(at(10))).collect();
        assert_eq!(
            fired,
            vec![
                TimerKey::Node(NodeTimer::Join),
                TimerKey::Peer(NodeId::from_u128(1)),
                TimerKey::Conn(ConnId(2)),
                TimerKey::Node(NodeTimer::Heartbeat),
            ]
        );
        assert_eq!(t.get(NodeTimer::Heartbeat), None);
        assert_eq!(t.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn the_kept_earliest_is_the_trees_first(ops in proptest::collection::vec((0u8..4, 0u64..8, 0u64..50), 0..200)) {
            let mut t = TimerTable::default();
            let mut armed: [Option<Instant>; 8] = [None; 8];
            for (op, k, at) in ops {
                let key = TimerKey::Conn(ConnId(k));
                let at = Instant::from_micros(at);
                match op {
                    0 | 1 => armed[k as usize] = t.arm(key, armed[k as usize], at),
                    2 => t.disarm(key, armed[k as usize].take()),
                    _ => {
                        if let Some(TimerKey::Conn(ConnId(c))) = t.pop_due(at) {
                            armed[c as usize] = None;
                        }
                    }
                }
                proptest::prop_assert_eq!(t.next(), t.queue.first().map(|e| e.0));
            }
        }
    }

    #[test]
    fn setting_a_node_timer_again_replaces_it() {
        let mut t = TimerTable::default();
        t.set(NodeTimer::Join, Instant::from_secs(9));
        t.set(NodeTimer::Join, Instant::from_secs(4));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(NodeTimer::Join), Some(Instant::from_secs(4)));
        t.stop(NodeTimer::Join);
        assert_eq!(t.next(), None);
    }
}
