//! flannel's vxlan backend (facts from flannel's design, our own code). Each node has a
//! VXLAN device `<bridge>.vxlan`: VNI [`VNI`], UDP port [`PORT`], local end the node's
//! InternalIP, learning off, MTU the underlying interface's less [`OVERHEAD`], and a MAC
//! derived from the InternalIP ([`vtep_mac`]) that the node publishes in its Node's
//! [`MAC_ANNOTATION`]. The device holds the network address of the node's podCIDR as /32
//! (`10.42.1.0/32`). For every other Node with a podCIDR, an InternalIP and a published MAC:
//! - a permanent neighbour entry: its podCIDR's network address → its MAC,
//! - an FDB entry: its MAC → its InternalIP (where the encapsulated frames go),
//! - a route of ours: its podCIDR via its network address, `dev <bridge>.vxlan onlink`.
//!
//! Nothing is learned or flooded: the Nodes are the only source. Entries for Nodes that
//! are gone are removed; routes of ours that are not through the device (host-gw's) are
//! replaced or removed. Pods get the device's MTU (the agent passes it to the pod network).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::str::FromStr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan};
use serde_json::json;

use super::{apply_routes, peers, NodeRoute, NodeRoutesConfig, Peer};
use crate::pod_network::cidr::Ipv4Cidr;
use crate::pod_network::plan::MAX_INTERFACE_NAME;

/// The VXLAN network identifier (flannel's default).
pub const VNI: u32 = 1;
/// The UDP port the encapsulated frames use (Linux's and flannel's default, not IANA's 4789).
pub const PORT: u16 = 8472;
/// What encapsulation costs: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const OVERHEAD: u32 = 50;
/// The Node annotation with the node's VTEP MAC (flannel keeps it in its backend-data).
pub const MAC_ANNOTATION: &str = "skiff.io/vxlan-mac";
/// The record `skiff killall` reads, under the state directory.
const RECORD: &str = "vxlan.json";

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(text: &str) -> Result<Mac, String> {
        let bad = || format!("{text:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)");
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl Mac {
    fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

/// `<bridge>.vxlan`.
pub fn device_name(bridge: &str) -> String {
    format!("{bridge}.vxlan")
}

/// Why `--pod-routes vxlan` cannot work with this bridge name, or None.
pub fn device_name_problem(bridge: &str) -> Option<String> {
    let name = device_name(bridge);
    (name.len() > MAX_INTERFACE_NAME).then(|| {
        format!(
            "--pod-routes vxlan: the VXLAN device {name:?} (named after --pod-bridge) is longer \
             than {MAX_INTERFACE_NAME} characters; choose a --pod-bridge of at most {} characters",
            MAX_INTERFACE_NAME - ".vxlan".len()
        )
    })
}

/// The device's MAC, fixed by the node's address so that a re-made device (agent restart,
/// reboot) keeps the MAC the other nodes know: locally administered, unicast.
pub fn vtep_mac(node_ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = node_ip.octets();
    Mac([0x06, 0x5f, a, b, c, d])
}

/// The MTU of the device (and of the pods) on an interface of MTU `underlying`.
pub fn tunnel_mtu(underlying: u32) -> u32 {
    underlying.saturating_sub(OVERHEAD)
}

/// The MAC a Node published, if any (a malformed one counts as none).
pub fn published_mac(node: &Node) -> Option<Mac> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAC_ANNOTATION))
        .and_then(|m| m.parse().ok())
}

/// The device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: String,
    pub local: Ipv4Addr,
    /// The index of the interface holding `local`.
    pub underlying: u32,
    pub mtu: u32,
    pub mac: Mac,
}

/// What the kernel has under the device's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedDevice {
    pub index: u32,
    pub is_vxlan: bool,
    pub vni: Option<u32>,
    pub local: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
    pub underlying: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    Create,
    /// Delete and create: what cannot change in place differs (flannel does the same).
    Recreate {
        index: u32,
        reason: String,
    },
    /// Usable; set what differs.
    Adjust {
        index: u32,
        mtu: Option<u32>,
        mac: Option<Mac>,
        up: bool,
    },
}

