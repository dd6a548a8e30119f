//! PodSpec validation (`ValidatePodSpec` and friends), shared by Pods and every workload
//! template, and the Pod update rules (`ValidatePodUpdate`: a running pod's spec is
//! immutable except images, activeDeadlineSeconds, added tolerations and a few more).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::meta::{validate_annotations, validate_labels};
use super::names::{
    is_config_map_key, is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_qualified_name,
    is_valid_port_name, is_valid_port_num,
};
use super::{get, get_arr, get_i64, get_obj, get_str, BadValue, Errs};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// The message upstream gives when a pod update touches anything it may not.
pub(crate) const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

pub(crate) fn validate_pod(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(e, spec, "spec");
    if let Some(old) = old {
        validate_pod_spec_update(e, spec, old.get("spec").unwrap_or(&Value::Null));
    }
}

/// `ValidatePodTemplateSpec`: template labels/annotations, then the spec.
pub(crate) fn validate_pod_template(e: &mut Errs, tmpl: &Value, path: &str) {
    validate_labels(
        e,
        get(tmpl, &["metadata", "labels"]),
        &format!("{path}.metadata.labels"),
    );
    validate_annotations(
        e,
        get(tmpl, &["metadata", "annotations"]),
        &format!("{path}.metadata.annotations"),
    );
    validate_pod_spec(
        e,
        tmpl.get("spec").unwrap_or(&Value::Null),
        &format!("{path}.spec"),
    );
}

pub(crate) fn validate_pod_spec(e: &mut Errs, spec: &Value, path: &str) {
    let volumes = validate_volumes(e, spec, path);
    let host_network = get(spec, &["hostNetwork"]).and_then(Value::as_bool) == Some(true);
    let mut names = HashSet::new();
    let containers = get_arr(spec, &["containers"]);
    if containers.is_empty() {
        e.required(&format!("{path}.containers"), "");
    }
    for (i, c) in get_arr(spec, &["initContainers"]).iter().enumerate() {
        let p = format!("{path}.initContainers[{i}]");
        validate_container(e, c, &p, &volumes, &mut names, host_network, true);
    }
    for (i, c) in containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        validate_container(e, c, &p, &volumes, &mut names, host_network, false);
    }
    for (i, c) in get_arr(spec, &["ephemeralContainers"]).iter().enumerate() {
        let p = format!("{path}.ephemeralContainers[{i}]");
        validate_container(e, c, &p, &volumes, &mut names, host_network, true);
    }

    match get_str(spec, &["restartPolicy"]).unwrap_or("") {
        "" => e.required(&format!("{path}.restartPolicy"), ""),
        p if !RESTART_POLICIES.contains(&p) => {
            e.not_supported(&format!("{path}.restartPolicy"), p, RESTART_POLICIES)
        }
        _ => {}
    }
    match get_str(spec, &["dnsPolicy"]).unwrap_or("") {
        "" => e.required(&format!("{path}.dnsPolicy"), ""),
        "None" if get(spec, &["dnsConfig"]).is_none() => e.required(
            &format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ),
        p if !DNS_POLICIES.contains(&p) => {
            e.not_supported(&format!("{path}.dnsPolicy"), p, DNS_POLICIES)
        }
        _ => {}
    }
    if let Some(a) = get_i64(spec, &["activeDeadlineSeconds"]) {
        if !(1..=i64::from(i32::MAX)).contains(&a) {
            e.invalid(
                &format!("{path}.activeDeadlineSeconds"),
                a,
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    validate_labels(
        e,
        get(spec, &["nodeSelector"]),
        &format!("{path}.nodeSelector"),
    );
    for (field, check) in [
        (
            "serviceAccountName",
            is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", is_dns1123_subdomain),
        ("priorityClassName", is_dns1123_subdomain),
        ("hostname", is_dns1123_label),
        ("subdomain", is_dns1123_label),
    ] {
        if let Some(v) = get_str(spec, &[field]).filter(|v| !v.is_empty()) {
            let msgs = check(v);
            e.invalid_each(&format!("{path}.{field}"), v, msgs);
        }
    }
    validate_tolerations(
        e,
        get_arr(spec, &["tolerations"]),
        &format!("{path}.tolerations"),
    );
    for (i, s) in get_arr(spec, &["imagePullSecrets"]).iter().enumerate() {
        if get_str(s, &["name"]).unwrap_or("").is_empty() {
            e.required(&format!("{path}.imagePullSecrets[{i}].name"), "");
        }
    }
}

fn validate_volumes(e: &mut Errs, spec: &Value, path: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in get_arr(spec, &["volumes"]).iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        let name = get_str(v, &["name"]).unwrap_or("");
        if name.is_empty() {
            e.required(&format!("{p}.name"), "");
        } else {
            let msgs = is_dns1123_label(name);
            e.invalid_each(&format!("{p}.name"), name, msgs);
            if !names.insert(name.to_string()) {
                e.duplicate(&format!("{p}.name"), name);
            }
        }
        let sources: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| *k != "name" && !v.is_null())
                    .collect()
            })
            .unwrap_or_default();
        match sources.as_slice() {
            [] => e.required(&p, "must specify a volume type"),
            [(kind, src)] => validate_volume_source(e, kind, src, &format!("{p}.{kind}")),
            [_, rest @ ..] => {
                for (kind, _) in rest {
                    e.forbidden(
                        &format!("{p}.{kind}"),
                        "may not specify more than 1 volume type",
                    );
                }
            }
        }
    }
    names
}

