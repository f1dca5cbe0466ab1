//! The common-API getters (`local_lookup`, `neighbor_set`, `replica_set`, `range`) checked
//! against a brute-force model of the live ring, on a converged network.

use core::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use wendy_proto::harness::Harness;
use wendy_proto::rng::Rng;
use wendy_proto::{Config, NodeId};

/// A converged ring of `n` nodes with leaf sets of `l`.
fn ring(n: usize, l: usize, seed: u64) -> Harness {
    let mut h = Harness::new(seed);
    h.configure = Box::new(move |id, a| {
        let mut c = Config::with_trusted_id(id, a);
        c.leaf_set_size = l;
        c
    });
    let mut rng = Rng::new(seed);
    h.grow(n, &mut rng, None);
    assert!(h.run_until_ready(Duration::from_secs(60)));
    h.run_for(Duration::from_secs(40));
    h
}

fn live_ids(h: &Harness) -> Vec<NodeId> {
    (0..h.len()).map(|i| h.node(i).id()).collect()
}

/// The `k` live ids closest to `key` (brute force).
fn closest(ids: &[NodeId], key: NodeId, k: usize) -> Vec<NodeId> {
    let mut v = ids.to_vec();
    v.sort_by(|&a, &b| key.cmp_closeness(a, b));
    v.truncate(k);
    v
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig { cases: 400, failure_persistence: None, ..RunnerConfig::default() })
}

fn check_getters(h: &Harness) {
    let ids = live_ids(h);
    let n = ids.len();
    let half = h.node(0).leaf_set().half();
    runner()
        .run(&(any::<u128>(), 0..n, 0..half), |(k, i, rank)| {
            let key = NodeId::from_u128(k);
            let node = h.node(i);
            let me = node.id();
            // neighbor_set: the nearest live ids to us, in order.
            let ns: Vec<NodeId> = node.neighbor_set(4).iter().map(|x| x.id).collect();
            let others: Vec<NodeId> = ids.iter().copied().filter(|&x| x != me).collect();
            prop_assert_eq!(ns, closest(&others, me, 4.min(others.len())));
            // replica_set: exact whenever this node is among the key's replicas.
            let k = rank + 1;
            let truth = closest(&ids, key, k);
            let rs: Vec<NodeId> = node.replica_set(key, k).iter().map(|x| x.id).collect();
            if truth.contains(&me) {
                prop_assert_eq!(&rs, &truth, "replica_set({}, {}) at {}", key, k, me);
            }
            prop_assert!(rs.len() <= k);
            // range: for us and for a leaf member, agrees with brute force wherever it answers.
            let members = node.leaf_set().members();
            let subject = if k % 2 == 0 || members.is_empty() { me } else { members[(k / 2) % members.len()] };
            if let Some(r) = node.range(subject, rank) {
                prop_assert_eq!(
                    r.contains(key),
                    truth.contains(&subject),
                    "range({}, {}) = {:?}, key {}",
                    subject,
                    rank,
                    r,
                    key
                );
            } else {
                prop_assert!(subject != me || !node.leaf_set().is_whole_ring());
            }
            // local_lookup: every candidate makes progress; the first is next_hop.
            let ll = node.local_lookup(key, 8, false);
            let mine = me.common_prefix_len(key);
            for c in &ll {
                let p = c.id.common_prefix_len(key);
                prop_assert!(p > mine || key.is_closer(c.id, me));
            }
            match node.next_hop(key) {
                Some(next) => prop_assert_eq!(ll.first().map(|c| c.id), Some(next)),
                // We are the root: nobody we know is closer.
                None => prop_assert!(!ll.iter().any(|c| key.is_closer(c.id, me)), "{:?}", ll),
            }
            let safe = node.local_lookup(key, 8, true);
            prop_assert!(safe.iter().all(|c| ll.iter().any(|x| x.id == c.id) || ll.len() == 8));
            Ok(())
        })
        .unwrap();
}

#[test]
fn getters_match_the_live_ring_when_the_leaf_set_is_a_window() {
    // 80 nodes, leaf sets of 8: each leaf set is a small window of the ring.
    let h = ring(80, 8, 41);
    check_getters(&h);
}

#[test]
fn getters_match_the_live_ring_when_the_leaf_set_is_the_whole_ring() {
    let h = ring(9, 16, 42);
    assert!(h.node(0).leaf_set().is_whole_ring());
    check_getters(&h);
}

#[test]
fn range_of_rank_zero_is_exactly_the_keys_a_node_is_root_for() {
    let h = ring(40, 8, 43);
    let ids = live_ids(&h);
    for i in 0..h.len() {
        let node = h.node(i);
        let r = node.range(node.id(), 0).expect("a node knows its own range");
        // The arc's ends: the first key in it is ours, the key before it is not.
        let before = NodeId::from_u128(r.start.as_u128().wrapping_sub(1));
        assert_eq!(closest(&ids, r.start, 1), vec![node.id()]);
        assert_ne!(closest(&ids, before, 1), vec![node.id()]);
        let last = NodeId::from_u128(r.end.as_u128().wrapping_sub(1));
        assert_eq!(closest(&ids, last, 1), vec![node.id()]);
        assert_ne!(closest(&ids, r.end, 1), vec![node.id()]);
    }
}

#[test]
fn a_single_node_is_root_for_the_whole_ring() {
    let mut h = Harness::new(44);
    h.add_node(NodeId::from_u128(5));
    let n = h.node(0);
    let r = n.range(n.id(), 0).unwrap();
    assert!(r.is_full());
    assert_eq!(n.replica_set(NodeId::from_u128(99), 3).len(), 1);
    assert!(n.local_lookup(NodeId::from_u128(99), 3, false).is_empty());
    assert!(n.neighbor_set(3).is_empty());
}
