//! The ReplicaSet controller (upstream `pkg/controller/replicaset`): keeps `spec.replicas`
//! active pods matching the selector, adopting matching orphans and releasing pods that
//! stop matching, and reports replicas / fullyLabeled / ready / available and the
//! ReplicaFailure condition. Events as upstream's `replicaset-controller`.
//!
//! `decide.rs` and `ranking.rs` decide; this file reads the caches and acts.

pub mod decide;
pub mod expectations;
pub mod podutil;
pub mod ranking;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

use crate::events::Recorder;

use crate::Context;
use decide::{Manage, ManageFailure};
use expectations::Expectations;

pub const COMPONENT: &str = "replicaset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replicaset {key}: {context}: {source}")]
    Kube {
        key: ObjectKey,
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("replicaset {key}: {reason}: {message}")]
    Manage {
        key: ObjectKey,
        reason: String,
        message: String,
    },
}

/// The message the API gave (the `Status` message for API errors).
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

struct Controller {
    client: kube::Client,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
    expectations: Expectations,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let replicasets = ctx.informers.informer::<ReplicaSet>();
    let pods = ctx.informers.informer::<Pod>();
    let mut rs_changes = replicasets.subscribe();
    let mut pod_changes = pods.subscribe();
    let workers = ctx.options.workers;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        replicasets,
        pods,
        recorder: ctx.recorder(COMPONENT),
        expectations: Expectations::default(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let q = queue.clone();
        let cc = c.clone();
        let rs_feed = async move {
            while let Some(change) = rs_changes.recv().await {
                match change {
                    Change::Applied(rs) | Change::Deleted(rs) => q.add(ObjectKey::of(rs.as_ref())),
                    Change::Resync => cc
                        .replicasets
                        .list()
                        .iter()
                        .for_each(|rs| q.add(ObjectKey::of(rs.as_ref()))),
                }
            }
        };
        let q = queue.clone();
        let cc = c.clone();
        let pod_feed = async move {
            while let Some(change) = pod_changes.recv().await {
                match change {
                    Change::Applied(p) | Change::Deleted(p) => {
                        cc.owners_of(&p).into_iter().for_each(|k| q.add(k))
                    }
                    Change::Resync => cc
                        .replicasets
                        .list()
                        .iter()
                        .for_each(|rs| q.add(ObjectKey::of(rs.as_ref()))),
                }
            }
        };
        let cc = c.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = cc.clone();
            async move { c.reconcile(&key).await }
        });
        c.replicasets.wait_synced().await;
        c.pods.wait_synced().await;
        futures::join!(rs_feed, pod_feed, work);
    }
    .boxed()
}

