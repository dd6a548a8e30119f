//! The scheduler's loop (the acting half): informer changes go into the cache and queue;
//! each popped pod is decided by [`framework::schedule`] over the cache's snapshot; the
//! result is acted on without waiting: a placed pod is assumed on its node and bound in
//! the background (many binds in flight), a pod that fits nowhere gets its PodScheduled
//! condition and a (rate-limited) FailedScheduling event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use informers::{Change, Informer, ObjectKey, Subscription};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, Semaphore};

use crate::cache::{self, Cache, PodEffect};
use crate::framework::{self, Cursor, PodInfo, Profile, TieBreaker};
use crate::plugins::pod_topology_spread;
use crate::plugins::volume_binding::{self, BindStep};
use crate::queue::{ClusterEvent, SchedulingQueue};
use crate::SCHEDULER_NAME;

/// Bindings in flight at once.
pub(crate) const MAX_BINDS_IN_FLIGHT: usize = 256;
/// Pods decided between two looks at the informers and a yield to other tasks.
const BATCH: usize = 64;
/// The same FailedScheduling message for the same pod is recorded at most this often.
const FAILURE_EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// How often unschedulable pods are checked for the five-minute retry.
const LEFTOVER_FLUSH_PERIOD: Duration = Duration::from_secs(30);
/// How long PreBind waits for a pod's claims to be bound (upstream `bindTimeoutSeconds`).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How often PreBind looks at the claim cache while it waits.
const VOLUME_BIND_POLL: Duration = Duration::from_millis(100);

/// What a background bind reports back to the loop.
enum BindOutcome {
    Bound,
    Failed {
        pod: Arc<Pod>,
        node: String,
        error: String,
        /// False when retrying cannot help (the pod is gone or bound already).
        retry: bool,
    },
}

/// Why the loop woke up while idle.
enum Wake {
    Pod(Option<Change<Pod>>),
    Node(Option<Change<Node>>),
    Namespace(Option<Change<Namespace>>),
    Volume(Option<VolumeChange>),
    Outcome(Option<BindOutcome>),
    Timer,
}

/// A change to one of the kinds VolumeBinding reads.
enum VolumeChange {
    Claim(Change<PersistentVolumeClaim>),
    Volume(Change<PersistentVolume>),
    Class(Change<StorageClass>),
}

/// The informers and subscriptions VolumeBinding reads.
struct VolumeInformers {
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    claim_changes: Subscription<PersistentVolumeClaim>,
    volume_changes: Subscription<PersistentVolume>,
    class_changes: Subscription<StorageClass>,
}

impl VolumeInformers {
    async fn recv(&mut self) -> Option<VolumeChange> {
        tokio::select! {
            c = self.claim_changes.recv() => c.map(VolumeChange::Claim),
            c = self.volume_changes.recv() => c.map(VolumeChange::Volume),
            c = self.class_changes.recv() => c.map(VolumeChange::Class),
        }
    }
}

/// The listers upstream's `DefaultSelector` reads: the Services, ReplicaSets and
/// StatefulSets that own pods, for the cluster-default spreading constraints.
struct SpreadOwners {
    services: Informer<Service>,
    replica_sets: Informer<ReplicaSet>,
    stateful_sets: Informer<StatefulSet>,
}

impl SpreadOwners {
    /// The default spreading selector for a pod that declares no constraints (`None` when
    /// it declares some or nothing owns it).
    fn default_selector(&self, pod: &Pod) -> Option<api::selectors::LabelSelector> {
        let declares = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if declares {
            return None;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let services = self.services.list_namespace(namespace);
        let service_selectors = services
            .iter()
            .filter_map(|s| s.spec.as_ref().and_then(|s| s.selector.as_ref()));
        let controller_selector = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.api_version == "apps/v1")
            .and_then(|o| {
                let selector = match o.kind.as_str() {
                    "ReplicaSet" => self
                        .replica_sets
                        .get(namespace, &o.name)
                        .map(|rs| rs.spec.selector.clone()),
                    "StatefulSet" => self
                        .stateful_sets
                        .get(namespace, &o.name)
                        .map(|ss| ss.spec.selector.clone()),
                    _ => None,
                }?;
                api::selectors::LabelSelector::from_label_selector(&selector).ok()
            });
        let selector = crate::plugins::pod_topology_spread::default_selector(
            pod,
            service_selectors,
            controller_selector.as_ref(),
        );
        (!selector.is_empty() && !selector.is_nothing()).then_some(selector)
    }
}

