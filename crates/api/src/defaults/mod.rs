//! Defaulting: upstream's v1 `SetDefaults_*` functions for every kind skiff serves, over
//! the JSON of a decoded object, plus the create-only defaults that upstream applies in
//! registry strategies and admission plugins (a Pod's service account and tolerations,
//! initial statuses, a Job's generated selector, a Namespace's finalizer).
//!
//! Call order in the apiserver: decode → [`apply_defaults`] → (set uid, timestamps) →
//! [`apply_create_defaults`] (create only) → validate. Defaulting never overwrites a
//! value the client set, so applying it twice is harmless (updates re-default too, as
//! upstream's decoder does).

mod pod;

use serde_json::{json, Map, Value};

use crate::registry::ResourceInfo;

pub use pod::qos_class;

/// Insert `key: value` when the key is missing or null.
pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object at `v[key]`, created when missing or null; None when `v` is not an object
/// or the field holds something else (decoding has already rejected that).
pub(crate) fn ensure_obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
}

fn ensure_path<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        ensure_obj(cur, p)?;
        cur = cur.get_mut(*p)?;
    }
    cur.as_object_mut()
}

/// Upstream's v1 defaulting for the kind `info`. See the module docs.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => pod::default_pod(obj),
        ("", "PodTemplate") => default_template(obj, &["template"]),
        ("", "Service") => default_service(obj),
        ("", "Secret") => {
            merge_secret_string_data(obj);
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
            }
        }
        ("", "Namespace") => default_namespace(obj),
        ("", "Node") => default_node(obj),
        ("", "Endpoints") => {
            if let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) {
                for s in subsets.iter_mut() {
                    default_port_protocols(s.get_mut("ports"));
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                    set_default(p, "name", json!(""));
                }
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = ensure_obj(obj, "spec") {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = ensure_obj(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "PersistentVolumeClaim") => default_pvc(obj),
        ("", "LimitRange") => default_limit_range(obj),
        ("apps", "Deployment") => default_deployment(obj),
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            if let Some(spec) = ensure_obj(obj, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            default_template(obj, &["spec", "template"]);
        }
        ("apps", "StatefulSet") => default_stateful_set(obj),
        ("apps", "DaemonSet") => default_daemon_set(obj),
        ("batch", "Job") => default_job(obj),
        ("batch", "CronJob") => default_cron_job(obj),
        ("networking.k8s.io", "NetworkPolicy") => default_network_policy(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => default_hpa(obj, info.version),
        ("storage.k8s.io", "StorageClass") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "reclaimPolicy", json!("Delete"));
                set_default(m, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            default_role_binding(obj)
        }
        _ => {}
    }
}

/// Defaults upstream applies only when an object is created: admission (Pod service
/// account, priority, not-ready/unreachable tolerations), strategies' `PrepareForCreate`
/// (initial status, a Namespace's `kubernetes` finalizer, a Service's empty load-balancer
/// status) and a Job's generated selector, which needs `metadata.uid` to be set already.
pub fn apply_create_defaults(info: &ResourceInfo, obj: &mut Value) {
    apply_create_defaults_with(info, obj, &AdmissionDefaults::default())
}

/// Settings of the admission plugins that default new objects (kube-apiserver flags of
/// the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionDefaults {
    /// `--default-not-ready-toleration-seconds` (DefaultTolerationSeconds plugin).
    pub not_ready_toleration_seconds: i64,
    /// `--default-unreachable-toleration-seconds`.
    pub unreachable_toleration_seconds: i64,
}

impl Default for AdmissionDefaults {
    fn default() -> Self {
        AdmissionDefaults {
            not_ready_toleration_seconds: 300,
            unreachable_toleration_seconds: 300,
        }
    }
}

/// [`apply_create_defaults`] with explicit admission settings.
pub fn apply_create_defaults_with(
    info: &ResourceInfo,
    obj: &mut Value,
    admission: &AdmissionDefaults,
) {
    match (info.group, info.kind) {
        ("", "Pod") => pod::default_pod_on_create(obj, admission),
        ("", "Namespace") => {
            if let Some(spec) = ensure_obj(obj, "spec") {
                spec.insert("finalizers".into(), json!(["kubernetes"]));
            }
            if let Some(status) = ensure_obj(obj, "status") {
                status.insert("phase".into(), json!("Active"));
            }
        }
        ("", "Service") => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("status".into(), json!({"loadBalancer": {}}));
            }
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            if let Some(status) = ensure_obj(obj, "status") {
                status.insert("phase".into(), json!("Pending"));
            }
        }
        ("batch", "Job") => {
            let uid = obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !uid.is_empty() {
                generate_job_selector(obj, &uid);
            }
        }
        _ => {}
    }
}

