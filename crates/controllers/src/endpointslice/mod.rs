//! The EndpointSlice controller (upstream's `endpointslice-controller.k8s.io`): for every
//! Service with a selector, EndpointSlices named `<service>-<random>` (labels
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, owned by the
//! Service so the garbage collector removes them with it), at most 100 endpoints each, one
//! group of slices per set of resolved ports. Every selected pod with an IP that has not
//! finished is listed, terminating ones too, with conditions ready/serving/terminating.
//! Endpoints stay in the slice they are in, so a change to one pod rewrites one slice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::endpoints::pods::{
    format_time, hostname, is_headless, is_pod_ready, managed_selector, pod_included, pod_ip,
    resolve_target_port, service_is_ipv6, trigger_time, HEADLESS_LABEL, LAST_CHANGE_TRIGGER_TIME,
};
use crate::endpoints::{selected_pods, service_queue};
use crate::Context;
use informers::{Change, Informer, ObjectKey};
use kube::Resource;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// How long to wait for our own writes to reach the cache before deciding anyway.
const EXPECTATION_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("{what} EndpointSlice for Service {service}: {source}")]
pub struct Error {
    what: &'static str,
    service: String,
    #[source]
    source: kube::Error,
}

#[derive(Debug, PartialEq)]
pub enum SliceAction {
    Create(EndpointSlice),
    Update(EndpointSlice),
    Delete(String),
}

/// The endpoint a pod makes, and the ports it serves, or `None` if it gets none.
fn pod_endpoint(svc: &Service, pod: &Pod, ipv6: bool) -> Option<(Vec<EndpointPort>, Endpoint)> {
    if !pod_included(pod, true) {
        return None;
    }
    let ip = pod_ip(pod, ipv6)?;
    let spec = svc.spec.as_ref()?;
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = spec.publish_not_ready_addresses == Some(true) || (serving && !terminating);
    let mut ports: Vec<EndpointPort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(resolve_target_port(sp, pod)?),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(pod, svc),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    };
    Some((ports, endpoint))
}

fn endpoints_of(s: &EndpointSlice) -> &[Endpoint] {
    s.endpoints.as_deref().unwrap_or_default()
}

/// The identity of an endpoint across updates: its pod (or address).
fn endpoint_key(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_else(|| e.addresses.join(","))
}

fn slice_ports(s: &EndpointSlice) -> Vec<EndpointPort> {
    let mut p = s.ports.clone().unwrap_or_default();
    p.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
    p
}

fn port_key(ports: &[EndpointPort]) -> String {
    serde_json::to_string(ports).unwrap_or_default()
}

