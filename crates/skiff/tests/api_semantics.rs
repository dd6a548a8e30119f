//! API semantics users meet through kubectl and client libraries: generateName, dry-run,
//! the status subresource, deletecollection, managedFields, resourceVersion on no-op writes.

mod common;
use common::*;

#[test]
fn generate_name() {
    let s = testkit::server!();
    let m = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n";
    let a = s.kubectl_stdin_ok(&["create", "-f", "-"], m);
    let b = s.kubectl_stdin_ok(&["create", "-f", "-"], m);
    for out in [&a, &b] {
        let name = out
            .trim()
            .strip_prefix("configmap/")
            .and_then(|r| r.strip_suffix(" created"));
        let name = name.unwrap_or_else(|| panic!("unexpected output: {out}"));
        // Upstream appends 5 random characters.
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    }
    assert_ne!(a, b);
}

#[test]
fn dry_run_all_stores_nothing() {
    let s = testkit::server!();
    let (code, body) = s.https(
        "POST",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dry"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    assert!(!s.kubectl(&["get", "cm", "dry"]).status.success());
    // kubectl's server-side dry run for an update.
    s.kubectl_ok(&["create", "configmap", "real", "--from-literal=a=1"]);
    let out = s.kubectl_ok(&["label", "cm", "real", "x=y", "--dry-run=server"]);
    assert_eq!(out.trim(), "configmap/real labeled (server dry run)");
    let labels = s.kubectl_ok(&["get", "cm", "real", "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(labels, "");
    // And for a delete.
    let out = s.kubectl_ok(&["delete", "cm", "real", "--dry-run=server"]);
    assert_eq!(out.trim(), r#"configmap "real" deleted (server dry run)"#);
    s.kubectl_ok(&["get", "cm", "real"]);
}

#[test]
fn status_subresource_is_separate_from_spec() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 2, "busybox:stable"),
    );
    // Status written through /status changes status only and not generation. The
    // deployment controller also writes this status, so read what this write stored
    // from its own response.
    let d = s.kubectl_json(&[
        "patch",
        "deploy",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"readyReplicas":1},"spec":{"replicas":9}}"#,
        "-o",
        "json",
    ]);
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(d["status"]["readyReplicas"], 1);
    assert_eq!(d["spec"]["replicas"], 2, "spec is ignored on /status");
    assert_eq!(d["metadata"]["generation"], 1);
    // Status sent to the main resource is ignored (no pod is ready: there are no nodes).
    let d = s.kubectl_json(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"status":{"readyReplicas":2}}"#,
        "-o",
        "json",
    ]);
    assert_ne!(d["status"]["readyReplicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
}

#[test]
fn deletecollection_with_label_selector() {
    let s = testkit::server!();
    for (n, l) in [("a", "x=1"), ("b", "x=1"), ("c", "x=2")] {
        s.kubectl_ok(&["create", "configmap", n]);
        s.kubectl_ok(&["label", "cm", n, l]);
    }
    let (code, body) = s.https(
        "DELETE",
        "/api/v1/namespaces/default/configmaps?labelSelector=x%3D1",
        None,
    );
    assert_eq!(code, 200, "{body}");
    let out = s.kubectl_ok(&["get", "cm", "-l", "x", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/c");
}

#[test]
fn managed_fields_record_the_manager() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let cm = s.kubectl_json(&["get", "cm", "c", "--show-managed-fields"]);
    let mf = &cm["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl-create");
    assert_eq!(mf["operation"], "Update");
    assert_eq!(mf["apiVersion"], "v1");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert!(mf["fieldsV1"]["f:data"]["f:a"].is_object(), "{mf}");
    // Hidden by default, as upstream kubectl does.
    let cm = s.kubectl_json(&["get", "cm", "c"]);
    assert!(cm["metadata"].get("managedFields").is_none());
}

#[test]
fn no_op_update_keeps_resource_version() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let rv = s.kubectl_ok(&[
        "get",
        "cm",
        "c",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let out = s.kubectl_ok(&["patch", "cm", "c", "-p", r#"{"data":{"a":"1"}}"#]);
    assert_eq!(out.trim(), "configmap/c patched (no change)");
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "c",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv
    );
}

#[test]
fn update_via_put_with_resource_version() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let cm = s.kubectl_json(&["get", "cm", "c"]);
    let mut next = cm.clone();
    next["data"]["a"] = "2".into();
    let (code, body) = s.https(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        Some(&next.to_string()),
    );
    assert_eq!(code, 200, "{body}");
    // The same stale body again is a 409 Conflict.
    next["data"]["a"] = "3".into();
    let (code, body) = s.https(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        Some(&next.to_string()),
    );
    assert_eq!(code, 409, "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]),
        "2"
    );
}