/// What upstream's REST layer carries over from the stored object on update before
/// validating: a Service's allocated cluster IPs, node ports (matched by port name) and
/// health-check node port when the new object leaves them empty (`patchAllocatedValues`),
/// so `kubectl replace` of a manifest without them does not look like a change.
pub fn apply_update_defaults(info: &ResourceInfo, new: &mut Value, old: &Value) {
    if info.group.is_empty() && info.kind == "Service" {
        patch_service_allocations(new, old);
        drop_type_dependent_fields(new, old);
    }
}

/// Upstream's `dropTypeDependentFields`: when a Service changes to a type that no longer
/// uses a value the system may have filled in (cluster IPs for ExternalName, node ports
/// for ClusterIP, ...), and the client left the old value untouched, wipe it.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ty = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let (old_ty, new_ty) = (ty(old_spec.get("type")), ty(spec.get("type")));
    let same = |spec: &Map<String, Value>, k: &str| spec.get(k) == old_spec.get(k);
    if old_ty != "ExternalName" && new_ty == "ExternalName" {
        if same(spec, "clusterIP") && same(spec, "clusterIPs") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        for k in ["ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"] {
            if same(spec, k) {
                spec.remove(k);
            }
        }
    }
    let needs_node_port = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_node_port(&old_ty) && !needs_node_port(&new_ty) {
        let node_ports = |ports: Option<&Value>| -> Vec<i64> {
            ports
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default()
        };
        if node_ports(spec.get("ports")) == node_ports(old_spec.get("ports")) {
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    p.remove("nodePort");
                }
            }
        }
    }
    let externally_accessible = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if externally_accessible(&old_ty) && !externally_accessible(&new_ty) {
        if same(spec, "externalTrafficPolicy") {
            spec.remove("externalTrafficPolicy");
        }
        if same(spec, "healthCheckNodePort") {
            spec.remove("healthCheckNodePort");
        }
    }
    if old_ty == "LoadBalancer"
        && new_ty != "LoadBalancer"
        && same(spec, "allocateLoadBalancerNodePorts")
    {
        spec.remove("allocateLoadBalancerNodePorts");
    }
}

fn patch_service_allocations(new: &mut Value, old: &Value) {
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let ty = |s: &Value| {
        s.get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    let Some(spec) = ensure_obj(new, "spec") else {
        return;
    };
    let (old_ty, new_ty) = (
        ty(&old_spec),
        spec.get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string(),
    );
    if old_ty != "ExternalName" && new_ty != "ExternalName" {
        let empty = |m: &Map<String, Value>, k: &str| match m.get(k) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if let Some(old_spec) = old_spec.as_object() {
            for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if empty(spec, k) && !empty(old_spec, k) {
                    spec.insert(k.into(), old_spec[k].clone());
                }
            }
        }
    }
    let needs_node_port = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_node_port(&old_ty) && needs_node_port(&new_ty) {
        let old_ports: Vec<(String, i64)> = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p.get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                            p.get("nodePort").and_then(Value::as_i64).unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            let used: Vec<i64> = ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                .filter(|n| *n != 0)
                .collect();
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some((_, np)) = old_ports.iter().find(|(n, np)| n == name && *np != 0) {
                    if !used.contains(np) {
                        p.insert("nodePort".into(), json!(np));
                    }
                }
            }
        }
    }
    let hc = old_spec
        .get("healthCheckNodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if hc != 0
        && spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
    {
        spec.insert("healthCheckNodePort".into(), json!(hc));
    }
}

/// The Job strategy's `generateSelector`: unless `spec.manualSelector` is true, label the
/// template with the job's name and uid (both legacy and `batch.kubernetes.io/` keys,
/// keeping any the user set so validation can reject conflicts) and select on
/// `batch.kubernetes.io/controller-uid`.
pub fn generate_job_selector(job: &mut Value, uid: &str) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(labels) = ensure_path(job, &["spec", "template", "metadata", "labels"]) {
        for key in ["job-name", "batch.kubernetes.io/job-name"] {
            labels.entry(key).or_insert_with(|| json!(name));
        }
        for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
            labels.entry(key).or_insert_with(|| json!(uid));
        }
    }
    if let Some(ml) = ensure_path(job, &["spec", "selector", "matchLabels"]) {
        ml.entry("batch.kubernetes.io/controller-uid")
            .or_insert_with(|| json!(uid));
    }
}

