//! The real node's Node object as kubelet registers it and reports its status, built from
//! the host's facts. Pure: the agent's registration loop sends what these return.
//!
//! Allocatable follows kubelet's defaults with no reservations configured: capacity minus
//! the hard eviction thresholds (`memory.available<100Mi`, `nodefs.available<10%`), as
//! k3s nodes report it.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::host::HostFacts;
use crate::simulated::config::TaintSpec;

/// kubelet's default hard eviction threshold for memory.
const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;
/// kubelet's default hard eviction threshold for the node filesystem, in percent.
const EVICTION_NODEFS_PERCENT: u64 = 10;

/// Who this node is and what it adds to the host's facts.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub internal_ip: IpAddr,
    /// `--node-label` values.
    pub labels: Vec<(String, String)>,
    /// `--node-taint` values, registered with the node (as kubelet's `--register-with-taints`).
    pub taints: Vec<TaintSpec>,
    pub max_pods: u32,
    /// The server's version, reported as the kubelet's (the binary is both).
    pub kubelet_version: String,
    /// `skiff://<version>`.
    pub runtime_version: String,
    /// `kubernetes.io/arch` (amd64, arm64, ...).
    pub architecture: String,
    /// Where the agent API listens (`status.daemonEndpoints.kubeletEndpoint.Port`), which the
    /// API server dials for logs, exec, attach and port-forward: `api::DEFAULT_PORT` (10250).
    pub kubelet_port: u16,
}

/// Metadata and spec of the Node kubelet registers (status is sent separately).
pub fn node_object(config: &NodeConfig) -> Value {
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", config.architecture.as_str()),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", config.architecture.as_str()),
        ("kubernetes.io/hostname", config.name.as_str()),
        ("kubernetes.io/os", "linux"),
    ] {
        labels.insert(k.into(), json!(v));
    }
    for (k, v) in &config.labels {
        labels.insert(k.clone(), json!(v));
    }
    let mut spec = json!({});
    if !config.taints.is_empty() {
        spec["taints"] = config
            .taints
            .iter()
            .map(|t| {
                let mut m = json!({"key": t.key, "effect": t.effect});
                if let Some(v) = &t.value {
                    m["value"] = json!(v);
                }
                m
            })
            .collect();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.name,
            "labels": labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": spec,
    })
}

/// Capacity and allocatable as kubelet computes them with default eviction thresholds.
pub fn resources(config: &NodeConfig, facts: &HostFacts) -> (Value, Value) {
    let capacity = json!({
        "cpu": facts.cpus.to_string(),
        "ephemeral-storage": format!("{}Ki", facts.ephemeral_storage_bytes / 1024),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": format!("{}Ki", facts.memory_bytes / 1024),
        "pods": config.max_pods.to_string(),
    });
    let memory = facts.memory_bytes.saturating_sub(EVICTION_MEMORY_BYTES);
    let storage = facts.ephemeral_storage_bytes / 100 * (100 - EVICTION_NODEFS_PERCENT);
    let allocatable = json!({
        "cpu": facts.cpus.to_string(),
        "ephemeral-storage": storage.to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": format!("{}Ki", memory / 1024),
        "pods": config.max_pods.to_string(),
    });
    (capacity, allocatable)
}

/// The node's status with all conditions healthy. `since` is when the conditions last
/// changed, `now` the heartbeat (RFC 3339, seconds).
pub fn node_status(config: &NodeConfig, facts: &HostFacts, since: &str, now: &str) -> Value {
    let (capacity, allocatable) = resources(config, facts);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        })
    };
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.internal_ip.to_string()},
            {"type": "Hostname", "address": config.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": facts.machine_id,
            "systemUUID": facts.machine_id,
            "bootID": "",
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": config.runtime_version,
            "kubeletVersion": config.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": config.architecture,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig {
            name: "worker-1".into(),
            internal_ip: "192.0.2.10".parse().expect("ip"),
            labels: vec![("zone".into(), "a".into())],
            taints: vec![TaintSpec {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into(),
            }],
            max_pods: 110,
            kubelet_version: "v1.37.0+skiff0.1.0".into(),
            runtime_version: "skiff://0.1.0".into(),
            architecture: "amd64".into(),
            kubelet_port: 10250,
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1000 * 1000 * 1000,
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn registers_with_kubelet_labels_user_labels_and_taints() {
        let node = node_object(&config());
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "worker-1"
        );
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], "amd64");
        assert_eq!(node["metadata"]["labels"]["zone"], "a");
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
        );
    }

    #[test]
    fn allocatable_is_capacity_less_the_default_eviction_thresholds() {
        let (capacity, allocatable) = resources(&config(), &facts());
        assert_eq!(capacity["memory"], "8388608Ki");
        assert_eq!(allocatable["memory"], format!("{}Ki", 8388608 - 100 * 1024));
        assert_eq!(capacity["cpu"], "2");
        assert_eq!(allocatable["pods"], "110");
        assert_eq!(allocatable["ephemeral-storage"], "90000000000");
    }

    #[test]
    fn status_reports_ready_with_node_info() {
        let status = node_status(
            &config(),
            &facts(),
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:10Z",
        );
        let ready = status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .expect("Ready condition");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(
            status["nodeInfo"]["containerRuntimeVersion"],
            "skiff://0.1.0"
        );
        assert_eq!(
            status["nodeInfo"]["osImage"],
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(status["addresses"][0]["address"], "192.0.2.10");
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    }
}
