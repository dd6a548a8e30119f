//! Mounts in a pod's directory: bind and tmpfs volumes, and the teardown that must never reach
//! outside the pod directory or delete through a filesystem that is still mounted.
//!
//! The mount table is read from `/proc/self/mountinfo` (the caller's mount namespace) and
//! parsed by pure functions; "which mounts are under this directory" compares paths component by
//! component on canonical paths, so `/a/b` never matches `/a/bc`. Deleting a directory tree
//! walks it with `openat`/`unlinkat` without following symlinks and stops with an error at any
//! entry on another mount.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::FsFlags;
use nix::unistd::UnlinkatFlags;

use super::{io_err, SandboxError};

/// Where the kernel describes the caller's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/<pid>/mountinfo` (see proc(5)), with paths unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem: equal for two mounts of the same superblock.
    pub device: String,
    /// The directory of the filesystem that is mounted (not `/` for bind mounts of a subdir).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Parses mountinfo text; a malformed line is an error naming it.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>, SandboxError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_line(line).ok_or_else(|| SandboxError::Invalid {
                op: "parse",
                path: PathBuf::from(MOUNTINFO),
                reason: format!("malformed line {line:?}"),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    // 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let device = fields.next()?.to_string();
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    let mount_options = fields.next()?.to_string();
    let mut rest = after.split(' ');
    let fs_type = rest.next()?.to_string();
    let source = String::from_utf8_lossy(unescape(rest.next()?).as_os_str().as_bytes()).into();
    let super_options = rest.next().unwrap_or_default().to_string();
    Some(MountInfo {
        mount_id,
        parent_id,
        device,
        root,
        mount_point,
        mount_options,
        fs_type,
        source,
        super_options,
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) byte-wise, so non-UTF-8 names survive.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// The mount points at or under `dir` (an absolute, canonical path), deepest first. A mount
/// point mounted several times (stacked) is listed once per mount.
pub fn select_under(mounts: &[MountInfo], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point.clone())
        .collect();
    // Stable: stacked mounts keep their order; unmounting takes the top one each time anyway.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn read_mountinfo() -> Result<Vec<MountInfo>, SandboxError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(io_err("read", Path::new(MOUNTINFO)))?;
    parse_mountinfo(&text)
}

/// `dir` resolved to the canonical path mountinfo would show, or `None` when it does not exist.
/// A symlink as the last component is refused: following it could aim a teardown at any
/// directory on the host (symlinks higher up, such as `/var/run`, are resolved).
fn canonical(dir: &Path) -> Result<Option<PathBuf>, SandboxError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(SandboxError::Invalid {
                op: "look for mounts under",
                path: dir.to_path_buf(),
                reason: "is a symlink; refusing to follow it".into(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", dir)(e)),
    }
    match std::fs::canonicalize(dir) {
        Ok(path) => Ok(Some(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("resolve", dir)(e)),
    }
}

/// Mount points at or under `dir`, deepest first; empty when `dir` does not exist. `dir` must
/// not itself be a symlink.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    match canonical(dir)? {
        Some(dir) => Ok(select_under(&read_mountinfo()?, &dir)),
        None => Ok(Vec::new()),
    }
}

/// Lazily unmounts the topmost mount at `path`. `Ok(false)` when nothing is mounted there
/// (or the path is gone). Never follows a symlink in the last component.
pub(crate) fn detach(path: &Path) -> Result<bool, SandboxError> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(e) => Err(io_err("unmount", path)(e)),
    }
}

/// Detaches every mount stacked at `path`; Ok when none.
pub(crate) fn detach_all(path: &Path) -> Result<(), SandboxError> {
    // A bound on the loop: something keeps re-mounting here, or umount never says EINVAL.
    for _ in 0..64 {
        if !detach(path)? {
            return Ok(());
        }
    }
    Err(SandboxError::StillMounted {
        path: path.to_path_buf(),
    })
}

