//! The nftables side of the decision, pure: the table's fixed skeleton, a [`Fragment`]
//! (the chains, sets and map elements one Service owns) and the diff of two fragments as
//! `nft -f` commands. Updates touch only what changed: new chains are added, changed chains
//! flushed and refilled, removed chains flushed and deleted, map elements deleted or added;
//! the table is never flushed except by an explicit full rebuild (one atomic batch).

use std::collections::BTreeMap;
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
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Dynamic sets (session affinity): name → definition body (`type ...; flags ...;`).
    pub sets: BTreeMap<String, String>,
    /// (map or set, key) → value (`goto <chain>`); empty for plain set elements.
    pub elements: BTreeMap<(Collection, String), String>,
}

impl Fragment {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }
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
            "add rule ip {t} masquerading meta mark & {MASQUERADE_MARK:#x} == 0 return"
        ));
        line(format!(
            "add rule ip {t} masquerading meta mark set meta mark ^ {MASQUERADE_MARK:#x}"
        ));
        line(format!(
            "add rule ip {t} masquerading masquerade fully-random"
        ));
        line(format!("add chain ip {t} services"));
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
    /// How many fragments changed.
    pub changed: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.fill.is_empty()
            && self.remove_elements.is_empty()
            && self.add_elements.is_empty()
            && self.flush_removed.is_empty()
            && self.delete_removed.is_empty()
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

    /// The batch as `nft -f` input.
    pub fn text(&self) -> String {
        [
            &self.create,
            &self.fill,
            &self.remove_elements,
            &self.add_elements,
            &self.flush_removed,
            &self.delete_removed,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect()
    }
}

fn element(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} : {value}")
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
            sets: BTreeMap::new(),
            elements: elements
                .iter()
                .map(|(c, k, v)| ((*c, k.to_string()), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn diffs_touch_only_what_changed() {
        let empty = Fragment::default();
        let one = fragment(
            &[("svc", &["goto ep1"]), ("ep1", &["dnat to 10.0.0.1:80"])],
            &[(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80", "goto svc")],
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
            &[(MAP_SERVICE_IPS, "10.43.0.5 . tcp . 80", "goto svc")],
        );
        let moved = fragment(
            &[("svc", &["goto ep2"]), ("ep2", &["dnat to 10.0.0.2:80"])],
            &[(MAP_SERVICE_IPS, "10.43.0.6 . tcp . 80", "goto svc")],
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
            assert_eq!(batch.text(), want, "{what}");
            assert_eq!(batch.is_empty(), want.is_empty(), "{what}");
        }
    }

    #[test]
    fn a_changed_element_value_is_deleted_then_added() {
        let a = fragment(&[], &[(MAP_SERVICE_NODEPORTS, "tcp . 30080", "goto x")]);
        let b = fragment(&[], &[(MAP_SERVICE_NODEPORTS, "tcp . 30080", "goto y")]);
        let mut batch = Batch::default();
        batch.diff("t", &a, &b);
        assert_eq!(
            batch.text(),
            "delete element ip t service-nodeports { tcp . 30080 }\n\
             add element ip t service-nodeports { tcp . 30080 : goto y }\n"
        );
    }

    #[test]
    fn the_skeleton_rebuilds_in_one_batch() {
        let s = Skeleton {
            table: "skiff0-services".into(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            node_ips: vec![Ipv4Addr::new(192, 0, 2, 2)],
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
    }
}
