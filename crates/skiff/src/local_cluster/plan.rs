//! What a local cluster is made of, decided before anything is created: its name's rules,
//! the names of its network namespaces, links and nodes, its host subnet (one that no
//! other local cluster and no route of the machine uses) and each node's command line.
//! Pure: no I/O, so every rule is a table test.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_NAME: &str = "default";
/// Node addresses are `.10 + i` of a /24; link names end in `-<i>` (two digits at most).
pub const MAX_AGENTS: usize = 50;
/// `skiff-<name>-agent-50` must stay a 63-character hostname label.
const MAX_NAME_LEN: usize = 40;
/// Links get a short id of the name: `skl-<id>-svc`-style names must fit IFNAMSIZ (15).
const MAX_ID_LEN: usize = 7;
/// The API port the server listens on in its host, unless `--https-listen-port` says
/// otherwise among the server's extra flags.
pub const DEFAULT_API_PORT: u16 = 6443;

/// A cluster name: a DNS label (lowercase letters, digits, `-`), at most 40 characters, as
/// it becomes part of node names, namespace names and a directory.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || !ok_ends {
        return Err(format!(
            "invalid local cluster name {name:?}: must be 1 to {MAX_NAME_LEN} lowercase letters, \
             digits or '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// The short id in link names: the name itself when short, else its first two characters
/// and a hash of the whole name (collisions are caught when the bridge already exists).
pub fn short_id(name: &str) -> String {
    if name.len() <= MAX_ID_LEN {
        return name.to_string();
    }
    // FNV-1a: stable across builds and machines.
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{}{:05x}", &name[..2], hash & 0xf_ffff)
}

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(text: &str) -> Option<Prefix> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, l.parse().ok()?),
            None => (text, 32),
        };
        let addr: Ipv4Addr = addr.parse().ok()?;
        (len <= 32).then_some(Prefix { addr, len })
    }

    fn mask(len: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        let len = self.len.min(other.len);
        let mask = Prefix::mask(len);
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The `n`th address of the range.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.addr) & Prefix::mask(self.len)) + u32::from(n))
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Host subnets are /24s from 10.251.0.0/16, then 172.28.0.0/16 for machines whose own
/// networks cover the first (test LANs use 10.250.0.0/16, test clusters 10.100-249).
pub fn candidate_subnets() -> impl Iterator<Item = Prefix> {
    let pool = |a: u8, b: u8| {
        (0..=255u8).map(move |c| Prefix {
            addr: Ipv4Addr::new(a, b, c, 0),
            len: 24,
        })
    };
    pool(10, 251).chain(pool(172, 28))
}

/// The first candidate that overlaps none of `taken` (the machine's routes and addresses,
/// the subnets other local clusters recorded). A default route (`/0`) takes nothing.
pub fn choose_subnet(taken: &[Prefix]) -> Option<Prefix> {
    candidate_subnets().find(|c| taken.iter().all(|t| t.len == 0 || !c.overlaps(t)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

/// One node: a network namespace of the same name with `eth0` at `ip`, whose veth's other
/// end `port` is on the cluster's bridge in the root namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// The node name and the network namespace's name (`skiff-<cluster>-server`).
    pub name: String,
    pub role: Role,
    pub ip: Ipv4Addr,
    pub port: String,
}

/// The whole cluster, as recorded in its directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub name: String,
    pub subnet: Prefix,
    /// The root namespace's address on the bridge (kubectl on the machine uses it).
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// Every node's pod bridge (each in its own namespace): not the default `skiff0`, so
    /// nothing of a local cluster is ever confused with the machine's own skiff node.
    pub pod_bridge: String,
    pub api_port: u16,
    pub nodes: Vec<NodePlan>,
    /// Opt-in NAT to the outside: nodes get a default route via the machine, which
    /// masquerades the subnet's traffic leaving by any other link.
    #[serde(default)]
    pub egress: bool,
}

pub fn plan(name: &str, agents: usize, subnet: Prefix, api_port: u16, egress: bool) -> ClusterPlan {
    let id = short_id(name);
    let nodes = (0..=agents)
        .map(|i| NodePlan {
            name: if i == 0 {
                format!("skiff-{name}-server")
            } else {
                format!("skiff-{name}-agent-{i}")
            },
            role: if i == 0 { Role::Server } else { Role::Agent },
            ip: subnet.host(10 + i as u8),
            port: format!("skv-{id}-{i}"),
        })
        .collect();
    ClusterPlan {
        name: name.to_string(),
        subnet,
        gateway: subnet.host(1),
        bridge: format!("skl-{id}"),
        pod_bridge: format!("skp-{id}"),
        api_port,
        nodes,
        egress,
    }
}

/// The value of `--flag V` or `--flag=V` in `args`, if given.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&prefix)
        }
    })
}

