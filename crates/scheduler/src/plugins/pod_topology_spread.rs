//! PodTopologySpread: `topologySpreadConstraints` keep the number of matching pods per
//! topology domain within `maxSkew` (DoNotSchedule filters, ScheduleAnyway scores), counting
//! only nodes the pod could go to by its node affinity (nodeAffinityPolicy Honor) and
//! ignoring taints (nodeTaintsPolicy Ignore) unless told otherwise (upstream
//! `PodTopologySpread`). A pod that declares no constraints gets upstream's cluster defaults
//! (hostname maxSkew 3, zone maxSkew 5, both ScheduleAnyway) over the selector of the
//! Services and controller that own it; nodes lacking a default key are not ignored then.
//! Matching pods are counted through [`Snapshot::matching`]: from the snapshot's selector
//! index for the [`counted_selectors`] the scheduler has it track, else pod by pod.

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};

// foldhash: these maps are built for every pod scheduled (node names and label values as
// keys), where std's SipHash was most of PodTopologySpread's pre-score.
use foldhash::HashMap;

use api::selectors::LabelSelector;
use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};

use super::node_affinity::pod_matches_node;
use super::taint_toleration::tolerates;
use crate::framework::{
    topology_hash, FilterPlugin, MatchingPods, NodeInfo, PodInfo, ScorePlugin, Snapshot, State,
    Status, TopologyKey, DEFAULT_TOPOLOGY_KEYS, MAX_NODE_SCORE,
};
use crate::selector_index::NodeId;

pub const NAME: &str = "PodTopologySpread";
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = DEFAULT_TOPOLOGY_KEYS[0];
const ZONE: &str = DEFAULT_TOPOLOGY_KEYS[1];

/// Upstream's system-default constraints (`systemDefaultConstraints`): key and maxSkew, all
/// ScheduleAnyway.
const SYSTEM_DEFAULTS: [(&str, i64); 2] = [(HOSTNAME, 3), (ZONE, 5)];

pub struct PodTopologySpread;

/// The distinct values of one topology key among nodes, found by the hash each node keeps
/// of its value ([`topology_hash`]): a value's bytes are compared only when two hashes are
/// equal, where a set of strings would hash and compare each node's value once more per pod.
struct Domains<'a> {
    by_hash: std::collections::HashMap<u64, &'a str, BuildHasherDefault<HashIsKey>>,
    /// Values whose hash another value already holds (practically never).
    collided: Vec<&'a str>,
}

impl<'a> Domains<'a> {
    fn with_capacity(n: usize) -> Self {
        Domains {
            by_hash: std::collections::HashMap::with_capacity_and_hasher(n, Default::default()),
            collided: Vec::new(),
        }
    }

    fn insert(&mut self, (hash, value): (u64, &'a str)) {
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(value);
            }
            std::collections::hash_map::Entry::Occupied(e) => {
                if !same_value(e.get(), value) && !self.collided.contains(&value) {
                    self.collided.push(value);
                }
            }
        }
    }

    fn contains(&self, (hash, value): (u64, &str)) -> bool {
        self.by_hash
            .get(&hash)
            .is_some_and(|held| same_value(held, value))
            || self.collided.contains(&value)
    }

    fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    fn has_non_empty(&self) -> bool {
        self.by_hash
            .values()
            .chain(&self.collided)
            .any(|v| !v.is_empty())
    }
}

/// String equality without a `memcmp` call for the empty value, the one every node
/// without a zone label has (profiled: ~5% of the server at 5,000 nodes went to `memcmp`
/// calls of length 0 from these sets).
fn same_value(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// A `Hasher` for keys that are already hashes.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with it; fold anything else in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Constraint {
    max_skew: i64,
    key: String,
    /// `key` looked up among the default keys once, not once per node.
    slot: Option<usize>,
    selector: LabelSelector,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn topology(&self) -> TopologyKey<'_> {
        TopologyKey::with_slot(&self.key, self.slot)
    }
}

