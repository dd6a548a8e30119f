//! Field ownership (`metadata.managedFields`) and server-side apply, as kube-apiserver does
//! them with sigs.k8s.io/structured-merge-diff, over plain JSON objects:
//!
//! - [`FieldSet`]: a set of field paths, with upstream's `fieldsV1` encoding
//!   ([`to_fields_v1`], [`from_fields_v1`]): `f:<field>`, `k:{"name":"web"}` for items of
//!   associative lists, `v:<json>` for items of sets, `i:<n>` for indexes, and `.` for a node
//!   that is owned itself as well as having owned children.
//! - [`fields_of`]: the fields an object or an applied configuration sets.
//! - [`record_update`]: ownership after a create/update/patch (operation `Update`).
//! - [`apply`]: server-side apply (operation `Apply`): merge, prune, conflicts, ownership.
//!
//! List identity follows the kind's schema the way upstream's `schemaconv` derives it: an
//! explicit `+listType` marker first (the table below), then the strategic-merge patch
//! strategy shared with `crate::strategic_merge` (merge with a key: associative list; merge
//! without a key: set), otherwise the list is atomic. Fields the schema does not describe
//! are "deduced" like upstream: maps are granular, lists atomic.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::registry::{ResourceInfo, Subresource};
use crate::strategic_merge::PATCH_FIELDS;

// ---------------------------------------------------------------------------------------
// Paths and sets.

/// One step of a field path (upstream `fieldpath.PathElement`). The variant order is the
/// order upstream sorts them in, which is also the order of keys in `fieldsV1`.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A field of a struct or a key of a map: `f:name`.
    Field(String),
    /// An item of an associative list, by its key fields sorted by name: `k:{"name":"web"}`.
    Key(Vec<(String, Value)>),
    /// An item of a set of scalars, by value: `v:"finalizer"`.
    Value(Value),
    /// An item of a list by position (atomic lists never need it; kept for decoding).
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `fieldsV1` key of this element.
    pub fn serialize(&self) -> String {
        match self {
            PathElement::Field(f) => {
                // Not `format!`: this runs for every field of every managedFields entry
                // a write encodes.
                let mut s = String::with_capacity(2 + f.len());
                s.push_str("f:");
                s.push_str(f);
                s
            }
            PathElement::Key(fields) => {
                let mut s = String::from("k:{");
                for (i, (name, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    go_json_string(name, &mut s);
                    s.push(':');
                    go_json(v, &mut s);
                }
                s.push('}');
                s
            }
            PathElement::Value(v) => {
                let mut s = String::from("v:");
                go_json(v, &mut s);
                s
            }
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parse a `fieldsV1` key; `Ok(None)` for element types this version does not know
    /// (upstream drops those rather than failing).
    pub fn deserialize(s: &str) -> Result<Option<PathElement>, FieldsV1Error> {
        let bad = || FieldsV1Error(format!("invalid path element: {s:?}"));
        if s.len() < 2 || s.as_bytes()[1] != b':' {
            return Err(bad());
        }
        let rest = &s[2..];
        Ok(Some(match s.as_bytes()[0] {
            b'f' => PathElement::Field(rest.to_string()),
            b'v' => PathElement::Value(serde_json::from_str(rest).map_err(|_| bad())?),
            b'k' => {
                let Value::Object(m) = serde_json::from_str(rest).map_err(|_| bad())? else {
                    return Err(bad());
                };
                let mut fields: Vec<(String, Value)> = m.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            b'i' => PathElement::Index(rest.parse().map_err(|_| bad())?),
            _ => return Ok(None),
        }))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an.cmp(bn).then_with(|| compare_values(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    /// Upstream's `PathElement.String()`, as conflict messages print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, v)| format!("{n}={}", value_to_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_to_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A field path from the object root, printed like upstream (`.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of field paths (upstream `fieldpath.Set`): the members at this level and, per
/// element, the set below it. A node can be both a member and have children; `fieldsV1`
/// writes that as `.`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds one path (the empty path is not a member of anything and is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether any member lies strictly below `path`.
    pub fn has_below(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has_below(rest)),
        }
    }

    /// The set below one element.
    fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        for m in &other.members {
            if !self.members.contains(m) {
                self.members.insert(m.clone());
            }
        }
        for (pe, sub) in &other.children {
            match self.children.get_mut(pe) {
                Some(mine) => mine.union_with(sub),
                None => {
                    self.children.insert(pe.clone(), sub.clone());
                }
            }
        }
    }

    /// Removes every member of `other` (members only, like upstream's `Difference`).
    /// Returns whether anything was removed.
    pub fn subtract(&mut self, other: &FieldSet) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let before = self.members.len();
        if self.members.len() <= other.members.len() {
            self.members.retain(|m| !other.members.contains(m));
        } else {
            for m in &other.members {
                self.members.remove(m);
            }
        }
        let mut removed = self.members.len() != before;
        for (pe, sub) in &other.children {
            if let Some(mine) = self.children.get_mut(pe) {
                removed |= mine.subtract(sub);
                if mine.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
        removed
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self
            .members
            .iter()
            .filter(|m| other.members.contains(*m))
            .cloned()
            .collect();
        let mut children = BTreeMap::new();
        for (pe, sub) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = sub.intersection(o);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Removes `path` and everything below it.
    pub fn remove_tree(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove_tree(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// Every member path, in upstream's iteration order (members of a node before the
    /// sets below its children).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(Path(p));
        }
        for (pe, sub) in &self.children {
            prefix.push(pe.clone());
            sub.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Number of member paths.
    pub fn len(&self) -> usize {
        self.members.len() + self.children.values().map(FieldSet::len).sum::<usize>()
    }
}

/// A `fieldsV1` document that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldsV1Error(pub String);

/// The `fieldsV1` JSON of a set, exactly as upstream writes it: keys in path-element order,
/// `{}` for members without children, and `".": {}` last for members with children.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    Value::Object(fields_v1_level(set, false))
}

fn fields_v1_level(set: &FieldSet, include_self: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let mut members = set.members.iter().peekable();
    let mut children = set.children.iter().peekable();
    loop {
        let take_member = match (members.peek(), children.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(m), Some((c, _))) => *m < *c,
        };
        if take_member {
            if let Some(m) = members.next() {
                out.insert(m.serialize(), Value::Object(Map::new()));
            }
        } else if let Some((pe, sub)) = children.next() {
            let both = members.peek().is_some_and(|m| *m == pe);
            if both {
                members.next();
            }
            out.insert(pe.serialize(), Value::Object(fields_v1_level(sub, both)));
        }
    }
    if include_self && !out.is_empty() {
        out.insert(".".to_string(), Value::Object(Map::new()));
    }
    out
}

/// Parses a `fieldsV1` document.
pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldsV1Error> {
    let Value::Object(m) = v else {
        return Err(FieldsV1Error("fieldsV1 must be an object".into()));
    };
    Ok(parse_level(m)?.0)
}

/// (the set below, whether the node itself is a member)
fn parse_level(m: &Map<String, Value>) -> Result<(FieldSet, bool), FieldsV1Error> {
    let mut set = FieldSet::default();
    let mut is_member = false;
    for (k, v) in m {
        if k == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = PathElement::deserialize(k)? else {
            continue;
        };
        let Value::Object(sub) = v else {
            return Err(FieldsV1Error(format!("value of {k:?} must be an object")));
        };
        let (grand, child_member) = parse_level(sub)?;
        if child_member {
            set.members.insert(pe.clone());
        }
        if !grand.is_empty() {
            set.children.insert(pe, grand);
        }
    }
    // A leaf (`{}`) is a member of its parent.
    if set.is_empty() {
        is_member = true;
    }
    Ok((set, is_member))
}

// ---------------------------------------------------------------------------------------
// Values: upstream's total order, printing and equality.

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 2,
        Value::Bool(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
        Value::Null => 6,
    }
}

/// `value.Compare`: numbers (compared numerically) < strings < bools < lists < maps < null.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (fx, fy) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                fx.partial_cmp(&fy).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for ((kp, vp), (kq, vq)) in xs.iter().zip(ys.iter()) {
                let c = kp.cmp(kq).then_with(|| compare_values(vp, vq));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xs.len().cmp(&ys.len())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Deep equality where `1` and `1.0` are equal, as upstream's `value.Equals`.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare_values(a, b) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// `value.ToString`: Go's `%v` for numbers and bools, `%q` for strings.
fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => go_number(n),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value_to_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_to_string(v)))
            .collect::<Vec<_>>()
            .join(""),
    }
}

