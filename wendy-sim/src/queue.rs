//! The event queue: a binary min-heap ordered by (time, sequence number).
//!
//! Events at the same instant run in the order they were scheduled, which makes a run a pure
//! function of its seed. Entries are small (32 bytes): the bytes of frames in flight wait in
//! the links' segment slab, named by slot, not here.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What happens when an event comes due. Everything is named by index and generation, so an
/// event for a connection or timer that has since gone away is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    /// A node's timer (stale unless `gen` is the host's current timer generation).
    Timer { host: u32, gen: u32 },
    /// A connection request reaches the acceptor.
    Syn { link: u32, gen: u32 },
    /// The acceptor's answer reaches the dialler: the connection is established.
    SynAck { link: u32, gen: u32 },
    /// The dialler learns that its connection attempt failed (refused or timed out).
    Refused { link: u32, gen: u32 },
    /// The segment (or the close) in `slot` of the links' segment slab arrives at `side`
    /// of the link.
    Arrive { link: u32, gen: u32, side: u8, slot: u32 },
    /// A scenario action.
    Ctl(Ctl),
}

/// Scenario actions scheduled in simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctl {
    /// Start the next join of the initial population.
    JoinNext,
    /// Issue the next lookup.
    Lookup,
    /// Crash the configured fraction of nodes at once.
    CrashFraction,
    /// Check whether the ring has repaired itself.
    Check,
    /// A churn arrival (Poisson process).
    Arrival,
    /// A churn departure of `host` (if still incarnation `inc`).
    Depart { host: u32, inc: u32 },
    /// Restart a bounced host.
    Restart { host: u32 },
    /// Apply churn-trace record `idx`.
    Trace { idx: u32 },
    /// Remove a node that left gracefully once it is drained (if still incarnation `inc`).
    Kill { host: u32, inc: u32 },
    /// Split the network (partition or hold, as configured).
    Split,
    /// Heal the split (repair or release).
    Heal,
    /// Sample the time series.
    Sample,
    /// Key-value workload: the next put.
    KvPut,
    /// Key-value workload: a get of a random key.
    KvProbe,
    /// Key-value workload: the next get of the final read.
    KvFinal,
}

#[derive(Debug)]
struct Entry {
    time: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A min-heap of events by (time in microseconds, sequence number).
#[derive(Debug, Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
    peak: usize,
}

impl Queue {
    /// Schedules `ev` at `time` (microseconds).
    pub(crate) fn push(&mut self, time: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry { time, seq: self.seq, ev });
        self.peak = self.peak.max(self.heap.len());
    }

    /// The earliest event, if any.
    pub(crate) fn pop(&mut self) -> Option<(u64, Ev)> {
        self.heap.pop().map(|e| (e.time, e.ev))
    }

    /// Time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.time)
    }

    /// Events pending.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Most events ever pending at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// Heap bytes the queue holds (entries times allocated capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn orders_by_time_then_sequence() {
        let mut q = Queue::default();
        q.push(5, Ev::Ctl(Ctl::Lookup));
        q.push(3, Ev::Ctl(Ctl::Check));
        q.push(5, Ev::Ctl(Ctl::Arrival));
        q.push(3, Ev::Ctl(Ctl::Sample));
        let got: Vec<(u64, Ev)> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            got,
            vec![
                (3, Ev::Ctl(Ctl::Check)),
                (3, Ev::Ctl(Ctl::Sample)),
                (5, Ev::Ctl(Ctl::Lookup)),
                (5, Ev::Ctl(Ctl::Arrival))
            ]
        );
    }
}
