//! What the from-a-pod scenarios share: a `skiff server` with its embedded node (testkit's
//! [`testkit::node::server_with_node`]: its own network slot, the busybox image imported,
//! cluster DNS forwarding to a closed local port), pods that `sleep`, and threads of the
//! benchmark that enter a pod's network namespace (`setns` on the netns the agent
//! bind-mounts at `<data-dir>/agent/pods/<uid>/netns`) to act as that pod's processes.
//!
//! Dropping a [`PodNode`] kills the server by its PID and runs `skiff killall` on its data
//! dir (containers, sandboxes, service-proxy table, pod bridge), then frees the slot.
//! Root only.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::StatusCode;

use super::Env;
use crate::client::{Client, KubeConfig};

pub const NS: &str = "default";

/// A server with its node, and a bench client to its API.
pub struct PodNode {
    pub client: Client,
    /// Dropped last: kills the server and cleans the node up.
    pub server: testkit::TestServer,
}

/// A running pod as the node sees it.
pub struct PodInfo {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The bind-mounted network namespace.
    pub netns: PathBuf,
    /// Its resolv.conf, as mounted into its containers.
    pub resolv_conf: PathBuf,
}

impl PodNode {
    pub async fn start(env: &Env) -> Result<PodNode> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("pods on a real node need root (namespaces, mounts, nftables)");
        }
        let skiff = env.skiff.clone();
        // testkit is blocking (kubectl, sleeps) and panics on failure: run it off the
        // runtime and turn a panic into an error (the half-started server is dropped,
        // and so cleaned up, while unwinding).
        let server = tokio::task::spawn_blocking(move || testkit::node::server_with_node(&skiff))
            .await
            .map_err(|e| anyhow::anyhow!("starting a server with its node: {e}"))?;
        let kc = KubeConfig::load(&server.kubeconfig())?;
        let client = Client::connect(&kc, env.args.conns).await?;
        Ok(PodNode { client, server })
    }

    /// The cluster DNS Service address of this server's slot (the 10th of its range).
    pub fn cluster_dns(&self) -> Result<Ipv4Addr> {
        let slot = self
            .server
            .network()
            .context("the server has no network slot")?;
        slot.cluster_dns()
            .parse()
            .context("the slot's cluster DNS address")
    }

    /// Creates pod `name` (busybox `sleep`) with `labels` and waits until it runs.
    pub async fn run_pod(&self, name: &str, labels: serde_json::Value) -> Result<PodInfo> {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": testkit::node::TEST_IMAGE,
                                "command": ["sleep", "3600"]}]
            }
        });
        let path = format!("/api/v1/namespaces/{NS}/pods");
        self.client
            .post(&path, Bytes::from(body.to_string()))
            .await?
            .expect(StatusCode::CREATED, &format!("creating pod {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pod = self
                .client
                .get(&format!("{path}/{name}"))
                .await?
                .expect(StatusCode::OK, &format!("reading pod {name}"))?
                .json()?;
            let running = pod["status"]["phase"] == "Running";
            let ip = pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok());
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            if let (true, Some(ip)) = (running, ip) {
                let dir = self.server.data_dir().join("agent/pods").join(uid);
                let netns = dir.join("netns");
                if !netns.exists() {
                    bail!("pod {name} runs but has no netns at {}", netns.display());
                }
                return Ok(PodInfo {
                    name: name.to_string(),
                    ip,
                    netns,
                    resolv_conf: dir.join("resolv.conf"),
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "pod {name} not Running with an IP after 120 s: {}\n{}",
                    pod["status"],
                    self.server.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn create(&self, collection: &str, body: serde_json::Value) -> Result<()> {
        let what = format!(
            "creating {} {}",
            body["kind"].as_str().unwrap_or("object"),
            body["metadata"]["name"].as_str().unwrap_or("?")
        );
        self.client
            .post(collection, Bytes::from(body.to_string()))
            .await?
            .expect(StatusCode::CREATED, &what)?;
        Ok(())
    }
}

/// Moves the calling thread into the network namespace at `netns`. Only for threads the
/// benchmark spawns for this (never a runtime worker): the thread stays there, and every
/// socket it opens belongs to that namespace.
pub fn enter_netns(netns: &Path) -> Result<()> {
    let file = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // SAFETY: setns on a valid open namespace fd; it only changes this thread's netns.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns into {}", netns.display()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the network namespace at `netns`.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        enter_netns(&netns)?;
        f()
    })
}

/// Joins threads from [`spawn_in_netns`] off the runtime.
pub async fn join_all<T: Send + 'static>(
    threads: Vec<std::thread::JoinHandle<Result<T>>>,
) -> Result<Vec<T>> {
    tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a pod-side thread panicked"))?
            })
            .collect()
    })
    .await?
}

/// Entries in the host's connection-tracking table (None where conntrack is not loaded).
pub fn conntrack_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The conntrack table is the host's, shared with everything else on the machine: a
/// scenario that creates many flows waits (up to `limit`) until it is below `below`.
pub async fn wait_conntrack_below(below: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while conntrack_count().is_some_and(|n| n > below) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Flows in the host's conntrack table from `src` to `service` (`proto`: "udp" or "tcp")
/// that were NATed to another address than `target`: left by an earlier holder of the same
/// addresses (a server that used this network slot before, with another DNS port). A new
/// packet with the same source port joins such a flow and goes to its old, dead target.
/// None where the table cannot be read.
pub fn stale_nat_flows(
    proto: &str,
    src: Ipv4Addr,
    service: SocketAddr,
    target: SocketAddr,
) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/nf_conntrack").ok()?;
    let stale = table
        .lines()
        .filter(|line| line.split_whitespace().nth(2) == Some(proto))
        .filter(|line| {
            // The original direction's fields come first, then the reply's.
            let field = |key: &str, nth: usize| {
                line.split_whitespace()
                    .filter_map(|w| w.strip_prefix(key))
                    .nth(nth)
                    .map(str::to_string)
            };
            let original = field("src=", 0) == Some(src.to_string())
                && field("dst=", 0) == Some(service.ip().to_string())
                && field("dport=", 0) == Some(service.port().to_string());
            let to_target = field("src=", 1) == Some(target.ip().to_string())
                && field("sport=", 1) == Some(target.port().to_string());
            original && !to_target
        })
        .count();
    Some(stale)
}