/// Secret `stringData` is write-only: each entry is base64-encoded into `data`
/// (overriding a `data` entry with the same key) and `stringData` removed, as upstream's
/// v1 conversion does.
pub fn merge_secret_string_data(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let Some(sd) = m.remove("stringData") else {
        return;
    };
    let Some(sd) = sd.as_object() else {
        return;
    };
    if sd.is_empty() {
        return;
    }
    let data = m.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("");
            data.insert(k.clone(), json!(base64_encode(s.as_bytes())));
        }
    }
}

/// Standard base64 with padding (what Go's `[]byte` JSON encoding uses).
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Pod-spec defaults (not the Pod-only or admission ones) for a template at `path`.
fn default_template(obj: &mut Value, path: &[&str]) {
    let mut full: Vec<&str> = path.to_vec();
    full.push("spec");
    if let Some(spec) = ensure_path(obj, &full) {
        pod::default_pod_spec(spec);
    }
}

fn default_port_protocols(ports: Option<&mut Value>) {
    if let Some(ports) = ports.and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = ensure_obj(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let cfg = spec
                .entry("sessionAffinityConfig")
                .or_insert_with(|| json!({}));
            if cfg.is_null() {
                *cfg = json!({});
            }
            if let Some(cfg) = cfg.as_object_mut() {
                let cip = cfg.entry("clientIP").or_insert_with(|| json!({}));
                if cip.is_null() {
                    *cip = json!({});
                }
                if let Some(cip) = cip.as_object_mut() {
                    set_default(cip, "timeoutSeconds", json!(10800));
                }
            }
        }
        _ => {}
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset {
                if let Some(port) = p.get("port").cloned() {
                    p.insert("targetPort".into(), port);
                }
            }
        }
    }
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        // The REST layer picks the families when it allocates; skiff is IPv4-only.
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
    } else if ty == "ExternalName" {
        for f in ["ipFamilyPolicy", "ipFamilies", "clusterIP", "clusterIPs"] {
            if spec.get(f).is_some_and(|v| v.is_null()) {
                spec.remove(f);
            }
        }
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn default_namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        if let Some(labels) = ensure_path(obj, &["metadata", "labels"]) {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(status) = ensure_obj(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

fn default_node(obj: &mut Value) {
    let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(cap) = status.get("capacity").cloned() {
        set_default(status, "allocatable", cap);
    }
}

fn default_pvc(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = ensure_obj(obj, "status") {
        set_default(status, "phase", json!("Pending"));
    }
}

fn default_limit_range(obj: &mut Value) {
    let Some(limits) = obj
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in limits.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let max = item
            .get("max")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let min = item
            .get("min")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut default = item
            .get("default")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        let mut req = item
            .get("defaultRequest")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in default.iter().chain(min.iter()) {
            req.entry(k.clone()).or_insert_with(|| v.clone());
        }
        item.insert("default".into(), Value::Object(default));
        item.insert("defaultRequest".into(), Value::Object(req));
    }
}

fn default_deployment(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if strategy.is_null() {
            *strategy = json!({});
        }
        if let Some(st) = strategy.as_object_mut() {
            set_default(st, "type", json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if ru.is_null() {
                    *ru = json!({});
                }
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!("25%"));
                    set_default(ru, "maxSurge", json!("25%"));
                }
            }
        }
    }
    default_template(obj, &["spec", "template"]);
}

fn default_stateful_set(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        let us = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if us.is_null() {
            *us = json!({});
        }
        if let Some(us) = us.as_object_mut() {
            if us
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                us.insert("type".into(), json!("RollingUpdate"));
                set_default(us, "rollingUpdate", json!({}));
            }
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    set_default(ru, "partition", json!(0));
                }
            }
        }
        let pol = spec
            .entry("persistentVolumeClaimRetentionPolicy")
            .or_insert_with(|| json!({}));
        if pol.is_null() {
            *pol = json!({});
        }
        if let Some(pol) = pol.as_object_mut() {
            set_default(pol, "whenDeleted", json!("Retain"));
            set_default(pol, "whenScaled", json!("Retain"));
        }
        if let Some(vcts) = spec
            .get_mut("volumeClaimTemplates")
            .and_then(Value::as_array_mut)
        {
            for t in vcts.iter_mut() {
                default_pvc(t);
                // Templates are embedded objects: they carry apiVersion/kind upstream.
                if let Some(m) = t.as_object_mut() {
                    set_default(m, "apiVersion", json!("v1"));
                    set_default(m, "kind", json!("PersistentVolumeClaim"));
                }
            }
        }
    }
    default_template(obj, &["spec", "template"]);
}

