//! What several test files share.

use std::time::Duration;

use wendy_sim::{parse_churn_trace, LossMode, NetConfig, SimConfig, SplitMode, SplitPlan};

/// 60 nodes in three regions over links that lose 1 % of segments (as TCP retransmissions),
/// 1,200 lookups over 30 s: the base of [`fault_runs`].
pub fn fault_base() -> SimConfig {
    SimConfig {
        nodes: 60,
        lookups: 1200,
        seed: 23,
        join_rate: 60.0,
        settle: Duration::from_secs(5),
        duration: Some(Duration::from_secs(30)),
        net: NetConfig { regions: 3, loss: 0.01, loss_mode: LossMode::Tcp, ..NetConfig::default() },
        ..SimConfig::default()
    }
}

/// `base` with each of the other faults: a partition, a hold, a bounce of 20 %, a churn
/// trace, and dropped frames.
pub fn fault_runs(base: &SimConfig) -> Vec<SimConfig> {
    let trace = parse_churn_trace("time_s,node,state\n2,5,down\n6,5,up\n8,1000,up\n12,7,down\n").unwrap();
    let split = |mode, length| SplitPlan { mode, fraction: 0.3, at: Duration::from_secs(5), length };
    vec![
        SimConfig { split: Some(split(SplitMode::Partition, Duration::from_secs(5))), ..base.clone() },
        SimConfig { split: Some(split(SplitMode::Hold, Duration::from_secs(2))), ..base.clone() },
        SimConfig { crash_fraction: 0.2, bounce_after: Some(Duration::from_secs(3)), ..base.clone() },
        SimConfig { churn_trace: trace, ..base.clone() },
        SimConfig { net: NetConfig { loss: 0.02, loss_mode: LossMode::Drop, ..NetConfig::default() }, ..base.clone() },
    ]
}