fn validate_volume_source(e: &mut Errs, kind: &str, src: &Value, p: &str) {
    let required = |e: &mut Errs, field: &str| {
        if get_str(src, &[field]).unwrap_or("").is_empty() {
            e.required(&format!("{p}.{field}"), "");
        }
    };
    match kind {
        "hostPath" => required(e, "path"),
        "configMap" => required(e, "name"),
        "secret" => required(e, "secretName"),
        "persistentVolumeClaim" => required(e, "claimName"),
        "nfs" => {
            required(e, "server");
            required(e, "path");
        }
        _ => {}
    }
    if let Some(m) = get_i64(src, &["defaultMode"]) {
        if !(0..=0o777).contains(&m) {
            e.invalid(
                &format!("{p}.defaultMode"),
                m,
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
    for (i, item) in get_arr(src, &["items"]).iter().enumerate() {
        let ip = format!("{p}.items[{i}]");
        if kind == "configMap" || kind == "secret" {
            let key = get_str(item, &["key"]).unwrap_or("");
            if key.is_empty() {
                e.required(&format!("{ip}.key"), "");
            }
        }
        validate_local_path(
            e,
            get_str(item, &["path"]).unwrap_or(""),
            &format!("{ip}.path"),
        );
    }
}

/// `validateLocalDescendingPath`: relative, no `..` element.
fn validate_local_path(e: &mut Errs, path: &str, field: &str) {
    if path.is_empty() {
        e.required(field, "");
        return;
    }
    if path.starts_with('/') {
        e.invalid(field, path, "must be a relative path");
    }
    if path.split('/').any(|p| p == "..") {
        e.invalid(field, path, "must not contain '..'");
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_container(
    e: &mut Errs,
    c: &Value,
    p: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    host_network: bool,
    init: bool,
) {
    let name = get_str(c, &["name"]).unwrap_or("");
    if name.is_empty() {
        e.required(&format!("{p}.name"), "");
    } else {
        let msgs = is_dns1123_label(name);
        e.invalid_each(&format!("{p}.name"), name, msgs);
        if !names.insert(name.to_string()) {
            e.duplicate(&format!("{p}.name"), name);
        }
    }
    let image = get_str(c, &["image"]).unwrap_or("");
    if image.is_empty() {
        e.required(&format!("{p}.image"), "");
    } else if image.trim() != image {
        e.invalid(
            &format!("{p}.image"),
            image,
            "must not have leading or trailing whitespace",
        );
    }
    match get_str(c, &["imagePullPolicy"]).unwrap_or("") {
        "" => e.required(&format!("{p}.imagePullPolicy"), ""),
        v if !PULL_POLICIES.contains(&v) => {
            e.not_supported(&format!("{p}.imagePullPolicy"), v, PULL_POLICIES)
        }
        _ => {}
    }
    match get_str(c, &["terminationMessagePolicy"]).unwrap_or("") {
        "" => e.required(&format!("{p}.terminationMessagePolicy"), ""),
        "File" | "FallbackToLogsOnError" => {}
        v => e.not_supported(
            &format!("{p}.terminationMessagePolicy"),
            v,
            &["File", "FallbackToLogsOnError"],
        ),
    }
    validate_container_ports(
        e,
        get_arr(c, &["ports"]),
        &format!("{p}.ports"),
        host_network,
    );
    validate_env(e, get_arr(c, &["env"]), &format!("{p}.env"));
    for (i, src) in get_arr(c, &["envFrom"]).iter().enumerate() {
        let ep = format!("{p}.envFrom[{i}]");
        let n = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| get(src, &[k]).is_some())
            .count();
        if n == 0 {
            e.invalid(
                &ep,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            );
        } else if n > 1 {
            e.invalid(
                &ep,
                "",
                "may not have more than one field specified at a time",
            );
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in get_arr(c, &["volumeMounts"]).iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{i}]");
        let vname = get_str(m, &["name"]).unwrap_or("");
        if vname.is_empty() {
            e.required(&format!("{mp}.name"), "");
        } else if !volumes.contains(vname) {
            e.not_found(&format!("{mp}.name"), vname);
        }
        let path = get_str(m, &["mountPath"]).unwrap_or("");
        if path.is_empty() {
            e.required(&format!("{mp}.mountPath"), "");
        } else if !mount_paths.insert(path.to_string()) {
            e.invalid(&format!("{mp}.mountPath"), path, "must be unique");
        }
        if let Some(sub) = get_str(m, &["subPath"]).filter(|s| !s.is_empty()) {
            if sub.starts_with('/') {
                e.invalid(&format!("{mp}.subPath"), sub, "must be a relative path");
            }
            if sub.split('/').any(|s| s == "..") {
                e.invalid(&format!("{mp}.subPath"), sub, "must not contain '..'");
            }
        }
    }
    let sidecar = init && get_str(c, &["restartPolicy"]) == Some("Always");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(pr) = get(c, &[probe]) {
            let pp = format!("{p}.{probe}");
            if init && !sidecar {
                e.forbidden(
                    &pp,
                    "may not be set for init containers without restartPolicy=Always",
                );
                continue;
            }
            validate_probe(e, pr, &pp, probe != "readinessProbe");
        }
    }
    if let Some(rp) = get_str(c, &["restartPolicy"]) {
        if !init {
            e.forbidden(
                &format!("{p}.restartPolicy"),
                "may not be set for non-init containers",
            );
        } else if rp != "Always" {
            e.not_supported(&format!("{p}.restartPolicy"), rp, &["Always"]);
        }
    }
    validate_resources(
        e,
        c.get("resources").unwrap_or(&Value::Null),
        &format!("{p}.resources"),
    );
}

fn validate_container_ports(e: &mut Errs, ports: &[Value], p: &str, host_network: bool) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("{p}[{i}]");
        if let Some(name) = get_str(port, &["name"]).filter(|n| !n.is_empty()) {
            let msgs = is_valid_port_name(name);
            e.invalid_each(&format!("{pp}.name"), name, msgs);
            if !names.insert(name.to_string()) {
                e.duplicate(&format!("{pp}.name"), name);
            }
        }
        let cp = get_i64(port, &["containerPort"]).unwrap_or(0);
        if cp == 0 {
            e.required(&format!("{pp}.containerPort"), "");
        } else {
            for m in is_valid_port_num(cp) {
                e.invalid(&format!("{pp}.containerPort"), cp, &m);
            }
        }
        let hp = get_i64(port, &["hostPort"]).unwrap_or(0);
        if hp != 0 {
            for m in is_valid_port_num(hp) {
                e.invalid(&format!("{pp}.hostPort"), hp, &m);
            }
            if host_network && hp != cp {
                e.invalid(
                    &format!("{pp}.hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
        }
        match get_str(port, &["protocol"]).unwrap_or("") {
            "" => e.required(&format!("{pp}.protocol"), ""),
            v if !PROTOCOLS.contains(&v) => {
                e.not_supported(&format!("{pp}.protocol"), v, PROTOCOLS)
            }
            _ => {}
        }
    }
}

fn validate_env(e: &mut Errs, env: &[Value], p: &str) {
    for (i, ev) in env.iter().enumerate() {
        let ep = format!("{p}[{i}]");
        let name = get_str(ev, &["name"]).unwrap_or("");
        if name.is_empty() {
            e.required(&format!("{ep}.name"), "");
        } else {
            let msgs = is_env_var_name(name);
            e.invalid_each(&format!("{ep}.name"), name, msgs);
        }
        let Some(from) = get(ev, &["valueFrom"]) else {
            continue;
        };
        let fp = format!("{ep}.valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
            "fileKeyRef",
        ]
        .into_iter()
        .filter(|k| get(from, &[k]).is_some())
        .collect();
        if !get_str(ev, &["value"]).unwrap_or("").is_empty() {
            e.invalid(&fp, "", "may not be specified when `value` is not empty");
        }
        match sources.len() {
            0 => e.invalid(
                &fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ),
            1 => {}
            _ => e.invalid(&fp, "", "may not have more than one field specified at a time"),
        }
        for r in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(kr) = get(from, &[r]) {
                let key = get_str(kr, &["key"]).unwrap_or("");
                if key.is_empty() {
                    e.required(&format!("{fp}.{r}.key"), "");
                } else {
                    let msgs = is_config_map_key(key);
                    e.invalid_each(&format!("{fp}.{r}.key"), key, msgs);
                }
            }
        }
        if let Some(fr) = get(from, &["fieldRef"]) {
            if get_str(fr, &["fieldPath"]).unwrap_or("").is_empty() {
                e.required(&format!("{fp}.fieldRef.fieldPath"), "");
            }
        }
    }
}

fn validate_probe(e: &mut Errs, pr: &Value, p: &str, must_succeed_once: bool) {
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ] {
        e.non_negative(&format!("{p}.{f}"), get(pr, &[f]));
    }
    if must_succeed_once {
        if let Some(s) = get_i64(pr, &["successThreshold"]) {
            if s != 1 {
                e.invalid(&format!("{p}.successThreshold"), s, "must be 1");
            }
        }
    }
    validate_handler(e, pr, p);
}

/// `validateHandler`: exactly one of exec/httpGet/tcpSocket/grpc (and sleep for hooks).
pub(crate) fn validate_handler(e: &mut Errs, h: &Value, p: &str) {
    let kinds: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc", "sleep"]
        .into_iter()
        .filter(|k| get(h, &[k]).is_some())
        .collect();
    match kinds.as_slice() {
        [] => e.required(p, "must specify a handler type"),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                e.forbidden(
                    &format!("{p}.{k}"),
                    "may not specify more than 1 handler type",
                );
            }
        }
    }
    if let Some(hg) = get(h, &["httpGet"]) {
        validate_port_ref(e, get(hg, &["port"]), &format!("{p}.httpGet.port"));
        if let Some(s) = get_str(hg, &["scheme"]) {
            if s != "HTTP" && s != "HTTPS" {
                e.not_supported(&format!("{p}.httpGet.scheme"), s, &["HTTP", "HTTPS"]);
            }
        }
    }
    if let Some(ts) = get(h, &["tcpSocket"]) {
        validate_port_ref(e, get(ts, &["port"]), &format!("{p}.tcpSocket.port"));
    }
    if let Some(ex) = get(h, &["exec"]) {
        if get_arr(ex, &["command"]).is_empty() {
            e.required(&format!("{p}.exec.command"), "");
        }
    }
}

