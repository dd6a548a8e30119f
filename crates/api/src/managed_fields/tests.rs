use serde_json::{json, Value};

use super::*;
use crate::registry::lookup;

const T1: &str = "2026-01-01T00:00:00Z";
const T2: &str = "2026-01-01T00:01:00Z";
const T3: &str = "2026-01-01T00:02:00Z";

fn deployments() -> &'static ResourceInfo {
    lookup("apps", "v1", "deployments").expect("deployments are served")
}

fn configmaps() -> &'static ResourceInfo {
    lookup("", "v1", "configmaps").expect("configmaps are served")
}

fn entries(obj: &Value) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(list: &'a [Value], manager: &str, operation: &str) -> Option<&'a Value> {
    list.iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owns(obj: &Value, manager: &str, operation: &str, path: &[PathElement]) -> bool {
    let list = entries(obj);
    match entry(&list, manager, operation) {
        Some(e) => from_fields_v1(&e["fieldsV1"])
            .map(|s| s.has(path))
            .unwrap_or(false),
        None => false,
    }
}

fn f(name: &str) -> PathElement {
    PathElement::Field(name.into())
}

fn key(name: &str, v: &str) -> PathElement {
    PathElement::Key(vec![(name.into(), Value::String(v.into()))])
}

fn replicas() -> Vec<PathElement> {
    vec![f("spec"), f("replicas")]
}

/// What `kubectl apply` (client-side) sends for a small Deployment, after defaulting.
fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {}
                    }]
                }
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
            }
        }
    })
}

/// A server-side apply configuration of a Deployment.
fn applied(replicas: i64, labels: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

#[test]
fn fields_v1_of_a_created_deployment_has_upstreams_shape() {
    let mut obj = deployment();
    record_update(
        deployments(),
        None,
        &mut obj,
        "kubectl-client-side-apply",
        None,
        T1,
    );
    let list = entries(&obj);
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!(e["manager"], "kubectl-client-side-apply");
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e.get("subresource").is_none());
    // Key order and `.` placement exactly as kube-apiserver serializes fieldsV1.
    let expected = concat!(
        r#"{"f:metadata":{"f:annotations":{"f:kubectl.kubernetes.io/last-applied-configuration":{},".":{}},"#,
        r#""f:labels":{"f:app":{},".":{}}},"#,
        r#""f:spec":{"f:replicas":{},"f:selector":{},"#,
        r#""f:strategy":{"f:rollingUpdate":{"f:maxSurge":{},"f:maxUnavailable":{},".":{}},"f:type":{}},"#,
        r#""f:template":{"f:metadata":{"f:labels":{"f:app":{},".":{}}},"#,
        r#""f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:image":{},"f:name":{},"#,
        r#""f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{"f:containerPort":{},"f:protocol":{},".":{}},".":{}},"#,
        r#""f:resources":{},".":{}}}}}}}"#
    );
    assert_eq!(e["fieldsV1"].to_string(), expected);
    // And it reads back to the same set.
    let set = from_fields_v1(&e["fieldsV1"]).unwrap();
    assert_eq!(to_fields_v1(&set).to_string(), expected);
}

#[test]
fn path_elements_serialize_like_upstream() {
    let cases: Vec<(PathElement, &str, &str)> = vec![
        (f("replicas"), "f:replicas", ".replicas"),
        (key("name", "web"), r#"k:{"name":"web"}"#, r#"[name="web"]"#),
        (
            PathElement::Key(vec![
                ("containerPort".into(), json!(80)),
                ("protocol".into(), json!("TCP")),
            ]),
            r#"k:{"containerPort":80,"protocol":"TCP"}"#,
            r#"[containerPort=80,protocol="TCP"]"#,
        ),
        (
            PathElement::Value(json!("a<b")),
            r#"v:"a\u003cb""#,
            r#"[="a<b"]"#,
        ),
        (PathElement::Index(3), "i:3", "[3]"),
    ];
    for (pe, ser, display) in cases {
        assert_eq!(pe.serialize(), ser);
        assert_eq!(pe.to_string(), display);
        assert_eq!(PathElement::deserialize(ser).unwrap(), Some(pe));
    }
    assert_eq!(PathElement::deserialize("z:whatever").unwrap(), None);
    assert!(PathElement::deserialize("fx").is_err());
    assert!(from_fields_v1(&json!({"f:a": 1})).is_err());
}

#[test]
fn fields_of_an_applied_configuration() {
    let cfg = applied(
        2,
        json!({"app": "web"}),
        json!([{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]),
    );
    let set = fields_of(deployments(), &cfg);
    let expected = concat!(
        r#"{"f:metadata":{"f:labels":{"f:app":{}}},"#,
        r#""f:spec":{"f:replicas":{},"f:selector":{},"#,
        r#""f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"#,
        r#""f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:image":{},"f:name":{},"#,
        // The port's protocol key is filled from its schema default.
        r#""f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{"f:containerPort":{},".":{}}},".":{}}}}}}}"#
    );
    assert_eq!(to_fields_v1(&set).to_string(), expected);

    // Sets are identified by value, atomic lists and maps are leaves.
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "finalizers": ["a", "b"]},
        "data": {"k": "v"}
    });
    let set = fields_of(configmaps(), &cm);
    assert_eq!(
        to_fields_v1(&set).to_string(),
        r#"{"f:data":{"f:k":{}},"f:metadata":{"f:finalizers":{"v:\"a\"":{},"v:\"b\"":{}}}}"#
    );
}

