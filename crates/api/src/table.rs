//! What `kubectl get` prints: the columns and cells of the `meta.k8s.io/v1` `Table` the
//! apiserver returns for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, per kind,
//! exactly as kube-apiserver's printers (`pkg/printers/internalversion/printers.go`) and
//! its default table convertor (kinds without a printer: NAME, CREATED AT) produce them.
//!
//! Like upstream, the server always generates the wide form: priority-1 columns are
//! included in every row and kubectl hides them unless `-o wide`. Cells keep upstream's
//! Go types (strings, integers, booleans) since kubectl prints them as they come.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::quantity::canonicalize;
use crate::registry::ResourceInfo;
use crate::selectors::{format_labels, LabelSelector};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

/// One column definition (upstream `TableColumnDefinition`).
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    desc: &'static str,
    priority: i32,
}

const fn col(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 0,
    }
}

const fn wide(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 1,
    }
}

const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    desc: NAME_DESC,
    priority: 0,
};
const AGE: Col = col("Age", "string", AGE_DESC);
const CONTAINERS: Col = wide("Containers", "string", CONTAINERS_DESC);
const IMAGES: Col = wide("Images", "string", IMAGES_DESC);

/// Which printer a resource uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Namespace,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    Node,
    Event,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    ResourceQuota,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    Job,
    CronJob,
    Ingress,
    IngressClass,
    NetworkPolicy,
    Lease,
    EndpointSlice,
    HorizontalPodAutoscaler,
    StorageClass,
    PodDisruptionBudget,
    RoleBinding,
    /// Upstream's default table convertor: NAME, CREATED AT.
    Default,
}

fn printer(info: &ResourceInfo) -> Printer {
    match (info.group, info.kind) {
        ("", "Pod") => Printer::Pod,
        ("", "Namespace") => Printer::Namespace,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "Node") => Printer::Node,
        // events.k8s.io shares core's event storage and printer upstream.
        ("", "Event") | ("events.k8s.io", "Event") => Printer::Event,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("", "ResourceQuota") => Printer::ResourceQuota,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("networking.k8s.io", "Ingress") => Printer::Ingress,
        ("networking.k8s.io", "IngressClass") => Printer::IngressClass,
        ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
        ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
        ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => Printer::RoleBinding,
        // Role, ClusterRole, LimitRange and anything unknown.
        _ => Printer::Default,
    }
}

fn columns(p: Printer) -> Vec<Col> {
    match p {
        Printer::Pod => vec![
            NAME,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
            wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Printer::Namespace => vec![NAME, col("Status", "string", "The status of the namespace"), AGE],
        Printer::Service => vec![
            NAME,
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
        ],
        Printer::Endpoints => vec![
            NAME,
            col("Endpoints", "string", "The set of all endpoints is the union of all subsets."),
            AGE,
        ],
        Printer::ConfigMap => vec![NAME, col("Data", "string", "Data contains the configuration data."), AGE],
        Printer::Secret => vec![
            NAME,
            col("Type", "string", "Used to facilitate programmatic handling of secret data."),
            col("Data", "string", "Data contains the secret data."),
            AGE,
        ],
        Printer::Node => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node."),
            wide("External-IP", "string", "List of addresses reachable to the node."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        Printer::Event => vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            col("Object", "string", "The object that this event is about."),
            wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
            wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
            wide("Count", "string", "The number of times this event has occurred."),
            Col { name: "Name", ty: "string", format: "name", desc: NAME_DESC, priority: 1 },
        ],
        Printer::ServiceAccount => vec![
            NAME,
            col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE,
        ],
        Printer::PersistentVolume => vec![
            NAME,
            col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
            col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
            col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            col("StorageClass", "string", "StorageClass of the pv"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
            col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
            AGE,
            wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
        ],
        Printer::PersistentVolumeClaim => vec![
            NAME,
            col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
            col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
            col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
            col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
            AGE,
            wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
        ],
        Printer::ResourceQuota => vec![
            NAME,
            AGE,
            col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
            col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ],
        Printer::Deployment => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        Printer::ReplicaSet => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired replicas."),
            col("Current", "integer", "Replicas is the most recently observed number of replicas."),
            col("Ready", "integer", "The number of ready replicas for this replica set."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
        ],
        Printer::StatefulSet => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        Printer::DaemonSet => vec![
            NAME,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
        ],
        Printer::ControllerRevision => vec![
            NAME,
            col("Controller", "string", "Controller of the object"),
            col("Revision", "string", "Revision indicates the revision of the state represented by Data."),
            AGE,
        ],
        Printer::Job => vec![
            NAME,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The number of pods which reached phase Succeeded."),
            col("Duration", "string", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::CronJob => vec![
            NAME,
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
            col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", "A label query over pods that should match the pod count."),
        ],
        Printer::Ingress => vec![
            NAME,
            col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
            col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
            col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
            col("Ports", "string", "Ports of TLS configurations that open"),
            AGE,
        ],
        Printer::IngressClass => vec![
            NAME,
            col("Controller", "string", "Controller that is responsible for handling this class"),
            col("Parameters", "string", "A reference to a resource with additional parameters"),
            AGE,
        ],
        Printer::NetworkPolicy => vec![
            NAME,
            col("Pod-Selector", "string", "Selects the pods to which this NetworkPolicy object applies."),
            AGE,
        ],
        Printer::Lease => vec![
            NAME,
            col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        Printer::EndpointSlice => vec![
            NAME,
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        Printer::HorizontalPodAutoscaler => vec![
            NAME,
            col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
            col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count."),
            col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
            col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
            AGE,
        ],
        Printer::StorageClass => vec![
            NAME,
            col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
            col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
            col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
            col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
            AGE,
        ],
        Printer::PodDisruptionBudget => vec![
            NAME,
            col("Min Available", "string", "The minimum number of pods that must be available."),
            col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
            col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
            AGE,
        ],
        Printer::RoleBinding => vec![
            NAME,
            col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
            AGE,
            wide("Users", "string", "Users in the roleBinding"),
            wide("Groups", "string", "Groups in the roleBinding"),
            wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
        ],
        Printer::Default => vec![NAME, col("Created At", "date", AGE_DESC)],
    }
}

/// The column definitions upstream serves for this resource, wide columns included
/// (priority 1). Each is `{"name","type","format","description","priority"}`.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    columns(printer(info))
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.desc,
                "priority": c.priority,
            })
        })
        .collect()
}

/// The cells of one object's row, one per column of [`column_definitions`], as of `now`.
pub fn row_cells(info: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let p = Ctx { obj, now };
    match printer(info) {
        Printer::Pod => p.pod(),
        Printer::Namespace => vec![p.name(), p.str("/status/phase").into(), p.age()],
        Printer::Service => p.service(),
        Printer::Endpoints => vec![p.name(), format_endpoints(obj).into(), p.age()],
        Printer::ConfigMap => {
            let n = p.len("/data") + p.len("/binaryData");
            vec![p.name(), n.into(), p.age()]
        }
        Printer::Secret => vec![
            p.name(),
            p.str("/type").into(),
            p.len("/data").into(),
            p.age(),
        ],
        Printer::Node => p.node(),
        Printer::Event if info.group == "events.k8s.io" => Ctx {
            obj: &events_v1_as_core(obj),
            now,
        }
        .event(),
        Printer::Event => p.event(),
        Printer::ServiceAccount => vec![p.name(), p.len("/secrets").into(), p.age()],
        Printer::PersistentVolume => p.persistent_volume(),
        Printer::PersistentVolumeClaim => p.persistent_volume_claim(),
        Printer::ResourceQuota => p.resource_quota(),
        Printer::Deployment => p.deployment(),
        Printer::ReplicaSet => {
            let mut cells = vec![
                p.name(),
                p.int_or("/spec/replicas", 1).into(),
                p.int("/status/replicas").into(),
                p.int("/status/readyReplicas").into(),
                p.age(),
            ];
            cells.extend(p.containers("/spec/template/spec/containers"));
            cells.push(format_label_selector(obj.pointer("/spec/selector")).into());
            cells
        }
        Printer::StatefulSet => {
            let ready = format!(
                "{}/{}",
                p.int("/status/readyReplicas"),
                p.int_or("/spec/replicas", 1)
            );
            let mut cells = vec![p.name(), ready.into(), p.age()];
            cells.extend(p.containers("/spec/template/spec/containers"));
            cells
        }
        Printer::DaemonSet => {
            let mut cells = vec![
                p.name(),
                p.int("/status/desiredNumberScheduled").into(),
                p.int("/status/currentNumberScheduled").into(),
                p.int("/status/numberReady").into(),
                p.int("/status/updatedNumberScheduled").into(),
                p.int("/status/numberAvailable").into(),
                format_labels(&string_map(obj.pointer("/spec/template/spec/nodeSelector"))).into(),
                p.age(),
            ];
            cells.extend(p.containers("/spec/template/spec/containers"));
            cells.push(format_label_selector(obj.pointer("/spec/selector")).into());
            cells
        }
        Printer::ControllerRevision => {
            vec![
                p.name(),
                controller_of(obj).into(),
                p.int("/revision").into(),
                p.age(),
            ]
        }
        Printer::Job => p.job(),
        Printer::CronJob => p.cron_job(),
        Printer::Ingress => p.ingress(),
        Printer::IngressClass => {
            let parameters = match obj.pointer("/spec/parameters").filter(|v| v.is_object()) {
                None => "<none>".to_string(),
                Some(params) => {
                    let mut s = str_at(params, "/kind").to_string();
                    if let Some(group) = params.get("apiGroup").and_then(Value::as_str) {
                        s = format!("{s}.{group}");
                    }
                    format!("{s}/{}", str_at(params, "/name"))
                }
            };
            vec![
                p.name(),
                p.str("/spec/controller").into(),
                parameters.into(),
                p.age(),
            ]
        }
        Printer::NetworkPolicy => {
            // podSelector is a struct, never nil: empty means everything, printed <none>.
            let sel = obj
                .pointer("/spec/podSelector")
                .cloned()
                .unwrap_or_else(|| json!({}));
            vec![p.name(), format_label_selector(Some(&sel)).into(), p.age()]
        }
        Printer::Lease => vec![p.name(), p.str("/spec/holderIdentity").into(), p.age()],
        Printer::EndpointSlice => vec![
            p.name(),
            p.str("/addressType").into(),
            format_discovery_ports(obj).into(),
            format_discovery_endpoints(obj).into(),
            p.age(),
        ],
        Printer::HorizontalPodAutoscaler => p.hpa(),
        Printer::StorageClass => p.storage_class(),
        Printer::PodDisruptionBudget => {
            let int_or_string = |ptr: &str| match obj.pointer(ptr) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => "N/A".to_string(),
            };
            vec![
                p.name(),
                int_or_string("/spec/minAvailable").into(),
                int_or_string("/spec/maxUnavailable").into(),
                p.int("/status/disruptionsAllowed").into(),
                p.age(),
            ]
        }
        Printer::RoleBinding => p.role_binding(),
        Printer::Default => {
            // Upstream formats the zero time when the timestamp is missing.
            let created = timestamp(obj, "/metadata/creationTimestamp")
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
            vec![p.name(), created.into()]
        }
    }
}

