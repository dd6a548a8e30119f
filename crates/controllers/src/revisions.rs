//! ControllerRevisions for the controllers that keep their template history in them
//! (DaemonSet and StatefulSet, upstream `pkg/controller/history`): one revision
//! `<owner>-<hash>` per pod template, whose `data` is the strategic-merge patch that
//! restores the template (`{"spec":{"template":{..., "$patch":"replace"}}}`, which is what
//! `kubectl rollout undo` applies), numbered so the current template has the highest
//! number; history beyond `revisionHistoryLimit` pruned, never a revision a live pod runs.
//!
//! Moved here from the DaemonSet controller when the StatefulSet controller needed the
//! same; `decide_revision` and `prune` decide, `ensure` acts.

use std::collections::BTreeMap;

use informers::Informer;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::deployment::revision::pod_template_hash;
use crate::replicaset::is_status;
use crate::replicaset::podutil;

/// The label naming a pod's (and a revision's) template hash, as upstream.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// The owner whose template is to be recorded.
pub struct Owner<'a> {
    /// "DaemonSet" or "StatefulSet" (apps/v1).
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    pub template: &'a PodTemplateSpec,
    pub collision_count: Option<i32>,
    /// `spec.revisionHistoryLimit` (upstream default 10).
    pub history_limit: i32,
    /// Extra annotations for a new revision (upstream copies the StatefulSet's own).
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Failure of one API call, with what was being done.
#[derive(Debug)]
pub struct RevisionError {
    pub context: String,
    pub source: kube::Error,
}

/// The outcome of [`ensure`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ensured {
    /// The revision of the current template: its hash and name.
    Current { hash: String, name: String },
    /// Another template owns that name: the caller raises `status.collisionCount` and
    /// syncs again (upstream's collision handling).
    Collision,
}

/// What to do about the revision named after the current template.
#[derive(Debug, Clone, PartialEq)]
pub enum RevisionStep {
    Create {
        revision: i64,
    },
    /// It exists but an older number: make it the newest (a rollback to it).
    Raise {
        to: i64,
    },
    Collision,
    Keep,
}

/// The revision's data for a template: the patch that restores it.
pub fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut template_json = serde_json::to_value(template).unwrap_or_default();
    if let Some(obj) = template_json.as_object_mut() {
        obj.insert("$patch".into(), "replace".into());
    }
    serde_json::json!({"spec": {"template": template_json}})
}

/// The template a revision restores (None when its data is not such a patch).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = revision.data.0.get("spec")?.get("template")?.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

pub fn decide_revision(
    owned: &[&ControllerRevision],
    name: &str,
    data: &serde_json::Value,
) -> RevisionStep {
    let max = owned.iter().filter_map(|r| r.revision).max().unwrap_or(0);
    match owned
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
    {
        Some(existing) if &existing.data.0 != data => RevisionStep::Collision,
        Some(existing) if existing.revision.unwrap_or(0) < max => {
            RevisionStep::Raise { to: max + 1 }
        }
        Some(_) => RevisionStep::Keep,
        None => RevisionStep::Create { revision: max + 1 },
    }
}

/// Names of the revisions to delete: the oldest beyond `limit`, among those not in use.
pub fn prune(
    owned: &[&ControllerRevision],
    limit: i32,
    in_use: impl Fn(&ControllerRevision) -> bool,
) -> Vec<String> {
    let mut idle: Vec<&ControllerRevision> = owned.iter().copied().filter(|r| !in_use(r)).collect();
    idle.sort_by_key(|r| r.revision.unwrap_or(0));
    let excess = idle.len().saturating_sub(limit.max(0) as usize);
    idle.into_iter()
        .take(excess)
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

/// The revisions `owner_uid` controls, from the shared cache.
pub fn owned_by(
    revisions: &Informer<ControllerRevision>,
    namespace: &str,
    owner_uid: &str,
) -> Vec<std::sync::Arc<ControllerRevision>> {
    revisions
        .list_namespace(namespace)
        .into_iter()
        .filter(|r| podutil::controller_of(&r.metadata).is_some_and(|o| o.uid == owner_uid))
        .collect()
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH)
        .map(String::as_str)
}

