//! `status.loadBalancer.ingress` of served Ingresses: one `ip` entry per Ready node's
//! InternalIP (the ingress listens on every node), written only when it differs.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The addresses to publish: the Ready nodes' InternalIPs, sorted; this node's own when
/// none is known yet.
pub fn node_addresses(nodes: &[Arc<Node>], own: IpAddr) -> Vec<String> {
    let mut ips: Vec<String> = nodes.iter().filter_map(|n| published_address(n)).collect();
    if ips.is_empty() {
        ips.push(own.to_string());
    }
    ips.sort();
    ips.dedup();
    ips
}

/// What one node adds to the published addresses: its InternalIP while it is Ready.
pub fn published_address(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return None;
    }
    status
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

/// The addresses an Ingress's status holds now.
fn current(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|entries| entries.iter().filter_map(|e| e.ip.clone()).collect())
        .unwrap_or_default()
}

pub struct StatusWriter {
    client: kube::Client,
}

impl StatusWriter {
    pub fn new(client: kube::Client) -> Self {
        StatusWriter { client }
    }

    /// Brings every served Ingress's status to `addresses`; failures are logged and retried
    /// at the next change.
    pub async fn sync(&self, served: &[Arc<Ingress>], addresses: &[String]) {
        for ingress in served {
            if current(ingress) == addresses {
                continue;
            }
            let (Some(namespace), Some(name)) =
                (&ingress.metadata.namespace, &ingress.metadata.name)
            else {
                continue;
            };
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
            let entries: Vec<_> = addresses.iter().map(|ip| json!({"ip": ip})).collect();
            let patch = json!({"status": {"loadBalancer": {"ingress": entries}}});
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!("ingress: updating the status of {namespace}/{name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_nodes_internal_ips_or_our_own() {
        let node = |ip: &str, ready: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": ip}, "status": {
                    "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": ip}],
                    "conditions": [{"type": "Ready", "status": ready}]}}))
                .unwrap(),
            )
        };
        let own: IpAddr = "192.0.2.9".parse().unwrap();
        let nodes = [
            node("10.1.0.2", "True"),
            node("10.1.0.1", "True"),
            node("10.1.0.3", "Unknown"),
        ];
        assert_eq!(node_addresses(&nodes, own), ["10.1.0.1", "10.1.0.2"]);
        assert_eq!(node_addresses(&[], own), ["192.0.2.9"]);
    }
}
