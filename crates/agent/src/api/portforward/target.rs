//! The pod a port-forward reaches and connecting to its loopback: the pod is found by
//! namespace and name among the agent's pod records, and each connection is dialled from a
//! short-lived thread that entered the pod's network namespace (the same way probes dial),
//! so the agent's own threads never change namespace. A connected socket stays in the
//! namespace it was made in, so it is handed back to tokio afterwards.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use hyper::StatusCode;

use super::protocol::{connect_failure, go_style_connect_error};
use crate::pods::layout::Layout;
use crate::pods::sandbox::read_record;

/// How long one dial may take (a filtered port would otherwise hang the request).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub uid: String,
    /// None for a host-network pod: its ports are the node's.
    pub netns: Option<PathBuf>,
}

/// The pod `namespace/name` on this node, as kubelet answers when it is not there.
pub fn locate_pod(
    layout: &Layout,
    namespace: &str,
    name: &str,
) -> Result<PodTarget, (StatusCode, String)> {
    let entries = std::fs::read_dir(layout.pods_root()).into_iter().flatten();
    let mut found = None;
    for entry in entries.flatten() {
        let Ok(uid) = entry.file_name().into_string() else {
            continue;
        };
        let Some(record) = read_record(layout, &uid) else {
            continue;
        };
        if record.namespace != namespace || record.name != name {
            continue;
        }
        let netns = (!record.host_network).then(|| layout.netns(&uid));
        // A pod of the same name may linger from before a re-create: prefer a live sandbox.
        let live = netns.as_ref().is_none_or(|p| p.exists());
        let target = PodTarget { uid, netns };
        if live {
            return Ok(target);
        }
        found.get_or_insert(target);
    }
    found.ok_or((StatusCode::NOT_FOUND, "pod does not exist".into()))
}

/// Connects to `port` on the pod's loopback, IPv4 first, then IPv6. The error is the cause
/// text for [`super::protocol::forwarding_error`].
pub async fn connect(target: &PodTarget, port: u16) -> Result<tokio::net::TcpStream, String> {
    let netns = target.netns.clone();
    let uid = target.uid.clone();
    let dialled = tokio::task::spawn_blocking(move || {
        let dial = move || dial_loopback(port);
        match &netns {
            None => dial(),
            Some(path) => runtime::sandbox::netns::run_in(path, dial).unwrap_or_else(|e| {
                Err(DialError::Other(format!(
                    "failed to enter the network namespace of pod {uid}: {e}"
                )))
            }),
        }
    })
    .await
    .map_err(|e| format!("dialling thread failed: {e}"))?;
    let stream = match dialled {
        Ok(s) => s,
        Err(DialError::Refused { ipv4, ipv6 }) => {
            return Err(connect_failure(port, &target.uid, &ipv4, &ipv6))
        }
        Err(DialError::Other(text)) => return Err(text),
    };
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| format!("registering the connection to port {port}: {e}"))
}

enum DialError {
    Refused { ipv4: String, ipv6: String },
    Other(String),
}

fn dial_loopback(port: u16) -> Result<TcpStream, DialError> {
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let ipv4 = match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => go_style_connect_error(&e),
    };
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let ipv6 = match TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT) {
        Ok(s) => return Ok(s),
        Err(e) => go_style_connect_error(&e),
    };
    Err(DialError::Refused { ipv4, ipv6 })
}
