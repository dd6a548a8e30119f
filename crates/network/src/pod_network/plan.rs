//! The pod network's decisions, without I/O: interface and table names, the host's
//! addresses, routes and nftables rules, and what of an existing setup is stale. The
//! side effects ([`super::apply`]) only carry these out.

use std::net::Ipv4Addr;

use super::cidr::Ipv4Cidr;

/// Linux's limit on interface names (IFNAMSIZ less the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// The interface name a pod sees.
pub const POD_INTERFACE: &str = "eth0";

/// Why a bridge name is refused, or None when it is usable.
pub fn bridge_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME {
        return Some(format!(
            "--pod-bridge {name:?}: an interface name has 1 to {MAX_INTERFACE_NAME} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some(format!(
            "--pod-bridge {name:?}: use letters, digits, '-', '_' and '.' only"
        ));
    }
    if name.starts_with("veth") {
        return Some(format!(
            "--pod-bridge {name:?}: names starting with veth are the pods' interfaces"
        ));
    }
    None
}

/// The host end of a pod's veth pair: `veth` and 8 hex digits of a stable hash (FNV-1a) of
/// the pod uid, so a restarted agent finds it again without any record.
pub fn host_veth_name(pod_uid: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in pod_uid.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("veth{hash:08x}")
}

/// What the host needs for the pods of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub bridge: String,
    /// The bridge's address: the gateway of the node's podCIDR.
    pub gateway: Ipv4Addr,
    pub node_cidr: Ipv4Cidr,
    pub cluster_cidr: Ipv4Cidr,
    /// The bridge's MTU (and so the pods'), when it is not the bridge's own.
    pub mtu: Option<u32>,
}

impl HostPlan {
    pub fn new(bridge: &str, node_cidr: Ipv4Cidr, cluster_cidr: Ipv4Cidr) -> HostPlan {
        HostPlan {
            bridge: bridge.to_string(),
            gateway: node_cidr.gateway(),
            node_cidr,
            cluster_cidr,
            mtu: None,
        }
    }

    pub fn with_mtu(mut self, mtu: Option<u32>) -> HostPlan {
        self.mtu = mtu;
        self
    }

    /// The bridge's one IPv4 address with its prefix length.
    pub fn bridge_address(&self) -> (Ipv4Addr, u8) {
        (self.gateway, self.node_cidr.prefix())
    }

    /// The locally routed range: everything in the cluster CIDR that is not on this node
    /// (the node's own range is more specific, on the bridge) is dropped here instead of
    /// following the default route off the machine.
    pub fn blackhole_route(&self) -> Ipv4Cidr {
        self.cluster_cidr
    }

    pub fn nft_table(&self) -> String {
        nft_table_name(&self.bridge)
    }

    /// The nftables script that (re)creates the table in one transaction: pod egress to
    /// outside the cluster CIDR is masqueraded, forwarding to and from the bridge accepted.
    pub fn nft_script(&self) -> String {
        let table = self.nft_table();
        let bridge = &self.bridge;
        format!(
            "table ip {table}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" accept\n\
             \t\toifname \"{bridge}\" accept\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {node} ip daddr != {cluster} masquerade\n\
             \t}}\n\
             }}\n",
            node = self.node_cidr,
            cluster = self.cluster_cidr,
        )
    }

    /// Of the bridge's IPv4 addresses (address, prefix length), those that must go: any
    /// but the gateway's (left by an earlier cluster with another podCIDR).
    pub fn stale_bridge_addresses(&self, existing: &[(Ipv4Addr, u8)]) -> Vec<(Ipv4Addr, u8)> {
        let want = self.bridge_address();
        existing.iter().copied().filter(|a| *a != want).collect()
    }

    /// Whether the bridge already has its address.
    pub fn bridge_address_present(&self, existing: &[(Ipv4Addr, u8)]) -> bool {
        existing.contains(&self.bridge_address())
    }
}

/// `<bridge>-pods`, the nftables table (family ip) of one bridge's pods.
pub fn nft_table_name(bridge: &str) -> String {
    format!("{bridge}-pods")
}

/// The nftables script that removes a bridge's table, whether or not it exists.
pub fn nft_delete_script(bridge: &str) -> String {
    let table = nft_table_name(bridge);
    format!("table ip {table}\ndelete table ip {table}\n")
}

