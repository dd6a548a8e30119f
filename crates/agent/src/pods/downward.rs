//! Downward API values: what a `fieldRef` or `resourceFieldRef` resolves to for one pod on
//! this node, shared by environment variables (`env.rs`) and downwardAPI volumes.
//!
//! Upstream splits this between `podshelper.ConvertDownwardAPIFieldLabel` (which labels
//! exist), the kubelet's `podFieldSelectorRuntimeValue` (node and status facts),
//! `fieldpath.ExtractFieldPathAsString` (metadata) and `resource.ExtractContainerResourceValue`
//! (limits and requests, missing limits defaulted to the pod-level limit or node allocatable).
//! The same split is kept here so error messages match upstream's word for word.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::resources::{
    effective_requests, parse_quantity, ParsedQuantity, QuantityError, CPU, EPHEMERAL_STORAGE,
    MEMORY,
};

/// Facts about where the pod runs that the pod object itself does not carry yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's IPs, preferred family first (`status.hostIPs`).
    pub host_ips: Vec<String>,
    /// The pod's IPs, in the node's family preference order (`status.podIPs`); empty for a
    /// pod whose sandbox has no address yet. Host-network pods pass the host IPs.
    pub pod_ips: Vec<String>,
    pub allocatable: Allocatable,
}

/// The node's allocatable resources, the default for limits a container leaves unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// Why a downward API reference cannot be resolved; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    #[error("unsupported pod version: {0}")]
    UnsupportedVersion(String),
    #[error("field label does not support subscript: {0}")]
    LabelDoesNotSupportSubscript(String),
    #[error("field label not supported: {0}")]
    LabelNotSupported(String),
    #[error("invalid key subscript in {path}: {reasons}")]
    InvalidSubscript { path: String, reasons: String },
    #[error("fieldPath {0:?} does not support subscript")]
    PathDoesNotSupportSubscript(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// Upstream `nodeutil.GetNodeHostIPs` when the node reports no address.
    #[error("host IP unknown; known addresses: []")]
    HostIpUnknown,
    /// Upstream's message has the space before the colon.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("{field}: {source}")]
    Quantity {
        field: String,
        #[source]
        source: QuantityError,
    },
}

/// A `fieldRef` (env var or volume item): checks `apiVersion` (defaulted to `v1`) and maps
/// the label as upstream's `ConvertDownwardAPIFieldLabel` does (`spec.host` is the old
/// name of `spec.nodeName`), then resolves it with [`field_value`].
pub fn field_selector_value(
    pod: &Pod,
    selector: &ObjectFieldSelector,
    facts: &NodeFacts,
) -> Result<String, DownwardError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if version != "v1" {
        return Err(DownwardError::UnsupportedVersion(version.to_string()));
    }
    let path = convert_field_label(&selector.field_path)?;
    field_value(pod, path, facts)
}

/// Upstream `ConvertDownwardAPIFieldLabel` for v1 pods: the labels the downward API knows.
pub fn convert_field_label(label: &str) -> Result<&str, DownwardError> {
    if let Some((path, _)) = split_subscript(label) {
        return match path {
            "metadata.annotations" | "metadata.labels" => Ok(label),
            _ => Err(DownwardError::LabelDoesNotSupportSubscript(
                label.to_string(),
            )),
        };
    }
    match label {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(label),
        "spec.host" => Ok("spec.nodeName"),
        _ => Err(DownwardError::LabelNotSupported(label.to_string())),
    }
}

