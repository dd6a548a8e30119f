//! The read side: a small pool of read-only connections used from `spawn_blocking` (point
//! reads on the caller's thread when a connection is free), and
//! the queries for get, list (latest and at an older revision), count and the history
//! pages a watch catches up from. Every multi-statement read runs in one read transaction,
//! so it sees one committed snapshot, and WAL readers never wait for the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Row};
use tokio::sync::Semaphore;

use super::{db_err, db_err_with, schema};
use crate::prefix_end;
use crate::{Event, KeyValue, ListRequest, ListResponse, ReadAt, Result, Revision, StoreError};

pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf, size: usize) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// Run `f` on a pooled connection on the blocking thread pool. The semaphore caps the
    /// number of connections; they are opened lazily and kept.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("sqlite read pool is closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => schema::open_reader(&pool.path)?,
            };
            let result = f(&mut conn);
            // A failed query leaves the connection usable (its transaction was dropped,
            // which rolls back), so it goes back to the pool either way.
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite read task failed: {e}")))?
    }
}

impl ReadPool {
    /// Run a point read (`f` is one indexed lookup, tens of microseconds) on the calling
    /// thread when an opened connection is idle: handing it to the blocking pool cost
    /// more CPU (two thread wake-ups) than the read itself. Anything else, or a busy
    /// pool, goes through `run`.
    pub(crate) async fn run_point<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return self.run(f).await;
        };
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(mut conn) = pooled else {
            drop(_permit);
            return self.run(f).await;
        };
        let result = f(&mut conn);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }
}

/// The revision a snapshot shows and the oldest revision it can still serve.
struct Snapshot {
    revision: Revision,
    compacted: Revision,
}

fn snapshot(conn: &Connection) -> Result<Snapshot> {
    Ok(Snapshot {
        revision: schema::meta(conn, "revision")?,
        compacted: schema::meta(conn, "compacted")?,
    })
}

fn key_string(raw: Vec<u8>, revision: Revision) -> rusqlite::Result<String> {
    String::from_utf8(raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            format!("key at revision {revision} is not UTF-8: {e}").into(),
        )
    })
}

/// Row layout shared by the item queries: key, value, create_revision, mod_revision.
fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    let mod_revision: Revision = row.get(3)?;
    Ok(KeyValue {
        key: key_string(row.get(0)?, mod_revision)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision,
    })
}

pub(crate) fn get_latest(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
    conn.prepare_cached(
        "SELECT c.key, h.value, h.create_revision, h.revision
         FROM current c JOIN kv h ON h.revision = c.revision WHERE c.key = ?1",
    )
    .and_then(|mut s| s.query_row([key.as_bytes()], kv_from_row).optional())
    .map_err(db_err_with(|| format!("reading key {key:?}")))
}

pub(crate) fn count(conn: &mut Connection, prefix: &str) -> Result<u64> {
    let end = prefix_end(prefix);
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM current WHERE key >= ?1 AND key < ?2")
        .and_then(|mut s| s.query_row((prefix.as_bytes(), &end[..]), |r| r.get(0)))
        .map_err(db_err(format!("counting prefix {prefix:?}")))?;
    Ok(n.max(0) as u64)
}

const LIST_LATEST: &str = "
    SELECT c.key, h.value, h.create_revision, h.revision
    FROM current c JOIN kv h ON h.revision = c.revision
    WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3";

// For each key, the newest row at or before the revision, unless it is a tombstone. Written
// as a correlated lookup rather than `GROUP BY key` in a subquery: that form made SQLite
// sort the whole rest of the range in a temporary b-tree before applying LIMIT, so every
// page of a paged list read everything after it. This one walks the (key, revision) index
// in key order and stops at LIMIT.
const LIST_AT: &str = "
    SELECT h.key, h.value, h.create_revision, h.revision FROM kv h
    WHERE h.key >= ?1 AND h.key < ?2 AND h.revision <= ?4 AND h.deleted = 0
      AND h.revision = (SELECT MAX(p.revision) FROM kv p WHERE p.key = h.key AND p.revision <= ?4)
    ORDER BY h.key LIMIT ?3";

const COUNT_AFTER_LATEST: &str = "SELECT COUNT(*) FROM current WHERE key > ?1 AND key < ?2";

// Live keys after ?1 at revision ?3, derived from the live keys now (`current`, cheap):
// only keys written after ?3 can differ, so take those out and add back the ones that
// were live at ?3. Counting over history directly read every remaining row of the table
// for each page of a paged list.
const COUNT_AFTER_AT: &str = "
    WITH changed AS (
        SELECT DISTINCT key FROM kv WHERE key > ?1 AND key < ?2 AND revision > ?3)
    SELECT
        (SELECT COUNT(*) FROM current WHERE key > ?1 AND key < ?2)
        - (SELECT COUNT(*) FROM changed d WHERE EXISTS (SELECT 1 FROM current c WHERE c.key = d.key))
        + (SELECT COUNT(*) FROM changed d WHERE (
            SELECT p.deleted FROM kv p WHERE p.key = d.key AND p.revision <= ?3
            ORDER BY p.revision DESC LIMIT 1) = 0)";

