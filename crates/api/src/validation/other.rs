//! Validation of the non-core, non-workload kinds: networking (Ingress, IngressClass,
//! NetworkPolicy), coordination (Lease), discovery (EndpointSlice), autoscaling (HPA),
//! storage (StorageClass), policy (PodDisruptionBudget), rbac (roles and bindings) and
//! events.k8s.io Events, after the matching upstream `pkg/apis/*/validation`.

use std::collections::HashSet;

use serde_json::Value;

use super::meta::validate_label_selector;
use super::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_path_segment_name,
    is_qualified_name, is_valid_ip, is_valid_port_name, is_valid_port_num,
    is_wildcard_dns1123_subdomain,
};
use super::workloads::{not_more_than_100_percent, validate_int_or_percent};
use super::{get, get_arr, get_i64, get_str, go_quote, json_eq_null, BadValue, Errs};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn spec_of(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

fn validate_host(e: &mut Errs, host: &str, field: &str) {
    if host.contains('*') {
        let msgs = is_wildcard_dns1123_subdomain(host);
        e.invalid_each(field, host, msgs);
    } else {
        let msgs = is_dns1123_subdomain(host);
        e.invalid_each(field, host, msgs);
    }
}

fn validate_ingress_backend(e: &mut Errs, b: &Value, p: &str) {
    let svc = get(b, &["service"]);
    let res = get(b, &["resource"]);
    match (svc, res) {
        (Some(_), Some(_)) => e.invalid(p, "", "cannot set both resource and service backends"),
        (None, Some(r)) => {
            if get_str(r, &["kind"]).unwrap_or("").is_empty() {
                e.required(&format!("{p}.resource.kind"), "");
            }
            if get_str(r, &["name"]).unwrap_or("").is_empty() {
                e.required(&format!("{p}.resource.name"), "");
            }
        }
        (Some(s), None) => {
            let name = get_str(s, &["name"]).unwrap_or("");
            if name.is_empty() {
                e.required(&format!("{p}.service.name"), "");
            } else {
                let msgs = is_dns1035_label(name);
                e.invalid_each(&format!("{p}.service.name"), name, msgs);
            }
            let pname = get_str(s, &["port", "name"]).unwrap_or("");
            let pnum = get_i64(s, &["port", "number"]).unwrap_or(0);
            match (pname.is_empty(), pnum == 0) {
                (false, false) => e.invalid(p, "", "cannot set both port name & port number"),
                (false, true) => {
                    let msgs = is_valid_port_name(pname);
                    e.invalid_each(&format!("{p}.service.port.name"), pname, msgs);
                }
                (true, false) => {
                    for m in is_valid_port_num(pnum) {
                        e.invalid(&format!("{p}.service.port.number"), pnum, &m);
                    }
                }
                (true, true) => e.required(p, "port name or number is required"),
            }
        }
        (None, None) => e.invalid(p, "", "resource or service backend is required"),
    }
}

pub(crate) fn validate_ingress(e: &mut Errs, obj: &Value) {
    let spec = spec_of(obj);
    let rules = get_arr(spec, &["rules"]);
    if let Some(b) = get(spec, &["defaultBackend"]) {
        validate_ingress_backend(e, b, "spec.defaultBackend");
    } else if rules.is_empty() {
        e.invalid(
            "spec.rules",
            BadValue::Go("[]networking.IngressRule(nil)".into()),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        if let Some(host) = get_str(r, &["host"]).filter(|h| !h.is_empty()) {
            if is_valid_ip(host) {
                e.invalid(
                    &format!("{rp}.host"),
                    host,
                    "must be a DNS name, not an IP address",
                );
            } else {
                validate_host(e, host, &format!("{rp}.host"));
            }
        }
        let Some(http) = get(r, &["http"]) else {
            continue;
        };
        let paths = get_arr(http, &["paths"]);
        if paths.is_empty() {
            e.required(&format!("{rp}.http.paths"), "");
        }
        for (j, path) in paths.iter().enumerate() {
            let pp = format!("{rp}.http.paths[{j}]");
            let pt = get_str(path, &["pathType"]).unwrap_or("");
            let p = get_str(path, &["path"]).unwrap_or("");
            match pt {
                "" => e.required(&format!("{pp}.pathType"), "pathType must be specified"),
                "Exact" | "Prefix" => {
                    if !p.starts_with('/') {
                        e.invalid(&format!("{pp}.path"), p, "must be an absolute path");
                    }
                    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                        if p.contains(bad) {
                            e.invalid(
                                &format!("{pp}.path"),
                                p,
                                &format!("must not contain '{bad}'"),
                            );
                        }
                    }
                    for bad in ["/..", "/."] {
                        if p.ends_with(bad) {
                            e.invalid(
                                &format!("{pp}.path"),
                                p,
                                &format!("cannot end with '{bad}'"),
                            );
                        }
                    }
                }
                "ImplementationSpecific" => {
                    if !p.is_empty() && !p.starts_with('/') {
                        e.invalid(&format!("{pp}.path"), p, "must be an absolute path");
                    }
                }
                other => e.not_supported(
                    &format!("{pp}.pathType"),
                    other,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                ),
            }
            match get(path, &["backend"]) {
                Some(b) => validate_ingress_backend(e, b, &format!("{pp}.backend")),
                None => e.invalid(
                    &format!("{pp}.backend"),
                    "",
                    "resource or service backend is required",
                ),
            }
        }
    }
    for (i, t) in get_arr(spec, &["tls"]).iter().enumerate() {
        for (j, h) in get_arr(t, &["hosts"]).iter().enumerate() {
            validate_host(
                e,
                h.as_str().unwrap_or(""),
                &format!("spec.tls[{i}].hosts[{j}]"),
            );
        }
    }
    if let Some(c) = get_str(spec, &["ingressClassName"]) {
        let msgs = is_dns1123_subdomain(c);
        e.invalid_each("spec.ingressClassName", c, msgs);
    }
}

pub(crate) fn validate_ingress_class(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let spec = spec_of(obj);
    let c = get_str(spec, &["controller"]).unwrap_or("");
    if c.is_empty() {
        e.required("spec.controller", "");
    } else if c.len() > 250 {
        e.too_long("spec.controller", 250);
    } else {
        let domain = c.split('/').next().unwrap_or("");
        let msgs = is_dns1123_subdomain(domain);
        e.invalid_each("spec.controller", c, msgs);
    }
    if let Some(old) = old {
        e.immutable(
            "spec.controller",
            get(spec, &["controller"]),
            get(spec_of(old), &["controller"]),
        );
    }
}

fn validate_np_ports(e: &mut Errs, ports: &[Value], p: &str) {
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("{p}[{i}]");
        if let Some(proto) = get_str(port, &["protocol"]) {
            if !["SCTP", "TCP", "UDP"].contains(&proto) {
                e.not_supported(&format!("{pp}.protocol"), proto, &["SCTP", "TCP", "UDP"]);
            }
        }
        match get(port, &["port"]) {
            Some(Value::Number(n)) => {
                let v = n.as_i64().unwrap_or(0);
                for m in is_valid_port_num(v) {
                    e.invalid(&format!("{pp}.port"), v, &m);
                }
                if let Some(end) = get_i64(port, &["endPort"]) {
                    if end < v {
                        e.invalid(
                            &format!("{pp}.endPort"),
                            end,
                            "must be greater than or equal to `port`",
                        );
                    }
                    for m in is_valid_port_num(end) {
                        e.invalid(&format!("{pp}.endPort"), end, &m);
                    }
                }
            }
            Some(Value::String(s)) => {
                let msgs = is_valid_port_name(s);
                e.invalid_each(&format!("{pp}.port"), s, msgs);
                if get(port, &["endPort"]).is_some() {
                    e.forbidden(
                        &format!("{pp}.endPort"),
                        "may not be specified when `port` is non-numeric",
                    );
                }
            }
            _ => {
                if get(port, &["endPort"]).is_some() {
                    e.required(
                        &format!("{pp}.port"),
                        "must be specified when `endPort` is specified",
                    );
                }
            }
        }
    }
}

