//! A container's root filesystem: overlayfs of the image's read-only layers under a per-container
//! writable upper directory.
//!
//! `mount(2)` takes the whole option string in one page, which an image with many layers in a
//! deep store directory can exceed. Like containerd, the fallback gives the layers relative to
//! their common parent, resolved against the working directory of the mounting thread; that
//! thread first unshares its fs attributes (`unshare(CLONE_FS)`) so the `chdir` never touches
//! the rest of the process. Beyond that the mount fails with a clear error.
//!
//! Under every image's layers goes one more, the *mount-point layer*: the directories and
//! files every container has something mounted on. An image without them (scratch and
//! distroless images, the busybox test image) would otherwise have libcontainer create
//! each one in the container's fresh upper directory, through its careful path resolution,
//! which fails first and costs tens of system calls per mount point. Images that have them
//! hide the layer's copies, as any upper layer does.

use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::{io_err, mounts, on_fresh_thread, SandboxError};

/// The mount data for an overlay, and the directory it must be mounted from when the layer
/// paths in it are relative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayOptions {
    pub data: String,
    pub cwd: Option<PathBuf>,
}

/// Builds the overlay mount data: absolute paths when they fit in `limit` bytes, else layers
/// relative to their common parent, else `OverlayOptionsTooLong`. Paths with the characters
/// overlayfs treats as separators (`,` anywhere, `:` outside the lowerdir list) are refused.
pub fn options(
    lowerdir: &str,
    upper: &Path,
    work: &Path,
    target: &Path,
    limit: usize,
) -> Result<OverlayOptions, SandboxError> {
    let invalid = |path: &Path, reason: String| SandboxError::Invalid {
        op: "overlay mount",
        path: path.to_path_buf(),
        reason,
    };
    let layers: Vec<&Path> = lowerdir.split(':').map(Path::new).collect();
    for layer in &layers {
        if !mounts::is_plain_absolute(layer) || layer.as_os_str().is_empty() {
            return Err(invalid(
                target,
                format!(
                    "lowerdir entry {:?} is not a plain absolute path",
                    layer.display()
                ),
            ));
        }
    }
    for (what, path) in [("upperdir", upper), ("workdir", work)] {
        let text = path
            .to_str()
            .ok_or_else(|| invalid(path, format!("{what} is not UTF-8")))?;
        if !path.is_absolute() || text.contains([',', ':', '\\']) {
            return Err(invalid(
                path,
                format!("{what} must be absolute without ',', ':' or '\\'"),
            ));
        }
    }
    if lowerdir.contains([',', '\\']) {
        return Err(invalid(target, "lowerdir contains ',' or '\\'".into()));
    }
    let data = |lower: &str| {
        format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        )
    };
    let absolute = data(lowerdir);
    if absolute.len() <= limit {
        return Ok(OverlayOptions {
            data: absolute,
            cwd: None,
        });
    }
    let parent = common_parent(&layers);
    let relative: Vec<String> = layers
        .iter()
        .map(|layer| {
            layer
                .strip_prefix(&parent)
                .map(|rel| rel.display().to_string())
                .unwrap_or_else(|_| layer.display().to_string())
        })
        .collect();
    let shorter = data(&relative.join(":"));
    if shorter.len() <= limit {
        return Ok(OverlayOptions {
            data: shorter,
            cwd: Some(parent),
        });
    }
    Err(SandboxError::OverlayOptionsTooLong {
        target: target.to_path_buf(),
        len: shorter.len(),
        limit,
    })
}

/// The deepest directory containing every layer, and strictly above each of them (a layer
/// must not become the empty relative path).
fn common_parent(layers: &[&Path]) -> PathBuf {
    let mut common: Vec<Component> = match layers.first().and_then(|l| l.parent()) {
        Some(parent) => parent.components().collect(),
        None => return PathBuf::from("/"),
    };
    for layer in &layers[1..] {
        let parent: Vec<Component> = layer
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        let same = common
            .iter()
            .zip(&parent)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(same);
    }
    let joined: PathBuf = common.iter().collect();
    if joined.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        joined
    }
}

/// Directories of the mount-point layer: what the runtime mounts in every container.
pub const MOUNT_POINT_DIRS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("etc", 0o755),
];
/// Empty files of the mount-point layer: what kubelet binds into every container.
pub const MOUNT_POINT_FILES: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Makes the mount-point layer at `dir` unless it exists. A lower layer must not change
/// while overlays use it, so an existing one is never touched: the layer is built beside it
/// and renamed into place whole.
pub fn ensure_mount_point_layer(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let building = dir.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let build = || -> Result<(), SandboxError> {
        std::fs::create_dir_all(&building).map_err(io_err("create", &building))?;
        std::fs::set_permissions(&building, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &building))?;
        for (sub, mode) in MOUNT_POINT_DIRS {
            let path = building.join(sub);
            std::fs::DirBuilder::new()
                .mode(*mode)
                .create(&path)
                .map_err(io_err("create", &path))?;
            // The umask may have taken bits away.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                .map_err(io_err("chmod", &path))?;
        }
        for sub in MOUNT_POINT_FILES {
            let path = building.join(sub);
            std::fs::write(&path, b"").map_err(io_err("create", &path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(io_err("chmod", &path))?;
        }
        match std::fs::rename(&building, dir) {
            Ok(()) => Ok(()),
            // Another agent on the same directory made it first.
            Err(_) if dir.is_dir() => Ok(()),
            Err(e) => Err(io_err("rename into place", dir)(e)),
        }
    };
    let result = build();
    let _ = std::fs::remove_dir_all(&building);
    result
}

/// The most bytes of mount data the kernel accepts: one page including the final NUL.
fn data_limit() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096).saturating_sub(1)
}

