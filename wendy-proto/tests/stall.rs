//! A node that was not run for a while (its process stopped, its machine suspended): once the
//! silence is long enough for its peers to have declared it failed and routed what they sent
//! it elsewhere, what its connections hold is stale, and it closes them unread rather than
//! deliver a message a second time.

use std::time::Duration;

use bytes::Bytes;
use wendy_proto::harness::script::{self, addr, drain, info};
use wendy_proto::wire::{Message, Route};
use wendy_proto::{Config, Instant, Node, NodeId, Output};

const ME: u128 = 1 << 127;
const NOW: Instant = Instant::from_secs(1);

fn route(seq: u64) -> Message {
    // Towards our own id: delivered here whatever the peer's id.
    Message::Route(Route {
        key: NodeId::from_u128(ME),
        purpose: 16,
        origin: NodeId::from_u128(42),
        hops: 1,
        seq,
        payload: Bytes::from_static(b"stale?"),
    })
}

fn delivered(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Deliver(_))).count()
}

#[test]
fn a_node_not_run_for_longer_than_its_peers_wait_closes_its_connections_unread() {
    let cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(255, 1)).insecure_plaintext();
    // The earliest a sender declares us failed: its shortest ack timeout, then its probes.
    let declared = cfg.ack_timeout_min + cfg.probing_time();
    let beat = cfg.heartbeat_interval;
    let mut node = Node::new(cfg, NOW).expect("valid config");
    assert!(node.is_ready(), "a ring of one is in the ring");
    let conn = script::authed(&mut node, NOW, &info(ME + 1, 1, 1));
    drain(&mut node);
    // Run on time (every heartbeat), the node keeps its connection and delivers.
    let mut t = NOW;
    for seq in 0..5 {
        t += beat;
        node.handle_timeout(t);
        let out = script::send(&mut node, t, conn, &route(seq));
        assert!(!script::closed(&out, conn), "closed after {seq} heartbeats on time");
        assert_eq!(delivered(&out), 1);
    }
    // Then it is not run for longer than its peers wait: what arrives now may have been
    // rerouted and delivered elsewhere already. The connection is closed, nothing delivered.
    let t = t + declared.max(2 * beat) + Duration::from_millis(1);
    let out = script::send(&mut node, t, conn, &route(99));
    assert!(script::closed(&out, conn), "the stale connection is still open");
    assert_eq!(delivered(&out), 0, "a stale message was delivered");
    assert_eq!(node.connection_count(), 0);
}