/// A number as Go's encoding/json writes a float64 that holds an integer (`80`, not `80.0`).
fn go_number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// A string as Go's encoding/json writes it (HTML-sensitive characters escaped), so that
/// `k:`/`v:` keys are byte-for-byte upstream's.
fn go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A value as Go's encoding/json writes it (maps with sorted keys).
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_number(n)),
        Value::String(s) => go_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, out);
                out.push(':');
                go_json(&m[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------------------------
// The schema: where a value sits, and how its lists and maps are identified.

/// How a list (or a map) field is merged and owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Associative list: items identified by these key fields (with defaults for keys
    /// the schema defaults, such as a port's `protocol`).
    Map(
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    ),
    /// A set of scalars: items identified by value.
    Set,
    /// Replaced and owned as a whole.
    Atomic,
}

/// Explicit `+listType` / `+mapType` markers of k8s.io/api for the kinds skiff serves,
/// where they say more than the patch strategy in `strategic_merge::PATCH_FIELDS` (several
/// key fields, an atomic list that patches by key, a map/set list without patch strategy).
static EXPLICIT_RULES: &[(&str, &str, Rule)] = &[
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        Rule::Map(&["containerPort", "protocol"], &[("protocol", "TCP")]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        Rule::Map(&["containerPort", "protocol"], &[("protocol", "TCP")]),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Rule::Map(&["port", "protocol"], &[("protocol", "TCP")]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Rule::Map(&["topologyKey", "whenUnsatisfiable"], &[]),
    ),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", Rule::Atomic),
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector", Rule::Atomic),
    ("io.k8s.api.core.v1.ServiceSpec", "selector", Rule::Atomic),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        Rule::Map(&["name"], &[]),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        Rule::Map(&["name"], &[]),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        Rule::Map(&["mountPath"], &[]),
    ),
    (
        "io.k8s.api.core.v1.ResourceStatus",
        "resources",
        Rule::Map(&["resourceID"], &[]),
    ),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses", Rule::Set),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "failed",
        Rule::Set,
    ),
    (
        "io.k8s.api.batch.v1.UncountedTerminatedPods",
        "succeeded",
        Rule::Set,
    ),
    (
        "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        "values",
        Rule::Set,
    ),
];

/// Types marked `+structType=atomic` upstream: owned and replaced as one value.
static ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.TopologySelectorTerm",
];

/// Fields that exist in the Go zero value of a type (non-pointer structs, and lists
/// serialized without omitempty as `null`). Upstream compares a create against the zero
/// object, so these never get a `.` of their own in an `Update` entry; neither do they here.
static ZERO_FIELDS: &[(&str, &[&str], &[&str])] = &[
    // (type, fields present as {}, fields present as null)
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        &["template", "strategy"],
        &["selector"],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetSpec",
        &["template"],
        &["selector"],
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetSpec",
        &["template", "updateStrategy"],
        &["selector"],
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetSpec",
        &["template", "updateStrategy"],
        &["selector"],
    ),
    ("io.k8s.api.batch.v1.JobSpec", &["template"], &[]),
    ("io.k8s.api.batch.v1.CronJobSpec", &["jobTemplate"], &[]),
    (
        "io.k8s.api.batch.v1.JobTemplateSpec",
        &["metadata", "spec"],
        &[],
    ),
    (
        "io.k8s.api.core.v1.PodTemplateSpec",
        &["metadata", "spec"],
        &[],
    ),
    ("io.k8s.api.core.v1.PodSpec", &[], &["containers"]),
    ("io.k8s.api.core.v1.ServiceStatus", &["loadBalancer"], &[]),
    (
        "io.k8s.api.networking.v1.IngressStatus",
        &["loadBalancer"],
        &[],
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        &["daemonEndpoints", "nodeInfo"],
        &[],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
        &["resources"],
        &[],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec",
        &["scaleTargetRef"],
        &[],
    ),
    (
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerSpec",
        &["scaleTargetRef"],
        &[],
    ),
    (
        "io.k8s.api.rbac.v1.RoleBinding",
        &["roleRef"],
        &["subjects"],
    ),
    (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        &["roleRef"],
        &["subjects"],
    ),
    ("io.k8s.api.rbac.v1.Role", &[], &["rules"]),
    ("io.k8s.api.rbac.v1.ClusterRole", &[], &["rules"]),
    (
        "io.k8s.api.core.v1.Event",
        &["involvedObject", "source"],
        &["firstTimestamp", "lastTimestamp", "eventTime"],
    ),
    ("io.k8s.api.discovery.v1.EndpointSlice", &[], &["endpoints"]),
    ("io.k8s.api.core.v1.LimitRangeSpec", &[], &["limits"]),
];

