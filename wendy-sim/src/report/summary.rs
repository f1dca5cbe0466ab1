//! The text summary of a [`Report`]: what `wendy-sim` prints when a run ends.

use std::collections::BTreeMap;
use std::fmt;

use super::{MemoryReport, Report};

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
        self.fmt_joins(f)?;
        writeln!(
            f,
            "  lookups      {} issued: {} delivered ({:.3}%), {} correct ({:.3}%), {} incorrect, {} lost{}, {} late",
            self.issued,
            self.delivered,
            pct(self.delivered, self.issued),
            self.correct,
            pct(self.correct, self.issued),
            self.incorrect,
            self.lost,
            match self.lost_origin_crashed {
                0 => String::new(),
                n => format!(" ({n} with their origin crashed)"),
            },
            self.late
        )?;
        writeln!(
            f,
            "  hops         mean {:.2}, p50 {}, p99 {}, max {} (log16 N = {:.2})",
            self.hops_mean, self.hops_p50, self.hops_p99, self.hops_max, self.hops_log16_n
        )?;
        writeln!(f, "  stretch      mean {:.2}, p99 {:.2}", self.stretch_mean, self.stretch_p99)?;
        self.fmt_control(f)?;
        self.fmt_faults(f)?;
        if let Some(kv) = &self.kv {
            writeln!(
                f,
                "  kv           {} keys, k={}: {} readable ({:.4}%), {} unrecoverable, {} lost, {} put failed, copies {:.3}, probes {}/{} ({:.4}%), get hops {:.2}, maintenance {:.1} B/node/s (all storage {:.1})",
                kv.kv_keys,
                kv.kv_replicas,
                kv.kv_readable,
                100.0 * kv.kv_readable_fraction,
                kv.kv_unrecoverable,
                kv.kv_lost,
                kv.kv_put_failed,
                kv.kv_copies_mean,
                kv.kv_probes_readable,
                kv.kv_probes,
                100.0 * kv.kv_probes_readable_fraction,
                kv.kv_get_hops_mean,
                kv.kv_transfer_bytes_per_node_per_s,
                kv.kv_bytes_per_node_per_s
            )?;
        }
        write!(
            f,
            "  engine       {} events in {:.2}s wall ({:.0} events/s), {:.1}s simulated, peak {} pending",
            self.events, self.wall_s, self.events_per_s, self.sim_s, self.peak_pending_events
        )?;
        if self.batches > 0 {
            write!(f, ", in {} batches ({:.1} events each)", self.batches, self.events as f64 / self.batches as f64)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  memory       peak RSS {:.1} MiB, {} bytes per node; the largest sample at {:.1}s simulated",
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.bytes_per_node,
            self.peak_rss_sample_at_s
        )?;
        if self.peak_heap_bytes > 0 {
            writeln!(
                f,
                "               heap in use at most {:.1} MiB (sampled), at {:.1}s simulated",
                self.peak_heap_bytes as f64 / (1024.0 * 1024.0),
                self.peak_heap_sample_at_s
            )?;
        }
        if let Some(m) = &self.memory_after_joins {
            fmt_memory(f, m, "after joins")?;
        }
        if let Some(m) = &self.memory {
            fmt_memory(f, m, "at the end")?;
        }
        writeln!(
            f,
            "  connections  {:.1} per node (nodes' count), {:.1} simulated links per node",
            self.conns_per_node, self.links_per_node
        )?;
        writeln!(
            f,
            "  peers        {:.1} records per node, {:.1} of them table members",
            self.peers_per_node, self.members_per_node
        )?;
        write!(f, "  trace hash   {}", self.trace_hash)
    }
}

impl Report {
    fn fmt_joins(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.initial_joins;
        if self.build == "tables" {
            writeln!(
                f,
                "  build        {} nodes started as members from the simulator's tables (--build tables, no joins), over {:.1}s simulated; {:.1}s wall",
                self.nodes, self.join_phase_s, self.build_wall_s
            )?;
        } else {
            writeln!(
                f,
                "  joins        {} initial in {:.1}s simulated (mean {:.3}s, p99 {:.3}s, max {:.3}s), {} failed",
                i.joins, self.join_phase_s, i.mean_s, i.p99_s, i.max_s, self.join_failures
            )?;
        }
        let l = &self.later_joins;
        if l.joins > 0 {
            writeln!(
                f,
                "               {} later (churn arrivals, restarts): mean {:.3}s, p99 {:.3}s, max {:.3}s",
                l.joins, l.mean_s, l.p99_s, l.max_s
            )?;
        }
        Ok(())
    }

    fn fmt_control(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  control      {:.2} msgs/node/s ({:.2} without per-hop acks), {:.0} B/node/s {} ({:.1}s to {:.1}s); whole run {:.2} msgs/node/s",
            self.control_msgs_per_node_per_s,
            self.control_msgs_per_node_per_s_without_acks,
            self.control_bytes_per_node_per_s,
            if self.steady_window_found {
                "steady"
            } else {
                "over the measurement phase, too short for a steady window"
            },
            self.steady_from_s,
            self.steady_to_s,
            self.run_control_msgs_per_node_per_s
        )?;
        writeln!(
            f,
            "               while joining: {:.2} msgs/node/s, {:.0} B/node/s, {:.0} msgs per initial join",
            self.join_control_msgs_per_node_per_s,
            self.join_control_bytes_per_node_per_s,
            self.join_control_msgs_per_join
        )?;
        let by_kind = |map: &BTreeMap<String, f64>, digits: usize| {
            let mut kinds: Vec<(&String, &f64)> = map.iter().collect();
            kinds.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
            kinds.iter().map(|(k, v)| format!("{k} {v:.digits$}")).collect::<Vec<String>>().join(", ")
        };
        if !self.join_control_msgs_per_join_by_kind.is_empty() {
            writeln!(
                f,
                "               per initial join by kind: {}",
                by_kind(&self.join_control_msgs_per_join_by_kind, 1)
            )?;
        }
        if !self.control_msgs_per_node_per_s_by_kind.is_empty() {
            writeln!(
                f,
                "               by kind (msgs/node/s, same window): {}",
                by_kind(&self.control_msgs_per_node_per_s_by_kind, 3)
            )?;
        }
        Ok(())
    }

    fn fmt_faults(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }
}

fn fmt_memory(f: &mut fmt::Formatter<'_>, m: &MemoryReport, when: &str) -> fmt::Result {
    let per_host = |b: u64| b / m.hosts.max(1);
    writeln!(
        f,
        "  sim memory   {when}, at {:.1}s, {} hosts ({} up): {} bytes per host in the simulator's structures",
        m.at_s,
        m.hosts,
        m.live,
        per_host(m.total_bytes)
    )?;
    for (name, &bytes) in &m.structures {
        writeln!(f, "    {name:<24} {:>10} bytes per host", per_host(bytes))?;
    }
    writeln!(
        f,
        "    RSS now {:.1} MiB; RSS less the above: {} bytes per live host (allocator slack, rest)",
        m.rss_bytes as f64 / (1024.0 * 1024.0),
        m.rest_per_live_host
    )?;
    if let Some(heap) = m.heap_bytes {
        let per_live = |b: u64| b / m.live.max(1);
        writeln!(
            f,
            "    heap in use {:.1} MiB (counted): {} bytes per live host beyond the estimates, {} of allocator slack",
            heap as f64 / (1024.0 * 1024.0),
            per_live(heap.saturating_sub(m.total_bytes)),
            per_live(m.rss_bytes.saturating_sub(heap))
        )?;
    }
    Ok(())
}
