//! The node target's harness on scripted runs: a join through a fake ring, forwarding, a
//! leave, all with the checks of every fuzz step. Shows that the harness reaches the deep
//! states the fuzzer starts from and raises no false alarm on well-behaved peers.

use wendy_proto::fuzzing::{run_node, DialOutcome, FuzzConfig, Key, NodeHarness, Op, StateKind, Who};

fn config() -> FuzzConfig {
    FuzzConfig {
        id: 0x4000_0000_0000_0000_0000_0000_0000_0000,
        seed: 7,
        leaf_set_size: 8,
        max_pending_per_peer: 3,
        max_pending_total: 9,
        max_connections: 8,
        max_hops: 63,
        small_frames: false,
        regional: true,
        hook: false,
    }
}

fn all() -> Vec<u8> {
    (0..24).collect()
}

#[test]
fn scripted_join_forward_and_leave() {
    let mut h = NodeHarness::new(&config());
    h.apply(Op::Join(Who::Pool(0)));
    assert!(h.node().is_joining());
    // The bootstrap answers; the join request reaches it; it sends the whole pool as state.
    h.apply(Op::AnswerAllDials);
    for round in 0..10 {
        for conn in 0..32 {
            h.apply(Op::Reply { conn, members: all() });
        }
        h.apply(Op::AnswerAllDials);
        h.apply(Op::Advance(1000 + round));
    }
    assert!(h.node().is_ready(), "{:?}", h.node());
    assert!(!h.node().leaf_set().is_empty());
    // Routed messages from a peer towards pool keys are forwarded or delivered.
    let conn = h.dial_as(h.pool()[3].clone());
    let _ = conn;
    for k in 0..24 {
        h.apply(Op::Route { conn: 200, key: Key::Pool(k), purpose: 16, hops: 0, len: k });
        h.apply(Op::Send { key: Key::Near(i16::from(k)), purpose: 20, len: 10 });
    }
    h.apply(Op::Jump(3600));
    h.apply(Op::Leave);
    assert!(h.node().has_left());
}

#[test]
fn scripted_hostile_sequences() {
    let ops = vec![
        Op::Accept,
        Op::State { conn: 0, kind: StateKind::LeafSet, members: all() },
        Op::Dial(Who::Me),
        Op::Dial(Who::Pool(1)),
        Op::Hello { conn: 2, who: Who::Pool(2), nonce: [0; 16] },
        Op::Prefix { conn: 2, len: u32::MAX, bytes: vec![1, 2, 3] },
        Op::State { conn: 2, kind: StateKind::JoinState(true), members: all() },
        Op::SendToAddr { who: Who::Pool(5), purpose: 30 },
        Op::AnswerDial { dial: 0, outcome: DialOutcome::As(Who::Pool(9)) },
        Op::Body { conn: 2, body: vec![0xff; 40] },
        Op::Raw { conn: 2, bytes: vec![0, 0, 0, 1, 1], split: 2 },
        Op::Advance(6000),
        Op::EarlyTimeout(5_000_000),
        Op::Close { conn: 2 },
    ];
    run_node(&config(), ops);
}