#[test]
fn an_update_moves_ownership_of_the_fields_it_changes() {
    let info = deployments();
    let mut created = deployment();
    record_update(
        info,
        None,
        &mut created,
        "kubectl-client-side-apply",
        None,
        T1,
    );

    // `kubectl edit` changes replicas and adds a label; everything else stays put.
    let mut edited = created.clone();
    edited["spec"]["replicas"] = json!(3);
    edited["metadata"]["labels"]["tier"] = json!("front");
    edited["metadata"]["resourceVersion"] = json!("42");
    record_update(info, Some(&created), &mut edited, "kubectl-edit", None, T2);

    let csa = "kubectl-client-side-apply";
    assert!(owns(&edited, "kubectl-edit", "Update", &replicas()));
    assert!(!owns(&edited, csa, "Update", &replicas()));
    assert!(owns(
        &edited,
        "kubectl-edit",
        "Update",
        &[f("metadata"), f("labels"), f("tier")]
    ));
    assert!(owns(&edited, csa, "Update", &[f("spec"), f("selector")]));
    assert!(!owns(
        &edited,
        "kubectl-edit",
        "Update",
        &[f("metadata"), f("resourceVersion")]
    ));
    let list = entries(&edited);
    assert_eq!(list.len(), 2);
    // Ordered by time: the older entry first.
    assert_eq!(list[0]["manager"], csa);
    assert_eq!(list[0]["time"], T1);
    assert_eq!(list[1]["manager"], "kubectl-edit");
    assert_eq!(list[1]["time"], T2);

    // A write that changes nothing keeps everything, time included.
    let mut same = edited.clone();
    record_update(info, Some(&edited), &mut same, "kubectl-edit", None, T3);
    assert_eq!(entries(&same), entries(&edited));

    // Removing a field takes it from its owner; an entry left empty disappears.
    let mut removed = edited.clone();
    removed["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .shift_remove("tier");
    removed["spec"]["replicas"] = json!(1);
    record_update(info, Some(&edited), &mut removed, "other", None, T3);
    assert!(!owns(
        &removed,
        "kubectl-edit",
        "Update",
        &[f("metadata"), f("labels"), f("tier")]
    ));
    assert!(owns(&removed, "other", "Update", &replicas()));
    assert!(entry(&entries(&removed), "kubectl-edit", "Update").is_none());
}

#[test]
fn subresources_and_status_are_tracked_apart() {
    let info = deployments();
    let mut created = deployment();
    record_update(info, None, &mut created, "kubectl-create", None, T1);

    // The main resource does not own status.
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 1});
    record_update(
        info,
        Some(&created),
        &mut with_status,
        "kubectl-edit",
        None,
        T2,
    );
    assert!(entry(&entries(&with_status), "kubectl-edit", "Update").is_none());

    // The status subresource does.
    let mut status = with_status.clone();
    status["status"]["readyReplicas"] = json!(1);
    record_update(
        info,
        Some(&with_status),
        &mut status,
        "kube-controller-manager",
        Some("status"),
        T2,
    );
    let list = entries(&status);
    let e = entry(&list, "kube-controller-manager", "Update").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"].to_string(),
        r#"{"f:status":{"f:readyReplicas":{}}}"#
    );

    // `kubectl scale` writes through /scale.
    let mut scaled = status.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update(
        info,
        Some(&status),
        &mut scaled,
        "kubectl",
        Some("scale"),
        T3,
    );
    let list = entries(&scaled);
    let e = entry(&list, "kubectl", "Update").unwrap();
    assert_eq!(e["subresource"], "scale");
    assert_eq!(e["fieldsV1"].to_string(), r#"{"f:spec":{"f:replicas":{}}}"#);
    assert!(!owns(&scaled, "kubectl-create", "Update", &replicas()));
}

