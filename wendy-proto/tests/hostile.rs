//! Misuse and hostile input: typed errors or events, and the node keeps serving.

use core::time::Duration;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use wendy_proto::harness::script::{closed, drain, errors, handshake, messages, rejections};
use wendy_proto::harness::Harness;
use wendy_proto::wire::{self, Message, Route};
use wendy_proto::{
    CommandError, Config, Event, Instant, Node, NodeError, NodeId, NodeInfo, Output, RejectReason, SharedSecret, Target,
};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

/// A node in plaintext mode: these tests forge and replay messages by hand (the encrypted
/// transport's own hostile tests are in `secure.rs`).
fn node(n: u128, port: u16, secret: Option<&str>) -> Node {
    let mut c = Config::with_trusted_id(NodeId::from_u128(n << 100), addr(port)).insecure_plaintext();
    if let Some(s) = secret {
        c = c.with_credentials(Arc::new(SharedSecret::new(s)));
    }
    Node::new(c, Instant::ZERO).expect("valid config")
}

#[test]
fn reserved_purposes_are_refused() {
    let mut a = node(1, 1, None);
    let now = Instant::ZERO;
    let key = NodeId::from_u128(5);
    assert_eq!(a.send(now, key, 15, Bytes::new()), Err(CommandError::ReservedPurpose(15)));
    assert_eq!(a.send(now, key, 0, Bytes::new()), Err(CommandError::ReservedPurpose(0)));
    assert_eq!(a.send_to(now, Target::Addr(addr(9)), 3, Bytes::new()), Err(CommandError::ReservedPurpose(3)));
    assert!(a.send(now, key, 16, Bytes::new()).is_ok());
    let big = Bytes::from(vec![0u8; 2 << 20]);
    assert!(matches!(a.send(now, key, 16, big), Err(CommandError::PayloadTooLarge { .. })));
    assert_eq!(a.join(now, &[addr(1)]), Err(CommandError::SelfBootstrap));
}

#[test]
fn a_reserved_purpose_from_the_network_closes_the_connection() {
    let now = Instant::ZERO;
    let mut a = node(1, 1, None);
    let mut b = node(2, 2, None);
    a.join(now, &[addr(2)]).unwrap();
    let conn_b = handshake(&mut a, &mut b, now).conn_b;
    let bad = Message::Route(Route {
        key: NodeId::from_u128(1),
        purpose: 3,
        origin: a.id(),
        hops: 0,
        seq: 0,
        payload: Bytes::new(),
    });
    b.handle_data(now, conn_b, &wire::encode(&bad));
    let outs = drain(&mut b);
    assert!(closed(&outs, conn_b));
    assert!(matches!(errors(&outs)[..], [NodeError::Protocol { .. }]));
    assert!(!outs.iter().any(|o| matches!(o, Output::Deliver(_))));
}

#[test]
fn bad_credentials_are_rejected_and_never_reach_the_tables() {
    let mut h = Harness::new(3);
    h.configure = Box::new(|id, a| {
        let secret = if a == Harness::addr_of(2) { "intruder" } else { "cluster" };
        let mut c = Config::with_trusted_id(id, a).with_credentials(Arc::new(SharedSecret::new(secret)));
        c.join_attempts = 2;
        c.join_timeout = Duration::from_secs(2);
        c
    });
    for i in 0..3u128 {
        h.add_node(NodeId::from_u128((i + 1) << 120));
    }
    h.join(1, 0);
    assert!(h.run_until_ready(Duration::from_secs(10)));
    h.join(2, 0);
    h.run_for(Duration::from_secs(10));
    let intruder = h.node(2).id();
    for i in 0..2 {
        let n = h.node(i);
        assert!(!n.leaf_set().contains(intruder) && !n.routing_table().contains(intruder));
        assert!(n.peer(intruder).is_none());
    }
    assert!(h.node(2).leaf_set().is_empty(), "the intruder learned nothing");
    // The intruder dialled: the pre-shared key enters the handshake at its last message, so
    // the member finds the keys differ, refuses, and tells the intruder why.
    let count = |h: &Harness, who: usize, by_peer: bool| {
        h.events()
            .iter()
            .filter(|(i, _, e)| {
                *i == who
                    && match e {
                        Event::PeerRejected { reason, .. } => !by_peer && *reason == RejectReason::BadCredentials,
                        Event::RejectedByPeer { reason, .. } => by_peer && *reason == RejectReason::BadCredentials,
                        _ => false,
                    }
            })
            .count()
    };
    assert!(count(&h, 0, false) >= 1);
    assert!(count(&h, 2, true) >= 1);
    assert!(h.events().iter().any(|(i, _, e)| *i == 2 && matches!(e, Event::Error(NodeError::JoinFailed { .. }))));
    // A member dialling the intruder rejects it, and sends it nothing.
    let now = h.now();
    h.node_mut(0).send_to(now, Target::Addr(Harness::addr_of(2)), 16, Bytes::from_static(b"secret")).unwrap();
    h.drain(0);
    h.run_for(Duration::from_secs(1));
    // The intruder, unable to complete the handshake, refuses; what the member sent at once
    // was sealed with keys that depend on the pre-shared key, so it read nothing.
    assert!(count(&h, 2, false) >= 1);
    assert!(count(&h, 0, true) >= 1);
    assert!(h.deliveries().is_empty(), "the intruder received nothing");
    // The members still work together.
    assert!(h.node(0).leaf_set().contains(h.node(1).id()));
}

