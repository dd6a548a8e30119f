//! `kubectl get` output formats: table (with the upstream columns), -o yaml|json|wide|name,
//! --show-labels, -A, -l, --field-selector, chunked lists.

mod common;
use common::*;
use testkit::Table;

#[test]
fn get_yaml_and_json() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "cfg", "--from-literal=color=blue"]);
    let y = s.kubectl_ok(&["get", "cm", "cfg", "-o", "yaml"]);
    for needle in [
        "apiVersion: v1\n",
        "kind: ConfigMap\n",
        "  color: blue\n",
        "  name: cfg\n",
        "  namespace: default\n",
        "  resourceVersion: ",
        "  uid: ",
        "  creationTimestamp: ",
    ] {
        assert_contains(&y, needle);
    }
    let j = s.kubectl_json(&["get", "cm", "cfg"]);
    assert_eq!(j["apiVersion"], "v1");
    assert_eq!(j["kind"], "ConfigMap");
    assert_eq!(j["data"]["color"], "blue");
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36, "uid is a UUID: {uid}");
    let ts = j["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 20,
        "RFC3339 seconds, UTC: {ts}"
    );

    // A list is a v1 List of items.
    let l = s.kubectl_json(&["get", "cm"]);
    assert_eq!(l["kind"], "List");
    assert!(l["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["metadata"]["name"] == "cfg"));
}

#[test]
fn get_name_and_jsonpath() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "one"]);
    s.kubectl_ok(&["create", "deployment", "web", "--image=busybox:stable"]);
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "one", "-o", "name"]).trim(),
        "configmap/one"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "-o", "name"]).trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "busybox:stable"
    );
}

