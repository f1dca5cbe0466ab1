//! The event queue: a radix heap ordered by time, first in first out at the same time.
//!
//! Events at the same instant run in the order they were scheduled, which makes a run a pure
//! function of its seed. Entries are small (24 bytes): the bytes of frames in flight wait in
//! the links' segment slab, named by slot, not here.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

/// What happens when an event comes due. Everything is named by index and generation, so an
/// event for a connection or timer that has since gone away is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    /// A node's timer (stale unless `gen` is the host's current timer generation).
    Timer { host: u32, gen: u32 },
    /// The acceptor's answer reaches the dialler, a round trip after the request: the
    /// connection is established (or refused, if the acceptor was down or unreachable).
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

#[derive(Clone, Copy, Debug)]
struct Entry {
    time: u64,
    ev: Ev,
}

/// Buckets of the radix heap: one for keys equal to the last one taken, one per bit position
/// of the highest bit in which a key differs from it.
const BUCKETS: usize = 65;

/// A min-queue of events by (time in microseconds, order of scheduling), as a radix heap.
///
/// Times only move forward (every event is scheduled at or after the one being handled), which
/// a radix heap exploits: an entry sits in the bucket of the highest bit in which its time
/// differs from `last`, the time last taken; bucket 0 holds the entries due at `last`. Taking
/// the earliest is O(1) from bucket 0; when that is empty the first non-empty bucket is spread
/// over the lower ones around its least time, and an entry moves at most 64 times in its life,
/// with no comparisons of sequence numbers: entries with the same time always share a bucket
/// and keep their order in it (pushes append, spreading preserves order), so events due at the
/// same instant come out in the order they were scheduled, exactly as from a heap ordered by
/// (time, sequence number). An event scheduled before `last` (which the simulator never does)
/// waits in a small ordinary heap that is served first, so the order holds for any input.
///
/// The next few events are taken out ahead of time ([`Queue::ahead`] shows them), so that the
/// simulator can start loading what they will read while it handles the current one. An event
/// pushed earlier than the last of them goes among them in its place, and the last one then
/// steps back onto a stack in front of the heap; one pushed at the same time or later comes
/// after all of them. Either way the order is the heap's. (The staged events once grew instead:
/// a burst of events earlier than the last staged one, common between the waves of a join
/// phase, kept every later push among them, and each push then moved thousands of entries.)
#[derive(Debug)]
pub(crate) struct Queue {
    buckets: Vec<Vec<Entry>>,
    /// Entries of bucket 0 already taken (it is a FIFO, refilled only once empty).
    head: usize,
    /// The time last taken (the key that bucket 0 holds).
    last: u64,
    /// Bit `i - 1` set if bucket `i` (1..=64) is not empty.
    occupied: u64,
    /// The least time in buckets 1.., when known (bucket 0 is then empty).
    next_min: Cell<Option<u64>>,
    /// Events scheduled before `last`, by (time, sequence number).
    early: BinaryHeap<Reverse<(u64, u64, EarlyEv)>>,
    seq: u64,
    len: usize,
    peak: usize,
    /// The next events, already taken from the heap in order (at most [`LOOKAHEAD`] after a
    /// [`Queue::pop`], one more while a push has landed among them): the simulator reads them
    /// ahead to warm the cache for them.
    staged: VecDeque<Entry>,
    /// Staged events a push earlier than them sent back, the next to come on top: each was the
    /// last staged one when it stepped back, so it comes before every entry of the heap of its
    /// instant (those were scheduled after it) and after every staged one.
    spilled: Vec<Entry>,
    /// Events a batch took out and gave back ([`Queue::give_back`]), in their order: each comes
    /// before every entry of the heap of its instant (those were scheduled after it).
    carried: VecDeque<Entry>,
    /// Events given back during the current batch, until [`Queue::end_give_back`].
    given: Vec<Entry>,
}

/// How many of the next events [`Queue::ahead`] can show.
pub(crate) const LOOKAHEAD: usize = 4;

