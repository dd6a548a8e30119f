//! The scheduling queue, as upstream's: pods ready to try (`active`, highest priority
//! first, then first come), pods waiting out a back-off after a failed attempt (1 s
//! doubling to 10 s), and pods that fit nowhere (`unschedulable`) until a cluster change
//! that may help them (or at most five minutes). Pure state with explicit time, no I/O.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use informers::ObjectKey;
use k8s_openapi::api::core::v1::Pod;

/// First back-off after a failed attempt (upstream `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off (upstream `podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is retried at least this often (upstream
/// `podMaxInUnschedulablePodsDuration`).
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    /// Popped: being scheduled or bound.
    InFlight,
}

/// A cluster change that may make unschedulable pods fit (upstream's cluster events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node appeared or changed in a way that matters (labels, taints, allocatable,
    /// cordon).
    NodeChanged,
    /// A pod left a node (frees resources, ports, anti-affinity, spread).
    AssignedPodDeleted,
    /// A pod was placed or relabelled (affinity, spread).
    AssignedPodChanged,
    /// A PersistentVolumeClaim, PersistentVolume or StorageClass appeared or changed.
    VolumeChanged,
}

impl ClusterEvent {
    /// Whether a pod rejected by `plugin` may fit after this event.
    fn may_help(self, plugin: &str) -> bool {
        use crate::plugins::*;
        match self {
            ClusterEvent::NodeChanged => true,
            ClusterEvent::AssignedPodDeleted => [
                node_resources_fit::NAME,
                node_ports::NAME,
                inter_pod_affinity::NAME,
                pod_topology_spread::NAME,
            ]
            .contains(&plugin),
            ClusterEvent::AssignedPodChanged => {
                [inter_pod_affinity::NAME, pod_topology_spread::NAME].contains(&plugin)
            }
            ClusterEvent::VolumeChanged => plugin == volume_binding::NAME,
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub priority: i32,
    /// Arrival order, for FIFO among equal priorities.
    seq: u64,
    pub attempts: u32,
    last_attempt: Option<Instant>,
    /// Plugins that rejected the pod last time (which events may help it).
    unschedulable_plugins: Vec<&'static str>,
    since: Instant,
    place: Place,
    /// Bumped whenever the pod moves, so stale heap entries are skipped.
    generation: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    generation: u64,
    key: ObjectKey,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<ObjectKey, QueuedPod>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, ObjectKey)>>,
    /// Keys whose place is Unschedulable (cluster events look only at these).
    unschedulable: HashSet<ObjectKey>,
    next_seq: u64,
    next_generation: u64,
    /// Attempts started so far.
    scheduling_cycle: u64,
    /// The cycle during which the last cluster event arrived: a pod whose attempt began
    /// before it may have missed it, so it goes to back-off rather than unschedulable.
    move_request_cycle: u64,
}

impl SchedulingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.pods.contains_key(key)
    }

    /// How many pods wait in each sub-queue: (active, backoff, unschedulable, in flight).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let mut s = (0, 0, 0, 0);
        for p in self.pods.values() {
            match p.place {
                Place::Active => s.0 += 1,
                Place::Backoff => s.1 += 1,
                Place::Unschedulable => s.2 += 1,
                Place::InFlight => s.3 += 1,
            }
        }
        s
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn push_active(&mut self, key: ObjectKey) {
        self.unschedulable.remove(&key);
        let generation = self.generation();
        if let Some(p) = self.pods.get_mut(&key) {
            p.place = Place::Active;
            p.generation = generation;
            self.active.push(ActiveEntry {
                priority: p.priority,
                seq: p.seq,
                generation,
                key,
            });
        }
    }

    fn backoff_until(p: &QueuedPod) -> Option<Instant> {
        let last = p.last_attempt?;
        let exp = p.attempts.saturating_sub(1).min(16);
        let d = INITIAL_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF);
        Some(last + d)
    }

    fn push_backoff_or_active(&mut self, key: ObjectKey, now: Instant) {
        let Some(p) = self.pods.get(&key) else {
            return;
        };
        match Self::backoff_until(p).filter(|t| *t > now) {
            Some(until) => {
                self.unschedulable.remove(&key);
                let generation = self.generation();
                if let Some(p) = self.pods.get_mut(&key) {
                    p.place = Place::Backoff;
                    p.generation = generation;
                    self.backoff.push(Reverse((until, generation, key)));
                }
            }
            None => self.push_active(key),
        }
    }

    /// A pending pod appeared or changed. New pods go to active; a changed pod that was
    /// unschedulable is tried again (its spec may now fit); one in flight just keeps the
    /// newer object.
    pub fn add_or_update(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = ObjectKey::of(pod.as_ref());
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        match self.pods.get_mut(&key) {
            Some(existing) => {
                let spec_changed = existing.pod.spec != pod.spec
                    || existing.pod.metadata.labels != pod.metadata.labels;
                existing.pod = pod;
                existing.priority = priority;
                if existing.place == Place::Unschedulable && spec_changed {
                    self.push_backoff_or_active(key, now);
                }
            }
            None => {
                self.next_seq += 1;
                self.pods.insert(
                    key.clone(),
                    QueuedPod {
                        pod,
                        priority,
                        seq: self.next_seq,
                        attempts: 0,
                        last_attempt: None,
                        unschedulable_plugins: Vec::new(),
                        since: now,
                        place: Place::Active,
                        generation: 0,
                    },
                );
                self.push_active(key);
            }
        }
    }

    /// The pod is gone, bound by someone else, or no longer ours.
    pub fn remove(&mut self, key: &ObjectKey) {
        self.pods.remove(key);
        self.unschedulable.remove(key);
    }

    /// Every queued pod's key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.pods.keys().cloned().collect()
    }

    /// The next pod to try, if any is ready. Marks it in flight.
    pub fn pop(&mut self, now: Instant) -> Option<(QueuedPod, u64)> {
        self.flush(now);
        while let Some(entry) = self.active.pop() {
            let Some(p) = self.pods.get_mut(&entry.key) else {
                continue;
            };
            if p.place != Place::Active || p.generation != entry.generation {
                continue;
            }
            p.place = Place::InFlight;
            p.attempts += 1;
            p.last_attempt = Some(now);
            self.scheduling_cycle += 1;
            return Some((p.clone(), self.scheduling_cycle));
        }
        None
    }

    /// The pod was placed (assumed on a node): it leaves the queue.
    pub fn done(&mut self, key: &ObjectKey) {
        self.remove(key);
    }

    /// The pod fits nowhere. It waits for a helpful cluster change, unless one arrived
    /// while it was being tried.
    pub fn unschedulable(
        &mut self,
        key: &ObjectKey,
        plugins: Vec<&'static str>,
        cycle: u64,
        now: Instant,
    ) {
        let missed_event = self.move_request_cycle >= cycle;
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if p.place != Place::InFlight {
            return;
        }
        p.unschedulable_plugins = plugins;
        p.since = now;
        if missed_event {
            self.push_backoff_or_active(key.clone(), now);
        } else {
            p.place = Place::Unschedulable;
            self.unschedulable.insert(key.clone());
        }
    }

    /// The attempt failed for another reason (binding error): retry after back-off.
    pub fn retry(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = ObjectKey::of(pod.as_ref());
        match self.pods.get_mut(&key) {
            Some(p) => p.pod = pod,
            None => {
                // The pod left the queue when it was assumed; it comes back with its history
                // lost, so it backs off from now.
                self.next_seq += 1;
                self.pods.insert(
                    key.clone(),
                    QueuedPod {
                        priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                        pod,
                        seq: self.next_seq,
                        attempts: 1,
                        last_attempt: Some(now),
                        unschedulable_plugins: Vec::new(),
                        since: now,
                        place: Place::InFlight,
                        generation: 0,
                    },
                );
            }
        }
        self.push_backoff_or_active(key, now);
    }

    /// A cluster change: unschedulable pods it may help move on (to back-off if they
    /// still owe some, else to active).
    pub fn on_cluster_event(&mut self, event: ClusterEvent, now: Instant) {
        self.move_request_cycle = self.scheduling_cycle;
        if self.unschedulable.is_empty() {
            return;
        }
        let keys: Vec<ObjectKey> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pods.get(*k).is_some_and(|p| {
                    p.unschedulable_plugins.is_empty()
                        || p.unschedulable_plugins.iter().any(|pl| event.may_help(pl))
                })
            })
            .cloned()
            .collect();
        for k in keys {
            self.push_backoff_or_active(k, now);
        }
    }

    /// Move pods whose back-off is over to active, and pods unschedulable for too long.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((until, generation, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = self.backoff.pop() else {
                break;
            };
            let current = self
                .pods
                .get(&key)
                .is_some_and(|p| p.place == Place::Backoff && p.generation == generation);
            if current {
                self.push_active(key);
            }
        }
    }

    /// Unschedulable pods that waited [`MAX_IN_UNSCHEDULABLE`] are tried again.
    pub fn flush_unschedulable_leftovers(&mut self, now: Instant) {
        let keys: Vec<ObjectKey> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pods
                    .get(*k)
                    .is_some_and(|p| now.duration_since(p.since) >= MAX_IN_UNSCHEDULABLE)
            })
            .cloned()
            .collect();
        for k in keys {
            self.push_backoff_or_active(k, now);
        }
    }

    /// When the earliest back-off ends (to sleep until then).
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"priority": priority, "containers": [{"name": "c", "image": "i"}]}}))
            .expect("pod"),
        )
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("low-1", 0), t);
        q.add_or_update(pod("high", 10), t);
        q.add_or_update(pod("low-2", 0), t);
        let order: Vec<String> = std::iter::from_fn(|| {
            q.pop(t)
                .map(|(p, _)| p.pod.metadata.name.clone().unwrap_or_default())
        })
        .collect();
        assert_eq!(order, vec!["high", "low-1", "low-2"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_helpful_event_and_back_off() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0), t0);
        let (_, cycle) = q.pop(t0).expect("pop");
        q.unschedulable(
            &key("p"),
            vec![crate::plugins::taint_toleration::NAME],
            cycle,
            t0,
        );
        assert!(
            q.pop(t0 + Duration::from_secs(60)).is_none(),
            "waits for an event"
        );
        // A pod deletion cannot untaint a node.
        q.on_cluster_event(ClusterEvent::AssignedPodDeleted, t0);
        assert!(q.pop(t0 + Duration::from_secs(60)).is_none());
        // A node change can; the first back-off is 1 s from the attempt.
        q.on_cluster_event(ClusterEvent::NodeChanged, t0 + Duration::from_millis(100));
        assert!(
            q.pop(t0 + Duration::from_millis(500)).is_none(),
            "still backing off"
        );
        let (p, cycle) = q.pop(t0 + Duration::from_secs(1)).expect("after 1 s");
        assert_eq!(p.attempts, 2);
        // Second failure: 2 s back-off.
        let t1 = t0 + Duration::from_secs(1);
        q.unschedulable(
            &key("p"),
            vec![crate::plugins::node_resources_fit::NAME],
            cycle,
            t1,
        );
        q.on_cluster_event(ClusterEvent::AssignedPodDeleted, t1);
        assert!(q.pop(t1 + Duration::from_millis(1900)).is_none());
        assert!(q.pop(t1 + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn backoff_is_capped_at_ten_seconds() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0), t0);
        let mut now = t0;
        for _ in 0..8 {
            let (p, _) = q.pop(now + MAX_BACKOFF).expect("ready within the cap");
            now += MAX_BACKOFF;
            q.retry(p.pod.clone(), now);
        }
        assert!(q
            .pop(now + MAX_BACKOFF - Duration::from_millis(1))
            .is_none());
        assert!(q.pop(now + MAX_BACKOFF).is_some());
    }

    #[test]
    fn an_event_during_the_attempt_sends_the_pod_to_backoff_not_unschedulable() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0), t0);
        let (_, cycle) = q.pop(t0).expect("pop");
        q.on_cluster_event(ClusterEvent::NodeChanged, t0);
        q.unschedulable(
            &key("p"),
            vec![crate::plugins::node_affinity::NAME],
            cycle,
            t0,
        );
        assert!(q.pop(t0 + INITIAL_BACKOFF).is_some());
    }

    #[test]
    fn unschedulable_pods_are_retried_after_five_minutes() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0), t0);
        let (_, cycle) = q.pop(t0).expect("pop");
        q.unschedulable(
            &key("p"),
            vec![crate::plugins::node_affinity::NAME],
            cycle,
            t0,
        );
        q.flush_unschedulable_leftovers(t0 + Duration::from_secs(299));
        assert!(q.pop(t0 + Duration::from_secs(299)).is_none());
        q.flush_unschedulable_leftovers(t0 + MAX_IN_UNSCHEDULABLE);
        assert!(q.pop(t0 + MAX_IN_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn a_changed_unschedulable_pod_is_tried_again() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add_or_update(pod("p", 0), t0);
        let (_, cycle) = q.pop(t0).expect("pop");
        q.unschedulable(
            &key("p"),
            vec![crate::plugins::node_affinity::NAME],
            cycle,
            t0,
        );
        q.add_or_update(pod("p", 5), t0 + Duration::from_secs(3));
        assert!(q.pop(t0 + Duration::from_secs(3)).is_some());
    }
}
