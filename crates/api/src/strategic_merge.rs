//! Strategic merge patch (`application/strategic-merge-patch+json`) as kube-apiserver applies
//! it to built-in kinds: the patch-strategy table (upstream's `patchStrategy` /
//! `patchMergeKey` struct tags for every type skiff serves) and the merge itself, with the
//! directives `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`.
//!
//! The same table feeds the `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`
//! extensions of the OpenAPI documents (`crate::openapi`), because kubectl computes its
//! client-side apply patches from those: server and client must agree on every merge key.
//!
//! Where a value sits in the object is found by walking the kind's OpenAPI schema (the
//! k8s-openapi definitions) beside the JSON, exactly as upstream walks the Go struct. Fields
//! the schema does not know get no strategy: maps merge, lists are replaced.

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;

/// How a field is patched, from upstream's struct tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchMeta {
    /// The `patchStrategy` tag verbatim: `merge`, `retainKeys`, `merge,retainKeys`, `replace`.
    pub strategy: &'static str,
    /// The `patchMergeKey` tag; `None` for lists of primitives merged as sets.
    pub merge_key: Option<&'static str>,
}

/// `(definition name, json field, patchStrategy, patchMergeKey or "")` for every field of the
/// types skiff serves that carries a patch strategy upstream (k8s.io/api struct tags).
/// Fields not listed are atomic lists / recursively merged maps.
pub static PATCH_FIELDS: &[(&str, &str, &str, &str)] = &[
    // meta/v1
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    // core/v1 pods
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        "name",
    ),
    // core/v1 others
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        "name",
    ),
    // apps/v1
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    // batch/v1
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        "type",
    ),
    // policy/v1
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        "type",
    ),
    // autoscaling/v2
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "merge",
        "type",
    ),
];

/// The patch strategy upstream declares for `field` of the definition `type_name`.
pub fn patch_meta(type_name: &str, field: &str) -> Option<PatchMeta> {
    PATCH_FIELDS
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|(_, _, strategy, key)| PatchMeta {
            strategy,
            merge_key: if key.is_empty() { None } else { Some(key) },
        })
}

/// Why a strategic merge patch could not be applied. The messages are upstream's
/// (k8s.io/apimachinery/pkg/util/mergepatch and strategicpatch), so clients see the same text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not a JSON object.
    #[error("invalid JSON document")]
    BadJsonDoc,
    #[error("lists of lists are not supported")]
    NoListOfLists,
    #[error("invalid patch format of primitive list")]
    BadPatchFormatForPrimitiveList,
    #[error("invalid patch format of retainKeys")]
    BadPatchFormatForRetainKeys,
    #[error("invalid patch format of setElementOrder list")]
    BadPatchFormatForSetElementOrderList,
    /// `map: <m> does not contain declared merge key: <k>`
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey { map: String, key: String },
    /// `unknown patch type: <t> in map: <m>`
    #[error("unknown patch type: {patch_type} in map: {map}")]
    BadPatchType { patch_type: String, map: String },
    /// Any other malformed patch (mismatched list element types, `$patch: merge` in a list,
    /// a `$setElementOrder` list out of order, ...), with upstream's message.
    #[error("{0}")]
    Invalid(String),
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with (`interpretStrategicMergePatchError`):
    /// 400 for malformed directives, 422 for lists of lists, and 500 for the rest, which
    /// upstream does not classify.
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadJsonDoc
            | PatchError::BadPatchFormatForPrimitiveList
            | PatchError::BadPatchFormatForRetainKeys
            | PatchError::BadPatchFormatForSetElementOrderList => 400,
            PatchError::NoListOfLists => 422,
            _ => 500,
        }
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder/";
const DELETE_PRIMITIVE_PREFIX: &str = "$deleteFromPrimitiveList/";

/// Apply a strategic merge patch to an object of the resource's kind.
pub fn strategic_merge(
    info: &ResourceInfo,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    strategic_merge_kind(info.group, info.version, info.kind, original, patch)
}

/// Apply a strategic merge patch to an object of any kind described by `crate::openapi`
/// (also the subresource kinds: `autoscaling/v1 Scale`, ...). Unknown kinds merge like a
/// JSON merge patch that understands the directives.
pub fn strategic_merge_kind(
    group: &str,
    version: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let root = crate::openapi::definition_name(group, version, kind);
    let cursor = Cursor::root(root.as_deref());
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadJsonDoc);
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch.clone(), &cursor).map(Value::Object)
}

