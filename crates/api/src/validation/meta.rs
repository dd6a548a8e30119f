//! ObjectMeta validation (`ValidateObjectMeta`, `ValidateObjectMetaUpdate`), labels,
//! annotations, and `metav1.LabelSelector` syntax and matching.

use serde_json::Value;

use super::names::{self, is_qualified_name, is_valid_label_value};
use super::{get, get_arr, get_obj, get_str, Errs, NameRule};
use crate::registry::ResourceInfo;

/// Upstream's `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

pub(crate) fn check_name(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    match rule {
        NameRule::Subdomain => names::name_is_dns_subdomain(name, prefix),
        NameRule::Label => names::name_is_dns_label(name, prefix),
        NameRule::Dns1035 => names::name_is_dns1035_label(name, prefix),
        NameRule::PathSegment => names::is_path_segment_name(name, prefix),
    }
}

pub(crate) fn validate_object_meta(e: &mut Errs, info: &ResourceInfo, obj: &Value, rule: NameRule) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = get_str(meta, &["name"]).unwrap_or("");
    let generate = get_str(meta, &["generateName"]).unwrap_or("");
    if !generate.is_empty() {
        let msgs = check_name(rule, generate, true);
        e.invalid_each("metadata.generateName", generate, msgs);
    }
    if name.is_empty() {
        if generate.is_empty() {
            e.required("metadata.name", "name or generateName is required");
        }
    } else {
        let msgs = check_name(rule, name, false);
        e.invalid_each("metadata.name", name, msgs);
    }
    if info.namespaced {
        match get_str(meta, &["namespace"]).unwrap_or("") {
            "" => e.required("metadata.namespace", ""),
            ns => {
                let msgs = names::is_dns1123_label(ns);
                e.invalid_each("metadata.namespace", ns, msgs);
            }
        }
    }
    if let Some(g) = get(meta, &["generation"]).and_then(Value::as_i64) {
        if g < 0 {
            e.invalid(
                "metadata.generation",
                g,
                "must be greater than or equal to 0",
            );
        }
    }
    validate_labels(e, get(meta, &["labels"]), "metadata.labels");
    validate_annotations(e, get(meta, &["annotations"]), "metadata.annotations");
    for (i, f) in get_arr(meta, &["finalizers"]).iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let field = format!("metadata.finalizers[{i}]");
        let msgs = is_qualified_name(f);
        e.invalid_each(&field, f, msgs);
    }
    for (i, r) in get_arr(meta, &["ownerReferences"]).iter().enumerate() {
        let field = format!("metadata.ownerReferences[{i}]");
        if get_str(r, &["apiVersion"]).unwrap_or("").is_empty() {
            e.invalid(
                &format!("{field}.apiVersion"),
                "",
                "version must not be empty",
            );
        }
        if get_str(r, &["kind"]).unwrap_or("").is_empty() {
            e.invalid(&format!("{field}.kind"), "", "kind must not be empty");
        }
        if get_str(r, &["name"]).unwrap_or("").is_empty() {
            e.invalid(&format!("{field}.name"), "", "name must not be empty");
        }
        if get_str(r, &["uid"]).unwrap_or("").is_empty() {
            e.invalid(&format!("{field}.uid"), "", "uid must not be empty");
        }
    }
    let controllers = get_arr(meta, &["ownerReferences"])
        .iter()
        .filter(|r| get(r, &["controller"]).and_then(Value::as_bool) == Some(true))
        .count();
    if controllers > 1 {
        e.invalid(
            "metadata.ownerReferences",
            super::BadValue::Go("[]v1.OwnerReference{...}".into()),
            "Only one reference can have Controller set to true.",
        );
    }
}

pub(crate) fn validate_object_meta_update(e: &mut Errs, new: &Value, old: &Value) {
    let n = new.get("metadata").unwrap_or(&Value::Null);
    let o = old.get("metadata").unwrap_or(&Value::Null);
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        e.immutable(&format!("metadata.{f}"), get(n, &[f]), get(o, &[f]));
    }
    // Once set, deletionTimestamp and deletionGracePeriodSeconds only come from DELETE.
    if get(o, &["deletionTimestamp"]).is_some() {
        e.immutable(
            "metadata.deletionTimestamp",
            get(n, &["deletionTimestamp"]),
            get(o, &["deletionTimestamp"]),
        );
    }
    if let (Some(ng), Some(og)) = (get(n, &["generation"]), get(o, &["generation"])) {
        if ng.as_i64() < og.as_i64() {
            e.invalid("metadata.generation", ng, "must not be decremented");
        }
    }
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
pub(crate) fn validate_labels(e: &mut Errs, labels: Option<&Value>, field: &str) {
    let Some(m) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        let msgs = is_qualified_name(k);
        e.invalid_each(field, k, msgs);
        let v = v.as_str().unwrap_or("");
        let msgs = is_valid_label_value(v);
        e.invalid_each(field, v, msgs);
    }
}

