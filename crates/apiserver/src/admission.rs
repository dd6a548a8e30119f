//! Rules that look beyond the object being written: a namespaced object needs a live
//! namespace (upstream's NamespaceLifecycle admission), built-in namespaces cannot be
//! deleted, and a Service gets a cluster IP and node ports from the configured ranges
//! (upstream's IP and port allocators; here a table of what Services hold, kept from the
//! store's watch: see `allocator`).

mod allocator;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use api::registry::{self, ResourceInfo};
use store::ListRequest;

use crate::errors::{ApiError, ApiResult};
use crate::objects;
use crate::ApiServer;

pub use allocator::ServiceAllocator;
use allocator::{Claims, Table};

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
    let terminating = namespace_terminating(&kv)?;
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

/// Whether a stored Namespace is being deleted (a deletionTimestamp) or in phase
/// Terminating. Reads only those two fields, not the whole object: this runs for every
/// namespaced create.
fn namespace_terminating(kv: &store::KeyValue) -> ApiResult<bool> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Lifecycle {
        metadata: LifecycleMeta,
        status: LifecycleStatus,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct LifecycleMeta {
        deletion_timestamp: Value,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct LifecycleStatus {
        phase: Value,
    }
    match serde_json::from_slice::<Lifecycle>(&kv.value) {
        Ok(ns) => Ok(!ns.metadata.deletion_timestamp.is_null() || ns.status.phase == "Terminating"),
        // An odd shape (say, `"status": null`): read it the general way.
        Err(_) => {
            let ns = objects::decode(namespaces(), kv)?;
            Ok(objects::is_deleting(&ns) || ns["status"]["phase"] == "Terminating")
        }
    }
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

/// Whether an update of a Service may need the allocator: it asks for a cluster IP or node
/// port its stored version does not hold, or leaves one to be filled in. Other updates
/// (labels, selector, target ports) skip the allocation lock.
pub fn service_update_allocates(old: &Value, new: &Value) -> bool {
    let spec = &new["spec"];
    let svc_type = spec["type"].as_str().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return false;
    }
    let cluster_ip = spec["clusterIP"].as_str().unwrap_or("");
    let wants_node_ports = svc_type == "NodePort" || svc_type == "LoadBalancer";
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if cluster_ip.is_empty() || (wants_node_ports && ports.iter().any(|p| p["nodePort"].is_null()))
    {
        return true;
    }
    let (held, wanted) = (claims_of(old), claims_of(new));
    !wanted.ips.iter().all(|ip| held.ips.contains(ip))
        || !wanted
            .node_ports
            .iter()
            .all(|p| held.node_ports.contains(p))
}

fn claims_of(svc: &Value) -> Claims {
    Claims::of(svc)
}

fn in_range(ip: Ipv4Addr, (base, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    };
    u32::from(ip) & mask == u32::from(base) & mask
}

/// Give a Service (new, or an update of the one stored at `key`) the cluster IP and node
/// ports it lacks, or refuse the ones it asks for that another Service holds. The caller holds
/// `server.allocation_lock` (the `allocator`) until the Service is stored, at `key`.
pub async fn allocate_service(
    server: &ApiServer,
    allocator: &mut ServiceAllocator,
    info: &ResourceInfo,
    key: &str,
    svc: &mut Value,
) -> ApiResult<()> {
    if svc["spec"]["type"].as_str() == Some("ExternalName") {
        return Ok(());
    }
    let fresh = allocator
        .fresh(&server.store, &info.collection_prefix(None))
        .await
        .map_err(|e| ApiError::internal(format!("reading services for allocation: {e}")))?;
    let table = fresh.lock();
    let ranges = Ranges {
        service_cidr: server.config.service_cidr,
        node_ports: server.config.node_port_range,
    };
    assign(&table, key, ranges, svc)
}

/// Where cluster IPs and node ports come from.
#[derive(Clone, Copy, Debug)]
struct Ranges {
    service_cidr: (Ipv4Addr, u8),
    /// Inclusive.
    node_ports: (u16, u16),
}

/// The decision, against a table that is up to date. Values the Service at `key` already
/// holds are kept without checks (an update must not fail on an address from a range
/// since changed).
fn assign(table: &Table, key: &str, ranges: Ranges, svc: &mut Value) -> ApiResult<()> {
    let svc_type = svc["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let held = table.claims(key).cloned().unwrap_or_default();
    let cidr = ranges.service_cidr;
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
            if !held.ips.contains(&parsed) {
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
                if table.ip_taken(parsed, key) {
                    return Err(invalid_service(
                        svc,
                        "spec.clusterIPs",
                        &format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
            }
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
        _ => {
            let ip = free_ip(cidr, |ip| table.ip_taken(ip, key)).ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?;
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        }
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        allocate_node_ports(
            ranges,
            svc,
            |p| table.node_port_taken(p, key),
            &held.node_ports,
        )?;
    }
    Ok(())
}

fn invalid_service(svc: &Value, field: &str, message: &str) -> ApiError {
    invalid_service_named(objects::name_of(svc), field, message)
}

fn invalid_service_named(name: &str, field: &str, message: &str) -> ApiError {
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
/// (reserved for the `kubernetes` Service) and the broadcast address. Expected cost: the
/// range's size over its free addresses, probes of the table.
fn free_ip((base, prefix): (Ipv4Addr, u8), taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
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
        .find(|ip| !taken(*ip))
}

fn allocate_node_ports(
    ranges: Ranges,
    svc: &mut Value,
    taken: impl Fn(u16) -> bool,
    held: &[u16],
) -> ApiResult<()> {
    let (lo, hi) = ranges.node_ports;
    let name = objects::name_of(svc).to_string();
    let invalid = |field: String, message: String| invalid_service_named(&name, &field, &message);
    // Ports this Service asks for explicitly, so an automatic one never takes them.
    let mut used: HashSet<u16> = HashSet::new();
    let Some(ports) = svc["spec"]["ports"].as_array_mut() else {
        return Ok(());
    };
    for (i, p) in ports.iter().enumerate() {
        let Some(np) = p["nodePort"].as_u64() else {
            continue;
        };
        let field = format!("spec.ports[{i}].nodePort");
        let np = match u16::try_from(np) {
            Ok(np) if held.contains(&np) => np,
            Ok(np) if np >= lo && np <= hi => {
                if taken(np) {
                    return Err(invalid(
                        field,
                        format!("Invalid value: {np}: provided port is already allocated"),
                    ));
                }
                np
            }
            _ => {
                return Err(invalid(
                    field,
                    format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                ))
            }
        };
        used.insert(np);
    }
    for p in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
        use rand::Rng;
        let span = (hi - lo) as u32 + 1;
        let start = rand::thread_rng().gen_range(0..span);
        let port = (0..span)
            .map(|k| lo + ((start + k) % span) as u16)
            .find(|p| !used.contains(p) && !taken(*p))
            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
        used.insert(port);
        p["nodePort"] = json!(port);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ip_skips_reserved_addresses() {
        let cidr = ("10.43.0.0".parse().unwrap(), 30u8);
        let ip = free_ip(cidr, |_| false).unwrap();
        assert_eq!(ip, "10.43.0.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(free_ip(cidr, |i| i == ip), None);
    }

    const RANGES: Ranges = Ranges {
        service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
        node_ports: (30000, 32767),
    };

    fn stored(name: &str, ip: &str, node_port: u16) -> (String, Claims) {
        let svc = json!({"metadata": {"name": name}, "spec": {"type": "NodePort",
            "clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80, "nodePort": node_port}]}});
        (
            format!("/registry/services/specs/default/{name}"),
            claims_of(&svc),
        )
    }

    fn table_with(services: &[(&str, &str, u16)]) -> Table {
        let mut t = Table::default();
        for (name, ip, port) in services {
            let (key, claims) = stored(name, ip, *port);
            t.set(&key, claims);
        }
        t
    }

    fn message(r: ApiResult<()>) -> String {
        let e = r.expect_err("refused");
        assert_eq!(e.code, 422);
        e.message.clone()
    }

    #[test]
    fn taken_values_are_refused_free_ones_given() {
        let t = table_with(&[("a", "10.43.0.5", 30080)]);
        let key = "/registry/services/specs/default/b";
        let mut svc = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort",
            "clusterIP": "10.43.0.5", "ports": [{"port": 80}]}});
        assert!(message(assign(&t, key, RANGES, &mut svc)).ends_with(
            "spec.clusterIPs: Invalid value: []string{\"10.43.0.5\"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"
        ));
        let mut svc = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30080}]}});
        assert_eq!(
            message(assign(&t, key, RANGES, &mut svc)),
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let mut svc = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80}, {"port": 81, "nodePort": 30081}]}});
        assign(&t, key, RANGES, &mut svc).expect("allocated");
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(in_range(ip, RANGES.service_cidr) && ip != Ipv4Addr::new(10, 43, 0, 5));
        let auto = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&auto) && auto != 30080 && auto != 30081);
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30081);
    }

    #[test]
    fn an_update_keeps_what_the_service_holds_and_checks_what_it_adds() {
        let t = table_with(&[("a", "10.43.0.5", 30080), ("b", "10.43.0.6", 30090)]);
        let key = "/registry/services/specs/default/a";
        // Its own IP and port are not "already allocated"; a second, new port is given.
        let mut svc = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort",
            "clusterIP": "10.43.0.5", "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}});
        assign(&t, key, RANGES, &mut svc).expect("update allowed");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
        assert!(svc["spec"]["ports"][1]["nodePort"]
            .as_u64()
            .is_some_and(|p| p != 30090));
        // Taking another Service's port is refused.
        let mut svc = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort",
            "clusterIP": "10.43.0.5", "ports": [{"port": 80, "nodePort": 30090}]}});
        assert!(message(assign(&t, key, RANGES, &mut svc))
            .contains("provided port is already allocated"));
    }

    #[test]
    fn which_updates_need_the_allocator() {
        let old = json!({"spec": {"type": "ClusterIP", "clusterIP": "10.43.0.5",
            "clusterIPs": ["10.43.0.5"], "ports": [{"port": 80}]}});
        let mut relabelled = old.clone();
        relabelled["metadata"] = json!({"labels": {"a": "b"}});
        assert!(!service_update_allocates(&old, &relabelled));
        let mut node_port = old.clone();
        node_port["spec"]["type"] = json!("NodePort");
        assert!(service_update_allocates(&old, &node_port));
        node_port["spec"]["ports"][0]["nodePort"] = json!(30080);
        assert!(service_update_allocates(&old, &node_port));
        assert!(!service_update_allocates(&node_port, &node_port));
        let external = json!({"spec": {"type": "ExternalName", "externalName": "x.example"}});
        assert!(!service_update_allocates(&old, &external));
        assert!(service_update_allocates(
            &external,
            &json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}})
        ));
    }

    #[test]
    fn range_check() {
        let cidr = ("10.43.0.0".parse().unwrap(), 16u8);
        assert!(in_range("10.43.200.1".parse().unwrap(), cidr));
        assert!(!in_range("10.44.0.1".parse().unwrap(), cidr));
    }
}
