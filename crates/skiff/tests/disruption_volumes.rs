//! PodDisruptionBudgets and local-path volumes through the real kubectl, on simulated
//! nodes: the disruption controller's status as `kubectl get pdb` shows it, `kubectl
//! drain` held back by the budget until the ReplicaSet's replacement is Ready elsewhere,
//! and PersistentVolumeClaims of the `local-path` StorageClass bound once a pod uses them.

mod common;
use std::time::Duration;

use testkit::{eventually, Table, TestServer};

const LONG: Duration = Duration::from_secs(90);

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#;

const PDB: &str = r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web-pdb
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app: web
"#;

/// (name, node, ready) of the live (not terminating) pods labelled app=web.
fn web_pods(s: &TestServer) -> Vec<(String, String, bool)> {
    let v = s.kubectl_json(&["get", "pods", "-l", "app=web", "-o", "json"]);
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ready,
            )
        })
        .collect()
}

fn pdb_row(s: &TestServer) -> (Vec<String>, Vec<String>) {
    let t = Table::parse(&s.kubectl_ok(&["get", "pdb", "web-pdb"]));
    (
        t.headers.clone(),
        t.rows.first().cloned().unwrap_or_default(),
    )
}

#[test]
fn pdb_status_and_drain_respect_the_budget() {
    let s = testkit::server!();
    // Two nodes for three replicas: one node carries two of the pods.
    let _nodes = testkit::simulated_nodes!(&s, 2);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], DEPLOYMENT);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], PDB);

    eventually(LONG, || {
        let pods = web_pods(&s);
        anyhow::ensure!(
            pods.len() == 3 && pods.iter().all(|p| p.2),
            "pods not ready: {pods:?}"
        );
        Ok(())
    })
    .expect("three ready pods");

    eventually(LONG, || {
        let (headers, row) = pdb_row(&s);
        assert_eq!(
            headers,
            [
                "NAME",
                "MIN AVAILABLE",
                "MAX UNAVAILABLE",
                "ALLOWED DISRUPTIONS",
                "AGE"
            ]
        );
        anyhow::ensure!(row[1..4] == ["2", "N/A", "1"], "pdb row {row:?}");
        Ok(())
    })
    .expect("pdb shows one allowed disruption");
    let status = s.kubectl_json(&["get", "pdb", "web-pdb", "-o", "json"])["status"].clone();
    assert_eq!(status["expectedPods"], 3, "{status}");
    assert_eq!(status["currentHealthy"], 3, "{status}");
    assert_eq!(status["desiredHealthy"], 2, "{status}");
    assert_eq!(status["disruptionsAllowed"], 1, "{status}");
    assert_eq!(status["observedGeneration"], 1, "{status}");
    let cond = &status["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &"DisruptionAllowed".into(),
            &"True".into(),
            &"SufficientPods".into()
        ),
        "{status}"
    );

    // The node with two of the pods.
    let pods = web_pods(&s);
    let busy = ["sim-0", "sim-1"]
        .into_iter()
        .find(|n| pods.iter().filter(|p| p.1 == *n).count() == 2)
        .expect("one node has two pods")
        .to_string();
    let other = if busy == "sim-0" { "sim-1" } else { "sim-0" };
    let on_busy: Vec<String> = pods
        .iter()
        .filter(|p| p.1 == busy)
        .map(|p| p.0.clone())
        .collect();

    // drain evicts both pods at once; the budget lets one go, refuses the other (429)
    // until the replacement is Ready on the other node, then lets it go too.
    let out = s.kubectl(&["drain", &busy, "--timeout=120s"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "drain failed: {text}");
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "the second eviction should have waited for the budget: {text}"
    );
    for p in &on_busy {
        assert!(
            text.contains(&format!("pod/{p} evicted")),
            "{p} evicted: {text}"
        );
    }
    assert!(text.contains(&format!("node/{busy} drained")), "{text}");

    eventually(LONG, || {
        let pods = web_pods(&s);
        anyhow::ensure!(
            pods.len() == 3 && pods.iter().all(|p| p.2 && p.1 == other),
            "pods not all ready on {other}: {pods:?}"
        );
        let (_, row) = pdb_row(&s);
        anyhow::ensure!(row[3] == "1", "pdb row {row:?}");
        Ok(())
    })
    .expect("all pods ready on the remaining node and the budget recovered");
    // The evictions' disruptedPods entries are gone once the pods are.
    let status = s.kubectl_json(&["get", "pdb", "web-pdb", "-o", "json"])["status"].clone();
    assert!(
        status["disruptedPods"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{status}"
    );

    // With the budget exhausted (minAvailable 3), a direct eviction is refused.
    s.kubectl_ok(&[
        "patch",
        "pdb",
        "web-pdb",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":3}}"#,
    ]);
    eventually(LONG, || {
        let (_, row) = pdb_row(&s);
        anyhow::ensure!(row[1] == "3" && row[3] == "0", "pdb row {row:?}");
        Ok(())
    })
    .expect("no disruption allowed at minAvailable 3");
    let status = s.kubectl_json(&["get", "pdb", "web-pdb", "-o", "json"])["status"].clone();
    assert_eq!(status["observedGeneration"], 2, "{status}");
    assert_eq!(
        status["conditions"][0]["reason"], "InsufficientPods",
        "{status}"
    );
    let victim = web_pods(&s)[0].0.clone();
    let (code, body) = s.https(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{victim}/eviction"),
        Some(&format!(
            r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{victim}"}}}}"#
        )),
    );
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("The disruption budget web-pdb needs 3 healthy pods and has 3 currently"),
        "{body}"
    );
    assert!(
        web_pods(&s).iter().any(|p| p.0 == victim),
        "the refused eviction deleted nothing"
    );
}
