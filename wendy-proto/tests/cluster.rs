//! Whole-cluster scenarios on the in-memory harness: join, route, leave, crash, determinism.

use core::time::Duration;

use wendy_proto::harness::Harness;
use wendy_proto::rng::Rng;
use wendy_proto::wire::Message;
use wendy_proto::{Event, MemberConnections, NodeId};

/// Builds a cluster of `n` nodes with ids from `seed`; joined one by one (each waiting until
/// the previous is ready) or concurrently (10 ms apart) through random earlier nodes.
fn cluster(n: usize, seed: u64, concurrent: bool) -> Harness {
    // Clusters of hundreds of nodes check routing at scale in plaintext: a Noise handshake
    // costs about 0.7 ms of CPU, and such a cluster makes tens of thousands of them.
    // Encryption is covered by the smaller clusters here and by tests/secure.rs.
    let plaintext = n >= 300;
    cluster_with(n, seed, concurrent, move |id, addr| {
        let c = wendy_proto::Config::with_trusted_id(id, addr);
        if plaintext {
            c.insecure_plaintext()
        } else {
            c
        }
    })
}

/// [`cluster`] with every node's configuration from `configure`.
fn cluster_with(
    n: usize,
    seed: u64,
    concurrent: bool,
    configure: impl FnMut(NodeId, std::net::SocketAddr) -> wendy_proto::Config + 'static,
) -> Harness {
    let mut h = Harness::new(seed);
    h.configure = Box::new(configure);
    h.grow(n, &mut Rng::new(seed), concurrent.then_some(Duration::from_millis(10)));
    assert!(h.run_until_ready(Duration::from_secs(60)), "seed {seed}: cluster of {n} did not converge");
    // Let announcements and leaf-set exchanges settle.
    h.run_for(Duration::from_secs(5));
    h
}

struct Outcome {
    delivered: usize,
    wrong: usize,
    duplicates: usize,
    mean_hops: f64,
    max_hops: u8,
}

/// Sends `m` keys from random live nodes and checks where they land.
fn lookups(h: &mut Harness, m: usize, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed ^ 0x5eed);
    h.clear_observations();
    let live: Vec<usize> = (0..h.len()).filter(|&i| h.is_alive(i) && h.node(i).is_ready()).collect();
    let mut keys = Vec::new();
    for k in 0..m {
        let from = live[rng.below(live.len() as u64) as usize];
        let key = NodeId::from_u128(rng.next_u128());
        keys.push(key);
        h.send(from, key, 16, &(k as u32).to_be_bytes());
        h.run_for(Duration::from_millis(1));
    }
    h.run_for(Duration::from_secs(3));
    let mut seen = vec![0usize; m];
    let mut wrong = 0;
    let mut hops = Vec::new();
    for o in h.deliveries() {
        let k = u32::from_be_bytes(o.delivery.payload[..4].try_into().unwrap()) as usize;
        seen[k] += 1;
        hops.push(o.delivery.hops);
        if Some(o.node) != h.closest_ready(keys[k]) {
            wrong += 1;
        }
    }
    Outcome {
        delivered: seen.iter().filter(|&&c| c >= 1).count(),
        wrong,
        duplicates: seen.iter().filter(|&&c| c > 1).count(),
        mean_hops: hops.iter().map(|&x| f64::from(x)).sum::<f64>() / hops.len().max(1) as f64,
        max_hops: hops.iter().copied().max().unwrap_or(0),
    }
}

fn check_routing(n: usize, seed: u64, concurrent: bool) {
    let mut h = cluster(n, seed, concurrent);
    let m = 300;
    let o = lookups(&mut h, m, seed);
    let log16 = (n as f64).ln() / 16f64.ln();
    eprintln!(
        "n={n} concurrent={concurrent} seed={seed}: delivered {}/{m}, wrong {}, mean hops {:.2}, max {}, frames/node {:.0}",
        o.delivered,
        o.wrong,
        o.mean_hops,
        o.max_hops,
        h.frames() as f64 / n as f64
    );
    assert_eq!(o.delivered, m, "seed {seed}: every key delivered");
    assert_eq!(o.duplicates, 0, "seed {seed}: each exactly once");
    assert_eq!(o.wrong, 0, "seed {seed}: each at the numerically closest node");
    assert!(o.mean_hops < log16 + 1.0, "seed {seed}: mean hops {} vs log16(N)+1 = {}", o.mean_hops, log16 + 1.0);
    assert!(f64::from(o.max_hops) <= log16.ceil() + 2.0, "seed {seed}: max hops {}", o.max_hops);
    for i in 0..n {
        h.node(i).check_invariants().unwrap_or_else(|e| panic!("seed {seed}: node {i}: {e}"));
    }
}

