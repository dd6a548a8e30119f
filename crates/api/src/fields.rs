//! Field selectors (`?fieldSelector=`) as upstream apimachinery parses them
//! (`k8s.io/apimachinery/pkg/fields`), plus the per-kind table of which fields kube-apiserver
//! lets a client select on, how it names them (field label conversion) and what value each
//! has for a stored object (the registries' `ToSelectableFields`).
//!
//! Upstream only accepts a field if the kind's conversion function knows it; the error text
//! differs by kind (a generic one for kinds without their own function), and the apiserver
//! serves it as a 400 BadRequest. Both behaviours are reproduced here.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::selectors::{go_quote, SelectorError};

/// The operator of one field term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOp {
    /// `=`
    Equals,
    /// `==` (same meaning as `=`, printed back as `=` like upstream)
    DoubleEquals,
    /// `!=`
    NotEquals,
}

/// One `field op value` term; `value` is unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

impl FieldRequirement {
    fn holds(&self, actual: &str) -> bool {
        match self.op {
            FieldOp::Equals | FieldOp::DoubleEquals => actual == self.value,
            FieldOp::NotEquals => actual != self.value,
        }
    }
}

/// A parsed field selector: the AND of its terms (sorted as upstream sorts the raw terms).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Parses `f=v,f2!=v2` with upstream's escaping (`\,` `\=` `\\` in values) and errors.
    pub fn parse(selector: &str) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_terms(selector);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs)?;
            terms.push(FieldRequirement {
                field: lhs.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn terms(&self) -> &[FieldRequirement] {
        &self.terms
    }

    /// The value a `field=value` (or `==`) term requires, if there is one: lets the store
    /// narrow a list by name or node before matching.
    pub fn requires_exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.op != FieldOp::NotEquals)
            .map(|t| t.value.as_str())
    }

    /// Whether every field is selectable for this kind; the error is upstream's message
    /// (served as 400 BadRequest), e.g. `field label not supported: spec.foo`.
    pub fn validate_for(&self, info: &ResourceInfo) -> Result<(), String> {
        self.transform_for(info).map(|_| ())
    }

    /// The selector with field names converted to the canonical ones upstream matches on
    /// (`spec.host` → `spec.nodeName` for pods, `regarding.name` → `involvedObject.name`
    /// for events.k8s.io), or the validation error.
    pub fn transform_for(&self, info: &ResourceInfo) -> Result<FieldSelector, String> {
        let spec = spec_for(info);
        let mut terms = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            let field = convert_label(&spec, &t.field)?;
            terms.push(FieldRequirement {
                field,
                op: t.op,
                value: t.value.clone(),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether a stored object of this kind satisfies every term. A field the kind does not
    /// support reads as "" (callers validate first with [`FieldSelector::validate_for`]).
    pub fn matches(&self, info: &ResourceInfo, obj: &Value) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        let spec = spec_for(info);
        let set = field_set(info, obj);
        self.terms.iter().all(|t| {
            let canonical = convert_label(&spec, &t.field).unwrap_or_default();
            let actual = set.get(&canonical).map(String::as_str).unwrap_or("");
            t.holds(actual)
        })
    }
}

impl FieldSelector {
    /// [`FieldSelector::matches`] for an object at hand only as its stored JSON, when every
    /// term's field is a plain member of a member for this kind ([`plain_member`]):
    /// `read(member, inner)` gives the raw JSON of `obj[member][inner]` (`Some(None)` when
    /// it is absent, or `member` is not an object) or None when it cannot tell. None when
    /// some field is computed otherwise or `read` could not tell: then decode and call
    /// `matches`. Lets a watch on `spec.nodeName=` (every kubelet's) decide without
    /// decoding the pod.
    pub fn matches_plain<'a>(
        &self,
        info: &ResourceInfo,
        mut read: impl FnMut(&str, &str) -> Option<Option<&'a [u8]>>,
    ) -> Option<bool> {
        let spec = spec_for(info);
        for t in &self.terms {
            let canonical = convert_label(&spec, &t.field).ok()?;
            let (member, inner) = plain_member(info, &canonical)?;
            let actual = match read(member, inner)? {
                None => String::new(),
                Some(raw) => text_of(&serde_json::from_slice(raw).ok()?),
            };
            if !t.holds(&actual) {
                return Some(false);
            }
        }
        Some(true)
    }
}

