//! Self-tuned probing of table members (MSPastry's self-tuning).
//!
//! A routing-table entry that died is found either by the per-hop ack of a message sent
//! through it (which costs that message a reroute) or by a probe. Probing every entry often
//! keeps the table clean at a high cost; probing rarely is cheap and leaves more dead entries
//! to be met by messages. The node estimates the rate at which the members of its tables fail
//! and chooses the longest probe period that keeps the expected fraction of dead table
//! entries at [`Config::table_stale_target`](crate::Config::table_stale_target):
//!
//! an entry that fails at a uniformly random moment between two probes stays for half a period
//! on average, plus the probing time, so the dead fraction is about
//! `rate * (period / 2 + probing_time)`, and the period is
//! `2 * (target / rate - probing_time)`, clamped to
//! `[table_probe_min, table_probe_interval]`.
//!
//! The rate is counted over two windows of [`WINDOW`], plus a prior of one failure per
//! member-hour, so that a node that has seen nothing yet probes at a moderate period; and over
//! two windows of [`SHORT_WINDOW`], so that a node that sees a burst of failures (a crash of
//! many nodes) probes fast within a minute. Only the four basic floating-point operations are
//! used: the result is the same on every platform.

use core::time::Duration;

use crate::time::duration_micros;

/// The length of one counting window of the long-term estimate.
pub(super) const WINDOW: Duration = Duration::from_secs(30 * 60);
/// The length of one counting window of the short-term estimate, which sees a burst.
pub(super) const SHORT_WINDOW: Duration = Duration::from_secs(60);
/// The prior of the long-term estimate: one failure per this much member-time.
const PRIOR_EXPOSURE: Duration = Duration::from_secs(3600);

/// Failures and member-time counted in the current and the previous window of one length.
#[derive(Debug, Default)]
struct Windows {
    /// Member-microseconds observed in the current window.
    exposure: u64,
    /// Table members declared failed or departed in the current window.
    failures: u32,
    /// The previous window's member-microseconds.
    prev_exposure: u64,
    /// The previous window's failures.
    prev_failures: u32,
    /// Time accounted to the current window.
    elapsed: u64,
}

impl Windows {
    fn observe(&mut self, member_us: u64, dt_us: u64, len: Duration) {
        self.exposure = self.exposure.saturating_add(member_us);
        self.elapsed = self.elapsed.saturating_add(dt_us);
        if self.elapsed >= duration_micros(len) {
            self.prev_exposure = self.exposure;
            self.prev_failures = self.failures;
            self.exposure = 0;
            self.failures = 0;
            self.elapsed = 0;
        }
    }

    /// Failures per member-second, with `prior_failures` over `prior_us` added.
    fn rate(&self, prior_failures: f64, prior_us: u64) -> f64 {
        let failures = prior_failures + f64::from(self.failures) + f64::from(self.prev_failures);
        let exposure_us = prior_us as f64 + self.exposure as f64 + self.prev_exposure as f64;
        if exposure_us <= 0.0 {
            return 0.0;
        }
        failures / (exposure_us / 1e6)
    }
}

/// Failures of table members and member-time observed by one node: over two windows of
/// [`WINDOW`] (with a prior), and over two of [`SHORT_WINDOW`] (without), so that a burst
/// raises the estimate within a minute and a quiet hour lowers it.
#[derive(Debug, Default)]
pub(super) struct ChurnEstimate {
    long: Windows,
    short: Windows,
}

impl ChurnEstimate {
    /// Accounts `members` table members watched for `dt`.
    pub(super) fn observe(&mut self, members: usize, dt: Duration) {
        let dt = duration_micros(dt);
        let member_us = dt.saturating_mul(members as u64);
        self.long.observe(member_us, dt, WINDOW);
        self.short.observe(member_us, dt, SHORT_WINDOW);
    }

    /// A table member failed or left.
    pub(super) fn failure(&mut self) {
        self.long.failures = self.long.failures.saturating_add(1);
        self.short.failures = self.short.failures.saturating_add(1);
    }

