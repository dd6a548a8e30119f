//! The sandbox primitives against the real kernel: network namespaces, overlay, bind and tmpfs
//! mounts, safe teardown and cgroup cleanup. Needs root (skipped otherwise, with a message).
//! Every test works in its own temporary directory or cgroup path and cleans up through drop
//! guards, so a failing assertion leaves no mount, namespace or cgroup behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime::sandbox::{cgroups, mounts, netns, overlay, SandboxError};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: sandbox tests need root");
    }
    root
}

fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts::parse_mountinfo(&text)
        .expect("parse mountinfo")
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

fn is_mounted(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_points().contains(&path)
}

fn thread_netns() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").expect("readlink own netns")
}

/// Removes the namespace at a path when dropped.
struct NetnsGuard(PathBuf);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns::remove(&self.0);
    }
}

/// Unmounts everything under a directory when dropped (declared after the tempdir, so it runs
/// before the tempdir's own deletion could walk into a mount).
struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(&self.0);
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("skiff-sandbox-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn netns_is_created_with_loopback_up_and_removed_idempotently() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let path = dir.path().join("netns/pod-a");
    let _guard = NetnsGuard(path.clone());
    let before = thread_netns();

    netns::create(&path).expect("create");
    assert_eq!(
        thread_netns(),
        before,
        "the calling thread stayed in its namespace"
    );
    assert!(netns::is_netns(&path));
    assert!(!netns::is_netns(dir.path()));
    assert!(
        !netns::is_netns(Path::new("/proc/self/ns/mnt")),
        "an nsfs file of another type"
    );
    assert!(netns::is_netns(Path::new("/proc/self/ns/net")));
    let host_ino = std::fs::metadata("/proc/self/ns/net").expect("stat").ino();
    let pod_ino = std::fs::metadata(&path).expect("stat").ino();
    assert_ne!(pod_ino, host_ino);

    let (inside, lo_up, echoed) = netns::run_in(&path, || {
        let inside = thread_netns();
        let lo_up = netns::interface_up("lo").expect("SIOCGIFFLAGS lo");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).expect("read");
        (inside, lo_up, buf)
    })
    .expect("run_in");
    assert_eq!(inside, PathBuf::from(format!("net:[{pod_ino}]")));
    assert!(lo_up, "lo is up in the new namespace");
    assert_eq!(&echoed, b"ping");
    assert_eq!(thread_netns(), before);

    let again = netns::create(&path).expect_err("second create");
    assert!(matches!(again, SandboxError::NetnsExists { .. }), "{again}");

    netns::remove(&path).expect("remove");
    assert!(!path.exists());
    assert!(!is_mounted(&path));
    netns::remove(&path).expect("remove again");
    let missing = netns::run_in(&path, || ()).expect_err("run_in a removed netns");
    assert!(missing.to_string().contains("pod-a"), "{missing}");
}

#[test]
fn socket_made_in_a_netns_is_usable_from_the_caller() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let path = dir.path().join("pod-b");
    let _guard = NetnsGuard(path.clone());
    netns::create(&path).expect("create");

    let listener = netns::run_in(&path, || TcpListener::bind("127.0.0.1:0"))
        .expect("run_in")
        .expect("bind in pod");
    let addr = listener.local_addr().expect("addr");
    // What port-forward does: dial the pod's loopback from inside, then use the socket here.
    let mut dialed = netns::run_in(&path, move || TcpStream::connect(addr))
        .expect("run_in")
        .expect("connect in pod");
    let (mut accepted, _) = listener.accept().expect("accept");
    dialed.write_all(b"hello").expect("write");
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello");
}

