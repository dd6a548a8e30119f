//! Pieces the workload controllers share (Deployment, ReplicaSet, DaemonSet: each owns a
//! kind that selects and controls another): which owners a dependent's change concerns,
//! and recording an event on the owner.

use std::sync::Arc;

use informers::ObjectKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use crate::events::Recorder;
use crate::replicaset::podutil;

/// The owners a change of a dependent (`meta`) concerns: its controller when that is of
/// `owner_kind` (none when another kind controls it), or, for an orphan, every
/// candidate of its namespace whose selector matches its labels (it may be adopted).
pub fn owners_of<O>(
    meta: &ObjectMeta,
    owner_kind: &str,
    candidates_in_namespace: &[Arc<O>],
    selector_of: fn(&O) -> &LabelSelector,
) -> Vec<ObjectKey>
where
    O: Resource,
{
    let ns = meta.namespace.clone().unwrap_or_default();
    if let Some(owner) = podutil::controller_of(meta) {
        return if owner.kind == owner_kind {
            vec![ObjectKey::new(&ns, &owner.name)]
        } else {
            Vec::new()
        };
    }
    candidates_in_namespace
        .iter()
        .filter(|o| podutil::selector_matches(selector_of(o), meta.labels.as_ref()))
        .map(|o| ObjectKey::of(o.as_ref()))
        .collect()
}

/// Record an event on `obj` without waiting (see [`Recorder::record`]: spam-filtered,
/// written in the background; a failed write is logged there, never stops a sync).
pub fn record<K>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    recorder.record(ev, obj.object_ref(&()));
}
