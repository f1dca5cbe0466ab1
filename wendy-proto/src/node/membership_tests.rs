//! Tests of the membership code: peer records, candidates, hearsay.
use super::*;
use crate::config::Config;
use std::net::SocketAddr;

#[test]
fn at_most_measured_memory_losers_are_remembered_and_they_expire() {
    let addr = SocketAddr::from(([10, 0, 0, 1], 7000));
    let cfg = Config::with_trusted_id(NodeId::from_u128(1), addr);
    let forget = cfg.table_probe_interval;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    for i in 0..(MEASURED_MEMORY as u128 + 36) {
        // Ids that differ in their first 64 bits, which `measured` knows them by.
        let id = NodeId::from_u128((100 + i) << 64);
        node.remember_measured(Instant::ZERO + core::time::Duration::from_secs(i as u64), id);
    }
    assert_eq!(node.measured.len(), MEASURED_MEMORY);
    // The soonest to expire went first: the newest are kept.
    assert!(node.measured.contains_key(&measured_key(NodeId::from_u128((100 + MEASURED_MEMORY as u128 + 35) << 64))));
    assert!(!node.measured.contains_key(&measured_key(NodeId::from_u128(100 << 64))));
    node.measured.retain(|_, until| *until > Instant::ZERO + forget + core::time::Duration::from_secs(200));
    assert!(node.measured.is_empty(), "all expire after table_probe_interval");
}

/// Our node (plaintext) with peer `a` in a routing-table cell at `a_proximity` (µs), the
/// connection to it, and a node `c` that contends for that cell, offered in a row we asked
/// `a` for.
fn with_a_candidate(a_proximity: u64) -> (Node, NodeId, ConnId) {
    let me = ME;
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(me), addr(1)).insecure_plaintext();
    // One leaf-set member a side, held by our two ring neighbours: `c` fits in no leaf set.
    cfg.leaf_set_size = 2;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    // `a` and `c` share their first digit unlike ours (row 1, column 1).
    let a = NodeInfo::new(NodeId::from_u128(me + (1 << 120)), addr(2));
    let c = NodeInfo::new(NodeId::from_u128(me + (1 << 120) + 5), addr(3));
    let neighbours =
        [NodeInfo::new(NodeId::from_u128(me + 1), addr(4)), NodeInfo::new(NodeId::from_u128(me - 1), addr(5))];
    let conn = announced(&mut node, &a);
    for who in &neighbours {
        announced(&mut node, who);
    }
    assert!(node.is_ready() && node.table.contains(a.id) && !node.leaf.contains(a.id));
    node.table.update_proximity(a.id, a_proximity);
    while node.poll_output().is_some() {}
    node.rows.asked = thin_vec::thin_vec![(a.id, 1)];
    node.handle_data(Instant::ZERO, conn, &crate::wire::encode(&Message::Row { row: 1, entries: vec![c.clone()] }));
    (node, c.id, conn)
}

/// `who` dials our plaintext node, authenticates and announces itself (so it is heard from
/// and, where it fits, in our tables): the connection.
fn announced(node: &mut Node, who: &NodeInfo) -> ConnId {
    let k = node.handle_accepted(Instant::ZERO, who.global);
    for msg in [
        Message::Hello { info: who.clone(), nonce: [3; crate::wire::NONCE_LEN] },
        Message::Auth { proof: Vec::new(), probe: None },
        Message::Announce { seq: 1 },
    ] {
        node.handle_data(Instant::ZERO, k, &crate::wire::encode(&msg));
    }
    k
}

/// What the node queued: the connections it dialled and closed, and the frames it sent
/// on each.
fn outputs(node: &mut Node) -> (Vec<ConnId>, Vec<ConnId>, Vec<ConnId>) {
    let (mut dialled, mut closed, mut sent) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(o) = node.poll_output() {
        match o {
            Output::Connect { conn, .. } => dialled.push(conn),
            Output::Close { conn } => closed.push(conn),
            Output::Transmit { conn, .. } => sent.push(conn),
            _ => {}
        }
    }
    (dialled, closed, sent)
}

/// Our id in these tests.
const ME: u128 = 1 << 127;

/// The address of host `b`.
fn addr(b: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, b], 7000))
}

/// Our node (plaintext, two leaf-set members a side) in a ring of five: `ME + 100`, `ME + 200`,
/// `ME - 1` and `ME - 2` (hosts 2 to 5) announced themselves to it, the clockwise ones far
/// off. Returns it drained, with their connections in that order.
fn ring_of_five() -> (Node, [ConnId; 4]) {
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    cfg.leaf_set_size = 4;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    let members = [ME + 100, ME + 200, ME - 1, ME - 2];
    let conns = core::array::from_fn(|i| {
        announced(&mut node, &NodeInfo::new(NodeId::from_u128(members[i]), addr(2 + i as u8)))
    });
    assert!(node.is_ready() && node.leaf.len() == 4);
    while node.poll_output().is_some() {}
    (node, conns)
}