#[test]
fn two_nodes() {
    check_routing(2, 1, false);
}

#[test]
fn three_nodes() {
    check_routing(3, 2, false);
    check_routing(3, 3, true);
}

#[test]
fn sixteen_nodes() {
    check_routing(16, 4, false);
    check_routing(16, 5, true);
}

#[test]
fn rings_whose_leaf_set_sides_overlap() {
    // Between L/2 + 1 and L + 1 nodes both sides of every leaf set are full and share members.
    check_routing(20, 13, true);
    check_routing(33, 14, false);
}

#[test]
fn hundred_nodes() {
    check_routing(100, 6, false);
    check_routing(100, 7, true);
}

#[test]
fn thousand_nodes() {
    check_routing(1000, 8, false);
    check_routing(1000, 9, true);
}

/// Every live node's tables, as one list, for "has it disappeared" checks.
fn holders_of(h: &Harness, id: NodeId) -> Vec<usize> {
    (0..h.len())
        .filter(|&i| h.is_alive(i) && !h.node(i).has_left())
        .filter(|&i| {
            let n = h.node(i);
            n.leaf_set().contains(id) || n.routing_table().contains(id) || n.neighbourhood().contains(id)
        })
        .collect()
}

#[test]
fn graceful_leave_and_crash_are_repaired() {
    let seed = 11;
    let mut h = cluster(100, seed, true);
    let detection = h.node(0).config().detection_time();
    let leaver = 10;
    let crasher = 20;
    let (leaver_id, crasher_id) = (h.node(leaver).id(), h.node(crasher).id());
    assert!(!holders_of(&h, leaver_id).is_empty());
    h.leave(leaver);
    h.crash(crasher);
    // A graceful leave is known at once (a few round trips).
    h.run_for(Duration::from_millis(500));
    let left_events =
        h.events().iter().filter(|(_, _, e)| matches!(e, Event::NodeLeft(i) if i.id == leaver_id)).count();
    assert!(left_events > 0, "seed {seed}: NodeLeft fired for the leaver");
    h.crash(leaver);
    // A crash within the detection time.
    h.run_for(detection);
    assert_eq!(holders_of(&h, leaver_id), Vec::<usize>::new(), "seed {seed}: leaver still in tables");
    assert_eq!(holders_of(&h, crasher_id), Vec::<usize>::new(), "seed {seed}: crashed node still in tables");
    let o = lookups(&mut h, 300, seed);
    assert_eq!((o.delivered, o.wrong), (300, 0), "seed {seed}: routing after leave and crash");
}

#[test]
fn leaf_side_crash_of_all_but_one_is_repaired() {
    let seed = 12;
    let mut h = cluster(120, seed, true);
    let v = 0;
    let cw: Vec<NodeId> = h.node(v).leaf_set().cw().to_vec();
    let half = h.node(v).leaf_set().half();
    assert_eq!(cw.len(), half);
    // Crash every clockwise member but the farthest.
    for id in &cw[..half - 1] {
        let i = (0..h.len()).find(|&i| h.node(i).id() == *id).unwrap();
        h.crash(i);
    }
    let detection = h.node(v).config().detection_time();
    h.run_for(detection + Duration::from_secs(2));
    let me = h.node(v).id();
    let mut expected: Vec<NodeId> = h.ready_ids().into_iter().filter(|&x| x != me).collect();
    expected.sort_by_key(|&x| me.cw_distance(x));
    expected.truncate(half);
    assert_eq!(h.node(v).leaf_set().cw(), &expected[..], "seed {seed}: clockwise side repaired");
    let o = lookups(&mut h, 200, seed);
    assert_eq!((o.delivered, o.wrong), (200, 0), "seed {seed}: routing after the repair");
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut h = cluster(100, seed, true);
        lookups(&mut h, 100, seed);
        h.trace_hash()
    };
    assert_eq!(run(21), run(21));
    assert_ne!(run(21), run(22));
}

