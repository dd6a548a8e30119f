//! The nftables side of the decision, pure: the table's skeleton, the [`Ruleset`] a
//! [`Desired`] becomes, and the diff of two rulesets as `nft -f` commands.
//!
//! Layout of `ip <bridge>-policy` (IPv4, like the pod network's and the proxy's tables):
//!
//! - base chains `ingress` and `egress`, both `filter hook forward priority 0`: replies
//!   (`ct state established,related`) and a pod's traffic to itself (set `pod-to-itself`
//!   of `ip . ip`, isolated pods only) are accepted, then one verdict-map lookup each:
//!   `ip daddr vmap @ingress-isolated` / `ip saddr vmap @egress-isolated` (isolated local
//!   pod → `goto` its group chain); pods in neither map pass untouched. Two base chains because an accept
//!   ends only its own chain: a packet between two isolated pods must pass both;
//! - `ingress-group-<hash>` / `egress-group-<hash>`: one per distinct list of selecting
//!   policies, `jump` to each policy's chain, then `drop`. Pods sharing their policies share
//!   a group, so pod churn changes map elements only;
//! - `ingress-<hash>-<ns>/<name>` / `egress-...`: per policy, one rule per (peer kind ×
//!   protocol), each `accept`; selector peers are the named set `<dir>-<hash>-r<i>-peers`
//!   (pod addresses: pod churn changes elements only), ipBlocks inline prefixes with an
//!   anonymous `!=` set for `except`, ports inline anonymous sets per protocol, named ports
//!   the set `<dir>-<hash>-r<i>-named` of `ip . proto . port` (destination pod and its
//!   resolved port).
//!
//! Per packet that is the conntrack check, two hash lookups, and the few rules of the
//! policies selecting the pod, whatever the number of policies or pods in the cluster.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{Desired, Ports, Protocol, Rule};

/// Map: ingress-isolated local pod → `goto` its group chain.
pub const MAP_INGRESS: &str = "ingress-isolated";
/// Map: egress-isolated local pod → `goto` its group chain.
pub const MAP_EGRESS: &str = "egress-isolated";
/// Set: `ip . ip` of every isolated local pod (a pod may always reach itself).
pub const SET_SELF: &str = "pod-to-itself";

/// Everything the policies own in the table (the skeleton's sets and maps are not listed
/// in `sets`, only their elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name → rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Named set → definition body (`type ...;`).
    pub sets: BTreeMap<String, String>,
    /// Set or map → key → value (empty for set elements).
    pub elements: BTreeMap<String, BTreeMap<String, String>>,
}

/// The skeleton of a table rebuilt from nothing (one atomic batch with every rule).
pub fn rebuild_commands(table: &str) -> String {
    let t = table;
    let mut out = String::new();
    // `add` first so that `delete` never fails on a missing table.
    let _ = writeln!(out, "add table ip {t}");
    let _ = writeln!(out, "delete table ip {t}");
    let _ = writeln!(out, "add table ip {t}");
    for map in [MAP_INGRESS, MAP_EGRESS] {
        let _ = writeln!(out, "add map ip {t} {map} {{ type ipv4_addr : verdict; }}");
    }
    let _ = writeln!(
        out,
        "add set ip {t} {SET_SELF} {{ type ipv4_addr . ipv4_addr; }}"
    );
    for (chain, lookup) in [
        ("ingress", format!("ip daddr vmap @{MAP_INGRESS}")),
        ("egress", format!("ip saddr vmap @{MAP_EGRESS}")),
    ] {
        let _ = writeln!(
            out,
            "add chain ip {t} {chain} {{ type filter hook forward priority 0; policy accept; }}"
        );
        let _ = writeln!(
            out,
            "add rule ip {t} {chain} ct state established,related accept"
        );
        let _ = writeln!(
            out,
            "add rule ip {t} {chain} ip saddr . ip daddr @{SET_SELF} accept"
        );
        let _ = writeln!(out, "add rule ip {t} {chain} {lookup}");
    }
    out
}

