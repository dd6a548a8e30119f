//! Routes between nodes, so pods reach pods on other nodes without NAT, with flannel's two
//! backends (`--pod-routes`):
//! - [`host_gw`]: every other Node's podCIDR is routed via that Node's InternalIP. The
//!   nodes must share a link (one LAN).
//! - [`vxlan`]: every other Node's podCIDR is routed through a VXLAN device
//!   (`<bridge>.vxlan`, VNI 1, UDP 8472) whose frames travel as UDP between the nodes'
//!   InternalIPs, so the nodes need only reach each other by IP.
//!
//! The routes this node owns carry their own routing protocol number ([`ROUTE_PROTOCOL`]),
//! so a reconcile can tell them from everyone else's: routes of ours inside the cluster
//! CIDR that the backend does not want (another Node's range that is gone, or a route of
//! the other backend) are removed, nothing else is touched. Every backend decides first
//! (plain functions of the Nodes and what the kernel has: [`peers`], [`plan_routes`] and
//! the backends' own) and applies over netlink after.

pub mod host_gw;
pub mod vxlan;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use crate::pod_network::cidr::Ipv4Cidr;

/// The `proto` of skiff's node routes (`ip route` shows it as a number); 0x9c, unused by
/// the kernel's and common daemons' assignments (rt_protos).
pub const ROUTE_PROTOCOL: u8 = 0x9c;

/// How pods reach pods on other nodes (`--pod-routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Routes via the other nodes' InternalIPs (one shared LAN).
    #[default]
    HostGw,
    /// A VXLAN overlay between the nodes' InternalIPs (any IP connectivity).
    Vxlan,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Backend, String> {
        match text {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            other => Err(format!(
                "unknown pod routes backend {other:?} (want host-gw or vxlan)"
            )),
        }
    }
}

/// What the node-routes task needs to know about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoutesConfig {
    pub node_name: String,
    /// The node's InternalIP: the VXLAN tunnel's local end.
    pub node_ip: Ipv4Addr,
    /// Every pod address of the cluster (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// The pod bridge (`--pod-bridge`); the VXLAN device is named after it.
    pub bridge: String,
    pub backend: Backend,
    /// Where the VXLAN device is recorded for `skiff killall` (`<data-dir>/agent/network`).
    pub state_dir: PathBuf,
}

/// Another Node as the routes need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub ip: Ipv4Addr,
    /// Its VXLAN device's MAC ([`vxlan::MAC_ANNOTATION`]), once it published one.
    pub vtep_mac: Option<vxlan::Mac>,
}

/// Every other Node that has a podCIDR inside `cluster` and an InternalIP. A Node whose
/// address lies inside the cluster range (a misconfiguration) is skipped: routing a pod
/// range via a pod address would loop.
pub fn peers(nodes: &[Node], me: &str, cluster: Ipv4Cidr) -> Vec<Peer> {
    let mut peers = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == me {
            continue;
        }
        let Some(pod_cidr) = pod_cidr(node) else {
            continue;
        };
        let Some(ip) = internal_ip(node) else {
            continue;
        };
        if !cluster.covers(&pod_cidr) || cluster.contains(ip) {
            continue;
        }
        peers.push(Peer {
            name: name.to_string(),
            pod_cidr,
            ip,
            vtep_mac: vxlan::published_mac(node),
        });
    }
    peers
}

fn pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse::<Ipv4Cidr>().ok())
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse::<Ipv4Addr>().ok())
}

/// One route of ours: via a gateway, through a given device (`onlink`, the VXLAN device)
/// or wherever the kernel finds the gateway (host-gw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRoute {
    pub via: Ipv4Addr,
    /// The output device's index: required (desired) or seen (existing).
    pub device: Option<u32>,
}

