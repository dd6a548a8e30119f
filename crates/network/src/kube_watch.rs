//! Watching a kind cluster-wide into a channel: the service proxy and the NetworkPolicy
//! enforcer each merge several kinds into one stream of their own change type. Watch
//! errors are retried with kube's default backoff; the task ends when the receiver is gone.

use futures::StreamExt;
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
        let api: Api<K> = Api::all(client);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if tx.send(wrap(e)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!("{what} watch: {e}"),
            }
        }
    });
}
