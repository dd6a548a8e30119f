//! The proxy's loop: list+watch Services and EndpointSlices into a cache, mark the Services
//! an event touches, and after each burst of events turn their new fragments into one
//! incremental nft batch. The first sync (and the one after any failure) rebuilds the
//! whole table in one atomic batch, adopting whatever a previous run left. A failed batch
//! changes nothing in the kernel; it is logged and retried with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;

use crate::kube_watch::spawn_watch;

use super::conntrack::{self, CleanupPlan};
use super::model::{self, NodeContext};
use super::nft::Nft;
use super::ruleset::{Batch, Fragment, Shared, Skeleton};

/// One watch event, from either watch.
enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// What the watches have delivered, indexed by Service.
#[derive(Default)]
pub struct Cache {
    services: HashMap<String, Service>,
    slices: HashMap<String, EndpointSlice>,
    /// Service key → keys of its slices.
    slices_of: HashMap<String, BTreeSet<String>>,
    /// Slice key → its Service's key.
    owner: HashMap<String, String>,
    pending_services: Option<HashMap<String, Service>>,
    pending_slices: Option<HashMap<String, EndpointSlice>>,
    pub services_listed: bool,
    pub slices_listed: bool,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl Cache {
    /// Applies one Service event; returns the Service keys whose rules may change.
    fn service_event(&mut self, event: Event<Service>, dirty: &mut BTreeSet<String>) {
        match event {
            Event::Apply(svc) => {
                let k = key(&svc.metadata);
                self.services.insert(k.clone(), svc);
                dirty.insert(k);
            }
            Event::Delete(svc) => {
                let k = key(&svc.metadata);
                self.services.remove(&k);
                dirty.insert(k);
            }
            Event::Init => self.pending_services = Some(HashMap::new()),
            Event::InitApply(svc) => {
                self.pending_services
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&svc.metadata), svc);
            }
            Event::InitDone => {
                let fresh = self.pending_services.take().unwrap_or_default();
                dirty.extend(self.services.keys().cloned());
                dirty.extend(fresh.keys().cloned());
                self.services = fresh;
                self.services_listed = true;
            }
        }
    }

    fn slice_event(&mut self, event: Event<EndpointSlice>, dirty: &mut BTreeSet<String>) {
        match event {
            Event::Apply(slice) => self.put_slice(slice, dirty),
            Event::Delete(slice) => {
                self.remove_slice(&key(&slice.metadata), dirty);
            }
            Event::Init => self.pending_slices = Some(HashMap::new()),
            Event::InitApply(slice) => {
                self.pending_slices
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&slice.metadata), slice);
            }
            Event::InitDone => {
                let fresh = self.pending_slices.take().unwrap_or_default();
                let old: Vec<String> = self.slices.keys().cloned().collect();
                for k in old {
                    self.remove_slice(&k, dirty);
                }
                for (_, slice) in fresh {
                    self.put_slice(slice, dirty);
                }
                self.slices_listed = true;
            }
        }
    }

    fn put_slice(&mut self, slice: EndpointSlice, dirty: &mut BTreeSet<String>) {
        let k = key(&slice.metadata);
        self.remove_slice(&k, dirty);
        if let Some(service) = model::service_key_of_slice(&slice) {
            self.slices_of
                .entry(service.clone())
                .or_default()
                .insert(k.clone());
            self.owner.insert(k.clone(), service.clone());
            dirty.insert(service);
        }
        self.slices.insert(k, slice);
    }

    fn remove_slice(&mut self, k: &str, dirty: &mut BTreeSet<String>) {
        self.slices.remove(k);
        if let Some(service) = self.owner.remove(k) {
            if let Some(set) = self.slices_of.get_mut(&service) {
                set.remove(k);
                if set.is_empty() {
                    self.slices_of.remove(&service);
                }
            }
            dirty.insert(service);
        }
    }

    /// The fragment Service `k` should own now (empty when it is gone).
    pub fn fragment(&self, k: &str, node: &NodeContext) -> Fragment {
        let Some(svc) = self.services.get(k) else {
            return Fragment::default();
        };
        model::fragment(svc, &self.slices_for(k), node)
    }

    fn slices_for(&self, k: &str) -> Vec<&EndpointSlice> {
        self.slices_of
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(s))
            .collect()
    }

    /// Whether Service `k` has a UDP port (its flows may need cleaning after a change).
    fn has_udp_port(&self, k: &str) -> bool {
        self.services.get(k).is_some_and(|svc| {
            svc.spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .any(|p| {
                    p.protocol
                        .as_deref()
                        .is_some_and(|proto| proto.eq_ignore_ascii_case("UDP"))
                })
        })
    }

    /// Which UDP flows may stay, from the Services and endpoints now: every UDP frontend
    /// with serving endpoints keeps only the flows translated to one of them. A frontend
    /// without endpoints is left alone (upstream: nothing to converge to yet).
    pub fn cleanup_plan(&self, node_ips: &[Ipv4Addr]) -> CleanupPlan {
        let mut plan = CleanupPlan {
            node_ips: node_ips.iter().copied().collect(),
            ..CleanupPlan::default()
        };
        for (k, svc) in &self.services {
            for f in model::udp_frontends(svc, &self.slices_for(k)) {
                if f.serving.is_empty() {
                    continue;
                }
                for ip in &f.ips {
                    plan.service_ips.insert((*ip, f.port), f.serving.clone());
                }
                if let Some(np) = f.node_port {
                    plan.node_ports.insert(np, f.serving.clone());
                }
            }
        }
        plan
    }

    pub fn service_keys(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }
}