pub(crate) fn list(conn: &mut Connection, req: &ListRequest) -> Result<ListResponse> {
    let tx = conn
        .transaction()
        .map_err(db_err(format!("starting list of {:?}", req.prefix)))?;
    let snap = snapshot(&tx)?;
    let at = match req.at {
        ReadAt::Latest => snap.revision,
        ReadAt::Exact(rev) if rev < snap.compacted => {
            return Err(StoreError::Compacted {
                requested: rev,
                compacted: snap.compacted,
            })
        }
        ReadAt::Exact(rev) if rev > snap.revision => {
            return Err(StoreError::FutureRevision {
                requested: rev,
                current: snap.revision,
            })
        }
        ReadAt::Exact(rev) => rev,
    };
    // The current table is exactly the state at the snapshot's revision.
    let latest = at == snap.revision;
    let start = req.start_key.as_deref().unwrap_or(&req.prefix);
    let end = prefix_end(&req.prefix);
    let limit = req.limit.filter(|l| *l > 0);
    // One extra row tells whether more follow without a second query.
    let fetch = limit.map_or(-1, |l| l.saturating_add(1).min(i64::MAX as usize) as i64);
    let ctx = || format!("listing {:?} at revision {at}", req.prefix);
    let mut items = {
        let mut stmt = tx
            .prepare_cached(if latest { LIST_LATEST } else { LIST_AT })
            .map_err(db_err(ctx()))?;
        let rows = if latest {
            stmt.query_map((start.as_bytes(), &end[..], fetch), kv_from_row)
        } else {
            stmt.query_map((start.as_bytes(), &end[..], fetch, at), kv_from_row)
        };
        rows.and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_err(ctx()))?
    };
    let more = matches!(limit, Some(l) if items.len() > l);
    let mut remaining = Some(0);
    if let (true, Some(l)) = (more, limit) {
        items.truncate(l);
        if let Some(last) = items.last() {
            let n: i64 = if latest {
                tx.prepare_cached(COUNT_AFTER_LATEST)
                    .and_then(|mut s| s.query_row((last.key.as_bytes(), &end[..]), |r| r.get(0)))
            } else {
                tx.prepare_cached(COUNT_AFTER_AT).and_then(|mut s| {
                    s.query_row((last.key.as_bytes(), &end[..], at), |r| r.get(0))
                })
            }
            .map_err(db_err(format!(
                "counting remaining items of {:?}",
                req.prefix
            )))?;
            remaining = Some(n.max(0) as u64);
        }
    }
    Ok(ListResponse {
        items,
        revision: at,
        more,
        remaining,
    })
}

/// One page of history for a watch catching up.
pub(crate) struct EventPage {
    pub events: Vec<Event>,
    /// The revision of the snapshot the page was read from.
    pub snapshot: Revision,
    /// True if the page holds every matching event up to `snapshot`.
    pub complete: bool,
}

const EVENTS: &str = "
    SELECT h.revision, h.key, h.value, h.create_revision, h.deleted,
           p.revision, p.value, p.create_revision
    FROM kv h LEFT JOIN kv p ON p.revision = h.prev_revision
    WHERE h.revision > ?1 AND h.revision <= ?2 AND h.key >= ?3 AND h.key < ?4
    ORDER BY h.revision LIMIT ?5";

/// Events for keys starting with `prefix` with revision > `after`, oldest first, at most
/// `page` of them.
pub(crate) fn events_page(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    page: usize,
) -> Result<EventPage> {
    let tx = conn
        .transaction()
        .map_err(db_err(format!("starting watch read of {prefix:?}")))?;
    let snap = snapshot(&tx)?;
    if after < snap.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: snap.compacted,
        });
    }
    let end = prefix_end(prefix);
    let ctx = || format!("reading events of {prefix:?} after revision {after}");
    let mut stmt = tx.prepare_cached(EVENTS).map_err(db_err(ctx()))?;
    let rows = stmt
        .query_map(
            (
                after,
                snap.revision,
                prefix.as_bytes(),
                &end[..],
                page as i64,
            ),
            |row| {
                let revision: Revision = row.get(0)?;
                let key = key_string(row.get(1)?, revision)?;
                let deleted: bool = row.get(4)?;
                let prev_revision: Option<Revision> = row.get(5)?;
                let prev = match prev_revision {
                    Some(mod_revision) => Some(KeyValue {
                        key: key.clone(),
                        value: Bytes::from(row.get::<_, Vec<u8>>(6)?),
                        create_revision: row.get(7)?,
                        mod_revision,
                    }),
                    None => None,
                };
                Ok((
                    revision,
                    key,
                    deleted,
                    prev,
                    row.get::<_, Vec<u8>>(2)?,
                    row.get(3)?,
                ))
            },
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err(ctx()))?;
    let complete = rows.len() < page;
    let mut events = Vec::with_capacity(rows.len());
    for (revision, key, deleted, prev, value, create_revision) in rows {
        if deleted {
            let prev = prev.ok_or_else(|| {
                StoreError::Backend(format!(
                    "sqlite: tombstone of {key:?} at revision {revision} has lost its previous row"
                ))
            })?;
            events.push(Event::Delete { prev, revision });
        } else {
            events.push(Event::Put {
                kv: KeyValue {
                    key,
                    value: Bytes::from(value),
                    create_revision,
                    mod_revision: revision,
                },
                prev,
            });
        }
    }
    Ok(EventPage {
        events,
        snapshot: snap.revision,
        complete,
    })
}
