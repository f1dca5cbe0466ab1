//! Benchmarks of the protocol's hot paths: the next-hop decision, the codec, and one forwarded
//! message from input bytes to the transmit for the next hop.
//!
//! Run with `cargo bench -p wendy-proto --bench proto`.
//!
//! The node under test holds the tables it would have in a 1,000-node network: an
//! authenticated peer sends it one `LeafSet` listing the other 999 nodes (ids are hashes of
//! `node-<i>`), from which it fills its leaf set and routing table exactly as from gossip.

#![forbid(unsafe_code)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wendy_proto::wire::{self, Message, Route, LENGTH_PREFIX, NONCE_LEN};
use wendy_proto::{Config, ConnId, Instant, Node, NodeId, NodeInfo, Output};

const NETWORK: usize = 1_000;

fn info(i: usize) -> NodeInfo {
    let id = NodeId::hash(format!("node-{i}").as_bytes());
    let ip = u32::try_from(i).expect("small index") + (10 << 24);
    NodeInfo::new(id, SocketAddr::from((ip.to_be_bytes(), 7000)))
}

fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Node 0 of a 1,000-node network with its tables filled, and the connection (authenticated,
/// from node 1) the state came in on.
fn network_node() -> (Node, ConnId) {
    let now = Instant::from_secs(1);
    let me = info(0);
    let mut node = Node::new(Config::new(me.id, me.global), now);
    let peer = info(1);
    let conn = node.handle_accepted(now, peer.global);
    node.handle_data(now, conn, &wire::encode(&Message::Hello { info: peer, nonce: [1; NONCE_LEN] }));
    node.handle_data(now, conn, &wire::encode(&Message::Auth { proof: Vec::new() }));
    let leaves: Vec<NodeInfo> = (1..NETWORK).map(info).collect();
    node.handle_data(now, conn, &wire::encode(&Message::LeafSet { leaves }));
    drain(&mut node);
    node.check_invariants().expect("a consistent node");
    (node, conn)
}

fn keys(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId::hash(format!("key-{i}").as_bytes())).collect()
}

fn route_msg(key: NodeId, payload: Bytes) -> Message {
    Message::Route(Route { key, purpose: 16, origin: info(1).id, hops: 1, payload })
}

fn next_hop(c: &mut Criterion) {
    let (node, _) = network_node();
    let keys = keys(1024);
    let routed = keys.iter().filter(|&&k| node.next_hop(k).is_some()).count();
    eprintln!(
        "next_hop: node with {} leaves, {} routing-table entries in {} rows; {routed}/1024 keys go elsewhere",
        node.leaf_set().len(),
        node.routing_table().len(),
        node.routing_table().row_count()
    );
    let mut i = 0;
    c.bench_function("next_hop/1000-node tables", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(node.next_hop(black_box(keys[i])))
        })
    });
}

fn codec(c: &mut Criterion) {
    let msg = route_msg(NodeId::hash(b"key"), Bytes::from(vec![0x42; 100]));
    let mut buf = Vec::with_capacity(256);
    let mut g = c.benchmark_group("codec/route 100 B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_into", |b| {
        b.iter(|| {
            buf.clear();
            wire::encode_into(black_box(&msg), &mut buf);
            black_box(buf.len())
        })
    });
    let body = wire::encode(&msg).slice(LENGTH_PREFIX..);
    g.bench_function("decode_body", |b| b.iter(|| wire::decode_body(black_box(body.clone())).expect("valid")));
    g.bench_function("encode_into+decode_body", |b| {
        b.iter(|| {
            buf.clear();
            wire::encode_into(black_box(&msg), &mut buf);
            let body = Bytes::copy_from_slice(&buf[LENGTH_PREFIX..]);
            wire::decode_body(body).expect("valid")
        })
    });
    g.finish();
}

fn forward(c: &mut Criterion) {
    let (mut node, inbound) = network_node();
    let now = Instant::from_secs(1);
    // A key this node forwards; open the connection to its next hop once.
    let key = keys(1024).into_iter().find(|&k| node.next_hop(k).is_some()).expect("a key to forward");
    let next = node.next_hop(key).expect("forwarded");
    let frame = wire::encode(&route_msg(key, Bytes::from(vec![0x42; 100])));
    node.handle_data(now, inbound, &frame);
    let out = drain(&mut node);
    let (conn, _) = out
        .iter()
        .find_map(|o| match o {
            Output::Connect { conn, addr } => Some((*conn, *addr)),
            _ => None,
        })
        .expect("the node dials the next hop");
    node.handle_connected(now, conn);
    drain(&mut node);
    let next_info = node.peer(next).expect("known next hop").clone();
    let ack = Message::HelloAck { info: next_info, nonce: [2; NONCE_LEN], proof: Vec::new() };
    node.handle_data(now, conn, &wire::encode(&ack));
    drain(&mut node);
    // Steady state: one Route frame in, its Transmit towards `next` out.
    let mut once = || {
        node.handle_data(now, inbound, &frame);
        let mut sent = None;
        while let Some(o) = node.poll_output() {
            if let Output::Transmit { conn: c, data } = o {
                if c == conn {
                    sent = Some(data);
                }
            }
        }
        sent.expect("forwarded on the open connection")
    };
    black_box(once());
    c.bench_function("forward/route 100 B: handle_data -> Transmit", |b| b.iter(&mut once));
    // The same through a batch of frames arriving in one read.
    let mut batch = Vec::new();
    for _ in 0..64 {
        batch.extend_from_slice(&frame);
    }
    let mut g = c.benchmark_group("forward/batch of 64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("handle_data -> 64 Transmits", |b| {
        b.iter_batched(
            || (),
            |()| {
                node.handle_data(now, inbound, &batch);
                std::iter::from_fn(|| node.poll_output()).count()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, next_hop, codec, forward);
criterion_main!(benches);
