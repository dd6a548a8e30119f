//! The Service data plane (kube-proxy's job), in nftables: every node agent watches
//! Services and EndpointSlices and programs one table, `ip <bridge>-services`, named after
//! the node's pod bridge so that several nodes sharing a network namespace (tests) never
//! touch each other's rules.
//!
//! - [`model`] decides, purely, what each Service owns in the table: map elements (frontend
//!   → shared `pick-<n>` chain, frontend and index → endpoint), and kube-proxy's
//!   per-Service and per-endpoint chains only for session affinity;
//! - [`ruleset`] holds the table skeleton and diffs fragments into `nft` commands;
//! - [`nft`] applies a batch atomically; [`host`] routes the service CIDR to a portless
//!   bridge and records what was made so that `skiff killall` can remove it;
//! - `sync` is the watch loop: incremental batches, full atomic rebuild at start and
//!   after a failure, retries with backoff; after a batch it deletes stale UDP flows
//!   ([`conntrack`]), as kube-proxy does.
//!
//! Replies: hairpin traffic (a pod reaching itself through its Service) is masqueraded;
//! replies between pods on the same bridge are un-DNATed by conntrack because bridged
//! traffic passes netfilter (`br_netfilter`, as kubelet requires); traffic from outside the
//! cluster CIDR to a ClusterIP and all NodePort/LoadBalancer traffic is masqueraded, as
//! kube-proxy does with externalTrafficPolicy Cluster.

pub mod conntrack;
pub mod host;
pub mod model;
pub mod nft;
pub mod ruleset;
mod sync;

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The pod bridge name when none is configured.
pub const DEFAULT_BRIDGE: &str = "skiff0";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Config(String),
    #[error("nftables: {0}")]
    Nft(String),
    #[error("host network: {0}")]
    Host(String),
}

/// What the proxy of one node needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The node's pod bridge (`--pod-bridge`); every name the proxy makes derives from it.
    pub bridge: String,
    /// `--service-cidr`.
    pub service_cidr: (Ipv4Addr, u8),
    /// `--cluster-cidr`: traffic to ClusterIPs from outside it is masqueraded.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
    /// The addresses NodePorts answer on (the node's InternalIP).
    pub node_ips: Vec<Ipv4Addr>,
    /// The node's name (endpoints' `nodeName`, for the Local traffic policies).
    pub node_name: String,
    /// Where the record of the table and device is kept (the agent's directory).
    pub state_dir: PathBuf,
}

impl ProxyConfig {
    /// `ip <bridge>-services`.
    pub fn table(&self) -> String {
        table_name(&self.bridge)
    }

    /// The portless bridge the service CIDR is routed to.
    pub fn device(&self) -> String {
        format!("{}-svc", self.bridge)
    }

    pub fn validate(&self) -> Result<(), ProxyError> {
        // IFNAMSIZ is 16 with the NUL.
        if self.bridge.is_empty() || self.device().len() > 15 {
            return Err(ProxyError::Config(format!(
                "--pod-bridge {:?}: must be 1 to 11 characters (the service proxy's device is <bridge>-svc)",
                self.bridge
            )));
        }
        if !self
            .bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || !self.bridge.as_bytes()[0].is_ascii_alphabetic()
        {
            return Err(ProxyError::Config(format!(
                "--pod-bridge {:?}: must start with a letter and hold only letters, digits, '-', '_' and '.'",
                self.bridge
            )));
        }
        Ok(())
    }
}

/// The table a node with pod bridge `bridge` programs.
pub fn table_name(bridge: &str) -> String {
    format!("{bridge}-services")
}

/// Parses an IPv4 CIDR such as `10.43.0.0/16`, naming `flag` in the error.
pub fn parse_cidr(text: &str, flag: &str) -> Result<(Ipv4Addr, u8), ProxyError> {
    let bad = || {
        ProxyError::Config(format!(
            "{flag} {text:?} is not an IPv4 CIDR like 10.43.0.0/16"
        ))
    };
    let (addr, len) = text.trim().split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// Prepares the host (route, br_netfilter, record) and runs the proxy until the task is
/// aborted. Returns early only when the proxy cannot run at all.
pub async fn run(client: kube::Client, config: ProxyConfig) -> Result<(), ProxyError> {
    config.validate()?;
    let nft = nft::Nft::find().ok_or_else(|| {
        ProxyError::Nft("nft(8) is not installed (Debian package nftables): Services are not served on this node".into())
    })?;
    let table = config.table();
    let device = config.device();
    host::record(&config.state_dir, &table, &device)?;
    host::route_service_cidr(&device, config.service_cidr).await?;
    host::bridged_traffic_through_netfilter();
    tracing::info!(
        table = %table,
        device = %device,
        service_cidr = %format!("{}/{}", config.service_cidr.0, config.service_cidr.1),
        "service proxy starting"
    );
    let skeleton = ruleset::Skeleton {
        table,
        service_cidr: config.service_cidr,
        node_ips: config.node_ips.clone(),
        cluster_cidr: config.cluster_cidr,
    };
    let node = model::NodeContext {
        node_name: Some(config.node_name.clone()),
    };
    sync::run(client, skeleton, node, nft).await;
    Ok(())
}

/// Removes what a proxy recorded in `state_dir` (its table and device): `skiff
/// killall`, like k3s-killall.sh removing kube-proxy's rules.
pub fn remove(state_dir: &std::path::Path) -> Result<(), ProxyError> {
    host::remove_recorded(state_dir, nft::Nft::find().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_names() {
        assert_eq!(
            parse_cidr("10.43.7.9/16", "--service-cidr").unwrap(),
            (Ipv4Addr::new(10, 43, 0, 0), 16)
        );
        for bad in ["10.43.0.0", "10.43.0.0/33", "x/16", "10.43.0.0/"] {
            assert!(parse_cidr(bad, "--service-cidr").is_err(), "{bad}");
        }
        let mut c = ProxyConfig {
            bridge: "skiff0".into(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            cluster_cidr: None,
            node_ips: vec![],
            node_name: "n".into(),
            state_dir: PathBuf::from("/nonexistent"),
        };
        assert_eq!(c.table(), "skiff0-services");
        assert_eq!(c.device(), "skiff0-svc");
        assert!(c.validate().is_ok());
        c.bridge = "a-very-long-br".into();
        assert!(c.validate().is_err());
        c.bridge = "0bad".into();
        assert!(c.validate().is_err());
    }
}
