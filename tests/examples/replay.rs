//! Runs fuzz inputs through a fuzz target's body, on stable: the tool for looking at a finding.
//!
//! ```text
//! cargo run -p wendy-tests --example replay -- <decoder|round_trip|node> <file>...
//! ```
//!
//! Each file runs through the same function the cargo-fuzz target calls
//! (`wendy_proto::fuzzing`). For the node target it first prints the configuration, then each
//! operation before running it, so after a panic the last operation printed is the one that
//! failed. Exits with status 2 on bad arguments; a finding panics (status 101).

use std::path::PathBuf;
use std::process::ExitCode;

use wendy_proto::fuzzing;

const USAGE: &str = "usage: replay <decoder|round_trip|node> <file>...";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let target = args.next().and_then(|t| t.into_string().ok());
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let run: fn(&[u8]) = match target.as_deref() {
        Some("decoder") => fuzzing::decoder,
        Some("round_trip") => fuzzing::round_trip,
        Some("node") => trace_node,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    for path in &files {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("reading {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        println!("== {} ({} bytes)", path.display(), data.len());
        run(&data);
        println!("ok");
    }
    ExitCode::SUCCESS
}

/// The node target, step by step: the configuration, then each operation before it runs.
fn trace_node(data: &[u8]) {
    let Some((cfg, ops)) = fuzzing::node_input(data) else {
        println!("too short for a configuration: the target does nothing");
        return;
    };
    println!("{cfg:#?}");
    let mut h = fuzzing::NodeHarness::new(&cfg);
    h.check("start");
    for (i, op) in ops.into_iter().enumerate() {
        println!("{i:4} @{}: {op:?}", h.now());
        h.apply(op);
    }
}
