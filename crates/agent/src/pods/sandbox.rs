//! A pod's sandbox: its directory, its network namespace (made here, not by a pause
//! container: DESIGN.md §4) attached to the node's pod network (an address, `eth0`, its
//! host ports), and the files every container of the pod mounts (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`), as kubelet writes them. Teardown releases all of
//! it and leaves no mount, namespace, interface, address or cgroup behind.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use runtime::sandbox::{cgroups, mounts, netns};
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::network::{NetworkError, NodeNetwork};

/// Written last when the sandbox is complete: its presence is what "ready" means.
const READY_MARKER: &str = "sandbox.json";
/// The pod's address on the pod network (absent for hostNetwork pods).
const POD_IP_FILE: &str = "pod-ip";
/// Where every pod's cgroups live, under each hierarchy (upstream: `/kubepods`).
pub const CGROUP_ROOT: &str = "/skiff/kubepods";

/// Held while a pod's network namespace is made and attached, so pods do that one at a
/// time. Both take the kernel's RTNL lock over and over; pods doing it in parallel spin on
/// that lock, and the `disable_ipv6` sysctl write does not wait for it at all but restarts
/// until it is free (a busy loop in the kernel). In a burst of 100 pod starts the two were
/// ~3% of the node's CPU (BENCHMARKS.md, session 17); one at a time, nobody waits long.
static NETWORK_SET_UP: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] runtime::sandbox::SandboxError),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// What identifies the pod on disk, for cleanup when the API no longer has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub host_network: bool,
    /// The pod's cgroup (parent of its containers'), relative to each hierarchy.
    pub cgroup_parent: String,
}

impl PodRecord {
    pub fn of(pod: &Pod, qos: &str) -> PodRecord {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let qos_dir = match qos {
            "Guaranteed" => String::new(),
            other => format!("/{}", other.to_lowercase()),
        };
        PodRecord {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            cgroup_parent: format!("{CGROUP_ROOT}{qos_dir}/pod{uid}"),
            uid,
            host_network: pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
        }
    }
}

pub fn read_record(layout: &Layout, uid: &str) -> Option<PodRecord> {
    runtime::shim::read_json(&layout.pod_record(uid))
        .ok()
        .flatten()
}

pub fn is_ready(layout: &Layout, uid: &str) -> bool {
    layout.pod_dir(uid).join(READY_MARKER).exists()
}

/// The pod's address on the pod network, once its sandbox has one.
pub fn pod_ip(layout: &Layout, uid: &str) -> Option<String> {
    let text = std::fs::read_to_string(layout.pod_dir(uid).join(POD_IP_FILE)).ok()?;
    let ip = text.trim();
    (!ip.is_empty()).then(|| ip.to_string())
}

/// The hostname a pod's containers see: `spec.hostname`, else the pod name (at most 63
/// characters, as kubelet truncates it).
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

/// Kubelet's managed `/etc/hosts`.
pub fn hosts_file(pod: &Pod, pod_ip: Option<&str>) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.as_ref();
    if let Some(ip) = pod_ip {
        let host = hostname(pod);
        match (
            spec.and_then(|s| s.subdomain.as_deref()),
            pod.metadata.namespace.as_deref(),
        ) {
            (Some(sub), Some(ns)) if !sub.is_empty() => text.push_str(&format!(
                "{ip}\t{host}.{sub}.{ns}.svc.cluster.local\t{host}\n"
            )),
            _ => text.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    if let Some(aliases) = spec.and_then(|s| s.host_aliases.as_ref()) {
        if !aliases.is_empty() {
            text.push_str("\n# Entries added by HostAliases.\n");
            for a in aliases {
                let names = a.hostnames.clone().unwrap_or_default().join("\t");
                text.push_str(&format!("{}\t{names}\n", a.ip));
            }
        }
    }
    text
}

fn write(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text).map_err(|source| SandboxError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    })
}

