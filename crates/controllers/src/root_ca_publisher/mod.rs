//! The root CA publisher (upstream's `root-ca-cert-publisher`): every active namespace has
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so pods can verify the
//! API server (the ServiceAccount admission plugin projects it into every pod). A deleted
//! or edited ConfigMap is put back. Namespaces come from the shared informer; the
//! ConfigMaps from a watch of that one name, and each sync reads the live object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, watcher};

use crate::Context;

/// The ConfigMap's name.
pub const CONFIG_MAP_NAME: &str = "kube-root-ca.crt";
/// Its key holding the CA bundle.
pub const DATA_KEY: &str = "ca.crt";
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's description, word for word.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
#[error("{action} ConfigMap {namespace}/{CONFIG_MAP_NAME}: {source}")]
pub struct Error {
    action: &'static str,
    namespace: String,
    #[source]
    source: kube::Error,
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    Nothing,
    Create(ConfigMap),
    /// Replace the existing object (same resourceVersion) with this one.
    Update(ConfigMap),
}

fn is_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Active")
            == "Active"
}

/// What to do for a namespace (None: gone) given its current ConfigMap and the CA.
pub fn decide(namespace: Option<&Namespace>, current: Option<&ConfigMap>, ca: &str) -> Decision {
    let Some(ns) = namespace.filter(|ns| is_active(ns)) else {
        return Decision::Nothing;
    };
    let data = BTreeMap::from([(DATA_KEY.to_string(), ca.to_string())]);
    let Some(cm) = current else {
        return Decision::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP_NAME.into()),
                namespace: ns.metadata.name.clone(),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_string(),
                    DESCRIPTION.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        });
    };
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    let described =
        annotations.get(DESCRIPTION_ANNOTATION).map(String::as_str) == Some(DESCRIPTION);
    let binary_empty = cm.binary_data.as_ref().map_or(true, BTreeMap::is_empty);
    if cm.data.as_ref() == Some(&data) && described && binary_empty {
        return Decision::Nothing;
    }
    let mut fixed = cm.clone();
    let mut annotations = annotations;
    annotations.insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    fixed.metadata.annotations = Some(annotations);
    fixed.data = Some(data);
    fixed.binary_data = None;
    Decision::Update(fixed)
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let mut ns_changes = namespaces.subscribe();
    let client = ctx.client.clone();
    let workers = ctx.options.workers;
    let Some(ca) = ctx.options.root_ca_pem.clone() else {
        return futures::future::ready(()).boxed();
    };
    async move {
        let queue: informers::WorkQueue<String> = informers::WorkQueue::new();
        let q = queue.clone();
        let ns_inf = namespaces.clone();
        tokio::spawn(async move {
            while let Some(change) = ns_changes.recv().await {
                match change {
                    informers::Change::Applied(ns) => {
                        q.add(ns.metadata.name.clone().unwrap_or_default())
                    }
                    informers::Change::Deleted(_) => {}
                    informers::Change::Resync => {
                        for ns in ns_inf.list() {
                            q.add(ns.metadata.name.clone().unwrap_or_default());
                        }
                    }
                }
            }
        });
        tokio::spawn(watch_config_maps(client.clone(), queue.clone()));
        namespaces.wait_synced().await;
        queue
            .run(workers, "root-ca-cert-publisher", move |ns: String| {
                let client = client.clone();
                let namespaces = namespaces.clone();
                let ca = ca.clone();
                async move { sync(client, namespaces.get("", &ns).as_deref(), &ns, &ca).await }
            })
            .await;
    }
    .boxed()
}

/// Queues the namespace of every change to a `kube-root-ca.crt` (an edit or a delete).
async fn watch_config_maps(client: kube::Client, queue: informers::WorkQueue<String>) {
    let api: Api<ConfigMap> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP_NAME}"));
    let mut events = watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(cm))
            | Ok(watcher::Event::Delete(cm))
            | Ok(watcher::Event::InitApply(cm)) => {
                queue.add(cm.metadata.namespace.clone().unwrap_or_default())
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("watching {CONFIG_MAP_NAME} ConfigMaps: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn sync(
    client: kube::Client,
    namespace: Option<&Namespace>,
    ns: &str,
    ca: &str,
) -> Result<Option<Duration>, Error> {
    if namespace.map_or(true, |n| !is_active(n)) {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let fail = |action: &'static str| {
        move |source| Error {
            action,
            namespace: ns.to_string(),
            source,
        }
    };
    let current = api
        .get_opt(CONFIG_MAP_NAME)
        .await
        .map_err(fail("reading"))?;
    let result = match decide(namespace, current.as_ref(), ca) {
        Decision::Nothing => return Ok(None),
        Decision::Create(cm) => api
            .create(&PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(fail("creating")),
        Decision::Update(cm) => api
            .replace(CONFIG_MAP_NAME, &PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(fail("updating")),
    };
    match result {
        Ok(()) => Ok(None),
        // A race with another writer (retried through the watch) or a namespace that
        // began terminating.
        Err(Error {
            source: kube::Error::Api(e),
            ..
        }) if matches!(e.code, 409 | 404 | 403) => Ok(Some(Duration::from_secs(1))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(phase: &str) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some("team".into());
        n.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        n
    }

    fn created(ca: &str) -> ConfigMap {
        match decide(Some(&ns("Active")), None, ca) {
            Decision::Create(cm) => cm,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publishes_and_restores() {
        let cm = created("PEM");
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP_NAME));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(cm.data.as_ref().unwrap()[DATA_KEY], "PEM");
        assert_eq!(
            cm.metadata.annotations.as_ref().unwrap()[DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        // Up to date: nothing.
        assert_eq!(
            decide(Some(&ns("Active")), Some(&cm), "PEM"),
            Decision::Nothing
        );
        // Edited data, an extra key or a lost annotation: put back, other annotations kept.
        let mut edited = cm.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        let mut annotations = BTreeMap::new();
        annotations.insert("mine".to_string(), "1".to_string());
        edited.metadata.annotations = Some(annotations);
        match decide(Some(&ns("Active")), Some(&edited), "PEM") {
            Decision::Update(fixed) => {
                assert_eq!(fixed.data, cm.data);
                let a = fixed.metadata.annotations.unwrap();
                assert_eq!(a["mine"], "1");
                assert_eq!(a[DESCRIPTION_ANNOTATION], DESCRIPTION);
            }
            other => panic!("{other:?}"),
        }
        // A new CA replaces the old.
        assert!(matches!(
            decide(Some(&ns("Active")), Some(&cm), "NEW"),
            Decision::Update(_)
        ));
        // Terminating or gone namespaces get nothing.
        assert_eq!(
            decide(Some(&ns("Terminating")), None, "PEM"),
            Decision::Nothing
        );
        assert_eq!(decide(None, None, "PEM"), Decision::Nothing);
    }
}
