//! The node lifecycle controller: notices nodes whose kubelet went silent (no Lease
//! renewal within `--node-monitor-grace-period`), marks their conditions Unknown, taints
//! them (`unreachable` / `not-ready`, NoSchedule and NoExecute, plus `unschedulable` for
//! cordoned nodes and the pressure taints), marks their pods not Ready, and lifts all of
//! that when the node reports again. Evicting the pods of NoExecute-tainted nodes is the
//! taint eviction controller's job (`taint_eviction/`). Zone disruption rate-limits the
//! NoExecute tainting as upstream does (`zones.rs`).

mod health;
mod zones;

pub use health::{readiness, Readiness, TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use informers::Change;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

use crate::events::Recorder;
use kube::Resource;

use crate::Context;
use zones::RateLimiter;

/// How many API writes the controller keeps in flight when many nodes change at once.
const WRITES_IN_FLIGHT: usize = 16;

/// A node's own report that changes its readiness or its taints is acted on this soon,
/// not at the next monitor period (upstream taints and untaints NoSchedule on node
/// updates too): a node that turns Ready is schedulable at once.
const EARLY_PASS_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let nodes = ctx.informers.informer::<Node>();
    let leases = ctx.informers.informer::<Lease>();
    let pods = ctx.informers.informer::<Pod>();
    let ctx = ctx.clone();
    async move {
        nodes.wait_synced().await;
        leases.wait_synced().await;
        let mut monitor = Monitor {
            recorder: ctx.recorder("node-controller"),
            nodes_api: Api::all(ctx.client.clone()),
            client: ctx.client.clone(),
            limiters: HashMap::new(),
            last_readiness: HashMap::new(),
            origin: Instant::now(),
        };
        let mut ticker = tokio::time::interval(ctx.options.node_monitor_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut node_changes = nodes.subscribe();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                change = node_changes.recv() => match change {
                    // Judged on the node as it is now: a queued report may be older than
                    // what the last pass saw (each pass reads every node), and acting on it
                    // would repeat a pass for nothing.
                    Some(Change::Applied(node))
                        if nodes
                            .get("", node.metadata.name.as_deref().unwrap_or_default())
                            .is_some_and(|now| monitor.acts_on_report(&now)) =>
                    {
                        // Let the other nodes' reports of the moment join this pass.
                        tokio::time::sleep(EARLY_PASS_DELAY).await;
                    }
                    Some(Change::Resync) => {}
                    Some(_) => continue,
                    None => return,
                },
            }
            // The pass covers every report queued so far.
            let mut closed = false;
            while let Some(change) = node_changes.recv().now_or_never() {
                if change.is_none() {
                    closed = true;
                    break;
                }
            }
            monitor.pass(&ctx, &nodes.list(), &leases, &pods).await;
            if closed {
                return;
            }
        }
    }
    .boxed()
}

struct Monitor {
    recorder: Recorder,
    nodes_api: Api<Node>,
    client: kube::Client,
    limiters: HashMap<String, RateLimiter>,
    /// Readiness seen in the previous pass, to act on transitions once.
    last_readiness: HashMap<String, Readiness>,
    origin: Instant,
}

impl Monitor {
    /// Whether a node's report calls for a pass before the next tick: its readiness is not
    /// the one the last pass saw, or its taints are not those wanted (new NoExecute taints
    /// left to the periodic pass and its rate limiter).
    fn acts_on_report(&self, node: &Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let readiness_changed = self.last_readiness.get(name) != Some(&readiness(node));
        let current_taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        let wanted = health::wanted_taints(node, Timestamp::now(), false);
        readiness_changed || !health::same_taints(current_taints, &wanted)
    }

