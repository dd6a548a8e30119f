//! The scheduling framework: the snapshot of the cluster a decision is made over (nodes and
//! the pods on each), Filter and Score plugin traits with their [`Status`], and
//! [`schedule`], the pure function that picks a node for a pod or explains why none fits
//! (the [`FitError`] whose message is upstream's FailedScheduling text).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use informers::ObjectKey;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::resources::{self, Resources};
use crate::selector_index::{pod_counts_for, NodeId, SelectorIndex, Tracked};

/// Highest score a plugin gives a node (upstream `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Below this many nodes every node is examined (upstream `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Lowest adaptive share of nodes examined (upstream `minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The node may fit later (or after preemption): resources, inter-pod rules.
    Unschedulable,
    /// Nothing short of changing the node or the pod helps: taints, selectors, cordon.
    UnschedulableAndUnresolvable,
}

/// A plugin's verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    /// The plugin that said no (decides which cluster changes may help the pod).
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// A pod with what the plugins need computed once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: ObjectKey,
    pub requests: Resources,
    /// CPU (millicores) and memory with scoring's defaults for unset requests.
    pub non_zero: (i64, i64),
    pub priority: i32,
    /// (protocol, hostIP, hostPort) the pod claims on its node.
    pub host_ports: Vec<(String, String, i32)>,
    pub has_required_anti_affinity: bool,
    /// Any pod (anti-)affinity term, required or preferred.
    pub has_affinity: bool,
    /// The selector of the Services and controller that own the pod, for the cluster-default
    /// spreading constraints of a pod that declares none (upstream `DefaultSelector`); set by
    /// the scheduler loop, which has the listers. `None`: no defaults apply.
    pub default_spread_selector: Option<api::selectors::LabelSelector>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let key = ObjectKey::of(pod.as_ref());
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let has_required_anti_affinity = anti
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty());
        let has_affinity =
            affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let mut host_ports = Vec::new();
        for c in spec.iter().flat_map(|s| s.containers.iter()) {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_default(),
                        hp,
                    ));
                }
            }
        }
        PodInfo {
            requests: resources::pod_requests(&pod),
            non_zero: resources::pod_non_zero_requests(&pod),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            host_ports,
            has_required_anti_affinity,
            has_affinity,
            default_spread_selector: None,
            key,
            pod,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }
}

/// One node and the pods that count on it (bound or assumed).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// None while pods name a node the cache has not seen (or no longer has). Read it
    /// freely; change it only through [`NodeInfo::set_node`] / [`NodeInfo::clear_node`],
    /// which keep the copies below (unschedulable, taints, topology values) in step.
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: (i64, i64),
    /// Change only through [`NodeInfo::add_pod`] / [`NodeInfo::remove_pod`] (they keep the
    /// counters right), and, for a node in a [`Snapshot`], only through the snapshot's
    /// methods (they keep its [`SelectorIndex`] right).
    pub pods: Vec<Arc<PodInfo>>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    /// Its identity in the snapshot's [`SelectorIndex`] (0 outside a snapshot).
    id: NodeId,
    /// What the filters and PodTopologySpread read of the node for every pod, copied out
    /// of it when the node is set: reading them through `node` meant a walk through cold
    /// memory per node and pod (the first filter to touch a node took ~6% of a busy
    /// server's CPU at 5,000 nodes, the label-map walks for the default topology keys 16%).
    unschedulable: bool,
    taints: Vec<Taint>,
    /// The node's values of [`DEFAULT_TOPOLOGY_KEYS`], each with its [`topology_hash`].
    default_topology: [Option<(u64, Box<str>)>; 2],
}

/// A label key, with its place among [`DEFAULT_TOPOLOGY_KEYS`] found once.
#[derive(Clone, Copy, Debug)]
pub struct TopologyKey<'a> {
    key: &'a str,
    default_slot: Option<usize>,
}

