//! IPv4 prefixes as the pod network uses them: parsed from flags and `spec.podCIDR`, the
//! gateway (first address), broadcast, and the addresses pods may get.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix with its host bits cleared (`10.42.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {text:?}: {why}")]
pub struct CidrError {
    pub text: String,
    pub why: &'static str,
}

impl Ipv4Cidr {
    /// The prefix containing `addr` with `prefix` bits (host bits are cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The first usable address, the pods' default gateway on the bridge (CNI host-local's
    /// default: `.1` of the range).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).wrapping_add(1))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether all of `other` lies inside this prefix.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// The addresses pods may get, in order: all but the network, gateway and broadcast
    /// addresses.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.gateway()).saturating_add(1);
        let last = u32::from(self.broadcast()).saturating_sub(1);
        let usable = self.prefix <= 30;
        (first..=last).filter(move |_| usable).map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Ipv4Cidr, CidrError> {
        let err = |why| CidrError {
            text: text.to_string(),
            why,
        };
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .ok_or(err("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        if prefix > 32 {
            return Err(err("prefix length above 32"));
        }
        Ipv4Cidr::new(addr, prefix).ok_or(err("bad prefix length"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_node_range() {
        let c: Ipv4Cidr = "10.42.3.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 42, 3, 255));
        let pods: Vec<_> = c.pod_addresses().collect();
        assert_eq!(pods.len(), 253);
        assert_eq!(pods[0], Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(pods[252], Ipv4Addr::new(10, 42, 3, 254));
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        assert!(cluster.covers(&c));
        assert!(!c.covers(&cluster));
        assert!(!cluster.contains(Ipv4Addr::new(10, 43, 0, 1)));
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in ["10.42.0.0", "10.42.0.0/33", "x/24", "10.42.0.0/y", "::1/64"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0.0/30"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .pod_addresses()
                .count(),
            1
        );
        assert_eq!(
            "10.0.0.0/31"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .pod_addresses()
                .count(),
            0
        );
    }
}
