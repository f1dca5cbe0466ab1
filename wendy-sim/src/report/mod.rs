//! What a run measured: the JSON report (its text summary is in `summary.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

mod summary;

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
    /// Live nodes at the start of the bucket (sampled).
    pub live: u64,
    /// Live nodes that are joined (root for keys), at the start of the bucket (sampled).
    pub joined: u64,
    /// Time-weighted mean of the live nodes over the bucket (over the part of the last bucket
    /// that was simulated).
    pub live_mean: f64,
    /// `control_msgs` divided by the live node-seconds of this bucket (time-weighted, so a
    /// bucket in which the population grows is divided by the nodes that were there).
    pub control_msgs_per_node_per_s: f64,
    /// Resident set size of the process at the start of the bucket, bytes (VmRSS; 0 where
    /// unknown). A machine figure: it depends on the allocator, not only on the seed.
    pub rss_bytes: u64,
    /// Heap bytes in use at the start of the bucket, as the allocator counts them
    /// ([`crate::SimConfig::heap_in_use`]; 0 where not counted).
    pub heap_bytes: u64,
}

/// Count and times (from `join()` to `Event::Joined`) of a set of joins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct JoinStats {
    /// Joins completed.
    pub joins: u64,
    /// Mean join time, seconds.
    pub mean_s: f64,
    /// Median join time, seconds.
    pub p50_s: f64,
    /// 99th percentile of join time, seconds.
    pub p99_s: f64,
    /// Longest join, seconds.
    pub max_s: f64,
}

impl JoinStats {
    /// The statistics of these join times (microseconds, any order).
    pub fn of(times_us: &[u64]) -> JoinStats {
        let mut t: Vec<f64> = times_us.iter().map(|&t| t as f64 / 1e6).collect();
        t.sort_by(f64::total_cmp);
        JoinStats {
            joins: t.len() as u64,
            mean_s: if t.is_empty() { 0.0 } else { t.iter().sum::<f64>() / t.len() as f64 },
            p50_s: quantile(&t, 0.5),
            p99_s: quantile(&t, 0.99),
            max_s: t.last().copied().unwrap_or(0.0),
        }
    }
}