#[test]
fn join_messages_are_bounded() {
    // Without heartbeats in the way, count the frames one join costs the whole network.
    let seed = 31;
    let n = 1000;
    let mut h = cluster_with(n, seed, true, |id, addr| {
        // Plaintext, as the other 1,000-node clusters (the frame count is the same).
        let mut c = wendy_proto::Config::with_trusted_id(id, addr).insecure_plaintext();
        c.heartbeat_interval = Duration::from_secs(3600);
        c.suspect_timeout = Duration::from_secs(36000);
        c.table_probe_interval = Duration::from_secs(36000);
        c.leaf_exchange_interval = Duration::from_secs(36000);
        // Idle connections close at their own deadline (not at the next hourly tick): keep
        // them open so that only the join's frames are counted.
        c.idle_timeout = Duration::from_secs(36000);
        c
    });
    h.run_for(Duration::from_secs(10));
    let joiner = h.add_node(NodeId::from_u128(Rng::new(seed ^ 1).next_u128()));
    let before = h.frames();
    h.join(joiner, 0);
    assert!(h.run_until_ready(Duration::from_secs(30)));
    h.run_for(Duration::from_secs(10));
    let cost = h.frames() - before;
    let log16 = (n as f64).ln() / 16f64.ln();
    let l = 32.0;
    // Each table member costs an announce and its answer (and a 3-frame handshake on a new
    // connection): bounded by a constant times (15 log16 N + L + M).
    let bound = 5.0 * (16.0 * log16.ceil() + l + 32.0);
    eprintln!("one join into {n} nodes cost {cost} frames (bound {bound:.0})");
    assert!((cost as f64) < bound, "seed {seed}: join cost {cost} frames");
}

#[test]
fn no_node_is_root_before_its_join_completes() {
    // Keys aimed at the joiners' own ids while they join: each must land at a node that was
    // ready at that moment and was the closest ready node then.
    let seed = 41;
    let mut h = cluster(40, seed, true);
    // Not `seed` itself: that stream made the first 40 ids.
    let mut rng = Rng::new(seed ^ 0x9e37);
    let first_new = h.len();
    for _ in 0..20 {
        h.add_node(NodeId::from_u128(rng.next_u128()));
    }
    h.clear_observations();
    let mut sent = 0usize;
    for i in first_new..h.len() {
        h.join(i, rng.below(first_new as u64) as usize);
    }
    // Lookups towards each joiner's id (and just past it) while joins are in flight.
    let mut expected = Vec::new();
    let mut judged = 0;
    for round in 0..60 {
        for i in first_new..h.len() {
            let key = NodeId::from_u128(h.node(i).id().as_u128().wrapping_add(round));
            let from = rng.below(first_new as u64) as usize;
            h.send(from, key, 16, &(sent as u32).to_be_bytes());
            expected.push(key);
            sent += 1;
        }
        h.run_for(Duration::from_millis(20));
        // Judge deliveries as they happen: the oracle at delivery time.
        for o in h.deliveries() {
            let k = u32::from_be_bytes(o.delivery.payload[..4].try_into().unwrap()) as usize;
            assert!(h.node(o.node).is_ready(), "seed {seed}: node {} delivered before its join completed", o.node);
            let best = h.closest_ready(expected[k]).unwrap();
            assert_eq!(o.node, best, "seed {seed}: key {k} delivered at {} instead of {best}", o.node);
            judged += 1;
        }
        h.clear_observations();
    }
    assert!(h.run_until_ready(Duration::from_secs(30)));
    h.run_for(Duration::from_secs(1));
    judged += h.deliveries().len();
    assert_eq!(judged, sent, "seed {seed}: every lookup delivered");
}

