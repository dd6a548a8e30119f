//! Registry pulls against a local registry (Debian's docker-registry on 127.0.0.1, started
//! and killed by the test): a single-platform image, a multi-arch index resolved to the
//! host, and a missing image.

use runtime::images::{pull, Credentials, ImageStore};
use testkit::images::{sha256_digest, Registry, TestImage};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn pulls_from_a_local_registry() {
    let registry = Registry::start().unwrap();
    let img = TestImage::busybox().unwrap();
    registry.push(&img, "test/busybox", "v1").unwrap();

    // A multi-arch index: the host's entry is the real image, another is an s390x copy of
    // it (a different manifest that points at the same blobs).
    let host = runtime::images::oci::host_platform().architecture;
    let other = if host == "s390x" { "riscv64" } else { "s390x" };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": sha256_digest(&img.manifest), "size": img.manifest.len(),
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": sha256_digest(&img.manifest), "size": img.manifest.len(),
             "platform": {"os": "linux", "architecture": host}},
        ]
    }))
    .unwrap();
    registry.push_blob("test/multi", &img.layer_gz).unwrap();
    registry.push_blob("test/multi", &img.config).unwrap();
    registry
        .push_manifest(
            "test/multi",
            &img.manifest_digest(),
            "application/vnd.oci.image.manifest.v1+json",
            &img.manifest,
        )
        .unwrap();
    registry
        .push_manifest(
            "test/multi",
            "v1",
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let rt = rt();

    let name = format!("{}/test/busybox:v1", registry.host);
    let got = rt
        .block_on(pull(&store, &name, &Credentials::Anonymous, &|_| {}))
        .unwrap();
    assert_eq!(got.digest.as_str(), img.manifest_digest());
    assert_eq!(got.id.as_str(), img.config_digest());
    assert_eq!(got.config.cmd, vec!["sh"]);
    assert!(got.layers[0].join("bin/busybox").is_file());

    let multi = format!("{}/test/multi:v1", registry.host);
    let got = rt
        .block_on(pull(&store, &multi, &Credentials::Anonymous, &|_| {}))
        .unwrap();
    assert_eq!(got.digest.as_str(), img.manifest_digest());
    assert_eq!(store.list().unwrap().len(), 1, "same manifest, two names");
    assert_eq!(store.get(&multi).unwrap().references.len(), 2);

    let missing = format!("{}/test/nope:v1", registry.host);
    let err = rt
        .block_on(pull(&store, &missing, &Credentials::Anonymous, &|_| {}))
        .unwrap_err();
    assert!(err.to_string().contains("test/nope"), "{err}");
}