#[test]
fn a_leaf_set_naming_many_nearer_nodes_dials_only_the_ones_that_stay() {
    let me = ME;
    let (mut node, [conn, ..]) = ring_of_five();
    // The member at +100 names nine nodes nearer to us, farthest first: each pushes the
    // previous one through the edge of our clockwise side, and only the nearest two stay
    // there (all nine contend for one routing-table cell, which the first keeps).
    let named: Vec<NodeId> = (1..10u128).rev().map(|i| NodeId::from_u128(me + 0x10 + i)).collect();
    let leaves = named.iter().enumerate().map(|(i, &id)| NodeInfo::new(id, addr(10 + i as u8))).collect();
    node.handle_data(Instant::ZERO, conn, &crate::wire::encode(&Message::LeafSet { leaves }));
    assert_eq!(node.leaf.cw(), vec![NodeId::from_u128(me + 0x11), NodeId::from_u128(me + 0x12)]);
    let kept: Vec<NodeId> = named.iter().copied().filter(|&id| node.in_tables(id)).collect();
    assert_eq!(kept.len(), 3, "two leaf-set members and a routing-table entry: {kept:?}");
    let (dialled, _, _) = outputs(&mut node);
    assert_eq!(dialled.len(), kept.len(), "a connection for each node that stayed, none for those that passed");
    for id in &kept {
        assert!(node.peers[id].ping().is_some(), "each is contacted before it is trusted");
    }
    for id in named.iter().filter(|id| !kept.contains(id)) {
        assert!(node.peers.get(id).is_none_or(|p| p.ping().is_none()), "{id:?} was not contacted");
    }
}

#[test]
fn a_candidate_without_a_connection_is_timed_by_its_set_up_alone() {
    let rtt = core::time::Duration::from_millis(20);
    // The holder of the cell was measured nearer: the candidate loses, and cost nothing
    // but a connection's set-up, closed unused.
    let (mut node, c, _) = with_a_candidate(1_000);
    let (dialled, _, _) = outputs(&mut node);
    assert_eq!(dialled.len(), 1, "the candidate is dialled");
    node.handle_connected(Instant::ZERO + rtt, dialled[0]);
    let (more, closed, sent) = outputs(&mut node);
    assert_eq!(closed, dialled, "the timing connection is closed once established");
    assert!(sent.is_empty() && more.is_empty(), "nothing sent: {sent:?}, {more:?}");
    assert!(!node.table.contains(c) && node.measured.contains_key(&measured_key(c)));
    // The holder is farther: the candidate takes the cell on its round trip, and is probed
    // before it is trusted, over the timing connection itself: its handshake goes on and
    // stands for the probe, where closing it and dialling again cost a second set-up.
    let (mut node, c, _) = with_a_candidate(100_000);
    let (dialled, _, _) = outputs(&mut node);
    node.handle_connected(Instant::ZERO + rtt, dialled[0]);
    let (more, closed, sent) = outputs(&mut node);
    assert!(more.is_empty() && closed.is_empty(), "no second connection, none closed: {more:?} {closed:?}");
    assert_eq!(sent, dialled, "the handshake starts on the timing connection");
    assert!(node.table.contains(c), "a nearer candidate takes the cell");
    assert_eq!(node.peers[&c].proximity(), 20_000);
    assert!(node.peers[&c].suspected().is_some(), "and is not trusted until it answers");
    assert!(node.peers[&c].ping().is_some(), "its probe awaits the answer");
    // The candidate's side of the handshake answers the probe: trusted, timed again from
    // the handshake's first message.
    let info = node.peers[&c].info(c);
    let ack = Message::HelloAck { info, nonce: [4; crate::wire::NONCE_LEN], proof: Vec::new(), ready: true };
    let later = Instant::ZERO + rtt + core::time::Duration::from_millis(30);
    node.handle_data(later, dialled[0], &crate::wire::encode(&ack));
    let (more, closed, sent) = outputs(&mut node);
    assert!(more.is_empty() && closed.is_empty());
    assert_eq!(sent, dialled, "our Auth, carrying the probe");
    assert!(node.peers[&c].suspected().is_none() && node.peers[&c].ping().is_none(), "the probe was answered");
    assert_eq!(node.peers[&c].proximity(), 30_000);
    assert!(node.table.contains(c));
}

