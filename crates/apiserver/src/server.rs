//! The HTTPS listener: TLS with optional client certificates (verified against the
//! cluster CA), HTTP/1.1 and HTTP/2 by ALPN, authentication of every request, and a
//! request-size limit, before the request reaches `handlers`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::coalesced_writes::CoalescedWrites;

use crate::auth::{self, Identity};
use crate::errors::ApiError;
use crate::http::{self, Body};
use crate::join;
use crate::ApiServer;

/// The largest request body accepted, as upstream (3 MiB).
pub const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

/// Certificates the listener serves with and trusts.
pub struct TlsMaterial {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// CAs whose client certificates authenticate users.
    pub client_ca: Vec<CertificateDer<'static>>,
}

pub fn tls_config(material: TlsMaterial) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in material.client_ca {
        roots
            .add(ca)
            .map_err(|e| format!("adding client CA: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("building client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain, material.key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accept connections until the listener fails; each connection is served on its own task.
pub async fn serve(
    server: Arc<ApiServer>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(server, acceptor, tcp, peer).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Concurrent HTTP/2 streams a client may open on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

async fn serve_connection(
    server: Arc<ApiServer>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = acceptor.accept(CoalescedWrites::new(tcp)).await?;
    let cert_identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| auth::identity_from_certificate(c.as_ref()));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let server = server.clone();
        let cert_identity = cert_identity.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(server, cert_identity, peer, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's default of 200 streams is below what one client may keep in flight on its
    // one HTTP/2 connection (a simulated fleet's status patches and watches, or control
    // loops run out of process); past the limit, requests wait.
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await?;
    Ok(())
}

async fn handle(
    server: Arc<ApiServer>,
    cert_identity: Option<Identity>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() == join::CACERTS_PATH {
        return join::cacerts(server.join.get(), req.method());
    }
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match (cert_identity, bearer) {
        (Some(identity), _) => Some(identity),
        (None, Some(header)) => match auth::identity_from_bearer(header, &server.config.tokens) {
            Some(identity) => Some(identity),
            None => crate::service_accounts::authenticate::identity(&server, header).await,
        },
        (None, None) => None,
    };
    let Some(identity) = identity else {
        // Read (a bounded amount of) the body first: answering before it is consumed makes
        // the connection close under a client still sending, which then sees no 401 at all.
        let _ = Limited::new(req.into_body(), MAX_REQUEST_BODY)
            .collect()
            .await;
        return http::error(&ApiError::unauthorized());
    };
    respond(&server, &identity, &peer, req).await
}

/// Answer an authenticated request: read its body (up to `MAX_REQUEST_BODY`), hand it to
/// the handlers, record its metrics. Every request takes this path, from a socket or from
/// the in-process control loops (`in_process`).
pub(crate) async fn respond<B>(
    server: &Arc<ApiServer>,
    identity: &Identity,
    peer: &(dyn std::fmt::Display + Sync),
    req: Request<B>,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return http::error(&ApiError::too_large(MAX_REQUEST_BODY));
            }
            return http::error(&ApiError::bad_request(format!("reading request body: {e}")));
        }
    };
    if parts.uri.path() == join::NODE_CERTIFICATE_PATH {
        return join::node_certificate(server.join.get(), identity, &parts.method, &body);
    }
    if parts.uri.path() == join::CLUSTER_CONFIG_PATH {
        return join::cluster_config(server.join.get(), identity, &parts.method);
    }
    let started = std::time::Instant::now();
    let method = parts.method.clone();
    let uri = parts.uri.clone();
    let (verb, resource) = metric_labels(&method, &uri);
    let resp = crate::handlers::dispatch(server, identity, Request::from_parts(parts, body)).await;
    server.metrics.observe(
        verb,
        &resource,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::debug!(%peer, user = %identity.user, %method, %uri, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

/// kube-apiserver's verb and resource labels for a request.
fn metric_labels(method: &hyper::Method, uri: &hyper::Uri) -> (&'static str, String) {
    use crate::routes::{parse, Target};
    let target = parse(uri.path());
    let (resource, has_name) = match &target {
        Ok(Target::Resource(r)) => (r.info.plural.to_string(), r.name.is_some()),
        _ => (String::new(), true),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        hyper::Method::GET if watch => "WATCH",
        hyper::Method::GET if !has_name => "LIST",
        hyper::Method::GET => "GET",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE if !has_name => "DELETECOLLECTION",
        hyper::Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    (verb, resource)
}

/// Helper for handlers: a request whose body has been read.
pub type FullRequest = Request<Bytes>;
