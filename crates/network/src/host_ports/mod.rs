//! Host ports: a pod's `containerPort` with a `hostPort` answers at the node's addresses,
//! what CNI's portmap plugin does for kubelet upstream. One nftables table per node,
//! `ip <bridge>-hostports`, DNATs each mapped protocol and port to the pod's address
//! ([`plan`] decides it, purely). hostNetwork pods need nothing: they bind the port.
//!
//! The node's mappings (pod uid → pod address and ports) are kept in
//! `<state-dir>/host-ports/<bridge>.json`, written (atomically) before the table is
//! replaced, so the file is always at least as new as the rules. Every change replaces the
//! whole table in one `nft -f -` transaction (a node has few host ports: each is unique on
//! it), so the table never holds a half-applied change; a failed apply is retried with the
//! next change. At agent start [`HostPorts::restore`] drops the pods no longer on disk and
//! rebuilds the table from the rest: stale rules (a pod removed while the agent was down,
//! a table removed from outside) never outlive a restart. `skiff killall` calls
//! [`remove`].
//!
//! Conntrack entries of connections made before a mapping changed are not flushed (there
//! is no conntrack tool on the node): an established flow, or a UDP client that keeps its
//! source port, keeps its old translation until it expires.

pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use plan::{PodPorts, PortMapping, Protocol};

/// The folder under the pod network's state directory.
const STATE_DIR: &str = "host-ports";

