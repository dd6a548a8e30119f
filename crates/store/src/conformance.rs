//! The conformance suite every `Store` backend must pass: the semantics the apiserver
//! relies on (see the crate docs), checked through the trait only.
//!
//! Each check is a public async function taking the store and a key prefix of its own, so
//! checks can share one store (one etcd process) when run one after another by
//! [`run_all`], or get a fresh store each. Checks assume nobody else writes to the store
//! while they run (revision arithmetic), and panic with a message on failure.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{Event, KeyValue, ListRequest, ReadAt, Revision, Store, StoreError, WatchStream};

/// How long a check waits for an expected watch event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

type Check = fn(Arc<dyn Store>, String) -> futures::future::BoxFuture<'static, ()>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name, in the order `run_all` runs them.
        pub const CHECKS: &[(&str, Check)] = &[
            $((stringify!($name), |s, p| Box::pin($name(s, p))),)*
        ];
    };
}

checks!(
    create_and_get,
    revision_increments_by_one,
    update_compare_and_swap,
    delete_with_and_without_expected,
    list_prefix,
    list_paging,
    list_at_older_revision,
    future_revision,
    count_prefix,
    watch_from_revision,
    watch_prefix_isolation,
    watch_handover_under_writes,
    concurrent_cas_increments,
    compaction,
);

/// Run every check against one store, each under `base/<check name>/`.
pub async fn run_all(store: Arc<dyn Store>, base: &str) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        check(store.clone(), format!("{base}/{name}/")).await;
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn list(store: &Arc<dyn Store>, prefix: &str, at: ReadAt) -> crate::ListResponse {
    store
        .list(ListRequest {
            prefix: prefix.to_owned(),
            at,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("list {prefix:?} at {at:?}: {e}"))
}

/// The next event, failing the check if none comes in time or the stream errs.
pub async fn next_event(stream: &mut WatchStream, what: &str) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("{what}: watch failed: {e}"),
        Ok(None) => panic!("{what}: watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that nothing arrives on `stream` for a short while.
async fn expect_quiet(stream: &mut WatchStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("{what}: expected no event, got {item:?}");
    }
}

pub async fn create_and_get(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}a");
    let before = store.current_revision().await.expect("current_revision");
    let kv = store.create(&key, b("v1")).await.expect("create");
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, b("v1"));
    assert_eq!(
        kv.mod_revision,
        before + 1,
        "create takes the next revision"
    );
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        before + 1
    );
    assert_eq!(store.get(&key).await.expect("get"), Some(kv.clone()));
    assert_eq!(
        store
            .get(&format!("{p}missing"))
            .await
            .expect("get missing"),
        None
    );
    match store.create(&key, b("v2")).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("second create of {key}: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.expect("get"),
        Some(kv),
        "failed create changed nothing"
    );
}

pub async fn revision_increments_by_one(store: Arc<dyn Store>, p: String) {
    let (a, c) = (format!("{p}a"), format!("{p}c"));
    let r0 = store.current_revision().await.expect("current_revision");
    let created = store.create(&a, b("1")).await.expect("create");
    assert_eq!(created.mod_revision, r0 + 1);
    let updated = store
        .update(&a, b("2"), created.mod_revision)
        .await
        .expect("update");
    assert_eq!(updated.mod_revision, r0 + 2);
    // Failed writes consume no revision.
    assert!(store.create(&a, b("x")).await.is_err());
    assert!(store
        .update(&a, b("x"), created.mod_revision)
        .await
        .is_err());
    assert!(store.delete(&c, None).await.is_err());
    assert!(store.update(&c, b("x"), 1).await.is_err());
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        r0 + 2
    );
    let (_, deleted_at) = store.delete(&a, None).await.expect("delete");
    assert_eq!(deleted_at, r0 + 3);
    let recreated = store.create(&a, b("3")).await.expect("recreate");
    assert_eq!(recreated.mod_revision, r0 + 4);
    assert_eq!(
        recreated.create_revision,
        r0 + 4,
        "a re-created key starts a new life"
    );
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        r0 + 4
    );
}

