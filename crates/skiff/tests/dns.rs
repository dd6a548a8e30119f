//! The built-in cluster DNS, asked directly over UDP and TCP at the server's DNS port (pods
//! have no routable address yet): Services, headless endpoints with hostnames, SRV for
//! named ports, ExternalName CNAMEs, PTR, pod names, NXDOMAIN with the zone's SOA, answers
//! that follow `kubectl delete` and endpoint changes, and names outside the cluster domain
//! forwarded to a fake upstream resolver on loopback (no query ever leaves the machine).

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use dns::proto::rr::rdata::A;
use dns::proto::rr::{Name, RData, Record, RecordType};
use testkit::node::wait_for;
use testkit::{ServerOptions, TestServer};

const NS: &str = "dns-test";

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A tiny upstream resolver on 127.0.0.1: `outside.example` and `ext-target.example` have
/// A records, every other name is NXDOMAIN. It remembers every name it was asked.
struct FakeUpstream {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first() else {
                    continue;
                };
                let name = q.name().to_ascii().to_ascii_lowercase();
                seen.lock().unwrap().push(name.clone());
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                reply.add_query(q.clone());
                let address = match name.as_str() {
                    "outside.example." => Some([203, 0, 113, 7]),
                    "ext-target.example." => Some([203, 0, 113, 8]),
                    _ => None,
                };
                match address {
                    Some(ip) if q.query_type() == RecordType::A => {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            30,
                            RData::A(A(ip.into())),
                        ));
                    }
                    Some(_) => {}
                    None => reply.metadata.response_code = ResponseCode::NXDomain,
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        FakeUpstream {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One DNS query, over UDP or TCP.
fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let bytes = query.to_vec().expect("encode");
    let answer = if tcp {
        let mut stream = TcpStream::connect(server).expect("connect DNS over TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        use std::io::{Read, Write};
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).expect("send");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).expect("read length");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).expect("read answer");
        buf
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket.send_to(&bytes, server).expect("send");
        let mut buf = vec![0u8; 65535];
        let (n, _) = socket.recv_from(&mut buf).expect("DNS answer over UDP");
        buf.truncate(n);
        buf
    };
    let message = Message::from_vec(&answer).expect("decode answer");
    assert_eq!(message.metadata.id, query.metadata.id);
    assert_eq!(message.metadata.message_type, MessageType::Response);
    message
}

/// The answers' data as text (`10.43.0.20`, `0 50 5432 db-0.db...`), sorted.
fn data(message: &Message, rtype: RecordType) -> Vec<String> {
    let mut out: Vec<String> = message
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .map(|r| r.data.to_string())
        .collect();
    out.sort();
    out
}

fn fqdn(name: &str) -> String {
    format!("{name}.{NS}.svc.cluster.local.")
}

