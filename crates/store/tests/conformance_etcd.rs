//! The conformance suite against a private etcd (Debian's etcd-server). Fails, never
//! skips, when etcd is not installed: the test command installs it.

use store::etcd::{EtcdOptions, EtcdStore};
use store::testing::EtcdServer;
use store::{conformance, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_conformance() {
    let etcd = EtcdServer::start()
        .await
        .unwrap_or_else(|e| panic!("cannot run the etcd conformance suite: {e}"));
    let opts = EtcdOptions {
        compact_interval: None,
        ..Default::default()
    };
    let store = EtcdStore::connect_with(&[etcd.endpoint()], opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", etcd.endpoint()));
    assert_eq!(
        store
            .compacted_revision()
            .await
            .expect("compacted_revision"),
        0
    );
    conformance::run_all(store.clone(), "/registry").await;
    drop(etcd);
}

#[tokio::test]
async fn connect_fails_clearly_when_nobody_listens() {
    let err = EtcdStore::connect(&["http://127.0.0.1:9"])
        .await
        .expect_err("nothing listens on port 9");
    assert!(
        err.to_string().contains("127.0.0.1:9"),
        "error names the endpoint: {err}"
    );
}
