//! What every pod worker on a node shares: the API client, the node's identity and
//! capacity, the on-disk layout, the image store, the shim launcher and the event recorder.

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
    pub shims: ShimClient,
    pub recorder: Recorder,
    /// Allocatable cpu (millicores) and memory/ephemeral storage (bytes), for downward
    /// values of containers without limits.
    pub allocatable_milli_cpu: i64,
    pub allocatable_memory: i64,
    pub allocatable_ephemeral: i64,
    /// Memory capacity (bytes), for the oom_score_adj of Burstable containers.
    pub memory_capacity: i64,
}
