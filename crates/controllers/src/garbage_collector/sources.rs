//! Where the collector's graph comes from: the shared typed informers for the kinds the
//! controllers cache anyway (pods above all, so they are never cached twice), and
//! metadata-only watches of its own (`PartialObjectMetadata`) for every other kind the
//! API serves, found through discovery and refreshed so new kinds are picked up.
//! Also the REST mapping (apiVersion+kind -> resource) the collector acts through.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};

use super::graph::{KindRef, Observed, OwnerLink};
use super::Collector;
use crate::Context;

/// How often discovery is re-read to watch kinds that appeared (upstream: 30 s).
const REDISCOVERY: Duration = Duration::from_secs(30);

/// Kinds never collected nor watched (upstream's default ignored resources).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// A served resource, resolved from discovery.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// apiVersion/kind -> resource, from the last discovery.
#[derive(Default)]
pub struct RestMapper {
    by_group_kind: HashMap<(String, String), Resolved>,
    loaded: bool,
}

impl RestMapper {
    pub fn resolve(&self, kind: &KindRef) -> Option<Resolved> {
        self.by_group_kind
            .get(&(kind.group().to_string(), kind.kind.clone()))
            .cloned()
    }

    pub fn loaded(&self) -> bool {
        self.loaded
    }
}

/// Turn an object's metadata into what the graph keeps.
pub fn observed(kind: &KindRef, meta: &ObjectMeta) -> Option<Observed> {
    let uid = meta.uid.as_deref().filter(|u| !u.is_empty())?;
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    Some(Observed {
        uid: Arc::from(uid),
        kind: kind.clone(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        owners: meta
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|o| !o.uid.is_empty())
            .map(|o| OwnerLink {
                uid: Arc::from(o.uid.as_str()),
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                block_owner_deletion: o.block_owner_deletion == Some(true),
            })
            .collect(),
        deleting: meta.deletion_timestamp.is_some(),
        orphan_finalizer: finalizers.iter().any(|f| f == super::ORPHAN_FINALIZER),
        foreground_finalizer: finalizers.iter().any(|f| f == super::FOREGROUND_FINALIZER),
    })
}

