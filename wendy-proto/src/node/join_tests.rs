//! Tests of the join protocol: join requests routed round unreachable hops, retries.
use std::net::SocketAddr;

use super::*;
use crate::config::Config;

/// A join retry also asks the node our tables name closest to us, which a ring's answers
/// named to us: its request counts that as a hop, so a ring of one the ring wrongly
/// remembers refuses it rather than answer as the root (see `Node::on_message`).
#[test]
fn a_retry_through_a_learned_node_counts_as_a_hop() {
    let addr = |b: u8| SocketAddr::from(([10, 0, 0, b], 7000));
    let cfg = Config::with_trusted_id(NodeId::from_u128(1 << 127), addr(1)).insecure_plaintext();
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    node.state = State::Joining { bootstraps: thin_vec::thin_vec![addr(9)], attempt: 1, near: None };
    let learned = NodeInfo::new(NodeId::from_u128((1 << 127) + 5), addr(2));
    node.learn(Instant::ZERO, learned.clone(), false);
    node.join_timer(Instant::ZERO);
    let sent: Vec<(SocketAddr, &Message)> = node
        .conns
        .values()
        .filter_map(|c| c.io.as_ref().map(|io| (c.addr(), io)))
        .flat_map(|(a, io)| io.pending.iter().map(move |m| (a, m)))
        .collect();
    let hops_to = |a: SocketAddr| {
        sent.iter().find_map(|(to, m)| match m {
            Message::JoinRequest { hops, .. } if *to == a => Some(*hops),
            _ => None,
        })
    };
    assert_eq!(hops_to(addr(9)), Some(0), "the bootstrap, by its address: {sent:?}");
    assert_eq!(hops_to(learned.global), Some(1), "the learned node, through the tables: {sent:?}");
}

/// A join request whose next hop cannot be reached goes to the next best hop, once, and
/// the joiner is not sent our rows again (the regression of 18 of 28 failed joins at a
/// 5-minute median session, see [`Node::reroute_join`]).
#[test]
fn a_join_request_whose_hop_is_unreachable_goes_round_it() {
    let addr = |b: u8| SocketAddr::from(([10, 0, 0, b], 7000));
    let me = 1u128 << 127;
    let cfg = Config::with_trusted_id(NodeId::from_u128(me), addr(1)).insecure_plaintext();
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    node.state = State::Ready;
    // `a` is the closest to the joiner, then `b`; both share a longer prefix with it than we do.
    let (a, b) =
        (NodeInfo::new(NodeId::from_u128(me + 0x11), addr(2)), NodeInfo::new(NodeId::from_u128(me + 0x14), addr(3)));
    node.learn(Instant::ZERO, a.clone(), true);
    node.learn(Instant::ZERO, b.clone(), true);
    let joiner = NodeInfo::new(NodeId::from_u128(me + 0x12), addr(4));
    // What is queued to `to` (the probe of a peer that could not be reached aside).
    let queued = |node: &Node, to: SocketAddr| -> Vec<Message> {
        node.conns
            .values()
            .filter(|c| c.addr() == to)
            .filter_map(|c| c.io.as_ref())
            .flat_map(|io| io.pending.iter().cloned())
            .filter(|m| !matches!(m, Message::Ping { .. }))
            .collect()
    };
    let now = Instant::from_secs(1);
    node.route_join(now, joiner.clone(), 0, None);
    assert!(matches!(queued(&node, a.global)[..], [Message::JoinRequest { hops: 1, .. }]), "to `a`, the closest");
    assert!(matches!(queued(&node, joiner.global)[..], [Message::JoinState { leaves: None, .. }]), "our rows");
    let to_a = node.conns.iter().find(|(_, c)| c.addr() == a.global).map(|(&k, _)| k).expect("dialled `a`");
    node.conn_failed(now, to_a);
    assert!(queued(&node, a.global).is_empty(), "not `a` again: {:?}", queued(&node, a.global));
    assert!(matches!(queued(&node, b.global)[..], [Message::JoinRequest { hops: 2, .. }]), "to `b`, the next best");
    assert_eq!(queued(&node, joiner.global).len(), 1, "the joiner has our rows already");
    // `b` cannot be reached either: we are the root now, and the joiner gets our leaf set.
    let to_b = node.conns.iter().find(|(_, c)| c.addr() == b.global).map(|(&k, _)| k).expect("dialled `b`");
    node.conn_failed(now, to_b);
    assert!(queued(&node, a.global).is_empty() && queued(&node, b.global).is_empty(), "each dead hop met once");
    let to_joiner = queued(&node, joiner.global);
    assert!(matches!(&to_joiner[..], [_, Message::JoinState { leaves: Some(_), .. }]), "{to_joiner:?}");
}