    /// The estimated failure rate of one member, per second: the larger of the long-term and
    /// the short-term estimates.
    pub(super) fn rate(&self) -> f64 {
        let long = self.long.rate(1.0, duration_micros(PRIOR_EXPOSURE));
        // The short-term estimate needs one whole window of exposure before it speaks.
        let short = if self.short.prev_exposure > 0 { self.short.rate(0.0, 0) } else { 0.0 };
        long.max(short)
    }

    /// The probe period that keeps the expected dead fraction of the routing table at
    /// `target`, given `probing` (suspicion to declared failure), within `[min, max]`.
    pub(super) fn period(&self, target: f64, probing: Duration, min: Duration, max: Duration) -> Duration {
        let (min, max) = (min.min(max), max);
        let ideal = 2.0 * (target / self.rate() - probing.as_secs_f64());
        if !ideal.is_finite() {
            return min;
        }
        let secs = ideal.clamp(min.as_secs_f64(), max.as_secs_f64());
        Duration::from_micros((secs * 1e6) as u64).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(600);
    const PROBING: Duration = Duration::from_secs(3);

    #[test]
    fn a_node_that_saw_nothing_probes_at_a_moderate_period() {
        let c = ChurnEstimate::default();
        // One failure per member-hour: 2 * (0.05 * 3600 - 3) = 354 s.
        assert_eq!(c.period(0.05, PROBING, MIN, MAX), Duration::from_secs(354));
    }

    #[test]
    fn the_period_follows_the_failure_rate() {
        let mut stable = ChurnEstimate::default();
        let mut churning = ChurnEstimate::default();
        for _ in 0..180 {
            stable.observe(80, Duration::from_secs(10));
            churning.observe(80, Duration::from_secs(10));
        }
        // A member lives an hour on average: 40 of 80 fail in 30 minutes.
        for _ in 0..40 {
            churning.failure();
        }
        let quiet = stable.period(0.05, PROBING, MIN, MAX);
        let busy = churning.period(0.05, PROBING, MIN, MAX);
        assert_eq!(quiet, MAX, "80 members for 30 min without a failure");
        assert!(busy < quiet * 2 / 3, "{busy:?} vs {quiet:?}");
        assert!(busy >= MIN);
    }

    #[test]
    fn a_burst_of_failures_brings_the_period_to_its_floor_within_a_minute() {
        let mut c = ChurnEstimate::default();
        for _ in 0..360 {
            c.observe(80, Duration::from_secs(10));
        }
        assert_eq!(c.period(0.05, PROBING, MIN, MAX), MAX, "an hour without a failure");
        // 30 % of the members crash at once.
        for _ in 0..24 {
            c.failure();
        }
        for _ in 0..6 {
            c.observe(56, Duration::from_secs(10));
        }
        assert_eq!(c.period(0.05, PROBING, MIN, MAX), MIN);
        // One failure in a quiet minute does not make the node probe at its floor.
        let mut one = ChurnEstimate::default();
        for _ in 0..360 {
            one.observe(80, Duration::from_secs(10));
        }
        one.failure();
        for _ in 0..6 {
            one.observe(80, Duration::from_secs(10));
        }
        assert!(one.period(0.05, PROBING, MIN, MAX) > MAX / 2);
    }

    #[test]
    fn old_failures_are_forgotten_after_two_windows() {
        let mut c = ChurnEstimate::default();
        for _ in 0..6 {
            c.observe(80, Duration::from_secs(10));
        }
        for _ in 0..24 {
            c.failure();
        }
        c.observe(80, Duration::from_secs(60));
        assert!(c.period(0.05, PROBING, MIN, MAX) < MIN * 2);
        for _ in 0..2 * (WINDOW.as_secs() / 10) {
            c.observe(80, Duration::from_secs(10));
        }
        assert_eq!(c.period(0.05, PROBING, MIN, MAX), MAX);
    }
}
