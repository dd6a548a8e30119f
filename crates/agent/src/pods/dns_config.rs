//! A pod's `/etc/resolv.conf`, formed as kubelet forms it (`pkg/kubelet/network/dns`) and
//! written as containerd writes it: from the pod's `dnsPolicy` and `dnsConfig`, the
//! node's cluster DNS settings (`--cluster-dns`, `--cluster-domain`) and the host's
//! resolv.conf. Pure: the caller reads the host file and writes the result.
//!
//! - `ClusterFirst` (the default): the cluster DNS is the only nameserver, the search list
//!   is `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, `options ndots:5`.
//!   A hostNetwork pod falls back to `Default`, as kubelet does; `ClusterFirstWithHostNet`
//!   keeps the cluster DNS for it.
//! - `Default`: the host's resolv.conf. A pod with its own network namespace cannot reach
//!   the host's loopback resolver (systemd-resolved's 127.0.0.53), so loopback nameservers
//!   are left out for it (k3s picks a resolv.conf without them for the same reason).
//! - `None`: only what `dnsConfig` gives.
//! - `dnsConfig` is then merged in (nameservers and searches appended without duplicates,
//!   options overriding by name), and kubelet's limits apply: 3 nameservers, 32 search
//!   domains of at most 253 characters and 2048 characters in all. What a limit cut is
//!   reported as kubelet's `DNSConfigForming` warning text.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// kubelet's limits (`validation.MaxDNSNameservers`, the expanded DNS config limits that
/// are GA since 1.28, and a DNS-1123 subdomain's length).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_LINE_CHARS: usize = 2048;
const MAX_SEARCH_PATH_CHARS: usize = 253;

/// The resolver settings of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The node's side: kubelet's `--cluster-dns`, `--cluster-domain` and `--resolv-conf`.
#[derive(Debug, Clone, Default)]
pub struct NodeDns {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The host's resolv.conf, parsed; None when `--resolv-conf` is empty (kubelet then
    /// gives `Default` pods a local nameserver and the search `.`).
    pub host: Option<ResolverConfig>,
}

/// What the pod gets, and kubelet's warnings about it (`DNSConfigForming`,
/// `MissingClusterDNS` event messages) for the caller to record as events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    pub config: ResolverConfig,
    pub warnings: Vec<PodDnsWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDnsWarning {
    /// The event reason.
    pub reason: &'static str,
    pub message: String,
}

/// Parse a resolv.conf as kubelet does: `nameserver` lines accumulate, the last `search`
/// and the last `options` line win, a search domain's final dot is dropped.
pub fn parse_resolv_conf(text: &str) -> ResolverConfig {
    let mut out = ResolverConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["nameserver", server, ..] => out.nameservers.push(server.to_string()),
            ["search", domains @ ..] => {
                out.searches = domains
                    .iter()
                    .map(|d| d.trim_end_matches('.').to_string())
                    .collect()
            }
            ["options", options @ ..] => {
                out.options = options.iter().map(|o| o.to_string()).collect()
            }
            _ => {}
        }
    }
    out
}

enum Kind {
    Cluster,
    Host,
    Empty,
}

