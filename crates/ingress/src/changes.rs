//! Which watch events can change what the controller builds. Each watched kind has a
//! projection: the part of an object the routing table, the certificates or the published
//! status use (for a Node only the address it contributes to `status.loadBalancer`). An
//! event whose object projects to what it projected before is dropped, so a Node's
//! heartbeat (its status is re-posted every few seconds), a Service's status or an
//! object's metadata churn rebuild nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use kube::runtime::watcher::Event;

use crate::status;

/// The part of an object that matters to the controller.
pub trait Relevant: kube::Resource + Sized {
    type Part: PartialEq + Send + 'static;
    fn relevant(&self) -> Self::Part;
}

impl Relevant for Ingress {
    // The class annotation, the rules, the age (older Ingresses win conflicts) and the
    // status the controller keeps up to date.
    type Part = (
        Option<BTreeMap<String, String>>,
        Option<k8s_openapi::api::networking::v1::IngressSpec>,
        Option<k8s_openapi::api::networking::v1::IngressStatus>,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    );
    fn relevant(&self) -> Self::Part {
        (
            self.metadata.annotations.clone(),
            self.spec.clone(),
            self.status.clone(),
            self.metadata.creation_timestamp.clone(),
        )
    }
}

impl Relevant for IngressClass {
    type Part = (
        Option<BTreeMap<String, String>>,
        Option<k8s_openapi::api::networking::v1::IngressClassSpec>,
    );
    fn relevant(&self) -> Self::Part {
        (self.metadata.annotations.clone(), self.spec.clone())
    }
}

impl Relevant for Service {
    type Part = Option<k8s_openapi::api::core::v1::ServiceSpec>;
    fn relevant(&self) -> Self::Part {
        self.spec.clone()
    }
}

impl Relevant for EndpointSlice {
    type Part = (
        Option<BTreeMap<String, String>>,
        String,
        Option<Vec<k8s_openapi::api::discovery::v1::Endpoint>>,
        Option<Vec<k8s_openapi::api::discovery::v1::EndpointPort>>,
    );
    fn relevant(&self) -> Self::Part {
        (
            self.metadata.labels.clone(),
            self.address_type.clone(),
            self.endpoints.clone(),
            self.ports.clone(),
        )
    }
}

impl Relevant for Secret {
    type Part = (Option<String>, Option<BTreeMap<String, ByteString>>);
    fn relevant(&self) -> Self::Part {
        (self.type_.clone(), self.data.clone())
    }
}

impl Relevant for Node {
    type Part = Option<String>;
    fn relevant(&self) -> Self::Part {
        status::published_address(self)
    }
}

/// What each watched object last contributed, by namespace/name.
pub struct Tracker<K: Relevant> {
    parts: HashMap<(String, String), K::Part>,
    /// Objects seen during a relist, to find those gone at its end.
    relisted: HashSet<(String, String)>,
}

impl<K: Relevant> Default for Tracker<K> {
    fn default() -> Self {
        Tracker {
            parts: HashMap::new(),
            relisted: HashSet::new(),
        }
    }
}

fn key_of<K: kube::Resource>(obj: &K) -> (String, String) {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

impl<K: Relevant> Tracker<K> {
    /// Records the event; true if it may change what the controller builds.
    pub fn observe(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(obj) => self.put(obj),
            Event::Delete(obj) => self.parts.remove(&key_of(obj)).is_some(),
            Event::Init => {
                self.relisted.clear();
                false
            }
            Event::InitApply(obj) => {
                self.relisted.insert(key_of(obj));
                self.put(obj);
                false
            }
            // The end of a (re)list: objects not listed are gone. Always a change: the
            // first one is what the controller waits for before its first build.
            Event::InitDone => {
                let listed = std::mem::take(&mut self.relisted);
                self.parts.retain(|k, _| listed.contains(k));
                true
            }
        }
    }

    fn put(&mut self, obj: &K) -> bool {
        let key = key_of(obj);
        let part = obj.relevant();
        if self.parts.get(&key) == Some(&part) {
            return false;
        }
        self.parts.insert(key, part);
        true
    }
}

/// For tests and diagnostics: how many objects a tracker knows.
pub fn known<K: Relevant>(t: &Tracker<K>) -> usize {
    t.parts.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ip: &str, ready: &str, heartbeat: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": ready,
                                "lastHeartbeatTime": heartbeat}],
            }
        }))
        .unwrap()
    }

    #[test]
    fn node_heartbeats_change_nothing_readiness_and_addresses_do() {
        let mut t = Tracker::<Node>::default();
        assert!(!t.observe(&Event::Init));
        assert!(!t.observe(&Event::InitApply(node(
            "10.0.0.1",
            "True",
            "2026-01-01T00:00:00Z"
        ))));
        assert!(t.observe(&Event::InitDone));
        assert!(!t.observe(&Event::Apply(node(
            "10.0.0.1",
            "True",
            "2026-01-01T00:00:10Z"
        ))));
        assert!(t.observe(&Event::Apply(node(
            "10.0.0.1",
            "False",
            "2026-01-01T00:00:20Z"
        ))));
        assert!(!t.observe(&Event::Apply(node(
            "10.0.0.1",
            "Unknown",
            "2026-01-01T00:00:30Z"
        ))));
        assert!(t.observe(&Event::Apply(node(
            "10.0.0.1",
            "True",
            "2026-01-01T00:00:40Z"
        ))));
        assert!(t.observe(&Event::Apply(node(
            "10.0.0.2",
            "True",
            "2026-01-01T00:00:50Z"
        ))));
        assert!(t.observe(&Event::Delete(node(
            "10.0.0.2",
            "True",
            "2026-01-01T00:00:50Z"
        ))));
        assert_eq!(known(&t), 0);
    }

    #[test]
    fn a_services_status_changes_nothing_its_spec_does() {
        let svc = |ports: serde_json::Value, lb: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": "s", "namespace": "ns", "resourceVersion": lb},
                "spec": {"ports": ports},
                "status": {"loadBalancer": {"ingress": [{"ip": lb}]}},
            }))
            .unwrap()
        };
        let mut t = Tracker::<Service>::default();
        assert!(t.observe(&Event::Apply(svc(json!([{"port": 80}]), "1"))));
        assert!(!t.observe(&Event::Apply(svc(json!([{"port": 80}]), "2"))));
        assert!(t.observe(&Event::Apply(svc(json!([{"port": 81}]), "3"))));
    }

    #[test]
    fn a_relist_drops_objects_no_longer_there() {
        let mut t = Tracker::<Node>::default();
        assert!(t.observe(&Event::Apply(node(
            "10.0.0.1",
            "True",
            "2026-01-01T00:00:00Z"
        ))));
        t.observe(&Event::Init);
        assert!(t.observe(&Event::InitDone));
        assert_eq!(known(&t), 0);
    }
}
