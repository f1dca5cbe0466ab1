//! The node's counters ([`Stats`]), held in 32 bits each while they fit: a simulator of a
//! million nodes allocates each node's struct by itself, and 46 counters of 64 bits were 368
//! of its bytes. The high words are boxed at the first carry out of any low word (after four
//! billion frames or bytes, at the earliest), so every count stays exact to 64 bits.

use crate::output::Stats;
use crate::wire::FRAME_KINDS;

/// A scalar counter of [`Stats`] (the frames sent by kind are counted with
/// [`Counters::add_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counter {
    FramesIn,
    FramesOut,
    BytesOut,
    ControlFramesOut,
    ControlBytesOut,
    DecodeErrors,
    ProtocolErrors,
    AuthFailures,
    RejectedPeers,
    RejectedByPeers,
    ConnectFailures,
    Dropped,
    AcksOut,
    Reroutes,
    CustodyReroutes,
    SlowSetupReroutes,
    Undeliverable,
    DuplicatesDropped,
    Delivered,
    Forwarded,
    JoinMessages,
}

/// The number of scalar counters: the frames by kind come after them.
const SCALARS: usize = Counter::JoinMessages as usize + 1;
/// All counters.
const LEN: usize = SCALARS + FRAME_KINDS.len();

/// The node's counters: the low 32 bits of each inline, the high 32 boxed once any carries.
#[derive(Debug, Default)]
pub(super) struct Counters {
    low: Low,
    high: Option<Box<Low>>,
}

/// One 32-bit word per counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Low([u32; LEN]);

impl Default for Low {
    fn default() -> Self {
        Low([0; LEN])
    }
}

impl Counters {
    /// Adds `n` to a scalar counter (modulo 2^64, as a `u64` would wrap).
    #[inline]
    pub(super) fn add(&mut self, c: Counter, n: u64) {
        self.add_at(c as usize, n);
    }

    /// Counts one control frame of kind `kind` ([`FRAME_KINDS`]) sent.
    #[inline]
    pub(super) fn add_kind(&mut self, kind: usize) {
        debug_assert!(kind < FRAME_KINDS.len(), "frame kind {kind}");
        if kind < FRAME_KINDS.len() {
            self.add_at(SCALARS + kind, 1);
        }
    }

    #[inline]
    fn add_at(&mut self, i: usize, n: u64) {
        let (low, carry) = self.low.0[i].overflowing_add(n as u32);
        self.low.0[i] = low;
        let up = ((n >> 32) as u32).wrapping_add(u32::from(carry));
        if up != 0 {
            self.carry(i, up);
        }
    }

    #[cold]
    #[inline(never)]
    fn carry(&mut self, i: usize, up: u32) {
        let high = self.high.get_or_insert_with(Box::default);
        high.0[i] = high.0[i].wrapping_add(up);
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        let high = self.high.as_ref().map_or(0, |h| h.0[i]);
        u64::from(high) << 32 | u64::from(self.low.0[i])
    }

    /// Bytes held beyond the struct: the high words, once boxed.
    pub(super) fn heap_bytes(&self) -> usize {
        self.high.as_ref().map_or(0, |_| size_of::<Low>())
    }

    /// The first low words, the ones almost every input adds to (a hint, [`crate::hint`]).
    pub(super) fn prefetch(&self) {
        crate::hint::warm_slice(&self.low.0);
    }

