//! `exec` over WebSocket: kubelet's `/exec/{ns}/{pod}/{container}` with the channel
//! protocols `v5.channel.k8s.io` (kubectl >= 1.30's default) and `v4.channel.k8s.io`.
//!
//! Every binary message starts with its stream: 0 stdin, 1 stdout, 2 stderr, 3 error (one
//! JSON `metav1.Status` at the end, carrying the exit code), 4 resize (`{"Width","Height"}`);
//! v5 adds 255, "close stream N" (stdin EOF). The process runs through the
//! `container-exec` helper of the agent's own binary, on pipes or, with `tty`, on a pty
//! allocated in the container's devpts (stdout only: the terminal merges stderr).
//!
//! Deciding (query, subprotocol, status JSON) is pure and tested here; the session pumps
//! bytes between the WebSocket and the process until it exits and its output is drained.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::server::Body;
use crate::pods::layout::Layout;
use crate::pods::observe::observe;
use crate::pods::sandbox::read_record;

pub const STREAM_STDIN: u8 = 0;
pub const STREAM_STDOUT: u8 = 1;
pub const STREAM_STDERR: u8 = 2;
pub const STREAM_ERROR: u8 = 3;
pub const STREAM_RESIZE: u8 = 4;
/// v5: `[255, n]` closes stream n.
pub const STREAM_CLOSE: u8 = 255;

/// The subprotocols served, most preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long output is still forwarded after the process exited: a background child that
/// kept the pipes (or the terminal) open must not hold the session forever.
const DRAIN: Duration = Duration::from_secs(2);

/// The exec options kubelet reads from the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T")
}

impl ExecOptions {
    /// kubelet's `NewOptions`: at least one stream, and a terminal has no separate stderr.
    pub fn from_query(query: Option<&str>) -> Result<ExecOptions, String> {
        let mut o = ExecOptions::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "stdin" | "input" => o.stdin = truthy(&v),
                "stdout" | "output" => o.stdout = truthy(&v),
                "stderr" | "error" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
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

/// The subprotocol to speak: ours in our order of preference, among those offered.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    PROTOCOLS.iter().copied().find(|p| offered.contains(p))
}

/// The status written on the error stream when the process exited with `code`.
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The status for a failure to run the command at all.
pub fn internal_error(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The shim state directory of the running attempt of `container` in pod `namespace/pod`.
pub fn running_container(
    layout: &Layout,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<PathBuf, (StatusCode, String)> {
    let mut found_pod = false;
    let entries = std::fs::read_dir(layout.pods_root()).into_iter().flatten();
    for entry in entries.flatten() {
        let Ok(uid) = entry.file_name().into_string() else {
            continue;
        };
        let Some(record) = read_record(layout, &uid) else {
            continue;
        };
        if record.namespace != namespace || record.name != pod {
            continue;
        }
        found_pod = true;
        let observed = observe(layout, &uid, true);
        if let Some(attempt) = observed
            .attempts(container)
            .iter()
            .rev()
            .find(|a| a.is_running())
        {
            return Ok(layout
                .attempt_dir(&uid, container, attempt.number)
                .join("shim"));
        }
    }
    if found_pod {
        Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container not found ({container:?})"),
        ))
    } else {
        Err((StatusCode::NOT_FOUND, "pod does not exist".into()))
    }
}

/// Handles `/exec/...`: checks, answers 101 and runs the session on the upgraded connection.
pub fn handle(
    layout: &Layout,
    binary: &Path,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    text: impl Fn(StatusCode, &str) -> Response<Body>,
) -> Response<Body> {
    let opts = match ExecOptions::from_query(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let upgrade = match ChannelUpgrade::check(&req, "exec") {
        Ok(u) => u,
        Err(message) => return text(StatusCode::BAD_REQUEST, &message),
    };
    let state_dir = match running_container(layout, namespace, pod, container) {
        Ok(d) => d,
        Err((code, msg)) => return text(code, &msg),
    };
    let binary = binary.to_path_buf();
    let v5 = upgrade.protocol == PROTOCOLS[0];
    upgrade.switch(req, "exec", text, move |ws| {
        session(ws, opts, binary, state_dir, v5)
    })
}

/// A request to speak a channel protocol over WebSocket (exec and attach), checked.
pub struct ChannelUpgrade {
    key: hyper::header::HeaderValue,
    /// The subprotocol chosen, one of [`PROTOCOLS`].
    pub protocol: &'static str,
}

/// The WebSocket a channel-protocol session runs on.
pub type ChannelSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

impl ChannelUpgrade {
    /// The client's key and the subprotocol to use, or why `req` (for `what`: exec or
    /// attach) cannot be upgraded.
    pub fn check(req: &Request<Incoming>, what: &str) -> Result<ChannelUpgrade, String> {
        let is_websocket = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !is_websocket {
            return Err(format!(
                "this node serves {what} over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io); SPDY is not supported"
            ));
        }
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Err("missing Sec-WebSocket-Key".into());
        };
        let offered: Vec<String> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        let Some(protocol) = negotiate(offered.iter().map(String::as_str)) else {
            return Err(format!(
                "none of the offered subprotocols {offered:?} is supported; supported: {}",
                PROTOCOLS.join(", ")
            ));
        };
        Ok(ChannelUpgrade { key, protocol })
    }

    /// Answers 101 and runs `session` on the upgraded connection.
    pub fn switch<F, Fut>(
        self,
        req: Request<Incoming>,
        what: &'static str,
        text: impl Fn(StatusCode, &str) -> Response<Body>,
        session: F,
    ) -> Response<Body>
    where
        F: FnOnce(ChannelSocket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!("{what} upgrade: {e}");
                    return;
                }
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            session(ws).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(
                "Sec-WebSocket-Accept",
                derive_accept_key(self.key.as_bytes()),
            )
            .header("Sec-WebSocket-Protocol", self.protocol)
            .body(http_body_util::BodyExt::boxed(http_body_util::Empty::new()))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the upgrade"))
    }
}

