//! Tests of the connection record and of dial failures.
use super::*;
use core::mem::size_of;

#[test]
fn a_connection_record_is_120_bytes_and_keeps_its_address_and_ids() {
    // The address compacted from 32 bytes to 16, the phase from 24 to 16 (its nonce boxed),
    // one id for the node dialled and the node authenticated, its roles in spare bits: within
    // an allocator's 128-byte class.
    assert_eq!(size_of::<SocketAddr>(), 32);
    assert_eq!(size_of::<ConnAddr>(), 16);
    assert_eq!(size_of::<Phase>(), 16);
    assert_eq!(size_of::<Conn>(), 120);
    for addr in ["10.1.2.3:4000", "[2001:db8::1]:7000"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let c = Conn::new(addr, Phase::AwaitHello, Instant::ZERO, None, 1 << 16);
        assert_eq!(c.addr(), addr);
        assert_eq!(c.addr_heap_bytes(), if addr.is_ipv4() { 0 } else { size_of::<SocketAddr>() });
    }
    let addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let mut c = Conn::new(addr, Phase::AwaitHello, Instant::ZERO, None, 1 << 16);
    assert_eq!((c.expected(), c.peer()), (None, None));
    c.set_peer(NodeId::default());
    assert_eq!((c.expected(), c.peer()), (None, Some(NodeId::default())), "the zero id is an id");
    let mut d = Conn::new(addr, Phase::AwaitHello, Instant::ZERO, Some(NodeId::from_u128(5)), 1 << 16);
    assert_eq!((d.expected(), d.peer()), (Some(NodeId::from_u128(5)), None));
    d.set_peer(NodeId::from_u128(5));
    assert_eq!((d.expected(), d.peer()), (Some(NodeId::from_u128(5)), Some(NodeId::from_u128(5))));
}

/// A node in none of our tables that we could not reach once is ignored for
/// `suspect_timeout`, not for a declared failure's `detection_time() * 2`: hearsay of it is
/// taken again after that, and it can become a leaf-set member.
#[test]
fn one_failed_dial_keeps_a_node_out_for_suspect_timeout_only() {
    let now = Instant::from_secs(1);
    let addr = |b: u8| SocketAddr::from(([10, 0, 0, b], 7000));
    let cfg = crate::Config::with_trusted_id(NodeId::from_u128(1 << 127), addr(1)).insecure_plaintext();
    let mut n = Node::new(cfg, now).unwrap();
    n.state = State::Ready;
    let x = crate::NodeInfo::new(NodeId::from_u128((1 << 127) + 5), addr(2));
    // Known, in no table (a candidate, a discovery answer...), dialled, and unreachable.
    n.peers.insert(x.id, Box::new(crate::node::Peer::new(x.clone(), now)));
    let conn = n.dial(now, x.global, Some(x.id)).unwrap();
    n.handle_connect_failed(now, conn);
    let until = n.failed.get(&x.id).copied();
    assert_eq!(until, Some(now + n.cfg.suspect_timeout), "one failed dial is no declared failure");
    assert!(until < Some(now + n.cfg.detection_time()));
    n.learn(now, x.clone(), false);
    assert!(!n.leaf.contains(x.id), "hearsay is ignored meanwhile");
    // After it, the next housekeeping forgets the record, and hearsay of it is taken.
    let later = now + n.cfg.suspect_timeout + n.cfg.heartbeat_interval;
    n.handle_timeout(later);
    n.learn(later, x.clone(), false);
    assert!(n.leaf.contains(x.id), "taken again (and probed before it is trusted)");
}

/// A graceful close costs one frame: the side that receives `Closing` acknowledges what it
/// read and closes its end without answering, and the side that sent it takes that close for
/// the answer (no suspicion of a peer that merely closed an idle connection).
#[test]
fn a_graceful_close_is_one_closing_frame_and_the_close_in_answer() {
    use crate::harness::script::{self, addr, info};
    let now = Instant::from_secs(1);
    let cfg = crate::Config::with_trusted_id(NodeId::from_u128(1 << 127), addr(255, 1)).insecure_plaintext();
    let mut n = Node::new(cfg, now).unwrap();
    let peer = info((1 << 127) + 5, 2, 1);
    let conn = script::authed(&mut n, now, &peer);
    script::send(&mut n, now, conn, &Message::Announce { seq: 1 });
    script::drain(&mut n);
    let out = script::send(&mut n, now, conn, &Message::Closing);
    assert!(!script::messages(&out, conn).contains(&Message::Closing), "no `Closing` in answer");
    assert!(script::closed(&out, conn), "the close is the answer");
    assert!(!n.conns.contains_key(&conn));
    // Now we close one that carried word from our leaf-set member a while ago (a close
    // without `Closing` there would make us probe the member at once, `conn_lost`).
    let conn = script::authed(&mut n, now, &peer);
    let heard = now + n.cfg.connect_timeout;
    script::send(&mut n, heard, conn, &Message::Ping { seq: 2 });
    script::drain(&mut n);
    assert!(n.is_ready() && n.leaf.contains(peer.id));
    let later = now + n.cfg.connect_timeout * 3;
    n.start_closing(later, conn);
    let out = script::drain(&mut n);
    assert_eq!(script::messages(&out, conn), [Message::Closing]);
    n.handle_closed(later, conn);
    assert!(!n.conns.contains_key(&conn), "its close answered our `Closing`");
    assert!(n.peers[&peer.id].suspected().is_none(), "a graceful close suspects nobody");
    assert!(!script::closed(&script::drain(&mut n), conn), "the driver closed it already");
}
