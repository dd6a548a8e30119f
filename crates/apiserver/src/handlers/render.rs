//! Response shapes: one object, a list, a `Table` (what `kubectl get` prints) and
//! `PartialObjectMetadata`, each in the form the client negotiated.

use serde_json::{json, Map, Value};

use api::registry::ResourceInfo;

use crate::http::{self, Body};
use crate::objects::Stored;
use crate::request::{IncludeObject, Rendering};

/// The list envelope's continuation facts.
#[derive(Debug, Default, Clone)]
pub struct ListMeta {
    pub resource_version: String,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

impl ListMeta {
    fn to_json(&self) -> Value {
        let mut m = json!({"resourceVersion": self.resource_version});
        if let Some(c) = &self.continue_token {
            m["continue"] = json!(c);
        }
        if let Some(r) = self.remaining {
            m["remainingItemCount"] = json!(r);
        }
        m
    }
}

/// Make sure a stored object carries its apiVersion and kind (stored objects always do;
/// this guards older writes).
/// The answer to a write: the stored JSON as it is when the object was asked for as JSON,
/// else the object rendered as asked (`single`).
pub fn written(
    code: u16,
    info: &ResourceInfo,
    stored: Stored,
    rendering: Rendering,
    warnings: &[String],
) -> hyper::Response<Body> {
    let Stored { object, json } = stored;
    match (rendering, json) {
        (Rendering::Json, Some(json)) => http::json_with_warnings(code, json, warnings),
        _ => http::object_with_warnings(
            code,
            &single(info, object, rendering, Default::default()),
            rendering,
            warnings,
        ),
    }
}

pub fn with_type_meta(info: &ResourceInfo, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    obj
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One object in the negotiated form.
pub fn single(
    info: &ResourceInfo,
    obj: Value,
    rendering: Rendering,
    include: IncludeObject,
) -> Value {
    match rendering {
        Rendering::Table => table(
            info,
            std::slice::from_ref(&obj),
            &ListMeta {
                resource_version: obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                ..Default::default()
            },
            include,
            true,
        ),
        Rendering::PartialMetadata => partial_metadata(&obj),
        _ => with_type_meta(info, obj),
    }
}

/// A list in the negotiated form.
pub fn list(
    info: &ResourceInfo,
    items: Vec<Value>,
    meta: &ListMeta,
    rendering: Rendering,
    include: IncludeObject,
) -> Value {
    match rendering {
        Rendering::Table => table(info, &items, meta, include, true),
        Rendering::PartialMetadata => envelope(
            "PartialObjectMetadataList",
            "meta.k8s.io/v1".into(),
            meta,
            items.iter().map(partial_metadata).collect(),
        ),
        _ => {
            // Items in a list carry no apiVersion/kind upstream for typed lists, but
            // clients accept them either way; strip them to match upstream bytes.
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    o
                })
                .collect();
            envelope(&info.list_kind(), info.api_version(), meta, items)
        }
    }
}

/// A list object that owns its items. (`json!` would deep-copy them: with 10,000 pods
/// that copy was the largest cost of a list.)
fn envelope(kind: &str, api_version: String, meta: &ListMeta, items: Vec<Value>) -> Value {
    let mut m = Map::with_capacity(4);
    m.insert("kind".into(), Value::String(kind.to_string()));
    m.insert("apiVersion".into(), Value::String(api_version));
    m.insert("metadata".into(), meta.to_json());
    m.insert("items".into(), Value::Array(items));
    Value::Object(m)
}

/// One row of a Table: the object's cells as of `now`, its conditions, and the object
/// itself in the form `include` asks for.
pub fn table_row(
    info: &ResourceInfo,
    obj: &Value,
    now: chrono::DateTime<chrono::Utc>,
    include: IncludeObject,
) -> Value {
    table_row_owned(info, obj.clone(), now, include)
}

/// `table_row` for an object the caller no longer needs: its metadata (with
/// managedFields, the bulk of a small object) moves into the row instead of being copied.
pub fn table_row_owned(
    info: &ResourceInfo,
    mut obj: Value,
    now: chrono::DateTime<chrono::Utc>,
    include: IncludeObject,
) -> Value {
    let mut row = Map::new();
    row.insert(
        "cells".into(),
        Value::Array(api::table::row_cells(info, &obj, now)),
    );
    let conditions = api::table::row_conditions(info, &obj);
    if !conditions.is_empty() {
        row.insert("conditions".into(), Value::Array(conditions));
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = obj
                .as_object_mut()
                .and_then(|m| m.remove("metadata"))
                .unwrap_or_else(|| json!({}));
            let mut partial = Map::with_capacity(3);
            partial.insert("kind".into(), json!("PartialObjectMetadata"));
            partial.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
            partial.insert("metadata".into(), metadata);
            row.insert("object".into(), Value::Object(partial));
        }
        IncludeObject::Object => {
            row.insert("object".into(), with_type_meta(info, obj));
        }
    }
    Value::Object(row)
}

/// A meta.k8s.io/v1 Table of `items`.
pub fn table(
    info: &ResourceInfo,
    items: &[Value],
    meta: &ListMeta,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| table_row(info, obj, now, include))
        .collect();
    let mut t = Map::with_capacity(5);
    t.insert("kind".into(), Value::String("Table".into()));
    t.insert("apiVersion".into(), Value::String("meta.k8s.io/v1".into()));
    t.insert("metadata".into(), meta.to_json());
    let columns = if with_columns {
        Value::Array(api::table::column_definitions(info))
    } else {
        Value::Null
    };
    t.insert("columnDefinitions".into(), columns);
    t.insert("rows".into(), Value::Array(rows));
    Value::Object(t)
}

/// A list in the negotiated JSON form (not YAML) with no items, split where the items go:
/// the bytes before the first item (ending in `[`) and after the last (`]}`), so a
/// streamed list has exactly the envelope `list` would give. `None` for YAML.
pub fn list_frame(
    info: &ResourceInfo,
    meta: &ListMeta,
    rendering: Rendering,
    include: IncludeObject,
) -> Option<(Vec<u8>, &'static [u8])> {
    if rendering == Rendering::Yaml {
        return None;
    }
    let empty = list(info, Vec::new(), meta, rendering, include);
    let mut bytes = serde_json::to_vec(&empty).ok()?;
    // The items (or rows) member is the envelope's last, so it ends the bytes.
    if !bytes.ends_with(b"[]}") {
        return None;
    }
    bytes.truncate(bytes.len() - 2);
    Some((bytes, b"]}"))
}
