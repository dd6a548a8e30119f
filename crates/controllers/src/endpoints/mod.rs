//! The Endpoints controller (upstream's `endpoint-controller`): for every Service with a
//! selector, an Endpoints object of the same name listing the selected pods' addresses,
//! ready ones under `addresses` and the others under `notReadyAddresses`, grouped into
//! subsets by port set (target ports resolved per pod). Services without a selector keep
//! the Endpoints their users write; the Endpoints of a deleted Service are deleted.
//!
//! A create or update the API refuses is recorded as a Warning event on the Endpoints
//! object (`FailedToCreateEndpoint` / `FailedToUpdateEndpoint`, as upstream) and retried;
//! creates refused because the namespace is terminating are dropped quietly, as upstream.
//!
//! [`pods`] holds what this controller shares with the EndpointSlice controller.

pub mod pods;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::Resource;

use crate::Context;
use informers::{Change, Informer, ObjectKey, WorkQueue};
use pods::{
    format_time, hostname, is_headless, is_pod_ready, managed_selector, pod_included, pod_ip,
    resolve_target_port, selects, service_is_ipv6, trigger_time, PodServices, HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
};

/// Upstream's cap on addresses in one Endpoints object; beyond it the object is truncated
/// and annotated (EndpointSlices carry everything).
pub const MAX_ADDRESSES: usize = 1000;
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

#[derive(Debug, thiserror::Error)]
#[error("{what} Endpoints {key}: {source}")]
pub struct Error {
    what: &'static str,
    key: String,
    #[source]
    source: kube::Error,
}

