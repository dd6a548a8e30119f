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

/// An object encoded for a write: the bytes for the store and the stored tree, so the
/// answer need not parse the bytes back.
pub struct Encoded {
    pub bytes: Bytes,
    /// The stored form as a tree.
    stored: Value,
    /// Whether the stored form is not the served one (a storage conversion applies).
    converted: bool,
}

/// `encode` for an object the caller gives up: no copy of it, and it is kept for
/// `Encoded::into_stored`.
pub fn encode_owned(info: &ResourceInfo, obj: Value) -> ApiResult<Encoded> {
    let converted = api::conversion::storage_version(info) != (info.group, info.version);
    let mut stored = api::conversion::to_storage(info, obj);
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let bytes = serde_json::to_vec(&stored)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))?;
    Ok(Encoded {
        bytes,
        stored,
        converted,
    })
}

impl Encoded {
    /// The object exactly as `decode(info, kv)` returns it, for the `kv` the store wrote
    /// these bytes as (a JSON round trip of a `Value` gives the same `Value`, so the
    /// conversion may start from the tree as well as from the bytes).
    pub fn into_stored(self, info: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
        let mut obj = if self.converted {
            api::conversion::from_storage(info, self.stored)
        } else {
            self.stored
        };
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), json!(info.api_version()));
            m.insert("kind".into(), json!(info.kind));
        }
        set_resource_version(&mut obj, kv.mod_revision);
        Ok(obj)
    }
}

/// A written object as served: the tree, and its JSON when that could be taken from the
/// stored bytes (`served_json_into`), so the answer to a write need not encode the tree
/// again. `json` is None for what was not stored (dry runs, unchanged objects) and for
/// kinds served in another version than they are stored in.
pub struct Stored {
    pub object: Value,
    pub json: Option<Bytes>,
}

impl Stored {
    /// An object with no stored form to answer from.
    pub fn tree(object: Value) -> Stored {
        Stored { object, json: None }
    }
}

impl Encoded {
    /// `into_stored`, with the served JSON spliced from the bytes written.
    pub fn into_served(self, info: &ResourceInfo, kv: &KeyValue) -> ApiResult<Stored> {
        let mut json = Vec::new();
        let json = served_json_into(info, &self.bytes, kv.mod_revision, &mut json)
            .map(|()| Bytes::from(json));
        Ok(Stored {
            object: self.into_stored(info, kv)?,
            json,
        })
    }
}

/// Append to `out` the JSON that `serde_json::to_vec(&decode(info, kv))` would give for
/// `stored` at revision `rev`, without decoding it: the stored bytes with
/// `"resourceVersion"` added as the last member of `metadata`. None (nothing appended)
/// when that would not be the same bytes: a kind served in another version than it is
/// stored in, or stored bytes not in the form this server writes (compact serde_json
/// with apiVersion, kind and metadata present and no resourceVersion), which then take
/// the decoding path.
///
/// The bytes are the same because the store only ever holds `serde_json::to_vec` of a
/// `Value`, which a parse and re-encode reproduces exactly, and because `decode` only
/// overwrites apiVersion and kind in place (same values here) and appends resourceVersion.
pub fn served_json_into(
    info: &ResourceInfo,
    stored: &[u8],
    rev: i64,
    out: &mut Vec<u8>,
) -> Option<()> {
    if api::conversion::storage_version(info) != (info.group, info.version) {
        return None;
    }
    let meta_close = splice::metadata_end(stored, &info.api_version(), info.kind)?;
    let empty_meta = stored[meta_close - 1] == b'{';
    out.reserve(stored.len() + 32);
    out.extend_from_slice(&stored[..meta_close]);
    if !empty_meta {
        out.push(b',');
    }
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rev.to_string().as_bytes());
    out.push(b'"');
    out.extend_from_slice(&stored[meta_close..]);
    Some(())
}