/// Every list and map rule, by (type, field): the patch strategies of
/// `strategic_merge::PATCH_FIELDS` (merge with a key: associative list; merge without a
/// key: set), overridden by the explicit markers above. Built once, so a field costs one
/// lookup on every write.
fn rules() -> &'static HashMap<(&'static str, &'static str), Rule> {
    static RULES: OnceLock<HashMap<(&'static str, &'static str), Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut m = HashMap::new();
        for (t, f, strategy, key) in PATCH_FIELDS {
            if !strategy.split(',').any(|s| s == "merge") {
                continue;
            }
            let rule = if key.is_empty() {
                Rule::Set
            } else {
                // One leaked one-element slice per table entry, at most once per process.
                let keys: &'static [&'static str] = Box::leak(vec![*key].into_boxed_slice());
                Rule::Map(keys, &[])
            };
            m.insert((*t, *f), rule);
        }
        for (t, f, r) in EXPLICIT_RULES {
            m.insert((*t, *f), *r);
        }
        m
    })
}

fn empty_object() -> &'static Value {
    static EMPTY: OnceLock<Value> = OnceLock::new();
    EMPTY.get_or_init(|| Value::Object(Map::new()))
}

static NULL: Value = Value::Null;

/// A position in the kind's schema. `schema: None` is "deduced": nothing is known.
#[derive(Clone, Copy)]
struct Ty {
    /// The definition name, when the schema was reached through a `$ref`.
    def: Option<&'static str>,
    schema: Option<&'static Value>,
}

const DEDUCED: Ty = Ty {
    def: None,
    schema: None,
};

/// What a node is, for ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A scalar, an atomic list or map, or a value whose type contradicts its schema.
    Leaf,
    /// A granular map: a struct (declared fields) or a map type (free keys).
    Map,
    /// A list whose items are owned one by one.
    List(Rule),
    /// `null` where a granular map or list is expected: owns nothing below.
    Empty,
}

impl Ty {
    fn root(info: &ResourceInfo) -> Ty {
        let defs = crate::openapi::definitions();
        match crate::openapi::definition_name(info.group, info.version, info.kind)
            .and_then(|n| defs.get_key_value(n.as_str()))
        {
            Some((n, s)) => Ty {
                def: Some(n.as_str()),
                schema: Some(s),
            },
            None => DEDUCED,
        }
    }

    /// Follows `$ref` and single `allOf` wrappers.
    fn resolved(self) -> Ty {
        let defs = crate::openapi::definitions();
        let mut cur = self;
        for _ in 0..8 {
            let Some(s) = cur.schema else { return cur };
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or(r);
                match defs.get_key_value(name) {
                    Some((n, d)) => {
                        cur = Ty {
                            def: Some(n.as_str()),
                            schema: Some(d),
                        }
                    }
                    None => return DEDUCED,
                }
            } else if let Some(first) = s
                .get("allOf")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                cur = Ty {
                    def: cur.def,
                    schema: Some(first),
                };
            } else {
                return cur;
            }
        }
        cur
    }

    /// The type of `key` in this map, whether it is a declared struct field, and the rule
    /// for its value.
    fn field(self, key: &str) -> (Ty, bool, Option<Rule>) {
        let Some(s) = self.schema else {
            return (DEDUCED, false, None);
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(key)) {
            let rule = self.def.and_then(|d| field_rule(d, key));
            return (
                Ty {
                    def: None,
                    schema: Some(p),
                }
                .resolved(),
                true,
                rule,
            );
        }
        if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
            return (
                Ty {
                    def: None,
                    schema: Some(ap),
                }
                .resolved(),
                false,
                None,
            );
        }
        (DEDUCED, false, None)
    }

    fn items(self) -> Ty {
        match self.schema.and_then(|s| s.get("items")) {
            Some(i) => Ty {
                def: None,
                schema: Some(i),
            }
            .resolved(),
            None => DEDUCED,
        }
    }

    fn is_atomic_struct(self) -> bool {
        self.def.is_some_and(|d| ATOMIC_STRUCTS.contains(&d))
    }

    /// Whether the schema describes a granular map (properties or a map type).
    fn is_map_schema(self) -> bool {
        match self.schema {
            None => true,
            Some(s) => {
                s.get("properties").is_some()
                    || s.get("additionalProperties").is_some_and(Value::is_object)
                    || (s.get("type").and_then(Value::as_str) == Some("object")
                        && s.get("x-kubernetes-int-or-string").is_none())
            }
        }
    }

    fn is_list_schema(self) -> bool {
        match self.schema {
            None => true,
            Some(s) => s.get("type").and_then(Value::as_str) == Some("array"),
        }
    }

    /// The shape of `v` at this position, given the rule of the field holding it.
    fn shape(self, rule: Option<Rule>, v: &Value) -> Shape {
        match v {
            Value::Object(_) => {
                if rule == Some(Rule::Atomic) || self.is_atomic_struct() || !self.is_map_schema() {
                    Shape::Leaf
                } else {
                    Shape::Map
                }
            }
            Value::Array(items) => {
                if !self.is_list_schema() {
                    return Shape::Leaf;
                }
                match rule {
                    Some(Rule::Map(k, d)) if items.iter().all(Value::is_object) => {
                        Shape::List(Rule::Map(k, d))
                    }
                    Some(Rule::Set) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                        Shape::List(Rule::Set)
                    }
                    _ => Shape::Leaf,
                }
            }
            Value::Null => {
                let granular_map = self.is_map_schema()
                    && self.schema.is_some()
                    && rule != Some(Rule::Atomic)
                    && !self.is_atomic_struct();
                let granular_list = self.schema.is_some()
                    && self.is_list_schema()
                    && matches!(rule, Some(Rule::Map(..)) | Some(Rule::Set));
                if granular_map || granular_list {
                    Shape::Empty
                } else {
                    Shape::Leaf
                }
            }
            _ => Shape::Leaf,
        }
    }

    /// The zero value of `field` in this type, if upstream's Go zero value has one.
    fn zero_field(self, field: &str, at_root: bool) -> Option<&'static Value> {
        if at_root && matches!(field, "metadata" | "spec" | "status") {
            return Some(empty_object());
        }
        let def = self.def?;
        let (_, objs, nulls) = ZERO_FIELDS.iter().find(|(t, _, _)| *t == def)?;
        if objs.contains(&field) {
            Some(empty_object())
        } else if nulls.contains(&field) {
            Some(&NULL)
        } else {
            None
        }
    }
}

