//! VolumeBinding (upstream `volumebinding`): a pod's PersistentVolumeClaims decide where it
//! may go. PreFilter rejects a pod whose claim is missing, being deleted, or unbound in
//! Immediate mode; Filter rejects nodes that a bound volume's node affinity excludes, and,
//! for unbound WaitForFirstConsumer claims, nodes where no Available volume fits and the
//! class cannot provision. [`plan_binding`] is the PreBind decision once a node is chosen:
//! pre-bind the matching static volume (its `claimRef`), or set
//! `volume.kubernetes.io/selected-node` on the claim so the provisioner makes one there;
//! the scheduler's run loop then waits for the PV controller to finish binding before it
//! binds the pod (upstream's `bindTimeoutSeconds`, 600 s).
//!
//! [`Volumes`] is the part of the snapshot this plugin reads, fed from the shared
//! informers for claims, volumes and classes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::volumes::{claim_class, find_matching_volume, ANN_SELECTED_NODE};
use informers::ObjectKey;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, Snapshot, State, Status};
use crate::plugins::node_affinity::selector_matches;

pub const NAME: &str = "VolumeBinding";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// A class whose volumes are only ever made by hand.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Claims, volumes and classes as the scheduler's informers last saw them.
#[derive(Debug, Default, Clone)]
pub struct Volumes {
    pub claims: HashMap<ObjectKey, Arc<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// The claim names a pod uses (`persistentVolumeClaim`, and `<pod>-<volume>` for generic
/// ephemeral volumes).
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            _ => None,
        })
        .collect()
}

/// What PreFilter found for one pod.
#[derive(Debug)]
struct PodVolumes {
    volumes: Arc<Volumes>,
    /// Volumes of bound claims (None: the claim names a volume that does not exist).
    bound: Vec<Option<Arc<PersistentVolume>>>,
    /// Unbound claims of WaitForFirstConsumer classes.
    delayed: Vec<Arc<PersistentVolumeClaim>>,
}

fn volume_fits_node(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    selector_matches(required, node.labels(), &node.name)
}

fn class_of<'a>(volumes: &'a Volumes, claim: &PersistentVolumeClaim) -> Option<&'a StorageClass> {
    let name = claim_class(claim);
    (!name.is_empty())
        .then(|| volumes.classes.get(name))
        .flatten()
        .map(Arc::as_ref)
}

fn is_delayed(volumes: &Volumes, claim: &PersistentVolumeClaim) -> bool {
    class_of(volumes, claim).and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer")
}

/// Whether the claim's class could provision a volume on this node (its provisioner is
/// not the "manual only" one and its allowedTopologies, if any, admit the node).
fn can_provision_on(volumes: &Volumes, claim: &PersistentVolumeClaim, node: &NodeInfo) -> bool {
    let Some(class) = class_of(volumes, claim) else {
        return false;
    };
    if class.provisioner == NO_PROVISIONER {
        return false;
    }
    match class.allowed_topologies.as_deref() {
        None | Some([]) => true,
        Some(terms) => terms.iter().any(|t| {
            t.match_label_expressions.iter().flatten().all(|r| {
                node.labels()
                    .get(&r.key)
                    .is_some_and(|v| r.values.contains(v))
            })
        }),
    }
}

pub struct VolumeBinding;

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, pod: &PodInfo, snapshot: &Snapshot) -> Result<State, Status> {
        let names = pod_claim_names(&pod.pod);
        if names.is_empty() {
            return Ok(None);
        }
        let volumes = snapshot.volumes.clone();
        let mut bound = Vec::new();
        let mut delayed = Vec::new();
        for name in names {
            let key = ObjectKey::new(pod.namespace(), &name);
            let Some(claim) = volumes.claims.get(&key) else {
                return Err(Status::unresolvable(
                    NAME,
                    format!("persistentvolumeclaim \"{name}\" not found"),
                ));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(Status::unresolvable(
                    NAME,
                    format!("persistentvolumeclaim \"{name}\" is being deleted"),
                ));
            }
            let volume_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or("");
            if !volume_name.is_empty() {
                bound.push(volumes.volumes.get(volume_name).cloned());
            } else if is_delayed(&volumes, claim) {
                delayed.push(claim.clone());
            } else {
                return Err(Status::unresolvable(NAME, ERR_UNBOUND_IMMEDIATE));
            }
        }
        Ok(Some(Box::new(PodVolumes {
            volumes,
            bound,
            delayed,
        })))
    }

    fn filter(&self, state: &State, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(pv) = state.as_ref().and_then(|s| s.downcast_ref::<PodVolumes>()) else {
            return Status::success();
        };
        for volume in &pv.bound {
            match volume {
                None => return Status::unresolvable(NAME, ERR_PV_NOT_EXIST),
                Some(v) if !volume_fits_node(v, node) => {
                    return Status::unresolvable(NAME, ERR_NODE_CONFLICT)
                }
                Some(_) => {}
            }
        }
        for claim in &pv.delayed {
            let fits = |v: &PersistentVolume| volume_fits_node(v, node);
            let found = find_matching_volume(
                claim,
                pv.volumes.volumes.values().map(Arc::as_ref),
                true,
                Some(&fits),
            )
            .is_some();
            if !found && !can_provision_on(&pv.volumes, claim, node) {
                return Status::unresolvable(NAME, ERR_BIND_CONFLICT);
            }
        }
        Status::success()
    }
}

