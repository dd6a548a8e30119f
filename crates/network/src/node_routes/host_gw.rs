//! flannel's host-gw backend: each other Node's podCIDR via that Node's InternalIP. A
//! VXLAN device and annotation left from a `--pod-routes vxlan` run are removed (the
//! device's routes go with it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use super::{apply_routes, peers, vxlan, NodeRoute, NodeRoutesConfig, Peer};
use crate::pod_network::cidr::Ipv4Cidr;

/// podCIDR → the peer's InternalIP, for every peer.
pub fn desired_routes(peers: &[Peer]) -> BTreeMap<Ipv4Cidr, NodeRoute> {
    peers
        .iter()
        .map(|p| {
            (
                p.pod_cidr,
                NodeRoute {
                    via: p.ip,
                    device: None,
                },
            )
        })
        .collect()
}

pub(super) async fn reconcile(
    h: &rtnetlink::Handle,
    nodes_api: &kube::Api<Node>,
    config: &NodeRoutesConfig,
    nodes: &[Node],
) -> Result<(), String> {
    vxlan::remove_leftovers(h, nodes_api, config, nodes).await;
    let peers = peers(nodes, &config.node_name, config.cluster_cidr);
    apply_routes(h, &desired_routes(&peers), config.cluster_cidr).await
}

#[cfg(test)]
mod tests {
    use super::super::tests::{c, ip, node};
    use super::*;

    #[test]
    fn other_nodes_ranges_go_via_their_addresses() {
        let nodes = [
            node("me", Some("10.42.0.0/24"), "192.168.1.10", None),
            node("b", Some("10.42.1.0/24"), "192.168.1.11", None),
            node(
                "c",
                Some("10.42.2.0/24"),
                "192.168.1.12",
                Some("06:5f:c0:a8:01:0c"),
            ),
        ];
        let routes = desired_routes(&peers(&nodes, "me", c("10.42.0.0/16")));
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![
                (
                    c("10.42.1.0/24"),
                    NodeRoute {
                        via: ip("192.168.1.11"),
                        device: None
                    }
                ),
                (
                    c("10.42.2.0/24"),
                    NodeRoute {
                        via: ip("192.168.1.12"),
                        device: None
                    }
                ),
            ]
        );
    }
}