/// The rule of a list or map field: explicit markers first, then the patch strategy.
fn field_rule(def: &str, field: &str) -> Option<Rule> {
    rules().get(&(def, field)).copied()
}

/// The path element of a list item.
fn item_element(rule: Rule, item: &Value) -> PathElement {
    match rule {
        Rule::Map(keys, defaults) => {
            let mut fields: Vec<(String, Value)> = Vec::with_capacity(keys.len());
            for k in keys {
                match item.get(*k) {
                    Some(v) if !v.is_null() => fields.push((k.to_string(), v.clone())),
                    _ => {
                        if let Some((_, d)) = defaults.iter().find(|(n, _)| n == k) {
                            fields.push((k.to_string(), Value::String(d.to_string())));
                        }
                    }
                }
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            PathElement::Key(fields)
        }
        _ => PathElement::Value(item.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// Field sets of objects.

/// The fields an object (or an applied configuration) sets, as upstream's `ToFieldSet`:
/// scalars and atomic values are leaves, items of associative lists and sets are members
/// themselves, keys of map types are members, declared struct fields only through what
/// they contain. The fields upstream never tracks are left out: `apiVersion`, `kind`,
/// and `metadata.{name, namespace, uid, resourceVersion, generation, creationTimestamp,
/// deletionTimestamp, deletionGracePeriodSeconds, selfLink, managedFields}`.
pub fn fields_of(info: &ResourceInfo, obj: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    collect_fields(obj, Ty::root(info), None, &mut set);
    strip_untracked(&mut set);
    set
}

/// Fills `out` with the set below this node; returns whether the node is itself a leaf.
fn collect_fields(v: &Value, ty: Ty, rule: Option<Rule>, out: &mut FieldSet) -> bool {
    match ty.shape(rule, v) {
        Shape::Leaf => true,
        Shape::Empty => false,
        Shape::Map => {
            if let Value::Object(m) = v {
                for (k, cv) in m {
                    let (cty, is_field, crule) = ty.field(k);
                    let mut sub = FieldSet::default();
                    let leaf = collect_fields(cv, cty, crule, &mut sub);
                    let pe = PathElement::Field(k.clone());
                    if leaf || !is_field {
                        out.members.insert(pe.clone());
                    }
                    if !sub.is_empty() {
                        out.children.insert(pe, sub);
                    }
                }
            }
            false
        }
        Shape::List(rule) => {
            if let Value::Array(items) = v {
                let ity = ty.items();
                for item in items {
                    let pe = item_element(rule, item);
                    let mut sub = FieldSet::default();
                    collect_fields(item, ity, None, &mut sub);
                    out.members.insert(pe.clone());
                    if !sub.is_empty() {
                        match out.children.get_mut(&pe) {
                            Some(existing) => existing.union_with(&sub),
                            None => {
                                out.children.insert(pe, sub);
                            }
                        }
                    }
                }
            }
            false
        }
    }
}

const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn field(name: &str) -> PathElement {
    PathElement::Field(name.to_string())
}

/// Drops what upstream's strip-meta manager drops (and the server-owned deletion fields).
fn strip_untracked(set: &mut FieldSet) {
    set.remove_tree(&[field("apiVersion")]);
    set.remove_tree(&[field("kind")]);
    set.members.remove(&field("metadata"));
    for f in UNTRACKED_METADATA {
        set.remove_tree(&[field("metadata"), field(f)]);
    }
}

/// The fields a write through `subresource` may not own: the main resource of a kind with
/// a status subresource does not own `status`, the status subresource does not own `spec`
/// (upstream's reset fields of the registry strategies).
fn strip_reset(info: &ResourceInfo, subresource: Option<&str>, set: &mut FieldSet) {
    match subresource {
        None if info.has_subresource(Subresource::Status) => set.remove_tree(&[field("status")]),
        Some("status") => set.remove_tree(&[field("spec")]),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Comparing two objects (upstream `TypedValue.Compare`).

#[derive(Default, Debug)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Removed,
}

impl Comparison {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn strip(&mut self, info: &ResourceInfo, subresource: Option<&str>) {
        for s in [&mut self.added, &mut self.modified, &mut self.removed] {
            strip_untracked(s);
            strip_reset(info, subresource, s);
        }
    }

    fn changed(&self) -> FieldSet {
        let mut c = self.modified.clone();
        c.union_with(&self.added);
        c
    }

    /// `changed()`, moved out of the comparison (`removed` stays): a create's comparison
    /// is all additions, and copying that whole tree was ~0.5% of a busy server's CPU.
    fn take_changed(&mut self) -> FieldSet {
        let added = std::mem::take(&mut self.added);
        let mut modified = std::mem::take(&mut self.modified);
        if modified.is_empty() {
            return added;
        }
        modified.union_with(&added);
        modified
    }
}

/// `skip`: fields left out of the comparison (ones `Comparison::strip` would remove from
/// the result anyway, so comparing them is wasted work).
fn compare_objects(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &Value,
    skip: Skip<'_>,
) -> Comparison {
    let mut out = Comparison::default();
    // A create compares against the kind's zero object, as upstream does.
    let old = old.or(Some(empty_object()));
    compare_node(
        old,
        Some(new),
        Ty::root(info),
        None,
        Some(true),
        skip,
        &mut out,
    );
    out
}

/// Fields of a node a comparison leaves out, and fields of its `metadata` child.
#[derive(Clone, Copy, Default)]
struct Skip<'a> {
    fields: &'a [&'a str],
    metadata: &'a [&'a str],
}

impl<'a> Skip<'a> {
    /// What `Comparison::strip` removes for a write through `subresource`.
    fn stripped(info: &ResourceInfo, subresource: Option<&str>) -> Skip<'static> {
        Skip {
            fields: match reset_field(info, subresource) {
                Some("status") => &["status"],
                Some("spec") => &["spec"],
                _ => &[],
            },
            metadata: UNTRACKED_METADATA,
        }
    }

    /// What to leave out below the field `key`.
    fn below(self, key: &str) -> Skip<'a> {
        if key == "metadata" && !self.metadata.is_empty() {
            Skip {
                fields: self.metadata,
                metadata: &[],
            }
        } else {
            Skip::default()
        }
    }
}

