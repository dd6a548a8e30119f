//! A pod's volumes on this node, as upstream's kubelet makes them: emptyDir (a directory,
//! or a tmpfs for `medium: Memory`), hostPath (type-checked, bound from the host path
//! itself), configMap / secret / downwardAPI / projected (files written by the atomic writer,
//! secrets and projected volumes on a tmpfs; projected service-account tokens come from
//! `service_account_token`), and persistentVolumeClaim (the bound volume's
//! node-local path).
//!
//! Decide, then act: [`plan`] reads the API (ConfigMaps, Secrets, claims, volumes) and says
//! what each volume holds; [`apply`] (blocking) puts it under
//! `<pod>/volumes/<volume-name>`. [`setup`] does both before a container starts (idempotent);
//! [`refresh`] re-writes the API-backed file volumes so updates reach running containers;
//! [`container_mounts`] turns a container's `volumeMounts` into the shim's binds.
//!
//! Host-side the only mounts are tmpfs volumes and subPath binds under the pod's directory
//! (`sandbox::teardown` unmounts them before anything is deleted); hostPath and claim data
//! are bound by the shim inside the container's mount namespace only, so removing a pod
//! never reaches them.

pub mod atomic_writer;
pub mod claim;
pub mod host_path;
pub mod ownership;
pub mod payload;
pub mod service_account_token;
pub mod subpath;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::api::Api;
use runtime::shim::BindMount;

use self::atomic_writer::Payload;
use super::context::NodeContext;
use super::downward::Allocatable;
use super::layout::Layout;

/// A volume that could not be set up: the message of kubelet's `FailedMount` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SetupError {
    pub message: String,
}

impl SetupError {
    /// `MountVolume.SetUp failed for volume "<name>" : <why>`.
    pub fn set_up(volume: &str, why: impl std::fmt::Display) -> SetupError {
        SetupError {
            message: format!("MountVolume.SetUp failed for volume {volume:?} : {why}"),
        }
    }
}

/// What one volume holds, decided from the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A directory (mode 0777), or a tmpfs with an optional size.
    EmptyDir { memory: bool, size: Option<u64> },
    /// A path on the host, checked against its `type`.
    HostPath {
        path: PathBuf,
        type_: Option<String>,
    },
    /// Files written by the atomic writer, on a tmpfs for secrets and projected volumes.
    Files { tmpfs: bool, payload: Payload },
    /// A bound persistent volume's node-local directory.
    Claim(claim::ClaimSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub name: String,
    pub content: Content,
    /// The pod's `fsGroup`, for the volumes whose ownership the kubelet manages
    /// (emptyDir and the file volumes).
    pub fs_group: Option<u32>,
}

/// A volume ready to be mounted: where its data is on the host, and whether containers
/// must see it read-only whatever their mount says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub path: PathBuf,
    pub read_only: bool,
}

pub type PodVolumes = BTreeMap<String, Ready>;

/// Makes every volume of the pod (idempotent).
pub async fn setup(ctx: &NodeContext, pod: &Pod, uid: &str) -> Result<PodVolumes, SetupError> {
    let planned = plan(ctx, pod, false).await?;
    let dir = ctx.layout.volumes_dir(uid);
    tokio::task::spawn_blocking(move || apply(&dir, &planned, false))
        .await
        .map_err(|e| SetupError {
            message: format!("setting up volumes: {e}"),
        })?
}

/// Re-writes the configMap, secret, downwardAPI and projected volumes already set up, so
/// changed objects (and labels or annotations) reach running containers, as kubelet's
/// periodic re-sync does. A volume whose objects cannot be read now keeps its old files.
pub async fn refresh(ctx: &NodeContext, pod: &Pod, uid: &str) {
    let dir = ctx.layout.volumes_dir(uid);
    if !dir.is_dir() {
        return;
    }
    let planned = match plan(ctx, pod, true).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(pod = uid, "refreshing volumes: {e}");
            return;
        }
    };
    let result = tokio::task::spawn_blocking(move || apply(&dir, &planned, true)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(pod = uid, "refreshing volumes: {e}");
    }
}

