//! The key-value workload: every node runs the storage layer ([`wendy_proto::store`]); keys
//! are put at the start of the measurement phase, random keys are read during it and every
//! key is read at its end. The oracle follows each key's newest version and, at every crash,
//! judges whether any live node still holds it (if none does, the key is unrecoverable:
//! every replica died before maintenance could copy it).

use std::collections::BTreeMap;

use bytes::Bytes;
use wendy_proto::rng::{splitmix64, Rng};
use wendy_proto::store::{Outcome, Store, StoreEvent, Version};
use wendy_proto::{Instant, NodeId};

use super::{Sim, SEC};
use crate::config::KvConfig;
use crate::queue::{Ctl, Ev};
use crate::report::KvReport;

/// Joined nodes on each side of a key that the oracle looks at for a copy of it. Replicas
/// are the `k` closest; copies in transit sit within the leaf set.
const HOLDER_SCAN: usize = 12;

/// One key of the workload.
#[derive(Debug, Default)]
struct KvKey {
    key: NodeId,
    /// The version of its successful put.
    newest: Option<Version>,
    put_failed: bool,
    unrecoverable: bool,
    /// The final get returned the newest value.
    readable: bool,
    final_done: bool,
}

/// What a pending store operation is for.
#[derive(Clone, Copy, Debug)]
enum Purpose {
    Put(u32),
    Probe(u32),
    Final(u32),
}

/// The workload's state.
#[derive(Debug)]
pub(super) struct Kv {
    cfg: KvConfig,
    keys: Vec<KvKey>,
    by_key: BTreeMap<NodeId, u32>,
    rng: Rng,
    next_put: usize,
    next_final: usize,
    /// (host, incarnation, op) -> purpose.
    pending: BTreeMap<(u32, u32, u64), Purpose>,
    /// Final gets to issue again (their client crashed).
    retry: Vec<u32>,
    /// Puts to issue again (their client crashed before the answer).
    retry_puts: Vec<u32>,
    final_started: bool,
    finals_done: usize,
    probes: u64,
    probes_recoverable: u64,
    probes_ok: u64,
    hops: Vec<u8>,
    bytes: u64,
    maintenance_bytes: u64,
    /// Storage bytes counted from the start of the measurement phase.
    measure_bytes0: (u64, u64),
    puts_end: u64,
}

impl Kv {
    pub(super) fn new(cfg: KvConfig, seed: u64) -> Self {
        let mut s = seed ^ 0x6b76_6b76_6b76_6b76;
        let mut rng = Rng::new(splitmix64(&mut s));
        let mut keys = Vec::with_capacity(cfg.keys);
        let mut by_key = BTreeMap::new();
        for i in 0..cfg.keys {
            let key = NodeId::from_u128(rng.next_u128());
            by_key.insert(key, i as u32);
            keys.push(KvKey { key, ..KvKey::default() });
        }
        Kv {
            cfg,
            keys,
            by_key,
            rng,
            next_put: 0,
            next_final: 0,
            pending: BTreeMap::new(),
            retry: Vec::new(),
            retry_puts: Vec::new(),
            final_started: false,
            finals_done: 0,
            probes: 0,
            probes_recoverable: 0,
            probes_ok: 0,
            hops: Vec::new(),
            bytes: 0,
            maintenance_bytes: 0,
            measure_bytes0: (0, 0),
            puts_end: u64::MAX,
        }
    }

    /// True once every key's final get has ended (or there is no workload).
    pub(super) fn done(&self) -> bool {
        self.final_started && self.finals_done >= self.keys.iter().filter(|k| k.newest.is_some()).count()
    }
}

fn value_of(i: u32, size: usize) -> Bytes {
    let b = i.to_le_bytes();
    Bytes::from((0..size).map(|j| b[j % 4] ^ (j as u8)).collect::<Vec<u8>>())
}

impl Sim {
    /// Measurement starts: schedules the puts.
    pub(super) fn kv_start(&mut self) {
        let Some(kv) = self.kv.as_mut() else { return };
        kv.measure_bytes0 = (kv.bytes, kv.maintenance_bytes);
        let gap = (1e6 / kv.cfg.put_rate.max(1e-6)) as u64;
        kv.puts_end = self.now + gap * kv.keys.len() as u64 + 10 * SEC;
        self.queue.push(self.now, Ev::Ctl(Ctl::KvPut));
        if kv.cfg.probe_rate > 0.0 {
            let at = kv.puts_end;
            self.queue.push(at, Ev::Ctl(Ctl::KvProbe));
        }
    }

    /// Measurement ends: schedules the final read.
    pub(super) fn kv_final_start(&mut self) {
        let Some(kv) = self.kv.as_mut() else { return };
        if !kv.final_started {
            kv.final_started = true;
            self.queue.push(self.now, Ev::Ctl(Ctl::KvFinal));
        }
    }

    /// True if the workload has nothing left to do.
    pub(super) fn kv_done(&self) -> bool {
        self.kv.as_ref().is_none_or(Kv::done)
    }