/// The top-level field `strip_reset` removes from a write's comparison.
fn reset_field(info: &ResourceInfo, subresource: Option<&str>) -> Option<&'static str> {
    match subresource {
        None if info.has_subresource(Subresource::Status) => Some("status"),
        Some("status") => Some("spec"),
        _ => None,
    }
}

/// Compares one node; fills `out` with the differences below it and returns the node's
/// own change. `zero` is `Some(at_root)` where Go's zero value of the parent type is
/// meaningful (not inside list items or map types). `skip` names a field of this node
/// not to compare.
#[allow(clippy::too_many_arguments)]
fn compare_node(
    l: Option<&Value>,
    r: Option<&Value>,
    ty: Ty,
    rule: Option<Rule>,
    zero: Option<bool>,
    skip: Skip<'_>,
    out: &mut Comparison,
) -> Option<Change> {
    // Equal values have no changes below them: an update that leaves most of the object
    // as it was (a status write leaves spec and most of metadata) skips the walk of the
    // unchanged parts through the schema. Strict JSON equality; what only `values_equal`
    // finds equal (1 and 1.0) is still walked.
    if let (Some(a), Some(b)) = (l, r) {
        if a == b {
            return None;
        }
    }
    let probe = match (l, r) {
        (_, Some(v)) if !v.is_null() => v,
        (Some(v), _) => v,
        (_, Some(v)) => v,
        (None, None) => return None,
    };
    let mut shape = ty.shape(rule, probe);
    // A value whose shape changed between the two sides is compared as a whole.
    if let (Some(a), Some(b)) = (l, r) {
        let sa = ty.shape(rule, a);
        let sb = ty.shape(rule, b);
        if sa != sb && sa != Shape::Empty && sb != Shape::Empty {
            shape = Shape::Leaf;
        }
    }
    let leaf = |l: Option<&Value>, r: Option<&Value>| match (l, r) {
        (None, Some(_)) => Some(Change::Added),
        (Some(_), None) => Some(Change::Removed),
        (Some(a), Some(b)) if !values_equal(a, b) => Some(Change::Modified),
        _ => None,
    };
    let post = |l: Option<&Value>, r: Option<&Value>| match (l, r) {
        (None, Some(_)) => Some(Change::Added),
        (Some(_), None) => Some(Change::Removed),
        _ => None,
    };
    match shape {
        Shape::Leaf => leaf(l, r),
        Shape::Empty | Shape::Map => {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            if lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty) {
                return leaf(l, r);
            }
            let at_root = zero == Some(true);
            let mut visit = |k: &String, lv: Option<&Value>, rv: Option<&Value>| {
                if skip.fields.contains(&k.as_str()) {
                    return;
                }
                let (cty, is_field, crule) = ty.field(k);
                let mut lv = lv;
                if lv.is_none() && zero.is_some() && is_field {
                    lv = ty.zero_field(k, at_root);
                }
                let czero = if is_field && zero.is_some() {
                    Some(false)
                } else {
                    None
                };
                let mut sub = Comparison::default();
                let change = compare_node(lv, rv, cty, crule, czero, skip.below(k), &mut sub);
                attach(out, PathElement::Field(k.clone()), change, sub);
            };
            if let Some(rm) = rm {
                for (k, rv) in rm {
                    visit(k, lm.and_then(|m| m.get(k)), Some(rv));
                }
            }
            if let Some(lm) = lm {
                for (k, lv) in lm {
                    if rm.is_none_or(|m| !m.contains_key(k)) {
                        visit(k, Some(lv), None);
                    }
                }
            }
            post(l, r)
        }
        Shape::List(rule) => {
            let la = l.and_then(Value::as_array);
            let ra = r.and_then(Value::as_array);
            if la.is_none_or(Vec::is_empty) && ra.is_none_or(Vec::is_empty) {
                return leaf(l, r);
            }
            let ity = ty.items();
            let li = index_items(rule, la);
            let ri = index_items(rule, ra);
            for (pe, rv) in &ri {
                let mut sub = Comparison::default();
                let change = compare_node(
                    li.get(pe).copied(),
                    Some(rv),
                    ity,
                    None,
                    None,
                    Skip::default(),
                    &mut sub,
                );
                attach(out, pe.clone(), change, sub);
            }
            for (pe, lv) in &li {
                if !ri.contains_key(pe) {
                    let mut sub = Comparison::default();
                    let change =
                        compare_node(Some(lv), None, ity, None, None, Skip::default(), &mut sub);
                    attach(out, pe.clone(), change, sub);
                }
            }
            post(l, r)
        }
    }
}

/// The items of a list by path element; a repeated element keeps its first item, as
/// upstream ignores repeats.
fn index_items(rule: Rule, a: Option<&Vec<Value>>) -> BTreeMap<PathElement, &Value> {
    let mut m: BTreeMap<PathElement, &Value> = BTreeMap::new();
    for item in a.into_iter().flatten() {
        m.entry(item_element(rule, item)).or_insert(item);
    }
    m
}

fn attach(out: &mut Comparison, pe: PathElement, change: Option<Change>, sub: Comparison) {
    match change {
        Some(Change::Added) => {
            out.added.members.insert(pe.clone());
        }
        Some(Change::Modified) => {
            out.modified.members.insert(pe.clone());
        }
        Some(Change::Removed) => {
            out.removed.members.insert(pe.clone());
        }
        None => {}
    }
    if !sub.added.is_empty() {
        out.added.children.insert(pe.clone(), sub.added);
    }
    if !sub.modified.is_empty() {
        out.modified.children.insert(pe.clone(), sub.modified);
    }
    if !sub.removed.is_empty() {
        out.removed.children.insert(pe, sub.removed);
    }
}

// ---------------------------------------------------------------------------------------
// managedFields entries.

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: FieldSet,
    /// The entry as it was read, re-emitted as is while nothing about it changes: most
    /// writes touch one entry, and encoding the others again is most of the cost.
    raw: Option<Value>,
}

impl Entry {
    /// Whether `other` is the same manager in upstream's sense (`BuildManagerIdentifier`):
    /// name, operation and subresource, plus the apiVersion for updaters.
    fn same_manager(
        &self,
        manager: &str,
        operation: &str,
        api_version: &str,
        sub: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == sub
            && (operation == APPLY || self.api_version == api_version)
    }

