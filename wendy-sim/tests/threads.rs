//! The simulator on several threads (`SimConfig::threads`): events in batches, the nodes'
//! work of a batch shared by the threads. A run must be the same for any number of threads
//! from two on, and as good as a run on one.

use std::time::Duration;

mod common;

use wendy_sim::{run, KvConfig, NodeParams, Report, Sim, SimConfig};

fn with_threads(cfg: &SimConfig, threads: usize) -> Report {
    run(SimConfig { threads, ..cfg.clone() })
}

/// Joins, lookups and a 20 % crash: two, three and four threads give one run, with every
/// lookup delivered at the right node (as on one thread).
#[test]
fn any_count_of_threads_from_two_gives_the_same_run() {
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 400,
        lookups: 4_000,
        lookup_rate: 400.0,
        join_rate: 200.0,
        seed: 31,
        settle: Duration::from_secs(5),
        ..SimConfig::default()
    };
    let one = with_threads(&cfg, 1);
    let two = with_threads(&cfg, 2);
    eprintln!("one thread:\n{one}\ntwo threads:\n{two}");
    assert_eq!(two.trace_hash, with_threads(&cfg, 3).trace_hash, "3 threads");
    assert_eq!(two.trace_hash, with_threads(&cfg, 4).trace_hash, "4 threads");
    for r in [&one, &two] {
        assert_eq!(r.join_failures, 0, "{r}");
        assert_eq!(r.correct, r.issued, "{r}");
    }
    // The batches hold the same events; only the order of events that cannot affect each
    // other differs, so the two runs count about the same work.
    let ratio = two.events as f64 / one.events as f64;
    assert!((0.9..1.1).contains(&ratio), "events: {} on one thread, {} on two", one.events, two.events);
    // And the reports measure them alike: a batch's events are handled a little out of time
    // order, which the population's integral over time must not mistake for time running back.
    for (what, a, b) in [
        ("whole run", one.run_control_msgs_per_node_per_s, two.run_control_msgs_per_node_per_s),
        ("while joining", one.join_control_msgs_per_node_per_s, two.join_control_msgs_per_node_per_s),
        ("measurement phase", one.control_msgs_per_node_per_s, two.control_msgs_per_node_per_s),
    ] {
        assert!(b > 0.8 * a && b < 1.25 * a, "control msgs/node/s {what}: {a:.2} on one thread, {b:.2} on two");
    }

    let crash = SimConfig { crash_fraction: 0.2, seed: 32, ..cfg };
    let a = with_threads(&crash, 2);
    assert_eq!(a.trace_hash, with_threads(&crash, 3).trace_hash, "{a}");
    assert_eq!(a.incorrect, 0, "{a}");
    assert_eq!(a.correct + a.lost, a.issued, "{a}");
}

/// The faults and the key-value workload on two threads: every lookup ends, and a run
/// replays with another thread count.
#[test]
fn faults_and_storage_run_on_threads_and_replay() {
    let base = SimConfig { threads: 2, ..common::fault_base() };
    let mut runs = common::fault_runs(&base);
    runs.push(SimConfig { kv: Some(KvConfig { keys: 200, ..KvConfig::default() }), ..base });
    for cfg in runs {
        let a = run(cfg.clone());
        let b = with_threads(&cfg, 3);
        assert_eq!(a.trace_hash, b.trace_hash, "{cfg:?}");
        assert_eq!(a.issued, 1200, "{cfg:?}");
        assert_eq!(a.correct + a.incorrect + a.lost, a.issued, "every lookup ended: {a}");
        if let Some(kv) = &a.kv {
            assert_eq!(kv.kv_readable, 200, "{a}");
        }
    }
}

/// `Sim::run_until` on threads stops at its instant: no event after it is processed.
#[test]
fn run_until_on_threads_processes_nothing_after_its_instant() {
    let cfg = SimConfig { threads: 2, ..SimConfig::default() };
    let mut sim = Sim::new(cfg);
    let hosts: Vec<u32> = (0..20).map(|_| sim.add_host()).collect();
    for &h in &hosts[1..] {
        sim.join(h, hosts[0]);
    }
    for ms in (10..5_000).step_by(7) {
        let t = wendy_proto::Instant::from_micros(ms * 1_000);
        sim.run_until(t);
        assert_eq!(sim.now(), t);
    }
    assert!(sim.events() > 1_000, "{} events", sim.events());
}

/// Lookups issued more often than the network's least latency go into the batches as jobs of
/// their origins, drawn in the batch's order: they no longer cut each batch short (a lookup a
/// batch of its own, and the batch before it ended there), and two and three threads still
/// give one run, every lookup at the right node.
#[test]
fn lookups_join_the_batches_and_replay() {
    let cfg = SimConfig {
        node: NodeParams { insecure_plaintext: true, ..NodeParams::default() },
        nodes: 200,
        lookups: 20_000,
        lookup_rate: 20_000.0,
        join_rate: 200.0,
        seed: 33,
        threads: 2,
        ..SimConfig::default()
    };
    let a = run(cfg.clone());
    assert_eq!(a.join_failures, 0, "{a}");
    assert_eq!(a.correct, a.issued, "{a}");
    // A lookup every 50 µs against batches of 1 ms: were each lookup a batch of its own, they
    // would add a batch each at least to the run without them (38,314 for these 20,000 when
    // they were; 3,491 now).
    let without = run(SimConfig { lookups: 0, ..cfg.clone() });
    let added = a.batches.saturating_sub(without.batches);
    assert!(
        without.batches > 0 && added * 3 < a.issued,
        "{added} batches more for {} lookups: {a}\n{without}",
        a.issued
    );
    let b = with_threads(&cfg, 3);
    assert_eq!(a.trace_hash, b.trace_hash, "{a}\n{b}");
    assert_eq!(a.batches, b.batches);
    assert_eq!(with_threads(&cfg, 1).batches, 0);
}
