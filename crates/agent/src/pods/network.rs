//! The node's pod network as the pod workers use it: the [`network::pod_network`] of this
//! node's bridge, plus the node's podCIDR, which the control plane assigns after the node
//! registers ([`follow_pod_cidr`] reads it from the Node). Until it is known, sandboxes
//! cannot be made: kubelet's `FailedCreatePodSandBox`, retried. The node's host ports
//! ([`network::host_ports`], CNI's portmap) are published with a pod's address and
//! withdrawn before it is released.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use network::host_ports::{HostPorts, HostPortsError, PodPorts};
use network::pod_network::{Ipv4Cidr, PodNetwork, PodNetworkConfig, PodNetworkError};

use super::layout::Layout;

/// How often the Node is read while it has no podCIDR.
const POD_CIDR_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Upstream's runtime reports `NetworkReady=false` until the CNI config exists.
    #[error("network is not ready: node {node:?} has no podCIDR yet (spec.podCIDR is assigned by the control plane's node IPAM)")]
    NoPodCidr { node: String },
    #[error("setting up the pod network on bridge {bridge}: {source}")]
    Setup {
        bridge: String,
        source: PodNetworkError,
    },
    #[error("publishing the pod's host ports (nftables table ip {table}): {source}")]
    HostPorts {
        table: String,
        source: HostPortsError,
    },
}

pub struct NodeNetwork {
    node_name: String,
    pods: PodNetwork,
    host_ports: HostPorts,
    pod_cidr: OnceLock<Ipv4Cidr>,
}

impl NodeNetwork {
    pub fn new(node_name: &str, config: PodNetworkConfig) -> Result<NodeNetwork, PodNetworkError> {
        Ok(NodeNetwork {
            node_name: node_name.to_string(),
            host_ports: HostPorts::new(&config.bridge, &config.state_dir),
            pods: PodNetwork::new(config)?,
            pod_cidr: OnceLock::new(),
        })
    }

    /// The bridge and the pods' interfaces get this MTU (the VXLAN tunnel's with
    /// `--pod-routes vxlan`) instead of the bridge's own.
    pub fn with_pod_mtu(mut self, mtu: Option<u32>) -> NodeNetwork {
        self.pods = self.pods.with_mtu(mtu);
        self
    }

    pub fn bridge(&self) -> &str {
        &self.pods.config().bridge
    }

    pub fn pod_cidr(&self) -> Option<Ipv4Cidr> {
        self.pod_cidr.get().copied()
    }

    /// Records the node's podCIDR (fixed once set, as upstream's spec.podCIDR is).
    pub fn set_pod_cidr(&self, cidr: Ipv4Cidr) {
        let _ = self.pod_cidr.set(cidr);
    }

    /// Sets up the host side (bridge, gateway address, nftables) for the podCIDR, before
    /// any pod needs it (blocking). Idempotent. The node is not Ready until this worked
    /// (`node::network`).
    pub fn prepare_host(&self) -> Result<(), NetworkError> {
        let cidr = self.pod_cidr().ok_or_else(|| NetworkError::NoPodCidr {
            node: self.node_name.clone(),
        })?;
        self.pods
            .ensure_host(cidr)
            .map(|_| ())
            .map_err(|source| self.setup_error(source))
    }

    /// Gives the pod its address and interface (blocking). Idempotent.
    pub fn attach(&self, pod_uid: &str, netns: &Path) -> Result<Ipv4Addr, NetworkError> {
        let cidr = self.pod_cidr().ok_or_else(|| NetworkError::NoPodCidr {
            node: self.node_name.clone(),
        })?;
        self.pods
            .attach(cidr, pod_uid, netns)
            .map_err(|source| self.setup_error(source))
    }

    /// Publishes the pod's host ports at its address `pod_ip` (blocking). Idempotent; a
    /// pod without host ports changes nothing. Ports that cannot be mapped (an IPv6
    /// hostIP) are logged and left out, as portmap leaves out another family's.
    pub fn map_host_ports(
        &self,
        pod: &Pod,
        pod_uid: &str,
        pod_ip: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        let (ports, problems) = network::host_ports::plan::port_mappings(pod);
        for problem in problems {
            tracing::warn!(pod = %pod_uid, "host ports: {problem}");
        }
        let ports = PodPorts {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            pod_ip,
            ports,
        };
        self.host_ports
            .map(pod_uid, ports)
            .map_err(|source| self.host_ports_error(source))
    }

