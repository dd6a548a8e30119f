//! The simulated nodes' in-memory state: who they are, whether each is running or stopped,
//! the last lease and status post of each, and the pod addresses each has handed out.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;

use super::config::Ipv4Range;
use super::node::NodeIdentity;

/// Hands out pod addresses from a node's podCIDR: the network and broadcast addresses and
/// the first host address (the node's own bridge address upstream) are never given out.
#[derive(Debug)]
pub struct IpPool {
    range: Ipv4Range,
    by_pod: HashMap<String, Ipv4Addr>,
    used: HashSet<Ipv4Addr>,
    next: u64,
}

impl IpPool {
    pub fn new(range: Ipv4Range) -> IpPool {
        IpPool {
            range,
            by_pod: HashMap::new(),
            used: HashSet::new(),
            next: 2,
        }
    }

    /// The address of pod `uid`, allocating one if it has none; `None` when the range is
    /// exhausted.
    pub fn address_of(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_pod.get(uid) {
            return Some(*ip);
        }
        let usable = self.range.size().saturating_sub(3);
        for _ in 0..usable {
            let offset = self.next;
            self.next = if offset + 2 >= self.range.size() {
                2
            } else {
                offset + 1
            };
            let ip = self.range.nth(offset)?;
            if self.used.insert(ip) {
                self.by_pod.insert(uid.to_string(), ip);
                return Some(ip);
            }
        }
        None
    }

    /// Records an address a pod already has (from an earlier run of the simulator).
    pub fn adopt(&mut self, uid: &str, ip: Ipv4Addr) {
        if self.by_pod.contains_key(uid) || self.used.contains(&ip) {
            return;
        }
        if let Some(offset) = u32::from(ip).checked_sub(u32::from(self.range.base)) {
            if (offset as u64) < self.range.size() {
                self.used.insert(ip);
                self.by_pod.insert(uid.to_string(), ip);
            }
        }
    }

    pub fn release(&mut self, uid: &str) {
        if let Some(ip) = self.by_pod.remove(uid) {
            self.used.remove(&ip);
        }
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

/// One simulated node.
pub struct SimNode {
    pub id: NodeIdentity,
    running: AtomicBool,
    pub state: Mutex<NodeState>,
    pub ips: Mutex<IpPool>,
}

/// What the heartbeat remembers between renewals.
#[derive(Default)]
pub struct NodeState {
    pub uid: String,
    pub lease: Option<Lease>,
    pub last_status_post: Option<Instant>,
    /// A heartbeat of this node is in flight; the next one waits its turn, as a kubelet
    /// has at most one renewal of its lease going at a time.
    pub beating: bool,
}

impl SimNode {
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn lock_state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock_ips(&self) -> std::sync::MutexGuard<'_, IpPool> {
        self.ips.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every node of this process, by index and by name.
pub struct Fleet {
    nodes: Vec<SimNode>,
    by_name: HashMap<String, usize>,
}

impl Fleet {
    pub fn new(identities: Vec<NodeIdentity>) -> Fleet {
        let by_name = identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.name.clone(), i))
            .collect();
        let nodes = identities
            .into_iter()
            .map(|id| SimNode {
                ips: Mutex::new(IpPool::new(id.pod_cidr)),
                id,
                running: AtomicBool::new(true),
                state: Mutex::new(NodeState::default()),
            })
            .collect();
        Fleet { nodes, by_name }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, index: usize) -> &SimNode {
        &self.nodes[index]
    }

    pub fn by_name(&self, name: &str) -> Option<&SimNode> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &SimNode> {
        self.nodes.iter()
    }

    /// Stops or starts a node; returns whether it changed.
    pub fn set_running(&self, name: &str, running: bool) -> Option<bool> {
        let node = self.by_name(name)?;
        Some(node.running.swap(running, Ordering::AcqRel) != running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> IpPool {
        IpPool::new(Ipv4Range::parse(cidr, "test").unwrap())
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast_and_are_stable_per_pod() {
        let mut p = pool("10.42.3.0/30"); // .0 network, .1 gateway, .2 usable, .3 broadcast
        assert_eq!(p.address_of("a"), Some(Ipv4Addr::new(10, 42, 3, 2)));
        assert_eq!(p.address_of("a"), Some(Ipv4Addr::new(10, 42, 3, 2)));
        assert_eq!(p.address_of("b"), None);
        p.release("a");
        assert_eq!(p.address_of("b"), Some(Ipv4Addr::new(10, 42, 3, 2)));
    }

    #[test]
    fn adopted_addresses_are_not_handed_out_again() {
        let mut p = pool("10.42.0.0/24");
        p.adopt("old", Ipv4Addr::new(10, 42, 0, 2));
        p.adopt("stranger", Ipv4Addr::new(10, 99, 0, 2)); // outside the range: ignored
        assert_eq!(p.address_of("new"), Some(Ipv4Addr::new(10, 42, 0, 3)));
        assert_eq!(p.in_use(), 2);
        let mut seen = HashSet::new();
        for i in 0..251 {
            let ip = p.address_of(&format!("p{i}")).expect("address");
            assert!(seen.insert(ip));
        }
        assert_eq!(p.address_of("one-too-many"), None);
    }
}