    /// Upstream's manager identifier: the entry as JSON without fields and time (and
    /// without apiVersion for appliers). Conflict messages are grouped and sorted by it.
    fn identifier(&self) -> String {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        if self.operation != APPLY && !self.api_version.is_empty() {
            m.insert("apiVersion".into(), self.api_version.clone().into());
        }
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), s.clone().into());
        }
        Value::Object(m).to_string()
    }

    /// `printManager`: how conflict messages name the manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s = format!("{s} with subresource {sub:?}");
        }
        if self.operation == UPDATE {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn into_json(self) -> Value {
        if let Some(raw) = self.raw {
            return raw;
        }
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.into());
        m.insert("operation".into(), self.operation.into());
        m.insert("apiVersion".into(), self.api_version.into());
        if let Some(t) = self.time {
            m.insert("time".into(), t.into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), to_fields_v1(&self.fields));
        if let Some(s) = self.subresource {
            m.insert("subresource".into(), s.into());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<Entry, FieldsV1Error> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let operation = s("operation").unwrap_or_default();
        if operation != APPLY && operation != UPDATE {
            return Err(FieldsV1Error(format!("invalid operation {operation:?}")));
        }
        match s("fieldsType").as_deref() {
            Some("FieldsV1") => {}
            other => {
                return Err(FieldsV1Error(format!("invalid fieldsType {other:?}")));
            }
        }
        let fields = match v.get("fieldsV1") {
            Some(f) => from_fields_v1(f)?,
            None => FieldSet::default(),
        };
        Ok(Entry {
            manager: s("manager").unwrap_or_default(),
            operation,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|x| !x.is_empty()),
            fields,
            raw: Some(v.clone()),
        })
    }
}

/// The entries of an object; any entry that does not decode resets them all, as upstream
/// does (`emptyManagedFieldsOnErr`).
fn decode_entries(obj: Option<&Value>) -> Vec<Entry> {
    let Some(list) = obj
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for v in list {
        let Ok(e) = Entry::from_json(v) else {
            return Vec::new();
        };
        // Two entries of one manager are one.
        match out.iter_mut().find(|x| {
            x.same_manager(
                &e.manager,
                &e.operation,
                &e.api_version,
                e.subresource.as_deref(),
            )
        }) {
            Some(x) => {
                x.fields.union_with(&e.fields);
                x.raw = None;
            }
            None => out.push(e),
        }
    }
    out
}

/// Upstream keeps at most 10 `Update` entries; older ones are merged per apiVersion into
/// an `ancient-changes` entry (`capManagersManager`).
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|i| entries[*i].operation == UPDATE)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|a, b| {
        let (ta, tb) = (&entries[*a].time, &entries[*b].time);
        ta.cmp(tb)
            .then_with(|| entries[*a].manager.cmp(&entries[*b].manager))
    });
    let mut length = updaters.len();
    let mut first_of_version: HashMap<String, usize> = HashMap::new();
    let mut drop: Vec<usize> = Vec::new();
    for &i in &updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = entries[i].api_version.clone();
        match first_of_version.get(&version) {
            Some(&first) => {
                // The first entry of this version becomes the bucket.
                let fields = entries[i].fields.clone();
                let time = entries[i].time.clone();
                let bucket = &mut entries[first];
                bucket.manager = ANCIENT_CHANGES.to_string();
                bucket.subresource = None;
                bucket.fields.union_with(&fields);
                bucket.time = time;
                bucket.raw = None;
                drop.push(i);
                length -= 1;
            }
            None => {
                first_of_version.insert(version, i);
            }
        }
    }
    drop.sort_unstable();
    for i in drop.into_iter().rev() {
        entries.remove(i);
    }
}

/// Writes the entries into `obj.metadata.managedFields`, in upstream's order: appliers
/// first, then by time, manager, apiVersion and subresource.
fn encode_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut entries);
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| a.time.cmp(&b.time))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.into_iter().map(Entry::into_json).collect()),
        );
    }
}

fn managed_fields_of(obj: &Value) -> Option<&Value> {
    obj.get("metadata").and_then(|m| m.get("managedFields"))
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    o
}

// ---------------------------------------------------------------------------------------
// Update.

/// Records a non-apply write (create, update, any non-apply patch, a subresource write) in
/// `new.metadata.managedFields`, like upstream's field manager `Update`:
///
/// - the ownership it starts from is `new`'s own managedFields when the client sent a
///   non-empty valid list on a main-resource write (clients may rewrite ownership), else
///   `old`'s; a client sending `[{}]` clears managedFields altogether;
/// - every field the write added or changed (compared with `old`, or with the kind's zero
///   object for a create) is removed from every entry and added to `manager`'s `Update`
///   entry for this apiVersion and subresource, whose time becomes `now_rfc3339`;
/// - every field the write removed is removed from every entry; empty entries are dropped;
/// - untracked metadata is ignored, and so is `status` on the main resource of a kind with
///   a status subresource (and `spec` on the status subresource).
pub fn record_update(
    info: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    now_rfc3339: &str,
) {
    if subresource.is_none() {
        if let Some(Value::Array(list)) = managed_fields_of(new) {
            if list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty) {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.shift_remove("managedFields");
                }
                return;
            }
        }
    }
    let sent = match new.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m.shift_remove("managedFields"),
        None => None,
    };

    let mut cmp = compare_objects(info, old, new, Skip::stripped(info, subresource));
    cmp.strip(info, subresource);
    let live_list = old.and_then(managed_fields_of);
    if cmp.is_empty() && (subresource.is_some() || sent.is_none() || sent.as_ref() == live_list) {
        // Nothing tracked changed and ownership was not rewritten: keep it as it was.
        if let (Some(list), Some(m)) = (
            live_list,
            new.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            m.insert("managedFields".into(), list.clone());
        }
        return;
    }

    let from_request = match (subresource, &sent) {
        (None, Some(list)) => decode_entries(Some(&json!({"metadata": {"managedFields": list}}))),
        _ => Vec::new(),
    };
    let mut entries = if from_request.is_empty() {
        decode_entries(old)
    } else {
        from_request
    };

    if !cmp.is_empty() {
        let changed = cmp.take_changed();
        for e in entries.iter_mut() {
            let a = e.fields.subtract(&changed);
            let b = e.fields.subtract(&cmp.removed);
            if a || b {
                e.raw = None;
            }
        }
        let mut mine = changed;
        mine.subtract(&cmp.removed);
        if !mine.is_empty() {
            let api_version = info.api_version();
            match entries
                .iter_mut()
                .find(|e| e.same_manager(manager, UPDATE, &api_version, subresource))
            {
                Some(e) => {
                    e.fields.union_with(&mine);
                    e.time = Some(now_rfc3339.to_string());
                    e.raw = None;
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: UPDATE.into(),
                    api_version,
                    time: Some(now_rfc3339.to_string()),
                    subresource: subresource.map(str::to_string),
                    fields: mine,
                    raw: None,
                }),
            }
        }
    }
    encode_entries(new, entries);
}