/// A join request has no per-hop acknowledgement: a next hop we have not heard from for a
/// heartbeat interval is probed as the request goes to it, and suspected if the probe goes
/// unanswered for `probe_timeout`, so that a dead root is found within seconds and the
/// joiner's next attempt goes round it. One heard from lately is not probed, and one that
/// answers is not suspected.
#[test]
fn a_join_request_probes_a_next_hop_silent_for_a_heartbeat_interval() {
    let addr = |b: u8| SocketAddr::from(([10, 0, 0, b], 7000));
    let me = 1u128 << 127;
    let cfg = Config::with_trusted_id(NodeId::from_u128(me), addr(1)).insecure_plaintext();
    let (quiet, timeout) = (cfg.heartbeat_interval, cfg.probe_timeout);
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    node.state = State::Ready;
    let root = NodeInfo::new(NodeId::from_u128(me + 0x11), addr(2));
    node.learn(Instant::ZERO, root.clone(), true);
    let pings = |node: &Node| {
        node.conns
            .values()
            .filter(|c| c.addr() == root.global)
            .filter_map(|c| c.io.as_ref())
            .flat_map(|io| io.pending.iter())
            .filter(|m| matches!(m, Message::Ping { .. }))
            .count()
    };
    node.peers.get_mut(&root.id).expect("learned").set_heard(Instant::ZERO);
    let joiner = |n: u128| NodeInfo::new(NodeId::from_u128(me + n), addr(3));
    // Heard from a heartbeat interval ago: not probed.
    node.route_join(Instant::ZERO + quiet, joiner(0x12), 1, None);
    assert_eq!(pings(&node), 0);
    // Silent for longer: probed with the request, not suspected yet.
    let later = Instant::ZERO + quiet * 2;
    node.route_join(later, joiner(0x13), 1, None);
    assert_eq!(pings(&node), 1);
    assert!(node.peers[&root.id].suspected().is_none());
    // Another request while the probe is out adds none.
    node.route_join(later, joiner(0x14), 1, None);
    assert_eq!(pings(&node), 1);
    // Unanswered for `probe_timeout`: a suspect, probed again.
    let due = node.peers[&root.id].timer.expect("watched");
    assert_eq!(due, later + timeout);
    node.peer_timer(due, root.id);
    assert_eq!(node.peers[&root.id].suspected(), Some(due));
    assert_eq!(pings(&node), 2);
    // A hop that answers is not suspected.
    let mut node2 =
        Node::new(Config::with_trusted_id(NodeId::from_u128(me), addr(1)).insecure_plaintext(), Instant::ZERO)
            .expect("valid config");
    node2.state = State::Ready;
    node2.learn(Instant::ZERO, root.clone(), true);
    node2.route_join(later, joiner(0x13), 1, None);
    let (seq, _) = node2.peers[&root.id].ping().expect("probed");
    node2.heard(later, root.id, &Message::Pong { seq, ready: true });
    node2.measure(later, root.id, seq);
    let due = node2.peers[&root.id].timer.expect("watched");
    node2.peer_timer(due, root.id);
    assert!(node2.peers[&root.id].suspected().is_none(), "it answered");
}
