//! Faults across real processes: six `wendy node` processes on distinct loopback addresses
//! (127.0.0.2 ... stand in for hosts), in two regions whose members talk over local addresses
//! (127.1.0.x) and reach the other region over global ones (127.0.0.x). Checked through
//! `wendy send`, the nodes' JSON logs and their `/metrics`: every message delivered once, at
//! the numerically closest live node; `kill -9` detected and routed around; SIGSTOP/SIGCONT;
//! SIGTERM leaves gracefully; a restart with the same identity rejoins with the same id; a
//! wrong secret is refused with a clear message; many connections leave the resident set flat.
//!
//! One test, bounded in time (every wait has a deadline); it takes about half a minute.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use wendy_proto::{Config, NodeId};

const WENDY: &str = env!("CARGO_BIN_EXE_wendy");

struct Node {
    n: usize,
    region: &'static str,
    port: u16,
    metrics: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    id: NodeId,
}

/// `n` distinct free ports on every loopback address (bound on 0.0.0.0 together for a moment,
/// then released).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("0.0.0.0:0").expect("a free port")).collect();
    held.iter().map(|l| l.local_addr().expect("bound").port()).collect()
}

impl Node {
    fn global(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 2 + self.n as u8], self.port))
    }

    fn local(&self) -> SocketAddr {
        SocketAddr::from(([127, 1, 0, 2 + self.n as u8], self.port))
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log.json")
    }

    fn start(&mut self, root: &Path, secret: &Path, bootstrap: Option<SocketAddr>) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("log file");
        let mut cmd = Command::new(WENDY);
        cmd.arg("node")
            .args(["--listen", &format!("0.0.0.0:{}", self.port)])
            .args(["--advertise", &self.global().to_string()])
            .args(["--region", self.region, "--local-advertise", &self.local().to_string()])
            .args(["--metrics", &self.metrics.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--secret-file")
            .arg(secret)
            .args(["--log-format", "json"])
            // The setting is each node's own: half the ring keeps only its leaf set's
            // connections open (in a ring this small, every member is in the leaf set).
            .args(["--member-connections", if self.n % 2 == 1 { "leaf-set" } else { "kept" }])
            // `WENDY_TEST_LOG=debug` shows every connection's life in the nodes' logs.
            .env("RUST_LOG", std::env::var("WENDY_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", &b.to_string()]);
        }
        self.child = Some(cmd.spawn().expect("wendy node starts"));
        let dir = self.dir.clone();
        // The identity file holds the node's secret key; its id is derived from the public key.
        self.id = wait(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(dir.join("identity")).ok()?;
            let hex = text.trim();
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<_>>()?;
            Some(wendy_proto::Identity::from_secret(bytes.try_into().ok()?).node_id())
        });
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32).expect("pid")
    }

    fn signal(&self, sig: Signal) {
        kill_process(self.pid(), sig).expect("signal");
    }

    fn metric(&self, name: &str) -> Option<u64> {
        let text = scrape(self.metrics)?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Key of every message delivered here, from the log.
    fn delivered(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "delivered")
            .filter_map(|v| v["key"].as_str().map(str::to_owned))
            .collect()
    }

    fn resident(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().as_raw_nonzero())).expect("proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Polls `f` until it gives a value; panics after `limit`, naming the caller's line.
#[track_caller]
fn wait<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(via: SocketAddr, secret: &Path, key: &str, text: &str) -> std::process::Output {
    Command::new(WENDY)
        .args(["send", "--via", &via.to_string(), "--secret-file"])
        .arg(secret)
        .args([key, text, "--timeout", "5"])
        .stdin(Stdio::null())
        .output()
        .expect("wendy send runs")
}

/// Sends a message towards `key` through `via` and waits for its delivery; the node it
/// reached.
fn deliver(nodes: &[Node], via: usize, secret: &Path, key: NodeId) -> usize {
    let k = key.to_string();
    let out = send(nodes[via].global(), secret, &k, "hello");
    assert!(out.status.success(), "wendy send failed: {}", String::from_utf8_lossy(&out.stderr));
    wait(Duration::from_secs(10), || {
        let at: Vec<usize> = nodes.iter().filter(|n| n.delivered().contains(&k)).map(|n| n.n).collect();
        match at.as_slice() {
            [] => None,
            [one] => Some(*one),
            many => panic!("{k} delivered at {many:?}"),
        }
    })
}

fn root(nodes: &[Node], live: &[usize], key: NodeId) -> usize {
    *live.iter().min_by(|a, b| key.cmp_closeness(nodes[**a].id, nodes[**b].id)).expect("a live node")
}

#[test]
fn six_processes_two_regions_and_their_faults() {
    let root_dir = std::env::temp_dir().join(format!("wendy-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root_dir);
    std::fs::create_dir_all(&root_dir).expect("temp dir");
    let secret = root_dir.join("secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    let ports = free_ports(12);
    let mut nodes: Vec<Node> = (0..6)
        .map(|n| Node {
            n,
            region: if n < 3 { "a" } else { "b" },
            port: ports[n],
            metrics: SocketAddr::from(([127, 0, 0, 2 + n as u8], ports[6 + n])),
            dir: root_dir.join(format!("n{n}")),
            child: None,
            id: NodeId::from_u128(0),
        })
        .collect();
    for n in &nodes {
        std::fs::create_dir_all(&n.dir).expect("node dir");
    }
    let t0 = Instant::now();
    nodes[0].start(&root_dir, &secret, None);
    wait(Duration::from_secs(10), || nodes[0].metric("wendy_ready").filter(|v| *v == 1));
    let first = nodes[0].global();
    for n in nodes.iter_mut().skip(1) {
        n.start(&root_dir, &secret, Some(first));
    }
    for n in &nodes {
        wait(Duration::from_secs(20), || n.metric("wendy_leaf_set_size").filter(|v| *v == 5));
        assert_eq!(n.metric("wendy_ready"), Some(1));
    }
    eprintln!("6 nodes joined in {:.1} s", t0.elapsed().as_secs_f64());

    // Region members are known by local addresses, the others by global ones.
    wait(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(nodes[0].dir.join("peers")).ok()?;
        let peers: Vec<SocketAddr> = text.lines().filter_map(|l| l.parse().ok()).collect();
        let want: Vec<SocketAddr> =
            nodes[1..].iter().map(|n| if n.region == "a" { n.local() } else { n.global() }).collect();
        want.iter().all(|w| peers.contains(w)).then_some(())
    });

    // Every message once, at the numerically closest node, whichever node it enters by.
    let mut live: Vec<usize> = (0..6).collect();
    for i in 0..12u8 {
        let key = NodeId::hash(&[i]);
        let at = deliver(&nodes, usize::from(i) % 6, &secret, key);
        assert_eq!(at, root(&nodes, &live, key), "message {i} towards {key}");
    }
    let delivered: u64 = nodes.iter().map(|n| n.metric("wendy_messages_delivered_total").expect("metric")).sum();
    // Each message is delivered twice in the counters: as the relay request at the node
    // `wendy send` went through (a direct message), then at its key's root.
    assert_eq!(delivered, 24);

    // kill -9: detected by every survivor, and its keys go to the next closest node.
    nodes[4].signal(Signal::KILL);
    let _ = nodes[4].child.as_mut().map(Child::wait);
    live.retain(|&i| i != 4);
    let t = Instant::now();
    // The documented bound (`wendy node` runs the default timers). It takes about 8 s: each
    // leaf-set member sees its connection reset and probes the node at once.
    let bound = Config::with_trusted_id(NodeId::from_u128(1), first).leaf_detection_time();
    for &i in &live {
        wait(bound, || nodes[i].metric("wendy_leaf_set_size").filter(|v| *v == 4));
    }
    eprintln!("kill -9 detected by every survivor in {:.1} s", t.elapsed().as_secs_f64());
    let key = nodes[4].id;
    assert_eq!(deliver(&nodes, 0, &secret, key), root(&nodes, &live, key));

    // SIGSTOP for a moment (shorter than failure detection), then SIGCONT: the node still
    // gets its messages.
    nodes[2].signal(Signal::STOP);
    let key = NodeId::from_u128(nodes[2].id.as_u128().wrapping_add(1));
    let k = key.to_string();
    let out = send(nodes[1].global(), &secret, &k, "while stopped");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    nodes[2].signal(Signal::CONT);
    wait(Duration::from_secs(10), || nodes[root(&nodes, &live, key)].delivered().contains(&k).then_some(()));
    // Nothing waits for the thawed node any more: whoever suspected it has heard from it.
    for &i in &live {
        wait(Duration::from_secs(10), || nodes[i].metric("wendy_pending_messages").filter(|v| *v == 0));
    }

    // SIGTERM: leaves gracefully (announced: the others drop it at once) and exits.
    let t = Instant::now();
    nodes[5].signal(Signal::TERM);
    let status = wait(Duration::from_secs(10), || nodes[5].child.as_mut().and_then(|c| c.try_wait().ok().flatten()));
    assert!(status.success(), "SIGTERM exit {status:?}");
    let left = std::fs::read_to_string(nodes[5].log()).expect("log");
    assert!(left.contains("left the ring"), "no graceful leave in the log");
    for &i in live.iter().filter(|&&i| i != 5) {
        wait(Duration::from_secs(3), || nodes[i].metric("wendy_leaf_set_size").filter(|v| *v == 3));
    }
    eprintln!("SIGTERM: left and seen by every node in {:.1} s", t.elapsed().as_secs_f64());

    // Restart with the same data directory, without a bootstrap: rejoins through the peers it
    // remembered, with the same id.
    let id = nodes[5].id;
    nodes[5].child = None;
    nodes[5].start(&root_dir, &secret, None);
    assert_eq!(nodes[5].id, id);
    wait(Duration::from_secs(15), || nodes[5].metric("wendy_leaf_set_size").filter(|v| *v == 4));
    assert_eq!(deliver(&nodes, 3, &secret, id), 5);

    // A wrong secret: refused at once, and the command says why.
    let bad = root_dir.join("bad");
    std::fs::write(&bad, "wrong").expect("bad secret");
    let t = Instant::now();
    let out = Command::new(WENDY)
        .args(["node", "--listen", "127.0.0.20:0", "--bootstrap", &first.to_string(), "--secret-file"])
        .arg(&bad)
        .stdin(Stdio::null())
        .output()
        .expect("wendy node runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("rejected by {first}: bad credentials")), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "the refusal took {:?}", t.elapsed());
    let out = send(first, &bad, "k", "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad credentials"));
    // The joiner checks the bootstrap's proof first and refuses it, saying why: the bootstrap
    // counts that refusal.
    let refusals = nodes[0].metric("wendy_peers_rejected_total").expect("metric")
        + nodes[0].metric("wendy_rejected_by_peers_total").expect("metric");
    assert!(refusals >= 1, "the bootstrap counted no refused handshake");

    // Many connections opened and closed leave the resident set within a few MB. The first
    // batches warm the buffer pools and the allocator's per-thread arenas (up to 50
    // connections at once): the growth is measured over the 4,000 connections after them.
    let idle = nodes[0].metric("wendy_connections").expect("metric");
    let mut before = 0;
    for batch in 0..100 {
        if batch == 20 {
            before = nodes[0].resident();
        }
        let conns: Vec<TcpStream> = (0..50).filter_map(|_| TcpStream::connect(first).ok()).collect();
        assert_eq!(conns.len(), 50, "batch {batch}");
        drop(conns);
        wait(Duration::from_secs(10), || nodes[0].metric("wendy_connections").filter(|c| *c <= idle + 2));
    }
    let grown = nodes[0].resident().saturating_sub(before);
    eprintln!("4,000 connections after 1,000: resident set grew by {grown} KiB");
    assert!(grown < 4 << 10, "resident set grew by {grown} KiB");
    let _ = std::fs::remove_dir_all(&root_dir);
}
