//! watch: a stream of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events, one JSON object per
//! line as upstream streams it, from a resourceVersion (or from "now", preceded by the
//! current objects as ADDED), filtered by selectors with upstream's transitions (an object
//! that stops matching is DELETED, one that starts matching is ADDED), with bookmarks and
//! timeoutSeconds.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{header, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use api::registry::ResourceInfo;
use store::{Event, StoreError};

use super::read::{self, Selectors};
use super::render::{self, ListMeta};
use super::Ctx;
use crate::errors::{ApiError, ApiResult};
use crate::http::Body;
use crate::objects;
use crate::request::{IncludeObject, ListOptions, Rendering};

/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// Upstream closes watches after a random 30–60 minutes when no timeout is given, so
/// clients rebalance; so do we.
const DEFAULT_TIMEOUT_RANGE: (u64, u64) = (1800, 3600);

pub async fn watch(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let opts = ListOptions::from_query(&ctx.query)?;
    let selectors = Selectors::parse(info, &opts)?;
    let namespace = ctx.target.namespace.clone();
    // A watch on one object (`/pods/web?watch=1`, old style) is a field-selected watch.
    let name_filter = ctx.target.name.clone();
    let server = ctx.server.clone();

    let start_rv = match opts.resource_version.as_deref() {
        None | Some("0") => None,
        Some(rv) => Some(objects::parse_resource_version(rv)?),
    };
    let mut initial = Vec::new();
    let from = match start_rv {
        Some(rv) if !opts.send_initial_events => rv,
        _ => {
            let all = ListOptions {
                limit: None,
                continue_token: None,
                resource_version: None,
                resource_version_match: None,
                ..opts.clone()
            };
            let page =
                read::list_page(&server, info, namespace.as_deref(), &all, &selectors).await?;
            initial = page.items;
            page.revision
        }
    };
    let prefix = info.collection_prefix(namespace.as_deref());
    let timeout = match opts.timeout_seconds {
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => {
            use rand::Rng;
            Duration::from_secs(
                rand::thread_rng().gen_range(DEFAULT_TIMEOUT_RANGE.0..DEFAULT_TIMEOUT_RANGE.1),
            )
        }
    };
    let encoder = EventEncoder {
        info,
        rendering: ctx.rendering,
        include: opts.include_object,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    // Open the store watch before answering so a compacted revision is reported as the
    // first event of a 200 response, as upstream does.
    let stream = server.store.watch(&prefix, from).await;
    let bookmarks = opts.allow_bookmarks;
    let send_initial_end = opts.send_initial_events;
    let watches = server.metrics.watches.clone();
    tokio::spawn(async move {
        watches.inc();
        let _open = scopeguard(move || {
            watches.dec();
        });
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(encoder.error(&watch_error(e))).await;
                return;
            }
        };
        for obj in initial {
            if name_filter
                .as_deref()
                .map_or(true, |n| n == objects::name_of(&obj))
            {
                if tx.send(encoder.event("ADDED", obj)).await.is_err() {
                    return;
                }
            }
        }
        if send_initial_end {
            let _ = tx.send(encoder.bookmark(from, true)).await;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let mut last_rev = from;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(encoder.bookmark(last_rev, false)).await.is_err() { return; }
                }
                next = stream.next() => {
                    let Some(next) = next else { return };
                    let event = match next {
                        Ok(ev) => ev,
                        Err(e) => {
                            let _ = tx.send(encoder.error(&watch_error(e))).await;
                            return;
                        }
                    };
                    last_rev = event.revision();
                    for (kind, obj) in translate(info, &selectors, name_filter.as_deref(), event) {
                        if tx.send(encoder.event(kind, obj)).await.is_err() { return; }
                    }
                }
            }
        }
    });

    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    let content_type = match ctx.rendering {
        Rendering::Yaml => "application/yaml",
        _ => "application/json",
    };
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(body))
        .unwrap_or_else(|_| Response::new(crate::http::full(Bytes::new()))))
}

