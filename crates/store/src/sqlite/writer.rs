//! The single writer thread: group commit and compaction.
//!
//! Every write goes through one channel to one thread that owns the write connection.
//! The thread takes everything queued (up to `max_batch`), applies each request in order
//! inside ONE immediate transaction, commits once (one WAL fsync for the whole batch),
//! and only then answers the callers and publishes the batch's events. A request whose
//! compare-and-swap fails consumes no revision and leaves the rest of the batch alone;
//! an SQLite (I/O-level) error fails the whole batch, which is rolled back.
//! WAL checkpoints mostly run on a separate thread and connection, so a commit usually
//! waits only for its own WAL fsync. Only a checkpoint that finishes while no frame is
//! appended lets the next transaction restart the WAL from its beginning, and under a
//! steady write load only the writer can find such a moment: so once the WAL holds
//! `WRITER_CHECKPOINT_PAGES`, the writer checkpoints itself, after answering the batch
//! that crossed the mark (SQLite's auto-checkpoint would run inside that batch's COMMIT,
//! before anyone is answered). By then the checkpointer has copied most frames, so it
//! costs little more than the database fsync. Without it the WAL grows without bound.
//!
//! Compaction runs on the same thread in chunks of `COMPACT_CHUNK` revisions, each its
//! own short transaction, interleaved with write batches so it never stalls writers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::{broadcast, oneshot};

use super::{db_err, db_err_with, Counters, EventBatch};
use crate::{Event, KeyValue, Result, Revision, StoreError};

/// Revisions handled per compaction transaction.
const COMPACT_CHUNK: Revision = 10_000;

/// WAL size (in pages) at which the writer checkpoints itself; 8,000 pages is 32 MiB.
/// Each such checkpoint briefly holds up the writes queued behind it (the database
/// fsync), so fewer, larger WAL generations mean fewer such pauses: at 1,000 updates/s
/// one every ~3 s instead of every ~0.7 s with 2,000 pages.
pub(crate) const WRITER_CHECKPOINT_PAGES: i64 = 8_000;

pub(crate) enum WriteKind {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    Deleted {
        prev: KeyValue,
        revision: Revision,
    },
}

pub(crate) enum Job {
    Write {
        kind: WriteKind,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    /// An explicit compaction; answered once every chunk up to `revision` is done.
    Compact {
        revision: Revision,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A tick of the automatic compaction loop.
    AutoCompact { retain: Revision },
    /// Finish what is queued and close the connection.
    Shutdown,
}

struct Compaction {
    target: Revision,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    events: Arc<broadcast::Sender<Arc<EventBatch>>>,
    counters: Arc<Counters>,
    max_batch: usize,
    commit_delay: Duration,
    /// Writes in the previous commit: more than one means concurrent writers.
    last_batch: usize,
    revision: Revision,
    compacted: Revision,
    compaction: Option<Compaction>,
    /// The revision current at the previous automatic-compaction tick.
    last_tick: Option<Revision>,
    /// Pages in the WAL after the last commit, as SQLite's WAL hook reports them.
    wal_pages: Arc<AtomicI64>,
    /// WAL size at the writer's last checkpoint that could not restart the WAL (a reader
    /// held it), so a busy WAL is retried every few hundred pages, not after every batch.
    checkpointed_at: i64,
}

pub(crate) fn spawn(
    mut conn: Connection,
    path: PathBuf,
    rx: mpsc::Receiver<Job>,
    events: Arc<broadcast::Sender<Arc<EventBatch>>>,
    counters: Arc<Counters>,
    max_batch: usize,
    commit_delay: Duration,
) -> Result<JoinHandle<()>> {
    let wal_pages = Arc::new(AtomicI64::new(0));
    let reported = wal_pages.clone();
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
        reported.store(i64::from(pages), Ordering::Relaxed);
        Ok(())
    }))
    .map_err(db_err(format!(
        "installing the WAL hook on {}",
        path.display()
    )))?;
    let writer = Writer {
        wal_pages,
        checkpointed_at: 0,
        conn,
        revision: counters.revision.load(Ordering::Acquire),
        compacted: counters.compacted.load(Ordering::Acquire),
        path,
        events,
        counters,
        max_batch,
        commit_delay,
        last_batch: 0,
        compaction: None,
        last_tick: None,
    };
    std::thread::Builder::new()
        .name("store-sqlite-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Backend(format!("spawning sqlite writer thread: {e}")))
}

