//! kubelet's Summary API on a single-node `skiff server` (the embedded agent), reached as
//! `kubectl get --raw /api/v1/nodes/NAME/proxy/stats/summary` through the API server's
//! node proxy: node figures and a running pod's container CPU and memory from its cgroup.
//! Needs root (namespaces, mounts, cgroups).

use std::time::Duration;

use serde_json::Value;
use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};

#[test]
fn stats_summary_reports_the_node_and_its_pods() {
    let s = testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")));
    // Some CPU (a counting loop) and some memory (a string doubled to 2 MiB), then idle.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", "a=0123456789abcdef; i=0; while [ $i -lt 17 ]; do a=\"$a$a\"; i=$((i+1)); done; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ready; exec sleep 3600"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "hog Running", || {
        status_column(&s, "hog") == "Running"
    });
    let node = s.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.trim());
    let summary = || -> Value {
        let text = s.kubectl_ok(&["get", "--raw", &path]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let container = |v: &Value| -> Option<Value> {
        v["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "hog" && p["podRef"]["namespace"] == "default")?
            ["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "app")
            .cloned()
    };
    let mut first = Value::Null;
    wait_for(&s, Duration::from_secs(30), "hog in the summary", || {
        first = summary();
        container(&first).is_some()
    });

    let n = &first["node"];
    assert_eq!(n["nodeName"], node.trim(), "{n}");
    assert!(n["startTime"].is_string(), "{n}");
    assert!(n["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0), "{n}");
    assert!(n["memory"]["workingSetBytes"].as_u64() > Some(0), "{n}");
    assert!(n["memory"]["availableBytes"].as_u64() > Some(0), "{n}");
    assert!(n["fs"]["capacityBytes"].as_u64() > Some(0), "{n}");
    assert!(
        n["runtime"]["imageFs"]["capacityBytes"].as_u64() > Some(0),
        "{n}"
    );

    let c = container(&first).expect("container");
    assert!(c["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0), "{c}");
    assert!(c["memory"]["workingSetBytes"].as_u64() > Some(0), "{c}");
    assert!(c["memory"]["usageBytes"].as_u64() > Some(0), "{c}");
    assert!(c["startTime"].is_string(), "{c}");
    let pod = first["pods"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["podRef"]["name"] == "hog"))
        .expect("pod");
    assert!(
        pod["podRef"]["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{pod}"
    );
    assert!(pod["memory"]["workingSetBytes"].as_u64() > Some(0), "{pod}");

    // The rate appears once there are two samples.
    std::thread::sleep(Duration::from_millis(300));
    let second = summary();
    assert!(
        second["node"]["cpu"]["usageNanoCores"].is_u64(),
        "{}",
        second["node"]
    );
    let c = container(&second).expect("container in the second summary");
    assert!(c["cpu"]["usageNanoCores"].is_u64(), "{c}");
}
