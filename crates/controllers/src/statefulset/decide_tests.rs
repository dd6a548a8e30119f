//! Tables for the StatefulSet decisions.

use super::*;
use serde_json::json;

const OLD: &str = "web-old";
const NEW: &str = "web-new";

fn set(replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 2},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}],
                                  "volumes": [{"name": "cfg", "emptyDir": {}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "data"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                         "resources": {"requests": {"storage": "1Gi"}}}}],
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "podManagementPolicy": "OrderedReady",
        }
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            spec.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("statefulset")
}

/// A pod of the set: `state` is "ready", "running" (not ready), "failed", "terminating".
fn pod(ordinal: i32, rev: &str, state: &str) -> Pod {
    let hash = rev.trim_start_matches("web-");
    let (phase, ready) = match state {
        "ready" | "terminating" => ("Running", "True"),
        "running" => ("Running", "False"),
        "failed" => ("Failed", "False"),
        other => panic!("state {other}"),
    };
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("web-{ordinal}"), "uid": format!("pod-uid-{ordinal}"),
                     "labels": {"app": "web", CONTROLLER_REVISION_HASH: hash},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "name": "web", "uid": "set-uid", "controller": true}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
    }))
    .expect("pod");
    if state == "terminating" {
        p.metadata.deletion_timestamp = Some(podutil::to_time(Utc::now()));
    }
    p
}

fn claims_for(ordinals: &[i32]) -> Vec<PersistentVolumeClaim> {
    ordinals
        .iter()
        .map(|o| {
            let mut c = PersistentVolumeClaim::default();
            c.metadata.name = Some(format!("www-web-{o}"));
            c
        })
        .collect()
}

fn run_plan(set: &StatefulSet, pods: &[Pod], claims: &[PersistentVolumeClaim]) -> Vec<Action> {
    let refs: Vec<&Pod> = pods.iter().collect();
    let claims: HashMap<String, &PersistentVolumeClaim> = claims
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
        .collect();
    plan(
        set,
        &Observed {
            pods: &refs,
            claims: &claims,
            current_revision: OLD,
            update_revision: NEW,
            now: Utc::now(),
        },
    )
}

fn create(ordinal: i32, revision: Revision) -> Action {
    Action::CreatePod { ordinal, revision }
}

fn delete(ordinal: i32, why: DeleteWhy) -> Action {
    Action::DeletePod {
        name: format!("web-{ordinal}"),
        why,
    }
}

fn claims(ordinal: i32) -> Action {
    Action::CreateClaims {
        ordinal,
        templates: vec!["www".into()],
    }
}