/// The pod's constraints for one `whenUnsatisfiable` action, and whether every node must
/// carry all their keys to count (false only for the system defaults, as upstream).
fn constraints(pod: &PodInfo, action: &str) -> (Vec<Constraint>, bool) {
    let list: &[TopologySpreadConstraint] = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[]);
    if list.is_empty() {
        return (system_default_constraints(pod, action), false);
    }
    let declared = list
        .iter()
        .filter(|c| c.when_unsatisfiable == action)
        .map(|c| {
            let mut sel = c.label_selector.clone();
            // matchLabelKeys: the pod's own values for those keys narrow the selector.
            if let (Some(s), Some(keys)) = (sel.as_mut(), c.match_label_keys.as_ref()) {
                for k in keys {
                    if let Some(v) = pod.labels().get(k) {
                        s.match_labels
                            .get_or_insert_with(Default::default)
                            .insert(k.clone(), v.clone());
                    }
                }
            }
            Constraint {
                max_skew: c.max_skew as i64,
                key: c.topology_key.clone(),
                slot: TopologyKey::of(&c.topology_key).slot(),
                selector: LabelSelector::from_label_selector_opt(sel.as_ref())
                    .unwrap_or_else(|_| LabelSelector::nothing()),
                min_domains: c.min_domains.unwrap_or(1) as i64,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect();
    (declared, true)
}

/// Upstream's defaults apply only to ScheduleAnyway and only when the pod's owners give a
/// non-empty selector.
fn system_default_constraints(pod: &PodInfo, action: &str) -> Vec<Constraint> {
    let Some(selector) = pod.default_spread_selector.as_ref() else {
        return Vec::new();
    };
    if action != "ScheduleAnyway" || selector.is_empty() {
        return Vec::new();
    }
    SYSTEM_DEFAULTS
        .iter()
        .map(|(key, max_skew)| Constraint {
            max_skew: *max_skew,
            key: key.to_string(),
            slot: TopologyKey::of(key).slot(),
            selector: selector.clone(),
            min_domains: 1,
            honor_affinity: true,
            honor_taints: false,
        })
        .collect()
}

/// The selectors this pod's constraints (declared or default) count matching pods with,
/// without repeats: what the scheduler has the snapshot track before deciding for it.
pub fn counted_selectors(pod: &PodInfo) -> Vec<LabelSelector> {
    let mut selectors: Vec<LabelSelector> = Vec::new();
    for action in ["DoNotSchedule", "ScheduleAnyway"] {
        for c in constraints(pod, action).0 {
            if !selectors.contains(&c.selector) {
                selectors.push(c.selector);
            }
        }
    }
    selectors
}

/// Upstream `DefaultSelector`: the Services selecting the pod (their selectors merged) and,
/// when the pod's controller is a ReplicaSet or StatefulSet, that controller's selector
/// added. Callers pass the Services of the pod's namespace and the controller's selector.
pub fn default_selector<'a>(
    pod: &Pod,
    services: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    controller_selector: Option<&LabelSelector>,
) -> LabelSelector {
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut merged = BTreeMap::new();
    for service_selector in services {
        let selects_pod = service_selector
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v));
        if selects_pod {
            merged.extend(service_selector.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let selector = LabelSelector::from_map(&merged).unwrap_or_else(|_| LabelSelector::nothing());
    match controller_selector {
        Some(owner) => selector.and(owner),
        None => selector,
    }
}

/// Whether the node takes part in counting for these constraints.
fn eligible(pod: &PodInfo, node: &NodeInfo, cs: &[Constraint], require_all: bool) -> bool {
    if node.node.is_none()
        || (require_all && !cs.iter().all(|c| node.topology_label(&c.key).is_some()))
    {
        return false;
    }
    if cs.iter().any(|c| c.honor_affinity) && !pod_matches_node(pod, node) {
        return false;
    }
    if cs.iter().any(|c| c.honor_taints) {
        let tols = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        let blocked = node.taints().iter().any(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !tols.iter().any(|tol| tolerates(tol, t))
        });
        if blocked {
            return false;
        }
    }
    true
}

struct FilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the smallest count over its domains (0 below minDomains).
    min: Vec<i64>,
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snap: &Snapshot) -> Result<State, Status> {
        let (cs, _) = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return Ok(None);
        }
        let matching: Vec<MatchingPods> = cs
            .iter()
            .map(|c| snap.matching(pod.namespace(), &c.selector))
            .collect();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::default(); cs.len()];
        for node in snap.nodes.iter().filter(|n| eligible(pod, n, &cs, true)) {
            for (i, c) in cs.iter().enumerate() {
                let value = node.labels()[&c.key].clone();
                *counts[i].entry(value).or_insert(0) += matching[i].on(node);
            }
        }
        drop(matching);
        let min = cs
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                if (m.len() as i64) < c.min_domains {
                    0
                } else {
                    m.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        Ok(Some(Box::new(FilterState {
            constraints: cs,
            counts,
            min,
        })))
    }

    fn filter(&self, state: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.as_ref().and_then(|s| s.downcast_ref::<FilterState>()) else {
            return Status::success();
        };
        for (i, c) in st.constraints.iter().enumerate() {
            let Some(value) = node.labels().get(&c.key) else {
                return Status::unresolvable(NAME, ERR_MISSING_LABEL);
            };
            let self_match = i64::from(c.selector.matches(pod.labels()));
            let here = st.counts[i].get(value).copied().unwrap_or(0);
            if here + self_match - st.min[i] > c.max_skew {
                return Status::unschedulable(NAME, ERR_CONSTRAINTS);
            }
        }
        Status::success()
    }
}