/// One channel-protocol message: the stream byte, then the data (attach.rs shares it).
pub fn frame(stream: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(stream);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Where stdin bytes and resizes go.
enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Pty(Arc<AsyncFd<File>>),
    None,
}

async fn session<S>(
    ws: WebSocketStream<S>,
    opts: ExecOptions,
    binary: PathBuf,
    state_dir: PathBuf,
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
            if sink.send(m).await.is_err() {
                break;
            }
            if closing {
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

    let status = match run(&opts, &binary, &state_dir, v5, &mut incoming, &out_tx).await {
        Ok(code) => exit_status(code),
        Err(e) => {
            tracing::debug!("exec in {}: {e}", state_dir.display());
            internal_error(&e)
        }
    };
    let _ = out_tx
        .send(frame(STREAM_ERROR, status.to_string().as_bytes()))
        .await;
    // A normal closure (1000): client-go takes any other close as an error on every stream.
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
}

/// Runs the process and pumps its streams; its exit code.
async fn run<R>(
    opts: &ExecOptions,
    binary: &Path,
    state_dir: &Path,
    v5: bool,
    incoming: &mut R,
    out: &mpsc::Sender<Message>,
) -> Result<i32, String>
where
    R: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let req = runtime::exec::ExecRequest {
        state_dir: state_dir.to_path_buf(),
        argv: opts.command.clone(),
        env: Vec::new(),
        tty: opts.tty,
        cwd: None,
    };
    let mut cmd = runtime::exec::command(binary, &req);
    let mut readers = Vec::new();
    let mut input;
    let mut child;
    if opts.tty {
        let (master, slave) = runtime::exec::open_container_pty(state_dir)
            .map_err(|e| format!("allocating a terminal: {e}"))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| format!("duplicating the pty: {e}"))
        };
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        // `cmd` (holding the slave copies) was consumed: only the child keeps the slave.
        let master = File::from(master);
        set_nonblocking(&master).map_err(|e| format!("pty: {e}"))?;
        // SAFETY: `File` owns its descriptor and returns the same one until it is dropped
        // together with the AsyncFd.
        let master = unsafe { AsyncFd::register(master) }.map_err(|e| format!("pty: {e}"))?;
        let master = Arc::new(master);
        let m = master.clone();
        let out = out.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            // EIO once every slave is closed: the end of the terminal's output.
            while let Ok(n) = pty_read(&m, &mut buf).await {
                if n == 0 || out.send(frame(STREAM_STDOUT, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }));
        input = if opts.stdin {
            Input::Pty(master)
        } else {
            Input::None
        };
    } else {
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(opts.stdin))
            .stdout(pipe(opts.stdout))
            .stderr(pipe(opts.stderr));
        child = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(forward(stdout, STREAM_STDOUT, out.clone())));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(forward(stderr, STREAM_STDERR, out.clone())));
        }
        input = match child.stdin.take() {
            Some(s) => Input::Pipe(Some(s)),
            None => Input::None,
        };
    }

    let mut client_gone = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = incoming.next(), if !client_gone => match msg {
                Some(Ok(Message::Binary(data))) => input_message(&data, &mut input, v5).await,
                Some(Ok(Message::Text(t))) => input_message(t.as_bytes(), &mut input, v5).await,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // The client went away: stdin ends and the terminal hangs up.
                    client_gone = true;
                    input = Input::None;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    drop(input);
    let status = status.map_err(|e| format!("waiting for the exec helper: {e}"))?;
    let drain = futures::future::join_all(readers);
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        tracing::debug!("exec output still open {DRAIN:?} after the process exited");
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn forward(
    mut from: impl tokio::io::AsyncRead + Unpin,
    stream: u8,
    out: mpsc::Sender<Message>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || out.send(frame(stream, &buf[..n])).await.is_err() {
            break;
        }
    }
}

