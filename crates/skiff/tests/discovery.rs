//! What kubectl asks before anything else: version, discovery, OpenAPI (explain), health.

mod common;
use common::*;
use testkit::Table;

#[test]
fn version_and_health() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sv = &v["serverVersion"];
    assert_eq!(sv["major"], "1", "{out}");
    assert!(
        sv["gitVersion"]
            .as_str()
            .is_some_and(|g| g.starts_with("v1.")),
        "{out}"
    );
    for p in ["/readyz", "/livez", "/healthz"] {
        assert_eq!(s.kubectl_ok(&["get", "--raw", p]), "ok", "{p}");
    }
}

#[test]
fn api_resources_lists_the_issue_kinds() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&["api-resources"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{out}"
    );
    let has = |name: &str, version: &str, namespaced: &str, kind: &str| {
        assert!(
            t.rows
                .iter()
                .any(|r| r[0] == name && r[2] == version && r[3] == namespaced && r[4] == kind),
            "{name} {version} {namespaced} {kind} missing in:\n{out}"
        );
    };
    has("namespaces", "v1", "false", "Namespace");
    has("pods", "v1", "true", "Pod");
    has("services", "v1", "true", "Service");
    has("configmaps", "v1", "true", "ConfigMap");
    has("secrets", "v1", "true", "Secret");
    has("nodes", "v1", "false", "Node");
    has("events", "v1", "true", "Event");
    has("deployments", "apps/v1", "true", "Deployment");
    has("replicasets", "apps/v1", "true", "ReplicaSet");
    has("statefulsets", "apps/v1", "true", "StatefulSet");
    has("daemonsets", "apps/v1", "true", "DaemonSet");
    has("jobs", "batch/v1", "true", "Job");
    has("cronjobs", "batch/v1", "true", "CronJob");
    has("ingresses", "networking.k8s.io/v1", "true", "Ingress");
    has("leases", "coordination.k8s.io/v1", "true", "Lease");
    has(
        "endpointslices",
        "discovery.k8s.io/v1",
        "true",
        "EndpointSlice",
    );
    has(
        "clusterroles",
        "rbac.authorization.k8s.io/v1",
        "false",
        "ClusterRole",
    );
    has(
        "horizontalpodautoscalers",
        "autoscaling/v2",
        "true",
        "HorizontalPodAutoscaler",
    );
    has(
        "storageclasses",
        "storage.k8s.io/v1",
        "false",
        "StorageClass",
    );
    has(
        "poddisruptionbudgets",
        "policy/v1",
        "true",
        "PodDisruptionBudget",
    );
    // Short names as upstream.
    assert_eq!(
        t.get("deployments", "SHORTNAMES").as_deref(),
        Some("deploy")
    );
    assert_eq!(t.get("services", "SHORTNAMES").as_deref(), Some("svc"));
    assert_eq!(t.get("configmaps", "SHORTNAMES").as_deref(), Some("cm"));
}

#[test]
fn short_names_and_categories_work() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("p", "busybox:stable"));
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "po", "-l", "app=p", "-o", "name"])
            .trim(),
        "pod/p"
    );
    // `kubectl get all` uses the "all" category.
    let out = s.kubectl_ok(&["get", "all", "-o", "name"]);
    assert_contains(&out, "pod/p");
    assert_contains(&out, "deployment.apps/web");
}

#[test]
fn explain_uses_openapi() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&["explain", "deployment.spec.replicas"]);
    assert_contains(&out, "GROUP:      apps");
    assert_contains(&out, "KIND:       Deployment");
    assert_contains(&out, "FIELD: replicas <integer>");
    let out = s.kubectl_ok(&["explain", "pods.spec.containers.image"]);
    assert_contains(&out, "FIELD: image <string>");
}
