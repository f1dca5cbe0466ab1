//! Throughput and latency of wendy over Tokio TCP on 127.0.0.1, against raw TCP.
//!
//! ```text
//! cargo bench -p wendy-tokio --bench throughput
//! WENDY_BENCH_JSON=bench.json cargo bench -p wendy-tokio --bench throughput   # also writes JSON
//! WENDY_BENCH_BATCH=2048 cargo bench -p wendy-tokio --bench throughput   # batches of 2,048, not 256
//! WENDY_BENCH_THREADS=2 cargo bench -p wendy-tokio --bench throughput   # 2 runtime threads
//! ```
//! The runtime has a worker thread per core (`std::thread::available_parallelism`, at least
//! 2), or `WENDY_BENCH_THREADS`: the raw baseline is one connection, a writer and a reader,
//! while the cluster's 20 nodes can use every core.
//! In one run:
//! 1. raw: frames/s of the size of a routed 32-byte message, written in batches by one task and
//!    counted by another over one loopback connection; and the raw round trip of one frame;
//! 2. a 3-node chain A -> B -> C: A routes each message towards B's id, B's application routes
//!    it on towards C's id (two routed hops, three nodes); msgs/s counted at C. Twice: with the
//!    batched API (`send_batch` of 256, `Events::recv_batch`) and with one `send`/`recv` per
//!    message;
//! 3. a 20-node cluster: every node routes towards random keys (batched API); msgs/s delivered
//!    in all, and what the nodes rerouted, dropped as duplicates and reported undeliverable
//!    (no node fails: each of those is a busy peer taken for a failing one);
//! 4. the ceiling set by the protocol's own work: the same 3-node chain with wendy-proto nodes
//!    wired together in memory, on one thread, no sockets, no tasks (frames still encoded,
//!    batched per round and decoded);
//! 5. latency: A and C bounce one message back and forth (one routed hop each way): the routed
//!    round trip against the raw round trip of one frame (like with like: two trips over
//!    loopback each; target at most 2x), and per-hop latency = routed round trip / 2.
//!
//! Every connection is encrypted (Noise, the default). Then the batched chain (2) and the
//! in-memory chain (4) run again with `Config::insecure_plaintext`, and the run reports what
//! encryption keeps of the plaintext rate.
//!
//! On Linux the run also reports the CPU time the process spent (all threads, user and
//! system, from `/proc/self/stat`) per raw frame and per routed message of (2) and (3): on a
//! shared machine the rates move with the load, the CPU spent per message much less.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wendy_proto::harness::chain::Chain;
use wendy_proto::rng::Rng;
use wendy_proto::wire::{self, Message, Route};

use wendy_tokio::{CommandError, Config, Error, NodeEvent, NodeHandle, NodeId, Options};

const PAYLOAD: usize = 32;
const PURPOSE: u8 = 16;
const RELAY: u8 = 17;
/// Messages per `send_batch` by default ([`batch_len`]).
const BATCH: usize = 256;