    async fn pass(
        &mut self,
        ctx: &Context,
        nodes: &[Arc<Node>],
        leases: &informers::Informer<Lease>,
        pods: &informers::Informer<Pod>,
    ) {
        let now = Timestamp::now();
        let grace = ctx.options.node_monitor_grace_period;

        // 1. Silent kubelets: conditions to Unknown (decided for all, then written).
        // Nodes are shared with the informer; only a silenced one is copied to change it.
        let mut current: Vec<Arc<Node>> = Vec::with_capacity(nodes.len());
        let mut silenced: Vec<Node> = Vec::new();
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let renewed = leases
                .get("kube-node-lease", name)
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            match health::silenced_conditions(node, renewed, now, grace) {
                Some(conditions) => {
                    let mut node = (**node).clone();
                    if let Some(status) = node.status.as_mut() {
                        status.conditions = Some(conditions);
                    }
                    silenced.push(node.clone());
                    current.push(Arc::new(node));
                }
                None => current.push(node.clone()),
            }
        }
        let api = self.nodes_api.clone();
        let results: Vec<_> = futures::stream::iter(silenced)
            .map(|node| {
                let api = api.clone();
                async move {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let r = api
                        .replace_status(&name, &PostParams::default(), &node)
                        .await;
                    (name, r)
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (name, result) in results {
            match result {
                Ok(_) => {
                    tracing::info!(node = %name, "node stopped posting status; conditions set to Unknown")
                }
                // A conflict means the kubelet wrote meanwhile: the next pass re-decides.
                Err(e) => tracing::debug!(node = %name, "marking node Unknown: {e}"),
            }
        }

        // 2. Readiness transitions: events, and pods on a node that stopped being Ready
        //    are marked not Ready (so Services stop sending them traffic).
        for node in &current {
            let name = node.metadata.name.clone().unwrap_or_default();
            let now_readiness = readiness(node);
            let before = self.last_readiness.insert(name.clone(), now_readiness);
            match (before, now_readiness) {
                (Some(Readiness::Ready), Readiness::NotReady | Readiness::Unknown) => {
                    self.event(
                        node,
                        EventType::Normal,
                        "NodeNotReady",
                        &format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
                    self.mark_pods_not_ready(&name, pods, now).await;
                }
                (Some(Readiness::NotReady | Readiness::Unknown), Readiness::Ready) => {
                    self.event(
                        node,
                        EventType::Normal,
                        "NodeReady",
                        &format!("Node {name} status is now: NodeReady"),
                    )
                    .await;
                }
                _ => {}
            }
        }
        let names: std::collections::HashSet<String> = current
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.last_readiness.retain(|n, _| names.contains(n));

        // 3. Taints, NoExecute ones rate-limited per zone.
        let states = zones::zone_states(current.iter().map(|n| &**n));
        let all_dark = !states.is_empty()
            && states
                .values()
                .all(|(s, _)| *s == zones::ZoneState::FullDisruption);
        let elapsed = self.origin.elapsed();
        let mut updates = Vec::new();
        for node in &current {
            let zone = zones::zone_of(node);
            let (state, size) = states
                .get(&zone)
                .copied()
                .unwrap_or((zones::ZoneState::Normal, 1));
            let rate = zones::eviction_rate(state, size, all_dark);
            let mut wanted = health::wanted_taints(node, now, true);
            if all_dark {
                // Everything is dark: suspect ourselves or the network, evict nothing.
                wanted.retain(|t| {
                    !(t.effect == "NoExecute"
                        && (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY))
                });
            } else if health::adds_no_execute(node, &wanted)
                && !self
                    .limiters
                    .entry(zone.clone())
                    .or_insert_with(RateLimiter::new)
                    .try_take(elapsed, rate)
            {
                wanted = health::wanted_taints(node, now, false);
            }
            let current_taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if !health::same_taints(&current_taints, &wanted) {
                let mut updated = (**node).clone();
                updated.spec.get_or_insert_with(Default::default).taints =
                    (!wanted.is_empty()).then_some(wanted);
                updates.push(updated);
            }
        }
        let results: Vec<_> = futures::stream::iter(updates)
            .map(|node| {
                let api = api.clone();
                async move {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    // The status write above changed the resourceVersion; taints are spec,
                    // so write them with a merge patch instead of a stale full update.
                    let taints = node.spec.as_ref().and_then(|s| s.taints.clone());
                    let patch = serde_json::json!({"spec": {"taints": taints}});
                    let r = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    (name, taints, r)
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (name, taints, result) in results {
            match result {
                Ok(_) => {
                    tracing::info!(node = %name, "node taints now {:?}", taints.unwrap_or_default().iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>())
                }
                Err(e) => tracing::warn!(node = %name, "updating node taints: {e}"),
            }
        }
    }

    async fn mark_pods_not_ready(
        &self,
        node: &str,
        pods: &informers::Informer<Pod>,
        now: Timestamp,
    ) {
        let on_node: Vec<Arc<Pod>> = pods
            .list()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True")
            })
            .collect();
        let client = self.client.clone();
        let recorder = &self.recorder;
        futures::stream::iter(on_node)
            .for_each_concurrent(WRITES_IN_FLIGHT, |pod| {
                let client = client.clone();
                async move {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let api: Api<Pod> = Api::namespaced(client, &ns);
                    let patch = serde_json::json!({"status": {"conditions": [
                        {"type": "Ready", "status": "False",
                         "lastTransitionTime": now.to_string()}]}});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                        .await
                    {
                        tracing::debug!(pod = %format!("{ns}/{name}"), "marking pod not ready: {e}");
                    }
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "NodeNotReady".into(),
                        note: Some("Node is not ready".into()),
                        action: "MarkPodNotReady".into(),
                        secondary: None,
                    };
                    recorder.record(ev, pod.object_ref(&()));
                }
            })
            .await;
    }

    async fn event(&self, node: &Node, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: reason.into(),
            secondary: None,
        };
        self.recorder.record(ev, node.object_ref(&()));
    }
}
