//! The protocol's own notion of time: a monotonic instant supplied by the driver.

use core::fmt;
use core::num::NonZeroU64;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in monotonic time, in microseconds from an arbitrary origin chosen by the driver.
///
/// wendy-proto never reads a clock: every time-dependent call takes `now: Instant`. A driver
/// usually measures microseconds since it started (`std::time::Instant::elapsed`); a simulator
/// uses its virtual clock. Wall-clock jumps therefore cannot affect the protocol.
///
/// It is eight bytes, and so is an `Option<Instant>`: a node keeps several optional
/// deadlines per peer and per connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(NonZeroU64);

impl Instant {
    /// The origin of time.
    pub const ZERO: Instant = Instant::from_micros(0);
    /// The largest representable instant, `u64::MAX - 1` microseconds after the origin (about
    /// 584,000 years).
    pub const MAX: Instant = Instant::from_micros(u64::MAX);

    /// An instant `micros` microseconds after the origin (at most [`Instant::MAX`]).
    pub const fn from_micros(micros: u64) -> Self {
        // Stored plus one, so that zero is free for `Option<Instant>`'s `None`.
        match NonZeroU64::new(micros.saturating_add(1)) {
            Some(v) => Instant(v),
            None => Instant(NonZeroU64::MAX),
        }
    }

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant::from_micros(millis.saturating_mul(1_000))
    }

    /// An instant `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Self {
        Instant::from_micros(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0.get() - 1
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.as_micros().saturating_sub(earlier.as_micros()))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant::from_micros(self.as_micros().saturating_add(duration_micros(d)))
    }
}

impl Default for Instant {
    fn default() -> Self {
        Instant::ZERO
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({})", self.as_micros())
    }
}

impl Serialize for Instant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.as_micros())
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Instant::from_micros)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Instant {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        u64::arbitrary(u).map(Instant::from_micros)
    }
}

/// A duration in nanoseconds, in 8 bytes where a [`Duration`] takes 16: for the intervals a
/// node keeps in its own struct (exact up to 584 years; longer ones saturate there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span(u64);

impl Span {
    /// `d`, saturating at 584 years.
    pub(crate) fn of(d: Duration) -> Self {
        Span(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// As a [`Duration`].
    pub(crate) fn get(self) -> Duration {
        Duration::from_nanos(self.0)
    }
}

/// A duration in whole microseconds, saturating at `u64::MAX`.
pub(crate) fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.as_micros() / 1_000_000, self.as_micros() % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(1);
        assert_eq!(t + Duration::from_millis(500), Instant::from_micros(1_500_000));
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(t.to_string(), "1.000000s");
        assert_eq!(Instant::from_micros(u64::MAX), Instant::MAX);
        assert_eq!(Instant::MAX.as_micros(), u64::MAX - 1);
        assert_eq!(Instant::default(), Instant::ZERO);
        assert_eq!(Instant::ZERO.as_micros(), 0);
    }

    #[test]
    fn a_span_is_eight_bytes_exact_to_the_nanosecond_and_saturates_past_584_years() {
        assert_eq!(core::mem::size_of::<Span>(), 8);
        for d in [Duration::ZERO, Duration::new(3, 7), Duration::from_secs(10 * 365 * 86_400)] {
            assert_eq!(Span::of(d).get(), d);
        }
        let most = Duration::from_nanos(u64::MAX);
        assert_eq!(Span::of(most).get(), most);
        assert_eq!(Span::of(Duration::MAX).get(), most);
        assert!(Span::of(Duration::from_secs(1)) < Span::of(Duration::from_secs(2)));
    }

    #[test]
    fn an_optional_instant_is_eight_bytes() {
        assert_eq!(core::mem::size_of::<Option<Instant>>(), 8);
        assert!(None < Some(Instant::ZERO));
    }
}
