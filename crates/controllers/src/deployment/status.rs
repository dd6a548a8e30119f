//! A Deployment's status and conditions, as upstream's `calculateStatus`,
//! `syncRolloutStatus` and `checkPausedConditions` (deployment/progress.go, sync.go):
//! Available (MinimumReplicasAvailable / MinimumReplicasUnavailable) and Progressing
//! (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable,
//! ProgressDeadlineExceeded, DeploymentPaused, DeploymentResumed, ReplicaSetCreateError),
//! with upstream's messages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};

use super::rolling::{available, deployment_replicas, max_unavailable, spec_replicas};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(crate::replicaset::podutil::to_time(now)),
        last_transition_time: Some(crate::replicaset::podutil::to_time(now)),
    }
}

pub fn get<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// Upstream `SetDeploymentCondition`: same status and reason is no change; same status
/// keeps the transition time.
pub fn set(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conds) = status.conditions.as_mut() {
        conds.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    // Upstream treats MaxInt32 as "no deadline"; unset defaults to 600 at the API.
    d.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// Upstream `calculateStatus`.
pub fn calculate(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: DateTime<Utc>,
) -> DeploymentStatus {
    let available_total: i32 = all.iter().map(|rs| available(rs)).sum();
    let total_spec: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let mut status = d.status.clone().unwrap_or_default();
    status.observed_generation = d.metadata.generation;
    status.replicas = Some(
        all.iter()
            .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
            .sum(),
    );
    status.updated_replicas =
        Some(new.map_or(0, |rs| rs.status.as_ref().map_or(0, |s| s.replicas)));
    status.ready_replicas = Some(
        all.iter()
            .map(|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
            })
            .sum(),
    );
    status.available_replicas = Some(available_total);
    status.unavailable_replicas = Some((total_spec - available_total).max(0));
    if available_total >= deployment_replicas(d) - max_unavailable(d) {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "True",
                MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Upstream `DeploymentComplete`.
pub fn complete(d: &Deployment, s: Option<&DeploymentStatus>) -> bool {
    let Some(s) = s else { return false };
    let replicas = deployment_replicas(d);
    n(s.updated_replicas) == replicas
        && n(s.replicas) == replicas
        && n(s.available_replicas) == replicas
        && s.observed_generation >= d.metadata.generation
}

/// Upstream `DeploymentProgressing`: more updated, ready or available replicas, or fewer old ones.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
        || new_old < old_old
}

/// Upstream `DeploymentTimedOut`.
fn timed_out(d: &Deployment, new: &DeploymentStatus, now: DateTime<Utc>) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = get(Some(new), PROGRESSING) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => cond.last_update_time.as_ref().is_some_and(|t| {
            crate::replicaset::podutil::to_chrono(t) + chrono::Duration::seconds(deadline as i64)
                < now
        }),
    }
}

fn rs_name(rs: Option<&ReplicaSet>) -> Option<String> {
    rs.and_then(|r| r.metadata.name.clone())
}

