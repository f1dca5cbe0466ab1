//! The scenario: the phases of a run (build the population through the join protocol,
//! settle, measure), the workload of lookups, and the faults asked for: a crash of a fraction
//! of the nodes, churn (generated or from a trace) and a split of the network.

use std::collections::BTreeMap;

use wendy_proto::rng::Rng;
use wendy_proto::NodeId;

use super::jobs::Job;
use super::measure::PhaseMarks;
use super::{Sim, NEVER, SEC};
use crate::config::{Build, SessionDist};
use crate::queue::{Ctl, Ev};
use crate::report::Report;

/// Where the scenario stands.
#[derive(Debug)]
pub(super) struct Scenario {
    /// The first bootstrap of a join, lookup origins, keys and arrival gaps.
    pub(super) rng_work: Rng,
    /// The further bootstraps of a join.
    pub(super) rng_boot: Rng,
    /// Sessions, churn arrivals, crash victims and split sides.
    rng_churn: Rng,
    /// Initial nodes still to be created.
    to_join: usize,
    pub(super) measure_start: u64,
    pub(super) measure_end: u64,
    pub(super) crash_at: Option<u64>,
    pub(super) crashed: u64,
    pub(super) ring_at: Option<u64>,
    pub(super) clean_at: Option<u64>,
    pub(super) repair_at: Option<u64>,
    pub(super) exact_at: Option<u64>,
    /// Churn-trace labels to hosts.
    labels: BTreeMap<u32, u32>,
}

impl Scenario {
    pub(super) fn new(rng_work: Rng, rng_churn: Rng, rng_boot: Rng) -> Self {
        Scenario {
            rng_work,
            rng_boot,
            rng_churn,
            to_join: 0,
            measure_start: 0,
            measure_end: NEVER,
            crash_at: None,
            crashed: 0,
            ring_at: None,
            clean_at: None,
            repair_at: None,
            exact_at: None,
            labels: BTreeMap::new(),
        }
    }
}

impl Sim {
    /// Runs the whole scenario of the configuration and reports.
    pub fn run(mut self, mut progress: impl FnMut(&Sim, f64)) -> Report {
        let wall = std::time::Instant::now();
        let cfg = &self.cfg;
        let join_est = match cfg.build {
            Build::Joins => ((cfg.nodes.saturating_sub(1)) as f64 / cfg.join_rate.max(1e-6) * 1e6) as u64,
            // The nodes are created over one heartbeat interval (`build_tables`).
            Build::Tables => cfg.node.heartbeat.as_micros() as u64,
        };
        let planned = join_est
            + cfg.settle.as_micros() as u64
            + cfg.measure_length().as_micros() as u64
            + cfg.lookup_timeout.as_micros() as u64;
        self.m.bucket_us =
            cfg.bucket.map_or_else(|| (planned / 400).max(SEC) / SEC * SEC, |b| (b.as_micros() as u64).max(1));
        self.queue.push(0, Ev::Ctl(Ctl::Sample));
        // Every 65,536 events (a batch of events may cross the mark rather than land on it).
        let mut mark = 0;
        let mut tick = |s: &Sim| {
            if s.events >> 16 != mark {
                mark = s.events >> 16;
                progress(s, s.now as f64 / planned.max(1) as f64);
            }
        };
        let mut marks = self.join_phase(join_est, &mut tick);
        self.settle_phase(&mut tick);
        self.start_measurement(&mut marks);
        self.measure_phase(&mut marks, &mut tick);
        let wall_s = wall.elapsed().as_secs_f64();
        self.report(marks, wall_s)
    }

    /// Phase 1: builds the population through the real join protocol.
    fn join_phase(&mut self, join_est: u64, tick: &mut impl FnMut(&Sim)) -> PhaseMarks {
        let nodes = self.cfg.nodes;
        let mut build_wall_s = 0.0;
        if nodes > 0 && self.cfg.build == Build::Tables {
            let wall = std::time::Instant::now();
            self.build_tables(nodes);
            build_wall_s = wall.elapsed().as_secs_f64();
        } else if nodes > 0 {
            let first = self.add_host();
            self.mark_joined(first);
            self.sc.to_join = nodes - 1;
            if self.sc.to_join > 0 {
                self.queue.push(SEC / 10, Ev::Ctl(Ctl::JoinNext));
            }
        }
        let join_deadline = join_est + 600 * SEC;
        while self.oracle.joined.len() < nodes && self.now < join_deadline && self.step() {
            tick(self);
        }
        self.integrate();
        PhaseMarks {
            memory_after_joins: self.cfg.memory_report.then(|| self.memory_report()),
            join_end: self.now,
            build_wall_s,
            join_ctl: (self.m.ctl_frames, self.m.ctl_bytes),
            join_live_int: self.m.live_int,
            join_by_kind: self.control_by_kind(),
            ..PhaseMarks::default()
        }
    }

