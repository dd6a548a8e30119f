//! The watch hub: one store watch per resource for all of the API's watchers of it, with
//! each event decoded and encoded once and shared, instead of every watch request running
//! its own store watch and JSON work (100 watchers used to cost 100x one).
//!
//! This module owns the fan-out mechanics; what one watcher sees of an event (namespace,
//! selectors, ADDED/MODIFIED/DELETED transitions, rendering) is decided by
//! `handlers::watch`.
//!
//! - `WatchHubs` (one per API server) maps a storage prefix (`/registry/pods/`, every
//!   namespace) to its `Hub`. A hub is started lazily by the first watcher and stopped when
//!   the last one goes (watchers hold it by `Arc`, the map only by `Weak`).
//! - A `Hub` runs one feeder task that reads the store watch and appends every event, as an
//!   `Arc<SharedEvent>`, to a bounded ring of recent events. Nothing the feeder does ever
//!   waits for a watcher.
//! - A `SharedEvent` decodes its objects lazily, once per served version of the resource
//!   (events.k8s.io/v1 and core/v1 Events share one store prefix but not one shape), and
//!   caches each encoded watch-event line the first time any watcher asks for it.
//! - A `Subscription` is one watcher's read position. A watcher whose start revision is
//!   inside the ring's window reads the ring from there. One that is older replays the
//!   store's history with a private store watch and switches to the ring as soon as its
//!   position enters the window (the ring holds every event after `window_start`, so the
//!   switch has no gap, and positions skip what was already seen, so no duplicate either).
//! - Slow watchers: the ring is bounded (events and estimated bytes). A watcher whose next
//!   event has been evicted has fallen too far behind: its subscription ends with
//!   `Next::Lagged` and the handler closes the watch, so the client re-watches from its last
//!   resourceVersion, as kube-apiserver's watch cache does with watchers that cannot keep
//!   up. Other watchers and the feeder are never slowed by it, and memory stays bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use api::registry::{ResourceInfo, RESOURCES};
use store::{Event, Revision, Store, StoreError, WatchStream};

use crate::objects;

/// Limits of each hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The ring keeps at most this many recent events: how far a watcher may fall behind
    /// before it is ended, and how old a start revision the ring can serve.
    pub max_events: usize,
    /// ...and at most about this many bytes. The estimate (`SharedEvent::cost`) covers the
    /// stored bytes, the decoded objects and the encoded lines an event may come to hold.
    pub max_bytes: usize,
    /// A hub starts at its first watcher's revision only if that is at most this many
    /// revisions old; an older watcher replays on its own and the hub starts at the
    /// current revision, so one old watcher cannot make every newer one wait while the
    /// hub replays history.
    pub max_start_lag: i64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_events: 4096,
            max_bytes: 64 << 20,
            max_start_lag: 1000,
        }
    }
}

/// Events the feeder appends per lock of the ring, and a watcher takes per lock.
const BATCH: usize = 256;

/// The hubs of one API server, by storage prefix.
pub struct WatchHubs {
    config: HubConfig,
    hubs: Mutex<HashMap<&'static str, Weak<Hub>>>,
}

impl Default for WatchHubs {
    fn default() -> Self {
        WatchHubs::new(HubConfig::default())
    }
}