#[test]
fn a_pushed_leaf_set_is_answered_only_when_it_misses_nodes_we_know() {
    let me = ME;
    let [cw1, cw2, ccw1, ccw2] = [me + 100, me + 200, me - 1, me - 2].map(NodeId::from_u128);
    let info = |id: NodeId, b: u8| NodeInfo::new(id, addr(b));
    let (mut node, [conn, _, ccw1_conn, _]) = ring_of_five();
    assert_eq!(node.leaf.cw().first(), Some(&cw1));
    let beat = |leaves: Vec<NodeInfo>| crate::wire::encode(&Message::Heartbeat { seq: 1, leaves });
    let answers = |node: &mut Node| {
        let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
        let sent = crate::harness::script::messages(&outs, conn);
        assert!(matches!(sent.first(), Some(Message::Pong { seq: 1, .. })), "a heartbeat is answered: {sent:?}");
        sent.into_iter().skip(1).collect::<Vec<Message>>()
    };
    // Our clockwise neighbour's leaf set as we see it (in a ring of five, the four others):
    // nothing to answer.
    let agreeing = vec![info(NodeId::from_u128(me), 1), info(ccw1, 4), info(ccw2, 5), info(cw2, 3)];
    node.handle_data(Instant::ZERO, conn, &beat(agreeing));
    assert_eq!(answers(&mut node), Vec::<Message>::new(), "a leaf set that agrees costs no more answer");
    // It lacks our nearest counter-clockwise member, which belongs in its leaf set: our own
    // leaf set goes back to it.
    node.handle_data(Instant::ZERO, conn, &beat(vec![info(NodeId::from_u128(me), 1), info(ccw2, 5), info(cw2, 3)]));
    let sent = answers(&mut node);
    assert!(
        matches!(sent.as_slice(), [Message::LeafSet { leaves }] if leaves.iter().any(|i| i.id == ccw1)),
        "answered with our leaf set: {sent:?}"
    );
    // It lacks us: answered too, and what it named was learned.
    let newcomer = NodeId::from_u128(me + 150);
    node.handle_data(Instant::ZERO, conn, &beat(vec![info(ccw1, 4), info(ccw2, 5), info(newcomer, 9)]));
    assert!(matches!(answers(&mut node).as_slice(), [Message::LeafSet { .. }]));
    assert!(node.leaf.contains(newcomer), "a pushed leaf set is learned from");
    // A heartbeat interval later, when we have not heard from our other members since. A
    // sender configured with one leaf-set member a side names only us and the newcomer: it
    // rightly lacks our nearest counter-clockwise member, which is answered but not probed.
    let later = Instant::ZERO + node.cfg.heartbeat_interval + core::time::Duration::from_secs(1);
    node.handle_data(later, conn, &beat(vec![info(NodeId::from_u128(me), 1), info(newcomer, 9)]));
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(crate::harness::script::messages(&outs, ccw1_conn).is_empty(), "beyond the sender's span: not probed");
    assert!(node.peers[&ccw1].suspected().is_none());
    // A sender with two a side that lacks it: besides the answer, we probe it (the sender
    // may have found it dead).
    let lacking = vec![info(NodeId::from_u128(me), 1), info(newcomer, 9), info(cw2, 3)];
    node.handle_data(later, conn, &beat(lacking));
    let outs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    let probed = crate::harness::script::messages(&outs, ccw1_conn);
    assert!(matches!(probed.as_slice(), [Message::Ping { .. }]), "the missing member is probed: {probed:?}");
    assert!(node.peers[&ccw1].suspected().is_some());
}

/// A leaf-set member that fails makes room for a node our routing table holds and the leaf
/// set had kept out only because nearer members filled it: it enters at once, before any
/// repair answer, so that the leaf set does not jump over a live node we know.
#[test]
fn a_known_node_that_now_fits_the_leaf_set_enters_it_when_a_member_fails() {
    let (mut node, _) = ring_of_five();
    let (cw1, cw2) = (NodeId::from_u128(ME + 100), NodeId::from_u128(ME + 200));
    let far = NodeInfo::new(NodeId::from_u128(ME + 300), addr(9));
    announced(&mut node, &far);
    assert!(node.table.contains(far.id) && !node.leaf.contains(far.id), "held by the routing table only");
    assert_eq!(node.leaf.cw(), [cw1, cw2]);
    node.peer_failed(Instant::from_secs(1), cw1);
    assert_eq!(node.leaf.cw(), [cw2, far.id], "the known node fills the gap");
}

