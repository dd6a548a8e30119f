//! The pure half of the StatefulSet controller (upstream `stateful_set_control.go` and
//! `stateful_set_utils.go`): which pods and claims a set owns, the pod and claim it makes
//! for an ordinal, the one sync step (`plan`: create missing ordinals, replace failed
//! pods, scale down from the highest ordinal, roll pods with ordinal >= partition from the
//! highest down; OrderedReady waits for each step, Parallel does not), the claims'
//! ownerReferences for `persistentVolumeClaimRetentionPolicy`, and the status counts.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::replicaset::podutil;
pub use crate::revisions::CONTROLLER_REVISION_HASH;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The ordinal of a pod named `<set>-<n>` that belongs to `set` (upstream
/// `getParentNameAndOrdinal` + `isMemberOf`).
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.replicas.unwrap_or(1).max(0)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

/// Which pods the set controls, adopts and releases (upstream `ClaimPods` with the
/// `isMemberOf` filter): orphans that match the selector and are named `<set>-<n>` are
/// adopted unless being deleted; controlled pods that stop matching are released.
#[derive(Debug, Default)]
pub struct Claim<'a> {
    pub owned: Vec<&'a Pod>,
    pub adopt: Vec<&'a Pod>,
    pub release: Vec<&'a Pod>,
}

pub fn claim<'a>(set: &StatefulSet, pods: &[&'a Pod]) -> Claim<'a> {
    let mut out = Claim::default();
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    let deleting = set.metadata.deletion_timestamp.is_some();
    for pod in pods.iter().copied() {
        let matches = podutil::selector_matches(&set.spec.selector, pod.metadata.labels.as_ref());
        let member = ordinal_of(set_name(set), pod_name(pod)).is_some();
        match podutil::controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    out.owned.push(pod);
                } else if !deleting {
                    out.release.push(pod);
                }
            }
            Some(_) => {}
            None => {
                if matches && member && !deleting && pod.metadata.deletion_timestamp.is_none() {
                    out.adopt.push(pod);
                }
            }
        }
    }
    out
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &PersistentVolumeClaim, set: &StatefulSet, ordinal: i32) -> String {
    format!(
        "{}-{}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or_default(),
        set_name(set)
    )
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.volume_claim_templates.as_deref().unwrap_or(&[])
}

