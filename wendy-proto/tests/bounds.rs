//! Bounds a hostile peer cannot exceed (issue 5), each checked through the public API: frame
//! size, entries per state message, pending messages per peer and per node, handshake attempts
//! per connection, and nothing from an unauthenticated peer reaching the tables.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::harness::script::{self, addr, closed, drain, errors, hello, info, rejections, table_members};
use wendy_proto::wire::{self, Message, Route, WireError, MAX_ENTRIES};
use wendy_proto::{Config, ConnId, Instant, Node, NodeError, NodeId, NodeInfo, Output, RejectReason, SharedSecret};

const ME: u128 = 1 << 127;

/// A node in plaintext mode, so that the test can play its peers by hand (the same bounds with
/// encryption are in `secure.rs`).
fn node_with(cfg: impl FnOnce(&mut Config)) -> Node {
    let mut c = Config::with_trusted_id(NodeId::from_u128(ME), addr(255, 1)).insecure_plaintext();
    cfg(&mut c);
    Node::new(c, NOW).expect("valid config")
}

const NOW: Instant = Instant::from_secs(1);

fn route(key: NodeId, i: u8) -> Message {
    Message::Route(Route {
        key,
        purpose: 16,
        origin: NodeId::from_u128(42),
        hops: 1,
        seq: u64::from(i),
        payload: Bytes::from(vec![i; 8]),
    })
}

fn queue_full(out: &[Output]) -> usize {
    errors(out).iter().filter(|e| matches!(e, NodeError::QueueFull { .. })).count()
}

// ----- frame size -----------------------------------------------------------------------------

#[test]
fn frame_size_is_checked_on_the_prefix_before_buffering() {
    let mut node = node_with(|c| c.max_frame_size = 4096);
    let peer = info(ME + 1, 1, 1);
    let conn = script::authed(&mut node, NOW, &peer);
    // A prefix of one byte more than the maximum, then part of its body: refused at once.
    let mut bytes = 4097u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 100]);
    node.handle_data(NOW, conn, &bytes);
    let out = drain(&mut node);
    assert!(closed(&out, conn));
    assert!(matches!(
        errors(&out)[..],
        [NodeError::Decode { error: WireError::FrameTooLarge { len: 4097, max: 4096 }, .. }]
    ));
    assert_eq!(node.stats().decode_errors, 1);
    // The largest frame is accepted: a Direct whose payload fills the body exactly.
    let conn = script::authed(&mut node, NOW, &info(ME + 2, 1, 2));
    let direct = |n: usize| {
        Message::Direct(wire::Direct {
            purpose: 16,
            origin: NodeId::from_u128(ME + 2),
            payload: Bytes::from(vec![1; n]),
        })
    };
    let overhead = wire::encode(&direct(0)).len() - wire::LENGTH_PREFIX;
    let out = script::send(&mut node, NOW, conn, &direct(4096 - overhead));
    assert!(!closed(&out, conn));
    assert!(out.iter().any(|o| matches!(o, Output::Deliver(d) if d.payload.len() == 4096 - overhead)));
    let out = script::send(&mut node, NOW, conn, &direct(4097 - overhead));
    assert!(closed(&out, conn));
}

#[test]
fn node_keeps_working_after_bad_bytes() {
    let mut node = node_with(|_| {});
    let bad = script::authed(&mut node, NOW, &info(ME + 1, 1, 1));
    node.handle_data(NOW, bad, &[0, 0, 0, 2, 9, 9]);
    let out = drain(&mut node);
    assert!(closed(&out, bad));
    assert!(matches!(errors(&out)[..], [NodeError::Decode { error: WireError::Version(9), .. }]));
    // Data on the closed connection is ignored; another peer is served.
    node.handle_data(NOW, bad, &wire::encode(&Message::Ping { seq: 1 }));
    assert!(drain(&mut node).is_empty());
    let good = script::authed(&mut node, NOW, &info(ME + 2, 1, 2));
    let out = script::send(&mut node, NOW, good, &Message::Ping { seq: 7 });
    assert!(out.iter().any(|o| matches!(o, Output::Transmit { conn, .. } if *conn == good)));
}

// ----- entries per state message --------------------------------------------------------------

