//! The PersistentVolume controller (upstream `persistentvolume-binder` with the
//! `pvc-protection` and `pv-protection` controllers folded in) and the binding half of
//! k3s's local-path-provisioner: binds claims to matching volumes (static binding,
//! pre-binding by `volumeName` or `claimRef`), provisions `pvc-<uid>` hostPath volumes
//! pinned to the node the scheduler selected for WaitForFirstConsumer claims of a
//! `rancher.io/local-path` class, releases and reclaims volumes whose claim is gone, and
//! keeps the protection finalizers. Making and removing the directories on the node is
//! the node agent's job (not built yet): the volume objects are complete without it.
//!
//! `decide.rs` decides; this file reads the caches, acts, and maps changes to keys.

pub mod decide;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use crate::events::Recorder;
use crate::replicaset::is_status;
use crate::Context;
use api::volumes::{
    claim_class, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER,
    ANN_STORAGE_PROVISIONER,
};
use decide::{Action, ClaimView, Note, Source, VolumeView, PVC_PROTECTION, PV_PROTECTION};

/// Upstream's reporting component.
pub const COMPONENT: &str = "persistentvolume-controller";
/// The component the provisioning events come from (upstream: the provisioner's pod).
pub const PROVISIONER_COMPONENT: &str = "rancher.io/local-path";

#[derive(Debug, thiserror::Error)]
#[error("{key}: {context}: {source}")]
pub struct Error {
    key: Key,
    context: String,
    #[source]
    source: kube::Error,
}

/// One unit of work: a claim or a volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Claim(ObjectKey),
    Volume(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Claim(k) => write!(f, "persistentvolumeclaim {k}"),
            Key::Volume(n) => write!(f, "persistentvolume {n}"),
        }
    }
}

struct Controller {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    pods: Informer<Pod>,
    recorder: Recorder,
    provisioner_recorder: Recorder,
    storage_root: String,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let claims = ctx.informers.informer::<PersistentVolumeClaim>();
    let volumes = ctx.informers.informer::<PersistentVolume>();
    let classes = ctx.informers.informer::<StorageClass>();
    let pods = ctx.informers.informer::<Pod>();
    let mut claim_changes = claims.subscribe();
    let mut volume_changes = volumes.subscribe();
    let mut class_changes = classes.subscribe();
    let mut pod_changes = pods.subscribe();
    let workers = ctx.options.workers;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        claims,
        volumes,
        classes,
        pods,
        recorder: ctx.recorder(COMPONENT),
        provisioner_recorder: ctx.recorder(PROVISIONER_COMPONENT),
        storage_root: ctx.options.local_storage_path.display().to_string(),
    });
    let queue: WorkQueue<Key> = WorkQueue::new();
    async move {
        let (q, cc) = (queue.clone(), c.clone());
        let claim_feed = async move {
            while let Some(change) = claim_changes.recv().await {
                match change {
                    Change::Applied(claim) | Change::Deleted(claim) => {
                        cc.enqueue_claim_and_volumes(&q, &claim)
                    }
                    Change::Resync => cc.enqueue_all(&q),
                }
            }
        };
        let (q, cc) = (queue.clone(), c.clone());
        let volume_feed = async move {
            while let Some(change) = volume_changes.recv().await {
                match change {
                    Change::Applied(pv) | Change::Deleted(pv) => {
                        q.add(Key::Volume(pv.metadata.name.clone().unwrap_or_default()));
                        match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                            Some(r) => q.add(Key::Claim(ObjectKey::new(
                                r.namespace.as_deref().unwrap_or(""),
                                r.name.as_deref().unwrap_or(""),
                            ))),
                            // A free volume may be what a pending claim waits for.
                            None => cc.enqueue_unbound_claims(&q),
                        }
                    }
                    Change::Resync => cc.enqueue_all(&q),
                }
            }
        };
        let (q, cc) = (queue.clone(), c.clone());
        let class_feed = async move {
            while class_changes.recv().await.is_some() {
                cc.enqueue_unbound_claims(&q);
            }
        };
        // Pods matter to claims being deleted (pvc-protection waits for their users).
        let (q, cc) = (queue.clone(), c.clone());
        let pod_feed = async move {
            while let Some(change) = pod_changes.recv().await {
                match change {
                    Change::Applied(p) | Change::Deleted(p) => {
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        for name in decide::pod_claim_names(&p) {
                            let deleting = cc
                                .claims
                                .get(&ns, &name)
                                .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
                            if deleting {
                                q.add(Key::Claim(ObjectKey::new(&ns, &name)));
                            }
                        }
                    }
                    Change::Resync => {
                        for claim in cc.claims.list() {
                            if claim.metadata.deletion_timestamp.is_some() {
                                q.add(Key::Claim(ObjectKey::of(claim.as_ref())));
                            }
                        }
                    }
                }
            }
        };
        let cc = c.clone();
        let work = queue.run(workers, COMPONENT, move |key: Key| {
            let cc = cc.clone();
            async move {
                match &key {
                    Key::Claim(k) => cc.sync_claim(&key, k).await,
                    Key::Volume(n) => cc.sync_volume(&key, n).await,
                }
            }
        });
        c.claims.wait_synced().await;
        c.volumes.wait_synced().await;
        c.classes.wait_synced().await;
        c.pods.wait_synced().await;
        futures::future::join5(claim_feed, volume_feed, class_feed, pod_feed, work).await;
    }
    .boxed()
}

