//! Whole-network scenarios of issue 3, run on the real protocol through the simulator.
//!
//! Every test prints its seed and report, so a failure can be replayed with the CLI.

use std::time::Duration;

mod common;

use wendy_sim::{run, Build, ChurnConfig, LossMode, NetConfig, NodeParams, Report, SessionDist, SimConfig, Topology};

fn show(name: &str, cfg: &SimConfig, r: &Report) {
    eprintln!("--- {name} (seed {}) ---\n{r}", cfg.seed);
    // The control traffic by kind adds up to the total, crashed nodes' frames included.
    let sum: f64 = r.control_msgs_per_node_per_s_by_kind.values().sum();
    let total = r.control_msgs_per_node_per_s;
    assert!((sum - total).abs() <= 1e-9 * total.max(1.0), "{name}: by kind {sum} vs {total}");
    let acks = r.control_msgs_per_node_per_s_by_kind.get("ack").copied().unwrap_or(0.0);
    let without = r.control_msgs_per_node_per_s_without_acks;
    assert!((without + acks - total).abs() <= 1e-9 * total.max(1.0), "{name}: {without} + acks {acks} vs {total}");
    if total > 0.0 && r.steady_window_found {
        // (A probe over a new connection is its handshake: a window of a few seconds after
        // the joins may hold no `Ping` nor heartbeat.)
        let by_kind = &r.control_msgs_per_node_per_s_by_kind;
        assert!(["ping", "heartbeat"].iter().any(|k| by_kind.contains_key(*k)), "{name}: no heartbeat counted");
    }
    // So does the join phase's, per initial join.
    let per_join: f64 = r.join_control_msgs_per_join_by_kind.values().sum();
    let expected = r.join_control_msgs_per_join;
    assert!((per_join - expected).abs() <= 1e-9 * expected.max(1.0), "{name}: join by kind {per_join} vs {expected}");
    if r.initial_joins.joins > 0 {
        assert!(r.join_control_msgs_per_join_by_kind.contains_key("join_request"), "{name}: no join request counted");
    }
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    let cfg = SimConfig {
        nodes: 150,
        lookups: 1500,
        join_rate: 100.0,
        settle: Duration::from_secs(5),
        ..SimConfig::default()
    };
    let a = run(cfg.clone());
    let b = run(cfg.clone());
    let c = run(SimConfig { seed: 2, ..cfg.clone() });
    show("determinism", &cfg, &a);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.without_machine_figures(), b.without_machine_figures());
    assert_eq!(a.without_machine_figures().to_json(), b.without_machine_figures().to_json());
    assert_ne!(a.trace_hash, c.trace_hash, "seed 2 should give another run");
    assert_eq!(a.correct, 1500);
}

#[test]
fn static_network_of_2000_nodes_routes_every_lookup_correctly() {
    // Plaintext: 2,000 nodes make ~100,000 Noise handshakes (0.7 ms of CPU each); the
    // smaller scenarios below run encrypted.
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 2000,
        lookups: 5000,
        seed: 7,
        join_rate: 200.0,
        settle: Duration::from_secs(10),
        lookup_rate: 1000.0,
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("static 2000", &cfg, &r);
    assert_eq!(r.joins, 1999, "every node joined through the join protocol");
    assert_eq!(r.issued, 5000);
    assert_eq!(r.delivered, 5000, "100% delivered");
    assert_eq!(r.correct, 5000, "100% correct");
    assert_eq!((r.lost, r.lost_origin_crashed), (0, 0));
    let log16 = (2000f64).log(16.0);
    assert!(r.hops_mean < log16, "mean hops {} not below log16(N) = {log16:.2}", r.hops_mean);
}

