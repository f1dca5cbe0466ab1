//! A connection's window in payload bytes: opened by acknowledgements, closed by delay.
//!
//! [`Config::route_window_bytes`](crate::Config::route_window_bytes) bounds what one connection
//! holds written and not yet handed on (4 MiB). Filled at once, that bound is too much for a
//! peer that is busy: a node that starts sending large messages to all of its peers together
//! gives each of them megabytes from every sender before any of them has answered, and a peer
//! that has not answered within `ack_timeout_max` (there is no round trip measured yet to
//! wait longer by) is taken for a failing one: its connections closed, what they carried
//! routed again and delivered twice. `wendy cluster --nodes 50 --messages 60000 --payload
//! 60000` rerouted 22-31 k of its messages so, in a cluster where no node failed.
//!
//! So the limit starts at [`INITIAL`] and grows as the peer acknowledges: by the bytes
//! acknowledged (doubling every round trip) up to the bound, or after a cut by about
//! [`FLOOR`] a round trip. An acknowledgement that took longer than a quarter of
//! `ack_timeout_max` says the peer's backlog is growing towards the point where it would be
//! taken for failing: the limit is halved (not below [`FLOOR`]), once for every window's
//! worth of messages, since those sent before the cut were late already. The delay is
//! measured absolutely, not against the path's own round trip: the timeout bounds the path and
//! the backlog together (a path whose round trip alone nears a quarter of `ack_timeout_max`
//! wants a longer `ack_timeout_max`). Measured against the quickest acknowledgement instead,
//! the 50-node, 60 KB cluster above moved 8.5 and 8.4 k messages a second against 9.1 and
//! 9.8 k (two alternating pairs), its windows left larger by backlogs already in its first
//! samples. A closed connection takes its window with it: a new one starts at [`INITIAL`]
//! again.
//!
//! The limits are large enough not to bind small messages: 64 KiB are 4,096 messages of 16
//! bytes, a connection's whole count window at the defaults. A message is written while the
//! bytes in flight are under the limit, so one larger than it still goes, alone.

use core::time::Duration;

use crate::time::Instant;

/// The limit of a new connection: 256 KiB.
pub(super) const INITIAL: u32 = 256 << 10;

/// The limit is never cut below this: 64 KiB.
pub(super) const FLOOR: u32 = 64 << 10;

/// An acknowledgement is late once it comes `ack_timeout_max / LATE_FRACTION` after its
/// message: a quarter of the wait after which the peer would be taken for failing.
const LATE_FRACTION: u32 = 4;

/// The limit of one connection's payload bytes in flight (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteWindow {
    /// The limit, in bytes.
    limit: u32,
    /// Below it the limit doubles every round trip; above it, it grows by about [`FLOOR`].
    threshold: u32,
    /// When the limit was last cut: acknowledgements of messages sent before it do not cut it
    /// again.
    cut: Option<Instant>,
}

impl Default for ByteWindow {
    fn default() -> Self {
        ByteWindow { limit: INITIAL, threshold: u32::MAX, cut: None }
    }
}

impl ByteWindow {
    /// The bytes that may be in flight: the limit, at most `bound`.
    pub(super) fn limit(&self, bound: usize) -> u64 {
        u64::from(self.limit).min(bound as u64)
    }

    /// The peer acknowledged `bytes` at `now`; the newest of them was sent at `sent` (`None`
    /// if it was sent more than once, so its delay says nothing of the peer's backlog). An
    /// acknowledgement later than a quarter of `ack_timeout_max` cuts the limit; one sooner
    /// opens it, up to `bound`.
    pub(super) fn acknowledged(
        &mut self,
        now: Instant,
        sent: Option<Instant>,
        bytes: u64,
        ack_timeout_max: Duration,
        bound: usize,
    ) {
        let bound = u32::try_from(bound).unwrap_or(u32::MAX);
        if let Some(sent) = sent {
            if now - sent > ack_timeout_max / LATE_FRACTION {
                if self.cut.is_none_or(|cut| sent >= cut) {
                    self.limit = (self.limit.min(bound) / 2).max(FLOOR);
                    self.threshold = self.limit;
                    self.cut = Some(now);
                }
                return;
            }
        }
        if self.limit >= bound {
            return;
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let grow = if self.limit < self.threshold {
            bytes
        } else {
            (u64::from(bytes) * u64::from(FLOOR) / u64::from(self.limit.max(1))).max(1) as u32
        };
        self.limit = self.limit.saturating_add(grow).min(bound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: usize = 4 << 20;
    /// `ack_timeout_max` at its default: acknowledgements past 250 ms are late.
    const ACK_TIMEOUT_MAX: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn prompt_acknowledgements_open_the_window_to_its_bound() {
        let mut w = ByteWindow::default();
        assert_eq!(w.limit(BOUND), u64::from(INITIAL));
        assert_eq!(w.limit(1000), 1000, "never past the configured bound");
        // A window's worth acknowledged within a round trip doubles it.
        w.acknowledged(at(10), Some(at(9)), u64::from(INITIAL), ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), 2 * u64::from(INITIAL));
        for i in 0..10 {
            let limit = w.limit(BOUND);
            w.acknowledged(at(20 + i), Some(at(19 + i)), limit, ACK_TIMEOUT_MAX, BOUND);
        }
        assert_eq!(w.limit(BOUND), BOUND as u64);
        // Messages sent more than once say nothing of delay; their bytes still open it.
        let mut w = ByteWindow::default();
        w.acknowledged(at(5000), None, 1000, ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), u64::from(INITIAL) + 1000);
    }

    #[test]
    fn late_acknowledgements_halve_the_window_once_per_window_of_messages() {
        let mut w = ByteWindow::default();
        for i in 0..10 {
            let limit = w.limit(BOUND);
            w.acknowledged(at(10 + i), Some(at(9 + i)), limit, ACK_TIMEOUT_MAX, BOUND);
        }
        assert_eq!(w.limit(BOUND), BOUND as u64);
        // Late by more than a quarter of a second: halved.
        w.acknowledged(at(1000), Some(at(600)), 60_000, ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), BOUND as u64 / 2);
        // The rest of what was sent before the cut is as late: no further cut for it.
        w.acknowledged(at(1100), Some(at(700)), 60_000, ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), BOUND as u64 / 2);
        // A message sent after the cut and late too: halved again, never below the floor.
        for i in 0..10 {
            w.acknowledged(at(2000 + 1000 * i), Some(at(1500 + 1000 * i)), 60_000, ACK_TIMEOUT_MAX, BOUND);
        }
        assert_eq!(w.limit(BOUND), u64::from(FLOOR));
        // After a cut it grows by about the floor a window's worth, not by doubling.
        let before = w.limit(BOUND);
        w.acknowledged(at(20_000), Some(at(19_999)), before, ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), before + u64::from(FLOOR));
        let limit = w.limit(BOUND);
        w.acknowledged(at(20_001), Some(at(20_000)), limit, ACK_TIMEOUT_MAX, BOUND);
        assert_eq!(w.limit(BOUND), limit + u64::from(FLOOR));
    }

    /// The window rides in each connection's acknowledgement state, allocated per connection
    /// that carries routed messages: that record still fits a 160-byte allocation.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_connections_acknowledgement_state_stays_within_160_bytes() {
        assert_eq!(size_of::<ByteWindow>(), 16);
        assert!(size_of::<super::super::acks::Flight>() <= 160);
    }
}