/// Make sure the revision of the current template exists and carries the highest number,
/// then prune history, keeping revisions a pod in `pods` runs and those named in `keep`.
pub async fn ensure(
    client: &kube::Client,
    revisions: &Informer<ControllerRevision>,
    owner: &Owner<'_>,
    pods: &[&Pod],
    keep: &[&str],
) -> Result<Ensured, RevisionError> {
    let namespace = owner.meta.namespace.clone().unwrap_or_default();
    let owner_name = owner.meta.name.clone().unwrap_or_default();
    let uid = owner.meta.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let hash = pod_template_hash(owner.template, owner.collision_count);
    let name = format!("{owner_name}-{hash}");
    let data = revision_data(owner.template);
    let cached = owned_by(revisions, &namespace, &uid);
    let owned: Vec<&ControllerRevision> = cached.iter().map(|r| r.as_ref()).collect();
    let err = |context: String| move |source| RevisionError { context, source };
    match decide_revision(&owned, &name, &data) {
        RevisionStep::Collision => return Ok(Ensured::Collision),
        RevisionStep::Keep => {}
        RevisionStep::Raise { to } => {
            let patch = serde_json::json!({"revision": to});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(err(format!("raising revision {name} to {to}")))?;
        }
        RevisionStep::Create { revision } => {
            let mut labels = owner
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(CONTROLLER_REVISION_HASH.into(), hash.clone());
            let mut cr = ControllerRevision {
                revision: Some(revision),
                data: RawExtension(data),
                ..Default::default()
            };
            cr.metadata.name = Some(name.clone());
            cr.metadata.namespace = Some(namespace.clone());
            cr.metadata.labels = Some(labels);
            cr.metadata.annotations = owner.annotations.clone().filter(|a| !a.is_empty());
            cr.metadata.owner_references = Some(vec![podutil::controller_ref(
                "apps/v1", owner.kind, owner.meta,
            )]);
            match api.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                // Created by an earlier sync the cache has not shown yet.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(err(format!("creating revision {name}"))(e)),
            }
        }
    }
    let in_use = |r: &ControllerRevision| {
        let rname = r.metadata.name.as_deref().unwrap_or_default();
        rname == name
            || keep.contains(&rname)
            || r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
                .is_some_and(|h| pods.iter().any(|p| pod_hash(p) == Some(h.as_str())))
    };
    for rname in prune(&owned, owner.history_limit, in_use) {
        match api.delete(&rname, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(err(format!("pruning revision {rname}"))(e)),
        }
    }
    Ok(Ensured::Current { hash, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, number: i64, image: &str) -> ControllerRevision {
        let t = PodTemplateSpec {
            spec: Some(
                serde_json::from_value(
                    serde_json::json!({"containers": [{"name": "c", "image": image}]}),
                )
                .expect("pod spec"),
            ),
            ..Default::default()
        };
        let mut r = ControllerRevision {
            revision: Some(number),
            data: RawExtension(revision_data(&t)),
            ..Default::default()
        };
        r.metadata.name = Some(name.into());
        r
    }

    #[test]
    fn the_current_template_gets_the_highest_number() {
        let a = rev("web-a", 1, "nginx:1");
        let b = rev("web-b", 2, "nginx:2");
        let data_a = a.data.0.clone();
        let data_b = b.data.0.clone();
        let cases: Vec<(
            &str,
            Vec<&ControllerRevision>,
            &str,
            &serde_json::Value,
            RevisionStep,
        )> = vec![
            (
                "first revision",
                vec![],
                "web-a",
                &data_a,
                RevisionStep::Create { revision: 1 },
            ),
            (
                "new template",
                vec![&a],
                "web-b",
                &data_b,
                RevisionStep::Create { revision: 2 },
            ),
            (
                "unchanged",
                vec![&a, &b],
                "web-b",
                &data_b,
                RevisionStep::Keep,
            ),
            (
                "rolled back",
                vec![&a, &b],
                "web-a",
                &data_a,
                RevisionStep::Raise { to: 3 },
            ),
            (
                "same name, other data",
                vec![&a],
                "web-a",
                &data_b,
                RevisionStep::Collision,
            ),
        ];
        for (what, owned, name, data, want) in cases {
            assert_eq!(decide_revision(&owned, name, data), want, "{what}");
        }
    }

    #[test]
    fn pruning_keeps_the_limit_and_revisions_in_use() {
        let revs: Vec<ControllerRevision> =
            (1..=5).map(|i| rev(&format!("r{i}"), i, "x")).collect();
        let refs: Vec<&ControllerRevision> = revs.iter().collect();
        let cases: &[(i32, &[&str], &[&str])] = &[
            (10, &[], &[]),
            (2, &[], &["r1", "r2", "r3"]),
            (2, &["r1", "r5"], &["r2"]),
            (0, &["r5"], &["r1", "r2", "r3", "r4"]),
        ];
        for (limit, used, want) in cases {
            let got = prune(&refs, *limit, |r| {
                used.contains(&r.metadata.name.as_deref().unwrap_or_default())
            });
            assert_eq!(got, *want, "limit {limit}, in use {used:?}");
        }
    }

    #[test]
    fn a_revision_gives_back_its_template() {
        let r = rev("web-a", 1, "nginx:1");
        let t = template_of(&r).expect("template");
        assert_eq!(
            t.spec.expect("spec").containers[0].image.as_deref(),
            Some("nginx:1")
        );
    }
}
