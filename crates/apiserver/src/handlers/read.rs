//! get and list: reads at the newest or an exact revision, label and field selectors,
//! and paging with upstream-shaped continue tokens.

use base64::Engine;
use hyper::Response;
use serde_json::Value;

use api::fields::FieldSelector;
use api::registry::ResourceInfo;
use api::selectors::LabelSelector;
use store::{KeyValue, ListRequest, ReadAt, StoreError};

use super::list_body;
use super::render::{self, ListMeta};
use super::Ctx;
use crate::errors::{store_error, ApiError, ApiResult};
use crate::http::{self, Body};
use crate::objects;
use crate::request::{ListOptions, Rendering};
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
    objects::decode(info, &kv)
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
        self.labels.as_ref().is_none_or(|l| l.is_empty()) && self.fields.is_none()
    }

    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches_object(obj))
            && self.fields.as_ref().is_none_or(|f| f.matches(info, obj))
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

/// How many rows a list reads from the store at a time, whatever the client's limit: a
/// list of 10,000 objects then holds at most this many stored values (plus what the
/// response keeps) at once, instead of all of them.
pub const INTERNAL_PAGE: usize = 500;

/// One stored object a list selected, with its decoded form when selecting it needed one
/// (label or field selectors) and the caller asked to keep it.
pub struct Selected {
    pub kv: KeyValue,
    pub decoded: Option<Value>,
}

/// Walks one collection for a list: reads it in internal pages at one revision (so the
/// whole list is one snapshot), keeps the items the selectors match, stops at the
/// client's limit and works out the continue token and remaining count upstream would
/// give. Each `next_batch` holds at most one internal page.
pub struct ListWalk {
    info: &'static ResourceInfo,
    prefix: String,
    start_key: Option<String>,
    at: ReadAt,
    /// The list continues an earlier one: a compacted revision is then 410 with
    /// upstream's "too old" message.
    continued: bool,
    limit: Option<usize>,
    matched: usize,
    revision: i64,
    finished: bool,
    continue_from: Option<String>,
    remaining: Option<u64>,
}

impl ListWalk {
    /// Decide where and at which revision the list starts; nothing is read yet.
    pub async fn start(
        server: &ApiServer,
        info: &'static ResourceInfo,
        namespace: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<ListWalk> {
        let prefix = info.collection_prefix(namespace);
        let (at, start_key) = match &opts.continue_token {
            Some(token) => {
                let t = decode_continue(token)?;
                (ReadAt::Exact(t.rv), Some(format!("{prefix}{}", t.start)))
            }
            None => (read_at(server, opts).await?, None),
        };
        Ok(ListWalk {
            info,
            prefix,
            start_key,
            at,
            continued: opts.continue_token.is_some(),
            limit: opts.limit,
            matched: 0,
            revision: 0,
            finished: false,
            continue_from: None,
            remaining: None,
        })
    }

    /// True once every batch has been returned.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The client's limit, if it set one.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// The store prefix of the collection being listed.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision the list is read at; known after the first batch.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The list envelope's metadata; complete once the walk is finished.
    pub fn meta(&self) -> ListMeta {
        let continue_token = self
            .continue_from
            .as_ref()
            .map(|k| encode_continue(self.revision, k.strip_prefix(&self.prefix).unwrap_or(k)));
        ListMeta {
            resource_version: self.revision.to_string(),
            continue_token,
            remaining: self.remaining,
        }
    }

    /// The selected items of the next internal page (possibly none), or `None` when the
    /// walk is finished. `keep_decoded` keeps the decoded form of items the selectors had
    /// to decode, for callers that need it anyway.
    pub async fn next_batch(
        &mut self,
        server: &ApiServer,
        selectors: &Selectors,
        keep_decoded: bool,
    ) -> ApiResult<Option<Vec<Selected>>> {
        if self.finished {
            return Ok(None);
        }
        let info = self.info;
        // Without selectors every row is an item, so reading past the limit is waste.
        let fetch = match self.limit {
            Some(l) if selectors.is_empty() => (l - self.matched).min(INTERNAL_PAGE),
            _ => INTERNAL_PAGE,
        };
        let continued = self.continued;
        let page = server
            .store
            .list(ListRequest {
                prefix: self.prefix.clone(),
                start_key: self.start_key.take(),
                limit: Some(fetch),
                at: self.at,
            })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if continued => ApiError::gone(CONTINUE_TOO_OLD),
                other => store_error(info, "", other),
            })?;
        // Later pages read at the same revision, so the whole list is one snapshot.
        self.at = ReadAt::Exact(page.revision);
        self.revision = page.revision;
        let count = page.items.len();
        let next_start = page.items.last().map(|kv| format!("{}\u{0}", kv.key));
        let mut batch = Vec::new();
        for (i, kv) in page.items.into_iter().enumerate() {
            let decoded = if selectors.is_empty() {
                None
            } else {
                let obj = objects::decode(info, &kv)?;
                if !selectors.matches(info, &obj) {
                    continue;
                }
                keep_decoded.then_some(obj)
            };
            self.matched += 1;
            if self.limit == Some(self.matched) {
                if i + 1 < count || page.more {
                    self.continue_from = Some(format!("{}\u{0}", kv.key));
                    if selectors.is_empty() {
                        self.remaining = page.remaining.map(|r| r + (count - i - 1) as u64);
                    }
                }
                batch.push(Selected { kv, decoded });
                self.finished = true;
                return Ok(Some(batch));
            }
            batch.push(Selected { kv, decoded });
        }
        match next_start {
            Some(start) if page.more => self.start_key = Some(start),
            _ => self.finished = true,
        }
        Ok(Some(batch))
    }
}

/// A page of matching objects.
pub struct Page {
    pub items: Vec<Value>,
    pub meta: ListMeta,
    pub revision: i64,
}

/// List matching objects of one collection as decoded objects, honouring
/// limit/continue (for callers that need every item at once: watch's initial events,
/// deletecollection, YAML lists).
pub async fn list_page(
    server: &ApiServer,
    info: &'static ResourceInfo,
    namespace: Option<&str>,
    opts: &ListOptions,
    selectors: &Selectors,
) -> ApiResult<Page> {
    let mut walk = ListWalk::start(server, info, namespace, opts).await?;
    let mut items = Vec::new();
    while let Some(batch) = walk.next_batch(server, selectors, true).await? {
        for sel in batch {
            items.push(match sel.decoded {
                Some(obj) => obj,
                None => objects::decode(info, &sel.kv)?,
            });
        }
    }
    Ok(Page {
        items,
        meta: walk.meta(),
        revision: walk.revision(),
    })
}

pub async fn list(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let opts = ListOptions::from_query(&ctx.query)?;
    let selectors = Selectors::parse(info, &opts)?;
    if ctx.rendering == Rendering::Yaml {
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
        return Ok(http::object(200, &body, ctx.rendering));
    }
    let walk = ListWalk::start(ctx.server, info, ctx.target.namespace.as_deref(), &opts).await?;
    list_body::respond(
        ctx.server.clone(),
        info,
        walk,
        selectors,
        ctx.rendering,
        opts.include_object,
    )
    .await
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
