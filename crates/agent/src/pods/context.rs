//! What every pod worker on a node shares: the API client, the node's identity and
//! capacity, the on-disk layout, the image store, the shim launcher, the event recorder,
//! the Services cache and the pod network.

use std::sync::Arc;

use controllers::events::Recorder;
use runtime::images::ImageStore;
use runtime::shim::ShimClient;

use super::layout::Layout;

pub struct NodeContext {
    pub client: kube::Client,
    pub node_name: String,
    pub host_ip: String,
    pub layout: Layout,
    pub images: Arc<ImageStore>,
    /// The layer put under every image's layers (`Layout::mount_point_layer`); None when it
    /// could not be made, and containers then go without it.
    pub mount_point_layer: Option<std::path::PathBuf>,
    pub shims: ShimClient,
    /// The skiff binary, for `skiff container-exec` (exec probes, `kubectl exec`).
    pub exec_binary: std::path::PathBuf,
    pub recorder: Recorder,
    /// Every Service, for the service-link variables of new containers.
    pub services: super::services::ServiceCache,
    /// The ConfigMaps and Secrets pods use (volumes, environment, image pull secrets), each
    /// from a watch of its own.
    pub config_maps: super::object_cache::ObjectCache<k8s_openapi::api::core::v1::ConfigMap>,
    pub secrets: super::object_cache::ObjectCache<k8s_openapi::api::core::v1::Secret>,
    /// Allocatable cpu (millicores) and memory/ephemeral storage (bytes), for downward
    /// values of containers without limits.
    pub allocatable_milli_cpu: i64,
    pub allocatable_memory: i64,
    pub allocatable_ephemeral: i64,
    /// Memory capacity (bytes), for the oom_score_adj of Burstable containers.
    pub memory_capacity: i64,
    /// Bounds the blocking runtime work (sandboxes, mounts, shim starts) done at once: a
    /// burst of pods then queues here instead of spawning a thread per pod, which costs
    /// memory and, on a small machine, time.
    pub runtime_ops: tokio::sync::Semaphore,
    /// Bounds the sandboxes made at once, apart from `runtime_ops`: in a burst, the first
    /// pods' containers then start while later pods' sandboxes are still being made,
    /// instead of every sandbox first (the queue is FIFO) and every container after.
    /// Sandboxes attach their networks one at a time anyway (`sandbox::create`).
    pub sandbox_ops: tokio::sync::Semaphore,
    /// The node's pod network: addresses and interfaces for pod sandboxes.
    pub network: Arc<super::network::NodeNetwork>,
    /// `--cluster-dns`, `--cluster-domain` and the host's resolv.conf, for pods' resolv.conf.
    pub dns: super::dns_config::NodeDns,
}

/// Sandboxes made at once: one attaching its network, one doing the rest.
pub const SANDBOX_PARALLELISM: usize = 2;

/// Blocking runtime operations run at once: twice the CPUs, at least 2.
pub fn runtime_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}