/// One PreBind write for a WaitForFirstConsumer claim once the node is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindStep {
    /// Point this Available volume's claimRef at the claim (the PV controller finishes).
    PreBindVolume { volume: String, claim: ObjectKey },
    /// Annotate the claim with the node so its provisioner makes a volume there.
    SelectNode { claim: ObjectKey, node: String },
}

/// PreBind's decision: what to write for the pod's unbound delayed claims on `node`, and
/// which claims must then be bound before the pod is. Empty when the pod has none.
pub fn plan_binding(
    pod: &PodInfo,
    node: &NodeInfo,
    volumes: &Volumes,
) -> (Vec<BindStep>, Vec<ObjectKey>) {
    let mut steps = Vec::new();
    let mut wait_for = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for name in pod_claim_names(&pod.pod) {
        let key = ObjectKey::new(pod.namespace(), &name);
        let Some(claim) = volumes.claims.get(&key) else {
            continue;
        };
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if !unbound || !is_delayed(volumes, claim) {
            continue;
        }
        wait_for.push(key.clone());
        let fits = |v: &PersistentVolume| volume_fits_node(v, node);
        let candidates = volumes
            .volumes
            .values()
            .map(Arc::as_ref)
            .filter(|v| !taken.iter().any(|t| Some(t) == v.metadata.name.as_ref()));
        let pre_bound_already = |v: &PersistentVolume| {
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.is_some())
        };
        match find_matching_volume(claim, candidates, true, Some(&fits)) {
            Some(v) => {
                let name = v.metadata.name.clone().unwrap_or_default();
                taken.push(name.clone());
                if !pre_bound_already(v) {
                    steps.push(BindStep::PreBindVolume {
                        volume: name,
                        claim: key,
                    });
                }
            }
            None => {
                let selected = claim
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANN_SELECTED_NODE));
                if selected.map(String::as_str) != Some(node.name.as_str()) {
                    steps.push(BindStep::SelectNode {
                        claim: key,
                        node: node.name.clone(),
                    });
                }
            }
        }
    }
    (steps, wait_for)
}

