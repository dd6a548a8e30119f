//! The Services that containers' environments are built from (upstream's service links:
//! `MY_SVC_SERVICE_HOST` and friends), kept in memory from one watch as kubelet's service
//! informer does, so starting a container costs no API request. Until the first listing
//! has arrived a container start asks the API directly instead of waiting.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

/// The namespace whose `kubernetes` Service every container sees.
const DEFAULT_NAMESPACE: &str = "default";
/// The API server's own Service.
const API_SERVICE: &str = "kubernetes";
/// How long a container start waits for the watch's first listing.
const FIRST_LISTING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ServiceCache {
    client: kube::Client,
    store: Store<Service>,
}

impl ServiceCache {
    /// Starts watching every namespace's Services (on the current tokio runtime).
    pub fn start(client: kube::Client) -> ServiceCache {
        let (store, writer) = reflector::store();
        let api: Api<Service> = Api::all(client.clone());
        let stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::debug!("watching Services for container environments: {e}");
                }
            }
        });
        ServiceCache { client, store }
    }

    /// The Services whose variables upstream injects into `pod`'s containers: those of its
    /// namespace (unless `enableServiceLinks: false`) and the `kubernetes` Service of
    /// `default`.
    pub async fn for_links(&self, pod: &Pod) -> Vec<Service> {
        let namespace = pod
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let synced = tokio::time::timeout(FIRST_LISTING_WAIT, self.store.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok());
        if synced {
            let mut out: Vec<Service> = self
                .store
                .state()
                .iter()
                .filter(|s| wanted(s, namespace, links))
                .map(|s| Service::clone(s))
                .collect();
            out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            return out;
        }
        self.ask_the_api(namespace, links).await
    }

    async fn ask_the_api(&self, namespace: &str, links: bool) -> Vec<Service> {
        let mut out = Vec::new();
        if links {
            let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
            if let Ok(list) = api.list(&ListParams::default()).await {
                out.extend(list.items);
            }
        }
        if namespace != DEFAULT_NAMESPACE || !links {
            let api: Api<Service> = Api::namespaced(self.client.clone(), DEFAULT_NAMESPACE);
            if let Ok(Some(k)) = api.get_opt(API_SERVICE).await {
                out.push(k);
            }
        }
        out
    }
}

/// Whether a Service's variables go into a container of a pod in `namespace`.
fn wanted(service: &Arc<Service>, namespace: &str, links: bool) -> bool {
    let ns = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    (links && ns == namespace) || (ns == DEFAULT_NAMESPACE && name == API_SERVICE)
}
