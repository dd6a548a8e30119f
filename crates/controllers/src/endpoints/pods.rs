//! What a Service's endpoints are made of, shared by the Endpoints and EndpointSlice
//! controllers (pure): which services a controller manages, which pods they select, a
//! pod's readiness and address, named target ports resolved per pod, the hostname of
//! pods in a headless service's subdomain, and the last-change trigger time.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Annotation with the time of the change that led to the last write (upstream).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Label marking the objects of a headless service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a service whose endpoints the controllers manage; `None` for services
/// left to their users (no selector, ExternalName) and the `kubernetes` service in
/// `default` (its endpoints are the API servers', kept by the server itself).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    if svc.metadata.namespace.as_deref() == Some("default")
        && svc.metadata.name.as_deref() == Some("kubernetes")
    {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod's Ready condition is True (upstream `IsPodReady`).
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod gets an endpoint at all (upstream `ShouldPodBeInEndpoints`): it has an
/// IP, has not finished, and is not terminating unless terminating pods are wanted.
pub fn pod_included(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) {
        return false;
    }
    let has_ip = pod.status.as_ref().is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    if !has_ip {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The service's address family: its first ipFamily, else that of its cluster IP.
pub fn service_is_ipv6(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    if let Some(first) = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        return first == "IPv6";
    }
    spec.and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip.contains(':'))
}

/// The pod's IP of the service's family.
pub fn pod_ip(pod: &Pod, ipv6: bool) -> Option<String> {
    let status = pod.status.as_ref()?;
    let mut ips: Vec<&str> = status
        .pod_ips
        .as_ref()
        .map(|v| v.iter().map(|p| p.ip.as_str()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(status.pod_ip.as_deref());
    }
    ips.into_iter()
        .find(|ip| !ip.is_empty() && ip.contains(':') == ipv6)
        .map(String::from)
}

/// The port a service port reaches on this pod (upstream `FindPort`): a number as is, a
/// name looked up among the pod's container ports of the same protocol; `None` when the
/// pod has no such port (it is then left out for this service port).
pub fn resolve_target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Pods that name this service as their subdomain publish their hostname (DNS records
/// of headless services).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_ns = pod.metadata.namespace == svc.metadata.namespace;
    (same_ns && spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| host.to_string())
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The time of the latest change behind the endpoints: the service's creation or a pod's
/// Ready transition (upstream takes the same inputs).
pub fn trigger_time<'a>(svc: &Service, pods: impl IntoIterator<Item = &'a Pod>) -> Option<Time> {
    let mut latest = svc.metadata.creation_timestamp.clone();
    for pod in pods {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.clone());
        if let Some(t) = ready {
            if latest.as_ref().map_or(true, |l| t.0 > l.0) {
                latest = Some(t);
            }
        }
    }
    latest
}

/// RFC 3339 in UTC with only the fractional digits needed (Go's RFC3339Nano).
pub fn format_time(t: &Time) -> String {
    t.0.to_string()
}

/// Which services last selected each pod, so that a pod relabelled out of a selector (its
/// new labels no longer say) still updates the services it left.
#[derive(Default)]
pub struct PodServices {
    last: HashMap<(String, String), Vec<String>>,
}

