//! The kubelet's atomic writer: how configMap, secret, downwardAPI and projected volumes put
//! their files on disk so a reader inside the container never sees half an update.
//!
//! ```text
//! <volume>/
//!   ..2026_11_27_08_10_22.123456789/   the current data (mode 0755), files with their modes
//!   ..data -> ..2026_11_27_08_10_22.123456789
//!   key -> ..data/key                  one symlink per top-level name of the payload
//! ```
//!
//! An update writes a new timestamped directory, swaps `..data` with a rename (atomic), adds
//! and removes the user-visible symlinks, then deletes the old directory. Nothing is written
//! when the payload equals what is on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path (cleaned, `/`-separated) → file.
pub type Payload = BTreeMap<String, FileProjection>;

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
const MAX_PATH_LENGTH: usize = 4096;
const MAX_FILE_NAME_LENGTH: usize = 255;

/// Upstream `validatePath`: a payload path must be relative, free of `..` elements and not
/// start with `..` (which the writer's own entries do).
pub fn validate_path(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err(format!("invalid path: must not be empty: {target:?}"));
    }
    if target.starts_with('/') {
        return Err(format!("invalid path: must be relative path: {target}"));
    }
    if target.len() > MAX_PATH_LENGTH {
        return Err(format!(
            "invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters"
        ));
    }
    let items: Vec<&str> = target.split('/').collect();
    for item in &items {
        if *item == ".." {
            return Err(format!("invalid path: must not contain '..': {target}"));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(format!(
                "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
            ));
        }
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(format!("invalid path: must not start with '..': {target}"));
    }
    Ok(())
}

/// Go's `path.Clean` for the relative paths of a payload (`a//b/./c` → `a/b/c`).
pub fn clean(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return ".".into();
    }
    parts.join("/")
}

/// The first component of each payload path: the names that get a symlink.
pub fn top_level_names<'a>(paths: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    paths
        .filter_map(|p| p.split('/').next())
        .map(str::to_string)
        .collect()
}

/// Every path a payload makes, files and the directories leading to them.
fn payload_paths(payload: &Payload) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in payload.keys() {
        let mut prefix = String::new();
        for part in p.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            out.insert(prefix.clone());
        }
    }
    out
}

/// Writes `payload` into `dir` (which must exist). Returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    for p in payload.keys() {
        validate_path(p).map_err(io::Error::other)?;
    }
    let old_ts = match std::fs::read_link(dir.join(DATA_DIR)) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(context(e, "reading", &dir.join(DATA_DIR))),
    };
    let old_paths = match &old_ts {
        Some(ts) => walk(&dir.join(ts))?,
        None => BTreeSet::new(),
    };
    let new_paths = payload_paths(payload);
    let to_remove: BTreeSet<&String> = old_paths.difference(&new_paths).collect();
    let changed = match &old_ts {
        None => true,
        Some(ts) => !to_remove.is_empty() || differs(&dir.join(ts), payload)?,
    };
    if changed {
        let ts = new_ts_dir(dir)?;
        for (rel, file) in payload {
            write_file(&ts.join(rel), file)?;
        }
        let name = ts
            .file_name()
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("timestamped directory without a name"))?;
        let tmp = dir.join(DATA_DIR_TMP);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).map_err(|e| context(e, "creating", &tmp))?;
        std::fs::rename(&tmp, dir.join(DATA_DIR)).map_err(|e| context(e, "renaming", &tmp))?;
    }
    let visible = top_level_names(payload.keys());
    for name in &visible {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)
                .map_err(|e| context(e, "creating", &link))?;
        }
    }
    let stale = top_level_names(to_remove.into_iter());
    for name in stale.difference(&visible) {
        let link = dir.join(name);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "removing", &link)),
        }
    }
    if changed {
        if let Some(old) = old_ts.filter(|t| is_ts_name(t)) {
            let old = dir.join(old);
            std::fs::remove_dir_all(&old).map_err(|e| context(e, "removing", &old))?;
        }
    }
    Ok(changed)
}

/// Whether the volume already shows data (`..data` exists): a volume set up once.
pub fn is_written(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(DATA_DIR)).is_ok()
}

/// A name the writer made itself (`..<timestamp>`): the only thing it ever deletes whole.
fn is_ts_name(p: &Path) -> bool {
    let mut c = p.components();
    matches!((c.next(), c.next()), (Some(Component::Normal(n)), None)
        if n.to_str().is_some_and(|s| s.starts_with("..") && s != DATA_DIR && s != DATA_DIR_TMP))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn new_ts_dir(dir: &Path) -> io::Result<PathBuf> {
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.")
        .to_string();
    for n in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = dir.join(format!("{stamp}{}", nanos.wrapping_add(n)));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| context(e, "chmod", &path))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(context(e, "creating", &path)),
        }
    }
    Err(io::Error::other(format!(
        "no free timestamped directory name in {}",
        dir.display()
    )))
}

fn write_file(path: &Path, file: &FileProjection) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| context(e, "creating", parent))?;
    }
    std::fs::write(path, &file.data).map_err(|e| context(e, "writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode & 0o7777))
        .map_err(|e| context(e, "chmod", path))
}

/// Whether any file of the payload differs from what `ts` holds.
fn differs(ts: &Path, payload: &Payload) -> io::Result<bool> {
    for (rel, file) in payload {
        let path = ts.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(context(e, "stat", &path)),
        };
        // Bytes only, as upstream: modes cannot change (a pod's volumes are immutable) and
        // fsGroup widens them on disk.
        if !meta.is_file() {
            return Ok(true);
        }
        if std::fs::read(&path).map_err(|e| context(e, "reading", &path))? != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Relative paths of everything under `root` (not following symlinks).
fn walk(root: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(context(e, "listing", &dir)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| context(e, "listing", &dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), rel.clone()));
            }
            out.insert(rel);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn paths_are_validated_as_upstream() {
        let cases = [
            ("a", Ok(())),
            ("a/b", Ok(())),
            (
                "..a/b",
                Err("invalid path: must not start with '..': ..a/b"),
            ),
            ("a/../b", Err("invalid path: must not contain '..': a/../b")),
            ("/a", Err("invalid path: must be relative path: /a")),
            ("", Err("invalid path: must not be empty: \"\"")),
            ("a/..b", Ok(())),
        ];
        for (path, want) in cases {
            assert_eq!(validate_path(path), want.map_err(String::from), "{path}");
        }
        assert_eq!(clean("a//b/./c"), "a/b/c");
    }

    #[test]
    fn writes_updates_and_removes_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut payload = Payload::new();
        payload.insert("key".into(), file("one", 0o644));
        payload.insert("sub/file".into(), file("two", 0o400));
        assert!(write(dir, &payload).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("key")).unwrap(), "one");
        assert_eq!(
            std::fs::read_link(dir.join("key")).unwrap(),
            Path::new("..data/key")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/file")).unwrap(),
            "two"
        );
        let ts = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(ts.to_str().unwrap().starts_with("..20"), "{ts:?}");
        let mode = std::fs::metadata(dir.join("sub/file"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        assert_eq!(
            std::fs::metadata(dir.join(&ts))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        // Same payload: nothing written.
        assert!(!write(dir, &payload).unwrap());
        assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), ts);

        // An update: new data dir, old one gone, stale name removed.
        payload.remove("sub/file");
        payload.insert("key".into(), file("three", 0o644));
        assert!(write(dir, &payload).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("key")).unwrap(), "three");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        assert!(!dir.join(&ts).exists());
        let names: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with("..20"))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["..data".to_string(), "key".to_string()])
        );
    }
}
