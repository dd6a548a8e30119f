//! The StatefulSet controller (upstream `pkg/controller/statefulset`): pods with stable
//! names `<set>-<ordinal>` and identity (hostname, subdomain, `statefulset.kubernetes.io/
//! pod-name` and `apps.kubernetes.io/pod-index` labels), a PersistentVolumeClaim
//! `<template>-<set>-<ordinal>` per volumeClaimTemplate created before its pod and kept
//! unless `persistentVolumeClaimRetentionPolicy` says Delete (ownerReferences for the
//! garbage collector), OrderedReady and Parallel pod management, ControllerRevisions
//! (`crate::revisions`), RollingUpdate with partition and OnDelete, status for
//! `kubectl get sts` / `rollout status`, events as upstream's `statefulset-controller`.
//!
//! `decide.rs` decides; this file reads the caches and acts.

pub mod decide;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use crate::events::Recorder;
use crate::replicaset::expectations::Expectations;
use crate::replicaset::podutil;
use crate::replicaset::{api_message, is_status};
use crate::revisions;
use crate::Context;
use decide::{Action, DeleteWhy, Revision};

pub const COMPONENT: &str = "statefulset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("statefulset {key}: {context}: {source}")]
    Kube {
        key: ObjectKey,
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("statefulset {key}: {context}: {message}")]
    Sync {
        key: ObjectKey,
        context: String,
        message: String,
    },
}

struct Controller {
    client: kube::Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    claims: Informer<PersistentVolumeClaim>,
    revisions: Informer<ControllerRevision>,
    recorder: Recorder,
    expectations: Expectations,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let sets = ctx.informers.informer::<StatefulSet>();
    let pods = ctx.informers.informer::<Pod>();
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let revisions = ctx.informers.informer::<ControllerRevision>();
    let mut set_changes = sets.subscribe();
    let mut pod_changes = pods.subscribe();
    let workers = ctx.options.workers;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        sets,
        pods,
        claims,
        revisions,
        recorder: ctx.recorder(COMPONENT),
        expectations: Expectations::default(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let enqueue_all = |c: &Controller, q: &WorkQueue<ObjectKey>| {
            c.sets
                .list()
                .iter()
                .for_each(|s| q.add(ObjectKey::of(s.as_ref())))
        };
        let (q, cc) = (queue.clone(), c.clone());
        let set_feed = async move {
            while let Some(change) = set_changes.recv().await {
                match change {
                    Change::Applied(s) | Change::Deleted(s) => q.add(ObjectKey::of(s.as_ref())),
                    Change::Resync => enqueue_all(&cc, &q),
                }
            }
        };
        let (q, cc) = (queue.clone(), c.clone());
        let pod_feed = async move {
            while let Some(change) = pod_changes.recv().await {
                match change {
                    Change::Applied(p) | Change::Deleted(p) => {
                        cc.owners_of(&p).into_iter().for_each(|k| q.add(k))
                    }
                    Change::Resync => enqueue_all(&cc, &q),
                }
            }
        };
        let cc = c.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = cc.clone();
            async move { c.reconcile(&key).await }
        });
        c.sets.wait_synced().await;
        c.pods.wait_synced().await;
        c.claims.wait_synced().await;
        c.revisions.wait_synced().await;
        futures::join!(set_feed, pod_feed, work);
    }
    .boxed()
}

impl Controller {
    /// The sets a pod change concerns: its controller, or (for an orphan) every set of
    /// its namespace that would adopt it.
    fn owners_of(&self, pod: &Pod) -> Vec<ObjectKey> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if let Some(owner) = podutil::controller_of(&pod.metadata) {
            return if owner.kind == "StatefulSet" {
                vec![ObjectKey::new(&ns, &owner.name)]
            } else {
                Vec::new()
            };
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.sets
            .list_namespace(&ns)
            .iter()
            .filter(|s| {
                decide::ordinal_of(s.metadata.name.as_deref().unwrap_or_default(), name).is_some()
                    && podutil::selector_matches(&s.spec.selector, pod.metadata.labels.as_ref())
            })
            .map(|s| ObjectKey::of(s.as_ref()))
            .collect()
    }