fn default_daemon_set(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        set_default(spec, "revisionHistoryLimit", json!(10));
        let us = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if us.is_null() {
            *us = json!({});
        }
        if let Some(us) = us.as_object_mut() {
            set_default(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                set_default(us, "rollingUpdate", json!({}));
                if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    set_default(ru, "maxUnavailable", json!(1));
                    set_default(ru, "maxSurge", json!(0));
                }
            }
        }
    }
    default_template(obj, &["spec", "template"]);
}

fn default_job_spec(spec: &mut Map<String, Value>) {
    let has = |m: &Map<String, Value>, k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if !has(spec, "completions") && !has(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    if has(spec, "backoffLimitPerIndex") {
        set_default(spec, "backoffLimit", json!(i32::MAX));
    } else {
        set_default(spec, "backoffLimit", json!(6));
    }
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let has_failure_policy = has(spec, "podFailurePolicy");
    if let Some(rules) = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for r in rules.iter_mut() {
            if let Some(conds) = r.get_mut("onPodConditions").and_then(Value::as_array_mut) {
                for c in conds.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(c, "status", json!("True"));
                }
            }
        }
    }
    let replacement = if has_failure_policy {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
}

fn default_job(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        default_job_spec(spec);
    }
    // A Job without labels takes its template's (v1 defaulting, not the generated ones).
    let tmpl_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(Value::Object(tl)) = tmpl_labels {
        if !tl.is_empty() {
            let empty = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty());
            if empty {
                if let Some(meta) = ensure_obj(obj, "metadata") {
                    meta.insert("labels".into(), Value::Object(tl));
                }
            }
        }
    }
    default_template(obj, &["spec", "template"]);
}

fn default_cron_job(obj: &mut Value) {
    if let Some(spec) = ensure_obj(obj, "spec") {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    }
    default_template(obj, &["spec", "jobTemplate", "spec", "template"]);
}

