//! `skiff image import|ls|rm` through the real binary on the busybox test image (built by
//! testkit from Debian's busybox-static): OCI-layout and docker-archive tarballs, a
//! compressed one, crictl-style listing, removal down to an empty store, and a corrupt
//! tarball that fails loudly and changes nothing.

use std::path::Path;
use std::process::{Command, Output};

use testkit::images::{gzip, TestImage};

fn skiff(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SKIFF_DATA_DIR")
        .output()
        .expect("run skiff")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = skiff(data_dir, args);
    assert!(
        out.status.success(),
        "skiff image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn image_import_ls_rm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let img = TestImage::busybox().unwrap();
    let oci = tmp.path().join("busybox-oci.tar");
    img.write_oci_layout(&oci, "docker.io/library/busybox:test")
        .unwrap();
    let docker = tmp.path().join("app-docker.tar.gz");
    std::fs::write(
        &docker,
        gzip(&img.docker_archive_tar("example.com/team/app:v1").unwrap()).unwrap(),
    )
    .unwrap();

    let out = ok(
        &data,
        &["import", oci.to_str().unwrap(), docker.to_str().unwrap()],
    );
    assert!(
        out.contains("imported docker.io/library/busybox:test"),
        "{out}"
    );
    assert!(out.contains("imported example.com/team/app:v1"), "{out}");
    assert!(data.join("agent/image-store/index.json").is_file());

    let ls = ok(&data, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    let header: Vec<&str> = lines[0]
        .split("  ")
        .filter(|s| !s.trim().is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(header, ["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    let id = &img.config_digest()[7..19];
    let row = |repo: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(repo))
            .unwrap_or_else(|| panic!("{repo} in {ls}"));
        line.split_whitespace().map(String::from).collect()
    };
    let bb = row("docker.io/library/busybox");
    assert_eq!(bb[..3], ["docker.io/library/busybox", "test", id]);
    assert!(bb[3].ends_with("MB") || bb[3].ends_with("kB"), "{bb:?}");
    assert_eq!(
        row("example.com/team/app")[..3],
        ["example.com/team/app", "v1", id]
    );

    // A corrupt tarball: a clear error, the store unchanged.
    let bad = tmp.path().join("bad.tar");
    let mut bytes = img.oci_layout_tar("busybox:bad").unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&bad, bytes).unwrap();
    let out = skiff(&data, &["import", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.tar"), "{err}");
    assert_eq!(ok(&data, &["ls"]), ls);

    // Removing by short name, then by image ID.
    let out = ok(&data, &["rm", "busybox:test"]);
    assert_eq!(out.trim(), "Deleted: docker.io/library/busybox:test");
    let out = skiff(&data, &["rm", "busybox:test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = ok(&data, &["rm", id]);
    assert_eq!(out.trim(), "Deleted: example.com/team/app:v1");
    assert_eq!(ok(&data, &["ls"]).lines().count(), 1);
    let store = data.join("agent/image-store");
    for d in ["blobs/sha256", "layers/sha256"] {
        assert_eq!(std::fs::read_dir(store.join(d)).unwrap().count(), 0, "{d}");
    }
}
