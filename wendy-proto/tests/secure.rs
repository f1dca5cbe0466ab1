//! The encrypted transport through the public API (issue 10): ids bound to keys, every frame
//! sealed, and the attacks of the plaintext handshake closed: relaying a handshake, flipping a
//! byte, replaying a session, a wrong pre-shared key, an id that is not the key's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wendy_proto::wire::{self, Direct, Message, WireError};
use wendy_proto::{
    AllowList, Config, ConnId, Event, Identity, Instant, Node, NodeError, NodeId, Output, RejectReason, SharedSecret,
    Target,
};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn identity(n: u8) -> Identity {
    Identity::from_entropy(&[n; 32])
}

/// A node with an id derived from its key, listening at port `n`.
fn config(n: u8) -> Config {
    Config::new(identity(n), addr(u16::from(n))).with_entropy([n ^ 0x5a; 32])
}

/// A byte on its way: (from node, its connection, the bytes).
type Tap<'a> = dyn FnMut(usize, ConnId, Bytes) -> Option<Bytes> + 'a;

/// Nodes joined by in-memory links, every transmitted frame passed through a tap that may
/// record, change or drop it. Node `i` listens at port `i + 1`; a dial to another port goes
/// to `relay` (the attacker's address), if set.
struct Net {
    nodes: Vec<Node>,
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    now: Instant,
    delivered: Vec<(usize, Bytes)>,
    events: Vec<(usize, Event)>,
    /// Dials to this port go to node `.1`, which sees them come from the attacker's address.
    relay: Option<(u16, usize)>,
}

impl Net {
    fn new(cfgs: Vec<Config>) -> Net {
        let nodes = cfgs.into_iter().map(|c| Node::new(c, Instant::ZERO).expect("valid config")).collect();
        Net {
            nodes,
            links: BTreeMap::new(),
            now: Instant::ZERO,
            delivered: Vec::new(),
            events: Vec::new(),
            relay: None,
        }
    }

    fn pump(&mut self, tap: &mut Tap<'_>) {
        for _ in 0..100 {
            let mut quiet = true;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    quiet = false;
                    self.on_output(i, out, tap);
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn on_output(&mut self, i: usize, out: Output, tap: &mut Tap<'_>) {
        let now = self.now;
        match out {
            Output::Connect { conn, addr: to } => {
                let (j, from) = match self.relay {
                    Some((port, j)) if to.port() == port => (j, to),
                    _ => (usize::from(to.port()) - 1, addr(i as u16 + 1)),
                };
                if j >= self.nodes.len() {
                    self.nodes[i].handle_connect_failed(now, conn);
                    return;
                }
                let theirs = self.nodes[j].handle_accepted(now, from);
                self.links.insert((i, conn), (j, theirs));
                self.links.insert((j, theirs), (i, conn));
                self.nodes[i].handle_connected(now, conn);
            }
            Output::Transmit { conn, data } => {
                if let Some(&(j, theirs)) = self.links.get(&(i, conn)) {
                    if let Some(data) = tap(i, conn, data) {
                        self.nodes[j].handle_data(now, theirs, &data);
                    }
                }
            }
            Output::Close { conn } => {
                if let Some((j, theirs)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, theirs));
                    self.nodes[j].handle_closed(now, theirs);
                }
            }
            Output::Deliver(d) => self.delivered.push((i, d.payload)),
            Output::Event(e) => self.events.push((i, e)),
            Output::Forwarded { .. } => {}
        }
    }

    fn run(&mut self, d: Duration, tap: &mut Tap<'_>) {
        let end = self.now + d;
        self.pump(tap);
        while self.now < end {
            self.now += Duration::from_millis(50);
            let now = self.now;
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
            self.pump(tap);
        }
        for n in &self.nodes {
            n.check_invariants().unwrap();
        }
    }