#[test]
fn clients_may_rewrite_or_clear_managed_fields() {
    let info = configmaps();
    let mut created = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    record_update(info, None, &mut created, "kubectl-create", None, T1);
    assert_eq!(
        entries(&created)[0]["fieldsV1"].to_string(),
        r#"{"f:data":{"f:a":{},".":{}}}"#
    );

    // `[{}]` strips managedFields entirely.
    let mut cleared = created.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    record_update(info, Some(&created), &mut cleared, "x", None, T2);
    assert!(cleared["metadata"].get("managedFields").is_none());

    // A request without managedFields keeps the live ones.
    let mut kept = created.clone();
    kept["metadata"]
        .as_object_mut()
        .unwrap()
        .shift_remove("managedFields");
    kept["data"]["b"] = json!("2");
    record_update(info, Some(&created), &mut kept, "kubectl-edit", None, T2);
    assert!(owns(
        &kept,
        "kubectl-create",
        "Update",
        &[f("data"), f("a")]
    ));
    assert!(owns(&kept, "kubectl-edit", "Update", &[f("data"), f("b")]));
}

#[test]
fn apply_creates_and_reapply_prunes_what_was_dropped() {
    let info = deployments();
    let cfg = applied(
        2,
        json!({"app": "web", "tier": "front"}),
        json!([{"name": "nginx", "image": "nginx:1"}]),
    );
    let created = apply(info, None, &cfg, "kubectl", false, T1).unwrap();
    assert_eq!(created["spec"]["replicas"], 2);
    assert_eq!(created["metadata"]["labels"]["tier"], "front");
    let list = entries(&created);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["operation"], "Apply");
    assert_eq!(list[0]["manager"], "kubectl");
    assert_eq!(list[0]["apiVersion"], "apps/v1");
    assert_eq!(list[0]["time"], T1);
    assert_eq!(list[0]["fieldsV1"], to_fields_v1(&fields_of(info, &cfg)));

    // Re-apply without the label: it is removed from the object.
    let cfg2 = applied(
        2,
        json!({"app": "web"}),
        json!([{"name": "nginx", "image": "nginx:1"}]),
    );
    let reapplied = apply(info, Some(&created), &cfg2, "kubectl", false, T2).unwrap();
    assert_eq!(reapplied["metadata"]["labels"], json!({"app": "web"}));
    assert!(!owns(
        &reapplied,
        "kubectl",
        "Apply",
        &[f("metadata"), f("labels"), f("tier")]
    ));

    // Re-applying the same configuration changes nothing, not even the time.
    let again = apply(info, Some(&reapplied), &cfg2, "kubectl", false, T3).unwrap();
    assert_eq!(again, reapplied);

    // A field another manager also owns survives the applier dropping it.
    let mut edited = reapplied.clone();
    edited["metadata"]["labels"]["team"] = json!("a");
    record_update(
        info,
        Some(&reapplied),
        &mut edited,
        "kubectl-label",
        None,
        T2,
    );
    let cfg3 = applied(
        2,
        json!({"app": "web", "team": "a"}),
        json!([{"name": "nginx", "image": "nginx:1"}]),
    );
    let shared = apply(info, Some(&edited), &cfg3, "kubectl", false, T3).unwrap();
    assert!(owns(
        &shared,
        "kubectl-label",
        "Update",
        &[f("metadata"), f("labels"), f("team")]
    ));
    let dropped = apply(info, Some(&shared), &cfg2, "kubectl", false, T3).unwrap();
    assert_eq!(dropped["metadata"]["labels"]["team"], "a");
}

