//! Measures: the counters, the integrals of the live and joined populations over time, the
//! time-series buckets and the trace hash, and the [`Report`] built from them at the end.

use std::collections::BTreeMap;

use super::hosts::ERROR_KINDS;
use super::{Outcome, Sim, SEC};
use crate::report::{
    peak_rss_bytes, quantile, Bucket, ChurnReport, CrashReport, JoinStats, MemoryReport, Report, Window,
};
use crate::trace::TraceHash;
use wendy_proto::wire::FRAME_KINDS;

/// Counters of the run.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) issued: u64,
    pub(super) delivered: u64,
    pub(super) correct: u64,
    pub(super) incorrect: u64,
    pub(super) lost: u64,
    pub(super) duplicates: u64,
    /// Per-hop acknowledgement frames sent by all nodes (also counted in the control traffic).
    pub(super) acks: u64,
    /// Routed messages sent again through another hop.
    pub(super) reroutes: u64,
    pub(super) custody_reroutes: u64,
    pub(super) send_errors: u64,
    /// Delivered lookups by hop count (64: 64 or more).
    pub(super) hops: Vec<u64>,
    pub(super) stretch: Vec<f32>,
    /// Join times of the initial population and of later joins, microseconds.
    pub(super) initial_join_times: Vec<u64>,
    pub(super) later_join_times: Vec<u64>,
    /// Lookups delivered after their timeout.
    pub(super) late: u64,
    pub(super) join_failures: u64,
    pub(super) ctl_frames: u64,
    pub(super) ctl_bytes: u64,
    /// Control frames by kind sent by the nodes no longer running (crashed, left): with the
    /// running nodes' own counts, every control frame sent so far, by kind.
    pub(super) gone_by_kind: ByKind,
    pub(super) frames: u64,
    pub(super) bytes: u64,
    pub(super) errors: [u64; ERROR_KINDS.len()],
    pub(super) buckets: Vec<Bucket>,
    /// (issue time, outcome) of every lookup, for the crash windows.
    pub(super) outcomes: Vec<(u64, Outcome)>,
    pub(super) arrivals: u64,
    pub(super) crashes: u64,
    pub(super) leaves: u64,
    pub(super) trace: TraceHash,
    /// Hosts up now, and the most at once.
    pub(super) alive: u64,
    pub(super) peak_alive: u64,
    /// Integrals of live and joined counts over time (node-microseconds), and when last updated.
    pub(super) live_int: u128,
    pub(super) joined_int: u128,
    pub(super) int_at: u64,
    /// Live node-microseconds in each time-series bucket.
    pub(super) bucket_live: Vec<u128>,
    /// Width of the time-series buckets, microseconds.
    pub(super) bucket_us: u64,
}

/// Counter values taken at the phase boundaries of a run, for the per-phase rates.
#[derive(Clone, Debug, Default)]
pub(super) struct PhaseMarks {
    /// When the initial population had joined (or the join phase gave up).
    pub(super) join_end: u64,
    /// Wall time a `--build tables` took, seconds.
    pub(super) build_wall_s: f64,
    /// Control frames and bytes sent during the join phase.
    pub(super) join_ctl: (u64, u64),
    /// Live node-microseconds during the join phase.
    pub(super) join_live_int: u128,
    /// Control frames by kind sent during the join phase.
    pub(super) join_by_kind: ByKind,
    /// Live and joined node-microseconds at the start of the measurement phase.
    pub(super) measure_live0: u128,
    pub(super) measure_joined0: u128,
    /// Control frames and bytes at the start of the measurement phase.
    pub(super) measure_ctl0: (u64, u64),
    /// Control frames by kind at the start of the measurement phase.
    pub(super) measure_by_kind0: ByKind,
    /// The planned steady-state window (from, to), microseconds; empty if from >= to.
    pub(super) steady: (u64, u64),
    /// The counters at the start and at the end of the steady-state window.
    pub(super) steady_from: Option<Mark>,
    pub(super) steady_to: Option<Mark>,
    /// The memory report when the initial population had joined (with `--memory-report`).
    pub(super) memory_after_joins: Option<MemoryReport>,
}

/// Control frames by kind ([`FRAME_KINDS`]).
pub(super) type ByKind = [u64; FRAME_KINDS.len()];

/// Control counters and the live integral at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Mark {
    /// Control frames and bytes sent so far.
    ctl: (u64, u64),
    /// Live node-microseconds so far.
    live: u128,
    /// Control frames sent so far, by kind.
    by_kind: ByKind,
}

