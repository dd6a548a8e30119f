//! Validation of objects on create and update, with kube-apiserver's field paths, cause
//! types and messages (`field.ErrorList` in upstream), plus request-body decoding
//! (`decode`). Everything here is a pure function of the JSON objects; the apiserver
//! turns a non-empty cause list into a 422 Invalid `Status` using [`status_message`].
//!
//! Submodules follow upstream's split: `names` (apimachinery's name/label/port syntax
//! checks), `meta` (ObjectMeta and label selectors), `pod` (PodSpec, shared by every
//! workload template), `workloads` (apps and batch), `core` (the other core/v1 kinds) and
//! `other` (networking, rbac, policy, storage, autoscaling, coordination, discovery,
//! events).

mod core;
pub mod decode;
mod meta;
pub mod names;
mod other;
mod pod;
mod workloads;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::registry::ResourceInfo;

pub use decode::{decode, decode_kind, strict_error_message, DecodeError, Decoded};

/// The cause types upstream reports in `status.details.causes[].reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CauseType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
    Internal,
}

impl CauseType {
    /// The wire name (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            CauseType::Required => "FieldValueRequired",
            CauseType::Invalid => "FieldValueInvalid",
            CauseType::NotSupported => "FieldValueNotSupported",
            CauseType::Duplicate => "FieldValueDuplicate",
            CauseType::Forbidden => "FieldValueForbidden",
            CauseType::TooLong => "FieldValueTooLong",
            CauseType::TooMany => "FieldValueTooMany",
            CauseType::NotFound => "FieldValueNotFound",
            CauseType::Internal => "InternalError",
        }
    }

    /// Same as [`CauseType::reason`].
    pub fn as_str(self) -> &'static str {
        self.reason()
    }

    /// The words that start the message (`field.ErrorType.String()` upstream).
    fn words(self) -> &'static str {
        match self {
            CauseType::Required => "Required value",
            CauseType::Invalid => "Invalid value",
            CauseType::NotSupported => "Unsupported value",
            CauseType::Duplicate => "Duplicate value",
            CauseType::Forbidden => "Forbidden",
            CauseType::TooLong => "Too long",
            CauseType::TooMany => "Too many",
            CauseType::NotFound => "Not found",
            CauseType::Internal => "Internal error",
        }
    }
}

impl Serialize for CauseType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.reason())
    }
}

/// One validation failure: a `StatusCause` (`reason`, `field`, `message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub reason: CauseType,
    pub field: String,
    /// Upstream's `ErrorBody()`: `Invalid value: "x": detail`, `Required value`, ...
    pub message: String,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A rejected value as upstream prints it: Go's `%q` for strings, `%v` for numbers and
/// bools, `%#v` for everything else (pre-rendered by the caller).
#[derive(Clone, Debug, PartialEq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Already rendered the way Go's `%#v` would (`map[string]string{"a":"b"}`).
    Go(String),
    Null,
}

impl BadValue {
    /// The value of a JSON field, rendered as upstream renders the Go value it decoded to.
    pub fn json(v: &Value) -> BadValue {
        match v {
            Value::Null => BadValue::Null,
            Value::Bool(b) => BadValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => BadValue::Int(i),
                None => BadValue::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => BadValue::Str(s.clone()),
            Value::Object(m) if m.values().all(Value::is_string) => {
                BadValue::Go(go_string_map(Some(v)))
            }
            other => BadValue::Go(other.to_string()),
        }
    }