#[test]
fn forward_hook_vetoes_and_rewrites() {
    let seed = 51;
    let mut h = cluster(30, seed, true);
    for i in 0..h.len() {
        h.node_mut(i).set_forward_hook(Box::new(|m: &mut wendy_proto::Forwarding, _: &wendy_proto::NodeInfo| match m
            .purpose
        {
            17 => false,
            18 => {
                m.payload = bytes::Bytes::from_static(b"rewritten");
                true
            }
            _ => true,
        }));
    }
    let now = h.now();
    let mut rng = Rng::new(seed ^ 0x77);
    let (mut remote17, mut remote18) = (0, 0);
    for _ in 0..50 {
        let key = NodeId::from_u128(rng.next_u128());
        let from = rng.below(h.len() as u64) as usize;
        let local = h.closest_ready(key) == Some(from);
        for purpose in [17u8, 18] {
            h.node_mut(from).send(now, key, purpose, bytes::Bytes::from_static(b"original")).unwrap();
            h.drain(from);
        }
        if !local {
            remote17 += 1;
            remote18 += 1;
        }
    }
    h.run_for(Duration::from_secs(2));
    let d17 = h.deliveries().iter().filter(|o| o.delivery.purpose == 17).count();
    let rewritten =
        h.deliveries().iter().filter(|o| o.delivery.purpose == 18 && &o.delivery.payload[..] == b"rewritten");
    assert_eq!(d17, 50 - remote17, "vetoed messages that had to travel are not delivered");
    assert_eq!(rewritten.count(), remote18, "every forwarded message was rewritten");
    // A neighbour heard from within a heartbeat gets none: wait out a whole suspicion.
    let c = h.node(0).config();
    let wait = c.suspect_timeout + c.heartbeat_interval * 2;
    h.run_for(wait);
    assert!(h.heartbeats() > 0);
}

#[test]
fn regions_use_local_addresses_and_weigh_proximity() {
    // Even nodes in region "east", odd in "west"; local addresses on port 7000, global on 9000.
    let seed = 61;
    let h = cluster_with(24, seed, true, |id, local| {
        let index = u32::from(match local.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => unreachable!("the harness uses IPv4"),
        }) & 0xffff;
        let region = if index % 2 == 0 { "east" } else { "west" };
        let global = std::net::SocketAddr::new(local.ip(), 9000);
        wendy_proto::Config::with_trusted_id(id, local).with_region(region, local, global)
    });
    // Every dial after the bootstrap joins picks the address by region.
    let mut checked = 0;
    for &(from, addr) in h.dials() {
        let to = (0..h.len()).find(|&j| h.node(j).info().local == addr || h.node(j).info().global == addr).unwrap();
        let same = h.node(from).info().region == h.node(to).info().region;
        if addr != Harness::addr_of(to) || same {
            assert_eq!(addr.port() == 7000, same, "node {from} dialled {to} at {addr}");
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} dials checked");
    // Proximity is the measured round trip, times 5 across regions.
    let n0 = h.node(0);
    let mut seen = (false, false);
    for j in 1..h.len() {
        if let Some(p) = n0.proximity(h.node(j).id()) {
            let rtt = 2 * h.latency(0, j).as_micros() as u64;
            let factor = if j % 2 == 0 { 1 } else { 5 };
            assert!(p >= rtt * factor && p <= (rtt + 2_000) * factor, "node {j}: proximity {p} for rtt {rtt}");
            if j % 2 == 0 {
                seen.0 = true
            } else {
                seen.1 = true
            }
        }
    }
    assert_eq!(seen, (true, true));
}

