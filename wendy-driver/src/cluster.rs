//! What the drivers' `cluster` examples share (feature `cluster`): their arguments, the plan of
//! messages, the tally of deliveries and the report, as text and JSON. The examples keep only
//! what needs their runtime: starting nodes, spawning readers, timeouts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser};
use wendy_proto::rng::Rng;
use wendy_proto::{Delivery, Node, NodeId, Stats};

/// The purpose of the example's messages.
pub const PURPOSE: u8 = 16;

/// The arguments of a `cluster` example.
#[derive(Parser, Debug)]
pub struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 20)]
    pub nodes: usize,
    /// Number of messages.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Payload size in bytes (at least 16).
    #[arg(long, default_value_t = 32)]
    pub payload: usize,
    /// Seed for ids, keys and senders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the outcome as one JSON object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// Parses the command line of the example for `driver` (exits on bad arguments).
    pub fn parse_for(driver: &str) -> Args {
        let about = format!("Route messages through an in-process cluster of wendy nodes ({driver} driver).");
        let matches = Args::command().about(about).get_matches();
        Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The payload size actually used.
    pub fn payload_size(&self) -> usize {
        self.payload.max(16)
    }
}

/// Which node sends which message towards which key, and where it should arrive.
#[derive(Debug)]
pub struct Plan {
    /// The key of each message.
    pub keys: Vec<NodeId>,
    /// The index of the node that sends each message.
    pub senders: Vec<usize>,
    /// The index of the node numerically closest to each key: where it must be delivered.
    pub roots: Vec<usize>,
}

impl Plan {
    /// A plan of `messages` messages over the nodes with these `ids`, drawn from `rng`.
    pub fn new(ids: &[NodeId], messages: usize, rng: &mut Rng) -> Plan {
        let n = ids.len().max(1) as u64;
        let mut ring: Vec<(NodeId, usize)> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        ring.sort();
        let keys: Vec<NodeId> = (0..messages).map(|_| NodeId::from_u128(rng.next_u128())).collect();
        let senders: Vec<usize> = (0..messages).map(|_| rng.below(n) as usize).collect();
        let roots: Vec<usize> = keys.iter().map(|&k| root_of(&ring, k)).collect();
        Plan { keys, senders, roots }
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

/// The payload of message `msg`: its number and the time it was sent (µs since `origin`),
/// padded to `size` bytes (at least 16).
pub fn payload(msg: usize, size: usize, origin: Instant) -> Vec<u8> {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&(msg as u64).to_be_bytes());
    p[8..16].copy_from_slice(&micros_since(origin).to_be_bytes());
    p
}

fn micros_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A delivery of one of the example's messages.
#[derive(Clone, Copy, Debug)]
pub struct Got {
    /// The index of the node it arrived at.
    pub node: usize,
    /// The message's number.
    pub msg: usize,
    /// Hops taken.
    pub hops: u8,
    /// From send to delivery.
    pub latency_us: u64,
}

impl Got {
    /// The example's message in `d`, delivered at node `node`, if it is one.
    pub fn parse(node: usize, d: &Delivery, origin: Instant) -> Option<Got> {
        if d.purpose != PURPOSE || d.payload.len() < 16 {
            return None;
        }
        let msg = u64::from_be_bytes(d.payload[..8].try_into().ok()?) as usize;
        let sent = u64::from_be_bytes(d.payload[8..16].try_into().ok()?);
        Some(Got { node, msg, hops: d.hops, latency_us: micros_since(origin).saturating_sub(sent) })
    }
}

/// Counts deliveries against the plan.
#[derive(Debug)]
pub struct Tally {
    seen: HashMap<usize, u32>,
    /// Messages reported undeliverable to their senders.
    reported: std::collections::BTreeSet<usize>,
    delivered: usize,
    correct: usize,
    duplicates: usize,
    hops_sum: u64,
    latencies: Vec<u64>,
    start: Instant,
    last: Instant,
    nodes: NodeCounts,
}

/// What the nodes themselves counted of the run, summed over every node: how often a hop
/// was taken for a failing one. In a cluster where no node fails each of these is a busy
/// peer taken for a dead one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Routed messages sent again through another hop ([`Stats::reroutes`]).
    pub reroutes: u64,
    /// Of those, copies routed again because the hop holding them was declared failed
    /// ([`Stats::custody_reroutes`]).
    pub custody_reroutes: u64,
    /// Messages the nodes took charge of and dropped ([`Stats::dropped`]: a full queue, the
    /// hop limit, no route, or given up on).
    pub dropped: u64,
    /// Copies not delivered because one was delivered already ([`Stats::duplicates_dropped`]).
    pub duplicates_dropped: u64,
}