impl<'a> TopologyKey<'a> {
    pub fn of(key: &'a str) -> TopologyKey<'a> {
        TopologyKey {
            key,
            default_slot: DEFAULT_TOPOLOGY_KEYS.iter().position(|k| *k == key),
        }
    }

    /// A key whose place [`TopologyKey::slot`] gave earlier.
    pub fn with_slot(key: &'a str, slot: Option<usize>) -> TopologyKey<'a> {
        TopologyKey {
            key,
            default_slot: slot,
        }
    }

    /// The key's place among [`DEFAULT_TOPOLOGY_KEYS`], to keep with an owned key.
    pub fn slot(&self) -> Option<usize> {
        self.default_slot
    }

    /// Whether this is the hostname key (each node its own domain).
    pub fn is_hostname(&self) -> bool {
        self.default_slot == Some(0)
    }
}

/// The hash PodTopologySpread groups topology values by (a fixed seed, so a value kept
/// with a node and one computed during scoring agree).
pub fn topology_hash(value: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(value)
}

/// The label keys of PodTopologySpread's system-default constraints, hostname and zone.
pub const DEFAULT_TOPOLOGY_KEYS: [&str; 2] =
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

impl NodeInfo {
    /// This node's pods in `namespace` (not terminating) that `selector` matches, counted
    /// by looking at each (what [`Snapshot::matching`] answers without looking).
    pub fn count_matching(&self, namespace: &str, selector: &api::selectors::LabelSelector) -> i64 {
        self.pods
            .iter()
            .filter(|p| pod_counts_for(p, namespace, selector))
            .count() as i64
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            node: None,
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: (0, 0),
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            id: 0,
            unschedulable: false,
            taints: Vec::new(),
            default_topology: [None, None],
        }
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = resources::node_allocatable(&node);
        let labels = node.metadata.labels.as_ref();
        self.default_topology = DEFAULT_TOPOLOGY_KEYS.map(|key| {
            labels
                .and_then(|l| l.get(key))
                .map(|v| (topology_hash(v), v.as_str().into()))
        });
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.node = Some(node);
    }

    /// The node is gone while pods still name it.
    pub fn clear_node(&mut self) {
        self.node = None;
        self.unschedulable = false;
        self.taints = Vec::new();
        self.default_topology = [None, None];
    }

    /// The node's label `key`, the default topology keys from the copy kept with the node.
    pub fn topology_label(&self, key: &str) -> Option<&str> {
        self.topology_value(key).map(|(_, v)| v)
    }

    /// The node's label `key` with its [`topology_hash`], computed once per node for the
    /// default topology keys.
    pub fn topology_value(&self, key: &str) -> Option<(u64, &str)> {
        self.topology_value_at(TopologyKey::of(key))
    }

    /// [`NodeInfo::topology_value`] for a key already looked up (no string compare per node).
    pub fn topology_value_at(&self, key: TopologyKey<'_>) -> Option<(u64, &str)> {
        match key.default_slot {
            Some(i) => self.default_topology[i]
                .as_ref()
                .map(|(hash, v)| (*hash, &**v)),
            None => self
                .labels()
                .get(key.key)
                .map(|v| (topology_hash(v), v.as_str())),
        }
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        if pod.has_affinity {
            self.pods_with_affinity += 1;
        }
        if pod.has_required_anti_affinity {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Forget a pod, returning it (`None` if it was not here).
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| &p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        if pod.has_affinity {
            self.pods_with_affinity -= 1;
        }
        if pod.has_required_anti_affinity {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(pod)
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&NO_LABELS)
    }

    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }
}

/// The cluster as the scheduler sees it: every node with the pods counted on it, kept up
/// to date incrementally by the cache and read (never changed) by the plugins.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Labels of every namespace, for affinity terms with a namespaceSelector.
    pub namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// Matching pods per node for the selectors spreading asks about, kept exact by
    /// [`Snapshot::add_pod`] / [`Snapshot::remove_pod`].
    selectors: SelectorIndex,
    /// The id the next new node entry gets (ids start at 1; 0 is "not in a snapshot").
    last_node_id: NodeId,
    /// Claims, volumes and classes (VolumeBinding). Shared so that cloning a snapshot
    /// (preemption's trial runs) does not copy them.
    pub volumes: Arc<crate::plugins::volume_binding::Volumes>,
    /// Whole-cluster counts the scheduler reads for every pod, kept by the methods that
    /// change nodes and pods, so that reading them is not a walk over every node (5,000
    /// entries at 5,000 nodes, for each pod): entries whose Node exists, and pods with
    /// affinity terms and with required anti-affinity terms (upstream keeps lists of
    /// such nodes in its snapshot for the same reason).
    totals: Totals,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    nodes: usize,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
}

