//! Starts N wendy nodes in one process on 127.0.0.1, joins them, routes M messages towards
//! random keys from random nodes and checks each arrived once, at the numerically closest node.
//!
//! ```text
//! cargo run --release -p wendy-tokio --example cluster -- --nodes 20 --messages 10000 [--json out.json]
//! ```
//!
//! The arguments, the plan, the tally and the report are shared with the smol example
//! (`wendy_driver::cluster`); this file holds what needs Tokio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wendy_driver::cluster::{self, Args, Got, Plan, Tally, PURPOSE};
use wendy_proto::rng::Rng;
use wendy_tokio::{Config, NodeEvent, NodeHandle, NodeId, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse_for("Tokio");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
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
            tokio::time::timeout(Duration::from_secs(30), node.join(via)).await.map_err(|_| "join timed out")??;
        }
        nodes.push(node);
    }
    wait_converged(&nodes, Duration::from_secs(30)).await;
    let join_s = t0.elapsed().as_secs_f64();
    println!("{n} nodes joined in {join_s:.2} s");

    // Collect deliveries from every node.
    let (tx, mut rx) = mpsc::unbounded_channel::<Got>();
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut events = node.take_events().expect("events not taken");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let NodeEvent::Deliver(d) = ev {
                    if let Some(g) = Got::parse(i, &d, origin) {
                        let _ = tx.send(g);
                    }
                }
            }
        });
    }
    drop(tx);

    let ids: Vec<NodeId> = nodes.iter().map(NodeHandle::id).collect();
    let Plan { keys, senders, roots } = Plan::new(&ids, m, &mut rng);
    let handles: Vec<_> = nodes.iter().map(|x| x.sender()).collect();
    let mut tally = Tally::new(m);
    let size = args.payload_size();
    let send_task = tokio::spawn(async move {
        for (k, (&key, &from)) in keys.iter().zip(&senders).enumerate() {
            if handles[from].send(key, PURPOSE, cluster::payload(k, size, origin)).await.is_err() {
                break;
            }
        }
    });

    while tally.delivered() < m {
        let left = tally.time_left(Duration::from_secs(60));
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(g)) => tally.record(g, &roots),
            _ => break,
        }
    }
    let _ = send_task.await;
    let report = tally.report("tokio", &args, join_s);
    let outcome = report.finish(args.json.as_deref());
    for node in &nodes {
        node.stop().await;
    }
    outcome
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
            ok &= node.inspect(move |x| cluster::converged(&ids, x)).await.unwrap_or(false);
        }
        if ok || Instant::now() > end {
            if !ok {
                eprintln!("warning: leaf sets did not converge within {limit:?}");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