    fn send_to(&mut self, from: usize, to: usize, payload: &'static [u8]) {
        let id = self.nodes[to].id();
        self.nodes[from].send_to(self.now, Target::Node(id), 16, Bytes::from_static(payload)).unwrap();
    }

    fn rejections(&self, who: usize) -> Vec<(bool, RejectReason)> {
        self.events
            .iter()
            .filter(|(i, _)| *i == who)
            .filter_map(|(_, e)| match e {
                Event::PeerRejected { reason, .. } => Some((false, *reason)),
                Event::RejectedByPeer { reason, .. } => Some((true, *reason)),
                _ => None,
            })
            .collect()
    }

    fn errors(&self, who: usize) -> Vec<NodeError> {
        self.events
            .iter()
            .filter(|(i, _)| *i == who)
            .filter_map(|(_, e)| if let Event::Error(e) = e { Some(e.clone()) } else { None })
            .collect()
    }
}

fn pass() -> impl FnMut(usize, ConnId, Bytes) -> Option<Bytes> {
    |_, _, b| Some(b)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Two nodes joined: node 1 through node 0.
fn joined(cfgs: Vec<Config>, tap: &mut Tap<'_>) -> Net {
    let mut net = Net::new(cfgs);
    net.nodes[1].join(Instant::ZERO, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(3), tap);
    assert!(net.nodes[1].is_ready(), "{:?}", net.events);
    net
}

#[test]
fn ids_are_derived_from_keys_and_nothing_travels_in_the_clear() {
    let mut captured = Vec::new();
    let mut tap = |_: usize, _: ConnId, b: Bytes| {
        captured.extend_from_slice(&b);
        Some(b)
    };
    let mut cfgs = vec![config(1), config(2)];
    cfgs[0].info.region = "region-of-node-one".into();
    let mut net = joined(cfgs, &mut tap);
    assert_eq!(net.nodes[0].id(), identity(1).node_id());
    net.send_to(1, 0, b"THE-PAYLOAD-NOBODY-MAY-READ");
    let key = net.nodes[0].id();
    net.nodes[1].send(net.now, key, 16, Bytes::from_static(b"A-ROUTED-SECRET")).unwrap();
    net.run(Duration::from_secs(1), &mut tap);
    let got: Vec<&[u8]> = net.delivered.iter().map(|(_, p)| &p[..]).collect();
    assert_eq!(got, vec![&b"THE-PAYLOAD-NOBODY-MAY-READ"[..], b"A-ROUTED-SECRET"]);
    assert!(captured.len() > 500, "{} bytes captured", captured.len());
    for secret in [&b"THE-PAYLOAD-NOBODY-MAY-READ"[..], b"A-ROUTED-SECRET", b"region-of-node-one"] {
        assert!(!contains(&captured, secret), "{} in the clear", String::from_utf8_lossy(secret));
    }
    for n in &net.nodes {
        assert!(!contains(&captured, &n.id().to_bytes()), "a node id in the clear");
    }
    // The same exchange in plaintext shows the payload: the capture is a real one.
    let mut plain = Vec::new();
    let mut tap = |_: usize, _: ConnId, b: Bytes| {
        plain.extend_from_slice(&b);
        Some(b)
    };
    let mut net = joined(vec![config(1).insecure_plaintext(), config(2).insecure_plaintext()], &mut tap);
    net.send_to(1, 0, b"THE-PAYLOAD-NOBODY-MAY-READ");
    net.run(Duration::from_secs(1), &mut tap);
    assert!(contains(&plain, b"THE-PAYLOAD-NOBODY-MAY-READ"));
}

#[test]
fn a_flipped_byte_closes_the_connection_and_the_nodes_recover() {
    let mut net = joined(vec![config(1), config(2)], &mut pass());
    let armed = std::cell::Cell::new(true);
    let mut flip = |from: usize, _: ConnId, b: Bytes| {
        if from == 1 && b.len() > 40 && armed.replace(false) {
            let mut v = b.to_vec();
            v[30] ^= 0x01;
            return Some(Bytes::from(v));
        }
        Some(b)
    };
    net.send_to(1, 0, b"tampered on the way");
    net.run(Duration::from_millis(100), &mut flip);
    assert!(!armed.get(), "the tap flipped a byte");
    assert!(net.delivered.is_empty(), "a tampered frame was delivered");
    assert_eq!(net.errors(0), vec![NodeError::Decode { conn: ConnId(1), error: WireError::Unauthenticated }]);
    assert_eq!(net.nodes[0].stats().auth_failures, 1);
    assert!(NodeError::Decode { conn: ConnId(1), error: WireError::Unauthenticated }
        .to_string()
        .contains("failed authentication"));
    // Both sides dropped the connection; the next message opens a new one.
    net.send_to(1, 0, b"after the repair");
    net.run(Duration::from_secs(5), &mut pass());
    let got: Vec<&[u8]> = net.delivered.iter().map(|(_, p)| &p[..]).collect();
    assert_eq!(got, vec![&b"after the repair"[..]]);
    assert!(net.nodes[0].leaf_set().contains(net.nodes[1].id()));
    assert!(net.nodes[1].leaf_set().contains(net.nodes[0].id()));
}

#[test]
fn a_replayed_session_is_rejected() {
    let secret = || Arc::new(SharedSecret::new("cluster"));
    let mut recording: Vec<Bytes> = Vec::new();
    let mut rec = |from: usize, _: ConnId, b: Bytes| {
        if from == 1 {
            recording.push(b.clone());
        }
        Some(b)
    };
    let mut net = joined(vec![config(1).with_credentials(secret()), config(2).with_credentials(secret())], &mut rec);
    net.send_to(1, 0, b"recorded once");
    net.run(Duration::from_millis(200), &mut rec);
    assert_eq!(net.delivered.len(), 1);
    assert!(recording.len() >= 4, "handshake and data recorded");
    let before = net.nodes[0].stats();
    // The whole recording, played on a fresh connection: the acceptor's new ephemeral key makes
    // the dialler's recorded last handshake message fail.
    let now = net.now;
    let evil = net.nodes[0].handle_accepted(now, addr(66));
    for b in &recording {
        net.nodes[0].handle_data(now, evil, b);
    }
    let outs: Vec<Output> = std::iter::from_fn(|| net.nodes[0].poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(o, Output::Close { conn } if *conn == evil)));
    assert!(!outs.iter().any(|o| matches!(o, Output::Deliver(_))), "{outs:?}");
    let after = net.nodes[0].stats();
    assert_eq!(after.delivered, before.delivered);
    assert_eq!(after.rejected_peers, before.rejected_peers + 1);
    // The recorded data frames, replayed on the live connection: their nonces are spent.
    let live = *net.links.keys().find(|(i, _)| *i == 0).map(|(_, c)| c).expect("a live connection");
    let data = recording.last().expect("recorded").clone();
    net.nodes[0].handle_data(now, live, &data);
    let outs: Vec<Output> = std::iter::from_fn(|| net.nodes[0].poll_output()).collect();
    assert!(!outs.iter().any(|o| matches!(o, Output::Deliver(_))), "{outs:?}");
    assert!(outs.iter().any(|o| matches!(o, Output::Close { conn } if *conn == live)));
    assert_eq!(net.nodes[0].stats().auth_failures, after.auth_failures + 1);
}