impl Snapshot {
    /// A snapshot from plain objects (tests, and the decision functions' callers).
    pub fn build(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            s.set_node(Arc::new(n));
        }
        for p in pods {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if !node.is_empty() {
                s.add_pod(&node, Arc::new(PodInfo::new(Arc::new(p))));
            }
        }
        s
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    fn entry(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                let mut n = NodeInfo::new(name);
                self.last_node_id += 1;
                n.id = self.last_node_id;
                self.nodes.push(n);
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let entry = self.entry(&name);
        let is_new = entry.node.is_none();
        entry.set_node(node);
        if is_new {
            self.totals.nodes += 1;
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.get(name).copied() else {
            return;
        };
        if self.nodes[i].node.is_some() {
            self.totals.nodes -= 1;
        }
        if !self.nodes[i].pods.is_empty() {
            // Pods still name it; keep their accounting until they go.
            self.nodes[i].clear_node();
            return;
        }
        self.drop_entry(i);
    }

    fn drop_entry(&mut self, i: usize) {
        let removed = self.nodes.swap_remove(i);
        self.index.remove(&removed.name);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    pub fn add_pod(&mut self, node: &str, pod: Arc<PodInfo>) {
        let n = self.entry(node);
        let id = n.id;
        n.add_pod(pod.clone());
        self.totals.pods_with_affinity += usize::from(pod.has_affinity);
        self.totals.pods_with_required_anti_affinity += usize::from(pod.has_required_anti_affinity);
        self.selectors.pod_added(id, &pod);
    }

    pub fn remove_pod(&mut self, node: &str, key: &ObjectKey) {
        let Some(i) = self.index.get(node).copied() else {
            return;
        };
        if let Some(pod) = self.nodes[i].remove_pod(key) {
            self.totals.pods_with_affinity -= usize::from(pod.has_affinity);
            self.totals.pods_with_required_anti_affinity -=
                usize::from(pod.has_required_anti_affinity);
            self.selectors.pod_removed(self.nodes[i].id, &pod);
        }
        if self.nodes[i].node.is_none() && self.nodes[i].pods.is_empty() {
            self.drop_entry(i);
        }
    }

    /// Count `selector`'s matching pods in `namespace` per node incrementally from now on
    /// (see [`SelectorIndex::track`]); the scheduler calls it before deciding for a pod
    /// whose spreading constraints use the selector.
    pub fn track_selector(&mut self, namespace: &str, selector: &api::selectors::LabelSelector) {
        self.selectors.track(namespace, selector, &self.nodes);
    }

    /// Selectors counted incrementally now.
    pub fn tracked_selectors(&self) -> usize {
        self.selectors.len()
    }

    /// How to learn a node's pods in `namespace` (not terminating) that `selector`
    /// matches: from the index if it tracks the selector, else by looking at the pods.
    pub fn matching<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a api::selectors::LabelSelector,
    ) -> MatchingPods<'a> {
        match self.selectors.get(namespace, selector) {
            Some(t) => MatchingPods::Tracked(t),
            None => MatchingPods::Scan {
                namespace,
                selector,
            },
        }
    }

    /// Nodes that exist (upstream's "N" in "0/N nodes are available").
    pub fn num_nodes(&self) -> usize {
        self.totals.nodes
    }

    /// Pods (on any node) with an affinity or anti-affinity term of any kind.
    pub fn pods_with_affinity(&self) -> usize {
        self.totals.pods_with_affinity
    }

    /// Pods (on any node) with a required anti-affinity term.
    pub fn pods_with_required_anti_affinity(&self) -> usize {
        self.totals.pods_with_required_anti_affinity
    }
}

/// A selector's matching pods per node, resolved once per question (see
/// [`Snapshot::matching`]); both ways give the same answer.
#[derive(Debug, Clone, Copy)]
pub enum MatchingPods<'a> {
    Tracked(&'a Tracked),
    Scan {
        namespace: &'a str,
        selector: &'a api::selectors::LabelSelector,
    },
}

impl MatchingPods<'_> {
    /// Matching pods on `node`, a node of the snapshot this came from.
    pub fn on(&self, node: &NodeInfo) -> i64 {
        match self {
            MatchingPods::Tracked(t) => t.on(node.id),
            MatchingPods::Scan {
                namespace,
                selector,
            } => node.count_matching(namespace, selector),
        }
    }
}

