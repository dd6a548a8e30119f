//! What a simulated fleet looks like (names, sizes, labels, taints, address ranges,
//! timings) and the parsing of the flag values that describe it. Pure: no I/O.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::SimError;

/// A taint as `--node-taint` gives it (k3s syntax `key=value:Effect` or `key:Effect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaintSpec {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// An IPv4 range `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Range {
    /// Parses `10.42.0.0/16`; `flag` names the option in the error.
    pub fn parse(text: &str, flag: &str) -> Result<Ipv4Range, SimError> {
        let bad = || SimError::InvalidFlag {
            flag: flag.to_string(),
            value: text.to_string(),
            reason: "expected an IPv4 CIDR such as 10.42.0.0/16".to_string(),
        };
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Ipv4Range {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
        })
    }

    /// How many addresses the range holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    /// The `index`-th subnet of length `subnet_prefix` inside this range, if it exists.
    pub fn subnet(&self, subnet_prefix: u8, index: u64) -> Option<Ipv4Range> {
        if subnet_prefix < self.prefix || subnet_prefix > 32 {
            return None;
        }
        let count = 1u64 << (subnet_prefix - self.prefix) as u32;
        if index >= count {
            return None;
        }
        let step = 1u64 << (32 - subnet_prefix as u32);
        let base = u32::from(self.base) as u64 + index * step;
        Some(Ipv4Range {
            base: Ipv4Addr::from(base as u32),
            prefix: subnet_prefix,
        })
    }

    /// The address `offset` past the base, if inside the range.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        if offset >= self.size() {
            return None;
        }
        Some(Ipv4Addr::from(
            (u32::from(self.base) as u64 + offset) as u32,
        ))
    }
}

impl std::fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Everything that describes a simulated fleet. Built by the binary from its flags.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many nodes.
    pub count: usize,
    /// Node `i` is named `<prefix>-<i>`.
    pub name_prefix: String,
    /// Capacity (= allocatable) as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Extra labels (`--node-label`).
    pub labels: Vec<(String, String)>,
    /// `--node-taint`.
    pub taints: Vec<TaintSpec>,
    /// Pod addresses: node `i` gets subnet `i` of length `node_cidr_mask_size`.
    pub cluster_cidr: Ipv4Range,
    pub node_cidr_mask_size: u8,
    /// Node addresses: node `i` gets address `i + 1` of this range.
    pub node_ip_range: Ipv4Range,
    /// Reported in nodeInfo; `kubelet_version` is normally the server's version.
    pub kubelet_version: String,
    pub runtime_version: String,
    pub os_image: String,
    pub kernel_version: String,
    pub architecture: String,
    /// How long a container of a Never/OnFailure pod runs before it exits.
    pub run_time: Duration,
    /// Longest a deleted pod's containers take to stop, whatever its grace period says.
    pub termination_grace_cap: Duration,
    /// Concurrent pod writes (status, deletes); heartbeats are one in flight per node.
    pub max_inflight: usize,
    /// Lease duration written in each Lease (kubelet: 40 s).
    pub lease_duration_seconds: i32,
    /// How often leases are renewed and node status is checked (kubelet: 10 s).
    pub renew_interval: Duration,
    /// Node status is posted at least this often even when nothing changed (kubelet: 5 min).
    pub status_report_interval: Duration,
}

impl SimConfig {
    /// Defaults as a kubelet on a mid-size machine would report, for `count` nodes.
    pub fn new(count: usize) -> SimConfig {
        SimConfig {
            count,
            name_prefix: "sim".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            labels: Vec::new(),
            taints: Vec::new(),
            cluster_cidr: Ipv4Range {
                base: Ipv4Addr::new(10, 42, 0, 0),
                prefix: 16,
            },
            node_cidr_mask_size: 24,
            node_ip_range: Ipv4Range {
                base: Ipv4Addr::new(172, 20, 0, 0),
                prefix: 14,
            },
            kubelet_version: "v0.0.0".into(),
            runtime_version: "skiff-sim://0.0.0".into(),
            os_image: "Linux".into(),
            kernel_version: "unknown".into(),
            architecture: kube_arch(std::env::consts::ARCH).into(),
            run_time: Duration::from_secs(2),
            termination_grace_cap: Duration::ZERO,
            max_inflight: 32,
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
        }
    }

    pub fn node_name(&self, index: usize) -> String {
        format!("{}-{index}", self.name_prefix)
    }