/// Heap bytes the simulator's own structures hold, by structure, at the end of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemoryReport {
    /// When it was measured, simulated seconds.
    pub at_s: f64,
    /// Hosts created (up or down).
    pub hosts: u64,
    /// Hosts up.
    pub live: u64,
    /// Bytes by structure: element size times allocated capacity (exact for vectors, queues
    /// and hash maps; B-trees at their average fill). The nodes' state is the shallow
    /// `size_of::<Node>()` (`node_structs_shallow`) plus, under `node.*`, the sum over live
    /// nodes of [`Node::memory_footprint`](wendy_proto::Node::memory_footprint).
    pub structures: BTreeMap<String, u64>,
    /// Sum of `structures`.
    pub total_bytes: u64,
    /// Resident set size of the process now (VmRSS; 0 where unknown).
    pub rss_bytes: u64,
    /// `rss_bytes - total_bytes` per live host: allocator slack (freed memory not returned,
    /// rounding of allocations), what the estimates miss, and whatever else the process holds.
    pub rest_per_live_host: u64,
    /// Heap bytes in use now, counted by the allocator (`None` where not counted): exact,
    /// so `heap_bytes - total_bytes` is what the estimates miss and `rss_bytes - heap_bytes`
    /// the allocator's slack (freed memory it keeps, rounding, its own metadata).
    pub heap_bytes: Option<u64>,
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
    /// Never delivered: not within the lookup timeout and not later before the run ended
    /// (including those the origin refused to send).
    pub lost: u64,
    /// Of `lost`, those whose origin crashed (under churn or a crash) between issuing them and
    /// their lookup timeout: the node that issued them went, with whatever of them it still
    /// held.
    pub lost_origin_crashed: u64,
    /// Lookups delivered after their lookup timeout had passed (counted in `delivered`, not in
    /// `lost`): in flight for longer than the timeout, e.g. across a crash.
    pub late: u64,
    /// Extra deliveries of a lookup already delivered.
    pub duplicates: u64,
    /// Per-hop acknowledgement frames sent by all nodes over the run (they are control frames
    /// and counted in the control rates too).
    pub acks: u64,
    /// Routed messages (lookups) sent again through another hop after theirs failed or
    /// stayed silent.
    pub reroutes: u64,
    /// Of those, copies sent again by the hop before a node that was declared failed while
    /// it held them, acknowledged and not yet handed on (custody).
    pub custody_reroutes: u64,
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
    /// Joins completed (join call to `Event::Joined`): the initial population's and later ones.
    pub joins: u64,
    /// Joins that failed (`NodeError::JoinFailed`: every attempt of the node's own retry
    /// policy failed); such a node stays up as a ring of one.
    pub join_failures: u64,
    /// Mean join time, seconds.
    pub join_time_mean_s: f64,
    /// Median join time, seconds.
    pub join_time_p50_s: f64,
    /// 99th percentile of join time, seconds.
    pub join_time_p99_s: f64,
    /// Longest join, seconds.
    pub join_time_max_s: f64,
    /// Joins of the initial population (first life of the first `nodes` hosts).
    pub initial_joins: JoinStats,
    /// Later joins: churn arrivals, restarts and bounces.
    pub later_joins: JoinStats,
    /// Simulated time the initial population took to join, seconds.
    pub join_phase_s: f64,
    /// How the initial population was built: `"joins"` (through the join protocol) or
    /// `"tables"` (started as members from the simulator's tables, `--build tables`).
    pub build: &'static str,
    /// Wall time the simulator took to compute the tables of a `"tables"` build, seconds.
    pub build_wall_s: f64,
    /// Steady-state control frames (everything but lookups) per live node per second: over
    /// the window from `steady_from_s` to `steady_to_s`.
    pub control_msgs_per_node_per_s: f64,
    /// Steady-state control bytes per live node per second, same window.
    pub control_bytes_per_node_per_s: f64,
    /// `control_msgs_per_node_per_s` by kind of frame (`ping`, `pong`, `ack`, `leaf_set`,
    /// `hello`, `noise_handshake`, ...: `wendy_proto::wire::FRAME_KINDS`), same window; kinds
    /// not sent are left out.
    pub control_msgs_per_node_per_s_by_kind: BTreeMap<String, f64>,
    /// `control_msgs_per_node_per_s` less the per-hop acks (`ack` by kind), which grow with the
    /// routed workload rather than with the ring's upkeep; same window.
    pub control_msgs_per_node_per_s_without_acks: f64,
    /// Start of the steady-state window, simulated seconds: the start of the measurement
    /// phase, or the end of the join phase plus the longer of the idle timeout and the
    /// leaf-set exchange interval plus two heartbeats (the connections the joins opened have
    /// timed out and closed, and the last joiner's early exchanges are over), whichever is
    /// later.
    pub steady_from_s: f64,
    /// End of the steady-state window: the planned end of the measurement phase (before the
    /// wait for the last lookups and for repair). When the window would be empty, the window
    /// is the whole measurement phase, including that wait.
    pub steady_to_s: f64,
    /// False when the measurement phase ended before the joins had settled, so that the
    /// "steady" rate is over the whole measurement phase (a longer `--duration` fixes that).
    pub steady_window_found: bool,
    /// Control frames per live node per second over the whole run (joins, settle,
    /// measurement and the wait at the end).
    pub run_control_msgs_per_node_per_s: f64,
    /// Control bytes per live node per second over the whole run.
    pub run_control_bytes_per_node_per_s: f64,
    /// Control frames sent, all nodes, during the join phase.
    pub join_control_msgs: u64,
    /// Control bytes sent, all nodes, during the join phase.
    pub join_control_bytes: u64,
    /// `join_control_msgs` per initial join.
    pub join_control_msgs_per_join: f64,
    /// `join_control_msgs_per_join` by frame kind (the kinds sent at all).
    pub join_control_msgs_per_join_by_kind: BTreeMap<String, f64>,
    /// Control frames per live node per second while the population joined.
    pub join_control_msgs_per_node_per_s: f64,
    /// Control bytes per live node per second while the population joined.
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
    /// Batches the events were processed in, on several threads ([`crate::SimConfig::threads`]);
    /// 0 on one thread. A scenario event that is not a lookup (a join, a crash, a sample) is a
    /// batch of its own.
    pub batches: u64,
    /// Simulated time at the end, seconds.
    pub sim_s: f64,
    /// Wall time of the run, seconds (not reproducible).
    pub wall_s: f64,
    /// Peak resident set size of the process, bytes (VmHWM; 0 where unknown).
    pub peak_rss_bytes: u64,
    /// The simulated time of the largest RSS sample of the timeline (`Bucket::rss_bytes`):
    /// where in the run the memory peaks (0 where unknown).
    pub peak_rss_sample_at_s: f64,
    /// The largest heap in use of the timeline's samples (`Bucket::heap_bytes`; 0 where not
    /// counted), and when: the peak the resident set must hold, less the allocator's slack.
    pub peak_heap_bytes: u64,
    /// The simulated time of that sample.
    pub peak_heap_sample_at_s: f64,
    /// peak_rss_bytes / most hosts alive at once.
    pub bytes_per_node: u64,
    /// The trace hash (16 hex digits).
    pub trace_hash: String,
    /// Connections (open or opening) per live node at the end, as the nodes count them.
    pub conns_per_node: f64,
    /// Peer records per live node at the end ([`wendy_proto::Node::peer_count`]).
    pub peers_per_node: f64,
    /// Distinct table members per live node at the end ([`wendy_proto::Node::member_count`]).
    pub members_per_node: f64,
    /// Simulated connections per live node at the end (both ends count once).
    pub links_per_node: f64,
    /// Errors the nodes reported, by kind.
    pub node_errors: BTreeMap<String, u64>,
    /// Crash scenario results.
    pub crash: Option<CrashReport>,
    /// Churn results.
    pub churn: Option<ChurnReport>,
    /// Key-value workload results (keys `kv_*` at the top level of the JSON).
    #[serde(flatten)]
    pub kv: Option<KvReport>,
    /// The simulator's own memory by structure (with `SimConfig::memory_report`).
    pub memory: Option<MemoryReport>,
    /// The same, measured when the initial population had joined: while nodes join they hold
    /// more peers and connections than later, so this is nearer the peak.
    pub memory_after_joins: Option<MemoryReport>,
    /// Parameters worth knowing when reading the figures.
    pub params: BTreeMap<String, String>,
    /// Time series.
    pub timeline: Vec<Bucket>,
}

