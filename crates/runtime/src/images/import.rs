//! Importing image tarballs (air-gapped use): docker-archive (`manifest.json` with
//! Config/RepoTags/Layers, as `docker save` writes) and OCI image layouts (`oci-layout`,
//! `index.json`, `blobs/sha256/...`), either optionally gzip- or zstd-compressed as a whole.
//!
//! Every member is first staged under the store's `tmp/` with its digest computed; the
//! images are then worked out from the metadata ([`plan_docker_archive`],
//! [`plan_oci_layout`], no I/O), every blob is checked against its digest, missing layers
//! are unpacked and checked against their diff ids, and only then is anything moved into
//! the store. A corrupt or hostile tarball is an error and leaves the store unchanged.
//!
//! Names: docker-archive `RepoTags`; in an OCI layout `io.containerd.image.name` (a full
//! name), else `org.opencontainers.image.ref.name` when it is a full reference (a bare tag
//! such as `latest` names no repository and is not used). An image without a name is
//! refused. Multi-platform indexes resolve to the host platform; an image for another
//! platform is refused.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::{Digest, HashingReader};
use super::oci::{self, media_type, ConfigFile, Descriptor, Index, Manifest, Platform};
use super::reference::Reference;
use super::store::{io_err, ImageStore, Staged, StoreError};
use super::unpack::{self, Compression};

/// One member of the tarball, staged on disk.
#[derive(Debug, Clone)]
pub struct Member {
    pub file: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// The tarball's members by cleaned path; symlinked/hardlinked members resolved.
#[derive(Debug, Default)]
pub struct Members {
    files: BTreeMap<String, Member>,
    links: BTreeMap<String, String>,
}

impl Members {
    pub fn get(&self, key: &str) -> Option<&Member> {
        let mut key = key.trim_start_matches("./").to_string();
        for _ in 0..16 {
            if let Some(m) = self.files.get(&key) {
                return Some(m);
            }
            key = self.links.get(&key)?.clone();
        }
        None
    }

    /// Adds a staged file under a member path (registry pulls stage blobs this way).
    pub(crate) fn insert(&mut self, key: String, member: Member) {
        self.files.insert(key, member);
    }

    fn read_small(&self, key: &str, what: &str) -> Result<Vec<u8>, StoreError> {
        let m = self
            .get(key)
            .ok_or_else(|| invalid(what, format!("{key} is missing")))?;
        if m.size > 16 << 20 {
            return Err(invalid(
                what,
                format!("{key} is too large ({} bytes)", m.size),
            ));
        }
        fs::read(&m.file).map_err(io_err("reading staged", &m.file))
    }
}

fn invalid(what: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// One image found in a tarball, ready to verify and stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedImage {
    pub names: Vec<Reference>,
    /// The manifest bytes to store (synthesised for docker archives).
    pub manifest: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// `docker save`'s manifest.json entries.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports a tarball; returns the names it stored.
pub fn import_tarball(store: &ImageStore, path: &Path) -> Result<Vec<Reference>, StoreError> {
    let what = path.display().to_string();
    let stage = store.staging()?;
    let file = File::open(path).map_err(io_err("opening", path))?;
    let stream = unpack::decompressed(io::BufReader::new(file))
        .map_err(|e| invalid(&what, e.to_string()))?;
    let members = stage_members(stream, stage.path(), &what)?;
    let host = oci::host_platform();
    let images = if members.get("index.json").is_some() {
        plan_oci_layout(&members, &host, &what)?
    } else if members.get("manifest.json").is_some() {
        plan_docker_archive(&members, &what)?
    } else {
        return Err(invalid(
            &what,
            "neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
        ));
    };
    let staged = verify_and_stage(store, &members, &images, stage.path(), &host, &what)?;
    let names = staged.names.iter().map(|(n, _)| n.clone()).collect();
    store.commit(staged)?;
    Ok(names)
}

/// Writes every regular member to `dir` (numbered files: member paths are never used as
/// file system paths) and records its digest.
pub fn stage_members(stream: impl Read, dir: &Path, what: &str) -> Result<Members, StoreError> {
    let mut members = Members::default();
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| invalid(what, format!("not a tar archive: {e}")))?;
    for (i, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| invalid(what, format!("reading the archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let key = member_key(&raw, &[]).ok_or_else(|| {
            invalid(
                what,
                format!("member {:?} has a '..' path", String::from_utf8_lossy(&raw)),
            )
        })?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = dir.join(format!("m{i}"));
                let mut out = File::create(&file).map_err(io_err("creating", &file))?;
                let mut hashing = HashingReader::new(&mut entry);
                io::copy(&mut hashing, &mut out).map_err(|e| {
                    let e = super::store::clear_io(e);
                    invalid(what, format!("reading member {key}: {e}"))
                })?;
                let (digest, size) = hashing
                    .finish()
                    .map_err(|e| invalid(what, format!("reading member {key}: {e}")))?;
                members.files.insert(key, Member { file, digest, size });
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                // Symlinks are relative to the member's directory, hardlinks to the root.
                let base: Vec<&str> = if entry.header().entry_type() == tar::EntryType::Symlink
                    && !target.starts_with(b"/")
                {
                    let mut b: Vec<&str> = key.split('/').collect();
                    b.pop();
                    b
                } else {
                    Vec::new()
                };
                let resolved = member_key(&target, &base).ok_or_else(|| {
                    invalid(what, format!("member {key} links outside the archive"))
                })?;
                members.links.insert(key, resolved);
            }
            _ => {}
        }
    }
    Ok(members)
}