/// One message from the client: stdin bytes, a resize, or (v5) the end of stdin.
async fn input_message(data: &[u8], input: &mut Input, v5: bool) {
    let Some((&stream, payload)) = data.split_first() else {
        return;
    };
    match stream {
        STREAM_STDIN => match input {
            Input::Pipe(pipe) => {
                let failed = match pipe {
                    Some(p) => p.write_all(payload).await.is_err(),
                    None => false,
                };
                if failed {
                    // The process closed its stdin: later input has nowhere to go.
                    *pipe = None;
                }
            }
            Input::Pty(m) => {
                let _ = pty_write(m, payload).await;
            }
            _ => {}
        },
        STREAM_RESIZE => {
            #[derive(serde::Deserialize)]
            struct Size {
                #[serde(rename = "Width")]
                width: u16,
                #[serde(rename = "Height")]
                height: u16,
            }
            if let (Input::Pty(m), Ok(size)) = (&*input, serde_json::from_slice::<Size>(payload)) {
                if let Err(e) = runtime::exec::resize(m.get_ref(), size.height, size.width) {
                    tracing::debug!("exec resize: {e}");
                }
            }
        }
        STREAM_CLOSE if v5 && payload.first() == Some(&STREAM_STDIN) => {
            // A terminal has no end of input of its own: the client sends ^D itself.
            if let Input::Pipe(p) = input {
                if let Some(mut p) = p.take() {
                    let _ = p.shutdown().await;
                }
            }
        }
        _ => {}
    }
}

fn set_nonblocking(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn pty_read(fd: &AsyncFd<File>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| f.get_ref().read(buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn pty_write(fd: &AsyncFd<File>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| f.get_ref().write(data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_options_as_kubelet() {
        let o = ExecOptions::from_query(Some(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=true",
        ))
        .expect("options");
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let cases = [
            (
                "stdout=1",
                "you must specify at least one command for the container",
            ),
            (
                "command=ls",
                "you must specify at least 1 of stdin, stdout, stderr",
            ),
            (
                "command=sh&stdout=1&stderr=1&tty=1",
                "tty and stderr cannot both be true",
            ),
        ];
        for (q, want) in cases {
            assert_eq!(ExecOptions::from_query(Some(q)).expect_err(q), want, "{q}");
        }
    }

    #[test]
    fn prefers_v5_among_offered_protocols() {
        let cases: [(&[&str], Option<&str>); 4] = [
            (
                &["v5.channel.k8s.io, v4.channel.k8s.io"],
                Some("v5.channel.k8s.io"),
            ),
            (
                &["v4.channel.k8s.io", "v5.channel.k8s.io"],
                Some("v5.channel.k8s.io"),
            ),
            (
                &["channel.k8s.io,v4.channel.k8s.io"],
                Some("v4.channel.k8s.io"),
            ),
            (&["base64.channel.k8s.io"], None),
        ];
        for (offered, want) in cases {
            assert_eq!(negotiate(offered.iter().copied()), want, "{offered:?}");
        }
    }

    #[test]
    fn exit_codes_are_statuses_kubectl_reads() {
        assert_eq!(
            exit_status(0).to_string(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let s = exit_status(3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
