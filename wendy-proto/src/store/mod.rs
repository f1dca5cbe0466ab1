//! Storage: a replicated key-value store on the leaf set, a sans-IO layer above the [`Node`].
//!
//! A [`Store`] keeps, for every key, a versioned record ([`Record`]: a value or a tombstone)
//! on the key's *replica set*: the `k` live nodes numerically closest to it
//! ([`Node::replica_set`]), `k` = [`StoreConfig::replicas`] (3 by default).
//!
//! - [`put`](Store::put) routes the value to the key's root, which gives it a [`Version`]
//!   (one past the newest it knows, with the writer's id) and copies it to the replica set;
//!   the put completes once every replica took it, or fails saying how many did
//!   ([`StoreError::Partial`]). [`delete`](Store::delete) writes a tombstone, which wins over
//!   older values and expires after [`StoreConfig::tombstone_lifetime`]. Values may have a
//!   time to live, counted on the project's [`Instant`], never a wall clock.
//! - [`get`](Store::get) routes to the root, which asks the other replicas too and answers
//!   with the newest record (and repairs the replicas that were behind).
//! - Maintenance: when the leaf set changes, and every [`StoreConfig::sync_interval`], a
//!   node exchanges digests with its ring neighbours that share keys with it (hashes of keys
//!   and versions in 16 buckets), then key lists of the buckets that differ, then the records
//!   one side misses; a node that is no longer a replica of a key offers it to the replicas
//!   and drops it once they all hold it. Transfers are bounded per message and in rate.
//! - Limits: [`StoreConfig::max_value_size`], a quota ([`StoreConfig::quota_bytes`]),
//!   records refused from a node that is not a replica of their key, writes and transfers
//!   bounded per peer. Bad messages are counted ([`StoreStats`]), never a panic.
//!
//! # Why a module of wendy-proto
//! The layer is protocol logic and must run identically in the simulator and in both drivers;
//! as a module of `wendy-proto` it is hosted by the same in-memory harness (`harness`, feature `testing`), fuzzed
//! with the rest, and needs no new crate. It does no I/O: it talks to the node through plain
//! method calls ([`Node::route_layer`], [`Node::send_layer_to`]) with the reserved purpose
//! [`STORE_PURPOSE`], and keeps records in a [`Backend`] that it calls synchronously, as the
//! node calls its forward hook. [`MemoryBackend`] is pure; the drivers' database backend does
//! its disk I/O inside those calls, which the layer sees as answers, like any other input.
//!
//! # Hosting it
//! Drain the node's outputs through [`Store::handle_output`] (it takes the storage messages
//! and watches leaf-set changes; it hands every other output back), call
//! [`Store::handle_timeout`] when [`Store::poll_timeout`] is due, and read completions with
//! [`Store::poll_event`]:
//!
//! ```
//! use core::time::Duration;
//! use wendy_proto::harness::Harness;
//! use wendy_proto::store::{Outcome, StoreConfig};
//! use wendy_proto::NodeId;
//! use bytes::Bytes;
//!
//! let mut h = Harness::new(1);
//! h.enable_store(StoreConfig::default());
//! let a = h.add_node(NodeId::hash(b"a"));
//! for name in [b"b", b"c", b"d"] {
//!     let i = h.add_node(NodeId::hash(name));
//!     h.join(i, a);
//!     h.run_until_ready(Duration::from_secs(10));
//! }
//! h.run_for(Duration::from_secs(5));
//! let key = NodeId::hash(b"colour");
//! let put = h.put(1, key, Bytes::from_static(b"blue"));
//! h.run_for(Duration::from_secs(2));
//! assert!(matches!(h.store_result(1, put), Some(Ok(Outcome::Stored { replicas: 3, .. }))));
//! let get = h.get(3, key);
//! h.run_for(Duration::from_secs(2));
//! match h.store_result(3, get) {
//!     Some(Ok(Outcome::Found { value, .. })) => assert_eq!(value, Bytes::from_static(b"blue")),
//!     other => panic!("{other:?}"),
//! }
//! ```

mod backend;
#[cfg(all(feature = "arbitrary", feature = "testing"))]
pub mod fuzz;
mod limits;
mod maintenance;
pub mod msg;
mod ops;
mod record;

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::id::NodeId;
use crate::output::{CommandError, Delivery, Event, Output};
use crate::time::Instant;
use crate::Node;

pub use backend::{Backend, BackendError, MemoryBackend};
pub use record::{wins, Meta, Record, Version, RECORD_OVERHEAD};

use limits::{Bucket, PeerBuckets};
use msg::StoreMsg;
use ops::{ClientOp, Read, Write};

/// The reserved node purpose of the storage layer's messages.
pub const STORE_PURPOSE: u8 = 1;

