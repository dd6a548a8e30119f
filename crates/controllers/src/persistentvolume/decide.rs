//! The deciding half of the PersistentVolume controller: from one claim (or one volume) and
//! what the caches show around it, the list of steps that bring it closer to upstream's
//! binder state (`pkg/controller/volume/persistentvolume`, plus the pvc-/pv-protection
//! controllers and what k3s's local-path-provisioner does for its class). Pure: no I/O;
//! `mod.rs` acts.
//!
//! Binding takes upstream's four writes in order — volume `claimRef`, volume phase Bound,
//! claim `volumeName` (+ bind-completed), claim phase Bound — and every sync computes
//! the steps still missing from what is observed, so a crash or a conflict half-way leaves
//! a state the next sync finishes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, Pod, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use api::volumes::{
    access_modes_fit, claim_class, claim_request_bytes, find_matching_volume,
    is_volume_bound_to_claim, volume_capacity_bytes, volume_class, ANN_BETA_STORAGE_PROVISIONER,
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER,
};

/// Held on every claim until no running pod uses it (upstream pvc-protection).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Held on every volume until it is no longer Bound (upstream pv-protection).
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// local-path-provisioner records the node it provisioned on.
pub const ANN_LOCAL_PATH_SELECTED_NODE: &str = "local.path.provisioner/selected-node";

/// Who reports an event: the PV controller, or the built-in local-path provisioner
/// (upstream these come from two processes, so `kubectl describe` shows two sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Controller,
    Provisioner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub source: Source,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// On the claim being synced.
    AddClaimFinalizer,
    RemoveClaimFinalizer,
    /// Record which provisioner the claim waits for (both annotations, as upstream).
    AnnotateClaimProvisioner(String),
    ClaimEvent(Note),
    /// Set the claim's `volumeName` and `bind-completed` (and `bound-by-controller` when
    /// the controller chose the volume).
    BindClaim {
        volume: String,
        bound_by_controller: bool,
    },
    /// Claim status: phase Bound with the volume's capacity and access modes.
    ClaimBound {
        volume: String,
    },
    ClaimPhase(&'static str),
    /// Create a provisioned volume (pre-bound to the claim).
    CreateVolume(Box<PersistentVolume>),
    /// Point the volume's `claimRef` at the claim (with its uid).
    BindVolume {
        volume: String,
        bound_by_controller: bool,
    },
    /// Clear a controller-made `claimRef` whose claim bound elsewhere.
    UnbindVolume {
        volume: String,
    },
    VolumePhase {
        volume: String,
        phase: &'static str,
    },
    VolumeEvent {
        volume: String,
        note: Note,
    },
    /// Reclaim policy Delete. For local-path volumes this is where the node agent will
    /// remove the directory first (local-path-provisioner runs a helper pod for it).
    DeleteVolume {
        volume: String,
        uid: String,
    },
    AddVolumeFinalizer {
        volume: String,
    },
    RemoveVolumeFinalizer {
        volume: String,
    },
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn claim_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn is_delay_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The claims a pod names: `persistentVolumeClaim.claimName`, and `<pod>-<volume>` for
/// generic ephemeral volumes.
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// Upstream pvc-protection's "in use": a pod on a node, not finished, naming the claim.
pub fn pod_uses_claim(pod: &Pod, claim_name: &str) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    );
    scheduled && !finished && pod_claim_names(pod).iter().any(|c| c == claim_name)
}

/// What a claim sync sees.
pub struct ClaimView<'a> {
    pub claim: &'a PersistentVolumeClaim,
    /// The claim's StorageClass, if it names one that exists.
    pub class: Option<&'a StorageClass>,
    /// Every volume in the cache.
    pub volumes: &'a [&'a PersistentVolume],
    /// A scheduled, unfinished pod uses the claim.
    pub in_use: bool,
    /// Where local-path volumes live on nodes.
    pub storage_root: &'a str,
}

pub fn provisioned_volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or(""))
}

/// local-path-provisioner's directory layout: `<root>/pvc-<uid>_<namespace>_<claim>`.
pub fn local_path_for(storage_root: &str, claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}_{}_{}",
        storage_root.trim_end_matches('/'),
        provisioned_volume_name(claim),
        claim.metadata.namespace.as_deref().unwrap_or(""),
        name(&claim.metadata)
    )
}

