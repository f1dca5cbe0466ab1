//! `wendy put`, `wendy get` and `wendy delete` against three `wendy node` processes: a value
//! put through one node is read through another; a delete makes it "not found"; a value over
//! the limit is refused as too large; nodes killed and restarted from their data directories
//! serve their values again. Every wait has a deadline; a few seconds in all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WENDY: &str = env!("CARGO_BIN_EXE_wendy");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(dir: &Path, listen: SocketAddr, metrics: SocketAddr, bootstrap: Option<SocketAddr>) -> Proc {
    let mut cmd = Command::new(WENDY);
    cmd.args(["node", "--listen", &listen.to_string(), "--metrics", &metrics.to_string()])
        .args(["--replicas", "2", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", &b.to_string()]);
    }
    Proc(cmd.spawn().expect("wendy node starts"))
}

fn wendy(args: &[&str]) -> Output {
    Command::new(WENDY).args(args).stdin(Stdio::null()).output().expect("wendy runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// The leaf-set size a node's `/metrics` shows.
fn leaf_set_size(metrics: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines().find_map(|l| l.strip_prefix("wendy_leaf_set_size ")?.parse().ok())
}

/// Starts the three nodes and waits until each has the other two in its leaf set.
fn ring(root: &Path, addrs: &[SocketAddr]) -> Vec<Proc> {
    let mut nodes = vec![node(&root.join("0"), addrs[0], addrs[3], None)];
    std::thread::sleep(Duration::from_millis(300));
    for i in 1..3 {
        nodes.push(node(&root.join(i.to_string()), addrs[i], addrs[3 + i], Some(addrs[0])));
    }
    let end = Instant::now() + Duration::from_secs(20);
    while !(3..6).all(|i| leaf_set_size(addrs[i]) == Some(2)) {
        assert!(Instant::now() < end, "the three nodes did not form a ring");
        std::thread::sleep(Duration::from_millis(100));
    }
    nodes
}

/// Runs `wendy` until it succeeds (the ring may still be forming); panics after `limit`.
fn until_ok(limit: Duration, args: &[&str]) -> Output {
    let end = Instant::now() + limit;
    loop {
        let out = wendy(args);
        if out.status.success() {
            return out;
        }
        assert!(Instant::now() < end, "wendy {args:?} kept failing: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn put_get_delete_through_running_nodes() {
    let root = std::env::temp_dir().join(format!("wendy-store-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ports: Vec<TcpListener> = (0..6).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(|l| l.local_addr().expect("bound")).collect();
    drop(ports);
    let a = |i: usize| addrs[i].to_string();
    let nodes = ring(&root, &addrs);
    let limit = Duration::from_secs(15);

    let out = until_ok(limit, &["put", "--via", &a(1), "colour", "blue"]);
    assert!(text(&out.stdout).starts_with("stored colour"), "{}", text(&out.stdout));
    let out = until_ok(limit, &["get", "--via", &a(2), "colour"]);
    assert_eq!(text(&out.stdout), "blue");

    // Too large: the default limit is 64 KiB.
    let big = "x".repeat(70_000);
    let out = wendy(&["put", "--via", &a(0), "big", &big]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("too large"), "{}", text(&out.stderr));

    // Killed and restarted from their data directories, the nodes serve what they held.
    until_ok(limit, &["put", "--via", &a(0), "shape", "round"]);
    // A write is on disk within one commit of its acknowledgement (see RedbBackend).
    std::thread::sleep(Duration::from_millis(500));
    drop(nodes);
    let nodes = ring(&root, &addrs);
    let out = until_ok(limit, &["get", "--via", &a(2), "shape"]);
    assert_eq!(text(&out.stdout), "round");

    until_ok(limit, &["delete", "--via", &a(0), "colour"]);
    let out = wendy(&["get", "--via", &a(1), "colour"]);
    assert!(!out.status.success());
    assert_eq!(text(&out.stderr), "error: not found");

    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
}