fn is_valid_cidr(s: &str) -> bool {
    parse_cidr(s).is_some()
}

/// `addr/bits` as (the address's bits left-aligned in a u128, its family's width, bits).
fn parse_cidr(s: &str) -> Option<(u128, u8, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let (value, width) = match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) => ((u32::from(a) as u128) << 96, 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    let bits = bits.parse::<u8>().ok().filter(|b| *b <= width)?;
    Some((value, width, bits))
}

/// Upstream's check of an ipBlock's `except`: inside `cidr` and strictly smaller.
fn is_strict_subset(except: (u128, u8, u8), cidr: (u128, u8, u8)) -> bool {
    let mask = |bits: u8| {
        if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits as u32)
        }
    };
    except.1 == cidr.1 && cidr.2 < except.2 && (except.0 & mask(cidr.2)) == (cidr.0 & mask(cidr.2))
}

fn validate_np_peers(e: &mut Errs, peers: &[Value], p: &str) {
    for (i, peer) in peers.iter().enumerate() {
        let pp = format!("{p}[{i}]");
        let pod = get(peer, &["podSelector"]);
        let ns = get(peer, &["namespaceSelector"]);
        let ip = get(peer, &["ipBlock"]);
        let n = [pod, ns, ip].iter().filter(|x| x.is_some()).count();
        if n == 0 {
            e.required(&pp, "must specify a peer");
        } else if ip.is_some() && n > 1 {
            e.forbidden(&pp, "may not specify both ipBlock and another peer");
        }
        if let Some(s) = pod {
            validate_label_selector(e, s, &format!("{pp}.podSelector"));
        }
        if let Some(s) = ns {
            validate_label_selector(e, s, &format!("{pp}.namespaceSelector"));
        }
        if let Some(b) = ip {
            let cidr = get_str(b, &["cidr"]).unwrap_or("");
            if cidr.is_empty() {
                e.required(&format!("{pp}.ipBlock.cidr"), "");
            } else if !is_valid_cidr(cidr) {
                e.invalid(
                    &format!("{pp}.ipBlock.cidr"),
                    cidr,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                );
            }
            for (j, ex) in get_arr(b, &["except"]).iter().enumerate() {
                let ex = ex.as_str().unwrap_or("");
                let field = format!("{pp}.ipBlock.except[{j}]");
                match (parse_cidr(ex), parse_cidr(cidr)) {
                    (None, _) => e.invalid(
                        &field,
                        ex,
                        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                    ),
                    (Some(except), Some(block)) if !is_strict_subset(except, block) => {
                        e.invalid(&field, ex, "must be a strict subset of `cidr`")
                    }
                    _ => {}
                }
            }
        }
    }
}

