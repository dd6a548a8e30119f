//! The pod garbage collector (upstream `pod-garbage-collector`): every period it force
//! deletes (grace period 0) terminated pods beyond a threshold, oldest first; pods bound
//! to nodes that no longer exist; and pods being deleted that were never scheduled (no
//! kubelet will ever confirm them). Pods the Job controller still needs to count keep
//! their finalizer, so a force delete only marks them and the count is not lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Preconditions};

use informers::Informer;

use crate::Context;

pub const COMPONENT: &str = "pod-garbage-collector";

/// Settings, named as kube-controller-manager's flags.
#[derive(Debug, Clone)]
pub struct PodGcOptions {
    /// `--terminated-pod-gc-threshold`: terminated pods kept before the oldest go; 0
    /// turns this part off.
    pub terminated_pod_gc_threshold: usize,
    /// How often the collector looks (upstream `gcCheckPeriod`, 20 s).
    pub period: Duration,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        PodGcOptions {
            terminated_pod_gc_threshold: 12_500,
            period: Duration::from_secs(20),
        }
    }
}

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TerminatedOverThreshold,
    OrphanedNodeGone,
    UnscheduledTerminating,
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Decide which pods to delete. `nodes` are the names of the nodes that exist.
pub fn decide<'a>(
    pods: &[&'a Pod],
    nodes: &BTreeSet<String>,
    options: &PodGcOptions,
) -> Vec<(&'a Pod, Reason)> {
    let mut out: Vec<(&Pod, Reason)> = Vec::new();
    let mut chosen: BTreeSet<(String, String)> = BTreeSet::new();
    let key = |p: &Pod| {
        (
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
        )
    };
    if options.terminated_pod_gc_threshold > 0 {
        let mut terminated: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| is_terminated(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if terminated.len() > options.terminated_pod_gc_threshold {
            terminated
                .sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), key(*p)));
            let excess = terminated.len() - options.terminated_pod_gc_threshold;
            for p in terminated.into_iter().take(excess) {
                chosen.insert(key(p));
                out.push((p, Reason::TerminatedOverThreshold));
            }
        }
    }
    for p in pods.iter().copied() {
        if chosen.contains(&key(p)) {
            continue;
        }
        let node = node_name(p);
        if !node.is_empty() && !nodes.contains(node) {
            out.push((p, Reason::OrphanedNodeGone));
        } else if node.is_empty() && p.metadata.deletion_timestamp.is_some() {
            out.push((p, Reason::UnscheduledTerminating));
        }
    }
    out
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let pods: Informer<Pod> = ctx.informers.informer::<Pod>();
    let nodes: Informer<Node> = ctx.informers.informer::<Node>();
    let client = ctx.client.clone();
    let options = PodGcOptions::default();
    async move {
        // Before both caches are full every pod would look orphaned.
        pods.wait_synced().await;
        nodes.wait_synced().await;
        let mut tick = tokio::time::interval(options.period);
        loop {
            tick.tick().await;
            let all = pods.list();
            let refs: Vec<&Pod> = all.iter().map(|p| p.as_ref()).collect();
            let node_names: BTreeSet<String> = nodes
                .list()
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            for (pod, reason) in decide(&refs, &node_names, &options) {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                let name = pod.metadata.name.as_deref().unwrap_or("");
                // Only the pod decided about: a newer pod of the same name is left alone.
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                match api.delete(name, &params).await {
                    Ok(_) => tracing::info!("{COMPONENT}: deleted pod {ns}/{name} ({reason:?})"),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => {
                        tracing::warn!("{COMPONENT}: deleting pod {ns}/{name} ({reason:?}): {e}")
                    }
                }
            }
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn pod(name: &str, phase: &str, node: &str, created: i64, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                deletion_timestamp: deleting
                    .then(|| Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn what_is_collected() {
        let nodes: BTreeSet<String> = ["n1".to_string()].into();
        // (pods, threshold, expected (name, reason))
        let cases: Vec<(Vec<Pod>, usize, Vec<(&str, Reason)>)> = vec![
            (
                vec![
                    pod("a", "Succeeded", "n1", 1, false),
                    pod("b", "Failed", "n1", 2, false),
                ],
                2,
                vec![],
            ),
            (
                vec![
                    pod("new", "Succeeded", "n1", 3, false),
                    pod("old", "Failed", "n1", 1, false),
                    pod("mid", "Succeeded", "n1", 2, false),
                    pod("run", "Running", "n1", 0, false),
                ],
                1,
                vec![
                    ("old", Reason::TerminatedOverThreshold),
                    ("mid", Reason::TerminatedOverThreshold),
                ],
            ),
            (vec![pod("a", "Succeeded", "n1", 1, false)], 0, vec![]),
            (
                vec![
                    pod("lost", "Running", "gone", 1, false),
                    pod("ok", "Running", "n1", 1, false),
                ],
                10,
                vec![("lost", Reason::OrphanedNodeGone)],
            ),
            (
                vec![
                    pod("pending", "Pending", "", 1, false),
                    pod("stuck", "Pending", "", 1, true),
                ],
                10,
                vec![("stuck", Reason::UnscheduledTerminating)],
            ),
        ];
        for (pods, threshold, want) in cases {
            let refs: Vec<&Pod> = pods.iter().collect();
            let options = PodGcOptions {
                terminated_pod_gc_threshold: threshold,
                ..Default::default()
            };
            let got: Vec<(&str, Reason)> = decide(&refs, &nodes, &options)
                .into_iter()
                .map(|(p, r)| (p.metadata.name.as_deref().unwrap(), r))
                .collect();
            assert_eq!(got, want);
        }
    }
}
