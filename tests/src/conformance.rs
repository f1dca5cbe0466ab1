//! One body of scenarios, run against every driver on 127.0.0.1 with real sockets.
//!
//! Every scenario is bounded in time: waits have deadlines, and a failure names the driver,
//! the seed and what was seen.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wendy_proto::rng::Rng;
use wendy_proto::wire::{self, Direct, Message, WireError};
use wendy_proto::{Config, Event, Identity, NodeError, NodeId, RejectReason, SharedSecret, Target};

use crate::facade::{Driver, Ev, TestNode};

/// Purpose used by the scenarios' messages.
pub const PURPOSE: u8 = 42;
/// How long a join may take before the scenario fails.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration for tests: port 0 on 127.0.0.1, and timers short enough that a failure is
/// detected in about a second.
pub fn test_config(id: NodeId) -> Config {
    // Chosen ids (the scenarios place them), so the trusting mode; still encrypted.
    tune(Config::with_trusted_id(id, SocketAddr::from(([127, 0, 0, 1], 0))))
}

/// Like [`test_config`], for the node with static key `identity`, its id derived from the key
/// (the default, secure mode).
pub fn secure_config(identity: Identity) -> Config {
    tune(Config::new(identity, SocketAddr::from(([127, 0, 0, 1], 0))))
}

fn tune(mut c: Config) -> Config {
    c.heartbeat_interval = Duration::from_millis(100);
    c.suspect_timeout = Duration::from_millis(300);
    c.probe_timeout = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(1);
    c.join_timeout = Duration::from_secs(2);
    c
}

/// A set of nodes of one driver, with their liveness.
pub struct Cluster {
    /// The nodes, in start order.
    pub nodes: Vec<Box<dyn TestNode>>,
    /// False once a node left or crashed.
    pub alive: Vec<bool>,
    /// Driver name, for messages.
    pub driver: &'static str,
    /// Seed of ids and choices.
    pub seed: u64,
    /// The scenario's own random choices.
    pub rng: Rng,
}

impl Cluster {
    /// Starts `n` nodes and joins each through a random node already in the ring.
    pub fn start<D: Driver>(driver: &D, n: usize, seed: u64, cfg: impl Fn(Config) -> Config) -> Cluster {
        Self::start_by(driver, n, seed, |d, id| d.start(cfg(test_config(id))))
    }

    /// Like [`start`](Self::start), each node started by `start`.
    pub fn start_by<D: Driver>(
        driver: &D,
        n: usize,
        seed: u64,
        start: impl Fn(&D, NodeId) -> std::io::Result<Box<dyn TestNode>>,
    ) -> Cluster {
        let mut rng = Rng::new(seed);
        let mut nodes: Vec<Box<dyn TestNode>> = Vec::with_capacity(n);
        for i in 0..n {
            let id = NodeId::from_u128(rng.next_u128());
            let node = start(driver, id).expect("node starts");
            if i > 0 {
                let via = nodes[rng.below(i as u64) as usize].addr();
                if let Err(e) = node.join(via, JOIN_TIMEOUT) {
                    panic!("[{} seed {seed}] node {i} could not join via {via}: {e}", D::NAME);
                }
            }
            nodes.push(node);
        }
        let alive = vec![true; n];
        Cluster { nodes, alive, driver: D::NAME, seed, rng }
    }

