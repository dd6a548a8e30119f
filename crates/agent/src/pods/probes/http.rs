//! kubelet's httpGet probe (`pkg/probe/http`) over HTTP/1.1, in the clear or over TLS.
//!
//! One GET with kubelet's headers (`User-Agent: kube-probe/1.37` and `Accept: */*` unless
//! the probe sets them; a probe's `Host` header becomes the request's host). 200-299 is a
//! success, a 3xx that was not followed a warning (`Probe terminated redirects, Response
//! body: ...`, which kubelet counts as a success and reports in a ProbeWarning event), any
//! other status a failure. Redirects follow kubelet's client (`followNonLocalRedirects`
//! false): a redirect to the same host name is followed, up to 10 requests in all; one to
//! another host is not, and its 3xx is the answer. `timeoutSeconds` bounds the whole
//! exchange, redirects included (Go's `Client.Timeout`), and every request has its own
//! connection (kubelet disables keep-alives). HTTPS skips certificate checks as kubelet
//! does ([`super::insecure_tls`]). Failures read as Go's `url.Error`, as in kubelet's
//! events: `Get "https://127.0.0.1:8443/healthz": dial tcp 127.0.0.1:8443: connect:
//! connection refused`.
//!
//! Blocking: it runs on a thread inside the pod's network namespace.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{connect, insecure_tls, join_host_port, Probed, KUBE_PROBE_VERSION};

/// kubelet reads at most this much of a response body (`maxRespBodyLength`).
const MAX_BODY: usize = 10 * 1024;
/// Go's `http.Transport` default limit on response headers.
const MAX_HEAD: usize = 1 << 20;
/// Go's redirect policy, which kubelet's checker keeps: at most 10 requests.
const MAX_REQUESTS: usize = 10;
/// What Go's client says when `Client.Timeout` ends a request, at any stage.
const CLIENT_TIMEOUT: &str =
    "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// An httpGet probe's request, ports resolved.
#[derive(Debug, Clone)]
pub struct Request {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query as the probe gives them.
    pub path: String,
    /// The probe's `httpHeaders`, in order.
    pub headers: Vec<(String, String)>,
}

/// Runs one httpGet probe to its conclusion (redirects included). Blocking.
pub fn probe(req: &Request, timeout: Duration) -> Probed {
    let deadline = Instant::now() + timeout;
    let mut url = Url {
        scheme: req.scheme,
        host: req.host.clone(),
        port: req.port,
        authority: join_host_port(&req.host, req.port),
        path: req.path.clone(),
    };
    let (custom_host, headers) = probe_headers(&req.headers);
    let mut host_header = custom_host.clone().unwrap_or_else(|| url.authority.clone());
    let mut requests = 0;
    loop {
        requests += 1;
        let response = match fetch(&url, &host_header, &headers, deadline) {
            Ok(r) => r,
            Err(e) => return Probed::Failure(format!("Get {:?}: {e}", url.to_string())),
        };
        let Some(location) = response.redirect_location() else {
            return classify(&response);
        };
        let next = match url.join(location) {
            Ok(next) => next,
            Err(e) => {
                return Probed::Failure(format!(
                    "Get {:?}: failed to parse Location header {location:?}: {e}",
                    url.to_string()
                ))
            }
        };
        if next.host != req.host {
            // kubelet's checker answers http.ErrUseLastResponse: this 3xx is the result.
            return classify(&response);
        }
        if requests >= MAX_REQUESTS {
            return Probed::Failure(format!(
                "Get {:?}: stopped after {MAX_REQUESTS} redirects",
                url.to_string()
            ));
        }
        // Go keeps a custom Host header through a redirect only to a location without a
        // scheme.
        host_header = match &custom_host {
            Some(h) if !has_scheme(location) => h.clone(),
            _ => next.authority.clone(),
        };
        url = next;
    }
}

/// kubelet's verdict on the last response (`DoHTTPProbe`).
fn classify(response: &Response) -> Probed {
    match response.status {
        200..=299 => Probed::Success,
        300..=399 => Probed::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            String::from_utf8_lossy(&response.body)
        )),
        code => Probed::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// The probe's headers after kubelet's defaults (`newProbeRequest`): the custom `Host`