/// Our node (plaintext, a leaf set of `leaf_set_size`) to which the nodes `ids` (hosts 20,
/// 21, ...) announced themselves, and their connections in that order.
fn announced_to(leaf_set_size: usize, ids: &[u128]) -> (Node, Vec<ConnId>) {
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    cfg.leaf_set_size = leaf_set_size;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    let conns = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| announced(&mut node, &NodeInfo::new(NodeId::from_u128(id), addr(20 + i as u8))))
        .collect();
    (node, conns)
}

/// Runs the node's timers up to `until`, draining its outputs: the frames it sent, decoded,
/// with the connection each went on. The peers on `live` answer every ping and heartbeat.
fn run_until(node: &mut Node, until: Instant, live: &[ConnId]) -> Vec<(ConnId, Message)> {
    let mut sent = Vec::new();
    while let Some(t) = node.poll_timeout().filter(|&t| t <= until) {
        node.handle_timeout(t);
        while let Some(o) = node.poll_output() {
            if let Output::Transmit { conn, data } = o {
                let msg = crate::wire::decode_frame(data, usize::MAX).expect("the node sends valid frames");
                if let (true, Message::Ping { seq } | Message::Heartbeat { seq, .. }) = (live.contains(&conn), &msg) {
                    let pong = Message::Pong { seq: *seq, ready: true };
                    node.handle_data(t, conn, &crate::wire::encode(&pong));
                }
                sent.push((conn, msg));
            }
        }
    }
    sent
}

#[test]
fn a_silent_neighbourhood_member_in_no_other_table_makes_room_and_costs_no_probe() {
    let (mut node, live) = announced_to(2, &[ME + 1, ME - 1]);
    let silence = node.cfg.table_probe_interval;
    // `a` holds a routing-table cell; `h`, measured near us, is only in the neighbourhood
    // set (its cell went to another node). Neither says a word after its announcement.
    let a = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(2));
    let h = NodeInfo::new(NodeId::from_u128(ME + (2 << 120)), addr(3));
    let a_conn = announced(&mut node, &a);
    let h_conn = announced(&mut node, &h);
    node.table.remove(h.id);
    node.hood.insert(h.id, 5_000);
    assert!(node.table.contains(a.id) && node.hood_only(h.id) && !node.hood_only(a.id));
    while node.poll_output().is_some() {}

    let sent = run_until(&mut node, Instant::ZERO + silence + core::time::Duration::from_secs(30), &live);
    let pinged = |conn: ConnId| sent.iter().any(|(c, m)| *c == conn && matches!(m, Message::Ping { .. }));
    assert!(pinged(a_conn), "a silent routing-table entry is probed");
    assert!(!pinged(h_conn), "a neighbourhood-only member is not");
    assert!(!node.hood.contains(h.id), "it left the neighbourhood set after table_probe_interval of silence");
    assert_eq!(node.leaf.len(), 2, "the neighbours answered");
}

/// Our node (plaintext, leaf set of 16) with a full leaf set of announced members, the
/// connection to each, in order: clockwise 1..=8 from us, then counter-clockwise 1..=8.
fn full_leaf_set() -> (Node, Vec<(NodeId, ConnId)>) {
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    cfg.leaf_set_size = 16;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    let mut members = Vec::new();
    for (i, id) in (1..=8u128).map(|i| ME + i).chain((1..=8u128).map(|i| ME - i)).enumerate() {
        let who = NodeInfo::new(NodeId::from_u128(id), addr(10 + i as u8));
        members.push((who.id, announced(&mut node, &who)));
    }
    assert_eq!((node.leaf.cw().len(), node.leaf.ccw().len()), (8, 8));
    while node.poll_output().is_some() {}
    (node, members)
}

/// The members our node tells that `dead`, its clockwise neighbour, failed, once it finds it
/// dead; `reported`: its other neighbour (clockwise 2) told us first.
fn told_of_failure(reported: bool) -> Vec<NodeId> {
    let (mut node, members) = full_leaf_set();
    let (dead, other) = (members[0].0, members[1]);
    let live: Vec<ConnId> = members.iter().skip(1).map(|m| m.1).collect();
    if reported {
        node.handle_data(Instant::ZERO, other.1, &crate::wire::encode(&Message::Failed { id: dead }));
    }
    let sent = run_until(&mut node, Instant::ZERO + core::time::Duration::from_secs(120), &live);
    assert!(!node.leaf.contains(dead), "found dead");
    let told: Vec<NodeId> = sent
        .iter()
        .filter(|(_, m)| *m == Message::Failed { id: dead })
        .filter_map(|(c, _)| members.iter().find(|m| m.1 == *c).map(|m| m.0))
        .collect();
    told
}

