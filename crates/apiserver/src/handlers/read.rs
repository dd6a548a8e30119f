//! get and list: reads at the newest or an exact revision, label and field selectors,
//! and paging with upstream-shaped continue tokens.

use base64::Engine;
use hyper::Response;
use serde_json::Value;

use api::fields::FieldSelector;
use api::registry::ResourceInfo;
use api::selectors::LabelSelector;
use store::{ListRequest, ReadAt, StoreError};

use super::render::{self, ListMeta};
use super::Ctx;
use crate::errors::{store_error, ApiError, ApiResult};
use crate::http::{self, Body};
use crate::objects;
use crate::request::ListOptions;
use crate::ApiServer;

pub async fn get(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.as_deref().unwrap_or_default();
    let obj = get_object(ctx.server, info, ctx.target.namespace.as_deref(), name).await?;
    let include = ListOptions::from_query(&ctx.query)?.include_object;
    Ok(http::object(
        200,
        &render::single(info, obj, ctx.rendering, include),
        ctx.rendering,
    ))
}

/// Read one object at the newest revision; 404 if absent.
pub async fn get_object(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Value> {
    let kv = server
        .store
        .get(&info.key(namespace, name))
        .await
        .map_err(|e| store_error(info, name, e))?
        .ok_or_else(|| ApiError::not_found(info, name))?;
    Ok(objects::decode(info, &kv)?)
}

/// Parsed selectors of a list or watch.
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selectors {
    pub fn parse(info: &ResourceInfo, opts: &ListOptions) -> ApiResult<Selectors> {
        let labels = match &opts.label_selector {
            Some(s) => {
                Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let fields = match &opts.field_selector {
            Some(s) => {
                let f =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                f.validate_for(info).map_err(ApiError::bad_request)?;
                Some(f)
            }
            None => None,
        };
        Ok(Selectors { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.as_ref().map_or(true, |l| l.is_empty()) && self.fields.is_none()
    }

    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        self.labels.as_ref().map_or(true, |l| l.matches_object(obj))
            && self.fields.as_ref().map_or(true, |f| f.matches(info, obj))
    }
}

/// The contents of a continue token: the revision the first page was read at and the
/// key (relative to the collection prefix) the next page starts at.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start_relative: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start_relative.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data or JSON");
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.start.contains("..") {
        return Err(ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"));
    }
    Ok(t)
}

const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A page of matching objects.
pub struct Page {
    pub items: Vec<Value>,
    pub meta: ListMeta,
    pub revision: i64,
}

/// Decide which revision a list reads at, waiting briefly for a revision the store has
/// not reached yet (NotOlderThan semantics).
async fn read_at(server: &ApiServer, opts: &ListOptions) -> ApiResult<ReadAt> {
    let Some(rv) = opts.resource_version.as_deref() else {
        return Ok(ReadAt::Latest);
    };
    let rv = objects::parse_resource_version(rv)?;
    if rv == 0 {
        return Ok(ReadAt::Latest);
    }
    if opts.resource_version_match.as_deref() == Some("Exact") {
        return Ok(ReadAt::Exact(rv));
    }
    for _ in 0..30 {
        let current = server
            .store
            .current_revision()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if current >= rv {
            return Ok(ReadAt::Latest);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(ApiError::timeout(format!(
        "Too large resource version: {rv}, current: unknown"
    )))
}

/// List matching objects of one collection, honouring limit/continue.
pub async fn list_page(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    opts: &ListOptions,
    selectors: &Selectors,
) -> ApiResult<Page> {
    let prefix = info.collection_prefix(namespace);
    let (mut at, mut start_key) = match &opts.continue_token {
        Some(token) => {
            let t = decode_continue(token)?;
            (ReadAt::Exact(t.rv), Some(format!("{prefix}{}", t.start)))
        }
        None => (read_at(server, opts).await?, None),
    };
    let limit = opts.limit;
    let mut items = Vec::new();
    let mut continue_from: Option<String> = None;
    let mut remaining: Option<u64> = None;
    let revision;
    loop {
        let page = server
            .store
            .list(ListRequest {
                prefix: prefix.clone(),
                start_key: start_key.clone(),
                limit,
                at,
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if opts.continue_token.is_some() => {
                    ApiError::gone(CONTINUE_TOO_OLD)
                }
                other => store_error(info, "", other),
            })?;
        // Later pages read at the same revision, so the whole list is one snapshot.
        at = ReadAt::Exact(page.revision);
        let count = page.items.len();
        let mut last_key = None;
        for (i, kv) in page.items.iter().enumerate() {
            last_key = Some(kv.key.clone());
            let obj = objects::decode(info, kv)?;
            if selectors.matches(info, &obj) {
                items.push(obj);
            }
            if limit.map_or(false, |l| items.len() >= l) {
                let more_in_page = i + 1 < count;
                if more_in_page || page.more {
                    continue_from = Some(format!("{}\u{0}", kv.key));
                    if selectors.is_empty() {
                        remaining = page.remaining.map(|r| r + (count - i - 1) as u64);
                    }
                }
                break;
            }
        }
        if continue_from.is_some() || !page.more || limit.map_or(false, |l| items.len() >= l) {
            revision = page.revision;
            break;
        }
        match last_key {
            Some(k) => start_key = Some(format!("{k}\u{0}")),
            None => {
                revision = page.revision;
                break;
            }
        }
    }
    let continue_token =
        continue_from.map(|k| encode_continue(revision, k.strip_prefix(&prefix).unwrap_or(&k)));
    Ok(Page {
        items,
        meta: ListMeta {
            resource_version: revision.to_string(),
            continue_token,
            remaining,
        },
        revision,
    })
}

pub async fn list(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let opts = ListOptions::from_query(&ctx.query)?;
    let selectors = Selectors::parse(info, &opts)?;
    let page = list_page(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &opts,
        &selectors,
    )
    .await?;
    let body = render::list(
        info,
        page.items,
        &page.meta,
        ctx.rendering,
        opts.include_object,
    );
    Ok(http::object(200, &body, ctx.rendering))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web\u{0}");
        let d = decode_continue(&t).unwrap();
        assert_eq!((d.rv, d.start.as_str()), (42, "default/web\u{0}"));
        assert!(decode_continue("not-base64!").is_err());
    }
}
