//! Host ports (`containerPort` with `hostPort`) on a single-node `skiff server`, driven
//! with the real kubectl and the busybox test image: a pod's port answers at the node's
//! address from this process, from another pod and from the pod itself; a second pod
//! asking for the same port stays Pending with the scheduler's message; the mapping is
//! rebuilt by a restarted agent even when its nftables table was removed meanwhile; it goes
//! with the pod; UDP is mapped too; `skiff killall` removes the table. Needs root.
//!
//! Parallel test servers share this machine's network namespace, and a host port answers
//! on all of its addresses: each test uses its own port, below both the NodePort range
//! (other tests' Services) and the ephemeral range (other tests' listeners).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use testkit::node::{
    fetch_retrying, status_column, wait_for, wait_node_ready, wait_running, TEST_IMAGE as IMAGE,
};
use testkit::TestServer;

const TCP_PORT: u16 = 29911;
const UDP_PORT: u16 = 29912;

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn web_pod(name: &str, host_port: u16) -> String {
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
    ports:
    - containerPort: 8080
      hostPort: {host_port}
"#
    )
}

fn sleeper(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: {IMAGE}
    command: ["sleep", "3600"]
"#
    )
}

fn node_ip(s: &TestServer) -> String {
    s.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}"#,
    ])
    .trim()
    .to_string()
}

fn pod_ip(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
        .trim()
        .to_string()
}

/// An HTTP/1.0 GET of `/` from this process; the response's body.
fn http_get(address: &str) -> std::io::Result<String> {
    let address: SocketAddr = address.parse().expect("a socket address");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

fn nft_table(table: &str) -> String {
    let out = Command::new("/usr/sbin/nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn delete_table(table: &str) {
    let _ = Command::new("/usr/sbin/nft")
        .args(["delete", "table", "ip", table])
        .output();
}

#[test]
fn a_host_port_answers_on_the_node_survives_restarts_and_goes_with_its_pod() {
    let mut s = server_with_node();
    let table = format!(
        "{}-hostports",
        s.network().expect("a network slot").bridge()
    );
    let node = node_ip(&s);
    let published = format!("{node}:{TCP_PORT}");

    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("web", TCP_PORT));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &sleeper("client"));
    wait_running(&s, "web");
    wait_running(&s, "client");
    let web_ip = pod_ip(&s, "web");

    // From this process (the node itself), at the node's address.
    wait_for(
        &s,
        Duration::from_secs(30),
        "web at the node's address",
        || http_get(&published).is_ok_and(|body| body.trim() == "this is web"),
    );
    let rules = nft_table(&table);
    assert!(
        rules.contains(&format!("dport {TCP_PORT}"))
            && rules.contains(&format!("dnat to {web_ip}:8080")),
        "{rules}"
    );

    // From another pod, and from the pod itself (hairpin), through the node's address.
    let url = format!("http://{published}/");
    assert_eq!(fetch_retrying(&s, "client", &url).trim(), "this is web");
    assert_eq!(fetch_retrying(&s, "web", &url).trim(), "this is web");

    // The port is taken on the only node: a second pod asking for it is not scheduled.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("web-2", TCP_PORT));
    let message = || {
        s.kubectl_ok(&[
            "get",
            "pod",
            "web-2",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}"#,
        ])
    };
    wait_for(&s, Duration::from_secs(30), "web-2 unschedulable", || {
        message().starts_with(
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.",
        )
    });
    assert_eq!(status_column(&s, "web-2"), "Pending");
    // Gone before web, or it would take the port when web goes.
    s.kubectl_ok(&["delete", "pod", "web-2", "--wait=true"]);

    // A restarted agent rebuilds the mapping from the pods on disk, even when the table
    // was removed while it was down.
    s.kill9();
    delete_table(&table);
    s.restart().expect("restart the server");
    wait_node_ready(&s);
    wait_for(
        &s,
        Duration::from_secs(60),
        "web again after the restart",
        || http_get(&published).is_ok_and(|body| body.trim() == "this is web"),
    );
    assert_eq!(fetch_retrying(&s, "client", &url).trim(), "this is web");

    // Deleting the pod withdraws the port: nothing answers there any more, and the table
    // goes with the node's last mapping.
    s.kubectl_ok(&["delete", "pod", "web", "--wait=true"]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "the port withdrawn",
        || matches!(http_get(&published), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
    );
    assert_eq!(nft_table(&table), "");
}

/// The `Udp: ... NoPorts ...` counter of the pod's network namespace: datagrams that
/// reached it for a port nothing listens on (busybox has no UDP server).
fn udp_no_ports(s: &TestServer, pod: &str) -> u64 {
    let snmp = s.kubectl_ok(&["exec", pod, "--", "cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in /proc/net/snmp:\n{snmp}");
    };
    let column = names
        .split_whitespace()
        .position(|n| n == "NoPorts")
        .expect("a NoPorts column");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .expect("a NoPorts value")
}

#[test]
fn a_udp_host_port_reaches_the_pod_and_killall_removes_it() {
    let mut s = server_with_node();
    let table = format!(
        "{}-hostports",
        s.network().expect("a network slot").bridge()
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: udp}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: {IMAGE}
    command: ["sleep", "3600"]
    ports:
    - containerPort: 9000
      hostPort: {UDP_PORT}
      protocol: UDP
"#
        ),
    );
    wait_running(&s, "udp");
    let before = udp_no_ports(&s, "udp");
    let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    let target = format!("{}:{UDP_PORT}", node_ip(&s));
    wait_for(&s, Duration::from_secs(30), "a datagram in the pod", || {
        socket
            .send_to(b"hello", target.as_str())
            .expect("send a datagram");
        std::thread::sleep(Duration::from_millis(200));
        udp_no_ports(&s, "udp") > before
    });
    let udp_ip = pod_ip(&s, "udp");
    let rules = nft_table(&table);
    assert!(
        rules.contains(&format!("udp dport {UDP_PORT}"))
            && rules.contains(&format!("dnat to {udp_ip}:9000")),
        "{rules}"
    );

    // `skiff killall` (k3s-killall.sh) removes the table with the pods.
    s.kill9();
    s.killall();
    assert_eq!(nft_table(&table), "");
}
