//! The decision, pure: from one Service and its EndpointSlices to the [`Fragment`] of the
//! table it owns. Per Service port and frontend (ClusterIP, each external or LoadBalancer
//! IP, the NodePort):
//!
//! - an element in `service-ips` (address . protocol . port) or `service-nodeports`
//!   (protocol . nodePort) whose verdict is `goto pick-<n>` (`pick-masq-<n>` for external
//!   traffic with externalTrafficPolicy Cluster, `nodeport-pick[-masq]-<n>` for NodePorts),
//!   n being the number of endpoints; `drop` for externalTrafficPolicy Local without an
//!   endpoint on this node;
//! - n elements in `service-endpoints` / `nodeport-endpoints` (the frontend key plus an
//!   index `0..n`) holding the endpoints: the shared `pick-<n>` chain DNATs to the one
//!   `numgen random mod n` draws. Every element carries a comment naming the Service port
//!   (and the endpoint), so `nft list table` stays readable;
//! - hairpin pairs `endpoint . endpoint` in `hairpin-endpoints` (shared, counted);
//! - the port in `nodeports` (rejected when not translated).
//!
//! So a Service owns no chain and an update is a few element commands (nft's per-command
//! cost grows with the number of chains in the kernel, see [`super::ruleset`]). Only
//! ClientIP session affinity needs per-Service chains, as in kube-proxy's nftables mode:
//! `service-<hash>-<ns>/<name>/<proto>/<port name>` (affinity lookups, then `numgen
//! random`), `endpoint-<hash>-...__<ip>/<port>` (hairpin masquerade, affinity recording,
//! DNAT) and `external-<hash>-...` for the external frontends.
//!
//! Endpoints: ready ones; only when none is ready, the serving terminating ones (upstream's
//! rule); with internalTrafficPolicy Local, only this node's for ClusterIP traffic. A
//! Service with no usable endpoint gets no map element, so its traffic meets the reject
//! rules of the skeleton.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ruleset::{
    Fragment, CHAIN_MARK_FOR_MASQUERADE, MAP_NODEPORT_ENDPOINTS, MAP_SERVICE_ENDPOINTS,
    MAP_SERVICE_IPS, MAP_SERVICE_NODEPORTS, SET_HAIRPIN, SET_NODEPORTS,
};

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10_800;

/// What the decision needs to know about the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
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
        let ports = PortFrontends {
            base: &base,
            protocol: &protocol,
            cluster_ip: cluster_ip.filter(|_| !cluster_backends.is_empty()),
            service_port,
            node_port,
            external_ips: &external_ips,
            external_local,
        };
        match affinity_seconds {
            Some(seconds) => {
                ports.affinity_chains(&mut out, seconds, &cluster_backends, &external_backends)
            }
            None => ports.elements(&mut out, &cluster_backends, &external_backends),
        }
    }
    out
}

/// The frontends of one Service port, and how traffic to them is handled.
struct PortFrontends<'a> {
    /// `<ns>/<name>/<protocol>/<port name>`.
    base: &'a str,
    protocol: &'a str,
    /// The ClusterIP, when ClusterIP traffic has endpoints to go to.
    cluster_ip: Option<Ipv4Addr>,
    service_port: u16,
    node_port: Option<u16>,
    external_ips: &'a BTreeSet<Ipv4Addr>,
    /// externalTrafficPolicy Local: no masquerade, this node's endpoints only.
    external_local: bool,
}

/// Element comments are at most 128 bytes in nftables.
const COMMENT_MAX: usize = 120;