#[derive(Debug, thiserror::Error)]
pub enum HostPortsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: nft: {message}")]
    Nft { what: String, message: String },
    /// Another pod on this node holds the port (only a pod bound past the scheduler).
    #[error("{0}")]
    Clash(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostPortsError {
    let what = what.into();
    move |source| HostPortsError::Io { what, source }
}

/// One node's host port mappings. Blocking: call it from blocking threads.
#[derive(Debug)]
pub struct HostPorts {
    table: String,
    state_file: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Whether `pods` was read from the state file yet.
    loaded: bool,
    pods: BTreeMap<String, PodPorts>,
    /// The last apply failed: the table may differ from `pods`.
    dirty: bool,
}

impl HostPorts {
    /// The mappings of the pods on bridge `bridge`, kept under `state_dir` (the pod
    /// network's, `<data-dir>/agent/network`). Nothing is read or applied yet.
    pub fn new(bridge: &str, state_dir: &Path) -> HostPorts {
        HostPorts {
            table: plan::table_name(bridge),
            state_file: state_dir.join(STATE_DIR).join(format!("{bridge}.json")),
            state: Mutex::new(State::default()),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// At agent start: forgets the pods for which `alive` is false and rebuilds the table
    /// from the others (removing it when none is left). Returns the forgotten pods.
    pub fn restore(&self, alive: impl Fn(&str) -> bool) -> Result<Vec<PodPorts>, HostPortsError> {
        let mut state = self.lock();
        if !state.loaded {
            state.pods = match self.load() {
                Ok(pods) => pods,
                Err(e) => {
                    // Unreadable: the pods' mappings are lost until they are re-created,
                    // but no stale rule stays.
                    tracing::warn!("host ports: {e}; starting without mappings");
                    BTreeMap::new()
                }
            };
            state.loaded = true;
        }
        let gone: Vec<String> = state
            .pods
            .keys()
            .filter(|uid| !alive(uid))
            .cloned()
            .collect();
        let forgotten: Vec<PodPorts> = gone
            .iter()
            .filter_map(|uid| state.pods.remove(uid))
            .collect();
        if !forgotten.is_empty() {
            self.save(&state.pods)?;
        }
        self.apply(&mut state)?;
        Ok(forgotten)
    }

    /// Publishes `ports` for pod `uid` (replacing what it had); idempotent. Refused when
    /// another pod holds one of the ports.
    pub fn map(&self, uid: &str, ports: PodPorts) -> Result<(), HostPortsError> {
        if ports.ports.is_empty() {
            return self.unmap(uid);
        }
        let mut state = self.loaded()?;
        if let Some(message) = plan::clash(&state.pods, uid, &ports.ports) {
            return Err(HostPortsError::Clash(message));
        }
        if !state.dirty && state.pods.get(uid) == Some(&ports) {
            return Ok(());
        }
        state.pods.insert(uid.to_string(), ports);
        self.save(&state.pods)?;
        self.apply(&mut state)
    }

    /// Removes pod `uid`'s mappings; Ok (and nothing run) when it has none.
    pub fn unmap(&self, uid: &str) -> Result<(), HostPortsError> {
        let mut state = self.loaded()?;
        if state.pods.remove(uid).is_none() && !state.dirty {
            return Ok(());
        }
        self.save(&state.pods)?;
        self.apply(&mut state)
    }

    /// The current mappings by pod uid.
    pub fn mappings(&self) -> Result<BTreeMap<String, PodPorts>, HostPortsError> {
        Ok(self.loaded()?.pods.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn loaded(&self) -> Result<MutexGuard<'_, State>, HostPortsError> {
        let mut state = self.lock();
        if !state.loaded {
            state.pods = self.load()?;
            state.loaded = true;
        }
        Ok(state)
    }

    fn load(&self) -> Result<BTreeMap<String, PodPorts>, HostPortsError> {
        let path = &self.state_file;
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| HostPortsError::Io {
                what: format!("reading {}", path.display()),
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(HostPortsError::Io {
                what: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    /// Writes the mappings (a temporary file renamed over the old one, so a crash leaves
    /// either version whole); no file when there are none.
    fn save(&self, pods: &BTreeMap<String, PodPorts>) -> Result<(), HostPortsError> {
        let path = &self.state_file;
        if pods.is_empty() {
            return match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(HostPortsError::Io {
                    what: format!("removing {}", path.display()),
                    source,
                }),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(pods).map_err(|e| HostPortsError::Io {
            what: format!("encoding {}", path.display()),
            source: std::io::Error::other(e),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    }

    fn apply(&self, state: &mut State) -> Result<(), HostPortsError> {
        state.dirty = true;
        nft(
            &plan::nft_script(&self.table, &state.pods),
            &format!("programming nftables table ip {}", self.table),
        )?;
        state.dirty = false;
        Ok(())
    }
}

/// Removes every host-port table recorded under `state_dir` and the records: `skiff
/// killall`, once every pod is gone. Ok when nothing was recorded.
pub fn remove(state_dir: &Path) -> Result<(), HostPortsError> {
    let dir = state_dir.join(STATE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(HostPortsError::Io {
                what: format!("reading {}", dir.display()),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some(bridge) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        {
            let table = plan::table_name(bridge);
            nft(
                &plan::nft_script(&table, &BTreeMap::new()),
                &format!("deleting nftables table ip {table}"),
            )?;
        }
        std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

/// Runs an nftables script in one transaction (`nft -f -`), as the pod network does.
fn nft(script: &str, what: &str) -> Result<(), HostPortsError> {
    use crate::pod_network::PodNetworkError;
    crate::pod_network::apply::nft(script, what).map_err(|e| match e {
        PodNetworkError::Io { what, source } => HostPortsError::Io { what, source },
        PodNetworkError::Nft { what, message } => HostPortsError::Nft { what, message },
        other => HostPortsError::Nft {
            what: what.to_string(),
            message: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn web(name: &str, ip: [u8; 4], port: u16) -> PodPorts {
        PodPorts {
            namespace: "default".into(),
            name: name.into(),
            pod_ip: Ipv4Addr::from(ip),
            ports: vec![PortMapping {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: port,
                container_port: 8080,
            }],
        }
    }

    fn root_with_nft() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Path::new(crate::pod_network::apply::nft_binary()).exists()
    }

    fn listed(table: &str) -> String {
        let out = std::process::Command::new(crate::pod_network::apply::nft_binary())
            .args(["list", "table", "ip", table])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Map, restart (a new `HostPorts` on the same files), restore without a pod that
    /// left meanwhile, unmap, remove: the table follows, and nothing is left. Needs root
    /// and nft(8); skipped otherwise. The ports are mapped on no address in use.
    #[test]
    fn mappings_survive_a_restart_and_leave_nothing() {
        if !root_with_nft() {
            eprintln!("skipped: needs root and nft");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let bridge = format!("hpu{}", std::process::id() % 100_000);
        let ports = HostPorts::new(&bridge, dir.path());
        let table = ports.table().to_string();
        let guard = scopeguard(&table);

        ports.map("u1", web("a", [10, 99, 0, 5], 29901)).unwrap();
        ports.map("u2", web("b", [10, 99, 0, 6], 29902)).unwrap();
        ports.map("u2", web("b", [10, 99, 0, 6], 29902)).unwrap();
        let err = ports
            .map("u3", web("c", [10, 99, 0, 7], 29901))
            .unwrap_err();
        assert!(matches!(err, HostPortsError::Clash(_)), "{err}");
        let text = listed(&table);
        assert!(
            text.contains("dport 29901") && text.contains("dnat to 10.99.0.5:8080"),
            "{text}"
        );
        assert!(text.contains("dport 29902"), "{text}");
        assert!(!text.contains("10.99.0.7"), "{text}");

        // Pod u1 went while the agent was down; someone removed the table as well.
        drop(ports);
        nft(&plan::nft_script(&table, &BTreeMap::new()), "test").unwrap();
        let ports = HostPorts::new(&bridge, dir.path());
        let forgotten = ports.restore(|uid| uid == "u2").unwrap();
        assert_eq!(forgotten, vec![web("a", [10, 99, 0, 5], 29901)]);
        let text = listed(&table);
        assert!(!text.contains("dport 29901"), "{text}");
        assert!(text.contains("dport 29902"), "{text}");
        assert_eq!(ports.mappings().unwrap().keys().collect::<Vec<_>>(), ["u2"]);

        // The last pod gone: no table, no file.
        ports.unmap("u2").unwrap();
        ports.unmap("u2").unwrap();
        assert_eq!(listed(&table), "");
        assert!(!dir
            .path()
            .join(STATE_DIR)
            .join(format!("{bridge}.json"))
            .exists());

        // killall removes a table that is still there.
        ports.map("u4", web("d", [10, 99, 0, 8], 29904)).unwrap();
        remove(dir.path()).unwrap();
        assert_eq!(listed(&table), "");
        assert!(!dir.path().join(STATE_DIR).exists());
        drop(guard);
    }

    /// Deletes the table even when an assertion failed.
    fn scopeguard(table: &str) -> impl Drop + '_ {
        struct Guard<'a>(&'a str);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                let _ = nft(&plan::nft_script(self.0, &BTreeMap::new()), "cleanup");
            }
        }
        Guard(table)
    }

    #[test]
    fn nothing_to_remove_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        remove(dir.path()).unwrap();
        let ports = HostPorts::new("skiff0", dir.path());
        // An unknown pod needs no nft at all.
        ports.unmap("nobody").unwrap();
        assert!(ports.mappings().unwrap().is_empty());
    }
}
