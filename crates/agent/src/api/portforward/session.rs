//! One SPDY session serving `portforward.k8s.io`: reads frames, answers every stream the
//! client opens, pairs error and data streams (see `protocol.rs`), and for each pair dials
//! the pod and copies bytes both ways until the pod's side ends or the client resets.
//!
//! Tasks: this loop reads and dispatches; one writer task owns the write half and the
//! header compressor (frames reach it over a bounded queue, so a slow client slows the
//! copies from the pod); one task per forwarded connection.
//!
//! Flow control: the client's data is acknowledged with WINDOW_UPDATEs (stream and
//! session) once written to the pod, so a peer that honours SPDY/3.1 windows keeps
//! sending; a stream whose pod end is slow blocks this loop (bounded memory, as kubelet's
//! spdystream does). Our own sends are not held to the peer's window: kubectl's SPDY
//! library (spdystream, kubelet's too) never sends WINDOW_UPDATE, so holding to it would
//! stall every transfer after 64 KiB; the transport's back-pressure paces them instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::frame::{
    Decoder, Encoder, Frame, Headers, RST_CANCEL, RST_FLOW_CONTROL_ERROR, RST_PROTOCOL_ERROR,
    RST_REFUSED_STREAM,
};
use super::protocol::{
    forwarding_error, read_stream_headers, Abandoned, Pair, Pairing, PendingPairs, StreamKind,
    PAIR_TIMEOUT,
};
use super::target::{connect, PodTarget};

/// Bytes read from the pod per DATA frame.
const CHUNK: usize = 32 * 1024;
/// Frames waiting for the writer (at most ~2 MiB of data).
const OUTGOING_FRAMES: usize = 64;
/// Client chunks waiting to be written to one pod connection.
const INCOMING_CHUNKS: usize = 16;
/// How long the writer may take to flush its queue once the session ends.
const WRITER_GRACE: Duration = Duration::from_secs(5);
/// GOAWAY status for a peer that broke the framing.
const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Serves one session on `io` (an upgraded connection, or the WebSocket tunnel) until the
/// client goes away.
pub async fn serve<S>(io: S, target: PodTarget)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (out, queue) = mpsc::channel(OUTGOING_FRAMES);
    let writer = tokio::spawn(write_frames(writer, queue));
    let mut session = Session {
        target,
        out,
        pending: PendingPairs::default(),
        forwarding: HashMap::new(),
        last_client_stream: 0,
        going_away: false,
        tasks: JoinSet::new(),
    };
    if let Err(e) = session.run(&mut reader).await {
        tracing::debug!(pod = %session.target.uid, "port-forward session ended: {e}");
        let _ = session
            .out
            .send(Frame::GoAway {
                last_good_stream_id: session.last_client_stream,
                status: GOAWAY_PROTOCOL_ERROR,
            })
            .await;
    }
    // Dropping the session aborts the forwarding tasks and closes the writer's queue.
    drop(session);
    if tokio::time::timeout(WRITER_GRACE, writer).await.is_err() {
        tracing::debug!("port-forward writer still busy {WRITER_GRACE:?} after the session");
    }
}

/// Encodes queued frames and writes them, batching whatever is already waiting.
async fn write_frames<W: AsyncWrite + Unpin>(mut io: W, mut queue: mpsc::Receiver<Frame>) {
    let mut encoder = Encoder::new();
    let mut wire = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if let Err(e) = encoder.encode(&frame, &mut wire) {
                tracing::warn!("port-forward: encoding {frame:?}: {e}");
            }
            if wire.len() < 256 * 1024 {
                next = queue.try_recv().ok();
            }
        }
        if io.write_all(&wire).await.is_err() || io.flush().await.is_err() {
            return;
        }
        wire.clear();
    }
    let _ = io.shutdown().await;
}

/// A data stream being forwarded.
struct ActiveStream {
    /// Where the client's bytes go; None once the client finished sending.
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// Signalled when the client resets the stream.
    reset: Arc<Notify>,
}

struct Session {
    target: PodTarget,
    out: mpsc::Sender<Frame>,
    pending: PendingPairs,
    forwarding: HashMap<u32, ActiveStream>,
    last_client_stream: u32,
    going_away: bool,
    /// Forwarding tasks; each returns its data stream's id.
    tasks: JoinSet<u32>,
}

