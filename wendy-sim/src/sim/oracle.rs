//! The oracle: the set of live, joined nodes, range queries on it (the numerically closest
//! node to a key, the true ring), the lookups in flight, and the judgement of each lookup as
//! correct, incorrect or lost.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use wendy_proto::{Delivery, NodeId};

use super::hosts::IdMap;
use super::jobs::{Input, Job};
use super::{Outcome, Sim, LOOKUP_PURPOSE, NONE};

/// A lookup in flight (or finished, until it leaves the front of the queue).
#[derive(Clone, Debug)]
pub(super) struct LookupRec {
    pub(super) issued: u64,
    pub(super) key: NodeId,
    pub(super) origin: u32,
    /// The origin host's incarnation when it issued the lookup ([`super::hosts::Host::inc`]).
    pub(super) origin_inc: u32,
    /// Sum of the model latencies of the hops it was forwarded over.
    pub(super) path_us: u64,
    /// The last forwarding seen: (from host, to host, to host's incarnation, when), for the
    /// trail of a lost lookup (`WENDY_SIM_DEBUG`).
    pub(super) last_hop: Option<(u32, u32, u32, u64)>,
    pub(super) done: bool,
}

/// A lookup counted lost at its timeout, kept in case it is delivered after all.
#[derive(Debug)]
pub(super) struct TimedOut {
    rec: LookupRec,
    /// Its origin had crashed by the timeout.
    origin_gone: bool,
    /// Its entry in the crash windows' outcome list, if kept there.
    kept: Option<usize>,
}

/// What the oracle knows.
#[derive(Debug, Default)]
pub(super) struct Oracle {
    /// Live, joined nodes by id.
    pub(super) joined: BTreeMap<NodeId, u32>,
    /// The same hosts, for uniform draws (a host's position is `Host::joined_pos`).
    pub(super) joined_list: Vec<u32>,
    /// Lookups from number `recs_base` on, in issue order.
    pub(super) recs: VecDeque<LookupRec>,
    pub(super) recs_base: u64,
    /// Lookup number by key, while in flight (keys are random, so unique in practice).
    pub(super) by_key: IdMap<u64>,
    /// When the last lookup was issued.
    pub(super) last_issue: u64,
    /// Lookups counted lost at their timeout, by number: a later delivery turns one into a
    /// late delivery. Never-delivered ones stay (a few bytes each, as many as are lost).
    pub(super) late: BTreeMap<u64, TimedOut>,
}

impl Oracle {
    /// The live, joined node numerically closest to `key`.
    pub(super) fn closest(&self, key: NodeId) -> Option<NodeId> {
        let succ = self.joined.range(key..).next().or_else(|| self.joined.iter().next()).map(|e| *e.0);
        let pred = self.joined.range(..key).next_back().or_else(|| self.joined.iter().next_back()).map(|e| *e.0);
        match (succ, pred) {
            (Some(s), Some(p)) => Some(if key.is_closer(p, s) { p } else { s }),
            (s, p) => s.or(p),
        }
    }
}

impl Sim {
    /// Routes a lookup from `origin` towards `key`; its outcome is recorded by the oracle.
    pub fn lookup(&mut self, origin: u32, key: NodeId) {
        if let Some(job) = self.lookup_job(origin, key) {
            self.run_job(job);
        }
    }

    /// The job that sends a lookup from `origin` towards `key`: the oracle records the lookup
    /// now, and the origin's node sends it when the job runs ([`Input::Send`]), at once
    /// ([`Sim::lookup`]) or in a batch; `None` if the origin is down (the lookup is then lost).
    pub(super) fn lookup_job(&mut self, origin: u32, key: NodeId) -> Option<Job> {
        let (id, payload) = self.record_lookup(origin, key);
        let job = self.job(origin, Input::Send { key, payload, lookup: id });
        if job.is_none() {
            self.lookup_failed(id);
        }
        job
    }

    /// The oracle's record of a lookup issued now: its number, and the payload that carries it.
    fn record_lookup(&mut self, origin: u32, key: NodeId) -> (u64, Bytes) {
        let id = self.oracle.recs_base + self.oracle.recs.len() as u64;
        self.m.issued += 1;
        self.oracle.last_issue = self.now;
        let origin_inc = self.hosts[origin as usize].inc;
        self.oracle.recs.push_back(LookupRec {
            issued: self.now,
            key,
            origin,
            origin_inc,
            path_us: 0,
            last_hop: None,
            done: false,
        });
        self.oracle.by_key.insert(key, id);
        self.m.bucket(self.now).lookups.issued += 1;
        let mut payload = vec![0u8; self.cfg.payload_bytes.max(8)];
        payload[..8].copy_from_slice(&id.to_le_bytes());
        (id, Bytes::from(payload))
    }

    /// Lookup `id` could not be sent (its origin is down, or refused it): lost.
    pub(super) fn lookup_failed(&mut self, id: u64) {
        self.m.send_errors += 1;
        self.resolve(id, Outcome::Lost);
    }

