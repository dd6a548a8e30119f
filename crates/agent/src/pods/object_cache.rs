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
    idle_for: Duration,
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
        ObjectCache::stopping_watches_idle_for(client, IDLE_FOR)
    }

    /// A cache whose watches stop once nobody has read them for `idle_for`.
    pub fn stopping_watches_idle_for(client: kube::Client, idle_for: Duration) -> ObjectCache<K> {
        ObjectCache {
            client,
            idle_for,
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
            let keep = now.duration_since(e.last_read) < self.idle_for;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;

    type Answer = hyper::Response<BoxBody<Bytes, Infallible>>;

    /// A fake API server holding ConfigMaps of namespace `ns`: it answers lists and GETs,
    /// keeps watches open (a change is sent to them by [`FakeApi::put`]) and counts it all.
    #[derive(Default)]
    struct FakeApi {
        objects: Mutex<HashMap<String, Value>>,
        lists: Mutex<HashMap<String, usize>>,
        gets: Mutex<usize>,
        open_watches: Mutex<HashMap<String, usize>>,
        watchers: Mutex<Vec<(String, mpsc::UnboundedSender<Bytes>)>>,
        resource_version: Mutex<u64>,
    }

    /// Counts a watch as open until its response body is dropped.
    struct OpenWatch {
        api: Arc<FakeApi>,
        name: String,
    }

    impl Drop for OpenWatch {
        fn drop(&mut self) {
            let mut open = self.api.open_watches.lock().unwrap();
            *open.entry(self.name.clone()).or_default() -= 1;
        }
    }

    impl FakeApi {
        /// Creates or changes ConfigMap `name` and tells the open watches on it.
        fn put(&self, name: &str, color: &str) {
            let rv = {
                let mut rv = self.resource_version.lock().unwrap();
                *rv += 1;
                *rv
            };
            let object = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()},
                "data": {"color": color},
            });
            let existed = self
                .objects
                .lock()
                .unwrap()
                .insert(name.to_string(), object.clone())
                .is_some();
            let kind = if existed { "MODIFIED" } else { "ADDED" };
            let line = format!("{}\n", json!({"type": kind, "object": object}));
            for (watched, tx) in self.watchers.lock().unwrap().iter() {
                if watched == name {
                    let _ = tx.send(Bytes::from(line.clone()));
                }
            }
        }

        fn lists_of(&self, name: &str) -> usize {
            *self.lists.lock().unwrap().get(name).unwrap_or(&0)
        }

        fn open_watches_on(&self, name: &str) -> usize {
            *self.open_watches.lock().unwrap().get(name).unwrap_or(&0)
        }

        fn answer(self: &Arc<Self>, request: &hyper::Request<kube::client::Body>) -> Answer {
            let query: HashMap<String, String> =
                form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let path = request.uri().path();
            let full = |status: u16, body: Value| {
                hyper::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())).boxed())
                    .unwrap()
            };
            let Some(name) = query
                .get("fieldSelector")
                .and_then(|s| s.strip_prefix("metadata.name="))
                .map(str::to_string)
            else {
                // A GET of one object by name.
                *self.gets.lock().unwrap() += 1;
                let name = path.rsplit('/').next().unwrap_or_default();
                return match self.objects.lock().unwrap().get(name) {
                    Some(object) => full(200, object.clone()),
                    None => full(404, json!({"kind": "Status", "code": 404})),
                };
            };
            if query.get("watch").map(String::as_str) == Some("true") {
                let (tx, rx) = mpsc::unbounded_channel();
                self.watchers.lock().unwrap().push((name.clone(), tx));
                *self
                    .open_watches
                    .lock()
                    .unwrap()
                    .entry(name.clone())
                    .or_default() += 1;
                let open = OpenWatch {
                    api: self.clone(),
                    name,
                };
                let frames = futures::stream::unfold((rx, open), |(mut rx, open)| async move {
                    let line = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(line)), (rx, open)))
                });
                return hyper::Response::new(BodyExt::boxed(StreamBody::new(frames)));
            }
            *self.lists.lock().unwrap().entry(name.clone()).or_default() += 1;
            let items: Vec<Value> = self
                .objects
                .lock()
                .unwrap()
                .get(&name)
                .cloned()
                .into_iter()
                .collect();
            let rv = self.resource_version.lock().unwrap().to_string();
            full(
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMapList",
                       "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }

        fn client(self: &Arc<Self>) -> kube::Client {
            let api = self.clone();
            let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
                let answer = api.answer(&request);
                async move { Ok::<_, Infallible>(answer) }
            });
            kube::Client::new(service, "ns")
        }
    }

    fn color(cm: Option<ConfigMap>) -> Option<String> {
        cm?.data?.get("color").cloned()
    }

    /// Reads `name` until its color is `want` (a change takes a watch event to arrive).
    async fn until_color(cache: &ObjectCache<ConfigMap>, name: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = color(cache.get("ns", name).await.unwrap());
            if seen.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} still reads {seen:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn reads_come_from_one_watch_per_object_and_unread_watches_stop() {
        let api = Arc::new(FakeApi::default());
        api.put("a", "blue");
        let idle_for = Duration::from_secs(1);
        let cache = ObjectCache::<ConfigMap>::stopping_watches_idle_for(api.client(), idle_for);

        // The first read lists the object alone, then watches it.
        assert_eq!(
            color(cache.get("ns", "a").await.unwrap()).as_deref(),
            Some("blue")
        );
        eventually("a watch on a", || api.open_watches_on("a") == 1).await;
        // Later reads come from memory, and a change arrives over the watch.
        for _ in 0..5 {
            assert_eq!(
                color(cache.get("ns", "a").await.unwrap()).as_deref(),
                Some("blue")
            );
        }
        api.put("a", "green");
        until_color(&cache, "a", "green").await;
        assert_eq!(api.lists_of("a"), 1);
        assert_eq!(*api.gets.lock().unwrap(), 0);

        // An object that does not exist reads as absent until it is created.
        assert_eq!(color(cache.get("ns", "b").await.unwrap()), None);
        eventually("a watch on b", || api.open_watches_on("b") == 1).await;
        api.put("b", "red");
        until_color(&cache, "b", "red").await;

        // Unread for longer than the idle period: the next read (of anything) stops them.
        cache.get("ns", "a").await.unwrap();
        cache.get("ns", "b").await.unwrap();
        tokio::time::sleep(idle_for + Duration::from_millis(100)).await;
        assert_eq!((api.open_watches_on("a"), api.open_watches_on("b")), (1, 1));
        assert_eq!(color(cache.get("ns", "c").await.unwrap()), None);
        eventually("a's and b's watches to stop", || {
            api.open_watches_on("a") == 0 && api.open_watches_on("b") == 0
        })
        .await;
        eventually("a watch on c", || api.open_watches_on("c") == 1).await;
        // Read again, a stopped object is listed and watched anew.
        assert_eq!(
            color(cache.get("ns", "a").await.unwrap()).as_deref(),
            Some("green")
        );
        assert_eq!(api.lists_of("a"), 2);
        eventually("a watch on a again", || api.open_watches_on("a") == 1).await;
        assert_eq!(*api.gets.lock().unwrap(), 0);
    }
}
