//! Everything a simulation run is parameterised by.

use core::time::Duration;

use wendy_proto::{Config, ConfigError, MemberConnections, NodeId};

/// Where nodes sit, which decides the one-way latency between two of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Uniform points in a disc whose diameter is [`NetConfig::diameter`] of latency.
    Plane,
    /// Uniform points on a sphere; antipodal points are [`NetConfig::diameter`] apart
    /// (straight-line chord distance, so the arithmetic is exact IEEE and replays everywhere).
    Sphere,
}

/// What a lost frame costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossMode {
    /// TCP: the frame is retransmitted; each loss adds [`NetConfig::rto`] of delay. Order on
    /// the connection is kept (later frames wait behind it, as in a real byte stream).
    Tcp,
    /// Datagram-style: the frame silently disappears (a whole frame, so framing survives).
    Drop,
}

/// The modelled network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Coordinate model, used when `regions` is 0.
    pub topology: Topology,
    /// One-way latency across the whole plane or sphere.
    pub diameter: Duration,
    /// Smallest one-way latency between two distinct nodes (added to every distance).
    pub base: Duration,
    /// Number of regions; 0 means latency from coordinates. With regions, every node gets a
    /// region name and distinct local (10/8) and global (11/8) addresses.
    pub regions: u16,
    /// One-way latency inside a region.
    pub intra_region: Duration,
    /// One-way latency between two regions.
    pub inter_region: Duration,
    /// Each frame's delay is the link latency times `1 + jitter * u`, u uniform in [0, 1);
    /// never reordering frames on one connection.
    pub jitter: f64,
    /// Probability that one transmission of a frame is lost.
    pub loss: f64,
    /// How a loss is modelled.
    pub loss_mode: LossMode,
    /// Retransmission delay added per loss in [`LossMode::Tcp`].
    pub rto: Duration,
    /// True: a crashed node's host stays up without the process, so connection attempts to it
    /// are refused after one round trip and frames on its old connections are answered with a
    /// reset. False (the default): the node vanishes silently; attempts go unanswered (the
    /// dialler's OS gives up after [`NetConfig::syn_timeout`]; the node usually gives up first at
    /// its connect timeout) and frames vanish. A bounced (restarted) host always resets the
    /// connections of its earlier life.
    pub refuse_dead: bool,
    /// When an unanswered connection attempt is reported failed by the (modelled) OS.
    pub syn_timeout: Duration,
    /// Frames a node writes on one connection while handling one input travel as one segment
    /// (one delay, one event), as a driver's write batching sends them.
    pub coalesce: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            topology: Topology::Plane,
            diameter: Duration::from_millis(100),
            base: Duration::from_millis(1),
            regions: 0,
            intra_region: Duration::from_millis(2),
            inter_region: Duration::from_millis(60),
            jitter: 0.1,
            loss: 0.0,
            loss_mode: LossMode::Tcp,
            rto: Duration::from_millis(200),
            refuse_dead: false,
            syn_timeout: Duration::from_secs(20),
            coalesce: true,
        }
    }
}

/// The protocol parameters given to every simulated node (see [`wendy_proto::Config`]).
#[derive(Clone, Debug)]
pub struct NodeParams {
    /// Heartbeat interval, also the node's maintenance tick. The liveness timers not given
    /// below follow from it by wendy-proto's ratios ([`Config::with_heartbeat`]).
    pub heartbeat: Duration,
    /// Silence before a leaf is suspected (default: wendy-proto's ratio, 3 heartbeats).
    pub suspect: Option<Duration>,
    /// Probe timeout (default: wendy-proto's, 1 heartbeat or 1 s, whichever is shorter).
    pub probe: Option<Duration>,
    /// Leaf-set exchange interval.
    pub leaf_exchange: Duration,
    /// Idle timeout of connections to nodes outside the leaf set.
    pub idle_timeout: Duration,
    /// Which idle connections to table members stay open ([`Config::member_connections`]).
    pub member_connections: MemberConnections,
    /// Longest silence before a table member is probed (default: wendy-proto's ratio, 60
    /// heartbeats; routing-table members are probed at a self-tuned period below it).
    pub table_probe: Option<Duration>,
    /// The fraction of routing-table entries allowed to be dead when used, which the nodes'
    /// self-tuned probing aims at (default: wendy-proto's, [`Config::table_stale_target`]).
    pub table_stale_target: Option<f64>,
    /// Connection set-up timeout.
    pub connect_timeout: Duration,
    /// Join progress timeout.
    pub join_timeout: Duration,
    /// Leaf-set size L.
    pub leaf_set_size: usize,
    /// Neighbourhood-set size M (default: wendy-proto's, [`Config::neighbourhood_size`]).
    pub neighbourhood_size: Option<usize>,
    /// Most connections a node keeps open.
    pub max_connections: usize,
    /// Run every node without encryption ([`Config::insecure_plaintext`]): for the largest
    /// runs, and to measure what encryption costs.
    pub insecure_plaintext: bool,
}

