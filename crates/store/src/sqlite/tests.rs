//! Unit tests of SQLite-specific behaviour (the shared semantics live in `conformance`):
//! persistence across reopen, lagging watchers, automatic compaction, bounded file size,
//! group commit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{SqliteOptions, SqliteStore};
use crate::{prefix_end, ListRequest, ReadAt, Store, StoreError};

fn open(dir: &tempfile::TempDir, opts: SqliteOptions) -> Arc<SqliteStore> {
    SqliteStore::open(&dir.path().join("state.db"), opts).expect("open store")
}

fn no_auto() -> SqliteOptions {
    SqliteOptions {
        compact_interval: None,
        ..Default::default()
    }
}

fn rows(store: &SqliteStore, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(store.path()).expect("open for inspection");
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count rows")
}

#[test]
fn prefix_end_bounds_the_prefix() {
    assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    assert_eq!(prefix_end(""), vec![0xFF]);
    assert!("/a/zzz".as_bytes() < &prefix_end("/a/")[..]);
    assert!("é".as_bytes() < &prefix_end("")[..]);
}

#[tokio::test]
async fn reopen_keeps_data_revisions_and_compaction_point() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rev, compacted) = {
        let store = open(&dir, no_auto());
        let a = store
            .create("/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        store
            .update("/a", Bytes::from_static(b"2"), a.mod_revision)
            .await
            .expect("update");
        store
            .create("/b", Bytes::from_static(b"b"))
            .await
            .expect("create");
        store.compact(2).await.expect("compact");
        (
            store.current_revision().await.expect("rev"),
            store.compacted_revision().await.expect("compacted"),
        )
    };
    let store = open(&dir, no_auto());
    assert_eq!(store.current_revision().await.expect("rev"), rev);
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        compacted
    );
    assert_eq!(
        store.get("/a").await.expect("get").map(|kv| kv.value),
        Some(Bytes::from_static(b"2"))
    );
    let next = store.create("/c", Bytes::new()).await.expect("create");
    assert_eq!(
        next.mod_revision,
        rev + 1,
        "revisions continue after reopen"
    );
}

#[tokio::test]
async fn new_files_use_incremental_auto_vacuum_and_wal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let conn = rusqlite::Connection::open(store.path()).expect("open for inspection");
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .expect("auto_vacuum");
    assert_eq!(mode, 2, "auto_vacuum=INCREMENTAL");
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(journal, "wal");
}