#[test]
fn conflicts_are_reported_exactly_and_force_takes_ownership() {
    let info = deployments();
    let containers = json!([{"name": "nginx", "image": "nginx:1"}]);
    let live = apply(
        info,
        None,
        &applied(2, json!({"app": "web"}), containers.clone()),
        "alice",
        false,
        T1,
    )
    .unwrap();

    // Another applier sets replicas to a different value.
    let bob = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3}
    });
    let err = apply(info, Some(&live), &bob, "bob", false, T2).unwrap_err();
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "alice": .spec.replicas"#
    );
    assert_eq!(
        err.causes(),
        vec![ConflictCause {
            reason: "FieldManagerConflict",
            message: r#"conflict with "alice""#.into(),
            field: ".spec.replicas".into(),
        }]
    );
    let status = err.status();
    assert_eq!(status["code"], 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );

    // With force, bob takes replicas; alice keeps the rest.
    let forced = apply(info, Some(&live), &bob, "bob", true, T2).unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(owns(&forced, "bob", "Apply", &replicas()));
    assert!(!owns(&forced, "alice", "Apply", &replicas()));
    assert!(owns(&forced, "alice", "Apply", &[f("spec"), f("selector")]));

    // The same value is shared, not a conflict.
    let carol = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2}
    });
    let shared = apply(info, Some(&live), &carol, "carol", false, T2).unwrap();
    assert!(owns(&shared, "carol", "Apply", &replicas()));
    assert!(owns(&shared, "alice", "Apply", &replicas()));
    // ... and a shared field survives one of its owners dropping it.
    let alice_without = applied(2, json!({"app": "web"}), containers.clone());
    let mut alice_without = alice_without;
    alice_without["spec"]
        .as_object_mut()
        .unwrap()
        .shift_remove("replicas");
    let after = apply(info, Some(&shared), &alice_without, "alice", false, T3).unwrap();
    assert_eq!(after["spec"]["replicas"], 2);
}

#[test]
fn conflicts_with_updaters_name_their_api_version_and_group_by_manager() {
    let info = deployments();
    let mut live = deployment();
    record_update(info, None, &mut live, "kubectl-client-side-apply", None, T1);

    let cfg = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 5}
    });
    let err = apply(info, Some(&live), &cfg, "kubectl", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#
    );
    assert_eq!(
        err.causes()[0].message,
        r#"conflict with "kubectl-client-side-apply" using apps/v1"#
    );

    // Several fields, several managers.
    let mut edited = live.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    record_update(info, Some(&live), &mut edited, "kubectl-edit", None, T2);
    let cfg = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "other"}},
        "spec": {
            "replicas": 5,
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:3"}]}}
        }
    });
    let err = apply(info, Some(&edited), &cfg, "kubectl", false, T3).unwrap_err();
    assert_eq!(
        err.message(),
        concat!(
            "Apply failed with 3 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n",
            "- .metadata.labels.app\n",
            "- .spec.replicas\n",
            "conflicts with \"kubectl-edit\" using apps/v1:\n",
            "- .spec.template.spec.containers[name=\"nginx\"].image"
        )
    );
    assert_eq!(err.causes().len(), 3);
    assert_eq!(err.conflicts[2].manager, "kubectl-edit");
    assert_eq!(err.conflicts[2].operation, "Update");
    assert_eq!(err.conflicts[2].api_version, "apps/v1");
}

#[test]
fn containers_are_merged_by_name_across_managers() {
    let info = deployments();
    let base = applied(
        1,
        json!({"app": "web"}),
        json!([{"name": "app", "image": "app:1"}]),
    );
    let live = apply(info, None, &base, "alice", false, T1).unwrap();

    // Bob adds a sidecar by applying only that container.
    let sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "proxy:1"}]}}}
    });
    let both = apply(info, Some(&live), &sidecar, "bob", false, T2).unwrap();
    let names: Vec<&str> = both["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, vec!["app", "proxy"]);
    let containers = [f("spec"), f("template"), f("spec"), f("containers")];
    let mut proxy = containers.to_vec();
    proxy.push(key("name", "proxy"));
    assert!(owns(&both, "bob", "Apply", &proxy));
    let mut app = containers.to_vec();
    app.push(key("name", "app"));
    assert!(owns(&both, "alice", "Apply", &app));

    // Alice re-applies her configuration with a new image: bob's container stays.
    let base2 = applied(
        1,
        json!({"app": "web"}),
        json!([{"name": "app", "image": "app:2"}]),
    );
    let updated = apply(info, Some(&both), &base2, "alice", false, T3).unwrap();
    let list = updated["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["image"], "app:2");
    assert_eq!(list[1]["name"], "proxy");

    // Bob drops his sidecar: only his container goes.
    let no_sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}
    });
    let pruned = apply(info, Some(&updated), &no_sidecar, "bob", false, T3).unwrap();
    let list = pruned["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "app");
}

