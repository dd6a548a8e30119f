//! The records one Service contributes to the cluster zone, after upstream's "Kubernetes
//! DNS-Based Service Discovery" specification (schema 1.1.0) and CoreDNS's `kubernetes`
//! plugin, which k3s runs: a pure function of the Service and its EndpointSlices.
//!
//! - ClusterIP: `A`/`AAAA` `<svc>.<ns>.svc.<zone>` → each cluster IP, `PTR` back, `SRV`
//!   `_<port>._<proto>.<svc>...` for named ports (and every port on the bare name, as
//!   CoreDNS answers a wildcard port).
//! - Headless (`clusterIP: None`): the bare name → every ready endpoint address; `SRV`
//!   per endpoint and port, pointing at the endpoint's name.
//! - Every endpoint (headless or not) has a name `<host>.<svc>.<ns>.svc.<zone>` and a
//!   `PTR` to it; `<host>` is its `hostname` (StatefulSet pods), else its address with
//!   dashes (`10-42-0-5`), as CoreDNS names endpoints.
//! - ExternalName: a `CNAME` to the external name (nothing when it is an IP address).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_server::proto::rr::{Name, RData};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One record of the zone: its owner name (lower case, fully qualified with the final
/// dot) and its data. SRV weights are left 0 here; the answer sets them (CoreDNS gives
/// each of n records 100/n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRecord {
    pub name: String,
    pub data: RData,
}

/// The records of `svc` in cluster domain `domain` (e.g. `cluster.local`, lower case, no
/// final dot), from the EndpointSlices that name it.
pub fn service_records(
    svc: &Service,
    slices: &[Arc<EndpointSlice>],
    domain: &str,
) -> Vec<ZoneRecord> {
    let (Some(name), Some(namespace)) = (
        svc.metadata.name.as_deref(),
        svc.metadata.namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let service_name = format!("{name}.{namespace}.svc.{domain}.").to_ascii_lowercase();
    let mut out = Records::default();

    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().unwrap_or_default();
        // CoreDNS answers only a name here; an IP in externalName gets no record.
        if !target.is_empty() && target.parse::<IpAddr>().is_err() {
            if let Some(target) = fqdn(target) {
                out.push(&service_name, RData::CNAME(CNAME(target)));
            }
        }
        return out.0;
    }

    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<IpAddr>>()
        .into_iter()
        .collect();
    let headless = cluster_ips.is_empty();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let endpoints = ready_endpoints(slices, publish_not_ready);

    if !headless {
        for ip in &cluster_ips {
            out.push(&service_name, address(*ip));
            if let Some(target) = fqdn(&service_name) {
                out.push(&reverse_name(*ip), RData::PTR(PTR(target)));
            }
        }
        for port in spec.ports.iter().flatten() {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let Some(target) = fqdn(&service_name) else {
                continue;
            };
            let srv = RData::SRV(SRV::new(0, 0, number, target));
            out.push(&service_name, srv.clone());
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let proto = port.protocol.as_deref().unwrap_or("TCP");
                out.push(&srv_name(port_name, proto, &service_name), srv);
            }
        }
    }

    for endpoint in &endpoints {
        let host_name = format!("{}.{service_name}", endpoint.host).to_ascii_lowercase();
        out.push(&host_name, address(endpoint.ip));
        if let Some(target) = fqdn(&host_name) {
            out.push(&reverse_name(endpoint.ip), RData::PTR(PTR(target)));
        }
        if !headless {
            continue;
        }
        out.push(&service_name, address(endpoint.ip));
        for port in &endpoint.ports {
            let Some(target) = fqdn(&host_name) else {
                continue;
            };
            let srv = RData::SRV(SRV::new(0, 0, port.number, target));
            out.push(&service_name, srv.clone());
            if let Some(port_name) = port.name.as_deref() {
                out.push(&srv_name(port_name, &port.protocol, &service_name), srv);
            }
        }
    }
    out.0
}

/// Records in order, without duplicates (an endpoint listed in two slices, or the same
/// address under two ports, answers once).
#[derive(Default)]
struct Records(Vec<ZoneRecord>);