/// The merge strategy of the list or map at `path` (JSON field names from the object root,
/// list levels skipped) in a kind: lets other parts of the apiserver (server-side apply,
/// field managers) agree with the patch on what a list's identity is.
pub fn field_patch_meta(
    group: &str,
    version: &str,
    kind: &str,
    path: &[&str],
) -> Option<PatchMeta> {
    let root = crate::openapi::definition_name(group, version, kind)?;
    let mut cursor = Cursor::root(Some(&root));
    let mut meta = None;
    for field in path {
        let (next, m) = cursor.field(field);
        meta = m;
        cursor = next.items();
    }
    meta
}

// ---------------------------------------------------------------------------------------
// Schema walking.

/// Where the merge stands in the kind's schema: the definition that owns the current map
/// (for the patch table) and its schema (to find field schemas). `None` once the walk leaves
/// what the schema describes.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    /// Definition name of the current schema, when it was reached through a `$ref`.
    name: Option<&'a str>,
    schema: Option<&'a Value>,
}

impl<'a> Cursor<'a> {
    const NONE: Cursor<'static> = Cursor {
        name: None,
        schema: None,
    };

    fn root(name: Option<&str>) -> Cursor<'static> {
        let defs = crate::openapi::definitions();
        match name.and_then(|n| defs.get_key_value(n)) {
            Some((n, s)) => Cursor {
                name: Some(n.as_str()),
                schema: Some(s),
            },
            None => Cursor::NONE,
        }
    }

    /// Follow `$ref` and single-element `allOf` wrappers to the schema that has properties.
    fn resolved(self) -> Cursor<'a> {
        let defs: &'static Map<String, Value> = crate::openapi::definitions();
        let mut cur = self;
        for _ in 0..8 {
            let Some(s) = cur.schema else { return cur };
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or(r);
                match defs.get_key_value(name) {
                    Some((n, d)) => {
                        cur = Cursor {
                            name: Some(n.as_str()),
                            schema: Some(d),
                        }
                    }
                    None => return Cursor::NONE,
                }
            } else if let Some(first) = s
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                cur = Cursor {
                    name: cur.name,
                    schema: Some(first),
                };
            } else {
                return cur;
            }
        }
        cur
    }

    /// The schema of `field` in the current map, and the field's patch strategy.
    fn field(self, field: &str) -> (Cursor<'a>, Option<PatchMeta>) {
        let cur = self.resolved();
        let Some(s) = cur.schema else {
            return (Cursor::NONE, None);
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(field)) {
            let meta = cur.name.and_then(|n| patch_meta(n, field));
            return (
                Cursor {
                    name: None,
                    schema: Some(p),
                },
                meta,
            );
        }
        // A map type (labels, data, resources.limits): every key has the value schema.
        if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
            return (
                Cursor {
                    name: None,
                    schema: Some(ap),
                },
                None,
            );
        }
        (Cursor::NONE, None)
    }

    /// The schema of the elements when the current schema is a list.
    fn items(self) -> Cursor<'a> {
        let cur = self.resolved();
        match cur.schema.and_then(|s| s.get("items")) {
            Some(i) => Cursor {
                name: None,
                schema: Some(i),
            },
            None => cur,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The merge (apimachinery strategicpatch.mergeMap & co., server side: MergeParallelList and
// IgnoreUnmatchedNulls both on).

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: &Cursor<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE);
                // Upstream takes the rest of the patch verbatim; what its typed decoding
                // would drop (directives, nulls) is dropped here.
                Ok(clean_map(patch))
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::BadPatchType {
                patch_type: go_fmt(directive),
                map: go_fmt(&Value::Object(patch.clone())),
            }),
        };
    }

    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order_lists(&mut original, &mut patch, schema)?;

    // Deletions from primitive lists run after the merges of the same list, so that an item
    // both re-ordered and deleted ends up deleted.
    let mut deletions = Vec::new();
    for (key, patch_v) in patch {
        if key.starts_with(SET_ORDER_PREFIX) || key == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE_PREFIX) {
            deletions.push((field.to_string(), patch_v));
            continue;
        }
        if patch_v.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let (sub, meta) = schema.field(&key);
        // Taken in place (not removed) so the key keeps its position in the object.
        let current = original.get_mut(&key).map(std::mem::take);
        let new_value = match (current, patch_v) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                if strategy_of(meta)?.1 == "replace" {
                    Value::Object(clean_map(p))
                } else {
                    Value::Object(merge_map(o, p, &sub)?)
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list_field(o, p, &sub, meta, false)?)
            }
            // New keys and type changes take the patch value without its nulls, and
            // without any map that carries a `$patch` directive (`removeDirectives`).
            (_, p) => match remove_directives(p) {
                Some(v) => v,
                None => {
                    original.shift_remove(&key);
                    continue;
                }
            },
        };
        original.insert(key, new_value);
    }

    for (field, list) in deletions {
        let Value::Array(to_delete) = list else {
            return Err(PatchError::BadPatchFormatForPrimitiveList);
        };
        match original.get_mut(&field) {
            Some(Value::Array(items)) => {
                let (_, meta) = schema.field(&field);
                if strategy_of(meta)?.1 != "merge" {
                    return Err(PatchError::Invalid(format!(
                        "$deleteFromPrimitiveList is only allowed on lists with patch strategy merge, not on {field}"
                    )));
                }
                if to_delete.iter().any(|v| v.is_object() || v.is_array()) {
                    return Err(PatchError::BadPatchFormatForPrimitiveList);
                }
                items.retain(|v| !to_delete.contains(v));
            }
            // Nothing to delete from.
            _ => {}
        }
    }
    Ok(original)
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ORDER_PREFIX)
        || k.starts_with(DELETE_PRIMITIVE_PREFIX)
}

