//! The pod network's side effects on this machine (as root): two network namespaces
//! attached to a bridge of their own reach each other and themselves, re-attaching is
//! idempotent, and removing the host side leaves nothing behind. Uses a unique bridge name
//! and a range no test server or test host uses (10.251.0.0/16), and cleans up even on failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use network::pod_network::{remove_host, PodNetwork, PodNetworkConfig};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("/usr/sbin/ip")
        .args(args)
        .output()
        .expect("run ip")
}

/// Network namespaces made with `ip netns add`, deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Removes the host side on drop (also when the test fails).
struct Host(PathBuf);

impl Drop for Host {
    fn drop(&mut self) {
        if let Err(e) = remove_host(&self.0) {
            eprintln!("remove_host: {e}");
        }
    }
}

fn in_ns(ns: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["netns", "exec", ns];
    args.extend(cmd);
    ip(&args)
}

#[test]
fn pods_on_one_bridge_reach_each_other_and_everything_is_removed() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tag = format!("{:05}", std::process::id() % 100_000);
    let bridge = format!("sktu{tag}");
    let names = Namespaces(vec![format!("skt-a-{tag}"), format!("skt-b-{tag}")]);
    for n in &names.0 {
        assert!(ip(&["netns", "add", n]).status.success());
        assert!(in_ns(n, &["ip", "link", "set", "lo", "up"])
            .status
            .success());
    }
    let state = tempfile::tempdir().unwrap();
    let _host = Host(state.path().to_path_buf());
    let net = PodNetwork::new(PodNetworkConfig {
        bridge: bridge.clone(),
        cluster_cidr: "10.251.0.0/16".parse().unwrap(),
        state_dir: state.path().to_path_buf(),
    })
    .unwrap();
    let node = "10.251.3.0/24".parse().unwrap();
    let path = |n: &str| Path::new("/run/netns").join(n);
    let a = net.attach(node, "uid-a", &path(&names.0[0])).unwrap();
    let b = net.attach(node, "uid-b", &path(&names.0[1])).unwrap();
    assert_eq!(a.to_string(), "10.251.3.2");
    assert_eq!(b.to_string(), "10.251.3.3");
    // Attaching again keeps the address and replaces the interface.
    assert_eq!(net.attach(node, "uid-a", &path(&names.0[0])).unwrap(), a);
    // Something else called eth0 left in the namespace, its pair gone: replaced too.
    let host_b = network::pod_network::plan::host_veth_name("uid-b");
    assert!(ip(&["link", "del", &host_b]).status.success());
    assert!(in_ns(
        &names.0[1],
        &["ip", "link", "add", "eth0", "type", "bridge"]
    )
    .status
    .success());
    assert_eq!(net.attach(node, "uid-b", &path(&names.0[1])).unwrap(), b);
    let eth0 =
        String::from_utf8_lossy(&in_ns(&names.0[1], &["ip", "-d", "link", "show", "eth0"]).stdout)
            .to_string();
    assert!(eth0.contains("veth"), "{eth0}");

    let ping =
        |ns: &str, to: &str| in_ns(ns, &["/usr/bin/busybox", "ping", "-c", "1", "-W", "2", to]);
    let out = ping(&names.0[0], &b.to_string());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ping(&names.0[1], "10.251.3.1");
    assert!(
        out.status.success(),
        "the gateway answers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes = String::from_utf8_lossy(&in_ns(&names.0[0], &["ip", "route"]).stdout).to_string();
    assert!(
        routes.contains("default via 10.251.3.1 dev eth0"),
        "{routes}"
    );
    let link = String::from_utf8_lossy(
        &ip(&[
            "-d",
            "link",
            "show",
            "dev",
            &network::pod_network::plan::host_veth_name("uid-a"),
        ])
        .stdout,
    )
    .to_string();
    assert!(link.contains(&format!("master {bridge}")), "{link}");
    assert!(link.contains("hairpin on"), "{link}");
    // IPv4 only: no IPv6 address on either veth end (no DAD or MLD traffic on the
    // bridge); the pod's loopback keeps ::1.
    let host_veth = network::pod_network::plan::host_veth_name("uid-a");
    let host_v6 =
        String::from_utf8_lossy(&ip(&["-6", "addr", "show", "dev", &host_veth]).stdout).to_string();
    assert!(!host_v6.contains("inet6"), "{host_v6}");
    let pod_v6 =
        String::from_utf8_lossy(&in_ns(&names.0[0], &["ip", "-6", "addr"]).stdout).to_string();
    assert!(pod_v6.contains("inet6 ::1"), "{pod_v6}");
    assert!(!pod_v6.contains("eth0"), "{pod_v6}");
    let host_routes =
        String::from_utf8_lossy(&ip(&["route", "show", "10.251.0.0/16"]).stdout).to_string();
    assert!(
        host_routes.contains("blackhole 10.251.0.0/16"),
        "{host_routes}"
    );
    let table = Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", &format!("{bridge}-pods")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("ip saddr 10.251.3.0/24 ip daddr != 10.251.0.0/16 masquerade"),
        "{table}"
    );

    net.detach("uid-b").unwrap();
    net.detach("uid-b").unwrap();
    assert!(!ip(&[
        "link",
        "show",
        "dev",
        &network::pod_network::plan::host_veth_name("uid-b")
    ])
    .status
    .success());
    // Only uid-a's address is still allocated: one allocation file, one index entry.
    let names_in = |dir: std::path::PathBuf| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let allocated: Vec<String> = names_in(net.ipam_dir())
        .into_iter()
        .filter(|name| name != "last_reserved_ip.0" && name != "by-pod")
        .collect();
    assert_eq!(allocated.len(), 1, "{allocated:?}");
    assert_eq!(names_in(net.ipam_dir().join("by-pod")), vec!["uid-a"]);

    remove_host(state.path()).unwrap();
    assert!(
        !ip(&["link", "show", "dev", &bridge]).status.success(),
        "the bridge is gone"
    );
    assert!(
        String::from_utf8_lossy(&ip(&["route", "show", "10.251.0.0/16"]).stdout)
            .trim()
            .is_empty()
    );
    assert!(!Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", &format!("{bridge}-pods")])
        .output()
        .unwrap()
        .status
        .success());
    assert!(!net.ipam_dir().exists());
}
