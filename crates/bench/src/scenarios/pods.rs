//! Pods: real containers through the whole stack. A `skiff server --disable-agent` and a
//! separate `skiff agent` joined to it (so the agent's memory is its own), the busybox test
//! image imported into the agent's store; then N pods (`sleep`) created at once, and the
//! time from each pod's create request to the watch showing it Running (upstream's pod
//! startup SLI, image present). Also the agent's RSS 3 s after it is Ready, idle, and with
//! the pods running (3 s after the burst and once settled), and the shims' share of memory (PSS) per pod. Root
//! only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use tokio::sync::Mutex;

use super::{Env, Store};
use crate::procs::{self, mib, Guard};
use crate::stats::{ms, print_table, summarize};

/// Pods created at once (the figure: 100 on one node).
const PODS: usize = 100;
const IMAGE: &str = "skiff.bench/busybox:1";
const NODE: &str = "bench-node";
/// Seconds between the two readings of the agent's RSS with the pods running.
const SETTLE_SECS: u64 = 15;

pub async fn run(env: &Env) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the pods scenario needs root (namespaces, mounts, cgroups)");
    }
    let srv = env.start(Store::Sqlite).await?;
    let agent_dir = tempfile::Builder::new()
        .prefix("skiff-bench-agent-")
        .tempdir()
        .context("creating the agent's data dir")?;
    let agent_data = agent_dir.path().join("data");
    import_image(&env.skiff, &agent_data)?;
    let mut agent = Agent::start(&env.skiff, &srv.server.data_dir, srv.port, &agent_data)?;
    let result = measure(env, &srv, &mut agent).await;
    agent.guard.kill();
    let out = Command::new(&env.skiff)
        .args(["killall", "--data-dir"])
        .arg(&agent_data)
        .output()
        .context("skiff killall")?;
    if !out.status.success() {
        eprintln!("skiff killall: {}", String::from_utf8_lossy(&out.stderr));
    }
    result
}

struct Agent {
    guard: Guard,
    data: PathBuf,
}

impl Agent {
    fn start(skiff: &Path, server_data: &Path, port: u16, data: &Path) -> Result<Agent> {
        let log = data.join("agent.log");
        let out = std::fs::File::create(&log).context("creating the agent log")?;
        let child = Command::new(skiff)
            .arg("agent")
            .arg("--server")
            .arg(format!("https://127.0.0.1:{port}"))
            .arg("--token-file")
            .arg(server_data.join("server/token"))
            .arg("--data-dir")
            .arg(data)
            .arg("--node-name")
            .arg(NODE)
            .arg("--node-ip")
            .arg("127.0.0.1")
            .arg("--kubelet-port")
            .arg(procs::free_port()?.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting skiff agent")?;
        Ok(Agent {
            guard: Guard::new("skiff agent", child),
            data: data.to_path_buf(),
        })
    }
}

fn import_image(skiff: &Path, data: &Path) -> Result<()> {
    testkit::node::import_test_image(skiff, data, IMAGE);
    Ok(())
}

fn pod(i: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p-{i}")},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}]
            }
        })
        .to_string(),
    )
}

