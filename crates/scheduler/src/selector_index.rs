//! Cluster-wide counts of the pods on each node that a label selector matches in a
//! namespace: the question PodTopologySpread asks of every node for every replica of a
//! workload (the cluster-default constraints carry the owner's selector).
//!
//! A selector is *tracked* once the scheduler is about to ask about it: counted from the
//! snapshot once, then kept exact as pods are added to and removed from nodes (a relabel is
//! a remove and an add), so a question costs one lookup per node however many workloads
//! are being scheduled at once. Each tracked selector is filed under one `key=value` it
//! requires (its *pivot*), so a pod change looks only at selectors filed under one of the
//! pod's own labels, not at every tracked selector.
//!
//! Memory: a tracked selector holds one entry per node where it matches pods (never more
//! than its matching pods), and at most [`MAX_TRACKED`] selectors are kept; the least
//! recently asked goes first and is counted afresh if asked again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use api::selectors::{LabelSelector, Operator};

use crate::framework::{NodeInfo, PodInfo};

/// A node's identity within one snapshot (stable while the node is in it, unlike its
/// position in the node list).
pub type NodeId = u32;

/// Selectors tracked at once. Far above the number of workloads rolling out together in
/// any cluster we aim at; the bound keeps memory finite while ReplicaSets come and go.
pub const MAX_TRACKED: usize = 1024;

/// A selector as a map key (LabelSelector has no `Hash`; this hashes exactly what its
/// `Eq` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SelectorKey {
    namespace: String,
    selector: LabelSelector,
}

impl Hash for SelectorKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.selector.is_nothing().hash(state);
        for r in self.selector.requirements() {
            r.key.hash(state);
            r.operator.hash(state);
            r.values.hash(state);
        }
    }
}

/// One tracked selector: matching pods per node (nodes without any are absent).
#[derive(Debug, Clone)]
pub struct Tracked {
    key: SelectorKey,
    /// The `key=value` it is filed under; `None`: checked against every pod change in
    /// its namespace (or, for a selector matching nothing, never).
    pivot: Option<(String, String)>,
    per_node: HashMap<NodeId, u32>,
    last_asked: u64,
}

impl Tracked {
    /// Matching pods (not terminating) on the node.
    pub fn on(&self, node: NodeId) -> i64 {
        self.per_node.get(&node).copied().map_or(0, i64::from)
    }
}

/// The selectors tracked in one namespace, by pivot.
#[derive(Debug, Clone, Default)]
struct NamespaceSelectors {
    /// label key → label value → selectors requiring `key=value`.
    by_label: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Selectors requiring no single `key=value` (only `in` sets, `exists`, `!=`, ...).
    unpivoted: Vec<u64>,
}

impl NamespaceSelectors {
    fn filed_under(&self, key: &str, value: &str) -> usize {
        self.by_label
            .get(key)
            .and_then(|vs| vs.get(value))
            .map_or(0, Vec::len)
    }

    fn file(&mut self, id: u64, pivot: Option<&(String, String)>) {
        match pivot {
            Some((k, v)) => self
                .by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id),
            None => self.unpivoted.push(id),
        }
    }

    fn unfile(&mut self, id: u64, pivot: Option<&(String, String)>) {
        let Some((k, v)) = pivot else {
            self.unpivoted.retain(|x| *x != id);
            return;
        };
        let Some(values) = self.by_label.get_mut(k) else {
            return;
        };
        if let Some(ids) = values.get_mut(v) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                values.remove(v);
            }
        }
        if values.is_empty() {
            self.by_label.remove(k);
        }
    }

    fn is_empty(&self) -> bool {
        self.by_label.is_empty() && self.unpivoted.is_empty()
    }
}

/// Whether a pod counts for a selector in a namespace (terminating pods never do, as
/// upstream's spreading skips pods with a deletionTimestamp).
pub fn pod_counts_for(pod: &PodInfo, namespace: &str, selector: &LabelSelector) -> bool {
    pod.namespace() == namespace
        && pod.pod.metadata.deletion_timestamp.is_none()
        && selector.matches(pod.labels())
}

