//! Operations: the client's side of put, delete and get, and the key root's side, which
//! versions a write and copies it to the replicas, or reads every replica and answers with
//! the newest record.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::id::NodeId;
use crate::time::Instant;
use crate::Node;

use super::msg::{Blob, Code, StoreMsg, WireRecord};
use super::record::{wins, Record, Version};
use super::{OpId, Outcome, Store, StoreError};

/// Tags of the root's reads carry this bit, so a replica can tell a read's fetch from a
/// maintenance fetch (for the traffic counters only).
pub(super) const READ_TAG: u64 = 1 << 63;
/// Times a root retries a write that a replica showed it was behind on.
const MAX_RETRIES: u8 = 2;

/// What a client operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Put { len: usize },
    Delete,
    Get,
}

/// An operation of this node's client, in flight.
#[derive(Debug)]
pub(super) struct ClientOp {
    pub(super) key: NodeId,
    pub(super) kind: Kind,
    /// The request, sent again once at `resend` if no answer came by then.
    pub(super) request: StoreMsg,
    pub(super) resend: Option<Instant>,
    pub(super) deadline: Instant,
}

/// A write this node coordinates as the key's root.
#[derive(Debug)]
pub(super) struct Write {
    origin: NodeId,
    op: u64,
    key: NodeId,
    record: Record,
    ttl_ms: Option<u64>,
    /// Replicas sent the record that have not answered.
    awaiting: BTreeSet<NodeId>,
    /// Nodes that hold the record (this one included).
    holders: BTreeSet<NodeId>,
    /// The newest version a replica showed it holds, if newer than ours.
    newer: Option<Version>,
    full: bool,
    retries: u8,
    /// True once the deadline was extended (see [`Store::write_late`]).
    extended: bool,
    pub(super) deadline: Instant,
}

/// A read this node coordinates as the key's root.
#[derive(Debug)]
pub(super) struct Read {
    origin: NodeId,
    op: u64,
    key: NodeId,
    hops: u8,
    best: Option<Record>,
    awaiting: BTreeSet<NodeId>,
    /// What each replica that answered holds.
    held: BTreeMap<NodeId, Option<Version>>,
    pub(super) deadline: Instant,
}

impl Store {
    pub(super) fn start_write(
        &mut self,
        now: Instant,
        node: &mut Node,
        key: NodeId,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<OpId, StoreError> {
        let kind = match &value {
            Some(v) => Kind::Put { len: v.len() },
            None => Kind::Delete,
        };
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.start_op(now, node, key, kind, |op| StoreMsg::Put { op, value: value.map(Blob), ttl_ms })
    }

    /// Sends a client request towards `key`'s root and waits for its answer.
    pub(super) fn start_op(
        &mut self,
        now: Instant,
        node: &mut Node,
        key: NodeId,
        kind: Kind,
        request: impl FnOnce(u64) -> StoreMsg,
    ) -> Result<OpId, StoreError> {
        self.arm_sync(now, node);
        let op = self.new_op(node);
        let request = request(op);
        self.route(now, node, key, &request).map_err(StoreError::Command)?;
        let resend = Some(now + self.cfg.op_timeout / 2);
        self.ops.insert(op, ClientOp { key, kind, request, resend, deadline: now + self.cfg.op_timeout });
        Ok(OpId(op))
    }

    /// A fresh operation number. Numbers start at a point drawn from the node's entropy, so
    /// that an answer meant for an operation of an earlier run of this node (same id,
    /// restarted) does not match one of this run.
    fn new_op(&mut self, node: &Node) -> u64 {
        if self.next_op == 0 {
            let c = node.config();
            let mut s = c.seed;
            for w in c.entropy.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                s ^= crate::rng::splitmix64(&mut u64::from_le_bytes(b).wrapping_add(s));
            }
            // 32 random high bits; the low half counts.
            self.next_op = (crate::rng::splitmix64(&mut s) | 1) << 32;
        }
        self.next_op = self.next_op.wrapping_add(1).max(1);
        self.next_op
    }

