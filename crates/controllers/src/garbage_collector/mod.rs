//! The garbage collector: deletes objects whose owners (ownerReferences) are all gone, and
//! carries out the foreground and orphan propagation the API server starts on a delete
//! (`propagationPolicy=Foreground` adds the `foregroundDeletion` finalizer, `Orphan` adds
//! `orphan`; background deletes just remove the owner, and its dependents follow here).
//!
//! - [`graph`] keeps uid -> (metadata-only) node with owners and dependents, for every
//!   kind the API serves ([`sources`]: shared typed informers where the controllers have
//!   them, metadata-only watches otherwise).
//! - [`decide`] says what to do with one object, purely.
//! - This file acts: two work queues of uids, as upstream's `attemptToDelete` and
//!   `attemptToOrphan`. Every deletion is checked against the live API first (the object's
//!   latest ownerReferences, and a GET of any owner the graph does not know), so a stale
//!   or half-built graph can delay collection but never delete something still owned.
//! - A dependent whose ownerReference names an owner living in another namespace gets
//!   upstream's Warning `OwnerRefInvalidNamespace` event (and, the owner being absent from
//!   its namespace, is collected like any dependent of a missing owner).

pub mod decide;
pub mod graph;
pub mod sources;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::Client;
use serde_json::{json, Value};

use crate::Context;
use decide::{
    decide_foreground, decide_item, Decision, ForegroundStep, Item, OwnerState, Propagation,
};
use graph::{Followups, Graph, Identity, InvalidOwnerNamespace, KindRef, Observed, OwnerLink, Uid};
use sources::{Resolved, RestMapper, SyncGate};

pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Upstream `--concurrent-gc-syncs`.
const WORKERS: usize = 20;
/// How long collection waits for every source's first list before starting anyway.
const SYNC_LIMIT: Duration = Duration::from_secs(30);
/// Look again at an object whose owner's kind is not served (a CRD may appear).
const UNRESOLVABLE_RETRY: Duration = Duration::from_secs(60);
/// Owners confirmed absent, remembered to spare GETs (uids are never reused).
const ABSENT_CACHE: usize = 4096;
const FIELD_MANAGER: &str = "generic-garbage-collector";
/// Reporting component of the collector's events, as upstream.
const COMPONENT: &str = "garbage-collector-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {object}: {source}")]
    Kube {
        what: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}: its kind is not served yet")]
    NotMapped(String),
}

fn kube_err(what: &'static str, object: &str) -> impl FnOnce(kube::Error) -> Error {
    let object = object.to_string();
    move |source| Error::Kube {
        what,
        object,
        source,
    }
}

/// Bounded set of (namespace, uid) owners known not to exist.
#[derive(Default)]
struct AbsentOwners {
    set: HashSet<(String, Uid)>,
    order: VecDeque<(String, Uid)>,
}

impl AbsentOwners {
    fn contains(&self, ns: &str, uid: &Uid) -> bool {
        self.set.contains(&(ns.to_string(), uid.clone()))
    }

