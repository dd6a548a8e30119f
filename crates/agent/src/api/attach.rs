//! `attach` over WebSocket: kubelet's `/attach/{ns}/{pod}/{container}` with the channel
//! protocols of exec (exec.rs: `v5.channel.k8s.io`, `v4.channel.k8s.io`, the same stream
//! numbers and framing). The session is a bridge between the WebSocket and the container's
//! shim, which owns the container's stdio and serves attach on a unix socket
//! (`runtime::shim::attach`): stdin bytes, the end of stdin (v5) and window sizes go to the
//! shim; the container's output from now on comes back. Whether the container has a terminal
//! is the container's (its spec's `tty`), as kubelet decides, not the request's.
//!
//! Errors after the upgrade (container not running, stdin not kept open) are reported as
//! kubelet reports them: a `Status` on the error stream ("error attaching to container: …").
//! When the container exits, or the shim ends the session, the error stream carries Success.

use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use runtime::shim::attach::{Frame, FrameReader, FromShim, StreamSet, ToShim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::exec::{
    exit_status, frame, internal_error, running_container, ChannelUpgrade, PROTOCOLS, STREAM_CLOSE,
    STREAM_ERROR, STREAM_RESIZE, STREAM_STDERR, STREAM_STDIN, STREAM_STDOUT,
};
use super::server::Body;
use crate::pods::layout::Layout;

/// How long the shim has to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The attach options kubelet reads from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T")
}

impl AttachOptions {
    /// kubelet's `NewOptions` without a command: at least one stream, and a terminal has no
    /// separate stderr.
    pub fn from_query(query: Option<&str>) -> Result<AttachOptions, String> {
        let mut o = AttachOptions::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "stdin" | "input" => o.stdin = truthy(&v),
                "stdout" | "output" => o.stdout = truthy(&v),
                "stderr" | "error" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if o.tty && o.stderr {
            return Err("tty and stderr cannot both be true".into());
        }
        Ok(o)
    }
}

/// One WebSocket message from the client, as the shim should hear it.
pub fn client_message(data: &[u8], v5: bool) -> Option<ToShim> {
    let (&stream, payload) = data.split_first()?;
    match stream {
        STREAM_STDIN => Some(ToShim::Stdin(payload.to_vec())),
        STREAM_RESIZE => {
            #[derive(serde::Deserialize)]
            struct Size {
                #[serde(rename = "Width")]
                width: u16,
                #[serde(rename = "Height")]
                height: u16,
            }
            let size: Size = serde_json::from_slice(payload).ok()?;
            Some(ToShim::Resize {
                rows: size.height,
                cols: size.width,
            })
        }
        STREAM_CLOSE if v5 && payload.first() == Some(&STREAM_STDIN) => Some(ToShim::CloseStdin),
        _ => None,
    }
}

/// The status for an attach that failed, in kubelet's words.
pub fn attach_error(message: &str) -> serde_json::Value {
    internal_error(&format!("error attaching to container: {message}"))
}