/// Unmounts (lazily, deepest first) everything mounted at or under `dir`. Re-reads the mount
/// table afterwards and errors if anything is left.
pub fn unmount_all_under(dir: &Path) -> Result<(), SandboxError> {
    let Some(dir) = canonical(dir)? else {
        return Ok(());
    };
    // A few rounds: a lazy unmount of a parent can already have taken a child with it, and
    // mount propagation can add peers.
    for _ in 0..4 {
        let found = select_under(&read_mountinfo()?, &dir);
        if found.is_empty() {
            return Ok(());
        }
        for mount_point in &found {
            debug_assert!(mount_point.starts_with(&dir));
            detach(mount_point)?;
        }
    }
    match select_under(&read_mountinfo()?, &dir).into_iter().next() {
        Some(path) => Err(SandboxError::StillMounted { path }),
        None => Ok(()),
    }
}

/// Makes `dir` (created if missing) a mount point of its own, a private bind mount of
/// itself, so that everything mounted below it can be detached at once in another mount
/// namespace (the shims' `HiddenMounts`). Private, so mounts made below it never propagate
/// to the parent's peers. `Ok(true)` when `dir` is such a mount point (now or already);
/// `Ok(false)` when something is mounted below it already, which a bind would cover.
pub fn ensure_own_mount(dir: &Path) -> Result<bool, SandboxError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let Some(dir) = canonical(dir)? else {
        return Ok(false);
    };
    let table = read_mountinfo()?;
    if table.iter().any(|m| m.mount_point == dir) {
        return Ok(true);
    }
    if !select_under(&table, &dir).is_empty() {
        return Ok(false);
    }
    nix::mount::mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io_err("bind mount onto", &dir))?;
    nix::mount::mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io_err("make private", &dir))
    .inspect_err(|_| {
        let _ = detach(&dir);
    })?;
    Ok(true)
}

/// Removes `dir` and everything in it after unmounting everything at or under it. Never
/// follows symlinks and never deletes inside another mount: an entry on one (that could not be
/// unmounted, or appeared meanwhile) is a `StillMounted` error. Ok when `dir` does not exist;
/// a symlink at `dir` is unlinked, not followed.
pub fn remove_dir_safely(dir: &Path) -> Result<(), SandboxError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return std::fs::remove_file(dir).map_err(io_err("remove", dir))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", dir)(e)),
    }
    unmount_all_under(dir)?;
    remove_dir_on_one_mount(dir)
}