    fn insert(&mut self, ns: &str, uid: &Uid) {
        let key = (ns.to_string(), uid.clone());
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > ABSENT_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The collector's shared state: graph, mapper and queues.
pub struct Collector {
    client: Client,
    recorder: crate::events::Recorder,
    graph: Mutex<Graph>,
    mapper: Arc<RwLock<RestMapper>>,
    absent: Mutex<AbsentOwners>,
    attempt_delete: informers::WorkQueue<Uid>,
    attempt_orphan: informers::WorkQueue<Uid>,
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let collector = Arc::new(Collector {
        client: ctx.client.clone(),
        recorder: ctx.recorder(COMPONENT),
        graph: Mutex::new(Graph::new()),
        mapper: Arc::new(RwLock::new(RestMapper::default())),
        absent: Mutex::new(AbsentOwners::default()),
        attempt_delete: informers::WorkQueue::new(),
        attempt_orphan: informers::WorkQueue::new(),
    });
    let gate = SyncGate::new();
    let (typed_loops, typed_kinds) = sources::typed_sources(ctx, &collector, &gate);
    async move {
        for l in typed_loops {
            tokio::spawn(l);
        }
        tokio::spawn(sources::discover_and_watch(
            collector.client.clone(),
            collector.clone(),
            collector.mapper.clone(),
            typed_kinds,
            gate.clone(),
        ));
        gate.wait(SYNC_LIMIT).await;
        tracing::debug!(
            nodes = collector.lock_graph().len(),
            "garbage collector graph built"
        );
        let c = collector.clone();
        let deleter = collector
            .attempt_delete
            .run(WORKERS, "garbage-collector", move |uid| {
                let c = c.clone();
                async move { c.attempt_to_delete(uid).await }
            });
        let c = collector.clone();
        let orphaner =
            collector
                .attempt_orphan
                .run(WORKERS / 4, "garbage-collector-orphan", move |uid| {
                    let c = c.clone();
                    async move { c.attempt_to_orphan(uid).await.map(|()| None) }
                });
        futures::future::join(deleter, orphaner).await;
    }
    .boxed()
}

/// What is needed to act on a node, copied out of the graph.
struct NodeView {
    identity: Identity,
    observed: bool,
    has_dependents: bool,
    a_dependent_is_deleting_dependents: bool,
}

impl Collector {
    fn lock_graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn follow(&self, f: Followups) {
        for uid in f.attempt_delete {
            self.attempt_delete.add(uid);
        }
        for uid in f.attempt_orphan {
            self.attempt_orphan.add(uid);
        }
        for invalid in f.invalid_namespace {
            // Graph changes arrive on the sources' tasks; the event is written beside them.
            let recorder = self.recorder.clone();
            tokio::spawn(async move { report_invalid_namespace(&recorder, &invalid).await });
        }
    }

    pub fn observe(&self, seen: Observed) {
        let f = self.lock_graph().observe(seen);
        self.follow(f);
    }

    pub fn forget(&self, uid: &str) {
        let f = self.lock_graph().forget(uid);
        self.follow(f);
    }

    pub fn resync(&self, kind: &KindRef, present: Vec<Observed>) {
        let f = self.lock_graph().resync(kind, present);
        self.follow(f);
    }

    fn view(&self, uid: &str) -> Option<NodeView> {
        let graph = self.lock_graph();
        let node = graph.get(uid)?;
        Some(NodeView {
            identity: node.identity.clone(),
            observed: node.observed,
            has_dependents: !node.dependents.is_empty(),
            a_dependent_is_deleting_dependents: node
                .dependents
                .iter()
                .any(|d| graph.get(d).is_some_and(|n| n.deleting_dependents())),
        })
    }

    fn resolve(&self, kind: &KindRef) -> Option<Resolved> {
        self.mapper
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .resolve(kind)
    }

    /// The API for an object of `resolved` kind in `namespace` (ignored when cluster-scoped).
    fn api(&self, resolved: &Resolved, namespace: &str) -> Api<DynamicObject> {
        if resolved.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &resolved.resource)
        } else {
            Api::all_with(self.client.clone(), &resolved.resource)
        }
    }