pub(crate) fn validate_network_policy(e: &mut Errs, obj: &Value) {
    let spec = spec_of(obj);
    if let Some(s) = get(spec, &["podSelector"]) {
        validate_label_selector(e, s, "spec.podSelector");
    }
    for (i, r) in get_arr(spec, &["ingress"]).iter().enumerate() {
        let rp = format!("spec.ingress[{i}]");
        validate_np_ports(e, get_arr(r, &["ports"]), &format!("{rp}.ports"));
        validate_np_peers(e, get_arr(r, &["from"]), &format!("{rp}.from"));
    }
    for (i, r) in get_arr(spec, &["egress"]).iter().enumerate() {
        let rp = format!("spec.egress[{i}]");
        validate_np_ports(e, get_arr(r, &["ports"]), &format!("{rp}.ports"));
        validate_np_peers(e, get_arr(r, &["to"]), &format!("{rp}.to"));
    }
    let types = get_arr(spec, &["policyTypes"]);
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if t != "Ingress" && t != "Egress" {
            e.not_supported(&format!("spec.policyTypes[{i}]"), t, &["Egress", "Ingress"]);
        }
    }
    if types.len() > 2 {
        e.invalid(
            "spec.policyTypes",
            BadValue::Go(format!(
                "{:?}",
                types.iter().filter_map(Value::as_str).collect::<Vec<_>>()
            )),
            "may not specify more than two policyTypes",
        );
    }
}

pub(crate) fn validate_lease(e: &mut Errs, obj: &Value) {
    let spec = spec_of(obj);
    if let Some(d) = get_i64(spec, &["leaseDurationSeconds"]) {
        if d <= 0 {
            e.invalid("spec.leaseDurationSeconds", d, "must be greater than 0");
        }
    }
    e.non_negative("spec.leaseTransitions", get(spec, &["leaseTransitions"]));
    if let Some(s) = get_str(spec, &["strategy"]) {
        if s != "OldestEmulationVersion" {
            e.not_supported("spec.strategy", s, &["OldestEmulationVersion"]);
        }
    }
}