#[test]
fn a_wrong_pre_shared_key_is_rejected_and_both_sides_say_why() {
    let mut net = Net::new(vec![
        config(1).with_credentials(Arc::new(SharedSecret::new("right"))),
        config(2).with_credentials(Arc::new(SharedSecret::new("wrong"))),
    ]);
    net.nodes[1].join(Instant::ZERO, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(2), &mut pass());
    // One refusal per join attempt, each told to the joiner.
    let (r0, r1) = (net.rejections(0), net.rejections(1));
    assert!(!r0.is_empty() && r0.iter().all(|r| *r == (false, RejectReason::BadCredentials)), "{r0:?}");
    assert_eq!(r1, vec![(true, RejectReason::BadCredentials); r0.len()]);
    assert!(RejectReason::BadCredentials.to_string().contains("pre-shared key"));
    assert!(net.nodes[0].peer(net.nodes[1].id()).is_none());
    assert!(net.nodes[1].leaf_set().is_empty());
}

#[test]
fn an_id_that_is_not_the_keys_is_rejected_either_way() {
    // A node that chose its id (trusting mode) dials one that derives ids from keys...
    let chosen = Config::with_trusted_id(NodeId::from_u128(42), addr(2)).with_entropy([9; 32]);
    let mut net = Net::new(vec![config(1), chosen]);
    net.nodes[1].join(Instant::ZERO, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(2), &mut pass());
    let (r0, r1) = (net.rejections(0), net.rejections(1));
    assert!(!r0.is_empty() && r0.iter().all(|r| *r == (false, RejectReason::WrongKey)), "{r0:?}");
    assert_eq!(r1, vec![(true, RejectReason::WrongKey); r0.len()]);
    assert!(net.nodes[0].peer(NodeId::from_u128(42)).is_none());
    // ...and the other way round: the dialler checks the acceptor's id at once.
    let chosen = Config::with_trusted_id(NodeId::from_u128(43), addr(1)).with_entropy([8; 32]);
    let mut net = Net::new(vec![chosen, config(2)]);
    net.nodes[1].join(Instant::ZERO, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(2), &mut pass());
    assert_eq!(net.rejections(1)[0], (false, RejectReason::WrongKey));
    assert_eq!(net.rejections(0)[0], (true, RejectReason::WrongKey));
    assert_eq!(RejectReason::WrongKey.to_string(), "its node id is not derived from the key it proved");
    // Two trusting nodes accept each other's chosen ids.
    let t = |n: u8| Config::with_trusted_id(NodeId::from_u128(u128::from(n) << 120), addr(u16::from(n)));
    let net = joined(vec![t(1).with_entropy([1; 32]), t(2).with_entropy([2; 32])], &mut pass());
    assert!(net.rejections(0).is_empty() && net.rejections(1).is_empty());
}

