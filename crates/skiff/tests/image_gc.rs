//! Images in use on a real node (the embedded agent, as root): `skiff image rm` refuses an
//! image a pod's container uses and the pod keeps running; image garbage collection with
//! thresholds set so low that it always runs deletes an unused image (never the layer it
//! shares with the image in use) and reports on the Node that it could not free enough.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use testkit::images::TestImage;
use testkit::node::{import_test_image, status_column, wait_for, wait_node_ready, TEST_IMAGE};
use testkit::{ServerOptions, TestServer};

const UNUSED: &str = "skiff.test/unused:1";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

fn skiff_image(data_dir: &Path, args: &[&str]) -> Output {
    testkit::node::skiff_image(&bin(), data_dir, args)
}

fn image_list(data_dir: &Path) -> String {
    testkit::node::image_list(&bin(), data_dir)
}

fn run_sleeper(s: &TestServer, name: &str) {
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {TEST_IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        ),
    );
    wait_for(s, Duration::from_secs(60), "the pod Running", || {
        status_column(s, name) == "Running"
    });
}

/// A second image sharing the busybox layer (only its command differs).
fn import_unused(data_dir: &Path) -> TestImage {
    let busybox = TestImage::busybox().expect("busybox image");
    let other = TestImage::from_layer(busybox.layer_tar.clone(), &["true"]).expect("image");
    let tar = data_dir.join("unused.tar");
    other.write_oci_layout(&tar, UNUSED).expect("write image");
    let out = skiff_image(data_dir, &["import", tar.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    other
}

#[test]
fn image_rm_refuses_an_image_in_use_until_its_pod_is_gone() {
    let s = testkit::node::server_with_node(&bin());
    let data = s.data_dir();
    run_sleeper(&s, "user");

    let out = skiff_image(&data, &["rm", TEST_IMAGE]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "removed an image in use: {err}");
    assert!(err.contains("image is in use by container"), "{err}");
    let id = s.kubectl_ok(&[
        "get",
        "pod",
        "user",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    let id = id.trim().trim_start_matches("skiff://");
    assert!(err.contains(id), "{err} should name {id}");
    // Nothing was removed and the pod is undisturbed.
    assert!(image_list(&data).contains("skiff.test/busybox"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status_column(&s, "user"), "Running");
    s.kubectl_ok(&["exec", "user", "--", "true"]);

    s.kubectl_ok(&["delete", "pod", "user", "--wait=true", "--timeout=60s"]);
    // The pod's directory (its kept attempts) goes with the pod.
    wait_for(&s, Duration::from_secs(30), "image rm to succeed", || {
        skiff_image(&data, &["rm", TEST_IMAGE]).status.success()
    });
    assert!(!image_list(&data).contains("skiff.test/busybox"));
}

#[test]
fn image_gc_deletes_unused_images_and_keeps_the_one_in_use() {
    // GC always runs (1% used is over the threshold) and wants everything (down to 0%),
    // which it cannot get: FreeDiskSpaceFailed. Images younger than 20 s are spared.
    let mut s = TestServer::start(
        ServerOptions::new(bin())
            .with_agent()
            .arg("--image-gc-high-threshold=1")
            .arg("--image-gc-low-threshold=0")
            .arg("--minimum-image-ttl-duration=20s"),
    )
    .expect("start skiff server with its agent");
    let data = s.data_dir();
    import_test_image(&bin(), &data, TEST_IMAGE);
    let unused = import_unused(&data);
    wait_node_ready(&s);
    run_sleeper(&s, "user");
    let listed = image_list(&data);
    assert!(listed.contains("skiff.test/unused"), "{listed}");

    // Past the minimum age, GC runs again when the agent starts (and every 5 minutes).
    std::thread::sleep(Duration::from_secs(21));
    s.restart().expect("restart the server");
    wait_for(
        &s,
        Duration::from_secs(60),
        "GC to delete the unused image",
        || !image_list(&data).contains("skiff.test/unused"),
    );
    let listed = image_list(&data);
    assert!(listed.contains("skiff.test/busybox"), "{listed}");
    // The layer the two images share stays with the image in use.
    let layer = data
        .join("agent/image-store/layers/sha256")
        .join(unused.diff_id().trim_start_matches("sha256:"));
    assert!(layer.join("bin/busybox").is_file(), "{}", layer.display());
    assert_eq!(status_column(&s, "user"), "Running");
    s.kubectl_ok(&["exec", "user", "--", "true"]);

    wait_for(
        &s,
        Duration::from_secs(30),
        "a FreeDiskSpaceFailed event",
        || {
            let out = s.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=FreeDiskSpaceFailed",
                "-o",
                "jsonpath={.items[*].involvedObject.kind} {.items[*].message}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("Node")
                && text.contains("Failed to garbage collect required amount of images")
        },
    );
}
