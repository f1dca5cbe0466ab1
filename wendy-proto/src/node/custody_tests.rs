//! Tests of custody that need the node's tables by hand.
use bytes::Bytes;

use super::*;
use crate::harness::script::{self, addr, drain, info};
use crate::output::Output;

const ME: u128 = 1 << 127;

/// A custodian that left our tables while holding our messages (a leaf-set member a nearer
/// node pushed out, a routing-table entry replaced) and then crashed: it is still probed
/// when it holds them past `custody_hold`, declared failed when it does not answer, and our
/// copies are routed again (here, in what is now a ring of one, delivered here). Before,
/// only table members could be suspected: nothing ever probed it, and the copies were
/// dropped after five custody periods, the lookups lost.
#[test]
fn a_custodian_that_left_our_tables_is_probed_and_its_copies_routed_again() {
    let now = Instant::from_secs(1);
    let cfg = crate::Config::with_trusted_id(NodeId::from_u128(ME), addr(255, 1)).insecure_plaintext();
    let mut node = Node::new(cfg, now).expect("valid config");
    let peer = NodeId::from_u128(ME + 1);
    let conn = script::authed(&mut node, now, &info(ME + 1, 1, 1));
    script::send(&mut node, now, conn, &Message::Announce { seq: 1 });
    drain(&mut node);
    let payload = Bytes::from_static(b"custody");
    for _ in 0..3 {
        node.send(now, peer, 16, payload.clone()).expect("accepted");
    }
    drain(&mut node);
    script::send(&mut node, now, conn, &Message::Ack { count: 3, passed: 0 });
    assert!(node.holds_our_copies(peer));
    node.leaf.remove(peer);
    node.table.remove(peer);
    node.hood.remove(peer);
    assert!(!node.in_tables(peer), "out of every table, still holding our copies");
    // From now on it is silent: its connection stays open, nothing comes back, dials to it
    // are never answered.
    let bound = node.custody_hold() + node.cfg.probing_time() + node.cfg.heartbeat_interval;
    let end = now + node.custody_give_up() * 6;
    let (mut delivered_at, mut probes) = (Vec::new(), 0);
    while let Some(t) = node.poll_timeout().filter(|&t| t <= end) {
        node.handle_timeout(t);
        let out = drain(&mut node);
        probes += script::messages(&out, conn).iter().filter(|m| matches!(m, Message::Ping { .. })).count();
        probes += script::connects(&out).len();
        delivered_at.extend(out.iter().filter(|o| matches!(o, Output::Deliver(d) if d.payload == payload)).map(|_| t));
    }
    assert!(probes > 0, "the custodian was never probed");
    assert_eq!(delivered_at.len(), 3, "our copies were not routed again");
    assert!(delivered_at.iter().all(|&t| t - now <= bound), "routed again at {delivered_at:?}, bound {bound:?}");
}
