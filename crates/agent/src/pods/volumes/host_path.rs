//! hostPath volumes: the `type` check (and the creation `DirectoryOrCreate`/`FileOrCreate`
//! ask for) with upstream's `checkTypeInternal` messages. The container binds the host path
//! itself; nothing is mounted on the host.

use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (and creates, for the `OrCreate` types) `path` as `type_` says. An empty or
/// absent type checks nothing, as upstream.
pub fn check_type(path: &Path, type_: Option<&str>) -> Result<(), String> {
    let shown = path.display();
    let meta = || std::fs::metadata(path).ok();
    let exists = || meta().is_some();
    let is = |f: fn(&std::fs::Metadata) -> bool| meta().is_some_and(|m| f(&m));
    match type_.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" if !exists() => make_dir(path).map_err(|e| e.to_string()),
        "DirectoryOrCreate" | "Directory" => is(|m| m.is_dir())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a directory")),
        "FileOrCreate" if !exists() => make_file(path).map_err(|e| e.to_string()),
        "FileOrCreate" | "File" => is(|m| m.is_file())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a file")),
        "Socket" => is(|m| m.file_type().is_socket())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a socket file")),
        "CharDevice" => is(|m| m.file_type().is_char_device())
            .then_some(())
            .ok_or_else(|| {
                format!("hostPath type check failed: {shown} is not a character device")
            }),
        "BlockDevice" => is(|m| m.file_type().is_block_device())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a block device")),
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// Upstream `MakeDir`: `os.MkdirAll(path, 0755)`.
fn make_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| go_path_error("mkdir", path, e))
}

/// Upstream `MakeFile`: `os.OpenFile(path, O_CREATE, 0644)` (the parent must exist).
fn make_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map(drop)
        .map_err(|e| go_path_error("open", path, e))
}

/// Go's `*PathError` text: `open /x/y: no such file or directory`.
fn go_path_error(op: &str, path: &Path, e: io::Error) -> io::Error {
    let text = match e.raw_os_error() {
        Some(code) => {
            // SAFETY: strerror returns a pointer to a static NUL-terminated string.
            let s = unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) };
            s.to_string_lossy().to_lowercase()
        }
        None => e.to_string(),
    };
    io::Error::new(e.kind(), format!("{op} {}: {text}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_with_upstreams_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let file = tmp.path().join("f");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, "x").unwrap();
        let sock_path = tmp.path().join("s");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();

        assert_eq!(check_type(&dir, Some("Directory")), Ok(()));
        assert_eq!(check_type(&file, None), Ok(()));
        assert_eq!(
            check_type(&file, Some("Directory")),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            ))
        );
        assert_eq!(
            check_type(&dir, Some("File")),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            ))
        );
        assert_eq!(check_type(&sock_path, Some("Socket")), Ok(()));
        assert_eq!(
            check_type(&file, Some("Socket")),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            ))
        );
        assert_eq!(
            check_type(Path::new("/dev/null"), Some("CharDevice")),
            Ok(())
        );
        assert_eq!(
            check_type(&file, Some("CharDevice")),
            Err(format!(
                "hostPath type check failed: {} is not a character device",
                file.display()
            ))
        );
        assert_eq!(
            check_type(&file, Some("BlockDevice")),
            Err(format!(
                "hostPath type check failed: {} is not a block device",
                file.display()
            ))
        );
        assert_eq!(
            check_type(&file, Some("Weird")),
            Err("Weird is an invalid volume type".into())
        );
        let missing = tmp.path().join("missing");
        assert!(check_type(&missing, Some("Directory")).is_err());

        let made = tmp.path().join("a/b");
        assert_eq!(check_type(&made, Some("DirectoryOrCreate")), Ok(()));
        assert!(made.is_dir());
        let made_file = tmp.path().join("a/new");
        assert_eq!(check_type(&made_file, Some("FileOrCreate")), Ok(()));
        assert!(made_file.is_file());
        let orphan = tmp.path().join("nope/new");
        assert_eq!(
            check_type(&orphan, Some("FileOrCreate")),
            Err(format!(
                "open {}: no such file or directory",
                orphan.display()
            ))
        );
        assert!(check_type(&file, Some("DirectoryOrCreate")).is_err());
    }
}
