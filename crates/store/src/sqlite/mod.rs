//! The embedded SQLite backend: an MVCC history table in one SQLite file (WAL,
//! `synchronous=FULL`), one writer thread that group-commits every queued write in one
//! transaction, a small pool of read-only connections, an in-memory event broadcast for
//! watches, and automatic compaction so the file stays bounded.
//!
//! Layout on disk (see `schema.rs`): `kv` holds one row per write (its revision is the
//! rowid, so history is append-only and ordered); `current` maps each live key to the
//! revision of its newest row so reads at the latest revision never scan history; `meta`
//! persists the current and compacted revisions.

mod read;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, oneshot};

use crate::{
    Event, KeyValue, ListRequest, ListResponse, ReadAt, Result, Revision, Store, StoreError,
    WatchStream,
};
use read::ReadPool;
use writer::{Job, Outcome, WriteKind};

/// Tuning knobs of the SQLite backend. `Default` is what `skiff server` uses.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How often automatic compaction runs; `None` disables it (explicit `compact` still
    /// works). Each run compacts to the revision that was current at the previous run, so
    /// between one and two intervals of history are kept, like kube-apiserver's
    /// 5-minute compaction loop against etcd.
    pub compact_interval: Option<Duration>,
    /// Automatic compaction never removes the newest this-many revisions, so a client
    /// that lists and then watches shortly after always finds its revision.
    pub compact_retain_revisions: i64,
    /// Size of the read-only connection pool (concurrent reads and watch catch-ups).
    pub read_connections: usize,
    /// The most writes one group commit may contain.
    pub max_batch: usize,
    /// Group-commit delay (PostgreSQL's `commit_delay`): when the previous commit held
    /// more than one write, concurrent writers are about to resubmit, so the writer waits
    /// up to this long for them before starting the transaction, merging what would be
    /// several fsyncs into one. A lone writer never waits. Zero (the default: on the
    /// 2-core test machine it did not measurably help) disables it.
    pub commit_delay: Duration,
    /// How many committed batches the live event broadcast keeps for slow watchers. A
    /// watcher that falls further behind transparently re-reads the history table, so this
    /// only trades memory for disk reads.
    pub watch_buffer: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            compact_interval: Some(Duration::from_secs(300)),
            compact_retain_revisions: 1000,
            read_connections: 4,
            max_batch: 1024,
            commit_delay: Duration::from_micros(COMMIT_DELAY_US),
            watch_buffer: 1024,
        }
    }
}

const COMMIT_DELAY_US: u64 = 0;

/// A batch of events committed together, in revision order. `last` is the batch's highest
/// revision (every revision up to it is committed once the batch is published).
#[derive(Debug)]
pub(crate) struct EventBatch {
    pub events: Vec<Event>,
    pub last: Revision,
}

/// Revisions the writer publishes for lock-free reads of `current_revision` and
/// `compacted_revision`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub revision: AtomicI64,
    pub compacted: AtomicI64,
    pub commits: AtomicU64,
    pub writes: AtomicU64,
}

/// Group-commit figures since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Write transactions committed (each is one WAL fsync).
    pub commits: u64,
    /// Successful writes they contained.
    pub writes: u64,
}