impl Mark {
    /// Control frames and bytes per live node per second from `self` to `later`.
    fn rates_to(&self, later: &Mark) -> (f64, f64) {
        let node_s = ((later.live - self.live) as f64 / 1e6).max(1e-9);
        ((later.ctl.0 - self.ctl.0) as f64 / node_s, (later.ctl.1 - self.ctl.1) as f64 / node_s)
    }

    /// Control frames per live node per second from `self` to `later`, by kind (the kinds
    /// sent at all).
    fn kind_rates_to(&self, later: &Mark) -> BTreeMap<String, f64> {
        let node_s = ((later.live - self.live) as f64 / 1e6).max(1e-9);
        FRAME_KINDS
            .iter()
            .zip(self.by_kind.iter().zip(&later.by_kind))
            .filter(|(_, (a, b))| b > a)
            .map(|(name, (a, b))| (name.to_string(), (b - a) as f64 / node_s))
            .collect()
    }
}

impl Metrics {
    pub(super) fn new() -> Self {
        Metrics { hops: vec![0; 65], bucket_us: SEC, ..Metrics::default() }
    }

    /// The time-series bucket that holds time `t`.
    pub(super) fn bucket(&mut self, t: u64) -> &mut Bucket {
        let i = (t / self.bucket_us) as usize;
        if self.buckets.len() <= i {
            let w = self.bucket_us;
            let n = self.buckets.len();
            self.buckets.extend((n..=i).map(|k| Bucket { t_s: (k as u64 * w) as f64 / 1e6, ..Bucket::default() }));
        }
        &mut self.buckets[i]
    }

    /// Counts control frames and bytes sent at `now`.
    pub(super) fn count_control(&mut self, now: u64, frames: u64, bytes: u64) {
        self.ctl_frames += frames;
        self.ctl_bytes += bytes;
        let b = self.bucket(now);
        b.control_msgs += frames;
        b.control_bytes += bytes;
    }

    /// A lookup issued at `issued` and counted lost at its timeout was delivered after all:
    /// counts it as delivered with `outcome` (and fixes its crash-window entry `kept`).
    pub(super) fn lost_was_late(&mut self, issued: u64, kept: Option<usize>, outcome: Outcome) {
        self.late += 1;
        self.lost -= 1;
        self.delivered += 1;
        let b = self.bucket(issued);
        b.lookups.lost -= 1;
        b.lookups.delivered += 1;
        match outcome {
            Outcome::Correct => b.lookups.correct += 1,
            Outcome::Incorrect => b.lookups.incorrect += 1,
            Outcome::Lost => unreachable!("a late delivery is a delivery"),
        }
        match outcome {
            Outcome::Correct => self.correct += 1,
            Outcome::Incorrect => self.incorrect += 1,
            Outcome::Lost => {}
        }
        if let Some(entry) = kept.and_then(|i| self.outcomes.get_mut(i)) {
            entry.1 = outcome;
        }
    }

    /// Counts the outcome of a lookup issued at `issued`; `keep` keeps it for the crash windows.
    pub(super) fn record_outcome(&mut self, issued: u64, outcome: Outcome, keep: bool) {
        let b = self.bucket(issued);
        match outcome {
            Outcome::Correct => b.lookups.correct += 1,
            Outcome::Incorrect => b.lookups.incorrect += 1,
            Outcome::Lost => b.lookups.lost += 1,
        }
        match outcome {
            Outcome::Correct => self.correct += 1,
            Outcome::Incorrect => self.incorrect += 1,
            Outcome::Lost => self.lost += 1,
        }
        if keep {
            self.outcomes.push((issued, outcome));
        }
    }
}

impl Sim {
    pub(super) fn count_alive(&mut self, d: i64) {
        self.integrate();
        self.m.alive = self.m.alive.saturating_add_signed(d);
        self.m.peak_alive = self.m.peak_alive.max(self.m.alive);
    }

    /// Brings the population integrals, the run's and each bucket's, up to now. On several
    /// threads the clock can stand a little before the last instant integrated (a batch's
    /// events are in time order for each host, not across hosts): those stay where they are.
    pub(super) fn integrate(&mut self) {
        let (now, m) = (self.now.max(self.m.int_at), &mut self.m);
        let (alive, dt) = (u128::from(m.alive), u128::from(now - m.int_at));
        m.live_int += dt * alive;
        m.joined_int += dt * self.oracle.joined.len() as u128;
        let mut t = m.int_at;
        while t < now {
            let i = (t / m.bucket_us) as usize;
            let edge = ((i as u64 + 1) * m.bucket_us).min(now);
            if m.bucket_live.len() <= i {
                m.bucket_live.resize(i + 1, 0);
            }
            m.bucket_live[i] += u128::from(edge - t) * alive;
            t = edge;
        }
        m.int_at = now;
    }