#[test]
fn overlay_writes_go_to_upper_and_unmount_is_idempotent() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let _guard = MountGuard(d.to_path_buf());
    for (layer, files) in [
        ("l1", [("a", "base"), ("only1", "1")]),
        ("l2", [("a", "top"), ("only2", "2")]),
    ] {
        std::fs::create_dir_all(d.join(layer)).expect("mkdir");
        for (name, text) in files {
            std::fs::write(d.join(layer).join(name), text).expect("write layer");
        }
    }
    let lower = format!("{}:{}", d.join("l2").display(), d.join("l1").display());
    let (upper, work, merged) = (d.join("c/upper"), d.join("c/work"), d.join("c/rootfs"));

    overlay::mount(&lower, &upper, &work, &merged).expect("mount");
    assert!(is_mounted(&merged));
    let read = |name: &str| std::fs::read_to_string(merged.join(name)).expect("read merged");
    assert_eq!(read("a"), "top", "the first lowerdir is the topmost");
    assert_eq!((read("only1").as_str(), read("only2").as_str()), ("1", "2"));
    std::fs::write(merged.join("a"), "changed").expect("write merged");
    std::fs::write(merged.join("new"), "n").expect("create in merged");
    assert_eq!(
        std::fs::read_to_string(upper.join("a")).expect("upper"),
        "changed"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("new")).expect("upper"),
        "n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("l2/a")).expect("lower"),
        "top"
    );
    assert!(!d.join("l2/new").exists() && !d.join("l1/new").exists());

    overlay::unmount(&merged).expect("unmount");
    assert!(!is_mounted(&merged));
    overlay::unmount(&merged).expect("unmount again");
    overlay::unmount(&d.join("never-made")).expect("unmount a missing dir");
}

#[test]
fn overlay_with_a_lowerdir_over_one_page_mounts_via_relative_paths() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let _guard = MountGuard(d.to_path_buf());
    let store = d.join("images/layers");
    let layers: Vec<PathBuf> = (0..45)
        .map(|i| store.join(format!("sha256-{i:064x}")).join("rootfs"))
        .collect();
    for (i, layer) in layers.iter().enumerate() {
        std::fs::create_dir_all(layer).expect("mkdir layer");
        std::fs::write(layer.join(format!("f{i}")), i.to_string()).expect("write");
        std::fs::write(layer.join("which"), i.to_string()).expect("write");
    }
    let lower = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        lower.len() > 4096,
        "the test needs a lowerdir over a page: {}",
        lower.len()
    );
    let cwd = std::env::current_dir().expect("cwd");
    let merged = d.join("c/rootfs");

    overlay::mount(&lower, &d.join("c/upper"), &d.join("c/work"), &merged).expect("mount");
    assert_eq!(
        std::env::current_dir().expect("cwd"),
        cwd,
        "process cwd untouched"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("which")).expect("read"),
        "44"
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("f0")).expect("read"),
        "0"
    );
    overlay::unmount(&merged).expect("unmount");

    let too_many: String = (0..200)
        .map(|i| format!("{}/{i:0200}", store.display()))
        .collect::<Vec<_>>()
        .join(":");
    let err = overlay::mount(&too_many, &d.join("c/upper"), &d.join("c/work"), &merged)
        .expect_err("too long even relative");
    assert!(
        matches!(err, SandboxError::OverlayOptionsTooLong { .. }),
        "{err}"
    );
    assert!(!is_mounted(&merged));
}

#[test]
fn mounts_under_matches_components_not_string_prefixes() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let _guard = MountGuard(d.to_path_buf());
    let (b, bc, deep) = (d.join("a/b"), d.join("a/bc"), d.join("a/b/x/y"));
    mounts::tmpfs(&b, None).expect("tmpfs b");
    mounts::tmpfs(&bc, None).expect("tmpfs bc");
    mounts::tmpfs(&deep, None).expect("tmpfs deep");

    let b_canon = std::fs::canonicalize(&b).expect("canonical");
    assert_eq!(
        mounts::mounts_under(&b).expect("mounts_under"),
        [b_canon.join("x/y"), b_canon.clone()]
    );
    assert_eq!(
        mounts::mounts_under(&d.join("a"))
            .expect("mounts_under")
            .len(),
        3
    );
    assert!(mounts::mounts_under(&d.join("missing"))
        .expect("missing dir")
        .is_empty());

    mounts::unmount_all_under(&b).expect("unmount_all_under");
    assert!(mounts::mounts_under(&b).expect("mounts_under").is_empty());
    assert!(
        is_mounted(&bc),
        "the sibling with a common string prefix stays mounted"
    );
    mounts::unmount_all_under(&b).expect("again");
}