// ---------------------------------------------------------------------------------------
// Apply.

/// One field another manager owns with a different value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion of the other manager's entry.
    pub api_version: String,
    pub subresource: Option<String>,
    /// The field, as upstream prints paths: `.spec.replicas`.
    pub field: String,
    /// How upstream names the manager: `"kubectl-edit" using apps/v1`.
    described: String,
    identifier: String,
}

/// A `details.causes[]` item of the 409 Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCause {
    /// Always `FieldManagerConflict`.
    pub reason: &'static str,
    /// `conflict with "kubectl-edit" using apps/v1`
    pub message: String,
    /// `.spec.replicas`
    pub field: String,
}

/// Why an apply was refused: fields owned by other managers with other values. Served as a
/// 409 Conflict Status with [`ApplyConflicts::message`] and [`ApplyConflicts::causes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConflicts {
    /// Grouped by manager (sorted as upstream sorts manager identifiers), fields in
    /// path order.
    pub conflicts: Vec<Conflict>,
}

impl ApplyConflicts {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "m" using apps/v1:
    /// .spec.replicas`, or for several `Apply failed with 2 conflicts: conflicts with "m"
    /// using apps/v1:\n- .spec.replicas\n- .spec.paused`.
    pub fn message(&self) -> String {
        if let [only] = self.conflicts.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                only.described, only.field
            );
        }
        let mut lines: Vec<String> = Vec::new();
        let mut last: Option<&str> = None;
        for c in &self.conflicts {
            if last != Some(c.identifier.as_str()) {
                lines.push(format!("conflicts with {}:", c.described));
                last = Some(c.identifier.as_str());
            }
            lines.push(format!("- {}", c.field));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.conflicts.len(),
            lines.join("\n")
        )
    }

    pub fn causes(&self) -> Vec<ConflictCause> {
        self.conflicts
            .iter()
            .map(|c| ConflictCause {
                reason: "FieldManagerConflict",
                message: format!("conflict with {}", c.described),
                field: c.field.clone(),
            })
            .collect()
    }

    /// The whole 409 `Status` object kube-apiserver answers with (`NewApplyConflict`).
    pub fn status(&self) -> Value {
        let causes: Vec<Value> = self
            .causes()
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": "Conflict",
            "details": {"causes": causes},
            "code": 409
        })
    }
}

impl fmt::Display for ApplyConflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ApplyConflicts {}

/// Server-side apply of `applied` (the request body, decoded) by `manager`, onto `live`
/// (`None` when the apply creates the object). Returns the object to store, with its
/// managedFields already updated (do not call [`record_update`] on it as well):
///
/// 1. `applied` is merged into `live`: maps recursively, associative lists and sets item by
///    item, atomic values replaced; a `null` in `applied` removes the field;
/// 2. fields `manager` applied last time and no longer applies are removed, unless another
///    manager (or this apply) still owns them or something below them;
/// 3. fields owned by another manager whose value this apply changes are conflicts: an
///    error listing them all, or with `force` the other managers lose them; a field set to
///    the value it already has is shared;
/// 4. `manager`'s `Apply` entry becomes exactly the applied field set.
///
/// `status` in `applied` is ignored on the main resource of a kind with a status
/// subresource (upstream resets it). An object with no managedFields yet gets a
/// `before-first-apply` entry owning its fields first, as upstream does.
pub fn apply(
    info: &ResourceInfo,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now_rfc3339: &str,
) -> Result<Value, ApplyConflicts> {
    let api_version = info.api_version();
    let mut entries = decode_entries(live);
    let live_obj = match live {
        Some(l) => without_managed_fields(l),
        None => json!({"apiVersion": api_version, "kind": info.kind}),
    };
    if live.is_some() && entries.is_empty() {
        let mut fields = fields_of(info, &live_obj);
        strip_reset(info, None, &mut fields);
        entries.push(Entry {
            manager: "before-first-apply".into(),
            operation: UPDATE.into(),
            api_version: api_version.clone(),
            time: Some(now_rfc3339.to_string()),
            subresource: None,
            fields,
            raw: None,
        });
    }

    let mut config = without_managed_fields(applied);
    if info.has_subresource(Subresource::Status) {
        if let Some(m) = config.as_object_mut() {
            m.shift_remove("status");
        }
    }
    // Manifests written by kubectl carry `creationTimestamp: null`; a null for a field the
    // server owns must not wipe the live value (upstream restores those after the merge).
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, v| !(v.is_null() && UNTRACKED_METADATA.contains(&k.as_str())));
    }
    let mut config_set = fields_of(info, &config);
    strip_reset(info, None, &mut config_set);

    let root = Ty::root(info);
    let mut merged = merge_value(Some(live_obj.clone()), &config, root, None);

    let mine = entries
        .iter()
        .position(|e| e.same_manager(manager, APPLY, &api_version, None));
    let last_set = mine.map(|i| entries[i].fields.clone());
    let mine = match mine {
        Some(i) => {
            entries[i].fields = config_set.clone();
            entries[i].api_version = api_version.clone();
            entries[i].raw = None;
            i
        }
        None => {
            entries.push(Entry {
                manager: manager.to_string(),
                operation: APPLY.into(),
                api_version: api_version.clone(),
                time: None,
                subresource: None,
                fields: config_set.clone(),
                raw: None,
            });
            entries.len() - 1
        }
    };

    // Prune what this manager stopped applying and nobody else owns.
    if let Some(last) = last_set.as_ref().filter(|s| !s.is_empty()) {
        let mut owned = FieldSet::default();
        for e in &entries {
            owned.union_with(&e.fields);
        }
        let mut to_remove = FieldSet::default();
        for p in last.paths() {
            if !owned.has(&p.0) && !owned.has_below(&p.0) {
                to_remove.insert(&p.0);
            }
        }
        if !to_remove.is_empty() {
            remove_items(&mut merged, root, None, &to_remove);
        }
    }

    let mut cmp = compare_objects(info, Some(&live_obj), &merged, Skip::default());
    cmp.strip(info, None);
    let changed = cmp.changed();
    let mut conflicts: Vec<(usize, FieldSet)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == mine {
            continue;
        }
        let c = e.fields.intersection(&changed);
        if !c.is_empty() {
            conflicts.push((i, c));
        }
    }
    if !force && !conflicts.is_empty() {
        let mut list: Vec<Conflict> = Vec::new();
        for (i, set) in &conflicts {
            let e = &entries[*i];
            for p in set.paths() {
                list.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.clone(),
                    api_version: e.api_version.clone(),
                    subresource: e.subresource.clone(),
                    field: p.to_string(),
                    described: e.describe(),
                    identifier: e.identifier(),
                });
            }
        }
        // Stable: paths keep their order within a manager.
        list.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        return Err(ApplyConflicts { conflicts: list });
    }
    for (i, set) in &conflicts {
        entries[*i].fields.subtract(set);
        entries[*i].raw = None;
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i != mine && e.fields.subtract(&cmp.removed) {
            e.raw = None;
        }
    }
    // Upstream stamps the applier's time when the apply changed the object.
    if !cmp.is_empty() || entries[mine].time.is_none() || last_set.as_ref() != Some(&config_set) {
        entries[mine].time = Some(now_rfc3339.to_string());
    }
    encode_entries(&mut merged, entries);
    Ok(merged)
}