impl Controller {
    fn enqueue_claim_and_volumes(&self, q: &WorkQueue<Key>, claim: &PersistentVolumeClaim) {
        let key = ObjectKey::of(claim);
        q.add(Key::Claim(key.clone()));
        // Volumes that name the claim (bound, or provisioned and not yet bound).
        for pv in self.volumes.list() {
            let names_claim = pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| {
                    r.name.as_deref() == Some(key.name.as_str())
                        && r.namespace.as_deref().unwrap_or("") == key.namespace
                });
            if names_claim {
                q.add(Key::Volume(pv.metadata.name.clone().unwrap_or_default()));
            }
        }
    }

    fn enqueue_unbound_claims(&self, q: &WorkQueue<Key>) {
        for claim in self.claims.list() {
            let unbound = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_none_or(str::is_empty);
            if unbound && claim.metadata.deletion_timestamp.is_none() {
                q.add(Key::Claim(ObjectKey::of(claim.as_ref())));
            }
        }
    }

    fn enqueue_all(&self, q: &WorkQueue<Key>) {
        for claim in self.claims.list() {
            q.add(Key::Claim(ObjectKey::of(claim.as_ref())));
        }
        for pv in self.volumes.list() {
            q.add(Key::Volume(pv.metadata.name.clone().unwrap_or_default()));
        }
    }

    async fn sync_claim(&self, key: &Key, k: &ObjectKey) -> Result<Option<Duration>, Error> {
        let Some(claim) = self.claims.get_key(k) else {
            return Ok(None);
        };
        let class_name = claim_class(&claim).to_string();
        let class = (!class_name.is_empty())
            .then(|| self.classes.get("", &class_name))
            .flatten();
        let all_volumes = self.volumes.list();
        let volumes: Vec<&PersistentVolume> = all_volumes.iter().map(Arc::as_ref).collect();
        let in_use = claim.metadata.deletion_timestamp.is_some()
            && self
                .pods
                .list_namespace(&k.namespace)
                .iter()
                .any(|p| decide::pod_uses_claim(p, &k.name));
        let actions = decide::decide_claim(&ClaimView {
            claim: &claim,
            class: class.as_deref(),
            volumes: &volumes,
            in_use,
            storage_root: &self.storage_root,
        });
        let mut act = Acting {
            c: self,
            key,
            claim: Some((*claim).clone()),
            volumes: all_volumes
                .iter()
                .filter_map(|p| Some((p.metadata.name.clone()?, (**p).clone())))
                .collect(),
        };
        for a in actions {
            act.apply(a).await?;
        }
        Ok(None)
    }

    async fn sync_volume(&self, key: &Key, name: &str) -> Result<Option<Duration>, Error> {
        let Some(pv) = self.volumes.get("", name) else {
            return Ok(None);
        };
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.clone());
        let claim = claim_ref.as_ref().and_then(|r| {
            self.claims.get(
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
            )
        });
        let actions = decide::decide_volume(&VolumeView {
            volume: &pv,
            claim: claim.as_deref(),
        });
        let releases = actions.iter().any(|a| {
            matches!(
                a,
                Action::VolumePhase {
                    phase: "Released",
                    ..
                } | Action::DeleteVolume { .. }
            )
        });
        if releases {
            // Never release on the cache's word alone: a claim created a moment ago may
            // not be in it yet (upstream checks the API server too).
            if let Some(r) = &claim_ref {
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(self.client.clone(), r.namespace.as_deref().unwrap_or(""));
                let live = api
                    .get_opt(r.name.as_deref().unwrap_or(""))
                    .await
                    .map_err(|e| Error {
                        key: key.clone(),
                        context: "checking whether the bound claim still exists".into(),
                        source: e,
                    })?;
                if live.is_some_and(|c| c.metadata.uid == r.uid) {
                    return Ok(Some(Duration::from_secs(1)));
                }
            }
        }
        let mut act = Acting {
            c: self,
            key,
            claim: claim.map(|c| (*c).clone()),
            volumes: HashMap::from([(name.to_string(), (*pv).clone())]),
        };
        for a in actions {
            act.apply(a).await?;
        }
        Ok(None)
    }
}

