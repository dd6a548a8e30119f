//! The pod network's side effects: links, addresses and routes over netlink (rtnetlink),
//! the nftables table through `nft -f -`, the forwarding sysctl. Every step is idempotent:
//! what exists is re-used, what is missing is made.
//!
//! The callers are blocking (the agent's sandbox code runs on blocking threads), so each
//! operation runs on a current-thread runtime of its own. A pod's side is configured from a
//! fresh thread that has entered the pod's network namespace, so its netlink socket talks
//! to that namespace; no other thread ever changes namespace.

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::cidr::Ipv4Cidr;
use super::plan::{HostPlan, PodPlan, POD_INTERFACE};
use super::PodNetworkError;

type Result<T> = std::result::Result<T, PodNetworkError>;

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PodNetworkError {
    let what = what.into();
    move |source| PodNetworkError::Netlink { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodNetworkError {
    let what = what.into();
    move |source| PodNetworkError::Io { what, source }
}

/// The errno of a netlink error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Runs `f` with a netlink handle in the calling thread's network namespace.
pub(crate) fn with_netlink<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io("starting a netlink runtime"))?;
    rt.block_on(async move {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("opening a netlink socket"))?;
        let driver = tokio::spawn(connection);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

/// Runs `f` on a fresh thread inside the network namespace bound at `netns`.
pub(crate) fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = std::fs::File::open(netns)
        .map_err(io(format!("opening network namespace {}", netns.display())))?;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: setns(2) on an fd we own; it changes only this (scoped, short-lived)
            // thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io(format!(
                    "entering network namespace {}",
                    netns.display()
                ))(std::io::Error::last_os_error()));
            }
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The link called `name`, if there is one.
async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up link {name}"))(e)),
    }
}

async fn delete_link(h: &Handle, name: &str) -> Result<bool> {
    let Some(l) = link(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(l.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(netlink(format!("deleting link {name}"))(e)),
    }
}

fn is_bridge(l: &LinkMessage) -> bool {
    l.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

fn mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn controller(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(c) => Some(*c),
        _ => None,
    })
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn ipv4_of(m: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Some((*ip, m.header.prefix_len))
        }
        _ => None,
    })
}

/// A locally administered MAC derived from the bridge name. A bridge without a set address
/// takes its lowest port's, which changes as pods come and go and leaves stale gateway
/// entries in the pods' ARP caches; a fixed one never changes.
fn bridge_mac(name: &str) -> Vec<u8> {
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let h = hash.to_be_bytes();
    vec![0x02, 0x5f, h[0], h[1], h[2], h[3]]
}

/// The bridge up with the gateway address (and no other IPv4 address); returns its index
/// and MTU.
async fn ensure_bridge(h: &Handle, plan: &HostPlan) -> Result<(u32, u32)> {
    let name = &plan.bridge;
    let existing = match link(h, name).await? {
        Some(l) => l,
        None => {
            let created = h
                .link()
                .add(LinkBridge::new(name).address(bridge_mac(name)).build())
                .execute()
                .await;
            match created {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(netlink(format!("creating bridge {name}"))(e)),
            }
            link(h, name)
                .await?
                .ok_or_else(|| PodNetworkError::Conflict {
                    message: format!("bridge {name} vanished right after it was created"),
                })?
        }
    };
    if !is_bridge(&existing) {
        return Err(PodNetworkError::Conflict {
            message: format!(
                "interface {name} exists and is not a bridge (choose another --pod-bridge)"
            ),
        });
    }
    let index = existing.header.index;
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(netlink(format!("listing the addresses of {name}")))?;
    let current: Vec<(Ipv4Addr, u8)> = addresses.iter().filter_map(ipv4_of).collect();
    for stale in plan.stale_bridge_addresses(&current) {
        if let Some(m) = addresses.iter().find(|m| ipv4_of(m) == Some(stale)) {
            tracing::info!(bridge = %name, "removing stale address {}/{}", stale.0, stale.1);
            h.address()
                .del(m.clone())
                .execute()
                .await
                .map_err(netlink(format!(
                    "removing {}/{} from {name}",
                    stale.0, stale.1
                )))?;
        }
    }
    if !plan.bridge_address_present(&current) {
        let (ip, prefix) = plan.bridge_address();
        h.address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("adding {ip}/{prefix} to {name}")))?;
    }
    let mut set = LinkUnspec::new_with_index(index).up();
    let current_mtu = mtu(&existing).unwrap_or(1500);
    let bridge_mtu = plan.mtu.unwrap_or(current_mtu);
    if bridge_mtu != current_mtu {
        set = set.mtu(bridge_mtu);
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(netlink(format!("bringing {name} up (MTU {bridge_mtu})")))?;
    Ok((index, bridge_mtu))
}

