//! A deterministic discrete-event simulator of thousands to a million wendy nodes.
//!
//! `wendy-sim` runs real [`wendy_proto::Node`]s (the very state machine the Tokio and smol
//! drivers run), passing their real encoded frames through a modelled network, in one
//! process, reproducibly:
//!
//! - **one event queue** ordered by (time, sequence number); the work of an event is
//!   proportional to what it touches (no per-tick sweep over nodes, no link table); with
//!   [`SimConfig::threads`] of 2 or more, the nodes' work of a batch of events that cannot
//!   affect each other runs on several threads, and the run is the same for any number of
//!   threads from two on;
//! - **one master seed**: every node's seed, every id, every latency draw derives from it, and
//!   every run ends with a **trace hash** over the frames transmitted and the deliveries;
//! - a **network model**: latency from coordinates (plane or sphere) or regions, jitter, loss
//!   (as TCP retransmission delay, or dropped frames), and turmoil's faults: crash, bounce,
//!   partition/repair, hold/release;
//! - **churn** (Poisson arrivals, exponential or Pareto sessions, or a trace file) and a
//!   **workload** of lookups towards random keys;
//! - an **oracle** that knows the live, joined nodes at every instant and judges every lookup
//!   correct, incorrect or lost.
//!
//! ```
//! use wendy_sim::{run, SimConfig};
//!
//! let report = run(SimConfig { nodes: 50, lookups: 200, join_rate: 50.0, ..SimConfig::default() });
//! assert_eq!(report.correct, 200);
//! println!("{report}");
//! ```
//!
//! The binary (`cargo run --release -p wendy-sim -- --help`) wraps [`run`] with a CLI, JSON
//! output and SVG plots; see the crate's README for the flags and the figures.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
mod net;
pub mod plot;
mod queue;
pub mod report;
mod sim;
pub mod trace;

pub use config::{
    Build, ChurnConfig, KvConfig, LossMode, NetConfig, NodeParams, SessionDist, SimConfig, SplitMode, SplitPlan,
    Topology, TraceRecord,
};
pub use report::{Bucket, ChurnReport, CrashReport, JoinStats, KvReport, MemoryReport, Report, Window};
pub use sim::{Outcome, Sim, LOOKUP_PURPOSE};
pub use trace::TraceHash;

/// Runs the scenario described by `cfg` to the end and reports.
pub fn run(cfg: SimConfig) -> Report {
    Sim::new(cfg).run(|_, _| {})
}

/// Parses a churn trace: CSV lines `time_s,node,up|down` (a header line and `#` comments are
/// skipped). Records are sorted by time (stable).
pub fn parse_churn_trace(text: &str) -> Result<Vec<TraceRecord>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 3 {
            return Err(format!("line {}: expected time_s,node,up|down", i + 1));
        }
        let Ok(time) = f[0].parse::<f64>() else {
            if i == 0 {
                continue; // header
            }
            return Err(format!("line {}: bad time {:?}", i + 1, f[0]));
        };
        if !time.is_finite() || time < 0.0 {
            return Err(format!("line {}: bad time {:?}", i + 1, f[0]));
        }
        let node = f[1].parse::<u32>().map_err(|_| format!("line {}: bad node {:?}", i + 1, f[1]))?;
        let up = match f[2] {
            "up" => true,
            "down" => false,
            other => return Err(format!("line {}: expected up or down, got {other:?}", i + 1)),
        };
        out.push(TraceRecord { time: core::time::Duration::from_secs_f64(time), node, up });
    }
    out.sort_by_key(|r| r.time);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_trace_parses() {
        let t = parse_churn_trace("time_s,node,state\n# c\n2.5,3,down\n1,7,up\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], TraceRecord { time: core::time::Duration::from_secs(1), node: 7, up: true });
        assert!(!t[1].up);
        assert!(parse_churn_trace("1,2,sideways").is_err());
        assert!(parse_churn_trace("1,2").is_err());
    }
}