/// The objects of one sync as they are after each write, so that consecutive writes to
/// the same object carry its latest resourceVersion (and a stale cache ends in a 409).
struct Acting<'a> {
    c: &'a Controller,
    key: &'a Key,
    claim: Option<PersistentVolumeClaim>,
    volumes: HashMap<String, PersistentVolume>,
}

fn event_of(note: &Note) -> Event {
    Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.message.clone()),
        action: note.reason.to_string(),
        secondary: None,
    }
}

impl Acting<'_> {
    fn err(&self, context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error + '_ {
        let context = context.into();
        move |source| Error {
            key: self.key.clone(),
            context,
            source,
        }
    }

    fn claims_api(&self, claim: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(
            self.c.client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or(""),
        )
    }

    async fn apply(&mut self, action: Action) -> Result<(), Error> {
        let volumes_api: Api<PersistentVolume> = Api::all(self.c.client.clone());
        let pp = PostParams::default();
        match action {
            Action::ClaimEvent(note) => {
                if let Some(claim) = &self.claim {
                    let recorder = match note.source {
                        Source::Controller => &self.c.recorder,
                        Source::Provisioner => &self.c.provisioner_recorder,
                    };
                    if let Err(e) = recorder
                        .publish(&event_of(&note), &claim.object_ref(&()))
                        .await
                    {
                        tracing::warn!("{}: recording {}: {e}", self.key, note.reason);
                    }
                }
            }
            Action::VolumeEvent { volume, note } => {
                if let Some(pv) = self.volumes.get(&volume) {
                    if let Err(e) = self
                        .c
                        .recorder
                        .publish(&event_of(&note), &pv.object_ref(&()))
                        .await
                    {
                        tracing::warn!("{}: recording {}: {e}", self.key, note.reason);
                    }
                }
            }
            Action::AddClaimFinalizer
            | Action::RemoveClaimFinalizer
            | Action::AnnotateClaimProvisioner(_)
            | Action::BindClaim { .. } => {
                let Some(mut claim) = self.claim.clone() else {
                    return Ok(());
                };
                let what = format!("{action:?}");
                let meta = &mut claim.metadata;
                match action {
                    Action::AddClaimFinalizer => meta
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .push(PVC_PROTECTION.to_string()),
                    Action::RemoveClaimFinalizer => {
                        if let Some(f) = meta.finalizers.as_mut() {
                            f.retain(|x| x != PVC_PROTECTION);
                        }
                    }
                    Action::AnnotateClaimProvisioner(p) => {
                        let a = meta.annotations.get_or_insert_with(Default::default);
                        a.insert(ANN_STORAGE_PROVISIONER.into(), p.clone());
                        a.insert(ANN_BETA_STORAGE_PROVISIONER.into(), p);
                    }
                    Action::BindClaim {
                        volume,
                        bound_by_controller,
                    } => {
                        let a = meta.annotations.get_or_insert_with(Default::default);
                        a.insert(ANN_BIND_COMPLETED.into(), "yes".into());
                        if bound_by_controller {
                            a.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                        }
                        claim.spec.get_or_insert_with(Default::default).volume_name = Some(volume);
                    }
                    _ => unreachable!("matched above"),
                }
                let name = claim.metadata.name.clone().unwrap_or_default();
                let api = self.claims_api(&claim);
                let updated = api
                    .replace(&name, &pp, &claim)
                    .await
                    .map_err(self.err(format!("updating the claim ({what})")))?;
                self.claim = Some(updated);
            }
            Action::ClaimBound { volume } => {
                let (Some(mut claim), Some(pv)) = (self.claim.clone(), self.volumes.get(&volume))
                else {
                    return Ok(());
                };
                let status = claim.status.get_or_insert_with(Default::default);
                status.phase = Some("Bound".into());
                status.capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone());
                status.access_modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
                self.replace_claim_status(claim, "marking the claim Bound")
                    .await?;
            }
            Action::ClaimPhase(phase) => {
                let Some(mut claim) = self.claim.clone() else {
                    return Ok(());
                };
                claim.status.get_or_insert_with(Default::default).phase = Some(phase.into());
                self.replace_claim_status(claim, format!("setting the claim's phase {phase}"))
                    .await?;
            }
            Action::CreateVolume(pv) => {
                let name = pv.metadata.name.clone().unwrap_or_default();
                match volumes_api.create(&pp, &pv).await {
                    Ok(created) => {
                        self.volumes.insert(name, created);
                    }
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => {
                        return Err(self.err(format!("creating volume {name}"))(e));
                    }
                }
            }
            Action::BindVolume {
                volume,
                bound_by_controller,
            } => {
                let (Some(claim), Some(mut pv)) =
                    (self.claim.clone(), self.volumes.get(&volume).cloned())
                else {
                    return Ok(());
                };
                let spec = pv.spec.get_or_insert_with(Default::default);
                spec.claim_ref = Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: claim.metadata.namespace.clone(),
                    name: claim.metadata.name.clone(),
                    uid: claim.metadata.uid.clone(),
                    resource_version: claim.metadata.resource_version.clone(),
                    ..Default::default()
                });
                if bound_by_controller {
                    pv.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                }
                self.replace_volume(pv, format!("binding volume {volume} to the claim"))
                    .await?;
            }
            Action::UnbindVolume { volume } => {
                let Some(mut pv) = self.volumes.get(&volume).cloned() else {
                    return Ok(());
                };
                if let Some(s) = pv.spec.as_mut() {
                    s.claim_ref = None;
                }
                if let Some(a) = pv.metadata.annotations.as_mut() {
                    a.remove(ANN_BOUND_BY_CONTROLLER);
                }
                let pv = self
                    .replace_volume(pv, format!("unbinding volume {volume}"))
                    .await?;
                let mut pv = pv;
                pv.status.get_or_insert_with(Default::default).phase = Some("Available".into());
                self.replace_volume_status(pv, "marking the volume Available")
                    .await?;
            }
            Action::VolumePhase { volume, phase } => {
                let Some(mut pv) = self.volumes.get(&volume).cloned() else {
                    return Ok(());
                };
                pv.status.get_or_insert_with(Default::default).phase = Some(phase.into());
                self.replace_volume_status(pv, format!("setting volume {volume} {phase}"))
                    .await?;
            }
            Action::DeleteVolume { volume, uid } => {
                // Hook for the node agent: once it exists, a local-path volume's directory
                // (spec.hostPath.path on the node of its nodeAffinity) is removed before
                // the object goes, as local-path-provisioner's helper pod does. Until then
                // the object is deleted and the directory, never created, needs nothing.
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match volumes_api.delete(&volume, &dp).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(self.err(format!("deleting volume {volume}"))(e)),
                }
            }
            Action::AddVolumeFinalizer { volume } | Action::RemoveVolumeFinalizer { volume } => {
                let Some(mut pv) = self.volumes.get(&volume).cloned() else {
                    return Ok(());
                };
                let f = pv.metadata.finalizers.get_or_insert_with(Vec::new);
                if f.iter().any(|x| x == PV_PROTECTION) {
                    f.retain(|x| x != PV_PROTECTION);
                } else {
                    f.push(PV_PROTECTION.to_string());
                }
                self.replace_volume(
                    pv,
                    format!("updating volume {volume}'s protection finalizer"),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn replace_claim_status(
        &mut self,
        claim: PersistentVolumeClaim,
        context: impl Into<String>,
    ) -> Result<(), Error> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let api = self.claims_api(&claim);
        let updated = api
            .replace_status(&name, &PostParams::default(), &claim)
            .await
            .map_err(self.err(context))?;
        self.claim = Some(updated);
        Ok(())
    }

    async fn replace_volume(
        &mut self,
        pv: PersistentVolume,
        context: impl Into<String>,
    ) -> Result<PersistentVolume, Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.c.client.clone());
        let updated = api
            .replace(&name, &PostParams::default(), &pv)
            .await
            .map_err(self.err(context))?;
        self.volumes.insert(name, updated.clone());
        Ok(updated)
    }

    async fn replace_volume_status(
        &mut self,
        pv: PersistentVolume,
        context: impl Into<String>,
    ) -> Result<(), Error> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.c.client.clone());
        let updated = api
            .replace_status(&name, &PostParams::default(), &pv)
            .await
            .map_err(self.err(context))?;
        self.volumes.insert(name, updated);
        Ok(())
    }
}
