//! The routing table, as pure functions: which Ingresses this controller serves
//! (`serves`), Ingresses + Services + EndpointSlices → [`Table`] (`Table::build`), and
//! table + host + path → [`Decision`] (`Table::route`). Matching follows the Ingress API:
//! exact hosts before `*.example.com` wildcards (one label) before rules without a host;
//! paths Exact, Prefix (element-wise) and ImplementationSpecific (as Prefix), the longest
//! match winning and Exact before Prefix at equal length; `spec.defaultBackend` when
//! nothing matches. Where several Ingresses claim the same host and path, the oldest wins.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

/// `spec.controller` of the classes this controller serves.
pub const CONTROLLER: &str = "skiff.dev/ingress";
/// The class created at server start.
pub const CLASS_NAME: &str = "skiff";
/// Marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation that predates `spec.ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Labels an EndpointSlice with its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Whether this controller serves `ingress`: its class (by name, or the default class when
/// it names none) is one whose controller is [`CONTROLLER`]. The class `skiff` is served
/// even before its object exists.
pub fn serves(ingress: &Ingress, classes: &[IngressClass]) -> bool {
    let ours = |class: &IngressClass| {
        class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
    };
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION).cloned())
        });
    match named {
        Some(name) => match classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&name))
        {
            Some(class) => ours(class),
            None => name == CLASS_NAME,
        },
        None => classes.iter().any(|c| {
            ours(c)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        }),
    }
}

/// The ready endpoints of one Service port, served round-robin.
#[derive(Debug)]
pub struct Upstream {
    /// `<namespace>/<service>:<port>`, for logs and error pages.
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Upstream {
    /// The next endpoint in turn.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.addrs[i % self.addrs.len()])
    }
}

/// Where a rule sends its requests.
#[derive(Debug, Clone)]
pub enum Target {
    Upstream(Arc<Upstream>),
    /// The backend is missing, names a missing port, or has no ready endpoint: 503.
    Unavailable(String),
}

/// What to do with one request.
#[derive(Debug, Clone)]
pub enum Decision {
    Forward(Arc<Upstream>),
    Unavailable(String),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Exact,
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    path: String,
    kind: PathKind,
    target: Target,
    /// Which Ingress made it (oldest first sorts lowest).
    rank: usize,
}

/// The routing table: rebuilt on every change, swapped whole.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<String, Vec<PathRule>>,
    /// Keyed by the wildcard's suffix: `*.example.com` → `example.com`.
    wildcard: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Target>,
}

/// The Services and their ready endpoints the table is built from.
pub struct Endpoints<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Endpoints<'a> {
    pub fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Self {
        let key = |m: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
            )
        };
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            by_service
                .entry((ns, service.as_str()))
                .or_default()
                .push(slice);
        }
        Endpoints {
            services: services
                .iter()
                .map(|s| (key(&s.metadata), s.as_ref()))
                .collect(),
            slices: by_service,
        }
    }

    /// The target of `backend` in `namespace`.
    fn resolve(&self, namespace: &str, backend: &IngressBackend) -> Target {
        let Some(svc) = &backend.service else {
            return Target::Unavailable("the backend names no Service".into());
        };
        let wanted = svc.port.as_ref();
        let port_text = match wanted {
            Some(p) => p
                .number
                .map(|n| n.to_string())
                .or_else(|| p.name.clone())
                .unwrap_or_default(),
            None => String::new(),
        };
        let name = format!("{namespace}/{}:{port_text}", svc.name);
        let Some(service) = self.services.get(&(namespace, svc.name.as_str())) else {
            return Target::Unavailable(format!("{name}: no such Service"));
        };
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let port = ports.iter().find(|p| match wanted {
            Some(w) => match (w.number, &w.name) {
                (Some(n), _) => p.port == n,
                (None, Some(n)) => p.name.as_deref() == Some(n.as_str()),
                (None, None) => false,
            },
            None => false,
        });
        let Some(port) = port else {
            return Target::Unavailable(format!("{name}: the Service has no such port"));
        };
        let port_name = port.name.clone().unwrap_or_default();
        let mut addrs = Vec::new();
        for slice in self
            .slices
            .get(&(namespace, svc.name.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(target_port) =
                slice
                    .ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find_map(|p| {
                        (p.name.clone().unwrap_or_default() == port_name)
                            .then_some(p.port)
                            .flatten()
                    })
            else {
                continue;
            };
            let Ok(target_port) = u16::try_from(target_port) else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        addrs.push(SocketAddr::new(ip, target_port));
                    }
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Target::Unavailable(format!("{name}: no ready endpoints"));
        }
        Target::Upstream(Arc::new(Upstream {
            name,
            addrs,
            next: AtomicUsize::new(0),
        }))
    }
}