/// Reads what each volume holds from the API. With `files_only`, only the volumes the
/// atomic writer fills are planned (for [`refresh`]).
pub async fn plan(
    ctx: &NodeContext,
    pod: &Pod,
    files_only: bool,
) -> Result<Vec<Planned>, SetupError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let allocatable = Allocatable {
        cpu_millis: ctx.allocatable_milli_cpu,
        memory_bytes: ctx.allocatable_memory,
        ephemeral_storage_bytes: ctx.allocatable_ephemeral,
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = Vec::new();
    for v in &volumes {
        let is_files = v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some();
        if files_only && !is_files {
            continue;
        }
        let content = content(ctx, pod, namespace, v, &allocatable).await?;
        out.push(Planned {
            name: v.name.clone(),
            content,
            fs_group,
        });
    }
    Ok(out)
}

async fn content(
    ctx: &NodeContext,
    pod: &Pod,
    namespace: &str,
    v: &Volume,
    allocatable: &Allocatable,
) -> Result<Content, SetupError> {
    let fail = |why: String| SetupError::set_up(&v.name, why);
    if let Some(e) = &v.empty_dir {
        let memory = match e.medium.as_deref().unwrap_or("") {
            "" => false,
            "Memory" => true,
            other => {
                return Err(fail(format!(
                    "emptyDir medium {other} is not supported by this node"
                )))
            }
        };
        let size = match &e.size_limit {
            Some(q) if memory => {
                let parsed =
                    super::resources::parse_quantity(&q.0).map_err(|e| fail(e.to_string()))?;
                Some(parsed.as_bytes().max(0) as u64).filter(|n| *n > 0)
            }
            _ => None,
        };
        return Ok(Content::EmptyDir { memory, size });
    }
    if let Some(h) = &v.host_path {
        return Ok(Content::HostPath {
            path: PathBuf::from(&h.path),
            type_: h.type_.clone(),
        });
    }
    if let Some(c) = &v.config_map {
        let optional = c.optional.unwrap_or(false);
        let cm = get_config_map(ctx, namespace, &c.name, optional)
            .await
            .map_err(fail)?;
        let mode = c.default_mode.unwrap_or(payload::DEFAULT_MODE);
        let files =
            payload::config_map(c.items.as_deref(), cm.as_ref(), mode, optional).map_err(fail)?;
        return Ok(Content::Files {
            tmpfs: false,
            payload: files,
        });
    }
    if let Some(s) = &v.secret {
        let optional = s.optional.unwrap_or(false);
        let name = s.secret_name.clone().unwrap_or_default();
        let secret = get_secret(ctx, namespace, &name, optional)
            .await
            .map_err(fail)?;
        let mode = s.default_mode.unwrap_or(payload::DEFAULT_MODE);
        let files =
            payload::secret(s.items.as_deref(), secret.as_ref(), mode, optional).map_err(fail)?;
        return Ok(Content::Files {
            tmpfs: true,
            payload: files,
        });
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(payload::DEFAULT_MODE);
        let files =
            payload::downward_api(pod, d.items.as_deref(), mode, allocatable).map_err(fail)?;
        return Ok(Content::Files {
            tmpfs: false,
            payload: files,
        });
    }
    if let Some(p) = &v.projected {
        let files = projected(ctx, pod, namespace, &v.name, p, allocatable)
            .await
            .map_err(fail)?;
        return Ok(Content::Files {
            tmpfs: true,
            payload: files,
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        let source = claim_source(ctx, namespace, &c.claim_name, c.read_only.unwrap_or(false))
            .await
            .map_err(|why| SetupError {
                message: format!("error processing PVC {namespace}/{}: {why}", c.claim_name),
            })?;
        return Ok(Content::Claim(source));
    }
    Err(fail(format!(
        "volume type {} is not supported by this node",
        volume_kind(v)
    )))
}

/// The name of the source field a volume sets (`nfs`, `csi`, ...), for the refusal.
fn volume_kind(v: &Volume) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|m| m.keys().find(|k| k.as_str() != "name").cloned())
        })
        .unwrap_or_else(|| "(none)".into())
}

