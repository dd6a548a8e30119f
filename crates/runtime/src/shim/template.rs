//! The shim launcher's template mount namespace: the node's mounts as libcontainer needs
//! them, made once per launcher ([`super::zygote`]).
//!
//! Without it, hiding the other pods' mounts ([`super::state::HiddenMounts`]) starts with a
//! copy of the node's whole mount table at every container start (three mounts for each
//! pod on the node), then detaches the pods directory from the copy. With it, a shim copies
//! the template, which holds only the root, /proc, /sys, /dev, the cgroup hierarchies and
//! the mounts on the way to the pods directory, and moves its own pod's mounts in. That copy costs the same whatever runs on the node, and libcontainer's many reads of
//! the mount table read a short one.
//!
//! The template is a slave of the node's mounts: what the node mounts or unmounts later
//! reaches it where the node's mounts are shared (as systemd makes them), and a mount the
//! node removes is not kept alive by it. It serves only containers whose root filesystem
//! and bind sources all lie inside their pod's directory; any other source (a hostPath, a
//! local-path claim) may sit on a mount the template lacks, so such a container gets a
//! fresh copy of the node's table as before.
//!
//! [`mounts_to_drop`] and [`serves`] decide; [`make`] and [`enter`] make the system calls.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::spec::ContainerConfig;
use crate::sandbox::mounts::{parse_mountinfo, MountInfo, MOUNTINFO};

/// What a container's creation reads from the node: procfs (libcontainer's /proc/self/..),
/// sysfs and /dev (the shim opens /dev/null), without what is mounted below them; the
/// container mounts its own proc, sysfs, devpts, shm and mqueue.
const NEEDED_MOUNTS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// ... and the cgroup hierarchies, with everything below.
const NEEDED_TREE: &str = "/sys/fs/cgroup";

/// Passes over the mount table when making a template (stacked mounts go one per pass).
const MAX_PASSES: usize = 8;

/// A template namespace and the pods directory it was made without.
#[derive(Debug)]
pub(crate) struct Template {
    pub under: PathBuf,
    pub ns: OwnedFd,
}

/// The topmost mounts a template drops: every mount except the root, [`NEEDED_MOUNTS`],
/// those at or below [`NEEDED_TREE`], and those whose mount point is a strict ancestor of
/// `under` (the pods directory itself and all below it go). "Topmost": its parent is kept, so unmounting it
/// (detached) takes everything below it along.
pub(crate) fn mounts_to_drop(table: &[MountInfo], under: &Path) -> Vec<PathBuf> {
    let kept = |m: &MountInfo| {
        m.mount_point == Path::new("/")
            || NEEDED_MOUNTS.iter().any(|t| m.mount_point == Path::new(t))
            || m.mount_point.starts_with(NEEDED_TREE)
            || (under.starts_with(&m.mount_point) && under != m.mount_point)
    };
    let by_id: HashMap<u32, &MountInfo> = table.iter().map(|m| (m.mount_id, m)).collect();
    table
        .iter()
        .filter(|m| !kept(m))
        .filter(|m| by_id.get(&m.parent_id).is_none_or(|p| kept(p)))
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Whether a container can be created in a copy of the template: its shim's state
/// directory (where libcontainer keeps its own), its root filesystem and every bind source
/// lie inside `keep` (its pod's directory, canonical), and every namespace it joins there
/// or in /proc, all named without `..`.
pub(crate) fn serves(config: &ContainerConfig, state_dir: &Path, keep: &Path) -> bool {
    let plain = |p: &Path| !p.components().any(|c| matches!(c, Component::ParentDir));
    let inside = |p: &Path| p.starts_with(keep) && plain(p);
    let ns = &config.namespaces;
    inside(state_dir)
        && inside(&config.rootfs)
        && config.mounts.iter().all(|m| inside(&m.source))
        && [&ns.network, &ns.ipc, &ns.uts, &ns.pid]
            .into_iter()
            .flatten()
            .all(|p| inside(p) || (p.starts_with("/proc") && plain(p)))
}

/// Makes the template for the pods directory `under`. Called by the single-threaded
/// launcher, which stays in the node's namespace: it unshares, shapes the copy, keeps a
/// handle on it and goes back. If it cannot go back it exits (its shims would miss every
/// pod's mounts); the agent then spawns shims directly.
pub(crate) fn make(under: &Path) -> Result<Template, String> {
    let under =
        std::fs::canonicalize(under).map_err(|e| format!("resolving {}: {e}", under.display()))?;
    let node =
        File::open("/proc/self/ns/mnt").map_err(|e| format!("opening /proc/self/ns/mnt: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare: {e}"))?;
    let made = shape(&under);
    if let Err(e) = nix::sched::setns(node.as_fd(), CloneFlags::CLONE_NEWNS) {
        eprintln!("skiff shim launcher: back to the node's mount namespace: {e}");
        std::process::exit(1);
    }
    made.map(|ns| Template { under, ns })
}

/// In the fresh copy: slave of the node, then the mounts [`mounts_to_drop`] names
/// detached. Returns a handle on the namespace.
fn shape(under: &Path) -> Result<OwnedFd, String> {
    set_propagation(Path::new("/"), MsFlags::MS_SLAVE)
        .map_err(|e| format!("making the copy a slave of the node's mounts: {e}"))?;
    for _ in 0..MAX_PASSES {
        let text =
            std::fs::read_to_string(MOUNTINFO).map_err(|e| format!("reading {MOUNTINFO}: {e}"))?;
        let table = parse_mountinfo(&text).map_err(|e| e.to_string())?;
        let drop = mounts_to_drop(&table, under);
        if drop.is_empty() {
            let ns = File::open("/proc/self/ns/mnt")
                .map_err(|e| format!("opening /proc/self/ns/mnt: {e}"))?;
            return Ok(OwnedFd::from(ns));
        }
        for path in drop {
            match nix::mount::umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                // Gone with a stacked mount detached earlier in this pass.
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(format!("detaching {}: {e}", path.display())),
            }
        }
    }
    Err(format!("mounts still to detach after {MAX_PASSES} passes"))
}

