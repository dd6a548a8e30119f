//! `--pod-routes vxlan` (issue 5, nodes that share no L2): a 3-node cluster whose pods
//! reach each other through the VXLAN overlay. Each node publishes its VTEP MAC on its
//! Node, routes the other nodes' podCIDRs through `<bridge>.vxlan`, and its pods get the
//! tunnel's MTU; pods fetch pages (and a file much larger than one packet) from pods on
//! every node by pod IP and through a Service; `skiff killall` removes the device.
//! Needs root.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use testkit::cluster::TestCluster;
use testkit::hosts::TestHost;
use testkit::node::{fetch, wait_for, TEST_IMAGE};

const NODES: [&str; 3] = ["server", "agent1", "agent2"];

/// `ip ARGS` inside a test host's network namespace; its output.
fn ip_in(host: &TestHost, args: &[&str]) -> String {
    let out = Command::new("ip")
        .arg("-n")
        .arg(&host.netns)
        .args(args)
        .output()
        .expect("running ip");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pods_on_three_nodes_reach_each_other_through_the_vxlan_overlay() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_skiff"));
    let vxlan = ["--pod-routes", "vxlan"];
    let mut c = TestCluster::start_with(bin, 2, &vxlan, &vxlan).expect("3-node vxlan cluster");
    let s = &c.server;
    let bridge = s.network().expect("the server's pod network").bridge();
    let device = format!("{bridge}.vxlan");

    // Every node publishes its VTEP MAC.
    wait_for(
        s,
        Duration::from_secs(30),
        "three published VTEP MACs",
        || {
            let out = s.kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.annotations.skiff\\.io/vxlan-mac}{\"\\n\"}{end}",
        ]);
            out.lines().filter(|l| l.split(':').count() == 6).count() == 3
        },
    );
    let cidr_of = |node: &str| {
        s.kubectl_ok(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
            .trim()
            .to_string()
    };

    // The device as flannel makes it, on each node.
    for (host, node) in c.hosts.iter().zip(NODES) {
        let link = ip_in(host, &["-d", "link", "show", &device]);
        assert!(link.contains("mtu 1450"), "{node}: {link}");
        assert!(link.contains("vxlan id 1"), "{node}: {link}");
        assert!(link.contains("dstport 8472"), "{node}: {link}");
        assert!(link.contains("nolearning"), "{node}: {link}");
        assert!(
            link.contains(&format!("local {}", host.ip)),
            "{node}: {link}"
        );
        let network = cidr_of(node)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let addr = ip_in(host, &["-4", "addr", "show", "dev", &device]);
        assert!(
            addr.contains(&format!("inet {network}/32")),
            "{node}: {addr}"
        );
    }

    // The server's routes to the other nodes' pod ranges go through the device, via their
    // network addresses, not via the nodes' own addresses (host-gw).
    let server_host = &c.hosts[0];
    for (other_host, other) in c.hosts[1..].iter().zip(&NODES[1..]) {
        let cidr = cidr_of(other);
        wait_for(
            s,
            Duration::from_secs(30),
            &format!("route to {cidr}"),
            || ip_in(server_host, &["route", "show", &cidr]).contains(&device),
        );
        let route = ip_in(server_host, &["route", "show", &cidr]);
        let gateway = cidr.replace("/24", "");
        assert!(
            route.contains(&format!("via {gateway} dev {device}")) && route.contains("onlink"),
            "{other}: {route}"
        );
        assert!(!route.contains(&other_host.ip.to_string()), "{route}");
        let neigh = ip_in(server_host, &["neigh", "show", "dev", &device]);
        assert!(
            neigh.contains(&gateway) && neigh.contains("PERMANENT"),
            "{neigh}"
        );
        let fdb = Command::new("bridge")
            .args(["-n", &server_host.netns, "fdb", "show", "dev", &device])
            .output()
            .expect("bridge fdb");
        let fdb = String::from_utf8_lossy(&fdb.stdout);
        assert!(fdb.contains(&format!("dst {}", other_host.ip)), "{fdb}");
    }

    // One web pod per node, pinned by hostname, each serving a page and a 1 MiB file.
    for node in NODES {
        s.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: vx-{node}, labels: {{app: vx}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo page of {node} > /www/index.html && dd if=/dev/zero of=/www/big bs=1024 count=1024 2>/dev/null && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080}}]