#[test]
fn an_object_without_managed_fields_gets_a_before_first_apply_owner() {
    let info = configmaps();
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}});
    let err = apply(info, Some(&live), &cfg, "kubectl", false, T1).unwrap_err();
    assert_eq!(
        err.message(),
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.a"#
    );
}

#[test]
fn update_managers_are_capped_like_upstream() {
    let info = configmaps();
    let mut obj =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
    for i in 0..12 {
        let old = obj.clone();
        obj["data"][format!("k{i}")] = json!("v");
        let t = format!("2026-01-01T00:00:{i:02}Z");
        record_update(info, Some(&old), &mut obj, &format!("m{i:02}"), None, &t);
    }
    let list = entries(&obj);
    assert_eq!(list.len(), 10);
    let ancient = entry(&list, "ancient-changes", "Update").unwrap();
    let set = from_fields_v1(&ancient["fieldsV1"]).unwrap();
    assert!(set.has(&[f("data"), f("k0")]));
    assert!(set.has(&[f("data"), f("k2")]));
}

#[test]
fn field_manager_defaults_from_the_user_agent() {
    let cases = [
        (
            Some("kubectl-edit"),
            Some("kubectl/v1.32.0"),
            "kubectl-edit",
        ),
        (
            None,
            Some("kubectl/v1.32.0 (linux/amd64) kubernetes/abc"),
            "kubectl",
        ),
        (Some(""), Some("Go-http-client/1.1"), "Go-http-client"),
        (
            None,
            Some("OpenAPI-Generator/31.0.0/python"),
            "OpenAPI-Generator",
        ),
        (None, None, ""),
    ];
    for (q, ua, want) in cases {
        assert_eq!(field_manager(q, ua), want, "{q:?} {ua:?}");
    }
    assert_eq!(field_manager(None, Some(&"x".repeat(300))).len(), 128);
}

#[test]
fn set_operations() {
    let mut a = FieldSet::new();
    a.insert(&[f("a"), f("b")]);
    a.insert(&[f("a")]);
    a.insert(&[f("c")]);
    let mut b = FieldSet::new();
    b.insert(&[f("a"), f("b")]);
    let i = a.intersection(&b);
    assert_eq!(i, b);
    let mut d = a.clone();
    d.subtract(&b);
    assert!(d.has(&[f("a")]));
    assert!(!d.has(&[f("a"), f("b")]));
    assert!(a.has_below(&[f("a")]));
    assert!(!d.has_below(&[f("a")]));
    assert_eq!(a.len(), 3);
    let paths: Vec<String> = a.paths().iter().map(|p| p.to_string()).collect();
    assert_eq!(paths, vec![".a", ".c", ".a.b"]);
}

#[test]
fn null_system_metadata_in_a_manifest_keeps_the_live_values() {
    let info = configmaps();
    let live = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "7"},
        "data": {"a": "1"}
    });
    let mut live_tracked = live.clone();
    record_update(info, None, &mut live_tracked, "kubectl-create", None, T1);
    let cfg = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "creationTimestamp": null},
        "data": {"a": "1", "b": "2"}
    });
    let out = apply(info, Some(&live_tracked), &cfg, "kubectl", false, T2).unwrap();
    assert_eq!(out["metadata"]["creationTimestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(out["metadata"]["uid"], "u-1");
    assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    // Shared ownership of the unchanged key, sole ownership of the new one.
    assert!(owns(&out, "kubectl-create", "Update", &[f("data"), f("a")]));
    assert!(owns(&out, "kubectl", "Apply", &[f("data"), f("a")]));
    assert!(owns(&out, "kubectl", "Apply", &[f("data"), f("b")]));
    assert_eq!(
        entry(&entries(&out), "kubectl", "Apply").unwrap()["fieldsV1"].to_string(),
        r#"{"f:data":{"f:a":{},"f:b":{}}}"#
    );
}
