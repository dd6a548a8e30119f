//! NodeAffinity: `spec.nodeSelector` and required node affinity decide where a pod may go;
//! preferred node affinity terms add their weights to a node's score (upstream
//! `NodeAffinity`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, ScorePlugin, State, Status};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value, values.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// One term: all its expressions and fields must hold; a term with neither matches nothing.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// Terms are ORed.
pub fn selector_matches(
    sel: &NodeSelector,
    labels: &BTreeMap<String, String>,
    node_name: &str,
) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|t| term_matches(t, labels, node_name))
}

/// The pod's nodeSelector and required node affinity both hold on this node.
pub fn pod_matches_node(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return true;
    };
    // The node's labels only when the pod asks something of them: for most pods this
    // filter then never reads the node's object (cold memory at thousands of nodes).
    if let Some(sel) = spec.node_selector.as_ref() {
        let labels = node.labels();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => selector_matches(sel, node.labels(), &node.name),
        None => true,
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod_matches_node(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(NAME, ERR_REASON)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        2
    }
    fn score(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[]);
        preferred
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, node.labels(), &node.name))
            .map(|p| p.weight as i64)
            .sum()
    }
    fn normalize(&self, _: &State, scores: &mut [i64]) {
        super::default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn required(terms: serde_json::Value) -> serde_json::Value {
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}})
    }

    #[test]
    fn filter_table() {
        let n = node(
            "n1",
            json!({"metadata": {"labels": {"disk": "ssd", "zone": "a", "cores": "8"}}}),
        );
        let cases = [
            ("no constraints", json!({}), true),
            (
                "nodeSelector matches",
                json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
                true,
            ),
            (
                "nodeSelector differs",
                json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
                false,
            ),
            (
                "nodeSelector missing label",
                json!({"spec": {"nodeSelector": {"gpu": "yes"}}}),
                false,
            ),
            (
                "In",
                required(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
                ),
                true,
            ),
            (
                "NotIn",
                required(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                false,
            ),
            (
                "NotIn absent label",
                required(
                    json!([{"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                true,
            ),
            (
                "Exists",
                required(json!([{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])),
                true,
            ),
            (
                "DoesNotExist",
                required(
                    json!([{"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]),
                ),
                false,
            ),
            (
                "Gt",
                required(
                    json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]),
                ),
                true,
            ),
            (
                "Lt",
                required(
                    json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}]),
                ),
                false,
            ),
            (
                "terms are ORed",
                required(json!([
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]},
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}])),
                true,
            ),
            (
                "expressions are ANDed",
                required(json!([{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "disk", "operator": "In", "values": ["hdd"]}]}])),
                false,
            ),
            (
                "matchFields name",
                required(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
                ),
                true,
            ),
            ("empty term matches nothing", required(json!([{}])), false),
        ];
        for (name, p, fits) in cases {
            let st = NodeAffinity.filter(&None, &info(pod("p", p)), &node_info(n.clone(), vec![]));
            assert_eq!(st.is_success(), fits, "{name}");
            if !fits {
                assert_eq!(st.reasons, vec![ERR_REASON.to_string()], "{name}");
            }
        }
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let p = info(pod(
            "p",
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
            ]}}}}),
        ));
        let a = node_info(
            node("a", json!({"metadata": {"labels": {"zone": "a"}}})),
            vec![],
        );
        let b = node_info(
            node("b", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            vec![],
        );
        let c = node_info(node("c", json!({})), vec![]);
        let mut scores: Vec<i64> = [&a, &b, &c]
            .iter()
            .map(|n| NodeAffinity.score(&None, &p, n))
            .collect();
        assert_eq!(scores, vec![80, 20, 0]);
        NodeAffinity.normalize(&None, &mut scores);
        assert_eq!(scores, vec![100, 25, 0]);
    }
}