impl Session {
    async fn run<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<(), String> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut expiry = tokio::time::interval(Duration::from_secs(5));
        loop {
            while let Some(frame) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                self.on_frame(frame).await;
            }
            if buf.capacity() - buf.len() < CHUNK {
                buf.reserve(CHUNK);
            }
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading from the client: {e}")),
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(data_stream) = done {
                        self.forwarding.remove(&data_stream);
                    }
                }
                _ = expiry.tick() => {
                    for abandoned in self.pending.expire(Instant::now(), PAIR_TIMEOUT) {
                        self.abandon(abandoned).await;
                    }
                }
            }
        }
    }

    async fn send(&self, frame: Frame) {
        // The writer only goes away with the session.
        let _ = self.out.send(frame).await;
    }

    async fn reset(&self, stream_id: u32, status: u32) {
        self.send(Frame::RstStream { stream_id, status }).await;
    }

    async fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream {
                stream_id,
                fin,
                headers,
                ..
            } => self.on_new_stream(stream_id, fin, &headers).await,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => self.on_data(stream_id, fin, data).await,
            Frame::RstStream { stream_id, .. } => {
                if let Some(active) = self.forwarding.get_mut(&stream_id) {
                    active.to_pod = None;
                    active.reset.notify_one();
                } else if let Some(abandoned) = self.pending.forget_stream(stream_id) {
                    self.abandon(abandoned).await;
                }
            }
            // Client pings have odd ids; even ones would answer ours, and we send none.
            Frame::Ping { id } if id % 2 == 1 => self.send(Frame::Ping { id }).await,
            Frame::GoAway { .. } => self.going_away = true,
            // Our sends are not held to the peer's windows (see the module header).
            Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
            Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::UnknownControl { .. } => {}
        }
    }

    async fn on_new_stream(&mut self, stream_id: u32, fin: bool, headers: &Headers) {
        if stream_id.is_multiple_of(2) || stream_id <= self.last_client_stream {
            self.reset(stream_id, RST_PROTOCOL_ERROR).await;
            return;
        }
        self.last_client_stream = stream_id;
        if self.going_away {
            self.reset(stream_id, RST_REFUSED_STREAM).await;
            return;
        }
        let request = match read_stream_headers(stream_id, headers) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(pod = %self.target.uid, stream_id, "port-forward stream refused: {e}");
                self.reset(stream_id, RST_REFUSED_STREAM).await;
                return;
            }
        };
        self.send(Frame::SynReply {
            stream_id,
            fin: false,
            headers: Headers::new(),
        })
        .await;
        let is_data = request.kind == StreamKind::Data;
        match self.pending.add(stream_id, request, Instant::now()) {
            Pairing::Waiting => {
                if is_data && fin {
                    self.pending.hold_early_data(stream_id, Bytes::new(), true);
                }
            }
            Pairing::Complete(mut pair) => {
                pair.data_finished |= is_data && fin;
                self.start_forwarding(pair);
            }
            Pairing::Duplicate(e) | Pairing::PortMismatch(e) => {
                tracing::debug!(pod = %self.target.uid, stream_id, "port-forward stream refused: {e}");
                self.reset(stream_id, RST_PROTOCOL_ERROR).await;
            }
        }
    }

    async fn on_data(&mut self, stream_id: u32, fin: bool, data: Bytes) {
        if let Some(active) = self.forwarding.get_mut(&stream_id) {
            if let Some(to_pod) = &active.to_pod {
                if !data.is_empty() && to_pod.send(data).await.is_err() {
                    // The pod's side is gone; the task is finishing.
                    active.to_pod = None;
                }
            } else {
                grant_session_window(&self.out, data.len()).await;
            }
            if fin {
                active.to_pod = None;
            }
            return;
        }
        let len = data.len();
        match self.pending.hold_early_data(stream_id, data, fin) {
            Some(true) => {}
            Some(false) => {
                if let Some(abandoned) = self.pending.forget_stream(stream_id) {
                    tracing::debug!(
                        pod = %self.target.uid,
                        "port-forward request {}: too much data before its error stream",
                        abandoned.request_id
                    );
                    self.reset(stream_id, RST_FLOW_CONTROL_ERROR).await;
                    self.abandon(abandoned).await;
                }
            }
            // Error streams carry nothing from the client; late frames of finished
            // streams are dropped. Either way the session window gets the bytes back.
            None => grant_session_window(&self.out, len).await,
        }
    }

    fn start_forwarding(&mut self, pair: Pair) {
        let (to_pod, from_client) = mpsc::channel(INCOMING_CHUNKS);
        let reset = Arc::new(Notify::new());
        self.forwarding.insert(
            pair.data_stream,
            ActiveStream {
                to_pod: (!pair.data_finished).then_some(to_pod),
                reset: reset.clone(),
            },
        );
        self.tasks.spawn(forward(
            pair,
            self.target.clone(),
            from_client,
            reset,
            self.out.clone(),
        ));
    }

    /// Ends a request whose streams never paired (or whose other stream was reset).
    async fn abandon(&self, abandoned: Abandoned) {
        if let Some(error_stream) = abandoned.error_stream {
            let message = format!(
                "timed out waiting for the streams of request {}",
                abandoned.request_id
            );
            self.send(data(error_stream, Bytes::from(message), false))
                .await;
            self.send(data(error_stream, Bytes::new(), true)).await;
        }
        if let Some(data_stream) = abandoned.data_stream {
            self.reset(data_stream, RST_CANCEL).await;
        }
    }
}

