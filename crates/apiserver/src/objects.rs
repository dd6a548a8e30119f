//! Objects as the apiserver stores them: JSON bytes in the store with
//! `metadata.resourceVersion` left out (it is the store's mod revision, filled in on every
//! read, as kube-apiserver does over etcd), plus the small metadata helpers every verb
//! shares.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use api::registry::ResourceInfo;
use store::KeyValue;

use crate::errors::{ApiError, ApiResult};

/// Decode a stored value as `info` serves it (converting from the storage version),
/// with its apiVersion, kind and resourceVersion stamped.
pub fn decode(info: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
    let stored: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    let mut obj = api::conversion::from_storage(info, stored);
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// Encode an object served as `info` for the store: in the storage version, without
/// its resourceVersion.
pub fn encode(info: &ResourceInfo, obj: &Value) -> ApiResult<Bytes> {
    let mut copy = api::conversion::to_storage(info, obj.clone());
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&copy)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

/// An object encoded for a write: the bytes for the store and, where the served form is
/// the stored form, the object itself, so the answer need not parse the bytes back.
pub struct Encoded {
    pub bytes: Bytes,
    served: Option<Value>,
}

/// `encode` for an object the caller gives up: no copy of it, and it is kept for
/// `Encoded::into_stored`.
pub fn encode_owned(info: &ResourceInfo, obj: Value) -> ApiResult<Encoded> {
    let unconverted = api::conversion::storage_version(info) == (info.group, info.version);
    let mut stored = api::conversion::to_storage(info, obj);
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))?;
    Ok(Encoded {
        bytes,
        served: unconverted.then_some(stored),
    })
}

impl Encoded {
    /// The object exactly as `decode(info, kv)` returns it, for the `kv` the store wrote
    /// these bytes as (a JSON round trip of a `Value` gives the same `Value`).
    pub fn into_stored(self, info: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
        let Some(mut obj) = self.served else {
            return decode(info, kv);
        };
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(info.api_version()));
            m.insert("kind".into(), json!(info.kind));
        }
        set_resource_version(&mut obj, kv.mod_revision);
        Ok(obj)
    }
}

pub fn set_resource_version(obj: &mut Value, rev: i64) {
    if let Some(meta) = metadata_mut(obj) {
        meta.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

/// The object's metadata map, created if missing. None only if `obj` is not an object.
pub fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// Parse a resourceVersion string as a store revision; 400 for garbage, as upstream.
pub fn parse_resource_version(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// RFC 3339 with seconds precision, as metav1.Time serialises.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn rfc3339_after(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Kinds whose metadata.generation tracks spec changes.
pub fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        info.kind,
        "Pod"
            | "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "CronJob"
            | "HorizontalPodAutoscaler"
            | "PodDisruptionBudget"
            | "Ingress"
            | "IngressClass"
            | "NetworkPolicy"
    )
}

/// Everything but metadata and status: what a generation bump is about.
pub fn spec_part(obj: &Value) -> Value {
    match obj {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Two objects are the same write if they differ in nothing but resourceVersion and
/// managedFields timestamps; such updates are not written (no revision bump), as upstream.
pub fn same_content(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        c
    }
    strip(a) == strip(b)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .map_or(false, |v| !v.is_null())
}

/// A random suffix for generateName: 5 characters from upstream's alphabet (no vowels,
/// no look-alikes), so generated names read as upstream's do.
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_version_is_not_stored() {
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}});
        let cms = api::registry::lookup("", "v1", "configmaps").unwrap();
        let bytes = encode(cms, &obj).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let kv = KeyValue {
            key: "/k".into(),
            value: bytes,
            create_revision: 3,
            mod_revision: 9,
        };
        let back = decode(cms, &kv).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "9");
        assert_eq!(back["kind"], "ConfigMap");
    }

    #[test]
    fn generation_ignores_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1}, "status": {"x": 2}});
        assert_eq!(spec_part(&a), spec_part(&b));
    }

    #[test]
    fn bad_resource_versions_are_rejected() {
        assert!(parse_resource_version("abc").is_err());
        assert!(parse_resource_version("-1").is_err());
        assert_eq!(parse_resource_version("42").unwrap(), 42);
    }
}
