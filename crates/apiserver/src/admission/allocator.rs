//! The table of cluster IPs and node ports held by Services, so that allocating one costs
//! the same with 10 Services as with 10,000 (the allocator used to list every Service on
//! every create: creating N Services was quadratic).
//!
//! Design, chosen as the simplest one that is never staler than that list was:
//! - The table lives inside `ApiServer::allocation_lock`, so only the holder of the lock
//!   decides, and it keeps the lock until its write is stored (as before).
//! - It is built from one list of Services at first use (so a restart, or a store some other
//!   server wrote, starts from the truth), then follows a store watch from the list's
//!   revision. A feeder task applies every event as it comes: a Service put replaces that
//!   Service's claims, a delete drops them. Deletes through any path (a namespace going, the
//!   garbage collector, another API server on the same etcd) are therefore seen too.
//! - Before deciding, the holder reads the store's current revision R and waits until the
//!   feeder has applied every event up to R: the table then says exactly what a list at R
//!   would (every successful write bumps the revision by one, including this server's last
//!   create, which is how a create sees the one just before it). The watch covers every key
//!   (`/`), not just Services, because the store has no progress notification: an event of
//!   any kind at revision >= R is the proof that nothing below R is still on its way.
//!   The feeder only compares keys of other kinds, but on etcd the watch streams every
//!   write to the server once more.
//! - If the watch fails (compaction overtook it, the store closed) or does not reach R within
//!   `CATCH_UP_LIMIT`, the table is thrown away and rebuilt from a list: correctness never
//!   depends on the watch, only the speed.
//! - Claims are counted, not owned: a Service holding an address twice, or two Services
//!   holding one (written by an older version without this table), stay consistent when one
//!   of them goes.
//!
//! Limit (as before): two API servers sharing one etcd decide under separate locks, so
//! two creates at the same instant on different servers may pick the same random address.
//! Upstream closes that with a bitmap object written with compare-and-swap.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use store::{Event, ListRequest, Revision, Store, StoreError, WatchStream};

/// How long a decision waits for the watch to reach the store's revision before the table
/// is rebuilt from a list instead.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);
/// Every key the apiserver writes starts with this (see `ResourceInfo::key`).
const ALL_KEYS: &str = "/";
/// Events applied per lock of the table.
const BATCH: usize = 256;

/// What one Service holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub ips: Vec<Ipv4Addr>,
    pub node_ports: Vec<u16>,
}

impl Claims {
    /// The claims of a stored Service (its JSON); an undecodable value holds nothing.
    pub fn of_stored(value: &[u8]) -> Claims {
        serde_json::from_slice::<Value>(value)
            .map(|svc| Claims::of(&svc))
            .unwrap_or_default()
    }

    /// The cluster IPs (`clusterIP` and `clusterIPs`, "None" is none) and node ports of a
    /// Service.
    pub fn of(svc: &Value) -> Claims {
        let spec = &svc["spec"];
        let mut ips: Vec<Ipv4Addr> = Vec::new();
        let listed = spec["clusterIPs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for ip in std::iter::once(&spec["clusterIP"]).chain(listed) {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        let node_ports = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_u64())
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        Claims { ips, node_ports }
    }
}

/// The claims of every Service, by store key, with how many Services hold each value.
#[derive(Debug, Default)]
pub struct Table {
    by_service: HashMap<String, Claims>,
    ips: HashMap<Ipv4Addr, u32>,
    node_ports: HashMap<u16, u32>,
}

impl Table {
    /// Records what the Service at `key` holds now (replacing what it held).
    pub fn set(&mut self, key: &str, claims: Claims) {
        self.remove(key);
        for ip in &claims.ips {
            *self.ips.entry(*ip).or_default() += 1;
        }
        for port in &claims.node_ports {
            *self.node_ports.entry(*port).or_default() += 1;
        }
        self.by_service.insert(key.to_string(), claims);
    }

    /// Forgets the Service at `key`.
    pub fn remove(&mut self, key: &str) {
        let Some(old) = self.by_service.remove(key) else {
            return;
        };
        for ip in &old.ips {
            release(&mut self.ips, ip);
        }
        for port in &old.node_ports {
            release(&mut self.node_ports, port);
        }
    }

    /// Whether a Service other than the one at `key` holds `ip`.
    pub fn ip_taken(&self, ip: Ipv4Addr, key: &str) -> bool {
        let own = self.held_by(key, |c| c.ips.iter().filter(|i| **i == ip).count());
        self.ips.get(&ip).copied().unwrap_or(0) as usize > own
    }

    /// Whether a Service other than the one at `key` holds node port `port`.
    pub fn node_port_taken(&self, port: u16, key: &str) -> bool {
        let own = self.held_by(key, |c| c.node_ports.iter().filter(|p| **p == port).count());
        self.node_ports.get(&port).copied().unwrap_or(0) as usize > own
    }

