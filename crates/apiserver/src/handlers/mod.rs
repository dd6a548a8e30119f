//! The verbs: one function per verb, reached through `dispatch`, which maps a parsed
//! request (target + method) to them. Reads live in `read`, writes in `write`, watches in
//! `watch`, subresources in `subresources`; `pipeline` is the decode → default → validate
//! path every write takes, and `render` the response shapes (objects, lists, tables).
//! A list response is written item by item by `list_body` (streamed when long), with
//! JSON items spliced from the stored bytes by `list_item`.

mod list_body;
mod list_item;
mod node_proxy;
mod pipeline;
mod read;
mod render;
mod subresources;
mod watch;
mod write;

use std::sync::Arc;

use bytes::Bytes;
use hyper::{header, Method, Request, Response};

use crate::auth::Identity;
use crate::discovery;
use crate::errors::{ApiError, ApiResult};
use crate::http::{self, Body};
use crate::request::{negotiate, Query, Rendering};
use crate::routes::{self, ResourceTarget, SubTarget, Target};
use crate::ApiServer;

pub use write::{create_object, delete_object_now};

/// Everything a verb needs to know about the request.
pub struct Ctx<'a> {
    pub server: &'a Arc<ApiServer>,
    pub who: &'a Identity,
    pub target: ResourceTarget,
    pub query: Query,
    pub rendering: Rendering,
    pub content_type: String,
    pub body: Bytes,
    /// Who owns the fields this request writes (`fieldManager`, else the User-Agent).
    pub manager: String,
}

pub async fn dispatch(
    server: &Arc<ApiServer>,
    who: &Identity,
    req: Request<Bytes>,
) -> Response<Body> {
    match dispatch_inner(server, who, req).await {
        Ok(resp) => resp,
        Err(e) => http::error(&e),
    }
}

async fn dispatch_inner(
    server: &Arc<ApiServer>,
    who: &Identity,
    req: Request<Bytes>,
) -> ApiResult<Response<Body>> {
    let target = routes::parse(req.uri().path()).map_err(|_| ApiError::not_found_path())?;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let method = req.method().clone();
    match target {
        Target::Resource(target) => {
            if target.subresource == Some(SubTarget::NodeProxy) {
                if method != Method::GET {
                    return Err(ApiError::method_not_allowed(format!(
                        "{method} is not supported on nodes/proxy"
                    )));
                }
                return node_proxy::node_path(server, &target, &req).await;
            }
            if let Some(SubTarget::Node(sub)) = target.subresource {
                if sub != routes::NodeSub::Log {
                    return node_proxy::upgrade(server, &target, sub, req).await;
                }
            }
            let rendering = negotiate(accept.as_deref())?;
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let query = Query::parse(req.uri().query());
            let user_agent = req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok());
            let manager = api::managed_fields::field_manager(query.get("fieldManager"), user_agent);
            let body = req.into_body();
            let ctx = Ctx {
                server,
                who,
                target,
                query,
                rendering,
                content_type,
                body,
                manager,
            };
            resource(ctx, method).await
        }
        other => {
            if method != Method::GET && method != Method::HEAD {
                return Err(ApiError::method_not_allowed(format!(
                    "{method} is not supported on this path"
                )));
            }
            non_resource(server, other, accept.as_deref().unwrap_or("")).await
        }
    }
}

async fn resource(ctx: Ctx<'_>, method: Method) -> ApiResult<Response<Body>> {
    let has_name = ctx.target.name.is_some();
    match (method, has_name, ctx.target.subresource) {
        (Method::GET, false, None) => {
            if ctx.query.bool("watch")? {
                watch::watch(ctx).await
            } else {
                read::list(ctx).await
            }
        }
        (Method::GET, true, None) => read::get(ctx).await,
        (Method::POST, false, None) => write::create(ctx).await,
        (Method::PUT, true, None) => write::update(ctx).await,
        (Method::PATCH, true, None) => write::patch(ctx).await,
        (Method::DELETE, true, None) => write::delete(ctx).await,
        (Method::DELETE, false, None) => write::delete_collection(ctx).await,
        (method, true, Some(sub)) => subresources::handle(ctx, method, sub).await,
        (method, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

async fn non_resource(
    server: &Arc<ApiServer>,
    target: Target,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let json = |v: serde_json::Value| http::object(200, &v, Rendering::Json);
    Ok(match target {
        Target::Health(_) => {
            if server.ready.load(std::sync::atomic::Ordering::Acquire) {
                http::raw(200, "text/plain; charset=utf-8", "ok")
            } else {
                http::raw(
                    500,
                    "text/plain; charset=utf-8",
                    "[-]poststarthook/skiff-bootstrap failed: not finished\nreadyz check failed",
                )
            }
        }
        Target::Version => json(serde_json::json!({
            "major": "1",
            "minor": "37",
            "gitVersion": server.config.git_version,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else if std::env::consts::ARCH == "aarch64" { "arm64" } else { std::env::consts::ARCH }),
        })),
        Target::CoreVersions => {
            if discovery::wants_aggregated(accept) {
                aggregated(discovery::aggregated(true))
            } else {
                json(discovery::core_versions(&server.config.advertise_address))
            }
        }
        Target::GroupList => {
            if discovery::wants_aggregated(accept) {
                aggregated(discovery::aggregated(false))
            } else {
                json(discovery::group_list())
            }
        }
        Target::Group(name) => json(discovery::group(&name).ok_or_else(ApiError::not_found_path)?),
        Target::ResourceList { group, version } => json(discovery::resource_list(&group, &version)),
        Target::OpenApiV2 => {
            // kubectl asks for v2 only as protobuf (and cannot read JSON there).
            if accept.contains("protobuf") {
                http::raw(
                    200,
                    api::openapi::V2_PROTOBUF_CONTENT_TYPE,
                    Bytes::from_static(api::openapi::v2_protobuf_bytes()),
                )
            } else {
                http::raw(
                    200,
                    "application/json",
                    Bytes::from_static(api::openapi::v2_bytes()),
                )
            }
        }
        Target::OpenApiV3Index => http::raw(
            200,
            "application/json",
            Bytes::from_static(api::openapi::v3_index_bytes()),
        ),
        Target::OpenApiV3(path) => {
            let bytes =
                api::openapi::v3_group_version_bytes(&path).ok_or_else(ApiError::not_found_path)?;
            http::raw(200, "application/json", Bytes::from_static(bytes))
        }
        Target::Metrics => http::raw(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            server.metrics.render(),
        ),
        Target::Resource(_) => unreachable!("handled by resource()"),
    })
}

fn aggregated(doc: serde_json::Value) -> Response<Body> {
    http::raw(
        200,
        discovery::AGGREGATED_V2,
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
}

/// The sub-target of a request, for verbs that must refuse subresources.
pub fn is_finalize(sub: Option<SubTarget>) -> bool {
    matches!(sub, Some(SubTarget::Finalize))
}