impl Table {
    /// The table of the served `ingresses`. Oldest Ingress first wins a conflict.
    pub fn build(ingresses: &[Arc<Ingress>], endpoints: &Endpoints) -> Table {
        let mut ordered: Vec<&Ingress> = ingresses.iter().map(|i| i.as_ref()).collect();
        ordered.sort_by(|a, b| {
            let key = |i: &Ingress| {
                (
                    i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    i.metadata.namespace.clone(),
                    i.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut table = Table::default();
        for (rank, ingress) in ordered.iter().enumerate() {
            let namespace = ingress.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = &ingress.spec else { continue };
            if table.default_backend.is_none() {
                if let Some(backend) = &spec.default_backend {
                    table.default_backend = Some(endpoints.resolve(namespace, backend));
                }
            }
            for rule in spec.rules.as_deref().unwrap_or_default() {
                let Some(http) = &rule.http else { continue };
                let rules = match rule.host.as_deref().map(str::to_ascii_lowercase) {
                    None => &mut table.any_host,
                    Some(h) if h.is_empty() => &mut table.any_host,
                    Some(h) => match h.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()).or_default(),
                        None => table.exact.entry(h).or_default(),
                    },
                };
                for path in &http.paths {
                    let kind = match path.path_type.as_str() {
                        "Exact" => PathKind::Exact,
                        _ => PathKind::Prefix,
                    };
                    let text = path.path.clone().unwrap_or_else(|| "/".into());
                    if rules.iter().any(|r| r.path == text && r.kind == kind) {
                        continue;
                    }
                    rules.push(PathRule {
                        path: text,
                        kind,
                        target: endpoints.resolve(namespace, &path.backend),
                        rank,
                    });
                }
            }
        }
        for rules in table
            .exact
            .values_mut()
            .chain(table.wildcard.values_mut())
            .chain(std::iter::once(&mut table.any_host))
        {
            // Longest first; Exact before Prefix at equal length; then the oldest Ingress.
            rules.sort_by(|a, b| {
                b.path
                    .len()
                    .cmp(&a.path.len())
                    .then((a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
                    .then(a.rank.cmp(&b.rank))
            });
        }
        table
    }

    /// Where a request for `host` (a Host header, port allowed) and `path` goes. The most
    /// specific host group that has rules decides; its rules not matching means the
    /// default backend (or 404).
    pub fn route(&self, host: &str, path: &str) -> Decision {
        let host = strip_port(host).to_ascii_lowercase();
        let wildcard = host
            .split_once('.')
            .and_then(|(_, rest)| self.wildcard.get(rest));
        let group = self.exact.get(&host).or(wildcard).unwrap_or(&self.any_host);
        let matched = group
            .iter()
            .find(|r| path_matches(r.kind, &r.path, path))
            .map(|r| &r.target)
            .or(self.default_backend.as_ref());
        match matched {
            Some(Target::Upstream(u)) => Decision::Forward(u.clone()),
            Some(Target::Unavailable(why)) => Decision::Unavailable(why.clone()),
            None => Decision::NotFound,
        }
    }

    /// Every host named by a rule (for diagnostics).
    pub fn hosts(&self) -> BTreeMap<String, usize> {
        self.exact
            .iter()
            .map(|(h, r)| (h.clone(), r.len()))
            .collect()
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether a request path matches a rule. Prefix compares `/`-separated elements, so
/// `/foo` matches `/foo` and `/foo/bar` but not `/foobar`; a trailing `/` is ignored.
fn path_matches(kind: PathKind, rule: &str, path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match kind {
        PathKind::Exact => rule == path,
        PathKind::Prefix => {
            let elements = |p: &str| -> Vec<String> {
                p.split('/')
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            let rule = elements(rule);
            let path = elements(path);
            path.len() >= rule.len() && rule.iter().zip(&path).all(|(a, b)| a == b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, age: i64, spec: serde_json::Value) -> Arc<Ingress> {
        let created = chrono_like(age);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn chrono_like(minute: i64) -> String {
        format!("2026-01-01T00:{minute:02}:00Z")
    }

    fn service(name: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"ports": ports},
            }))
            .unwrap(),
        )
    }

    fn slice(
        service: &str,
        port_name: &str,
        port: i32,
        ips: &[(&str, bool)],
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "ns",
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
                "ports": [{"name": port_name, "port": port}],
                "endpoints": ips.iter().map(|(ip, ready)| json!({
                    "addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>(),
            }))
            .unwrap(),
        )
    }

    fn backend(svc: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"service": {"name": svc, "port": port}})
    }

    fn path(p: &str, kind: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind, "backend": backend(svc, json!({"number": 80}))})
    }