#[test]
fn remove_dir_safely_unmounts_and_never_deletes_through_mounts_or_symlinks() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let _guard = MountGuard(d.to_path_buf());
    let precious = d.join("host-data");
    std::fs::create_dir_all(&precious).expect("mkdir");
    std::fs::write(precious.join("keep"), "k").expect("write");
    let pod = d.join("pod");
    std::fs::create_dir_all(pod.join("volumes/empty/sub")).expect("mkdir");
    std::fs::write(pod.join("volumes/empty/sub/f"), "x").expect("write");
    std::os::unix::fs::symlink(&precious, pod.join("volumes/empty/link")).expect("symlink");
    mounts::bind(&precious, &pod.join("volumes/hostpath"), false).expect("bind");
    mounts::tmpfs(&pod.join("volumes/mem"), Some(1 << 20)).expect("tmpfs");

    // Without unmounting, the walk stops at the mounts and leaves their content alone.
    let refused = mounts::remove_dir_on_one_mount(&pod).expect_err("mounts remain");
    assert!(
        matches!(refused, SandboxError::StillMounted { .. }),
        "{refused}"
    );
    assert!(precious.join("keep").exists());

    // A symlink handed in as the directory is unlinked, never followed to its target.
    let link_to_root = d.join("link-to-root");
    std::os::unix::fs::symlink("/", &link_to_root).expect("symlink");
    let refused = mounts::unmount_all_under(&link_to_root).expect_err("symlink");
    assert!(matches!(refused, SandboxError::Invalid { .. }), "{refused}");
    mounts::remove_dir_safely(&link_to_root).expect("unlink");
    assert!(!link_to_root.exists() && Path::new("/proc/self").exists());

    mounts::remove_dir_safely(&pod).expect("remove_dir_safely");
    assert!(!pod.exists());
    assert!(
        precious.join("keep").exists(),
        "bind source and symlink target survive"
    );
    assert!(mounts::mounts_under(d).expect("mounts_under").is_empty());
    mounts::remove_dir_safely(&pod).expect("again");
}

#[test]
fn bind_readonly_and_tmpfs_with_size() {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let _guard = MountGuard(d.to_path_buf());
    let src = d.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(d.join("file"), "f").expect("write");

    let ro = d.join("pod/ro");
    mounts::bind(&src, &ro, true).expect("bind ro");
    let denied = std::fs::write(ro.join("x"), "x").expect_err("read-only");
    assert_eq!(denied.raw_os_error(), Some(libc::EROFS));
    std::fs::write(src.join("y"), "y").expect("source still writable");
    assert!(ro.join("y").exists());

    let ro_file = d.join("pod/etc/hosts");
    mounts::bind(&d.join("file"), &ro_file, true).expect("bind file ro");
    assert_eq!(std::fs::read_to_string(&ro_file).expect("read"), "f");
    assert!(std::fs::write(&ro_file, "w").is_err());

    let mem = d.join("pod/mem");
    mounts::tmpfs(&mem, Some(1 << 20)).expect("tmpfs");
    let st = nix::sys::statvfs::statvfs(&mem).expect("statvfs");
    assert_eq!(st.blocks() * st.fragment_size(), 1 << 20);
    let mode = std::fs::metadata(&mem).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(
        mode, 0o1777,
        "tmpfs root keeps the kernel default, as upstream"
    );

    mounts::unmount_all_under(&d.join("pod")).expect("unmount");
    assert!(!is_mounted(&ro) && !is_mounted(&mem) && !is_mounted(&ro_file));
}

