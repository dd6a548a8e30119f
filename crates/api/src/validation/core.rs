//! Validation of the core/v1 kinds other than Pod (`pkg/apis/core/validation`): Service,
//! ConfigMap, Secret, Namespace, Node, Endpoints, PersistentVolume(Claim), LimitRange,
//! ResourceQuota and core Events.

use std::collections::HashSet;

use serde_json::Value;

use super::meta::validate_labels;
use super::names::{
    is_config_map_key, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, is_valid_port_num,
};
use super::pod::{parse_quantity, validate_port_ref};
use super::{get, get_arr, get_i64, get_obj, get_str, go_quote, json_eq_null, BadValue, Errs};

/// Upstream's `MaxSecretSize` (also the ConfigMap limit).
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
/// The NodePort range skiff allocates from (upstream's default `--service-node-port-range`).
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn spec_of(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

fn go_string_slice(v: &[Value]) -> BadValue {
    let items: Vec<String> = v
        .iter()
        .map(|s| go_quote(s.as_str().unwrap_or("")))
        .collect();
    BadValue::Go(format!("[]string{{{}}}", items.join(", ")))
}

fn cluster_ips(spec: &Value) -> Vec<Value> {
    let ips = get_arr(spec, &["clusterIPs"]);
    if !ips.is_empty() {
        return ips.to_vec();
    }
    match get_str(spec, &["clusterIP"]) {
        Some(ip) if !ip.is_empty() => vec![Value::String(ip.to_string())],
        _ => Vec::new(),
    }
}

fn is_headless(spec: &Value) -> bool {
    get_str(spec, &["clusterIP"]) == Some("None")
        || get_arr(spec, &["clusterIPs"])
            .first()
            .and_then(Value::as_str)
            == Some("None")
}

pub(crate) fn validate_service(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    let ty = get_str(spec, &["type"]).unwrap_or("");
    if let Some(old) = old {
        validate_cluster_ip_update(e, spec, spec_of(old));
    }
    let ports = get_arr(spec, &["ports"]);
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    match ty {
        "LoadBalancer" | "NodePort" if headless => e.invalid(
            "spec.clusterIPs[0]",
            "None",
            &format!("may not be set to 'None' for {ty} services"),
        ),
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                e.forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                );
            }
            if !get_arr(spec, &["ipFamilies"]).is_empty() {
                e.forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                );
            }
            if get(spec, &["ipFamilyPolicy"]).is_some() {
                e.forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                );
            }
            let cname = get_str(spec, &["externalName"]).unwrap_or("");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                e.required("spec.externalName", "");
            } else {
                let msgs = is_dns1123_subdomain(cname);
                e.invalid_each("spec.externalName", cname, msgs);
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = get_str(p, &["name"]).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            e.required(&format!("{pp}.name"), "");
        } else if !name.is_empty() {
            let msgs = is_dns1123_label(name);
            e.invalid_each(&format!("{pp}.name"), name, msgs);
            if !names.insert(name.to_string()) {
                e.duplicate(&format!("{pp}.name"), name);
            }
        }
        let port = get_i64(p, &["port"]).unwrap_or(0);
        for m in is_valid_port_num(port) {
            e.invalid(&format!("{pp}.port"), port, &m);
        }
        match get_str(p, &["protocol"]).unwrap_or("") {
            "" => e.required(&format!("{pp}.protocol"), ""),
            v if !PROTOCOLS.contains(&v) => {
                e.not_supported(&format!("{pp}.protocol"), v, PROTOCOLS)
            }
            _ => {}
        }
        validate_port_ref(e, get(p, &["targetPort"]), &format!("{pp}.targetPort"));
        if let Some(ap) = get_str(p, &["appProtocol"]) {
            let msgs = is_qualified_name(ap);
            e.invalid_each(&format!("{pp}.appProtocol"), ap, msgs);
        }
    }
    if let Some(sel) = get(spec, &["selector"]) {
        validate_labels(e, Some(sel), "spec.selector");
    }
    match get_str(spec, &["sessionAffinity"]).unwrap_or("") {
        "" => e.required("spec.sessionAffinity", ""),
        "ClientIP" => {
            let t = get_i64(
                spec,
                &["sessionAffinityConfig", "clientIP", "timeoutSeconds"],
            );
            match t {
                None => e.required("spec.sessionAffinityConfig.clientIP.timeoutSeconds", ""),
                Some(t) if !(1..=86400).contains(&t) => e.invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                ),
                _ => {}
            }
        }
        "None" => {
            if get(spec, &["sessionAffinityConfig"]).is_some() {
                e.forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                );
            }
        }
        v => e.not_supported("spec.sessionAffinity", v, &["ClientIP", "None"]),
    }
    for (i, ip) in get_arr(spec, &["clusterIPs"]).iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if ip != "None" && !super::names::is_valid_ip(ip) {
            e.invalid(&format!("spec.clusterIPs[{i}]"), ip, INVALID_IP);
        }
    }
    if get_arr(spec, &["clusterIPs"]).is_empty() {
        if let Some(ip) = get_str(spec, &["clusterIP"]).filter(|ip| !ip.is_empty()) {
            if ip != "None" && !super::names::is_valid_ip(ip) {
                e.invalid("spec.clusterIPs[0]", ip, INVALID_IP);
            }
        }
    }
    if let Some(pol) = get_str(spec, &["ipFamilyPolicy"]) {
        let allowed = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        if !allowed.contains(&pol) {
            e.not_supported("spec.ipFamilyPolicy", pol, &allowed);
        }
    }
    for (i, f) in get_arr(spec, &["ipFamilies"]).iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        if f != "IPv4" && f != "IPv6" {
            e.not_supported(&format!("spec.ipFamilies[{i}]"), f, &["IPv4", "IPv6"]);
        }
    }
    for (i, ip) in get_arr(spec, &["externalIPs"]).iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if !super::names::is_valid_ip(ip) {
            e.invalid(&format!("spec.externalIPs[{i}]"), ip, INVALID_IP);
        }
    }
    match ty {
        "" => e.required("spec.type", ""),
        t if !SERVICE_TYPES.contains(&t) => e.not_supported("spec.type", t, SERVICE_TYPES),
        _ => {}
    }
    let mut node_ports = HashSet::new();
    let mut seen_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let np = get_i64(p, &["nodePort"]).unwrap_or(0);
        let proto = get_str(p, &["protocol"]).unwrap_or("");
        if np != 0 {
            if ty == "ClusterIP" {
                e.forbidden(
                    &format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            } else if !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&np) {
                e.invalid(
                    &format!("{pp}.nodePort"),
                    np,
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                );
            }
            if !node_ports.insert((proto.to_string(), np)) {
                e.duplicate(&format!("{pp}.nodePort"), np);
            }
        }
        let port = get_i64(p, &["port"]).unwrap_or(0);
        if !seen_ports.insert((proto.to_string(), port)) {
            e.duplicate(
                &pp,
                BadValue::Go(format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(proto)
                )),
            );
        }
    }
    for (field, allowed) in [
        ("externalTrafficPolicy", ["Cluster", "Local"]),
        ("internalTrafficPolicy", ["Cluster", "Local"]),
    ] {
        if let Some(v) = get_str(spec, &[field]) {
            if !allowed.contains(&v) {
                e.not_supported(&format!("spec.{field}"), v, &allowed);
            }
        }
    }
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && !get_arr(spec, &["externalIPs"]).is_empty());
    if !externally_accessible && get(spec, &["externalTrafficPolicy"]).is_some() {
        e.invalid(
            "spec.externalTrafficPolicy",
            get_str(spec, &["externalTrafficPolicy"]).unwrap_or(""),
            "may only be set for externally-accessible services",
        );
    }
}

