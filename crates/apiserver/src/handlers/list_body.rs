//! The body of a list response in JSON, Table or PartialObjectMetadataList form, written
//! item by item and, for lists longer than one internal page, streamed to the client in
//! chunks while the rest is still being read (kube-apiserver streams big lists too).
//!
//! Memory is bounded by one internal page of stored values plus a chunk or two of
//! output, not by the size of the collection:
//! - JSON items are spliced from the stored bytes (`list_item`) without a `Value` per
//!   item, unless the kind is stored in another version and must be converted;
//! - Table rows and metadata items decode one object at a time and drop it;
//! - a list with a client `limit` is one page: it is encoded to bytes (not `Value`s)
//!   and sent when its continue token is known, since the envelope's metadata comes
//!   before the items.
//!
//! Errors before the first byte is sent (a bad continue token, a compacted revision, a
//! store failure, an undecodable object in the first page) are the usual `Status`
//! responses. Once a streamed body has started, the status line is gone: a later failure
//! is logged and the body ends early, so the client sees a truncated (invalid) JSON
//! document rather than a complete-looking partial list.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{header, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use api::registry::ResourceInfo;

use super::list_item;
use super::read::{ListWalk, Selected, Selectors};
use super::render;
use crate::errors::{ApiError, ApiResult};
use crate::http::{self, Body};
use crate::objects;
use crate::request::{IncludeObject, Rendering};
use crate::ApiServer;

/// Output is handed to the connection in chunks of about this size.
const CHUNK: usize = 128 * 1024;

/// Chunks that may wait for a slow client before encoding pauses.
const CHUNKS_IN_FLIGHT: usize = 2;

/// How one item is written into the list.
struct ItemEncoder {
    info: &'static ResourceInfo,
    rendering: Rendering,
    include: IncludeObject,
    /// Ages in a Table are relative to one instant for the whole list.
    now: chrono::DateTime<chrono::Utc>,
    /// The kind is stored in the version it is served in, so stored bytes can be spliced.
    splice: bool,
}

impl ItemEncoder {
    fn new(info: &'static ResourceInfo, rendering: Rendering, include: IncludeObject) -> Self {
        ItemEncoder {
            info,
            rendering,
            include,
            now: chrono::Utc::now(),
            splice: api::conversion::storage_version(info) == (info.group, info.version),
        }
    }

    /// Whether selecting items should keep their decoded form for this encoder.
    fn wants_decoded(&self) -> bool {
        self.rendering != Rendering::Json || !self.splice
    }

    /// Append one item (after a comma unless it is the first) to `out`.
    fn append(&self, sel: Selected, first: bool, out: &mut Vec<u8>) -> ApiResult<()> {
        if !first {
            out.push(b',');
        }
        if self.rendering == Rendering::Json && self.splice && sel.decoded.is_none() {
            // The bytes must be JSON, as decoding would have required; checking costs
            // no allocation.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&sel.kv.value).is_err() {
                objects::decode(self.info, &sel.kv)?;
            }
            if list_item::append_list_item(&sel.kv.value, sel.kv.mod_revision, out) {
                return Ok(());
            }
        }
        let obj = match sel.decoded {
            Some(obj) => obj,
            None => objects::decode(self.info, &sel.kv)?,
        };
        let item = match self.rendering {
            Rendering::Table => render::table_row_owned(self.info, obj, self.now, self.include),
            Rendering::PartialMetadata => render::partial_metadata(&obj),
            _ => untyped_item(obj),
        };
        serde_json::to_writer(&mut *out, &item)
            .map_err(|e| ApiError::internal(format!("encoding list item: {e}")))
    }
}

/// A JSON list item from a decoded object: typed list items carry no apiVersion/kind.
fn untyped_item(mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    obj
}

/// Read the list `walk` describes and answer it.
pub async fn respond(
    server: std::sync::Arc<ApiServer>,
    info: &'static ResourceInfo,
    mut walk: ListWalk,
    selectors: Selectors,
    rendering: Rendering,
    include: IncludeObject,
) -> ApiResult<Response<Body>> {
    let encoder = ItemEncoder::new(info, rendering, include);
    let keep = encoder.wants_decoded();
    let mut items = Vec::new();
    let mut count = 0usize;
    // The first page decides the revision; a list that fits in it, or that a limit
    // bounds, is encoded whole before anything is sent.
    loop {
        let Some(batch) = walk.next_batch(&server, &selectors, keep).await? else {
            break;
        };
        for sel in batch {
            encoder.append(sel, count == 0, &mut items)?;
            count += 1;
        }
        if walk.finished() {
            break;
        }
        // Without a client limit the envelope's metadata is only the revision, known
        // now, so the rest can follow as it is read.
        if walk.limit().is_none() {
            return Ok(stream(server, walk, selectors, encoder, items, count));
        }
    }
    let (mut body, footer) = frame(&walk, &encoder)?;
    body.reserve_exact(items.len() + footer.len());
    body.extend_from_slice(&items);
    drop(items);
    body.extend_from_slice(footer);
    Ok(json_response(http::full(body)))
}

fn frame(walk: &ListWalk, encoder: &ItemEncoder) -> ApiResult<(Vec<u8>, &'static [u8])> {
    render::list_frame(
        encoder.info,
        &walk.meta(),
        encoder.rendering,
        encoder.include,
    )
    .ok_or_else(|| ApiError::internal("encoding the list envelope"))
}

fn json_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(http::full(Bytes::new())))
}

/// Stream the rest of an unbounded list: `first` holds the encoded items so far.
fn stream(
    server: std::sync::Arc<ApiServer>,
    mut walk: ListWalk,
    selectors: Selectors,
    encoder: ItemEncoder,
    first: Vec<u8>,
    mut count: usize,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (head, footer) = match frame(&walk, &encoder) {
        Ok(frame) => frame,
        Err(e) => return http::error(&e),
    };
    tokio::spawn(async move {
        let key = walk.prefix().to_string();
        let mut out = head;
        out.extend_from_slice(&first);
        drop(first);
        let keep = encoder.wants_decoded();
        loop {
            if out.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::replace(&mut out, Vec::with_capacity(CHUNK)));
                if tx.send(chunk).await.is_err() {
                    return; // the client went away
                }
            }
            let batch = match walk.next_batch(&server, &selectors, keep).await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(collection = %key, error = %e.message, "list failed after its response started; ending the body early");
                    return;
                }
            };
            for sel in batch {
                if let Err(e) = encoder.append(sel, count == 0, &mut out) {
                    tracing::warn!(collection = %key, error = %e.message, "list failed after its response started; ending the body early");
                    return;
                }
                count += 1;
            }
        }
        out.extend_from_slice(footer);
        let _ = tx.send(Bytes::from(out)).await;
    });
    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    json_response(BodyExt::boxed(body))
}
