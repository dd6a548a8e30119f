//! NodePorts: two pods cannot claim the same host port and protocol on one node (upstream
//! `NodePorts`; 0.0.0.0 or an empty hostIP conflicts with every address).

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, State, Status};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

fn conflicts(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    let any = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
    a.0 == b.0 && a.2 == b.2 && (any(&a.1) || any(&b.1) || a.1 == b.1)
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn filter(&self, _: &State, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.host_ports.is_empty() {
            return Status::success();
        }
        let taken = node
            .pods
            .iter()
            .flat_map(|p| p.host_ports.iter())
            .any(|used| pod.host_ports.iter().any(|want| conflicts(want, used)));
        if taken {
            Status::unschedulable(NAME, ERR_REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn with_port(port: i32, ip: &str, proto: &str) -> serde_json::Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}})
    }

    #[test]
    fn host_port_conflicts() {
        let cases = [
            (
                "same port",
                with_port(8080, "", "TCP"),
                with_port(8080, "", "TCP"),
                false,
            ),
            (
                "other port",
                with_port(8080, "", "TCP"),
                with_port(8081, "", "TCP"),
                true,
            ),
            (
                "other protocol",
                with_port(8080, "", "TCP"),
                with_port(8080, "", "UDP"),
                true,
            ),
            (
                "different ips",
                with_port(8080, "10.0.0.1", "TCP"),
                with_port(8080, "10.0.0.2", "TCP"),
                true,
            ),
            (
                "wildcard ip",
                with_port(8080, "0.0.0.0", "TCP"),
                with_port(8080, "10.0.0.2", "TCP"),
                false,
            ),
        ];
        for (name, existing, incoming, fits) in cases {
            let n = node_info(node("n", json!({})), vec![pod("old", existing)]);
            assert_eq!(
                NodePorts
                    .filter(&None, &info(pod("new", incoming)), &n)
                    .is_success(),
                fits,
                "{name}"
            );
        }
    }
}
