//! The image store on disk, rooted where the caller says (the agent uses
//! `<data-dir>/agent/image-store`):
//!
//! ```text
//! blobs/sha256/<hex>          manifests, configs, layer blobs; written by rename, verified
//! layers/sha256/<diff-id hex>/ each layer unpacked once, shared by every image using it
//! index.json                  normalised reference -> manifest digest (atomic rewrite)
//! tmp/                        staging for imports and pulls (emptied on open)
//! lock                        flock: one writer at a time, across processes too
//! ```
//!
//! A name always points at a single-platform manifest (an index is resolved to the host's
//! platform before anything is stored). Importers stage and verify everything under `tmp/`
//! first and hand a [`Staged`] set to [`ImageStore::commit`], so a bad input leaves the store
//! as it was. Removing a name garbage-collects the blobs and layers no other name uses.
//!
//! A commit that moves a tag to another image never deletes the old one: a container may
//! still run from its layers. The old image stays *dangling*, named only by its digest
//! (`repo@sha256:...`, which `crictl images` shows with tag `<none>`), until whoever knows
//! which containers run removes it ([`ImageStore::remove_dangling`]; the agent's image GC).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::oci::{ConfigFile, ImageConfig, Manifest};
use super::reference::{Reference, ReferenceError};
use super::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Bad input: a tarball, manifest or blob that is not what it claims.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("layer {layer}: {source}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
    /// A conditional removal found the name pointing at another image than expected.
    #[error(
        "image {reference:?} changed while it was being removed (now {now}, expected {expected})"
    )]
    Changed {
        reference: String,
        expected: String,
        now: String,
    },
    #[error("the store's {what} is corrupt ({path}): {reason}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The outcome of a pull another caller ran for the same image at the same time.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        op,
        path,
        source: clear_io(source),
    }
}

/// A full disk said the way containerd (and so kubelet's events) say it, `no space left on
/// device`, rather than Rust's `No space left on device (os error 28)`; other errors as
/// they are. The error kind is kept.
pub(crate) fn clear_io(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => io::Error::new(e.kind(), "no space left on device"),
        Some(libc::EDQUOT) => io::Error::new(e.kind(), "disk quota exceeded"),
        _ => e,
    }
}

/// An image as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Every normalised reference naming this image, sorted.
    pub references: Vec<String>,
    /// The image ID: the config blob's digest (what `crictl images` shows as IMAGE ID).
    pub id: Digest,
    /// The (single-platform) manifest's digest.
    pub digest: Digest,
    pub config: ImageConfig,
    /// Config plus layer blobs, as stored (compressed sizes).
    pub size: u64,
    /// Unpacked layer directories, lowest (base) layer first.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// The `lowerdir=` value for overlayfs, which lists the topmost layer first.
    pub fn overlay_lowerdir(&self) -> String {
        self.layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// What an import or pull verified and put under `tmp/`, ready to be moved in.
#[derive(Debug, Default)]
pub struct Staged {
    /// Verified blob files (manifest, config, layers).
    pub blobs: Vec<(Digest, PathBuf)>,
    /// Unpacked and diff-id-verified layer directories, by diff id.
    pub layers: Vec<(Digest, PathBuf)>,
    /// Names to point at manifests (which must be among the blobs or already stored).
    pub names: Vec<(Reference, Digest)>,
}

/// What removing a reference did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub references: Vec<String>,
    pub blobs: usize,
    pub layers: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    /// Normalised reference -> manifest digest.
    images: BTreeMap<String, String>,
    /// Names (`repo@sha256:...`) the store gave images whose tag moved on: no one asked for
    /// them, and they go when no container uses the image any more.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    dangling: BTreeSet<String>,
}

pub struct ImageStore {
    root: PathBuf,
    /// Serialises writers in this process; the flock on `lock` covers other processes.
    writer: Mutex<()>,
    /// Registry pulls under way in this process (one download per image and credentials).
    pub(crate) pulls: super::pull::InFlight,
}

