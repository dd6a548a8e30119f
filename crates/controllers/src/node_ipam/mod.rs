//! The node IPAM controller (upstream's range allocator, `--allocate-node-cidrs`): every
//! Node gets a `spec.podCIDR` (a /24 of the cluster CIDR by default) that its agent hands
//! pod addresses from. CIDRs already recorded on Nodes are honoured (a restarted control
//! plane rebuilds its table from them); a deleted Node's CIDR is freed. Allocation
//! continues after the last CIDR handed out, wrapping, as upstream's cidrset does, so a
//! just-freed range is not reused at once while stale routes to it may linger.
//!
//! One worker: allocations are decided one Node at a time against one table
//! ([`CidrTable`], pure and table-tested); the patch is the only side effect.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use serde_json::json;

use crate::Context;

/// An IPv4 range: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `A.B.C.D/N`; host bits are cleared.
    pub fn parse(s: &str) -> Option<Ipv4Cidr> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        (prefix <= 32).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// Which node CIDRs of the cluster CIDR are taken, and by which Node (name and uid).
#[derive(Debug)]
pub struct CidrTable {
    cluster: Ipv4Cidr,
    node_prefix: u8,
    /// Index of a node CIDR within the cluster CIDR → (node name, uid).
    taken: HashMap<u32, (String, String)>,
    /// Node name → index, for freeing.
    by_node: HashMap<String, u32>,
    /// Where the next search starts.
    next: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The Node has a CIDR and the table knows it.
    Nothing,
    /// Record this CIDR on the Node.
    Assign(Ipv4Cidr),
    /// Every node CIDR is taken (upstream's `CIDRNotAvailable`).
    Exhausted,
}

impl CidrTable {
    /// None when node CIDRs cannot be cut from `cluster` (a node prefix shorter than the
    /// cluster's).
    pub fn new(cluster: Ipv4Cidr, node_prefix: u8) -> Option<CidrTable> {
        (node_prefix >= cluster.prefix && node_prefix <= 30).then(|| CidrTable {
            cluster,
            node_prefix,
            taken: HashMap::new(),
            by_node: HashMap::new(),
            next: 0,
        })
    }

    fn size(&self) -> u64 {
        1u64 << (self.node_prefix - self.cluster.prefix)
    }

    fn cidr(&self, index: u32) -> Ipv4Cidr {
        let step = 1u64 << (32 - self.node_prefix);
        Ipv4Cidr {
            network: Ipv4Addr::from(
                (u32::from(self.cluster.network) as u64 + index as u64 * step) as u32,
            ),
            prefix: self.node_prefix,
        }
    }

    /// The index of `cidr` if it is one of this table's node CIDRs.
    fn index_of(&self, cidr: &Ipv4Cidr) -> Option<u32> {
        let base = u32::from(self.cluster.network);
        let at = u32::from(cidr.network);
        (cidr.prefix == self.node_prefix && at & mask(self.cluster.prefix) == base)
            .then(|| (at - base) >> (32 - self.node_prefix))
    }

    fn free_node(&mut self, name: &str) {
        if let Some(index) = self.by_node.remove(name) {
            self.taken.remove(&index);
        }
    }

    /// A Node is gone: its CIDR may be handed out again.
    pub fn forget(&mut self, name: &str) {
        self.free_node(name);
    }

