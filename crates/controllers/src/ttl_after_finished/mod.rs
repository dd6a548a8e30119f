//! TTL-after-finished (upstream `ttl-after-finished-controller`): deletes a finished Job
//! `spec.ttlSecondsAfterFinished` after it finished, pods with it (background
//! propagation; upstream asks for foreground, which needs the garbage collector's
//! foregroundDeletion handling, so background is used until that lands). The delete is
//! guarded by the Job's UID so a re-created Job of the same name is never hit.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use informers::{Change, Informer, ObjectKey, WorkQueue};

use crate::job::decide::finish_time;
use crate::Context;

pub const COMPONENT: &str = "ttl-after-finished-controller";

/// What to do about one Job now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No TTL, not finished, or already being deleted.
    Leave,
    /// Look again after this long.
    Wait(Duration),
    Delete,
}

/// Decide from the Job and the time (Unix seconds).
pub fn decide(job: &Job, now: i64) -> Verdict {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Verdict::Leave;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Verdict::Leave;
    }
    let Some(finished) = finish_time(job).filter(|_| crate::job::decide::is_finished(job)) else {
        return Verdict::Leave;
    };
    let expires = finished.as_second().saturating_add(ttl as i64);
    if now >= expires {
        Verdict::Delete
    } else {
        Verdict::Wait(Duration::from_secs((expires - now) as u64))
    }
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let jobs: Informer<Job> = ctx.informers.informer::<Job>();
    let mut changes = jobs.subscribe();
    let client = ctx.client.clone();
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let q = queue.clone();
        let all = jobs.clone();
        let feed = async move {
            while let Some(change) = changes.recv().await {
                match change {
                    Change::Applied(j) => q.add(ObjectKey::of(j.as_ref())),
                    Change::Deleted(_) => {}
                    Change::Resync => all
                        .list()
                        .iter()
                        .for_each(|j| q.add(ObjectKey::of(j.as_ref()))),
                }
            }
        };
        let work = queue.run(1, COMPONENT, move |key: ObjectKey| {
            let jobs = jobs.clone();
            let client = client.clone();
            async move {
                let Some(job) = jobs.get(&key.namespace, &key.name) else {
                    return Ok(None);
                };
                match decide(&job, Timestamp::now().as_second()) {
                    Verdict::Leave => Ok(None),
                    Verdict::Wait(d) => Ok(Some(d)),
                    Verdict::Delete => {
                        let api: Api<Job> = Api::namespaced(client, &key.namespace);
                        let params = DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Background),
                            preconditions: Some(Preconditions {
                                uid: job.metadata.uid.clone(),
                                resource_version: None,
                            }),
                            ..Default::default()
                        };
                        match api.delete(&key.name, &params).await {
                            Ok(_) => Ok(None),
                            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
                            Err(e) => Err(format!("job {key}: deleting after its TTL: {e}")),
                        }
                    }
                }
            }
        });
        futures::join!(feed, work);
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, finished_at: Option<(&str, i64)>, deleting: bool) -> Job {
        let mut j = Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: finished_at.map(|(ty, t)| {
                    vec![JobCondition {
                        type_: ty.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        if deleting {
            j.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        }
        j
    }

    #[test]
    fn verdicts() {
        let cases = [
            (
                job(None, Some(("Complete", 100)), false),
                1000,
                Verdict::Leave,
            ),
            (job(Some(10), None, false), 1000, Verdict::Leave),
            (
                job(Some(10), Some(("SuccessCriteriaMet", 100)), false),
                1000,
                Verdict::Leave,
            ),
            (
                job(Some(10), Some(("Complete", 100)), false),
                105,
                Verdict::Wait(Duration::from_secs(5)),
            ),
            (
                job(Some(10), Some(("Complete", 100)), false),
                110,
                Verdict::Delete,
            ),
            (
                job(Some(0), Some(("Failed", 100)), false),
                100,
                Verdict::Delete,
            ),
            (
                job(Some(0), Some(("Failed", 100)), true),
                100,
                Verdict::Leave,
            ),
        ];
        for (j, now, want) in cases {
            assert_eq!(decide(&j, now), want, "{:?} at {now}", j.status);
        }
    }
}