pub(crate) struct Scheduler {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    namespaces: Informer<Namespace>,
    pod_changes: Subscription<Pod>,
    node_changes: Subscription<Node>,
    namespace_changes: Subscription<Namespace>,
    storage: VolumeInformers,
    owners: SpreadOwners,
    profile: Profile,
    cache: Cache,
    queue: SchedulingQueue,
    cursor: Cursor,
    ties: TieBreaker,
    binds: Arc<Semaphore>,
    outcomes_tx: mpsc::UnboundedSender<BindOutcome>,
    outcomes_rx: mpsc::UnboundedReceiver<BindOutcome>,
    failure_recorder: Recorder,
    last_failure_event: HashMap<ObjectKey, (String, Instant)>,
}

/// Pods this scheduler must place: ours by name, not placed, not going away, not gated.
pub fn responsible_for(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("") | Some(SCHEDULER_NAME)
    );
    ours && cache::node_name(pod).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && !cache::is_terminal(pod)
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
}

fn reporter() -> Reporter {
    Reporter {
        controller: SCHEDULER_NAME.to_string(),
        instance: None,
    }
}

/// Whether a node change may let pending pods fit somewhere new.
fn node_change_matters(old: Option<&Node>, new: &Node) -> bool {
    let Some(old) = old else {
        return true;
    };
    old.metadata.labels != new.metadata.labels
        || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
            != new.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
        || old.status.as_ref().map(|s| &s.allocatable)
            != new.status.as_ref().map(|s| &s.allocatable)
}