/// Ticks automatic compaction every `every` until the returned sender is dropped.
pub(crate) fn spawn_compactor(
    jobs: mpsc::Sender<Job>,
    every: Duration,
    retain: Revision,
) -> Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("store-sqlite-compactor".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if jobs.send(Job::AutoCompact { retain }).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        })
        .map_err(|e| StoreError::Backend(format!("spawning sqlite compactor thread: {e}")))?;
    Ok((stop, handle))
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Runs PASSIVE checkpoints on its own connection until the returned sender is dropped,
/// so the database-file fsync of a checkpoint never lands on a commit's latency.
pub(crate) fn spawn_checkpointer(
    path: PathBuf,
) -> Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>)> {
    let conn = super::schema::open_checkpointer(&path)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("store-sqlite-checkpointer".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                // PASSIVE never blocks the writer or readers; what it cannot copy now
                // it copies next time.
                let r: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                match r {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, path = %path.display(), "sqlite checkpoint failed");
                    }
                    Err(_) => {}
                }
            }
            // A last full checkpoint so a clean shutdown leaves a small WAL.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(|e| StoreError::Backend(format!("spawning sqlite checkpointer thread: {e}")))?;
    Ok((stop, handle))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut shutdown = false;
        while !shutdown {
            let mut jobs = Vec::new();
            // Block for work only when no compaction is pending; otherwise poll so the
            // compaction advances between write batches.
            if self.compaction.is_none() {
                match rx.recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            shutdown |= self.drain(&rx, &mut jobs);
            if self.last_batch > 1 && !self.commit_delay.is_zero() && !shutdown {
                let deadline = Instant::now() + self.commit_delay;
                while jobs.len() < self.max_batch {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(job) => {
                            jobs.push(job);
                            shutdown |= self.drain(&rx, &mut jobs);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            shutdown = true;
                            break;
                        }
                    }
                }
            }
            let mut writes = Vec::with_capacity(jobs.len());
            for job in jobs {
                match job {
                    Job::Write { kind, reply } => writes.push((kind, reply)),
                    Job::Compact { revision, reply } => self.request_compaction(revision, reply),
                    Job::AutoCompact { retain } => self.tick(retain),
                    Job::Shutdown => shutdown = true,
                }
            }
            self.last_batch = writes.len();
            if !writes.is_empty() {
                self.commit_batch(writes);
            }
            if self.compaction.is_some() && !shutdown {
                self.compaction_step();
            }
            self.checkpoint_if_due();
        }
        // A compaction cut short resumes nowhere; the persisted compacted revision is
        // always consistent with what was deleted, so the next run simply starts later.
        if let Some(c) = self.compaction.take() {
            for w in c.waiters {
                let _ = w.send(Err(StoreError::Backend(
                    "sqlite store closed during compaction".into(),
                )));
            }
        }
    }

    /// Checkpoint on the write connection once the WAL holds `WRITER_CHECKPOINT_PAGES`
    /// (see the module header). PASSIVE: a reader still using old frames only means the
    /// WAL is restarted at a later attempt.
    fn checkpoint_if_due(&mut self) {
        let pages = self.wal_pages.load(Ordering::Relaxed);
        if pages < WRITER_CHECKPOINT_PAGES {
            self.checkpointed_at = 0;
            return;
        }
        if self.checkpointed_at > 0 && pages < self.checkpointed_at + WRITER_CHECKPOINT_PAGES / 16 {
            return;
        }
        self.checkpointed_at = pages;
        if let Err(e) = self
            .conn
            .wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE)
        {
            tracing::warn!(error = %e, path = %self.path.display(), "sqlite writer checkpoint failed");
        }
    }

    /// Take whatever is queued, up to `max_batch`; true if every sender is gone.
    fn drain(&self, rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>) -> bool {
        while jobs.len() < self.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => return true,
            }
        }
        false
    }

    fn commit_batch(&mut self, writes: Vec<(WriteKind, oneshot::Sender<Result<Outcome>>)>) {
        let start = self.revision;
        let path = &self.path;
        let applied = (|| -> Result<(Revision, Vec<Result<Outcome>>)> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err_with(|| {
                    format!("starting write transaction on {}", path.display())
                }))?;
            let mut next = start;
            let mut results = Vec::with_capacity(writes.len());
            for (kind, _) in &writes {
                match apply(&tx, next + 1, kind) {
                    Ok(outcome) => {
                        next += 1;
                        results.push(Ok(outcome));
                    }
                    // An I/O-level failure: dropping `tx` rolls the whole batch back.
                    Err(e @ StoreError::Backend(_)) => return Err(e),
                    // An expected outcome (AlreadyExists, NotFound, Conflict) of this
                    // request alone.
                    Err(e) => results.push(Err(e)),
                }
            }
            if next != start {
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
                    .and_then(|mut s| s.execute([next]))
                    .map_err(db_err_with(|| format!("recording revision {next}")))?;
            }
            tx.commit().map_err(db_err_with(|| {
                format!(
                    "committing revisions {}..={next} to {}",
                    start + 1,
                    path.display()
                )
            }))?;
            Ok((next, results))
        })();
        match applied {
            Ok((next, results)) => {
                self.revision = next;
                self.counters.revision.store(next, Ordering::Release);
                if next != start {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .writes
                        .fetch_add((next - start) as u64, Ordering::Relaxed);
                    let events = results
                        .iter()
                        .filter_map(|r| r.as_ref().ok())
                        .map(|o| match o {
                            Outcome::Put { kv, prev } => Event::Put {
                                kv: kv.clone(),
                                prev: prev.clone(),
                            },
                            Outcome::Deleted { prev, revision } => Event::Delete {
                                prev: prev.clone(),
                                revision: *revision,
                            },
                        })
                        .collect();
                    // No receivers is fine: watches catch up from the table.
                    let _ = self
                        .events
                        .send(Arc::new(EventBatch { events, last: next }));
                }
                for ((_, reply), result) in writes.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                // Nothing of the batch is durable, so nobody may be told otherwise; the
                // in-memory revision stays where the file is.
                tracing::error!(error = %e, "sqlite write batch failed");
                let msg = e.to_string();
                for (_, reply) in writes {
                    let _ = reply.send(Err(StoreError::Backend(msg.clone())));
                }
            }
        }
    }

    fn request_compaction(
        &mut self,
        revision: Revision,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        let answer = |reply: Option<oneshot::Sender<Result<()>>>, r: Result<()>| {
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        };
        if revision > self.revision {
            return answer(
                reply,
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current: self.revision,
                }),
            );
        }
        if revision <= self.compacted {
            // Same answer etcd gives for compacting at or below the compaction point.
            return answer(
                reply,
                Err(StoreError::Compacted {
                    requested: revision,
                    compacted: self.compacted,
                }),
            );
        }
        let c = self.compaction.get_or_insert_with(|| Compaction {
            target: revision,
            waiters: Vec::new(),
        });
        c.target = c.target.max(revision);
        c.waiters.extend(reply);
    }

    /// Compact to the revision seen at the previous tick, but keep at least `retain`
    /// revisions: every revision stays readable for at least one interval.
    fn tick(&mut self, retain: Revision) {
        let previous = self.last_tick.replace(self.revision);
        let Some(previous) = previous else { return };
        let target = previous.min(self.revision - retain);
        let floor = self
            .compaction
            .as_ref()
            .map_or(self.compacted, |c| c.target);
        if target > floor {
            tracing::debug!(target, "automatic sqlite compaction");
            self.request_compaction(target, None);
        }
    }

    fn compaction_step(&mut self) {
        let Some(target) = self.compaction.as_ref().map(|c| c.target) else {
            return;
        };
        let from = self.compacted;
        let to = target.min(from + COMPACT_CHUNK);
        match compact_range(&mut self.conn, from, to) {
            Ok(()) => {
                self.compacted = to;
                self.counters.compacted.store(to, Ordering::Release);
                if to >= target {
                    if let Err(e) = release_free_pages(&self.conn) {
                        tracing::warn!(error = %e, "sqlite incremental vacuum failed");
                    }
                    if let Some(c) = self.compaction.take() {
                        for w in c.waiters {
                            let _ = w.send(Ok(()));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, from, to, "sqlite compaction failed");
                if let Some(c) = self.compaction.take() {
                    for w in c.waiters {
                        let _ = w.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
            }
        }
    }
}

/// The newest live row of `key`, read inside the write transaction.
fn current(tx: &Transaction<'_>, key: &str) -> Result<Option<KeyValue>> {
    tx.prepare_cached(
        "SELECT h.value, h.create_revision, h.revision
         FROM current c JOIN kv h ON h.revision = c.revision WHERE c.key = ?1",
    )
    .and_then(|mut s| {
        s.query_row([key.as_bytes()], |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(db_err_with(|| format!("reading key {key:?} for a write")))
}

/// Apply one write at revision `rev` (only consumed if this returns Ok).
fn apply(tx: &Transaction<'_>, rev: Revision, kind: &WriteKind) -> Result<Outcome> {
    let (key, value, deleted, prev) = match kind {
        WriteKind::Create { key, value } => {
            if current(tx, key)?.is_some() {
                return Err(StoreError::AlreadyExists { key: key.clone() });
            }
            (key, value.clone(), false, None)
        }
        WriteKind::Update {
            key,
            value,
            expected,
        } => {
            let cur = current(tx, key)?.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            if cur.mod_revision != *expected {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: Box::new(cur),
                });
            }
            (key, value.clone(), false, Some(cur))
        }
        WriteKind::Delete { key, expected } => {
            let cur = current(tx, key)?.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            if let Some(expected) = expected {
                if cur.mod_revision != *expected {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: Box::new(cur),
                    });
                }
            }
            (key, Bytes::new(), true, Some(cur))
        }
    };
    let create_revision = prev.as_ref().map_or(rev, |p| p.create_revision);
    let prev_revision = prev.as_ref().map_or(0, |p| p.mod_revision);
    let ctx = || format!("writing key {key:?} at revision {rev}");
    // No savepoint: nothing here can fail for a reason specific to this request (the
    // revision is unique by construction), so an error is an I/O-level failure and the
    // caller rolls back the whole batch.
    tx.prepare_cached(
        "INSERT INTO kv (revision, key, value, create_revision, prev_revision, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute((
            rev,
            key.as_bytes(),
            &value[..],
            create_revision,
            prev_revision,
            deleted,
        ))
    })
    .map_err(db_err_with(ctx))?;
    if deleted {
        tx.prepare_cached("DELETE FROM current WHERE key = ?1")
            .and_then(|mut s| s.execute([key.as_bytes()]))
    } else {
        tx.prepare_cached(
            "INSERT INTO current (key, revision) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET revision = excluded.revision",
        )
        .and_then(|mut s| s.execute((key.as_bytes(), rev)))
    }
    .map_err(db_err_with(ctx))?;
    Ok(match prev {
        Some(prev) if deleted => Outcome::Deleted {
            prev,
            revision: rev,
        },
        prev => Outcome::Put {
            kv: KeyValue {
                key: key.clone(),
                value,
                create_revision,
                mod_revision: rev,
            },
            prev,
        },
    })
}