/// How far after the next event (microseconds) an event may be to be staged: a millisecond,
/// the least one-way latency the simulator models by default. The lookahead is for dense
/// stretches of events (a few microseconds apart in the large runs), which this never cuts.
const STAGE_HORIZON: u64 = 1_000;

/// An event in the early heap (ordered by time and sequence number only).
#[derive(Clone, Copy, Debug)]
struct EarlyEv(Ev);

impl PartialEq for EarlyEv {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EarlyEv {}
impl PartialOrd for EarlyEv {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EarlyEv {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            buckets: vec![Vec::new(); BUCKETS],
            head: 0,
            last: 0,
            occupied: 0,
            next_min: Cell::new(None),
            early: BinaryHeap::new(),
            seq: 0,
            len: 0,
            peak: 0,
            staged: VecDeque::with_capacity(LOOKAHEAD + 2),
            spilled: Vec::new(),
            carried: VecDeque::new(),
            given: Vec::new(),
        }
    }
}

/// The bucket of `time` relative to `last` (`time >= last`).
#[inline]
fn bucket(time: u64, last: u64) -> usize {
    (64 - (time ^ last).leading_zeros()) as usize
}

impl Queue {
    /// Schedules `ev` at `time` (microseconds).
    pub(crate) fn push(&mut self, time: u64, ev: Ev) {
        self.len += 1;
        self.peak = self.peak.max(self.len);
        // Everything staged was the least in the heap when taken, and this entry comes after
        // every one of them at the same time: it goes among them only if it is earlier than
        // the last (and then before everything still in the heap).
        if self.staged.back().is_some_and(|b| time < b.time) {
            let at = self.staged.partition_point(|e| e.time <= time);
            self.staged.insert(at, Entry { time, ev });
            if self.staged.len() > LOOKAHEAD + 1 {
                self.spilled.extend(self.staged.pop_back());
            }
            return;
        }
        self.push_heap(time, ev);
    }

    fn push_heap(&mut self, time: u64, ev: Ev) {
        if time < self.last {
            self.seq += 1;
            self.early.push(Reverse((time, self.seq, EarlyEv(ev))));
            return;
        }
        let b = bucket(time, self.last);
        if b > 0 {
            self.occupied |= 1 << (b - 1);
            if let Some(m) = self.next_min.get() {
                self.next_min.set(Some(m.min(time)));
            }
        }
        self.buckets[b].push(Entry { time, ev });
    }

    /// The least time in buckets 1.. (bucket 0 being empty), and the first non-empty bucket.
    fn min_above(&self) -> Option<(usize, u64)> {
        if self.occupied == 0 {
            return None;
        }
        let i = self.occupied.trailing_zeros() as usize + 1;
        let m = match self.next_min.get() {
            Some(m) => m,
            None => {
                let m = self.buckets[i].iter().map(|e| e.time).min().expect("the bucket is not empty");
                self.next_min.set(Some(m));
                m
            }
        };
        Some((i, m))
    }

    /// The earliest event, if any.
    pub(crate) fn pop(&mut self) -> Option<(u64, Ev)> {
        self.stage();
        let e = if self.carried_first() { self.carried.pop_front() } else { self.staged.pop_front() }?;
        self.len -= 1;
        Some((e.time, e.ev))
    }

    /// The earliest event, left in the queue: what [`Queue::pop`] returns next unless an
    /// earlier event is pushed first.
    pub(crate) fn peek(&mut self) -> Option<(u64, Ev)> {
        self.stage();
        let e = if self.carried_first() { self.carried.front() } else { self.staged.front() };
        e.map(|e| (e.time, e.ev))
    }

    /// True if the next event is a carried one (given back by an earlier batch): at the same
    /// time as the next staged one, it was scheduled first.
    #[inline]
    fn carried_first(&self) -> bool {
        match (self.carried.front(), self.staged.front()) {
            (None, _) => false,
            (Some(c), Some(s)) => c.time <= s.time,
            (Some(_), None) => true,
        }
    }

