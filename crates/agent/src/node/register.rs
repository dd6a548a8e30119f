//! Registering the real node and keeping it alive, as kubelet does: create the Node (or
//! bring an existing one up to date), post its status, then renew its Lease every quarter of
//! the lease duration and re-post status every `status_interval` so its heartbeat stays
//! fresh. A node whose container runtime cannot run pods, or whose pod network is not set
//! up yet (no podCIDR: see [`super::network`]), reports Ready=False with the reason and
//! message kubelet gives, so nothing is scheduled onto it; the change to Ready is posted
//! at once.
//! Memory, disk and pids are measured every 10 s; a pressure condition that changes is
//! posted at once (see [`super::pressure`]).

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::host::{HostError, HostFacts};
use super::network::NetworkStatus;
use super::object::{node_object, node_status, NodeConfig};
use super::pressure;
use crate::simulated::lease::{self, LEASE_NAMESPACE};
use crate::simulated::lifecycle::time;

/// How the node keeps itself alive.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// `leaseDurationSeconds`; renewed every quarter of it (kubelet: 40 s, every 10 s).
    pub lease_duration_seconds: i32,
    /// How often status is re-posted with a fresh heartbeat time.
    pub status_interval: Duration,
    /// Whether the node runs pods (Ready), or reports kubelet's "container runtime not
    /// ready" (NotReady).
    pub runtime_ready: bool,
    /// How often memory, disk and pids are measured for the pressure conditions (kubelet's
    /// eviction monitoring interval, 10 s); a changed condition is posted at once.
    pub pressure_interval: Duration,
    /// The filesystem of the image store (imagefs); the data dir's is nodefs.
    pub image_fs: PathBuf,
    /// The pod network's readiness ([`super::network::follow`]); None: nothing to wait for.
    pub network: Option<watch::Receiver<NetworkStatus>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            lease_duration_seconds: 40,
            status_interval: Duration::from_secs(60),
            runtime_ready: true,
            pressure_interval: Duration::from_secs(10),
            image_fs: PathBuf::new(),
            network: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("building {what}: {reason}")]
    Build { what: String, reason: String },
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> RegisterError {
    let what = what.into();
    move |source| RegisterError::Api { what, source }
}

/// Why the node is not Ready yet: kubelet's wording when the runtime cannot run pods.
pub const RUNTIME_NOT_READY: &str =
    "container runtime not ready: skiff's container runtime could not be started";

/// How long the first status waits for the pod network: a new node gets its podCIDR
/// within moments, and a restarted one reads it back, so neither reports NotReady for an
/// instant (which could taint a node that has pods). Below the fast failover profile's
/// 4 s grace period; the lease is renewed before the wait.
const FIRST_STATUS_WAIT: Duration = Duration::from_secs(2);

/// The Ready condition's message when the node cannot run pods, None when it can: the
/// runtime's and the network's problems, aggregated as kubelet aggregates them (one alone
/// as is, several as `[a, b]`).
pub fn not_ready_message(runtime_ready: bool, network: &NetworkStatus) -> Option<String> {
    let mut problems = Vec::new();
    if !runtime_ready {
        problems.push(RUNTIME_NOT_READY.to_string());
    }
    if let NetworkStatus::NotReady { message } = network {
        problems.push(format!(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: {message}"
        ));
    }
    match problems.len() {
        0 => None,
        1 => problems.pop(),
        _ => Some(format!("[{}]", problems.join(", "))),
    }
}

/// Registers the node and keeps it alive until the process ends. Errors while renewing are
/// logged and retried at the next beat; only registration failures end the loop.
pub async fn run(
    client: Client,
    config: NodeConfig,
    data_dir: PathBuf,
    heartbeat: Heartbeat,
) -> Result<(), RegisterError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let uid = register(&nodes, &config).await?;
    let since = time(Timestamp::now());
    let image_fs = if heartbeat.image_fs.as_os_str().is_empty() {
        data_dir.clone()
    } else {
        heartbeat.image_fs.clone()
    };
    let mut pressure = pressure::Tracker::new(&since, pressure::TRANSITION_PERIOD);
    let measure = |tracker: &mut pressure::Tracker| {
        let observed = pressure::Observations::read(&data_dir, &image_fs);
        let met = pressure::thresholds_met(&observed, &pressure::Thresholds::default());
        tracker.observe(met, std::time::Instant::now(), &time(Timestamp::now()))
    };
    measure(&mut pressure);
    let mut cached: Option<Lease> = None;
    match lease::renew(
        &leases,
        None,
        &config.name,
        &uid,
        heartbeat.lease_duration_seconds,
        Timestamp::now(),
    )
    .await
    {
        Ok(l) => cached = Some(l),
        Err(e) => tracing::warn!(node = %config.name, "renewing the node lease: {e}"),
    }
    let mut network = heartbeat.network.clone();
    if let Some(rx) = network.as_mut() {
        let _ = tokio::time::timeout(
            FIRST_STATUS_WAIT,
            rx.wait_for(|s| *s == NetworkStatus::Ready),
        )
        .await;
    }
    // Closed once the network's follower is done (it sends Ready last); the value stays.
    let mut network_open = network.is_some();
    let problem = |network: &Option<watch::Receiver<NetworkStatus>>| {
        let status = network
            .as_ref()
            .map_or(NetworkStatus::Ready, |rx| rx.borrow().clone());
        not_ready_message(heartbeat.runtime_ready, &status)
    };
    let mut not_ready = problem(&network);
    // When Ready last changed (the condition's lastTransitionTime).
    let mut ready_since = since.clone();
    post_status(
        &nodes,
        &config,
        &data_dir,
        &ready_since,
        not_ready.as_deref(),
        &pressure,
    )
    .await?;
    tracing::info!(node = %config.name, not_ready = ?not_ready, "node registered");

    let renew_every = Duration::from_secs_f64(f64::from(heartbeat.lease_duration_seconds) / 4.0);
    let mut lease_tick = tokio::time::interval(renew_every);
    let mut status_tick = tokio::time::interval(heartbeat.status_interval);
    status_tick.tick().await; // status was just posted
    let mut pressure_tick = tokio::time::interval(heartbeat.pressure_interval);
    pressure_tick.tick().await;
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                match lease::renew(&leases, cached.take(), &config.name, &uid, heartbeat.lease_duration_seconds, Timestamp::now()).await {
                    Ok(l) => cached = Some(l),
                    Err(e) => tracing::warn!(node = %config.name, "renewing the node lease: {e}"),
                }
            }
            _ = status_tick.tick() => {
                if let Err(e) = post_status(&nodes, &config, &data_dir, &ready_since, not_ready.as_deref(), &pressure).await {
                    tracing::warn!(node = %config.name, "posting node status: {e}");
                }
            }
            _ = pressure_tick.tick() => {
                if measure(&mut pressure) {
                    tracing::info!(node = %config.name, pressure = ?pressure.reported, "node pressure changed");
                    if let Err(e) = post_status(&nodes, &config, &data_dir, &ready_since, not_ready.as_deref(), &pressure).await {
                        tracing::warn!(node = %config.name, "posting node status: {e}");
                    }
                }
            }
            changed = network_change(&mut network, network_open) => {
                network_open = changed.is_ok();
                let now = problem(&network);
                if now != not_ready {
                    if now.is_some() != not_ready.is_some() {
                        ready_since = time(Timestamp::now());
                    }
                    not_ready = now;
                    tracing::info!(node = %config.name, not_ready = ?not_ready, "node readiness changed");
                    if let Err(e) = post_status(&nodes, &config, &data_dir, &ready_since, not_ready.as_deref(), &pressure).await {
                        tracing::warn!(node = %config.name, "posting node status: {e}");
                    }
                }
            }
        }
    }
}