fn default_network_policy(obj: &mut Value) {
    let Some(spec) = ensure_obj(obj, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        if let Some(rules) = spec.get_mut(dir).and_then(Value::as_array_mut) {
            for r in rules.iter_mut() {
                default_port_protocols(r.get_mut("ports"));
            }
        }
    }
    let empty = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if empty {
        let egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let types = if egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

fn default_hpa(obj: &mut Value, version: &str) {
    let Some(spec) = ensure_obj(obj, "spec") else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    if version != "v2" {
        return;
    }
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if no_metrics {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    if let Some(b) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        let down = json!({"selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        for (key, defaults) in [("scaleUp", up), ("scaleDown", down)] {
            let rules = b.entry(key).or_insert_with(|| json!({}));
            if rules.is_null() {
                *rules = json!({});
            }
            if let (Some(r), Value::Object(d)) = (rules.as_object_mut(), defaults) {
                for (k, v) in d {
                    set_default(r, &k, v);
                }
            }
        }
    }
}

fn default_role_binding(obj: &mut Value) {
    if let Some(rr) = obj.get_mut("roleRef").and_then(Value::as_object_mut) {
        if rr
            .get("apiGroup")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            rr.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
        }
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            if s.get("apiGroup")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                match s.get("kind").and_then(Value::as_str) {
                    Some("User") | Some("Group") => {
                        s.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
                    }
                    Some("ServiceAccount") => {
                        s.insert("apiGroup".into(), json!(""));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup_kind;

    fn info(group: &str, kind: &str) -> &'static ResourceInfo {
        let version = if group == "autoscaling" { "v2" } else { "v1" };
        lookup_kind(group, version, kind).expect("kind in registry")
    }

    fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
        apply_defaults(info(group, kind), &mut obj);
        obj
    }

    #[test]
    fn pod_defaults_match_upstream() {
        let mut p = defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                 "readinessProbe": {"httpGet": {"port": 80}}},
                {"name": "b", "image": "localhost:5000/busybox:1.36"},
                {"name": "c", "image": "x@sha256:abc"}],
                "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "s"}}]}}),
        );
        let s = &p["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        let a = &s["containers"][0];
        assert_eq!(a["imagePullPolicy"], "Always");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["terminationMessagePolicy"], "File");
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        assert_eq!(
            a["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"})
        );
        assert_eq!(
            a["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["containers"][1]["resources"], json!({}));
        assert_eq!(s["containers"][2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["volumes"][0], json!({"name": "v", "emptyDir": {}}));
        assert_eq!(s["volumes"][1]["secret"]["defaultMode"], 420);

        apply_create_defaults(info("", "Pod"), &mut p);
        let s = &p["spec"];
        assert_eq!(s["serviceAccountName"], "default");
        assert_eq!(s["serviceAccount"], "default");
        assert_eq!(s["priority"], 0);
        assert_eq!(
            s["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "Burstable"})
        );
    }

    #[test]
    fn qos_classes() {
        let pod = |res: Value| {
            let mut p =
                json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": res}]}});
            pod::default_pod(&mut p);
            qos_class(&p)
        };
        assert_eq!(pod(json!({})), "BestEffort");
        assert_eq!(
            pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
            "Guaranteed"
        );
        assert_eq!(
            pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m"}})),
            "Guaranteed"
        );
        assert_eq!(pod(json!({"requests": {"cpu": "1"}})), "Burstable");
    }

    #[test]
    fn workload_defaults() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let t = &d["spec"]["template"]["spec"];
        assert_eq!(t["restartPolicy"], "Always");
        // Pod-only defaults stay off templates.
        assert!(t.get("enableServiceLinks").is_none());
        let r = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));

        let s = defaulted("apps", "StatefulSet", json!({"spec": {}}));
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(
            defaulted("apps", "ReplicaSet", json!({}))["spec"]["replicas"],
            1
        );
    }

    #[test]
    fn job_defaults_and_selector() {
        let mut j = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {
                "metadata": {"labels": {"app": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}}}),
        );
        let s = &j["spec"];
        assert_eq!(
            (s["completions"].clone(), s["parallelism"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));
        apply_create_defaults(info("batch", "Job"), &mut j);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"app": "pi", "job-name": "pi", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u1", "batch.kubernetes.io/controller-uid": "u1"})
        );
        let p = defaulted("batch", "Job", json!({"spec": {"parallelism": 3}}));
        assert!(p["spec"].get("completions").is_none());
        let c = defaulted("batch", "CronJob", json!({"spec": {}}));
        assert_eq!(
            (
                c["spec"]["concurrencyPolicy"].clone(),
                c["spec"]["suspend"].clone(),
                c["spec"]["successfulJobsHistoryLimit"].clone(),
                c["spec"]["failedJobsHistoryLimit"].clone()
            ),
            (json!("Allow"), json!(false), json!(3), json!(1))
        );
    }

    #[test]
    fn service_secret_namespace_defaults() {
        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "https");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        let np = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        );
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");

        let sec = defaulted(
            "",
            "Secret",
            json!({"data": {"a": "eA=="}, "stringData": {"a": "hello", "b": "wo"}}),
        );
        assert_eq!(sec["type"], "Opaque");
        assert_eq!(sec["data"], json!({"a": "aGVsbG8=", "b": "d28="}));
        assert!(sec.get("stringData").is_none());

        let mut ns = defaulted("", "Namespace", json!({"metadata": {"name": "dev"}}));
        apply_create_defaults(info("", "Namespace"), &mut ns);
        assert_eq!(
            ns["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "dev"})
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
    }

    #[test]
    fn service_update_keeps_allocations() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]}});
        apply_update_defaults(info("", "Service"), &mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.9");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.9"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);

        // NodePort → ClusterIP: the allocated node port goes, the cluster IP stays.
        let mut back = old.clone();
        back["spec"]["type"] = json!("ClusterIP");
        apply_update_defaults(info("", "Service"), &mut back, &old);
        assert!(back["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(back["spec"]["clusterIP"], "10.43.0.9");
        // → ExternalName: the cluster IPs go too.
        let mut ext = old.clone();
        ext["spec"]["type"] = json!("ExternalName");
        ext["spec"]["externalName"] = json!("example.com");
        apply_update_defaults(info("", "Service"), &mut ext, &old);
        assert!(ext["spec"].get("clusterIP").is_none() && ext["spec"].get("clusterIPs").is_none());
    }

    #[test]
    fn other_kinds() {
        let np = defaulted(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"egress": [{"ports": [{"port": 53}]}]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        let hpa = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"spec": {}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let rb = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "r"},
                "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}]}),
        );
        assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][1]["apiGroup"], "");
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"abcd"), "YWJjZA==");
    }
}
