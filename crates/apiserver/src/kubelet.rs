//! The API server's client for agents (kubelets): HTTPS to a node's kubelet endpoint with
//! the API server's own client certificate, for the pod subresources served by the node
//! (`log` now; `exec`, `attach`, `portforward` through [`KubeletClient::upgrade`]).
//!
//! The kubelet's serving certificate is not verified, as upstream kube-apiserver does not
//! without `--kubelet-certificate-authority`: agents generate their own, and the client
//! certificate is what the kubelet checks. Only the TLS handshake's signatures are checked.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::errors::{ApiError, ApiResult};
use crate::http::Body;

/// How long connecting to a kubelet may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How much of a kubelet's error body becomes the error message (upstream: 4 KiB).
const MAX_ERROR_BODY: usize = 4 * 1024;

/// TLS client configuration for talking to kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletClient")
    }
}

impl KubeletClient {
    /// From the client certificate (PEM chain) and its key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<KubeletClient, String> {
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("kubelet client certificate: {e}"))?;
        if certs.is_empty() {
            return Err("kubelet client certificate: no certificate in the PEM".into());
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| format!("kubelet client key: {e}"))?
            .ok_or("kubelet client key: no private key in the PEM")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("kubelet client certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Arc::new(config),
        })
    }

    /// Opens an HTTP/1.1 connection to `host:port`.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> ApiResult<hyper::client::conn::http1::SendRequest<Body>> {
        // Upstream answers an unreachable kubelet with a 500 naming the dial error.
        let unavailable = |what: String| ApiError::new(500, "InternalError", what);
        let addr = format_host_port(host, port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| unavailable(format!("dial tcp {addr}: i/o timeout")))?
            .map_err(|e| unavailable(format!("dial tcp {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| unavailable(format!("kubelet address {host:?}: {e}")))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable(format!("TLS handshake with kubelet {addr}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unavailable(format!("HTTP handshake with kubelet {addr}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("kubelet connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends `req` to the kubelet at `host:port` on a connection of its own (upgrades
    /// take the connection over).
    pub async fn send(
        &self,
        host: &str,
        port: u16,
        mut req: Request<Body>,
    ) -> ApiResult<Response<Incoming>> {
        let mut sender = self.connect(host, port).await?;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format_host_port(host, port)) {
            req.headers_mut().insert(hyper::header::HOST, v);
        }
        let what = req.uri().to_string();
        sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::internal(format!("kubelet request {what}: {e}")))
    }

    /// `GET path_and_query` on the kubelet; the response body streams through unbuffered.
    /// A non-2xx answer becomes the API error upstream's response checker makes of it.
    pub async fn get_stream(
        &self,
        host: &str,
        port: u16,
        path_and_query: &str,
        resource: &str,
        name: &str,
    ) -> ApiResult<Response<Body>> {
        let req = Request::get(path_and_query)
            .body(Empty::<Bytes>::new().boxed())
            .map_err(|e| ApiError::internal(format!("building kubelet request: {e}")))?;
        let resp = self.send(host, port, req).await?;
        let status = resp.status();
        if !(200..=206).contains(&status.as_u16()) {
            return Err(error_from_response(resp, resource, name).await);
        }
        let (parts, body) = resp.into_parts();
        let mut builder = Response::builder().status(parts.status);
        for key in [hyper::header::CONTENT_TYPE, hyper::header::CONTENT_LENGTH] {
            if let Some(v) = parts.headers.get(&key) {
                builder = builder.header(key, v);
            }
        }
        builder
            .body(passthrough(body))
            .map_err(|e| ApiError::internal(format!("building response: {e}")))
    }
}

/// The API error for a kubelet's failed answer (its body is the message).
pub async fn error_from_response(resp: Response<Incoming>, resource: &str, name: &str) -> ApiError {
    let code = resp.status().as_u16();
    let text = read_limited(resp.into_body(), MAX_ERROR_BODY).await;
    response_error(code, text.trim_end(), resource, name)
}

fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A kubelet body as ours: frames pass as they arrive; a failure mid-way ends the body
/// (the status line is long sent).
fn passthrough(body: Incoming) -> Body {
    let frames = futures::stream::unfold(Some(body), |state| async move {
        let mut body = state?;
        match body.frame().await {
            Some(Ok(frame)) => Some((Ok::<Frame<Bytes>, Infallible>(frame), Some(body))),
            Some(Err(e)) => {
                tracing::debug!("kubelet response body: {e}");
                None
            }
            None => None,
        }
    });
    StreamBody::new(frames).boxed()
}

async fn read_limited(mut body: Incoming, limit: usize) -> String {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    out.truncate(limit);
    String::from_utf8_lossy(&out).into_owned()
}

/// upstream's `GenericHttpResponseChecker`: 400 → BadRequest with the body as message, 500
/// → InternalError, anything else a generic error for the resource.
pub fn response_error(code: u16, body: &str, resource: &str, name: &str) -> ApiError {
    match code {
        400 => ApiError::bad_request(body),
        500 => ApiError::internal(body),
        404 => ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ( {resource} {name})"),
        )
        .with_details(serde_json::json!({
            "name": name,
            "kind": resource,
            "causes": [{"reason": "UnexpectedServerResponse", "message": body}],
        })),
        401 => ApiError::new(401, "Unauthorized", format!("Unauthorized: {body}")),
        403 => ApiError::forbidden(body.to_string()),
        code => ApiError::new(
            code,
            "InternalError",
            format!("an error on the server ({body}) has prevented the request from succeeding ({resource} {name})"),
        ),
    }
}

/// Accepts any kubelet serving certificate (see the module header) but still verifies the
/// handshake signature made with its key.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
