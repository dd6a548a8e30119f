//! `kubectl port-forward`: kubelet's `/portForward/{namespace}/{pod}`.
//!
//! The client opens a SPDY/3.1 session, either tunnelled through a WebSocket
//! (`Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`, kubectl >= 1.31's default) or
//! as a plain `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io`
//! (older clients, or kubectl's fallback). Either way the session speaks
//! `portforward.k8s.io`: a pair of streams per forwarded connection, dialled to the port
//! on the pod's loopback inside its network namespace.
//!
//! - [`frame`]: SPDY/3.1 frames and header compression (pure).
//! - [`protocol`]: stream headers, pairing, error texts (pure).
//! - [`target`]: finding the pod and dialling inside its network namespace.
//! - [`session`]: the SPDY session and the copying.
//! - [`tunnel`]: a WebSocket as a byte stream.

pub mod frame;
pub mod protocol;
pub mod session;
pub mod target;
pub mod tunnel;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::server::Body;
use crate::pods::layout::Layout;
use protocol::{PROTOCOL_V1, WEBSOCKET_TUNNEL_PROTOCOL};

/// `X-Stream-Protocol-Version`: the protocols a SPDY client offers, and the one chosen.
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// Which kind of upgrade to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// SPDY inside WebSocket binary messages; `accept` is the `Sec-WebSocket-Accept`.
    WebSocketTunnel { accept: String },
    /// SPDY directly on the connection; `named_protocol` when the client offered
    /// `portforward.k8s.io` (very old clients offer nothing and get version 1).
    Spdy { named_protocol: bool },
}

/// Reads the upgrade the client asks for. Pure: tested below.
pub fn choose_upgrade(headers: &HeaderMap) -> Result<Upgrade, (StatusCode, String)> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let upgrade = values(header::UPGRADE.as_str());
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = values(header::SEC_WEBSOCKET_PROTOCOL.as_str());
        if !offered.iter().any(|p| p == WEBSOCKET_TUNNEL_PROTOCOL) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "none of the offered WebSocket subprotocols {offered:?} is supported; supported: {WEBSOCKET_TUNNEL_PROTOCOL}"
                ),
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err((StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key".into()));
        };
        return Ok(Upgrade::WebSocketTunnel {
            accept: derive_accept_key(key.as_bytes()),
        });
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        let offered = values(STREAM_PROTOCOL_HEADER);
        if offered.is_empty() {
            return Ok(Upgrade::Spdy {
                named_protocol: false,
            });
        }
        if offered.iter().any(|p| p == PROTOCOL_V1) {
            return Ok(Upgrade::Spdy {
                named_protocol: true,
            });
        }
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PROTOCOL_V1}]"
            ),
        ));
    }
    Err((
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request (port-forward needs a WebSocket with subprotocol SPDY/3.1+portforward.k8s.io, or Upgrade: SPDY/3.1)".into(),
    ))
}

/// Handles `/portForward/{namespace}/{pod}`: answers 101 and serves the session on the
/// upgraded connection.
pub fn handle(
    layout: &Layout,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    text: impl Fn(StatusCode, &str) -> Response<Body>,
) -> Response<Body> {
    let upgrade = match choose_upgrade(req.headers()) {
        Ok(u) => u,
        Err((code, message)) => return text(code, &message),
    };
    let target = match target::locate_pod(layout, namespace, pod) {
        Ok(t) => t,
        Err((code, message)) => return text(code, &message),
    };
    let mut answer = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade");
    answer = match &upgrade {
        Upgrade::WebSocketTunnel { accept } => answer
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept.as_str())
            .header(header::SEC_WEBSOCKET_PROTOCOL, WEBSOCKET_TUNNEL_PROTOCOL),
        Upgrade::Spdy { named_protocol } => {
            let answer = answer.header(header::UPGRADE, "SPDY/3.1");
            if *named_protocol {
                answer.header(STREAM_PROTOCOL_HEADER, PROTOCOL_V1)
            } else {
                answer
            }
        }
    };
    let label = format!("{namespace}/{pod}");
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("port-forward to {label}: upgrade: {e}");
                return;
            }
        };
        let io = TokioIo::new(upgraded);
        match upgrade {
            Upgrade::WebSocketTunnel { .. } => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                session::serve(tunnel::byte_stream(ws), target).await;
            }
            Upgrade::Spdy { .. } => session::serve(io, target).await,
        }
        tracing::debug!("port-forward to {label} ended");
    });
    answer
        .body(http_body_util::BodyExt::boxed(http_body_util::Empty::new()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn chooses_the_upgrade_kubectl_asks_for() {
        let ws = choose_upgrade(&headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]));
        assert_eq!(
            ws,
            Ok(Upgrade::WebSocketTunnel {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            })
        );
        let spdy = choose_upgrade(&headers(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]));
        assert_eq!(
            spdy,
            Ok(Upgrade::Spdy {
                named_protocol: true
            })
        );
        let legacy = choose_upgrade(&headers(&[("upgrade", "SPDY/3.1")]));
        assert_eq!(
            legacy,
            Ok(Upgrade::Spdy {
                named_protocol: false
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        let cases = [
            (
                vec![
                    ("upgrade", "websocket"),
                    ("sec-websocket-key", "x"),
                    ("sec-websocket-protocol", "v4.channel.k8s.io"),
                ],
                StatusCode::BAD_REQUEST,
            ),
            (
                vec![
                    ("upgrade", "websocket"),
                    ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
                ],
                StatusCode::BAD_REQUEST,
            ),
            (
                vec![
                    ("upgrade", "SPDY/3.1"),
                    ("x-stream-protocol-version", "v9.portforward.k8s.io"),
                ],
                StatusCode::FORBIDDEN,
            ),
            (vec![], StatusCode::BAD_REQUEST),
        ];
        for (h, want) in cases {
            let got = choose_upgrade(&headers(&h)).expect_err("refused");
            assert_eq!(got.0, want, "{h:?}: {}", got.1);
        }
    }
}
