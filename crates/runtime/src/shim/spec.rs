//! What to run: the typed [`ContainerConfig`] the agent hands to a shim, its validation, and
//! the pure translation into an OCI runtime `Spec` with containerd's defaults (capabilities,
//! masked and read-only `/proc` paths, the standard mounts, namespaces, device allowlist).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

/// PATH given to a container whose environment has none (containerd's default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities containerd (and so kubelet) grants a container by default.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths masked inside the container (containerd's and kubelet's defaults).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only inside the container (containerd's and kubelet's defaults).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the shim needs to know to run one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Container id: letters, digits, `_ + - .` (libcontainer's rule); unique on the node.
    pub id: String,
    /// Absolute path of the prepared root filesystem.
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// The command line; `args[0]` is looked up in the container's PATH.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries. A default PATH is added when none is given.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (default `/`).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Hostname inside the container's own UTS namespace.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Existing namespaces to join (the pod's network namespace in particular).
    #[serde(default)]
    pub namespaces: NamespacePaths,
    /// cgroup path, absolute, relative to each hierarchy's mount point (always set: the
    /// shim never lets libcontainer pick one).
    pub cgroups_path: PathBuf,
    #[serde(default)]
    pub resources: Resources,
    /// Extra bind mounts (volumes, /etc/hosts, resolv.conf ...).
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    #[serde(default)]
    pub user: UserIds,
    /// oom_score_adj of the container's processes (kubelet sets it by QoS class).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// The container's stdin and terminal (the pod spec's `stdin`, `stdinOnce`, `tty`).
    #[serde(default)]
    pub stdio: StdioConfig,
}

/// How the container's stdio is set up. Default: stdin is /dev/null, stdout and stderr are
/// pipes the shim copies into the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioConfig {
    /// Keep stdin open: a pipe the shim holds, written by attach clients.
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin once the first attach session that sent input has ended.
    #[serde(default)]
    pub stdin_once: bool,
    /// Give the container a terminal (stdout and stderr both come from it).
    #[serde(default)]
    pub tty: bool,
}

/// Paths (e.g. `/proc/<pid>/ns/net` or a bind-mounted `/run/netns/<name>`) of namespaces
/// to join instead of creating new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePaths {
    #[serde(default)]
    pub network: Option<PathBuf>,
    #[serde(default)]
    pub ipc: Option<PathBuf>,
    #[serde(default)]
    pub uts: Option<PathBuf>,
    #[serde(default)]
    pub pid: Option<PathBuf>,
    /// No network namespace of its own: the container uses the shim's, which is the
    /// node's (hostNetwork pods). Joining `/proc/1/ns/net` instead would be wrong where the
    /// agent itself runs in another namespace than PID 1 (and libcontainer's exec fails).
    #[serde(default)]
    pub host_network: bool,
}

/// cgroup limits, in the units the OCI spec uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`.
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[serde(default)]
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    #[serde(default)]
    pub memory_limit: Option<i64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(default)]
    pub readonly: bool,
}

/// The identity the container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIds {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A configuration the shim refuses, naming the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("container id {id:?} is invalid: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("container {id}: {field} {path:?} must be an absolute path")]
    NotAbsolute {
        id: String,
        field: &'static str,
        path: PathBuf,
    },
    #[error("container {id}: {field} is invalid: {reason}")]
    Invalid {
        id: String,
        field: &'static str,
        reason: String,
    },
    #[error("container {id}: building the OCI spec: {message}")]
    Build { id: String, message: String },
}