async fn measure(env: &Env, srv: &super::Running, agent: &mut Agent) -> Result<()> {
    let _ = env;
    // The node registers and turns Ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = agent.guard.exited()? {
            bail!(
                "skiff agent exited ({status}): see {}",
                agent.data.join("agent.log").display()
            );
        }
        let node = srv.client.get(&format!("/api/v1/nodes/{NODE}")).await?;
        if node.status == StatusCode::OK {
            let v = node.json()?;
            let ready = v["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("node {NODE} not Ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_pid = agent.guard.pid()?;
    let start_rss = procs::rss_bytes(agent_pid)?;
    // Idle: long enough for a quiet agent to have released its start-up code pages.
    tokio::time::sleep(Duration::from_secs(SETTLE_SECS - 3)).await;
    let idle_rss = procs::rss_bytes(agent_pid)?;

    // Watch pods from now on; note when each is first seen Running.
    let coll = "/api/v1/namespaces/default/pods";
    let list = srv
        .client
        .get(coll)
        .await?
        .expect(StatusCode::OK, "list")?
        .json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (status, mut body) = srv
        .client
        .stream(&format!("{coll}?watch=1&resourceVersion={rv}"))
        .await?;
    if status != StatusCode::OK {
        bail!("watch: HTTP {status}");
    }
    let running_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = running_at.clone();
    let watcher = tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let now = Instant::now();
            buf.extend_from_slice(&data);
            let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            for line in buf[..end].split(|&b| b == b'\n') {
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                if ev["object"]["status"]["phase"] == "Running" {
                    if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                        let mut seen = seen.lock().await;
                        seen.entry(name.to_string()).or_insert(now);
                        if seen.len() >= PODS {
                            return;
                        }
                    }
                }
            }
            buf.drain(..=end);
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let server_pid = srv.server.pid()?.to_string();
    let server_cpu0 = procs::cpu_time(&server_pid)?;
    let agent_cpu0 = procs::cpu_time(&agent_pid.to_string())?;
    let machine0 = procs::machine_busy()?;
    let bench0 = procs::cpu_time("self")?;
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..PODS {
        let client = srv.client.clone();
        creates.push(tokio::spawn(async move {
            let at = Instant::now();
            client
                .post(coll, pod(i))
                .await?
                .expect(StatusCode::CREATED, "create pod")?;
            Ok::<(String, Instant), anyhow::Error>((format!("p-{i}"), at))
        }));
    }
    let mut asked = HashMap::new();
    for c in creates {
        let (name, at) = c.await??;
        asked.insert(name, at);
    }
    let waited = tokio::time::timeout(Duration::from_secs(300), watcher).await;
    let all_running = started.elapsed();
    let server_cpu = procs::cpu_time(&server_pid)?.saturating_sub(server_cpu0);
    let agent_cpu = procs::cpu_time(&agent_pid.to_string())?.saturating_sub(agent_cpu0);
    let machine_cpu = procs::machine_busy()?
        .saturating_sub(machine0)
        .saturating_sub(procs::cpu_time("self")?.saturating_sub(bench0));
    if waited.is_err() {
        let n = running_at.lock().await.len();
        bail!("only {n} of {PODS} pods Running after 300 s");
    }
    let seen = running_at.lock().await;
    let latencies: Vec<Duration> = asked
        .iter()
        .filter_map(|(name, at)| Some(seen.get(name)?.saturating_duration_since(*at)))
        .collect();
    let s = summarize(latencies);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy_rss = procs::rss_bytes(agent_pid)?;
    let (shims, shim_pss) = shim_memory(&agent.data);
    // Settled: the runtime's blocking threads that the burst woke exit after 10 s idle,
    // and with them their allocator pages; kubelet's figure is this steady state.
    tokio::time::sleep(Duration::from_secs(SETTLE_SECS)).await;
    let settled_rss = procs::rss_bytes(agent_pid)?;
    print_table(
        &format!("pod startup, {PODS} pods created at once on one node (image present)"),
        &["p50", "p90", "p99", "max", "all Running after"],
        &[vec![
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(all_running),
        ]],
    );
    let per_pod = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0 / PODS as f64);
    print_table(
        "CPU spent on the burst per pod (server and agent: their CPU time, which other \
         load does not inflate; machine: all processes and the kernel, shims and container \
         set-up included, minus this benchmark, until all are Running)",
        &["server", "agent", "server + agent", "machine"],
        &[vec![
            per_pod(server_cpu),
            per_pod(agent_cpu),
            per_pod(server_cpu + agent_cpu),
            per_pod(machine_cpu),
        ]],
    );
    print_table(
        "agent memory (a separate `skiff agent` process)",
        &[
            "agent RSS 3 s after Ready",
            &format!("idle ({SETTLE_SECS} s)"),
            &format!("agent RSS, {PODS} pods"),
            &format!("{SETTLE_SECS} s later"),
            "shims",
            "shim PSS total",
            "PSS per shim",
        ],
        &[vec![
            mib(start_rss),
            mib(idle_rss),
            mib(busy_rss),
            mib(settled_rss),
            shims.to_string(),
            mib(shim_pss),
            mib(shim_pss / shims.max(1) as u64),
        ]],
    );
    Ok(())
}

/// The shims this agent started (their pids from the shims' started records) and the sum
/// of their PSS.
fn shim_memory(agent_data: &Path) -> (usize, u64) {
    let mut count = 0;
    let mut pss = 0;
    let pods = agent_data.join("agent/pods");
    let Ok(entries) = std::fs::read_dir(&pods) else {
        return (0, 0);
    };
    for pod in entries.flatten() {
        let Ok(containers) = std::fs::read_dir(pod.path().join("containers")) else {
            continue;
        };
        for c in containers.flatten() {
            let started = c.path().join("0/shim/started.json");
            let Ok(text) = std::fs::read_to_string(started) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let Some(pid) = v["shim_pid"].as_i64().or(v["shimPid"].as_i64()) else {
                continue;
            };
            if let Some(kib) = pss_kib(pid) {
                count += 1;
                pss += kib * 1024;
            }
        }
    }
    (count, pss)
}

fn pss_kib(pid: i64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
