//! `subPath` and `subPathExpr`: the part of a volume one mount shows, resolved so that a
//! symlink inside the volume (which a container may have made) can never aim the mount at
//! the host. As upstream's kubelet: symlinks are evaluated once, the result must lie inside
//! the volume, then every component is opened again with `O_NOFOLLOW` from the volume root
//! and the opened file (not its name) is bind-mounted under the pod's directory
//! (`volume-subpaths/<volume>/<container>/<mount-index>`), which the container then binds.
//! The sandbox's teardown unmounts those binds before anything is deleted.

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::pods::env::expand;

/// Upstream `ExpandContainerVolumeMounts`: `$(VAR)` from the kubelet's variables; a
/// variable that is unset or empty is an error naming it.
pub fn expand_expr(expr: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let missing = std::cell::RefCell::new(BTreeSet::new());
    let out = expand(expr, |name| {
        let value = vars.get(name).cloned().unwrap_or_default();
        if value.is_empty() {
            missing.borrow_mut().insert(name.to_string());
        }
        Some(value)
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(format!("missing value for {}", names.join(", ")));
    }
    Ok(out)
}

/// The kubelet's checks of a (expanded) subPath before it touches the disk.
pub fn check(sub: &str) -> Result<(), String> {
    if sub.starts_with('/') {
        return Err(format!(
            "error SubPath `{sub}` must not be an absolute path"
        ));
    }
    if sub.split('/').any(|p| p == "..") {
        return Err(format!(
            "unable to provision SubPath `{sub}`: must not contain '..'"
        ));
    }
    Ok(())
}

/// Opens `root/sub` safely: symlinks are evaluated, the result must be inside `root`
/// (upstream's `subpath %q not within volume path %q`), then each component is re-opened
/// with `O_NOFOLLOW` so a swap after the check is refused. A missing path is first made as
/// directories with the volume root's mode (upstream's `SafeMakeDir`).
pub fn open(root: &Path, sub: &str) -> Result<OwnedFd, String> {
    let root = std::fs::canonicalize(root).map_err(|e| {
        format!(
            "error resolving symlinks in {:?}: {e}",
            root.display().to_string()
        )
    })?;
    let full = root.join(sub);
    if std::fs::metadata(&full).is_err() {
        let mode = std::fs::metadata(&root)
            .map(|m| m.permissions().mode() & 0o7777)
            .map_err(|e| format!("stat {}: {e}", root.display()))?;
        make_dirs(&root, sub, mode)?;
    }
    let resolved = std::fs::canonicalize(&full).map_err(|e| {
        format!(
            "error resolving symlinks in {:?}: {e}",
            full.display().to_string()
        )
    })?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "subpath {:?} not within volume path {:?}",
            resolved.display().to_string(),
            root.display().to_string()
        ));
    }
    let rel = resolved.strip_prefix(&root).unwrap_or(Path::new(""));
    open_no_follow(&root, rel)
        .map_err(|e| format!("error opening subpath {}: {e}", resolved.display()))
}

/// Walks `rel` from `root` one component at a time, never following a symlink.
fn open_no_follow(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let mut fd = open_at(None, root.as_os_str().as_bytes(), libc::O_DIRECTORY)?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::other(format!(
                "unexpected component in {}",
                rel.display()
            )));
        };
        fd = open_at(Some(&fd), name.as_bytes(), 0)?;
    }
    Ok(fd)
}

fn open_at(dir: Option<&OwnedFd>, name: &[u8], extra: i32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(io::Error::other)?;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC | extra;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid directory fd (or AT_FDCWD) and a NUL-terminated name.
    let raw = unsafe { libc::openat(dirfd, c.as_ptr(), flags) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing: refuse it here.
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: valid fd, buffer large enough for struct stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::other(format!(
            "{} is a symlink",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(fd)
}

/// Makes the missing directories of `sub` under `root` with `mkdirat`, never through a
/// symlink.
fn make_dirs(root: &Path, sub: &str, mode: u32) -> Result<(), String> {
    let err = |e: io::Error| format!("creating subPath {sub} in {}: {e}", root.display());
    let mut fd = open_at(None, root.as_os_str().as_bytes(), libc::O_DIRECTORY).map_err(err)?;
    for name in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let c = CString::new(name).map_err(|e| err(io::Error::other(e)))?;
        // SAFETY: valid directory fd and NUL-terminated name.
        let made = unsafe { libc::mkdirat(fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) };
        if made != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(err(e));
            }
        } else {
            // mkdirat applies the umask; the kubelet sets the exact mode afterwards.
            // SAFETY: valid dir fd and name; AT_SYMLINK_NOFOLLOW is not supported by
            // fchmodat on Linux, but the entry was just made as a directory.
            unsafe { libc::fchmodat(fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) };
        }
        fd = open_at(Some(&fd), name.as_bytes(), libc::O_DIRECTORY).map_err(err)?;
    }
    Ok(())
}

/// Bind-mounts the opened subpath onto `target` (host side, under the pod's directory),
/// replacing whatever an earlier start mounted there.
pub fn bind(fd: &OwnedFd, target: &Path) -> Result<(), String> {
    let c = CString::new(target.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    for _ in 0..16 {
        // SAFETY: NUL-terminated path.
        let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        if r != 0 {
            break;
        }
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    runtime::sandbox::mounts::bind(&source, target, false)
        .map_err(|e| format!("bind-mounting the subpath onto {}: {e}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn subpaths_stay_inside_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("vol");
        std::fs::create_dir_all(root.join("data/..2026_01/inner")).unwrap();
        std::fs::write(root.join("data/..2026_01/key"), "v").unwrap();
        std::os::unix::fs::symlink("..2026_01/key", root.join("data/key")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../", root.join("data/up")).unwrap();
        let root_c = std::fs::canonicalize(&root).unwrap();

        // A symlink inside the volume is followed (configMap keys are symlinks).
        let fd = open(&root, "data/key").unwrap();
        assert_eq!(target_of(&fd), root_c.join("data/..2026_01/key"));

        let err = open(&root, "escape/passwd").unwrap_err();
        assert_eq!(
            err,
            "subpath \"/etc/passwd\" not within volume path \"".to_string()
                + &root_c.display().to_string()
                + "\""
        );
        let err = open(&root, "data/up").unwrap_err();
        assert!(err.starts_with("subpath "), "{err}");

        // Missing directories are made, with the volume's mode.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let fd = open(&root, "new/dir").unwrap();
        assert_eq!(target_of(&fd), root_c.join("new/dir"));
        let mode = std::fs::metadata(root.join("new/dir"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        // ... but never through a symlink.
        assert!(open(&root, "escape/skiff-made-this").is_err());
        assert!(!Path::new("/etc/skiff-made-this").exists());
    }

    #[test]
    fn checks_and_expansion() {
        assert_eq!(check("a/b"), Ok(()));
        assert_eq!(
            check("/a"),
            Err("error SubPath `/a` must not be an absolute path".into())
        );
        assert_eq!(
            check("a/../b"),
            Err("unable to provision SubPath `a/../b`: must not contain '..'".into())
        );
        let vars = HashMap::from([
            ("POD".to_string(), "p1".to_string()),
            ("E".into(), "".into()),
        ]);
        assert_eq!(expand_expr("logs/$(POD)", &vars), Ok("logs/p1".into()));
        assert_eq!(
            expand_expr("$(NOPE)/$(E)/$(POD)", &vars),
            Err("missing value for E, NOPE".into())
        );
    }
}