    /// upstream `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: Uid) -> Result<Option<Duration>, Error> {
        let Some(node) = self.view(&uid) else {
            return Ok(None);
        };
        let key = describe(&node.identity);
        if !node.observed {
            return self.verify_virtual(&uid, &node.identity).await;
        }
        let Some(resolved) = self.resolve(&node.identity.kind) else {
            return Err(Error::NotMapped(key));
        };
        let api = self.api(&resolved, &node.identity.namespace);
        let latest = match api.get_metadata_opt(&node.identity.name).await {
            Ok(Some(m)) if m.metadata.uid.as_deref() == Some(&*uid) => m,
            // Gone or replaced: the watch will tell the graph.
            Ok(_) => return Ok(None),
            Err(e) => return Err(kube_err("reading", &key)(e)),
        };
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let deleting = latest.metadata.deletion_timestamp.is_some();
        let foreground = finalizers.iter().any(|f| f == FOREGROUND_FINALIZER);
        if deleting && foreground {
            return self
                .process_deleting_dependents(&uid, &api, &node.identity.name, &key)
                .await;
        }
        if deleting {
            return Ok(None);
        }
        let refs = latest.metadata.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(None);
        }
        let mut owners = Vec::with_capacity(refs.len());
        for r in &refs {
            let link = OwnerLink {
                uid: Arc::from(r.uid.as_str()),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                block_owner_deletion: r.block_owner_deletion == Some(true),
            };
            let state = self
                .owner_state(&link, &node.identity.namespace, resolved.namespaced)
                .await?;
            owners.push((link, state));
        }
        let item = Item {
            deleting,
            orphan_finalizer: finalizers.iter().any(|f| f == ORPHAN_FINALIZER),
            foreground_finalizer: foreground,
            owners: &owners,
            has_dependents: node.has_dependents,
            a_dependent_is_deleting_dependents: node.a_dependent_is_deleting_dependents,
        };
        let decision = decide_item(&item);
        tracing::debug!(object = %key, ?decision, "garbage collector");
        match decision {
            Decision::Keep => Ok(None),
            Decision::RetryLater => Ok(Some(UNRESOLVABLE_RETRY)),
            Decision::DropOwnerReferences(uids) => {
                let refs = owner_refs_json(&latest)?;
                if let Some(next) = decide::without_owner_references(&refs, &uids) {
                    patch_owner_refs(&api, &latest, next, &key).await?;
                }
                Ok(None)
            }
            Decision::Delete {
                propagation,
                unblock,
            } => {
                if !unblock.is_empty() {
                    let refs = owner_refs_json(&latest)?;
                    if let Some(next) = decide::with_owner_references_unblocked(&refs, &unblock) {
                        patch_owner_refs(&api, &latest, next, &key).await?;
                        // The patch moved the resourceVersion; the next look deletes.
                        return Ok(Some(Duration::ZERO));
                    }
                }
                let params = DeleteParams {
                    propagation_policy: Some(match propagation {
                        Propagation::Background => kube::api::PropagationPolicy::Background,
                        Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
                        Propagation::Orphan => kube::api::PropagationPolicy::Orphan,
                    }),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.to_string()),
                        resource_version: latest.metadata.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&node.identity.name, &params).await {
                    Ok(_) => {
                        tracing::debug!(object = %key, ?propagation, "garbage collector deleted it");
                        Ok(None)
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                    // Changed since read (maybe adopted): look again with the new state.
                    Err(e) => Err(kube_err("deleting", &key)(e)),
                }
            }
        }
    }

    /// A node known only from ownerReferences: does it exist? If not, its dependents lost
    /// an owner.
    async fn verify_virtual(
        &self,
        uid: &Uid,
        identity: &Identity,
    ) -> Result<Option<Duration>, Error> {
        let key = describe(identity);
        let Some(resolved) = self.resolve(&identity.kind) else {
            if self
                .mapper
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .loaded()
            {
                tracing::debug!(owner = %key, "garbage collector: owner kind not served");
                return Ok(Some(UNRESOLVABLE_RETRY));
            }
            return Err(Error::NotMapped(key));
        };
        let exists = match self
            .api(&resolved, &identity.namespace)
            .get_metadata_opt(&identity.name)
            .await
        {
            Ok(Some(m)) => m.metadata.uid.as_deref() == Some(&**uid),
            Ok(None) => false,
            Err(e) => return Err(kube_err("looking up owner", &key)(e)),
        };
        if !exists {
            let ns = if resolved.namespaced {
                &*identity.namespace
            } else {
                ""
            };
            self.absent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ns, uid);
            let f = self.lock_graph().owner_absent(uid);
            self.follow(f);
        }
        Ok(None)
    }

    /// The state of one owner of an object in `namespace`: from the graph when it knows
    /// the owner there, else from the API (and the absent cache).
    async fn owner_state(
        &self,
        owner: &OwnerLink,
        namespace: &str,
        dependent_namespaced: bool,
    ) -> Result<OwnerState, Error> {
        let kind = KindRef {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
        };
        let Some(resolved) = self.resolve(&kind) else {
            return Ok(OwnerState::Unresolvable);
        };
        if resolved.namespaced && !dependent_namespaced {
            // A cluster-scoped object cannot be owned by a namespaced one (upstream
            // leaves such objects alone).
            tracing::debug!(owner = %owner.name, "cluster-scoped dependent names a namespaced owner");
            return Ok(OwnerState::Unresolvable);
        }
        let owner_ns = if resolved.namespaced { namespace } else { "" };
        {
            let graph = self.lock_graph();
            if let Some(node) = graph.get(&owner.uid) {
                if node.gone {
                    return Ok(OwnerState::Dangling);
                }
                if node.observed && &*node.identity.namespace == owner_ns {
                    return Ok(if node.deleting_dependents() {
                        OwnerState::WaitingForDependents
                    } else {
                        OwnerState::Solid
                    });
                }
            }
        }
        if self
            .absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(owner_ns, &owner.uid)
        {
            return Ok(OwnerState::Dangling);
        }
        let key = format!("{} {}/{}", owner.kind, owner_ns, owner.name);
        match self
            .api(&resolved, owner_ns)
            .get_metadata_opt(&owner.name)
            .await
        {
            Ok(Some(m)) if m.metadata.uid.as_deref() == Some(&*owner.uid) => {
                let fg = m
                    .metadata
                    .finalizers
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == FOREGROUND_FINALIZER);
                Ok(if m.metadata.deletion_timestamp.is_some() && fg {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Solid
                })
            }
            Ok(_) => {
                self.absent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(owner_ns, &owner.uid);
                Ok(OwnerState::Dangling)
            }
            Err(e) => Err(kube_err("looking up owner", &key)(e)),
        }
    }

    /// An owner deleted in the foreground: delete its blocking dependents, and once none
    /// is left remove the `foregroundDeletion` finalizer.
    async fn process_deleting_dependents(
        &self,
        uid: &Uid,
        api: &Api<DynamicObject>,
        name: &str,
        key: &str,
    ) -> Result<Option<Duration>, Error> {
        let blocking = self.lock_graph().blocking_dependents(uid);
        match decide_foreground(&blocking) {
            ForegroundStep::RemoveFinalizer => {
                tracing::debug!(object = %key, "no blocking dependents left; finishing foreground deletion");
                remove_finalizer(api, uid, name, key, FOREGROUND_FINALIZER).await?;
                Ok(None)
            }
            ForegroundStep::Wait { examine } => {
                tracing::debug!(object = %key, blocking = blocking.len(), "waiting for dependents");
                for dep in examine {
                    self.attempt_delete.add(dep);
                }
                Ok(None)
            }
        }
    }

    /// upstream `attemptToOrphan`: take this owner out of its dependents' ownerReferences,
    /// then remove its `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: Uid) -> Result<(), Error> {
        let Some(node) = self.view(&uid) else {
            return Ok(());
        };
        let key = describe(&node.identity);
        let Some(resolved) = self.resolve(&node.identity.kind) else {
            return Err(Error::NotMapped(key));
        };
        let dependents = self.lock_graph().dependents(&uid);
        for (dep_uid, identity) in dependents {
            let dep_key = describe(&identity);
            let Some(dep_res) = self.resolve(&identity.kind) else {
                return Err(Error::NotMapped(dep_key));
            };
            let api = self.api(&dep_res, &identity.namespace);
            let latest = match api.get_metadata_opt(&identity.name).await {
                Ok(Some(m)) if m.metadata.uid.as_deref() == Some(&*dep_uid) => m,
                Ok(_) => continue,
                Err(e) => return Err(kube_err("reading dependent", &dep_key)(e)),
            };
            let refs = owner_refs_json(&latest)?;
            if let Some(next) = decide::without_owner_references(&refs, &[uid.clone()]) {
                match patch_owner_refs(&api, &latest, next, &dep_key).await {
                    Ok(()) => {}
                    Err(Error::Kube {
                        source: kube::Error::Api(e),
                        ..
                    }) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
                tracing::debug!(dependent = %dep_key, owner = %key, "orphaned");
            }
        }
        let api = self.api(&resolved, &node.identity.namespace);
        remove_finalizer(&api, &uid, &node.identity.name, &key, ORPHAN_FINALIZER).await
    }
}

