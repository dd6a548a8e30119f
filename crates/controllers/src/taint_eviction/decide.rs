//! When a pod must leave its node because of NoExecute taints (upstream's taint eviction
//! controller). Pure: no I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;

/// What to do with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No NoExecute taint it does not tolerate forever... nothing to do.
    Stay,
    /// Every NoExecute taint is tolerated, some only for a while: look again after this.
    EvictIn(Duration),
    /// Delete it now.
    EvictNow,
}

/// Whether `toleration` tolerates `taint` (upstream `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    if !effect_ok {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Decide for a pod on a node with `taints` at `now`.
pub fn decide(pod: &Pod, taints: &[Taint], now: Timestamp) -> Verdict {
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::Stay;
    }
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::EvictNow;
        }
        // The most patient matching toleration wins; one without a limit tolerates forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .max()
            .unwrap_or(0)
            .max(0);
        let since = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let deadline = since
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(since);
        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
    }
    match earliest {
        None => Verdict::Stay,
        Some(deadline) if deadline <= now => Verdict::EvictNow,
        Some(deadline) => Verdict::EvictIn(now.duration_until(deadline).unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: added.map(|s| Time(ts(s))),
        }
    }

    fn tol(key: &str, op: &str, effect: Option<&str>, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: Some(op.into()),
            effect: effect.map(str::to_string),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

    #[test]
    fn eviction_times_as_upstream() {
        let default_tol = || tol(UNREACHABLE, "Exists", Some("NoExecute"), Some(300));
        let cases: Vec<(&str, Pod, Vec<Taint>, i64, Verdict)> = vec![
            ("no taints", pod(vec![]), vec![], 0, Verdict::Stay),
            (
                "NoSchedule only",
                pod(vec![]),
                vec![taint(UNREACHABLE, "NoSchedule", None)],
                0,
                Verdict::Stay,
            ),
            (
                "untolerated",
                pod(vec![]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                0,
                Verdict::EvictNow,
            ),
            (
                "default 300 s, 10 s in",
                pod(vec![default_tol()]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                10,
                Verdict::EvictIn(Duration::from_secs(290)),
            ),
            (
                "default 300 s, expired",
                pod(vec![default_tol()]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                300,
                Verdict::EvictNow,
            ),
            (
                "tolerated forever",
                pod(vec![tol(UNREACHABLE, "Exists", None, None)]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                9999,
                Verdict::Stay,
            ),
            (
                "wildcard toleration",
                pod(vec![tol("", "Exists", None, None)]),
                vec![taint("anything", "NoExecute", Some(0))],
                5,
                Verdict::Stay,
            ),
            (
                "negative seconds evict now",
                pod(vec![tol(
                    UNREACHABLE,
                    "Exists",
                    Some("NoExecute"),
                    Some(-5),
                )]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                0,
                Verdict::EvictNow,
            ),
            (
                "one of two taints untolerated",
                pod(vec![default_tol()]),
                vec![
                    taint(UNREACHABLE, "NoExecute", Some(0)),
                    taint("other", "NoExecute", Some(0)),
                ],
                0,
                Verdict::EvictNow,
            ),
            (
                "wrong effect does not tolerate",
                pod(vec![tol(UNREACHABLE, "Exists", Some("NoSchedule"), None)]),
                vec![taint(UNREACHABLE, "NoExecute", Some(0))],
                0,
                Verdict::EvictNow,
            ),
        ];
        for (name, pod, taints, now, want) in cases {
            assert_eq!(decide(&pod, &taints, ts(now)), want, "{name}");
        }
    }

    #[test]
    fn equal_operator_needs_the_same_value() {
        let mut t = taint("dedicated", "NoExecute", None);
        t.value = Some("gpu".into());
        let mut tl = tol("dedicated", "Equal", None, None);
        tl.value = Some("gpu".into());
        assert!(tolerates(&tl, &t));
        tl.value = Some("cpu".into());
        assert!(!tolerates(&tl, &t));
    }
}
