//! Protocol policy that lives in wendy-proto and nowhere else: configuration validation, join
//! retries over several bootstrap addresses, the `Drained` signal after `leave`, and the
//! reason a refused handshake is told.

use core::time::Duration;
use std::net::SocketAddr;
use std::sync::Arc;

use wendy_proto::harness::script::{closes, connects, drain, errors};
use wendy_proto::harness::Harness;
use wendy_proto::{
    CommandError, Config, ConfigError, Event, Instant, MemberConnections, Node, NodeError, NodeId, Output,
    RejectReason, SharedSecret,
};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn cfg() -> Config {
    Config::with_trusted_id(NodeId::from_u128(7 << 100), addr(1))
}

#[test]
fn unusable_configs_are_refused_with_the_field_named() {
    let mut c = cfg();
    c.heartbeat_interval = Duration::ZERO;
    assert_eq!(c.validate(), Err(ConfigError::ZeroDuration { field: "heartbeat_interval" }));
    assert!(matches!(Node::new(c, Instant::ZERO), Err(ConfigError::ZeroDuration { field: "heartbeat_interval" })));

    let mut c = cfg();
    c.leaf_set_size = 1;
    assert_eq!(c.validate(), Err(ConfigError::LeafSetSize { size: 1 }));
    c.leaf_set_size = 7;
    assert_eq!(c.validate(), Err(ConfigError::LeafSetSize { size: 7 }));

    let mut c = cfg();
    c.max_connections = 0;
    assert_eq!(c.validate(), Err(ConfigError::Zero { field: "max_connections" }));

    let mut c = cfg();
    c.max_frame_size = 100;
    assert!(matches!(c.validate(), Err(ConfigError::FrameTooSmall { size: 100, .. })));

    let mut c = cfg();
    c.suspect_timeout = Duration::from_millis(500);
    assert_eq!(c.validate(), Err(ConfigError::SuspectBeforeHeartbeat));
    let msg = ConfigError::SuspectBeforeHeartbeat.to_string();
    assert!(msg.contains("suspect_timeout"), "{msg}");

    assert_eq!(cfg().validate(), Ok(()));
    assert!(Node::new(cfg(), Instant::ZERO).is_ok());
}

#[test]
fn heartbeat_scales_the_liveness_timers_in_one_place() {
    let d = cfg();
    assert_eq!(d.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(d.probe_timeout, Duration::from_secs(1));
    let c = cfg().with_heartbeat(Duration::from_secs(2));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(c.suspect_timeout.as_secs_f64() / c.heartbeat_interval.as_secs_f64(), 4.0);
    assert_eq!(c.table_probe_interval, d.table_probe_interval / 5);
    assert_eq!(c.table_probe_min, c.heartbeat_interval);
    // A probe is answered within a round trip: a second at most, however slow the heartbeat.
    assert_eq!(c.probe_timeout, Duration::from_secs(1));
    assert_eq!(cfg().with_heartbeat(Duration::from_millis(100)).probe_timeout, Duration::from_millis(100));
    assert_eq!(c.validate(), Ok(()));
    let mut bad = c.clone();
    bad.table_probe_min = bad.table_probe_interval * 2;
    assert_eq!(bad.validate(), Err(ConfigError::TableProbeRange));
    for target in [0.0, 1.0, f64::NAN, -0.5] {
        let mut bad = c.clone();
        bad.table_stale_target = target;
        assert_eq!(bad.validate(), Err(ConfigError::StaleTarget), "{target}");
    }
}

#[test]
fn join_needs_a_bootstrap_that_is_not_ourselves() {
    let mut n = Node::new(cfg(), Instant::ZERO).unwrap();
    assert_eq!(n.join(Instant::ZERO, &[]), Err(CommandError::NoBootstrap));
    assert_eq!(n.join(Instant::ZERO, &[addr(1)]), Err(CommandError::SelfBootstrap));
    assert_eq!(n.join(Instant::ZERO, &[addr(1), addr(2)]), Ok(()));
}

#[test]
fn join_moves_on_from_an_unreachable_bootstrap() {
    let mut h = Harness::new(11);
    for i in 0..3u128 {
        h.add_node(NodeId::from_u128((i + 1) << 120));
    }
    h.join(1, 0);
    assert!(h.run_until_ready(Duration::from_secs(10)));
    // Nothing listens at the first address; the second is a member.
    let nobody = SocketAddr::from(([10, 9, 9, 9], 7000));
    h.join_through(2, &[nobody, Harness::addr_of(1)]);
    assert!(h.run_until_ready(Duration::from_secs(10)));
    let joined_at = h.events().iter().find(|(i, _, e)| *i == 2 && *e == Event::Joined).map(|(_, t, _)| *t);
    // The refused dial cuts the first attempt short: no need to wait for the join timeout.
    let limit = Instant::ZERO + h.node(2).config().join_timeout;
    assert!(joined_at.is_some_and(|t| t < limit), "joined at {joined_at:?}, join timeout ends at {limit:?}");
    assert!(h.node(2).leaf_set().contains(h.node(0).id()));
}

#[test]
fn join_fails_after_every_round_over_the_list() {
    let mut h = Harness::new(12);
    h.configure = Box::new(|id, a| {
        let mut c = Config::with_trusted_id(id, a);
        c.join_attempts = 2;
        c.join_timeout = Duration::from_secs(1);
        c
    });
    h.add_node(NodeId::from_u128(1 << 120));
    let nowhere = [SocketAddr::from(([10, 9, 9, 8], 7000)), SocketAddr::from(([10, 9, 9, 9], 7000))];
    h.join_through(0, &nowhere);
    h.run_for(Duration::from_secs(20));
    let failed: Vec<u32> = h
        .events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::Error(NodeError::JoinFailed { attempts }) => Some(*attempts),
            _ => None,
        })
        .collect();
    // Two rounds over two addresses.
    assert_eq!(failed, vec![4]);
    assert!(h.node(0).is_ready() && !h.node(0).is_joining(), "back to a ring of one");
}

