//! A small etcd v3 gRPC client: the five KV calls and the watch stream the etcd backend
//! uses, sent with tonic's generic client (`tonic::client::Grpc` + `ProstCodec`) over a
//! plain-http HTTP/2 channel, with the hand-written messages of `proto`. It owns the
//! connection setup (timeouts, keep-alive, several endpoints), per-call deadlines, and
//! turning transport and gRPC failures into `RpcError`s that name the call and the
//! endpoints. What the calls mean for the `Store` contract is decided in `mod.rs`.

use std::time::Duration;

use futures::StreamExt;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::proto;

/// The largest response accepted. tonic's default (4 MiB) is smaller than a list of a few
/// thousand objects; etcd itself caps what it sends at `math.MaxInt32`, so do the same.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The gRPC method paths (`/<package>.<service>/<method>`) of etcd's rpc.proto.
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const COMPACT: &str = "/etcdserverpb.KV/Compact";
const WATCH: &str = "/etcdserverpb.Watch/Watch";

/// How the client connects.
#[derive(Clone, Debug)]
pub(crate) struct ClientOptions {
    pub connect_timeout: Duration,
    /// Deadline of each unary call, and of opening a watch (until etcd confirms it).
    pub request_timeout: Duration,
    /// HTTP/2 ping interval and how long to wait for the answer before dropping the
    /// connection, so a silently vanished etcd is noticed (etcd allows pings every 5s).
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RpcError {
    /// etcd (or the transport on its behalf) answered with a gRPC error status.
    #[error("{rpc} on {endpoints}: {code:?}: {message}")]
    Status {
        rpc: &'static str,
        endpoints: String,
        code: tonic::Code,
        message: String,
    },
    /// No answer within the deadline (etcd down, unreachable, or overloaded).
    #[error("{rpc} on {endpoints}: no answer within {after:?}")]
    Timeout {
        rpc: &'static str,
        endpoints: String,
        after: Duration,
    },
    /// The channel could not take the call at all.
    #[error("{rpc} on {endpoints}: connection unusable: {detail}")]
    Transport {
        rpc: &'static str,
        endpoints: String,
        detail: String,
    },
}

impl RpcError {
    /// etcd's error message, when etcd answered with one.
    pub fn etcd_message(&self) -> Option<&str> {
        match self {
            RpcError::Status { message, .. } => Some(message),
            _ => None,
        }
    }

    fn status(rpc: &'static str, endpoints: &str, status: tonic::Status) -> RpcError {
        // Transport failures arrive as a status whose message is generic and whose cause
        // is in the source chain; keep both.
        let mut message = status.message().to_owned();
        let mut source = std::error::Error::source(&status);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&cause_text);
            }
            source = cause.source();
        }
        RpcError::Status {
            rpc,
            endpoints: endpoints.to_owned(),
            code: status.code(),
            message,
        }
    }
}

/// A connection to one etcd cluster. Cheap to clone (clones share the channel).
#[derive(Clone)]
pub(crate) struct EtcdClient {
    channel: Channel,
    /// The endpoints, comma-joined, for error messages.
    endpoints: String,
    request_timeout: Duration,
}

