//! InterPodAffinity: required pod affinity and anti-affinity between the incoming pod and
//! the pods already placed, per topology domain (`topologyKey`), in both directions
//! (existing pods' anti-affinity keeps the incoming pod away too); preferred terms score
//! (upstream `InterPodAffinity`).

use std::collections::{HashMap, HashSet};

use api::selectors::LabelSelector;
use k8s_openapi::api::core::v1::{PodAffinityTerm, WeightedPodAffinityTerm};

use crate::framework::{
    FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Snapshot, State, Status, MAX_NODE_SCORE,
};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Weight of an existing pod's required affinity toward the incoming pod in scoring
/// (upstream `hardPodAffinityWeight` default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

/// A term resolved against its pod's namespace.
struct Term {
    /// None: every namespace.
    namespaces: Option<HashSet<String>>,
    selector: LabelSelector,
    key: String,
    weight: i64,
}

impl Term {
    fn new(t: &PodAffinityTerm, weight: i64, pod_ns: &str, snap: &Snapshot) -> Term {
        let selector = LabelSelector::from_label_selector_opt(t.label_selector.as_ref())
            .unwrap_or_else(|_| LabelSelector::nothing());
        let listed: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let namespaces = match t.namespace_selector.as_ref() {
            None if listed.is_empty() => Some(HashSet::from([pod_ns.to_string()])),
            None => Some(listed),
            Some(ns_sel) => {
                let empty = ns_sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && ns_sel
                        .match_expressions
                        .as_ref()
                        .is_none_or(|e| e.is_empty());
                if empty {
                    None
                } else {
                    let sel = LabelSelector::from_label_selector(ns_sel)
                        .unwrap_or_else(|_| LabelSelector::nothing());
                    let mut set = listed;
                    for (ns, labels) in &snap.namespace_labels {
                        if sel.matches(labels) {
                            set.insert(ns.clone());
                        }
                    }
                    Some(set)
                }
            }
        };
        Term {
            namespaces,
            selector,
            key: t.topology_key.clone(),
            weight,
        }
    }

    fn matches(&self, pod: &PodInfo) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.contains(pod.namespace()))
            && self.selector.matches(pod.labels())
    }
}

struct Terms {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    preferred_affinity: Vec<Term>,
    preferred_anti: Vec<Term>,
}