impl Default for NodeParams {
    fn default() -> Self {
        NodeParams {
            heartbeat: Duration::from_secs(10),
            suspect: None,
            probe: None,
            leaf_exchange: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(5),
            member_connections: MemberConnections::Kept,
            table_probe: None,
            table_stale_target: None,
            connect_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(10),
            leaf_set_size: 32,
            neighbourhood_size: None,
            max_connections: 4096,
            insecure_plaintext: false,
        }
    }
}

impl NodeParams {
    /// These parameters written into a node configuration.
    pub fn apply(&self, c: Config) -> Config {
        let mut c = c.with_heartbeat(self.heartbeat);
        if let Some(d) = self.suspect {
            c.suspect_timeout = d;
        }
        if let Some(d) = self.probe {
            c.probe_timeout = d;
        }
        if let Some(d) = self.table_probe {
            c.table_probe_interval = d;
        }
        if let Some(t) = self.table_stale_target {
            c.table_stale_target = t;
        }
        c.leaf_exchange_interval = self.leaf_exchange;
        c.idle_timeout = self.idle_timeout;
        c.member_connections = self.member_connections;
        c.connect_timeout = self.connect_timeout;
        c.join_timeout = self.join_timeout;
        c.leaf_set_size = self.leaf_set_size;
        if let Some(m) = self.neighbourhood_size {
            c.neighbourhood_size = m;
        }
        c.max_connections = self.max_connections;
        if self.insecure_plaintext {
            c = c.insecure_plaintext();
        }
        c
    }

    /// The stale target the nodes' self-tuned probing aims at: the one given, or wendy-proto's
    /// default.
    pub fn table_stale_target(&self) -> f64 {
        self.table_stale_target.unwrap_or_else(|| self.sample().table_stale_target)
    }

    /// The neighbourhood-set size the nodes run with: the one given, or wendy-proto's default.
    pub fn neighbourhood_size(&self) -> usize {
        self.neighbourhood_size.unwrap_or_else(|| self.sample().neighbourhood_size)
    }

    /// These parameters applied to a configuration of a placeholder node.
    fn sample(&self) -> Config {
        let addr = std::net::SocketAddr::from(([10, 0, 0, 1], 7000));
        self.apply(Config::with_trusted_id(NodeId::from_u128(1), addr))
    }

    /// The nodes' [`Config::detection_time`]: the documented bound on how long a crashed node
    /// stays in a live node's tables.
    pub fn detection_time(&self) -> Duration {
        self.sample().detection_time()
    }

    /// Whether a node can run with these parameters ([`Config::validate`]); the simulator
    /// panics on a node it cannot start, so check first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sample().validate()
    }
}

/// Distribution of churn session times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SessionDist {
    /// Exponential with the given median.
    Exponential,
    /// Pareto with this shape (> 1) and the given median.
    Pareto {
        /// Shape parameter alpha.
        shape: f64,
    },
}

/// Generated churn: Poisson arrivals, sessions from a distribution. The arrival rate is
/// population / mean session, so the population stays about constant.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// Median session time.
    pub median_session: Duration,
    /// Session distribution.
    pub dist: SessionDist,
    /// Fraction of departures that are graceful `leave`s; the rest are crashes.
    pub graceful: f64,
}

/// One line of a churn trace: at `time`, node label `node` comes up or goes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Time from the start of the measurement phase.
    pub time: Duration,
    /// Node label: labels below the initial population name those nodes; others name new ones.
    pub node: u32,
    /// True for `up`.
    pub up: bool,
}

/// How a split of the network behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMode {
    /// Partition: frames and connection attempts across the split are dropped until repair.
    Partition,
    /// Hold: frames across the split are held and delivered, in order, at release.
    Hold,
}

/// A scheduled split of the network into two sides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitPlan {
    /// Partition or hold.
    pub mode: SplitMode,
    /// Fraction of live nodes put on the minority side.
    pub fraction: f64,
    /// When it starts, from the start of the measurement phase.
    pub at: Duration,
    /// How long it lasts.
    pub length: Duration,
}

/// How the initial population is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Build {
    /// Every node but the first joins through the join protocol, at `join_rate` (the default).
    #[default]
    Joins,
    /// The simulator computes every node's tables from its view of the whole ring (exact leaf
    /// sets; in each routing-table cell the nearest of 16 nodes drawn from the cell's id range)
    /// and starts the nodes as members ([`wendy_proto::Node::start_member`]). No join
    /// traffic: for rings too large to join within a run. `join_rate` is not used.
    Tables,
}

