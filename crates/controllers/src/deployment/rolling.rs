//! The replica arithmetic of a rollout, as upstream's `deployment/util` and `rolling.go`,
//! `sync.go`: maxSurge/maxUnavailable resolution (surge rounds up, unavailable rounds
//! down, both 0 means 1 unavailable), how far the new ReplicaSet may grow, how far the old
//! ones may shrink, and proportional scaling when `replicas` changes mid-rollout. Every
//! function returns the scales to apply; `mod.rs` applies them.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::revision::{self, sort_by_creation};

/// A ReplicaSet scale to apply, in order.
pub type Scale = (String, i32);

pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

pub fn available(rs: &ReplicaSet) -> i32 {
    status_of(rs).2
}

pub fn deployment_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

/// Upstream `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let x = pct * total as i64;
            Ok(if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            } as i32)
        }
    }
}

fn rolling_params(d: &Deployment) -> Option<(IntOrString, IntOrString)> {
    let strategy = d.spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return None;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let pct = || IntOrString::String("25%".into());
    Some((
        ru.and_then(|r| r.max_surge.clone()).unwrap_or_else(pct),
        ru.and_then(|r| r.max_unavailable.clone())
            .unwrap_or_else(pct),
    ))
}

pub fn is_rolling(d: &Deployment) -> bool {
    rolling_params(d).is_some()
}

/// Upstream `ResolveFenceposts`: (surge, unavailable) for `desired` replicas.
pub fn resolve_fenceposts(
    surge: &IntOrString,
    unavailable: &IntOrString,
    desired: i32,
) -> (i32, i32) {
    let s = scaled_value(surge, desired, true).unwrap_or(0);
    let u = scaled_value(unavailable, desired, false).unwrap_or(0);
    if s == 0 && u == 0 {
        (0, 1)
    } else {
        (s, u)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    rolling_params(d).map_or(0, |(s, u)| {
        resolve_fenceposts(&s, &u, deployment_replicas(d)).0
    })
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = deployment_replicas(d);
    match rolling_params(d) {
        Some((s, u)) if replicas > 0 => resolve_fenceposts(&s, &u, replicas).1.min(replicas),
        _ => 0,
    }
}

fn total_spec(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| spec_replicas(rs)).sum()
}

fn total_available(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| available(rs)).sum()
}

/// Upstream `NewRSNewReplicas`: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = deployment_replicas(d);
    if !is_rolling(d) {
        return replicas;
    }
    let current = total_spec(all);
    let max_total = replicas + max_surge(d);
    let new_spec = spec_replicas(new);
    if current >= max_total {
        return new_spec;
    }
    new_spec + (max_total - current).min(replicas - new_spec)
}

