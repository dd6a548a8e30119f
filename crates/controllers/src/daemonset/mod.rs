//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node,
//! pinned there with a `matchFields metadata.name In [node]` node affinity term so the
//! default scheduler binds it (as upstream since 1.12); a ControllerRevision
//! `<ds>-<hash>` per template revision, whose hash labels the pods
//! (`controller-revision-hash`, plus `pod-template-generation`); RollingUpdate
//! (maxUnavailable / maxSurge) and OnDelete; status counts for `kubectl get ds` and
//! `kubectl rollout status`; events as upstream's `daemonset-controller`.
//!
//! `decide.rs` decides; this file reads the caches and acts.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use crate::events::Recorder;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::EventType;

use crate::replicaset::expectations::Expectations;
use crate::replicaset::podutil;
use crate::replicaset::{api_message, is_status};
use crate::revisions;
use crate::Context;
use decide::{DeleteReason, CONTROLLER_REVISION_HASH, POD_TEMPLATE_GENERATION};

pub const COMPONENT: &str = "daemonset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("daemonset {key}: {context}: {source}")]
    Kube {
        key: ObjectKey,
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("daemonset {key}: {context}: {message}")]
    Sync {
        key: ObjectKey,
        context: String,
        message: String,
    },
}

struct Controller {
    client: kube::Client,
    daemonsets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    recorder: Recorder,
    expectations: Expectations,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let daemonsets = ctx.informers.informer::<DaemonSet>();
    let pods = ctx.informers.informer::<Pod>();
    let nodes = ctx.informers.informer::<Node>();
    let revisions = ctx.informers.informer::<ControllerRevision>();
    let mut ds_changes = daemonsets.subscribe();
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    let workers = ctx.options.workers;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        daemonsets,
        pods,
        nodes,
        revisions,
        recorder: ctx.recorder(COMPONENT),
        expectations: Expectations::default(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let enqueue_all = |c: &Controller, q: &WorkQueue<ObjectKey>| {
            c.daemonsets
                .list()
                .iter()
                .for_each(|ds| q.add(ObjectKey::of(ds.as_ref())))
        };
        let (q, cc) = (queue.clone(), c.clone());
        let ds_feed = async move {
            while let Some(change) = ds_changes.recv().await {
                match change {
                    Change::Applied(ds) | Change::Deleted(ds) => q.add(ObjectKey::of(ds.as_ref())),
                    Change::Resync => enqueue_all(&cc, &q),
                }
            }
        };
        let (q, cc) = (queue.clone(), c.clone());
        let pod_feed = async move {
            while let Some(change) = pod_changes.recv().await {
                match change {
                    Change::Applied(p) | Change::Deleted(p) => {
                        if let Some(owner) = podutil::controller_of(&p.metadata) {
                            if owner.kind == "DaemonSet" {
                                let ns = p.metadata.namespace.clone().unwrap_or_default();
                                q.add(ObjectKey::new(&ns, &owner.name));
                            }
                        }
                    }
                    Change::Resync => enqueue_all(&cc, &q),
                }
            }
        };
        // Any node change (labels, taints, arrival, removal) may change eligibility.
        let (q, cc) = (queue.clone(), c.clone());
        let node_feed = async move {
            while node_changes.recv().await.is_some() {
                enqueue_all(&cc, &q);
            }
        };
        let cc = c.clone();
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let c = cc.clone();
            async move { c.reconcile(&key).await }
        });
        c.daemonsets.wait_synced().await;
        c.pods.wait_synced().await;
        c.nodes.wait_synced().await;
        c.revisions.wait_synced().await;
        futures::join!(ds_feed, pod_feed, node_feed, work);
    }
    .boxed()
}

impl Controller {
    async fn event(
        &self,
        ds: &DaemonSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        crate::workload::record(&self.recorder, ds, type_, reason, action, note);
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(ds) = self.daemonsets.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes the pods and revisions.
            return Ok(None);
        }
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let namespace_pods = self.pods.list_namespace(&key.namespace);
        let owned: Vec<&Pod> = namespace_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| podutil::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let Some(hash) = self.ensure_revision(&ds, key, &owned).await? else {
            // A hash collision was recorded in status; the update requeues us.
            return Ok(None);
        };
        let nodes = self.nodes.list();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let now = Utc::now();
        let mut failure: Option<String> = None;
        let satisfied = self
            .expectations
            .satisfied(key, |name| self.pods.get(&key.namespace, name));
        if satisfied {
            let plan = decide::plan(&ds, &node_refs, &owned, &hash, now);
            if let Some(f) = self.delete_pods(&ds, key, &owned, &plan.delete).await {
                failure.get_or_insert(f);
            }
            if let Some(f) = self.create_pods(&ds, key, &hash, &plan.create).await {
                failure.get_or_insert(f);
            }
        }

