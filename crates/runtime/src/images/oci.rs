//! The OCI / Docker v2 JSON documents the store reads (descriptors, manifests, indexes,
//! image configs), the typed image config handed to the runtime, and the choice of the
//! host's platform in a multi-arch index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_LIST
    }
    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }
}

/// Annotation naming an image in an OCI layout (often only a tag, e.g. `latest`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image config blob (`application/vnd.oci.image.config.v1+json`), the parts we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RawContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Docker's capitalised `config` object; every field may be absent or null.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// What the runtime needs from an image's config to start a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp` style keys, sorted.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

impl ConfigFile {
    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.clone().unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: non_empty(c.stop_signal),
        }
    }
}

/// The platform this binary runs on, in OCI names (`linux`/`amd64`, `linux`/`arm64`).
pub fn host_platform() -> Platform {
    let (architecture, variant) = oci_arch(std::env::consts::ARCH);
    Platform {
        architecture: architecture.to_string(),
        os: std::env::consts::OS.to_string(),
        variant: variant.map(str::to_string),
    }
}

/// Rust's `std::env::consts::ARCH` → GOARCH-style OCI architecture (and default variant).
pub fn oci_arch(rust_arch: &str) -> (&str, Option<&str>) {
    match rust_arch {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        "loongarch64" => ("loong64", None),
        "mips64" => ("mips64", None),
        other => (other, None),
    }
}

/// Whether an image for `candidate` runs on `host`. A missing variant matches (arm64 images
/// rarely say v8); a present one must agree.
pub fn platform_matches(host: &Platform, candidate: &Platform) -> bool {
    let variant_ok = match (&host.variant, &candidate.variant) {
        (Some(h), Some(c)) => h == c,
        _ => true,
    };
    candidate.os == host.os && candidate.architecture == host.architecture && variant_ok
}

/// Picks the manifest for `host` from an index: the first exact match; entries without a
/// platform or for other platforms (attestations are `unknown/unknown`) are skipped.
pub fn select_manifest<'a>(index: &'a Index, host: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| media_type::is_manifest(&d.media_type) || d.media_type.is_empty())
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| platform_matches(host, p))
        })
}

/// The platforms an index offers, for the error when none fits.
pub fn platforms_of(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, os: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}{os}"),
            size: 1,
            annotations: BTreeMap::new(),
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn host_arch_names() {
        assert_eq!(oci_arch("x86_64"), ("amd64", None));
        assert_eq!(oci_arch("aarch64"), ("arm64", None));
        assert_eq!(oci_arch("arm"), ("arm", Some("v7")));
        assert_eq!(host_platform().os, "linux");
    }

    #[test]
    fn selects_host_platform() {
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: vec![
                desc("unknown", "unknown", None),
                desc("arm", "linux", Some("v6")),
                desc("arm", "linux", Some("v7")),
                desc("arm64", "linux", Some("v8")),
                desc("amd64", "windows", None),
                desc("amd64", "linux", None),
            ],
        };
        let cases = [
            ("amd64", None, Some("sha256:amd64linux")),
            ("arm64", None, Some("sha256:arm64linux")),
            ("arm", Some("v7"), Some("sha256:armlinux")),
            ("s390x", None, None),
        ];
        for (arch, variant, want) in cases {
            let host = Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            };
            let got = select_manifest(&index, &host).map(|d| d.digest.as_str());
            assert_eq!(got, want, "{arch}");
        }
        let arm = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v7".into()),
        };
        assert_eq!(
            select_manifest(&index, &arm)
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .variant,
            Some("v7".into())
        );
        assert!(platforms_of(&index).contains(&"linux/arm/v6".to_string()));
    }

    #[test]
    fn config_with_nulls_and_missing_fields() {
        let cfg: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "config":{"Entrypoint":null,"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":"",
                          "User":"nobody","ExposedPorts":{"8080/tcp":{},"53/udp":{}}},
                "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
        )
        .unwrap();
        let c = cfg.image_config();
        assert_eq!(c.entrypoint, Vec::<String>::new());
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.exposed_ports, vec!["53/udp", "8080/tcp"]);
        let bare: ConfigFile =
            serde_json::from_str(r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert_eq!(bare.image_config().cmd, Vec::<String>::new());
    }
}