pub fn device_action(spec: &DeviceSpec, observed: Option<&ObservedDevice>) -> DeviceAction {
    let Some(o) = observed else {
        return DeviceAction::Create;
    };
    let mismatch = if !o.is_vxlan {
        Some("it is not a VXLAN device".to_string())
    } else if o.vni != Some(VNI) {
        Some(format!("VNI {:?}, want {VNI}", o.vni))
    } else if o.local != Some(spec.local) {
        Some(format!("local address {:?}, want {}", o.local, spec.local))
    } else if o.port != Some(PORT) {
        Some(format!("port {:?}, want {PORT}", o.port))
    } else if o.learning != Some(false) {
        Some("learning is on".to_string())
    } else if o.underlying != Some(spec.underlying) {
        Some(format!(
            "underlying interface {:?}, want {}",
            o.underlying, spec.underlying
        ))
    } else {
        None
    };
    if let Some(reason) = mismatch {
        return DeviceAction::Recreate {
            index: o.index,
            reason,
        };
    }
    DeviceAction::Adjust {
        index: o.index,
        mtu: (o.mtu != Some(spec.mtu)).then_some(spec.mtu),
        mac: (o.mac != Some(spec.mac)).then_some(spec.mac),
        up: !o.up,
    }
}

/// The device's one address: the network address of the node's podCIDR, /32.
pub fn device_address(pod_cidr: Ipv4Cidr) -> (Ipv4Addr, u8) {
    (pod_cidr.network(), 32)
}

/// What the kernel must know to reach the peers through the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// A peer's podCIDR network address → its MAC (permanent neighbour entries).
    pub neighbours: BTreeMap<Ipv4Addr, Mac>,
    /// A peer's MAC → its InternalIP (FDB entries: where frames for that MAC go).
    pub fdb: BTreeMap<Mac, Ipv4Addr>,
    /// A peer's podCIDR via its network address, onlink through the device.
    pub routes: BTreeMap<Ipv4Cidr, NodeRoute>,
}

/// Forwarding for every peer that published its MAC; the others are not reachable yet.
pub fn desired_forwarding(peers: &[Peer], device: u32) -> Forwarding {
    let mut f = Forwarding::default();
    for peer in peers {
        let Some(mac) = peer.vtep_mac else {
            continue;
        };
        let gateway = peer.pod_cidr.network();
        f.neighbours.insert(gateway, mac);
        f.fdb.insert(mac, peer.ip);
        f.routes.insert(
            peer.pod_cidr,
            NodeRoute {
                via: gateway,
                device: Some(device),
            },
        );
    }
    f
}

/// Entries to set (missing or different) and to remove (not wanted).
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<K, V> {
    pub set: Vec<(K, V)>,
    pub remove: Vec<K>,
}

pub fn diff<K: Ord + Copy, V: PartialEq + Copy>(
    desired: &BTreeMap<K, V>,
    existing: &BTreeMap<K, V>,
) -> Diff<K, V> {
    Diff {
        set: desired
            .iter()
            .filter(|(k, v)| existing.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        remove: existing
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect(),
    }
}

/// The annotation patch that makes the Node's published MAC `want` (None: removed), or
/// None when it already is.
pub fn annotation_patch(node: &Node, want: Option<Mac>) -> Option<serde_json::Value> {
    let current = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAC_ANNOTATION));
    let want_text = want.map(|m| m.to_string());
    (current != want_text.as_ref())
        .then(|| json!({"metadata": {"annotations": {MAC_ANNOTATION: want_text}}}))
}

// ---- applying -------------------------------------------------------------------------

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

async fn link_by_name(h: &rtnetlink::Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(format!("looking up link {name}: {e}")),
    }
}