pub async fn update_compare_and_swap(store: Arc<dyn Store>, p: String) {
    let key = format!("{p}a");
    let v1 = store.create(&key, b("v1")).await.expect("create");
    let v2 = store
        .update(&key, b("v2"), v1.mod_revision)
        .await
        .expect("update");
    assert_eq!(v2.value, b("v2"));
    assert_eq!(
        v2.create_revision, v1.create_revision,
        "update keeps create_revision"
    );
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(store.get(&key).await.expect("get"), Some(v2.clone()));
    match store.update(&key, b("stale"), v1.mod_revision).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            current,
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, v1.mod_revision);
            assert_eq!(*current, v2, "Conflict carries the current value");
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(&key).await.expect("get"), Some(v2));
    match store.update(&format!("{p}missing"), b("x"), 1).await {
        Err(StoreError::NotFound { key: k }) => assert_eq!(k, format!("{p}missing")),
        other => panic!("update of a missing key: expected NotFound, got {other:?}"),
    }
}

pub async fn delete_with_and_without_expected(store: Arc<dyn Store>, p: String) {
    let (a, c) = (format!("{p}a"), format!("{p}c"));
    let v1 = store.create(&a, b("v1")).await.expect("create");
    let v2 = store
        .update(&a, b("v2"), v1.mod_revision)
        .await
        .expect("update");
    match store.delete(&a, Some(v1.mod_revision)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(*current, v2),
        other => panic!("delete with a stale revision: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get(&a).await.expect("get"), Some(v2.clone()));
    let (prev, rev) = store
        .delete(&a, Some(v2.mod_revision))
        .await
        .expect("delete");
    assert_eq!(prev, v2, "delete returns the deleted object");
    assert_eq!(rev, v2.mod_revision + 1);
    assert_eq!(store.get(&a).await.expect("get"), None);
    match store.delete(&a, None).await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, a),
        other => panic!("second delete: expected NotFound, got {other:?}"),
    }
    match store.delete(&a, Some(rev)).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("delete of a missing key with expected: expected NotFound, got {other:?}"),
    }
    let cv = store.create(&c, b("c")).await.expect("create c");
    let (prev, _) = store.delete(&c, None).await.expect("unconditional delete");
    assert_eq!(prev, cv);
    let again = store
        .create(&a, b("v3"))
        .await
        .expect("create after delete");
    assert!(again.create_revision > rev);
}

pub async fn list_prefix(store: Arc<dyn Store>, p: String) {
    for k in ["a/2", "a/1", "ab/1", "b/x", "a/3/deep"] {
        store
            .create(&format!("{p}{k}"), b(k))
            .await
            .expect("create");
    }
    let current = store.current_revision().await.expect("current_revision");
    let resp = list(&store, &format!("{p}a/"), ReadAt::Latest).await;
    let keys: Vec<_> = resp.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![format!("{p}a/1"), format!("{p}a/2"), format!("{p}a/3/deep")],
        "items under the prefix only, in key order"
    );
    assert_eq!(resp.items[0].value, b("a/1"));
    assert_eq!(
        resp.revision, current,
        "latest list is served at the current revision"
    );
    assert!(!resp.more);
    let all = list(&store, &p, ReadAt::Latest).await;
    assert_eq!(all.items.len(), 5);
    let none = list(&store, &format!("{p}zzz/"), ReadAt::Latest).await;
    assert!(none.items.is_empty() && !none.more);
}

