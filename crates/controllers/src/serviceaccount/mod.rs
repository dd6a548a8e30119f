//! The ServiceAccount controller (upstream's `serviceaccount-controller`): every namespace
//! that is not terminating has a `default` ServiceAccount; deleting it brings it back.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Context;

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
#[error("creating ServiceAccount {namespace}/{DEFAULT_SERVICE_ACCOUNT}: {source}")]
pub struct Error {
    namespace: String,
    #[source]
    source: kube::Error,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    CreateDefault,
}

/// `namespace`: the namespace if it exists; `has_default`: its `default` ServiceAccount
/// is in the cache.
pub fn decide(namespace: Option<&Namespace>, has_default: bool) -> Decision {
    let Some(ns) = namespace else {
        return Decision::Nothing;
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating || has_default {
        Decision::Nothing
    } else {
        Decision::CreateDefault
    }
}

pub fn start(ctx: &Arc<Context>) -> BoxFuture<'static, ()> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.informers.informer::<ServiceAccount>();
    let mut ns_changes = namespaces.subscribe();
    let mut sa_changes = accounts.subscribe();
    let client = ctx.client.clone();
    let workers = ctx.options.workers;
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
        let q = queue.clone();
        let ns_inf = namespaces.clone();
        tokio::spawn(async move {
            while let Some(change) = sa_changes.recv().await {
                match change {
                    informers::Change::Deleted(sa)
                        if sa.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) =>
                    {
                        q.add(sa.metadata.namespace.clone().unwrap_or_default())
                    }
                    informers::Change::Resync => {
                        for ns in ns_inf.list() {
                            q.add(ns.metadata.name.clone().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
        });
        // Decide only from complete caches, or every namespace would look account-less.
        namespaces.wait_synced().await;
        accounts.wait_synced().await;
        queue
            .run(workers, "serviceaccount-controller", move |ns: String| {
                let client = client.clone();
                let namespaces = namespaces.clone();
                let accounts = accounts.clone();
                async move {
                    let has_default = accounts.get(&ns, DEFAULT_SERVICE_ACCOUNT).is_some();
                    match decide(namespaces.get("", &ns).as_deref(), has_default) {
                        Decision::Nothing => Ok::<_, Error>(None),
                        Decision::CreateDefault => create_default(client, &ns).await,
                    }
                }
            })
            .await;
    }
    .boxed()
}

async fn create_default(client: kube::Client, ns: &str) -> Result<Option<Duration>, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client, ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::debug!(namespace = ns, "created the default ServiceAccount");
            Ok(None)
        }
        // Someone made it first; or the namespace went away or began terminating.
        Err(kube::Error::Api(e)) if matches!(e.code, 409 | 404 | 403) => Ok(None),
        Err(source) => Err(Error {
            namespace: ns.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ns(phase: &str, deleting: bool) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some("team".into());
        n.status = Some(NamespaceStatus {
            phase: Some(phase.into()),
            ..NamespaceStatus::default()
        });
        if deleting {
            n.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        n
    }

    #[test]
    fn default_account_decisions() {
        let active = ns("Active", false);
        let terminating = ns("Terminating", true);
        let marked = ns("Active", true);
        let cases: Vec<(&str, Option<&Namespace>, bool, Decision)> = vec![
            (
                "active without account",
                Some(&active),
                false,
                Decision::CreateDefault,
            ),
            (
                "active with account",
                Some(&active),
                true,
                Decision::Nothing,
            ),
            ("terminating", Some(&terminating), false, Decision::Nothing),
            ("deletion started", Some(&marked), false, Decision::Nothing),
            ("namespace gone", None, false, Decision::Nothing),
        ];
        for (name, n, has, want) in cases {
            assert_eq!(decide(n, has), want, "{name}");
        }
    }
}