async fn projected(
    ctx: &NodeContext,
    pod: &Pod,
    namespace: &str,
    volume: &str,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    allocatable: &Allocatable,
) -> Result<Payload, String> {
    let mode = p.default_mode.unwrap_or(payload::DEFAULT_MODE);
    let mut files = Payload::new();
    let mut errors = Vec::new();
    for source in p.sources.iter().flatten() {
        let part = if let Some(c) = &source.config_map {
            let optional = c.optional.unwrap_or(false);
            match get_config_map(ctx, namespace, &c.name, optional).await {
                Ok(cm) => payload::config_map(c.items.as_deref(), cm.as_ref(), mode, optional),
                Err(e) => Err(e),
            }
        } else if let Some(s) = &source.secret {
            let optional = s.optional.unwrap_or(false);
            match get_secret(ctx, namespace, &s.name, optional).await {
                Ok(secret) => payload::secret(s.items.as_deref(), secret.as_ref(), mode, optional),
                Err(e) => Err(e),
            }
        } else if let Some(d) = &source.downward_api {
            payload::downward_api(pod, d.items.as_deref(), mode, allocatable)
        } else if let Some(t) = &source.service_account_token {
            service_account_token::payload(ctx, pod, volume, t, mode).await
        } else if source.cluster_trust_bundle.is_some() {
            Err("clusterTrustBundle projection is not supported by this node".to_string())
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(part) => files.extend(part),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(payload::aggregate(&errors))
    }
}

/// A ConfigMap; `None` when it does not exist and the volume allows that. The not-found
/// message is the kubelet's object manager's (`configmap "x" not found`).
async fn get_config_map(
    ctx: &NodeContext,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<ConfigMap>, String> {
    match ctx.config_maps.get(namespace, name).await {
        Ok(Some(cm)) => Ok(Some(cm)),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("configmap {name:?} not found")),
        Err(e) => Err(format!("getting configmap {namespace}/{name}: {e}")),
    }
}

async fn get_secret(
    ctx: &NodeContext,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<Secret>, String> {
    match ctx.secrets.get(namespace, name).await {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) if optional => Ok(None),
        Ok(None) => Err(format!("secret {name:?} not found")),
        Err(e) => Err(format!("getting secret {namespace}/{name}: {e}")),
    }
}

async fn claim_source(
    ctx: &NodeContext,
    namespace: &str,
    claim_name: &str,
    read_only: bool,
) -> Result<claim::ClaimSource, String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let pvc = match claims.get_opt(claim_name).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(format!(
            "failed to fetch PVC from API server: persistentvolumeclaims {claim_name:?} not found"
        ))
        }
        Err(e) => return Err(format!("failed to fetch PVC from API server: {e}")),
    };
    let volume = claim::bound_volume(namespace, &pvc)?;
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = match volumes.get_opt(&volume).await {
        Ok(Some(pv)) => pv,
        Ok(None) => {
            return Err(format!(
            "failed to fetch PV {volume:?} from API server: persistentvolumes {volume:?} not found"
        ))
        }
        Err(e) => {
            return Err(format!(
                "failed to fetch PV {volume:?} from API server: {e}"
            ))
        }
    };
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    claim::source(&pv, &uid, read_only)
}