impl WatchHubs {
    pub fn new(config: HubConfig) -> WatchHubs {
        WatchHubs {
            config,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribe to every event of `info`'s resource (all namespaces) with revision >
    /// `from`, in revision order and without gaps. Fails as a store watch from `from`
    /// would: `Compacted` if `from` is older than the compaction point.
    pub async fn subscribe(
        &self,
        store: &Arc<dyn Store>,
        info: &'static ResourceInfo,
        from: Revision,
    ) -> Result<Subscription, StoreError> {
        let hub = self.hub_for(store, info, from).await?;
        let view = hub.view_of(info).ok_or_else(|| {
            StoreError::Backend(format!(
                "watching {}: resource is not in the registry under {}",
                info.plural, hub.prefix
            ))
        })?;
        let changed = hub.changed.subscribe();
        if let Some(cursor) = hub.cursor_after(from) {
            // The ring would happily serve a revision the store has compacted away; answer
            // 410 as the store watch did, so clients see the same thing as before.
            let compacted = store.compacted_revision().await?;
            if from < compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted,
                });
            }
            return Ok(Subscription {
                hub,
                view,
                source: Source::Hub { cursor },
                pos: from,
                pending: VecDeque::new(),
                changed,
            });
        }
        let stream = store.watch(&hub.prefix, from).await?;
        Ok(Subscription {
            hub,
            view,
            source: Source::Replay(stream),
            pos: from,
            pending: VecDeque::new(),
            changed,
        })
    }

    /// The running hub for `storage_prefix`, if any.
    fn live(&self, storage_prefix: &str) -> Option<Arc<Hub>> {
        lock(&self.hubs)
            .get(storage_prefix)
            .and_then(Weak::upgrade)
            .filter(|h| !h.has_ended())
    }

    /// How many hubs are running (for tests and diagnostics).
    pub fn running(&self) -> usize {
        lock(&self.hubs)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|h| !h.has_ended())
            .count()
    }

    /// The running hub of `info`'s resource, started (from `from` if that is recent enough,
    /// else from the current revision) if there is none.
    async fn hub_for(
        &self,
        store: &Arc<dyn Store>,
        info: &'static ResourceInfo,
        from: Revision,
    ) -> Result<Arc<Hub>, StoreError> {
        if let Some(hub) = self.live(info.storage_prefix) {
            return Ok(hub);
        }
        let current = store.current_revision().await?;
        let start = hub_start(from, current, self.config.max_start_lag);
        let prefix = info.collection_prefix(None);
        // Opened outside the map's lock (it awaits the store); a concurrent first watcher
        // may win the race below, and then this stream is simply dropped.
        let stream = store.watch(&prefix, start).await?;
        let mut hubs = lock(&self.hubs);
        if let Some(existing) = hubs
            .get(info.storage_prefix)
            .and_then(Weak::upgrade)
            .filter(|h| !h.has_ended())
        {
            return Ok(existing);
        }
        let hub = Hub::start(
            prefix,
            views_sharing(info.storage_prefix),
            start,
            stream,
            self.config.clone(),
        );
        hubs.retain(|_, w| w.strong_count() > 0);
        hubs.insert(info.storage_prefix, Arc::downgrade(&hub));
        Ok(hub)
    }
}

/// Where a new hub starts: at the first watcher's revision when that is recent (capped at
/// the current revision, so a future revision cannot park the hub ahead of everyone),
/// otherwise at the current revision.
fn hub_start(from: Revision, current: Revision, max_start_lag: i64) -> Revision {
    if from >= current.saturating_sub(max_start_lag) {
        from.min(current)
    } else {
        current
    }
}