    /// The counters as they stand at `at`, which is now or later but before the next event
    /// (so the live count does not change in between).
    pub(super) fn mark_at(&self, at: u64) -> Mark {
        let m = &self.m;
        let live = m.live_int + u128::from(at.saturating_sub(m.int_at)) * u128::from(m.alive);
        Mark { ctl: (m.ctl_frames, m.ctl_bytes), live, by_kind: self.control_by_kind() }
    }

    /// Control frames sent so far by all nodes, by kind (a pass over the hosts).
    pub(super) fn control_by_kind(&self) -> ByKind {
        let mut sum = self.m.gone_by_kind;
        for node in self.hosts.iter().filter_map(|h| h.node.as_deref()) {
            for (s, n) in sum.iter_mut().zip(node.stats().control_frames_by_kind) {
                *s += n;
            }
        }
        sum
    }

    /// Takes the steady-state window's marks that are due before the next event.
    pub(super) fn take_due_marks(&self, marks: &mut PhaseMarks) {
        let (from, to) = marks.steady;
        if from >= to {
            return;
        }
        let next = self.queue.peek_time().unwrap_or(u64::MAX);
        if marks.steady_from.is_none() && from < next {
            marks.steady_from = Some(self.mark_at(from));
        }
        if marks.steady_to.is_none() && to < next {
            marks.steady_to = Some(self.mark_at(to));
        }
    }

    /// Builds the report at the end of a run.
    pub(super) fn report(&mut self, mut marks: PhaseMarks, wall_s: f64) -> Report {
        let end = self.now;
        let (n_up, n_conns, n_peers, n_members) =
            self.hosts.iter().filter_map(|h| h.node.as_deref()).fold((0u64, 0u64, 0u64, 0u64), |(n, c, p, m), node| {
                (
                    n + 1,
                    c + node.connection_count() as u64,
                    p + node.peer_count() as u64,
                    m + node.member_count() as u64,
                )
            });
        let links_live = (self.links.all.len() - self.links.free.len()) as u64;
        let crash = self.crash_report();
        let memory = self.cfg.memory_report.then(|| self.memory_report());
        let measure_s = ((end - self.sc.measure_start) as f64 / 1e6).max(1e-9);
        let cfg = &self.cfg;
        let m = &self.m;
        let churn = (cfg.churn.is_some() || !cfg.churn_trace.is_empty()).then(|| ChurnReport {
            arrivals: m.arrivals,
            crashes: m.crashes,
            leaves: m.leaves,
            mean_live: (m.live_int - marks.measure_live0) as f64 / 1e6 / measure_s,
            mean_joined: (m.joined_int - marks.measure_joined0) as f64 / 1e6 / measure_s,
        });
        let mut node_errors = BTreeMap::new();
        for (k, &v) in ERROR_KINDS.iter().zip(m.errors.iter()) {
            if v > 0 {
                node_errors.insert((*k).to_string(), v);
            }
        }
        let peak_rss = peak_rss_bytes();
        let mut r = Report {
            nodes: cfg.nodes as u64,
            lookups: cfg.lookups,
            seed: cfg.seed,
            join_phase_s: marks.join_end as f64 / 1e6,
            build: match cfg.build {
                crate::config::Build::Joins => "joins",
                crate::config::Build::Tables => "tables",
            },
            build_wall_s: marks.build_wall_s,
            frames: m.frames,
            bytes: m.bytes,
            events: self.events,
            events_per_s: self.events as f64 / wall_s.max(1e-9),
            peak_pending_events: self.queue.peak() as u64,
            batches: self.batches,
            sim_s: end as f64 / 1e6,
            wall_s,
            peak_rss_bytes: peak_rss,
            bytes_per_node: peak_rss / m.peak_alive.max(1),
            trace_hash: m.trace.hex(),
            conns_per_node: n_conns as f64 / n_up.max(1) as f64,
            peers_per_node: n_peers as f64 / n_up.max(1) as f64,
            members_per_node: n_members as f64 / n_up.max(1) as f64,
            links_per_node: links_live as f64 / n_up.max(1) as f64,
            node_errors,
            crash,
            churn,
            memory,
            memory_after_joins: marks.memory_after_joins.take(),
            params: self.params(),
            timeline: self.timeline(),
            ..Report::default()
        };
        r.peak_rss_sample_at_s = r.timeline.iter().max_by_key(|b| b.rss_bytes).map_or(0.0, |b| b.t_s);
        if let Some(b) = r.timeline.iter().max_by_key(|b| b.heap_bytes) {
            (r.peak_heap_bytes, r.peak_heap_sample_at_s) = (b.heap_bytes, b.t_s);
        }
        self.fill_lookups(&mut r);
        self.fill_joins(&mut r);
        self.fill_control(&mut r, &marks);
        r.kv = self.kv_report((self.m.live_int - marks.measure_live0) as f64 / 1e6);
        r
    }

