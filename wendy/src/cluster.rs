//! `wendy cluster`: N nodes in this process on 127.0.0.1 join one by one, then M messages
//! towards random keys from random nodes; each must arrive once, at the numerically closest
//! node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use wendy_driver::cluster::{self, Got, Plan, Tally, PURPOSE};
use wendy_proto::rng::Rng;
use wendy_proto::{Event, NodeError};
use wendy_tokio::{Config, NodeEvent, NodeHandle, NodeId, Options};

use crate::Error;

/// Messages per `send_batch`.
const BATCH: usize = 256;
/// How often progress is printed during a long run.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Start many nodes in this process, route messages through them, and check where they
/// arrive.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    run: cluster::Args,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Run the nodes without encryption (insecure: to measure what encryption costs).
    #[arg(long)]
    insecure_plaintext: bool,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let timeout = Duration::from_secs(args.timeout);
    let insecure = args.insecure_plaintext;
    let args = args.run;
    let n = args.nodes.max(1);
    let m = args.messages;
    let mut rng = Rng::new(args.seed);
    let origin = Instant::now();
    let mut opts = Options::default();
    opts.report_forwarded = false;
    opts.report_heartbeats = false;
    let probe = Config::with_trusted_id(NodeId::hash(b"probe"), SocketAddr::from(([127, 0, 0, 1], 0)));
    let max = wendy_driver::max_payload(&probe);
    if args.payload_size() > max {
        return Err(format!("--payload {} exceeds the largest payload, {max} bytes", args.payload_size()).into());
    }

    fds::ensure(n)?;

    let t0 = Instant::now();
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let id = NodeId::from_u128(rng.next_u128());
        // Ids from the seed (trusting mode, so runs place nodes alike); encrypted unless asked.
        let mut config = Config::with_trusted_id(id, SocketAddr::from(([127, 0, 0, 1], 0)));
        if insecure {
            config = config.insecure_plaintext();
        }
        let node = NodeHandle::start_with(config, opts.clone()).await?;
        if i > 0 {
            let via = nodes[rng.below(i as u64) as usize].local_addr();
            tokio::time::timeout(timeout, node.join(&[via]))
                .await
                .map_err(|_| format!("node {i} did not join through {via} within {} s", timeout.as_secs()))??;
        }
        nodes.push(node);
        if (i + 1) % 100 == 0 {
            println!("{} nodes started", i + 1);
        }
    }
    wait_converged(&nodes, timeout).await;
    let join_s = t0.elapsed().as_secs_f64();
    println!("{n} nodes joined in {join_s:.2} s");

    let ids: Vec<NodeId> = nodes.iter().map(NodeHandle::id).collect();
    let Plan { keys, senders, roots } = Plan::new(&ids, m, &mut rng);
    // A message the nodes gave up on is reported to its sender by its key.
    let by_key: Arc<HashMap<NodeId, usize>> = Arc::new(keys.iter().enumerate().map(|(k, &key)| (key, k)).collect());

    let (tx, mut rx) = mpsc::unbounded_channel::<Fate>();
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut events = node.take_events().expect("events not taken");
        let tx = tx.clone();
        let by_key = by_key.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let fate = match ev {
                    NodeEvent::Deliver(d) => Got::parse(i, &d, origin).map(Fate::Delivered),
                    NodeEvent::Event(Event::Error(NodeError::Undeliverable { key, purpose: PURPOSE })) => {
                        by_key.get(&key).map(|&k| Fate::Undeliverable(k))
                    }
                    _ => None,
                };
                if let Some(f) = fate {
                    let _ = tx.send(f);
                }
            }
        });
    }
    drop(tx);

    let mut per_node: Vec<Vec<(NodeId, u8, Bytes)>> = vec![Vec::new(); n];
    let size = args.payload_size();
    for (k, (&key, &from)) in keys.iter().zip(&senders).enumerate() {
        per_node[from].push((key, PURPOSE, Bytes::from(cluster::payload(k, size, origin))));
    }
    let mut tally = Tally::new(m);
    let mut sending = tokio::task::JoinSet::new();
    for (node, msgs) in nodes.iter().zip(per_node) {
        let sender = node.sender();
        sending.spawn(async move {
            let mut msgs = msgs.into_iter().peekable();
            while msgs.peek().is_some() {
                let batch: Vec<_> = msgs.by_ref().take(BATCH).collect();
                sender.send_batch(batch).await?;
            }
            Ok::<(), wendy_driver::Error>(())
        });
    }

    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    // Until every message is delivered or reported undeliverable to its sender.
    while tally.accounted() < m {
        let left = tally.time_left(timeout);
        if left.is_zero() {
            println!("gave up waiting after {} s (--timeout)", timeout.as_secs());
            // A sender still waiting for room in its node is not waited for.
            sending.abort_all();
            break;
        }
        tokio::select! {
            got = tokio::time::timeout(left, rx.recv()) => match got {
                Ok(Some(Fate::Delivered(g))) => tally.record(g, &roots),
                Ok(Some(Fate::Undeliverable(k))) => tally.record_undeliverable(k),
                _ => break,
            },
            Some(sent) = sending.join_next() => {
                if let Ok(Err(e)) = sent {
                    return Err(format!("a send failed: {e}").into());
                }
            }
            _ = progress.tick() => println!("{} of {m} delivered so far", tally.delivered()),
        }
    }
    while let Some(sent) = sending.join_next().await {
        if let Ok(Err(e)) = sent {
            return Err(format!("a send failed: {e}").into());
        }
    }
    // Reports that came with the last deliveries.
    while let Ok(f) = rx.try_recv() {
        match f {
            Fate::Delivered(g) => tally.record(g, &roots),
            Fate::Undeliverable(k) => tally.record_undeliverable(k),
        }
    }
    for node in &nodes {
        if let Ok(s) = node.stats().await {
            tally.add_node_stats(&s);
        }
    }
    let report = tally.report("tokio", &args, join_s);
    let outcome = report.finish(args.json.as_deref());
    for node in &nodes {
        node.stop().await;
    }
    outcome.map_err(|e| e.to_string().into())
}

