//! The pure half of the DaemonSet controller: which nodes should run a daemon pod
//! (upstream `NodeShouldRunDaemonPod`: nodeSelector, required node affinity, and the
//! node's NoSchedule/NoExecute taints against the pod's tolerations plus the ones the
//! controller adds to every daemon pod), what to create and delete per node
//! (`podsShouldBeOnNode`), the RollingUpdate step (`rollingUpdate`, maxUnavailable and
//! maxSurge), and the status counts.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, Pod, PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::deployment::rolling::scaled_value;
use crate::replicaset::podutil;

pub use crate::revisions::CONTROLLER_REVISION_HASH;
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// Tolerations upstream's DaemonSet controller adds to every daemon pod
/// (`AddOrUpdateDaemonPodTolerations`), so daemons stay on sick or cordoned nodes.
pub fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut out = spec.tolerations.clone().unwrap_or_default();
    let mut add = |key: &str, effect: &str| {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        let present = out.iter().any(|o| {
            o.key == t.key && o.effect == t.effect && o.operator == t.operator && o.value.is_none()
        });
        if !present {
            out.push(t);
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if spec.host_network == Some(true) {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    out
}

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.map(str::parse::<i64>),
            values.first().map(|b| b.parse::<i64>()),
        ) {
            (Some(Ok(v)), Some(Ok(b))) => {
                if r.operator == "Gt" {
                    v > b
                } else {
                    v < b
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// Required node affinity: terms ORed, a term's expressions and fields ANDed, an empty
/// term matches nothing (upstream `nodeaffinity.NodeSelector`).
fn node_selector_matches(
    sel: &NodeSelector,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    sel.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
        let fields = term.match_fields.as_deref().unwrap_or(&[]);
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
    })
}

/// Whether a daemon pod with `spec` belongs on `node` (upstream `NodeShouldRunDaemonPod`;
/// a running pod is kept on a node the same test admits).
pub fn node_should_run(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(wanted) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if wanted != name {
            return false;
        }
    }
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(sel) = required {
        if !node_selector_matches(sel, labels, name) {
            return false;
        }
    }
    let tolerations = daemon_tolerations(spec);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The node a daemon pod is for: its nodeName once bound, else the node named by the
/// `matchFields metadata.name In [node]` term the controller put there (upstream
/// `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

fn is_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn created(pod: &Pod) -> Option<DateTime<Utc>> {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| podutil::to_chrono(t))
}

/// What one sync does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that get a new daemon pod of the current revision.
    pub create: Vec<String>,
    /// Pods to delete (name, node, reason).
    pub delete: Vec<(String, String, DeleteReason)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeleteReason {
    /// Failed: upstream emits FailedDaemonPod and recreates.
    Failed,
    /// On a node that should not run it, or a duplicate.
    Excess,
    /// Replaced by RollingUpdate.
    Update,
}

/// Rolling-update budget, resolved against the desired node count (upstream
/// `updatedDesiredNodeCounts`: surge rounds up, unavailable rounds up, both zero -> 1
/// unavailable).
pub fn update_budget(ds: &DaemonSet, desired: i32) -> Option<(i32, i32)> {
    let strategy = ds.spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = ru
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(IntOrString::Int(0));
    let unavailable = ru
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let surge = scaled_value(&surge, desired, true).unwrap_or(0).max(0);
    let mut unavailable = scaled_value(&unavailable, desired, true)
        .unwrap_or(1)
        .max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some((surge, unavailable))
}

/// Decide creations and deletions for one sync. `nodes` are all nodes; `pods` the
/// daemon pods this DaemonSet controls (not being deleted); `hash` the current revision.
pub fn plan(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    hash: &str,
    now: DateTime<Utc>,
) -> Plan {
    let spec = ds.spec.template.spec.clone().unwrap_or_default();
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        by_node
            .entry(target_node(p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut out = Plan::default();
    let mut eligible: Vec<&str> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let mut on_node = by_node.remove(name).unwrap_or_default();
        if !node_should_run(&spec, node) {
            for p in on_node {
                out.delete
                    .push((name_of(p), name.into(), DeleteReason::Excess));
            }
            continue;
        }
        eligible.push(name);
        let (failed, mut alive): (Vec<&Pod>, Vec<&Pod>) =
            on_node.drain(..).partition(|p| is_failed(p));
        for p in failed {
            out.delete
                .push((name_of(p), name.into(), DeleteReason::Failed));
        }
        if alive.is_empty() {
            out.create.push(name.into());
            continue;
        }
        // Keep one pod: with surge an old and a new pod may coexist (the update step
        // resolves that); otherwise the oldest stays and duplicates go.
        alive.sort_by_key(|p| (created(p), name_of(p)));
        let surging = update_budget(ds, 1).is_some_and(|(s, _)| s > 0);
        if surging {
            let (new, old): (Vec<&Pod>, Vec<&Pod>) = alive
                .iter()
                .copied()
                .partition(|p| pod_hash(p) == Some(hash));
            for p in new.iter().skip(1).chain(old.iter().skip(1)) {
                out.delete
                    .push((name_of(p), name.into(), DeleteReason::Excess));
            }
        } else {
            for p in alive.iter().skip(1) {
                out.delete
                    .push((name_of(p), name.into(), DeleteReason::Excess));
            }
        }
    }
    // Pods for nodes that no longer exist.
    for (node, ps) in by_node {
        for p in ps {
            out.delete
                .push((name_of(p), node.clone(), DeleteReason::Excess));
        }
    }
    rolling_update(ds, &eligible, pods, hash, min_ready, now, &mut out);
    out
}

/// Upstream `rollingUpdate`: replace old-revision pods within the budget. Only runs
/// when this sync changes nothing else on the node it touches.
fn rolling_update(
    ds: &DaemonSet,
    eligible: &[&str],
    pods: &[&Pod],
    hash: &str,
    min_ready: i32,
    now: DateTime<Utc>,
    out: &mut Plan,
) {
    let Some((max_surge, max_unavailable)) = update_budget(ds, eligible.len() as i32) else {
        return;
    };
    let touched = |node: &str| {
        out.create.iter().any(|n| n == node) || out.delete.iter().any(|(_, n, _)| n == node)
    };
    let live_on = |node: &str| -> (Option<&Pod>, Option<&Pod>) {
        let mut new = None;
        let mut old = None;
        for p in pods.iter().copied().filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !is_failed(p)
                && target_node(p).as_deref() == Some(node)
        }) {
            if pod_hash(p) == Some(hash) {
                new.get_or_insert(p);
            } else {
                old.get_or_insert(p);
            }
        }
        (new, old)
    };
    let available = |p: &Pod| podutil::is_available(p, min_ready, now);
    let mut updates: Vec<(String, String, DeleteReason)> = Vec::new();
    let mut creates: Vec<String> = Vec::new();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for node in eligible {
            let (new, old) = live_on(node);
            match (new, old) {
                (None, None) => unavailable += 1,
                (Some(n), None) => {
                    if !available(n) {
                        unavailable += 1
                    }
                }
                (Some(_), Some(_)) => {}
                (None, Some(o)) => {
                    if touched(node) {
                        continue;
                    }
                    if !available(o) {
                        // Already unavailable: replacing it costs nothing.
                        updates.push((name_of(o), node.to_string(), DeleteReason::Update));
                    } else {
                        candidates.push((name_of(o), node.to_string(), DeleteReason::Update));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable - updates.len() as i32).max(0) as usize;
        updates.extend(candidates.into_iter().take(room));
    } else {
        let mut surging = 0;
        let mut candidates = Vec::new();
        for node in eligible {
            let (new, old) = live_on(node);
            match (new, old) {
                (None, Some(o)) if !touched(node) => {
                    if !available(o) {
                        creates.push(node.to_string());
                    } else {
                        candidates.push(node.to_string());
                    }
                }
                (Some(n), Some(o)) => {
                    if available(n) {
                        updates.push((name_of(o), node.to_string(), DeleteReason::Update));
                    } else {
                        surging += 1;
                    }
                }
                _ => {}
            }
        }
        let room = (max_surge - surging).max(0) as usize;
        creates.extend(candidates.into_iter().take(room));
    }
    out.delete.extend(updates);
    out.create.extend(creates);
}

/// Upstream `updateDaemonSetStatus` counts, per node.
pub fn status(
    ds: &DaemonSet,
    nodes: &[&Node],
    pods: &[&Pod],
    hash: &str,
    now: DateTime<Utc>,
) -> DaemonSetStatus {
    let spec = ds.spec.template.spec.clone().unwrap_or_default();
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        by_node
            .entry(target_node(p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    let mut s = DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        observed_generation: ds.metadata.generation,
        ..Default::default()
    };
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let on_node = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let should_run = node_should_run(&spec, node);
        if should_run {
            s.desired_number_scheduled += 1;
        }
        if on_node.is_empty() {
            continue;
        }
        if !should_run {
            s.number_misscheduled += 1;
            continue;
        }
        s.current_number_scheduled += 1;
        // Upstream looks at the oldest pod, preferring the updated one when surging.
        let mut sorted = on_node.to_vec();
        sorted.sort_by_key(|p| (pod_hash(p) != Some(hash), created(p), name_of(p)));
        let pod = sorted[0];
        if podutil::is_ready(pod) {
            s.number_ready += 1;
            if podutil::is_available(pod, min_ready, now) {
                s.number_available = Some(s.number_available.unwrap_or(0) + 1);
            }
        }
        if pod_hash(pod) == Some(hash) {
            s.updated_number_scheduled = Some(s.updated_number_scheduled.unwrap_or(0) + 1);
        }
    }
    let unavailable = s.desired_number_scheduled - s.number_available.unwrap_or(0);
    if unavailable > 0 {
        s.number_unavailable = Some(unavailable);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .expect("node")
    }

    fn ds(spec: serde_json::Value, strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ns", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec},
                "updateStrategy": strategy,
            },
        }))
        .expect("ds")
    }

    fn pod(name: &str, node: &str, hash: &str, phase: &str, ready: bool, age: i64) -> Pod {
        let ready = if ready { "True" } else { "False" };
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {CONTROLLER_REVISION_HASH: hash}},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]}}}},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": ready}
            ]},
        }))
        .expect("pod");
        p.metadata.creation_timestamp = Some(podutil::to_time(
            DateTime::from_timestamp(1_000_000 + age, 0).expect("time"),
        ));
        p
    }

    fn containers() -> serde_json::Value {
        json!({"containers": [{"name": "c", "image": "i"}]})
    }

    #[test]
    fn eligibility_table() {
        let cp_taint =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        let tolerate_cp = json!({"containers": [], "tolerations": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]});
        let cases: Vec<(&str, serde_json::Value, Node, bool)> = vec![
            (
                "plain node",
                containers(),
                node("n", json!({}), json!([])),
                true,
            ),
            (
                "control-plane taint",
                containers(),
                node("n", json!({}), cp_taint.clone()),
                false,
            ),
            (
                "tolerated control plane",
                tolerate_cp,
                node("n", json!({}), cp_taint),
                true,
            ),
            (
                "PreferNoSchedule ignored",
                containers(),
                node(
                    "n",
                    json!({}),
                    json!([{"key": "x", "effect": "PreferNoSchedule"}]),
                ),
                true,
            ),
            (
                "not-ready NoExecute tolerated by default",
                containers(),
                node(
                    "n",
                    json!({}),
                    json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
                ),
                true,
            ),
            (
                "unschedulable tolerated by default",
                containers(),
                node(
                    "n",
                    json!({}),
                    json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                ),
                true,
            ),
            (
                "network-unavailable needs hostNetwork",
                containers(),
                node(
                    "n",
                    json!({}),
                    json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
                ),
                false,
            ),
            (
                "network-unavailable with hostNetwork",
                json!({"containers": [], "hostNetwork": true}),
                node(
                    "n",
                    json!({}),
                    json!([{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
                ),
                true,
            ),
            (
                "nodeSelector matches",
                json!({"containers": [], "nodeSelector": {"disk": "ssd"}}),
                node("n", json!({"disk": "ssd"}), json!([])),
                true,
            ),
            (
                "nodeSelector misses",
                json!({"containers": [], "nodeSelector": {"disk": "ssd"}}),
                node("n", json!({"disk": "hdd"}), json!([])),
                false,
            ),
            (
                "affinity NotIn",
                json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}}),
                node("n", json!({"zone": "a"}), json!([])),
                false,
            ),
            (
                "affinity matchFields",
                json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]}}}}),
                node("n", json!({}), json!([])),
                true,
            ),
        ];
        for (what, spec, node, want) in cases {
            let spec: PodSpec = serde_json::from_value(spec).expect("spec");
            assert_eq!(node_should_run(&spec, &node), want, "{what}");
        }
    }

    #[test]
    fn plan_table() {
        let now = Utc::now();
        let n1 = node("n1", json!({}), json!([]));
        let n2 = node("n2", json!({}), json!([]));
        let cp = node(
            "cp",
            json!({}),
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        );
        let nodes = [&n1, &n2, &cp];
        let rolling1 = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}});
        let d = ds(containers(), rolling1.clone());
        use DeleteReason::*;
        let cases: Vec<(
            &str,
            DaemonSet,
            Vec<Pod>,
            Vec<&str>,
            Vec<(&str, DeleteReason)>,
        )> = vec![
            (
                "empty cluster gets one pod per eligible node",
                d.clone(),
                vec![],
                vec!["n1", "n2"],
                vec![],
            ),
            (
                "misscheduled pod deleted",
                d.clone(),
                vec![
                    pod("a", "n1", "h", "Running", true, 0),
                    pod("b", "n2", "h", "Running", true, 0),
                    pod("c", "cp", "h", "Running", true, 0),
                ],
                vec![],
                vec![("c", Excess)],
            ),
            (
                "failed pod deleted and replaced",
                d.clone(),
                vec![
                    pod("a", "n1", "h", "Failed", false, 0),
                    pod("b", "n2", "h", "Running", true, 0),
                ],
                vec!["n1"],
                vec![("a", Failed)],
            ),
            (
                "duplicate: newest goes",
                d.clone(),
                vec![
                    pod("a", "n1", "h", "Running", true, 5),
                    pod("a2", "n1", "h", "Running", true, 1),
                    pod("b", "n2", "h", "Running", true, 0),
                ],
                vec![],
                vec![("a", Excess)],
            ),
            (
                "pod for a vanished node deleted",
                d.clone(),
                vec![
                    pod("a", "n1", "h", "Running", true, 0),
                    pod("b", "n2", "h", "Running", true, 0),
                    pod("z", "gone", "h", "Running", true, 0),
                ],
                vec![],
                vec![("z", Excess)],
            ),
            (
                "rolling maxUnavailable 1 replaces one old pod",
                d.clone(),
                vec![
                    pod("a", "n1", "old", "Running", true, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec![],
                vec![("a", Update)],
            ),
            (
                "rolling waits while a new pod is unavailable",
                d.clone(),
                vec![
                    pod("a", "n1", "h", "Running", false, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec![],
                vec![],
            ),
            (
                "an unavailable old pod is replaced first and uses the budget",
                d.clone(),
                vec![
                    pod("a", "n1", "old", "Pending", false, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec![],
                vec![("a", Update)],
            ),
            (
                "maxUnavailable 100% replaces all",
                ds(
                    containers(),
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}),
                ),
                vec![
                    pod("a", "n1", "old", "Running", true, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec![],
                vec![("a", Update), ("b", Update)],
            ),
            (
                "OnDelete leaves old pods",
                ds(containers(), json!({"type": "OnDelete"})),
                vec![
                    pod("a", "n1", "old", "Running", true, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec![],
                vec![],
            ),
            (
                "surge creates first",
                ds(
                    containers(),
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
                ),
                vec![
                    pod("a", "n1", "old", "Running", true, 0),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec!["n1"],
                vec![],
            ),
            (
                "surge deletes old once new is available",
                ds(
                    containers(),
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
                ),
                vec![
                    pod("a", "n1", "old", "Running", true, 0),
                    pod("a2", "n1", "h", "Running", true, 1),
                    pod("b", "n2", "old", "Running", true, 0),
                ],
                vec!["n2"],
                vec![("a", Update)],
            ),
        ];
        for (what, d, pods, creates, deletes) in cases {
            let refs: Vec<&Pod> = pods.iter().collect();
            let p = plan(&d, &nodes, &refs, "h", now);
            let mut got_create = p.create.clone();
            got_create.sort();
            assert_eq!(got_create, creates, "{what}: creates");
            let mut got_delete: Vec<(String, DeleteReason)> =
                p.delete.iter().map(|(n, _, r)| (n.clone(), *r)).collect();
            got_delete.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<(String, DeleteReason)> = deletes
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect();
            assert_eq!(got_delete, want, "{what}: deletes");
        }
    }

    #[test]
    fn status_counts() {
        let now = Utc::now();
        let n1 = node("n1", json!({}), json!([]));
        let n2 = node("n2", json!({}), json!([]));
        let n3 = node("n3", json!({}), json!([]));
        let cp = node(
            "cp",
            json!({}),
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        );
        let d = ds(containers(), json!({}));
        let pods = [
            pod("a", "n1", "h", "Running", true, 0),
            pod("b", "n2", "old", "Pending", false, 0),
            pod("c", "cp", "h", "Running", true, 0),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let s = status(&d, &[&n1, &n2, &n3, &cp], &refs, "h", now);
        assert_eq!(s.desired_number_scheduled, 3);
        assert_eq!(s.current_number_scheduled, 2);
        assert_eq!(s.number_misscheduled, 1);
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.number_unavailable, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn budget_resolves_percentages() {
        let d = ds(
            containers(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}),
        );
        assert_eq!(update_budget(&d, 15), Some((0, 2)));
        let d = ds(containers(), json!({}));
        assert_eq!(update_budget(&d, 15), Some((0, 1)));
        let d = ds(
            containers(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}),
        );
        assert_eq!(update_budget(&d, 15), Some((0, 1)));
    }
}
