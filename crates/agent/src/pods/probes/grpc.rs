//! kubelet's gRPC probe (`pkg/probe/grpc`): one `grpc.health.v1.Health/Check` call with
//! `HealthCheckRequest{service}` over plain HTTP/2 (kubelet offers no TLS for gRPC probes),
//! a success only when the answer is `SERVING`, and kubelet's messages for the rest:
//! `service unhealthy (responded with "NOT_SERVING")`, `timeout: failed to connect service
//! "127.0.0.1:9090" within 1s: context deadline exceeded`, `timeout: health rpc did not
//! complete within 1s`, `error: this server does not implement the grpc health protocol
//! (grpc.health.v1.Health): ...`, `error: health rpc probe failed: rpc error: code = ...
//! desc = ...`. `timeoutSeconds` bounds connecting and the call together. Like grpc-go's
//! blocking dial, a refused connection is retried with backoff until the deadline.
//!
//! Decision: hyper's HTTP/2 client with the gRPC framing written here, not tonic. A unary
//! call is a POST with a 5-byte length prefix and a status in the trailers, ~100 lines;
//! tonic's channel would add tower buffers and a background task per probe run, and gives
//! no way to hand it the socket we opened in the pod's namespace short of a custom
//! connector. The two messages are declared by hand with prost (as the etcd client does),
//! so there is no protoc and no build script.
//!
//! Blocking: it runs on a thread inside the pod's network namespace, on a current-thread
//! runtime of its own, so every socket is made on that thread (in that namespace).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;

use super::{join_host_port, Probed, KUBE_PROBE_VERSION};

/// The RPC's path.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// grpc-go's first reconnect backoff and its growth.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const BACKOFF_MULTIPLIER: f64 = 1.6;
/// A health answer larger than this is not a health answer (grpc-go's default limit is 4 MiB).
const MAX_RESPONSE: usize = 4 << 20;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; the status enum kept as `i32`, so a value from a
/// newer server decodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// Go's `String()` of a `ServingStatus`.
fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// A failed call's gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RpcStatus {
    code: i32,
    message: String,
}

const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const UNIMPLEMENTED: i32 = 12;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

impl RpcStatus {
    fn new(code: i32, message: impl Into<String>) -> RpcStatus {
        RpcStatus {
            code,
            message: message.into(),
        }
    }
}

/// grpc-go's names of status codes (`codes.Code.String()`).
fn code_name(code: i32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

/// Go's `%v` of a `time.Duration` of whole seconds (`1s`, `1m30s`, `1h0m0s`).
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

/// kubelet's event text for a failed call.
fn failure_message(status: &RpcStatus, timeout: Duration) -> String {
    match status.code {
        UNIMPLEMENTED => format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            status.message
        ),
        DEADLINE_EXCEEDED => format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        ),
        code => format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {}",
            code_name(code),
            status.message
        ),
    }
}

/// kubelet's verdict on a call's answer.
fn verdict(answer: Result<HealthCheckResponse, RpcStatus>, timeout: Duration) -> Probed {
    match answer {
        Ok(r) if r.status == SERVING => Probed::Success,
        Ok(r) => Probed::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status_name(r.status)
        )),
        Err(status) => Probed::Failure(failure_message(&status, timeout)),
    }
}

/// Runs one gRPC probe against `host:port`. Blocking.
pub fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Probed {
    let addr = join_host_port(host, port);
    let target = match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Probed::Failure(format!(
                "error: failed to connect service at {addr:?}: no address"
            ))
        }
        Err(e) => {
            return Probed::Failure(format!("error: failed to connect service at {addr:?}: {e}"))
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Probed::Failure(format!("starting the gRPC probe: {e}")),
    };
    runtime.block_on(check(target, &addr, service, timeout))
}

async fn check(target: SocketAddr, addr: &str, service: &str, timeout: Duration) -> Probed {
    let deadline = tokio::time::Instant::from_std(Instant::now() + timeout);
    let stream = match tokio::time::timeout_at(deadline, connect_with_backoff(target)).await {
        Ok(s) => s,
        Err(_) => {
            return Probed::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
                go_duration(timeout)
            ))
        }
    };
    let answer = match tokio::time::timeout_at(deadline, call(stream, addr, service, timeout)).await
    {
        Ok(answer) => answer,
        Err(_) => Err(RpcStatus::new(
            DEADLINE_EXCEEDED,
            "context deadline exceeded",
        )),
    };
    verdict(answer, timeout)
}

/// grpc-go's blocking dial: a refused or failed connection is tried again after a growing
/// backoff, until the caller's deadline ends it.
async fn connect_with_backoff(target: SocketAddr) -> tokio::net::TcpStream {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(target).await {
            let _ = s.set_nodelay(true);
            return s;
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff
            .mul_f64(BACKOFF_MULTIPLIER)
            .min(Duration::from_secs(120));
    }
}