/// Whether the PV controller has finished binding a claim (upstream `IsPVCFullyBound`
/// plus the volume pointing back at it).
pub fn claim_fully_bound(claim: &PersistentVolumeClaim, volume: Option<&PersistentVolume>) -> bool {
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let completed = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(api::volumes::ANN_BIND_COMPLETED));
    !volume_name.is_empty()
        && completed
        && volume.is_some_and(|v| api::volumes::is_volume_bound_to_claim(v, claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{schedule, Cursor, TieBreaker};
    use crate::plugins::default_profile;
    use crate::plugins::testing::*;
    use serde_json::{json, Value};

    fn claim(name: &str, extra: Value) -> Arc<PersistentVolumeClaim> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path"}
        });
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).expect("pvc"))
    }

    fn volume(name: &str, extra: Value) -> Arc<PersistentVolume> {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "storageClassName": "local-path", "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}
        });
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).expect("pv"))
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}))
                .expect("class"),
        )
    }

    fn pinned(node: &str) -> Value {
        json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}})
    }

    fn world(claims: Vec<Arc<PersistentVolumeClaim>>, pvs: Vec<Arc<PersistentVolume>>) -> Volumes {
        let mut v = Volumes::default();
        for c in claims {
            v.claims.insert(ObjectKey::of(c.as_ref()), c);
        }
        for p in pvs {
            v.volumes
                .insert(p.metadata.name.clone().unwrap_or_default(), p);
        }
        for c in [
            class(
                "local-path",
                "WaitForFirstConsumer",
                "rancher.io/local-path",
            ),
            class("manual", "Immediate", "kubernetes.io/no-provisioner"),
            class("manual-wffc", "WaitForFirstConsumer", NO_PROVISIONER),
        ] {
            v.classes
                .insert(c.metadata.name.clone().unwrap_or_default(), c);
        }
        v
    }

    fn uses(claim: &str) -> Value {
        json!({"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})
    }

    fn decide(volumes: Volumes, incoming: Value) -> Result<String, String> {
        let mut snap = Snapshot::build(vec![node("n1", json!({})), node("n2", json!({}))], vec![]);
        snap.volumes = Arc::new(volumes);
        let info = PodInfo::new(Arc::new(pod("p", incoming)));
        schedule(
            &default_profile(),
            &info,
            &snap,
            &mut Cursor::default(),
            &mut TieBreaker::new(1),
        )
        .map_err(|e| e.message())
    }

    #[test]
    fn filters_as_upstream() {
        let not_helpful2 =
            "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
        let bound = claim(
            "bound",
            json!({"spec": {"volumeName": "pv-n2", "storageClassName": "manual"}}),
        );
        let cases: Vec<(&str, Volumes, Value, Result<&str, String>)> = vec![
            ("missing claim", world(vec![], vec![]), uses("data"),
             Err(format!("0/2 nodes are available: persistentvolumeclaim \"data\" not found. {not_helpful2}"))),
            ("unbound immediate claim", world(vec![claim("data", json!({"spec": {"storageClassName": "manual"}}))], vec![]), uses("data"),
             Err(format!("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. {not_helpful2}"))),
            ("claim being deleted", world(vec![claim("data", json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}))], vec![]), uses("data"),
             Err(format!("0/2 nodes are available: persistentvolumeclaim \"data\" is being deleted. {not_helpful2}"))),
            ("bound volume pinned to n2", world(vec![bound.clone()], vec![volume("pv-n2", pinned("n2"))]), uses("bound"), Ok("n2")),
            ("bound volume pinned to a node that is not there", world(vec![bound.clone()], vec![volume("pv-n2", pinned("n9"))]), uses("bound"),
             Err(format!("0/2 nodes are available: 2 node(s) had volume node affinity conflict. {not_helpful2}"))),
            ("WFFC local-path: any node", world(vec![claim("data", json!({}))], vec![]), uses("data"), Ok("*")),
            ("WFFC static only: the node with a volume", world(vec![claim("data", json!({"spec": {"storageClassName": "manual-wffc"}}))], vec![volume("local-n1", json!({"spec": {"storageClassName": "manual-wffc"}}).pipe_merge(pinned("n1")))]), uses("data"), Ok("n1")),
            ("WFFC static only, nothing fits", world(vec![claim("data", json!({"spec": {"storageClassName": "manual-wffc"}}))], vec![]), uses("data"),
             Err(format!("0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind. {not_helpful2}"))),
        ];
        for (name, volumes, incoming, want) in cases {
            let got = decide(volumes, incoming);
            match (&got, &want) {
                (Ok(_), Ok("*")) => {}
                _ => assert_eq!(got, want.map(String::from), "{name}"),
            }
        }
    }

    trait PipeMerge {
        fn pipe_merge(self, extra: Value) -> Value;
    }
    impl PipeMerge for Value {
        fn pipe_merge(mut self, extra: Value) -> Value {
            merge(&mut self, extra);
            self
        }
    }

    #[test]
    fn prebind_plans_selected_node_or_static_volume() {
        let n1 = node_info(node("n1", json!({})), vec![]);
        let p = info(pod("p", uses("data")));
        let (steps, wait) = plan_binding(&p, &n1, &world(vec![claim("data", json!({}))], vec![]));
        assert_eq!(
            steps,
            vec![BindStep::SelectNode {
                claim: ObjectKey::new("default", "data"),
                node: "n1".into()
            }]
        );
        assert_eq!(wait, vec![ObjectKey::new("default", "data")]);
        let (steps, _) = plan_binding(
            &p,
            &n1,
            &world(
                vec![claim("data", json!({}))],
                vec![
                    volume("small", pinned("n1")),
                    volume("elsewhere", pinned("n2")),
                ],
            ),
        );
        assert_eq!(
            steps,
            vec![BindStep::PreBindVolume {
                volume: "small".into(),
                claim: ObjectKey::new("default", "data")
            }]
        );
        let (steps, wait) = plan_binding(
            &p,
            &n1,
            &world(
                vec![claim("data", json!({"spec": {"volumeName": "x"}}))],
                vec![],
            ),
        );
        assert!(
            steps.is_empty() && wait.is_empty(),
            "bound claims need nothing"
        );
    }
}
