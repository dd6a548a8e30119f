//! Applying one layer tar (plain, gzip or zstd, detected by magic bytes) into its own
//! directory, in the form overlayfs reads as a lower layer.
//!
//! Safety: every write is relative to a directory file descriptor reached from the target
//! root one component at a time with `O_NOFOLLOW`, so no symlink is ever followed while an
//! entry is created and nothing can be written outside the target, whatever the tar holds.
//! Decisions (what an entry means) are made by [`plan_entry`], without I/O.
//!
//! - A leading `/` is stripped (`/a/b` is `a/b`, as docker does); any `..` component is
//!   refused, in entry paths and in hardlink targets.
//! - A path whose parent component is a symlink (or a file) is refused: writing through a
//!   symlink is how a hostile layer escapes. Legit layers never need it within one layer.
//! - Hardlinks must point at an entry already in this layer (never at the host).
//! - OCI whiteouts become overlayfs whiteouts: `.wh.NAME` → character device 0/0 `NAME`;
//!   `.wh..wh..opq` in `DIR` → xattr `trusted.overlay.opaque=y` on `DIR`. Other
//!   `.wh..wh.` entries (aufs metadata) are skipped, as docker does.
//! - Modes (incl. setuid), uid/gid, mtimes, symlinks, hardlinks, devices, fifos and
//!   `SCHILY.xattr.*` PAX records are preserved (the agent runs as root).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How a layer (or a whole tarball) is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer tar: {0}")]
    Read(#[source] io::Error),
    #[error("unsupported compression ({0}); want plain tar, gzip or zstd")]
    UnsupportedCompression(&'static str),
    #[error("opening the layer target directory {path}: {source}")]
    Target {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Detects the compression from the first bytes of a stream.
pub fn detect_compression(head: &[u8]) -> Result<Compression, UnpackError> {
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [b'B', b'Z', b'h', ..] => Err(UnpackError::UnsupportedCompression("bzip2")),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Err(UnpackError::UnsupportedCompression("xz")),
        _ => Ok(Compression::None),
    }
}

/// Wraps a reader so that it yields the decompressed bytes, whatever the compression.
pub fn decompressed<'a>(mut r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnpackError::Read(e)),
        }
    }
    let whole = io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match detect_compression(&head[..n])? {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(whole).map_err(UnpackError::Read)?)
        }
    })
}

/// What an entry's path asks for, decided without touching the file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Nothing to do (the root itself, aufs metadata).
    Skip,
    /// Create the entry at `parent/name`.
    Create { parent: Vec<Vec<u8>>, name: Vec<u8> },
    /// `.wh.NAME`: hide `parent/name` of lower layers.
    Whiteout { parent: Vec<Vec<u8>>, name: Vec<u8> },
    /// `.wh..wh..opq`: hide everything lower layers have in `dir`.
    Opaque { dir: Vec<Vec<u8>> },
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// Splits a tar path into components: a leading `/` and `.` components are dropped, `..`
/// is refused.
pub fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component".to_string()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Decides what an entry path means.
pub fn plan_entry(raw_path: &[u8]) -> Result<Planned, String> {
    let mut comps = clean_path(raw_path)?;
    let Some(name) = comps.pop() else {
        return Ok(Planned::Skip);
    };
    if name == WHITEOUT_OPAQUE {
        return Ok(Planned::Opaque { dir: comps });
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Ok(Planned::Skip);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() {
            return Err("whiteout names nothing".to_string());
        }
        return Ok(Planned::Whiteout {
            parent: comps,
            name: hidden.to_vec(),
        });
    }
    Ok(Planned::Create {
        parent: comps,
        name,
    })
}

/// Counts of what one layer held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

