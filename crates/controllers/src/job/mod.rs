//! The Job controller (upstream `job-controller`): runs a Job's pods to completion.
//! [`decide`] owns every rule (completions, parallelism, backoffLimit,
//! activeDeadlineSeconds, Indexed completion, podFailurePolicy, suspend, tracking with
//! finalizers, conditions); this module only reads the caches, keeps the "expectations"
//! that stop a sync from acting twice on pods the cache has not seen yet, and applies a
//! [`decide::Plan`] through the API.
//!
//! The pod failure back-off record ([`decide::Backoff`]) lives here in memory, one per
//! Job, as upstream's `backoffStore`: it is updated only after the status write it
//! belongs to succeeds, and forgotten when the Job goes.
//!
//! Not done yet: backoffLimitPerIndex, successPolicy, managedBy, and adopting orphan pods
//! that match a Job's selector.

pub mod decide;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

use crate::events::Recorder;
use kube::Resource;

use informers::{Informer, ObjectKey, WorkQueue};

use crate::Context;
use decide::{Backoff, COMPLETION_INDEX, TRACKING_FINALIZER};

/// Reporting component, as upstream.
pub const COMPONENT: &str = "job-controller";
/// How long to trust an expectation the cache never confirms (upstream: 5 min).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {key}: {what}: {source}")]
    Kube {
        key: ObjectKey,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Pods this controller created or deleted that the pod cache has not reflected yet.
#[derive(Default)]
struct Pending {
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
    since: Option<Instant>,
}

struct JobController {
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    client: kube::Client,
    recorder: Recorder,
    expectations: Mutex<HashMap<ObjectKey, Pending>>,
    /// Pod failure back-off per Job (upstream's `podBackoffStore`).
    backoffs: Mutex<HashMap<ObjectKey, Backoff>>,
}

/// The Job that controls `pod`, from its controller ownerReference.
fn owning_job(pod: &Pod) -> Option<ObjectKey> {
    crate::feed::controller_key(&pod.metadata, "batch/v1", "Job")
}

fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let jobs = ctx.informers.informer::<Job>();
    let pods = ctx.informers.informer::<Pod>();
    let job_changes = jobs.subscribe();
    let pod_changes = pods.subscribe();
    let workers = ctx.options.workers;
    let controller = Arc::new(JobController {
        jobs: jobs.clone(),
        pods,
        client: ctx.client.clone(),
        recorder: ctx.recorder(COMPONENT),
        expectations: Mutex::new(HashMap::new()),
        backoffs: Mutex::new(HashMap::new()),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let job_feed = crate::feed::own_changes(job_changes, jobs, queue.clone());
        let pod_feed = crate::feed::owner_changes(
            pod_changes,
            controller.pods.clone(),
            queue.clone(),
            owning_job,
        );
        let c = controller.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = c.clone();
            async move { c.sync(&key).await }
        });
        futures::join!(job_feed, pod_feed, work);
    }
    .boxed()
}

impl JobController {
    fn kube_err(key: &ObjectKey, what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let key = key.clone();
        let what = what.into();
        move |source| Error::Kube { key, what, source }
    }

    /// True when the cache reflects every pod create/delete this controller made.
    fn expectations_met(&self, key: &ObjectKey) -> bool {
        let mut all = self.expectations.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = all.get_mut(key) else {
            return true;
        };
        pending
            .created
            .retain(|n| self.pods.get(&key.namespace, n).is_none());
        pending.deleted.retain(|n| {
            self.pods
                .get(&key.namespace, n)
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        let expired = pending
            .since
            .is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        if (pending.created.is_empty() && pending.deleted.is_empty()) || expired {
            all.remove(key);
            return true;
        }
        false
    }

    fn expect(&self, key: &ObjectKey, created: &[String], deleted: &[String]) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        let mut all = self.expectations.lock().unwrap_or_else(|e| e.into_inner());
        let pending = all.entry(key.clone()).or_default();
        pending.created.extend(created.iter().cloned());
        pending.deleted.extend(deleted.iter().cloned());
        pending.since = Some(Instant::now());
    }

    async fn sync(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(job) = self.jobs.get(&key.namespace, &key.name) else {
            // The Job is gone: release its pods' tracking finalizers so they can go too.
            self.expectations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            self.backoffs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            for pod in self.pods.list_namespace(&key.namespace) {
                if owning_job(&pod).as_ref() == Some(key)
                    && pod
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == TRACKING_FINALIZER)
                {
                    remove_finalizer(&pod_api, &pod)
                        .await
                        .map_err(Self::kube_err(key, "removing pod finalizer"))?;
                }
            }
            return Ok(None);
        };
        if !self.expectations_met(key) {
            // A pod event for the pods still expected requeues the Job.
            return Ok(None);
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| controlled_by(p, &uid))
            .collect();
        let refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let backoff = self
            .backoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default();
        let plan = decide::decide(&job, &refs, &backoff, Timestamp::now());
        self.act(key, &job, &pods, plan).await
    }