/// (what, set, pods, ordinals whose claim exists, wanted actions)
type Case = (&'static str, StatefulSet, Vec<Pod>, Vec<i32>, Vec<Action>);

#[test]
fn ordered_ready_and_parallel_pod_management() {
    use DeleteWhy::{Finished, ScaleDown};
    use Revision::{Current, Update};
    let parallel = json!({"podManagementPolicy": "Parallel"});
    let on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
    let partition = |p: i32| json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": p}}});
    let cases: Vec<Case> = vec![
        (
            "fresh set: claim then pod 0 only",
            set(3, json!({})),
            vec![],
            vec![],
            vec![claims(0), create(0, Update)],
        ),
        (
            "pod 0 running but not ready: wait",
            set(3, json!({})),
            vec![pod(0, NEW, "running")],
            vec![0],
            vec![],
        ),
        (
            "pod 0 ready: pod 1 next",
            set(3, json!({})),
            vec![pod(0, NEW, "ready")],
            vec![0],
            vec![claims(1), create(1, Update)],
        ),
        (
            "claim already there: pod only",
            set(3, json!({})),
            vec![pod(0, NEW, "ready")],
            vec![0, 1],
            vec![create(1, Update)],
        ),
        (
            "parallel creates every missing ordinal",
            set(3, parallel.clone()),
            vec![],
            vec![0, 1, 2],
            vec![create(0, Update), create(1, Update), create(2, Update)],
        ),
        (
            "all ready: nothing to do",
            set(2, json!({})),
            vec![pod(0, NEW, "ready"), pod(1, NEW, "ready")],
            vec![0, 1],
            vec![],
        ),
        (
            "scale down: highest ordinal first, one at a time",
            set(2, json!({})),
            (0..5).map(|i| pod(i, NEW, "ready")).collect(),
            vec![0, 1, 2, 3, 4],
            vec![delete(4, ScaleDown)],
        ),
        (
            "scale down waits for the terminating pod",
            set(2, json!({})),
            vec![
                pod(0, NEW, "ready"),
                pod(1, NEW, "ready"),
                pod(2, NEW, "ready"),
                pod(3, NEW, "terminating"),
            ],
            vec![0, 1, 2, 3],
            vec![],
        ),
        (
            "parallel scale down deletes every condemned pod",
            set(2, parallel.clone()),
            (0..4).map(|i| pod(i, NEW, "ready")).collect(),
            vec![0, 1, 2, 3],
            vec![delete(3, ScaleDown), delete(2, ScaleDown)],
        ),
        (
            "unhealthy replica blocks ordered scale down",
            set(1, json!({})),
            vec![pod(0, NEW, "running"), pod(1, NEW, "ready")],
            vec![0, 1],
            vec![],
        ),
        (
            "the first unhealthy condemned pod may go",
            set(1, json!({})),
            vec![
                pod(0, NEW, "ready"),
                pod(1, NEW, "ready"),
                pod(2, NEW, "running"),
            ],
            vec![0, 1, 2],
            vec![delete(2, ScaleDown)],
        ),
        (
            "a failed pod is deleted to be recreated",
            set(3, json!({})),
            vec![
                pod(0, NEW, "ready"),
                pod(1, NEW, "failed"),
                pod(2, NEW, "ready"),
            ],
            vec![0, 1, 2],
            vec![delete(1, Finished)],
        ),
        (
            "rolling update starts at the highest ordinal",
            set(3, json!({})),
            (0..3).map(|i| pod(i, OLD, "ready")).collect(),
            vec![0, 1, 2],
            vec![delete(2, DeleteWhy::Update)],
        ),
        (
            "rolling update waits for the updated pod to be ready",
            set(3, json!({})),
            vec![
                pod(0, OLD, "ready"),
                pod(1, OLD, "ready"),
                pod(2, NEW, "running"),
            ],
            vec![0, 1, 2],
            vec![],
        ),
        (
            "the recreated pod gets the update revision",
            set(3, json!({})),
            vec![pod(0, OLD, "ready"), pod(1, OLD, "ready")],
            vec![0, 1, 2],
            vec![create(2, Update)],
        ),
        (
            "then the next ordinal down",
            set(3, json!({})),
            vec![
                pod(0, OLD, "ready"),
                pod(1, OLD, "ready"),
                pod(2, NEW, "ready"),
            ],
            vec![0, 1, 2],
            vec![delete(1, DeleteWhy::Update)],
        ),
        (
            "partition 1 leaves ordinal 0 alone",
            set(3, partition(1)),
            vec![
                pod(0, OLD, "ready"),
                pod(1, NEW, "ready"),
                pod(2, NEW, "ready"),
            ],
            vec![0, 1, 2],
            vec![],
        ),
        (
            "below the partition a recreated pod keeps the current revision",
            set(3, partition(2)),
            vec![pod(0, OLD, "ready"), pod(2, NEW, "ready")],
            vec![0, 1, 2],
            vec![create(1, Current)],
        ),
        (
            "OnDelete never deletes for an update",
            set(2, on_delete),
            vec![pod(0, OLD, "ready"), pod(1, OLD, "ready")],
            vec![0, 1],
            vec![],
        ),
        (
            "parallel rolls one pod at a time too",
            set(2, parallel),
            vec![pod(0, OLD, "ready"), pod(1, OLD, "ready")],
            vec![0, 1],
            vec![delete(1, DeleteWhy::Update)],
        ),
        (
            "ordinals.start shifts the names",
            set(2, json!({"ordinals": {"start": 5}})),
            vec![pod(5, NEW, "ready")],
            vec![5, 6],
            vec![create(6, Update)],
        ),
    ];
    for (what, s, pods, have_claims, want) in cases {
        assert_eq!(
            run_plan(&s, &pods, &claims_for(&have_claims)),
            want,
            "{what}"
        );
    }
}

#[test]
fn retention_policy_sets_claim_owners() {
    let set_ref = |r: &OwnerReference| r.kind == "StatefulSet" && r.uid == "set-uid";
    let pod_ref =
        |r: &OwnerReference, ord: i32| r.kind == "Pod" && r.uid == format!("pod-uid-{ord}");
    // whenScaled Delete: the condemned pod owns its claim before it is deleted.
    let s = set(
        1,
        json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"}}),
    );
    let got = run_plan(
        &s,
        &[pod(0, NEW, "ready"), pod(1, NEW, "ready")],
        &claims_for(&[0, 1]),
    );
    assert_eq!(got.len(), 2, "{got:?}");
    match &got[0] {
        Action::ClaimOwners { claim, owners } => {
            assert_eq!(claim, "www-web-1");
            assert!(owners.len() == 1 && pod_ref(&owners[0], 1), "{owners:?}");
        }
        other => panic!("want ClaimOwners first, got {other:?}"),
    }
    assert_eq!(got[1], delete(1, DeleteWhy::ScaleDown));

    // whenDeleted Delete: claims of pods in range belong to the set, also when created.
    let s = set(
        2,
        json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}),
    );
    let owners = wanted_claim_owners(&s, Some(&pod(0, NEW, "ready")), 0, &[]);
    assert!(owners.len() == 1 && set_ref(&owners[0]), "{owners:?}");
    let fresh = new_claim(
        &s,
        &s.spec.volume_claim_templates.clone().unwrap_or_default()[0],
        1,
    );
    assert!(fresh
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(set_ref));

    // Both Delete: a scaled-down claim moves from the set to the pod.
    let s = set(
        1,
        json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}),
    );
    let existing = vec![owner_ref("apps/v1", "StatefulSet", "web", "set-uid")];
    let owners = wanted_claim_owners(&s, Some(&pod(3, NEW, "ready")), 3, &existing);
    assert!(owners.len() == 1 && pod_ref(&owners[0], 3), "{owners:?}");

    // Retain/Retain (the default): stale references to the set go, others stay.
    let s = set(1, json!({}));
    let other = owner_ref("v1", "ConfigMap", "x", "other-uid");
    let owners = wanted_claim_owners(
        &s,
        Some(&pod(0, NEW, "ready")),
        0,
        &[existing[0].clone(), other.clone()],
    );
    assert_eq!(owners, vec![other]);
    assert_eq!(
        run_plan(&s, &[pod(0, NEW, "ready")], &claims_for(&[0])),
        vec![],
        "no policy, no refs: nothing to patch"
    );
}