/// Every served version of the resource stored under `storage_prefix`, in registry order.
fn views_sharing(storage_prefix: &str) -> Vec<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(|r| r.storage_prefix == storage_prefix)
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind (a map of weak
    // references, a ring of events), still consistent enough to keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One resource's shared watch.
struct Hub {
    /// The store prefix watched: the resource in every namespace.
    prefix: String,
    /// The served versions of the resource; a `View` is an index into this.
    views: Vec<&'static ResourceInfo>,
    ring: Mutex<Ring>,
    /// Bumped after every append and at the end, to wake waiting watchers.
    changed: watch::Sender<()>,
    config: HubConfig,
    /// Dropped with the hub (when its last watcher goes), which stops the feeder.
    _stop: oneshot::Sender<()>,
}

/// The recent events of a hub.
struct Ring {
    events: VecDeque<Arc<SharedEvent>>,
    /// The sequence number of `events[0]`; a watcher's cursor is such a number.
    first_seq: u64,
    /// Every event of the prefix with a revision above this is in `events` or still to
    /// come: the hub's start revision, later the revision of the last evicted event.
    window_start: Revision,
    /// Sum of the events' `cost`.
    bytes: usize,
    /// Set when the store watch ended; watchers see it after the last event.
    end: Option<HubEnd>,
}

#[derive(Clone, Debug)]
enum HubEnd {
    /// The store stream ended without an error.
    Closed,
    Failed(Arc<StoreError>),
}

/// The outcome of one read of the ring.
enum Read {
    /// Events were taken (possibly all skipped as already seen).
    Took,
    /// Nothing new yet.
    Empty,
    /// The watcher's next event was evicted; this many events were lost to it.
    Lagged(u64),
    Ended(HubEnd),
}

impl Hub {
    fn start(
        prefix: String,
        views: Vec<&'static ResourceInfo>,
        start: Revision,
        stream: WatchStream,
        config: HubConfig,
    ) -> Arc<Hub> {
        let (stop, stopped) = oneshot::channel();
        let (changed, _) = watch::channel(());
        let hub = Arc::new(Hub {
            prefix,
            views,
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                first_seq: 0,
                window_start: start,
                bytes: 0,
                end: None,
            }),
            changed,
            config,
            _stop: stop,
        });
        tracing::debug!(prefix = %hub.prefix, start, "watch hub started");
        tokio::spawn(feed(Arc::downgrade(&hub), stream, stopped));
        hub
    }

    fn view_of(&self, info: &'static ResourceInfo) -> Option<View> {
        self.views
            .iter()
            .position(|v| {
                std::ptr::eq(*v, info)
                    || (v.group == info.group
                        && v.version == info.version
                        && v.plural == info.plural)
            })
            .map(|index| View { index, info })
    }

    fn has_ended(&self) -> bool {
        lock(&self.ring).end.is_some()
    }

    /// A cursor at the first event after `pos`, if the ring can serve every event after
    /// `pos` (the hub is running and `pos` is inside its window).
    fn cursor_after(&self, pos: Revision) -> Option<u64> {
        let ring = lock(&self.ring);
        if ring.end.is_some() || pos < ring.window_start {
            return None;
        }
        let index = ring.events.partition_point(|e| e.revision() <= pos);
        Some(ring.first_seq + index as u64)
    }

    /// Append what the store delivered; evict the oldest events beyond the limits.
    fn append(&self, items: impl IntoIterator<Item = Option<Result<Event, StoreError>>>) {
        let mut ring = lock(&self.ring);
        for item in items {
            match item {
                Some(Ok(event)) => {
                    let event = Arc::new(SharedEvent::new(event, self.views.len()));
                    ring.bytes += event.cost;
                    ring.events.push_back(event);
                }
                Some(Err(e)) => {
                    tracing::warn!(prefix = %self.prefix, "watch hub's store watch failed: {e}");
                    ring.end = Some(HubEnd::Failed(Arc::new(e)));
                    break;
                }
                None => {
                    tracing::debug!(prefix = %self.prefix, "watch hub's store watch ended");
                    ring.end = Some(HubEnd::Closed);
                    break;
                }
            }
        }
        while ring.events.len() > self.config.max_events
            || (ring.bytes > self.config.max_bytes && ring.events.len() > 1)
        {
            let Some(old) = ring.events.pop_front() else {
                break;
            };
            ring.first_seq += 1;
            ring.window_start = old.revision();
            ring.bytes -= old.cost;
        }
        drop(ring);
        self.changed.send_replace(());
    }

    /// Take up to `BATCH` events at `cursor` into `out`, skipping those at or below `pos`.
    fn read(
        &self,
        cursor: &mut u64,
        pos: &mut Revision,
        out: &mut VecDeque<Arc<SharedEvent>>,
    ) -> Read {
        let ring = lock(&self.ring);
        if *cursor < ring.first_seq {
            return Read::Lagged(ring.first_seq - *cursor);
        }
        let start = (*cursor - ring.first_seq) as usize;
        if start >= ring.events.len() {
            return match &ring.end {
                Some(end) => Read::Ended(end.clone()),
                None => Read::Empty,
            };
        }
        for event in ring.events.range(start..).take(BATCH) {
            *cursor += 1;
            if event.revision() > *pos {
                *pos = event.revision();
                out.push_back(event.clone());
            }
        }
        Read::Took
    }
}

