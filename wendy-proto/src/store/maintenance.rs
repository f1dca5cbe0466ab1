//! Replica maintenance: applying records, who may send them, the anti-entropy exchange with
//! ring neighbours, the hand-off of keys this node no longer replicates, and expiry.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use crate::id::{KeyRange, NodeId};
use crate::time::Instant;
use crate::Node;

use super::msg::{Blob, Code, StoreMsg, WireRecord, DIGEST_BUCKETS, MAX_STORE_ENTRIES};
use super::ops::READ_TAG;
use super::record::{wins, Record, Version, RECORD_OVERHEAD};
use super::Store;

/// Which nodes share which keys, as this node sees its leaf set now.
struct View {
    me: NodeId,
    k: usize,
    /// This node and its leaf set.
    ring: Vec<NodeId>,
    /// Keys this node is a replica of, when its leaf set can tell.
    mine: Option<KeyRange>,
}

impl View {
    fn new(node: &Node, k: usize) -> Self {
        let me = node.id();
        let mut ring = node.leaf_set().members();
        ring.push(me);
        View { me, k, ring, mine: node.range(me, k.saturating_sub(1)) }
    }

    /// The rank of `id` among the nodes closest to `key` (0: the root), if `id` is known.
    fn rank(&self, key: NodeId, id: NodeId) -> Option<usize> {
        if !self.ring.contains(&id) {
            return None;
        }
        Some(self.ring.iter().filter(|&&x| key.is_closer(x, id)).count())
    }

    /// True if this node is one of the key's `k` replicas.
    fn is_mine(&self, key: NodeId) -> bool {
        match self.mine {
            Some(r) => r.contains(key),
            None => self.rank(key, self.me).is_some_and(|r| r < self.k),
        }
    }

    /// True if `a` and `b` are both among the key's replicas.
    fn shared(&self, key: NodeId, a: NodeId, b: NodeId) -> bool {
        let within = |x| self.rank(key, x).is_some_and(|r| r < self.k);
        within(a) && within(b)
    }
}

impl Store {
    /// Stores `record` if it wins over what is held; returns the version held afterwards.
    pub(super) fn apply(&mut self, now: Instant, key: NodeId, record: Record) -> Result<Version, Code> {
        if record.value.as_ref().is_some_and(|v| v.len() > self.cfg.max_value_size) {
            self.stats.refused_too_large += 1;
            return Err(Code::TooLarge);
        }
        let old = self.index.get(&key).copied();
        if let Some(o) = old.filter(|o| !o.is_expired(now)) {
            if !wins(record.version, record.is_tombstone(), o.version, o.tombstone) {
                return Ok(o.version);
            }
        }
        let meta = record.meta();
        let freed = old.map_or(0, |o| o.charge());
        if self.used - freed + meta.charge() > self.cfg.quota_bytes {
            self.stats.refused_full += 1;
            return Err(Code::Full);
        }
        if self.backend.put(key, &record).is_err() {
            self.stats.backend_errors += 1;
            return Err(Code::Backend);
        }
        self.used = self.used - freed + meta.charge();
        self.index.insert(key, meta);
        Ok(record.version)
    }

    /// The record of `key`, unless absent or expired.
    pub(super) fn read(&mut self, now: Instant, key: NodeId) -> Option<Record> {
        if self.index.get(&key)?.is_expired(now) {
            return None;
        }
        match self.backend.get(key) {
            Ok(r) => r,
            Err(_) => {
                self.stats.backend_errors += 1;
                None
            }
        }
    }

    fn remove(&mut self, key: NodeId) {
        if let Some(m) = self.index.remove(&key) {
            self.used -= m.charge();
            if self.backend.remove(key).is_err() {
                self.stats.backend_errors += 1;
            }
        }
        self.confirmed.remove(&key);
    }

    /// True if this node takes records of `key` from `from`: it is ready or completing its
    /// join (the others already count it among the replicas: refusing would fail their
    /// writes until the join completes), it is among the key's `k + 1` closest nodes it
    /// knows (one of slack for views that differ for a moment), and `from` is itself or a
    /// leaf-set member among the key's `2k + 1` closest.
    pub(super) fn accepts(&self, node: &Node, key: NodeId, from: NodeId) -> bool {
        if !node.is_ready() && !node.is_joining() {
            return false;
        }
        let v = View::new(node, self.cfg.replicas);
        let k = self.cfg.replicas;
        v.rank(key, v.me).is_some_and(|r| r <= k) && (from == v.me || v.rank(key, from).is_some_and(|r| r <= 2 * k))
    }

