//! The host ports' decisions, without I/O: which mappings a pod asks for (kubelet's
//! `MakePortMappings` over the pod's containers, as the runtime hands them to CNI's portmap
//! plugin), whether they clash with another pod's, and the nftables table carrying all of
//! a node's mappings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

pub use crate::protocol::Protocol;

/// nftables comments are limited to 128 bytes.
const MAX_COMMENT: usize = 120;

/// One container port published on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub protocol: Protocol,
    /// `hostIP`; None answers on every local address of the node (empty or `0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl PortMapping {
    /// Whether two mappings want the same host port (the scheduler's NodePorts rule: an
    /// unrestricted address clashes with every address).
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    /// `30080/TCP` or `192.0.2.7:30080/TCP`, for messages.
    pub fn host_side(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.protocol.api()),
            None => format!("{}/{}", self.host_port, self.protocol.api()),
        }
    }
}

/// What one pod publishes, with what identifies it in rules and messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodPorts {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "podIP")]
    pub pod_ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
}

/// The host port mappings of `pod` (kubelet's: the ports of its regular containers that
/// have a hostPort; init containers publish nothing), without duplicates, plus why any
/// port was left out. A hostNetwork pod has none: it binds the node's ports itself.
pub fn port_mappings(pod: &Pod) -> (Vec<PortMapping>, Vec<String>) {
    let mut mappings = Vec::new();
    let mut problems = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (mappings, problems);
    };
    if spec.host_network == Some(true) {
        return (mappings, problems);
    }
    for container in &spec.containers {
        for port in container.ports.iter().flatten() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
                continue;
            };
            let what = format!(
                "container {:?} port {}: hostPort {host_port}",
                container.name, port.container_port
            );
            let (Ok(host_port), Ok(container_port)) =
                (u16::try_from(host_port), u16::try_from(port.container_port))
            else {
                problems.push(format!("{what}: ports are 1 to 65535"));
                continue;
            };
            let protocol_name = port.protocol.as_deref().unwrap_or("TCP");
            let Some(protocol) = Protocol::parse(protocol_name) else {
                problems.push(format!("{what}: unsupported protocol {protocol_name:?}"));
                continue;
            };
            let host_ip = match port.host_ip.as_deref().unwrap_or("") {
                "" => None,
                text => match text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) if ip.is_unspecified() => None,
                    Ok(IpAddr::V4(ip)) => Some(ip),
                    Ok(IpAddr::V6(_)) => {
                        problems.push(format!(
                            "{what}: hostIP {text} is IPv6, and this node's pod network is IPv4 only"
                        ));
                        continue;
                    }
                    Err(_) => {
                        problems.push(format!("{what}: hostIP {text:?} is not an IP address"));
                        continue;
                    }
                },
            };
            let mapping = PortMapping {
                protocol,
                host_ip,
                host_port,
                container_port,
            };
            if !mappings.contains(&mapping) {
                mappings.push(mapping);
            }
        }
    }
    (mappings, problems)
}

/// Why `wanted` (for the pod `uid`) cannot be mapped next to the other pods' mappings, or
/// None. Only a pod bound with `spec.nodeName`, past the scheduler, can get here.
pub fn clash(
    pods: &BTreeMap<String, PodPorts>,
    uid: &str,
    wanted: &[PortMapping],
) -> Option<String> {
    for (other_uid, other) in pods.iter().filter(|(u, _)| u.as_str() != uid) {
        for want in wanted {
            if let Some(held) = other.ports.iter().find(|held| want.clashes_with(held)) {
                return Some(format!(
                    "host port {} is already mapped to pod {}/{} ({other_uid}) as {}",
                    want.host_side(),
                    other.namespace,
                    other.name,
                    held.host_side()
                ));
            }
        }
    }
    None
}

/// `<bridge>-hostports`, the nftables table (family ip) of one node's host ports.
pub fn table_name(bridge: &str) -> String {
    format!("{bridge}-hostports")
}