/// The kubelet's `podFieldSelectorRuntimeValue`: node name, service account, host and pod
/// IPs (lists comma-joined), else the object's metadata via [`object_field_value`].
pub fn field_value(
    pod: &Pod,
    field_path: &str,
    facts: &NodeFacts,
) -> Result<String, DownwardError> {
    let spec = pod.spec.as_ref();
    match field_path {
        "spec.nodeName" => Ok(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => Ok(spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        "status.hostIP" => facts
            .host_ips
            .first()
            .cloned()
            .ok_or(DownwardError::HostIpUnknown),
        "status.hostIPs" => {
            if facts.host_ips.is_empty() {
                return Err(DownwardError::HostIpUnknown);
            }
            Ok(facts.host_ips.join(","))
        }
        "status.podIP" => Ok(facts.pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(facts.pod_ips.join(",")),
        _ => object_field_value(pod, field_path),
    }
}

/// Upstream `fieldpath.ExtractFieldPathAsString`: metadata only, which is all a downwardAPI
/// volume may reference. A whole label or annotation map is rendered as sorted `key="value"`
/// lines ([`format_map`]).
pub fn object_field_value(pod: &Pod, field_path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    if let Some((path, key)) = split_subscript(field_path) {
        return match path {
            "metadata.annotations" => {
                check_subscript(field_path, &key.to_lowercase())?;
                Ok(lookup(meta.annotations.as_ref(), key))
            }
            "metadata.labels" => {
                check_subscript(field_path, key)?;
                Ok(lookup(meta.labels.as_ref(), key))
            }
            _ => Err(DownwardError::PathDoesNotSupportSubscript(
                field_path.to_string(),
            )),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(DownwardError::UnsupportedFieldPath(field_path.to_string())),
    }
}

fn lookup(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
}

fn check_subscript(field_path: &str, key: &str) -> Result<(), DownwardError> {
    let reasons = ::api::validation::names::is_qualified_name(key);
    if reasons.is_empty() {
        return Ok(());
    }
    Err(DownwardError::InvalidSubscript {
        path: field_path.to_string(),
        reasons: reasons.join(";"),
    })
}

/// Upstream `fieldpath.SplitMaybeSubscriptedPath`: `metadata.labels['key']` → (path, key).
pub fn split_subscript(field_path: &str) -> Option<(&str, &str)> {
    let inner = field_path.strip_suffix("']")?;
    let (path, key) = inner.split_once("['")?;
    (!path.is_empty()).then_some((path, key))
}

/// Upstream `fieldpath.FormatMap`: one `key="value"` line per entry, keys sorted, values
/// quoted as Go's `%q` does, no trailing newline.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: escapes `"` and `\`, the C escapes, other control and
/// non-printable characters as `\xNN`/`\uNNNN`/`\UNNNNNNNN`; printable Unicode stays as is.
/// Printability approximates Go's `unicode.IsPrint` with Rust's control/whitespace classes
/// plus the common invisible format characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}'
        | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}' | '\u{e000}'..='\u{f8ff}')
}

/// A `resourceFieldRef` for `container` of `pod` (env var, or volume item naming its
/// container): the named container if `containerName` is set, limits defaulted as the
/// kubelet's `defaultPodLimitsForDownwardAPI` does — from the pod-level limit for cpu and
/// memory when one is set, else node allocatable — then [`resource_value`].
pub fn resource_selector_value(
    pod: &Pod,
    container: &Container,
    selector: &ResourceFieldSelector,
    allocatable: &Allocatable,
) -> Result<String, DownwardError> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => find_container(pod, name)?,
    };
    let defaults = limit_defaults(pod, allocatable)?;
    resource_value(
        target,
        &selector.resource,
        selector.divisor.as_ref(),
        &defaults,
    )
}

/// Upstream `findContainerInPod`: regular containers first, then init containers.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, DownwardError> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter())
        .chain(
            spec.into_iter()
                .flat_map(|s| s.init_containers.iter().flatten()),
        )
        .find(|c| c.name == name)
        .ok_or_else(|| DownwardError::ContainerNotFound(name.to_string()))
}

/// Node allocatable with pod-level cpu/memory limits (when set and non-zero) in its place.
fn limit_defaults(pod: &Pod, allocatable: &Allocatable) -> Result<Allocatable, DownwardError> {
    let mut defaults = *allocatable;
    let pod_limits = pod
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    for (name, q) in pod_limits.into_iter().flatten() {
        let parsed = || parse(&format!("spec.resources.limits.{name}"), q);
        match name.as_str() {
            CPU => {
                let v = parsed()?;
                if !v.is_zero() {
                    defaults.cpu_millis = v.as_milli();
                }
            }
            MEMORY => {
                let v = parsed()?;
                if !v.is_zero() {
                    defaults.memory_bytes = v.as_bytes();
                }
            }
            _ => {}
        }
    }
    Ok(defaults)
}