/// The hub's feeder: store watch → ring, until the hub is dropped or the stream ends.
async fn feed(hub: Weak<Hub>, mut stream: WatchStream, mut stop: oneshot::Receiver<()>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut stop => return,
            next = stream.next() => next,
        };
        let mut finished = !matches!(first, Some(Ok(_)));
        batch.push(first);
        // Whatever else is ready goes in the same append, so watchers wake once per batch.
        while !finished && batch.len() < BATCH {
            match stream.next().now_or_never() {
                Some(next) => {
                    finished = !matches!(next, Some(Ok(_)));
                    batch.push(next);
                }
                None => break,
            }
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        hub.append(batch.drain(..));
        if finished {
            return;
        }
    }
}

/// One served version of the watched resource, for a watcher.
#[derive(Clone, Copy)]
pub struct View {
    index: usize,
    info: &'static ResourceInfo,
}

impl View {
    pub fn info(&self) -> &'static ResourceInfo {
        self.info
    }

    /// The only view of a resource, for tests of what watchers make of events.
    #[cfg(test)]
    pub(crate) fn only(info: &'static ResourceInfo) -> View {
        View { index: 0, info }
    }
}

/// The shapes a watch-event line is shared in (a Table is rendered per watcher: its cells
/// depend on the time, e.g. AGE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The object as served (JSON, and the YAML media type, which watch streams as JSON).
    Object,
    /// meta.k8s.io/v1 PartialObjectMetadata.
    PartialMetadata,
}

/// Which watch event a watcher makes of a store event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The new object, as MODIFIED.
    Modified,
    /// The new object, as ADDED (created, or started matching the watcher's selectors).
    Added,
    /// The previous object at the event's revision, as DELETED (deleted, or stopped
    /// matching).
    Deleted,
}

impl Change {
    pub fn event_type(self) -> &'static str {
        match self {
            Change::Modified => "MODIFIED",
            Change::Added => "ADDED",
            Change::Deleted => "DELETED",
        }
    }
}

const LINE_SLOTS: usize = 6;

fn line_slot(shape: Shape, change: Change) -> usize {
    let s = match shape {
        Shape::Object => 0,
        Shape::PartialMetadata => 3,
    };
    s + match change {
        Change::Modified => 0,
        Change::Added => 1,
        Change::Deleted => 2,
    }
}

/// One store event as every watcher of the hub shares it.
pub struct SharedEvent {
    event: Event,
    /// Estimated memory the event may come to hold, for the ring's byte limit.
    cost: usize,
    /// One per served version of the resource.
    views: Box<[ViewCache]>,
}

#[derive(Default)]
struct ViewCache {
    new: OnceLock<Option<Value>>,
    old: OnceLock<Option<Value>>,
    deleted: OnceLock<Option<Value>>,
    lines: [OnceLock<Bytes>; LINE_SLOTS],
}

impl SharedEvent {
    fn new(event: Event, views: usize) -> SharedEvent {
        let stored = match &event {
            Event::Put { kv, prev } => kv.value.len() + prev.as_ref().map_or(0, |p| p.value.len()),
            Event::Delete { prev, .. } => prev.value.len(),
        };
        // A decoded serde_json tree takes several times its JSON's size; an event may hold
        // two or three of them and a few encoded lines.
        let cost = 512 + stored * 8;
        SharedEvent {
            event,
            cost,
            views: (0..views.max(1)).map(|_| ViewCache::default()).collect(),
        }
    }

    /// An event outside any hub, with one view, for tests.
    #[cfg(test)]
    pub(crate) fn single(event: Event) -> SharedEvent {
        SharedEvent::new(event, 1)
    }

