//! Namespaces as a user meets them: the built-in ones, create/get/delete, and deletion that
//! cascades to everything inside (Terminating first, then gone).

mod common;
use common::*;
use std::time::Duration;
use testkit::{eventually, Table};

#[test]
fn builtin_namespaces_exist_and_are_active() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&["get", "ns"]);
    let t = Table::parse(&out);
    assert_eq!(t.headers, ["NAME", "STATUS", "AGE"], "{out}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(
            t.get(ns, "STATUS").as_deref(),
            Some("Active"),
            "{ns} in:\n{out}"
        );
    }
    // The start-up log tells the user where the kubeconfig is.
    assert_contains(&s.log(), &s.kubeconfig().display().to_string());
}

#[test]
fn create_get_delete_namespace() {
    let s = testkit::server!();
    assert_eq!(
        s.kubectl_ok(&["create", "namespace", "team-a"]).trim(),
        "namespace/team-a created"
    );
    let out = s.kubectl_ok(&["get", "ns", "team-a"]);
    assert_eq!(
        Table::parse(&out).get("team-a", "STATUS").as_deref(),
        Some("Active")
    );
    let ns = s.kubectl_json(&["get", "ns", "team-a"]);
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(ns["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(ns["metadata"]["creationTimestamp"].is_string());
    // Upstream adds the immutable name label to every namespace.
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );

    let err = s.kubectl_err(&["create", "namespace", "team-a"]);
    assert_contains(&err, r#"namespaces "team-a" already exists"#);

    assert_eq!(
        s.kubectl_ok(&["delete", "ns", "team-a", "--timeout=60s"])
            .trim(),
        r#"namespace "team-a" deleted"#
    );
    let err = s.kubectl_err(&["get", "ns", "team-a"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): namespaces "team-a" not found"#
    );
}

#[test]
fn create_namespace_from_yaml() {
    let s = testkit::server!();
    let out = s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: from-yaml\n  labels:\n    team: blue\n",
    );
    assert_eq!(out.trim(), "namespace/from-yaml created");
    let out = s.kubectl_ok(&["get", "ns", "-l", "team=blue", "-o", "name"]);
    assert_eq!(out.trim(), "namespace/from-yaml");
}

#[test]
fn builtin_namespaces_cannot_be_deleted() {
    let s = testkit::server!();
    // Upstream forbids deleting default, kube-system and kube-public.
    let err = s.kubectl_err(&["delete", "ns", "kube-system", "--wait=false"]);
    assert_contains(&err, "Forbidden");
    assert_contains(&err, "this namespace may not be deleted");
    s.kubectl_ok(&["get", "ns", "kube-system"]);
}

#[test]
fn delete_namespace_cascades_to_its_objects() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "doomed"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "doomed",
        "--from-literal=a=1",
    ]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "doomed",
        "--from-literal=a=1",
    ]);
    s.kubectl_stdin_ok(
        &["apply", "-n", "doomed", "-f", "-"],
        &deployment("web", 2, "busybox:stable"),
    );
    // A neighbour with the same names in another namespace must survive.
    s.kubectl_ok(&["create", "configmap", "c1", "--from-literal=a=1"]);
    // A finalizer holds one object, so the namespace must stay Terminating until it is released.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: doomed\n  finalizers: [\"example.com/hold\"]\ndata:\n  a: \"1\"\n",
    );

    let out = s.kubectl_ok(&["delete", "ns", "doomed", "--wait=false"]);
    assert_eq!(out.trim(), r#"namespace "doomed" deleted"#);

    let out = s.kubectl_ok(&["get", "ns", "doomed"]);
    assert_eq!(
        Table::parse(&out).get("doomed", "STATUS").as_deref(),
        Some("Terminating"),
        "{out}"
    );
    // A Terminating namespace refuses new content.
    let err = s.kubectl_err(&["create", "configmap", "late", "-n", "doomed"]);
    assert_contains(
        &err,
        r#"configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being terminated"#,
    );

    // Everything without a finalizer goes away.
    eventually(Duration::from_secs(30), || {
        let out = s.kubectl_ok(&[
            "get",
            "configmaps,secrets,deployments",
            "-n",
            "doomed",
            "-o",
            "name",
        ]);
        if out.trim() == "configmap/held" {
            Ok(())
        } else {
            anyhow::bail!("still there:\n{out}")
        }
    })
    .unwrap();
    let held = s.kubectl_json(&["get", "configmap", "held", "-n", "doomed"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(
        Table::parse(&s.kubectl_ok(&["get", "ns", "doomed"]))
            .get("doomed", "STATUS")
            .as_deref(),
        Some("Terminating")
    );

    // Release the finalizer: the object, then the namespace, disappear.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "doomed",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(Duration::from_secs(30), || {
        let out = s.kubectl(&["get", "ns", "doomed"]);
        if out.status.success() {
            anyhow::bail!("namespace still exists")
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .map(|err| assert_contains(&err, r#"namespaces "doomed" not found"#))
    .unwrap();
    // The neighbour is untouched.
    s.kubectl_ok(&["get", "configmap", "c1", "-n", "default"]);
}

#[test]
fn objects_cannot_be_created_in_a_missing_namespace() {
    let s = testkit::server!();
    let err = s.kubectl_err(&[
        "create",
        "configmap",
        "x",
        "-n",
        "nope",
        "--from-literal=a=b",
    ]);
    assert_contains(&err, r#"namespaces "nope" not found"#);
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        &configmap("x", "nope", &[("a", "b")]),
    );
    assert_contains(&err, "Error from server (NotFound)");
    assert_contains(&err, r#"namespaces "nope" not found"#);
}