/// A watcher that does not read while thousands of batches commit overflows the
/// broadcast; it must then continue from the history table without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watcher_catches_up_from_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        &dir,
        SqliteOptions {
            watch_buffer: 16,
            ..no_auto()
        },
    );
    let start = store.current_revision().await.expect("rev");
    let mut w = store.watch("/lag/", start).await.expect("watch");
    let mut kv = store
        .create("/lag/k", Bytes::from_static(b"0"))
        .await
        .expect("create");
    for i in 1..300 {
        kv = store
            .update("/lag/k", Bytes::from(i.to_string()), kv.mod_revision)
            .await
            .expect("update");
    }
    for want in start + 1..=kv.mod_revision {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("no error");
        assert_eq!(ev.revision(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_overtaken_by_compaction_gets_compacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        &dir,
        SqliteOptions {
            watch_buffer: 16,
            ..no_auto()
        },
    );
    let mut w = store.watch("/lag/", 0).await.expect("watch");
    let mut kv = store
        .create("/lag/k", Bytes::from_static(b"0"))
        .await
        .expect("create");
    for i in 1..100 {
        kv = store
            .update("/lag/k", Bytes::from(i.to_string()), kv.mod_revision)
            .await
            .expect("update");
    }
    store.compact(kv.mod_revision).await.expect("compact");
    // The first events were buffered or are read as one history page; after them the
    // watcher must fail rather than skip revisions.
    let mut last = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("item in time")
        {
            Some(Ok(ev)) => {
                assert_eq!(ev.revision(), last + 1, "no gap before failing");
                last = ev.revision();
                assert!(
                    last < kv.mod_revision,
                    "cannot reach the end through compaction"
                );
            }
            Some(Err(StoreError::Compacted { .. })) => break,
            other => panic!("expected Compacted, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_bounds_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        &dir,
        SqliteOptions {
            compact_interval: Some(Duration::from_millis(50)),
            compact_retain_revisions: 20,
            ..Default::default()
        },
    );
    let mut kv = store
        .create("/auto/k", Bytes::from_static(b"0"))
        .await
        .expect("create");
    for i in 1..400 {
        kv = store
            .update("/auto/k", Bytes::from(i.to_string()), kv.mod_revision)
            .await
            .expect("update");
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    // Two quiet ticks: the second compacts to what the first saw, minus the retained 20.
    let want = kv.mod_revision - 20;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut compacted = 0;
    while compacted != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        compacted = store.compacted_revision().await.expect("compacted");
    }
    assert_eq!(compacted, want, "compacted up to the retained window");
    assert_eq!(
        rows(&store, "kv"),
        21,
        "one row per retained revision plus the base"
    );
    // The retained window is still fully readable and watchable.
    let at = store
        .list(ListRequest {
            prefix: "/auto/".into(),
            at: ReadAt::Exact(compacted),
            ..Default::default()
        })
        .await
        .expect("list at the compaction point");
    assert_eq!(at.items.len(), 1);
    let mut w = store.watch("/auto/", compacted).await.expect("watch");
    for want in compacted + 1..=kv.mod_revision {
        let ev = w.next().await.expect("open").expect("event");
        assert_eq!(ev.revision(), want);
    }
}

/// Constant object count, constant updates, compaction after each round: the file stops
/// growing once free pages are being reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_stays_bounded_under_constant_updates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let value = Bytes::from(vec![b'x'; 2048]);
    let mut revs = Vec::new();
    for i in 0..100 {
        let kv = store
            .create(&format!("/size/{i}"), value.clone())
            .await
            .expect("create");
        revs.push(kv.mod_revision);
    }
    let mut sizes = Vec::new();
    for _round in 0..30 {
        for (i, rev) in revs.iter_mut().enumerate() {
            *rev = store
                .update(&format!("/size/{i}"), value.clone(), *rev)
                .await
                .expect("update")
                .mod_revision;
        }
        let current = store.current_revision().await.expect("rev");
        store.compact(current).await.expect("compact");
        let conn = rusqlite::Connection::open(store.path()).expect("inspect");
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        sizes.push(pages);
    }
    let early = sizes[5];
    let late = *sizes.last().expect("sizes");
    assert!(
        late <= early + early / 10,
        "database pages grew from {early} to {late} under a constant working set: {sizes:?}"
    );
    assert_eq!(
        rows(&store, "kv"),
        100,
        "only current values remain after compaction"
    );
}

/// The writer checkpoints between batches (no auto-checkpoint inside COMMIT): under a
/// steady stream of writes the WAL must still be restarted, so the file stops growing
/// near the writer's checkpoint size instead of holding every frame ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_restarted_under_steady_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    // 16 KiB values: ~6 WAL frames per write, 3,000 writes = ~18,000 frames (~74 MiB)
    // if nothing restarted the WAL.
    let value = Bytes::from(vec![b'w'; 16 * 1024]);
    let mut rev = store
        .create("/wal/steady", value.clone())
        .await
        .expect("create")
        .mod_revision;
    let wal = dir.path().join("state.db-wal");
    let mut largest = 0;
    for _ in 0..3_000 {
        rev = store
            .update("/wal/steady", value.clone(), rev)
            .await
            .expect("update")
            .mod_revision;
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let bound = (super::writer::WRITER_CHECKPOINT_PAGES as u64 + 1_000) * (4096 + 24);
    assert!(
        largest < bound,
        "the WAL grew to {largest} bytes (bound {bound}): it was never restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    store
                        .create(&format!("/gc/{t}/{i}"), Bytes::from_static(b"v"))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 64 * 20);
    assert!(
        stats.commits < stats.writes,
        "group commit should batch concurrent writes: {stats:?}"
    );
}

#[tokio::test]
async fn a_failed_cas_in_a_batch_leaves_the_others_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let a = store
        .create("/b/a", Bytes::from_static(b"a"))
        .await
        .expect("create");
    // Issue the writes concurrently so they are likely to share a batch.
    let (good, bad, other) = tokio::join!(
        store.update("/b/a", Bytes::from_static(b"a2"), a.mod_revision),
        store.update("/b/a", Bytes::from_static(b"a3"), a.mod_revision),
        store.create("/b/c", Bytes::from_static(b"c")),
    );
    assert!(good.is_ok() != bad.is_ok(), "exactly one CAS wins");
    other.expect("an unrelated write in the same batch succeeds");
    assert_eq!(
        store.current_revision().await.expect("rev"),
        a.mod_revision + 2
    );
}