#[test]
fn a_dead_neighbour_s_failure_goes_only_where_its_other_neighbour_s_report_did_not() {
    let all = told_of_failure(false);
    assert_eq!(all.len(), 15, "unreported, the whole leaf set is told: {all:?}");
    let few = told_of_failure(true);
    // The farthest four counter-clockwise: its other neighbour's leaf set holds the rest.
    let expected: Vec<NodeId> = (5..=8u128).map(|i| NodeId::from_u128(ME - i)).collect();
    assert_eq!(few, expected);
}

/// Our node (plaintext, leaf set of 16) with its two neighbours, a routing-table entry `e`
/// (row 1, column 1) that falls silent, another entry in row 1 (`f`, column 2) and, if
/// `with_fit`, a leaf-set member whose id fits `e`'s cell too. Runs until `e` is found dead:
/// who holds the cell then, and whether a row was asked for.
fn hole_after_a_failure(with_fit: bool) -> (Option<NodeId>, bool) {
    let (mut node, mut live) = announced_to(16, &[ME + 1, ME - 1, ME + (2 << 120)]);
    let e = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(30));
    announced(&mut node, &e);
    let fit = NodeId::from_u128(ME + (1 << 120) + 5);
    if with_fit {
        live.push(announced(&mut node, &NodeInfo::new(fit, addr(31))));
    }
    assert_eq!(node.table.get(1, 1).map(|c| c.id), Some(e.id), "the first to come holds the cell");
    // Only the hole's repair may ask for a row here: no periodic asks of near nodes.
    node.rows.ask_at = Instant::MAX;
    node.exchange_gap = crate::time::Span::of(node.cfg.leaf_exchange_interval);
    while node.poll_output().is_some() {}
    let sent = run_until(&mut node, Instant::ZERO + core::time::Duration::from_secs(700), &live);
    assert!(!node.in_tables(e.id), "found dead");
    let asked = sent.iter().any(|(_, m)| matches!(m, Message::RowRequest { .. }));
    (node.table.get(1, 1).map(|c| c.id), asked)
}

#[test]
fn a_routing_table_hole_is_filled_from_our_own_tables_before_a_row_is_asked_for() {
    assert_eq!(hole_after_a_failure(false), (None, true), "nobody we know fits: a row is asked for");
    assert_eq!(
        hole_after_a_failure(true),
        (Some(NodeId::from_u128(ME + (1 << 120) + 5)), false),
        "the leaf-set member that fits takes the cell at once"
    );
}

#[test]
fn after_the_early_exchanges_one_in_four_routes_a_locate() {
    let (mut node, live) = announced_to(2, &[ME + 1, ME - 1, ME + (1 << 120)]);
    let interval = node.cfg.leaf_exchange_interval;
    node.exchange_gap = crate::time::Span::of(interval / 64);
    node.timers.set(crate::node::NodeTimer::LeafExchange, Instant::ZERO + node.exchange_gap.get());
    while node.poll_output().is_some() {}
    let locates = |sent: &[(ConnId, Message)]| sent.iter().filter(|(_, m)| matches!(m, Message::Locate { .. })).count();
    // The five exchanges of the first 100 s, at gaps doubling from 1/64 of the interval: all
    // locate.
    let early = run_until(&mut node, Instant::ZERO + interval * 5 / 6, &live);
    assert_eq!(locates(&early), 5);
    let later = run_until(&mut node, Instant::ZERO + interval * 201, &live);
    let n = locates(&later);
    assert!((25..=75).contains(&n), "about 50 of 200 exchanges locate, not all: {n}");
}

/// Whether our node pings `a`, a routing-table entry (row 1) that stays silent after it
/// announced itself, within 500 s (beyond the tuned period our failure estimate gives before
/// any failure at a stale target of 5 %, short of `table_probe_interval`); with a leaf set of
/// `leaf_set_size`, our two neighbours answering. (At the default 7 % the prior's period
/// reaches `table_probe_interval` within minutes while no failure is seen.)
fn silent_entry_pinged(leaf_set_size: usize) -> (bool, bool) {
    let (mut node, live) = announced_to(leaf_set_size, &[ME + 1, ME - 1]);
    node.cfg.table_stale_target = 0.05;
    node.table_probe = crate::time::Span::of(node.tuned_probe_period());
    node.armed_probe = node.table_probe;
    let limit = node.cfg.table_probe_interval;
    let a = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(30));
    let a_conn = announced(&mut node, &a);
    assert!(node.table.contains(a.id));
    assert!(
        node.tuned_probe_period() < core::time::Duration::from_secs(500)
            && limit > core::time::Duration::from_secs(500)
    );
    while node.poll_output().is_some() {}
    let sent = run_until(&mut node, Instant::ZERO + core::time::Duration::from_secs(500), &live);
    (node.leaf.contains(a.id), sent.iter().any(|(c, m)| *c == a_conn && matches!(m, Message::Ping { .. })))
}

