//! The namespace controller: when a namespace is deleted (Terminating), remove everything
//! in it, resource by resource through discovery, then drop the `kubernetes` finalizer via
//! `/finalize` so the API server deletes the namespace, as upstream's namespace controller.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Client;

/// The finalizer the namespace controller owns (spec.finalizers).
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("namespace {namespace}: {context}: {source}")]
    Kube {
        namespace: String,
        context: String,
        #[source]
        source: kube::Error,
    },
}

/// What to do with a namespace (decided without I/O).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not being deleted, or not ours to finalize.
    Nothing,
    /// Terminating with our finalizer: remove its content, then finalize.
    Clean,
}

pub fn decide(ns: &Namespace) -> Decision {
    let deleting = ns.metadata.deletion_timestamp.is_some();
    let ours = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .map_or(false, |f| f.iter().any(|x| x == KUBERNETES_FINALIZER));
    if deleting && ours {
        Decision::Clean
    } else {
        Decision::Nothing
    }
}

struct Ctx {
    client: Client,
}

/// Run until the watch stream ends (it does not, short of the process exiting).
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("namespace reconcile: {e}");
            }
        })
        .await;
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if decide(&ns) == Decision::Nothing {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let kube_err = |context: &str| {
        let namespace = name.clone();
        let context = context.to_string();
        move |source| Error::Kube {
            namespace,
            context,
            source,
        }
    };
    let remaining = delete_content(&ctx.client, &name).await?;
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "waiting for namespace content to go");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Finalize: spec.finalizers without ours, through the finalize subresource.
    let mut next = (*ns).clone();
    if let Some(spec) = next.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|x| x != KUBERNETES_FINALIZER);
        }
    }
    next.metadata.managed_fields = None;
    let body = serde_json::to_vec(&next).map_err(|e| Error::Kube {
        namespace: name.clone(),
        context: "encoding finalize request".into(),
        source: kube::Error::SerdeError(e),
    })?;
    let req = http_request(&format!("/api/v1/namespaces/{name}/finalize"), body);
    match ctx.client.request::<Namespace>(req).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(kube_err("finalizing")(e)),
    }
}

fn http_request(path: &str, body: Vec<u8>) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method("PUT")
        .uri(path)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("static request parts are valid")
}

/// Delete every namespaced object in `namespace`; returns how many are still there.
async fn delete_content(client: &Client, namespace: &str) -> Result<usize, Error> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|source| Error::Kube {
            namespace: namespace.into(),
            context: "discovering resources".into(),
            source,
        })?;
    let mut remaining = 0;
    for group in discovery.groups() {
        // Only the preferred version of each group: other versions are the same objects.
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            remaining += clean_resource(
                client,
                namespace,
                &ar,
                caps.supports_operation(verbs::DELETE_COLLECTION),
            )
            .await?;
        }
    }
    Ok(remaining)
}

async fn clean_resource(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
    can_delete_collection: bool,
) -> Result<usize, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let err = |context: String| {
        let namespace = namespace.to_string();
        move |source| Error::Kube {
            namespace,
            context,
            source,
        }
    };
    if can_delete_collection {
        match api
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => {}
            Err(e) => return Err(err(format!("deleting {}", ar.plural))(e)),
        }
    }
    let left = api
        .list(&ListParams::default())
        .await
        .map_err(err(format!("listing {}", ar.plural)))?;
    Ok(left.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ns(deleting: bool, finalizers: &[&str]) -> Namespace {
        let mut n = Namespace::default();
        if deleting {
            n.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        n.spec = Some(NamespaceSpec {
            finalizers: Some(finalizers.iter().map(|s| s.to_string()).collect()),
        });
        n
    }

    #[test]
    fn only_terminating_namespaces_with_our_finalizer_are_cleaned() {
        assert_eq!(decide(&ns(false, &["kubernetes"])), Decision::Nothing);
        assert_eq!(decide(&ns(true, &[])), Decision::Nothing);
        assert_eq!(decide(&ns(true, &["kubernetes"])), Decision::Clean);
    }
}