/// A member path relative to `base`, cleaned; `None` if it climbs above the archive root.
fn member_key(raw: &[u8], base: &[&str]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c.to_string()),
        }
    }
    Some(parts.join("/"))
}

/// A name as a full reference; `None` for a bare tag (`latest`).
fn full_name(s: &str) -> Option<&str> {
    (s.contains('/') || s.contains(':') || s.contains('@')).then_some(s)
}

/// Works out the images of a docker archive (no blob is read beyond manifest.json).
pub fn plan_docker_archive(members: &Members, what: &str) -> Result<Vec<PlannedImage>, StoreError> {
    let raw = members.read_small("manifest.json", what)?;
    let entries: Vec<DockerArchiveEntry> =
        serde_json::from_slice(&raw).map_err(|e| invalid(what, format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(invalid(what, "manifest.json lists no image"));
    }
    let mut out = Vec::new();
    for entry in entries {
        let names = entry.repo_tags.unwrap_or_default();
        if names.is_empty() {
            return Err(invalid(
                what,
                format!(
                    "image {} has no name (RepoTags is empty): save it by name",
                    entry.config
                ),
            ));
        }
        let names = names
            .iter()
            .map(|n| Reference::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let member = |key: &str| {
            members
                .get(key)
                .ok_or_else(|| invalid(what, format!("{key}, listed in manifest.json, is missing")))
        };
        let config_member = member(&entry.config)?;
        let config = Descriptor {
            media_type: media_type::OCI_CONFIG.to_string(),
            digest: config_member.digest.to_string(),
            size: config_member.size,
            annotations: Default::default(),
            platform: None,
        };
        let mut layers = Vec::new();
        for key in &entry.layers {
            let m = member(key)?;
            let compression =
                sniff(&m.file).map_err(|e| invalid(what, format!("layer {key}: {e}")))?;
            let media = match compression {
                Compression::None => media_type::OCI_LAYER,
                Compression::Gzip => media_type::OCI_LAYER_GZIP,
                Compression::Zstd => media_type::OCI_LAYER_ZSTD,
            };
            layers.push(Descriptor {
                media_type: media.to_string(),
                digest: m.digest.to_string(),
                size: m.size,
                annotations: Default::default(),
                platform: None,
            });
        }
        let manifest = serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_string()),
            config: config.clone(),
            layers: layers.clone(),
        })
        .map_err(|e| invalid(what, e.to_string()))?;
        out.push(PlannedImage {
            names,
            manifest,
            config,
            layers,
        });
    }
    Ok(out)
}

fn sniff(path: &Path) -> Result<Compression, String> {
    let mut head = [0u8; 6];
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..]).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        n += k;
    }
    unpack::detect_compression(&head[..n]).map_err(|e| e.to_string())
}

/// Reads a blob member named by a descriptor, checking digest and size.
fn blob_member<'a>(
    members: &'a Members,
    d: &Descriptor,
    what: &str,
) -> Result<&'a Member, StoreError> {
    let digest = Digest::parse(&d.digest).map_err(|e| invalid(what, e.to_string()))?;
    let key = format!("blobs/sha256/{}", digest.hex());
    let m = members
        .get(&key)
        .ok_or_else(|| invalid(what, format!("blob {} is missing", d.digest)))?;
    check_member(m, d, &key, what)?;
    Ok(m)
}