/// The labels every slice of this service carries.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Decide the writes that make `existing` (this service's slices, managed by us) list
/// `pods`. `svc` is `None` when the service is gone (its slices go with it through the
/// garbage collector) or not managed.
pub fn decide(
    svc: Option<&Service>,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
) -> Vec<SliceAction> {
    let Some(svc) = svc.filter(|s| managed_selector(s).is_some()) else {
        return Vec::new();
    };
    let ipv6 = service_is_ipv6(svc);
    let address_type = if ipv6 { "IPv6" } else { "IPv4" };
    let labels = slice_labels(svc);
    let mut trigger = BTreeMap::new();
    if let Some(t) = trigger_time(svc, pods.iter().copied()) {
        trigger.insert(LAST_CHANGE_TRIGGER_TIME.to_string(), format_time(&t));
    }

    // Desired endpoints, grouped by port set.
    let mut desired: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let mut sorted: Vec<&&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| (p.metadata.name.clone(), p.metadata.uid.clone()));
    for pod in sorted {
        if let Some((ports, endpoint)) = pod_endpoint(svc, pod, ipv6) {
            desired
                .entry(port_key(&ports))
                .or_insert_with(|| (ports, Vec::new()))
                .1
                .push(endpoint);
        }
    }

    let mut actions = Vec::new();
    let mut existing_by_ports: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        let wrong_type = s.address_type != address_type;
        if wrong_type {
            actions.push(SliceAction::Delete(
                s.metadata.name.clone().unwrap_or_default(),
            ));
            continue;
        }
        existing_by_ports
            .entry(port_key(&slice_ports(s)))
            .or_default()
            .push(s);
    }

    let new_slice = |ports: &[EndpointPort], endpoints: Vec<Endpoint>| -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!(
                    "{}-",
                    svc.metadata.name.clone().unwrap_or_default()
                )),
                namespace: svc.metadata.namespace.clone(),
                labels: Some(labels.clone()),
                annotations: (!trigger.is_empty()).then(|| trigger.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: svc.metadata.name.clone().unwrap_or_default(),
                    uid: svc.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            address_type: address_type.into(),
            endpoints: (!endpoints.is_empty()).then(|| endpoints.clone()),
            ports: (!ports.is_empty()).then(|| ports.to_vec()),
        }
    };
    let updated = |s: &EndpointSlice, endpoints: Vec<Endpoint>| -> EndpointSlice {
        let mut next = s.clone();
        next.metadata.managed_fields = None;
        next.metadata.labels = Some(labels.clone());
        let mut annotations = next.metadata.annotations.take().unwrap_or_default();
        annotations.remove(LAST_CHANGE_TRIGGER_TIME);
        annotations.extend(trigger.clone());
        next.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        next.endpoints = (!endpoints.is_empty()).then_some(endpoints);
        next
    };

    if desired.is_empty() {
        // Upstream keeps one empty placeholder slice for a service without endpoints.
        let mut kept = false;
        for s in existing_by_ports.into_values().flatten() {
            let placeholder =
                endpoints_of(s).is_empty() && s.ports.as_ref().map_or(true, Vec::is_empty);
            if placeholder && !kept {
                kept = true;
                if s.metadata.labels.as_ref() != Some(&labels) {
                    actions.push(SliceAction::Update(updated(s, Vec::new())));
                }
            } else {
                actions.push(SliceAction::Delete(
                    s.metadata.name.clone().unwrap_or_default(),
                ));
            }
        }
        if !kept {
            actions.push(SliceAction::Create(new_slice(&[], Vec::new())));
        }
        return actions;
    }

    for (key, (ports, endpoints)) in desired {
        let mut wanted: HashMap<String, Endpoint> = endpoints
            .iter()
            .map(|e| (endpoint_key(e), e.clone()))
            .collect();
        let mut order: Vec<String> = endpoints.iter().map(endpoint_key).collect();
        // Endpoints stay where they are; changed ones are rewritten in place.
        let mut kept: Vec<(&EndpointSlice, Vec<Endpoint>)> = Vec::new();
        for s in existing_by_ports.remove(&key).unwrap_or_default() {
            let next: Vec<Endpoint> = endpoints_of(s)
                .iter()
                .filter_map(|e| wanted.remove(&endpoint_key(e)))
                .collect();
            if next.is_empty() {
                actions.push(SliceAction::Delete(
                    s.metadata.name.clone().unwrap_or_default(),
                ));
            } else {
                kept.push((s, next));
            }
        }
        order.retain(|k| wanted.contains_key(k));
        let mut fresh: Vec<Endpoint> = order.iter().filter_map(|k| wanted.remove(k)).collect();
        // New endpoints fill the room left in existing slices, then new slices.
        for (s, next) in kept.iter_mut() {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(next.len());
            let take = room.min(fresh.len());
            next.extend(fresh.drain(..take));
            let _ = s;
        }
        for (s, next) in kept {
            let same =
                endpoints_of(s) == next.as_slice() && s.metadata.labels.as_ref() == Some(&labels);
            if !same {
                actions.push(SliceAction::Update(updated(s, next)));
            }
        }
        for chunk in fresh.chunks(MAX_ENDPOINTS_PER_SLICE) {
            actions.push(SliceAction::Create(new_slice(&ports, chunk.to_vec())));
        }
    }
    for s in existing_by_ports.into_values().flatten() {
        actions.push(SliceAction::Delete(
            s.metadata.name.clone().unwrap_or_default(),
        ));
    }
    actions
}

