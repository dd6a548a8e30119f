//! `kubectl apply`: a file, a multi-document file, a directory, stdin; created / unchanged /
//! configured; server-side apply.

mod common;
use common::*;
use testkit::Table;

#[test]
fn apply_file_then_unchanged_then_configured() {
    let s = testkit::server!();
    let f = s.write_file("web.yaml", &deployment("web", 2, "busybox:stable"));
    let f = f.to_str().unwrap();

    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f]).trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f]).trim(),
        "deployment.apps/web unchanged"
    );

    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    // Defaulting as upstream: RollingUpdate 25%/25%.
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    let rv1 = d["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    s.write_file("web.yaml", &deployment("web", 4, "busybox:stable"));
    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f]).trim(),
        "deployment.apps/web configured"
    );
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    assert_ne!(d["metadata"]["resourceVersion"].as_str().unwrap(), rv1);

    // The last-applied configuration is what the user applied.
    let last = s.kubectl_ok(&["apply", "view-last-applied", "deploy/web", "-o", "json"]);
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["spec"]["replicas"], 4);
}

#[test]
fn apply_removes_fields_dropped_from_the_manifest() {
    let s = testkit::server!();
    let f = s.write_file(
        "cm.yaml",
        &configmap("settings", "default", &[("a", "1"), ("b", "2")]),
    );
    let f = f.to_str().unwrap();
    s.kubectl_ok(&["apply", "-f", f]);
    s.write_file("cm.yaml", &configmap("settings", "default", &[("a", "1")]));
    assert_eq!(
        s.kubectl_ok(&["apply", "-f", f]).trim(),
        "configmap/settings configured"
    );
    let cm = s.kubectl_json(&["get", "cm", "settings"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1"}));
}

#[test]
fn apply_multi_document_file() {
    let s = testkit::server!();
    let doc = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n",
        configmap("web-config", "default", &[("mode", "fast")]),
        deployment("web", 1, "busybox:stable"),
    );
    let f = s.write_file("all.yaml", &doc);
    let out = s.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        lines(&out),
        [
            "configmap/web-config created",
            "deployment.apps/web created",
            "service/web created"
        ]
    );
    let out = s.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        lines(&out),
        [
            "configmap/web-config unchanged",
            "deployment.apps/web unchanged",
            "service/web unchanged"
        ]
    );
    let out = s.kubectl_ok(&["get", "cm,deploy,svc", "-o", "name"]);
    for n in ["configmap/web-config", "deployment.apps/web", "service/web"] {
        assert!(
            lines(&out).contains(&n.to_string()),
            "{n} missing in:\n{out}"
        );
    }
}

#[test]
fn apply_directory() {
    let s = testkit::server!();
    s.write_file(
        "dir/a-config.yaml",
        &configmap("a", "default", &[("x", "1")]),
    );
    s.write_file("dir/b-pod.yaml", &pod("b", "busybox:stable"));
    s.write_file("dir/c-deploy.json", &serde_json::to_string_pretty(&serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "c"},
        "spec": {"selector": {"matchLabels": {"app": "c"}},
                 "template": {"metadata": {"labels": {"app": "c"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:stable"}]}}}
    })).unwrap());
    s.write_file("dir/notes.txt", "not a manifest, kubectl skips it\n");
    let dir = s
        .write_file("dir/.keep", "")
        .parent()
        .unwrap()
        .to_path_buf();
    let out = s.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(
        lines(&out),
        [
            "configmap/a created",
            "pod/b created",
            "deployment.apps/c created"
        ]
    );
}

#[test]
fn apply_from_stdin_into_a_namespace() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "team"]);
    let out = s.kubectl_stdin_ok(
        &["apply", "-n", "team", "-f", "-"],
        &pod("hello", "busybox:stable"),
    );
    assert_eq!(out.trim(), "pod/hello created");
    let p = s.kubectl_json(&["get", "pod", "hello", "-n", "team"]);
    assert_eq!(p["metadata"]["namespace"], "team");
    // Pod defaulting as upstream.
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        p["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn apply_examples_directory() {
    let s = testkit::server!();
    let dir = examples_dir();
    let out = s.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    for kind in [
        "pod/",
        "replicaset.apps/",
        "deployment.apps/",
        "service/",
        "configmap/",
        "secret/",
        "ingress.networking.k8s.io/",
        "job.batch/",
        "cronjob.batch/",
        "daemonset.apps/",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(kind) && l.ends_with(" created")),
            "no `{kind}... created` line in:\n{out}"
        );
    }
    // Applying again changes nothing. The one exception is upstream's too: a Secret written
    // with stringData is always "configured" (kubernetes/kubernetes#87736), because the
    // server folds stringData into data and the client-side 3-way diff sees it missing.
    let out = s.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    for l in lines(&out) {
        if l.starts_with("secret/") {
            assert_eq!(l, "secret/web-credentials configured");
        } else {
            assert!(
                l.ends_with(" unchanged"),
                "second apply of examples/: {l}\n{out}"
            );
        }
    }
    let out = s.kubectl_ok(&["get", "deploy,rs,ds,job,cronjob,svc,ing", "-o", "name"]);
    assert!(out.contains("deployment.apps/"), "{out}");
}

#[test]
fn server_side_apply() {
    let s = testkit::server!();
    let f = s.write_file("web.yaml", &deployment("web", 2, "busybox:stable"));
    let f = f.to_str().unwrap();
    assert_eq!(
        s.kubectl_ok(&["apply", "--server-side", "-f", f]).trim(),
        "deployment.apps/web serverside-applied"
    );
    let d = s.kubectl_json(&["get", "deploy", "web", "--show-managed-fields"]);
    let managers: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    assert_eq!(d["metadata"]["managedFields"][0]["operation"], "Apply");

    // Another manager changing a field kubectl owns is a conflict...
    let err = s.kubectl_err(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        s.write_file("web2.yaml", &deployment("web", 3, "busybox:stable"))
            .to_str()
            .unwrap(),
    ]);
    assert_contains(&err, "conflict");
    assert_contains(&err, ".spec.replicas");
    // ... unless it forces.
    s.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=other",
        "-f",
        s.write_file("web3.yaml", &deployment("web", 3, "busybox:stable"))
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(
        s.kubectl_json(&["get", "deploy", "web"])["spec"]["replicas"],
        3
    );
}

#[test]
fn apply_shows_in_get_table() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 3, "busybox:stable"),
    );
    let out = s.kubectl_ok(&["get", "deploy"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    // No controllers yet: nothing is ready, but the desired count is shown.
    assert_eq!(t.get("web", "READY").as_deref(), Some("0/3"));
}