impl PodServices {
    /// Services to resync after `pod` changed to its current state (`None` when
    /// deleted); `services` are the namespace's services.
    pub fn changed<'a>(
        &mut self,
        namespace: &str,
        name: &str,
        pod: Option<&Pod>,
        services: impl IntoIterator<Item = &'a Service>,
    ) -> Vec<String> {
        let now: Vec<String> = match pod {
            Some(pod) => services
                .into_iter()
                .filter(|s| managed_selector(s).is_some_and(|sel| selects(sel, pod)))
                .filter_map(|s| s.metadata.name.clone())
                .collect(),
            None => Vec::new(),
        };
        let key = (namespace.to_string(), name.to_string());
        let before = if now.is_empty() {
            self.last.remove(&key)
        } else {
            self.last.insert(key, now.clone())
        };
        let mut all: HashSet<String> = now.into_iter().collect();
        all.extend(before.unwrap_or_default());
        let mut out: Vec<String> = all.into_iter().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    pub fn svc(name: &str, selector: &[(&str, &str)], ports: Vec<ServicePort>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        s.spec = Some(ServiceSpec {
            selector: (!selector.is_empty()).then(|| {
                selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ports: Some(ports),
            cluster_ip: Some("10.43.0.10".into()),
            ..ServiceSpec::default()
        });
        s
    }

    pub fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..ServicePort::default()
        }
    }

    /// A pod labelled app=web with container ports `ports` (name, number).
    pub fn pod(name: &str, ip: Option<&str>, ready: bool, ports: &[(&str, i32)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.spec = Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "main".into(),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: Some(n.to_string()),
                            container_port: *p,
                            ..ContainerPort::default()
                        })
                        .collect(),
                ),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ip.map(String::from),
            pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn managed_services() {
        let mut kubernetes = svc("kubernetes", &[("app", "web")], vec![]);
        kubernetes.metadata.namespace = Some("default".into());
        let mut external = svc("ext", &[("app", "web")], vec![]);
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let cases: Vec<(&str, Service, bool)> = vec![
            ("with a selector", svc("a", &[("app", "web")], vec![]), true),
            ("without a selector", svc("b", &[], vec![]), false),
            ("the kubernetes service", kubernetes, false),
            ("ExternalName", external, false),
        ];
        for (name, s, want) in cases {
            assert_eq!(managed_selector(&s).is_some(), want, "{name}");
        }
    }

    #[test]
    fn pods_included() {
        let mut terminating = pod("t", Some("10.42.0.1"), true, &[]);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let mut succeeded = pod("s", Some("10.42.0.1"), false, &[]);
        succeeded.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let cases: Vec<(&str, Pod, bool, bool)> = vec![
            (
                "running with an IP",
                pod("a", Some("10.42.0.1"), true, &[]),
                false,
                true,
            ),
            (
                "not ready still counts",
                pod("a", Some("10.42.0.1"), false, &[]),
                false,
                true,
            ),
            ("no IP yet", pod("a", None, true, &[]), false, false),
            ("terminating, not wanted", terminating.clone(), false, false),
            ("terminating, wanted", terminating, true, true),
            ("finished", succeeded, true, false),
        ];
        for (name, p, include_terminating, want) in cases {
            assert_eq!(pod_included(&p, include_terminating), want, "{name}");
        }
    }

    #[test]
    fn target_ports_resolved_per_pod() {
        let with_http = pod("a", Some("10.42.0.1"), true, &[("http", 8080)]);
        let with_other = pod("b", Some("10.42.0.2"), true, &[("http", 9090)]);
        let without = pod("c", Some("10.42.0.3"), true, &[("metrics", 9100)]);
        let named = port("web", 80, IntOrString::String("http".into()));
        let numbered = port("web", 80, IntOrString::Int(8000));
        let mut udp = named.clone();
        udp.protocol = Some("UDP".into());
        let cases: Vec<(&str, &ServicePort, &Pod, Option<i32>)> = vec![
            ("named, found", &named, &with_http, Some(8080)),
            ("named, per pod", &named, &with_other, Some(9090)),
            ("named, missing: left out", &named, &without, None),
            ("named, other protocol: left out", &udp, &with_http, None),
            ("numbered", &numbered, &without, Some(8000)),
        ];
        for (name, sp, p, want) in cases {
            assert_eq!(resolve_target_port(sp, p), want, "{name}");
        }
    }

    #[test]
    fn hostnames_only_in_the_services_subdomain() {
        let s = svc("db", &[("app", "web")], vec![]);
        let mut p = pod("db-0", Some("10.42.0.1"), true, &[]);
        assert_eq!(hostname(&p, &s), None);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("db-0".into());
        spec.subdomain = Some("other".into());
        assert_eq!(hostname(&p, &s), None);
        p.spec.as_mut().unwrap().subdomain = Some("db".into());
        assert_eq!(hostname(&p, &s).as_deref(), Some("db-0"));
    }

    #[test]
    fn pod_ip_by_family() {
        let mut p = pod("a", Some("10.42.0.1"), true, &[]);
        p.status.as_mut().unwrap().pod_ips = Some(vec![
            PodIP {
                ip: "10.42.0.1".into(),
            },
            PodIP {
                ip: "fd00::1".into(),
            },
        ]);
        assert_eq!(pod_ip(&p, false).as_deref(), Some("10.42.0.1"));
        assert_eq!(pod_ip(&p, true).as_deref(), Some("fd00::1"));
    }

    #[test]
    fn relabelled_pods_update_the_services_they_left() {
        let web = svc("web", &[("app", "web")], vec![]);
        let all = svc("all", &[("tier", "x")], vec![]);
        let services = [web, all];
        let mut idx = PodServices::default();
        let p = pod("p", Some("10.42.0.1"), true, &[]);
        assert_eq!(idx.changed("ns", "p", Some(&p), &services), vec!["web"]);
        let mut moved = p.clone();
        moved.metadata.labels = Some([("tier".to_string(), "x".to_string())].into());
        assert_eq!(
            idx.changed("ns", "p", Some(&moved), &services),
            vec!["all", "web"]
        );
        assert_eq!(idx.changed("ns", "p", None, &services), vec!["all"]);
        assert_eq!(
            idx.changed("ns", "p", None, &services),
            Vec::<String>::new()
        );
    }
}
