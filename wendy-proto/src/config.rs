//! Node configuration.

use core::time::Duration;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::credentials::Credentials;
use crate::id::NodeId;
use crate::identity::Identity;
use crate::info::NodeInfo;
use crate::output::CommandError;
use crate::secure::DEFAULT_REKEY;
use crate::wire::DEFAULT_MAX_FRAME;

/// A connection's window, in multiples of `max_pending_per_peer` ([`Config::route_window`]).
const ROUTE_WINDOW_PER_QUEUE: usize = 4;
/// Payload bytes a connection's window holds at most ([`Config::route_window_bytes`]).
const ROUTE_WINDOW_BYTES: usize = 4 << 20;

/// The smallest purpose an application may use; 0..16 are wendy's own messages.
pub const MIN_APP_PURPOSE: u8 = 16;
/// Bytes of a frame kept for a routed message's header (key, origin, purpose, hops, tags).
pub const APP_HEADER_ALLOWANCE: usize = 64;

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_PROBE_ATTEMPTS: u32 = 5;
const DEFAULT_NEIGHBOUR_PROBE_ATTEMPTS: u32 = 8;
const SUSPECT_HEARTBEATS: u32 = 4;
const TABLE_PROBE_HEARTBEATS: u32 = 60;
const DEFAULT_STALE_TARGET: f64 = 0.07;
/// The smallest `max_frame_size` accepted: room for an application header and a small payload.
pub const MIN_FRAME: usize = 512;

/// Which idle connections to members of a node's tables stay open
/// ([`Config::member_connections`]).
///
/// Measured in the simulator, one run each (commands in `wendy-sim/README.md`): at 10,000
/// nodes (joins at 500 a second, then 100,000 lookups), the connections per node at the end
/// and the peak memory per node; at a 30-minute median session (1,000 nodes, two hours,
/// seed 1), the steady control traffic without acks.
///
/// | mode | connections per node | bytes per node | control msgs/node/s |
/// | --- | --- | --- | --- |
/// | `Kept` | 137 | 94 k | 0.48 |
/// | `LeafSet` | 78 | 86 k | 0.69 |
/// | `Closed` | 29 | 77 k | 0.98 |
///
/// No lookup reached a wrong node in any mode, and after a crash of 30 % of 1,000 nodes the
/// tables were clean within [`Config::detection_time`] in each. A hop that must open a
/// connection first is slower, and under heavy churn that costs lookups: at a 5-minute median
/// session (1,000 nodes, seed 1) `Kept` lost 3 of 36,000 (besides those whose origin
/// crashed), `LeafSet` 4 and `Closed` 7, for 2.05, 2.85 and 3.71 control msgs/node/s, and
/// 12, 20 and 50 arrived after the simulator's 30 s timeout. (A routed message waits for a
/// connection's set-up at most `2 * ack_timeout_max`, see [`Config::connect_timeout`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberConnections {
    /// Every table member's connection stays open (and one a member dialled stays open
    /// `table_probe_interval` past `idle_timeout`): a probe costs two frames.
    #[default]
    Kept,
    /// Only connections to leaf-set members (and to those pushed out of it lately) stay
    /// open; routing-table and neighbourhood members' close after `idle_timeout` like any
    /// other, and each of their probes opens a connection again.
    LeafSet,
    /// No idle connection stays open: the fewest descriptors, the most control frames.
    Closed,
}

impl MemberConnections {
    /// Every setting with its name on a command line, as [`str::parse`] takes it.
    pub const NAMES: [(&'static str, MemberConnections); 3] = [
        ("kept", MemberConnections::Kept),
        ("leaf-set", MemberConnections::LeafSet),
        ("closed", MemberConnections::Closed),
    ];
}

impl core::str::FromStr for MemberConnections {
    type Err = String;

