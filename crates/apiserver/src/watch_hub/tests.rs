//! The hub against a real SQLite store: sharing, hand-over from history, slow watchers,
//! lifecycle and compaction.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use store::sqlite::{SqliteOptions, SqliteStore};

use super::*;

/// Generous bound for a test that would otherwise hang on a bug; never a timing assertion.
const HANG: Duration = Duration::from_secs(30);

fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let opts = SqliteOptions {
        compact_interval: None,
        ..Default::default()
    };
    SqliteStore::open(&dir.path().join("state.db"), opts).expect("open store")
}

fn configmaps() -> &'static ResourceInfo {
    api::registry::lookup("", "v1", "configmaps").expect("configmaps are served")
}

fn cm(ns: &str, name: &str, app: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}}))
        .expect("encode"),
    )
}

async fn create(store: &Arc<dyn Store>, ns: &str, name: &str) -> Revision {
    store
        .create(&configmaps().key(Some(ns), name), cm(ns, name, "web"))
        .await
        .expect("create")
        .mod_revision
}

async fn next_event(sub: &mut Subscription) -> Arc<SharedEvent> {
    match tokio::time::timeout(HANG, sub.next()).await {
        Ok(Next::Event(e)) => e,
        Ok(Next::Lagged(n)) => panic!("lagged by {n}"),
        Ok(Next::Failed(e)) => panic!("failed: {e}"),
        Ok(Next::Closed) => panic!("closed"),
        Err(_) => panic!("no event within {HANG:?}"),
    }
}

async fn revisions(sub: &mut Subscription, n: usize) -> Vec<Revision> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(sub).await.revision());
    }
    out
}

#[test]
fn where_a_hub_starts() {
    // (first watcher's revision, current revision, max lag) -> hub start
    let cases = [
        (100, 100, 1000, 100),
        (90, 100, 1000, 90),
        (5000, 100, 1000, 100), // a future revision does not park the hub ahead
        (10, 5000, 1000, 5000), // too old: that watcher replays on its own
        (4000, 5000, 1000, 4000),
    ];
    for (from, current, lag, want) in cases {
        assert_eq!(
            hub_start(from, current, lag),
            want,
            "from {from} current {current}"
        );
    }
}

#[tokio::test]
async fn one_store_watch_and_one_decode_for_many_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::default();
    let from = store.current_revision().await.expect("revision");
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(
            hubs.subscribe(&store, configmaps(), from)
                .await
                .expect("subscribe"),
        );
    }
    assert_eq!(hubs.running(), 1);
    let mut revs = Vec::new();
    for (ns, name) in [("a", "one"), ("b", "two"), ("a", "three")] {
        revs.push(create(&store, ns, name).await);
    }
    let encodes = AtomicUsize::new(0);
    let mut firsts: Vec<Arc<SharedEvent>> = Vec::new();
    for sub in &mut subs {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next_event(sub).await);
        }
        assert_eq!(
            seen.iter().map(|e| e.revision()).collect::<Vec<_>>(),
            revs,
            "every watcher sees every namespace's events in order"
        );
        let view = sub.view();
        let line = seen[0].line(view, Shape::Object, Change::Added, || {
            encodes.fetch_add(1, Ordering::SeqCst);
            Bytes::from_static(b"line\n")
        });
        assert_eq!(line, Bytes::from_static(b"line\n"));
        firsts.push(seen[0].clone());
    }
    // The same event object, decoded once, encoded once.
    assert!(firsts.iter().all(|e| Arc::ptr_eq(e, &firsts[0])));
    let view = subs[0].view();
    let decoded: Vec<*const Value> = subs
        .iter()
        .map(|s| firsts[0].new_object(s.view()).expect("decodes") as *const Value)
        .collect();
    assert!(decoded.iter().all(|p| *p == decoded[0]));
    assert_eq!(
        firsts[0].new_object(view).expect("decodes")["metadata"]["resourceVersion"],
        revs[0].to_string()
    );
    assert_eq!(encodes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_last_watcher_stops_the_hub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::default();
    let from = store.current_revision().await.expect("revision");
    let a = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    let b = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    assert_eq!(hubs.running(), 1);
    drop(a);
    assert_eq!(hubs.running(), 1);
    drop(b);
    assert_eq!(hubs.running(), 0);
    // The next watcher starts a new one, which works.
    let mut c = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    assert_eq!(hubs.running(), 1);
    let rev = create(&store, "a", "x").await;
    assert_eq!(revisions(&mut c, 1).await, [rev]);
}

#[tokio::test]
async fn resources_sharing_a_store_prefix_share_the_hub_but_not_the_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::default();
    let core = api::registry::lookup("", "v1", "events").expect("core events");
    let new = api::registry::lookup("events.k8s.io", "v1", "events").expect("events.k8s.io");
    assert_eq!(core.storage_prefix, new.storage_prefix);
    let from = store.current_revision().await.expect("revision");
    let mut a = hubs.subscribe(&store, core, from).await.expect("subscribe");
    let mut b = hubs.subscribe(&store, new, from).await.expect("subscribe");
    assert_eq!(hubs.running(), 1);
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "e", "namespace": "d"}, "reason": "Started", "message": "hi",
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"}});
    store
        .create(
            &core.key(Some("d"), "e"),
            Bytes::from(serde_json::to_vec(&event).expect("encode")),
        )
        .await
        .expect("create");
    let ea = next_event(&mut a).await;
    let eb = next_event(&mut b).await;
    assert!(Arc::ptr_eq(&ea, &eb));
    assert_eq!(
        ea.new_object(a.view()).expect("decodes")["apiVersion"],
        "v1"
    );
    assert_eq!(
        eb.new_object(b.view()).expect("decodes")["apiVersion"],
        "events.k8s.io/v1"
    );
}