/// Upstream `ExtractContainerResourceValue` over the container with limits defaulted
/// (`MergeContainerResourceLimits`: a missing or zero cpu, memory or ephemeral-storage limit
/// becomes `defaults`). Requests are read after API defaulting (see `resources.rs`).
/// The value is divided by `divisor` (absent or zero → 1) and rounded up: cpu in
/// millicores over the divisor's millicores (`1` → whole cores, `1m` → millicores), memory
/// and storage in bytes over the divisor's bytes. Upstream divides in float64; so do we,
/// so results agree even where float rounding shows. `requests.hugepages-*` and
/// `limits.hugepages-*` are read as is (hugepages are never overcommitted).
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    defaults: &Allocatable,
) -> Result<String, DownwardError> {
    let resources = container.resources.clone().unwrap_or_default();
    let requests = effective_requests(&resources);
    let limits = resources.limits.clone().unwrap_or_default();

    let divisor = match divisor {
        None => None,
        Some(q) => Some(parse("divisor", q)?).filter(|d| !d.is_zero()),
    };
    let read = |list: &BTreeMap<String, Quantity>, kind: &str, name: &str| {
        list.get(name)
            .map(|q| parse(&format!("resources.{kind}.{name}"), q))
            .transpose()
    };
    let limit = |name: &str, default: i64, as_milli: bool| -> Result<i64, DownwardError> {
        let value = read(&limits, "limits", name)?
            .filter(|q| !q.is_zero())
            .map(|q| if as_milli { q.as_milli() } else { q.as_bytes() });
        Ok(value.unwrap_or(default))
    };
    let request = |name: &str, as_milli: bool| -> Result<i64, DownwardError> {
        Ok(read(&requests, "requests", name)?
            .map(|q| if as_milli { q.as_milli() } else { q.as_bytes() })
            .unwrap_or(0))
    };
    let cpu = |milli: i64| ceil_div(milli, divisor.as_ref().map_or(1000, |d| d.as_milli()));
    let bytes = |value: i64| ceil_div(value, divisor.as_ref().map_or(1, |d| d.as_bytes()));

    let value = match resource {
        "limits.cpu" => cpu(limit(CPU, defaults.cpu_millis, true)?),
        "limits.memory" => bytes(limit(MEMORY, defaults.memory_bytes, false)?),
        "limits.ephemeral-storage" => bytes(limit(
            EPHEMERAL_STORAGE,
            defaults.ephemeral_storage_bytes,
            false,
        )?),
        "requests.cpu" => cpu(request(CPU, true)?),
        "requests.memory" => bytes(request(MEMORY, false)?),
        "requests.ephemeral-storage" => bytes(request(EPHEMERAL_STORAGE, false)?),
        other => match other.split_once('.') {
            Some(("requests", name)) if name.starts_with("hugepages-") => {
                bytes(request(name, false)?)
            }
            Some(("limits", name)) if name.starts_with("hugepages-") => {
                bytes(read(&limits, "limits", name)?.map_or(0, |q| q.as_bytes()))
            }
            _ => return Err(DownwardError::UnsupportedResource(other.to_string())),
        },
    };
    Ok(value.to_string())
}

fn parse(field: &str, q: &Quantity) -> Result<ParsedQuantity, DownwardError> {
    parse_quantity(&q.0).map_err(|source| DownwardError::Quantity {
        field: field.to_string(),
        source,
    })
}

