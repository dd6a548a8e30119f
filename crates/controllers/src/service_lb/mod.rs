//! The built-in LoadBalancer (k3s's ServiceLB idea, without its per-Service pods): a
//! Service of type LoadBalancer with no `loadBalancerClass` gets the Ready nodes' addresses
//! as `status.loadBalancer.ingress` (ExternalIP where a node has one, else InternalIP, as
//! k3s), and every node's service proxy answers the Service's ports on those addresses.
//! A Service that stops being a LoadBalancer has its status cleared.
//!
//! Deciding ([`desired_ingress`]) is pure; the status patch is the only side effect.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::Context;

/// The addresses a LoadBalancer Service should show, sorted; None: not ours to fill.
pub fn desired_ingress(svc: &Service, nodes: &[Arc<Node>]) -> Option<Vec<String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let mut ips = BTreeSet::new();
    for node in nodes {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !ready || unschedulable || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let addresses = status.and_then(|s| s.addresses.as_deref()).unwrap_or(&[]);
        let pick = |kind: &str| addresses.iter().find(|a| a.type_ == kind);
        if let Some(a) = pick("ExternalIP").or_else(|| pick("InternalIP")) {
            ips.insert(a.address.clone());
        }
    }
    Some(ips.into_iter().collect())
}

fn current_ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let services = ctx.informers.informer::<Service>();
    let nodes = ctx.informers.informer::<Node>();
    let mut service_changes = services.subscribe();
    let mut node_changes = nodes.subscribe();
    let client = ctx.client.clone();
    async move {
        let queue: informers::WorkQueue<informers::ObjectKey> = informers::WorkQueue::new();
        let (q, inf) = (queue.clone(), services.clone());
        tokio::spawn(async move {
            while let Some(change) = service_changes.recv().await {
                match change {
                    informers::Change::Applied(s) => q.add(informers::ObjectKey::of(&*s)),
                    informers::Change::Deleted(_) => {}
                    informers::Change::Resync => {
                        for s in inf.list() {
                            q.add(informers::ObjectKey::of(&*s));
                        }
                    }
                }
            }
        });
        // A node joining, leaving or changing readiness changes every LoadBalancer's
        // addresses (Node heartbeats end in a no-op decision).
        let (q, inf) = (queue.clone(), services.clone());
        tokio::spawn(async move {
            while node_changes.recv().await.is_some() {
                for s in inf.list() {
                    if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                        || !current_ingress(&s).is_empty()
                    {
                        q.add(informers::ObjectKey::of(&*s));
                    }
                }
            }
        });
        services.wait_synced().await;
        nodes.wait_synced().await;
        queue
            .run(
                1,
                "service-lb-controller",
                move |key: informers::ObjectKey| {
                    let (client, services, nodes) =
                        (client.clone(), services.clone(), nodes.clone());
                    let informers::ObjectKey {
                        namespace: ns,
                        name,
                    } = key;
                    async move {
                        let Some(svc) = services.get(&ns, &name) else {
                            return Ok::<_, kube::Error>(None);
                        };
                        let current = current_ingress(&svc);
                        let desired = desired_ingress(&svc, &nodes.list());
                        let patch = match desired {
                            Some(ips) if ips != current => {
                                let ingress: Vec<_> = ips
                                    .iter()
                                    .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                                    .collect();
                                json!({"status": {"loadBalancer": {"ingress": ingress}}})
                            }
                            // No longer a LoadBalancer of ours: what we wrote goes.
                            None if !current.is_empty()
                                && svc
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.load_balancer_class.as_ref())
                                    .is_none() =>
                            {
                                json!({"status": {"loadBalancer": {"ingress": null}}})
                            }
                            _ => return Ok(None),
                        };
                        let api: Api<Service> = Api::namespaced(client, &ns);
                        match api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                        {
                            Ok(_) => Ok(None),
                            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
                            Err(e) => Err(e),
                        }
                    }
                },
            )
            .await;
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, addresses: &[(&str, &str)]) -> Arc<Node> {
        let addresses: Vec<_> = addresses
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addresses},
            }))
            .unwrap(),
        )
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "d"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn ready_nodes_addresses_external_first() {
        let nodes = [
            node("a", "True", &[("InternalIP", "10.0.0.2")]),
            node(
                "b",
                "True",
                &[("InternalIP", "10.0.0.3"), ("ExternalIP", "203.0.113.3")],
            ),
            node("c", "False", &[("InternalIP", "10.0.0.4")]),
        ];
        assert_eq!(
            desired_ingress(&svc(json!({"type": "LoadBalancer"})), &nodes),
            Some(vec!["10.0.0.2".to_string(), "203.0.113.3".to_string()])
        );
    }

    #[test]
    fn other_types_and_classes_are_not_ours() {
        let nodes = [node("a", "True", &[("InternalIP", "10.0.0.2")])];
        assert_eq!(
            desired_ingress(&svc(json!({"type": "ClusterIP"})), &nodes),
            None
        );
        assert_eq!(
            desired_ingress(
                &svc(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"})),
                &nodes
            ),
            None
        );
    }
}