/// The DNS settings of `pod` on this node.
pub fn pod_dns(pod: &Pod, node: &NodeDns) -> PodDns {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut warnings = Vec::new();

    let mut kind = match policy {
        "None" => Kind::Empty,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        "ClusterFirst" if !host_network => Kind::Cluster,
        "ClusterFirst" | "Default" => Kind::Host,
        // The API server refuses other values; kubelet falls back to ClusterFirst.
        _ => Kind::Cluster,
    };
    if matches!(kind, Kind::Cluster) && node.cluster_dns.is_empty() {
        warnings.push(PodDnsWarning {
            reason: "MissingClusterDNS",
            message: "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.".into(),
        });
        kind = Kind::Host;
    }

    let host = node.host.clone().unwrap_or_default();
    let mut config = match kind {
        Kind::Empty => ResolverConfig::default(),
        Kind::Cluster => ResolverConfig {
            nameservers: node.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
            searches: cluster_searches(namespace, &node.cluster_domain, &host.searches),
            options: vec!["ndots:5".into()],
        },
        Kind::Host if node.host.is_none() => ResolverConfig {
            nameservers: vec!["127.0.0.1".into()],
            searches: vec![".".into()],
            options: Vec::new(),
        },
        Kind::Host => {
            let mut host = host;
            if !host_network {
                host.nameservers
                    .retain(|s| !s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()));
            }
            host
        }
    };

    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        append_unique(
            &mut config.nameservers,
            extra.nameservers.iter().flatten().cloned(),
        );
        append_unique(
            &mut config.searches,
            extra.searches.iter().flatten().cloned(),
        );
        for option in extra.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let text = match option.value.as_deref().filter(|v| !v.is_empty()) {
                Some(value) => format!("{name}:{value}"),
                None => name.to_string(),
            };
            match config
                .options
                .iter_mut()
                .find(|o| o.split(':').next() == Some(name))
            {
                Some(existing) => *existing = text,
                None => config.options.push(text),
            }
        }
    }

    if config.nameservers.len() > MAX_NAMESERVERS {
        config.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(PodDnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                config.nameservers.join(" ")
            ),
        });
    }
    if fit_search_limits(&mut config.searches) {
        warnings.push(PodDnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                config.searches.join(" ")
            ),
        });
    }
    PodDns { config, warnings }
}

/// `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, without duplicates; just the
/// host's when there is no cluster domain.
fn cluster_searches(namespace: &str, domain: &str, host: &[String]) -> Vec<String> {
    if domain.is_empty() {
        return host.to_vec();
    }
    let mut out = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    append_unique(&mut out, host.iter().cloned());
    out
}