/// Where a cluster keeps its files.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, name: &str) -> Layout {
        Layout {
            dir: root.join(name),
        }
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    /// The kubeconfig the user exports (contexts named `skiff-<name>`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("data")
    }
    pub fn log_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("skiff.log")
    }
    pub fn pid_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("pid")
    }
    /// What the server writes (`--write-kubeconfig`); the user's copy is made from it.
    pub fn server_kubeconfig(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("admin.kubeconfig")
    }
    pub fn token_file(&self, node: &str) -> PathBuf {
        self.data_dir(node).join("server").join("token")
    }
}

impl ClusterPlan {
    pub fn server(&self) -> &NodePlan {
        &self.nodes[0]
    }

    /// The machine's nftables table for `--egress` (its own, named after the bridge).
    pub fn egress_table(&self) -> String {
        format!("{}-egress", self.bridge)
    }

    /// The `nft -f -` script for `--egress`: masquerade what the subnet sends out by any
    /// other link, and let it (and its replies) through the forward hook.
    pub fn egress_ruleset(&self) -> String {
        let (table, bridge, subnet) = (self.egress_table(), &self.bridge, self.subnet);
        format!(
            "table ip {table} {{\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" accept\n\
             \t\toifname \"{bridge}\" ct state established,related accept\n\
             \t}}\n\
             }}\n"
        )
    }

    pub fn server_url(&self) -> String {
        format!("https://{}:{}", self.server().ip, self.api_port)
    }

