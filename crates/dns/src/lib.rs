//! Cluster DNS, built into `skiff server` where k3s runs one CoreDNS: upstream's
//! "Kubernetes DNS-Based Service Discovery" records for Services, endpoints and pods
//! under the cluster domain, answered from memory; every other name forwarded to the
//! host's resolvers. Served over UDP and TCP by `hickory-server`.
//!
//! - `records`: what one Service contributes to the zone (pure, table-tested).
//! - `zone`: the in-memory zone and the lookup deciding each answer (pure).
//! - `feed`: keeps the zone current from the shared Service/EndpointSlice informers.
//! - `handler`: turns a query into an answer (zone, CNAME chase, or upstream).
//! - `forward`: the upstream exchange and the resolv.conf reading.

pub mod feed;
pub mod forward;
pub mod handler;
pub mod records;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;

pub use feed::follow;
pub use forward::{parse_upstream, resolv_conf_nameservers};
/// The DNS message types, for clients of this crate (tests, benchmarks).
pub use hickory_server::proto;
pub use zone::SharedZone;

/// TTL of every record of the cluster zone (CoreDNS's `kubernetes` plugin default, which
/// k3s keeps).
pub const TTL: u32 = 5;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Answers queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to serve on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`--cluster-domain`, e.g. `cluster.local`).
    pub cluster_domain: String,
    /// The kube-dns Service IPs (`--cluster-dns`), the zone's name server address.
    pub cluster_dns: Vec<IpAddr>,
    /// Where other names go (the host's resolv.conf nameservers by default).
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("listening for DNS on {addr} ({protocol}): {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        source: std::io::Error,
    },
    #[error("serving DNS: {0}")]
    Serve(String),
}

/// A bound DNS server and the zone it answers from.
pub struct ClusterDns {
    zone: Arc<SharedZone>,
    server: Server<handler::Handler>,
    local: Vec<SocketAddr>,
}

impl ClusterDns {
    /// Bind every listen address (UDP and TCP) and start answering: names outside the
    /// cluster domain at once, cluster names once [`follow`] has listed the cluster.
    pub async fn bind(config: Config) -> Result<ClusterDns, DnsError> {
        let zone = Arc::new(SharedZone::new(zone::Zone::new(
            &config.cluster_domain,
            config.cluster_dns.clone(),
        )));
        let mut sockets = Vec::new();
        let mut local = Vec::new();
        for addr in &config.listen {
            let udp = tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|source| DnsError::Bind {
                    addr: *addr,
                    protocol: "UDP",
                    source,
                })?;
            let bound = udp.local_addr().map_err(|source| DnsError::Bind {
                addr: *addr,
                protocol: "UDP",
                source,
            })?;
            // Port 0 asks for any port: TCP takes the one UDP got.
            let tcp = tokio::net::TcpListener::bind(bound)
                .await
                .map_err(|source| DnsError::Bind {
                    addr: bound,
                    protocol: "TCP",
                    source,
                })?;
            local.push(bound);
            sockets.push((udp, tcp));
        }
        // Never forward to ourselves: a host whose resolv.conf names the cluster DNS
        // would loop every unknown name (CoreDNS's `loop` plugin guards the same).
        let upstreams: Vec<SocketAddr> = config
            .upstreams
            .iter()
            .copied()
            .filter(|u| !local.contains(u))
            .filter(|u| !(u.port() == 53 && config.cluster_dns.contains(&u.ip())))
            .collect();
        if upstreams.is_empty() {
            tracing::warn!(
                "cluster DNS has no upstream resolver: names outside {} will fail",
                config.cluster_domain
            );
        }
        let handler = handler::Handler {
            zone: zone.clone(),
            forwarder: forward::Forwarder::new(upstreams),
            rotation: Default::default(),
        };
        let mut server = Server::new(handler);
        for (udp, tcp) in sockets {
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        }
        Ok(ClusterDns {
            zone,
            server,
            local,
        })
    }

    /// The zone, for [`follow`].
    pub fn zone(&self) -> Arc<SharedZone> {
        self.zone.clone()
    }

    /// Where it listens (with the ports the system chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Serve until the sockets fail.
    pub async fn run(mut self) -> Result<(), DnsError> {
        self.server
            .block_until_done()
            .await
            .map_err(|e| DnsError::Serve(e.to_string()))
    }
}
