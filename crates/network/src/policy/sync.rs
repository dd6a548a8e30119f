//! The policy controller's loop: list+watch NetworkPolicies, Pods and Namespaces (every
//! namespace: peers can be anywhere) into a [`ClusterState`], and after each burst of
//! events that changed something the decision reads, decide again, render, and apply the
//! diff against what the kernel holds as one `nft -f` transaction. The first sync, and the
//! one after any failure, rebuilds the whole table atomically; a failed batch changes
//! nothing (the previous rules keep enforcing), is logged and retried with backoff.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;

use crate::kube_watch::spawn_watch;

use super::model::{ClusterState, NodeContext, PodInfo};
use super::ruleset::{self, Ruleset};
use crate::proxy::nft::Nft;

/// One watch event, from any of the three watches.
enum Change {
    Policy(Box<Event<NetworkPolicy>>),
    Pod(Box<Event<Pod>>),
    Namespace(Box<Event<Namespace>>),
}

fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The watched state plus what is needed to follow relists.
#[derive(Default)]
pub struct Cache {
    pub state: ClusterState,
    pending_policies: Option<BTreeMap<String, NetworkPolicy>>,
    pending_pods: Option<BTreeMap<String, PodInfo>>,
    pending_namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
    listed: [bool; 3],
}

impl Cache {
    pub fn listed(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// Applies one event; true when the decision's input changed.
    fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Policy(e) => follow(
                *e,
                &mut self.state.policies,
                &mut self.pending_policies,
                &mut self.listed[0],
                |p: NetworkPolicy| {
                    let k = key(&p.metadata);
                    (k, p)
                },
                // Status and metadata churn do not change what a policy says.
                |a: &NetworkPolicy, b: &NetworkPolicy| {
                    a.spec == b.spec && a.metadata.namespace == b.metadata.namespace
                },
            ),
            Change::Pod(e) => follow(
                *e,
                &mut self.state.pods,
                &mut self.pending_pods,
                &mut self.listed[1],
                |p: Pod| (key(&p.metadata), PodInfo::from_pod(&p)),
                |a, b| a == b,
            ),
            Change::Namespace(e) => follow(
                *e,
                &mut self.state.namespaces,
                &mut self.pending_namespaces,
                &mut self.listed[2],
                |n: Namespace| {
                    (
                        n.metadata.name.clone().unwrap_or_default(),
                        n.metadata.labels.unwrap_or_default(),
                    )
                },
                |a, b| a == b,
            ),
        }
    }
}

/// Follows one watch into `map` (values made by `convert`); true when `map` changed.
fn follow<K, V>(
    event: Event<K>,
    map: &mut BTreeMap<String, V>,
    pending: &mut Option<BTreeMap<String, V>>,
    listed: &mut bool,
    convert: impl Fn(K) -> (String, V),
    same: impl Fn(&V, &V) -> bool,
) -> bool {
    match event {
        Event::Apply(obj) => {
            let (k, v) = convert(obj);
            let changed = map.get(&k).is_none_or(|old| !same(old, &v));
            map.insert(k, v);
            changed
        }
        Event::Delete(obj) => {
            let (k, _) = convert(obj);
            map.remove(&k).is_some()
        }
        Event::Init => {
            *pending = Some(BTreeMap::new());
            false
        }
        Event::InitApply(obj) => {
            let (k, v) = convert(obj);
            pending.get_or_insert_with(BTreeMap::new).insert(k, v);
            false
        }
        Event::InitDone => {
            *map = pending.take().unwrap_or_default();
            *listed = true;
            true
        }
    }
}

/// How long to wait before retrying after `failures` failed batches in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