/// Applies an uncompressed layer tar into `target` (an existing, normally empty directory).
pub fn unpack_layer(tar_stream: impl Read, target: &Path) -> Result<UnpackStats, UnpackError> {
    let root = open_dir_path(target).map_err(|source| UnpackError::Target {
        path: target.display().to_string(),
        source,
    })?;
    let mut archive = tar::Archive::new(tar_stream);
    let mut stats = UnpackStats::default();
    // Directory mtimes are set last: creating their children changes them.
    let mut dir_times: Vec<(Vec<Vec<u8>>, i64)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let refused = |reason: String| UnpackError::Refused {
            path: shown.clone(),
            reason,
        };
        let io_err = |op: &'static str| {
            let path = shown.clone();
            move |source: io::Error| UnpackError::Io {
                path,
                op,
                source: super::store::clear_io(source),
            }
        };
        stats.entries += 1;
        match plan_entry(&raw_path).map_err(refused)? {
            Planned::Skip => {}
            Planned::Opaque { dir } => {
                let fd = walk(&root, &dir, true).map_err(|e| walk_error(&shown, e))?;
                set_xattr(fd.as_raw_fd(), b"trusted.overlay.opaque", b"y")
                    .map_err(io_err("setting trusted.overlay.opaque"))?;
                stats.whiteouts += 1;
            }
            Planned::Whiteout { parent, name } => {
                let pfd = walk(&root, &parent, true).map_err(|e| walk_error(&shown, e))?;
                remove_existing(&pfd, &name, false)
                    .map_err(io_err("removing what the whiteout replaces"))?;
                mknod_at(&pfd, &name, libc::S_IFCHR, 0, 0)
                    .map_err(io_err("creating the whiteout device"))?;
                stats.whiteouts += 1;
            }
            Planned::Create { parent, name } => {
                let pfd = walk(&root, &parent, true).map_err(|e| walk_error(&shown, e))?;
                let header = entry.header().clone();
                let kind = header.entry_type();
                let mode = (header.mode().map_err(UnpackError::Read)? & 0o7777) as libc::mode_t;
                let old = header.as_old();
                let uid =
                    numeric(&old.uid, header.uid()).map_err(UnpackError::Read)? as libc::uid_t;
                let gid =
                    numeric(&old.gid, header.gid()).map_err(UnpackError::Read)? as libc::gid_t;
                let mtime = numeric(&old.mtime, header.mtime()).map_err(UnpackError::Read)? as i64;
                let xattrs = pax_xattrs(&mut entry).map_err(UnpackError::Read)?;
                use tar::EntryType as T;
                match kind {
                    T::Directory => {
                        remove_existing(&pfd, &name, true).map_err(io_err("replacing"))?;
                        match mkdir_at(&pfd, &name) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(io_err("mkdir")(e)),
                        }
                        let fd = open_dir_at(&pfd, &name).map_err(|e| walk_error(&shown, e))?;
                        fchown(&fd, uid, gid).map_err(io_err("chown"))?;
                        fchmod(&fd, mode).map_err(io_err("chmod"))?;
                        for (k, v) in &xattrs {
                            set_xattr(fd.as_raw_fd(), k, v).map_err(io_err("setting an xattr"))?;
                        }
                        let mut full = parent.clone();
                        full.push(name.clone());
                        dir_times.push((full, mtime));
                    }
                    T::Regular | T::Continuous | T::GNUSparse => {
                        remove_existing(&pfd, &name, false).map_err(io_err("replacing"))?;
                        let fd = open_at(
                            &pfd,
                            &name,
                            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                            0o600,
                        )
                        .map_err(io_err("create"))?;
                        let mut file = File::from(fd);
                        stats.bytes += io::copy(&mut entry, &mut file).map_err(io_err("write"))?;
                        let fd: OwnedFd = file.into();
                        fchown(&fd, uid, gid).map_err(io_err("chown"))?;
                        // After chown, which clears setuid/setgid bits.
                        fchmod(&fd, mode).map_err(io_err("chmod"))?;
                        for (k, v) in &xattrs {
                            set_xattr(fd.as_raw_fd(), k, v).map_err(io_err("setting an xattr"))?;
                        }
                        set_times_fd(&fd, mtime).map_err(io_err("setting mtime"))?;
                    }
                    T::Symlink => {
                        let target = entry
                            .link_name_bytes()
                            .ok_or_else(|| refused("symlink without a target".into()))?
                            .into_owned();
                        remove_existing(&pfd, &name, false).map_err(io_err("replacing"))?;
                        symlink_at(&target, &pfd, &name).map_err(io_err("symlink"))?;
                        lchown_at(&pfd, &name, uid, gid).map_err(io_err("chown"))?;
                        set_times_at(&pfd, &name, mtime).map_err(io_err("setting mtime"))?;
                    }
                    T::Link => {
                        let raw_target = entry
                            .link_name_bytes()
                            .ok_or_else(|| refused("hardlink without a target".into()))?
                            .into_owned();
                        let mut tcomps = clean_path(&raw_target)
                            .map_err(|r| refused(format!("hardlink target: {r}")))?;
                        let Some(tname) = tcomps.pop() else {
                            return Err(refused("hardlink to the layer root".into()));
                        };
                        if tcomps == parent && tname == name {
                            continue;
                        }
                        let tparent = walk(&root, &tcomps, false).map_err(|e| {
                            refused(format!(
                                "hardlink target {:?} is not in this layer: {e}",
                                String::from_utf8_lossy(&raw_target)
                            ))
                        })?;
                        remove_existing(&pfd, &name, false).map_err(io_err("replacing"))?;
                        link_at(&tparent, &tname, &pfd, &name).map_err(|e| {
                            refused(format!(
                                "hardlink target {:?} is not in this layer: {e}",
                                String::from_utf8_lossy(&raw_target)
                            ))
                        })?;
                    }
                    T::Char | T::Block | T::Fifo => {
                        let ftype = match kind {
                            T::Char => libc::S_IFCHR,
                            T::Block => libc::S_IFBLK,
                            _ => libc::S_IFIFO,
                        };
                        let major = header
                            .device_major()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0);
                        let minor = header
                            .device_minor()
                            .map_err(UnpackError::Read)?
                            .unwrap_or(0);
                        remove_existing(&pfd, &name, false).map_err(io_err("replacing"))?;
                        mknod_at(&pfd, &name, ftype, major, minor).map_err(io_err("mknod"))?;
                        lchown_at(&pfd, &name, uid, gid).map_err(io_err("chown"))?;
                        chmod_at(&pfd, &name, mode).map_err(io_err("chmod"))?;
                        set_times_at(&pfd, &name, mtime).map_err(io_err("setting mtime"))?;
                    }
                    other => {
                        return Err(refused(format!("unsupported tar entry type {other:?}")));
                    }
                }
            }
        }
    }
    // Deepest first, so setting a child's time does not disturb its parent's.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (path, mtime) in dir_times {
        let shown = String::from_utf8_lossy(&path.join(&b'/')).into_owned();
        let fd = match walk(&root, &path, false) {
            Ok(fd) => fd,
            // Replaced by a later entry (a file, a symlink) or removed by a whiteout.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTDIR | libc::ELOOP | libc::ENOENT)
                ) =>
            {
                continue
            }
            Err(e) => return Err(walk_error(&shown, e)),
        };
        set_times_fd(&fd, mtime).map_err(|source| UnpackError::Io {
            path: shown,
            op: "setting mtime",
            source: super::store::clear_io(source),
        })?;
    }
    Ok(stats)
}