    /// Phase 2: lets the network settle.
    fn settle_phase(&mut self, tick: &mut impl FnMut(&Sim)) {
        let settle_end = self.now + self.cfg.settle.as_micros() as u64;
        while self.step_until(settle_end) {
            tick(self);
        }
        self.now = self.now.max(settle_end);
    }

    /// Phase 3 begins: marks the counters and schedules the workload and the faults.
    fn start_measurement(&mut self, marks: &mut PhaseMarks) {
        let measure_len = self.cfg.measure_length().as_micros() as u64;
        self.sc.measure_start = self.now;
        self.sc.measure_end = self.now + measure_len;
        self.integrate();
        marks.measure_live0 = self.m.live_int;
        marks.measure_joined0 = self.m.joined_int;
        marks.measure_ctl0 = (self.m.ctl_frames, self.m.ctl_bytes);
        marks.measure_by_kind0 = self.control_by_kind();
        // The joins settle when the connections they opened have idled out and closed, and
        // when the last joiner's leaf-set exchanges, at doubling gaps from 1/64 of the
        // interval (each also asking a near node for a row), have reached the full interval:
        // about one interval after the join. Two heartbeats more for the wave to pass.
        let node = &self.cfg.node;
        let settle = node.idle_timeout.max(node.leaf_exchange) + 2 * node.heartbeat;
        let joins_settled = marks.join_end + settle.as_micros() as u64;
        marks.steady = (self.sc.measure_start.max(joins_settled), self.sc.measure_end);
        let cfg = self.cfg.clone();
        self.kv_start();
        if cfg.lookups > 0 {
            self.queue.push(self.now, Ev::Ctl(Ctl::Lookup));
        }
        if cfg.crash_fraction > 0.0 {
            let at = cfg.crash_at.map_or(measure_len / 4, |d| d.as_micros() as u64);
            self.queue.push(self.now + at, Ev::Ctl(Ctl::CrashFraction));
        }
        if let Some(churn) = &cfg.churn {
            let hosts: Vec<u32> = (0..self.hosts.len() as u32).filter(|&h| self.hosts[h as usize].up).collect();
            for h in hosts {
                self.schedule_departure(h);
            }
            let mean = mean_session_us(churn.median_session.as_micros() as f64, churn.dist);
            let gap = exp_sample(&mut self.sc.rng_churn, mean / cfg.nodes.max(1) as f64) as u64;
            self.queue.push(self.now + gap, Ev::Ctl(Ctl::Arrival));
        }
        if let Some(first) = cfg.churn_trace.first() {
            for h in 0..self.hosts.len() as u32 {
                self.sc.labels.insert(h, h);
            }
            self.queue.push(self.now + first.time.as_micros() as u64, Ev::Ctl(Ctl::Trace { idx: 0 }));
        }
        if let Some(split) = &cfg.split {
            let at = self.now + split.at.as_micros() as u64;
            self.queue.push(at, Ev::Ctl(Ctl::Split));
            self.queue.push(at + split.length.as_micros() as u64, Ev::Ctl(Ctl::Heal));
        }
    }

    /// Phase 3: runs until every lookup ended, the planned length passed and, after a crash,
    /// the repair was measured (or its timeout passed).
    fn measure_phase(&mut self, marks: &mut PhaseMarks, tick: &mut impl FnMut(&Sim)) {
        let timeout = self.cfg.lookup_timeout.as_micros() as u64;
        loop {
            let issued_all = self.m.issued >= self.cfg.lookups;
            let last_issue = self.oracle.last_issue;
            let settled = self.oracle.recs.iter().all(|r| r.done) || self.now >= last_issue + timeout;
            let measured = self.now >= self.sc.measure_end;
            let repaired = self.sc.crash_at.is_none_or(|c| {
                (self.sc.repair_at.is_some() && self.sc.exact_at.is_some())
                    || self.now >= c + self.cfg.repair_timeout.as_micros() as u64
            });
            let crash_pending = self.cfg.crash_fraction > 0.0 && self.sc.crash_at.is_none();
            if measured && repaired && !crash_pending {
                self.kv_final_start();
            }
            if issued_all && settled && measured && repaired && !crash_pending && self.kv_done() {
                break;
            }
            self.take_due_marks(marks);
            if !self.step() {
                break;
            }
            tick(self);
            // Cheap check of the "settled" condition: only when the front is done or old.
            if issued_all && self.now >= self.oracle.last_issue + timeout {
                self.sweep(true);
            }
        }
        self.sweep(true);
        self.integrate();
    }