#[test]
fn leave_is_followed_by_drained_once_nothing_is_queued() {
    let mut h = Harness::new(13);
    let mut rng = wendy_proto::rng::Rng::new(5);
    h.grow(8, &mut rng, None);
    assert!(h.run_until_ready(Duration::from_secs(30)));
    h.leave(3);
    let drained: Vec<_> = h.events().iter().filter(|(i, _, e)| *i == 3 && *e == Event::Drained).collect();
    assert_eq!(drained.len(), 1, "Drained comes with the leave when nothing waits for a connection");
    assert!(h.node(3).poll_timeout().is_none(), "a drained node wants no more timers");
    h.run_for(Duration::from_secs(10));
    let drained = h.events().iter().filter(|(i, _, e)| *i == 3 && *e == Event::Drained).count();
    assert_eq!(drained, 1, "Drained is said once");
}

/// A leaf-set member whose connection with us has just broken (a suspicion closed it, or a
/// reset reached us first) still hears that we leave: the goodbye goes over a new connection,
/// and `Drained` waits for it. Before, a node that had left only used the connections it had,
/// and the member kept our keys' range until its failure detection found us gone (it made
/// the six-process test flaky after a neighbour's SIGSTOP).
#[test]
fn a_leaf_member_whose_connection_just_broke_hears_that_we_leave() {
    for seed in [13, 14, 15] {
        let mut h = Harness::new(seed);
        let mut rng = wendy_proto::rng::Rng::new(seed);
        h.grow(8, &mut rng, None);
        assert!(h.run_until_ready(Duration::from_secs(30)));
        h.run_for(Duration::from_secs(5));
        let (a, b) = (3, 5);
        let a_id = h.node(a).id();
        assert!(h.node(a).leaf_set().members().contains(&h.node(b).id()));
        assert!(h.node(b).leaf_set().members().contains(&a_id));
        h.sever(a, b);
        h.leave(a);
        assert!(!h.events().iter().any(|(i, _, e)| *i == a && *e == Event::Drained), "seed {seed}: Drained waits");
        h.run_for(Duration::from_millis(500));
        assert!(
            !h.node(b).leaf_set().members().contains(&a_id),
            "seed {seed}: the member whose connection broke still holds the node that left"
        );
        let drained = h.events().iter().filter(|(i, _, e)| *i == a && *e == Event::Drained).count();
        assert_eq!(drained, 1, "seed {seed}: Drained once the goodbye is out");
    }
}

