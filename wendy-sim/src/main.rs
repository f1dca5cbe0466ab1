//! The `wendy-sim` command: run a scenario, print a summary, write JSON and SVG plots.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cap::Cap;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wendy_proto::MemberConnections;
use wendy_sim::{
    parse_churn_trace, Build, ChurnConfig, KvConfig, LossMode, NetConfig, NodeParams, SessionDist, Sim, SimConfig,
    SplitMode, SplitPlan, Topology,
};

/// jemalloc instead of the system allocator: the simulator allocates and frees small buffers at
/// every event, and glibc's malloc spent about a tenth of the run's CPU on it. jemalloc rather
/// than mimalloc (stop 34): as fast here, and it left less of a burst of joins resident
/// (10,000 nodes, `closed`: peak RSS 512 MiB against 637 MiB, the same CPU). Its options are
/// set at build time in `.cargo/config.toml`: huge pages, and since stop 51 freed pages kept
/// for the next allocations rather than given back to the system (at 10,000 nodes, `closed`,
/// 466.2 MiB peak against 447.3 MiB with jemalloc's defaults; the time it saves is in
/// wendy-sim/README.md, "Issue 11, stop 51"). Counted (`cap`, with no limit: an atomic
/// addition per call) so that `--memory-report` knows the heap in use exactly.
#[global_allocator]
static ALLOC: Cap<tikv_jemallocator::Jemalloc> = Cap::new(tikv_jemallocator::Jemalloc, usize::MAX);

/// Heap bytes in use now, as [`ALLOC`] counted them.
fn heap_in_use() -> u64 {
    ALLOC.allocated() as u64
}