/// A value taken from the patch as is: upstream copies it and its typed decoding later
/// drops the directive keys (unknown fields) and nulls (zero values); skiff stores JSON, so
/// they are dropped here.
fn clean(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(a.into_iter().map(clean).collect()),
        other => other,
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
        .map(|(k, v)| (k, clean(v)))
        .collect()
}

/// A patch value for a key the original lacks (`discardNullValuesFromPatch` then
/// `removeDirectives`): maps carrying `$patch` vanish, nulls inside maps are dropped.
/// `None` when the value itself vanishes.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// (retainKeys, strategy) from a `patchStrategy` tag (`extractRetainKeysPatchStrategy`).
fn strategy_of(meta: Option<PatchMeta>) -> Result<(bool, &'static str), PatchError> {
    let Some(meta) = meta else {
        return Ok((false, ""));
    };
    let parts: Vec<&'static str> = meta.strategy.split(',').collect();
    match parts.as_slice() {
        [] => Ok((false, "")),
        ["retainKeys"] => Ok((true, "")),
        [one] => Ok((false, one)),
        ["retainKeys", other] | [other, "retainKeys"] => Ok((true, other)),
        _ => Err(PatchError::Invalid(format!(
            "unexpected patch strategy: {:?}",
            parts
        ))),
    }
}

/// `$retainKeys`: drop every key of the original not listed (`applyRetainKeysDirective`).
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(PatchError::BadPatchFormatForRetainKeys);
    };
    let mut keep = Vec::with_capacity(list.len());
    for v in &list {
        match v.as_str() {
            Some(s) => keep.push(s.to_string()),
            None => return Err(PatchError::BadPatchFormatForRetainKeys),
        }
    }
    // Every field the patch sets must be one the directive keeps.
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(SET_ORDER_PREFIX) || k.starts_with(DELETE_PRIMITIVE_PREFIX)
        {
            continue;
        }
        if !keep.iter().any(|x| x == k) {
            return Err(PatchError::BadPatchFormatForRetainKeys);
        }
    }
    original.retain(|k, _| keep.iter().any(|x| x == k));
    Ok(())
}

/// `$setElementOrder/<field>`: merge the list it names and order the result by it
/// (`mergePatchIntoOriginal`): order in `$setElementOrder` > order in the patch > order in
/// the live object.
fn merge_set_element_order_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: &Cursor<'_>,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER_PREFIX))
        .cloned()
        .collect();
    for key in keys {
        let field = &key[SET_ORDER_PREFIX.len()..];
        let order = match patch.shift_remove(&key) {
            Some(Value::Array(order)) => order,
            Some(other) => return Err(bad_arg_type(&other)),
            None => continue,
        };
        let original_list = match original.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(other)),
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            // `field: null` next to its order directive: the deletion wins, handled later.
            Some(Value::Null) => continue,
            Some(other) => return Err(bad_arg_type(other)),
        };
        let (sub, meta) = schema.field(field);
        let merge_key = meta.and_then(|m| m.merge_key);
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or_default(),
            &order,
            merge_key,
        )?;
        let merged = match (&original_list, patch_list) {
            (None, None) => continue,
            (Some(o), None) => o.clone(),
            // A list the original lacks: taken without its directive elements.
            (None, Some(p)) => p.into_iter().filter_map(remove_directives).collect(),
            (Some(o), Some(p)) => merge_list_field(o.clone(), p, &sub, meta, true)?,
        };
        let original_list = original_list.unwrap_or_default();
        let kind_is_map = original_list
            .iter()
            .chain(merged.iter())
            .any(Value::is_object);
        let key = if kind_is_map { merge_key } else { None };
        let (patch_items, server_only) = partition(&merged, &order, key)?;
        let both = normalize_element_order(
            patch_items,
            server_only,
            &order,
            &original_list,
            key,
            kind_is_map,
        )?;
        original.insert(field.to_string(), Value::Array(both));
        patch.shift_remove(field);
    }
    Ok(())
}