    /// `skiff server` for the first node: it listens on its host's address, which the
    /// admin kubeconfig names, so kubectl on the machine reaches it over the bridge.
    pub fn server_args(&self, layout: &Layout, extra: &[String]) -> Vec<String> {
        let node = self.server();
        let mut args = vec![
            "server".to_string(),
            "--data-dir".into(),
            layout.data_dir(&node.name).display().to_string(),
            "--node-name".into(),
            node.name.clone(),
            "--node-ip".into(),
            node.ip.to_string(),
            "--advertise-address".into(),
            node.ip.to_string(),
            "--write-kubeconfig".into(),
            layout.server_kubeconfig(&node.name).display().to_string(),
            "--pod-bridge".into(),
            self.pod_bridge.clone(),
        ];
        if flag_value(extra, "--https-listen-port").is_none() {
            args.extend(["--https-listen-port".into(), self.api_port.to_string()]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// `skiff agent` for a joining node; the cluster's ranges come from the server.
    pub fn agent_args(
        &self,
        node: &NodePlan,
        layout: &Layout,
        token: &str,
        extra: &[String],
    ) -> Vec<String> {
        let mut args = vec![
            "agent".to_string(),
            "--server".into(),
            self.server_url(),
            "--token".into(),
            token.to_string(),
            "--data-dir".into(),
            layout.data_dir(&node.name).display().to_string(),
            "--node-name".into(),
            node.name.clone(),
            "--node-ip".into(),
            node.ip.to_string(),
            "--pod-bridge".into(),
            self.pod_bridge.clone(),
        ];
        args.extend(extra.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).expect("prefix")
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["default", "a", "dev-2", "x1234567890"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let too_long = "x".repeat(41);
        for bad in [
            "",
            "-a",
            "a-",
            "Dev",
            "a_b",
            "a.b",
            "a/b",
            too_long.as_str(),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_names_fit_ifnamsiz() {
        let long = "a-rather-long-cluster-name-of-forty-char";
        assert_eq!(long.len(), 40);
        let plan = plan(long, MAX_AGENTS, p("10.251.3.0/24"), 6443, false);
        assert!(plan.bridge.len() <= 15, "{}", plan.bridge);
        // The service proxy adds `-svc` and the pod network `-pods` to the pod bridge's
        // name for devices (15) and nftables tables.
        assert!(format!("{}-svc", plan.pod_bridge).len() <= 15);
        for n in &plan.nodes {
            assert!(n.port.len() <= 15, "{}", n.port);
            assert!(n.name.len() <= 63, "{}", n.name);
        }
        assert_eq!(short_id("dev"), "dev");
        assert_ne!(short_id("abcdefgh-1"), short_id("abcdefgh-2"));
        // Bridges and ports never share a name, whatever the cluster names.
        assert!(plan.bridge.starts_with("skl-") && plan.nodes[1].port.starts_with("skv-"));
    }

    #[test]
    fn nodes_are_named_and_addressed_by_role() {
        let plan = plan("dev", 2, p("10.251.7.0/24"), 6443, false);
        let names: Vec<_> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["skiff-dev-server", "skiff-dev-agent-1", "skiff-dev-agent-2"]
        );
        assert_eq!(plan.gateway, Ipv4Addr::new(10, 251, 7, 1));
        assert_eq!(plan.nodes[2].ip, Ipv4Addr::new(10, 251, 7, 12));
        assert_eq!(plan.server_url(), "https://10.251.7.10:6443");
        assert_eq!(plan.bridge, "skl-dev");
        assert_eq!(plan.nodes[1].port, "skv-dev-1");
    }

    #[test]
    fn the_subnet_avoids_routes_and_other_clusters() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], Some("10.251.0.0/24")),
            // The default route takes nothing; a host route inside the pool does.
            (&["0.0.0.0/0", "10.251.0.7"], Some("10.251.1.0/24")),
            (&["10.251.0.0/24", "10.251.1.0/24"], Some("10.251.2.0/24")),
            // A machine on 10.0.0.0/8 gets the second pool.
            (&["10.0.0.0/8"], Some("172.28.0.0/24")),
            (&["10.0.0.0/8", "172.16.0.0/12"], None),
        ];
        for (taken, want) in cases {
            let taken: Vec<Prefix> = taken.iter().map(|t| p(t)).collect();
            assert_eq!(
                choose_subnet(&taken).map(|s| s.to_string()).as_deref(),
                *want,
                "{taken:?}"
            );
        }
    }

    #[test]
    fn egress_masquerades_only_what_leaves_by_another_link() {
        let plan = plan("dev", 1, p("10.251.7.0/24"), 6443, true);
        assert_eq!(plan.egress_table(), "skl-dev-egress");
        let rules = plan.egress_ruleset();
        assert!(rules.starts_with("table ip skl-dev-egress {"), "{rules}");
        assert!(
            rules.contains("ip saddr 10.251.7.0/24 oifname != \"skl-dev\" masquerade"),
            "{rules}"
        );
        assert!(rules.contains("iifname \"skl-dev\" accept"), "{rules}");
    }

    #[test]
    fn extra_flags_can_move_the_api_port() {
        let layout = Layout::new(Path::new("/r"), "dev");
        let plan = plan("dev", 1, p("10.251.7.0/24"), 6443, false);
        let args = plan.server_args(&layout, &[]);
        assert_eq!(flag_value(&args, "--https-listen-port"), Some("6443"));
        assert_eq!(
            flag_value(&args, "--advertise-address"),
            Some("10.251.7.10")
        );
        let extra = vec!["--https-listen-port=7443".to_string()];
        let args = plan.server_args(&layout, &extra);
        assert_eq!(
            args.iter()
                .filter(|a| a.contains("https-listen-port"))
                .count(),
            1
        );
        let agent = plan.agent_args(&plan.nodes[1], &layout, "K10x::server:y", &[]);
        assert_eq!(
            flag_value(&agent, "--server"),
            Some("https://10.251.7.10:6443")
        );
        assert_eq!(
            flag_value(&agent, "--data-dir"),
            Some("/r/dev/nodes/skiff-dev-agent-1/data")
        );
    }
}