fn walk_error(path: &str, e: io::Error) -> UnpackError {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => UnpackError::Refused {
            path: path.to_string(),
            reason: "a parent path component is a symlink or not a directory (writing through it could escape the layer)".to_string(),
        },
        _ => UnpackError::Io {
            path: path.to_string(),
            op: "opening parent directory",
            source: super::store::clear_io(e),
        },
    }
}

/// A numeric header field; an empty one (all NUL or spaces) is 0, as Go's archive/tar
/// (which wrote most layers) reads it.
fn numeric(raw: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    if raw.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(0);
    }
    parsed
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

// ---- fd-relative file system primitives (never follow symlinks) ----

fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_at(
    dir: &OwnedFd,
    name: &[u8],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

fn mkdir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) }).map(drop)
}

/// Opens `comps` below `root` one component at a time without following symlinks,
/// creating missing directories when `create` is set.
fn walk(root: &OwnedFd, comps: &[Vec<u8>], create: bool) -> io::Result<OwnedFd> {
    let mut cur = root.try_clone()?;
    for c in comps {
        cur = match open_dir_at(&cur, c) {
            Ok(fd) => fd,
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                match mkdir_at(&cur, c) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                open_dir_at(&cur, c)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

fn lstat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes what is at `dir/name` so a new entry can take its place; a directory is kept
/// when the new entry is a directory too (tar semantics: merge).
fn remove_existing(dir: &OwnedFd, name: &[u8], keep_dir: bool) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let c = cstr(name)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        if keep_dir {
            return Ok(());
        }
        // std's remove_dir_all does not follow symlinks; the path goes through our fd.
        let path = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join(OsStr::from_bytes(name));
        return std::fs::remove_dir_all(path);
    }
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
}

fn mknod_at(
    dir: &OwnedFd,
    name: &[u8],
    ftype: libc::mode_t,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = cstr(name)?;
    let dev = libc::makedev(major, minor);
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), ftype | 0o600, dev) }).map(drop)
}

