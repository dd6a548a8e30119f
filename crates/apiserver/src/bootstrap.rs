//! What exists from the first start: the built-in namespaces and the `kubernetes` Service
//! in `default` pointing at this API server, and (k3s's packaged `local-storage` addon)
//! the default `local-path` StorageClass. Idempotent: run at every start.

use serde_json::json;

use api::registry;

use crate::admission::BUILTIN_NAMESPACES;
use crate::errors::ApiError;
use crate::handlers::create_object;
use crate::ApiServer;

/// The field manager of objects the API server makes itself, as upstream names it.
const MANAGER: &str = "kube-apiserver";

/// Create what is missing; objects that exist are left as they are.
pub async fn ensure_builtin_objects(server: &ApiServer, https_port: u16) -> Result<(), ApiError> {
    let namespaces = registry::lookup("", "v1", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces not registered"))?;
    for ns in BUILTIN_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        ignore_exists(create_object(server, namespaces, None, obj, false, Some(MANAGER)).await)?;
    }
    let services = registry::lookup("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services not registered"))?;
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": server.config.kubernetes_service_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": https_port}],
            "sessionAffinity": "None",
        },
    });
    ignore_exists(
        create_object(server, services, Some("default"), svc, false, Some(MANAGER)).await,
    )?;

    // The endpoints of the `kubernetes` Service: this API server, as upstream's
    // endpoint reconciler publishes them.
    let ip = server
        .config
        .advertise_address
        .rsplit_once(':')
        .map(|(host, _)| host.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_default();
    if ip.parse::<std::net::IpAddr>().is_ok() {
        let endpoints = registry::lookup("", "v1", "endpoints")
            .ok_or_else(|| ApiError::internal("endpoints not registered"))?;
        let ep = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": https_port, "protocol": "TCP"}]}],
        });
        ignore_exists(
            create_object(server, endpoints, Some("default"), ep, false, Some(MANAGER)).await,
        )?;
        let slices = registry::lookup("discovery.k8s.io", "v1", "endpointslices")
            .ok_or_else(|| ApiError::internal("endpointslices not registered"))?;
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": https_port, "protocol": "TCP"}],
        });
        ignore_exists(
            create_object(server, slices, Some("default"), slice, false, Some(MANAGER)).await,
        )?;
    }
    Ok(())
}

/// k3s's `local-path` StorageClass, the cluster default, created if absent. An existing
/// class of that name (perhaps edited by its user) is left exactly as it is; a user who
/// wants none starts the server with `--disable local-storage`, as with k3s.
pub async fn ensure_default_storage_class(server: &ApiServer) -> Result<(), ApiError> {
    let classes = registry::lookup("storage.k8s.io", "v1", "storageclasses")
        .ok_or_else(|| ApiError::internal("storageclasses not registered"))?;
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": api::volumes::LOCAL_PATH_CLASS,
            "annotations": {api::volumes::ANN_DEFAULT_CLASS: "true"},
        },
        "provisioner": api::volumes::LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    ignore_exists(create_object(server, classes, None, class, false, Some(MANAGER)).await)
}

/// The cluster DNS's Service as k3s publishes CoreDNS's: `kube-dns` in `kube-system` at
/// `--cluster-dns`, ports `dns` 53/UDP and `dns-tcp` 53/TCP. The DNS server runs inside
/// `skiff server`, so the Service has no selector; its Endpoints and EndpointSlice (kept
/// here, like the `kubernetes` Service's) point at `dns_address:dns_port`. Idempotent: an
/// object that differs from what it should be (a restart with other flags) is replaced.
/// CoreDNS's `metrics` port (9153) is left out: nothing serves it.
pub async fn ensure_cluster_dns_service(
    server: &ApiServer,
    cluster_ip: std::net::IpAddr,
    dns_address: std::net::IpAddr,
    dns_port: u16,
) -> Result<(), ApiError> {
    const NAMESPACE: &str = "kube-system";
    const NAME: &str = "kube-dns";
    let labels = json!({
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "CoreDNS",
    });
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns_port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns_port},
            ],
            "sessionAffinity": "None",
        },
    });
    let ports = json!([
        {"name": "dns", "port": dns_port, "protocol": "UDP"},
        {"name": "dns-tcp", "port": dns_port, "protocol": "TCP"},
    ]);
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
            "k8s-app": "kube-dns",
            "endpointslice.kubernetes.io/skip-mirror": "true",
        }},
        "subsets": [{"addresses": [{"ip": dns_address.to_string()}], "ports": ports}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/service-name": NAME,
            "endpointslice.kubernetes.io/managed-by": "skiff-server",
        }},
        "addressType": if dns_address.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [dns_address.to_string()], "conditions": {"ready": true}}],
        "ports": ports,
    });
    for (group, resource, desired) in [
        ("", "services", svc),
        ("", "endpoints", endpoints),
        ("discovery.k8s.io", "endpointslices", slice),
    ] {
        let info = registry::lookup(group, "v1", resource)
            .ok_or_else(|| ApiError::internal(format!("{resource} not registered")))?;
        let key = info.key(Some(NAMESPACE), NAME);
        let stored = server
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::internal(format!("reading {key}: {e}")))?;
        if let Some(kv) = stored {
            if holds(&crate::objects::decode(info, &kv)?, &desired) {
                continue;
            }
            crate::handlers::delete_object_now(server, info, Some(NAMESPACE), NAME).await?;
        }
        ignore_exists(
            create_object(server, info, Some(NAMESPACE), desired, false, Some(MANAGER)).await,
        )?;
    }
    Ok(())
}

/// The built-in ingress controller's IngressClass `skiff` (controller `skiff.dev/ingress`,
/// served by every node agent), the cluster default, created if absent; an existing class
/// of that name is left as its user made it.
pub async fn ensure_default_ingress_class(server: &ApiServer) -> Result<(), ApiError> {
    let classes = registry::lookup("networking.k8s.io", "v1", "ingressclasses")
        .ok_or_else(|| ApiError::internal("ingressclasses not registered"))?;
    let class = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": "skiff",
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": "skiff.dev/ingress"},
    });
    ignore_exists(create_object(server, classes, None, class, false, Some(MANAGER)).await)
}

/// Whether `current` has every field `desired` sets, with the same value (fields defaulted
/// or added since do not count as a difference).
fn holds(current: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (current, desired) {
        (Value::Object(c), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| c.get(k).is_some_and(|cv| holds(cv, v))),
        (Value::Array(c), Value::Array(d)) => {
            c.len() == d.len() && c.iter().zip(d).all(|(cv, dv)| holds(cv, dv))
        }
        _ => current == desired,
    }
}

fn ignore_exists<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::holds;
    use serde_json::json;

    #[test]
    fn desired_fields_are_held_whatever_was_added() {
        let desired =
            json!({"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "targetPort": 53}]}});
        let defaulted = json!({"spec": {"clusterIP": "10.43.0.10", "ipFamilies": ["IPv4"],
            "ports": [{"port": 53, "targetPort": 53, "protocol": "UDP"}]}});
        assert!(holds(&defaulted, &desired));
        let other_port = json!({"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "targetPort": 5353}]}});
        assert!(!holds(&other_port, &desired));
        let extra_port = json!({"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "targetPort": 53}, {"port": 9153}]}});
        assert!(!holds(&extra_port, &desired));
        assert!(!holds(&json!({"spec": {}}), &desired));
    }
}
