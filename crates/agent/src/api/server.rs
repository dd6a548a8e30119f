//! The agent API's listener and router: TLS with a required client certificate, HTTP/1.1
//! (with upgrades, which exec/attach/port-forward will use), authorization of the
//! certificate's subject, then one handler per route.
//!
//! Authorization is kubelet's `nodes/proxy` check reduced to what skiff issues: the API
//! server's kubelet client (`kube-apiserver-kubelet-client`) and cluster administrators
//! (`system:masters`) may call; node certificates, signed by the same CA, may not read
//! other nodes' pods.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::log_files::{self, LogError};
use super::logs::LogOptions;
use super::portforward;
use super::tls::{self, ClientIdentity, ServingCert, TlsError};
use super::{attach, exec, stats};
use crate::pods::layout::Layout;

/// kubelet's port.
pub const DEFAULT_PORT: u16 = 10250;

/// The CN of the API server's client certificate for talking to agents.
pub const APISERVER_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

pub type Body = BoxBody<Bytes, Infallible>;

/// How to run the agent API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The cluster CA: client certificates must chain to it.
    pub client_ca_pem: String,
    pub serving: ServingCert,
    pub layout: Layout,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("agent API TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("agent API listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent API accepting connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// A bound, not yet serving, agent API (so callers learn the port before serving).
pub struct AgentApi {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
}

struct State {
    layout: Layout,
    /// The binary whose `container-exec` helper runs exec'd processes: this process's own
    /// (through /proc so a binary replaced on disk still resolves).
    exec_binary: std::path::PathBuf,
    /// The node's name in `/stats/summary`: the first name its serving certificate is for.
    node_name: String,
    /// Previous CPU samples, for `/stats/summary`'s rates.
    stats: stats::Sampler,
}

impl AgentApi {
    pub async fn bind(config: ApiConfig) -> Result<AgentApi, ServeError> {
        let tls = tls::server_config(&config.client_ca_pem, &config.serving)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let node_name = match &config.serving {
            ServingCert::Generate { names } if !names.is_empty() => names[0].clone(),
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        Ok(AgentApi {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            state: Arc::new(State {
                layout: config.layout,
                exec_binary: "/proc/self/exe".into(),
                node_name,
                stats: stats::Sampler::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes (connections already open finish on their own).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    // A connection that failed before it was accepted is not the listener's end.
                    Err(e) if is_transient(&e) => {
                        tracing::debug!("agent API accept: {e}");
                        continue;
                    }
                    Err(e) => return Err(ServeError::Accept(e)),
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connection(state, acceptor, tcp).await {
                    tracing::debug!(%peer, "agent API connection ended: {e}");
                }
            });
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(libc::EMFILE)
        || e.raw_os_error() == Some(libc::ENFILE)
}

/// Binds and serves: the agent's entry point (`AgentApi::bind` when the port is needed).
pub async fn serve(
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    AgentApi::bind(config).await?.run(shutdown).await
}

async fn serve_connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Without a client certificate chaining to the CA the handshake fails here.
    let tls = acceptor.accept(tcp).await?;
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| tls::client_identity(c.as_ref()));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let identity = identity.clone();
        async move { Ok::<_, Infallible>(handle(&state, identity.as_ref(), req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await?;
    Ok(())
}

/// What a request path names. Pure: tested with tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
    },
    /// `/exec|attach/{ns}/{pod}/{container}` (WebSocket channel streams: see exec.rs).
    Exec {
        namespace: String,
        pod: String,
        container: String,
    },
    Attach {
        namespace: String,
        pod: String,
        container: String,
    },
    PortForward {
        namespace: String,
        pod: String,
    },
    StatsSummary,
    NotFound,
}

pub fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let s = |x: &str| x.to_string();
    match segments.as_slice() {
        ["healthz"] => Route::Healthz,
        ["containerLogs", ns, pod, container] => Route::ContainerLogs {
            namespace: s(ns),
            pod: s(pod),
            container: s(container),
        },
        // kubelet also accepts a pod UID between pod and container; skiff's API server
        // never sends it.
        ["exec", ns, pod, container] => Route::Exec {
            namespace: s(ns),
            pod: s(pod),
            container: s(container),
        },
        ["attach", ns, pod, container] => Route::Attach {
            namespace: s(ns),
            pod: s(pod),
            container: s(container),
        },
        ["portForward", ns, pod] => Route::PortForward {
            namespace: s(ns),
            pod: s(pod),
        },
        ["stats", "summary"] => Route::StatsSummary,
        _ => Route::NotFound,
    }
}

/// Who may use the agent API (see the module header).
pub fn authorized(who: &ClientIdentity) -> bool {
    who.user == APISERVER_CLIENT_USER || who.groups.iter().any(|g| g == "system:masters")
}

async fn handle(
    state: &State,
    identity: Option<&ClientIdentity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(who) = identity else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let route = route(req.uri().path());
    if route != Route::Healthz && !authorized(who) {
        let (verb, sub) = match route {
            Route::ContainerLogs { .. } => ("get", "log"),
            _ => ("create", "proxy"),
        };
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                who.user
            ),
        );
    }
    match (req.method(), route) {
        (&Method::GET, Route::Healthz) => text(StatusCode::OK, "ok"),
        (
            &Method::GET,
            Route::ContainerLogs {
                namespace,
                pod,
                container,
            },
        ) => container_logs(state, &namespace, &pod, &container, req.uri().query()).await,
        (
            &Method::GET | &Method::POST,
            Route::Exec {
                namespace,
                pod,
                container,
            },
        ) => exec::handle(
            &state.layout,
            &state.exec_binary,
            req,
            &namespace,
            &pod,
            &container,
            text,
        ),
        (
            &Method::GET | &Method::POST,
            Route::Attach {
                namespace,
                pod,
                container,
            },
        ) => attach::handle(&state.layout, req, &namespace, &pod, &container, text),
        (&Method::GET | &Method::POST, Route::PortForward { namespace, pod }) => {
            portforward::handle(&state.layout, req, &namespace, &pod, text)
        }
        (&Method::GET, Route::StatsSummary) => stats_summary(state),
        (_, Route::NotFound) => text(StatusCode::NOT_FOUND, "404 page not found"),
        (m, _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {m} is not allowed here"),
        ),
    }
}

async fn container_logs(
    state: &State,
    namespace: &str,
    pod: &str,
    container: &str,
    query: Option<&str>,
) -> Response<Body> {
    let opts = match LogOptions::from_query(query, chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let file = match log_files::locate(&state.layout, namespace, pod, container, opts.previous) {
        Ok(f) => f,
        Err(e) => return log_error(&e),
    };
    // Open it now so a vanished file is an error status rather than an empty 200.
    if let Err(e) = std::fs::metadata(&file.path) {
        return log_error(&LogError::Io {
            path: file.path.clone(),
            source: e,
        });
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(log_files::stream(file, opts, tx));
    let frames = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(StreamBody::new(frames).boxed())
        .unwrap_or_else(|_| Response::new(empty()))
}

fn stats_summary(state: &State) -> Response<Body> {
    let summary = stats::summary(&state.layout, &state.node_name, &state.stats);
    match serde_json::to_vec(&summary) {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap_or_else(|_| Response::new(empty())),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding the stats summary: {e}"),
        ),
    }
}

fn log_error(e: &LogError) -> Response<Body> {
    if let LogError::Io { .. } = e {
        tracing::warn!("serving container logs: {e}");
    }
    text(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_string(),
    )
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// A plain-text response, as kubelet writes its errors.
fn text(code: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths() {
        let logs = |ns: &str, pod: &str, c: &str| Route::ContainerLogs {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.into(),
        };
        let cases = [
            ("/healthz", Route::Healthz),
            (
                "/containerLogs/default/web/app",
                logs("default", "web", "app"),
            ),
            (
                "/containerLogs/default/web/app/",
                logs("default", "web", "app"),
            ),
            ("/containerLogs/default/web", Route::NotFound),
            (
                "/portForward/ns/p",
                Route::PortForward {
                    namespace: "ns".into(),
                    pod: "p".into(),
                },
            ),
            ("/", Route::NotFound),
            ("/stats/summary", Route::StatsSummary),
            ("/stats", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn only_the_api_server_and_admins_are_authorized() {
        let id = |user: &str, groups: &[&str]| ClientIdentity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(authorized(&id(APISERVER_CLIENT_USER, &[])));
        assert!(authorized(&id("system:admin", &["system:masters"])));
        assert!(!authorized(&id("system:node:n1", &["system:nodes"])));
    }
}
