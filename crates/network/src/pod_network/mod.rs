//! The pod network: what a CNI bridge plugin with host-local IPAM does upstream, built in.
//! Each node has a Linux bridge (default `skiff0`) holding the gateway address of its
//! podCIDR (`10.42.0.1/24`); each pod gets a veth pair, the host end on the bridge with
//! hairpin mode on (a pod can reach itself through a Service), the other end in the pod's
//! network namespace as `eth0` with an address from [`ipam`] and a default route via the
//! gateway. On the host, IPv4 forwarding is on, the whole cluster CIDR is routed locally
//! (a blackhole route: the node's own range is more specific, on the bridge), and the
//! nftables table `<bridge>-pods` (family ip) masquerades pod egress leaving the cluster
//! CIDR and accepts forwarding to and from the bridge.
//!
//! Decisions live in [`plan`] (names, addresses, rules) and [`ipam`]; [`apply`] carries
//! them out with netlink and `nft`. Everything is idempotent: a restarted agent re-uses
//! the bridge, the table and its pods' allocations. The agent leaves it all in place when
//! it stops (its pods keep running); [`remove_host`] (`skiff killall`) removes it.

pub mod apply;
pub mod cidr;
pub mod ipam;
pub mod plan;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use cidr::Ipv4Cidr;
use ipam::{Ipam, IpamError};
use plan::{HostPlan, PodPlan};

/// The default bridge name (`--pod-bridge`).
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// What the host side was made from, under the state directory, for [`remove_host`].
const HOST_RECORD: &str = "host.json";

#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: nft: {message}")]
    Nft { what: String, message: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Cidr(#[from] cidr::CidrError),
}

/// How this node's pod network is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkConfig {
    /// The bridge's name (`--pod-bridge`).
    pub bridge: String,
    /// Every pod address of the cluster (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// Where allocations and the host record are kept (`<data-dir>/agent/network`).
    pub state_dir: PathBuf,
}

/// What [`ensure_host`](PodNetwork::ensure_host) made, kept for [`remove_host`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HostRecord {
    bridge: String,
    cluster_cidr: String,
    node_cidr: String,
}

/// One node's pod network. Blocking: call it from blocking threads.
#[derive(Debug)]
pub struct PodNetwork {
    config: PodNetworkConfig,
    /// The host side as last ensured by this process (made once, re-made if the bridge
    /// disappears).
    host: Mutex<Option<HostPlan>>,
    /// The MTU of the bridge and the pods' interfaces; None: the bridge's own (1500 for a
    /// new one).
    mtu: Option<u32>,
}

impl PodNetwork {
    pub fn new(config: PodNetworkConfig) -> Result<PodNetwork, PodNetworkError> {
        if let Some(problem) = plan::bridge_name_problem(&config.bridge) {
            return Err(PodNetworkError::Conflict { message: problem });
        }
        Ok(PodNetwork {
            config,
            host: Mutex::new(None),
            mtu: None,
        })
    }

    /// Gives the bridge and the pods' interfaces this MTU: a tunnel's, smaller than the
    /// host's links (`--pod-routes vxlan`, as flannel hands its CNI plugin). Pods attached
    /// earlier keep the MTU they were made with.
    pub fn with_mtu(mut self, mtu: Option<u32>) -> PodNetwork {
        self.mtu = mtu;
        self
    }

    pub fn config(&self) -> &PodNetworkConfig {
        &self.config
    }

    /// `<state-dir>/ipam/<bridge>/`: one file per allocated address.
    pub fn ipam_dir(&self) -> PathBuf {
        ipam_dir(&self.config.state_dir, &self.config.bridge)
    }

    fn ipam(&self, node_cidr: Ipv4Cidr) -> Ipam {
        Ipam::new(self.ipam_dir(), node_cidr)
    }

