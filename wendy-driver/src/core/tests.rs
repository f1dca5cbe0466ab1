//! Tests of the node task's core.
use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;

use wendy_proto::{Config, NodeId};

use super::*;

/// A socket that always has one more byte: a length prefix announcing a 1000-byte frame,
/// then the frame's bytes, one per read.
struct Endless {
    reads: Rc<Cell<usize>>,
}

impl Link for Endless {
    fn queued(&self) -> usize {
        0
    }

    fn try_write(&self, buf: &[u8]) -> usize {
        buf.len()
    }

    fn queue(&self, _: Bytes) {}

    fn try_read(&self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let i = self.reads.get();
        self.reads.set(i + 1);
        buf[0] = [0, 0, 3, 232].get(i).copied().unwrap_or(0);
        Poll::Ready(Ok(1))
    }
}

/// Every attached socket is reported readable once.
#[derive(Default)]
struct Sockets {
    reported: Vec<ConnId>,
    reads: Vec<Rc<Cell<usize>>>,
}

impl Io for Sockets {
    type Stream = ();
    type Link = Endless;

    fn connect(&mut self, _: ConnId, _: SocketAddr) {}

    fn attach(&mut self, conn: ConnId, _: (), _: SocketAddr) -> Endless {
        self.reported.push(conn);
        let reads = Rc::new(Cell::new(0));
        self.reads.push(reads.clone());
        Endless { reads }
    }

    fn take_readable(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.reported);
    }

    fn peer_addr(_: &()) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
    }

    fn unwritten(&self) -> usize {
        0
    }

    fn tasks(&self) -> usize {
        0
    }
}

#[test]
fn a_round_reads_a_bounded_share_of_each_connection_and_reaches_every_one_in_turn() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    let config = Config::with_trusted_id(NodeId::from_u128(1), addr).with_entropy([7; 32]);
    let node = Node::new(config, Instant::ZERO).expect("valid config");
    let (events, _app) = crate::events::channel(1024);
    let mut core = Core::new(node, None, Options::default(), events);
    let mut io = Sockets::default();
    for port in 0..100 {
        core.on_net(&mut io, Net::Accepted((), SocketAddr::from(([127, 0, 0, 1], 8000 + port))));
    }
    let reads = |io: &Sockets| io.reads.iter().map(|r| r.get()).collect::<Vec<_>>();
    core.on_readable(&mut io);
    let first = reads(&io);
    assert_eq!(first.iter().sum::<usize>(), READS_PER_ROUND);
    assert!(first.iter().all(|&n| n <= READS_PER_CONN));
    assert!(core.has_unread());
    // 100 endless connections take 400 reads to get their share each: the next round
    // reaches those the first did not, before the first ones again.
    core.on_readable(&mut io);
    let second = reads(&io);
    assert_eq!(second.iter().sum::<usize>(), 2 * READS_PER_ROUND);
    assert!(second.iter().all(|&n| (READS_PER_CONN..=2 * READS_PER_CONN).contains(&n)), "{second:?}");
    assert!(core.has_unread());
}

/// While the application lags the node reads on: it stops only once 16 windows' worth of
/// deliveries wait beyond the application's queue (here windows of 8: 128).
#[test]
fn a_lagging_application_stops_the_reads_only_past_sixteen_windows() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    let mut config = Config::with_trusted_id(NodeId::from_u128(1), addr).with_entropy([7; 32]);
    config.max_pending_per_peer = 2;
    let node = Node::new(config, Instant::ZERO).expect("valid config");
    let (events, _app) = crate::events::channel(4);
    let opts = Options { event_capacity: 4, ..Default::default() };
    let mut core: Core<Sockets> = Core::new(node, None, opts, events);
    let delivery = || {
        NodeEvent::Deliver(wendy_proto::Delivery {
            key: NodeId::from_u128(1),
            purpose: 16,
            origin: NodeId::from_u128(2),
            hops: 1,
            direct: false,
            intercepted: false,
            payload: Bytes::new(),
        })
    };
    // The application's queue takes 4, then refuses the next round.
    for _ in 0..4 {
        core.emit(delivery());
    }
    core.publish();
    core.emit(delivery());
    core.publish();
    assert!(core.is_lagging());
    while core.outbox.len() < 127 {
        core.emit(delivery());
    }
    assert!(!core.is_saturated(), "127 deliveries wait: it reads on");
    core.emit(delivery());
    assert!(core.is_saturated(), "128 wait: it stops reading");
}
