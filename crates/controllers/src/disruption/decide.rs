//! The pure part of the disruption controller: from a PodDisruptionBudget, the pods its
//! selector matches and the scale of their controllers, compute the budget's status as
//! upstream's `pkg/controller/disruption` does (expectedPods, currentHealthy,
//! desiredHealthy, disruptionsAllowed, disruptedPods clean-up, the DisruptionAllowed
//! condition).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::replicaset::podutil::{controller_of, is_ready, to_chrono, to_time};

/// How long an eviction recorded in `status.disruptedPods` is trusted before the pod
/// must be gone (upstream `DeletionTimeout`, 2 minutes).
pub const DELETION_TIMEOUT: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

pub const CONDITION_DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const REASON_SUFFICIENT_PODS: &str = "SufficientPods";
pub const REASON_INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const REASON_SYNC_FAILED: &str = "SyncFailed";

/// Why the scale of the pods' controllers could not be found; upstream records these as
/// Warning events on the budget (reasons NoControllerRef / NoControllers) and fails safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleError {
    pub reason: &'static str,
    pub message: String,
}

/// The sum of the desired replicas of the controllers owning `pods` (upstream
/// `getExpectedScale`). `scale_of` looks up a controller reference (in the pods'
/// namespace) and answers the UID and replicas of the controller whose scale counts (a
/// ReplicaSet owned by a Deployment answers with the Deployment's), or None when no
/// supported controller is found.
pub fn expected_scale(
    pods: &[&Pod],
    scale_of: &dyn Fn(&OwnerReference) -> Option<(String, i32)>,
) -> Result<i32, ScaleError> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let Some(owner) = controller_of(&pod.metadata) else {
            return Err(ScaleError {
                reason: "NoControllerRef",
                message: format!("found no controller ref for pod \"{name}\""),
            });
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        let Some((uid, replicas)) = scale_of(owner) else {
            return Err(ScaleError {
                reason: "NoControllers",
                message: format!("found no controllers for pod \"{name}\""),
            });
        };
        scales.insert(owner.uid.clone(), 0);
        scales.insert(uid, replicas);
    }
    Ok(scales.values().sum())
}

/// An int-or-percent scaled against `total`, rounding up (upstream
/// `GetScaledValueFromIntOrPercent(v, total, true)`).
pub fn scaled_up(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((pct * total as i64) as f64 / 100.0).ceil() as i32)
        }
    }
}

fn is_percent(v: &IntOrString) -> bool {
    matches!(v, IntOrString::String(_))
}

/// Whether computing `pdb`'s expected count needs the controllers' scale (a percentage
/// minAvailable or any maxUnavailable); an integer minAvailable counts the pods instead.
pub fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.and_then(|s| s.max_unavailable.as_ref()).is_some()
        || spec
            .and_then(|s| s.min_available.as_ref())
            .is_some_and(is_percent)
}

/// (expectedCount, desiredHealthy) as upstream `getExpectedPodCount`. `scale` is the
/// result of [`expected_scale`], consulted only when [`needs_scale`].
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pod_count: usize,
    scale: &dyn Fn() -> Result<i32, ScaleError>,
) -> Result<(i32, i32), ScaleError> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let bad = |message: String| ScaleError {
        reason: "CalculateExpectedPodCountFailed",
        message,
    };
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = scale()?;
        let max = scaled_up(max_unavailable, expected).map_err(bad)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(i)) => Ok((pod_count as i32, *i)),
        Some(v @ IntOrString::String(_)) => {
            let expected = scale()?;
            Ok((expected, scaled_up(v, expected).map_err(bad)?))
        }
        // Validation requires one of the two; treat a budget without either as
        // "minAvailable 0" rather than blocking evictions it never asked to block.
        None => Ok((pod_count as i32, 0)),
    }
}

/// Entries of `status.disruptedPods` still worth keeping: the pod still exists, is not
/// yet being deleted, and the eviction is younger than [`DELETION_TIMEOUT`]. Also
/// returns when the oldest kept entry expires (the controller looks again then) and the
/// names of expired entries (upstream warns about them).
pub fn live_disrupted(
    recorded: &BTreeMap<String, Time>,
    pods: &[&Pod],
    now: DateTime<Utc>,
) -> (BTreeMap<String, Time>, Option<DateTime<Utc>>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut recheck: Option<DateTime<Utc>> = None;
    let mut expired = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let deadline = to_chrono(at) + DELETION_TIMEOUT;
        if deadline < now {
            expired.push(name);
        } else {
            recheck = Some(recheck.map_or(deadline, |r| r.min(deadline)));
            kept.insert(name, at.clone());
        }
    }
    (kept, recheck, expired)
}