    /// `kept`, `leaf-set` or `closed`; anything else is refused with the names accepted.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES.iter().find(|(name, _)| *name == s).map(|&(_, m)| m).ok_or_else(|| {
            let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown member-connections setting {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// Everything a [`Node`](crate::Node) needs to start. Build with [`Config::new`] and adjust fields.
///
/// # Security
/// Every connection is encrypted and authenticated (a Noise XX handshake, see the crate docs).
/// [`Config::new`] takes the node's static key pair and derives the node id from its public
/// key; peers whose id is not derived from the key they prove are rejected. Two settings
/// weaken this and are named so: [`Config::with_trusted_id`] (ids chosen by the application,
/// trusted as claimed by any peer that passes the credentials) and
/// [`Config::insecure_plaintext`] (no encryption, nothing bound to keys: for measurements and
/// very large simulations only).
///
/// **A driver must fill [`Config::entropy`] from the operating system** (`getrandom`): it seeds
/// the generator of every handshake's ephemeral keys. The simulator and the tests fill it from
/// their seed, so runs replay.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// This node's id, address and region.
    pub info: NodeInfo,
    /// Seed of the node's random number generator (handshake nonces, tie choices).
    pub seed: u64,
    /// Leaf-set size L, half on each side (default 32, as the Go wendy).
    pub leaf_set_size: usize,
    /// Neighbourhood-set size M (default 32): the nodes nearest us in the network that we
    /// know, asked for routing-table rows near us (proximity) and offered as candidates for
    /// repairs and for the rare hop the other tables do not give. Each is a peer record and
    /// is probed. A smaller set costs less and routes a little longer: in the simulator at
    /// 10,000 nodes with [`MemberConnections::Closed`], 8 instead of 32 kept 90 peer records
    /// per node instead of 107, took the peak memory from 732 to 637 MiB and the events from
    /// 21.5 to 17.8 M, for a mean stretch of 1.64 instead of 1.56 (commands in
    /// `wendy-sim/README.md`).
    pub neighbourhood_size: usize,
    /// Proximity multiplier for nodes of another region (default 5, as the Go wendy).
    pub region_factor: u64,
    /// The node's housekeeping tick (default 10 s). At the first tick where the nearest
    /// counter-clockwise leaf-set member has been silent for more than `suspect_timeout` less
    /// two intervals, it gets a heartbeat (MSPastry: one neighbour, which answers), so that its
    /// answer has one interval to come before it would be suspected: every third tick at the
    /// defaults, every other tick when `suspect_timeout` is three intervals, every tick when it
    /// is two.
    pub heartbeat_interval: Duration,
    /// A neighbour (the nearest leaf-set member on either side) silent this long is suspected
    /// and probed (default 4 heartbeat intervals, 40 s).
    pub suspect_timeout: Duration,
    /// A suspected member is probed `probe_attempts` times, `probe_timeout` apart (every
    /// attempt after an unanswered one over a fresh connection, as is the first when the
    /// suspicion came from a missing per-hop ack), and declared gone when the last goes
    /// unanswered for `probe_timeout`.
    pub probe_timeout: Duration,
    /// Probes sent to a suspected member before it is declared gone (default 5): lost frames
    /// must not make a live node look dead, since its neighbours would then deliver messages
    /// for keys it still owns. Each attempt over a fresh connection costs a handshake, which
    /// with 5 % of frames lost fails about one time in five; five attempts make a false
    /// declaration rare (at 3, 1,000 nodes at 5 % loss delivered lookups at the wrong node).
    pub probe_attempts: u32,
    /// Probes sent to a suspected neighbour (the nearest leaf-set member on either side)
    /// before it is declared gone (default 8, at least `probe_attempts`): a neighbour wrongly
    /// declared gone makes us deliver messages for keys it still owns until it next contacts
    /// us (up to a heartbeat), while a routing-table entry wrongly declared gone only costs a
    /// detour. With 5 % of frames lost, a fresh connection's handshake and probe fail about
    /// one time in five, so each attempt beyond `probe_attempts` makes a false declaration
    /// about five times rarer (with 5 attempts, 1,000 nodes at 5 % loss still had about one a
    /// run, and 3 to 7 lookups delivered at the wrong node). See
    /// [`Config::neighbour_probing_time`].
    pub neighbour_probe_attempts: u32,
    /// The longest any other table member (leaf set beyond the neighbours, routing table) may
    /// stay silent before it is probed; a neighbourhood member in no other table silent this
    /// long leaves the neighbourhood set unprobed. Routing-table entries, which
    /// messages are sent through, are probed sooner when the node sees failures, at a period
    /// it tunes from them (see [`Config::table_stale_target`]), never below
    /// [`Config::table_probe_min`]; a leaf-set member's failure is reported by its own
    /// neighbours (see [`Config::leaf_detection_time`]; an entry in both tables is left to
    /// those reports while the tuned period is the longer wait). Messages routed through a member, and
    /// their per-hop acks, count as hearing from it.
    pub table_probe_interval: Duration,
    /// The shortest period at which silent table members are probed (reached when many of
    /// them fail, e.g. after a mass crash).
    pub table_probe_min: Duration,
    /// Self-tuned probing (MSPastry): the fraction of table entries allowed to be dead when a
    /// message is sent through them, on average (default 0.07). The node estimates how often
    /// its table members fail and probes them at the longest period for which its model
    /// (`rate * (period / 2 + probing_time)`, see `node/tuning.rs`) expects this fraction,
    /// between `table_probe_min` and `table_probe_interval`. The fraction is the model's, not a
    /// measured bound. A message that meets a dead entry waits for its per-hop ack to time out
    /// and is rerouted (or reported undeliverable after `max_reroutes`). Lower values cost more
    /// probes: in the simulator at a 30-minute median session (1,000 nodes, seed 3), 0.05 sent
    /// 0.529 control messages per node per second and the lookups were rerouted at 5.3 % of
    /// their hops; 0.07 sent 0.488, with reroutes at 6.4 % of the hops (no lookup lost).
    pub table_stale_target: f64,
    /// How long a connection may take to be dialled and authenticated. Routed messages queued
    /// on a connection being set up wait for it `2 * ack_timeout_max` at most (as long as one
    /// written on an open connection waits for its ack), then are routed around its peer, which
    /// is suspected and probed, while the set-up goes on.
    pub connect_timeout: Duration,
    /// A connection we dialled to a node in none of our tables (a joiner answered, a row
    /// asked, a direct message) closes after this long idle in both directions; one the peer
    /// dialled waits for its dialler to close it, and closes it itself `table_probe_interval`
    /// later (every member connection kept) or `idle_timeout` later (otherwise). Connections to table members, and to leaf-set
    /// members pushed out lately, stay open (by default, see below), and give their buffers
    /// back after this long idle.
    /// (A connection dialled only to time a proximity candidate closes once established.)
    /// [`Config::member_connections`] says which members' connections stay open.
    pub idle_timeout: Duration,
    /// Which connections to members of our tables stay open while idle: every member's
    /// (the default), the leaf set's only, or none. Open connections make a probe cost two
    /// frames; closed ones save the descriptors (and some memory) of about a hundred
    /// connections per node, and a probe then rides a new connection's handshake (three
    /// frames, then a close). See [`MemberConnections`] for the figures.
    pub member_connections: MemberConnections,
    /// How long to wait for the join to progress before retrying through the bootstrap.
    pub join_timeout: Duration,
    /// Join attempts before the join is reported failed.
    pub join_attempts: u32,
    /// Interval of the leaf-set exchange: our leaf set rides on the heartbeat to our nearest
    /// counter-clockwise member (which answers with its own only if ours lacks nodes it
    /// knows); right after a join, at gaps doubling from 1/64 of it, we ask the nearest
    /// member on each side for theirs instead.
    pub leaf_exchange_interval: Duration,
    /// Largest frame body accepted or sent.
    pub max_frame_size: usize,
    /// Messages queued for one peer: while its connection is being set up, and routed
    /// messages waiting behind the connection's window. The window is four times this
    /// (4,096 at the default): at most that many routed messages are written to one
    /// connection and not yet handed on by the peer, each kept until it is, so that all of
    /// them are routed again if the connection breaks. Past the queue [`Node::send`](crate::Node::send) refuses
    /// with [`CommandError::Backpressure`] (a driver's `send` waits for room first), and a
    /// message being forwarded is reported [`NodeError::Undeliverable`](crate::NodeError::Undeliverable) at its origin.
    pub max_pending_per_peer: usize,
    /// Messages queued in all (per-peer queues and messages held while joining).
    pub max_pending_total: usize,
    /// Most connections open at once; further inbound connections are refused.
    pub max_connections: usize,
    /// Hop limit for routed messages; a message that exceeds it is dropped and reported.
    pub max_hops: u8,
    /// Shortest retransmission timeout of a per-hop ack (the estimate from measured round
    /// trips is never below it). A routed message unacknowledged for one timeout makes its
    /// hop a suspect, for two is routed round it, unless the hop acknowledged another message
    /// within the last timeout: one that keeps acknowledging is behind, not gone.
    pub ack_timeout_min: Duration,
    /// Longest retransmission timeout of a per-hop ack, and the timeout towards a peer with no
    /// round trip measured yet.
    pub ack_timeout_max: Duration,
    /// How many times a routed message is sent again through another hop before it is
    /// reported undeliverable (default 8: with 30 % of the nodes crashing at once, a message can
    /// meet several dead hops in a row; it tries each at most once, since suspects are routed
    /// around, and each costs at most two `ack_timeout_max`).
    pub max_reroutes: u8,
    /// Membership over the peers' proven keys (and the pre-shared key, if they have one);
    /// `None` admits every peer that completes the handshake.
    pub credentials: Option<Arc<dyn Credentials>>,
    /// The node's static key pair. `None` only in the trusting mode
    /// ([`Config::with_trusted_id`]): [`Node::new`](crate::Node::new) then draws one from
    /// `entropy`.
    pub identity: Option<Identity>,
    /// Trust the ids peers claim instead of deriving them from their keys (and ours is not
    /// derived from ours). Set by [`Config::with_trusted_id`]; see there.
    pub trusted_ids: bool,
    /// 32 bytes of entropy seeding the node's cryptographic generator (handshake ephemeral
    /// keys). A driver must fill it from the OS; simulations fill it from their seed.
    pub entropy: [u8; 32],
    /// No encryption and no key proof: the handshake of earlier versions (node info and, with
    /// a pre-shared key, an HMAC over fresh nonces), then every frame in the clear. Set by
    /// [`Config::insecure_plaintext`]; see there.
    pub insecure_plaintext: bool,
    /// Each direction of an encrypted connection is rekeyed after this many Noise messages
    /// (default 2^20).
    pub rekey_after: u64,
}

impl Config {
    /// A configuration with the defaults for the node with static key pair `identity`,
    /// reachable at `addr` (local and global). Its id is derived from the public key
    /// ([`Identity::node_id`]).
    pub fn new(identity: Identity, addr: SocketAddr) -> Self {
        let mut c = Config::with_trusted_id(identity.node_id(), addr);
        c.identity = Some(identity);
        c.trusted_ids = false;
        c
    }

