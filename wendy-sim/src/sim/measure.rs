//! Measures: the counters, the integrals of the live and joined populations over time, the
//! time-series buckets and the trace hash, and the [`Report`] built from them at the end.

use std::collections::BTreeMap;

use super::hosts::ERROR_KINDS;
use super::{Outcome, Sim, SEC};
use crate::report::{peak_rss_bytes, quantile, Bucket, ChurnReport, CrashReport, Report, Window};
use crate::trace::TraceHash;

/// Counters of the run.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) issued: u64,
    pub(super) delivered: u64,
    pub(super) correct: u64,
    pub(super) incorrect: u64,
    pub(super) lost: u64,
    pub(super) duplicates: u64,
    pub(super) send_errors: u64,
    /// Delivered lookups by hop count (64: 64 or more).
    pub(super) hops: Vec<u64>,
    pub(super) stretch: Vec<f32>,
    pub(super) join_times: Vec<u64>,
    pub(super) join_failures: u64,
    pub(super) ctl_frames: u64,
    pub(super) ctl_bytes: u64,
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
    /// Width of the time-series buckets, microseconds.
    pub(super) bucket_us: u64,
}

/// Counter values taken at the phase boundaries of a run, for the per-phase rates.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PhaseMarks {
    /// When the initial population had joined (or the join phase gave up).
    pub(super) join_end: u64,
    /// Control frames and bytes sent during the join phase.
    pub(super) join_ctl: (u64, u64),
    /// Live node-microseconds during the join phase.
    pub(super) join_live_int: u128,
    /// Live and joined node-microseconds at the start of the measurement phase.
    pub(super) measure_live0: u128,
    pub(super) measure_joined0: u128,
    /// Control frames and bytes at the start of the measurement phase.
    pub(super) measure_ctl0: (u64, u64),
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

    /// Brings the population integrals up to now.
    pub(super) fn integrate(&mut self) {
        let m = &mut self.m;
        let dt = u128::from(self.now - m.int_at);
        m.live_int += dt * u128::from(m.alive);
        m.joined_int += dt * self.oracle.joined.len() as u128;
        m.int_at = self.now;
    }

    /// Builds the report at the end of a run.
    pub(super) fn report(&mut self, marks: PhaseMarks, wall_s: f64) -> Report {
        let end = self.now;
        let (n_up, n_conns) = self
            .hosts
            .iter()
            .filter_map(|h| h.node.as_deref())
            .fold((0u64, 0u64), |(n, c), node| (n + 1, c + node.connection_count() as u64));
        let links_live = (self.links.all.len() - self.links.free.len()) as u64;
        let crash = self.crash_report();
        let measure_s = ((end - self.sc.measure_start) as f64 / 1e6).max(1e-9);
        let cfg = &self.cfg;
        let m = &mut self.m;
        let churn = (cfg.churn.is_some() || !cfg.churn_trace.is_empty()).then(|| ChurnReport {
            arrivals: m.arrivals,
            crashes: m.crashes,
            leaves: m.leaves,
            mean_live: (m.live_int - marks.measure_live0) as f64 / 1e6 / measure_s,
            mean_joined: (m.joined_int - marks.measure_joined0) as f64 / 1e6 / measure_s,
        });
        let mut timeline = std::mem::take(&mut m.buckets);
        for b in &mut timeline {
            b.lookups.issued = b.lookups.issued.max(b.lookups.correct + b.lookups.incorrect + b.lookups.lost);
        }
        let node_s = |int: u128| (int as f64 / 1e6).max(1e-9);
        let measure_node_s = node_s(m.live_int - marks.measure_live0);
        let join_node_s = node_s(marks.join_live_int);
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
            control_msgs_per_node_per_s: (m.ctl_frames - marks.measure_ctl0.0) as f64 / measure_node_s,
            control_bytes_per_node_per_s: (m.ctl_bytes - marks.measure_ctl0.1) as f64 / measure_node_s,
            join_control_msgs_per_node_per_s: marks.join_ctl.0 as f64 / join_node_s,
            join_control_bytes_per_node_per_s: marks.join_ctl.1 as f64 / join_node_s,
            frames: m.frames,
            bytes: m.bytes,
            events: self.events,
            events_per_s: self.events as f64 / wall_s.max(1e-9),
            peak_pending_events: self.queue.peak() as u64,
            sim_s: end as f64 / 1e6,
            wall_s,
            peak_rss_bytes: peak_rss,
            bytes_per_node: peak_rss / m.peak_alive.max(1),
            trace_hash: m.trace.hex(),
            conns_per_node: n_conns as f64 / n_up.max(1) as f64,
            links_per_node: links_live as f64 / n_up.max(1) as f64,
            node_errors,
            crash,
            churn,
            params: self.params(),
            timeline,
            ..Report::default()
        };
        self.fill_lookups(&mut r);
        self.fill_joins(&mut r);
        r
    }

    /// Lookup outcomes, hops and stretch.
    fn fill_lookups(&mut self, r: &mut Report) {
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
        r.duplicates = m.duplicates;
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

    /// Join counts and times.
    fn fill_joins(&mut self, r: &mut Report) {
        let m = &mut self.m;
        m.join_times.sort_unstable();
        let jt: Vec<f64> = m.join_times.iter().map(|&t| t as f64 / 1e6).collect();
        r.joins = m.join_times.len() as u64;
        r.join_failures = m.join_failures;
        r.join_time_mean_s = if jt.is_empty() { 0.0 } else { jt.iter().sum::<f64>() / jt.len() as f64 };
        r.join_time_p50_s = quantile(&jt, 0.5);
        r.join_time_p99_s = quantile(&jt, 0.99);
        r.join_time_max_s = jt.last().copied().unwrap_or(0.0);
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
            ("idle_timeout_s", p.node.idle_timeout.as_secs().to_string()),
            ("leaf_set_size", p.node.leaf_set_size.to_string()),
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