/// `validateUpgradeDowngradeClusterIPs`: an allocated cluster IP never changes (outside
/// changes to or from ExternalName).
fn validate_cluster_ip_update(e: &mut Errs, new: &Value, old: &Value) {
    if get_str(new, &["type"]) == Some("ExternalName")
        || get_str(old, &["type"]) == Some("ExternalName")
    {
        return;
    }
    if is_headless(new) && is_headless(old) {
        return;
    }
    let (n, o) = (cluster_ips(new), cluster_ips(old));
    if n.len() == o.len() {
        for (i, ip) in o.iter().enumerate() {
            if n.get(i) != Some(ip) {
                e.invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    go_string_slice(&n),
                    "may not change once set",
                );
            }
        }
    } else if n.is_empty() {
        e.invalid(
            "spec.clusterIPs[0]",
            go_string_slice(&n),
            "primary clusterIP can not be unset",
        );
    } else if n.first() != o.first() && !o.is_empty() {
        e.invalid(
            "spec.clusterIPs[0]",
            go_string_slice(&n),
            "may not change once set",
        );
    }
}

/// Decoded size of a base64 `[]byte` field.
fn base64_len(s: &str) -> usize {
    let pad = s.bytes().rev().take_while(|&c| c == b'=').count();
    (s.len() / 4 * 3).saturating_sub(pad)
}

