//! NetworkPolicy enforcement, what k3s's bundled policy controller (kube-router's) does:
//! every node agent watches NetworkPolicies, Pods and Namespaces and programs one table,
//! `ip <bridge>-policy`, for the pods on its own bridge (named after the bridge, like the
//! pod network's and the proxy's tables, so nodes sharing a network namespace in tests
//! never touch each other's rules).
//!
//! - [`model`] decides, purely, which local pods are isolated in which direction and what
//!   each selecting policy allows (peers resolved to addresses, named ports to numbers);
//! - [`ruleset`] turns that into the table (verdict maps per direction, a group chain per
//!   distinct list of policies, a chain per policy with named sets of peer addresses) and
//!   diffs two rulesets into `nft` commands;
//! - `sync` is the watch loop (incremental batches, atomic rebuild at start and after a
//!   failure, retries with backoff), applying through the proxy's [`Nft`](crate::proxy::nft::Nft).
//!
//! The filter sits on the forward hook, where every pod's traffic passes after the
//! Service proxy's DNAT (so a ClusterIP is judged by the pod behind it): routed traffic
//! between nodes, and bridged traffic between pods of one node (`br_netfilter`). Traffic
//! between a pod and its own node (kubelet probes, the node's services) takes the input and
//! output hooks and is always allowed, as upstream documents. The table stays when the
//! agent stops (its pods keep running and keep their isolation); `skiff killall` removes
//! it.

pub mod model;
pub mod ruleset;
pub mod selector;
mod sync;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::proxy::nft::Nft;

/// The file in the agent's directory naming the table, for `skiff killall`.
const RECORD_FILE: &str = "network-policy";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("nftables: {0}")]
    Nft(String),
    #[error("host: {0}")]
    Host(String),
}

/// What the policy controller of one node needs.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The node's pod bridge (`--pod-bridge`): the table is `<bridge>-policy`.
    pub bridge: String,
    /// `--cluster-cidr`: local pods have their address in it.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    /// The node's name: local pods are those bound to it.
    pub node_name: String,
    /// Where the record of the table is kept (the agent's directory).
    pub state_dir: PathBuf,
}

impl PolicyConfig {
    pub fn table(&self) -> String {
        table_name(&self.bridge)
    }
}

/// `<bridge>-policy`.
pub fn table_name(bridge: &str) -> String {
    format!("{bridge}-policy")
}

/// Runs the policy controller until the task is aborted. Returns early only when it cannot
/// run at all (no nft).
pub async fn run(client: kube::Client, config: PolicyConfig) -> Result<(), PolicyError> {
    let nft = Nft::find().ok_or_else(|| {
        PolicyError::Nft(
            "nft(8) is not installed (Debian package nftables): NetworkPolicies are not enforced on this node"
                .into(),
        )
    })?;
    let table = config.table();
    record(&config.state_dir, &table)?;
    // Bridged pod-to-pod traffic must pass the forward hook (the proxy sets it too).
    crate::proxy::host::bridged_traffic_through_netfilter();
    tracing::info!(table = %table, "network policy controller starting");
    let node = model::NodeContext {
        node_name: config.node_name.clone(),
        cluster_cidr: config.cluster_cidr,
    };
    sync::run(client, table, node, nft).await;
    Ok(())
}

fn record(state_dir: &Path, table: &str) -> Result<(), PolicyError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| PolicyError::Host(format!("creating {}: {e}", state_dir.display())))?;
    let path = state_dir.join(RECORD_FILE);
    std::fs::write(&path, format!("table {table}\n"))
        .map_err(|e| PolicyError::Host(format!("writing {}: {e}", path.display())))
}

/// Removes the table a policy controller recorded in `state_dir` (`skiff killall`);
/// nothing recorded is fine.
pub fn remove(state_dir: &Path) -> Result<(), PolicyError> {
    let path = state_dir.join(RECORD_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let nft = Nft::find();
    for table in text.lines().filter_map(|l| l.strip_prefix("table ")) {
        let Some(nft) = &nft else { continue };
        let listed = nft
            .run_blocking(&["list", "tables", "ip"])
            .unwrap_or_default();
        if listed
            .lines()
            .any(|l| l.trim() == format!("table ip {table}"))
        {
            nft.run_blocking(&["delete", "table", "ip", table])
                .map_err(|e| PolicyError::Nft(e.to_string()))?;
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests;