/// Runs `f` when dropped, however the watch task ends.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn watch_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::WatchLagged(rev) => {
            ApiError::gone(format!("watch from {rev} fell behind; relist"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// Turn one store event into the watch events a filtered watcher sees (0 or 1).
fn translate(
    info: &ResourceInfo,
    selectors: &Selectors,
    name: Option<&str>,
    event: Event,
) -> Vec<(&'static str, Value)> {
    let decode = |kv: &store::KeyValue| objects::decode(info, kv).ok();
    let passes = |obj: &Value| {
        selectors.matches(info, obj) && name.map_or(true, |n| n == objects::name_of(obj))
    };
    match event {
        Event::Put { kv, prev } => {
            let Some(new) = decode(&kv) else {
                return vec![];
            };
            let old = prev.as_ref().and_then(decode);
            let new_passes = passes(&new);
            let old_passes = old.as_ref().map_or(false, passes);
            match (old.is_some(), old_passes, new_passes) {
                (_, true, true) => vec![("MODIFIED", new)],
                (_, false, true) => vec![("ADDED", new)],
                (true, true, false) => {
                    let mut gone = old.unwrap_or(Value::Null);
                    objects::set_resource_version(&mut gone, kv.mod_revision);
                    vec![("DELETED", gone)]
                }
                _ => vec![],
            }
        }
        Event::Delete { prev, revision } => {
            let Some(mut old) = decode(&prev) else {
                return vec![];
            };
            if !passes(&old) {
                return vec![];
            }
            objects::set_resource_version(&mut old, revision);
            vec![("DELETED", old)]
        }
    }
}

/// Encodes watch events in the negotiated rendering, one line each.
#[derive(Clone, Copy)]
struct EventEncoder {
    info: &'static ResourceInfo,
    rendering: Rendering,
    include: IncludeObject,
}

impl EventEncoder {
    fn line(&self, v: &Value) -> Bytes {
        let mut bytes = serde_json::to_vec(v).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn event(&self, kind: &str, obj: Value) -> Bytes {
        let object = match self.rendering {
            Rendering::Table => {
                let meta = ListMeta {
                    resource_version: obj["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    ..Default::default()
                };
                render::table(
                    self.info,
                    std::slice::from_ref(&obj),
                    &meta,
                    self.include,
                    true,
                )
            }
            Rendering::PartialMetadata => render::partial_metadata(&obj),
            _ => render::with_type_meta(self.info, obj),
        };
        let mut ev = serde_json::Map::with_capacity(2);
        ev.insert("type".into(), Value::String(kind.to_string()));
        ev.insert("object".into(), object);
        self.line(&Value::Object(ev))
    }

    fn bookmark(&self, rev: i64, initial_events_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = match self.rendering {
            Rendering::PartialMetadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            }
            _ => {
                json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta})
            }
        };
        self.line(&json!({"type": "BOOKMARK", "object": object}))
    }

    fn error(&self, e: &ApiError) -> Bytes {
        self.line(&json!({"type": "ERROR", "object": e.to_status()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::KeyValue;

    fn kv(labels: Value, rev: i64) -> KeyValue {
        let obj = json!({"metadata": {"name": "a", "namespace": "d", "labels": labels}});
        KeyValue {
            key: "/registry/configmaps/d/a".into(),
            value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn leaving_the_selector_is_a_delete() {
        let info = api::registry::lookup("", "v1", "configmaps").unwrap();
        let opts = ListOptions {
            label_selector: Some("app=web".into()),
            ..Default::default()
        };
        let sel = Selectors::parse(info, &opts).unwrap();
        let ev = Event::Put {
            kv: kv(json!({"app": "db"}), 5),
            prev: Some(kv(json!({"app": "web"}), 4)),
        };
        let out = translate(info, &sel, None, ev);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "DELETED");
        assert_eq!(out[0].1["metadata"]["resourceVersion"], "5");
        let ev = Event::Put {
            kv: kv(json!({"app": "web"}), 6),
            prev: Some(kv(json!({"app": "db"}), 5)),
        };
        assert_eq!(translate(info, &sel, None, ev)[0].0, "ADDED");
        let ev = Event::Put {
            kv: kv(json!({"app": "db"}), 7),
            prev: Some(kv(json!({"app": "db"}), 6)),
        };
        assert!(translate(info, &sel, None, ev).is_empty());
    }
}
