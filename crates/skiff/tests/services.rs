//! Services through the node's nftables data plane (the service proxy), driven with the real
//! kubectl and curl from the host, and with test hosts: network namespaces this test makes
//! (a veth pair each, an address in the test's cluster range routed to it) serving
//! busybox httpd; and pods behind Services. Needs root. Every test server has its own
//! network slot (testkit: pod bridge name, service and cluster CIDRs), so the tables
//! (`ip <bridge>-services`) of parallel tests never meet.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::node::wait_for;
use testkit::node::TEST_IMAGE as IMAGE;
use testkit::TestServer;

/// What a test's server owns (testkit's network slot): its bridge name (table
/// `<bridge>-services`), service and cluster ranges.
struct Slot {
    number: u32,
    bridge: String,
    service_net: u8,
    cluster_net: u8,
}

impl Slot {
    fn of(s: &TestServer) -> Slot {
        let n = s
            .network()
            .expect("a server with an agent has a network slot");
        let second_octet = |cidr: String| -> u8 {
            cidr.split('.')
                .nth(1)
                .and_then(|o| o.parse().ok())
                .expect(&cidr)
        };
        Slot {
            number: n.number(),
            bridge: n.bridge(),
            service_net: second_octet(n.service_cidr()),
            cluster_net: second_octet(n.cluster_cidr()),
        }
    }
    fn table(&self) -> String {
        format!("{}-services", self.bridge)
    }
    /// Test host `i`'s address: in the cluster range, outside the node's podCIDR.
    fn host_ip(&self, i: u8) -> String {
        format!("10.{}.250.{}", self.cluster_net, i)
    }
}

fn server() -> (TestServer, Slot) {
    let s = testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")));
    let slot = Slot::of(&s);
    (s, slot)
}

fn nft_table(slot: &Slot) -> String {
    let out = Command::new(nft())
        .args(["list", "table", "ip", &slot.table()])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft() -> &'static str {
    if Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// `curl` from the host; Ok(body) or Err(curl's exit code and message).
fn curl(url: &str, extra: &[&str]) -> Result<String, (i32, String)> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// A TCP connection to `target` is refused (a reset), not left to time out.
fn assert_refused(target: &str) {
    let addr: std::net::SocketAddr = target.parse().expect(target);
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{target}: {e}"
        ),
        Ok(_) => panic!("{target}: connected, expected a refusal"),
    }
}

fn cluster_ip(s: &TestServer, name: &str) -> String {
    s.kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
}

fn node_ip(s: &TestServer) -> String {
    s.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ])
}

/// A test host: a network namespace with one end of a veth pair, `ip` as its address
/// (routed to the other end on the host), running busybox httpd that answers `name`.
struct TestHost {
    netns: String,
    host_veth: String,
    httpd: Option<Child>,
    _www: tempfile::TempDir,
}