impl Records {
    fn push(&mut self, name: &str, data: RData) {
        let record = ZoneRecord {
            name: name.to_string(),
            data,
        };
        if !self.0.contains(&record) {
            self.0.push(record);
        }
    }
}

/// An endpoint address that answers: its name label and its ports.
#[derive(Debug)]
struct ReadyEndpoint {
    ip: IpAddr,
    host: String,
    ports: Vec<SlicePort>,
}

#[derive(Debug, Clone)]
struct SlicePort {
    name: Option<String>,
    protocol: String,
    number: u16,
}

/// Every ready address of the slices (all addresses when the Service publishes not-ready
/// ones); `ready` unset counts as ready, as the API documents.
fn ready_endpoints(slices: &[Arc<EndpointSlice>], publish_not_ready: bool) -> Vec<ReadyEndpoint> {
    let mut out: Vec<ReadyEndpoint> = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let ports: Vec<SlicePort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    number: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let host = endpoint
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| dashed(address));
                match out.iter_mut().find(|e| e.ip == ip && e.host == host) {
                    Some(existing) => existing.ports.extend(ports.iter().cloned()),
                    None => out.push(ReadyEndpoint {
                        ip,
                        host,
                        ports: ports.clone(),
                    }),
                }
            }
        }
    }
    out
}

/// CoreDNS's endpoint name for an address without a hostname: `10.42.0.5` → `10-42-0-5`,
/// `fd00::5` → `fd00--5`.
fn dashed(address: &str) -> String {
    address.replace(['.', ':'], "-")
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `_<port>._<proto>.<service name>`, lower case.
fn srv_name(port: &str, protocol: &str, service_name: &str) -> String {
    format!("_{port}._{protocol}.{service_name}").to_ascii_lowercase()
}

/// The reverse-lookup name of an address: `5.0.42.10.in-addr.arpa.`, or the nibbles of an
/// IPv6 address under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            out.push_str("ip6.arpa.");
            out
        }
    }
}