struct ScoreState {
    constraints: Vec<Constraint>,
    /// Per constraint (non-hostname keys): domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint (hostname keys): feasible node → matching pods (absent: none).
    host_counts: Vec<HashMap<NodeId, i64>>,
    /// Per constraint: ln(domains + 2), so keys with many domains weigh more.
    weights: Vec<f64>,
    /// Feasible nodes lacking a key: scored 0.
    ignored: Vec<bool>,
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        2
    }

    fn pre_score(&self, pod: &PodInfo, snap: &Snapshot, feasible: &[&NodeInfo]) -> State {
        let (cs, require_all) = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() {
            return None;
        }
        let ignored: Vec<bool> = feasible
            .iter()
            .map(|n| require_all && !cs.iter().all(|c| n.topology_label(&c.key).is_some()))
            .collect();
        let keys: Vec<TopologyKey> = cs.iter().map(Constraint::topology).collect();
        // A node without a (default) key counts in that key's "" domain, as upstream.
        let mut domains: Vec<Domains> = (0..cs.len())
            .map(|_| Domains::with_capacity(feasible.len()))
            .collect();
        let empty = (topology_hash(""), "");
        for (n, ign) in feasible.iter().zip(&ignored) {
            if !ign {
                for (domain, key) in domains.iter_mut().zip(&keys) {
                    domain.insert(n.topology_value_at(*key).unwrap_or(empty));
                }
            }
        }
        let weights = domains
            .iter()
            .map(|d| ((d.len() + 2) as f64).ln())
            .collect();
        let matching: Vec<MatchingPods> = cs
            .iter()
            .map(|c| snap.matching(pod.namespace(), &c.selector))
            .collect();
        let mut host_counts: Vec<HashMap<NodeId, i64>> = vec![HashMap::default(); cs.len()];
        for i in (0..cs.len()).filter(|&i| keys[i].is_hostname()) {
            for n in feasible {
                let count = matching[i].on(n);
                if count != 0 {
                    host_counts[i].insert(n.id(), count);
                }
            }
        }
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::default(); cs.len()];
        // Hostname counts are per feasible node (above); a key no feasible node carries
        // (the default zone key on a cluster without zones) has nothing to count.
        let mut counted: Vec<usize> = (0..cs.len()).filter(|&i| !keys[i].is_hostname()).collect();
        if !counted.iter().any(|&i| domains[i].has_non_empty()) {
            counted.clear();
        }
        for node in snap
            .nodes
            .iter()
            .filter(|n| !counted.is_empty() && eligible(pod, n, &cs, require_all))
        {
            for &i in &counted {
                let Some((hash, value)) = node.topology_value_at(keys[i]) else {
                    continue;
                };
                if domains[i].contains((hash, value)) {
                    *counts[i].entry(value.to_string()).or_insert(0) += matching[i].on(node);
                }
            }
        }
        drop(matching);
        Some(Box::new(ScoreState {
            constraints: cs,
            counts,
            host_counts,
            weights,
            ignored,
        }))
    }

    fn score(&self, state: &State, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = state.as_ref().and_then(|s| s.downcast_ref::<ScoreState>()) else {
            return 0;
        };
        let mut score = 0.0;
        for (i, c) in st.constraints.iter().enumerate() {
            let key = c.topology();
            // Only system defaults reach here for a node without the key: it adds nothing.
            let Some((_, value)) = node.topology_value_at(key) else {
                continue;
            };
            let count = if key.is_hostname() {
                st.host_counts[i].get(&node.id()).copied().unwrap_or(0)
            } else {
                st.counts[i].get(value).copied().unwrap_or(0)
            };
            score += count as f64 * st.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    fn normalize(&self, state: &State, scores: &mut [i64]) {
        let Some(st) = state.as_ref().and_then(|s| s.downcast_ref::<ScoreState>()) else {
            return;
        };
        let live = || {
            scores
                .iter()
                .zip(&st.ignored)
                .filter(|(_, ign)| !**ign)
                .map(|(s, _)| *s)
        };
        let (min, max) = (live().min().unwrap_or(0), live().max().unwrap_or(0));
        for (s, ign) in scores.iter_mut().zip(&st.ignored) {
            *s = if *ign {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn domains_count_distinct_values_even_when_hashes_collide() {
        let mut d = Domains::with_capacity(4);
        d.insert((1, "a"));
        d.insert((1, "b")); // same hash, another value
        d.insert((1, "a"));
        d.insert((1, "b"));
        d.insert((2, ""));
        assert_eq!(d.len(), 3);
        assert!(d.contains((1, "a")) && d.contains((1, "b")) && d.contains((2, "")));
        assert!(!d.contains((1, "c")) && !d.contains((3, "a")));
        assert!(d.has_non_empty());
        let mut only_empty = Domains::with_capacity(1);
        only_empty.insert((topology_hash(""), ""));
        assert!(!only_empty.has_non_empty());
    }
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::{json, Value};

    fn spread(key: &str, skew: i32, action: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [
            {"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": action, "labelSelector": {"matchLabels": {"app": "web"}}}]}})
    }

    fn web_on(name: &str, node: &str) -> k8s_openapi::api::core::v1::Pod {
        pod(
            name,
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"nodeName": node}}),
        )
    }

    #[test]
    fn filter_table() {
        let nodes = vec![
            node("a1", json!({"metadata": {"labels": {"zone": "a"}}})),
            node("a2", json!({"metadata": {"labels": {"zone": "a"}}})),
            node("b1", json!({"metadata": {"labels": {"zone": "b"}}})),
            node("x", json!({})),
        ];
        struct Case {
            name: &'static str,
            existing: Vec<k8s_openapi::api::core::v1::Pod>,
            incoming: Value,
            want: Vec<(&'static str, &'static str)>,
        }
        let ok = "";
        let cases = vec![
            Case {
                name: "empty cluster, zone skew 1",
                existing: vec![],
                incoming: spread("zone", 1, "DoNotSchedule"),
                want: vec![("a1", ok), ("a2", ok), ("b1", ok), ("x", ERR_MISSING_LABEL)],
            },
            Case {
                name: "zone a ahead",
                existing: vec![web_on("w0", "a1")],
                incoming: spread("zone", 1, "DoNotSchedule"),
                want: vec![
                    ("a1", ERR_CONSTRAINTS),
                    ("a2", ERR_CONSTRAINTS),
                    ("b1", ok),
                    ("x", ERR_MISSING_LABEL),
                ],
            },
            Case {
                name: "skew 2 allows it",
                existing: vec![web_on("w0", "a1")],
                incoming: spread("zone", 2, "DoNotSchedule"),
                want: vec![("a1", ok), ("a2", ok), ("b1", ok), ("x", ERR_MISSING_LABEL)],
            },
            Case {
                name: "per host",
                existing: vec![web_on("w0", "a1")],
                incoming: spread("kubernetes.io/hostname", 1, "DoNotSchedule"),
                want: vec![("a1", ERR_CONSTRAINTS), ("a2", ok), ("b1", ok), ("x", ok)],
            },
            Case {
                name: "ScheduleAnyway never filters",
                existing: vec![web_on("w0", "a1")],
                incoming: spread("zone", 1, "ScheduleAnyway"),
                want: vec![("a1", ok), ("a2", ok), ("b1", ok), ("x", ok)],
            },
        ];
        for case in cases {
            let snap = Snapshot::build(nodes.clone(), case.existing);
            let p = info(pod("p", case.incoming));
            let state = PodTopologySpread.pre_filter(&p, &snap).expect("pre_filter");
            let mut got: Vec<(String, String)> = snap
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        PodTopologySpread
                            .filter(&state, &p, n)
                            .reasons
                            .first()
                            .cloned()
                            .unwrap_or_default(),
                    )
                })
                .collect();
            got.sort();
            let want: Vec<(String, String)> = case
                .want
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect();
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domain_higher() {
        let nodes = vec![
            node("a1", json!({"metadata": {"labels": {"zone": "a"}}})),
            node("b1", json!({"metadata": {"labels": {"zone": "b"}}})),
        ];
        let snap = Snapshot::build(nodes, vec![web_on("w0", "a1"), web_on("w1", "a1")]);
        let p = info(pod("p", spread("zone", 1, "ScheduleAnyway")));
        let feasible: Vec<&NodeInfo> = snap.nodes.iter().collect();
        let state = PodTopologySpread.pre_score(&p, &snap, &feasible);
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|n| PodTopologySpread.score(&state, &p, n))
            .collect();
        PodTopologySpread.normalize(&state, &mut scores);
        let a = feasible.iter().position(|n| n.name == "a1").expect("a1");
        assert!(scores[1 - a] > scores[a], "{scores:?}");
    }

    fn scores_for(p: &PodInfo, snap: &Snapshot) -> Vec<(String, i64)> {
        let feasible: Vec<&NodeInfo> = snap.nodes.iter().collect();
        let state = PodTopologySpread.pre_score(p, snap, &feasible);
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|n| PodTopologySpread.score(&state, p, n))
            .collect();
        PodTopologySpread.normalize(&state, &mut scores);
        feasible
            .iter()
            .map(|n| n.name.clone())
            .zip(scores)
            .collect()
    }

    #[test]
    fn system_defaults_spread_an_owned_pod_over_hostnames_without_zone_labels() {
        // No zone labels anywhere: upstream ignores no node for the system defaults.
        let nodes = vec![node("n1", json!({})), node("n2", json!({}))];
        let snap = Snapshot::build(
            nodes,
            vec![web_on("w0", "n1"), web_on("w1", "n1"), web_on("w2", "n1")],
        );
        let mut p = info(pod("p", json!({"metadata": {"labels": {"app": "web"}}})));
        p.default_spread_selector = Some(LabelSelector::parse("app=web").expect("selector"));
        let scores = scores_for(&p, &snap);
        assert!(scores[1].1 > scores[0].1, "n2 is emptier: {scores:?}");
        assert!(scores[0].1 > 0, "n1 is not ignored: {scores:?}");

        // Without owners (no selector) the defaults do not apply: no opinion.
        let unowned = info(pod("q", json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(PodTopologySpread
            .pre_score(&unowned, &snap, &snap.nodes.iter().collect::<Vec<_>>())
            .is_none());
    }

    #[test]
    fn decisions_with_tracked_selectors_equal_decisions_by_recounting() {
        use crate::cache::Cache;
        use crate::framework::{schedule, Cursor, TieBreaker};
        use crate::plugins::default_profile;
        use std::sync::Arc;

        let mut a = Cache::new(); // tracks the selectors, as the scheduler loop does
        let mut b = Cache::new(); // never does: every count is a recount
        for i in 0..12 {
            let zone = ["z1", "z2", "z3"][i % 3];
            let n = Arc::new(node(
                &format!("n{i}"),
                json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone,
                    "kubernetes.io/hostname": format!("n{i}")}}}),
            ));
            a.node_applied(n.clone());
            b.node_applied(n);
        }
        let profile = default_profile();
        let (mut cursor_a, mut cursor_b) = (Cursor::default(), Cursor::default());
        let (mut ties_a, mut ties_b) = (TieBreaker::new(11), TieBreaker::new(11));
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut roll = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut placed: Vec<String> = Vec::new();
        for i in 0..400 {
            // 20 workloads interleaved, more than any per-node memo of recent selectors.
            let app = format!("app{}", roll(20));
            let declared = roll(4) == 0;
            let spec = if declared {
                json!({"metadata": {"labels": {"app": app}}, "spec": {"topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": app}}},
                    {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                     "labelSelector": {"matchLabels": {"app": app}}}]}})
            } else {
                json!({"metadata": {"labels": {"app": app}}})
            };
            let mut p = info(pod(&format!("p{i}"), spec));
            if !declared {
                p.default_spread_selector =
                    Some(LabelSelector::parse(&format!("app={app}")).expect("selector"));
            }
            let p = Arc::new(p);
            for sel in counted_selectors(&p) {
                a.snapshot.track_selector(p.namespace(), &sel);
            }
            let got_a = schedule(&profile, &p, &a.snapshot, &mut cursor_a, &mut ties_a)
                .map_err(|e| e.message());
            let got_b = schedule(&profile, &p, &b.snapshot, &mut cursor_b, &mut ties_b)
                .map_err(|e| e.message());
            assert_eq!(got_a, got_b, "pod {i} ({app})");
            if let Ok(n) = got_a {
                a.assume(&n, p.clone());
                b.assume(&n, p.clone());
                placed.push(p.key.name.clone());
            }
            // Some replicas go away again.
            if roll(5) == 0 && !placed.is_empty() {
                let gone = placed.swap_remove(roll(placed.len() as u64) as usize);
                let key = informers::ObjectKey::new("default", &gone);
                a.pod_deleted(&key);
                b.pod_deleted(&key);
            }
        }
        assert!(a.snapshot.tracked_selectors() >= 20);
        assert_eq!(b.snapshot.tracked_selectors(), 0);
    }

    #[test]
    fn declared_constraints_replace_the_system_defaults() {
        let snap = Snapshot::build(vec![node("n1", json!({}))], vec![]);
        let mut p = info(pod("p", spread("zone", 1, "DoNotSchedule")));
        p.default_spread_selector = Some(LabelSelector::parse("app=web").expect("selector"));
        // The declared constraint is DoNotSchedule only: nothing to score, no defaults added.
        assert!(PodTopologySpread
            .pre_score(&p, &snap, &snap.nodes.iter().collect::<Vec<_>>())
            .is_none());
    }

    #[test]
    fn default_selector_merges_services_and_adds_the_controller_selector() {
        let p = pod(
            "p",
            json!({"metadata": {"labels": {"app": "web", "tier": "fe", "pod-template-hash": "abc"}}}),
        );
        let svc_web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let svc_fe: BTreeMap<String, String> = [("tier".to_string(), "fe".to_string())].into();
        let svc_other: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
        let rs = LabelSelector::parse("app=web,pod-template-hash=abc").expect("selector");

        let sel = default_selector(&p, [&svc_web, &svc_fe, &svc_other], Some(&rs));
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "fe"),
            ("pod-template-hash", "abc")
        ])));
        assert!(
            !sel.matches(&labels(&[("app", "web"), ("tier", "fe")])),
            "RS selector added"
        );
        assert!(
            !sel.matches(&labels(&[("app", "web"), ("pod-template-hash", "abc")])),
            "both services"
        );

        let none = default_selector(&p, [&svc_other], None);
        assert!(none.is_empty(), "nothing owns the pod: {none:?}");
    }
}
