//! The in-memory chain: three nodes A, B and C wired together in memory, on one thread, no
//! sockets. A routes each message towards B's id; B's application routes it on towards C's id
//! (two routed hops). Each round drains every node, then feeds each connection the round's
//! bytes in one `handle_data`, as one socket read would. What the protocol alone costs per
//! routed message: wendy-tokio's throughput benchmark and `examples/chain.rs` both run it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::config::Config;
use crate::id::NodeId;
use crate::output::{CommandError, ConnId, Output};
use crate::time::Instant;
use crate::Node;

/// The purpose of a message on its way from A to B: B's application routes it on to C.
pub const RELAY: u8 = 17;
/// The purpose of a message on its way from B to C, counted when C delivers it.
pub const PURPOSE: u8 = 16;
/// Messages A sends per round.
pub const BATCH: usize = 256;

/// Three nodes wired in memory (see the module documentation).
pub struct Chain {
    nodes: Vec<Node>,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    wire: BTreeMap<(usize, ConnId), Vec<u8>>,
    relays: Vec<Bytes>,
}

impl Chain {
    /// Builds the chain from three configurations with distinct addresses (A first), joins B
    /// and C through A, and lets the announcements settle. `now` is the clock the nodes are fed
    /// (a benchmark passes wall time; the crate itself reads no clock).
    pub fn new(configs: [Config; 3], now: &dyn Fn() -> Instant) -> Self {
        let nodes = configs.into_iter().map(|c| Node::new(c, now()).expect("valid config")).collect();
        let mut chain = Chain { nodes, links: BTreeMap::new(), wire: BTreeMap::new(), relays: Vec::new() };
        let a = chain.nodes[0].info().global;
        chain.nodes[1].join(now(), &[a]).expect("join");
        chain.nodes[2].join(now(), &[a]).expect("join");
        for _ in 0..200 {
            chain.round(now());
        }
        assert!(chain.nodes.iter().all(Node::is_ready), "in-memory ring did not form");
        let b = chain.nodes[1].id();
        assert_eq!(chain.nodes[0].next_hop(b), Some(b));
        chain
    }

    /// The three nodes, A first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Routes `n` messages of `payload` from A through B to C, [`BATCH`] per round, and
    /// returns once C has delivered them all.
    pub fn run(&mut self, n: u64, payload: &Bytes, now: &dyn Fn() -> Instant) {
        let b = self.nodes[1].id();
        let (mut sent, mut got) = (0u64, 0u64);
        while got < n {
            if sent < n {
                let t = now();
                for _ in 0..BATCH {
                    // Refused while A's window towards B is full: sent in a later round.
                    if self.nodes[0].send(t, b, RELAY, payload.clone()) == Err(CommandError::Backpressure) {
                        break;
                    }
                    sent += 1;
                }
            }
            got += self.round(now());
        }
    }

    /// One round at `t`: drain every node, then deliver the round's bytes and due timers.
    /// Returns the messages C delivered.
    fn round(&mut self, t: Instant) -> u64 {
        let c: NodeId = self.nodes[2].id();
        let mut got = 0;
        for i in 0..self.nodes.len() {
            while let Some(out) = self.nodes[i].poll_output() {
                match out {
                    Output::Connect { conn, addr } => {
                        let j = self.index_of(addr);
                        let theirs = self.nodes[j].handle_accepted(t, addr);
                        self.links.insert((i, conn), (j, theirs));
                        self.links.insert((j, theirs), (i, conn));
                        self.nodes[i].handle_connected(t, conn);
                    }
                    Output::Transmit { conn, data } => {
                        if let Some(&to) = self.links.get(&(i, conn)) {
                            self.wire.entry(to).or_default().extend_from_slice(&data);
                        }
                    }
                    Output::Deliver(d) if d.purpose == RELAY => self.relays.push(d.payload),
                    Output::Deliver(d) if d.purpose == PURPOSE => got += 1,
                    _ => {}
                }
            }
            // Only B delivers RELAY messages. What its window towards C refuses is relayed in
            // a later round.
            if i != 1 {
                continue;
            }
            let mut refused = Vec::new();
            for p in self.relays.drain(..) {
                match self.nodes[i].send(t, c, PURPOSE, p.clone()) {
                    Ok(()) => {}
                    Err(CommandError::Backpressure) => refused.push(p),
                    Err(e) => panic!("relay: {e}"),
                }
            }
            self.relays = refused;
        }
        for ((j, conn), buf) in self.wire.iter_mut() {
            if !buf.is_empty() {
                self.nodes[*j].handle_data(t, *conn, buf);
                buf.clear();
            }
        }
        for node in self.nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|d| d <= t) {
                node.handle_timeout(t);
            }
        }
        got
    }

    fn index_of(&self, addr: SocketAddr) -> usize {
        self.nodes.iter().position(|n| n.info().global == addr).expect("a node of the chain")
    }
}