impl Scheduler {
    pub fn new(client: Client, factory: &Arc<informers::Factory>) -> Scheduler {
        let pods = factory.informer::<Pod>();
        let nodes = factory.informer::<Node>();
        let namespaces = factory.informer::<Namespace>();
        let claims = factory.informer::<PersistentVolumeClaim>();
        let volumes = factory.informer::<PersistentVolume>();
        let classes = factory.informer::<StorageClass>();
        let storage = VolumeInformers {
            claim_changes: claims.subscribe(),
            volume_changes: volumes.subscribe(),
            class_changes: classes.subscribe(),
            claims,
            volumes,
            classes,
        };
        let owners = SpreadOwners {
            services: factory.informer::<Service>(),
            replica_sets: factory.informer::<ReplicaSet>(),
            stateful_sets: factory.informer::<StatefulSet>(),
        };
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Scheduler {
            pod_changes: pods.subscribe(),
            node_changes: nodes.subscribe(),
            namespace_changes: namespaces.subscribe(),
            storage,
            owners,
            failure_recorder: Recorder::new(client.clone(), reporter()),
            client,
            pods,
            nodes,
            namespaces,
            profile: crate::plugins::default_profile(),
            cache: Cache::new(),
            queue: SchedulingQueue::new(),
            cursor: Cursor::default(),
            ties: TieBreaker::new(seed),
            binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
            outcomes_tx,
            outcomes_rx,
            last_failure_event: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        // Deciding before the first lists are in would report nodes as missing.
        self.nodes.wait_synced().await;
        self.namespaces.wait_synced().await;
        self.pods.wait_synced().await;
        self.storage.claims.wait_synced().await;
        self.storage.volumes.wait_synced().await;
        self.storage.classes.wait_synced().await;
        self.owners.services.wait_synced().await;
        self.owners.replica_sets.wait_synced().await;
        self.owners.stateful_sets.wait_synced().await;
        tracing::info!("scheduler started");
        let mut last_leftover_flush = Instant::now();
        loop {
            if !self.drain_changes() {
                tracing::info!("scheduler stopping: informers closed");
                return;
            }
            let now = Instant::now();
            if now.duration_since(last_leftover_flush) >= LEFTOVER_FLUSH_PERIOD {
                self.queue.flush_unschedulable_leftovers(now);
                last_leftover_flush = now;
            }
            let mut decided = 0;
            while decided < BATCH {
                let Some((queued, cycle)) = self.queue.pop(Instant::now()) else {
                    break;
                };
                self.schedule_one(queued.pod, cycle);
                decided += 1;
            }
            if decided > 0 {
                tokio::task::yield_now().await;
                continue;
            }
            if !self.wait_for_work().await {
                tracing::info!("scheduler stopping: informers closed");
                return;
            }
        }
    }

    /// Take in every change already waiting, without blocking. False once closed.
    fn drain_changes(&mut self) -> bool {
        loop {
            let mut progressed = false;
            match self.node_changes.recv().now_or_never() {
                Some(Some(c)) => {
                    self.on_node(c);
                    progressed = true;
                }
                Some(None) => return false,
                None => {}
            }
            match self.namespace_changes.recv().now_or_never() {
                Some(Some(c)) => {
                    self.on_namespace(c);
                    progressed = true;
                }
                Some(None) => return false,
                None => {}
            }
            match self.pod_changes.recv().now_or_never() {
                Some(Some(c)) => {
                    self.on_pod(c);
                    progressed = true;
                }
                Some(None) => return false,
                None => {}
            }
            match self.storage.recv().now_or_never() {
                Some(Some(c)) => {
                    self.on_volume_change(c);
                    progressed = true;
                }
                Some(None) => return false,
                None => {}
            }
            while let Ok(o) = self.outcomes_rx.try_recv() {
                self.on_outcome(o);
                progressed = true;
            }
            if !progressed {
                return true;
            }
        }
    }

    /// Sleep until something changes or a back-off ends. False once closed.
    async fn wait_for_work(&mut self) -> bool {
        let now = Instant::now();
        let until = self
            .queue
            .next_backoff_expiry()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        let wake = tokio::select! {
            c = self.pod_changes.recv() => Wake::Pod(c),
            c = self.node_changes.recv() => Wake::Node(c),
            c = self.namespace_changes.recv() => Wake::Namespace(c),
            c = self.storage.recv() => Wake::Volume(c),
            o = self.outcomes_rx.recv() => Wake::Outcome(o),
            _ = tokio::time::sleep_until(until.into()) => Wake::Timer,
        };
        match wake {
            Wake::Pod(Some(c)) => self.on_pod(c),
            Wake::Node(Some(c)) => self.on_node(c),
            Wake::Namespace(Some(c)) => self.on_namespace(c),
            Wake::Volume(Some(c)) => self.on_volume_change(c),
            Wake::Outcome(Some(o)) => self.on_outcome(o),
            Wake::Outcome(None) => {}
            Wake::Timer => {}
            Wake::Pod(None) | Wake::Node(None) | Wake::Namespace(None) | Wake::Volume(None) => {
                return false
            }
        }
        true
    }

    fn on_pod(&mut self, change: Change<Pod>) {
        let now = Instant::now();
        match change {
            Change::Applied(pod) => {
                let key = ObjectKey::of(pod.as_ref());
                match self.cache.pod_applied(&pod) {
                    PodEffect::Placed => self
                        .queue
                        .on_cluster_event(ClusterEvent::AssignedPodChanged, now),
                    PodEffect::Left => self
                        .queue
                        .on_cluster_event(ClusterEvent::AssignedPodDeleted, now),
                    PodEffect::None => {}
                }
                if responsible_for(&pod) {
                    if !self.cache.is_assumed(&key) {
                        self.queue.add_or_update(pod, now);
                    }
                } else {
                    self.queue.remove(&key);
                    if cache::node_name(&pod).is_some() {
                        self.last_failure_event.remove(&key);
                    }
                }
            }
            Change::Deleted(pod) => {
                let key = ObjectKey::of(pod.as_ref());
                if self.cache.pod_deleted(&key) == PodEffect::Left {
                    self.queue
                        .on_cluster_event(ClusterEvent::AssignedPodDeleted, now);
                }
                self.queue.remove(&key);
                self.last_failure_event.remove(&key);
            }
            Change::Resync => self.resync_pods(),
        }
    }

    /// The pod subscription fell behind: rebuild cache and queue from the informer.
    fn resync_pods(&mut self) {
        let now = Instant::now();
        let pods = self.pods.list();
        self.cache.rebuild_pods(&pods);
        let pending: std::collections::HashSet<ObjectKey> = pods
            .iter()
            .filter(|p| responsible_for(p))
            .map(|p| ObjectKey::of(p.as_ref()))
            .collect();
        for pod in &pods {
            let key = ObjectKey::of(pod.as_ref());
            if pending.contains(&key) && !self.cache.is_assumed(&key) && !self.queue.contains(&key)
            {
                self.queue.add_or_update(pod.clone(), now);
            }
        }
        for key in self.queue.keys() {
            if !pending.contains(&key) {
                self.queue.remove(&key);
            }
        }
        self.queue.on_cluster_event(ClusterEvent::NodeChanged, now);
        tracing::debug!(pods = pods.len(), "scheduler resynced pods");
    }

    fn on_node(&mut self, change: Change<Node>) {
        let now = Instant::now();
        match change {
            Change::Applied(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let matters = node_change_matters(
                    self.cache
                        .snapshot
                        .node(&name)
                        .and_then(|n| n.node.as_deref()),
                    &node,
                );
                self.cache.node_applied(node);
                if matters {
                    self.queue.on_cluster_event(ClusterEvent::NodeChanged, now);
                }
            }
            Change::Deleted(node) => {
                self.cache
                    .node_deleted(node.metadata.name.as_deref().unwrap_or(""));
            }
            Change::Resync => {
                let fresh = self.nodes.list();
                let names: std::collections::HashSet<String> = fresh
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                let gone: Vec<String> = self
                    .cache
                    .snapshot
                    .nodes
                    .iter()
                    .filter(|n| n.node.is_some() && !names.contains(&n.name))
                    .map(|n| n.name.clone())
                    .collect();
                for name in gone {
                    self.cache.node_deleted(&name);
                }
                for n in fresh {
                    self.cache.node_applied(n);
                }
                self.queue.on_cluster_event(ClusterEvent::NodeChanged, now);
            }
        }
    }

    fn on_namespace(&mut self, change: Change<Namespace>) {
        match change {
            Change::Applied(ns) => self.cache.namespace_applied(&ns),
            Change::Deleted(ns) => self
                .cache
                .namespace_deleted(ns.metadata.name.as_deref().unwrap_or("")),
            Change::Resync => {
                self.cache.snapshot.namespace_labels.clear();
                for ns in self.namespaces.list() {
                    self.cache.namespace_applied(&ns);
                }
            }
        }
    }

    /// Keep the snapshot's claims, volumes and classes current; any change may let a pod
    /// VolumeBinding rejected fit.
    fn on_volume_change(&mut self, change: VolumeChange) {
        let v = Arc::make_mut(&mut self.cache.snapshot.volumes);
        match change {
            VolumeChange::Claim(Change::Applied(c)) => {
                v.claims.insert(ObjectKey::of(c.as_ref()), c);
            }
            VolumeChange::Claim(Change::Deleted(c)) => {
                v.claims.remove(&ObjectKey::of(c.as_ref()));
            }
            VolumeChange::Claim(Change::Resync) => {
                v.claims = self
                    .storage
                    .claims
                    .list()
                    .into_iter()
                    .map(|c| (ObjectKey::of(c.as_ref()), c))
                    .collect();
            }
            VolumeChange::Volume(Change::Applied(p)) => {
                v.volumes
                    .insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            VolumeChange::Volume(Change::Deleted(p)) => {
                v.volumes.remove(p.metadata.name.as_deref().unwrap_or(""));
            }
            VolumeChange::Volume(Change::Resync) => {
                v.volumes = self
                    .storage
                    .volumes
                    .list()
                    .into_iter()
                    .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
                    .collect();
            }
            VolumeChange::Class(Change::Applied(c)) => {
                v.classes
                    .insert(c.metadata.name.clone().unwrap_or_default(), c);
            }
            VolumeChange::Class(Change::Deleted(c)) => {
                v.classes.remove(c.metadata.name.as_deref().unwrap_or(""));
            }
            VolumeChange::Class(Change::Resync) => {
                v.classes = self
                    .storage
                    .classes
                    .list()
                    .into_iter()
                    .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
                    .collect();
            }
        }
        self.queue
            .on_cluster_event(ClusterEvent::VolumeChanged, Instant::now());
    }

    fn on_outcome(&mut self, outcome: BindOutcome) {
        match outcome {
            BindOutcome::Bound => {}
            BindOutcome::Failed {
                pod,
                node,
                error,
                retry,
            } => {
                let key = ObjectKey::of(pod.as_ref());
                tracing::warn!("scheduler: binding {key} to {node} failed: {error}");
                self.cache.forget(&key);
                // Resources the assumption held are free again.
                self.queue
                    .on_cluster_event(ClusterEvent::AssignedPodDeleted, Instant::now());
                if retry {
                    let latest = self.pods.get_key(&key).unwrap_or(pod);
                    if responsible_for(&latest) {
                        self.queue.retry(latest, Instant::now());
                    }
                }
            }
        }
    }

    /// Decide for one pod, then act without waiting for the API.
    fn schedule_one(&mut self, queued: Arc<Pod>, cycle: u64) {
        let key = ObjectKey::of(queued.as_ref());
        // The informer may know a newer version (or that the pod is gone or bound).
        let Some(pod) = self.pods.get_key(&key) else {
            self.queue.remove(&key);
            return;
        };
        if !responsible_for(&pod) {
            self.queue.remove(&key);
            return;
        }
        let mut info = PodInfo::new(pod.clone());
        info.default_spread_selector = self.owners.default_selector(&pod);
        let info = Arc::new(info);
        // Spreading counts the pods its selectors match on every node: the snapshot keeps
        // those counts from now on (a no-op for selectors it tracks already).
        for selector in pod_topology_spread::counted_selectors(&info) {
            self.cache
                .snapshot
                .track_selector(info.namespace(), &selector);
        }
        let decision = framework::schedule(
            &self.profile,
            &info,
            &self.cache.snapshot,
            &mut self.cursor,
            &mut self.ties,
        );
        match decision {
            Ok(node) => {
                let volume_plan = match self.cache.snapshot.node(&node) {
                    Some(n) => volume_binding::plan_binding(&info, n, &self.cache.snapshot.volumes),
                    None => (Vec::new(), Vec::new()),
                };
                self.cache.assume(&node, info);
                self.queue.done(&key);
                self.last_failure_event.remove(&key);
                self.spawn_bind(pod, node, volume_plan);
            }
            Err(fit) => {
                let message = fit.message();
                tracing::debug!("scheduler: {key}: {message}");
                self.queue
                    .unschedulable(&key, fit.plugins(), cycle, Instant::now());
                self.report_unschedulable(pod, message);
            }
        }
    }

    fn spawn_bind(
        &self,
        pod: Arc<Pod>,
        node: String,
        volume_plan: (Vec<BindStep>, Vec<ObjectKey>),
    ) {
        let client = self.client.clone();
        let permits = self.binds.clone();
        let outcomes = self.outcomes_tx.clone();
        let claims = self.storage.claims.clone();
        let volumes = self.storage.volumes.clone();
        let recorder = self.failure_recorder.clone();
        tokio::spawn(async move {
            let (steps, wait_for) = volume_plan;
            if !wait_for.is_empty() {
                // PreBind: outside the bind permits, since it may wait for provisioning.
                if let Err(error) =
                    bind_volumes(&client, &claims, &volumes, &steps, &wait_for).await
                {
                    let message = format!("running PreBind plugin \"VolumeBinding\": {error}");
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "FailedScheduling".into(),
                        note: Some(message.clone()),
                        action: "Scheduling".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &pod.object_ref(&())).await {
                        tracing::debug!("scheduler: recording FailedScheduling: {e}");
                    }
                    let _ = outcomes.send(BindOutcome::Failed {
                        pod: pod.clone(),
                        node: node.clone(),
                        error: message,
                        retry: true,
                    });
                    return;
                }
            }
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let outcome = bind(&client, &pod, &node).await;
            // The permit bounds binds in flight; the Scheduled event that follows a bind
            // must not hold back the next one.
            drop(_permit);
            let bound = matches!(outcome, BindOutcome::Bound);
            let _ = outcomes.send(outcome);
            if bound {
                record_scheduled(&client, &pod, &node).await;
            }
        });
    }

    /// PodScheduled=False/Unschedulable on the pod and a FailedScheduling event, the event
    /// no more than once a minute for an unchanged message.
    fn report_unschedulable(&mut self, pod: Arc<Pod>, message: String) {
        let key = ObjectKey::of(pod.as_ref());
        let now = Instant::now();
        let record_event = match self.last_failure_event.get(&key) {
            Some((last, at)) => {
                *last != message || now.duration_since(*at) >= FAILURE_EVENT_INTERVAL
            }
            None => true,
        };
        if record_event {
            self.last_failure_event
                .insert(key.clone(), (message.clone(), now));
        }
        let condition_current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(message.as_str())
            });
        if condition_current && !record_event {
            return;
        }
        let client = self.client.clone();
        let recorder = self.failure_recorder.clone();
        tokio::spawn(async move {
            if !condition_current {
                if let Err(e) = set_unschedulable_condition(&client, &pod, &message).await {
                    tracing::debug!("scheduler: recording PodScheduled=False on {key}: {e}");
                }
            }
            if record_event {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "FailedScheduling".into(),
                    note: Some(message),
                    action: "Scheduling".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &pod.object_ref(&())).await {
                    tracing::warn!("scheduler: recording FailedScheduling for {key}: {e}");
                }
            }
        });
    }
}

