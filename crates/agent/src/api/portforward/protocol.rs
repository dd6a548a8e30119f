//! The `portforward.k8s.io` protocol on top of a SPDY session, as kubelet speaks it: every
//! forwarded connection is a pair of client-opened streams sharing a `requestID` header,
//! one `streamType: error` (the server writes a failure message there, then closes it) and
//! one `streamType: data` (the connection's bytes, both ways), each naming the pod `port`.
//!
//! Pure decisions only (reading stream headers, pairing streams, the error texts); the
//! session in `session.rs` acts on them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{header, Headers};

/// The protocol name: in `X-Stream-Protocol-Version` for a SPDY upgrade.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of a SPDY session tunnelled through WebSocket binary messages
/// (kubectl >= 1.31's default).
pub const WEBSOCKET_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long the first stream of a pair waits for its partner (kubelet's default
/// `streamCreationTimeout`).
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Error,
    Data,
}

/// What a stream's headers ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub kind: StreamKind,
    pub port: u16,
    pub request_id: String,
}

/// Reads a new stream's headers. Old clients sent no `requestID`; like kubelet, derive one
/// from the stream id then (their error stream came right before the data stream, both odd).
pub fn read_stream_headers(stream_id: u32, headers: &Headers) -> Result<StreamRequest, String> {
    let kind = match header(headers, "streamtype") {
        Some("error") => StreamKind::Error,
        Some("data") => StreamKind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("stream has no streamType header".into()),
    };
    let port_text = header(headers, "port").ok_or("stream has no port header")?;
    let port = port_text
        .parse::<u16>()
        .map_err(|e| format!("unable to parse {port_text:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port 0 must be > 0".into());
    }
    let request_id = match header(headers, "requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => match kind {
            StreamKind::Error => stream_id.to_string(),
            StreamKind::Data => stream_id.saturating_sub(2).to_string(),
        },
    };
    Ok(StreamRequest {
        kind,
        port,
        request_id,
    })
}

/// A request whose two streams are both open: ready to connect.
#[derive(Debug, PartialEq, Eq)]
pub struct Pair {
    pub request_id: String,
    pub port: u16,
    pub error_stream: u32,
    pub data_stream: u32,
    /// Client bytes that arrived on the data stream before the pair was complete.
    pub early_data: Vec<Bytes>,
    /// Whether the client already ended its side of the data stream.
    pub data_finished: bool,
}

/// What adding a stream to the pending pairs led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Pairing {
    /// Waiting for the other stream of the request.
    Waiting,
    Complete(Pair),
    /// The request already has a stream of this kind: the new one is refused.
    Duplicate(String),
    /// The partner names another port.
    PortMismatch(String),
}

#[derive(Debug, Default)]
struct HalfPair {
    port: u16,
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    early_data: Vec<Bytes>,
    early_bytes: usize,
    data_finished: bool,
    since: Option<Instant>,
}

/// Streams whose partner has not arrived yet, by request id.
#[derive(Debug, Default)]
pub struct PendingPairs {
    by_request: HashMap<String, HalfPair>,
}

/// A request that waited too long for its second stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Abandoned {
    pub request_id: String,
    pub error_stream: Option<u32>,
    pub data_stream: Option<u32>,
}

/// At most this much early data is held for a data stream whose error stream is missing
/// (more than the 64 KiB window a conforming client may send unacknowledged).
pub const MAX_EARLY_DATA: usize = 256 * 1024;

impl PendingPairs {
    pub fn add(&mut self, stream_id: u32, req: StreamRequest, now: Instant) -> Pairing {
        let half = self.by_request.entry(req.request_id.clone()).or_default();
        if half.since.is_none() {
            half.port = req.port;
            half.since = Some(now);
        } else if half.port != req.port {
            return Pairing::PortMismatch(format!(
                "request {} names port {} on one stream and {} on the other",
                req.request_id, half.port, req.port
            ));
        }
        let slot = match req.kind {
            StreamKind::Error => &mut half.error_stream,
            StreamKind::Data => &mut half.data_stream,
        };
        if slot.is_some() {
            let kind = match req.kind {
                StreamKind::Error => "error",
                StreamKind::Data => "data",
            };
            return Pairing::Duplicate(format!(
                "{kind} stream already assigned for request {}",
                req.request_id
            ));
        }
        *slot = Some(stream_id);
        match (half.error_stream, half.data_stream) {
            (Some(error_stream), Some(data_stream)) => {
                let half = self.by_request.remove(&req.request_id).unwrap_or_default();
                Pairing::Complete(Pair {
                    request_id: req.request_id,
                    port: half.port,
                    error_stream,
                    data_stream,
                    early_data: half.early_data,
                    data_finished: half.data_finished,
                })
            }
            _ => Pairing::Waiting,
        }
    }

