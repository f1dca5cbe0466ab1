//! `Node::start_member`: a node started from tables computed elsewhere (the simulator's
//! `--build tables`) is a ready member at once, keeps only what its tables take, refuses a
//! second start or a join, and routes by what it was given.

use std::time::Duration;

use wendy_proto::harness::script::{addr, drain, info};
use wendy_proto::{CommandError, Config, Event, Instant, Node, NodeId, NodeInfo, Output};

const ME: u128 = 1 << 127;
const NOW: Instant = Instant::from_secs(5);

fn node(leaf_set_size: usize) -> Node {
    let mut c = Config::with_trusted_id(NodeId::from_u128(ME), addr(255, 1)).insecure_plaintext();
    c.leaf_set_size = leaf_set_size;
    c.neighbourhood_size = 1;
    Node::new(c, Instant::ZERO).expect("valid config")
}

fn joined_events(outs: &[Output]) -> usize {
    outs.iter().filter(|o| matches!(o, Output::Event(Event::Joined))).count()
}

#[test]
fn a_started_member_is_ready_with_its_tables() {
    let mut n = node(4);
    // Two a side in the ring, then two farther ones: a routing-table entry (its first digit
    // differs from ours) and one whose cell the nearer entry holds.
    let near: Vec<NodeInfo> =
        [ME + 1, ME + 2, ME - 1, ME - 2].iter().zip(1u8..).map(|(&id, b)| info(id, 1, b)).collect();
    let entry = info(ME - (1 << 124), 2, 1);
    let loser = info(ME - (1 << 124) + 7, 2, 2);
    let mut members: Vec<(NodeInfo, Duration)> = near.iter().map(|i| (i.clone(), Duration::from_millis(30))).collect();
    // The farther ones first, and the losing one before the winner: the order given does not
    // matter.
    members.insert(0, (loser.clone(), Duration::from_millis(80)));
    members.insert(0, (entry.clone(), Duration::from_millis(20)));
    n.start_member(NOW, &members).expect("a fresh node starts");
    assert!(n.is_ready());
    assert_eq!(joined_events(&drain(&mut n)), 1);
    for i in &near {
        assert!(n.leaf_set().contains(i.id), "{i:?}");
    }
    assert_eq!(n.leaf_set().len(), 4);
    assert!(n.routing_table().iter().any(|c| c.id == entry.id));
    assert_eq!(n.proximity(entry.id), Some(20_000), "the round trip given, in µs");
    assert!(n.peer(loser.id).is_none(), "no table took it: not kept");
    // Routes by what it was given: a key next to the entry goes there.
    assert_eq!(n.next_hop(NodeId::from_u128(ME - (1 << 124) + 3)), Some(entry.id));
    assert_eq!(n.next_hop(NodeId::from_u128(ME + 1)), Some(near[0].id));
}

#[test]
fn a_started_member_cannot_start_or_join_again() {
    let mut n = node(4);
    let members = [(info(ME + 1, 1, 1), Duration::from_millis(1))];
    n.start_member(NOW, &members).expect("starts");
    assert_eq!(n.start_member(NOW, &members), Err(CommandError::AlreadyJoined));
    assert_eq!(n.join(NOW, &[addr(1, 1)]), Err(CommandError::AlreadyJoined));

    let mut joining = node(4);
    joining.join(NOW, &[addr(1, 1)]).expect("joins");
    assert_eq!(joining.start_member(NOW, &members), Err(CommandError::AlreadyJoined));

    let mut gone = node(4);
    gone.leave(NOW);
    assert_eq!(gone.start_member(NOW, &members), Err(CommandError::Left));
}

#[test]
fn members_with_our_own_id_or_given_twice_are_taken_once() {
    let mut n = node(4);
    let a = info(ME + 1, 1, 1);
    let members = [
        (a.clone(), Duration::from_millis(3)),
        (info(ME, 1, 2), Duration::from_millis(1)),
        (a.clone(), Duration::from_millis(9)),
    ];
    n.start_member(NOW, &members).expect("starts");
    assert_eq!(n.peer_count(), 1);
    assert_eq!(n.proximity(a.id), Some(3_000), "the first of the two");
}

/// A started member first asks a near node for a row 30 to 60 s after it started (not 30 s
/// after it was created): a ring started at once spreads its first asks over 30 s, after its
/// first heartbeats rather than on top of them.
#[test]
fn the_first_row_ask_comes_thirty_to_sixty_seconds_after_the_start() {
    // Created at 0 (ticks at 10, 20, 30, 40 s), started at 5 s.
    let mut n = node(2);
    let ccw = info(ME - 1, 1, 1);
    let cw = info(ME + 1, 1, 2);
    // The nearest: the neighbourhood set (of one) holds it, and rows are asked of it.
    let near = info(ME - (1 << 124), 1, 3);
    let members = [
        (ccw.clone(), Duration::from_millis(40)),
        (cw.clone(), Duration::from_millis(40)),
        (near.clone(), Duration::from_millis(2)),
    ];
    n.start_member(NOW, &members).expect("starts");
    drain(&mut n);
    let dialled = |n: &mut Node, at: u64| -> Vec<std::net::SocketAddr> {
        n.handle_timeout(Instant::from_secs(at));
        drain(n)
            .into_iter()
            .filter_map(|o| match o {
                Output::Connect { addr, .. } => Some(addr),
                _ => None,
            })
            .collect()
    };
    for at in [10, 20, 30] {
        assert!(!dialled(&mut n, at).contains(&near.global), "no row ask at {at} s");
    }
    let first = [40, 50, 60, 70].into_iter().find(|&at| dialled(&mut n, at).contains(&near.global));
    assert!(first.is_some_and(|t| t <= 60), "the first ask by the first tick 60 s after the start: {first:?}");
}

/// The first row asks of many members started at once are spread over 30 s.
#[test]
fn first_row_asks_of_a_ring_started_at_once_are_spread() {
    let mut ticks = std::collections::BTreeSet::new();
    for k in 0..40u128 {
        let me = ME + (k << 100);
        let mut c = Config::with_trusted_id(NodeId::from_u128(me), addr(255, 1)).insecure_plaintext();
        c.leaf_set_size = 2;
        c.neighbourhood_size = 1;
        let mut n = Node::new(c, Instant::ZERO).expect("valid config");
        let near = info(me - (1 << 124), 1, 3);
        let members = [
            (info(me - 1, 1, 1), Duration::from_millis(40)),
            (info(me + 1, 1, 2), Duration::from_millis(40)),
            (near.clone(), Duration::from_millis(2)),
        ];
        n.start_member(NOW, &members).expect("starts");
        drain(&mut n);
        for at in [10u64, 20, 30, 40, 50, 60, 70] {
            n.handle_timeout(Instant::from_secs(at));
            if drain(&mut n).iter().any(|o| matches!(o, Output::Connect { addr, .. } if *addr == near.global)) {
                ticks.insert(at);
                break;
            }
        }
    }
    assert!(ticks.len() >= 3, "first asks at ticks {ticks:?}");
}