pub(crate) fn validate_config_map(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let mut total = 0usize;
    let binary = get_obj(obj, &["binaryData"]);
    if let Some(data) = get_obj(obj, &["data"]) {
        for (k, v) in data {
            let f = format!("data[{k}]");
            let msgs = is_config_map_key(k);
            e.invalid_each(&f, k, msgs);
            if binary.is_some_and(|b| b.contains_key(k)) {
                e.invalid(&f, k, "duplicate of key present in binaryData");
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(b) = binary {
        for (k, v) in b {
            let msgs = is_config_map_key(k);
            e.invalid_each(&format!("binaryData[{k}]"), k, msgs);
            total += v.as_str().map_or(0, base64_len);
        }
    }
    if total > MAX_SECRET_SIZE {
        // Upstream passes `field.NewPath("")`, which prints as `[]`.
        e.too_long("[]", MAX_SECRET_SIZE);
    }
    if let Some(old) = old {
        immutable_data(e, obj, old, &["data", "binaryData"]);
    }
}

/// ConfigMaps and Secrets marked `immutable: true` keep their data (and the mark).
fn immutable_data(e: &mut Errs, new: &Value, old: &Value, fields: &[&str]) {
    if get(old, &["immutable"]).and_then(Value::as_bool) != Some(true) {
        return;
    }
    if get(new, &["immutable"]).and_then(Value::as_bool) != Some(true) {
        e.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for f in fields {
        if !json_eq_null(get(new, &[f]), get(old, &[f])) {
            e.forbidden(f, "field is immutable when `immutable` is set");
        }
    }
}

pub(crate) fn validate_secret(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let data = get_obj(obj, &["data"]);
    let mut total = 0usize;
    if let Some(d) = data {
        for (k, v) in d {
            let msgs = is_config_map_key(k);
            e.invalid_each(&format!("data[{k}]"), k, msgs);
            total += v.as_str().map_or(0, base64_len);
        }
    }
    if total > MAX_SECRET_SIZE {
        e.too_long("data", MAX_SECRET_SIZE);
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let nonempty = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match get_str(obj, &["type"]).unwrap_or("") {
        "kubernetes.io/service-account-token" => {
            let sa = get_str(
                obj,
                &[
                    "metadata",
                    "annotations",
                    "kubernetes.io/service-account.name",
                ],
            );
            if sa.unwrap_or("").is_empty() {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            e.required("data[.dockercfg]", "");
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            e.required("data[.dockerconfigjson]", "");
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            e.required("data[username]", "");
            e.required("data[password]", "");
        }
        "kubernetes.io/ssh-auth" if !nonempty("ssh-privatekey") => {
            e.required("data[ssh-privatekey]", "");
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                e.required("data[tls.crt]", "");
            }
            if !has("tls.key") {
                e.required("data[tls.key]", "");
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        e.immutable("type", get(obj, &["type"]), get(old, &["type"]));
        immutable_data(e, obj, old, &["data"]);
    }
}

/// `validateFinalizerName`: qualified, and either standard or domain-prefixed.
fn validate_finalizer(e: &mut Errs, name: &str, field: &str) {
    let msgs = is_qualified_name(name);
    if !msgs.is_empty() {
        e.invalid_each(field, name, msgs);
    } else if !name.contains('/') && name != "kubernetes" {
        e.invalid(
            field,
            name,
            "name is neither a standard finalizer name nor is it fully qualified",
        );
    }
}

pub(crate) fn validate_namespace(e: &mut Errs, obj: &Value, _old: Option<&Value>) {
    for (i, f) in get_arr(obj, &["spec", "finalizers"]).iter().enumerate() {
        validate_finalizer(
            e,
            f.as_str().unwrap_or(""),
            &format!("spec.finalizers[{i}]"),
        );
    }
}

fn is_valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

pub(crate) fn validate_node(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    let mut seen = HashSet::new();
    for (i, t) in get_arr(spec, &["taints"]).iter().enumerate() {
        let tp = format!("spec.taints[{i}]");
        let key = get_str(t, &["key"]).unwrap_or("");
        let msgs = is_qualified_name(key);
        e.invalid_each(&format!("{tp}.key"), key, msgs);
        let value = get_str(t, &["value"]).unwrap_or("");
        let msgs = is_valid_label_value(value);
        e.invalid_each(&format!("{tp}.value"), value, msgs);
        let effect = get_str(t, &["effect"]).unwrap_or("");
        match effect {
            "" => e.required(&format!("{tp}.effect"), ""),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => e.not_supported(
                &format!("{tp}.effect"),
                other,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            e.duplicate(
                &tp,
                BadValue::Go(format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:<nil>}}",
                    go_quote(key),
                    go_quote(value),
                    go_quote(effect)
                )),
            );
        }
    }
    for (i, c) in get_arr(spec, &["podCIDRs"]).iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        if !is_valid_cidr(c) {
            e.invalid(
                &format!("spec.podCIDRs[{i}]"),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            );
        }
    }
    if let Some(old) = old {
        let os = spec_of(old);
        let old_cidrs = get_arr(os, &["podCIDRs"]);
        if !old_cidrs.is_empty() && !json_eq_null(get(spec, &["podCIDRs"]), get(os, &["podCIDRs"]))
        {
            e.forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            );
        }
        let old_provider = get_str(os, &["providerID"]).unwrap_or("");
        if !old_provider.is_empty() && get_str(spec, &["providerID"]).unwrap_or("") != old_provider
        {
            e.forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            );
        }
    }
}

pub(crate) fn validate_endpoints(e: &mut Errs, obj: &Value) {
    for (i, s) in get_arr(obj, &["subsets"]).iter().enumerate() {
        let sp = format!("subsets[{i}]");
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in get_arr(s, &[list]).iter().enumerate() {
                let ip = get_str(a, &["ip"]).unwrap_or("");
                if !super::names::is_valid_ip(ip) {
                    e.invalid(&format!("{sp}.{list}[{j}].ip"), ip, INVALID_IP);
                }
            }
        }
        let ports = get_arr(s, &["ports"]);
        for (j, p) in ports.iter().enumerate() {
            let pp = format!("{sp}.ports[{j}]");
            let name = get_str(p, &["name"]).unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                e.required(&format!("{pp}.name"), "");
            } else if !name.is_empty() {
                let msgs = is_dns1123_label(name);
                e.invalid_each(&format!("{pp}.name"), name, msgs);
            }
            let port = get_i64(p, &["port"]).unwrap_or(0);
            for m in is_valid_port_num(port) {
                e.invalid(&format!("{pp}.port"), port, &m);
            }
            match get_str(p, &["protocol"]).unwrap_or("") {
                "" => e.required(&format!("{pp}.protocol"), ""),
                v if !PROTOCOLS.contains(&v) => {
                    e.not_supported(&format!("{pp}.protocol"), v, PROTOCOLS)
                }
                _ => {}
            }
        }
    }
}