/// Removes `dir` and everything in it without unmounting anything: an entry on a mount other
/// than `dir`'s is a `StillMounted` error, and nothing on the other mount is touched (entries
/// already visited on `dir`'s own mount may be gone). Never follows symlinks; a symlink at
/// `dir` is unlinked. Ok when `dir` does not exist.
pub fn remove_dir_on_one_mount(dir: &Path) -> Result<(), SandboxError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", dir)(e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(dir).map_err(io_err("remove", dir));
    }
    let fd = open_dir_at(None, dir.as_os_str()).map_err(io_err("open", dir))?;
    let root = MountIdentity::of_fd(&fd).map_err(io_err("stat", dir))?;
    remove_contents(&fd, dir, &root)?;
    drop(fd);
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(SandboxError::StillMounted {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

/// Which mount an inode is reached through: the mount id when the kernel reports it (5.8+),
/// which also tells bind mounts of the same filesystem apart, and the device.
#[derive(Debug, PartialEq, Eq)]
struct MountIdentity {
    dev: (u32, u32),
    mnt_id: Option<u64>,
}

impl MountIdentity {
    fn of_fd(fd: &OwnedFd) -> io::Result<Self> {
        Self::statx(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
    }

    fn of_entry(dirfd: &OwnedFd, name: &CStr) -> io::Result<(Self, bool)> {
        let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
        let (id, is_dir) = Self::statx_with_type(dirfd.as_raw_fd(), name, flags)?;
        Ok((id, is_dir))
    }

    fn statx(dirfd: RawFd, name: &CStr, flags: i32) -> io::Result<Self> {
        Self::statx_with_type(dirfd, name, flags).map(|(id, _)| id)
    }

    fn statx_with_type(dirfd: RawFd, name: &CStr, flags: i32) -> io::Result<(Self, bool)> {
        let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
        let mask = libc::STATX_TYPE | libc::STATX_MNT_ID;
        // SAFETY: valid dirfd and NUL-terminated name; the kernel fills `buf`.
        let ret = unsafe { libc::statx(dirfd, name.as_ptr(), flags, mask, buf.as_mut_ptr()) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statx succeeded and wrote the struct (it was zeroed before anyway).
        let stx = unsafe { buf.assume_init() };
        let mnt_id = (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id);
        let is_dir = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
        Ok((
            Self {
                dev: (stx.stx_dev_major, stx.stx_dev_minor),
                mnt_id,
            },
            is_dir,
        ))
    }
}

fn open_dir_at(dirfd: Option<&OwnedFd>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let raw = nix::fcntl::openat(dirfd.map(|f| f.as_raw_fd()), name, flags, Mode::empty())?;
    // SAFETY: openat just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The names in a directory (without `.` and `..`), read before anything is deleted.
fn entry_names(fd: &OwnedFd) -> io::Result<Vec<CString>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(Some(fd.as_raw_fd()), ".", flags, Mode::empty())?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

fn remove_contents(fd: &OwnedFd, path: &Path, root: &MountIdentity) -> Result<(), SandboxError> {
    for name in entry_names(fd).map_err(io_err("list", path))? {
        let child = path.join(OsStr::from_bytes(name.as_bytes()));
        let (id, is_dir) = match MountIdentity::of_entry(fd, &name) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("stat", &child)(e)),
        };
        if &id != root {
            return Err(SandboxError::StillMounted { path: child });
        }
        if is_dir {
            let sub = open_dir_at(Some(fd), OsStr::from_bytes(name.as_bytes()))
                .map_err(io_err("open", &child))?;
            // The entry could have been swapped for a mount point between stat and open.
            if &MountIdentity::of_fd(&sub).map_err(io_err("stat", &child))? != root {
                return Err(SandboxError::StillMounted { path: child });
            }
            remove_contents(&sub, &child, root)?;
        }
        let flag = if is_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        match nix::unistd::unlinkat(Some(fd.as_raw_fd()), name.as_c_str(), flag) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EBUSY) => return Err(SandboxError::StillMounted { path: child }),
            Err(e) => return Err(io_err("remove", &child)(e)),
        }
    }
    Ok(())
}

/// Bind-mounts `source` onto `target` (created as an empty directory or file to match
/// `source`), then remounts it read-only when asked. Not recursive: mounts under `source`
/// are not carried along. On a failed read-only remount the bind is undone, so a volume meant
/// to be read-only is never left writable.
pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), SandboxError> {
    let meta = std::fs::metadata(source).map_err(io_err("stat bind source", source))?;
    create_mount_point(target, meta.is_dir())?;
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io_err("bind mount onto", target))?;
    if !readonly {
        return Ok(());
    }
    let remount = || -> Result<(), SandboxError> {
        // A bind remount replaces the per-mount flags: keep the ones the source mount has.
        let current = nix::sys::statvfs::statvfs(target).map_err(io_err("statvfs", target))?;
        let flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept(current.flags());
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(io_err("remount read-only", target))
    };
    remount().inspect_err(|_| {
        let _ = detach(target);
    })
}