#[test]
fn pods_and_claims_carry_the_identity() {
    let s = set(3, json!({}));
    let p = new_pod(&s, &s.spec.template, "abc", 2);
    assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
    let labels = p.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[POD_NAME_LABEL], "web-2");
    assert_eq!(labels[POD_INDEX_LABEL], "2");
    assert_eq!(labels[CONTROLLER_REVISION_HASH], "abc");
    assert_eq!(labels["app"], "web");
    let spec = p.spec.clone().unwrap_or_default();
    assert_eq!(spec.hostname.as_deref(), Some("web-2"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let volumes = spec.volumes.unwrap_or_default();
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["www", "cfg"]);
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("www-web-2")
    );
    let owner = podutil::controller_of(&p.metadata).expect("controller");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("StatefulSet", "set-uid")
    );

    let c = new_claim(
        &s,
        &s.spec.volume_claim_templates.clone().unwrap_or_default()[0],
        2,
    );
    assert_eq!(c.metadata.name.as_deref(), Some("www-web-2"));
    let labels = c.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        (labels["app"].as_str(), labels["tier"].as_str()),
        ("web", "data")
    );
    assert_eq!(
        c.metadata.owner_references, None,
        "Retain keeps claims unowned"
    );
    assert_eq!(
        c.spec.and_then(|s| s.storage_class_name).as_deref(),
        Some("local-path")
    );
}

