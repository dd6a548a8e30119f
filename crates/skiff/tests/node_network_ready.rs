//! A node is NotReady, with kubelet's "cni plugin not initialized", until its pod network
//! is set up: an agent that never gets a podCIDR (the cluster CIDR holds a single /24,
//! which the server's node takes) stays NotReady with upstream's message, and nothing is
//! scheduled onto it; the server's node, which got the range, is Ready. Needs root.

use std::time::Duration;

use testkit::cluster::TestCluster;
use testkit::node::wait_for;

const NETWORK_NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

#[test]
fn a_node_without_a_pod_network_is_not_ready_with_kubelets_message() {
    let c = TestCluster::start_with_ready(
        std::path::Path::new(env!("CARGO_BIN_EXE_skiff")),
        1,
        &["--cluster-cidr=10.199.0.0/24"],
        &[],
        1,
    )
    .expect("a server node and an agent");
    let s = &c.server;
    let ready = |node: &str| {
        let json = s.kubectl_json(&["get", "node", node, "-o", "json"]);
        let condition = json["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or_default();
        (json, condition)
    };
    wait_for(
        s,
        Duration::from_secs(60),
        "agent1 to report NotReady",
        || ready("agent1").1["status"] == "False",
    );
    let (agent, condition) = ready("agent1");
    assert_eq!(condition["reason"], "KubeletNotReady", "{condition}");
    assert_eq!(condition["message"], NETWORK_NOT_READY, "{condition}");
    assert!(agent["spec"]["podCIDR"].is_null(), "{}", agent["spec"]);
    let (server, condition) = ready("server");
    assert_eq!(condition["status"], "True", "{condition}");
    assert_eq!(server["spec"]["podCIDR"], "10.199.0.0/24");
    // The node lifecycle controller taints it, so the scheduler keeps off it.
    wait_for(
        s,
        Duration::from_secs(60),
        "agent1's not-ready taint",
        || {
            s.kubectl_ok(&[
                "get",
                "node",
                "agent1",
                "-o",
                "jsonpath={.spec.taints[*].key}",
            ])
            .contains("node.kubernetes.io/not-ready")
        },
    );
}
