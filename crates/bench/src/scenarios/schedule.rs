//! Scheduling throughput end to end, and control-plane memory at scale: `--nodes` simulated
//! nodes (`skiff agent --simulate N`, each with room for its share of the pods), then
//! `--pods` pods created through Deployments of `--per-deployment` replicas each. Nothing
//! but the Deployments comes from the benchmark: the ReplicaSet controller creates the
//! pods, the scheduler binds them, the simulated kubelets report them Running, all
//! through the API as in a real cluster.
//!
//! One watch on the namespace sees every pod the first time it is bound (`spec.nodeName`
//! set, i.e. the binding is persisted) and the first time it is Running. Reported: pods
//! bound per second from the first Deployment create to the last binding, the same for
//! Running, CPU of the server and of the simulator, and RSS of both once everything runs.
//! A second watch, on Nodes, counts nodes whose Ready condition left True although the
//! simulator kept them alive: false NotReady (see `--profile fast`).
//! With `SKIFF_BENCH_TIMELINE` set, the pod watch prints every 250 ms how many pods it has
//! seen created, bound and Running (to stderr), to tell which stage a run waits on.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::StatusCode;

use super::Env;
use super::Running;
use crate::procs::{self, mib, CpuMeter};
use crate::stats::print_table;
use crate::{Profile, StoreChoice};

const NS: &str = "sched";

fn deployment_body(name: &str, replicas: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10","resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}]}}}}}}}}"#
    ))
}

/// The three fields of a pod watch event the benchmark reads. Decoding only these (the
/// rest is skipped unbuilt) keeps the benchmark's own CPU, which shares the machine with
/// what it measures, at about a third of building a `serde_json::Value` per event.
#[derive(serde::Deserialize)]
struct PodEvent {
    object: PodFields,
}

#[derive(serde::Deserialize)]
struct PodFields {
    metadata: PodName,
    #[serde(default)]
    spec: Option<PodNode>,
    #[serde(default)]
    status: Option<PodPhase>,
}

#[derive(serde::Deserialize)]
struct PodName {
    name: String,
}

#[derive(serde::Deserialize)]
struct PodNode {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

#[derive(serde::Deserialize)]
struct PodPhase {
    #[serde(default)]
    phase: Option<String>,
}

/// A pod watch event's name, whether it is bound (`spec.nodeName` set) and Running.
fn pod_state(line: &[u8]) -> Option<(String, bool, bool)> {
    let ev: PodEvent = serde_json::from_slice(line).ok()?;
    let pod = ev.object;
    let bound = pod
        .spec
        .and_then(|s| s.node_name)
        .is_some_and(|n| !n.is_empty());
    let running = pod.status.and_then(|s| s.phase).as_deref() == Some("Running");
    Some((pod.metadata.name, bound, running))
}

/// What the pod watch saw: when each milestone was last reached.
#[derive(Default)]
struct PodProgress {
    bound: usize,
    running: usize,
    last_bound: Option<Instant>,
    last_running: Option<Instant>,
}

/// Reads pod watch events until `pods` pods have been seen Running (or the deadline).
async fn follow_pods(mut body: Incoming, pods: usize, deadline: Instant) -> PodProgress {
    let mut bound: HashSet<String> = HashSet::with_capacity(pods);
    let mut running: HashSet<String> = HashSet::with_capacity(pods);
    let mut seen: HashSet<String> = HashSet::with_capacity(pods);
    let mut p = PodProgress::default();
    let timeline = std::env::var_os("SKIFF_BENCH_TIMELINE").is_some();
    let start = Instant::now();
    let mut next_tick = start;
    let mut buf: Vec<u8> = Vec::new();
    while p.running < pods {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(Ok(f))) => f,
            _ => break,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        for line in buf[..end].split(|&b| b == b'\n') {
            let Some((name, is_bound, is_running)) = pod_state(line) else {
                continue;
            };
            if timeline {
                seen.insert(name.clone());
            }
            if is_bound && bound.insert(name.clone()) {
                p.bound += 1;
                p.last_bound = Some(Instant::now());
            }
            if is_running && running.insert(name) {
                p.running += 1;
                p.last_running = Some(Instant::now());
            }
        }
        buf.drain(..=end);
        if timeline && Instant::now() >= next_tick {
            eprintln!(
                "  t={:5.2}s created {:6} bound {:6} running {:6}",
                start.elapsed().as_secs_f64(),
                seen.len(),
                p.bound,
                p.running
            );
            next_tick += std::time::Duration::from_millis(250);
        }
    }
    p
}

