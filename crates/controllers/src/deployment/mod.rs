//! The Deployment controller (upstream `pkg/controller/deployment`): one ReplicaSet per
//! pod-template revision (`<deployment>-<pod-template-hash>`), rolled out with
//! RollingUpdate (maxSurge / maxUnavailable) or Recreate, scaled proportionally when
//! `replicas` changes mid-rollout, paused/resumed, old revisions cleaned up past
//! `revisionHistoryLimit`, status and conditions as upstream, events as upstream's
//! `deployment-controller`, plus skiff's opt-in automatic rollback (`autorollback.rs`).
//!
//! `rolling.rs`, `revision.rs`, `status.rs` and `autorollback.rs` decide; this file reads
//! the caches and acts, one step per sync like upstream (each write brings an informer
//! event that triggers the next step). Writes carry the cached resourceVersion, so a
//! stale cache ends in 409 and a retry, never in a double step.

pub mod autorollback;
pub mod revision;
pub mod rolling;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

use crate::events::Recorder;
use kube::Resource;

use crate::replicaset::{api_message, is_status, podutil};
use crate::Context;
use autorollback::Decision;

pub const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deployment {key}: {context}: {source}")]
    Kube {
        key: ObjectKey,
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A write met 409 Conflict: the cache was behind the API. Retried once the informer
    /// brings the newer object.
    #[error("deployment {0}: the object changed since it was read (409 Conflict); retrying with the newer version")]
    Stale(ObjectKey),
}

type Result<T> = std::result::Result<T, Error>;

struct Controller {
    client: kube::Client,
    deployments: Informer<Deployment>,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let deployments = ctx.informers.informer::<Deployment>();
    let replicasets = ctx.informers.informer::<ReplicaSet>();
    let pods = ctx.informers.informer::<Pod>();
    let mut d_changes = deployments.subscribe();
    let mut rs_changes = replicasets.subscribe();
    let mut pod_changes = pods.subscribe();
    let workers = ctx.options.workers;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        deployments,
        replicasets,
        pods,
        recorder: ctx.recorder(COMPONENT),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let all = {
            let c = c.clone();
            let q = queue.clone();
            move || {
                c.deployments
                    .list()
                    .iter()
                    .for_each(|d| q.add(ObjectKey::of(d.as_ref())))
            }
        };
        let (q, all1) = (queue.clone(), all.clone());
        let d_feed = async move {
            while let Some(change) = d_changes.recv().await {
                match change {
                    Change::Applied(d) | Change::Deleted(d) => q.add(ObjectKey::of(d.as_ref())),
                    Change::Resync => all1(),
                }
            }
        };
        let (q, cc, all2) = (queue.clone(), c.clone(), all.clone());
        let rs_feed = async move {
            while let Some(change) = rs_changes.recv().await {
                match change {
                    Change::Applied(rs) | Change::Deleted(rs) => {
                        cc.owners_of(&rs).into_iter().for_each(|k| q.add(k))
                    }
                    Change::Resync => all2(),
                }
            }
        };
        // Recreate waits for the old pods to be gone: their deletion is its signal.
        let (q, cc) = (queue.clone(), c.clone());
        let pod_feed = async move {
            while let Some(change) = pod_changes.recv().await {
                if let Change::Deleted(pod) = change {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    let Some(owner) =
                        podutil::controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet")
                    else {
                        continue;
                    };
                    if let Some(rs) = cc.replicasets.get(&ns, &owner.name) {
                        cc.owners_of(&rs).into_iter().for_each(|k| q.add(k));
                    }
                }
            }
        };
        let cc = c.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = cc.clone();
            async move { c.reconcile(&key).await }
        });
        c.deployments.wait_synced().await;
        c.replicasets.wait_synced().await;
        c.pods.wait_synced().await;
        futures::join!(d_feed, rs_feed, pod_feed, work);
    }
    .boxed()
}

fn name_of<K: Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