/// Upstream's `OwnerRefInvalidNamespace` warning on the dependent, worded as upstream
/// (the owner coordinates printed with the dependent's namespace).
async fn report_invalid_namespace(recorder: &crate::events::Recorder, r: &InvalidOwnerNamespace) {
    let ns = &*r.dependent.namespace;
    let note = format!(
        "ownerRef [{}/{}, namespace: {ns}, name: {}, uid: {}] does not exist in namespace {ns:?}",
        r.owner.api_version, r.owner.kind, r.owner.name, r.owner.uid
    );
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(r.dependent.kind.api_version.clone()),
        kind: Some(r.dependent.kind.kind.clone()),
        namespace: Some(ns.to_string()),
        name: Some(r.dependent.name.to_string()),
        uid: Some(r.dependent_uid.to_string()),
        ..Default::default()
    };
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "OwnerRefInvalidNamespace".into(),
        note: Some(note),
        action: "OwnerRefInvalidNamespace".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(
            "{COMPONENT}: recording OwnerRefInvalidNamespace for {}: {e}",
            describe(&r.dependent)
        );
    }
}

fn describe(identity: &Identity) -> String {
    if identity.namespace.is_empty() {
        format!("{} {}", identity.kind.kind, identity.name)
    } else {
        format!(
            "{} {}/{}",
            identity.kind.kind, identity.namespace, identity.name
        )
    }
}

