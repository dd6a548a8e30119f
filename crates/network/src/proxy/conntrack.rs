//! Stale UDP conntrack entries, as kube-proxy clears them (pkg/proxy/conntrack): a UDP
//! "connection" lives in conntrack for as long as the client keeps sending (120 s once
//! assured), and its NAT was decided by its first packet. A client that keeps its source
//! port (a resolver talking to the cluster DNS) therefore keeps reaching an endpoint that
//! is gone, or keeps missing a Service that had no endpoint when the flow began.
//!
//! - [`CleanupPlan`] is the desired state: for every UDP Service frontend (ClusterIP,
//!   external and LoadBalancer IPs, NodePort on the node's addresses) with serving
//!   endpoints, the endpoint IPs its flows may be translated to;
//! - [`stale`] picks, purely, the flows to a frontend whose reply source is none of those
//!   (a removed endpoint, or no translation at all);
//! - [`Conntrack`] is a small NETLINK_NETFILTER client (ctnetlink, IPv4) that lists and
//!   deletes flows in the caller's network namespace; no `conntrack` binary is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// IANA protocol numbers.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Zero for protocols without ports.
    pub src_port: u16,
    pub dst_port: u16,
}

/// A conntrack entry: what the first packet looked like and what replies look like (after
/// DNAT, the reply comes from the endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub original: Tuple,
    pub reply: Tuple,
    pub zone: u16,
}

/// Which UDP flows may stay: frontend → the serving endpoint IPs behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    /// (service IP, port) for ClusterIPs, external IPs and LoadBalancer ingress IPs.
    pub service_ips: BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>>,
    /// NodePort → serving endpoint IPs; it applies to flows to `node_ips`.
    pub node_ports: BTreeMap<u16, BTreeSet<Ipv4Addr>>,
    /// The addresses NodePorts answer on.
    pub node_ips: BTreeSet<Ipv4Addr>,
}

impl CleanupPlan {
    pub fn is_empty(&self) -> bool {
        self.service_ips.is_empty() && self.node_ports.is_empty()
    }
}

/// The UDP flows to a frontend of `plan` that are not translated to one of its serving
/// endpoints (upstream's `CleanStaleEntries`: original destination is the frontend, reply
/// source is not a serving endpoint IP).
pub fn stale<'a>(flows: &'a [Flow], plan: &CleanupPlan) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| f.original.protocol == IPPROTO_UDP)
        .filter(|f| {
            let o = &f.original;
            let not_serving = |serving: &BTreeSet<Ipv4Addr>| !serving.contains(&f.reply.src);
            plan.service_ips
                .get(&(o.dst, o.dst_port))
                .is_some_and(not_serving)
                || (plan.node_ips.contains(&o.dst)
                    && plan.node_ports.get(&o.dst_port).is_some_and(not_serving))
        })
        .collect()
}

// ctnetlink constants (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h).
const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NFNETLINK_V0: u8 = 0;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// A ctnetlink socket in the network namespace of the thread that opened it.
pub struct Conntrack {
    fd: OwnedFd,
    seq: u32,
}

impl Conntrack {
    pub fn open() -> io::Result<Conntrack> {
        // SAFETY: plain socket(2); the descriptor is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid; the kernel assigns the port id.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` lives across the call and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Conntrack { fd, seq: 1 })
    }

