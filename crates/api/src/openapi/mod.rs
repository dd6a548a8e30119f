//! The OpenAPI documents kube-apiserver serves, built from the k8s-openapi schemas and the
//! resource registry (never from a downloaded upstream spec):
//!
//! - `/openapi/v2`: one Swagger 2.0 document ([`v2_document`], [`v2_bytes`]);
//! - `/openapi/v3`: the index of per-group-version documents ([`v3_index`]), each at
//!   `/openapi/v3/<path>?hash=<hash>` ([`v3_group_version`], [`v3_group_version_bytes`]).
//!
//! What kubectl v1.32 reads from them (and why the shapes below matter):
//! - `--validate=strict` (the default) looks in `/openapi/v3/<gv>` for a PATCH operation
//!   whose `x-kubernetes-group-version-kind` is the object's kind and which lists a
//!   `fieldValidation` parameter; finding it, kubectl skips client-side validation and
//!   sends `fieldValidation=Strict` for the server to enforce.
//! - client-side `apply` finds the kind's schema in `components.schemas` by its
//!   `x-kubernetes-group-version-kind` list (after checking that the PATCH operation accepts
//!   `application/strategic-merge-patch+json`) and builds its three-way strategic merge
//!   patch from the `x-kubernetes-patch-merge-key` / `-strategy` extensions of the fields.
//! - `explain` walks `components.schemas` from the kind it finds on the resource's paths,
//!   following `$ref` / `allOf`, printing `description`s.
//!
//! Everything is built once per process and cached; the bytes and content hashes are what
//! the HTTP layer serves and uses as ETag.

mod paths;
mod proto_v2;
mod schemas;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::registry;
use paths::{Body, Operation, Param, PathItem};
use schemas::{catalog, DEFS_PREFIX};

/// The Kubernetes version the documents describe (the k8s-openapi feature in use).
pub const KUBERNETES_VERSION: &str = "v1.37.0";

const V3_PREFIX: &str = "#/components/schemas/";
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PRODUCES_WATCH: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

/// Every schema definition (Swagger 2.0 form, `#/definitions/<name>` references), keyed by
/// upstream's definition name. Shared with `crate::strategic_merge`, which walks it.
pub fn definitions() -> &'static Map<String, Value> {
    &catalog().defs
}

/// The definition name of a kind, e.g. `("apps", "v1", "Deployment")` →
/// `io.k8s.api.apps.v1.Deployment`; list kinds and the subresource kinds too.
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<String> {
    catalog()
        .kind_def(group, version, kind)
        .map(|k| k.name.clone())
}

// ---------------------------------------------------------------------------------------
// v2

struct Cached {
    bytes: Vec<u8>,
    hash: String,
}

impl Cached {
    fn new(v: &Value) -> Cached {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        let hash = content_hash(&bytes);
        Cached { bytes, hash }
    }
}

/// The `/openapi/v2` document.
pub fn v2_document() -> Value {
    let mut paths = Map::new();
    for g in registry::groups() {
        for v in &g.versions {
            for item in paths::group_version_paths(g.name, v) {
                paths.insert(item.path.clone(), render_path_item(&item, Flavor::V2));
            }
        }
    }
    for doc in ["api", "apis", "version"] {
        for item in paths::discovery_paths(doc).unwrap_or_default() {
            paths.insert(item.path.clone(), render_path_item(&item, Flavor::V2));
        }
    }
    for g in registry::groups().iter().filter(|g| !g.name.is_empty()) {
        for item in paths::discovery_paths(&format!("apis/{}", g.name)).unwrap_or_default() {
            paths.insert(item.path.clone(), render_path_item(&item, Flavor::V2));
        }
    }
    let mut sorted: Vec<(String, Value)> = paths.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut definitions: Vec<(String, Value)> = definitions().clone().into_iter().collect();
    definitions.sort_by(|a, b| a.0.cmp(&b.0));
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": Value::Object(sorted.into_iter().collect()),
        "definitions": Value::Object(definitions.into_iter().collect()),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header"
            }
        },
        "security": [{"BearerToken": []}]
    })
}

