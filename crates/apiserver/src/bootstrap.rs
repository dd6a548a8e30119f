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

fn ignore_exists<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