    pub(super) fn kv_ctl(&mut self, c: Ctl) {
        let Some(kv) = self.kv.as_mut() else { return };
        match c {
            Ctl::KvPut => {
                if let Some(i) = kv.retry_puts.pop() {
                    let (key, value) = (kv.keys[i as usize].key, value_of(i, kv.cfg.value_size));
                    self.kv_issue(Purpose::Put(i), |s, now, n| s.put(now, n, key, value, None));
                    return;
                }
                if kv.next_put >= kv.keys.len() {
                    return;
                }
                let i = kv.next_put as u32;
                kv.next_put += 1;
                let gap = (1e6 / kv.cfg.put_rate.max(1e-6)) as u64;
                let (key, value) = (kv.keys[i as usize].key, value_of(i, kv.cfg.value_size));
                self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::KvPut));
                self.kv_issue(Purpose::Put(i), |s, now, n| s.put(now, n, key, value, None));
            }
            Ctl::KvProbe => {
                if self.now >= self.sc.measure_end || kv.final_started {
                    return;
                }
                let gap = (-(1.0 - kv.rng.unit_f64()).ln() * 1e6 / kv.cfg.probe_rate) as u64;
                let i = kv.rng.below(kv.keys.len() as u64) as u32;
                let key = kv.keys[i as usize].key;
                self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::KvProbe));
                if kv.keys[i as usize].newest.is_some() {
                    self.kv_issue(Purpose::Probe(i), |s, now, n| s.get(now, n, key));
                }
            }
            Ctl::KvFinal => {
                let i = match kv.retry.pop() {
                    Some(i) => i,
                    None => loop {
                        if kv.next_final >= kv.keys.len() {
                            return;
                        }
                        kv.next_final += 1;
                        if kv.keys[kv.next_final - 1].newest.is_some() {
                            break (kv.next_final - 1) as u32;
                        }
                    },
                };
                let gap = (1e6 / kv.cfg.final_rate.max(1e-6)) as u64;
                let key = kv.keys[i as usize].key;
                self.queue.push(self.now + gap.max(1), Ev::Ctl(Ctl::KvFinal));
                self.kv_issue(Purpose::Final(i), |s, now, n| s.get(now, n, key));
            }
            _ => {}
        }
    }

    /// Issues one operation at a random joined node.
    fn kv_issue(
        &mut self,
        purpose: Purpose,
        op: impl FnOnce(
            &mut Store,
            Instant,
            &mut wendy_proto::Node,
        ) -> Result<wendy_proto::store::OpId, wendy_proto::store::StoreError>,
    ) {
        let list = &self.oracle.joined_list;
        if list.is_empty() {
            return;
        }
        let Some(kv) = self.kv.as_mut() else { return };
        let h = list[kv.rng.below(list.len() as u64) as usize];
        let Some(mut node) = self.take(h) else { return };
        let now = Instant::from_micros(self.now);
        let inc = self.hosts[h as usize].inc;
        let r = match self.hosts[h as usize].store.as_mut() {
            Some(s) => op(s, now, &mut node),
            None => Err(wendy_proto::store::StoreError::Timeout),
        };
        let kv = self.kv.as_mut().expect("checked above");
        match r {
            Ok(id) => {
                kv.pending.insert((h, inc, id.0), purpose);
            }
            Err(_) => kv_failed(kv, purpose),
        }
        self.finish(h, node);
    }

    /// Takes the completed operations and the traffic counters of host `h`'s store.
    pub(super) fn kv_collect(&mut self, h: u32, store: &mut Store) {
        let inc = self.hosts[h as usize].inc;
        let st = store.stats();
        let seen = &mut self.hosts[h as usize].kv_seen;
        let (db, dm) = (seen[0].take(st.bytes_out), seen[1].take(st.maintenance_bytes_out));
        let Some(kv) = self.kv.as_mut() else { return };
        kv.bytes += db;
        kv.maintenance_bytes += dm;
        while let Some(StoreEvent { op, result, .. }) = store.poll_event() {
            let Some(purpose) = kv.pending.remove(&(h, inc, op.0)) else { continue };
            match (purpose, result) {
                (Purpose::Put(i), Ok(Outcome::Stored { version, .. })) => kv.keys[i as usize].newest = Some(version),
                (Purpose::Probe(i) | Purpose::Final(i), Ok(Outcome::Found { version, hops, .. })) => {
                    kv.hops.push(hops);
                    let k = &mut kv.keys[i as usize];
                    let fresh = k.newest.is_some_and(|n| version >= n);
                    if let Purpose::Final(_) = purpose {
                        k.readable = fresh;
                        k.final_done = true;
                        kv.finals_done += 1;
                    } else if !k.unrecoverable {
                        kv.probes += 1;
                        kv.probes_recoverable += 1;
                        kv.probes_ok += u64::from(fresh);
                    } else {
                        kv.probes += 1;
                    }
                }
                (p, _) => kv_failed(kv, p),
            }
        }
    }

    /// Host `h` crashed with `store`: every key it held that no live node holds any more is
    /// unrecoverable; its clients' final gets are issued again elsewhere.
    pub(super) fn kv_on_crash(&mut self, h: u32, store: Option<Box<Store>>) {
        let Some(kv) = self.kv.as_ref() else { return };
        let mut check = Vec::new();
        if let Some(s) = &store {
            for (key, _) in s.entries() {
                if let Some(&i) = kv.by_key.get(key) {
                    check.push(i);
                }
            }
        }
        for i in check {
            self.kv_judge(i);
        }
        let Some(kv) = self.kv.as_mut() else { return };
        let lost: Vec<(u32, u32, u64)> = kv.pending.range((h, 0, 0)..(h + 1, 0, 0)).map(|(&k, _)| k).collect();
        for k in lost {
            match kv.pending.remove(&k) {
                Some(Purpose::Final(i)) => kv.retry.push(i),
                Some(Purpose::Put(i)) => {
                    kv.retry_puts.push(i);
                    self.queue.push(self.now, Ev::Ctl(Ctl::KvPut));
                }
                _ => {}
            }
        }
    }

    /// Marks key `i` unrecoverable if no live, joined node near it holds its newest version.
    fn kv_judge(&mut self, i: u32) {
        let Some(kv) = self.kv.as_ref() else { return };
        let k = &kv.keys[i as usize];
        let Some(newest) = k.newest else { return };
        if k.unrecoverable || self.kv_copies(k.key, newest) > 0 {
            return;
        }
        if let Some(kv) = self.kv.as_mut() {
            kv.keys[i as usize].unrecoverable = true;
        }
    }

    /// Live, joined nodes among the `HOLDER_SCAN` on each side of `key` that hold `version`
    /// or newer of it (not a tombstone).
    fn kv_copies(&self, key: NodeId, version: Version) -> usize {
        let joined = &self.oracle.joined;
        let n = joined.len().min(2 * HOLDER_SCAN);
        let up = joined.range(key..).chain(joined.iter()).take(n / 2 + n % 2);
        let down = joined.range(..key).rev().chain(joined.iter().rev()).take(n / 2);
        let mut seen: Vec<u32> = up.chain(down).map(|(_, &h)| h).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
            .filter(|&h| {
                self.hosts[h as usize]
                    .store
                    .as_ref()
                    .and_then(|s| s.meta(key))
                    .is_some_and(|m| m.version >= version && !m.tombstone)
            })
            .count()
    }

    /// After a crash of many nodes at once: judges every key.
    pub(super) fn kv_judge_all(&mut self) {
        let n = self.kv.as_ref().map_or(0, |kv| kv.keys.len());
        for i in 0..n as u32 {
            self.kv_judge(i);
        }
    }

    /// The workload's figures; `node_s` is the live node-seconds of the measurement phase.
    pub(super) fn kv_report(&self, node_s: f64) -> Option<KvReport> {
        let kv = self.kv.as_ref()?;
        let put: Vec<&KvKey> = kv.keys.iter().filter(|k| k.newest.is_some()).collect();
        let recoverable: Vec<&KvKey> = put.iter().copied().filter(|k| !k.unrecoverable).collect();
        let copies: usize = recoverable.iter().map(|k| self.kv_copies(k.key, k.newest.unwrap_or_default())).sum();
        let readable = put.iter().filter(|k| k.readable).count() as u64;
        let node_s = node_s.max(1e-9);
        Some(KvReport {
            kv_keys: kv.keys.len() as u64,
            kv_replicas: kv.cfg.replicas as u64,
            kv_value_size: kv.cfg.value_size as u64,
            kv_put_failed: kv.keys.iter().filter(|k| k.put_failed).count() as u64,
            kv_readable: readable,
            kv_readable_fraction: readable as f64 / put.len().max(1) as f64,
            kv_unrecoverable: put.iter().filter(|k| k.unrecoverable).count() as u64,
            kv_lost: recoverable.iter().filter(|k| !k.readable).count() as u64,
            kv_copies_mean: copies as f64 / recoverable.len().max(1) as f64,
            kv_probes: kv.probes,
            kv_probes_readable: kv.probes_ok,
            kv_probes_readable_fraction: kv.probes_ok as f64 / kv.probes_recoverable.max(1) as f64,
            kv_get_hops_mean: kv.hops.iter().map(|&h| f64::from(h)).sum::<f64>() / kv.hops.len().max(1) as f64,
            kv_transfer_bytes_per_node_per_s: (kv.maintenance_bytes - kv.measure_bytes0.1) as f64 / node_s,
            kv_bytes_per_node_per_s: (kv.bytes - kv.measure_bytes0.0) as f64 / node_s,
        })
    }
}

fn kv_failed(kv: &mut Kv, p: Purpose) {
    match p {
        Purpose::Put(i) => kv.keys[i as usize].put_failed = true,
        Purpose::Probe(i) => {
            kv.probes += 1;
            if !kv.keys[i as usize].unrecoverable {
                kv.probes_recoverable += 1;
            }
        }
        Purpose::Final(i) => {
            let k = &mut kv.keys[i as usize];
            if !k.final_done {
                k.final_done = true;
                kv.finals_done += 1;
            }
        }
    }
}
