//! Thousands of short connections leave nothing behind: every task a connection starts is let
//! go of once it ends (wendy-tokio used to keep each finished task in a `JoinSet`, about
//! 1.7 KB per accepted connection, forever).
//!
//! One test in its own binary, so that the resident set it measures is this node's alone.
//! Connections are opened from 127.0.0.1 and reset on close (linger 0), so they leave no
//! TIME_WAIT sockets behind to exhaust the ephemeral ports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use wendy_proto::NodeId;
use wendy_tests::conformance::test_config;
use wendy_tests::smol_driver::SmolDriver;
use wendy_tests::tokio_driver::TokioDriver;
use wendy_tests::{Driver, TestNode};

/// Connections measured per driver.
const CONNECTIONS: usize = 20_000;
/// Connections open at once.
const AT_ONCE: usize = 50;
/// Largest growth of the resident set allowed over the measured connections. The leak this
/// guards against grew it by about 34 MiB per 20,000 connections; without it the allocator
/// still moves by a few MiB from run to run (measured: 0 to 4.5 MiB per round of 20,000).
const MAX_GROWTH: u64 = 12 << 20;

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Opens `n` connections to the node, `AT_ONCE` at a time, and resets each once the node has
/// accepted it (so the listen backlog never overflows: a dropped SYN costs a second).
fn churn(node: &dyn TestNode, n: usize) {
    let addr: SocketAddr = node.addr();
    let mut open = Vec::with_capacity(AT_ONCE);
    for i in 0..n {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_linger(Some(Duration::ZERO)).expect("linger");
        s.connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        open.push(s);
        if open.len() == AT_ONCE || i + 1 == n {
            let end = Instant::now() + Duration::from_secs(10);
            while node.metrics().expect("node runs").connections < open.len() && Instant::now() < end {
                std::thread::yield_now();
            }
            open.clear();
        }
    }
}

/// Waits until the node holds no connection and runs at most `tasks` tasks.
fn settle(node: &dyn TestNode, tasks: usize, driver: &str) -> wendy_driver::Metrics {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let m = node.metrics().expect("node runs");
        if m.connections == 0 && m.tasks <= tasks {
            return m;
        }
        assert!(Instant::now() < end, "[{driver}] connections never settled: {m:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check<D: Driver>(driver: &D) {
    let node = driver.start(test_config(NodeId::hash(D::NAME.as_bytes()))).expect("node starts");
    let idle = settle(&*node, usize::MAX, D::NAME).tasks;
    // Warm up the allocator and the runtime's pools.
    churn(&*node, 2_000);
    settle(&*node, idle, D::NAME);
    let before = rss();
    let t0 = Instant::now();
    churn(&*node, CONNECTIONS);
    let after_churn = settle(&*node, idle, D::NAME);
    let grown = rss().saturating_sub(before);
    eprintln!(
        "[{}] {CONNECTIONS} connections in {:.2} s: {} tasks before and after, resident set grew by {} KiB",
        D::NAME,
        t0.elapsed().as_secs_f64(),
        idle,
        grown >> 10
    );
    assert_eq!(after_churn.tasks, idle, "[{}] tasks left behind", D::NAME);
    assert!(
        grown < MAX_GROWTH,
        "[{}] resident set grew by {} KiB over {CONNECTIONS} connections",
        D::NAME,
        grown >> 10
    );
}

#[test]
fn many_short_connections_leave_nothing_behind() {
    check(&TokioDriver);
    check(&SmolDriver);
}