    /// Ids of the live nodes.
    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().zip(&self.alive).filter(|(_, a)| **a).map(|(n, _)| n.id()).collect()
    }

    /// Index of the live node numerically closest to `key`.
    pub fn root_of(&self, key: NodeId) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.alive[i])
            .min_by(|&a, &b| key.cmp_closeness(self.nodes[a].id(), self.nodes[b].id()))
            .expect("a live node")
    }

    /// Waits until every live node's leaf set holds its live ring neighbours on both sides and
    /// no dead node. Panics with what it saw after `timeout`.
    pub fn wait_converged(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        let mut live = self.live_ids();
        live.sort();
        loop {
            let bad = self.unconverged(&live);
            if bad.is_empty() {
                return;
            }
            if Instant::now() > end {
                panic!("[{} seed {}] leaf sets did not converge: {bad:?}", self.driver, self.seed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unconverged(&self, live: &[NodeId]) -> Vec<String> {
        let mut bad = Vec::new();
        let n = live.len();
        for (i, node) in self.nodes.iter().enumerate() {
            if !self.alive[i] || n < 2 {
                continue;
            }
            let me = node.id();
            let pos = live.binary_search(&me).expect("live node in the live list");
            let succ = live[(pos + 1) % n];
            let pred = live[(pos + n - 1) % n];
            let Some((members, ready)) = node.query(|x| (x.leaf_set().members(), x.is_ready())) else {
                bad.push(format!("node {i} stopped"));
                continue;
            };
            if !ready {
                bad.push(format!("node {i} not ready"));
            }
            for nb in [pred, succ] {
                if !members.contains(&nb) {
                    bad.push(format!("node {i} lacks its neighbour {nb}"));
                }
            }
            if let Some(d) = members.iter().find(|m| live.binary_search(m).is_err()) {
                bad.push(format!("node {i} still has dead {d}"));
            }
        }
        bad
    }

    /// Sends `m` messages towards random keys from random live nodes and checks that each is
    /// delivered exactly once, at the live node numerically closest to its key.
    pub fn route_and_check(&mut self, m: usize, timeout: Duration) {
        let keys: Vec<NodeId> = (0..m).map(|_| NodeId::from_u128(self.rng.next_u128())).collect();
        self.route_keys_and_check(&keys, timeout);
    }

    /// Like [`route_and_check`](Self::route_and_check), towards the given keys.
    pub fn route_keys_and_check(&mut self, keys: &[NodeId], timeout: Duration) {
        self.route_keys_and_check_with(keys, timeout, None);
    }

    /// Like [`route_and_check`](Self::route_and_check), sending with `send_batch` in batches
    /// of up to `batch` messages per node.
    pub fn route_batches_and_check(&mut self, m: usize, batch: usize, timeout: Duration) {
        let keys: Vec<NodeId> = (0..m).map(|_| NodeId::from_u128(self.rng.next_u128())).collect();
        self.route_keys_and_check_with(&keys, timeout, Some(batch));
    }

    fn route_keys_and_check_with(&mut self, keys: &[NodeId], timeout: Duration, batch: Option<usize>) {
        for n in &self.nodes {
            n.drain_events();
        }
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.alive[i]).collect();
        let mut batches: BTreeMap<usize, Vec<(NodeId, u8, Bytes)>> = BTreeMap::new();
        // A send's failure comes back from that send.
        let mut failures = Vec::new();
        for (k, &key) in keys.iter().enumerate() {
            let from = live[self.rng.below(live.len() as u64) as usize];
            let payload = Bytes::copy_from_slice(&(k as u64).to_be_bytes());
            match batch {
                None => {
                    if let Err(e) = self.nodes[from].send(key, PURPOSE, payload) {
                        failures.push(format!("node {from}, msg {k}: {e}"));
                    }
                }
                Some(size) => {
                    let b = batches.entry(from).or_default();
                    b.push((key, PURPOSE, payload));
                    if b.len() >= size {
                        if let Err(e) = self.nodes[from].send_batch(std::mem::take(b)) {
                            failures.push(format!("node {from}: {e}"));
                        }
                    }
                }
            }
        }
        for (from, b) in batches {
            if let Err(e) = self.nodes[from].send_batch(b) {
                failures.push(format!("node {from}: {e}"));
            }
        }
        let mut got: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let end = Instant::now() + timeout;
        let mut total = 0;
        while total < keys.len() && Instant::now() < end {
            let mut idle = true;
            for &i in &live {
                for ev in self.nodes[i].drain_events() {
                    match ev {
                        Ev::Deliver(d) if d.purpose == PURPOSE && d.payload.len() == 8 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&d.payload);
                            got.entry(u64::from_be_bytes(b) as usize).or_default().push(i);
                            total += 1;
                            idle = false;
                        }
                        Ev::Event(Event::Error(
                            e @ (NodeError::Undeliverable { .. } | NodeError::QueueFull { .. }),
                        )) => failures.push(format!("node {i}: {e}")),
                        _ => {}
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut wrong = Vec::new();
        for (k, &key) in keys.iter().enumerate() {
            let root = self.root_of(key);
            match got.get(&k).map(Vec::as_slice) {
                Some([at]) if *at == root => {}
                other => wrong.push(format!("msg {k} key {key}: delivered at {other:?}, root is {root}")),
            }
        }
        assert!(
            wrong.is_empty(),
            "[{} seed {}] {} of {} messages wrong (first: {:?}); node errors: {:?}",
            self.driver,
            self.seed,
            wrong.len(),
            keys.len(),
            &wrong[..wrong.len().min(5)],
            &failures[..failures.len().min(5)]
        );
    }
}

/// `n` nodes join; `m` messages towards random keys are each delivered once, at the root.
pub fn cluster_routes<D: Driver>(driver: &D, n: usize, m: usize, seed: u64) {
    let mut c = Cluster::start(driver, n, seed, |c| c);
    c.wait_converged(Duration::from_secs(20));
    c.route_and_check(m, Duration::from_secs(20));
}

/// The store over real sockets and real disks: 20 nodes keep 1,000 keys (some written
/// twice); five crash at once (three of them ring neighbours, so some keys lose every
/// replica), two come back from their data directories, and every key is then read back
/// with its newest value.
pub fn store_survives_crashes<D: Driver>(driver: &D, seed: u64) {
    use wendy_driver::StoreOptions;
    use wendy_proto::store::StoreConfig;

    let base = std::env::temp_dir().join(format!("wendy-store-{}-{}-{seed}", D::NAME, std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mut store_cfg = StoreConfig::default();
    store_cfg.sync_interval = Duration::from_secs(2);
    store_cfg.settle_delay = Duration::from_millis(200);
    store_cfg.op_timeout = Duration::from_secs(5);
    let dir_of = |id: NodeId| base.join(id.to_string());
    let start =
        |d: &D, id: NodeId| d.start_with_store(test_config(id), StoreOptions::on_disk(store_cfg.clone(), dir_of(id)));
    let mut c = Cluster::start_by(driver, 20, seed, start);
    c.wait_converged(Duration::from_secs(20));
    let n = 1000usize;
    let value = |i: usize, gen: u8| Bytes::from(format!("value {i} gen {gen}"));
    let mut newest = Vec::with_capacity(n);
    for i in 0..n {
        let gen = u8::from(i % 10 == 0) + 1;
        for g in 1..=gen {
            let at = c.rng.below(20) as usize;
            let r = c.nodes[at].put(format!("key {i}").as_bytes(), value(i, g));
            r.unwrap_or_else(|e| panic!("[{} seed {seed}] put of key {i} gen {g}: {e}", D::NAME));
        }
        newest.push(value(i, gen));
    }
    // Crash five at once: three ring neighbours and two others.
    let mut ring: Vec<usize> = (0..20).collect();
    ring.sort_by_key(|&i| c.nodes[i].id());
    let victims = [ring[4], ring[5], ring[6], ring[11], ring[16]];
    for &v in &victims {
        c.nodes[v].crash();
        c.alive[v] = false;
    }
    // Two come back with their identity and data directory: the middle of the three
    // neighbours (the only copy left of the keys the three held) and another.
    for &v in &[ring[5], ring[11]] {
        let id = c.nodes[v].id();
        // The crashed node's task may still hold the database file for a moment.
        let node = (0..50)
            .find_map(|_| match start(driver, id) {
                Ok(n) => Some(n),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            })
            .unwrap_or_else(|| panic!("[{} seed {seed}] node {v} restarts from its data directory", D::NAME));
        let via = c.nodes[(0..20).find(|&i| c.alive[i]).expect("a live node")].addr();
        node.join(via, JOIN_TIMEOUT).unwrap_or_else(|e| panic!("[{} seed {seed}] rejoin of {v}: {e}", D::NAME));
        c.nodes[v] = node;
        c.alive[v] = true;
    }
    // Generous: the survivors must first declare the five dead, then learn the restarted
    // nodes' new addresses, on a machine that may be busy with other tests.
    c.wait_converged(Duration::from_secs(45));
    // One anti-entropy round; reads ask every replica anyway.
    std::thread::sleep(store_cfg.sync_interval);
    let mut wrong = Vec::new();
    for (i, want) in newest.iter().enumerate() {
        let at = loop {
            let at = c.rng.below(20) as usize;
            if c.alive[at] {
                break at;
            }
        };
        match c.nodes[at].get(format!("key {i}").as_bytes()) {
            Ok(v) if v == want => {}
            other => wrong.push((i, other)),
        }
    }
    assert!(
        wrong.is_empty(),
        "[{} seed {seed}] {} keys not read back: {:?}",
        D::NAME,
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&base);
}

/// A node that leaves gracefully and one that crashes are both removed from the others'
/// state, and messages towards their keys then reach the new roots.
pub fn leave_and_crash<D: Driver>(driver: &D, seed: u64) {
    let mut c = Cluster::start(driver, 8, seed, |c| c);
    c.wait_converged(Duration::from_secs(10));
    c.route_and_check(50, Duration::from_secs(10));

    // Graceful leave: announced, so the neighbours know at once.
    let leaver = 3;
    let left_id = c.nodes[leaver].id();
    c.nodes[leaver].leave();
    c.alive[leaver] = false;
    let t = Instant::now();
    c.wait_converged(Duration::from_secs(10));
    let leave_detect = t.elapsed();
    let keys: Vec<NodeId> = (0..20u128).map(|i| NodeId::from_u128(left_id.as_u128().wrapping_add(i << 80))).collect();
    c.route_keys_and_check(&keys, Duration::from_secs(10));

    // Crash: no announcement; found by heartbeats.
    let victim = 5;
    let dead_id = c.nodes[victim].id();
    c.nodes[victim].crash();
    c.alive[victim] = false;
    let t = Instant::now();
    c.wait_converged(Duration::from_secs(15));
    let crash_detect = t.elapsed();
    let keys: Vec<NodeId> = (0..20u128).map(|i| NodeId::from_u128(dead_id.as_u128().wrapping_sub(i << 80))).collect();
    c.route_keys_and_check(&keys, Duration::from_secs(10));
    c.route_and_check(100, Duration::from_secs(10));
    eprintln!("[{}] leave repaired in {leave_detect:?}, crash detected and repaired in {crash_detect:?}", D::NAME);
}

/// A node with other credentials is rejected; one with the right ones joins.
pub fn bad_credentials<D: Driver>(driver: &D, seed: u64) {
    let mut rng = Rng::new(seed);
    let good = Arc::new(SharedSecret::new("right secret"));
    let bad = Arc::new(SharedSecret::new("wrong secret"));
    let mk = |rng: &mut Rng, cred: Arc<SharedSecret>| {
        let mut cfg = test_config(NodeId::from_u128(rng.next_u128()));
        cfg.join_attempts = 1;
        driver.start(cfg.with_credentials(cred)).expect("node starts")
    };
    let a = mk(&mut rng, good.clone());
    let b = mk(&mut rng, good);
    b.join(a.addr(), JOIN_TIMEOUT).unwrap_or_else(|e| panic!("[{}] right credentials refused: {e}", D::NAME));
    let intruder = mk(&mut rng, bad);
    a.drain_events();
    let r = intruder.join(a.addr(), Duration::from_secs(5));
    assert!(r.is_err(), "[{}] a node with wrong credentials joined", D::NAME);
    // The pre-shared key enters the handshake's last message: the bootstrap notices and
    // refuses, and tells the intruder why.
    let is_reject = |e: &Ev| matches!(e, Ev::Event(Event::PeerRejected { reason: RejectReason::BadCredentials, .. }));
    let rejected = intruder.drain_events().iter().any(is_reject) || a.drain_events().iter().any(is_reject);
    assert!(rejected, "[{}] nobody reported the bad credentials", D::NAME);
    let iid = intruder.id();
    let known = a.query(move |n| n.peer(iid).is_some()).expect("a runs");
    assert!(!known, "[{}] the intruder entered a's tables", D::NAME);
    // The ring still works.
    b.send(a.id(), PURPOSE, Bytes::from_static(b"still here")).expect("send");
    assert!(a.wait_for(Duration::from_secs(5), |e| matches!(e, Ev::Deliver(_))).is_some());
}

/// Garbage, a truncated frame and an oversized length prefix each close their connection with
/// an error event, while the node keeps serving its peers.
pub fn hostile_bytes<D: Driver>(driver: &D, seed: u64) {
    let mut c = Cluster::start(driver, 3, seed, |c| c);
    c.wait_converged(Duration::from_secs(10));
    let target = c.nodes[0].addr();
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("garbage", vec![0, 0, 0, 6, 1, 0xff, 0xff, 0xff, 0xff, 0xff], false),
        ("wrong version", vec![0, 0, 0, 3, 99, 1, 2], false),
        ("truncated frame", vec![0, 0, 0, 100, 1, 0, 1, 2, 3], true),
        ("oversized length prefix", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], false),
    ];
    for (what, bytes, half_close) in cases {
        c.nodes[0].drain_events();
        let mut s = TcpStream::connect(target).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(&bytes).expect("write");
        if half_close {
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "[{}] {what}: the node did not close the connection", D::NAME);
        let err = c.nodes[0].wait_for(Duration::from_secs(3), |e| matches!(e, Ev::Event(Event::Error(_))));
        assert!(err.is_some(), "[{}] {what}: no error event", D::NAME);
        c.route_and_check(30, Duration::from_secs(10));
    }
    let stats = c.nodes[0].stats().expect("node runs");
    assert!(stats.decode_errors >= 3, "[{}] decode errors counted: {stats:?}", D::NAME);
}

/// Write halves of the relay's connections: (towards X, towards V).
type Relayed = Arc<Mutex<Vec<(Arc<Mutex<TcpStream>>, Arc<Mutex<TcpStream>>)>>>;

/// A man in the middle at a loopback address of its own: every connection it accepts (from V)
/// it relays, frame by frame, to a connection it opens to `target` (X). While `flip` is set,
/// the next frame from V has one byte flipped (and `flip` is cleared).
fn start_relay(target: SocketAddr, flip: Arc<AtomicBool>) -> (SocketAddr, Relayed) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = listener.local_addr().expect("bound");
    let links: Relayed = Arc::default();
    let kept = links.clone();
    std::thread::spawn(move || {
        for v in listener.incoming().flatten() {
            let Ok(x) = TcpStream::connect(target) else { continue };
            let (Ok(v2), Ok(x2)) = (v.try_clone(), x.try_clone()) else { continue };
            let to_x = Arc::new(Mutex::new(x2));
            let to_v = Arc::new(Mutex::new(v2));
            kept.lock().expect("relay lock").push((to_x.clone(), to_v.clone()));
            let f = flip.clone();
            std::thread::spawn(move || relay_frames(v, to_x, Some(f)));
            std::thread::spawn(move || relay_frames(x, to_v, None));
        }
    });
    (addr, links)
}

fn relay_frames(mut from: TcpStream, to: Arc<Mutex<TcpStream>>, flip: Option<Arc<AtomicBool>>) {
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let n = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; n.min(4 << 20)];
        if n > body.len() || from.read_exact(&mut body).is_err() {
            break;
        }
        if n > 20 && flip.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
            body[n / 2] ^= 0x01;
        }
        let mut w = to.lock().expect("relay lock");
        if w.write_all(&len).and_then(|()| w.write_all(&body)).is_err() {
            break;
        }
    }
    let _ = to.lock().expect("relay lock").shutdown(Shutdown::Both);
}

