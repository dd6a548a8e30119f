//! Keeps the zone in step with the cluster: Services and EndpointSlices come from the
//! shared informers (the controllers' caches, so DNS costs no extra watch), and every change
//! recomputes only the Service it touches. A lagging subscriber or the first complete
//! listing triggers a full pass from the caches (level-triggered: nothing is lost).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use informers::{Change, Factory, Informer, ObjectKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::records::{service_records, SERVICE_NAME_LABEL};
use crate::zone::{ServiceKey, SharedZone};

/// Subscribe to the Service and EndpointSlice informers of `informers` and keep `zone`
/// current from them. Call before the factory is started to hear the first listing.
pub fn follow(zone: Arc<SharedZone>, informers: &Factory) {
    let services = informers.informer::<Service>();
    let slices = informers.informer::<EndpointSlice>();
    let feed = Feed {
        zone,
        service_changes: services.subscribe(),
        slice_changes: slices.subscribe(),
        services,
        slices,
        members: Members::default(),
    };
    tokio::spawn(feed.run());
}

struct Feed {
    zone: Arc<SharedZone>,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    service_changes: informers::Subscription<Service>,
    slice_changes: informers::Subscription<EndpointSlice>,
    members: Members,
}

/// Which EndpointSlices belong to which Service (by their `kubernetes.io/service-name`
/// label), so a change recomputes one Service without scanning every slice.
#[derive(Default)]
struct Members {
    of_service: HashMap<ServiceKey, BTreeSet<String>>,
    owner: HashMap<ObjectKey, ServiceKey>,
}

impl Members {
    /// Record where `slice` belongs now; returns the Service it belonged to before when
    /// that differs (its records must be recomputed too).
    fn place(&mut self, slice: &EndpointSlice) -> (Option<ServiceKey>, Option<ServiceKey>) {
        let key = ObjectKey::of(slice);
        let now = owner_of(slice);
        let before = self.remove(&key);
        if let Some(service) = &now {
            self.of_service
                .entry(service.clone())
                .or_default()
                .insert(key.name.clone());
            self.owner.insert(key, service.clone());
        }
        let moved = before.filter(|b| Some(b) != now.as_ref());
        (now, moved)
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<ServiceKey> {
        let service = self.owner.remove(key)?;
        if let Some(names) = self.of_service.get_mut(&service) {
            names.remove(&key.name);
            if names.is_empty() {
                self.of_service.remove(&service);
            }
        }
        Some(service)
    }
}

fn owner_of(slice: &EndpointSlice) -> Option<ServiceKey> {
    let namespace = slice.metadata.namespace.clone()?;
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((namespace, service.clone()))
}

fn service_key(svc: &Service) -> ServiceKey {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

impl Feed {
    async fn run(mut self) {
        let services = self.services.clone();
        let slices = self.slices.clone();
        let mut listed = std::pin::pin!(async move {
            services.wait_synced().await;
            slices.wait_synced().await;
        });
        let mut synced = false;
        loop {
            tokio::select! {
                () = &mut listed, if !synced => {
                    synced = true;
                    self.resync();
                    self.zone.set_synced();
                    tracing::info!(
                        services = self.zone.read().services(),
                        "cluster DNS: Services and EndpointSlices listed"
                    );
                }
                change = self.service_changes.recv() => match change {
                    Some(Change::Applied(svc)) | Some(Change::Deleted(svc)) => {
                        self.recompute(&service_key(&svc));
                    }
                    Some(Change::Resync) => self.resync(),
                    None => return,
                },
                change = self.slice_changes.recv() => match change {
                    Some(Change::Applied(slice)) => {
                        let (now, moved) = self.members.place(&slice);
                        for service in now.iter().chain(moved.iter()) {
                            self.recompute(service);
                        }
                    }
                    Some(Change::Deleted(slice)) => {
                        if let Some(service) = self.members.remove(&ObjectKey::of(slice.as_ref())) {
                            self.recompute(&service);
                        }
                    }
                    Some(Change::Resync) => self.resync(),
                    None => return,
                },
            }
        }
    }

    /// Recompute one Service's records from the caches (gone from the cache: removed).
    fn recompute(&self, key: &ServiceKey) {
        let Some(svc) = self.services.get(&key.0, &key.1) else {
            self.zone.write().remove_service(key);
            return;
        };
        let slices: Vec<Arc<EndpointSlice>> = self
            .members
            .of_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&key.0, name))
            .collect();
        let domain = self.zone.read().domain().to_string();
        let records = service_records(&svc, &slices, &domain);
        self.zone.write().set_service(key.clone(), records);
    }

    /// Rebuild membership and every Service from the caches.
    fn resync(&mut self) {
        self.members = Members::default();
        for slice in self.slices.list() {
            self.members.place(&slice);
        }
        let services = self.services.list();
        let present: BTreeSet<ServiceKey> = services.iter().map(|s| service_key(s)).collect();
        self.zone
            .write()
            .retain_services(|key| present.contains(key));
        for key in &present {
            self.recompute(key);
        }
    }
}
