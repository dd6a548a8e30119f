//! skiff's built-in networking, what a CNI plugin and kube-proxy are upstream:
//! [`pod_network`] gives each pod an address from its node's podCIDR through a bridge and
//! a veth pair, and masquerades pod egress; [`node_routes`] routes other nodes' pod ranges
//! via those nodes (host-gw) or through a VXLAN overlay; [`proxy`] programs Services into nftables; [`host_ports`]
//! publishes pods' hostPorts on the node (CNI's portmap); [`policy`] enforces
//! NetworkPolicies for the node's pods in nftables.

pub mod host_ports;
mod kube_watch;
pub mod node_routes;
pub mod pod_network;
pub mod policy;
pub mod protocol;
pub mod proxy;