/// Upstream `syncRolloutStatus` (the status to write; conditions included).
pub fn rollout(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    olds: &[&ReplicaSet],
    d: &Deployment,
    now: DateTime<Utc>,
) -> DeploymentStatus {
    let mut s = calculate(all, new, d, now);
    if progress_deadline(d).is_none() {
        remove(&mut s, PROGRESSING);
    }
    let current = get(d.status.as_ref(), PROGRESSING);
    let already_complete = n(s.replicas) == n(s.updated_replicas)
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    let name = rs_name(new);
    let dname = d.metadata.name.clone().unwrap_or_default();
    if progress_deadline(d).is_some() && !already_complete {
        if complete(d, Some(&s)) {
            let msg = match &name {
                Some(rs) => format!("ReplicaSet \"{rs}\" has successfully progressed."),
                None => format!("Deployment \"{dname}\" has successfully progressed."),
            };
            set(
                &mut s,
                condition(PROGRESSING, "True", NEW_RS_AVAILABLE, msg, now),
            );
        } else if progressing(d, &s) {
            let msg = match &name {
                Some(rs) => format!("ReplicaSet \"{rs}\" is progressing."),
                None => format!("Deployment \"{dname}\" is progressing."),
            };
            let mut cond = condition(PROGRESSING, "True", RS_UPDATED, msg, now);
            // Progress renews lastUpdateTime (the deadline counts from it), keeping the
            // transition time while the status stays True.
            if let Some(cur) = current.filter(|c| c.status.as_deref() == Some("True")) {
                cond.last_transition_time = cur.last_transition_time.clone();
            }
            remove(&mut s, PROGRESSING);
            set(&mut s, cond);
        } else if timed_out(d, &s, now) {
            let msg = match &name {
                Some(rs) => format!("ReplicaSet \"{rs}\" has timed out progressing."),
                None => format!("Deployment \"{dname}\" has timed out progressing."),
            };
            set(&mut s, condition(PROGRESSING, "False", TIMED_OUT, msg, now));
        }
    }
    // Surface the ReplicaSets' ReplicaFailure (new set first), as upstream getReplicaFailures.
    let failure = new.into_iter().chain(olds.iter().copied()).find_map(|rs| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_.as_deref() == Some(REPLICA_FAILURE))
            .cloned()
    });
    match failure {
        Some(f) => set(
            &mut s,
            DeploymentCondition {
                type_: Some(REPLICA_FAILURE.into()),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove(&mut s, REPLICA_FAILURE),
    }
    s
}

/// Upstream `requeueStuckDeployment`: when to look again so the deadline is noticed.
pub fn recheck_after(
    d: &Deployment,
    new: &DeploymentStatus,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let cur = get(d.status.as_ref(), PROGRESSING)?;
    if complete(d, Some(new)) || cur.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let since = crate::replicaset::podutil::to_chrono(cur.last_update_time.as_ref()?);
    let after = since + chrono::Duration::seconds(deadline as i64) - now;
    let after = after.to_std().unwrap_or_default();
    Some(if after < Duration::from_secs(1) {
        Duration::from_millis(500)
    } else {
        after + Duration::from_secs(1)
    })
}

/// Upstream `checkPausedConditions`: the status to write when paused/resumed, if any.
pub fn paused_transition(d: &Deployment, now: DateTime<Utc>) -> Option<DeploymentStatus> {
    progress_deadline(d)?;
    let cur = get(d.status.as_ref(), PROGRESSING);
    if cur.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
        return None;
    }
    let paused_cond = cur.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
    let paused = d.spec.paused.unwrap_or(false);
    let mut s = d.status.clone().unwrap_or_default();
    if paused && !paused_cond {
        set(
            &mut s,
            condition(
                PROGRESSING,
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                now,
            ),
        );
    } else if !paused && paused_cond {
        set(
            &mut s,
            condition(
                PROGRESSING,
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                now,
            ),
        );
    } else {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Progressing condition as (status, reason, message).
    fn progressing_condition(s: &DeploymentStatus) -> (&str, Option<&str>, Option<&str>) {
        let p = get(Some(s), PROGRESSING).expect("a Progressing condition");
        (
            p.status.as_deref().unwrap_or_default(),
            p.reason.as_deref(),
            p.message.as_deref(),
        )
    }
    use crate::deployment::rolling::tests::{deploy, rs};

    fn with_deadline(mut d: Deployment, secs: i32) -> Deployment {
        d.metadata.name = Some("web".into());
        d.spec.progress_deadline_seconds = Some(secs);
        d
    }

    #[test]
    fn conditions_through_a_rollout() {
        let now = Utc::now();
        let mut d = with_deadline(deploy(3, "1", "0"), 600);
        d.status = Some(DeploymentStatus::default());
        set(
            d.status.as_mut().unwrap(),
            condition(
                PROGRESSING,
                "True",
                NEW_RS_CREATED,
                "Created new replica set \"web-1\"".into(),
                now,
            ),
        );

        // One new replica appears: progressing.
        let old = rs("web-0", 100, 3, 3, None);
        let new = rs("web-1", 0, 1, 0, None);
        let s = rollout(&[&old, &new], Some(&new), &[&old], &d, now);
        assert_eq!(
            progressing_condition(&s),
            (
                "True",
                Some(RS_UPDATED),
                Some("ReplicaSet \"web-1\" is progressing.")
            )
        );
        let a = get(Some(&s), AVAILABLE).unwrap();
        assert_eq!(
            (a.status.as_deref().unwrap_or_default(), a.reason.as_deref()),
            ("True", Some(MIN_AVAILABLE))
        );
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(4), Some(1), Some(3), Some(1))
        );

        // Nothing moves for longer than the deadline: timed out.
        d.status = Some(s.clone());
        let later = now + chrono::Duration::seconds(601);
        let s = rollout(&[&old, &new], Some(&new), &[&old], &d, later);
        assert_eq!(
            progressing_condition(&s),
            (
                "False",
                Some(TIMED_OUT),
                Some("ReplicaSet \"web-1\" has timed out progressing.")
            )
        );

        // Everything updated and available: complete.
        let old = rs("web-0", 100, 0, 0, None);
        let new = rs("web-1", 0, 3, 3, None);
        let s = rollout(&[&old, &new], Some(&new), &[&old], &d, later);
        assert_eq!(
            progressing_condition(&s),
            (
                "True",
                Some(NEW_RS_AVAILABLE),
                Some("ReplicaSet \"web-1\" has successfully progressed.")
            )
        );
    }

    #[test]
    fn availability_uses_max_unavailable() {
        let now = Utc::now();
        let d = with_deadline(deploy(4, "25%", "25%"), 600);
        let cases = [(3, "True", MIN_AVAILABLE), (2, "False", MIN_UNAVAILABLE)];
        for (avail, want, reason) in cases {
            let r = rs("web-1", 0, 4, avail, None);
            let s = calculate(&[&r], Some(&r), &d, now);
            let a = get(Some(&s), AVAILABLE).unwrap();
            assert_eq!(
                (a.status.as_deref().unwrap_or_default(), a.reason.as_deref()),
                (want, Some(reason)),
                "{avail} available"
            );
        }
    }

    #[test]
    fn pause_and_resume_conditions() {
        let now = Utc::now();
        let mut d = with_deadline(deploy(1, "1", "0"), 600);
        d.spec.paused = Some(true);
        let s = paused_transition(&d, now).unwrap();
        let p = get(Some(&s), PROGRESSING).unwrap();
        assert_eq!(
            (
                p.status.as_deref().unwrap_or_default(),
                p.reason.as_deref(),
                p.message.as_deref()
            ),
            ("Unknown", Some(PAUSED), Some("Deployment is paused"))
        );
        d.status = Some(s);
        assert!(paused_transition(&d, now).is_none(), "already recorded");
        d.spec.paused = Some(false);
        let s = paused_transition(&d, now).unwrap();
        assert_eq!(
            get(Some(&s), PROGRESSING).unwrap().reason.as_deref(),
            Some(RESUMED)
        );
    }
}