/// Blocking: puts each planned volume under `dir` (= `<pod>/volumes`). With `only_written`,
/// file volumes not yet set up are left alone (a refresh never makes a volume).
pub fn apply(
    dir: &Path,
    planned: &[Planned],
    only_written: bool,
) -> Result<PodVolumes, SetupError> {
    let mut out = PodVolumes::new();
    for p in planned {
        let fail = |why: String| SetupError::set_up(&p.name, why);
        let target = dir.join(&p.name);
        let ready = match &p.content {
            Content::EmptyDir { memory, size } => {
                let fresh = !target.exists();
                if *memory {
                    ensure_tmpfs(&target, *size).map_err(fail)?;
                } else {
                    ensure_dir(&target, 0o777).map_err(fail)?;
                }
                if let (true, Some(gid)) = (fresh, p.fs_group) {
                    ownership::apply(&target, gid, false).map_err(fail)?;
                }
                Ready {
                    path: target,
                    read_only: false,
                }
            }
            Content::HostPath { path, type_ } => {
                host_path::check_type(path, type_.as_deref()).map_err(fail)?;
                Ready {
                    path: path.clone(),
                    read_only: false,
                }
            }
            Content::Claim(source) => {
                let path = PathBuf::from(&source.path);
                let type_ = source.type_.as_deref().or(Some("DirectoryOrCreate"));
                host_path::check_type(&path, type_).map_err(fail)?;
                Ready {
                    path,
                    read_only: source.read_only,
                }
            }
            Content::Files { tmpfs, payload } => {
                if only_written && !atomic_writer::is_written(&target) {
                    continue;
                }
                if *tmpfs {
                    ensure_tmpfs(&target, None).map_err(fail)?;
                } else {
                    ensure_dir(&target, 0o777).map_err(fail)?;
                }
                let changed =
                    atomic_writer::write(&target, payload).map_err(|e| fail(e.to_string()))?;
                if let (true, Some(gid)) = (changed, p.fs_group) {
                    ownership::apply(&target, gid, true).map_err(fail)?;
                }
                Ready {
                    path: target,
                    read_only: true,
                }
            }
        };
        out.insert(p.name.clone(), ready);
    }
    Ok(out)
}