/// Upstream row conditions: a pod that Succeeded or Failed is marked Completed (kubectl
/// uses this to tell finished pods apart). Empty for everything else.
pub fn row_conditions(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    if printer(info) != Printer::Pod {
        return Vec::new();
    }
    match str_at(obj, "/status/phase") {
        "Succeeded" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}),
        ],
        "Failed" => vec![
            json!({"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}),
        ],
        _ => Vec::new(),
    }
}

/// Upstream `duration.HumanDuration`: a short approximate duration (`45s`, `5m30s`, `3h`,
/// `2d5h`, `3y45d`), `0s` for tiny negative skews and `<invalid>` below -1s.
pub fn human_duration(d: Duration) -> String {
    let nanos = d.num_nanoseconds().unwrap_or(if d < Duration::zero() {
        i64::MIN
    } else {
        i64::MAX
    });
    let seconds = nanos / 1_000_000_000;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

// ---------------------------------------------------------------------------------------
// Field access helpers: stored objects are untrusted JSON, so every read has a default.

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn timestamp(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    let s = v.pointer(ptr)?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream `metav1.FormatLabelSelector`: `<none>` when it selects everything, `<error>`
/// when it does not convert.
fn format_label_selector(v: Option<&Value>) -> String {
    match LabelSelector::from_json(v) {
        Err(_) => "<error>".to_string(),
        Ok(s) => {
            let out = s.to_string();
            if out.is_empty() {
                "<none>".to_string()
            } else {
                out
            }
        }
    }
}

struct Ctx<'a> {
    obj: &'a Value,
    now: DateTime<Utc>,
}

impl Ctx<'_> {
    fn name(&self) -> Value {
        str_at(self.obj, "/metadata/name").into()
    }

    fn str(&self, ptr: &str) -> String {
        str_at(self.obj, ptr).to_string()
    }

    fn int(&self, ptr: &str) -> i64 {
        int_at(self.obj, ptr)
    }

    fn int_or(&self, ptr: &str, default: i64) -> i64 {
        self.obj
            .pointer(ptr)
            .and_then(Value::as_i64)
            .unwrap_or(default)
    }

    fn len(&self, ptr: &str) -> i64 {
        match self.obj.pointer(ptr) {
            Some(Value::Object(m)) => m.len() as i64,
            Some(Value::Array(a)) => a.len() as i64,
            _ => 0,
        }
    }

    /// Upstream `translateTimestampSince`.
    fn since(&self, t: Option<DateTime<Utc>>) -> String {
        match t {
            None => "<unknown>".to_string(),
            Some(t) => human_duration(self.now - t),
        }
    }

    fn age(&self) -> Value {
        self.since(timestamp(self.obj, "/metadata/creationTimestamp"))
            .into()
    }

    /// Upstream `layoutContainerCells`: names and images joined by commas.
    fn containers(&self, ptr: &str) -> [Value; 2] {
        let cs = arr_at(self.obj, ptr);
        let names: Vec<&str> = cs.iter().map(|c| str_at(c, "/name")).collect();
        let images: Vec<&str> = cs.iter().map(|c| str_at(c, "/image")).collect();
        [names.join(",").into(), images.join(",").into()]
    }

    fn pod(&self) -> Vec<Value> {
        let o = self.obj;
        let mut restarts: i64 = 0;
        let mut restartable_init_restarts: i64 = 0;
        let mut total = arr_at(o, "/spec/containers").len() as i64;
        let mut ready: i64 = 0;
        let mut last_restart: Option<DateTime<Utc>> = None;
        let mut last_restartable_init_restart: Option<DateTime<Utc>> = None;
        let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, None) => x,
            (None, y) => y,
        };

        let phase = str_at(o, "/status/phase");
        let mut reason = phase.to_string();
        let status_reason = str_at(o, "/status/reason");
        if !status_reason.is_empty() {
            reason = status_reason.to_string();
        }
        let conditions = arr_at(o, "/status/conditions");
        if conditions.iter().any(|c| {
            str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated"
        }) {
            reason = "SchedulingGated".to_string();
        }

        // Sidecars (init containers with restartPolicy Always) count as containers.
        let init_specs = arr_at(o, "/spec/initContainers");
        let restartable = |name: &str| {
            init_specs
                .iter()
                .any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always")
        };
        total += init_specs
            .iter()
            .filter(|c| str_at(c, "/restartPolicy") == "Always")
            .count() as i64;

        let mut initializing = false;
        for (i, c) in arr_at(o, "/status/initContainerStatuses")
            .iter()
            .enumerate()
        {
            let count = int_at(c, "/restartCount");
            let finished = timestamp(c, "/lastState/terminated/finishedAt");
            restarts += count;
            last_restart = later(last_restart, finished);
            let sidecar = restartable(str_at(c, "/name"));
            if sidecar {
                restartable_init_restarts += count;
                last_restartable_init_restart = later(last_restartable_init_restart, finished);
            }
            let terminated = c.pointer("/state/terminated").filter(|v| v.is_object());
            let waiting_reason = str_at(c, "/state/waiting/reason");
            if terminated.is_some() && int_at(c, "/state/terminated/exitCode") == 0 {
                continue;
            }
            if sidecar && c.get("started").and_then(Value::as_bool) == Some(true) {
                if c.get("ready").and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if !r.is_empty() {
                    format!("Init:{r}")
                } else if int_at(t, "/signal") != 0 {
                    format!("Init:Signal:{}", int_at(t, "/signal"))
                } else {
                    format!("Init:ExitCode:{}", int_at(t, "/exitCode"))
                };
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                reason = format!("Init:{waiting_reason}");
            } else {
                reason = format!("Init:{}/{}", i, init_specs.len());
            }
            initializing = true;
            break;
        }

        let initialized = conditions
            .iter()
            .any(|c| str_at(c, "/type") == "Initialized" && str_at(c, "/status") == "True");
        if !initializing || initialized {
            restarts = restartable_init_restarts;
            last_restart = last_restartable_init_restart;
            let mut has_running = false;
            for c in arr_at(o, "/status/containerStatuses").iter().rev() {
                restarts += int_at(c, "/restartCount");
                last_restart = later(
                    last_restart,
                    timestamp(c, "/lastState/terminated/finishedAt"),
                );
                let waiting = str_at(c, "/state/waiting/reason");
                let terminated = c.pointer("/state/terminated").filter(|v| v.is_object());
                if !waiting.is_empty() {
                    reason = waiting.to_string();
                } else if let Some(t) = terminated {
                    let r = str_at(t, "/reason");
                    reason = if !r.is_empty() {
                        r.to_string()
                    } else if int_at(t, "/signal") != 0 {
                        format!("Signal:{}", int_at(t, "/signal"))
                    } else {
                        format!("ExitCode:{}", int_at(t, "/exitCode"))
                    };
                } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                    && c.pointer("/state/running").is_some_and(Value::is_object)
                {
                    has_running = true;
                    ready += 1;
                }
            }
            // A pod whose last container completed but another still runs is Running.
            if reason == "Completed" && has_running {
                let pod_ready = conditions
                    .iter()
                    .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True");
                reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
            }
        }

        let deleting = o
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        if deleting && status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if deleting && phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }

        let restarts_str = match last_restart {
            Some(t) if restarts != 0 => format!("{restarts} ({} ago)", self.since(Some(t))),
            _ => restarts.to_string(),
        };

        let mut ip = str_at(o, "/status/podIPs/0/ip");
        if ip.is_empty() {
            ip = str_at(o, "/status/podIP");
        }
        let none = |s: &str| {
            if s.is_empty() {
                "<none>".to_string()
            } else {
                s.to_string()
            }
        };
        let gates = arr_at(o, "/spec/readinessGates");
        let readiness_gates = if gates.is_empty() {
            "<none>".to_string()
        } else {
            let true_count = gates
                .iter()
                .filter(|g| {
                    let t = str_at(g, "/conditionType");
                    conditions
                        .iter()
                        .find(|c| str_at(c, "/type") == t)
                        .is_some_and(|c| str_at(c, "/status") == "True")
                })
                .count();
            format!("{}/{}", true_count, gates.len())
        };
        vec![
            self.name(),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_str.into(),
            self.age(),
            none(ip).into(),
            none(str_at(o, "/spec/nodeName")).into(),
            none(str_at(o, "/status/nominatedNodeName")).into(),
            readiness_gates.into(),
        ]
    }

    fn service(&self) -> Vec<Value> {
        let o = self.obj;
        let svc_type = match str_at(o, "/spec/type") {
            // Defaulting makes every stored Service a ClusterIP one unless told otherwise.
            "" => "ClusterIP",
            t => t,
        };
        let mut cluster_ip = str_at(o, "/spec/clusterIPs/0");
        if cluster_ip.is_empty() {
            cluster_ip = str_at(o, "/spec/clusterIP");
        }
        let cluster_ip = if cluster_ip.is_empty() {
            "<none>"
        } else {
            cluster_ip
        };
        let external_ips: Vec<&str> = arr_at(o, "/spec/externalIPs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let external = match svc_type {
            "ClusterIP" | "NodePort" => {
                if external_ips.is_empty() {
                    "<none>".to_string()
                } else {
                    external_ips.join(",")
                }
            }
            "LoadBalancer" => {
                let lb = load_balancer_ingress(o);
                let mut all: Vec<String> = lb.clone();
                all.extend(external_ips.iter().map(|s| s.to_string()));
                if !external_ips.is_empty() {
                    all.join(",")
                } else if !lb.is_empty() {
                    lb.join(",")
                } else {
                    "<pending>".to_string()
                }
            }
            "ExternalName" => str_at(o, "/spec/externalName").to_string(),
            _ => "<unknown>".to_string(),
        };
        let ports: Vec<String> = arr_at(o, "/spec/ports")
            .iter()
            .map(|p| {
                let proto = match str_at(p, "/protocol") {
                    "" => "TCP",
                    x => x,
                };
                let node_port = int_at(p, "/nodePort");
                if node_port > 0 {
                    format!("{}:{}/{}", int_at(p, "/port"), node_port, proto)
                } else {
                    format!("{}/{}", int_at(p, "/port"), proto)
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            self.name(),
            svc_type.into(),
            cluster_ip.into(),
            external.into(),
            ports.into(),
            self.age(),
            format_labels(&string_map(o.pointer("/spec/selector"))).into(),
        ]
    }

    fn node(&self) -> Vec<Value> {
        let o = self.obj;
        // Only the Ready condition counts; a later duplicate wins, as in upstream's map.
        let ready = arr_at(o, "/status/conditions")
            .iter()
            .rfind(|c| str_at(c, "/type") == "Ready")
            .map(|c| str_at(c, "/status") == "True");
        let mut status = vec![match ready {
            Some(true) => "Ready",
            Some(false) => "NotReady",
            None => "Unknown",
        }];
        if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            status.push("SchedulingDisabled");
        }
        let mut roles = BTreeSet::new();
        for (k, v) in string_map(o.pointer("/metadata/labels")) {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                roles.insert(v);
            }
        }
        let roles = if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.into_iter().collect::<Vec<_>>().join(",")
        };
        let address = |ty: &str| {
            arr_at(o, "/status/addresses")
                .iter()
                .find(|a| str_at(a, "/type") == ty)
                .map(|a| str_at(a, "/address").to_string())
                .unwrap_or_else(|| "<none>".to_string())
        };
        let unknown = |ptr: &str| match str_at(o, ptr) {
            "" => "<unknown>".to_string(),
            s => s.to_string(),
        };
        vec![
            self.name(),
            status.join(",").into(),
            roles.into(),
            self.age(),
            self.str("/status/nodeInfo/kubeletVersion").into(),
            address("InternalIP").into(),
            address("ExternalIP").into(),
            unknown("/status/nodeInfo/osImage").into(),
            unknown("/status/nodeInfo/kernelVersion").into(),
            unknown("/status/nodeInfo/containerRuntimeVersion").into(),
        ]
    }

    fn event(&self) -> Vec<Value> {
        let o = self.obj;
        let mut first = self.since(timestamp(o, "/firstTimestamp"));
        if timestamp(o, "/firstTimestamp").is_none() {
            first = self.since(timestamp(o, "/eventTime"));
        }
        let mut last = self.since(timestamp(o, "/lastTimestamp"));
        if timestamp(o, "/lastTimestamp").is_none() {
            last = first.clone();
        }
        let mut count = int_at(o, "/count");
        if o.get("series").is_some_and(Value::is_object) {
            last = self.since(timestamp(o, "/series/lastObservedTime"));
            count = int_at(o, "/series/count");
        } else if count == 0 {
            // Singleton events of the new API carry no count.
            count = 1;
        }
        let kind = str_at(o, "/involvedObject/kind").to_lowercase();
        let name = str_at(o, "/involvedObject/name");
        let target = if name.is_empty() {
            kind
        } else {
            format!("{kind}/{name}")
        };
        let first_non_empty = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        let component = first_non_empty(
            str_at(o, "/source/component"),
            str_at(o, "/reportingComponent"),
        );
        let instance = first_non_empty(str_at(o, "/source/host"), str_at(o, "/reportingInstance"));
        let source = if instance.is_empty() {
            component
        } else {
            format!("{component}, {instance}")
        };
        vec![
            last.into(),
            self.str("/type").into(),
            self.str("/reason").into(),
            target.into(),
            self.str("/involvedObject/fieldPath").into(),
            source.into(),
            str_at(o, "/message").trim().into(),
            first.into(),
            count.into(),
            self.name(),
        ]
    }

    fn persistent_volume(&self) -> Vec<Value> {
        let o = self.obj;
        let claim = match o.pointer("/spec/claimRef").filter(|v| v.is_object()) {
            Some(c) => format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")),
            None => String::new(),
        };
        let mut phase = self.str("/status/phase");
        if o.pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            phase = "Terminating".to_string();
        }
        let mut class = str_at(
            o,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .to_string();
        if o.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_none()
        {
            class = self.str("/spec/storageClassName");
        }
        vec![
            self.name(),
            quantity_string(o.pointer("/spec/capacity/storage")).into(),
            access_modes(arr_at(o, "/spec/accessModes")).into(),
            self.str("/spec/persistentVolumeReclaimPolicy").into(),
            phase.into(),
            claim.into(),
            class.into(),
            unset(str_at(o, "/spec/volumeAttributesClassName")).into(),
            self.str("/status/reason").into(),
            self.age(),
            unset(str_at(o, "/spec/volumeMode")).into(),
        ]
    }

    fn persistent_volume_claim(&self) -> Vec<Value> {
        let o = self.obj;
        let mut phase = self.str("/status/phase");
        if o.pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            phase = "Terminating".to_string();
        }
        let volume = self.str("/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                quantity_string(o.pointer("/status/capacity/storage")),
                access_modes(arr_at(o, "/status/accessModes")),
            )
        };
        let class =
            match o.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class") {
                Some(v) => v.as_str().unwrap_or("").to_string(),
                None => self.str("/spec/storageClassName"),
            };
        vec![
            self.name(),
            phase.into(),
            volume.into(),
            capacity.into(),
            modes.into(),
            class.into(),
            unset(str_at(o, "/spec/volumeAttributesClassName")).into(),
            self.age(),
            unset(str_at(o, "/spec/volumeMode")).into(),
        ]
    }

    fn resource_quota(&self) -> Vec<Value> {
        let o = self.obj;
        let hard = o.pointer("/status/hard").and_then(Value::as_object);
        let mut names: Vec<&String> = hard.map(|m| m.keys().collect()).unwrap_or_default();
        names.sort();
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        for name in names {
            let used =
                quantity_string(o.pointer("/status/used").and_then(|u| u.get(name.as_str())));
            let limit = quantity_string(hard.and_then(|h| h.get(name.as_str())));
            let entry = format!("{name}: {used}/{limit}");
            let pieces: Vec<&str> = name.split('.').collect();
            if pieces.len() > 1 && pieces[0] == "limits" {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
        vec![
            self.name(),
            self.age(),
            requests.join(", ").into(),
            limits.join(", ").into(),
        ]
    }

    fn deployment(&self) -> Vec<Value> {
        let o = self.obj;
        let selector = match LabelSelector::from_json(o.pointer("/spec/selector")) {
            Ok(s) => s.to_string(),
            Err(_) => "<invalid>".to_string(),
        };
        let ready = format!(
            "{}/{}",
            self.int("/status/readyReplicas"),
            self.int_or("/spec/replicas", 1)
        );
        let mut cells = vec![
            self.name(),
            ready.into(),
            self.int("/status/updatedReplicas").into(),
            self.int("/status/availableReplicas").into(),
            self.age(),
        ];
        cells.extend(self.containers("/spec/template/spec/containers"));
        cells.push(selector.into());
        cells
    }

    fn job(&self) -> Vec<Value> {
        let o = self.obj;
        let succeeded = self.int("/status/succeeded");
        let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{succeeded}/{c}"),
            None => {
                let parallelism = self.int("/spec/parallelism");
                if parallelism > 1 {
                    format!("{succeeded}/1 of {parallelism}")
                } else {
                    format!("{succeeded}/1")
                }
            }
        };
        let duration = match (
            timestamp(o, "/status/startTime"),
            timestamp(o, "/status/completionTime"),
        ) {
            (None, _) => String::new(),
            (Some(start), None) => human_duration(self.now - start),
            (Some(start), Some(done)) => human_duration(done - start),
        };
        // The first condition of a type decides, as upstream's hasJobCondition does.
        let has = |ty: &str| {
            arr_at(o, "/status/conditions")
                .iter()
                .find(|c| str_at(c, "/type") == ty)
                .is_some_and(|c| str_at(c, "/status") == "True")
        };
        let status = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if o
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            "Terminating"
        } else if has("Suspended") {
            "Suspended"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        let mut cells = vec![
            self.name(),
            status.into(),
            completions.into(),
            duration.into(),
            self.age(),
        ];
        cells.extend(self.containers("/spec/template/spec/containers"));
        cells.push(format_label_selector(o.pointer("/spec/selector")).into());
        cells
    }

    fn cron_job(&self) -> Vec<Value> {
        let o = self.obj;
        let last = match timestamp(o, "/status/lastScheduleTime") {
            Some(t) => self.since(Some(t)),
            None => "<none>".to_string(),
        };
        let tz = o
            .pointer("/spec/timeZone")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let suspend = match o.pointer("/spec/suspend").and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let mut cells = vec![
            self.name(),
            self.str("/spec/schedule").into(),
            tz.into(),
            suspend.into(),
            self.len("/status/active").into(),
            last.into(),
            self.age(),
        ];
        cells.extend(self.containers("/spec/jobTemplate/spec/template/spec/containers"));
        cells.push(format_label_selector(o.pointer("/spec/jobTemplate/spec/selector")).into());
        cells
    }

    fn ingress(&self) -> Vec<Value> {
        let o = self.obj;
        let class = o
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let rules = arr_at(o, "/spec/rules");
        let max = 3;
        let mut list: Vec<&str> = Vec::new();
        let mut more = false;
        for rule in rules {
            if list.len() == max {
                more = true;
            }
            let host = str_at(rule, "/host");
            if !more && !host.is_empty() {
                list.push(host);
            }
        }
        let hosts = if list.is_empty() {
            "*".to_string()
        } else if more {
            format!("{} + {} more...", list.join(","), rules.len() - max)
        } else {
            list.join(",")
        };
        let ports = if arr_at(o, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            self.name(),
            class.into(),
            hosts.into(),
            load_balancer_ingress(o).join(",").into(),
            ports.into(),
            self.age(),
        ]
    }

    fn hpa(&self) -> Vec<Value> {
        let o = self.obj;
        let reference = format!(
            "{}/{}",
            str_at(o, "/spec/scaleTargetRef/kind"),
            str_at(o, "/spec/scaleTargetRef/name")
        );
        let min = match o.pointer("/spec/minReplicas").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".to_string(),
        };
        vec![
            self.name(),
            reference.into(),
            hpa_targets(o).into(),
            min.into(),
            self.int("/spec/maxReplicas").into(),
            self.int("/status/currentReplicas").into(),
            self.age(),
        ]
    }

    fn storage_class(&self) -> Vec<Value> {
        let o = self.obj;
        let annotations = string_map(o.pointer("/metadata/annotations"));
        let is_default = [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|k| annotations.get(*k).map(String::as_str) == Some("true"));
        let mut name = self.str("/metadata/name");
        if is_default {
            name.push_str(" (default)");
        }
        let or = |ptr: &str, d: &str| match str_at(o, ptr) {
            "" => d.to_string(),
            s => s.to_string(),
        };
        vec![
            name.into(),
            self.str("/provisioner").into(),
            or("/reclaimPolicy", "Delete").into(),
            or("/volumeBindingMode", "Immediate").into(),
            o.get("allowVolumeExpansion")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .into(),
            self.age(),
        ]
    }

    fn role_binding(&self) -> Vec<Value> {
        let o = self.obj;
        let role = format!(
            "{}/{}",
            str_at(o, "/roleRef/kind"),
            str_at(o, "/roleRef/name")
        );
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let mut sas = Vec::new();
        for s in arr_at(o, "/subjects") {
            match str_at(s, "/kind") {
                "ServiceAccount" => sas.push(format!(
                    "{}/{}",
                    str_at(s, "/namespace"),
                    str_at(s, "/name")
                )),
                "User" => users.push(str_at(s, "/name").to_string()),
                "Group" => groups.push(str_at(s, "/name").to_string()),
                _ => {}
            }
        }
        vec![
            self.name(),
            role.into(),
            self.age(),
            users.join(", ").into(),
            groups.join(", ").into(),
            sas.join(", ").into(),
        ]
    }
}