/// The relay attack of issue 10, over real sockets. An attacker makes V dial it and relays the
/// handshake to member X and back; then it injects frames of its own on both connections, and
/// later flips one byte of one frame. With Noise it holds no session key: the handshake passes
/// end to end between V and X (so nobody is recorded at the attacker's address), every frame
/// it adds or changes fails authentication and closes its connection, nothing of it is
/// delivered, and the nodes reconnect directly and keep serving.
pub fn relay_attack<D: Driver>(driver: &D, seed: u64) {
    let secret = Arc::new(SharedSecret::new("cluster secret"));
    let key = |n: u8| Identity::from_entropy(&[seed as u8 ^ n; 32]);
    let x = driver.start(secure_config(key(1)).with_credentials(secret.clone())).expect("start x");
    let v = driver.start(secure_config(key(2)).with_credentials(secret.clone())).expect("start v");
    let flip = Arc::new(AtomicBool::new(false));
    let (attacker, links) = start_relay(x.addr(), flip.clone());
    v.join(attacker, JOIN_TIMEOUT).unwrap_or_else(|e| panic!("[{}] join through the relay: {e}", D::NAME));
    let at_attacker = move |n: &wendy_proto::Node| {
        let ids = n.leaf_set().members().into_iter().chain(n.routing_table().iter().map(|c| c.id));
        ids.filter_map(|id| n.peer(id)).any(|i| i.local == attacker || i.global == attacker)
    };
    for (name, n) in [("x", &x), ("v", &v)] {
        assert!(!n.query(at_attacker).expect("runs"), "[{}] {name} records a node at the attacker's address", D::NAME);
    }
    // The attacker injects a forged sealed frame, then a plaintext message, on both connections.
    let mut forged = vec![0, 0, 0, 41, 0xE2];
    forged.extend_from_slice(&[0x42; 40]);
    let payload = Bytes::from_static(b"INJECTED");
    let plain = wire::encode(&Message::Direct(Direct { purpose: PURPOSE, origin: x.id(), payload }));
    for (to_x, to_v) in links.lock().expect("relay lock").iter() {
        // Both ends held while injecting: once X drops its end (the forged frame), the relay
        // shuts V's end down, and an injection after that would never reach V.
        let mut wx = to_x.lock().expect("relay lock");
        let mut wv = to_v.lock().expect("relay lock");
        for w in [&mut *wx, &mut *wv] {
            let _ = w.write_all(&forged).and_then(|()| w.write_all(&plain));
        }
    }
    let injected = |e: &Ev| matches!(e, Ev::Deliver(d) if &d.payload[..] == b"INJECTED");
    let auth_error =
        |e: &Ev| matches!(e, Ev::Event(Event::Error(NodeError::Decode { error: WireError::Unauthenticated, .. })));
    for (name, n) in [("x", &x), ("v", &v)] {
        let mut seen_injected = false;
        let mut seen = Vec::new();
        let err = n.wait_for(Duration::from_secs(15), |e| {
            seen_injected |= injected(e);
            seen.push(format!("{e:?}"));
            auth_error(e)
        });
        assert!(err.is_some(), "[{}] {name} reported no authentication failure; saw {seen:?}", D::NAME);
        assert!(!seen_injected, "[{}] {name} delivered the attacker's message", D::NAME);
    }
    // They keep serving each other, over a direct connection now.
    let deliver = |from: &(dyn TestNode + 'static), to: &(dyn TestNode + 'static), what: &'static [u8]| {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            from.send_to(Target::Node(to.id()), PURPOSE, Bytes::from_static(what)).expect("send_to");
            let got = to.wait_for(Duration::from_millis(500), |e| {
                assert!(!injected(e), "[{}] the attacker's message was delivered", D::NAME);
                matches!(e, Ev::Deliver(d) if &d.payload[..] == what)
            });
            if got.is_some() {
                return;
            }
        }
        panic!("[{}] {} never reached the other node", D::NAME, String::from_utf8_lossy(what));
    };
    deliver(&*v, &*x, b"after the injection");
    deliver(&*x, &*v, b"and back");
    // A third node joins through the relay; the attacker flips one byte of its next frame.
    let w = driver.start(secure_config(key(3)).with_credentials(secret)).expect("start w");
    w.join(attacker, JOIN_TIMEOUT).unwrap_or_else(|e| panic!("[{}] join through the relay: {e}", D::NAME));
    let before = x.stats().expect("runs").auth_failures;
    flip.store(true, Ordering::SeqCst);
    w.send_to(Target::Node(x.id()), PURPOSE, Bytes::from_static(b"flipped")).expect("send_to");
    let err = x.wait_for(Duration::from_secs(5), auth_error);
    assert!(err.is_some(), "[{}] a flipped byte went unnoticed", D::NAME);
    assert!(!flip.load(Ordering::SeqCst), "[{}] the relay flipped nothing", D::NAME);
    assert_eq!(x.stats().expect("runs").auth_failures, before + 1);
    deliver(&*w, &*x, b"after the flip");
    for (name, n) in [("x", &x), ("v", &v), ("w", &w)] {
        assert!(!n.query(at_attacker).expect("runs"), "[{}] {name} records a node at the attacker's address", D::NAME);
    }
}

