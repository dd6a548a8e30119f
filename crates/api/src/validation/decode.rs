//! Decoding a request body into the typed object of its kind, the way kube-apiserver's
//! JSON serializer does: type mismatches are a 400 naming the Go struct field that could
//! not be filled, and fields the type does not have are collected (in upstream's
//! strict-decoding wording) so the apiserver can honour `fieldValidation`.
//!
//! k8s-openapi silently drops fields it does not know, so unknown fields are found by
//! walking the input against the kind's JSON schema (which k8s-openapi generates from the
//! same OpenAPI document upstream publishes). Walking the schema rather than diffing the
//! round-tripped JSON keeps explicit nulls and defaulted empties from being mistaken for
//! unknown fields, and gives the Go-style type error a path.

use std::fmt::Write as _;
use std::sync::OnceLock;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    storage,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::registry::ResourceInfo;

/// A decoded object: the normalized JSON (typed round trip) and the unknown fields found.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The object as k8s-openapi serializes it: unknown fields gone, nulls dropped.
    pub object: Value,
    /// The path of every unknown field, in upstream's strict-decoding notation
    /// (`spec.containers[0].foo`), in input order. [`Decoded::warnings`] words them.
    pub unknown_fields: Vec<String>,
}

impl Decoded {
    /// One `unknown field "spec.foo"` per unknown field: the `Warning` headers upstream
    /// sends under `fieldValidation=Warn`.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown_fields
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect()
    }

    /// `strict decoding error: unknown field "a", unknown field "b"`: the detail upstream
    /// puts in the 400 under `fieldValidation=Strict`, or None when nothing is unknown.
    pub fn strict_error(&self) -> Option<String> {
        strict_error_message(&self.unknown_fields)
    }
}

