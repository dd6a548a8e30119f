//! The data path: accept HTTP/1.1 on the HTTP and HTTPS listeners, route each request
//! with the current table (read per request, so a swapped table applies to open
//! connections too), and forward it to a ready endpoint over a pooled keep-alive
//! connection, bodies streamed both ways. Hop-by-hop headers are dropped and
//! `X-Forwarded-*` / `X-Real-IP` added as ingress-nginx does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::routes::{Decision, Table};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Endpoints tried for one bodiless request whose connections are refused.
const MAX_ATTEMPTS: usize = 3;

/// What every connection of one listener shares.
#[derive(Clone)]
pub struct Forwarder {
    pub table: watch::Receiver<Arc<Table>>,
    pub client: Client<HttpConnector, Body>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The listener's port, for `X-Forwarded-Port`.
    pub port: u16,
}

/// The upstream client: keep-alive, a small idle pool per endpoint, quick connect errors.
pub fn upstream_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(16)
        .set_host(false)
        .build(connector)
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, forwarder: Forwarder) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ingress: accepting on port {}: {e}", forwarder.port);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let forwarder = forwarder.clone();
        tokio::spawn(async move { serve_connection(TokioIo::new(stream), peer, forwarder).await });
    }
}

/// Serves HTTPS on `listener`: TLS with the SNI-selected certificate, then as HTTP.
pub async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    forwarder: Forwarder,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ingress: accepting on port {}: {e}", forwarder.port);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let forwarder = forwarder.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), peer, forwarder).await,
                Ok(Err(e)) => tracing::debug!("ingress: TLS handshake with {peer}: {e}"),
                Err(_) => tracing::debug!("ingress: TLS handshake with {peer} timed out"),
            }
        });
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, forwarder: Forwarder)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, std::convert::Infallible>(forwarder.handle(request, peer).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .await
    {
        tracing::debug!("ingress: connection from {peer}: {e}");
    }
}

impl Forwarder {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let path = request.uri().path().to_string();
        let decision = self.table.borrow().route(&host, &path);
        let upstream = match decision {
            Decision::Forward(u) => u,
            Decision::Unavailable(why) => {
                tracing::debug!("ingress: {host}{path}: 503: {why}");
                return error_page(StatusCode::SERVICE_UNAVAILABLE);
            }
            Decision::NotFound => return error_page(StatusCode::NOT_FOUND),
        };
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        strip_hop_by_hop(&mut parts.headers);
        if !host.is_empty() && !parts.headers.contains_key(HOST) {
            if let Ok(v) = HeaderValue::from_str(&host) {
                parts.headers.insert(HOST, v);
            }
        }
        self.add_forwarded(&mut parts.headers, &host, peer);
        // A request without a body can be sent again: an endpoint refusing the connection
        // (a pod just gone) passes it to the next one, as nginx's proxy_next_upstream.
        let attempts = if body.is_end_stream() {
            upstream.addrs.len().min(MAX_ATTEMPTS)
        } else {
            1
        };
        let mut body = Some(body.boxed());
        for attempt in 1..=attempts {
            let Some(endpoint) = upstream.pick() else {
                return error_page(StatusCode::SERVICE_UNAVAILABLE);
            };
            let Ok(uri) = format!("http://{endpoint}{path_and_query}").parse::<http::Uri>() else {
                return error_page(StatusCode::BAD_REQUEST);
            };
            let mut forwarded = Request::new(body.take().unwrap_or_else(empty_body));
            *forwarded.method_mut() = parts.method.clone();
            *forwarded.uri_mut() = uri;
            *forwarded.version_mut() = http::Version::HTTP_11;
            *forwarded.headers_mut() = parts.headers.clone();
            match self.client.request(forwarded).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, body.boxed());
                }
                Err(e) => {
                    tracing::debug!(
                        "ingress: {host}{path} → {} ({endpoint}, attempt {attempt}): {e}",
                        upstream.name
                    );
                    if !e.is_connect() {
                        break;
                    }
                }
            }
        }
        error_page(StatusCode::BAD_GATEWAY)
    }

    fn add_forwarded(&self, headers: &mut HeaderMap, host: &str, peer: SocketAddr) {
        let client_ip = peer.ip().to_string();
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {client_ip}"),
            _ => client_ip.clone(),
        };
        let host_only = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        set(headers, "x-forwarded-for", &forwarded_for);
        set(headers, "x-real-ip", &client_ip);
        set(headers, "x-forwarded-host", host_only);
        set(headers, "x-forwarded-proto", self.scheme);
        set(headers, "x-forwarded-port", &self.port.to_string());
    }
}

/// Drops the hop-by-hop headers and those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().map(|n| n.to_string()).chain(named) {
        headers.remove(name.as_str());
    }
}

fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A small HTML error page, as nginx's.
fn error_page(status: StatusCode) -> Response<Body> {
    let reason = match status {
        StatusCode::SERVICE_UNAVAILABLE => "Service Temporarily Unavailable",
        other => other.canonical_reason().unwrap_or(""),
    };
    let code = status.as_u16();
    let text = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>skiff</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Endpoints, Table};
    use serde_json::json;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend answering `ok` and echoing the X-Forwarded-For it got, and a port nothing
    /// listens on; a table sending `/` to both.
    async fn world() -> (Arc<Table>, SocketAddr) {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = backend.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let xff = req.headers().get("x-forwarded-for").cloned();
                        let text = format!(
                            "ok {}",
                            xff.map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default()
                        );
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let service: Arc<k8s_openapi::api::core::v1::Service> = Arc::new(
            serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"ports": [{"port": 80}]}}))
            .unwrap(),
        );
        let slices = [(live, "live"), (dead, "dead")].map(|(addr, name)| {
            Arc::new(serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"kubernetes.io/service-name": "b"}},
                "addressType": "IPv4",
                "ports": [{"port": addr.port()}],
                "endpoints": [{"addresses": [addr.ip().to_string()]}]})).unwrap())
        });
        let ingress = Arc::new(
            serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}}))
            .unwrap(),
        );
        let services = [service];
        let endpoints = Endpoints::new(&services, &slices);
        (Arc::new(Table::build(&[ingress], &endpoints)), live)
    }

    async fn get(port: u16, body: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn bodiless_requests_skip_a_refusing_endpoint() {
        let (table, _) = world().await;
        let (_tx, rx) = watch::channel(table);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve_http(
            listener,
            Forwarder {
                table: rx,
                client: upstream_client(),
                scheme: "http",
                port,
            },
        ));
        // Round-robin alternates live and dead: every bodiless request still succeeds.
        for _ in 0..4 {
            let answer = get(port, "").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.ends_with("ok 198.51.100.1, 127.0.0.1"), "{answer}");
        }
        // A request with a body is not replayed: one of two gets 502.
        let answers = [get(port, "x").await, get(port, "x").await];
        assert_eq!(
            answers
                .iter()
                .filter(|a| a.starts_with("HTTP/1.1 502"))
                .count(),
            1,
            "{answers:?}"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }
}
