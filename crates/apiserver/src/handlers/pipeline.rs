//! The path every written object takes before it is stored: body decoding (JSON or
//! YAML), type checks, strict decoding against the schema (unknown fields per
//! `fieldValidation`), upstream defaulting, system metadata, and validation. Each step
//! answers bad input with upstream's status and changes nothing.

use serde_json::{json, Value};

use api::registry::{ResourceInfo, Subresource};

use crate::errors::{ApiError, ApiResult};
use crate::objects;
use crate::request::FieldValidation;

/// Decode a request body as JSON, YAML or Kubernetes protobuf, as its content type says.
pub fn parse_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    let value: Value = match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        // kubectl's typed `create` commands send Kubernetes protobuf.
        "application/vnd.kubernetes.protobuf" => {
            api::protobuf::decode_request(body).map_err(|e| {
                ApiError::bad_request(format!("error decoding protobuf request body: {e}"))
            })?
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: expected an object",
        ));
    }
    Ok(value)
}

/// Check (or fill in) apiVersion and kind against the resource the URL names.
pub fn check_type_meta(info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    let expected = info.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: the kind in the data ({k}) does not match the expected kind ({})",
                info.kind, info.version, info.kind, info.kind
            )))
        }
        _ => {}
    }
    obj["apiVersion"] = json!(expected);
    obj["kind"] = json!(info.kind);
    Ok(())
}

/// Decode against the kind's schema. Unknown fields fail (Strict), become warnings
/// (Warn), or are dropped (Ignore), as upstream's fieldValidation.
pub fn decode(
    info: &ResourceInfo,
    obj: &Value,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let cannot_handle = |detail: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {detail}",
            info.kind, info.version, info.kind
        ))
    };
    let decoded = api::validation::decode(info, obj).map_err(|e| cannot_handle(e.to_string()))?;
    let unknown: Vec<String> = decoded
        .unknown_fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        FieldValidation::Strict if !unknown.is_empty() => Err(cannot_handle(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok((decoded.object, unknown)),
        _ => Ok((decoded.object, Vec::new())),
    }
}

