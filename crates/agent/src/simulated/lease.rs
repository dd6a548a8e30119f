//! Node leases in `kube-node-lease`: one per node, held by the node, renewed every
//! `renew_interval` (kubelet: 10 s, a quarter of the 40 s duration), and the schedule that
//! spreads the renewals of thousands of nodes evenly over the interval instead of bursting.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

use super::SimError;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The Lease kubelet creates for its node, owned by the Node so it goes with it.
pub fn lease_object(
    node: &str,
    node_uid: &str,
    duration_seconds: i32,
    now: Timestamp,
) -> Result<Lease, SimError> {
    let mut owner = json!({"apiVersion": "v1", "kind": "Node", "name": node});
    if !node_uid.is_empty() {
        owner["uid"] = json!(node_uid);
    }
    let value = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": if node_uid.is_empty() { json!([]) } else { json!([owner]) },
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration_seconds,
        },
    });
    let mut lease: Lease = serde_json::from_value(value).map_err(|e| SimError::Internal {
        what: format!("building Lease {node}"),
        reason: e.to_string(),
    })?;
    lease.spec.get_or_insert_with(Default::default).renew_time = Some(MicroTime(now));
    Ok(lease)
}

/// Renews `node`'s lease. `cached` is the lease from the last renewal: kubelet updates
/// its own copy (one write, no read) and only reads or creates after a conflict or a miss.
pub async fn renew(
    api: &Api<Lease>,
    cached: Option<Lease>,
    node: &str,
    node_uid: &str,
    duration_seconds: i32,
    now: Timestamp,
) -> Result<Lease, SimError> {
    if let Some(mut lease) = cached {
        lease.spec.get_or_insert_with(Default::default).renew_time = Some(MicroTime(now));
        match api.replace(node, &PostParams::default(), &lease).await {
            Ok(updated) => return Ok(updated),
            // Someone else wrote it (or it is gone): start again from the API's copy.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => {
                return Err(SimError::api(
                    format!("renewing Lease {LEASE_NAMESPACE}/{node}"),
                    e,
                ))
            }
        }
    }
    match api.get_opt(node).await {
        Ok(Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(now));
            spec.holder_identity = Some(node.to_string());
            spec.lease_duration_seconds = Some(duration_seconds);
            api.replace(node, &PostParams::default(), &lease)
                .await
                .map_err(|e| SimError::api(format!("renewing Lease {LEASE_NAMESPACE}/{node}"), e))
        }
        Ok(None) => {
            let lease = lease_object(node, node_uid, duration_seconds, now)?;
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(|e| SimError::api(format!("creating Lease {LEASE_NAMESPACE}/{node}"), e))
        }
        Err(e) => Err(SimError::api(
            format!("reading Lease {LEASE_NAMESPACE}/{node}"),
            e,
        )),
    }
}

/// Which nodes are due in each of `slots` equal slices of the renew interval: node `i`
/// renews in slot `i % slots`, so 5,000 nodes with 100 slots renew 50 at a time every
/// 100 ms rather than 5,000 at once.
pub fn slot_of(index: usize, slots: usize) -> usize {
    index % slots.max(1)
}

/// How many slots to cut the interval into: about one per 100 ms, never more than nodes.
pub fn slot_count(interval: Duration, nodes: usize) -> usize {
    let per_100ms = (interval.as_millis() / 100).max(1) as usize;
    per_100ms.min(nodes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_held_by_its_node_and_owned_by_the_node_object() {
        let now: Timestamp = "2026-01-01T10:00:00.123456Z".parse().unwrap();
        let lease = lease_object("sim-3", "uid-3", 40, now).unwrap();
        let v = serde_json::to_value(&lease).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["spec"]["holderIdentity"], "sim-3");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T10:00:00.123456Z");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-3");
    }

    #[test]
    fn renewals_are_spread_over_the_interval() {
        let interval = Duration::from_secs(10);
        assert_eq!(slot_count(interval, 5000), 100);
        assert_eq!(slot_count(interval, 3), 3);
        let slots = slot_count(interval, 5000);
        let mut per_slot = vec![0; slots];
        for i in 0..5000 {
            per_slot[slot_of(i, slots)] += 1;
        }
        assert!(per_slot.iter().all(|&n| n == 50), "{per_slot:?}");
    }
}