/// The selectable fields whose value [`field_set`] reads as `text(obj[member][inner])`.
fn plain_member(info: &ResourceInfo, canonical: &str) -> Option<(&'static str, &'static str)> {
    let (member, inner) = match canonical {
        "metadata.name" => ("metadata", "name"),
        "metadata.namespace" if info.namespaced => ("metadata", "namespace"),
        _ => match (info.group, info.kind, canonical) {
            ("", "Pod", "spec.nodeName") => ("spec", "nodeName"),
            ("", "Pod", "spec.restartPolicy") => ("spec", "restartPolicy"),
            ("", "Pod", "spec.schedulerName") => ("spec", "schedulerName"),
            ("", "Pod", "spec.serviceAccountName") => ("spec", "serviceAccountName"),
            ("", "Pod", "status.phase") => ("status", "phase"),
            ("", "Pod", "status.nominatedNodeName") => ("status", "nominatedNodeName"),
            _ => return None,
        },
    };
    Some((member, inner))
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = if t.op == FieldOp::NotEquals {
                    "!="
                } else {
                    "="
                };
                format!("{}{}{}", t.field, op, escape_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Upstream `fields.EscapeValue`.
pub fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Splits on commas that are not backslash-escaped (the backslash stays in the term).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The first operator occurrence splits the term; `!=` and `==` are tried before `=`.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::DoubleEquals),
            ("=", FieldOp::Equals),
        ] {
            if rest.starts_with(op) {
                return Some((&term[..i], kind, &rest[op.len()..]));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, i.e. as its number.
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )))
            }
            c => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Per-kind support.

/// How a kind's field label conversion behaves upstream.
struct KindSpec {
    /// Accepted labels, with the canonical name each converts to.
    accepted: &'static [(&'static str, &'static str)],
    /// How the rejection message is worded.
    error: ErrorStyle,
}

enum ErrorStyle {
    /// `field label not supported: <label>` (core kinds with their own conversion func).
    NotSupported,
    /// `field label "<label>" not supported for batchv1.Job`.
    BatchJob,
    /// runtime.DefaultMetaV1FieldSelectorConversion for kinds without a conversion func.
    DefaultMeta,
}

const META_ONLY: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
];

const POD: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("spec.nodeName", "spec.nodeName"),
    ("spec.restartPolicy", "spec.restartPolicy"),
    ("spec.schedulerName", "spec.schedulerName"),
    ("spec.serviceAccountName", "spec.serviceAccountName"),
    ("spec.hostNetwork", "spec.hostNetwork"),
    ("status.phase", "status.phase"),
    ("status.podIP", "status.podIP"),
    // Accepted by the conversion but absent from the pod's field set: it always reads "".
    ("status.podIPs", "status.podIPs"),
    ("status.nominatedNodeName", "status.nominatedNodeName"),
    // Old v1 clients sent spec.host.
    ("spec.host", "spec.nodeName"),
];

const NODE: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("spec.unschedulable", "spec.unschedulable"),
];