/// The subsets a service's pods make, repacked as upstream: one subset per distinct set
/// of ports, addresses sorted by IP. Also whether the result was truncated.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses == Some(true);
    let ipv6 = service_is_ipv6(svc);
    let ports = spec.ports.unwrap_or_default();
    // address (ready flag + address) -> ports it serves
    let mut by_address: BTreeMap<(String, String), (bool, EndpointAddress, BTreeSet<PortKey>)> =
        BTreeMap::new();
    for pod in pods {
        if !pod_included(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ip(pod, ipv6) else {
            continue;
        };
        let ready = tolerate_unready || is_pod_ready(pod);
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_reference(pod)),
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut served = BTreeSet::new();
        for sp in &ports {
            if let Some(port) = resolve_target_port(sp, pod) {
                served.insert(PortKey {
                    name: sp.name.clone().unwrap_or_default(),
                    port,
                    protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        // A service port the pod lacks leaves the pod out of that port only; a pod serving
        // none of the ports is listed only for a headless service without ports.
        if served.is_empty() && !(ports.is_empty() && is_headless(svc)) {
            continue;
        }
        by_address.insert((ip, uid), (ready, address, served));
    }
    let mut subsets: BTreeMap<BTreeSet<PortKey>, EndpointSubset> = BTreeMap::new();
    for (_, (ready, address, served)) in by_address {
        let subset = subsets
            .entry(served.clone())
            .or_insert_with(|| EndpointSubset {
                addresses: None,
                not_ready_addresses: None,
                ports: (!served.is_empty()).then(|| served.iter().map(PortKey::to_port).collect()),
            });
        let list = if ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    truncate(subsets)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn to_port(&self) -> EndpointPort {
        EndpointPort {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// Keep at most [`MAX_ADDRESSES`], shared among subsets in proportion to their size,
/// ready addresses first (upstream keeps the same proportions).
fn truncate(mut subsets: Vec<EndpointSubset>) -> (Vec<EndpointSubset>, bool) {
    let size = |s: &EndpointSubset| {
        s.addresses.as_ref().map_or(0, Vec::len)
            + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
    };
    let total: usize = subsets.iter().map(size).sum();
    if total <= MAX_ADDRESSES {
        return (subsets, false);
    }
    let mut budget: Vec<usize> = subsets
        .iter()
        .map(|s| size(s) * MAX_ADDRESSES / total)
        .collect();
    let mut left = MAX_ADDRESSES - budget.iter().sum::<usize>();
    for (i, s) in subsets.iter().enumerate() {
        let room = size(s) - budget[i];
        let extra = room.min(left);
        budget[i] += extra;
        left -= extra;
    }
    for (s, keep) in subsets.iter_mut().zip(budget) {
        let ready = s.addresses.as_ref().map_or(0, Vec::len);
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(keep);
        }
        if let Some(n) = s.not_ready_addresses.as_mut() {
            n.truncate(keep.saturating_sub(ready));
        }
    }
    (subsets, true)
}

/// What to do with a service's Endpoints.
#[derive(Debug, PartialEq)]
pub enum Action {
    Nothing,
    Create(Endpoints),
    Update(Endpoints),
    Delete,
}

/// `svc`: the service, `None` if deleted; `pods`: the pods its selector matches in its
/// namespace; `existing`: the current Endpoints.
pub fn decide(svc: Option<&Service>, pods: &[&Pod], existing: Option<&Endpoints>) -> Action {
    let Some(svc) = svc else {
        return if existing.is_some() {
            Action::Delete
        } else {
            Action::Nothing
        };
    };
    if managed_selector(svc).is_none() {
        return Action::Nothing;
    }
    let (subsets, truncated) = desired_subsets(svc, pods);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    let subsets = (!subsets.is_empty()).then_some(subsets);
    if let Some(current) = existing {
        let same_subsets = current.subsets.as_ref().filter(|s| !s.is_empty()) == subsets.as_ref();
        let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
        let marked = current
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY));
        if same_subsets && same_labels && marked == truncated {
            return Action::Nothing;
        }
    }
    let mut annotations: BTreeMap<String, String> = existing
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default();
    annotations.remove(OVER_CAPACITY);
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    }
    match trigger_time(svc, pods.iter().copied()) {
        Some(t) => {
            annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), format_time(&t));
        }
        None => {
            annotations.remove(LAST_CHANGE_TRIGGER_TIME);
        }
    }
    let mut next = existing.cloned().unwrap_or_default();
    next.metadata = ObjectMeta {
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..next.metadata
    };
    next.metadata.managed_fields = None;
    next.subsets = subsets;
    if existing.is_some() {
        Action::Update(next)
    } else {
        Action::Create(next)
    }
}

/// Map informer changes to the services to look at.
struct Triggers {
    services: Informer<Service>,
    index: Mutex<PodServices>,
    queue: WorkQueue<ObjectKey>,
}

impl Triggers {
    fn pod_changed(&self, pod: &Pod, deleted: bool) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let services = self.services.list_namespace(&ns);
        let keys = self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changed(
                &ns,
                &name,
                (!deleted).then_some(pod),
                services.iter().map(|s| s.as_ref()),
            );
        for svc in keys {
            self.queue.add(ObjectKey::new(&ns, &svc));
        }
    }

    fn all(&self) {
        for svc in self.services.list() {
            self.queue.add(ObjectKey::of(svc.as_ref()));
        }
    }
}

/// Run a service-keyed controller: services, pods and `extra` changes feed one queue.
/// Shared with the EndpointSlice controller.
pub(crate) fn service_queue(
    ctx: &Arc<Context>,
) -> (
    WorkQueue<ObjectKey>,
    Informer<Service>,
    Informer<Pod>,
    BoxFuture<'static, ()>,
) {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let mut svc_changes = services.subscribe();
    let mut pod_changes = pods.subscribe();
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    let triggers = Arc::new(Triggers {
        services: services.clone(),
        index: Mutex::new(PodServices::default()),
        queue: queue.clone(),
    });
    let t = triggers.clone();
    let feed = async move {
        let svc_loop = async {
            while let Some(change) = svc_changes.recv().await {
                match change {
                    Change::Applied(s) | Change::Deleted(s) => {
                        t.queue.add(ObjectKey::of(s.as_ref()))
                    }
                    Change::Resync => t.all(),
                }
            }
        };
        let pod_loop = async {
            while let Some(change) = pod_changes.recv().await {
                match change {
                    Change::Applied(p) => t.pod_changed(&p, false),
                    Change::Deleted(p) => t.pod_changed(&p, true),
                    Change::Resync => t.all(),
                }
            }
        };
        futures::future::join(svc_loop, pod_loop).await;
    }
    .boxed();
    (queue, services, pods, feed)
}

