//! NodeResourcesFit: the pod's requests (and one more pod) must fit in what the node's
//! allocatable leaves after the pods already counted there; scores by LeastAllocated
//! (upstream `NodeResourcesFit` with its default scoring strategy).

use crate::framework::{
    FilterPlugin, NodeInfo, PodInfo, ScorePlugin, State, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "NodeResourcesFit";

pub struct NodeResourcesFit;

/// Every resource that does not fit, in upstream's order and wording.
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.allowed_pods {
        out.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    if req.is_zero() {
        return out;
    }
    let (alloc, used) = (&node.allocatable, &node.requested);
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        out.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, want) in &req.scalar {
        if *want > 0 && *want > alloc.scalar(name) - used.scalar(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: crate::framework::Code::Unschedulable,
                reasons,
                plugin: NAME,
            }
        }
    }
}

/// Share left free, 0..=100 (upstream `leastRequestedScore`).
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        1
    }
    /// LeastAllocated over cpu and memory, weight 1 each, with scoring's non-zero requests.
    fn score(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let cpu = least_requested(
            node.non_zero_requested.0 + pod.non_zero.0,
            node.allocatable.milli_cpu,
        );
        let mem = least_requested(
            node.non_zero_requested.1 + pod.non_zero.1,
            node.allocatable.memory,
        );
        (cpu + mem) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn requesting(cpu: &str, mem: &str) -> serde_json::Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
    }

    #[test]
    fn filter_table() {
        let small = node(
            "n",
            json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2", "example.com/gpu": "1"}}}),
        );
        let cases: Vec<(&str, Vec<serde_json::Value>, serde_json::Value, Vec<&str>)> = vec![
            ("fits", vec![], requesting("500m", "512Mi"), vec![]),
            (
                "cpu",
                vec![requesting("600m", "0")],
                requesting("500m", "0"),
                vec!["Insufficient cpu"],
            ),
            (
                "cpu and memory",
                vec![requesting("600m", "600Mi")],
                requesting("500m", "500Mi"),
                vec!["Insufficient cpu", "Insufficient memory"],
            ),
            (
                "pod count",
                vec![json!({}), json!({})],
                json!({}),
                vec!["Too many pods"],
            ),
            (
                "pod count and cpu",
                vec![requesting("1", "0"), json!({})],
                requesting("1", "0"),
                vec!["Too many pods", "Insufficient cpu"],
            ),
            (
                "extended resource fits",
                vec![],
                json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "1"}}}]}}),
                vec![],
            ),
            (
                "extended resource short",
                vec![],
                json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"example.com/gpu": "2"}}}]}}),
                vec!["Insufficient example.com/gpu"],
            ),
            (
                "unknown extended resource",
                vec![],
                json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"example.com/fpga": "1"}}}]}}),
                vec!["Insufficient example.com/fpga"],
            ),
            (
                "init container counts",
                vec![],
                json!({"spec": {"initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}}),
                vec!["Insufficient cpu"],
            ),
        ];
        for (name, existing, incoming, want) in cases {
            let existing = existing
                .into_iter()
                .enumerate()
                .map(|(i, e)| pod(&format!("e{i}"), e))
                .collect();
            let n = node_info(small.clone(), existing);
            let st = NodeResourcesFit.filter(&None, &info(pod("p", incoming)), &n);
            assert_eq!(st.reasons, want, "{name}");
            assert_eq!(st.is_success(), want.is_empty(), "{name}");
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let busy = node_info(
            node("busy", json!({})),
            vec![pod("e", requesting("3", "6Gi"))],
        );
        let idle = node_info(node("idle", json!({})), vec![]);
        let p = info(pod("p", requesting("1", "1Gi")));
        // busy: cpu (4000-4000)/4000 = 0, mem (8-7)/8 = 12 → 6; idle: cpu 75, mem 87 → 81.
        assert_eq!(NodeResourcesFit.score(&None, &p, &busy), 6);
        assert_eq!(NodeResourcesFit.score(&None, &p, &idle), 81);
    }
}
