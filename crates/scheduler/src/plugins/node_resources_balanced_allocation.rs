//! NodeResourcesBalancedAllocation: prefers nodes where, with the pod, CPU and memory would
//! be used in similar proportions (upstream `NodeResourcesBalancedAllocation`).

use crate::framework::{NodeInfo, PodInfo, ScorePlugin, State, MAX_NODE_SCORE};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

/// `(1 - |cpuFraction - memFraction| / 2) * 100`, fractions capped at 1 (upstream's
/// standard deviation of two values).
pub fn balanced_score(cpu_req: i64, cpu_alloc: i64, mem_req: i64, mem_alloc: i64) -> i64 {
    let fraction = |req: i64, alloc: i64| {
        if alloc == 0 {
            None
        } else {
            Some((req as f64 / alloc as f64).min(1.0))
        }
    };
    // With one resource (or none) known there is nothing to balance.
    let std = match (fraction(cpu_req, cpu_alloc), fraction(mem_req, mem_alloc)) {
        (Some(cpu), Some(mem)) => ((cpu - mem) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        1
    }
    /// Uses the actual requests (not scoring's non-zero defaults), as upstream does.
    fn score(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> i64 {
        balanced_score(
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_table() {
        let cases = [
            ("equal shares", 2000, 4000, 4, 8, 100),
            ("cpu full, memory empty", 4000, 4000, 0, 8, 50),
            ("quarter apart", 1000, 4000, 6, 8, 75),
            ("over-committed capped", 8000, 4000, 8, 8, 100),
            ("no allocatable", 1000, 0, 1, 8, 100),
        ];
        for (name, cr, ca, mr, ma, want) in cases {
            assert_eq!(balanced_score(cr, ca, mr, ma), want, "{name}");
        }
    }
}