        let status = decide::status(&ds, &node_refs, &owned, &hash, now);
        if ds.status.as_ref() != Some(&status) {
            let mut updated = (*ds).clone();
            updated.status = Some(status);
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => return Ok(None),
                Err(source) => {
                    return Err(Error::Kube {
                        key: key.clone(),
                        context: "updating status".into(),
                        source,
                    })
                }
            }
        }
        if let Some(message) = failure {
            return Err(Error::Sync {
                key: key.clone(),
                context: "syncing daemon pods".into(),
                message,
            });
        }
        let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
        if min_ready > 0 {
            return Ok(owned
                .iter()
                .filter_map(|p| podutil::becomes_available_in(p, min_ready, now))
                .min());
        }
        Ok(None)
    }

    /// Make sure the ControllerRevision of the current template exists and carries the
    /// highest revision number; prune history beyond revisionHistoryLimit (shared with
    /// the StatefulSet controller in `crate::revisions`). Returns the hash, or None after
    /// recording a hash collision.
    async fn ensure_revision(
        &self,
        ds: &DaemonSet,
        key: &ObjectKey,
        pods: &[&Pod],
    ) -> Result<Option<String>, Error> {
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let owner = revisions::Owner {
            kind: "DaemonSet",
            meta: &ds.metadata,
            template: &ds.spec.template,
            collision_count: collision,
            history_limit: ds.spec.revision_history_limit.unwrap_or(10),
            annotations: None,
        };
        let ensured = revisions::ensure(&self.client, &self.revisions, &owner, pods, &[])
            .await
            .map_err(|e| Error::Kube {
                key: key.clone(),
                context: e.context,
                source: e.source,
            })?;
        match ensured {
            revisions::Ensured::Current { hash, .. } => Ok(Some(hash)),
            revisions::Ensured::Collision => {
                // Same name, other template: bump collisionCount as upstream.
                let mut updated = ds.clone();
                let mut status = updated.status.clone().unwrap_or_default();
                status.collision_count = Some(collision.unwrap_or(0) + 1);
                updated.status = Some(status);
                let dsapi: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.namespace);
                match dsapi
                    .replace_status(&key.name, &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(e) if is_status(&e, 409) => Ok(None),
                    Err(source) => Err(Error::Kube {
                        key: key.clone(),
                        context: "recording a hash collision".into(),
                        source,
                    }),
                }
            }
        }
    }

    /// The daemon pod for `node`: the template with the revision labels, the daemon
    /// tolerations, and required node affinity pinned to the node by name.
    fn pod_for_node(&self, ds: &DaemonSet, hash: &str, node: &str) -> Pod {
        let template = ds.spec.template.clone();
        let tmeta = template.metadata.unwrap_or_default();
        let mut pod = Pod::default();
        pod.metadata.generate_name =
            Some(format!("{}-", ds.metadata.name.clone().unwrap_or_default()));
        pod.metadata.namespace = ds.metadata.namespace.clone();
        let mut labels = tmeta.labels.unwrap_or_default();
        labels.insert(CONTROLLER_REVISION_HASH.into(), hash.into());
        labels.insert(
            POD_TEMPLATE_GENERATION.into(),
            ds.metadata.generation.unwrap_or(0).to_string(),
        );
        pod.metadata.labels = Some(labels);
        pod.metadata.annotations = tmeta.annotations;
        pod.metadata.finalizers = tmeta.finalizers;
        pod.metadata.owner_references = Some(vec![podutil::controller_ref(
            "apps/v1",
            "DaemonSet",
            &ds.metadata,
        )]);
        let mut spec = template.spec.unwrap_or_default();
        spec.tolerations = Some(decide::daemon_tolerations(&spec));
        let by_name = NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        };
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        // Upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`: every term's matchFields
        // becomes the node name; the expressions stay (the node satisfies them).
        let required = node_affinity
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default);
        if required.node_selector_terms.is_empty() {
            required
                .node_selector_terms
                .push(NodeSelectorTerm::default());
        }
        for term in &mut required.node_selector_terms {
            term.match_fields = Some(vec![by_name.clone()]);
        }
        pod.spec = Some(spec);
        pod
    }

    async fn create_pods(
        &self,
        ds: &DaemonSet,
        key: &ObjectKey,
        hash: &str,
        nodes: &[String],
    ) -> Option<String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut first_error = None;
        // Slow start (1, 2, 4, ...) as upstream: a refused template costs one error.
        for batch in crate::replicaset::decide::slow_start_batches(nodes.len())
            .into_iter()
            .scan(0usize, |start, n| {
                let range = *start..*start + n;
                *start += n;
                Some(range)
            })
        {
            let results = futures::future::join_all(nodes[batch].iter().map(|node| {
                let (api, pod) = (api.clone(), self.pod_for_node(ds, hash, node));
                async move { api.create(&PostParams::default(), &pod).await }
            }))
            .await;
            for result in results {
                match result {
                    Ok(pod) => {
                        let name = pod.metadata.name.unwrap_or_default();
                        self.expectations.created(key, &name);
                        self.event(
                            ds,
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
                            ds,
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
            if first_error.is_some() {
                break;
            }
        }
        first_error
    }

    async fn delete_pods(
        &self,
        ds: &DaemonSet,
        key: &ObjectKey,
        owned: &[&Pod],
        victims: &[(String, String, DeleteReason)],
    ) -> Option<String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        for (name, node, reason) in victims {
            if *reason == DeleteReason::Failed {
                self.event(
                    ds,
                    EventType::Warning,
                    "FailedDaemonPod",
                    "Delete",
                    format!(
                        "Found failed daemon pod {}/{name} on node {node}, will try to kill it",
                        key.namespace
                    ),
                )
                .await;
            }
        }
        let results = futures::future::join_all(victims.iter().map(|(n, _, _)| {
            let api = api.clone();
            async move { api.delete(n, &DeleteParams::default()).await }
        }))
        .await;
        let mut failure = None;
        for ((name, _, _), result) in victims.iter().zip(results) {
            match result {
                Ok(_) => {
                    let uid = owned
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
                        .and_then(|p| p.metadata.uid.clone())
                        .unwrap_or_default();
                    self.expectations.deleted(key, name, &uid);
                    self.event(
                        ds,
                        EventType::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {name}"),
                    )
                    .await;
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    let message = api_message(&e);
                    self.event(
                        ds,
                        EventType::Warning,
                        "FailedDelete",
                        "Delete",
                        format!("Error deleting: {message}"),
                    )
                    .await;
                    failure.get_or_insert(message);
                }
            }
        }
        failure
    }
}