impl NodeCounts {
    /// Adds one node's counters.
    pub fn add(&mut self, s: &Stats) {
        self.reroutes += s.reroutes;
        self.custody_reroutes += s.custody_reroutes;
        self.dropped += s.dropped;
        self.duplicates_dropped += s.duplicates_dropped;
    }
}

impl Tally {
    /// An empty tally; the sending starts now.
    pub fn new(messages: usize) -> Tally {
        let now = Instant::now();
        Tally {
            seen: HashMap::new(),
            reported: std::collections::BTreeSet::new(),
            delivered: 0,
            correct: 0,
            duplicates: 0,
            hops_sum: 0,
            latencies: Vec::with_capacity(messages),
            start: now,
            last: now,
            nodes: NodeCounts::default(),
        }
    }

    /// Adds a node's counters, read at the end of the run, to the report's
    /// [`NodeCounts`].
    pub fn add_node_stats(&mut self, s: &Stats) {
        self.nodes.add(s);
    }

    /// Counts a delivery; `roots` is [`Plan::roots`].
    pub fn record(&mut self, g: Got, roots: &[usize]) {
        let c = self.seen.entry(g.msg).or_default();
        *c += 1;
        if *c > 1 {
            self.duplicates += 1;
            return;
        }
        self.delivered += 1;
        self.correct += usize::from(roots.get(g.msg) == Some(&g.node));
        self.hops_sum += u64::from(g.hops);
        self.latencies.push(g.latency_us);
        self.last = Instant::now();
    }

    /// Distinct messages delivered so far.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// Message `msg` was reported undeliverable to its sender (`NodeError::Undeliverable`:
    /// the nodes gave up on it, and said so).
    pub fn record_undeliverable(&mut self, msg: usize) {
        self.reported.insert(msg);
    }

    /// Messages reported undeliverable and not delivered (so far).
    pub fn undeliverable(&self) -> usize {
        self.reported.iter().filter(|m| !self.seen.contains_key(m)).count()
    }

    /// Messages whose fate is known: delivered, or reported undeliverable to their sender.
    pub fn accounted(&self) -> usize {
        self.delivered + self.undeliverable()
    }

    /// How long is left of `limit`, counted from the start of the sending.
    pub fn time_left(&self, limit: Duration) -> Duration {
        limit.saturating_sub(self.start.elapsed())
    }

    /// The outcome of a run.
    pub fn report(mut self, driver: &'static str, args: &Args, join_s: f64) -> Report {
        let secs = self.last.duration_since(self.start).as_secs_f64().max(1e-9);
        self.latencies.sort_unstable();
        let lat = &self.latencies;
        let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
        let delivered = self.delivered;
        Report {
            driver,
            nodes: args.nodes.max(1),
            messages: args.messages,
            delivered,
            correct: self.correct,
            duplicates: self.duplicates,
            undeliverable: self.undeliverable(),
            hops_mean: if delivered > 0 { self.hops_sum as f64 / delivered as f64 } else { 0.0 },
            msgs_per_s: delivered as f64 / secs,
            secs,
            join_s,
            p50_latency_us: pct(0.5),
            p99_latency_us: pct(0.99),
            payload_bytes: args.payload_size(),
            seed: args.seed,
            node_counts: self.nodes,
        }
    }
}

/// The outcome of a `cluster` run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The driver's name.
    pub driver: &'static str,
    /// Nodes started.
    pub nodes: usize,
    /// Messages sent.
    pub messages: usize,
    /// Distinct messages delivered.
    pub delivered: usize,
    /// Messages delivered at the node numerically closest to their key.
    pub correct: usize,
    /// Deliveries beyond the first of a message.
    pub duplicates: usize,
    /// Messages not delivered that were reported undeliverable to their senders (the rest of
    /// those not delivered vanished, or were still on their way when the run gave up).
    pub undeliverable: usize,
    /// Mean hops per delivered message.
    pub hops_mean: f64,
    /// Deliveries per second.
    pub msgs_per_s: f64,
    /// From the first send to the last delivery, in seconds.
    pub secs: f64,
    /// Time to start and join every node, in seconds.
    pub join_s: f64,
    /// Median latency, send to delivery.
    pub p50_latency_us: u64,
    /// 99th percentile latency, send to delivery.
    pub p99_latency_us: u64,
    /// Payload size.
    pub payload_bytes: usize,
    /// The seed.
    pub seed: u64,
    /// What the nodes counted (summed over all of them).
    pub node_counts: NodeCounts,
}