fn symlink_at(target: &[u8], dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

fn link_at(from_dir: &OwnedFd, from: &[u8], to_dir: &OwnedFd, to: &[u8]) -> io::Result<()> {
    let f = cstr(from)?;
    let t = cstr(to)?;
    // Flags 0: a symlink target is linked itself, never followed.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })
    .map(drop)
}

fn fchown(fd: &OwnedFd, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

fn lchown_at(dir: &OwnedFd, name: &[u8], uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Only used on device nodes and fifos just created (never symlinks).
fn chmod_at(dir: &OwnedFd, name: &[u8], mode: libc::mode_t) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) }).map(drop)
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

fn set_times_fd(fd: &OwnedFd, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

fn set_times_at(dir: &OwnedFd, name: &[u8], mtime: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = times(mtime);
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

fn set_xattr(fd: RawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    check(unsafe { libc::fsetxattr(fd, c.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// One tar entry; the name bytes go into the header raw, so hostile names survive.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    fn build_tar(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, link, kind, mode, data): (&str, Option<&str>, tar::EntryType, u32, &[u8]) =
                match e {
                    E::Dir(n, m) => (n, None, tar::EntryType::Directory, *m, b""),
                    E::File(n, d, m) => (n, None, tar::EntryType::Regular, *m, d),
                    E::Symlink(n, t) => (n, Some(t), tar::EntryType::Symlink, 0o777, b""),
                    E::Hardlink(n, t) => (n, Some(t), tar::EntryType::Link, 0o644, b""),
                };
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                let raw = &mut h.as_old_mut().linkname;
                raw[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A sandbox: `outside/` is where an escape would land, `layer/` is the target.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("layer")).unwrap();
            std::fs::create_dir(dir.path().join("outside")).unwrap();
            std::fs::write(dir.path().join("outside/passwd"), b"root:x:0:0").unwrap();
            Sandbox { dir }
        }
        fn layer(&self) -> std::path::PathBuf {
            self.dir.path().join("layer")
        }
        fn outside(&self) -> std::path::PathBuf {
            self.dir.path().join("outside")
        }
        /// Everything under outside/ is as it was.
        fn assert_outside_untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(self.outside())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("passwd")]);
            assert_eq!(
                std::fs::read(self.outside().join("passwd")).unwrap(),
                b"root:x:0:0"
            );
            let top: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            let mut top = top;
            top.sort();
            assert_eq!(top, vec!["layer", "outside"]);
        }
    }

    #[test]
    fn plan_entry_table() {
        let c = |parts: &[&str]| {
            parts
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let cases: Vec<(&str, Result<Planned, ()>)> = vec![
            (
                "a/b",
                Ok(Planned::Create {
                    parent: c(&["a"]),
                    name: b"b".to_vec(),
                }),
            ),
            (
                "/a/b",
                Ok(Planned::Create {
                    parent: c(&["a"]),
                    name: b"b".to_vec(),
                }),
            ),
            (
                "./a//./b/",
                Ok(Planned::Create {
                    parent: c(&["a"]),
                    name: b"b".to_vec(),
                }),
            ),
            ("./", Ok(Planned::Skip)),
            ("/", Ok(Planned::Skip)),
            ("a/../b", Err(())),
            ("../x", Err(())),
            ("a/..", Err(())),
            (
                "etc/.wh.passwd",
                Ok(Planned::Whiteout {
                    parent: c(&["etc"]),
                    name: b"passwd".to_vec(),
                }),
            ),
            ("etc/.wh..wh..opq", Ok(Planned::Opaque { dir: c(&["etc"]) })),
            (".wh..wh..opq", Ok(Planned::Opaque { dir: vec![] })),
            (
                ".wh..wh.plnk/1",
                Ok(Planned::Create {
                    parent: c(&[".wh..wh.plnk"]),
                    name: b"1".to_vec(),
                }),
            ),
            (".wh..wh.plnk", Ok(Planned::Skip)),
            ("a/.wh.", Err(())),
        ];
        for (input, want) in cases {
            let got = plan_entry(input.as_bytes()).map_err(|_| ());
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn detects_compression() {
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 8]).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]).unwrap(),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"abc").unwrap(), Compression::None);
        assert_eq!(detect_compression(b"").unwrap(), Compression::None);
        assert!(detect_compression(b"BZh91").is_err());
        assert!(detect_compression(&[0xfd, b'7', b'z', b'X', b'Z', 0]).is_err());
    }

    #[test]
    fn unpacks_files_dirs_links_with_metadata() {
        let sb = Sandbox::new();
        let tar = build_tar(&[
            E::Dir("bin/", 0o755),
            E::File("bin/busybox", b"ELF", 0o4755),
            E::Symlink("bin/sh", "busybox"),
            E::Hardlink("bin/bb2", "bin/busybox"),
            E::File("/abs/file", b"x", 0o640),
            E::Dir("./tmp/", 0o1777),
        ]);
        let stats = unpack_layer(&tar[..], &sb.layer()).unwrap();
        assert_eq!(stats.entries, 6);
        let l = sb.layer();
        let bb = std::fs::metadata(l.join("bin/busybox")).unwrap();
        assert_eq!(bb.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((bb.uid(), bb.gid()), (1000, 1001));
        assert_eq!(bb.mtime(), 1_000_000);
        assert_eq!(bb.nlink(), 2);
        assert_eq!(
            std::fs::read_link(l.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let sh = std::fs::symlink_metadata(l.join("bin/sh")).unwrap();
        assert_eq!((sh.uid(), sh.mtime()), (1000, 1_000_000));
        assert_eq!(std::fs::read(l.join("abs/file")).unwrap(), b"x");
        let tmp = std::fs::metadata(l.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(tmp.mtime(), 1_000_000);
        assert_eq!(std::fs::metadata(l.join("bin")).unwrap().mtime(), 1_000_000);
        sb.assert_outside_untouched();
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        let sb = Sandbox::new();
        let tar = build_tar(&[
            E::Dir("etc/", 0o755),
            E::File("etc/.wh.passwd", b"", 0o644),
            E::File("var/lib/.wh..wh..opq", b"", 0o644),
            E::File(".wh..wh.plnk", b"", 0o644),
        ]);
        let stats = unpack_layer(&tar[..], &sb.layer()).unwrap();
        assert_eq!(stats.whiteouts, 2);
        let wh = std::fs::symlink_metadata(sb.layer().join("etc/passwd")).unwrap();
        assert_eq!(wh.mode() & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(wh.rdev(), 0);
        let dir = open_dir_path(&sb.layer().join("var/lib")).unwrap();
        let mut buf = [0u8; 8];
        let n = unsafe {
            libc::fgetxattr(
                dir.as_raw_fd(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(n, 1, "opaque xattr: {}", io::Error::last_os_error());
        assert_eq!(buf[0], b'y');
        assert!(!sb.layer().join(".wh..wh.plnk").exists());
    }

    #[test]
    fn gzip_and_zstd_layers() {
        let tar = build_tar(&[E::File("f", b"hello", 0o644)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        for blob in [tar.clone(), gz, zst] {
            let sb = Sandbox::new();
            unpack_layer(decompressed(&blob[..]).unwrap(), &sb.layer()).unwrap();
            assert_eq!(std::fs::read(sb.layer().join("f")).unwrap(), b"hello");
        }
    }

    fn assert_refused(entries: &[E], sb: &Sandbox) {
        let tar = build_tar(entries);
        let err = unpack_layer(&tar[..], &sb.layer()).unwrap_err();
        assert!(
            matches!(err, UnpackError::Refused { .. }),
            "want Refused, got {err}"
        );
        sb.assert_outside_untouched();
    }

    #[test]
    fn refuses_dotdot_paths() {
        let sb = Sandbox::new();
        assert_refused(&[E::File("../outside/pwned", b"x", 0o644)], &sb);
        assert_refused(&[E::File("a/../../outside/pwned", b"x", 0o644)], &sb);
        assert_refused(&[E::Dir("../outside/d/", 0o755)], &sb);
        assert_refused(&[E::Symlink("../outside/l", "/etc")], &sb);
    }

    #[test]
    fn refuses_writing_through_an_escaping_symlink() {
        let sb = Sandbox::new();
        let outside = sb.outside();
        let abs = outside.to_str().unwrap();
        // Absolute and relative symlinks out of the root, then an entry below them.
        assert_refused(
            &[E::Symlink("evil", abs), E::File("evil/pwned", b"x", 0o644)],
            &sb,
        );
        let sb = Sandbox::new();
        assert_refused(
            &[
                E::Symlink("evil", "../outside"),
                E::File("evil/pwned", b"x", 0o644),
            ],
            &sb,
        );
        let sb = Sandbox::new();
        assert_refused(
            &[E::Symlink("evil", "../outside"), E::Dir("evil/sub/", 0o755)],
            &sb,
        );
        let sb = Sandbox::new();
        assert_refused(
            &[
                E::Symlink("evil", "../outside"),
                E::File("evil/.wh.passwd", b"", 0o644),
            ],
            &sb,
        );
        let sb = Sandbox::new();
        assert_refused(
            &[
                E::Symlink("evil", "../outside"),
                E::File("evil/.wh..wh..opq", b"", 0o644),
            ],
            &sb,
        );
    }

    #[test]
    fn replacing_a_symlink_with_a_file_does_not_write_through_it() {
        let sb = Sandbox::new();
        let target = sb.outside().join("passwd");
        let tar = build_tar(&[
            E::Symlink("passwd", target.to_str().unwrap()),
            E::File("passwd", b"owned", 0o644),
        ]);
        unpack_layer(&tar[..], &sb.layer()).unwrap();
        assert_eq!(std::fs::read(sb.layer().join("passwd")).unwrap(), b"owned");
        sb.assert_outside_untouched();
    }

    #[test]
    fn refuses_hardlinks_out_of_the_layer() {
        let sb = Sandbox::new();
        // `/etc/passwd` means the layer's own etc/passwd, which does not exist.
        assert_refused(&[E::Hardlink("pw", "/etc/passwd")], &sb);
        assert!(!sb.layer().join("pw").exists());
        let sb = Sandbox::new();
        assert_refused(&[E::Hardlink("pw", "../outside/passwd")], &sb);
        let sb = Sandbox::new();
        let abs = sb.outside().join("passwd");
        assert_refused(&[E::Hardlink("pw", abs.to_str().unwrap())], &sb);
        // Through a symlinked parent.
        let sb = Sandbox::new();
        assert_refused(
            &[E::Symlink("o", "../outside"), E::Hardlink("pw", "o/passwd")],
            &sb,
        );
        // A hardlink to a symlink links the symlink itself; writing a file at its name
        // later replaces the link and never writes through it.
        let sb = Sandbox::new();
        let tar = build_tar(&[
            E::Symlink("s", "../outside/passwd"),
            E::Hardlink("h", "s"),
            E::File("h", b"x", 0o644),
        ]);
        unpack_layer(&tar[..], &sb.layer()).unwrap();
        sb.assert_outside_untouched();
    }

    #[test]
    fn file_replaces_dir_and_dir_merges() {
        let sb = Sandbox::new();
        let tar = build_tar(&[
            E::Dir("d/", 0o755),
            E::File("d/x", b"1", 0o644),
            E::Dir("d/", 0o700),
            E::Dir("e/", 0o755),
            E::File("e/y", b"1", 0o644),
            E::File("e", b"now a file", 0o644),
        ]);
        unpack_layer(&tar[..], &sb.layer()).unwrap();
        assert_eq!(std::fs::read(sb.layer().join("d/x")).unwrap(), b"1");
        assert_eq!(
            std::fs::metadata(sb.layer().join("d")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read(sb.layer().join("e")).unwrap(), b"now a file");
        sb.assert_outside_untouched();
    }
}
