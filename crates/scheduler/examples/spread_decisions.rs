//! Scheduling decisions per second over a large in-memory cluster, without the API: how
//! the cost of a decision depends on how many Deployments' replicas are interleaved in the
//! queue. `--nodes` nodes each already hold `--pods-per-node` replicas spread over
//! `--workloads` Deployments; then `--decide` more replicas (replica i belongs to workload
//! i mod W, as when W Deployments roll out at once) are decided and assumed, each carrying
//! the cluster-default spreading constraints over its workload's selector. Two ways of
//! counting matching pods: the snapshot's selector index (what the scheduler does) and a
//! recount of every examined node's pods (what any memo does when it misses). The index
//! counts each selector over the whole cluster once, when first asked; that is timed apart
//! (in a rollout it happens while the Deployment's first replica is decided, not 1,000
//! times).
//!
//! `cargo run --release -p scheduler --example spread_decisions -- --nodes 5000`

use std::sync::Arc;
use std::time::Instant;

use api::selectors::LabelSelector;
use k8s_openapi::api::core::v1::{Node, Pod};
use scheduler::cache::Cache;
use scheduler::framework::{schedule, Cursor, PodInfo, TieBreaker};
use scheduler::plugins::{default_profile, pod_topology_spread};
use serde_json::json;

struct Args {
    nodes: usize,
    pods_per_node: usize,
    decide: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 5000,
        pods_per_node: 30,
        decide: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--nodes" => args.nodes = value,
            "--pods-per-node" => args.pods_per_node = value,
            "--decide" => args.decide = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn node(i: usize) -> Result<Node, String> {
    serde_json::from_value(json!({"metadata": {"name": format!("n{i}"),
        "labels": {"kubernetes.io/hostname": format!("n{i}")}},
        "status": {"allocatable": {"cpu": "1000", "memory": "4000Gi", "pods": "1000"}}}))
    .map_err(|e| format!("node n{i}: {e}"))
}

fn replica(name: &str, workload: usize, node: Option<&str>) -> Result<Pod, String> {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "bench",
        "labels": {"app": format!("d{workload}"), "pod-template-hash": format!("h{workload}")}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}))
    .map_err(|e| format!("pod {name}: {e}"))
}

fn selector(workload: usize) -> Result<LabelSelector, String> {
    LabelSelector::parse(&format!("app=d{workload},pod-template-hash=h{workload}")).map_err(|e| e.0)
}

/// Decisions per second for `workloads` interleaved Deployments, and the seconds taken to
/// count their selectors the first time (indexed only).
fn run(args: &Args, workloads: usize, indexed: bool) -> Result<(f64, f64), String> {
    let mut cache = Cache::new();
    for i in 0..args.nodes {
        cache.node_applied(Arc::new(node(i)?));
    }
    for i in 0..args.nodes * args.pods_per_node {
        let on = format!("n{}", i % args.nodes);
        let pod = replica(&format!("e{i}"), i % workloads, Some(&on))?;
        cache.pod_applied(&Arc::new(pod));
    }
    let profile = default_profile();
    let mut cursor = Cursor::default();
    let mut ties = TieBreaker::new(7);
    let first = Instant::now();
    if indexed {
        for w in 0..workloads {
            cache.snapshot.track_selector("bench", &selector(w)?);
        }
    }
    let first_counts = first.elapsed().as_secs_f64();
    let start = Instant::now();
    for i in 0..args.decide {
        let w = i % workloads;
        let mut info = PodInfo::new(Arc::new(replica(&format!("p{i}"), w, None)?));
        info.default_spread_selector = Some(selector(w)?);
        let info = Arc::new(info);
        if indexed {
            for sel in pod_topology_spread::counted_selectors(&info) {
                cache.snapshot.track_selector(info.namespace(), &sel);
            }
        }
        let node = schedule(&profile, &info, &cache.snapshot, &mut cursor, &mut ties)
            .map_err(|e| e.message())?;
        cache.assume(&node, info);
    }
    Ok((
        args.decide as f64 / start.elapsed().as_secs_f64(),
        first_counts,
    ))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spread_decisions: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "decisions/s, {} nodes x {} pods each, {} decisions (default spreading on every replica)",
        args.nodes, args.pods_per_node, args.decide
    );
    println!("  workloads  selector index  recount each node  ratio  first counts (index)");
    for workloads in [10, 150] {
        let result = run(&args, workloads, true)
            .and_then(|indexed| run(&args, workloads, false).map(|scan| (indexed, scan)));
        match result {
            Ok(((indexed, first), (scan, _))) => println!(
                "  {workloads:>9}  {indexed:>14.0}  {scan:>17.0}  {:>4.1}x  {:>17.0} ms",
                indexed / scan,
                first * 1000.0
            ),
            Err(e) => {
                eprintln!("spread_decisions: {workloads} workloads: {e}");
                std::process::exit(1);
            }
        }
    }
}