/// The container id rule of libcontainer, checked up front so a bad id fails before any
/// process is started.
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let bad = |reason| {
        Err(SpecError::InvalidId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id == "." || id == ".." {
        return bad("not a file name");
    }
    if id.len() > 128 {
        return bad("longer than 128 characters");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

impl ContainerConfig {
    /// Checks everything the OCI translation relies on; says which field is wrong.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_id(&self.id)?;
        let id = &self.id;
        let absolute = |field: &'static str, path: &Path| {
            if path.is_absolute() {
                Ok(())
            } else {
                Err(SpecError::NotAbsolute {
                    id: id.clone(),
                    field,
                    path: path.to_owned(),
                })
            }
        };
        let invalid = |field: &'static str, reason: String| SpecError::Invalid {
            id: id.clone(),
            field,
            reason,
        };
        absolute("rootfs", &self.rootfs)?;
        absolute("cgroupsPath", &self.cgroups_path)?;
        if self.cgroups_path == Path::new("/") {
            return Err(invalid("cgroupsPath", "must not be the root cgroup".into()));
        }
        if let Some(dir) = &self.working_dir {
            absolute("workingDir", dir)?;
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(invalid("args", "no command given".into()));
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(invalid("env", format!("{bad:?} is not KEY=VALUE")));
        }
        for path in [
            &self.namespaces.network,
            &self.namespaces.ipc,
            &self.namespaces.uts,
            &self.namespaces.pid,
        ]
        .into_iter()
        .flatten()
        {
            absolute("namespace path", path)?;
        }
        if let Some(hostname) = &self.hostname {
            if self.namespaces.uts.is_some() {
                return Err(invalid(
                    "hostname",
                    "cannot be set when joining an existing UTS namespace".into(),
                ));
            }
            let valid = !hostname.is_empty()
                && hostname.len() <= 64
                && hostname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(invalid(
                    "hostname",
                    format!("{hostname:?} is not a hostname"),
                ));
            }
        }
        for mount in &self.mounts {
            absolute("mount source", &mount.source)?;
            absolute("mount destination", &mount.destination)?;
        }
        let r = &self.resources;
        if matches!(r.memory_limit, Some(m) if m <= 0) {
            return Err(invalid("memoryLimit", "must be positive".into()));
        }
        if matches!(r.pids_limit, Some(p) if p == 0 || p < -1) {
            return Err(invalid("pidsLimit", "must be positive or -1".into()));
        }
        if matches!(r.cpu_quota, Some(q) if q == 0 || q < -1) {
            return Err(invalid("cpuQuota", "must be positive or -1".into()));
        }
        if matches!(r.cpu_period, Some(p) if !(1000..=1_000_000).contains(&p)) {
            return Err(invalid(
                "cpuPeriod",
                "must be between 1000 and 1000000 microseconds".into(),
            ));
        }
        if matches!(r.cpu_shares, Some(s) if s < 2) {
            return Err(invalid("cpuShares", "must be at least 2".into()));
        }
        Ok(())
    }

    /// The OCI runtime spec for this container. Pure: the same config gives the same spec.
    pub fn to_spec(&self) -> Result<Spec, SpecError> {
        self.validate()?;
        let id = self.id.clone();
        let build = |e: oci_spec::OciSpecError| SpecError::Build {
            id: id.clone(),
            message: e.to_string(),
        };

        let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        let capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            // Empty inheritable and ambient sets, as containerd since CVE-2022-24769.
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build()
            .map_err(build)?;

        let mut env = self.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH_ENV.to_owned());
        }
        // containerd gives every terminal container TERM=xterm unless it sets its own.
        if self.stdio.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".to_owned());
        }

        let user = UserBuilder::default()
            .uid(self.user.uid)
            .gid(self.user.gid)
            .additional_gids(self.user.additional_gids.clone())
            .build()
            .map_err(build)?;

        let mut process = ProcessBuilder::default()
            .terminal(self.stdio.tty)
            .user(user)
            .args(self.args.clone())
            .env(env)
            .cwd(
                self.working_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/")),
            )
            .capabilities(capabilities)
            .no_new_privileges(false);
        if let Some(adj) = self.oom_score_adj {
            process = process.oom_score_adj(adj);
        }
        let process = process.build().map_err(build)?;

        let root = RootBuilder::default()
            .path(self.rootfs.clone())
            .readonly(self.readonly_rootfs)
            .build()
            .map_err(build)?;

        let mut mounts = default_mounts().map_err(build)?;
        for m in &self.mounts {
            let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
            if m.readonly {
                options.push("ro".to_owned());
            }
            mounts.push(mount(&m.destination, "bind", &m.source, &options).map_err(build)?);
        }

        let linux = LinuxBuilder::default()
            .namespaces(namespaces(&self.namespaces).map_err(build)?)
            .cgroups_path(self.cgroups_path.clone())
            .resources(resources(&self.resources).map_err(build)?)
            .masked_paths(DEFAULT_MASKED_PATHS.map(String::from).to_vec())
            .readonly_paths(DEFAULT_READONLY_PATHS.map(String::from).to_vec())
            .build()
            .map_err(build)?;

        let mut spec = SpecBuilder::default()
            .version("1.0.2")
            .root(root)
            .process(process)
            .mounts(mounts)
            .linux(linux);
        if let Some(hostname) = &self.hostname {
            spec = spec.hostname(hostname.clone());
        }
        spec.build().map_err(build)
    }
}

fn mount(
    destination: &Path,
    typ: &str,
    source: &Path,
    options: &[String],
) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.to_vec())
        .build()
}

/// /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys, with containerd's
/// options.
fn default_mounts() -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let table: [(&str, &str, &str, &[&str]); 6] = [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ];
    table
        .iter()
        .map(|(dest, typ, source, options)| {
            let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
            mount(Path::new(dest), typ, Path::new(source), &options)
        })
        .collect()
}