fn validate_access_modes(e: &mut Errs, spec: &Value, detail: &str) {
    let modes = get_arr(spec, &["accessModes"]);
    if modes.is_empty() {
        e.required("spec.accessModes", detail);
    }
    for m in modes {
        let m = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            e.not_supported("spec.accessModes", m, ACCESS_MODES);
        }
    }
    let has_once_pod = modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod"));
    if has_once_pod && modes.len() > 1 {
        e.forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        );
    }
}

fn validate_volume_mode(e: &mut Errs, spec: &Value) {
    if let Some(m) = get_str(spec, &["volumeMode"]) {
        if m != "Block" && m != "Filesystem" {
            e.not_supported("spec.volumeMode", m, &["Block", "Filesystem"]);
        }
    }
}

const PV_NON_SOURCE_FIELDS: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];

pub(crate) fn validate_pv(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    validate_access_modes(e, spec, "");
    match get_obj(spec, &["capacity"]) {
        None => e.required("spec.capacity", ""),
        Some(c) if c.is_empty() => e.required("spec.capacity", ""),
        Some(c) => {
            if !c.contains_key("storage") || c.len() > 1 {
                let keys: Vec<&str> = c.keys().map(String::as_str).collect();
                e.not_supported(
                    "spec.capacity",
                    BadValue::Go(format!("[{}]", keys.join(" "))),
                    &["storage"],
                );
            }
            if let Some(q) = c.get("storage").and_then(Value::as_str) {
                if parse_quantity(q).is_some_and(|v| v <= 0.0) {
                    e.invalid("spec.capacity[storage]", q, "must be greater than zero");
                }
            }
        }
    }
    if let Some(p) = get_str(spec, &["persistentVolumeReclaimPolicy"]) {
        if !["Delete", "Recycle", "Retain"].contains(&p) {
            e.not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &["Delete", "Recycle", "Retain"],
            );
        }
    }
    let sources: Vec<&String> = spec
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !PV_NON_SOURCE_FIELDS.contains(&k.as_str()) && !v.is_null())
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    match sources.as_slice() {
        [] => e.required("spec", "must specify a volume type"),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                e.forbidden(
                    &format!("spec.{k}"),
                    "may not specify more than 1 volume type",
                );
            }
        }
    }
    if let Some(hp) = get(spec, &["hostPath", "path"]).and_then(Value::as_str) {
        if hp.is_empty() {
            e.required("spec.hostPath.path", "");
        }
    }
    validate_volume_mode(e, spec);
    if let Some(sc) = get_str(spec, &["storageClassName"]).filter(|s| !s.is_empty()) {
        let msgs = is_dns1123_subdomain(sc);
        e.invalid_each("spec.storageClassName", sc, msgs);
    }
    if let Some(old) = old {
        let strip = |s: &Value| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                m.retain(|k, _| !PV_NON_SOURCE_FIELDS.contains(&k.as_str()));
            }
            s
        };
        if !json_eq_null(Some(&strip(spec)), Some(&strip(spec_of(old)))) {
            e.forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            );
        }
        e.immutable(
            "spec.volumeMode",
            get(spec, &["volumeMode"]),
            get(spec_of(old), &["volumeMode"]),
        );
    }
}