/// The pods a service selects, from the cache.
pub(crate) fn selected_pods(pods: &Informer<Pod>, svc: &Service) -> Vec<Arc<Pod>> {
    let Some(selector) = managed_selector(svc) else {
        return Vec::new();
    };
    pods.list_namespace(svc.metadata.namespace.as_deref().unwrap_or_default())
        .into_iter()
        .filter(|p| selects(selector, p))
        .collect()
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let (queue, services, pods, feed) = service_queue(ctx);
    let endpoints = ctx.informers.informer::<Endpoints>();
    let mut ep_changes = endpoints.subscribe();
    let client = ctx.client.clone();
    let recorder = ctx.recorder(COMPONENT);
    let workers = ctx.options.workers;
    async move {
        tokio::spawn(feed);
        let q = queue.clone();
        tokio::spawn(async move {
            // Someone deleted an Endpoints object: put it back if its service wants one.
            while let Some(change) = ep_changes.recv().await {
                if let Change::Deleted(e) = change {
                    q.add(ObjectKey::of(e.as_ref()));
                }
            }
        });
        services.wait_synced().await;
        pods.wait_synced().await;
        endpoints.wait_synced().await;
        let state = Arc::new((client, services, pods, endpoints, recorder));
        queue
            .run(workers, COMPONENT, move |key: ObjectKey| {
                let state = state.clone();
                async move {
                    let (client, services, pods, endpoints, recorder) = &*state;
                    sync(client, services, pods, endpoints, recorder, &key).await
                }
            })
            .await;
    }
    .boxed()
}

/// Reporting component, as upstream.
const COMPONENT: &str = "endpoint-controller";

/// True for upstream's `NamespaceTerminating` refusal: creates keep failing until the
/// namespace is gone, so the item is dropped rather than retried.
fn namespace_terminating(e: &kube::core::Status) -> bool {
    e.code == 403 && e.message.contains("because it is being terminated")
}

/// Record upstream's Warning for an Endpoints write the API refused. An event that
/// cannot be written must not stop the sync.
async fn warn_write_failed(
    recorder: &crate::events::Recorder,
    ep: &Endpoints,
    creating: bool,
    key: &ObjectKey,
    e: &kube::Error,
) {
    let cause = match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    };
    let (reason, note) = if creating {
        (
            "FailedToCreateEndpoint",
            format!(
                "Failed to create endpoint for service {}/{}: {cause}",
                key.namespace, key.name
            ),
        )
    } else {
        (
            "FailedToUpdateEndpoint",
            format!(
                "Failed to update endpoint {}/{}: {cause}",
                key.namespace, key.name
            ),
        )
    };
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &ep.object_ref(&())).await {
        tracing::warn!("{COMPONENT}: recording {reason} for {key}: {err}");
    }
}

