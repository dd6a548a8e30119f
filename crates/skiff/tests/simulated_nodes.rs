//! Simulated nodes (`skiff agent --simulate N`) seen through the real kubectl: nodes Ready
//! with kubelet's columns, pods bound to them Running with an IP, finishing pods Completed
//! or Error, deletes that finish, and leases that stop and resume with the node.

use std::time::Duration;

use testkit::{eventually, Table};

const WAIT: Duration = Duration::from_secs(60);

fn bound_pod(name: &str, node: &str, restart_policy: &str, annotations: &[(&str, &str)]) -> String {
    let mut notes = String::new();
    if !annotations.is_empty() {
        notes.push_str("  annotations:\n");
        for (k, v) in annotations {
            notes.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
{notes}spec:
  nodeName: {node}
  restartPolicy: {restart_policy}
  containers:
  - name: main
    image: busybox:stable
    command: ["sh", "-c", "sleep 1"]
"#
    )
}

fn lease_renew_time(s: &testkit::TestServer, node: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        node,
        "-o",
        "jsonpath={.spec.renewTime}",
    ])
}

#[test]
fn get_nodes_shows_simulated_nodes_ready_with_kubelet_columns() {
    let s = testkit::server!();
    let nodes = testkit::simulated_nodes!(
        &s,
        3,
        &[
            "--node-label",
            "zone=a",
            "--node-taint",
            "dedicated=gpu:NoSchedule"
        ]
    );
    assert_eq!(nodes.names(), ["sim-0", "sim-1", "sim-2"]);
    let version = s.kubectl_json(&["version"])["serverVersion"]["gitVersion"]
        .as_str()
        .expect("server gitVersion")
        .to_string();

    let out = s.kubectl_ok(&["get", "nodes"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    assert_eq!(t.names(), ["sim-0", "sim-1", "sim-2"], "{out}");
    assert_eq!(t.column("STATUS"), ["Ready", "Ready", "Ready"], "{out}");
    assert_eq!(t.column("ROLES"), ["<none>", "<none>", "<none>"], "{out}");
    assert_eq!(t.column("VERSION"), [version.as_str(); 3], "{out}");

    let out = s.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    let t = Table::parse(&out);
    for h in [
        "INTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ] {
        assert!(t.headers.iter().any(|x| x == h), "no {h} column:\n{out}");
    }
    assert_eq!(
        t.column("INTERNAL-IP"),
        ["172.20.0.1", "172.20.0.2", "172.20.0.3"],
        "{out}"
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        t.get("sim-0", "KERNEL-VERSION").unwrap(),
        kernel.trim(),
        "{out}"
    );
    assert!(!t.get("sim-0", "OS-IMAGE").unwrap().is_empty(), "{out}");
    assert_eq!(
        t.get("sim-2", "CONTAINER-RUNTIME").unwrap(),
        format!("skiff-sim://{}", env!("CARGO_PKG_VERSION")),
        "{out}"
    );

    // Labels as kubelet sets them plus --node-label; --node-taint; a podCIDR each.
    let node = s.kubectl_json(&["get", "node", "sim-1"]);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "sim-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["zone"], "a");
    assert_eq!(
        node["spec"]["taints"],
        serde_json::json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    );
    assert_eq!(node["spec"]["podCIDR"], "10.42.1.0/24");
    assert_eq!(node["status"]["capacity"], node["status"]["allocatable"]);
    assert_eq!(node["status"]["capacity"]["pods"], "110");

    // One lease per node in kube-node-lease, held by the node.
    let out = s.kubectl_ok(&["get", "lease", "-n", "kube-node-lease"]);
    let t = Table::parse(&out);
    assert_eq!(t.names(), ["sim-0", "sim-1", "sim-2"], "{out}");
    assert_eq!(t.column("HOLDER"), ["sim-0", "sim-1", "sim-2"], "{out}");
}

#[test]
fn a_pod_bound_to_a_simulated_node_runs_with_an_ip_and_deletes_promptly() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &bound_pod("web", "sim-1", "Always", &[]),
    );
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);

    let out = s.kubectl_ok(&["get", "pod", "web", "-o", "wide"]);
    let t = Table::parse(&out);
    assert_eq!(t.get("web", "READY").as_deref(), Some("1/1"), "{out}");
    assert_eq!(t.get("web", "STATUS").as_deref(), Some("Running"), "{out}");
    assert_eq!(t.get("web", "RESTARTS").as_deref(), Some("0"), "{out}");
    assert_eq!(t.get("web", "NODE").as_deref(), Some("sim-1"), "{out}");
    let ip = t.get("web", "IP").unwrap();
    assert!(
        ip.starts_with("10.42.1."),
        "pod IP {ip} not from sim-1's podCIDR:\n{out}"
    );

    let pod = s.kubectl_json(&["get", "pod", "web"]);
    let status = &pod["status"];
    assert_eq!(status["hostIP"], "172.20.0.2");
    assert!(status["startTime"].is_string());
    let c = &status["containerStatuses"][0];
    assert_eq!(c["ready"], true);
    assert_eq!(c["started"], true);
    assert!(c["containerID"]
        .as_str()
        .unwrap()
        .starts_with("skiff-sim://"));
    assert!(c["state"]["running"]["startedAt"].is_string());
    let conditions: Vec<(String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert!(
            conditions.contains(&(t.to_string(), "True".to_string())),
            "{conditions:?}"
        );
    }

    // A plain `kubectl delete` waits until the pod is gone: the node stops it and removes it.
    let out = s.kubectl_ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert_eq!(out.trim(), "pod \"web\" deleted");
    let out = s.kubectl(&["get", "pod", "web"]);
    assert!(!out.status.success());
}