    /// The new object if something decoded it already, for tests.
    #[cfg(test)]
    pub(crate) fn new_object_if_decoded(&self, view: View) -> Option<&Value> {
        self.cache(view).new.get().and_then(Option::as_ref)
    }

    pub fn revision(&self) -> Revision {
        self.event.revision()
    }

    pub fn key(&self) -> &str {
        self.event.key()
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.event, Event::Delete { .. })
    }

    /// A create or update of an object that existed before (it has a previous value).
    pub fn has_prev(&self) -> bool {
        matches!(self.event, Event::Put { prev: Some(_), .. })
    }

    fn cache(&self, view: View) -> &ViewCache {
        // Views come from the hub this event belongs to, so the index is in range.
        &self.views[view.index.min(self.views.len() - 1)]
    }

    /// Whether the object before and after the event passes `passes` (given stored
    /// bytes), as `decide` takes them (None: no such object); None when `passes` could not
    /// tell for one of them.
    pub fn stored_passes(
        &self,
        mut passes: impl FnMut(&[u8]) -> Option<bool>,
    ) -> Option<(Option<bool>, Option<bool>)> {
        match &self.event {
            Event::Put { kv, prev } => {
                let new = passes(&kv.value)?;
                let old = match prev {
                    Some(p) => Some(passes(&p.value)?),
                    None => None,
                };
                Some((old, Some(new)))
            }
            Event::Delete { prev, .. } => Some((Some(passes(&prev.value)?), None)),
        }
    }

    /// The object after a create or update, as `view` serves it; None for a delete or an
    /// undecodable stored value.
    pub fn new_object(&self, view: View) -> Option<&Value> {
        self.cache(view)
            .new
            .get_or_init(|| match &self.event {
                Event::Put { kv, .. } => objects::decode(view.info, kv).ok(),
                Event::Delete { .. } => None,
            })
            .as_ref()
    }

    /// The object before the event, as `view` serves it (at its own resourceVersion).
    pub fn old_object(&self, view: View) -> Option<&Value> {
        self.cache(view)
            .old
            .get_or_init(|| {
                let prev = match &self.event {
                    Event::Put { prev, .. } => prev.as_ref(),
                    Event::Delete { prev, .. } => Some(prev),
                };
                prev.and_then(|kv| objects::decode(view.info, kv).ok())
            })
            .as_ref()
    }

    /// The previous object stamped with the event's revision: what a DELETED event carries.
    pub fn deleted_object(&self, view: View) -> Option<&Value> {
        self.cache(view)
            .deleted
            .get_or_init(|| {
                let mut gone = self.old_object(view)?.clone();
                objects::set_resource_version(&mut gone, self.revision());
                Some(gone)
            })
            .as_ref()
    }

    /// The encoded line for (`shape`, `change`), made by `encode` the first time any
    /// watcher asks for it and shared afterwards.
    pub fn line(
        &self,
        view: View,
        shape: Shape,
        change: Change,
        encode: impl FnOnce() -> Bytes,
    ) -> Bytes {
        self.cache(view).lines[line_slot(shape, change)]
            .get_or_init(encode)
            .clone()
    }

    /// The `Shape::Object` line for `change`, spliced from the stored bytes when `view`
    /// serves them as stored (`objects::served_json_into`), so the object is never decoded;
    /// otherwise `encode` makes it from the decoded object. None when there is no such
    /// object or it cannot be decoded. Either way the bytes are the same, and shared.
    pub fn object_line(
        &self,
        view: View,
        change: Change,
        encode: impl FnOnce(&Value) -> Bytes,
    ) -> Option<Bytes> {
        let slot = &self.cache(view).lines[line_slot(Shape::Object, change)];
        if let Some(line) = slot.get() {
            return Some(line.clone());
        }
        let (kv, rev) = match (&self.event, change) {
            (Event::Put { kv, .. }, Change::Added | Change::Modified) => (kv, kv.mod_revision),
            (
                Event::Put {
                    prev: Some(prev), ..
                },
                Change::Deleted,
            ) => (prev, self.revision()),
            (Event::Delete { prev, revision }, Change::Deleted) => (prev, *revision),
            _ => return None,
        };
        let mut line = Vec::with_capacity(kv.value.len() + 64);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(change.event_type().as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        if objects::served_json_into(view.info, &kv.value, rev, &mut line).is_some() {
            line.extend_from_slice(b"}\n");
            return Some(slot.get_or_init(|| Bytes::from(line)).clone());
        }
        let object = match change {
            Change::Added | Change::Modified => self.new_object(view)?,
            Change::Deleted => self.deleted_object(view)?,
        };
        Some(slot.get_or_init(|| encode(object)).clone())
    }
}

