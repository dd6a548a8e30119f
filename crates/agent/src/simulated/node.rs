//! A simulated node's Node object, as kubelet registers it and reports its status: labels,
//! taints, podCIDR, capacity = allocatable, addresses, nodeInfo and the four conditions.
//! The building is pure; `register` and `post_status` are the two writes.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use super::config::{Ipv4Range, SimConfig};
use super::lifecycle::{hex_digest, time};
use super::SimError;

/// Marks nodes made by the simulator, so tools and benchmarks can tell them apart.
pub const SIMULATED_ANNOTATION: &str = "skiff.dev/simulated";

/// Who one simulated node is.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Range,
}

impl NodeIdentity {
    /// Node `index` of the fleet; `None` if the config's ranges cannot hold it
    /// (`SimConfig::validate` rules that out).
    pub fn of(config: &SimConfig, index: usize) -> Option<NodeIdentity> {
        Some(NodeIdentity {
            name: config.node_name(index),
            host_ip: config.node_ip_range.nth(index as u64 + 1)?,
            pod_cidr: config
                .cluster_cidr
                .subnet(config.node_cidr_mask_size, index as u64)?,
        })
    }
}

/// The Node as kubelet registers it (metadata and spec; status is posted separately).
pub fn node_object(config: &SimConfig, node: &NodeIdentity) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", config.architecture.as_str()),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", config.architecture.as_str()),
        ("kubernetes.io/hostname", node.name.as_str()),
        ("kubernetes.io/os", "linux"),
    ] {
        labels.insert(k.into(), json!(v));
    }
    for (k, v) in &config.labels {
        labels.insert(k.clone(), json!(v));
    }
    let taints: Vec<Value> = config
        .taints
        .iter()
        .map(|t| {
            let mut m = serde_json::Map::new();
            m.insert("key".into(), json!(t.key));
            if let Some(v) = &t.value {
                m.insert("value".into(), json!(v));
            }
            m.insert("effect".into(), json!(t.effect));
            Value::Object(m)
        })
        .collect();
    let cidr = node.pod_cidr.to_string();
    let mut spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    if !taints.is_empty() {
        spec["taints"] = Value::Array(taints);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                SIMULATED_ANNOTATION: "true",
            },
        },
        "spec": spec,
    })
}

/// The status kubelet posts: all healthy. `since` is when the conditions last changed
/// (kept across heartbeats), `now` the heartbeat time.
pub fn node_status(
    config: &SimConfig,
    node: &NodeIdentity,
    since: Timestamp,
    now: Timestamp,
) -> Value {
    let resources = json!({
        "cpu": config.cpu,
        "ephemeral-storage": config.ephemeral_storage,
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": config.memory,
        "pods": config.pods.to_string(),
    });
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "lastHeartbeatTime": time(now),
            "lastTransitionTime": time(since),
            "reason": reason,
            "message": message,
        })
    };
    let id = |what: &str| hex_digest(&[what, &node.name])[..32].to_string();
    let boot = hex_digest(&["boot", &node.name]);
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": node.host_ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": id("machine"),
            "systemUUID": format!("{}-{}-{}-{}-{}", &boot[0..8], &boot[8..12], &boot[12..16], &boot[16..20], &boot[20..32]),
            "bootID": format!("{}-{}-{}-{}-{}", &boot[32..40], &boot[40..44], &boot[44..48], &boot[48..52], &boot[52..64]),
            "kernelVersion": config.kernel_version,
            "osImage": config.os_image,
            "containerRuntimeVersion": config.runtime_version,
            "kubeletVersion": config.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": config.architecture,
        },
    })
}

/// Whether the Node in the API still shows what this kubelet reported: every condition
/// healthy (the node lifecycle controller sets Ready=Unknown when leases stop).
pub fn status_still_reported(node: &Node) -> bool {
    let Some(conditions) = node.status.as_ref().and_then(|s| s.conditions.as_ref()) else {
        return false;
    };
    let want = [
        ("MemoryPressure", "False"),
        ("DiskPressure", "False"),
        ("PIDPressure", "False"),
        ("Ready", "True"),
    ];
    want.iter()
        .all(|(t, s)| conditions.iter().any(|c| c.type_ == *t && c.status == *s))
}

