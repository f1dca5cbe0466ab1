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

use std::net::SocketAddr;
use std::time::Instant as WallClock;

use bytes::Bytes;
use wendy_proto::harness::chain::Chain;
use wendy_proto::{Config, Instant, NodeId, Stats};

const PAYLOAD: usize = 32;

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
    let ids = [1u128, 2, 3].map(|i| NodeId::from_u128(i * (u128::MAX / 4)));
    let configs = [0, 1, 2].map(|i| config(ids[i], i, plaintext));
    let mut chain = Chain::new(configs, &now);
    let payload = Bytes::from(vec![0xab; PAYLOAD]);
    let stats = |c: &Chain| [0, 1, 2].map(|i| c.nodes()[i].stats());
    let before = stats(&chain);
    let cpu = cpu_time();
    let start = WallClock::now();
    chain.run(n, &payload, &now);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu_rate = cpu.zip(cpu_time()).map(|(a, b)| n as f64 / (b - a).max(0.01));
    let diff = |a: Stats, b: Stats| {
        [a.frames_in - b.frames_in, a.frames_out - b.frames_out, a.bytes_out - b.bytes_out, a.acks_out - b.acks_out]
    };
    let after = stats(&chain);
    (rate, cpu_rate, [0, 1, 2].map(|i| diff(after[i], before[i])))
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