/// `decode` of `new`, an update of `current` (as read from the store) in `scope`. A status
/// write keeps nothing of `new` but its status (`prepare_for_update`); when everything
/// else in `new` is still `current`'s (a status patch), which was decoded on its way into
/// the store and so holds no unknown field and no type error, decoding the status alone
/// finds the same unknown fields and errors and gives the same status, at a fraction of
/// the cost of the whole object. Anything else, or a status part that does not decode on
/// its own, takes the whole-object decode.
pub fn decode_update(
    info: &ResourceInfo,
    new: Value,
    current: &Value,
    scope: UpdateScope,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    if scope == UpdateScope::Status && same_but_status(&new, current) {
        let mut part = serde_json::Map::with_capacity(3);
        for field in ["apiVersion", "kind", "status"] {
            if let Some(v) = new.get(field) {
                part.insert(field.into(), v.clone());
            }
        }
        if let Ok((decoded, warnings)) = decode(info, &Value::Object(part), validation) {
            let mut new = new;
            if let Some(m) = new.as_object_mut() {
                match decoded.get("status") {
                    Some(status) => {
                        m.insert("status".into(), status.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            return Ok((new, warnings));
        }
    }
    decode(info, &new, validation)
}

/// Whether `a` and `b` differ at most in `status`.
fn same_but_status(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    let others = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| *k != "status").count();
    others(a) == others(b)
        && a.iter()
            .filter(|(k, _)| *k != "status")
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether `a` and `b` have the same members in the same order, equal except `status`.
fn same_members_but_status(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && (ka == "status" || va == vb))
}

/// System metadata of a new object: name from generateName, uid, timestamps, generation.
pub fn prepare_for_create(
    info: &ResourceInfo,
    obj: &mut Value,
    namespace: Option<&str>,
) -> ApiResult<()> {
    if let Some(url_ns) = namespace {
        match objects::meta_str(obj, "namespace") {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
    }
    let rv_set = objects::meta_str(obj, "resourceVersion").is_some_and(|rv| !rv.is_empty());
    if rv_set {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let tracks = objects::tracks_generation(info);
    let meta = objects::metadata_mut(obj)
        .ok_or_else(|| ApiError::bad_request("object has no metadata"))?;
    let name_empty = meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if name_empty {
        if let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            let name = format!("{prefix}{}", objects::random_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    match namespace {
        Some(ns) if info.namespaced => {
            meta.insert("namespace".into(), json!(ns));
        }
        _ => {
            meta.remove("namespace");
        }
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if tracks {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    // Status is the controllers' to write: a create starts from an empty one, except for
    // Nodes, whose creator (the kubelet) reports status at registration.
    if info.has_subresource(Subresource::Status) && info.kind != "Node" {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    Ok(())
}

/// Which part of an object an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateScope {
    /// The main resource: everything but status (for kinds with a status subresource).
    Main,
    /// `/status`: only status.
    Status,
}

/// Carry over what an update may not change, and bump generation on spec changes.
pub fn prepare_for_update(
    info: &ResourceInfo,
    new: &mut Value,
    old: &Value,
    scope: UpdateScope,
) -> ApiResult<()> {
    let name = objects::name_of(old).to_string();
    if let Some(uid) = objects::meta_str(new, "uid").filter(|u| !u.is_empty()) {
        let old_uid = objects::meta_str(old, "uid").unwrap_or("");
        if uid != old_uid {
            return Err(ApiError::conflict_message(
                info,
                &name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"),
            ));
        }
    }
    if scope == UpdateScope::Status {
        // Usually `new` is already `old` with another status (a status patch): nothing
        // to copy back. The order of members must match too, as it shapes the bytes stored.
        if same_members_but_status(new, old) {
            return Ok(());
        }
        let status = new.get("status").cloned();
        let mut next = old.clone();
        match status {
            Some(s) => next["status"] = s,
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        *new = next;
        return Ok(());
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let tracks = objects::tracks_generation(info);
    let spec_changed = objects::spec_part(new) != objects::spec_part(old);
    let meta = objects::metadata_mut(new)
        .ok_or_else(|| ApiError::bad_request("object has no metadata"))?;
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("selfLink");
    if tracks {
        let gen = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta.insert(
            "generation".into(),
            json!(if spec_changed { gen + 1 } else { gen }),
        );
    } else {
        meta.remove("generation");
    }
    if info.has_subresource(Subresource::Status) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    Ok(())
}

/// Validate a new object; 422 with field causes.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let causes = api::validation::validate_create(info, obj);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, objects::name_of(obj), &causes))
    }
}

pub fn validate_update(
    info: &ResourceInfo,
    new: &Value,
    old: &Value,
    scope: UpdateScope,
) -> ApiResult<()> {
    let causes = match scope {
        UpdateScope::Main => api::validation::validate_update(info, new, old),
        UpdateScope::Status => api::validation::validate_status_update(info, new, old),
    };
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, objects::name_of(new), &causes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status write decoded through its status alone gives what the whole-object decode
    /// gives: the same status (quantities canonical, nulls dropped), the same unknown
    /// fields, the same errors.
    #[test]
    fn status_writes_decode_as_whole_objects_do() {
        let pods = api::registry::lookup("", "v1", "pods").unwrap();
        let current = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
            "status": {"phase": "Pending"}});
        let statuses = [
            json!({"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, "allocatedResources": {"cpu": 0.5}}]}),
            json!({"phase": "Running", "bogus": 1, "conditions": [{"type": "Ready", "status": "True", "nope": "x"}]}),
            json!({"phase": 3}),
            json!({"containerStatuses": [{"name": "c", "restartCount": "x"}]}),
            Value::Null,
        ];
        for status in statuses {
            let mut new = current.clone();
            new["status"] = status.clone();
            for validation in [
                FieldValidation::Strict,
                FieldValidation::Warn,
                FieldValidation::Ignore,
            ] {
                let whole = decode(pods, &new, validation);
                let part =
                    decode_update(pods, new.clone(), &current, UpdateScope::Status, validation);
                match (whole, part) {
                    (Ok((w, ww)), Ok((p, pw))) => {
                        assert_eq!(w.get("status"), p.get("status"), "{status}");
                        assert_eq!(ww, pw, "{status}");
                    }
                    (Err(w), Err(p)) => assert_eq!(w.message, p.message, "{status}"),
                    (w, p) => panic!("{status}: whole {:?} part {:?}", w.is_ok(), p.is_ok()),
                }
            }
        }
    }

    /// A status write keeps everything but the status of the stored object, in its order,
    /// whether or not the written object already matches it (the in-place shortcut).
    #[test]
    fn status_writes_keep_the_rest_of_the_stored_object() {
        let pods = api::registry::lookup("", "v1", "pods").unwrap();
        let old = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"}});
        let mut without_status = old.clone();
        without_status.as_object_mut().unwrap().remove("status");
        let running = json!({"phase": "Running"});
        let with = |base: &Value, f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            v
        };
        // (stored, written, expected)
        let cases = [
            (
                old.clone(),
                with(&old, &|v| v["status"] = running.clone()),
                with(&old, &|v| v["status"] = running.clone()),
            ),
            (
                old.clone(),
                with(&old, &|v| {
                    v["status"] = running.clone();
                    v["metadata"]["labels"]["a"] = json!("2");
                    v["spec"]["x"] = json!(1);
                }),
                with(&old, &|v| v["status"] = running.clone()),
            ),
            (
                old.clone(),
                with(&old, &|v| {
                    v.as_object_mut().unwrap().remove("status");
                }),
                without_status.clone(),
            ),
            (
                without_status.clone(),
                with(&without_status, &|v| v["status"] = running.clone()),
                with(&without_status, &|v| v["status"] = running.clone()),
            ),
            // The same members in another order: the stored order wins.
            (
                old.clone(),
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": old["metadata"].clone(),
                "spec": old["spec"].clone(), "status": running.clone()}),
                with(&old, &|v| v["status"] = running.clone()),
            ),
        ];
        for (stored, written, expected) in cases {
            let mut new = written.clone();
            prepare_for_update(pods, &mut new, &stored, UpdateScope::Status).unwrap();
            assert_eq!(new, expected, "{written}");
            let order = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(order(&new), order(&expected), "{written}");
        }
    }
}