fn v2_cached() -> &'static Cached {
    static V2: OnceLock<Cached> = OnceLock::new();
    V2.get_or_init(|| Cached::new(&v2_document()))
}

/// `/openapi/v2` serialized as JSON.
pub fn v2_bytes() -> &'static [u8] {
    &v2_cached().bytes
}

/// The media type client-go puts in `Accept` for `/openapi/v2` (the only one kubectl asks
/// for there).
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` to answer it with. Not the `@` spelling: Go's `mime.ParseMediaType`
/// rejects it and client-go then fails with "mime: unexpected content after media subtype".
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` as gnostic's `openapi.v2.Document` protobuf, served when `Accept` names
/// [`V2_PROTOBUF_ACCEPT`] (or `...spec.v2.v1.0+protobuf`), with [`V2_PROTOBUF_CONTENT_TYPE`].
pub fn v2_protobuf_bytes() -> &'static [u8] {
    static V2PB: OnceLock<Vec<u8>> = OnceLock::new();
    V2PB.get_or_init(|| {
        let doc: Value = serde_json::from_slice(v2_bytes()).unwrap_or(Value::Null);
        proto_v2::encode_document(&doc)
    })
}

/// Content hash of [`v2_bytes`], for the ETag.
pub fn v2_hash() -> &'static str {
    &v2_cached().hash
}

// ---------------------------------------------------------------------------------------
// v3

/// The document paths of `/openapi/v3/<path>`: `api`, `api/v1`, `apis`, `apis/<group>`,
/// `apis/<group>/<version>`, `version`.
pub fn v3_paths() -> Vec<String> {
    let mut out = vec!["api".to_string(), "apis".to_string(), "version".to_string()];
    for g in registry::groups() {
        if g.name.is_empty() {
            for v in &g.versions {
                out.push(format!("api/{v}"));
            }
        } else {
            out.push(format!("apis/{}", g.name));
            for v in &g.versions {
                out.push(format!("apis/{}/{v}", g.name));
            }
        }
    }
    out.sort();
    out
}

struct V3Cache {
    docs: Vec<(String, Cached)>,
    index: Cached,
}

fn v3_cache() -> &'static V3Cache {
    static V3: OnceLock<V3Cache> = OnceLock::new();
    V3.get_or_init(|| {
        let mut docs = Vec::new();
        let mut index = Map::new();
        for p in v3_paths() {
            let Some(doc) = build_v3(&p) else { continue };
            let cached = Cached::new(&doc);
            index.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", cached.hash)}),
            );
            docs.push((p, cached));
        }
        let index = Cached::new(&json!({ "paths": index }));
        V3Cache { docs, index }
    })
}

/// The `/openapi/v3` index: `{"paths": {"apis/apps/v1": {"serverRelativeURL":
/// "/openapi/v3/apis/apps/v1?hash=<HASH>"}, ...}}`.
pub fn v3_index() -> Value {
    serde_json::from_slice(&v3_cache().index.bytes).unwrap_or(Value::Null)
}

/// [`v3_index`] serialized.
pub fn v3_index_bytes() -> &'static [u8] {
    &v3_cache().index.bytes
}

/// The OpenAPI 3.0 document of one path of the index (`api/v1`, `apis/apps/v1`, ...).
pub fn v3_group_version(path: &str) -> Option<Value> {
    v3_group_version_bytes(path).and_then(|b| serde_json::from_slice(b).ok())
}

/// The serialized document of one path of the index.
pub fn v3_group_version_bytes(path: &str) -> Option<&'static [u8]> {
    let path = path.trim_matches('/');
    v3_cache()
        .docs
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, c)| c.bytes.as_slice())
}