#[test]
fn finishing_pods_show_completed_or_error() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 1, &["--simulate-run-time", "1s"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "{}---\n{}",
            bound_pod("done", "sim-0", "Never", &[]),
            bound_pod(
                "broken",
                "sim-0",
                "Never",
                &[("skiff.dev/simulate-exit-code", "3")]
            )
        ),
    );
    eventually(WAIT, || {
        let out = s.kubectl_ok(&["get", "pods"]);
        let t = Table::parse(&out);
        if t.get("done", "STATUS").as_deref() == Some("Completed")
            && t.get("broken", "STATUS").as_deref() == Some("Error")
        {
            assert_eq!(t.get("done", "READY").as_deref(), Some("0/1"), "{out}");
            Ok(())
        } else {
            anyhow::bail!("not finished yet:\n{out}")
        }
    })
    .unwrap();
    let done = s.kubectl_json(&["get", "pod", "done"]);
    assert_eq!(done["status"]["phase"], "Succeeded");
    let broken = s.kubectl_json(&["get", "pod", "broken"]);
    assert_eq!(broken["status"]["phase"], "Failed");
    let terminated = &broken["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["reason"], "Error");
}

#[test]
fn a_stopped_node_stops_renewing_its_lease_and_resumes_when_started() {
    let s = testkit::server!();
    let mut nodes = testkit::simulated_nodes!(&s, 2);
    nodes.stop("sim-0").unwrap();
    let frozen = lease_renew_time(&s, "sim-0");
    let other = lease_renew_time(&s, "sim-1");
    // A pod bound to the stopped node is not picked up.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &bound_pod("waiting", "sim-0", "Always", &[]),
    );
    // Wait until the running node has renewed twice (a full renew interval has passed)...
    let mut seen = vec![other];
    eventually(Duration::from_secs(90), || {
        let now = lease_renew_time(&s, "sim-1");
        if !seen.contains(&now) {
            seen.push(now);
        }
        if seen.len() >= 3 {
            Ok(())
        } else {
            anyhow::bail!("sim-1 renewed {} times", seen.len() - 1)
        }
    })
    .unwrap();
    // ...while the stopped one did not, and its pod stayed Pending.
    assert_eq!(lease_renew_time(&s, "sim-0"), frozen);
    let phase = s.kubectl_ok(&["get", "pod", "waiting", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending");

    nodes.start("sim-0").unwrap();
    eventually(WAIT, || {
        let now = lease_renew_time(&s, "sim-0");
        if now != frozen {
            Ok(())
        } else {
            anyhow::bail!("sim-0's lease still at {now}")
        }
    })
    .unwrap();
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/waiting",
        "--timeout=60s",
    ]);
}

#[test]
fn bad_agent_flags_are_refused_and_register_nothing() {
    let s = testkit::server!();
    let token_file = s.data_dir().join("server").join("token");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "agent",
                "--simulate",
                "2",
                "--server",
                &s.url(),
                "--token-file",
            ])
            .arg(&token_file)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run skiff agent")
    };
    let out = run(&["--node-taint", "a=b:Sometimes"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--node-taint \"a=b:Sometimes\": invalid taint effect: Sometimes, unsupported taint effect"),
        "{err}"
    );
    let out = run(&["--node-label", "novalue"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected key=value"));

    // Without a CA to verify the server with, the agent refuses to connect.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "agent",
            "--simulate",
            "1",
            "--server",
            &s.url(),
            "--token",
            "x",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run skiff agent");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot verify the server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = s.kubectl(&["get", "nodes"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found"
    );
}