/// Deterministic discrete-event simulation of a wendy (Pastry) network running the real protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Initial population, joined one after another through the real join protocol.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups towards uniformly random keys, from random joined nodes.
    #[arg(long, default_value_t = 10_000)]
    lookups: u64,
    /// Master seed: everything random derives from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as a JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots (hops.svg, delivery.svg, correctness.svg, control.svg, nodes.svg) here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Regions (0: latency from coordinates). Nodes get local and global addresses.
    #[arg(long, default_value_t = 0)]
    regions: u16,
    /// Probability that one transmission of a frame is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// How a loss is modelled: tcp (retransmitted after --rto-ms, order kept) or drop.
    #[arg(long, value_enum, default_value_t = LossArg::Tcp)]
    loss_mode: LossArg,
    /// Once the network is stable, crash this fraction of nodes at once.
    #[arg(long, default_value_t = 0.0)]
    crash_fraction: f64,
    /// When to crash, seconds into the measurement phase (default: a quarter of it).
    #[arg(long)]
    crash_at: Option<f64>,
    /// Restart the crashed nodes (same id and address) after this many seconds: bounce.
    #[arg(long)]
    bounce_after: Option<f64>,
    /// Churn: Poisson arrivals and sessions with this median, in seconds.
    #[arg(long)]
    churn_median_session: Option<f64>,
    /// Session-time distribution for churn.
    #[arg(long, value_enum, default_value_t = DistArg::Exp)]
    session_dist: DistArg,
    /// Shape of the Pareto session distribution (> 1).
    #[arg(long, default_value_t = 1.5)]
    pareto_shape: f64,
    /// Fraction of churn departures that leave gracefully (the rest crash).
    #[arg(long, default_value_t = 0.0)]
    graceful: f64,
    /// Replay a churn trace (CSV: time_s,node,up|down) during the measurement phase.
    #[arg(long)]
    churn_trace: Option<PathBuf>,
    /// Length of the measurement phase in seconds (lookups spread over it). Default with churn: 3600.
    #[arg(long)]
    duration: Option<f64>,
    /// Lookups per second when --duration is not given.
    #[arg(long, default_value_t = 1000.0)]
    lookup_rate: f64,
    /// A lookup not delivered within this many seconds is lost.
    #[arg(long, default_value_t = 30.0)]
    lookup_timeout: f64,
    /// Lookup payload bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    payload_bytes: usize,
    /// How the initial population is built: `joins` (every node joins through the protocol,
    /// at `--join-rate`) or `tables` (the simulator computes each node's tables from the whole
    /// ring and starts it as a member: no join traffic, for the largest rings).
    #[arg(long, value_enum, default_value_t = BuildArg::Joins)]
    build: BuildArg,
    /// Joins started per simulated second while building the population.
    #[arg(long, default_value_t = 100.0)]
    join_rate: f64,
    /// Seconds of quiet between the last join and the lookups.
    #[arg(long, default_value_t = 10.0)]
    settle: f64,
    /// Node placement when --regions is 0.
    #[arg(long, value_enum, default_value_t = TopoArg::Plane)]
    topology: TopoArg,
    /// One-way latency across the plane or sphere, ms.
    #[arg(long, default_value_t = 100.0)]
    diameter_ms: f64,
    /// Smallest one-way latency, ms.
    #[arg(long, default_value_t = 1.0)]
    base_ms: f64,
    /// One-way latency inside a region, ms.
    #[arg(long, default_value_t = 2.0)]
    intra_ms: f64,
    /// One-way latency between regions, ms.
    #[arg(long, default_value_t = 60.0)]
    inter_ms: f64,
    /// Jitter: each frame's delay is latency * (1 + jitter * uniform[0,1)).
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Retransmission delay per loss in tcp loss mode, ms.
    #[arg(long, default_value_t = 200.0)]
    rto_ms: f64,
    /// Send every frame as its own segment (default: frames written on one connection while
    /// handling one input travel together).
    #[arg(long)]
    no_coalesce: bool,
    /// Connection attempts to crashed nodes are refused (RST) instead of going unanswered.
    #[arg(long)]
    refuse_dead: bool,
    /// Node heartbeat interval (also its maintenance tick), ms (wendy-proto's default: 10,000).
    #[arg(long, default_value_t = 10000)]
    heartbeat_ms: u64,
    /// Run the nodes without encryption (insecure; for the largest runs and to measure the cost).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Silence before a leaf is suspected, ms (default 3 heartbeats).
    #[arg(long)]
    suspect_ms: Option<u64>,
    /// Probe timeout, ms (default 1 heartbeat or 1 s, whichever is shorter).
    #[arg(long)]
    probe_ms: Option<u64>,
    /// Leaf-set exchange interval, s (wendy-proto's default: 120).
    #[arg(long, default_value_t = 120)]
    leaf_exchange_s: u64,
    /// Longest silence before a table member is probed, ms (default 60 heartbeats); routing-table
    /// members are probed sooner, at a period each node tunes from the failures it sees.
    #[arg(long)]
    table_probe_ms: Option<u64>,
    /// Self-tuned probing's target: the fraction of routing-table entries allowed to be dead
    /// when a message is sent through them (default: wendy-proto's, 0.07).
    #[arg(long)]
    table_stale_target: Option<f64>,
    /// After a crash, give up waiting for the repair (ring, clean tables, exact leaf sets)
    /// this many seconds after it. Default: 600, or the nodes' `detection_time()` plus 30 s
    /// when that is longer, so that the documented bound can be checked at any setting.
    #[arg(long)]
    repair_timeout_s: Option<u64>,
    /// Idle timeout of connections to nodes outside our tables, s (wendy-proto's default: 5).
    #[arg(long, default_value_t = 5)]
    idle_timeout_s: u64,
    /// Which idle connections to table members stay open: `kept` (every member's,
    /// wendy-proto's default), `leaf-set` (the leaf set's only) or `closed` (none: the least
    /// memory, more control frames).
    #[arg(long, default_value = "kept")]
    member_connections: MemberConnections,
    /// Connection set-up timeout, s.
    #[arg(long, default_value_t = 5)]
    connect_timeout_s: u64,
    /// Leaf-set size L.
    #[arg(long, default_value_t = 32)]
    leaf_set_size: usize,
    /// Neighbourhood-set size M: the nodes nearest by measured round trip, asked for rows
    /// (default: wendy-proto's, 32).
    #[arg(long)]
    neighbourhood_size: Option<usize>,
    /// Most connections a node keeps open (wendy-proto's max_connections).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Split the network: put this fraction of nodes on one side (see --split-mode).
    #[arg(long)]
    split_fraction: Option<f64>,
    /// partition (drop across the split, then repair) or hold (hold, then release).
    #[arg(long, value_enum, default_value_t = SplitArg::Partition)]
    split_mode: SplitArg,
    /// When the split starts, seconds into the measurement phase.
    #[arg(long, default_value_t = 10.0)]
    split_at: f64,
    /// How long the split lasts, seconds.
    #[arg(long, default_value_t = 30.0)]
    split_secs: f64,
    /// Width of the time-series buckets, seconds (default: about 400 buckets).
    #[arg(long)]
    bucket_s: Option<f64>,
    /// Do not print the summary.
    #[arg(long)]
    quiet: bool,
    /// Print a progress line to stderr every this many seconds of wall time (simulated time,
    /// nodes joined, events, RSS, share done and an estimate of the time left), for runs whose
    /// stderr is a log rather than a terminal; it replaces the progress bar.
    #[arg(long, value_name = "SECS")]
    progress_every: Option<u64>,
    /// Threads that run the nodes: 1 processes one event after another; from 2 on, events
    /// are processed in batches and the nodes' work of a batch is shared by the threads. A
    /// run is the same for any count from 2 on, and differs from a run with 1 only in the
    /// order of events that cannot affect each other (see the README).
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// At the end, measure the simulator's own structures (bytes per host by structure) and
    /// print them with the summary and in the JSON (`memory`).
    #[arg(long)]
    memory_report: bool,
    /// Key-value workload: every node runs the storage layer; this many keys are put at the
    /// start of the measurement phase and all read at its end (0: no workload).
    #[arg(long, default_value_t = 0)]
    kv_keys: usize,
    /// Replicas per key of the key-value workload.
    #[arg(long, default_value_t = 3)]
    kv_replicas: usize,
    /// Bytes per value of the key-value workload.
    #[arg(long, default_value_t = 100)]
    kv_value_size: usize,
    /// Puts per second of the key-value workload.
    #[arg(long, default_value_t = 1000.0)]
    kv_put_rate: f64,
    /// Gets of random keys per second during the measurement phase.
    #[arg(long, default_value_t = 5.0)]
    kv_probe_rate: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LossArg {
    Tcp,
    Drop,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DistArg {
    Exp,
    Pareto,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TopoArg {
    Plane,
    Sphere,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BuildArg {
    Joins,
    Tables,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Partition,
    Hold,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn ms(m: f64) -> Duration {
    Duration::from_secs_f64(m.max(0.0) / 1000.0)
}

fn net_config(cli: &Cli) -> NetConfig {
    NetConfig {
        topology: match cli.topology {
            TopoArg::Plane => Topology::Plane,
            TopoArg::Sphere => Topology::Sphere,
        },
        diameter: ms(cli.diameter_ms),
        base: ms(cli.base_ms),
        regions: cli.regions,
        intra_region: ms(cli.intra_ms),
        inter_region: ms(cli.inter_ms),
        jitter: cli.jitter.max(0.0),
        loss: cli.loss.clamp(0.0, 1.0),
        loss_mode: match cli.loss_mode {
            LossArg::Tcp => LossMode::Tcp,
            LossArg::Drop => LossMode::Drop,
        },
        rto: ms(cli.rto_ms),
        refuse_dead: cli.refuse_dead,
        coalesce: !cli.no_coalesce,
        ..NetConfig::default()
    }
}

fn node_params(cli: &Cli) -> NodeParams {
    NodeParams {
        heartbeat: Duration::from_millis(cli.heartbeat_ms.max(1)),
        suspect: cli.suspect_ms.map(Duration::from_millis),
        table_probe: cli.table_probe_ms.map(Duration::from_millis),
        table_stale_target: cli.table_stale_target,
        probe: cli.probe_ms.map(Duration::from_millis),
        leaf_exchange: Duration::from_secs(cli.leaf_exchange_s),
        idle_timeout: Duration::from_secs(cli.idle_timeout_s),
        member_connections: cli.member_connections,
        connect_timeout: Duration::from_secs(cli.connect_timeout_s),
        leaf_set_size: cli.leaf_set_size,
        neighbourhood_size: cli.neighbourhood_size,
        max_connections: cli.max_connections.max(1),
        insecure_plaintext: cli.insecure_plaintext,
        ..NodeParams::default()
    }
}

fn config(cli: &Cli) -> Result<SimConfig, String> {
    let churn_trace = match &cli.churn_trace {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            parse_churn_trace(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Vec::new(),
    };
    let churn = cli.churn_median_session.map(|m| ChurnConfig {
        median_session: secs(m),
        dist: match cli.session_dist {
            DistArg::Exp => SessionDist::Exponential,
            DistArg::Pareto => SessionDist::Pareto { shape: cli.pareto_shape },
        },
        graceful: cli.graceful.clamp(0.0, 1.0),
    });
    let duration = cli.duration.map(secs).or_else(|| churn.as_ref().map(|_| Duration::from_secs(3600)));
    if cli.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let node = node_params(cli);
    node.validate().map_err(|e| format!("node parameters: {e}"))?;
    let repair_timeout = match cli.repair_timeout_s {
        Some(s) => Duration::from_secs(s),
        None => Duration::from_secs(600).max(node.detection_time() + Duration::from_secs(30)),
    };
    Ok(SimConfig {
        nodes: cli.nodes,
        lookups: cli.lookups,
        seed: cli.seed,
        net: net_config(cli),
        node,
        build: match cli.build {
            BuildArg::Joins => Build::Joins,
            BuildArg::Tables => Build::Tables,
        },
        join_rate: cli.join_rate,
        settle: secs(cli.settle),
        lookup_rate: cli.lookup_rate,
        duration,
        lookup_timeout: secs(cli.lookup_timeout),
        payload_bytes: cli.payload_bytes,
        crash_fraction: cli.crash_fraction.clamp(0.0, 1.0),
        crash_at: cli.crash_at.map(secs),
        bounce_after: cli.bounce_after.map(secs),
        churn,
        churn_trace,
        split: cli.split_fraction.map(|f| SplitPlan {
            mode: match cli.split_mode {
                SplitArg::Partition => SplitMode::Partition,
                SplitArg::Hold => SplitMode::Hold,
            },
            fraction: f.clamp(0.0, 1.0),
            at: secs(cli.split_at),
            length: secs(cli.split_secs),
        }),
        repair_timeout,
        bucket: cli.bucket_s.map(secs),
        progress: std::io::stderr().is_terminal(),
        threads: cli.threads.max(1),
        memory_report: cli.memory_report,
        heap_in_use: Some(heap_in_use),
        kv: (cli.kv_keys > 0).then(|| KvConfig {
            keys: cli.kv_keys,
            replicas: cli.kv_replicas.max(1),
            value_size: cli.kv_value_size,
            put_rate: cli.kv_put_rate,
            probe_rate: cli.kv_probe_rate,
            ..KvConfig::default()
        }),
        ..SimConfig::default()
    })
}

/// One line of `--progress-every`: where the run is, and an estimate of the wall time left
/// from the share of the planned simulated time done so far (the join phase costs more per
/// simulated second than the rest, so early estimates run long).
fn progress_line(elapsed: Duration, frac: f64, s: &Sim) -> String {
    let frac = frac.clamp(0.0, 1.0);
    let left = if frac > 0.0 { format!("{:.0}s", elapsed.as_secs_f64() * (1.0 - frac) / frac) } else { "?".into() };
    format!(
        "wendy-sim: {:5.1}% after {:.0}s wall, about {left} left; t={} joined={} events={} rss={:.2} GiB",
        100.0 * frac,
        elapsed.as_secs_f64(),
        s.now(),
        s.joined_count(),
        s.events(),
        wendy_sim::report::rss_bytes() as f64 / (1u64 << 30) as f64
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wendy-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = cfg.progress.then(|| {
        let pb = ProgressBar::new(1000);
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {percent}% eta {eta} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        pb
    });
    let every = cli.progress_every.map(|s| Duration::from_secs(s.max(1)));
    let bar = bar.filter(|_| every.is_none());
    let (start, mut last) = (std::time::Instant::now(), std::time::Instant::now());
    let sim = Sim::new(cfg);
    let report = sim.run(|s, frac| {
        if let Some(pb) = &bar {
            pb.set_position((frac.clamp(0.0, 1.0) * 1000.0) as u64);
            pb.set_message(format!("t={} joined={} events={}", s.now(), s.joined_count(), s.events()));
        }
        if every.is_some_and(|e| last.elapsed() >= e) {
            last = std::time::Instant::now();
            eprintln!("{}", progress_line(start.elapsed(), frac, s));
        }
    });
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    if !cli.quiet {
        println!("{report}");
    }
    if let Some(path) = &cli.json {
        if let Err(e) = std::fs::write(path, report.to_json()) {
            eprintln!("wendy-sim: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(dir) = &cli.svg {
        if let Err(e) = wendy_sim::plot::write_svgs(&report, dir) {
            eprintln!("wendy-sim: plots in {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_flags_parse() {
        let cli = Cli::try_parse_from([
            "wendy-sim",
            "--nodes",
            "10",
            "--lookups",
            "5",
            "--seed",
            "3",
            "--json",
            "x.json",
            "--svg",
            "plots",
            "--regions",
            "3",
            "--loss",
            "0.01",
            "--crash-fraction",
            "0.1",
            "--churn-median-session",
            "1800",
            "--duration",
            "60",
        ])
        .expect("the flags scripts depend on");
        let cfg = config(&cli).unwrap();
        assert_eq!((cfg.nodes, cfg.lookups, cfg.seed, cfg.net.regions), (10, 5, 3, 3));
        assert_eq!(cfg.duration, Some(Duration::from_secs(60)));
        assert!(cfg.churn.is_some());
        let odd = Cli::try_parse_from(["wendy-sim", "--leaf-set-size", "7"]).unwrap();
        assert!(config(&odd).unwrap_err().contains("leaf"), "a node that cannot start is refused up front");
    }

    #[test]
    fn a_progress_line_says_where_the_run_is() {
        let cli = Cli::try_parse_from(["wendy-sim", "--nodes", "20", "--progress-every", "30"]).unwrap();
        assert_eq!(cli.progress_every, Some(30));
        let sim = Sim::new(config(&cli).unwrap());
        let line = progress_line(Duration::from_secs(10), 0.25, &sim);
        assert!(line.contains(" 25.0% after 10s wall, about 30s left;"), "{line}");
        assert!(line.contains("joined=0 events=0"), "{line}");
        assert!(progress_line(Duration::ZERO, 0.0, &sim).contains("about ? left"));
    }

    #[test]
    fn the_memory_report_counts_the_simulators_structures() {
        let cli = Cli::try_parse_from(["wendy-sim", "--nodes", "20", "--lookups", "50", "--memory-report"]).unwrap();
        let report = wendy_sim::run(config(&cli).unwrap());
        let m = report.memory.as_ref().expect("asked for");
        assert_eq!((m.hosts, m.live), (20, 20));
        for s in ["hosts", "links", "link_fifos", "event_queue", "node_structs_shallow", "ids"] {
            assert!(m.structures.get(s).is_some_and(|&b| b > 0), "{s}: {:?}", m.structures);
        }
        assert_eq!(m.total_bytes, m.structures.values().sum::<u64>());
        for s in ["node.peers", "node.conns", "node.timers", "node.tables"] {
            assert!(m.structures.get(s).is_some_and(|&b| b > 0), "the nodes' own structures: {s}");
        }
        let j = report.memory_after_joins.as_ref().expect("measured when the population has joined");
        assert_eq!(j.live, 20);
        assert!(j.at_s <= m.at_s);
        assert!(report.to_string().contains("sim memory   after joins"));
        // The allocator counted the heap: at least what the structures estimate (other test
        // threads may allocate too, so no upper bound here).
        let heap = m.heap_bytes.expect("the binary's allocator counts");
        assert!(heap >= m.total_bytes / 2, "heap {heap} B, structures {} B", m.total_bytes);
        assert!(report.to_string().contains("heap in use"));
    }

    #[test]
    fn the_json_has_the_required_keys() {
        let cli = Cli::try_parse_from(["wendy-sim", "--nodes", "20", "--lookups", "50"]).unwrap();
        let report = wendy_sim::run(config(&cli).unwrap());
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        for key in [
            "nodes",
            "lookups",
            "seed",
            "delivered",
            "correct",
            "incorrect",
            "lost",
            "hops_mean",
            "hops_p99",
            "hops_max",
            "stretch_mean",
            "control_msgs_per_node_per_s",
            "events",
            "events_per_s",
            "wall_s",
            "peak_rss_bytes",
            "trace_hash",
            "late",
            "initial_joins",
            "later_joins",
            "steady_from_s",
            "steady_to_s",
            "steady_window_found",
            "run_control_msgs_per_node_per_s",
            "join_control_msgs",
            "join_control_msgs_per_join",
            "join_control_msgs_per_join_by_kind",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v["memory"].is_null(), "the memory report is asked for with --memory-report");
        assert!(v["timeline"][0].get("control_msgs_per_node_per_s").is_some());
        let dir = std::env::temp_dir().join(format!("wendy-sim-svg-{}", std::process::id()));
        wendy_sim::plot::write_svgs(&report, &dir).unwrap();
        for f in ["hops.svg", "delivery.svg", "correctness.svg", "control.svg"] {
            assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 100, "{f}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_repair_timeout_covers_the_detection_time_unless_given() {
        let timeout = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["wendy-sim"], args].concat()).unwrap();
            let cfg = config(&cli).unwrap();
            (cfg.repair_timeout, cfg.node.detection_time())
        };
        // At the defaults the bound (628 s) is longer than 600 s: the wait covers it.
        let (t, bound) = timeout(&[]);
        assert!(bound > Duration::from_secs(600));
        assert_eq!(t, bound + Duration::from_secs(30));
        // At a 1 s heartbeat the bound is about a minute: 600 s, as before.
        assert_eq!(timeout(&["--heartbeat-ms", "1000"]).0, Duration::from_secs(600));
        assert_eq!(timeout(&["--repair-timeout-s", "42"]).0, Duration::from_secs(42));
    }
}