/// A directory with exactly `mode` (the kubelet chmods after MkdirAll, past the umask).
fn ensure_dir(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    // Only the permission bits: a setgid bit from fsGroup stays.
    let current = meta.permissions().mode() & 0o7777;
    if current & 0o777 != mode {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode((current & !0o777) | mode),
        )
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A tmpfs at `path` unless one is already mounted there.
fn ensure_tmpfs(path: &Path, size: Option<u64>) -> Result<(), String> {
    if is_mount_point(path) {
        return Ok(());
    }
    runtime::sandbox::mounts::tmpfs(path, size).map_err(|e| e.to_string())
}

/// Whether `path` is the root of a mount: a directory on another device than its parent.
fn is_mount_point(path: &Path) -> bool {
    let (Ok(meta), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    let Ok(parent_meta) = std::fs::metadata(parent) else {
        return false;
    };
    meta.is_dir() && meta.dev() != parent_meta.dev()
}

/// Where the subPath binds of a container live on the host, under the pod's directory.
pub fn subpaths_dir(layout: &Layout, uid: &str) -> PathBuf {
    layout.pod_dir(uid).join("volume-subpaths")
}

/// The shim's binds for a container's `volumeMounts`. Errors are the kubelet's
/// `makeMounts` messages (CreateContainerConfigError).
pub fn container_mounts(
    layout: &Layout,
    uid: &str,
    c: &Container,
    volumes: &PodVolumes,
    kubelet_vars: &[String],
) -> Result<Vec<BindMount>, String> {
    let vars = super::env::env_map(kubelet_vars);
    let mut out = Vec::new();
    for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(volume) = volumes.get(&m.name) else {
            return Err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            ));
        };
        match m.mount_propagation.as_deref() {
            None | Some("None") => {}
            Some(other) => {
                return Err(format!(
                    "volumeMount {:?}: mountPropagation {other} is not supported by this node yet",
                    m.name
                ))
            }
        }
        if m.recursive_read_only
            .as_deref()
            .is_some_and(|r| r != "Disabled")
        {
            return Err(format!(
                "volumeMount {:?}: recursiveReadOnly is not supported by this node yet",
                m.name
            ));
        }
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (_, Some(expr)) if !expr.is_empty() => subpath::expand_expr(expr, &vars)?,
            (Some(s), _) => s.clone(),
            _ => String::new(),
        };
        let source = if sub.is_empty() {
            volume.path.clone()
        } else {
            subpath::check(&sub)?;
            let prepared = subpath::open(&volume.path, &sub).and_then(|fd| {
                let target = subpaths_dir(layout, uid)
                    .join(&m.name)
                    .join(&c.name)
                    .join(index.to_string());
                subpath::bind(&fd, &target).map(|()| target)
            });
            match prepared {
                Ok(target) => target,
                Err(e) => {
                    tracing::warn!(pod = uid, container = %c.name, volume = %m.name, "subPath {sub:?}: {e}");
                    return Err(format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}",
                        m.name, c.name
                    ));
                }
            }
        };
        out.push(BindMount {
            source,
            destination: PathBuf::from(&m.mount_path),
            readonly: m.read_only.unwrap_or(false) || volume.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_makes_dirs_and_files_and_checks_host_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("volumes");
        let mut files = Payload::new();
        files.insert(
            "k".into(),
            atomic_writer::FileProjection {
                data: b"v".to_vec(),
                mode: 0o644,
            },
        );
        let planned = vec![
            Planned {
                name: "scratch".into(),
                content: Content::EmptyDir {
                    memory: false,
                    size: None,
                },
                fs_group: Some(4321),
            },
            Planned {
                name: "cfg".into(),
                content: Content::Files {
                    tmpfs: false,
                    payload: files,
                },
                fs_group: Some(4321),
            },
        ];
        let ready = apply(&dir, &planned, false).unwrap();
        let meta = std::fs::metadata(dir.join("scratch")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o2777);
        assert_eq!(meta.gid(), 4321);
        let key = std::fs::metadata(dir.join("cfg/k")).unwrap();
        assert_eq!(
            (key.permissions().mode() & 0o7777, key.gid()),
            (0o644, 4321)
        );
        assert_eq!(std::fs::read_to_string(dir.join("cfg/k")).unwrap(), "v");
        assert!(ready["cfg"].read_only && !ready["scratch"].read_only);
        // Idempotent, and the setgid bit stays.
        apply(&dir, &planned, false).unwrap();
        let mode = std::fs::metadata(dir.join("scratch"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o2777);

        let bad = vec![Planned {
            name: "host".into(),
            content: Content::HostPath {
                path: dir.join("cfg/..data/k"),
                type_: Some("Directory".into()),
            },
            fs_group: None,
        }];
        let err = apply(&dir, &bad, false).unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: {} is not a directory",
                dir.join("cfg/..data/k").display()
            )
        );
    }

    #[test]
    fn mounts_follow_volume_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let volumes = PodVolumes::from([
            (
                "cfg".to_string(),
                Ready {
                    path: "/v/cfg".into(),
                    read_only: true,
                },
            ),
            (
                "data".to_string(),
                Ready {
                    path: "/v/data".into(),
                    read_only: false,
                },
            ),
        ]);
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "data", "mountPath": "/data", "readOnly": true},
            {"name": "data", "mountPath": "/rw"}
        ]}))
        .unwrap();
        let m = container_mounts(&layout, "u", &c, &volumes, &[]).unwrap();
        let got: Vec<(String, bool)> = m
            .iter()
            .map(|b| (b.destination.display().to_string(), b.readonly))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/cfg".into(), true),
                ("/data".into(), true),
                ("/rw".into(), false)
            ]
        );

        let missing: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "nope", "mountPath": "/x"}]}))
        .unwrap();
        assert_eq!(
            container_mounts(&layout, "u", &missing, &volumes, &[]).unwrap_err(),
            "cannot find volume \"nope\" to mount into container \"c\""
        );
        let expr: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/x", "subPathExpr": "$(POD_NAME)"}]}))
        .unwrap();
        assert_eq!(
            container_mounts(&layout, "u", &expr, &volumes, &[]).unwrap_err(),
            "missing value for POD_NAME"
        );
    }
}