fn observe(link: &LinkMessage) -> ObservedDevice {
    let mut o = ObservedDevice {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Mtu(m) => o.mtu = Some(*m),
            LinkAttribute::Address(a) => o.mac = Mac::from_bytes(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vxlan) => o.is_vxlan = true,
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(v) => o.vni = Some(*v),
                                    InfoVxlan::Local(ip) => o.local = Some(*ip),
                                    InfoVxlan::Port(p) => o.port = Some(*p),
                                    InfoVxlan::Learning(l) => o.learning = Some(*l),
                                    InfoVxlan::Link(i) => o.underlying = Some(*i),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    o
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

/// The interface holding `ip` and its MTU: the tunnel's underlying interface.
async fn underlying(h: &rtnetlink::Handle, ip: Ipv4Addr) -> Result<(u32, u32), String> {
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing addresses: {e}"))?;
    let index = addresses
        .iter()
        .find(|m| ipv4_of(m).is_some_and(|(a, _)| a == ip))
        .map(|m| m.header.index)
        .ok_or_else(|| {
            format!("no interface holds the node's address {ip} (the VXLAN tunnel's local end)")
        })?;
    let mut links = h.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(|e| format!("looking up interface {index}: {e}"))?
        .ok_or_else(|| format!("interface {index} vanished"))?;
    let mtu = observe(&link).mtu.unwrap_or(1500);
    Ok((index, mtu))
}

/// The pods' MTU with `--pod-routes vxlan`: the MTU of the interface holding `node_ip`
/// less [`OVERHEAD`], as flannel hands its CNI plugin.
pub async fn pod_mtu(node_ip: Ipv4Addr) -> Result<u32, String> {
    let (connection, h, _) =
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let driver = tokio::spawn(connection);
    let result = underlying(&h, node_ip)
        .await
        .map(|(_, mtu)| tunnel_mtu(mtu));
    driver.abort();
    result
}

/// The device up as `spec` says; returns its index.
async fn ensure_device(h: &rtnetlink::Handle, spec: &DeviceSpec) -> Result<u32, String> {
    let name = &spec.name;
    let observed = link_by_name(h, name).await?.map(|l| observe(&l));
    let action = device_action(spec, observed.as_ref());
    let (index, mtu, mac, up) = match action {
        DeviceAction::Adjust {
            index,
            mtu,
            mac,
            up,
        } => (index, mtu, mac, up),
        DeviceAction::Create | DeviceAction::Recreate { .. } => {
            if let DeviceAction::Recreate { index, reason } = &action {
                tracing::info!("node routes: re-making {name}: {reason}");
                h.link()
                    .del(*index)
                    .execute()
                    .await
                    .map_err(|e| format!("deleting {name}: {e}"))?;
            }
            let message = LinkVxlan::new(name, VNI)
                .dev(spec.underlying)
                .local(spec.local)
                .port(PORT)
                .learning(false)
                .mtu(spec.mtu)
                .address(spec.mac.0.to_vec())
                .build();
            h.link()
                .add(message)
                .execute()
                .await
                .map_err(|e| format!("creating VXLAN device {name}: {e}"))?;
            let made = link_by_name(h, name)
                .await?
                .ok_or_else(|| format!("{name} vanished right after it was created"))?;
            tracing::info!(
                "node routes: VXLAN device {name} (VNI {VNI}, port {PORT}, local {}, MTU {}, MAC {})",
                spec.local,
                spec.mtu,
                spec.mac
            );
            (made.header.index, None, None, true)
        }
    };
    if mtu.is_some() || mac.is_some() || up {
        let mut set = LinkUnspec::new_with_index(index);
        if let Some(m) = mtu {
            set = set.mtu(m);
        }
        if let Some(m) = mac {
            set = set.address(m.0.to_vec());
        }
        h.link()
            .set(set.up().build())
            .execute()
            .await
            .map_err(|e| format!("setting up {name}: {e}"))?;
    }
    Ok(index)
}

/// The device holds exactly `want` (when known) as its IPv4 address.
async fn ensure_address(
    h: &rtnetlink::Handle,
    index: u32,
    name: &str,
    want: Option<(Ipv4Addr, u8)>,
) -> Result<(), String> {
    let addresses: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing the addresses of {name}: {e}"))?;
    let mut present = false;
    for m in &addresses {
        let Some(address) = ipv4_of(m) else { continue };
        if Some(address) == want {
            present = true;
        } else {
            h.address()
                .del(m.clone())
                .execute()
                .await
                .map_err(|e| format!("removing {}/{} from {name}: {e}", address.0, address.1))?;
        }
    }
    if let (Some((ip, prefix)), false) = (want, present) {
        h.address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(|e| format!("adding {ip}/{prefix} to {name}: {e}"))?;
    }
    Ok(())
}

fn neighbour_ip(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
            <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn neighbour_mac(m: &NeighbourMessage) -> Option<Mac> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Mac::from_bytes(b),
        _ => None,
    })
}