pub(crate) fn validate_endpoint_slice(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let at = get_str(obj, &["addressType"]).unwrap_or("");
    match at {
        "" => e.required("addressType", ""),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => e.not_supported("addressType", other, &["FQDN", "IPv4", "IPv6"]),
    }
    for (i, ep) in get_arr(obj, &["endpoints"]).iter().enumerate() {
        let p = format!("endpoints[{i}].addresses");
        let addrs = get_arr(ep, &["addresses"]);
        if addrs.is_empty() {
            e.required(&p, "must contain at least 1 address");
        } else if addrs.len() > 100 {
            e.too_many(&p, addrs.len(), 100);
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ok = match at {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => is_dns1123_subdomain(a).is_empty(),
            };
            if !ok {
                let msg = match at {
                    "IPv4" => "must be a valid IPv4 address",
                    "IPv6" => "must be a valid IPv6 address",
                    _ => "must be a valid DNS subdomain",
                };
                e.invalid(&format!("{p}[{j}]"), a, msg);
            }
        }
    }
    let mut names = HashSet::new();
    for (i, port) in get_arr(obj, &["ports"]).iter().enumerate() {
        let p = format!("ports[{i}]");
        let name = get_str(port, &["name"]).unwrap_or("");
        if !name.is_empty() {
            let msgs = is_dns1123_label(name);
            e.invalid_each(&format!("{p}.name"), name, msgs);
        }
        if !names.insert(name.to_string()) {
            e.duplicate(&format!("{p}.name"), name);
        }
        if let Some(n) = get_i64(port, &["port"]) {
            for m in is_valid_port_num(n) {
                e.invalid(&format!("{p}.port"), n, &m);
            }
        }
    }
    if let Some(old) = old {
        e.immutable(
            "addressType",
            get(obj, &["addressType"]),
            get(old, &["addressType"]),
        );
    }
}

fn validate_cross_version_ref(e: &mut Errs, r: &Value, p: &str) {
    for f in ["kind", "name"] {
        let v = get_str(r, &[f]).unwrap_or("");
        if v.is_empty() {
            e.required(&format!("{p}.{f}"), "");
        } else {
            let msgs = is_path_segment_name(v, false);
            e.invalid_each(&format!("{p}.{f}"), v, msgs);
        }
    }
}

pub(crate) fn validate_hpa(e: &mut Errs, obj: &Value, version: &str) {
    let spec = spec_of(obj);
    let min = get_i64(spec, &["minReplicas"]);
    let max = get_i64(spec, &["maxReplicas"]).unwrap_or(0);
    if let Some(m) = min.filter(|m| *m < 1) {
        e.invalid("spec.minReplicas", m, "must be greater than or equal to 1");
    }
    if max < 1 {
        e.invalid("spec.maxReplicas", max, "must be greater than 0");
    }
    if min.is_some_and(|m| max < m) {
        e.invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        );
    }
    validate_cross_version_ref(
        e,
        get(spec, &["scaleTargetRef"]).unwrap_or(&Value::Null),
        "spec.scaleTargetRef",
    );
    if version == "v1" {
        if let Some(t) = get_i64(spec, &["targetCPUUtilizationPercentage"]) {
            if t < 1 {
                e.invalid(
                    "spec.targetCPUUtilizationPercentage",
                    t,
                    "must be greater than 0",
                );
            }
        }
        return;
    }
    const TYPES: &[&str] = &[
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    for (i, m) in get_arr(spec, &["metrics"]).iter().enumerate() {
        let p = format!("spec.metrics[{i}]");
        let ty = get_str(m, &["type"]).unwrap_or("");
        let field = match ty {
            "" => {
                e.required(&format!("{p}.type"), "must specify a metric source type");
                continue;
            }
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            other => {
                e.not_supported(&format!("{p}.type"), other, TYPES);
                continue;
            }
        };
        let Some(src) = get(m, &[field]) else {
            e.required(
                &format!("{p}.{field}"),
                &format!("must populate information for the given metric source (type {ty})"),
            );
            continue;
        };
        if (field == "resource" || field == "containerResource")
            && get_str(src, &["name"]).unwrap_or("").is_empty()
        {
            e.required(&format!("{p}.{field}.name"), "must specify a resource name");
        }
        if let Some(target) = get(src, &["target"]) {
            let tp = format!("{p}.{field}.target");
            match get_str(target, &["type"]).unwrap_or("") {
                "Utilization" | "Value" | "AverageValue" => {}
                "" => e.required(&format!("{tp}.type"), "must specify a metric target type"),
                other => e.not_supported(
                    &format!("{tp}.type"),
                    other,
                    &["AverageValue", "Utilization", "Value"],
                ),
            }
            if let Some(u) = get_i64(target, &["averageUtilization"]) {
                if u < 1 {
                    e.invalid(
                        &format!("{tp}.averageUtilization"),
                        u,
                        "must be greater than 0",
                    );
                }
            }
        }
    }
}

