//! The CronJob controller's deciding half (upstream `cronjob-controller`, v2): from a
//! CronJob, the Jobs it owns, the parsed schedule and zone, and the time, decide which
//! Job to create, which to delete (Replace policy, history limits), the new status, the
//! events and when to look again. No I/O.

use std::time::Duration;

use api::cron::{Schedule, Zone};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

/// Annotation on each Job with the time it was scheduled for, in the CronJob's zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream gives up listing missed runs past this many and says so in an event.
const TOO_MANY_MISSED: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Jobs to delete (background propagation), each with the event to record.
    pub delete: Vec<String>,
    pub create: Option<Job>,
    /// The status to write (before creating, `active` and `lastScheduleTime` include
    /// the new Job only once it exists; the act step adds it).
    pub status: Option<CronJobStatus>,
    pub events: Vec<CronEvent>,
    pub requeue_after: Option<Duration>,
}

fn secs(t: &Time) -> i64 {
    t.0.as_second()
}

fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn event(warning: bool, reason: &str, message: String) -> CronEvent {
    CronEvent {
        warning,
        reason: reason.into(),
        message,
    }
}

/// Upstream's `mostRecentScheduleTime`: the latest run time at or before `now` that has
/// not been handled, and how many were missed since the last handled one.
pub fn most_recent_schedule(
    earliest: i64,
    now: i64,
    schedule: &Schedule,
    zone: &Zone,
) -> (Option<i64>, i64) {
    let Some(t1) = schedule.next_after(earliest, zone) else {
        return (None, 0);
    };
    if now < t1 {
        return (None, 0);
    }
    let Some(t2) = schedule.next_after(t1, zone) else {
        return (Some(t1), 1);
    };
    if now < t2 {
        return (Some(t1), 1);
    }
    // Many missed: estimate from the interval, then walk to the exact latest one.
    let interval = (t2 - t1).max(1);
    let missed = (now - t1) / interval + 1;
    let mut recent = t1 + (missed - 1) * interval;
    if recent > now {
        recent = t1;
    }
    // The estimate may not be a run time of an irregular schedule; step from a run time.
    let mut cursor = t1.max(recent.saturating_sub(2 * interval));
    if schedule.next_after(cursor - 1, zone) != Some(cursor) {
        cursor = t1;
    }
    let mut latest = cursor;
    while let Some(t) = schedule.next_after(latest, zone) {
        if t > now {
            break;
        }
        latest = t;
    }
    (Some(latest), missed)
}

/// The Job name for a run: `<cronjob>-<scheduled time in minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: i64) -> String {
    format!("{cronjob}-{}", scheduled.div_euclid(60))
}

/// The Job for a run scheduled at `scheduled`, owned by the CronJob.
pub fn job_for(cj: &CronJob, scheduled: i64, zone: &Zone) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let template: JobTemplateSpec = cj.spec.job_template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), zone.rfc3339(scheduled));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// A reference to `job` for `status.active`.
pub fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn ts(unix: i64) -> Time {
    Time(Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Which finished Jobs go so that at most `limit` remain: the oldest by start time
/// (Jobs without one last), names breaking ties, as upstream's `byJobStartTime`.
pub fn beyond_history_limit<'a>(finished: &[&'a Job], limit: Option<i32>) -> Vec<&'a Job> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let limit = limit.max(0) as usize;
    if finished.len() <= limit {
        return Vec::new();
    }
    let mut sorted: Vec<&Job> = finished.to_vec();
    sorted.sort_by_key(|j| {
        let start = j
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(secs);
        (start.is_none(), start, j.metadata.name.clone())
    });
    sorted.truncate(finished.len() - limit);
    sorted
}