#[test]
fn a_replayed_handshake_is_rejected() {
    let now = Instant::ZERO;
    let mut a = node(1, 1, Some("s3cret"));
    let mut b = node(2, 2, Some("s3cret"));
    a.join(now, &[addr(2)]).unwrap();
    let hs = handshake(&mut a, &mut b, now);
    assert!(rejections(&hs.b_outputs).is_empty(), "{:?}", hs.b_outputs);
    assert_eq!(b.stats().rejected_peers, 0);
    // An eavesdropper replays a's Hello and Auth on a new connection.
    let evil = b.handle_accepted(now, addr(66));
    b.handle_data(now, evil, &hs.a_frames[0]);
    b.handle_data(now, evil, &hs.a_frames[1]);
    let outs = drain(&mut b);
    assert_eq!(rejections(&outs), [RejectReason::BadCredentials]);
    assert!(closed(&outs, evil));
    assert_eq!(b.stats().rejected_peers, 1);
}

#[test]
fn garbage_truncated_and_oversized_frames_close_only_their_connection() {
    let now = Instant::ZERO;
    let mut b = node(2, 2, None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("bad version", vec![0, 0, 0, 2, 99, 0]),
        ("oversized", vec![0xff, 0xff, 0xff, 0xff, 1]),
        ("bad body", vec![0, 0, 0, 3, wire::PROTOCOL_VERSION, 0xff, 0xff]),
    ];
    for (what, bytes) in cases {
        let c = b.handle_accepted(now, addr(50));
        b.handle_data(now, c, &bytes);
        let outs = drain(&mut b);
        assert!(closed(&outs, c), "{what}: connection closed");
        assert!(matches!(errors(&outs)[..], [NodeError::Decode { .. }]), "{what}: {outs:?}");
    }
    assert_eq!(b.stats().decode_errors, 4);
    // A truncated frame followed by the peer closing is just a closed connection.
    let c = b.handle_accepted(now, addr(51));
    let hello = wire::encode(&Message::Hello { info: NodeInfo::new(NodeId::from_u128(9), addr(51)), nonce: [0; 16] });
    b.handle_data(now, c, &hello[..hello.len() - 2]);
    b.handle_closed(now, c);
    assert!(errors(&drain(&mut b)).iter().all(|e| matches!(e, NodeError::ConnectFailed { .. })));
    // A message before the handshake is a protocol error and reaches no table.
    let c = b.handle_accepted(now, addr(52));
    b.handle_data(now, c, &wire::encode(&Message::Announce { seq: 1 }));
    let outs = drain(&mut b);
    assert!(closed(&outs, c) && matches!(errors(&outs)[..], [NodeError::Protocol { .. }]));
    // A second Hello on one connection is refused.
    let c = b.handle_accepted(now, addr(53));
    b.handle_data(now, c, &hello);
    b.handle_data(now, c, &hello);
    let outs = drain(&mut b);
    assert!(closed(&outs, c));
    assert!(b.leaf_set().is_empty() && b.routing_table().is_empty());
    // The node still serves a legitimate joiner.
    let mut a = node(1, 1, None);
    a.join(now, &[addr(2)]).unwrap();
    let hs = handshake(&mut a, &mut b, now);
    // The joiner's first request is for the leaf set (nearest-node discovery).
    let answered_join = messages(&hs.b_outputs, hs.conn_b).iter().any(|m| matches!(m, Message::LeafSet { .. }));
    assert!(answered_join, "the node still answers a legitimate joiner");
}