#[test]
fn drained_waits_for_a_connection_that_is_still_being_set_up() {
    let now = Instant::ZERO;
    let mut a = Node::new(cfg(), now).unwrap();
    a.join(now, &[addr(2)]).unwrap();
    let outs = drain(&mut a);
    assert!(!connects(&outs).is_empty());
    // The join request waits in the dialling connection's queue when we leave.
    a.leave(now);
    let outs = drain(&mut a);
    assert!(!outs.contains(&Output::Event(Event::Drained)), "{outs:?}");
    let t = a.poll_timeout().expect("a timer to give up on the dial");
    let mut saw = false;
    let mut now = now;
    for _ in 0..20 {
        now = now.max(t) + Duration::from_secs(1);
        a.handle_timeout(now);
        let outs = drain(&mut a);
        if outs.contains(&Output::Event(Event::Drained)) {
            saw = true;
            // The socket still being dialled is closed before the node says it is done.
            assert!(!closes(&outs).is_empty(), "{outs:?}");
            break;
        }
    }
    assert!(saw, "Drained after the connect timeout");
    assert!(now <= Instant::ZERO + a.config().connect_timeout + 2 * a.config().heartbeat_interval);
    assert_eq!(a.pending_messages(), 0);
}

#[test]
fn a_refused_joiner_is_told_why_at_once() {
    let mut h = Harness::new(14);
    h.configure = Box::new(|id, a| {
        let secret = if a == Harness::addr_of(1) { "wrong" } else { "right" };
        Config::with_trusted_id(id, a).with_credentials(Arc::new(SharedSecret::new(secret)))
    });
    h.add_node(NodeId::from_u128(1 << 120));
    h.add_node(NodeId::from_u128(2 << 120));
    h.join(1, 0);
    h.run_for(Duration::from_secs(1));
    // The member finds the pre-shared keys differ at the handshake's last message, refuses,
    // and says why: the joiner hears at once.
    let told: Vec<_> = h
        .events()
        .iter()
        .filter_map(|(i, t, e)| match e {
            Event::RejectedByPeer { reason, .. } => Some((*i, *t, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1, "{told:?} {:?}", h.events());
    let (who, at, reason) = told[0];
    assert_eq!((who, reason), (1, RejectReason::BadCredentials));
    assert!(at < Instant::ZERO + Duration::from_secs(1));
    assert_eq!(h.node(1).stats().rejected_by_peers, 1);
    assert_eq!(h.node(0).stats().rejected_peers, 1);
    assert_eq!(reason.to_string(), "bad credentials (a different pre-shared key, or a key the cluster does not admit)");
}

#[test]
fn a_timer_fires_at_its_own_deadline_not_at_the_next_heartbeat() {
    let mut c = cfg();
    c.heartbeat_interval = Duration::from_secs(60);
    c.suspect_timeout = Duration::from_secs(180);
    c.connect_timeout = Duration::from_secs(5);
    c.leaf_exchange_interval = Duration::from_secs(3600);
    let t0 = Instant::from_secs(100);
    let mut a = Node::new(c, t0).unwrap();
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(60)), "the heartbeat");
    // A dial that never completes.
    let at = t0 + Duration::from_millis(1500);
    a.send_to(at, wendy_proto::Target::Addr(addr(9)), 16, bytes::Bytes::from_static(b"x")).unwrap();
    let conn = connects(&drain(&mut a)).first().copied();
    let deadline = at + Duration::from_secs(5);
    assert_eq!(a.poll_timeout(), Some(deadline), "the connect deadline comes first");
    a.handle_timeout(at + Duration::from_micros(4_999_999));
    assert!(a.poll_output().is_none(), "nothing fires early");
    a.handle_timeout(deadline);
    let outs = drain(&mut a);
    assert!(closes(&outs).contains(&conn.expect("a dial")), "{outs:?}");
    assert!(errors(&outs).iter().any(|e| matches!(e, NodeError::ConnectFailed { .. })));
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(60)), "back to the heartbeat");
    a.check_invariants().unwrap();
}