/// `int64(math.Ceil(float64(a) / float64(b)))`, as upstream computes it.
fn ceil_div(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    (a as f64 / b as f64).ceil() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("1234-abcd".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front end".to_string()),
                ])),
                annotations: Some(BTreeMap::from([
                    ("build".to_string(), "line1\nline2 \"quoted\"".to_string()),
                    ("example.com/owner".to_string(), "team-a".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("builder".into()),
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            host_ips: vec!["10.0.0.5".into(), "fd00::5".into()],
            pod_ips: vec!["10.244.1.7".into(), "fd00:244::7".into()],
            allocatable: Allocatable {
                cpu_millis: 3500,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
            },
        }
    }

    fn selector(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: path.into(),
        }
    }

    #[test]
    fn field_values_a_user_sees() {
        let (p, f) = (pod(), facts());
        let cases: &[(&str, &str)] = &[
            ("metadata.name", "web-0"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "1234-abcd"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['example.com/owner']", "team-a"),
            ("spec.nodeName", "node-1"),
            ("spec.host", "node-1"),
            ("spec.serviceAccountName", "builder"),
            ("status.hostIP", "10.0.0.5"),
            ("status.hostIPs", "10.0.0.5,fd00::5"),
            ("status.podIP", "10.244.1.7"),
            ("status.podIPs", "10.244.1.7,fd00:244::7"),
            ("metadata.labels", "app=\"web\"\ntier=\"front end\""),
            (
                "metadata.annotations",
                "build=\"line1\\nline2 \\\"quoted\\\"\"\nexample.com/owner=\"team-a\"",
            ),
        ];
        for (path, want) in cases {
            let got = field_selector_value(&p, &selector(path), &f)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(got, *want, "{path}");
        }
    }

    #[test]
    fn pod_without_ips_yet() {
        let p = pod();
        let f = NodeFacts::default();
        assert_eq!(field_value(&p, "status.podIP", &f).unwrap(), "");
        assert_eq!(field_value(&p, "status.podIPs", &f).unwrap(), "");
        assert_eq!(
            field_value(&p, "status.hostIP", &f)
                .unwrap_err()
                .to_string(),
            "host IP unknown; known addresses: []"
        );
    }

    #[test]
    fn field_errors_carry_upstream_messages() {
        let (p, f) = (pod(), facts());
        let err = |path: &str| {
            field_selector_value(&p, &selector(path), &f)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("spec.containers"),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            err("metadata.name['x']"),
            "field label does not support subscript: metadata.name['x']"
        );
        assert_eq!(err("status.phase"), "unsupported fieldPath: status.phase");
        assert!(err("metadata.labels['bad key!']")
            .starts_with("invalid key subscript in metadata.labels['bad key!']: "));
        let v2 = ObjectFieldSelector {
            api_version: Some("v2".into()),
            field_path: "metadata.name".into(),
        };
        assert_eq!(
            field_selector_value(&p, &v2, &f).unwrap_err().to_string(),
            "unsupported pod version: v2"
        );
        assert_eq!(
            object_field_value(&p, "spec['x']").unwrap_err().to_string(),
            "fieldPath \"spec['x']\" does not support subscript"
        );
    }

    #[test]
    fn annotation_subscripts_are_validated_lowercased() {
        let mut p = pod();
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("Example.COM/Owner".into(), "x".into());
        assert_eq!(
            object_field_value(&p, "metadata.annotations['Example.COM/Owner']").unwrap(),
            "x"
        );
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("tab\there"), "\"tab\\there\"");
        assert_eq!(go_quote("nul\u{0}"), "\"nul\\x00\"");
        assert_eq!(go_quote("del\u{7f}"), "\"del\\x7f\"");
        assert_eq!(go_quote("héllo ✓"), "\"héllo ✓\"");
        assert_eq!(go_quote("nb\u{a0}sp"), "\"nb\\u00a0sp\"");
        assert_eq!(go_quote("zw\u{200b}"), "\"zw\\u200b\"");
        assert_eq!(go_quote("back\\slash"), "\"back\\\\slash\"");
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resource_values_round_up_by_divisor() {
        let alloc = facts().allocatable;
        let c = container(
            &[(CPU, "250m"), (MEMORY, "100Mi"), ("hugepages-2Mi", "4Mi")],
            &[(CPU, "1500m"), (MEMORY, "1Gi"), ("hugepages-2Mi", "4Mi")],
        );
        let q = |s: &str| Quantity(s.to_string());
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("limits.cpu", None, "2"),
            ("limits.cpu", Some("1m"), "1500"),
            ("limits.cpu", Some("1"), "2"),
            ("limits.cpu", Some("0"), "2"),
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("1m"), "250"),
            ("requests.cpu", Some("100m"), "3"),
            ("limits.memory", None, "1073741824"),
            ("limits.memory", Some("1Mi"), "1024"),
            ("limits.memory", Some("1M"), "1074"),
            ("requests.memory", Some("1Mi"), "100"),
            ("requests.memory", Some("1Gi"), "1"),
            ("limits.ephemeral-storage", Some("1Gi"), "100"),
            ("requests.ephemeral-storage", None, "0"),
            ("requests.hugepages-2Mi", Some("2Mi"), "2"),
            ("limits.hugepages-2Mi", None, "4194304"),
        ];
        for (resource, divisor, want) in cases {
            let d = divisor.map(q);
            let got = resource_value(&c, resource, d.as_ref(), &alloc)
                .unwrap_or_else(|e| panic!("{resource}: {e}"));
            assert_eq!(got, *want, "{resource} / {divisor:?}");
        }
    }

    #[test]
    fn missing_limits_fall_back_to_pod_level_then_node_allocatable() {
        let alloc = facts().allocatable;
        let c = container(&[], &[]);
        let mut p = pod();
        p.spec.as_mut().unwrap().containers = vec![c.clone()];
        let sel = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        };
        let value =
            |p: &Pod, s: ResourceFieldSelector| resource_selector_value(p, &c, &s, &alloc).unwrap();
        assert_eq!(value(&p, sel("limits.cpu", None)), "4", "3500m rounds up");
        assert_eq!(value(&p, sel("limits.cpu", Some("1m"))), "3500");
        assert_eq!(value(&p, sel("limits.memory", Some("1Gi"))), "8");
        assert_eq!(
            value(&p, sel("limits.ephemeral-storage", Some("1Gi"))),
            "100"
        );
        assert_eq!(value(&p, sel("requests.cpu", None)), "0");

        p.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                (CPU.to_string(), Quantity("2".into())),
                (MEMORY.to_string(), Quantity("2Gi".into())),
            ])),
            ..Default::default()
        });
        assert_eq!(value(&p, sel("limits.cpu", None)), "2");
        assert_eq!(value(&p, sel("limits.memory", Some("1Gi"))), "2");
        assert_eq!(
            value(&p, sel("limits.ephemeral-storage", Some("1Gi"))),
            "100"
        );
    }

    #[test]
    fn resource_of_another_container_and_errors() {
        let alloc = facts().allocatable;
        let mut p = pod();
        let mut side = container(&[(MEMORY, "64Mi")], &[]);
        side.name = "side".into();
        p.spec.as_mut().unwrap().init_containers = Some(vec![side]);
        let me = &p.spec.as_ref().unwrap().containers[0];
        let sel = |name: &str, resource: &str| ResourceFieldSelector {
            resource: resource.into(),
            divisor: Some(Quantity("1Mi".into())),
            container_name: Some(name.into()),
        };
        assert_eq!(
            resource_selector_value(&p, me, &sel("side", "requests.memory"), &alloc).unwrap(),
            "64"
        );
        assert_eq!(
            resource_selector_value(&p, me, &sel("ghost", "requests.memory"), &alloc)
                .unwrap_err()
                .to_string(),
            "container ghost not found"
        );
        assert_eq!(
            resource_selector_value(&p, me, &sel("side", "limits.gpu"), &alloc)
                .unwrap_err()
                .to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn requests_default_to_limits() {
        let c = container(&[], &[(MEMORY, "1Gi")]);
        assert_eq!(
            resource_value(&c, "requests.memory", None, &Allocatable::default()).unwrap(),
            "1073741824"
        );
    }
}
