//! The API clients of the node agent and of the server's control loops.
//!
//! [`http2`]: kube's own request stack (base URL, credentials, extra headers such as the
//! join token, retries of 429, 503 and 504), sent over one HTTP/2 connection. Agents use it.
//! [`in_process`]: the same retries, with requests handed to the API server in this
//! process (`apiserver::in_process`); the server's controllers and scheduler use it.
//!
//! `kube::Client::try_from(Config)` speaks HTTP/1.1 only, so every request and watch in
//! flight holds a TLS connection of its own, and the pool keeps them all open while idle:
//! ~50 loopback connections in an idle server (a watch each for the informers) and up to
//! one per concurrent request in an agent after a burst of pod starts, each with its read
//! and write buffers and TLS state on both ends. kubelet and the controller manager talk
//! HTTP/2 to kube-apiserver: every request and watch is a stream of one connection.
//! Its socket gathers writes until a flush (`apiserver::coalesced_writes`), so the
//! requests of many tasks leave in one syscall.

use std::time::Duration;

use anyhow::{Context, Result};
use apiserver::coalesced_writes::CoalescedWrites;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::ConfigExt;
use tokio::net::TcpStream;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A ping when a connection has been quiet this long tells a dead peer from an idle one
/// (a watch can be silent for minutes).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Flow-control window for the whole connection: room for many watch streams to have data
/// in flight at once, so one slow reader does not hold back the others.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// A client for `config`'s cluster over HTTP/2 (TLS with ALPN `h2`). A kubeconfig that
/// names a proxy or a plain-HTTP server gets kube's own client instead: tunnelling through
/// a proxy is kube's code, and an `http://` server would need HTTP/2 without TLS, which
/// kube-apiserver does not serve.
pub fn http2(config: kube::Config) -> Result<kube::Client> {
    if config.proxy_url.is_some() || config.cluster_url.scheme_str() != Some("https") {
        return kube::Client::try_from(config).context("building the API client");
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(config.connect_timeout);
    let tls = config
        .rustls_client_config()
        .context("building the client's TLS settings")?;
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    // The kubeconfig's `tls-server-name`, as kube's own connector honours it.
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .with_context(|| format!("tls-server-name {name:?} is not a valid server name"))?;
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let tcp = ServiceBuilder::new()
        .map_response(|io: TokioIo<TcpStream>| TokioIo::new(CoalescedWrites::new(io.into_inner())))
        .service(tcp);
    let connector = builder.enable_http2().wrap_connector(tcp);
    let transport = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
        .build(connector);
    let auth = config
        .auth_layer()
        .context("building the client's credentials")?;
    let headers = config
        .extra_headers_layer()
        .context("building the client's extra headers")?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(transport);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// A client whose requests `server` answers in this process, as `identity`, with kube's
/// retries of 429, 503 and 504.
pub fn in_process(
    server: std::sync::Arc<apiserver::ApiServer>,
    identity: apiserver::auth::Identity,
) -> kube::Client {
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::server_retry()))
        .service(apiserver::in_process::InProcess::new(server, identity));
    kube::Client::new(service, "default")
}