pub fn decide_claim(v: &ClaimView<'_>) -> Vec<Action> {
    let claim = v.claim;
    let mut acts = Vec::new();
    if claim.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&claim.metadata, PVC_PROTECTION) && !v.in_use {
            acts.push(Action::RemoveClaimFinalizer);
        }
        return acts;
    }
    if !has_finalizer(&claim.metadata, PVC_PROTECTION) {
        acts.push(Action::AddClaimFinalizer);
    }
    let volume_name = claim_volume_name(claim);
    if !volume_name.is_empty() {
        sync_bound_claim(v, volume_name, &mut acts);
        return acts;
    }
    let delay = is_delay_binding(v.class);
    if let Some(pv) = find_matching_volume(claim, v.volumes.iter().copied(), delay, None) {
        bind(claim, pv, &mut acts);
        return acts;
    }
    let class_name = claim_class(claim);
    let selected_node = annotation(&claim.metadata, ANN_SELECTED_NODE);
    let event = |warning, reason, message: String| {
        Action::ClaimEvent(Note {
            source: Source::Controller,
            warning,
            reason,
            message,
        })
    };
    if delay && selected_node.is_none() {
        acts.push(event(
            false,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        ));
    } else if class_name.is_empty() {
        acts.push(event(
            false,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        ));
    } else {
        match v.class {
            None => acts.push(event(
                true,
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            )),
            Some(class) => provision(v, class, selected_node, &mut acts),
        }
    }
    if claim_phase(claim) != "Pending" {
        acts.push(Action::ClaimPhase("Pending"));
    }
    acts
}

/// The steps of upstream's `bind()` still missing for `claim` ↔ `pv`.
fn bind(claim: &PersistentVolumeClaim, pv: &PersistentVolume, acts: &mut Vec<Action>) {
    let pv_name = name(&pv.metadata).to_string();
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let ref_has_uid = claim_ref
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| !u.is_empty());
    if !ref_has_uid {
        acts.push(Action::BindVolume {
            volume: pv_name.clone(),
            bound_by_controller: claim_ref.is_none(),
        });
    }
    if volume_phase(pv) != "Bound" {
        acts.push(Action::VolumePhase {
            volume: pv_name.clone(),
            phase: "Bound",
        });
    }
    let bound_by_controller = claim_volume_name(claim).is_empty()
        || annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER).is_some();
    if claim_volume_name(claim) != pv_name
        || annotation(&claim.metadata, ANN_BIND_COMPLETED).is_none()
    {
        acts.push(Action::BindClaim {
            volume: pv_name.clone(),
            bound_by_controller,
        });
    }
    let status = claim.status.as_ref();
    let status_current = claim_phase(claim) == "Bound"
        && status.and_then(|s| s.capacity.as_ref())
            == pv.spec.as_ref().and_then(|s| s.capacity.as_ref())
        && status.and_then(|s| s.access_modes.as_ref())
            == pv.spec.as_ref().and_then(|s| s.access_modes.as_ref());
    if !status_current {
        acts.push(Action::ClaimBound { volume: pv_name });
    }
}