/// The SQLite-backed `Store`. Dropping it finishes queued writes and closes the file.
pub struct SqliteStore {
    path: PathBuf,
    jobs: std::sync::mpsc::Sender<Job>,
    reads: Arc<ReadPool>,
    events: Arc<broadcast::Sender<Arc<EventBatch>>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
    compactor: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    checkpointer: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating if needed) the store at `path`. Recovers cleanly after a crash:
    /// SQLite replays or discards the WAL, and every acknowledged write was fsynced.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<Arc<SqliteStore>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("creating directory {}: {e}", dir.display()))
            })?;
        }
        let conn = schema::open_writer(path)?;
        let (revision, compacted) = schema::load_revisions(&conn, path)?;
        let counters = Arc::new(Counters {
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            ..Default::default()
        });
        let (events, _) = broadcast::channel(opts.watch_buffer.max(16));
        let events = Arc::new(events);
        let (jobs, rx) = std::sync::mpsc::channel();
        let writer = writer::spawn(
            conn,
            path.to_path_buf(),
            rx,
            events.clone(),
            counters.clone(),
            opts.max_batch.max(1),
            opts.commit_delay,
        )?;
        let compactor = match opts.compact_interval {
            Some(every) => Some(writer::spawn_compactor(
                jobs.clone(),
                every,
                opts.compact_retain_revisions.max(0),
            )?),
            None => None,
        };
        let checkpointer = Some(writer::spawn_checkpointer(path.to_path_buf())?);
        Ok(Arc::new(SqliteStore {
            path: path.to_path_buf(),
            jobs,
            reads: Arc::new(ReadPool::new(
                path.to_path_buf(),
                opts.read_connections.max(1),
            )),
            events,
            counters,
            writer: Some(writer),
            compactor,
            checkpointer,
        }))
    }

    /// The database file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How well group commit is batching: writes per commit = `writes / commits`.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Bytes used on disk by the database and its WAL (what an operator sees with `du`).
    pub fn disk_usage(&self) -> u64 {
        let mut total = 0;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            if let Ok(m) = std::fs::metadata(PathBuf::from(p)) {
                total += m.len();
            }
        }
        total
    }

    async fn write(&self, kind: WriteKind) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Write { kind, reply })
            .map_err(|_| StoreError::Backend("sqlite writer thread has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Backend("sqlite writer thread stopped before answering".into())
        })?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Stop the compactor first (it holds a job sender), then let the writer drain
        // what is queued and close the write connection before the file is reopened.
        if let Some((stop, handle)) = self.compactor.take() {
            drop(stop);
            let _ = handle.join();
        }
        let _ = self.jobs.send(Job::Shutdown);
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        if let Some((stop, handle)) = self.checkpointer.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.counters.revision.load(Ordering::Acquire))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.reads
            .run_point(move |conn| read::get_latest(conn, &key))
            .await
    }

    async fn list(&self, req: ListRequest) -> Result<ListResponse> {
        if let Some(start) = &req.start_key {
            if !start.starts_with(&req.prefix) {
                return Err(StoreError::Backend(format!(
                    "list start key {start:?} is outside prefix {:?}",
                    req.prefix
                )));
            }
        }
        if let ReadAt::Exact(rev) = req.at {
            // Cheap early answer for the common 410 case without touching SQLite.
            let compacted = self.counters.compacted.load(Ordering::Acquire);
            if rev < compacted {
                return Err(StoreError::Compacted {
                    requested: rev,
                    compacted,
                });
            }
        }
        self.reads.run(move |conn| read::list(conn, &req)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let prefix = prefix.to_owned();
        self.reads.run(move |conn| read::count(conn, &prefix)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        match self
            .write(WriteKind::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            Outcome::Put { kv, .. } => Ok(kv),
            Outcome::Deleted { .. } => Err(unexpected("create", key)),
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        match self
            .write(WriteKind::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?
        {
            Outcome::Put { kv, .. } => Ok(kv),
            Outcome::Deleted { .. } => Err(unexpected("update", key)),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        match self
            .write(WriteKind::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            Outcome::Deleted { prev, revision } => Ok((prev, revision)),
            Outcome::Put { .. } => Err(unexpected("delete", key)),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::start(
            prefix.to_owned(),
            after,
            self.reads.clone(),
            &self.events,
            Arc::downgrade(&self.events),
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Compact {
                revision,
                reply: Some(reply),
            })
            .map_err(|_| StoreError::Backend("sqlite writer thread has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Backend("sqlite writer thread stopped before compacting".into())
        })?
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.counters.compacted.load(Ordering::Acquire))
    }
}

fn unexpected(op: &str, key: &str) -> StoreError {
    StoreError::Backend(format!(
        "sqlite writer returned a mismatched outcome for {op} of {key:?}"
    ))
}

/// Map a SQLite error to a backend error that says what we were doing.
pub(crate) fn db_err(
    context: impl std::fmt::Display,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("sqlite: {context}: {e}"))
}

/// [`db_err`] with the context worded only if there is an error: for the calls every
/// write and read makes, where formatting it up front cost ~0.5% of a busy server's CPU.
pub(crate) fn db_err_with(
    context: impl FnOnce() -> String,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| db_err(context())(e)
}

#[cfg(test)]
mod tests;