/// Moves the calling shim into a private copy of `template` with the mounts at and below
/// `keep` (its pod's directory, as the node has them) moved in at `keep`. On error the
/// caller goes back to the node's namespace.
pub(crate) fn enter(template: BorrowedFd<'_>, keep: &Path) -> std::io::Result<()> {
    let keep_c = CString::new(keep.as_os_str().as_bytes())?;
    // The pod's mounts, cloned while the node's namespace is still ours.
    let tree = clone_tree(&keep_c)?;
    nix::sched::setns(template, CloneFlags::CLONE_NEWNS)?;
    // A copy of our own: the template stays as it is for the next shim.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    set_propagation(Path::new("/"), MsFlags::MS_PRIVATE)?;
    attach_tree(&tree, &keep_c)?;
    // The clones may be peers of the node's mounts: nothing made here may reach the node.
    set_propagation(keep, MsFlags::MS_PRIVATE)?;
    Ok(())
}

/// Sets the propagation of the mounts at and below `path` (`MS_SLAVE`, `MS_PRIVATE`, ...).
pub(crate) fn set_propagation(path: &Path, propagation: MsFlags) -> nix::Result<()> {
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REC | propagation,
        None::<&str>,
    )
}

/// A detached, recursive clone of the mounts at and below `path` (`open_tree`).
pub(crate) fn clone_tree(path: &CStr) -> std::io::Result<OwnedFd> {
    // Not in the libc crate yet (linux/mount.h).
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: open_tree with a valid C string; the returned descriptor is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

/// Attaches a tree from [`clone_tree`] at `path` in the caller's mount namespace
/// (`move_mount`).
pub(crate) fn attach_tree(tree: &OwnedFd, path: &CStr) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    // SAFETY: move_mount with a descriptor we own, an empty path and a valid C string.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &str) -> Vec<MountInfo> {
        parse_mountinfo(lines).unwrap()
    }

    const NODE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