/// Merges an applied value into a live one (upstream `Merge` with "keep the right-hand
/// side" for leaves).
fn merge_value(live: Option<Value>, cfg: &Value, ty: Ty, rule: Option<Rule>) -> Value {
    match ty.shape(rule, cfg) {
        Shape::Map => {
            let Value::Object(cm) = cfg else {
                return cfg.clone();
            };
            let mut out = match live {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (k, cv) in cm {
                if cv.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                let (cty, _, crule) = ty.field(k);
                let lv = out.get_mut(k).map(std::mem::take);
                let merged = merge_value(lv, cv, cty, crule);
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        Shape::List(rule) => {
            let Value::Array(ca) = cfg else {
                return cfg.clone();
            };
            let la = match live {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            merge_list(la, ca, ty.items(), rule)
        }
        Shape::Leaf | Shape::Empty => cfg.clone(),
    }
}

/// Items of the applied list in its order; live-only items keep their place relative to
/// the shared ones; items in both are merged.
fn merge_list(live: Vec<Value>, cfg: &[Value], ity: Ty, rule: Rule) -> Value {
    let cfg_pes: Vec<PathElement> = cfg.iter().map(|i| item_element(rule, i)).collect();
    let cfg_index: BTreeMap<&PathElement, usize> = cfg_pes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, pe)| (pe, i))
        .collect();
    let live_pes: Vec<PathElement> = live.iter().map(|i| item_element(rule, i)).collect();
    let mut live_by_pe: BTreeMap<PathElement, Value> = BTreeMap::new();
    let mut order: Vec<Option<usize>> = Vec::with_capacity(live.len()); // None: shared slot
    let mut live_only: Vec<Value> = Vec::new();
    for (item, pe) in live.into_iter().zip(live_pes) {
        if cfg_index.contains_key(&pe) && !live_by_pe.contains_key(&pe) {
            live_by_pe.insert(pe, item);
            order.push(None);
        } else {
            order.push(Some(live_only.len()));
            live_only.push(item);
        }
    }
    let mut out: Vec<Value> = Vec::with_capacity(order.len() + cfg.len());
    let mut emitted: BTreeSet<&PathElement> = BTreeSet::new();
    let mut next = 0usize;
    let mut emit_cfg =
        |i: usize, out: &mut Vec<Value>, live_by_pe: &mut BTreeMap<PathElement, Value>| {
            let pe = &cfg_pes[i];
            if !emitted.insert(pe) {
                return false;
            }
            let lv = live_by_pe.remove(pe);
            let shared = lv.is_some();
            out.push(merge_value(lv, &cfg[i], ity, None));
            shared
        };
    let mut live_only = live_only.into_iter().map(Some).collect::<Vec<_>>();
    for slot in order {
        match slot {
            Some(i) => {
                if let Some(v) = live_only.get_mut(i).and_then(Option::take) {
                    out.push(v);
                }
            }
            None => {
                // Emit applied items up to and including the next shared one.
                while next < cfg.len() {
                    let i = next;
                    next += 1;
                    if emit_cfg(i, &mut out, &mut live_by_pe) {
                        break;
                    }
                }
            }
        }
    }
    while next < cfg.len() {
        emit_cfg(next, &mut out, &mut live_by_pe);
        next += 1;
    }
    Value::Array(out)
}

/// Removes the paths of `to_remove` from `v` (upstream `RemoveItems`); a map or list left
/// empty by a removal is removed from its parent. Returns whether `v` became empty.
fn remove_items(v: &mut Value, ty: Ty, rule: Option<Rule>, to_remove: &FieldSet) -> bool {
    match ty.shape(rule, v) {
        Shape::Map => {
            let Value::Object(m) = v else { return false };
            if m.is_empty() {
                return false;
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let pe = PathElement::Field(k.clone());
                if to_remove.members.contains(&pe) {
                    m.shift_remove(&k);
                    continue;
                }
                if let Some(sub) = to_remove.child(&pe) {
                    let (cty, _, crule) = ty.field(&k);
                    let emptied = match m.get_mut(&k) {
                        Some(cv) => remove_items(cv, cty, crule, sub),
                        None => false,
                    };
                    if emptied {
                        m.shift_remove(&k);
                    }
                }
            }
            m.is_empty()
        }
        Shape::List(rule) => {
            let Value::Array(items) = v else { return false };
            if items.is_empty() {
                return false;
            }
            let ity = ty.items();
            let mut kept = Vec::with_capacity(items.len());
            for mut item in std::mem::take(items) {
                let pe = item_element(rule, &item);
                if to_remove.members.contains(&pe) {
                    continue;
                }
                if let Some(sub) = to_remove.child(&pe) {
                    remove_items(&mut item, ity, None, sub);
                }
                kept.push(item);
            }
            *items = kept;
            items.is_empty()
        }
        Shape::Leaf | Shape::Empty => false,
    }
}

// ---------------------------------------------------------------------------------------
// Field manager names.

/// Upstream's limit on a field manager name.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// The field manager of a request, as kube-apiserver derives it: the `fieldManager` query
/// parameter when set, else the User-Agent up to its first `/` (`kubectl/v1.32.0 (linux/amd64)
/// kubernetes/abc` → `kubectl`), without unprintable characters, cut at 128 bytes.
pub fn field_manager(query_field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = query_field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let ua = user_agent.unwrap_or("");
    let prefix = ua.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