/// Mounts overlayfs at `target` (created) with `lowerdir` (layer paths joined by `:`,
/// topmost first, as `Image::overlay_lowerdir` returns them), `upper` and `work` (created;
/// both must be on the same filesystem).
pub fn mount(lowerdir: &str, upper: &Path, work: &Path, target: &Path) -> Result<(), SandboxError> {
    let opts = options(lowerdir, upper, work, target, data_limit())?;
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    let mount_overlay = || {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.data.as_str()),
        )
        .map_err(io_err("mount overlay onto", target))
    };
    match &opts.cwd {
        None => mount_overlay(),
        Some(cwd) => on_fresh_thread("overlay-mount", || {
            // Without its own fs struct this thread's chdir would move the whole process.
            nix::sched::unshare(CloneFlags::CLONE_FS)
                .map_err(io_err("unshare fs attributes to mount", target))?;
            nix::unistd::chdir(cwd.as_path()).map_err(io_err("chdir", cwd))?;
            mount_overlay()
        })?,
    }
}

/// Unmounts the overlay at `target` (lazily); Ok when nothing is mounted there.
pub fn unmount(target: &Path) -> Result<(), SandboxError> {
    mounts::detach_all(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_point_layer_is_made_once_with_its_modes() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("mount-points");
        ensure_mount_point_layer(&dir).expect("made");
        let mode = |p: &str| {
            std::fs::metadata(dir.join(p))
                .expect("exists")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("proc"), 0o555);
        assert_eq!(mode("sys"), 0o555);
        assert_eq!(mode("dev"), 0o755);
        assert_eq!(mode("etc/hosts"), 0o644);
        assert_eq!(
            std::fs::read(dir.join("etc/resolv.conf")).expect("file"),
            b""
        );
        // An existing layer is left as it is (overlays may be using it).
        std::fs::write(dir.join("etc/hostname"), b"kept").expect("write");
        ensure_mount_point_layer(&dir).expect("again");
        assert_eq!(
            std::fs::read(dir.join("etc/hostname")).expect("file"),
            b"kept"
        );
        let leftovers: Vec<_> = std::fs::read_dir(root.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("mount-points")]);
    }

    fn layers(n: usize) -> String {
        (0..n)
            .rev()
            .map(|i| format!("/var/lib/skiff/images/layers/sha256-{i:064x}/rootfs"))
            .collect::<Vec<_>>()
            .join(":")
    }

    #[test]
    fn short_options_use_absolute_paths() {
        let opts = options(
            "/l/2:/l/1",
            Path::new("/c/upper"),
            Path::new("/c/work"),
            Path::new("/c/rootfs"),
            4095,
        )
        .expect("fits");
        assert_eq!(
            opts.data,
            "lowerdir=/l/2:/l/1,upperdir=/c/upper,workdir=/c/work"
        );
        assert_eq!(opts.cwd, None);
    }

    #[test]
    fn long_options_fall_back_to_paths_relative_to_the_common_parent() {
        let lower = layers(40);
        assert!(lower.len() > 4095);
        let opts = options(
            &lower,
            Path::new("/c/upper"),
            Path::new("/c/work"),
            Path::new("/c/r"),
            4095,
        )
        .expect("fits relative");
        assert_eq!(
            opts.cwd.as_deref(),
            Some(Path::new("/var/lib/skiff/images/layers"))
        );
        assert!(
            opts.data
                .starts_with(&format!("lowerdir=sha256-{:064x}/rootfs:", 39)),
            "{}",
            opts.data
        );
        assert!(opts.data.ends_with(",upperdir=/c/upper,workdir=/c/work"));
        assert!(opts.data.len() <= 4095);
    }

    #[test]
    fn lowerdir_too_long_even_relative_is_a_clear_error() {
        let lower = layers(100);
        let err = options(
            &lower,
            Path::new("/c/upper"),
            Path::new("/c/work"),
            Path::new("/c/r"),
            4095,
        )
        .expect_err("too long");
        assert!(
            matches!(err, SandboxError::OverlayOptionsTooLong { limit: 4095, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/c/r"), "{err}");
    }

    #[test]
    fn refuses_separator_characters_and_relative_paths() {
        let up = Path::new("/c/upper");
        let work = Path::new("/c/work");
        let t = Path::new("/c/r");
        for (lower, upper) in [
            ("/l/a,b", up),
            ("l/1", up),
            ("/l/1::/l/2", up),
            ("", up),
            ("/l/../etc", up),
            ("/l/1", Path::new("/c/up:per")),
            ("/l/1", Path::new("relative")),
        ] {
            let err = options(lower, upper, work, t, 4095).expect_err(lower);
            assert!(
                matches!(err, SandboxError::Invalid { .. }),
                "{lower}: {err}"
            );
        }
    }

    #[test]
    fn common_parent_is_strictly_above_every_layer() {
        let cases: [(&[&str], &str); 4] = [
            (&["/a/b/c", "/a/b/d"], "/a/b"),
            (&["/a/b/c", "/a/bc/d"], "/a"),
            (&["/a/b", "/a/b/c"], "/a"),
            (&["/x", "/y"], "/"),
        ];
        for (paths, want) in cases {
            let paths: Vec<&Path> = paths.iter().map(Path::new).collect();
            assert_eq!(common_parent(&paths), PathBuf::from(want), "{paths:?}");
        }
    }
}
