//! The in-process transport of the server's own control loops (controllers, scheduler,
//! cluster DNS): a `tower::Service` under their `kube::Client` that hands each request
//! straight to `server::respond`, as the identity of the control loops' client
//! certificate. No socket, TLS or HTTP/2 framing is in between, on either side: under
//! the scheduling load those were ~14% of the server's CPU, most of it paid twice for
//! these requests (once as the client, once as the server). Past authentication every
//! request takes the path a remote one takes: the same body limit, admission,
//! validation, metrics, and watch streams, whose bodies the client polls directly.
//! Upgrades (exec, attach, port-forward) need a connection and are not served here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::{Request, Response};

use crate::auth::Identity;
use crate::http::Body;
use crate::ApiServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests of an in-process client, answered by `server` as `identity`.
#[derive(Clone)]
pub struct InProcess {
    server: Arc<ApiServer>,
    identity: Arc<Identity>,
}

impl InProcess {
    pub fn new(server: Arc<ApiServer>, identity: Identity) -> InProcess {
        InProcess {
            server,
            identity: Arc::new(identity),
        }
    }
}

/// What request logs show as the peer of an in-process request.
const PEER: &str = "in-process";

impl<B> tower::Service<Request<B>> for InProcess
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let server = self.server.clone();
        let identity = self.identity.clone();
        Box::pin(async move { Ok(crate::server::respond(&server, &identity, &PEER, req).await) })
    }
}