/// `mergepatch.ErrBadArgType` for a value that should have been a list.
fn bad_arg_type(actual: &Value) -> PatchError {
    PatchError::Invalid(format!(
        "expected a []interface {{}}, but received a {}",
        go_type(actual)
    ))
}

/// Every non-deleting item of the patch list appears in `$setElementOrder` in the same
/// relative order (`validatePatchWithSetOrderList`).
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match merge_key {
        Some(_) => patch_list
            .iter()
            .filter(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"))
            .filter(|v| v.get(DIRECTIVE).is_none())
            .collect(),
        None => patch_list.iter().collect(),
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        if let Some(k) = merge_key {
            for item in [non_delete[pi], &order[oi]] {
                if item.get(k).is_none() {
                    return Err(PatchError::NoMergeKey {
                        map: go_fmt(item),
                        key: k.to_string(),
                    });
                }
            }
        }
        if same_item(non_delete[pi], &order[oi], merge_key) {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(PatchError::Invalid(format!(
            "the order in patch list:\n{}\n doesn't match {} list:\n{}",
            go_fmt(&Value::Array(patch_list.to_vec())),
            SET_ORDER_PREFIX.trim_end_matches('/'),
            go_fmt(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

/// Merge two lists of a field according to its strategy (`mergeSliceHandler`).
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: &Cursor<'_>,
    meta: Option<PatchMeta>,
    ordered_later: bool,
) -> Result<Vec<Value>, PatchError> {
    let (_, strategy) = strategy_of(meta)?;
    if strategy != "merge" {
        // Replaced lists are taken verbatim (`mergeSliceHandler`).
        return Ok(patch.into_iter().map(clean).collect());
    }
    merge_slice(
        original,
        patch,
        schema,
        meta.and_then(|m| m.merge_key),
        ordered_later,
    )
}

/// `mergeSlice`: merge by key (maps) or as an ordered set (primitives), then order.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: &Cursor<'_>,
    merge_key: Option<&str>,
    ordered_later: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let is_map = element_kind(&original, &patch)?;
    let items = schema.items();
    let (original, patch, merged) = if !is_map {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        (original, patch, merged)
    } else {
        let Some(key) = merge_key else {
            return Err(PatchError::Invalid(format!(
                "cannot merge lists without merge key for {}",
                schema.resolved().name.unwrap_or("map")
            )));
        };
        let (original, patch) = merge_slice_with_special_elements(original, patch, key)?;
        let merged = merge_slice_without_special_elements(original.clone(), &patch, key, &items)?;
        (original, patch, merged)
    };
    if ordered_later {
        // The caller orders by `$setElementOrder`.
        return Ok(merged);
    }
    let (patch_items, server_only) = partition(&merged, &patch, merge_key)?;
    normalize_element_order(
        patch_items,
        server_only,
        &patch,
        &original,
        merge_key,
        is_map,
    )
}

/// Whether the elements are maps; all elements must share one JSON type (`sliceElementType`).
fn element_kind(original: &[Value], patch: &[Value]) -> Result<bool, PatchError> {
    let mut kind: Option<&'static str> = None;
    for v in original.iter().chain(patch.iter()) {
        let t = go_type(v);
        match kind {
            None => {
                if v.is_array() {
                    return Err(PatchError::NoListOfLists);
                }
                kind = Some(t);
            }
            Some(k) if k != t => {
                return Err(PatchError::Invalid(format!(
                    "list element types are not identical: {}",
                    go_fmt(&Value::Array(vec![
                        Value::Array(original.to_vec()),
                        Value::Array(patch.to_vec())
                    ]))
                )))
            }
            Some(_) => {}
        }
    }
    match kind {
        Some(k) => Ok(k == "map[string]interface {}"),
        None => Err(PatchError::Invalid(
            "no elements in any of the given slices".into(),
        )),
    }
}

/// Handle `$patch` elements of a keyed list (`mergeSliceWithSpecialElements`): `delete`
/// removes the matching original entries, `replace` makes the rest of the patch the list.
fn merge_slice_with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Some(directive) = v.get(DIRECTIVE) else {
            rest.push(v);
            continue;
        };
        match directive.as_str() {
            Some("delete") => match v.get(key) {
                Some(kv) => original.retain(|o| o.get(key) != Some(kv)),
                None => {
                    return Err(PatchError::NoMergeKey {
                        map: go_fmt(&v),
                        key: key.to_string(),
                    })
                }
            },
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::Invalid(
                    "merging lists cannot yet be specified in the patch".into(),
                ))
            }
            _ => {
                return Err(PatchError::BadPatchType {
                    patch_type: go_fmt(directive),
                    map: go_fmt(&v),
                })
            }
        }
    }
    if replace {
        return Ok((rest, Vec::new()));
    }
    Ok((original, rest))
}

/// Merge each patch element into the original element with the same key, or append it
/// (`mergeSliceWithoutSpecialElements`).
fn merge_slice_without_special_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: &Cursor<'_>,
) -> Result<Vec<Value>, PatchError> {
    for v in patch {
        let Value::Object(pm) = v else { continue };
        let Some(kv) = pm.get(key) else {
            return Err(PatchError::NoMergeKey {
                map: go_fmt(v),
                key: key.to_string(),
            });
        };
        match original.iter().position(|o| o.get(key) == Some(kv)) {
            Some(i) => {
                let o = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                original[i] = Value::Object(merge_map(o, pm.clone(), items)?);
            }
            None => original.push(clean(v.clone())),
        }
    }
    Ok(original)
}

