//! Stable replay of the fuzz targets (CI has no nightly toolchain).
//!
//! Runs the committed corpus of each cargo-fuzz target in `fuzz/corpus/<target>/` through the
//! very functions the targets call (`wendy_proto::fuzzing`), then a few thousand
//! proptest-generated inputs per target. To look at one input (a fuzzer finding, say), run it
//! through the `replay` example:
//!
//! ```text
//! cargo run -p wendy-tests --example replay -- node fuzz/artifacts/node/crash-...
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use wendy_proto::fuzzing;

/// Inputs per target and proptest run: a few thousand in release (CI), fewer in debug builds.
const CASES: u32 = if cfg!(debug_assertions) { 300 } else { 3000 };

/// The proptest seed: fixed, so that CI runs the same inputs every time (override with
/// `PROPTEST_RNG_SEED=<u64>` to explore others).
const SEED: u64 = 0x5eed_f022;

fn proptest_config() -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED);
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus of {target} is empty");
    files.into_iter().map(|p| (p.clone(), fs::read(&p).expect("readable corpus file"))).collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    for (path, data) in corpus(target) {
        // Name the input on failure, so that it can be replayed alone (`--example replay`).
        let r = std::panic::catch_unwind(|| f(&data));
        if let Err(e) = r {
            eprintln!("{target}: failing input {}", path.display());
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn replay_decoder_corpus() {
    replay("decoder", fuzzing::decoder);
}

#[test]
fn replay_round_trip_corpus() {
    replay("round_trip", fuzzing::round_trip);
}

#[test]
fn replay_node_corpus() {
    replay("node", fuzzing::node);
}

#[test]
fn replay_store_corpus() {
    replay("store", wendy_proto::store::fuzz::store);
}

proptest! {
    // Each input builds a ring of four stores: fewer cases.
    #![proptest_config(ProptestConfig { cases: CASES / 30, ..proptest_config() })]

    #[test]
    fn store_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        wendy_proto::store::fuzz::store(&data);
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn decoder_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::decoder(&data);
    }

    #[test]
    fn round_trip_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        fuzzing::round_trip(&data);
    }

    #[test]
    fn node_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::node(&data);
    }
}