pub(crate) fn validate_pvc(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    validate_access_modes(e, spec, "at least 1 access mode is required");
    match get(spec, &["resources", "requests", "storage"]) {
        None => e.required("spec.resources[storage]", ""),
        Some(q) => {
            let s = q
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string());
            if parse_quantity(&s).is_some_and(|v| v <= 0.0) {
                e.invalid(
                    "spec.resources[storage]",
                    s.as_str(),
                    "must be greater than zero",
                );
            }
        }
    }
    validate_volume_mode(e, spec);
    if let Some(sc) = get_str(spec, &["storageClassName"]).filter(|s| !s.is_empty()) {
        let msgs = is_dns1123_subdomain(sc);
        e.invalid_each("spec.storageClassName", sc, msgs);
    }
    if let Some(old) = old {
        let os = spec_of(old);
        let bound = get_str(old, &["status", "phase"]) == Some("Bound");
        let strip = |s: &Value, binding: bool| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                m.remove("volumeAttributesClassName");
                if bound {
                    if let Some(r) = m.get_mut("resources").and_then(Value::as_object_mut) {
                        r.remove("requests");
                    }
                }
                // Binding sets volumeName once.
                if binding {
                    m.remove("volumeName");
                }
            }
            s
        };
        let binding = get_str(os, &["volumeName"]).unwrap_or("").is_empty();
        if !json_eq_null(Some(&strip(spec, binding)), Some(&strip(os, binding))) {
            e.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            );
        }
    }
}

