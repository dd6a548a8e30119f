//! Deployments and ReplicaSets driven through the real kubectl: a Deployment's life
//! (rollout, history, undo, pause/resume, scale, restart), the rolling-update
//! availability bound, ReplicaSet self-healing, and skiff's opt-in automatic rollback.
//!
//! Pods run on three simulated nodes (`skiff agent --simulate 3`), placed by the
//! scheduler and reported Running and Ready by the simulated kubelets.

mod common;
use std::time::Duration;

use testkit::{eventually, Table, TestServer};

const LONG: Duration = Duration::from_secs(60);

fn web_deployment(
    name: &str,
    replicas: u32,
    image: &str,
    extra_spec: &str,
    annotations: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations:
    kubernetes.io/change-cause: "first release"
{annotations}
spec:
  replicas: {replicas}
{extra_spec}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: web
        image: {image}
"#
    )
}

/// Pods matching `selector` as (name, ready, labels, ownerReference kinds/names).
fn pods(s: &TestServer, selector: &str) -> Vec<serde_json::Value> {
    let v = s.kubectl_json(&["get", "pods", "-l", selector, "-o", "json"]);
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn jsonpath(s: &TestServer, args: &[&str], path: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    s.kubectl_ok(&all).trim().to_string()
}

/// Keep marking pods ready until the deployment reports `want` updated and available
/// replicas with nothing old left, checking the rolling-update bounds at every step.
fn drive_rollout(
    s: &TestServer,
    name: &str,
    replicas: usize,
    max_surge: usize,
    max_unavailable: usize,
) {
    drive(s, name, replicas, max_surge, max_unavailable)
}

/// Scaling is not a rollout (new pods start unready): no bounds, start pods quickly.
fn drive_scale(s: &TestServer, name: &str, replicas: usize) {
    drive(s, name, replicas, replicas, replicas)
}

fn drive(s: &TestServer, name: &str, replicas: usize, max_surge: usize, max_unavailable: usize) {
    let selector = format!("app={name}");
    eventually(LONG, || {
        // Pods being deleted no longer count (the simulated kubelet removes them promptly).
        let current: Vec<_> = pods(s, &selector)
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let ready = current.iter().filter(|p| is_ready(p)).count();
        // maxSurge bounds what the controller asks for: the ReplicaSets' sizes. Pods
        // follow a moment later (a scaled-down ReplicaSet's surplus pods are deleted by
        // the ReplicaSet controller after the new one grew), upstream as here, so a pod
        // count may briefly exceed the bound; the ReplicaSets' sum may not.
        let asked: usize = s.kubectl_json(&["get", "rs", "-l", &selector, "-o", "json"])["items"]
            .as_array()
            .map(|rss| {
                rss.iter()
                    .map(|rs| rs["spec"]["replicas"].as_u64().unwrap_or(0) as usize)
                    .sum()
            })
            .unwrap_or(0);
        assert!(
            asked <= replicas + max_surge,
            "the ReplicaSets ask for {asked} pods, more than replicas {replicas} + maxSurge {max_surge}"
        );
        assert!(
            ready + max_unavailable >= replicas,
            "only {ready} ready pods: fewer than replicas {replicas} - maxUnavailable {max_unavailable}"
        );
        let st = s.kubectl_json(&["get", "deploy", name, "-o", "json"])["status"].clone();
        let n = |k: &str| st[k].as_u64().unwrap_or(0) as usize;
        if n("updatedReplicas") == replicas && n("availableReplicas") == replicas && n("replicas") == replicas {
            Ok(())
        } else {
            anyhow::bail!("rollout not done: {st}")
        }
    })
    .expect("rollout finishes");
}

fn replicasets(s: &TestServer, selector: &str) -> Table {
    Table::parse(&s.kubectl_ok(&["get", "rs", "-l", selector]))
}

#[test]
fn deployment_life_through_kubectl() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let strategy = "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &web_deployment("web", 3, "nginx:1.0", strategy, ""),
    );
    // The first rollout starts from nothing: no availability to keep yet.
    drive_scale(&s, "web", 3);
    let out = s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert_eq!(out.trim(), "deployment \"web\" successfully rolled out");

    // One ReplicaSet named <deploy>-<hash>, whose hash labels the RS and its pods.
    let rs = replicasets(&s, "app=web");
    assert_eq!(rs.rows.len(), 1, "{rs:?}");
    let rs1 = rs.column("NAME")[0].clone();
    let hash = rs1
        .strip_prefix("web-")
        .expect("named web-<hash>")
        .to_string();
    let shown = s.kubectl_ok(&["get", "deploy,rs,pod", "--show-labels"]);
    assert!(
        shown.contains(&format!("pod-template-hash={hash}")),
        "{shown}"
    );
    for pod in pods(&s, "app=web") {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let suffix = name
            .strip_prefix(&format!("{rs1}-"))
            .expect("pod named <rs>-<suffix>");
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{name}"
        );
        assert_eq!(
            pod["metadata"]["labels"]["pod-template-hash"],
            hash.as_str()
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], rs1.as_str());
    }
    assert_eq!(
        jsonpath(
            &s,
            &["get", "rs", &rs1],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );
    assert_eq!(
        jsonpath(
            &s,
            &["get", "deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );
    let conds = jsonpath(
        &s,
        &["get", "deploy", "web"],
        "{range .status.conditions[*]}{.type}={.status}/{.reason};{end}",
    );
    assert!(
        conds.contains("Available=True/MinimumReplicasAvailable"),
        "{conds}"
    );
    assert!(
        conds.contains("Progressing=True/NewReplicaSetAvailable"),
        "{conds}"
    );

    // A new image makes a second ReplicaSet and rolls within maxSurge 1 / maxUnavailable 0.
    s.kubectl_ok(&["set", "image", "deployment/web", "web=nginx:2.0"]);
    s.kubectl_ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=image 2.0",
        "--overwrite",
    ]);
    drive_rollout(&s, "web", 3, 1, 0);
    let out = s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert_eq!(out.trim(), "deployment \"web\" successfully rolled out");
    let rs = replicasets(&s, "app=web");
    assert_eq!(rs.rows.len(), 2, "{rs:?}");
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Deployment",
    ]);
    assert!(
        events.contains(&format!("Scaled up replica set {rs1} from 0 to 3")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {rs1} from 3 to 2")),
        "{events}"
    );

    let history = s.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let lines: Vec<&str> = history.lines().map(str::trim_end).collect();
    assert_eq!(lines[0], "deployment.apps/web");
    let t = Table::parse(&lines[1..].join("\n"));
    assert_eq!(t.headers, ["REVISION", "CHANGE-CAUSE"], "{history}");
    assert_eq!(
        t.rows,
        [["1", "first release"], ["2", "image 2.0"]],
        "{history}"
    );

    // Undo to revision 1: its ReplicaSet comes back as revision 3.
    let out = s.kubectl_ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]);
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    drive_rollout(&s, "web", 3, 1, 0);
    assert_eq!(
        jsonpath(
            &s,
            &["get", "deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "nginx:1.0"
    );
    assert_eq!(
        jsonpath(
            &s,
            &["get", "rs", &rs1],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    assert_eq!(jsonpath(&s, &["get", "rs", &rs1], "{.spec.replicas}"), "3");
    let history = s.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("2         image 2.0") && history.contains("3         first release"),
        "{history}"
    );

    // Paused: a new template makes no ReplicaSet, but scaling still works.
    s.kubectl_ok(&["rollout", "pause", "deployment/web"]);
    s.kubectl_ok(&["set", "image", "deployment/web", "web=nginx:3.0"]);
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=4"]);
    eventually(LONG, || {
        let avail = jsonpath(&s, &["get", "deploy", "web"], "{.status.availableReplicas}");
        anyhow::ensure!(avail == "4", "available {avail}");
        Ok(())
    })
    .unwrap();
    assert_eq!(
        replicasets(&s, "app=web").rows.len(),
        2,
        "no new ReplicaSet while paused"
    );
    let reason = jsonpath(
        &s,
        &["get", "deploy", "web"],
        "{.status.conditions[?(@.type==\"Progressing\")].reason}",
    );
    assert_eq!(reason, "DeploymentPaused");
    s.kubectl_ok(&["rollout", "resume", "deployment/web"]);
    drive_rollout(&s, "web", 4, 1, 1);
    assert_eq!(replicasets(&s, "app=web").rows.len(), 3);

    // scale 4 -> 50 -> 3.
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=50"]);
    drive_scale(&s, "web", 50);
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    eventually(LONG, || {
        let n = pods(&s, "app=web").len();
        anyhow::ensure!(n == 3, "{n} pods");
        Ok(())
    })
    .unwrap();
    // The status catches up with the pods a moment later.
    eventually(LONG, || {
        let out = s.kubectl_ok(&["get", "deploy", "web"]);
        let t = Table::parse(&out);
        anyhow::ensure!(t.column("READY") == ["3/3"], "{out}");
        Ok(())
    })
    .unwrap();

    // restart: a new revision with the same image.
    s.kubectl_ok(&["rollout", "restart", "deployment/web"]);
    drive_rollout(&s, "web", 3, 1, 0);
    assert_eq!(replicasets(&s, "app=web").rows.len(), 4);
}

#[test]
fn recreate_and_percentages() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let strategy = "  strategy:\n    type: Recreate";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &web_deployment("batch", 2, "app:1", strategy, ""),
    );
    drive_scale(&s, "batch", 2);
    s.kubectl_ok(&["set", "image", "deployment/batch", "web=app:2"]);
    // Recreate: the old pods are all gone before any new one exists.
    eventually(LONG, || {
        let current = pods(&s, "app=batch");
        let hashes: std::collections::BTreeSet<String> = current
            .iter()
            .map(|p| {
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert!(
            hashes.len() <= 1,
            "old and new pods together under Recreate: {hashes:?}"
        );
        let updated = jsonpath(
            &s,
            &["get", "deploy", "batch"],
            "{.status.updatedReplicas}/{.status.availableReplicas}",
        );
        anyhow::ensure!(updated == "2/2", "{updated}");
        Ok(())
    })
    .unwrap();

    // 25%/25% of 10: at most 13 pods and at least 8 ready at any time.
    let strategy =
        "  strategy:\n    rollingUpdate:\n      maxSurge: 25%\n      maxUnavailable: 25%";
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &web_deployment("pct", 10, "app:1", strategy, ""),
    );
    drive_scale(&s, "pct", 10);
    s.kubectl_ok(&["set", "image", "deployment/pct", "web=app:2"]);
    drive_rollout(&s, "pct", 10, 3, 2);
}

#[test]
fn replicaset_heals_after_pod_delete_and_relabel() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let manifest = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: heal
spec:
  replicas: 2
  selector:
    matchLabels:
      app: heal
  template:
    metadata:
      labels:
        app: heal
    spec:
      containers:
      - name: c
        image: app:1
"#;
    s.kubectl_stdin_ok(&["apply", "-f", "-"], manifest);
    let wait_ready = |n: usize| {
        eventually(LONG, || {
            let r = jsonpath(
                &s,
                &["get", "rs", "heal"],
                "{.status.replicas}/{.status.readyReplicas}/{.status.availableReplicas}",
            );
            anyhow::ensure!(r == format!("{n}/{n}/{n}"), "{r}");
            Ok(())
        })
        .unwrap()
    };
    wait_ready(2);
    let names: Vec<String> = pods(&s, "app=heal")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    s.kubectl_ok(&["delete", "pod", &names[0]]);
    wait_ready(2);
    let after: Vec<String> = pods(&s, "app=heal")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !after.contains(&names[0]) && after.contains(&names[1]),
        "{after:?}"
    );

    // Relabelled out of the selector: released (no ownerReference) and replaced.
    s.kubectl_ok(&["label", "pod", &names[1], "app=debug", "--overwrite"]);
    wait_ready(2);
    eventually(LONG, || {
        let owners = jsonpath(
            &s,
            &["get", "pod", &names[1]],
            "{.metadata.ownerReferences}",
        );
        anyhow::ensure!(owners.is_empty(), "still owned: {owners}");
        Ok(())
    })
    .unwrap();
    assert!(!pods(&s, "app=heal")
        .iter()
        .any(|p| p["metadata"]["name"] == names[1].as_str()));

    // Labelled back: adopted again, and the surplus pod deleted.
    s.kubectl_ok(&["label", "pod", &names[1], "app=heal", "--overwrite"]);
    eventually(LONG, || {
        let owner = jsonpath(
            &s,
            &["get", "pod", &names[1]],
            "{.metadata.ownerReferences[0].name}",
        );
        let n = pods(&s, "app=heal").len();
        anyhow::ensure!(owner == "heal" && n == 2, "owner {owner:?}, {n} pods");
        Ok(())
    })
    .unwrap();

    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=heal",
    ]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Created pod: heal-"),
        "{events}"
    );
    assert!(
        events.contains("SuccessfulDelete") && events.contains("Deleted pod: heal-"),
        "{events}"
    );
    let describe = s.kubectl_ok(&["describe", "rs", "heal"]);
    assert!(
        describe.contains("2 Running / 0 Waiting / 0 Succeeded / 0 Failed"),
        "{describe}"
    );
}