#[test]
fn routing_table_holes_are_refilled_from_the_same_row() {
    let seed = 71;
    let mut h = cluster(300, seed, true);
    let victim = 7;
    let vid = h.node(victim).id();
    // Who holds the victim in its routing table, and in which cell.
    let holes: Vec<(usize, usize, usize)> = (0..h.len())
        .filter(|&i| i != victim && h.node(i).routing_table().contains(vid))
        .map(|i| {
            let me = h.node(i).id();
            let row = me.common_prefix_len(vid);
            (i, row, usize::from(vid.digit(row)))
        })
        .collect();
    assert!(!holes.is_empty());
    h.crash(victim);
    let detection = h.node(0).config().detection_time();
    h.run_for(detection + Duration::from_secs(2));
    // A hole can be refilled only if some live node fits the cell.
    let ready = h.ready_ids();
    let (mut fillable, mut filled) = (0, 0);
    for &(i, row, col) in &holes {
        let me = h.node(i).id();
        let fits = ready.iter().any(|&x| x != me && me.common_prefix_len(x) == row && usize::from(x.digit(row)) == col);
        if fits {
            fillable += 1;
            filled += usize::from(h.node(i).routing_table().get(row, col).is_some());
        }
    }
    eprintln!("{} holders, {fillable} holes fillable, {filled} refilled", holes.len());
    assert!(fillable > 0, "seed {seed}: the scenario has fillable holes");
    assert!(filled * 10 >= fillable * 9, "seed {seed}: only {filled} of {fillable} holes refilled");
}

#[test]
fn direct_messages_reach_a_node_by_id_or_address() {
    let mut h = cluster(10, 81, true);
    let now = h.now();
    let (a, b) = (2, 5);
    let bid = h.node(b).id();
    h.node_mut(a).send_to(now, wendy_proto::Target::Node(bid), 20, bytes::Bytes::from_static(b"by id")).unwrap();
    h.node_mut(a)
        .send_to(now, wendy_proto::Target::Addr(Harness::addr_of(b)), 21, bytes::Bytes::from_static(b"by addr"))
        .unwrap();
    h.drain(a);
    let unknown = NodeId::from_u128(12345);
    assert_eq!(
        h.node_mut(a).send_to(now, wendy_proto::Target::Node(unknown), 20, bytes::Bytes::new()),
        Err(wendy_proto::CommandError::UnknownNode(unknown))
    );
    h.run_for(Duration::from_secs(1));
    let got: Vec<(usize, u8, bool, &[u8])> = h
        .deliveries()
        .iter()
        .map(|o| (o.node, o.delivery.purpose, o.delivery.direct, &o.delivery.payload[..]))
        .collect();
    assert_eq!(got, vec![(b, 20, true, &b"by id"[..]), (b, 21, true, &b"by addr"[..])]);
}