/// What became of a message: delivered somewhere, or given up on and reported to its sender.
enum Fate {
    Delivered(Got),
    Undeliverable(usize),
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

/// The file descriptors a cluster needs, and the process's limit on them.
mod fds {
    use crate::Error;

    /// Descriptors the process holds apart from the nodes (standard streams, the runtime's
    /// poller and wakers), with room to spare.
    const BASE: u64 = 64;

    /// Descriptors one node of an `n`-node cluster holds: its listener and, since both ends of
    /// every connection are in this process, two per connection it has; its connections grow
    /// with its tables, about logarithmically. Measured on 127.0.0.1, encrypted, the most open
    /// at once during a run of 20,000 messages: 6,461 for 100 nodes (65 per node), 15,465 for
    /// 200 (77 per node); issue 11 reports about 80 at 300. The estimate fits those and adds a
    /// tenth; a node can hold no more than a listener and both ends of a connection to every
    /// other node.
    pub(super) fn per_node(n: usize) -> u64 {
        let fit = 17.3 * (n.max(2) as f64).ln() - 14.7;
        let most = 2 * n.saturating_sub(1) as u64 + 1;
        ((fit * 1.1).ceil().max(1.0) as u64).min(most)
    }

    /// Descriptors a cluster of `n` nodes needs.
    pub(super) fn needed(n: usize) -> u64 {
        BASE + n as u64 * per_node(n)
    }

    /// Raises the soft limit on open files to the hard limit (where the OS has one), and
    /// refuses, before starting anything, a cluster that would still run out of descriptors
    /// part way: the error names the limit and how many nodes fit.
    pub(super) fn ensure(n: usize) -> Result<(), Error> {
        let need = needed(n);
        let limit = raise();
        match limit {
            Some(limit) if limit < need => {
                let fit = (1..=n).rev().find(|&k| needed(k) <= limit).unwrap_or(0);
                Err(format!(
                    "{n} nodes need about {need} open files (about {} per node: a listener and both ends \
                     of every connection in this one process), but the limit on open files (RLIMIT_NOFILE) \
                     is {limit}, as far as its hard limit lets it be raised: at most {fit} nodes fit. Raise \
                     the hard limit (`ulimit -Hn`, or `nofile` in /etc/security/limits.conf) or run fewer \
                     nodes.",
                    per_node(n)
                )
                .into())
            }
            _ => Ok(()),
        }
    }

    /// The limit on open files after raising the soft limit to the hard one; `None` if there
    /// is none (or the platform has no such limit).
    #[cfg(unix)]
    fn raise() -> Option<u64> {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let now = getrlimit(Resource::Nofile);
        let hard = now.maximum;
        if now.current != hard {
            let raised = Rlimit { current: hard, maximum: hard };
            if setrlimit(Resource::Nofile, raised).is_err() {
                // macOS refuses a soft limit above OPEN_MAX under an unlimited hard limit:
                // keep what there is.
                return now.current;
            }
            let show = |l: Option<u64>| l.map_or_else(|| "unlimited".to_string(), |l| l.to_string());
            println!("raised the limit on open files from {} to {}", show(now.current), show(hard));
        }
        getrlimit(Resource::Nofile).current
    }

    #[cfg(not(unix))]
    fn raise() -> Option<u64> {
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn estimate_is_above_what_was_measured() {
            assert_eq!(needed(1), BASE + per_node(1));
            assert!(per_node(100) * 100 > 6_461);
            assert!(per_node(200) * 200 > 15_465);
            assert!(per_node(300) > 80);
            assert!(per_node(2) <= 3);
            // So under a limit of 20,000 (this machine's hard limit), 200 nodes start and 300
            // are refused before anything starts.
            assert!(needed(200) <= 20_000);
            assert!(needed(300) > 20_000);
        }
    }
}