    async fn act(
        &self,
        key: &ObjectKey,
        job: &Job,
        pods: &[Arc<Pod>],
        plan: decide::Plan,
    ) -> Result<Option<Duration>, Error> {
        let job_api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let job_ref = job.object_ref(&());

        // Status first: uncounted UIDs must be on record before their finalizers go.
        if let Some(status) = plan.status {
            let mut updated = job.clone();
            updated.status = Some(status);
            job_api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
                .map_err(Self::kube_err(key, "updating status"))?;
        }
        // The back-off record follows the status it was computed with (upstream updates
        // its store only after a successful status write).
        {
            let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
            if plan.backoff == Backoff::default() {
                backoffs.remove(key);
            } else {
                backoffs.insert(key.clone(), plan.backoff.clone());
            }
        }
        for name in &plan.remove_finalizers {
            if let Some(pod) = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
            {
                remove_finalizer(&pod_api, pod)
                    .await
                    .map_err(Self::kube_err(
                        key,
                        format!("removing finalizer of pod {name}"),
                    ))?;
            }
        }

        let mut deleted = Vec::new();
        for name in &plan.delete {
            match pod_api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {
                    deleted.push(name.clone());
                    self.publish(
                        &job_ref,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Self::kube_err(key, format!("deleting pod {name}"))(e)),
            }
        }
        self.expect(key, &[], &deleted);

        let mut created = Vec::new();
        let mut failure = None;
        for index in &plan.create {
            let pod = pod_for(job, *index);
            match pod_api.create(&PostParams::default(), &pod).await {
                Ok(made) => {
                    let name = made.metadata.name.unwrap_or_default();
                    self.publish(
                        &job_ref,
                        false,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
                    created.push(name);
                }
                Err(e) => {
                    // Pods the API refuses (quota, bad template) are reported on the Job.
                    let message = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    self.publish(
                        &job_ref,
                        true,
                        "FailedCreate",
                        format!("Error creating: {message}"),
                    )
                    .await;
                    failure = Some(e);
                    break;
                }
            }
        }
        self.expect(key, &created, &[]);

        for ev in plan.events {
            self.publish(&job_ref, ev.warning, &ev.reason, ev.message)
                .await;
        }
        if let Some(e) = failure {
            // Retried with this Job's own back-off; other Jobs are not held up.
            return Err(Self::kube_err(key, "creating pod")(e));
        }
        Ok(plan.requeue_after)
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
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
        // An event that cannot be written must not stop the sync.
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!("job-controller: recording {reason}: {e}");
        }
    }
}

/// Drop the tracking finalizer from `pod`, guarded by its resourceVersion so a
/// concurrent change is retried rather than overwritten. A pod already gone is fine.
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let remaining: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| f.as_str() != TRACKING_FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "finalizers": remaining,
        }
    });
    let name = pod.metadata.name.as_deref().unwrap_or("");
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pod a Job runs: its template, owned by the Job, with the tracking finalizer and,
/// for Indexed Jobs, the completion index (annotation, label, hostname and
/// `JOB_COMPLETION_INDEX`), named `<job>-<random>` or `<job>-<index>-<random>`.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.to_string(), i.to_string());
            annotations.insert(COMPLETION_INDEX.to_string(), i.to_string());
            spec.hostname = Some(format!("{job_name}-{i}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let envs = c.env.get_or_insert_with(Vec::new);
                if !envs.iter().any(|e| e.name == env.name) {
                    envs.push(env.clone());
                }
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.to_string());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: job_name,
                uid: job.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("job-name".to_string(), "pi".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_carry_owner_finalizer_and_index() {
        // (index, generateName, hostname, index label)
        let cases = [
            (None, "pi-", None, None),
            (Some(3), "pi-3-", Some("pi-3"), Some("3")),
        ];
        for (index, generate, hostname, label) in cases {
            let pod = pod_for(&job(), index);
            assert_eq!(pod.metadata.generate_name.as_deref(), Some(generate));
            assert_eq!(
                pod.metadata.finalizers,
                Some(vec![TRACKING_FINALIZER.to_string()])
            );
            let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
                ("Job", "u1", Some(true))
            );
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.hostname.as_deref(), hostname);
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels.get(COMPLETION_INDEX).map(String::as_str), label);
            assert_eq!(labels.get("job-name").map(String::as_str), Some("pi"));
            let has_env = spec.containers[0]
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "JOB_COMPLETION_INDEX");
            assert_eq!(has_env, index.is_some());
            assert_eq!(owning_job(&pod), Some(ObjectKey::new("ns", "pi")));
        }
    }
}
