//! Simulated nodes (kwok's idea, built in): one process registers N Nodes, keeps their
//! Leases renewed and their status reported, and makes every pod bound to them look as a
//! kubelet would report it (Running and Ready with an IP; Succeeded or Failed for pods
//! that finish; gone soon after a delete) without running any container. Nodes can be
//! stopped and started through a line-based control channel, for failure tests.
//!
//! Cheap by construction: one API client (one connection pool), one watch on bound pods
//! (`spec.nodeName!=`) and one on nodes (shared caches from `informers`), one timer wheel
//! for all heartbeats, and a bounded number of writes in flight.
//!
//! - [`config`]: what the fleet looks like, flag parsing.
//! - [`node`]: the Node object and its status (registration, heartbeats).
//! - [`lease`]: node Leases and the renewal spread.
//! - [`lifecycle`]: what happens to a pod (pure decision), [`pods`] acts on it.
//! - [`fleet`]: per-node state (running/stopped, last lease, pod addresses).
//! - [`control`]: the stop/start command channel.

pub mod config;
pub mod control;
pub mod fleet;
pub mod lease;
pub mod lifecycle;
pub mod node;
mod pods;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

pub use config::SimConfig;
use fleet::Fleet;
use node::NodeIdentity;

/// The field selector of the pod watch: every pod bound to a node.
const BOUND_PODS: &str = "spec.nodeName!=";

/// What can go wrong running simulated nodes.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{flag} {value:?}: {reason}")]
    InvalidFlag {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {reason}")]
    Internal { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl SimError {
    pub fn api(what: impl Into<String>, source: kube::Error) -> SimError {
        SimError::Api {
            what: what.into(),
            source,
        }
    }
}

/// API writes made, by purpose, for the periodic rate log.
#[derive(Default)]
pub struct WriteCounters {
    pub lease_renewals: AtomicU64,
    pub node_status: AtomicU64,
    pub pod_status: AtomicU64,
    pub pod_deletes: AtomicU64,
    pub failures: AtomicU64,
}

impl WriteCounters {
    fn snapshot(&self) -> [u64; 5] {
        [
            self.lease_renewals.load(Ordering::Relaxed),
            self.node_status.load(Ordering::Relaxed),
            self.pod_status.load(Ordering::Relaxed),
            self.pod_deletes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        ]
    }
}

/// Everything the fleet's tasks share.
pub(crate) struct Sim {
    config: SimConfig,
    fleet: Fleet,
    nodes_api: Api<Node>,
    leases_api: Api<Lease>,
    client: Client,
    counters: WriteCounters,
    pods: informers::Informer<Pod>,
    nodes: informers::Informer<Node>,
    pod_queue: informers::WorkQueue<informers::ObjectKey>,
}

/// Runs the fleet until the process ends: registers every node, prints `ready N` on
/// `replies`, then serves the control channel on `commands` (see [`control`]).
pub async fn run<R, W>(
    client: Client,
    config: SimConfig,
    commands: R,
    mut replies: W,
) -> Result<(), SimError>
where
    R: AsyncBufRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    config.validate()?;
    let identities: Vec<NodeIdentity> = (0..config.count)
        .map(|i| {
            NodeIdentity::of(&config, i).ok_or_else(|| SimError::Internal {
                what: format!("addressing node {i}"),
                reason: "outside the configured ranges".into(),
            })
        })
        .collect::<Result<_, _>>()?;
    let factory = informers::Factory::new(client.clone());
    // Only pods bound to some node, as kubelets watch theirs (`spec.nodeName=<node>`): a
    // pod the scheduler has not bound yet is no simulated node's business, and the API
    // server decides the selector on the stored bytes.
    let pods = factory.informer_with_fields::<Pod>(BOUND_PODS);
    let nodes = factory.informer::<Node>();
    let pod_changes = pods.subscribe();
    factory.start();

    let sim = Arc::new(Sim {
        fleet: Fleet::new(identities),
        nodes_api: Api::all(client.clone()),
        leases_api: Api::namespaced(client.clone(), lease::LEASE_NAMESPACE),
        client,
        counters: WriteCounters::default(),
        pods,
        nodes,
        pod_queue: informers::WorkQueue::new(),
        config,
    });

    let started = Instant::now();
    register_all(&sim).await?;
    tracing::info!(
        nodes = sim.fleet.len(),
        "simulated nodes registered in {} ms",
        started.elapsed().as_millis()
    );
    reply(&mut replies, &format!("ready {}", sim.fleet.len())).await?;

    tokio::spawn(heartbeat_wheel(sim.clone()));
    tokio::spawn(log_write_rates(sim.clone()));
    tokio::spawn(pods::run(sim.clone(), pod_changes));

    let mut lines = commands.lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("control channel closed: {e}");
                break;
            }
        };
        let answer = match control::parse(&line) {
            Ok(None) => continue,
            Ok(Some(cmd)) => execute(&sim, cmd),
            Err(e) => format!("error {e}"),
        };
        reply(&mut replies, &answer).await?;
    }
    // No controller any more: keep the nodes alive until the process is killed.
    std::future::pending::<()>().await;
    Ok(())
}

async fn reply<W: AsyncWrite + Unpin>(out: &mut W, line: &str) -> Result<(), SimError> {
    let io = |source| SimError::Io {
        what: "writing to the control channel".into(),
        source,
    };
    out.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    out.flush().await.map_err(io)
}