#[test]
fn an_allow_list_admits_only_its_keys() {
    let list = Arc::new(AllowList::new([identity(1).public(), identity(2).public()]));
    let mut net = joined(
        vec![config(1).with_credentials(list.clone()), config(2).with_credentials(list.clone()), config(3)],
        &mut pass(),
    );
    // Node 3 (not listed, no credentials of its own) tries to join.
    let now = net.now;
    net.nodes[2].join(now, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(2), &mut pass());
    assert!(net.rejections(0).contains(&(false, RejectReason::BadCredentials)));
    assert!(net.rejections(2).contains(&(true, RejectReason::BadCredentials)));
    assert!(net.nodes[0].peer(net.nodes[2].id()).is_none());
}

/// The relay of issue 10: the attacker gets V to dial it, passes V's handshake to X and X's
/// back, then injects frames of its own on both connections. With Noise the attacker holds no
/// session key: it can only carry V's and X's sealed frames, and whatever it adds fails.
#[test]
fn a_relayed_handshake_gives_the_attacker_nothing() {
    const ATTACKER: u16 = 66;
    let secret = || Arc::new(SharedSecret::new("cluster"));
    // X = node 0, V = node 1; V is made to dial the attacker's address, which reaches X.
    let mut net = Net::new(vec![config(1).with_credentials(secret()), config(2).with_credentials(secret())]);
    net.relay = Some((ATTACKER, 0));
    let mut relayed = 0usize;
    let mut count = |_: usize, _: ConnId, b: Bytes| {
        relayed += b.len();
        Some(b)
    };
    net.nodes[1].join(Instant::ZERO, &[addr(ATTACKER)]).unwrap();
    net.run(Duration::from_secs(3), &mut count);
    assert!(relayed > 0);
    // The attacker injects: a plaintext message, a forged sealed frame, a handshake message.
    let forged_plain = wire::encode(&Message::Direct(Direct {
        purpose: 16,
        origin: net.nodes[1].id(),
        payload: Bytes::from_static(b"INJECTED"),
    }));
    let mut forged_sealed = vec![0, 0, 0, 41, 0xE2];
    forged_sealed.extend_from_slice(&[0x42; 40]);
    let mut forged_hs = vec![0, 0, 0, 33, 0xE0];
    forged_hs.extend_from_slice(&[7; 32]);
    for (k, frame) in [&forged_plain[..], &forged_sealed, &forged_hs].into_iter().enumerate() {
        for (i, conn) in net.links.keys().copied().collect::<Vec<_>>() {
            net.nodes[i].handle_data(net.now, conn, frame);
        }
        net.pump(&mut pass());
        assert!(net.links.is_empty() || k == 0, "every injected frame closes its connection");
    }
    net.run(Duration::from_secs(3), &mut pass());
    assert!(!net.delivered.iter().any(|(_, p)| &p[..] == b"INJECTED"));
    assert!(net.delivered.is_empty());
    for i in 0..2 {
        assert!(net.errors(i).iter().any(|e| matches!(e, NodeError::Decode { .. })), "node {i}: {:?}", net.errors(i));
        // Nobody is recorded at the attacker's address: the node info came sealed from X and V.
        let n = &net.nodes[i];
        for id in n.leaf_set().members().into_iter().chain(n.routing_table().iter().map(|c| c.id)) {
            let info = n.peer(id).expect("known");
            assert_ne!(info.global.port(), ATTACKER);
            assert_ne!(info.local.port(), ATTACKER);
        }
    }
}