    pub(super) fn add_joined(&mut self, h: u32) {
        if self.hosts[h as usize].joined_pos != NONE {
            return;
        }
        self.integrate();
        self.hosts[h as usize].joined_pos = self.oracle.joined_list.len() as u32;
        self.oracle.joined_list.push(h);
        self.oracle.joined.insert(self.hosts[h as usize].id, h);
    }

    pub(super) fn remove_joined(&mut self, h: u32) {
        let pos = self.hosts[h as usize].joined_pos;
        if pos == NONE {
            return;
        }
        self.integrate();
        self.oracle.joined_list.swap_remove(pos as usize);
        if let Some(&moved) = self.oracle.joined_list.get(pos as usize) {
            self.hosts[moved as usize].joined_pos = pos;
        }
        self.hosts[h as usize].joined_pos = NONE;
        self.oracle.joined.remove(&self.hosts[h as usize].id);
    }

    pub(super) fn on_deliver(&mut self, h: u32, d: Delivery) {
        if d.direct || d.purpose != LOOKUP_PURPOSE || d.payload.len() < 8 {
            return;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&d.payload[..8]);
        let id = u64::from_le_bytes(w);
        self.m.trace.delivery(self.now, h, id, d.hops);
        let o = &self.oracle;
        let idx = id.checked_sub(o.recs_base).map(|i| i as usize).filter(|&i| i < o.recs.len());
        if idx.is_none_or(|i| o.recs[i].done) {
            // Known and finished: a duplicate, unless it had been counted lost at its timeout.
            let finished = idx.is_some() || id < o.recs_base;
            if let Some(t) = self.oracle.late.remove(&id) {
                if self.debug {
                    eprintln!("{:.3}s lookup {id} delivered late, at host {h}", self.now as f64 / 1e6);
                }
                self.deliver_late(h, d.hops, t);
            } else {
                self.m.duplicates += u64::from(finished);
            }
            return;
        }
        let Some(idx) = idx else { return };
        let o = &self.oracle;
        let me = self.hosts[h as usize].id;
        let right = o.closest(o.recs[idx].key) == Some(me);
        self.m.delivered += 1;
        self.m.hops[usize::from(d.hops).min(64)] += 1;
        let (origin, path, issued) = (o.recs[idx].origin, o.recs[idx].path_us, o.recs[idx].issued);
        if origin != h && path > 0 {
            let direct = self.latency(origin, h);
            self.m.stretch.push((path as f64 / direct as f64) as f32);
        }
        self.m.bucket(issued).lookups.delivered += 1;
        self.resolve(id, if right { Outcome::Correct } else { Outcome::Incorrect });
    }

    /// A lookup counted lost at its timeout is delivered at `h` after all. Its stretch is not
    /// counted: its path stopped being followed at the timeout.
    fn deliver_late(&mut self, h: u32, hops: u8, t: TimedOut) {
        let right = self.oracle.closest(t.rec.key) == Some(self.hosts[h as usize].id);
        self.m.hops[usize::from(hops).min(64)] += 1;
        self.m.lost_was_late(t.rec.issued, t.kept, if right { Outcome::Correct } else { Outcome::Incorrect });
    }

    pub(super) fn on_forwarded(&mut self, h: u32, key: NodeId, purpose: u8, next: NodeId) {
        if purpose != LOOKUP_PURPOSE {
            return;
        }
        let (Some(&id), Some(&n)) = (self.oracle.by_key.get(&key), self.ids.get(&next)) else { return };
        let lat = self.latency(h, n);
        let o = &mut self.oracle;
        if let Some(r) = id.checked_sub(o.recs_base).and_then(|i| o.recs.get_mut(i as usize)) {
            r.path_us += lat;
            r.last_hop = Some((h, n, self.hosts[n as usize].inc, self.now));
        }
    }

    fn resolve(&mut self, id: u64, outcome: Outcome) {
        let o = &mut self.oracle;
        let Some(r) = id.checked_sub(o.recs_base).and_then(|i| o.recs.get_mut(i as usize)) else { return };
        if r.done {
            return;
        }
        r.done = true;
        let (issued, key) = (r.issued, r.key);
        o.by_key.remove(&key);
        self.m.record_outcome(issued, outcome, self.cfg.crash_fraction > 0.0);
        // Forget finished lookups at the front.
        let o = &mut self.oracle;
        while o.recs.front().is_some_and(|r| r.done) {
            o.recs.pop_front();
            o.recs_base += 1;
        }
    }

    /// Lookups never delivered whose origin crashed between issuing them and their timeout:
    /// what the origin still held (a message not yet acknowledged by its first hop) went with
    /// it.
    pub(super) fn lost_with_origin(&self) -> u64 {
        self.oracle.late.values().filter(|t| t.origin_gone).count() as u64
    }