    /// The counters as the public [`Stats`].
    #[inline]
    pub(super) fn stats(&self) -> Stats {
        use Counter as C;
        let g = |c: C| self.get(c as usize);
        let mut control_frames_by_kind = [0; FRAME_KINDS.len()];
        for (k, v) in control_frames_by_kind.iter_mut().enumerate() {
            *v = self.get(SCALARS + k);
        }
        Stats {
            frames_in: g(C::FramesIn),
            frames_out: g(C::FramesOut),
            bytes_out: g(C::BytesOut),
            control_frames_out: g(C::ControlFramesOut),
            control_bytes_out: g(C::ControlBytesOut),
            decode_errors: g(C::DecodeErrors),
            protocol_errors: g(C::ProtocolErrors),
            auth_failures: g(C::AuthFailures),
            rejected_peers: g(C::RejectedPeers),
            rejected_by_peers: g(C::RejectedByPeers),
            connect_failures: g(C::ConnectFailures),
            dropped: g(C::Dropped),
            acks_out: g(C::AcksOut),
            reroutes: g(C::Reroutes),
            custody_reroutes: g(C::CustodyReroutes),
            slow_setup_reroutes: g(C::SlowSetupReroutes),
            undeliverable: g(C::Undeliverable),
            duplicates_dropped: g(C::DuplicatesDropped),
            delivered: g(C::Delivered),
            forwarded: g(C::Forwarded),
            join_messages: g(C::JoinMessages),
            control_frames_by_kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Counter; SCALARS] = [
        Counter::FramesIn,
        Counter::FramesOut,
        Counter::BytesOut,
        Counter::ControlFramesOut,
        Counter::ControlBytesOut,
        Counter::DecodeErrors,
        Counter::ProtocolErrors,
        Counter::AuthFailures,
        Counter::RejectedPeers,
        Counter::RejectedByPeers,
        Counter::ConnectFailures,
        Counter::Dropped,
        Counter::AcksOut,
        Counter::Reroutes,
        Counter::CustodyReroutes,
        Counter::SlowSetupReroutes,
        Counter::Undeliverable,
        Counter::DuplicatesDropped,
        Counter::Delivered,
        Counter::Forwarded,
        Counter::JoinMessages,
    ];

    /// The public stats as a flat list, in the counters' order.
    fn flat(s: &Stats) -> Vec<u64> {
        let mut v = vec![
            s.frames_in,
            s.frames_out,
            s.bytes_out,
            s.control_frames_out,
            s.control_bytes_out,
            s.decode_errors,
            s.protocol_errors,
            s.auth_failures,
            s.rejected_peers,
            s.rejected_by_peers,
            s.connect_failures,
            s.dropped,
            s.acks_out,
            s.reroutes,
            s.custody_reroutes,
            s.slow_setup_reroutes,
            s.undeliverable,
            s.duplicates_dropped,
            s.delivered,
            s.forwarded,
            s.join_messages,
        ];
        v.extend(s.control_frames_by_kind);
        v
    }

    #[test]
    fn the_counters_take_half_the_bytes_of_the_stats_they_give() {
        assert_eq!(size_of::<Stats>(), 8 * LEN);
        assert_eq!(size_of::<Counters>(), 4 * LEN + 8);
    }

    #[test]
    fn each_counter_lands_in_its_own_field_and_carries_are_exact() {
        let mut c = Counters::default();
        for (i, &k) in ALL.iter().enumerate() {
            c.add(k, i as u64 + 1);
        }
        for kind in 0..FRAME_KINDS.len() {
            for _ in 0..=kind {
                c.add_kind(kind);
            }
        }
        let want: Vec<u64> = (1..=SCALARS as u64).chain(1..=FRAME_KINDS.len() as u64).collect();
        assert_eq!(flat(&c.stats()), want);
        assert_eq!(c.heap_bytes(), 0, "no carry yet: no high words");
        // Across 2^32: the high word is boxed, and the count is exact.
        c.add(Counter::BytesOut, u64::from(u32::MAX));
        assert_eq!(c.stats().bytes_out, 3 + u64::from(u32::MAX));
        assert_eq!(c.heap_bytes(), size_of::<Low>());
        c.add(Counter::BytesOut, 5 << 32 | 7);
        assert_eq!(c.stats().bytes_out, 3 + u64::from(u32::MAX) + (5 << 32 | 7));
        // Wrapping at 2^64, as a u64 in a release build would.
        c.add(Counter::Delivered, u64::MAX);
        assert_eq!(c.stats().delivered, 18);
    }

    proptest! {
        #[test]
        fn counters_agree_with_64_bit_sums(adds in proptest::collection::vec((0..LEN, prop_oneof![
            0u64..1_000,
            (u64::from(u32::MAX) - 2)..(u64::from(u32::MAX) + 2),
            any::<u64>(),
        ]), 0..200)) {
            let mut c = Counters::default();
            let mut model = [0u64; LEN];
            for (i, n) in adds {
                if i < SCALARS {
                    c.add(ALL[i], n);
                    model[i] = model[i].wrapping_add(n);
                } else {
                    c.add_kind(i - SCALARS);
                    model[i] = model[i].wrapping_add(1);
                }
            }
            prop_assert_eq!(flat(&c.stats()), model.to_vec());
        }
    }
}