/// Counts the sources that have not delivered their first complete list.
#[derive(Clone)]
pub struct SyncGate {
    pending: Arc<Mutex<HashSet<String>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl SyncGate {
    pub fn new() -> Self {
        SyncGate {
            pending: Arc::new(Mutex::new(HashSet::new())),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn expect(&self, name: &str) {
        self.lock().insert(name.to_string());
    }

    pub fn done(&self, name: &str) {
        if self.lock().remove(name) {
            self.changed.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until every expected source has listed, or `limit` passes (a source that
    /// cannot list must not stop collection: every deletion is verified live anyway).
    pub async fn wait(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left: Vec<String> = self.lock().iter().cloned().collect();
            if left.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::debug!(?left, "garbage collector starting before these listed");
                return;
            }
        }
    }
}

/// The kinds taken from the shared typed informers (the controllers cache them anyway).
/// Each entry subscribes synchronously and returns its loop.
pub fn typed_sources(
    ctx: &Arc<Context>,
    collector: &Arc<Collector>,
    gate: &SyncGate,
) -> (Vec<BoxFuture<'static, ()>>, HashSet<(String, String)>) {
    use k8s_openapi::api::apps::v1::{
        ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
    };
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::{
        Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
        ServiceAccount,
    };
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut loops = Vec::new();
    let mut kinds = HashSet::new();
    macro_rules! typed {
        ($($k:ty),* $(,)?) => {$(
            kinds.insert((<$k>::group(&()).to_string(), <$k>::kind(&()).to_string()));
            loops.push(typed_source::<$k>(ctx, collector, gate));
        )*};
    }
    typed!(
        Pod,
        ReplicaSet,
        Deployment,
        StatefulSet,
        DaemonSet,
        ControllerRevision,
        Job,
        CronJob,
        Service,
        Endpoints,
        EndpointSlice,
        Node,
        Namespace,
        ServiceAccount,
        PersistentVolumeClaim,
        PersistentVolume,
    );
    (loops, kinds)
}

fn typed_source<K>(
    ctx: &Arc<Context>,
    collector: &Arc<Collector>,
    gate: &SyncGate,
) -> BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let informer = ctx.informers.informer::<K>();
    let mut changes = informer.subscribe();
    let kind = KindRef {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
    };
    let name = format!("typed {}", kind.kind);
    gate.expect(&name);
    let collector = collector.clone();
    let gate = gate.clone();
    async move {
        {
            let informer = informer.clone();
            let gate = gate.clone();
            let name = name.clone();
            tokio::spawn(async move {
                informer.wait_synced().await;
                gate.done(&name);
            });
        }
        while let Some(change) = changes.recv().await {
            match change {
                informers::Change::Applied(obj) => {
                    if let Some(seen) = observed(&kind, obj.meta()) {
                        collector.observe(seen);
                    }
                }
                informers::Change::Deleted(obj) => {
                    if let Some(uid) = obj.meta().uid.as_deref() {
                        collector.forget(uid);
                    }
                }
                informers::Change::Resync => {
                    let present = informer
                        .list()
                        .iter()
                        .filter_map(|o| observed(&kind, o.meta()))
                        .collect();
                    collector.resync(&kind, present);
                }
            }
        }
    }
    .boxed()
}

/// Discover served kinds, keep the mapper current, and watch (metadata only) every kind
/// that can be listed, watched and deleted and is not covered by a typed informer.
pub async fn discover_and_watch(
    client: Client,
    collector: Arc<Collector>,
    mapper: Arc<RwLock<RestMapper>>,
    typed: HashSet<(String, String)>,
    gate: SyncGate,
) {
    let mut watching: HashSet<(String, String)> = HashSet::new();
    let first = "discovery".to_string();
    gate.expect(&first);
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => {
                let mut next = RestMapper {
                    by_group_kind: HashMap::new(),
                    loaded: true,
                };
                for group in discovery.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if ar.plural.contains('/') {
                            continue;
                        }
                        let namespaced = caps.scope == Scope::Namespaced;
                        let key = (ar.group.clone(), ar.kind.clone());
                        next.by_group_kind.insert(
                            key.clone(),
                            Resolved {
                                resource: ar.clone(),
                                namespaced,
                            },
                        );
                        let usable = caps.supports_operation(verbs::LIST)
                            && caps.supports_operation(verbs::WATCH)
                            && caps.supports_operation(verbs::DELETE);
                        let ignored = IGNORED
                            .iter()
                            .any(|(g, p)| *g == ar.group && *p == ar.plural);
                        if !usable || ignored || typed.contains(&key) || watching.contains(&key) {
                            continue;
                        }
                        watching.insert(key);
                        let name = format!("metadata {}/{}", ar.group, ar.plural);
                        gate.expect(&name);
                        tokio::spawn(metadata_source(
                            client.clone(),
                            ar.clone(),
                            collector.clone(),
                            gate.clone(),
                            name,
                        ));
                    }
                }
                *mapper.write().unwrap_or_else(|e| e.into_inner()) = next;
                gate.done(&first);
            }
            Err(e) => tracing::warn!("garbage collector: discovery failed: {e}"),
        }
        tokio::time::sleep(REDISCOVERY).await;
    }
}

/// One kind's metadata-only list+watch, feeding the graph; relists become resyncs.
async fn metadata_source(
    client: Client,
    ar: ApiResource,
    collector: Arc<Collector>,
    gate: SyncGate,
    name: String,
) {
    let kind = KindRef {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    };
    // Metadata only: the graph needs nothing else, and ConfigMaps or Secrets can be big.
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<Vec<Observed>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => relist = Some(Vec::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                if let (Some(fresh), Some(seen)) = (relist.as_mut(), observed(&kind, &obj.metadata))
                {
                    fresh.push(seen);
                }
            }
            Ok(watcher::Event::InitDone) => {
                collector.resync(&kind, relist.take().unwrap_or_default());
                gate.done(&name);
            }
            Ok(watcher::Event::Apply(obj)) => {
                if let Some(seen) = observed(&kind, &obj.metadata) {
                    collector.observe(seen);
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    collector.forget(uid);
                }
            }
            Err(e) => tracing::debug!("garbage collector: watching {name} failed, relisting: {e}"),
        }
    }
}
