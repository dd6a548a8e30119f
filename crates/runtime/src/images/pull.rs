//! Pulling images from OCI / Docker v2 registries into the store, through `oci-client`
//! (transport, token and basic auth; rustls with ring, no openssl). Manifests are parsed
//! and multi-arch indexes resolved to the host platform here, with the same documents and
//! the same verify-then-commit path as tarball import, so a bad pull changes nothing.
//!
//! Registries on `localhost`, `127.0.0.1` or `[::1]` are spoken to over plain http
//! (containerd's default for localhost); every other registry over https.

use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use super::digest::{digest_reader, Digest};
use super::import::{verify_and_stage, Member, Members, PlannedImage};
use super::oci::{self, media_type, Index, Manifest};
use super::reference::Reference;
use super::store::{io_err, Image, ImageStore, StoreError};

/// Credentials for one registry (from an imagePullSecret, later).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Whether a registry host is spoken to over plain http.
pub fn is_insecure_local(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default()
    } else {
        registry.split(':').next().unwrap_or_default().to_string()
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

fn pull_err(reference: &Reference, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid {
        what: format!("pulling {reference}"),
        reason: format!("{what}: {e}"),
    }
}

const ACCEPTED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_LIST,
];

/// Pulls `reference` (normalised as usual) into the store and returns the stored image.
pub async fn pull(
    store: &ImageStore,
    reference: &str,
    credentials: &Credentials,
) -> Result<Image, StoreError> {
    let reference = Reference::parse(reference)?;
    // reqwest is built without a default crypto provider: use ring, which the rest of the
    // binary already uses. Installing twice is a harmless no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_insecure_local(reference.registry()) {
        ClientProtocol::HttpsExcept(vec![reference.registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
    };
    let remote = |selector: &str| -> Result<oci_client::Reference, StoreError> {
        let sep = if selector.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        format!("{}{sep}{selector}", reference.name())
            .parse()
            .map_err(|e| pull_err(&reference, "reference", e))
    };
    let host = oci::host_platform();

    let mut target = remote(reference.manifest_selector())?;
    let mut manifest_bytes = Vec::new();
    // An index resolves to the host's manifest (at most one level of nesting is usual).
    for _ in 0..3 {
        let (bytes, digest) = client
            .pull_manifest_raw(&target, &auth, ACCEPTED)
            .await
            .map_err(|e| pull_err(&reference, "fetching the manifest", e))?;
        let got = Digest::of(&bytes);
        if got.as_str() != digest {
            return Err(pull_err(
                &reference,
                "manifest",
                format!("digest mismatch: registry says {digest}, content is {got}"),
            ));
        }
        let kind: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| pull_err(&reference, "manifest is not JSON", e))?;
        let media = kind.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
        let is_index =
            media_type::is_index(media) || (media.is_empty() && kind.get("manifests").is_some());
        if !is_index {
            manifest_bytes = bytes.to_vec();
            break;
        }
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| pull_err(&reference, "index", e))?;
        let chosen = oci::select_manifest(&index, &host).ok_or_else(|| {
            pull_err(
                &reference,
                "platform",
                format!(
                    "no image for {}/{} (the index offers {})",
                    host.os,
                    host.architecture,
                    oci::platforms_of(&index).join(", ")
                ),
            )
        })?;
        target = remote(&chosen.digest)?;
    }
    if manifest_bytes.is_empty() {
        return Err(pull_err(
            &reference,
            "manifest",
            "indexes nested too deeply",
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| pull_err(&reference, "manifest", e))?;

    let stage = store.staging()?;
    let mut members = Members::default();
    for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let digest =
            Digest::parse(&desc.digest).map_err(|e| pull_err(&reference, "descriptor", e))?;
        let key = format!("blobs/sha256/{}", digest.hex());
        if members.get(&key).is_some() {
            continue;
        }
        let file = stage.path().join(digest.hex());
        download(&client, &target, &desc.digest, &file)
            .await
            .map_err(|e| pull_err(&reference, &format!("fetching blob {}", desc.digest), e))?;
        let (got, size) = std::fs::File::open(&file)
            .and_then(digest_reader)
            .map_err(io_err("reading", &file))?;
        members.insert(
            key,
            Member {
                file,
                digest: got,
                size,
            },
        );
    }
    let plan = PlannedImage {
        names: vec![reference.clone()],
        manifest: manifest_bytes,
        config: manifest.config,
        layers: manifest.layers,
    };
    let what = format!("pulling {reference}");
    let staged = verify_and_stage(store, &members, &[plan], stage.path(), &host, &what)?;
    store.commit(staged)?;
    store.get(&reference.to_string())
}

async fn download(
    client: &Client,
    target: &oci_client::Reference,
    digest: &str,
    file: &Path,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    client
        .pull_blob(target, digest, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    // tokio's File finishes writes in the background: wait for them before reading back.
    out.flush()
        .await
        .map_err(|e| format!("writing {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries_are_insecure() {
        for (host, want) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:41234", true),
            ("[::1]:5000", true),
            ("docker.io", false),
            ("localhost.example:5000", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(is_insecure_local(host), want, "{host}");
        }
    }
}
