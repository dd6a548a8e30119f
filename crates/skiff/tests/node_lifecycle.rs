//! The node lifecycle and taint eviction controllers, driven with kubectl: a node whose
//! kubelet stops reporting turns NotReady (Ready=Unknown) and is tainted unreachable, its
//! pods are marked not Ready and evicted when their toleration runs out, and everything
//! is lifted when it reports again. Nodes here are plain Node objects with a Lease that
//! the test renews by hand, so timings are under the test's control.

mod common;

use std::time::Duration;

use anyhow::{bail, Result};
use testkit::{eventually, ServerOptions, TestServer};

/// A server with short failover timings (grace 3 s, checks every second, pods evicted
/// 2 s after the taint).
fn fast_server() -> TestServer {
    TestServer::start(
        ServerOptions::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("--node-monitor-grace-period=3s")
            .arg("--node-monitor-period=1s")
            .arg("--default-unreachable-toleration-seconds=2")
            .arg("--default-not-ready-toleration-seconds=2"),
    )
    .expect("start skiff server")
}

fn now_micro() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn now_secs() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Register a node and report it Ready now, as a kubelet would.
fn register_node(s: &TestServer, name: &str) {
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n"),
    );
    report_ready(s, name);
    renew_lease(s, name);
}

fn report_ready(s: &TestServer, name: &str) {
    let now = now_secs();
    let patch = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"{now}","lastTransitionTime":"{now}"}}],"capacity":{{"cpu":"4","memory":"8Gi","pods":"110"}},"allocatable":{{"cpu":"4","memory":"8Gi","pods":"110"}}}}}}"#
    );
    s.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &patch,
    ]);
}

fn renew_lease(s: &TestServer, name: &str) {
    let now = now_micro();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n  leaseDurationSeconds: 40\n  renewTime: \"{now}\"\n"
        ),
    );
}

fn node_status(s: &TestServer, name: &str) -> String {
    let out = s.kubectl_ok(&["get", "node", name, "--no-headers"]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn taints(s: &TestServer, name: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
    ])
}

#[test]
fn a_silent_node_turns_not_ready_is_tainted_and_recovers_when_it_reports_again() {
    let s = fast_server();
    register_node(&s, "quiet");
    register_node(&s, "chatty");
    assert_eq!(node_status(&s, "quiet"), "Ready");

    // Keep "chatty" alive while "quiet" says nothing.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let went_dark = loop {
        renew_lease(&s, "chatty");
        if node_status(&s, "quiet") == "NotReady" {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        went_dark,
        "quiet never became NotReady:\n{}",
        s.log_tail(30)
    );
    assert_eq!(
        node_status(&s, "chatty"),
        "Ready",
        "a node that renews its lease stays Ready"
    );

    let ready = s.kubectl_json(&["get", "node", "quiet", "-o", "json"]);
    let conditions = ready["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready_cond = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition");
    assert_eq!(ready_cond["status"], "Unknown");
    assert_eq!(ready_cond["reason"], "NodeStatusUnknown");
    assert_eq!(
        ready_cond["message"],
        "Kubelet stopped posting node status."
    );

    eventually(Duration::from_secs(20), || {
        // chatty must stay alive meanwhile: with every node of the zone unreachable the
        // controller (as upstream's) stops NoExecute tainting (full disruption).
        renew_lease(&s, "chatty");
        let t = taints(&s, "quiet");
        if t.contains("node.kubernetes.io/unreachable:NoExecute")
            && t.contains("node.kubernetes.io/unreachable:NoSchedule")
        {
            Ok(())
        } else {
            bail!("taints: {t}")
        }
    })
    .expect("unreachable taints");
    let describe = s.kubectl_ok(&["describe", "node", "quiet"]);
    assert!(
        describe.contains("node.kubernetes.io/unreachable:NoExecute"),
        "{describe}"
    );
    assert!(
        describe.contains("NodeNotReady"),
        "the event shows in describe:\n{describe}"
    );

    // It reports again: Ready, taints lifted.
    renew_lease(&s, "quiet");
    report_ready(&s, "quiet");
    eventually(Duration::from_secs(20), || {
        renew_lease(&s, "quiet");
        let t = taints(&s, "quiet");
        if node_status(&s, "quiet") == "Ready" && t.trim().is_empty() {
            Ok(())
        } else {
            bail!("status {} taints {t}", node_status(&s, "quiet"))
        }
    })
    .expect("recovered");
}