/// The content hash of one document (the `hash` query parameter of its URL and its ETag).
pub fn v3_hash(path: &str) -> Option<&'static str> {
    let path = path.trim_matches('/');
    v3_cache()
        .docs
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, c)| c.hash.as_str())
}

fn build_v3(doc_path: &str) -> Option<Value> {
    let items: Vec<PathItem> = match doc_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => {
            registry::resources_in("", version).next()?;
            paths::group_version_paths("", version)
        }
        ["apis", group, version] => {
            registry::resources_in(group, version).next()?;
            paths::group_version_paths(group, version)
        }
        _ => paths::discovery_paths(doc_path)?,
    };
    let mut paths = Map::new();
    let mut refs = BTreeSet::new();
    let defs = definitions();
    for item in &items {
        let rendered = render_path_item(item, Flavor::V3);
        schemas::collect_refs(defs, &rendered, &mut refs);
        paths.insert(item.path.clone(), rendered);
    }
    let mut schemas = Map::new();
    for name in refs {
        if let Some(d) = defs.get(&name) {
            let mut schema = to_v3_schema(d);
            v3_scalar_alternatives(&name, &mut schema);
            schemas.insert(name, schema);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header"
                }
            }
        },
        "security": [{"BearerToken": []}]
    }))
}

/// OpenAPI 3 spells the two "number or string" scalars as alternatives without a `type`,
/// as upstream does; `kubectl explain` then shows their names (`map[string]Quantity`,
/// `<IntOrString>`) instead of `string`.
fn v3_scalar_alternatives(name: &str, schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    let alternatives = match name {
        schemas::INT_OR_STRING => json!([{"type": "integer"}, {"type": "string"}]),
        schemas::QUANTITY => json!([{"type": "string"}, {"type": "number"}]),
        _ => return,
    };
    m.shift_remove("type");
    m.insert("oneOf".into(), alternatives);
    if name == schemas::INT_OR_STRING {
        m.insert("x-kubernetes-int-or-string".into(), true.into());
    }
}

/// A definition in OpenAPI 3 form: references point into `components/schemas`, and a
/// reference with siblings (a field's own description) is wrapped in `allOf`, as upstream
/// does, so that `kubectl explain` prints both the field's and the type's description.
fn to_v3_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            let reference = m.get("$ref").and_then(Value::as_str).map(|r| {
                let name = r.strip_prefix(DEFS_PREFIX).unwrap_or(r);
                format!("{V3_PREFIX}{name}")
            });
            for (k, x) in m {
                if k == "$ref" {
                    continue;
                }
                // Properties and extension payloads are maps of names, not schemas.
                let converted = match k.as_str() {
                    "properties" => match x {
                        Value::Object(props) => Value::Object(
                            props
                                .iter()
                                .map(|(pk, pv)| (pk.clone(), to_v3_schema(pv)))
                                .collect(),
                        ),
                        other => other.clone(),
                    },
                    "items" | "additionalProperties" | "not" => to_v3_schema(x),
                    "allOf" | "anyOf" | "oneOf" => match x {
                        Value::Array(a) => Value::Array(a.iter().map(to_v3_schema).collect()),
                        other => other.clone(),
                    },
                    _ => x.clone(),
                };
                out.insert(k.clone(), converted);
            }
            match reference {
                Some(r) if out.is_empty() => json!({ "$ref": r }),
                Some(r) => {
                    let mut wrapped = Map::new();
                    wrapped.insert("allOf".into(), json!([{ "$ref": r }]));
                    wrapped.extend(out);
                    Value::Object(wrapped)
                }
                None => Value::Object(out),
            }
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering of operations.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V2,
    V3,
}

fn schema_ref(def: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V2 => json!({ "$ref": format!("{DEFS_PREFIX}{def}") }),
        Flavor::V3 => json!({ "$ref": format!("{V3_PREFIX}{def}") }),
    }
}

