//! `fsGroup` ownership of the volumes the kubelet manages (emptyDir, configMap, secret,
//! downwardAPI, projected), as upstream's `SetVolumeOwnership`: every entry's group becomes
//! the fsGroup; files gain group read (and write, unless the volume is read-only),
//! directories also group search and the setgid bit so new files inherit the group.
//! Symlinks are re-owned but never followed.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;

/// The mode an entry gets: upstream's `changeFilePermission`.
pub fn mode_for(mode: u32, is_dir: bool, read_only: bool) -> u32 {
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if is_dir {
        mask |= libc::S_ISGID | EXEC_MASK;
    }
    mode | mask
}

/// Applies the fsGroup to `root` and everything under it (not following symlinks).
pub fn apply(root: &Path, gid: u32, read_only: bool) -> Result<(), String> {
    walk(root, gid, read_only)
        .map_err(|e| format!("applying fsGroup {gid} to {}: {e}", root.display()))
}

fn walk(path: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let want = mode_for(mode, meta.is_dir(), read_only);
    if want != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), gid, read_only)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_upstream() {
        assert_eq!(mode_for(0o777, true, false), 0o2777);
        assert_eq!(mode_for(0o400, false, true), 0o440);
        assert_eq!(mode_for(0o600, false, false), 0o660);
        assert_eq!(mode_for(0o755, true, true), 0o2755);
    }
}
