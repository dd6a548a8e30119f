//! Test images built without the internet: a tiny rootfs from Debian's busybox-static
//! (`/bin/busybox` plus applet symlinks, `/etc/passwd` and `/etc/group` with root and
//! nobody, `/tmp`), config `Cmd ["sh"]`, written as an OCI-layout tarball or as a
//! docker-archive tarball (what `docker save` writes). Everything is deterministic (fixed
//! mtimes, owners and order), so the same busybox gives the same digests.

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

/// Where Debian's busybox-static installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets linked in `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "httpd", "wget", "nc", "sleep", "echo", "cat", "ls", "ps", "mkdir", "env", "id",
    "hostname", "true", "false", "tar", "wc",
];

/// The mtime of every entry (2024-01-01T00:00:00Z).
pub const MTIME: u64 = 1_704_067_200;

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The OCI architecture name of this host (as the store's host platform).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A tar entry of a layer being built.
pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// Builds an uncompressed layer tar from entries, in order, owned by root, at [`MTIME`].
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        match e {
            Entry::Dir(path, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..])
            }
            Entry::File(path, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data)
            }
            Entry::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
            }
        }
        .with_context(|| "building a layer tar")?;
    }
    b.into_inner().context("finishing a layer tar")
}

/// An image: one layer plus config, and its OCI manifest.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// The uncompressed layer tar (its digest is the diff id).
    pub layer_tar: Vec<u8>,
    /// The same layer gzip-compressed (the blob an OCI layout and a registry carry).
    pub layer_gz: Vec<u8>,
    pub config: Vec<u8>,
    /// OCI manifest referencing `config` and `layer_gz`.
    pub manifest: Vec<u8>,
}

impl TestImage {
    /// The busybox image (needs `/bin/busybox`: Debian's busybox-static).
    pub fn busybox() -> Result<TestImage> {
        let busybox = std::fs::read(BUSYBOX)
            .with_context(|| format!("reading {BUSYBOX} (install Debian's busybox-static)"))?;
        let mut entries = vec![
            Entry::Dir("bin/", 0o755),
            Entry::File("bin/busybox", 0o755, &busybox),
        ];
        let links: Vec<String> = APPLETS.iter().map(|a| format!("bin/{a}")).collect();
        for l in &links {
            entries.push(Entry::Symlink(l, "busybox"));
        }
        entries.extend([
            Entry::Dir("etc/", 0o755),
            Entry::File("etc/passwd", 0o644, PASSWD.as_bytes()),
            Entry::File("etc/group", 0o644, GROUP.as_bytes()),
            Entry::Dir("tmp/", 0o1777),
        ]);
        TestImage::from_layer(layer_tar(&entries)?, &["sh"])
    }

    /// An image of one given layer (tests build hostile layers with this).
    pub fn from_layer(layer_tar: Vec<u8>, cmd: &[&str]) -> Result<TestImage> {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&layer_tar).context("compressing the layer")?;
        let layer_gz = gz.finish().context("compressing the layer")?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
            },
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer_tar)]},
            "history": [{"created_by": "skiff testkit", "created": "2024-01-01T00:00:00Z"}],
        }))?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(&layer_gz),
                "size": layer_gz.len(),
            }],
        }))?;
        Ok(TestImage {
            layer_tar,
            layer_gz,
            config,
            manifest,
        })
    }

    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// The image ID (`crictl images` shows its first 12 hex characters).
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    pub fn diff_id(&self) -> String {
        sha256_digest(&self.layer_tar)
    }

    /// An OCI image layout tarball naming the image `name` (a full reference, e.g.
    /// `docker.io/library/busybox:test`) with containerd's annotation, and its tag in
    /// `org.opencontainers.image.ref.name` as buildkit writes it.
    pub fn oci_layout_tar(&self, name: &str) -> Result<Vec<u8>> {
        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": self.manifest_digest(),
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }))?;
        let mut files: Vec<(String, &[u8])> = vec![
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json".into(), &index),
        ];
        for blob in [&self.config, &self.manifest, &self.layer_gz] {
            files.push((format!("blobs/sha256/{}", hex(&sha256_digest(blob))), blob));
        }
        archive(&["blobs/", "blobs/sha256/"], &files)
    }

    /// A docker-archive tarball (`docker save` layout) with `RepoTags: [name]`.
    pub fn docker_archive_tar(&self, name: &str) -> Result<Vec<u8>> {
        let layer_dir = hex(&self.diff_id()).to_string();
        let config_name = format!("{}.json", hex(&self.config_digest()));
        let layer_name = format!("{layer_dir}/layer.tar");
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name,
            "RepoTags": [name],
            "Layers": [layer_name],
        }]))?;
        let files: Vec<(String, &[u8])> = vec![
            (config_name.clone(), &self.config),
            (layer_name.clone(), &self.layer_tar),
            ("manifest.json".into(), &manifest),
        ];
        archive(&[&format!("{layer_dir}/")], &files)
    }

    pub fn write_oci_layout(&self, path: &Path, name: &str) -> Result<()> {
        let tar = self.oci_layout_tar(name)?;
        std::fs::write(path, tar).with_context(|| format!("writing {}", path.display()))
    }

    pub fn write_docker_archive(&self, path: &Path, name: &str) -> Result<()> {
        let tar = self.docker_archive_tar(name)?;
        std::fs::write(path, tar).with_context(|| format!("writing {}", path.display()))
    }
}