#[test]
fn idle_connections_close_without_losing_messages() {
    // Connections idle out every fraction of a second while lookups flow: the graceful close
    // (Closing, and the peer's close in answer) must not lose a frame written while the close
    // was in flight.
    let seed = 91;
    let n = 150;
    let mut h = cluster_with(n, seed, true, |id, addr| {
        // Plaintext: the harness counts `Closing` frames by their bytes.
        let mut c = wendy_proto::Config::with_trusted_id(id, addr).insecure_plaintext();
        c.idle_timeout = Duration::from_millis(150);
        c.heartbeat_interval = Duration::from_millis(100);
        c.suspect_timeout = Duration::from_millis(600);
        c.probe_timeout = Duration::from_millis(300);
        // Connections the peer dialled are kept for one longest probe period more.
        c.table_probe_interval = Duration::from_millis(300);
        c.table_probe_min = Duration::from_millis(100);
        c.leaf_set_size = 8;
        c
    });
    let m = 3000;
    let (closing_before, closes_before) = (h.closing_frames(), h.closes());
    // Lookups, and direct messages between random nodes: connections to table members stay
    // open (their probes use them), so the direct messages make the connections that idle out
    // while lookups flow.
    let mut rng = Rng::new(seed ^ 0x5eed);
    h.clear_observations();
    let (mut keys, mut sent) = (Vec::new(), 0);
    for k in 0..m {
        let from = rng.below(n as u64) as usize;
        let key = NodeId::from_u128(rng.next_u128());
        keys.push(key);
        h.send(from, key, 16, &(k as u32).to_be_bytes());
        let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
        if a != b {
            let (now, to) = (h.now(), Harness::addr_of(b));
            let payload = bytes::Bytes::copy_from_slice(&(k as u32).to_be_bytes());
            h.node_mut(a).send_to(now, wendy_proto::Target::Addr(to), 17, payload).unwrap();
            h.drain(a);
            sent += 1;
        }
        h.run_for(Duration::from_millis(1));
    }
    h.run_for(Duration::from_secs(3));
    let mut seen = vec![0usize; m];
    let mut wrong = 0;
    for o in h.deliveries().iter().filter(|o| o.delivery.purpose == 16) {
        let k = u32::from_be_bytes(o.delivery.payload[..4].try_into().unwrap()) as usize;
        seen[k] += 1;
        wrong += usize::from(Some(o.node) != h.closest_ready(keys[k]));
    }
    let directs = h.deliveries().iter().filter(|o| o.delivery.purpose == 17).count();
    let closing = h.closing_frames() - closing_before;
    let closes = h.closes() - closes_before;
    let delivered = seen.iter().filter(|&&c| c >= 1).count();
    let duplicates = seen.iter().filter(|&&c| c > 1).count();
    eprintln!("delivered {delivered}/{m}, wrong {wrong}, directs {directs}, Closing frames {closing}, closes {closes}");
    assert_eq!((delivered, wrong, duplicates), (m, 0, 0), "seed {seed}");
    assert_eq!(directs, sent, "seed {seed}: every direct message delivered once");
    // Connections did idle out while the lookups flowed: each graceful close is a `Closing`
    // from the idle side, then the other side's close, its answer (no `Closing` in answer).
    assert!(closing >= 10 * n as u64, "seed {seed}: only {closing} Closing frames among {n} nodes");
    // Counted at an arbitrary instant, a few closes are still in flight (a `Closing` written,
    // the close in answer not yet): allow 1 %.
    assert!(closes * 100 >= closing * 99, "seed {seed}: {closing} Closing frames but only {closes} closes");
}

#[test]
fn a_healed_partition_merges_into_one_ring() {
    let seed = 101;
    let n = 60;
    let mut h = cluster_with(n, seed, true, |id, addr| {
        // A 1 s heartbeat: the halves declare each other gone within a minute, well inside
        // the ten minutes a departed leaf-set member is re-probed.
        let mut c = wendy_proto::Config::with_trusted_id(id, addr).with_heartbeat(Duration::from_secs(1));
        c.leaf_exchange_interval = Duration::from_secs(5);
        c
    });
    // Split into two halves, long enough that each declares the other gone and repairs alone.
    let side: Vec<usize> = (0..n).filter(|i| i % 2 == 0).collect();
    h.partition(&side);
    let detection = h.node(0).config().detection_time();
    h.run_for(detection + Duration::from_secs(5));
    let other = h.node(1).id();
    assert!(!h.node(0).leaf_set().contains(other) && !h.node(0).routing_table().contains(other));
    h.repair();
    h.run_for(Duration::from_secs(40));
    let o = lookups(&mut h, 500, seed);
    assert_eq!((o.delivered, o.wrong), (500, 0), "seed {seed}: one ring again after the partition healed");
}

/// Sums a footprint entry over every node of the cluster.
fn footprint_total(h: &Harness, name: &str) -> (usize, usize) {
    let (mut bytes, mut conns) = (0, 0);
    for i in 0..h.len() {
        let n = h.node(i);
        bytes += n.memory_footprint().iter().filter(|e| e.0 == name).map(|e| e.1).sum::<usize>();
        conns += n.connection_count();
    }
    (bytes, conns)
}

