//! Acts on the pods bound to simulated nodes: hears pod changes from the shared pod
//! informer, queues the keys of pods on running simulated nodes, and applies what
//! [`lifecycle::decide`] says (a status patch or the final grace-period-0 delete).

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use informers::{Change, ObjectKey, Subscription, WorkQueue};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;

use super::lifecycle::{self, NodeFacts, PodAction};
use super::{Sim, SimError};

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Queues every pod of `node` again (after the node is started).
pub(super) fn requeue_node(sim: &Sim, node: &str) {
    for pod in sim.pods.list() {
        if node_of(&pod) == Some(node) {
            sim.pod_queue.add(ObjectKey::of(pod.as_ref()));
        }
    }
}

/// Follows pod changes and works the queue until the process ends.
pub(super) async fn run(sim: Arc<Sim>, mut changes: Subscription<Pod>) {
    let queue: WorkQueue<ObjectKey> = sim.pod_queue.clone();
    sim.pods.wait_synced().await;
    // Addresses given out by an earlier run stay with their pods.
    for pod in sim.pods.list() {
        release_or_adopt(&sim, &pod);
    }
    let workers = sim.config.max_inflight.max(1);
    let worker_sim = sim.clone();
    tokio::spawn(async move {
        queue
            .run(workers, "simulated pods", move |key: ObjectKey| {
                let sim = worker_sim.clone();
                async move { sync(&sim, &key).await }
            })
            .await
    });
    let queue = sim.pod_queue.clone();
    let ours = |pod: &Pod| node_of(pod).is_some_and(|n| sim.fleet.by_name(n).is_some());
    // Everything in the cache first: the first list may have been heard before the
    // workers existed.
    for pod in sim.pods.list() {
        if ours(&pod) {
            queue.add(ObjectKey::of(pod.as_ref()));
        }
    }
    while let Some(change) = changes.recv().await {
        match change {
            Change::Applied(pod) => {
                if ours(&pod) {
                    queue.add(ObjectKey::of(pod.as_ref()));
                }
            }
            Change::Deleted(pod) => {
                if let (Some(node), Some(uid)) = (
                    node_of(&pod).and_then(|n| sim.fleet.by_name(n)),
                    pod.metadata.uid.as_deref(),
                ) {
                    node.lock_ips().release(uid);
                }
            }
            Change::Resync => {
                for pod in sim.pods.list() {
                    if ours(&pod) {
                        queue.add(ObjectKey::of(pod.as_ref()));
                    }
                }
            }
        }
    }
}

/// Keeps the pool in step with a pod's status: finished pods give their address back,
/// running ones keep the address they show.
fn release_or_adopt(sim: &Sim, pod: &Pod) {
    let (Some(node), Some(uid)) = (
        node_of(pod).and_then(|n| sim.fleet.by_name(n)),
        pod.metadata.uid.as_deref(),
    ) else {
        return;
    };
    if is_terminal(pod) {
        node.lock_ips().release(uid);
        return;
    }
    let shown = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    if let Some(ip) = shown {
        node.lock_ips().adopt(uid, ip);
    }
}

/// Merge-patch a pod's status, as `Api::patch_status` does, without decoding the pod the
/// API server answers with (nothing here reads it; the informer brings the new state).
async fn patch_status(
    client: &kube::Client,
    key: &ObjectKey,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    use kube::Resource;
    let mut req = kube::core::Request::new(Pod::url_path(&(), Some(&key.namespace)))
        .patch_subresource(
            "status",
            &key.name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("patch_status");
    client
        .request::<serde::de::IgnoredAny>(req)
        .await
        .map(|_| ())
}

/// One pass over one pod: decide, then act.
async fn sync(sim: &Sim, key: &ObjectKey) -> Result<Option<Duration>, SimError> {
    let Some(pod) = sim.pods.get_key(key) else {
        return Ok(None);
    };
    let Some(node) = node_of(&pod).and_then(|n| sim.fleet.by_name(n)) else {
        return Ok(None);
    };
    // A stopped node's kubelet is gone: its pods stay as they are until it comes back.
    if !node.is_running() {
        return Ok(None);
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    release_or_adopt(sim, &pod);
    let pod_ip = if is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some() {
        Ipv4Addr::UNSPECIFIED
    } else {
        node.lock_ips()
            .address_of(&uid)
            .ok_or_else(|| SimError::Internal {
                what: format!("giving pod {key} an address on node {}", node.id.name),
                reason: format!("podCIDR {} is exhausted", node.id.pod_cidr),
            })?
    };
    let facts = NodeFacts {
        host_ip: node.id.host_ip,
        runtime_scheme: "skiff-sim",
        default_run_time: sim.config.run_time,
        termination_grace_cap: sim.config.termination_grace_cap,
    };
    let api: Api<Pod> = Api::namespaced(sim.client.clone(), &key.namespace);
    match lifecycle::decide(&pod, &facts, pod_ip, Timestamp::now()) {
        PodAction::Wait(recheck) => Ok(recheck),
        PodAction::WriteStatus {
            status,
            recheck_after,
        } => {
            let finished = matches!(
                status.get("phase").and_then(|p| p.as_str()),
                Some("Succeeded" | "Failed")
            );
            let result = patch_status(&sim.client, key, &json!({"status": status})).await;
            match result {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => {
                    sim.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(SimError::api(format!("reporting status of pod {key}"), e));
                }
            }
            sim.counters.pod_status.fetch_add(1, Ordering::Relaxed);
            if finished {
                node.lock_ips().release(&uid);
            }
            Ok(recheck_after)
        }
        PodAction::Delete => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&key.name, &params).await {
                Ok(_) => {}
                // Gone already, or a new pod of the same name: nothing of ours to delete.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    sim.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(SimError::api(format!("deleting stopped pod {key}"), e));
                }
            }
            sim.counters.pod_deletes.fetch_add(1, Ordering::Relaxed);
            node.lock_ips().release(&uid);
            Ok(None)
        }
    }
}