/// Upstream `reconcileNewReplicaSet`: the new ReplicaSet's next scale, if it changes.
pub fn reconcile_new(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> Option<i32> {
    let replicas = deployment_replicas(d);
    let current = spec_replicas(new);
    let next = if current > replicas {
        replicas
    } else {
        new_rs_new_replicas(d, all, new)
    };
    (next != current).then_some(next)
}

/// Upstream `reconcileOldReplicaSets`: first scale down unhealthy old replicas (they
/// cost no availability), then healthy ones as far as maxUnavailable allows. Returns the
/// scales in the order upstream applies them.
pub fn reconcile_old(
    d: &Deployment,
    all: &[&ReplicaSet],
    old_active: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Vec<Scale> {
    let old_count = total_spec(old_active);
    if old_count == 0 {
        return Vec::new();
    }
    let replicas = deployment_replicas(d);
    let min_available = replicas - max_unavailable(d);
    let new_unavailable = new.map_or(0, |n| spec_replicas(n) - available(n));
    let max_scaled_down = total_spec(all) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    // Working copies: (name, spec, available, created) of the old sets, oldest first.
    let mut olds = old_active.to_vec();
    sort_by_creation(&mut olds);
    let mut sizes: Vec<(String, i32, i32)> = olds
        .iter()
        .map(|rs| {
            (
                rs.metadata.name.clone().unwrap_or_default(),
                spec_replicas(rs),
                available(rs),
            )
        })
        .collect();
    let mut ops = Vec::new();

    // cleanupUnhealthyReplicas
    let mut cleaned = 0;
    for (name, spec, avail) in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if *spec == 0 || *spec == *avail {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(*spec - *avail);
        *spec -= down;
        cleaned += down;
        ops.push((name.clone(), *spec));
    }

    // scaleDownOldReplicaSetsForRollingUpdate
    let available_now = total_available(old_active) + new.map_or(0, available);
    if available_now > min_available {
        let to_scale_down = available_now - min_available;
        let mut scaled = 0;
        for (name, spec, _) in sizes.iter_mut() {
            if scaled >= to_scale_down {
                break;
            }
            if *spec == 0 {
                continue;
            }
            let down = (*spec).min(to_scale_down - scaled);
            *spec -= down;
            scaled += down;
            ops.push((name.clone(), *spec));
        }
    }
    ops
}

fn created(rs: &ReplicaSet) -> Option<chrono::DateTime<chrono::Utc>> {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map(crate::replicaset::podutil::to_chrono)
}

/// Upstream `FindActiveOrLatest`: the only active ReplicaSet, or (none active) the new
/// one or the newest old one; None while several are active.
fn active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    olds: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    if new.is_none() && olds.is_empty() {
        return None;
    }
    let mut olds = olds.to_vec();
    sort_by_creation(&mut olds);
    olds.reverse();
    let active: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    match active.len() {
        0 => new.or_else(|| olds.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

/// Upstream `IsSaturated`.
fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let replicas = deployment_replicas(d);
    revision::int_annotation(rs, revision::DESIRED_REPLICAS) == Some(replicas)
        && available(rs) == replicas
        && spec_replicas(rs) == replicas
}

/// Upstream `getReplicaSetFraction`.
fn fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let replicas = deployment_replicas(d);
    if replicas == 0 {
        return -spec_replicas(rs);
    }
    let deployment_total = replicas + max_surge(d);
    let annotated = revision::int_annotation(rs, revision::MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = (spec_replicas(rs) as f64 * deployment_total as f64) / annotated as f64;
    // Go's math.Round rounds half away from zero, as f64::round.
    size.round() as i32 - spec_replicas(rs)
}

/// Upstream `scale` (sync.go): when `replicas` changed, give every active ReplicaSet its
/// share. Returns the scales (every listed set also gets its replica annotations
/// refreshed, as upstream calls scaleReplicaSet on all of them).
pub fn proportional(d: &Deployment, new: Option<&ReplicaSet>, olds: &[&ReplicaSet]) -> Vec<Scale> {
    let name = |rs: &ReplicaSet| rs.metadata.name.clone().unwrap_or_default();
    let replicas = deployment_replicas(d);
    if let Some(rs) = active_or_latest(new, olds) {
        if spec_replicas(rs) == replicas {
            return Vec::new();
        }
        return vec![(name(rs), replicas)];
    }
    if is_saturated(d, new) {
        return olds
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .map(|rs| (name(rs), 0))
            .collect();
    }
    if !is_rolling(d) {
        return Vec::new();
    }
    let mut all: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    let allowed = if replicas > 0 {
        replicas + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - total_spec(&all);
    // Larger first; among equals newer first when adding, older first when removing.
    all.sort_by(|a, b| {
        let by_size = spec_replicas(b).cmp(&spec_replicas(a));
        let by_age = if to_add > 0 {
            created(b).cmp(&created(a))
        } else {
            created(a).cmp(&created(b))
        };
        match by_size {
            Ordering::Equal => by_age,
            o => o,
        }
    });
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
    for rs in &all {
        let mut proportion = 0;
        if to_add != 0 && spec_replicas(rs) != 0 && to_add != added {
            let f = fraction(rs, d);
            let allowed_left = to_add - added;
            proportion = if to_add > 0 {
                f.min(allowed_left)
            } else {
                f.max(allowed_left)
            };
        }
        sizes.push(spec_replicas(rs) + proportion);
        added += proportion;
    }
    if to_add != 0 && !sizes.is_empty() {
        sizes[0] = (sizes[0] + to_add - added).max(0);
    }
    all.iter()
        .zip(sizes)
        .map(|(rs, size)| (name(rs), size))
        .collect()
}

/// Upstream `isScalingEvent`: an active ReplicaSet was sized for another `replicas`.
pub fn is_scaling_event(d: &Deployment, new: Option<&ReplicaSet>, olds: &[&ReplicaSet]) -> bool {
    let replicas = deployment_replicas(d);
    olds.iter()
        .copied()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .any(|rs| {
            revision::int_annotation(rs, revision::DESIRED_REPLICAS)
                .is_some_and(|want| want != replicas)
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    pub(crate) fn ios(s: &str) -> IntOrString {
        match s.parse::<i32>() {
            Ok(i) => IntOrString::Int(i),
            Err(_) => IntOrString::String(s.into()),
        }
    }

    pub(crate) fn deploy(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(ios(surge)),
                        max_unavailable: Some(ios(unavailable)),
                    }),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A ReplicaSet named `name` created `age` seconds ago with `spec` replicas of which
    /// `avail` are available, sized for `annotated` (desired, max) if given.
    pub(crate) fn rs(
        name: &str,
        age: i64,
        spec: i32,
        avail: i32,
        annotated: Option<(i32, i32)>,
    ) -> ReplicaSet {
        let mut r = ReplicaSet {
            spec: ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas: spec,
                ready_replicas: Some(avail),
                available_replicas: Some(avail),
                ..Default::default()
            }),
            ..Default::default()
        };
        r.metadata.name = Some(name.into());
        r.metadata.creation_timestamp = Some(crate::replicaset::podutil::to_time(
            chrono::Utc::now() - chrono::Duration::seconds(age),
        ));
        if let Some((desired, max)) = annotated {
            revision::set_replicas_annotations(&mut r, desired, max);
        }
        r
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        // (surge, unavailable, desired) -> (surge, unavailable)
        let cases = [
            ("25%", "25%", 10, (3, 2)),
            ("25%", "25%", 4, (1, 1)),
            ("25%", "25%", 1, (1, 0)),
            ("0", "0", 5, (0, 1)),
            ("0%", "10%", 5, (0, 1)),
            ("0%", "10%", 9, (0, 1)),
            ("1", "0", 3, (1, 0)),
            ("50%", "0%", 3, (2, 0)),
            ("100%", "100%", 7, (7, 7)),
            ("2", "1", 0, (2, 1)),
        ];
        for (s, u, desired, want) in cases {
            assert_eq!(
                resolve_fenceposts(&ios(s), &ios(u), desired),
                want,
                "{s}/{u} of {desired}"
            );
        }
        assert_eq!(
            max_unavailable(&deploy(3, "0", "200%")),
            3,
            "capped at replicas"
        );
        assert_eq!(max_unavailable(&deploy(0, "1", "1")), 0);
    }

    #[test]
    fn rolling_update_steps_follow_upstream() {
        struct Case {
            what: &'static str,
            d: Deployment,
            new: ReplicaSet,
            olds: Vec<ReplicaSet>,
            new_scale: Option<i32>,
            old_scales: Vec<(&'static str, i32)>,
        }
        let cases = vec![
            Case {
                what: "start: surge 1 lets the new set grow to 1",
                d: deploy(3, "1", "0"),
                new: rs("new", 0, 0, 0, None),
                olds: vec![rs("old", 100, 3, 3, None)],
                new_scale: Some(1),
                old_scales: vec![],
            },
            Case {
                what: "new pod not available yet: old may not shrink (maxUnavailable 0)",
                d: deploy(3, "1", "0"),
                new: rs("new", 0, 1, 0, None),
                olds: vec![rs("old", 100, 3, 3, None)],
                new_scale: None,
                old_scales: vec![],
            },
            Case {
                what: "new pod available: old shrinks by one",
                d: deploy(3, "1", "0"),
                new: rs("new", 0, 1, 1, None),
                olds: vec![rs("old", 100, 3, 3, None)],
                new_scale: None,
                old_scales: vec![("old", 2)],
            },
            Case {
                what: "25%/25% of 10: new grows to 3 (surge)",
                d: deploy(10, "25%", "25%"),
                new: rs("new", 0, 0, 0, None),
                olds: vec![rs("old", 100, 10, 10, None)],
                new_scale: Some(3),
                old_scales: vec![],
            },
            Case {
                what: "25%/25% of 10, total 13: old drops 2 at once (unavailable 2)",
                d: deploy(10, "25%", "25%"),
                new: rs("new", 0, 3, 0, None),
                olds: vec![rs("old", 100, 10, 10, None)],
                new_scale: None,
                old_scales: vec![("old", 8)],
            },
            Case {
                what: "surge 0 unavailable 1: old shrinks first",
                d: deploy(3, "0", "1"),
                new: rs("new", 0, 0, 0, None),
                olds: vec![rs("old", 100, 3, 3, None)],
                new_scale: None,
                old_scales: vec![("old", 2)],
            },
            Case {
                what: "surge 0 unavailable 1, after the old shrank: new grows",
                d: deploy(3, "0", "1"),
                new: rs("new", 0, 0, 0, None),
                olds: vec![rs("old", 100, 2, 2, None)],
                new_scale: Some(1),
                old_scales: vec![],
            },
            Case {
                what: "unhealthy old replicas go first, oldest set first",
                d: deploy(4, "1", "1"),
                new: rs("new", 0, 1, 0, None),
                olds: vec![rs("older", 200, 2, 1, None), rs("old", 100, 2, 2, None)],
                new_scale: None,
                old_scales: vec![("older", 1)],
            },
            Case {
                what: "new set above replicas is cut back",
                d: deploy(2, "1", "1"),
                new: rs("new", 0, 5, 5, None),
                olds: vec![],
                new_scale: Some(2),
                old_scales: vec![],
            },
            Case {
                what: "done: nothing to do",
                d: deploy(3, "1", "0"),
                new: rs("new", 0, 3, 3, None),
                olds: vec![rs("old", 100, 0, 0, None)],
                new_scale: None,
                old_scales: vec![],
            },
        ];
        for c in cases {
            let olds: Vec<&ReplicaSet> = c.olds.iter().collect();
            let all: Vec<&ReplicaSet> = olds.iter().copied().chain([&c.new]).collect();
            assert_eq!(
                reconcile_new(&c.d, &all, &c.new),
                c.new_scale,
                "{}: new",
                c.what
            );
            if c.new_scale.is_none() {
                let active: Vec<&ReplicaSet> = olds
                    .iter()
                    .copied()
                    .filter(|r| spec_replicas(r) > 0)
                    .collect();
                let want: Vec<Scale> = c
                    .old_scales
                    .iter()
                    .map(|(n, s)| (n.to_string(), *s))
                    .collect();
                assert_eq!(
                    reconcile_old(&c.d, &all, &active, Some(&c.new)),
                    want,
                    "{}: old",
                    c.what
                );
            }
        }
    }

    #[test]
    fn proportional_scaling_mid_rollout() {
        // 10 replicas, surge 3: old 8 (sized for 10/13), new 5 => total 13. Scale to 20 (max 25).
        let mut d = deploy(20, "25%", "25%");
        let new = rs("new", 0, 5, 0, Some((10, 13)));
        let old = rs("old", 100, 8, 8, Some((10, 13)));
        let ops = proportional(&d, Some(&new), &[&old]);
        let total: i32 = ops.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 25, "{ops:?}");
        assert_eq!(ops, vec![("old".to_string(), 15), ("new".to_string(), 10)]);

        // Scaling down to 5 (max 7) removes from both, larger first.
        d = deploy(5, "25%", "25%");
        let ops = proportional(&d, Some(&new), &[&old]);
        assert_eq!(ops.iter().map(|(_, s)| s).sum::<i32>(), 7, "{ops:?}");
        assert!(ops.iter().all(|(_, s)| *s < 8));

        // One active set takes the new size directly.
        let only = rs("only", 0, 3, 3, Some((3, 4)));
        assert_eq!(
            proportional(&deploy(50, "25%", "25%"), Some(&only), &[]),
            vec![("only".to_string(), 50)]
        );
        assert!(is_scaling_event(
            &deploy(50, "25%", "25%"),
            Some(&only),
            &[]
        ));
        assert!(!is_scaling_event(
            &deploy(3, "25%", "25%"),
            Some(&only),
            &[]
        ));
    }
}
