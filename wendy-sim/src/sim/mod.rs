//! The simulation, split by concern. `Sim` owns one part per concern and each module adds the
//! methods of its concern:
//!
//! - [`engine`]: the event queue, the clock and the dispatch of events, one at a time or in
//!   batches whose nodes' work runs on several threads ([`pool`]);
//! - [`jobs`]: an event's input to one node and its outputs, apart from the simulator's part;
//! - [`hosts`]: hosting real `wendy_proto` nodes and the driver loop of each (feed an input,
//!   drain every output, re-arm the timer);
//! - [`links`]: TCP-like connections between hosts, loss, partitions and holds;
//! - [`oracle`]: the live, joined set, range queries on it, and the judgement of lookups;
//! - [`scenario`]: the phases of a run, joins, crashes, churn and the workload;
//! - [`measure`]: the counters and integrals a run keeps and the [`Report`](crate::Report)
//!   built from them; [`memory`]: the simulator's own structures by size.

mod build;
mod engine;
mod hosts;
mod jobs;
mod kv;
mod links;
mod measure;
mod memory;
mod oracle;
mod pool;
mod scenario;

use wendy_proto::rng::{splitmix64, Rng};
use wendy_proto::{Instant, Node, NodeId, Output};

use crate::config::SimConfig;
use crate::net::Net;
use crate::queue::Queue;

use hosts::{Host, IdMap};
use links::Links;
use measure::Metrics;
use oracle::Oracle;
use pool::Pool;
use scenario::Scenario;

/// The purpose byte of lookups.
pub const LOOKUP_PURPOSE: u8 = 16;
/// "No host" and "not in the joined list".
const NONE: u32 = u32::MAX;
/// A time that never comes.
const NEVER: u64 = u64::MAX;
/// One second in microseconds.
const SEC: u64 = 1_000_000;

/// How a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered at the numerically closest live, joined node.
    Correct,
    /// Delivered at another node.
    Incorrect,
    /// Not delivered in time.
    Lost,
}

/// A simulation: hosts, network, queue, oracle and measurements.
///
/// Most users call [`run`](crate::run) with a [`SimConfig`]. The methods here are the
/// building blocks, named after turmoil's: [`crash`](Sim::crash), [`bounce`](Sim::bounce),
/// [`partition`](Sim::partition)/[`repair`](Sim::repair), [`hold`](Sim::hold)/[`release`](Sim::release),
/// [`step`](Sim::step) and [`run_until`](Sim::run_until).
pub struct Sim {
    cfg: SimConfig,
    // Engine.
    /// Simulated time, microseconds.
    now: u64,
    queue: Queue,
    /// Events processed so far.
    events: u64,
    /// Batches made so far (threads only, [`SimConfig::threads`]).
    batches: u64,
    /// The threads that run the nodes' jobs of a batch (`None`: one event at a time).
    pool: Option<Pool>,
    /// How far after its first event a batch reaches (microseconds): the network's least
    /// one-way latency.
    window: u64,
    /// The hosts of the batch being made (kept for its room).
    batch_hosts: Vec<u32>,
    /// Output buffers for the next jobs (kept for their room).
    spare_outs: Vec<Vec<Output>>,
    // Hosts.
    hosts: Vec<Host>,
    /// Every host's id (ids are never reused by another host).
    ids: IdMap<u32>,
    rng_place: Rng,
    // Network.
    net: Net,
    links: Links,
    // Oracle, scenario, measures.
    oracle: Oracle,
    sc: Scenario,
    m: Metrics,
    /// Print every node error to stderr (environment variable `WENDY_SIM_DEBUG`).
    debug: bool,
    /// The key-value workload, if configured.
    kv: Option<kv::Kv>,
}

impl Sim {
    /// A simulation with no hosts yet.
    pub fn new(cfg: SimConfig) -> Self {
        let mut s = cfg.seed;
        let mut derive = || Rng::new(splitmix64(&mut s));
        let (rng_net, rng_work, rng_churn, rng_place) = (derive(), derive(), derive(), derive());
        let rng_boot = derive();
        let kv = cfg.kv.clone().map(|k| kv::Kv::new(k, cfg.seed));
        // Room for the initial hosts at once: grown a push at a time, the vector held up to
        // twice their records (at 100,000 hosts, 44 bytes a host of 144 unused).
        let hosts = Vec::with_capacity(cfg.nodes.min(crate::net::MAX_HOSTS));
        let net = Net::new(cfg.net.clone());
        Sim {
            pool: (cfg.threads > 1).then(|| Pool::new(cfg.threads)),
            window: net.least_latency_us(),
            batch_hosts: Vec::new(),
            spare_outs: Vec::new(),
            net,
            cfg,
            now: 0,
            queue: Queue::default(),
            events: 0,
            batches: 0,
            hosts,
            ids: IdMap::default(),
            rng_place,
            links: Links::new(rng_net),
            oracle: Oracle::default(),
            sc: Scenario::new(rng_work, rng_churn, rng_boot),
            m: Metrics::new(),
            debug: std::env::var_os("WENDY_SIM_DEBUG").is_some(),
            kv,
        }
    }

    /// Simulated time now.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.now)
    }

    /// Hosts created so far.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Live, joined nodes (the oracle's view).
    pub fn joined_count(&self) -> usize {
        self.oracle.joined.len()
    }

    /// The node of host `h`, if it is up.
    pub fn node(&self, h: u32) -> Option<&Node> {
        self.hosts.get(h as usize).and_then(|x| x.node.as_deref())
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> u64 {
        self.m.trace.value()
    }

    /// The live, joined node numerically closest to `key`: where a lookup must be delivered.
    pub fn closest(&self, key: NodeId) -> Option<NodeId> {
        self.oracle.closest(key)
    }
}
