//! DaemonSets driven through the real kubectl on simulated nodes: one pod per eligible
//! node, none on a tainted control-plane node unless tolerated, nodeSelector narrowing
//! the set, `kubectl get ds` columns, `kubectl rollout status`, and `set image` rolling
//! the pods with maxUnavailable 1.
//!
//! Nodes: `sim-0`, `sim-1` (plain) and `cp-0` (tainted
//! `node-role.kubernetes.io/control-plane:NoSchedule`), from two `skiff agent --simulate`
//! processes since a taint flag applies to every node of one process.

mod common;
use std::collections::BTreeMap;
use std::time::Duration;

use testkit::{eventually, Table, TestServer};

const LONG: Duration = Duration::from_secs(90);

fn daemonset(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels:
      app: {name}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: agent
        image: {image}
"#
    )
}

fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Live (not being deleted) daemon pods by node: (name, image, ready, labels).
fn pods_by_node(s: &TestServer, app: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
    let v = s.kubectl_json(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in v["items"].as_array().cloned().unwrap_or_default() {
        if !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        out.entry(node).or_default().push(p);
    }
    out
}

/// Waits until exactly `nodes` each run one Running, Ready daemon pod of `image`.
fn wait_for_coverage(s: &TestServer, app: &str, nodes: &[&str], image: &str) {
    eventually(LONG, || {
        let by_node = pods_by_node(s, app);
        let got: Vec<&str> = by_node.keys().map(String::as_str).collect();
        anyhow::ensure!(got == nodes, "pods on {got:?}, want {nodes:?}");
        for (node, pods) in &by_node {
            anyhow::ensure!(pods.len() == 1, "{} pods on {node}", pods.len());
            let p = &pods[0];
            anyhow::ensure!(
                p["spec"]["containers"][0]["image"] == image,
                "old image on {node}"
            );
            anyhow::ensure!(is_ready(p), "pod on {node} not ready");
        }
        Ok(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "daemonset {app} never covered {nodes:?}: {e:#}\n{}",
            s.log_tail(40)
        )
    });
}

fn get_ds_row(s: &TestServer, name: &str) -> BTreeMap<String, String> {
    let t = Table::parse(&s.kubectl_ok(&["get", "ds", name]));
    assert_eq!(
        t.headers,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
    t.headers
        .iter()
        .cloned()
        .zip(t.rows.first().cloned().unwrap_or_default())
        .collect()
}

fn start_nodes(s: &TestServer) -> (testkit::SimulatedNodes, testkit::SimulatedNodes) {
    let plain = testkit::simulated_nodes!(s, 2);
    let control_plane = testkit::simulated_nodes!(
        s,
        1,
        &[
            "--node-name",
            "cp",
            "--node-taint",
            "node-role.kubernetes.io/control-plane=:NoSchedule"
        ]
    );
    (plain, control_plane)
}

#[test]
fn daemonset_covers_untainted_nodes_and_rolls_an_image_with_max_unavailable_one() {
    let s = testkit::server!();
    let _nodes = start_nodes(&s);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &daemonset("agent", "nginx:1.27"));
    wait_for_coverage(&s, "agent", &["sim-0", "sim-1"], "nginx:1.27");

    let out = s.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let row = get_ds_row(&s, "agent");
    for col in ["DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE"] {
        assert_eq!(row[col], "2", "{col} in {row:?}");
    }
    assert_eq!(row["NODE SELECTOR"], "<none>");

    // Pods carry the revision labels and are pinned by matchFields, as upstream.
    let by_node = pods_by_node(&s, "agent");
    let first = &by_node["sim-0"][0];
    let hash1 = first["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .expect("controller-revision-hash label")
        .to_string();
    assert_eq!(first["metadata"]["labels"]["pod-template-generation"], "1");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let term = &first["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
        [0];
    assert_eq!(term["key"], "metadata.name");
    assert_eq!(term["values"][0], "sim-0");
    s.kubectl_ok(&["get", "controllerrevision", &format!("agent-{hash1}")]);

    // set image: never more than one node without an available pod.
    s.kubectl_ok(&["set", "image", "ds/agent", "agent=nginx:1.28"]);
    eventually(LONG, || {
        let by_node = pods_by_node(&s, "agent");
        let ready = by_node.values().flatten().filter(|p| is_ready(p)).count();
        assert!(
            ready >= 1,
            "maxUnavailable 1 of 2 broken: {ready} ready pods"
        );
        let done = by_node.len() == 2
            && by_node.values().all(|ps| {
                ps.len() == 1
                    && ps[0]["spec"]["containers"][0]["image"] == "nginx:1.28"
                    && is_ready(&ps[0])
            });
        anyhow::ensure!(done, "rollout in progress");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("rollout never finished: {e:#}\n{}", s.log_tail(40)));
    let out = s.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let by_node = pods_by_node(&s, "agent");
    let hash2 = by_node["sim-1"][0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_ne!(hash1, hash2);
    assert_eq!(
        by_node["sim-1"][0]["metadata"]["labels"]["pod-template-generation"],
        "2"
    );
    let revisions = s.kubectl_ok(&["get", "controllerrevisions", "-o", "name"]);
    assert!(revisions.contains(&format!("agent-{hash1}")), "{revisions}");
    assert!(revisions.contains(&format!("agent-{hash2}")), "{revisions}");

    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=agent",
    ]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("SuccessfulDelete"), "{events}");
}

#[test]
fn tolerations_and_node_selector_place_daemon_pods() {
    let s = testkit::server!();
    let _nodes = start_nodes(&s);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &daemonset("logs", "fluent:1"));
    wait_for_coverage(&s, "logs", &["sim-0", "sim-1"], "fluent:1");

    // Tolerating the control-plane taint adds the control-plane node.
    s.kubectl_ok(&[
        "patch",
        "ds/logs",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/tolerations","value":[{"key":"node-role.kubernetes.io/control-plane","operator":"Exists","effect":"NoSchedule"}]}]"#,
    ]);
    wait_for_coverage(&s, "logs", &["cp-0", "sim-0", "sim-1"], "fluent:1");
    s.kubectl_ok(&["rollout", "status", "ds/logs", "--timeout=90s"]);
    assert_eq!(get_ds_row(&s, "logs")["DESIRED"], "3");

    // A nodeSelector narrows it to the labelled node; the others' pods go.
    s.kubectl_ok(&["label", "node", "sim-1", "tier=edge"]);
    s.kubectl_ok(&[
        "patch",
        "ds/logs",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"tier":"edge"}}}}}"#,
    ]);
    wait_for_coverage(&s, "logs", &["sim-1"], "fluent:1");
    eventually(LONG, || {
        let row = get_ds_row(&s, "logs");
        anyhow::ensure!(row["DESIRED"] == "1" && row["AVAILABLE"] == "1", "{row:?}");
        anyhow::ensure!(row["NODE SELECTOR"] == "tier=edge", "{row:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Labelling another node extends it there.
    s.kubectl_ok(&["label", "node", "sim-0", "tier=edge"]);
    wait_for_coverage(&s, "logs", &["sim-0", "sim-1"], "fluent:1");
}
