//! Zero heap allocations per forwarded frame in steady state (issue 11), measured with a
//! counting global allocator (`stats_alloc`: it needs no unsafe code here). A node on the
//! default encrypted transport forwards routed messages from one open connection to another:
//! the records arrive, are opened, decoded, routed, re-encoded, sealed and handed out, and the
//! next hop acknowledges them. One test in this binary, so that no other test thread allocates
//! while it measures.

use std::alloc::System;

use bytes::Bytes;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use wendy_proto::harness::secure_peer::Relay;
use wendy_proto::wire::{Message, Route};
use wendy_proto::{Instant, Node, Output};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Routed messages per record from the sender.
const PER_ROUND: usize = 32;
/// Rounds before measuring (buffers and queues reach their steady size), and measured.
const WARM: usize = 50;
const MEASURED: usize = 200;
/// Measured windows. The allocator counts every thread, and once in a loaded run a window saw
/// 4 allocations that other runs do not (most likely the test harness's own thread, which
/// waits meanwhile); the node's own work is deterministic, the same
/// in every window, so one window without an allocation shows it allocates nothing.
const WINDOWS: usize = 3;

#[test]
fn forwarding_allocates_nothing_per_frame_in_steady_state() {
    let now = Instant::from_secs(1);
    // A and B join through the node (they announce themselves to it): B is then the closest
    // node to its own id.
    let Relay { mut node, mut a, conn_a, mut b, conn_b } = Relay::new(now);
    let (aid, bid) = (a.info().id, b.info().id);

    // Every record of the run, sealed in advance (the peers' work is not measured): A's routed
    // messages, and B's acknowledgements of them.
    let payload = Bytes::from(vec![0xab; 32]);
    let route = Message::Route(Route { key: bid, purpose: 16, origin: aid, hops: 0, seq: 0, payload });
    let rounds = WARM + WINDOWS * MEASURED;
    let from_a: Vec<Bytes> = (0..rounds).map(|_| a.seal(&vec![route.clone(); PER_ROUND]).expect("seal")).collect();
    // B received and handed on everything: the node drops its copies (custody) as it goes.
    let acked = |r: usize| ((r + 1) * PER_ROUND) as u64;
    let from_b: Vec<Bytes> =
        (0..rounds).map(|r| b.seal(&[Message::Ack { count: acked(r), passed: acked(r) }]).expect("seal")).collect();
    // Cloned once, so that slicing them later does not allocate their shared header.
    let keep: Vec<(Bytes, Bytes)> = from_a.iter().zip(&from_b).map(|(x, y)| (x.clone(), y.clone())).collect();

    let mut forwarded = 0usize;
    // What the node sends B, copied into memory reserved in advance (keeping the node's
    // buffers would make it allocate new ones).
    let mut to_b: Vec<u8> = Vec::with_capacity(rounds * PER_ROUND * 256);
    let mut transmits_to_b = 0usize;
    let round = |node: &mut Node, r: usize, forwarded: &mut usize, to_b: &mut Vec<u8>, n: &mut usize| {
        node.handle_bytes(now, conn_a, from_a[r].clone());
        while let Some(out) = node.poll_output() {
            match out {
                Output::Forwarded { next, .. } if next == bid => *forwarded += 1,
                Output::Transmit { conn, data } if conn == conn_b => {
                    to_b.extend_from_slice(&data);
                    *n += 1;
                }
                _ => {}
            }
        }
        node.handle_bytes(now, conn_b, from_b[r].clone());
        while node.poll_output().is_some() {}
    };
    for r in 0..WARM {
        round(&mut node, r, &mut forwarded, &mut to_b, &mut transmits_to_b);
    }
    assert_eq!(forwarded, WARM * PER_ROUND);
    let mut windows = Vec::new();
    for w in 0..WINDOWS {
        let region = Region::new(GLOBAL);
        for r in WARM + w * MEASURED..WARM + (w + 1) * MEASURED {
            round(&mut node, r, &mut forwarded, &mut to_b, &mut transmits_to_b);
        }
        windows.push(region.change());
    }
    drop(keep);
    assert_eq!(forwarded, rounds * PER_ROUND, "every routed message was forwarded to B");
    // One transmit towards B per round: its frames sealed together.
    assert_eq!(transmits_to_b, rounds);
    assert!(
        windows.iter().any(|s| (s.allocations, s.reallocations) == (0, 0)),
        "heap allocations while forwarding {} frames in steady state, in each window: {windows:?}",
        MEASURED * PER_ROUND
    );
    // B really receives them, in order, sealed with the connection's keys.
    let got = b.open(&to_b).expect("b opens what the node sent");
    let routed = got.iter().filter(|m| matches!(m, Message::Route(r) if r.key == bid && r.hops == 1)).count();
    assert_eq!(routed, rounds * PER_ROUND);
}