#[test]
fn state_messages_carry_at_most_max_entries() {
    let mut node = node_with(|_| {});
    let conn = script::authed(&mut node, NOW, &info(ME + 1, 1, 1));
    let many: Vec<NodeInfo> = (0..=MAX_ENTRIES as u128).map(|i| info(ME + 1000 + i, 2, 1)).collect();
    for msg in [
        Message::LeafSet { leaves: many.clone() },
        Message::Row { row: 0, entries: many.clone() },
        Message::Welcome { seq: 1, ready: true, leaves: many.clone() },
        Message::Heartbeat { seq: 1, leaves: many.clone() },
        Message::JoinState { rows: many.clone(), hood: Vec::new(), leaves: None },
        Message::JoinState { rows: Vec::new(), hood: many.clone(), leaves: None },
        Message::JoinState { rows: Vec::new(), hood: Vec::new(), leaves: Some(many.clone()) },
    ] {
        assert_eq!(wire::decode_frame(wire::encode(&msg), wire::DEFAULT_MAX_FRAME), Err(WireError::OutOfBounds));
    }
    let before = table_members(&node);
    let out = script::send(&mut node, NOW, conn, &Message::LeafSet { leaves: many.clone() });
    assert!(closed(&out, conn));
    assert_eq!(table_members(&node), before, "nothing from an oversized message is learned");
    // Exactly MAX_ENTRIES is accepted.
    let conn = script::authed(&mut node, NOW, &info(ME + 2, 1, 2));
    let out = script::send(&mut node, NOW, conn, &Message::LeafSet { leaves: many[..MAX_ENTRIES].to_vec() });
    assert!(!closed(&out, conn));
    assert!(node.leaf_set().len() <= node.config().leaf_set_size);
}

// ----- pending messages per peer and per node -------------------------------------------------

/// A ready node that knows `n` peers (from a LeafSet sent by `relay`) but has no connection to
/// them: whatever it forwards to them waits in their queues.
fn node_knowing(n: u8, cfg: impl FnOnce(&mut Config)) -> (Node, ConnId, Vec<NodeInfo>) {
    let mut node = node_with(cfg);
    let relay = info(ME - (1 << 100), 1, 1);
    let conn = script::authed(&mut node, NOW, &relay);
    // The relay joins through us: we are a ring of two, and learn what it tells us.
    script::send(&mut node, NOW, conn, &Message::Announce { seq: 1 });
    let targets: Vec<NodeInfo> = (1..=n).map(|i| info(ME + (u128::from(i) << 90), 3, i)).collect();
    script::send(&mut node, NOW, conn, &Message::LeafSet { leaves: targets.clone() });
    (node, conn, targets)
}

#[test]
fn pending_messages_per_peer_are_bounded() {
    let (mut node, relay, targets) = node_knowing(1, |c| {
        c.max_pending_per_peer = 4;
        c.max_pending_total = 100;
    });
    // The node's own probe of the peer it heard of may wait in the queue already.
    let before = node.pending_messages();
    for i in 0..50 {
        let out = script::send(&mut node, NOW, relay, &route(targets[0].id, i));
        assert_eq!(queue_full(&out), 0, "a forwarded message is reported at its origin, not here");
        assert!(node.pending_messages() <= 4);
    }
    assert_eq!(node.pending_messages(), 4);
    // The rest were bounced towards their origin, as undeliverable.
    assert_eq!(node.stats().undeliverable, 50 - (4 - before) as u64);
    // The application is told to back off instead.
    let r = node.send_to(NOW, wendy_proto::Target::Node(targets[0].id), 16, Bytes::new());
    assert_eq!(r, Err(wendy_proto::CommandError::Backpressure));
}

#[test]
fn pending_messages_per_node_are_bounded() {
    let (mut node, relay, targets) = node_knowing(8, |c| {
        c.max_pending_per_peer = 4;
        c.max_pending_total = 10;
    });
    for i in 0..20 {
        for t in &targets {
            script::send(&mut node, NOW, relay, &route(t.id, i));
            assert!(node.pending_messages() <= 10);
        }
    }
    assert_eq!(node.pending_messages(), 10);
}