/// Results of the key-value workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KvReport {
    /// Keys written.
    pub kv_keys: u64,
    /// Replicas per key asked for.
    pub kv_replicas: u64,
    /// Bytes per value.
    pub kv_value_size: u64,
    /// Puts that failed (those keys are left out of the figures below).
    pub kv_put_failed: u64,
    /// Keys whose final get returned the newest value.
    pub kv_readable: u64,
    /// kv_readable / keys put.
    pub kv_readable_fraction: f64,
    /// Keys every replica of which died before maintenance could copy them (the oracle's
    /// judgement at each crash: no live node held the newest version any more).
    pub kv_unrecoverable: u64,
    /// Keys recoverable by that definition whose final get did not return the newest value.
    pub kv_lost: u64,
    /// Live nodes holding the newest value of a recoverable key at the end, mean over keys.
    pub kv_copies_mean: f64,
    /// Gets of random keys during the measurement phase.
    pub kv_probes: u64,
    /// Of those, gets of recoverable keys that returned the newest value.
    pub kv_probes_readable: u64,
    /// kv_probes_readable / probes of recoverable keys.
    pub kv_probes_readable_fraction: f64,
    /// Hops of the gets to the key's root, mean.
    pub kv_get_hops_mean: f64,
    /// Maintenance bytes (digests, key lists, offers, transfers, repairs) per live node per
    /// second of the measurement phase.
    pub kv_transfer_bytes_per_node_per_s: f64,
    /// Every storage message's bytes per live node per second of the measurement phase.
    pub kv_bytes_per_node_per_s: f64,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report has only serialisable fields")
    }

    /// A copy without the figures that depend on the machine (wall time, rates, memory), for
    /// comparing two runs.
    pub fn without_machine_figures(&self) -> Report {
        let strip = |m: &Option<MemoryReport>| {
            m.clone().map(|m| MemoryReport { rss_bytes: 0, rest_per_live_host: 0, heap_bytes: None, ..m })
        };
        let (memory, memory_after_joins) = (strip(&self.memory), strip(&self.memory_after_joins));
        let timeline = self.timeline.iter().map(|b| Bucket { rss_bytes: 0, heap_bytes: 0, ..*b }).collect();
        Report {
            wall_s: 0.0,
            build_wall_s: 0.0,
            events_per_s: 0.0,
            peak_rss_bytes: 0,
            peak_heap_bytes: 0,
            peak_heap_sample_at_s: 0.0,
            peak_rss_sample_at_s: 0.0,
            timeline,
            bytes_per_node: 0,
            memory,
            memory_after_joins,
            ..self.clone()
        }
    }
}

/// Resident set size of this process now, in bytes, from /proc/self/status (0 if unknown).
pub fn rss_bytes() -> u64 {
    proc_status_kb("VmRSS:")
}

/// Peak resident set size of this process in bytes, from /proc/self/status (0 if unknown).
pub fn peak_rss_bytes() -> u64 {
    proc_status_kb("VmHWM:")
}

/// A `kB` line of /proc/self/status, in bytes (0 if unknown).
fn proc_status_kb(key: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix(key))
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