---
"#
            ),
        );
    }
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: vx}\nspec:\n  selector: {app: vx}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    for node in NODES {
        let pod = format!("vx-{node}");
        wait_for(
            s,
            Duration::from_secs(90),
            &format!("{pod} Running"),
            || testkit::node::status_column(s, &pod) == "Running",
        );
        // The pod's interface has the tunnel's MTU, so its packets fit encapsulated.
        assert_eq!(
            s.kubectl_ok(&["exec", &pod, "--", "cat", "/sys/class/net/eth0/mtu"])
                .trim(),
            "1450"
        );
    }

    let ip = |pod: &str| s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
    for from in NODES {
        for to in NODES {
            let target = ip(&format!("vx-{to}"));
            let page = fetch(s, &format!("vx-{from}"), &format!("http://{target}:8080/"));
            assert_eq!(
                page.as_deref(),
                Some(format!("page of {to}").as_str()),
                "from {from} to {to}"
            );
            if from != to {
                // Full-size packets cross the tunnel too.
                let out = s.kubectl_ok(&[
                    "exec",
                    &format!("vx-{from}"),
                    "--",
                    "sh",
                    "-c",
                    &format!("wget -q -O - http://{target}:8080/big | wc -c"),
                ]);
                assert_eq!(out.trim(), "1048576", "1 MiB from {to} to {from}");
            }
        }
    }

    // The Service's ClusterIP reaches the pods on the other nodes too.
    let cluster_ip = s.kubectl_ok(&["get", "svc", "vx", "-o", "jsonpath={.spec.clusterIP}"]);
    wait_for(s, Duration::from_secs(30), "3 vx endpoints", || {
        s.kubectl_ok(&[
            "get",
            "endpoints",
            "vx",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])
        .split_whitespace()
        .count()
            == 3
    });
    let want: BTreeSet<String> = NODES.iter().map(|n| format!("page of {n}")).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        if let Some(page) = fetch(s, "vx-server", &format!("http://{cluster_ip}/")) {
            seen.insert(page);
        }
        if seen == want {
            break;
        }
    }
    assert_eq!(
        seen, want,
        "requests through {cluster_ip} reach all three pods"
    );

    // `skiff killall` on a node removes its device.
    let agent = &mut c.agents[1];
    agent.kill();
    let mut killall = Command::new(bin);
    killall
        .arg("killall")
        .arg("--data-dir")
        .arg(agent.data_dir());
    agent
        .host
        .enter(&mut killall)
        .expect("entering agent2's host");
    let out = killall.output().expect("skiff killall");
    assert!(out.status.success(), "{out:?}");
    let link = ip_in(&agent.host, &["link", "show", &device]);
    assert!(link.contains("does not exist"), "{link}");
}

/// Pod-to-pod throughput across two nodes, host-gw against vxlan, in one run (a benchmark:
/// it prints figures and asserts only that the transfers worked). Run with
/// `cargo test --release -p skiff --test vxlan -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_host_gw_against_vxlan() {
    const MIB: u64 = 1024;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_skiff"));
    let mut medians = Vec::new();
    for backend in ["host-gw", "vxlan"] {
        let args = ["--pod-routes", backend];
        let c = TestCluster::start_with(bin, 1, &args, &args).expect("2-node cluster");
        let s = &c.server;
        s.kubectl_stdin_ok(
            &["apply", "-f", "-"],
            &format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: source}}
spec:
  nodeSelector: {{kubernetes.io/hostname: agent1}}
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={MIB} 2>/dev/null && touch /www/ready && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: sink}}
spec:
  nodeSelector: {{kubernetes.io/hostname: server}}
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
"#
            ),
        );
        for pod in ["source", "sink"] {
            wait_for(
                s,
                Duration::from_secs(90),
                &format!("{pod} Running"),
                || testkit::node::status_column(s, pod) == "Running",
            );
        }
        let source = s.kubectl_ok(&["get", "pod", "source", "-o", "jsonpath={.status.podIP}"]);
        wait_for(s, Duration::from_secs(60), "the file", || {
            fetch(s, "sink", &format!("http://{source}:8080/ready")).is_some()
        });
        let mut rates = Vec::new();
        for _ in 0..5 {
            let out = s.kubectl(&[
                "exec",
                "sink",
                "--",
                "busybox",
                "time",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                &format!("http://{source}:8080/big"),
            ]);
            assert!(out.status.success(), "{out:?}");
            // busybox time: "real\t0m 1.23s".
            let report = String::from_utf8_lossy(&out.stderr).to_string();
            let seconds: f64 = report
                .lines()
                .find_map(|l| l.trim().strip_prefix("real"))
                .and_then(|t| {
                    let (m, s) = t.trim().split_once('m')?;
                    Some(
                        m.trim().parse::<f64>().ok()? * 60.0
                            + s.trim().trim_end_matches('s').parse::<f64>().ok()?,
                    )
                })
                .unwrap_or_else(|| panic!("no time in {report:?}"));
            rates.push(MIB as f64 / seconds);
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let median = rates[rates.len() / 2];
        println!(
            "{backend}: {MIB} MiB pod to pod across nodes: median {median:.0} MiB/s (runs: {})",
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        medians.push(median);
    }
    println!("vxlan/host-gw: {:.2}x", medians[1] / medians[0]);
}
