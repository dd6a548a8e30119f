//! A UDP Service whose endpoint is replaced while a client keeps its source port, as a
//! resolver does with the cluster DNS: the node's service proxy must delete the conntrack
//! flow that still points at the old endpoint (kube-proxy's stale UDP entry cleanup), or
//! the client keeps reaching the old endpoint for as long as it keeps sending.
//!
//! The endpoints are test hosts (network namespaces this test makes, a veth pair each, an
//! address in the test's cluster range routed to it) where a thread of this test answers
//! UDP datagrams with the host's name: busybox has no UDP server. Needs root.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use testkit::node::wait_for;
use testkit::TestServer;

const PORT: u16 = 5300;

/// A test host answering `<name> <query>` to every datagram on [`PORT`].
struct UdpHost {
    name: String,
    host_veth: String,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl UdpHost {
    fn start(slot: u32, i: u8, address: Ipv4Addr) -> UdpHost {
        let name = format!("suh{slot}-{i}");
        let host_veth = format!("suv{slot}-{i}");
        let inner = format!("sui{slot}-{i}");
        // Leftovers of an earlier run with the same names.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &host_veth])
            .output();
        let mut host = UdpHost {
            name: name.clone(),
            host_veth: host_veth.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        let addr = format!("{address}/32");
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "addr", "add", &addr, "dev", &inner]);
        ip(&["-n", &name, "link", "set", &inner, "up"]);
        ip(&["-n", &name, "route", "add", "default", "dev", &inner]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&["route", "add", &addr, "dev", &host_veth]);

        let netns = std::fs::File::open(Path::new("/run/netns").join(&name)).expect("netns");
        let (stop, me) = (host.stop.clone(), name.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        host.server = Some(std::thread::spawn(move || {
            // setns(2) moves only this thread.
            assert_eq!(
                unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns: {}",
                std::io::Error::last_os_error()
            );
            let socket = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind the UDP server");
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let query = String::from_utf8_lossy(&buf[..n]);
                    let _ = socket.send_to(format!("{me} {query}").as_bytes(), from);
                }
            }
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the UDP server started");
        host
    }
}

impl Drop for UdpHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}

/// A client that keeps one source port, as a resolver's socket does.
struct Client {
    socket: UdpSocket,
    sent: u32,
}

impl Client {
    fn new() -> Client {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the client");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Client { socket, sent: 0 }
    }

    /// Who answers one query to `to` (None on no answer).
    fn ask(&mut self, to: SocketAddr) -> Option<String> {
        self.sent += 1;
        let query = format!("q{}", self.sent);
        self.socket.send_to(query.as_bytes(), to).ok()?;
        let mut buf = [0u8; 512];
        loop {
            let (n, _) = self.socket.recv_from(&mut buf).ok()?;
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            // A late answer to an earlier query is skipped.
            if let Some(host) = reply.strip_suffix(&format!(" {query}")) {
                return Some(host.to_string());
            }
        }
    }
}

fn slice(ip: Ipv4Addr) -> String {
    format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: echo, port: {PORT}, protocol: UDP}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#
    )
}

#[test]
fn a_client_keeping_its_source_port_follows_a_replaced_udp_endpoint() {
    let s: TestServer = testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")));
    let network = s
        .network()
        .expect("a server with an agent has a network slot");
    let cluster_net: u8 = network
        .cluster_cidr()
        .split('.')
        .nth(1)
        .and_then(|o| o.parse().ok())
        .expect("cluster CIDR 10.<n>.0.0/16");
    // In the cluster range, outside the node's podCIDR.
    let host_ip = |i: u8| Ipv4Addr::new(10, cluster_net, 251, i);
    let a = UdpHost::start(network.number(), 1, host_ip(1));
    let b = UdpHost::start(network.number(), 2, host_ip(2));

    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  ports: [{{name: echo, port: {PORT}, protocol: UDP}}]
"#
        ),
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &slice(host_ip(1)));
    let cluster_ip: Ipv4Addr = s
        .kubectl_ok(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .parse()
        .expect("a ClusterIP");
    let service = SocketAddr::from((cluster_ip, PORT));
    let mut client = Client::new();
    let port = client.socket.local_addr().unwrap().port();
    wait_for(
        &s,
        Duration::from_secs(30),
        "the ClusterIP to answer from host 1",
        || client.ask(service).as_deref() == Some(a.name.as_str()),
    );

    // The endpoint is replaced; host 1 keeps answering whatever reaches it, so only the
    // deleted flow can bring the client (same socket, same source port) to host 2.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &slice(host_ip(2)));
    let mut last = None;
    wait_for(
        &s,
        Duration::from_secs(30),
        "the same client to be answered by host 2",
        || {
            last = client.ask(service);
            last.as_deref() == Some(b.name.as_str())
        },
    );
    assert_eq!(client.socket.local_addr().unwrap().port(), port);
    println!(
        "after {} queries from port {port}: answered by {last:?}",
        client.sent
    );
}