/// Makes the pod's sandbox (idempotent: a half-made one is completed, keeping the address
/// it was given). Blocking.
pub fn create(
    layout: &Layout,
    pod: &Pod,
    record: &PodRecord,
    network: &NodeNetwork,
    resolv_conf: &str,
) -> Result<(), SandboxError> {
    let dir = layout.pod_dir(&record.uid);
    std::fs::create_dir_all(dir.join("containers")).map_err(|source| SandboxError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    runtime::shim::write_json_replace(&layout.pod_record(&record.uid), record).map_err(|e| {
        SandboxError::Io {
            what: "writing",
            path: layout.pod_record(&record.uid),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let pod_ip = if record.host_network {
        None
    } else {
        let ip = {
            let _one_at_a_time = NETWORK_SET_UP.lock().unwrap_or_else(|e| e.into_inner());
            if !netns::is_netns(&layout.netns(&record.uid)) {
                netns::create(&layout.netns(&record.uid))?;
            }
            network.attach(&record.uid, &layout.netns(&record.uid))?
        };
        network.map_host_ports(pod, &record.uid, ip)?;
        write(&dir.join(POD_IP_FILE), &format!("{ip}\n"))?;
        Some(ip.to_string())
    };
    write(&dir.join("etc-hosts"), &hosts_file(pod, pod_ip.as_deref()))?;
    write(&dir.join("etc-hostname"), &format!("{}\n", hostname(pod)))?;
    write(&dir.join("resolv.conf"), resolv_conf)?;
    write(&dir.join(READY_MARKER), "{}\n")
}

/// Releases what a pod holds while nothing of it runs: its host ports, interface and
/// address (when `network` is given; `skiff killall` removes the whole pod network
/// afterwards instead), root filesystems and other mounts, the network namespace, the
/// pod's cgroups. Files (logs, records) stay. Blocking.
pub fn teardown(
    layout: &Layout,
    record: &PodRecord,
    network: Option<&NodeNetwork>,
) -> Result<(), SandboxError> {
    let dir = layout.pod_dir(&record.uid);
    let _ = std::fs::remove_file(dir.join(READY_MARKER));
    if let Some(network) = network {
        network.detach(&record.uid)?;
    }
    let _ = std::fs::remove_file(dir.join(POD_IP_FILE));
    netns::remove(&layout.netns(&record.uid))?;
    mounts::unmount_all_under(&dir)?;
    cgroups::remove(Path::new(&record.cgroup_parent))?;
    Ok(())
}

/// Removes every trace of a pod: teardown, then its directory and its logs.
pub fn remove(
    layout: &Layout,
    record: &PodRecord,
    network: Option<&NodeNetwork>,
) -> Result<(), SandboxError> {
    teardown(layout, record, network)?;
    mounts::remove_dir_safely(&layout.pod_dir(&record.uid))?;
    let logs = layout.pod_logs_dir(&record.namespace, &record.name, &record.uid);
    match std::fs::remove_dir_all(&logs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SandboxError::Io {
            what: "removing",
            path: logs,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hosts_file_is_kubelets() {
        let p = pod(json!({"metadata": {"name": "web-0", "namespace": "ns"},
            "spec": {"containers": [], "subdomain": "web",
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo", "bar"]}]}}));
        let text = hosts_file(&p, Some("10.42.0.5"));
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.42.0.5\tweb-0.web.ns.svc.cluster.local\tweb-0\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo\tbar\n"));
    }

    #[test]
    fn cgroup_parent_follows_qos() {
        let p = pod(
            json!({"metadata": {"name": "a", "namespace": "n", "uid": "u1"},
            "spec": {"containers": []}}),
        );
        assert_eq!(
            PodRecord::of(&p, "Burstable").cgroup_parent,
            "/skiff/kubepods/burstable/podu1"
        );
        assert_eq!(
            PodRecord::of(&p, "Guaranteed").cgroup_parent,
            "/skiff/kubepods/podu1"
        );
    }
}