/// The pod for `ordinal` from `template` (the current or the update revision's), as
/// upstream `newVersionedStatefulSetPod`: name, identity labels, hostname/subdomain,
/// controller reference, and a volume per claim template pointing at its claim.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i32) -> Pod {
    let name = format!("{}-{ordinal}", set_name(set));
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![podutil::controller_ref(
        "apps/v1",
        "StatefulSet",
        &set.metadata,
    )]);
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name);
    spec.subdomain = set.spec.service_name.clone().filter(|s| !s.is_empty());
    // Claims' volumes first, then the template's others (upstream `updateStorage`).
    let mut volumes: Vec<Volume> = claim_templates(set)
        .iter()
        .map(|t| Volume {
            name: t.metadata.name.clone().unwrap_or_default(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(t, set, ordinal),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    for v in spec.volumes.take().unwrap_or_default() {
        if !volumes.iter().any(|c| c.name == v.name) {
            volumes.push(v);
        }
    }
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod.spec = Some(spec);
    pod
}

/// The claim for `template` and `ordinal`: the template with the set's selector labels
/// (upstream `getPersistentVolumeClaims`) and the owner the retention policy wants.
pub fn new_claim(
    set: &StatefulSet,
    template: &PersistentVolumeClaim,
    ordinal: i32,
) -> PersistentVolumeClaim {
    let mut claim = template.clone();
    claim.metadata = Default::default();
    claim.status = None;
    claim.metadata.name = Some(claim_name(template, set, ordinal));
    claim.metadata.namespace = set.metadata.namespace.clone();
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    for (k, v) in set.spec.selector.match_labels.iter().flatten() {
        labels.insert(k.clone(), v.clone());
    }
    claim.metadata.labels = (!labels.is_empty()).then_some(labels);
    claim.metadata.annotations = template.metadata.annotations.clone();
    let refs = wanted_claim_owners(set, None, ordinal, &[]);
    claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
    claim
}

fn policy(set: &StatefulSet) -> (bool, bool) {
    let p = set.spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// A claim's ownerReferences under the retention policy (upstream
/// `updateClaimOwnerRefForSetAndPod`): whenDeleted=Delete makes the set an owner;
/// whenScaled=Delete makes the pod the owner once its ordinal is out of range, so the
/// garbage collector removes the claim with the pod. References to others are kept.
pub fn wanted_claim_owners(
    set: &StatefulSet,
    pod: Option<&Pod>,
    ordinal: i32,
    existing: &[OwnerReference],
) -> Vec<OwnerReference> {
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let pod_uid = pod.and_then(|p| p.metadata.uid.clone()).unwrap_or_default();
    let (when_deleted, when_scaled) = policy(set);
    let start = start_ordinal(set);
    let scaled_down = ordinal < start || ordinal >= start + replicas(set);
    let mut refs: Vec<OwnerReference> = existing
        .iter()
        .filter(|r| r.uid != set_uid && (pod_uid.is_empty() || r.uid != pod_uid))
        .cloned()
        .collect();
    let set_owns = when_deleted && !(when_scaled && scaled_down);
    if set_owns && !set_uid.is_empty() {
        refs.push(owner_ref("apps/v1", "StatefulSet", set_name(set), &set_uid));
    }
    if when_scaled && scaled_down && !pod_uid.is_empty() {
        refs.push(owner_ref(
            "v1",
            "Pod",
            pod_name(pod.expect("uid came from the pod")),
            &pod_uid,
        ));
    }
    refs
}

/// Which revision a new pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    Current,
    Update,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteWhy {
    /// The pod Failed or Succeeded: replaced under the same name.
    Finished,
    /// Its ordinal is beyond the replica count.
    ScaleDown,
    /// It runs an old revision and its ordinal is >= partition.
    Update,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set a claim's ownerReferences (retention policy).
    ClaimOwners {
        claim: String,
        owners: Vec<OwnerReference>,
    },
    /// Create the missing claims of `ordinal` (template names).
    CreateClaims {
        ordinal: i32,
        templates: Vec<String>,
    },
    CreatePod {
        ordinal: i32,
        revision: Revision,
    },
    DeletePod {
        name: String,
        why: DeleteWhy,
    },
}

pub struct Observed<'a> {
    /// Pods the set controls.
    pub pods: &'a [&'a Pod],
    /// Claims of the namespace by name.
    pub claims: &'a HashMap<String, &'a PersistentVolumeClaim>,
    pub current_revision: &'a str,
    pub update_revision: &'a str,
    pub now: DateTime<Utc>,
}

fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_running_and_ready(p: &Pod) -> bool {
    phase(p) == Some("Running") && podutil::is_ready(p)
}

fn is_running_and_available(p: &Pod, min_ready: i32, now: DateTime<Utc>) -> bool {
    phase(p) == Some("Running") && podutil::is_available(p, min_ready, now)
}

fn is_healthy(p: &Pod) -> bool {
    is_running_and_ready(p) && !is_terminating(p)
}

pub fn pod_revision(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// The revision name a pod runs: `<set>-<hash>` (the hash label holds the hash only).
fn runs(set: &StatefulSet, p: &Pod, revision_name: &str) -> bool {
    pod_revision(p).is_some_and(|h| revision_name == format!("{}-{h}", set_name(set)))
}

fn partition(set: &StatefulSet) -> Option<i32> {
    let us = set.spec.update_strategy.as_ref()?;
    if us.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    Some(
        us.rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0),
    )
}

fn is_rolling_update(set: &StatefulSet) -> bool {
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// One sync's actions, in the order they are to be taken.
pub fn plan(set: &StatefulSet, o: &Observed) -> Vec<Action> {
    let mut out = Vec::new();
    let name = set_name(set);
    let start = start_ordinal(set);
    let count = replicas(set);
    let monotonic = set.spec.pod_management_policy.as_deref() != Some("Parallel");
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    let by_ordinal: BTreeMap<i32, &Pod> = o
        .pods
        .iter()
        .filter_map(|p| Some((ordinal_of(name, pod_name(p))?, *p)))
        .collect();
    let in_range = |ord: i32| ord >= start && ord < start + count;

    // Claims' owners follow the retention policy before anything is deleted.
    let (when_deleted, when_scaled) = policy(set);
    for (ord, pod) in &by_ordinal {
        for t in claim_templates(set) {
            let cname = claim_name(t, set, *ord);
            let Some(claim) = o.claims.get(&cname) else {
                continue;
            };
            let existing = claim.metadata.owner_references.clone().unwrap_or_default();
            let wanted = wanted_claim_owners(set, Some(pod), *ord, &existing);
            let touches_policy = when_deleted || when_scaled || wanted.len() != existing.len();
            if touches_policy && !same_refs(&wanted, &existing) {
                out.push(Action::ClaimOwners {
                    claim: cname,
                    owners: wanted,
                });
            }
        }
    }

    let missing_claims = |ord: i32| -> Vec<String> {
        claim_templates(set)
            .iter()
            .filter(|t| !o.claims.contains_key(&claim_name(t, set, ord)))
            .filter_map(|t| t.metadata.name.clone())
            .collect()
    };
    let new_revision = |ord: i32| match partition(set) {
        Some(p) if ord - start < p => Revision::Current,
        _ => Revision::Update,
    };

    // Ordinals in range, lowest first.
    for ord in start..start + count {
        let Some(pod) = by_ordinal.get(&ord) else {
            let templates = missing_claims(ord);
            if !templates.is_empty() {
                out.push(Action::CreateClaims {
                    ordinal: ord,
                    templates,
                });
            }
            out.push(Action::CreatePod {
                ordinal: ord,
                revision: new_revision(ord),
            });
            if monotonic {
                return out;
            }
            continue;
        };
        if matches!(phase(pod), Some("Failed") | Some("Succeeded")) {
            if !is_terminating(pod) {
                out.push(Action::DeletePod {
                    name: pod_name(pod).into(),
                    why: DeleteWhy::Finished,
                });
            }
            // The replacement comes once the old pod is gone (same name).
            if monotonic {
                return out;
            }
            continue;
        }
        if is_terminating(pod) {
            if monotonic {
                return out;
            }
            continue;
        }
        let templates = missing_claims(ord);
        if !templates.is_empty() {
            out.push(Action::CreateClaims {
                ordinal: ord,
                templates,
            });
        }
        if monotonic
            && (!is_running_and_ready(pod) || !is_running_and_available(pod, min_ready, o.now))
        {
            return out;
        }
    }

    // Condemned pods, highest ordinal first; in OrderedReady one at a time, and an
    // unhealthy one blocks unless it is the first unhealthy pod (upstream).
    let replicas_pods = by_ordinal
        .iter()
        .filter(|(k, _)| in_range(**k))
        .map(|(_, p)| *p);
    let mut condemned: Vec<&Pod> = by_ordinal
        .iter()
        .filter(|(k, _)| !in_range(**k))
        .map(|(_, p)| *p)
        .collect();
    condemned.reverse();
    let first_unhealthy = replicas_pods
        .chain(condemned.iter().copied())
        .find(|p| !is_healthy(p))
        .map(pod_name);
    for pod in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return out;
            }
            continue;
        }
        if monotonic && !is_running_and_ready(pod) && first_unhealthy != Some(pod_name(pod)) {
            return out;
        }
        out.push(Action::DeletePod {
            name: pod_name(pod).into(),
            why: DeleteWhy::ScaleDown,
        });
        if monotonic {
            return out;
        }
    }

    // RollingUpdate: the highest ordinal >= partition not at the update revision goes
    // first; each must be healthy again before the next.
    let Some(partition) = partition(set) else {
        return out;
    };
    for idx in (partition.max(0)..count).rev() {
        let Some(pod) = by_ordinal.get(&(start + idx)) else {
            return out;
        };
        if !runs(set, pod, o.update_revision) && !is_terminating(pod) {
            out.push(Action::DeletePod {
                name: pod_name(pod).into(),
                why: DeleteWhy::Update,
            });
            return out;
        }
        if !is_healthy(pod) {
            return out;
        }
    }
    out
}