#[test]
fn a_routing_table_entry_in_the_leaf_set_is_left_to_its_neighbours_reports() {
    assert_eq!(silent_entry_pinged(2), (false, true), "outside the leaf set: probed at the tuned period");
    assert_eq!(
        silent_entry_pinged(4),
        (true, false),
        "in the leaf set too: its neighbours report its failure, probed only after table_probe_interval"
    );
}

/// Our node dials `who` for `probe` (a ping, or an announcement) and `who` answers the
/// handshake `rtt` later: what the node sends after that answer.
fn dial_for(node: &mut Node, who: &NodeInfo, announce: bool, rtt: core::time::Duration) -> (ConnId, Vec<Message>) {
    let t = Instant::from_secs(1);
    node.peers.insert(who.id, Box::new(Peer::new(who.clone(), t)));
    node.probe(t, who.id, announce);
    let mut dialled = None;
    while let Some(o) = node.poll_output() {
        if let Output::Connect { conn, .. } = o {
            dialled = Some(conn);
        }
    }
    let conn = dialled.expect("a connection dialled for the probe");
    node.handle_connected(t, conn);
    let nonce = match crate::harness::script::messages(&crate::harness::script::drain(node), conn).first() {
        Some(Message::Hello { nonce, .. }) => *nonce,
        other => panic!("no hello: {other:?}"),
    };
    let ack = Message::HelloAck { info: who.clone(), nonce, proof: Vec::new(), ready: true };
    let out = crate::harness::script::send(node, t + rtt, conn, &ack);
    (conn, crate::harness::script::messages(&out, conn))
}

#[test]
fn a_probe_over_a_new_connection_is_its_handshake() {
    let (mut node, _) = announced_to(2, &[ME + 1, ME - 1]);
    let far = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(9));
    let rtt = core::time::Duration::from_millis(30);
    let (_, sent) = dial_for(&mut node, &far, false, rtt);
    // The `Auth` stands for the ping, and the `HelloAck` was its answer: no `Ping`, no `Pong`.
    assert_eq!(sent, [Message::Auth { proof: Vec::new(), probe: Some(crate::wire::Probe::Ping) }]);
    let p = &node.peers[&far.id];
    assert_eq!(p.ping(), None, "answered");
    assert_eq!(p.last_heard(), Some(Instant::from_secs(1) + rtt));
    assert_eq!(p.proximity(), proximity(rtt, "", "", node.cfg.region_factor), "timed by the handshake");
}

#[test]
fn an_announcement_over_a_new_connection_is_its_handshake() {
    let (mut node, _) = announced_to(2, &[ME + 1, ME - 1]);
    let far = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(9));
    let (_, sent) = dial_for(&mut node, &far, true, core::time::Duration::from_millis(30));
    let announce = crate::wire::Probe::Announce { answer: false };
    assert_eq!(sent, [Message::Auth { proof: Vec::new(), probe: Some(announce) }]);
    assert_eq!(node.peers[&far.id].ping(), None);
    // A leaf-set member we announced ourselves to and wait for asks for its `Welcome`.
    let mut node =
        Node::new(Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext(), Instant::ZERO)
            .expect("valid config");
    let next = NodeInfo::new(NodeId::from_u128(ME + 1), addr(9));
    node.unwelcomed = Some(Box::new(super::super::join::Unwelcomed::new(vec![next.id])));
    let (_, sent) = dial_for(&mut node, &next, true, core::time::Duration::from_millis(30));
    let announce = crate::wire::Probe::Announce { answer: true };
    assert_eq!(sent, [Message::Auth { proof: Vec::new(), probe: Some(announce) }]);
}

