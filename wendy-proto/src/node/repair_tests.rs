//! Tests of the deferred repair of routing-table holes.
use super::*;
use crate::harness::script::{self, addr, drain, info};
use crate::output::{ConnId, Output};

const ME: u128 = 0x8 << 124;

/// Our node (plaintext, one leaf-set member a side) with `members` (first digits) announced:
/// each is a first-row entry; the nearest on each side is also in the leaf set. Returns the
/// node drained and each member's connection.
fn with_first_row(digits: &[u128]) -> (Node, Vec<(NodeId, ConnId)>) {
    let now = Instant::from_secs(1);
    let mut cfg = crate::Config::with_trusted_id(NodeId::from_u128(ME), addr(255, 1)).insecure_plaintext();
    cfg.leaf_set_size = 2;
    let mut node = Node::new(cfg, now).expect("valid config");
    let members: Vec<(NodeId, ConnId)> = digits
        .iter()
        .zip(2u8..)
        .map(|(&d, host)| {
            let who = info((d << 124) + 1, host, 1);
            let conn = script::authed(&mut node, now, &who);
            script::send(&mut node, now, conn, &Message::Announce { seq: 1 });
            (who.id, conn)
        })
        .collect();
    for &(id, _) in &members {
        assert!(node.table.contains(id), "{id:?} holds a first-row cell");
    }
    drain(&mut node);
    (node, members)
}

/// The rows asked for on any of `conns`, with the connection.
fn row_asks(out: &[Output], members: &[(NodeId, ConnId)]) -> Vec<(NodeId, u8)> {
    let mut asks = Vec::new();
    for &(id, conn) in members {
        for m in script::messages(out, conn) {
            if let Message::RowRequest { row } = m {
                asks.push((id, row));
            }
        }
    }
    asks
}

/// Two first-row entries outside the leaf set fail: nothing is asked at once; once the
/// oldest hole has waited one table probe period, one member of the row is asked for it,
/// once for both holes.
#[test]
fn holes_of_one_row_are_repaired_by_one_ask_after_a_probe_period() {
    let (mut node, members) = with_first_row(&[0x7, 0x9, 0xa, 0xc]);
    let (b, c) = (members[2].0, members[3].0);
    assert!(!node.leaf.contains(b) && !node.leaf.contains(c));
    let t = Instant::from_secs(5);
    node.peer_failed(t, b);
    node.peer_failed(t + core::time::Duration::from_secs(1), c);
    assert_eq!(row_asks(&drain(&mut node), &members), [], "asked at once");
    let period = node.table_probe;
    node.repair_holes(t + (period - core::time::Duration::from_micros(1)));
    assert_eq!(row_asks(&drain(&mut node), &members), [], "asked before a probe period");
    node.repair_holes(t + period);
    let asks = row_asks(&drain(&mut node), &members);
    assert_eq!(asks.len(), 1, "one ask for the row: {asks:?}");
    assert_eq!(asks[0].1, 0);
    assert!([members[0].0, members[1].0].contains(&asks[0].0), "asked a live member of the row");
    node.repair_holes(t + period * 3);
    assert_eq!(row_asks(&drain(&mut node), &members), [], "a repaired hole is asked for once");
}

/// A hole that a node learned meanwhile filled costs no ask.
#[test]
fn a_hole_filled_before_its_repair_costs_nothing() {
    let (mut node, mut members) = with_first_row(&[0x7, 0x9, 0xa, 0xc]);
    let t = Instant::from_secs(5);
    node.peer_failed(t, members[2].0);
    drain(&mut node);
    let arrival = info((0xa << 124) + 7, 9, 1);
    let conn = script::authed(&mut node, t, &arrival);
    script::send(&mut node, t, conn, &Message::Announce { seq: 1 });
    assert!(node.table.contains(arrival.id), "the arrival fills the hole");
    members.push((arrival.id, conn));
    drain(&mut node);
    node.repair_holes(t + node.table_probe * 2);
    assert_eq!(row_asks(&drain(&mut node), &members), []);
}