/// Port 0 reports the port really bound; the node answers there.
pub fn port_zero<D: Driver>(driver: &D, seed: u64) {
    let mut rng = Rng::new(seed);
    let a = driver.start(test_config(NodeId::from_u128(rng.next_u128()))).expect("start");
    assert_ne!(a.addr().port(), 0, "[{}] port 0 was not replaced", D::NAME);
    let info = a.query(|n| n.info().clone()).expect("runs");
    assert_eq!(info.local, a.addr());
    assert_eq!(info.global, a.addr());
    TcpStream::connect(a.addr()).expect("the node listens on the reported port");
    let b = driver.start(test_config(NodeId::from_u128(rng.next_u128()))).expect("start");
    assert_ne!(a.addr(), b.addr());
    b.join(a.addr(), JOIN_TIMEOUT).expect("join through the reported address");
}

/// Direct messages by address and by id, and a forward hook that vetoes one purpose.
pub fn direct_and_hook<D: Driver>(driver: &D, seed: u64) {
    let c = Cluster::start(driver, 5, seed, |c| c);
    c.wait_converged(Duration::from_secs(10));
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.send_to(Target::Addr(b.addr()), PURPOSE, Bytes::from_static(b"by addr")).expect("send_to");
    let got = b.wait_for(Duration::from_secs(5), |e| matches!(e, Ev::Deliver(d) if d.direct));
    assert!(got.is_some(), "[{}] direct by address not delivered", D::NAME);
    a.send_to(Target::Node(b.id()), PURPOSE, Bytes::from_static(b"by id")).expect("send_to");
    let got = b.wait_for(Duration::from_secs(5), |e| matches!(e, Ev::Deliver(d) if &d.payload[..] == b"by id"));
    assert!(got.is_some(), "[{}] direct by id not delivered", D::NAME);
    assert!(a.send(b.id(), 3, Bytes::new()).is_err(), "[{}] reserved purpose accepted", D::NAME);
    // Veto purpose 77 everywhere: routed towards a remote root it never arrives.
    for n in &c.nodes {
        n.set_forward_hook(Box::new(|f: &mut wendy_proto::Forwarding, _: &wendy_proto::NodeInfo| f.purpose != 77));
    }
    a.send(b.id(), 77, Bytes::from_static(b"vetoed")).expect("send");
    a.send(b.id(), PURPOSE, Bytes::from_static(b"allowed")).expect("send");
    let mut seen = Vec::new();
    b.wait_for(Duration::from_secs(5), |e| {
        if let Ev::Deliver(d) = e {
            seen.push(d.purpose);
        }
        matches!(e, Ev::Deliver(d) if d.purpose == PURPOSE)
    })
    .unwrap_or_else(|| panic!("[{}] allowed message not delivered", D::NAME));
    std::thread::sleep(Duration::from_millis(200));
    seen.extend(
        b.drain_events().into_iter().filter_map(|e| if let Ev::Deliver(d) = e { Some(d.purpose) } else { None }),
    );
    assert!(!seen.contains(&77), "[{}] vetoed message was delivered", D::NAME);
}

