//! `store::open`, the constructor `skiff server` uses for `--datastore-endpoint`.

use bytes::Bytes;

#[tokio::test]
async fn open_without_endpoint_is_the_embedded_sqlite_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db").join("state.db");
    let store = store::open(None, &path).await.expect("open sqlite");
    store
        .create("/k", Bytes::from_static(b"v"))
        .await
        .expect("create");
    assert!(
        path.is_file(),
        "the database file and its directory are created"
    );
}

#[tokio::test]
async fn unsupported_endpoints_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The call shape of the skiff binary: `Some(&String)`.
    let endpoint = String::from("mysql://root@tcp(127.0.0.1:3306)/k3s");
    let err = match store::open(Some(&endpoint), &dir.path().join("state.db")).await {
        Ok(_) => panic!("a MySQL endpoint must be refused"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("mysql://"), "{err}");
}