/// Ready pods not being deleted and not already counted as disrupted (upstream
/// `countHealthyPods`).
pub fn count_healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| is_ready(p))
        .count() as i32
}

/// Set the DisruptionAllowed condition, keeping lastTransitionTime when the status does
/// not change (upstream `apimeta.SetStatusCondition`).
fn set_condition(
    conditions: &mut Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: i64,
    now: DateTime<Utc>,
) {
    let old = conditions
        .iter()
        .find(|c| c.type_ == CONDITION_DISRUPTION_ALLOWED)
        .cloned();
    let last_transition_time = match &old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => to_time(now),
    };
    conditions.retain(|c| c.type_ != CONDITION_DISRUPTION_ALLOWED);
    conditions.push(Condition {
        type_: CONDITION_DISRUPTION_ALLOWED.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: Some(generation),
        last_transition_time,
    });
}

/// The status the budget should have, and when to look again (a disrupted pod's entry
/// expiring). `scale` is consulted only when the budget needs the controllers' scale.
pub fn desired_status(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    scale: &dyn Fn() -> Result<i32, ScaleError>,
    now: DateTime<Utc>,
) -> (
    PodDisruptionBudgetStatus,
    Option<DateTime<Utc>>,
    Result<(), ScaleError>,
) {
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation.unwrap_or(0);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    match expected_and_desired(pdb, pods.len(), scale) {
        Err(e) => {
            // Fail safe (upstream `failSafe`): no disruptions while the budget cannot be
            // computed; the rest of the status is left as it was.
            set_condition(
                &mut conditions,
                "False",
                REASON_SYNC_FAILED,
                &e.message,
                generation,
                now,
            );
            let status = PodDisruptionBudgetStatus {
                disruptions_allowed: Some(0),
                observed_generation: Some(generation),
                conditions: Some(conditions),
                ..old
            };
            (status, None, Err(e))
        }
        Ok((expected, desired)) => {
            let recorded = old.disrupted_pods.clone().unwrap_or_default();
            let (disrupted, recheck, _expired) = live_disrupted(&recorded, pods, now);
            let healthy = count_healthy(pods, &disrupted);
            let mut allowed = healthy - desired;
            if expected <= 0 || allowed <= 0 {
                allowed = 0;
            }
            if allowed > 0 {
                set_condition(
                    &mut conditions,
                    "True",
                    REASON_SUFFICIENT_PODS,
                    "",
                    generation,
                    now,
                );
            } else {
                set_condition(
                    &mut conditions,
                    "False",
                    REASON_INSUFFICIENT_PODS,
                    "",
                    generation,
                    now,
                );
            }
            let status = PodDisruptionBudgetStatus {
                current_healthy: Some(healthy),
                desired_healthy: Some(desired),
                expected_pods: Some(expected),
                disruptions_allowed: Some(allowed),
                observed_generation: Some(generation),
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                conditions: Some(conditions),
            };
            (status, recheck, Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, ready: bool, deleting: bool, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then(|| to_time(Utc::now())),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: format!("rs-{uid}"),
                        uid: uid.into(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]
                }),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("budget".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn int(i: i32) -> Option<IntOrString> {
        Some(IntOrString::Int(i))
    }
    fn pct(s: &str) -> Option<IntOrString> {
        Some(IntOrString::String(s.into()))
    }

    #[test]
    fn status_table() {
        // (case, minAvailable, maxUnavailable, pods (ready, deleting), controller scale,
        //  expected, desired, healthy, allowed, reason)
        let cases: Vec<(
            &str,
            Option<IntOrString>,
            Option<IntOrString>,
            Vec<(bool, bool)>,
            i32,
            i32,
            i32,
            i32,
            i32,
            &str,
        )> = vec![
            (
                "minAvailable 2 of 3 ready",
                int(2),
                None,
                vec![(true, false); 3],
                3,
                3,
                2,
                3,
                1,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "minAvailable 3 of 3 ready",
                int(3),
                None,
                vec![(true, false); 3],
                3,
                3,
                3,
                3,
                0,
                REASON_INSUFFICIENT_PODS,
            ),
            (
                "int minAvailable counts pods not scale",
                int(1),
                None,
                vec![(true, false); 2],
                5,
                2,
                1,
                2,
                1,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "unready and deleting are not healthy",
                int(1),
                None,
                vec![(true, false), (false, false), (true, true)],
                3,
                3,
                1,
                1,
                0,
                REASON_INSUFFICIENT_PODS,
            ),
            (
                "minAvailable 50% of scale 3 rounds up",
                pct("50%"),
                None,
                vec![(true, false); 3],
                3,
                3,
                2,
                3,
                1,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "maxUnavailable 1 of 3",
                None,
                int(1),
                vec![(true, false); 3],
                3,
                3,
                2,
                3,
                1,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "maxUnavailable 1 with one down",
                None,
                int(1),
                vec![(true, false), (true, false), (false, false)],
                3,
                3,
                2,
                2,
                0,
                REASON_INSUFFICIENT_PODS,
            ),
            (
                "maxUnavailable 34% of 3 rounds up to 2",
                None,
                pct("34%"),
                vec![(true, false); 3],
                3,
                3,
                1,
                3,
                2,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "maxUnavailable above scale floors desired at 0",
                None,
                int(5),
                vec![(true, false); 2],
                2,
                2,
                0,
                2,
                2,
                REASON_SUFFICIENT_PODS,
            ),
            (
                "no pods: nothing allowed",
                int(0),
                None,
                vec![],
                0,
                0,
                0,
                0,
                0,
                REASON_INSUFFICIENT_PODS,
            ),
        ];
        for (case, min, max, pods, scale, expected, desired, healthy, allowed, reason) in cases {
            let budget = pdb(min, max);
            let owned: Vec<Pod> = pods
                .iter()
                .enumerate()
                .map(|(i, (r, d))| pod(&format!("p{i}"), *r, *d, Some("rs1")))
                .collect();
            let refs: Vec<&Pod> = owned.iter().collect();
            let (status, _, res) = desired_status(&budget, &refs, &|| Ok(scale), Utc::now());
            assert!(res.is_ok(), "{case}");
            assert_eq!(status.expected_pods, Some(expected), "{case}: expectedPods");
            assert_eq!(
                status.desired_healthy,
                Some(desired),
                "{case}: desiredHealthy"
            );
            assert_eq!(
                status.current_healthy,
                Some(healthy),
                "{case}: currentHealthy"
            );
            assert_eq!(
                status.disruptions_allowed,
                Some(allowed),
                "{case}: disruptionsAllowed"
            );
            assert_eq!(status.observed_generation, Some(3), "{case}");
            let cond = &status.conditions.unwrap()[0];
            assert_eq!(cond.reason, reason, "{case}");
            assert_eq!(
                cond.status,
                if allowed > 0 { "True" } else { "False" },
                "{case}"
            );
        }
    }

    #[test]
    fn scale_failure_fails_safe() {
        let mut budget = pdb(None, int(1));
        budget.status = Some(PodDisruptionBudgetStatus {
            disruptions_allowed: Some(4),
            ..Default::default()
        });
        let p = pod("orphan", true, false, None);
        let refs = vec![&p];
        let scale = || expected_scale(&refs, &|_| None);
        let (status, _, res) = desired_status(&budget, &refs, &scale, Utc::now());
        let err = res.unwrap_err();
        assert_eq!(err.reason, "NoControllerRef");
        assert_eq!(err.message, "found no controller ref for pod \"orphan\"");
        assert_eq!(status.disruptions_allowed, Some(0));
        let cond = &status.conditions.unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", REASON_SYNC_FAILED)
        );
    }

    #[test]
    fn expected_scale_sums_distinct_controllers() {
        let pods = [
            pod("a", true, false, Some("rs1")),
            pod("b", true, false, Some("rs1")),
            pod("c", true, false, Some("rs2")),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let lookup = |r: &OwnerReference| match r.uid.as_str() {
            "rs1" => Some(("deploy1".to_string(), 3)),
            "rs2" => Some(("rs2".to_string(), 2)),
            _ => None,
        };
        assert_eq!(expected_scale(&refs, &lookup), Ok(5));
        let missing = |_: &OwnerReference| None;
        assert_eq!(
            expected_scale(&refs, &missing).unwrap_err().reason,
            "NoControllers"
        );
    }

    #[test]
    fn disrupted_pods_are_kept_until_deleted_or_expired() {
        let now = Utc::now();
        let pods = [
            pod("fresh", true, false, Some("rs1")),
            pod("old", true, false, Some("rs1")),
            pod("going", true, true, Some("rs1")),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let recorded: BTreeMap<String, Time> = [
            (
                "fresh".to_string(),
                to_time(now - chrono::TimeDelta::seconds(10)),
            ),
            (
                "old".to_string(),
                to_time(now - chrono::TimeDelta::minutes(3)),
            ),
            ("going".to_string(), to_time(now)),
            ("vanished".to_string(), to_time(now)),
        ]
        .into_iter()
        .collect();
        let (kept, recheck, expired) = live_disrupted(&recorded, &refs, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec!["fresh"]);
        assert_eq!(expired, vec!["old".to_string()]);
        assert!(recheck.is_some());
        // The fresh disrupted pod is not counted as healthy although it is Ready.
        assert_eq!(count_healthy(&refs, &kept), 1);
    }
}