/// Sending in batches, to nodes whose application reads events slowly through a tiny event
/// capacity: every message is still delivered exactly once at its root (deliveries wait for
/// the application, they are never dropped), and `send_batch` refuses a batch holding a
/// reserved purpose without sending any of it.
pub fn batches_and_slow_app<D: Driver>(driver: &D, seed: u64) {
    let mut c =
        Cluster::start_by(driver, 5, seed, |d, id| d.start_slow_app(test_config(id), 4, Duration::from_millis(1)));
    c.wait_converged(Duration::from_secs(20));
    c.route_batches_and_check(3000, 250, Duration::from_secs(30));
    let key = c.nodes[1].id();
    let bad = vec![(key, PURPOSE, Bytes::from_static(b"ok")), (key, 3, Bytes::from_static(b"reserved"))];
    assert!(c.nodes[0].send_batch(bad).is_err(), "[{}] a batch with a reserved purpose was accepted", D::NAME);
    let seen = c.nodes[1].wait_for(Duration::from_millis(300), |e| matches!(e, Ev::Deliver(_)));
    assert!(seen.is_none(), "[{}] part of a refused batch was delivered: {seen:?}", D::NAME);
}

/// A chain A -> B -> C under load, with small windows (`max_pending_per_peer` 8: 32 messages
/// unacknowledged per connection) and small event queues: B's application relays every
/// message delivered to it on to C, waiting in `send` while B's window towards C is full (and
/// trying again if refused with `Backpressure`) without reading its events; C's application
/// is slow; A sends as fast as its node takes them. B's node must keep reading C's
/// acknowledgements while its application lags (else neither moves again), and every message
/// reaches C exactly once.
pub fn relay_waits_for_room<D: Driver>(driver: &D, seed: u64) {
    const N: u64 = 2000;
    const RELAY: u8 = PURPOSE + 1;
    let mut rng = Rng::new(seed);
    let ids: Vec<NodeId> = (0..3).map(|_| NodeId::from_u128(rng.next_u128())).collect();
    let cfg = |id| {
        let mut c = test_config(id);
        c.max_pending_per_peer = 8;
        c
    };
    let a = driver.start(cfg(ids[0])).expect("A starts");
    let b = driver.start_relay(cfg(ids[1]), 4, ids[2], RELAY).expect("B starts");
    let c = driver.start_slow_app(cfg(ids[2]), 4, Duration::from_millis(2)).expect("C starts");
    for n in [&b, &c] {
        n.join(a.addr(), JOIN_TIMEOUT).expect("joins");
    }
    let busy = wendy_proto::CommandError::Backpressure.to_string();
    let end = Instant::now() + Duration::from_secs(60);
    for k in 0..N {
        let payload = Bytes::copy_from_slice(&k.to_be_bytes());
        loop {
            match a.send(ids[1], RELAY, payload.clone()) {
                Ok(()) => break,
                Err(e) if e.contains(&busy) && Instant::now() < end => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("[{} seed {seed}] A's send {k}: {e}", D::NAME),
            }
        }
    }
    let mut seen = vec![0u32; N as usize];
    let mut errors = Vec::new();
    let mut got = 0;
    while got < N && Instant::now() < end {
        match c.events().recv_timeout(Duration::from_millis(100)) {
            Ok(Ev::Deliver(d)) if d.purpose == RELAY && d.payload.len() == 8 => {
                let mut k = [0u8; 8];
                k.copy_from_slice(&d.payload);
                seen[u64::from_be_bytes(k) as usize] += 1;
                got += 1;
            }
            Ok(Ev::Event(Event::Error(e))) => errors.push(e.to_string()),
            _ => {}
        }
    }
    for n in [&a, &b] {
        while let Ok(ev) = n.events().try_recv() {
            if let Ev::Event(Event::Error(e)) = ev {
                errors.push(e.to_string());
            }
        }
    }
    let missing = seen.iter().filter(|&&x| x == 0).count();
    let twice = seen.iter().filter(|&&x| x > 1).count();
    let state: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|n| match n.metrics() {
            Some(m) => format!(
                "delivered {} forwarded {} reroutes {} undeliverable {} pending {} queued {} bytes, events dropped {}",
                m.stats.delivered,
                m.stats.forwarded,
                m.stats.reroutes,
                m.stats.undeliverable,
                m.pending_messages,
                m.queued_bytes,
                m.events_dropped
            ),
            None => "stopped".into(),
        })
        .collect();
    assert!(
        missing == 0 && twice == 0,
        "[{} seed {seed}] of {N} relayed messages {missing} never reached C, {twice} twice; A, B, C: {state:?}; errors: {:?}",
        D::NAME,
        &errors[..errors.len().min(5)]
    );
    for n in [a, b, c] {
        n.leave();
    }
}