    fn host_ports_error(&self, source: HostPortsError) -> NetworkError {
        NetworkError::HostPorts {
            table: self.host_ports.table().to_string(),
            source,
        }
    }

    /// Withdraws the pod's host ports, removes its interface and releases its address
    /// (blocking). Idempotent.
    pub fn detach(&self, pod_uid: &str) -> Result<(), NetworkError> {
        self.host_ports
            .unmap(pod_uid)
            .map_err(|source| self.host_ports_error(source))?;
        self.pods
            .detach(pod_uid)
            .map_err(|source| self.setup_error(source))
    }

    fn setup_error(&self, source: PodNetworkError) -> NetworkError {
        NetworkError::Setup {
            bridge: self.bridge().to_string(),
            source,
        }
    }

    /// At agent start: releases the addresses of pods whose network namespace is gone from
    /// disk (removed while the agent was down, or an interrupted teardown), and rebuilds
    /// the host ports' table from the other pods' mappings. A pod deleted from the API
    /// while the agent was down is still on disk here; its worker withdraws its ports
    /// when it removes the pod.
    pub fn release_leaked(&self, layout: &Layout) {
        match self.host_ports.restore(|uid| layout.netns(uid).exists()) {
            Ok(forgotten) => {
                for p in forgotten {
                    tracing::info!(
                        "host ports: withdrew the ports of pod {}/{}, no longer on this node",
                        p.namespace,
                        p.name
                    );
                }
            }
            Err(e) => tracing::warn!(
                "host ports: rebuilding nftables table ip {}: {e}",
                self.host_ports.table()
            ),
        }
        match self.pods.release_leaked(|uid| layout.netns(uid).exists()) {
            Ok(released) if !released.is_empty() => tracing::info!(
                "pod network: released {} address(es) of pods no longer on this node: {released:?}",
                released.len()
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("pod network: releasing leaked addresses: {e}"),
        }
    }
}

/// Reads this node's `spec.podCIDR` until it is set, then records it. The Node may not be
/// registered yet, or not have a podCIDR yet: polled until both.
pub async fn follow_pod_cidr(client: kube::Client, network: Arc<NodeNetwork>) {
    let nodes: Api<Node> = Api::all(client);
    let mut warned = false;
    loop {
        match nodes.get_opt(&network.node_name).await {
            Ok(Some(node)) => {
                let text = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                match text.as_deref().map(str::parse::<Ipv4Cidr>) {
                    Some(Ok(cidr)) => {
                        tracing::info!(node = %network.node_name, "podCIDR {cidr}");
                        network.set_pod_cidr(cidr);
                        return;
                    }
                    Some(Err(e)) if !warned => {
                        tracing::warn!("node {}: spec.podCIDR: {e}", network.node_name);
                        warned = true;
                    }
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(e) if !warned => {
                tracing::warn!("reading node {}: {e}", network.node_name);
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(POD_CIDR_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_pod_cidr_sandboxes_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let net = NodeNetwork::new(
            "node-1",
            PodNetworkConfig {
                bridge: "skiff0".into(),
                cluster_cidr: "10.42.0.0/16".parse().unwrap(),
                state_dir: dir.path().join("network"),
            },
        )
        .unwrap();
        let err = net.attach("uid", &dir.path().join("netns")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network is not ready: node \"node-1\" has no podCIDR yet (spec.podCIDR is assigned by the control plane's node IPAM)"
        );
        net.set_pod_cidr("10.42.3.0/24".parse().unwrap());
        net.set_pod_cidr("10.42.9.0/24".parse().unwrap());
        assert_eq!(
            net.pod_cidr().unwrap().to_string(),
            "10.42.3.0/24",
            "fixed once set"
        );
    }

    #[test]
    fn a_bad_bridge_name_is_refused() {
        let err = NodeNetwork::new(
            "n",
            PodNetworkConfig {
                bridge: "this-name-is-too-long".into(),
                cluster_cidr: "10.42.0.0/16".parse().unwrap(),
                state_dir: "/nonexistent".into(),
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--pod-bridge"), "{err}");
    }
}
