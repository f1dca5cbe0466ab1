//! A burst larger than what one connection may carry unacknowledged, forwarded to a hop that
//! stops acknowledging and then crashes. The node used to write the whole burst and track
//! only the newest 4,096 messages: when the hop was found dead those were routed again and the
//! rest vanished with the connection, without an error. Every message must be delivered,
//! handed to another hop or reported to its origin: now at most a window's worth is written
//! unacknowledged, the next queue's worth waits behind it, and the rest is bounced.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::harness::script;
use wendy_proto::harness::secure_peer::Relay;
use wendy_proto::wire::{Message, Route};
use wendy_proto::{Event, Instant, NodeError, Output};

/// More than a connection's window and queue hold at the defaults (4,096 and 1,024).
const BURST: u64 = 6_000;
/// Messages per sealed record from A.
const RECORD: u64 = 100;

#[test]
fn a_burst_past_the_window_to_a_hop_that_dies_is_never_lost() {
    let mut now = Instant::from_secs(1);
    let Relay { mut node, mut a, conn_a, mut b, conn_b } = Relay::new(now);
    let (aid, bid) = (a.info().id, b.info().id);
    let payload = Bytes::from(vec![0xab; 16]);

    let mut written_to_b = 0u64;
    let mut to_a = BTreeSet::new();
    let mut bounced = BTreeSet::new();
    let (mut delivered, mut reported) = (0u64, 0u64);
    let mut b_open = true;
    let mut tally = |outs: &[Output], a: &mut wendy_proto::harness::secure_peer::SecurePeer| {
        for o in outs {
            match o {
                Output::Deliver(d) if d.purpose == 16 => delivered += 1,
                Output::Event(Event::Error(NodeError::Undeliverable { purpose: 16, .. })) => reported += 1,
                _ => {}
            }
        }
        for m in a.open_outputs(outs, conn_a).expect("A opens what the node sends it") {
            match m {
                Message::Route(r) if r.purpose == 16 => {
                    to_a.insert(r.seq);
                }
                Message::Bounce { seq, purpose: 16, .. } => {
                    bounced.insert(seq);
                }
                _ => {}
            }
        }
    };

    // The burst from A, all of it for B.
    for first in (0..BURST).step_by(RECORD as usize) {
        let msgs: Vec<Message> = (first..first + RECORD)
            .map(|seq| {
                Message::Route(Route { key: bid, purpose: 16, origin: aid, hops: 0, seq, payload: payload.clone() })
            })
            .collect();
        node.handle_bytes(now, conn_a, a.seal(&msgs).expect("seal"));
        let outs = script::drain(&mut node);
        written_to_b += b
            .open_outputs(&outs, conn_b)
            .expect("B opens what the node sends it")
            .iter()
            .filter(|m| matches!(m, Message::Route(_)))
            .count() as u64;
        tally(&outs, &mut a);
    }
    // The hop that acknowledges nothing is sent one window's worth, no more; a window and a
    // queue are held for it, and what is left over is reported to its origin at once.
    assert_eq!(written_to_b, 4_096);

    // B reads but acknowledges nothing, then crashes; every dial to it fails.
    let end = now + Duration::from_secs(300);
    while let Some(t) = node.poll_timeout().filter(|&t| t <= end) {
        now = t;
        node.handle_timeout(now);
        if b_open && now >= Instant::from_secs(4) {
            node.handle_closed(now, conn_b);
            b_open = false;
        }
        let outs = script::drain(&mut node);
        if b_open {
            b.open_outputs(&outs, conn_b).expect("B opens");
        }
        b_open &= !script::closed(&outs, conn_b);
        for conn in script::connects(&outs) {
            node.handle_connect_failed(now, conn);
        }
        tally(&outs, &mut a);
        let outs = script::drain(&mut node);
        tally(&outs, &mut a);
    }
    let accounted = delivered + to_a.len() as u64 + bounced.len() as u64 + reported;
    assert_eq!(
        accounted,
        BURST,
        "delivered {delivered}, handed to A {}, bounced {}, reported {reported}; {written_to_b} were written to B",
        to_a.len(),
        bounced.len()
    );
    assert_eq!(bounced.len() as u64, BURST - 4_096 - 1_024, "the overflow is bounced to its origin");
}

