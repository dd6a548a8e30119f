//! The disruption controller (upstream `disruption-controller`): keeps every
//! PodDisruptionBudget's status current — expectedPods, currentHealthy, desiredHealthy,
//! disruptionsAllowed, observedGeneration, the DisruptionAllowed condition — and drops
//! entries of `status.disruptedPods` once the evicted pod is being deleted (or after two
//! minutes). The API server's eviction subresource is the other half: it refuses an
//! eviction when disruptionsAllowed is 0, and otherwise decrements it and records the
//! pod in disruptedPods in the same status write, so concurrent evictions (kubectl drain
//! evicts in parallel) cannot overrun the budget before this controller recounts.
//!
//! Reads come from the shared informers (pods, budgets, and the controllers whose scale
//! a percentage or maxUnavailable budget needs); the decision is [`decide`].

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use crate::events::Recorder;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use informers::{Change, Informer, ObjectKey, WorkQueue};

use crate::replicaset::podutil::{controller_of, selector_matches};
use crate::Context;

pub const COMPONENT: &str = "disruption-controller";

#[derive(Clone)]
struct Controller {
    client: kube::Client,
    recorder: Recorder,
    pdbs: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    replicasets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    statefulsets: Informer<StatefulSet>,
}

/// Pods a budget covers: same namespace, matched by its selector. In policy/v1 a null
/// selector selects nothing and an empty one selects every pod of the namespace.
fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|selector| selector_matches(selector, pod.metadata.labels.as_ref()))
}

fn covered_pods(pdb: &PodDisruptionBudget, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    pods.iter().filter(|p| covers(pdb, p)).cloned().collect()
}

