//! Zone disruption: when many nodes of a zone go dark at once, the fault is more likely
//! the network or the control plane than the nodes, so upstream slows down or stops
//! evicting (NoExecute tainting) there. Pure except for the clock passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use super::health::{readiness, Readiness};

/// Upstream `--unhealthy-zone-threshold`.
pub const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// Upstream `--large-cluster-size-threshold`.
pub const LARGE_CLUSTER_SIZE: usize = 50;
/// Upstream `--node-eviction-rate` (nodes per second).
pub const EVICTION_RATE: f64 = 0.1;
/// Upstream `--secondary-node-eviction-rate`.
pub const SECONDARY_EVICTION_RATE: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// A node's zone key (region and zone labels; empty when unlabelled).
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    format!(
        "{}:\u{0}:{}",
        get("topology.kubernetes.io/region"),
        get("topology.kubernetes.io/zone")
    )
}

pub fn zone_state(total: usize, not_ready: usize) -> ZoneState {
    let ready = total - not_ready;
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / total as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Every zone's state.
pub fn zone_states<'a>(
    nodes: impl Iterator<Item = &'a Node>,
) -> BTreeMap<String, (ZoneState, usize)> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for node in nodes {
        let entry = counts.entry(zone_of(node)).or_default();
        entry.0 += 1;
        if readiness(node) != Readiness::Ready {
            entry.1 += 1;
        }
    }
    counts
        .into_iter()
        .map(|(zone, (total, not_ready))| (zone, (zone_state(total, not_ready), total)))
        .collect()
}

/// Nodes per second that may get NoExecute taints in a zone.
pub fn eviction_rate(state: ZoneState, zone_size: usize, all_fully_disrupted: bool) -> f64 {
    match state {
        _ if all_fully_disrupted => 0.0,
        ZoneState::Normal | ZoneState::FullDisruption => EVICTION_RATE,
        ZoneState::PartialDisruption if zone_size > LARGE_CLUSTER_SIZE => SECONDARY_EVICTION_RATE,
        ZoneState::PartialDisruption => 0.0,
    }
}

/// A token bucket of burst 1 (one node at once, then one per 1/rate seconds).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Time (since an arbitrary origin) from which the next token is available.
    next_free: Option<Duration>,
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter { next_free: None }
    }

    /// Take a token at time `now` if one is free.
    pub fn try_take(&mut self, now: Duration, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        if self.next_free.is_some_and(|free| now < free) {
            return false;
        }
        self.next_free = Some(now + Duration::from_secs_f64(1.0 / rate));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_states_as_upstream_computes_them() {
        // (total, not ready, state)
        let cases = [
            (3, 0, ZoneState::Normal),
            (3, 1, ZoneState::Normal),
            (3, 2, ZoneState::Normal), // "more than 2" not ready are needed for partial
            (3, 3, ZoneState::FullDisruption),
            (5, 3, ZoneState::PartialDisruption),
            (100, 54, ZoneState::Normal),
            (100, 55, ZoneState::PartialDisruption),
            (1, 1, ZoneState::FullDisruption),
        ];
        for (total, not_ready, want) in cases {
            assert_eq!(zone_state(total, not_ready), want, "{not_ready}/{total}");
        }
    }

    #[test]
    fn eviction_slows_in_partial_disruption_and_stops_when_everything_is_dark() {
        assert_eq!(eviction_rate(ZoneState::Normal, 3, false), EVICTION_RATE);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 10, false), 0.0);
        assert_eq!(
            eviction_rate(ZoneState::PartialDisruption, 500, false),
            SECONDARY_EVICTION_RATE
        );
        assert_eq!(
            eviction_rate(ZoneState::FullDisruption, 3, false),
            EVICTION_RATE
        );
        assert_eq!(eviction_rate(ZoneState::FullDisruption, 3, true), 0.0);
    }

    #[test]
    fn the_limiter_lets_one_node_through_then_one_per_interval() {
        let mut l = RateLimiter::new();
        let s = Duration::from_secs;
        assert!(l.try_take(s(100), 0.1));
        assert!(!l.try_take(s(105), 0.1));
        assert!(l.try_take(s(110), 0.1));
        assert!(!l.try_take(s(200), 0.0));
    }
}
