//! Imperative commands: create deployment|configmap|secret|namespace, run (client and server
//! dry-run, and for real), expose.

mod common;
use common::*;

#[test]
fn create_deployment() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:stable",
        "--replicas=2",
    ]);
    assert_eq!(out.trim(), "deployment.apps/web created");
    let d = s.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["name"],
        "busybox"
    );
    let err = s.kubectl_err(&["create", "deployment", "web", "--image=busybox:stable"]);
    assert_contains(&err, r#"deployments.apps "web" already exists"#);
}

#[test]
fn create_configmap_from_literal() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two words",
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let cm = s.kubectl_json(&["get", "cm", "cfg"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two words"}));
}

#[test]
fn create_secret_generic_from_literal() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ]);
    assert_eq!(out.trim(), "secret/creds created");
    let sec = s.kubectl_json(&["get", "secret", "creds"]);
    assert_eq!(sec["type"], "Opaque");
    assert_eq!(sec["data"]["password"], "aHVudGVyMg==");
    // stringData is folded into data by the server.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sd\nstringData:\n  token: abc\n",
    );
    let sec = s.kubectl_json(&["get", "secret", "sd"]);
    assert_eq!(sec["data"]["token"], "YWJj");
    assert!(sec.get("stringData").is_none(), "{sec}");
}

#[test]
fn create_namespace_and_use_it() {
    let s = testkit::server!();
    assert_eq!(
        s.kubectl_ok(&["create", "namespace", "apps"]).trim(),
        "namespace/apps created"
    );
    s.kubectl_ok(&["create", "configmap", "x", "-n", "apps"]);
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "x", "-n", "apps", "-o", "name"])
            .trim(),
        "configmap/x"
    );
}

#[test]
fn run_dry_run_client() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "run",
        "hello",
        "--image=busybox:stable",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    assert_contains(&out, "kind: Pod");
    assert_contains(&out, "run: hello");
    assert_contains(&out, "image: busybox:stable");
    let err = s.kubectl_err(&["get", "pod", "hello"]);
    assert_contains(&err, r#"pods "hello" not found"#);
}

#[test]
fn run_dry_run_server() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "run",
        "hello",
        "--image=busybox:stable",
        "--dry-run=server",
        "-o",
        "yaml",
    ]);
    // The server defaults the pod but does not store it.
    assert_contains(&out, "kind: Pod");
    assert_contains(&out, "restartPolicy: Always");
    assert_contains(&out, "dnsPolicy: ClusterFirst");
    assert_contains(&out, "terminationGracePeriodSeconds: 30");
    assert_contains(&out, "imagePullPolicy: IfNotPresent");
    let err = s.kubectl_err(&["get", "pod", "hello"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): pods "hello" not found"#
    );
    let out = s.kubectl_ok(&["run", "hello", "--image=busybox:stable", "--dry-run=server"]);
    assert_eq!(out.trim(), "pod/hello created (server dry run)");
    // A server dry run still validates.
    let err = s.kubectl_err(&[
        "run",
        "Bad_Name",
        "--image=busybox:stable",
        "--dry-run=server",
    ]);
    assert_contains(&err, "Invalid value: \"Bad_Name\"");
}

#[test]
fn run_creates_a_pod() {
    let s = testkit::server!();
    let out = s.kubectl_ok(&[
        "run",
        "hello",
        "--image=busybox:stable",
        "--labels=tier=x",
        "--",
        "sleep",
        "60",
    ]);
    assert_eq!(out.trim(), "pod/hello created");
    let p = s.kubectl_json(&["get", "pod", "hello"]);
    assert_eq!(p["metadata"]["labels"]["tier"], "x");
    assert_eq!(
        p["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "60"])
    );
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn expose_deployment() {
    let s = testkit::server!();
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:stable",
        "--port=8080",
    ]);
    let out = s.kubectl_ok(&["expose", "deploy", "web", "--port=80", "--target-port=8080"]);
    assert_eq!(out.trim(), "service/web exposed");
    let svc = s.kubectl_json(&["get", "svc", "web"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"], serde_json::json!({"app": "web"}));
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
    assert!(ip.starts_with("10.43."), "clusterIP {ip}");
    assert_eq!(svc["spec"]["clusterIPs"][0].as_str(), Some(ip));
    // Exposing again: the name is taken.
    let err = s.kubectl_err(&["expose", "deploy", "web", "--port=80"]);
    assert_contains(&err, r#"services "web" already exists"#);
}

#[test]
fn cluster_ips_are_unique() {
    let s = testkit::server!();
    let mut ips = std::collections::HashSet::new();
    for i in 0..5 {
        let n = format!("svc{i}");
        s.kubectl_ok(&["create", "service", "clusterip", &n, "--tcp=80:8080"]);
        let ip = s.kubectl_ok(&["get", "svc", &n, "-o", "jsonpath={.spec.clusterIP}"]);
        assert!(ips.insert(ip.clone()), "duplicate cluster IP {ip}");
    }
    // A headless service keeps "None".
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ]);
    assert_eq!(
        s.kubectl_ok(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]),
        "None"
    );
}
