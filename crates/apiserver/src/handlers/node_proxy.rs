//! Pod subresources served by the pod's node: `log` (streamed through) and `exec`,
//! `attach`, `portforward` (connection upgrades, then bytes both ways). The API server
//! checks the pod and container, finds the node's kubelet endpoint, and proxies with its
//! kubelet client certificate, as upstream's `LogLocation` / `ExecLocation` and
//! upgrade-aware proxy do.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::read;
use super::Ctx;
use crate::errors::{ApiError, ApiResult};
use crate::http::{self, Body};
use crate::kubelet::{self, KubeletClient};
use crate::request::Query;
use crate::routes::{NodeSub, ResourceTarget};
use crate::ApiServer;

/// kubelet's port when a Node does not publish one (kube-apiserver's `--kubelet-port`).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The log options kubelet reads; anything else in the query stays with the API server.
/// How long an ended exec/attach/port-forward stream may take to write its last bytes.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "tailLines",
    "limitBytes",
    "stream",
];

/// `GET pods/{name}/log`.
pub async fn log(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let namespace = ctx.target.namespace.as_deref().unwrap_or("default");
    let name = ctx.target.name.as_deref().unwrap_or_default();
    let pod = read::get_object(ctx.server, ctx.target.info, Some(namespace), name).await?;
    let container = pod_container(&pod, name, ctx.query.non_empty("container"))?;
    let Some(node_name) = node_name(&pod) else {
        // Upstream: a pod not yet assigned to a node has an empty log.
        return Ok(http::raw(200, "text/plain", Bytes::new()));
    };
    let (client, host, port) = kubelet_of(ctx.server, node_name).await?;
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}{}",
        log_query(&ctx.query)
    );
    client
        .get_stream(&host, port, &path, "pods/log", name)
        .await
}

/// `exec`, `attach`, `portforward`: the request is upgraded (WebSocket or SPDY) and
/// forwarded to the kubelet, whose switching-protocols answer is passed back, then bytes
/// are copied both ways until either side closes.
pub async fn upgrade(
    server: &std::sync::Arc<ApiServer>,
    target: &ResourceTarget,
    sub: NodeSub,
    mut req: Request<Bytes>,
) -> ApiResult<Response<Body>> {
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().unwrap_or_default();
    let query = Query::parse(req.uri().query());
    let pod = read::get_object(server, target.info, Some(namespace), name).await?;
    let kubelet_path = match sub {
        NodeSub::PortForward => format!("/portForward/{namespace}/{name}"),
        NodeSub::Exec | NodeSub::Attach => {
            let container = pod_container(&pod, name, query.non_empty("container"))?;
            let verb = if sub == NodeSub::Exec {
                "exec"
            } else {
                "attach"
            };
            format!("/{verb}/{namespace}/{name}/{container}")
        }
        NodeSub::Log => return Err(ApiError::internal("pods/log is not an upgrade")),
    };
    // Upgrades exist in HTTP/1.1 only (clients use it for exec, attach, port-forward).
    if !req.headers().contains_key(header::UPGRADE) || req.version() != hyper::Version::HTTP_11 {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let Some(node_name) = node_name(&pod) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let (client, host, port) = kubelet_of(server, node_name).await?;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{kubelet_path}?{q}"),
        None => kubelet_path,
    };
    let mut forward = Request::builder()
        .method(req.method().clone())
        .uri(&path_and_query)
        .body(Empty::<Bytes>::new().boxed())
        .map_err(|e| ApiError::internal(format!("building kubelet request: {e}")))?;
    for (key, value) in req.headers() {
        // The caller's credentials are for us, not for the node.
        if key != header::AUTHORIZATION && key != header::HOST {
            forward.headers_mut().append(key, value.clone());
        }
    }
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = client.send(&host, port, forward).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let resource = format!("pods/{}", sub.name());
        return Err(kubelet::error_from_response(resp, &resource, name).await);
    }
    let kubelet_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client_io, kubelet_io) =
            match futures::future::try_join(client_side, kubelet_side).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!("upgrading the {path_and_query} stream: {e}");
                    return;
                }
            };
        let mut client_io = TokioIo::new(client_io);
        let mut kubelet_io = TokioIo::new(kubelet_io);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client_io, &mut kubelet_io).await {
            tracing::debug!("{path_and_query} stream ended: {e}");
        }
        // The last bytes from the node (a WebSocket close frame, an error status) may
        // still be held by the connection's coalesced writes when one side ended with an
        // error: write them and close the stream, as a socket that wrote at once would have.
        let _ = tokio::time::timeout(FINAL_FLUSH, client_io.shutdown()).await;
    });
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (key, value) in resp.headers() {
        answer = answer.header(key, value);
    }
    answer
        .body(http::full(Bytes::new()))
        .map_err(|e| ApiError::internal(format!("building upgrade response: {e}")))
}