/// Creates the Node, or updates labels, annotations and taints of one already there (an
/// earlier run of this agent). Returns its UID (the Lease's owner).
async fn register(nodes: &Api<Node>, config: &NodeConfig) -> Result<String, RegisterError> {
    let object = node_object(config);
    let typed: Node = serde_json::from_value(object.clone()).map_err(|e| RegisterError::Build {
        what: format!("Node {}", config.name),
        reason: e.to_string(),
    })?;
    let node = match nodes.create(&PostParams::default(), &typed).await {
        Ok(n) => n,
        Err(kube::Error::Api(status)) if status.code == 409 => nodes
            .patch(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(&object),
            )
            .await
            .map_err(api_error(format!("updating existing Node {}", config.name)))?,
        Err(e) => return Err(api_error(format!("registering Node {}", config.name))(e)),
    };
    Ok(node.metadata.uid.unwrap_or_default())
}

/// The next change of the network's readiness; never, without a network or once its
/// follower is done.
async fn network_change(
    network: &mut Option<watch::Receiver<NetworkStatus>>,
    open: bool,
) -> Result<(), watch::error::RecvError> {
    match network.as_mut() {
        Some(rx) if open => rx.changed().await,
        _ => std::future::pending().await,
    }
}

/// Posts the status; `since`: when Ready last changed; `not_ready`: the Ready condition's
/// message when the node cannot run pods.
async fn post_status(
    nodes: &Api<Node>,
    config: &NodeConfig,
    data_dir: &std::path::Path,
    since: &str,
    not_ready: Option<&str>,
    pressure: &pressure::Tracker,
) -> Result<(), RegisterError> {
    let facts = HostFacts::read(data_dir)?;
    let now = time(Timestamp::now());
    let mut status = node_status(config, &facts, since, &now);
    pressure::apply(&mut status, pressure);
    if let Some(message) = not_ready {
        mark_not_ready(&mut status, message);
    }
    nodes
        .patch_status(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .map_err(api_error(format!("posting status of Node {}", config.name)))?;
    Ok(())
}

/// Turns the Ready condition of a built status into kubelet's not-ready form.
pub fn mark_not_ready(status: &mut Value, message: &str) {
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
            c["status"] = json!("False");
            c["reason"] = json!("KubeletNotReady");
            c["message"] = json!(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_uses_kubelets_reason() {
        let mut status = json!({"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"}
        ]});
        mark_not_ready(&mut status, RUNTIME_NOT_READY);
        assert_eq!(status["conditions"][1]["status"], "False");
        assert_eq!(status["conditions"][1]["reason"], "KubeletNotReady");
        assert_eq!(status["conditions"][0]["status"], "False");
    }

    #[test]
    fn ready_waits_for_the_runtime_and_the_pod_network() {
        let waiting = NetworkStatus::not_initialized();
        let cases = [
            (true, NetworkStatus::Ready, None),
            (
                true,
                waiting.clone(),
                Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized".to_string()),
            ),
            (false, NetworkStatus::Ready, Some(RUNTIME_NOT_READY.to_string())),
            (
                false,
                waiting,
                Some(format!("[{RUNTIME_NOT_READY}, container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized]")),
            ),
            (
                true,
                NetworkStatus::NotReady { message: "setting up the pod network on bridge b0: boom".into() },
                Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: setting up the pod network on bridge b0: boom".to_string()),
            ),
        ];
        for (runtime_ready, network, want) in cases {
            assert_eq!(
                not_ready_message(runtime_ready, &network),
                want,
                "{runtime_ready} {network:?}"
            );
        }
    }
}