    pub(super) fn on_ctl(&mut self, c: Ctl) {
        match c {
            Ctl::JoinNext => self.join_next(),
            Ctl::Lookup => self.next_lookup(),
            Ctl::CrashFraction => self.crash_fraction(),
            Ctl::Check => self.check_repair(),
            Ctl::Arrival => self.arrival(),
            Ctl::Depart { host, inc } => self.depart(host, inc),
            Ctl::Restart { host } => {
                if !self.hosts[host as usize].up {
                    self.start(host);
                    self.join_random(host);
                }
            }
            Ctl::Kill { host, inc } => {
                if self.hosts[host as usize].inc == inc {
                    self.crash(host);
                }
            }
            Ctl::Trace { idx } => self.on_trace(idx as usize),
            Ctl::Split => {
                let Some(plan) = self.cfg.split else { return };
                for i in 0..self.hosts.len() {
                    let side = u8::from(self.sc.rng_churn.unit_f64() < plan.fraction);
                    self.hosts[i].side = side;
                }
                self.links.split = Some(plan.mode);
            }
            Ctl::Heal => self.heal_split(),
            Ctl::KvPut | Ctl::KvProbe | Ctl::KvFinal => self.kv_ctl(c),
            Ctl::Sample => {
                self.sweep(false);
                let (alive, joined) = (self.m.alive, self.oracle.joined.len() as u64);
                let b = self.m.bucket(self.now);
                b.live = alive;
                b.joined = joined;
                b.rss_bytes = crate::report::rss_bytes();
                b.heap_bytes = self.cfg.heap_in_use.map_or(0, |f| f());
                self.queue.push(self.now + self.m.bucket_us, Ev::Ctl(Ctl::Sample));
            }
        }
    }

    fn join_next(&mut self) {
        if self.sc.to_join == 0 {
            return;
        }
        self.sc.to_join -= 1;
        let h = self.add_host();
        self.join_random(h);
        if self.sc.to_join > 0 {
            let gap = (1e6 / self.cfg.join_rate.max(1e-6)) as u64;
            self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::JoinNext));
        }
    }

    fn next_lookup(&mut self) {
        self.next_lookup_as(false);
    }

    /// Issues the next lookup (drawn and recorded by the oracle) and schedules the one after.
    /// With `batch`, the origin's part is returned as a job of the batch being made
    /// ([`Sim::lookup_job`]) rather than run at once.
    pub(super) fn next_lookup_as(&mut self, batch: bool) -> Option<Job> {
        self.sweep(false);
        if self.m.issued >= self.cfg.lookups {
            return None;
        }
        let mut job = None;
        if let Some(origin) = draw_origin(&self.oracle.joined_list, &mut self.sc.rng_work) {
            let key = NodeId::from_u128(self.sc.rng_work.next_u128());
            if batch {
                job = self.lookup_job(origin, key);
            } else {
                self.lookup(origin, key);
            }
        }
        if self.m.issued < self.cfg.lookups {
            let rate = self.cfg.effective_lookup_rate().max(1e-9);
            let gap = exp_sample(&mut self.sc.rng_work, 1e6 / rate) as u64;
            self.queue.push(self.now + gap, Ev::Ctl(Ctl::Lookup));
        }
        job
    }

    /// The host the next lookup's origin will be, as [`Sim::next_lookup_as`] would draw it
    /// now, without drawing it; `None` if it would issue none.
    pub(super) fn next_lookup_origin(&self) -> Option<u32> {
        if self.m.issued >= self.cfg.lookups {
            return None;
        }
        draw_origin(&self.oracle.joined_list, &mut self.sc.rng_work.clone())
    }

    fn crash_fraction(&mut self) {
        let n = ((self.oracle.joined_list.len() as f64) * self.cfg.crash_fraction).round() as usize;
        let mut pool = self.oracle.joined_list.clone();
        pool.sort_unstable();
        let mut victims = Vec::with_capacity(n);
        for i in 0..n.min(pool.len()) {
            let j = i + self.sc.rng_churn.below((pool.len() - i) as u64) as usize;
            pool.swap(i, j);
            victims.push(pool[i]);
        }
        for &h in &victims {
            match self.cfg.bounce_after {
                Some(d) => self.bounce(h, d),
                None => self.crash(h),
            }
        }
        self.kv_judge_all();
        self.sc.crashed = victims.len() as u64;
        self.sc.crash_at = Some(self.now);
        self.queue.push(self.now + self.cfg.check_interval.as_micros() as u64, Ev::Ctl(Ctl::Check));
    }

    fn check_repair(&mut self) {
        let (near, clean, exact) = self.ring_check(self.sc.clean_at.is_none(), self.sc.exact_at.is_none());
        let (now, sc) = (self.now, &mut self.sc);
        if near && sc.ring_at.is_none() {
            sc.ring_at = Some(now);
        }
        if clean && sc.clean_at.is_none() {
            sc.clean_at = Some(now);
        }
        if exact && sc.exact_at.is_none() {
            sc.exact_at = Some(now);
        }
        if near && sc.clean_at.is_some() && sc.repair_at.is_none() {
            sc.repair_at = Some(now);
        }
        let give_up = sc.crash_at.unwrap_or(0) + self.cfg.repair_timeout.as_micros() as u64;
        if (sc.repair_at.is_none() || sc.exact_at.is_none()) && now < give_up {
            self.queue.push(now + self.cfg.check_interval.as_micros() as u64, Ev::Ctl(Ctl::Check));
        }
    }

    fn arrival(&mut self) {
        if self.now >= self.sc.measure_end {
            return;
        }
        self.m.arrivals += 1;
        let h = self.add_host();
        self.join_random(h);
        self.schedule_departure(h);
        let churn = self.cfg.churn.as_ref().expect("arrivals are scheduled only with churn");
        let mean = mean_session_us(churn.median_session.as_micros() as f64, churn.dist);
        let rate_us = (self.cfg.nodes.max(1) as f64) / mean;
        let gap = exp_sample(&mut self.sc.rng_churn, 1.0 / rate_us) as u64;
        self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::Arrival));
    }

    fn depart(&mut self, host: u32, inc: u32) {
        let x = &self.hosts[host as usize];
        if !x.up || x.inc != inc || self.now >= self.sc.measure_end {
            return;
        }
        let graceful = self.cfg.churn.as_ref().map_or(0.0, |c| c.graceful);
        if graceful > 0.0 && self.sc.rng_churn.unit_f64() < graceful {
            self.m.leaves += 1;
            self.leave(host);
        } else {
            self.m.crashes += 1;
            self.crash(host);
        }
    }

    fn on_trace(&mut self, idx: usize) {
        let Some(&rec) = self.cfg.churn_trace.get(idx) else { return };
        let known = self.sc.labels.get(&rec.node).copied();
        match (rec.up, known) {
            (true, None) => {
                self.m.arrivals += 1;
                let h = self.add_host();
                self.sc.labels.insert(rec.node, h);
                self.join_random(h);
            }
            (true, Some(h)) if !self.hosts[h as usize].up => {
                self.m.arrivals += 1;
                self.start(h);
                self.join_random(h);
            }
            (false, Some(h)) if self.hosts[h as usize].up => {
                self.m.crashes += 1;
                self.crash(h);
            }
            _ => {}
        }
        if let Some(next) = self.cfg.churn_trace.get(idx + 1) {
            let at = self.sc.measure_start + next.time.as_micros() as u64;
            self.queue.push(at.max(self.now), Ev::Ctl(Ctl::Trace { idx: idx as u32 + 1 }));
        }
    }

    fn schedule_departure(&mut self, h: u32) {
        let Some(churn) = self.cfg.churn.as_ref() else { return };
        let s = session_sample(&mut self.sc.rng_churn, churn.median_session.as_micros() as f64, churn.dist);
        let inc = self.hosts[h as usize].inc;
        self.queue.push(self.now + s as u64, Ev::Ctl(Ctl::Depart { host: h, inc }));
    }
}