/// apart, `User-Agent` and `Accept` added unless given, an empty `Accept` dropped.
fn probe_headers(given: &[(String, String)]) -> (Option<String>, Vec<(String, String)>) {
    let has = |name: &str| given.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let host = given
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Host"))
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty());
    let mut headers = Vec::new();
    if !has("User-Agent") {
        headers.push((
            "User-Agent".into(),
            format!("kube-probe/{KUBE_PROBE_VERSION}"),
        ));
    }
    if !has("Accept") {
        headers.push(("Accept".into(), "*/*".into()));
    }
    for (k, v) in given {
        let empty_default = (k.eq_ignore_ascii_case("Accept")
            || k.eq_ignore_ascii_case("User-Agent"))
            && v.is_empty();
        if k.eq_ignore_ascii_case("Host") || empty_default {
            continue;
        }
        headers.push((k.clone(), v.clone()));
    }
    (host, headers)
}

/// An absolute http(s) URL, as far as the prober needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    scheme: Scheme,
    /// Host name or address, without brackets.
    host: String,
    port: u16,
    /// Host and port as written (the `Host` header and the URL's text).
    authority: String,
    /// Path and query, possibly empty.
    path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority,
            self.path
        )
    }
}

fn has_scheme(reference: &str) -> bool {
    match reference.split_once(':') {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

impl Url {
    /// Resolves a `Location` against this URL (RFC 3986 reference resolution; fragments
    /// dropped).
    fn join(&self, reference: &str) -> Result<Url, String> {
        let reference = reference.split('#').next().unwrap_or_default();
        if has_scheme(reference) {
            let (scheme, rest) = reference.split_once(':').unwrap_or_default();
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => return Err(format!("unsupported protocol scheme {other:?}")),
            };
            let rest = rest
                .strip_prefix("//")
                .ok_or_else(|| format!("missing host in {reference:?}"))?;
            return Url::from_authority_and_path(scheme, rest);
        }
        if let Some(rest) = reference.strip_prefix("//") {
            return Url::from_authority_and_path(self.scheme, rest);
        }
        let path = if reference.starts_with('/') {
            reference.to_string()
        } else if reference.is_empty() {
            self.path.clone()
        } else if reference.starts_with('?') {
            let base = self.path.split('?').next().unwrap_or_default();
            format!("{base}{reference}")
        } else {
            let base = self.path.split('?').next().unwrap_or_default();
            let dir = base.rfind('/').map_or("/", |i| &base[..=i]);
            format!("{dir}{reference}")
        };
        Ok(Url {
            path: remove_dot_segments(&path),
            ..self.clone()
        })
    }

    fn from_authority_and_path(scheme: Scheme, rest: &str) -> Result<Url, String> {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = split_authority(authority, scheme.default_port())?;
        if host.is_empty() {
            return Err("missing host".into());
        }
        Ok(Url {
            scheme,
            host,
            port,
            authority: authority.to_string(),
            path: remove_dot_segments(path),
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in host {authority:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {:?} after host", format!(":{p}")))?,
    };
    Ok((host.to_string(), port))
}

/// RFC 3986 5.2.4 on the path part (the query kept as is).
fn remove_dot_segments(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if !path.split('/').any(|s| s == "." || s == "..") {
        return path_and_query.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let mut joined = out.join("/");
    if !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    match query {
        Some(q) => format!("{joined}?{q}"),
        None => joined,
    }
}

/// What the prober keeps of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    location: Option<String>,
    /// The first [`MAX_BODY`] bytes of the body, read only for a 3xx.
    body: Vec<u8>,
}

impl Response {
    /// Where Go's client would follow this response to, if anywhere.
    fn redirect_location(&self) -> Option<&str> {
        match self.status {
            301 | 302 | 303 | 307 | 308 => self.location.as_deref().filter(|l| !l.is_empty()),
            _ => None,
        }
    }
}

/// One request on a fresh connection.
fn fetch(
    url: &Url,
    host_header: &str,
    headers: &[(String, String)],
    deadline: Instant,
) -> Result<Response, String> {
    let left = remaining(deadline).ok_or(CLIENT_TIMEOUT)?;
    let tcp = connect(&url.host, url.port, left).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CLIENT_TIMEOUT.to_string(),
        _ => format!("dial tcp {}: {e}", join_host_port(&url.host, url.port)),
    })?;
    let mut conn = Conn::new(tcp, url.scheme, &url.host)?;
    let path = if url.path.is_empty() { "/" } else { &url.path };
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    conn.arm(deadline).map_err(|e| conn.describe(e))?;
    conn.write_all(request.as_bytes())
        .and_then(|_| conn.flush())
        .map_err(|e| conn.describe(e))?;
    read_response(&mut conn, deadline)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// Reads the status line and headers (skipping 1xx answers) and, for a 3xx, the start of
/// the body.
fn read_response(conn: &mut Conn, deadline: Instant) -> Result<Response, String> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(format!(
                    "net/http: server response headers exceeded {MAX_HEAD} bytes; aborted"
                ));
            }
            match conn.read_some(&mut buf, deadline) {
                Ok(0) if buf.is_empty() => return Err("EOF".into()),
                Ok(0) => return Err("unexpected EOF".into()),
                Ok(_) => {}
                Err(e) => return Err(conn.describe(e)),
            }
        };
        let head = parse_head(&buf[..head_end])?;
        buf.drain(..head_end);
        if (100..200).contains(&head.status) && head.status != 101 {
            continue; // An informational answer; the real one follows.
        }
        let body = if (300..400).contains(&head.status) {
            read_body(conn, buf, &head, deadline)
        } else {
            Vec::new()
        };
        return Ok(Response {
            status: head.status,
            location: head.location,
            body,
        });
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    location: Option<String>,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let malformed = || format!("malformed HTTP response {status_line:?}");
    let (version, rest) = status_line.split_once(' ').ok_or_else(malformed)?;
    if !version.starts_with("HTTP/") {
        return Err(malformed());
    }
    let code = rest.split(' ').next().unwrap_or_default();
    let status = match code.parse::<u16>() {
        Ok(c) if code.len() == 3 => c,
        _ => return Err(format!("malformed HTTP status code {code:?}")),
    };
    let mut parsed = Head {
        status,
        location: None,
        content_length: None,
        chunked: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "location" => parsed.location = Some(value.to_string()),
            "content-length" => parsed.content_length = value.parse().ok(),
            "transfer-encoding" => parsed.chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    Ok(parsed)
}

/// Up to [`MAX_BODY`] bytes of the body; what could not be read in time is left out (the
/// body only decorates a warning).
fn read_body(conn: &mut Conn, mut raw: Vec<u8>, head: &Head, deadline: Instant) -> Vec<u8> {
    // Chunk framing costs a few bytes per chunk; read a little more than we keep.
    let want = match (head.chunked, head.content_length) {
        (false, Some(n)) => n.min(MAX_BODY),
        _ => MAX_BODY + 4096,
    };
    while raw.len() < want {
        if head.chunked && chunked_complete(&raw) {
            break;
        }
        match conn.read_some(&mut raw, deadline) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let mut body = if head.chunked {
        decode_chunked(&raw)
    } else {
        raw
    };
    body.truncate(MAX_BODY.min(head.content_length.unwrap_or(usize::MAX)));
    body
}

fn chunked_complete(raw: &[u8]) -> bool {
    raw.windows(5).any(|w| w == b"0\r\n\r\n")
}

/// Decodes as much of a chunked body as `raw` holds (a truncated tail is dropped).
fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            return out;
        };
        if size == 0 {
            return out;
        }
        raw = &raw[line_end + 2..];
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            return out;
        }
        raw = &raw[size + 2..];
    }
}

