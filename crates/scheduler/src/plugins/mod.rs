//! The Filter and Score plugins of upstream's default profile, one file each, and the
//! profile that orders and weighs them as upstream v1.32 does (VolumeBinding filters
//! after NodeResourcesFit, as upstream; the cloud volume-limit plugins are absent).

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use crate::framework::Profile;

/// Upstream's default profile: filters in its order (the first failure is the one
/// reported), scores with its weights (TaintToleration 3, NodeAffinity 2,
/// PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1, BalancedAllocation 1).
pub fn default_profile() -> Profile {
    Profile {
        filters: vec![
            Box::new(node_unschedulable::NodeUnschedulable),
            Box::new(node_name::NodeName),
            Box::new(taint_toleration::TaintToleration),
            Box::new(node_affinity::NodeAffinity),
            Box::new(node_ports::NodePorts),
            Box::new(node_resources_fit::NodeResourcesFit),
            Box::new(volume_binding::VolumeBinding),
            Box::new(pod_topology_spread::PodTopologySpread),
            Box::new(inter_pod_affinity::InterPodAffinity),
        ],
        scorers: vec![
            Box::new(taint_toleration::TaintToleration),
            Box::new(node_affinity::NodeAffinity),
            Box::new(node_resources_fit::NodeResourcesFit),
            Box::new(pod_topology_spread::PodTopologySpread),
            Box::new(inter_pod_affinity::InterPodAffinity),
            Box::new(node_resources_balanced_allocation::BalancedAllocation),
        ],
    }
}

/// Upstream `DefaultNormalizeScore`: scale to 0..=MAX by the largest score, optionally
/// reversed (fewer is better).
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    use crate::framework::MAX_NODE_SCORE;
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = MAX_NODE_SCORE * *s / max;
        if reverse {
            v = MAX_NODE_SCORE - v;
        }
        *s = v;
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{json, Value};

    use crate::framework::{NodeInfo, PodInfo, Snapshot};

    pub fn node(name: &str, extra: Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("node")
    }

    pub fn pod(name: &str, extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pod")
    }

    pub fn info(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }

    pub fn node_info(n: Node, pods: Vec<Pod>) -> NodeInfo {
        let snap = Snapshot::build(
            vec![n.clone()],
            pods.into_iter()
                .map(|mut p| {
                    p.spec.get_or_insert_with(Default::default).node_name = n.metadata.name.clone();
                    p
                })
                .collect(),
        );
        snap.nodes[0].clone()
    }

    /// JSON merge (objects merge recursively, everything else replaces).
    pub fn merge(base: &mut Value, extra: Value) {
        match (base, extra) {
            (Value::Object(b), Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }
}