    /// Checks that every node gets a pod subnet and an address; says which flag to change.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.count == 0 {
            return Err(SimError::InvalidFlag {
                flag: "--simulate".into(),
                value: "0".into(),
                reason: "at least one node is needed".into(),
            });
        }
        let mask = self.node_cidr_mask_size;
        if mask < self.cluster_cidr.prefix || mask > 30 {
            return Err(SimError::InvalidFlag {
                flag: "--node-cidr-mask-size".into(),
                value: mask.to_string(),
                reason: format!(
                    "must lie between the --cluster-cidr prefix length ({}) and 30",
                    self.cluster_cidr.prefix
                ),
            });
        }
        if self
            .cluster_cidr
            .subnet(mask, self.count as u64 - 1)
            .is_none()
        {
            return Err(SimError::InvalidFlag {
                flag: "--cluster-cidr".into(),
                value: self.cluster_cidr.to_string(),
                reason: format!(
                    "holds only {} /{mask} node subnets, {} nodes need one each; use a larger range (e.g. 10.64.0.0/10) or a longer --node-cidr-mask-size",
                    1u64 << (mask - self.cluster_cidr.prefix),
                    self.count
                ),
            });
        }
        if self.node_ip_range.size() < self.count as u64 + 2 {
            return Err(SimError::InvalidFlag {
                flag: "--simulate-node-ip-range".into(),
                value: self.node_ip_range.to_string(),
                reason: format!("too small for {} nodes", self.count),
            });
        }
        Ok(())
    }
}

/// Kubernetes' name for a Rust target architecture (`kubernetes.io/arch`).
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `--node-label key=value`.
pub fn parse_label(text: &str) -> Result<(String, String), SimError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(SimError::InvalidFlag {
            flag: "--node-label".into(),
            value: text.into(),
            reason: "expected key=value".into(),
        }),
    }
}

/// `--node-taint key=value:Effect` or `key:Effect`, as kubelet's `--register-with-taints`.
pub fn parse_taint(text: &str) -> Result<TaintSpec, SimError> {
    let bad = |reason: String| SimError::InvalidFlag {
        flag: "--node-taint".into(),
        value: text.into(),
        reason,
    };
    let (key_value, effect) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected key=value:Effect or key:Effect".into()))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad(format!(
            "invalid taint effect: {effect}, unsupported taint effect"
        )));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (key_value, None),
    };
    if key.is_empty() {
        return Err(bad("the taint key is empty".into()));
    }
    Ok(TaintSpec {
        key: key.into(),
        value,
        effect: effect.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, value, effect) expected from a flag value; `None` when it must be refused.
    type Expected<'a> = Option<(&'a str, Option<&'a str>, &'a str)>;

    #[test]
    fn taints_parse_as_kubelet_register_with_taints() {
        let cases: &[(&str, Expected)] = &[
            (
                "dedicated=gpu:NoSchedule",
                Some(("dedicated", Some("gpu"), "NoSchedule")),
            ),
            (
                "node-role.kubernetes.io/control-plane:NoExecute",
                Some(("node-role.kubernetes.io/control-plane", None, "NoExecute")),
            ),
            (
                "a=:PreferNoSchedule",
                Some(("a", Some(""), "PreferNoSchedule")),
            ),
            ("a=b:Sometimes", None),
            ("a=b", None),
            (":NoSchedule", None),
        ];
        for (text, want) in cases {
            let got = parse_taint(text).ok();
            let want = want.map(|(k, v, e)| TaintSpec {
                key: k.into(),
                value: v.map(String::from),
                effect: e.into(),
            });
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn labels_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert_eq!(parse_label("flag=").unwrap(), ("flag".into(), "".into()));
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=a").is_err());
    }

    #[test]
    fn node_subnets_and_addresses() {
        let cidr = Ipv4Range::parse("10.42.0.0/16", "--cluster-cidr").unwrap();
        assert_eq!(cidr.subnet(24, 0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(cidr.subnet(24, 255).unwrap().to_string(), "10.42.255.0/24");
        assert!(cidr.subnet(24, 256).is_none());
        let big = Ipv4Range::parse("10.64.0.0/10", "--cluster-cidr").unwrap();
        assert_eq!(big.subnet(24, 4999).unwrap().to_string(), "10.83.135.0/24");
        // Host bits in the flag are ignored, as upstream's ParseCIDR does.
        assert_eq!(
            Ipv4Range::parse("10.42.7.9/16", "x").unwrap().to_string(),
            "10.42.0.0/16"
        );
        assert!(Ipv4Range::parse("10.42.0.0", "x").is_err());
        assert!(Ipv4Range::parse("10.42.0.0/33", "x").is_err());
    }

    #[test]
    fn too_many_nodes_for_the_cluster_cidr_is_refused_with_a_hint() {
        let mut cfg = SimConfig::new(256);
        assert!(cfg.validate().is_ok());
        cfg.count = 257;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("--cluster-cidr") && err.contains("257 nodes"),
            "{err}"
        );
        cfg.cluster_cidr = Ipv4Range::parse("10.64.0.0/10", "x").unwrap();
        cfg.count = 5000;
        assert!(cfg.validate().is_ok());
    }
}