/// Gzip-compresses bytes (a whole tarball, for the "optionally compressed" import path).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

fn archive(dirs: &[&str], files: &[(String, &[u8])]) -> Result<Vec<u8>> {
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::Dir(d, 0o755)).collect();
    for (path, data) in files {
        entries.push(Entry::File(path, 0o644, data));
    }
    layer_tar(&entries)
}

/// A local registry (Debian's `docker-registry`) on 127.0.0.1 with temporary storage;
/// killed by its PID when dropped.
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:<port>`
    pub host: String,
    _dir: tempfile::TempDir,
}

/// Where Debian's docker-registry package installs the binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

impl Registry {
    pub fn start() -> Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("storage").display()
            ),
        )?;
        let child = std::process::Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {REGISTRY_BIN} (install Debian's docker-registry)")
            })?;
        let registry = Registry {
            child,
            host,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok((status, _, _)) = registry.request("GET", "/v2/", &[], b"") {
                if status == 200 {
                    return Ok(registry);
                }
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "registry on {} did not answer /v2/ within 20s",
                    registry.host
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// One HTTP/1.1 request; returns status, headers (lowercased names) and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<(String, String)>, Vec<u8>)> {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&self.host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of HTTP headers")?;
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .context("bad HTTP status line")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers, resp[split + 4..].to_vec()))
    }

    /// Monolithic blob upload: POST an upload, then PUT the bytes with their digest.
    pub fn push_blob(&self, repo: &str, blob: &[u8]) -> Result<()> {
        let (status, headers, _) =
            self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"")?;
        anyhow::ensure!(status == 202, "starting an upload to {repo}: HTTP {status}");
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .context("upload without Location")?;
        let path = match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let digest = sha256_digest(blob);
        let (status, _, body) = self.request(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            blob,
        )?;
        anyhow::ensure!(
            status == 201,
            "uploading {digest}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// Pushes an image's blobs and manifest as `repo:tag`.
    pub fn push(&self, image: &TestImage, repo: &str, tag: &str) -> Result<()> {
        for blob in [&image.layer_gz, &image.config] {
            self.push_blob(repo, blob)?;
        }
        self.push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &image.manifest,
        )
    }

    pub fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<()> {
        let (status, _, body) = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", media_type)],
            manifest,
        )?;
        anyhow::ensure!(
            status == 201,
            "pushing manifest {repo}:{tag}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_busybox_image() {
        let a = TestImage::busybox().unwrap();
        let b = TestImage::busybox().unwrap();
        assert_eq!(a.manifest_digest(), b.manifest_digest());
        assert_eq!(
            a.oci_layout_tar("x/y:z").unwrap(),
            b.oci_layout_tar("x/y:z").unwrap()
        );
        assert_eq!(
            a.docker_archive_tar("y:z").unwrap(),
            b.docker_archive_tar("y:z").unwrap()
        );
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(&a.layer_tar[..]);
        for e in ar.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert!(names.contains(&"bin/httpd".to_string()));
        assert!(names.contains(&"etc/passwd".to_string()));
    }
}