/// When the conditions last changed, to keep `lastTransitionTime` across heartbeats.
pub fn conditions_since(node: &Node) -> Option<Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Creates the Node (or adopts an existing one of the same name, updating the labels,
/// taints and podCIDR this fleet wants); returns the Node's uid.
pub async fn register(
    api: &Api<Node>,
    config: &SimConfig,
    node: &NodeIdentity,
) -> Result<String, SimError> {
    let object = node_object(config, node);
    let typed: Node = serde_json::from_value(object.clone()).map_err(|e| SimError::Internal {
        what: format!("building Node {}", node.name),
        reason: e.to_string(),
    })?;
    let created = match api.create(&PostParams::default(), &typed).await {
        Ok(n) => n,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Already registered (an earlier run): bring metadata and spec up to date.
            // podCIDR cannot change once set, so it is left out of the patch.
            let mut patch = object;
            if let Some(spec) = patch.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("podCIDR");
                spec.remove("podCIDRs");
            }
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| SimError::api(format!("updating existing Node {}", node.name), e))?
        }
        Err(e) => return Err(SimError::api(format!("registering Node {}", node.name), e)),
    };
    Ok(created.metadata.uid.unwrap_or_default())
}

/// Posts the node's status (merge patch on the status subresource).
pub async fn post_status(api: &Api<Node>, name: &str, status: Value) -> Result<(), SimError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map_err(|e| SimError::api(format!("posting status of Node {name}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulated::config::parse_taint;

    #[test]
    fn nodes_get_their_own_names_addresses_and_pod_subnets() {
        let cfg = SimConfig::new(300);
        let n0 = NodeIdentity::of(&cfg, 0).unwrap();
        let n7 = NodeIdentity::of(&cfg, 7).unwrap();
        assert_eq!(
            (n0.name.as_str(), n0.host_ip.to_string()),
            ("sim-0", "172.20.0.1".into())
        );
        assert_eq!(n7.pod_cidr.to_string(), "10.42.7.0/24");
        assert_eq!(n7.host_ip.to_string(), "172.20.0.8");
    }

    #[test]
    fn node_object_has_kubelet_labels_user_labels_and_taints() {
        let mut cfg = SimConfig::new(1);
        cfg.architecture = "amd64".into();
        cfg.labels = vec![("zone".into(), "a".into())];
        cfg.taints = vec![parse_taint("dedicated=gpu:NoSchedule").unwrap()];
        let n = NodeIdentity::of(&cfg, 0).unwrap();
        let obj = node_object(&cfg, &n);
        let labels = &obj["metadata"]["labels"];
        assert_eq!(labels["kubernetes.io/hostname"], "sim-0");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["beta.kubernetes.io/os"], "linux");
        assert_eq!(labels["zone"], "a");
        assert_eq!(
            obj["spec"]["taints"],
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
        );
        assert_eq!(obj["spec"]["podCIDR"], "10.42.0.0/24");
        // It must be a valid Node.
        let _: Node = serde_json::from_value(obj).unwrap();
    }

    #[test]
    fn status_is_healthy_with_capacity_equal_to_allocatable() {
        let cfg = SimConfig::new(1);
        let n = NodeIdentity::of(&cfg, 0).unwrap();
        let since: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-01T10:05:00Z".parse().unwrap();
        let s = node_status(&cfg, &n, since, now);
        assert_eq!(s["capacity"], s["allocatable"]);
        assert_eq!(s["capacity"]["pods"], "110");
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "sim-0"}, "status": s})).unwrap();
        assert!(status_still_reported(&node));
        assert_eq!(conditions_since(&node), Some(since));
        let ready = &node.status.as_ref().unwrap().conditions.as_ref().unwrap()[3];
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.last_heartbeat_time.as_ref().unwrap().0, now);
        let info = node.status.unwrap().node_info.unwrap();
        assert!(info.container_runtime_version.starts_with("skiff-sim://"));
    }

    #[test]
    fn a_node_marked_unknown_is_no_longer_reported() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "sim-0"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "False"},
                {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}
            ]}
        }))
        .unwrap();
        assert!(!status_still_reported(&node));
    }
}