impl Report {
    /// Prints the report, then writes it as JSON to `json` if given; an error unless every
    /// message arrived at the right node.
    pub fn finish(&self, json: Option<&std::path::Path>) -> Result<(), Box<dyn std::error::Error>> {
        self.print();
        if let Some(path) = json {
            std::fs::write(path, serde_json::to_string_pretty(&self.to_json())? + "\n")?;
            println!("wrote {}", path.display());
        }
        if self.correct == self.messages {
            Ok(())
        } else {
            Err(format!(
                "{} of {} messages not delivered at the right node ({} of them reported undeliverable to their senders)",
                self.messages - self.correct,
                self.messages,
                self.undeliverable
            )
            .into())
        }
    }

    /// Prints the report as text.
    pub fn print(&self) {
        let Report { driver, messages: m, delivered, correct, duplicates, undeliverable, .. } = self;
        println!("driver:      {driver}");
        println!("messages:    {m} sent, {delivered} delivered, {correct} at the right node, {duplicates} duplicates");
        if *undeliverable > 0 {
            println!("reported:    {undeliverable} not delivered were reported undeliverable to their senders");
        }
        let NodeCounts { reroutes, custody_reroutes, dropped, duplicates_dropped } = self.node_counts;
        println!(
            "in the nodes: {reroutes} rerouted ({custody_reroutes} by custody), {dropped} dropped, \
             {duplicates_dropped} duplicate copies dropped"
        );
        println!("hops:        {:.2} mean", self.hops_mean);
        println!("throughput:  {:.0} msgs/s ({:.3} s)", self.msgs_per_s, self.secs);
        println!(
            "latency:     p50 {} us, p99 {} us (send to delivery, under full load)",
            self.p50_latency_us, self.p99_latency_us
        );
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "driver": self.driver,
            "nodes": self.nodes,
            "messages": self.messages,
            "delivered": self.delivered,
            "correct": self.correct,
            "duplicates": self.duplicates,
            "undeliverable": self.undeliverable,
            "hops_mean": self.hops_mean,
            "msgs_per_s": self.msgs_per_s,
            "join_s": self.join_s,
            "p50_latency_us": self.p50_latency_us,
            "p99_latency_us": self.p99_latency_us,
            "payload_bytes": self.payload_bytes,
            "seed": self.seed,
            "reroutes": self.node_counts.reroutes,
            "custody_reroutes": self.node_counts.custody_reroutes,
            "dropped": self.node_counts.dropped,
            "duplicates_dropped": self.node_counts.duplicates_dropped,
        })
    }
}

/// True once `node` is ready and holds its ring neighbours (among the sorted `ids`) in its
/// leaf set.
pub fn converged(ids: &[NodeId], node: &Node) -> bool {
    let n = ids.len();
    if n < 2 {
        return true;
    }
    let pos = ids.binary_search(&node.id()).unwrap_or(0);
    let members = node.leaf_set().members();
    node.is_ready() && members.contains(&ids[(pos + 1) % n]) && members.contains(&ids[(pos + n - 1) % n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(messages: usize) -> Args {
        Args { nodes: 3, messages, payload: 32, seed: 1, json: None }
    }

    #[test]
    fn messages_reported_undeliverable_are_accounted_for_and_counted_apart() {
        let roots = [0, 1, 2, 0];
        let mut t = Tally::new(4);
        t.record(Got { node: 0, msg: 0, hops: 1, latency_us: 10 }, &roots);
        t.record(Got { node: 2, msg: 2, hops: 1, latency_us: 10 }, &roots);
        // Message 1 was given up on; message 2 was reported too but a copy arrived.
        t.record_undeliverable(1);
        t.record_undeliverable(2);
        t.record_undeliverable(1);
        assert_eq!((t.delivered(), t.undeliverable(), t.accounted()), (2, 1, 3));
        let mut s = Stats::default();
        (s.reroutes, s.custody_reroutes, s.dropped, s.duplicates_dropped) = (5, 2, 1, 3);
        t.add_node_stats(&s);
        t.add_node_stats(&s);
        let r = t.report("test", &args(4), 0.0);
        assert_eq!((r.delivered, r.correct, r.undeliverable), (2, 2, 1));
        let j = r.to_json();
        assert_eq!(j["undeliverable"], 1);
        assert_eq!(
            (&j["reroutes"], &j["custody_reroutes"], &j["dropped"], &j["duplicates_dropped"]),
            (&10.into(), &4.into(), &2.into(), &6.into())
        );
        let e = r.finish(None).expect_err("two messages did not arrive");
        assert_eq!(
            e.to_string(),
            "2 of 4 messages not delivered at the right node (1 of them reported undeliverable to their senders)"
        );
    }
}
