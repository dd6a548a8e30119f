//! The pod network on a single-node `skiff server` (the embedded agent), driven with the
//! real kubectl and the busybox test image: pods get distinct addresses from the node's
//! podCIDR, reach each other (and themselves) by pod IP, see their address in /etc/hosts,
//! keep their addresses and connectivity across a server restart, and release them when
//! deleted; a hostNetwork pod reports the node's address; `skiff killall` leaves nothing of
//! the network behind. Needs root.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use network::pod_network::plan::host_veth_name;
use testkit::node::{fetch_retrying, wait_for, wait_running, TEST_IMAGE as IMAGE};
use testkit::{Table, TestServer};

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn web_pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo this is {name} > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

fn ip_of(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
        .trim()
        .to_string()
}

fn uid_of(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
        .trim()
        .to_string()
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPAM files (address -> pod uid) of the node's bridge.
fn allocations(s: &TestServer, bridge: &str) -> Vec<(String, String)> {
    let dir = s.data_dir().join("agent/network/ipam").join(bridge);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.parse::<std::net::Ipv4Addr>().ok()?;
                    let uid = std::fs::read_to_string(e.path()).ok()?;
                    Some((name, uid))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn pods_get_addresses_reach_each_other_keep_them_across_restarts_and_release_them() {
    let mut s = server_with_node();
    let slot = s
        .network()
        .expect("a server with an agent has a network slot");
    let bridge = slot.bridge();
    let cluster_cidr = slot.cluster_cidr();

    // The control plane gave the node a /24 of the cluster CIDR.
    let pod_cidr = s
        .kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].spec.podCIDR}"])
        .trim()
        .to_string();
    let cluster_prefix = cluster_cidr
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    assert!(
        pod_cidr.starts_with(&format!("{cluster_prefix}.")) && pod_cidr.ends_with("/24"),
        "podCIDR {pod_cidr} in {cluster_cidr}"
    );
    let subnet = pod_cidr.rsplit_once('.').unwrap().0.to_string();
    let gateway = format!("{subnet}.1");

    for name in ["web-a", "web-b"] {
        s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod(name));
    }
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: on-host}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: {IMAGE}
    command: ["sleep", "3600"]
