//! A next hop that is slow but alive: it acknowledges what it receives, in order, but each
//! message waits behind a backlog far longer than the ack timeout. The sender used to take the
//! lag for a dead hop: once the oldest message had waited one ack timeout it closed the
//! connection, suspected the peer and routed its whole backlog round a live node. While
//! acknowledgements keep coming the hop is making progress, and nothing it holds is late.

use std::time::Duration;

use bytes::Bytes;
use wendy_proto::harness::script;
use wendy_proto::harness::secure_peer::Relay;
use wendy_proto::wire::{Message, Route};
use wendy_proto::{Instant, Output};

/// Messages forwarded in one burst; the hop acknowledges one every `GAP`.
const BURST: u64 = 64;
const GAP: Duration = Duration::from_millis(20);

#[test]
fn a_hop_that_acknowledges_slowly_but_steadily_is_not_routed_round() {
    let mut now = Instant::from_secs(1);
    let Relay { mut node, mut a, conn_a, mut b, conn_b } = Relay::new(now);
    let rto_min = node.config().ack_timeout_min;
    let (aid, bid) = (a.info().id, b.info().id);

    // A burst from A, all forwarded to B at once.
    let payload = Bytes::from(vec![0xab; 32]);
    let msgs: Vec<Message> = (0..BURST)
        .map(|seq| Message::Route(Route { key: bid, purpose: 16, origin: aid, hops: 0, seq, payload: payload.clone() }))
        .collect();
    node.handle_bytes(now, conn_a, a.seal(&msgs).expect("seal"));
    let forwarded =
        script::drain(&mut node).iter().filter(|o| matches!(o, Output::Forwarded { next, .. } if *next == bid)).count();
    assert_eq!(forwarded as u64, BURST);

    // B takes one every GAP: the last waits BURST * GAP, many times the ack timeout.
    assert!(GAP * BURST as u32 > 4 * rto_min);
    let mut closed = false;
    for k in 1..=BURST {
        let until = now + GAP;
        while let Some(t) = node.poll_timeout().filter(|&t| t <= until) {
            node.handle_timeout(t);
            closed |= script::drain(&mut node).iter().any(|o| matches!(o, Output::Close { conn } if *conn == conn_b));
        }
        now = until;
        node.handle_bytes(now, conn_b, b.seal(&[Message::Ack { count: k, passed: k }]).expect("seal"));
        closed |= script::drain(&mut node).iter().any(|o| matches!(o, Output::Close { conn } if *conn == conn_b));
    }
    let stats = node.stats();
    assert!(!closed, "the connection to a hop that keeps acknowledging was closed");
    assert_eq!(stats.reroutes, 0, "messages in a live hop's backlog were routed round it");
    assert_eq!(stats.undeliverable, 0);
}
