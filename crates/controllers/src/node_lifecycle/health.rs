//! Deciding a node's health from its Lease and conditions, and the taints that follow from
//! it (upstream's node lifecycle controller: `monitorNodeHealth` and the NoSchedule /
//! NoExecute tainting passes). Pure: no I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The taints this controller owns; any other taint on a node is left alone.
const MANAGED: [&str; 7] = [
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
];

/// The conditions a kubelet reports and that go Unknown when it stops reporting.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// A node's readiness as the rest of the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    Unknown,
}

pub fn readiness(node: &Node) -> Readiness {
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("True") => Readiness::Ready,
        Some("False") => Readiness::NotReady,
        _ => Readiness::Unknown,
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The last sign of life: the later of the lease renewal and the Ready heartbeat, or the
/// node's creation when it never reported (upstream's probe timestamp).
pub fn last_seen(node: &Node, lease_renewed: Option<Timestamp>) -> Option<Timestamp> {
    let heartbeat =
        condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [lease_renewed, heartbeat, created]
        .into_iter()
        .flatten()
        .max()
}

/// Conditions to write when the kubelet has been silent for longer than the grace
/// period (all kubelet conditions become Unknown), or None when nothing changes.
pub fn silenced_conditions(
    node: &Node,
    lease_renewed: Option<Timestamp>,
    now: Timestamp,
    grace: Duration,
) -> Option<Vec<NodeCondition>> {
    let seen = last_seen(node, lease_renewed)?;
    let silent_for = now.duration_since(seen);
    if silent_for.as_secs_f64() <= grace.as_secs_f64() {
        return None;
    }
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// The taints this controller wants on `node` given its conditions and spec. `evict`
/// false (a fully disrupted zone, or the rate limiter said wait) withholds new NoExecute
/// taints but keeps ones already there.
pub fn wanted_taints(node: &Node, now: Timestamp, evict: bool) -> Vec<Taint> {
    let status = |t: &str| condition(node, t).map(|c| c.status.as_str());
    let mut keys_effects: Vec<(&str, &str)> = Vec::new();
    // Taints follow the Ready condition the node has; one that never reported has none
    // (upstream maps conditions to taints), until the grace period marks it Unknown.
    let reported = condition(node, "Ready").is_some();
    match readiness(node) {
        _ if !reported => {}
        Readiness::Ready => {}
        Readiness::NotReady => {
            keys_effects.push((TAINT_NOT_READY, "NoSchedule"));
            keys_effects.push((TAINT_NOT_READY, "NoExecute"));
        }
        Readiness::Unknown => {
            keys_effects.push((TAINT_UNREACHABLE, "NoSchedule"));
            keys_effects.push((TAINT_UNREACHABLE, "NoExecute"));
        }
    }
    if status("MemoryPressure") == Some("True") {
        keys_effects.push((TAINT_MEMORY_PRESSURE, "NoSchedule"));
    }
    if status("DiskPressure") == Some("True") {
        keys_effects.push((TAINT_DISK_PRESSURE, "NoSchedule"));
    }
    if status("PIDPressure") == Some("True") {
        keys_effects.push((TAINT_PID_PRESSURE, "NoSchedule"));
    }
    if status("NetworkUnavailable") == Some("True") {
        keys_effects.push((TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys_effects.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    let current: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !MANAGED.contains(&t.key.as_str()))
        .cloned()
        .collect();
    for (key, effect) in keys_effects {
        let existing = current.iter().find(|t| t.key == key && t.effect == effect);
        match (existing, effect) {
            (Some(t), _) => taints.push(t.clone()),
            (None, "NoExecute") if !evict => {}
            (None, _) => taints.push(Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then(|| Time(now)),
            }),
        }
    }
    taints
}

/// Whether two taint lists say the same (order and timeAdded of kept taints ignored).
pub fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    let key = |t: &Taint| {
        (
            t.key.clone(),
            t.effect.clone(),
            t.value.clone().unwrap_or_default(),
        )
    };
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

/// Whether `wanted` adds a NoExecute taint the node does not have yet.
pub fn adds_no_execute(node: &Node, wanted: &[Taint]) -> bool {
    let current: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    wanted.iter().any(|w| {
        w.effect == "NoExecute"
            && !current
                .iter()
                .any(|c| c.key == w.key && c.effect == w.effect)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn node(ready: Option<(&str, i64)>, unschedulable: bool, taints: Vec<Taint>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.creation_timestamp = Some(Time(ts(0)));
        n.spec = Some(NodeSpec {
            unschedulable: unschedulable.then_some(true),
            taints: Some(taints),
            ..Default::default()
        });
        n.status = Some(NodeStatus {
            conditions: ready.map(|(status, heartbeat)| {
                vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: Some(Time(ts(heartbeat))),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        n
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_goes_unknown_only_after_the_grace_period_since_its_last_sign_of_life() {
        let grace = Duration::from_secs(50);
        // (heartbeat, lease renewed, now, goes unknown?)
        let cases = [
            (0, None, 50, false),
            (0, None, 51, true),
            (0, Some(40), 80, false), // the lease keeps it alive although status is old
            (0, Some(40), 91, true),
            (60, Some(10), 100, false), // a newer heartbeat counts too
        ];
        for (heartbeat, lease, now, unknown) in cases {
            let n = node(Some(("True", heartbeat)), false, vec![]);
            let got = silenced_conditions(&n, lease.map(ts), ts(now), grace);
            assert_eq!(
                got.is_some(),
                unknown,
                "heartbeat {heartbeat} lease {lease:?} now {now}"
            );
            if let Some(conditions) = got {
                let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
                assert_eq!(ready.status, "Unknown");
                assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
                assert_eq!(conditions.len(), 4, "all kubelet conditions go Unknown");
            }
        }
    }

    #[test]
    fn an_already_unknown_node_is_not_rewritten() {
        let mut n = node(Some(("True", 0)), false, vec![]);
        let conditions = silenced_conditions(&n, None, ts(100), Duration::from_secs(50)).unwrap();
        n.status.as_mut().unwrap().conditions = Some(conditions);
        assert!(silenced_conditions(&n, None, ts(200), Duration::from_secs(50)).is_none());
    }

    #[test]
    fn taints_follow_readiness_and_cordon() {
        let keys = |t: Vec<Taint>| {
            let mut v: Vec<String> = t
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            v.sort();
            v
        };
        let now = ts(10);
        assert!(wanted_taints(&node(Some(("True", 0)), false, vec![]), now, true).is_empty());
        // A node that never reported is not tainted until the grace period says Unknown.
        assert!(wanted_taints(&node(None, false, vec![]), now, true).is_empty());
        assert_eq!(
            keys(wanted_taints(
                &node(Some(("False", 0)), false, vec![]),
                now,
                true
            )),
            [
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule"
            ]
        );
        assert_eq!(
            keys(wanted_taints(
                &node(Some(("Unknown", 0)), false, vec![]),
                now,
                true
            )),
            [
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule"
            ]
        );
        assert_eq!(
            keys(wanted_taints(
                &node(Some(("True", 0)), true, vec![]),
                now,
                true
            )),
            ["node.kubernetes.io/unschedulable:NoSchedule"]
        );
        // Withheld eviction: NoSchedule still, NoExecute not yet.
        assert_eq!(
            keys(wanted_taints(
                &node(Some(("Unknown", 0)), false, vec![]),
                now,
                false
            )),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
        // A user's taint stays; a stale managed taint goes once the node is Ready again.
        let n = node(
            Some(("True", 0)),
            false,
            vec![
                taint("dedicated", "NoSchedule"),
                taint(TAINT_UNREACHABLE, "NoExecute"),
            ],
        );
        assert_eq!(keys(wanted_taints(&n, now, true)), ["dedicated:NoSchedule"]);
    }

    #[test]
    fn no_execute_taints_carry_the_time_they_were_added_and_keep_it() {
        let n = node(Some(("Unknown", 0)), false, vec![]);
        let t = wanted_taints(&n, ts(10), true);
        let ne = t.iter().find(|t| t.effect == "NoExecute").unwrap();
        assert_eq!(ne.time_added.as_ref().map(|t| t.0), Some(ts(10)));
        assert!(adds_no_execute(&n, &t));
        let mut kept = n.clone();
        kept.spec.as_mut().unwrap().taints = Some(t.clone());
        let again = wanted_taints(&kept, ts(99), true);
        assert!(same_taints(&t, &again));
        assert_eq!(
            again
                .iter()
                .find(|t| t.effect == "NoExecute")
                .unwrap()
                .time_added
                .as_ref()
                .map(|t| t.0),
            Some(ts(10))
        );
        assert!(!adds_no_execute(&kept, &again));
    }
}
