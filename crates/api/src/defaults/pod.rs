//! PodSpec defaulting (`SetDefaults_PodSpec`, `_Container`, `_Probe`, `_Volume`, ...),
//! shared by Pods and every pod template, plus the Pod-only parts (`SetDefaults_Pod`) and
//! what admission adds to a new Pod (service account, priority, default tolerations,
//! initial status with its QoS class).

use serde_json::{json, Map, Value};

use super::{ensure_obj, set_default};

/// `SetDefaults_PodSpec` and everything nested in it. Used for pod templates too.
pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    // v1 conversion keeps the deprecated `serviceAccount` in step with
    // `serviceAccountName`, in both directions.
    let sa_name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let sa = spec
        .get("serviceAccount")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if sa_name.is_empty() && !sa.is_empty() {
        spec.insert("serviceAccountName".into(), json!(sa));
    } else if !sa_name.is_empty() {
        spec.insert("serviceAccount".into(), json!(sa_name));
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c, host_network);
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            default_volume(v);
        }
    }
}

fn default_container(c: &mut Map<String, Value>, host_network: bool) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_tag_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    // Go's ResourceRequirements is a value, so upstream always prints `resources: {}`.
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if host_network {
                let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
                let hp = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                if hp == 0 && !cp.is_null() {
                    p.insert("hostPort".into(), cp);
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            default_handler(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).and_then(Value::as_object_mut) {
                default_handler(h);
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for ev in env.iter_mut() {
            if let Some(fr) = ev
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .and_then(Value::as_object_mut)
            {
                set_default(fr, "apiVersion", json!("v1"));
            }
        }
    }
}

fn default_handler(h: &mut Map<String, Value>) {
    if let Some(g) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
}

/// `parsers.ParseImageName`'s tag, as `SetDefaults_Container` uses it: no tag and no
/// digest means `latest`; a digest without a tag means no tag.
pub(crate) fn image_tag_is_latest(image: &str) -> bool {
    let (name, has_digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => !has_digest,
    }
}

/// `SetDefaults_Volume` and the per-source defaults.
fn default_volume(v: &mut Map<String, Value>) {
    let has_source = v.iter().any(|(k, val)| k != "name" && !val.is_null());
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
            set_default(s, "defaultMode", json!(420));
            if src == "projected" {
                if let Some(srcs) = s.get_mut("sources").and_then(Value::as_array_mut) {
                    for p in srcs.iter_mut() {
                        if let Some(t) = p
                            .get_mut("serviceAccountToken")
                            .and_then(Value::as_object_mut)
                        {
                            set_default(t, "expirationSeconds", json!(3600));
                        }
                        if let Some(items) = p
                            .get_mut("downwardAPI")
                            .and_then(|d| d.get_mut("items"))
                            .and_then(Value::as_array_mut)
                        {
                            default_field_refs(items);
                        }
                    }
                }
            }
            if src == "downwardAPI" {
                if let Some(items) = s.get_mut("items").and_then(Value::as_array_mut) {
                    default_field_refs(items);
                }
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_default(h, "type", json!(""));
    }
    if let Some(i) = v.get_mut("iscsi").and_then(Value::as_object_mut) {
        set_default(i, "iscsiInterface", json!("default"));
    }
    if let Some(r) = v.get_mut("rbd").and_then(Value::as_object_mut) {
        set_default(r, "pool", json!("rbd"));
        set_default(r, "user", json!("admin"));
        set_default(r, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(a) = v.get_mut("azureDisk").and_then(Value::as_object_mut) {
        set_default(a, "cachingMode", json!("ReadWrite"));
        set_default(a, "fsType", json!("ext4"));
        set_default(a, "readOnly", json!(false));
        set_default(a, "kind", json!("Shared"));
    }
    if let Some(s) = v.get_mut("scaleIO").and_then(Value::as_object_mut) {
        set_default(s, "storageMode", json!("ThinProvisioned"));
        set_default(s, "fsType", json!("xfs"));
    }
}

fn default_field_refs(items: &mut [Value]) {
    for it in items.iter_mut() {
        if let Some(fr) = it.get_mut("fieldRef").and_then(Value::as_object_mut) {
            set_default(fr, "apiVersion", json!("v1"));
        }
    }
}

/// `SetDefaults_Pod`: only for Pods, not templates.
pub(crate) fn default_pod(pod: &mut Value) {
    let Some(spec) = ensure_obj(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let requests = res.entry("requests").or_insert_with(|| json!({}));
            if requests.is_null() {
                *requests = json!({});
            }
            if let Some(r) = requests.as_object_mut() {
                for (k, v) in limits {
                    r.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// What admission plugins add to a Pod on create (ServiceAccount, Priority,
/// DefaultTolerationSeconds) and the initial status the registry sets.
pub(crate) fn default_pod_on_create(pod: &mut Value, admission: &super::AdmissionDefaults) {
    if let Some(spec) = ensure_obj(pod, "spec") {
        let sa = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        spec.insert("serviceAccountName".into(), json!(sa));
        spec.insert("serviceAccount".into(), json!(sa));
        set_default(spec, "priority", json!(0));
        set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
        let tols = spec.entry("tolerations").or_insert_with(|| json!([]));
        if tols.is_null() {
            *tols = json!([]);
        }
        if let Some(tols) = tols.as_array_mut() {
            for (key, seconds) in [
                (
                    "node.kubernetes.io/not-ready",
                    admission.not_ready_toleration_seconds,
                ),
                (
                    "node.kubernetes.io/unreachable",
                    admission.unreachable_toleration_seconds,
                ),
            ] {
                // An existing NoExecute (or any-effect) toleration for the key wins.
                let covered = tols.iter().any(|t| {
                    t.get("key").and_then(Value::as_str) == Some(key)
                        && matches!(
                            t.get("effect").and_then(Value::as_str),
                            None | Some("") | Some("NoExecute")
                        )
                });
                if !covered {
                    tols.push(json!({"key": key, "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": seconds}));
                }
            }
        }
    }
    let qos = qos_class(pod);
    if let Some(status) = ensure_obj(pod, "status") {
        set_default(status, "phase", json!("Pending"));
        status.insert("qosClass".into(), json!(qos));
    }
}

/// `qos.GetPodQOS`: Guaranteed when every container has equal cpu and memory requests and
/// limits, BestEffort when nothing is requested or limited, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for c in cs {
            let res = c.get("resources").unwrap_or(&Value::Null);
            let req = res.get("requests").and_then(Value::as_object);
            let lim = res.get("limits").and_then(Value::as_object);
            let relevant = |m: Option<&Map<String, Value>>| {
                m.map(|m| {
                    m.iter()
                        .filter(|(k, v)| {
                            (*k == "cpu" || *k == "memory" || k.starts_with("hugepages-"))
                                && !is_zero_quantity(v)
                        })
                        .count()
                })
                .unwrap_or(0)
            };
            if relevant(req) > 0 || relevant(lim) > 0 {
                any = true;
            }
            for r in ["cpu", "memory"] {
                let l = lim.and_then(|m| m.get(r));
                let q = req.and_then(|m| m.get(r)).or(l);
                match (l, q) {
                    (Some(l), Some(q)) if same_quantity(l, q) => {}
                    _ => guaranteed = false,
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => crate::validation::parse_quantity_value(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn is_zero_quantity(v: &Value) -> bool {
    quantity(v) == Some(0.0)
}

fn same_quantity(a: &Value, b: &Value) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(1.0),
        _ => a == b,
    }
}