    /// A put or delete reached us, the key's root.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_put(
        &mut self,
        now: Instant,
        node: &mut Node,
        key: NodeId,
        origin: NodeId,
        op: u64,
        value: Option<Bytes>,
        ttl_ms: Option<u64>,
    ) {
        let refuse = |code| StoreMsg::PutDone { op, key, code, stored: 0, wanted: 0, version: Version::default() };
        if value.as_ref().is_some_and(|v| v.len() > self.cfg.max_value_size) {
            self.stats.refused_too_large += 1;
            let _ = self.route(now, node, origin, &refuse(Code::TooLarge));
            return;
        }
        if self.writes.values().any(|w| w.origin == origin && w.op == op) {
            // The client sent it again while we still coordinate it.
            return;
        }
        let rate = f64::from(self.cfg.puts_per_peer);
        if !self.put_limits.take(origin, now, 1.0, rate, 2.0 * rate) {
            self.stats.refused_rate += 1;
            let _ = self.route(now, node, origin, &refuse(Code::RateLimited));
            return;
        }
        let base = self.index.get(&key).map(|m| m.version).unwrap_or_default();
        let record = Record { version: base.next(origin), value, expires: None };
        self.coordinate(now, node, origin, op, key, record, ttl_ms, 0);
    }

    /// Writes `record` here and sends it to the other replicas.
    #[allow(clippy::too_many_arguments)]
    fn coordinate(
        &mut self,
        now: Instant,
        node: &mut Node,
        origin: NodeId,
        op: u64,
        key: NodeId,
        mut record: Record,
        ttl_ms: Option<u64>,
        retries: u8,
    ) {
        record.expires = self.expiry(now, record.is_tombstone(), ttl_ms);
        let w = Write {
            origin,
            op,
            key,
            record,
            ttl_ms,
            awaiting: BTreeSet::new(),
            holders: BTreeSet::new(),
            newer: None,
            full: false,
            retries,
            extended: false,
            deadline: now + self.cfg.ack_timeout,
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        self.writes.insert(tag, w);
        self.advance_write(now, node, tag, false);
    }

    /// Brings write `tag` up to date with the key's replica set as this node sees it now:
    /// sends the record to the members that neither hold it nor were sent it (all those that
    /// do not hold it, if `again`), stops waiting for nodes no longer in the set, and ends
    /// the write once every member holds it.
    fn advance_write(&mut self, now: Instant, node: &mut Node, tag: u64, again: bool) {
        let Some(w) = self.writes.get(&tag) else { return };
        let (key, record) = (w.key, w.record.clone());
        let me = node.id();
        let set: Vec<NodeId> = node.replica_set(key, self.cfg.replicas).into_iter().map(|i| i.id).collect();
        let targets: Vec<NodeId> = set
            .iter()
            .copied()
            .filter(|&id| id != me && !w.holders.contains(&id) && (again || !w.awaiting.contains(&id)))
            .collect();
        let mut mine = None;
        if set.contains(&me) && !w.holders.contains(&me) {
            mine = Some(self.apply(now, key, record.clone()));
        }
        let mut sent = Vec::new();
        if !targets.is_empty() {
            let msg = StoreMsg::Replicate { tag, records: vec![(key, self.to_wire(now, &record))] };
            for id in targets {
                if self.send(now, node, id, &msg) > 0 {
                    sent.push(id);
                }
            }
        }
        let Some(w) = self.writes.get_mut(&tag) else { return };
        match mine {
            Some(Ok(v)) if v == record.version => {
                w.holders.insert(me);
            }
            Some(Ok(v)) => w.newer = w.newer.max(Some(v)),
            Some(Err(Code::Full)) => w.full = true,
            _ => {}
        }
        w.awaiting.extend(sent);
        w.awaiting.retain(|id| set.contains(id));
        if w.awaiting.is_empty() {
            self.finish_write(now, node, tag);
        }
    }

    /// The leaf set changed: every write in progress follows the key's replica set (a
    /// replica found dead is no longer waited for; its successor is sent the record).
    pub(super) fn writes_follow_leaf_set(&mut self, now: Instant, node: &mut Node) {
        let tags: Vec<u64> = self.writes.keys().copied().collect();
        for tag in tags {
            self.advance_write(now, node, tag, false);
        }
    }

    /// Write `tag` passed its deadline with replicas that did not answer: the first time,
    /// the record is sent again to the replica set as it is now and the deadline extended
    /// once (long enough for a crashed replica to be found dead and replaced); then the
    /// write ends with what it has.
    pub(super) fn write_late(&mut self, now: Instant, node: &mut Node, tag: u64) {
        let Some(w) = self.writes.get_mut(&tag) else { return };
        if w.extended {
            self.finish_write(now, node, tag);
            return;
        }
        w.extended = true;
        w.deadline = now + self.cfg.ack_timeout;
        self.advance_write(now, node, tag, true);
    }

    /// A replica answered a write of ours; true if `tag` was one.
    pub(super) fn write_answered(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        tag: u64,
        code: Code,
        held: &[(NodeId, Version)],
    ) -> bool {
        let Some(w) = self.writes.get_mut(&tag) else { return false };
        if !w.awaiting.remove(&from) {
            return true;
        }
        match held.iter().find(|(k, _)| *k == w.key) {
            Some(&(_, v)) if v == w.record.version => {
                w.holders.insert(from);
            }
            Some(&(_, v)) if v > w.record.version => w.newer = w.newer.max(Some(v)),
            _ => {}
        }
        if code == Code::Full {
            w.full = true;
        }
        if w.awaiting.is_empty() {
            self.finish_write(now, node, tag);
        }
        true
    }

    pub(super) fn finish_write(&mut self, now: Instant, node: &mut Node, tag: u64) {
        let Some(w) = self.writes.remove(&tag) else { return };
        let set: Vec<NodeId> = node.replica_set(w.key, self.cfg.replicas).into_iter().map(|i| i.id).collect();
        let wanted = set.len() as u8;
        let stored = set.iter().filter(|id| w.holders.contains(id)).count() as u8;
        if stored < wanted && w.retries < MAX_RETRIES {
            if let Some(v) = w.newer {
                // A replica holds a newer version than we knew: write past it.
                let record = Record { version: v.next(w.origin), value: w.record.value, expires: None };
                self.coordinate(now, node, w.origin, w.op, w.key, record, w.ttl_ms, w.retries + 1);
                return;
            }
        }
        let code = if stored >= wanted {
            Code::Ok
        } else if w.full {
            Code::Full
        } else {
            Code::Partial
        };
        let msg = StoreMsg::PutDone { op: w.op, key: w.key, code, stored, wanted, version: w.record.version };
        let _ = self.route(now, node, w.origin, &msg);
    }

    pub(super) fn on_put_done(&mut self, op: u64, key: NodeId, code: Code, stored: u8, wanted: u8, version: Version) {
        if self.ops.get(&op).is_none_or(|o| o.key != key || o.kind == Kind::Get) {
            return;
        }
        let Some(o) = self.ops.remove(&op) else { return };
        let result = match (code, o.kind) {
            (Code::Ok, Kind::Delete) => Ok(Outcome::Deleted { version, replicas: stored }),
            (Code::Ok, _) => Ok(Outcome::Stored { version, replicas: stored }),
            (Code::Full, _) => Err(StoreError::StoreFull { stored, wanted }),
            (Code::RateLimited, _) => Err(StoreError::RateLimited),
            (Code::TooLarge, Kind::Put { len }) => Err(StoreError::ValueTooLarge { len, max: self.cfg.max_value_size }),
            _ => Err(StoreError::Partial { stored, wanted }),
        };
        self.emit(op, o.key, result);
    }

    /// A get reached us, the key's root: ask the other replicas too.
    pub(super) fn on_get(&mut self, now: Instant, node: &mut Node, key: NodeId, origin: NodeId, op: u64, hops: u8) {
        let me = node.id();
        self.next_tag += 1;
        let tag = self.next_tag | READ_TAG;
        let mut r = Read {
            origin,
            op,
            key,
            hops,
            best: self.read(now, key),
            awaiting: BTreeSet::new(),
            held: BTreeMap::new(),
            deadline: now + self.cfg.read_timeout,
        };
        let msg = StoreMsg::Fetch { tag, keys: vec![key] };
        for id in node.replica_set(key, self.cfg.replicas).into_iter().map(|i| i.id).filter(|&id| id != me) {
            if self.send(now, node, id, &msg) > 0 {
                r.awaiting.insert(id);
            }
        }
        let done = r.awaiting.is_empty();
        self.reads.insert(tag, r);
        if done {
            self.finish_read(now, node, tag);
        }
    }

    /// A replica answered a read of ours; true if `tag` was one.
    pub(super) fn read_answered(
        &mut self,
        now: Instant,
        node: &mut Node,
        from: NodeId,
        tag: u64,
        records: Vec<(NodeId, WireRecord)>,
    ) -> bool {
        let Some(r) = self.reads.get(&tag) else { return false };
        if !r.awaiting.contains(&from) {
            return true;
        }
        let key = r.key;
        let theirs = records.into_iter().find(|(k, _)| *k == key).map(|(_, w)| self.record_of(now, w));
        let theirs = theirs.filter(|t| t.value.as_ref().is_none_or(|v| v.len() <= self.cfg.max_value_size));
        let Some(r) = self.reads.get_mut(&tag) else { return true };
        r.awaiting.remove(&from);
        r.held.insert(from, theirs.as_ref().map(|t| t.version));
        if let Some(t) = theirs.filter(|t| !t.is_expired(now)) {
            let better = match &r.best {
                None => true,
                Some(b) => wins(t.version, t.is_tombstone(), b.version, b.is_tombstone()),
            };
            if better {
                r.best = Some(t);
            }
        }
        if r.awaiting.is_empty() {
            self.finish_read(now, node, tag);
        }
        true
    }

    pub(super) fn finish_read(&mut self, now: Instant, node: &mut Node, tag: u64) {
        let Some(r) = self.reads.remove(&tag) else { return };
        if let Some(best) = &r.best {
            // Read repair: the replicas that answered with less get the newest record.
            let mine = self.index.get(&r.key).map(|m| m.version);
            if mine.is_none_or(|v| v < best.version) && self.accepts(node, r.key, node.id()) {
                let _ = self.apply(now, r.key, best.clone());
            }
            let wire = self.to_wire(now, best);
            for (&id, held) in &r.held {
                if held.is_none_or(|v| v < best.version) {
                    self.next_tag += 1;
                    let msg = StoreMsg::Replicate { tag: self.next_tag, records: vec![(r.key, wire.clone())] };
                    self.send_maintenance(now, node, id, &msg);
                }
            }
        }
        let msg = match r.best {
            Some(b) if !b.is_tombstone() => StoreMsg::GetDone {
                op: r.op,
                key: r.key,
                code: Code::Ok,
                record: Some(self.to_wire(now, &b)),
                hops: r.hops,
            },
            _ => StoreMsg::GetDone { op: r.op, key: r.key, code: Code::NotFound, record: None, hops: r.hops },
        };
        let _ = self.route(now, node, r.origin, &msg);
    }

    pub(super) fn on_get_done(&mut self, op: u64, key: NodeId, code: Code, record: Option<WireRecord>, hops: u8) {
        if self.ops.get(&op).is_none_or(|o| o.key != key || o.kind != Kind::Get) {
            return;
        }
        let Some(o) = self.ops.remove(&op) else { return };
        let result = match (code, record) {
            (Code::Ok, Some(WireRecord { version, value: Some(v), .. })) => {
                Ok(Outcome::Found { value: v.0, version, hops })
            }
            (Code::Ok | Code::NotFound, _) => Err(StoreError::NotFound),
            (Code::RateLimited, _) => Err(StoreError::RateLimited),
            _ => Err(StoreError::Partial { stored: 0, wanted: 0 }),
        };
        self.emit(op, o.key, result);
    }

    /// Ends what waited past its deadline: client operations time out, the root answers
    /// with what it has.
    pub(super) fn expire_ops(&mut self, now: Instant, node: &mut Node) {
        let late: Vec<u64> = self.ops.iter().filter(|(_, o)| o.deadline <= now).map(|(&k, _)| k).collect();
        for op in late {
            if let Some(o) = self.ops.remove(&op) {
                self.emit(op, o.key, Err(StoreError::Timeout));
            }
        }
        // No answer yet: the request or its answer may have been lost with a node that
        // crashed on the way; send it again, once (the root ignores a write it still
        // coordinates; a write it finished is written again, with a newer version).
        let slow: Vec<u64> =
            self.ops.iter().filter(|(_, o)| o.resend.is_some_and(|t| t <= now)).map(|(&k, _)| k).collect();
        for op in slow {
            let Some(o) = self.ops.get_mut(&op) else { continue };
            o.resend = None;
            let (key, request) = (o.key, o.request.clone());
            let _ = self.route(now, node, key, &request);
        }
        let late: Vec<u64> = self.writes.iter().filter(|(_, w)| w.deadline <= now).map(|(&k, _)| k).collect();
        for tag in late {
            self.write_late(now, node, tag);
        }
        let late: Vec<u64> = self.reads.iter().filter(|(_, r)| r.deadline <= now).map(|(&k, _)| k).collect();
        for tag in late {
            self.finish_read(now, node, tag);
        }
    }
}