/// A fully qualified name from text that may lack the final dot; None when it is not a
/// valid DNS name (a label over 63 octets, say).
pub fn fqdn(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(name: &str, spec: ServiceSpec) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn port(name: &str, protocol: &str, port: i32) -> ServicePort {
        ServicePort {
            name: (!name.is_empty()).then(|| name.to_string()),
            protocol: Some(protocol.into()),
            port,
            ..Default::default()
        }
    }

    fn slice(
        endpoints: Vec<(&str, Option<&str>, Option<bool>)>,
        ports: &[(&str, i32)],
    ) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .into_iter()
                    .map(|(ip, host, ready)| Endpoint {
                        addresses: vec![ip.into()],
                        hostname: host.map(str::to_string),
                        conditions: Some(EndpointConditions {
                            ready,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: (!name.is_empty()).then(|| name.to_string()),
                        port: Some(*port),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    /// Records as `name TYPE data` lines, for readable tables.
    fn lines(records: &[ZoneRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.data.record_type(), r.data))
            .collect()
    }

    #[test]
    fn cluster_ip_service_with_named_and_unnamed_ports() {
        let svc = service(
            "web",
            ServiceSpec {
                cluster_ip: Some("10.43.0.20".into()),
                cluster_ips: Some(vec!["10.43.0.20".into()]),
                ports: Some(vec![port("http", "TCP", 80), port("", "UDP", 53)]),
                ..Default::default()
            },
        );
        let endpoints = slice(vec![("10.42.0.5", None, Some(true))], &[("http", 8080)]);
        let got = lines(&service_records(&svc, &[endpoints], "cluster.local"));
        assert_eq!(
            got,
            vec![
                "web.demo.svc.cluster.local. A 10.43.0.20",
                "20.0.43.10.in-addr.arpa. PTR web.demo.svc.cluster.local.",
                "web.demo.svc.cluster.local. SRV 0 0 80 web.demo.svc.cluster.local.",
                "_http._tcp.web.demo.svc.cluster.local. SRV 0 0 80 web.demo.svc.cluster.local.",
                "web.demo.svc.cluster.local. SRV 0 0 53 web.demo.svc.cluster.local.",
                "10-42-0-5.web.demo.svc.cluster.local. A 10.42.0.5",
                "5.0.42.10.in-addr.arpa. PTR 10-42-0-5.web.demo.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn headless_service_answers_ready_endpoints_with_their_hostnames() {
        let svc = service(
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                cluster_ips: Some(vec!["None".into()]),
                ..Default::default()
            },
        );
        let slices = [slice(
            vec![
                ("10.42.0.7", Some("db-0"), Some(true)),
                ("10.42.0.8", None, None),
                ("10.42.0.9", Some("db-2"), Some(false)),
            ],
            &[("pg", 5432)],
        )];
        let got = lines(&service_records(&svc, &slices, "cluster.local"));
        assert_eq!(
            got,
            vec![
                "db-0.db.demo.svc.cluster.local. A 10.42.0.7",
                "7.0.42.10.in-addr.arpa. PTR db-0.db.demo.svc.cluster.local.",
                "db.demo.svc.cluster.local. A 10.42.0.7",
                "db.demo.svc.cluster.local. SRV 0 0 5432 db-0.db.demo.svc.cluster.local.",
                "_pg._tcp.db.demo.svc.cluster.local. SRV 0 0 5432 db-0.db.demo.svc.cluster.local.",
                "10-42-0-8.db.demo.svc.cluster.local. A 10.42.0.8",
                "8.0.42.10.in-addr.arpa. PTR 10-42-0-8.db.demo.svc.cluster.local.",
                "db.demo.svc.cluster.local. A 10.42.0.8",
                "db.demo.svc.cluster.local. SRV 0 0 5432 10-42-0-8.db.demo.svc.cluster.local.",
                "_pg._tcp.db.demo.svc.cluster.local. SRV 0 0 5432 10-42-0-8.db.demo.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn publish_not_ready_addresses_includes_unready_endpoints() {
        let svc = service(
            "db",
            ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                ..Default::default()
            },
        );
        let slices = [slice(vec![("10.42.0.9", Some("db-2"), Some(false))], &[])];
        let got = lines(&service_records(&svc, &slices, "cluster.local"));
        assert!(
            got.contains(&"db.demo.svc.cluster.local. A 10.42.0.9".to_string()),
            "{got:?}"
        );
    }

    #[test]
    fn external_name_is_a_cname_unless_it_is_an_address() {
        for (external, want) in [
            (
                "example.test",
                vec!["ext.demo.svc.cluster.local. CNAME example.test."],
            ),
            (
                "example.test.",
                vec!["ext.demo.svc.cluster.local. CNAME example.test."],
            ),
            ("192.0.2.7", vec![]),
            ("", vec![]),
        ] {
            let svc = service(
                "ext",
                ServiceSpec {
                    type_: Some("ExternalName".into()),
                    external_name: Some(external.into()),
                    ..Default::default()
                },
            );
            assert_eq!(
                lines(&service_records(&svc, &[], "cluster.local")),
                want,
                "externalName {external:?}"
            );
        }
    }

    #[test]
    fn dual_stack_cluster_ips_get_a_and_aaaa() {
        let svc = service(
            "dual",
            ServiceSpec {
                cluster_ip: Some("10.43.0.30".into()),
                cluster_ips: Some(vec!["10.43.0.30".into(), "fd00:43::1e".into()]),
                ..Default::default()
            },
        );
        let got = lines(&service_records(&svc, &[], "cluster.local"));
        assert!(got.contains(&"dual.demo.svc.cluster.local. A 10.43.0.30".to_string()));
        assert!(got.contains(&"dual.demo.svc.cluster.local. AAAA fd00:43::1e".to_string()));
        assert!(got.contains(
            &"e.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa. PTR dual.demo.svc.cluster.local."
                .to_string()
        ));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.43.0.10".parse().unwrap()),
            "10.0.43.10.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
    }
}
