//! The scheduler's cache: which pods count on which node, including pods the scheduler has
//! *assumed* onto a node before the API has confirmed the binding (so the next decision
//! already sees them and throughput does not wait for round trips). It owns the
//! [`Snapshot`] the plugins read. Pure state, fed by the informers and the binder.

use std::collections::HashMap;
use std::sync::Arc;

use informers::ObjectKey;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::framework::{PodInfo, Snapshot};

#[derive(Debug)]
struct Counted {
    node: String,
    info: Arc<PodInfo>,
    /// Placed by us, binding not yet seen through the watch.
    assumed: bool,
}

/// What an informer change meant for the cache (the caller turns it into queue events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEffect {
    None,
    /// A pod now counts on a node (newly, or changed there).
    Placed,
    /// A pod no longer counts on any node.
    Left,
}

#[derive(Debug, Default)]
pub struct Cache {
    pub snapshot: Snapshot,
    pods: HashMap<ObjectKey, Counted>,
}

/// Pods that finished no longer hold resources (upstream's scheduler watches assigned
/// pods with `status.phase!=Succeeded,status.phase!=Failed`).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_assumed(&self, key: &ObjectKey) -> bool {
        self.pods.get(key).is_some_and(|c| c.assumed)
    }

    pub fn assumed_count(&self) -> usize {
        self.pods.values().filter(|c| c.assumed).count()
    }

    fn uncount(&mut self, key: &ObjectKey) -> bool {
        match self.pods.remove(key) {
            Some(c) => {
                self.snapshot.remove_pod(&c.node, key);
                true
            }
            None => false,
        }
    }

    fn count(&mut self, node: &str, info: Arc<PodInfo>, assumed: bool) {
        self.snapshot.add_pod(node, info.clone());
        self.pods.insert(
            info.key.clone(),
            Counted {
                node: node.to_string(),
                info,
                assumed,
            },
        );
    }

    /// The scheduler decided: the pod counts on `node` from now on.
    pub fn assume(&mut self, node: &str, info: Arc<PodInfo>) {
        self.uncount(&info.key.clone());
        self.count(node, info, true);
    }

    /// Binding failed: the assumption is withdrawn (unless the watch has confirmed it).
    pub fn forget(&mut self, key: &ObjectKey) {
        if self.is_assumed(key) {
            self.uncount(key);
        }
    }

    /// A pod as the API now has it.
    pub fn pod_applied(&mut self, pod: &Arc<Pod>) -> PodEffect {
        let key = ObjectKey::of(pod.as_ref());
        match node_name(pod) {
            Some(node) if !is_terminal(pod) => {
                if let Some(c) = self.pods.get(&key) {
                    let same = c.node == node
                        && !c.assumed
                        && c.info.pod.metadata.resource_version == pod.metadata.resource_version;
                    if same {
                        return PodEffect::None;
                    }
                }
                self.uncount(&key);
                self.count(node, Arc::new(PodInfo::new(pod.clone())), false);
                PodEffect::Placed
            }
            Some(_) => {
                if self.uncount(&key) {
                    PodEffect::Left
                } else {
                    PodEffect::None
                }
            }
            None => {
                // Not bound in the API. An assumed pod stays counted until its binding is
                // echoed or fails.
                if self.is_assumed(&key) {
                    return PodEffect::None;
                }
                if self.uncount(&key) {
                    PodEffect::Left
                } else {
                    PodEffect::None
                }
            }
        }
    }

    pub fn pod_deleted(&mut self, key: &ObjectKey) -> PodEffect {
        if self.uncount(key) {
            PodEffect::Left
        } else {
            PodEffect::None
        }
    }

    /// Relist: rebuild from the informer's pods, keeping assumptions the API has not yet
    /// confirmed or refuted.
    pub fn rebuild_pods(&mut self, pods: &[Arc<Pod>]) {
        let assumed: Vec<(String, Arc<PodInfo>)> = self
            .pods
            .values()
            .filter(|c| c.assumed)
            .map(|c| (c.node.clone(), c.info.clone()))
            .collect();
        let keys: Vec<ObjectKey> = self.pods.keys().cloned().collect();
        for k in keys {
            self.uncount(&k);
        }
        let mut present = std::collections::HashSet::new();
        for p in pods {
            present.insert(ObjectKey::of(p.as_ref()));
            self.pod_applied(p);
        }
        for (node, info) in assumed {
            if present.contains(&info.key) && !self.pods.contains_key(&info.key) {
                self.count(&node, info, true);
            }
        }
    }

    pub fn node_applied(&mut self, node: Arc<Node>) {
        self.snapshot.set_node(node);
    }

    pub fn node_deleted(&mut self, name: &str) {
        self.snapshot.remove_node(name);
    }

    pub fn namespace_applied(&mut self, ns: &Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        self.snapshot.namespace_labels.insert(name, labels);
    }

    pub fn namespace_deleted(&mut self, name: &str) {
        self.snapshot.namespace_labels.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, rv: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": rv},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}))
            .expect("pod"),
        )
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "pods": "10"}}})).expect("node"))
    }

    fn cpu_on(c: &Cache, node: &str) -> i64 {
        c.snapshot
            .node(node)
            .map(|n| n.requested.milli_cpu)
            .unwrap_or(-1)
    }

    #[test]
    fn an_assumed_pod_counts_until_the_watch_confirms_it() {
        let mut c = Cache::new();
        c.node_applied(node("n1"));
        let p = pod("p", None, "1");
        c.assume("n1", Arc::new(PodInfo::new(p.clone())));
        assert_eq!(cpu_on(&c, "n1"), 1000);
        // The watch still shows the pod unbound (an older event): it stays counted.
        assert_eq!(c.pod_applied(&p), PodEffect::None);
        assert_eq!(cpu_on(&c, "n1"), 1000);
        // The binding arrives.
        assert_eq!(c.pod_applied(&pod("p", Some("n1"), "2")), PodEffect::Placed);
        assert!(!c.is_assumed(&ObjectKey::new("d", "p")));
        assert_eq!(cpu_on(&c, "n1"), 1000);
    }

    #[test]
    fn a_failed_binding_forgets_the_assumption() {
        let mut c = Cache::new();
        c.node_applied(node("n1"));
        c.assume("n1", Arc::new(PodInfo::new(pod("p", None, "1"))));
        c.forget(&ObjectKey::new("d", "p"));
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn finished_and_deleted_pods_free_their_node() {
        let mut c = Cache::new();
        c.node_applied(node("n1"));
        c.pod_applied(&pod("a", Some("n1"), "1"));
        c.pod_applied(&pod("b", Some("n1"), "1"));
        assert_eq!(cpu_on(&c, "n1"), 2000);
        let mut done = (*pod("a", Some("n1"), "2")).clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        assert_eq!(c.pod_applied(&Arc::new(done)), PodEffect::Left);
        assert_eq!(c.pod_deleted(&ObjectKey::new("d", "b")), PodEffect::Left);
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn pods_on_an_unknown_node_are_kept_but_the_node_is_not_offered() {
        let mut c = Cache::new();
        c.pod_applied(&pod("a", Some("ghost"), "1"));
        assert_eq!(c.snapshot.num_nodes(), 0);
        c.node_applied(node("ghost"));
        assert_eq!(c.snapshot.num_nodes(), 1);
        assert_eq!(cpu_on(&c, "ghost"), 1000);
    }
}
