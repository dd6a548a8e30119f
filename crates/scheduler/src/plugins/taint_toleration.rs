//! TaintToleration: a node's NoSchedule and NoExecute taints keep away pods that do not
//! tolerate them; PreferNoSchedule taints only lower the node's score (upstream
//! `TaintToleration`).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, ScorePlugin, State, Status};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// Upstream's message names the taint as `{key: value}`.
pub fn untolerated_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tols = tolerations(pod);
        let untolerated = node.taints().iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !tols.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Status::success(),
            Some(taint) => Status::unresolvable(NAME, untolerated_reason(taint)),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn weight(&self) -> i64 {
        3
    }
    /// How many PreferNoSchedule taints the pod does not tolerate (fewer is better). Only
    /// the pod's tolerations with an empty or PreferNoSchedule effect count, as upstream.
    fn score(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        node.taints()
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }
    fn normalize(&self, _: &State, scores: &mut [i64]) {
        super::default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn toleration_matching_follows_upstream() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tol =
            |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("toleration") };
        let cases = [
            (
                json!({"key": "k", "value": "v", "effect": "NoSchedule"}),
                true,
            ),
            (json!({"key": "k", "operator": "Equal", "value": "v"}), true),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"key": "k", "value": "other"}), false),
            (
                json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}),
                false,
            ),
            (json!({"key": "other", "operator": "Exists"}), false),
        ];
        for (t, want) in cases {
            assert_eq!(tolerates(&tol(t.clone()), &taint), want, "{t}");
        }
    }

    #[test]
    fn filter_reports_the_first_untolerated_taint() {
        let tainted = json!({"spec": {"taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "db", "effect": "NoExecute"}
        ]}});
        let cases = [
            (
                "no tolerations",
                json!({}),
                Some("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"),
            ),
            (
                "first tolerated",
                json!({"spec": {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}),
                Some("node(s) had untolerated taint {dedicated: db}"),
            ),
            (
                "all tolerated",
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
                None,
            ),
        ];
        for (name, p, want) in cases {
            let st = TaintToleration.filter(
                &None,
                &info(pod("p", p)),
                &node_info(node("n", tainted.clone()), vec![]),
            );
            match want {
                None => assert!(st.is_success(), "{name}"),
                Some(r) => assert_eq!(st.reasons, vec![r.to_string()], "{name}"),
            }
        }
        let soft = json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}});
        assert!(TaintToleration
            .filter(
                &None,
                &info(pod("p", json!({}))),
                &node_info(node("n", soft), vec![])
            )
            .is_success());
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let soft = node_info(
            node(
                "a",
                json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
            ),
            vec![],
        );
        let clean = node_info(node("b", json!({})), vec![]);
        let p = info(pod("p", json!({})));
        let mut scores = vec![
            TaintToleration.score(&None, &p, &soft),
            TaintToleration.score(&None, &p, &clean),
        ];
        TaintToleration.normalize(&None, &mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