/// Split `merged` into the items present in `list` and the rest, keeping order.
fn partition(
    merged: &[Value],
    list: &[Value],
    merge_key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut rest = Vec::new();
    for v in merged {
        if let (Some(k), true) = (merge_key, v.is_object()) {
            if v.get(k).is_none() {
                return Err(PatchError::NoMergeKey {
                    map: go_fmt(v),
                    key: k.to_string(),
                });
            }
        }
        if index_of(list, v, merge_key).is_some() {
            present.push(v.clone());
        } else {
            rest.push(v.clone());
        }
    }
    Ok((present, rest))
}

fn same_item(a: &Value, b: &Value, merge_key: Option<&str>) -> bool {
    match (merge_key, a, b) {
        (Some(k), Value::Object(am), Value::Object(bm)) => match (am.get(k), bm.get(k)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        _ => a == b,
    }
}

fn index_of(list: &[Value], v: &Value, merge_key: Option<&str>) -> Option<usize> {
    list.iter().position(|x| same_item(x, v, merge_key))
}

/// `normalizeElementOrder`: patch items in patch order, server-only items in server order,
/// then interleave them by the server order.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
    is_map: bool,
) -> Result<Vec<Value>, PatchError> {
    let key = if is_map { merge_key } else { None };
    let patch_items = normalize_slice_order(patch_items, patch_order, key);
    let server_only = normalize_slice_order(server_only, server_order, key);
    Ok(merge_sorted_slice(
        server_only,
        patch_items,
        server_order,
        key,
    ))
}

/// Sort by position in `order`; items absent from it go last, in their current order.
fn normalize_slice_order(items: Vec<Value>, order: &[Value], key: Option<&str>) -> Vec<Value> {
    let (mut known, unknown): (Vec<Value>, Vec<Value>) = items
        .into_iter()
        .partition(|v| index_of(order, v, key).is_some());
    known.sort_by_key(|v| index_of(order, v, key));
    known.extend(unknown);
    known
}

/// `mergeSortedSlice`: insert each server-only item before the first patch item that comes
/// after it in the server order, keeping the relative order of both lists.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.by_ref()),
            (None, Some(_)) => out.extend(r.by_ref()),
            (Some(lv), Some(rv)) => {
                let li = index_of(server_order, lv, key);
                let ri = index_of(server_order, rv, key);
                let take_left = matches!((li, ri), (Some(a), Some(b)) if a < b);
                if take_left {
                    out.extend(l.next());
                } else {
                    out.extend(r.next());
                }
            }
        }
    }
    out
}

