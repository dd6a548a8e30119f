//! The control loops that act on the API. Each controller lives in its own folder, talks
//! to the API server only through the `kube` client (never the store), and is a
//! level-triggered reconcile: read the desired and observed state from the shared
//! informers, decide (a pure function, tested with tables), then act.
//!
//! Every controller exposes `pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()>`,
//! listed in [`run_all`]. `start` subscribes to the informers it reads synchronously and
//! returns the loop, so that [`run_all`] starts the informers once everybody has
//! subscribed and no controller misses the first list.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use kube::Client;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod feed;
pub mod garbage_collector;
pub mod in_flight;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod requests;
pub mod revisions;
pub mod root_ca_publisher;
pub mod service_lb;
pub mod serviceaccount;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;
pub mod workload;

/// Settings shared by the controllers (flags of `skiff server`, k3s/kube-controller-manager
/// names where the concept exists).
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// How long a node may go without renewing its lease before it is marked
    /// Ready=Unknown (upstream `--node-monitor-grace-period`, default 50 s since v1.32).
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked (upstream `--node-monitor-period`, 5 s).
    pub node_monitor_period: Duration,
    /// Workers per controller (upstream `--concurrent-*-syncs`, 5 for most).
    pub workers: usize,
    /// Where local-path volumes live on nodes (k3s `--default-local-storage-path`,
    /// `<data-dir>/storage`).
    pub local_storage_path: std::path::PathBuf,
    /// The cluster CA (PEM) published in every namespace as ConfigMap `kube-root-ca.crt`
    /// (upstream `--root-ca-file`); None: nothing is published.
    pub root_ca_pem: Option<String>,
    /// Where Nodes' podCIDRs are cut from (upstream `--cluster-cidr` with
    /// `--allocate-node-cidrs`); None: Nodes get no podCIDR from the control plane.
    pub cluster_cidr: Option<node_ipam::Ipv4Cidr>,
    /// The prefix length of each Node's podCIDR (upstream `--node-cidr-mask-size`, 24).
    pub node_cidr_mask_size: u8,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
            workers: 5,
            local_storage_path: std::path::PathBuf::from("/var/lib/skiff/storage"),
            root_ca_pem: None,
            cluster_cidr: None,
            node_cidr_mask_size: 24,
        }
    }
}

/// What every controller gets.
pub struct Context {
    pub client: Client,
    pub informers: Arc<informers::Factory>,
    pub options: ControllerOptions,
}

impl Context {
    pub fn new(
        client: Client,
        informers: Arc<informers::Factory>,
        options: ControllerOptions,
    ) -> Arc<Self> {
        Arc::new(Context {
            client: in_flight::limit(client, in_flight::DEFAULT_MAX_IN_FLIGHT),
            informers,
            options,
        })
    }

    /// An event recorder reporting as `component` (upstream names such as
    /// `replicaset-controller`, shown as FROM by `kubectl get events`).
    pub fn recorder(&self, component: &str) -> events::Recorder {
        events::Recorder::new(self.client.clone(), component)
    }
}

/// Run every controller until the process ends.
pub async fn run_all(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let controllers: Vec<BoxFuture<'static, ()>> = vec![
        namespace::run(client).boxed(),
        node_lifecycle::start(&ctx),
        node_ipam::start(&ctx),
        taint_eviction::start(&ctx),
        garbage_collector::start(&ctx),
        endpoints::start(&ctx),
        endpointslice::start(&ctx),
        service_lb::start(&ctx),
        serviceaccount::start(&ctx),
        root_ca_publisher::start(&ctx),
        replicaset::start(&ctx),
        deployment::start(&ctx),
        job::start(&ctx),
        cronjob::start(&ctx),
        ttl_after_finished::start(&ctx),
        podgc::start(&ctx),
        daemonset::start(&ctx),
        disruption::start(&ctx),
        statefulset::start(&ctx),
        persistentvolume::start(&ctx),
    ];
    ctx.informers.start();
    futures::future::join_all(controllers).await;
}