#[test]
fn the_forward_hook_may_consume_a_message_on_its_way() {
    let mut h = Harness::new(15);
    let mut rng = wendy_proto::rng::Rng::new(6);
    h.grow(4, &mut rng, None);
    assert!(h.run_until_ready(Duration::from_secs(30)));
    h.node_mut(0).set_forward_hook(Box::new(|f: &mut wendy_proto::Forwarding, _: &wendy_proto::NodeInfo| {
        match f.purpose {
            20 => wendy_proto::Verdict::Consume,
            22 => wendy_proto::Verdict::Drop,
            _ => wendy_proto::Verdict::Forward,
        }
    }));
    let key = h.node(1).id();
    let dropped = h.node(0).stats().dropped;
    h.send(0, key, 20, b"cached");
    h.send(0, key, 21, b"onwards");
    h.send(0, key, 22, b"vetoed");
    h.run_for(Duration::from_secs(1));
    let got: Vec<(usize, u8, bool)> =
        h.deliveries().iter().map(|o| (o.node, o.delivery.purpose, o.delivery.intercepted)).collect();
    assert_eq!(got, vec![(0, 20, true), (1, 21, false)]);
    assert_eq!(h.node(0).stats().dropped, dropped + 1, "the veto is counted once");
}

#[test]
fn leaf_set_changes_are_reported_as_differences() {
    let mut h = Harness::new(16);
    h.configure = Box::new(|id, a| {
        let mut c = Config::with_trusted_id(id, a);
        c.leaf_set_size = 4;
        c
    });
    let mut rng = wendy_proto::rng::Rng::new(7);
    h.grow(12, &mut rng, None);
    assert!(h.run_until_ready(Duration::from_secs(30)));
    h.run_for(Duration::from_secs(5));
    let victim = h.node(0).leaf_set().members()[0];
    let vi = (0..h.len()).find(|&i| h.node(i).id() == victim).unwrap();
    h.crash(vi);
    h.run_for(h.node(0).config().leaf_detection_time() + Duration::from_secs(5));
    // Replaying the differences from an empty leaf set gives the leaf set.
    let mut replay: Vec<NodeId> = Vec::new();
    let mut saw_victim_leave = false;
    for (_, _, e) in h.events().iter().filter(|(i, _, _)| *i == 0) {
        if let Event::LeafSetChanged { added, removed } = e {
            assert!(!added.is_empty() || !removed.is_empty(), "no empty change");
            for r in removed {
                assert!(replay.contains(r), "{r} removed but never added");
                replay.retain(|x| x != r);
                saw_victim_leave |= *r == victim;
            }
            for a in added {
                assert!(!replay.contains(&a.id), "{} added twice", a.id);
                replay.push(a.id);
            }
        }
    }
    let mut now = h.node(0).leaf_set().members();
    now.sort();
    replay.sort();
    assert_eq!(replay, now);
    assert!(saw_victim_leave);
}

/// A ring of `n` nodes with leaf sets of 8, so routes have intermediate hops.
fn routed_ring(n: usize, seed: u64) -> Harness {
    let mut h = Harness::new(seed);
    h.configure = Box::new(|id, a| {
        let mut c = Config::with_trusted_id(id, a);
        c.leaf_set_size = 8;
        c
    });
    let mut rng = wendy_proto::rng::Rng::new(seed);
    h.grow(n, &mut rng, None);
    assert!(h.run_until_ready(Duration::from_secs(60)));
    h.run_for(Duration::from_secs(40));
    h
}

#[test]
fn a_message_whose_next_hop_died_silently_is_rerouted_and_delivered() {
    let mut h = routed_ring(120, 17);
    let mut rng = wendy_proto::rng::Rng::new(99);
    // A key whose route from `from` passes through a hop that is not the key's root.
    let (from, key, hop) = loop {
        let key = NodeId::from_u128(rng.next_u128());
        let from = rng.below(h.len() as u64) as usize;
        let root = h.closest_ready(key).unwrap();
        if let Some(next) = h.node(from).next_hop(key) {
            let hop = (0..h.len()).find(|&i| h.node(i).id() == next).unwrap();
            if hop != root && from != root {
                break (from, key, hop);
            }
        }
    };
    // The hop dies without a word: its connections stay open and swallow what is sent.
    h.crash(hop);
    let sent = h.now();
    h.send(from, key, 16, b"through a dead hop");
    h.run_for(Duration::from_secs(5));
    let root = h.closest_ready(key).unwrap();
    let got: Vec<usize> = h.deliveries().iter().map(|o| o.node).collect();
    assert_eq!(got, vec![root], "delivered once, at the root");
    assert!(h.node(from).stats().reroutes >= 1, "the origin rerouted it");
    // Rerouted after at most two ack timeouts, then a route of a few hops (under 20 ms each).
    let c = h.node(from).config();
    let limit = c.ack_timeout_max * 2 + Duration::from_millis(200);
    let took = h.deliveries()[0].at - sent;
    assert!(took <= limit, "delivered after {took:?}, bound {limit:?}");
}

