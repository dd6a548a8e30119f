//! `kubectl cp` to and from a real container on a single-node `skiff server`: kubectl runs
//! `tar` in the container through exec (stdin for copies in, stdout for copies out), so this
//! proves exec's binary-safe streams and its end-of-stdin signal with real data.
//! Needs root (namespaces, mounts, cgroups).

use std::path::Path;
use std::time::Duration;

use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};
use testkit::TestServer;

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")))
}

/// Bytes that are not text: every byte value, in a pattern that does not repeat quickly.
fn binary_payload(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 11) as u8
        })
        .collect()
}

#[test]
fn kubectl_cp_copies_files_and_directories_both_ways() {
    let s = server_with_node();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: box}}
spec:
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /data/out && echo made in the pod > /data/out/note.txt && exec sleep 3600"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "box Running", || {
        status_column(&s, "box") == "Running"
    });

    let work = tempfile::tempdir().expect("temp dir");

    // A binary file in: the bytes in the container are the bytes sent.
    let payload = binary_payload(3 * 1024 * 1024 + 17);
    let local_file = work.path().join("blob.bin");
    std::fs::write(&local_file, &payload).expect("write the payload");
    s.kubectl_ok(&["cp", local_file.to_str().unwrap(), "box:/data/blob.bin"]);
    let listed = s.kubectl_ok(&["exec", "box", "--", "wc", "-c", "/data/blob.bin"]);
    assert_eq!(
        listed.split_whitespace().next(),
        Some(payload.len().to_string().as_str()),
        "{listed}"
    );

    // ... and back out, byte for byte.
    let returned = work.path().join("blob.back");
    s.kubectl_ok(&["cp", "box:/data/blob.bin", returned.to_str().unwrap()]);
    assert!(
        std::fs::read(&returned).expect("read the copy") == payload,
        "the round-tripped file differs"
    );

    // A directory tree in, with -c naming the container.
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("top.txt"), "top\n").unwrap();
    std::fs::write(tree.join("sub/deeper/leaf.txt"), "leaf\n").unwrap();
    s.kubectl_ok(&["cp", "-c", "main", tree.to_str().unwrap(), "box:/data/tree"]);
    let leaf = s.kubectl_ok(&["exec", "box", "--", "cat", "/data/tree/sub/deeper/leaf.txt"]);
    assert_eq!(leaf, "leaf\n");
    let top = s.kubectl_ok(&["exec", "box", "--", "cat", "/data/tree/top.txt"]);
    assert_eq!(top, "top\n");

    // A directory made in the pod, out.
    let out_dir = work.path().join("from-pod");
    s.kubectl_ok(&["cp", "box:/data/out", out_dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("note.txt")).expect("copied note"),
        "made in the pod\n"
    );

    // A path that does not exist in the pod: kubectl prints tar's complaint (kubectl 1.32
    // sends the remote stderr to its stdout and, as upstream, does not fail the copy) and
    // writes nothing; the same tar run through exec reports tar's exit code.
    // kubectl ends as soon as the (empty) archive ends, racing its own copy of the remote
    // stderr (against a real kubelet too): a few tries.
    let missing = work.path().join("x");
    let mut said = String::new();
    for _ in 0..5 {
        let out = s.kubectl(&["cp", "box:/no/such/file", missing.to_str().unwrap()]);
        said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if said.contains("No such file or directory") {
            break;
        }
    }
    assert!(said.contains("No such file or directory"), "{said}");
    assert!(!missing.exists());
    let out = s.kubectl(&["exec", "box", "--", "tar", "cf", "-", "/no/such/file"]);
    assert_eq!(out.status.code(), Some(1));
}
