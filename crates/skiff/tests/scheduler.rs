//! The scheduler, through the real kubectl: placement by nodeSelector, nodeName, node
//! affinity, taints and tolerations, pod anti-affinity; a pod that fits nowhere stays
//! Pending with upstream's FailedScheduling message and is placed once a node has room;
//! cordon, uncordon and drain (eviction API, PodDisruptionBudget).
//!
//! Nodes are plain Node objects made with kubectl (no agent runs), their capacity set
//! through the status subresource as a kubelet would.

use std::time::Duration;

use testkit::TestServer;

const WAIT: Duration = Duration::from_secs(60);

struct NodeSpec<'a> {
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
    /// `key=value:Effect` or `key:Effect`.
    taints: &'a [&'a str],
    cpu: &'a str,
    pods: u32,
}

impl<'a> NodeSpec<'a> {
    fn new(name: &'a str) -> Self {
        NodeSpec {
            name,
            labels: &[],
            taints: &[],
            cpu: "4",
            pods: 110,
        }
    }
}

fn add_node(s: &TestServer, n: &NodeSpec) {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    kubernetes.io/hostname: {}\n",
        n.name, n.name
    );
    for (k, v) in n.labels {
        yaml.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    if !n.taints.is_empty() {
        yaml.push_str("spec:\n  taints:\n");
        for t in n.taints {
            let (kv, effect) = t.split_once(':').expect("taint has an effect");
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            yaml.push_str(&format!(
                "  - key: {k}\n    value: \"{v}\"\n    effect: {effect}\n"
            ));
        }
    }
    s.kubectl_stdin_ok(&["create", "-f", "-"], &yaml);
    let resources = format!(
        r#"{{"cpu":"{}","memory":"8Gi","pods":"{}"}}"#,
        n.cpu, n.pods
    );
    let patch = format!(
        r#"{{"status":{{"capacity":{resources},"allocatable":{resources},"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status"}}]}}}}"#
    );
    s.kubectl_ok(&[
        "patch",
        "node",
        n.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// A bare pod; `extra_spec` is YAML indented for `spec:`.
fn pod_yaml(name: &str, labels: &[(&str, &str)], extra_spec: &str) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    run: {name}\n"
    );
    for (k, v) in labels {
        y.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    y.push_str("spec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: busybox:stable\n");
    y.push_str(extra_spec);
    y
}

fn create_pod(s: &TestServer, name: &str, labels: &[(&str, &str)], extra_spec: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_yaml(name, labels, extra_spec));
}

fn node_of(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .trim()
        .to_string()
}

/// Wait until the pod is bound and return its node.
fn wait_bound(s: &TestServer, pod: &str) -> String {
    testkit::eventually(WAIT, || {
        let n = node_of(s, pod);
        if n.is_empty() {
            anyhow::bail!("{pod} not bound yet")
        }
        Ok(n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(30)))
}

/// Wait for the pod's PodScheduled=False condition and return its message.
fn wait_unschedulable(s: &TestServer, pod: &str) -> String {
    testkit::eventually(WAIT, || {
        let out = s.kubectl_ok(&[
            "get",
            "pod",
            pod,
            "-o",
            r#"jsonpath={range .status.conditions[?(@.type=="PodScheduled")]}{.status}|{.reason}|{.message}{end}"#,
        ]);
        match out.splitn(3, '|').collect::<Vec<_>>().as_slice() {
            ["False", "Unschedulable", msg] => Ok(msg.to_string()),
            _ => anyhow::bail!("{pod}: PodScheduled is {out:?}"),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(30)))
}

#[test]
fn placement_follows_node_selector_node_name_affinity_and_taints() {
    let s = testkit::server!();
    add_node(
        &s,
        &NodeSpec {
            labels: &[("disk", "ssd"), ("zone", "a")],
            ..NodeSpec::new("n1")
        },
    );
    add_node(
        &s,
        &NodeSpec {
            labels: &[("disk", "hdd"), ("zone", "b")],
            ..NodeSpec::new("n2")
        },
    );
    add_node(
        &s,
        &NodeSpec {
            labels: &[("zone", "c")],
            taints: &["dedicated=db:NoSchedule"],
            ..NodeSpec::new("n3")
        },
    );

    create_pod(&s, "by-selector", &[], "  nodeSelector:\n    disk: ssd\n");
    create_pod(&s, "by-name", &[], "  nodeName: n3\n");
    create_pod(
        &s,
        "by-required-affinity",
        &[],
        "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: zone, operator: In, values: [b]}\n",
    );
    create_pod(
        &s,
        "by-preferred-affinity",
        &[],
        "  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 100\n        preference:\n          matchExpressions:\n          - {key: zone, operator: In, values: [a]}\n",
    );
    create_pod(
        &s,
        "tolerates-db",
        &[],
        "  nodeSelector:\n    zone: c\n  tolerations:\n  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n",
    );
    for i in 0..6 {
        create_pod(&s, &format!("plain-{i}"), &[], "");
    }

    assert_eq!(wait_bound(&s, "by-selector"), "n1");
    assert_eq!(
        wait_bound(&s, "by-name"),
        "n3",
        "nodeName is honoured as given"
    );
    assert_eq!(wait_bound(&s, "by-required-affinity"), "n2");
    assert_eq!(wait_bound(&s, "by-preferred-affinity"), "n1");
    assert_eq!(wait_bound(&s, "tolerates-db"), "n3");
    for i in 0..6 {
        let n = wait_bound(&s, &format!("plain-{i}"));
        assert_ne!(n, "n3", "plain-{i} landed on the tainted node");
    }

    // `kubectl get pods -o wide` shows the placement; the binding set PodScheduled=True.
    let wide = s.kubectl_ok(&["get", "pod", "by-selector", "-o", "wide"]);
    assert!(wide.contains(" n1 "), "{wide}");
    let cond = s.kubectl_ok(&[
        "get",
        "pod",
        "by-selector",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}"#,
    ]);
    assert_eq!(cond.trim(), "True");

    // A pod that tolerates nothing and may only go to the tainted zone fits nowhere.
    create_pod(&s, "wants-c", &[], "  nodeSelector:\n    zone: c\n");
    let msg = wait_unschedulable(&s, "wants-c");
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn required_anti_affinity_spreads_replicas_one_per_node() {
    let s = testkit::server!();
    for n in ["w1", "w2", "w3"] {
        add_node(&s, &NodeSpec::new(n));
    }
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels: {app: web}\n        topologyKey: kubernetes.io/hostname\n";
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        create_pod(&s, &name, &[("app", "web")], anti);
        nodes.push(wait_bound(&s, &name));
    }
    nodes.sort();
    assert_eq!(nodes, ["w1", "w2", "w3"]);

    create_pod(&s, "web-3", &[("app", "web")], anti);
    let msg = wait_unschedulable(&s, "web-3");
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // Deleting one replica frees its node for the waiting one.
    s.kubectl_ok(&["delete", "pod", "web-0"]);
    let freed = nodes_without(&s, &["web-1", "web-2"]);
    assert_eq!(wait_bound(&s, "web-3"), freed);
}

#[test]
fn replicas_of_a_deployment_spread_over_nodes_by_the_cluster_default_constraints() {
    // A big node wins every least-allocated comparison; only upstream's default spreading
    // (hostname maxSkew 3, ScheduleAnyway, selector from the owning ReplicaSet) sends
    // replicas to the small one as well.
    let s = testkit::server!();
    add_node(
        &s,
        &NodeSpec {
            cpu: "32",
            ..NodeSpec::new("big")
        },
    );
    add_node(
        &s,
        &NodeSpec {
            cpu: "4",
            ..NodeSpec::new("small")
        },
    );
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 6\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: main\n        image: busybox:stable\n        resources:\n          requests: {cpu: 500m, memory: 64Mi}\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], deployment);
    let placements = testkit::eventually(WAIT, || {
        let out = s.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ]);
        let nodes: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if nodes.len() < 6 {
            anyhow::bail!("{} of 6 replicas bound", nodes.len())
        }
        Ok(nodes)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(30)));
    let on_small = placements.iter().filter(|n| *n == "small").count();
    assert!(
        (2..=4).contains(&on_small),
        "replicas should spread over both nodes: {placements:?}"
    );
}