/// The device's entries of one family (Inet: neighbours, Bridge: FDB), with the messages
/// to delete them by.
async fn entries(
    h: &rtnetlink::Handle,
    index: u32,
    family: AddressFamily,
) -> Result<Vec<NeighbourMessage>, String> {
    let all: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("listing {family:?} neighbours: {e}"))?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.ifindex == index && m.header.family == family)
        .collect())
}

async fn apply_forwarding(
    h: &rtnetlink::Handle,
    index: u32,
    name: &str,
    want: &Forwarding,
) -> Result<(), String> {
    let neighbours = entries(h, index, AddressFamily::Inet).await?;
    let existing: BTreeMap<Ipv4Addr, Mac> = neighbours
        .iter()
        .filter(|m| m.header.state == NeighbourState::Permanent)
        .filter_map(|m| Some((neighbour_ip(m)?, neighbour_mac(m)?)))
        .collect();
    let plan = diff(&want.neighbours, &existing);
    for ip in &plan.remove {
        if let Some(m) = neighbours.iter().find(|m| neighbour_ip(m) == Some(*ip)) {
            if let Err(e) = h.neighbours().del(m.clone()).execute().await {
                tracing::warn!("node routes: removing neighbour {ip} from {name}: {e}");
            }
        }
    }
    for (ip, mac) in &plan.set {
        h.neighbours()
            .add(index, IpAddr::V4(*ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| format!("neighbour {ip} lladdr {mac} on {name}: {e}"))?;
    }

    let fdb = entries(h, index, AddressFamily::Bridge).await?;
    let existing: BTreeMap<Mac, Ipv4Addr> = fdb
        .iter()
        .filter_map(|m| Some((neighbour_mac(m)?, neighbour_ip(m)?)))
        .collect();
    let plan = diff(&want.fdb, &existing);
    for mac in &plan.remove {
        for m in fdb.iter().filter(|m| neighbour_mac(m) == Some(*mac)) {
            if let Err(e) = h.neighbours().del(m.clone()).execute().await {
                tracing::warn!("node routes: removing FDB entry {mac} from {name}: {e}");
            }
        }
    }
    for (mac, dst) in &plan.set {
        h.neighbours()
            .add_bridge(index, &mac.0)
            .destination(IpAddr::V4(*dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| format!("FDB entry {mac} dst {dst} on {name}: {e}"))?;
    }
    Ok(())
}

async fn patch_annotation(
    api: &kube::Api<Node>,
    nodes: &[Node],
    me: &str,
    want: Option<Mac>,
) -> Result<(), String> {
    let Some(node) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))
    else {
        // Not registered yet: its creation is the next Node event.
        return Ok(());
    };
    let Some(patch) = annotation_patch(node, want) else {
        return Ok(());
    };
    api.patch(me, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("annotating Node {me} with {MAC_ANNOTATION}: {e}"))?;
    Ok(())
}

fn write_record(state_dir: &Path, device: &str) -> Result<(), String> {
    let path = state_dir.join(RECORD);
    let text = json!({ "device": device }).to_string();
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub(super) async fn reconcile(
    h: &rtnetlink::Handle,
    api: &kube::Api<Node>,
    config: &NodeRoutesConfig,
    nodes: &[Node],
) -> Result<(), String> {
    if let Some(problem) = device_name_problem(&config.bridge) {
        return Err(problem);
    }
    let name = device_name(&config.bridge);
    let (underlying_index, underlying_mtu) = underlying(h, config.node_ip).await?;
    let spec = DeviceSpec {
        name: name.clone(),
        local: config.node_ip,
        underlying: underlying_index,
        mtu: tunnel_mtu(underlying_mtu),
        mac: vtep_mac(config.node_ip),
    };
    write_record(&config.state_dir, &name)?;
    let index = ensure_device(h, &spec).await?;
    let own_cidr = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(config.node_name.as_str()))
        .and_then(super::pod_cidr)
        .filter(|c| config.cluster_cidr.covers(c));
    ensure_address(h, index, &name, own_cidr.map(device_address)).await?;
    patch_annotation(api, nodes, &config.node_name, Some(spec.mac)).await?;
    let peers = peers(nodes, &config.node_name, config.cluster_cidr);
    for p in peers.iter().filter(|p| p.vtep_mac.is_none()) {
        tracing::debug!(
            "node routes: node {} has not published {MAC_ANNOTATION} yet",
            p.name
        );
    }
    let want = desired_forwarding(&peers, index);
    apply_forwarding(h, index, &name, &want).await?;
    apply_routes(h, &want.routes, config.cluster_cidr).await
}