fn data(stream_id: u32, data: Bytes, fin: bool) -> Frame {
    Frame::Data {
        stream_id,
        fin,
        data,
    }
}

async fn grant_session_window(out: &mpsc::Sender<Frame>, len: usize) {
    if len > 0 {
        let _ = out
            .send(Frame::WindowUpdate {
                stream_id: 0,
                delta: len as u32,
            })
            .await;
    }
}

/// One forwarded connection: dial, then copy until the pod's side ends or the client
/// resets the data stream. Returns the data stream's id.
async fn forward(
    pair: Pair,
    target: PodTarget,
    from_client: mpsc::Receiver<Bytes>,
    reset: Arc<Notify>,
    out: mpsc::Sender<Frame>,
) -> u32 {
    let Pair {
        port,
        error_stream,
        data_stream,
        early_data,
        ..
    } = pair;
    let connected = tokio::select! {
        c = connect(&target, port) => c,
        _ = reset.notified() => {
            let _ = out.send(data(error_stream, Bytes::new(), true)).await;
            return data_stream;
        }
    };
    let conn = match connected {
        Ok(c) => c,
        Err(cause) => {
            // kubelet's answer: the message on the error stream, then both streams end.
            let message = forwarding_error(port, &target.uid, &cause);
            tracing::info!("port-forward: {message}");
            let _ = out
                .send(data(error_stream, Bytes::from(message), false))
                .await;
            let _ = out.send(data(error_stream, Bytes::new(), true)).await;
            let _ = out.send(data(data_stream, Bytes::new(), true)).await;
            return data_stream;
        }
    };
    let _ = conn.set_nodelay(true);
    let (pod_read, pod_write) = conn.into_split();
    let upload = to_pod(early_data, from_client, pod_write, data_stream, out.clone());
    let download = from_pod(pod_read, data_stream, out.clone());
    tokio::pin!(upload, download);
    let mut upload_done = false;
    let reset_by_client = loop {
        tokio::select! {
            _ = &mut upload, if !upload_done => upload_done = true,
            _ = &mut download => break false,
            _ = reset.notified() => break true,
        }
    };
    if !reset_by_client {
        let _ = out.send(data(data_stream, Bytes::new(), true)).await;
    }
    let _ = out.send(data(error_stream, Bytes::new(), true)).await;
    data_stream
}

/// The client's bytes into the pod; the pod's write side is shut when the client finishes.
async fn to_pod(
    early_data: Vec<Bytes>,
    mut from_client: mpsc::Receiver<Bytes>,
    mut pod: tokio::net::tcp::OwnedWriteHalf,
    stream_id: u32,
    out: mpsc::Sender<Frame>,
) {
    let mut early = early_data.into_iter();
    loop {
        let chunk = match early.next() {
            Some(c) => c,
            None => match from_client.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        if pod.write_all(&chunk).await.is_err() {
            return;
        }
        // Written: the client may send this much more, on this stream and in the session.
        let delta = chunk.len() as u32;
        let _ = out.send(Frame::WindowUpdate { stream_id, delta }).await;
        let _ = out
            .send(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            })
            .await;
    }
    let _ = pod.shutdown().await;
}