#[test]
fn a_handshake_standing_for_a_probe_is_not_answered_again() {
    use crate::harness::script;
    use crate::wire::Probe;
    // A full leaf set of two members a side: a node beyond them is not covered.
    let (mut node, _) = announced_to(4, &[ME + 1, ME + 10, ME - 1, ME - 10]);
    let far = NodeInfo::new(NodeId::from_u128(ME + (1 << 120)), addr(9));
    let near = NodeInfo::new(NodeId::from_u128(ME + 5), addr(10));
    let dial = |node: &mut Node, who: &NodeInfo, probe: Probe| {
        let conn = node.handle_accepted(Instant::from_secs(1), who.global);
        let ack = script::messages(&script::send(node, Instant::from_secs(1), conn, &script::hello(who)), conn);
        assert!(matches!(ack.as_slice(), [Message::HelloAck { ready: true, .. }]), "{ack:?}");
        let auth = Message::Auth { proof: Vec::new(), probe: Some(probe) };
        let out = script::send(node, Instant::from_secs(2), conn, &auth);
        let heartbeat = out.iter().any(|o| matches!(o, Output::Event(Event::Heartbeat(id)) if *id == who.id));
        (script::messages(&out, conn), heartbeat)
    };
    // A probe: heard from, learned, and not answered.
    let (sent, heartbeat) = dial(&mut node, &far, Probe::Ping);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(heartbeat);
    assert_eq!(node.peers[&far.id].last_heard(), Some(Instant::from_secs(2)));
    // An announcement that asks for nothing, from a node beyond our leaf set: nothing.
    let other = NodeInfo::new(NodeId::from_u128(ME + (2 << 120)), addr(11));
    let (sent, _) = dial(&mut node, &other, Probe::Announce { answer: false });
    assert!(sent.is_empty(), "{sent:?}");
    assert!(node.table.contains(other.id), "learned");
    // One that asks: a `Welcome`. One from a node our leaf set covers: our leaves with it.
    let third = NodeInfo::new(NodeId::from_u128(ME + (3 << 120)), addr(12));
    let (sent, _) = dial(&mut node, &third, Probe::Announce { answer: true });
    assert!(matches!(sent.as_slice(), [Message::Welcome { ready: true, leaves, .. }] if leaves.is_empty()), "{sent:?}");
    let (sent, _) = dial(&mut node, &near, Probe::Announce { answer: false });
    assert!(matches!(sent.as_slice(), [Message::Welcome { leaves, .. }] if !leaves.is_empty()), "{sent:?}");
    assert!(node.leaf.contains(near.id));
}

#[test]
fn a_heartbeat_leaves_its_answer_one_interval_before_suspicion() {
    // At the defaults (suspicion after four silent ticks) every third tick; after three,
    // every other one; after two, every tick.
    for (suspect_ticks, every) in [(4, 3), (3, 2), (2, 1)] {
        let (mut node, conns) = announced_to(2, &[ME + 1, ME - 1]);
        node.cfg.suspect_timeout = node.cfg.heartbeat_interval * suspect_ticks;
        run_until(&mut node, Instant::from_secs(300), &conns);
        let ticks = 60;
        let until = Instant::from_secs(300) + node.cfg.heartbeat_interval * ticks;
        let sent = run_until(&mut node, until, &conns);
        let beats: Vec<ConnId> =
            sent.iter().filter(|(_, m)| matches!(m, Message::Heartbeat { .. })).map(|(c, _)| *c).collect();
        assert!(beats.iter().all(|&c| c == conns[1]), "only to the counter-clockwise neighbour");
        let expected = ticks as usize / every;
        assert!(
            beats.len().abs_diff(expected) <= 1,
            "suspicion after {suspect_ticks} ticks: {} heartbeats in {ticks} ticks",
            beats.len()
        );
    }
}

/// A probe period that falls a little at each tick brings the routing-table members' deadlines
/// forward once it is below half the period they were armed with, not only when it halves
/// from one tick to the next: members learned at a join were armed with the period of a node
/// that had seen no failure yet, and kept it. No deadline is ever more than twice the current
/// period after the member's last word.
#[test]
fn a_gradually_shorter_probe_period_brings_deadlines_forward() {
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    cfg.leaf_set_size = 2;
    let mut node = Node::new(cfg, Instant::ZERO).expect("valid config");
    node.state = State::Ready;
    // Our two neighbours fill the leaf set; `far` is a routing-table entry only.
    for (id, host) in [(ME + 1, 2), (ME - 1, 3)] {
        node.learn(Instant::ZERO, NodeInfo::new(NodeId::from_u128(id), addr(host)), true);
    }
    let far = NodeId::from_u128(ME >> 1);
    node.learn(Instant::ZERO, NodeInfo::new(far, addr(4)), true);
    assert!(node.table.contains(far) && !node.leaf.contains(far));
    let armed = node.peers[&far].timer.expect("a table member is watched") - Instant::ZERO;
    assert_eq!(armed, node.table_probe.get(), "armed with the period of a node that saw nothing yet");
    // A thousand members watched (the churn estimate's view, not this node's tables), and
    // failures more frequent at each tick: the period falls by less than half at a time.
    let mut last = node.table_probe.get();
    let mut ticks = 0;
    while node.table_probe.get() >= armed / 3 {
        node.churn.observe(1000, node.cfg.heartbeat_interval);
        for _ in 0..ticks / 4 {
            node.churn.failure();
        }
        node.retune();
        let period = node.table_probe.get();
        assert!(period > last / 2, "{period:?} after {last:?}: not gradual");
        let p = &node.peers[&far];
        let due = p.silent_since() + period * 2;
        assert!(p.timer.is_some_and(|t| t <= due), "armed at {:?} with a period of {period:?}", p.timer);
        last = period;
        ticks += 1;
        assert!(ticks < 1000, "the period does not fall: {last:?}");
    }
    assert!(ticks > 2, "it fell in {ticks} ticks");
}

