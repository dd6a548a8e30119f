//! One list+watch per kind, cached in memory and fanned out to subscribers.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::fanout::{Fanout, Subscription};
use crate::lean::Lean;

/// Where an object lives: `(namespace, name)`, ordered so one namespace is a range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(obj: &K) -> Self {
        ObjectKey {
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a subscriber hears.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Created or modified (also every object of the first list).
    Applied(Arc<K>),
    /// Gone; the last state the cache knew.
    Deleted(Arc<K>),
    /// The subscriber fell behind and missed changes: re-check everything it cares about
    /// from the cache (level-triggered, so nothing is lost).
    Resync,
}

/// The cached objects, and an index of them by controller (upstream's controller-UID pod
/// indexer): a ReplicaSet finds its own pods and the orphans it may adopt without scanning
/// every pod of the namespace on each sync.
struct Cache<K> {
    objects: BTreeMap<ObjectKey, Arc<K>>,
    by_controller: HashMap<Controller, HashMap<ObjectKey, Arc<K>>>,
}

/// An index key: the UID of an object's controller (the ownerReference with
/// `controller: true`), or the namespace of an object that has none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Controller {
    Uid(String),
    Orphan(String),
}

impl Controller {
    fn of<K: Resource>(obj: &K) -> Controller {
        let meta = obj.meta();
        match meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        {
            Some(r) => Controller::Uid(r.uid.clone()),
            None => Controller::Orphan(meta.namespace.clone().unwrap_or_default()),
        }
    }
}

impl<K: Resource> Cache<K> {
    fn new() -> Self {
        Cache {
            objects: BTreeMap::new(),
            by_controller: HashMap::new(),
        }
    }

    fn from_objects(objects: BTreeMap<ObjectKey, Arc<K>>) -> Self {
        let mut by_controller: HashMap<Controller, HashMap<ObjectKey, Arc<K>>> = HashMap::new();
        for (key, obj) in &objects {
            by_controller
                .entry(Controller::of(obj.as_ref()))
                .or_default()
                .insert(key.clone(), obj.clone());
        }
        Cache {
            objects,
            by_controller,
        }
    }

    fn unindex(&mut self, key: &ObjectKey, obj: &K) {
        let owner = Controller::of(obj);
        if let Some(keys) = self.by_controller.get_mut(&owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_controller.remove(&owner);
            }
        }
    }

    fn insert(&mut self, key: ObjectKey, obj: Arc<K>) {
        let owner = Controller::of(obj.as_ref());
        if let Some(old) = self.objects.insert(key.clone(), obj.clone()) {
            self.unindex(&key, &old);
        }
        self.by_controller
            .entry(owner)
            .or_default()
            .insert(key, obj);
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn indexed(&self, owner: &Controller, namespace: &str) -> Vec<Arc<K>> {
        self.by_controller
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(_, obj)| obj.clone())
            .collect()
    }
}

struct Shared<K> {
    cache: RwLock<Cache<K>>,
    changes: Fanout<K>,
    synced: tokio::sync::watch::Sender<bool>,
}

/// A cluster-wide cache of one kind. Cheap to clone.
pub struct Informer<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Resource + Clone + Send + Sync + 'static> Informer<K> {
    fn new() -> Self {
        let (synced, _) = tokio::sync::watch::channel(false);
        Informer {
            shared: Arc::new(Shared {
                cache: RwLock::new(Cache::new()),
                changes: Fanout::new(),
                synced,
            }),
        }
    }

    /// Changes from now on. Subscribe before [`Factory::start`] to also hear the first
    /// list as `Applied`; a later subscriber should read [`Informer::list`] after
    /// subscribing.
    pub fn subscribe(&self) -> Subscription<K> {
        self.shared.changes.subscribe()
    }

    /// Wait until the first complete list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|synced| *synced).await;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read()
            .objects
            .get(&ObjectKey::new(namespace, name))
            .cloned()
    }

    pub fn get_key(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// Every cached object in one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let start = ObjectKey::new(namespace, "");
        self.read()
            .objects
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The objects of `namespace` whose controller (ownerReference with `controller:
    /// true`) has this UID.
    pub fn list_controlled_by(&self, namespace: &str, uid: &str) -> Vec<Arc<K>> {
        self.read()
            .indexed(&Controller::Uid(uid.to_string()), namespace)
    }

    /// The objects of `namespace` that have no controller.
    pub fn list_orphans(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .indexed(&Controller::Orphan(namespace.to_string()), namespace)
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache<K>> {
        // A panic while holding the lock leaves a consistent map (single inserts/removes).
        self.shared.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache<K>> {
        self.shared.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, change: Change<K>) {
        // No subscribers is fine: the cache alone is still useful.
        self.shared.changes.publish(change);
    }

    /// Replace the whole cache after a (re)list, telling subscribers what differs.
    fn replace(&self, fresh: BTreeMap<ObjectKey, Arc<K>>) {
        let old = std::mem::replace(&mut *self.write(), Cache::from_objects(fresh.clone())).objects;
        for (key, obj) in &old {
            if !fresh.contains_key(key) {
                self.publish(Change::Deleted(obj.clone()));
            }
        }
        for (key, obj) in &fresh {
            let unchanged = old
                .get(key)
                .is_some_and(|o| o.meta().resource_version == obj.meta().resource_version);
            if !unchanged {
                self.publish(Change::Applied(obj.clone()));
            }
        }
        self.shared.synced.send_replace(true);
    }

    fn apply(&self, obj: K) {
        let obj = Arc::new(trimmed(obj));
        self.write()
            .insert(ObjectKey::of(obj.as_ref()), obj.clone());
        self.publish(Change::Applied(obj));
    }

    fn delete(&self, obj: K) {
        let key = ObjectKey::of(&obj);
        let last = self
            .write()
            .remove(&key)
            .unwrap_or_else(|| Arc::new(trimmed(obj)));
        self.publish(Change::Deleted(last));
    }

    /// Keep the cache in step with the API until the process ends; the watcher relists
    /// with back-off after errors (410 Gone included).
    async fn run(self, api: Api<K>, kind: &'static str, config: watcher::Config)
    where
        K: DeserializeOwned + fmt::Debug,
        K::DynamicType: Default,
    {
        // Listed and watched as `Lean<K>`: decoded without managedFields (see `lean`).
        let api: Api<Lean<K>> = Api::all_with(api.into_client(), &Default::default());
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut relist: Option<BTreeMap<ObjectKey, Arc<K>>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relist = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(Lean(obj))) => {
                    if let Some(fresh) = relist.as_mut() {
                        fresh.insert(ObjectKey::of(&obj), Arc::new(trimmed(obj)));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let fresh = relist.take().unwrap_or_default();
                    tracing::debug!(kind, objects = fresh.len(), "informer listed");
                    self.replace(fresh);
                }
                Ok(watcher::Event::Apply(Lean(obj))) => self.apply(obj),
                Ok(watcher::Event::Delete(Lean(obj))) => self.delete(obj),
                Err(e) => tracing::warn!(kind, "informer watch failed, will relist: {e}"),
            }
        }
    }
}

/// The object as the cache keeps it: without `managedFields`, which no component reads
/// and which is often the largest part of an object (upstream's informers drop it the
/// same way). An update sent without `managedFields` leaves the stored ones as they are.
fn trimmed<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

/// A kind a [`Factory`] can keep an informer of.
pub trait Cacheable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
}

