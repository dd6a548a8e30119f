//! The datastore contract: the few MVCC operations kube-apiserver needs from etcd, and
//! nothing more. Keys are opaque strings (the apiserver lays them out as
//! `/registry/<group>/<resource>/<namespace>/<name>`), values are opaque bytes.
//!
//! Semantics every backend must honour (checked by `conformance`):
//! - one global revision, increased by exactly one for every successful write;
//! - an object's `mod_revision` is the revision of the write that produced it,
//!   `create_revision` the revision of the write that created it;
//! - create fails with `AlreadyExists` if the key exists; update/delete with an expected
//!   `mod_revision` fail with `Conflict` (carrying the current value) if it moved;
//! - a watch from revision R delivers every event with revision > R for the prefix, in
//!   revision order, with no gaps, or fails with `Compacted` if R is older than the
//!   compaction point;
//! - a write that returned `Ok` is durable.

pub mod conformance;
pub mod etcd;
pub mod sqlite;
pub mod testing;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A store revision. Revisions start at 1 and grow by one per write.
pub type Revision = i64;

/// One stored object at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// Which revision a read is served at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest committed state.
    #[default]
    Latest,
    /// Exactly this revision; fails with `Compacted` if it is older than the compaction
    /// point and `FutureRevision` if it has not happened yet.
    Exact(Revision),
}

/// A (possibly paged) range read over all keys starting with `prefix`.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    /// Start at this key (inclusive) instead of the beginning of the prefix; used for
    /// continue tokens. Must start with `prefix`.
    pub start_key: Option<String>,
    /// At most this many items; `None` or 0 means no limit.
    pub limit: Option<usize>,
    pub at: ReadAt,
}

#[derive(Clone, Debug, Default)]
pub struct ListResponse {
    /// Items in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was served at (for `ReadAt::Latest`, the current revision).
    pub revision: Revision,
    /// True if more items follow the last one returned.
    pub more: bool,
    /// How many items remain after this page (best effort; `None` if unknown).
    pub remaining: Option<u64>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A create or update. `prev` is the value before the write (None for a create).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete at `revision`; `prev` is the value that was deleted.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// An ordered, gap-free stream of events. It ends (or yields an error) only if the backend
/// can no longer guarantee that; the caller then relists, as a Kubernetes client would.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    /// The expected mod_revision did not match. `current` is what is stored now.
    #[error("conflict on key {key:?}: expected revision {expected}, found {}", current.mod_revision)]
    Conflict {
        key: String,
        expected: Revision,
        current: Box<KeyValue>,
    },
    /// The requested revision has been compacted away (served as 410 Gone).
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the current one.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The watcher fell too far behind and the backend dropped it; relist and rewatch.
    #[error("watch from revision {0} can no longer be served; relist")]
    WatchLagged(Revision),
    #[error("datastore backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest committed revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Read one key at the newest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Range read; see `ListRequest`.
    async fn list(&self, req: ListRequest) -> Result<ListResponse>;

    /// Count keys under a prefix at the newest revision.
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Create `key` if it does not exist. Returns the stored object.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replace `key` if its mod_revision is still `expected`. Returns the stored object.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Delete `key`, only if its mod_revision is `expected` when given. Returns the deleted
    /// object and the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// Watch every key starting with `prefix`, delivering all events with revision > `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forget history older than `revision`: reads and watches at older revisions then fail
    /// with `Compacted`. Current values are never removed.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The oldest revision that can still be read or watched from.
    async fn compacted_revision(&self) -> Result<Revision>;
}

/// Open the datastore `skiff server` is configured with: etcd for an `http://HOST:PORT`
/// endpoint (several may be comma-separated), otherwise the embedded SQLite file at
/// `sqlite_path` (its directory is created if needed). Both use their default options
/// (automatic compaction every 5 minutes).
pub async fn open(datastore_endpoint: Option<&str>, sqlite_path: &Path) -> Result<Arc<dyn Store>> {
    match datastore_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        None => {
            let path = sqlite_path.to_path_buf();
            let store = tokio::task::spawn_blocking(move || {
                sqlite::SqliteStore::open(&path, sqlite::SqliteOptions::default())
            })
            .await
            .map_err(|e| StoreError::Backend(format!("opening sqlite store: {e}")))??;
            Ok(store)
        }
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
            Ok(etcd::EtcdStore::connect(&[e]).await?)
        }
        Some(e) => Err(StoreError::Backend(format!(
            "unsupported datastore endpoint {e:?}: expected http://HOST:PORT of etcd, or none for the embedded SQLite store"
        ))),
    }
}

/// The exclusive upper bound of the keys starting with `prefix`. Keys are UTF-8, which
/// never contains byte 0xFF, so bumping the last byte cannot overflow and `[0xFF]` bounds
/// every key (etcd would also accept `\0` for "all keys"; this form works for SQLite too).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    match end.last_mut() {
        Some(last) => *last += 1,
        None => end.push(0xFF),
    }
    end
}