impl Controller {
    /// The Deployments a ReplicaSet change concerns: its controller, or (orphan) every
    /// Deployment of the namespace whose selector matches it.
    fn owners_of(&self, rs: &ReplicaSet) -> Vec<ObjectKey> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        crate::workload::owners_of(
            &rs.metadata,
            "Deployment",
            &self.deployments.list_namespace(ns),
            |o: &Deployment| &o.spec.selector,
        )
    }

    async fn event(
        &self,
        d: &Deployment,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        crate::workload::record(&self.recorder, d, type_, reason, action, note);
    }

    fn err(key: &ObjectKey, context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let key = key.clone();
        let context = context.into();
        move |source| {
            if is_status(&source, 409) {
                Error::Stale(key)
            } else {
                Error::Kube {
                    key,
                    context,
                    source,
                }
            }
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Duration>> {
        let Some(cached) = self.deployments.get_key(key) else {
            return Ok(None);
        };
        let mut d: Deployment = (*cached).clone();
        if podutil::selector_is_empty(&d.spec.selector) {
            // The API refuses this for apps/v1; an object from elsewhere is not ours to act on.
            self.event(
                &d,
                EventType::Warning,
                "SelectingAll",
                "Sync",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            )
            .await;
            return Ok(None);
        }
        let mut rss = self.claim_replicasets(&d, key).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            let (new, _) = split_new(&d, &refs);
            let s = status::calculate(&refs, new, &d, Utc::now());
            self.write_status(&mut d, key, s).await?;
            return Ok(None);
        }
        if let Some(s) = status::paused_transition(&d, Utc::now()) {
            self.write_status(&mut d, key, s).await?;
        }
        let paused = d.spec.paused.unwrap_or(false);
        let scaling = {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            let (new, olds) = split_new(&d, &refs);
            rolling::is_scaling_event(&d, new, &olds)
        };
        if paused || scaling {
            return self.sync(&mut d, key, &mut rss).await;
        }
        if rolling::is_rolling(&d) {
            self.rollout_rolling(&mut d, key, &mut rss).await
        } else {
            self.rollout_recreate(&mut d, key, &mut rss).await
        }
    }

    /// Owned ReplicaSets matching the selector, adopting matching orphans and releasing
    /// owned ones that stopped matching (upstream ControllerRefManager.ClaimReplicaSets).
    async fn claim_replicasets(&self, d: &Deployment, key: &ObjectKey) -> Result<Vec<ReplicaSet>> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let selector = d.spec.selector.clone();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut owned = Vec::new();
        for rs in self.replicasets.list_namespace(&key.namespace) {
            let matches = podutil::selector_matches(&selector, rs.metadata.labels.as_ref());
            let name = name_of(rs.as_ref());
            match podutil::controller_of(&rs.metadata) {
                Some(o) if o.uid == uid => {
                    if matches {
                        owned.push((*rs).clone());
                    } else if d.metadata.deletion_timestamp.is_none() {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .cloned()
                            .collect();
                        let patch = serde_json::json!({"metadata": {"ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) }, "uid": rs.metadata.uid}});
                        match api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if is_status(&e, 404) => {}
                            Err(e) => {
                                return Err(Self::err(key, format!("releasing replicaset {name}"))(
                                    e,
                                ))
                            }
                        }
                    }
                }
                None if matches
                    && d.metadata.deletion_timestamp.is_none()
                    && rs.metadata.deletion_timestamp.is_none() =>
                {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(podutil::controller_ref(
                        "apps/v1",
                        "Deployment",
                        &d.metadata,
                    ));
                    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(adopted) => owned.push(adopted),
                        Err(e) if is_status(&e, 404) => {}
                        Err(e) => {
                            return Err(Self::err(key, format!("adopting replicaset {name}"))(e))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    async fn write_status(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        s: DeploymentStatus,
    ) -> Result<()> {
        if d.status.as_ref() == Some(&s) {
            return Ok(());
        }
        let mut updated = d.clone();
        updated.status = Some(s);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        *d = api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
            .map_err(Self::err(key, "updating status"))?;
        Ok(())
    }

    async fn set_deployment_annotation(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        name: &str,
        value: &str,
    ) -> Result<()> {
        if revision::annotation(&d.metadata.annotations, name) == Some(value) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {name: value}, "resourceVersion": d.metadata.resource_version}});
        *d = api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Self::err(key, format!("setting annotation {name}")))?;
        Ok(())
    }

    /// Upstream `scaleReplicaSet`: new size plus desired/max-replicas annotations; an
    /// event when the size changed.
    async fn scale(
        &self,
        d: &Deployment,
        key: &ObjectKey,
        rss: &mut [ReplicaSet],
        name: &str,
        size: i32,
    ) -> Result<bool> {
        let Some(rs) = rss.iter_mut().find(|r| name_of(*r) == name) else {
            return Ok(false);
        };
        let old = rolling::spec_replicas(rs);
        let mut updated = rs.clone();
        updated.spec.replicas = Some(size);
        let replicas = rolling::deployment_replicas(d);
        let annotated = revision::set_replicas_annotations(
            &mut updated,
            replicas,
            replicas + rolling::max_surge(d),
        );
        if old == size && !annotated {
            return Ok(false);
        }
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        *rs = api
            .replace(name, &PostParams::default(), &updated)
            .await
            .map_err(Self::err(
                key,
                format!("scaling replicaset {name} to {size}"),
            ))?;
        if old != size {
            let op = if old < size { "up" } else { "down" };
            self.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled {op} replica set {name} from {old} to {size}"),
            )
            .await;
        }
        Ok(old != size)
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision` + `getNewReplicaSet`: bring the new
    /// ReplicaSet's annotations up to date, or create it (when `create`). Returns the
    /// index of the new ReplicaSet in `rss`.
    async fn sync_revision(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        rss: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Option<usize>> {
        let now = Utc::now();
        let (new_name, max_old) = {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            let (new, olds) = split_new(d, &refs);
            (new.map(name_of), revision::max_revision(&olds))
        };
        let new_revision = max_old + 1;
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let surge = rolling::max_surge(d);
        if let Some(name) = new_name {
            let i = rss
                .iter()
                .position(|r| name_of(r) == name)
                .unwrap_or_default();
            let mut updated = rss[i].clone();
            let changed =
                revision::set_new_rs_annotations(d, &mut updated, new_revision, true, surge);
            let min_ready = d.spec.min_ready_seconds;
            let min_ready_changed =
                updated.spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if changed || min_ready_changed {
                updated.spec.min_ready_seconds = min_ready;
                rss[i] = api
                    .replace(&name, &PostParams::default(), &updated)
                    .await
                    .map_err(Self::err(key, format!("updating replicaset {name}")))?;
            }
            let rev = revision::revision_of(&rss[i]).to_string();
            self.set_deployment_annotation(d, key, revision::REVISION, &rev)
                .await?;
            if status::progress_deadline(d).is_some()
                && status::get(d.status.as_ref(), status::PROGRESSING).is_none()
            {
                let mut s = d.status.clone().unwrap_or_default();
                status::set(
                    &mut s,
                    status::condition(
                        status::PROGRESSING,
                        "True",
                        status::FOUND_NEW_RS,
                        format!("Found new replica set \"{name}\""),
                        now,
                    ),
                );
                self.write_status(d, key, s).await?;
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        let spec = d.spec.clone();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = revision::pod_template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(revision::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(revision::POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", key.name);
        let mut new_rs = ReplicaSet::default();
        new_rs.metadata.name = Some(name.clone());
        new_rs.metadata.namespace = Some(key.namespace.clone());
        new_rs.metadata.owner_references = Some(vec![podutil::controller_ref(
            "apps/v1",
            "Deployment",
            &d.metadata,
        )]);
        new_rs.metadata.labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        new_rs.spec = ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        };
        let size = {
            let refs: Vec<&ReplicaSet> = rss.iter().chain([&new_rs]).collect();
            rolling::new_rs_new_replicas(d, &refs, &new_rs)
        };
        new_rs.spec.replicas = Some(size);
        revision::set_new_rs_annotations(d, &mut new_rs, new_revision, false, surge);
        let created = match api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => rs,
            Err(e) if is_status(&e, 409) => {
                // Ours already (a stale cache)? Otherwise a hash collision: bump
                // collisionCount so the next attempt hashes differently (upstream).
                if let Some(existing) = api
                    .get_opt(&name)
                    .await
                    .map_err(Self::err(key, format!("reading replicaset {name}")))?
                {
                    let ours = podutil::controller_of(&existing.metadata).map(|o| &o.uid)
                        == d.metadata.uid.as_ref();
                    let same = existing
                        .spec
                        .template
                        .as_ref()
                        .is_some_and(|t| revision::equal_ignore_hash(t, &spec.template));
                    if ours && same {
                        return Err(Error::Stale(key.clone()));
                    }
                }
                let mut s = d.status.clone().unwrap_or_default();
                s.collision_count = Some(collision.unwrap_or(0) + 1);
                self.write_status(d, key, s).await?;
                return Err(Error::Stale(key.clone()));
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{name}\": {}",
                    api_message(&e)
                );
                if status::progress_deadline(d).is_some() {
                    let mut s = d.status.clone().unwrap_or_default();
                    status::set(
                        &mut s,
                        status::condition(
                            status::PROGRESSING,
                            "False",
                            status::FAILED_RS_CREATE,
                            msg.clone(),
                            now,
                        ),
                    );
                    self.write_status(d, key, s).await?;
                }
                self.event(d, EventType::Warning, "FailedCreate", "Create", msg)
                    .await;
                return Err(Self::err(key, format!("creating replicaset {name}"))(e));
            }
        };
        if size > 0 {
            self.event(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled up replica set {name} from 0 to {size}"),
            )
            .await;
        }
        rss.push(created);
        self.set_deployment_annotation(d, key, revision::REVISION, &new_revision.to_string())
            .await?;
        if status::progress_deadline(d).is_some() {
            let mut s = d.status.clone().unwrap_or_default();
            status::set(
                &mut s,
                status::condition(
                    status::PROGRESSING,
                    "True",
                    status::NEW_RS_CREATED,
                    format!("Created new replica set \"{name}\""),
                    now,
                ),
            );
            self.write_status(d, key, s).await?;
        }
        Ok(Some(rss.len() - 1))
    }

    /// Upstream `sync`: scaling (and paused) path, no new revision.
    async fn sync(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        rss: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        self.sync_revision(d, key, rss, false).await?;
        let ops = {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            let (new, olds) = split_new(d, &refs);
            rolling::proportional(d, new, &olds)
        };
        for (name, size) in ops {
            self.scale(d, key, rss, &name, size).await?;
        }
        if d.spec.paused.unwrap_or(false) {
            self.cleanup(d, key, rss).await?;
        }
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let (new, _) = split_new(d, &refs);
        let s = status::calculate(&refs, new, d, Utc::now());
        self.write_status(d, key, s).await?;
        Ok(None)
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        rss: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let Some(new_i) = self.sync_revision(d, key, rss, true).await? else {
            return Ok(None);
        };
        let new_name = name_of(&rss[new_i]);
        let next = {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            rolling::reconcile_new(d, &refs, &rss[new_i])
        };
        if let Some(size) = next {
            if self.scale(d, key, rss, &new_name, size).await? {
                return self.sync_rollout_status(d, key, rss).await;
            }
        }
        let ops = {
            let refs: Vec<&ReplicaSet> = rss.iter().collect();
            let olds: Vec<&ReplicaSet> = refs
                .iter()
                .copied()
                .filter(|r| name_of(*r) != new_name)
                .collect();
            let active: Vec<&ReplicaSet> = olds
                .iter()
                .copied()
                .filter(|r| rolling::spec_replicas(r) > 0)
                .collect();
            rolling::reconcile_old(d, &refs, &active, Some(&rss[new_i]))
        };
        let mut scaled = false;
        for (name, size) in ops {
            scaled |= self.scale(d, key, rss, &name, size).await?;
        }
        if !scaled && status::complete(d, d.status.as_ref()) {
            self.cleanup(d, key, rss).await?;
        }
        self.sync_rollout_status(d, key, rss).await
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        rss: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let new_i = self.sync_revision(d, key, rss, false).await?;
        let new_name = new_i.map(|i| name_of(&rss[i]));
        let old_active: Vec<String> = rss
            .iter()
            .filter(|r| Some(name_of(*r)) != new_name && rolling::spec_replicas(r) > 0)
            .map(name_of)
            .collect();
        let mut scaled = false;
        for name in old_active {
            scaled |= self.scale(d, key, rss, &name, 0).await?;
        }
        if scaled || self.old_pods_running(key, rss, new_name.as_deref()) {
            return self.sync_rollout_status(d, key, rss).await;
        }
        let new_i = match new_i {
            Some(i) => i,
            None => match self.sync_revision(d, key, rss, true).await? {
                Some(i) => i,
                None => return Ok(None),
            },
        };
        let name = name_of(&rss[new_i]);
        self.scale(d, key, rss, &name, rolling::deployment_replicas(d))
            .await?;
        if status::complete(d, d.status.as_ref()) {
            self.cleanup(d, key, rss).await?;
        }
        self.sync_rollout_status(d, key, rss).await
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or a pod of theirs
    /// has not finished.
    fn old_pods_running(
        &self,
        key: &ObjectKey,
        rss: &[ReplicaSet],
        new_name: Option<&str>,
    ) -> bool {
        let olds: Vec<&ReplicaSet> = rss
            .iter()
            .filter(|r| Some(name_of(*r).as_str()) != new_name)
            .collect();
        if olds
            .iter()
            .any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let uids: Vec<&str> = olds
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        self.pods.list_namespace(&key.namespace).iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            podutil::controller_of(&p.metadata).is_some_and(|o| uids.contains(&o.uid.as_str()))
                && !matches!(phase, Some("Succeeded") | Some("Failed"))
        })
    }

    /// Upstream `cleanupDeployment`: delete the oldest unused ReplicaSets beyond
    /// revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, key: &ObjectKey, rss: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = d.spec.revision_history_limit else {
            return Ok(());
        };
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let (new, olds) = split_new(d, &refs);
        let new_name = new.map(name_of);
        let mut cleanable: Vec<&ReplicaSet> = olds
            .into_iter()
            .filter(|r| Some(name_of(*r)) != new_name && r.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - limit as i64;
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|r| (revision::revision_of(r), name_of(*r)));
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        for rs in cleanable.into_iter().take(excess as usize) {
            let s = rs.status.clone().unwrap_or_default();
            if s.replicas != 0
                || rolling::spec_replicas(rs) != 0
                || rs.metadata.generation > s.observed_generation
            {
                continue;
            }
            let name = name_of(rs);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(Self::err(key, format!("deleting old replicaset {name}"))(e)),
            }
        }
        Ok(())
    }

    /// Upstream `syncRolloutStatus`, then skiff's automatic rollback.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        key: &ObjectKey,
        rss: &[ReplicaSet],
    ) -> Result<Option<Duration>> {
        let now = Utc::now();
        let refs: Vec<&ReplicaSet> = rss.iter().collect();
        let (new, olds) = split_new(d, &refs);
        let s = status::rollout(&refs, new, &olds, d, now);
        let recheck = status::recheck_after(d, &s, now);
        self.write_status(d, key, s).await?;
        match autorollback::decide(d, new, &olds) {
            Decision::Nothing => {}
            Decision::Remember(rev) => {
                self.set_deployment_annotation(
                    d,
                    key,
                    autorollback::LAST_AVAILABLE_REVISION,
                    &rev.to_string(),
                )
                .await?;
            }
            Decision::Rollback {
                from,
                to,
                template,
                change_cause,
                message,
            } => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
                let mut patch = serde_json::json!({
                    "metadata": {"resourceVersion": d.metadata.resource_version},
                    "spec": {"template": template},
                });
                if let Some(cause) = change_cause {
                    patch["metadata"]["annotations"] =
                        serde_json::json!({revision::CHANGE_CAUSE: cause});
                }
                // A JSON merge patch replaces the template wholesale only if the old one's
                // extra keys are nulled; a strategic-free replace is simpler and exact.
                let mut updated = d.clone();
                updated.spec.template = *template_from(&patch);
                if let Some(cause) =
                    patch["metadata"]["annotations"][revision::CHANGE_CAUSE].as_str()
                {
                    updated
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(revision::CHANGE_CAUSE.into(), cause.into());
                }
                *d = api
                    .replace(&key.name, &PostParams::default(), &updated)
                    .await
                    .map_err(Self::err(
                        key,
                        format!("rolling back from revision {from} to {to}"),
                    ))?;
                self.event(
                    d,
                    EventType::Warning,
                    autorollback::REASON,
                    "Rollback",
                    message,
                )
                .await;
            }
        }
        Ok(recheck)
    }
}

fn template_from(patch: &serde_json::Value) -> Box<k8s_openapi::api::core::v1::PodTemplateSpec> {
    Box::new(serde_json::from_value(patch["spec"]["template"].clone()).unwrap_or_default())
}

/// The ReplicaSet of the current template and the others (upstream FindNewReplicaSet /
/// FindOldReplicaSets).
fn split_new<'a>(
    d: &Deployment,
    rss: &[&'a ReplicaSet],
) -> (Option<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
    let new = revision::find_new(d, rss);
    let new_name = new.map(name_of);
    let olds = rss
        .iter()
        .copied()
        .filter(|r| Some(name_of(*r)) != new_name)
        .collect();
    (new, olds)
}