    /// **Trusting mode**: a configuration for a node with an id of the application's choice
    /// (the Go wendy's `NodeIDFromBytes`). Connections are still encrypted and each side still
    /// proves a static key (drawn from `entropy` unless [`Config::identity`] is set), but ids
    /// are not bound to keys: this node believes the id any peer claims, so any member that
    /// passes the credentials can pose as any id. Use it only among mutually trusted nodes.
    pub fn with_trusted_id(id: NodeId, addr: SocketAddr) -> Self {
        Config {
            info: NodeInfo::new(id, addr),
            seed: id.as_u128() as u64 ^ (id.as_u128() >> 64) as u64,
            leaf_set_size: 32,
            neighbourhood_size: 32,
            region_factor: 5,
            heartbeat_interval: DEFAULT_HEARTBEAT,
            suspect_timeout: DEFAULT_HEARTBEAT * SUSPECT_HEARTBEATS,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            probe_attempts: DEFAULT_PROBE_ATTEMPTS,
            neighbour_probe_attempts: DEFAULT_NEIGHBOUR_PROBE_ATTEMPTS,
            table_probe_interval: DEFAULT_HEARTBEAT * TABLE_PROBE_HEARTBEATS,
            table_probe_min: DEFAULT_HEARTBEAT,
            table_stale_target: DEFAULT_STALE_TARGET,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            member_connections: MemberConnections::Kept,
            join_timeout: Duration::from_secs(10),
            join_attempts: 3,
            leaf_exchange_interval: Duration::from_secs(120),
            max_frame_size: DEFAULT_MAX_FRAME,
            max_pending_per_peer: 1024,
            max_pending_total: 16 * 1024,
            max_connections: 4096,
            max_hops: 64,
            ack_timeout_min: Duration::from_millis(100),
            ack_timeout_max: Duration::from_secs(1),
            max_reroutes: 8,
            credentials: None,
            identity: None,
            trusted_ids: true,
            entropy: [0; 32],
            insecure_plaintext: false,
            rekey_after: DEFAULT_REKEY,
        }
    }

