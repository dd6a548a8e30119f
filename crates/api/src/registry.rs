//! The table of every resource skiff serves: group, version, kind, plural, scope,
//! short names, categories and subresources. Discovery, routing, storage keys and the
//! OpenAPI document are all derived from this one table, so adding a kind is one entry.

/// A subresource the apiserver serves beside the main resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subresource {
    /// `/status`: updates only `.status` (and the main resource ignores `.status`).
    Status,
    /// `/scale`: an autoscaling/v1 Scale view of `.spec.replicas`.
    Scale,
    /// `/binding` (pods): assigns a node.
    Binding,
    /// `/eviction` (pods): a policy/v1 Eviction that deletes the pod.
    Eviction,
    /// `/token` (serviceaccounts): an authentication.k8s.io/v1 TokenRequest.
    Token,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Token => "token",
        }
    }

    /// The kind the subresource speaks, as (group, version, kind).
    pub fn kind(self, parent: &ResourceInfo) -> (&'static str, &'static str, &'static str) {
        match self {
            Subresource::Status => (parent.group, parent.version, parent.kind),
            Subresource::Scale => ("autoscaling", "v1", "Scale"),
            Subresource::Binding => ("", "v1", "Binding"),
            Subresource::Eviction => ("policy", "v1", "Eviction"),
            Subresource::Token => ("authentication.k8s.io", "v1", "TokenRequest"),
        }
    }

    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Binding | Subresource::Eviction | Subresource::Token => &["create"],
        }
    }
}

/// One served resource at one group/version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; "" is the core (legacy) group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The lowercase plural used in URLs (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Where objects live in the store: `/registry/<storage_prefix>/...`. Two versions of
    /// one resource share it (autoscaling v1/v2) and convert on the way in and out.
    pub storage_prefix: &'static str,
}

/// Verbs every served resource supports (all of them, for now).
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store key of one object, e.g. `/registry/pods/default/web-0`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("/registry/{}/{}/{}", self.storage_prefix, ns, name)
            }
            _ => format!("/registry/{}/{}", self.storage_prefix, name),
        }
    }

    /// The store prefix of a collection: all namespaces when `namespace` is None.
    pub fn collection_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage_prefix, ns),
            _ => format!("/registry/{}/", self.storage_prefix),
        }
    }
}

/// A group and the versions it serves, preferred first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: &'static str,
    pub versions: Vec<&'static str>,
}

use Subresource::*;

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], sub: [$($sub:expr),*], store: $store:expr) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            storage_prefix: $store,
        }
    };
}

/// Every resource skiff serves, grouped by API group in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    res!("", "v1", "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [], sub: [Status], store: "namespaces"),
    res!("", "v1", "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], sub: [Status, Binding, Eviction], store: "pods"),
    res!("", "v1", "Service", "services", "service", true, short: ["svc"], cat: ["all"], sub: [Status], store: "services/specs"),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [], sub: [], store: "services/endpoints"),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [], sub: [], store: "configmaps"),
    res!("", "v1", "Secret", "secrets", "secret", true, short: [], cat: [], sub: [], store: "secrets"),
    res!("", "v1", "Node", "nodes", "node", false, short: ["no"], cat: [], sub: [Status], store: "minions"),
    res!("", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], store: "events"),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"], cat: [], sub: [Token], store: "serviceaccounts"),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, short: ["pv"], cat: [], sub: [Status], store: "persistentvolumes"),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, short: ["pvc"], cat: [], sub: [Status], store: "persistentvolumeclaims"),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, short: ["limits"], cat: [], sub: [], store: "limitranges"),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, short: ["quota"], cat: [], sub: [Status], store: "resourcequotas"),
    // apps/v1
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, short: ["deploy"], cat: ["all"], sub: [Status, Scale], store: "deployments"),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"], cat: ["all"], sub: [Status, Scale], store: "replicasets"),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"], sub: [Status, Scale], store: "statefulsets"),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, short: ["ds"], cat: ["all"], sub: [Status], store: "daemonsets"),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, short: [], cat: [], sub: [], store: "controllerrevisions"),
    // batch/v1
    res!("batch", "v1", "Job", "jobs", "job", true, short: [], cat: ["all"], sub: [Status], store: "jobs"),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, short: ["cj"], cat: ["all"], sub: [Status], store: "cronjobs"),
    // networking.k8s.io/v1
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, short: ["ing"], cat: [], sub: [Status], store: "ingress"),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, short: [], cat: [], sub: [], store: "ingressclasses"),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, short: ["netpol"], cat: [], sub: [], store: "networkpolicies"),
    // coordination.k8s.io/v1
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, short: [], cat: [], sub: [], store: "leases"),
    // discovery.k8s.io/v1
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, short: [], cat: [], sub: [], store: "endpointslices"),
    // autoscaling v2 (preferred) and v1 share storage; objects are stored as v2.
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], sub: [Status], store: "horizontalpodautoscalers"),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], sub: [Status], store: "horizontalpodautoscalers"),
    // storage.k8s.io/v1
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, short: ["sc"], cat: [], sub: [], store: "storageclasses"),
    // policy/v1
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, short: ["pdb"], cat: [], sub: [Status], store: "poddisruptionbudgets"),
    // rbac.authorization.k8s.io/v1
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, short: [], cat: [], sub: [], store: "roles"),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, short: [], cat: [], sub: [], store: "clusterroles"),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, short: [], cat: [], sub: [], store: "rolebindings"),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, short: [], cat: [], sub: [], store: "clusterrolebindings"),
    // events.k8s.io/v1 Events are stored as core/v1 Events (see conversion.rs).
    res!("events.k8s.io", "v1", "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], store: "events"),
];

/// Every group, in discovery order, with its versions (preferred first). The core group
/// is named "".
pub fn groups() -> Vec<GroupInfo> {
    let mut out: Vec<GroupInfo> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|g| g.name == r.group) {
            Some(g) => {
                if !g.versions.contains(&r.version) {
                    g.versions.push(r.version);
                }
            }
            None => out.push(GroupInfo {
                name: r.group,
                versions: vec![r.version],
            }),
        }
    }
    out
}

/// All resources served at one group/version, in table order.
pub fn resources_in<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource for a kind at `group/version`.
pub fn lookup_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Split an `apiVersion` string into (group, version).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{}/{} {} listed twice",
                    a.group,
                    a.version,
                    a.plural
                );
            }
        }
    }

    #[test]
    fn keys_follow_the_upstream_layout() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.collection_prefix(None), "/registry/pods/");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
    }

    #[test]
    fn autoscaling_prefers_v2() {
        let g = groups()
            .into_iter()
            .find(|g| g.name == "autoscaling")
            .unwrap();
        assert_eq!(g.versions, vec!["v2", "v1"]);
    }
}
