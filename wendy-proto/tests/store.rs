//! The storage layer in the in-memory harness: versions, replication, maintenance, limits.

use core::time::Duration;

use bytes::Bytes;
use wendy_proto::harness::Harness;
use wendy_proto::rng::Rng;
use wendy_proto::store::msg::{Blob, StoreMsg, WireRecord};
use wendy_proto::store::{Outcome, StoreConfig, StoreError, Version, STORE_PURPOSE};
use wendy_proto::NodeId;

const K: usize = 3;

fn ring(seed: u64, n: usize, cfg: StoreConfig) -> Harness {
    let mut h = Harness::new(seed);
    h.enable_store(cfg);
    let mut rng = Rng::new(seed);
    h.grow(n, &mut rng, None);
    h.run_for(Duration::from_secs(20));
    h
}

/// The live nodes holding `key` (any version, tombstones included).
fn holders(h: &Harness, key: NodeId) -> Vec<usize> {
    (0..h.len()).filter(|&i| h.is_alive(i) && h.store(i).meta(key).is_some()).collect()
}

/// The `k` live nodes closest to `key`.
fn closest(h: &Harness, key: NodeId, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..h.len()).filter(|&i| h.is_alive(i)).collect();
    v.sort_by(|&a, &b| key.cmp_closeness(h.node(a).id(), h.node(b).id()));
    v.truncate(k);
    v.sort();
    v
}

fn get_value(h: &mut Harness, from: usize, key: NodeId) -> Result<Bytes, StoreError> {
    let op = h.get(from, key);
    h.run_for(Duration::from_secs(3));
    match h.store_result(from, op).expect("the get completed") {
        Ok(Outcome::Found { value, .. }) => Ok(value),
        Ok(o) => panic!("a get found {o:?}"),
        Err(e) => Err(e),
    }
}

#[test]
fn a_put_lands_on_the_k_closest_and_the_newest_value_wins() {
    let mut h = ring(1, 20, StoreConfig::default());
    let key = NodeId::hash(b"k1");
    let op = h.put(4, key, Bytes::from_static(b"one"));
    h.run_for(Duration::from_secs(2));
    let Some(Ok(Outcome::Stored { version, replicas })) = h.store_result(4, op) else {
        panic!("{:?}", h.store_result(4, op))
    };
    assert_eq!(replicas, K as u8);
    assert_eq!(version.writer, h.node(4).id());
    assert_eq!(holders(&h, key), closest(&h, key, K));
    let op2 = h.put(9, key, Bytes::from_static(b"two"));
    h.run_for(Duration::from_secs(2));
    let Some(Ok(Outcome::Stored { version: v2, .. })) = h.store_result(9, op2) else { panic!() };
    assert!(v2 > version);
    assert_eq!(get_value(&mut h, 13, key), Ok(Bytes::from_static(b"two")));
    // Every replica settled on the same version.
    for i in holders(&h, key) {
        assert_eq!(h.store(i).meta(key).unwrap().version, v2);
    }
    assert_eq!(get_value(&mut h, 2, NodeId::hash(b"never written")), Err(StoreError::NotFound));
}

#[test]
fn a_delete_leaves_a_tombstone_that_beats_older_values_and_expires() {
    let mut cfg = StoreConfig::default();
    cfg.tombstone_lifetime = Duration::from_secs(60);
    let mut h = ring(2, 12, cfg);
    let key = NodeId::hash(b"doomed");
    h.put(1, key, Bytes::from_static(b"v"));
    h.run_for(Duration::from_secs(2));
    let old = h.store(holders(&h, key)[0]).meta(key).unwrap().version;
    let op = h.delete(5, key);
    h.run_for(Duration::from_secs(2));
    assert!(matches!(h.store_result(5, op), Some(Ok(Outcome::Deleted { replicas: 3, .. }))));
    assert_eq!(get_value(&mut h, 7, key), Err(StoreError::NotFound));
    // A replica re-sends the older value: the tombstone stays.
    let reps = holders(&h, key);
    let stale = StoreMsg::Replicate {
        tag: 1,
        records: vec![(key, WireRecord { version: old, value: Some(Blob(Bytes::from_static(b"v"))), ttl_ms: None })],
    };
    let to = h.node(reps[1]).id();
    h.store_op(reps[0], |_, now, n| n.send_layer_to(now, to, STORE_PURPOSE, stale.encode())).unwrap();
    h.run_for(Duration::from_secs(1));
    assert!(h.store(reps[1]).meta(key).unwrap().tombstone);
    assert_eq!(get_value(&mut h, 7, key), Err(StoreError::NotFound));
    h.run_for(Duration::from_secs(80));
    assert!(holders(&h, key).is_empty(), "tombstones expire");
}