/// The index: tracked selectors and the pivots pod changes are looked up by.
#[derive(Debug, Clone, Default)]
pub struct SelectorIndex {
    ids: HashMap<SelectorKey, u64>,
    tracked: HashMap<u64, Tracked>,
    namespaces: HashMap<String, NamespaceSelectors>,
    next_id: u64,
    /// Counts `track` calls: a selector's `last_asked` is the clock when last asked.
    clock: u64,
}

impl SelectorIndex {
    /// The counts for `selector` in `namespace`, if tracked.
    pub fn get(&self, namespace: &str, selector: &LabelSelector) -> Option<&Tracked> {
        let key = SelectorKey {
            namespace: namespace.to_string(),
            selector: selector.clone(),
        };
        self.ids.get(&key).and_then(|id| self.tracked.get(id))
    }

    /// Selectors tracked now.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// Keep `selector` in `namespace` counted from now on, counting it over `nodes` (the
    /// snapshot's, with their ids) if it is new; either way it becomes the most recently
    /// asked. Evicts the least recently asked selector beyond [`MAX_TRACKED`].
    pub fn track<'a>(
        &mut self,
        namespace: &str,
        selector: &LabelSelector,
        nodes: impl IntoIterator<Item = &'a NodeInfo>,
    ) {
        self.clock += 1;
        let key = SelectorKey {
            namespace: namespace.to_string(),
            selector: selector.clone(),
        };
        if let Some(t) = self.ids.get(&key).and_then(|id| self.tracked.get_mut(id)) {
            t.last_asked = self.clock;
            return;
        }
        if self.tracked.len() >= MAX_TRACKED {
            self.evict_least_recently_asked();
        }
        let mut per_node = HashMap::new();
        for node in nodes {
            let n = node
                .pods
                .iter()
                .filter(|p| pod_counts_for(p, namespace, selector))
                .count();
            if n > 0 {
                per_node.insert(node.id(), n as u32);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let pivot = if selector.is_nothing() {
            None
        } else {
            self.choose_pivot(namespace, selector)
        };
        if !selector.is_nothing() {
            self.namespaces
                .entry(namespace.to_string())
                .or_default()
                .file(id, pivot.as_ref());
        }
        self.ids.insert(key.clone(), id);
        self.tracked.insert(
            id,
            Tracked {
                key,
                pivot,
                per_node,
                last_asked: self.clock,
            },
        );
    }

    /// Of the `key=value` pairs the selector requires, the one with the fewest selectors
    /// filed under it (so that a pod change looks at few selectors).
    fn choose_pivot(&self, namespace: &str, selector: &LabelSelector) -> Option<(String, String)> {
        let filed = self.namespaces.get(namespace);
        selector
            .requirements()
            .iter()
            .filter(|r| {
                r.values.len() == 1
                    && matches!(
                        r.operator,
                        Operator::Equals | Operator::DoubleEquals | Operator::In
                    )
            })
            .min_by_key(|r| filed.map_or(0, |f| f.filed_under(&r.key, &r.values[0])))
            .map(|r| (r.key.clone(), r.values[0].clone()))
    }

    fn evict_least_recently_asked(&mut self) {
        let Some(id) = self
            .tracked
            .iter()
            .min_by_key(|(_, t)| t.last_asked)
            .map(|(id, _)| *id)
        else {
            return;
        };
        let Some(t) = self.tracked.remove(&id) else {
            return;
        };
        self.ids.remove(&t.key);
        if let Some(ns) = self.namespaces.get_mut(&t.key.namespace) {
            ns.unfile(id, t.pivot.as_ref());
            if ns.is_empty() {
                self.namespaces.remove(&t.key.namespace);
            }
        }
    }

    /// A pod now counts on the node.
    pub fn pod_added(&mut self, node: NodeId, pod: &PodInfo) {
        self.pod_changed(node, pod, true);
    }

    /// A pod (the same [`PodInfo`] that was added) no longer counts on the node.
    pub fn pod_removed(&mut self, node: NodeId, pod: &PodInfo) {
        self.pod_changed(node, pod, false);
    }

    /// Adjust every tracked selector that matches the pod. The candidates are the
    /// selectors filed under one of the pod's labels and the unpivoted ones; each is filed
    /// once, and a pod has one value per label key, so none is adjusted twice.
    fn pod_changed(&mut self, node: NodeId, pod: &PodInfo, added: bool) {
        if self.tracked.is_empty() || pod.pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        let Some(ns) = self.namespaces.get(pod.namespace()) else {
            return;
        };
        let labels = pod.labels();
        let filed = labels
            .iter()
            .filter_map(|(k, v)| ns.by_label.get(k).and_then(|vs| vs.get(v)))
            .flatten();
        for id in filed.chain(ns.unpivoted.iter()) {
            let Some(t) = self.tracked.get_mut(id) else {
                continue;
            };
            if !t.key.selector.matches(labels) {
                continue;
            }
            if added {
                *t.per_node.entry(node).or_insert(0) += 1;
            } else if let Some(n) = t.per_node.get_mut(&node) {
                *n -= 1;
                if *n == 0 {
                    t.per_node.remove(&node);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;
    use crate::cache::Cache;
    use crate::framework::{MatchingPods, Snapshot};
    use crate::plugins::testing::node;

    /// Deterministic pseudo-random choices (xorshift), so a failure replays.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
            of[self.roll(of.len())]
        }
    }

    const NAMESPACES: [&str; 2] = ["a", "b"];
    const NODES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];

    fn selectors() -> Vec<LabelSelector> {
        let mut s: Vec<LabelSelector> = [
            "app=web",
            "app=web,tier=fe",
            "app==db,hash=1",
            "app in (web,db)",
            "app in (api)",
            "tier",
            "!hash",
            "app!=db",
            "app=web,tier notin (be)",
            "",
        ]
        .iter()
        .map(|s| LabelSelector::parse(s).expect("selector"))
        .collect();
        s.push(LabelSelector::nothing());
        s
    }

    fn random_pod(dice: &mut Dice, name: &str, rv: usize, node: Option<&str>) -> Arc<Pod> {
        let mut labels = serde_json::Map::new();
        for (key, values) in [
            ("app", &["web", "db", "api"][..]),
            ("tier", &["fe", "be"][..]),
            ("hash", &["1", "2"][..]),
        ] {
            if dice.roll(4) != 0 {
                labels.insert(key.into(), dice.pick(values).into());
            }
        }
        let mut meta = json!({"name": name, "namespace": dice.pick(&NAMESPACES),
            "resourceVersion": rv.to_string(), "labels": labels});
        if dice.roll(8) == 0 {
            meta["deletionTimestamp"] = json!("2026-11-27T00:00:00Z");
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": meta,
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}))
            .expect("pod"),
        )
    }

    /// Every question answered by the index equals a count of the node's pods.
    fn assert_exact(snap: &Snapshot, selectors: &[LabelSelector], step: usize) {
        for ns in NAMESPACES {
            for sel in selectors {
                let matching = snap.matching(ns, sel);
                for n in &snap.nodes {
                    assert_eq!(
                        matching.on(n),
                        n.count_matching(ns, sel),
                        "step {step}: {ns}/{sel:?} on {}",
                        n.name
                    );
                }
            }
        }
    }

    #[test]
    fn tracked_counts_equal_a_recount_under_pod_churn() {
        let mut dice = Dice(0x5eed_1234_abcd);
        let mut cache = Cache::new();
        for n in NODES {
            cache.node_applied(Arc::new(node(n, json!({}))));
        }
        let selectors = selectors();
        // Half the selectors tracked from the start, the rest asked for along the way.
        for sel in &selectors[..selectors.len() / 2] {
            for ns in NAMESPACES {
                cache.snapshot.track_selector(ns, sel);
            }
        }
        let mut rv = 0;
        for step in 0..3000 {
            rv += 1;
            let name = format!("p{}", dice.roll(40));
            let key = informers::ObjectKey::new(dice.pick(&NAMESPACES), &name);
            match dice.roll(10) {
                // Placed or moved or relabelled (a new version of the pod).
                0..=3 => {
                    let node = dice.pick(&NODES);
                    cache.pod_applied(&random_pod(&mut dice, &name, rv, Some(node)));
                }
                // Assumed by the scheduler, sometimes forgotten again.
                4 | 5 => {
                    let pod = random_pod(&mut dice, &name, rv, None);
                    let key = informers::ObjectKey::of(pod.as_ref());
                    let node = dice.pick(&NODES);
                    cache.assume(node, Arc::new(PodInfo::new(pod)));
                    if dice.roll(3) == 0 {
                        cache.forget(&key);
                    }
                }
                6 | 7 => {
                    cache.pod_deleted(&key);
                }
                // Finished: no longer counts.
                8 => {
                    let mut done = (*random_pod(&mut dice, &name, rv, Some("n0"))).clone();
                    done.status = Some(
                        serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"),
                    );
                    cache.pod_applied(&Arc::new(done));
                }
                _ => {
                    let sel = &selectors[dice.roll(selectors.len())];
                    cache.snapshot.track_selector(dice.pick(&NAMESPACES), sel);
                }
            }
            // A node goes and comes back (its entry stays while pods name it).
            if dice.roll(50) == 0 {
                let n = dice.pick(&NODES);
                cache.node_deleted(n);
                cache.node_applied(Arc::new(node(n, json!({}))));
            }
            assert_exact(&cache.snapshot, &selectors, step);
        }
        for ns in NAMESPACES {
            for sel in &selectors {
                assert!(
                    matches!(cache.snapshot.matching(ns, sel), MatchingPods::Tracked(_)),
                    "{ns}/{sel:?} tracked by the end"
                );
            }
        }
    }

    #[test]
    fn the_least_recently_asked_selector_is_evicted_and_recounted_when_asked_again() {
        let mut cache = Cache::new();
        cache.node_applied(Arc::new(node("n1", json!({}))));
        let web = LabelSelector::parse("app=web").expect("selector");
        let pod = |name: &str| {
            Arc::new(
                serde_json::from_value::<Pod>(json!({"metadata": {"name": name, "namespace": "a",
                    "resourceVersion": "1", "labels": {"app": "web"}},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}))
                .expect("pod"),
            )
        };
        cache.pod_applied(&pod("w0"));
        cache.snapshot.track_selector("a", &web);
        for i in 0..MAX_TRACKED {
            let other = LabelSelector::parse(&format!("app=x{i}")).expect("selector");
            cache.snapshot.track_selector("a", &other);
        }
        assert_eq!(cache.snapshot.tracked_selectors(), MAX_TRACKED);
        assert!(matches!(
            cache.snapshot.matching("a", &web),
            MatchingPods::Scan { .. }
        ));
        cache.pod_applied(&pod("w1"));
        cache.snapshot.track_selector("a", &web);
        let n1 = cache.snapshot.node("n1").expect("n1");
        match cache.snapshot.matching("a", &web) {
            MatchingPods::Tracked(t) => assert_eq!(t.on(n1.id()), 2),
            MatchingPods::Scan { .. } => panic!("asked again: tracked again"),
        }
        // The one asked longest ago (app=x0) made room.
        let x0 = LabelSelector::parse("app=x0").expect("selector");
        assert!(matches!(
            cache.snapshot.matching("a", &x0),
            MatchingPods::Scan { .. }
        ));
        assert_eq!(cache.snapshot.tracked_selectors(), MAX_TRACKED);
    }
}