/// An exponential sample with the given mean.
fn exp_sample(rng: &mut Rng, mean: f64) -> f64 {
    -(1.0 - rng.unit_f64()).ln() * mean
}

/// Mean session (µs) of a distribution with the given median (µs).
fn mean_session_us(median: f64, dist: SessionDist) -> f64 {
    match dist {
        SessionDist::Exponential => median / std::f64::consts::LN_2,
        SessionDist::Pareto { shape } => {
            let shape = shape.max(1.0001);
            let xm = median / 2f64.powf(1.0 / shape);
            shape * xm / (shape - 1.0)
        }
    }
}

/// A session time (µs) with the given median (µs).
fn session_sample(rng: &mut Rng, median: f64, dist: SessionDist) -> f64 {
    let u = 1.0 - rng.unit_f64();
    match dist {
        SessionDist::Exponential => -u.ln() * median / std::f64::consts::LN_2,
        SessionDist::Pareto { shape } => {
            let shape = shape.max(1.0001);
            median / 2f64.powf(1.0 / shape) * u.powf(-1.0 / shape)
        }
    }
}

/// A lookup's origin drawn with `rng` from the joined hosts; `None` (nothing drawn) if there
/// is none.
fn draw_origin(joined: &[u32], rng: &mut Rng) -> Option<u32> {
    (!joined.is_empty()).then(|| joined[rng.below(joined.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_medians() {
        let mut rng = Rng::new(9);
        for dist in [SessionDist::Exponential, SessionDist::Pareto { shape: 1.5 }] {
            let mut v: Vec<f64> = (0..20_001).map(|_| session_sample(&mut rng, 100.0, dist)).collect();
            v.sort_by(f64::total_cmp);
            let med = v[10_000];
            assert!((90.0..110.0).contains(&med), "{dist:?}: median {med}");
        }
    }
}