/// While the application lags, what is delivered here is acknowledged as received but not
/// handed on: the sender keeps its copies, and its window bounds what it sends on.
#[test]
fn deliveries_are_handed_on_once_the_application_has_room() {
    let now = Instant::from_secs(1);
    let Relay { mut node, mut a, conn_a, .. } = Relay::new(now);
    let (aid, me) = (a.info().id, node.id());
    let acks = |outs: &[Output], a: &mut wendy_proto::harness::secure_peer::SecurePeer| -> Vec<(u64, u64)> {
        a.open_outputs(outs, conn_a)
            .expect("A opens")
            .into_iter()
            .filter_map(|m| match m {
                Message::Ack { count, passed } => Some((count, passed)),
                _ => None,
            })
            .collect()
    };
    let to_me = |seq| Message::Route(Route { key: me, purpose: 16, origin: aid, hops: 0, seq, payload: Bytes::new() });

    node.set_application_lagging(now, true);
    node.handle_bytes(now, conn_a, a.seal(&[to_me(1), to_me(2)]).expect("seal"));
    let outs = script::drain(&mut node);
    assert_eq!(outs.iter().filter(|o| matches!(o, Output::Deliver(_))).count(), 2, "delivered all the same");
    assert_eq!(acks(&outs, &mut a), vec![(2, 0)], "received, not handed on");

    node.set_application_lagging(now, false);
    assert_eq!(acks(&script::drain(&mut node), &mut a), vec![(2, 2)]);

    // Not lagging: handed on at once.
    node.handle_bytes(now, conn_a, a.seal(&[to_me(3)]).expect("seal"));
    assert_eq!(acks(&script::drain(&mut node), &mut a), vec![(3, 3)]);

    // A layer's message (purpose below 16) is handed on at once even while the application
    // lags: the layer takes it, not the application.
    node.enable_layer(1).expect("a layer purpose");
    node.set_application_lagging(now, true);
    let layer = Message::Route(Route { key: me, purpose: 1, origin: aid, hops: 0, seq: 4, payload: Bytes::new() });
    node.handle_bytes(now, conn_a, a.seal(&[layer]).expect("seal"));
    assert_eq!(acks(&script::drain(&mut node), &mut a), vec![(4, 4)]);
}

/// Large messages fill the window by their bytes, not their count. A connection starts with
/// 256 KiB: of a burst of 60 KB messages for a hop that acknowledges nothing, no more are
/// written than those bytes allow (the one that crosses them last); the rest wait in the hop's
/// queue. Prompt acknowledgements open it up to `route_window_bytes` (4 MiB) and never past;
/// acknowledgements later than a quarter of `ack_timeout_max` halve it. None is lost on the
/// way, and each is written once, in order.
#[test]
fn large_messages_fill_the_window_by_bytes() {
    const SIZE: usize = 60_000;
    const N: u64 = 600;
    const INITIAL: usize = 256 << 10;
    let mut now = Instant::from_secs(1);
    let Relay { mut node, mut a, conn_a, mut b, conn_b } = Relay::new(now);
    let (aid, bid) = (a.info().id, b.info().id);
    let bound = node.config().route_window_bytes();
    let late = node.config().ack_timeout_max / 4;
    let payload = Bytes::from(vec![0xcd; SIZE]);
    let mut written = Vec::new();
    let mut take = |node: &mut wendy_proto::Node, b: &mut wendy_proto::harness::secure_peer::SecurePeer| {
        let outs = script::drain(node);
        for m in b.open_outputs(&outs, conn_b).expect("B opens") {
            if let Message::Route(r) = m {
                written.push(r.seq);
            }
        }
    };
    for seq in 0..N {
        let m = Message::Route(Route { key: bid, purpose: 16, origin: aid, hops: 0, seq, payload: payload.clone() });
        node.handle_bytes(now, conn_a, a.seal(&[m]).expect("seal"));
        take(&mut node, &mut b);
    }
    let fits = |bytes: usize| bytes.div_ceil(SIZE) as u64;
    assert_eq!(
        written.len() as u64,
        fits(INITIAL),
        "as many as a new connection's 256 KiB hold, the last crossing them"
    );
    assert!(fits(bound) < node.config().route_window() as u64, "the count alone would have let more go");

    // B hands on everything it received, promptly: the window opens up to its bound, in a few
    // round trips, and never past it.
    let mut acked = 0u64;
    let mut most = 0;
    let mut ack = |node: &mut wendy_proto::Node, now: Instant, written: &mut Vec<u64>| {
        let got = written.len() as u64;
        assert!(got > acked, "the window reopened");
        acked = got;
        let ack = Message::Ack { count: acked, passed: acked };
        node.handle_bytes(now, conn_b, b.seal(&[ack]).expect("seal"));
        let outs = script::drain(node);
        for m in b.open_outputs(&outs, conn_b).expect("B opens") {
            if let Message::Route(r) = m {
                written.push(r.seq);
            }
        }
        let in_flight = written.len() as u64 - acked;
        assert!(in_flight <= fits(bound), "never more than the bound's bytes unacknowledged");
        in_flight
    };
    for _ in 0..8 {
        now += Duration::from_millis(1);
        most = most.max(ack(&mut node, now, &mut written));
    }
    assert_eq!(most, fits(bound), "prompt acknowledgements open the window to its bound");

    // Acknowledgements later than a quarter of ack_timeout_max: the window is halved.
    now += late + Duration::from_millis(1);
    let in_flight = ack(&mut node, now, &mut written);
    assert_eq!(in_flight, fits(bound / 2), "a late acknowledgement halves the window");

    while (written.len() as u64) < N {
        now += Duration::from_millis(1);
        ack(&mut node, now, &mut written);
    }
    assert_eq!(written, (0..N).collect::<Vec<_>>(), "every message written once, in order");
}