    /// When a record written or received now expires: after its time to live, and a
    /// tombstone after at most the tombstone lifetime.
    pub(super) fn expiry(&self, now: Instant, tombstone: bool, ttl_ms: Option<u64>) -> Option<Instant> {
        let ttl = ttl_ms.map(Duration::from_millis);
        let ttl = if tombstone {
            Some(ttl.map_or(self.cfg.tombstone_lifetime, |t| t.min(self.cfg.tombstone_lifetime)))
        } else {
            ttl
        };
        ttl.map(|t| now.saturating_add(t))
    }

    pub(super) fn to_wire(&self, now: Instant, r: &Record) -> WireRecord {
        let ttl_ms = r.expires.map(|t| u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX));
        WireRecord { version: r.version, value: r.value.clone().map(Blob), ttl_ms }
    }

    pub(super) fn record_of(&self, now: Instant, w: WireRecord) -> Record {
        let tombstone = w.value.is_none();
        Record { version: w.version, expires: self.expiry(now, tombstone, w.ttl_ms), value: w.value.map(|b| b.0) }
    }

    /// Removes what expired.
    pub(super) fn sweep(&mut self, now: Instant) {
        let dead: Vec<NodeId> = self.index.iter().filter(|(_, m)| m.is_expired(now)).map(|(&k, _)| k).collect();
        self.stats.expired += dead.len() as u64;
        for k in dead {
            self.remove(k);
        }
    }

    /// One round of maintenance: a digest to every ring neighbour that shares keys with us,
    /// and offers of the keys we no longer replicate to their replicas.
    pub(super) fn sync(&mut self, now: Instant, node: &mut Node) {
        let v = View::new(node, self.cfg.replicas);
        for peer in self.neighbours(node) {
            let buckets = self.digest(&v, peer, u16::MAX).0.to_vec();
            self.send_maintenance(now, node, peer, &StoreMsg::Digest { buckets });
        }
        // Hand-off.
        let strays: Vec<(NodeId, Version)> =
            self.index.iter().filter(|(k, _)| !v.is_mine(**k)).map(|(&k, m)| (k, m.version)).collect();
        let stray_set: BTreeSet<NodeId> = strays.iter().map(|s| s.0).collect();
        self.confirmed.retain(|k, _| stray_set.contains(k));
        let mut offers: BTreeMap<NodeId, Vec<(NodeId, Version)>> = BTreeMap::new();
        for (key, version) in strays {
            let set: Vec<NodeId> =
                node.replica_set(key, self.cfg.replicas).into_iter().map(|i| i.id).filter(|&i| i != v.me).collect();
            let confirmed = self.confirmed.get(&key);
            let missing: Vec<NodeId> =
                set.iter().copied().filter(|id| confirmed.is_none_or(|c| !c.contains(id))).collect();
            if missing.is_empty() && !set.is_empty() {
                self.remove(key);
                self.stats.handed_off += 1;
                continue;
            }
            for id in missing {
                let list = offers.entry(id).or_default();
                if list.len() < MAX_STORE_ENTRIES {
                    list.push((key, version));
                }
            }
        }
        for (id, entries) in offers {
            self.send_maintenance(now, node, id, &StoreMsg::Offer { entries });
        }
    }

    /// The ring neighbours that share keys with us: up to `k - 1` on each side.
    fn neighbours(&self, node: &Node) -> Vec<NodeId> {
        let me = node.id();
        let mut ring = node.leaf_set().members();
        ring.sort_by_key(|&x| me.cw_distance(x));
        let n = self.cfg.replicas.saturating_sub(1);
        let mut out: Vec<NodeId> = ring.iter().take(n).chain(ring.iter().rev().take(n)).copied().collect();
        out.sort();
        out.dedup();
        out
    }

    /// The digest of the keys we hold that `peer` and we should both hold, in the buckets of
    /// `mask`; and those keys.
    fn digest(&self, v: &View, peer: NodeId, mask: u16) -> ([u64; DIGEST_BUCKETS], Vec<NodeId>) {
        let mut buckets = [0u64; DIGEST_BUCKETS];
        let mut keys = Vec::new();
        for (&key, m) in &self.index {
            let b = bucket(key);
            if mask & (1 << b) == 0 || !v.shared(key, v.me, peer) {
                continue;
            }
            buckets[b] ^= mix(key, m.version, m.tombstone);
            keys.push(key);
        }
        (buckets, keys)
    }

    pub(super) fn on_digest(&mut self, now: Instant, node: &mut Node, from: NodeId, theirs: &[u64]) {
        if !node.is_ready() {
            return;
        }
        let v = View::new(node, self.cfg.replicas);
        let (mine, _) = self.digest(&v, from, u16::MAX);
        let mask = (0..DIGEST_BUCKETS).filter(|&b| theirs.get(b) != Some(&mine[b])).fold(0u16, |m, b| m | 1 << b);
        if mask == 0 {
            return;
        }
        let (_, keys) = self.digest(&v, from, mask);
        let entries = keys
            .into_iter()
            .take(MAX_STORE_ENTRIES)
            .filter_map(|k| self.index.get(&k).map(|m| (k, m.version, m.tombstone)))
            .collect();
        self.send_maintenance(now, node, from, &StoreMsg::KeyList { mask, entries });
    }

    /// The peer listed what it holds in the buckets that differ: push what it misses, fetch
    /// what we miss.
    pub(super) fn on_key_list(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        mask: u16,
        entries: Vec<(NodeId, Version, bool)>,
    ) {
        if !node.is_ready() {
            return;
        }
        let v = View::new(node, self.cfg.replicas);
        let theirs: BTreeMap<NodeId, (Version, bool)> = entries.into_iter().map(|(k, v, t)| (k, (v, t))).collect();
        let (_, mine) = self.digest(&v, from, mask);
        let mut push = Vec::new();
        for key in mine {
            let Some(m) = self.index.get(&key) else { continue };
            let behind = theirs.get(&key).is_none_or(|&(tv, tt)| wins(m.version, m.tombstone, tv, tt));
            if behind && !m.is_expired(now) {
                push.push(key);
            }
        }
        let mut pull = Vec::new();
        for (&key, &(tv, tt)) in &theirs {
            let lacking = self.index.get(&key).is_none_or(|m| wins(tv, tt, m.version, m.tombstone));
            if lacking && self.accepts(node, key, from) {
                pull.push(key);
            }
        }
        self.push(now, node, from, push);
        if !pull.is_empty() {
            self.next_tag += 1;
            let msg = StoreMsg::Fetch { tag: self.next_tag & !READ_TAG, keys: pull };
            self.send_maintenance(now, node, from, &msg);
        }
    }

    /// Sends the records of `keys` to `to`, in messages of at most the transfer size, within
    /// the maintenance budget (what does not fit waits for a later round).
    fn push(&mut self, now: Instant, node: &mut Node, to: NodeId, keys: Vec<NodeId>) {
        let rate = self.cfg.transfer_rate as f64;
        let mut batch: Vec<(NodeId, WireRecord)> = Vec::new();
        let mut bytes = 0usize;
        for key in keys {
            let Some(r) = self.read(now, key) else { continue };
            let size = r.value.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD as usize;
            if !self.budget.take(now, size as f64, rate, 2.0 * rate) {
                break;
            }
            if bytes + size > self.cfg.transfer_bytes || batch.len() >= MAX_STORE_ENTRIES {
                self.flush_push(now, node, to, &mut batch);
                bytes = 0;
            }
            bytes += size;
            batch.push((key, self.to_wire(now, &r)));
        }
        self.flush_push(now, node, to, &mut batch);
    }

    fn flush_push(&mut self, now: Instant, node: &mut Node, to: NodeId, batch: &mut Vec<(NodeId, WireRecord)>) {
        if batch.is_empty() {
            return;
        }
        self.next_tag += 1;
        let msg = StoreMsg::Replicate { tag: self.next_tag & !READ_TAG, records: std::mem::take(batch) };
        self.send_maintenance(now, node, to, &msg);
    }

    pub(super) fn on_replicate(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        tag: u64,
        records: Vec<(NodeId, WireRecord)>,
    ) {
        let bytes: usize =
            records.iter().map(|(_, w)| w.value.as_ref().map_or(0, |v| v.0.len()) + RECORD_OVERHEAD as usize).sum();
        let rate = self.cfg.transfer_bytes_per_peer as f64;
        if !self.transfer_limits.take(from, now, bytes as f64, rate, 2.0 * rate) {
            self.stats.refused_rate += 1;
            self.send(now, node, from, &StoreMsg::Stored { tag, code: Code::RateLimited, held: Vec::new() });
            return;
        }
        let (code, held) = self.take_records(now, node, from, records);
        self.send(now, node, from, &StoreMsg::Stored { tag, code, held });
    }

    /// Applies records sent by `from`; the versions held afterwards, and the last refusal.
    fn take_records(
        &mut self,
        now: Instant,
        node: &Node,
        from: NodeId,
        records: Vec<(NodeId, WireRecord)>,
    ) -> (Code, Vec<(NodeId, Version)>) {
        let mut code = Code::Ok;
        let mut held = Vec::new();
        for (key, w) in records {
            if !self.accepts(node, key, from) {
                self.stats.refused_not_replica += 1;
                code = Code::NotReplica;
                continue;
            }
            let r = self.record_of(now, w);
            match self.apply(now, key, r) {
                Ok(v) => {
                    self.stats.records_in += 1;
                    held.push((key, v));
                }
                Err(c) => code = c,
            }
        }
        (code, held)
    }

    pub(super) fn on_stored(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        tag: u64,
        code: Code,
        held: Vec<(NodeId, Version)>,
    ) {
        if self.write_answered(now, node, from, tag, code, &held) {
            return;
        }
        for (key, v) in held {
            self.confirm(from, key, v);
        }
    }

    pub(super) fn on_fetch(&mut self, now: Instant, node: &mut Node, from: NodeId, tag: u64, keys: Vec<NodeId>) {
        let mut records = Vec::new();
        let mut bytes = 0;
        for key in keys {
            let Some(r) = self.read(now, key) else { continue };
            let size = r.value.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD as usize;
            if bytes + size > self.cfg.transfer_bytes && !records.is_empty() {
                break;
            }
            bytes += size;
            records.push((key, self.to_wire(now, &r)));
        }
        let msg = StoreMsg::Fetched { tag, records };
        if tag & READ_TAG != 0 {
            self.send(now, node, from, &msg);
        } else {
            self.send_maintenance(now, node, from, &msg);
        }
    }

    pub(super) fn on_fetched(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        tag: u64,
        records: Vec<(NodeId, WireRecord)>,
    ) {
        if tag & READ_TAG != 0 {
            self.read_answered(now, node, from, tag, records);
            return;
        }
        let _ = self.take_records(now, node, from, records);
    }

    /// A node that no longer replicates these keys offers them: say which we hold, fetch the rest.
    pub(super) fn on_offer(&mut self, now: Instant, node: &mut Node, from: NodeId, entries: Vec<(NodeId, Version)>) {
        if !node.is_ready() {
            return;
        }
        let mut have = Vec::new();
        let mut want = Vec::new();
        for (key, v) in entries {
            match self.index.get(&key) {
                Some(m) if m.version >= v => have.push(key),
                _ if self.accepts(node, key, from) => want.push(key),
                _ => {}
            }
        }
        if !have.is_empty() {
            self.send_maintenance(now, node, from, &StoreMsg::Have { keys: have });
        }
        if !want.is_empty() {
            self.next_tag += 1;
            let msg = StoreMsg::Fetch { tag: self.next_tag & !READ_TAG, keys: want };
            self.send_maintenance(now, node, from, &msg);
        }
    }

    pub(super) fn on_have(&mut self, from: NodeId, keys: Vec<NodeId>) {
        for key in keys {
            if let Some(v) = self.index.get(&key).map(|m| m.version) {
                self.confirm(from, key, v);
            }
        }
    }

    /// `from` holds `key` at version `v`: if that is ours or newer, it counts for the hand-off.
    fn confirm(&mut self, from: NodeId, key: NodeId, v: Version) {
        if self.index.get(&key).is_some_and(|m| m.version <= v) && self.confirmed.len() < 1 << 20 {
            self.confirmed.entry(key).or_default().insert(from);
        }
    }
}

fn bucket(key: NodeId) -> usize {
    (key.as_u128() as usize) % DIGEST_BUCKETS
}

/// A 64-bit hash of one entry of a digest (FNV-1a over the bytes, then a final mix).
fn mix(key: NodeId, v: Version, tombstone: bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = key
        .to_bytes()
        .into_iter()
        .chain(v.counter.to_le_bytes())
        .chain(v.writer.to_bytes())
        .chain([u8::from(tombstone)]);
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut s = h;
    crate::rng::splitmix64(&mut s)
}
