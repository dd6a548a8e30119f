//! Where a real pod's volumes live on the node, seen as a user would check it: the
//! service-account token volume every pod gets, a Secret volume and an emptyDir of medium
//! Memory are each a tmpfs of their own (tokens and secrets never reach the disk; the
//! emptyDir has its sizeLimit), inside the container (`/proc/mounts` through `kubectl exec`)
//! and on the host; the pods directory is a mount point of its own (what lets each shim hide
//! the other pods' mounts from libcontainer); and deleting the pod leaves no mount behind.
//! Needs root (namespaces, mounts, cgroups).

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::node::{wait_for, wait_running, TEST_IMAGE as IMAGE};
use testkit::TestServer;

/// (mount point, filesystem type, super options) of every mount the test process sees.
fn host_mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let mut rest = after.split(' ');
            let fs_type = rest.next()?.to_string();
            let options = rest.nth(1).unwrap_or_default().to_string();
            Some((PathBuf::from(point), fs_type, options))
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<(PathBuf, String, String)> {
    host_mounts()
        .into_iter()
        .filter(|(p, _, _)| p.starts_with(dir))
        .collect()
}

/// The filesystem type and options of the mount at `point` in the container's /proc/mounts.
fn in_container(mounts: &str, point: &str) -> Option<(String, String)> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(1) == Some(&point)).then(|| (f[2].to_string(), f[3].to_string()))
    })
}

#[test]
fn token_secret_and_memory_volumes_are_tmpfs_mounts_gone_with_the_pod() {
    let s: TestServer = testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: tmpfs-vols}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: creds
    secret: {{secretName: creds}}
  - name: scratch
    emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
  containers:
  - name: app
    image: {IMAGE}
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: creds, mountPath: /etc/creds}}
    - {{name: scratch, mountPath: /scratch}}
"#
        ),
    );
    wait_running(&s, "tmpfs-vols");
    let uid = s.kubectl_ok(&["get", "pod", "tmpfs-vols", "-o", "jsonpath={.metadata.uid}"]);
    let uid = uid.trim();
    let token_volume = s.kubectl_ok(&[
        "get",
        "pod",
        "tmpfs-vols",
        "-o",
        "jsonpath={.spec.volumes[?(@.projected)].name}",
    ]);
    let token_volume = token_volume.trim().to_string();
    assert!(
        token_volume.starts_with("kube-api-access-"),
        "{token_volume:?}"
    );

    // Inside the container: three tmpfs mounts, the emptyDir with its size.
    let mounts = s.kubectl_ok(&["exec", "tmpfs-vols", "--", "cat", "/proc/mounts"]);
    let token = in_container(&mounts, "/var/run/secrets/kubernetes.io/serviceaccount");
    assert_eq!(
        token.as_ref().map(|t| t.0.as_str()),
        Some("tmpfs"),
        "{mounts}"
    );
    assert!(token.unwrap().1.starts_with("ro"), "{mounts}");
    let creds = in_container(&mounts, "/etc/creds");
    assert_eq!(creds.map(|c| c.0), Some("tmpfs".to_string()), "{mounts}");
    let scratch = in_container(&mounts, "/scratch").expect("/scratch mounted");
    assert_eq!(scratch.0, "tmpfs", "{mounts}");
    assert!(scratch.1.contains("size=16384k"), "{mounts}");
    assert_eq!(
        s.kubectl_ok(&["exec", "tmpfs-vols", "--", "cat", "/etc/creds/password"]),
        "s3cret"
    );

    // On the host: the pods directory is a mount of its own, and each of the pod's three
    // volumes is a tmpfs under the pod's directory.
    let data = std::fs::canonicalize(s.data_dir()).expect("canonical data dir");
    let pods = data.join("agent/pods");
    assert!(
        host_mounts().iter().any(|(p, _, _)| p == &pods),
        "{} is not a mount point",
        pods.display()
    );
    let pod_dir = pods.join(uid);
    let volumes = pod_dir.join("volumes");
    let on_host = mounts_under(&volumes);
    for name in [token_volume.as_str(), "creds", "scratch"] {
        let found = on_host.iter().find(|(p, _, _)| p == &volumes.join(name));
        assert_eq!(
            found.map(|f| f.1.as_str()),
            Some("tmpfs"),
            "{name}: {on_host:?}"
        );
    }
    let scratch = on_host
        .iter()
        .find(|(p, _, _)| p == &volumes.join("scratch"))
        .unwrap();
    assert!(scratch.2.contains("size=16384k"), "{scratch:?}");
    // The token is a file on the tmpfs, read through the atomic writer's `..data` link.
    let token_file = volumes.join(&token_volume).join("token");
    assert!(
        std::fs::read_to_string(&token_file).is_ok_and(|t| t.split('.').count() == 3),
        "{}",
        token_file.display()
    );

    // The container's shim hid the other pods' mounts from libcontainer without a hitch
    // (it says so in its log when it cannot).
    let shim_log =
        std::fs::read_to_string(pod_dir.join("containers/app/0/shim/shim.log")).unwrap_or_default();
    assert!(!shim_log.contains("mount"), "{shim_log}");

    // Deleting the pod takes every mount of it along.
    s.kubectl_ok(&["delete", "pod", "tmpfs-vols", "--wait=false"]);
    wait_for(&s, Duration::from_secs(60), "the pod to be gone", || {
        s.kubectl(&["get", "pod", "tmpfs-vols"])
            .stderr
            .starts_with(b"Error from server (NotFound)")
    });
    wait_for(
        &s,
        Duration::from_secs(30),
        "the pod's mounts to go",
        || mounts_under(&pod_dir).is_empty() && !pod_dir.exists(),
    );

    // Stopping the node (`skiff killall`, run when the server is dropped) unmounts the pods
    // directory too: nothing of the node stays mounted.
    drop(s);
    assert_eq!(mounts_under(&data), Vec::new());
}