/// Forget history in (from, to]: every row those revisions superseded (their
/// `prev_revision`), and tombstones themselves. What remains is, for each key, its newest
/// row at or before `to` unless that is a tombstone, plus everything after `to`, which is
/// exactly what reads at revisions >= `to` and watches from `to` need (including the
/// `prev` of later events, which is never superseded at or before `to`).
fn compact_range(conn: &mut Connection, from: Revision, to: Revision) -> Result<()> {
    let ctx = || format!("compacting revisions {}..={to}", from + 1);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(ctx()))?;
    // Order matters: tombstones must still be present to name the rows they superseded.
    tx.prepare_cached(
        "DELETE FROM kv WHERE revision IN (
             SELECT prev_revision FROM kv
             WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
    )
    .and_then(|mut s| s.execute((from, to)))
    .map_err(db_err(ctx()))?;
    tx.prepare_cached("DELETE FROM kv WHERE revision > ?1 AND revision <= ?2 AND deleted = 1")
        .and_then(|mut s| s.execute((from, to)))
        .map_err(db_err(ctx()))?;
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")
        .and_then(|mut s| s.execute([to]))
        .map_err(db_err(ctx()))?;
    tx.commit().map_err(db_err(ctx()))
}

/// Give free pages back to the file system when more than a quarter of the file is free.
/// Some slack stays: the next writes reuse free pages, and shrinking and regrowing the
/// file at every compaction would only cost fsyncs.
fn release_free_pages(conn: &Connection) -> Result<()> {
    let get = |pragma: &str| -> Result<i64> {
        conn.pragma_query_value(None, pragma, |r| r.get(0))
            .map_err(db_err(format!("reading PRAGMA {pragma}")))
    };
    if get("auto_vacuum")? != 2 {
        return Ok(());
    }
    let free = get("freelist_count")?;
    let pages = get("page_count")?;
    let keep = pages / 4;
    if free <= keep || free < 256 {
        return Ok(());
    }
    let release = free - keep;
    let mut stmt = conn
        .prepare(&format!("PRAGMA incremental_vacuum({release})"))
        .map_err(db_err("preparing incremental vacuum"))?;
    let mut rows = stmt
        .query([])
        .map_err(db_err("running incremental vacuum"))?;
    while rows
        .next()
        .map_err(db_err("running incremental vacuum"))?
        .is_some()
    {}
    Ok(())
}