pub async fn list_paging(store: Arc<dyn Store>, p: String) {
    for i in 0..25 {
        store
            .create(&format!("{p}k{i:02}"), b(&i.to_string()))
            .await
            .expect("create");
    }
    let page = |start: Option<String>, at: ReadAt| {
        let store = store.clone();
        let p = p.clone();
        async move {
            store
                .list(ListRequest {
                    prefix: p,
                    start_key: start,
                    limit: Some(10),
                    at,
                })
                .await
                .expect("paged list")
        }
    };
    // A continue token resumes just after the last key returned.
    let next_start = |items: &[KeyValue]| items.last().map(|kv| format!("{}\0", kv.key));
    let first = page(None, ReadAt::Latest).await;
    assert_eq!(first.items.len(), 10);
    assert!(first.more);
    assert_eq!(first.remaining, Some(15));
    assert_eq!(first.items[0].key, format!("{p}k00"));
    // Writes between pages must not show: later pages are read at the first page's
    // revision, as the apiserver does with a continue token.
    store
        .delete(&format!("{p}k12"), None)
        .await
        .expect("delete");
    store
        .create(&format!("{p}k15a"), b("new"))
        .await
        .expect("create");
    let second = page(next_start(&first.items), ReadAt::Exact(first.revision)).await;
    assert_eq!(second.revision, first.revision);
    let keys: Vec<_> = second.items.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        (10..20).map(|i| format!("{p}k{i:02}")).collect::<Vec<_>>()
    );
    assert!(second.more);
    assert_eq!(second.remaining, Some(5));
    let third = page(next_start(&second.items), ReadAt::Exact(first.revision)).await;
    assert_eq!(third.items.len(), 5);
    assert!(!third.more);
    assert!(matches!(third.remaining, Some(0) | None));
    // At the latest revision the changes are visible.
    let latest = list(&store, &p, ReadAt::Latest).await;
    assert_eq!(latest.items.len(), 25);
    assert!(latest.items.iter().any(|kv| kv.key == format!("{p}k15a")));
    assert!(!latest.items.iter().any(|kv| kv.key == format!("{p}k12")));
    // A limit of zero means no limit.
    let unlimited = store
        .list(ListRequest {
            prefix: p.clone(),
            limit: Some(0),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(unlimited.items.len(), 25);
    assert!(!unlimited.more);
}

pub async fn list_at_older_revision(store: Arc<dyn Store>, p: String) {
    let (k, other) = (format!("{p}k"), format!("{p}other"));
    let v1 = store.create(&k, b("v1")).await.expect("create");
    let v2 = store
        .update(&k, b("v2"), v1.mod_revision)
        .await
        .expect("update");
    let o = store.create(&other, b("o")).await.expect("create other");
    let (_, deleted) = store.delete(&k, None).await.expect("delete");
    let at = |r| list(&store, &p, ReadAt::Exact(r));
    assert_eq!(at(v1.mod_revision - 1).await.items, vec![]);
    assert_eq!(at(v1.mod_revision).await.items, vec![v1.clone()]);
    assert_eq!(at(v2.mod_revision).await.items, vec![v2.clone()]);
    assert_eq!(at(o.mod_revision).await.items, vec![v2.clone(), o.clone()]);
    let after_delete = at(deleted).await;
    assert_eq!(after_delete.items, vec![o.clone()]);
    assert_eq!(after_delete.revision, deleted);
    assert_eq!(list(&store, &p, ReadAt::Latest).await.items, vec![o]);
}

pub async fn future_revision(store: Arc<dyn Store>, p: String) {
    store
        .create(&format!("{p}a"), b("a"))
        .await
        .expect("create");
    let current = store.current_revision().await.expect("current_revision");
    match store
        .list(ListRequest {
            prefix: p.clone(),
            at: ReadAt::Exact(current + 100),
            ..Default::default()
        })
        .await
    {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!(requested, current + 100);
            assert!(c >= current);
        }
        other => panic!("list in the future: expected FutureRevision, got {other:?}"),
    }
    match store.compact(current + 100).await {
        Err(StoreError::FutureRevision { .. }) => {}
        other => panic!("compact in the future: expected FutureRevision, got {other:?}"),
    }
}

pub async fn count_prefix(store: Arc<dyn Store>, p: String) {
    for i in 0..7 {
        store
            .create(&format!("{p}in/{i}"), b("x"))
            .await
            .expect("create");
    }
    store
        .create(&format!("{p}out/1"), b("x"))
        .await
        .expect("create");
    store
        .delete(&format!("{p}in/3"), None)
        .await
        .expect("delete");
    store
        .delete(&format!("{p}in/5"), None)
        .await
        .expect("delete");
    assert_eq!(store.count(&format!("{p}in/")).await.expect("count"), 5);
    assert_eq!(store.count(&format!("{p}out/")).await.expect("count"), 1);
    assert_eq!(store.count(&format!("{p}none/")).await.expect("count"), 0);
    assert_eq!(store.count(&p).await.expect("count"), 6);
}