/// With host-gw: the VXLAN device (its routes, neighbours and FDB go with it), its record
/// and this Node's annotation, if a vxlan run left them.
pub(super) async fn remove_leftovers(
    h: &rtnetlink::Handle,
    api: &kube::Api<Node>,
    config: &NodeRoutesConfig,
    nodes: &[Node],
) {
    let name = device_name(&config.bridge);
    match link_by_name(h, &name).await {
        Ok(Some(link)) if observe(&link).is_vxlan => {
            match h.link().del(link.header.index).execute().await {
                Ok(()) => tracing::info!("node routes: removed {name} (host-gw now)"),
                Err(e) => tracing::warn!("node routes: removing {name}: {e}"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("node routes: {e}"),
    }
    let _ = std::fs::remove_file(config.state_dir.join(RECORD));
    if let Err(e) = patch_annotation(api, nodes, &config.node_name, None).await {
        tracing::warn!("node routes: {e}");
    }
}

/// `skiff killall`: removes the VXLAN device recorded under `state_dir` (with its routes,
/// neighbours and FDB entries). Ok when there is none. Blocking.
pub fn remove(state_dir: &Path) -> Result<(), String> {
    let path = state_dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let record: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let Some(name) = record["device"].as_str().map(String::from) else {
        return Err(format!("{}: no device named", path.display()));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("starting a netlink runtime: {e}"))?;
    rt.block_on(async {
        let (connection, h, _) =
            rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
        let driver = tokio::spawn(connection);
        let result = match link_by_name(&h, &name).await {
            Ok(Some(link)) if observe(&link).is_vxlan => h
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(|e| format!("deleting {name}: {e}")),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        driver.abort();
        result
    })?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{c, ip, node};
    use super::*;

    fn spec() -> DeviceSpec {
        DeviceSpec {
            name: "skiff0.vxlan".into(),
            local: ip("192.168.1.10"),
            underlying: 2,
            mtu: 1450,
            mac: vtep_mac(ip("192.168.1.10")),
        }
    }

    fn matching() -> ObservedDevice {
        ObservedDevice {
            index: 9,
            is_vxlan: true,
            vni: Some(VNI),
            local: Some(ip("192.168.1.10")),
            port: Some(PORT),
            learning: Some(false),
            underlying: Some(2),
            mtu: Some(1450),
            mac: Some(vtep_mac(ip("192.168.1.10"))),
            up: true,
        }
    }

    #[test]
    fn names_macs_and_mtu() {
        assert_eq!(device_name("skiff0"), "skiff0.vxlan");
        assert_eq!(device_name_problem("skt3"), None);
        assert_eq!(device_name_problem("skiff0"), None);
        assert_eq!(device_name_problem("abcdefghi"), None, "15 characters fit");
        let problem = device_name_problem("abcdefghij").unwrap();
        assert!(problem.contains("at most 9 characters"), "{problem}");
        let mac = vtep_mac(ip("10.250.3.11"));
        assert_eq!(mac.to_string(), "06:5f:0a:fa:03:0b");
        assert_eq!(mac.0[0] & 1, 0, "unicast");
        assert_eq!(mac.0[0] & 2, 2, "locally administered");
        assert_eq!("06:5F:0a:fa:03:0b".parse::<Mac>(), Ok(mac));
        assert!("06:5f:0a:fa:03".parse::<Mac>().is_err());
        assert!("06:5f:0a:fa:03:0bb".parse::<Mac>().is_err());
        assert_eq!(tunnel_mtu(1500), 1450);
        assert_eq!(tunnel_mtu(9000), 8950);
        assert_eq!(
            device_address(c("10.42.3.0/24")),
            (ip("10.42.3.0"), 32),
            "flannel's .0/32"
        );
    }

    #[test]
    fn the_device_is_made_kept_adjusted_or_remade() {
        let s = spec();
        assert_eq!(device_action(&s, None), DeviceAction::Create);
        assert_eq!(
            device_action(&s, Some(&matching())),
            DeviceAction::Adjust {
                index: 9,
                mtu: None,
                mac: None,
                up: false
            }
        );
        let drifted = ObservedDevice {
            mtu: Some(1500),
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            up: false,
            ..matching()
        };
        assert_eq!(
            device_action(&s, Some(&drifted)),
            DeviceAction::Adjust {
                index: 9,
                mtu: Some(1450),
                mac: Some(s.mac),
                up: true
            }
        );
        for (observed, why) in [
            (
                ObservedDevice {
                    local: Some(ip("192.168.1.99")),
                    ..matching()
                },
                "local address",
            ),
            (
                ObservedDevice {
                    vni: Some(42),
                    ..matching()
                },
                "VNI",
            ),
            (
                ObservedDevice {
                    learning: Some(true),
                    ..matching()
                },
                "learning",
            ),
            (
                ObservedDevice {
                    is_vxlan: false,
                    ..matching()
                },
                "not a VXLAN device",
            ),
        ] {
            match device_action(&s, Some(&observed)) {
                DeviceAction::Recreate { index: 9, reason } => {
                    assert!(reason.contains(why), "{reason} ({why})")
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn peers_with_a_mac_get_a_neighbour_an_fdb_entry_and_a_route() {
        let nodes = [
            node(
                "me",
                Some("10.42.0.0/24"),
                "192.168.1.10",
                Some("06:5f:c0:a8:01:0a"),
            ),
            node(
                "b",
                Some("10.42.1.0/24"),
                "192.168.1.11",
                Some("06:5f:c0:a8:01:0b"),
            ),
            node("not-yet", Some("10.42.2.0/24"), "192.168.1.12", None),
        ];
        let f = desired_forwarding(&peers(&nodes, "me", c("10.42.0.0/16")), 7);
        let mac_b = Mac([0x06, 0x5f, 0xc0, 0xa8, 1, 0x0b]);
        assert_eq!(f.neighbours, BTreeMap::from([(ip("10.42.1.0"), mac_b)]));
        assert_eq!(f.fdb, BTreeMap::from([(mac_b, ip("192.168.1.11"))]));
        assert_eq!(
            f.routes,
            BTreeMap::from([(
                c("10.42.1.0/24"),
                NodeRoute {
                    via: ip("10.42.1.0"),
                    device: Some(7)
                }
            )])
        );
    }

    #[test]
    fn stale_entries_go_changed_ones_are_replaced() {
        let m = |last| Mac([6, 0x5f, 0, 0, 0, last]);
        let desired = BTreeMap::from([(m(1), ip("192.168.1.11")), (m(2), ip("192.168.1.12"))]);
        let existing = BTreeMap::from([
            (m(1), ip("192.168.1.11")),
            (m(2), ip("192.168.1.99")),
            (m(3), ip("192.168.1.13")),
        ]);
        assert_eq!(
            diff(&desired, &existing),
            Diff {
                set: vec![(m(2), ip("192.168.1.12"))],
                remove: vec![m(3)],
            }
        );
    }

    #[test]
    fn the_annotation_is_patched_only_when_it_differs() {
        let mac = vtep_mac(ip("192.168.1.10"));
        let bare = node("me", Some("10.42.0.0/24"), "192.168.1.10", None);
        let published = node(
            "me",
            Some("10.42.0.0/24"),
            "192.168.1.10",
            Some("06:5f:c0:a8:01:0a"),
        );
        assert_eq!(
            annotation_patch(&bare, Some(mac)),
            Some(json!({"metadata": {"annotations": {MAC_ANNOTATION: "06:5f:c0:a8:01:0a"}}}))
        );
        assert_eq!(annotation_patch(&published, Some(mac)), None);
        assert_eq!(
            annotation_patch(&published, None),
            Some(json!({"metadata": {"annotations": {MAC_ANNOTATION: null}}}))
        );
        assert_eq!(annotation_patch(&bare, None), None);
    }
}
