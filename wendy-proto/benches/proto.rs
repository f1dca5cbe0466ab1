//! Benchmarks of the protocol's hot paths: the next-hop decision, the codec, and one forwarded
//! message from input bytes to the transmit for the next hop; and the cost of one connection's
//! handshake, encrypted (Noise XX) and plaintext; and sealing plus opening one record of an
//! encrypted connection with each ChaCha20-Poly1305 the node can use (ring's, with the `ring`
//! feature, and RustCrypto's).
//!
//! Run with `cargo bench -p wendy-proto --bench proto`.
//!
//! The node under test is node 0 of a 1,000-node network joined through the in-crate
//! [`Harness`] (ids are hashes of `node-<i>`, 1 to 20 ms links), so its leaf set, routing table
//! (cells chosen by measured proximity) and neighbourhood are those a real run builds. Setting
//! the network up takes a few seconds, once. That network runs in plaintext
//! (`Config::insecure_plaintext`), because the forwarding bench plays a client by hand; what
//! encryption adds per frame is measured end to end by wendy-tokio's throughput bench.

#![forbid(unsafe_code)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wendy_proto::harness::Harness;
use wendy_proto::wire::{self, Message, Route, LENGTH_PREFIX, NONCE_LEN};
use wendy_proto::{Config, Identity, Instant, Node, NodeId, NodeInfo, Output, SharedSecret, Target};

/// Nodes in the network the node under test belongs to.
const NETWORK: usize = 1_000;

fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// A 1,000-node network, every node joined; the node under test is node 0.
fn network() -> Harness {
    let started = std::time::Instant::now();
    let mut h = Harness::new(1);
    h.configure = Box::new(|id, a| Config::with_trusted_id(id, a).insecure_plaintext());
    for i in 0..NETWORK {
        h.add_node(NodeId::hash(format!("node-{i}").as_bytes()));
    }
    for i in 1..NETWORK {
        h.join(i, (i * 7919) % i);
        if i % 50 == 0 {
            h.run_for(Duration::from_millis(200));
        }
    }
    assert!(h.run_until_ready(Duration::from_secs(120)), "the network joins");
    h.run_for(Duration::from_secs(5));
    let node = h.node(0);
    node.check_invariants().expect("a consistent node");
    eprintln!(
        "network of {NETWORK} joined in {:.1?}: node 0 has {} leaves, {} routing-table entries in {} rows, {} neighbours",
        started.elapsed(),
        node.leaf_set().len(),
        node.routing_table().len(),
        node.routing_table().row_count(),
        node.neighbourhood().len()
    );
    h
}

fn keys(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId::hash(format!("key-{i}").as_bytes())).collect()
}

fn route_msg(key: NodeId, payload: Bytes) -> Message {
    Message::Route(Route { key, purpose: 16, origin: NodeId::hash(b"bench-client"), hops: 1, seq: 0, payload })
}

fn next_hop(c: &mut Criterion, h: &Harness) {
    let node = h.node(0);
    let keys = keys(1024);
    let routed = keys.iter().filter(|&&k| node.next_hop(k).is_some()).count();
    eprintln!("next_hop: {routed}/1024 keys are forwarded, the rest delivered at node 0");
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

fn forward(c: &mut Criterion, h: &mut Harness) {
    let now = h.now();
    let node = h.node_mut(0);
    drain(node);
    // A client dials node 0 and authenticates.
    let client = NodeInfo::new(NodeId::hash(b"bench-client"), SocketAddr::from(([192, 168, 1, 1], 7000)));
    let inbound = node.handle_accepted(now, client.global);
    node.handle_data(now, inbound, &wire::encode(&Message::Hello { info: client, nonce: [1; NONCE_LEN] }));
    node.handle_data(now, inbound, &wire::encode(&Message::Auth { proof: Vec::new(), probe: None }));
    drain(node);
    // A key node 0 forwards; its next hop usually has an open connection from the joins.
    let key = keys(1024).into_iter().find(|&k| node.next_hop(k).is_some()).expect("a key to forward");
    let next = node.next_hop(key).expect("forwarded");
    let frame = wire::encode(&route_msg(key, Bytes::from(vec![0x42; 100])));
    node.handle_data(now, inbound, &frame);
    let out = drain(node);
    let conn = match out.iter().find_map(|o| match o {
        Output::Connect { conn, .. } => Some(*conn),
        _ => None,
    }) {
        // No connection yet: complete one as the next hop would.
        Some(conn) => {
            node.handle_connected(now, conn);
            drain(node);
            let next_info = node.peer(next).expect("known next hop");
            let ack = Message::HelloAck { info: next_info, nonce: [2; NONCE_LEN], proof: Vec::new(), ready: true };
            node.handle_data(now, conn, &wire::encode(&ack));
            drain(node);
            conn
        }
        None => out
            .iter()
            .find_map(|o| match o {
                Output::Transmit { conn, .. } => Some(*conn),
                _ => None,
            })
            .expect("forwarded on an open connection"),
    };
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
        b.iter(|| {
            node.handle_data(now, inbound, &batch);
            std::iter::from_fn(|| node.poll_output()).count()
        })
    });
    g.finish();
}

