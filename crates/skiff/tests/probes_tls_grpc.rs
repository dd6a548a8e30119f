//! HTTPS httpGet probes and gRPC probes on a single-node `skiff server`, checked with the
//! real kubectl. The busybox test image has neither a TLS nor a gRPC server, so the test
//! serves them itself, inside the pod's network namespace: a thread enters the namespace
//! (the agent keeps it bound at `<data-dir>/agent/pods/<uid>/netns`), makes the listening
//! socket, and leaves; the socket stays in the pod's namespace, where the probes connect to
//! it, and the test's own threads answer on it. Needs root (namespaces, mounts, cgroups).

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::node::{wait_for, TEST_IMAGE as IMAGE};
use testkit::TestServer;

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn pod_json(s: &TestServer, pod: &str) -> serde_json::Value {
    s.kubectl_json(&["get", "pod", pod, "-o", "json"])
}

fn container_status(s: &TestServer, pod: &str) -> serde_json::Value {
    pod_json(s, pod)["status"]["containerStatuses"][0].clone()
}

fn events_of(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ])
}

/// The pod's network namespace, once its sandbox exists.
fn pod_netns(s: &TestServer, pod: &str) -> PathBuf {
    let mut netns = PathBuf::new();
    wait_for(s, Duration::from_secs(60), "the pod's sandbox", || {
        let uid = s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"]);
        netns = s
            .data_dir()
            .join("agent/pods")
            .join(uid.trim())
            .join("netns");
        !uid.trim().is_empty() && netns.exists()
    });
    netns
}

/// A socket listening on `port` inside the network namespace bound at `netns`. setns(2)
/// moves only the calling thread, so a short-lived thread enters, binds and ends; the socket
/// keeps the namespace it was made in.
fn listen_in(netns: &Path, port: u16) -> TcpListener {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&netns).expect("open the pod's netns");
        // SAFETY: setns on this thread only, with a namespace descriptor we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        TcpListener::bind(("0.0.0.0", port)).expect("listen in the pod's netns")
    })
    .join()
    .expect("the netns thread")
}

/// What the HTTPS server answers and what it saw.
#[derive(Default)]
struct HttpsState {
    /// The status of `/live/status` (where `/live` redirects on the same host).
    live: AtomicU16,
    /// The request head of the last `/healthz` request.
    last_healthz: Mutex<String>,
}

/// Serves HTTPS on `listener` with a self-signed certificate for a name the probe never
/// dials: `/healthz` 200, `/live` a redirect to `/live/status` (answering `state.live`),
/// `/moved` a redirect to another host.
fn serve_https(listener: TcpListener, state: Arc<HttpsState>) {
    let cert = rcgen::generate_simple_self_signed(vec!["web.example".to_string()])
        .expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server certificate"),
    );
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, state) = (config.clone(), state.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let (status, location, body) = match path.as_str() {
                    "/healthz" => {
                        *state.last_healthz.lock().unwrap() = head.clone();
                        (200, "", "ok".to_string())
                    }
                    "/live" => (302, "/live/status", String::new()),
                    "/live/status" => (state.live.load(Ordering::SeqCst), "", String::new()),
                    "/moved" => (
                        301,
                        "https://elsewhere.example/",
                        "moved elsewhere".to_string(),
                    ),
                    _ => (404, "", String::new()),
                };
                let location = if location.is_empty() {
                    String::new()
                } else {
                    format!("Location: {location}\r\n")
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
}

#[test]
fn https_probes_gate_readiness_and_restart_unhealthy_containers() {
    let s = server_with_node();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: tls}}
spec:
  containers:
  - name: web
    image: {IMAGE}
    command: ["sleep", "3600"]
    ports: [{{name: https, containerPort: 8443}}]
    startupProbe:
      httpGet: {{scheme: HTTPS, path: /moved, port: https}}
      periodSeconds: 1
      failureThreshold: 60
    readinessProbe:
      httpGet: {{scheme: HTTPS, path: /healthz, port: 8443}}
      periodSeconds: 1
    livenessProbe:
      httpGet: {{scheme: HTTPS, path: /live, port: 8443}}
      periodSeconds: 1
      failureThreshold: 2
