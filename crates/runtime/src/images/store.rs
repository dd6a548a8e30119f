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
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
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
}

pub struct ImageStore {
    root: PathBuf,
    /// Serialises writers in this process; the flock on `lock` covers other processes.
    writer: Mutex<()>,
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
                images: BTreeMap::new(),
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
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path).map_err(io_err("renaming into", &path))
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

    /// Moves verified, staged content into the store and points the names at it.
    pub fn commit(&self, staged: Staged) -> Result<(), StoreError> {
        let _guard = self.write_guard()?;
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
        let mut replaced = false;
        for (name, manifest) in staged.names {
            let old = index.images.insert(name.to_string(), manifest.to_string());
            replaced |= old.is_some_and(|o| o != manifest.as_str());
        }
        self.write_index(&index)?;
        if replaced {
            // A retagged name may have left its old image unreferenced.
            self.collect_garbage(&index)?;
        }
        Ok(())
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
    fn retagging_collects_the_old_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (m1, l1) = stage_image(&store, "app:1", "a");
        let (m2, _) = stage_image(&store, "app:1", "b");
        assert_ne!(m1, m2);
        assert_eq!(store.get("app:1").unwrap().digest, m2);
        assert!(!store.has_blob(&m1));
        assert!(!store.has_layer(&l1));
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