    fn render(&self) -> String {
        match self {
            BadValue::Str(s) => go_quote(s),
            BadValue::Int(i) => i.to_string(),
            BadValue::Float(f) => f.to_string(),
            BadValue::Bool(b) => b.to_string(),
            BadValue::Go(s) => s.clone(),
            BadValue::Null => "\"null\"".into(),
        }
    }
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<&String> for BadValue {
    fn from(s: &String) -> Self {
        BadValue::Str(s.clone())
    }
}
impl From<i64> for BadValue {
    fn from(i: i64) -> Self {
        BadValue::Int(i)
    }
}
impl From<i32> for BadValue {
    fn from(i: i32) -> Self {
        BadValue::Int(i64::from(i))
    }
}
impl From<usize> for BadValue {
    fn from(i: usize) -> Self {
        BadValue::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<bool> for BadValue {
    fn from(b: bool) -> Self {
        BadValue::Bool(b)
    }
}
impl From<&Value> for BadValue {
    fn from(v: &Value) -> Self {
        BadValue::json(v)
    }
}

/// Go's `strconv.Quote`, as upstream messages quote values.
pub(crate) fn go_quote(s: &str) -> String {
    crate::selectors::go_quote(s)
}

/// Go's `%#v` of a `map[string]string` (keys sorted, as fmt prints maps).
pub(crate) fn go_string_map(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, &str)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// The list being built by a validator, with upstream's `field.*` constructors.
#[derive(Debug, Default)]
pub(crate) struct Errs(pub Vec<Cause>);

impl Errs {
    fn push(&mut self, reason: CauseType, field: &str, message: String) {
        self.0.push(Cause {
            reason,
            field: field.to_string(),
            message,
        });
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        }
    }

    pub fn required(&mut self, field: &str, detail: &str) {
        let m = Self::with_detail(CauseType::Required.words().into(), detail);
        self.push(CauseType::Required, field, m);
    }

    pub fn invalid(&mut self, field: &str, value: impl Into<BadValue>, detail: &str) {
        let head = format!("{}: {}", CauseType::Invalid.words(), value.into().render());
        self.push(CauseType::Invalid, field, Self::with_detail(head, detail));
    }

    pub fn not_supported(&mut self, field: &str, value: impl Into<BadValue>, supported: &[&str]) {
        let head = format!(
            "{}: {}",
            CauseType::NotSupported.words(),
            value.into().render()
        );
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let q: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", q.join(", "))
        };
        self.push(
            CauseType::NotSupported,
            field,
            Self::with_detail(head, &detail),
        );
    }

    pub fn duplicate(&mut self, field: &str, value: impl Into<BadValue>) {
        let m = format!(
            "{}: {}",
            CauseType::Duplicate.words(),
            value.into().render()
        );
        self.push(CauseType::Duplicate, field, m);
    }

    pub fn not_found(&mut self, field: &str, value: impl Into<BadValue>) {
        let m = format!("{}: {}", CauseType::NotFound.words(), value.into().render());
        self.push(CauseType::NotFound, field, m);
    }

    pub fn forbidden(&mut self, field: &str, detail: &str) {
        let m = Self::with_detail(CauseType::Forbidden.words().into(), detail);
        self.push(CauseType::Forbidden, field, m);
    }

    pub fn too_long(&mut self, field: &str, max: usize) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        let m = format!(
            "{}: may not be more than {max} {unit}",
            CauseType::TooLong.words()
        );
        self.push(CauseType::TooLong, field, m);
    }

    pub fn too_many(&mut self, field: &str, actual: usize, max: usize) {
        let m = format!(
            "{}: {actual}: must have at most {max} items",
            CauseType::TooMany.words()
        );
        self.push(CauseType::TooMany, field, m);
    }

    /// One `Invalid` per message, the way upstream reports `IsDNS1123Label` & co.
    pub fn invalid_each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.invalid(field, value, &m);
        }
    }

    /// `ValidateNonnegativeField`.
    pub fn non_negative(&mut self, field: &str, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64) {
            if n < 0 {
                self.invalid(field, n, "must be greater than or equal to 0");
            }
        }
    }

    /// `ValidateImmutableField`.
    pub fn immutable(&mut self, field: &str, new: Option<&Value>, old: Option<&Value>) {
        if !json_eq_null(new, old) {
            let v = new.map(BadValue::json).unwrap_or(BadValue::Null);
            self.invalid(field, v, "field is immutable");
        }
    }
}

