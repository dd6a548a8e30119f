//! The decision, pure: from the cluster's NetworkPolicies, pods and namespaces to what this
//! node must enforce for its own pods ([`Desired`]), with upstream's semantics:
//!
//! - a local pod selected by any policy whose policyTypes hold Ingress is isolated for
//!   ingress: only traffic some selecting policy's ingress rules allow reaches it; the same
//!   for Egress and the traffic it sends. policyTypes missing: Ingress, plus Egress when
//!   egress rules exist (the apiserver defaults it already; kept for stored objects);
//! - a rule allows traffic when a peer matches (none listed: any) and a port matches (none
//!   listed: any). Peers: `podSelector` (the policy's namespace), `namespaceSelector` (every
//!   pod there), both (pods matching in namespaces matching), `ipBlock` minus `except`;
//!   ports: protocol (default TCP), a number with optional `endPort`, or a name resolved
//!   against the container ports of the destination pods (ingress: the selected pods,
//!   egress: the peer pods);
//! - a pod may always reach itself, replies are always allowed, and traffic between a pod
//!   and its own node never passes the forward hook (upstream: always allowed).
//!
//! Local pods: `spec.nodeName` is this node, a podIP in the cluster CIDR, not hostNetwork,
//! not finished. Peers may be anywhere in the cluster (pod IPs survive between nodes).
//! Only policies that select a local pod are kept: other nodes' policies cost nothing here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector;
pub use crate::protocol::Protocol;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What the decision keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Option<Ipv4Addr>,
    pub node_name: Option<String>,
    pub host_network: bool,
    /// Succeeded or Failed: its address may already belong to another pod.
    pub finished: bool,
    /// Named container ports: (name, protocol, number).
    pub named_ports: Vec<(String, Protocol, u16)>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let ip = status.and_then(|s| {
            s.pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.as_str())
                .chain(s.pod_ip.as_deref())
                .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
        });
        let named_ports = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone()?;
                let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
                Some((name, protocol, u16::try_from(p.container_port).ok()?))
            })
            .collect();
        PodInfo {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node_name: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            finished: matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ),
            named_ports,
        }
    }

    /// The address other pods reach it by, if it has its own.
    fn pod_network_ip(&self) -> Option<Ipv4Addr> {
        if self.host_network || self.finished {
            return None;
        }
        self.ip
    }

    fn port_named(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| n == name && *p == protocol)
            .map(|(_, _, port)| *port)
    }
}

/// What the watches delivered.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// `namespace/name` → policy.
    pub policies: BTreeMap<String, NetworkPolicy>,
    /// `namespace/name` → pod.
    pub pods: BTreeMap<String, PodInfo>,
    /// Namespace → its labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// Which pods are this node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    pub node_name: String,
    /// `--cluster-cidr`: a local pod's address is in it.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

/// An IPv4 prefix.
pub type Cidr = (Ipv4Addr, u8);

/// `ipBlock`: a prefix minus exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlock {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
}

impl IpBlock {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        in_cidr(ip, self.cidr) && !self.except.iter().any(|e| in_cidr(ip, *e))
    }
}

/// The peers of one rule (at least one was listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    /// The addresses of the pods the selector peers match; None when the rule has none.
    pub pods: Option<BTreeSet<Ipv4Addr>>,
    pub blocks: Vec<IpBlock>,
}

impl Peers {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.pods.as_ref().is_some_and(|p| p.contains(&ip))
            || self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// A numeric port match: every port of the protocol, or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMatch {
    pub protocol: Protocol,
    /// First and last port; None: all.
    pub range: Option<(u16, u16)>,
}

/// The ports of one rule (at least one was listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    pub numeric: Vec<PortMatch>,
    /// Named ports resolved to (pod address, protocol, port): the destination pods' for
    /// ingress, the peer pods' for egress (there the element also says which peer). None
    /// when the rule names no port.
    pub named: Option<BTreeSet<(Ipv4Addr, Protocol, u16)>>,
}

/// One ingress or egress rule, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// None: from/to anywhere.
    pub peers: Option<Peers>,
    /// None: every port.
    pub ports: Option<Ports>,
}

/// What one policy enforces (for the directions its policyTypes name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

