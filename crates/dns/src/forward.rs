//! Names outside the cluster domain go to the host's resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf`: the client's query is sent as it came (UDP, then TCP when
//! the answer was truncated), to each upstream in turn until one answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("upstream {upstream}: {message}")]
    Upstream {
        upstream: SocketAddr,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder { upstreams }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Send `query` (a whole DNS message) upstream and return the first answer; the last
    /// error when none answers.
    pub async fn exchange(&self, query: &[u8]) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for upstream in &self.upstreams {
            match exchange_with(*upstream, query).await {
                Ok(message) => return Ok(message),
                Err(message) => {
                    tracing::debug!(%upstream, "forwarding a DNS query failed: {message}");
                    last = ForwardError::Upstream {
                        upstream: *upstream,
                        message,
                    };
                }
            }
        }
        Err(last)
    }
}

async fn exchange_with(upstream: SocketAddr, query: &[u8]) -> Result<Message, String> {
    let id = query
        .get(..2)
        .ok_or_else(|| "query shorter than a DNS header".to_string())?;
    let bytes = tokio::time::timeout(UPSTREAM_TIMEOUT, udp_exchange(upstream, query, id))
        .await
        .map_err(|_| format!("no answer within {UPSTREAM_TIMEOUT:?} (UDP)"))?
        .map_err(|e| format!("UDP: {e}"))?;
    let message = Message::from_vec(&bytes).map_err(|e| format!("bad answer: {e}"))?;
    if !message.metadata.truncation {
        return Ok(message);
    }
    let bytes = tokio::time::timeout(UPSTREAM_TIMEOUT, tcp_exchange(upstream, query))
        .await
        .map_err(|_| format!("no answer within {UPSTREAM_TIMEOUT:?} (TCP)"))?
        .map_err(|e| format!("TCP: {e}"))?;
    Message::from_vec(&bytes).map_err(|e| format!("bad answer: {e}"))
}

/// One query over a fresh connected UDP socket (a random source port per query); answers
/// with another ID are ignored.
async fn udp_exchange(upstream: SocketAddr, query: &[u8], id: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 12 && buf[..2] == *id && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The nameservers of a resolv.conf (`nameserver ADDR` lines), port 53. Entries that are
/// not addresses (or carry an IPv6 zone) are skipped.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some("nameserver")).then(|| fields.next())?
        })
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// An upstream given on the command line: `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
pub fn parse_upstream(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_of_a_resolv_conf() {
        let text = "# generated\nsearch example.test\nnameserver 192.0.2.53\n  nameserver   2001:db8::53 \nnameserver fe80::1%eth0\nnameserver\noptions ndots:2\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstreams_from_flags() {
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.1"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:5353"),
            Some("[::1]:5353".parse().unwrap())
        );
        assert_eq!(parse_upstream("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("resolver"), None);
    }
}
