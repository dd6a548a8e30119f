//! The nftables side of the decision, pure: the table's fixed skeleton, a [`Fragment`]
//! (the map elements, and for session affinity the chains and sets, one Service owns) and
//! the diff of two fragments as `nft -f` commands. Updates touch only what changed: map
//! elements deleted or added, new chains added, changed chains flushed and refilled,
//! removed chains flushed and deleted; the table is never flushed except by an explicit
//! full rebuild (one atomic batch).
//!
//! Why elements rather than chains: every `nft -f` first loads nft's cache of all chains
//! in the kernel (for any rule or element command), so the cost of even a one-line update
//! grows with the number of chains. Services without affinity therefore own no chain at
//! all: they share the `pick-<n>` chains, which DNAT through the endpoint maps keyed by
//! frontend and `numgen random mod n`. Shared chains are made only by a full rebuild (for 1
//! to 16 endpoints always, beyond that as Services need them; nft 1.0.6 cannot add a rule
//! reading an endpoint map it loaded back from the kernel) and kept until the next one;
//! shared set elements (hairpin pairs) are reference-counted across fragments ([`Shared`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Map: `clusterIP . protocol . port` (and external/LoadBalancer IPs) to the Service's chain.
pub const MAP_SERVICE_IPS: &str = "service-ips";
/// Map: `protocol . nodePort` to the Service's external chain (on the node's addresses).
pub const MAP_SERVICE_NODEPORTS: &str = "service-nodeports";
/// Set: every allocated `protocol . nodePort`; those not DNATed (no endpoints) are rejected.
pub const SET_NODEPORTS: &str = "nodeports";
/// Set: the node addresses NodePorts answer on.
pub const SET_NODEPORT_IPS: &str = "nodeport-ips";
/// Map: `frontend address . protocol . port . index` to an endpoint `address . port`, read
/// by the `pick-<n>` chains with the index drawn by `numgen random mod n`.
pub const MAP_SERVICE_ENDPOINTS: &str = "service-endpoints";
/// Map: `protocol . nodePort . index` to an endpoint, read by the `nodeport-pick-<n>` chains.
pub const MAP_NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
/// Set: `endpoint . endpoint` for every endpoint in use; a DNATed connection from an
/// endpoint to itself (hairpin) is masqueraded.
pub const SET_HAIRPIN: &str = "hairpin-endpoints";
/// The chain that marks a connection for masquerading in postrouting.
pub const CHAIN_MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// The packet mark bit meaning "masquerade me" (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// One kind of named collection a fragment adds elements to.
pub type Collection = &'static str;

/// What one Service owns in the table. Chain and set names are unique to the Service (they
/// embed its namespace and name), so fragments never collide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Chain name → its rules, in order (session affinity only).
    pub chains: BTreeMap<String, Vec<String>>,
    /// Dynamic sets (session affinity): name → definition body (`type ...; flags ...;`).
    pub sets: BTreeMap<String, String>,
    /// (map or set, key) → what follows the key in `add element`: an optional
    /// `comment "..."` and `: <value>` for maps; empty for plain set elements.
    pub elements: BTreeMap<(Collection, String), String>,
    /// Shared chains this fragment jumps to (`pick-<n>`): name → rules.
    pub shared_chains: BTreeMap<String, Vec<String>>,
    /// Set elements other fragments may hold too (hairpin pairs), reference-counted.
    pub shared_elements: BTreeSet<(Collection, String)>,
}

impl Fragment {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
            && self.sets.is_empty()
            && self.elements.is_empty()
            && self.shared_chains.is_empty()
            && self.shared_elements.is_empty()
    }
}

/// What the programmed table holds on behalf of several fragments: the shared chains made
/// so far and how many fragments hold each shared element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shared {
    pub chains: BTreeSet<String>,
    pub element_refs: BTreeMap<(Collection, String), usize>,
}

/// The fixed part of the table: its maps and sets, the hook chains and their dispatch rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// `<bridge>-services`.
    pub table: String,
    /// The service CIDR: addresses in it that were not DNATed are rejected.
    pub service_cidr: (Ipv4Addr, u8),
    /// Addresses NodePorts answer on.
    pub node_ips: Vec<Ipv4Addr>,
    /// `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded, so that
    /// replies from an endpoint on another node come back through this one.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

