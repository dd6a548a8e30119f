//! Starting one container attempt: gather what its configuration needs from the API
//! (ConfigMaps, Secrets, Services), translate the pod's container into the shim's
//! [`ContainerConfig`] (environment, command line, identity, cgroup limits and mounts), then
//! launch it: record the attempt, mount its root filesystem, start its shim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use runtime::images::{Credentials, Digest, Image};
use runtime::shim::{
    BindMount, ClientError, ContainerConfig, NamespacePaths, RunningContainer, Signal,
};

use super::context::NodeContext;
use super::layout::AttemptPaths;
use super::observe::{AttemptRecord, ATTEMPT_RECORD};
use super::sandbox::PodRecord;

/// Upstream's default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot be built (kubelet: CreateContainerConfigError and friends).
    Config {
        reason: &'static str,
        message: String,
    },
    /// A volume could not be set up (kubelet: a FailedMount event; the container keeps
    /// waiting as ContainerCreating).
    Volume { message: String },
}

/// A container attempt ready to launch.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub paths: AttemptPaths,
    /// The pod's directory: the only pod whose mounts the container's shim sees.
    pub pod_dir: PathBuf,
    pub record: AttemptRecord,
    pub config: ContainerConfig,
    pub lowerdir: String,
    /// Resolved against the root filesystem's /etc/passwd and /etc/group once mounted.
    pub user: super::command::UserSpec,
    pub log_path: PathBuf,
    /// Events to record (reason, message), e.g. envFrom keys skipped.
    pub warnings: Vec<(&'static str, String)>,
}

/// The 64-hex container ID of an attempt (stable: the attempt's directory is unique).
pub fn container_id(uid: &str, container: &str, attempt: u32) -> String {
    Digest::of(format!("{uid}/{container}/{attempt}").as_bytes())
        .hex()
        .to_string()
}

pub async fn prepare(
    ctx: &NodeContext,
    pod: &Pod,
    record: &PodRecord,
    c: &Container,
    image: &Image,
    attempt: u32,
) -> Result<Prepared, StartError> {
    let uid = record.uid.as_str();
    let namespace = record.namespace.as_str();
    // Volumes first, as kubelet waits for them before it makes any container.
    let volumes = super::volumes::setup(ctx, pod, uid)
        .await
        .map_err(|e| StartError::Volume { message: e.message })?;
    let (config_maps, secrets) = referenced_objects(ctx, namespace, c).await?;
    let services = ctx.services.for_links(pod).await;
    let hostname = super::sandbox::hostname(pod);
    let node = super::downward::NodeFacts {
        host_ips: vec![ctx.host_ip.clone()],
        pod_ips: if record.host_network {
            vec![ctx.host_ip.clone()]
        } else {
            super::sandbox::pod_ip(&ctx.layout, uid)
                .into_iter()
                .collect()
        },
        allocatable: super::downward::Allocatable {
            cpu_millis: ctx.allocatable_milli_cpu,
            memory_bytes: ctx.allocatable_memory,
            ephemeral_storage_bytes: ctx.allocatable_ephemeral,
        },
    };
    let env = super::env::container_env(&super::env::EnvInputs {
        pod,
        container: c,
        image_env: &image.config.env,
        hostname: &hostname,
        config_maps: &config_maps,
        secrets: &secrets,
        services: &services,
        node: &node,
    })
    .map_err(|e| StartError::Config {
        reason: "CreateContainerConfigError",
        message: e.to_string(),
    })?;
    let warnings = Vec::new();
    let args = super::command::command_line(c, &image.config, &env.kubelet_vars).map_err(|e| {
        StartError::Config {
            reason: "CreateContainerError",
            message: e.to_string(),
        }
    })?;
    let resources = super::resources::cgroup_resources(c).map_err(|e| StartError::Config {
        reason: "CreateContainerConfigError",
        message: e.to_string(),
    })?;

    let id = container_id(uid, &c.name, attempt);
    let paths = AttemptPaths {
        dir: ctx.layout.attempt_dir(uid, &c.name, attempt),
    };
    let pod_dir = ctx.layout.pod_dir(uid);
    let termination_path = c
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
    let mut mounts = vec![
        bind(pod_dir.join("etc-hosts"), "/etc/hosts", false),
        bind(pod_dir.join("etc-hostname"), "/etc/hostname", false),
        bind(pod_dir.join("resolv.conf"), "/etc/resolv.conf", false),
        bind(paths.termination_log(), &termination_path, false),
    ];
    let volume_mounts =
        super::volumes::container_mounts(&ctx.layout, uid, c, &volumes, &env.kubelet_vars)
            .map_err(|message| StartError::Config {
                reason: "CreateContainerConfigError",
                message,
            })?;
    // A volume mounted over one of the pod's own files replaces it, as upstream.
    mounts.retain(|m| !volume_mounts.iter().any(|v| v.destination == m.destination));
    mounts.extend(volume_mounts);
    mounts.dedup_by(|a, b| a.destination == b.destination);

    let user_spec =
        super::command::user(pod, c, &image.config).map_err(|e| StartError::Config {
            reason: "CreateContainerConfigError",
            message: e.to_string(),
        })?;
    let network = (!record.host_network).then(|| ctx.layout.netns(uid));
    let security = c.security_context.as_ref();
    let config = ContainerConfig {
        id: id.clone(),
        rootfs: paths.rootfs_merged(),
        readonly_rootfs: security
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        args,
        env: env.vars,
        working_dir: super::command::working_dir(c, &image.config).map(PathBuf::from),
        hostname: Some(hostname),
        namespaces: NamespacePaths {
            network,
            host_network: record.host_network,
            ..Default::default()
        },
        cgroups_path: PathBuf::from(format!("{}/{id}", record.cgroup_parent)),
        resources,
        mounts,
        user: Default::default(),
        oom_score_adj: Some(super::resources::oom_score_adj(pod, c, ctx.memory_capacity)),
        stdio: runtime::shim::StdioConfig {
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
        },
    };
    let image_name = image.references.first().cloned().unwrap_or_default();
    let repo = image_name
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map(|(r, _)| r.to_string())
        .unwrap_or_else(|| image_name.clone());
    Ok(Prepared {
        record: AttemptRecord {
            container_id: id,
            image: c.image.clone().unwrap_or_default(),
            image_ref: image_name.clone(),
            image_id: format!("{repo}@{}", image.digest.as_str()),
            stop_signal: image.config.stop_signal.clone(),
        },
        log_path: ctx
            .layout
            .container_log(&record.namespace, &record.name, uid, &c.name, attempt),
        lowerdir: match &ctx.mount_point_layer {
            Some(layer) => format!("{}:{}", image.overlay_lowerdir(), layer.display()),
            None => image.overlay_lowerdir(),
        },
        user: user_spec,
        pod_dir,
        paths,
        config,
        warnings,
    })
}