28 27 0:25 / /mnt/tools ro,relatime - tmpfs tools ro
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 27 0:30 / /run rw,relatime shared:2 - tmpfs tmpfs rw
41 40 0:31 / /run/user/0 rw,relatime - tmpfs tmpfs rw
42 40 0:4 net:[1] /run/netns/x rw - nsfs nsfs rw
50 27 254:1 / /var/lib rw,relatime shared:3 - ext4 /dev/vdb rw
51 50 254:1 /docker /var/lib/docker rw,relatime - ext4 /dev/vdb rw
52 50 254:1 /skiff/agent/pods /var/lib/skiff/agent/pods rw,relatime - ext4 /dev/vdb rw
53 52 0:4 net:[2] /var/lib/skiff/agent/pods/a/netns rw - nsfs nsfs rw
54 52 0:40 / /var/lib/skiff/agent/pods/a/containers/c/0/rootfs/merged rw - overlay overlay rw
55 54 0:41 / /var/lib/skiff/agent/pods/a/containers/c/0/rootfs/merged/x rw - tmpfs tmpfs rw
";

    #[test]
    fn the_template_keeps_what_libcontainer_reads_and_the_way_to_the_pods() {
        let drop = mounts_to_drop(&table(NODE), Path::new("/var/lib/skiff/agent/pods"));
        // Topmost only: /run takes /run/user/0 and /run/netns/x along, the pods directory
        // its pods' mounts. /var/lib stays: the pods directory is reached through it.
        let drop: Vec<&str> = drop.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            drop,
            [
                "/dev/shm",
                "/mnt/tools",
                "/run",
                "/var/lib/docker",
                "/var/lib/skiff/agent/pods"
            ]
        );
    }

    #[test]
    fn a_shaped_template_has_nothing_left_to_drop() {
        let shaped = "\
22 27 0:21 / /proc rw - proc proc rw
23 27 0:22 / /sys rw - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw
27 1 254:0 / / rw - ext4 /dev/vda rw
50 27 254:1 / /var/lib rw - ext4 /dev/vdb rw
";
        assert!(mounts_to_drop(&table(shaped), Path::new("/var/lib/skiff/agent/pods")).is_empty());
        // A mount named like an ancestor but not one (`/var/li` is no ancestor of /var/lib/..).
        let near = format!("{shaped}60 27 0:50 / /var/li rw - tmpfs t rw\n");
        let drop = mounts_to_drop(&table(&near), Path::new("/var/lib/skiff/agent/pods"));
        assert_eq!(drop, [PathBuf::from("/var/li")]);
    }

    #[test]
    fn stacked_mounts_go_from_the_top_one_pass_at_a_time() {
        let stacked = "\
27 1 254:0 / / rw - ext4 /dev/vda rw
70 27 0:60 / /srv rw - tmpfs a rw
71 70 0:61 / /srv rw - tmpfs b rw
";
        // Only the lower one is topmost; unmounting /srv detaches the upper first, and the
        // next pass finds the lower one.
        let drop = mounts_to_drop(&table(stacked), Path::new("/data/pods"));
        assert_eq!(drop, [PathBuf::from("/srv")]);
    }

    #[test]
    fn only_containers_wholly_inside_their_pod_use_the_template() {
        let keep = Path::new("/var/lib/skiff/agent/pods/a");
        let state = Path::new("/var/lib/skiff/agent/pods/a/containers/c/0/shim");
        let mut config: ContainerConfig = serde_json::from_value(serde_json::json!({
            "id": "c",
            "rootfs": "/var/lib/skiff/agent/pods/a/containers/c/0/rootfs/merged",
            "args": ["sh"],
            "cgroups_path": "/kubepods/besteffort/poda/c",
            "namespaces": {"network": "/var/lib/skiff/agent/pods/a/netns", "pid": "/proc/7/ns/pid"},
            "mounts": [
                {"source": "/var/lib/skiff/agent/pods/a/etc-hosts", "destination": "/etc/hosts"},
                {"source": "/var/lib/skiff/agent/pods/a/volumes/data", "destination": "/data"}
            ]
        }))
        .unwrap();
        assert!(serves(&config, state, keep));
        config.mounts.push(
            serde_json::from_value(serde_json::json!(
                {"source": "/var/log", "destination": "/host-logs"}
            ))
            .unwrap(),
        );
        assert!(
            !serves(&config, state, keep),
            "a hostPath needs the node's own table"
        );
        config.mounts.pop();
        config.mounts.push(
            serde_json::from_value(serde_json::json!(
                {"source": "/var/lib/skiff/agent/pods/a/../b/volumes/x", "destination": "/x"}
            ))
            .unwrap(),
        );
        assert!(
            !serves(&config, state, keep),
            "`..` may lead out of the pod"
        );
        config.mounts.pop();
        config.namespaces.ipc = Some("/run/ipc/x".into());
        assert!(
            !serves(&config, state, keep),
            "a namespace bound outside the pod and /proc"
        );
        config.namespaces.ipc = None;
        assert!(serves(&config, state, keep));
        assert!(
            !serves(&config, Path::new("/run/shims/c"), keep),
            "state outside"
        );
        config.rootfs = "/elsewhere/rootfs".into();
        assert!(!serves(&config, state, keep));
    }
}