#[test]
fn messages_held_while_joining_are_bounded() {
    let mut node = node_with(|c| c.max_pending_total = 5);
    node.join(NOW, &[addr(9, 9)]).unwrap();
    drain(&mut node);
    // A peer dials the joining node and routes towards keys the node would be root for.
    let conn = script::authed(&mut node, NOW, &info(ME + (1 << 120), 1, 1));
    for i in 0..40 {
        script::send(&mut node, NOW, conn, &route(NodeId::from_u128(ME + u128::from(i)), i));
        assert!(node.pending_messages() <= 5);
    }
}

// ----- handshake attempts per connection ------------------------------------------------------

#[test]
fn one_handshake_attempt_per_connection() {
    let mut node = node_with(|c| c.credentials = Some(Arc::new(SharedSecret::new("s3cret"))));
    let peer = info(ME + 1, 1, 1);
    // A second Hello instead of Auth: closed.
    let conn = node.handle_accepted(NOW, peer.global);
    script::send(&mut node, NOW, conn, &hello(&peer));
    let out = script::send(&mut node, NOW, conn, &hello(&peer));
    assert!(closed(&out, conn));
    // A wrong proof: rejected and closed; a retry on the same connection is ignored.
    let conn = node.handle_accepted(NOW, peer.global);
    script::send(&mut node, NOW, conn, &hello(&peer));
    let out = script::send(&mut node, NOW, conn, &Message::Auth { proof: vec![0; 32], probe: None });
    assert_eq!(rejections(&out), [RejectReason::BadCredentials]);
    assert!(closed(&out, conn));
    assert!(script::send(&mut node, NOW, conn, &Message::Auth { proof: vec![1; 32], probe: None }).is_empty());
    // Claiming our own id: rejected.
    let conn = node.handle_accepted(NOW, peer.global);
    let me = node.info().clone();
    let out = script::send(&mut node, NOW, conn, &hello(&me));
    assert_eq!(rejections(&out), [RejectReason::SelfId]);
    // A handshake that never completes is closed after connect_timeout.
    let conn = node.handle_accepted(NOW, peer.global);
    script::send(&mut node, NOW, conn, &hello(&peer));
    let later = NOW + node.config().connect_timeout + Duration::from_secs(1);
    node.handle_timeout(later);
    drain(&mut node);
    assert_eq!(node.connection_count(), 0);
    // (That the driver is also told to close it is `fuzz_regressions::stalled_handshake_is_closed`.)
    let _ = conn;
    assert!(table_members(&node).is_empty());
}

// ----- nothing from an unauthenticated peer reaches the tables --------------------------------

#[test]
fn unauthenticated_peers_never_reach_the_tables() {
    let mut node = node_with(|c| c.credentials = Some(Arc::new(SharedSecret::new("s3cret"))));
    let peer = info(ME + 1, 1, 1);
    let others: Vec<NodeInfo> = (2..6).map(|i| info(ME + i, 2, i as u8)).collect();
    let state = [
        Message::LeafSet { leaves: others.clone() },
        Message::JoinState { rows: others.clone(), hood: others.clone(), leaves: Some(others.clone()) },
        Message::Welcome { seq: 0, ready: true, leaves: others.clone() },
        Message::Row { row: 0, entries: others.clone() },
        Message::Ping { seq: 1 },
        Message::Announce { seq: 1 },
        Message::JoinRequest { joiner: others[0].clone(), hops: 0 },
    ];
    for msg in &state {
        // Before any Hello.
        let conn = node.handle_accepted(NOW, peer.global);
        let out = script::send(&mut node, NOW, conn, msg);
        assert!(closed(&out, conn), "{msg:?} before Hello");
        // After Hello, before Auth.
        let conn = node.handle_accepted(NOW, peer.global);
        script::send(&mut node, NOW, conn, &hello(&peer));
        let out = script::send(&mut node, NOW, conn, msg);
        assert!(closed(&out, conn), "{msg:?} before Auth");
        // After a failed Auth.
        let conn = node.handle_accepted(NOW, peer.global);
        script::send(&mut node, NOW, conn, &hello(&peer));
        script::send(&mut node, NOW, conn, &Message::Auth { proof: b"forged".to_vec(), probe: None });
        script::send(&mut node, NOW, conn, msg);
        assert!(table_members(&node).is_empty(), "{msg:?} reached the tables");
    }
    assert!(table_members(&node).is_empty());
    assert!(node.peer(peer.id).is_none());
    assert!(node.is_ready() && !node.is_joining());
}
