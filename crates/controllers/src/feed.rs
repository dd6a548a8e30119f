//! Informer-to-queue wiring shared by controllers that key their work queue by the
//! object they own (a Job, a CronJob): every change of that kind queues its own key, and
//! every change of the kind it controls (pods of a Job, Jobs of a CronJob) queues the key
//! of the controlling owner. A `Resync` (the subscription lagged) queues every key again.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use informers::{Change, Informer, ObjectKey, Subscription, WorkQueue};

/// The key of the object's controller (`controller: true` ownerReference) when it is of
/// `kind` in `api_version`; the owner lives in the object's namespace.
pub fn controller_key(meta: &ObjectMeta, api_version: &str, kind: &str) -> Option<ObjectKey> {
    let owner = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    (owner.kind == kind && owner.api_version == api_version)
        .then(|| ObjectKey::new(meta.namespace.as_deref().unwrap_or(""), &owner.name))
}

/// Queue the key of every changed object of the controller's own kind, until the
/// subscription ends.
pub async fn own_changes<K>(
    mut changes: Subscription<K>,
    informer: Informer<K>,
    queue: WorkQueue<ObjectKey>,
) where
    K: Resource + Clone + Send + Sync + 'static,
{
    while let Some(change) = changes.recv().await {
        match change {
            Change::Applied(o) | Change::Deleted(o) => queue.add(ObjectKey::of(o.as_ref())),
            Change::Resync => informer
                .list()
                .iter()
                .for_each(|o| queue.add(ObjectKey::of(o.as_ref()))),
        }
    }
}

/// Queue the owner's key (from `owner_of`) of every changed dependent, until the
/// subscription ends.
pub async fn owner_changes<D>(
    mut changes: Subscription<D>,
    informer: Informer<D>,
    queue: WorkQueue<ObjectKey>,
    owner_of: fn(&D) -> Option<ObjectKey>,
) where
    D: kube::Resource + Clone + Send + Sync + 'static,
{
    while let Some(change) = changes.recv().await {
        match change {
            Change::Applied(d) | Change::Deleted(d) => {
                if let Some(key) = owner_of(&d) {
                    queue.add(key);
                }
            }
            Change::Resync => informer
                .list()
                .iter()
                .filter_map(|d: &Arc<D>| owner_of(d))
                .for_each(|k| queue.add(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn controller_key_takes_the_controlling_owner_of_the_named_kind() {
        let owner = |kind: &str, api: &str, controller: Option<bool>| OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            name: "pi".into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        };
        // (owner references, expected key)
        let cases = [
            (
                vec![owner("Job", "batch/v1", Some(true))],
                Some(("ns", "pi")),
            ),
            (vec![owner("Job", "batch/v1", None)], None),
            (vec![owner("Job", "batch/v2", Some(true))], None),
            (vec![owner("CronJob", "batch/v1", Some(true))], None),
            (vec![], None),
        ];
        for (refs, want) in cases {
            let meta = ObjectMeta {
                namespace: Some("ns".into()),
                owner_references: Some(refs.clone()),
                ..Default::default()
            };
            assert_eq!(
                controller_key(&meta, "batch/v1", "Job"),
                want.map(|(ns, n)| ObjectKey::new(ns, n)),
                "{refs:?}"
            );
        }
    }
}