fn append_unique(list: &mut Vec<String>, more: impl Iterator<Item = String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// kubelet's search-line limits: at most 32 paths, none over 253 characters, 2048
/// characters in all (cut from the end). True when something was cut.
fn fit_search_limits(searches: &mut Vec<String>) -> bool {
    let mut cut = false;
    if searches.len() > MAX_SEARCH_PATHS {
        searches.truncate(MAX_SEARCH_PATHS);
        cut = true;
    }
    let before = searches.len();
    searches.retain(|s| s.len() <= MAX_SEARCH_PATH_CHARS);
    cut |= searches.len() != before;
    while !searches.is_empty() && searches.join(" ").len() > MAX_SEARCH_LINE_CHARS {
        searches.pop();
        cut = true;
    }
    cut
}

impl ResolverConfig {
    /// The file, as containerd writes it: `search`, then one `nameserver` line each, then
    /// `options`.
    pub fn to_resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.nameservers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const HOST: &str = "# managed\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.example lab.example.\noptions edns0 trust-ad\n";

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.43.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Some(parse_resolv_conf(HOST)),
        }
    }

    fn pod(policy: Option<&str>, host_network: bool, dns_config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_network),
                dns_config,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn option(name: &str, value: Option<&str>) -> PodDNSConfigOption {
        PodDNSConfigOption {
            name: Some(name.into()),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn parses_a_host_resolv_conf_as_kubelet() {
        assert_eq!(
            parse_resolv_conf(HOST),
            ResolverConfig {
                nameservers: vec!["127.0.0.53".into(), "192.0.2.53".into()],
                searches: vec!["corp.example".into(), "lab.example".into()],
                options: vec!["edns0".into(), "trust-ad".into()],
            }
        );
        // The last search and options lines win.
        let twice = parse_resolv_conf("search a b\nsearch c\noptions x\noptions y z\n");
        assert_eq!(twice.searches, vec!["c"]);
        assert_eq!(twice.options, vec!["y", "z"]);
    }

    #[test]
    fn policies() {
        let cluster = "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.43.0.10\noptions ndots:5\n";
        let host_without_loopback =
            "search corp.example lab.example\nnameserver 192.0.2.53\noptions edns0 trust-ad\n";
        let host = "search corp.example lab.example\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0 trust-ad\n";
        let cases: Vec<(&str, Pod, &str)> = vec![
            ("ClusterFirst", pod(Some("ClusterFirst"), false, None), cluster),
            ("no policy means ClusterFirst", pod(None, false, None), cluster),
            (
                "ClusterFirst on the host network falls back to Default",
                pod(Some("ClusterFirst"), true, None),
                host,
            ),
            (
                "ClusterFirstWithHostNet",
                pod(Some("ClusterFirstWithHostNet"), true, None),
                cluster,
            ),
            ("Default", pod(Some("Default"), false, None), host_without_loopback),
            (
                "None with dnsConfig",
                pod(
                    Some("None"),
                    false,
                    Some(PodDNSConfig {
                        nameservers: Some(vec!["192.0.2.1".into()]),
                        searches: Some(vec!["ns1.svc.cluster-domain.example".into()]),
                        options: Some(vec![option("ndots", Some("2")), option("edns0", None)]),
                    }),
                ),
                "search ns1.svc.cluster-domain.example\nnameserver 192.0.2.1\noptions ndots:2 edns0\n",
            ),
            (
                "ClusterFirst with dnsConfig merged",
                pod(
                    Some("ClusterFirst"),
                    false,
                    Some(PodDNSConfig {
                        nameservers: Some(vec!["10.43.0.10".into(), "192.0.2.1".into()]),
                        searches: Some(vec!["svc.cluster.local".into(), "extra.example".into()]),
                        options: Some(vec![option("ndots", Some("1")), option("single-request", None)]),
                    }),
                ),
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example extra.example\nnameserver 10.43.0.10\nnameserver 192.0.2.1\noptions ndots:1 single-request\n",
            ),
        ];
        for (what, pod, want) in cases {
            let got = pod_dns(&pod, &node());
            assert_eq!(got.config.to_resolv_conf(), want, "{what}");
            assert!(got.warnings.is_empty(), "{what}: {:?}", got.warnings);
        }
    }

    #[test]
    fn without_a_host_resolv_conf_default_pods_get_a_local_nameserver() {
        let node = NodeDns {
            host: None,
            ..node()
        };
        let got = pod_dns(&pod(Some("Default"), false, None), &node);
        assert_eq!(
            got.config.to_resolv_conf(),
            "search .\nnameserver 127.0.0.1\n"
        );
        let cluster = pod_dns(&pod(Some("ClusterFirst"), false, None), &node);
        assert_eq!(
            cluster.config.to_resolv_conf(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn without_cluster_dns_cluster_first_falls_back_to_default_with_a_warning() {
        let node = NodeDns {
            cluster_dns: Vec::new(),
            ..node()
        };
        let got = pod_dns(&pod(Some("ClusterFirst"), false, None), &node);
        assert_eq!(got.config.nameservers, vec!["192.0.2.53"]);
        assert_eq!(got.warnings.len(), 1);
        assert_eq!(got.warnings[0].reason, "MissingClusterDNS");
    }

    #[test]
    fn limits_cut_nameservers_and_search_paths_with_kubelets_warnings() {
        let many = PodDNSConfig {
            nameservers: Some((1..=5).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some((0..40).map(|i| format!("d{i}.example")).collect()),
            options: None,
        };
        let got = pod_dns(&pod(Some("None"), false, Some(many)), &node());
        assert_eq!(got.config.nameservers.len(), 3);
        assert_eq!(got.config.searches.len(), 32);
        assert_eq!(
            got.warnings,
            vec![
                PodDnsWarning {
                    reason: "DNSConfigForming",
                    message: "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: 192.0.2.1 192.0.2.2 192.0.2.3".into(),
                },
                PodDnsWarning {
                    reason: "DNSConfigForming",
                    message: format!(
                        "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                        got.config.searches.join(" ")
                    ),
                },
            ]
        );

        // Over 2048 characters in all: cut from the end; a path over 253 is dropped.
        let long: Vec<String> = (0..12).map(|i| format!("{i:0>200}.example")).collect();
        let mut searches = long.clone();
        searches.insert(1, "x".repeat(254));
        assert!(fit_search_limits(&mut searches));
        assert!(searches.join(" ").len() <= MAX_SEARCH_LINE_CHARS);
        assert_eq!(searches, long[..searches.len()].to_vec());
        assert_eq!(searches.len(), 9);
        let mut fine = vec!["a.example".to_string()];
        assert!(!fit_search_limits(&mut fine));
    }
}