/// The per-mount flags a bind remount must repeat so as not to clear them.
fn kept(flags: FsFlags) -> MsFlags {
    let pairs = [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    pairs
        .into_iter()
        .filter(|(st, _)| flags.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

fn create_mount_point(target: &Path, directory: bool) -> Result<(), SandboxError> {
    if directory {
        return std::fs::create_dir_all(target).map_err(io_err("create", target));
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(target)
        .map(drop)
        .map_err(io_err("create", target))
}

/// The tmpfs mount data for an emptyDir with medium Memory, as the kubelet passes it: only a
/// size, and only when positive (0 means the tmpfs default, half of RAM). No `mode=`: the
/// tmpfs root is then the kernel's default 1777, which is what pods see upstream.
pub fn tmpfs_options(size_bytes: Option<u64>) -> Option<String> {
    size_bytes.filter(|&n| n > 0).map(|n| format!("size={n}"))
}

/// Mounts a tmpfs at `target` (created, mode 0777 like the kubelet's emptyDir directory)
/// with an optional size limit in bytes.
pub fn tmpfs(target: &Path, size_bytes: Option<u64>) -> Result<(), SandboxError> {
    std::fs::create_dir_all(target).map_err(io_err("create", target))?;
    std::fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .map_err(io_err("chmod", target))?;
    let data = tmpfs_options(size_bytes);
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::empty(),
        data.as_deref(),
    )
    .map_err(io_err("mount tmpfs onto", target))
}

/// Whether `path` is absolute and has no `.`/`..` components, i.e. cannot climb out of the
/// directory it is joined to.
pub(crate) fn is_plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
100 27 0:50 / /var/lib/skiff/pods/a/b rw,relatime shared:5 master:2 - tmpfs tmpfs rw
101 27 0:51 / /var/lib/skiff/pods/a/bc rw,relatime - tmpfs tmpfs rw
102 100 0:52 / /var/lib/skiff/pods/a/b/volumes/my\\040vol rw - tmpfs tmpfs rw
103 102 254:0 /data /var/lib/skiff/pods/a/b/volumes/my\\040vol/x rw - ext4 /dev/vda rw
104 100 0:53 / /var/lib/skiff/pods/a/b rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_and_optional_tags() {
        let mounts = parse_mountinfo(SAMPLE).expect("parse");
        assert_eq!(mounts.len(), 8);
        let m = &mounts[3];
        assert_eq!(m.mount_id, 100);
        assert_eq!(m.parent_id, 27);
        assert_eq!(m.device, "0:50");
        assert_eq!(m.mount_point, Path::new("/var/lib/skiff/pods/a/b"));
        assert_eq!(m.fs_type, "tmpfs");
        assert_eq!(m.source, "tmpfs");
        assert_eq!(m.super_options, "rw");
        assert_eq!(mounts[6].root, Path::new("/data"));
    }

    #[test]
    fn unescapes_octal_sequences() {
        let cases = [
            ("/a\\040b", "/a b"),
            ("/tab\\011x", "/tab\tx"),
            ("/nl\\012", "/nl\n"),
            ("/back\\134slash", "/back\\slash"),
            ("/not\\8escape", "/not\\8escape"),
            ("/short\\04", "/short\\04"),
            ("/plain", "/plain"),
        ];
        for (field, want) in cases {
            assert_eq!(unescape(field), PathBuf::from(want), "{field}");
        }
        assert_eq!(unescape("/x\\377").as_os_str().as_bytes(), b"/x\xff");
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = parse_mountinfo("22 27 0:21 / /proc rw\n").expect_err("no separator");
        assert!(err.to_string().contains("malformed"), "{err}");
        assert!(parse_mountinfo("x 27 0:21 / /proc rw - proc proc rw\n").is_err());
    }

    #[test]
    fn selects_mounts_under_a_dir_deepest_first_without_sibling_prefixes() {
        let mounts = parse_mountinfo(SAMPLE).expect("parse");
        let found = select_under(&mounts, Path::new("/var/lib/skiff/pods/a/b"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/skiff/pods/a/b/volumes/my vol/x"),
                PathBuf::from("/var/lib/skiff/pods/a/b/volumes/my vol"),
                PathBuf::from("/var/lib/skiff/pods/a/b"),
                PathBuf::from("/var/lib/skiff/pods/a/b"),
            ]
        );
        let cases = [
            ("/var/lib/skiff/pods/a/bc", 1),
            ("/var/lib/skiff/pods/a/b/volumes", 2),
            ("/var/lib/skiff/pods/a/b/vol", 0),
            ("/var/lib/skiff/pods/a", 5),
            ("/nowhere", 0),
        ];
        for (dir, count) in cases {
            assert_eq!(select_under(&mounts, Path::new(dir)).len(), count, "{dir}");
        }
    }

    #[test]
    fn tmpfs_options_follow_the_kubelet() {
        assert_eq!(tmpfs_options(None), None);
        assert_eq!(tmpfs_options(Some(0)), None);
        assert_eq!(
            tmpfs_options(Some(1 << 20)).as_deref(),
            Some("size=1048576")
        );
    }

    #[test]
    fn plain_absolute_paths() {
        for (path, ok) in [
            ("/skiff/pod1/c1", true),
            ("/", true),
            ("skiff/pod1", false),
            ("/skiff/../etc", false),
            ("/skiff/./x", true), // `Path::components` drops inner `.`
        ] {
            assert_eq!(is_plain_absolute(Path::new(path)), ok, "{path}");
        }
    }
}