/// PreBind for VolumeBinding: write the plan (pre-bind static volumes, select the node on
/// claims to provision), then wait until the PV controller has bound every claim.
async fn bind_volumes(
    client: &Client,
    claims: &Informer<PersistentVolumeClaim>,
    volumes: &Informer<PersistentVolume>,
    steps: &[BindStep],
    wait_for: &[ObjectKey],
) -> Result<(), String> {
    for step in steps {
        match step {
            BindStep::SelectNode { claim, node } => {
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(client.clone(), &claim.namespace);
                let patch = serde_json::json!({"metadata": {"annotations": {
                    api::volumes::ANN_SELECTED_NODE: node,
                }}});
                api.patch(&claim.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| {
                        format!("binding volumes: selecting node {node} on claim {claim}: {e}")
                    })?;
            }
            BindStep::PreBindVolume { volume, claim } => {
                let (Some(pv), Some(pvc)) = (volumes.get("", volume), claims.get_key(claim)) else {
                    return Err(format!(
                        "binding volumes: volume {volume} or claim {claim} is gone"
                    ));
                };
                let mut pv = (*pv).clone();
                pv.spec.get_or_insert_with(Default::default).claim_ref =
                    Some(k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("PersistentVolumeClaim".into()),
                        namespace: pvc.metadata.namespace.clone(),
                        name: pvc.metadata.name.clone(),
                        uid: pvc.metadata.uid.clone(),
                        resource_version: pvc.metadata.resource_version.clone(),
                        ..Default::default()
                    });
                pv.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(api::volumes::ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
                let api: Api<PersistentVolume> = Api::all(client.clone());
                // The cached resourceVersion makes a volume taken meanwhile a conflict.
                api.replace(volume, &PostParams::default(), &pv)
                    .await
                    .map_err(|e| {
                        format!("binding volumes: pre-binding volume {volume} to {claim}: {e}")
                    })?;
            }
        }
    }
    let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
    loop {
        let mut pending = None;
        for key in wait_for {
            let Some(claim) = claims.get_key(key) else {
                return Err(format!(
                    "binding volumes: persistentvolumeclaim {key} was deleted"
                ));
            };
            let volume_name = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            let volume = (!volume_name.is_empty())
                .then(|| volumes.get("", &volume_name))
                .flatten();
            if !volume_binding::claim_fully_bound(&claim, volume.as_deref()) {
                pending = Some(key);
                break;
            }
        }
        let Some(key) = pending else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "binding volumes: timed out waiting for persistentvolumeclaim {key} to be bound"
            ));
        }
        tokio::time::sleep(VOLUME_BIND_POLL).await;
    }
}