impl Skeleton {
    /// Commands that delete any previous table of this name and create the skeleton, for the
    /// start of a full rebuild (in the same batch as every fragment: one atomic swap).
    pub fn rebuild_commands(&self) -> String {
        let t = &self.table;
        let (net, len) = self.service_cidr;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        // `add` first so that `delete` never fails on a missing table.
        line(format!("add table ip {t}"));
        line(format!("delete table ip {t}"));
        line(format!("add table ip {t}"));
        line(format!(
            "add map ip {t} {MAP_SERVICE_IPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}"
        ));
        line(format!(
            "add map ip {t} {MAP_SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict; }}"
        ));
        line(format!(
            "add set ip {t} {SET_NODEPORTS} {{ type inet_proto . inet_service; }}"
        ));
        line(format!(
            "add set ip {t} {SET_NODEPORT_IPS} {{ type ipv4_addr; }}"
        ));
        line(format!(
            "add map ip {t} {MAP_SERVICE_ENDPOINTS} {{ typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }}"
        ));
        line(format!(
            "add map ip {t} {MAP_NODEPORT_ENDPOINTS} {{ typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . th dport; }}"
        ));
        line(format!(
            "add set ip {t} {SET_HAIRPIN} {{ type ipv4_addr . ipv4_addr; }}"
        ));
        if !self.node_ips.is_empty() {
            let ips: Vec<String> = self.node_ips.iter().map(|ip| ip.to_string()).collect();
            line(format!(
                "add element ip {t} {SET_NODEPORT_IPS} {{ {} }}",
                ips.join(", ")
            ));
        }
        // Refusing as kube-proxy does: a TCP reset, else ICMP port unreachable.
        line(format!("add chain ip {t} reject-chain"));
        line(format!(
            "add rule ip {t} reject-chain meta l4proto tcp reject with tcp reset"
        ));
        line(format!("add rule ip {t} reject-chain reject"));
        line(format!("add chain ip {t} {CHAIN_MARK_FOR_MASQUERADE}"));
        line(format!(
            "add rule ip {t} {CHAIN_MARK_FOR_MASQUERADE} meta mark set meta mark | {MASQUERADE_MARK:#x}"
        ));
        line(format!("add chain ip {t} masquerading"));
        line(format!(
            "add rule ip {t} masquerading ct status dnat ip saddr . ip daddr @{SET_HAIRPIN} jump {CHAIN_MARK_FOR_MASQUERADE}"
        ));
        line(format!(
            "add rule ip {t} masquerading meta mark & {MASQUERADE_MARK:#x} == 0 return"
        ));
        line(format!(
            "add rule ip {t} masquerading meta mark set meta mark ^ {MASQUERADE_MARK:#x}"
        ));
        line(format!(
            "add rule ip {t} masquerading masquerade fully-random"
        ));
        line(format!("add chain ip {t} services"));
        if let Some((cluster, cluster_len)) = self.cluster_cidr {
            line(format!(
                "add rule ip {t} services ip daddr {net}/{len} ip saddr != {cluster}/{cluster_len} jump {CHAIN_MARK_FOR_MASQUERADE}"
            ));
        }
        line(format!(
            "add rule ip {t} services ip daddr . meta l4proto . th dport vmap @{MAP_SERVICE_IPS}"
        ));
        line(format!(
            "add rule ip {t} services ip daddr @{SET_NODEPORT_IPS} meta l4proto . th dport vmap @{MAP_SERVICE_NODEPORTS}"
        ));
        // Hooks. DNAT at priority -100 (nft 1.0.6 needs it for output), so the filter
        // chains at 0 see a ClusterIP only when it was not translated: no endpoints, a port
        // the Service does not have, or an address nobody holds.
        for (chain, kind, hook, priority, rule) in [
            (
                "nat-prerouting",
                "nat",
                "prerouting",
                "-100",
                "jump services",
            ),
            ("nat-output", "nat", "output", "-100", "jump services"),
            (
                "nat-postrouting",
                "nat",
                "postrouting",
                "100",
                "jump masquerading",
            ),
        ] {
            line(format!(
                "add chain ip {t} {chain} {{ type {kind} hook {hook} priority {priority}; policy accept; }}"
            ));
            line(format!("add rule ip {t} {chain} {rule}"));
        }
        for hook in ["forward", "output"] {
            line(format!(
                "add chain ip {t} filter-{hook} {{ type filter hook {hook} priority 0; policy accept; }}"
            ));
            line(format!(
                "add rule ip {t} filter-{hook} ip daddr {net}/{len} jump reject-chain"
            ));
        }
        line(format!(
            "add chain ip {t} filter-input {{ type filter hook input priority 0; policy accept; }}"
        ));
        line(format!(
            "add rule ip {t} filter-input ip daddr @{SET_NODEPORT_IPS} meta l4proto . th dport @{SET_NODEPORTS} jump reject-chain"
        ));
        out
    }
}