/// New pid, mount, uts, ipc and network namespaces, except those given as paths to join.
fn namespaces(paths: &NamespacePaths) -> Result<Vec<LinuxNamespace>, oci_spec::OciSpecError> {
    [
        (LinuxNamespaceType::Pid, &paths.pid),
        (LinuxNamespaceType::Ipc, &paths.ipc),
        (LinuxNamespaceType::Uts, &paths.uts),
        (LinuxNamespaceType::Mount, &None),
        (LinuxNamespaceType::Network, &paths.network),
    ]
    .into_iter()
    .filter(|(typ, _)| !(paths.host_network && *typ == LinuxNamespaceType::Network))
    .map(|(typ, path)| {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(path) => builder.path(path.clone()).build(),
            None => builder.build(),
        }
    })
    .collect()
}

fn resources(r: &Resources) -> Result<oci_spec::runtime::LinuxResources, oci_spec::OciSpecError> {
    // Deny every device, then libcontainer adds the default allowlist (null, zero, full,
    // random, urandom, tty, ptmx, pts), as containerd does.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut builder = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = r.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(quota) = r.cpu_quota {
            cpu = cpu.quota(quota);
        }
        if let Some(period) = r.cpu_period {
            cpu = cpu.period(period);
        }
        builder = builder.cpu(cpu.build()?);
    }
    if let Some(limit) = r.memory_limit {
        builder = builder.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(limit) = r.pids_limit {
        builder = builder.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            rootfs: "/var/lib/skiff/rootfs/c1".into(),
            readonly_rootfs: false,
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            working_dir: None,
            hostname: Some("pod-a".into()),
            namespaces: NamespacePaths::default(),
            cgroups_path: "/skiff/pod1/c1".into(),
            resources: Resources::default(),
            mounts: vec![],
            user: UserIds::default(),
            oom_score_adj: None,
            stdio: StdioConfig::default(),
        }
    }

    fn ns(spec: &Spec, typ: LinuxNamespaceType) -> Option<LinuxNamespace> {
        let linux = spec.linux().as_ref()?;
        linux
            .namespaces()
            .as_ref()?
            .iter()
            .find(|n| n.typ() == typ)
            .cloned()
    }

    #[test]
    fn invalid_configs_name_the_field() {
        type Edit = fn(&mut ContainerConfig);
        let cases: &[(&str, Edit, &str)] = &[
            ("empty id", |c| c.id.clear(), "empty"),
            ("slash in id", |c| c.id = "a/b".into(), "only letters"),
            ("relative rootfs", |c| c.rootfs = "rootfs".into(), "rootfs"),
            (
                "relative cgroup",
                |c| c.cgroups_path = "x".into(),
                "cgroupsPath",
            ),
            (
                "root cgroup",
                |c| c.cgroups_path = "/".into(),
                "root cgroup",
            ),
            ("no args", |c| c.args.clear(), "no command"),
            ("bad env", |c| c.env = vec!["NOEQ".into()], "KEY=VALUE"),
            (
                "relative cwd",
                |c| c.working_dir = Some("tmp".into()),
                "workingDir",
            ),
            (
                "hostname with joined uts",
                |c| c.namespaces.uts = Some("/proc/1/ns/uts".into()),
                "UTS",
            ),
            (
                "bad hostname",
                |c| c.hostname = Some("a b".into()),
                "hostname",
            ),
            (
                "relative netns",
                |c| c.namespaces.network = Some("ns".into()),
                "namespace path",
            ),
            (
                "zero memory",
                |c| c.resources.memory_limit = Some(0),
                "memoryLimit",
            ),
            (
                "zero pids",
                |c| c.resources.pids_limit = Some(0),
                "pidsLimit",
            ),
            (
                "tiny period",
                |c| c.resources.cpu_period = Some(10),
                "cpuPeriod",
            ),
            (
                "relative mount",
                |c| {
                    c.mounts.push(BindMount {
                        source: "/a".into(),
                        destination: "b".into(),
                        readonly: false,
                    })
                },
                "mount destination",
            ),
        ];
        for (name, edit, needle) in cases {
            let mut c = config();
            edit(&mut c);
            let err = c.to_spec().expect_err(name).to_string();
            assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn defaults_match_containerd() {
        let spec = config().to_spec().expect("spec");
        let process = spec.process().as_ref().expect("process");
        let caps = process.capabilities().as_ref().expect("caps");
        let expected: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&expected));
        assert_eq!(caps.effective().as_ref(), Some(&expected));
        assert_eq!(caps.permitted().as_ref(), Some(&expected));
        assert_eq!(caps.inheritable().as_ref(), Some(&Capabilities::new()));
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(process.terminal(), Some(false));

        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.masked_paths().as_deref(),
            Some(&DEFAULT_MASKED_PATHS.map(String::from)[..])
        );
        assert_eq!(
            linux.readonly_paths().as_deref(),
            Some(&DEFAULT_READONLY_PATHS.map(String::from)[..])
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/skiff/pod1/c1"))
        );
        let devices = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .expect("devices");
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));

        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        let sys = &spec.mounts().as_ref().expect("mounts")[5];
        assert!(sys.options().as_ref().expect("opts").contains(&"ro".into()));
        assert_eq!(spec.hostname().as_deref(), Some("pod-a"));
    }

    #[test]
    fn namespaces_are_new_or_joined() {
        // (netns path given, expected network path)
        let cases: [(Option<&str>, Option<&str>); 2] = [
            (None, None),
            (Some("/run/netns/pod1"), Some("/run/netns/pod1")),
        ];
        for (given, expected) in cases {
            let mut c = config();
            c.namespaces.network = given.map(PathBuf::from);
            let spec = c.to_spec().expect("spec");
            let net = ns(&spec, LinuxNamespaceType::Network).expect("net ns");
            assert_eq!(net.path().as_deref(), expected.map(Path::new));
            for typ in [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Ipc,
            ] {
                let n = ns(&spec, typ).expect("namespace present");
                assert_eq!(n.path(), &None, "{typ:?} is new");
            }
            assert!(ns(&spec, LinuxNamespaceType::User).is_none());
            assert!(ns(&spec, LinuxNamespaceType::Cgroup).is_none());
        }
    }

    #[test]
    fn env_gets_a_default_path_only_when_missing() {
        let cases: [(Vec<&str>, Vec<&str>); 3] = [
            (vec![], vec![DEFAULT_PATH_ENV]),
            (vec!["A=1"], vec![DEFAULT_PATH_ENV, "A=1"]),
            (vec!["PATH=/bin", "A=1"], vec!["PATH=/bin", "A=1"]),
        ];
        for (given, expected) in cases {
            let mut c = config();
            c.env = given.iter().map(|s| s.to_string()).collect();
            let spec = c.to_spec().expect("spec");
            let env = spec.process().as_ref().and_then(|p| p.env().clone());
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(env, Some(expected));
        }
    }

    #[test]
    fn resources_user_and_mounts_are_carried() {
        let mut c = config();
        c.resources = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(16 << 20),
            pids_limit: Some(64),
        };
        c.user = UserIds {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![5],
        };
        c.readonly_rootfs = true;
        c.working_dir = Some("/work".into());
        c.oom_score_adj = Some(-997);
        c.mounts.push(BindMount {
            source: "/var/lib/vol".into(),
            destination: "/data".into(),
            readonly: true,
        });
        let spec = c.to_spec().expect("spec");
        let res = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .expect("resources");
        let cpu = res.cpu().clone().expect("cpu");
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(res.memory().and_then(|m| m.limit()), Some(16 << 20));
        assert_eq!(res.pids().map(|p| p.limit()), Some(64));
        let process = spec.process().clone().expect("process");
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 1001));
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[5][..]));
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!(process.oom_score_adj(), Some(-997));
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let data = spec
            .mounts()
            .as_ref()
            .and_then(|m| m.last().cloned())
            .expect("bind mount");
        assert_eq!(data.destination(), Path::new("/data"));
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(
            data.options().as_deref(),
            Some(&["rbind".to_string(), "rprivate".into(), "ro".into()][..])
        );
    }

    #[test]
    fn a_terminal_is_asked_for_and_gets_term() {
        // (tty, env given, terminal expected, TERM expected)
        let cases: [(bool, Vec<&str>, bool, Option<&str>); 3] = [
            (false, vec![], false, None),
            (true, vec![], true, Some("TERM=xterm")),
            (true, vec!["TERM=vt100"], true, Some("TERM=vt100")),
        ];
        for (tty, given, terminal, term) in cases {
            let mut c = config();
            c.stdio.tty = tty;
            c.env = given.iter().map(|s| s.to_string()).collect();
            let spec = c.to_spec().expect("spec");
            let process = spec.process().clone().expect("process");
            assert_eq!(process.terminal(), Some(terminal), "{tty} {given:?}");
            let env = process.env().clone().unwrap_or_default();
            let found = env
                .iter()
                .find(|e| e.starts_with("TERM="))
                .map(String::as_str);
            assert_eq!(found, term, "{tty} {given:?}");
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = config();
        let json = serde_json::to_string(&c).expect("serialize");
        let back: ContainerConfig = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, c);
    }
}