/// The unary call on a new HTTP/2 connection.
async fn call(
    stream: tokio::net::TcpStream,
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<HealthCheckResponse, RpcStatus> {
    let unavailable =
        |e: hyper::Error| RpcStatus::new(UNAVAILABLE, format!("connection error: {e}"));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(unavailable)?;
    // The connection's task ends with the runtime when the probe is done.
    tokio::spawn(connection);
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let http_request = hyper::Request::post(format!("http://{addr}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", format!("kube-probe/{KUBE_PROBE_VERSION}"))
        .header("grpc-timeout", format!("{}m", timeout.as_millis().max(1)))
        .body(Full::new(frame(&request)))
        .map_err(|e| RpcStatus::new(INTERNAL, e.to_string()))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(unavailable)?;
    let (parts, body) = response.into_parts();
    if parts.status != hyper::StatusCode::OK {
        return Err(status_from_http(parts.status));
    }
    let content_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return Err(RpcStatus::new(
            UNKNOWN,
            format!("transport: received unexpected content-type {content_type:?}"),
        ));
    }
    // A trailers-only answer carries its status in the headers.
    if let Some(status) = grpc_status(&parts.headers) {
        status?;
        return decode_response(&[]);
    }
    let collected = body
        .collect()
        .await
        .map_err(|e| RpcStatus::new(UNAVAILABLE, format!("connection error: {e}")))?;
    let status = collected.trailers().and_then(grpc_status).ok_or_else(|| {
        RpcStatus::new(
            INTERNAL,
            "server closed the stream without sending trailers",
        )
    });
    status??;
    decode_response(&collected.to_bytes())
}

/// A request message with gRPC's length prefix (uncompressed).
fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(0);
    out.put_u32(payload.len() as u32);
    out.put_slice(&payload);
    out.freeze()
}

/// The single response message of a unary call.
fn decode_response(mut data: &[u8]) -> Result<HealthCheckResponse, RpcStatus> {
    if data.is_empty() {
        return Err(RpcStatus::new(
            INTERNAL,
            "cardinality violation: received no response message from non-streaming RPC",
        ));
    }
    if data.len() < 5 {
        return Err(RpcStatus::new(INTERNAL, "unexpected EOF"));
    }
    let compressed = data.get_u8();
    let len = data.get_u32() as usize;
    if compressed != 0 {
        return Err(RpcStatus::new(
            INTERNAL,
            "grpc: compressed flag set with identity or empty encoding",
        ));
    }
    if len > MAX_RESPONSE {
        return Err(RpcStatus::new(
            8, // ResourceExhausted
            format!("grpc: received message larger than max ({len} vs. {MAX_RESPONSE})"),
        ));
    }
    if data.len() < len {
        return Err(RpcStatus::new(INTERNAL, "unexpected EOF"));
    }
    HealthCheckResponse::decode(&data[..len]).map_err(|e| {
        RpcStatus::new(
            INTERNAL,
            format!("grpc: failed to unmarshal the received message: {e}"),
        )
    })
}

/// `grpc-status` (and `grpc-message`) of headers or trailers: None when absent, Ok(()) for
/// OK.
fn grpc_status(headers: &hyper::HeaderMap) -> Option<Result<(), RpcStatus>> {
    let code = headers.get("grpc-status")?;
    let code = match code.to_str().ok().and_then(|c| c.parse::<i32>().ok()) {
        Some(c) => c,
        None => {
            return Some(Err(RpcStatus::new(
                INTERNAL,
                format!("transport: malformed grpc-status: {code:?}"),
            )))
        }
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(RpcStatus::new(code, message)))
}

/// `grpc-message` is percent-encoded UTF-8.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).and_then(|b| hex(*b)),
            raw.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// grpc-go's status for an answer that is not HTTP 200 (`HTTPStatusConvTab`).