/// A batch under construction, in the order nft needs: things are created before they are
/// referenced and unreferenced before they are deleted.
#[derive(Debug, Default)]
pub struct Batch {
    create: String,
    fill: String,
    remove_elements: String,
    add_elements: String,
    flush_removed: String,
    delete_removed: String,
    /// Shared chains some new fragment needs (made unless the table has them).
    shared_chains: BTreeMap<String, Vec<String>>,
    /// How many more (or fewer) fragments hold each shared element.
    shared_delta: BTreeMap<(Collection, String), isize>,
    /// How many fragments changed.
    pub changed: usize,
}

impl Batch {
    /// Whether applying the batch to a table holding `shared` would change nothing.
    pub fn is_empty(&self, shared: &Shared) -> bool {
        self.create.is_empty()
            && self.fill.is_empty()
            && self.remove_elements.is_empty()
            && self.add_elements.is_empty()
            && self.flush_removed.is_empty()
            && self.delete_removed.is_empty()
            && self.shared_text("", shared).iter().all(|s| s.is_empty())
    }

    /// Adds the commands that turn `old` into `new` (both owned by one Service).
    pub fn diff(&mut self, table: &str, old: &Fragment, new: &Fragment) {
        if old == new {
            return;
        }
        self.changed += 1;
        let t = table;
        for (name, body) in &new.sets {
            if !old.sets.contains_key(name) {
                let _ = writeln!(self.create, "add set ip {t} {name} {{ {body} }}");
            }
        }
        for (name, rules) in &new.chains {
            match old.chains.get(name) {
                None => {
                    let _ = writeln!(self.create, "add chain ip {t} {name}");
                }
                Some(old_rules) if old_rules == rules => continue,
                Some(_) => {
                    let _ = writeln!(self.fill, "flush chain ip {t} {name}");
                }
            }
            for rule in rules {
                let _ = writeln!(self.fill, "add rule ip {t} {name} {rule}");
            }
        }
        for (name, rules) in &new.shared_chains {
            self.shared_chains
                .entry(name.clone())
                .or_insert_with(|| rules.clone());
        }
        for ((collection, key), value) in &old.elements {
            if new.elements.get(&(*collection, key.clone())) != Some(value) {
                let _ = writeln!(
                    self.remove_elements,
                    "delete element ip {t} {collection} {{ {key} }}"
                );
            }
        }
        for ((collection, key), value) in &new.elements {
            if old.elements.get(&(*collection, key.clone())) != Some(value) {
                let _ = writeln!(
                    self.add_elements,
                    "add element ip {t} {collection} {{ {} }}",
                    element(key, value)
                );
            }
        }
        for e in old.shared_elements.difference(&new.shared_elements) {
            *self.shared_delta.entry(e.clone()).or_default() -= 1;
        }
        for e in new.shared_elements.difference(&old.shared_elements) {
            *self.shared_delta.entry(e.clone()).or_default() += 1;
        }
        for name in old.chains.keys() {
            if !new.chains.contains_key(name) {
                let _ = writeln!(self.flush_removed, "flush chain ip {t} {name}");
                let _ = writeln!(self.delete_removed, "delete chain ip {t} {name}");
            }
        }
        for name in old.sets.keys() {
            if !new.sets.contains_key(name) {
                let _ = writeln!(self.delete_removed, "delete set ip {t} {name}");
            }
        }
    }

    /// The shared chains the batch would make in a table holding `shared`.
    pub fn new_shared_chains<'a>(&'a self, shared: &'a Shared) -> impl Iterator<Item = &'a str> {
        self.shared_chains
            .keys()
            .filter(|name| !shared.chains.contains(*name))
            .map(|name| name.as_str())
    }