/// Held while the store is being changed.
struct WriteGuard<'a> {
    _mutex: std::sync::MutexGuard<'a, ()>,
    _file: fs::File,
}

impl ImageStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, StoreError> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers/sha256", "tmp"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        let store = ImageStore {
            root,
            writer: Mutex::new(()),
            pulls: Default::default(),
        };
        {
            // Leftovers of an interrupted import; only removed while no one else writes.
            let _guard = store.write_guard()?;
            let tmp = store.root.join("tmp");
            for entry in fs::read_dir(&tmp).map_err(io_err("reading", &tmp))? {
                let entry = entry.map_err(io_err("reading", &tmp))?;
                let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn write_guard(&self) -> Result<WriteGuard<'_>, StoreError> {
        let mutex = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", &path)(io::Error::last_os_error()));
        }
        Ok(WriteGuard {
            _mutex: mutex,
            _file: file,
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// A fresh directory under `tmp/` for staging; removed when dropped.
    pub fn staging(&self) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&tmp)
            .map_err(io_err("creating a staging dir in", &tmp))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile, StoreError> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: "index",
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile {
                schema_version: 1,
                ..Default::default()
            }),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    fn write_index(&self, index: &IndexFile) -> Result<(), StoreError> {
        let path = self.index_path();
        let tmp = self.root.join("index.json.tmp");
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Corrupt {
            what: "index",
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let written = write_synced(&tmp, &bytes)
            .and_then(|_| fs::rename(&tmp, &path).map_err(io_err("renaming into", &path)));
        if written.is_err() {
            // A full disk leaves a half-written file: the old index stays the truth.
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io_err("reading blob", &path))
    }

    fn read_manifest(&self, digest: &Digest) -> Result<Manifest, StoreError> {
        let path = self.blob_path(digest);
        serde_json::from_slice(&self.read_blob(digest)?).map_err(|e| StoreError::Corrupt {
            what: "manifest blob",
            path,
            reason: e.to_string(),
        })
    }

    fn read_config(&self, digest: &Digest) -> Result<ConfigFile, StoreError> {
        let path = self.blob_path(digest);
        serde_json::from_slice(&self.read_blob(digest)?).map_err(|e| StoreError::Corrupt {
            what: "config blob",
            path,
            reason: e.to_string(),
        })
    }

    fn parse_stored_digest(&self, s: &str) -> Result<Digest, StoreError> {
        Digest::parse(s).map_err(|e| StoreError::Corrupt {
            what: "index",
            path: self.index_path(),
            reason: e.to_string(),
        })
    }

    /// Builds the [`Image`] of a stored manifest.
    fn image_of(
        &self,
        manifest_digest: &Digest,
        references: Vec<String>,
    ) -> Result<Image, StoreError> {
        let manifest = self.read_manifest(manifest_digest)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            what: "manifest blob",
            path: self.blob_path(manifest_digest),
            reason,
        };
        let config_digest =
            Digest::parse(&manifest.config.digest).map_err(|e| corrupt(e.to_string()))?;
        let config = self.read_config(&config_digest)?;
        let mut layers = Vec::new();
        for d in &config.rootfs.diff_ids {
            let diff_id = Digest::parse(d).map_err(|e| corrupt(e.to_string()))?;
            layers.push(self.layer_path(&diff_id));
        }
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(Image {
            references,
            id: config_digest,
            digest: manifest_digest.clone(),
            config: config.image_config(),
            size,
            layers,
        })
    }

    /// Every image, one entry per manifest, sorted by first reference.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let index = self.read_index()?;
        let mut by_manifest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, digest) in index.images {
            by_manifest.entry(digest).or_default().push(name);
        }
        let mut images = Vec::new();
        for (digest, names) in by_manifest {
            let digest = self.parse_stored_digest(&digest)?;
            images.push(self.image_of(&digest, names)?);
        }
        images.sort_by(|a, b| a.references.cmp(&b.references));
        Ok(images)
    }

    /// Finds an image by reference (normalised first: `busybox` finds
    /// `docker.io/library/busybox:latest`), or by image ID (`sha256:<hex>` or a unique hex
    /// prefix of at least 12 characters), as `crictl` accepts.
    pub fn get(&self, reference: &str) -> Result<Image, StoreError> {
        let index = self.read_index()?;
        let manifest = self.resolve(&index, reference)?;
        let names = index
            .images
            .iter()
            .filter(|(_, d)| **d == manifest)
            .map(|(n, _)| n.clone())
            .collect();
        let digest = self.parse_stored_digest(&manifest)?;
        self.image_of(&digest, names)
    }

    /// The manifest digest a user's reference or image ID names.
    fn resolve(&self, index: &IndexFile, input: &str) -> Result<String, StoreError> {
        let parsed = Reference::parse(input);
        if let Ok(r) = &parsed {
            if let Some(d) = index.images.get(&r.to_string()) {
                return Ok(d.clone());
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found = BTreeSet::new();
            for d in index.images.values() {
                let manifest = self.parse_stored_digest(d)?;
                let config = self.read_manifest(&manifest)?.config.digest;
                if config
                    .strip_prefix("sha256:")
                    .is_some_and(|c| c.starts_with(hex))
                {
                    found.insert(d.clone());
                }
            }
            match found.len() {
                1 => return Ok(found.into_iter().next().unwrap_or_default()),
                0 => {}
                _ => {
                    return Err(StoreError::Invalid {
                        what: format!("image ID {input:?}"),
                        reason: "matches more than one image".to_string(),
                    })
                }
            }
        }
        parsed?;
        Err(StoreError::NotFound(input.to_string()))
    }

    /// Removes a name (or, given an image ID, every name of that image), then deletes the
    /// blobs and layers no remaining name uses.
    pub fn remove(&self, reference: &str) -> Result<Removed, StoreError> {
        self.remove_where(reference, None)
    }

    /// As [`remove`](Self::remove), but only if `reference` still names the image with
    /// manifest `expected` when the write lock is held: a caller that decided from an
    /// earlier look (the image is unused, or old) never removes an image a concurrent pull
    /// or import has since put under that name. Otherwise [`StoreError::Changed`].
    pub fn remove_if(&self, reference: &str, expected: &Digest) -> Result<Removed, StoreError> {
        self.remove_where(reference, Some(expected))
    }

    fn remove_where(
        &self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Removed, StoreError> {
        let _guard = self.write_guard()?;
        let mut index = self.read_index()?;
        let by_name = Reference::parse(reference)
            .ok()
            .map(|r| r.to_string())
            .filter(|r| index.images.contains_key(r));
        let manifest = match &by_name {
            Some(name) => index.images[name].clone(),
            None => self.resolve(&index, reference)?,
        };
        if let Some(expected) = expected {
            if manifest != expected.as_str() {
                return Err(StoreError::Changed {
                    reference: reference.to_string(),
                    expected: expected.to_string(),
                    now: manifest,
                });
            }
        }
        let removed_names: Vec<String> = match by_name {
            Some(name) => vec![name],
            None => index
                .images
                .iter()
                .filter(|(_, d)| **d == manifest)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        for n in &removed_names {
            index.images.remove(n);
            index.dangling.remove(n);
        }
        self.write_index(&index)?;
        let (blobs, layers) = self.collect_garbage(&index)?;
        Ok(Removed {
            references: removed_names,
            blobs,
            layers,
        })
    }

    /// Deletes blobs and layers not reachable from `index` (write lock held).
    fn collect_garbage(&self, index: &IndexFile) -> Result<(usize, usize), StoreError> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for d in index.images.values() {
            let manifest_digest = self.parse_stored_digest(d)?;
            let manifest = self.read_manifest(&manifest_digest)?;
            keep_blobs.insert(manifest_digest.hex().to_string());
            let config_digest = manifest.config.digest.clone();
            keep_blobs.insert(hex_of(&config_digest));
            for l in &manifest.layers {
                keep_blobs.insert(hex_of(&l.digest));
            }
            let config = self.read_config(&self.parse_stored_digest(&config_digest)?)?;
            for id in &config.rootfs.diff_ids {
                keep_layers.insert(hex_of(id));
            }
        }
        let blobs = self.remove_unlisted(&self.root.join("blobs/sha256"), &keep_blobs)?;
        let layers = self.remove_unlisted(&self.root.join("layers/sha256"), &keep_layers)?;
        Ok((blobs, layers))
    }

    fn remove_unlisted(&self, dir: &Path, keep: &BTreeSet<String>) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(io_err("reading", dir))? {
            let entry = entry.map_err(io_err("reading", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                // Out of sight first, so a half-deleted layer never looks complete.
                let doomed = self.root.join("tmp").join(format!("gc-{name}"));
                fs::rename(&path, &doomed).map_err(io_err("moving out", &path))?;
                fs::remove_dir_all(&doomed).map_err(io_err("removing", &doomed))?;
            } else {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Images whose every name is one the store gave them when their tag moved on.
    pub fn dangling(&self) -> Result<Vec<Image>, StoreError> {
        let index = self.read_index()?;
        let mut by_manifest: BTreeMap<&String, Vec<String>> = BTreeMap::new();
        for (name, digest) in &index.images {
            by_manifest.entry(digest).or_default().push(name.clone());
        }
        let mut images = Vec::new();
        for (digest, names) in by_manifest {
            if names.iter().all(|n| index.dangling.contains(n)) {
                images.push(self.image_of(&self.parse_stored_digest(digest)?, names)?);
            }
        }
        Ok(images)
    }

    /// Removes the image with manifest `manifest` if it is still dangling when the write
    /// lock is held (a pull by its digest meanwhile made it wanted again: then nothing).
    pub fn remove_dangling(&self, manifest: &Digest) -> Result<Removed, StoreError> {
        let _guard = self.write_guard()?;
        let mut index = self.read_index()?;
        let names: Vec<String> = index
            .images
            .iter()
            .filter(|(_, d)| *d == manifest.as_str())
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() || !names.iter().all(|n| index.dangling.contains(n)) {
            return Ok(Removed::default());
        }
        for n in &names {
            index.images.remove(n);
            index.dangling.remove(n);
        }
        self.write_index(&index)?;
        let (blobs, layers) = self.collect_garbage(&index)?;
        Ok(Removed {
            references: names,
            blobs,
            layers,
        })
    }

    /// Moves verified, staged content into the store and points the names at it.
    pub fn commit(&self, staged: Staged) -> Result<(), StoreError> {
        let _guard = self.write_guard()?;
        let result = self.commit_locked(staged);
        if result.is_err() {
            // Blobs or layers moved in before the failure (a full disk) belong to no name
            // yet: drop them rather than leave them to the next removal.
            if let Ok(index) = self.read_index() {
                let _ = self.collect_garbage(&index);
            }
        }
        result
    }

    fn commit_locked(&self, staged: Staged) -> Result<(), StoreError> {
        for (digest, path) in &staged.blobs {
            let dest = self.blob_path(digest);
            if !dest.exists() {
                fs::rename(path, &dest).map_err(io_err("moving blob into", &dest))?;
            }
        }
        for (diff_id, path) in &staged.layers {
            let dest = self.layer_path(diff_id);
            if !dest.exists() {
                fs::rename(path, &dest).map_err(io_err("moving layer into", &dest))?;
            }
        }
        for (_, manifest) in &staged.names {
            if !self.has_blob(manifest) {
                return Err(StoreError::Invalid {
                    what: format!("manifest {manifest}"),
                    reason: "was neither staged nor stored".to_string(),
                });
            }
        }
        for (_, manifest) in &staged.names {
            self.restore_missing_layers(manifest)?;
        }
        let mut index = self.read_index()?;
        index.schema_version = 1;
        let mut moved = Vec::new();
        for (name, manifest) in &staged.names {
            let old = index.images.insert(name.to_string(), manifest.to_string());
            // Asked for by this name now, even if the store had named it itself.
            index.dangling.remove(&name.to_string());
            if let Some(old) = old.filter(|o| o != manifest.as_str()) {
                moved.push((name.clone(), old));
            }
        }
        // An image that got a name is no longer dangling.
        let named: BTreeSet<String> = staged.names.iter().map(|(_, m)| m.to_string()).collect();
        let unneeded: Vec<String> = index
            .dangling
            .iter()
            .filter(|n| index.images.get(*n).is_some_and(|m| named.contains(m)))
            .cloned()
            .collect();
        for n in unneeded {
            index.images.remove(&n);
            index.dangling.remove(&n);
        }
        // An image whose tag moved on keeps a name by digest (a container may run from it).
        for (name, old) in moved {
            if index.images.values().any(|m| *m == old) {
                continue;
            }
            let by_digest = Reference::parse(&format!("{}@{old}", name.name()))?.to_string();
            index.images.insert(by_digest.clone(), old);
            index.dangling.insert(by_digest);
        }
        self.write_index(&index)
    }

    /// Unpacks again (from its stored blob) every layer of `manifest` that is missing (write
    /// lock held). Importers skip unpacking layers the store already has, but they look
    /// before taking the lock: a removal in between may have deleted such a layer, and a
    /// name must never point at an image with a hole in it.
    fn restore_missing_layers(&self, manifest_digest: &Digest) -> Result<(), StoreError> {
        let manifest = self.read_manifest(manifest_digest)?;
        let config = self.read_config(&self.parse_stored_digest(&manifest.config.digest)?)?;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let diff_id = self.parse_stored_digest(diff_id)?;
            if self.has_layer(&diff_id) {
                continue;
            }
            let blob = self.blob_path(&self.parse_stored_digest(&layer.digest)?);
            let stage = self.staging()?;
            let dir = stage.path().join("layer");
            fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
            super::import::unpack_verified(&blob, &dir, &diff_id)?;
            let dest = self.layer_path(&diff_id);
            fs::rename(&dir, &dest).map_err(io_err("moving layer into", &dest))?;
        }
        Ok(())
    }

    /// Imports a docker-archive or OCI-layout tarball (optionally gzip/zstd compressed).
    pub fn import_tarball(&self, path: &Path) -> Result<Vec<Image>, StoreError> {
        let names = super::import::import_tarball(self, path)?;
        names.iter().map(|n| self.get(&n.to_string())).collect()
    }
}

fn hex_of(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).to_string()
}

/// Writes a file and flushes it to disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(io_err("creating", path))?;
    f.write_all(bytes).map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("syncing", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::oci::{media_type, Descriptor};

    /// Stages a one-layer image by hand (the importers have their own tests).
    fn stage_image(store: &ImageStore, name: &str, file: &str) -> (Digest, Digest) {
        stage_image_cmd(store, name, file, "sh")
    }

    /// As `stage_image`; images differing only in `cmd` share their one layer.
    fn stage_image_cmd(store: &ImageStore, name: &str, file: &str, cmd: &str) -> (Digest, Digest) {
        let stage = store.staging().unwrap().keep();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path(file).unwrap();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &b"hi"[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let diff_id = Digest::of(&layer);
        let layer_dir = stage.join("layer");
        fs::create_dir(&layer_dir).unwrap();
        crate::images::unpack::unpack_layer(&layer[..], &layer_dir).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": [cmd], "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
        })
        .to_string();
        let desc = |m: &str, b: &[u8]| Descriptor {
            media_type: m.into(),
            digest: Digest::of(b).to_string(),
            size: b.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        let manifest = serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            config: desc(media_type::OCI_CONFIG, config.as_bytes()),
            layers: vec![desc(media_type::OCI_LAYER, &layer)],
        })
        .unwrap();
        let mut staged = Staged::default();
        for (i, b) in [&layer[..], config.as_bytes(), &manifest[..]]
            .iter()
            .enumerate()
        {
            let p = stage.join(format!("b{i}"));
            fs::write(&p, b).unwrap();
            staged.blobs.push((Digest::of(b), p));
        }
        staged.layers.push((diff_id.clone(), layer_dir));
        let manifest_digest = Digest::of(&manifest);
        staged
            .names
            .push((Reference::parse(name).unwrap(), manifest_digest.clone()));
        store.commit(staged).unwrap();
        let _ = fs::remove_dir_all(stage);
        (manifest_digest, diff_id)
    }

    #[test]
    fn commit_get_list_remove_with_shared_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, layer1) = stage_image(&store, "busybox", "a");
        // Same layer content under another name: same manifest, same layer dir.
        let (m1b, _) = stage_image(&store, "example.com/bb:v1", "a");
        assert_eq!(m1, m1b);
        let (m2, layer2) = stage_image(&store, "other:1", "b");
        assert_ne!(layer1, layer2);

        let img = store.get("busybox").unwrap();
        assert_eq!(
            img.references,
            vec!["docker.io/library/busybox:latest", "example.com/bb:v1"]
        );
        assert_eq!(img.digest, m1);
        assert_eq!(img.config.cmd, vec!["sh"]);
        assert_eq!(img.layers, vec![store.layer_path(&layer1)]);
        assert_eq!(
            img.overlay_lowerdir(),
            store.layer_path(&layer1).display().to_string()
        );
        assert!(store.layer_path(&layer1).join("a").is_file());
        assert_eq!(
            store
                .get(&format!("sha256:{}", img.id.hex()))
                .unwrap()
                .digest,
            m1
        );
        assert_eq!(store.get(&img.id.hex()[..12]).unwrap().digest, m1);
        assert_eq!(store.list().unwrap().len(), 2);
        assert!(matches!(store.get("nope"), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.get("Bad/Name"),
            Err(StoreError::Reference(_))
        ));

        // Removing one of two names keeps everything.
        let r = store.remove("docker.io/library/busybox:latest").unwrap();
        assert_eq!((r.blobs, r.layers), (0, 0));
        assert!(store.has_layer(&layer1));
        // Removing the last name deletes its blobs and layer, not the other image's.
        let r = store.remove("example.com/bb:v1").unwrap();
        assert_eq!((r.blobs, r.layers), (3, 1));
        assert!(!store.has_layer(&layer1));
        assert!(!store.has_blob(&m1));
        assert!(store.has_layer(&layer2));
        assert!(store.has_blob(&m2));
        assert!(matches!(
            store.remove("busybox"),
            Err(StoreError::NotFound(_))
        ));
        // By image ID.
        let id = store.get("other:1").unwrap().id;
        let r = store.remove(id.as_str()).unwrap();
        assert_eq!(r.references, vec!["docker.io/library/other:1"]);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            fs::read_dir(dir.path().join("layers/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn removing_an_image_keeps_layers_shared_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, layer) = stage_image_cmd(&store, "one:1", "a", "sh");
        let (m2, layer2) = stage_image_cmd(&store, "two:1", "a", "true");
        assert_ne!(m1, m2);
        assert_eq!(layer, layer2);
        let r = store.remove("one:1").unwrap();
        // Its manifest and config go; the shared layer (blob and directory) stays.
        assert_eq!((r.blobs, r.layers), (2, 0));
        assert!(store.has_layer(&layer));
        assert!(store.layer_path(&layer).join("a").is_file());
        assert_eq!(store.get("two:1").unwrap().digest, m2);
    }

    #[test]
    fn conditional_remove_refuses_a_name_that_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, _) = stage_image(&store, "app:1", "a");
        let (m2, _) = stage_image(&store, "app:1", "b");
        let err = store.remove_if("app:1", &m1).unwrap_err();
        assert!(matches!(err, StoreError::Changed { .. }), "{err}");
        assert_eq!(store.get("app:1").unwrap().digest, m2);
        let r = store.remove_if("app:1", &m2).unwrap();
        assert_eq!(r.references, vec!["docker.io/library/app:1"]);
    }

    #[test]
    fn commit_restores_a_layer_removed_after_the_importer_looked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m, layer) = stage_image(&store, "app:1", "a");
        // An importer saw the layer and skipped it; then a removal deleted it.
        fs::remove_dir_all(store.layer_path(&layer)).unwrap();
        let staged = Staged {
            names: vec![(Reference::parse("app:2").unwrap(), m.clone())],
            ..Default::default()
        };
        store.commit(staged).unwrap();
        assert!(store.layer_path(&layer).join("a").is_file());
        assert_eq!(store.get("app:2").unwrap().digest, m);
    }

    #[test]
    fn retagging_keeps_the_old_image_dangling_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, l1) = stage_image(&store, "app:1", "a");
        let (m2, _) = stage_image(&store, "app:1", "b");
        assert_ne!(m1, m2);
        assert_eq!(store.get("app:1").unwrap().digest, m2);
        // The old image stays, named by its digest only, its layer intact.
        assert!(store.has_blob(&m1));
        assert!(store.layer_path(&l1).join("a").is_file());
        let by_digest = format!("docker.io/library/app@{m1}");
        assert_eq!(
            store.get(&by_digest).unwrap().references,
            vec![by_digest.clone()]
        );
        let dangling = store.dangling().unwrap();
        assert_eq!(dangling.len(), 1);
        assert_eq!(dangling[0].digest, m1);
        assert_eq!(store.list().unwrap().len(), 2);
        // The current image is never dangling: nothing to remove.
        assert_eq!(store.remove_dangling(&m2).unwrap(), Removed::default());
        let r = store.remove_dangling(&m1).unwrap();
        assert_eq!(r.references, vec![by_digest]);
        assert_eq!((r.blobs, r.layers), (3, 1));
        assert!(!store.has_layer(&l1));
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.dangling().unwrap().is_empty());
    }

    #[test]
    fn a_dangling_image_named_again_is_no_longer_dangling() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, _) = stage_image(&store, "app:1", "a");
        stage_image(&store, "app:1", "b");
        assert_eq!(store.dangling().unwrap().len(), 1);
        // The tag moves back: the digest name the store made goes, the image is named.
        stage_image(&store, "app:1", "a");
        assert_eq!(store.get("app:1").unwrap().digest, m1);
        assert_eq!(
            store.get("app:1").unwrap().references,
            vec!["docker.io/library/app:1"]
        );
        let dangling = store.dangling().unwrap();
        assert_eq!(dangling.len(), 1, "now the second image dangles");
        assert_ne!(dangling[0].digest, m1);
        // Pulled by its digest explicitly: wanted, so never removed as dangling.
        let by_digest = dangling[0].references[0].clone();
        let m2 = dangling[0].digest.clone();
        store
            .commit(Staged {
                names: vec![(Reference::parse(&by_digest).unwrap(), m2.clone())],
                ..Default::default()
            })
            .unwrap();
        assert!(store.dangling().unwrap().is_empty());
        assert_eq!(store.remove_dangling(&m2).unwrap(), Removed::default());
    }

    #[test]
    fn a_full_disk_is_said_as_containerd_says_it() {
        let e = clear_io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.to_string(), "no space left on device");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let other = clear_io(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(other.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn reopen_keeps_images_and_clears_tmp() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = ImageStore::open(dir.path()).unwrap();
            stage_image(&store, "app:1", "a");
            let leftover = store.staging().unwrap().keep();
            fs::write(leftover.join("x"), b"x").unwrap();
        }
        let store = ImageStore::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_index_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("index.json"), b"{not json").unwrap();
        let err = store.list().unwrap_err().to_string();
        assert!(err.contains("index") && err.contains("corrupt"), "{err}");
    }
}