    /// **Insecure**: turns encryption off. Frames travel in the clear with no integrity, ids
    /// are not bound to keys, and a pre-shared key only gates the handshake (an HMAC over
    /// nonces; the relay of a handshake is not prevented). Meant for measuring what encryption
    /// costs and for the simulator's largest runs; both sides of a connection must agree.
    pub fn insecure_plaintext(mut self) -> Self {
        self.insecure_plaintext = true;
        self
    }

    /// Sets the entropy that seeds the node's cryptographic generator.
    pub fn with_entropy(mut self, entropy: [u8; 32]) -> Self {
        self.entropy = entropy;
        self
    }

    /// Sets the static key pair (in the trusting mode, where it does not determine the id).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Sets the region and the local and global addresses.
    pub fn with_region(mut self, region: impl Into<String>, local: SocketAddr, global: SocketAddr) -> Self {
        self.info.region = region.into();
        self.info.local = local;
        self.info.global = global;
        self
    }

    /// Sets the credentials.
    pub fn with_credentials(mut self, credentials: Arc<dyn Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the heartbeat interval and the liveness timers derived from it: suspicion after
    /// four silent intervals; a probe answered within one interval or one second, whichever is
    /// shorter; table members probed after at most sixty intervals of silence, and after at
    /// least one. These ratios are the defaults' (10 s, 40 s,
    /// 1 s, 600 s, 10 s) and live only here.
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.suspect_timeout = interval * SUSPECT_HEARTBEATS;
        self.probe_timeout = interval.min(DEFAULT_PROBE_TIMEOUT);
        self.table_probe_interval = interval * TABLE_PROBE_HEARTBEATS;
        self.table_probe_min = interval;
        self
    }

