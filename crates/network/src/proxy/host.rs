//! The host side of the data plane that is not nftables: the service CIDR is routed to a
//! device `<bridge>-svc` before any rule exists, so the first route lookup for a ClusterIP
//! never picks the default route (nothing leaves the machine, and traffic that no rule
//! translates dies there). The device is a bridge without ports, not a dummy: kernels
//! without the dummy module exist (the development machine is one) and every node that
//! runs pods has bridges; bridged pod traffic passes netfilter
//! (`br_netfilter`), so a reply from a pod on the same bridge is un-DNATed. A record of the
//! table and device names lets `skiff killall` remove them.

use std::net::Ipv4Addr;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::{LinkBridge, LinkUnspec, RouteMessageBuilder};

use super::ProxyError;

/// The file in the agent's directory naming what the proxy made on the host.
const RECORD_FILE: &str = "service-proxy";

/// Makes sure the portless bridge exists and is up, and routes the service CIDR to it.
pub async fn route_service_cidr(device: &str, cidr: (Ipv4Addr, u8)) -> Result<(), ProxyError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| ProxyError::Host(format!("netlink: {e}")))?;
    let conn = tokio::spawn(connection);
    let result = async {
        let index = match link_index(&handle, device).await? {
            Some(index) => index,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(device).up().build())
                    .execute()
                    .await
                    .map_err(|e| ProxyError::Host(format!("creating device {device}: {e}")))?;
                link_index(&handle, device).await?.ok_or_else(|| {
                    ProxyError::Host(format!("device {device} vanished after creation"))
                })?
            }
        };
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| ProxyError::Host(format!("setting {device} up: {e}")))?;
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(cidr.0, cidr.1)
                    .output_interface(index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(|e| {
                ProxyError::Host(format!(
                    "routing the service CIDR {}/{} to {device}: {e}",
                    cidr.0, cidr.1
                ))
            })
    }
    .await;
    conn.abort();
    result
}

async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, ProxyError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // ENODEV: no such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(ProxyError::Host(format!("looking up device {name}: {e}"))),
    }
}

/// Bridged IPv4 traffic must traverse netfilter so that a pod's reply to another pod on the
/// same bridge is un-DNATed by conntrack (kubelet requires the same setting).
pub fn bridged_traffic_through_netfilter() {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => {
            if let Err(e) = std::fs::write(path, "1") {
                tracing::warn!("cannot enable {path}: {e}; same-node pod-to-Service replies may break");
            }
        }
        Err(_) => tracing::warn!(
            "br_netfilter is not loaded ({path} missing): a pod reaching a Service whose endpoint is on the same bridge gets un-translated replies (modprobe br_netfilter)"
        ),
    }
}

/// Writes which table and device this proxy owns, for [`remove_recorded`].
pub fn record(state_dir: &Path, table: &str, device: &str) -> Result<(), ProxyError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| ProxyError::Host(format!("creating {}: {e}", state_dir.display())))?;
    let path = state_dir.join(RECORD_FILE);
    std::fs::write(&path, format!("table {table}\ndevice {device}\n"))
        .map_err(|e| ProxyError::Host(format!("writing {}: {e}", path.display())))
}

/// Removes the recorded table and device (and the record); nothing recorded is fine.
pub fn remove_recorded(state_dir: &Path, nft: Option<&super::nft::Nft>) -> Result<(), ProxyError> {
    let path = state_dir.join(RECORD_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut errors = Vec::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("table", table)) => {
                if let Some(nft) = nft {
                    let listed = nft
                        .run_blocking(&["list", "tables", "ip"])
                        .unwrap_or_default();
                    if listed
                        .lines()
                        .any(|l| l.trim() == format!("table ip {table}"))
                    {
                        if let Err(e) = nft.run_blocking(&["delete", "table", "ip", table]) {
                            errors.push(e.to_string());
                        }
                    }
                }
            }
            Some(("device", device)) => {
                if let Err(e) = delete_link_blocking(device) {
                    errors.push(e.to_string());
                }
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        let _ = std::fs::remove_file(&path);
        Ok(())
    } else {
        Err(ProxyError::Host(errors.join("; ")))
    }
}

fn delete_link_blocking(device: &str) -> Result<(), ProxyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProxyError::Host(format!("starting a runtime: {e}")))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| ProxyError::Host(format!("netlink: {e}")))?;
        let conn = tokio::spawn(connection);
        let result = match link_index(&handle, device).await? {
            None => Ok(()),
            Some(index) => handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|e| ProxyError::Host(format!("deleting device {device}: {e}"))),
        };
        conn.abort();
        result
    })
}