/// [`Decoded::strict_error`] for a list of unknown-field paths.
pub fn strict_error_message(unknown_fields: &[String]) -> Option<String> {
    if unknown_fields.is_empty() {
        None
    } else {
        let words: Vec<String> = unknown_fields
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        Some(format!("strict decoding error: {}", words.join(", ")))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body cannot be turned into the kind: served as 400 BadRequest. The string is
    /// the detail (`json: cannot unmarshal string into Go struct field ...`); upstream's
    /// message is [`DecodeError::message`]: `<Kind> in version "<v>" cannot be handled as
    /// a <Kind>: <detail>`.
    #[error("{0}")]
    BadRequest(String),
    /// No typed decoder for this group/version/kind (a programming error in the table).
    #[error("no decoder for {0}")]
    UnsupportedKind(String),
}

impl DecodeError {
    /// The full 400 message upstream gives for this error when decoding `kind`.
    pub fn message(&self, kind: &str, version: &str) -> String {
        match self {
            DecodeError::BadRequest(d) => {
                format!("{kind} in version \"{version}\" cannot be handled as a {kind}: {d}")
            }
            DecodeError::UnsupportedKind(_) => self.to_string(),
        }
    }
}

/// Decode `obj` as the kind `info` names. See the module docs. `apiVersion` and `kind`
/// in the body are not checked here (the apiserver compares them with the URL first).
pub fn decode(info: &ResourceInfo, obj: &Value) -> Result<Decoded, DecodeError> {
    decode_kind(info.group, info.version, info.kind, obj)
}

/// Like [`decode`] but keyed by group/version/kind, so subresource bodies (autoscaling/v1
/// Scale, v1 Binding, policy/v1 Eviction) decode the same way.
pub fn decode_kind(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
) -> Result<Decoded, DecodeError> {
    // Each arm owns its own schema cache: schemas are constant, generated once per kind.
    macro_rules! kinds {
        ($( ($g:literal, $v:literal, $k:literal) => $t:ty ),* $(,)?) => {
            match (group, version, kind) {
                $( ($g, $v, $k) => {
                    static SCHEMA: OnceLock<Value> = OnceLock::new();
                    let schema = SCHEMA.get_or_init(schema_of::<$t>);
                    decode_typed::<$t>(version, kind, schema, obj)
                } )*
                _ => Err(DecodeError::UnsupportedKind(format!("{group}/{version}, Kind={kind}"))),
            }
        };
    }
    kinds! {
        ("", "v1", "Namespace") => core::v1::Namespace,
        ("", "v1", "Pod") => core::v1::Pod,
        ("", "v1", "Service") => core::v1::Service,
        ("", "v1", "Endpoints") => core::v1::Endpoints,
        ("", "v1", "ConfigMap") => core::v1::ConfigMap,
        ("", "v1", "Secret") => core::v1::Secret,
        ("", "v1", "Node") => core::v1::Node,
        ("", "v1", "Event") => core::v1::Event,
        ("", "v1", "ServiceAccount") => core::v1::ServiceAccount,
        ("", "v1", "PersistentVolume") => core::v1::PersistentVolume,
        ("", "v1", "PersistentVolumeClaim") => core::v1::PersistentVolumeClaim,
        ("", "v1", "LimitRange") => core::v1::LimitRange,
        ("", "v1", "ResourceQuota") => core::v1::ResourceQuota,
        ("", "v1", "Binding") => core::v1::Binding,
        ("", "v1", "PodTemplate") => core::v1::PodTemplate,
        ("", "v1", "ReplicationController") => core::v1::ReplicationController,
        ("apps", "v1", "Deployment") => apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => apps::v1::StatefulSet,
        ("apps", "v1", "DaemonSet") => apps::v1::DaemonSet,
        ("apps", "v1", "ControllerRevision") => apps::v1::ControllerRevision,
        ("batch", "v1", "Job") => batch::v1::Job,
        ("batch", "v1", "CronJob") => batch::v1::CronJob,
        ("networking.k8s.io", "v1", "Ingress") => networking::v1::Ingress,
        ("networking.k8s.io", "v1", "IngressClass") => networking::v1::IngressClass,
        ("networking.k8s.io", "v1", "NetworkPolicy") => networking::v1::NetworkPolicy,
        ("coordination.k8s.io", "v1", "Lease") => coordination::v1::Lease,
        ("discovery.k8s.io", "v1", "EndpointSlice") => discovery::v1::EndpointSlice,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => autoscaling::v2::HorizontalPodAutoscaler,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => autoscaling::v1::HorizontalPodAutoscaler,
        ("autoscaling", "v1", "Scale") => autoscaling::v1::Scale,
        ("storage.k8s.io", "v1", "StorageClass") => storage::v1::StorageClass,
        ("policy", "v1", "PodDisruptionBudget") => policy::v1::PodDisruptionBudget,
        ("policy", "v1", "Eviction") => policy::v1::Eviction,
        ("rbac.authorization.k8s.io", "v1", "Role") => rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => rbac::v1::ClusterRoleBinding,
        ("events.k8s.io", "v1", "Event") => events::v1::Event,
    }
}

fn schema_of<T: k8s_openapi::schemars::JsonSchema>() -> Value {
    let schema = k8s_openapi::schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut v = schema.to_value();
    strip_descriptions(&mut v);
    v
}

/// Descriptions are most of a schema's size and decoding never reads them.
fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("description").is_some_and(Value::is_string) {
                m.remove("description");
            }
            for child in m.values_mut() {
                strip_descriptions(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

fn decode_typed<T: DeserializeOwned + Serialize>(
    version: &str,
    kind: &str,
    schema: &Value,
    obj: &Value,
) -> Result<Decoded, DecodeError> {
    let cannot = DecodeError::BadRequest;
    let Some(_) = obj.as_object() else {
        return Err(cannot(format!(
            "json: cannot unmarshal {} into Go value of type {version}.{kind}",
            json_kind(obj)
        )));
    };

    let no_defs = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&no_defs);
    let mut walker = Walker {
        defs,
        unknown: Vec::new(),
        type_error: None,
        quantities: Vec::new(),
        ptr: String::new(),
    };
    walker.walk(schema, obj, &mut String::new(), &mut String::new(), kind);
    if let Some(e) = walker.type_error {
        return Err(cannot(e));
    }
    // Deserialized from the borrowed tree: the same visitor calls as from an owned
    // `Value`, without copying the object first.
    let typed = T::deserialize(obj).map_err(|e| cannot(e.to_string()))?;
    let mut object = serde_json::to_value(&typed)
        .map_err(|e| DecodeError::BadRequest(format!("cannot encode {kind}: {e}")))?;
    // Upstream re-encodes every quantity in canonical form (`0.5` → `500m`).
    for ptr in &walker.quantities {
        if let Some(q) = object.pointer_mut(ptr) {
            let text = match &*q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            *q = Value::String(crate::quantity::canonicalize(&text));
        }
    }
    Ok(Decoded {
        object,
        unknown_fields: walker.unknown,
    })
}

/// The JSON kind names Go's decoder uses in "cannot unmarshal X".
fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

struct Walker<'a> {
    defs: &'a Map<String, Value>,
    /// Paths in upstream's strict form (`spec.containers[0].foo`).
    unknown: Vec<String>,
    /// The first type mismatch, as Go's json package words it (Go reports the first too).
    type_error: Option<String>,
    /// JSON pointers of every quantity, to canonicalize after the round trip.
    quantities: Vec<String>,
    /// The JSON pointer of the value being walked.
    ptr: String,
}

/// A JSON pointer from a strict-decoding path is awkward to rebuild, so the walker keeps
/// the pointer alongside: this escapes one token.
fn push_pointer_token(ptr: &mut String, key: &str) {
    ptr.push('/');
    for c in key.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

impl<'a> Walker<'a> {
    /// Follow a `$ref` to its definition; returns the schema and, for named types, the
    /// definition name (`io.k8s.api.apps.v1.DeploymentSpec`).
    fn resolve<'s>(&self, schema: &'s Value) -> (&'s Value, Option<&'s str>)
    where
        'a: 's,
    {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            if let Some(def) = self.defs.get(name) {
                return (def, Some(name));
            }
        }
        (schema, None)
    }

    /// The Go type upstream would name in a type error for this schema.
    fn go_type(&self, schema: &Value) -> String {
        let (s, name) = self.resolve(schema);
        if let Some(name) = name {
            let mut parts = name.rsplit('.');
            let short = parts.next().unwrap_or(name);
            let pkg = parts.next().unwrap_or("v1");
            return format!("{pkg}.{short}");
        }
        match s.get("type").and_then(Value::as_str) {
            Some("string") => "string".into(),
            Some("integer") => s
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("int64")
                .to_string(),
            Some("number") => "float64".into(),
            Some("boolean") => "bool".into(),
            Some("array") => match s.get("items") {
                Some(items) => format!("[]{}", self.go_type(items)),
                None => "[]interface {}".into(),
            },
            Some("object") => match s.get("additionalProperties") {
                Some(ap) if ap.is_object() => format!("map[string]{}", self.go_type(ap)),
                _ => "map[string]interface {}".into(),
            },
            _ => "interface {}".into(),
        }
    }

    /// `path` is the strict-decoding path (with indices); `go_path` the Go field path (no
    /// indices); `go_struct` the innermost Go struct holding the current field.
    fn walk(
        &mut self,
        schema: &Value,
        value: &Value,
        path: &mut String,
        go_path: &mut String,
        go_struct: &str,
    ) {
        if value.is_null() {
            // Go leaves the zero value for null; never an error, never unknown.
            return;
        }
        let (s, name) = self.resolve(schema);
        let mismatch = |this: &mut Self, what: String| {
            if this.type_error.is_none() {
                // Named only when there is an error: naming costs a string per node.
                let go_type = this.go_type(schema);
                let field = if go_path.is_empty() {
                    format!("Go value of type {go_type}")
                } else {
                    format!("Go struct field {go_struct}.{go_path} of type {go_type}")
                };
                this.type_error = Some(format!("json: cannot unmarshal {what} into {field}"));
            }
        };
        if s.get("x-kubernetes-int-or-string").is_some() {
            let ok = value.is_string() || value.is_i64() || value.is_u64();
            // Quantity also takes plain JSON numbers (YAML `cpu: 0.5`).
            let quantity = name.is_some_and(|n| n.ends_with("resource.Quantity"));
            if !ok && !(quantity && value.is_number()) {
                mismatch(self, json_kind(value));
            } else if quantity {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match crate::quantity::Quantity::parse(&text) {
                    // Go's decoder stops at the first error a field's UnmarshalJSON returns.
                    Err(e) if self.type_error.is_none() => self.type_error = Some(e.to_string()),
                    Err(_) => {}
                    Ok(_) => self.quantities.push(self.ptr.clone()),
                }
            }
            return;
        }
        match s.get("type").and_then(Value::as_str) {
            Some("string") if !value.is_string() => {
                mismatch(self, json_kind(value));
            }
            Some("boolean") if !value.is_boolean() => {
                mismatch(self, json_kind(value));
            }
            Some("number") if !value.is_number() => {
                mismatch(self, json_kind(value));
            }
            Some("integer") => {
                let fits = match s.get("format").and_then(Value::as_str) {
                    Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                    _ => value.is_i64(),
                };
                if !fits {
                    match value {
                        Value::Number(n) => mismatch(self, format!("number {n}")),
                        _ => mismatch(self, json_kind(value)),
                    }
                }
            }
            Some("array") => {
                let Some(items) = value.as_array() else {
                    mismatch(self, json_kind(value));
                    return;
                };
                let Some(item_schema) = s.get("items") else {
                    return;
                };
                for (i, item) in items.iter().enumerate() {
                    let before = path.len();
                    let _ = write!(path, "[{i}]");
                    let pb = self.ptr.len();
                    let _ = write!(self.ptr, "/{i}");
                    self.walk(item_schema, item, path, go_path, go_struct);
                    self.ptr.truncate(pb);
                    path.truncate(before);
                }
            }
            Some("object") => {
                let Some(map) = value.as_object() else {
                    mismatch(self, json_kind(value));
                    return;
                };
                let inner_struct: &str = name
                    .map(|n| n.rsplit('.').next().unwrap_or(n))
                    .unwrap_or(go_struct);
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    for (key, v) in map {
                        let (pb, gb) = (path.len(), go_path.len());
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        match props.get(key) {
                            Some(child) => {
                                if !go_path.is_empty() {
                                    go_path.push('.');
                                }
                                go_path.push_str(key);
                                let qb = self.ptr.len();
                                push_pointer_token(&mut self.ptr, key);
                                self.walk(child, v, path, go_path, inner_struct);
                                self.ptr.truncate(qb);
                            }
                            None => self.unknown.push(path.clone()),
                        }
                        path.truncate(pb);
                        go_path.truncate(gb);
                    }
                } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                    for (key, v) in map {
                        let pb = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        let qb = self.ptr.len();
                        push_pointer_token(&mut self.ptr, key);
                        self.walk(ap, v, path, go_path, go_struct);
                        self.ptr.truncate(qb);
                        path.truncate(pb);
                    }
                }
                // An object schema with neither is free-form (RawExtension, FieldsV1).
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(group: &str, kind: &str, obj: Value) -> Result<Decoded, DecodeError> {
        decode_kind(group, "v1", kind, &obj)
    }

    #[test]
    fn clean_objects_have_no_unknown_fields() {
        let d = dec(
            "apps",
            "Deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"a": "b"}, "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx", "args": [],
                            "resources": {"limits": {"cpu": 0.5, "memory": "1Gi"}},
                            "ports": [{"containerPort": 80}]}],
                            "nodeSelector": null}}}}),
        )
        .unwrap();
        assert_eq!(d.unknown_fields, Vec::<String>::new());
        assert_eq!(d.object["spec"]["replicas"], json!(2));
        assert_eq!(
            d.object["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert!(d.object["spec"]["template"]["spec"]
            .get("nodeSelector")
            .is_none());
    }

    #[test]
    fn unknown_fields_are_reported_with_upstream_paths() {
        let d = dec(
            "",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
                "spec": {"bar": true, "containers": [{"name": "c", "image": "i", "foo": "x"}]}}),
        )
        .unwrap();
        assert_eq!(
            d.unknown_fields,
            vec!["metadata.bogus", "spec.bar", "spec.containers[0].foo"]
        );
        assert_eq!(d.warnings()[2], "unknown field \"spec.containers[0].foo\"");
        assert_eq!(
            d.strict_error().unwrap(),
            "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.bar\", unknown field \"spec.containers[0].foo\""
        );
        assert!(d.object["spec"]["containers"][0].get("foo").is_none());
    }

    #[test]
    fn type_mismatches_name_the_go_struct_field() {
        let cases = [
            (
                "apps",
                "Deployment",
                json!({"spec": {"replicas": "three"}}),
                "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": "x"}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container",
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1.5}]}]}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
            ),
            (
                "",
                "ConfigMap",
                json!({"metadata": {"labels": {"a": 1}}}),
                "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}}),
                "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": "x"}),
                "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field Deployment.spec of type v1.DeploymentSpec",
            ),
        ];
        for (group, kind, obj, want) in cases {
            match dec(group, kind, obj) {
                Err(e @ DecodeError::BadRequest(_)) => assert_eq!(e.message(kind, "v1"), want),
                other => panic!("{kind}: expected BadRequest, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_registered_kind_decodes() {
        for r in crate::registry::RESOURCES {
            let obj =
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            let d = decode(r, &obj).unwrap_or_else(|e| panic!("{}: {e}", r.kind));
            assert!(
                d.unknown_fields.is_empty(),
                "{}: {:?}",
                r.kind,
                d.unknown_fields
            );
            assert_eq!(d.object["metadata"]["name"], json!("x"));
        }
    }
}