"#
        ),
    );
    wait_running(&s, "web-a");
    wait_running(&s, "web-b");
    wait_for(&s, Duration::from_secs(60), "on-host's podIP", || {
        !ip_of(&s, "on-host").is_empty()
    });

    // Distinct addresses in the node's range, shown by `kubectl get pods -o wide`.
    let table = Table::parse(&s.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let (a, b) = (
        table.get("web-a", "IP").unwrap(),
        table.get("web-b", "IP").unwrap(),
    );
    assert_ne!(a, b);
    for addr in [&a, &b] {
        assert!(
            addr.starts_with(&format!("{subnet}.")),
            "{addr} in {pod_cidr}"
        );
        assert_ne!(addr, &gateway);
        assert_ne!(addr, &format!("{subnet}.0"));
    }
    assert_eq!(ip_of(&s, "web-a"), a);
    let pod_ips = s.kubectl_ok(&[
        "get",
        "pod",
        "web-a",
        "-o",
        "jsonpath={.status.podIPs[*].ip}",
    ]);
    assert_eq!(pod_ips.trim(), a);

    // A hostNetwork pod has the node's address, as upstream.
    let node_ip = s
        .kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}"#,
        ])
        .trim()
        .to_string();
    assert_eq!(table.get("on-host", "IP").unwrap(), node_ip);
    // It runs in the node's network namespace and reaches pods from there.
    wait_running(&s, "on-host");
    assert_eq!(
        fetch_retrying(&s, "on-host", &format!("http://{a}:8080/")).trim(),
        "this is web-a"
    );

    // Pod to pod by pod IP, and a pod to its own address.
    assert_eq!(
        fetch_retrying(&s, "web-a", &format!("http://{b}:8080/")).trim(),
        "this is web-b"
    );
    assert_eq!(
        fetch_retrying(&s, "web-b", &format!("http://{a}:8080/")).trim(),
        "this is web-a"
    );
    assert_eq!(
        fetch_retrying(&s, "web-a", &format!("http://{a}:8080/")).trim(),
        "this is web-a"
    );

    // /etc/hosts names the pod with its address; eth0 has it, the default route is the
    // bridge's gateway.
    let hosts = s.kubectl_ok(&["exec", "web-a", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{a}\tweb-a\n")), "{hosts}");
    let routes = s.kubectl_ok(&["exec", "web-a", "--", "cat", "/proc/net/route"]);
    let octets: Vec<u8> = gateway.split('.').map(|o| o.parse().unwrap()).collect();
    let gateway_hex: String = octets.iter().rev().map(|o| format!("{o:02X}")).collect();
    assert!(
        routes.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[0] == "eth0" && f[1] == "00000000" && f[2] == gateway_hex
        }),
        "a default route via {gateway} on eth0:\n{routes}"
    );

    // On the host: one veth per pod on the bridge, named after the pod, hairpin on; the
    // bridge has the gateway; the masquerade table exists; allocations are files.
    let (uid_a, uid_b) = (uid_of(&s, "web-a"), uid_of(&s, "web-b"));
    let ports = ip(&["-o", "link", "show", "master", &bridge]);
    for uid in [&uid_a, &uid_b] {
        assert!(
            ports.contains(&format!("{}@", host_veth_name(uid))),
            "{ports}"
        );
    }
    assert_eq!(ports.lines().count(), 2, "{ports}");
    let detail = ip(&["-d", "link", "show", "dev", &host_veth_name(&uid_a)]);
    assert!(detail.contains("hairpin on"), "{detail}");
    let bridge_addr = ip(&["-o", "-4", "addr", "show", "dev", &bridge]);
    assert!(
        bridge_addr.contains(&format!("inet {gateway}/24")),
        "{bridge_addr}"
    );
    let nft = Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", &format!("{bridge}-pods")])
        .output()
        .expect("nft");
    let nft = String::from_utf8_lossy(&nft.stdout).to_string();
    assert!(
        nft.contains(&format!(
            "ip saddr {pod_cidr} ip daddr != {cluster_cidr} masquerade"
        )),
        "{nft}"
    );
    assert_eq!(allocations(&s, &bridge), {
        let mut v = vec![(a.clone(), uid_a.clone()), (b.clone(), uid_b.clone())];
        v.sort();
        v
    });

    // A restarted server (and agent) keeps the running pods' addresses and connectivity;
    // a new pod gets another address.
    s.restart().expect("restart the server");
    wait_for(&s, Duration::from_secs(60), "the node Ready again", || {
        let out = s.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "True"
    });
    assert_eq!(ip_of(&s, "web-a"), a);
    assert_eq!(ip_of(&s, "web-b"), b);
    assert_eq!(
        fetch_retrying(&s, "web-a", &format!("http://{b}:8080/")).trim(),
        "this is web-b"
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("web-c"));
    wait_running(&s, "web-c");
    let c = ip_of(&s, "web-c");
    assert!(c.starts_with(&format!("{subnet}.")), "{c}");
    assert!(!BTreeSet::from([a.clone(), b.clone()]).contains(&c), "{c}");
    assert_eq!(
        fetch_retrying(&s, "web-c", &format!("http://{a}:8080/")).trim(),
        "this is web-a"
    );
    let uid_c = uid_of(&s, "web-c");

    // Deleted pods release their addresses and interfaces.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "web-a",
        "web-b",
        "web-c",
        "on-host",
        "--wait=true",
    ]);
    wait_for(
        &s,
        Duration::from_secs(60),
        "the addresses released",
        || allocations(&s, &bridge).is_empty(),
    );
    let links = ip(&["-o", "link", "show"]);
    for uid in [&uid_a, &uid_b, &uid_c] {
        assert!(!links.contains(&host_veth_name(uid)), "{links}");
    }
    assert!(ip(&["-o", "link", "show", "master", &bridge])
        .trim()
        .is_empty());

    // `skiff killall` (what the test harness runs at the end) removes the pod network.
    s.kill9();
    s.killall();
    assert!(
        ip(&["link", "show", "dev", &bridge]).trim().is_empty(),
        "the bridge {bridge} is gone"
    );
    assert!(ip(&["route", "show", &cluster_cidr]).trim().is_empty());
    let table = Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", &format!("{bridge}-pods")])
        .output()
        .expect("nft");
    assert!(!table.status.success(), "the nftables table is gone");
}
