//! Routes between nodes, flannel's host-gw backend: every other Node's podCIDR is routed
//! via that Node's InternalIP, so pods reach pods on other nodes without NAT. This needs
//! the nodes to share a link (one LAN); nodes that do not would need VXLAN, which is not
//! built.
//!
//! The routes this node owns carry their own routing protocol number ([`ROUTE_PROTOCOL`]),
//! so a reconcile can tell them from everyone else's: routes of ours inside the cluster
//! CIDR that no Node wants any more are removed, nothing else is touched. Deciding
//! ([`desired_routes`], [`plan`]) is separate from applying (netlink).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
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

/// podCIDR → gateway (the Node's InternalIP) for every other Node that has both, inside
/// `cluster`. A Node whose address lies inside the cluster range (a misconfiguration) is
/// skipped: routing a pod range via a pod address would loop.
pub fn desired_routes(nodes: &[Node], me: &str, cluster: Ipv4Cidr) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
    let mut routes = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Cidr>().ok())
        else {
            continue;
        };
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        if let Some(ip) = address {
            if cluster.covers(&cidr) && !cluster.contains(ip) {
                routes.insert(cidr, ip);
            }
        }
    }
    routes
}

#[derive(Debug, PartialEq, Eq)]
pub struct RoutePlan {
    pub replace: Vec<(Ipv4Cidr, Ipv4Addr)>,
    pub delete: Vec<(Ipv4Cidr, Ipv4Addr)>,
}

/// What to change given the routes of ours that exist (inside `cluster`).
pub fn plan(
    desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    existing: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    cluster: Ipv4Cidr,
) -> RoutePlan {
    RoutePlan {
        replace: desired
            .iter()
            .filter(|(cidr, via)| existing.get(cidr) != Some(via))
            .map(|(c, v)| (*c, *v))
            .collect(),
        delete: existing
            .iter()
            .filter(|(cidr, _)| cluster.covers(cidr) && !desired.contains_key(cidr))
            .map(|(c, v)| (*c, *v))
            .collect(),
    }
}

fn route_message(cidr: Ipv4Cidr, via: Ipv4Addr) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix())
        .gateway(via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

/// Our routes as the kernel has them (main table, IPv4, our protocol).
async fn existing_routes(h: &rtnetlink::Handle) -> Result<BTreeMap<Ipv4Cidr, Ipv4Addr>, String> {
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
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                _ => {}
            }
        }
        if let (Some(dst), Some(via)) = (dst, via) {
            if let Some(cidr) = Ipv4Cidr::new(dst, r.header.destination_prefix_length) {
                ours.insert(cidr, via);
            }
        }
    }
    Ok(ours)
}

async fn apply(
    h: &rtnetlink::Handle,
    desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    cluster: Ipv4Cidr,
) -> Result<(), String> {
    let existing = existing_routes(h).await?;
    let plan = plan(desired, &existing, cluster);
    for (cidr, via) in &plan.delete {
        match h.route().del(route_message(*cidr, *via)).execute().await {
            Ok(()) => tracing::info!("node routes: removed {cidr} via {via}"),
            Err(e) => tracing::warn!("node routes: removing {cidr} via {via}: {e}"),
        }
    }
    let mut failed = Vec::new();
    for (cidr, via) in &plan.replace {
        match h
            .route()
            .add(route_message(*cidr, *via))
            .replace()
            .execute()
            .await
        {
            Ok(()) => tracing::info!("node routes: {cidr} via {via}"),
            // Typically "network unreachable": the Node's address is not on a link of
            // ours (no shared LAN). Retried on the next change or resync.
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
pub async fn run(client: kube::Client, node_name: String, cluster: Ipv4Cidr) {
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
    let api: kube::Api<Node> = kube::Api::all(client);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut init: Option<BTreeMap<String, Node>> = None;
    let mut resync = tokio::time::interval(Duration::from_secs(30));
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
        if !changed {
            continue;
        }
        let list: Vec<Node> = nodes.values().cloned().collect();
        let desired = desired_routes(&list, &node_name, cluster);
        if let Err(e) = apply(&handle, &desired, cluster).await {
            tracing::warn!("node routes: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": cidr.map(|c| json!({"podCIDR": c})).unwrap_or(json!({})),
            "status": {"addresses": [{"type": "Hostname", "address": name},
                                     {"type": "InternalIP", "address": ip}]},
        }))
        .unwrap()
    }

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn other_nodes_ranges_go_via_their_addresses() {
        let cluster = c("10.42.0.0/16");
        let nodes = [
            node("me", Some("10.42.0.0/24"), "192.168.1.10"),
            node("b", Some("10.42.1.0/24"), "192.168.1.11"),
            node("no-cidr-yet", None, "192.168.1.12"),
            node("foreign", Some("10.99.0.0/24"), "192.168.1.13"),
            node("looping", Some("10.42.5.0/24"), "10.42.7.1"),
        ];
        let routes = desired_routes(&nodes, "me", cluster);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![(c("10.42.1.0/24"), "192.168.1.11".parse().unwrap())]
        );
    }

    #[test]
    fn plans_change_only_what_differs_inside_the_cluster_range() {
        let cluster = c("10.42.0.0/16");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let desired = BTreeMap::from([
            (c("10.42.1.0/24"), ip("192.168.1.11")),
            (c("10.42.2.0/24"), ip("192.168.1.12")),
        ]);
        let existing = BTreeMap::from([
            (c("10.42.1.0/24"), ip("192.168.1.11")),
            (c("10.42.2.0/24"), ip("192.168.1.99")),
            (c("10.42.3.0/24"), ip("192.168.1.13")),
            // Another cluster's route (a parallel test server): not ours to remove.
            (c("10.101.3.0/24"), ip("192.168.1.14")),
        ]);
        assert_eq!(
            plan(&desired, &existing, cluster),
            RoutePlan {
                replace: vec![(c("10.42.2.0/24"), ip("192.168.1.12"))],
                delete: vec![(c("10.42.3.0/24"), ip("192.168.1.13"))],
            }
        );
    }
}
