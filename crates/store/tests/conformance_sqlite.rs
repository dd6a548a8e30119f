//! The conformance suite against the SQLite backend, one fresh store per check.

use std::sync::Arc;

use store::sqlite::{SqliteOptions, SqliteStore};
use store::{conformance, Store};

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("state.db"), SqliteOptions::default())
        .expect("open sqlite store");
    (dir, store)
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let (_dir, store) = fresh();
            conformance::$name(store, format!("/registry/{}/", stringify!($name))).await;
        }
    )*};
}

conformance_tests!(
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

/// All checks in sequence on one store, as the etcd test runs them: checks must not
/// depend on a fresh store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_checks_on_one_store() {
    let (_dir, store) = fresh();
    conformance::run_all(store, "/registry/all").await;
}

#[test]
fn every_check_has_a_test() {
    assert_eq!(
        conformance::CHECKS.len(),
        14,
        "add the new check to conformance_tests!"
    );
}