/// Many concurrent joins on a sphere used to leave interleaved leaf sets: two nodes that each
/// believed they were the root of the same keys (252 of 3,000 lookups at the wrong node with
/// this seed before `Locate`; 53-67 of 100,000 at 10,000 nodes with L = 32).
#[test]
fn concurrent_joins_leave_one_root_per_key() {
    let cfg = SimConfig {
        nodes: 200,
        lookups: 3000,
        seed: 1,
        join_rate: 500.0,
        net: NetConfig { topology: Topology::Sphere, ..NetConfig::default() },
        node: NodeParams { leaf_set_size: 8, ..NodeParams::default() },
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("concurrent joins", &cfg, &r);
    assert_eq!(r.joins, 199);
    assert_eq!((r.delivered, r.incorrect), (3000, 0), "every lookup at its one root");
}

#[test]
fn dropped_frames_never_make_a_neighbour_deliver_for_a_live_root() {
    // One lost probe, handshake or ack frame used to make a live leaf look dead (a refused
    // dial or one unanswered probe was a failure) or made the rerouting node skip a suspected
    // root: on main before the fix this run delivered 8 lookups at the wrong node.
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 300,
        lookups: 9000,
        lookup_rate: 300.0,
        seed: 12,
        net: NetConfig { loss: 0.01, loss_mode: LossMode::Drop, ..NetConfig::default() },
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("1% dropped frames", &cfg, &r);
    assert_eq!(r.incorrect, 0, "no lookup delivered at a node that is not its root");
    assert!(r.delivered >= 8950, "delivered {} of 9000", r.delivered);
}

#[test]
fn five_percent_dropped_frames_on_encrypted_links_deliver_nothing_at_the_wrong_node() {
    // An encrypted stream that loses a frame is broken for good, so at 5 % a probe over the
    // connection that lost the frame, or over one fresh connection, fails often. Before the
    // fix this run delivered 322 of 20,000 lookups at the wrong node: live leaf-set members
    // were declared failed after three probes (two over the broken connection), and a node
    // whose join had failed was adopted by the ring that had heard of it and took every key
    // it was sent as a ring of one.
    let cfg = SimConfig {
        nodes: 300,
        lookups: 6000,
        lookup_rate: 1000.0,
        seed: 1,
        net: NetConfig { loss: 0.05, loss_mode: LossMode::Drop, ..NetConfig::default() },
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("5% dropped frames, encrypted", &cfg, &r);
    assert_eq!(r.incorrect, 0, "no lookup delivered at a node that is not its root");
    assert!(r.delivered * 1000 >= 6000 * 999, "delivered {} of 6000 (target 99.9 %)", r.delivered);
}

fn crash(fraction: f64, seed: u64) {
    crash_in(Build::Joins, fraction, seed);
}

fn crash_in(build: Build, fraction: f64, seed: u64) {
    // A 1 s heartbeat (wendy-proto's ratios: table members probed after at most 60 s of
    // silence, `detection_time()` 70 s) so that the tables are clean within the repair timeout;
    // at the 10 s default the same repair takes up to ten minutes of simulated time.
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, heartbeat: Duration::from_secs(1), ..NodeParams::default() },
        build,
        nodes: 500,
        lookups: 12_000,
        seed,
        join_rate: 100.0,
        settle: Duration::from_secs(10),
        duration: Some(Duration::from_secs(120)),
        crash_fraction: fraction,
        crash_at: Some(Duration::from_secs(15)),
        // Bounds the test's time if the protocol stops repairing (it then fails below).
        repair_timeout: Duration::from_secs(150),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show(&format!("crash {:.0}%", fraction * 100.0), &cfg, &r);
    let c = r.crash.as_ref().expect("a crash report");
    assert_eq!(c.crashed, (500.0 * fraction) as u64);
    let repair = c.repair_s.expect("the ring repairs itself");
    eprintln!("crash {:.0}%: repair took {repair:.1}s of simulated time", fraction * 100.0);
    // The documented bound: no table names a crashed node after `detection_time()` (the
    // simulator looks every `check_interval`). A dead node learned second-hand from a peer
    // that had not noticed yet is probed before it is trusted or passed on, and the peer
    // passes on only members it does not suspect: `detection_time()` counts that path.
    let detection = detection_time(&cfg);
    let clean = c.tables_clean_s.expect("tables clean");
    assert!(
        clean <= (detection + cfg.check_interval).as_secs_f64(),
        "tables clean {clean:.1}s after the crash; detection_time() is {detection:?}"
    );
    assert!(c.after.issued >= 500, "too few lookups after the repair ({}) to judge it", c.after.issued);
    assert_eq!(c.after.correct, c.after.issued, "after repair, 100% correct again: {:?}", c.after);
}

#[test]
fn crash_10_percent_then_repair() {
    crash(0.10, 11);
}

#[test]
fn crash_30_percent_then_repair() {
    crash(0.30, 13);
}

/// Nodes started as members from the simulator's tables (`--build tables`) are ordinary
/// members afterwards: they detect and repair a crash within the same bounds.
#[test]
fn crash_10_percent_then_repair_in_a_ring_built_from_tables() {
    crash_in(Build::Tables, 0.10, 12);
}

/// `--build tables`: 3,000 nodes started from the simulator's tables, with no join traffic,
/// route every lookup to the right node in about log16(N) hops, and the same seed gives the
/// same run.
#[test]
fn a_ring_built_from_tables_routes_every_lookup_correctly() {
    let cfg = SimConfig {
        build: Build::Tables,
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 3000,
        lookups: 6000,
        seed: 5,
        settle: Duration::from_secs(5),
        lookup_rate: 1000.0,
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("tables 3000", &cfg, &r);
    assert_eq!(r.build, "tables");
    assert_eq!(r.join_control_msgs_per_join, 0.0, "no join traffic");
    assert_eq!((r.issued, r.delivered, r.correct), (6000, 6000, 6000), "100% delivered and correct");
    let log16 = (3000f64).log(16.0);
    assert!(r.hops_mean < log16, "mean hops {} not below log16(N) = {log16:.2}", r.hops_mean);
    assert!(r.stretch_mean < 3.0, "stretch {}: the cells hold near nodes", r.stretch_mean);
    let again = run(cfg.clone());
    assert_eq!(r.trace_hash, again.trace_hash);
    assert_eq!(r.without_machine_figures(), again.without_machine_figures());
}

/// Issue 9: 1,000 lookups a second through a crash of 30 % of 300 nodes. A lookup issued after
/// the crash can only be lost by the protocol (no live node holds it when its holder dies),
/// so none may be. The rerouting node used to exclude only the hop that had just failed: it
/// sent a message back and forth between two dead members until its reroutes ran out (86 of
/// the 15,085 lookups issued after the crash at this seed, 70 of them reported
/// undeliverable). It now routes around every suspect, and waits for one that is the root.
#[test]
fn lookups_issued_after_a_30_percent_crash_are_all_delivered() {
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, heartbeat: Duration::from_secs(1), ..NodeParams::default() },
        nodes: 300,
        lookups: 20_000,
        lookup_rate: 1000.0,
        seed: 11,
        crash_fraction: 0.3,
        crash_at: Some(Duration::from_secs(5)),
        repair_timeout: Duration::from_secs(150),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("lookups through a 30% crash", &cfg, &r);
    let c = r.crash.as_ref().expect("a crash report");
    assert_eq!(c.crashed, 90);
    assert_eq!(r.incorrect, 0, "no lookup delivered at a node that is not its root");
    assert!(c.during.issued > 10_000, "lookups continued through the crash: {:?}", c.during);
    assert_eq!(c.during.lost, 0, "lookups issued after the crash lost: {:?}", c.during);
    assert_eq!(r.node_errors.get("undeliverable"), None, "reported undeliverable: {:?}", r.node_errors);
    // Those in flight at the crash are lost only with a node that held them: a few. How many
    // depends on where the lookups stand at the crash: at seeds 11-15 of this run, 5, 7, 6, 6
    // and 7 when candidates were pinged over connections of their own, 11, 6, 7, 9 and 3 when
    // a candidate's dial is timed instead (`time_candidate`).
    assert!(c.before.lost <= 15, "lost before the crash: {:?}", c.before);
    eprintln!("lost with their origin crashed: {} of {}", r.lost_origin_crashed, r.lost);
    assert!(r.lost_origin_crashed <= r.lost);
    let detection = detection_time(&cfg);
    let clean = c.tables_clean_s.expect("tables clean");
    assert!(clean <= (detection + cfg.check_interval).as_secs_f64(), "tables clean {clean:.1}s after the crash");
}

/// After a crash of 30 % of 300 nodes, no table names a crashed node after
/// `detection_time()`, at seeds where it once did: a node still holding a crashed routing-table
/// entry 62 s after the crash (unsuspected, its silence under `table_probe_interval`) passed
/// it on, and the node that learned it probed it for 5 s more (tables clean 68.0 s after the
/// crash at seed 22, bound 67.5 s). A node now passes on only members it has heard from and
/// does not suspect; `detection_time()` counts a second-hand learner's probes. This checks the
/// documented bound, which the change also widened (70.5 s here): the passing on itself is
/// checked by wendy-proto's `only_members_we_vouch_for_are_passed_on`.
#[test]
fn no_table_names_a_crashed_node_after_detection_time() {
    for seed in [19, 22] {
        let cfg = SimConfig {
            node: NodeParams { insecure_plaintext: true, heartbeat: Duration::from_secs(1), ..NodeParams::default() },
            nodes: 300,
            lookups: 3_000,
            lookup_rate: 100.0,
            seed,
            crash_fraction: 0.3,
            crash_at: Some(Duration::from_secs(5)),
            repair_timeout: Duration::from_secs(150),
            ..SimConfig::default()
        };
        let r = run(cfg.clone());
        show(&format!("tables clean after a 30% crash (seed {seed})"), &cfg, &r);
        assert_eq!(r.incorrect, 0);
        let detection = detection_time(&cfg);
        let clean = r.crash.as_ref().and_then(|c| c.tables_clean_s).expect("tables clean");
        assert!(
            clean <= (detection + cfg.check_interval).as_secs_f64(),
            "seed {seed}: tables clean {clean:.1}s after the crash; detection_time() is {detection:?}"
        );
    }
}

/// `Config::detection_time()` of the nodes `cfg` runs.
fn detection_time(cfg: &SimConfig) -> Duration {
    let any = wendy_proto::Config::with_trusted_id(
        wendy_proto::NodeId::from_u128(1),
        std::net::SocketAddr::from(([10, 0, 0, 1], 1)),
    );
    cfg.node.apply(any).detection_time()
}

/// Median session of 30 minutes over one simulated hour. 100 nodes with a 5 s heartbeat
/// keep the event count (and the test's time) small. Measured at this seed: 99.03% of the
/// 3,600 lookups delivered and correct (35 lost, 0 incorrect), mean live population 86.8;
/// the bounds below leave room for a protocol change without hiding a regression.
#[test]
fn churn_with_30_minute_median_session_over_an_hour() {
    let cfg = SimConfig {
        nodes: 100,
        lookups: 3600,
        seed: 17,
        join_rate: 50.0,
        settle: Duration::from_secs(20),
        duration: Some(Duration::from_secs(3600)),
        node: NodeParams { heartbeat: Duration::from_secs(5), ..NodeParams::default() },
        churn: Some(ChurnConfig {
            median_session: Duration::from_secs(1800),
            dist: SessionDist::Exponential,
            graceful: 0.0,
        }),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("churn 30 min median, 1 h", &cfg, &r);
    let ch = r.churn.as_ref().expect("a churn report");
    eprintln!(
        "churn: delivered {:.2}%, correct {:.2}% ({} arrivals, {} crashes)",
        100.0 * r.delivery_ratio,
        100.0 * r.correct_ratio,
        ch.arrivals,
        ch.crashes
    );
    assert!(ch.arrivals > 20 && ch.crashes > 20, "churn happened: {ch:?}");
    assert!(r.issued >= 3500);
    assert!(r.correct_ratio >= 0.98, "correct {:.4} below 98% under churn", r.correct_ratio);
    assert!(r.incorrect <= 5, "{} incorrect deliveries under churn", r.incorrect);
    assert!((70.0..130.0).contains(&ch.mean_live), "the population drifted: mean live {}", ch.mean_live);
    assert_eq!(r.initial_joins.joins, 99, "the initial joins are counted apart from churn arrivals");
    assert_eq!(r.later_joins.joins + r.initial_joins.joins, r.joins);
    assert!(r.later_joins.joins > 20, "churn arrivals joined: {:?}", r.later_joins);
    assert!(r.lost_origin_crashed <= r.lost, "{} of {} lost with their origin", r.lost_origin_crashed, r.lost);
}

/// Under heavy churn many lookups that are never delivered were issued by a node that
/// crashed with them still in hand: the report counts those apart (`lost_origin_crashed`),
/// so that what the protocol lost can be told from what left with its origin. 100 nodes, a
/// 2-minute median session: 45 lost, 13 of them with their origin, at this seed.
#[test]
fn lookups_lost_with_their_origin_are_counted_apart() {
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 100,
        lookups: 6000,
        seed: 1,
        duration: Some(Duration::from_secs(600)),
        churn: Some(ChurnConfig {
            median_session: Duration::from_secs(120),
            dist: SessionDist::Exponential,
            graceful: 0.0,
        }),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("churn 2 min median", &cfg, &r);
    assert!(r.lost_origin_crashed > 0, "some lookups left with their origin: {} lost", r.lost);
    assert!(r.lost_origin_crashed <= r.lost, "{} of {} lost", r.lost_origin_crashed, r.lost);
    assert_eq!(r.incorrect, 0);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("the report is JSON");
    assert_eq!(json["lost_origin_crashed"], r.lost_origin_crashed);
}

/// The steady-state control rate, its window, and the per-bucket rates of the time series.
fn control_run(duration_s: u64, crash_after: bool) -> (SimConfig, Report) {
    let cfg = SimConfig {
        nodes: 200,
        lookups: duration_s * 20,
        seed: 5,
        join_rate: 100.0,
        duration: Some(Duration::from_secs(duration_s)),
        // A crash just after the measurement phase: its repair traffic falls in the tail.
        crash_fraction: if crash_after { 0.3 } else { 0.0 },
        crash_at: crash_after.then(|| Duration::from_millis(duration_s * 1000 + 500)),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show(&format!("control {duration_s} s{}", if crash_after { ", crash after" } else { "" }), &cfg, &r);
    (cfg, r)
}

/// Measured at seed 5 (200 static nodes): 0.45 msgs/node/s over the 300 s run's window and 0.44
/// over the 600 s run's, both from 144 s (0.57 and 0.50 when the window began 40 s after the
/// joins, inside the joiners' first two minutes of early exchanges; with the 1 s heartbeat and
/// 10 s table probes of earlier versions, 24.83 and 24.91 over 60 s and 180 s runs).
#[test]
fn steady_control_rate_does_not_depend_on_the_run_length_or_its_tail() {
    // Runs of 5 and 10 minutes: a node's first minutes (rows asked of near nodes at every
    // leaf-set exchange, hearsay probed, the asks backing off) weigh on a short window.
    let (_, short) = control_run(300, false);
    let (_, long) = control_run(600, false);
    let (_, crashed) = control_run(300, true);
    let (a, b) = (short.control_msgs_per_node_per_s, long.control_msgs_per_node_per_s);
    assert!((a - b).abs() <= 0.2 * b, "steady rate {a:.2} (60 s) vs {b:.2} (180 s)");
    // The window starts after the joins' connections have idled out and closed.
    let idle_s = NodeParams::default().idle_timeout.as_secs_f64();
    assert!(short.steady_from_s >= short.join_phase_s + idle_s, "window from {}", short.steady_from_s);
    assert!(short.steady_to_s <= short.sim_s, "the window stops before the wait at the end");
    assert!(short.steady_window_found && long.steady_window_found);
    // Same run until the crash, which comes after the window: the same steady rate.
    assert_eq!(crashed.steady_to_s, short.steady_to_s);
    assert_eq!(crashed.control_msgs_per_node_per_s, a, "the crash after the window leaked into it");
    assert!(crashed.run_control_msgs_per_node_per_s != short.run_control_msgs_per_node_per_s);
    assert!(short.join_control_msgs > 0 && short.join_control_msgs_per_join > 0.0);
}

/// Measured at seed 5: the first bucket's rate is 58 msgs/node/s (the old plot divided its
/// 2,416 messages by the one node alive at 0 s: 2,416), the highest bucket 204, the join
/// phase's mean 128.
#[test]
fn each_bucket_is_divided_by_its_own_live_nodes() {
    let (cfg, r) = control_run(60, false);
    let join_rate = r.join_control_msgs_per_node_per_s;
    let first = r.timeline[0];
    assert!(first.control_msgs > 0);
    assert!(first.live_mean > 1.0 && first.live_mean < 100.0, "first bucket mean live {}", first.live_mean);
    assert!(
        first.control_msgs_per_node_per_s <= 2.0 * join_rate,
        "first bucket {:.0} msgs/node/s against {join_rate:.0} over the join phase",
        first.control_msgs_per_node_per_s
    );
    for b in &r.timeline {
        assert!(b.control_msgs_per_node_per_s <= 5.0 * join_rate, "bucket at {} s: {:?}", b.t_s, b);
    }
    let full = &r.timeline[r.timeline.len() / 2];
    assert!((full.live_mean - cfg.nodes as f64).abs() < 1.0, "mid-run mean live {}", full.live_mean);
}

/// A lookup counted lost at its timeout and delivered later is a late delivery, not a loss
/// (nor a duplicate). A 20 ms timeout makes most lookups late; a crash adds lookups in flight.
#[test]
fn lookups_delivered_after_their_timeout_are_not_lost() {
    let cfg = SimConfig {
        nodes: 100,
        lookups: 1000,
        seed: 9,
        join_rate: 100.0,
        duration: Some(Duration::from_secs(20)),
        lookup_timeout: Duration::from_millis(20),
        crash_fraction: 0.1,
        crash_at: Some(Duration::from_secs(5)),
        repair_timeout: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let r = run(cfg.clone());
    show("late deliveries", &cfg, &r);
    assert!(r.late > 100, "most lookups take longer than 20 ms: {} late", r.late);
    assert_eq!(r.duplicates, 0, "a late delivery counted as a duplicate");
    assert_eq!(r.delivered + r.lost, r.issued);
    assert!(r.lost_origin_crashed <= r.lost, "{} of {} lost with their origin", r.lost_origin_crashed, r.lost);
    // Only lookups never delivered are lost: those still in flight at the end of the run, and
    // those the crash took with it.
    assert!(r.lost < r.issued / 20, "{} of {} lost", r.lost, r.issued);
    let c = r.crash.as_ref().expect("a crash report");
    let windows = [c.before, c.during, c.after];
    assert_eq!(windows.iter().map(|w| w.lost).sum::<u64>(), r.lost);
    assert_eq!(windows.iter().map(|w| w.delivered).sum::<u64>(), r.delivered);
    let timeline_lost: u64 = r.timeline.iter().map(|b| b.lookups.lost).sum();
    assert_eq!(timeline_lost, r.lost);
}

/// The other faults run end to end (partition, hold, bounce, churn trace, regions, loss), and
/// the same seed replays them exactly.
#[test]
fn every_fault_runs_and_replays() {
    let runs = common::fault_runs(&common::fault_base());
    for cfg in runs {
        let a = run(cfg.clone());
        let b = run(cfg.clone());
        assert_eq!(a.trace_hash, b.trace_hash, "{cfg:?}");
        assert_eq!(a.issued, 1200, "{cfg:?}");
        assert_eq!(a.correct + a.incorrect + a.lost, a.issued, "every lookup ended: {a}");
    }
}
