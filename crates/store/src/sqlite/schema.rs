//! Opening SQLite connections with the pragmas durability depends on, and the schema.
//!
//! `kv` is the history: one row per write, keyed by revision (the rowid, so inserts are
//! appends). A delete writes a tombstone row (`deleted = 1`). `prev_revision` links a row
//! to the live row it replaced (0 for a create), which gives watch events their `prev`
//! and lets compaction find superseded rows without scanning the table.
//! `current` maps every live key to its newest revision so latest reads skip history.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::db_err;
use crate::{Result, Revision, StoreError};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    revision        INTEGER PRIMARY KEY,
    key             BLOB    NOT NULL,
    value           BLOB    NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    deleted         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
CREATE TABLE IF NOT EXISTS current (
    key      BLOB    PRIMARY KEY,
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// Readers wait this long for a checkpoint or recovery instead of failing at once.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep one query plan per prepared statement. The bundled SQLite is built with STAT4,
/// which otherwise re-prepares a statement whenever a bound parameter might change the
/// plan: with our point lookups that was every execution, 15% of server CPU under load.
fn stable_plans(conn: &Connection, ctx: &str) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(|_| ())
    .map_err(db_err(format!(
        "enabling the query planner stability guarantee on {ctx}"
    )))
}

/// Open the single write connection, creating and migrating the file if needed.
pub(crate) fn open_writer(path: &Path) -> Result<Connection> {
    let ctx = path.display().to_string();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(format!("opening {ctx}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(format!("setting busy timeout on {ctx}")))?;
    // auto_vacuum only takes effect before the first table exists; on an existing file
    // this is a no-op and the file keeps whatever mode it was created with.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(db_err(format!("setting auto_vacuum on {ctx}")))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(db_err(format!("enabling WAL on {ctx}")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "sqlite: {ctx}: journal_mode is {mode:?}, WAL is required"
        )));
    }
    // FULL fsyncs the WAL at every commit: a commit that returned is on disk, which is
    // what lets the writer acknowledge a write (NORMAL may lose the last commits on power
    // loss).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err(format!("setting synchronous=FULL on {ctx}")))?;
    // Truncate a WAL that grew during a long read back to 64 MiB after checkpoints.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(db_err(format!("setting journal_size_limit on {ctx}")))?;
    conn.pragma_update(None, "cache_size", -16 * 1024)
        .map_err(db_err(format!("setting cache_size on {ctx}")))?;
    // No checkpoint inside COMMIT: the writer checkpoints between batches, once the
    // callers of the batch have their answers (`writer::Writer::checkpoint_if_due`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(db_err(format!("disabling wal_autocheckpoint on {ctx}")))?;
    conn.execute_batch(SCHEMA)
        .map_err(db_err(format!("creating schema in {ctx}")))?;
    let version: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db_err(format!("reading schema version of {ctx}")))?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('schema', ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(db_err(format!("recording schema version in {ctx}")))?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(StoreError::Backend(format!(
                "sqlite: {ctx}: schema version {other} is not supported (this build knows {SCHEMA_VERSION})"
            )))
        }
    }
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn, &ctx)?;
    Ok(conn)
}

/// Open one read-only connection; they see committed snapshots and never block the writer.
pub(crate) fn open_reader(path: &Path) -> Result<Connection> {
    let ctx = path.display().to_string();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(format!("opening {ctx} for reading")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(format!("setting busy timeout on {ctx}")))?;
    conn.pragma_update(None, "cache_size", -8 * 1024)
        .map_err(db_err(format!("setting cache_size on {ctx}")))?;
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn, &ctx)?;
    Ok(conn)
}

/// Open the connection the checkpointer thread uses.
pub(crate) fn open_checkpointer(path: &Path) -> Result<Connection> {
    let ctx = path.display().to_string();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(format!("opening {ctx} for checkpoints")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(format!("setting busy timeout on {ctx}")))?;
    // The checkpoint's own fsync of the database file must be FULL too: the WAL may be
    // reset only after the database pages are durable.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err(format!("setting synchronous=FULL on {ctx}")))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(db_err(format!("disabling auto-checkpoint on {ctx}")))?;
    Ok(conn)
}

/// Read one persisted counter from `meta`.
pub(crate) fn meta(conn: &Connection, name: &str) -> Result<Revision> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)))
        .map_err(db_err(format!("reading meta {name:?}")))
}

/// The current and compacted revisions recorded in the file.
pub(crate) fn load_revisions(conn: &Connection, path: &Path) -> Result<(Revision, Revision)> {
    let revision = meta(conn, "revision")?;
    let compacted = meta(conn, "compacted")?;
    if compacted > revision {
        return Err(StoreError::Backend(format!(
            "sqlite: {}: compacted revision {compacted} is newer than current revision {revision}",
            path.display()
        )));
    }
    Ok((revision, compacted))
}