    /// The commands for shared objects, given what the table holds: shared chains to
    /// make (before anything refers to them), shared elements to delete and to add.
    fn shared_text(&self, t: &str, shared: &Shared) -> [String; 3] {
        let mut make = String::new();
        let mut remove = String::new();
        let mut add = String::new();
        for (name, rules) in &self.shared_chains {
            if shared.chains.contains(name) {
                continue;
            }
            let _ = writeln!(make, "add chain ip {t} {name}");
            for rule in rules {
                let _ = writeln!(make, "add rule ip {t} {name} {rule}");
            }
        }
        for ((collection, key), delta) in &self.shared_delta {
            let before = shared
                .element_refs
                .get(&(*collection, key.clone()))
                .copied()
                .unwrap_or(0);
            let after = before.saturating_add_signed(*delta);
            if before > 0 && after == 0 {
                let _ = writeln!(remove, "delete element ip {t} {collection} {{ {key} }}");
            } else if before == 0 && after > 0 {
                let _ = writeln!(add, "add element ip {t} {collection} {{ {key} }}");
            }
        }
        [make, remove, add]
    }

    /// The batch as `nft -f` input for `table`, which holds `shared` before it.
    pub fn text(&self, table: &str, shared: &Shared) -> String {
        let [make, remove, add] = self.shared_text(table, shared);
        [
            make.as_str(),
            &self.create,
            &self.fill,
            &self.remove_elements,
            &remove,
            &self.add_elements,
            &add,
            &self.flush_removed,
            &self.delete_removed,
        ]
        .concat()
    }

    /// What the table holds on behalf of several fragments once the batch is applied.
    pub fn apply_to(&self, shared: &mut Shared) {
        shared.chains.extend(self.shared_chains.keys().cloned());
        for (e, delta) in &self.shared_delta {
            let count = shared.element_refs.entry(e.clone()).or_default();
            *count = count.saturating_add_signed(*delta);
            if *count == 0 {
                shared.element_refs.remove(e);
            }
        }
    }
}