/// What this node enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Policies selecting at least one local pod, by `namespace/name`.
    pub policies: BTreeMap<String, PolicyRules>,
    /// Local pods isolated for ingress → the policies (with Ingress) selecting them.
    pub ingress: BTreeMap<Ipv4Addr, Vec<String>>,
    /// Local pods isolated for egress → the policies (with Egress) selecting them.
    pub egress: BTreeMap<Ipv4Addr, Vec<String>>,
    /// Every local pod's address (a pod may always reach itself).
    pub local: BTreeSet<Ipv4Addr>,
}

/// Whether `ip` is inside `cidr`.
pub fn in_cidr(ip: Ipv4Addr, (net, len): Cidr) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Parses an IPv4 CIDR to its network address; None for IPv6 or garbage (an IPv6 block
/// never matches this IPv4 data plane).
pub fn parse_cidr(text: &str) -> Option<Cidr> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// The directions a policy governs.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

impl ClusterState {
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces.get(namespace).cloned().unwrap_or_else(|| {
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())])
        })
    }

    /// The pods (with a pod-network address) a selector peer matches.
    fn peer_pods<'a>(
        &'a self,
        policy_namespace: &str,
        peer: &NetworkPolicyPeer,
    ) -> Vec<&'a PodInfo> {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return Vec::new();
        }
        let namespaces: Option<BTreeSet<&str>> = peer.namespace_selector.as_ref().map(|sel| {
            let mut names: BTreeSet<&str> = self
                .namespaces
                .iter()
                .filter(|(_, labels)| selector::matches(sel, labels))
                .map(|(name, _)| name.as_str())
                .collect();
            // Pods of a namespace not seen yet: judged by its name label.
            for pod in self.pods.values() {
                if !self.namespaces.contains_key(&pod.namespace)
                    && selector::matches(sel, &self.namespace_labels(&pod.namespace))
                {
                    names.insert(pod.namespace.as_str());
                }
            }
            names
        });
        self.pods
            .values()
            .filter(|pod| pod.pod_network_ip().is_some())
            .filter(|pod| match &namespaces {
                Some(names) => names.contains(pod.namespace.as_str()),
                None => pod.namespace == policy_namespace,
            })
            .filter(|pod| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector::matches(sel, &pod.labels))
            })
            .collect()
    }

    fn is_local(&self, pod: &PodInfo, node: &NodeContext) -> Option<Ipv4Addr> {
        let ip = pod.pod_network_ip()?;
        (pod.node_name.as_deref() == Some(node.node_name.as_str())
            && node.cluster_cidr.is_none_or(|c| in_cidr(ip, c)))
        .then_some(ip)
    }

    /// What this node enforces now.
    pub fn decide(&self, node: &NodeContext) -> Desired {
        let mut out = Desired::default();
        let local: Vec<&PodInfo> = self
            .pods
            .values()
            .filter(|p| self.is_local(p, node).is_some())
            .collect();
        out.local = local.iter().filter_map(|p| p.ip).collect();
        for (key, policy) in &self.policies {
            let Some(spec) = &policy.spec else { continue };
            let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
            let selected: Vec<&PodInfo> = local
                .iter()
                .copied()
                .filter(|p| p.namespace == namespace)
                // An absent podSelector is `{}`: every pod of the namespace.
                .filter(|p| {
                    spec.pod_selector
                        .as_ref()
                        .is_none_or(|sel| selector::matches(sel, &p.labels))
                })
                .collect();
            if selected.is_empty() {
                continue;
            }
            let selected_ips = selected.iter().filter_map(|p| p.ip);
            let (ingress, egress) = policy_types(spec);
            let mut rules = PolicyRules::default();
            if ingress {
                rules.ingress = Some(
                    spec.ingress
                        .iter()
                        .flatten()
                        .map(|r| {
                            self.rule(
                                namespace,
                                r.from.as_deref(),
                                r.ports.as_deref(),
                                &selected,
                                false,
                            )
                        })
                        .collect(),
                );
                for ip in selected_ips.clone() {
                    out.ingress.entry(ip).or_default().push(key.clone());
                }
            }
            if egress {
                rules.egress = Some(
                    spec.egress
                        .iter()
                        .flatten()
                        .map(|r| {
                            self.rule(
                                namespace,
                                r.to.as_deref(),
                                r.ports.as_deref(),
                                &selected,
                                true,
                            )
                        })
                        .collect(),
                );
                for ip in selected_ips {
                    out.egress.entry(ip).or_default().push(key.clone());
                }
            }
            if ingress || egress {
                out.policies.insert(key.clone(), rules);
            }
        }
        out
    }

    /// One rule resolved. `selected` are the local pods the policy selects; named ports
    /// are resolved against them for ingress, against the peers for egress.
    fn rule(
        &self,
        namespace: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        selected: &[&PodInfo],
        egress: bool,
    ) -> Rule {
        let peers = peers.filter(|p| !p.is_empty()).map(|list| {
            let mut out = Peers::default();
            for peer in list {
                if let Some(block) = &peer.ip_block {
                    if let Some(cidr) = parse_cidr(&block.cidr) {
                        let mut except: Vec<Cidr> = block
                            .except
                            .iter()
                            .flatten()
                            .filter_map(|e| parse_cidr(e))
                            .collect();
                        except.sort();
                        except.dedup();
                        out.blocks.push(IpBlock { cidr, except });
                    }
                } else if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                    let ips = self
                        .peer_pods(namespace, peer)
                        .into_iter()
                        .filter_map(|p| p.pod_network_ip());
                    out.pods.get_or_insert_with(BTreeSet::new).extend(ips);
                }
            }
            out
        });
        let ports = ports.filter(|p| !p.is_empty()).map(|list| {
            let mut out = Ports::default();
            for port in list {
                let Some(protocol) = Protocol::parse(port.protocol.as_deref().unwrap_or("TCP"))
                else {
                    continue;
                };
                match &port.port {
                    None => out.numeric.push(PortMatch {
                        protocol,
                        range: None,
                    }),
                    Some(IntOrString::Int(first)) => {
                        let Ok(first) = u16::try_from(*first) else {
                            continue;
                        };
                        let last = port
                            .end_port
                            .and_then(|e| u16::try_from(e).ok())
                            .filter(|e| *e >= first)
                            .unwrap_or(first);
                        out.numeric.push(PortMatch {
                            protocol,
                            range: Some((first, last)),
                        });
                    }
                    Some(IntOrString::String(name)) => {
                        let named = out.named.get_or_insert_with(BTreeSet::new);
                        let targets: Vec<&PodInfo> = if egress {
                            self.egress_destinations(peers.as_ref())
                        } else {
                            selected.to_vec()
                        };
                        for pod in targets {
                            if let (Some(ip), Some(number)) =
                                (pod.pod_network_ip(), pod.port_named(name, protocol))
                            {
                                named.insert((ip, protocol, number));
                            }
                        }
                    }
                }
            }
            out.numeric.sort();
            out.numeric.dedup();
            out
        });
        Rule { peers, ports }
    }

    /// The pods an egress rule's named ports are resolved against: every pod when the rule
    /// lists no peer, else the selector peers' pods and the pods inside its ipBlocks.
    fn egress_destinations(&self, peers: Option<&Peers>) -> Vec<&PodInfo> {
        self.pods
            .values()
            .filter(|pod| match (pod.pod_network_ip(), peers) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(ip), Some(peers)) => peers.contains(ip),
            })
            .collect()
    }
}

