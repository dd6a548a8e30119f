//! Root-only host primitives the node agent builds a pod sandbox from: persistent network
//! namespaces (`netns`), image root filesystems (`overlay`), volume mounts and safe teardown of
//! a pod directory (`mounts`), and cleanup of a pod's cgroups on v1, hybrid and v2 hosts
//! (`cgroups`).
//!
//! Everything here is callable from the multithreaded agent: nothing changes a process-wide
//! attribute (namespaces, working directory). Work that needs a changed thread attribute
//! (a netns via `setns`/`unshare`, a working directory via `unshare(CLONE_FS)`) runs on a
//! dedicated short-lived thread that ends afterwards, so no pooled thread is ever left in the
//! wrong namespace. Parsing and deciding (mountinfo, cgroup layout, overlay options) are pure
//! functions, unit-tested on sample text; the functions that act are thin.

pub mod cgroups;
pub mod mounts;
pub mod netns;
pub mod overlay;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failed sandbox operation, naming the operation and the path it was about.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call or file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The arguments cannot be used as given (a relative path, a separator character in an
    /// overlay path, a cgroup path that would reach outside its hierarchy).
    #[error("{op} {}: {reason}", path.display())]
    Invalid {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The overlay mount options do not fit in the one page `mount(2)` accepts, even with
    /// layer paths relative to their common parent.
    #[error(
        "overlay mount {}: options are {len} bytes even with relative layer paths, over the \
         kernel's limit of {limit}",
        target.display()
    )]
    OverlayOptionsTooLong {
        target: PathBuf,
        len: usize,
        limit: usize,
    },
    /// `netns::create` on a path that already holds a network namespace.
    #[error("{} is already a network namespace", path.display())]
    NetnsExists { path: PathBuf },
    /// A mount is still present where teardown must not continue through it.
    #[error("{} is still a mount point; refusing to delete through it", path.display())]
    StillMounted { path: PathBuf },
    /// Processes survived `cgroups::kill_all`.
    #[error(
        "cgroup {}: processes {pids:?} still alive after {timeout:?}",
        cgroups_path.display()
    )]
    KillTimeout {
        cgroups_path: PathBuf,
        pids: Vec<i32>,
        timeout: Duration,
    },
    /// A cgroup directory could not be removed because processes or child cgroups remain.
    #[error("cgroup directory {} is busy (processes or child cgroups remain)", path.display())]
    CgroupBusy { path: PathBuf },
    /// No cgroup filesystem is mounted on this host.
    #[error("no cgroup or cgroup2 filesystem in /proc/self/mountinfo")]
    NoCgroupMounts,
}

impl SandboxError {
    /// The errno of an `Io` error, for callers that treat some outcomes as expected.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SandboxError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A closure turning an io error into a `SandboxError::Io` about `op` on `path`.
pub(crate) fn io_err<E: Into<io::Error>>(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(E) -> SandboxError {
    let path = path.to_path_buf();
    move |e| SandboxError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// Runs `f` on a fresh thread and waits for it; a panic in `f` is resumed on the caller.
/// Thread attributes `f` changes (namespaces, fs struct) die with the thread.
pub(crate) fn on_fresh_thread<T: Send>(
    name: &str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, SandboxError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, f)
            .map_err(io_err("spawn thread", Path::new(name)))?;
        match handle.join() {
            Ok(value) => Ok(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