/// `ValidateAnnotations`: keys are qualified names (checked lowercased), total size limit.
pub(crate) fn validate_annotations(e: &mut Errs, ann: Option<&Value>, field: &str) {
    let Some(m) = ann.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in m {
        let msgs = is_qualified_name(&k.to_lowercase());
        e.invalid_each(field, k, msgs);
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        e.too_long(field, TOTAL_ANNOTATION_SIZE);
    }
}

/// `ValidateLabelSelector` (metav1 validation).
pub(crate) fn validate_label_selector(e: &mut Errs, sel: &Value, field: &str) {
    validate_labels(
        e,
        get(sel, &["matchLabels"]),
        &format!("{field}.matchLabels"),
    );
    for (i, r) in get_arr(sel, &["matchExpressions"]).iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let op = get_str(r, &["operator"]).unwrap_or("");
        let values = get_arr(r, &["values"]);
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    e.required(
                        &format!("{f}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    e.forbidden(
                        &format!("{f}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            _ => e.invalid(
                &format!("{f}.operator"),
                op,
                "not a valid selector operator",
            ),
        }
        let key = get_str(r, &["key"]).unwrap_or("");
        let msgs = is_qualified_name(key);
        e.invalid_each(&format!("{f}.key"), key, msgs);
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            let msgs = is_valid_label_value(v);
            e.invalid_each(&format!("{f}.values[{j}]"), v, msgs);
        }
    }
}

/// True when a LabelSelector selects nothing-in-particular (no labels, no expressions),
/// which workload kinds reject.
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    get_obj(sel, &["matchLabels"]).is_none_or(|m| m.is_empty())
        && get_arr(sel, &["matchExpressions"]).is_empty()
}

/// Whether `sel` (a metav1.LabelSelector) matches `labels`.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let empty = serde_json::Map::new();
    let labels = labels.and_then(Value::as_object).unwrap_or(&empty);
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(m) = get_obj(sel, &["matchLabels"]) {
        for (k, v) in m {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    for r in get_arr(sel, &["matchExpressions"]) {
        let key = get_str(r, &["key"]).unwrap_or("");
        let values: Vec<&str> = get_arr(r, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match get_str(r, &["operator"]).unwrap_or("") {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Go's `%#v` of a `*metav1.LabelSelector`, used when upstream prints a whole selector.
pub(crate) fn go_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "(*v1.LabelSelector)(nil)".into();
    };
    let exprs = get_arr(sel, &["matchExpressions"]);
    let exprs = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|r| {
                let vals: Vec<String> = get_arr(r, &["values"])
                    .iter()
                    .map(|v| super::go_quote(v.as_str().unwrap_or("")))
                    .collect();
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:[]string{{{}}}}}",
                    super::go_quote(get_str(r, &["key"]).unwrap_or("")),
                    super::go_quote(get_str(r, &["operator"]).unwrap_or("")),
                    vals.join(", ")
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        super::go_string_map(get(sel, &["matchLabels"])),
        exprs
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, lines};
    use super::super::{validate_create, validate_update};
    use serde_json::json;

    #[test]
    fn names_per_kind() {
        let cases = [
            ("", "ConfigMap", "Foo_bar", "metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            ("", "Namespace", "a.b", "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            ("", "Service", "1web", "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
            ("rbac.authorization.k8s.io", "ClusterRole", "a/b", "metadata.name: Invalid value: \"a/b\": may not contain '/'"),
        ];
        for (group, kind, name, want) in cases {
            let i = info(group, kind);
            let mut obj = json!({"metadata": {"name": name}});
            if i.namespaced {
                obj["metadata"]["namespace"] = json!("default");
            }
            let got = lines(&validate_create(i, &obj));
            assert!(got.contains(&want.to_string()), "{kind}: {got:#?}");
        }
        // RBAC names may have colons and capitals.
        let got = validate_create(
            info("rbac.authorization.k8s.io", "ClusterRole"),
            &json!({"metadata": {"name": "system:Admin"}}),
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn metadata_rules() {
        let cm = info("", "ConfigMap");
        let got = lines(&validate_create(
            cm,
            &json!({"metadata": {"namespace": "default"}}),
        ));
        assert_eq!(
            got,
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let got = lines(&validate_create(
            cm,
            &json!({"metadata": {"generateName": "web-", "namespace": "default",
                "labels": {"-bad": "ok", "good": "bad value"}}}),
        ));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with("metadata.labels: Invalid value: \"-bad\": name part must consist")
        );
        assert!(got[1]
            .starts_with("metadata.labels: Invalid value: \"bad value\": a valid label must be"));
        let big = "x".repeat(300 * 1024);
        let got = lines(&validate_create(
            cm,
            &json!({"metadata": {"name": "a", "namespace": "default", "annotations": {"a": big}}}),
        ));
        assert_eq!(
            got,
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
        let got = lines(&validate_update(
            cm,
            &json!({"metadata": {"name": "a", "namespace": "other"}}),
            &json!({"metadata": {"name": "a", "namespace": "default"}}),
        ));
        assert_eq!(
            got,
            vec!["metadata.namespace: Invalid value: \"other\": field is immutable"]
        );
    }
}