/// How long to wait before retrying after `failures` failed batches in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

/// Runs until the task is aborted.
pub async fn run(client: kube::Client, skeleton: Skeleton, node: NodeContext, nft: Nft) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
    spawn_watch::<Service, _>(
        client.clone(),
        tx.clone(),
        |e| Change::Service(Box::new(e)),
        "service proxy",
    );
    spawn_watch::<EndpointSlice, _>(client, tx, |e| Change::Slice(Box::new(e)), "service proxy");

    let table = skeleton.table.clone();
    let mut cache = Cache::default();
    let mut applied: HashMap<String, Fragment> = HashMap::new();
    let mut shared = Shared::default();
    let mut dirty: BTreeSet<String> = BTreeSet::new();
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
        let Some(change) = change else {
            return; // both watches ended: the runtime is shutting down
        };
        let mut next = change;
        loop {
            match next {
                Some(Change::Service(e)) => cache.service_event(*e, &mut dirty),
                Some(Change::Slice(e)) => cache.slice_event(*e, &mut dirty),
                None => {}
            }
            match rx.try_recv() {
                Ok(c) => next = Some(c),
                Err(_) => break,
            }
        }
        if !(cache.services_listed && cache.slices_listed) {
            continue;
        }
        if retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            continue; // keep collecting until the backoff has passed
        }
        let started = Instant::now();
        let mut batch = Batch::default();
        let mut next_applied: BTreeMap<String, Fragment> = BTreeMap::new();
        if !rebuild {
            for k in &dirty {
                let new = cache.fragment(k, &node);
                let old = applied.get(k).cloned().unwrap_or_default();
                batch.diff(&table, &old, &new);
                next_applied.insert(k.clone(), new);
            }
            // nft 1.0.6 cannot add a rule reading an endpoint map it loaded from the
            // kernel (it misparses the map's stored `typeof`), so a `pick-<n>` chain for an
            // endpoint count never seen before comes with a full rebuild.
            let new_chain = batch.new_shared_chains(&shared).next().map(str::to_string);
            if let Some(chain) = new_chain {
                tracing::info!(table = %table, chain, "service proxy: a new shared chain: rebuilding the table");
                rebuild = true;
                batch = Batch::default();
                next_applied.clear();
            }
        }
        let mut text = String::new();
        if rebuild {
            text.push_str(&skeleton.rebuild_commands());
            let empty = Fragment::default();
            batch.diff(&table, &empty, &model::common_shared_chains());
            for k in cache.service_keys() {
                let f = cache.fragment(k, &node);
                if !f.is_empty() {
                    batch.diff(&table, &empty, &f);
                    next_applied.insert(k.clone(), f);
                }
            }
        }
        // A rebuild starts from an empty table.
        let base = if rebuild {
            Shared::default()
        } else {
            shared.clone()
        };
        if !rebuild && batch.is_empty(&base) {
            dirty.clear();
            continue;
        }
        text.push_str(&batch.text(&table, &base));
        let touches_udp = rebuild || dirty.iter().any(|k| cache.has_udp_port(k));
        match nft.apply(&text).await {
            Ok(()) => {
                shared = base;
                batch.apply_to(&mut shared);
                if touches_udp {
                    clean_stale_flows(&table, cache.cleanup_plan(&skeleton.node_ips)).await;
                }
                if rebuild {
                    applied = next_applied.into_iter().collect();
                    tracing::info!(
                        table = %table,
                        services = applied.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "service proxy: table rebuilt"
                    );
                } else {
                    for (k, f) in next_applied {
                        if f.is_empty() {
                            applied.remove(&k);
                        } else {
                            applied.insert(k, f);
                        }
                    }
                    tracing::debug!(
                        table = %table,
                        changed = batch.changed,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "service proxy: rules updated"
                    );
                }
                if failures > 0 {
                    tracing::info!(table = %table, "service proxy: rules programmed again after {failures} failed attempts");
                }
                dirty.clear();
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
                    "service proxy: programming nftables failed, previous rules keep serving: {e}"
                );
                rebuild = true;
                retry_at = Some(tokio::time::Instant::now() + wait);
            }
        }
    }
}