/// An IntOrString port: a number in range or an IANA service name.
pub(crate) fn validate_port_ref(e: &mut Errs, port: Option<&Value>, field: &str) {
    match port {
        Some(Value::Number(n)) => {
            let v = n.as_i64().unwrap_or(0);
            for m in is_valid_port_num(v) {
                e.invalid(field, v, &m);
            }
        }
        Some(Value::String(s)) => {
            let msgs = is_valid_port_name(s);
            e.invalid_each(field, s, msgs);
        }
        _ => e.required(field, ""),
    }
}

fn validate_tolerations(e: &mut Errs, tols: &[Value], p: &str) {
    for (i, t) in tols.iter().enumerate() {
        let tp = format!("{p}[{i}]");
        let key = get_str(t, &["key"]).unwrap_or("");
        let op = get_str(t, &["operator"]).unwrap_or("");
        if !key.is_empty() {
            let msgs = is_qualified_name(key);
            e.invalid_each(&format!("{tp}.key"), key, msgs);
        } else if op != "Exists" {
            e.invalid(
                &format!("{tp}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        let effect = get_str(t, &["effect"]).unwrap_or("");
        if get(t, &["tolerationSeconds"]).is_some() && effect != "NoExecute" {
            e.invalid(
                &format!("{tp}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        let value = get_str(t, &["value"]).unwrap_or("");
        match op {
            "" | "Equal" => {
                let msgs = super::names::is_valid_label_value(value);
                e.invalid_each(&format!("{tp}.value"), value, msgs);
            }
            "Exists" => {
                if !value.is_empty() {
                    e.invalid(
                        &format!("{tp}.operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            _ => e.not_supported(&format!("{tp}.operator"), op, &["Equal", "Exists"]),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            e.not_supported(
                &format!("{tp}.effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

const STANDARD_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "storage"];

/// Resource names: the standard ones, `hugepages-*`, or a domain-qualified extended name.
fn validate_resource_name(e: &mut Errs, name: &str, field: &str) {
    if STANDARD_RESOURCES.contains(&name) || name.starts_with("hugepages-") {
        return;
    }
    let msgs = is_qualified_name(name);
    if !msgs.is_empty() {
        e.invalid_each(field, name, msgs);
    } else if !name.contains('/') {
        e.invalid(
            field,
            name,
            "must be a standard resource type or fully qualified",
        );
    }
}

pub(crate) fn validate_resources(e: &mut Errs, r: &Value, p: &str) {
    let mut limits = BTreeMap::new();
    if let Some(l) = get_obj(r, &["limits"]) {
        for (k, v) in l {
            let f = format!("{p}.limits[{k}]");
            validate_resource_name(e, k, &f);
            if let Some(q) = check_quantity(e, v, &f) {
                limits.insert(k.clone(), (q, quantity_str(v)));
            }
        }
    }
    if let Some(rq) = get_obj(r, &["requests"]) {
        for (k, v) in rq {
            let f = format!("{p}.requests[{k}]");
            validate_resource_name(e, k, &f);
            let Some(q) = check_quantity(e, v, &f) else {
                continue;
            };
            if let Some((lq, ls)) = limits.get(k) {
                if q > *lq {
                    e.invalid(
                        &f,
                        quantity_str(v),
                        &format!("must be less than or equal to {k} limit of {ls}"),
                    );
                }
            }
        }
    }
}

fn quantity_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check_quantity(e: &mut Errs, v: &Value, field: &str) -> Option<f64> {
    let s = quantity_str(v);
    match parse_quantity(&s) {
        Some(q) if q < 0.0 => {
            e.invalid(
                field,
                BadValue::Str(s),
                "must be greater than or equal to 0",
            );
            None
        }
        Some(q) => Some(q),
        None => {
            e.invalid(
                field,
                BadValue::Str(s),
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            );
            None
        }
    }
}

/// A Kubernetes quantity as a float: enough to compare requests with limits.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// `ValidatePodUpdate`'s spec rule: copy the mutable fields from new onto old and require
/// the rest to be equal.
fn validate_pod_spec_update(e: &mut Errs, new: &Value, old: &Value) {
    let mut munged = new.clone();
    for list in ["containers", "initContainers"] {
        let olds = get_arr(old, &[list]);
        if let Some(items) = munged.get_mut(list).and_then(Value::as_array_mut) {
            if items.len() == olds.len() {
                for (n, o) in items.iter_mut().zip(olds) {
                    if let (Some(n), Some(img)) = (n.as_object_mut(), o.get("image")) {
                        n.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    let Some(m) = munged.as_object_mut() else {
        return;
    };
    // activeDeadlineSeconds may be set or lowered, never removed or raised.
    let new_ads = get_i64(new, &["activeDeadlineSeconds"]);
    let old_ads = get_i64(old, &["activeDeadlineSeconds"]);
    match (old_ads, new_ads) {
        (_, None) if old_ads.is_some() => e.invalid(
            "spec.activeDeadlineSeconds",
            BadValue::Null,
            "must not update from a positive integer to nil value",
        ),
        (Some(o), Some(n)) if n > o => e.invalid(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        ),
        _ => {}
    }
    restore(m, old, "activeDeadlineSeconds");
    // Tolerations may only be added to.
    let old_tols = get_arr(old, &["tolerations"]);
    let new_tols = get_arr(new, &["tolerations"]);
    if old_tols.iter().all(|t| new_tols.contains(t)) {
        restore(m, old, "tolerations");
    }
    if get_i64(old, &["terminationGracePeriodSeconds"]).is_some_and(|g| g < 0)
        && get_i64(new, &["terminationGracePeriodSeconds"]) == Some(1)
    {
        restore(m, old, "terminationGracePeriodSeconds");
    }
    // Scheduling gates may be removed; nodeName is set through the binding subresource.
    restore(m, old, "schedulingGates");
    if !super::json_eq_null(Some(&munged), Some(old)) {
        e.forbidden("spec", POD_UPDATE_FORBIDDEN);
    }
}

fn restore(m: &mut serde_json::Map<String, Value>, old: &Value, key: &str) {
    match old.get(key) {
        Some(v) => {
            m.insert(key.into(), v.clone());
        }
        None => {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, lines};
    use super::super::{validate_create, validate_update};
    use crate::defaults::apply_defaults;
    use serde_json::{json, Value};

    fn pod(spec: Value) -> Value {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        apply_defaults(info("", "Pod"), &mut p);
        p
    }

    fn check(spec: Value) -> Vec<String> {
        lines(&validate_create(info("", "Pod"), &pod(spec)))
    }

    #[test]
    fn valid_pod_passes() {
        let got = check(json!({"containers": [{"name": "web", "image": "nginx",
            "ports": [{"containerPort": 80, "name": "http"}],
            "env": [{"name": "A", "value": "1"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "resources": {"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "500m"}},
            "livenessProbe": {"httpGet": {"path": "/", "port": "http"}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]}));
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn pod_errors_match_upstream() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"containers": []}), vec!["spec.containers: Required value"]),
            (
                json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]}),
                vec!["spec.containers[1].name: Duplicate value: \"a\""],
            ),
            (
                json!({"containers": [{"name": "A_b"}]}),
                vec![
                    "spec.containers[0].name: Invalid value: \"A_b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                    "spec.containers[0].image: Required value",
                ],
            ),
            (
                json!({"restartPolicy": "Foo", "containers": [{"name": "a", "image": "x"}]}),
                vec!["spec.restartPolicy: Unsupported value: \"Foo\": supported values: \"Always\", \"OnFailure\", \"Never\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "imagePullPolicy": "Sometimes",
                    "ports": [{"containerPort": 70000, "protocol": "ICMP"}]}]}),
                vec![
                    "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x",
                    "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}),
                vec!["spec.containers[0].volumeMounts[0].name: Not found: \"nope\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x",
                    "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}]}),
                vec!["spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x"}],
                    "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}),
                vec!["spec.volumes[1].name: Duplicate value: \"v\""],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x", "env": [{"name": "A=B"}]}]}),
                vec!["spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"],
            ),
            (
                json!({"containers": [{"name": "a", "image": "x",
                    "livenessProbe": {"successThreshold": 2, "exec": {"command": ["true"]}}}]}),
                vec!["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(check(spec.clone()), want, "{spec}");
        }
    }

    #[test]
    fn pod_update_rules() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x:1"}]}));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(
            lines(&validate_update(info("", "Pod"), &new, &old)),
            Vec::<String>::new()
        );
        let mut bad = old.clone();
        bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        assert_eq!(
            lines(&validate_update(info("", "Pod"), &bad, &old)),
            vec![format!("spec: Forbidden: {}", super::POD_UPDATE_FORBIDDEN)]
        );
    }
}