"#
        ),
    );
    let state = Arc::new(HttpsState::default());
    state.live.store(200, Ordering::SeqCst);
    serve_https(listen_in(&pod_netns(&s, "tls"), 8443), state.clone());

    // The startup probe ends on a redirect to another host: a success with a warning.
    // Readiness then passes over TLS with a certificate nobody could verify.
    wait_for(&s, Duration::from_secs(60), "tls ready", || {
        container_status(&s, "tls")["ready"] == true
    });
    let healthz = state.last_healthz.lock().unwrap().clone();
    assert!(
        healthz.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{healthz}"
    );
    assert!(healthz.contains("User-Agent: kube-probe/"), "{healthz}");
    let events = events_of(&s, "tls");
    assert!(events.contains("ProbeWarning"), "{events}");
    assert!(
        events.contains(
            "Startup probe warning: Probe terminated redirects, Response body: moved elsewhere"
        ),
        "{events}"
    );
    assert_eq!(container_status(&s, "tls")["restartCount"], 0);

    // Liveness follows /live to /live/status on the same host; a 500 there restarts the
    // container.
    state.live.store(500, Ordering::SeqCst);
    wait_for(&s, Duration::from_secs(60), "tls restarted", || {
        container_status(&s, "tls")["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let events = events_of(&s, "tls");
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 500"),
        "{events}"
    );
    assert!(
        events.contains("Container web failed liveness probe, will be restarted"),
        "{events}"
    );
}

/// Serves grpc.health.v1.Health/Check on `listener` (hyper's HTTP/2 server, gRPC framing
/// by hand): answers `status` and records the service asked for.
fn serve_grpc_health(listener: TcpListener, status: Arc<AtomicI32>, asked: Arc<Mutex<String>>) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Bytes, Frame};
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let (status, asked) = (status.clone(), asked.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (status, asked) = (status.clone(), asked.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            // HealthCheckRequest{service}: 5-byte prefix, then field 1.
                            let service = match body.get(5..) {
                                Some([0x0a, len, rest @ ..]) if rest.len() == *len as usize => {
                                    String::from_utf8_lossy(rest).to_string()
                                }
                                _ => String::new(),
                            };
                            *asked.lock().unwrap() = format!("{path} {service}");
                            // HealthCheckResponse{status}: field 1, varint.
                            let message =
                                [0, 0, 0, 0, 2, 0x08, status.load(Ordering::SeqCst) as u8];
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert(
                                "grpc-status",
                                hyper::header::HeaderValue::from_static("0"),
                            );
                            let frames = vec![
                                Ok::<_, hyper::Error>(Frame::data(Bytes::copy_from_slice(
                                    &message,
                                ))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(StreamBody::new(futures::stream::iter(frames)))
                                    .expect("response"),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
    });
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[test]
fn grpc_probes_follow_the_health_service() {
    let s = server_with_node();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: rpc}}
spec:
  containers:
  - name: app
    image: {IMAGE}
    command: ["sleep", "3600"]
    readinessProbe:
      grpc: {{port: 9090, service: skiff.test}}
      periodSeconds: 1
"#
        ),
    );
    let status = Arc::new(AtomicI32::new(SERVING));
    let asked = Arc::new(Mutex::new(String::new()));
    serve_grpc_health(
        listen_in(&pod_netns(&s, "rpc"), 9090),
        status.clone(),
        asked.clone(),
    );

    wait_for(&s, Duration::from_secs(60), "rpc ready", || {
        container_status(&s, "rpc")["ready"] == true
    });
    assert_eq!(
        *asked.lock().unwrap(),
        "/grpc.health.v1.Health/Check skiff.test"
    );

    status.store(NOT_SERVING, Ordering::SeqCst);
    wait_for(&s, Duration::from_secs(60), "rpc not ready", || {
        container_status(&s, "rpc")["ready"] == false
    });
    let ready_condition = pod_json(&s, "rpc")["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["status"].clone());
    assert_eq!(ready_condition, Some("False".into()));
    let described = s.kubectl_ok(&["describe", "pod", "rpc"]);
    assert!(described.contains("Unhealthy"), "{described}");
    assert!(
        described.contains(
            r#"Readiness probe failed: service unhealthy (responded with "NOT_SERVING")"#
        ),
        "{described}"
    );
    assert!(
        described.contains("Readiness:") && described.contains("grpc <pod>:9090 skiff.test"),
        "{described}"
    );
}