#[test]
fn auto_rollback_after_progress_deadline() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let extra = "  progressDeadlineSeconds: 3\n  strategy:\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0";
    let manifest = web_deployment(
        "auto",
        2,
        "app:good",
        extra,
        "    skiff.dev/auto-rollback: \"true\"",
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    drive_scale(&s, "auto", 2);
    eventually(LONG, || {
        let rev = jsonpath(
            &s,
            &["get", "deploy", "auto"],
            "{.metadata.annotations.skiff\\.dev/last-available-revision}",
        );
        anyhow::ensure!(rev == "1", "remembered {rev:?}");
        Ok(())
    })
    .unwrap();

    // A release whose pods never become ready (the simulated kubelet holds their
    // readiness for an hour): past the deadline it is rolled back.
    s.kubectl_ok(&[
        "patch",
        "deployment/auto",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/simulate-ready-after-seconds":"3600"}},"spec":{"containers":[{"name":"web","image":"app:broken"}]}}}}"#,
    ]);
    eventually(LONG, || {
        let image = jsonpath(
            &s,
            &["get", "deploy", "auto"],
            "{.spec.template.spec.containers[0].image}",
        );
        anyhow::ensure!(image == "app:good", "image {image}");
        Ok(())
    })
    .unwrap();
    let events = s.kubectl_ok(&["get", "events", "--field-selector", "reason=AutoRollback"]);
    assert!(
        events.contains("Warning") && events.contains("Rolled back from revision 2 to revision 1"),
        "{events}"
    );
    // The good ReplicaSet is current again (revision 3) and the broken one drains.
    drive_rollout(&s, "auto", 2, 1, 0);
    let history = s.kubectl_ok(&["rollout", "history", "deployment/auto"]);
    assert!(
        history.contains("\n2 ") && history.contains("\n3 "),
        "{history}"
    );

    // Without the annotation, a stuck rollout just reports ProgressDeadlineExceeded.
    s.kubectl_ok(&["annotate", "deployment/auto", "skiff.dev/auto-rollback-"]);
    s.kubectl_ok(&[
        "patch",
        "deployment/auto",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/simulate-ready-after-seconds":"3600"}},"spec":{"containers":[{"name":"web","image":"app:broken2"}]}}}}"#,
    ]);
    let out = s.kubectl(&["rollout", "status", "deployment/auto", "--timeout=60s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deployment \"auto\" exceeded its progress deadline"),
        "{err}"
    );
    assert_eq!(
        jsonpath(
            &s,
            &["get", "deploy", "auto"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "app:broken2"
    );
}