fn render_param(p: &Param, flavor: Flavor) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), p.name.into());
    m.insert("in".into(), p.location.into());
    m.insert("description".into(), p.description.into());
    if p.required {
        m.insert("required".into(), true.into());
    }
    match flavor {
        Flavor::V2 => {
            m.insert("type".into(), p.ty.into());
            if p.unique_items {
                m.insert("uniqueItems".into(), true.into());
            }
        }
        Flavor::V3 => {
            let mut s = Map::new();
            s.insert("type".into(), p.ty.into());
            if p.unique_items {
                s.insert("uniqueItems".into(), true.into());
            }
            m.insert("schema".into(), Value::Object(s));
        }
    }
    Value::Object(m)
}

fn render_path_item(item: &PathItem, flavor: Flavor) -> Value {
    let mut m = Map::new();
    for op in &item.operations {
        m.insert(op.method.into(), render_operation(op, flavor));
    }
    if !item.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(
                item.params
                    .iter()
                    .map(|p| render_param(p, flavor))
                    .collect(),
            ),
        );
    }
    Value::Object(m)
}

fn body_def(op: &Operation) -> Option<String> {
    match op.body {
        Body::None => None,
        Body::Object => Some(op.body_def.clone()),
        Body::Patch => Some(schemas::PATCH.into()),
        Body::DeleteOptions => Some(schemas::DELETE_OPTIONS.into()),
    }
}

fn render_operation(op: &Operation, flavor: Flavor) -> Value {
    let mut m = Map::new();
    let produces: &[&str] = if op.streams || op.action == "list" {
        PRODUCES_WATCH
    } else {
        PRODUCES
    };
    let consumes: &[&str] = if op.body == Body::Patch {
        PATCH_TYPES
    } else {
        &["*/*"]
    };
    if flavor == Flavor::V2 {
        m.insert("description".into(), op.description.clone().into());
        m.insert("consumes".into(), json!(consumes));
        m.insert("produces".into(), json!(produces));
        m.insert("schemes".into(), json!(["https"]));
    }
    m.insert("tags".into(), json!([op.tag]));
    if flavor == Flavor::V3 {
        m.insert("description".into(), op.description.clone().into());
    }
    m.insert("operationId".into(), op.operation_id.clone().into());

    let mut params: Vec<Value> = Vec::new();
    if flavor == Flavor::V2 {
        if let Some(def) = body_def(op) {
            params.push(json!({
                "name": "body",
                "in": "body",
                "required": op.body != Body::DeleteOptions,
                "schema": schema_ref(&def, flavor),
            }));
        }
    }
    params.extend(op.params.iter().map(|p| render_param(p, flavor)));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    if flavor == Flavor::V3 {
        if let Some(def) = body_def(op) {
            let content: Map<String, Value> = consumes
                .iter()
                .map(|ct| {
                    (
                        ct.to_string(),
                        json!({ "schema": schema_ref(&def, flavor) }),
                    )
                })
                .collect();
            let mut body = Map::new();
            body.insert("content".into(), Value::Object(content));
            if op.body != Body::DeleteOptions {
                body.insert("required".into(), true.into());
            }
            m.insert("requestBody".into(), Value::Object(body));
        }
    }

    let mut responses = Map::new();
    for (code, def) in &op.responses {
        let description = match code {
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            _ => "",
        };
        let r = match flavor {
            Flavor::V2 => json!({"description": description, "schema": schema_ref(def, flavor)}),
            Flavor::V3 => {
                let content: Map<String, Value> = produces
                    .iter()
                    .map(|ct| (ct.to_string(), json!({ "schema": schema_ref(def, flavor) })))
                    .collect();
                json!({"description": description, "content": content})
            }
        };
        responses.insert(code.to_string(), r);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    if !op.action.is_empty() {
        m.insert("x-kubernetes-action".into(), op.action.into());
        let (g, v, k) = &op.gvk;
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!({"group": g, "kind": k, "version": v}),
        );
    }
    Value::Object(m)
}