/// A watcher that starts before the ring's window while writes go on replays from the
/// store and moves to the shared ring, with every event exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_start_replays_history_and_hands_over_without_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = Arc::new(WatchHubs::new(HubConfig {
        max_events: 8,
        ..HubConfig::default()
    }));
    let r0 = store.current_revision().await.expect("revision");
    // A reader keeps the hub alive and consumes as it goes.
    let mut keeper = hubs
        .subscribe(&store, configmaps(), r0)
        .await
        .expect("subscribe");
    let keeper = tokio::spawn(async move {
        let mut n = 0;
        while let Next::Event(_) = keeper.next().await {
            n += 1;
            if n == 60 {
                break;
            }
        }
        n
    });
    for i in 0..30 {
        create(&store, "a", &format!("first-{i}")).await;
    }
    // The ring holds 8 events, so r0 + 3 is far behind its window.
    let from = r0 + 3;
    let mut old = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    assert!(
        !old.is_shared(),
        "a start before the window replays from the store"
    );
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                create(
                    &store,
                    if i % 2 == 0 { "a" } else { "b" },
                    &format!("second-{i}"),
                )
                .await;
            }
        })
    };
    let got = revisions(&mut old, 57).await;
    writer.await.expect("writer");
    let want: Vec<Revision> = (from + 1..=r0 + 60).collect();
    assert_eq!(got, want);
    assert!(
        old.is_shared(),
        "caught up, the watcher reads the shared ring"
    );
    assert_eq!(
        tokio::time::timeout(HANG, keeper)
            .await
            .expect("keeper")
            .expect("task"),
        60
    );
    // Nothing more, and in particular no duplicate, is pending.
    assert!(tokio::time::timeout(Duration::from_millis(200), old.next())
        .await
        .is_err());
}

/// A watcher that reads nothing neither holds up the others nor grows without bound: it
/// loses its place once the ring moves past it, and is told so.
#[tokio::test]
async fn a_stalled_watcher_does_not_delay_others_and_is_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::new(HubConfig {
        max_events: 16,
        ..HubConfig::default()
    });
    let from = store.current_revision().await.expect("revision");
    let mut stalled = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    let mut live = hubs
        .subscribe(&store, configmaps(), from)
        .await
        .expect("subscribe");
    let mut want = Vec::new();
    let mut got = Vec::new();
    for i in 0..50 {
        want.push(create(&store, "a", &format!("o-{i}")).await);
        // The live watcher keeps up as the writes happen.
        got.extend(revisions(&mut live, 1).await);
    }
    assert_eq!(got, want);
    match tokio::time::timeout(HANG, stalled.next()).await {
        Ok(Next::Lagged(missed)) => assert!(missed > 0),
        Ok(Next::Event(e)) => panic!("stalled watcher still got revision {}", e.revision()),
        Ok(_) => panic!("stalled watcher ended otherwise"),
        Err(_) => panic!("stalled watcher was not ended"),
    }
}

#[tokio::test]
async fn a_start_below_the_compaction_point_is_gone_even_inside_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::default();
    let r0 = store.current_revision().await.expect("revision");
    let _keeper = hubs
        .subscribe(&store, configmaps(), r0)
        .await
        .expect("subscribe");
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(create(&store, "a", &format!("o-{i}")).await);
    }
    store.compact(revs[7]).await.expect("compact");
    // Inside the ring's window, but compacted: 410 as a store watch would say.
    match hubs.subscribe(&store, configmaps(), revs[2]).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, revs[2]),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a subscription"),
    }
    // At the compaction point it still works, from the ring.
    let mut ok = hubs
        .subscribe(&store, configmaps(), revs[7])
        .await
        .expect("subscribe at the compaction point");
    assert!(ok.is_shared());
    assert_eq!(revisions(&mut ok, 2).await, revs[8..]);
}

#[tokio::test]
async fn a_start_ahead_of_the_hub_skips_what_it_has_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let hubs = WatchHubs::default();
    let r0 = store.current_revision().await.expect("revision");
    let _keeper = hubs
        .subscribe(&store, configmaps(), r0)
        .await
        .expect("subscribe");
    let mut revs = Vec::new();
    for i in 0..4 {
        revs.push(create(&store, "a", &format!("o-{i}")).await);
    }
    // Possibly before the hub has even seen revs[1]: it must still start after it.
    let mut late = hubs
        .subscribe(&store, configmaps(), revs[1])
        .await
        .expect("subscribe");
    assert_eq!(revisions(&mut late, 2).await, revs[2..]);
}