#[test]
fn pods_on_an_unreachable_node_are_evicted_when_their_toleration_runs_out() -> Result<()> {
    let s = fast_server();
    register_node(&s, "doomed");
    // A second, healthy node: when every node of a zone is dark, upstream (and skiff)
    // suspects the network or itself and evicts nothing.
    register_node(&s, "healthy");
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: doomed\n  containers:\n  - name: c\n    image: busybox\n{extra}"
        )
    };
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("short", ""));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod(
            "patient",
            "  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n",
        ),
    );
    // Admission added the default tolerations with the configured seconds.
    let tols = s.kubectl_ok(&[
        "get",
        "pod",
        "short",
        "-o",
        "jsonpath={range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
    ]);
    assert!(tols.contains("node.kubernetes.io/unreachable=2"), "{tols}");
    assert!(tols.contains("node.kubernetes.io/not-ready=2"), "{tols}");

    // Mark the pods running and ready, as a kubelet would.
    for p in ["short", "patient"] {
        s.kubectl_ok(&[
            "patch",
            "pod",
            p,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }

    // The node goes silent: "short" is marked not Ready, then deleted (it stays Terminating:
    // there is no kubelet to confirm), "patient" tolerates unreachable forever and stays.
    eventually(Duration::from_secs(60), || {
        renew_lease(&s, "healthy");
        let json = s.kubectl_json(&["get", "pod", "short", "-o", "json"]);
        if json["metadata"]["deletionTimestamp"].is_string() {
            Ok(json)
        } else {
            bail!("not deleted yet: {}", json["status"])
        }
    })
    .map(|json| {
        let conds = json["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready = conds
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            ready["status"], "False",
            "marked not ready first: {conds:?}"
        );
        let target = conds
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .cloned()
            .unwrap_or_default();
        assert_eq!(target["reason"], "DeletionByTaintManager", "{conds:?}");
    })?;
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=short",
    ]);
    assert!(events.contains("TaintManagerEviction"), "{events}");
    assert!(
        events.contains("Marking for deletion Pod default/short"),
        "{events}"
    );
    let patient = s.kubectl_json(&["get", "pod", "patient", "-o", "json"]);
    assert!(
        patient["metadata"]["deletionTimestamp"].is_null(),
        "a pod that tolerates forever stays"
    );
    Ok(())
}

#[test]
fn when_every_node_is_dark_nothing_is_evicted() {
    let s = fast_server();
    register_node(&s, "only");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: only\n  containers:\n  - name: c\n    image: busybox\n",
    );
    eventually(Duration::from_secs(30), || {
        let t = taints(&s, "only");
        if node_status(&s, "only") == "NotReady" && t.contains("unreachable:NoSchedule") {
            Ok(())
        } else {
            bail!("taints {t}")
        }
    })
    .expect("node dark");
    // Several checks later: still no NoExecute taint and the pod is still there.
    std::thread::sleep(Duration::from_secs(5));
    assert!(!taints(&s, "only").contains("NoExecute"));
    let pod = s.kubectl_json(&["get", "pod", "p", "-o", "json"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "{pod}");
}

#[test]
fn cordon_adds_the_unschedulable_taint_and_uncordon_removes_it() {
    let s = fast_server();
    register_node(&s, "n1");
    s.kubectl_ok(&["cordon", "n1"]);
    eventually(Duration::from_secs(20), || {
        renew_lease(&s, "n1");
        let t = taints(&s, "n1");
        if t.contains("node.kubernetes.io/unschedulable:NoSchedule") {
            Ok(())
        } else {
            bail!("taints: {t}")
        }
    })
    .expect("unschedulable taint");
    s.kubectl_ok(&["uncordon", "n1"]);
    eventually(Duration::from_secs(20), || {
        renew_lease(&s, "n1");
        let t = taints(&s, "n1");
        if t.trim().is_empty() {
            Ok(())
        } else {
            bail!("taints: {t}")
        }
    })
    .expect("taint removed");
}
