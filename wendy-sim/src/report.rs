//! What a run measured: the JSON report and its text summary.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Outcome counts of the lookups issued in a window of time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Window {
    /// Lookups issued in the window.
    pub issued: u64,
    /// Delivered at some node.
    pub delivered: u64,
    /// Delivered at the right node.
    pub correct: u64,
    /// Delivered at a wrong node.
    pub incorrect: u64,
    /// Not delivered in time.
    pub lost: u64,
}

impl Window {
    /// correct / issued, 1 when nothing was issued.
    pub fn correct_ratio(&self) -> f64 {
        if self.issued == 0 {
            1.0
        } else {
            self.correct as f64 / self.issued as f64
        }
    }

    /// delivered / issued, 1 when nothing was issued.
    pub fn delivery_ratio(&self) -> f64 {
        if self.issued == 0 {
            1.0
        } else {
            self.delivered as f64 / self.issued as f64
        }
    }
}

/// One bucket of the time series (by simulated time; lookups counted by issue time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, simulated seconds.
    pub t_s: f64,
    /// Lookup outcomes of the lookups issued in this bucket.
    #[serde(flatten)]
    pub lookups: Window,
    /// Control frames sent in the bucket, all nodes.
    pub control_msgs: u64,
    /// Control bytes sent in the bucket, all nodes.
    pub control_bytes: u64,
    /// Live nodes when the bucket was last touched.
    pub live: u64,
    /// Live nodes that are joined (root for keys).
    pub joined: u64,
}

/// What a crash of many nodes at once did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CrashReport {
    /// Nodes crashed.
    pub crashed: u64,
    /// When, simulated seconds from the start.
    pub at_s: f64,
    /// Repair time: from the crash until both `ring_s` and `tables_clean_s` held at one check
    /// (`None`: not within the repair timeout). The windows below are cut at this instant.
    pub repair_s: Option<f64>,
    /// Time from the crash until every live node's nearest leaf on both sides was its true
    /// ring neighbour.
    pub ring_s: Option<f64>,
    /// Time from the crash until no live node's leaf set or routing table named a crashed node.
    pub tables_clean_s: Option<f64>,
    /// Time from the crash until every live node's whole leaf set was exactly right.
    pub leaf_sets_exact_s: Option<f64>,
    /// Lookups issued before the crash.
    pub before: Window,
    /// Lookups issued between the crash and the repair.
    pub during: Window,
    /// Lookups issued after the repair.
    pub after: Window,
}

/// What churn did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Nodes that arrived (and started a join).
    pub arrivals: u64,
    /// Nodes that crashed.
    pub crashes: u64,
    /// Nodes that left gracefully.
    pub leaves: u64,
    /// Mean live population over the measurement phase.
    pub mean_live: f64,
    /// Mean joined population over the measurement phase.
    pub mean_joined: f64,
}