static CGROUP_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cgroup path unique to this test process, killed and removed when dropped.
struct CgroupGuard(PathBuf);
impl CgroupGuard {
    fn new(leaf: &str) -> Self {
        let n = CGROUP_SEQ.fetch_add(1, Ordering::SeqCst);
        Self(PathBuf::from(format!(
            "/skiff-test-{}-{n}/{leaf}",
            std::process::id()
        )))
    }
    fn top(&self) -> PathBuf {
        self.0
            .ancestors()
            .nth(self.0.components().count() - 2)
            .expect("top")
            .to_path_buf()
    }
}
impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let top = self.top();
        let _ = cgroups::kill_all(&top, Duration::from_secs(2));
        let _ = cgroups::remove(&top);
    }
}

/// A child process killed and reaped when dropped.
struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates the cgroup in every hierarchy and moves `pid` into each.
fn enter_cgroup(layout: &cgroups::Layout, path: &Path, pid: u32) {
    for dir in cgroups::directories(layout, path) {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        if dir.join("cpuset.cpus").exists() {
            // A v1 cpuset cgroup takes no process until it has cpus and mems.
            for (file, parent_file) in [
                ("cpuset.cpus", "cpuset.cpus"),
                ("cpuset.mems", "cpuset.mems"),
            ] {
                let mut chain: Vec<&Path> = dir
                    .ancestors()
                    .take_while(|p| p.join(file).exists())
                    .collect();
                chain.reverse();
                for window in chain.windows(2) {
                    let value =
                        std::fs::read_to_string(window[0].join(parent_file)).expect("read cpuset");
                    std::fs::write(window[1].join(file), value.trim()).expect("write cpuset");
                }
            }
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
    }
}

#[test]
fn cgroup_layout_is_detected_on_this_host() {
    let layout = cgroups::detect().expect("detect");
    let roots = layout.roots();
    assert!(!roots.is_empty());
    for root in roots {
        assert!(
            root.join("cgroup.procs").exists(),
            "{} is a cgroup root",
            root.display()
        );
    }
}

#[test]
fn cgroup_tree_is_listed_killed_and_removed_in_every_hierarchy() {
    if !is_root() {
        return;
    }
    let cg = CgroupGuard::new("pod/c1");
    let layout = cgroups::detect().expect("detect");
    let child = ChildGuard(
        Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = child.0.id();
    enter_cgroup(&layout, &cg.0, pid);
    let pod = cg.0.parent().expect("pod").to_path_buf();

    assert_eq!(cgroups::pids(&cg.0).expect("pids"), [pid as i32]);
    assert_eq!(
        cgroups::pids(&pod).expect("pids of the parent"),
        [pid as i32],
        "recursive"
    );
    let busy = cgroups::remove(&pod).expect_err("busy while a process is in it");
    assert!(matches!(busy, SandboxError::CgroupBusy { .. }), "{busy}");

    cgroups::kill_all(&pod, Duration::from_secs(5)).expect("kill_all");
    assert!(cgroups::pids(&pod).expect("pids").is_empty());
    // Not reaped yet: the zombie is out of the cgroup already and does not keep it busy.
    cgroups::remove(&pod).expect("remove");
    let mut child = child;
    let status = child.0.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    for dir in cgroups::directories(&layout, &pod) {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    cgroups::remove(&pod).expect("remove again");
    cgroups::kill_all(&pod, Duration::from_millis(100)).expect("kill_all of an absent cgroup");
}

#[test]
fn cgroup_functions_refuse_the_root_and_relative_paths() {
    for path in ["/", "skiff/pod", "/skiff/../.."] {
        let path = Path::new(path);
        for result in [
            cgroups::kill_all(path, Duration::ZERO),
            cgroups::remove(path),
            cgroups::pids(path).map(drop),
        ] {
            let err = result.expect_err("refused");
            assert!(
                matches!(err, SandboxError::Invalid { .. }),
                "{}: {err}",
                path.display()
            );
        }
    }
}
