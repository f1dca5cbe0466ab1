//! Whole-network scenarios of issue 3, run on the real protocol through the simulator.
//!
//! Every test prints its seed and report, so a failure can be replayed with the CLI.

use std::time::Duration;

use wendy_sim::{run, ChurnConfig, NodeParams, Report, SessionDist, SimConfig};

fn show(name: &str, cfg: &SimConfig, r: &Report) {
    eprintln!("--- {name} (seed {}) ---\n{r}", cfg.seed);
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
    let cfg = SimConfig {
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
    let log16 = (2000f64).log(16.0);
    assert!(r.hops_mean < log16, "mean hops {} not below log16(N) = {log16:.2}", r.hops_mean);
}

fn crash(fraction: f64, seed: u64) {
    let cfg = SimConfig {
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

/// Median session of 30 minutes over one simulated hour. 100 nodes with a 5 s heartbeat
/// keep the event count (and the test's time) small; no target yet, the figures are reported.
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
}

/// The other faults run end to end (partition, hold, bounce, churn trace, regions, loss), and
/// the same seed replays them exactly.
#[test]
fn every_fault_runs_and_replays() {
    use wendy_sim::{parse_churn_trace, LossMode, NetConfig, SplitMode, SplitPlan};
    let base = SimConfig {
        nodes: 60,
        lookups: 1200,
        seed: 23,
        join_rate: 60.0,
        settle: Duration::from_secs(5),
        duration: Some(Duration::from_secs(30)),
        net: NetConfig { regions: 3, loss: 0.01, loss_mode: LossMode::Tcp, ..NetConfig::default() },
        ..SimConfig::default()
    };
    let trace = parse_churn_trace("time_s,node,state\n2,5,down\n6,5,up\n8,1000,up\n12,7,down\n").unwrap();
    let runs = [
        SimConfig {
            split: Some(SplitPlan {
                mode: SplitMode::Partition,
                fraction: 0.3,
                at: Duration::from_secs(5),
                length: Duration::from_secs(5),
            }),
            ..base.clone()
        },
        SimConfig {
            split: Some(SplitPlan {
                mode: SplitMode::Hold,
                fraction: 0.3,
                at: Duration::from_secs(5),
                length: Duration::from_secs(2),
            }),
            ..base.clone()
        },
        SimConfig { crash_fraction: 0.2, bounce_after: Some(Duration::from_secs(3)), ..base.clone() },
        SimConfig { churn_trace: trace, ..base.clone() },
        SimConfig { net: NetConfig { loss: 0.02, loss_mode: LossMode::Drop, ..NetConfig::default() }, ..base.clone() },
    ];
    for cfg in runs {
        let a = run(cfg.clone());
        let b = run(cfg.clone());
        assert_eq!(a.trace_hash, b.trace_hash, "{cfg:?}");
        assert_eq!(a.issued, 1200, "{cfg:?}");
        assert_eq!(a.correct + a.incorrect + a.lost, a.issued, "every lookup ended: {a}");
    }
}
