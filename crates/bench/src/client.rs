//! A lean Kubernetes API client for measuring: HTTP/2 over rustls with the admin client
//! certificate from the kubeconfig the server wrote, on a few multiplexed connections
//! picked round-robin. No discovery, no typed objects: the benchmark sends JSON bytes and
//! reads status + body, so the client spends as little of the shared CPU as possible.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::procs::SkiffProc;

/// What `kubectl get` sends to ask for server-side printed tables.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// The parts of an admin kubeconfig the client needs.
pub struct KubeConfig {
    /// `host:port` of the API server.
    pub addr: String,
    pub host: String,
    tls: Arc<rustls::ClientConfig>,
}

impl KubeConfig {
    pub fn load(path: &Path) -> Result<KubeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let cluster = &doc["clusters"][0]["cluster"];
        let user = &doc["users"][0]["user"];
        let field = |v: &serde_yaml::Value, k: &str| -> Result<Vec<u8>> {
            let s = v[k]
                .as_str()
                .with_context(|| format!("{}: no {k}", path.display()))?;
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .with_context(|| format!("{}: {k} is not base64", path.display()))
        };
        let server = cluster["server"]
            .as_str()
            .with_context(|| format!("{}: no cluster server", path.display()))?;
        let addr = server
            .strip_prefix("https://")
            .with_context(|| format!("{}: server {server:?} is not https", path.display()))?
            .trim_end_matches('/')
            .to_string();
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|| addr.clone());

        let ca = field(cluster, "certificate-authority-data")?;
        let cert = field(user, "client-certificate-data")?;
        let key = field(user, "client-key-data")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.add(c.context("CA certificate PEM")?)?;
        }
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert.as_slice())
            .collect::<Result<_, _>>()
            .context("client certificate PEM")?;
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .context("client key PEM")?
            .ok_or_else(|| anyhow!("{}: no client key", path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("client certificate")?;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(KubeConfig {
            addr,
            host,
            tls: Arc::new(tls),
        })
    }
}

/// A response with its body read in full.
pub struct Resp {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }

    /// The status, and the body when it is not the expected one.
    pub fn expect(self, want: StatusCode, what: &str) -> Result<Resp> {
        if self.status != want {
            bail!(
                "{what}: HTTP {} (wanted {want}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(400)
                    .collect::<String>()
            );
        }
        Ok(self)
    }
}

/// HTTP/2 connections to one server, used round-robin. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Vec<SendRequest<Full<Bytes>>>,
    next: AtomicUsize,
    base: String,
}

impl Client {
    /// Opens `conns` HTTP/2 connections.
    pub async fn connect(kc: &KubeConfig, conns: usize) -> Result<Client> {
        let mut v = Vec::with_capacity(conns);
        for _ in 0..conns.max(1) {
            v.push(connect_one(kc).await?);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                conns: v,
                next: AtomicUsize::new(0),
                base: format!("https://{}", kc.addr),
            }),
        })
    }

    fn pick(&self) -> SendRequest<Full<Bytes>> {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.conns[i % self.inner.conns.len()].clone()
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        accept: Option<&str>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.inner.base, path))
            .header(header::ACCEPT, accept.unwrap_or("application/json"));
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(b.body(Full::new(body.unwrap_or_default()))?)
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        accept: Option<&str>,
    ) -> Result<Resp> {
        let req = self.build(method, path, body, accept)?;
        let mut conn = self.pick();
        conn.ready().await.context("HTTP/2 connection")?;
        let resp = conn.send_request(req).await.context("sending request")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading response body")?
            .to_bytes();
        Ok(Resp { status, body })
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.request(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: Bytes) -> Result<Resp> {
        self.request(Method::POST, path, Some(body), None).await
    }

    pub async fn put(&self, path: &str, body: Bytes) -> Result<Resp> {
        self.request(Method::PUT, path, Some(body), None).await
    }

    /// Sends a GET and returns as soon as the response head arrives; the body streams.
    pub async fn stream(&self, path: &str) -> Result<(StatusCode, Incoming)> {
        let req = self.build(Method::GET, path, None, None)?;
        let mut conn = self.pick();
        conn.ready().await.context("HTTP/2 connection")?;
        let resp = conn.send_request(req).await.context("sending request")?;
        let status = resp.status();
        Ok((status, resp.into_body()))
    }
}

async fn connect_one(kc: &KubeConfig) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(&kc.addr)
        .await
        .with_context(|| format!("connecting to {}", kc.addr))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(kc.host.clone()).context("server name")?;
    let tls = TlsConnector::from(kc.tls.clone())
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("the server did not negotiate HTTP/2");
    }
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .handshake(TokioIo::new(tls))
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Waits until `srv` answers `/readyz` 200 to a client authenticated with the admin
/// certificate (reading the kubeconfig as soon as the server has written it), polling
/// every millisecond. Returns the time from exec to that first 200.
pub async fn wait_ready(srv: &mut SkiffProc, timeout: Duration) -> Result<Duration> {
    let deadline = srv.spawned + timeout;
    let mut client: Option<Client> = None;
    let mut last = String::from("kubeconfig not written yet");
    loop {
        if let Some(status) = srv.guard.exited()? {
            bail!(
                "skiff server exited during start-up ({status})\n{}",
                srv.log_tail(30)
            );
        }
        if client.is_none() && srv.kubeconfig().exists() {
            match KubeConfig::load(&srv.kubeconfig()) {
                Ok(kc) => match Client::connect(&kc, 1).await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = format!("{e:#}"),
                },
                Err(e) => last = format!("{e:#}"),
            }
        }
        if let Some(c) = &client {
            match c.get("/readyz").await {
                Ok(r) if r.status == StatusCode::OK => return Ok(srv.spawned.elapsed()),
                Ok(r) => last = format!("/readyz: HTTP {}", r.status),
                Err(e) => {
                    last = format!("{e:#}");
                    client = None;
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "skiff server not ready after {timeout:?}: {last}\n{}",
                srv.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