    /// Keeps client bytes for a data stream still waiting for its partner. False when the
    /// stream is not waiting here or has sent more than [`MAX_EARLY_DATA`].
    pub fn hold_early_data(&mut self, data_stream: u32, data: Bytes, fin: bool) -> Option<bool> {
        let half = self
            .by_request
            .values_mut()
            .find(|h| h.data_stream == Some(data_stream))?;
        half.early_bytes += data.len();
        if !data.is_empty() {
            half.early_data.push(data);
        }
        half.data_finished |= fin;
        Some(half.early_bytes <= MAX_EARLY_DATA)
    }

    /// Whether `stream_id` is a stream waiting here.
    pub fn is_waiting(&self, stream_id: u32) -> bool {
        self.by_request
            .values()
            .any(|h| h.error_stream == Some(stream_id) || h.data_stream == Some(stream_id))
    }

    /// Forgets the request `stream_id` belongs to (the client reset it).
    pub fn forget_stream(&mut self, stream_id: u32) -> Option<Abandoned> {
        let request_id = self
            .by_request
            .iter()
            .find(|(_, h)| h.error_stream == Some(stream_id) || h.data_stream == Some(stream_id))
            .map(|(id, _)| id.clone())?;
        self.take(&request_id)
    }

    /// Removes and returns the requests that have waited longer than `timeout`.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Abandoned> {
        let old: Vec<String> = self
            .by_request
            .iter()
            .filter(|(_, h)| h.since.is_some_and(|t| now.duration_since(t) >= timeout))
            .map(|(id, _)| id.clone())
            .collect();
        old.iter().filter_map(|id| self.take(id)).collect()
    }

    fn take(&mut self, request_id: &str) -> Option<Abandoned> {
        self.by_request.remove(request_id).map(|h| Abandoned {
            request_id: request_id.to_string(),
            error_stream: h.error_stream,
            data_stream: h.data_stream,
        })
    }
}

/// The text written on the error stream when forwarding failed, as kubelet words it
/// (kubelet names the pod by its sandbox; skiff's sandbox is the pod, named by its UID).
pub fn forwarding_error(port: u16, pod_uid: &str, cause: &str) -> String {
    format!("error forwarding port {port} to pod {pod_uid}, uid : {cause}")
}

/// The cause when neither loopback address of the pod accepted the connection (the
/// container runtime's wording, with Go's dial errors).
pub fn connect_failure(port: u16, pod_uid: &str, ipv4: &str, ipv6: &str) -> String {
    format!(
        "failed to connect to localhost:{port} inside namespace {pod_uid:?}, IPv4: dial tcp4 127.0.0.1:{port}: {ipv4} IPv6 dial tcp6 [::1]:{port}: {ipv6} "
    )
}