/// A send waits for room in the next hop's window, at most `Options::send_wait`, and is then
/// refused with `Backpressure`: B's application stops reading its events, so B hands on
/// nothing delivered to it and A's window towards B (32 messages, and a queue of 8) stays
/// full. B's node keeps answering meanwhile. With `send_wait` zero, the refusal comes at once.
pub fn send_waits_for_room<D: Driver>(driver: &D, seed: u64) {
    let mut rng = Rng::new(seed);
    let ids: Vec<NodeId> = (0..2).map(|_| NodeId::from_u128(rng.next_u128())).collect();
    let cfg = |id| {
        let mut c = test_config(id);
        c.max_pending_per_peer = 8;
        c
    };
    let wait = Duration::from_millis(600);
    let mut opts = wendy_driver::Options::default();
    opts.send_wait = wait;
    let a = driver.start_with_options(cfg(ids[0]), opts).expect("A starts");
    // Reads one batch of events, then none for an hour.
    let b = driver.start_slow_app(cfg(ids[1]), 4, Duration::from_secs(3600)).expect("B starts");
    b.join(a.addr(), JOIN_TIMEOUT).expect("joins");
    // Sends from `n` towards B until one is refused: how many went through, and how long the
    // refused one took.
    let until_refused = |n: &dyn TestNode| {
        let busy = wendy_proto::CommandError::Backpressure.to_string();
        let mut sent = 0u64;
        loop {
            assert!(
                sent < 10_000,
                "[{} seed {seed}] {sent} sends to a node that hands nothing on went through",
                D::NAME
            );
            let t = Instant::now();
            match n.send(ids[1], PURPOSE, Bytes::from_static(b"x")) {
                Ok(()) => sent += 1,
                Err(e) if e.contains(&busy) => return (sent, t.elapsed()),
                Err(e) => panic!("[{} seed {seed}] send {sent}: {e}", D::NAME),
            }
        }
    };
    let (sent, waited) = until_refused(&*a);
    assert!(sent >= 40, "[{} seed {seed}] refused after {sent} sends, before the window and queue filled", D::NAME);
    assert!(waited >= wait - Duration::from_millis(50), "[{} seed {seed}] refused after {waited:?}", D::NAME);
    assert!(a.query(|n| n.pending_messages()).is_some_and(|p| p > 0));
    assert!(b.query(|n| n.is_ready()).unwrap_or(false), "[{}] B's node stopped answering", D::NAME);
    let stats = a.stats().expect("A runs");
    assert_eq!(stats.reroutes, 0, "[{}] B was routed round: its node looked dead", D::NAME);
    // With `send_wait` zero the same refusal comes at once.
    let mut opts = wendy_driver::Options::default();
    opts.send_wait = Duration::ZERO;
    let c = driver.start_with_options(cfg(NodeId::from_u128(rng.next_u128())), opts).expect("C starts");
    c.join(a.addr(), JOIN_TIMEOUT).expect("joins");
    let (_, waited) = until_refused(&*c);
    assert!(waited < Duration::from_millis(300), "[{} seed {seed}] refused after {waited:?}, not at once", D::NAME);
    for n in [a, b, c] {
        n.leave();
    }
}

/// A node is frozen (as `SIGSTOP` would freeze its process: its task stops, its listener and
/// connections stay open) while several senders route messages towards keys it is the root
/// of and towards keys whose first hop it is. Every message is then delivered exactly once,
/// at the live node closest to its key (the root once the frozen node is declared failed),
/// or reported `Undeliverable`, with its key and purpose, to its sender: none vanishes and
/// none is delivered twice. The frozen node is then killed (see [`frozen_node_thawed`]).
///
/// Leaf sets of 4 (instead of 32), so that 16 nodes route over their routing tables and the
/// frozen node is an intermediate hop, not only a root.
pub fn frozen_node<D: Driver>(driver: &D, seed: u64) {
    frozen_node_with(driver, seed, 5, |c| c, false);
}

