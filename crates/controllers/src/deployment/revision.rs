//! Revisions of a Deployment: the `pod-template-hash` that names each ReplicaSet, finding
//! the ReplicaSet of the current template, and the `deployment.kubernetes.io/*`
//! annotations (revision, revision-history, desired-replicas, max-replicas) as upstream's
//! `deployment/util`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Upstream's limit on the revision-history annotation (`--deployment-controller-...`
/// has no flag; the controller passes 2000 characters).
pub const REVISION_HISTORY_MAX_CHARS: usize = 2000;

/// Deployment annotations that are not copied to its ReplicaSets: upstream's list, plus
/// skiff's own bookkeeping for automatic rollback.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
    super::autorollback::LAST_AVAILABLE_REVISION,
];

/// Upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable digits).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(bytes: &[u8], mut h: u32) -> u32 {
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// The `pod-template-hash` of a template: FNV-32a over the template (its canonical JSON:
/// upstream hashes Go's printing of the struct, which no other language reproduces, so
/// the values differ from upstream's but have the same shape and stability), then the
/// collision count as 4 little-endian bytes, printed in decimal and encoded with the safe
/// alphabet, as upstream `ComputeHash`.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(&json, 2_166_136_261);
    if let Some(c) = collision_count {
        h = fnv32a(&(c as u32).to_le_bytes(), h);
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[b as usize % SAFE_ALPHABET.len()] as char)
        .collect()
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    if let Some(m) = t.metadata.as_mut() {
        if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
            m.labels = None;
        }
    }
    t
}

/// Templates equal apart from the pod-template-hash label (upstream `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The template of `rs` as a Deployment template (what `rollout undo` restores).
pub fn template_for_deployment(rs: &ReplicaSet) -> PodTemplateSpec {
    without_hash(&rs.spec.template.clone().unwrap_or_default())
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata.annotations, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn max_revision(rss: &[&ReplicaSet]) -> i64 {
    rss.iter().map(|rs| revision_of(rs)).max().unwrap_or(0)
}

pub fn annotation<'a>(
    annotations: &'a Option<BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata.annotations, key)?.parse().ok()
}

/// Oldest first, ties by name (upstream `ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(rss: &mut [&ReplicaSet]) {
    rss.sort_by(|a, b| {
        let ka = (
            &a.metadata
                .creation_timestamp
                .as_ref()
                .map(crate::replicaset::podutil::to_chrono),
            &a.metadata.name,
        );
        let kb = (
            &b.metadata
                .creation_timestamp
                .as_ref()
                .map(crate::replicaset::podutil::to_chrono),
            &b.metadata.name,
        );
        ka.cmp(&kb)
    });
}

/// The ReplicaSet of the Deployment's current template: the oldest one whose template
/// equals it ignoring the hash (upstream `FindNewReplicaSet`).
pub fn find_new<'a>(d: &Deployment, rss: &[&'a ReplicaSet]) -> Option<&'a ReplicaSet> {
    let template = &d.spec.template;
    let mut sorted = rss.to_vec();
    sort_by_creation(&mut sorted);
    sorted.into_iter().find(|rs| {
        rs.spec
            .template
            .as_ref()
            .is_some_and(|t| equal_ignore_hash(t, template))
    })
}

/// Set desired-replicas and max-replicas; true if anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copy the Deployment's annotations, raise the
/// revision (keeping the superseded numbers in revision-history when an old ReplicaSet
/// becomes current again, i.e. a rollback), and for a new ReplicaSet the replica counts.
/// True if anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    max_surge: i32,
) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION).cloned();
    let old_int: i64 = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_int < new_revision {
        a.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > REVISION_HISTORY_MAX_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= REVISION_HISTORY_MAX_CHARS {
                    parts.drain(..start);
                    parts.push(&old);
                    let joined = parts.join(",");
                    a.insert(REVISION_HISTORY.to_string(), joined);
                }
            }
        }
    }
    if !exists {
        let replicas = d.spec.replicas.unwrap_or(1);
        if set_replicas_annotations(rs, replicas, replicas + max_surge) {
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        let mut t = PodTemplateSpec::default();
        t.metadata = Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        });
        t.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        t
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_template_and_collisions() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1"), Some(1)));
        assert!(a.len() <= 10 && !a.is_empty());
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
    }

    #[test]
    fn equal_ignoring_the_hash_label() {
        let mut with_hash = template("nginx:1");
        with_hash
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&with_hash, &template("nginx:1")));
        assert!(!equal_ignore_hash(&with_hash, &template("nginx:2")));
    }

    #[test]
    fn rollback_keeps_revision_history() {
        let mut d = Deployment::default();
        d.metadata.annotations = Some(
            [
                (CHANGE_CAUSE.to_string(), "kubectl set image".to_string()),
                (REVISION.to_string(), "3".to_string()),
            ]
            .into(),
        );
        d.spec.replicas = Some(4);
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 1, false, 1));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(
            a.get(CHANGE_CAUSE).map(String::as_str),
            Some("kubectl set image")
        );
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert!(
            !set_new_rs_annotations(&d, &mut rs, 1, true, 1),
            "nothing new"
        );
        // Revision 1 becomes current again as revision 3, then as 5.
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true, 1));
        assert!(set_new_rs_annotations(&d, &mut rs, 5, true, 1));
        let a = rs.metadata.annotations.unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("5"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
    }
}