/// FNV-1a, 64 bits, as hex: short unique names for policies and groups.
fn hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016X}")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The chain of policy `key` (`namespace/name`) for one direction.
pub fn policy_chain(direction: &str, key: &str) -> String {
    // Names stay well under the kernel's 256 bytes; the hash keeps them unique.
    let shown: String = key.chars().take(160).collect();
    format!("{direction}-{}-{shown}", hash(key))
}

/// The ruleset `desired` needs.
pub fn render(desired: &Desired) -> Ruleset {
    let mut out = Ruleset::default();
    for (key, rules) in &desired.policies {
        for (direction, list) in [
            (Direction::Ingress, &rules.ingress),
            (Direction::Egress, &rules.egress),
        ] {
            if let Some(list) = list {
                render_policy(&mut out, direction, key, list);
            }
        }
    }
    for (direction, map, pods) in [
        (Direction::Ingress, MAP_INGRESS, &desired.ingress),
        (Direction::Egress, MAP_EGRESS, &desired.egress),
    ] {
        for (ip, policies) in pods {
            let group = format!("{}-group-{}", direction.name(), hash(&policies.join(",")));
            out.chains.entry(group.clone()).or_insert_with(|| {
                policies
                    .iter()
                    .map(|k| format!("jump {}", policy_chain(direction.name(), k)))
                    .chain(std::iter::once("drop".to_string()))
                    .collect()
            });
            out.elements
                .entry(map.to_string())
                .or_default()
                .insert(ip.to_string(), format!("goto {group}"));
        }
    }
    // Only isolated pods need the exception: any other pod passes both chains anyway, and
    // leaving it out keeps pod churn without policies from touching nftables at all (a
    // burst of pod starts ran `nft` once per pod, BENCHMARKS.md session 11).
    let isolated = |ip: &std::net::Ipv4Addr| {
        desired.ingress.contains_key(ip) || desired.egress.contains_key(ip)
    };
    for ip in desired.local.iter().filter(|ip| isolated(ip)) {
        out.elements
            .entry(SET_SELF.to_string())
            .or_default()
            .insert(format!("{ip} . {ip}"), String::new());
    }
    out
}

fn render_policy(out: &mut Ruleset, direction: Direction, key: &str, rules: &[Rule]) {
    let dir = direction.name();
    let id = hash(key);
    let egress = direction == Direction::Egress;
    let field = if egress { "ip daddr" } else { "ip saddr" };
    let mut chain = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let peers: Vec<String> = match &rule.peers {
            None => vec![String::new()],
            Some(peers) => {
                let mut matchers = Vec::new();
                if let Some(pods) = &peers.pods {
                    let set = format!("{dir}-{id}-r{i}-peers");
                    out.sets.insert(set.clone(), "type ipv4_addr;".into());
                    let elements = out.elements.entry(set.clone()).or_default();
                    for ip in pods {
                        elements.insert(ip.to_string(), String::new());
                    }
                    matchers.push(format!("{field} @{set}"));
                }
                for block in &peers.blocks {
                    let (net, len) = block.cidr;
                    let mut m = format!("{field} {net}/{len}");
                    if !block.except.is_empty() {
                        let except: Vec<String> = block
                            .except
                            .iter()
                            .map(|(n, l)| format!("{n}/{l}"))
                            .collect();
                        let _ = write!(m, " {field} != {{ {} }}", except.join(", "));
                    }
                    matchers.push(m);
                }
                matchers
            }
        };
        let (numeric, named) = match &rule.ports {
            None => (vec![String::new()], None),
            Some(ports) => (numeric_matchers(ports), ports.named.as_ref()),
        };
        for peer in &peers {
            for port in &numeric {
                chain.push(join(&[peer.as_str(), port.as_str(), "accept"]));
            }
        }
        if let Some(named) = named {
            let set = format!("{dir}-{id}-r{i}-named");
            out.sets.insert(
                set.clone(),
                "type ipv4_addr . inet_proto . inet_service;".into(),
            );
            let elements = out.elements.entry(set.clone()).or_default();
            for (ip, protocol, port) in named {
                elements.insert(format!("{ip} . {} . {port}", protocol.nft()), String::new());
            }
            let lookup = format!("ip daddr . meta l4proto . th dport @{set}");
            if egress {
                // The set's addresses are the peers already.
                chain.push(join(&[lookup.as_str(), "accept"]));
            } else {
                for peer in &peers {
                    chain.push(join(&[peer.as_str(), lookup.as_str(), "accept"]));
                }
            }
        }
    }
    out.chains.insert(policy_chain(dir, key), chain);
}