/// Like [`frozen_node`], the frozen node thawed at the end instead of killed, long after it
/// was declared failed: it delivers none of the messages it was sent while frozen (they were
/// delivered or reported already; it closes its stale connections unread), and it comes back
/// into the ring, which then routes as before.
pub fn frozen_node_thawed<D: Driver>(driver: &D, seed: u64) {
    frozen_node_with(driver, seed, 5, |c| c, true);
}

/// [`frozen_node`] with `per_sender` messages of each kind per sender, the configuration
/// changed by `tweak`, and the frozen node thawed at the end instead of killed if `thaw`.
pub fn frozen_node_with<D: Driver>(
    driver: &D,
    seed: u64,
    per_sender: usize,
    tweak: impl Fn(Config) -> Config,
    thaw: bool,
) {
    let tweak = |mut c: Config| {
        c.leaf_set_size = 4;
        tweak(c)
    };
    let cfg = tweak(test_config(NodeId::from_u128(0)));
    let n = 16;
    let mut c = Cluster::start(driver, n, seed, tweak);
    c.wait_converged(cfg.detection_time());
    // Where each node would send each of a sample of keys: the frozen node is the one that is
    // the first hop, and not the root, of the most (sender, key) pairs.
    let sample: Arc<Vec<NodeId>> =
        Arc::new((0..400 * per_sender).map(|_| NodeId::from_u128(c.rng.next_u128())).collect());
    let hops: Vec<Vec<Option<NodeId>>> = (0..n)
        .map(|i| {
            let keys = sample.clone();
            c.nodes[i].query(move |x| keys.iter().map(|&k| x.next_hop(k)).collect()).expect("node runs")
        })
        .collect();
    let roots: Vec<usize> = sample.iter().map(|&k| c.root_of(k)).collect();
    let through_of = |f: usize, s: usize| -> Vec<NodeId> {
        let fid = c.nodes[f].id();
        (0..sample.len()).filter(|&j| hops[s][j] == Some(fid) && roots[j] != f).map(|j| sample[j]).collect()
    };
    let count = |f: usize| (0..n).map(|s| through_of(f, s).len().min(per_sender)).sum::<usize>();
    let frozen = (0..n).max_by_key(|&f| (count(f), std::cmp::Reverse(f))).expect("nodes");
    let fid = c.nodes[frozen].id();
    // Six senders, none of them the frozen node, those with the most routes through it first.
    let mut senders: Vec<usize> = (0..n).filter(|&i| i != frozen).collect();
    senders.sort_by_key(|&s| (std::cmp::Reverse(through_of(frozen, s).len().min(per_sender)), s));
    senders.truncate(6);
    // Per sender: keys rooted at the frozen node, and keys it is the first hop of but not the
    // root of. Each message has a key of its own, so an `Undeliverable` report names it.
    let mut msgs: Vec<(usize, NodeId)> = Vec::new();
    let (mut rooted, mut through) = (0, 0);
    for &s in &senders {
        let mut near = Vec::new();
        while near.len() < per_sender {
            let k = NodeId::from_u128(fid.as_u128().wrapping_add(u128::from(c.rng.next_u64()) << 32));
            if c.root_of(k) == frozen {
                near.push(k);
            }
        }
        let via: Vec<NodeId> =
            through_of(frozen, s).into_iter().filter(|k| !msgs.iter().any(|m| m.1 == *k)).take(per_sender).collect();
        rooted += near.len();
        through += via.len();
        msgs.extend(near.into_iter().chain(via).map(|k| (s, k)));
    }
    assert!(
        rooted > 0 && through > 0,
        "[{} seed {seed}] no keys found: {rooted} rooted at the frozen node, {through} routed through it",
        D::NAME
    );
    for node in &c.nodes {
        node.drain_events();
    }
    c.nodes[frozen].freeze();
    c.alive[frozen] = false;
    let started = Instant::now();
    // A send the node refuses (its queue towards the next hop is full) is reported to its
    // sender too: by the send itself.
    let mut bounced: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (k, &(s, key)) in msgs.iter().enumerate() {
        let payload = Bytes::copy_from_slice(&(k as u64).to_be_bytes());
        if c.nodes[s].send(key, PURPOSE, payload).is_err() {
            bounced.entry(k).or_default().push(s);
        }
    }
    // Each time a message meets the frozen node it waits at most two ack timeouts before it is
    // rerouted (at most `max_reroutes` times); one that finds the frozen node its root waits
    // for the probes to settle, once the frozen node's neighbours have suspected it.
    let reroutes = u32::from(cfg.max_reroutes) + 1;
    let bound = cfg.leaf_detection_time() + cfg.probing_time() + 2 * cfg.ack_timeout_max * reroutes;
    // After the last message is accounted for, a copy rerouted late still has this long to
    // show up as a duplicate.
    let grace = 2 * cfg.ack_timeout_max;
    let mut delivered: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut other_errors = Vec::new();
    let index: BTreeMap<NodeId, usize> = msgs.iter().enumerate().map(|(k, &(_, key))| (key, k)).collect();
    let mut settled_at = None;
    loop {
        let mut idle = true;
        for i in (0..n).filter(|&i| i != frozen) {
            for ev in c.nodes[i].drain_events() {
                match ev {
                    Ev::Deliver(d) if d.purpose == PURPOSE && d.payload.len() == 8 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&d.payload);
                        delivered.entry(u64::from_be_bytes(b) as usize).or_default().push(i);
                        idle = false;
                    }
                    Ev::Event(Event::Error(NodeError::Undeliverable { key, purpose })) if purpose == PURPOSE => {
                        match index.get(&key) {
                            Some(&k) => bounced.entry(k).or_default().push(i),
                            None => other_errors.push(format!("node {i}: undeliverable {key}")),
                        }
                        idle = false;
                    }
                    Ev::Event(Event::Error(e @ (NodeError::QueueFull { .. } | NodeError::HopLimit { .. }))) => {
                        other_errors.push(format!("node {i}: {e}"));
                    }
                    _ => {}
                }
            }
        }
        let accounted = (0..msgs.len()).filter(|k| delivered.contains_key(k) || bounced.contains_key(k)).count();
        if accounted == msgs.len() && settled_at.is_none() {
            settled_at = Some(Instant::now());
        }
        let now = Instant::now();
        if settled_at.is_some_and(|t| now - t >= grace) || now - started >= bound + grace {
            break;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let took = settled_at.map(|t| t - started);
    let mut wrong = Vec::new();
    for (k, &(s, key)) in msgs.iter().enumerate() {
        let root = c.root_of(key);
        let got = delivered.get(&k).map_or(&[][..], Vec::as_slice);
        let told = bounced.get(&k).map_or(&[][..], Vec::as_slice);
        match (got, told) {
            ([at], []) if *at == root => {}
            ([], [at]) if *at == s => {}
            _ => wrong
                .push(format!("msg {k} from {s} key {key}: delivered at {got:?} (root {root}), reported at {told:?}")),
        }
    }
    let undeliverable = bounced.len();
    if !wrong.is_empty() || !other_errors.is_empty() {
        // What the live nodes hold and dropped: (index, messages waiting, dropped, undeliverable).
        let held: Vec<(usize, usize, u64, u64)> = (0..n)
            .filter(|&i| i != frozen)
            .filter_map(|i| {
                let (p, s) = c.nodes[i].query(|x| (x.pending_messages(), x.stats()))?;
                Some((i, p, s.dropped, s.undeliverable))
            })
            .filter(|&(_, p, d, u)| p + d as usize + u as usize > 0)
            .collect();
        panic!(
            "[{} seed {seed}] frozen node {frozen}: {} of {} messages wrong (first: {:?}); other errors: {:?}; \
             nodes holding or dropping messages (node, waiting, dropped, undeliverable): {held:?}",
            D::NAME,
            wrong.len(),
            msgs.len(),
            &wrong[..wrong.len().min(5)],
            &other_errors[..other_errors.len().min(5)]
        );
    }
    // The frozen node is declared failed everywhere, and its keys are served by the new roots.
    c.wait_converged(cfg.detection_time());
    let keys: Vec<NodeId> = msgs.iter().map(|&(_, k)| k).collect();
    c.route_keys_and_check(&keys, bound);
    if !thaw {
        c.nodes[frozen].crash();
    } else {
        // Thawed, it finds what it was sent while frozen: every message of it was delivered or
        // reported already, so none may be delivered again, there or at the roots it would
        // forward to (within an ack timeout). Then it comes back into the ring.
        c.nodes[frozen].thaw();
        let end = Instant::now() + grace;
        let mut again = Vec::new();
        while Instant::now() < end {
            for (i, node) in c.nodes.iter().enumerate() {
                for ev in node.drain_events() {
                    if let Ev::Deliver(d) = ev {
                        if d.purpose == PURPOSE && index.contains_key(&d.key) {
                            again.push(format!("msg to {} again at node {i}", d.key));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            again.is_empty(),
            "[{} seed {seed}] thawed node {frozen}: {} stale messages delivered again (first: {:?})",
            D::NAME,
            again.len(),
            &again[..again.len().min(5)]
        );
        c.alive[frozen] = true;
        c.wait_converged(cfg.detection_time());
        c.route_and_check(100, bound);
    }
    eprintln!(
        "[{}] frozen node {frozen}: {} messages ({rooted} rooted at it, {through} through it) accounted for in \
         {took:?}, {undeliverable} reported undeliverable",
        D::NAME,
        msgs.len()
    );
}

/// Instantiates every conformance scenario as a `#[test]` for a driver.
#[macro_export]
macro_rules! conformance_tests {
    ($driver:expr) => {
        #[test]
        fn cluster_of_2() {
            $crate::conformance::cluster_routes(&$driver, 2, 50, 2);
        }
        #[test]
        fn cluster_of_3() {
            $crate::conformance::cluster_routes(&$driver, 3, 100, 3);
        }
        #[test]
        fn cluster_of_20() {
            $crate::conformance::cluster_routes(&$driver, 20, 500, 20);
        }
        #[test]
        fn cluster_of_50() {
            $crate::conformance::cluster_routes(&$driver, 50, 1000, 50);
        }
        #[test]
        fn leave_and_crash() {
            $crate::conformance::leave_and_crash(&$driver, 7);
        }
        #[test]
        fn bad_credentials() {
            $crate::conformance::bad_credentials(&$driver, 11);
        }
        #[test]
        fn relay_attack() {
            $crate::conformance::relay_attack(&$driver, 29);
        }
        #[test]
        fn hostile_bytes() {
            $crate::conformance::hostile_bytes(&$driver, 13);
        }
        #[test]
        fn port_zero() {
            $crate::conformance::port_zero(&$driver, 17);
        }
        #[test]
        fn batches_and_slow_app() {
            $crate::conformance::batches_and_slow_app(&$driver, 23);
        }
        #[test]
        fn relay_waits_for_room() {
            $crate::conformance::relay_waits_for_room(&$driver, 41);
        }
        #[test]
        fn send_waits_for_room() {
            $crate::conformance::send_waits_for_room(&$driver, 43);
        }
        #[test]
        fn direct_and_hook() {
            $crate::conformance::direct_and_hook(&$driver, 19);
        }
        #[test]
        fn frozen_node() {
            $crate::conformance::frozen_node(&$driver, 31);
        }
        #[test]
        fn frozen_node_thawed() {
            $crate::conformance::frozen_node_thawed(&$driver, 37);
        }
        #[test]
        fn acks_read_before_timers() {
            $crate::overload::acks_read_before_timers(&$driver, 47);
        }
        #[test]
        fn store_survives_crashes() {
            $crate::conformance::store_survives_crashes(&$driver, 17);
        }
    };
}