/// A claim that names its volume (bound, or pre-bound by the user).
fn sync_bound_claim(v: &ClaimView<'_>, volume_name: &str, acts: &mut Vec<Action>) {
    let claim = v.claim;
    let warn = |reason, message: String| {
        Action::ClaimEvent(Note {
            source: Source::Controller,
            warning: true,
            reason,
            message,
        })
    };
    let Some(pv) = v
        .volumes
        .iter()
        .copied()
        .find(|p| name(&p.metadata) == volume_name)
    else {
        if claim_phase(claim) == "Bound" {
            acts.push(Action::ClaimPhase("Lost"));
            acts.push(warn(
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
            ));
        } else if claim_phase(claim) != "Pending" {
            acts.push(Action::ClaimPhase("Pending"));
        }
        return;
    };
    let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    match claim_ref {
        Some(_) if is_volume_bound_to_claim(pv, claim) => bind(claim, pv, acts),
        Some(_) => {
            if claim_phase(claim) == "Bound" {
                acts.push(Action::ClaimPhase("Lost"));
                acts.push(warn(
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                ));
            } else {
                acts.push(Action::ClaimEvent(Note {
                    source: Source::Controller,
                    warning: false,
                    reason: "FailedBinding",
                    message: format!(
                        "volume \"{volume_name}\" already bound to a different claim."
                    ),
                }));
            }
        }
        None => {
            // The user pre-bound the claim: the volume must still satisfy it.
            let mismatch = if volume_capacity_bytes(pv).unwrap_or(0)
                < claim_request_bytes(claim).unwrap_or(0)
            {
                Some("requested PV is too small")
            } else if volume_class(pv) != claim_class(claim) {
                Some("storageClassName does not match")
            } else if !access_modes_fit(pv, claim) {
                Some("incompatible accessMode")
            } else if pv.metadata.deletion_timestamp.is_some() {
                Some("the volume is being deleted")
            } else {
                None
            };
            match mismatch {
                Some(why) => acts.push(warn(
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
                )),
                None => bind(claim, pv, acts),
            }
        }
    }
}

/// No volume matches: ask the class's provisioner. skiff is the local-path provisioner
/// (as k3s bundles it); any other provisioner is external and the claim waits for it.
fn provision(
    v: &ClaimView<'_>,
    class: &StorageClass,
    selected_node: Option<&str>,
    acts: &mut Vec<Action>,
) {
    let claim = v.claim;
    let provisioner = class.provisioner.as_str();
    if annotation(&claim.metadata, ANN_STORAGE_PROVISIONER) != Some(provisioner)
        || annotation(&claim.metadata, ANN_BETA_STORAGE_PROVISIONER) != Some(provisioner)
    {
        acts.push(Action::AnnotateClaimProvisioner(provisioner.to_string()));
    }
    acts.push(Action::ClaimEvent(Note {
        source: Source::Controller,
        warning: false,
        reason: "ExternalProvisioning",
        message: format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
    }));
    if provisioner != LOCAL_PATH_PROVISIONER {
        return;
    }
    let class_name = name(&class.metadata);
    let failed = |why: &str| {
        Action::ClaimEvent(Note {
            source: Source::Provisioner,
            warning: true,
            reason: "ProvisioningFailed",
            message: format!(
                "failed to provision volume with StorageClass \"{class_name}\": {why}"
            ),
        })
    };
    let Some(node) = selected_node else {
        acts.push(failed("configuration error, no node was specified"));
        return;
    };
    let spec = claim.spec.as_ref();
    let modes = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    if modes
        .iter()
        .any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod")
    {
        acts.push(failed(
            "NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes",
        ));
        return;
    }
    if spec.and_then(|s| s.volume_mode.as_deref()) == Some("Block") {
        acts.push(failed("local-path supports only Filesystem volumes"));
        return;
    }
    let pv_name = provisioned_volume_name(claim);
    if v.volumes.iter().any(|p| name(&p.metadata) == pv_name) {
        // Made already; binding continues when the cache shows it pre-bound.
        return;
    }
    let Some(request) = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
    else {
        acts.push(failed("the claim requests no storage"));
        return;
    };
    let claim_key = format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        name(&claim.metadata)
    );
    acts.push(Action::ClaimEvent(Note {
        source: Source::Provisioner,
        warning: false,
        reason: "Provisioning",
        message: format!("External provisioner is provisioning volume for claim \"{claim_key}\""),
    }));
    acts.push(Action::CreateVolume(Box::new(local_path_volume(
        v, class, node, modes, request,
    ))));
    acts.push(Action::ClaimEvent(Note {
        source: Source::Provisioner,
        warning: false,
        reason: "ProvisioningSucceeded",
        message: format!("Successfully provisioned volume {pv_name}"),
    }));
}