/// A stored object's top-level members as byte ranges of its stored form, for writes that
/// change one or two members and copy the rest as they are (the same bytes a decode and
/// re-encode would give, see `served_json_into`).
pub struct StoredMembers<'a> {
    bytes: &'a [u8],
    /// (key without quotes, value) ranges, in stored order.
    members: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl<'a> StoredMembers<'a> {
    /// The members of `stored`, if `info` is served as stored and the bytes are in the
    /// form `served_json_into` accepts (apiVersion and kind as served, metadata without
    /// resourceVersion, compact).
    pub fn of(info: &ResourceInfo, stored: &'a [u8]) -> Option<StoredMembers<'a>> {
        if api::conversion::storage_version(info) != (info.group, info.version) {
            return None;
        }
        splice::metadata_end(stored, &info.api_version(), info.kind)?;
        Some(StoredMembers {
            bytes: stored,
            members: splice::members(stored)?,
        })
    }

    /// The members of `stored` for reading values only (never for `with`): `of` without
    /// the check of the served form's metadata, which reading does not need (one scan of
    /// the bytes instead of two, for every event a field-selected watch looks at).
    pub fn for_reading(info: &ResourceInfo, stored: &'a [u8]) -> Option<StoredMembers<'a>> {
        if api::conversion::storage_version(info) != (info.group, info.version) {
            return None;
        }
        Some(StoredMembers {
            bytes: stored,
            members: splice::members(stored)?,
        })
    }

    /// The stored bytes of member `key`'s value.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.members
            .iter()
            .find(|(k, _)| &self.bytes[k.clone()] == key.as_bytes())
            .map(|(_, v)| &self.bytes[v.clone()])
    }

    /// Whether the object member `key` has a member `inner` (whatever its value).
    pub fn has_inner(&self, key: &str, inner: &str) -> Option<bool> {
        let value = self.get(key)?;
        splice::has_key(value, 0, inner.as_bytes())
    }

    /// The stored bytes of `obj[key][inner]`: `Some(None)` when `key` is absent or not an
    /// object, or has no member `inner`; None when the bytes cannot tell.
    pub fn inner(&self, key: &str, inner: &str) -> Option<Option<&'a [u8]>> {
        let Some(value) = self.get(key) else {
            return Some(None);
        };
        if value.first() != Some(&b'{') {
            return Some(None);
        }
        Some(splice::member_value(value, 0, inner.as_bytes())?.map(|r| &value[r]))
    }

    /// The object with the members in `replaced` given new encoded values (in place, or
    /// appended in the given order when absent), every other member as stored.
    pub fn with(&self, replaced: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 128);
        out.push(b'{');
        let mut done = vec![false; replaced.len()];
        for (k, v) in &self.members {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(&self.bytes[k.start - 1..k.end + 1]);
            out.push(b':');
            let key = &self.bytes[k.clone()];
            match replaced.iter().position(|(name, _)| name.as_bytes() == key) {
                Some(i) => {
                    out.extend_from_slice(replaced[i].1);
                    done[i] = true;
                }
                None => out.extend_from_slice(&self.bytes[v.clone()]),
            }
        }
        for ((name, value), done) in replaced.iter().zip(done) {
            if !done {
                if out.len() > 1 {
                    out.push(b',');
                }
                // Member names here are plain words; serde quotes them exactly anyway.
                let _ = serde_json::to_writer(&mut out, name);
                out.push(b':');
                out.extend_from_slice(value);
            }
        }
        out.push(b'}');
        out
    }
}

/// A scanner of stored object bytes, for `served_json_into`.
mod splice {
    /// The index of the `}` closing the top-level `metadata` object, if `b` is one compact
    /// JSON object (no whitespace outside strings) whose `apiVersion` and `kind` are the
    /// given strings, whose `metadata` is an object without `resourceVersion`, and none of
    /// those three keys repeats.
    pub fn metadata_end(b: &[u8], api_version: &str, kind: &str) -> Option<usize> {
        let (mut seen_api, mut seen_kind, mut meta_end) = (false, false, None);
        let mut i = expect(b, 0, b'{')?;
        if b.get(i) == Some(&b'}') {
            return None;
        }
        loop {
            let (key, after) = key(b, i)?;
            i = expect(b, after, b':')?;
            let end = value_end(b, i)?;
            match key {
                b"apiVersion" => {
                    if seen_api || !is_string(&b[i..end], api_version) {
                        return None;
                    }
                    seen_api = true;
                }
                b"kind" => {
                    if seen_kind || !is_string(&b[i..end], kind) {
                        return None;
                    }
                    seen_kind = true;
                }
                b"metadata" => {
                    if meta_end.is_some() || b[i] != b'{' || has_key(b, i, b"resourceVersion")? {
                        return None;
                    }
                    meta_end = Some(end - 1);
                }
                _ => {}
            }
            match b.get(end)? {
                b',' => i = end + 1,
                b'}' if end + 1 == b.len() => break,
                _ => return None,
            }
        }
        (seen_api && seen_kind).then_some(meta_end).flatten()
    }