/// Per-pod state a plugin computes once before looking at nodes.
pub type State = Option<Box<dyn Any + Send + Sync>>;

pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Upstream PreFilter: work over the whole snapshot, once per pod. An `Err` rejects the
    /// pod on every node.
    fn pre_filter(&self, _pod: &PodInfo, _snapshot: &Snapshot) -> Result<State, Status> {
        Ok(None)
    }
    fn filter(&self, state: &State, pod: &PodInfo, node: &NodeInfo) -> Status;
}

pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Upstream's default profile weight.
    fn weight(&self) -> i64;
    /// Upstream PreScore over the nodes that passed filtering.
    fn pre_score(&self, _pod: &PodInfo, _snapshot: &Snapshot, _feasible: &[&NodeInfo]) -> State {
        None
    }
    fn score(&self, state: &State, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Bring raw scores into 0..=MAX_NODE_SCORE (same order as the feasible nodes).
    fn normalize(&self, _state: &State, _scores: &mut [i64]) {}
}

/// The plugins of one profile, in upstream's order.
pub struct Profile {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scorers: Vec<Box<dyn ScorePlugin>>,
}

/// Why a pod fits nowhere: what every node said. Its [`FitError::message`] is the
/// FailedScheduling text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Set when a PreFilter plugin rejected the pod outright.
    pub pre_filter: Option<Status>,
    /// Node name → the first failing plugin's status (upstream stops at the first).
    pub node_statuses: Vec<(String, Status)>,
    /// The PostFilter (preemption) part, ending with its own full stop.
    pub preemption: String,
}

impl FitError {
    /// Plugins that rejected the pod somewhere (which cluster changes may help it).
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .pre_filter
            .iter()
            .map(|s| s.plugin)
            .chain(self.node_statuses.iter().map(|(_, s)| s.plugin))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Upstream's `FitError.Error()`: "0/N nodes are available: <count reason, ...sorted>."
    /// followed by the preemption verdict.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        match &self.pre_filter {
            Some(st) => {
                msg.push_str(&format!(" {}.", st.reasons.join(", ")));
            }
            None => {
                let hist = histogram(
                    self.node_statuses
                        .iter()
                        .flat_map(|(_, s)| s.reasons.iter()),
                );
                if !hist.is_empty() {
                    msg.push_str(&format!(" {}.", hist.join(", ")));
                }
            }
        }
        if !self.preemption.is_empty() {
            msg.push_str(&format!(" {}", self.preemption));
        }
        msg
    }
}

/// "count reason" strings, sorted as strings (as upstream does).
fn histogram<'a>(reasons: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    let mut v: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    v.sort();
    v
}

/// How many feasible nodes to look for before scoring (upstream `numFeasibleNodesToFind`
/// with the adaptive default percentage).
pub fn num_feasible_nodes_to_find(num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let percentage = 50usize
        .saturating_sub(num_all_nodes / 125)
        .max(MIN_FEASIBLE_NODES_PERCENTAGE);
    (num_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Small deterministic random source for tie-breaking (seeded per scheduler).
#[derive(Debug, Clone)]
pub struct TieBreaker(u64);

impl TieBreaker {
    pub fn new(seed: u64) -> Self {
        TieBreaker(seed | 1)
    }
    fn next(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n.max(1) as u64) as usize
    }
}

/// Where filtering starts next time, so that successive pods look at different nodes
/// first (upstream `nextStartNodeIndex`).
#[derive(Debug, Default, Clone)]
pub struct Cursor(pub usize);

/// Run every filter on one node; the first failure wins, as upstream.
pub fn run_filters(profile: &Profile, states: &[State], pod: &PodInfo, node: &NodeInfo) -> Status {
    for (plugin, state) in profile.filters.iter().zip(states) {
        let st = plugin.filter(state, pod, node);
        if !st.is_success() {
            return st;
        }
    }
    Status::success()
}

/// Decide where `pod` goes: filter (stopping once enough feasible nodes are found), score,
/// pick the best (ties at random). Pure over the snapshot.
pub fn schedule(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &Snapshot,
    cursor: &mut Cursor,
    ties: &mut TieBreaker,
) -> Result<String, FitError> {
    let num_all = snapshot.num_nodes();
    let not_found = |pre_filter, node_statuses| {
        let mut e = FitError {
            num_all_nodes: num_all,
            pre_filter,
            node_statuses,
            preemption: String::new(),
        };
        if num_all > 0 {
            e.preemption = preemption_verdict(profile, pod, snapshot, &e);
        }
        e
    };
    if num_all == 0 {
        return Err(not_found(None, Vec::new()));
    }
    let mut states = Vec::with_capacity(profile.filters.len());
    for plugin in &profile.filters {
        match plugin.pre_filter(pod, snapshot) {
            Ok(s) => states.push(s),
            Err(st) => return Err(not_found(Some(st), Vec::new())),
        }
    }
    let want = num_feasible_nodes_to_find(num_all);
    let total = snapshot.nodes.len();
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(total));
    let mut statuses = Vec::new();
    let start = cursor.0 % total.max(1);
    let mut examined = 0;
    for offset in 0..total {
        let node = &snapshot.nodes[(start + offset) % total];
        examined += 1;
        if node.node.is_none() {
            continue;
        }
        let st = run_filters(profile, &states, pod, node);
        if st.is_success() {
            feasible.push(node);
            if feasible.len() >= want {
                break;
            }
        } else {
            statuses.push((node.name.clone(), st));
        }
    }
    cursor.0 = (start + examined) % total.max(1);
    if feasible.is_empty() {
        return Err(not_found(None, statuses));
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name.clone());
    }
    let totals = score_nodes(profile, pod, snapshot, &feasible);
    // Reservoir sampling among the best, as upstream's selectHost.
    let mut best = 0usize;
    let mut seen = 0usize;
    for (i, s) in totals.iter().enumerate() {
        if *s > totals[best] {
            best = i;
            seen = 1;
        } else if *s == totals[best] {
            seen += 1;
            if ties.next(seen) == 0 {
                best = i;
            }
        }
    }
    Ok(feasible[best].name.clone())
}