#[test]
fn get_table_columns_match_upstream() {
    let s = testkit::server!();
    s.kubectl_ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    s.kubectl_ok(&["create", "secret", "generic", "sec", "--from-literal=a=1"]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("p", "busybox:stable"));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );

    let t = Table::parse(&s.kubectl_ok(&["get", "cm", "cfg"]));
    assert_eq!(t.headers, ["NAME", "DATA", "AGE"]);
    assert_eq!(t.get("cfg", "DATA").as_deref(), Some("2"));

    let t = Table::parse(&s.kubectl_ok(&["get", "secret", "sec"]));
    assert_eq!(t.headers, ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(t.get("sec", "TYPE").as_deref(), Some("Opaque"));
    assert_eq!(t.get("sec", "DATA").as_deref(), Some("1"));

    let t = Table::parse(&s.kubectl_ok(&["get", "pods"]));
    assert_eq!(t.headers, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(t.get("p", "READY").as_deref(), Some("0/1"));
    assert_eq!(t.get("p", "STATUS").as_deref(), Some("Pending"));
    assert_eq!(t.get("p", "RESTARTS").as_deref(), Some("0"));

    let out = s.kubectl_ok(&["get", "svc", "web"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(t.get("web", "TYPE").as_deref(), Some("ClusterIP"));
    assert_eq!(t.get("web", "EXTERNAL-IP").as_deref(), Some("<none>"));
    assert_eq!(t.get("web", "PORT(S)").as_deref(), Some("80/TCP"));
    // A cluster IP is allocated from the service CIDR (10.43.0.0/16 by default).
    let ip = t.get("web", "CLUSTER-IP").unwrap();
    assert!(ip.starts_with("10.43."), "cluster IP {ip}");
}

#[test]
fn get_wide() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("p", "busybox:stable"));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 2, "busybox:stable"),
    );

    let out = s.kubectl_ok(&["get", "pods", "-o", "wide"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{out}"
    );
    assert_eq!(t.get("p", "IP").as_deref(), Some("<none>"));
    assert_eq!(t.get("p", "NODE").as_deref(), Some("<none>"));

    let out = s.kubectl_ok(&["get", "deploy", "-o", "wide"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{out}"
    );
    assert_eq!(t.get("web", "CONTAINERS").as_deref(), Some("web"));
    assert_eq!(t.get("web", "IMAGES").as_deref(), Some("busybox:stable"));
    assert_eq!(t.get("web", "SELECTOR").as_deref(), Some("app=web"));
}

#[test]
fn show_labels_and_label_selectors() {
    let s = testkit::server!();
    for (name, labels) in [
        ("front", "app=web,tier=front"),
        ("back", "app=web,tier=back"),
        ("db", "app=db"),
    ] {
        s.kubectl_ok(&["create", "configmap", name]);
        let mut args = vec!["label", "configmap", name];
        args.extend(labels.split(','));
        s.kubectl_ok(&args);
    }
    let out = s.kubectl_ok(&["get", "cm", "--show-labels"]);
    let t = Table::parse(&out);
    assert_eq!(t.headers, ["NAME", "DATA", "AGE", "LABELS"], "{out}");
    assert_eq!(
        t.get("front", "LABELS").as_deref(),
        Some("app=web,tier=front")
    );
    assert_eq!(t.get("db", "LABELS").as_deref(), Some("app=db"));

    let names = |sel: &str| {
        let mut v = lines(&s.kubectl_ok(&["get", "cm", "-l", sel, "-o", "name"]));
        // The namespace's root CA ConfigMap (unlabelled) matches selectors like `!tier`.
        v.retain(|n| n != "configmap/kube-root-ca.crt");
        v.sort();
        v
    };
    assert_eq!(names("app=web"), ["configmap/back", "configmap/front"]);
    assert_eq!(names("app=web,tier!=back"), ["configmap/front"]);
    assert_eq!(
        names("tier in (front,back)"),
        ["configmap/back", "configmap/front"]
    );
    assert_eq!(
        names("tier notin (front),app"),
        ["configmap/back", "configmap/db"]
    );
    assert_eq!(names("!tier"), ["configmap/db"]);
    assert_eq!(names("tier"), ["configmap/back", "configmap/front"]);

    let out = s.kubectl(&["get", "cm", "-l", "app=nothing"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found in default namespace."
    );
}

#[test]
fn field_selectors() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "a"]);
    s.kubectl_ok(&["create", "configmap", "b"]);
    let out = s.kubectl_ok(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=b",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "configmap/b");
    let out = s.kubectl_ok(&[
        "get",
        "pods",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "");
    let err = s.kubectl_err(&["get", "cm", "--field-selector", "data.x=1"]);
    // Upstream's wording for kinds that support only the metadata fields.
    assert_contains(&err, "Error from server (BadRequest)");
    assert_contains(
        &err,
        r#"field selector "data.x=1": "data.x" is not a known field selector: only "metadata.name", "metadata.namespace""#,
    );
}

#[test]
fn all_namespaces() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "other"]);
    s.kubectl_ok(&["create", "configmap", "here"]);
    s.kubectl_ok(&["create", "configmap", "there", "-n", "other"]);
    let out = s.kubectl_ok(&["get", "cm", "-A"]);
    let t = Table::parse(&out);
    assert_eq!(t.headers, ["NAMESPACE", "NAME", "DATA", "AGE"], "{out}");
    assert!(
        t.rows.iter().any(|r| r[0] == "default" && r[1] == "here"),
        "{out}"
    );
    assert!(
        t.rows.iter().any(|r| r[0] == "other" && r[1] == "there"),
        "{out}"
    );
    // Without -A only the current namespace.
    let out = s.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(
        out.contains("configmap/here") && !out.contains("configmap/there"),
        "{out}"
    );
}

#[test]
fn chunked_list_returns_everything() {
    let s = testkit::server!();
    let mut want = Vec::new();
    for i in 0..7 {
        let n = format!("c{i}");
        s.kubectl_ok(&["create", "configmap", &n]);
        want.push(format!("configmap/{n}"));
    }
    // --chunk-size makes kubectl page with limit/continue.
    let mut got = lines(&s.kubectl_ok(&["get", "cm", "--chunk-size=2", "-o", "name"]));
    got.retain(|l| l.starts_with("configmap/c"));
    assert_eq!(got, want);
    let raw = s.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=3",
    ]);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["kind"], "ConfigMapList");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert!(
        v["metadata"]["continue"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{v}"
    );
}

#[test]
fn get_several_kinds_and_nodes() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &node("worker-1"));
    let out = s.kubectl_ok(&["get", "nodes"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    // No kubelet reports a Ready condition yet.
    assert_eq!(t.get("worker-1", "STATUS").as_deref(), Some("Unknown"));
    assert_eq!(t.get("worker-1", "ROLES").as_deref(), Some("<none>"));
    let out = s.kubectl_ok(&["get", "nodes", "--show-labels"]);
    assert_contains(&out, "kubernetes.io/hostname=worker-1");
}