/// Two fresh nodes; `a` has just been asked to send to `b`, so it wants to dial.
fn pair(plaintext: bool) -> (Node, Node) {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let secret = std::sync::Arc::new(SharedSecret::new("bench"));
    let cfg = |n: u8| {
        let c = Config::new(Identity::from_entropy(&[n; 32]), addr(u16::from(n)))
            .with_entropy([n; 32])
            .with_credentials(secret.clone());
        if plaintext {
            c.insecure_plaintext()
        } else {
            c
        }
    };
    let mut a = Node::new(cfg(1), Instant::ZERO).expect("valid");
    let b = Node::new(cfg(2), Instant::ZERO).expect("valid");
    a.send_to(Instant::ZERO, Target::Addr(addr(2)), 16, Bytes::from_static(b"x")).expect("queued");
    (a, b)
}

/// Runs the handshake between `a` (dialling) and `b` until nothing more moves; the number of
/// one-way flights it took until `b` delivered `a`'s first message.
fn handshake_once(a: &mut Node, b: &mut Node) -> usize {
    let now = Instant::ZERO;
    let (mut conn_a, mut conn_b) = (None, None);
    let mut flights = 0;
    for _ in 0..10 {
        let mut to_b = Vec::new();
        while let Some(o) = a.poll_output() {
            match o {
                Output::Connect { conn, addr } => {
                    conn_a = Some(conn);
                    conn_b = Some(b.handle_accepted(now, addr));
                    a.handle_connected(now, conn);
                }
                Output::Transmit { data, .. } => to_b.push(data),
                _ => {}
            }
        }
        if !to_b.is_empty() {
            flights += 1;
        }
        for d in to_b {
            b.handle_data(now, conn_b.expect("accepted"), &d);
        }
        let mut to_a = Vec::new();
        let mut delivered = false;
        while let Some(o) = b.poll_output() {
            match o {
                Output::Transmit { data, .. } => to_a.push(data),
                Output::Deliver(_) => delivered = true,
                _ => {}
            }
        }
        if delivered {
            return flights;
        }
        if !to_a.is_empty() {
            flights += 1;
        }
        for d in to_a {
            a.handle_data(now, conn_a.expect("dialled"), &d);
        }
    }
    panic!("the handshake did not complete");
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    for (name, plaintext) in [("noise XXpsk3 (both sides, to first delivery)", false), ("plaintext", true)] {
        let (mut a, mut b) = pair(plaintext);
        eprintln!("{name}: first message delivered after {} one-way flights", handshake_once(&mut a, &mut b));
        g.bench_function(name, |bench| {
            bench.iter_batched(
                || pair(plaintext),
                |(mut a, mut b)| black_box(handshake_once(&mut a, &mut b)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Seals and opens one record (a nonce each) with ring's ChaCha20-Poly1305 and RustCrypto's:
/// 100 bytes (an ack or one routed message), 926 (the mean record of wendy-tokio's 20-node
/// throughput cluster) and 16 KiB.
#[cfg(feature = "ring")]
fn seal_open(c: &mut Criterion) {
    use snow::params::CipherChoice;
    use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
    let mut g = c.benchmark_group("seal_open");
    for len in [100usize, 926, 16 * 1024] {
        g.throughput(Throughput::Bytes(len as u64));
        let resolvers: [(&str, &dyn CryptoResolver); 2] = [("ring", &RingResolver), ("rustcrypto", &DefaultResolver)];
        for (name, resolver) in resolvers {
            let make = || {
                let mut c = resolver.resolve_cipher(&CipherChoice::ChaChaPoly).expect("ChaChaPoly");
                c.set(&[5; 32]);
                c
            };
            let (sealer, opener) = (make(), make());
            let plain = vec![0xab; len];
            let (mut sealed, mut out) = (vec![0; len + 16], vec![0; len]);
            let mut nonce = 0;
            g.bench_function(format!("{name} {len} B"), |bench| {
                bench.iter(|| {
                    nonce += 1;
                    let n = sealer.encrypt(nonce, &[], &plain, &mut sealed);
                    black_box(opener.decrypt(nonce, &[], &sealed[..n], &mut out).expect("opens"))
                })
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    #[cfg(feature = "ring")]
    seal_open(c);
    handshake(c);
    let mut h = network();
    next_hop(c, &h);
    codec(c);
    forward(c, &mut h);
}

criterion_group!(proto, benches);
criterion_main!(proto);