/// An OS error as Go prints it (`connect: connection refused`), not Rust's
/// `Connection refused (os error 111)`.
pub fn go_style_connect_error(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => {
            let full = std::io::Error::from_raw_os_error(code).to_string();
            let plain = full.split(" (os error").next().unwrap_or(&full).to_string();
            let mut chars = plain.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => plain,
            }
        }
        None => e.to_string(),
    };
    format!("connect: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_stream_headers_as_kubelet() {
        let ok = read_stream_headers(
            1,
            &headers(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "4"),
            ]),
        );
        assert_eq!(
            ok,
            Ok(StreamRequest {
                kind: StreamKind::Error,
                port: 8080,
                request_id: "4".into()
            })
        );
        // No requestID: derived from the stream id, so an old client's 1 (error) and
        // 3 (data) pair up.
        let legacy_error =
            read_stream_headers(1, &headers(&[("streamtype", "error"), ("port", "80")]));
        let legacy_data =
            read_stream_headers(3, &headers(&[("streamtype", "data"), ("port", "80")]));
        assert_eq!(legacy_error.expect("error").request_id, "1");
        assert_eq!(legacy_data.expect("data").request_id, "1");
        let bad = [
            (vec![("port", "80")], "stream has no streamType header"),
            (
                vec![("streamtype", "stdin"), ("port", "80")],
                "invalid stream type \"stdin\"",
            ),
            (vec![("streamtype", "data")], "stream has no port header"),
            (
                vec![("streamtype", "data"), ("port", "http")],
                "unable to parse \"http\" as a port: invalid digit found in string",
            ),
            (
                vec![("streamtype", "data"), ("port", "0")],
                "port 0 must be > 0",
            ),
        ];
        for (h, want) in bad {
            assert_eq!(read_stream_headers(5, &headers(&h)), Err(want.to_string()));
        }
    }

    fn request(kind: StreamKind, port: u16, id: &str) -> StreamRequest {
        StreamRequest {
            kind,
            port,
            request_id: id.into(),
        }
    }

    #[test]
    fn pairs_streams_by_request() {
        let now = Instant::now();
        let mut p = PendingPairs::default();
        assert_eq!(
            p.add(1, request(StreamKind::Error, 80, "0"), now),
            Pairing::Waiting
        );
        assert_eq!(
            p.add(5, request(StreamKind::Error, 81, "1"), now),
            Pairing::Waiting
        );
        assert!(p.is_waiting(1));
        assert_eq!(
            p.add(3, request(StreamKind::Error, 80, "0"), now),
            Pairing::Duplicate("error stream already assigned for request 0".into())
        );
        assert_eq!(
            p.add(7, request(StreamKind::Data, 82, "1"), now),
            Pairing::PortMismatch(
                "request 1 names port 81 on one stream and 82 on the other".into()
            )
        );
        assert_eq!(
            p.add(9, request(StreamKind::Data, 80, "0"), now),
            Pairing::Complete(Pair {
                request_id: "0".into(),
                port: 80,
                error_stream: 1,
                data_stream: 9,
                early_data: vec![],
                data_finished: false,
            })
        );
        assert!(!p.is_waiting(1));
    }

    #[test]
    fn a_data_stream_opened_first_keeps_its_bytes_until_paired() {
        let now = Instant::now();
        let mut p = PendingPairs::default();
        assert_eq!(
            p.add(1, request(StreamKind::Data, 80, "0"), now),
            Pairing::Waiting
        );
        assert_eq!(
            p.hold_early_data(1, Bytes::from_static(b"abc"), true),
            Some(true)
        );
        assert_eq!(p.hold_early_data(3, Bytes::from_static(b"x"), false), None);
        match p.add(3, request(StreamKind::Error, 80, "0"), now) {
            Pairing::Complete(pair) => {
                assert_eq!(pair.early_data, vec![Bytes::from_static(b"abc")]);
                assert!(pair.data_finished);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.add(5, request(StreamKind::Data, 80, "1"), now),
            Pairing::Waiting
        );
        let big = Bytes::from(vec![0u8; MAX_EARLY_DATA + 1]);
        assert_eq!(p.hold_early_data(5, big, false), Some(false));
    }

    #[test]
    fn lonely_streams_expire() {
        let start = Instant::now();
        let mut p = PendingPairs::default();
        p.add(1, request(StreamKind::Error, 80, "0"), start);
        p.add(
            3,
            request(StreamKind::Error, 80, "1"),
            start + Duration::from_secs(20),
        );
        assert_eq!(
            p.expire(start + Duration::from_secs(31), PAIR_TIMEOUT),
            vec![Abandoned {
                request_id: "0".into(),
                error_stream: Some(1),
                data_stream: None,
            }]
        );
        assert!(p.is_waiting(3));
        assert_eq!(
            p.forget_stream(3).map(|a| a.request_id),
            Some("1".to_string())
        );
        assert!(!p.is_waiting(3));
    }

    #[test]
    fn error_texts_read_like_kubelets() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            go_style_connect_error(&refused),
            "connect: connection refused"
        );
        let cause = connect_failure(
            9999,
            "abc",
            "connect: connection refused",
            "connect: cannot assign requested address",
        );
        assert_eq!(
            forwarding_error(9999, "abc", &cause),
            "error forwarding port 9999 to pod abc, uid : failed to connect to localhost:9999 inside namespace \"abc\", IPv4: dial tcp4 127.0.0.1:9999: connect: connection refused IPv6 dial tcp6 [::1]:9999: connect: cannot assign requested address "
        );
    }
}