/// `GET nodes/{name}/proxy/{path}`: the node's agent answers `GET /{path}` (e.g.
/// `/stats/summary`), streamed back as it comes.
pub async fn node_path(
    server: &ApiServer,
    target: &ResourceTarget,
    req: &Request<Bytes>,
) -> ApiResult<Response<Body>> {
    let name = target.name.as_deref().unwrap_or_default();
    let path = agent_path(req.uri().path(), name);
    let (client, host, port) = kubelet_of(server, name).await?;
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    client
        .get_stream(&host, port, &path_and_query, "nodes/proxy", name)
        .await
}

/// The agent's path in a `.../nodes/{name}/proxy[/{path}]` request path.
fn agent_path(request_path: &str, node: &str) -> String {
    let marker = format!("/nodes/{node}/proxy");
    match request_path.split_once(&marker) {
        Some((_, rest)) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    }
}

/// The client, address and port for the kubelet of `node_name`.
async fn kubelet_of(
    server: &ApiServer,
    node_name: &str,
) -> ApiResult<(KubeletClient, String, u16)> {
    let client = server.kubelet.get().cloned().ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "this API server has no kubelet client certificate: node subresources (log, exec, attach, portforward) are unavailable",
        )
    })?;
    let nodes = api::registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let node = read::get_object(server, nodes, None, node_name).await?;
    let (host, port) = kubelet_endpoint(&node)?;
    Ok((client, host, port))
}

fn node_name(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// upstream's `validateContainer`: the named container must exist (in any of the pod's
/// container lists); none named is fine only for a pod with exactly one container.
pub fn pod_container(pod: &Value, pod_name: &str, container: Option<&str>) -> ApiResult<String> {
    let names = |list: &str| -> Vec<String> {
        pod["spec"][list]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let init = names("initContainers");
    let regular = names("containers");
    let ephemeral = names("ephemeralContainers");
    match container {
        Some(c) => {
            if init
                .iter()
                .chain(&regular)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None => match regular.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}"
            ))),
            _ => {
                let all: Vec<String> = init.into_iter().chain(regular).chain(ephemeral).collect();
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        },
    }
}

/// Where a node's kubelet listens: its first InternalIP, else ExternalIP, else Hostname
/// (k3s's `--kubelet-preferred-address-types`), at `daemonEndpoints.kubeletEndpoint.Port`.
pub fn kubelet_endpoint(node: &Value) -> ApiResult<(String, u16)> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a["type"] == *kind)
                .and_then(|a| a["address"].as_str())
                .filter(|a| !a.is_empty())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no preferred addresses found; known addresses: {}",
                serde_json::to_string(&addresses).unwrap_or_default()
            ))
            .with_details(serde_json::json!({"name": name, "kind": "nodes"}))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map_or(DEFAULT_KUBELET_PORT, |p| p as u16);
    Ok((host.to_string(), port))
}

/// The kubelet's query: the log options only, in a stable order.
fn log_query(query: &Query) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for key in LOG_PARAMS {
        if let Some(v) = query.get(key) {
            ser.append_pair(key, v);
            any = true;
        }
    }
    if any {
        format!("?{}", ser.finish())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chooses_the_container_as_upstream() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        let many = json!({"spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "app"}, {"name": "side"}],
        }});
        assert_eq!(pod_container(&one, "web", None).expect("one"), "app");
        assert_eq!(
            pod_container(&many, "web", Some("setup")).expect("init"),
            "setup"
        );
        let err = pod_container(&many, "web", None).expect_err("ambiguous");
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [setup app side]"
        );
        let err = pod_container(&one, "web", Some("nope")).expect_err("unknown");
        assert_eq!(err.message, "container nope is not valid for pod web");
    }

    #[test]
    fn finds_the_kubelet_endpoint() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}},
        }});
        assert_eq!(
            kubelet_endpoint(&node).expect("endpoint"),
            ("10.0.0.5".to_string(), 12345)
        );
        let bare = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}],
        }});
        assert_eq!(
            kubelet_endpoint(&bare).expect("endpoint"),
            ("n1".to_string(), 10250)
        );
        assert_eq!(
            kubelet_endpoint(&json!({"metadata": {"name": "n1"}}))
                .expect_err("no address")
                .code,
            400
        );
    }

    #[test]
    fn proxies_the_path_after_the_node() {
        assert_eq!(
            agent_path("/api/v1/nodes/n1/proxy/stats/summary", "n1"),
            "/stats/summary"
        );
        assert_eq!(agent_path("/api/v1/nodes/n1/proxy", "n1"), "/");
    }

    #[test]
    fn passes_only_log_options_to_the_kubelet() {
        let q = Query::parse(Some("container=c&tailLines=2&follow=true&pretty=1"));
        assert_eq!(log_query(&q), "?follow=true&tailLines=2");
        assert_eq!(log_query(&Query::parse(None)), "");
    }
}