    /// Every IPv4 flow of the namespace.
    pub fn list(&mut self) -> io::Result<Vec<Flow>> {
        let seq = self.next_seq();
        let request = message(
            IPCTNL_MSG_CT_GET,
            (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            seq,
            &[],
        );
        self.send(&request)?;
        let mut flows = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, payload) in messages(&buf[..n]) {
                match kind {
                    k if k == libc::NLMSG_DONE as u16 => return Ok(flows),
                    k if k == libc::NLMSG_ERROR as u16 => {
                        let code = error_code(payload);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                        if let Some(flow) = payload.get(NFGENMSG_LEN..).and_then(parse_flow) {
                            flows.push(flow);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes one flow by its original tuple. A flow already gone is not an error.
    pub fn delete(&mut self, flow: &Flow) -> io::Result<()> {
        let mut attrs = Vec::new();
        let mut orig = Vec::new();
        put_tuple(&mut orig, &flow.original);
        put_attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &orig);
        if flow.zone != 0 {
            put_attr(&mut attrs, CTA_ZONE, &flow.zone.to_be_bytes());
        }
        let seq = self.next_seq();
        let request = message(
            IPCTNL_MSG_CT_DELETE,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            seq,
            &attrs,
        );
        self.send(&request)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, payload) in messages(&buf[..n]) {
                if kind == libc::NLMSG_ERROR as u16 {
                    return match error_code(payload) {
                        0 => Ok(()),
                        code if -code == libc::ENOENT => Ok(()),
                        code => Err(io::Error::from_raw_os_error(-code)),
                    };
                }
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, request: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for its length; the socket is bound (kernel peer).
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                request.as_ptr() as *const libc::c_void,
                request.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is valid and writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Lists the namespace's flows and deletes those [`stale`] picks; returns how many were
/// deleted. Blocking (netlink round trips): run it off the async threads.
pub fn clean(plan: &CleanupPlan) -> io::Result<usize> {
    if plan.is_empty() {
        return Ok(0);
    }
    let mut ct = Conntrack::open()?;
    let flows = ct.list()?;
    let mut deleted = 0;
    for flow in stale(&flows, plan) {
        ct.delete(flow)?;
        deleted += 1;
    }
    Ok(deleted)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// nlmsghdr + nfgenmsg (IPv4, version 0, resource id 0) + `attrs`.
fn message(command: u16, flags: u16, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | command).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_INET as u8, NFNETLINK_V0, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + align4(len) - len, 0);
}

fn put_tuple(out: &mut Vec<u8>, t: &Tuple) {
    let mut ip = Vec::new();
    put_attr(&mut ip, CTA_IP_V4_SRC, &t.src.octets());
    put_attr(&mut ip, CTA_IP_V4_DST, &t.dst.octets());
    put_attr(out, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    let mut proto = Vec::new();
    put_attr(&mut proto, CTA_PROTO_NUM, &[t.protocol]);
    put_attr(&mut proto, CTA_PROTO_SRC_PORT, &t.src_port.to_be_bytes());
    put_attr(&mut proto, CTA_PROTO_DST_PORT, &t.dst_port.to_be_bytes());
    put_attr(out, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
}

/// The (type, payload) of each netlink message in a datagram; stops at a malformed one.
fn messages(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        out.push((kind, &data[NLMSG_HDRLEN..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

/// The (negative errno) code of an NLMSG_ERROR payload.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EIO)
}

/// The (type without flags, value) of each attribute.
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

fn parse_flow(attrs: &[u8]) -> Option<Flow> {
    let mut original = None;
    let mut reply = None;
    let mut zone = 0;
    for (kind, value) in attributes(attrs) {
        match kind {
            CTA_TUPLE_ORIG => original = parse_tuple(value),
            CTA_TUPLE_REPLY => reply = parse_tuple(value),
            CTA_ZONE if value.len() >= 2 => zone = u16::from_be_bytes([value[0], value[1]]),
            _ => {}
        }
    }
    Some(Flow {
        original: original?,
        reply: reply?,
        zone,
    })
}

fn parse_tuple(data: &[u8]) -> Option<Tuple> {
    let mut src = None;
    let mut dst = None;
    let mut protocol = None;
    let (mut src_port, mut dst_port) = (0, 0);
    let v4 = |v: &[u8]| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?)) };
    let port = |v: &[u8]| -> u16 { v.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])) };
    for (kind, value) in attributes(data) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in attributes(value) {
                    match k {
                        CTA_IP_V4_SRC => src = v4(v),
                        CTA_IP_V4_DST => dst = v4(v),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attributes(value) {
                    match k {
                        CTA_PROTO_NUM => protocol = v.first().copied(),
                        CTA_PROTO_SRC_PORT => src_port = port(v),
                        CTA_PROTO_DST_PORT => dst_port = port(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        protocol: protocol?,
        src_port,
        dst_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn flow(
        proto: u8,
        client: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        reply_src: &str,
        rport: u16,
    ) -> Flow {
        Flow {
            original: Tuple {
                src: ip(client),
                dst: ip(dst),
                protocol: proto,
                src_port: sport,
                dst_port: dport,
            },
            reply: Tuple {
                src: ip(reply_src),
                dst: ip(client),
                protocol: proto,
                src_port: rport,
                dst_port: sport,
            },
            zone: 0,
        }
    }

    #[test]
    fn only_udp_flows_to_a_frontend_not_translated_to_a_serving_endpoint_are_stale() {
        let mut plan = CleanupPlan::default();
        plan.service_ips
            .insert((ip("10.43.0.10"), 53), [ip("10.42.0.7")].into());
        plan.node_ports.insert(30053, [ip("10.42.0.7")].into());
        plan.node_ips.insert(ip("192.0.2.2"));
        let flows = vec![
            // to the live endpoint: kept
            flow(
                IPPROTO_UDP,
                "10.42.0.3",
                40000,
                "10.43.0.10",
                53,
                "10.42.0.7",
                53,
            ),
            // to the removed endpoint: stale
            flow(
                IPPROTO_UDP,
                "10.42.0.3",
                40001,
                "10.43.0.10",
                53,
                "10.42.0.5",
                53,
            ),
            // never translated (no endpoint then): stale
            flow(
                IPPROTO_UDP,
                "10.42.0.3",
                40002,
                "10.43.0.10",
                53,
                "10.43.0.10",
                53,
            ),
            // TCP: conntrack of TCP ends with the connection, kept
            flow(
                IPPROTO_TCP,
                "10.42.0.3",
                40003,
                "10.43.0.10",
                53,
                "10.42.0.5",
                53,
            ),
            // another port of the same IP, not in the plan: kept
            flow(
                IPPROTO_UDP,
                "10.42.0.3",
                40004,
                "10.43.0.10",
                54,
                "10.42.0.5",
                54,
            ),
            // NodePort on the node's address to a removed endpoint: stale
            flow(
                IPPROTO_UDP,
                "192.0.2.9",
                40005,
                "192.0.2.2",
                30053,
                "10.42.0.5",
                53,
            ),
            // NodePort on the node's address to the live endpoint: kept
            flow(
                IPPROTO_UDP,
                "192.0.2.9",
                40006,
                "192.0.2.2",
                30053,
                "10.42.0.7",
                53,
            ),
            // the same port number to another address (not a NodePort): kept
            flow(
                IPPROTO_UDP,
                "10.42.0.3",
                40007,
                "10.42.0.9",
                30053,
                "10.42.0.9",
                30053,
            ),
        ];
        let picked: Vec<u16> = stale(&flows, &plan)
            .iter()
            .map(|f| f.original.src_port)
            .collect();
        assert_eq!(picked, [40001, 40002, 40005]);
        assert!(stale(&flows, &CleanupPlan::default()).is_empty());
    }

    #[test]
    fn tuples_encode_and_parse_back() {
        let f = flow(
            IPPROTO_UDP,
            "10.42.0.3",
            40001,
            "10.43.0.10",
            53,
            "10.42.0.5",
            5353,
        );
        let mut attrs = Vec::new();
        for (kind, t) in [(CTA_TUPLE_ORIG, &f.original), (CTA_TUPLE_REPLY, &f.reply)] {
            let mut nested = Vec::new();
            put_tuple(&mut nested, t);
            put_attr(&mut attrs, kind | NLA_F_NESTED, &nested);
        }
        assert_eq!(parse_flow(&attrs), Some(f));
        let m = message(IPCTNL_MSG_CT_DELETE, 5, 7, &attrs);
        let parsed = messages(&m);
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed[0].0,
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        );
        assert_eq!(parse_flow(&parsed[0].1[NFGENMSG_LEN..]), Some(f));
        // Truncated input never panics.
        for cut in 0..attrs.len() {
            let _ = parse_flow(&attrs[..cut]);
            let _ = messages(&m[..cut]);
        }
    }
}