fn start(dns_port: u16, upstream: &FakeUpstream, extra: &[&str]) -> TestServer {
    let mut opts = ServerOptions::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--cluster-dns-port")
        .arg(&dns_port.to_string())
        .arg("--cluster-dns-upstream")
        .arg(&upstream.addr.to_string());
    for a in extra {
        opts = opts.arg(a);
    }
    TestServer::start(opts).expect("start skiff server")
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports:
  - {name: pg, port: 5432, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-manual
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports:
- {name: pg, port: 5432, protocol: TCP}
endpoints:
- addresses: [10.42.7.10]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.42.7.11]
  hostname: db-1
  conditions: {ready: true}
- addresses: [10.42.7.12]
  hostname: db-2
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: ext-target.example
"#;

#[test]
fn cluster_dns_answers_services_endpoints_pods_and_forwards_the_rest() {
    let upstream = FakeUpstream::start();
    let port = free_dns_port();
    let mut s = start(port, &upstream, &[]);
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();

    // The kube-dns Service, as k3s shows CoreDNS's, pointing at this server's DNS port.
    let svc = s.kubectl_json(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}/{} -> {}",
                p["name"].as_str().unwrap(),
                p["port"],
                p["protocol"].as_str().unwrap(),
                p["targetPort"]
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            format!("dns 53/UDP -> {port}"),
            format!("dns-tcp 53/TCP -> {port}")
        ]
    );
    let slice = s.kubectl_json(&[
        "get",
        "endpointslices",
        "-n",
        "kube-system",
        "-l",
        "kubernetes.io/service-name=kube-dns",
        "-o",
        "json",
    ]);
    assert_eq!(
        slice["items"][0]["endpoints"][0]["addresses"][0],
        "127.0.0.1"
    );
    assert_eq!(slice["items"][0]["ports"][0]["port"], port);

    // The API server's own Service answers once the DNS has listed the cluster.
    wait_for(
        &s,
        Duration::from_secs(30),
        "kubernetes.default to resolve",
        || {
            data(
                &ask(
                    dns,
                    "kubernetes.default.svc.cluster.local.",
                    RecordType::A,
                    false,
                ),
                RecordType::A,
            ) == ["10.43.0.1"]
        },
    );

    s.kubectl_ok(&["create", "namespace", NS]);
    s.kubectl_stdin_ok(&["apply", "-n", NS, "-f", "-"], OBJECTS);
    let web_ip = s.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "the new Services to resolve",
        || {
            let web = ask(dns, &fqdn("web"), RecordType::A, false);
            let db = ask(dns, &fqdn("db"), RecordType::A, false);
            data(&web, RecordType::A) == [web_ip.as_str()] && data(&db, RecordType::A).len() == 2
        },
    );

    // A ClusterIP Service, over UDP and over TCP: authoritative, TTL 5.
    for tcp in [false, true] {
        let web = ask(dns, &fqdn("web"), RecordType::A, tcp);
        assert_eq!(web.metadata.response_code, ResponseCode::NoError);
        assert!(web.metadata.authoritative);
        assert_eq!(data(&web, RecordType::A), [web_ip.as_str()], "tcp={tcp}");
        assert_eq!(web.answers[0].ttl, 5);
    }
    // Mixed case asks the same name.
    let upper = ask(dns, &fqdn("WEB").to_uppercase(), RecordType::A, false);
    assert_eq!(data(&upper, RecordType::A), [web_ip.as_str()]);

    // SRV for a named port, with the target's address in the additional section.
    let srv = ask(
        dns,
        &format!("_http._tcp.{}", fqdn("web")),
        RecordType::SRV,
        false,
    );
    assert_eq!(
        data(&srv, RecordType::SRV),
        [format!("0 100 80 {}", fqdn("web"))]
    );
    assert!(srv
        .additionals
        .iter()
        .any(|r| r.data.to_string() == web_ip && r.name.to_ascii() == fqdn("web")));
    let udp_srv = ask(
        dns,
        &format!("_dns._udp.{}", fqdn("web")),
        RecordType::SRV,
        true,
    );
    assert_eq!(
        data(&udp_srv, RecordType::SRV),
        [format!("0 100 53 {}", fqdn("web"))]
    );

    // Headless: the ready endpoints, each by its hostname; SRV per endpoint.
    let db = ask(dns, &fqdn("db"), RecordType::A, false);
    assert_eq!(data(&db, RecordType::A), ["10.42.7.10", "10.42.7.11"]);
    let db0 = ask(dns, &format!("db-0.{}", fqdn("db")), RecordType::A, false);
    assert_eq!(data(&db0, RecordType::A), ["10.42.7.10"]);
    let db_srv = ask(
        dns,
        &format!("_pg._tcp.{}", fqdn("db")),
        RecordType::SRV,
        true,
    );
    assert_eq!(
        data(&db_srv, RecordType::SRV),
        [
            format!("0 50 5432 db-0.{}", fqdn("db")),
            format!("0 50 5432 db-1.{}", fqdn("db"))
        ]
    );
    let unready = ask(dns, &format!("db-2.{}", fqdn("db")), RecordType::A, false);
    assert_eq!(unready.metadata.response_code, ResponseCode::NXDomain);

    // PTR for a ClusterIP and for a headless endpoint.
    let octets: Vec<&str> = web_ip.split('.').rev().collect();
    let ptr = ask(
        dns,
        &format!("{}.in-addr.arpa.", octets.join(".")),
        RecordType::PTR,
        false,
    );
    assert_eq!(data(&ptr, RecordType::PTR), [fqdn("web")]);
    let ptr = ask(dns, "10.7.42.10.in-addr.arpa.", RecordType::PTR, false);
    assert_eq!(
        data(&ptr, RecordType::PTR),
        [format!("db-0.{}", fqdn("db"))]
    );

    // ExternalName: the CNAME, and for an address query the target's address from upstream.
    let cname = ask(dns, &fqdn("ext"), RecordType::CNAME, false);
    assert_eq!(data(&cname, RecordType::CNAME), ["ext-target.example."]);
    let ext = ask(dns, &fqdn("ext"), RecordType::A, false);
    assert_eq!(data(&ext, RecordType::CNAME), ["ext-target.example."]);
    assert_eq!(data(&ext, RecordType::A), ["203.0.113.8"]);

    // Pod names (`pods insecure`), the schema version, and a missing name: NXDOMAIN with
    // the zone's SOA.
    let pod = ask(
        dns,
        &format!("10-42-0-5.{NS}.pod.cluster.local."),
        RecordType::A,
        false,
    );
    assert_eq!(data(&pod, RecordType::A), ["10.42.0.5"]);
    let version = ask(dns, "dns-version.cluster.local.", RecordType::TXT, false);
    assert_eq!(data(&version, RecordType::TXT), ["1.1.0"]);
    let missing = ask(dns, &fqdn("nope"), RecordType::A, false);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.answers.is_empty());
    assert!(
        missing
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "cluster.local."),
        "{missing:?}"
    );
    let nodata = ask(dns, &fqdn("web"), RecordType::AAAA, false);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());

    // Outside the cluster domain: the upstream answers, over UDP and TCP alike.
    for tcp in [false, true] {
        let outside = ask(dns, "outside.example.", RecordType::A, tcp);
        assert_eq!(data(&outside, RecordType::A), ["203.0.113.7"], "tcp={tcp}");
        assert!(outside.metadata.recursion_available);
    }
    let unknown = ask(dns, "unknown.example.", RecordType::A, false);
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    let asked = upstream.asked();
    assert!(asked.iter().any(|n| n == "outside.example."), "{asked:?}");
    assert!(
        !asked.iter().any(|n| n.ends_with("cluster.local.")),
        "cluster names went upstream: {asked:?}"
    );

    // An answer too big for a plain UDP message is truncated there; TCP carries it whole.
    let endpoints: String = (1..=60)
        .map(|i| format!("- addresses: [10.42.8.{i}]\n"))
        .collect();
    s.kubectl_stdin_ok(
        &["apply", "-n", NS, "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: big}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-1, labels: {{kubernetes.io/service-name: big}}}}\naddressType: IPv4\nendpoints:\n{endpoints}"
        ),
    );
    wait_for(
        &s,
        Duration::from_secs(30),
        "big to resolve over TCP",
        || data(&ask(dns, &fqdn("big"), RecordType::A, true), RecordType::A).len() == 60,
    );
    let truncated = ask(dns, &fqdn("big"), RecordType::A, false);
    assert!(truncated.metadata.truncation, "{truncated:?}");
    assert!(truncated.answers.len() < 60);

    // Changes follow: an endpoint leaves, another becomes ready, a Service is deleted.
    s.kubectl_ok(&[
        "patch",
        "endpointslice",
        "db-manual",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/endpoints/0"},{"op":"replace","path":"/endpoints/1/conditions/ready","value":true}]"#,
    ]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "db's endpoints to change",
        || {
            data(&ask(dns, &fqdn("db"), RecordType::A, false), RecordType::A)
                == ["10.42.7.11", "10.42.7.12"]
        },
    );
    let gone = ask(dns, &format!("db-0.{}", fqdn("db")), RecordType::A, false);
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

    s.kubectl_ok(&["delete", "svc", "web", "-n", NS]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "web to be gone from DNS",
        || {
            ask(dns, &fqdn("web"), RecordType::A, true)
                .metadata
                .response_code
                == ResponseCode::NXDomain
        },
    );
    let ptr = ask(
        dns,
        &format!("{}.in-addr.arpa.", octets.join(".")),
        RecordType::PTR,
        false,
    );
    assert!(data(&ptr, RecordType::PTR).is_empty());

    // A restart keeps the kube-dns objects as they are (nothing to correct) and answers
    // again once the cluster is listed.
    let uid = svc["metadata"]["uid"].clone();
    s.restart().expect("restart");
    let again = s.kubectl_json(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"]);
    assert_eq!(again["metadata"]["uid"], uid);
    wait_for(
        &s,
        Duration::from_secs(30),
        "db to resolve after a restart",
        || {
            data(&ask(dns, &fqdn("db"), RecordType::A, false), RecordType::A)
                == ["10.42.7.11", "10.42.7.12"]
        },
    );
}

#[test]
fn disable_coredns_leaves_no_kube_dns_and_no_listener() {
    let upstream = FakeUpstream::start();
    let port = free_dns_port();
    let s = start(port, &upstream, &["--disable", "coredns"]);
    let out = s.kubectl(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"kube-dns\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing listens on the DNS port.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn kube_dns_takes_the_tenth_address_of_the_service_cidr_by_default() {
    let upstream = FakeUpstream::start();
    let port = free_dns_port();
    let s = start(port, &upstream, &["--service-cidr", "10.96.0.0/16"]);
    let ip = s.kubectl_ok(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(ip, "10.96.0.10");
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(&s, Duration::from_secs(30), "kube-dns to resolve", || {
        data(
            &ask(
                dns,
                "kube-dns.kube-system.svc.cluster.local.",
                RecordType::A,
                false,
            ),
            RecordType::A,
        ) == ["10.96.0.10"]
    });
    let ns = ask(dns, "ns.dns.cluster.local.", RecordType::A, false);
    assert_eq!(data(&ns, RecordType::A), ["10.96.0.10"]);
}