/// Messages per `send_batch` in the chain and the cluster: `WENDY_BENCH_BATCH`, else [`BATCH`].
fn batch_len() -> usize {
    std::env::var("WENDY_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(BATCH)
}

/// The runtime's worker threads: `WENDY_BENCH_THREADS`, else one per core (at least 2).
fn threads() -> usize {
    std::env::var("WENDY_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads()).enable_all().build().expect("runtime");
    rt.block_on(run());
}

/// True while the plaintext half of the run builds its nodes.
static PLAINTEXT: AtomicBool = AtomicBool::new(false);

/// A node's configuration: chosen ids (trusting mode), encrypted unless `PLAINTEXT` is set.
fn config(id: NodeId, addr: SocketAddr) -> Config {
    let c =
        Config::with_trusted_id(id, addr).with_entropy(id.as_u128().to_le_bytes().repeat(2).try_into().expect("32"));
    if PLAINTEXT.load(Ordering::Relaxed) {
        c.insecure_plaintext()
    } else {
        c
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn route_frame() -> Bytes {
    wire::encode(&Message::Route(Route {
        key: NodeId::from_u128(u128::MAX / 3),
        purpose: PURPOSE,
        origin: NodeId::from_u128(7),
        hops: 1,
        seq: 1,
        payload: Bytes::from(vec![0xab; PAYLOAD]),
    }))
}

async fn run() {
    // For profiling one part: WENDY_BENCH_ONLY=chain (or chain1, cluster, proto, latency).
    match std::env::var("WENDY_BENCH_ONLY").as_deref() {
        Ok("chain") => {
            let (rate, cpu) = chain3(1_000_000, true).await;
            println!("3-node chain: {rate:.0} msgs/s, {} CPU per message", show_ns(cpu));
            return;
        }
        Ok("chain1") => {
            println!("3-node chain, one per call: {:.0} msgs/s", chain3(300_000, false).await.0);
            return;
        }
        Ok("latency") => {
            let raw = raw_round_trip(&route_frame(), 20_000).await;
            let rtt = routed_round_trip(20_000).await;
            println!("raw round trip {raw:.1} us, routed round trip {rtt:.1} us ({:.2}x)", rtt / raw);
            return;
        }
        Ok("proto") => {
            println!("wendy-proto alone: {:.0} msgs/s", proto_chain3(1_000_000));
            PLAINTEXT.store(true, Ordering::Relaxed);
            println!("wendy-proto alone, plaintext: {:.0} msgs/s", proto_chain3(1_000_000));
            return;
        }
        Ok("cluster") => {
            let (rate, _, cpu, again) = cluster20(1_000_000).await;
            println!("20-node cluster: {rate:.0} msgs/s, {} CPU per message; {again}", show_ns(cpu));
            return;
        }
        _ => {}
    }
    let frame = route_frame();
    println!(
        "wendy-tokio throughput (payload {PAYLOAD} B, frame {} B on the wire, batches of {}, {} runtime threads)",
        frame.len(),
        batch_len(),
        threads()
    );
    let (raw, raw_cpu) = raw_frames(&frame, Duration::from_secs(2)).await;
    println!("raw batched TCP:        {:>12.0} frames/s", raw);
    let raw_rtt = raw_round_trip(&frame, 20_000).await;
    println!("raw TCP round trip:     {:>12.1} us (median)", raw_rtt);
    let (chain, chain_cpu) = chain3(1_000_000, true).await;
    println!("3-node chain (2 hops):  {:>12.0} msgs/s  ({:.1}% of raw; batched API)", chain, 100.0 * chain / raw);
    let chain1 = chain3(300_000, false).await.0;
    println!("  same, one per call:   {:>12.0} msgs/s  ({:.1}% of raw)", chain1, 100.0 * chain1 / raw);
    let (cluster, hops, cluster_cpu, again) = cluster20(1_000_000).await;
    println!(
        "20-node cluster:        {:>12.0} msgs/s  ({:.1}% of raw, {hops:.2} hops mean, {:.0} hops/s; batched API)",
        cluster,
        100.0 * cluster / raw,
        cluster * hops
    );
    println!("  in all 20 nodes:     {again}");
    if let (Some(raw_cpu), Some(chain_cpu), Some(cluster_cpu)) = (raw_cpu, chain_cpu, cluster_cpu) {
        println!(
            "CPU time (all threads):  raw {raw_cpu:.0} ns/frame; chain {chain_cpu:.0} ns/msg ({:.1}x raw); cluster {cluster_cpu:.0} ns/msg ({:.1}x raw)",
            chain_cpu / raw_cpu,
            cluster_cpu / raw_cpu
        );
    }
    let ceiling = proto_chain3(1_000_000);
    println!(
        "wendy-proto alone:      {:>12.0} msgs/s  ({:.1}% of raw; the 3-node chain in memory, 1 thread, no I/O)",
        ceiling,
        100.0 * ceiling / raw
    );
    let routed_rtt = routed_round_trip(20_000).await;
    let hop = routed_rtt / 2.0;
    println!(
        "routed round trip:      {:>12.1} us (median; {:.2}x the raw round trip; one routed hop each way)",
        routed_rtt,
        routed_rtt / raw_rtt
    );
    println!("routed per-hop latency: {:>12.1} us (median; {:.2}x the raw round trip)", hop, hop / raw_rtt);
    PLAINTEXT.store(true, Ordering::Relaxed);
    let chain_plain = chain3(1_000_000, true).await.0;
    let ceiling_plain = proto_chain3(1_000_000);
    PLAINTEXT.store(false, Ordering::Relaxed);
    println!(
        "plaintext 3-node chain: {:>12.0} msgs/s  (encrypted keeps {:.1}% of it)",
        chain_plain,
        100.0 * chain / chain_plain
    );
    println!(
        "plaintext wendy-proto:  {:>12.0} msgs/s  (encrypted keeps {:.1}% of it)",
        ceiling_plain,
        100.0 * ceiling / ceiling_plain
    );
    if let Ok(path) = std::env::var("WENDY_BENCH_JSON") {
        let v = serde_json::json!({
            "payload_bytes": PAYLOAD,
            "batch_msgs": batch_len(),
            "runtime_threads": threads(),
            "frame_bytes": frame.len(),
            "raw_frames_per_s": raw,
            "raw_rtt_us_p50": raw_rtt,
            "chain3_msgs_per_s": chain,
            "chain3_ratio": chain / raw,
            "chain3_one_per_call_msgs_per_s": chain1,
            "proto_chain3_in_memory_msgs_per_s": ceiling,
            "proto_chain3_in_memory_ratio": ceiling / raw,
            "cluster20_msgs_per_s": cluster,
            "cluster20_ratio": cluster / raw,
            "cluster20_hops_mean": hops,
            "cluster20_reroutes": again.reroutes,
            "cluster20_duplicates_dropped": again.duplicates,
            "cluster20_undeliverable": again.undeliverable,
            "per_hop_latency_us_p50": hop,
            "per_hop_over_raw_rtt": hop / raw_rtt,
            "routed_rtt_us_p50": routed_rtt,
            "routed_rtt_over_raw_rtt": routed_rtt / raw_rtt,
            "encrypted": true,
            "chain3_plaintext_msgs_per_s": chain_plain,
            "chain3_encrypted_over_plaintext": chain / chain_plain,
            "proto_chain3_in_memory_plaintext_msgs_per_s": ceiling_plain,
            "proto_chain3_encrypted_over_plaintext": ceiling / ceiling_plain,
            "raw_cpu_ns_per_frame": raw_cpu,
            "chain3_cpu_ns_per_msg": chain_cpu,
            "chain3_cpu_over_raw": chain_cpu.zip(raw_cpu).map(|(c, r)| c / r),
            "cluster20_cpu_ns_per_msg": cluster_cpu,
            "cluster20_cpu_over_raw": cluster_cpu.zip(raw_cpu).map(|(c, r)| c / r),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json") + "\n").expect("write json");
        println!("wrote {path}");
    }
}

/// CPU time the process has spent, all threads, user and system; `None` where
/// `/proc/self/stat` cannot be read.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses: utime and
    // stime are the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Nanoseconds of CPU time per item since `since`.
fn cpu_per(since: Option<Duration>, items: u64) -> Option<f64> {
    let spent = cpu_time()?.checked_sub(since?)?;
    Some(spent.as_nanos() as f64 / items.max(1) as f64)
}

fn show_ns(ns: Option<f64>) -> String {
    ns.map_or_else(|| "unknown".into(), |ns| format!("{ns:.0} ns"))
}

/// Frames/s from one task to another over loopback TCP, written 64 KiB at a time, and the CPU
/// time per frame.
async fn raw_frames(frame: &[u8], dur: Duration) -> (f64, Option<f64>) {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let per_batch = (64 << 10) / frame.len();
    let batch: Vec<u8> = frame.iter().copied().cycle().take(per_batch * frame.len()).collect();
    let cpu = cpu_time();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        for _ in 0..16 {
            s.write_all(&batch).await.expect("write");
            sent += per_batch as u64;
        }
    }
    drop(s);
    let bytes = reader.await.expect("reader");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(bytes, sent * frame.len() as u64);
    (sent as f64 / secs, cpu_per(cpu, sent))
}

/// Median round trip of one frame bounced between two tasks.
async fn raw_round_trip(frame: &[u8], n: usize) -> f64 {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let len = frame.len();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; len];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; len];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(frame).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(&mut rtts)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quiet() -> Options {
    let mut o = Options::default();
    o.report_forwarded = false;
    o.report_heartbeats = false;
    o
}

/// Starts nodes with the given ids and joins them one after another; waits until ready.
async fn ring(ids: &[NodeId]) -> Vec<NodeHandle> {
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for &id in ids {
        let node = NodeHandle::start_with(config(id, loopback()), quiet()).await.expect("start");
        if let Some(first) = nodes.first() {
            node.join(&[first.local_addr()]).await.expect("join");
        }
        nodes.push(node);
    }
    // Let the last announcements settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes
}

/// A -> B -> C: msgs/s arriving at C, and the CPU time per message; `batched` uses
/// `send_batch` and `recv_batch`.
async fn chain3(n: u64, batched: bool) -> (f64, Option<f64>) {
    let ids: Vec<NodeId> = [1u128, 2, 3].iter().map(|i| NodeId::from_u128(i * (u128::MAX / 4))).collect();
    let mut nodes = ring(&ids).await;
    let (a, b, c) = (nodes[0].sender(), nodes[1].sender(), nodes[2].id());
    // B relays what it receives towards C.
    let mut b_events = nodes[1].take_events().expect("events");
    let relay = tokio::spawn(async move {
        let mut evs = Vec::new();
        loop {
            evs.clear();
            if b_events.recv_batch(&mut evs).await == 0 {
                break;
            }
            let out: Vec<(NodeId, u8, Bytes)> = evs
                .drain(..)
                .filter_map(|ev| match ev {
                    NodeEvent::Deliver(d) if d.purpose == RELAY => Some((c, PURPOSE, d.payload)),
                    _ => None,
                })
                .collect();
            // A send refused with `Backpressure` (B's window towards C is full) is tried again
            // a millisecond later, before B reads on: B's node reads C's acknowledgements
            // meanwhile.
            if batched {
                send_retrying(&b, out).await;
            } else {
                for (key, purpose, payload) in out {
                    send_one_retrying(&b, key, purpose, payload).await;
                }
            }
        }
    });
    let mut c_events = nodes[2].take_events().expect("events");
    let counter = tokio::spawn(async move {
        let mut got = 0u64;
        let mut evs = Vec::new();
        while got < n {
            if batched {
                evs.clear();
                match tokio::time::timeout(Duration::from_secs(10), c_events.recv_batch(&mut evs)).await {
                    Ok(k) if k > 0 => {
                        got +=
                            evs.iter().filter(|ev| matches!(ev, NodeEvent::Deliver(d) if d.purpose == PURPOSE)).count()
                                as u64;
                    }
                    _ => break,
                }
            } else {
                match tokio::time::timeout(Duration::from_secs(10), c_events.recv()).await {
                    Ok(Some(NodeEvent::Deliver(d))) if d.purpose == PURPOSE => got += 1,
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
        (got, Instant::now())
    });
    let bid = nodes[1].id();
    let payload = Bytes::from(vec![0xab; PAYLOAD]);
    let cpu = cpu_time();
    let start = Instant::now();
    if batched {
        let (mut left, batch_len) = (n as usize, batch_len());
        while left > 0 {
            let k = left.min(batch_len);
            send_retrying(&a, vec![(bid, RELAY, payload.clone()); k]).await;
            left -= k;
        }
    } else {
        for _ in 0..n {
            send_one_retrying(&a, bid, RELAY, payload.clone()).await;
        }
    }
    let (got, end) = counter.await.expect("counter");
    let cpu = cpu_per(cpu, got);
    relay.abort();
    if got < n {
        eprintln!("chain: only {got} of {n} arrived");
    }
    for node in &mut nodes {
        node.stop().await;
    }
    (got as f64 / end.duration_since(start).as_secs_f64(), cpu)
}

/// The 3-node chain with the nodes wired together in memory: what the protocol alone costs
/// (`wendy_proto::harness::chain`: each round A routes a batch towards B; every node's
/// transmits of the round are concatenated per connection and fed to the peer in one
/// `handle_data`, as one socket read would).
fn proto_chain3(n: u64) -> f64 {
    let t0 = Instant::now();
    let now = || wendy_proto::Instant::from_micros(t0.elapsed().as_micros() as u64);
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16));
    let ids = [1u128, 2, 3].map(|i| NodeId::from_u128(i * (u128::MAX / 4)));
    let mut chain = Chain::new([0, 1, 2].map(|i| config(ids[i], addr(i))), &now);
    let payload = Bytes::from(vec![0xab; PAYLOAD]);
    let start = Instant::now();
    chain.run(n, &payload, &now);
    n as f64 / start.elapsed().as_secs_f64()
}

/// What the nodes of a run sent twice or gave up on, summed over them: in a cluster where no
/// node fails, every reroute is a hop that answered late (it was busy) and taken for failing.
#[derive(Debug, Default, Clone, Copy)]
struct Again {
    reroutes: u64,
    duplicates: u64,
    undeliverable: u64,
}

impl std::fmt::Display for Again {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages rerouted, {} duplicate copies dropped, {} undeliverable",
            self.reroutes, self.duplicates, self.undeliverable
        )
    }
}

/// Every node of 20 routes towards random keys: total msgs/s delivered, mean hops, the CPU
/// time per message, and what was sent again.
async fn cluster20(n: u64) -> (f64, f64, Option<f64>, Again) {
    let mut rng = Rng::new(20);
    let ids: Vec<NodeId> = (0..20).map(|_| NodeId::from_u128(rng.next_u128())).collect();
    let mut nodes = ring(&ids).await;
    let delivered = Arc::new(AtomicU64::new(0));
    let hops = Arc::new(AtomicU64::new(0));
    let mut counters = Vec::new();
    for node in &mut nodes {
        let mut ev = node.take_events().expect("events");
        let (delivered, hops) = (delivered.clone(), hops.clone());
        counters.push(tokio::spawn(async move {
            let mut evs = Vec::new();
            loop {
                evs.clear();
                if ev.recv_batch(&mut evs).await == 0 {
                    break;
                }
                let (mut k, mut h) = (0, 0);
                for e in &evs {
                    if let NodeEvent::Deliver(d) = e {
                        h += u64::from(d.hops);
                        k += 1;
                    }
                }
                hops.fetch_add(h, Ordering::Relaxed);
                delivered.fetch_add(k, Ordering::Relaxed);
            }
        }));
    }
    let per = n / nodes.len() as u64;
    let total = per * nodes.len() as u64;
    let cpu = cpu_time();
    let start = Instant::now();
    let mut senders = Vec::new();
    let batch_len = batch_len();
    for (i, node) in nodes.iter().enumerate() {
        let s = node.sender();
        let mut rng = Rng::new(i as u64);
        senders.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![0xab; PAYLOAD]);
            let mut left = per as usize;
            while left > 0 {
                let k = left.min(batch_len);
                let batch = (0..k).map(|_| (NodeId::from_u128(rng.next_u128()), PURPOSE, payload.clone())).collect();
                send_retrying(&s, batch).await;
                left -= k;
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed);
    let cpu = cpu_per(cpu, got);
    if got < total {
        eprintln!("cluster: only {got} of {total} arrived");
    }
    for c in counters {
        c.abort();
    }
    let mut again = Again::default();
    for node in &nodes {
        let s = node.metrics().await.expect("metrics").stats;
        again.reroutes += s.reroutes;
        again.duplicates += s.duplicates_dropped;
        again.undeliverable += s.undeliverable;
    }
    for node in &mut nodes {
        node.stop().await;
    }
    (got as f64 / secs, hops.load(Ordering::Relaxed) as f64 / got.max(1) as f64, cpu, again)
}

/// Sends `batch`; what the node refuses with `Backpressure` (its queue towards a next hop is
/// full: the hop's window is, or on a loaded machine the connection opens slowly) is sent
/// again a millisecond later, as an application would.
async fn send_retrying(s: &wendy_tokio::Sender, mut batch: Vec<(NodeId, u8, Bytes)>) {
    loop {
        // The refused ones are named by their index in the batch: keep a copy to resend them
        // (a key and a reference-counted payload each).
        let copy = batch.clone();
        match s.send_batch(batch).await {
            Ok(()) => return,
            Err(Error::BatchRefused(refused))
                if refused.iter().all(|(_, e)| matches!(e, CommandError::Backpressure)) =>
            {
                batch = refused.iter().map(|&(i, _)| copy[i].clone()).collect();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Sends one message, again a millisecond later while the node refuses it with `Backpressure`
/// (its window and queue towards the next hop are full).
async fn send_one_retrying(s: &wendy_tokio::Sender, key: NodeId, purpose: u8, payload: Bytes) {
    loop {
        match s.send(key, purpose, payload.clone()).await {
            Ok(()) => return,
            Err(Error::Command(CommandError::Backpressure)) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Median routed round trip: A and C bounce a message, one routed hop each way.
async fn routed_round_trip(n: usize) -> f64 {
    let ids: Vec<NodeId> = [1u128, 2, 3].iter().map(|i| NodeId::from_u128(i * (u128::MAX / 4))).collect();
    let mut nodes = ring(&ids).await;
    let (aid, cid) = (nodes[0].id(), nodes[2].id());
    let c = nodes[2].sender();
    let mut c_events = nodes[2].take_events().expect("events");
    let echo = tokio::spawn(async move {
        while let Some(ev) = c_events.recv().await {
            if let NodeEvent::Deliver(d) = ev {
                if c.send(aid, PURPOSE, d.payload).await.is_err() {
                    break;
                }
            }
        }
    });
    let payload = Bytes::from(vec![0xab; PAYLOAD]);
    let mut rtts = Vec::with_capacity(n);
    let mut hops_seen = 0u64;
    for _ in 0..n {
        let t = Instant::now();
        nodes[0].send(cid, PURPOSE, payload.clone()).await.expect("send");
        loop {
            match tokio::time::timeout(Duration::from_secs(5), nodes[0].next_event()).await {
                Ok(Some(NodeEvent::Deliver(d))) => {
                    hops_seen += u64::from(d.hops);
                    break;
                }
                Ok(Some(_)) => {}
                _ => panic!("latency probe lost"),
            }
        }
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    echo.abort();
    for node in &mut nodes {
        node.stop().await;
    }
    assert_eq!(hops_seen, n as u64, "one routed hop each way expected");
    median(&mut rtts)
}