/// The script that replaces the table in one transaction with the mappings of `pods`
/// (keyed by uid), or only removes it when there are none.
///
/// A packet to a mapped protocol and port is DNATed to the pod when it is addressed to
/// the mapping's hostIP, or to any local address of the node but loopback (127.0.0.0/8
/// would need `route_localnet`, which would expose node-local listeners to pods). This is
/// done in prerouting (from other machines and from pods) and in output (from the node
/// itself; priority -100, as nft 1.0.6 requires for output). A pod reaching its own host
/// port (hairpin) is masqueraded so that its reply comes back through the node.
pub fn nft_script(table: &str, pods: &BTreeMap<String, PodPorts>) -> String {
    let mut script = format!("table ip {table}\ndelete table ip {table}\n");
    if pods.values().all(|p| p.ports.is_empty()) {
        return script;
    }
    let mut dnat = String::new();
    let mut hairpin = String::new();
    for pod in pods.values().filter(|p| !p.ports.is_empty()) {
        let comment = comment(&format!("{}/{}", pod.namespace, pod.name));
        for m in &pod.ports {
            let destination = match m.host_ip {
                Some(ip) => format!("ip daddr {ip}"),
                None => "ip daddr != 127.0.0.0/8 fib daddr type local".to_string(),
            };
            dnat.push_str(&format!(
                "\t\tmeta l4proto {proto} th dport {port} {destination} dnat to {ip}:{target} comment \"{comment}\"\n",
                proto = m.protocol.nft(),
                port = m.host_port,
                ip = pod.pod_ip,
                target = m.container_port,
            ));
        }
        hairpin.push_str(&format!(
            "\t\tip saddr {ip} ip daddr {ip} ct status dnat masquerade comment \"{comment}\"\n",
            ip = pod.pod_ip
        ));
    }
    script.push_str(&format!(
        "table ip {table} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump hostports\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump hostports\n\
         \t}}\n\
         \tchain hostports {{\n\
         {dnat}\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         {hairpin}\
         \t}}\n\
         }}\n"
    ));
    script
}