fn status_from_http(status: hyper::StatusCode) -> RpcStatus {
    let code = match status.as_u16() {
        400 => INTERNAL,
        401 => 16, // Unauthenticated
        403 => 7,  // PermissionDenied
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    };
    RpcStatus::new(
        code,
        format!(
            "unexpected HTTP status code received from server: {} ({})",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_wire_format() {
        // HealthCheckRequest{service: "db"}: field 1, length-delimited.
        let framed = frame(&HealthCheckRequest {
            service: "db".into(),
        });
        assert_eq!(&framed[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        // SERVING and NOT_SERVING answers as a server frames them; UNKNOWN is empty.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 1]),
            Ok(HealthCheckResponse { status: SERVING })
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 2]),
            Ok(HealthCheckResponse { status: 2 })
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 0]),
            Ok(HealthCheckResponse { status: 0 })
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 9, 0x08]).unwrap_err().code,
            INTERNAL
        );
        assert_eq!(
            decode_response(&[1, 0, 0, 0, 0]).unwrap_err().code,
            INTERNAL
        );
    }

    #[test]
    fn verdicts_read_like_kubelets() {
        let second = Duration::from_secs(1);
        assert_eq!(
            verdict(Ok(HealthCheckResponse { status: 1 }), second),
            Probed::Success
        );
        assert_eq!(
            verdict(Ok(HealthCheckResponse { status: 2 }), second),
            Probed::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            verdict(Ok(HealthCheckResponse { status: 7 }), second),
            Probed::Failure("service unhealthy (responded with \"7\")".into())
        );
        assert_eq!(
            verdict(
                Err(RpcStatus::new(DEADLINE_EXCEEDED, "x")),
                Duration::from_secs(90)
            ),
            Probed::Failure("timeout: health rpc did not complete within 1m30s".into())
        );
        assert_eq!(
            verdict(Err(status_from_http(hyper::StatusCode::NOT_FOUND)), second),
            Probed::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unexpected HTTP status code received from server: 404 (Not Found)"
                    .into()
            )
        );
        assert_eq!(
            verdict(Err(RpcStatus::new(5, "unknown service db")), second),
            Probed::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service db"
                    .into()
            )
        );
        assert_eq!(code_name(99), "Code(99)");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn status_trailers_are_decoded() {
        let mut trailers = hyper::HeaderMap::new();
        assert_eq!(grpc_status(&trailers), None);
        trailers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(grpc_status(&trailers), Some(Ok(())));
        trailers.insert("grpc-status", "5".parse().unwrap());
        trailers.insert(
            "grpc-message",
            "unknown%20service%3A%20caf%C3%A9".parse().unwrap(),
        );
        assert_eq!(
            grpc_status(&trailers),
            Some(Err(RpcStatus::new(5, "unknown service: café")))
        );
    }

    /// A loopback gRPC health server (hyper's HTTP/2 server, as a Rust service would run
    /// one): answers `status` for any service but "missing" (NOT_FOUND, as grpc-go's health
    /// server) and "slow" (after 3 s).
    fn health_server(status: std::sync::Arc<std::sync::atomic::AtomicI32>) -> u16 {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let status = status.clone();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let status = status.clone();
                            async move {
                                assert_eq!(req.uri().path(), CHECK_PATH);
                                let body = req.into_body().collect().await?.to_bytes();
                                let asked = HealthCheckRequest::decode(&body[5..]).unwrap();
                                let mut trailers = hyper::HeaderMap::new();
                                let mut frames = Vec::new();
                                if asked.service == "missing" {
                                    trailers.insert("grpc-status", "5".parse().unwrap());
                                    trailers.insert(
                                        "grpc-message",
                                        "unknown%20service".parse().unwrap(),
                                    );
                                } else {
                                    if asked.service == "slow" {
                                        tokio::time::sleep(Duration::from_secs(3)).await;
                                    }
                                    let answer = HealthCheckResponse {
                                        status: status.load(std::sync::atomic::Ordering::SeqCst),
                                    };
                                    frames.push(Ok::<_, hyper::Error>(Frame::data(frame(&answer))));
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                }
                                frames.push(Ok(Frame::trailers(trailers)));
                                let body = StreamBody::new(futures::stream::iter(frames));
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/grpc")
                                        .body(body)
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), service),
                    );
                }
            });
        });
        port
    }

    #[test]
    fn a_health_server_is_asked_for_the_service() {
        let status = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(SERVING));
        let port = health_server(status.clone());
        let second = Duration::from_secs(1);
        assert_eq!(probe("127.0.0.1", port, "", second), Probed::Success);
        status.store(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            probe("127.0.0.1", port, "db", second),
            Probed::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            probe("127.0.0.1", port, "missing", second),
            Probed::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
        assert_eq!(
            probe("127.0.0.1", port, "slow", second),
            Probed::Failure("timeout: health rpc did not complete within 1s".into())
        );
    }

    /// Probers run on tokio's blocking pool (host-network pods run there without a netns
    /// thread): the probe's own runtime must start there.
    #[tokio::test]
    async fn a_probe_runs_from_the_blocking_pool() {
        let status = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(SERVING));
        let port = health_server(status);
        let probed = tokio::task::spawn_blocking(move || {
            probe("127.0.0.1", port, "", Duration::from_secs(1))
        })
        .await
        .unwrap();
        assert_eq!(probed, Probed::Success);
    }

    #[test]
    fn a_refused_connection_times_out_as_grpc_gos_blocking_dial() {
        // Nothing listens on port 1 of the loopback.
        assert_eq!(
            probe("127.0.0.1", 1, "", Duration::from_secs(1)),
            Probed::Failure(
                "timeout: failed to connect service \"127.0.0.1:1\" within 1s: context deadline exceeded"
                    .into()
            )
        );
    }
}