    /// Decides for a Node as it is now (name, uid, its recorded podCIDR if any), and
    /// reserves what it decides: an `Assign` is held for this Node until it is forgotten.
    pub fn decide(&mut self, name: &str, uid: &str, recorded: Option<&str>) -> Decision {
        // A recreated Node (same name, new uid) is a new Node.
        if let Some(index) = self.by_node.get(name).copied() {
            if self.taken.get(&index).is_some_and(|(_, u)| u != uid) {
                self.free_node(name);
            }
        }
        if let Some(cidr) = recorded.and_then(Ipv4Cidr::parse) {
            match self.index_of(&cidr) {
                Some(index) => {
                    if self.by_node.get(name) != Some(&index) {
                        self.free_node(name);
                        // Two Nodes claiming one CIDR: the first one seen keeps it.
                        self.taken
                            .entry(index)
                            .or_insert_with(|| (name.to_string(), uid.to_string()));
                        if self.taken[&index].0 == name {
                            self.by_node.insert(name.to_string(), index);
                        }
                    }
                }
                // Outside the cluster CIDR (set by hand or another allocator): left alone.
                None => {}
            }
            return Decision::Nothing;
        }
        // Reserved earlier but the Node we read does not show it yet (a stale cache):
        // the same CIDR again, never a second one.
        if let Some(index) = self.by_node.get(name) {
            return Decision::Assign(self.cidr(*index));
        }
        let size = self.size();
        for step in 0..size {
            let index = ((self.next as u64 + step) % size) as u32;
            if !self.taken.contains_key(&index) {
                self.taken
                    .insert(index, (name.to_string(), uid.to_string()));
                self.by_node.insert(name.to_string(), index);
                self.next = ((index as u64 + 1) % size) as u32;
                return Decision::Assign(self.cidr(index));
            }
        }
        Decision::Exhausted
    }
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let Some(cluster) = ctx.options.cluster_cidr else {
        return futures::future::ready(()).boxed();
    };
    let Some(table) = CidrTable::new(cluster, ctx.options.node_cidr_mask_size) else {
        tracing::error!(
            "node IPAM: a /{} per node cannot be cut from the cluster CIDR {cluster}; nodes get no podCIDR",
            ctx.options.node_cidr_mask_size
        );
        return futures::future::ready(()).boxed();
    };
    let nodes = ctx.informers.informer::<Node>();
    let mut changes = nodes.subscribe();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let recorder = ctx.recorder("node-ipam-controller");
    async move {
        let table = Arc::new(Mutex::new(table));
        let queue: informers::WorkQueue<String> = informers::WorkQueue::new();
        let q = queue.clone();
        let inf = nodes.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                match change {
                    informers::Change::Applied(n) | informers::Change::Deleted(n) => {
                        q.add(n.metadata.name.clone().unwrap_or_default())
                    }
                    informers::Change::Resync => {
                        for n in inf.list() {
                            q.add(n.metadata.name.clone().unwrap_or_default());
                        }
                    }
                }
            }
        });
        nodes.wait_synced().await;
        // Recorded CIDRs first, so that no new Node is given one that an existing Node
        // holds but has not been synced yet.
        {
            let mut t = table.lock().expect("node IPAM table");
            for n in nodes.list() {
                if let Some(cidr) = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    let uid = n.metadata.uid.clone().unwrap_or_default();
                    t.decide(&name, &uid, Some(cidr));
                }
            }
        }
        queue
            .run(1, "node-ipam-controller", move |name: String| {
                let (api, nodes, table, recorder) =
                    (api.clone(), nodes.clone(), table.clone(), recorder.clone());
                async move {
                    let Some(node) = nodes.get("", &name) else {
                        table.lock().expect("node IPAM table").forget(&name);
                        return Ok::<_, kube::Error>(None);
                    };
                    if node.metadata.deletion_timestamp.is_some() {
                        return Ok(None);
                    }
                    let uid = node.metadata.uid.clone().unwrap_or_default();
                    let recorded = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                    let decision = table.lock().expect("node IPAM table").decide(
                        &name,
                        &uid,
                        recorded.as_deref(),
                    );
                    match decision {
                        Decision::Nothing => Ok(None),
                        Decision::Exhausted => {
                            let ev = Event {
                                type_: EventType::Normal,
                                reason: "CIDRNotAvailable".into(),
                                note: Some(format!("Node {name} status is now: CIDRNotAvailable")),
                                action: "CIDRAssignmentFailed".into(),
                                secondary: None,
                            };
                            recorder.record(ev, node.object_ref(&()));
                            Ok(Some(Duration::from_secs(30)))
                        }
                        Decision::Assign(cidr) => {
                            let patch = json!({
                                "metadata": {"uid": uid},
                                "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
                            });
                            match api
                                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                .await
                            {
                                Ok(_) => {
                                    tracing::info!("node IPAM: {name} gets podCIDR {cidr}");
                                    Ok(None)
                                }
                                // Gone or replaced meanwhile: the watch brings the news.
                                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {
                                    Ok(None)
                                }
                                Err(e) => Err(e),
                            }
                        }
                    }
                }
            })
            .await;
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CidrTable {
        CidrTable::new(Ipv4Cidr::parse("10.42.0.0/16").unwrap(), 24).unwrap()
    }

    fn cidr(s: &str) -> Decision {
        Decision::Assign(Ipv4Cidr::parse(s).unwrap())
    }

    #[test]
    fn nodes_get_consecutive_ranges_and_recorded_ones_are_honoured() {
        let mut t = table();
        assert_eq!(t.decide("a", "ua", Some("10.42.1.0/24")), Decision::Nothing);
        assert_eq!(t.decide("b", "ub", None), cidr("10.42.0.0/24"));
        assert_eq!(t.decide("c", "uc", None), cidr("10.42.2.0/24"));
        // The cache still shows b without a CIDR: the reserved one again.
        assert_eq!(t.decide("b", "ub", None), cidr("10.42.0.0/24"));
        assert_eq!(t.decide("b", "ub", Some("10.42.0.0/24")), Decision::Nothing);
    }

    #[test]
    fn freed_ranges_are_reused_only_after_the_others() {
        let mut t = table();
        assert_eq!(t.decide("a", "ua", None), cidr("10.42.0.0/24"));
        assert_eq!(t.decide("b", "ub", None), cidr("10.42.1.0/24"));
        t.forget("a");
        assert_eq!(t.decide("c", "uc", None), cidr("10.42.2.0/24"));
        // A Node recreated under b's name is a new Node.
        assert_eq!(t.decide("b", "ub2", None), cidr("10.42.3.0/24"));
    }

    #[test]
    fn exhaustion_and_foreign_ranges() {
        let mut t = CidrTable::new(Ipv4Cidr::parse("10.42.0.0/23").unwrap(), 24).unwrap();
        assert_eq!(
            t.decide("x", "ux", Some("192.168.5.0/24")),
            Decision::Nothing
        );
        assert_eq!(t.decide("a", "ua", None), cidr("10.42.0.0/24"));
        assert_eq!(t.decide("b", "ub", None), cidr("10.42.1.0/24"));
        assert_eq!(t.decide("c", "uc", None), Decision::Exhausted);
        t.forget("a");
        assert_eq!(t.decide("c", "uc", None), cidr("10.42.0.0/24"));
    }

    #[test]
    fn a_duplicate_claim_does_not_steal_the_range() {
        let mut t = table();
        t.decide("a", "ua", Some("10.42.0.0/24"));
        t.decide("b", "ub", Some("10.42.0.0/24"));
        t.forget("b");
        assert_eq!(t.decide("c", "uc", None), cidr("10.42.1.0/24"));
        assert!(CidrTable::new(Ipv4Cidr::parse("10.42.0.0/16").unwrap(), 8).is_none());
    }
}
