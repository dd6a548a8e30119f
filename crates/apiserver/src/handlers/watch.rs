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
use store::StoreError;

use super::read::{self, Selectors};
use super::render::{self, ListMeta};
use super::Ctx;
use crate::errors::{ApiError, ApiResult};
use crate::http::Body;
use crate::objects;
use crate::request::{IncludeObject, ListOptions, Rendering};
use crate::watch_hub::{Change, Next, Shape, SharedEvent, View};

/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// Upstream closes watches after a random 30–60 minutes when no timeout is given, so
/// clients rebalance; so do we.
const DEFAULT_TIMEOUT_RANGE: (u64, u64) = (1800, 3600);
/// Lines queued for one watcher's client. A watcher whose client reads slower than events
/// come waits here, alone; when it falls further behind than the hub keeps events, the
/// hub ends it (see `watch_hub`).
const WATCHER_BUFFER: usize = 256;

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
    // Upstream's start points: a resourceVersion other than "0" without initial events
    // starts there; `sendInitialEvents=false` without one starts at the current revision
    // (or any, for "0"); otherwise the current state comes first as ADDED events.
    let mut initial = Vec::new();
    let from = match (start_rv, opts.send_initial_events) {
        (Some(rv), None | Some(false)) => rv,
        (None, Some(false)) => server
            .store
            .current_revision()
            .await
            .map_err(|e| ApiError::internal(format!("reading the current revision: {e}")))?,
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
    let filter = WatcherFilter {
        key_prefix: info.collection_prefix(namespace.as_deref()),
        name: name_filter,
        selectors,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(WATCHER_BUFFER);

    // Subscribe before answering so a compacted revision is reported as the first event
    // of a 200 response, as upstream does.
    let subscription = server.watch_hubs.subscribe(&server.store, info, from).await;
    let bookmarks = opts.allow_bookmarks;
    let send_initial_end = opts.send_initial_events == Some(true);
    let watches = server.metrics.watches.clone();
    tokio::spawn(async move {
        watches.inc();
        let _open = scopeguard(move || {
            watches.dec();
        });
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut sub = match subscription {
            Ok(s) => s,
            Err(e) => {
                send(&tx, encoder.error(&watch_error(&e)), &mut deadline).await;
                return;
            }
        };
        for obj in initial {
            if filter
                .name
                .as_deref()
                .is_none_or(|n| n == objects::name_of(&obj))
                && !send(&tx, encoder.event("ADDED", obj), &mut deadline).await
            {
                return;
            }
        }
        if send_initial_end && !send(&tx, encoder.bookmark(from, true), &mut deadline).await {
            return;
        }
        let view = sub.view();
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        let mut last_rev = from;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if !send(&tx, encoder.bookmark(last_rev, false), &mut deadline).await { return; }
                }
                next = sub.next() => match next {
                    Next::Event(event) => {
                        // The hub carries every namespace; today's watcher saw only its own.
                        if event.key().starts_with(&filter.key_prefix) {
                            last_rev = event.revision();
                            if let Some(line) = render_event(&event, view, &filter, &encoder) {
                                if !send(&tx, line, &mut deadline).await { return; }
                            }
                        }
                    }
                    // Too far behind: close the watch (no ERROR event, as kube-apiserver's
                    // watch cache does); the client re-watches from its last resourceVersion.
                    Next::Lagged(_) | Next::Closed => return,
                    Next::Failed(e) => {
                        send(&tx, encoder.error(&watch_error(&e)), &mut deadline).await;
                        return;
                    }
                },
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

/// Queue one line for the client; false when the watch is over (client gone, or the
/// timeout passed while the client was not reading).
async fn send(
    tx: &mpsc::Sender<Bytes>,
    line: Bytes,
    deadline: &mut std::pin::Pin<&mut tokio::time::Sleep>,
) -> bool {
    tokio::select! {
        sent = tx.send(line) => sent.is_ok(),
        _ = deadline.as_mut() => false,
    }
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

fn watch_error(e: &StoreError) -> ApiError {
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

/// What one watcher lets through: its namespace (as a key prefix), the object name of an
/// old-style single-object watch, and its label and field selectors.
struct WatcherFilter {
    key_prefix: String,
    name: Option<String>,
    selectors: Selectors,
}

impl WatcherFilter {
    /// True when every object under `key_prefix` passes, so the previous object need not
    /// be decoded to know whether it passed.
    fn passes_everything(&self) -> bool {
        self.name.is_none() && self.selectors.labels.is_none() && self.selectors.fields.is_none()
    }

    /// `passes` for an object as stored, without decoding it: only for a watcher whose
    /// whole filter is a field selector on plain fields (a kubelet's `spec.nodeName=`);
    /// None when that does not apply or the bytes cannot tell.
    fn passes_stored(&self, info: &ResourceInfo, stored: &[u8]) -> Option<bool> {
        if self.name.is_some() || self.selectors.labels.is_some() {
            return None;
        }
        let fields = self.selectors.fields.as_ref()?;
        let members = objects::StoredMembers::for_reading(info, stored)?;
        fields.matches_plain(info, |member, inner| members.inner(member, inner))
    }

    fn passes(&self, info: &ResourceInfo, obj: &Value) -> bool {
        self.selectors.matches(info, obj)
            && self
                .name
                .as_deref()
                .is_none_or(|n| n == objects::name_of(obj))
    }
}

/// Which watch event a filtered watcher makes of one store event, from whether the
/// object before and after it passes the watcher's filter (None: no such object, or it
/// could not be decoded). Upstream's selector transitions: an object that stops matching
/// is DELETED, one that starts matching is ADDED.
fn decide(is_delete: bool, old: Option<bool>, new: Option<bool>) -> Option<Change> {
    if is_delete {
        return (old == Some(true)).then_some(Change::Deleted);
    }
    match (old, new?) {
        (Some(true), true) => Some(Change::Modified),
        (_, true) => Some(Change::Added),
        (Some(true), false) => Some(Change::Deleted),
        _ => None,
    }
}

/// The line one watcher gets for one hub event, if any: shared with every other watcher
/// of the same shape, except for Tables.
fn render_event(
    event: &SharedEvent,
    view: View,
    filter: &WatcherFilter,
    encoder: &EventEncoder,
) -> Option<Bytes> {
    let info = view.info();
    if filter.passes_everything() && matches!(encoder.rendering, Rendering::Json | Rendering::Yaml)
    {
        // The decision below without decoding anything: a put is ADDED or MODIFIED as it
        // had a previous value, a delete is DELETED; the line is spliced from the stored
        // bytes where it can be (an undecodable object still yields no event).
        let change = match (event.is_delete(), event.has_prev()) {
            (true, _) => Change::Deleted,
            (false, true) => Change::Modified,
            (false, false) => Change::Added,
        };
        return event.object_line(view, change, |object| {
            encoder.shared_event(Shape::Object, change.event_type(), object)
        });
    }
    if matches!(encoder.rendering, Rendering::Json | Rendering::Yaml) {
        // A field-selected watch (every kubelet's) decided on the stored bytes, and its
        // line spliced from them as above; anything else decodes below.
        if let Some((old, new)) = event.stored_passes(|b| filter.passes_stored(info, b)) {
            let change = decide(event.is_delete(), old, new)?;
            return event.object_line(view, change, |object| {
                encoder.shared_event(Shape::Object, change.event_type(), object)
            });
        }
    }
    let new = event.new_object(view);
    let change = if filter.passes_everything() {
        // Every object passes, so "the previous object passed" is "there was one".
        let old = if event.is_delete() {
            event.old_object(view).map(|_| true)
        } else {
            event.has_prev().then_some(true)
        };
        decide(event.is_delete(), old, new.map(|_| true))?
    } else {
        let old = event.old_object(view).map(|o| filter.passes(info, o));
        decide(event.is_delete(), old, new.map(|o| filter.passes(info, o)))?
    };
    let object = match change {
        Change::Modified | Change::Added => new?,
        Change::Deleted => event.deleted_object(view)?,
    };
    let shape = match encoder.rendering {
        Rendering::Table => return Some(encoder.event(change.event_type(), object.clone())),
        Rendering::PartialMetadata => Shape::PartialMetadata,
        Rendering::Json | Rendering::Yaml => Shape::Object,
    };
    Some(event.line(view, shape, change, || {
        encoder.shared_event(shape, change.event_type(), object)
    }))
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

    /// The line of a watch event in a shape every watcher of the resource version shares:
    /// the same bytes `event` makes, written without copying the shared object.
    fn shared_event(&self, shape: Shape, kind: &str, obj: &Value) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"type\":");
        // Event types are plain ASCII words; serde keeps the quoting exact anyway.
        let _ = serde_json::to_writer(&mut out, kind);
        out.extend_from_slice(b",\"object\":");
        let written = match shape {
            // Stored objects are decoded with apiVersion and kind already set, so this is
            // what `render::with_type_meta` would produce.
            Shape::Object => serde_json::to_writer(&mut out, obj),
            Shape::PartialMetadata => {
                serde_json::to_writer(&mut out, &render::partial_metadata(obj))
            }
        };
        if written.is_err() {
            return Bytes::new();
        }
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
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

    #[test]
    fn selector_transitions() {
        use Change::*;
        // (is_delete, old passes, new passes) -> event; None: no such object / undecodable.
        let cases = [
            (false, None, Some(true), Some(Added)),
            (false, None, Some(false), None),
            (false, Some(true), Some(true), Some(Modified)),
            (false, Some(false), Some(true), Some(Added)),
            (false, Some(true), Some(false), Some(Deleted)),
            (false, Some(false), Some(false), None),
            // An undecodable new value is skipped, even if the old one passed.
            (false, Some(true), None, None),
            (true, Some(true), None, Some(Deleted)),
            (true, Some(false), None, None),
            (true, None, None, None),
        ];
        for (is_delete, old, new, want) in cases {
            assert_eq!(
                decide(is_delete, old, new),
                want,
                "delete={is_delete} old={old:?} new={new:?}"
            );
        }
    }

    fn kv(labels: Value, rev: i64) -> store::KeyValue {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "d", "labels": labels}, "data": {"k": "v"}});
        store::KeyValue {
            key: "/registry/configmaps/d/a".into(),
            value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    /// The lines shared between watchers are byte for byte what each watcher encoded for
    /// itself before the hub, in every shape.
    #[test]
    fn shared_lines_equal_per_watcher_encoding() {
        let info = api::registry::lookup("", "v1", "configmaps").unwrap();
        let new = objects::decode(info, &kv(json!({"app": "web"}), 5)).unwrap();
        let mut gone = objects::decode(info, &kv(json!({"app": "web"}), 4)).unwrap();
        objects::set_resource_version(&mut gone, 6);
        for (rendering, shape) in [
            (Rendering::Json, Shape::Object),
            (Rendering::Yaml, Shape::Object),
            (Rendering::PartialMetadata, Shape::PartialMetadata),
        ] {
            let enc = EventEncoder {
                info,
                rendering,
                include: IncludeObject::Metadata,
            };
            for (kind, obj) in [("ADDED", &new), ("MODIFIED", &new), ("DELETED", &gone)] {
                assert_eq!(
                    enc.shared_event(shape, kind, obj),
                    enc.event(kind, obj.clone()),
                    "{rendering:?} {kind}"
                );
            }
        }
    }

    /// A watcher without filters gets lines spliced from the stored bytes; one whose
    /// selector matches the same objects gets them from the decoded objects: the bytes
    /// are identical, for creates, updates and deletes, in JSON and YAML renderings.
    #[test]
    fn spliced_lines_equal_decoded_lines() {
        let info = api::registry::lookup("", "v1", "configmaps").unwrap();
        let json_enc = EventEncoder {
            info,
            rendering: Rendering::Json,
            include: IncludeObject::Metadata,
        };
        let yaml_enc = EventEncoder {
            rendering: Rendering::Yaml,
            ..json_enc
        };
        let labels = json!({"app": "web", "note": "é \"q\" \\ \n"});
        let events = [
            store::Event::Put {
                kv: kv(labels.clone(), 5),
                prev: None,
            },
            store::Event::Put {
                kv: kv(labels.clone(), 6),
                prev: Some(kv(labels.clone(), 5)),
            },
            store::Event::Delete {
                prev: kv(labels.clone(), 6),
                revision: 7,
            },
        ];
        let view = View::only(info);
        for (event, want_type) in events.into_iter().zip(["ADDED", "MODIFIED", "DELETED"]) {
            let everything = watcher(None, None);
            let selected = watcher(Some("app=web"), None);
            let spliced = SharedEvent::single(event.clone());
            let decoded = SharedEvent::single(event);
            for enc in [&json_enc, &yaml_enc] {
                let a = render_event(&spliced, view, &everything, enc).expect("a line");
                let b = render_event(&decoded, view, &selected, enc).expect("a line");
                assert_eq!(a, b);
                let ev: Value = serde_json::from_slice(&a).unwrap();
                assert_eq!(ev["type"], want_type);
            }
            // The splice never decoded the object.
            assert!(spliced.new_object_if_decoded(view).is_none());
        }
    }

    fn pod_kv(node: Option<&str>, phase: &str, rev: i64) -> store::KeyValue {
        let mut obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "schedulerName": "default-scheduler"},
            "status": {"phase": phase}});
        if let Some(node) = node {
            obj["spec"]["nodeName"] = json!(node);
        }
        store::KeyValue {
            key: "/registry/pods/d/p".into(),
            value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
            create_revision: 5,
            mod_revision: rev,
        }
    }

    fn pod_watcher(labels: Option<&str>, fields: &str) -> WatcherFilter {
        let info = api::registry::lookup("", "v1", "pods").unwrap();
        let opts = ListOptions {
            label_selector: labels.map(String::from),
            field_selector: Some(fields.into()),
            ..Default::default()
        };
        WatcherFilter {
            key_prefix: "/registry/pods/d/".into(),
            name: None,
            selectors: Selectors::parse(info, &opts).unwrap(),
        }
    }

    /// A kubelet's watch (`spec.nodeName=<node>`) is decided on the stored bytes and gets
    /// the same events and lines as the decoding path (here forced by an empty label
    /// selector), through a pod's whole life, without the pod being decoded.
    #[test]
    fn field_selected_watches_decide_on_stored_bytes() {
        let info = api::registry::lookup("", "v1", "pods").unwrap();
        let enc = EventEncoder {
            info,
            rendering: Rendering::Json,
            include: IncludeObject::Metadata,
        };
        let view = View::only(info);
        let life = [
            store::Event::Put {
                kv: pod_kv(None, "Pending", 5),
                prev: None,
            },
            store::Event::Put {
                kv: pod_kv(Some("n1"), "Pending", 6),
                prev: Some(pod_kv(None, "Pending", 5)),
            },
            store::Event::Put {
                kv: pod_kv(Some("n1"), "Running", 7),
                prev: Some(pod_kv(Some("n1"), "Pending", 6)),
            },
            store::Event::Delete {
                prev: pod_kv(Some("n1"), "Running", 7),
                revision: 8,
            },
        ];
        let cases: [(&str, [Option<&str>; 4]); 5] = [
            (
                "spec.nodeName=n1",
                [None, Some("ADDED"), Some("MODIFIED"), Some("DELETED")],
            ),
            (
                "spec.nodeName!=",
                [None, Some("ADDED"), Some("MODIFIED"), Some("DELETED")],
            ),
            ("spec.nodeName=n2", [None, None, None, None]),
            (
                "spec.nodeName=",
                [Some("ADDED"), Some("DELETED"), None, None],
            ),
            (
                "spec.nodeName=n1,status.phase=Running",
                [None, None, Some("ADDED"), Some("DELETED")],
            ),
        ];
        for (fields, want) in cases {
            let stored = pod_watcher(None, fields);
            let decoding = pod_watcher(Some(""), fields);
            for (event, want) in life.iter().zip(want) {
                let spliced = SharedEvent::single(event.clone());
                let decoded = SharedEvent::single(event.clone());
                assert!(spliced
                    .stored_passes(|b| stored.passes_stored(info, b))
                    .is_some());
                let a = render_event(&spliced, view, &stored, &enc);
                let b = render_event(&decoded, view, &decoding, &enc);
                assert_eq!(a, b, "{fields}");
                let kind = a.map(|l| serde_json::from_slice::<Value>(&l).unwrap()["type"].clone());
                assert_eq!(kind.as_ref().and_then(Value::as_str), want, "{fields}");
                assert!(spliced.new_object_if_decoded(view).is_none(), "{fields}");
            }
        }
        // Fields the stored bytes cannot answer go the decoding way.
        let host_network = pod_watcher(None, "spec.hostNetwork=false");
        let bytes = pod_kv(Some("n1"), "Running", 7).value;
        assert_eq!(host_network.passes_stored(info, &bytes), None);
    }

    fn watcher(label_selector: Option<&str>, name: Option<&str>) -> WatcherFilter {
        let info = api::registry::lookup("", "v1", "configmaps").unwrap();
        let opts = ListOptions {
            label_selector: label_selector.map(String::from),
            ..Default::default()
        };
        WatcherFilter {
            key_prefix: "/registry/configmaps/d/".into(),
            name: name.map(String::from),
            selectors: Selectors::parse(info, &opts).unwrap(),
        }
    }

    #[test]
    fn filters_that_let_everything_through() {
        assert!(watcher(None, None).passes_everything());
        assert!(!watcher(Some("app=web"), None).passes_everything());
        assert!(!watcher(None, Some("a")).passes_everything());
    }
}