/// Equality where a missing field and an explicit null (or empty list/map) are the same,
/// as Go's zero values make them.
pub(crate) fn json_eq_null(a: Option<&Value>, b: Option<&Value>) -> bool {
    fn empty(v: Option<&Value>) -> bool {
        match v {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        }
    }
    if empty(a) && empty(b) {
        return true;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| json_eq_null(x.get(k), y.get(k)))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq_null(Some(p), Some(q)))
        }
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Small JSON accessors so validators read like the Go they mirror.
pub(crate) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

pub(crate) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

pub(crate) fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

pub(crate) fn get_arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn get_obj<'a>(
    v: &'a Value,
    path: &[&str],
) -> Option<&'a serde_json::Map<String, Value>> {
    get(v, path).and_then(Value::as_object)
}

/// How a kind's `metadata.name` is checked (upstream's `ValidateNameFunc` per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

fn name_rule(info: &ResourceInfo) -> NameRule {
    match (info.group, info.kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        // Events are named `<object>.<hex>` and only need to be path segments.
        ("", "Event") | ("events.k8s.io", "Event") => NameRule::Subdomain,
        ("", "Node") => NameRule::Subdomain,
        _ => NameRule::Subdomain,
    }
}

/// Validate a new object of the kind `info`. Run after decoding and defaulting.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    meta::validate_object_meta(&mut e, info, obj, name_rule(info));
    validate_kind(&mut e, info, obj, None);
    e.0
}

/// Validate an update of `old` to `new` (both full objects, `new` already defaulted).
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    meta::validate_object_meta(&mut e, info, new, name_rule(info));
    meta::validate_object_meta_update(&mut e, new, old);
    validate_kind(&mut e, info, new, Some(old));
    e.0
}

/// Validate a write through the `status` subresource: `new` is `old` with only its status
/// replaced (the status strategy has copied everything else back), so what was valid of
/// the rest when `old` was written still is. A Pod's checks are all of its spec and
/// metadata (none look at its status), so they are not run again: a kubelet's status
/// write would otherwise re-validate every container of the spec. Other kinds, whose
/// checks may read their status, are validated whole.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    match (info.group, info.kind) {
        ("", "Pod") => {
            let mut e = Errs::default();
            meta::validate_object_meta_update(&mut e, new, old);
            e.0
        }
        _ => validate_update(info, new, old),
    }
}

fn validate_kind(e: &mut Errs, info: &ResourceInfo, obj: &Value, old: Option<&Value>) {
    match (info.group, info.kind) {
        ("", "Pod") => pod::validate_pod(e, obj, old),
        ("", "Service") => core::validate_service(e, obj, old),
        ("", "ConfigMap") => core::validate_config_map(e, obj, old),
        ("", "Secret") => core::validate_secret(e, obj, old),
        ("", "Namespace") => core::validate_namespace(e, obj, old),
        ("", "Node") => core::validate_node(e, obj, old),
        ("", "Endpoints") => core::validate_endpoints(e, obj),
        ("", "ServiceAccount") => {}
        ("", "PersistentVolume") => core::validate_pv(e, obj, old),
        ("", "PersistentVolumeClaim") => core::validate_pvc(e, obj, old),
        ("", "LimitRange") => core::validate_limit_range(e, obj),
        ("", "ResourceQuota") => core::validate_resource_quota(e, obj),
        ("", "Event") => core::validate_event(e, obj),
        ("apps", "Deployment") => workloads::validate_deployment(e, obj, old),
        ("apps", "ReplicaSet") => workloads::validate_replica_set(e, obj, old),
        ("apps", "StatefulSet") => workloads::validate_stateful_set(e, obj, old),
        ("apps", "DaemonSet") => workloads::validate_daemon_set(e, obj, old),
        ("apps", "ControllerRevision") => workloads::validate_controller_revision(e, obj, old),
        ("batch", "Job") => workloads::validate_job(e, obj, old),
        ("batch", "CronJob") => workloads::validate_cron_job(e, obj, old),
        ("networking.k8s.io", "Ingress") => other::validate_ingress(e, obj),
        ("networking.k8s.io", "IngressClass") => other::validate_ingress_class(e, obj, old),
        ("networking.k8s.io", "NetworkPolicy") => other::validate_network_policy(e, obj),
        ("coordination.k8s.io", "Lease") => other::validate_lease(e, obj),
        ("discovery.k8s.io", "EndpointSlice") => other::validate_endpoint_slice(e, obj, old),
        ("autoscaling", "HorizontalPodAutoscaler") => other::validate_hpa(e, obj, info.version),
        ("storage.k8s.io", "StorageClass") => other::validate_storage_class(e, obj, old),
        ("policy", "PodDisruptionBudget") => other::validate_pdb(e, obj),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            other::validate_role(e, obj, info.namespaced)
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            other::validate_role_binding(e, obj, old, info.kind == "RoleBinding")
        }
        ("events.k8s.io", "Event") => other::validate_events_event(e, obj),
        _ => {}
    }
}

