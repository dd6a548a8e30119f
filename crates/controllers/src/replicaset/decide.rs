//! The ReplicaSet controller's decisions, without I/O: which pods it owns, adopts and
//! releases (upstream's `ControllerRefManager.ClaimPods`), how many pods to create or
//! which to delete (`manageReplicas`), the slow-start batches, and the status it reports
//! (`calculateStatus`).

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::podutil;
use super::ranking;

/// Upstream's `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;
/// Upstream's `SlowStartInitialBatchSize`.
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// How the ReplicaSet relates to the pods in its namespace.
#[derive(Debug, Default)]
pub struct Claim<'a> {
    /// Active pods it controls and whose labels match (what it counts).
    pub owned: Vec<&'a Pod>,
    /// Active orphans that match: adopt them (then they count).
    pub adopt: Vec<&'a Pod>,
    /// Pods it controls whose labels no longer match: drop its ownerReference.
    pub release: Vec<&'a Pod>,
}

/// Upstream `ClaimObject` for every active pod of the namespace.
pub fn claim<'a>(rs: &ReplicaSet, pods: &[&'a Pod]) -> Claim<'a> {
    let mut claim = Claim::default();
    let spec = &rs.spec;
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let rs_deleting = rs.metadata.deletion_timestamp.is_some();
    for pod in pods.iter().copied().filter(|p| podutil::is_active(p)) {
        let matches = podutil::selector_matches(&spec.selector, pod.metadata.labels.as_ref());
        match podutil::controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    claim.owned.push(pod);
                } else if !rs_deleting {
                    claim.release.push(pod);
                }
            }
            Some(_) => {}
            None => {
                if matches && !rs_deleting {
                    claim.adopt.push(pod);
                }
            }
        }
    }
    claim
}

/// What `manageReplicas` does this round.
#[derive(Debug, PartialEq, Eq)]
pub enum Manage {
    Nothing,
    Create(usize),
    /// Names of the pods to delete, most expendable first.
    Delete(Vec<String>),
}

pub fn manage(rs: &ReplicaSet, active: &[&Pod], related: &[&Pod], now: DateTime<Utc>) -> Manage {
    let want = desired_replicas(rs) as i64;
    let diff = active.len() as i64 - want;
    if diff < 0 {
        Manage::Create(((-diff) as usize).min(BURST_REPLICAS))
    } else if diff > 0 {
        let n = (diff as usize).min(BURST_REPLICAS);
        Manage::Delete(
            ranking::pods_to_delete(active, related, n, now)
                .into_iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect(),
        )
    } else {
        Manage::Nothing
    }
}

pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1).max(0)
}

/// Upstream `slowStartBatch` sizes: 1, 2, 4, ... until `count` is covered.
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = remaining.min(SLOW_START_INITIAL_BATCH);
    while size > 0 {
        batches.push(size);
        remaining -= size;
        size = (2 * size).min(remaining);
    }
    batches
}

/// Why the last `manageReplicas` failed, for the ReplicaFailure condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageFailure {
    /// "FailedCreate" or "FailedDelete".
    pub reason: String,
    pub message: String,
}

/// Upstream `calculateStatus` (observedGeneration is set when the status is written).
pub fn status(
    rs: &ReplicaSet,
    active: &[&Pod],
    failure: Option<&ManageFailure>,
    now: DateTime<Utc>,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let spec = Some(&rs.spec);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let fully_labeled = active
        .iter()
        .filter(|p| podutil::labels_superset(template_labels, p.metadata.labels.as_ref()))
        .count();
    let ready = active.iter().filter(|p| podutil::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| podutil::is_available(p, min_ready, now))
        .count();

    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match failure {
        Some(f) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some(f.reason.clone()),
            message: Some(f.message.clone()),
            last_transition_time: Some(crate::replicaset::podutil::to_time(now)),
        }),
        None if has_failure => conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure")),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = active.len() as i32;
    status.fully_labeled_replicas = Some(fully_labeled as i32);
    status.ready_replicas = Some(ready as i32);
    status.available_replicas = Some(available as i32);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicaset::ranking::tests::pod;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]
        .into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("rs-uid".into()),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: None,
                }),
            },
            status: None,
        }
    }

    fn labelled(mut p: Pod, labels: &[(&str, &str)], owner: Option<&str>) -> Pod {
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                kind: "ReplicaSet".into(),
                ..Default::default()
            }]
        });
        p
    }

    #[test]
    fn claim_adopts_matching_orphans_and_releases_relabelled_pods() {
        let base = |n: &str| pod(n, "n1", "Running", None, 0, 10);
        let pods = vec![
            labelled(base("mine"), &[("app", "web")], Some("rs-uid")),
            labelled(base("relabelled"), &[("app", "debug")], Some("rs-uid")),
            labelled(base("orphan"), &[("app", "web")], None),
            labelled(base("orphan-other"), &[("app", "db")], None),
            labelled(base("someone-elses"), &[("app", "web")], Some("other-uid")),
            {
                let mut p = labelled(base("finished"), &[("app", "web")], None);
                p.status.as_mut().unwrap().phase = Some("Succeeded".into());
                p
            },
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let c = claim(&rs(3, 0), &refs);
        let names = |v: &[&Pod]| {
            v.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&c.owned), ["mine"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["relabelled"]);
    }

    #[test]
    fn manage_creates_the_shortfall_and_deletes_the_excess() {
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("p{i}"), "n1", "Running", None, 0, 10 + i))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let now = Utc::now();
        // (desired, pods present, expected)
        let cases = vec![
            (4, 4, Manage::Nothing),
            (6, 4, Manage::Create(2)),
            (0, 0, Manage::Nothing),
            (2000, 0, Manage::Create(BURST_REPLICAS)),
            (3, 4, Manage::Delete(vec!["p0".into()])),
        ];
        for (desired, present, want) in cases {
            assert_eq!(
                manage(&rs(desired, 0), &refs[..present], &[], now),
                want,
                "desired {desired}, present {present}"
            );
        }
    }

    #[test]
    fn slow_start_doubles_batches() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), [1, 2, 4, 8]);
    }

    #[test]
    fn status_counts_labelled_ready_and_available_pods() {
        let now = Utc::now();
        let pods = vec![
            labelled(
                pod("a", "n1", "Running", Some(100), 0, 200),
                &[("app", "web"), ("tier", "front")],
                None,
            ),
            labelled(
                pod("b", "n1", "Running", Some(2), 0, 200),
                &[("app", "web"), ("tier", "front")],
                None,
            ),
            labelled(
                pod("c", "n1", "Pending", None, 0, 200),
                &[("app", "web")],
                None,
            ),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let s = status(&rs(3, 10), &refs, None, now);
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas
            ),
            (3, Some(2), Some(2), Some(1))
        );

        let failure = ManageFailure {
            reason: "FailedCreate".into(),
            message: "quota".into(),
        };
        let s = status(&rs(5, 0), &refs, Some(&failure), now);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                c.type_.as_deref().unwrap_or_default(),
                c.reason.as_deref(),
                c.message.as_deref()
            ),
            ("ReplicaFailure", Some("FailedCreate"), Some("quota"))
        );
        let mut healed = rs(5, 0);
        healed.status = Some(s);
        assert!(
            status(&healed, &refs, None, now).conditions.is_none(),
            "cleared once creation works"
        );
    }
}