const CORE_EVENT: &[(&str, &str)] = &[
    ("involvedObject.kind", "involvedObject.kind"),
    ("involvedObject.namespace", "involvedObject.namespace"),
    ("involvedObject.name", "involvedObject.name"),
    ("involvedObject.uid", "involvedObject.uid"),
    ("involvedObject.apiVersion", "involvedObject.apiVersion"),
    (
        "involvedObject.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("involvedObject.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingComponent", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const EVENTS_V1_EVENT: &[(&str, &str)] = &[
    ("reason", "reason"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const NAMESPACE: &[(&str, &str)] = &[
    ("status.phase", "status.phase"),
    ("metadata.name", "metadata.name"),
];

const SECRET: &[(&str, &str)] = &[
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const SERVICE: &[(&str, &str)] = &[
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
    ("spec.clusterIP", "spec.clusterIP"),
    ("spec.type", "spec.type"),
];

const JOB: &[(&str, &str)] = &[
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("status.successful", "status.successful"),
];

fn spec_for(info: &ResourceInfo) -> KindSpec {
    let (accepted, error) = match (info.group, info.kind) {
        ("", "Pod") => (POD, ErrorStyle::NotSupported),
        ("", "Node") => (NODE, ErrorStyle::NotSupported),
        ("", "Event") => (CORE_EVENT, ErrorStyle::NotSupported),
        ("", "Namespace") => (NAMESPACE, ErrorStyle::NotSupported),
        ("", "Secret") => (SECRET, ErrorStyle::NotSupported),
        ("", "Service") => (SERVICE, ErrorStyle::NotSupported),
        ("events.k8s.io", "Event") => (EVENTS_V1_EVENT, ErrorStyle::NotSupported),
        ("batch", "Job") => (JOB, ErrorStyle::BatchJob),
        _ => (META_ONLY, ErrorStyle::DefaultMeta),
    };
    KindSpec { accepted, error }
}

fn convert_label(spec: &KindSpec, label: &str) -> Result<String, String> {
    if let Some((_, canonical)) = spec.accepted.iter().find(|(l, _)| *l == label) {
        return Ok(canonical.to_string());
    }
    Err(match spec.error {
        ErrorStyle::NotSupported => format!("field label not supported: {label}"),
        ErrorStyle::BatchJob => format!(
            "field label {} not supported for batchv1.Job",
            go_quote(label)
        ),
        ErrorStyle::DefaultMeta => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(label)
        ),
    })
}

fn text(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer).map(text_of).unwrap_or_default()
}

/// A selectable field's value as text: strings as they are, numbers in decimal, booleans
/// as `true`/`false`, anything else as "".
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn flag(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The selectable fields of a stored object and their values, by canonical field name, as
/// upstream's registries compute them: booleans print as `true`/`false`, numbers in
/// decimal, anything missing as "".
pub fn field_set(info: &ResourceInfo, obj: &Value) -> BTreeMap<String, String> {
    let mut set = BTreeMap::new();
    set.insert("metadata.name".to_string(), text(obj, "/metadata/name"));
    // Namespace objects carry no metadata.namespace field (upstream passes false there).
    if info.namespaced {
        set.insert(
            "metadata.namespace".to_string(),
            text(obj, "/metadata/namespace"),
        );
    }
    let mut put = |k: &str, v: String| {
        set.insert(k.to_string(), v);
    };
    match (info.group, info.kind) {
        ("", "Pod") => {
            put("spec.nodeName", text(obj, "/spec/nodeName"));
            put("spec.restartPolicy", text(obj, "/spec/restartPolicy"));
            put("spec.schedulerName", text(obj, "/spec/schedulerName"));
            put(
                "spec.serviceAccountName",
                text(obj, "/spec/serviceAccountName"),
            );
            put("spec.hostNetwork", flag(obj, "/spec/hostNetwork"));
            put("status.phase", text(obj, "/status/phase"));
            // The primary IP is podIPs[0]; status.podIP mirrors it on a well-formed object.
            let mut ip = text(obj, "/status/podIPs/0/ip");
            if ip.is_empty() {
                ip = text(obj, "/status/podIP");
            }
            put("status.podIP", ip);
            put(
                "status.nominatedNodeName",
                text(obj, "/status/nominatedNodeName"),
            );
        }
        ("", "Node") => put("spec.unschedulable", flag(obj, "/spec/unschedulable")),
        ("", "Namespace") => put("status.phase", text(obj, "/status/phase")),
        ("", "Secret") => put("type", text(obj, "/type")),
        ("", "Service") => {
            put("spec.clusterIP", text(obj, "/spec/clusterIP"));
            put("spec.type", text(obj, "/spec/type"));
        }
        ("", "Event") => {
            for f in [
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            ] {
                put(
                    &format!("involvedObject.{f}"),
                    text(obj, &format!("/involvedObject/{f}")),
                );
            }
            put("reason", text(obj, "/reason"));
            put("reportingComponent", text(obj, "/reportingComponent"));
            let mut source = text(obj, "/source/component");
            if source.is_empty() {
                source = text(obj, "/reportingComponent");
            }
            put("source", source);
            put("type", text(obj, "/type"));
        }
        ("events.k8s.io", "Event") => {
            // Stored in events.k8s.io form; upstream converts to core first, so map back.
            for f in [
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            ] {
                put(
                    &format!("involvedObject.{f}"),
                    text(obj, &format!("/regarding/{f}")),
                );
            }
            put("reason", text(obj, "/reason"));
            put("reportingComponent", text(obj, "/reportingController"));
            let mut source = text(obj, "/deprecatedSource/component");
            if source.is_empty() {
                source = text(obj, "/reportingController");
            }
            put("source", source);
            put("type", text(obj, "/type"));
        }
        ("batch", "Job") => {
            let n = obj
                .pointer("/status/succeeded")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            put("status.successful", n.to_string());
        }
        ("apps", "ReplicaSet") => {
            // In upstream's field set, though apps/v1 never lets a client select on it.
            let n = obj
                .pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            put("status.replicas", n.to_string());
        }
        _ => {}
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use serde_json::json;

    /// `read` for `matches_plain` over a decoded object (what the API server does over
    /// the stored bytes).
    fn read_from(obj: &Value) -> impl FnMut(&str, &str) -> Option<Option<&'static [u8]>> + '_ {
        move |member, inner| {
            let Some(v) = obj.get(member).and_then(|m| m.as_object()?.get(inner)) else {
                return Some(None);
            };
            // Leaked for the test's lifetime: `read` hands out borrowed bytes.
            let raw = serde_json::to_vec(v).ok()?;
            Some(Some(Box::leak(raw.into_boxed_slice())))
        }
    }

    #[test]
    fn plain_fields_match_as_the_decoded_object_does() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let objects = [
            json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1", "restartPolicy": "Always"}, "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "b", "namespace": "ns"}, "spec": {}, "status": {}}),
            json!({"metadata": {"name": "c", "namespace": "ns"}, "spec": {"nodeName": ""}}),
            json!({"metadata": {"name": "d", "namespace": "ns"}, "spec": {"nodeName": 7, "schedulerName": true}, "status": null}),
            json!({"metadata": {"name": "e\u{e9}\"q", "namespace": "ns"}, "spec": {"nodeName": null, "serviceAccountName": {"x": 1}}}),
        ];
        let selectors = [
            "spec.nodeName=n1",
            "spec.nodeName!=",
            "spec.nodeName=",
            "spec.host=n1",
            "spec.nodeName=7",
            "spec.schedulerName=true",
            "spec.serviceAccountName=",
            "status.phase=Running,spec.nodeName=n1",
            "status.phase!=Running",
            "metadata.name=a,metadata.namespace=ns",
            "metadata.namespace!=ns",
            "spec.restartPolicy=Always",
            "status.nominatedNodeName=",
        ];
        for sel in selectors {
            let f = FieldSelector::parse(sel).unwrap();
            for obj in &objects {
                assert_eq!(
                    f.matches_plain(pods, read_from(obj)),
                    Some(f.matches(pods, obj)),
                    "{sel} on {obj}"
                );
            }
        }
        // Fields computed otherwise, and a reader that cannot tell, leave it to `matches`.
        for sel in [
            "spec.hostNetwork=false",
            "status.podIP=",
            "spec.nodeName=n1,status.podIP=",
        ] {
            let f = FieldSelector::parse(sel).unwrap();
            assert_eq!(f.matches_plain(pods, read_from(&objects[0])), None, "{sel}");
        }
        let f = FieldSelector::parse("spec.nodeName=n1").unwrap();
        assert_eq!(f.matches_plain(pods, |_, _| None), None);
        // A kind without its own fields: names only.
        let cms = lookup("", "v1", "configmaps").expect("configmaps");
        let f = FieldSelector::parse("metadata.name=a").unwrap();
        let cm = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert_eq!(f.matches_plain(cms, read_from(&cm)), Some(true));
    }

    #[test]
    fn parses_and_prints() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("metadata.name=web", "metadata.name=web"),
            ("metadata.name==web", "metadata.name=web"),
            ("status.phase!=Running", "status.phase!=Running"),
            ("b=2,a=1", "a=1,b=2"),
            ("a=x\\,y", "a=x\\,y"),
            ("a=x\\=y", "a=x\\=y"),
            ("a=x\\\\y", "a=x\\\\y"),
            ("a=", "a="),
            ("a=1,,b=2", "a=1,b=2"),
        ];
        for (input, want) in cases {
            let s = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(s.to_string(), *want, "input {input:?}");
        }
        let s = FieldSelector::parse("a=x\\,y").unwrap();
        assert_eq!(s.terms()[0].value, "x,y");
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1")
                .unwrap()
                .requires_exact("spec.nodeName"),
            Some("n1")
        );
    }

    #[test]
    fn parse_errors_match_upstream() {
        let cases: &[(&str, &str)] = &[
            ("foo", "invalid selector: 'foo'; can't understand 'foo'"),
            (
                "a=1,foo",
                "invalid selector: 'a=1,foo'; can't understand 'foo'",
            ),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=b\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                FieldSelector::parse(input).unwrap_err().0,
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn validation_per_kind() {
        let cases: &[(&str, &str, &str, Result<(), &str>)] = &[
            ("", "v1", "pods", Ok(())),
            ("", "v1", "pods", Ok(())),
            ("", "v1", "pods", Err("field label not supported: spec.foo")),
            ("", "v1", "nodes", Err("field label not supported: metadata.namespace")),
            (
                "apps",
                "v1",
                "replicasets",
                Err("\"status.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
            ),
            ("batch", "v1", "jobs", Err("field label \"status.failed\" not supported for batchv1.Job")),
            ("", "v1", "configmaps", Ok(())),
        ];
        let selectors = [
            "spec.nodeName=n1,status.phase=Running,spec.host=x",
            "status.podIPs=1.2.3.4",
            "spec.foo=1",
            "metadata.namespace=x",
            "status.replicas=1",
            "status.failed=1",
            "metadata.name=a,metadata.namespace=b",
        ];
        for ((g, v, plural, want), sel) in cases.iter().zip(selectors) {
            let info = lookup(g, v, plural).expect("resource");
            let got = FieldSelector::parse(sel).unwrap().validate_for(info);
            assert_eq!(got, want.map_err(str::to_string), "{plural} {sel}");
        }
        let info = lookup("events.k8s.io", "v1", "events").expect("events");
        let s = FieldSelector::parse("regarding.name=web")
            .unwrap()
            .transform_for(info)
            .unwrap();
        assert_eq!(s.to_string(), "involvedObject.name=web");
        assert!(FieldSelector::parse("involvedObject.name=web")
            .unwrap()
            .validate_for(info)
            .is_err());
    }

    #[test]
    fn matching_uses_upstream_values() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}]}
        });
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name!=web", false),
            ("metadata.namespace=default,spec.nodeName=n1", true),
            ("spec.host=n1", true),
            ("spec.hostNetwork=false", true),
            ("status.podIP=10.42.0.5", true),
            ("status.nominatedNodeName=", true),
            ("status.podIPs=10.42.0.5", false),
            ("status.phase=Pending", false),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(pods, &pod),
                *want,
                "{sel}"
            );
        }
        let nodes = lookup("", "v1", "nodes").expect("nodes");
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert!(FieldSelector::parse("spec.unschedulable=true")
            .unwrap()
            .matches(nodes, &node));
        let jobs = lookup("batch", "v1", "jobs").expect("jobs");
        let job = json!({"metadata": {"name": "j", "namespace": "d"}, "status": {}});
        assert!(FieldSelector::parse("status.successful=0")
            .unwrap()
            .matches(jobs, &job));
        let ev = lookup("", "v1", "events").expect("events");
        let event = json!({"metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "web"}, "reportingComponent": "kubelet",
            "type": "Normal", "reason": "Started"});
        assert!(FieldSelector::parse(
            "involvedObject.kind=Pod,involvedObject.name=web,source=kubelet,type=Normal"
        )
        .unwrap()
        .matches(ev, &event));
    }
}
