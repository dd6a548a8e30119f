//! Which pods a ReplicaSet deletes first when it has too many: upstream's
//! `ActivePodsWithRanks` order (with the PodDeletionCost and LogarithmicScaleDown
//! behaviour that is on by default since 1.22):
//! unassigned < assigned; Pending < Unknown < Running; not ready < ready; lower
//! `controller.kubernetes.io/pod-deletion-cost` first; more related pods on the same node
//! first; ready for less time first (log2 buckets); more restarts first; newer first
//! (log2 buckets); ties on a bucket broken by UID.

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;

use super::podutil;

pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// log2 of the age in nanoseconds, -1 for "not in the past" (upstream logarithmicRankDiff).
fn log_bucket(t: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let d = (now - t).num_nanoseconds().unwrap_or(i64::MAX);
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// `a` should go before `b` if it is zero (unknown) or later (upstream afterOrZero).
fn after_or_zero(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => a.is_none(),
        (Some(a), Some(b)) => a > b,
    }
}

/// Compare times the way upstream does with LogarithmicScaleDown: Some(true) when `i`
/// goes first, decided by bucket or by UID when the buckets are equal.
fn time_less(
    ti: Option<DateTime<Utc>>,
    tj: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    uid_i: &str,
    uid_j: &str,
) -> bool {
    match (ti, tj) {
        (Some(a), Some(b)) => {
            let diff = log_bucket(a, now) - log_bucket(b, now);
            if diff == 0 {
                uid_i < uid_j
            } else {
                diff < 0
            }
        }
        _ => after_or_zero(ti, tj),
    }
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// True if `i` should be deleted before `j`.
fn less(i: &Pod, j: &Pod, rank_i: usize, rank_j: usize, now: DateTime<Utc>) -> bool {
    let node = |p: &Pod| node_of(p);
    let (ni, nj) = (node(i), node(j));
    if ni != nj && (ni.is_empty() || nj.is_empty()) {
        return ni.is_empty();
    }
    let (pi, pj) = (phase_ordinal(i), phase_ordinal(j));
    if pi != pj {
        return pi < pj;
    }
    let (ri, rj) = (podutil::is_ready(i), podutil::is_ready(j));
    if ri != rj {
        return !ri;
    }
    let (ci, cj) = (deletion_cost(i), deletion_cost(j));
    if ci != cj {
        return ci < cj;
    }
    if rank_i != rank_j {
        return rank_i > rank_j;
    }
    let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
    if ri && rj {
        let ti = podutil::ready_since(i).flatten();
        let tj = podutil::ready_since(j).flatten();
        if ti != tj {
            return time_less(ti, tj, now, &uid(i), &uid(j));
        }
    }
    let (xi, xj) = (max_restarts(i), max_restarts(j));
    if xi != xj {
        return xi > xj;
    }
    let ci = i
        .metadata
        .creation_timestamp
        .as_ref()
        .map(crate::replicaset::podutil::to_chrono);
    let cj = j
        .metadata
        .creation_timestamp
        .as_ref()
        .map(crate::replicaset::podutil::to_chrono);
    if ci != cj {
        return time_less(ci, cj, now, &uid(i), &uid(j));
    }
    false
}

/// The `count` pods of `pods` to delete first. `related` are the pods of every ReplicaSet
/// of the same owner (used to rank pods doubled up on a node first).
pub fn pods_to_delete<'a>(
    pods: &[&'a Pod],
    related: &[&Pod],
    count: usize,
    now: DateTime<Utc>,
) -> Vec<&'a Pod> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<String, usize> = HashMap::new();
    for p in related.iter().filter(|p| podutil::is_active(p)) {
        let node = node_of(p);
        *on_node.entry(node).or_default() += 1;
    }
    let rank = |p: &Pod| {
        let node = node_of(p);
        on_node.get(&node).copied().unwrap_or(0)
    };
    let mut ranked: Vec<(&Pod, usize)> = pods.iter().map(|p| (*p, rank(p))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| {
        if less(a, b, *ra, *rb, now) {
            Ordering::Less
        } else if less(b, a, *rb, *ra, now) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};

    /// A pod for tables: node ("" = unassigned), phase, ready since (seconds ago),
    /// restarts, created (seconds ago).
    pub(crate) fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready_ago: Option<i64>,
        restarts: i32,
        created_ago: i64,
    ) -> Pod {
        let now = Utc::now();
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.creation_timestamp = Some(crate::replicaset::podutil::to_time(
            now - chrono::Duration::seconds(created_ago),
        ));
        p.spec = Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready_ago.map(|ago| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(crate::replicaset::podutil::to_time(
                        now - chrono::Duration::seconds(ago),
                    )),
                    ..Default::default()
                }]
            }),
            container_statuses: Some(vec![ContainerStatus {
                name: "c".into(),
                restart_count: restarts,
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn first(pods: &[Pod], n: usize) -> Vec<String> {
        let refs: Vec<&Pod> = pods.iter().collect();
        pods_to_delete(&refs, &[], n, Utc::now())
            .into_iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn deletion_order_follows_upstream_ranking() {
        // (pods, how many to delete, expected victims): each row isolates one rule.
        let cases: Vec<(&str, Vec<Pod>, usize, Vec<&str>)> = vec![
            (
                "unassigned before assigned",
                vec![
                    pod("a", "n1", "Running", Some(100), 0, 100),
                    pod("u", "", "Pending", None, 0, 100),
                ],
                1,
                vec!["u"],
            ),
            (
                "pending before unknown before running",
                vec![
                    pod("r", "n1", "Running", None, 0, 10),
                    pod("k", "n1", "Unknown", None, 0, 10),
                    pod("p", "n1", "Pending", None, 0, 10),
                ],
                2,
                vec!["p", "k"],
            ),
            (
                "not ready before ready",
                vec![
                    pod("ready", "n1", "Running", Some(50), 0, 100),
                    pod("notready", "n1", "Running", None, 0, 100),
                ],
                1,
                vec!["notready"],
            ),
            (
                "ready for less time first (different log2 buckets)",
                vec![
                    pod("old", "n1", "Running", Some(100_000), 0, 200_000),
                    pod("young", "n1", "Running", Some(10), 0, 200_000),
                ],
                1,
                vec!["young"],
            ),
            (
                "more restarts first",
                vec![
                    pod("calm", "n1", "Running", None, 0, 100),
                    pod("crashy", "n1", "Running", None, 5, 100),
                ],
                1,
                vec!["crashy"],
            ),
            (
                "newer first",
                vec![
                    pod("older", "n1", "Running", None, 0, 100_000),
                    pod("newer", "n1", "Running", None, 0, 5),
                ],
                1,
                vec!["newer"],
            ),
            (
                "deleting all returns all",
                vec![
                    pod("x", "n1", "Running", None, 0, 1),
                    pod("y", "n1", "Running", None, 0, 1),
                ],
                2,
                vec!["x", "y"],
            ),
        ];
        for (what, pods, n, want) in cases {
            assert_eq!(first(&pods, n), want, "{what}");
        }
    }

    #[test]
    fn deletion_cost_and_doubled_up_nodes_come_before_age() {
        let mut cheap = pod("cheap", "n1", "Running", None, 0, 100_000);
        cheap.metadata.annotations =
            Some([(POD_DELETION_COST.to_string(), "-5".to_string())].into());
        let pods = vec![pod("newer", "n2", "Running", None, 0, 1), cheap];
        assert_eq!(first(&pods, 1), vec!["cheap"]);

        // Two pods share n1, one is alone on n2: a pod on the crowded node goes first.
        let pods = vec![
            pod("alone", "n2", "Running", None, 0, 100_000),
            pod("crowd1", "n1", "Running", None, 0, 1),
            pod("crowd2", "n1", "Running", None, 0, 2),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let victims = pods_to_delete(&refs, &refs, 1, Utc::now());
        assert!(victims[0]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("crowd"));
    }
}