/// Our writes not yet seen in the cache, per service (upstream's slice tracker): deciding
/// from a cache that lacks a slice we just created would create it twice.
#[derive(Default)]
struct Expectations {
    pending: HashMap<ObjectKey, (Instant, Vec<(String, Option<u64>)>)>,
}

impl Expectations {
    fn expect(&mut self, svc: &ObjectKey, name: String, rv: Option<u64>) {
        let entry = self
            .pending
            .entry(svc.clone())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        entry.1.push((name, rv));
    }

    /// Whether the cache has caught up with our writes for `svc`.
    fn satisfied(&mut self, svc: &ObjectKey, slices: &Informer<EndpointSlice>) -> bool {
        let Some((since, writes)) = self.pending.get_mut(svc) else {
            return true;
        };
        writes.retain(|(name, rv)| {
            let cached = slices.get(&svc.namespace, name);
            match rv {
                // Deleted: wait until the cache drops it.
                None => cached.is_some(),
                Some(rv) => cached
                    .and_then(|s| s.metadata.resource_version.as_deref()?.parse::<u64>().ok())
                    .map_or(true, |seen| seen < *rv),
            }
        });
        if writes.is_empty() || since.elapsed() > EXPECTATION_LIMIT {
            self.pending.remove(svc);
            return true;
        }
        false
    }
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let (queue, services, pods, feed) = service_queue(ctx);
    let slices = ctx.informers.informer::<EndpointSlice>();
    let mut slice_changes = slices.subscribe();
    let client = ctx.client.clone();
    let recorder = ctx.recorder(COMPONENT);
    let workers = ctx.options.workers;
    async move {
        tokio::spawn(feed);
        let q = queue.clone();
        tokio::spawn(async move {
            while let Some(change) = slice_changes.recv().await {
                if let Change::Applied(s) | Change::Deleted(s) = change {
                    if let Some(svc) = managed_service(&s) {
                        q.add(ObjectKey::new(
                            s.metadata.namespace.as_deref().unwrap_or_default(),
                            svc,
                        ));
                    }
                }
            }
        });
        services.wait_synced().await;
        pods.wait_synced().await;
        slices.wait_synced().await;
        let state = Arc::new((
            client,
            services,
            pods,
            slices,
            Mutex::new(Expectations::default()),
            recorder,
        ));
        queue
            .run(
                workers,
                "endpointslice-controller",
                move |key: ObjectKey| {
                    let state = state.clone();
                    async move {
                        let (client, services, pods, slices, expectations, recorder) = &*state;
                        let result = sync(client, services, pods, slices, expectations, &key).await;
                        if let Err(e) = &result {
                            warn_sync_failed(recorder, services, &key, e).await;
                        }
                        result
                    }
                },
            )
            .await;
    }
    .boxed()
}

/// Reporting component of this controller's events, as upstream.
const COMPONENT: &str = "endpoint-slice-controller";

/// Upstream's Warning on the Service when its slices could not be written. An event
/// that cannot be written must not stop the sync.
async fn warn_sync_failed(
    recorder: &crate::events::Recorder,
    services: &Informer<Service>,
    key: &ObjectKey,
    e: &Error,
) {
    let Some(svc) = services.get_key(key) else {
        return;
    };
    let cause = match &e.source {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    };
    // Upstream's inner error reads "failed to create EndpointSlice for Service ns/name".
    let verb = match e.what {
        "creating" => "create",
        "updating" => "update",
        _ => "delete",
    };
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "FailedToUpdateEndpointSlices".into(),
        note: Some(format!(
            "Error updating Endpoint Slices for Service {ns}/{name}: failed to {verb} EndpointSlice for Service {ns}/{name}: {cause}",
            ns = key.namespace,
            name = key.name,
        )),
        action: "FailedToUpdateEndpointSlices".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &svc.object_ref(&())).await {
        tracing::warn!("{COMPONENT}: recording FailedToUpdateEndpointSlices for {key}: {err}");
    }
}