fn blackhole(cidr: Ipv4Cidr) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix())
        .kind(RouteType::BlackHole)
        .build()
}

/// Host side: forwarding on, the bridge, the cluster range routed locally, the nftables
/// table. Returns the bridge's index and MTU.
pub(crate) fn ensure_host(plan: &HostPlan) -> Result<(u32, u32)> {
    enable_forwarding()?;
    let bridge = with_netlink(|h| async move {
        let bridge = ensure_bridge(&h, plan).await?;
        h.route()
            .add(blackhole(plan.blackhole_route()))
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "routing {} locally (blackhole)",
                plan.blackhole_route()
            )))?;
        Ok(bridge)
    })?;
    nft(
        &plan.nft_script(),
        &format!("programming nftables table ip {}", plan.nft_table()),
    )?;
    Ok(bridge)
}

/// The bridge's index and MTU, if the bridge exists.
pub(crate) fn bridge_state(name: &str) -> Result<Option<(u32, u32)>> {
    with_netlink(|h| async move {
        Ok(link(&h, name)
            .await?
            .filter(is_bridge)
            .map(|l| (l.header.index, mtu(&l).unwrap_or(1500))))
    })
}

/// Removes what [`ensure_host`] made: the table, every port of the bridge, the bridge, and
/// the blackhole route unless another interface still holds an address in the cluster
/// range.
pub(crate) fn remove_host(bridge: &str, cluster: Ipv4Cidr) -> Result<()> {
    nft(
        &super::plan::nft_delete_script(bridge),
        &format!(
            "deleting nftables table ip {}",
            super::plan::nft_table_name(bridge)
        ),
    )?;
    with_netlink(|h| async move {
        let links: Vec<LinkMessage> = h
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing links"))?;
        if let Some(br) = links.iter().find(|l| link_name(l) == Some(bridge)) {
            let index = br.header.index;
            for port in links.iter().filter(|l| controller(l) == Some(index)) {
                if let Some(name) = link_name(port) {
                    delete_link(&h, name).await?;
                }
            }
            delete_link(&h, bridge).await?;
        }
        let addresses: Vec<AddressMessage> = h
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing addresses"))?;
        let named: Vec<(String, Ipv4Addr)> = addresses
            .iter()
            .filter_map(|m| {
                let (ip, _) = ipv4_of(m)?;
                let name = links
                    .iter()
                    .find(|l| l.header.index == m.header.index)
                    .and_then(link_name)?;
                Some((name.to_string(), ip))
            })
            .collect();
        if super::plan::blackhole_removable(cluster, bridge, &named) {
            match h.route().del(blackhole(cluster)).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(libc::ESRCH) | Some(libc::ENOENT)) => {}
                Err(e) => {
                    return Err(netlink(format!("removing the blackhole route {cluster}"))(
                        e,
                    ))
                }
            }
        }
        Ok(())
    })
}

