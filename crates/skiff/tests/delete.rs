//! Deleting: by name, with -f, with -l, --ignore-not-found, finalizers, preconditions.

mod common;
use common::*;
use std::time::Duration;
use testkit::eventually;

#[test]
fn delete_by_name() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "a"]);
    s.kubectl_ok(&["create", "configmap", "b"]);
    assert_eq!(
        s.kubectl_ok(&["delete", "cm", "a"]).trim(),
        r#"configmap "a" deleted"#
    );
    let out = s.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(
        !out.contains("configmap/a\n") && out.contains("configmap/b"),
        "{out}"
    );
    let err = s.kubectl_err(&["delete", "cm", "a"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): configmaps "a" not found"#
    );
    let out = s.kubectl(&["delete", "cm", "a", "--ignore-not-found"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

#[test]
fn delete_with_file() {
    let s = testkit::server!();
    let doc = format!(
        "{}---\n{}",
        configmap("cfg", "default", &[("a", "1")]),
        deployment("web", 1, "busybox:stable")
    );
    let f = s.write_file("all.yaml", &doc);
    let f = f.to_str().unwrap();
    s.kubectl_ok(&["apply", "-f", f]);
    let out = s.kubectl_ok(&["delete", "-f", f]);
    assert_eq!(
        lines(&out),
        [
            r#"configmap "cfg" deleted"#,
            r#"deployment.apps "web" deleted"#
        ]
    );
    let err = s.kubectl_err(&["get", "-f", f]);
    assert_contains(&err, r#"configmaps "cfg" not found"#);
    assert_contains(&err, r#"deployments.apps "web" not found"#);
}

#[test]
fn delete_by_label_selector() {
    let s = testkit::server!();
    for (n, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        s.kubectl_ok(&["create", "configmap", n]);
        s.kubectl_ok(&["label", "cm", n, &format!("app={app}")]);
    }
    let mut out = lines(&s.kubectl_ok(&["delete", "cm", "-l", "app=a"]));
    out.sort();
    assert_eq!(
        out,
        [r#"configmap "a1" deleted"#, r#"configmap "a2" deleted"#]
    );
    let out = s.kubectl_ok(&["get", "cm", "-l", "app", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/b1");
}

#[test]
fn delete_all_in_namespace() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "scratch"]);
    for n in ["x", "y", "z"] {
        s.kubectl_ok(&["create", "configmap", n, "-n", "scratch"]);
    }
    let mut out = lines(&s.kubectl_ok(&["delete", "cm", "--all", "-n", "scratch"]));
    out.retain(|l| !l.contains("kube-root-ca.crt"));
    assert_eq!(
        out,
        [
            r#"configmap "x" deleted"#,
            r#"configmap "y" deleted"#,
            r#"configmap "z" deleted"#
        ]
    );
    // (Upstream's root-CA publisher may re-create kube-root-ca.crt; nothing else remains.)
    let out = s.kubectl_ok(&["get", "cm", "-n", "scratch", "-o", "name"]);
    assert!(
        lines(&out)
            .iter()
            .all(|l| l == "configmap/kube-root-ca.crt"),
        "{out}"
    );
}

#[test]
fn delete_unscheduled_pod_is_immediate() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("p", "busybox:stable"));
    // A pod never bound to a node has no kubelet to wait for: it goes at once.
    let out = s.kubectl_ok(&["delete", "pod", "p", "--timeout=20s"]);
    assert_eq!(out.trim(), r#"pod "p" deleted"#);
    assert!(!s.kubectl(&["get", "pod", "p"]).status.success());
}

#[test]
fn finalizer_holds_deletion_until_removed() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [\"example.com/hold\"]\n",
    );
    let out = s.kubectl_ok(&["delete", "cm", "held", "--wait=false"]);
    assert_eq!(out.trim(), r#"configmap "held" deleted"#);
    let cm = s.kubectl_json(&["get", "cm", "held"]);
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    s.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    eventually(Duration::from_secs(10), || {
        if s.kubectl(&["get", "cm", "held"]).status.success() {
            anyhow::bail!("still there")
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn delete_with_uid_precondition() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "c"]);
    // DELETE with a wrong uid precondition is a 409 and leaves the object.
    let (code, body) = s.https(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/c",
        Some(r#"{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"00000000-0000-0000-0000-000000000000"}}"#),
    );
    assert_eq!(code, 409, "{body}");
    assert_contains(&body, "Precondition failed: UID in precondition");
    s.kubectl_ok(&["get", "cm", "c"]);
}