fn bind(source: PathBuf, destination: &str, readonly: bool) -> BindMount {
    BindMount {
        source,
        destination: PathBuf::from(destination),
        readonly,
    }
}

/// Blocking: records the attempt, mounts its root filesystem and starts its shim.
pub fn launch(ctx: &NodeContext, p: &Prepared) -> Result<RunningContainer, ClientError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Io { what, path, source }
    };
    std::fs::create_dir_all(&p.paths.dir).map_err(io("creating", &p.paths.dir))?;
    runtime::shim::write_json_atomic(&p.paths.dir.join(ATTEMPT_RECORD), &p.record)?;
    std::fs::write(p.paths.termination_log(), b"")
        .map_err(io("creating", &p.paths.termination_log()))?;
    if let Some(dir) = p.log_path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    runtime::sandbox::overlay::mount(
        &p.lowerdir,
        &p.paths.rootfs_upper(),
        &p.paths.rootfs_work(),
        &p.paths.rootfs_merged(),
    )
    .map_err(|e| ClientError::Io {
        what: "mounting the root filesystem at",
        path: p.paths.rootfs_merged(),
        source: std::io::Error::other(e.to_string()),
    })?;
    prune_old_logs(&p.log_path);
    let merged = p.paths.rootfs_merged();
    let passwd = read_in_rootfs(&merged, "passwd");
    let group = read_in_rootfs(&merged, "group");
    let mut config = p.config.clone();
    config.user = super::command::resolve_user(&p.user, passwd.as_deref(), group.as_deref())
        .map_err(|e| ClientError::StartFailed {
            id: config.id.clone(),
            kind: runtime::shim::StartErrorKind::InvalidConfig,
            message: e.to_string(),
        })?;
    // Other pods' mounts stay out of libcontainer's sight: it reads and copies the mount
    // table several times per container, which otherwise grows with every pod.
    // A hostPath volume reaching into the pods' directories sees them as they are.
    let pods_root = ctx.layout.pods_root();
    let reaches_other_pods = config.mounts.iter().any(|m| {
        pods_root.starts_with(&m.source)
            || (m.source.starts_with(&pods_root) && !m.source.starts_with(&p.pod_dir))
    });
    let hidden = (!reaches_other_pods).then(|| runtime::shim::HiddenMounts {
        under: pods_root,
        keep: p.pod_dir.clone(),
    });
    ctx.shims
        .start_hiding(&config, &p.paths.shim_state(), &p.log_path, hidden.as_ref())
}

/// What a user sees when a container cannot start: for the common cases the wording of
/// containerd/runc's errors, without their layers of wrapping.
pub fn start_error_message(c: &Container, e: &ClientError) -> String {
    use runtime::shim::StartErrorKind;
    let exe = || {
        c.command
            .iter()
            .chain(c.args.iter())
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    };
    match e {
        ClientError::StartFailed {
            kind: StartErrorKind::ExecutableNotFound,
            ..
        } => format!(
            "failed to start container {:?}: exec: {:?}: executable file not found in $PATH",
            c.name,
            exe()
        ),
        ClientError::StartFailed {
            kind: StartErrorKind::PermissionDenied,
            ..
        } => format!(
            "failed to start container {:?}: exec: {:?}: permission denied",
            c.name,
            exe()
        ),
        ClientError::StartFailed { message, .. } => {
            format!("failed to start container {:?}: {message}", c.name)
        }
        other => format!("failed to start container {:?}: {other}", c.name),
    }
}