impl Controller {
    /// The ReplicaSets a pod change concerns: its controller, or (for an orphan) every
    /// ReplicaSet of its namespace whose selector matches it.
    fn owners_of(&self, pod: &Pod) -> Vec<ObjectKey> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        crate::workload::owners_of(
            &pod.metadata,
            "ReplicaSet",
            &self.replicasets.list_namespace(ns),
            |o: &ReplicaSet| &o.spec.selector,
        )
    }

    async fn event(
        &self,
        rs: &ReplicaSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        crate::workload::record(&self.recorder, rs, type_, reason, action, note);
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(rs) = self.replicasets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let kube_err = |context: &str| {
            let key = key.clone();
            let context = context.to_string();
            move |source| Error::Kube {
                key,
                context,
                source,
            }
        };
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        // Its own pods and the namespace's orphans are all that claiming can touch (pods
        // of other controllers are never adopted), found through the controller index.
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let mut candidates = self.pods.list_controlled_by(&key.namespace, &uid);
        candidates.extend(self.pods.list_orphans(&key.namespace));
        let refs: Vec<&Pod> = candidates.iter().map(|p| p.as_ref()).collect();
        let claim = decide::claim(&rs, &refs);
        let mut active: Vec<&Pod> = claim.owned.clone();

        if !claim.adopt.is_empty() && self.can_adopt(&rs).await? {
            let owner = podutil::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
            for pod in &claim.adopt {
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner.clone());
                let patch = serde_json::json!({"metadata": {
                    "ownerReferences": refs,
                    "uid": pod.metadata.uid,
                    "resourceVersion": pod.metadata.resource_version,
                }});
                let name = pod.metadata.name.clone().unwrap_or_default();
                match pods_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => active.push(pod),
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(kube_err(&format!("adopting pod {name}"))(e)),
                }
            }
        }
        for pod in &claim.release {
            let refs: Vec<_> = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != uid)
                .cloned()
                .collect();
            let patch = serde_json::json!({"metadata": {
                "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) },
                "uid": pod.metadata.uid,
                "resourceVersion": pod.metadata.resource_version,
            }});
            let name = pod.metadata.name.clone().unwrap_or_default();
            match pods_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(kube_err(&format!("releasing pod {name}"))(e)),
            }
        }

        let now = Utc::now();
        let mut failure: Option<ManageFailure> = None;
        let satisfied = self
            .expectations
            .satisfied(key, |name| self.pods.get(&key.namespace, name));
        if satisfied && rs.metadata.deletion_timestamp.is_none() {
            let related_pods = self.related_pods(&rs);
            let related: Vec<&Pod> = related_pods.iter().map(|p| p.as_ref()).collect();
            match decide::manage(&rs, &active, &related, now) {
                Manage::Nothing => {}
                Manage::Create(n) => failure = self.create_pods(&rs, key, n).await,
                Manage::Delete(names) => {
                    failure = self.delete_pods(&rs, key, &active, &names).await
                }
            }
        }

        let mut status = decide::status(&rs, &active, failure.as_ref(), now);
        status.observed_generation = rs.metadata.generation;
        if rs.status.as_ref() != Some(&status) {
            let mut updated = (*rs).clone();
            updated.status = Some(status.clone());
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                // Stale cache or gone: the informer brings the newer object and requeues.
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(kube_err("updating status")(e)),
            }
        }
        if let Some(f) = failure {
            return Err(Error::Manage {
                key: key.clone(),
                reason: f.reason,
                message: f.message,
            });
        }
        // Look again when a Ready pod passes minReadySeconds (no event marks that moment).
        let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
        if min_ready > 0 {
            let next = active
                .iter()
                .filter_map(|p| podutil::becomes_available_in(p, min_ready, now))
                .min();
            return Ok(next);
        }
        Ok(None)
    }

    /// Upstream re-reads the ReplicaSet from the API before adopting, so that a stale
    /// cache never adopts pods for an owner that is gone or being deleted.
    async fn can_adopt(&self, rs: &ReplicaSet) -> Result<bool, Error> {
        let key = ObjectKey::of(rs);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(fresh)) => Ok(fresh.metadata.uid == rs.metadata.uid
                && fresh.metadata.deletion_timestamp.is_none()),
            Ok(None) => Ok(false),
            Err(source) => Err(Error::Kube {
                key,
                context: "re-reading before adoption".into(),
                source,
            }),
        }
    }

    /// Pods of this ReplicaSet and of its siblings (ReplicaSets with the same controlling
    /// Deployment), used to rank pods doubled up on a node first when scaling down
    /// (upstream `getIndirectlyRelatedPods`).
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let Some(owner) = podutil::controller_of(&rs.metadata) else {
            return self.pods.list_controlled_by(&ns, &uid);
        };
        self.replicasets
            .list_controlled_by(&ns, &owner.uid)
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .flat_map(|sibling| self.pods.list_controlled_by(&ns, sibling))
            .collect()
    }

    fn pod_from_template(&self, rs: &ReplicaSet) -> Pod {
        let template = rs.spec.template.clone().unwrap_or_default();
        let tmeta = template.metadata.unwrap_or_default();
        let mut pod = Pod::default();
        pod.metadata.generate_name =
            Some(format!("{}-", rs.metadata.name.clone().unwrap_or_default()));
        pod.metadata.namespace = rs.metadata.namespace.clone();
        pod.metadata.labels = tmeta.labels;
        pod.metadata.annotations = tmeta.annotations;
        pod.metadata.finalizers = tmeta.finalizers;
        pod.metadata.owner_references = Some(vec![podutil::controller_ref(
            "apps/v1",
            "ReplicaSet",
            &rs.metadata,
        )]);
        pod.spec = template.spec;
        pod
    }

    /// Create `count` pods in slow-start batches (1, 2, 4, ...); stop at the first
    /// refused batch, as upstream, so a quota or invalid template costs one error per sync.
    async fn create_pods(
        &self,
        rs: &ReplicaSet,
        key: &ObjectKey,
        count: usize,
    ) -> Option<ManageFailure> {
        let template = self.pod_from_template(rs);
        for batch in decide::slow_start_batches(count) {
            let results =
                futures::future::join_all((0..batch).map(|_| {
                    crate::requests::create_named(&self.client, &key.namespace, &template)
                }))
                .await;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(name) => {
                        self.expectations.created(key, &name);
                        self.event(
                            rs,
                            EventType::Normal,
                            "SuccessfulCreate",
                            "Create",
                            format!("Created pod: {name}"),
                        )
                        .await;
                    }
                    Err(e) => {
                        let message = api_message(&e);
                        self.event(
                            rs,
                            EventType::Warning,
                            "FailedCreate",
                            "Create",
                            format!("Error creating: {message}"),
                        )
                        .await;
                        first_error.get_or_insert(message);
                    }
                }
            }
            if let Some(message) = first_error {
                return Some(ManageFailure {
                    reason: "FailedCreate".into(),
                    message,
                });
            }
        }
        None
    }

    async fn delete_pods(
        &self,
        rs: &ReplicaSet,
        key: &ObjectKey,
        active: &[&Pod],
        names: &[String],
    ) -> Option<ManageFailure> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let results = futures::future::join_all(names.iter().map(|n| {
            let api = api.clone();
            async move { api.delete(n, &DeleteParams::default()).await }
        }))
        .await;
        let mut failure = None;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(_) => {
                    // Recorded after the call: no other sync of this key runs meanwhile,
                    // and a cache that already saw the deletion satisfies it at once.
                    let uid = active
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                        .and_then(|p| p.metadata.uid.clone())
                        .unwrap_or_default();
                    self.expectations.deleted(key, name, &uid);
                    self.event(
                        rs,
                        EventType::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {name}"),
                    )
                    .await
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    let message = api_message(&e);
                    self.event(
                        rs,
                        EventType::Warning,
                        "FailedDelete",
                        "Delete",
                        format!("Error deleting: {message}"),
                    )
                    .await;
                    failure.get_or_insert(ManageFailure {
                        reason: "FailedDelete".into(),
                        message,
                    });
                }
            }
        }
        failure
    }
}