impl NodeRoute {
    /// Whether `existing` is this route: same gateway, and the same device when one is
    /// required.
    fn satisfied_by(&self, existing: &NodeRoute) -> bool {
        self.via == existing.via && self.device.is_none_or(|d| existing.device == Some(d))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct RoutePlan {
    pub replace: Vec<(Ipv4Cidr, NodeRoute)>,
    pub delete: Vec<(Ipv4Cidr, NodeRoute)>,
}

/// What to change given the routes of ours that exist (inside `cluster`).
pub fn plan_routes(
    desired: &BTreeMap<Ipv4Cidr, NodeRoute>,
    existing: &BTreeMap<Ipv4Cidr, NodeRoute>,
    cluster: Ipv4Cidr,
) -> RoutePlan {
    RoutePlan {
        replace: desired
            .iter()
            .filter(|(cidr, route)| !existing.get(cidr).is_some_and(|e| route.satisfied_by(e)))
            .map(|(c, r)| (*c, *r))
            .collect(),
        delete: existing
            .iter()
            .filter(|(cidr, _)| cluster.covers(cidr) && !desired.contains_key(cidr))
            .map(|(c, r)| (*c, *r))
            .collect(),
    }
}

fn route_message(cidr: Ipv4Cidr, route: NodeRoute) -> RouteMessage {
    let builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix())
        .gateway(route.via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    match route.device {
        Some(index) => builder.output_interface(index).onlink().build(),
        None => builder.build(),
    }
}

/// Our routes as the kernel has them (main table, IPv4, our protocol).
async fn existing_routes(h: &rtnetlink::Handle) -> Result<BTreeMap<Ipv4Cidr, NodeRoute>, String> {
    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let routes: Vec<RouteMessage> = h
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing routes: {e}"))?;
    let mut ours = BTreeMap::new();
    for r in routes {
        if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
            || r.header.address_family != AddressFamily::Inet
        {
            continue;
        }
        let mut dst = None;
        let mut via = None;
        let mut device = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                RouteAttribute::Oif(index) => device = Some(*index),
                _ => {}
            }
        }
        if let (Some(dst), Some(via)) = (dst, via) {
            if let Some(cidr) = Ipv4Cidr::new(dst, r.header.destination_prefix_length) {
                ours.insert(cidr, NodeRoute { via, device });
            }
        }
    }
    Ok(ours)
}