/// POST pods/binding. Conflicts (already bound, being deleted) and NotFound end the
/// attempt; other errors are retried.
async fn bind(client: &Client, pod: &Arc<Pod>, node: &str) -> BindOutcome {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    // The answer is a Status; only success or the error matters.
    match api
        .create_subresource::<_, serde::de::IgnoredAny>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => BindOutcome::Bound,
        Err(e) => {
            let retry = !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            BindOutcome::Failed {
                pod: pod.clone(),
                node: node.to_string(),
                error: format!("binding {ns}/{name} to {node}: {e}"),
                retry,
            }
        }
    }
}

/// The `Scheduled` event (events.k8s.io/v1), the Event kube-runtime's recorder would
/// create for a first occurrence, written without decoding the Event the API answers
/// with. Scheduled never repeats for a pod, so there is no series to fold into.
async fn record_scheduled(client: &Client, pod: &Pod, node: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = k8s_openapi::api::events::v1::Event {
        action: Some("Binding".into()),
        reason: Some("Scheduled".into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(pod.object_ref(&())),
        note: Some(format!("Successfully assigned {ns}/{name} to {node}")),
        metadata: ObjectMeta {
            namespace: pod.metadata.namespace.clone(),
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            ..Default::default()
        },
        reporting_controller: Some(SCHEDULER_NAME.to_string()),
        reporting_instance: Some(SCHEDULER_NAME.to_string()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    let namespace = if ns.is_empty() { "default" } else { ns };
    let result = async {
        let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
        let mut req = kube::core::Request::new(k8s_openapi::api::events::v1::Event::url_path(
            &(),
            Some(namespace),
        ))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("create");
        client.request::<serde::de::IgnoredAny>(req).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("scheduler: recording Scheduled for {ns}/{name}: {e}");
    }
}

/// Write PodScheduled=False with reason Unschedulable, as a status update conditioned on
/// the resourceVersion the decision saw (a pod bound meanwhile must not be marked).
async fn set_unschedulable_condition(
    client: &Client,
    pod: &Pod,
    message: &str,
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut updated = pod.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = conditions.iter().position(|c| c.type_ == "PodScheduled");
    let transition = previous
        .and_then(|i| {
            let c = &conditions[i];
            (c.status == "False")
                .then(|| c.last_transition_time.clone())
                .flatten()
        })
        .unwrap_or_else(|| now.clone());
    let condition = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_string()),
        last_probe_time: None,
        last_transition_time: Some(transition),
        ..Default::default()
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.replace_status(&name, &PostParams::default(), &updated)
        .await?;
    Ok(())
}