fn execute(sim: &Arc<Sim>, cmd: control::Command) -> String {
    match cmd {
        control::Command::Stop(name) => match sim.fleet.set_running(&name, false) {
            None => format!("error no simulated node named {name:?}"),
            Some(_) => {
                tracing::info!(node = %name, "simulated node stopped");
                format!("ok stop {name}")
            }
        },
        control::Command::Start(name) => match sim.fleet.set_running(&name, true) {
            None => format!("error no simulated node named {name:?}"),
            Some(changed) => {
                if changed {
                    tracing::info!(node = %name, "simulated node started");
                    if let Some(index) = sim.fleet.index_of(&name) {
                        // Report at once, as a kubelet coming back does, then pick up the
                        // pods that changed while it was away.
                        let s = sim.clone();
                        tokio::spawn(async move { beat(&s, index, true).await });
                        pods::requeue_node(sim, &name);
                    }
                }
                format!("ok start {name}")
            }
        },
        control::Command::List => {
            let states: Vec<String> = sim
                .fleet
                .iter()
                .map(|n| {
                    let state = if n.is_running() { "running" } else { "stopped" };
                    format!("{}={state}", n.id.name)
                })
                .collect();
            format!("ok list {}", states.join(" "))
        }
    }
}

/// Registers every node (Node, status, Lease) with bounded concurrency.
async fn register_all(sim: &Arc<Sim>) -> Result<(), SimError> {
    let mut results = futures::stream::iter(0..sim.fleet.len())
        .map(|index| {
            let sim = sim.clone();
            async move { register_one(&sim, index).await }
        })
        .buffer_unordered(sim.config.max_inflight.max(1));
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

async fn register_one(sim: &Sim, index: usize) -> Result<(), SimError> {
    let node = sim.fleet.node(index);
    let uid = node::register(&sim.nodes_api, &sim.config, &node.id).await?;
    let now = Timestamp::now();
    node::post_status(
        &sim.nodes_api,
        &node.id.name,
        node::node_status(&sim.config, &node.id, now, now),
    )
    .await?;
    let lease = lease::renew(
        &sim.leases_api,
        None,
        &node.id.name,
        &uid,
        sim.config.lease_duration_seconds,
        now,
    )
    .await?;
    let mut state = node.lock_state();
    state.uid = uid;
    state.lease = Some(lease);
    state.last_status_post = Some(Instant::now());
    Ok(())
}

/// One timer for every node: the renew interval is cut into slots and each slot's nodes
/// renew together, so the load is even (see [`lease::slot_of`]).
async fn heartbeat_wheel(sim: Arc<Sim>) {
    let interval = sim.config.renew_interval;
    let slots = lease::slot_count(interval, sim.fleet.len());
    let slot_length = interval / slots as u32;
    let mut next = tokio::time::Instant::now() + slot_length;
    let mut slot = 0usize;
    loop {
        tokio::time::sleep_until(next).await;
        next += slot_length;
        for index in (slot..sim.fleet.len()).step_by(slots) {
            let node = sim.fleet.node(index);
            if !node.is_running() {
                continue;
            }
            // Every node renews on its own, as every kubelet does: a slow server makes a
            // node's renewals late (its next beat waits for the one in flight) but never
            // holds up another node's, so the fleet's renewals are not starved behind a
            // shared limit while the server is busy with pod writes.
            {
                let mut state = node.lock_state();
                if state.beating {
                    continue;
                }
                state.beating = true;
            }
            let s = sim.clone();
            tokio::spawn(async move {
                beat(&s, index, false).await;
                s.fleet.node(index).lock_state().beating = false;
            });
        }
        slot = (slot + 1) % slots;
    }
}

/// One heartbeat of one node: renew its lease, and post its status if the API no longer
/// shows what it reported or the report interval has passed (kubelet's rule).
async fn beat(sim: &Sim, index: usize, force_status: bool) {
    let node = sim.fleet.node(index);
    let name = &node.id.name;
    let (cached, uid, last_post) = {
        let mut state = node.lock_state();
        (
            state.lease.take(),
            state.uid.clone(),
            state.last_status_post,
        )
    };
    let now = Timestamp::now();
    match lease::renew(
        &sim.leases_api,
        cached,
        name,
        &uid,
        sim.config.lease_duration_seconds,
        now,
    )
    .await
    {
        Ok(lease) => {
            sim.counters.lease_renewals.fetch_add(1, Ordering::Relaxed);
            node.lock_state().lease = Some(lease);
        }
        Err(e) => {
            sim.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{e}");
        }
    }
    let cached_node = sim.nodes.get("", name);
    let still_reported = cached_node
        .as_deref()
        .is_some_and(node::status_still_reported);
    let due = last_post.is_none_or(|t| t.elapsed() >= sim.config.status_report_interval);
    if !(force_status || due || !still_reported) {
        return;
    }
    let since = cached_node
        .as_deref()
        .filter(|_| still_reported)
        .and_then(node::conditions_since)
        .unwrap_or(now);
    let status = node::node_status(&sim.config, &node.id, since, now);
    match node::post_status(&sim.nodes_api, name, status).await {
        Ok(()) => {
            sim.counters.node_status.fetch_add(1, Ordering::Relaxed);
            node.lock_state().last_status_post = Some(Instant::now());
        }
        Err(e) => {
            sim.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{e}");
        }
    }
}

/// Logs the API write rate once a minute, so its cost can be read off the log.
async fn log_write_rates(sim: Arc<Sim>) {
    let period = Duration::from_secs(60);
    let mut last = sim.counters.snapshot();
    loop {
        tokio::time::sleep(period).await;
        let now = sim.counters.snapshot();
        let d: Vec<u64> = now.iter().zip(last.iter()).map(|(a, b)| a - b).collect();
        let total: u64 = d[..4].iter().sum();
        tracing::info!(
            leases = d[0],
            node_status = d[1],
            pod_status = d[2],
            pod_deletes = d[3],
            failures = d[4],
            "API writes in the last minute: {total} ({:.1}/s)",
            total as f64 / period.as_secs_f64()
        );
        last = now;
    }
}