impl<K> Cacheable for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
}

/// Hands out one informer per kind and starts them together.
pub struct Factory {
    client: Client,
    /// By kind and field selector ("" for none).
    informers: Mutex<HashMap<(TypeId, String), Box<dyn Any + Send + Sync>>>,
    not_started: Mutex<Vec<BoxFuture<'static, ()>>>,
    started: std::sync::atomic::AtomicBool,
}

impl Factory {
    pub fn new(client: Client) -> Self {
        Factory {
            client,
            informers: Mutex::new(HashMap::new()),
            not_started: Mutex::new(Vec::new()),
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The informer for kind `K` (all namespaces), created on first use.
    pub fn informer<K: Cacheable>(&self) -> Informer<K> {
        self.informer_with_fields("")
    }

    /// The informer for the objects of kind `K` that `field_selector` selects (all of them
    /// for ""), created on first use: the cache holds only those, and an object that stops
    /// matching is deleted from it (the API server sends DELETED), as upstream's
    /// field-selected informers (a kubelet's pods: `spec.nodeName=<node>`).
    pub fn informer_with_fields<K: Cacheable>(&self, field_selector: &str) -> Informer<K> {
        let id = (TypeId::of::<K>(), field_selector.to_string());
        let mut informers = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = informers.get(&id) {
            if let Some(informer) = existing.downcast_ref::<Informer<K>>() {
                return informer.clone();
            }
        }
        let informer = Informer::<K>::new();
        informers.insert(id, Box::new(informer.clone()));
        let kind: &'static str = Box::leak(K::kind(&()).into_owned().into_boxed_str());
        let mut config = watcher::Config::default();
        if !field_selector.is_empty() {
            config = config.fields(field_selector);
        }
        let task = informer
            .clone()
            .run(Api::<K>::all(self.client.clone()), kind, config)
            .boxed();
        if self.started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(task);
        } else {
            self.not_started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
        informer
    }

    /// Start every informer asked for so far; later ones start when asked for.
    pub fn start(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let tasks =
            std::mem::take(&mut *self.not_started.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            tokio::spawn(task);
        }
    }
}

/// Convenience for reconcilers: the key of an object.
pub fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    ObjectKey::of(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(ns: &str, name: &str, controller: Option<&str>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        if let Some(uid) = controller {
            p.metadata.owner_references = Some(vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]);
        }
        Arc::new(p)
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn controller_index_follows_inserts_updates_and_removals() {
        let mut cache: Cache<Pod> = Cache::new();
        for p in [
            pod("a", "web-1", Some("rs-1")),
            pod("a", "web-2", Some("rs-1")),
            pod("b", "web-3", Some("rs-1")),
            pod("a", "loose", None),
            pod("a", "other", Some("rs-2")),
        ] {
            cache.insert(ObjectKey::of(p.as_ref()), p);
        }
        let uid = Controller::Uid("rs-1".into());
        assert_eq!(names(cache.indexed(&uid, "a")), ["web-1", "web-2"]);
        assert_eq!(names(cache.indexed(&uid, "b")), ["web-3"]);
        assert_eq!(
            names(cache.indexed(&Controller::Orphan("a".into()), "a")),
            ["loose"]
        );

        // Released by its controller: the pod moves to the orphans.
        let released = pod("a", "web-2", None);
        cache.insert(ObjectKey::of(released.as_ref()), released);
        assert_eq!(names(cache.indexed(&uid, "a")), ["web-1"]);
        assert_eq!(
            names(cache.indexed(&Controller::Orphan("a".into()), "a")),
            ["loose", "web-2"]
        );

        cache.remove(&ObjectKey::new("a", "web-1"));
        assert!(cache.indexed(&uid, "a").is_empty());
        assert_eq!(
            cache.by_controller.len(),
            3,
            "empty index entries are dropped"
        );

        let rebuilt = Cache::from_objects(cache.objects.clone());
        assert_eq!(
            names(rebuilt.indexed(&Controller::Orphan("a".into()), "a")),
            ["loose", "web-2"]
        );
    }
}