/// What a subscription yields.
pub enum Next {
    Event(Arc<SharedEvent>),
    /// The watcher fell further behind than the ring holds; it must end, and its client
    /// re-watch from the last resourceVersion it saw.
    Lagged(u64),
    /// The store watch failed (e.g. `Compacted`, or the store closed).
    Failed(Arc<StoreError>),
    /// The store watch ended.
    Closed,
}

enum Source {
    /// Replaying the store's history through a private store watch, until the position
    /// enters the hub's window.
    Replay(WatchStream),
    /// Reading the hub's ring at this sequence number.
    Hub {
        cursor: u64,
    },
    Done,
}

/// One watcher's position in a hub's stream of events.
pub struct Subscription {
    hub: Arc<Hub>,
    view: View,
    source: Source,
    /// Every event at or below this revision has been yielded (or was before the start).
    pos: Revision,
    pending: VecDeque<Arc<SharedEvent>>,
    changed: watch::Receiver<()>,
}

impl Subscription {
    /// The version of the resource this watcher is served.
    pub fn view(&self) -> View {
        self.view
    }

    /// True once the subscription reads the shared ring (not replaying privately).
    pub fn is_shared(&self) -> bool {
        matches!(self.source, Source::Hub { .. })
    }

    /// The next event of the whole resource (every namespace) after the last one, in
    /// revision order. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Next::Event(event);
            }
            match &mut self.source {
                Source::Done => return Next::Closed,
                Source::Replay(stream) => match stream.next().await {
                    Some(Ok(event)) => {
                        if event.revision() > self.pos {
                            self.pos = event.revision();
                            self.pending
                                .push_back(Arc::new(SharedEvent::new(event, self.hub.views.len())));
                        }
                        if let Some(cursor) = self.hub.cursor_after(self.pos) {
                            tracing::debug!(prefix = %self.hub.prefix, pos = self.pos, "watcher caught up; reading the hub");
                            self.source = Source::Hub { cursor };
                        }
                    }
                    Some(Err(e)) => {
                        self.source = Source::Done;
                        return Next::Failed(Arc::new(e));
                    }
                    None => {
                        self.source = Source::Done;
                        return Next::Closed;
                    }
                },
                Source::Hub { cursor } => {
                    // Mark the current notification seen before reading, so an append
                    // after the read wakes the wait below.
                    self.changed.borrow_and_update();
                    match self.hub.read(cursor, &mut self.pos, &mut self.pending) {
                        Read::Took => {}
                        Read::Empty => {
                            if self.changed.changed().await.is_err() {
                                // Cannot happen while we hold the hub, which owns the sender.
                                self.source = Source::Done;
                            }
                        }
                        Read::Lagged(missed) => {
                            tracing::info!(
                                prefix = %self.hub.prefix,
                                pos = self.pos,
                                missed,
                                "watcher fell too far behind its watch hub; closing it so the client re-watches"
                            );
                            self.source = Source::Done;
                            return Next::Lagged(missed);
                        }
                        Read::Ended(end) => {
                            self.source = Source::Done;
                            return match end {
                                HubEnd::Closed => Next::Closed,
                                HubEnd::Failed(e) => Next::Failed(e),
                            };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
