//! Facts about pods and label selectors that the ReplicaSet and Deployment controllers
//! share: is a pod active / ready / available, who controls an object, does a selector
//! match a label set (upstream's `pkg/api/v1/pod`, `controller_utils.go` and
//! `labels.Selector`, for the shapes these controllers meet).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};

/// Not finished and not being deleted (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition when it is True, with its last transition time.
pub fn ready_since(pod: &Pod) -> Option<Option<DateTime<Utc>>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(to_chrono))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`: a Ready condition
/// without a transition time counts as not yet available when minReadySeconds > 0).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + chrono::Duration::seconds(min_ready_seconds as i64) < now,
    }
}

/// When `pod` becomes available if it stays Ready (None: not ready, or already available).
pub fn becomes_available_in(
    pod: &Pod,
    min_ready_seconds: i32,
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)??;
    let at = since + chrono::Duration::seconds(min_ready_seconds as i64);
    (at >= now)
        .then(|| (at - now).to_std().unwrap_or_default() + std::time::Duration::from_millis(500))
}

/// k8s-openapi carries times as `jiff` timestamps; the controllers compute with chrono.
pub fn to_chrono(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(t.0.as_nanosecond() as i64)
}

pub fn to_time(t: DateTime<Utc>) -> Time {
    let nanos = t.timestamp_nanos_opt().unwrap_or_default() as i128;
    Time(k8s_openapi::jiff::Timestamp::from_nanosecond(nanos).unwrap_or_default())
}

pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// An ownerReference naming `owner` as controller, blocking its foreground deletion
/// (upstream `metav1.NewControllerRef`).
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether a label selector matches `labels` (matchLabels AND every matchExpression).
/// An empty selector matches everything, as upstream's `LabelSelectorAsSelector`.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // Validation refuses other operators; an object that slipped through selects nothing.
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// Every label of `wanted` is present with the same value in `labels` (the
/// "fully labeled" test: the pod carries all of the template's labels).
pub fn labels_superset(
    wanted: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(wanted) = wanted else { return true };
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_upstream() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("app", "web")], true),
            (&[("app", "web"), ("tier", "front")], true),
            (&[("app", "web"), ("tier", "db")], false),
            (&[("app", "api")], false),
            (&[], false),
        ];
        for (l, want) in cases {
            assert_eq!(selector_matches(&sel, Some(&labels(l))), *want, "{l:?}");
        }
        assert!(
            selector_matches(&LabelSelector::default(), None),
            "empty selects all"
        );
    }
}
