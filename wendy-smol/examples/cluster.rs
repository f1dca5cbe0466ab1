//! Starts N wendy nodes in one process on 127.0.0.1, joins them, routes M messages towards
//! random keys from random nodes and checks each arrived once, at the numerically closest node.
//!
//! ```text
//! cargo run --release -p wendy-smol --example cluster -- --nodes 20 --messages 10000 [--json out.json]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use smol::channel;
use smol::future::FutureExt;
use wendy_proto::rng::Rng;
use wendy_smol::{Config, NodeEvent, NodeHandle, NodeId, Options};

/// Route messages through an in-process cluster of wendy nodes (smol driver).
#[derive(Parser, Debug)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Number of messages.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// Seed for ids, keys and senders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the outcome as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const PURPOSE: u8 = 16;

struct Got {
    node: usize,
    msg: usize,
    hops: u8,
    latency_us: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    // Two executor threads, like the Tokio example's runtime on this two-core machine.
    if std::env::var_os("SMOL_THREADS").is_none() {
        std::env::set_var("SMOL_THREADS", "2");
    }
    smol::block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.nodes.max(1);
    let m = args.messages;
    let mut rng = Rng::new(args.seed);
    let origin = Instant::now();
    let mut opts = Options::default();
    opts.report_forwarded = false;
    opts.report_heartbeats = false;

    // Start and join, one after another, each through a random node already in the ring.
    let t0 = Instant::now();
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let id = NodeId::from_u128(rng.next_u128());
        let node = NodeHandle::start_with(Config::new(id, SocketAddr::from(([127, 0, 0, 1], 0))), opts.clone()).await?;
        if i > 0 {
            let via = nodes[rng.below(i as u64) as usize].local_addr();
            let r = async { Some(node.join(via).await) }
                .or(async {
                    smol::Timer::after(Duration::from_secs(30)).await;
                    None
                })
                .await;
            r.ok_or("join timed out")??;
        }
        nodes.push(node);
    }
    wait_converged(&nodes, Duration::from_secs(30)).await;
    let join_s = t0.elapsed().as_secs_f64();
    println!("{n} nodes joined in {join_s:.2} s");

    // Collect deliveries from every node.
    let (tx, rx) = channel::unbounded::<Got>();
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut events = node.take_events().expect("events not taken");
        let tx = tx.clone();
        smol::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let NodeEvent::Deliver(d) = ev {
                    if d.purpose == PURPOSE && d.payload.len() >= 16 {
                        let msg = u64::from_be_bytes(d.payload[..8].try_into().expect("8 bytes")) as usize;
                        let sent = u64::from_be_bytes(d.payload[8..16].try_into().expect("8 bytes"));
                        let now = origin.elapsed().as_micros() as u64;
                        let _ = tx.try_send(Got { node: i, msg, hops: d.hops, latency_us: now.saturating_sub(sent) });
                    }
                }
            }
        })
        .detach();
    }
    drop(tx);

    // The expected root of every key.
    let mut ring: Vec<(NodeId, usize)> = nodes.iter().enumerate().map(|(i, x)| (x.id(), i)).collect();
    ring.sort();
    let keys: Vec<NodeId> = (0..m).map(|_| NodeId::from_u128(rng.next_u128())).collect();
    let senders: Vec<usize> = (0..m).map(|_| rng.below(n as u64) as usize).collect();
    let roots: Vec<usize> = keys.iter().map(|&k| root_of(&ring, k)).collect();

    let handles: Vec<_> = nodes.iter().map(|x| x.sender()).collect();
    let t1 = Instant::now();
    let size = args.payload.max(16);
    let send_task = smol::spawn(async move {
        for (k, (&key, &from)) in keys.iter().zip(&senders).enumerate() {
            let mut p = vec![0u8; size];
            p[..8].copy_from_slice(&(k as u64).to_be_bytes());
            p[8..16].copy_from_slice(&(origin.elapsed().as_micros() as u64).to_be_bytes());
            if handles[from].send(key, PURPOSE, p).await.is_err() {
                break;
            }
        }
    });

    let mut seen: HashMap<usize, u32> = HashMap::new();
    let (mut delivered, mut correct, mut dup) = (0usize, 0usize, 0usize);
    let mut hops_sum = 0u64;
    let mut lat = Vec::with_capacity(m);
    let mut last = t1;
    let deadline = Duration::from_secs(60);
    while delivered < m {
        let left = deadline.saturating_sub(t1.elapsed());
        let got = async { rx.recv().await.ok() }
            .or(async {
                smol::Timer::after(left).await;
                None
            })
            .await;
        match got {
            Some(g) => {
                let c = seen.entry(g.msg).or_default();
                *c += 1;
                if *c > 1 {
                    dup += 1;
                    continue;
                }
                delivered += 1;
                correct += usize::from(roots.get(g.msg) == Some(&g.node));
                hops_sum += u64::from(g.hops);
                lat.push(g.latency_us);
                last = Instant::now();
            }
            _ => break,
        }
    }
    send_task.await;
    let secs = last.duration_since(t1).as_secs_f64().max(1e-9);
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let hops_mean = if delivered > 0 { hops_sum as f64 / delivered as f64 } else { 0.0 };
    let msgs_per_s = delivered as f64 / secs;
    println!("driver:      smol");
    println!("messages:    {m} sent, {delivered} delivered, {correct} at the right node, {dup} duplicates");
    println!("hops:        {hops_mean:.2} mean");
    println!("throughput:  {msgs_per_s:.0} msgs/s ({secs:.3} s)");
    println!("latency:     p50 {} us, p99 {} us (send to delivery, under full load)", pct(0.5), pct(0.99));
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "driver": "smol",
            "nodes": n,
            "messages": m,
            "delivered": delivered,
            "correct": correct,
            "duplicates": dup,
            "hops_mean": hops_mean,
            "msgs_per_s": msgs_per_s,
            "join_s": join_s,
            "p50_latency_us": pct(0.5),
            "p99_latency_us": pct(0.99),
            "payload_bytes": size,
            "seed": args.seed,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")?;
        println!("wrote {}", path.display());
    }
    for node in &nodes {
        node.stop().await;
    }
    if correct == m {
        Ok(())
    } else {
        Err(format!("{} of {m} messages not delivered at the right node", m - correct).into())
    }
}

