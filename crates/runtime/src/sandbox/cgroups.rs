//! Cleaning up a pod's or container's cgroup on cgroup v1, hybrid (v1 controllers with a v2
//! mount beside them) and v2 hosts: finding its directories in every hierarchy, listing and
//! killing the processes in it, and removing the directories.
//!
//! A `cgroups_path` is the string the shim gives libcontainer as `cgroupsPath` (absolute,
//! e.g. `/skiff/pod<uid>/<container>`); like libcontainer, it is joined to each hierarchy's
//! mount point. Creating cgroups and setting limits stay libcontainer's job. Because these
//! functions kill and delete, a path that is relative, the root, or has `..` is refused, and a
//! process is only signalled after a pidfd pins it and its `/proc/<pid>/cgroup` still places
//! it in the tree (a recycled pid is never hit).

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mounts::{self, MountInfo};
use super::{io_err, SandboxError};

/// One cgroup v1 hierarchy: where it is mounted and what it carries (controllers such as
/// `memory`, or a named hierarchy such as `name=systemd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    pub controllers: Vec<String>,
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only per-controller v1 hierarchies.
    V1 { hierarchies: Vec<Hierarchy> },
    /// Only the unified v2 hierarchy.
    V2 { unified: PathBuf },
    /// v1 controller hierarchies, plus a v2 mount (usually `/sys/fs/cgroup/unified`).
    Hybrid {
        hierarchies: Vec<Hierarchy>,
        unified: PathBuf,
    },
}

impl Layout {
    /// Reads the layout from parsed mountinfo. Each hierarchy is taken once even when mounted
    /// at several places (same device); for v2 the conventional mount point is preferred.
    pub fn from_mounts(mounts: &[MountInfo]) -> Result<Layout, SandboxError> {
        let mut seen = BTreeSet::new();
        let hierarchies: Vec<Hierarchy> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup" && seen.insert(m.device.clone()))
            .map(|m| Hierarchy {
                mount_point: m.mount_point.clone(),
                controllers: controllers(&m.super_options),
            })
            .collect();
        let v2: Vec<&Path> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup2")
            .map(|m| m.mount_point.as_path())
            .collect();
        let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(Path::new)
            .find(|p| v2.contains(p));
        let unified = preferred.or(v2.first().copied()).map(Path::to_path_buf);
        match (hierarchies.is_empty(), unified) {
            (false, Some(unified)) => Ok(Layout::Hybrid {
                hierarchies,
                unified,
            }),
            (false, None) => Ok(Layout::V1 { hierarchies }),
            (true, Some(unified)) => Ok(Layout::V2 { unified }),
            (true, None) => Err(SandboxError::NoCgroupMounts),
        }
    }

    /// The mount point of every hierarchy: v1 ones first, then the unified one.
    pub fn roots(&self) -> Vec<&Path> {
        match self {
            Layout::V1 { hierarchies } => hierarchies
                .iter()
                .map(|h| h.mount_point.as_path())
                .collect(),
            Layout::V2 { unified } => vec![unified.as_path()],
            Layout::Hybrid {
                hierarchies,
                unified,
            } => hierarchies
                .iter()
                .map(|h| h.mount_point.as_path())
                .chain([unified.as_path()])
                .collect(),
        }
    }
}

