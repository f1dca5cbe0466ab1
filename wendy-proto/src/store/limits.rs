//! Token buckets: the per-peer bounds on writes and transfers, and the node's own budget for
//! maintenance traffic.

use std::collections::BTreeMap;

use crate::id::NodeId;
use crate::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn full(burst: f64, now: Instant) -> Self {
        Bucket { tokens: burst, last: now }
    }

    /// Takes `n` tokens if there are that many (after refilling at `rate` up to `burst`).
    pub(super) fn take(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Tokens available now.
    pub(super) fn available(&mut self, now: Instant, rate: f64, burst: f64) -> f64 {
        self.refill(now, rate, burst);
        self.tokens
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        if now > self.last {
            self.last = now;
        }
    }
}

/// One bucket per peer, at most [`MAX_TRACKED_PEERS`] of them: when full, the buckets that
/// have refilled completely are forgotten (a forgotten peer starts again with a full bucket,
/// which is what it would have had anyway); if none has, the new peer is refused.
#[derive(Debug, Default)]
pub(super) struct PeerBuckets {
    buckets: BTreeMap<NodeId, Bucket>,
}

/// Peers tracked per kind of limit.
pub(super) const MAX_TRACKED_PEERS: usize = 4096;

impl PeerBuckets {
    pub(super) fn take(&mut self, peer: NodeId, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_TRACKED_PEERS {
            self.buckets.retain(|_, b| b.available(now, rate, burst) < burst);
            if self.buckets.len() >= MAX_TRACKED_PEERS {
                return false;
            }
        }
        self.buckets.entry(peer).or_insert_with(|| Bucket::full(burst, now)).take(now, n, rate, burst)
    }
}