    /// Checks that the configuration can run: every interval above zero, a leaf set of at
    /// least two (an even number, half on each side), room for at least one queued message,
    /// connection and hop, and a frame large enough for the handshake.
    /// [`Node::new`](crate::Node::new) calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("suspect_timeout", self.suspect_timeout),
            ("probe_timeout", self.probe_timeout),
            ("table_probe_interval", self.table_probe_interval),
            ("table_probe_min", self.table_probe_min),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("join_timeout", self.join_timeout),
            ("leaf_exchange_interval", self.leaf_exchange_interval),
            ("ack_timeout_min", self.ack_timeout_min),
            ("ack_timeout_max", self.ack_timeout_max),
        ];
        for (field, d) in durations {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        if self.leaf_set_size < 2 || self.leaf_set_size % 2 != 0 {
            return Err(ConfigError::LeafSetSize { size: self.leaf_set_size });
        }
        let counts = [
            ("join_attempts", self.join_attempts as usize),
            ("max_pending_per_peer", self.max_pending_per_peer),
            ("max_pending_total", self.max_pending_total),
            ("max_connections", self.max_connections),
            ("max_hops", usize::from(self.max_hops)),
            ("probe_attempts", self.probe_attempts as usize),
            ("neighbour_probe_attempts", self.neighbour_probe_attempts as usize),
        ];
        for (field, n) in counts {
            if n == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.max_frame_size < MIN_FRAME {
            return Err(ConfigError::FrameTooSmall { size: self.max_frame_size, min: MIN_FRAME });
        }
        if self.ack_timeout_max < self.ack_timeout_min {
            return Err(ConfigError::AckTimeouts);
        }
        if self.table_probe_interval < self.table_probe_min {
            return Err(ConfigError::TableProbeRange);
        }
        if !(self.table_stale_target > 0.0 && self.table_stale_target < 1.0) {
            return Err(ConfigError::StaleTarget);
        }
        if self.suspect_timeout < self.heartbeat_interval {
            return Err(ConfigError::SuspectBeforeHeartbeat);
        }
        if !self.info.is_valid() {
            return Err(ConfigError::InvalidInfo);
        }
        if !self.trusted_ids && self.identity.as_ref().is_none_or(|k| k.node_id() != self.info.id) {
            return Err(ConfigError::IdNotFromKey);
        }
        if self.rekey_after == 0 {
            return Err(ConfigError::Zero { field: "rekey_after" });
        }
        if self.insecure_plaintext && self.credentials.as_ref().is_some_and(|c| c.psk().is_none()) {
            return Err(ConfigError::PlaintextCredentials);
        }
        Ok(())
    }

    /// A connection's window: at most this many routed messages are written to one
    /// connection and not yet handed on by its peer (4 x `max_pending_per_peer`; more wait in
    /// its queue). Also what a peer may send us before we hand on what it sent, which a driver
    /// uses to bound the deliveries waiting for a lagging application.
    pub fn route_window(&self) -> usize {
        self.max_pending_per_peer.max(1) * ROUTE_WINDOW_PER_QUEUE
    }

    /// The window in bytes: besides at most [`route_window`](Self::route_window) messages, a
    /// connection carries at most this many bytes of routed payload (4 MiB) written and not yet
    /// handed on by its peer; the message that crosses it is the last written until the peer
    /// hands some on. With small messages the count binds; with large ones this does: 4,096
    /// messages of 60 KB would be 245 MB held for one peer, and longer for it to work through
    /// than an ack timeout.
    ///
    /// This is the bound; a connection does not start there. A new connection may carry 256
    /// KiB; prompt acknowledgements open it to this bound (doubling each round trip), and an
    /// acknowledgement later than a quarter of [`ack_timeout_max`](Self::ack_timeout_max)
    /// halves it (once per window's worth of messages, never below 64 KiB), so that a busy
    /// peer's backlog stays shorter than the wait after which it would be taken for failing.
    pub fn route_window_bytes(&self) -> usize {
        ROUTE_WINDOW_BYTES
    }

    /// The largest application payload that fits a frame: `max_frame_size` less the
    /// allowance for a routed message's header.
    pub fn max_payload(&self) -> usize {
        self.max_frame_size.saturating_sub(APP_HEADER_ALLOWANCE)
    }

    /// The rules for an application message, in one place for the node and the drivers:
    /// purposes below [`MIN_APP_PURPOSE`] are wendy's own, and the payload must fit a frame.
    pub fn check_app_message(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        check_app_message(purpose, len, self.max_payload())
    }

    /// Sets the RNG seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The longest a departed node can stay in any table (leaf set, routing table,
    /// neighbourhood) after its last word: silence until suspicion, the probes, and up to two
    /// maintenance ticks of slack. A node passes on only members it heard from and does not
    /// suspect, so one that had not heard of the departed node may still learn of it up to the longest
    /// silence before suspicion (`table_probe_interval`, or `suspect_timeout` if longer) after
    /// its last word, and then probes it as many times as a neighbour: that bounds it.
    pub fn detection_time(&self) -> Duration {
        self.suspect_timeout.max(self.table_probe_interval)
            + self.neighbour_probing_time()
            + 2 * self.heartbeat_interval
    }

    /// From suspicion to a declared failure: `probe_attempts` probes, `probe_timeout` apart.
    pub fn probing_time(&self) -> Duration {
        self.probe_timeout * self.probe_attempts.max(1)
    }

    /// From a neighbour's suspicion to its declared failure: `neighbour_probe_attempts` probes
    /// (at least `probe_attempts`), `probe_timeout` apart.
    pub fn neighbour_probing_time(&self) -> Duration {
        self.probe_timeout * self.neighbour_probe_attempts.max(self.probe_attempts).max(1)
    }

    /// The longest a departed leaf-set member stays in the leaf set after its last word, when
    /// one of its two neighbours survives it: the neighbour's suspicion and probes (and up to
    /// two ticks of slack), then the neighbour's `Failed` report and our own probes. (When a
    /// node and both its neighbours fail together, [`Config::detection_time`] bounds it.)
    pub fn leaf_detection_time(&self) -> Duration {
        self.suspect_timeout + self.neighbour_probing_time() + self.probing_time() + 2 * self.heartbeat_interval
    }
}

/// The rules for an application message: a purpose of at least [`MIN_APP_PURPOSE`] and a
/// payload of at most `max_payload` bytes ([`Config::max_payload`]). The node applies them to
/// every command; a driver may apply them early, before a message reaches its node task.
pub fn check_app_message(purpose: u8, len: usize, max_payload: usize) -> Result<(), CommandError> {
    if purpose < MIN_APP_PURPOSE {
        return Err(CommandError::ReservedPurpose(purpose));
    }
    if len > max_payload {
        return Err(CommandError::PayloadTooLarge { len, max: max_payload });
    }
    Ok(())
}

/// Why a [`Config`] cannot run, from [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An interval or timeout is zero (a zero heartbeat would make the node spin).
    ZeroDuration {
        /// The field's name.
        field: &'static str,
    },
    /// A count that must be at least one is zero.
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// The leaf set must hold at least two nodes, as many on each side.
    LeafSetSize {
        /// The size configured.
        size: usize,
    },
    /// `max_frame_size` is too small to carry the handshake and a message.
    FrameTooSmall {
        /// The size configured.
        size: usize,
        /// The smallest size accepted.
        min: usize,
    },
    /// `suspect_timeout` is shorter than one heartbeat: leaf-set members would be suspected
    /// before they had a chance to answer.
    SuspectBeforeHeartbeat,
    /// `ack_timeout_max` is shorter than `ack_timeout_min`.
    AckTimeouts,
    /// `table_probe_interval` (the longest probe period) is shorter than `table_probe_min`.
    TableProbeRange,
    /// `table_stale_target` is not a fraction strictly between 0 and 1.
    StaleTarget,
    /// The region name is longer than [`MAX_REGION_LEN`](crate::info::MAX_REGION_LEN) bytes.
    InvalidInfo,
    /// The id is not derived from the static key (or there is no key) and the configuration
    /// is not in the trusting mode ([`Config::with_trusted_id`]).
    IdNotFromKey,
    /// Credentials without a pre-shared key (an allow-list of keys) cannot work in plaintext,
    /// where no key is proven.
    PlaintextCredentials,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::ZeroDuration { field } => write!(f, "config: {field} must be longer than zero"),
            ConfigError::Zero { field } => write!(f, "config: {field} must be at least 1"),
            ConfigError::LeafSetSize { size } => {
                write!(f, "config: leaf_set_size {size} must be an even number of at least 2")
            }
            ConfigError::FrameTooSmall { size, min } => {
                write!(f, "config: max_frame_size {size} is below the minimum of {min} bytes")
            }
            ConfigError::SuspectBeforeHeartbeat => {
                f.write_str("config: suspect_timeout must be at least one heartbeat_interval")
            }
            ConfigError::AckTimeouts => f.write_str("config: ack_timeout_max must be at least ack_timeout_min"),
            ConfigError::TableProbeRange => {
                f.write_str("config: table_probe_interval must be at least table_probe_min")
            }
            ConfigError::StaleTarget => {
                f.write_str("config: table_stale_target must be a fraction strictly between 0 and 1")
            }
            ConfigError::InvalidInfo => {
                write!(f, "config: the region name is longer than {} bytes", crate::info::MAX_REGION_LEN)
            }
            ConfigError::IdNotFromKey => f.write_str(
                "config: the node id is not derived from the identity key (use Config::with_trusted_id, or Config::with_trusted_id to choose ids)",
            ),
            ConfigError::PlaintextCredentials => f.write_str(
                "config: insecure plaintext proves no keys, so only credentials with a pre-shared key can work",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::MemberConnections;

    #[test]
    fn member_connections_parse_from_their_names_and_refuse_others() {
        for (name, m) in MemberConnections::NAMES {
            assert_eq!(name.parse::<MemberConnections>(), Ok(m));
        }
        let err = "open".parse::<MemberConnections>().unwrap_err();
        assert!(err.contains("\"open\"") && err.contains("kept, leaf-set, closed"), "{err}");
    }
}