    /// The (key, value) ranges of the members of the object `b`, keys without their
    /// quotes; None for keys with escapes, whitespace, or trailing bytes.
    pub fn members(b: &[u8]) -> Option<Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>> {
        let mut out = Vec::with_capacity(8);
        let mut i = expect(b, 0, b'{')?;
        if b.get(i) == Some(&b'}') {
            return (i + 1 == b.len()).then_some(out);
        }
        loop {
            let (k, after) = key(b, i)?;
            let v = expect(b, after, b':')?;
            let end = value_end(b, v)?;
            out.push((i + 1..i + 1 + k.len(), v..end));
            match b.get(end)? {
                b',' => i = end + 1,
                b'}' if end + 1 == b.len() => return Some(out),
                _ => return None,
            }
        }
    }

    fn expect(b: &[u8], i: usize, c: u8) -> Option<usize> {
        (b.get(i) == Some(&c)).then_some(i + 1)
    }

    /// `"text"` exactly, for plain text (no characters JSON escapes).
    fn is_string(token: &[u8], text: &str) -> bool {
        token.len() == text.len() + 2
            && token[0] == b'"'
            && &token[1..token.len() - 1] == text.as_bytes()
            && token[token.len() - 1] == b'"'
    }

    /// A member key at `i` without escapes: its text and the index after its quote.
    fn key(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
        let start = expect(b, i, b'"')?;
        let len = b[start..].iter().position(|&c| c == b'"' || c == b'\\')?;
        let end = start + len;
        (b[end] == b'"').then(|| (&b[start..end], end + 1))
    }

    /// Whether the object starting at `i` has the member `name` (escaped keys are never
    /// `name`, which has no characters JSON escapes).
    pub fn has_key(b: &[u8], i: usize, name: &[u8]) -> Option<bool> {
        let mut i = expect(b, i, b'{')?;
        if b.get(i) == Some(&b'}') {
            return Some(false);
        }
        loop {
            let after = string_end(b, i)?;
            if after - i == name.len() + 2 && &b[i + 1..after - 1] == name {
                return Some(true);
            }
            let v = expect(b, after, b':')?;
            let end = value_end(b, v)?;
            match b.get(end)? {
                b',' => i = end + 1,
                b'}' => return Some(false),
                _ => return None,
            }
        }
    }

    /// The value range of the member `name` of the object starting at `i` (None inside:
    /// no such member); like `has_key`, a key with escapes is never `name`.
    pub fn member_value(b: &[u8], i: usize, name: &[u8]) -> Option<Option<std::ops::Range<usize>>> {
        let mut i = expect(b, i, b'{')?;
        if b.get(i) == Some(&b'}') {
            return Some(None);
        }
        loop {
            let after = string_end(b, i)?;
            let v = expect(b, after, b':')?;
            let end = value_end(b, v)?;
            if after - i == name.len() + 2 && &b[i + 1..after - 1] == name {
                return Some(Some(v..end));
            }
            match b.get(end)? {
                b',' => i = end + 1,
                b'}' => return Some(None),
                _ => return None,
            }
        }
    }

    /// The index after the string starting at `i`.
    fn string_end(b: &[u8], i: usize) -> Option<usize> {
        let mut j = expect(b, i, b'"')?;
        loop {
            match b.get(j)? {
                b'"' => return Some(j + 1),
                b'\\' => j += 2,
                _ => j += 1,
            }
        }
    }