/// Runs until the task is aborted.
pub async fn run(client: kube::Client, table: String, node: NodeContext, nft: Nft) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    spawn_watch::<NetworkPolicy, _>(
        client.clone(),
        tx.clone(),
        |e| Change::Policy(Box::new(e)),
        "network policy",
    );
    spawn_watch::<Pod, _>(
        client.clone(),
        tx.clone(),
        |e| Change::Pod(Box::new(e)),
        "network policy",
    );
    spawn_watch::<Namespace, _>(
        client,
        tx,
        |e| Change::Namespace(Box::new(e)),
        "network policy",
    );

    let mut cache = Cache::default();
    let mut applied = Ruleset::default();
    let mut changed = false;
    let mut rebuild = true;
    let mut failures = 0u32;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let change = match retry_at {
            Some(at) => tokio::select! {
                c = rx.recv() => c.map(Some),
                _ = tokio::time::sleep_until(at) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        let Some(mut next) = change else {
            return; // every watch ended: the runtime is shutting down
        };
        loop {
            if let Some(c) = next {
                changed |= cache.apply(c);
            }
            match rx.try_recv() {
                Ok(c) => next = Some(c),
                Err(_) => break,
            }
        }
        if !cache.listed() || !(changed || rebuild) {
            continue;
        }
        if retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            continue; // keep collecting until the backoff has passed
        }
        let started = Instant::now();
        let desired = cache.state.decide(&node);
        let wanted = ruleset::render(&desired);
        let text = if rebuild {
            ruleset::rebuild_commands(&table) + &ruleset::diff(&table, &Ruleset::default(), &wanted)
        } else {
            ruleset::diff(&table, &applied, &wanted)
        };
        changed = false;
        if text.is_empty() {
            continue;
        }
        match nft.apply(&text).await {
            Ok(()) => {
                tracing::debug!(
                    table = %table,
                    policies = desired.policies.len(),
                    isolated_ingress = desired.ingress.len(),
                    isolated_egress = desired.egress.len(),
                    rebuild,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "network policy: rules programmed"
                );
                if rebuild {
                    tracing::info!(table = %table, policies = desired.policies.len(), "network policy: table rebuilt");
                }
                if failures > 0 {
                    tracing::info!(table = %table, "network policy: rules programmed again after {failures} failed attempts");
                }
                applied = wanted;
                rebuild = false;
                failures = 0;
                retry_at = None;
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                // The batch was one transaction: the kernel still has the previous rules.
                tracing::error!(
                    table = %table,
                    attempt = failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "network policy: programming nftables failed, previous rules keep enforcing: {e}"
                );
                rebuild = true;
                retry_at = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, phase: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "podIP": ip}}),
        )
        .unwrap()
    }

    #[test]
    fn only_changes_the_decision_reads_count() {
        let mut c = Cache::default();
        assert!(!c.apply(Change::Pod(Box::new(Event::Init))));
        assert!(!c.apply(Change::Pod(Box::new(Event::InitApply(pod(
            "a",
            "10.42.0.5",
            "Running"
        ))))));
        assert!(c.apply(Change::Pod(Box::new(Event::InitDone))));
        assert!(!c.listed(), "policies and namespaces are not listed yet");
        c.apply(Change::Policy(Box::new(Event::InitDone)));
        c.apply(Change::Namespace(Box::new(Event::InitDone)));
        assert!(c.listed());
        assert_eq!(c.state.pods["ns/a"].ip, Some("10.42.0.5".parse().unwrap()));
        // A status update that changes nothing the decision reads (same phase, same IP).
        assert!(!c.apply(Change::Pod(Box::new(Event::Apply(pod(
            "a",
            "10.42.0.5",
            "Running"
        ))))));
        assert!(c.apply(Change::Pod(Box::new(Event::Apply(pod(
            "a",
            "10.42.0.5",
            "Succeeded"
        ))))));
        assert!(c.apply(Change::Pod(Box::new(Event::Delete(pod(
            "a",
            "10.42.0.5",
            "Succeeded"
        ))))));
        assert!(c.state.pods.is_empty());
    }

    #[test]
    fn backoff_grows_and_stops_at_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