pub(crate) fn validate_limit_range(e: &mut Errs, obj: &Value) {
    let mut types = HashSet::new();
    for (i, item) in get_arr(obj, &["spec", "limits"]).iter().enumerate() {
        let ip = format!("spec.limits[{i}]");
        let ty = get_str(item, &["type"]).unwrap_or("");
        match ty {
            "Pod" | "Container" | "PersistentVolumeClaim" => {}
            "" => e.required(&format!("{ip}.type"), ""),
            other => e.not_supported(
                &format!("{ip}.type"),
                other,
                &["Container", "PersistentVolumeClaim", "Pod"],
            ),
        }
        if !types.insert(ty.to_string()) {
            e.duplicate(&format!("{ip}.type"), ty);
        }
        let q = |field: &str, r: &str| {
            get(item, &[field, r])
                .and_then(Value::as_str)
                .and_then(|s| parse_quantity(s).map(|v| (v, s.to_string())))
        };
        let keys: HashSet<String> = ["min", "max", "default", "defaultRequest"]
            .iter()
            .filter_map(|f| get_obj(item, &[f]))
            .flat_map(|m| m.keys().cloned())
            .collect();
        for r in keys {
            let (min, max) = (q("min", &r), q("max", &r));
            if let (Some((mn, ms)), Some((mx, xs))) = (&min, &max) {
                if mn > mx {
                    e.invalid(
                        &format!("{ip}.min[{r}]"),
                        ms.as_str(),
                        &format!("min value {ms} is greater than max value {xs}"),
                    );
                }
            }
            for f in ["default", "defaultRequest"] {
                if let Some((v, s)) = q(f, &r) {
                    if let Some((mn, ms)) = &min {
                        if v < *mn {
                            e.invalid(
                                &format!("{ip}.{f}[{r}]"),
                                s.as_str(),
                                &format!("min value {ms} is greater than {f} value {s}"),
                            );
                        }
                    }
                    if let Some((mx, xs)) = &max {
                        if v > *mx {
                            e.invalid(
                                &format!("{ip}.{f}[{r}]"),
                                s.as_str(),
                                &format!("{f} value {s} is greater than max value {xs}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn validate_resource_quota(e: &mut Errs, obj: &Value) {
    if let Some(hard) = get_obj(obj, &["spec", "hard"]) {
        for (k, v) in hard {
            let f = format!("spec.hard[{k}]");
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            match parse_quantity(&s) {
                Some(q) if q < 0.0 => e.invalid(&f, s.as_str(), "must be greater than or equal to 0"),
                Some(_) => {}
                None => e.invalid(
                    &f,
                    s.as_str(),
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                ),
            }
        }
    }
    const SCOPES: &[&str] = &[
        "BestEffort",
        "CrossNamespacePodAffinity",
        "NotBestEffort",
        "NotTerminating",
        "PriorityClass",
        "Terminating",
        "VolumeAttributesClass",
    ];
    for (i, s) in get_arr(obj, &["spec", "scopes"]).iter().enumerate() {
        let s = s.as_str().unwrap_or("");
        if !SCOPES.contains(&s) {
            e.not_supported(&format!("spec.scopes[{i}]"), s, SCOPES);
        }
    }
}

/// `legacyValidateEvent`: old-style events (no `eventTime`) only need their namespace
/// to agree with the involved object's; new-style ones need the reporting fields.
pub(crate) fn validate_event(e: &mut Errs, obj: &Value) {
    let ns = get_str(obj, &["metadata", "namespace"]).unwrap_or("");
    let ins = get_str(obj, &["involvedObject", "namespace"]).unwrap_or("");
    if get(obj, &["eventTime"]).is_none() {
        let ok = if ins.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == ins
        };
        if !ok {
            e.invalid(
                "involvedObject.namespace",
                ins,
                "does not match event.namespace",
            );
        }
        return;
    }
    if ins.is_empty() && ns != "default" && ns != "kube-system" {
        e.invalid(
            "involvedObject.namespace",
            ins,
            "does not match event.namespace",
        );
    }
    validate_reporting_fields(e, obj, "source");
}

/// The reporting fields every new-style event needs (`reportingController` is called
/// `source` when the request came through core/v1).
pub(crate) fn validate_reporting_fields(e: &mut Errs, obj: &Value, controller_field: &str) {
    let rc = get_str(obj, &["reportingController"]).unwrap_or("");
    if rc.is_empty() {
        e.required(controller_field, "");
    }
    let msgs = is_qualified_name(rc);
    e.invalid_each(controller_field, rc, msgs);
    for (f, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        let v = get_str(obj, &[f]).unwrap_or("");
        if v.is_empty() {
            e.required(f, "");
        }
        if v.len() > limit {
            e.invalid(f, "", &format!("can have at most {limit} characters"));
        }
    }
    let ty = get_str(obj, &["type"]).unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        e.invalid("type", "", &format!("has invalid value: {ty}"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, lines};
    use super::super::{validate_create, validate_update};
    use crate::defaults::{apply_create_defaults, apply_defaults};
    use serde_json::{json, Value};

    fn mk(kind: &str, body: Value) -> Value {
        let mut o = json!({"metadata": {"name": "x", "namespace": "default"}});
        if let (Some(m), Value::Object(b)) = (o.as_object_mut(), body) {
            m.extend(b);
        }
        apply_defaults(info("", kind), &mut o);
        apply_create_defaults(info("", kind), &mut o);
        o
    }

    fn check(kind: &str, body: Value) -> Vec<String> {
        lines(&validate_create(info("", kind), &mk(kind, body)))
    }

    #[test]
    fn services() {
        assert_eq!(
            check(
                "Service",
                json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "x"}}})
            ),
            Vec::<String>::new()
        );
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"spec": {}}), vec!["spec.ports: Required value"]),
            (
                json!({"spec": {"ports": [{"port": 70000}]}}),
                vec![
                    "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                json!({"spec": {"ports": [{"port": 80}, {"port": 81, "name": "b"}]}}),
                vec!["spec.ports[0].name: Required value"],
            ),
            (
                json!({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}}),
                vec!["spec.ports[1].name: Duplicate value: \"a\""],
            ),
            (
                json!({"spec": {"type": "Magic", "ports": [{"port": 80}]}}),
                vec!["spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""],
            ),
            (
                json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}),
                vec!["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"],
            ),
            (
                json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
                vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
            ),
            (
                json!({"spec": {"type": "ExternalName"}}),
                vec!["spec.externalName: Required value"],
            ),
        ];
        for (body, want) in cases {
            assert_eq!(check("Service", body.clone()), want, "{body}");
        }
        let old = mk(
            "Service",
            json!({"spec": {"ports": [{"port": 80}], "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"]}}),
        );
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.43.0.6");
        new["spec"]["clusterIPs"] = json!(["10.43.0.6"]);
        assert_eq!(
            lines(&validate_update(info("", "Service"), &new, &old)),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.6\"}: may not change once set"]
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        assert_eq!(
            check("ConfigMap", json!({"data": {"a/b": "x", "ok": "y"}})),
            vec!["data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
        );
        let big = "x".repeat(1024 * 1024 + 1);
        assert_eq!(
            check("ConfigMap", json!({"data": {"a": big}})),
            vec!["[]: Too long: may not be more than 1048576 bytes"]
        );
        assert_eq!(
            check(
                "Secret",
                json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})
            ),
            vec!["data[tls.key]: Required value"]
        );
        let old = mk("Secret", json!({"immutable": true, "data": {"a": "eA=="}}));
        let mut new = old.clone();
        new["data"]["a"] = json!("eQ==");
        assert_eq!(
            lines(&validate_update(info("", "Secret"), &new, &old)),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
    }

    #[test]
    fn events() {
        assert_eq!(
            check(
                "Event",
                json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "reason": "Started", "type": "Whatever"})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            check("Event", json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}})),
            vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
        // Upstream also runs the qualified-name check on the empty controller.
        let got = check(
            "Event",
            json!({"eventTime": "2026-01-01T00:00:00.000000Z",
                "involvedObject": {"namespace": "default"}, "type": "Normal",
                "reportingInstance": "n1", "action": "Pull", "reason": "Pulled"}),
        );
        assert_eq!(got[0], "source: Required value");
        assert_eq!(
            got[1],
            "source: Invalid value: \"\": name part must be non-empty"
        );
    }

    #[test]
    fn storage_and_nodes() {
        assert_eq!(
            check("PersistentVolumeClaim", json!({"spec": {}})),
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
        let ok = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(
            check("PersistentVolumeClaim", ok.clone()),
            Vec::<String>::new()
        );
        let pv = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/x"}}});
        let mut pvo = pv.clone();
        pvo["metadata"] = json!({"name": "pv1"});
        let mut pvo = pvo;
        apply_defaults(info("", "PersistentVolume"), &mut pvo);
        assert_eq!(
            lines(&validate_create(info("", "PersistentVolume"), &pvo)),
            Vec::<String>::new()
        );
        let mut node = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a", "effect": "Sometimes"}]}});
        apply_defaults(info("", "Node"), &mut node);
        assert_eq!(
            lines(&validate_create(info("", "Node"), &node)),
            vec!["spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""]
        );
        let mut ns = json!({"metadata": {"name": "dev"}, "spec": {"finalizers": ["foo"]}});
        apply_defaults(info("", "Namespace"), &mut ns);
        assert_eq!(
            lines(&validate_create(info("", "Namespace"), &ns)),
            vec!["spec.finalizers[0]: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified"]
        );
    }
}