/// The pod's veth pair: host end on the bridge (hairpin on, up), the other end in the
/// pod's namespace as eth0 with its address and default route; IPv6 off on both ends. A half-made pair from an
/// interrupted attempt (either name taken) is replaced: the pair is made first and only
/// when the kernel answers EEXIST are the leftovers deleted and the pair made again, so a
/// first attach into a fresh namespace sends no lookups and starts no thread for them.
pub(crate) fn attach(plan: &PodPlan, netns: &Path, bridge_index: u32, mtu: u32) -> Result<()> {
    let ns_file = std::fs::File::open(netns)
        .map_err(io(format!("opening network namespace {}", netns.display())))?;
    let ns_fd = ns_file.as_raw_fd();
    let host = plan.host_veth.as_str();
    with_netlink(|h| async move {
        if !add_veth_pair(&h, host, ns_fd, mtu).await? {
            // An eth0 left in the namespace (its host end deleted) or a host end left behind.
            in_netns(netns, || {
                with_netlink(|h| async move {
                    delete_link(&h, POD_INTERFACE).await?;
                    Ok(())
                })
            })?;
            delete_link(&h, host).await?;
            if !add_veth_pair(&h, host, ns_fd, mtu).await? {
                return Err(PodNetworkError::Conflict {
                    message: format!(
                        "veth {host}/{POD_INTERFACE} still exists after deleting the leftovers"
                    ),
                });
            }
        }
        let index = link(&h, host)
            .await?
            .ok_or_else(|| PodNetworkError::Conflict {
                message: format!("veth {host} vanished right after it was created"),
            })?
            .header
            .index;
        disable_ipv6(host)?;
        h.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("attaching {host} to the bridge")))?;
        h.link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(netlink(format!("turning hairpin mode on for {host}")))?;
        Ok(())
    })?;
    drop(ns_file);
    in_netns(netns, || {
        with_netlink(|h| async move {
            let index = link(&h, POD_INTERFACE)
                .await?
                .ok_or_else(|| PodNetworkError::Conflict {
                    message: format!("{POD_INTERFACE} is missing in the pod's namespace"),
                })?
                .header
                .index;
            h.address()
                .add(index, IpAddr::V4(plan.address), plan.prefix)
                .replace()
                .execute()
                .await
                .map_err(netlink(format!(
                    "adding {}/{} to {POD_INTERFACE}",
                    plan.address, plan.prefix
                )))?;
            // This thread is in the pod's namespace, so /proc/sys/net is the pod's.
            disable_ipv6(POD_INTERFACE)?;
            h.link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(netlink(format!("bringing {POD_INTERFACE} up")))?;
            h.route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .gateway(plan.gateway)
                        .output_interface(index)
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(netlink(format!(
                    "adding the default route via {}",
                    plan.gateway
                )))?;
            Ok(())
        })
    })
}

/// Makes the veth pair `host`/eth0 with eth0 created in the namespace `ns_fd`; false when
/// either name is taken (EEXIST), which changes nothing.
async fn add_veth_pair(h: &Handle, host: &str, ns_fd: i32, mtu: u32) -> Result<bool> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(POD_INTERFACE)
        .mtu(mtu)
        .setns_by_fd(ns_fd)
        .build();
    let added = h
        .link()
        .add(
            LinkVeth::new(host, POD_INTERFACE)
                .mtu(mtu)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build(),
        )
        .execute()
        .await;
    match added {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(netlink(format!(
            "creating veth pair {host}/{POD_INTERFACE}"
        ))(e)),
    }
}

/// Deletes the pod's host veth (its peer goes with it); Ok when it is already gone.
pub(crate) fn detach(host_veth: &str) -> Result<()> {
    with_netlink(|h| async move {
        delete_link(&h, host_veth).await?;
        Ok(())
    })
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv6 off on one interface of the calling thread's network namespace, before it
/// comes up. The pod network is IPv4 only; with IPv6 on, every veth end that comes up
/// gets a link-local address, runs duplicate address detection and sends MLD reports,
/// and the bridge floods those to every other pod's port: in a burst of 100 pod starts
/// that was ~7% of the node's CPU (BENCHMARKS.md, session 14). Docker does the same for
/// interfaces on IPv4-only networks. The pod's loopback keeps `::1`. A kernel without
/// IPv6 has no such file, which is fine.
fn disable_ipv6(interface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("writing 1 to {path}"))(e)),
    }
}

fn enable_forwarding() -> Result<()> {
    if std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(IP_FORWARD, "1").map_err(io(format!("enabling {IP_FORWARD}")))
}

/// The nft binary: Debian's /usr/sbin/nft (not always on a non-root PATH), else `nft`.
pub fn nft_binary() -> &'static str {
    if Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// Runs an nftables script in one transaction (`nft -f -`).
pub(crate) fn nft(script: &str, what: &str) -> Result<()> {
    let mut child = Command::new(nft_binary())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!(
            "{what}: running {} (install nftables)",
            nft_binary()
        )))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io(format!("{what}: writing to nft")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(format!("{what}: waiting for nft")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PodNetworkError::Nft {
            what: what.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