    /// Gives back an event just taken by [`Queue::pop`], for a later batch: once
    /// [`Queue::end_give_back`] is called, the events given back come next, in the order they
    /// were given and before every event that was pending when they were taken, each at its
    /// time (an event pushed meanwhile that is earlier comes before them, one at the same
    /// time after them). A batch of the engine sets aside this way the events of a host that
    /// has one in the batch already.
    pub(crate) fn give_back(&mut self, time: u64, ev: Ev) {
        self.given.push(Entry { time, ev });
        self.len += 1;
    }

    /// Puts the events given back since the last call in front of the events carried from
    /// earlier batches (they were all taken before those).
    pub(crate) fn end_give_back(&mut self) {
        while let Some(e) = self.given.pop() {
            self.carried.push_front(e);
        }
    }

    /// Stages the next events (up to [`LOOKAHEAD`] + 1 of them).
    fn stage(&mut self) {
        while self.staged.len() <= LOOKAHEAD {
            // Only events due soon after the next one are staged: taking a later one moves the
            // heap's `last` to its time, and every event pushed before that instant (a burst
            // after a quiet spell, the next one's own consequences) would then wait in the
            // early heap.
            let soon = match (self.staged.front(), self.next_unstaged()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(first), Some(t)) => t <= first.time.saturating_add(STAGE_HORIZON),
            };
            if !soon {
                break;
            }
            match self.pop_heap() {
                Some(e) => self.staged.push_back(e),
                None => break,
            }
        }
    }

    /// The `i`-th of the events that come next (`ahead(0)` is the next one), for `i` below
    /// [`LOOKAHEAD`] and as many as are pending within [`STAGE_HORIZON`] of the next one (after
    /// a [`Queue::pop`]): what `pop` returns next, in order, unless an earlier event is pushed
    /// first.
    #[inline]
    pub(crate) fn ahead(&self, i: usize) -> Option<Ev> {
        self.staged.get(i).map(|e| e.ev)
    }

    /// Takes the earliest entry out of the heap (not counted out of `len`).
    fn pop_heap(&mut self) -> Option<Entry> {
        if let Some(s) = self.spilled.last() {
            if self.heap_min().is_none_or(|t| s.time <= t) {
                return self.spilled.pop();
            }
        }
        if let Some(Reverse((time, _, EarlyEv(ev)))) = self.early.pop() {
            return Some(Entry { time, ev });
        }
        if self.head == self.buckets[0].len() {
            self.buckets[0].clear();
            self.head = 0;
            let (i, m) = self.min_above()?;
            self.last = m;
            self.next_min.set(None);
            self.occupied &= !(1 << (i - 1));
            self.spread(i, m);
        }
        let e = self.buckets[0][self.head];
        self.head += 1;
        Some(e)
    }

    /// Spreads bucket `i`, the first non-empty one, over the buckets below it (all empty)
    /// around its least time `m`, the new `last`. The bucket's entries stay in its vector if
    /// they all go to one bucket, and otherwise the bucket that takes the most of them does:
    /// they are moved down in place, in their order, and the others are appended to the
    /// buckets they go to, each given its exact room at once. (Pushed one by one into empty
    /// buckets, the entries of a large bucket made each of them grow by doubling: reallocations
    /// and fresh pages, about 1 % of a 10,000-node run's CPU, on the simulator's own thread.)
    fn spread(&mut self, i: usize, m: u64) {
        let mut from = std::mem::take(&mut self.buckets[i]);
        let mut counts = [0u32; BUCKETS];
        for e in &from {
            counts[bucket(e.time, m)] += 1;
        }
        let mut most = 0;
        for (b, &n) in counts.iter().enumerate().take(i) {
            if n > 0 {
                if b > 0 {
                    self.occupied |= 1 << (b - 1);
                }
                if n > counts[most] {
                    most = b;
                }
            }
        }
        for (b, &n) in counts.iter().enumerate().take(i) {
            if n > 0 && b != most {
                self.buckets[b].reserve_exact(n as usize);
            }
        }
        let mut kept = 0;
        for j in 0..from.len() {
            let e = from[j];
            let b = bucket(e.time, m);
            if b == most {
                from[kept] = e;
                kept += 1;
            } else {
                self.buckets[b].push(e);
            }
        }
        from.truncate(kept);
        // A bucket keeps room for more entries than it holds only if that room is small next
        // to the queue: each bucket filling up in turn would otherwise hold the sum of their
        // peaks. (At a quarter of the queue each, the buckets of a million-node run held 4.5
        // entries' room a host for 1.4 pending: 107 bytes a host.) The drained vector, moved
        // down, gives back what its entries gone elsewhere leave beyond that (shrinking a large
        // allocation in place: the spread's pages were touched already); the vector that
        // bucket `most` had (empty) is the drained bucket's now, if small.
        let room = 64.max(self.len / 16);
        if from.capacity() > kept + room {
            from.shrink_to(kept + room);
        }
        let spare = std::mem::replace(&mut self.buckets[most], from);
        if spare.capacity() <= room {
            self.buckets[i] = spare;
        }
    }

    /// Time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        let queued = match self.staged.front() {
            Some(e) => Some(e.time),
            None => self.next_unstaged(),
        };
        match (self.carried.front(), queued) {
            (Some(c), Some(q)) => Some(c.time.min(q)),
            (c, q) => c.map(|c| c.time).or(q),
        }
    }

    /// The time of the earliest event not staged.
    fn next_unstaged(&self) -> Option<u64> {
        let heap = self.heap_min();
        match self.spilled.last() {
            Some(s) => Some(heap.map_or(s.time, |h| h.min(s.time))),
            None => heap,
        }
    }

    /// The least time in the heap (the spilled events aside).
    fn heap_min(&self) -> Option<u64> {
        if let Some(Reverse((t, _, _))) = self.early.peek() {
            return Some(*t);
        }
        if self.head < self.buckets[0].len() {
            return Some(self.last);
        }
        self.min_above().map(|(_, m)| m)
    }

    /// Events pending.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Most events ever pending at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// Heap bytes the queue holds (entries times allocated capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.buckets.iter().map(Vec::capacity).sum::<usize>()
            + self.staged.capacity()
            + self.spilled.capacity()
            + self.carried.capacity()
            + self.given.capacity())
            * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self.early.capacity() * std::mem::size_of::<Reverse<(u64, u64, EarlyEv)>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
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

    /// Staged events are the first of their instant; one pushed at the same instant as the last
    /// staged one goes after the others of that instant still in the heap, and one pushed
    /// earlier goes among the staged ones.
    #[test]
    fn pushes_keep_their_order_around_the_staged_events() {
        let mut q = Queue::default();
        let t = |host| Ev::Timer { host, gen: 0 };
        for host in 1..=10 {
            q.push(5, t(host));
        }
        assert_eq!(q.pop(), Some((5, t(1))));
        assert_eq!((q.ahead(0), q.ahead(2)), (Some(t(2)), Some(t(4))));
        q.push(5, t(11));
        q.push(7, t(12));
        q.pop();
        q.push(3, t(13));
        let rest: Vec<u32> = std::iter::from_fn(|| q.pop())
            .map(|(_, e)| match e {
                Ev::Timer { host, .. } => host,
                _ => 0,
            })
            .collect();
        assert_eq!(rest, [13, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    /// A burst of events earlier than the last staged one keeps the staged events few (each
    /// such push sends the last of them back; they once grew to hold the burst, every push
    /// moving them all), and the order is still the heap's.
    #[test]
    fn pushes_among_the_staged_events_keep_them_few() {
        let mut q = Queue::default();
        let t = |host| Ev::Timer { host, gen: 0 };
        for host in 0..4u32 {
            q.push(1_000_000 + u64::from(host), t(host));
        }
        assert_eq!(q.pop(), Some((1_000_000, t(0))));
        for host in 4..10_004u32 {
            q.push(1_000 + u64::from(host), t(host));
            assert!(q.staged.len() <= LOOKAHEAD + 1, "{} staged", q.staged.len());
        }
        // One at the instant of a spilled event comes after it.
        q.push(1_000_002, t(10_004));
        let order: Vec<u32> = std::iter::from_fn(|| q.pop())
            .map(|(_, e)| match e {
                Ev::Timer { host, .. } => host,
                _ => u32::MAX,
            })
            .collect();
        let want: Vec<u32> = (4..10_004).chain([1, 2, 10_004, 3]).collect();
        assert_eq!(order, want);
    }

    /// Against a reference heap ordered by (time, sequence number): random pushes at or after
    /// the time last taken (many at the same instant), some before it, interleaved with pops
    /// and peeks, give the same events in the same order; the events it shows ahead are the
    /// next ones due within the horizon of the one taken, also when a push lands among them.
    #[test]
    fn same_order_as_a_heap_by_time_then_sequence() {
        let mut rng = wendy_proto::rng::Rng::new(7);
        let mut q = Queue::default();
        let mut reference = BinaryHeap::new();
        let mut seq = 0u32;
        let mut now = 0u64;
        for _ in 0..200_000 {
            if rng.below(5) < 3 {
                let time = match rng.below(20) {
                    0 => now.saturating_sub(rng.below(50)),
                    1..=8 => now,
                    9..=15 => now + rng.below(100),
                    _ => now + rng.below(1 << 40),
                };
                seq += 1;
                let ev = Ev::Timer { host: seq, gen: 0 };
                q.push(time, ev);
                reference.push(Reverse((time, seq)));
            } else {
                assert_eq!(q.peek_time(), reference.peek().map(|r| r.0 .0));
                let got = q.pop();
                let want = reference.pop().map(|Reverse((t, s))| (t, Ev::Timer { host: s, gen: 0 }));
                assert_eq!(got, want);
                // What the queue shows ahead is what comes next.
                let next: Vec<_> = (0..LOOKAHEAD).map_while(|_| reference.pop()).collect();
                // Those due within the horizon of the one just taken.
                let taken = got.map(|(t, _)| t);
                for i in 0..LOOKAHEAD {
                    let want = next
                        .get(i)
                        .filter(|r| taken.is_some_and(|t| r.0 .0 <= t + STAGE_HORIZON))
                        .map(|&Reverse((_, s))| Ev::Timer { host: s, gen: 0 });
                    assert_eq!(q.ahead(i), want);
                }
                reference.extend(next);
                if let Some((t, _)) = got {
                    now = now.max(t);
                }
            }
            assert_eq!(q.len(), reference.len());
        }
        while let Some(Reverse((t, s))) = reference.pop() {
            assert_eq!(q.pop(), Some((t, Ev::Timer { host: s, gen: 0 })));
        }
        assert_eq!(q.pop(), None);
    }

    /// Events given back come next once the batch ends, in their order and each at its time:
    /// before the events of their instant still in the heap (scheduled after them), after an
    /// earlier event pushed meanwhile, and a later batch's give-backs go before what is
    /// still carried.
    #[test]
    fn events_given_back_come_first_at_their_time() {
        let mut q = Queue::default();
        let t = |host| Ev::Timer { host, gen: 0 };
        for (time, host) in [(10, 1), (10, 2), (12, 3), (12, 4), (15, 5), (20, 6)] {
            q.push(time, t(host));
        }
        assert_eq!(q.pop(), Some((10, t(1))));
        let (time, ev) = q.pop().unwrap();
        q.give_back(time, ev);
        assert_eq!(q.pop(), Some((12, t(3))));
        let (time, ev) = q.pop().unwrap();
        q.give_back(time, ev);
        assert_eq!(q.len(), 4);
        q.end_give_back();
        // Pushed after the batch: 11 is earlier than a carried event, 12 ties with one.
        q.push(11, t(7));
        q.push(12, t(8));
        assert_eq!(q.peek_time(), Some(10));
        assert_eq!(q.pop(), Some((10, t(2))));
        assert_eq!(q.pop(), Some((11, t(7))));
        // A second batch gives back the next one: it goes before the rest still carried.
        let (time, ev) = q.pop().unwrap();
        assert_eq!((time, ev), (12, t(4)));
        q.give_back(time, ev);
        q.end_give_back();
        let rest: Vec<(u64, Ev)> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![(12, t(4)), (12, t(8)), (15, t(5)), (20, t(6))]);
        assert_eq!(q.len(), 0);
    }
}