/// Only members we heard from directly and do not suspect are passed on: hearsay we have not
/// checked, and a member we are probing, are left out of the leaf sets and rows we send. So a
/// dead node spreads no further than the nodes that heard from it, and only until its
/// silence makes them suspect it (the bound of `Config::detection_time`).
#[test]
fn only_members_we_vouch_for_are_passed_on() {
    use crate::harness::script;
    let now = Instant::ZERO;
    let cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    let mut node = Node::new(cfg, now).expect("valid config");
    let heard = NodeInfo::new(NodeId::from_u128(ME + 1), addr(2));
    let told = NodeInfo::new(NodeId::from_u128(ME + 2), addr(3));
    let conn = announced(&mut node, &heard);
    assert!(node.is_ready());
    node.handle_data(now, conn, &crate::wire::encode(&Message::LeafSet { leaves: vec![told.clone()] }));
    assert!(node.leaf.contains(told.id) && node.table.contains(told.id), "hearsay enters the tables");
    let (row, _) = node.table.slot(told.id).expect("a cell");
    let row = row as u8;
    script::drain(&mut node);
    let passed_on = |node: &mut Node| -> (Vec<NodeId>, Vec<NodeId>) {
        node.handle_data(now, conn, &crate::wire::encode(&Message::LeafSetRequest));
        node.handle_data(now, conn, &crate::wire::encode(&Message::RowRequest { row }));
        let (mut leaves, mut rows) = (Vec::new(), Vec::new());
        for m in script::messages(&script::drain(node), conn) {
            match m {
                Message::LeafSet { leaves: l } => leaves.extend(l.iter().map(|i| i.id)),
                Message::Row { entries, .. } => rows.extend(entries.iter().map(|i| i.id)),
                _ => {}
            }
        }
        (leaves, rows)
    };
    let (leaves, rows) = passed_on(&mut node);
    assert!(leaves.contains(&heard.id) && !leaves.contains(&told.id), "unchecked hearsay is not passed on: {leaves:?}");
    assert!(!rows.contains(&told.id), "nor in a row: {rows:?}");
    // Once it answers, it is.
    announced(&mut node, &told);
    let (leaves, rows) = passed_on(&mut node);
    assert!(leaves.contains(&told.id) && rows.contains(&told.id), "{leaves:?} {rows:?}");
    // A member we suspect (its silence, a probe awaiting its answer) is not.
    node.peers.get_mut(&told.id).expect("a record").suspect(now);
    let (leaves, rows) = passed_on(&mut node);
    assert!(!leaves.contains(&told.id) && !rows.contains(&told.id), "{leaves:?} {rows:?}");
}

/// A pushed leaf set that lacks a member of ours gets ours back only if we vouch for a
/// member it lacks: one we have not heard from would not be in what we send.
#[test]
fn a_pushed_leaf_set_is_answered_only_with_news_we_vouch_for() {
    use crate::harness::script;
    let now = Instant::ZERO;
    let cfg = Config::with_trusted_id(NodeId::from_u128(ME), addr(1)).insecure_plaintext();
    let mut node = Node::new(cfg, now).expect("valid config");
    let me = node.info().clone();
    let heard = NodeInfo::new(NodeId::from_u128(ME + 1), addr(2));
    let told = NodeInfo::new(NodeId::from_u128(ME + 2), addr(3));
    let conn = announced(&mut node, &heard);
    node.handle_data(now, conn, &crate::wire::encode(&Message::LeafSet { leaves: vec![told.clone()] }));
    assert!(node.leaf.contains(told.id));
    script::drain(&mut node);
    let push = |node: &mut Node, seq: u32| -> Vec<Vec<NodeId>> {
        let beat = Message::Heartbeat { seq, leaves: vec![me.clone()] };
        node.handle_data(now, conn, &crate::wire::encode(&beat));
        let sent = script::messages(&script::drain(node), conn);
        sent.iter()
            .filter_map(|m| match m {
                Message::LeafSet { leaves } => Some(leaves.iter().map(|i| i.id).collect()),
                _ => None,
            })
            .collect()
    };
    assert!(push(&mut node, 1).is_empty(), "the only member it lacks is one we have not heard from");
    announced(&mut node, &told);
    assert_eq!(push(&mut node, 2), vec![vec![heard.id, told.id]], "once it answered, it is news worth sending");
}