fn check_member(m: &Member, d: &Descriptor, key: &str, what: &str) -> Result<(), StoreError> {
    if m.digest.as_str() != d.digest {
        return Err(invalid(
            what,
            format!(
                "{key}: digest mismatch: want {}, content is {}",
                d.digest, m.digest
            ),
        ));
    }
    if m.size != d.size {
        return Err(invalid(
            what,
            format!("{key}: size mismatch: want {}, got {}", d.size, m.size),
        ));
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(
    m: &Member,
    what: &str,
    label: &str,
) -> Result<(Vec<u8>, T), StoreError> {
    if m.size > 16 << 20 {
        return Err(invalid(what, format!("{label} is too large")));
    }
    let bytes = fs::read(&m.file).map_err(io_err("reading staged", &m.file))?;
    let value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(what, format!("{label}: {e}")))?;
    Ok((bytes, value))
}

/// Works out the images of an OCI layout, resolving indexes to `host`.
pub fn plan_oci_layout(
    members: &Members,
    host: &Platform,
    what: &str,
) -> Result<Vec<PlannedImage>, StoreError> {
    if let Some(m) = members.get("oci-layout") {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let (_, layout): (_, Layout) = read_json(m, what, "oci-layout")?;
        if layout.version != "1.0.0" {
            return Err(invalid(
                what,
                format!("unsupported OCI layout version {:?}", layout.version),
            ));
        }
    }
    let index_member = members
        .get("index.json")
        .ok_or_else(|| invalid(what, "index.json is missing"))?;
    let (_, index): (_, Index) = read_json(index_member, what, "index.json")?;
    let mut out: Vec<PlannedImage> = Vec::new();
    for top in &index.manifests {
        let name = top
            .annotations
            .get(oci::ANNOTATION_CONTAINERD_NAME)
            .map(String::as_str)
            .or_else(|| {
                top.annotations
                    .get(oci::ANNOTATION_REF_NAME)
                    .and_then(|n| full_name(n))
            });
        let Some(name) = name else {
            return Err(invalid(
                what,
                format!(
                    "image {} has no name (want annotation {} or a full {})",
                    top.digest,
                    oci::ANNOTATION_CONTAINERD_NAME,
                    oci::ANNOTATION_REF_NAME
                ),
            ));
        };
        let name = Reference::parse(name)?;
        let mut desc = top.clone();
        // An index (possibly nested) resolves to the host's manifest.
        for _ in 0..4 {
            if !media_type::is_index(&desc.media_type) {
                break;
            }
            let m = blob_member(members, &desc, what)?;
            let (_, nested): (_, Index) = read_json(m, what, &format!("index {}", desc.digest))?;
            desc = oci::select_manifest(&nested, host)
                .ok_or_else(|| {
                    invalid(
                        what,
                        format!(
                            "{name}: no image for {}/{} (the index offers {})",
                            host.os,
                            host.architecture,
                            oci::platforms_of(&nested).join(", ")
                        ),
                    )
                })?
                .clone();
        }
        if !media_type::is_manifest(&desc.media_type) {
            return Err(invalid(
                what,
                format!("{name}: unsupported media type {:?}", desc.media_type),
            ));
        }
        let m = blob_member(members, &desc, what)?;
        let (bytes, manifest): (_, Manifest) =
            read_json(m, what, &format!("manifest {}", desc.digest))?;
        if let Some(p) = out.iter_mut().find(|p| p.manifest == bytes) {
            p.names.push(name);
        } else {
            out.push(PlannedImage {
                names: vec![name],
                manifest: bytes,
                config: manifest.config,
                layers: manifest.layers,
            });
        }
    }
    if out.is_empty() {
        return Err(invalid(what, "index.json lists no image"));
    }
    Ok(out)
}

/// Checks every blob, unpacks layers the store lacks, and lists what to move in.
pub(crate) fn verify_and_stage(
    store: &ImageStore,
    members: &Members,
    images: &[PlannedImage],
    stage: &Path,
    host: &Platform,
    what: &str,
) -> Result<Staged, StoreError> {
    let mut staged = Staged::default();
    let mut unpacked: BTreeMap<Digest, PathBuf> = BTreeMap::new();
    for (i, image) in images.iter().enumerate() {
        let label = image.names[0].to_string();
        // Docker archives name members freely; OCI layouts by digest.
        let member_of = |d: &Descriptor| -> Result<Member, StoreError> {
            let digest =
                Digest::parse(&d.digest).map_err(|e| invalid(what, format!("{label}: {e}")))?;
            members
                .get(&format!("blobs/sha256/{}", digest.hex()))
                .or_else(|| members.files.values().find(|m| m.digest == digest))
                .cloned()
                .ok_or_else(|| invalid(what, format!("{label}: blob {digest} is missing")))
                .and_then(|m| check_member(&m, d, &d.digest, what).map(|_| m))
        };
        let config_member = member_of(&image.config)?;
        let (_, config): (_, ConfigFile) =
            read_json(&config_member, what, &format!("{label}: config"))?;
        if (!config.os.is_empty() && config.os != host.os)
            || (!config.architecture.is_empty() && config.architecture != host.architecture)
        {
            return Err(invalid(
                what,
                format!(
                    "{label} is an image for {}/{}, this host is {}/{}",
                    config.os, config.architecture, host.os, host.architecture
                ),
            ));
        }
        if config.rootfs.diff_ids.len() != image.layers.len() {
            return Err(invalid(
                what,
                format!(
                    "{label}: the config lists {} diff ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    image.layers.len()
                ),
            ));
        }
        let manifest_file = stage.join(format!("manifest-{i}"));
        super::store::write_synced(&manifest_file, &image.manifest)?;
        let manifest_digest = Digest::of(&image.manifest);
        staged.blobs.push((manifest_digest.clone(), manifest_file));
        staged
            .blobs
            .push((config_member.digest.clone(), config_member.file.clone()));
        for (layer, diff_id) in image.layers.iter().zip(&config.rootfs.diff_ids) {
            let diff_id = Digest::parse(diff_id)
                .map_err(|e| invalid(what, format!("{label}: diff id: {e}")))?;
            let m = member_of(layer)?;
            if !store.has_layer(&diff_id) && !unpacked.contains_key(&diff_id) {
                let dir = stage.join(format!("layer-{}", diff_id.hex()));
                fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
                unpack_verified(&m.file, &dir, &diff_id).map_err(|e| match e {
                    StoreError::Unpack { layer, source } => StoreError::Unpack {
                        layer: format!("{layer} of {label} in {what}"),
                        source,
                    },
                    other => other,
                })?;
                unpacked.insert(diff_id.clone(), dir.clone());
                staged.layers.push((diff_id, dir));
            }
            if !staged.blobs.iter().any(|(d, _)| *d == m.digest) {
                staged.blobs.push((m.digest.clone(), m.file.clone()));
            }
        }
        for name in &image.names {
            staged.names.push((name.clone(), manifest_digest.clone()));
        }
    }
    staged.blobs.dedup_by(|a, b| a.0 == b.0);
    Ok(staged)
}

/// Unpacks a layer blob into `dir` and checks the uncompressed stream against `diff_id`.
pub fn unpack_verified(blob: &Path, dir: &Path, diff_id: &Digest) -> Result<(), StoreError> {
    let unpack_err = |source| StoreError::Unpack {
        layer: diff_id.to_string(),
        source,
    };
    let file = File::open(blob).map_err(io_err("opening", blob))?;
    let stream = unpack::decompressed(io::BufReader::new(file)).map_err(unpack_err)?;
    let mut hashing = HashingReader::new(stream);
    unpack::unpack_layer(&mut hashing, dir).map_err(unpack_err)?;
    let (got, _) = hashing
        .finish()
        .map_err(|e| unpack_err(unpack::UnpackError::Read(e)))?;
    if &got != diff_id {
        return Err(StoreError::Invalid {
            what: format!("layer {diff_id}"),
            reason: format!("uncompressed content has digest {got} (diff id mismatch)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use testkit::images::{layer_tar, sha256_digest, Entry, TestImage};

    const NAME: &str = "docker.io/library/busybox:test";

    fn new_store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Nothing in blobs/, layers/, tmp/ and no index: the store is as new.
    fn assert_store_empty(store: &ImageStore) {
        for d in ["blobs/sha256", "layers/sha256", "tmp"] {
            let n = fs::read_dir(store.root().join(d)).unwrap().count();
            assert_eq!(n, 0, "{d} is not empty");
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn imports_oci_layout_busybox() {
        let (dir, store) = new_store();
        let img = TestImage::busybox().unwrap();
        let tar = write(&dir, "bb.tar", &img.oci_layout_tar(NAME).unwrap());
        let imported = store.import_tarball(&tar).unwrap();
        assert_eq!(imported.len(), 1);
        let got = store.get("busybox:test").unwrap();
        assert_eq!(got.references, vec![NAME]);
        assert_eq!(got.digest.as_str(), img.manifest_digest());
        assert_eq!(got.id.as_str(), img.config_digest());
        assert_eq!(got.config.cmd, vec!["sh"]);
        assert_eq!(got.size, (img.config.len() + img.layer_gz.len()) as u64);
        assert_eq!(got.layers.len(), 1);
        let root = &got.layers[0];
        assert!(root.join("bin/busybox").is_file());
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let tmp_mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn imports_docker_archive_sharing_the_layer() {
        let (dir, store) = new_store();
        let img = TestImage::busybox().unwrap();
        let oci = write(&dir, "oci.tar", &img.oci_layout_tar(NAME).unwrap());
        let docker = write(
            &dir,
            "docker.tar",
            &img.docker_archive_tar("busybox:docker").unwrap(),
        );
        store.import_tarball(&oci).unwrap();
        store.import_tarball(&docker).unwrap();
        let d = store.get("docker.io/library/busybox:docker").unwrap();
        let o = store.get(NAME).unwrap();
        assert_eq!(d.id, o.id, "same config, same image ID");
        assert_eq!(d.layers, o.layers, "one unpacked layer shared");
        assert_eq!(d.config.cmd, vec!["sh"]);
        assert_eq!(
            fs::read_dir(store.root().join("layers/sha256"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(store.list().unwrap().len(), 2);
        // Removing one keeps the shared layer; removing both empties the store.
        store.remove(NAME).unwrap();
        assert!(d.layers[0].join("bin/busybox").is_file());
        store.remove("busybox:docker").unwrap();
        assert_store_empty(&store);
    }

    #[test]
    fn imports_whole_tarball_compressed() {
        let img = TestImage::busybox().unwrap();
        let tar = img.docker_archive_tar("busybox:c").unwrap();
        let gz = testkit::images::gzip(&tar).unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        for (name, bytes) in [("gz", gz), ("zst", zst)] {
            let (dir, store) = new_store();
            let p = write(&dir, name, &bytes);
            store.import_tarball(&p).unwrap();
            assert_eq!(
                store.get("busybox:c").unwrap().id.as_str(),
                img.config_digest()
            );
        }
    }

    #[test]
    fn corrupt_tarballs_leave_the_store_unchanged() {
        let img = TestImage::busybox().unwrap();
        let good = img.oci_layout_tar(NAME).unwrap();
        // A flipped byte inside the layer blob.
        let mut flipped = good.clone();
        let at = good
            .windows(img.layer_gz.len().min(64))
            .position(|w| w == &img.layer_gz[..w.len()])
            .unwrap()
            + 40;
        flipped[at] ^= 0xff;
        let truncated = good[..good.len() / 2].to_vec();
        let mut bad_diff_id = img.clone();
        bad_diff_id.layer_tar.push(0);
        let docker_bad_layer = bad_diff_id.docker_archive_tar("x:1").unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("flipped", flipped, "digest mismatch"),
            ("truncated", truncated, ""),
            ("garbage", b"this is not a tarball at all".repeat(40), ""),
            ("docker-diff-id", docker_bad_layer, "diff id"),
        ];
        for (label, bytes, want) in cases {
            let (dir, store) = new_store();
            let p = write(&dir, label, &bytes);
            let err = store.import_tarball(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{label}: {err}");
            assert_store_empty(&store);
        }
    }

    /// A layer tar whose one entry has a raw (unvalidated) name.
    fn raw_layer(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(if kind == tar::EntryType::Regular {
            1
        } else {
            0
        });
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"x"
        } else {
            b""
        };
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_layers_are_refused_and_write_nothing() {
        let hostile = [
            raw_layer("../../../escaped", tar::EntryType::Regular, ""),
            raw_layer("etc/passwd", tar::EntryType::Link, "../../../../etc/passwd"),
            raw_layer("pw", tar::EntryType::Link, "/etc/passwd"),
        ];
        for layer in hostile {
            let (dir, store) = new_store();
            let img = TestImage::from_layer(layer, &["sh"]).unwrap();
            let p = write(&dir, "evil.tar", &img.oci_layout_tar("evil:1").unwrap());
            let err = store.import_tarball(&p).unwrap_err().to_string();
            assert!(err.contains("refused"), "{err}");
            assert_store_empty(&store);
            let top: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(top.len(), 2, "only store/ and evil.tar: {top:?}");
        }
    }

    /// An OCI layout whose top entry is an index with the given platforms; the host's
    /// entry (if listed) is the real image, others point at blobs that do not exist.
    fn multi_arch_layout(img: &TestImage, arches: &[&str]) -> Vec<u8> {
        let host = crate::images::oci::host_platform().architecture;
        let manifests: Vec<serde_json::Value> = arches
            .iter()
            .map(|a| {
                let (digest, size) = if *a == host {
                    (img.manifest_digest(), img.manifest.len())
                } else {
                    (sha256_digest(a.as_bytes()), 10)
                };
                serde_json::json!({
                    "mediaType": media_type::OCI_MANIFEST, "digest": digest, "size": size,
                    "platform": {"os": "linux", "architecture": a}
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": manifests
        }))
        .unwrap();
        let top = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type::OCI_INDEX, "digest": sha256_digest(&index),
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:1"}
            }]
        }))
        .unwrap();
        let paths: Vec<String> = [&index, &img.manifest, &img.config, &img.layer_gz]
            .iter()
            .map(|b| format!("blobs/sha256/{}", &sha256_digest(b)[7..]))
            .collect();
        layer_tar(&[
            Entry::File("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#),
            Entry::File("index.json", 0o644, &top),
            Entry::File(&paths[0], 0o644, &index),
            Entry::File(&paths[1], 0o644, &img.manifest),
            Entry::File(&paths[2], 0o644, &img.config),
            Entry::File(&paths[3], 0o644, &img.layer_gz),
        ])
        .unwrap()
    }

    #[test]
    fn multi_arch_index_picks_the_host_platform() {
        let img = TestImage::busybox().unwrap();
        let host = crate::images::oci::host_platform().architecture;
        let (dir, store) = new_store();
        let p = write(
            &dir,
            "multi.tar",
            &multi_arch_layout(&img, &["s390x", &host, "riscv64"]),
        );
        store.import_tarball(&p).unwrap();
        let got = store.get("example.com/multi:1").unwrap();
        assert_eq!(got.digest.as_str(), img.manifest_digest());

        let (dir, store) = new_store();
        let p = write(
            &dir,
            "other.tar",
            &multi_arch_layout(&img, &["s390x", "mips64le"]),
        );
        let err = store.import_tarball(&p).unwrap_err().to_string();
        assert!(
            err.contains("no image for linux/") && err.contains("linux/s390x"),
            "{err}"
        );
        assert_store_empty(&store);
    }

    #[test]
    fn unnamed_images_are_refused() {
        let img = TestImage::busybox().unwrap();
        let (dir, store) = new_store();
        let mut oci = img.oci_layout_tar("busybox:x").unwrap();
        // Blank out the annotation key so the only name left is the bare tag "x".
        let key = b"io.containerd.image.name";
        let at = oci.windows(key.len()).position(|w| w == key).unwrap();
        oci[at..at + 2].copy_from_slice(b"zz");
        // The edit breaks the tar header checksum only if it touched a header: it is data.
        let p = write(&dir, "unnamed.tar", &oci);
        let err = store.import_tarball(&p).unwrap_err().to_string();
        assert!(err.contains("has no name"), "{err}");
        assert_store_empty(&store);
    }

    #[test]
    fn member_keys() {
        assert_eq!(member_key(b"./a/b", &[]).as_deref(), Some("a/b"));
        assert_eq!(
            member_key(b"../x/layer.tar", &["abc"]).as_deref(),
            Some("x/layer.tar")
        );
        assert_eq!(member_key(b"../../x", &["abc"]), None);
        assert_eq!(
            member_key(b"/manifest.json", &[]).as_deref(),
            Some("manifest.json")
        );
    }

    #[test]
    fn bare_tags_are_not_names() {
        assert_eq!(full_name("latest"), None);
        assert_eq!(full_name("busybox:1"), Some("busybox:1"));
        assert_eq!(full_name("example.com/x"), Some("example.com/x"));
    }
}