/// The one node of w1..w3 that none of `pods` is on.
fn nodes_without(s: &TestServer, pods: &[&str]) -> String {
    let used: Vec<String> = pods.iter().map(|p| node_of(s, p)).collect();
    ["w1", "w2", "w3"]
        .iter()
        .find(|n| !used.iter().any(|u| u == *n))
        .expect("a free node")
        .to_string()
}

#[test]
fn a_pod_that_fits_nowhere_stays_pending_with_upstreams_message_until_a_node_has_room() {
    let s = testkit::server!();
    add_node(
        &s,
        &NodeSpec {
            taints: &["node-role.kubernetes.io/control-plane:NoSchedule"],
            ..NodeSpec::new("cp")
        },
    );
    add_node(
        &s,
        &NodeSpec {
            cpu: "1",
            ..NodeSpec::new("w1")
        },
    );
    add_node(
        &s,
        &NodeSpec {
            cpu: "1",
            ..NodeSpec::new("w2")
        },
    );

    create_pod(
        &s,
        "big",
        &[],
        "    resources:\n      requests:\n        cpu: \"2\"\n",
    );
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    assert_eq!(wait_unschedulable(&s, "big"), want);
    let get = s.kubectl_ok(&["get", "pod", "big"]);
    assert!(get.contains("Pending"), "{get}");

    // The Warning event, as `kubectl describe` and `kubectl get events` show it.
    let describe = testkit::eventually(WAIT, || {
        let d = s.kubectl_ok(&["describe", "pod", "big"]);
        if d.contains("FailedScheduling") {
            Ok(d)
        } else {
            anyhow::bail!("no FailedScheduling event yet:\n{d}")
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let line = describe
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .expect("event line");
    assert!(line.trim_start().starts_with("Warning"), "{line}");
    assert!(line.contains("default-scheduler"), "{line}");
    assert!(line.contains(want), "{line}");
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big",
    ]);
    assert!(
        events.contains("FailedScheduling") && events.contains("pod/big") && events.contains(want),
        "{events}"
    );

    // A node with room appears: the pod is placed there, with a Scheduled event.
    add_node(
        &s,
        &NodeSpec {
            cpu: "4",
            ..NodeSpec::new("w3")
        },
    );
    assert_eq!(wait_bound(&s, "big"), "w3");
    testkit::eventually(WAIT, || {
        let ev = s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big,reason=Scheduled",
        ]);
        if ev.contains("Successfully assigned default/big to w3") {
            Ok(())
        } else {
            anyhow::bail!("no Scheduled event yet:\n{ev}")
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let describe = s.kubectl_ok(&["describe", "pod", "big"]);
    assert!(describe.contains("Node:             w3/"), "{describe}");
}

#[test]
fn cordoned_nodes_get_no_new_pods_until_uncordoned() {
    let s = testkit::server!();
    add_node(&s, &NodeSpec::new("n1"));
    add_node(&s, &NodeSpec::new("n2"));
    let out = s.kubectl_ok(&["cordon", "n1"]);
    assert_eq!(out.trim(), "node/n1 cordoned");
    let nodes = s.kubectl_ok(&["get", "node", "n1"]);
    assert!(nodes.contains("SchedulingDisabled"), "{nodes}");
    for i in 0..4 {
        create_pod(&s, &format!("p{i}"), &[], "");
    }
    for i in 0..4 {
        assert_eq!(wait_bound(&s, &format!("p{i}")), "n2");
    }

    s.kubectl_ok(&["cordon", "n2"]);
    create_pod(&s, "waiting", &[], "");
    assert_eq!(
        wait_unschedulable(&s, "waiting"),
        "0/2 nodes are available: 2 node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    let out = s.kubectl_ok(&["uncordon", "n1"]);
    assert_eq!(out.trim(), "node/n1 uncordoned");
    assert_eq!(wait_bound(&s, "waiting"), "n1");
}

#[test]
fn drain_evicts_pods_and_respects_a_pod_disruption_budget() {
    let s = testkit::server!();
    add_node(&s, &NodeSpec::new("n1"));
    add_node(&s, &NodeSpec::new("n2"));
    for name in ["a", "b"] {
        create_pod(
            &s,
            name,
            &[],
            "  nodeSelector:\n    kubernetes.io/hostname: n1\n",
        );
    }
    create_pod(
        &s,
        "guarded",
        &[("app", "guarded")],
        "  nodeSelector:\n    kubernetes.io/hostname: n1\n",
    );
    create_pod(
        &s,
        "elsewhere",
        &[],
        "  nodeSelector:\n    kubernetes.io/hostname: n2\n",
    );
    for p in ["a", "b", "guarded"] {
        assert_eq!(wait_bound(&s, p), "n1");
    }
    assert_eq!(wait_bound(&s, "elsewhere"), "n2");
    // These nodes have no agent, so play the kubelet: the pods run and are Ready. (A
    // Pending pod is evicted regardless of budgets, as upstream.)
    for p in ["a", "b", "guarded", "elsewhere"] {
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
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: guard\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: guarded\n",
    );

    // The budget blocks one eviction: drain keeps retrying it until its timeout.
    let out = s.kubectl(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--force",
        "--timeout=6s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "drain should time out:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("node/n1 cordoned"), "{stdout}");
    assert!(
        stderr.contains(r#"error when evicting pods/"guarded" -n "default" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."#),
        "{stderr}"
    );
    assert!(
        stdout.contains("pod/a evicted") && stdout.contains("pod/b evicted"),
        "{stdout}"
    );
    let left = s.kubectl_ok(&["get", "pods", "-o", "name"]);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    assert_eq!(left, ["pod/elsewhere", "pod/guarded"]);
    let node = s.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(node.trim(), "true");

    // Without the budget the drain completes.
    s.kubectl_ok(&["delete", "pdb", "guard"]);
    let out = s.kubectl_ok(&[
        "drain",
        "n1",
        "--ignore-daemonsets",
        "--force",
        "--timeout=30s",
    ]);
    assert!(
        out.contains("pod/guarded evicted") && out.contains("node/n1 drained"),
        "{out}"
    );
    let left = s.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert_eq!(left.trim(), "pod/elsewhere");
}