impl EtcdClient {
    /// Build the channel. Connecting is lazy: nothing is sent until the first call, and a
    /// lost connection is re-established by the next call. Several endpoints are
    /// load-balanced (power of two choices), as etcd's own clients do.
    pub fn new(endpoints: &[String], opts: &ClientOptions) -> Result<EtcdClient, String> {
        let joined = endpoints.join(",");
        let mut built = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| format!("etcd endpoint {url:?}: {e}"))?
                .connect_timeout(opts.connect_timeout)
                .http2_keep_alive_interval(opts.keep_alive_interval)
                .keep_alive_timeout(opts.keep_alive_timeout);
            built.push(endpoint);
        }
        let channel = match built.as_slice() {
            [] => return Err("no etcd endpoint given".into()),
            [one] => one.connect_lazy(),
            _ => {
                let (channel, changes) = Channel::balance_channel(built.len());
                for endpoint in built {
                    changes
                        .try_send(Change::Insert(endpoint.uri().clone(), endpoint))
                        .map_err(|e| format!("etcd endpoints {joined}: adding to balancer: {e}"))?;
                }
                channel
            }
        };
        Ok(EtcdClient {
            channel,
            endpoints: joined,
            request_timeout: opts.request_timeout,
        })
    }

    /// The comma-joined endpoints.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn grpc(&self) -> Grpc<Channel> {
        Grpc::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    fn timeout(&self, rpc: &'static str) -> RpcError {
        RpcError::Timeout {
            rpc,
            endpoints: self.endpoints.clone(),
            after: self.request_timeout,
        }
    }

    /// One unary call with the request deadline (also sent to etcd as `grpc-timeout`, so
    /// etcd stops working on an abandoned request).
    async fn unary<Req, Resp>(
        &self,
        rpc: &'static str,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, RpcError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let call = async {
            let mut grpc = self.grpc();
            grpc.ready().await.map_err(|e| RpcError::Transport {
                rpc,
                endpoints: self.endpoints.clone(),
                detail: e.to_string(),
            })?;
            let mut request = tonic::Request::new(req);
            request.set_timeout(self.request_timeout);
            grpc.unary(
                request,
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| RpcError::status(rpc, &self.endpoints, s))
        };
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| self.timeout(rpc))?
    }

    pub async fn range(&self, req: proto::RangeRequest) -> Result<proto::RangeResponse, RpcError> {
        self.unary("Range", RANGE, req).await
    }

    pub async fn txn(&self, req: proto::TxnRequest) -> Result<proto::TxnResponse, RpcError> {
        self.unary("Txn", TXN, req).await
    }

    pub async fn compact(
        &self,
        req: proto::CompactionRequest,
    ) -> Result<proto::CompactionResponse, RpcError> {
        self.unary("Compact", COMPACT, req).await
    }

    /// Open a watch and wait (within the request deadline) for etcd's first answer, which
    /// confirms the watch or cancels it (for example because the start revision is
    /// compacted). Returns the stream and that first answer.
    pub async fn watch(
        &self,
        create: proto::WatchCreateRequest,
    ) -> Result<(WatchResponses, proto::WatchResponse), RpcError> {
        const RPC: &str = "Watch";
        let open = async {
            let mut grpc = self.grpc();
            grpc.ready().await.map_err(|e| RpcError::Transport {
                rpc: RPC,
                endpoints: self.endpoints.clone(),
                detail: e.to_string(),
            })?;
            let first_request = proto::WatchRequest {
                request_union: Some(proto::watch_request::RequestUnion::CreateRequest(create)),
            };
            // One watch per stream: send the create request, then keep our half open
            // (never send more) until the stream is dropped, which resets it and makes
            // etcd drop the watch.
            let requests = futures::stream::iter([first_request]).chain(futures::stream::pending());
            let responses = grpc
                .streaming(
                    tonic::Request::new(requests),
                    PathAndQuery::from_static(WATCH),
                    ProstCodec::<proto::WatchRequest, proto::WatchResponse>::default(),
                )
                .await
                .map_err(|s| RpcError::status(RPC, &self.endpoints, s))?
                .into_inner();
            let mut responses = WatchResponses {
                inner: responses,
                endpoints: self.endpoints.clone(),
            };
            let first = responses.message().await?.ok_or_else(|| RpcError::Status {
                rpc: RPC,
                endpoints: self.endpoints.clone(),
                code: tonic::Code::Unavailable,
                message: "stream closed before the watch was confirmed".into(),
            })?;
            Ok((responses, first))
        };
        tokio::time::timeout(self.request_timeout, open)
            .await
            .map_err(|_| self.timeout(RPC))?
    }
}

/// The responses of one open watch.
pub(crate) struct WatchResponses {
    inner: tonic::Streaming<proto::WatchResponse>,
    endpoints: String,
}

impl WatchResponses {
    /// The next response; `Ok(None)` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<proto::WatchResponse>, RpcError> {
        self.inner
            .message()
            .await
            .map_err(|s| RpcError::status("Watch", &self.endpoints, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn bad_endpoint_urls_are_rejected_with_the_url() {
        let err = EtcdClient::new(&["http://bad host:1".to_string()], &opts())
            .err()
            .expect("a space is not allowed in a URI");
        assert!(err.contains("bad host"), "{err}");
        assert!(EtcdClient::new(&[], &opts()).is_err());
    }

    #[tokio::test]
    async fn refused_connection_names_call_and_endpoint() {
        let client =
            EtcdClient::new(&["http://127.0.0.1:9".to_string()], &opts()).expect("valid endpoint");
        let err = client
            .range(proto::RangeRequest::default())
            .await
            .expect_err("nothing listens on port 9");
        let text = err.to_string();
        assert!(text.starts_with("Range on http://127.0.0.1:9"), "{text}");
    }
}