/// Decide one sync of `cj` at `now` (Unix seconds).
pub fn decide(cj: &CronJob, jobs: &[&Job], schedule: &Schedule, zone: &Zone, now: i64) -> Plan {
    let spec = cj.spec.clone();
    let old = cj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut plan = Plan::default();
    let mut active = status.active.clone().unwrap_or_default();

    // --- Reconcile `active` and `lastSuccessfulTime` with the Jobs that exist. ---
    for job in jobs {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let in_active = active
            .iter()
            .any(|r| r.uid.as_deref() == Some(uid.as_str()));
        let finished = finished_condition(job);
        match (in_active, finished) {
            (false, None) => plan.events.push(event(
                true,
                "UnexpectedJob",
                format!("Saw a job that the controller did not create or forgot: {job_name}"),
            )),
            (true, Some(cond)) => {
                active.retain(|r| r.uid.as_deref() != Some(uid.as_str()));
                plan.events.push(event(
                    false,
                    "SawCompletedJob",
                    format!("Saw completed job: {job_name}, condition: {cond}"),
                ));
            }
            _ => {}
        }
        if finished == Some("Complete") {
            if let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.as_ref()) {
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| secs(t) < secs(done))
                {
                    status.last_successful_time = Some(done.clone());
                }
            }
        }
    }
    // Active entries whose Job is gone.
    let before = active.len();
    active.retain(|r| {
        let present = jobs.iter().any(|j| j.metadata.uid == r.uid);
        if !present {
            plan.events.push(event(
                false,
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    r.name.clone().unwrap_or_default()
                ),
            ));
        }
        present
    });
    let _ = before;

    // --- History limits over the finished Jobs. ---
    let succeeded: Vec<&Job> = jobs
        .iter()
        .copied()
        .filter(|j| finished_condition(j) == Some("Complete"))
        .collect();
    let failed: Vec<&Job> = jobs
        .iter()
        .copied()
        .filter(|j| finished_condition(j) == Some("Failed"))
        .collect();
    for job in beyond_history_limit(&succeeded, spec.successful_jobs_history_limit)
        .into_iter()
        .chain(beyond_history_limit(
            &failed,
            spec.failed_jobs_history_limit,
        ))
    {
        let name = job.metadata.name.clone().unwrap_or_default();
        plan.events.push(event(
            false,
            "SuccessfulDelete",
            format!("Deleted job {name}"),
        ));
        plan.delete.push(name);
    }

    // --- Scheduling. ---
    let deleting = cj.metadata.deletion_timestamp.is_some();
    if !deleting && spec.suspend != Some(true) {
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(secs)
            .unwrap_or(now);
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .map(secs)
            .unwrap_or(created);
        if let Some(sds) = spec.starting_deadline_seconds {
            earliest = earliest.max(now - sds);
        }
        let (recent, missed) = most_recent_schedule(earliest, now, schedule, zone);
        if missed > TOO_MANY_MISSED {
            plan.events.push(event(
                true,
                "TooManyMissedTimes",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            ));
        }
        if let Some(scheduled) = recent {
            let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), scheduled);
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|sds| scheduled + sds < now);
            let already = active
                .iter()
                .any(|r| r.name.as_deref() == Some(name.as_str()))
                || status.last_schedule_time.as_ref().map(secs) == Some(scheduled);
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if too_late {
                plan.events.push(event(
                    true,
                    "MissSchedule",
                    format!(
                        "Missed scheduled time to start a job: {}",
                        rfc1123z(scheduled)
                    ),
                ));
            } else if already {
            } else if policy == "Forbid" && !active.is_empty() {
                plan.events.push(event(
                    false,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                ));
            } else {
                if policy == "Replace" {
                    for r in active.drain(..) {
                        let n = r.name.unwrap_or_default();
                        if !plan.delete.contains(&n) {
                            plan.events.push(event(
                                false,
                                "SuccessfulDelete",
                                format!("Deleted job {n}"),
                            ));
                            plan.delete.push(n);
                        }
                    }
                }
                plan.create = Some(job_for(cj, scheduled, zone));
                status.last_schedule_time = Some(ts(scheduled));
            }
        }
        if let Some(next) = schedule.next_after(now, zone) {
            // A little past the minute so the next sync sees it as due.
            plan.requeue_after = Some(Duration::from_millis(
                ((next - now).max(0) * 1000 + 100) as u64,
            ));
        }
    }

    status.active = if active.is_empty() {
        None
    } else {
        Some(active)
    };
    let old_active_empty = old.active.as_ref().is_none_or(|a| a.is_empty());
    let changed = status.last_schedule_time != old.last_schedule_time
        || status.last_successful_time != old.last_successful_time
        || !(status.active.is_none() && old_active_empty) && status.active != old.active;
    if changed {
        plan.status = Some(status);
    }
    plan
}

/// Go's `time.RFC1123Z` in UTC: "Mon, 02 Jan 2006 15:04:05 -0700".
fn rfc1123z(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%a, %d %b %Y %H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
