//! Versioned records: what a replica holds for one key, and the rule that picks a winner.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::time::Instant;

/// The version of a record: a counter, then the id of the node that wrote it.
///
/// Versions are totally ordered (counter first, then writer id), so every replica that sees
/// the same two records keeps the same one, without clocks: the greater version wins. The
/// key's root assigns the counter of a write, one past the newest version it knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Version {
    /// Increases with every write of the key.
    pub counter: u64,
    /// The node whose put or delete wrote it.
    pub writer: NodeId,
}

impl Version {
    /// The version following `self`, written by `writer`.
    pub fn next(self, writer: NodeId) -> Version {
        Version { counter: self.counter.saturating_add(1), writer }
    }
}

/// One key's record: a value or a tombstone, its version and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its version.
    pub version: Version,
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<Bytes>,
    /// When it expires on this node (tombstones always expire), by this node's clock.
    pub expires: Option<Instant>,
}

impl Record {
    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// What the record is known by without its value.
    pub fn meta(&self) -> Meta {
        Meta {
            version: self.version,
            tombstone: self.is_tombstone(),
            expires: self.expires,
            size: self.value.as_ref().map_or(0, |v| v.len()) as u32,
        }
    }

    /// True if it has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// A record without its value: what the storage layer keeps in memory for every key it holds
/// (the value itself stays in the [`Backend`](super::Backend)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Its version.
    pub version: Version,
    /// True for a tombstone.
    pub tombstone: bool,
    /// When it expires, by this node's clock.
    pub expires: Option<Instant>,
    /// Length of the value in bytes (0 for a tombstone).
    pub size: u32,
}

impl Meta {
    /// Bytes it counts against the quota: the value plus a fixed overhead per key.
    pub fn charge(&self) -> u64 {
        u64::from(self.size) + RECORD_OVERHEAD
    }

    /// True if it has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// Bytes a key costs against the quota besides its value (key, version, bookkeeping).
pub const RECORD_OVERHEAD: u64 = 64;

/// True if a record with version `new` (a tombstone if `new_tomb`) replaces one with `old`.
/// The greater version wins; at equal versions a tombstone wins over a value, so even a
/// (buggy) double use of a version settles the same way everywhere.
pub fn wins(new: Version, new_tomb: bool, old: Version, old_tomb: bool) -> bool {
    new > old || (new == old && new_tomb && !old_tomb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greater_version_wins_whatever_the_order_seen() {
        let a = Version { counter: 2, writer: NodeId::from_u128(1) };
        let b = Version { counter: 2, writer: NodeId::from_u128(9) };
        let c = Version { counter: 3, writer: NodeId::from_u128(0) };
        assert!(wins(b, false, a, false) && !wins(a, false, b, false));
        assert!(wins(c, false, b, true) && !wins(b, true, c, false));
        assert!(wins(a, true, a, false) && !wins(a, false, a, true));
        assert!(!wins(a, false, a, false));
    }
}