    /// What the Service at `key` holds, as far as the table knows.
    pub fn claims(&self, key: &str) -> Option<&Claims> {
        self.by_service.get(key)
    }

    pub fn services(&self) -> usize {
        self.by_service.len()
    }

    fn held_by(&self, key: &str, count: impl Fn(&Claims) -> usize) -> usize {
        self.by_service.get(key).map_or(0, count)
    }

    fn apply(&mut self, prefix: &str, event: &Event) {
        if !event.key().starts_with(prefix) {
            return;
        }
        match event {
            Event::Put { kv, .. } => self.set(&kv.key, Claims::of_stored(&kv.value)),
            Event::Delete { prev, .. } => self.remove(&prev.key),
        }
    }
}

fn release<T: std::hash::Hash + Eq>(counts: &mut HashMap<T, u32>, value: &T) {
    if let Some(n) = counts.get_mut(value) {
        *n -= 1;
        if *n == 0 {
            counts.remove(value);
        }
    }
}

/// How far the feeder has come.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// Every event up to this revision is in the table.
    applied: Revision,
    /// The watch ended; the table no longer follows the store.
    ended: bool,
}

/// The table and its feeder. Lives inside `ApiServer::allocation_lock`.
#[derive(Default)]
pub struct ServiceAllocator {
    feed: Option<Feed>,
}

struct Feed {
    table: Arc<Mutex<Table>>,
    progress: watch::Receiver<Progress>,
    /// Dropped with the allocator, which stops the feeder.
    _stop: oneshot::Sender<()>,
}

impl Feed {
    fn ended(&self) -> bool {
        self.progress.borrow().ended
    }
}

/// The table, caught up with the store; hold it only for the (synchronous) decision.
pub struct Fresh(Arc<Mutex<Table>>);

impl Fresh {
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // Plain counters: a panic while holding the lock leaves them usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServiceAllocator {
    /// The table as a list of Services at the store's current revision would show it,
    /// built at the first call and kept by the watch afterwards.
    pub async fn fresh(
        &mut self,
        store: &Arc<dyn Store>,
        services_prefix: &str,
    ) -> Result<Fresh, StoreError> {
        for _ in 0..2 {
            if self.feed.as_ref().is_none_or(Feed::ended) {
                self.feed = Some(start(store, services_prefix).await?);
            }
            let Some(feed) = self.feed.as_mut() else {
                continue;
            };
            let target = store.current_revision().await?;
            let reached = tokio::time::timeout(
                CATCH_UP_LIMIT,
                feed.progress.wait_for(|p| p.applied >= target || p.ended),
            )
            .await
            .map(|r| r.map(|p| *p));
            match reached {
                Ok(Ok(p)) if !p.ended => return Ok(Fresh(feed.table.clone())),
                Ok(_) => tracing::info!("service allocation table: its watch ended; rebuilding"),
                Err(_) => tracing::warn!(
                    target,
                    "service allocation table: the watch did not reach the store's revision in {CATCH_UP_LIMIT:?}; rebuilding from a list"
                ),
            }
            self.feed = None;
        }
        Err(StoreError::Backend(
            "the service allocation table could not catch up with the store".into(),
        ))
    }
}

/// Lists the Services, fills a table and starts following every key from the list's
/// revision.
async fn start(store: &Arc<dyn Store>, services_prefix: &str) -> Result<Feed, StoreError> {
    let list = store
        .list(ListRequest {
            prefix: services_prefix.to_string(),
            ..Default::default()
        })
        .await?;
    let mut table = Table::default();
    for kv in &list.items {
        table.set(&kv.key, Claims::of_stored(&kv.value));
    }
    tracing::debug!(
        services = table.services(),
        revision = list.revision,
        "service allocation table built"
    );
    let stream = store.watch(ALL_KEYS, list.revision).await?;
    let table = Arc::new(Mutex::new(table));
    let (progress_tx, progress) = watch::channel(Progress {
        applied: list.revision,
        ended: false,
    });
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(follow(
        table.clone(),
        services_prefix.to_string(),
        stream,
        progress_tx,
        stopped,
    ));
    Ok(Feed {
        table,
        progress,
        _stop: stop,
    })
}

