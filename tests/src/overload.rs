//! Scenarios of a node that was not run for a while (a loaded machine, a stop by a debugger):
//! what arrived meanwhile is read before the node judges its peers by the clock.

use std::time::Duration;

use bytes::Bytes;
use wendy_proto::Config;

use crate::conformance::{Cluster, PURPOSE};
use crate::facade::{Driver, Ev};

/// A node that was not run for longer than two ack timeouts, while the acknowledgement of the
/// message it had sent waited in its socket, reads that acknowledgement before its timers
/// fire: it neither reroutes the message nor suspects the peer that took it. (The node task
/// used to handle its timers first: the message was rerouted, its connection closed and the
/// peer suspected; in the throughput benchmark's 20-node cluster with batches of 2,048 that
/// cascaded into tens of thousands of reroutes and messages reported undeliverable by a
/// cluster where no node failed.)
///
/// `a` routes one message to `b`'s id while `b` is frozen, so that its acknowledgement cannot
/// come at once; `a` is frozen, `b` thawed: `b` delivers the message and acknowledges it into
/// `a`'s socket. `a` stays frozen for 2.5 ack timeouts (well under the silence it would take
/// for a stall, after which every connection is closed unread), then is thawed.
pub fn acks_read_before_timers<D: Driver>(driver: &D, seed: u64) {
    let ack_timeout = Duration::from_millis(200);
    let tweak = |mut c: Config| {
        c.ack_timeout_min = ack_timeout;
        c.ack_timeout_max = ack_timeout;
        // Probes patient enough (4 s) that neither node declares the other failed, nor takes
        // itself for stalled, however slowly a loaded machine runs the frozen spell.
        c.probe_attempts = 20;
        c
    };
    let c = Cluster::start(driver, 2, seed, tweak);
    let cfg = tweak(crate::conformance::test_config(c.nodes[0].id()));
    c.wait_converged(cfg.detection_time());
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let before = a.stats().expect("a runs");
    b.freeze();
    a.send(b.id(), PURPOSE, Bytes::from_static(b"held up")).expect("send");
    // The frame reaches b's socket (a's writer is not frozen yet).
    std::thread::sleep(Duration::from_millis(30));
    a.freeze();
    let frozen = std::time::Instant::now();
    b.thaw();
    let delivered = b.wait_for(Duration::from_secs(3), |ev| matches!(ev, Ev::Deliver(d) if d.purpose == PURPOSE));
    assert!(delivered.is_some(), "[{} seed {seed}] b did not deliver the message", D::NAME);
    // b's acknowledgement is in a's socket; a's deadline passes while it is frozen.
    std::thread::sleep((ack_timeout * 5 / 2).saturating_sub(frozen.elapsed()));
    a.thaw();
    // Time for a to act on its deadline, and for a rerouted copy to reach b.
    std::thread::sleep(ack_timeout * 2);
    let after = a.stats().expect("a runs");
    assert_eq!(
        after.reroutes - before.reroutes,
        0,
        "[{} seed {seed}] a rerouted the message b had acknowledged while a was not running",
        D::NAME
    );
    let b_stats = b.stats().expect("b runs");
    assert_eq!(b_stats.duplicates_dropped, 0, "[{} seed {seed}] a copy reached b again", D::NAME);
}