fn terms_of(pod: &PodInfo, snap: &Snapshot) -> Terms {
    let aff = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let pa = aff.and_then(|a| a.pod_affinity.as_ref());
    let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
    let ns = pod.namespace();
    let req = |v: Option<&Vec<PodAffinityTerm>>| {
        v.into_iter()
            .flatten()
            .map(|t| Term::new(t, 1, ns, snap))
            .collect()
    };
    let pref = |v: Option<&Vec<WeightedPodAffinityTerm>>| {
        v.into_iter()
            .flatten()
            .map(|w| Term::new(&w.pod_affinity_term, w.weight as i64, ns, snap))
            .collect()
    };
    Terms {
        affinity: req(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        anti: req(paa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        preferred_affinity: pref(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        preferred_anti: pref(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
    }
}

type Pair = (String, String);

struct FilterState {
    terms: Terms,
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: HashMap<Pair, i64>,
    /// Domains with pods matching each of the incoming pod's affinity terms.
    affinity: HashMap<Pair, i64>,
    /// Domains with pods matching the incoming pod's anti-affinity terms.
    anti: HashMap<Pair, i64>,
}

fn bump(map: &mut HashMap<Pair, i64>, key: &str, node: &NodeInfo, by: i64) {
    if let Some(v) = node.labels().get(key) {
        *map.entry((key.to_string(), v.clone())).or_insert(0) += by;
    }
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snap: &Snapshot) -> Result<State, Status> {
        let terms = terms_of(pod, snap);
        let mut st = FilterState {
            terms,
            existing_anti: HashMap::new(),
            affinity: HashMap::new(),
            anti: HashMap::new(),
        };
        let own = !st.terms.affinity.is_empty() || !st.terms.anti.is_empty();
        if !own && snap.pods_with_required_anti_affinity() == 0 {
            // Nothing below could find anything: no term of its own, none against it.
            return Ok(None);
        }
        for node in snap.nodes.iter().filter(|n| n.node.is_some()) {
            if node.pods_with_required_anti_affinity > 0 {
                for existing in node.pods.iter().filter(|p| p.has_required_anti_affinity) {
                    for t in terms_of(existing, snap).anti {
                        if t.matches(pod) {
                            bump(&mut st.existing_anti, &t.key, node, 1);
                        }
                    }
                }
            }
            if own {
                for existing in &node.pods {
                    for t in &st.terms.affinity {
                        if t.matches(existing) {
                            bump(&mut st.affinity, &t.key, node, 1);
                        }
                    }
                    for t in &st.terms.anti {
                        if t.matches(existing) {
                            bump(&mut st.anti, &t.key, node, 1);
                        }
                    }
                }
            }
        }
        if !own && st.existing_anti.is_empty() {
            return Ok(None);
        }
        Ok(Some(Box::new(st)))
    }

    fn filter(&self, state: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.as_ref().and_then(|s| s.downcast_ref::<FilterState>()) else {
            return Status::success();
        };
        let labels = node.labels();
        let count = |map: &HashMap<Pair, i64>, key: &str| {
            labels
                .get(key)
                .and_then(|v| map.get(&(key.to_string(), v.clone())))
                .copied()
                .unwrap_or(0)
        };
        if !st.terms.affinity.is_empty() {
            let all_here = st
                .terms
                .affinity
                .iter()
                .all(|t| count(&st.affinity, &t.key) > 0);
            // The first pod of a group that matches its own terms may go anywhere the
            // topology keys exist; otherwise no pod could ever be first.
            let first_of_group = st.affinity.is_empty()
                && st
                    .terms
                    .affinity
                    .iter()
                    .all(|t| t.matches(pod) && labels.contains_key(&t.key));
            if !all_here && !first_of_group {
                return Status::unresolvable(NAME, ERR_AFFINITY);
            }
        }
        if st.terms.anti.iter().any(|t| count(&st.anti, &t.key) > 0) {
            return Status::unschedulable(NAME, ERR_ANTI_AFFINITY);
        }
        if !st.existing_anti.is_empty()
            && labels.iter().any(|(k, v)| {
                st.existing_anti
                    .get(&(k.clone(), v.clone()))
                    .is_some_and(|c| *c > 0)
            })
        {
            return Status::unschedulable(NAME, ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

struct ScoreState {
    topology_score: HashMap<Pair, i64>,
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        2
    }

    fn pre_score(&self, pod: &PodInfo, snap: &Snapshot, _feasible: &[&NodeInfo]) -> State {
        let terms = terms_of(pod, snap);
        let own = !terms.preferred_affinity.is_empty() || !terms.preferred_anti.is_empty();
        if !own && snap.pods_with_affinity() == 0 {
            // No preference of its own and no existing pod with terms: every node scores 0.
            return None;
        }
        let mut scores: HashMap<Pair, i64> = HashMap::new();
        for node in snap.nodes.iter().filter(|n| n.node.is_some()) {
            if !own && node.pods_with_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                for t in &terms.preferred_affinity {
                    if t.matches(existing) {
                        bump(&mut scores, &t.key, node, t.weight);
                    }
                }
                for t in &terms.preferred_anti {
                    if t.matches(existing) {
                        bump(&mut scores, &t.key, node, -t.weight);
                    }
                }
                if existing.has_affinity {
                    let theirs = terms_of(existing, snap);
                    for t in &theirs.affinity {
                        if t.matches(pod) {
                            bump(&mut scores, &t.key, node, HARD_POD_AFFINITY_WEIGHT);
                        }
                    }
                    for t in &theirs.preferred_affinity {
                        if t.matches(pod) {
                            bump(&mut scores, &t.key, node, t.weight);
                        }
                    }
                    for t in &theirs.preferred_anti {
                        if t.matches(pod) {
                            bump(&mut scores, &t.key, node, -t.weight);
                        }
                    }
                }
            }
        }
        if scores.is_empty() {
            return None;
        }
        Some(Box::new(ScoreState {
            topology_score: scores,
        }))
    }

    fn score(&self, state: &State, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(st) = state.as_ref().and_then(|s| s.downcast_ref::<ScoreState>()) else {
            return 0;
        };
        let labels = node.labels();
        st.topology_score
            .iter()
            .filter(|((k, v), _)| labels.get(k) == Some(v))
            .map(|(_, s)| *s)
            .sum()
    }

    fn normalize(&self, state: &State, scores: &mut [i64]) {
        if state.is_none() || scores.is_empty() {
            return;
        }
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Snapshot;
    use crate::plugins::testing::*;
    use serde_json::{json, Value};

    fn placed(
        name: &str,
        node: &str,
        labels: Value,
        extra: Value,
    ) -> k8s_openapi::api::core::v1::Pod {
        let mut v = json!({"metadata": {"labels": labels}, "spec": {"nodeName": node}});
        merge(&mut v, extra);
        pod(name, v)
    }

    fn anti(app: &str, key: &str) -> Value {
        json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}})
    }

    fn affinity(app: &str, key: &str) -> Value {
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}})
    }

    fn verdicts(
        snap: &Snapshot,
        incoming: k8s_openapi::api::core::v1::Pod,
    ) -> Vec<(String, Option<String>)> {
        let p = info(incoming);
        let state = InterPodAffinity.pre_filter(&p, snap).expect("pre_filter");
        let mut out: Vec<(String, Option<String>)> = snap
            .nodes
            .iter()
            .map(|n| {
                let st = InterPodAffinity.filter(&state, &p, n);
                (n.name.clone(), st.reasons.first().cloned())
            })
            .collect();
        out.sort();
        out
    }

    fn zoned(name: &str, zone: &str) -> k8s_openapi::api::core::v1::Node {
        node(name, json!({"metadata": {"labels": {"zone": zone}}}))
    }

    #[test]
    fn filter_table() {
        let nodes = vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")];
        let web_on_a1 = placed("web-0", "a1", json!({"app": "web"}), json!({}));
        let host = "kubernetes.io/hostname";
        let none: Option<String> = None;
        let some = |s: &str| Some(s.to_string());
        struct Case {
            name: &'static str,
            existing: Vec<k8s_openapi::api::core::v1::Pod>,
            incoming: k8s_openapi::api::core::v1::Pod,
            want: Vec<(&'static str, Option<String>)>,
        }
        let cases = vec![
            Case {
                name: "no rules",
                existing: vec![web_on_a1.clone()],
                incoming: pod("p", json!({})),
                want: vec![
                    ("a1", none.clone()),
                    ("a2", none.clone()),
                    ("b1", none.clone()),
                ],
            },
            Case {
                name: "anti-affinity per host",
                existing: vec![web_on_a1.clone()],
                incoming: pod("web-1", {
                    let mut v = anti("web", host);
                    merge(&mut v, json!({"metadata": {"labels": {"app": "web"}}}));
                    v
                }),
                want: vec![
                    ("a1", some(ERR_ANTI_AFFINITY)),
                    ("a2", none.clone()),
                    ("b1", none.clone()),
                ],
            },
            Case {
                name: "anti-affinity per zone",
                existing: vec![web_on_a1.clone()],
                incoming: pod("p", anti("web", "zone")),
                want: vec![
                    ("a1", some(ERR_ANTI_AFFINITY)),
                    ("a2", some(ERR_ANTI_AFFINITY)),
                    ("b1", none.clone()),
                ],
            },
            Case {
                name: "affinity per zone",
                existing: vec![web_on_a1.clone()],
                incoming: pod("p", affinity("web", "zone")),
                want: vec![
                    ("a1", none.clone()),
                    ("a2", none.clone()),
                    ("b1", some(ERR_AFFINITY)),
                ],
            },
            Case {
                name: "affinity with no match anywhere",
                existing: vec![],
                incoming: pod("p", affinity("web", "zone")),
                want: vec![
                    ("a1", some(ERR_AFFINITY)),
                    ("a2", some(ERR_AFFINITY)),
                    ("b1", some(ERR_AFFINITY)),
                ],
            },
            Case {
                name: "first pod of a self-affine group",
                existing: vec![],
                incoming: pod("p", {
                    let mut v = affinity("web", "zone");
                    merge(&mut v, json!({"metadata": {"labels": {"app": "web"}}}));
                    v
                }),
                want: vec![
                    ("a1", none.clone()),
                    ("a2", none.clone()),
                    ("b1", none.clone()),
                ],
            },
            Case {
                name: "existing pod's anti-affinity",
                existing: vec![placed(
                    "db-0",
                    "a1",
                    json!({"app": "db"}),
                    anti("web", "zone"),
                )],
                incoming: pod("p", json!({"metadata": {"labels": {"app": "web"}}})),
                want: vec![
                    ("a1", some(ERR_EXISTING_ANTI_AFFINITY)),
                    ("a2", some(ERR_EXISTING_ANTI_AFFINITY)),
                    ("b1", none.clone()),
                ],
            },
            Case {
                name: "other namespace does not count",
                existing: vec![{
                    let mut p = web_on_a1.clone();
                    p.metadata.namespace = Some("other".into());
                    p
                }],
                incoming: pod("p", anti("web", host)),
                want: vec![
                    ("a1", none.clone()),
                    ("a2", none.clone()),
                    ("b1", none.clone()),
                ],
            },
        ];
        for case in cases {
            let snap = Snapshot::build(nodes.clone(), case.existing);
            let want: Vec<(String, Option<String>)> = case
                .want
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect();
            assert_eq!(verdicts(&snap, case.incoming), want, "{}", case.name);
        }
    }

    #[test]
    fn preferred_anti_affinity_scores_away_from_matching_pods() {
        let nodes = vec![zoned("a1", "a"), zoned("b1", "b")];
        let snap = Snapshot::build(
            nodes,
            vec![placed("web-0", "a1", json!({"app": "web"}), json!({}))],
        );
        let p = info(pod(
            "p",
            json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}}),
        ));
        let feasible: Vec<&NodeInfo> = snap.nodes.iter().collect();
        let state = InterPodAffinity.pre_score(&p, &snap, &feasible);
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|n| InterPodAffinity.score(&state, &p, n))
            .collect();
        InterPodAffinity.normalize(&state, &mut scores);
        let a1 = feasible.iter().position(|n| n.name == "a1").expect("a1");
        assert_eq!(scores[a1], 0);
        assert_eq!(scores[1 - a1], 100);
    }
}