/// Everything a run measured. Serialised as the `--json` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Initial population.
    pub nodes: u64,
    /// Lookups asked for.
    pub lookups: u64,
    /// Master seed.
    pub seed: u64,
    /// Lookups issued (fewer than asked if no node was joined at times).
    pub issued: u64,
    /// Lookups delivered (first delivery only).
    pub delivered: u64,
    /// Delivered at the live, joined node numerically closest to the key at delivery time.
    pub correct: u64,
    /// Delivered elsewhere.
    pub incorrect: u64,
    /// Not delivered within the lookup timeout (including those the origin refused to send).
    pub lost: u64,
    /// Extra deliveries of a lookup already delivered.
    pub duplicates: u64,
    /// Lookups whose `send` returned an error at the origin (counted in `lost` too).
    pub send_errors: u64,
    /// delivered / issued.
    pub delivery_ratio: f64,
    /// correct / issued.
    pub correct_ratio: f64,
    /// Mean hops of delivered lookups.
    pub hops_mean: f64,
    /// Median hops.
    pub hops_p50: u64,
    /// 99th percentile of hops.
    pub hops_p99: u64,
    /// Most hops.
    pub hops_max: u64,
    /// log16 of the initial population, the hop count Pastry promises.
    pub hops_log16_n: f64,
    /// Number of delivered lookups with h hops, h = index.
    pub hops_histogram: Vec<u64>,
    /// Mean stretch: sum of link latencies along the route / direct latency origin to root.
    pub stretch_mean: f64,
    /// 99th percentile of stretch.
    pub stretch_p99: f64,
    /// Joins completed (join call to `Event::Joined`).
    pub joins: u64,
    /// Join attempts that failed (`NodeError::JoinFailed`) and were retried.
    pub join_failures: u64,
    /// Mean join time, seconds.
    pub join_time_mean_s: f64,
    /// Median join time, seconds.
    pub join_time_p50_s: f64,
    /// 99th percentile of join time, seconds.
    pub join_time_p99_s: f64,
    /// Longest join, seconds.
    pub join_time_max_s: f64,
    /// Simulated time the initial population took to join, seconds.
    pub join_phase_s: f64,
    /// Control frames (everything but lookups) per live node per second, measurement phase.
    pub control_msgs_per_node_per_s: f64,
    /// Control bytes per live node per second, measurement phase.
    pub control_bytes_per_node_per_s: f64,
    /// Control frames per node per second while the population joined.
    pub join_control_msgs_per_node_per_s: f64,
    /// Control bytes per node per second while the population joined.
    pub join_control_bytes_per_node_per_s: f64,
    /// Frames transmitted in all.
    pub frames: u64,
    /// Bytes transmitted in all.
    pub bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Events processed per second of wall time.
    pub events_per_s: f64,
    /// Most events pending in the queue at once.
    pub peak_pending_events: u64,
    /// Simulated time at the end, seconds.
    pub sim_s: f64,
    /// Wall time of the run, seconds (not reproducible).
    pub wall_s: f64,
    /// Peak resident set size of the process, bytes (VmHWM; 0 where unknown).
    pub peak_rss_bytes: u64,
    /// peak_rss_bytes / most hosts alive at once.
    pub bytes_per_node: u64,
    /// The trace hash (16 hex digits).
    pub trace_hash: String,
    /// Connections (open or opening) per live node at the end, as the nodes count them.
    pub conns_per_node: f64,
    /// Simulated connections per live node at the end (both ends count once).
    pub links_per_node: f64,
    /// Errors the nodes reported, by kind.
    pub node_errors: BTreeMap<String, u64>,
    /// Crash scenario results.
    pub crash: Option<CrashReport>,
    /// Churn results.
    pub churn: Option<ChurnReport>,
    /// Parameters worth knowing when reading the figures.
    pub params: BTreeMap<String, String>,
    /// Time series.
    pub timeline: Vec<Bucket>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report has only serialisable fields")
    }

    /// A copy without the figures that depend on the machine (wall time, rates, memory), for
    /// comparing two runs.
    pub fn without_machine_figures(&self) -> Report {
        Report { wall_s: 0.0, events_per_s: 0.0, peak_rss_bytes: 0, bytes_per_node: 0, ..self.clone() }
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wendy-sim: {} nodes, {} lookups, seed {}", self.nodes, self.lookups, self.seed)?;
        writeln!(
            f,
            "  joins        {} in {:.1}s simulated (mean {:.3}s, p99 {:.3}s, max {:.3}s), {} retried",
            self.joins,
            self.join_phase_s,
            self.join_time_mean_s,
            self.join_time_p99_s,
            self.join_time_max_s,
            self.join_failures
        )?;
        writeln!(
            f,
            "  lookups      {} issued: {} delivered ({:.3}%), {} correct ({:.3}%), {} incorrect, {} lost",
            self.issued,
            self.delivered,
            pct(self.delivered, self.issued),
            self.correct,
            pct(self.correct, self.issued),
            self.incorrect,
            self.lost
        )?;
        writeln!(
            f,
            "  hops         mean {:.2}, p50 {}, p99 {}, max {} (log16 N = {:.2})",
            self.hops_mean, self.hops_p50, self.hops_p99, self.hops_max, self.hops_log16_n
        )?;
        writeln!(f, "  stretch      mean {:.2}, p99 {:.2}", self.stretch_mean, self.stretch_p99)?;
        writeln!(
            f,
            "  control      {:.2} msgs/node/s, {:.0} B/node/s (while joining: {:.2} msgs/node/s, {:.0} B/node/s)",
            self.control_msgs_per_node_per_s,
            self.control_bytes_per_node_per_s,
            self.join_control_msgs_per_node_per_s,
            self.join_control_bytes_per_node_per_s
        )?;
        if let Some(c) = &self.crash {
            let s = |o: Option<f64>| o.map_or("not within the timeout".to_string(), |v| format!("{v:.1}s"));
            writeln!(
                f,
                "  crash        {} nodes at {:.1}s; repaired after {} (ring {}, tables clean {}), leaf sets exact after {}",
                c.crashed,
                c.at_s,
                s(c.repair_s),
                s(c.ring_s),
                s(c.tables_clean_s),
                s(c.leaf_sets_exact_s)
            )?;
            for (name, w) in [("before", c.before), ("during", c.during), ("after", c.after)] {
                writeln!(
                    f,
                    "    {name:<7}    {} issued, {:.3}% delivered, {:.3}% correct, {} incorrect, {} lost",
                    w.issued,
                    100.0 * w.delivery_ratio(),
                    100.0 * w.correct_ratio(),
                    w.incorrect,
                    w.lost
                )?;
            }
        }
        if let Some(c) = &self.churn {
            writeln!(
                f,
                "  churn        {} arrivals, {} crashes, {} leaves; mean live {:.1}, mean joined {:.1}",
                c.arrivals, c.crashes, c.leaves, c.mean_live, c.mean_joined
            )?;
        }
        if !self.node_errors.is_empty() {
            let list: Vec<String> = self.node_errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "  node errors  {}", list.join(", "))?;
        }
        writeln!(
            f,
            "  engine       {} events in {:.2}s wall ({:.0} events/s), {:.1}s simulated, peak {} pending",
            self.events, self.wall_s, self.events_per_s, self.sim_s, self.peak_pending_events
        )?;
        writeln!(
            f,
            "  memory       peak RSS {:.1} MiB, {} bytes per node",
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.bytes_per_node
        )?;
        writeln!(
            f,
            "  connections  {:.1} per node (nodes' count), {:.1} simulated links per node",
            self.conns_per_node, self.links_per_node
        )?;
        write!(f, "  trace hash   {}", self.trace_hash)
    }
}

/// Peak resident set size of this process in bytes, from /proc/self/status (0 if unknown).
pub fn peak_rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile::<u64>(&[], 0.5), 0);
    }

    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes() > 0);
        }
    }
}
