//! `skiff-bench`: starts its own skiff server(s) — and a private etcd where a scenario
//! compares stores — on free 127.0.0.1 ports with temporary data dirs, drives them with a
//! lean HTTP/2 client, and prints figures: start-up time and idle RSS, single-object
//! latency at a steady open-loop rate, peak durable creates/s, listing 10,000 pods, and
//! watch fan-out. It never asserts timings (DESIGN.md §6); BENCHMARKS.md keeps the method
//! and the latest figures.
//!
//! ```text
//! cargo run --release -p bench -- [startup|latency|throughput|list|watch|schedule|failover|all]...
//! ```

mod client;
mod procs;
mod scenarios;
mod stats;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Startup,
    Latency,
    Throughput,
    List,
    Watch,
    Schedule,
    Failover,
    /// The container runtime alone (root): start latency and shim RSS.
    Containers,
    /// Real pods through the whole stack (root): startup latency of 100 pods, agent RSS.
    Pods,
    /// Cluster DNS: query latency and queries/s with 1,000 Services, from loopback.
    Dns,
    /// The service proxy (root): Service/EndpointSlice change → traffic follows, 1k/10k Services.
    Services,
    /// The built-in ingress controller (root): req/s and latency through it vs direct.
    Ingress,
    /// Creating Services (cluster IP and node port allocation): creates/s as they grow.
    ServiceCreate,
    /// Cluster DNS from inside a pod (root): lookups through the kube-dns ClusterIP.
    PodDns,
    /// New TCP connections/s from a pod (root): through a ClusterIP vs the pod IP.
    PodConnect,
    All,
}

/// Node-failure settings of the server (and lease duration of the simulated nodes).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Upstream's defaults: 50 s grace period, 300 s tolerations, 40 s leases.
    Upstream,
    /// `--failover-profile fast` with 4 s node leases.
    Fast,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreChoice {
    Sqlite,
    Etcd,
    Both,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "skiff-bench",
    about = "Benchmarks a real skiff server it starts itself; prints figures"
)]
pub struct Args {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// The skiff binary (default: <CARGO_TARGET_DIR or target>/release/skiff). The figures
    /// in BENCHMARKS.md from session 21 on are of the `dist` build users run: pass
    /// `--skiff <target>/dist/skiff`.
    #[arg(long)]
    pub skiff: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// Datastore(s) for latency, list and watch (throughput always measures both unless
    /// this is given).
    #[arg(long, value_enum)]
    pub store: Option<StoreChoice>,
    /// startup: number of fresh starts and of restarts.
    #[arg(long, default_value_t = 10)]
    pub starts: usize,
    /// startup: seconds of idle before the second RSS reading.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// latency: requests per second (open loop).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// latency and throughput: seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// throughput: concurrent clients (closed loop).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// list: pods to create; schedule: pending pods to create and have scheduled.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// schedule: simulated node counts to measure, one server each (e.g. --nodes 100,1000,5000).
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 1000])]
    pub nodes: Vec<usize>,
    /// schedule: replicas per Deployment (the pods are spread over as many as needed).
    #[arg(long, default_value_t = 1000)]
    pub per_deployment: usize,
    /// schedule: the failover profile of the server and simulated nodes (fast counts
    /// false NotReady under the load).
    #[arg(long, value_enum, default_value_t = Profile::Upstream)]
    pub profile: Profile,
    /// failover: profiles to measure (default: fast, then upstream).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub profiles: Vec<Profile>,
    /// failover: runs per profile for the fast profile (upstream runs once: ~6 minutes).
    #[arg(long, default_value_t = 3)]
    pub failover_runs: usize,
    /// failover: simulated nodes.
    #[arg(long, default_value_t = 10)]
    pub failover_nodes: usize,
    /// failover: replicas of the Deployment.
    #[arg(long, default_value_t = 30)]
    pub failover_replicas: usize,
    /// list: lists per kind of list.
    #[arg(long, default_value_t = 20)]
    pub lists: usize,
    /// service-create: Services to create.
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    /// watch: concurrent watchers.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// watch: writes observed by every watcher.
    #[arg(long, default_value_t = 2000)]
    pub writes: usize,
    /// HTTP/2 connections the request client spreads its streams over.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Worker threads of the benchmark's own runtime (the machine is shared with the server).
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
}

fn default_skiff() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("release").join("skiff")
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-bench: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Spawned connection tasks must not outlive the servers' temp dirs.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let skiff = args.skiff.clone().unwrap_or_else(default_skiff);
    if !skiff.exists() {
        bail!(
            "no skiff binary at {} (cargo build --release -p skiff, or pass --skiff)",
            skiff.display()
        );
    }
    let skiff = skiff
        .canonicalize()
        .with_context(|| format!("resolving {}", skiff.display()))?;
    let mut list = args.scenarios.clone();
    if list.is_empty() || list.contains(&Scenario::All) {
        list = vec![
            Scenario::Startup,
            Scenario::Latency,
            Scenario::Throughput,
            Scenario::List,
            Scenario::Watch,
        ];
    }
    print_machine(&skiff);
    let env = scenarios::Env {
        args: args.clone(),
        skiff,
    };
    for s in list {
        let started = std::time::Instant::now();
        match s {
            Scenario::Startup => scenarios::startup::run(&env).await,
            Scenario::Latency => scenarios::latency::run(&env).await,
            Scenario::Throughput => scenarios::throughput::run(&env).await,
            Scenario::List => scenarios::list::run(&env).await,
            Scenario::Watch => scenarios::watch::run(&env).await,
            Scenario::Schedule => scenarios::schedule::run(&env).await,
            Scenario::Failover => scenarios::failover::run(&env).await,
            Scenario::Containers => scenarios::containers::run(&env).await,
            Scenario::Pods => scenarios::pods::run(&env).await,
            Scenario::Dns => scenarios::dns::run(&env).await,
            Scenario::Services => scenarios::services::run(&env).await,
            Scenario::Ingress => scenarios::ingress::run(&env).await,
            Scenario::ServiceCreate => scenarios::service_create::run(&env).await,
            Scenario::PodDns => scenarios::pod_dns::run(&env).await,
            Scenario::PodConnect => scenarios::pod_connect::run(&env).await,
            Scenario::All => unreachable!(),
        }
        .with_context(|| format!("scenario {s:?}"))?;
        println!("  ({s:?} took {:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn print_machine(skiff: &std::path::Path) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_total = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    let built = std::fs::metadata(skiff)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| "?".into());
    println!("# skiff-bench");
    println!(
        "  date     {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!(
        "  machine  nproc={nproc}, kernel {}, {cpu}, {:.1} GiB RAM",
        read("/proc/sys/kernel/osrelease").trim(),
        mem_total as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  load     {} (1/5/15 min, at start: the machine is shared)",
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  skiff    {} (built {built})", skiff.display());
}
