//! The Kubernetes API server: HTTPS with client-certificate and bearer-token
//! authentication, discovery and OpenAPI, and every verb on every registered resource,
//! over the narrow `store::Store` contract.
//!
//! Layout: `routes` parses paths, `request` parses options and content negotiation,
//! `handlers` implements the verbs, `admission` holds the cross-object rules (namespace
//! lifecycle, Service IP allocation), `objects` the stored form, `server` the TLS listener
//! and authentication.

pub mod admission;
pub mod auth;
pub mod bootstrap;
pub mod coalesced_writes;
pub mod discovery;
pub mod errors;
pub mod handlers;
pub mod http;
pub mod in_process;
pub mod join;
pub mod kubelet;
pub mod metrics;
pub mod objects;
pub mod request;
pub mod routes;
pub mod server;
pub mod service_accounts;
pub mod watch_hub;

use std::net::Ipv4Addr;
use std::sync::Arc;

use store::Store;

/// Static facts about this server, decided by the binary's flags.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `host:port` clients reach us at (discovery's serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// The Service IP range (`--service-cidr`), e.g. 10.43.0.0/16.
    pub service_cidr: (Ipv4Addr, u8),
    /// The NodePort range, inclusive.
    pub node_port_range: (u16, u16),
    /// Bearer tokens accepted, with the user they authenticate as.
    pub tokens: Vec<auth::TokenUser>,
    /// Reported by `/version`.
    pub git_version: String,
    /// What admission adds to new objects (default toleration seconds).
    pub admission: api::defaults::AdmissionDefaults,
}

impl ApiConfig {
    /// The first usable address of the Service range: the `kubernetes` Service's IP.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.service_cidr.0) + 1)
    }
}

/// Shared state of one API server.
pub struct ApiServer {
    pub store: Arc<dyn Store>,
    pub config: ApiConfig,
    /// Serialises Service IP and NodePort allocation; holds the table of what Services
    /// hold (`admission::ServiceAllocator`).
    pub allocation_lock: tokio::sync::Mutex<admission::ServiceAllocator>,
    /// Set once the built-in objects exist; `/readyz` answers 200 from then on.
    pub ready: std::sync::atomic::AtomicBool,
    pub metrics: metrics::Metrics,
    /// One shared store watch per watched resource, for all watch requests.
    pub watch_hubs: watch_hub::WatchHubs,
    /// The node-join endpoints, once the binary has given the CA and its signer.
    pub join: std::sync::OnceLock<join::Join>,
    /// The client for agents (pods' log, exec, attach, portforward), once the binary has
    /// given the API server's kubelet client certificate.
    pub kubelet: std::sync::OnceLock<kubelet::KubeletClient>,
    /// The service-account token issuer, once the binary has loaded the signing key.
    pub service_accounts: std::sync::OnceLock<service_accounts::Issuer>,
}

impl ApiServer {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Arc<ApiServer> {
        Arc::new(ApiServer {
            store,
            config,
            allocation_lock: tokio::sync::Mutex::new(admission::ServiceAllocator::default()),
            ready: std::sync::atomic::AtomicBool::new(false),
            metrics: metrics::Metrics::default(),
            watch_hubs: watch_hub::WatchHubs::default(),
            join: std::sync::OnceLock::new(),
            kubelet: std::sync::OnceLock::new(),
            service_accounts: std::sync::OnceLock::new(),
        })
    }
}