pub async fn watch_from_revision(store: Arc<dyn Store>, p: String) {
    let k = format!("{p}k");
    let start = store.current_revision().await.expect("current_revision");
    let v1 = store.create(&k, b("v1")).await.expect("create");
    let v2 = store
        .update(&k, b("v2"), v1.mod_revision)
        .await
        .expect("update");
    let (_, del) = store.delete(&k, None).await.expect("delete");
    let v3 = store.create(&k, b("v3")).await.expect("create again");
    let expected = [
        Event::Put {
            kv: v1.clone(),
            prev: None,
        },
        Event::Put {
            kv: v2.clone(),
            prev: Some(v1.clone()),
        },
        Event::Delete {
            prev: v2.clone(),
            revision: del,
        },
        Event::Put {
            kv: v3.clone(),
            prev: None,
        },
    ];
    // From the start: all four, in order, with prev values.
    let mut w = store.watch(&p, start).await.expect("watch");
    for (i, want) in expected.iter().enumerate() {
        let got = next_event(&mut w, &format!("history event {i}")).await;
        assert_eq!(&got, want, "event {i} from revision {start}");
    }
    // The same watch continues live.
    let v4 = store
        .update(&k, b("v4"), v3.mod_revision)
        .await
        .expect("update");
    assert_eq!(
        next_event(&mut w, "live event").await,
        Event::Put {
            kv: v4.clone(),
            prev: Some(v3.clone()),
        }
    );
    expect_quiet(&mut w, "after the live event").await;
    // Resuming from any revision delivers exactly what followed it.
    let mut resumed = store.watch(&p, v2.mod_revision).await.expect("resume");
    assert_eq!(next_event(&mut resumed, "resumed 1").await, expected[2]);
    assert_eq!(next_event(&mut resumed, "resumed 2").await, expected[3]);
    assert_eq!(
        next_event(&mut resumed, "resumed 3").await.revision(),
        v4.mod_revision
    );
    expect_quiet(&mut resumed, "resumed watch").await;
}

pub async fn watch_prefix_isolation(store: Arc<dyn Store>, p: String) {
    let start = store.current_revision().await.expect("current_revision");
    let mut w = store.watch(&format!("{p}a/"), start).await.expect("watch");
    store
        .create(&format!("{p}ab"), b("x"))
        .await
        .expect("create");
    store
        .create(&format!("{p}b/1"), b("x"))
        .await
        .expect("create");
    let mine = store
        .create(&format!("{p}a/1"), b("x"))
        .await
        .expect("create");
    let ev = next_event(&mut w, "prefix watch").await;
    assert_eq!(ev.key(), mine.key, "only keys under the watched prefix");
    assert_eq!(ev.revision(), mine.mod_revision);
    expect_quiet(&mut w, "prefix watch").await;
}

/// Watches started before, during and after a burst of writes (from several tasks) all
/// see every write exactly once, in revision order, across the history/live hand-over.
pub async fn watch_handover_under_writes(store: Arc<dyn Store>, p: String) {
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 150;
    let start = store.current_revision().await.expect("current_revision");
    let early = store.watch(&p, start).await.expect("early watch");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..PER_WRITER {
                    let key = format!("{p}w{w}/{}", i % 10);
                    let rev = match store.get(&key).await.expect("get") {
                        None => {
                            store
                                .create(&key, b("0"))
                                .await
                                .expect("create")
                                .mod_revision
                        }
                        Some(_) if i % 7 == 6 => store.delete(&key, None).await.expect("delete").1,
                        Some(kv) => {
                            store
                                .update(&key, b(&i.to_string()), kv.mod_revision)
                                .await
                                .expect("update")
                                .mod_revision
                        }
                    };
                    revs.push(rev);
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                revs
            })
        })
        .collect();
    // Watches started mid-storm from the start revision must hand over cleanly.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = store.watch(&p, start).await.expect("mid watch");
    let mut all = BTreeSet::new();
    for w in writers {
        all.extend(w.await.expect("writer task"));
    }
    let late = store.watch(&p, start).await.expect("late watch");
    let want: Vec<Revision> = all.into_iter().collect();
    assert_eq!(want.len(), WRITERS * PER_WRITER);
    for (name, mut w) in [("early", early), ("mid", mid), ("late", late)] {
        let mut got = Vec::with_capacity(want.len());
        while got.len() < want.len() {
            let ev = next_event(&mut w, name).await;
            if let Event::Put {
                kv,
                prev: Some(prev),
            } = &ev
            {
                assert!(
                    prev.mod_revision < kv.mod_revision,
                    "{name}: prev precedes the write"
                );
                assert_eq!(prev.key, kv.key);
            }
            got.push(ev.revision());
        }
        assert_eq!(got, want, "{name} watch: every write once, in order");
        expect_quiet(&mut w, name).await;
    }
}