fn element(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(chains: &[(&str, &[&str])], elements: &[(Collection, &str, &str)]) -> Fragment {
        Fragment {
            chains: chains
                .iter()
                .map(|(n, r)| (n.to_string(), r.iter().map(|s| s.to_string()).collect()))
                .collect(),
            elements: elements
                .iter()
                .map(|(c, k, v)| ((*c, k.to_string()), v.to_string()))
                .collect(),
            ..Fragment::default()
        }
    }

    #[test]
    fn diffs_touch_only_what_changed() {
        let empty = Fragment::default();
        let one = fragment(
            &[("svc", &["goto ep1"]), ("ep1", &["dnat to 10.0.0.1:80"])],
            &[(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80", ": goto svc")],
        );
        let two = fragment(
            &[
                (
                    "svc",
                    &["numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }"],
                ),
                ("ep1", &["dnat to 10.0.0.1:80"]),
                ("ep2", &["dnat to 10.0.0.2:80"]),
            ],
            &[(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80", ": goto svc")],
        );
        let moved = fragment(
            &[("svc", &["goto ep2"]), ("ep2", &["dnat to 10.0.0.2:80"])],
            &[(MAP_SERVICE_IPS, "10.43.0.6 . tcp . 80", ": goto svc")],
        );
        let cases: Vec<(&str, &Fragment, &Fragment, &str)> = vec![
            ("nothing changed", &one, &one, ""),
            (
                "created",
                &empty,
                &one,
                "add chain ip t ep1\nadd chain ip t svc\n\
                 add rule ip t ep1 dnat to 10.0.0.1:80\nadd rule ip t svc goto ep1\n\
                 add element ip t service-ips { 10.43.0.5 . tcp . 80 : goto svc }\n",
            ),
            (
                "an endpoint added: one chain added, one refilled, the map untouched",
                &one,
                &two,
                "add chain ip t ep2\nadd rule ip t ep2 dnat to 10.0.0.2:80\n\
                 flush chain ip t svc\n\
                 add rule ip t svc numgen random mod 2 vmap { 0 : goto ep1, 1 : goto ep2 }\n",
            ),
            (
                "endpoint and address replaced",
                &one,
                &moved,
                "add chain ip t ep2\nadd rule ip t ep2 dnat to 10.0.0.2:80\n\
                 flush chain ip t svc\nadd rule ip t svc goto ep2\n\
                 delete element ip t service-ips { 10.43.0.5 . tcp . 80 }\n\
                 add element ip t service-ips { 10.43.0.6 . tcp . 80 : goto svc }\n\
                 flush chain ip t ep1\ndelete chain ip t ep1\n",
            ),
            (
                "deleted",
                &one,
                &empty,
                "delete element ip t service-ips { 10.43.0.5 . tcp . 80 }\n\
                 flush chain ip t ep1\nflush chain ip t svc\n\
                 delete chain ip t ep1\ndelete chain ip t svc\n",
            ),
        ];
        for (what, old, new, want) in cases {
            let mut batch = Batch::default();
            batch.diff("t", old, new);
            assert_eq!(batch.text("t", &Shared::default()), want, "{what}");
            assert_eq!(
                batch.is_empty(&Shared::default()),
                want.is_empty(),
                "{what}"
            );
        }
    }

    #[test]
    fn a_changed_element_value_is_deleted_then_added() {
        let a = fragment(&[], &[(MAP_SERVICE_NODEPORTS, "tcp . 30080", ": goto x")]);
        let b = fragment(&[], &[(MAP_SERVICE_NODEPORTS, "tcp . 30080", ": goto y")]);
        let mut batch = Batch::default();
        batch.diff("t", &a, &b);
        assert_eq!(
            batch.text("t", &Shared::default()),
            "delete element ip t service-nodeports { tcp . 30080 }\n\
             add element ip t service-nodeports { tcp . 30080 : goto y }\n"
        );
    }

    /// Shared chains are made once; a shared element is added by its first holder and
    /// deleted with its last.
    #[test]
    fn shared_chains_and_elements() {
        let holder = |chain: &str, pair: &str| Fragment {
            shared_chains: [(chain.to_string(), vec!["dnat ip to x".to_string()])].into(),
            shared_elements: [(SET_HAIRPIN, pair.to_string())].into(),
            ..Fragment::default()
        };
        let a = holder("pick-1", "10.0.0.1 . 10.0.0.1");
        let b = holder("pick-1", "10.0.0.1 . 10.0.0.1");
        let empty = Fragment::default();
        let mut shared = Shared::default();

        let mut batch = Batch::default();
        batch.diff("t", &empty, &a);
        batch.diff("t", &empty, &b);
        assert_eq!(
            batch.text("t", &shared),
            "add chain ip t pick-1\nadd rule ip t pick-1 dnat ip to x\n\
             add element ip t hairpin-endpoints { 10.0.0.1 . 10.0.0.1 }\n"
        );
        batch.apply_to(&mut shared);

        let mut batch = Batch::default();
        batch.diff("t", &a, &empty);
        assert_eq!(batch.text("t", &shared), "", "b still holds the pair");
        assert!(batch.is_empty(&shared));
        batch.apply_to(&mut shared);

        let mut batch = Batch::default();
        batch.diff("t", &b, &empty);
        assert_eq!(
            batch.text("t", &shared),
            "delete element ip t hairpin-endpoints { 10.0.0.1 . 10.0.0.1 }\n"
        );
        batch.apply_to(&mut shared);
        assert!(shared.element_refs.is_empty());
        assert_eq!(
            shared.chains,
            ["pick-1".to_string()].into(),
            "kept until a rebuild"
        );
    }

    #[test]
    fn the_skeleton_rebuilds_in_one_batch() {
        let s = Skeleton {
            table: "skiff0-services".into(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            node_ips: vec![Ipv4Addr::new(192, 0, 2, 2)],
            cluster_cidr: Some((Ipv4Addr::new(10, 42, 0, 0), 16)),
        };
        let text = s.rebuild_commands();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[..3],
            &[
                "add table ip skiff0-services",
                "delete table ip skiff0-services",
                "add table ip skiff0-services"
            ]
        );
        assert!(text.contains(
            "add chain ip skiff0-services nat-output { type nat hook output priority -100; policy accept; }"
        ));
        assert!(text.contains("filter-output ip daddr 10.43.0.0/16 jump reject-chain"));
        assert!(text.contains("add element ip skiff0-services nodeport-ips { 192.0.2.2 }"));
        assert!(text.contains(
            "services ip daddr 10.43.0.0/16 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
        ));
        assert!(text.contains(
            "masquerading ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade"
        ));
    }
}
