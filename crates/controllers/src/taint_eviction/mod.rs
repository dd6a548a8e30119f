//! The taint eviction controller: deletes pods from nodes with NoExecute taints they do
//! not tolerate, at once or when their tolerationSeconds run out (counted from the taint's
//! timeAdded, so a controller restart does not reset the clock). With the default
//! tolerations admission adds to every pod, a dead node's pods go 300 s after it is
//! tainted unreachable (less in the fast failover profile).

mod decide;

pub use decide::{tolerates, Verdict};

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::Resource;

use crate::Context;
use informers::{Change, ObjectKey, WorkQueue};

fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    let mut node_changes = nodes.subscribe();
    let mut pod_changes = pods.subscribe();
    let ctx = ctx.clone();
    async move {
        let queue: WorkQueue<ObjectKey> = WorkQueue::new();
        let recorder = Arc::new(ctx.recorder("taint-eviction-controller"));

        // Pods to look at: every pod whose node's NoExecute taints changed, every pod that
        // changed while on a node with NoExecute taints.
        let feed = {
            let queue = queue.clone();
            let (nodes, pods) = (nodes.clone(), pods.clone());
            async move {
                let mut tainted: HashMap<String, Vec<Taint>> = HashMap::new();
                let pods_on = |node: &str| -> Vec<ObjectKey> {
                    pods.list()
                        .iter()
                        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
                        .map(|p| ObjectKey::of(p.as_ref()))
                        .collect()
                };
                loop {
                    tokio::select! {
                        change = node_changes.recv() => match change {
                            Some(Change::Applied(node)) => {
                                let name = node.metadata.name.clone().unwrap_or_default();
                                let taints = no_execute(&node);
                                let before = tainted.get(&name).cloned().unwrap_or_default();
                                if before != taints {
                                    if taints.is_empty() { tainted.remove(&name); } else { tainted.insert(name.clone(), taints.clone()); }
                                    if !taints.is_empty() {
                                        pods_on(&name).into_iter().for_each(|k| queue.add(k));
                                    }
                                }
                            }
                            Some(Change::Deleted(node)) => {
                                tainted.remove(node.metadata.name.as_deref().unwrap_or_default());
                            }
                            Some(Change::Resync) => {
                                tainted.clear();
                                for node in nodes.list() {
                                    let taints = no_execute(&node);
                                    if !taints.is_empty() {
                                        let name = node.metadata.name.clone().unwrap_or_default();
                                        pods_on(&name).into_iter().for_each(|k| queue.add(k));
                                        tainted.insert(name, taints);
                                    }
                                }
                            }
                            None => return,
                        },
                        change = pod_changes.recv() => match change {
                            Some(Change::Applied(pod)) => {
                                let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
                                if tainted.contains_key(node) {
                                    queue.add(ObjectKey::of(pod.as_ref()));
                                }
                            }
                            Some(Change::Deleted(_)) => {}
                            Some(Change::Resync) => {
                                for name in tainted.keys() {
                                    pods_on(name).into_iter().for_each(|k| queue.add(k));
                                }
                            }
                            None => return,
                        },
                    }
                }
            }
        };

        let client = ctx.client.clone();
        let work = queue.run(ctx.options.workers, "taint-eviction", move |key: ObjectKey| {
            let (pods, nodes, client, recorder) =
                (pods.clone(), nodes.clone(), client.clone(), recorder.clone());
            async move {
                let Some(pod) = pods.get_key(&key) else { return Ok(None) };
                let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                let Some(node) = nodes.get("", &node_name) else { return Ok(None) };
                match decide::decide(&pod, &no_execute(&node), Timestamp::now()) {
                    Verdict::Stay => Ok(None),
                    Verdict::EvictIn(after) => Ok(Some(after)),
                    Verdict::EvictNow => evict(&client, &recorder, &pod).await.map(|_| None),
                }
            }
        });
        tokio::join!(feed, work);
    }
    .boxed()
}

async fn evict(
    client: &kube::Client,
    recorder: &crate::events::Recorder,
    pod: &Pod,
) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let ev = Event {
        type_: EventType::Normal,
        reason: "TaintManagerEviction".into(),
        note: Some(format!("Marking for deletion Pod {ns}/{name}")),
        action: "Delete".into(),
        secondary: None,
    };
    recorder.record(ev, pod.object_ref(&()));
    let condition = serde_json::json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Timestamp::now().to_string()}]}});
    if let Err(e) = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await
    {
        tracing::debug!("marking {ns}/{name} as a disruption target: {e}");
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), "evicted from a NoExecute-tainted node");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(format!("deleting pod {ns}/{name}: {e}")),
    }
}
