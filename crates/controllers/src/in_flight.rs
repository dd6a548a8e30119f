//! A bound on the requests one in-process component has in flight. The controllers and
//! the scheduler reach the API server over HTTP/1.1 through one `kube::Client`, whose
//! connection pool opens a new (TLS) connection whenever every pooled one is busy: a
//! ReplicaSet creating 500 pods at once, 256 binds and their Scheduled events grew the pool
//! to ~950 loopback connections during a 10,000-pod run, each costing a TLS handshake on
//! both ends and buffers held until the pool's idle timeout. Upstream's components share
//! one HTTP/2 connection and are paced by client-side QPS limits; here the requests just
//! wait for a slot, so the pool stays at about `max` connections. Only sending the request
//! and receiving the response head hold a slot: a watch's stream does not.

use std::sync::Arc;

use kube::client::Body;
use kube::Client;
use tokio::sync::Semaphore;

/// In-flight requests of the controllers together: enough to keep a 2-core server busy
/// (requests on loopback take milliseconds), few enough that the connection pool stays
/// small. The scheduler sizes its own from its binds in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// A client that sends through `client` with at most `max` requests in flight.
pub fn limit(client: Client, max: usize) -> Client {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let default_namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let client = client.clone();
        let slots = slots.clone();
        async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await;
            client.send(request).await
        }
    });
    Client::new(service, default_namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn at_most_max_requests_are_in_flight() {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (n, p) = (now.clone(), peak.clone());
        let inner = Client::new(
            tower::service_fn(move |_request: http::Request<Body>| {
                let (n, p) = (n.clone(), p.clone());
                async move {
                    let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(in_flight, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(Vec::new())))
                }
            }),
            "default",
        );
        let client = limit(inner, 3);
        assert_eq!(client.default_namespace(), "default");
        let requests = (0..20).map(|_| client.send(http::Request::new(Body::from(Vec::new()))));
        for answer in futures::future::join_all(requests).await {
            assert_eq!(answer.expect("answered").status(), http::StatusCode::OK);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