#[test]
fn idle_connections_give_their_buffers_back() {
    // `Config::idle_timeout`: a connection kept open to a table member gives its buffers back
    // once it has been idle that long. Encrypted (the default), so that every connection that
    // carried a record holds a receive buffer while it is in use.
    let seed = 17;
    let n = 12;
    let mut h = cluster_with(n, seed, false, |id, addr| {
        let mut c = wendy_proto::Config::with_trusted_id(id, addr);
        // Table members probed at the longest period: the quiet phase below is quiet.
        c.table_probe_min = c.table_probe_interval;
        c
    });
    let out = lookups(&mut h, 400, seed);
    assert_eq!(out.delivered, 400);
    let (busy_queues, busy_count) = footprint_total(&h, "conn_queues");
    let (busy_conns, _) = footprint_total(&h, "conns");
    let (busy_acks, _) = footprint_total(&h, "acks");
    assert!(busy_queues > 0 && busy_count > 0);
    // Quiet: only heartbeats (to one neighbour each) and rare probes keep a connection busy.
    let idle = wendy_proto::Config::with_trusted_id(NodeId::from_u128(1), Harness::addr_of(0)).idle_timeout;
    h.run_for(idle * 3);
    let (quiet_queues, quiet_count) = footprint_total(&h, "conn_queues");
    let (quiet_conns, _) = footprint_total(&h, "conns");
    let (quiet_acks, _) = footprint_total(&h, "acks");
    assert_eq!(quiet_count, busy_count, "connections to table members stay open");
    // An in-flight queue that carried one message at a time is given back as soon as it is
    // handed on; one a burst grew, once idle: what is left is each connection's counters.
    assert!(quiet_acks <= busy_acks, "in-flight state: {busy_acks} B busy, {quiet_acks} B after {idle:?} idle");
    assert!(
        quiet_acks <= 160 * quiet_count,
        "in-flight state after {idle:?} idle: {quiet_acks} B over {quiet_count} connections"
    );
    assert!(quiet_queues * 4 < busy_queues, "buffers held: {busy_queues} B busy, {quiet_queues} B after {idle:?} idle");
    let (busy_per, quiet_per) = (busy_conns / busy_count, quiet_conns / quiet_count);
    assert!(quiet_per + 100 < busy_per, "per connection: {busy_per} B busy, {quiet_per} B idle");
}

#[test]
fn heartbeats_go_to_one_neighbour_and_carry_the_leaf_set_once_an_exchange_interval() {
    // MSPastry: each node heartbeats its nearest counter-clockwise leaf-set member, which
    // answers; the periodic leaf-set exchange rides on one heartbeat an interval, and in a
    // ring whose leaf sets agree nothing but the usual answer comes back.
    let (seed, n) = (23, 12);
    let mut h =
        cluster_with(n, seed, false, |id, addr| wendy_proto::Config::with_trusted_id(id, addr).insecure_plaintext());
    let cfg = h.node(0).config().clone();
    // Past the early exchanges, whose gaps double up to the interval.
    h.run_for(cfg.leaf_exchange_interval * 2);
    let ids: Vec<NodeId> = (0..n).map(|i| h.node(i).id()).collect();
    let index = |id: NodeId| ids.iter().position(|&x| x == id).expect("a node of the cluster");
    h.record_messages();
    let intervals = 3;
    h.run_for(cfg.leaf_exchange_interval * intervals);
    let beats_per_interval = (cfg.leaf_exchange_interval.as_secs() / cfg.heartbeat_interval.as_secs()) as usize;
    for i in 0..n {
        let ccw = index(*h.node(i).leaf_set().ccw().first().expect("a ring of 12 has neighbours"));
        let sent: Vec<(usize, &Vec<wendy_proto::NodeInfo>)> = h
            .messages()
            .iter()
            .filter_map(|(from, to, m)| match m {
                Message::Heartbeat { leaves, .. } if *from == i => Some((*to, leaves)),
                _ => None,
            })
            .collect();
        assert!(
            sent.iter().all(|(to, _)| *to == ccw),
            "node {i} heartbeats only its counter-clockwise neighbour {ccw}"
        );
        // One every third tick: a heartbeat goes when the neighbour has been silent for
        // `suspect_timeout` (four ticks) less two ticks, and its answer comes within the tick.
        let (beats, ticks) = (sent.len(), beats_per_interval * intervals as usize);
        assert!(beats + 1 >= ticks / 4 && beats <= ticks / 3 + 1, "node {i}: {beats} heartbeats in {ticks} ticks");
        let answered =
            h.messages().iter().filter(|(f, t, m)| (*f, *t) == (ccw, i) && matches!(m, Message::Pong { .. }));
        assert!(answered.count() + 1 >= beats, "node {i}: its heartbeats are answered");
        let pushes = sent.iter().filter(|(_, l)| !l.is_empty()).count();
        assert!(
            pushes + 1 >= intervals as usize && pushes <= intervals as usize + 1,
            "node {i}: {pushes} leaf sets pushed"
        );
    }
    let kinds = |f: fn(&Message) -> bool| h.messages().iter().filter(|(_, _, m)| f(m)).count();
    assert_eq!(kinds(|m| matches!(m, Message::LeafSetRequest)), 0, "no leaf-set requests in a steady ring");
    assert_eq!(kinds(|m| matches!(m, Message::LeafSet { .. })), 0, "leaf sets that agree need no answer");
}

