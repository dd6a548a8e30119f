//! Ingress: requests/s and latency through the built-in ingress controller versus to the
//! backend directly (the difference is the ingress's cost) and through the backend's
//! ClusterIP (the service proxy's cost), and how fast a changed Ingress
//! is followed. A `skiff server --disable-agent` and a real `skiff agent` joined to it
//! (its own pod bridge name and CIDRs, ingress HTTP on a free port); the backends are
//! in-process HTTP/1.1 servers on 127.0.0.1 behind selectorless Services with
//! EndpointSlices. Closed loop: `--clients` keep-alive connections for `--secs` each.
//!
//! Root only (the agent programs its pod network and nftables).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

use super::{Env, Store};
use crate::procs::{self, Guard};
use crate::stats::{ms, print_table, summarize};

const BRIDGE: &str = "skbench2";
const SERVICE_CIDR: &str = "10.144.0.0/16";
const CLUSTER_CIDR: &str = "10.145.0.0/16";
const CHANGES: usize = 50;
const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";

pub async fn run(env: &Env) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the ingress scenario needs root (the agent's pod network and nftables)");
    }
    let extra: Vec<String> = [
        "--service-cidr",
        SERVICE_CIDR,
        "--cluster-cidr",
        CLUSTER_CIDR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let srv = env.start_with(Store::Sqlite, &extra).await?;
    let backend_a = backend("a").await?;
    let backend_b = backend("b").await?;
    for (name, addr) in [("backend-a", backend_a), ("backend-b", backend_b)] {
        srv.client
            .post("/api/v1/namespaces/default/services", service(name))
            .await?
            .expect(StatusCode::CREATED, &format!("creating Service {name}"))?;
        srv.client
            .post(
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                slice(name, addr.port()),
            )
            .await?
            .expect(
                StatusCode::CREATED,
                &format!("creating the slice of {name}"),
            )?;
    }
    srv.client
        .post(INGRESSES, ingress("backend-a"))
        .await?
        .expect(StatusCode::CREATED, "creating the Ingress")?;

    let agent_dir = tempfile::Builder::new()
        .prefix("skiff-bench-agent-")
        .tempdir()
        .context("creating the agent's data dir")?;
    let agent_data = agent_dir.path().join("data");
    std::fs::create_dir_all(&agent_data)?;
    let ingress_port = procs::free_port()?;
    let mut agent = start_agent(
        &env.skiff,
        &srv.server.data_dir,
        srv.port,
        &agent_data,
        ingress_port,
    )?;
    let through: SocketAddr = ([127, 0, 0, 1], ingress_port).into();
    let result = async {
        let t0 = Instant::now();
        until_answer(through, "a", t0, Duration::from_secs(120)).await?;
        eprintln!(
            "ingress: first answer {:.1} s after the agent started",
            t0.elapsed().as_secs_f64()
        );
        // backend-a's ClusterIP: the node's service proxy DNATs it to the backend, so the
        // row beside "backend directly" is the Service data plane's cost.
        let svc = srv
            .client
            .get("/api/v1/namespaces/default/services/backend-a")
            .await?
            .expect(StatusCode::OK, "reading Service backend-a")?
            .json()?;
        let cluster_ip: std::net::Ipv4Addr = svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("backend-a has no ClusterIP")?;
        let via_cluster_ip: SocketAddr = (cluster_ip, 80).into();
        until_answer(via_cluster_ip, "a", Instant::now(), Duration::from_secs(30)).await?;
        let secs = Duration::from_secs(env.args.secs);
        let clients = env.args.clients;
        let mut rows = Vec::new();
        for (label, addr) in [
            ("backend directly", backend_a),
            ("through its ClusterIP", via_cluster_ip),
            ("through the ingress", through),
        ] {
            let (count, latencies) = closed_loop(addr, clients, secs).await?;
            let s = summarize(latencies);
            rows.push(vec![
                label.to_string(),
                format!("{:.0}", count as f64 / secs.as_secs_f64()),
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
            ]);
        }
        print_table(
            &format!(
                "HTTP GET, {clients} keep-alive clients, {} s each",
                secs.as_secs()
            ),
            &["path", "req/s", "p50 ms", "p99 ms", "max ms"],
            &rows,
        );
        // Route changes: the Ingress's backend flips; a new request follows it.
        let mut changes = Vec::with_capacity(CHANGES);
        for k in 0..CHANGES {
            let (to, tag) = if k % 2 == 0 {
                ("backend-b", "b")
            } else {
                ("backend-a", "a")
            };
            let t0 = Instant::now();
            let mut current = srv
                .client
                .get(&format!("{INGRESSES}/bench"))
                .await?
                .expect(StatusCode::OK, "reading the Ingress")?
                .json()?;
            current["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] =
                serde_json::Value::from(to);
            srv.client
                .put(
                    &format!("{INGRESSES}/bench"),
                    Bytes::from(current.to_string()),
                )
                .await?
                .expect(StatusCode::OK, "updating the Ingress")?;
            changes.push(until_answer(through, tag, t0, Duration::from_secs(30)).await?);
        }
        let c = summarize(changes);
        print_table(
            "Ingress change (PUT) → the next request follows it, ms",
            &["changes", "p50", "p99", "max"],
            &[vec![CHANGES.to_string(), ms(c.p50), ms(c.p99), ms(c.max)]],
        );
        if let Some(status) = agent.exited()? {
            bail!("skiff agent exited ({status})");
        }
        Ok(())
    }
    .await;
    agent.kill();
    let out = Command::new(&env.skiff)
        .args(["killall", "--data-dir"])
        .arg(&agent_data)
        .output()
        .context("skiff killall")?;
    if !out.status.success() {
        eprintln!("skiff killall: {}", String::from_utf8_lossy(&out.stderr));
    }
    if result.is_err() {
        let log = std::fs::read_to_string(agent_data.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "ingress: agent log tail:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    result
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `tag`.
async fn backend(tag: &'static str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(tag.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One keep-alive connection.
async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// GET / on `sender`: the body.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, "bench.example.com")
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// `clients` connections sending GETs back to back for `secs`: (requests, latencies).
async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    secs: Duration,
) -> Result<(usize, Vec<Duration>)> {
    let end = Instant::now() + secs;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t0 = Instant::now();
                let (status, _) = get(&mut sender).await?;
                if status != StatusCode::OK {
                    bail!("{addr} answered {status}");
                }
                latencies.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len(), all))
}

/// Polls (new request every millisecond, a fresh connection when one fails) until `addr`
/// answers `tag`; the time since `t0`.
async fn until_answer(
    addr: SocketAddr,
    tag: &str,
    t0: Instant,
    limit: Duration,
) -> Result<Duration> {
    let mut sender = None;
    loop {
        if sender.is_none() {
            sender = connect(addr).await.ok();
        }
        if let Some(s) = sender.as_mut() {
            match get(s).await {
                Ok((StatusCode::OK, body)) if body == tag.as_bytes() => return Ok(t0.elapsed()),
                Ok(_) => {}
                Err(_) => sender = None,
            }
        }
        if t0.elapsed() > limit {
            bail!("{addr} did not answer {tag:?} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn service(name: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        })
        .to_string(),
    )
}

fn slice(service: &str, port: u16) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-1"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
        })
        .to_string(),
    )
}

fn ingress(service: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "bench"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}
        })
        .to_string(),
    )
}

fn start_agent(
    skiff: &Path,
    server_data: &Path,
    port: u16,
    data: &Path,
    ingress_port: u16,
) -> Result<Guard> {
    let log = std::fs::File::create(data.join("agent.log")).context("creating the agent log")?;
    let child = Command::new(skiff)
        .arg("agent")
        .arg("--server")
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(server_data.join("server/token"))
        .arg("--data-dir")
        .arg(data)
        .args(["--node-name", "bench-ingress", "--node-ip", "127.0.0.1"])
        .args(["--pod-bridge", BRIDGE, "--service-cidr", SERVICE_CIDR])
        .args(["--cluster-cidr", CLUSTER_CIDR])
        .arg(format!("--ingress-http-port={ingress_port}"))
        .arg("--ingress-https-port=0")
        .arg("--kubelet-port")
        .arg(procs::free_port()?.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting skiff agent")?;
    Ok(Guard::new("skiff agent", child))
}
