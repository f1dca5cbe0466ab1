//! Logging of rejected and misbehaving peers, rate limited: a flood of hostile connections
//! must not become a flood of log lines. The node counts every one of them in its
//! [`Stats`](wendy_proto::Stats) (see [`Metrics`](crate::Metrics)); the log shows a few per
//! window and then how many it left out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wendy_proto::{NodeError, NodeId, RejectReason};

/// Lines logged per window, at most.
pub const HOSTILE_LINES_PER_WINDOW: u32 = 5;
/// The window.
pub const HOSTILE_WINDOW: Duration = Duration::from_secs(10);

/// Counts the lines of the current window.
#[derive(Debug)]
pub(crate) struct HostileLog {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for HostileLog {
    fn default() -> Self {
        HostileLog { window_start: Instant::now(), logged: 0, suppressed: 0 }
    }
}

impl HostileLog {
    /// A peer failed the handshake.
    pub(crate) fn rejected(&mut self, addr: SocketAddr, claimed: Option<NodeId>, reason: RejectReason) {
        if self.admit(Instant::now()) {
            let why = describe(reason);
            match claimed {
                Some(id) => tracing::warn!(%addr, claimed = %id, "rejected peer {addr} (claims id {id}): {why}"),
                None => tracing::warn!(%addr, "rejected peer {addr}: {why}"),
            }
        }
    }

    /// A peer sent bytes that do not decode or break the protocol.
    pub(crate) fn bad_input(&mut self, e: &NodeError) {
        if self.admit(Instant::now()) {
            tracing::warn!(error = %e, "bad input from a peer, connection closed: {e}");
        }
    }

    /// True if a line may be logged at `now`; says how many were left out when a window ends.
    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= HOSTILE_WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "{} more rejected or misbehaving peers not logged in the last {} s",
                    self.suppressed,
                    HOSTILE_WINDOW.as_secs()
                );
            }
            self.window_start = now;
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < HOSTILE_LINES_PER_WINDOW {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Why a peer was rejected, for a person.
pub fn describe(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::BadCredentials => "bad credentials (the shared secrets differ, or its key is not admitted)",
        RejectReason::SelfId => "it claims our own node id",
        RejectReason::WrongId => "it answered with another id than the node we dialled",
        RejectReason::WrongKey => "its node id is not derived from the key it proved (a forged id)",
        _ => "handshake failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_per_window() {
        let mut log = HostileLog::default();
        let t0 = log.window_start;
        let admitted = (0..10_000).filter(|_| log.admit(t0)).count();
        assert_eq!(admitted, HOSTILE_LINES_PER_WINDOW as usize);
        assert_eq!(log.suppressed, 10_000 - u64::from(HOSTILE_LINES_PER_WINDOW));
        // The next window starts afresh.
        assert!(log.admit(t0 + HOSTILE_WINDOW));
        assert_eq!(log.suppressed, 0);
    }
}