#[test]
fn membership_adoption_and_release() {
    let cases: &[(&str, &str, Option<i32>)] = &[
        ("web", "web-0", Some(0)),
        ("web", "web-12", Some(12)),
        ("web", "web-x", None),
        ("web", "webby-1", None),
        ("web", "web-", None),
        ("web-1", "web-1-3", Some(3)),
    ];
    for (set_name, pod_name, want) in cases {
        assert_eq!(
            ordinal_of(set_name, pod_name),
            *want,
            "{pod_name} of {set_name}"
        );
    }
    let s = set(2, json!({}));
    let owned = pod(0, NEW, "ready");
    let mut orphan = pod(1, NEW, "ready");
    orphan.metadata.owner_references = None;
    let mut stranger = pod(1, NEW, "ready");
    stranger.metadata.name = Some("db-1".into());
    stranger.metadata.owner_references = None;
    let mut relabelled = pod(2, NEW, "ready");
    relabelled.metadata.labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let pods = [&owned, &orphan, &stranger, &relabelled];
    let c = claim(&s, &pods);
    let names = |v: &[&Pod]| {
        v.iter()
            .map(|p| pod_name(p).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&c.owned), ["web-0"]);
    assert_eq!(names(&c.adopt), ["web-1"], "a non-member is never adopted");
    assert_eq!(names(&c.release), ["web-2"]);
}

#[test]
fn status_counts_and_completed_rollouts() {
    let s = set(3, json!({}));
    let status_of = |pods: &[Pod]| {
        let refs: Vec<&Pod> = pods.iter().collect();
        let claims = HashMap::new();
        status(
            &s,
            &Observed {
                pods: &refs,
                claims: &claims,
                current_revision: OLD,
                update_revision: NEW,
                now: Utc::now(),
            },
        )
    };
    let mid = status_of(&[
        pod(0, OLD, "ready"),
        pod(1, OLD, "running"),
        pod(2, NEW, "ready"),
    ]);
    assert_eq!(mid.replicas, 3);
    assert_eq!(mid.ready_replicas, Some(2));
    assert_eq!(mid.available_replicas, Some(2));
    assert_eq!(mid.current_replicas, Some(2));
    assert_eq!(mid.updated_replicas, Some(1));
    assert_eq!(mid.current_revision.as_deref(), Some(OLD));
    assert_eq!(mid.update_revision.as_deref(), Some(NEW));
    assert_eq!(mid.observed_generation, Some(2));

    let terminating = status_of(&[
        pod(0, NEW, "ready"),
        pod(1, NEW, "ready"),
        pod(2, OLD, "terminating"),
    ]);
    assert_eq!(
        terminating.current_replicas,
        Some(0),
        "terminating pods count for no revision"
    );
    assert_eq!(terminating.updated_replicas, Some(2));

    let done = status_of(&[
        pod(0, NEW, "ready"),
        pod(1, NEW, "ready"),
        pod(2, NEW, "ready"),
    ]);
    assert_eq!(
        done.current_revision.as_deref(),
        Some(NEW),
        "rollout complete"
    );
    assert_eq!(done.current_replicas, Some(3));
}