async fn sync(
    client: &kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    endpoints: &Informer<Endpoints>,
    recorder: &crate::events::Recorder,
    key: &ObjectKey,
) -> Result<Option<Duration>, Error> {
    let svc = services.get_key(key);
    let selected = svc
        .as_deref()
        .map(|s| selected_pods(pods, s))
        .unwrap_or_default();
    let selected: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
    let existing = endpoints.get_key(key);
    let action = decide(svc.as_deref(), &selected, existing.as_deref());
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &key.namespace);
    let err = |what| {
        let key = key.to_string();
        move |source| Error { what, key, source }
    };
    match action {
        Action::Nothing => Ok(None),
        Action::Create(ep) => match api.create(&PostParams::default(), &ep).await {
            Ok(_) => Ok(None),
            // Created meanwhile (by us earlier, not yet in the cache): look again.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(Duration::from_millis(200))),
            Err(kube::Error::Api(e)) if namespace_terminating(&e) => Ok(None),
            Err(e) => {
                warn_write_failed(recorder, &ep, true, key, &e).await;
                Err(err("creating")(e))
            }
        },
        Action::Update(ep) => {
            match api
                .replace(
                    ep.meta().name.as_deref().unwrap_or_default(),
                    &PostParams::default(),
                    &ep,
                )
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(Some(Duration::ZERO)),
                Err(e) => {
                    warn_write_failed(recorder, &ep, false, key, &e).await;
                    Err(err("updating")(e))
                }
            }
        }
        Action::Delete => match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(err("deleting")(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::pods::tests::{pod, port, svc};
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn subsets_from_pods() {
        let web = svc(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::String("http".into()))],
        );
        let a = pod("a", Some("10.42.0.2"), true, &[("http", 8080)]);
        let b = pod("b", Some("10.42.0.1"), false, &[("http", 8080)]);
        let c = pod("c", Some("10.42.0.3"), true, &[("http", 9090)]);
        let no_port = pod("d", Some("10.42.0.4"), true, &[("metrics", 9100)]);
        let no_ip = pod("e", None, true, &[("http", 8080)]);

        let (subsets, truncated) = desired_subsets(&web, &[&a, &b, &c, &no_port, &no_ip]);
        assert!(!truncated);
        assert_eq!(
            subsets.len(),
            2,
            "one subset per resolved port: {subsets:?}"
        );
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.42.0.1"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(
            subsets[0].ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
        assert_eq!(ips(&subsets[1].addresses), vec!["10.42.0.3"]);
        assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 9090);
        let target = subsets[0].addresses.as_ref().unwrap()[0]
            .target_ref
            .clone()
            .unwrap();
        assert_eq!(target.name.as_deref(), Some("a"));
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .node_name
                .as_deref(),
            Some("node-1")
        );

        let mut publish = web.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = desired_subsets(&publish, &[&a, &b]);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.1", "10.42.0.2"]);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn headless_services_without_ports_list_addresses() {
        let mut headless = svc("db", &[("app", "web")], vec![]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let a = pod("a", Some("10.42.0.2"), true, &[]);
        let (subsets, _) = desired_subsets(&headless, &[&a]);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.2"]);
        assert!(subsets[0].ports.is_none());
        let plain = svc("plain", &[("app", "web")], vec![]);
        assert!(desired_subsets(&plain, &[&a]).0.is_empty());
    }

    #[test]
    fn large_services_are_truncated_and_marked() {
        let web = svc(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(80))],
        );
        let pods: Vec<Pod> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("10.42.{}.{}", i / 250, i % 250)),
                    i % 3 != 0,
                    &[],
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let (subsets, truncated) = desired_subsets(&web, &refs);
        assert!(truncated);
        let total: usize = subsets
            .iter()
            .map(|s| {
                s.addresses.as_ref().map_or(0, Vec::len)
                    + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
            })
            .sum();
        assert_eq!(total, MAX_ADDRESSES);
        assert_eq!(
            subsets[0].addresses.as_ref().map_or(0, Vec::len),
            800,
            "ready first"
        );
    }

    #[test]
    fn decisions() {
        let web = svc(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::Int(8080))],
        );
        let manual = svc(
            "manual",
            &[],
            vec![port("http", 80, IntOrString::Int(8080))],
        );
        let a = pod("a", Some("10.42.0.2"), true, &[]);
        let Action::Create(created) = decide(Some(&web), &[&a], None) else {
            panic!("a new service gets Endpoints");
        };
        assert_eq!(created.metadata.name.as_deref(), Some("web"));
        assert!(created
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LAST_CHANGE_TRIGGER_TIME)));
        assert_eq!(
            decide(Some(&web), &[&a], Some(&created)),
            Action::Nothing,
            "unchanged"
        );
        let b = pod("b", Some("10.42.0.3"), true, &[]);
        assert!(matches!(
            decide(Some(&web), &[&a, &b], Some(&created)),
            Action::Update(_)
        ));
        assert_eq!(
            decide(Some(&manual), &[&a], Some(&created)),
            Action::Nothing,
            "user-managed"
        );
        assert_eq!(decide(None, &[], Some(&created)), Action::Delete);
        assert_eq!(decide(None, &[], None), Action::Nothing);
        let Action::Create(empty) = decide(Some(&web), &[], None) else {
            panic!("a service without pods still gets Endpoints");
        };
        assert!(empty.subsets.is_none());
    }
}
