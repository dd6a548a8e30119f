//! Rules that look beyond the object being written: a namespaced object needs a live
//! namespace (upstream's NamespaceLifecycle admission), built-in namespaces cannot be
//! deleted, and a Service gets a cluster IP and node ports from the configured ranges
//! (upstream's IP and port allocators, here a scan of existing Services under a lock).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use api::registry::{self, ResourceInfo};
use store::ListRequest;

use crate::errors::{ApiError, ApiResult};
use crate::objects;
use crate::ApiServer;

/// Namespaces that exist from the first start and may not be deleted.
pub const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];
/// Of those, the ones upstream refuses to delete.
pub const UNDELETABLE_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

fn namespaces() -> &'static ResourceInfo {
    registry::lookup("", "v1", "namespaces").expect("namespaces are registered")
}

/// Refuse new objects in a namespace that does not exist or is terminating.
pub async fn check_namespace_for_create(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> ApiResult<()> {
    if !info.namespaced {
        return Ok(());
    }
    let key = namespaces().key(None, namespace);
    let kv = server
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::internal(format!("reading namespace {namespace}: {e}")))?;
    let Some(kv) = kv else {
        return Err(ApiError::namespace_not_found(namespace));
    };
    let ns = objects::decode(namespaces(), &kv)?;
    let terminating = objects::is_deleting(&ns) || ns["status"]["phase"] == "Terminating";
    // Upstream lets events be written into a terminating namespace, so controllers can
    // report what the deletion is doing.
    if terminating && info.kind != "Event" {
        let qualified = crate::errors::qualified_resource(info);
        return Err(ApiError::forbidden(format!(
            "{qualified} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
        ))
        .with_details(json!({
            "name": name,
            "kind": info.plural,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}],
        })));
    }
    Ok(())
}

pub fn check_namespace_delete(name: &str) -> ApiResult<()> {
    if UNDELETABLE_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        ))
        .with_details(json!({"name": name, "kind": "namespaces"})));
    }
    Ok(())
}