/// After the rules changed: deletes the UDP flows that still point at a removed endpoint
/// or were never translated. Failures are logged only: the rules are right, the old flows
/// just linger until they expire.
async fn clean_stale_flows(table: &str, plan: CleanupPlan) {
    if plan.is_empty() {
        return;
    }
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || conntrack::clean(&plan)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(deleted)) => tracing::info!(
            table = %table,
            deleted,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "service proxy: deleted stale UDP conntrack entries"
        ),
        Ok(Err(e)) => tracing::warn!(
            table = %table,
            "service proxy: clearing stale UDP conntrack entries failed (they expire on their own): {e}"
        ),
        Err(e) => tracing::warn!(table = %table, "service proxy: conntrack cleanup task: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}))
        .unwrap()
    }

    fn slice(name: &str, service: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
            "labels": {model::SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip]}], "ports": [{"port": 8080}]}))
        .unwrap()
    }

    #[test]
    fn events_mark_only_the_services_they_touch() {
        let node = NodeContext::default();
        let mut c = Cache::default();
        let mut dirty = BTreeSet::new();
        c.service_event(Event::Init, &mut dirty);
        c.service_event(Event::InitApply(svc("a", "10.43.0.2")), &mut dirty);
        c.service_event(Event::InitApply(svc("b", "10.43.0.3")), &mut dirty);
        c.service_event(Event::InitDone, &mut dirty);
        c.slice_event(Event::Init, &mut dirty);
        c.slice_event(Event::InitDone, &mut dirty);
        assert!(c.services_listed && c.slices_listed);
        assert_eq!(dirty.iter().collect::<Vec<_>>(), ["ns/a", "ns/b"]);
        assert!(c.fragment("ns/a", &node).is_empty(), "no endpoints yet");

        dirty.clear();
        c.slice_event(Event::Apply(slice("a-1", "a", "10.42.0.5")), &mut dirty);
        assert_eq!(dirty.iter().collect::<Vec<_>>(), ["ns/a"]);
        assert_eq!(c.fragment("ns/a", &node).elements.len(), 2);

        // A slice relabelled to another Service dirties both.
        dirty.clear();
        c.slice_event(Event::Apply(slice("a-1", "b", "10.42.0.5")), &mut dirty);
        assert_eq!(dirty.iter().collect::<Vec<_>>(), ["ns/a", "ns/b"]);
        assert!(c.fragment("ns/a", &node).is_empty());

        dirty.clear();
        c.service_event(Event::Delete(svc("b", "10.43.0.3")), &mut dirty);
        assert_eq!(dirty.iter().collect::<Vec<_>>(), ["ns/b"]);
        assert!(c.fragment("ns/b", &node).is_empty());
    }

    #[test]
    fn cleanup_plan_covers_udp_ports_with_serving_endpoints() {
        let udp_svc = |name: &str, ip: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
                "spec": {"type": "NodePort", "clusterIP": ip,
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]}}))
            .unwrap()
        };
        let udp_slice = |name: &str, service: &str, ip: &str| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "labels": {model::SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4", "endpoints": [{"addresses": [ip]}],
                "ports": [{"port": 5353, "protocol": "UDP"}]}))
            .unwrap()
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let node_ips = [ip("192.0.2.2")];
        let mut c = Cache::default();
        let mut dirty = BTreeSet::new();
        c.service_event(Event::Apply(udp_svc("dns", "10.43.0.10")), &mut dirty);
        c.service_event(Event::Apply(svc("web", "10.43.0.11")), &mut dirty);
        assert!(c.has_udp_port("ns/dns") && !c.has_udp_port("ns/web"));
        // No endpoint yet: nothing to converge to, nothing cleaned.
        assert!(c.cleanup_plan(&node_ips).is_empty());

        c.slice_event(
            Event::Apply(udp_slice("dns-1", "dns", "10.42.0.5")),
            &mut dirty,
        );
        c.slice_event(Event::Apply(slice("web-1", "web", "10.42.0.6")), &mut dirty);
        let plan = c.cleanup_plan(&node_ips);
        assert_eq!(
            plan.service_ips,
            [((ip("10.43.0.10"), 53), [ip("10.42.0.5")].into())].into()
        );
        assert_eq!(plan.node_ports, [(30053, [ip("10.42.0.5")].into())].into());

        // The backend replaced: flows to the old one are no longer allowed.
        c.slice_event(
            Event::Apply(udp_slice("dns-1", "dns", "10.42.0.8")),
            &mut dirty,
        );
        let plan = c.cleanup_plan(&node_ips);
        assert_eq!(
            plan.service_ips[&(ip("10.43.0.10"), 53)],
            [ip("10.42.0.8")].into()
        );
    }

    #[test]
    fn backoff_grows_and_stops_at_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
