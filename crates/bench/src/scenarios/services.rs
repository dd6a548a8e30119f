//! Services: how fast the node's service proxy makes traffic follow a change, with 1,000
//! and 10,000 Services in the table. A `skiff server --disable-agent` and a real `skiff
//! agent` joined to it (its own pod bridge name and service CIDR), N selectorless ClusterIP
//! Services each with an EndpointSlice pointing at listener A on 127.0.0.1 (the output
//! hook DNATs local traffic there). Measured from the host, as a client sees it:
//!
//! - first sync: agent start → a sample of the N ClusterIPs answers (the full rebuild);
//! - endpoint move: PUT of one Service's slice to listener B → a new connection to its
//!   ClusterIP reaches B (polled every millisecond);
//! - new Service: POST of a Service and its slice → its ClusterIP answers.
//!
//! Root only (nftables, routes).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Env, Store};
use crate::client::Client;
use crate::procs::{self, Guard};
use crate::stats::{ms, print_table, summarize};

const SIZES: [usize; 2] = [1_000, 10_000];
const MOVES: usize = 100;
const NEW_SERVICES: usize = 50;
/// The agent's pod bridge: the table is `ip skbench0-services`.
const BRIDGE: &str = "skbench0";
const SERVICE_CIDR: &str = "10.140.0.0/16";
const CLUSTER_CIDR: &str = "10.141.0.0/16";
const NS: &str = "default";

pub async fn run(env: &Env) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the services scenario needs root (nftables, routes)");
    }
    let mut rows = Vec::new();
    for n in SIZES {
        rows.push(measure_at(env, n).await?);
    }
    print_table(
        "service programming latency (change → a new connection follows it), ms",
        &[
            "services",
            "first sync",
            "move p50",
            "move p99",
            "move max",
            "new p50",
            "new p99",
            "new max",
        ],
        &rows,
    );
    Ok(())
}

/// A listener on 127.0.0.1 that writes `tag` to every connection.
async fn tag_listener(tag: u8) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = conn.write_all(&[tag]).await;
            });
        }
    });
    Ok(port)
}

/// Which listener a new connection to `addr` reaches (None: refused or nothing).
async fn reaches(addr: SocketAddr) -> Option<u8> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut conn = tokio::time::timeout(Duration::from_secs(1), connect)
        .await
        .ok()?
        .ok()?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(1), conn.read_exact(&mut byte))
        .await
        .ok()?
        .ok()?;
    Some(byte[0])
}

