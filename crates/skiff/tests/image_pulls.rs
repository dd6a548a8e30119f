//! Registry pulls on a real node (the embedded agent, as root) against a local registry
//! (Debian's docker-registry on 127.0.0.1, through a small counting proxy where the test
//! needs to know what was fetched):
//!
//! - concurrent pulls of one image share one download, and pods show kubelet's Pulling and
//!   Pulled events;
//! - a pull that moves a tag never takes the old image from under a container running it:
//!   the old image stays, named by digest (tag `<none>`), until image GC removes it unused;
//! - a disk that fills up: ErrImagePull / ImagePullBackOff with `no space left on device`,
//!   nothing left behind, the running pod undisturbed, recovery once the image fits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::images::{layer_tar, sha256_digest, Entry, Registry, TestImage, APPLETS, BUSYBOX};
use testkit::node::{
    import_test_image, server_with_node, status_column, wait_for, wait_running, TEST_IMAGE,
};
use testkit::{ServerOptions, TestServer};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

fn image_list(data_dir: &Path) -> String {
    testkit::node::image_list(&bin(), data_dir)
}

/// The busybox test image plus one file: images that differ in one layer.
fn busybox_with(path: &str, content: &[u8]) -> TestImage {
    let busybox = std::fs::read(BUSYBOX).expect("read /bin/busybox (busybox-static)");
    let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
    let mut entries = vec![
        Entry::Dir("bin/", 0o755),
        Entry::File("bin/busybox", 0o755, &busybox),
    ];
    for l in &links {
        entries.push(Entry::Symlink(l, "busybox"));
    }
    entries.extend([
        Entry::Dir("etc/", 0o755),
        Entry::File(path, 0o644, content),
        Entry::Dir("tmp/", 0o1777),
    ]);
    TestImage::from_layer(layer_tar(&entries).expect("layer"), &["sh"]).expect("image")
}

/// Bytes that do not compress (xorshift), so a layer blob is as big as its content.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn apply_pod(s: &TestServer, name: &str, image: &str, policy: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod_yaml(name, image, policy));
}

fn pod_yaml(name: &str, image: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: ["sleep", "3600"]
"#
    )
}

fn events_of(s: &TestServer, pod: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
}