/// Follows the Node watch until `stop` fires; returns how many times a node's Ready
/// condition went from True to anything else, and how many distinct nodes that hit.
async fn follow_nodes(
    mut body: Incoming,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (usize, usize) {
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut flips = 0usize;
    let mut flipped: HashSet<String> = HashSet::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = &mut stop => break,
        };
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        for line in buf[..end].split(|&b| b == b'\n') {
            let Ok(ev) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let node = &ev["object"];
            let Some(name) = node["metadata"]["name"].as_str() else {
                continue;
            };
            let is_ready = node["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True")
                .unwrap_or(false);
            let was = ready.insert(name.to_string(), is_ready);
            if was == Some(true) && !is_ready {
                flips += 1;
                flipped.insert(name.to_string());
            }
        }
        buf.drain(..=end);
    }
    (flips, flipped.len())
}

/// Opens a watch on `path` from the collection's current resourceVersion.
pub async fn watch_from_now(srv: &Running, path: &str) -> Result<Incoming> {
    let list = srv
        .client
        .get(&format!("{path}?limit=1"))
        .await?
        .expect(StatusCode::OK, &format!("list {path}"))?
        .json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, body) = srv
        .client
        .stream(&format!("{path}{sep}watch=1&resourceVersion={rv}"))
        .await?;
    if status != StatusCode::OK {
        bail!("watch {path}: HTTP {status}");
    }
    Ok(body)
}

/// A pod range and per-node podCIDR prefix length that give each of `nodes` nodes at
/// least `per_node` pod addresses (a /24 holds 254, too few for kwok-style nodes with
/// hundreds of pods). The addresses are only reported, never routed: the server runs with
/// `--disable-agent` and the simulated nodes run no containers.
fn pod_ranges(nodes: usize, per_node: usize) -> (String, u8) {
    let host_bits = (per_node + 2).next_power_of_two().trailing_zeros().max(8);
    let node_bits = nodes.max(1).next_power_of_two().trailing_zeros();
    let cluster_prefix = 32u32.saturating_sub(host_bits + node_bits).max(8);
    (format!("10.0.0.0/{cluster_prefix}"), (32 - host_bits) as u8)
}

/// `skiff server` and `skiff agent` flags for a failover profile.
pub fn profile_flags(profile: Profile) -> (Vec<String>, Vec<String>) {
    match profile {
        Profile::Upstream => (vec![], vec![]),
        Profile::Fast => (
            vec!["--failover-profile".into(), "fast".into()],
            vec!["--node-lease-duration-seconds".into(), "4".into()],
        ),
    }
}

