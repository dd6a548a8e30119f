//! Response shapes: one object, a list, a `Table` (what `kubectl get` prints) and
//! `PartialObjectMetadata`, each in the form the client negotiated.

use serde_json::{json, Map, Value};

use api::registry::ResourceInfo;

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
pub fn single(info: &ResourceInfo, obj: Value, rendering: Rendering, include: IncludeObject) -> Value {
    match rendering {
        Rendering::Table => table(info, std::slice::from_ref(&obj), &ListMeta {
            resource_version: obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string(),
            ..Default::default()
        }, include, true),
        Rendering::PartialMetadata => partial_metadata(&obj),
        _ => with_type_meta(info, obj),
    }
}

/// A list in the negotiated form.
pub fn list(info: &ResourceInfo, items: Vec<Value>, meta: &ListMeta, rendering: Rendering, include: IncludeObject) -> Value {
    match rendering {
        Rendering::Table => table(info, &items, meta, include, true),
        Rendering::PartialMetadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta.to_json(),
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
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
            json!({
                "kind": info.list_kind(),
                "apiVersion": info.api_version(),
                "metadata": meta.to_json(),
                "items": items,
            })
        }
    }
}

/// A meta.k8s.io/v1 Table of `items`.
pub fn table(info: &ResourceInfo, items: &[Value], meta: &ListMeta, include: IncludeObject, with_columns: bool) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(api::table::row_cells(info, obj, now)));
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".into(), partial_metadata(obj));
                }
                IncludeObject::Object => {
                    row.insert("object".into(), with_type_meta(info, obj.clone()));
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta.to_json(),
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(api::table::column_definitions(info));
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}