    /// The host side for `node_cidr` (idempotent); returns the bridge's index and MTU.
    pub fn ensure_host(&self, node_cidr: Ipv4Cidr) -> Result<(u32, u32), PodNetworkError> {
        if !self.config.cluster_cidr.covers(&node_cidr) {
            return Err(PodNetworkError::Conflict {
                message: format!(
                    "the node's podCIDR {node_cidr} is not inside the cluster CIDR {} (--cluster-cidr)",
                    self.config.cluster_cidr
                ),
            });
        }
        let plan = HostPlan::new(&self.config.bridge, node_cidr, self.config.cluster_cidr)
            .with_mtu(self.mtu);
        let mut made = self.host.lock().unwrap_or_else(|p| p.into_inner());
        if made.as_ref() == Some(&plan) {
            if let Some(state) = apply::bridge_state(&plan.bridge)? {
                return Ok(state);
            }
        }
        self.write_record(&plan)?;
        let state = apply::ensure_host(&plan)?;
        tracing::info!(
            bridge = %plan.bridge,
            "pod network: {}/{} on {}, {} routed locally, nftables table ip {}",
            plan.gateway,
            node_cidr.prefix(),
            plan.bridge,
            plan.cluster_cidr,
            plan.nft_table()
        );
        *made = Some(plan);
        Ok(state)
    }

    fn write_record(&self, plan: &HostPlan) -> Result<(), PodNetworkError> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| PodNetworkError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let record = HostRecord {
            bridge: plan.bridge.clone(),
            cluster_cidr: plan.cluster_cidr.to_string(),
            node_cidr: plan.node_cidr.to_string(),
        };
        let path = dir.join(HOST_RECORD);
        let text = serde_json::to_string(&record).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| PodNetworkError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }

    /// Gives the pod (its network namespace bound at `netns`) an address from `node_cidr`
    /// and its interface; idempotent (the pod keeps the address it holds).
    pub fn attach(
        &self,
        node_cidr: Ipv4Cidr,
        pod_uid: &str,
        netns: &Path,
    ) -> Result<Ipv4Addr, PodNetworkError> {
        let (bridge_index, mtu) = self.ensure_host(node_cidr)?;
        let address = self.ipam(node_cidr).allocate(pod_uid)?;
        let plan = PodPlan::new(pod_uid, address, node_cidr);
        apply::attach(&plan, netns, bridge_index, mtu)?;
        Ok(address)
    }

    /// Removes the pod's interface and releases its address; Ok when it has neither.
    pub fn detach(&self, pod_uid: &str) -> Result<(), PodNetworkError> {
        apply::detach(&plan::host_veth_name(pod_uid))?;
        // The range does not matter for releasing.
        let any: Ipv4Cidr =
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or(self.config.cluster_cidr);
        Ipam::new(self.ipam_dir(), any).release(pod_uid)?;
        Ok(())
    }

    /// Releases the allocations of pods for which `alive` is false (at agent start: pods
    /// that are no longer on disk).
    pub fn release_leaked(
        &self,
        alive: impl Fn(&str) -> bool,
    ) -> Result<Vec<Ipv4Addr>, PodNetworkError> {
        let any: Ipv4Cidr =
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or(self.config.cluster_cidr);
        Ok(Ipam::new(self.ipam_dir(), any).retain(alive)?)
    }
}

fn ipam_dir(state_dir: &Path, bridge: &str) -> PathBuf {
    state_dir.join("ipam").join(bridge)
}

/// Removes the host side recorded under `state_dir` (bridge and its ports, the nftables
/// table, the blackhole route unless another bridge uses the range) and its allocations:
/// `skiff killall`, once every pod is gone. Ok when nothing was ever made.
pub fn remove_host(state_dir: &Path) -> Result<(), PodNetworkError> {
    let path = state_dir.join(HOST_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PodNetworkError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        }
    };
    let record: HostRecord = serde_json::from_str(&text).map_err(|e| PodNetworkError::Io {
        what: format!("reading {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    let cluster: Ipv4Cidr = record.cluster_cidr.parse()?;
    apply::remove_host(&record.bridge, cluster)?;
    let dir = ipam_dir(state_dir, &record.bridge);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(PodNetworkError::Io {
                what: format!("removing {}", dir.display()),
                source,
            })
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
