//! PersistentVolume ↔ PersistentVolumeClaim matching and the well-known storage annotations,
//! shared by the PersistentVolume controller (static binding, provisioning) and the
//! scheduler's VolumeBinding plugin (WaitForFirstConsumer claims), so both pick the same
//! volume for a claim. The rules are upstream's `FindMatchingVolume`
//! (`pkg/controller/volume/persistentvolume/util`): a volume pre-bound to the claim wins;
//! otherwise the smallest Available volume of the claim's class whose capacity, access
//! modes, volume mode, labels (claim selector) and node affinity fit.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::quantity::Quantity;
use crate::selectors::LabelSelector;

/// Set by the scheduler on a WaitForFirstConsumer claim: the node its first pod goes to.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a claim whose binding the PV controller finished.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim (volumeName) or volume (claimRef) the PV controller filled in itself.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The provisioner a claim waits for (set by the PV controller).
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a provisioned volume: who made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a StorageClass: claims without a class get this one.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The class annotation that predates `storageClassName` (still honoured upstream).
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// k3s's bundled provisioner, whose binding logic skiff builds in.
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// The name k3s gives its default class.
pub const LOCAL_PATH_CLASS: &str = "local-path";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The claim's class: the beta annotation if present, else `spec.storageClassName`
/// (upstream `GetPersistentVolumeClaimClass`). "" is "no class".
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(c) = annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS) {
        return c;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's class (upstream `GetPersistentVolumeClass`).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    if let Some(c) = annotation(&pv.metadata, ANN_BETA_STORAGE_CLASS) {
        return c;
    }
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// `spec.resources.requests.storage` in bytes (None when absent or unparseable).
pub fn claim_request_bytes(claim: &PersistentVolumeClaim) -> Option<i64> {
    let q = claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Quantity::parse(&q.0).ok().map(|q| q.as_bytes())
}

/// `spec.capacity.storage` in bytes.
pub fn volume_capacity_bytes(pv: &PersistentVolume) -> Option<i64> {
    let q = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    Quantity::parse(&q.0).ok().map(|q| q.as_bytes())
}

/// The volume's claimRef names this claim (and its uid, when the reference carries one).
pub fn is_volume_bound_to_claim(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if r.name.as_deref() != claim.metadata.name.as_deref()
        || r.namespace.as_deref().unwrap_or("") != claim.metadata.namespace.as_deref().unwrap_or("")
    {
        return false;
    }
    match r.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => Some(uid) == claim.metadata.uid.as_deref(),
        None => true,
    }
}

fn volume_mode_of(mode: Option<&String>) -> &str {
    mode.map(String::as_str).unwrap_or("Filesystem")
}

/// Every access mode the claim asks for is offered by the volume.
pub fn access_modes_fit(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let offered = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[]);
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
        .iter()
        .all(|m| offered.contains(m))
}