/// A comment nftables accepts: no quotes, at most [`MAX_COMMENT`] bytes.
fn comment(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    while out.len() > MAX_COMMENT {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn tcp(host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port,
            container_port,
        }
    }

    #[test]
    fn mappings_are_kubelets() {
        let p = pod(json!({"metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "initContainers": [{"name": "init", "ports": [{"containerPort": 1, "hostPort": 1}]}],
            "containers": [
                {"name": "a", "ports": [
                    {"containerPort": 8080, "hostPort": 30080, "protocol": "TCP"},
                    {"containerPort": 8080, "hostPort": 30080, "protocol": "TCP"},
                    {"containerPort": 53, "hostPort": 30053, "protocol": "UDP", "hostIP": "192.0.2.7"},
                    {"containerPort": 9000},
                    {"containerPort": 9001, "hostPort": 0},
                    {"containerPort": 7, "hostPort": 30007, "hostIP": "0.0.0.0", "protocol": "SCTP"}
                ]},
                {"name": "b", "ports": [
                    {"containerPort": 80, "hostPort": 30081},
                    {"containerPort": 81, "hostPort": 30082, "hostIP": "::1"},
                    {"containerPort": 82, "hostPort": 30083, "hostIP": "nope"},
                    {"containerPort": 83, "hostPort": 70000}
                ]}
            ]}}));
        let (mappings, problems) = port_mappings(&p);
        assert_eq!(
            mappings,
            vec![
                tcp(30080, 8080),
                PortMapping {
                    protocol: Protocol::Udp,
                    host_ip: Some(Ipv4Addr::new(192, 0, 2, 7)),
                    host_port: 30053,
                    container_port: 53
                },
                PortMapping {
                    protocol: Protocol::Sctp,
                    host_ip: None,
                    host_port: 30007,
                    container_port: 7
                },
                tcp(30081, 80),
            ]
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("IPv6"), "{problems:?}");
        assert!(problems[1].contains("not an IP address"), "{problems:?}");
        assert!(problems[2].contains("1 to 65535"), "{problems:?}");
    }

    #[test]
    fn host_network_pods_map_nothing() {
        let p = pod(json!({"metadata": {"name": "h"},
            "spec": {"hostNetwork": true, "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]}}));
        assert_eq!(port_mappings(&p), (vec![], vec![]));
    }

    fn pods(entries: &[(&str, &str, [u8; 4], Vec<PortMapping>)]) -> BTreeMap<String, PodPorts> {
        entries
            .iter()
            .map(|(uid, name, ip, ports)| {
                (
                    uid.to_string(),
                    PodPorts {
                        namespace: "default".into(),
                        name: name.to_string(),
                        pod_ip: Ipv4Addr::from(*ip),
                        ports: ports.clone(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn clashes_follow_the_schedulers_rule() {
        let at = |ip: [u8; 4], port| PortMapping {
            host_ip: Some(Ipv4Addr::from(ip)),
            ..tcp(port, 80)
        };
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..tcp(30080, 80)
        };
        let held = pods(&[(
            "u1",
            "web",
            [10, 42, 0, 5],
            vec![tcp(30080, 8080), at([192, 0, 2, 7], 30090)],
        )]);
        let cases = [
            ("same port", "u2", vec![tcp(30080, 80)], true),
            ("same pod again", "u1", vec![tcp(30080, 80)], false),
            ("other port", "u2", vec![tcp(30081, 80)], false),
            ("other protocol", "u2", vec![udp], false),
            (
                "any address vs one",
                "u2",
                vec![at([192, 0, 2, 8], 30080)],
                true,
            ),
            ("one address vs any", "u2", vec![tcp(30090, 80)], true),
            (
                "other addresses",
                "u2",
                vec![at([192, 0, 2, 8], 30090)],
                false,
            ),
            ("same address", "u2", vec![at([192, 0, 2, 7], 30090)], true),
        ];
        for (what, uid, wanted, clashes) in cases {
            assert_eq!(clash(&held, uid, &wanted).is_some(), clashes, "{what}");
        }
        assert_eq!(
            clash(&held, "u2", &[tcp(30080, 80)]).unwrap(),
            "host port 30080/TCP is already mapped to pod default/web (u1) as 30080/TCP"
        );
    }

    #[test]
    fn the_table() {
        assert_eq!(table_name("skiff0"), "skiff0-hostports");
        assert_eq!(
            nft_script("skt3-hostports", &BTreeMap::new()),
            "table ip skt3-hostports\ndelete table ip skt3-hostports\n"
        );
        let udp_on_one_address = PortMapping {
            protocol: Protocol::Udp,
            host_ip: Some(Ipv4Addr::new(192, 0, 2, 7)),
            host_port: 30053,
            container_port: 53,
        };
        let script = nft_script(
            "skiff0-hostports",
            &pods(&[
                (
                    "u1",
                    "web",
                    [10, 42, 0, 5],
                    vec![tcp(30080, 8080), udp_on_one_address],
                ),
                ("u2", "none", [10, 42, 0, 6], vec![]),
            ]),
        );
        assert!(script.starts_with("table ip skiff0-hostports\ndelete table ip skiff0-hostports\ntable ip skiff0-hostports {\n"));
        for line in [
            "type nat hook prerouting priority dstnat; policy accept;",
            "type nat hook output priority -100; policy accept;",
            "type nat hook postrouting priority srcnat; policy accept;",
            "meta l4proto tcp th dport 30080 ip daddr != 127.0.0.0/8 fib daddr type local dnat to 10.42.0.5:8080 comment \"default/web\"",
            "meta l4proto udp th dport 30053 ip daddr 192.0.2.7 dnat to 10.42.0.5:53 comment \"default/web\"",
            "ip saddr 10.42.0.5 ip daddr 10.42.0.5 ct status dnat masquerade comment \"default/web\"",
        ] {
            assert!(script.contains(line), "{line}\n{script}");
        }
        assert!(!script.contains("10.42.0.6"), "{script}");
        assert_eq!(script.matches("jump hostports").count(), 2);
    }

    #[test]
    fn comments_are_safe() {
        assert_eq!(comment("a\"b\\c\nd"), "abcd");
        assert_eq!(comment(&"x".repeat(300)).len(), MAX_COMMENT);
    }

    #[test]
    fn the_state_round_trips() {
        let p = pods(&[("u1", "web", [10, 42, 0, 5], vec![tcp(30080, 8080)])]);
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"u1":{"namespace":"default","name":"web","podIP":"10.42.0.5","ports":[{"protocol":"TCP","hostPort":30080,"containerPort":8080}]}}"#
        );
        let back: BTreeMap<String, PodPorts> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }
}
