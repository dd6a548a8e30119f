//! The decision, pure: from one Service and its EndpointSlices to the [`Fragment`] of the
//! table it owns, following kube-proxy's nftables mode. Per Service port:
//!
//! - chain `service-<hash>-<ns>/<name>/<proto>/<port name>`: session affinity lookups,
//!   then `numgen random` across the endpoints;
//! - chain `endpoint-<hash>-<ns>/<name>/<proto>/<port name>__<ip>/<port>`: hairpin
//!   masquerade (a pod reaching itself), affinity recording, DNAT;
//! - chain `external-<hash>-...` for NodePort, LoadBalancer ingress and external IPs:
//!   with externalTrafficPolicy Cluster masquerade and pick any endpoint, with Local keep
//!   the client's address and pick this node's endpoints (none here: drop);
//! - map elements in `service-ips` and `service-nodeports` pointing at those chains, and
//!   the port in `nodeports` (rejected when not translated).
//!
//! Endpoints: ready ones; only when none is ready, the serving terminating ones (upstream's
//! rule); with internalTrafficPolicy Local, only this node's for ClusterIP traffic. A Service with no usable endpoint gets no map element, so its traffic meets the
//! reject rules of the skeleton.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ruleset::{
    Fragment, CHAIN_MARK_FOR_MASQUERADE, MAP_SERVICE_IPS, MAP_SERVICE_NODEPORTS, SET_NODEPORTS,
};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10_800;