/// The claim's label selector holds on the volume (no selector: every volume).
fn selector_fits(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(sel) = claim.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return true;
    };
    let Ok(sel) = LabelSelector::from_label_selector(sel) else {
        return false;
    };
    let empty = Default::default();
    sel.matches(pv.metadata.labels.as_ref().unwrap_or(&empty))
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Upstream `FindMatchingVolume`. `node_fits` says whether a volume's node affinity allows
/// the node being considered; `None` means no node is being considered (the controller),
/// in which case a claim with delayed binding matches only a volume pre-bound to it (the
/// scheduler picks the others once it knows the node).
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    delay_binding: bool,
    node_fits: Option<&dyn Fn(&PersistentVolume) -> bool>,
) -> Option<&'a PersistentVolume> {
    let requested = claim_request_bytes(claim).unwrap_or(0);
    let claim_mode = volume_mode_of(claim.spec.as_ref().and_then(|s| s.volume_mode.as_ref()));
    let class = claim_class(claim);
    let mut smallest: Option<(&PersistentVolume, i64)> = None;
    for pv in volumes {
        let spec = pv.spec.as_ref();
        if spec.and_then(|s| s.claim_ref.as_ref()).is_some() && !is_volume_bound_to_claim(pv, claim)
        {
            continue;
        }
        let capacity = volume_capacity_bytes(pv).unwrap_or(0);
        if capacity < requested {
            continue;
        }
        if volume_mode_of(spec.and_then(|s| s.volume_mode.as_ref())) != claim_mode {
            continue;
        }
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node_ok = node_fits.is_none_or(|f| f(pv));
        if is_volume_bound_to_claim(pv, claim) {
            // A volume pre-bound to the claim is the only candidate.
            return node_ok.then_some(pv);
        }
        if node_fits.is_none() && delay_binding {
            continue;
        }
        if phase(pv) != "Available"
            || !selector_fits(pv, claim)
            || volume_class(pv) != class
            || !node_ok
            || !access_modes_fit(pv, claim)
        {
            continue;
        }
        if smallest.is_none_or(|(_, c)| capacity < c) {
            smallest = Some((pv, capacity));
        }
    }
    smallest.map(|(pv, _)| pv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pv(name: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "storageClassName": "manual", "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pv")
    }

    fn pvc(extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "manual"}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pvc")
    }

    fn merge(base: &mut Value, extra: Value) {
        match (base, extra) {
            (Value::Object(b), Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    #[test]
    fn picks_as_upstream() {
        let small = pv("small", json!({"spec": {"capacity": {"storage": "1Gi"}}}));
        let big = pv("big", json!({"spec": {"capacity": {"storage": "10Gi"}}}));
        let other_class = pv("other", json!({"spec": {"storageClassName": "fast"}}));
        let taken = pv(
            "taken",
            json!({"spec": {"claimRef": {"name": "x", "namespace": "default"}}}),
        );
        let released = pv("released", json!({"status": {"phase": "Released"}}));
        let rwx = pv("rwx", json!({"spec": {"accessModes": ["ReadWriteMany"]}}));
        let labelled = pv(
            "labelled",
            json!({"metadata": {"labels": {"tier": "gold"}}, "spec": {"capacity": {"storage": "5Gi"}}}),
        );
        let prebound = pv(
            "prebound",
            json!({"spec": {"capacity": {"storage": "20Gi"}, "claimRef": {"name": "data", "namespace": "default"}}, "status": {"phase": "Pending"}}),
        );
        let prebound_other_uid = pv(
            "prebound-old",
            json!({"spec": {"claimRef": {"name": "data", "namespace": "default", "uid": "old"}}}),
        );
        struct Case {
            name: &'static str,
            claim: PersistentVolumeClaim,
            volumes: Vec<&'static PersistentVolume>,
            delay: bool,
            want: Option<&'static str>,
        }
        let leak = |p: PersistentVolume| -> &'static PersistentVolume { Box::leak(Box::new(p)) };
        let (small, big, other_class, taken, released, rwx, labelled, prebound, prebound_other_uid) = (
            leak(small),
            leak(big),
            leak(other_class),
            leak(taken),
            leak(released),
            leak(rwx),
            leak(labelled),
            leak(prebound),
            leak(prebound_other_uid),
        );
        let cases = vec![
            Case {
                name: "smallest fitting",
                claim: pvc(json!({})),
                volumes: vec![big, small],
                delay: false,
                want: Some("small"),
            },
            Case {
                name: "capacity too small",
                claim: pvc(json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}})),
                volumes: vec![small, big],
                delay: false,
                want: Some("big"),
            },
            Case {
                name: "nothing big enough",
                claim: pvc(json!({"spec": {"resources": {"requests": {"storage": "50Gi"}}}})),
                volumes: vec![small, big],
                delay: false,
                want: None,
            },
            Case {
                name: "class must match",
                claim: pvc(json!({"spec": {"storageClassName": "fast"}})),
                volumes: vec![small, other_class],
                delay: false,
                want: Some("other"),
            },
            Case {
                name: "claimed by another, released",
                claim: pvc(json!({})),
                volumes: vec![taken, released],
                delay: false,
                want: None,
            },
            Case {
                name: "access modes",
                claim: pvc(json!({"spec": {"accessModes": ["ReadWriteMany"]}})),
                volumes: vec![small, rwx],
                delay: false,
                want: Some("rwx"),
            },
            Case {
                name: "selector",
                claim: pvc(json!({"spec": {"selector": {"matchLabels": {"tier": "gold"}}}})),
                volumes: vec![small, labelled],
                delay: false,
                want: Some("labelled"),
            },
            Case {
                name: "pre-bound wins over smaller",
                claim: pvc(json!({})),
                volumes: vec![small, prebound],
                delay: false,
                want: Some("prebound"),
            },
            Case {
                name: "pre-bound to an older claim of the same name",
                claim: pvc(json!({})),
                volumes: vec![prebound_other_uid],
                delay: false,
                want: None,
            },
            Case {
                name: "delayed binding: only pre-bound",
                claim: pvc(json!({})),
                volumes: vec![small],
                delay: true,
                want: None,
            },
            Case {
                name: "delayed binding: pre-bound",
                claim: pvc(json!({})),
                volumes: vec![small, prebound],
                delay: true,
                want: Some("prebound"),
            },
        ];
        for c in cases {
            let got = find_matching_volume(&c.claim, c.volumes.iter().copied(), c.delay, None)
                .and_then(|p| p.metadata.name.as_deref());
            assert_eq!(got, c.want, "{}", c.name);
        }
        // With a node: the volume's affinity decides.
        let refuse = |_: &PersistentVolume| false;
        assert_eq!(
            find_matching_volume(&pvc(json!({})), [small], true, Some(&refuse))
                .map(|p| p.metadata.name.clone()),
            None
        );
        let allow = |_: &PersistentVolume| true;
        assert_eq!(
            find_matching_volume(&pvc(json!({})), [small], true, Some(&allow))
                .and_then(|p| p.metadata.name.as_deref()),
            Some("small")
        );
    }
}