/// Index of the node numerically closest to `key`, from the sorted ring.
fn root_of(ring: &[(NodeId, usize)], key: NodeId) -> usize {
    let i = ring.partition_point(|&(id, _)| id < key);
    let a = ring[i % ring.len()];
    let b = ring[(i + ring.len() - 1) % ring.len()];
    if key.is_closer(b.0, a.0) {
        b.1
    } else {
        a.1
    }
}

/// Waits until every node is ready and holds its ring neighbours in its leaf set.
async fn wait_converged(nodes: &[NodeHandle], limit: Duration) {
    let mut ids: Vec<NodeId> = nodes.iter().map(|x| x.id()).collect();
    ids.sort();
    let ids = Arc::new(ids);
    let end = Instant::now() + limit;
    loop {
        let mut ok = true;
        for node in nodes {
            let ids = ids.clone();
            let good = node
                .inspect(move |x| {
                    let n = ids.len();
                    if n < 2 {
                        return true;
                    }
                    let pos = ids.binary_search(&x.id()).unwrap_or(0);
                    let members = x.leaf_set().members();
                    x.is_ready() && members.contains(&ids[(pos + 1) % n]) && members.contains(&ids[(pos + n - 1) % n])
                })
                .await
                .unwrap_or(false);
            ok &= good;
        }
        if ok || Instant::now() > end {
            if !ok {
                eprintln!("warning: leaf sets did not converge within {limit:?}");
            }
            return;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}