pub async fn run(env: &Env) -> Result<()> {
    let mut rows = Vec::new();
    let store = env.stores(StoreChoice::Sqlite)[0];
    let pods = env.args.pods;
    let per = env.args.per_deployment.max(1);
    for &nodes in &env.args.nodes {
        let (server_flags, mut agent_flags) = profile_flags(env.args.profile);
        let mut srv = env.start_with(store, &server_flags).await?;
        // Room for the pods on every node count: kwok-style nodes with a high pod limit.
        let per_node = (pods * 3 / 2 / nodes.max(1)).max(110);
        let (cluster_cidr, node_mask) = pod_ranges(nodes, per_node);
        agent_flags.extend([
            "--cluster-cidr".to_string(),
            cluster_cidr,
            "--node-cidr-mask-size".into(),
            node_mask.to_string(),
            "--simulate-pods".to_string(),
            per_node.to_string(),
            "--simulate-cpu".into(),
            (per_node / 5 + 8).to_string(),
            "--simulate-memory".into(),
            format!("{}Mi", per_node * 256 + 4096),
        ]);
        let t = Instant::now();
        srv.simulate(&env.skiff, nodes, &agent_flags)
            .context("starting simulated nodes")?;
        println!(
            "  {nodes} simulated nodes registered in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        srv.create_namespace(NS).await?;
        // Let the informers settle and the node registrations drain.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let agent_pid = srv
            .agent
            .as_ref()
            .map(|a| a.pid())
            .transpose()?
            .unwrap_or(0);

        let pod_watch = watch_from_now(&srv, &format!("/api/v1/namespaces/{NS}/pods")).await?;
        let node_watch = watch_from_now(&srv, "/api/v1/nodes").await?;
        let (stop_nodes, stop_rx) = tokio::sync::oneshot::channel();
        let node_task = tokio::spawn(follow_nodes(node_watch, stop_rx));
        let deadline = Instant::now() + Duration::from_secs(300 + pods as u64 / 50);
        let server_cpu = CpuMeter::start(srv.pid()?);
        let agent_cpu = CpuMeter::start(agent_pid);
        let start = Instant::now();
        let pod_task = tokio::spawn(follow_pods(pod_watch, pods, deadline));
        let mut left = pods;
        let mut d = 0;
        while left > 0 {
            let n = left.min(per);
            srv.client
                .post(
                    &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
                    deployment_body(&format!("d{d}"), n),
                )
                .await?
                .expect(StatusCode::CREATED, "create deployment")?;
            left -= n;
            d += 1;
        }
        let progress = pod_task.await?;
        let server_cpu = server_cpu.stop();
        let agent_cpu = agent_cpu.stop();
        let server_rss = srv.rss()?;
        let agent_rss = procs::rss_bytes(agent_pid).unwrap_or(0);
        let _ = stop_nodes.send(());
        let (flips, flipped_nodes) = node_task.await?;
        if progress.running < pods {
            eprintln!(
                "  only {} bound and {} running of {pods} pods before the deadline\n{}",
                progress.bound,
                progress.running,
                srv.server.log_tail(20)
            );
        }
        let secs = |at: Option<Instant>| at.map(|t| t.duration_since(start).as_secs_f64());
        let bound_s = secs(progress.last_bound).unwrap_or(f64::NAN);
        let running_s = secs(progress.last_running).unwrap_or(f64::NAN);
        rows.push(vec![
            nodes.to_string(),
            pods.to_string(),
            d.to_string(),
            format!("{:.0}", progress.bound as f64 / bound_s),
            format!("{:.1}", bound_s),
            format!("{:.0}", progress.running as f64 / running_s),
            format!("{:.1}", running_s),
            format!("{:.2}", server_cpu.server_cores),
            format!("{:.2}", agent_cpu.server_cores),
            mib(server_rss),
            mib(agent_rss),
            format!("{flips} ({flipped_nodes} nodes)"),
        ]);
    }
    print_table(
        &format!(
            "schedule: pods created through Deployments, bound by the scheduler, run by simulated nodes ({:?} profile)",
            env.args.profile
        ),
        &[
            "nodes",
            "pods",
            "deployments",
            "bound/s",
            "all bound s",
            "running/s",
            "all running s",
            "server cores",
            "agent cores",
            "server RSS",
            "agent RSS",
            "false NotReady",
        ],
        &rows,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn pod_state_reads_name_binding_and_phase() {
        let state = |line: &str| super::pod_state(line.as_bytes());
        assert_eq!(
            state(
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"containers":[{"name":"c"}]},"status":{"phase":"Pending"}}}"#
            ),
            Some(("a".to_string(), false, false))
        );
        assert_eq!(
            state(
                r#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":"n1"},"status":{}}}"#
            ),
            Some(("a".to_string(), true, false))
        );
        assert_eq!(
            state(
                r#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":"n1"},"status":{"phase":"Running","podIP":"10.0.0.1"}}}"#
            ),
            Some(("a".to_string(), true, true))
        );
        assert_eq!(
            state(
                r#"{"type":"MODIFIED","object":{"metadata":{"name":"a"},"spec":{"nodeName":""},"status":null}}"#
            ),
            Some(("a".to_string(), false, false))
        );
        // Bookmarks and errors name no pod.
        assert_eq!(
            state(
                r#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12"}}}"#
            ),
            None
        );
        assert_eq!(
            state(r#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#),
            None
        );
    }

    #[test]
    fn pod_ranges_fit_every_node_and_its_pods() {
        for (nodes, per_node) in [
            (100, 450),
            (100, 110),
            (1000, 110),
            (5000, 110),
            (5000, 450),
        ] {
            let (cidr, mask) = super::pod_ranges(nodes, per_node);
            let prefix: u32 = cidr.rsplit('/').next().unwrap().parse().unwrap();
            assert!(
                (1usize << (32 - mask)) - 2 >= per_node,
                "{nodes} {per_node}: /{mask}"
            );
            assert!(
                1usize << (mask as u32 - prefix) >= nodes,
                "{nodes} {per_node}: {cidr}"
            );
        }
    }
}