    fn world() -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
        let http = json!([{"name": "http", "port": 80, "targetPort": 8080}]);
        let services = vec![
            service("api", http.clone()),
            service("web", http.clone()),
            service("exact", http.clone()),
            service("idle", http),
        ];
        let slices = vec![
            slice(
                "api",
                "http",
                8080,
                &[("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.9", false)],
            ),
            slice("web", "http", 8080, &[("10.0.1.1", true)]),
            slice("exact", "http", 8080, &[("10.0.2.1", true)]),
            slice("idle", "http", 8080, &[("10.0.3.1", false)]),
        ];
        (services, slices)
    }

    fn target(d: Decision) -> String {
        match d {
            Decision::Forward(u) => u.name.split(['/', ':']).nth(1).unwrap().to_string(),
            Decision::Unavailable(_) => "503".into(),
            Decision::NotFound => "404".into(),
        }
    }

    #[test]
    fn paths_hosts_and_precedence() {
        let (services, slices) = world();
        let endpoints = Endpoints::new(&services, &slices);
        let ingresses = vec![
            ingress(
                "paths",
                1,
                json!({"rules": [{"http": {"paths": [
                    path("/api", "Prefix", "api"),
                    path("/web", "ImplementationSpecific", "web"),
                    path("/api/v1", "Exact", "exact"),
                    path("/gone", "Prefix", "missing"),
                    path("/idle", "Prefix", "idle"),
                ]}}]}),
            ),
            ingress(
                "hosts",
                2,
                json!({"rules": [
                    {"host": "api.example.com", "http": {"paths": [path("/", "Prefix", "api")]}},
                    {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "web")]}},
                    {"host": "exact.example.com", "http": {"paths": [path("/only", "Exact", "exact")]}},
                ]}),
            ),
        ];
        let table = Table::build(&ingresses, &endpoints);
        let cases = [
            ("any", "/api", "api"),
            ("any", "/api/", "api"),
            ("any", "/api/users?x=1", "api"),
            ("any", "/apis", "404"),
            ("any", "/web/index.html", "web"),
            ("any", "/api/v1", "exact"),
            ("any", "/api/v1/x", "api"),
            ("any", "/gone/x", "503"),
            ("any", "/idle", "503"),
            ("any", "/", "404"),
            ("API.example.com:8080", "/anything", "api"),
            ("www.example.com", "/x", "web"),
            ("a.b.example.com", "/api", "api"),
            ("example.com", "/api", "api"),
            ("exact.example.com", "/only", "exact"),
            ("exact.example.com", "/only/more", "404"),
        ];
        for (host, p, want) in cases {
            assert_eq!(target(table.route(host, p)), want, "{host} {p}");
        }
    }

    #[test]
    fn default_backend_and_oldest_wins() {
        let (services, slices) = world();
        let endpoints = Endpoints::new(&services, &slices);
        let ingresses = vec![
            ingress(
                "newer",
                5,
                json!({
                "defaultBackend": backend("api", json!({"number": 80})),
                "rules": [{"http": {"paths": [path("/x", "Prefix", "api")]}}]}),
            ),
            ingress(
                "older",
                1,
                json!({
                "defaultBackend": backend("web", json!({"name": "http"})),
                "rules": [{"http": {"paths": [path("/x", "Prefix", "web")]}}]}),
            ),
        ];
        let table = Table::build(&ingresses, &endpoints);
        assert_eq!(target(table.route("h", "/x")), "web");
        assert_eq!(target(table.route("h", "/nothing")), "web");
        let bad_port = vec![ingress(
            "p",
            1,
            json!({
            "defaultBackend": backend("web", json!({"number": 81}))}),
        )];
        assert_eq!(
            target(Table::build(&bad_port, &endpoints).route("h", "/")),
            "503"
        );
    }

    #[test]
    fn round_robin_over_ready_endpoints_at_the_target_port() {
        let (services, slices) = world();
        let endpoints = Endpoints::new(&services, &slices);
        let ingresses = vec![ingress(
            "i",
            1,
            json!({"rules": [{"http": {"paths": [path("/", "Prefix", "api")]}}]}),
        )];
        let table = Table::build(&ingresses, &endpoints);
        let Decision::Forward(u) = table.route("h", "/") else {
            panic!()
        };
        let picks: Vec<String> = (0..4).map(|_| u.pick().unwrap().to_string()).collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.1:8080",
                "10.0.0.2:8080"
            ]
        );
    }

    #[test]
    fn which_ingresses_are_served() {
        let class = |name: &str, controller: &str, default: bool| -> IngressClass {
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default.to_string()}},
                "spec": {"controller": controller}})).unwrap()
        };
        let with = |class: Option<&str>| -> Ingress {
            serde_json::from_value(
                json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": class}}),
            )
            .unwrap()
        };
        let ours_default = vec![
            class("skiff", CONTROLLER, true),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        let other_default = vec![
            class("skiff", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", true),
        ];
        assert!(serves(&with(Some("skiff")), &ours_default));
        assert!(serves(&with(None), &ours_default));
        assert!(!serves(&with(Some("nginx")), &ours_default));
        assert!(!serves(&with(None), &other_default));
        assert!(serves(&with(Some("skiff")), &[]));
        assert!(!serves(&with(None), &[]));
    }
}