/// The storage layer's parameters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Replicas per key, `k` (at most half the leaf set plus one).
    pub replicas: usize,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// Bytes of records a node keeps at most (values plus [`RECORD_OVERHEAD`] per key).
    pub quota_bytes: u64,
    /// How long a tombstone is kept.
    pub tombstone_lifetime: Duration,
    /// How long a client waits for a put, delete or get to complete.
    pub op_timeout: Duration,
    /// How long the root waits for the replicas' answers to a write.
    pub ack_timeout: Duration,
    /// How long the root waits for the other replicas' records on a get.
    pub read_timeout: Duration,
    /// Period of the anti-entropy exchange with each ring neighbour.
    pub sync_interval: Duration,
    /// Delay between a leaf-set change and the exchange it triggers (changes coalesce).
    pub settle_delay: Duration,
    /// Largest total of value bytes in one transfer message.
    pub transfer_bytes: usize,
    /// Bytes a second a node spends on maintenance transfers (pushes and fetch answers).
    pub transfer_rate: u64,
    /// Puts and deletes a second the root takes from one client (twice that in a burst).
    pub puts_per_peer: u32,
    /// Record bytes a second a node takes from one peer in transfers (twice that in a burst).
    pub transfer_bytes_per_peer: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            replicas: 3,
            max_value_size: 64 << 10,
            quota_bytes: 256 << 20,
            tombstone_lifetime: Duration::from_secs(24 * 3600),
            op_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(1),
            sync_interval: Duration::from_secs(10),
            settle_delay: Duration::from_millis(500),
            transfer_bytes: 256 << 10,
            transfer_rate: 1 << 20,
            puts_per_peer: 200,
            transfer_bytes_per_peer: 8 << 20,
        }
    }
}

impl StoreConfig {
    /// This configuration with `k` replicas per key.
    pub fn with_replicas(mut self, k: usize) -> Self {
        self.replicas = k;
        self
    }

    /// This configuration with values up to `max` bytes.
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// This configuration with a quota of `bytes`.
    pub fn with_quota(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }
}

/// Names one put, delete or get of this node's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// How a put, delete or get succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put is on every replica.
    Stored {
        /// The version written.
        version: Version,
        /// Replicas that hold it.
        replicas: u8,
    },
    /// A delete's tombstone is on every replica.
    Deleted {
        /// The tombstone's version.
        version: Version,
        /// Replicas that hold it.
        replicas: u8,
    },
    /// A get found the key.
    Found {
        /// The newest value.
        value: Bytes,
        /// Its version.
        version: Version,
        /// Hops the request took to the key's root.
        hops: u8,
    },
}