/// Upstream's DefaultStorageClass admission: a new claim that names no class (the field
/// absent, not `""`, and no beta class annotation) gets the default StorageClass, the
/// newest of those annotated `is-default-class: "true"` (ties by name), if there is one.
pub async fn default_storage_class(server: &ApiServer, claim: &mut Value) -> ApiResult<()> {
    let has_class = !claim["spec"]["storageClassName"].is_null()
        || !claim["metadata"]["annotations"][api::volumes::ANN_BETA_STORAGE_CLASS].is_null();
    if has_class {
        return Ok(());
    }
    let classes = registry::lookup("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ApiError::internal("storageclasses not registered"))?;
    let list = server
        .store
        .list(ListRequest {
            prefix: classes.collection_prefix(None),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(format!("listing storage classes for the default: {e}")))?;
    let mut best: Option<(String, String)> = None;
    for kv in &list.items {
        let class: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let ann = &class["metadata"]["annotations"];
        let default = ann[api::volumes::ANN_DEFAULT_CLASS] == "true"
            || ann[api::volumes::ANN_BETA_DEFAULT_CLASS] == "true";
        if !default {
            continue;
        }
        let created = class["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = objects::name_of(&class).to_string();
        let newer = match &best {
            None => true,
            Some((c, n)) => created > *c || (created == *c && name < *n),
        };
        if newer {
            best = Some((created, name));
        }
    }
    if let Some((_, name)) = best {
        claim["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

/// What is already taken by existing Services.
struct Taken {
    ips: HashSet<Ipv4Addr>,
    node_ports: HashSet<u16>,
}

async fn taken(server: &ApiServer, info: &ResourceInfo) -> ApiResult<Taken> {
    let list = server
        .store
        .list(ListRequest {
            prefix: info.collection_prefix(None),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::internal(format!("listing services for allocation: {e}")))?;
    let mut t = Taken {
        ips: HashSet::new(),
        node_ports: HashSet::new(),
    };
    for kv in &list.items {
        let svc: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        for ip in service_ips(&svc) {
            t.ips.insert(ip);
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_u64() {
                t.node_ports.insert(np as u16);
            }
        }
    }
    Ok(t)
}

fn service_ips(svc: &Value) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
    {
        out.push(ip);
    }
    for ip in svc["spec"]["clusterIPs"].as_array().into_iter().flatten() {
        if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
            out.push(ip);
        }
    }
    out
}

fn in_range(ip: Ipv4Addr, (base, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    };
    u32::from(ip) & mask == u32::from(base) & mask
}

/// Give a new Service its cluster IP and node ports, or refuse the ones it asked for.
/// The caller holds `server.allocation_lock` until the Service is stored.
pub async fn allocate_service(
    server: &ApiServer,
    info: &ResourceInfo,
    svc: &mut Value,
) -> ApiResult<()> {
    let svc_type = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type == "ExternalName" {
        return Ok(());
    }
    let taken = taken(server, info).await?;
    let cidr = server.config.service_cidr;
    let requested = svc["spec"]["clusterIP"].as_str().map(String::from);
    match requested.as_deref() {
        Some("None") => {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        }
        Some(ip) if !ip.is_empty() => {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid_service(
                    svc,
                    "spec.clusterIPs[0]",
                    &format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            if !in_range(parsed, cidr) {
                return Err(invalid_service(
                    svc,
                    "spec.clusterIPs",
                    &format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                        cidr.0, cidr.1
                    ),
                ));
            }
            if taken.ips.contains(&parsed) {
                return Err(invalid_service(
                    svc,
                    "spec.clusterIPs",
                    &format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"),
                ));
            }
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        _ => {
            let ip = free_ip(cidr, &taken.ips).ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?;
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        }
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        allocate_node_ports(server, svc, &taken.node_ports)?;
    }
    Ok(())
}

fn invalid_service(svc: &Value, field: &str, message: &str) -> ApiError {
    let name = objects::name_of(svc).to_string();
    ApiError::new(
        422,
        "Invalid",
        format!("Service \"{name}\" is invalid: {field}: {message}"),
    )
    .with_details(json!({
        "name": name,
        "kind": "Service",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    }))
}

/// A random free address of the range, skipping the network address, the first address
/// (reserved for the `kubernetes` Service) and the broadcast address.
fn free_ip((base, prefix): (Ipv4Addr, u8), taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    use rand::Rng;
    let size: u64 = 1u64 << (32 - prefix as u32);
    if size < 4 {
        return None;
    }
    let first = u32::from(base) as u64;
    let start = rand::thread_rng().gen_range(2..size - 1);
    (0..size - 3)
        .map(|i| 2 + (start - 2 + i) % (size - 3))
        .map(|off| Ipv4Addr::from((first + off) as u32))
        .find(|ip| !taken.contains(ip))
}

fn allocate_node_ports(server: &ApiServer, svc: &mut Value, taken: &HashSet<u16>) -> ApiResult<()> {
    let (lo, hi) = server.config.node_port_range;
    let mut used: HashSet<u16> = taken.clone();
    let Some(ports) = svc["spec"]["ports"].as_array_mut() else {
        return Ok(());
    };
    for (i, p) in ports.iter_mut().enumerate() {
        match p["nodePort"].as_u64() {
            Some(np) => {
                let np = np as u16;
                if np < lo || np > hi {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("Service is invalid: spec.ports[{i}].nodePort: Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                }
                if !used.insert(np) {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("Service is invalid: spec.ports[{i}].nodePort: Invalid value: {np}: provided port is already allocated"),
                    ));
                }
            }
            None => {
                use rand::Rng;
                let span = (hi - lo) as u32 + 1;
                let start = rand::thread_rng().gen_range(0..span);
                let port = (0..span)
                    .map(|k| lo + ((start + k) % span) as u16)
                    .find(|p| !used.contains(p))
                    .ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?;
                used.insert(port);
                p["nodePort"] = json!(port);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ip_skips_reserved_addresses() {
        let cidr = ("10.43.0.0".parse().unwrap(), 30u8);
        let ip = free_ip(cidr, &HashSet::new()).unwrap();
        assert_eq!(ip, "10.43.0.2".parse::<Ipv4Addr>().unwrap());
        let full: HashSet<Ipv4Addr> = [ip].into_iter().collect();
        assert_eq!(free_ip(cidr, &full), None);
    }

    #[test]
    fn range_check() {
        let cidr = ("10.43.0.0".parse().unwrap(), 16u8);
        assert!(in_range("10.43.200.1".parse().unwrap(), cidr));
        assert!(!in_range("10.44.0.1".parse().unwrap(), cidr));
    }
}