/// A whole simulation run: population, network, workload and faults.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Initial population.
    pub nodes: usize,
    /// Lookups issued in the measurement phase.
    pub lookups: u64,
    /// Master seed.
    pub seed: u64,
    /// Network model.
    pub net: NetConfig,
    /// Protocol parameters of every node.
    pub node: NodeParams,
    /// How the initial population is built.
    pub build: Build,
    /// Joins started per second of simulated time while the population is built.
    pub join_rate: f64,
    /// Quiet time between the last join and the measurement phase.
    pub settle: Duration,
    /// Lookups per second (ignored when `duration` is set: then lookups / duration).
    pub lookup_rate: f64,
    /// Length of the measurement phase; `None`: as long as the lookups take.
    pub duration: Option<Duration>,
    /// A lookup not delivered within this is lost.
    pub lookup_timeout: Duration,
    /// Application payload size of a lookup (at least 8 bytes: the lookup number).
    pub payload_bytes: usize,
    /// Crash this fraction of nodes at once during the measurement phase (0: none).
    pub crash_fraction: f64,
    /// When to crash, from the start of the measurement phase (default: a quarter of it).
    pub crash_at: Option<Duration>,
    /// Bounce (restart after this downtime) the crashed nodes instead of leaving them dead.
    pub bounce_after: Option<Duration>,
    /// How often to check the ring after a crash; also the repair-time resolution.
    pub check_interval: Duration,
    /// Give up measuring repair after this long.
    pub repair_timeout: Duration,
    /// Generated churn during the measurement phase.
    pub churn: Option<ChurnConfig>,
    /// Churn trace replayed during the measurement phase.
    pub churn_trace: Vec<TraceRecord>,
    /// A split of the network during the measurement phase.
    pub split: Option<SplitPlan>,
    /// Width of the time-series buckets (`None`: chosen from the planned length).
    pub bucket: Option<Duration>,
    /// Draw a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// Threads that run the nodes (1: one event after another). With two or more, events
    /// are processed in batches, each node's work on whichever thread is free: a run is the
    /// same for any number of threads from two on (not the same as with one, whose events
    /// are in a slightly different order of equal standing).
    pub threads: usize,
    /// Measure the simulator's own structures at the end of the run ([`crate::MemoryReport`]).
    pub memory_report: bool,
    /// Bytes the process's heap holds now, as its allocator counts them (the `wendy-sim`
    /// binary counts every allocation; `None`: not counted). The memory report then splits
    /// what the resident set holds beyond the estimated structures into what the estimates
    /// miss and the allocator's own slack.
    pub heap_in_use: Option<fn() -> u64>,
    /// A key-value workload on the storage layer (every node then runs one).
    pub kv: Option<KvConfig>,
}

/// The key-value workload: puts at the start of the measurement phase, gets of random keys
/// during it, and a get of every key at its end.
#[derive(Clone, Debug, PartialEq)]
pub struct KvConfig {
    /// Keys written.
    pub keys: usize,
    /// Replicas per key, `k`.
    pub replicas: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Puts per second at the start of the measurement phase.
    pub put_rate: f64,
    /// Gets of random keys per second during the measurement phase (after the puts).
    pub probe_rate: f64,
    /// Gets per second of the final read of every key.
    pub final_rate: f64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig { keys: 1000, replicas: 3, value_size: 100, put_rate: 1000.0, probe_rate: 5.0, final_rate: 2000.0 }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            lookups: 10_000,
            seed: 1,
            net: NetConfig::default(),
            node: NodeParams::default(),
            join_rate: 100.0,
            settle: Duration::from_secs(10),
            lookup_rate: 1000.0,
            duration: None,
            lookup_timeout: Duration::from_secs(30),
            payload_bytes: 16,
            crash_fraction: 0.0,
            crash_at: None,
            bounce_after: None,
            check_interval: Duration::from_millis(500),
            repair_timeout: Duration::from_secs(600),
            churn: None,
            churn_trace: Vec::new(),
            split: None,
            bucket: None,
            progress: false,
            threads: 1,
            memory_report: false,
            heap_in_use: None,
            kv: None,
            build: Build::Joins,
        }
    }
}

impl SimConfig {
    /// Lookups per second in the measurement phase.
    pub fn effective_lookup_rate(&self) -> f64 {
        match self.duration {
            Some(d) if d > Duration::ZERO => self.lookups as f64 / d.as_secs_f64(),
            _ => self.lookup_rate,
        }
    }

    /// Planned length of the measurement phase.
    pub fn measure_length(&self) -> Duration {
        self.duration.unwrap_or_else(|| {
            let rate = self.effective_lookup_rate().max(1e-9);
            Duration::from_secs_f64(self.lookups as f64 / rate)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_target_reaches_the_nodes_and_a_bad_one_is_refused() {
        let default = NodeParams::default();
        assert_eq!(default.table_stale_target(), 0.07, "wendy-proto's default");
        let mut p = NodeParams { table_stale_target: Some(0.2), ..NodeParams::default() };
        assert_eq!(p.sample().table_stale_target, 0.2);
        assert_eq!(p.table_stale_target(), 0.2);
        assert!(p.validate().is_ok());
        p.table_stale_target = Some(1.5);
        let err = p.validate().expect_err("a fraction above 1 cannot run");
        assert!(err.to_string().contains("table_stale_target"), "{err}");
    }

    #[test]
    fn the_neighbourhood_size_reaches_the_nodes() {
        assert_eq!(NodeParams::default().neighbourhood_size(), 32, "wendy-proto's default");
        let p = NodeParams { neighbourhood_size: Some(8), ..NodeParams::default() };
        assert_eq!(p.sample().neighbourhood_size, 8);
        assert_eq!(p.neighbourhood_size(), 8);
    }
}