    async fn event(
        &self,
        set: &StatefulSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        self.recorder.record(ev, set.object_ref(&()));
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(set) = self.sets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes pods, revisions and owned claims.
            return Ok(None);
        }
        let kube_err = |context: String| {
            let key = key.clone();
            move |source| Error::Kube {
                key,
                context,
                source,
            }
        };
        let namespace_pods = self.pods.list_namespace(&key.namespace);
        let refs: Vec<&Pod> = namespace_pods.iter().map(|p| p.as_ref()).collect();
        let claim = decide::claim(&set, &refs);
        let mut owned: Vec<&Pod> = claim.owned.clone();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        if !claim.adopt.is_empty() && self.can_adopt(&set).await? {
            let owner = podutil::controller_ref("apps/v1", "StatefulSet", &set.metadata);
            for pod in &claim.adopt {
                let mut owners = pod.metadata.owner_references.clone().unwrap_or_default();
                owners.push(owner.clone());
                let name = pod.metadata.name.clone().unwrap_or_default();
                match self.patch_owners(&pods_api, pod, owners).await {
                    Ok(_) => owned.push(pod),
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(e) => return Err(kube_err(format!("adopting pod {name}"))(e)),
                }
            }
        }
        let uid = set.metadata.uid.clone().unwrap_or_default();
        for pod in &claim.release {
            let owners = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.uid != uid)
                .cloned()
                .collect();
            let name = pod.metadata.name.clone().unwrap_or_default();
            match self.patch_owners(&pods_api, pod, owners).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(kube_err(format!("releasing pod {name}"))(e)),
            }
        }

        // Revisions: the update revision is the template's; the current one is what
        // status says pods ran before (the update revision on a new set).
        let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let keep: Vec<&str> = status_current.iter().map(String::as_str).collect();
        let owner = revisions::Owner {
            kind: "StatefulSet",
            meta: &set.metadata,
            template: &set.spec.template,
            collision_count: set.status.as_ref().and_then(|s| s.collision_count),
            history_limit: set.spec.revision_history_limit.unwrap_or(10),
            annotations: set.metadata.annotations.clone(),
        };
        let ensured = revisions::ensure(&self.client, &self.revisions, &owner, &owned, &keep)
            .await
            .map_err(|e| Error::Kube {
                key: key.clone(),
                context: e.context,
                source: e.source,
            })?;
        let (update_hash, update_name) = match ensured {
            revisions::Ensured::Current { hash, name } => (hash, name),
            revisions::Ensured::Collision => return self.record_collision(&set, key).await,
        };
        let (current_name, current_template) = status_current
            .as_deref()
            .and_then(|name| self.revisions.get(&key.namespace, name))
            .filter(|r| podutil::controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
            .and_then(|r| Some((r.metadata.name.clone()?, revisions::template_of(&r)?)))
            .unwrap_or_else(|| (update_name.clone(), set.spec.template.clone()));
        let current_hash = current_name
            .strip_prefix(&format!("{}-", key.name))
            .unwrap_or(&update_hash)
            .to_string();

        let namespace_claims = self.claims.list_namespace(&key.namespace);
        let claims: HashMap<String, &PersistentVolumeClaim> = namespace_claims
            .iter()
            .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.as_ref()))
            .collect();
        let now = Utc::now();
        let observed = decide::Observed {
            pods: &owned,
            claims: &claims,
            current_revision: &current_name,
            update_revision: &update_name,
            now,
        };
        let mut failure = None;
        let satisfied = self
            .expectations
            .satisfied(key, |name| self.pods.get(&key.namespace, name));
        if satisfied {
            let actions = decide::plan(&set, &observed);
            let templates = Templates {
                current: (&current_template, &current_hash),
                update: (&set.spec.template, &update_hash),
            };
            failure = self.act(&set, key, &owned, &actions, &templates).await;
        }

        let status = decide::status(&set, &observed);
        if set.status.as_ref() != Some(&status) {
            let mut updated = (*set).clone();
            updated.status = Some(status);
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                // Stale cache or gone: the informer brings the newer object and requeues.
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(kube_err("updating status".into())(e)),
            }
        }
        if let Some(message) = failure {
            return Err(Error::Sync {
                key: key.clone(),
                context: "syncing pods and claims".into(),
                message,
            });
        }
        Ok(decide::next_availability(&set, &owned, now))
    }

    /// Upstream re-reads the owner before adopting, so a stale cache never adopts pods
    /// for a set that is gone or being deleted.
    async fn can_adopt(&self, set: &StatefulSet) -> Result<bool, Error> {
        let key = ObjectKey::of(set);
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(fresh)) => Ok(fresh.metadata.uid == set.metadata.uid
                && fresh.metadata.deletion_timestamp.is_none()),
            Ok(None) => Ok(false),
            Err(source) => Err(Error::Kube {
                key,
                context: "re-reading before adoption".into(),
                source,
            }),
        }
    }

    /// Replace a pod's ownerReferences, guarded by its uid and resourceVersion.
    async fn patch_owners(
        &self,
        api: &Api<Pod>,
        pod: &Pod,
        owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    ) -> Result<Pod, kube::Error> {
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": if owners.is_empty() { serde_json::Value::Null } else { serde_json::json!(owners) },
            "uid": pod.metadata.uid,
            "resourceVersion": pod.metadata.resource_version,
        }});
        let name = pod.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    async fn record_collision(
        &self,
        set: &StatefulSet,
        key: &ObjectKey,
    ) -> Result<Option<Duration>, Error> {
        let mut updated = set.clone();
        let mut status = updated.status.clone().unwrap_or_default();
        status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
        updated.status = Some(status);
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(None),
            Err(source) => Err(Error::Kube {
                key: key.clone(),
                context: "recording a hash collision".into(),
                source,
            }),
        }
    }

    /// Take the planned actions: claim owners first, then deletions, then creations
    /// (claims before their pod). OrderedReady plans hold at most one pod action;
    /// Parallel ones run concurrently. Returns the first failure's message.
    async fn act(
        &self,
        set: &StatefulSet,
        key: &ObjectKey,
        owned: &[&Pod],
        actions: &[Action],
        templates: &Templates<'_>,
    ) -> Option<String> {
        let mut failure: Option<String> = None;
        let claims_api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &key.namespace);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        for action in actions {
            if let Action::ClaimOwners { claim, owners } = action {
                let patch = serde_json::json!({"metadata": {"ownerReferences": owners}});
                match claims_api
                    .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        failure.get_or_insert(format!(
                            "updating owners of claim {claim}: {}",
                            api_message(&e)
                        ));
                    }
                }
            }
        }
        if failure.is_some() {
            // A scaled-down pod must not go before its claim knows to follow it.
            return failure;
        }
        let deletions = actions.iter().filter_map(|a| match a {
            Action::DeletePod { name, why } => Some((name, *why)),
            _ => None,
        });
        let results = futures::future::join_all(deletions.map(|(name, why)| {
            let api = pods_api.clone();
            async move { (name, why, api.delete(name, &DeleteParams::default()).await) }
        }))
        .await;
        for (name, why, result) in results {
            match result {
                Ok(_) => {
                    let uid = owned
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                        .and_then(|p| p.metadata.uid.clone())
                        .unwrap_or_default();
                    self.expectations.deleted(key, name, &uid);
                    if why == DeleteWhy::Finished {
                        tracing::info!(
                            "statefulset {key}: pod {name} finished; deleted to be recreated"
                        );
                    }
                    self.event(
                        set,
                        EventType::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("delete Pod {name} in StatefulSet {} successful", key.name),
                    )
                    .await;
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    let message = api_message(&e);
                    self.event(
                        set,
                        EventType::Warning,
                        "FailedDelete",
                        "Delete",
                        format!(
                            "delete Pod {name} in StatefulSet {} failed error: {message}",
                            key.name
                        ),
                    )
                    .await;
                    failure.get_or_insert(message);
                }
            }
        }
        // Claims for existing pods (not followed by a creation) and new pods.
        let mut creations: Vec<(i32, Vec<String>, Option<Revision>)> = Vec::new();
        for action in actions {
            match action {
                Action::CreateClaims { ordinal, templates } => {
                    creations.push((*ordinal, templates.clone(), None))
                }
                Action::CreatePod { ordinal, revision } => {
                    match creations.iter_mut().find(|c| c.0 == *ordinal) {
                        Some(c) => c.2 = Some(*revision),
                        None => creations.push((*ordinal, Vec::new(), Some(*revision))),
                    }
                }
                _ => {}
            }
        }
        let results = futures::future::join_all(creations.iter().map(
            |(ordinal, claim_templates, revision)| {
                self.create_ordinal(set, key, *ordinal, claim_templates, *revision, templates)
            },
        ))
        .await;
        for r in results.into_iter().flatten() {
            failure.get_or_insert(r);
        }
        failure
    }

    /// Create the missing claims of one ordinal, then (if asked) its pod; a failed claim
    /// stops the pod, as upstream.
    async fn create_ordinal(
        &self,
        set: &StatefulSet,
        key: &ObjectKey,
        ordinal: i32,
        claim_templates: &[String],
        revision: Option<Revision>,
        templates: &Templates<'_>,
    ) -> Option<String> {
        let pod_name = format!("{}-{ordinal}", key.name);
        let claims_api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &key.namespace);
        for tname in claim_templates {
            let Some(template) = set
                .spec
                .volume_claim_templates
                .iter()
                .flatten()
                .find(|t| t.metadata.name.as_deref() == Some(tname.as_str()))
            else {
                continue;
            };
            let claim = decide::new_claim(set, template, ordinal);
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            match claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    self.event(
                        set,
                        EventType::Normal,
                        "SuccessfulCreate",
                        "Create",
                        format!(
                            "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                            key.name
                        ),
                    )
                    .await
                }
                // Made by an earlier sync the cache has not shown yet.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    let message = api_message(&e);
                    self.event(
                        set,
                        EventType::Warning,
                        "FailedCreate",
                        "Create",
                        format!(
                            "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {message}",
                            key.name
                        ),
                    )
                    .await;
                    return Some(message);
                }
            }
        }
        let (template, hash) = match revision? {
            Revision::Current => templates.current,
            Revision::Update => templates.update,
        };
        let pod = decide::new_pod(set, template, hash, ordinal);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.expectations.created(key, &pod_name);
                self.event(
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!(
                        "create Pod {pod_name} in StatefulSet {} successful",
                        key.name
                    ),
                )
                .await;
                None
            }
            // The old pod of that name is still going away: the next sync retries.
            Err(e) if is_status(&e, 409) => None,
            Err(e) => {
                let message = api_message(&e);
                self.event(
                    set,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!(
                        "create Pod {pod_name} in StatefulSet {} failed error: {message}",
                        key.name
                    ),
                )
                .await;
                Some(message)
            }
        }
    }
}

/// The pod templates new pods come from, with their revision hashes.
struct Templates<'a> {
    current: (&'a PodTemplateSpec, &'a String),
    update: (&'a PodTemplateSpec, &'a String),
}