/// What the decision needs to know about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// Traffic to a ClusterIP from outside this range is masqueraded, so replies from an
    /// endpoint on another node come back through this one (kube-proxy's `--cluster-cidr`).
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    /// This node's name, for internal/externalTrafficPolicy Local.
    pub node_name: Option<String>,
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// The fragment `service` owns, given the EndpointSlices labelled with its name.
pub fn fragment(service: &Service, slices: &[&EndpointSlice], node: &NodeContext) -> Fragment {
    let mut out = Fragment::default();
    let Some(spec) = &service.spec else {
        return out;
    };
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    // Headless Services are DNS only; ExternalName ones a DNS alias.
    if kind == "ExternalName" || spec.cluster_ip.as_deref() == Some("None") {
        return out;
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let mut external_ips: BTreeSet<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if kind == "LoadBalancer" {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    for port in spec.ports.iter().flatten() {
        let protocol = port
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            continue;
        }
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or_default();
        let base = format!("{namespace}/{name}/{protocol}/{port_name}");
        let service_chain = chain_name("service", &base);
        let all = backends(slices, port_name, &protocol, None);
        let local = |policy: Option<&String>| policy.is_some_and(|p| p == "Local");
        let node_only = node.node_name.as_deref();
        // internal/externalTrafficPolicy Local: this node's endpoints only.
        let cluster_backends = if local(spec.internal_traffic_policy.as_ref()) {
            backends(
                slices,
                port_name,
                &protocol,
                Some(node_only.unwrap_or_default()),
            )
        } else {
            all.clone()
        };
        let external_local = local(spec.external_traffic_policy.as_ref());
        let external_backends = if external_local {
            backends(
                slices,
                port_name,
                &protocol,
                Some(node_only.unwrap_or_default()),
            )
        } else {
            all.clone()
        };
        let node_port = (matches!(kind, "NodePort" | "LoadBalancer"))
            .then_some(port.node_port)
            .flatten()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        if let Some(np) = node_port {
            out.elements
                .insert((SET_NODEPORTS, format!("{protocol} . {np}")), String::new());
        }
        if all.is_empty() {
            continue;
        }
        // One chain per endpoint either path uses; the lookups that pick one.
        let mut chains_of: BTreeMap<&Backend, (String, Option<String>)> = BTreeMap::new();
        for b in cluster_backends.iter().chain(&external_backends) {
            if chains_of.contains_key(b) {
                continue;
            }
            let ep_base = format!("{base}__{}/{}", b.ip, b.port);
            let chain = chain_name("endpoint", &ep_base);
            let mut rules = vec![format!(
                "ip saddr {} jump {CHAIN_MARK_FOR_MASQUERADE}",
                b.ip
            )];
            let set = affinity_seconds.map(|seconds| {
                let set = chain_name("affinity", &format!("{ep_base}/{seconds}"));
                out.sets.insert(
                    set.clone(),
                    format!("type ipv4_addr; flags dynamic,timeout; timeout {seconds}s;"),
                );
                rules.push(format!("update @{set} {{ ip saddr }}"));
                set
            });
            rules.push(format!(
                "meta l4proto {protocol} dnat to {}:{}",
                b.ip, b.port
            ));
            out.chains.insert(chain.clone(), rules);
            chains_of.insert(b, (chain, set));
        }
        let dispatch = |chosen: &[Backend]| -> Vec<String> {
            let picked: Vec<&(String, Option<String>)> =
                chosen.iter().filter_map(|b| chains_of.get(b)).collect();
            let mut rules: Vec<String> = picked
                .iter()
                .filter_map(|(chain, set)| {
                    Some(format!("ip saddr @{} goto {chain}", set.as_ref()?))
                })
                .collect();
            rules.push(match picked.as_slice() {
                [] => "drop".to_string(),
                [(only, _)] => format!("goto {only}"),
                all => format!(
                    "numgen random mod {} vmap {{ {} }}",
                    all.len(),
                    all.iter()
                        .enumerate()
                        .map(|(i, (c, _))| format!("{i} : goto {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            rules
        };
        if let (Some(ip), false) = (cluster_ip, cluster_backends.is_empty()) {
            let mut service_rules = Vec::new();
            if let Some((net, len)) = node.cluster_cidr {
                service_rules.push(format!(
                    "ip daddr {ip} ip saddr != {net}/{len} jump {CHAIN_MARK_FOR_MASQUERADE}"
                ));
            }
            service_rules.extend(dispatch(&cluster_backends));
            out.chains.insert(service_chain.clone(), service_rules);
            out.elements.insert(
                (
                    MAP_SERVICE_IPS,
                    format!("{ip} . {protocol} . {service_port}"),
                ),
                format!("goto {service_chain}"),
            );
        }
        if node_port.is_some() || !external_ips.is_empty() {
            // Cluster: masquerade (replies must come back through this node), any endpoint.
            // Local: the client's address is kept, this node's endpoints only, and with
            // none here the traffic is dropped, as kube-proxy does.
            let external = chain_name("external", &base);
            let mut rules = Vec::new();
            if !external_local {
                rules.push(format!("jump {CHAIN_MARK_FOR_MASQUERADE}"));
            }
            rules.extend(dispatch(&external_backends));
            out.chains.insert(external.clone(), rules);
            if let Some(np) = node_port {
                out.elements.insert(
                    (MAP_SERVICE_NODEPORTS, format!("{protocol} . {np}")),
                    format!("goto {external}"),
                );
            }
            for ip in &external_ips {
                out.elements.insert(
                    (
                        MAP_SERVICE_IPS,
                        format!("{ip} . {protocol} . {service_port}"),
                    ),
                    format!("goto {external}"),
                );
            }
        }
    }
    out
}

/// The endpoints traffic to one Service port goes to (those on node `only_node`, when
/// given): ready ones, else (upstream's rule for a rolling update's last pods) the serving
/// terminating ones. Deduplicated and sorted, so
/// the same slices always give the same rules.
pub fn backends(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    only_node: Option<&str>,
) -> Vec<Backend> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(protocol)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            if only_node.is_some() && endpoint.node_name.as_deref() != only_node {
                continue;
            }
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Unset conditions mean "ready" (EndpointSlice API); serving defaults to ready.
            let is_ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(is_ready);
            let is_terminating = conditions.terminating.unwrap_or(false);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                let backend = Backend { ip, port };
                if is_ready && !is_terminating {
                    ready.insert(backend);
                } else if serving && is_terminating {
                    terminating.insert(backend);
                }
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

/// `<prefix>-<hash>-<base>`, as kube-proxy names its chains: the hash keeps names distinct
/// even where the readable part is ambiguous.
pub fn chain_name(prefix: &str, base: &str) -> String {
    format!("{prefix}-{:08X}-{base}", fnv1a(base.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Groups EndpointSlices by the Service they belong to (`namespace/name`).
pub fn service_key_of_slice(slice: &EndpointSlice) -> Option<String> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{}",
        slice.metadata.namespace.as_deref().unwrap_or("default"),
        service
    ))
}

/// Every Service's fragment, keyed by `namespace/name` (for full rebuilds and tests).
pub fn fragments<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: &BTreeMap<String, Vec<&EndpointSlice>>,
    node: &NodeContext,
) -> BTreeMap<String, Fragment> {
    services
        .into_iter()
        .map(|svc| {
            let key = format!(
                "{}/{}",
                svc.metadata.namespace.as_deref().unwrap_or("default"),
                svc.metadata.name.as_deref().unwrap_or_default()
            );
            let own = slices.get(&key).map(|v| v.as_slice()).unwrap_or_default();
            (key, fragment(svc, own, node))
        })
        .filter(|(_, f)| !f.is_empty())
        .collect()
}

/// One UDP Service port as stale-conntrack cleanup sees it (kube-proxy's
/// `CleanStaleEntries`): its frontends and the IPs of all its serving endpoints, whatever
/// the traffic policies (a policy change must not cut existing flows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrontend {
    /// ClusterIP, external IPs and LoadBalancer ingress IPs.
    pub ips: BTreeSet<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub serving: BTreeSet<Ipv4Addr>,
}

/// The UDP ports of `service` (none for headless and ExternalName Services, which have
/// no rules).
pub fn udp_frontends(service: &Service, slices: &[&EndpointSlice]) -> Vec<UdpFrontend> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" || spec.cluster_ip.as_deref() == Some("None") {
        return Vec::new();
    }
    let mut ips: BTreeSet<Ipv4Addr> = spec
        .cluster_ip
        .iter()
        .chain(spec.external_ips.iter().flatten())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if kind == "LoadBalancer" {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        if !port
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .eq_ignore_ascii_case("UDP")
        {
            continue;
        }
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let node_port = (matches!(kind, "NodePort" | "LoadBalancer"))
            .then_some(port.node_port)
            .flatten()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0);
        out.push(UdpFrontend {
            ips: ips.clone(),
            port: service_port,
            node_port,
            serving: serving_ips(slices, port.name.as_deref().unwrap_or_default(), "UDP"),
        });
    }
    out
}

/// The IPs of the serving endpoints (ready, or terminating but still serving) of one
/// Service port.
fn serving_ips(slices: &[&EndpointSlice], port_name: &str, protocol: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let has_port = slice.ports.iter().flatten().any(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(protocol)
                && p.port.is_some()
        });
        if !has_port {
            continue;
        }
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let serving = conditions
                .serving
                .unwrap_or(conditions.ready.unwrap_or(true));
            if serving {
                out.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value, ports: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
        .unwrap()
    }

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
        json!({"addresses": [ip], "conditions":
            {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    #[test]
    fn ready_endpoints_first_then_serving_terminating_ones() {
        let ports = json!([{"name": "http", "port": 8080, "protocol": "TCP"}]);
        let b = |ip: [u8; 4]| Backend {
            ip: Ipv4Addr::from(ip),
            port: 8080,
        };
        let cases: Vec<(&str, serde_json::Value, Vec<Backend>)> = vec![
            ("none", json!([]), vec![]),
            (
                "ready only",
                json!([
                    ep("10.42.0.2", true, true, false),
                    ep("10.42.0.3", false, false, false)
                ]),
                vec![b([10, 42, 0, 2])],
            ),
            (
                "a ready one hides terminating ones",
                json!([
                    ep("10.42.0.2", true, true, false),
                    ep("10.42.0.3", false, true, true)
                ]),
                vec![b([10, 42, 0, 2])],
            ),
            (
                "only terminating: the serving ones",
                json!([
                    ep("10.42.0.3", false, true, true),
                    ep("10.42.0.4", false, false, true)
                ]),
                vec![b([10, 42, 0, 3])],
            ),
            (
                "conditions unset mean ready",
                json!([{"addresses": ["10.42.0.9"]}]),
                vec![b([10, 42, 0, 9])],
            ),
            (
                "duplicates and bad addresses",
                json!([{"addresses": ["10.42.0.9", "nonsense"]}, {"addresses": ["10.42.0.9"]}]),
                vec![b([10, 42, 0, 9])],
            ),
        ];
        for (what, endpoints, want) in cases {
            let s = slice(endpoints, ports.clone());
            assert_eq!(backends(&[&s], "http", "tcp", None), want, "{what}");
        }
        let s = slice(json!([ep("10.42.0.2", true, true, false)]), ports);
        assert!(
            backends(&[&s], "other", "tcp", None).is_empty(),
            "port by name"
        );
        assert!(
            backends(&[&s], "http", "udp", None).is_empty(),
            "port by protocol"
        );
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let svc = service(json!({"clusterIP": "10.43.0.7",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}));
        let s = slice(
            json!([
                ep("10.42.0.2", true, true, false),
                ep("10.42.0.3", true, true, false)
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        );
        let f = fragment(&svc, &[&s], &NodeContext::default());
        let svc_chain = chain_name("service", "ns/web/tcp/http");
        let ep2 = chain_name("endpoint", "ns/web/tcp/http__10.42.0.2/8080");
        let ep3 = chain_name("endpoint", "ns/web/tcp/http__10.42.0.3/8080");
        assert_eq!(
            f.chains[&svc_chain],
            vec![format!(
                "numgen random mod 2 vmap {{ 0 : goto {ep2}, 1 : goto {ep3} }}"
            )]
        );
        assert_eq!(
            f.chains[&ep2],
            vec![
                "ip saddr 10.42.0.2 jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat to 10.42.0.2:8080".to_string()
            ]
        );
        assert_eq!(
            f.elements[&(MAP_SERVICE_IPS, "10.43.0.7 . tcp . 80".to_string())],
            format!("goto {svc_chain}")
        );
        assert_eq!(f.chains.len(), 3);
        assert_eq!(f.elements.len(), 1);
    }

    #[test]
    fn what_each_kind_of_service_owns() {
        let node = NodeContext {
            cluster_cidr: Some((Ipv4Addr::new(10, 42, 0, 0), 16)),
            node_name: None,
        };
        let one_ep = slice(
            json!([ep("10.42.0.2", true, true, false)]),
            json!([{"port": 8080, "protocol": "UDP"}]),
        );
        let none = slice(json!([]), json!([{"port": 8080, "protocol": "UDP"}]));
        struct Case {
            what: &'static str,
            spec: serde_json::Value,
            slice: EndpointSlice,
            chains: usize,
            elements: Vec<(&'static str, &'static str)>,
        }
        let cases = vec![
            Case {
                what: "headless",
                spec: json!({"clusterIP": "None", "ports": [{"port": 53, "protocol": "UDP"}]}),
                slice: one_ep.clone(),
                chains: 0,
                elements: vec![],
            },
            Case {
                what: "ExternalName",
                spec: json!({"type": "ExternalName", "externalName": "example.com"}),
                slice: one_ep.clone(),
                chains: 0,
                elements: vec![],
            },
            Case {
                what: "NodePort, UDP",
                spec: json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
                slice: one_ep.clone(),
                chains: 3,
                elements: vec![
                    ("nodeports", "udp . 30053"),
                    ("service-ips", "10.43.0.9 . udp . 53"),
                    ("service-nodeports", "udp . 30053"),
                ],
            },
            Case {
                what: "NodePort without endpoints: only the port, to be rejected",
                spec: json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
                slice: none,
                chains: 0,
                elements: vec![("nodeports", "udp . 30053")],
            },
        ];
        for c in cases {
            let f = fragment(&service(c.spec), &[&c.slice], &node);
            assert_eq!(f.chains.len(), c.chains, "{}: {:?}", c.what, f.chains);
            let got: Vec<(&str, &str)> = f.elements.keys().map(|(m, k)| (*m, k.as_str())).collect();
            assert_eq!(got, c.elements, "{}", c.what);
        }
    }

    #[test]
    fn load_balancer_ingress_and_affinity() {
        let mut svc = service(json!({"type": "LoadBalancer", "clusterIP": "10.43.0.9",
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}));
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}))
                .unwrap();
        let s = slice(
            json!([ep("10.42.0.2", true, true, false)]),
            json!([{"port": 8080, "protocol": "TCP"}]),
        );
        let f = fragment(&svc, &[&s], &NodeContext::default());
        let external = chain_name("external", "ns/web/tcp/");
        assert_eq!(
            f.elements[&(MAP_SERVICE_IPS, "192.0.2.2 . tcp . 80".to_string())],
            format!("goto {external}")
        );
        let set = chain_name("affinity", "ns/web/tcp/__10.42.0.2/8080/60");
        assert_eq!(
            f.sets[&set],
            "type ipv4_addr; flags dynamic,timeout; timeout 60s;"
        );
        let ep = chain_name("endpoint", "ns/web/tcp/__10.42.0.2/8080");
        assert_eq!(
            f.chains[&chain_name("service", "ns/web/tcp/")],
            vec![format!("ip saddr @{set} goto {ep}"), format!("goto {ep}")]
        );
        assert_eq!(f.chains[&ep][1], format!("update @{set} {{ ip saddr }}"));
    }

    #[test]
    fn local_traffic_policies_use_this_nodes_endpoints() {
        let s = slice(
            json!([{"addresses": ["10.42.0.2"], "nodeName": "here"},
                   {"addresses": ["10.42.1.2"], "nodeName": "there"}]),
            json!([{"port": 8080}]),
        );
        let node = NodeContext {
            cluster_cidr: None,
            node_name: Some("here".into()),
        };
        let here = chain_name("endpoint", "ns/web/tcp/__10.42.0.2/8080");
        let there = chain_name("endpoint", "ns/web/tcp/__10.42.1.2/8080");
        let svc_chain = chain_name("service", "ns/web/tcp/");
        let external = chain_name("external", "ns/web/tcp/");
        let spec = |itp: &str, etp: &str| {
            service(json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                "internalTrafficPolicy": itp, "externalTrafficPolicy": etp,
                "ports": [{"port": 80, "nodePort": 30080}]}))
        };
        let both = format!("numgen random mod 2 vmap {{ 0 : goto {here}, 1 : goto {there} }}");
        struct Case {
            what: &'static str,
            itp: &'static str,
            etp: &'static str,
            service: Vec<String>,
            external: Vec<String>,
        }
        let cases = vec![
            Case {
                what: "Cluster/Cluster",
                itp: "Cluster",
                etp: "Cluster",
                service: vec![both.clone()],
                external: vec!["jump mark-for-masquerade".into(), both.clone()],
            },
            Case {
                what: "internal Local: ClusterIP to this node's endpoint only",
                itp: "Local",
                etp: "Cluster",
                service: vec![format!("goto {here}")],
                external: vec!["jump mark-for-masquerade".into(), both.clone()],
            },
            Case {
                what: "external Local: no masquerade, this node's endpoint",
                itp: "Cluster",
                etp: "Local",
                service: vec![both.clone()],
                external: vec![format!("goto {here}")],
            },
        ];
        for c in cases {
            let f = fragment(&spec(c.itp, c.etp), &[&s], &node);
            assert_eq!(f.chains[&svc_chain], c.service, "{}", c.what);
            assert_eq!(f.chains[&external], c.external, "{}", c.what);
        }
        // No endpoint on this node: ClusterIP traffic is refused (no element), external
        // traffic dropped.
        let elsewhere = NodeContext {
            cluster_cidr: None,
            node_name: Some("nowhere".into()),
        };
        let f = fragment(&spec("Local", "Local"), &[&s], &elsewhere);
        assert!(!f.chains.contains_key(&svc_chain));
        assert!(!f.elements.keys().any(|(m, _)| *m == MAP_SERVICE_IPS));
        assert_eq!(f.chains[&external], vec!["drop".to_string()]);
    }

    #[test]
    fn off_cluster_sources_are_masqueraded_for_cluster_ips() {
        let svc = service(json!({"clusterIP": "10.43.0.7", "ports": [{"port": 80}]}));
        let s = slice(
            json!([ep("10.42.0.2", true, true, false)]),
            json!([{"port": 8080}]),
        );
        let node = NodeContext {
            cluster_cidr: Some((Ipv4Addr::new(10, 42, 0, 0), 16)),
            node_name: None,
        };
        let f = fragment(&svc, &[&s], &node);
        assert_eq!(
            f.chains[&chain_name("service", "ns/web/tcp/")][0],
            "ip daddr 10.43.0.7 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
        );
    }

    #[test]
    fn udp_frontends_list_every_frontend_and_all_serving_endpoints() {
        let mut svc = service(json!({"type": "NodePort", "clusterIP": "10.43.0.10",
            "externalIPs": ["203.0.113.7"], "internalTrafficPolicy": "Local",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054}]}));
        let s = slice(
            json!([
                ep("10.42.0.2", true, true, false),
                ep("10.42.0.3", false, true, true),
                ep("10.42.0.4", false, false, false)
            ]),
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 5353, "protocol": "TCP"}]),
        );
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            udp_frontends(&svc, &[&s]),
            [UdpFrontend {
                ips: [ip("10.43.0.10"), ip("203.0.113.7")].into(),
                port: 53,
                node_port: Some(30053),
                serving: [ip("10.42.0.2"), ip("10.42.0.3")].into(),
            }]
        );
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert!(udp_frontends(&svc, &[&s]).is_empty(), "headless: no rules");
    }
}
