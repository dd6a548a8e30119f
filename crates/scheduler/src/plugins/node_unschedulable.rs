//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint (upstream `NodeUnschedulable`).

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerates;
use crate::framework::{FilterPlugin, NodeInfo, PodInfo, State, Status};

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable() {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if tolerations.iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(NAME, ERR_REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn cordoned_nodes_refuse_pods_that_do_not_tolerate_it() {
        let cordoned = json!({"spec": {"unschedulable": true}});
        let tolerating = json!({"spec": {"tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}});
        let cases = [
            ("schedulable node", json!({}), json!({}), true),
            ("cordoned node", cordoned.clone(), json!({}), false),
            ("cordoned, tolerated", cordoned.clone(), tolerating, true),
            (
                "cordoned, tolerate everything",
                cordoned,
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
                true,
            ),
        ];
        for (name, n, p, fits) in cases {
            let st = NodeUnschedulable.filter(
                &None,
                &info(pod("p", p)),
                &node_info(node("n", n), vec![]),
            );
            assert_eq!(st.is_success(), fits, "{name}");
        }
    }
}