/// The volume local-path-provisioner makes: a hostPath directory on the selected node,
/// pinned there by node affinity, pre-bound to the claim.
fn local_path_volume(
    v: &ClaimView<'_>,
    class: &StorageClass,
    node: &str,
    access_modes: Vec<String>,
    request: Quantity,
) -> PersistentVolume {
    let claim = v.claim;
    let annotations = BTreeMap::from([
        (
            ANN_PROVISIONED_BY.to_string(),
            LOCAL_PATH_PROVISIONER.to_string(),
        ),
        (ANN_LOCAL_PATH_SELECTED_NODE.to_string(), node.to_string()),
    ]);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(provisioned_volume_name(claim)),
            annotations: Some(annotations),
            finalizers: Some(vec![PV_PROTECTION.to_string()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(access_modes),
            capacity: Some(BTreeMap::from([("storage".to_string(), request)])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            }),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                path: local_path_for(v.storage_root, claim),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some(
                claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_mode.clone())
                    .unwrap_or_else(|| "Filesystem".into()),
            ),
            mount_options: class.mount_options.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// What a volume sync sees: the claim its `claimRef` names, by namespace/name, if the
/// cache has one.
pub struct VolumeView<'a> {
    pub volume: &'a PersistentVolume,
    pub claim: Option<&'a PersistentVolumeClaim>,
}