/// A stable 128-bit content hash (two FNV-1a lanes), upper-case hex like upstream's hashes.
/// It only has to change when the bytes change: it names cache entries, it is no signature.
fn content_hash(bytes: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &x in bytes {
        a ^= u64::from(x);
        a = a.wrapping_mul(0x0000_0100_0000_01b3);
        b ^= u64::from(x.rotate_left(3));
        b = b.wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
    }
    format!("{a:016X}{b:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RESOURCES;

    fn gvk_list(def: &Value) -> Vec<(String, String, String)> {
        def.get("x-kubernetes-group-version-kind")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|g| {
                let s = |k: &str| {
                    g.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (s("group"), s("version"), s("kind"))
            })
            .collect()
    }

    fn gv_doc_path(group: &str, version: &str) -> String {
        if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        }
    }

    /// Every `$ref` in `v` names a key of `schemas` (after stripping `prefix`).
    fn assert_refs_resolve(v: &Value, prefix: &str, schemas: &Map<String, Value>, doc: &str) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    let name = r
                        .strip_prefix(prefix)
                        .unwrap_or_else(|| panic!("{doc}: bad ref {r}"));
                    assert!(schemas.contains_key(name), "{doc}: unresolved {r}");
                }
                m.values()
                    .for_each(|x| assert_refs_resolve(x, prefix, schemas, doc));
            }
            Value::Array(a) => a
                .iter()
                .for_each(|x| assert_refs_resolve(x, prefix, schemas, doc)),
            _ => {}
        }
    }

    #[test]
    fn every_kind_and_list_has_a_definition_with_its_gvk() {
        let v2 = v2_document();
        let defs = v2["definitions"].as_object().cloned().unwrap_or_default();
        for r in RESOURCES {
            for kind in [r.kind.to_string(), r.list_kind()] {
                let name = definition_name(r.group, r.version, &kind)
                    .unwrap_or_else(|| panic!("no definition for {kind}"));
                let gvks = gvk_list(&defs[&name]);
                assert!(
                    gvks.contains(&(r.group.to_string(), r.version.to_string(), kind.clone())),
                    "{name}: {gvks:?}"
                );
            }
        }
        assert_eq!(
            definition_name("apps", "v1", "Deployment").as_deref(),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(
            definition_name("", "v1", "ConfigMapList").as_deref(),
            Some("io.k8s.api.core.v1.ConfigMapList")
        );
    }

    #[test]
    fn every_ref_resolves_in_v2_and_v3() {
        let v2 = v2_document();
        let defs = v2["definitions"].as_object().cloned().unwrap_or_default();
        assert_refs_resolve(&v2, "#/definitions/", &defs, "v2");
        for p in v3_paths() {
            let doc = v3_group_version(&p).unwrap_or_else(|| panic!("no v3 document for {p}"));
            let schemas = doc["components"]["schemas"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            assert_refs_resolve(&doc, "#/components/schemas/", &schemas, &p);
            assert!(!serde_json::to_string(&doc)
                .unwrap_or_default()
                .contains("#/definitions/"));
        }
    }

    /// What kubectl's QueryParamVerifierV3 and its apply patcher check, for every kind.
    #[test]
    fn patch_operations_declare_field_validation_and_strategic_merge() {
        for r in RESOURCES {
            let doc = v3_group_version(&gv_doc_path(r.group, r.version)).unwrap_or_default();
            let want = json!({"group": r.group, "kind": r.kind, "version": r.version});
            let mut found = 0;
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                let Some(op) = item.get("patch") else {
                    continue;
                };
                if op["x-kubernetes-group-version-kind"] != want {
                    continue;
                }
                found += 1;
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(names.contains(&"fieldValidation"), "{path}: {names:?}");
                assert!(
                    op["requestBody"]["content"]
                        .get("application/strategic-merge-patch+json")
                        .is_some(),
                    "{path}"
                );
            }
            assert!(
                found >= 1,
                "{}/{} {}: no PATCH operation",
                r.group,
                r.version,
                r.kind
            );
            // The schema kubectl apply starts from.
            let schemas = doc["components"]["schemas"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let with_gvk = schemas
                .values()
                .filter(|s| {
                    gvk_list(s).contains(&(
                        r.group.to_string(),
                        r.version.to_string(),
                        r.kind.to_string(),
                    ))
                })
                .count();
            assert_eq!(with_gvk, 1, "{} in {}/{}", r.kind, r.group, r.version);
        }
    }

    #[test]
    fn pod_containers_carry_patch_extensions() {
        let v2 = v2_document();
        let containers =
            &v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let v3 = v3_group_version("api/v1").unwrap_or_default();
        let spec = &v3["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(spec["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            spec["containers"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            spec["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let apps = v3_group_version("apps/v1");
        assert!(apps.is_none(), "document paths start with apis/");
        let apps = v3_group_version("apis/apps/v1").unwrap_or_default();
        let strategy = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]
            ["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    }

    /// `kubectl explain deployment.spec.strategy`: the walk its template does.
    #[test]
    fn explain_can_walk_deployment_spec_strategy() {
        let index = v3_index();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap_or_default();
        let hash = v3_hash("apis/apps/v1").unwrap_or_default();
        assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
        assert_eq!(hash.len(), 32);
        assert!(index["paths"]["api/v1"].is_object() && index["paths"]["apis"].is_object());

        let doc = v3_group_version("apis/apps/v1").unwrap_or_default();
        let gvk = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"]
            ["x-kubernetes-group-version-kind"];
        assert_eq!(
            *gvk,
            json!({"group": "apps", "kind": "Deployment", "version": "v1"})
        );
        let schemas = &doc["components"]["schemas"];
        let resolve = |s: &Value| -> Value {
            let r = s
                .get("$ref")
                .or_else(|| s["allOf"][0].get("$ref"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            schemas[r.trim_start_matches("#/components/schemas/")].clone()
        };
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        let spec_field = &deployment["properties"]["spec"];
        assert!(spec_field["description"]
            .as_str()
            .is_some_and(|d| d.contains("desired behavior")));
        let spec = resolve(spec_field);
        let strategy_field = &spec["properties"]["strategy"];
        assert!(strategy_field["description"]
            .as_str()
            .is_some_and(|d| d.contains("deployment strategy")));
        let strategy = resolve(strategy_field);
        assert!(strategy["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("DeploymentStrategy")));
        assert!(strategy["properties"]["rollingUpdate"].is_object());
        assert!(strategy["properties"]["type"]["description"].is_string());
        // Upstream never marks a kind's spec required.
        assert!(deployment.get("required").is_none());
    }

    #[test]
    fn v2_protobuf_starts_like_a_gnostic_document() {
        let pb = v2_protobuf_bytes();
        // field 1 (swagger), length 3, "2.0"; then field 2 (info).
        assert_eq!(&pb[..5], b"\x0a\x032.0");
        assert_eq!(pb[5], 0x12);
        assert!(pb.len() > 1_000_000);
    }

    #[test]
    fn documents_are_built_once_and_stable() {
        let a = v2_bytes().as_ptr();
        assert_eq!(a, v2_bytes().as_ptr());
        assert_eq!(v2_hash(), content_hash(v2_bytes()));
        assert_eq!(
            serde_json::to_vec(&v2_document()).unwrap_or_default(),
            v2_bytes()
        );
        let v2: Value = serde_json::from_slice(v2_bytes()).unwrap_or_default();
        assert_eq!(v2["swagger"], "2.0");
        let patch =
            &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        assert!(patch["consumes"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("application/strategic-merge-patch+json"))));
        let scale =
            &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert!(
            v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"].is_object()
        );
        assert!(v3_group_version("apis/nope/v1").is_none());
        assert!(v3_group_version("apis/apps").is_some());
    }
}