#[test]
fn a_value_with_a_time_to_live_expires() {
    let mut h = ring(3, 8, StoreConfig::default());
    let key = NodeId::hash(b"brief");
    h.store_op(2, |s, now, n| s.put(now, n, key, Bytes::from_static(b"x"), Some(Duration::from_secs(5)))).unwrap();
    h.run_for(Duration::from_secs(1));
    assert_eq!(get_value(&mut h, 3, key), Ok(Bytes::from_static(b"x")));
    h.run_for(Duration::from_secs(5));
    assert_eq!(get_value(&mut h, 3, key), Err(StoreError::NotFound));
}

#[test]
fn a_crashed_replica_is_replaced_from_the_survivors() {
    let mut h = ring(4, 20, StoreConfig::default());
    let keys: Vec<NodeId> = (0..50u32).map(|i| NodeId::hash(&i.to_le_bytes())).collect();
    for (j, &k) in keys.iter().enumerate() {
        h.put(j % 20, k, Bytes::from(format!("v{j}")));
    }
    h.run_for(Duration::from_secs(5));
    let victim = closest(&h, keys[0], 1)[0];
    h.crash(victim);
    h.run_for(Duration::from_secs(60));
    for (j, &k) in keys.iter().enumerate() {
        assert_eq!(holders(&h, k), closest(&h, k, K), "key {j}");
    }
    let from = (victim + 1) % 20;
    assert_eq!(get_value(&mut h, from, keys[0]), Ok(Bytes::from_static(b"v0")));
}

#[test]
fn keys_move_to_a_closer_joiner_and_leave_the_node_no_longer_responsible() {
    let mut h = ring(5, 10, StoreConfig::default());
    let key = NodeId::hash(b"moving");
    h.put(0, key, Bytes::from_static(b"m"));
    h.run_for(Duration::from_secs(3));
    let before = closest(&h, key, K);
    // A node whose id is the key itself: it becomes the root.
    let j = h.add_node(key);
    h.join(j, 0);
    h.run_until_ready(Duration::from_secs(10));
    h.run_for(Duration::from_secs(60));
    let after = closest(&h, key, K);
    assert!(after.contains(&j) && after != before);
    assert_eq!(holders(&h, key), after);
    assert!((0..h.len()).map(|i| h.store(i).stats().handed_off).sum::<u64>() >= 1);
}

#[test]
fn limits_are_typed_errors() {
    let cfg = StoreConfig::default().with_max_value_size(100).with_quota(2_000);
    let mut h = ring(6, 6, cfg);
    let key = NodeId::hash(b"big");
    let r = h.store_op(1, |s, now, n| s.put(now, n, key, Bytes::from(vec![0; 101]), None));
    assert_eq!(r, Err(StoreError::ValueTooLarge { len: 101, max: 100 }));
    // Fill the quota: 2000 bytes hold at most 12 records of 100 bytes (plus 64 overhead).
    let mut full = None;
    for i in 0..60u32 {
        let op = h.put(1, NodeId::hash(&i.to_le_bytes()), Bytes::from(vec![1; 100]));
        h.run_for(Duration::from_millis(300));
        if let Some(Err(e @ StoreError::StoreFull { .. })) = h.store_result(1, op) {
            full = Some(e);
            break;
        }
    }
    assert!(matches!(full, Some(StoreError::StoreFull { wanted: 3, .. })), "{full:?}");
    for i in 0..h.len() {
        assert!(h.store(i).used_bytes() <= 2_000);
    }
}