/// One matcher per protocol the numeric ports name.
fn numeric_matchers(ports: &Ports) -> Vec<String> {
    let mut by_protocol: BTreeMap<Protocol, Option<Vec<String>>> = BTreeMap::new();
    for m in &ports.numeric {
        let entry = by_protocol
            .entry(m.protocol)
            .or_insert_with(|| Some(Vec::new()));
        match m.range {
            None => *entry = None,
            Some((first, last)) => {
                if let Some(list) = entry {
                    list.push(if first == last {
                        first.to_string()
                    } else {
                        format!("{first}-{last}")
                    });
                }
            }
        }
    }
    by_protocol
        .into_iter()
        .map(|(protocol, ports)| match ports {
            None => format!("meta l4proto {}", protocol.nft()),
            Some(list) => format!(
                "meta l4proto {} th dport {{ {} }}",
                protocol.nft(),
                list.join(", ")
            ),
        })
        .collect()
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The commands that turn `old` into `new`, in the order nft needs: sets and chains exist
/// before rules and elements refer to them; references go before what they point at is
/// deleted. Empty when nothing changed.
pub fn diff(table: &str, old: &Ruleset, new: &Ruleset) -> String {
    let t = table;
    let mut create = String::new();
    let mut fill = String::new();
    let mut remove_elements = String::new();
    let mut add_elements = String::new();
    let mut flush_removed = String::new();
    let mut delete_removed = String::new();
    // A set's name says its kind, so its definition never changes while it exists.
    for (name, body) in &new.sets {
        if !old.sets.contains_key(name) {
            let _ = writeln!(create, "add set ip {t} {name} {{ {body} }}");
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            None => {
                let _ = writeln!(create, "add chain ip {t} {name}");
            }
            Some(old_rules) if old_rules == rules => continue,
            Some(_) => {
                let _ = writeln!(fill, "flush chain ip {t} {name}");
            }
        }
        for rule in rules {
            let _ = writeln!(fill, "add rule ip {t} {name} {rule}");
        }
    }
    let empty = BTreeMap::new();
    for (collection, elements) in &old.elements {
        if old.sets.contains_key(collection) && !new.sets.contains_key(collection) {
            continue; // the set goes, and its elements with it
        }
        let wanted = new.elements.get(collection).unwrap_or(&empty);
        let gone: Vec<&String> = elements
            .iter()
            .filter(|(k, v)| wanted.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        if !gone.is_empty() {
            let keys: Vec<&str> = gone.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(
                remove_elements,
                "delete element ip {t} {collection} {{ {} }}",
                keys.join(", ")
            );
        }
    }
    for (collection, elements) in &new.elements {
        let had = old.elements.get(collection).unwrap_or(&empty);
        let added: Vec<String> = elements
            .iter()
            .filter(|(k, v)| had.get(*k) != Some(*v))
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k} : {v}")
                }
            })
            .collect();
        if !added.is_empty() {
            let _ = writeln!(
                add_elements,
                "add element ip {t} {collection} {{ {} }}",
                added.join(", ")
            );
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(flush_removed, "flush chain ip {t} {name}");
            let _ = writeln!(delete_removed, "delete chain ip {t} {name}");
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(delete_removed, "delete set ip {t} {name}");
        }
    }
    [
        create,
        fill,
        remove_elements,
        add_elements,
        flush_removed,
        delete_removed,
    ]
    .concat()
}
