//! skiff's built-in networking, what a CNI plugin and kube-proxy are upstream:
//! [`pod_network`] gives each pod an address from its node's podCIDR through a bridge and
//! a veth pair, and masquerades pod egress; [`node_routes`] routes other nodes' pod ranges
//! via those nodes (host-gw); [`proxy`] programs Services into nftables.

pub mod node_routes;
pub mod pod_network;
pub mod proxy;
