//! Watching a kind cluster-wide into a channel: the service proxy and the NetworkPolicy
//! enforcer each merge several kinds into one stream of their own change type. Watch
//! errors are retried with kube's default backoff; the task ends when the receiver is gone.
//! Objects are decoded without `managedFields` (`informers::Lean`): nothing here reads them,
//! and the pods watch sees every pod event of the cluster.

use futures::StreamExt;
use informers::Lean;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::mpsc;

/// Spawns a watch of every `K`, sending each event through `wrap` to `tx`; `what` names
/// the watcher in logs.
pub(crate) fn spawn_watch<K, C>(
    client: kube::Client,
    tx: mpsc::UnboundedSender<C>,
    wrap: fn(Event<K>) -> C,
    what: &'static str,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    C: Send + 'static,
{
    tokio::spawn(async move {
        let api: Api<Lean<K>> = Api::all(client);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if tx.send(wrap(unwrap_lean(e))).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!("{what} watch: {e}"),
            }
        }
    });
}

fn unwrap_lean<K>(event: Event<Lean<K>>) -> Event<K> {
    match event {
        Event::Apply(Lean(obj)) => Event::Apply(obj),
        Event::Delete(Lean(obj)) => Event::Delete(obj),
        Event::Init => Event::Init,
        Event::InitApply(Lean(obj)) => Event::InitApply(obj),
        Event::InitDone => Event::InitDone,
    }
}