#[test]
fn rekeying_is_transparent_and_large_frames_are_chunked() {
    let mut cfgs = vec![config(1), config(2)];
    for c in &mut cfgs {
        c.rekey_after = 3;
    }
    let mut net = joined(cfgs, &mut pass());
    for _ in 0..20 {
        net.send_to(1, 0, b"x");
        net.send_to(0, 1, b"y");
    }
    let big = Bytes::from(vec![0xab; 300_000]);
    let to = net.nodes[0].id();
    net.nodes[1].send_to(net.now, Target::Node(to), 17, big.clone()).unwrap();
    net.run(Duration::from_secs(1), &mut pass());
    assert_eq!(net.delivered.len(), 41);
    assert_eq!(net.delivered.iter().filter(|(i, p)| *i == 0 && *p == big).count(), 1);
    assert!(net.errors(0).is_empty() && net.errors(1).is_empty());
}

#[test]
fn plaintext_and_encrypted_nodes_do_not_talk_and_say_so() {
    let mut net = Net::new(vec![config(1), config(2).insecure_plaintext()]);
    net.nodes[1].join(Instant::ZERO, &[addr(1)]).unwrap();
    net.run(Duration::from_secs(2), &mut pass());
    let e = net.errors(0);
    assert!(
        matches!(e[0], NodeError::Decode { error: WireError::FrameKind(wendy_proto::wire::PROTOCOL_VERSION), .. }),
        "{e:?}"
    );
    assert!(e[0].to_string().contains("insecure plaintext"));
    assert!(net.nodes[0].leaf_set().is_empty() && net.nodes[1].leaf_set().is_empty());
}

#[test]
fn the_default_configuration_checks_its_own_id() {
    let mut c = config(1);
    c.info.id = NodeId::from_u128(5);
    assert_eq!(c.validate(), Err(wendy_proto::ConfigError::IdNotFromKey));
    let c = Config::with_trusted_id(NodeId::from_u128(1), addr(1))
        .insecure_plaintext()
        .with_credentials(Arc::new(AllowList::new([])));
    assert_eq!(c.validate(), Err(wendy_proto::ConfigError::PlaintextCredentials));
}