/// Custody: a hop that acknowledged a message and crashed before handing it on (its own next
/// hop was dead, so it was waiting to route it again) does not take the message with it. The
/// node that sent it kept a copy, probes the silent hop once it has held the message past
/// `custody_hold`, and routes the copy again once the hop is declared failed. Before custody,
/// 56 of the 59 lookups lost at a 5-minute median session in the simulator were lost this way.
#[test]
fn a_message_whose_hop_crashed_holding_it_is_routed_again_by_its_sender() {
    let mut h = routed_ring(120, 17);
    let mut rng = wendy_proto::rng::Rng::new(7);
    let index = |h: &Harness, id: NodeId| (0..h.len()).find(|&i| h.node(i).id() == id).unwrap();
    // A route from -> hop -> hop2 -> ..., neither hop the key's root.
    let (from, key, hop, hop2) = loop {
        let key = NodeId::from_u128(rng.next_u128());
        let from = rng.below(h.len() as u64) as usize;
        let root = h.closest_ready(key).unwrap();
        let Some(hop) = h.node(from).next_hop(key).map(|id| index(&h, id)) else { continue };
        let Some(hop2) = h.node(hop).next_hop(key).map(|id| index(&h, id)) else { continue };
        if ![from, hop].contains(&root) && hop2 != root && hop2 != from {
            break (from, key, hop, hop2);
        }
    };
    // hop2 dies silently: hop will acknowledge the message, send it on and wait for an ack.
    h.crash(hop2);
    h.send(from, key, 16, b"held by a hop that crashes");
    h.run_for(Duration::from_millis(300));
    assert!(h.deliveries().is_empty(), "still held by the hop");
    // Now the hop dies too, with the message.
    h.crash(hop);
    let c = h.node(from).config().clone();
    let hold = c.neighbour_probing_time() + c.ack_timeout_max * 3;
    h.run_for(hold + c.neighbour_probing_time() + Duration::from_secs(2));
    let root = h.closest_ready(key).unwrap();
    let got: Vec<usize> = h.deliveries().iter().map(|o| o.node).collect();
    assert_eq!(got, vec![root], "delivered once, at the root");
    assert!(h.node(from).stats().custody_reroutes >= 1, "the sender routed its copy again");
}

#[test]
fn a_message_with_no_route_left_is_reported_undeliverable_to_its_sender() {
    let mut h = routed_ring(40, 18);
    let key = h.node(5).id();
    let from = (0..h.len()).find(|&i| i != 5 && h.node(i).next_hop(key) == Some(key)).unwrap();
    // Every reroute finds the next hop dead too: the sender gives up and says so.
    for i in 0..h.len() {
        if i != from {
            h.crash(i);
        }
    }
    h.send(from, key, 42, b"nobody left");
    h.run_for(Duration::from_secs(30));
    let undeliverable: Vec<_> = h
        .events()
        .iter()
        .filter_map(|(i, _, e)| match e {
            Event::Error(NodeError::Undeliverable { key: k, purpose }) if *i == from => Some((*k, *purpose)),
            _ => None,
        })
        .collect();
    let delivered_here = h.deliveries().iter().filter(|o| o.node == from).count();
    // Either the sender became the root of what is left (a ring of one) and delivered it,
    // or it reported it undeliverable: never silence.
    assert_eq!(undeliverable.len() + delivered_here, 1, "{undeliverable:?}");
    if let [(k, p)] = undeliverable[..] {
        assert_eq!((k, p), (key, 42));
    }
}

/// How many other nodes hold node `victim` in their leaf sets.
fn leaf_holders(h: &Harness, victim: usize) -> usize {
    let id = h.node(victim).id();
    (0..h.len()).filter(|&i| i != victim && h.node(i).leaf_set().contains(id)).count()
}

#[test]
fn a_crashed_leaf_member_leaves_every_leaf_set_within_leaf_detection_time() {
    let mut h = routed_ring(60, 19);
    let victim = 17;
    let holders = |h: &Harness| leaf_holders(h, victim);
    assert!(holders(&h) > 0);
    // One node fails alone: its neighbours survive it, as the bound assumes. The harness's
    // latency (under 20 ms a hop) is the only slack added.
    h.crash(victim);
    h.run_for(h.node(0).config().leaf_detection_time() + Duration::from_millis(100));
    assert_eq!(holders(&h), 0, "still in some leaf set after leaf_detection_time()");
}