fn unset(s: &str) -> String {
    if s.is_empty() {
        "<unset>".to_string()
    } else {
        s.to_string()
    }
}

/// A stored quantity printed the way upstream's `Quantity.String()` prints it; a missing
/// one is the zero quantity, `0`.
fn quantity_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => canonicalize(s),
        Some(Value::Number(n)) => canonicalize(&n.to_string()),
        _ => "0".to_string(),
    }
}

/// Upstream `helper.GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, s)| *s)
    .collect::<Vec<_>>()
    .join(",")
}

/// IPs (or hostnames) of `.status.loadBalancer.ingress`, sorted and unique (the wide,
/// untruncated form the server always produces).
fn load_balancer_ingress(o: &Value) -> Vec<String> {
    let mut set = BTreeSet::new();
    for i in arr_at(o, "/status/loadBalancer/ingress") {
        let ip = str_at(i, "/ip");
        let host = str_at(i, "/hostname");
        if !ip.is_empty() {
            set.insert(ip.to_string());
        } else if !host.is_empty() {
            set.insert(host.to_string());
        }
    }
    set.into_iter().collect()
}

/// Upstream `formatEndpoints` with all ports: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(o: &Value) -> String {
    let subsets = arr_at(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = arr_at(ss, "/addresses");
        let ports = arr_at(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(str_at(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, "/ip"), int_at(port, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    ret
}

/// Go's `net.JoinHostPort`: IPv6 addresses get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn list_with_more(list: Vec<String>, more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

fn format_discovery_ports(o: &Value) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for p in arr_at(o, "/ports") {
        if list.len() < max {
            let num = match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            };
            list.push(num);
        } else if list.len() == max {
            more = true;
        }
        count += 1;
    }
    list_with_more(list, more, count, max)
}

fn format_discovery_endpoints(o: &Value) -> String {
    let max = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for e in arr_at(o, "/endpoints") {
        for a in arr_at(e, "/addresses") {
            if list.len() < max {
                list.push(a.as_str().unwrap_or("").to_string());
            } else if list.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(list, more, count, max)
}

/// The owner reference marked `controller: true`, as `kind.group/name` lowercased kind.
fn controller_of(o: &Value) -> String {
    let Some(owner) = arr_at(o, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let (group, _) = crate::registry::split_api_version(str_at(owner, "/apiVersion"));
    let kind = str_at(owner, "/kind");
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    if gk.is_empty() {
        return str_at(owner, "/name").to_string();
    }
    format!("{}/{}", gk.to_lowercase(), str_at(owner, "/name"))
}

/// Upstream `formatHPAMetrics` over v2 `spec.metrics`/`status.currentMetrics`; an
/// autoscaling/v1 object's CPU target is read as the one Resource metric it converts to.
fn hpa_targets(o: &Value) -> String {
    let (specs, statuses): (Vec<Value>, Vec<Value>) = if o.pointer("/spec/metrics").is_some() {
        (
            arr_at(o, "/spec/metrics").to_vec(),
            arr_at(o, "/status/currentMetrics").to_vec(),
        )
    } else if let Some(target) = o
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
    {
        let spec = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}});
        let status = match o
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            Some(cur) => vec![
                json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cur}}}),
            ],
            None => Vec::new(),
        };
        (vec![spec], status)
    } else {
        (Vec::new(), Vec::new())
    };
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let q = |v: Option<&Value>| quantity_string(v);
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let cur = |source: &str, field: &str| -> Option<&Value> {
            status
                .and_then(|s| s.get(source))
                .filter(|v| v.is_object())
                .and_then(|v| v.pointer(field))
        };
        let has_status = |source: &str| {
            status
                .and_then(|s| s.get(source))
                .is_some_and(Value::is_object)
        };
        let entry = match str_at(spec, "/type") {
            kind @ ("External" | "Object") => {
                let source = if kind == "External" {
                    "external"
                } else {
                    "object"
                };
                let target_avg = spec.pointer(&format!("/{source}/target/averageValue"));
                if let Some(avg) = target_avg.filter(|v| !v.is_null()) {
                    let current = match cur(source, "/current/averageValue") {
                        Some(v) if !v.is_null() => q(Some(v)),
                        _ => "<unknown>".to_string(),
                    };
                    format!("{current}/{} (avg)", q(Some(avg)))
                } else {
                    let current = if has_status(source) {
                        q(cur(source, "/current/value"))
                    } else {
                        "<unknown>".to_string()
                    };
                    format!(
                        "{current}/{}",
                        q(spec.pointer(&format!("/{source}/target/value")))
                    )
                }
            }
            "Pods" => {
                let current = if has_status("pods") {
                    q(cur("pods", "/current/averageValue"))
                } else {
                    "<unknown>".to_string()
                };
                format!("{current}/{}", q(spec.pointer("/pods/target/averageValue")))
            }
            kind @ ("Resource" | "ContainerResource") => {
                let source = if kind == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let name = str_at(spec, &format!("/{source}/name"));
                let target_avg = spec.pointer(&format!("/{source}/target/averageValue"));
                if let Some(avg) = target_avg.filter(|v| !v.is_null()) {
                    let current = if has_status(source) {
                        q(cur(source, "/current/averageValue"))
                    } else {
                        "<unknown>".to_string()
                    };
                    format!("{name}: {current}/{}", q(Some(avg)))
                } else {
                    let current =
                        match cur(source, "/current/averageUtilization").and_then(Value::as_i64) {
                            Some(n) => format!("{n}%"),
                            None => "<unknown>".to_string(),
                        };
                    let target = match spec
                        .pointer(&format!("/{source}/target/averageUtilization"))
                        .and_then(Value::as_i64)
                    {
                        Some(n) => format!("{n}%"),
                        None => "<auto>".to_string(),
                    };
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    let max = 2;
    let count = list.len();
    if count > max {
        list.truncate(max);
        return format!("{} + {} more...", list.join(", "), count - max);
    }
    list.join(", ")
}

/// An events.k8s.io/v1 Event in the core/v1 shape upstream's printer reads (upstream
/// converts both to its internal event type first).
fn events_v1_as_core(o: &Value) -> Value {
    let get = |k: &str| o.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "metadata": get("metadata"),
        "involvedObject": get("regarding"),
        "reason": get("reason"),
        "message": get("note"),
        "type": get("type"),
        "source": get("deprecatedSource"),
        "firstTimestamp": get("deprecatedFirstTimestamp"),
        "lastTimestamp": get("deprecatedLastTimestamp"),
        "count": get("deprecatedCount"),
        "eventTime": get("eventTime"),
        "series": get("series"),
        "reportingComponent": get("reportingController"),
        "reportingInstance": get("reportingInstance"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{lookup, RESOURCES};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap()
    }

    /// An RFC 3339 time `secs` seconds before `now()`.
    fn ago(secs: i64) -> String {
        (now() - Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn cells(group: &str, version: &str, plural: &str, obj: Value) -> Vec<Value> {
        let info = lookup(group, version, plural).expect("resource");
        row_cells(info, &obj, now())
    }

    #[test]
    fn human_duration_matches_upstream() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::seconds(*secs)), *want, "{secs}s");
        }
        assert_eq!(human_duration(Duration::milliseconds(-1500)), "0s");
    }

    #[test]
    fn every_resource_has_one_cell_per_column() {
        let obj = json!({"metadata": {"name": "x", "namespace": "default", "creationTimestamp": ago(30)}});
        for info in RESOURCES {
            let cols = column_definitions(info);
            let row = row_cells(info, &obj, now());
            assert_eq!(
                cols.len(),
                row.len(),
                "{}/{} {}",
                info.group,
                info.version,
                info.plural
            );
            // Events lead with LAST SEEN; their NAME column comes last.
            assert_eq!(
                cols.iter().filter(|c| c["format"] == "name").count(),
                1,
                "{}",
                info.plural
            );
            for c in &cols {
                for k in ["name", "type", "format", "description", "priority"] {
                    assert!(c.get(k).is_some(), "{} column lacks {k}", info.plural);
                }
            }
        }
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(600)},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "n1"},
            "status": status,
        })
    }

    #[test]
    fn pod_status_column_follows_upstream() {
        let crash = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(180)}}
            }]
        }));
        let running = pod(json!({
            "phase": "Running", "podIPs": [{"ip": "10.42.0.7"}], "podIP": "10.42.0.7",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
        }));
        let creating = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]
        }));
        let completed = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
        }));
        let error = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]
        }));
        let exit_code = pod(json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "app", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]
        }));
        let pending = pod(json!({"phase": "Pending"}));
        let mut terminating = running.clone();
        terminating["metadata"]["deletionTimestamp"] = json!(ago(5));
        let mut node_lost = running.clone();
        node_lost["metadata"]["deletionTimestamp"] = json!(ago(5));
        node_lost["status"]["reason"] = json!("NodeLost");
        let mut init = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [{"name": "setup", "restartCount": 0, "state": {"running": {}}}],
            "containerStatuses": [{"name": "app", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]
        }));
        init["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        let mut init_error = init.clone();
        init_error["status"]["initContainerStatuses"] = json!([{"name": "setup", "restartCount": 2,
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]);
        let mut init_crash = init.clone();
        init_crash["status"]["initContainerStatuses"] = json!([{"name": "setup", "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
        let mut sidecar = running.clone();
        sidecar["spec"]["initContainers"] =
            json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
        sidecar["status"]["initContainerStatuses"] = json!([{"name": "proxy", "ready": true, "started": true,
            "restartCount": 1, "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(90)}}}]);

        let cases: Vec<(&str, Value, &str, &str, &str)> = vec![
            ("crashloop", crash, "0/1", "CrashLoopBackOff", "5 (3m ago)"),
            ("running", running, "1/1", "Running", "0"),
            ("creating", creating, "0/1", "ContainerCreating", "0"),
            ("completed", completed, "0/1", "Completed", "0"),
            ("error", error, "0/1", "Error", "0"),
            ("exit code", exit_code, "0/1", "ExitCode:3", "0"),
            ("pending", pending, "0/1", "Pending", "0"),
            ("terminating", terminating, "1/1", "Terminating", "0"),
            ("node lost", node_lost, "1/1", "Unknown", "0"),
            ("init running", init, "0/1", "Init:0/1", "0"),
            ("init error", init_error, "0/1", "Init:Error", "2"),
            (
                "init crash",
                init_crash,
                "0/1",
                "Init:CrashLoopBackOff",
                "2",
            ),
            ("sidecar", sidecar, "2/2", "Running", "1 (90s ago)"),
        ];
        for (name, obj, ready, status, restarts) in cases {
            let c = cells("", "v1", "pods", obj);
            assert_eq!(c[1], json!(ready), "{name}: ready");
            assert_eq!(c[2], json!(status), "{name}: status");
            assert_eq!(c[3], json!(restarts), "{name}: restarts");
            assert_eq!(c[4], json!("10m"), "{name}: age");
        }
    }

    #[test]
    fn pod_wide_columns() {
        let mut p = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.42.0.7"}],
            "conditions": [{"type": "www.example.com/gate", "status": "True"}]}));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "www.example.com/gate"}, {"conditionType": "other"}]);
        let c = cells("", "v1", "pods", p);
        assert_eq!(
            &c[5..],
            &[
                json!("10.42.0.7"),
                json!("n1"),
                json!("<none>"),
                json!("1/2")
            ]
        );
        let bare = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let c = cells("", "v1", "pods", bare);
        assert_eq!(
            &c[4..],
            &[
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let info = lookup("", "v1", "pods").unwrap();
        let done = json!({"status": {"phase": "Succeeded"}});
        assert_eq!(row_conditions(info, &done)[0]["type"], "Completed");
    }

    #[test]
    fn workloads() {
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(3600)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            cells("apps", "v1", "deployments", deploy),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("60m"),
                json!("nginx,side"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            &cells("apps", "v1", "replicasets", rs)[..4],
            &[json!("web-1"), json!(2), json!(2), json!(1)]
        );
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cells("apps", "v1", "statefulsets", sts)[1], json!("3/3"));
        let ds = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(
            &cells("apps", "v1", "daemonsets", ds)[..7],
            &[
                json!("agent"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux")
            ]
        );
        let cr = json!({"metadata": {"name": "db-5d8f", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]}, "revision": 2});
        assert_eq!(
            &cells("apps", "v1", "controllerrevisions", cr)[..3],
            &[json!("db-5d8f"), json!("statefulset.apps/db"), json!(2)]
        );
    }

    #[test]
    fn jobs_and_cronjobs() {
        let running = json!({"metadata": {"name": "pi"}, "spec": {"completions": 1, "parallelism": 1,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"startTime": ago(45), "active": 1}});
        let c = cells("batch", "v1", "jobs", running);
        assert_eq!(&c[1..4], &[json!("Running"), json!("0/1"), json!("45s")]);
        assert_eq!(c[7], json!("batch.kubernetes.io/controller-uid=u1"));
        let done = json!({"metadata": {"name": "pi"}, "spec": {"completions": 3},
            "status": {"startTime": ago(300), "completionTime": ago(100), "succeeded": 3,
                "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}});
        assert_eq!(
            &cells("batch", "v1", "jobs", done)[1..4],
            &[json!("Complete"), json!("3/3"), json!("3m20s")]
        );
        let failed = json!({"metadata": {"name": "f"}, "spec": {"parallelism": 2},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(
            &cells("batch", "v1", "jobs", failed)[1..4],
            &[json!("Failed"), json!("0/1 of 2"), json!("")]
        );
        let suspended = json!({"metadata": {"name": "s"}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(
            cells("batch", "v1", "jobs", suspended)[1],
            json!("Suspended")
        );

        let cj = json!({"metadata": {"name": "hello", "creationTimestamp": ago(7200)},
            "spec": {"schedule": "*/1 * * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(30)}});
        assert_eq!(
            &cells("batch", "v1", "cronjobs", cj)[..7],
            &[
                json!("hello"),
                json!("*/1 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("30s"),
                json!("120m")
            ]
        );
    }

    #[test]
    fn services() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "web"}, "spec": spec, "status": status});
        let cases: Vec<(Value, [&str; 4])> = vec![
            (
                svc(
                    json!({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}),
                    json!({}),
                ),
                ["ClusterIP", "10.43.0.10", "<none>", "80/TCP"],
            ),
            (
                svc(
                    json!({"type": "NodePort", "clusterIPs": ["10.43.1.1"],
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
                    json!({}),
                ),
                ["NodePort", "10.43.1.1", "<none>", "80:30080/TCP,53/UDP"],
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.43.1.2"], "ports": [{"port": 443, "nodePort": 31443}]}),
                    json!({}),
                ),
                ["LoadBalancer", "10.43.1.2", "<pending>", "443:31443/TCP"],
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.43.1.2"], "ports": []}),
                    json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.5"}]}}),
                ),
                ["LoadBalancer", "10.43.1.2", "192.168.1.5", "<none>"],
            ),
            (
                svc(
                    json!({"type": "ExternalName", "externalName": "example.com"}),
                    json!({}),
                ),
                ["ExternalName", "<none>", "example.com", "<none>"],
            ),
            (
                svc(
                    json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 80}]}),
                    json!({}),
                ),
                ["ClusterIP", "None", "<none>", "80/TCP"],
            ),
        ];
        for (obj, want) in cases {
            let c = cells("", "v1", "services", obj);
            let got: Vec<&str> = c[1..5].iter().map(|v| v.as_str().unwrap_or("?")).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn nodes() {
        let node = |labels: Value, unschedulable: bool, ready: Option<&str>| {
            let conditions = match ready {
                Some(s) => {
                    json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": s}])
                }
                None => json!([]),
            };
            json!({"metadata": {"name": "n1", "labels": labels, "creationTimestamp": ago(86400 * 3)},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": conditions, "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian GNU/Linux 12 (bookworm)"},
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}]}})
        };
        let c = cells(
            "",
            "v1",
            "nodes",
            node(
                json!({"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "true"}),
                false,
                Some("True"),
            ),
        );
        assert_eq!(
            c,
            vec![
                json!("n1"),
                json!("Ready"),
                json!("control-plane,master"),
                json!("3d"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        assert_eq!(
            cells("", "v1", "nodes", node(json!({}), true, Some("True")))[1..3],
            [json!("Ready,SchedulingDisabled"), json!("<none>")]
        );
        assert_eq!(
            cells(
                "",
                "v1",
                "nodes",
                node(
                    json!({"kubernetes.io/role": "worker"}),
                    false,
                    Some("False")
                )
            )[1..3],
            [json!("NotReady"), json!("worker")]
        );
        assert_eq!(
            cells("", "v1", "nodes", node(json!({}), false, None))[1],
            json!("Unknown")
        );
    }

    #[test]
    fn events_core_and_events_k8s_io() {
        let core = json!({"metadata": {"name": "web.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "message": "Successfully pulled image \"nginx\"\n", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3});
        assert_eq!(
            cells("", "v1", "events", core),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(3),
                json!("web.17c")
            ]
        );
        let v1 = json!({"metadata": {"name": "e2"}, "regarding": {"kind": "Node", "name": "n1"}, "reason": "Ready",
            "note": "node is ready", "type": "Normal", "eventTime": "2024-05-01T11:59:00.000000Z",
            "reportingController": "skiff", "reportingInstance": "skiff-n1"});
        assert_eq!(
            cells("events.k8s.io", "v1", "events", v1),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Ready"),
                json!("node/n1"),
                json!(""),
                json!("skiff, skiff-n1"),
                json!("node is ready"),
                json!("60s"),
                json!(1),
                json!("e2")
            ]
        );
    }

    #[test]
    fn core_kinds() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(90000)}, "status": {"phase": "Active"}});
        assert_eq!(
            cells("", "v1", "namespaces", ns),
            vec![json!("default"), json!("Active"), json!("25h")]
        );
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("", "v1", "configmaps", cm)[1], json!(3));
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "MQ=="}});
        assert_eq!(
            cells("", "v1", "secrets", secret)[1..3],
            [json!("Opaque"), json!(1)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(cells("", "v1", "serviceaccounts", sa)[1], json!(0));
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.5"}, {"ip": "10.42.0.6"}, {"ip": "10.42.0.7"}, {"ip": "10.42.0.8"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            cells("", "v1", "endpoints", ep)[1],
            json!("10.42.0.5:80,10.42.0.6:80,10.42.0.7:80 + 1 more...")
        );
        assert_eq!(
            cells("", "v1", "endpoints", json!({"metadata": {"name": "e"}}))[1],
            json!("<none>")
        );
        let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv1", "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            cells("", "v1", "persistentvolumeclaims", pvc)[1..7],
            [
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO"),
                json!("local-path"),
                json!("<unset>")
            ]
        );
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}});
        assert_eq!(
            cells("", "v1", "persistentvolumes", pv)[1..9],
            [
                json!("5Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!(""),
                json!("<unset>"),
                json!("")
            ]
        );
        let quota = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "2Gi"},
            "used": {"pods": "2", "requests.cpu": "500m"}}});
        assert_eq!(
            cells("", "v1", "resourcequotas", quota)[2..4],
            [
                json!("pods: 2/10, requests.cpu: 500m/1"),
                json!("limits.memory: 0/2Gi")
            ]
        );
        let lr =
            json!({"metadata": {"name": "limits", "creationTimestamp": "2024-04-30T10:00:00Z"}});
        assert_eq!(
            cells("", "v1", "limitranges", lr),
            vec![json!("limits"), json!("2024-04-30T10:00:00Z")]
        );
        let info = lookup("", "v1", "limitranges").unwrap();
        assert_eq!(column_definitions(info)[1]["name"], "Created At");
        assert_eq!(column_definitions(info)[1]["type"], "date");
    }

    #[test]
    fn other_groups() {
        let ing = json!({"metadata": {"name": "web"}, "spec": {"ingressClassName": "traefik",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}],
            "tls": [{"hosts": ["a.example.com"]}]}, "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}});
        assert_eq!(
            cells("networking.k8s.io", "v1", "ingresses", ing)[1..5],
            [
                json!("traefik"),
                json!("a.example.com,b.example.com,c.example.com + 2 more..."),
                json!("192.168.1.10"),
                json!("80, 443")
            ]
        );
        let bare_ing = json!({"metadata": {"name": "x"}, "spec": {"rules": [{"http": {}}]}});
        assert_eq!(
            cells("networking.k8s.io", "v1", "ingresses", bare_ing)[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
        let ic = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(
            cells("networking.k8s.io", "v1", "ingressclasses", ic)[1..3],
            [
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/external-lb")
            ]
        );
        let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(
            cells("networking.k8s.io", "v1", "networkpolicies", np)[1],
            json!("<none>")
        );
        let lease = json!({"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(
            cells("coordination.k8s.io", "v1", "leases", lease)[1],
            json!("n1")
        );
        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}]});
        assert_eq!(
            cells("discovery.k8s.io", "v1", "endpointslices", slice)[1..4],
            [json!("IPv4"), json!("80"), json!("10.42.0.5,10.42.0.6")]
        );
        let empty_slice = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(
            cells("discovery.k8s.io", "v1", "endpointslices", empty_slice)[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1024Mi"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35}}}]}});
        assert_eq!(
            cells("autoscaling", "v2", "horizontalpodautoscalers", hpa)[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 35%/80%, memory: <unknown>/1Gi"),
                json!("1"),
                json!(10),
                json!(2)
            ]
        );
        let hpa_v1 = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
            "targetCPUUtilizationPercentage": 50}});
        assert_eq!(
            cells("autoscaling", "v1", "horizontalpodautoscalers", hpa_v1)[2..4],
            [json!("cpu: <unknown>/50%"), json!("<unset>")]
        );
        let sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("storage.k8s.io", "v1", "storageclasses", sc)[..5],
            [
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells("policy", "v1", "poddisruptionbudgets", pdb)[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
        let rb = json!({"metadata": {"name": "admin"}, "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "namespace": "kube-system", "name": "ci"}, {"kind": "User", "name": "bob"}]});
        let c = cells("rbac.authorization.k8s.io", "v1", "rolebindings", rb);
        assert_eq!(c[1], json!("ClusterRole/admin"));
        assert_eq!(
            c[3..6],
            [json!("alice, bob"), json!("devs"), json!("kube-system/ci")]
        );
        let role = json!({"metadata": {"name": "reader"}});
        assert_eq!(
            cells("rbac.authorization.k8s.io", "v1", "roles", role)[1],
            json!("0001-01-01T00:00:00Z")
        );
    }
}