pub fn decide_volume(v: &VolumeView<'_>) -> Vec<Action> {
    let pv = v.volume;
    let pv_name = name(&pv.metadata).to_string();
    let mut acts = Vec::new();
    let phase = volume_phase(pv);
    if pv.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&pv.metadata, PV_PROTECTION) && phase != "Bound" {
            acts.push(Action::RemoveVolumeFinalizer { volume: pv_name });
        }
        return acts;
    }
    if !has_finalizer(&pv.metadata, PV_PROTECTION) {
        acts.push(Action::AddVolumeFinalizer {
            volume: pv_name.clone(),
        });
    }
    let set_phase = |acts: &mut Vec<Action>, want: &'static str| {
        if phase != want {
            acts.push(Action::VolumePhase {
                volume: pv_name.clone(),
                phase: want,
            });
        }
    };
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        set_phase(&mut acts, "Available");
        return acts;
    };
    let ref_uid = claim_ref.uid.as_deref().unwrap_or("");
    if ref_uid.is_empty() {
        // Pre-bound by name only: available to exactly that claim, which binds it.
        set_phase(&mut acts, "Available");
        return acts;
    }
    let claim = v
        .claim
        .filter(|c| c.metadata.uid.as_deref() == Some(ref_uid));
    let Some(claim) = claim else {
        // The claim is gone: upstream's Released, then the reclaim policy.
        if phase != "Released" && phase != "Failed" {
            acts.push(Action::VolumePhase {
                volume: pv_name.clone(),
                phase: "Released",
            });
        }
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete" => acts.push(Action::DeleteVolume {
                volume: pv_name,
                uid: pv.metadata.uid.clone().unwrap_or_default(),
            }),
            "Recycle" if phase != "Failed" => {
                acts.push(Action::VolumeEvent {
                    volume: pv_name.clone(),
                    note: Note {
                        source: Source::Controller,
                        warning: true,
                        reason: "VolumeFailedRecycle",
                        message:
                            "Recycle is deprecated and not supported by skiff; use Delete or Retain"
                                .into(),
                    },
                });
                acts.push(Action::VolumePhase {
                    volume: pv_name,
                    phase: "Failed",
                });
            }
            _ => {}
        }
        return acts;
    };
    let claims_volume = claim_volume_name(claim);
    if claims_volume == pv_name {
        set_phase(&mut acts, "Bound");
    } else if claims_volume.is_empty() {
        // Pre-bound (or provisioned) for this claim; the claim's sync binds it.
        if phase == "Pending" {
            set_phase(&mut acts, "Available");
        }
    } else if annotation(&pv.metadata, ANN_BOUND_BY_CONTROLLER).is_some() {
        // The claim bound another volume; this reference was ours, so take it back.
        acts.push(Action::UnbindVolume { volume: pv_name });
    } else {
        set_phase(&mut acts, "Available");
    }
    acts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    fn pvc(extra: Value) -> PersistentVolumeClaim {
        let mut v = json!({
            "metadata": {"name": "data", "namespace": "default", "uid": "u1",
                         "finalizers": [PVC_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Pending"}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pvc")
    }

    fn pv(name: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "finalizers": [PV_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "storageClassName": "manual", "hostPath": {"path": "/x"},
                     "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
            "status": {"phase": "Available"}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).expect("pv")
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": provisioner,
            "reclaimPolicy": "Delete", "volumeBindingMode": mode
        }))
        .expect("class")
    }

    fn reasons(acts: &[Action]) -> Vec<String> {
        acts.iter()
            .map(|a| match a {
                Action::ClaimEvent(n) => format!("event {}", n.reason),
                Action::VolumeEvent { note, .. } => format!("volume event {}", note.reason),
                Action::BindVolume {
                    volume,
                    bound_by_controller,
                } => {
                    format!("bind volume {volume} by-controller={bound_by_controller}")
                }
                Action::BindClaim {
                    volume,
                    bound_by_controller,
                } => {
                    format!("bind claim {volume} by-controller={bound_by_controller}")
                }
                Action::ClaimBound { volume } => format!("claim bound {volume}"),
                Action::ClaimPhase(p) => format!("claim phase {p}"),
                Action::VolumePhase { volume, phase } => format!("volume {volume} {phase}"),
                Action::CreateVolume(pv) => {
                    format!("create {}", pv.metadata.name.clone().unwrap_or_default())
                }
                Action::AnnotateClaimProvisioner(p) => format!("annotate {p}"),
                Action::AddClaimFinalizer => "add claim finalizer".into(),
                Action::RemoveClaimFinalizer => "remove claim finalizer".into(),
                Action::UnbindVolume { volume } => format!("unbind {volume}"),
                Action::DeleteVolume { volume, .. } => format!("delete {volume}"),
                Action::AddVolumeFinalizer { volume } => format!("add finalizer {volume}"),
                Action::RemoveVolumeFinalizer { volume } => format!("remove finalizer {volume}"),
            })
            .collect()
    }

    #[test]
    fn claim_syncs_follow_upstream() {
        let local = class("local-path", "WaitForFirstConsumer", LOCAL_PATH_PROVISIONER);
        let immediate = class("manual", "Immediate", "kubernetes.io/no-provisioner");
        let local_immediate = class("local-path", "Immediate", LOCAL_PATH_PROVISIONER);
        let static_pv = pv("static", json!({}));
        let big_pv = pv("big", json!({"spec": {"capacity": {"storage": "10Gi"}}}));
        let bound_pv = pv(
            "static",
            json!({"spec": {"claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}, "status": {"phase": "Bound"}}),
        );
        let provisioned = pv(
            "pvc-u1",
            json!({"spec": {"storageClassName": "local-path", "claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}, "status": {"phase": "Pending"}}),
        );
        struct Case<'a> {
            name: &'a str,
            claim: PersistentVolumeClaim,
            class: Option<&'a StorageClass>,
            volumes: Vec<&'a PersistentVolume>,
            in_use: bool,
            want: Vec<&'a str>,
        }
        let cases = vec![
            Case {
                name: "WFFC without a consumer waits",
                claim: pvc(json!({})),
                class: Some(&local),
                volumes: vec![],
                in_use: false,
                want: vec!["event WaitForFirstConsumer"],
            },
            Case {
                name: "new claim gets the protection finalizer",
                claim: pvc(json!({"metadata": {"finalizers": null}})),
                class: Some(&local),
                volumes: vec![],
                in_use: false,
                want: vec!["add claim finalizer", "event WaitForFirstConsumer"],
            },
            Case {
                name: "selected node: provision pvc-<uid>",
                claim: pvc(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "sim-1"}}})),
                class: Some(&local),
                volumes: vec![],
                in_use: false,
                want: vec![
                    "annotate rancher.io/local-path",
                    "event ExternalProvisioning",
                    "event Provisioning",
                    "create pvc-u1",
                    "event ProvisioningSucceeded",
                ],
            },
            Case {
                name: "provisioned volume pre-bound: bind it",
                claim: pvc(
                    json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "sim-1", ANN_STORAGE_PROVISIONER: LOCAL_PATH_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER: LOCAL_PATH_PROVISIONER}}}),
                ),
                class: Some(&local),
                volumes: vec![&provisioned],
                in_use: false,
                want: vec![
                    "volume pvc-u1 Bound",
                    "bind claim pvc-u1 by-controller=true",
                    "claim bound pvc-u1",
                ],
            },
            Case {
                name: "immediate: smallest static volume, all four steps",
                claim: pvc(json!({"spec": {"storageClassName": "manual"}})),
                class: Some(&immediate),
                volumes: vec![&big_pv, &static_pv],
                in_use: false,
                want: vec![
                    "bind volume static by-controller=true",
                    "volume static Bound",
                    "bind claim static by-controller=true",
                    "claim bound static",
                ],
            },
            Case {
                name: "class named but absent, static volume fits",
                claim: pvc(json!({"spec": {"storageClassName": "manual"}})),
                class: None,
                volumes: vec![&static_pv],
                in_use: false,
                want: vec![
                    "bind volume static by-controller=true",
                    "volume static Bound",
                    "bind claim static by-controller=true",
                    "claim bound static",
                ],
            },
            Case {
                name: "too big for every volume, class absent",
                claim: pvc(
                    json!({"spec": {"storageClassName": "manual", "resources": {"requests": {"storage": "100Gi"}}}}),
                ),
                class: None,
                volumes: vec![&static_pv, &big_pv],
                in_use: false,
                want: vec!["event ProvisioningFailed"],
            },
            Case {
                name: "no class at all",
                claim: pvc(json!({"spec": {"storageClassName": ""}})),
                class: None,
                volumes: vec![],
                in_use: false,
                want: vec!["event FailedBinding"],
            },
            Case {
                name: "external provisioner: wait for it",
                claim: pvc(json!({"spec": {"storageClassName": "manual"}})),
                class: Some(&immediate),
                volumes: vec![],
                in_use: false,
                want: vec![
                    "annotate kubernetes.io/no-provisioner",
                    "event ExternalProvisioning",
                ],
            },
            Case {
                name: "fully bound: nothing",
                claim: pvc(
                    json!({"metadata": {"annotations": {ANN_BIND_COMPLETED: "yes"}}, "spec": {"volumeName": "static", "storageClassName": "manual"}, "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
                ),
                class: None,
                volumes: vec![&bound_pv],
                in_use: false,
                want: vec![],
            },
            Case {
                name: "bound claim whose volume vanished is Lost",
                claim: pvc(json!({"spec": {"volumeName": "gone"}, "status": {"phase": "Bound"}})),
                class: None,
                volumes: vec![],
                in_use: false,
                want: vec!["claim phase Lost", "event ClaimLost"],
            },
            Case {
                name: "user pre-bound to a too small volume",
                claim: pvc(
                    json!({"spec": {"volumeName": "static", "storageClassName": "manual", "resources": {"requests": {"storage": "5Gi"}}}}),
                ),
                class: None,
                volumes: vec![&static_pv],
                in_use: false,
                want: vec!["event VolumeMismatch"],
            },
            Case {
                name: "deleting and in use: keep the finalizer",
                claim: pvc(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
                class: Some(&local),
                volumes: vec![],
                in_use: true,
                want: vec![],
            },
            Case {
                name: "deleting and unused: release it",
                claim: pvc(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
                class: Some(&local),
                volumes: vec![],
                in_use: false,
                want: vec!["remove claim finalizer"],
            },
            Case {
                name: "immediate local-path has no node",
                claim: pvc(json!({})),
                class: Some(&local_immediate),
                volumes: vec![],
                in_use: false,
                want: vec![
                    "annotate rancher.io/local-path",
                    "event ExternalProvisioning",
                    "event ProvisioningFailed",
                ],
            },
        ];
        for c in cases {
            let got = decide_claim(&ClaimView {
                claim: &c.claim,
                class: c.class,
                volumes: &c.volumes,
                in_use: c.in_use,
                storage_root: "/var/lib/skiff/storage",
            });
            assert_eq!(reasons(&got), c.want, "{}", c.name);
        }
    }

    #[test]
    fn provisioned_volume_is_local_path_shaped() {
        let local = class("local-path", "WaitForFirstConsumer", LOCAL_PATH_PROVISIONER);
        let claim = pvc(
            json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "sim-1"}}, "spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        );
        let acts = decide_claim(&ClaimView {
            claim: &claim,
            class: Some(&local),
            volumes: &[],
            in_use: false,
            storage_root: "/var/lib/skiff/storage/",
        });
        let pv = acts
            .iter()
            .find_map(|a| match a {
                Action::CreateVolume(pv) => Some(pv),
                _ => None,
            })
            .expect("a volume is created");
        let got = serde_json::to_value(pv.as_ref()).expect("json");
        assert_eq!(got["metadata"]["name"], "pvc-u1");
        assert_eq!(
            got["metadata"]["annotations"][ANN_PROVISIONED_BY],
            "rancher.io/local-path"
        );
        assert_eq!(
            got["spec"]["hostPath"]["path"],
            "/var/lib/skiff/storage/pvc-u1_default_data"
        );
        assert_eq!(got["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(got["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(got["spec"]["claimRef"]["uid"], "u1");
        assert_eq!(
            got["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
            json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["sim-1"]})
        );
    }

    #[test]
    fn volume_syncs_follow_upstream() {
        let claim = pvc(json!({"spec": {"volumeName": "v"}}));
        let other_uid = pvc(json!({"metadata": {"uid": "u2"}}));
        let unbound_claim = pvc(json!({}));
        let with_ref =
            json!({"spec": {"claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}});
        let cases: Vec<(
            &str,
            PersistentVolume,
            Option<&PersistentVolumeClaim>,
            Vec<&str>,
        )> = vec![
            (
                "new volume: finalizer and Available",
                pv(
                    "v",
                    json!({"metadata": {"finalizers": null}, "status": {"phase": "Pending"}}),
                ),
                None,
                vec!["add finalizer v", "volume v Available"],
            ),
            ("available stays", pv("v", json!({})), None, vec![]),
            (
                "bound claim: Bound",
                pv("v", with_ref.clone()),
                Some(&claim),
                vec!["volume v Bound"],
            ),
            (
                "claim deleted, Retain: Released",
                pv("v", with_ref.clone()),
                None,
                vec!["volume v Released"],
            ),
            (
                "claim recreated with another uid: Released",
                pv("v", with_ref.clone()),
                Some(&other_uid),
                vec!["volume v Released"],
            ),
            (
                "Released and Retain: stays",
                pv(
                    "v",
                    json!({"spec": {"claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}, "status": {"phase": "Released"}}),
                ),
                None,
                vec![],
            ),
            (
                "claim deleted, Delete policy",
                pv(
                    "v",
                    json!({"spec": {"persistentVolumeReclaimPolicy": "Delete", "claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}, "status": {"phase": "Bound"}}),
                ),
                None,
                vec!["volume v Released", "delete v"],
            ),
            (
                "provisioned, claim not bound yet: Available",
                pv(
                    "v",
                    json!({"spec": {"claimRef": {"name": "data", "namespace": "default", "uid": "u1"}}, "status": {"phase": "Pending"}}),
                ),
                Some(&unbound_claim),
                vec!["volume v Available"],
            ),
            (
                "deleting while Bound keeps the finalizer",
                pv(
                    "v",
                    json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Bound"}}),
                ),
                Some(&claim),
                vec![],
            ),
            (
                "deleting once Released loses it",
                pv(
                    "v",
                    json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Released"}}),
                ),
                None,
                vec!["remove finalizer v"],
            ),
        ];
        for (name, volume, claim, want) in cases {
            let got = decide_volume(&VolumeView {
                volume: &volume,
                claim,
            });
            assert_eq!(reasons(&got), want, "{name}");
        }
    }

    #[test]
    fn protection_counts_scheduled_unfinished_pods() {
        let pod = |extra: Value| -> Pod {
            let mut v = json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}],
                         "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
                "status": {"phase": "Running"}});
            merge(&mut v, extra);
            serde_json::from_value(v).expect("pod")
        };
        assert!(pod_uses_claim(&pod(json!({})), "data"));
        assert!(!pod_uses_claim(&pod(json!({})), "other"));
        assert!(!pod_uses_claim(
            &pod(json!({"spec": {"nodeName": null}})),
            "data"
        ));
        assert!(!pod_uses_claim(
            &pod(json!({"status": {"phase": "Succeeded"}})),
            "data"
        ));
        let eph = pod(
            json!({"spec": {"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}}),
        );
        assert!(pod_uses_claim(&eph, "p-scratch"));
    }
}