#[test]
fn records_from_a_node_that_is_no_replica_are_refused() {
    let mut h = ring(7, 30, StoreConfig::default());
    let key = NodeId::hash(b"guarded");
    let reps = closest(&h, key, K);
    // The node farthest from the key that knows the root pushes a record for it.
    let root = h.node(reps[0]).id();
    let far = (0..h.len())
        .filter(|&i| !reps.contains(&i) && h.node(i).peer(root).is_some())
        .max_by(|&a, &b| key.cmp_closeness(h.node(a).id(), h.node(b).id()))
        .expect("someone knows the root");
    let rec = WireRecord {
        version: Version { counter: 99, writer: h.node(far).id() },
        value: Some(Blob(Bytes::from_static(b"forged"))),
        ttl_ms: None,
    };
    let msg = StoreMsg::Replicate { tag: 1, records: vec![(key, rec)] };
    h.store_op(far, |_, now, n| n.send_layer_to(now, root, STORE_PURPOSE, msg.encode())).unwrap();
    h.run_for(Duration::from_secs(1));
    assert!(h.store(reps[0]).meta(key).is_none());
    assert_eq!(h.store(reps[0]).stats().refused_not_replica, 1);
    // Garbage is counted, and the node keeps serving.
    h.store_op(far, |_, now, n| n.send_layer_to(now, root, STORE_PURPOSE, Bytes::from_static(b"\x01\xff\xff")))
        .unwrap();
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.store(reps[0]).stats().bad_messages, 1);
    h.put(far, key, Bytes::from_static(b"real"));
    h.run_for(Duration::from_secs(2));
    assert_eq!(get_value(&mut h, far, key), Ok(Bytes::from_static(b"real")));
}

#[test]
fn a_flood_of_puts_from_one_client_is_bounded() {
    let mut cfg = StoreConfig::default();
    cfg.puts_per_peer = 10;
    let mut h = ring(8, 8, cfg);
    let key = NodeId::hash(b"hot");
    let ops: Vec<_> = (0..100u32).map(|i| h.put(3, key, Bytes::from(i.to_le_bytes().to_vec()))).collect();
    h.run_for(Duration::from_secs(3));
    let limited = ops.iter().filter(|&&op| h.store_result(3, op) == Some(Err(StoreError::RateLimited))).count();
    let stored = ops.iter().filter(|&&op| matches!(h.store_result(3, op), Some(Ok(_)))).count();
    // A burst of twice the rate is taken; the rest is refused.
    assert!((20..=25).contains(&stored), "stored {stored}");
    assert_eq!(limited + stored, 100);
    // Another client is not affected.
    let op = h.put(4, key, Bytes::from_static(b"other"));
    h.run_for(Duration::from_secs(2));
    assert!(matches!(h.store_result(4, op), Some(Ok(Outcome::Stored { .. }))));
}

#[test]
fn applications_cannot_use_the_store_purpose() {
    let mut h = ring(9, 3, StoreConfig::default());
    let now = h.now();
    let id = h.node(1).id();
    let r = h.node_mut(0).send(now, id, STORE_PURPOSE, Bytes::new());
    assert_eq!(r, Err(wendy_proto::CommandError::ReservedPurpose(STORE_PURPOSE)));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut h = ring(10, 10, StoreConfig::default());
        for i in 0..20u32 {
            h.put(i as usize % 10, NodeId::hash(&i.to_le_bytes()), Bytes::from_static(b"x"));
        }
        h.run_for(Duration::from_secs(30));
        h.trace_hash()
    };
    assert_eq!(run(), run());
}