/// The controllers (and `name=` of a named hierarchy) in a v1 mount's super options.
fn controllers(super_options: &str) -> Vec<String> {
    const NOT_CONTROLLERS: [&str; 7] = [
        "rw",
        "ro",
        "clone_children",
        "noprefix",
        "xattr",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    super_options
        .split(',')
        .filter(|o| {
            !o.is_empty() && !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent=")
        })
        .map(str::to_string)
        .collect()
}

/// Reads this host's cgroup layout from `/proc/self/mountinfo`.
pub fn detect() -> Result<Layout, SandboxError> {
    let text = std::fs::read_to_string(mounts::MOUNTINFO)
        .map_err(io_err("read", Path::new(mounts::MOUNTINFO)))?;
    Layout::from_mounts(&mounts::parse_mountinfo(&text)?)
}

/// Every directory `cgroups_path` maps to, one per hierarchy, whether or not it exists.
/// Callers pass a path `validate` accepts (the fallible functions here check it first).
pub fn directories(layout: &Layout, cgroups_path: &Path) -> Vec<PathBuf> {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    layout
        .roots()
        .into_iter()
        .map(|root| root.join(rel))
        .collect()
}

/// Refuses a cgroup path these functions must never act on: relative, the root cgroup (every
/// process on the host), or with `.`/`..` components that could climb out of the hierarchy.
pub fn validate(cgroups_path: &Path) -> Result<(), SandboxError> {
    let invalid = |reason: &str| SandboxError::Invalid {
        op: "cgroup",
        path: cgroups_path.to_path_buf(),
        reason: reason.into(),
    };
    if !mounts::is_plain_absolute(cgroups_path) {
        return Err(invalid("must be absolute, without '.' or '..'"));
    }
    if cgroups_path.parent().is_none() {
        return Err(invalid("must not be the root cgroup"));
    }
    Ok(())
}

/// Whether `/proc/<pid>/cgroup` text places the process at or under `cgroups_path` in any
/// hierarchy.
pub fn in_cgroup(proc_cgroup: &str, cgroups_path: &Path) -> bool {
    proc_cgroup.lines().any(|line| {
        // hierarchy-id:controller-list:path (the path itself may contain ':')
        let mut parts = line.splitn(3, ':');
        let path = parts.nth(2);
        path.is_some_and(|p| Path::new(p).starts_with(cgroups_path))
    })
}

/// The PIDs (thread group ids) in the cgroup tree at `cgroups_path`, in every hierarchy and
/// all descendants, deduplicated and sorted. Empty when the cgroup does not exist.
pub fn pids(cgroups_path: &Path) -> Result<Vec<i32>, SandboxError> {
    validate(cgroups_path)?;
    let layout = detect()?;
    let mut found = BTreeSet::new();
    for dir in directories(&layout, cgroups_path) {
        collect_pids(&dir, &mut found)?;
    }
    Ok(found.into_iter().collect())
}

fn collect_pids(dir: &Path, found: &mut BTreeSet<i32>) -> Result<(), SandboxError> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(text) => found.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        // The cgroup is absent here, or was removed meanwhile.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &procs)(e)),
    }
    for child in subdirectories(dir)? {
        collect_pids(&child, found)?;
    }
    Ok(())
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// SIGKILLs every process in the tree, repeatedly (a process may fork meanwhile), until the
/// tree is empty; `KillTimeout` with the survivors when `timeout` passes first. The calling
/// process is never signalled. The caller still reaps its own children.
pub fn kill_all(cgroups_path: &Path, timeout: Duration) -> Result<(), SandboxError> {
    validate(cgroups_path)?;
    let deadline = Instant::now() + timeout;
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    loop {
        let remaining: Vec<i32> = pids(cgroups_path)?
            .into_iter()
            .filter(|&p| p != me)
            .collect();
        if remaining.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SandboxError::KillTimeout {
                cgroups_path: cgroups_path.to_path_buf(),
                pids: remaining,
                timeout,
            });
        }
        for pid in remaining {
            kill_member(pid, cgroups_path)?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `pid` if it is (still) in the tree; a process that is gone is not an error.
fn kill_member(pid: i32, cgroups_path: &Path) -> Result<(), SandboxError> {
    let proc_file = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let gone = |e: &io::Error| {
        e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::NotFound
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(io_err("pidfd_open", &proc_file)(e)),
    };
    // Checked after the pidfd pins the process: the pid cannot be recycled from here on.
    match std::fs::read_to_string(&proc_file) {
        Ok(text) if in_cgroup(&text, cgroups_path) => {}
        Ok(_) => return Ok(()),
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(io_err("read", &proc_file)(e)),
    }
    match pidfd_kill(&pidfd) {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(io_err("kill", &proc_file)(e)),
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(ret).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid pidfd, SIGKILL, no siginfo, no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes the cgroup tree (children first) in every hierarchy. Ok when absent; `CgroupBusy`
/// naming the directory when processes or foreign children keep one. All hierarchies are
/// tried before the first error is returned.
pub fn remove(cgroups_path: &Path) -> Result<(), SandboxError> {
    validate(cgroups_path)?;
    let layout = detect()?;
    let mut first_error = None;
    for dir in directories(&layout, cgroups_path) {
        if let Err(e) = remove_tree(&dir) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> Result<(), SandboxError> {
    for child in subdirectories(dir)? {
        remove_tree(&child)?;
    }
    // The kernel can report a cgroup busy for a moment after its last process left it (the
    // exiting task is released asynchronously), so an empty one gets a few retries.
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                    .is_ok_and(|procs| procs.trim().is_empty());
                attempts += 1;
                if !empty || attempts > 10 {
                    return Err(SandboxError::CgroupBusy {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("remove", dir)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 27 0:32 / /mnt/memory-again rw,relatime - cgroup cgroup rw,memory
";

    const V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset,clone_children
36 31 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids,release_agent=/x
";

    const V2: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 27 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn layout(text: &str) -> Result<Layout, SandboxError> {
        Layout::from_mounts(&mounts::parse_mountinfo(text).expect("parse"))
    }

    #[test]
    fn detects_hybrid_with_named_hierarchy_once_per_device() {
        let Layout::Hybrid {
            hierarchies,
            unified,
        } = layout(HYBRID).expect("layout")
        else {
            panic!("not hybrid");
        };
        assert_eq!(unified, Path::new("/sys/fs/cgroup/unified"));
        let found: Vec<(&Path, Vec<&str>)> = hierarchies
            .iter()
            .map(|h| {
                (
                    h.mount_point.as_path(),
                    h.controllers.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["cpu", "cpuacct"]
                ),
                (Path::new("/sys/fs/cgroup/memory"), vec!["memory"]),
                (Path::new("/sys/fs/cgroup/systemd"), vec!["name=systemd"]),
            ]
        );
    }

    #[test]
    fn detects_v1_and_v2_and_none() {
        let Layout::V1 { hierarchies } = layout(V1).expect("v1") else {
            panic!("not v1");
        };
        assert_eq!(hierarchies.len(), 2);
        assert_eq!(hierarchies[0].controllers, ["cpuset"]);
        assert_eq!(hierarchies[1].controllers, ["pids"]);
        assert_eq!(
            layout(V2).expect("v2"),
            Layout::V2 {
                unified: "/sys/fs/cgroup".into()
            }
        );
        let none = layout("27 1 254:0 / / rw - ext4 /dev/vda rw\n");
        assert!(matches!(none, Err(SandboxError::NoCgroupMounts)));
    }

    #[test]
    fn directories_cover_every_hierarchy() {
        let cg = Path::new("/skiff/pod1/c1");
        assert_eq!(
            directories(&layout(HYBRID).expect("layout"), cg),
            [
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/skiff/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/memory/skiff/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/systemd/skiff/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/unified/skiff/pod1/c1"),
            ]
        );
        assert_eq!(
            directories(&layout(V2).expect("layout"), cg),
            [PathBuf::from("/sys/fs/cgroup/skiff/pod1/c1")]
        );
    }

    #[test]
    fn refuses_dangerous_cgroup_paths() {
        for (path, ok) in [
            ("/skiff/pod1", true),
            ("/", false),
            ("skiff/pod1", false),
            ("/skiff/../..", false),
            ("", false),
        ] {
            assert_eq!(validate(Path::new(path)).is_ok(), ok, "{path:?}");
        }
    }

    #[test]
    fn membership_from_proc_cgroup() {
        let text = "9:name=systemd:/\n4:memory:/skiff/pod1/c1\n0::/\n";
        assert!(in_cgroup(text, Path::new("/skiff/pod1")));
        assert!(in_cgroup(text, Path::new("/skiff/pod1/c1")));
        assert!(!in_cgroup(text, Path::new("/skiff/pod")));
        assert!(!in_cgroup(text, Path::new("/skiff/pod1/c1/x")));
        assert!(in_cgroup("0::/a:b/c\n", Path::new("/a:b")));
    }
}
