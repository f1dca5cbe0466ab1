//! The protocol's own cost per routed message: three nodes wired together in memory, on one
//! thread, no sockets (the in-memory chain of wendy-tokio's throughput bench, without tokio,
//! so that it can be profiled and compared quickly).
//!
//! ```text
//! cargo run --release -p wendy-proto --example chain [-- MESSAGES [ROUNDS]]
//! ```
//! A routes each message towards B's id; B's application routes it on towards C's id (two
//! routed hops, three nodes), in batches of 256 per round, frames encoded, batched per round
//! and decoded. Each of `ROUNDS` (default 3) rounds measures the encrypted and the plaintext
//! chain; the median of each is printed last, with the node counters that explain it.

#![forbid(unsafe_code)]
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant as WallClock;

use bytes::Bytes;
use wendy_proto::{Config, ConnId, Instant, Node, NodeId, Output, Stats};

const PAYLOAD: usize = 32;
const PURPOSE: u8 = 16;
const RELAY: u8 = 17;
const BATCH: usize = 256;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

fn config(id: NodeId, i: usize, plaintext: bool) -> Config {
    let entropy: [u8; 32] = id.as_u128().to_le_bytes().repeat(2).try_into().expect("32 bytes");
    let c = Config::with_trusted_id(id, addr(i)).with_entropy(entropy);
    if plaintext {
        c.insecure_plaintext()
    } else {
        c
    }
}

/// CPU time the process has spent, user and system (Linux: `/proc/self/stat`; elsewhere `None`).
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // utime and stime are the 12th and 13th fields after the command name, in ticks of 10 ms.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Routes `n` messages through the chain: msgs per second of wall time and of CPU time (the
/// steadier figure on a shared machine), and the counters of the three nodes.
fn chain(n: u64, plaintext: bool) -> (f64, Option<f64>, [[u64; 4]; 3]) {
    let t0 = WallClock::now();
    let now = || Instant::from_micros(t0.elapsed().as_micros() as u64);
    let ids: Vec<NodeId> = [1u128, 2, 3].iter().map(|i| NodeId::from_u128(i * (u128::MAX / 4))).collect();
    let mut nodes: Vec<Node> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Node::new(config(id, i, plaintext), now()).expect("valid config"))
        .collect();
    let mut links: BTreeMap<(usize, ConnId), (usize, ConnId)> = BTreeMap::new();
    let mut wire: BTreeMap<(usize, ConnId), Vec<u8>> = BTreeMap::new();
    let mut relays: Vec<Bytes> = Vec::new();
    let (bid, cid) = (ids[1], ids[2]);
    let payload = Bytes::from(vec![0xab; PAYLOAD]);
    let mut got = 0u64;
    let mut round = |nodes: &mut Vec<Node>, got: &mut u64| {
        let t = now();
        for i in 0..nodes.len() {
            while let Some(out) = nodes[i].poll_output() {
                match out {
                    Output::Connect { conn, addr } => {
                        let j = usize::from(addr.port() - 7000);
                        let theirs = nodes[j].handle_accepted(t, addr);
                        links.insert((i, conn), (j, theirs));
                        links.insert((j, theirs), (i, conn));
                        nodes[i].handle_connected(t, conn);
                    }
                    Output::Transmit { conn, data } => {
                        if let Some(&to) = links.get(&(i, conn)) {
                            wire.entry(to).or_default().extend_from_slice(&data);
                        }
                    }
                    Output::Deliver(d) if d.purpose == RELAY => relays.push(d.payload),
                    Output::Deliver(d) if d.purpose == PURPOSE => *got += 1,
                    _ => {}
                }
            }
            for p in relays.drain(..) {
                nodes[i].send(t, cid, PURPOSE, p).expect("relay");
            }
        }
        for ((j, conn), buf) in wire.iter_mut() {
            if !buf.is_empty() {
                nodes[*j].handle_data(t, *conn, buf);
                buf.clear();
            }
        }
        for node in nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|d| d <= t) {
                node.handle_timeout(t);
            }
        }
    };
    nodes[1].join(now(), &[addr(0)]).expect("join");
    nodes[2].join(now(), &[addr(0)]).expect("join");
    for _ in 0..200 {
        round(&mut nodes, &mut got);
    }
    assert!(nodes.iter().all(Node::is_ready), "in-memory ring did not form");
    assert_eq!(nodes[0].next_hop(bid), Some(bid));
    got = 0;
    let mut sent = 0u64;
    let before = [nodes[0].stats(), nodes[1].stats(), nodes[2].stats()];
    let cpu = cpu_time();
    let start = WallClock::now();
    while got < n {
        if sent < n {
            let t = now();
            for _ in 0..BATCH {
                nodes[0].send(t, bid, RELAY, payload.clone()).expect("send");
            }
            sent += BATCH as u64;
        }
        round(&mut nodes, &mut got);
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    let cpu_rate = cpu.zip(cpu_time()).map(|(a, b)| got as f64 / (b - a).max(0.01));
    let diff = |a: Stats, b: Stats| {
        [a.frames_in - b.frames_in, a.frames_out - b.frames_out, a.bytes_out - b.bytes_out, a.acks_out - b.acks_out]
    };
    (rate, cpu_rate, [0, 1, 2].map(|i| diff(nodes[i].stats(), before[i])))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let (mut enc, mut plain, mut enc_cpu, mut plain_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..rounds {
        let (e, ec, stats) = chain(n, false);
        let (p, pc, _) = chain(n, true);
        let show = |c: Option<f64>| c.map_or_else(|| "unknown".into(), |c| format!("{c:.0}"));
        println!(
            "encrypted {e:>10.0} msgs/s ({:>8} per CPU-second)   plaintext {p:>10.0} msgs/s ({:>8} per CPU-second)",
            show(ec),
            show(pc)
        );
        enc.push(e);
        plain.push(p);
        enc_cpu.extend(ec);
        plain_cpu.extend(pc);
        last = Some(stats);
    }
    println!("median: encrypted {:.0} msgs/s, plaintext {:.0} msgs/s", median(enc), median(plain));
    if !enc_cpu.is_empty() && !plain_cpu.is_empty() {
        println!(
            "median per CPU-second: encrypted {:.0} msgs, plaintext {:.0} msgs",
            median(enc_cpu),
            median(plain_cpu)
        );
    }
    if let Some(stats) = last {
        for (name, [frames_in, frames_out, bytes_out, acks_out]) in ["A", "B", "C"].iter().zip(stats) {
            println!(
                "  {name} (encrypted): frames in {frames_in} out {frames_out}, bytes out {bytes_out}, acks out {acks_out} (per message: {:.2} frames out, {:.1} bytes out)",
                frames_out as f64 / n as f64,
                bytes_out as f64 / n as f64
            );
        }
    }
}