/// Weighted sum of every score plugin's normalized score, per feasible node.
pub fn score_nodes(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &Snapshot,
    feasible: &[&NodeInfo],
) -> Vec<i64> {
    let mut totals = vec![0i64; feasible.len()];
    let mut scores = vec![0i64; feasible.len()];
    for plugin in &profile.scorers {
        let state = plugin.pre_score(pod, snapshot, feasible);
        for (i, node) in feasible.iter().enumerate() {
            scores[i] = plugin.score(&state, pod, node);
        }
        plugin.normalize(&state, &mut scores);
        for (t, s) in totals.iter_mut().zip(&scores) {
            *t += s * plugin.weight();
        }
    }
    totals
}

/// The PostFilter text upstream's DefaultPreemption gives when it finds no victims to
/// evict. skiff does not preempt; a node where evicting lower-priority pods would make room
/// is reported like one without victims (documented in the crate header).
fn preemption_verdict(
    profile: &Profile,
    pod: &PodInfo,
    snapshot: &Snapshot,
    err: &FitError,
) -> String {
    let never = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never");
    if never {
        return "preemption: not eligible due to preemptionPolicy=Never.".to_string();
    }
    const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
    const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
    let mut reasons: Vec<String> = Vec::new();
    match &err.pre_filter {
        Some(_) => {
            for _ in 0..err.num_all_nodes {
                reasons.push(NOT_HELPFUL.into());
            }
        }
        None => {
            for (name, st) in &err.node_statuses {
                if st.code == Code::UnschedulableAndUnresolvable {
                    reasons.push(NOT_HELPFUL.into());
                    continue;
                }
                let Some(node) = snapshot.node(name) else {
                    reasons.push(NOT_HELPFUL.into());
                    continue;
                };
                let lower: Vec<&Arc<PodInfo>> = node
                    .pods
                    .iter()
                    .filter(|p| p.priority < pod.priority)
                    .collect();
                if lower.is_empty() {
                    reasons.push(NO_VICTIMS.into());
                    continue;
                }
                // Would the pod fit with every lower-priority pod gone? (Removed through the
                // trial snapshot, so that its selector counts agree.)
                let mut trial = snapshot.clone();
                for p in lower {
                    trial.remove_pod(name, &p.key);
                }
                let Some(without) = trial.node(name) else {
                    reasons.push(NO_VICTIMS.into());
                    continue;
                };
                let states: Vec<State> = profile
                    .filters
                    .iter()
                    .map(|p| p.pre_filter(pod, &trial).ok().flatten())
                    .collect();
                let st = run_filters(profile, &states, pod, without);
                if st.is_success() {
                    reasons.push(NO_VICTIMS.into());
                } else {
                    reasons.extend(st.reasons);
                }
            }
        }
    }
    let hist = histogram(reasons.iter());
    format!(
        "preemption: 0/{} nodes are available: {}.",
        err.num_all_nodes,
        hist.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::default_profile;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    /// The counts kept with the snapshot, recounted from its entries.
    fn recounted(s: &Snapshot) -> Totals {
        let pods = || s.nodes.iter().flat_map(|n| n.pods.iter());
        Totals {
            nodes: s.nodes.iter().filter(|n| n.node.is_some()).count(),
            pods_with_affinity: pods().filter(|p| p.has_affinity).count(),
            pods_with_required_anti_affinity: pods()
                .filter(|p| p.has_required_anti_affinity)
                .count(),
        }
    }

    #[test]
    fn snapshot_totals_follow_nodes_and_pods() {
        let anti = json!({"spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}}
        ]}}}});
        let preferred = json!({"spec": {"affinity": {"podAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm":
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}}}
        ]}}}});
        let info = |name: &str, extra: &serde_json::Value| {
            Arc::new(PodInfo::new(Arc::new(pod(name, extra.clone()))))
        };
        let mut s = Snapshot::build(vec![node("n1", json!({})), node("n2", json!({}))], vec![]);
        assert_eq!(recounted(&s), s.totals);
        assert_eq!(s.num_nodes(), 2);
        s.add_pod("n1", info("plain", &json!({})));
        s.add_pod("n1", info("anti", &anti));
        s.add_pod("n2", info("preferred", &preferred));
        // A pod on a node the snapshot has not seen makes an entry without a node.
        s.add_pod("n3", info("early", &anti));
        assert_eq!(recounted(&s), s.totals);
        assert_eq!((s.num_nodes(), s.pods_with_affinity()), (2, 3));
        assert_eq!(s.pods_with_required_anti_affinity(), 2);
        // The node goes while its pods stay; then they go; then it comes back.
        s.remove_node("n1");
        assert_eq!(recounted(&s), s.totals);
        assert_eq!(s.num_nodes(), 1);
        s.remove_pod("n1", &ObjectKey::new("default", "anti"));
        s.remove_pod("n1", &ObjectKey::new("default", "plain"));
        s.remove_pod("n3", &ObjectKey::new("default", "nobody"));
        assert_eq!(recounted(&s), s.totals);
        s.set_node(Arc::new(node("n1", json!({}))));
        s.set_node(Arc::new(node(
            "n1",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )));
        s.set_node(Arc::new(node("n3", json!({}))));
        s.remove_node("n2");
        s.remove_node("missing");
        assert_eq!(recounted(&s), s.totals);
        assert_eq!(s.num_nodes(), 2);
        assert_eq!(s.pods_with_affinity(), 2);
        assert_eq!(s.pods_with_required_anti_affinity(), 1);
        // A trial copy (preemption) keeps its own counts.
        let mut trial = s.clone();
        trial.remove_pod("n3", &ObjectKey::new("default", "early"));
        assert_eq!(recounted(&trial), trial.totals);
        assert_eq!(recounted(&s), s.totals);
    }

    #[test]
    fn topology_labels_follow_the_node() {
        let mut info = NodeInfo::new("n1");
        assert_eq!(info.topology_label("kubernetes.io/hostname"), None);
        info.set_node(Arc::new(node(
            "n1",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "a", "rack": "r1"}}}),
        )));
        assert_eq!(info.topology_label("kubernetes.io/hostname"), Some("n1"));
        assert_eq!(
            info.topology_label("topology.kubernetes.io/zone"),
            Some("a")
        );
        assert_eq!(info.topology_label("rack"), Some("r1"));
        assert_eq!(info.topology_label("missing"), None);
        // Relabelled: the copy is taken again.
        info.set_node(Arc::new(node(
            "n1",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "b"}}}),
        )));
        assert_eq!(
            info.topology_label("topology.kubernetes.io/zone"),
            Some("b")
        );
        assert_eq!(
            info.topology_value("topology.kubernetes.io/zone"),
            Some((topology_hash("b"), "b"))
        );
        assert_eq!(info.topology_value("rack"), None);
        info.set_node(Arc::new(node(
            "n1",
            json!({"spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )));
        assert!(info.unschedulable());
        assert_eq!(info.taints().len(), 1);
        info.clear_node();
        assert!(!info.unschedulable());
        assert!(info.taints().is_empty());
        assert_eq!(info.topology_label("kubernetes.io/hostname"), None);
        assert_eq!(info.topology_label("topology.kubernetes.io/zone"), None);
    }

    fn decide(nodes: Vec<Node>, existing: Vec<Pod>, incoming: Pod) -> Result<String, FitError> {
        let snap = Snapshot::build(nodes, existing);
        let info = PodInfo::new(Arc::new(incoming));
        schedule(
            &default_profile(),
            &info,
            &snap,
            &mut Cursor::default(),
            &mut TieBreaker::new(7),
        )
    }

    fn cpu(n: &str) -> serde_json::Value {
        json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": n}}}]}})
    }

    #[test]
    fn failed_scheduling_messages_match_upstream() {
        let cp = || {
            node(
                "cp",
                json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
            )
        };
        let small = |n: &str| {
            node(
                n,
                json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}}),
            )
        };
        struct Case {
            name: &'static str,
            nodes: Vec<Node>,
            existing: Vec<Pod>,
            pod: Pod,
            want: &'static str,
        }
        let cases = vec![
            Case {
                name: "taint and cpu, counts and sorted reasons",
                nodes: vec![cp(), small("w1"), small("w2")],
                existing: vec![],
                pod: pod("p", cpu("2")),
                want: "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
            },
            Case {
                name: "selector mismatch only",
                nodes: vec![small("w1")],
                existing: vec![],
                pod: pod("p", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
                want: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            },
            Case {
                name: "cordoned",
                nodes: vec![node("w1", json!({"spec": {"unschedulable": true}}))],
                existing: vec![],
                pod: pod("p", json!({})),
                want: "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
            },
            Case {
                name: "one node two reasons",
                nodes: vec![node("w1", json!({"status": {"allocatable": {"cpu": "1", "memory": "1Mi", "pods": "110"}}}))],
                existing: vec![],
                pod: pod("p", json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]}})),
                want: "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
            },
            Case {
                name: "lower-priority pods whose removal would not help",
                nodes: vec![small("w1")],
                existing: vec![pod("low", json!({"spec": {"nodeName": "w1", "priority": 0, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m"}}}]}}))],
                pod: pod("p", json!({"spec": {"priority": 10, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}})),
                want: "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Insufficient cpu.",
            },
            Case {
                name: "preemptionPolicy Never",
                nodes: vec![small("w1")],
                existing: vec![],
                pod: pod("p", json!({"spec": {"preemptionPolicy": "Never", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}})),
                want: "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
            },
            Case {
                name: "no nodes at all",
                nodes: vec![],
                existing: vec![],
                pod: pod("p", json!({})),
                want: "no nodes available to schedule pods",
            },
        ];
        for case in cases {
            let err = decide(case.nodes, case.existing, case.pod).expect_err(case.name);
            assert_eq!(err.message(), case.want, "{}", case.name);
        }
    }

    #[test]
    fn the_emptier_node_wins_and_ties_spread() {
        let nodes = vec![node("a", json!({})), node("b", json!({}))];
        let busy = pod(
            "e",
            json!({"spec": {"nodeName": "a", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}}),
        );
        assert_eq!(
            decide(nodes.clone(), vec![busy], pod("p", cpu("100m"))).expect("fits"),
            "b"
        );
        let mut seen = std::collections::HashSet::new();
        let snap = Snapshot::build(nodes, vec![]);
        let info = PodInfo::new(Arc::new(pod("p", json!({}))));
        let mut ties = TieBreaker::new(3);
        for _ in 0..20 {
            seen.insert(
                schedule(
                    &default_profile(),
                    &info,
                    &snap,
                    &mut Cursor::default(),
                    &mut ties,
                )
                .expect("fits"),
            );
        }
        assert_eq!(seen.len(), 2, "equal nodes are chosen at random");
    }

    #[test]
    fn feasible_node_count_follows_upstreams_adaptive_percentage() {
        for (all, want) in [
            (50, 50),
            (100, 100),
            (1000, 420),
            (5000, 500),
            (10_000, 500),
        ] {
            assert_eq!(num_feasible_nodes_to_find(all), want, "{all} nodes");
        }
    }
}