/// Polls every millisecond until `addr` reaches `tag`; the time since `t0`.
async fn until_reaches(
    addr: SocketAddr,
    tag: u8,
    t0: Instant,
    limit: Duration,
) -> Result<Duration> {
    loop {
        if reaches(addr).await == Some(tag) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            bail!(
                "{addr} did not reach listener {} within {limit:?}",
                tag as char
            );
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

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// Creates Service `name` and its slice to `port`; returns the ClusterIP address.
async fn create(client: &Client, name: &str, port: u16) -> Result<SocketAddr> {
    let svc = client
        .post(&format!("/api/v1/namespaces/{NS}/services"), service(name))
        .await?
        .expect(StatusCode::CREATED, &format!("creating Service {name}"))?
        .json()?;
    let ip = svc["spec"]["clusterIP"]
        .as_str()
        .with_context(|| format!("Service {name} has no clusterIP"))?
        .to_string();
    client.post(SLICES, slice(name, port)).await?.expect(
        StatusCode::CREATED,
        &format!("creating the slice of {name}"),
    )?;
    Ok(SocketAddr::new(ip.parse()?, 80))
}

async fn measure_at(env: &Env, n: usize) -> Result<Vec<String>> {
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
    let port_a = tag_listener(b'A').await?;
    let port_b = tag_listener(b'B').await?;

    // N Services with their slices, 32 writes in flight.
    let started = Instant::now();
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(n);
    let mut pending = futures_like::Pending::new(32);
    for i in 0..n {
        let client = srv.client.clone();
        pending
            .push(tokio::spawn(async move {
                create(&client, &format!("s-{i}"), port_a).await
            }))
            .await?
            .into_iter()
            .try_for_each(|a| a.map(|a| addrs.push(a)))?;
    }
    for a in pending.drain().await? {
        addrs.push(a?);
    }
    eprintln!(
        "services: {n} Services and slices created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let agent_dir = tempfile::Builder::new()
        .prefix("skiff-bench-agent-")
        .tempdir()
        .context("creating the agent's data dir")?;
    let agent_data = agent_dir.path().join("data");
    std::fs::create_dir_all(&agent_data)?;
    let t_agent = Instant::now();
    let mut agent = start_agent(&env.skiff, &srv.server.data_dir, srv.port, &agent_data)?;
    let result = async {
        // First sync: every 100th Service (and the last) answers.
        let mut first_sync = Duration::ZERO;
        for addr in addrs.iter().step_by(100).chain(addrs.last()) {
            first_sync = until_reaches(*addr, b'A', t_agent, Duration::from_secs(300)).await?;
        }
        // Endpoint moves, one at a time, on Services spread over the table.
        let mut moves = Vec::with_capacity(MOVES);
        for k in 0..MOVES {
            let i = (k * 7919) % n;
            let name = format!("s-{i}");
            let t0 = Instant::now();
            srv.client
                .put(&format!("{SLICES}/{name}-1"), slice(&name, port_b))
                .await?
                .expect(StatusCode::OK, &format!("moving the slice of {name}"))?;
            moves.push(until_reaches(addrs[i], b'B', t0, Duration::from_secs(30)).await?);
        }
        // New Services.
        let mut news = Vec::with_capacity(NEW_SERVICES);
        for k in 0..NEW_SERVICES {
            let t0 = Instant::now();
            let addr = create(&srv.client, &format!("new-{k}"), port_b).await?;
            news.push(until_reaches(addr, b'B', t0, Duration::from_secs(30)).await?);
        }
        if let Some(status) = agent.exited()? {
            bail!("skiff agent exited ({status})");
        }
        let moves = summarize(moves);
        let news = summarize(news);
        Ok(vec![
            n.to_string(),
            ms(first_sync),
            ms(moves.p50),
            ms(moves.p99),
            ms(moves.max),
            ms(news.p50),
            ms(news.p99),
            ms(news.max),
        ])
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
        eprintln!(
            "services: agent log tail:\n{}",
            tail(&agent_data.join("agent.log"), 30)
        );
    }
    result
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn start_agent(skiff: &Path, server_data: &Path, port: u16, data: &Path) -> Result<Guard> {
    let log = std::fs::File::create(data.join("agent.log")).context("creating the agent log")?;
    let child = Command::new(skiff)
        .arg("agent")
        .arg("--server")
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(server_data.join("server/token"))
        .arg("--data-dir")
        .arg(data)
        .args(["--node-name", "bench-services", "--node-ip", "127.0.0.1"])
        .args(["--pod-bridge", BRIDGE, "--service-cidr", SERVICE_CIDR])
        .args(["--cluster-cidr", CLUSTER_CIDR])
        .arg("--kubelet-port")
        .arg(procs::free_port()?.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting skiff agent")?;
    Ok(Guard::new("skiff agent", child))
}

/// A bounded set of in-flight tasks, without another dependency.
mod futures_like {
    use anyhow::Result;
    use std::collections::VecDeque;
    use tokio::task::JoinHandle;

    pub struct Pending<T> {
        limit: usize,
        tasks: VecDeque<JoinHandle<T>>,
    }

    impl<T> Pending<T> {
        pub fn new(limit: usize) -> Self {
            Pending {
                limit,
                tasks: VecDeque::new(),
            }
        }

        /// Adds a task; when full, first waits for the oldest and returns its output.
        pub async fn push(&mut self, task: JoinHandle<T>) -> Result<Vec<T>> {
            let mut done = Vec::new();
            if self.tasks.len() >= self.limit {
                if let Some(oldest) = self.tasks.pop_front() {
                    done.push(oldest.await?);
                }
            }
            self.tasks.push_back(task);
            Ok(done)
        }

        pub async fn drain(&mut self) -> Result<Vec<T>> {
            let mut done = Vec::new();
            while let Some(t) = self.tasks.pop_front() {
                done.push(t.await?);
            }
            Ok(done)
        }
    }
}