/// Handles `/attach/...`: checks, answers 101 and runs the session on the upgraded
/// connection.
pub fn handle(
    layout: &Layout,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    text: impl Fn(StatusCode, &str) -> Response<Body>,
) -> Response<Body> {
    let opts = match AttachOptions::from_query(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let upgrade = match ChannelUpgrade::check(&req, "attach") {
        Ok(u) => u,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    // Where the container is is decided now; everything after the upgrade reports on the
    // error stream, so kubectl shows it instead of falling back to SPDY.
    let target = running_container(layout, namespace, pod, container).map_err(|(_, m)| m);
    let v5 = upgrade.protocol == PROTOCOLS[0];
    upgrade.switch(req, "attach", text, move |ws| session(ws, opts, target, v5))
}

async fn session<S>(
    ws: WebSocketStream<S>,
    opts: AttachOptions,
    target: Result<PathBuf, String>,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    // One writer: frames go out in the order they were produced.
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // kubelet announces the connection on the lowest writable stream.
    let first = if opts.stdout {
        STREAM_STDOUT
    } else if opts.stderr {
        STREAM_STDERR
    } else {
        STREAM_ERROR
    };
    let _ = out_tx.send(frame(first, &[])).await;

    let status = match target {
        Err(e) => attach_error(&e),
        Ok(state_dir) => match bridge(&state_dir, opts, v5, &mut incoming, &out_tx).await {
            Ok(()) => exit_status(0),
            Err(e) => {
                tracing::debug!("attach to {}: {e}", state_dir.display());
                attach_error(&e)
            }
        },
    };
    let _ = out_tx
        .send(frame(STREAM_ERROR, status.to_string().as_bytes()))
        .await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
}

/// Connects to the shim, says hello and pumps both ways until the shim ends the session
/// (the container exited, or the client's input ended) or the client goes away.
async fn bridge<R>(
    state_dir: &std::path::Path,
    opts: AttachOptions,
    v5: bool,
    incoming: &mut R,
    out: &mpsc::Sender<Message>,
) -> Result<(), String>
where
    R: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let std_sock = runtime::shim::attach::connect(state_dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "container is not running".to_string()
        }
        _ => format!("connecting to the container's shim: {e}"),
    })?;
    std_sock
        .set_nonblocking(true)
        .map_err(|e| format!("attach socket: {e}"))?;
    let sock =
        tokio::net::UnixStream::from_std(std_sock).map_err(|e| format!("attach socket: {e}"))?;
    let (mut from_shim, mut to_shim) = sock.into_split();
    let hello = ToShim::Hello(StreamSet {
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    });
    send(&mut to_shim, &hello).await?;

    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    let answer = tokio::time::timeout(
        HELLO_TIMEOUT,
        next_message(&mut from_shim, &mut reader, &mut buf),
    )
    .await
    .map_err(|_| "the container's shim did not answer".to_string())??;
    let tty = match answer {
        Some(FromShim::Ready { tty }) => tty,
        Some(FromShim::Refused(reason)) => return Err(reason),
        Some(other) => return Err(format!("unexpected first message from the shim: {other:?}")),
        None => return Err("container is not running".into()),
    };
    loop {
        tokio::select! {
            m = next_message(&mut from_shim, &mut reader, &mut buf) => match m? {
                Some(FromShim::Stdout(data)) => {
                    if out.send(frame(STREAM_STDOUT, &data)).await.is_err() {
                        return Ok(());
                    }
                }
                // A terminal has one stream; kubelet sends it as stdout.
                Some(FromShim::Stderr(data)) if !tty => {
                    if out.send(frame(STREAM_STDERR, &data)).await.is_err() {
                        return Ok(());
                    }
                }
                Some(_) => {}
                // The shim ended the session: the container exited or the input ended.
                None => return Ok(()),
            },
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if let Some(m) = client_message(&data, v5) {
                        send(&mut to_shim, &m).await?;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Some(m) = client_message(t.as_bytes(), v5) {
                        send(&mut to_shim, &m).await?;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // The client went away: leaving ends this session in the shim, which
                    // closes stdin for a stdinOnce container.
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send(to_shim: &mut OwnedWriteHalf, m: &ToShim) -> Result<(), String> {
    to_shim
        .write_all(&m.encode())
        .await
        .map_err(|e| format!("writing to the container's shim: {e}"))
}

/// The next message from the shim; None at the end of the connection.
async fn next_message(
    from_shim: &mut tokio::net::unix::OwnedReadHalf,
    reader: &mut FrameReader,
    buf: &mut [u8],
) -> Result<Option<FromShim>, String> {
    loop {
        if let Some(m) = reader
            .next_message::<FromShim>()
            .map_err(|e| e.to_string())?
        {
            return Ok(Some(m));
        }
        match from_shim.read(buf).await {
            Ok(0) => return Ok(None),
            Ok(n) => reader.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading from the container's shim: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_options_as_kubelet() {
        let o = AttachOptions::from_query(Some("stdin=true&stdout=true&tty=true&container=c"))
            .expect("options");
        assert_eq!(
            o,
            AttachOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        let cases = [
            ("", "you must specify at least 1 of stdin, stdout, stderr"),
            (
                "tty=1",
                "you must specify at least 1 of stdin, stdout, stderr",
            ),
            (
                "stdout=1&stderr=1&tty=1",
                "tty and stderr cannot both be true",
            ),
        ];
        for (q, want) in cases {
            assert_eq!(
                AttachOptions::from_query(Some(q)).expect_err(q),
                want,
                "{q}"
            );
        }
    }

    #[test]
    fn client_messages_become_shim_messages() {
        let cases: [(&[u8], bool, Option<ToShim>); 7] = [
            (b"\x00ls\n", true, Some(ToShim::Stdin(b"ls\n".to_vec()))),
            (
                b"\x04{\"Width\":120,\"Height\":40}",
                true,
                Some(ToShim::Resize {
                    rows: 40,
                    cols: 120,
                }),
            ),
            (b"\x04not json", true, None),
            (b"\xff\x00", true, Some(ToShim::CloseStdin)),
            (b"\xff\x00", false, None),
            (b"\xff\x01", true, None),
            (b"", true, None),
        ];
        for (data, v5, want) in cases {
            assert_eq!(client_message(data, v5), want, "{data:?} v5={v5}");
        }
    }

    #[test]
    fn errors_read_as_kubelet_writes_them() {
        let s = attach_error("container is not running");
        assert_eq!(
            s["message"],
            "Internal error occurred: error attaching to container: container is not running"
        );
        assert_eq!(s["status"], "Failure");
    }
}
