//! The CronJob controller (upstream `cronjob-controller`): makes a Job for each scheduled
//! run. [`decide`] owns the rules (schedule, timeZone, concurrencyPolicy,
//! startingDeadlineSeconds, history limits, suspend); this module parses the schedule and
//! loads the zone (recording upstream's Warning events when it cannot), reads the caches
//! and applies the plan. Each CronJob is re-queued for its next run time.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use api::cron::{Schedule, Zone};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::{Event, EventType};

use crate::events::Recorder;
use kube::Resource;

use informers::{Informer, ObjectKey, WorkQueue};

use crate::Context;

pub const COMPONENT: &str = "cronjob-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cronjob {key}: {what}: {source}")]
    Kube {
        key: ObjectKey,
        what: String,
        #[source]
        source: kube::Error,
    },
}

struct CronJobController {
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    client: kube::Client,
    recorder: Recorder,
}

fn owning_cronjob(job: &Job) -> Option<ObjectKey> {
    crate::feed::controller_key(&job.metadata, "batch/v1", "CronJob")
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let cronjobs = ctx.informers.informer::<CronJob>();
    let jobs = ctx.informers.informer::<Job>();
    let cj_changes = cronjobs.subscribe();
    let job_changes = jobs.subscribe();
    let workers = ctx.options.workers;
    let controller = Arc::new(CronJobController {
        cronjobs: cronjobs.clone(),
        jobs: jobs.clone(),
        client: ctx.client.clone(),
        recorder: ctx.recorder(COMPONENT),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let cj_feed = crate::feed::own_changes(cj_changes, cronjobs, queue.clone());
        let job_feed = crate::feed::owner_changes(job_changes, jobs, queue.clone(), owning_cronjob);
        let c = controller.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = c.clone();
            async move { c.sync(&key).await }
        });
        futures::join!(cj_feed, job_feed, work);
    }
    .boxed()
}

impl CronJobController {
    fn kube_err(key: &ObjectKey, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let key = key.clone();
        let what = what.into();
        move |source| Error::Kube { key, what, source }
    }

    async fn publish(&self, cj: &CronJob, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cj.object_ref(&())).await {
            tracing::warn!("cronjob-controller: recording {reason}: {e}");
        }
    }

    async fn sync(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(cj) = self.cronjobs.get(&key.namespace, &key.name) else {
            return Ok(None);
        };
        let spec = cj.spec.clone();
        // A schedule or zone the controller cannot use is reported, and the CronJob is
        // left alone until it changes (the API refuses both, so this is defensive).
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.publish(
                    &cj,
                    true,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                )
                .await;
                return Ok(None);
            }
        };
        let zone_name = spec
            .time_zone
            .clone()
            .or_else(|| schedule.tz().map(String::from));
        let zone = match zone_name
            .as_deref()
            .map(Zone::load)
            .unwrap_or_else(|| Ok(Zone::utc()))
        {
            Ok(z) => z,
            Err(e) => {
                let tz = zone_name.unwrap_or_default();
                self.publish(
                    &cj,
                    true,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {tz:?}: {e}"),
                )
                .await;
                return Ok(None);
            }
        };
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|j| {
                j.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .collect();
        let refs: Vec<&Job> = owned.iter().map(|j| j.as_ref()).collect();
        let plan = decide::decide(&cj, &refs, &schedule, &zone, Timestamp::now().as_second());
        self.act(key, &cj, plan).await
    }

    async fn act(
        &self,
        key: &ObjectKey,
        cj: &CronJob,
        plan: decide::Plan,
    ) -> Result<Option<Duration>, Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        let cronjobs: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
        for name in &plan.delete {
            match jobs.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Self::kube_err(key, format!("deleting job {name}"))(e)),
            }
        }
        let mut status = plan.status;
        if let Some(job) = &plan.create {
            let name = job.metadata.name.clone().unwrap_or_default();
            let made = match jobs.create(&PostParams::default(), job).await {
                Ok(made) => {
                    self.publish(cj, false, "SuccessfulCreate", format!("Created job {name}"))
                        .await;
                    Some(made)
                }
                // Made by an earlier sync whose status write was lost: adopt it if ours.
                Err(kube::Error::Api(s)) if s.code == 409 => self
                    .jobs
                    .get(&key.namespace, &name)
                    .filter(|j| owning_cronjob(j).as_ref() == Some(key))
                    .map(|j| j.as_ref().clone()),
                Err(e) => {
                    let message = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    self.publish(
                        cj,
                        true,
                        "FailedCreate",
                        format!("Error creating job: {message}"),
                    )
                    .await;
                    return Err(Self::kube_err(key, format!("creating job {name}"))(e));
                }
            };
            let recorded = match (made, status.as_mut()) {
                (Some(made), Some(status)) => {
                    let active = status.active.get_or_insert_with(Vec::new);
                    if !active.iter().any(|r| r.uid == made.metadata.uid) {
                        active.push(decide::job_reference(&made));
                    }
                    true
                }
                _ => false,
            };
            // Someone else's Job holds the name: do not record the run as done.
            if !recorded {
                status = None;
            }
        }
        if let Some(status) = status {
            let mut updated = cj.clone();
            updated.status = Some(status);
            cronjobs
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
                .map_err(Self::kube_err(key, "updating status"))?;
        }
        for ev in plan.events {
            self.publish(cj, ev.warning, &ev.reason, ev.message).await;
        }
        Ok(plan.requeue_after)
    }
}
