//! Routes messages through an in-memory ring of wendy-proto nodes on a virtual clock.
//!
//! `cargo run --release -p wendy-proto --example ring -- [NODES] [MESSAGES] [SEED]`

use core::time::Duration;

use wendy_proto::harness::Harness;
use wendy_proto::rng::Rng;
use wendy_proto::NodeId;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let mut next = |default: u64| match args.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            eprintln!("usage: ring [NODES] [MESSAGES] [SEED] ({e})");
            std::process::exit(2);
        }
        None => default,
    };
    let (n, m, seed) = (next(200).max(1) as usize, next(2_000) as usize, next(1));
    let mut h = Harness::new(seed);
    let mut rng = Rng::new(seed);
    h.grow(n, &mut rng, Some(Duration::from_millis(5)));
    let ready = h.run_until_ready(Duration::from_secs(120));
    h.run_for(Duration::from_secs(5));
    let conns: usize = (0..n).map(|i| h.node(i).connection_count()).sum();
    let tables: usize = (0..n).map(|i| h.node(i).routing_table().len() + h.node(i).leaf_set().len()).sum();
    println!(
        "{n} nodes joined (all ready: {ready}) at t={}; per node: {:.0} connections, {:.0} table entries",
        h.now(),
        conns as f64 / n as f64,
        tables as f64 / n as f64
    );
    h.clear_observations();
    let mut expected = Vec::with_capacity(m);
    for k in 0..m {
        let from = rng.below(n as u64) as usize;
        let key = NodeId::from_u128(rng.next_u128());
        expected.push(h.closest_ready(key));
        h.send(from, key, 16, &(k as u64).to_be_bytes());
        h.run_for(Duration::from_millis(1));
    }
    h.run_for(Duration::from_secs(3));
    let (mut correct, mut hops) = (0usize, 0u64);
    for o in h.deliveries() {
        let k = u64::from_be_bytes(o.delivery.payload[..8].try_into().unwrap_or_default()) as usize;
        correct += usize::from(expected.get(k).copied().flatten() == Some(o.node));
        hops += u64::from(o.delivery.hops);
    }
    let delivered = h.deliveries().len();
    println!(
        "{m} messages: {delivered} delivered, {correct} at the numerically closest node, mean hops {:.2}, {} frames in all, trace {:016x}",
        hops as f64 / delivered.max(1) as f64,
        h.frames(),
        h.trace_hash()
    );
}