fn owner_refs_json(meta: &PartialObjectMeta<DynamicObject>) -> Result<Vec<Value>, Error> {
    let refs = meta.metadata.owner_references.clone().unwrap_or_default();
    refs.iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Kube {
            what: "encoding ownerReferences of",
            object: meta.metadata.name.clone().unwrap_or_default(),
            source: kube::Error::SerdeError(e),
        })
}

/// Replace ownerReferences, only if the object is still at the version read (409 else).
async fn patch_owner_refs(
    api: &Api<DynamicObject>,
    latest: &PartialObjectMeta<DynamicObject>,
    refs: Vec<Value>,
    key: &str,
) -> Result<(), Error> {
    let name = latest.metadata.name.clone().unwrap_or_default();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        Value::Array(refs)
    };
    let patch = json!({"metadata": {
        "resourceVersion": latest.metadata.resource_version,
        "ownerReferences": refs,
    }});
    api.patch_metadata(&name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(kube_err("updating ownerReferences of", key))
}

/// Remove one finalizer from the live object (re-read, then a patch conditional on the
/// version read).
async fn remove_finalizer(
    api: &Api<DynamicObject>,
    uid: &Uid,
    name: &str,
    key: &str,
    finalizer: &str,
) -> Result<(), Error> {
    let latest = match api.get_metadata_opt(name).await {
        Ok(Some(m)) if m.metadata.uid.as_deref() == Some(&**uid) => m,
        Ok(_) => return Ok(()),
        Err(e) => return Err(kube_err("reading", key)(e)),
    };
    let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
    let Some(next) = decide::without_finalizer(&finalizers, finalizer) else {
        return Ok(());
    };
    let patch = json!({"metadata": {
        "resourceVersion": latest.metadata.resource_version,
        "finalizers": next,
    }});
    match api
        .patch_metadata(name, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_err("removing finalizer of", key)(e)),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}