    /// The index after the value starting at `i` (a string, object, array, number or
    /// literal); None at whitespace or anything unbalanced.
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match b.get(j)? {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        b' ' | b'\t' | b'\n' | b'\r' => return None,
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let len = b[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']'))
                    .unwrap_or(b.len() - i);
                let token = &b[i..i + len];
                if token.is_empty() || token.iter().any(|c| c.is_ascii_whitespace()) {
                    return None;
                }
                Some(i + len)
            }
        }
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
    // Compared in place, without copies (map equality ignores member order, as `Value`'s).
    fn equal_but(a: &Map<String, Value>, b: &Map<String, Value>, ignored: &[&str]) -> bool {
        let kept = |k: &String| !ignored.contains(&k.as_str());
        a.keys().filter(|k| kept(k)).count() == b.keys().filter(|k| kept(k)).count()
            && a.iter()
                .filter(|(k, _)| kept(k))
                .all(|(k, v)| b.get(k) == Some(v))
    }
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            equal_but(a, b, &["metadata"])
                && match (a.get("metadata"), b.get("metadata")) {
                    (Some(Value::Object(x)), Some(Value::Object(y))) => {
                        equal_but(x, y, &["resourceVersion", "managedFields"])
                    }
                    (x, y) => x == y,
                }
        }
        _ => a == b,
    }
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
        .is_some_and(|v| !v.is_null())
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

    /// The JSON a write answers with is the served object's encoding.
    #[test]
    fn written_objects_answer_with_their_encoding() {
        let pods = api::registry::lookup("", "v1", "pods").unwrap();
        let events = api::registry::lookup("events.k8s.io", "v1", "events").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "é\"q"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"}, "reason": "Scheduled", "note": "n",
            "regarding": {"kind": "Pod", "name": "p"}, "eventTime": "2026-01-01T00:00:00.000000Z"});
        for (info, obj) in [(pods, pod), (events, event)] {
            let encoded = encode_owned(info, obj).unwrap();
            let kv = KeyValue {
                key: "/k".into(),
                value: encoded.bytes.clone(),
                create_revision: 4,
                mod_revision: 12,
            };
            let stored = encoded.into_served(info, &kv).unwrap();
            assert_eq!(stored.object["metadata"]["resourceVersion"], "12");
            if let Some(json) = &stored.json {
                assert_eq!(
                    json.as_ref(),
                    serde_json::to_vec(&stored.object).unwrap(),
                    "{}",
                    info.kind
                );
            } else {
                // Only a kind stored in another version answers by encoding the tree.
                assert_ne!(
                    api::conversion::storage_version(info),
                    (info.group, info.version)
                );
            }
        }
    }

    #[test]
    fn generation_ignores_metadata_and_status() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1}, "status": {"x": 2}});
        assert_eq!(spec_part(&a), spec_part(&b));
    }

    /// The splice gives exactly the bytes the decode-and-encode path gives, for objects in
    /// every form the server stores, and declines everything else.
    #[test]
    fn served_json_is_the_decoded_object_encoded() {
        let cms = api::registry::lookup("", "v1", "configmaps").unwrap();
        let pods = api::registry::lookup("", "v1", "pods").unwrap();
        let objects = [
            (
                cms,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
            ),
            (
                cms,
                json!({"metadata": {}, "kind": "ConfigMap", "apiVersion": "v1", "data": {}}),
            ),
            (
                cms,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "q\"uote\\d", "namespace": "d", "labels": {"a/b": "é ✓ 😀"},
                    "annotations": {"ctl": "\u{1}\t\n}{][,:", "empty": ""},
                    "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {".": {}}}}]},
                "data": {"k": "v", "n": "{\"nested\": [1, 2]}"}}),
            ),
            (
                pods,
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "generation": 1, "uid": "u"},
                "spec": {"containers": [{"name": "c", "image": "i", "args": [], "resources": {"requests": {"cpu": "100m"}}}],
                    "terminationGracePeriodSeconds": 30, "priority": -5, "overhead": null},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "x": 1.5e-7, "y": true}}),
            ),
        ];
        for (info, obj) in objects {
            let kv = KeyValue {
                key: "/k".into(),
                value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
                create_revision: 3,
                mod_revision: 12345,
            };
            let mut spliced = Vec::new();
            served_json_into(info, &kv.value, 12345, &mut spliced).expect("splices");
            let decoded = serde_json::to_vec(&decode(info, &kv).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(spliced).unwrap(),
                String::from_utf8(decoded).unwrap()
            );
        }
        let declined = [
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","resourceVersion":"4"}}"#.as_slice()),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"} }"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name": "a"}}"#),
            (cms, br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}"#),
            (cms, br#"{"apiVersion":"v1","metadata":{"name":"a"}}"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap"}"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":[]}"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{},"metadata":{}}"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}"#),
            (cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}x"#),
            (cms, b"not json"),
            (
                api::registry::lookup("events.k8s.io", "v1", "events").unwrap(),
                br#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"a"}}"#,
            ),
        ];
        for (info, bytes) in declined {
            let mut out = Vec::new();
            assert!(
                served_json_into(info, bytes, 7, &mut out).is_none(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn same_content_ignores_only_resource_version_and_managed_fields() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [{"m": 1}], "labels": {"x": "1"}}, "data": {"k": "v"}});
        let reordered = json!({"data": {"k": "v"}, "metadata": {"labels": {"x": "1"}, "name": "a", "resourceVersion": "2"}});
        assert!(same_content(&a, &reordered));
        let relabelled =
            json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "data": {"k": "v"}});
        assert!(!same_content(&a, &relabelled));
        let more = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}, "extra": 1});
        assert!(!same_content(&a, &more));
        let no_meta = json!({"data": {"k": "v"}});
        assert!(!same_content(&a, &no_meta));
        assert!(same_content(&no_meta, &json!({"data": {"k": "v"}})));
        assert!(!same_content(
            &json!({"metadata": {"resourceVersion": "1"}}),
            &no_meta
        ));
    }

    #[test]
    fn bad_resource_versions_are_rejected() {
        assert!(parse_resource_version("abc").is_err());
        assert!(parse_resource_version("-1").is_err());
        assert_eq!(parse_resource_version("42").unwrap(), 42);
    }
}