/// `Deployment.apps` / `Pod`: the qualified kind upstream puts in 422 messages.
pub fn qualified_kind(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.kind.to_string()
    } else {
        format!("{}.{}", info.kind, info.group)
    }
}

/// The 422 `Status.message` upstream builds (`errors.NewInvalid`): `kind` is the
/// qualified kind ([`qualified_kind`], e.g. `Deployment.apps`, `Pod`). One cause is
/// printed bare, several as `[a, b]`; identical causes are printed once, as upstream's
/// aggregate does.
pub fn status_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let mut seen = std::collections::HashSet::new();
    let msgs: Vec<String> = causes
        .iter()
        .map(Cause::to_string)
        .filter(|m| seen.insert(m.clone()))
        .collect();
    let head = format!("{kind} {} is invalid", go_quote(name));
    match msgs.len() {
        0 => head,
        1 => format!("{head}: {}", msgs[0]),
        _ => format!("{head}: [{}]", msgs.join(", ")),
    }
}

/// A quantity string as a float (`500m` → 0.5, `1Gi` → 1073741824), or None when it is
/// not a quantity. Good enough for comparisons such as requests ≤ limits.
pub fn parse_quantity_value(s: &str) -> Option<f64> {
    pod::parse_quantity(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::lookup_kind;
    use serde_json::json;

    pub fn info(group: &str, kind: &str) -> &'static ResourceInfo {
        let version = if group == "autoscaling" { "v2" } else { "v1" };
        lookup_kind(group, version, kind).expect("kind in registry")
    }

    /// `field: message` lines for compact table assertions.
    pub fn lines(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(Cause::to_string).collect()
    }

    #[test]
    fn status_message_matches_upstream() {
        let one = vec![Cause {
            reason: CauseType::Invalid,
            field: "spec.template.metadata.labels".into(),
            message: "Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`".into(),
        }];
        assert_eq!(
            status_message("Deployment.apps", "web", &one),
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        );
        let mut two = one.clone();
        two.push(Cause {
            reason: CauseType::Required,
            field: "spec.selector".into(),
            message: "Required value".into(),
        });
        two.push(two[1].clone());
        assert_eq!(
            status_message("Deployment.apps", "web", &two),
            "Deployment.apps \"web\" is invalid: [spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`, spec.selector: Required value]"
        );
    }

    #[test]
    fn cause_types_serialize_as_upstream_reasons() {
        let c = Cause {
            reason: CauseType::NotSupported,
            field: "f".into(),
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"reason": "FieldValueNotSupported", "field": "f", "message": "m"})
        );
    }

    #[test]
    fn error_bodies_match_upstream() {
        let mut e = Errs::default();
        e.not_supported(
            "spec.restartPolicy",
            "Foo",
            &["Always", "OnFailure", "Never"],
        );
        e.required("spec.containers", "");
        e.invalid("spec.replicas", -1, "must be greater than or equal to 0");
        e.duplicate("spec.ports[1].name", "http");
        e.too_long("metadata.annotations", 262144);
        assert_eq!(
            lines(&e.0),
            vec![
                "spec.restartPolicy: Unsupported value: \"Foo\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.containers: Required value",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.ports[1].name: Duplicate value: \"http\"",
                "metadata.annotations: Too long: may not be more than 262144 bytes",
            ]
        );
    }
}