/// Parallel compare-and-swap increments of one counter: no lost update, no double success.
pub async fn concurrent_cas_increments(store: Arc<dyn Store>, p: String) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 25;
    let key = format!("{p}counter");
    store.create(&key, b("0")).await.expect("create counter");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let (mut successes, mut conflicts) = (0u64, 0u64);
                let mut cur = store.get(&key).await.expect("get").expect("counter exists");
                while successes < INCREMENTS as u64 {
                    let n: u64 = std::str::from_utf8(&cur.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("counter value is a number");
                    match store
                        .update(&key, b(&(n + 1).to_string()), cur.mod_revision)
                        .await
                    {
                        Ok(kv) => {
                            successes += 1;
                            cur = kv;
                        }
                        Err(StoreError::Conflict { current, .. }) => {
                            conflicts += 1;
                            cur = *current;
                        }
                        Err(e) => panic!("increment: {e}"),
                    }
                }
                (successes, conflicts)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("increment task").0;
    }
    let last = store.get(&key).await.expect("get").expect("counter exists");
    assert_eq!(total, (TASKS * INCREMENTS) as u64);
    assert_eq!(
        std::str::from_utf8(&last.value).expect("utf8"),
        total.to_string(),
        "final value equals the number of successful increments"
    );
}

pub async fn compaction(store: Arc<dyn Store>, p: String) {
    let (k, gone) = (format!("{p}k"), format!("{p}gone"));
    let g = store.create(&gone, b("g")).await.expect("create");
    let mut kv = store.create(&k, b("0")).await.expect("create");
    let mut revs = vec![kv.mod_revision];
    for i in 1..5 {
        kv = store
            .update(&k, b(&i.to_string()), kv.mod_revision)
            .await
            .expect("update");
        revs.push(kv.mod_revision);
    }
    let (_, gone_at) = store.delete(&gone, None).await.expect("delete");
    let last = store
        .update(&k, b("5"), kv.mod_revision)
        .await
        .expect("update");
    let point = gone_at;
    store.compact(point).await.expect("compact");
    let compacted = store
        .compacted_revision()
        .await
        .expect("compacted_revision");
    assert!(
        compacted >= point,
        "compacted_revision {compacted} < {point}"
    );
    // Older revisions are gone...
    match store
        .list(ListRequest {
            prefix: p.clone(),
            at: ReadAt::Exact(revs[1]),
            ..Default::default()
        })
        .await
    {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, revs[1]),
        other => panic!("list below the compaction point: expected Compacted, got {other:?}"),
    }
    match store.watch(&p, g.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut w) => match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("watch below the compaction point: expected Compacted, got {other:?}"),
        },
        Err(e) => panic!("watch below the compaction point: expected Compacted, got {e}"),
    }
    match store.compact(revs[0]).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("compacting below the compaction point: expected Compacted, got {other:?}"),
    }
    // ...the compaction point and later are intact...
    let at_point = list(&store, &p, ReadAt::Exact(point)).await;
    assert_eq!(
        at_point.items,
        vec![kv.clone()],
        "state at the compaction point"
    );
    let mut w = store
        .watch(&p, point)
        .await
        .expect("watch from the compaction point");
    assert_eq!(
        next_event(&mut w, "event after the compaction point").await,
        Event::Put {
            kv: last.clone(),
            prev: Some(kv.clone()),
        }
    );
    // ...and current values are never removed.
    assert_eq!(store.get(&k).await.expect("get"), Some(last.clone()));
    assert_eq!(list(&store, &p, ReadAt::Latest).await.items, vec![last]);
}