/// A probe's connection: plain TCP, or TLS over it.
struct Conn {
    tcp: FirstBytes,
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Conn {
    fn new(tcp: TcpStream, scheme: Scheme, host: &str) -> Result<Conn, String> {
        let tls = match scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let config = insecure_tls::client_config().map_err(|e| format!("tls: {e}"))?;
                let conn = rustls::ClientConnection::new(config, insecure_tls::server_name(host))
                    .map_err(|e| format!("tls: {e}"))?;
                Some(Box::new(conn))
            }
        };
        Ok(Conn {
            tcp: FirstBytes {
                stream: tcp,
                first: Vec::new(),
            },
            tls,
        })
    }

    /// Bounds the next reads and writes by what is left until `deadline`.
    fn arm(&self, deadline: Instant) -> io::Result<()> {
        let left = remaining(deadline).ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
        self.tcp.stream.set_read_timeout(Some(left))?;
        self.tcp.stream.set_write_timeout(Some(left))
    }

    /// Appends what one read returns to `buf`.
    fn read_some(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
        self.arm(deadline)?;
        let mut chunk = [0u8; 4096];
        let n = match self.read(&mut chunk) {
            // A TLS peer that closes without close_notify ends the response all the same
            // (the request asked for `Connection: close`).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.tls.is_some() => 0,
            other => other?,
        };
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Go's wording for an I/O error on this connection.
    fn describe(&self, e: io::Error) -> String {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CLIENT_TIMEOUT.into(),
            io::ErrorKind::UnexpectedEof => "EOF".into(),
            _ => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => insecure_tls::describe(tls, &self.tcp.first),
                None => e.to_string(),
            },
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.read(buf),
            Some(tls) => rustls::Stream::new(tls.as_mut(), &mut self.tcp).read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write(buf),
            Some(tls) => rustls::Stream::new(tls.as_mut(), &mut self.tcp).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.flush(),
            Some(tls) => rustls::Stream::new(tls.as_mut(), &mut self.tcp).flush(),
        }
    }
}