impl Desired {
    /// Whether a new connection from `src` to `dst` (protocol, destination port) passes
    /// this node's rules: the same verdict the nft rules give, for tests and diagnostics.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        if src == dst && self.local.contains(&src) {
            return true;
        }
        let passes = |policies: Option<&Vec<String>>, egress: bool| {
            let Some(policies) = policies else {
                return true;
            };
            policies.iter().any(|key| {
                let Some(rules) = self.policies.get(key) else {
                    return false;
                };
                let rules = if egress {
                    &rules.egress
                } else {
                    &rules.ingress
                };
                rules
                    .iter()
                    .flatten()
                    .any(|r| r.allows(src, dst, protocol, port, egress))
            })
        };
        passes(self.egress.get(&src), true) && passes(self.ingress.get(&dst), false)
    }
}

impl Rule {
    fn allows(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        egress: bool,
    ) -> bool {
        let peer = if egress { dst } else { src };
        let peer_ok = self.peers.as_ref().is_none_or(|p| p.contains(peer));
        let Some(ports) = &self.ports else {
            return peer_ok;
        };
        let numeric = ports.numeric.iter().any(|m| {
            m.protocol == protocol
                && m.range
                    .is_none_or(|(first, last)| (first..=last).contains(&port))
        });
        let named = ports
            .named
            .as_ref()
            .is_some_and(|n| n.contains(&(dst, protocol, port)));
        if egress {
            // Named elements were resolved against the peers already.
            (peer_ok && numeric) || named
        } else {
            peer_ok && (numeric || named)
        }
    }
}