/// The service a slice belongs to, if this controller manages it.
fn managed_service(s: &EndpointSlice) -> Option<&str> {
    let labels = s.metadata.labels.as_ref()?;
    (labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME))
        .then(|| labels.get(SERVICE_NAME_LABEL).map(String::as_str))
        .flatten()
}

async fn sync(
    client: &kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    slices: &Informer<EndpointSlice>,
    expectations: &Mutex<Expectations>,
    key: &ObjectKey,
) -> Result<Option<Duration>, Error> {
    let lock = || expectations.lock().unwrap_or_else(|e| e.into_inner());
    if !lock().satisfied(key, slices) {
        return Ok(Some(Duration::from_millis(100)));
    }
    let svc = services.get_key(key);
    let selected = svc
        .as_deref()
        .map(|s| selected_pods(pods, s))
        .unwrap_or_default();
    let selected: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
    let mine: Vec<Arc<EndpointSlice>> = slices
        .list_namespace(&key.namespace)
        .into_iter()
        .filter(|s| managed_service(s) == Some(key.name.as_str()))
        .collect();
    let mine: Vec<&EndpointSlice> = mine.iter().map(|s| s.as_ref()).collect();
    let actions = decide(svc.as_deref(), &selected, &mine);
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
    let err = |what| {
        let service = key.to_string();
        move |source| Error {
            what,
            service,
            source,
        }
    };
    let rv_of = |s: &EndpointSlice| {
        s.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
    };
    for action in actions {
        match action {
            SliceAction::Create(s) => {
                let created = match api.create(&PostParams::default(), &s).await {
                    Ok(created) => created,
                    // Creates keep failing in a terminating namespace: drop the item, as
                    // upstream.
                    Err(kube::Error::Api(e))
                        if e.code == 403
                            && e.message.contains("because it is being terminated") =>
                    {
                        return Ok(None)
                    }
                    Err(e) => return Err(err("creating")(e)),
                };
                let name = created.metadata.name.clone().unwrap_or_default();
                lock().expect(key, name, rv_of(&created).or(Some(0)));
            }
            SliceAction::Update(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                match api.replace(&name, &PostParams::default(), &s).await {
                    Ok(updated) => lock().expect(key, name, rv_of(&updated).or(Some(0))),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(err("updating")(e)),
                }
            }
            SliceAction::Delete(name) => match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => lock().expect(key, name, None),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(err("deleting")(e)),
            },
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::pods::tests::{pod, port, svc};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn web() -> Service {
        svc(
            "web",
            &[("app", "web")],
            vec![port("http", 80, IntOrString::String("http".into()))],
        )
    }

    /// Apply actions to a fake store of slices, naming created ones.
    fn apply(store: &mut Vec<EndpointSlice>, actions: Vec<SliceAction>) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for a in actions {
            match a {
                SliceAction::Create(mut s) => {
                    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    s.metadata.name = Some(format!("web-{n:05}"));
                    store.push(s);
                }
                SliceAction::Update(s) => {
                    let i = store
                        .iter()
                        .position(|x| x.metadata.name == s.metadata.name)
                        .expect("updates an existing slice");
                    store[i] = s;
                }
                SliceAction::Delete(name) => {
                    store.retain(|x| x.metadata.name.as_deref() != Some(&name))
                }
            }
        }
    }

    fn count(store: &[EndpointSlice]) -> usize {
        store.iter().map(|s| endpoints_of(s).len()).sum()
    }

    #[test]
    fn endpoint_conditions() {
        let s = web();
        let ready = pod("a", Some("10.42.0.1"), true, &[("http", 8080)]);
        let not_ready = pod("b", Some("10.42.0.2"), false, &[("http", 8080)]);
        let mut terminating = ready.clone();
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let cond = |p: &Pod| pod_endpoint(&s, p, false).unwrap().1.conditions.unwrap();
        let cases = [
            ("ready", &ready, (true, true, false)),
            ("not ready", &not_ready, (false, false, false)),
            ("terminating", &terminating, (false, true, true)),
        ];
        for (name, p, (r, sv, t)) in cases {
            let c = cond(p);
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(r), Some(sv), Some(t)),
                "{name}"
            );
        }
        let (ports, e) = pod_endpoint(&s, &ready, false).unwrap();
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(e.addresses, vec!["10.42.0.1"]);
        assert_eq!(e.node_name.as_deref(), Some("node-1"));
        let without = pod("c", Some("10.42.0.3"), true, &[("metrics", 9100)]);
        assert!(
            pod_endpoint(&s, &without, false).unwrap().0.is_empty(),
            "named port missing"
        );
        assert!(
            pod_endpoint(&s, &pod("d", None, true, &[]), false).is_none(),
            "no IP"
        );
    }

    #[test]
    fn slices_follow_pods() {
        let s = web();
        let mut store: Vec<EndpointSlice> = Vec::new();
        // No pods: one placeholder.
        apply(&mut store, decide(Some(&s), &[], &[]));
        assert_eq!(store.len(), 1);
        assert!(endpoints_of(&store[0]).is_empty());
        let labels = store[0].metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(store[0].metadata.generate_name.as_deref(), Some("web-"));
        let owner = &store[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Service", Some(true))
        );

        // 250 pods: the placeholder goes, three slices of at most 100.
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.42.{}.{}", i / 200, i % 200)),
                    true,
                    &[("http", 8080)],
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let view: Vec<EndpointSlice> = store.clone();
        apply(
            &mut store,
            decide(Some(&s), &refs, &view.iter().collect::<Vec<_>>()),
        );
        assert_eq!(store.len(), 3);
        assert!(store
            .iter()
            .all(|x| endpoints_of(x).len() <= MAX_ENDPOINTS_PER_SLICE));
        assert_eq!(count(&store), 250);

        // Steady state: nothing to write.
        let view = store.clone();
        assert!(decide(Some(&s), &refs, &view.iter().collect::<Vec<_>>()).is_empty());

        // One pod turns not ready: exactly one slice is rewritten.
        let mut changed = pods.clone();
        changed[7]
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        let refs2: Vec<&Pod> = changed.iter().collect();
        let actions = decide(Some(&s), &refs2, &view.iter().collect::<Vec<_>>());
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(matches!(actions[0], SliceAction::Update(_)));

        // A pod without the named port moves to a slice without ports.
        let mut mixed = pods[..3].to_vec();
        mixed.push(pod("np", Some("10.42.9.9"), true, &[("metrics", 9100)]));
        let refs3: Vec<&Pod> = mixed.iter().collect();
        let mut small = Vec::new();
        apply(&mut small, decide(Some(&s), &refs3, &[]));
        assert_eq!(small.len(), 2);
        assert!(small
            .iter()
            .any(|x| x.ports.is_none() && endpoints_of(x).len() == 1));

        // Service gone or no longer selecting: nothing here (the GC removes owned slices).
        assert!(decide(None, &refs, &view.iter().collect::<Vec<_>>()).is_empty());
    }

    #[test]
    fn slices_that_empty_are_deleted_and_wrong_ones_replaced() {
        let s = web();
        let pods: Vec<Pod> = (0..3)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("10.42.0.{i}")),
                    true,
                    &[("http", 8080)],
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut store = Vec::new();
        apply(&mut store, decide(Some(&s), &refs, &[]));
        assert_eq!(store.len(), 1);
        // All pods gone: the slice empties, a placeholder replaces it.
        let view = store.clone();
        apply(
            &mut store,
            decide(Some(&s), &[], &view.iter().collect::<Vec<_>>()),
        );
        assert_eq!(store.len(), 1);
        assert!(endpoints_of(&store[0]).is_empty());
        assert_ne!(store[0].metadata.name, view[0].metadata.name);
    }
}