/// The feeder: store watch → table, until the allocator is dropped or the watch ends.
async fn follow(
    table: Arc<Mutex<Table>>,
    prefix: String,
    mut stream: WatchStream,
    progress: watch::Sender<Progress>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut stop => return,
            next = stream.next() => next,
        };
        batch.push(first);
        // Whatever else is ready goes in under the same lock.
        while batch.len() < BATCH && matches!(batch.last(), Some(Some(Ok(_)))) {
            match stream.next().now_or_never() {
                Some(next) => batch.push(next),
                None => break,
            }
        }
        let mut applied = None;
        let mut ended = false;
        {
            let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
            for item in batch.drain(..) {
                match item {
                    Some(Ok(event)) => {
                        table.apply(&prefix, &event);
                        applied = Some(event.revision());
                    }
                    Some(Err(e)) => {
                        tracing::info!("service allocation table: store watch failed: {e}");
                        ended = true;
                    }
                    None => ended = true,
                }
            }
        }
        progress.send_modify(|p| {
            if let Some(rev) = applied {
                p.applied = p.applied.max(rev);
            }
            p.ended |= ended;
        });
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn svc(ips: &[&str], node_ports: &[u16]) -> Bytes {
        let ports: Vec<_> = node_ports
            .iter()
            .map(|p| serde_json::json!({"port": 80, "nodePort": p}))
            .collect();
        let mut spec = serde_json::json!({"clusterIPs": ips, "ports": ports});
        if let Some(first) = ips.first() {
            spec["clusterIP"] = serde_json::json!(first);
        }
        Bytes::from(serde_json::json!({"spec": spec}).to_string())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn claims_of_a_stored_service() {
        let c = Claims::of_stored(&svc(&["10.43.0.5"], &[30080, 30081]));
        assert_eq!(c.ips, vec![ip("10.43.0.5")]);
        assert_eq!(c.node_ports, vec![30080, 30081]);
        let headless = Claims::of_stored(br#"{"spec":{"clusterIP":"None","clusterIPs":["None"]}}"#);
        assert_eq!(headless, Claims::default());
        assert_eq!(Claims::of_stored(b"not json"), Claims::default());
    }

    #[test]
    fn a_services_own_claims_are_not_taken_for_it() {
        let mut t = Table::default();
        t.set("/a", Claims::of_stored(&svc(&["10.43.0.5"], &[30080])));
        assert!(t.ip_taken(ip("10.43.0.5"), "/b"));
        assert!(!t.ip_taken(ip("10.43.0.5"), "/a"));
        assert!(t.node_port_taken(30080, "/b"));
        assert!(!t.node_port_taken(30080, "/a"));
        assert!(!t.node_port_taken(30081, "/b"));
        // An update that drops the port frees it; a delete frees everything.
        t.set("/a", Claims::of_stored(&svc(&["10.43.0.5"], &[])));
        assert!(!t.node_port_taken(30080, "/b"));
        t.remove("/a");
        assert!(!t.ip_taken(ip("10.43.0.5"), "/b"));
        assert_eq!(t.services(), 0);
    }

    #[test]
    fn duplicates_stay_counted_until_both_go() {
        let mut t = Table::default();
        t.set("/a", Claims::of_stored(&svc(&["10.43.0.5"], &[30080])));
        t.set("/b", Claims::of_stored(&svc(&["10.43.0.5"], &[30080])));
        t.remove("/a");
        assert!(t.ip_taken(ip("10.43.0.5"), "/c"));
        assert!(t.node_port_taken(30080, "/c"));
        assert!(t.ip_taken(ip("10.43.0.5"), "/a"));
        t.remove("/b");
        assert!(!t.ip_taken(ip("10.43.0.5"), "/c"));
    }

    #[tokio::test]
    async fn follows_the_store_and_is_never_staler_than_a_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = store::sqlite::SqliteOptions {
            compact_interval: None,
            ..Default::default()
        };
        let store: Arc<dyn Store> =
            store::sqlite::SqliteStore::open(&dir.path().join("state.db"), opts).expect("open");
        let prefix = "/registry/services/specs/";
        let key = |n: &str| format!("{prefix}default/{n}");
        store
            .create(&key("a"), svc(&["10.43.0.5"], &[30080]))
            .await
            .unwrap();
        let mut alloc = ServiceAllocator::default();
        let fresh = alloc.fresh(&store, prefix).await.unwrap();
        assert!(fresh.lock().node_port_taken(30080, &key("b")));
        drop(fresh);
        // Changes through the store (not through the allocator) show up before the next
        // decision: a delete, a create, and writes of other kinds in between.
        let (kv, _) = store.delete(&key("a"), None).await.unwrap();
        assert_eq!(kv.key, key("a"));
        store
            .create("/registry/configmaps/default/x", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        store
            .create(&key("c"), svc(&["10.43.0.7"], &[30090]))
            .await
            .unwrap();
        let fresh = alloc.fresh(&store, prefix).await.unwrap();
        let t = fresh.lock();
        assert!(!t.node_port_taken(30080, &key("b")));
        assert!(t.node_port_taken(30090, &key("b")));
        assert!(t.ip_taken(ip("10.43.0.7"), &key("b")));
        assert_eq!(t.services(), 1);
    }
}