fn same_refs(a: &[OwnerReference], b: &[OwnerReference]) -> bool {
    let key = |r: &OwnerReference| r.uid.clone();
    let mut a: Vec<String> = a.iter().map(key).collect();
    let mut b: Vec<String> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Status counts (upstream `computeReplicaStatus` + `completeRollingUpdate`).
pub fn status(set: &StatefulSet, o: &Observed) -> StatefulSetStatus {
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    let mut s = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        current_revision: Some(o.current_revision.into()),
        update_revision: Some(o.update_revision.into()),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in o.pods {
        s.replicas += 1;
        if is_running_and_ready(p) {
            ready += 1;
            if is_running_and_available(p, min_ready, o.now) {
                available += 1;
            }
        }
        if !is_terminating(p) {
            if runs(set, p, o.current_revision) {
                current += 1;
            }
            if runs(set, p, o.update_revision) {
                updated += 1;
            }
        }
    }
    if is_rolling_update(set) && updated == s.replicas && ready == s.replicas {
        current = updated;
        s.current_revision = Some(o.update_revision.into());
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(current);
    s.updated_replicas = Some(updated);
    s
}

/// When a Ready pod passes minReadySeconds (no watch event marks that moment).
pub fn next_availability(
    set: &StatefulSet,
    pods: &[&Pod],
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    pods.iter()
        .filter_map(|p| podutil::becomes_available_in(p, min_ready, now))
        .min()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