pub(crate) fn validate_storage_class(e: &mut Errs, obj: &Value, old: Option<&Value>) {
    let prov = get_str(obj, &["provisioner"]).unwrap_or("");
    if prov.is_empty() {
        e.required("provisioner", "");
    } else {
        let msgs = is_qualified_name(&prov.to_lowercase());
        e.invalid_each("provisioner", prov, msgs);
    }
    if let Some(p) = get_str(obj, &["reclaimPolicy"]) {
        if p != "Delete" && p != "Retain" {
            e.not_supported("reclaimPolicy", p, &["Delete", "Retain"]);
        }
    }
    if let Some(m) = get_str(obj, &["volumeBindingMode"]) {
        if m != "Immediate" && m != "WaitForFirstConsumer" {
            e.not_supported(
                "volumeBindingMode",
                m,
                &["Immediate", "WaitForFirstConsumer"],
            );
        }
    }
    if let Some(old) = old {
        for f in ["parameters", "provisioner", "reclaimPolicy"] {
            if !json_eq_null(get(obj, &[f]), get(old, &[f])) {
                e.forbidden(f, &format!("updates to {f} are forbidden."));
            }
        }
        e.immutable(
            "volumeBindingMode",
            get(obj, &["volumeBindingMode"]),
            get(old, &["volumeBindingMode"]),
        );
    }
}