impl Controller {
    /// The controller whose scale counts for a pod's controller reference, as upstream's
    /// finders: a ReplicaSet (or its Deployment), a StatefulSet. skiff does not serve
    /// ReplicationControllers, so a pod claiming one has no known controller.
    fn scale_of(&self, namespace: &str, owner: &OwnerReference) -> Option<(String, i32)> {
        let group = owner.api_version.split('/').next().unwrap_or("");
        match (owner.kind.as_str(), group) {
            ("ReplicaSet", "apps") => {
                let rs = self.replicasets.get(namespace, &owner.name)?;
                if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                    return None;
                }
                if let Some(d) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                    let dep = self.deployments.get(namespace, &d.name)?;
                    if dep.metadata.uid.as_deref() != Some(d.uid.as_str()) {
                        return None;
                    }
                    let replicas = dep.spec.replicas.unwrap_or(1);
                    return Some((d.uid.clone(), replicas));
                }
                let replicas = rs.spec.replicas.unwrap_or(1);
                Some((owner.uid.clone(), replicas))
            }
            ("StatefulSet", "apps") => {
                let ss = self.statefulsets.get(namespace, &owner.name)?;
                (ss.metadata.uid.as_deref() == Some(owner.uid.as_str())).then(|| {
                    let replicas = ss.spec.replicas.unwrap_or(1);
                    (owner.uid.clone(), replicas)
                })
            }
            _ => None,
        }
    }

    async fn event(&self, pdb: &PodDisruptionBudget, reason: &str, note: String) {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &pdb.object_ref(&())).await {
            tracing::warn!("pdb {}: recording event {reason}: {e}", ObjectKey::of(pdb));
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Duration>, String> {
        let Some(pdb) = self.pdbs.get_key(key) else {
            return Ok(None);
        };
        if pdb.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let in_ns = self.pods.list_namespace(&key.namespace);
        let covered = covered_pods(&pdb, &in_ns);
        let refs: Vec<&Pod> = covered.iter().map(|p| p.as_ref()).collect();
        let scale = || decide::expected_scale(&refs, &|o| self.scale_of(&key.namespace, o));
        let now = Utc::now();
        let (status, recheck, outcome) = decide::desired_status(&pdb, &refs, &scale, now);
        if let Err(e) = &outcome {
            self.event(&pdb, e.reason, e.message.clone()).await;
        }
        if pdb.status.as_ref() != Some(&status) {
            let mut updated = (*pdb).clone();
            updated.status = Some(status);
            let api: Api<PodDisruptionBudget> =
                Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                // A conflict means an eviction or a newer spec wrote first: the informer
                // brings the newer object and the key comes back; retry with back-off.
                Err(e) => return Err(format!("pdb {key}: updating status: {e}")),
            }
        }
        if outcome.is_err() {
            // Upstream retries a failed sync; the scale may appear with the next change.
            return Ok(Some(Duration::from_secs(30)));
        }
        Ok(recheck.map(|at| (at - now).to_std().unwrap_or_default() + Duration::from_secs(1)))
    }
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let ctl = Controller {
        client: ctx.client.clone(),
        recorder: ctx.recorder(COMPONENT),
        pdbs: ctx.informers.informer::<PodDisruptionBudget>(),
        pods: ctx.informers.informer::<Pod>(),
        replicasets: ctx.informers.informer::<ReplicaSet>(),
        deployments: ctx.informers.informer::<Deployment>(),
        statefulsets: ctx.informers.informer::<StatefulSet>(),
    };
    let mut pdb_changes = ctl.pdbs.subscribe();
    let mut pod_changes = ctl.pods.subscribe();
    let mut rs_changes = ctl.replicasets.subscribe();
    let mut deploy_changes = ctl.deployments.subscribe();
    let mut sts_changes = ctl.statefulsets.subscribe();
    let workers = ctx.options.workers;
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    async move {
        let enqueue_all = {
            let (q, pdbs) = (queue.clone(), ctl.pdbs.clone());
            move || {
                pdbs.list()
                    .iter()
                    .for_each(|p| q.add(ObjectKey::of(p.as_ref())))
            }
        };
        // Budgets in a namespace covering a pod's labels.
        let enqueue_for_pod = {
            let (q, pdbs) = (queue.clone(), ctl.pdbs.clone());
            move |pod: &Pod| {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                for pdb in pdbs.list_namespace(ns) {
                    if covers(&pdb, pod) {
                        q.add(ObjectKey::of(pdb.as_ref()));
                    }
                }
            }
        };
        // A controller's scale changed: every budget of its namespace may count it.
        let enqueue_namespace = {
            let (q, pdbs) = (queue.clone(), ctl.pdbs.clone());
            move |ns: &str| {
                pdbs.list_namespace(ns)
                    .iter()
                    .for_each(|p| q.add(ObjectKey::of(p.as_ref())))
            }
        };
        let feed_pdbs = {
            let (q, all) = (queue.clone(), enqueue_all.clone());
            async move {
                while let Some(change) = pdb_changes.recv().await {
                    match change {
                        Change::Applied(p) => q.add(ObjectKey::of(p.as_ref())),
                        Change::Deleted(_) => {}
                        Change::Resync => all(),
                    }
                }
            }
        };
        let feed_pods = {
            let (for_pod, all) = (enqueue_for_pod.clone(), enqueue_all.clone());
            async move {
                while let Some(change) = pod_changes.recv().await {
                    match change {
                        Change::Applied(p) | Change::Deleted(p) => for_pod(&p),
                        Change::Resync => all(),
                    }
                }
            }
        };
        macro_rules! feed_scale {
            ($sub:ident) => {{
                let (ns, all) = (enqueue_namespace.clone(), enqueue_all.clone());
                async move {
                    while let Some(change) = $sub.recv().await {
                        match change {
                            Change::Applied(o) | Change::Deleted(o) => {
                                ns(o.metadata.namespace.as_deref().unwrap_or(""))
                            }
                            Change::Resync => all(),
                        }
                    }
                }
            }};
        }
        let feed_rs = feed_scale!(rs_changes);
        let feed_deploy = feed_scale!(deploy_changes);
        let feed_sts = feed_scale!(sts_changes);
        let work = queue.run(workers, COMPONENT, move |key: ObjectKey| {
            let ctl = ctl.clone();
            async move { ctl.reconcile(&key).await }
        });
        futures::join!(feed_pdbs, feed_pods, feed_rs, feed_deploy, feed_sts, work);
    }
    .boxed()
}
