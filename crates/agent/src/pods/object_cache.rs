//! The ConfigMaps and Secrets that pods use, kept in memory from a watch per object, as
//! kubelet's default change-detection strategy (`Watch`) keeps them: the first read of an
//! object starts a watch on it alone (`metadata.name=<name>` in its namespace), later
//! reads, including every pod's periodic volume refresh, are answered from memory, and a
//! watch that nobody has read for [`IDLE_FOR`] is stopped. An object that does not exist
//! reads as absent until the watch sees it created.
//!
//! A read waits for its watch's first listing at most [`FIRST_LISTING_WAIT`]; after that
//! (the API unreachable, a watch failing) it asks the API directly, so a read is never
//! slower than the plain GET it replaces.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A watch nobody read for this long is stopped (pods re-read theirs every 20 s).
pub const IDLE_FOR: Duration = Duration::from_secs(10 * 60);
/// How long a read waits for a new watch's first listing before asking the API itself.
pub const FIRST_LISTING_WAIT: Duration = Duration::from_secs(2);

type Key = (String, String);

/// What a watch knows of its object: nothing yet, or the object as last seen (None:
/// absent).
type Known<K> = Option<Option<Arc<K>>>;

struct Entry<K> {
    known: watch::Receiver<Known<K>>,
    last_read: Instant,
    task: tokio::task::AbortHandle,
}

pub struct ObjectCache<K> {
    client: kube::Client,
    entries: Mutex<HashMap<Key, Entry<K>>>,
}

impl<K> ObjectCache<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    pub fn new(client: kube::Client) -> ObjectCache<K> {
        ObjectCache {
            client,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The object `namespace/name`, or None when it does not exist. Must be called on a
    /// tokio runtime (a first read starts the object's watch on it).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<K>, kube::Error> {
        let mut known = self.entry(namespace, name);
        let first = tokio::time::timeout(FIRST_LISTING_WAIT, known.wait_for(Option::is_some));
        if let Ok(Ok(seen)) = first.await {
            return Ok(seen.clone().flatten().map(|k| (*k).clone()));
        }
        // No listing yet: answer as the GET this replaces would.
        Api::<K>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
    }

    /// The watch for `namespace/name`, started if there is none; stops idle ones.
    fn entry(&self, namespace: &str, name: &str) -> watch::Receiver<Known<K>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| {
            let keep = now.duration_since(e.last_read) < IDLE_FOR;
            if !keep {
                e.task.abort();
            }
            keep
        });
        let key = (namespace.to_string(), name.to_string());
        let entry = entries
            .entry(key)
            .or_insert_with(|| self.start(namespace, name, now));
        entry.last_read = now;
        entry.known.clone()
    }

    fn start(&self, namespace: &str, name: &str, now: Instant) -> Entry<K> {
        let (tx, known) = watch::channel(None);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let what = format!("{namespace}/{name}");
        let task = tokio::spawn(async move {
            let stream = watcher::watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            // The object as the current listing has it, published when the listing ends.
            let mut listing: Option<Arc<K>> = None;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Init) => listing = None,
                    Ok(Event::InitApply(k)) => listing = Some(Arc::new(k)),
                    Ok(Event::InitDone) => {
                        let _ = tx.send(Some(listing.take()));
                    }
                    Ok(Event::Apply(k)) => {
                        let _ = tx.send(Some(Some(Arc::new(k))));
                    }
                    Ok(Event::Delete(_)) => {
                        let _ = tx.send(Some(None));
                    }
                    Err(e) => tracing::debug!("watching {what} for pods: {e}"),
                }
            }
        });
        Entry {
            known,
            last_read: now,
            task: task.abort_handle(),
        }
    }
}

impl<K> Drop for ObjectCache<K> {
    fn drop(&mut self) {
        if let Ok(entries) = self.entries.lock() {
            for e in entries.values() {
                e.task.abort();
            }
        }
    }
}
