//! skiff's built-in ingress controller, run by every node agent: IngressClass `skiff`
//! (controller `skiff.dev/ingress`), HTTP and HTTPS listeners on all the node's
//! addresses, routing tables rebuilt from watches of Ingresses, IngressClasses, Services,
//! EndpointSlices and Secrets and swapped atomically (listeners and open connections are
//! never restarted), and `status.loadBalancer.ingress` of served Ingresses kept at the
//! Ready nodes' InternalIPs (every node computes the same list, so nodes agree). Only
//! events that change what these use trigger a rebuild (`changes`): not Node heartbeats.

pub mod changes;
pub mod proxy;
pub mod routes;
pub mod status;
pub mod tls;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{watch, Notify};

pub use routes::{CLASS_NAME, CONTROLLER, DEFAULT_CLASS_ANNOTATION};

/// How long a burst of changes is gathered before the table is rebuilt.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// The controller's settings (the agent's `--ingress-*` flags).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// HTTP port on every address of the node; 0: none.
    pub http_port: u16,
    /// HTTPS port; 0: none.
    pub https_port: u16,
    /// This node's InternalIP: the status address until Nodes are known.
    pub node_ip: IpAddr,
}

/// The watched objects.
#[derive(Clone)]
struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
    nodes: Store<Node>,
}

/// Runs the controller until the task is dropped. A port that cannot be bound is logged
/// and left unserved (another server on this machine may hold it); the rest runs.
pub async fn run(client: kube::Client, config: IngressConfig) -> Result<()> {
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        ingresses: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        ),
        classes: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        ),
        services: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        ),
        slices: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        ),
        // Only TLS Secrets: the controller never holds the cluster's other Secrets.
        secrets: reflect(
            Api::all(client.clone()),
            watcher::Config::default().fields(&format!("type={}", tls::TLS_SECRET_TYPE)),
            changed.clone(),
        ),
        nodes: reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        ),
    };
    let (table_tx, table_rx) = watch::channel(Arc::new(routes::Table::default()));
    let resolver = Arc::new(tls::Resolver {
        table: RwLock::new(Arc::new(tls::CertTable::default())),
        fallback: tls::default_certificate()?,
    });
    let upstreams = proxy::upstream_client();
    let mut listeners = Vec::new();
    if config.http_port != 0 {
        match bind(config.http_port).await {
            Ok(listener) => listeners.push(tokio::spawn(proxy::serve_http(
                listener,
                proxy::Forwarder {
                    table: table_rx.clone(),
                    client: upstreams.clone(),
                    scheme: "http",
                    port: config.http_port,
                },
            ))),
            Err(e) => tracing::error!("ingress: HTTP is not served: {e:#}"),
        }
    }
    if config.https_port != 0 {
        match bind(config.https_port).await {
            Ok(listener) => {
                let mut tls_config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
                tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
                listeners.push(tokio::spawn(proxy::serve_https(
                    listener,
                    acceptor,
                    proxy::Forwarder {
                        table: table_rx.clone(),
                        client: upstreams.clone(),
                        scheme: "https",
                        port: config.https_port,
                    },
                )));
            }
            Err(e) => tracing::error!("ingress: HTTPS is not served: {e:#}"),
        }
    }
    let _listeners = AbortOnDrop(listeners);
    tracing::info!(
        http = config.http_port,
        https = config.https_port,
        "ingress controller started (class {CLASS_NAME})"
    );

    let status = status::StatusWriter::new(client);
    let mut tls_problems = BTreeSet::new();
    stores.wait_until_ready().await?;
    loop {
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        let classes = stores.classes.state();
        let classes: Vec<IngressClass> = classes.iter().map(|c| IngressClass::clone(c)).collect();
        let served: Vec<Arc<Ingress>> = stores
            .ingresses
            .state()
            .into_iter()
            .filter(|i| routes::serves(i, &classes))
            .collect();
        let services = stores.services.state();
        let slices = stores.slices.state();
        let endpoints = routes::Endpoints::new(&services, &slices);
        table_tx.send_replace(Arc::new(routes::Table::build(&served, &endpoints)));
        let (certs, problems) = tls::CertTable::build(&served, &stores.secrets.state());
        for problem in problems.difference(&tls_problems) {
            tracing::warn!("ingress: {problem}");
        }
        tls_problems = problems;
        match resolver.table.write() {
            Ok(mut t) => *t = Arc::new(certs),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(certs),
        }
        let addresses = status::node_addresses(&stores.nodes.state(), config.node_ip);
        status.sync(&served, &addresses).await;
    }
}

impl Stores {
    /// Until every watch has listed once (a table built earlier would answer 503s for
    /// Services not yet seen).
    async fn wait_until_ready(&self) -> Result<()> {
        let (a, b, c, d, e, f) = futures::join!(
            self.ingresses.wait_until_ready(),
            self.classes.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.nodes.wait_until_ready(),
        );
        a.and(b)
            .and(c)
            .and(d)
            .and(e)
            .and(f)
            .context("a watch of the ingress controller stopped")
    }
}

/// A reflector over `api` (as `config` selects) that pokes `changed` on every event that
/// changes what the controller uses of the objects (`changes::Relevant`).
fn reflect<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + changes::Relevant
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut tracker = changes::Tracker::<K>::default();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if tracker.observe(&event) {
                        changed.notify_one();
                    }
                }
                Err(e) => tracing::debug!("ingress: watching {}: {e}", K::plural(&())),
            }
        }
    });
    store
}

/// Listens on every IPv4 address of the node.
async fn bind(port: u16) -> Result<tokio::net::TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} (or choose another --ingress-*-port, 0 disables)")
    })
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