#[test]
fn member_connections_decide_which_idle_connections_stay_open() {
    // `Config::member_connections`: every member's connection stays open, or the leaf set's
    // only, or none; lookups reach the right node in each mode, before and after the quiet.
    let (seed, n) = (29, 40);
    let mut totals = Vec::new();
    for mode in [MemberConnections::Kept, MemberConnections::LeafSet, MemberConnections::Closed] {
        let mut h = cluster_with(n, seed, false, move |id, addr| {
            let mut c = wendy_proto::Config::with_trusted_id(id, addr).insecure_plaintext();
            c.leaf_set_size = 8;
            c.neighbourhood_size = 4;
            // Table members probed at the longest period: the quiet phase below is quiet.
            c.table_probe_min = c.table_probe_interval;
            c.member_connections = mode;
            c
        });
        let out = lookups(&mut h, 300, seed);
        assert_eq!((out.delivered, out.wrong), (300, 0), "{mode:?}: before the quiet");
        // Past the early leaf-set exchanges, whose gaps double up to the interval.
        let cfg = h.node(0).config().clone();
        h.run_for(cfg.leaf_exchange_interval * 2);
        h.run_for(cfg.idle_timeout);
        let conns: usize = (0..n).map(|i| h.node(i).connection_count()).sum();
        let members: usize = (0..n).map(|i| h.node(i).member_count()).sum();
        let leaves: usize = (0..n).map(|i| h.node(i).leaf_set().members().len()).sum();
        eprintln!("{mode:?}: {conns} connections, {members} table members, {leaves} leaf-set members");
        totals.push(conns);
        match mode {
            // Each member's connection, whichever side dialled it.
            MemberConnections::Kept => assert!(conns >= members, "{mode:?}: {conns} connections, {members} members"),
            // Both ends of a leaf-set relation keep one (or two, if both dialled), no more.
            MemberConnections::LeafSet => {
                assert!(conns >= leaves / 2 && conns <= 2 * leaves, "{mode:?}: {conns} connections, {leaves} leaves")
            }
            // Only the heartbeats and leaf-set exchanges of the last `idle_timeout` are open
            // (one neighbour each, every 30 s).
            _ => assert!(conns <= 2 * n, "{mode:?}: {conns} connections among {n} nodes"),
        }
        let hellos = |h: &Harness| -> u64 {
            let hello = wendy_proto::wire::FRAME_KINDS.iter().position(|&k| k == "hello").expect("a kind");
            (0..n).map(|i| h.node(i).stats().control_frames_by_kind[hello]).sum()
        };
        let (closing_before, dials_before) = (h.closing_frames(), hellos(&h));
        let out = lookups(&mut h, 300, seed + 1);
        assert_eq!((out.delivered, out.wrong), (300, 0), "{mode:?}: after the quiet");
        h.run_for(cfg.idle_timeout * 3);
        let (closing, dials) = (h.closing_frames() - closing_before, hellos(&h) - dials_before);
        eprintln!("{mode:?}: {dials} connections dialled, {closing} Closing frames");
        // A connection idles out on its dialler's side first: one `Closing`, answered by a
        // close, never two crossing (the side that accepted waits longer).
        assert!(closing <= dials, "{mode:?}: {closing} Closing frames for {dials} connections dialled");
    }
    assert!(totals[0] > totals[1] && totals[1] > totals[2], "connections by mode: {totals:?}");
}