/// Makes our routes inside `cluster` exactly `desired`.
async fn apply_routes(
    h: &rtnetlink::Handle,
    desired: &BTreeMap<Ipv4Cidr, NodeRoute>,
    cluster: Ipv4Cidr,
) -> Result<(), String> {
    let existing = existing_routes(h).await?;
    let plan = plan_routes(desired, &existing, cluster);
    for (cidr, route) in &plan.delete {
        let via = route.via;
        match h.route().del(route_message(*cidr, *route)).execute().await {
            Ok(()) => tracing::info!("node routes: removed {cidr} via {via}"),
            Err(e) => tracing::warn!("node routes: removing {cidr} via {via}: {e}"),
        }
    }
    let mut failed = Vec::new();
    for (cidr, route) in &plan.replace {
        let via = route.via;
        match h
            .route()
            .add(route_message(*cidr, *route))
            .replace()
            .execute()
            .await
        {
            Ok(()) => tracing::info!("node routes: {cidr} via {via}"),
            // Typically "network unreachable" with host-gw: the Node's address is not on a
            // link of ours (no shared LAN). Retried on the next change or resync.
            Err(e) => failed.push(format!("{cidr} via {via}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("adding routes: {}", failed.join("; ")))
    }
}

/// Keeps this node's routes to the other Nodes' pod ranges in step with the Nodes, until
/// the task is dropped. Re-applies every 30 s too, so a route removed by hand comes back.
pub async fn run(client: kube::Client, config: NodeRoutesConfig) {
    let (connection, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "node routes: opening a netlink socket: {e}; pods on other nodes are unreachable"
            );
            return;
        }
    };
    tokio::spawn(connection);
    tracing::info!(
        "node routes: backend {} (--pod-routes)",
        config.backend.name()
    );
    let api: kube::Api<Node> = kube::Api::all(client);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut init: Option<BTreeMap<String, Node>> = None;
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    let mut synced = false;
    loop {
        let changed = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!("node routes: watching Nodes: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
                Some(Ok(watcher::Event::Init)) => { init = Some(BTreeMap::new()); false }
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let Some(i) = init.as_mut() {
                        i.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    }
                    false
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(i) = init.take() { nodes = i; }
                    synced = true;
                    true
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    nodes.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    true
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    true
                }
            },
            _ = resync.tick() => true,
        };
        // Before the first full list, "no Nodes" would remove every route of ours.
        if !changed || !synced {
            continue;
        }
        let list: Vec<Node> = nodes.values().cloned().collect();
        let result = match config.backend {
            Backend::HostGw => host_gw::reconcile(&handle, &api, &config, &list).await,
            Backend::Vxlan => vxlan::reconcile(&handle, &api, &config, &list).await,
        };
        if let Err(e) = result {
            tracing::warn!("node routes: {e}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn node(name: &str, cidr: Option<&str>, ip: &str, mac: Option<&str>) -> Node {
        let annotations = mac
            .map(|m| json!({ vxlan::MAC_ANNOTATION: m }))
            .unwrap_or(json!({}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": cidr.map(|c| json!({"podCIDR": c})).unwrap_or(json!({})),
            "status": {"addresses": [{"type": "Hostname", "address": name},
                                     {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    pub(crate) fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    pub(crate) fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_range_and_an_address() {
        let nodes = [
            node("me", Some("10.42.0.0/24"), "192.168.1.10", None),
            node(
                "b",
                Some("10.42.1.0/24"),
                "192.168.1.11",
                Some("06:5f:c0:a8:01:0b"),
            ),
            node("c", Some("10.42.2.0/24"), "192.168.1.12", Some("not a mac")),
            node("no-cidr-yet", None, "192.168.1.13", None),
            node("foreign", Some("10.99.0.0/24"), "192.168.1.14", None),
            node("looping", Some("10.42.5.0/24"), "10.42.7.1", None),
        ];
        let found = peers(&nodes, "me", c("10.42.0.0/16"));
        let summary: Vec<(&str, String, Option<vxlan::Mac>)> = found
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    format!("{} {}", p.pod_cidr, p.ip),
                    p.vtep_mac,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "b",
                    "10.42.1.0/24 192.168.1.11".to_string(),
                    Some(vxlan::Mac([0x06, 0x5f, 0xc0, 0xa8, 1, 0x0b]))
                ),
                ("c", "10.42.2.0/24 192.168.1.12".to_string(), None),
            ]
        );
    }

    #[test]
    fn plans_change_only_what_differs_inside_the_cluster_range() {
        let cluster = c("10.42.0.0/16");
        let gw = |s: &str| NodeRoute {
            via: ip(s),
            device: None,
        };
        let desired = BTreeMap::from([
            (c("10.42.1.0/24"), gw("192.168.1.11")),
            (c("10.42.2.0/24"), gw("192.168.1.12")),
        ]);
        let existing = BTreeMap::from([
            (
                c("10.42.1.0/24"),
                NodeRoute {
                    via: ip("192.168.1.11"),
                    device: Some(2),
                },
            ),
            (c("10.42.2.0/24"), gw("192.168.1.99")),
            (c("10.42.3.0/24"), gw("192.168.1.13")),
            // Another cluster's route (a parallel test server): not ours to remove.
            (c("10.101.3.0/24"), gw("192.168.1.14")),
        ]);
        assert_eq!(
            plan_routes(&desired, &existing, cluster),
            RoutePlan {
                replace: vec![(c("10.42.2.0/24"), gw("192.168.1.12"))],
                delete: vec![(c("10.42.3.0/24"), gw("192.168.1.13"))],
            }
        );
    }

    #[test]
    fn a_route_through_a_device_must_use_that_device() {
        let cluster = c("10.42.0.0/16");
        let via_vxlan = NodeRoute {
            via: ip("10.42.1.0"),
            device: Some(7),
        };
        let desired = BTreeMap::from([(c("10.42.1.0/24"), via_vxlan)]);
        let on = |device| {
            BTreeMap::from([(
                c("10.42.1.0/24"),
                NodeRoute {
                    via: ip("10.42.1.0"),
                    device: Some(device),
                },
            )])
        };
        assert!(plan_routes(&desired, &on(7), cluster).replace.is_empty());
        assert_eq!(
            plan_routes(&desired, &on(3), cluster).replace,
            vec![(c("10.42.1.0/24"), via_vxlan)]
        );
    }

    #[test]
    fn backend_names() {
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert!("udp".parse::<Backend>().is_err());
        assert_eq!(Backend::default().to_string(), "host-gw");
    }
}