impl TestHost {
    fn start(slot: &Slot, i: u8, port: u16) -> TestHost {
        let netns = format!("svh{}-{i}", slot.number);
        let host_veth = format!("svv{}-{i}", slot.number);
        let inner = format!("svi{}-{i}", slot.number);
        let ip = slot.host_ip(i);
        let www = tempfile::tempdir().expect("tempdir");
        std::fs::write(www.path().join("index.html"), format!("{netns}\n")).expect("page");
        // Leftovers of an earlier run with the same names.
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &host_veth])
            .output();
        let mut host = TestHost {
            netns: netns.clone(),
            host_veth: host_veth.clone(),
            httpd: None,
            _www: www,
        };
        let ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.as_str(), "ip"];
            all.extend_from_slice(args);
            all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), netns.clone()],
            [
                "link", "add", &host_veth, "type", "veth", "peer", "name", &inner,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ["link", "set", &inner, "netns", &netns]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ns(&["link", "set", "lo", "up"]),
            ns(&["addr", "add", &format!("{ip}/32"), "dev", &inner]),
            ns(&["link", "set", &inner, "up"]),
            ns(&["route", "add", "default", "dev", &inner]),
            ["link", "set", &host_veth, "up"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ["route", "add", &format!("{ip}/32"), "dev", &host_veth]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ];
        for step in steps {
            let out = Command::new("ip").args(&step).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let httpd = Command::new("ip")
            .args(["netns", "exec", &netns, "/bin/busybox", "httpd", "-f"])
            .args(["-p", &port.to_string(), "-h"])
            .arg(host._www.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        host.httpd = Some(httpd);
        host
    }

    fn name(&self) -> &str {
        &self.netns
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.httpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}

/// The table is gone once the server's node is torn down (`skiff killall`).
fn assert_table_removed(slot: &Slot, s: TestServer) {
    drop(s);
    assert_eq!(nft_table(slot), "", "table {} left behind", slot.table());
}

#[test]
fn the_kubernetes_service_answers_and_services_without_endpoints_refuse() {
    let (s, slot) = server();
    let kubernetes = cluster_ip(&s, "kubernetes");
    assert_eq!(kubernetes, format!("10.{}.0.1", slot.service_net));

    // The API server's own Service, through the proxy, with the admin's certificate.
    let (ca, cert, key) = s.client_pem_files().expect("client credentials");
    let url = format!("https://{kubernetes}/version");
    let creds = [
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    wait_for(
        &s,
        Duration::from_secs(30),
        "the kubernetes Service",
        || curl(&url, &creds).is_ok(),
    );
    let version: serde_json::Value =
        serde_json::from_str(&curl(&url, &creds).unwrap()).expect("version JSON");
    assert!(version["gitVersion"].is_string(), "{version}");

    // No endpoints: connection refused (curl exit 7), not a timeout (28). Likewise a port
    // the Service does not have, an address nobody holds and a NodePort without endpoints.
    s.kubectl_ok(&["create", "service", "clusterip", "empty", "--tcp=80:8080"]);
    s.kubectl_ok(&["create", "service", "nodeport", "empty-np", "--tcp=80:8080"]);
    let empty = cluster_ip(&s, "empty");
    let node_port = s.kubectl_ok(&[
        "get",
        "service",
        "empty-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node = node_ip(&s);
    for target in [
        format!("{empty}:80"),
        format!("{kubernetes}:8443"),
        format!("10.{}.255.254:80", slot.service_net),
        format!("{node}:{node_port}"),
    ] {
        assert_refused(&target);
    }
    assert!(nft_table(&slot).contains("nodeports"));
    assert_table_removed(&slot, s);
}

#[test]
fn a_service_follows_its_endpoint_slice_to_test_hosts() {
    let (s, slot) = server();
    let a = TestHost::start(&slot, 1, 8080);
    let b = TestHost::start(&slot, 2, 8080);

    // A Service without selector (NodePort: also on the node's address), and its slice.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  type: NodePort
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
"#,
    );
    let slice = |ip: &str| {
        format!(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: outside-1
  labels: {{kubernetes.io/service-name: outside}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#
        )
    };
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &slice(&slot.host_ip(1)));
    let ip = cluster_ip(&s, "outside");
    let node_port = s.kubectl_ok(&[
        "get",
        "service",
        "outside",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let cluster_url = format!("http://{ip}/");
    let node_url = format!("http://{}:{node_port}/", node_ip(&s));
    let answers =
        |url: &str, host: &TestHost| curl(url, &[]).is_ok_and(|body| body.trim() == host.name());
    wait_for(
        &s,
        Duration::from_secs(30),
        "the ClusterIP to reach host 1",
        || answers(&cluster_url, &a),
    );
    wait_for(
        &s,
        Duration::from_secs(30),
        "the NodePort to reach host 1",
        || answers(&node_url, &a),
    );

    // The slice now points at the other host: traffic moves.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &slice(&slot.host_ip(2)));
    wait_for(
        &s,
        Duration::from_secs(30),
        "the ClusterIP to reach host 2",
        || answers(&cluster_url, &b),
    );
    assert!(answers(&node_url, &b), "the NodePort follows too");
    let table = nft_table(&slot);
    assert!(
        table.contains(&format!("dnat to {}:8080", slot.host_ip(2))),
        "{table}"
    );
    assert!(
        !table.contains(&format!("dnat to {}:8080", slot.host_ip(1))),
        "{table}"
    );

    // ClientIP session affinity: with both hosts behind it, this client keeps one.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: sticky}}
spec:
  sessionAffinity: ClientIP
  ports: [{{port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sticky-1
  labels: {{kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
- addresses: ["{}", "{}"]
"#,
            slot.host_ip(1),
            slot.host_ip(2)
        ),
    );
    let sticky_url = format!("http://{}/", cluster_ip(&s, "sticky"));
    wait_for(&s, Duration::from_secs(30), "the sticky Service", || {
        curl(&sticky_url, &[]).is_ok()
    });
    let first = curl(&sticky_url, &[]).unwrap();
    assert!([a.name(), b.name()].contains(&first.trim()), "{first}");
    for _ in 0..10 {
        assert_eq!(curl(&sticky_url, &[]).unwrap(), first, "affinity holds");
    }

    // The rules outlive the agent: with the server and its agent dead, traffic still flows.
    let mut s = s;
    s.kill9();
    assert!(answers(&cluster_url, &b), "served while the agent is down");
    // A restarted agent adopts the table: one atomic rebuild drops what it does not own.
    let t = slot.table();
    for cmd in [
        format!("add chain ip {t} stale-chain"),
        format!(
            "add element ip {t} service-ips {{ 10.{}.255.1 . tcp . 80 : goto stale-chain }}",
            slot.service_net
        ),
    ] {
        let out = Command::new(nft())
            .args(cmd.split(' '))
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.restart().expect("restart the server");
    wait_for(&s, Duration::from_secs(60), "the stale chain to go", || {
        let table = nft_table(&slot);
        !table.contains("stale-chain") && table.contains("default/outside/")
    });
    assert!(answers(&cluster_url, &b), "served after the restart");

    // Deleting the Service removes its rules.
    s.kubectl_ok(&["delete", "service", "outside"]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "the Service's rules to go",
        || !nft_table(&slot).contains("default/outside/"),
    );
    assert_refused(&format!("{ip}:80"));
    assert_table_removed(&slot, s);
}

fn apply(s: &TestServer, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

/// A container that serves its hostname (the pod's name) on 8080.
fn httpd_container() -> String {
    format!(
        r#"{{name: httpd, image: "{IMAGE}", command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}}"#
    )
}

/// `wget` inside pod `pod`, `n` times in one exec; the bodies, one per line.
fn wget_from(s: &TestServer, pod: &str, url: &str, n: usize) -> Vec<String> {
    // busybox wget -T crashes, hence timeout(1).
    let script =
        format!("for i in $(seq 1 {n}); do timeout 5 wget -q -O - {url} || echo FAILED; done");
    let out = s.kubectl(&["exec", pod, "--", "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn pods_reach_a_deployment_and_themselves_through_cluster_ips() {
    let (s, _slot) = server();
    let httpd = httpd_container();
    apply(
        &s,
        &format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{httpd}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: loner, labels: {{app: loner}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{httpd}]
---
apiVersion: v1
kind: Service
metadata: {{name: loner}}
spec:
  selector: {{app: loner}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: client, image: "{IMAGE}", command: ["sleep", "3600"]}}
"#
        ),
    );
    wait_for(&s, Duration::from_secs(90), "the pods to run", || {
        let out = s.kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}{\" \"}{.status.podIP}{\"\\n\"}{end}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = text.lines().collect();
        lines.len() == 5
            && lines.iter().all(|l| {
                let mut parts = l.split_whitespace();
                parts.next() == Some("Running") && parts.next().is_some()
            })
    });
    let web: Vec<String> = s
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(web.len(), 3, "{web:?}");

    // From another pod: repeated requests to the ClusterIP reach all three pods.
    let url = format!("http://{}/", cluster_ip(&s, "web"));
    wait_for(
        &s,
        Duration::from_secs(60),
        "the Service to answer a pod",
        || {
            wget_from(&s, "client", &url, 1)
                .first()
                .is_some_and(|body| web.contains(body))
        },
    );
    let bodies = wget_from(&s, "client", &url, 30);
    assert_eq!(bodies.len(), 30, "{bodies:?}");
    let mut seen: Vec<&String> = bodies.iter().collect();
    seen.sort();
    seen.dedup();
    let mut want: Vec<&String> = web.iter().collect();
    want.sort();
    assert_eq!(
        seen, want,
        "every answer comes from a web pod, and all three answer"
    );

    // A pod reaching itself through its own Service (hairpin).
    let url = format!("http://{}/", cluster_ip(&s, "loner"));
    wait_for(&s, Duration::from_secs(60), "loner to reach itself", || {
        wget_from(&s, "loner", &url, 1).first().map(String::as_str) == Some("loner")
    });
    assert_eq!(wget_from(&s, "loner", &url, 5), vec!["loner"; 5]);
}