/// The pod's bytes to the client, until the pod closes its side.
async fn from_pod(
    mut pod: tokio::net::tcp::OwnedReadHalf,
    stream_id: u32,
    out: mpsc::Sender<Frame>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pod.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if out.send(data(stream_id, chunk, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The client's side of a session: its own encoder and decoder, as kubectl has.
    struct Client {
        io: tokio::io::DuplexStream,
        encoder: Encoder,
        decoder: Decoder,
        buf: BytesMut,
    }

    impl Client {
        fn start() -> Client {
            let (io, server_end) = tokio::io::duplex(1 << 20);
            let target = PodTarget {
                uid: "pod-uid".into(),
                netns: None,
            };
            tokio::spawn(serve(server_end, target));
            Client {
                io,
                encoder: Encoder::new(),
                decoder: Decoder::new(),
                buf: BytesMut::new(),
            }
        }

        async fn send(&mut self, frame: Frame) {
            let mut wire = BytesMut::new();
            self.encoder.encode(&frame, &mut wire).expect("encode");
            self.io.write_all(&wire).await.expect("write");
        }

        async fn open(&mut self, stream_id: u32, kind: &str, port: u16, request: &str) {
            let headers = [
                ("streamtype", kind),
                ("port", &port.to_string()),
                ("requestid", request),
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers,
            })
            .await;
        }

        async fn next(&mut self) -> Frame {
            let read = async {
                loop {
                    if let Some(f) = self.decoder.decode(&mut self.buf).expect("decode") {
                        return f;
                    }
                    let n = self.io.read_buf(&mut self.buf).await.expect("read");
                    assert!(n > 0, "the session closed");
                }
            };
            tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("a frame within 10s")
        }

        /// Everything the server sends on `stream_id` until it ends it (other frames are
        /// skipped).
        async fn read_stream(&mut self, stream_id: u32) -> Vec<u8> {
            let mut got = Vec::new();
            loop {
                match self.next().await {
                    Frame::Data {
                        stream_id: s,
                        fin,
                        data,
                    } if s == stream_id => {
                        got.extend_from_slice(&data);
                        if fin {
                            return got;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn data(stream_id: u32, bytes: &'static [u8], fin: bool) -> Frame {
        Frame::Data {
            stream_id,
            fin,
            data: Bytes::from_static(bytes),
        }
    }

    #[tokio::test]
    async fn forwards_a_connection_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.expect("read");
            conn.write_all(b"echo:").await.expect("write");
            conn.write_all(&got).await.expect("write");
        });
        let mut c = Client::start();
        c.open(1, "error", port, "0").await;
        c.send(data(1, b"", true)).await;
        c.open(3, "data", port, "0").await;
        c.send(data(3, b"hello ", false)).await;
        c.send(data(3, b"pod", true)).await;
        c.send(Frame::Ping { id: 1 }).await;
        let (mut replies, mut pinged, mut granted, mut echoed) = (vec![], false, 0, Vec::new());
        loop {
            match c.next().await {
                Frame::SynReply { stream_id, .. } => replies.push(stream_id),
                Frame::Ping { id } => pinged = id == 1,
                Frame::WindowUpdate {
                    stream_id: 3,
                    delta,
                } => granted += delta,
                Frame::Data {
                    stream_id: 3,
                    fin,
                    data,
                } => {
                    echoed.extend_from_slice(&data);
                    if fin {
                        break;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(replies, [1, 3]);
        assert!(pinged, "the ping was answered");
        assert_eq!(granted, 9, "the window given back for what reached the pod");
        assert_eq!(echoed, b"echo:hello pod");
        // The error stream ends without a message.
        assert_eq!(c.read_stream(1).await, b"");
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_on_its_error_stream() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut c = Client::start();
        c.open(1, "error", closed, "7").await;
        c.open(3, "data", closed, "7").await;
        let message = String::from_utf8(c.read_stream(1).await).expect("text");
        assert!(
            message.starts_with(&format!(
                "error forwarding port {closed} to pod pod-uid, uid : failed to connect to localhost:{closed} inside namespace \"pod-uid\", IPv4: dial tcp4 127.0.0.1:{closed}: connect: connection refused"
            )),
            "{message}"
        );
        assert_eq!(c.read_stream(3).await, b"");
        // The session goes on: a bad stream is refused, and later requests are served.
        c.open(5, "stdin", closed, "8").await;
        loop {
            if let Frame::RstStream { stream_id, status } = c.next().await {
                assert_eq!((stream_id, status), (5, RST_REFUSED_STREAM));
                break;
            }
        }
        c.send(Frame::Ping { id: 3 }).await;
        loop {
            if let Frame::Ping { id } = c.next().await {
                assert_eq!(id, 3);
                break;
            }
        }
    }
}
