//! Whether the node's pod network is ready, for its Ready condition. kubelet reports the
//! node NotReady while the container runtime says `NetworkReady=false` (no CNI config yet:
//! "cni plugin not initialized"); here the network is ready once the control plane has
//! given the node its podCIDR and the host side for it (bridge, gateway address, nftables)
//! is set up, which is what a CNI config written by flannel stands for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::pods::network::{follow_pod_cidr, NodeNetwork};

/// containerd's message while no CNI plugin is configured.
pub const PLUGIN_NOT_INITIALIZED: &str = "cni plugin not initialized";

/// How often a failed setup of the host side is tried again.
const SETUP_RETRY: Duration = Duration::from_secs(5);

/// The pod network as the Ready condition sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkStatus {
    Ready,
    /// Not ready; `message` is what the network plugin returns (kubelet quotes it).
    NotReady {
        message: String,
    },
}

impl NetworkStatus {
    /// Before the podCIDR arrived.
    pub fn not_initialized() -> NetworkStatus {
        NetworkStatus::NotReady {
            message: PLUGIN_NOT_INITIALIZED.to_string(),
        }
    }
}

/// A channel starting at "not initialized", for [`follow`] and the node's heartbeat.
pub fn channel() -> (watch::Sender<NetworkStatus>, watch::Receiver<NetworkStatus>) {
    watch::channel(NetworkStatus::not_initialized())
}

/// Waits for the node's podCIDR, sets up the host side of the pod network for it, then
/// reports Ready and returns. A setup that fails is reported (its error is the message)
/// and tried again.
pub async fn follow(
    client: kube::Client,
    network: Arc<NodeNetwork>,
    status: watch::Sender<NetworkStatus>,
) {
    follow_pod_cidr(client, network.clone()).await;
    loop {
        let net = network.clone();
        let outcome = match tokio::task::spawn_blocking(move || net.prepare_host()).await {
            Ok(Ok(())) => NetworkStatus::Ready,
            Ok(Err(e)) => NetworkStatus::NotReady {
                message: e.to_string(),
            },
            Err(e) => NetworkStatus::NotReady {
                message: format!("setting up the pod network: {e}"),
            },
        };
        let ready = outcome == NetworkStatus::Ready;
        match &outcome {
            NetworkStatus::Ready => tracing::info!("pod network ready"),
            NetworkStatus::NotReady { message } => {
                tracing::warn!("pod network not ready: {message}; retrying in {SETUP_RETRY:?}")
            }
        }
        status.send_replace(outcome);
        if ready {
            return;
        }
        tokio::time::sleep(SETUP_RETRY).await;
    }
}