fn comment(text: &str) -> String {
    let mut end = text.len().min(COMMENT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("comment \"{}\"", &text[..end])
}

/// `pick-<n>` and its variants: DNAT to the endpoint `numgen random mod n` draws from the
/// endpoint map, keyed as the frontend map is.
fn pick_chain(nodeport: bool, masquerade: bool, n: usize) -> (String, Vec<String>) {
    let (prefix, key, map) = if nodeport {
        (
            "nodeport-pick",
            "meta l4proto . th dport",
            MAP_NODEPORT_ENDPOINTS,
        )
    } else {
        (
            "pick",
            "ip daddr . meta l4proto . th dport",
            MAP_SERVICE_ENDPOINTS,
        )
    };
    let mut rules = Vec::new();
    let name = if masquerade {
        rules.push(format!("jump {CHAIN_MARK_FOR_MASQUERADE}"));
        format!("{prefix}-masq-{n}")
    } else {
        format!("{prefix}-{n}")
    };
    rules.push(format!(
        "dnat ip to {key} . numgen random mod {n} map @{map}"
    ));
    (name, rules)
}

/// The `pick-<n>` chains every rebuild makes, for up to this many endpoints: an update
/// needing a chain the table lacks costs a full rebuild.
const COMMON_PICK_CHAINS: usize = 16;

/// A fragment holding only the shared chains for 1 to [`COMMON_PICK_CHAINS`] endpoints.
pub fn common_shared_chains() -> Fragment {
    let mut out = Fragment::default();
    for n in 1..=COMMON_PICK_CHAINS {
        for (nodeport, masquerade) in [(false, false), (false, true), (true, false), (true, true)] {
            let (name, rules) = pick_chain(nodeport, masquerade, n);
            out.shared_chains.insert(name, rules);
        }
    }
    out
}

impl PortFrontends<'_> {
    /// Without session affinity: map elements only.
    fn elements(&self, out: &mut Fragment, cluster: &[Backend], external: &[Backend]) {
        let protocol = self.protocol;
        let port = self.service_port;
        let add = |out: &mut Fragment,
                   frontend: (&'static str, String),
                   endpoints: (&'static str, &[Backend]),
                   masquerade: bool| {
            let (map, key) = frontend;
            let (endpoint_map, backends) = endpoints;
            if backends.is_empty() {
                // externalTrafficPolicy Local and no endpoint here: dropped, as kube-proxy does.
                out.elements
                    .insert((map, key), format!("{} : drop", comment(self.base)));
                return;
            }
            let (chain, rules) =
                pick_chain(map == MAP_SERVICE_NODEPORTS, masquerade, backends.len());
            for (i, b) in backends.iter().enumerate() {
                out.elements.insert(
                    (endpoint_map, format!("{key} . {i}")),
                    format!(
                        "{} : {} . {}",
                        comment(&format!("{}: dnat to {}:{}", self.base, b.ip, b.port)),
                        b.ip,
                        b.port
                    ),
                );
                out.shared_elements
                    .insert((SET_HAIRPIN, format!("{} . {}", b.ip, b.ip)));
            }
            out.elements
                .insert((map, key), format!("{} : goto {chain}", comment(self.base)));
            out.shared_chains.insert(chain, rules);
        };
        if let Some(ip) = self.cluster_ip {
            add(
                out,
                (MAP_SERVICE_IPS, format!("{ip} . {protocol} . {port}")),
                (MAP_SERVICE_ENDPOINTS, cluster),
                false,
            );
        }
        let masquerade = !self.external_local;
        for ip in self.external_ips {
            add(
                out,
                (MAP_SERVICE_IPS, format!("{ip} . {protocol} . {port}")),
                (MAP_SERVICE_ENDPOINTS, external),
                masquerade,
            );
        }
        if let Some(np) = self.node_port {
            add(
                out,
                (MAP_SERVICE_NODEPORTS, format!("{protocol} . {np}")),
                (MAP_NODEPORT_ENDPOINTS, external),
                masquerade,
            );
        }
    }

    /// With ClientIP session affinity: kube-proxy's chains, one per endpoint (recording
    /// the client in the endpoint's affinity set) and the Service chains that look the
    /// client up before picking at random.
    fn affinity_chains(
        &self,
        out: &mut Fragment,
        affinity_seconds: i32,
        cluster_backends: &[Backend],
        external_backends: &[Backend],
    ) {
        let base = self.base;
        let protocol = self.protocol;
        let service_port = self.service_port;
        let service_chain = chain_name("service", base);
        // One chain per endpoint either path uses; the lookups that pick one.
        let mut chains_of: BTreeMap<&Backend, (String, Option<String>)> = BTreeMap::new();
        for b in cluster_backends.iter().chain(external_backends) {
            if chains_of.contains_key(b) {
                continue;
            }
            let ep_base = format!("{base}__{}/{}", b.ip, b.port);
            let chain = chain_name("endpoint", &ep_base);
            let mut rules = vec![format!(
                "ip saddr {} jump {CHAIN_MARK_FOR_MASQUERADE}",
                b.ip
            )];
            let set = {
                let seconds = affinity_seconds;
                let set = chain_name("affinity", &format!("{ep_base}/{seconds}"));
                out.sets.insert(
                    set.clone(),
                    format!("type ipv4_addr; flags dynamic,timeout; timeout {seconds}s;"),
                );
                rules.push(format!("update @{set} {{ ip saddr }}"));
                Some(set)
            };
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
        if let Some(ip) = self.cluster_ip {
            let service_rules = dispatch(cluster_backends);
            out.chains.insert(service_chain.clone(), service_rules);
            out.elements.insert(
                (
                    MAP_SERVICE_IPS,
                    format!("{ip} . {protocol} . {service_port}"),
                ),
                format!("{} : goto {service_chain}", comment(base)),
            );
        }
        if self.node_port.is_some() || !self.external_ips.is_empty() {
            // Cluster: masquerade (replies must come back through this node), any endpoint.
            // Local: the client's address is kept, this node's endpoints only, and with
            // none here the traffic is dropped, as kube-proxy does.
            let external = chain_name("external", base);
            let mut rules = Vec::new();
            if !self.external_local {
                rules.push(format!("jump {CHAIN_MARK_FOR_MASQUERADE}"));
            }
            rules.extend(dispatch(external_backends));
            out.chains.insert(external.clone(), rules);
            if let Some(np) = self.node_port {
                out.elements.insert(
                    (MAP_SERVICE_NODEPORTS, format!("{protocol} . {np}")),
                    format!("{} : goto {external}", comment(base)),
                );
            }
            for ip in self.external_ips {
                out.elements.insert(
                    (
                        MAP_SERVICE_IPS,
                        format!("{ip} . {protocol} . {service_port}"),
                    ),
                    format!("{} : goto {external}", comment(base)),
                );
            }
        }
    }
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

    /// The frontend elements of `f` (map, key → verdict), comments left out.
    fn verdicts(f: &Fragment) -> Vec<(&'static str, String, String)> {
        f.elements
            .iter()
            .filter(|((m, _), _)| [MAP_SERVICE_IPS, MAP_SERVICE_NODEPORTS].contains(m))
            .map(|((m, k), v)| (*m, k.clone(), v.rsplit(" : ").next().unwrap().to_string()))
            .collect()
    }

    /// The endpoint elements of `f` (map, key → endpoint).
    fn endpoints(f: &Fragment) -> Vec<(&'static str, String, String)> {
        f.elements
            .iter()
            .filter(|((m, _), _)| [MAP_SERVICE_ENDPOINTS, MAP_NODEPORT_ENDPOINTS].contains(m))
            .map(|((m, k), v)| (*m, k.clone(), v.rsplit(" : ").next().unwrap().to_string()))
            .collect()
    }

    fn owned(items: &[(&'static str, &str, &str)]) -> Vec<(&'static str, String, String)> {
        items
            .iter()
            .map(|(m, k, v)| (*m, k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cluster_ip_with_two_endpoints_owns_elements_only() {
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
        assert!(f.chains.is_empty() && f.sets.is_empty());
        assert_eq!(
            verdicts(&f),
            owned(&[("service-ips", "10.43.0.7 . tcp . 80", "goto pick-2")])
        );
        assert_eq!(
            endpoints(&f),
            owned(&[
                (
                    "service-endpoints",
                    "10.43.0.7 . tcp . 80 . 0",
                    "10.42.0.2 . 8080"
                ),
                (
                    "service-endpoints",
                    "10.43.0.7 . tcp . 80 . 1",
                    "10.42.0.3 . 8080"
                ),
            ])
        );
        assert_eq!(
            f.elements[&(
                MAP_SERVICE_ENDPOINTS,
                "10.43.0.7 . tcp . 80 . 1".to_string()
            )],
            "comment \"ns/web/tcp/http: dnat to 10.42.0.3:8080\" : 10.42.0.3 . 8080"
        );
        assert_eq!(
            f.shared_chains["pick-2"],
            vec![
                "dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @service-endpoints"
                    .to_string()
            ]
        );
        assert_eq!(
            f.shared_elements,
            [
                (SET_HAIRPIN, "10.42.0.2 . 10.42.0.2".to_string()),
                (SET_HAIRPIN, "10.42.0.3 . 10.42.0.3".to_string())
            ]
            .into()
        );
    }

    #[test]
    fn what_each_kind_of_service_owns() {
        let node = NodeContext { node_name: None };
        let one_ep = slice(
            json!([ep("10.42.0.2", true, true, false)]),
            json!([{"port": 8080, "protocol": "UDP"}]),
        );
        let none = slice(json!([]), json!([{"port": 8080, "protocol": "UDP"}]));
        struct Case {
            what: &'static str,
            spec: serde_json::Value,
            slice: EndpointSlice,
            elements: Vec<(&'static str, &'static str)>,
        }
        let cases = vec![
            Case {
                what: "headless",
                spec: json!({"clusterIP": "None", "ports": [{"port": 53, "protocol": "UDP"}]}),
                slice: one_ep.clone(),
                elements: vec![],
            },
            Case {
                what: "ExternalName",
                spec: json!({"type": "ExternalName", "externalName": "example.com"}),
                slice: one_ep.clone(),
                elements: vec![],
            },
            Case {
                what: "NodePort, UDP",
                spec: json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
                slice: one_ep.clone(),
                elements: vec![
                    ("nodeport-endpoints", "udp . 30053 . 0"),
                    ("nodeports", "udp . 30053"),
                    ("service-endpoints", "10.43.0.9 . udp . 53 . 0"),
                    ("service-ips", "10.43.0.9 . udp . 53"),
                    ("service-nodeports", "udp . 30053"),
                ],
            },
            Case {
                what: "NodePort without endpoints: only the port, to be rejected",
                spec: json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}),
                slice: none,
                elements: vec![("nodeports", "udp . 30053")],
            },
        ];
        for c in cases {
            let f = fragment(&service(c.spec), &[&c.slice], &node);
            assert!(f.chains.is_empty(), "{}: {:?}", c.what, f.chains);
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
            format!("comment \"ns/web/tcp/\" : goto {external}")
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
        assert_eq!(
            f.chains[&ep],
            vec![
                "ip saddr 10.42.0.2 jump mark-for-masquerade".to_string(),
                format!("update @{set} {{ ip saddr }}"),
                "meta l4proto tcp dnat to 10.42.0.2:8080".to_string()
            ]
        );
        assert!(f.shared_chains.is_empty());
    }

    #[test]
    fn local_traffic_policies_use_this_nodes_endpoints() {
        let s = slice(
            json!([{"addresses": ["10.42.0.2"], "nodeName": "here"},
                   {"addresses": ["10.42.1.2"], "nodeName": "there"}]),
            json!([{"port": 8080}]),
        );
        let node = NodeContext {
            node_name: Some("here".into()),
        };
        let spec = |itp: &str, etp: &str| {
            service(json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                "externalIPs": ["203.0.113.7"],
                "internalTrafficPolicy": itp, "externalTrafficPolicy": etp,
                "ports": [{"port": 80, "nodePort": 30080}]}))
        };
        struct Case {
            what: &'static str,
            itp: &'static str,
            etp: &'static str,
            verdicts: Vec<(&'static str, &'static str, &'static str)>,
            endpoints: Vec<(&'static str, &'static str, &'static str)>,
        }
        let cases = vec![
            Case {
                what: "Cluster/Cluster",
                itp: "Cluster",
                etp: "Cluster",
                verdicts: vec![
                    ("service-ips", "10.43.0.9 . tcp . 80", "goto pick-2"),
                    ("service-ips", "203.0.113.7 . tcp . 80", "goto pick-masq-2"),
                    (
                        "service-nodeports",
                        "tcp . 30080",
                        "goto nodeport-pick-masq-2",
                    ),
                ],
                endpoints: vec![
                    ("nodeport-endpoints", "tcp . 30080 . 0", "10.42.0.2 . 8080"),
                    ("nodeport-endpoints", "tcp . 30080 . 1", "10.42.1.2 . 8080"),
                    (
                        "service-endpoints",
                        "10.43.0.9 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "10.43.0.9 . tcp . 80 . 1",
                        "10.42.1.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "203.0.113.7 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "203.0.113.7 . tcp . 80 . 1",
                        "10.42.1.2 . 8080",
                    ),
                ],
            },
            Case {
                what: "internal Local: ClusterIP to this node's endpoint only",
                itp: "Local",
                etp: "Cluster",
                verdicts: vec![
                    ("service-ips", "10.43.0.9 . tcp . 80", "goto pick-1"),
                    ("service-ips", "203.0.113.7 . tcp . 80", "goto pick-masq-2"),
                    (
                        "service-nodeports",
                        "tcp . 30080",
                        "goto nodeport-pick-masq-2",
                    ),
                ],
                endpoints: vec![
                    ("nodeport-endpoints", "tcp . 30080 . 0", "10.42.0.2 . 8080"),
                    ("nodeport-endpoints", "tcp . 30080 . 1", "10.42.1.2 . 8080"),
                    (
                        "service-endpoints",
                        "10.43.0.9 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "203.0.113.7 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "203.0.113.7 . tcp . 80 . 1",
                        "10.42.1.2 . 8080",
                    ),
                ],
            },
            Case {
                what: "external Local: no masquerade, this node's endpoint",
                itp: "Cluster",
                etp: "Local",
                verdicts: vec![
                    ("service-ips", "10.43.0.9 . tcp . 80", "goto pick-2"),
                    ("service-ips", "203.0.113.7 . tcp . 80", "goto pick-1"),
                    ("service-nodeports", "tcp . 30080", "goto nodeport-pick-1"),
                ],
                endpoints: vec![
                    ("nodeport-endpoints", "tcp . 30080 . 0", "10.42.0.2 . 8080"),
                    (
                        "service-endpoints",
                        "10.43.0.9 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "10.43.0.9 . tcp . 80 . 1",
                        "10.42.1.2 . 8080",
                    ),
                    (
                        "service-endpoints",
                        "203.0.113.7 . tcp . 80 . 0",
                        "10.42.0.2 . 8080",
                    ),
                ],
            },
        ];
        for c in cases {
            let f = fragment(&spec(c.itp, c.etp), &[&s], &node);
            assert_eq!(verdicts(&f), owned(&c.verdicts), "{}", c.what);
            assert_eq!(endpoints(&f), owned(&c.endpoints), "{}", c.what);
        }
        assert_eq!(
            pick_chain(true, true, 2).1,
            vec![
                "jump mark-for-masquerade".to_string(),
                "dnat ip to meta l4proto . th dport . numgen random mod 2 map @nodeport-endpoints"
                    .to_string()
            ]
        );
        // No endpoint on this node: ClusterIP traffic is refused (no element), external
        // traffic dropped.
        let elsewhere = NodeContext {
            node_name: Some("nowhere".into()),
        };
        let f = fragment(&spec("Local", "Local"), &[&s], &elsewhere);
        assert_eq!(
            verdicts(&f),
            owned(&[
                ("service-ips", "203.0.113.7 . tcp . 80", "drop"),
                ("service-nodeports", "tcp . 30080", "drop"),
            ])
        );
        assert!(endpoints(&f).is_empty());
    }

    /// What the decision produces is valid nft 1.0.6 input against a real table: a
    /// rebuild, an endpoint move as an incremental batch, and a Service growing past the
    /// common `pick-<n>` chains, which needs a rebuild (nft cannot add a rule reading an
    /// endpoint map it loaded back from the kernel). Needs root and nft; skipped otherwise.
    #[tokio::test]
    async fn generated_batches_apply_with_nft() {
        use crate::proxy::nft::Nft;
        use crate::proxy::ruleset::{Batch, Shared, Skeleton};
        // SAFETY: geteuid has no preconditions.
        let (Some(nft), true) = (Nft::find(), unsafe { libc::geteuid() } == 0) else {
            eprintln!("skipped: needs root and nft");
            return;
        };
        let table = format!("skiff-unit-model-{}", std::process::id());
        // Addresses from the benchmarking range, which nothing on the host uses.
        let skeleton = Skeleton {
            table: table.clone(),
            service_cidr: (Ipv4Addr::new(198, 18, 0, 0), 24),
            node_ips: vec![Ipv4Addr::new(198, 18, 1, 1)],
            cluster_cidr: Some((Ipv4Addr::new(198, 18, 2, 0), 24)),
        };
        let node = NodeContext::default();
        let svc = service(json!({"type": "NodePort", "clusterIP": "198.18.0.7",
            "externalIPs": ["198.18.3.1"],
            "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}));
        let with = |ips: Vec<String>| {
            let eps: Vec<serde_json::Value> =
                ips.iter().map(|ip| ep(ip, true, true, false)).collect();
            fragment(
                &svc,
                &[&slice(
                    json!(eps),
                    json!([{"port": 5353, "protocol": "UDP"}]),
                )],
                &node,
            )
        };
        let one = with(vec!["198.18.2.5".into()]);
        let moved = with(vec!["198.18.2.6".into()]);
        let many = with((10..30).map(|i| format!("198.18.2.{i}")).collect());
        let empty = Fragment::default();
        let rebuild = |f: &Fragment| {
            let mut batch = Batch::default();
            batch.diff(&table, &empty, &common_shared_chains());
            batch.diff(&table, &empty, f);
            let mut shared = Shared::default();
            let text = skeleton.rebuild_commands() + &batch.text(&table, &shared);
            batch.apply_to(&mut shared);
            (text, shared)
        };

        let (text, shared) = rebuild(&one);
        let first = nft.apply(&text).await;
        let mut batch = Batch::default();
        batch.diff(&table, &one, &moved);
        let no_new_chain = batch.new_shared_chains(&shared).next().is_none();
        let move_text = batch.text(&table, &shared);
        let move_result = nft.apply(&move_text).await;
        let after_move = nft.run_blocking(&["list", "table", "ip", &table]);
        let mut batch = Batch::default();
        batch.diff(&table, &moved, &many);
        let new_chains: Vec<String> = batch.new_shared_chains(&shared).map(String::from).collect();
        let grown = nft.apply(&rebuild(&many).0).await;
        let after_growth = nft.run_blocking(&["list", "table", "ip", &table]);
        let _ = nft.run_blocking(&["delete", "table", "ip", &table]);

        first.unwrap();
        move_result.unwrap();
        grown.unwrap();
        assert!(no_new_chain);
        assert!(!move_text.contains("chain"), "{move_text}");
        let after_move = after_move.unwrap();
        assert!(
            after_move.contains("dnat to 198.18.2.6:5353"),
            "{after_move}"
        );
        assert!(!after_move.contains("198.18.2.5"), "{after_move}");
        assert_eq!(
            new_chains,
            ["nodeport-pick-masq-20", "pick-20", "pick-masq-20"]
        );
        let after_growth = after_growth.unwrap();
        assert!(
            after_growth.contains("chain pick-masq-20"),
            "{after_growth}"
        );
        assert!(
            after_growth.contains("198.18.2.29 . 5353"),
            "{after_growth}"
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