/// `<rootfs>/etc/<name>` if it is a regular file reached without following a symlink (a
/// link in the image must never make the agent read a file of the host).
fn read_in_rootfs(rootfs: &Path, name: &str) -> Option<String> {
    let etc = rootfs.join("etc");
    let file = etc.join(name);
    let plain = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
    if !plain(&etc) || !plain(&file) {
        return None;
    }
    std::fs::read_to_string(file).ok()
}

/// Keeps the current and the previous log of a container (what `kubectl logs` and
/// `--previous` read); older attempts' logs are removed, as kubelet removes dead containers.
fn prune_old_logs(current: &Path) {
    let Some(dir) = current.parent() else { return };
    let number = |p: &Path| -> Option<u32> { p.file_stem()?.to_str()?.parse().ok() };
    let Some(now) = number(current) else { return };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if number(&e.path()).is_some_and(|n| n + 1 < now) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The signal that stops an attempt: its image's STOPSIGNAL, else SIGTERM.
pub fn stop_signal(attempt_dir: &Path) -> Signal {
    let record: Option<AttemptRecord> = runtime::shim::read_json(&attempt_dir.join(ATTEMPT_RECORD))
        .ok()
        .flatten();
    record
        .and_then(|r| r.stop_signal)
        .and_then(|s| parse_signal(&s))
        .unwrap_or(Signal::SIGTERM)
}

/// `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).ok()
}

/// The ConfigMaps and Secrets the container's environment names (missing ones absent).
async fn referenced_objects(
    ctx: &NodeContext,
    namespace: &str,
    c: &Container,
) -> Result<(BTreeMap<String, ConfigMap>, BTreeMap<String, Secret>), StartError> {
    let mut cm_names = Vec::new();
    let mut secret_names = Vec::new();
    for e in c.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                cm_names.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secret_names.push(r.name.clone());
            }
        }
    }
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            cm_names.push(r.name.clone());
        }
        if let Some(r) = &e.secret_ref {
            secret_names.push(r.name.clone());
        }
    }
    let mut found_cms = BTreeMap::new();
    for name in cm_names {
        if found_cms.contains_key(&name) {
            continue;
        }
        match ctx.config_maps.get(namespace, &name).await {
            Ok(Some(o)) => {
                found_cms.insert(name, o);
            }
            Ok(None) => {}
            Err(e) => return Err(api_error(e)),
        }
    }
    let mut found_secrets = BTreeMap::new();
    for name in secret_names {
        if found_secrets.contains_key(&name) {
            continue;
        }
        match ctx.secrets.get(namespace, &name).await {
            Ok(Some(o)) => {
                found_secrets.insert(name, o);
            }
            Ok(None) => {}
            Err(e) => return Err(api_error(e)),
        }
    }
    Ok((found_cms, found_secrets))
}

fn api_error(e: kube::Error) -> StartError {
    StartError::Config {
        reason: "CreateContainerConfigError",
        message: e.to_string(),
    }
}

/// Registry credentials from the pod's imagePullSecrets (`kubernetes.io/dockerconfigjson`
/// or `.dockercfg`) for the image's registry; anonymous when none match.
pub async fn pull_credentials(ctx: &NodeContext, pod: &Pod, image: &str) -> Credentials {
    let Ok(reference) = runtime::images::Reference::parse(image) else {
        return Credentials::Anonymous;
    };
    let registry = reference.registry().to_string();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in names {
        let Ok(Some(secret)) = ctx.secrets.get(namespace, &r.name).await else {
            continue;
        };
        if let Some(c) = docker_config_credentials(&secret, &registry) {
            return c;
        }
    }
    Credentials::Anonymous
}

/// Finds `registry`'s entry in a docker config secret.
pub fn docker_config_credentials(secret: &Secret, registry: &str) -> Option<Credentials> {
    let data = secret.data.as_ref()?;
    let (json, nested) = if let Some(v) = data.get(".dockerconfigjson") {
        (v, true)
    } else {
        (data.get(".dockercfg")?, false)
    };
    let value: serde_json::Value = serde_json::from_slice(&json.0).ok()?;
    let auths = if nested { value.get("auths")? } else { &value };
    let hosts = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        if registry == "docker.io" {
            "https://index.docker.io/v1/".to_string()
        } else {
            format!("https://{registry}/v1/")
        },
    ];
    let entry = hosts.iter().find_map(|h| auths.get(h))?;
    if let (Some(u), Some(p)) = (
        entry.get("username").and_then(|v| v.as_str()),
        entry.get("password").and_then(|v| v.as_str()),
    ) {
        return Some(Credentials::Basic {
            username: u.into(),
            password: p.into(),
        });
    }
    use base64::Engine;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials::Basic {
        username: u.into(),
        password: p.into(),
    })
}