/// A TCP proxy in front of the registry that records the request lines it forwards.
struct CountingProxy {
    host: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let host = listener.local_addr().expect("proxy address").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (upstream, seen) = (upstream.to_string(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (client.try_clone().expect("clone"), server);
                let (mut s_read, mut c_write) = (s_write.try_clone().expect("clone"), client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
                let seen = seen.clone();
                // Client to registry: request heads only (GET and HEAD have no bodies).
                std::thread::spawn(move || {
                    let mut pending = String::new();
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                        while let Some(end) = pending.find("\r\n") {
                            let line: String = pending.drain(..end + 2).collect();
                            if line.starts_with("GET ") || line.starts_with("HEAD ") {
                                seen.lock().expect("lock").push(line.trim().to_string());
                            }
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CountingProxy { host, requests }
    }

    /// GET requests whose path contains `part`.
    fn gets(&self, part: &str) -> usize {
        let requests = self.requests.lock().expect("lock");
        requests
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(part))
            .count()
    }
}

#[test]
fn concurrent_pulls_share_one_download() {
    let registry = Registry::start().expect("start the registry");
    let proxy = CountingProxy::start(&registry.host);
    let image = busybox_with("data", &noise(8 << 20, 7));
    registry
        .push(&image, "test/shared", "1")
        .expect("push the image");
    let name = format!("{}/test/shared:1", proxy.host);
    let layer = sha256_digest(&image.layer_gz);

    // Two pulls at once in one process: one manifest and one layer fetch between them.
    let dir = tempfile::tempdir().expect("tmp");
    let store = runtime::images::ImageStore::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let heard = Mutex::new(Vec::new());
    let report = |p: runtime::images::Progress| heard.lock().expect("lock").push(p);
    let anonymous = runtime::images::Credentials::Anonymous;
    let (a, b) = rt.block_on(async {
        tokio::join!(
            runtime::images::pull(&store, &name, &anonymous, &report),
            runtime::images::pull(&store, &name, &anonymous, &report)
        )
    });
    let (a, b) = (a.expect("first pull"), b.expect("second pull"));
    assert_eq!(a, b);
    assert_eq!(a.digest.as_str(), image.manifest_digest());
    assert_eq!(proxy.gets("/manifests/"), 1, "{:?}", proxy.requests);
    assert_eq!(proxy.gets(&layer), 1, "{:?}", proxy.requests);
    // Pulled again: the manifest is asked for, the blobs the store has are not.
    rt.block_on(runtime::images::pull(&store, &name, &anonymous, &report))
        .expect("pull again");
    assert_eq!(proxy.gets("/manifests/"), 2);
    assert_eq!(proxy.gets(&layer), 1);

    let heard = heard.into_inner().expect("lock");
    let total = (image.layer_gz.len() + image.config.len()) as u64;
    assert!(heard.iter().all(|p| p.total == total), "{heard:?}");
    assert_eq!(heard.last().map(|p| p.done), Some(total));
    // Two pods asking for the image at once on a node: one layer download.
    let s = server_with_node(&bin());
    let before = proxy.gets(&layer);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "{}---{}",
            pod_yaml("one", &name, "Always"),
            pod_yaml("two", &name, "Always")
        ),
    );
    wait_running(&s, "one");
    wait_running(&s, "two");
    assert_eq!(proxy.gets(&layer) - before, 1, "{:?}", proxy.requests);
    for pod in ["one", "two"] {
        let events = events_of(&s, pod);
        assert!(
            events.contains(&format!("Pulling: Pulling image \"{name}\"")),
            "{events}"
        );
        assert!(
            events.contains(&format!("Pulled: Successfully pulled image \"{name}\" in ")),
            "{events}"
        );
        let described = s.kubectl_ok(&["describe", "pod", pod]);
        assert!(
            described.contains("Successfully pulled image"),
            "{described}"
        );
    }
}

#[test]
fn a_pull_that_moves_a_tag_keeps_the_image_a_container_runs() {
    let registry = Registry::start().expect("start the registry");
    let one = busybox_with("etc/flavour", b"one\n");
    let two = busybox_with("etc/flavour", b"two\n");
    registry.push(&one, "test/busybox", "1").expect("push one");
    let name = format!("{}/test/busybox:1", registry.host);
    let s = server_with_node(&bin());
    let data = s.data_dir();

    apply_pod(&s, "first", &name, "IfNotPresent");
    wait_running(&s, "first");
    assert_eq!(
        s.kubectl_ok(&["exec", "first", "--", "cat", "/etc/flavour"]),
        "one\n"
    );

    // The tag moves to another image, which a second pod pulls.
    registry.push(&two, "test/busybox", "1").expect("push two");
    apply_pod(&s, "second", &name, "Always");
    wait_running(&s, "second");
    assert_eq!(
        s.kubectl_ok(&["exec", "second", "--", "cat", "/etc/flavour"]),
        "two\n"
    );

    // The first container runs on from the old image, its files all there.
    assert_eq!(status_column(&s, "first"), "Running");
    assert_eq!(
        s.kubectl_ok(&["exec", "first", "--", "cat", "/etc/flavour"]),
        "one\n"
    );
    s.kubectl_ok(&["exec", "first", "--", "ls", "/bin/httpd"]);
    // Listed by digest, without a tag, as crictl shows it.
    let old_id = &one.config_digest()[7..19];
    let new_id = &two.config_digest()[7..19];
    let repo = format!("{}/test/busybox", registry.host);
    let listed = image_list(&data);
    let row = |id: &str| -> Vec<String> {
        let line = listed
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} in {listed}"));
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(
        row(old_id)[..3],
        [repo.as_str(), "<none>", old_id],
        "{listed}"
    );
    assert_eq!(row(new_id)[..3], [repo.as_str(), "1", new_id], "{listed}");

    // Unused, the old image goes with the next image GC run (at agent start).
    let uid = s.kubectl_ok(&["get", "pod", "first", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_ok(&["delete", "pod", "first", "--wait=true", "--timeout=60s"]);
    let pod_dir = data.join("agent/pods").join(uid.trim());
    wait_for(
        &s,
        Duration::from_secs(30),
        "the pod's directory to go",
        || !pod_dir.exists(),
    );
    let mut s = s;
    s.restart().expect("restart the server");
    wait_for(
        &s,
        Duration::from_secs(60),
        "GC to remove the old image",
        || !image_list(&data).contains(old_id),
    );
    assert!(image_list(&data).contains(new_id));
    let old_layer = data
        .join("agent/image-store/layers/sha256")
        .join(one.diff_id().trim_start_matches("sha256:"));
    assert!(!old_layer.exists(), "{}", old_layer.display());
    wait_running(&s, "second");
    assert_eq!(
        s.kubectl_ok(&["exec", "second", "--", "cat", "/etc/flavour"]),
        "two\n"
    );
}

/// A tmpfs mounted for the test inside a server's directory. Dropped after the server
/// (whose own clean-up stops at the mount point): unmounts it (lazily, in case something
/// still holds it) and removes the rest of the server's directory, `owner`.
struct Tmpfs {
    dir: PathBuf,
    owner: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str, owner: &Path) -> Tmpfs {
        assert!(
            dir.starts_with(owner),
            "{} is not inside {}",
            dir.display(),
            owner.display()
        );
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "skiff-test-tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
            owner: owner.to_path_buf(),
        }
    }

    /// Bytes in use (statvfs).
    fn used(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.to_string_lossy().as_bytes()).expect("path");
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a zeroed statvfs to fill.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.dir.display());
        (st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg("-l").arg(&self.dir).output();
        if out.is_ok_and(|o| o.status.success()) {
            let _ = std::fs::remove_dir_all(&self.owner);
        }
    }
}

#[test]
fn a_disk_that_fills_up_fails_the_pull_clearly_and_the_pod_recovers() {
    let registry = Registry::start().expect("start the registry");
    let big = busybox_with("data", &noise(40 << 20, 11));
    registry
        .push(&big, "test/big", "1")
        .expect("push the big image");
    let name = format!("{}/test/big:1", registry.host);

    // Declared before the server, so dropped after it (its containers use the tmpfs).
    let tmpfs: Tmpfs;
    let mut s = TestServer::start(ServerOptions::new(bin()).with_agent())
        .expect("start skiff server with its agent");
    s.stop(Duration::from_secs(30)).expect("stop the server");
    let data = s.data_dir();
    let owner = data.parent().expect("the server's directory").to_path_buf();
    tmpfs = Tmpfs::mount(&data.join("agent/image-store"), "24m", &owner);
    import_test_image(&bin(), &data, TEST_IMAGE);
    s.restart().expect("start the server again");
    wait_for(&s, Duration::from_secs(60), "the node to be Ready", || {
        s.kubectl_ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .trim()
            == "True"
    });
    apply_pod(&s, "steady", TEST_IMAGE, "Never");
    wait_running(&s, "steady");
    let used_before = tmpfs.used();

    apply_pod(&s, "big", &name, "IfNotPresent");
    wait_for(&s, Duration::from_secs(120), "the pull to fail", || {
        events_of(&s, "big").contains("no space left on device")
    });
    let events = events_of(&s, "big");
    let failed = events
        .lines()
        .find(|l| l.contains("no space left on device"))
        .unwrap_or_default();
    assert!(
        failed.starts_with(&format!("Failed: Failed to pull image \"{name}\": ")),
        "{events}"
    );
    assert!(events.contains("Failed: Error: ErrImagePull"), "{events}");
    wait_for(&s, Duration::from_secs(30), "ImagePullBackOff", || {
        status_column(&s, "big") == "ImagePullBackOff"
    });
    let described = s.kubectl_ok(&["describe", "pod", "big"]);
    assert!(described.contains("no space left on device"), "{described}");
    assert!(described.contains("ImagePullBackOff"), "{described}");

    // Nothing left behind: the space is back (between retries) and staging is empty.
    wait_for(
        &s,
        Duration::from_secs(60),
        "the space to be given back",
        || tmpfs.used() <= used_before,
    );
    let staging = data.join("agent/image-store/tmp");
    wait_for(&s, Duration::from_secs(60), "staging to be empty", || {
        std::fs::read_dir(&staging).is_ok_and(|d| d.count() == 0)
    });
    assert!(!image_list(&data).contains("test/big"));
    // The rest of the node is undisturbed.
    assert_eq!(status_column(&s, "steady"), "Running");
    s.kubectl_ok(&["exec", "steady", "--", "true"]);

    // The tag now names an image that fits: the next retry pulls it and the pod runs.
    let small = busybox_with("data", b"small\n");
    registry
        .push(&small, "test/big", "1")
        .expect("push the small image");
    wait_running(&s, "big");
    assert_eq!(
        s.kubectl_ok(&["exec", "big", "--", "cat", "/data"]),
        "small\n"
    );
    assert_eq!(status_column(&s, "steady"), "Running");
    drop(s);
    drop(tmpfs);
}
