//! The agent's HTTPS API (kubelet's port 10250), what the API server calls for
//! `kubectl logs`, exec and attach (and next port-forward and stats).
//!
//! - [`server`]: listener, client-certificate authentication, router.
//! - [`tls`]: server TLS configuration, generated serving certificate.
//! - [`logs`]: log options and CRI records to response bytes (pure).
//! - [`log_files`]: finding a container's log file and streaming it.
//! - [`stats`]: `/stats/summary` (kubelet's Summary API) from cgroup and /proc files.
//! - [`portforward`]: `kubectl port-forward` (SPDY/3.1, plain or inside a WebSocket).

pub mod attach;
pub mod exec;
pub mod log_files;
pub mod logs;
pub mod portforward;
pub mod server;
pub mod stats;
pub mod tls;

pub use server::{serve, AgentApi, ApiConfig, ServeError, APISERVER_CLIENT_USER, DEFAULT_PORT};
pub use tls::ServingCert;