/// A killed process (`kill -9`): its operating system resets its connections, and every
/// leaf-set member that had one probes it at once instead of waiting for its next heartbeat
/// or probe, so it is out of every leaf set within `neighbour_probing_time()` (8 s) and a few
/// round trips. Before, it took up to a heartbeat longer (13-21 s over real sockets).
#[test]
fn a_killed_process_is_out_of_every_leaf_set_within_the_probing_time() {
    let mut h = routed_ring(60, 19);
    let victim = 17;
    let holders = |h: &Harness| leaf_holders(h, victim);
    assert!(holders(&h) > 0);
    h.kill(victim);
    let c = h.node(0).config().clone();
    h.run_for(c.neighbour_probing_time() + Duration::from_millis(500));
    assert_eq!(holders(&h), 0, "still in some leaf set after neighbour_probing_time()");
    assert!(c.neighbour_probing_time() + Duration::from_millis(500) < c.heartbeat_interval + c.probing_time());
}

/// A neighbour that stops answering us but is alive is not declared failed for it: before
/// the last probes, its other neighbours are asked to tell it, and it contacts us over a
/// connection of its own. Here every dial from `y` to its neighbour `x` goes unanswered (a
/// firewall; in the simulator, a run of lost frames) while `x` can still dial `y`. A
/// message from `y` to `x`'s own id goes unacknowledged, so `y` suspects `x` and parks the
/// message while it probes. Without the helpers, `y` declared `x` failed after
/// `neighbour_probing_time()` and delivered `x`'s key itself.
#[test]
fn a_live_neighbour_we_cannot_reach_is_not_declared_failed() {
    let mut h = routed_ring(40, 21);
    let index = |h: &Harness, id: NodeId| (0..h.len()).find(|&i| h.node(i).id() == id).unwrap();
    let y = 3;
    let x_id = h.node(y).leaf_set().cw()[0];
    let x = index(&h, x_id);
    h.block_dials(y, x);
    h.send(y, x_id, 16, b"to a neighbour we cannot dial");
    let c = h.node(y).config().clone();
    h.run_for(c.ack_timeout_max * 2 + c.neighbour_probing_time() + Duration::from_secs(5));
    assert!(h.node(y).leaf_set().contains(x_id), "a live neighbour was declared failed");
    let got: Vec<usize> = h.deliveries().iter().map(|o| o.node).collect();
    assert_eq!(got, vec![x], "delivered once, at its root");
    // The suspicion ended by the suspect's own word, not by a timeout.
    let frames = h.node(y).stats().control_frames_by_kind
        [wendy_proto::wire::FRAME_KINDS.iter().position(|&k| k == "unreachable").unwrap()];
    assert!(frames >= 1, "the helpers were asked");
}

#[test]
fn a_connection_we_accepted_waits_for_its_dialler_to_close_it() {
    // Unless idle member connections are kept, the dialler of a connection closes it after
    // `idle_timeout`: the side that accepted it has nothing to do at that time (its buffers
    // go with the close), and looks at it once, after twice that, to close it if the
    // dialler never did. With every member connection kept, it gives its buffers back after
    // `idle_timeout` and stays open.
    for mode in [MemberConnections::Closed, MemberConnections::LeafSet, MemberConnections::Kept] {
        let now = Instant::from_secs(1);
        let mut c = cfg().insecure_plaintext();
        c.member_connections = mode;
        let mut node = Node::new(c, now).unwrap();
        let idle = node.config().idle_timeout;
        let who = wendy_proto::harness::script::info(5 << 100, 9, 9);
        let conn = wendy_proto::harness::script::authed(&mut node, now, &who);
        drain(&mut node);
        let first = if mode == MemberConnections::Kept { idle } else { 2 * idle };
        assert_eq!(node.poll_timeout(), Some(now + first), "{mode:?}: the accepted connection's first deadline");
        node.handle_timeout(now + first);
        let outs = drain(&mut node);
        let sent = wendy_proto::harness::script::messages(&outs, conn);
        let closing = sent.iter().any(|m| matches!(m, wendy_proto::wire::Message::Closing));
        assert_eq!(closing, mode != MemberConnections::Kept, "{mode:?}: {outs:?}");
        assert_eq!(node.connection_count(), 1, "{mode:?}: open until its dialler answers the Closing");
    }
}