pub(crate) fn validate_pdb(e: &mut Errs, obj: &Value) {
    let spec = spec_of(obj);
    let (min, max) = (get(spec, &["minAvailable"]), get(spec, &["maxUnavailable"]));
    if min.is_some() && max.is_some() {
        e.invalid(
            "spec",
            BadValue::Go(spec.to_string()),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    for (f, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        if v.is_some() {
            let field = format!("spec.{f}");
            validate_int_or_percent(e, v, &field);
            not_more_than_100_percent(e, v, &field);
        }
    }
    if let Some(s) = get(spec, &["selector"]) {
        validate_label_selector(e, s, "spec.selector");
    }
    if let Some(p) = get_str(spec, &["unhealthyPodEvictionPolicy"]) {
        if p != "AlwaysAllow" && p != "IfHealthyBudget" {
            e.not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            );
        }
    }
}

/// `ValidatePolicyRule`.
fn validate_policy_rule(e: &mut Errs, rule: &Value, namespaced: bool, p: &str) {
    if get_arr(rule, &["verbs"]).is_empty() {
        e.required(
            &format!("{p}.verbs"),
            "verbs must contain at least one value",
        );
    }
    let urls = get_arr(rule, &["nonResourceURLs"]);
    if !urls.is_empty() {
        let v = BadValue::Go(format!(
            "[]string{{{}}}",
            urls.iter()
                .map(|u| go_quote(u.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if namespaced {
            e.invalid(
                &format!("{p}.nonResourceURLs"),
                v.clone(),
                "namespaced rules cannot apply to non-resource URLs",
            );
        }
        let mixed = ["apiGroups", "resources", "resourceNames"]
            .iter()
            .any(|f| !get_arr(rule, &[f]).is_empty());
        if mixed {
            e.invalid(
                &format!("{p}.nonResourceURLs"),
                v,
                "rules cannot apply to both regular resources and non-resource URLs",
            );
        }
        return;
    }
    if get_arr(rule, &["apiGroups"]).is_empty() {
        e.required(
            &format!("{p}.apiGroups"),
            "resource rules must supply at least one api group",
        );
    }
    if get_arr(rule, &["resources"]).is_empty() {
        e.required(
            &format!("{p}.resources"),
            "resource rules must supply at least one resource",
        );
    }
}

pub(crate) fn validate_role(e: &mut Errs, obj: &Value, namespaced: bool) {
    // An aggregated ClusterRole's rules are filled in by its controller.
    if let Some(agg) = get(obj, &["aggregationRule"]) {
        let sels = get_arr(agg, &["clusterRoleSelectors"]);
        if sels.is_empty() {
            e.required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            );
        }
        for (i, s) in sels.iter().enumerate() {
            validate_label_selector(e, s, &format!("aggregationRule.clusterRoleSelectors[{i}]"));
        }
    }
    for (i, r) in get_arr(obj, &["rules"]).iter().enumerate() {
        validate_policy_rule(e, r, namespaced, &format!("rules[{i}]"));
    }
}

fn go_role_ref(r: Option<&Value>) -> BadValue {
    let r = r.unwrap_or(&Value::Null);
    BadValue::Go(format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        go_quote(get_str(r, &["apiGroup"]).unwrap_or("")),
        go_quote(get_str(r, &["kind"]).unwrap_or("")),
        go_quote(get_str(r, &["name"]).unwrap_or(""))
    ))
}

pub(crate) fn validate_role_binding(
    e: &mut Errs,
    obj: &Value,
    old: Option<&Value>,
    namespaced: bool,
) {
    let rr = get(obj, &["roleRef"]).unwrap_or(&Value::Null);
    let group = get_str(rr, &["apiGroup"]).unwrap_or("");
    if group != RBAC_GROUP {
        e.not_supported("roleRef.apiGroup", group, &[RBAC_GROUP]);
    }
    let kind = get_str(rr, &["kind"]).unwrap_or("");
    if namespaced {
        if kind != "Role" && kind != "ClusterRole" {
            e.not_supported("roleRef.kind", kind, &["Role", "ClusterRole"]);
        }
    } else if kind != "ClusterRole" {
        e.not_supported("roleRef.kind", kind, &["ClusterRole"]);
    }
    let name = get_str(rr, &["name"]).unwrap_or("");
    if name.is_empty() {
        e.required("roleRef.name", "");
    } else {
        let msgs = is_path_segment_name(name, false);
        e.invalid_each("roleRef.name", name, msgs);
    }
    for (i, s) in get_arr(obj, &["subjects"]).iter().enumerate() {
        let p = format!("subjects[{i}]");
        let sname = get_str(s, &["name"]).unwrap_or("");
        if sname.is_empty() {
            e.required(&format!("{p}.name"), "");
        }
        let group = get_str(s, &["apiGroup"]).unwrap_or("");
        match get_str(s, &["kind"]).unwrap_or("") {
            "ServiceAccount" => {
                if !sname.is_empty() {
                    let msgs = is_dns1123_subdomain(sname);
                    e.invalid_each(&format!("{p}.name"), sname, msgs);
                }
                if !group.is_empty() {
                    e.not_supported(&format!("{p}.apiGroup"), group, &[""]);
                }
                if !namespaced && get_str(s, &["namespace"]).unwrap_or("").is_empty() {
                    e.required(&format!("{p}.namespace"), "");
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    e.not_supported(&format!("{p}.apiGroup"), group, &[RBAC_GROUP]);
                }
            }
            other => e.not_supported(
                &format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
    if let Some(old) = old {
        let (n, o) = (get(obj, &["roleRef"]), get(old, &["roleRef"]));
        if !json_eq_null(n, o) {
            e.invalid("roleRef", go_role_ref(n), "cannot change roleRef");
        }
    }
}

/// events.k8s.io/v1 Events: the legacy rules plus the strict ones of the new API.
pub(crate) fn validate_events_event(e: &mut Errs, obj: &Value) {
    let ns = get_str(obj, &["metadata", "namespace"]).unwrap_or("");
    let rns = get_str(obj, &["regarding", "namespace"]).unwrap_or("");
    match get(obj, &["eventTime"]) {
        None => {
            let ok = if rns.is_empty() {
                ns.is_empty() || ns == "default"
            } else {
                ns == rns
            };
            if !ok {
                e.invalid("regarding.namespace", rns, "does not match event.namespace");
            }
            e.required("eventTime", "");
            let ty = get_str(obj, &["type"]).unwrap_or("");
            if ty != "Normal" && ty != "Warning" {
                e.invalid("type", "", &format!("has invalid value: {ty}"));
            }
        }
        Some(_) => {
            if rns.is_empty() && ns != "default" && ns != "kube-system" {
                e.invalid("regarding.namespace", rns, "does not match event.namespace");
            }
            super::core::validate_reporting_fields(e, obj, "reportingController");
        }
    }
    if get(obj, &["deprecatedFirstTimestamp"]).is_some() {
        e.invalid("deprecatedFirstTimestamp", "", "needs to be unset");
    }
    if get_str(obj, &["note"]).is_some_and(|n| n.len() > 1024) {
        e.invalid("note", "", "can have at most 1024 characters");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{info, lines};
    use super::super::{validate_create, validate_update};
    use crate::defaults::apply_defaults;
    use serde_json::{json, Value};

    fn check(group: &str, kind: &str, mut o: Value) -> Vec<String> {
        let i = info(group, kind);
        if o.get("metadata").is_none() {
            o["metadata"] = if i.namespaced {
                json!({"name": "x", "namespace": "default"})
            } else {
                json!({"name": "x"})
            };
        }
        apply_defaults(i, &mut o);
        lines(&validate_create(i, &o))
    }

    #[test]
    fn ingress() {
        let n = "networking.k8s.io";
        let ok = json!({"spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        assert_eq!(check(n, "Ingress", ok), Vec::<String>::new());
        let bad = json!({"spec": {"rules": [{"host": "A_b", "http": {"paths": [
            {"path": "x", "backend": {"service": {"name": "web", "port": {}}}}]}}]}});
        let got = check(n, "Ingress", bad);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].starts_with(
            "spec.rules[0].host: Invalid value: \"A_b\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            got[1],
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"
        );
        assert_eq!(
            got[2],
            "spec.rules[0].http.paths[0].backend: Required value: port name or number is required"
        );
    }

    #[test]
    fn rbac() {
        let r = "rbac.authorization.k8s.io";
        assert_eq!(
            check(r, "Role", json!({"rules": [{"resources": ["pods"]}]})),
            vec![
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            ]
        );
        assert_eq!(
            check(
                r,
                "ClusterRole",
                json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})
            ),
            Vec::<String>::new()
        );
        let rb = json!({"metadata": {"name": "b", "namespace": "default"},
            "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "Robot", "name": "x"}]});
        assert_eq!(
            check(r, "RoleBinding", rb.clone()),
            vec!["subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""]
        );
        let mut old = rb.clone();
        old["subjects"] = json!([]);
        apply_defaults(info(r, "RoleBinding"), &mut old);
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("other");
        assert_eq!(
            lines(&validate_update(info(r, "RoleBinding"), &new, &old)),
            vec!["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"]
        );
    }

    #[test]
    fn misc() {
        assert_eq!(
            check("autoscaling", "HorizontalPodAutoscaler", json!({"spec": {"minReplicas": 3, "maxReplicas": 2,
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}}})),
            vec!["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        assert_eq!(
            check(
                "policy",
                "PodDisruptionBudget",
                json!({"spec": {"minAvailable": "150%"}})
            ),
            vec!["spec.minAvailable: Invalid value: \"150%\": must not be greater than 100%"]
        );
        assert_eq!(
            check(
                "coordination.k8s.io",
                "Lease",
                json!({"spec": {"leaseDurationSeconds": 0}})
            ),
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
        assert_eq!(
            check("storage.k8s.io", "StorageClass", json!({})),
            vec!["provisioner: Required value"]
        );
        assert_eq!(
            check("networking.k8s.io", "NetworkPolicy", json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 70}]}]}})),
            vec!["spec.ingress[0].ports[0].endPort: Invalid value: 70: must be greater than or equal to `port`"]
        );
        assert_eq!(
            check("networking.k8s.io", "NetworkPolicy", json!({"spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.1.0.0/24", "10.0.0.0/16", "10.0.0.0/8"]}}]}]}})),
            vec![
                "spec.egress[0].to[0].ipBlock.except[1]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
                "spec.egress[0].to[0].ipBlock.except[2]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.egress[0].to[0].ipBlock.except[3]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`",
            ]
        );
    }
}
