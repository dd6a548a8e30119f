//! The WebSocket form of port-forward: kubectl (>= 1.31) carries its SPDY session in the
//! binary messages of a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`, message
//! boundaries meaning nothing. This turns such a WebSocket into a plain byte stream for
//! the session.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bytes buffered between the WebSocket and the session, each way.
const BUFFER: usize = 256 * 1024;
/// Bytes per outgoing message.
const MESSAGE: usize = 32 * 1024;
/// Once one direction ended, how long the other may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The session's end of a byte stream carried by `ws`; a task pumps between the two until
/// either side closes.
pub fn byte_stream<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (session_end, tunnel_end) = tokio::io::duplex(BUFFER);
    tokio::spawn(pump(ws, tunnel_end));
    session_end
}

async fn pump<S>(ws: WebSocketStream<S>, tunnel_end: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut messages) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(tunnel_end);
    let inbound = async move {
        while let Some(message) = messages.next().await {
            let bytes = match message {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::from(t.as_str().as_bytes().to_vec()),
                // Pings are answered by the WebSocket layer itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => break,
                Err(e) => {
                    tracing::debug!("port-forward WebSocket: {e}");
                    break;
                }
            };
            if to_session.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; MESSAGE];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        // A normal closure: client-go takes any other as an error.
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut outbound).await;
        }
        _ = &mut outbound => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut inbound).await;
        }
    }
}
