//! NodeName: a pod that names a node fits only there (upstream `NodeName`).

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, State, Status};

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        let wanted = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        if wanted.is_empty() || wanted == node.name {
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
    fn only_the_named_node_fits() {
        let cases = [
            (json!({}), "n1", true),
            (json!({"spec": {"nodeName": "n1"}}), "n1", true),
            (json!({"spec": {"nodeName": "n2"}}), "n1", false),
        ];
        for (extra, node_name, fits) in cases {
            let st = NodeName.filter(
                &None,
                &info(pod("p", extra.clone())),
                &node_info(node(node_name, json!({})), vec![]),
            );
            assert_eq!(st.is_success(), fits, "{extra}");
            if !fits {
                assert_eq!(st.reasons, vec![ERR_REASON]);
            }
        }
    }
}