    /// The time series, with each bucket's time-weighted live count and control rate.
    fn timeline(&mut self) -> Vec<Bucket> {
        let (end, m) = (self.now, &mut self.m);
        let mut timeline = std::mem::take(&mut m.buckets);
        for (i, b) in timeline.iter_mut().enumerate() {
            b.lookups.issued = b.lookups.issued.max(b.lookups.correct + b.lookups.incorrect + b.lookups.lost);
            let node_us = m.bucket_live.get(i).copied().unwrap_or(0);
            let span = end.saturating_sub(i as u64 * m.bucket_us).min(m.bucket_us).max(1);
            b.live_mean = node_us as f64 / span as f64;
            if node_us > 0 {
                b.control_msgs_per_node_per_s = b.control_msgs as f64 / (node_us as f64 / 1e6);
            }
        }
        timeline
    }

    /// Control traffic: steady state, whole run and join phase.
    fn fill_control(&self, r: &mut Report, marks: &PhaseMarks) {
        let end = self.now;
        let end_mark = self.mark_at(end);
        let (from, to, steady) = match (marks.steady_from, marks.steady_to) {
            (Some(a), Some(b)) => (marks.steady.0, marks.steady.1, (a.rates_to(&b), a.kind_rates_to(&b))),
            (Some(a), None) => (marks.steady.0, end, (a.rates_to(&end_mark), a.kind_rates_to(&end_mark))),
            // No steady window: the whole measurement phase, the wait at the end included.
            (None, _) => {
                let a = Mark { ctl: marks.measure_ctl0, live: marks.measure_live0, by_kind: marks.measure_by_kind0 };
                (self.sc.measure_start, end, (a.rates_to(&end_mark), a.kind_rates_to(&end_mark)))
            }
        };
        let (steady, by_kind) = steady;
        let acks = by_kind.get("ack").copied().unwrap_or(0.0);
        r.control_msgs_per_node_per_s_by_kind = by_kind;
        (r.control_msgs_per_node_per_s, r.control_bytes_per_node_per_s) = steady;
        r.control_msgs_per_node_per_s_without_acks = (r.control_msgs_per_node_per_s - acks).max(0.0);
        r.steady_from_s = from as f64 / 1e6;
        r.steady_window_found = marks.steady_from.is_some();
        r.steady_to_s = to as f64 / 1e6;
        (r.run_control_msgs_per_node_per_s, r.run_control_bytes_per_node_per_s) = Mark::default().rates_to(&end_mark);
        let join_start = Mark::default();
        let join_end = Mark { ctl: marks.join_ctl, live: marks.join_live_int, by_kind: ByKind::default() };
        (r.join_control_msgs_per_node_per_s, r.join_control_bytes_per_node_per_s) = join_start.rates_to(&join_end);
        (r.join_control_msgs, r.join_control_bytes) = marks.join_ctl;
        let joins = r.initial_joins.joins.max(1) as f64;
        r.join_control_msgs_per_join = marks.join_ctl.0 as f64 / joins;
        r.join_control_msgs_per_join_by_kind = FRAME_KINDS
            .iter()
            .zip(marks.join_by_kind)
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| (name.to_string(), n as f64 / joins))
            .collect();
    }

    /// Lookup outcomes, hops and stretch.
    fn fill_lookups(&mut self, r: &mut Report) {
        r.lost_origin_crashed = self.lost_with_origin();
        let m = &mut self.m;
        let delivered_hops: u64 = m.hops.iter().sum();
        let hops_sum: u64 = m.hops.iter().enumerate().map(|(h, &c)| h as u64 * c).sum();
        let mut sorted_hops = Vec::with_capacity(delivered_hops as usize);
        for (h, &c) in m.hops.iter().enumerate() {
            sorted_hops.extend(std::iter::repeat_n(h as u64, c as usize));
        }
        let mut hist = m.hops.clone();
        while hist.len() > 1 && hist.last() == Some(&0) {
            hist.pop();
        }
        m.stretch.sort_by(f32::total_cmp);
        r.issued = m.issued;
        r.delivered = m.delivered;
        r.correct = m.correct;
        r.incorrect = m.incorrect;
        r.lost = m.lost;
        r.late = m.late;
        r.duplicates = m.duplicates;
        r.acks = m.acks;
        r.reroutes = m.reroutes;
        r.custody_reroutes = m.custody_reroutes;
        r.send_errors = m.send_errors;
        r.delivery_ratio = ratio(m.delivered, m.issued);
        r.correct_ratio = ratio(m.correct, m.issued);
        r.hops_mean = if delivered_hops > 0 { hops_sum as f64 / delivered_hops as f64 } else { 0.0 };
        r.hops_p50 = quantile(&sorted_hops, 0.5);
        r.hops_p99 = quantile(&sorted_hops, 0.99);
        r.hops_max = sorted_hops.last().copied().unwrap_or(0);
        r.hops_log16_n = (self.cfg.nodes.max(1) as f64).log(16.0);
        r.hops_histogram = hist;
        r.stretch_mean = if m.stretch.is_empty() {
            0.0
        } else {
            m.stretch.iter().map(|&x| f64::from(x)).sum::<f64>() / m.stretch.len() as f64
        };
        r.stretch_p99 = f64::from(quantile(&m.stretch, 0.99));
    }

    /// Join counts and times: all joins (the old keys), the initial population's, later ones.
    fn fill_joins(&mut self, r: &mut Report) {
        let m = &self.m;
        let all: Vec<u64> = m.initial_join_times.iter().chain(&m.later_join_times).copied().collect();
        let s = JoinStats::of(&all);
        r.joins = s.joins;
        r.join_failures = m.join_failures;
        r.join_time_mean_s = s.mean_s;
        r.join_time_p50_s = s.p50_s;
        r.join_time_p99_s = s.p99_s;
        r.join_time_max_s = s.max_s;
        r.initial_joins = JoinStats::of(&m.initial_join_times);
        r.later_joins = JoinStats::of(&m.later_join_times);
    }

    /// The crash report, if the run crashed nodes.
    fn crash_report(&self) -> Option<CrashReport> {
        let sc = &self.sc;
        let c = sc.crash_at?;
        let repair = sc.repair_at;
        let since = |t: Option<u64>| t.map(|t| (t - c) as f64 / 1e6);
        let mut r = CrashReport {
            crashed: sc.crashed,
            at_s: c as f64 / 1e6,
            repair_s: since(repair),
            ring_s: since(sc.ring_at),
            tables_clean_s: since(sc.clean_at),
            leaf_sets_exact_s: since(sc.exact_at),
            ..CrashReport::default()
        };
        for &(t, o) in &self.m.outcomes {
            let w = if t < c {
                &mut r.before
            } else if repair.is_none_or(|rt| t < rt) {
                &mut r.during
            } else {
                &mut r.after
            };
            add_outcome(w, o);
        }
        Some(r)
    }

    /// The parameters worth knowing when reading the figures.
    fn params(&self) -> BTreeMap<String, String> {
        let p = &self.cfg;
        [
            ("heartbeat_ms", p.node.heartbeat.as_millis().to_string()),
            ("leaf_exchange_s", p.node.leaf_exchange.as_secs().to_string()),
            ("table_stale_target", p.node.table_stale_target().to_string()),
            ("idle_timeout_s", p.node.idle_timeout.as_secs().to_string()),
            ("member_connections", format!("{:?}", p.node.member_connections)),
            ("leaf_set_size", p.node.leaf_set_size.to_string()),
            ("neighbourhood_size", p.node.neighbourhood_size().to_string()),
            ("encrypted", (!p.node.insecure_plaintext).to_string()),
            ("join_rate", p.join_rate.to_string()),
            ("lookup_rate", p.effective_lookup_rate().to_string()),
            ("lookup_timeout_s", p.lookup_timeout.as_secs().to_string()),
            ("settle_s", p.settle.as_secs().to_string()),
            ("topology", format!("{:?}", p.net.topology)),
            ("diameter_ms", p.net.diameter.as_millis().to_string()),
            ("regions", p.net.regions.to_string()),
            ("jitter", p.net.jitter.to_string()),
            ("loss", p.net.loss.to_string()),
            ("loss_mode", format!("{:?}", p.net.loss_mode)),
            ("bucket_s", (self.m.bucket_us as f64 / 1e6).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn add_outcome(w: &mut Window, o: Outcome) {
    w.issued += 1;
    match o {
        Outcome::Correct => {
            w.delivered += 1;
            w.correct += 1;
        }
        Outcome::Incorrect => {
            w.delivered += 1;
            w.incorrect += 1;
        }
        Outcome::Lost => w.lost += 1,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}