/// Why a put, delete or get failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// No value for the key (never written, deleted, or expired).
    NotFound,
    /// Not every replica took the write.
    Partial {
        /// Replicas that took it.
        stored: u8,
        /// Replicas wanted.
        wanted: u8,
    },
    /// A replica's quota is full.
    StoreFull {
        /// Replicas that took it.
        stored: u8,
        /// Replicas wanted.
        wanted: u8,
    },
    /// The value is larger than allowed.
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The key's root refused: this node sent it too many writes.
    RateLimited,
    /// No answer in time.
    Timeout,
    /// The node refused to send the request.
    Command(CommandError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Partial { stored, wanted } => write!(f, "stored on {stored} of {wanted} replicas"),
            StoreError::StoreFull { stored, wanted } => {
                write!(f, "a replica is full: stored on {stored} of {wanted} replicas")
            }
            StoreError::ValueTooLarge { len, max } => write!(f, "value of {len} bytes exceeds {max}"),
            StoreError::RateLimited => f.write_str("too many writes: refused by the key's root"),
            StoreError::Timeout => f.write_str("no answer in time"),
            StoreError::Command(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A completed operation, from [`Store::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEvent {
    /// The operation.
    pub op: OpId,
    /// Its key.
    pub key: NodeId,
    /// How it ended.
    pub result: Result<Outcome, StoreError>,
}

/// Counters kept by the storage layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Storage messages received (the node counts them among its deliveries).
    pub messages_in: u64,
    /// Storage messages sent.
    pub messages_out: u64,
    /// Bytes of storage messages sent (payloads).
    pub bytes_out: u64,
    /// Bytes of maintenance messages sent (digests, key lists, offers, transfers, repairs).
    pub maintenance_bytes_out: u64,
    /// Records taken from transfers.
    pub records_in: u64,
    /// Storage messages that could not be decoded.
    pub bad_messages: u64,
    /// Records refused: the sender or this node is not a replica of the key.
    pub refused_not_replica: u64,
    /// Records refused: the quota is full.
    pub refused_full: u64,
    /// Records refused: larger than the maximum value size.
    pub refused_too_large: u64,
    /// Writes or transfers refused: the peer exceeded its rate.
    pub refused_rate: u64,
    /// Messages the node would not send (queue full, unknown node).
    pub send_failures: u64,
    /// Backend calls that failed.
    pub backend_errors: u64,
    /// Records dropped after they were handed off to the replicas now responsible.
    pub handed_off: u64,
    /// Records removed because they expired.
    pub expired: u64,
}

/// The storage layer of one node. See the [module documentation](self).
pub struct Store {
    cfg: StoreConfig,
    backend: Box<dyn Backend>,
    /// What every key held here is, without its value.
    index: BTreeMap<NodeId, Meta>,
    /// Bytes charged against the quota.
    used: u64,
    next_op: u64,
    next_tag: u64,
    ops: BTreeMap<u64, ClientOp>,
    writes: BTreeMap<u64, Write>,
    reads: BTreeMap<u64, Read>,
    /// Keys this node no longer replicates: the replicas known to hold them.
    confirmed: BTreeMap<NodeId, BTreeSet<NodeId>>,
    put_limits: PeerBuckets,
    transfer_limits: PeerBuckets,
    budget: Bucket,
    next_sync: Option<Instant>,
    sync_soon: Option<Instant>,
    events: VecDeque<StoreEvent>,
    stats: StoreStats,
}

impl Store {
    /// A store over `backend`, whose records it indexes now; enables [`STORE_PURPOSE`] on `node`.
    pub fn new(cfg: StoreConfig, backend: Box<dyn Backend>, node: &mut Node) -> Result<Self, BackendError> {
        // STORE_PURPOSE is a layer purpose: enabling it cannot fail.
        let _ = node.enable_layer(STORE_PURPOSE);
        let now = Instant::ZERO;
        let mut index = BTreeMap::new();
        let mut used = 0;
        for (k, m) in backend.scan()? {
            used += m.charge();
            index.insert(k, m);
        }
        let burst = 2.0 * cfg.transfer_rate as f64;
        Ok(Store {
            budget: Bucket::full(burst, now),
            cfg,
            backend,
            index,
            used,
            next_op: 0,
            next_tag: 0,
            ops: BTreeMap::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            put_limits: PeerBuckets::default(),
            transfer_limits: PeerBuckets::default(),
            next_sync: None,
            sync_soon: None,
            events: VecDeque::new(),
            stats: StoreStats::default(),
        })
    }

    // ----- commands -----------------------------------------------------------------------

    /// Stores `value` under `key` on the key's replica set, living `ttl` if given.
    pub fn put(
        &mut self,
        now: Instant,
        node: &mut Node,
        key: NodeId,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<OpId, StoreError> {
        if value.len() > self.cfg.max_value_size {
            return Err(StoreError::ValueTooLarge { len: value.len(), max: self.cfg.max_value_size });
        }
        self.start_write(now, node, key, Some(value), ttl)
    }

    /// Deletes `key`: a tombstone replaces every older value.
    pub fn delete(&mut self, now: Instant, node: &mut Node, key: NodeId) -> Result<OpId, StoreError> {
        self.start_write(now, node, key, None, None)
    }

    /// Reads the newest value of `key` on its replica set.
    pub fn get(&mut self, now: Instant, node: &mut Node, key: NodeId) -> Result<OpId, StoreError> {
        self.start_op(now, node, key, ops::Kind::Get, |op| StoreMsg::Get { op })
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Looks at one output of `node`: a storage message is taken (`None`); anything else is
    /// handed back, after noting leaf-set changes.
    pub fn handle_output(&mut self, now: Instant, node: &mut Node, out: Output) -> Option<Output> {
        match out {
            Output::Deliver(d) if d.purpose == STORE_PURPOSE => {
                self.on_delivery(now, node, d);
                None
            }
            Output::Event(Event::LeafSetChanged { .. }) => {
                self.arm_sync(now, node);
                self.writes_follow_leaf_set(now, node);
                let soon = now + self.cfg.settle_delay;
                if self.sync_soon.is_none_or(|t| t > soon) {
                    self.sync_soon = Some(soon);
                }
                Some(out)
            }
            other => Some(other),
        }
    }

    /// A deadline of the layer passed (see [`poll_timeout`](Store::poll_timeout)); early calls
    /// are harmless.
    pub fn handle_timeout(&mut self, now: Instant, node: &mut Node) {
        self.arm_sync(now, node);
        self.expire_ops(now, node);
        let periodic = self.next_sync.is_some_and(|t| t <= now);
        let soon = self.sync_soon.is_some_and(|t| t <= now);
        if periodic {
            self.next_sync = Some(now + self.cfg.sync_interval);
            self.sweep(now);
        }
        if periodic || soon {
            self.sync_soon = None;
            if node.is_ready() {
                self.sync(now, node);
            }
        }
    }

    /// A graceful stop: makes every record durable in the backend ([`Backend::close`]).
    /// The store is not used afterwards.
    pub fn close(&mut self) {
        self.backend.close();
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next completed operation.
    pub fn poll_event(&mut self) -> Option<StoreEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Store::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ops = self.ops.values().map(|o| o.resend.unwrap_or(o.deadline));
        let writes = self.writes.values().map(|w| w.deadline);
        let reads = self.reads.values().map(|r| r.deadline);
        ops.chain(writes).chain(reads).chain(self.next_sync).chain(self.sync_soon).min()
    }

    // ----- getters ------------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// What this node holds for `key` (expired records included until swept).
    pub fn meta(&self, key: NodeId) -> Option<&Meta> {
        self.index.get(&key)
    }

    /// Every key held here, in order, with what it holds.
    pub fn entries(&self) -> impl Iterator<Item = (&NodeId, &Meta)> {
        self.index.iter()
    }

    /// Number of records held (tombstones included).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if no record is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes charged against the quota.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Operations of this node's clients still in flight.
    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    // ----- private ------------------------------------------------------------------------

    fn on_delivery(&mut self, now: Instant, node: &mut Node, d: Delivery) {
        self.stats.messages_in += 1;
        let msg = match StoreMsg::decode(&d.payload) {
            Ok(m) => m,
            Err(_) => {
                self.stats.bad_messages += 1;
                return;
            }
        };
        let from = d.origin;
        match msg {
            StoreMsg::Put { op, value, ttl_ms } if !d.direct => {
                self.on_put(now, node, d.key, from, op, value.map(|b| b.0), ttl_ms)
            }
            StoreMsg::Get { op } if !d.direct => self.on_get(now, node, d.key, from, op, d.hops),
            // Answers are routed towards the client's id: taken only by that very node (when
            // the client is gone, the node now closest to its id must not take them).
            StoreMsg::PutDone { op, key, code, stored, wanted, version } if d.key == node.id() => {
                self.on_put_done(op, key, code, stored, wanted, version)
            }
            StoreMsg::GetDone { op, key, code, record, hops } if d.key == node.id() => {
                self.on_get_done(op, key, code, record, hops)
            }
            StoreMsg::Replicate { tag, records } if d.direct => self.on_replicate(now, node, from, tag, records),
            StoreMsg::Stored { tag, code, held } if d.direct => self.on_stored(now, node, from, tag, code, held),
            StoreMsg::Fetch { tag, keys } if d.direct => self.on_fetch(now, node, from, tag, keys),
            StoreMsg::Fetched { tag, records } if d.direct => self.on_fetched(now, node, from, tag, records),
            StoreMsg::Digest { buckets } if d.direct => self.on_digest(now, node, from, &buckets),
            StoreMsg::KeyList { mask, entries } if d.direct => self.on_key_list(now, node, from, mask, entries),
            StoreMsg::Offer { entries } if d.direct => self.on_offer(now, node, from, entries),
            StoreMsg::Have { keys } if d.direct => self.on_have(from, keys),
            _ => self.stats.bad_messages += 1,
        }
    }

    /// Starts the periodic exchange once, at a phase drawn from the node's id (so that the
    /// nodes of a ring do not all exchange at the same moment).
    fn arm_sync(&mut self, now: Instant, node: &Node) {
        if self.next_sync.is_none() {
            let period = self.cfg.sync_interval.as_micros().max(1) as u64;
            let phase = (node.id().as_u128() % u128::from(period)) as u64;
            self.next_sync = Some(now + Duration::from_micros(phase));
        }
    }

    fn route(&mut self, now: Instant, node: &mut Node, key: NodeId, msg: &StoreMsg) -> Result<(), CommandError> {
        let data = msg.encode();
        self.stats.messages_out += 1;
        self.stats.bytes_out += data.len() as u64;
        node.route_layer(now, key, STORE_PURPOSE, data)
    }

    /// Sends `msg` to `to`; returns its size (0 if it could not be sent).
    fn send(&mut self, now: Instant, node: &mut Node, to: NodeId, msg: &StoreMsg) -> usize {
        let data = msg.encode();
        let len = data.len();
        match node.send_layer_to(now, to, STORE_PURPOSE, data) {
            Ok(()) => {
                self.stats.messages_out += 1;
                self.stats.bytes_out += len as u64;
                len
            }
            Err(_) => {
                self.stats.send_failures += 1;
                0
            }
        }
    }

    /// Sends a maintenance message and counts it as such.
    fn send_maintenance(&mut self, now: Instant, node: &mut Node, to: NodeId, msg: &StoreMsg) {
        let n = self.send(now, node, to, msg);
        self.stats.maintenance_bytes_out += n as u64;
    }

    fn emit(&mut self, op: u64, key: NodeId, result: Result<Outcome, StoreError>) {
        self.events.push_back(StoreEvent { op: OpId(op), key, result });
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("records", &self.index.len())
            .field("used", &self.used)
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}