/// A socket that remembers the first bytes the server sent (to tell a plain-HTTP answer to
/// a TLS ClientHello apart, as Go does).
struct FirstBytes {
    stream: TcpStream,
    first: Vec<u8>,
}

impl Read for FirstBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        let keep = 5usize.saturating_sub(self.first.len()).min(n);
        self.first.extend_from_slice(&buf[..keep]);
        Ok(n)
    }
}

impl Write for FirstBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        let (scheme, rest) = s.split_once("://").unwrap();
        let scheme = if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        Url::from_authority_and_path(scheme, rest).unwrap()
    }

    fn get(scheme: Scheme, port: u16, path: &str) -> Probed {
        let request = Request {
            scheme,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![],
        };
        probe(&request, Duration::from_secs(1))
    }

    /// A loopback HTTPS server with a self-signed certificate for another name, answering
    /// each request with `answer(path)` (a whole response), or never when it is None.
    fn https_server(answer: fn(&str) -> Option<String>) -> u16 {
        use std::sync::Arc;
        let cert = rcgen::generate_simple_self_signed(vec!["web.example".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                    match answer(&path) {
                        Some(response) => {
                            let _ = tls.write_all(response.as_bytes());
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                        None => std::thread::sleep(Duration::from_secs(3)),
                    }
                });
            }
        });
        port
    }

    #[test]
    fn https_probes_accept_any_certificate_and_follow_redirects_on_the_same_host() {
        fn answer(path: &str) -> Option<String> {
            let (status, extra, body) = match path {
                "/ok" => ("200 OK", "", ""),
                "/fail" => ("500 Internal Server Error", "", "secret"),
                "/same" => ("302 Found", "Location: /ok\r\n", ""),
                "/loop" => ("301 Moved Permanently", "Location: /loop\r\n", ""),
                "/elsewhere" => (
                    "302 Found",
                    "Location: https://other.example/x\r\nTransfer-Encoding: chunked\r\n",
                    "6\r\nmoved \r\n9\r\nelsewhere\r\n0\r\n\r\n",
                ),
                "/hang" => return None,
                _ => ("404 Not Found", "", ""),
            };
            let length = if extra.contains("chunked") {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            };
            Some(format!("HTTP/1.1 {status}\r\n{extra}{length}\r\n{body}"))
        }
        let port = https_server(answer);
        assert_eq!(get(Scheme::Https, port, "/ok"), Probed::Success);
        assert_eq!(
            get(Scheme::Https, port, "/fail"),
            Probed::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(get(Scheme::Https, port, "/same"), Probed::Success);
        assert_eq!(
            get(Scheme::Https, port, "/elsewhere"),
            Probed::Warning("Probe terminated redirects, Response body: moved elsewhere".into())
        );
        assert_eq!(
            get(Scheme::Https, port, "/loop"),
            Probed::Failure(format!(
                "Get \"https://127.0.0.1:{port}/loop\": stopped after 10 redirects"
            ))
        );
        assert_eq!(
            get(Scheme::Https, port, "/hang"),
            Probed::Failure(format!(
                "Get \"https://127.0.0.1:{port}/hang\": {CLIENT_TIMEOUT}"
            ))
        );
        // Plain HTTP to a TLS port, and TLS to a plain HTTP port.
        assert!(matches!(
            get(Scheme::Http, port, "/ok"),
            Probed::Failure(m) if m.starts_with(&format!("Get \"http://127.0.0.1:{port}/ok\": "))
        ));
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in plain.incoming().flatten() {
                let _ = s.read(&mut [0u8; 1024]);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            }
        });
        assert_eq!(
            get(Scheme::Https, plain_port, "/"),
            Probed::Failure(format!(
                "Get \"https://127.0.0.1:{plain_port}/\": http: server gave HTTP response to HTTPS client"
            ))
        );
        assert_eq!(
            get(Scheme::Https, 1, "/healthz"),
            Probed::Failure(
                "Get \"https://127.0.0.1:1/healthz\": dial tcp 127.0.0.1:1: connect: connection refused"
                    .into()
            )
        );
    }

    #[test]
    fn locations_resolve_like_gos_url_package() {
        let base = url("https://127.0.0.1:8443/a/b?x=1");
        let cases = [
            ("/healthz", "https://127.0.0.1:8443/healthz"),
            ("c", "https://127.0.0.1:8443/a/c"),
            ("../c", "https://127.0.0.1:8443/c"),
            ("?y=2", "https://127.0.0.1:8443/a/b?y=2"),
            ("//other:81/z", "https://other:81/z"),
            ("http://other/z#frag", "http://other/z"),
            ("HTTPS://[::1]:9443", "https://[::1]:9443"),
        ];
        for (location, want) in cases {
            assert_eq!(base.join(location).unwrap().to_string(), want, "{location}");
        }
        let other = base.join("http://other/z").unwrap();
        assert_eq!((other.host.as_str(), other.port), ("other", 80));
        let v6 = base.join("https://[::1]/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 443));
        assert_eq!(
            base.join("ftp://x/"),
            Err("unsupported protocol scheme \"ftp\"".into())
        );
    }

    #[test]
    fn kubelets_default_headers_yield_to_the_probes() {
        let (host, headers) = probe_headers(&[]);
        assert_eq!(host, None);
        assert_eq!(
            headers,
            vec![
                ("User-Agent".into(), "kube-probe/1.37".into()),
                ("Accept".into(), "*/*".into())
            ]
        );
        let given = vec![
            ("host".to_string(), "web.example".to_string()),
            ("accept".to_string(), String::new()),
            ("X-Probe".to_string(), "1".to_string()),
        ];
        let (host, headers) = probe_headers(&given);
        assert_eq!(host.as_deref(), Some("web.example"));
        assert_eq!(
            headers,
            vec![
                ("User-Agent".into(), "kube-probe/1.37".into()),
                ("X-Probe".into(), "1".into())
            ]
        );
    }

    #[test]
    fn statuses_and_bodies_become_kubelets_results() {
        let response = |status, body: &str| Response {
            status,
            location: None,
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(classify(&response(204, "")), Probed::Success);
        assert_eq!(
            classify(&response(302, "<a href=\"http://0.0.0.0/\">Found</a>.")),
            Probed::Warning(
                "Probe terminated redirects, Response body: <a href=\"http://0.0.0.0/\">Found</a>."
                    .into()
            )
        );
        assert_eq!(
            classify(&response(500, "secret details")),
            Probed::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 301 Moved\r\nLOCATION: /x\r\nContent-Length: 3\r\n\r\n"),
            Ok(Head {
                status: 301,
                location: Some("/x".into()),
                content_length: Some(3),
                chunked: false
            })
        );
        assert_eq!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err("malformed HTTP response \"SSH-2.0-OpenSSH\"".into())
        );
        assert_eq!(
            decode_chunked(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            b"abcde"
        );
        assert_eq!(decode_chunked(b"5\r\nab"), b"ab");
    }
}