/// Whether the cluster's blackhole route may go when `bridge` is removed: not while
/// another interface still holds an address inside the cluster CIDR (a second agent on
/// this machine, with its own bridge).
pub fn blackhole_removable(
    cluster: Ipv4Cidr,
    bridge: &str,
    addresses: &[(String, Ipv4Addr)],
) -> bool {
    !addresses
        .iter()
        .any(|(link, ip)| link != bridge && cluster.contains(*ip))
}

/// What a pod's interface gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub host_veth: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

impl PodPlan {
    pub fn new(pod_uid: &str, address: Ipv4Addr, node_cidr: Ipv4Cidr) -> PodPlan {
        PodPlan {
            host_veth: host_veth_name(pod_uid),
            address,
            prefix: node_cidr.prefix(),
            gateway: node_cidr.gateway(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> HostPlan {
        HostPlan::new(
            "skiff0",
            "10.42.0.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
        )
    }

    #[test]
    fn veth_names_are_stable_and_fit() {
        let a = host_veth_name("6f1c2a3e-0000-4000-8000-000000000001");
        assert_eq!(a, host_veth_name("6f1c2a3e-0000-4000-8000-000000000001"));
        assert_ne!(a, host_veth_name("6f1c2a3e-0000-4000-8000-000000000002"));
        assert_eq!(a.len(), 12);
        assert!(a.len() <= MAX_INTERFACE_NAME);
        assert_eq!(host_veth_name(""), "veth811c9dc5");
    }

    #[test]
    fn bridge_names() {
        assert_eq!(bridge_name_problem("skiff0"), None);
        assert_eq!(bridge_name_problem("skt49"), None);
        assert!(bridge_name_problem("").is_some());
        assert!(bridge_name_problem("a-very-long-bridge").is_some());
        assert!(bridge_name_problem("br 0").is_some());
        assert!(bridge_name_problem("veth0").is_some());
    }

    #[test]
    fn the_host_plan() {
        let p = plan();
        assert_eq!(p.bridge_address(), (Ipv4Addr::new(10, 42, 0, 1), 24));
        assert_eq!(p.blackhole_route().to_string(), "10.42.0.0/16");
        assert_eq!(p.nft_table(), "skiff0-pods");
        let script = p.nft_script();
        assert!(script.starts_with("table ip skiff0-pods\ndelete table ip skiff0-pods\n"));
        assert!(script.contains("ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/16 masquerade"));
        assert!(script.contains("iifname \"skiff0\" accept"));
        assert!(script.contains("type nat hook postrouting priority srcnat"));
        assert_eq!(
            nft_delete_script("skt3"),
            "table ip skt3-pods\ndelete table ip skt3-pods\n"
        );
    }

    #[test]
    fn stale_bridge_addresses_are_found() {
        let p = plan();
        let gw = (Ipv4Addr::new(10, 42, 0, 1), 24);
        let old = (Ipv4Addr::new(10, 42, 7, 1), 24);
        assert!(p.stale_bridge_addresses(&[gw]).is_empty());
        assert!(p.bridge_address_present(&[gw]));
        assert_eq!(p.stale_bridge_addresses(&[old, gw]), vec![old]);
        assert!(!p.bridge_address_present(&[old]));
        assert_eq!(
            p.stale_bridge_addresses(&[(Ipv4Addr::new(10, 42, 0, 1), 16)]),
            vec![(Ipv4Addr::new(10, 42, 0, 1), 16)]
        );
    }

    #[test]
    fn the_blackhole_stays_while_another_bridge_uses_the_range() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let mine = ("skiff0".to_string(), Ipv4Addr::new(10, 42, 0, 1));
        let other = ("skiff1".to_string(), Ipv4Addr::new(10, 42, 1, 1));
        let host = ("eth0".to_string(), Ipv4Addr::new(192, 0, 2, 10));
        assert!(blackhole_removable(
            cluster,
            "skiff0",
            &[mine.clone(), host.clone()]
        ));
        assert!(!blackhole_removable(
            cluster,
            "skiff0",
            &[mine, other, host]
        ));
    }

    #[test]
    fn the_pod_plan() {
        let p = PodPlan::new(
            "uid",
            Ipv4Addr::new(10, 42, 0, 7),
            "10.42.0.0/24".parse().unwrap(),
        );
        assert_eq!(p.gateway, Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(p.prefix, 24);
        assert_eq!(p.host_veth, host_veth_name("uid"));
    }
}