/// Go's `reflect.TypeOf` name of a decoded JSON value, for upstream-identical messages.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Go's `%v` rendering of a decoded JSON value (`map[k:v ...]` with sorted keys).
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_fmt).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", k, go_fmt(&m[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(original: Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_kind("apps", "v1", "Deployment", &original, &patch)
    }

    fn web_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "nginx:1", "args": ["-a", "-b"],
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                            {"name": "sidecar", "image": "busybox"}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    /// Table of (name, patch, check) applied to `web_deployment()`.
    #[test]
    fn kubectl_patches_on_a_deployment() {
        type Check = fn(&Value);
        let cases: Vec<(&str, Value, Check)> = vec![
            (
                "apply: image change with $setElementOrder keeps server-only containers",
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                       "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}],
                                                      "containers": [{"image": "nginx:2", "name": "web"}]}}}}),
                |v| {
                    assert_eq!(containers(v)[0]["image"], "nginx:2");
                    assert_eq!(containers(v)[0]["args"], json!(["-a", "-b"]));
                    assert_eq!(containers(v)[1]["name"], "sidecar");
                    assert_eq!(
                        v["metadata"]["annotations"]
                            ["kubectl.kubernetes.io/last-applied-configuration"],
                        "{}"
                    );
                    assert!(v["spec"]["template"]["spec"]
                        .get("$setElementOrder/containers")
                        .is_none());
                },
            ),
            (
                "set image: keyed merge without directives",
                json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}]}}}}),
                |v| {
                    assert_eq!(containers(v)[0]["image"], "nginx:1");
                    assert_eq!(containers(v)[1]["image"], "busybox:2");
                    assert_eq!(containers(v).as_array().map(Vec::len), Some(2));
                },
            ),
            (
                "scale and label",
                json!({"metadata": {"labels": {"tier": null, "env": "prod"}}, "spec": {"replicas": 5}}),
                |v| {
                    assert_eq!(v["spec"]["replicas"], 5);
                    assert_eq!(
                        v["metadata"]["labels"],
                        json!({"app": "web", "env": "prod"})
                    );
                },
            ),
            (
                "$patch: delete removes a container",
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}}}),
                |v| {
                    assert_eq!(containers(v).as_array().map(Vec::len), Some(1));
                    assert_eq!(containers(v)[0]["name"], "web");
                },
            ),
            (
                "$patch: replace replaces the whole list",
                json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}}}),
                |v| assert_eq!(*containers(v), json!([{"name": "only", "image": "x"}])),
            ),
            (
                "$patch: replace on a map",
                json!({"spec": {"template": {"metadata": {"labels": {"$patch": "replace", "new": "1"}}}}}),
                |v| {
                    assert_eq!(
                        v["spec"]["template"]["metadata"]["labels"],
                        json!({"new": "1"})
                    )
                },
            ),
            (
                "$patch: delete on a map",
                json!({"spec": {"strategy": {"$patch": "delete"}}}),
                |v| assert_eq!(v["spec"]["strategy"], json!({})),
            ),
            (
                "$retainKeys drops the rolling update parameters when switching to Recreate",
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                |v| assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"})),
            ),
            (
                "lists without a merge key are replaced",
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["-c"]}]}}}}),
                |v| assert_eq!(containers(v)[0]["args"], json!(["-c"])),
            ),
            (
                "env merges by name, ports by containerPort",
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 443}]}]}}}}),
                |v| {
                    assert_eq!(
                        containers(v)[0]["env"],
                        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
                    );
                    // Upstream puts patch items the live list lacks ahead of server-only
                    // ones unless `$setElementOrder` says otherwise (mergeSortedSlice).
                    assert_eq!(
                        containers(v)[0]["ports"],
                        json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
                    );
                },
            ),
            (
                "finalizers merge as an ordered set",
                json!({"metadata": {"finalizers": ["b", "c"]}}),
                |v| assert_eq!(v["metadata"]["finalizers"], json!(["a", "b", "c"])),
            ),
            (
                "$deleteFromPrimitiveList with $setElementOrder (apply removing a finalizer)",
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"],
                                    "$setElementOrder/finalizers": ["a", "c"], "finalizers": ["c"]}}),
                |v| assert_eq!(v["metadata"]["finalizers"], json!(["a", "c"])),
            ),
            (
                "$setElementOrder reorders a keyed list",
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}),
                |v| {
                    assert_eq!(containers(v)[0]["name"], "sidecar");
                    assert_eq!(containers(v)[1]["name"], "web");
                },
            ),
            (
                "apply: new container placed by $setElementOrder",
                json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "new"}, {"name": "sidecar"}],
                    "containers": [{"name": "new", "image": "n"}]}}}}),
                |v| {
                    let names: Vec<&str> = containers(v)
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["name"].as_str())
                        .collect();
                    assert_eq!(names, ["web", "new", "sidecar"]);
                },
            ),
            (
                "volumes: element $retainKeys switches the volume source",
                json!({"spec": {"template": {"spec": {"volumes": [
                    {"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cm"}}]}}}}),
                |v| {
                    assert_eq!(
                        v["spec"]["template"]["spec"]["volumes"],
                        json!([{"name": "data", "configMap": {"name": "cm"}}])
                    )
                },
            ),
            (
                "nulls under a new key are dropped",
                json!({"metadata": {"annotations": {"a": null, "b": "x"}}}),
                |v| assert_eq!(v["metadata"]["annotations"], json!({"b": "x"})),
            ),
            (
                "unknown fields: maps merge, lists replace",
                json!({"spec": {"extra": {"k": [1]}}}),
                |v| assert_eq!(v["spec"]["extra"], json!({"k": [1]})),
            ),
            (
                "new values lose maps with directives; replaced lists lose directive keys",
                json!({"spec": {"selector": {"matchExpressions": [{"$patch": "delete", "key": "x"}]},
                                "template": {"spec": {"nodeSelector": {"$patch": "replace"},
                                    "containers": [{"name": "web", "args": ["-x"], "envFrom": [{"$retainKeys": ["prefix"], "prefix": "P"}]}]}}}}),
                |v| {
                    assert_eq!(
                        v["spec"]["selector"],
                        json!({"matchLabels": {"app": "web"}, "matchExpressions": []})
                    );
                    assert!(v["spec"]["template"]["spec"].get("nodeSelector").is_none());
                    assert_eq!(containers(v)[0]["envFrom"], json!([{"prefix": "P"}]));
                },
            ),
            (
                "deleting a list with null",
                json!({"spec": {"template": {"spec": {"volumes": null}}}}),
                |v| assert!(v["spec"]["template"]["spec"].get("volumes").is_none()),
            ),
        ];
        for (name, patch, check) in cases {
            let out = deploy(web_deployment(), patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            check(&out);
        }
    }

    /// The patch kubectl v1.32 `apply` computed from skiff's OpenAPI v3 document when a
    /// manifest switched to Recreate, changed an image, dropped `env` and a container
    /// (captured with a fake server).
    #[test]
    fn real_kubectl_apply_patch() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}],
                     "env": [{"name": "A", "value": "1"}], "imagePullPolicy": "IfNotPresent"},
                    {"name": "side", "image": "busybox"}]}}
            }
        });
        let patch: Value = serde_json::from_str(r#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"new\n"}},"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},"template":{"spec":{"$setElementOrder/containers":[{"name":"web"}],"containers":[{"env":null,"image":"nginx:2","name":"web"},{"$patch":"delete","name":"side"}]}}}}"#).unwrap_or_default();
        let out = deploy(live, patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}], "imagePullPolicy": "IfNotPresent"}])
        );
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "new\n"
        );
        assert_eq!(out["metadata"]["uid"], "u1");
    }

    /// Pod and Service patches kubectl v1.32 `apply` computed from skiff's OpenAPI v3
    /// documents (volume source switch with `$retainKeys`, mounts keyed by `mountPath`,
    /// service ports keyed by `port`).
    #[test]
    fn real_kubectl_apply_patches_for_pods_and_services() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "image": "busybox", "resources": {"limits": {"cpu": "1"}},
                            "volumeMounts": [{"name": "v", "mountPath": "/a"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "tolerations": [{"key": "k", "operator": "Exists"}]}});
        let patch: Value = serde_json::from_str(r#"{"spec":{"$setElementOrder/containers":[{"name":"a"}],"$setElementOrder/volumes":[{"name":"v"}],"containers":[{"$setElementOrder/volumeMounts":[{"mountPath":"/b"}],"name":"a","resources":{"limits":{"cpu":"2"}},"volumeMounts":[{"mountPath":"/b","name":"v"},{"$patch":"delete","mountPath":"/a"}]}],"tolerations":[],"volumes":[{"$retainKeys":["configMap","name"],"configMap":{"name":"c"},"emptyDir":null,"name":"v"}]}}"#).unwrap_or_default();
        let out =
            strategic_merge_kind("", "v1", "Pod", &pod, &patch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out["spec"],
            json!({"containers": [{"name": "a", "image": "busybox", "resources": {"limits": {"cpu": "2"}},
                                   "volumeMounts": [{"mountPath": "/b", "name": "v"}]}],
                   "volumes": [{"name": "v", "configMap": {"name": "c"}}],
                   "tolerations": []})
        );

        let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"},
            "ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patch: Value = serde_json::from_str(r#"{"metadata":{"labels":{"lab":"val"}},"spec":{"$setElementOrder/ports":[{"port":80}],"ports":[{"port":80,"targetPort":9090},{"$patch":"delete","port":443}]}}"#).unwrap_or_default();
        let out = strategic_merge_kind("", "v1", "Service", &svc, &patch)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090, "name": "http"}])
        );
        assert_eq!(out["metadata"]["labels"], json!({"lab": "val"}));
    }

    #[test]
    fn keys_keep_their_position() {
        let out = deploy(
            web_deployment(),
            json!({"metadata": {"name": "web"}, "apiVersion": "apps/v1"}),
        );
        let keys: Vec<String> = out
            .ok()
            .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    }

    #[test]
    fn service_ports_merge_by_port_and_owner_references_by_uid() {
        let svc = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
                         "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "b"}, {"uid": "2", "name": "c"}]},
                           "spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
        let out = strategic_merge_kind("", "v1", "Service", &svc, &patch).unwrap_or_default();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "b"}, {"uid": "2", "name": "c"}])
        );
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let info = crate::registry::lookup("", "v1", "pods");
        let out = info.map(|i| strategic_merge(i, &pod, &patch));
        assert_eq!(
            out.and_then(Result::ok)
                .map(|v| v["status"]["conditions"].clone()),
            Some(
                json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
            )
        );
    }

    #[test]
    fn malformed_patches_are_rejected_with_upstream_messages() {
        let cases: Vec<(Value, &str, u16)> = vec![
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                "map: map[image:x] does not contain declared merge key: name",
                500,
            ),
            (
                json!({"spec": {"strategy": {"$patch": "bogus"}}}),
                "unknown patch type: bogus in map: map[$patch:bogus]",
                500,
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
                "merging lists cannot yet be specified in the patch",
                500,
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
                "invalid patch format of retainKeys",
                400,
            ),
            (
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "web"}}}}}),
                "expected a []interface {}, but received a map[string]interface {}",
                500,
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
                "invalid patch format of retainKeys",
                400,
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "invalid patch format of primitive list",
                400,
            ),
            (
                json!({"metadata": {"finalizers": [1]}}),
                "list element types are not identical: [[a b] [1]]",
                500,
            ),
            (
                json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"name": "web"}, {"name": "other"}]}}}}),
                "the order in patch list:\n[map[name:web] map[name:other]]\n doesn't match $setElementOrder list:\n[map[name:web]]",
                500,
            ),
        ];
        for (patch, message, code) in cases {
            match deploy(web_deployment(), patch.clone()) {
                Ok(v) => panic!("{patch} applied: {v}"),
                Err(e) => {
                    assert!(
                        e.to_string().starts_with(message),
                        "{patch}: got {e}, want {message}"
                    );
                    assert_eq!(e.status_code(), code, "{patch}");
                }
            }
        }
        assert_eq!(
            deploy(web_deployment(), json!([1])),
            Err(PatchError::BadJsonDoc)
        );
        let node = json!({"spec": {"podCIDRs": []}});
        let lists_of_lists = strategic_merge_kind(
            "",
            "v1",
            "Node",
            &node,
            &json!({"spec": {"podCIDRs": [["x"]]}}),
        );
        assert_eq!(lists_of_lists, Err(PatchError::NoListOfLists));
        assert_eq!(PatchError::NoListOfLists.status_code(), 422);
    }

    #[test]
    fn merge_keys_are_found_by_path() {
        let m = field_patch_meta(
            "apps",
            "v1",
            "Deployment",
            &["spec", "template", "spec", "containers"],
        );
        assert_eq!(m.and_then(|m| m.merge_key), Some("name"));
        let m = field_patch_meta(
            "batch",
            "v1",
            "CronJob",
            &[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
                "ports",
            ],
        );
        assert_eq!(m.and_then(|m| m.merge_key), Some("containerPort"));
        assert_eq!(
            field_patch_meta("", "v1", "Pod", &["spec", "tolerations"]),
            None
        );
    }

    #[test]
    fn every_patch_field_exists_in_the_schemas() {
        let defs = crate::openapi::definitions();
        for (ty, field, _, _) in PATCH_FIELDS {
            assert!(
                defs.get(*ty)
                    .and_then(|d| d.get("properties"))
                    .and_then(|p| p.get(*field))
                    .is_some(),
                "{ty}.{field} is not in the schemas"
            );
        }
    }
}