#[tokio::test]
async fn list_rejects_a_start_key_outside_the_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let err = store
        .list(ListRequest {
            prefix: "/a/".into(),
            start_key: Some("/b/x".into()),
            ..Default::default()
        })
        .await
        .expect_err("start key outside the prefix");
    assert!(err.to_string().contains("/b/x"));
}

/// Pages of a list at an older revision hold exactly the keys live then, with the
/// remaining count of that revision, whatever was written since (updates, deletes,
/// deletes and re-creates, creates then deletes) on either side of each page boundary.
#[tokio::test]
async fn paged_lists_at_an_older_revision_match_that_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, no_auto());
    let key = |i: usize| format!("/p/k{i:03}");
    for i in 0..120 {
        if i % 9 != 4 {
            store
                .create(&key(i), Bytes::from("v0"))
                .await
                .expect("create");
        }
    }
    // Deleted before the snapshot: absent at it.
    store.delete(&key(7), None).await.expect("delete");
    let at = store.current_revision().await.expect("revision");
    let want: Vec<String> = (0..120)
        .filter(|i| i % 9 != 4 && *i != 7)
        .map(key)
        .collect();
    for i in (0..120).step_by(5) {
        let k = key(i);
        match i % 4 {
            0 if want.contains(&k) => {
                store.delete(&k, None).await.expect("delete after");
            }
            1 if want.contains(&k) => {
                store.delete(&k, None).await.expect("delete after");
                store
                    .create(&k, Bytes::from("again"))
                    .await
                    .expect("re-create");
            }
            2 if !want.contains(&k) => {
                store
                    .create(&k, Bytes::from("new"))
                    .await
                    .expect("create after");
                store.delete(&k, None).await.expect("delete new");
            }
            _ if !want.contains(&k) => {
                store
                    .create(&k, Bytes::from("new"))
                    .await
                    .expect("create after");
            }
            _ => {
                let cur = store.get(&k).await.expect("get").expect("live");
                store
                    .update(&k, Bytes::from("v1"), cur.mod_revision)
                    .await
                    .expect("update after");
            }
        }
    }
    let mut got = Vec::new();
    let mut start = None;
    loop {
        let page = store
            .list(ListRequest {
                prefix: "/p/".into(),
                start_key: start.take(),
                limit: Some(13),
                at: ReadAt::Exact(at),
            })
            .await
            .expect("page at the old revision");
        assert!(
            page.items.iter().all(|kv| kv.value == "v0"),
            "values of revision {at}"
        );
        got.extend(page.items.iter().map(|kv| kv.key.clone()));
        assert_eq!(
            page.remaining,
            Some((want.len() - got.len()) as u64),
            "after {got:?}"
        );
        assert_eq!(page.more, got.len() < want.len());
        if !page.more {
            break;
        }
        start = page.items.last().map(|kv| format!("{}\0", kv.key));
    }
    assert_eq!(got, want);
}