    /// Declares lost every lookup older than the timeout (all pending ones if `all`).
    pub(super) fn sweep(&mut self, all: bool) {
        let timeout = self.cfg.lookup_timeout.as_micros() as u64;
        while let Some(r) = self.oracle.recs.front() {
            if !r.done && !all && r.issued + timeout > self.now {
                break;
            }
            let id = self.oracle.recs_base;
            if r.done {
                self.oracle.recs.pop_front();
                self.oracle.recs_base += 1;
            } else {
                let rec = r.clone();
                let kept = (self.cfg.crash_fraction > 0.0).then_some(self.m.outcomes.len());
                let origin_gone = self.hosts[rec.origin as usize].inc != rec.origin_inc;
                if self.debug {
                    self.lost_trail(id, &rec, origin_gone);
                }
                self.resolve(id, Outcome::Lost);
                self.oracle.late.insert(id, TimedOut { rec, origin_gone, kept });
            }
        }
    }

    /// Prints where a lost lookup was last seen (`WENDY_SIM_DEBUG`): its origin, the last hop
    /// it was forwarded over, and what became of the node it was sent to.
    fn lost_trail(&self, id: u64, rec: &LookupRec, origin_gone: bool) {
        let t = |us: u64| us as f64 / 1e6;
        let state = |h: u32, inc: u32| {
            let host = &self.hosts[h as usize];
            let life = if host.inc != inc {
                "crashed since"
            } else if host.up {
                "up"
            } else {
                "down"
            };
            let node = host.node.as_deref();
            let ready = node.is_some_and(|n| n.is_ready());
            let joined = host.joined_pos != NONE;
            format!("host {h} {life}, ready {ready}, joined {joined}")
        };
        let hop = match rec.last_hop {
            Some((from, to, inc, at)) => {
                let from_inc = self.hosts[from as usize].inc;
                format!("last forwarded at {:.3}s by {} to {}", t(at), state(from, from_inc), state(to, inc))
            }
            None => "never forwarded".to_string(),
        };
        eprintln!(
            "{:.3}s lookup {id} lost: issued {:.3}s at {} (origin gone {origin_gone}); {hop}",
            t(self.now),
            t(rec.issued),
            state(rec.origin, rec.origin_inc),
        );
    }

    /// Checks the oracle's nodes after a crash: (every nearest leaf is the true ring
    /// neighbour, no leaf set or routing table names a node that is down, every leaf set is
    /// exactly the true one). Only the checks asked for are computed.
    pub(super) fn ring_check(&self, want_clean: bool, want_exact: bool) -> (bool, bool, bool) {
        let ring: Vec<(NodeId, u32)> = self.oracle.joined.iter().map(|(&k, &v)| (k, v)).collect();
        let n = ring.len();
        let (mut near_ok, mut clean_ok, mut exact_ok) = (true, want_clean, want_exact);
        let is_up = |id: &NodeId| self.ids.get(id).is_some_and(|&h| self.hosts[h as usize].up);
        for (i, &(_, h)) in ring.iter().enumerate() {
            let Some(node) = self.hosts[h as usize].node.as_deref() else { continue };
            let leaf = node.leaf_set();
            if n > 1 {
                let succ = ring[(i + 1) % n].0;
                let pred = ring[(i + n - 1) % n].0;
                near_ok &= leaf.cw().first() == Some(&succ) && leaf.ccw().first() == Some(&pred);
            }
            if clean_ok {
                clean_ok =
                    leaf.cw().iter().chain(leaf.ccw()).all(is_up) && node.routing_table().iter().all(|c| is_up(&c.id));
            }
            if exact_ok && n > 1 {
                let k = leaf.half().min(n - 1);
                exact_ok = leaf.cw().len() == k
                    && leaf.ccw().len() == k
                    && (0..k).all(|j| leaf.cw()[j] == ring[(i + 1 + j) % n].0)
                    && (0..k).all(|j| leaf.ccw()[j] == ring[(i + n - 1 - j) % n].0);
            }
            if !near_ok && !clean_ok && !exact_ok {
                break;
            }
        }
        (near_ok, clean_ok, exact_ok)
    }
}

#[cfg(test)]
mod tests {
    use wendy_proto::rng::Rng;

    use super::*;
    use crate::SimConfig;

    #[test]
    fn oracle_picks_the_closest_both_ways_round() {
        let mut sim = Sim::new(SimConfig { nodes: 0, ..SimConfig::default() });
        for _ in 0..50 {
            let h = sim.add_host();
            sim.mark_joined(h);
        }
        let ids: Vec<NodeId> = sim.oracle.joined.keys().copied().collect();
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let key = NodeId::from_u128(rng.next_u128());
            let brute = ids.iter().copied().reduce(|b, x| if key.is_closer(x, b) { x } else { b });
            assert_eq!(sim.closest(key), brute);
        }
    }
}
