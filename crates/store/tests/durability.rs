//! kill -9 during a write storm loses no acknowledged write, and the store reopens
//! cleanly. The test re-executes its own binary as the writer (`write_storm_child`), which
//! prints every write the store acknowledged; the parent SIGKILLs it mid-storm, reopens
//! the file and checks every acknowledged write is there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{ListRequest, Store};

const CHILD_DB: &str = "SKIFF_STORE_STORM_DB";
const CHILD_ROUND: &str = "SKIFF_STORE_STORM_ROUND";
const WRITERS: usize = 32;

/// The writer side. Does nothing unless started by the parent test with `CHILD_DB` set.
#[test]
fn write_storm_child() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = SqliteStore::open(
            Path::new(&db),
            SqliteOptions {
                // Compact often so kills also land in the middle of compactions.
                compact_interval: Some(Duration::from_millis(100)),
                compact_retain_revisions: 100,
                ..Default::default()
            },
        )
        .expect("child opens the store");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // One printer thread so lines never interleave; each is flushed before the next
        // write is acknowledged to the parent.
        std::thread::spawn(move || {
            let out = std::io::stdout();
            for line in rx {
                let mut out = out.lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        });
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                let tx = tx.clone();
                let round = round.clone();
                tokio::spawn(async move {
                    let counter = format!("/storm/counter/{w}");
                    let mut cur = match store.get(&counter).await.expect("get counter") {
                        Some(kv) => kv,
                        None => store
                            .create(&counter, Bytes::from_static(b"0"))
                            .await
                            .expect("create counter"),
                    };
                    for i in 0.. {
                        let key = format!("/storm/r{round}/w{w}/{i}");
                        let kv = store
                            .create(&key, Bytes::from(format!("v{i}")))
                            .await
                            .expect("create");
                        let _ = tx.send(format!("ACK create {key} {}", kv.mod_revision));
                        let n: u64 = std::str::from_utf8(&cur.value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("counter");
                        cur = store
                            .update(&counter, Bytes::from((n + 1).to_string()), cur.mod_revision)
                            .await
                            .expect("update counter");
                        let _ = tx.send(format!("ACK counter {counter} {}", n + 1));
                        if i % 10 == 9 {
                            let (_, rev) = store.delete(&key, None).await.expect("delete");
                            let _ = tx.send(format!("ACK delete {key} {rev}"));
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[derive(Default)]
struct Acked {
    created: HashMap<String, i64>,
    deleted: HashMap<String, i64>,
    counters: HashMap<String, u64>,
    max_revision: i64,
}

fn storm_and_kill(db: &Path, round: usize, kill_after: usize) -> Acked {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "write_storm_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ACK ") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = Acked::default();
    let mut record = |line: String| {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [_, kind, key, n] = parts[..] else {
            panic!("malformed line from writer: {line:?}")
        };
        let n: i64 = n.parse().expect("number");
        match kind {
            "create" => {
                acked.created.insert(key.to_owned(), n);
                acked.max_revision = acked.max_revision.max(n);
            }
            "delete" => {
                acked.deleted.insert(key.to_owned(), n);
                acked.max_revision = acked.max_revision.max(n);
            }
            "counter" => {
                let c = acked.counters.entry(key.to_owned()).or_default();
                *c = (*c).max(n as u64);
            }
            other => panic!("unknown ack kind {other:?}"),
        }
    };
    let mut seen = 0;
    while seen < kill_after {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer keeps acknowledging writes");
        record(line);
        seen += 1;
    }
    // SIGKILL mid-storm: no destructors, no flush, exactly like kill -9.
    child.kill().expect("kill the writer");
    let status = child.wait().expect("reap the writer");
    assert!(!status.success(), "writer was killed, not finished");
    // Lines already in the pipe were acknowledged before the kill.
    reader.join().expect("reader thread");
    for line in rx.try_iter() {
        record(line);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state.db");
    let mut counters: HashMap<String, u64> = HashMap::new();
    for (round, kill_after) in [(0, 3000), (1, 500), (2, 8000)] {
        let acked = storm_and_kill(&db, round, kill_after);
        let store = match SqliteStore::open(&db, SqliteOptions::default()) {
            Ok(s) => s,
            Err(e) => panic!("round {round}: the store must reopen after kill -9: {e}"),
        };
        let current = store.current_revision().await.expect("current revision");
        assert!(
            current >= acked.max_revision,
            "round {round}: revision {current} is behind acknowledged revision {}",
            acked.max_revision
        );
        let live = store
            .list(ListRequest {
                prefix: format!("/storm/r{round}/"),
                ..Default::default()
            })
            .await
            .expect("list");
        let live: HashMap<_, _> = live
            .items
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let mut checked = 0;
        for (key, rev) in &acked.created {
            if acked.deleted.contains_key(key) {
                assert!(
                    !live.contains_key(key),
                    "round {round}: acknowledged delete of {key} lost"
                );
                continue;
            }
            // A delete may have committed without its ack reaching the pipe.
            if let Some(kv) = live.get(key) {
                assert_eq!(kv.mod_revision, *rev, "round {round}: {key} changed");
                checked += 1;
            } else {
                // Every tenth key is deleted right after its create.
                let deleted_later = key
                    .rsplit('/')
                    .next()
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| i % 10 == 9);
                assert!(
                    deleted_later,
                    "round {round}: acknowledged create of {key} (revision {rev}) lost"
                );
            }
        }
        assert!(checked > 0, "round {round}: nothing to check");
        for (key, n) in acked.counters {
            let stored: u64 = store
                .get(&key)
                .await
                .expect("get counter")
                .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
                .unwrap_or_else(|| panic!("round {round}: counter {key} lost"));
            assert!(
                stored >= n,
                "round {round}: counter {key} is {stored}, {n} was acknowledged"
            );
            counters.insert(key, stored);
        }
        let conn = rusqlite::Connection::open(&db).expect("open for integrity check");
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok", "round {round}");
        drop(store);
    }
    assert_eq!(counters.len(), WRITERS);
}
