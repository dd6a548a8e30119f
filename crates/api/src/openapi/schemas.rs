//! The schema catalog: every definition the served kinds need, generated from the
//! k8s-openapi `schemars` impls, named as upstream (`io.k8s.api.apps.v1.Deployment`), with
//! the list kinds, the `x-kubernetes-group-version-kind` of every kind and the patch
//! extensions of `crate::strategic_merge::PATCH_FIELDS` added. Kept in Swagger 2.0 form
//! (`#/definitions/<name>` references); `super::v3` rewrites it for OpenAPI 3.

use std::sync::OnceLock;

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac,
    storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::{generate::SchemaSettings, JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::registry::{self, RESOURCES};

/// A kind with a definition: `x-kubernetes-group-version-kind` goes on it.
#[derive(Clone, Debug)]
pub struct KindDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: String,
    /// Definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub name: String,
}

pub struct Catalog {
    /// Definition name → schema, Swagger 2.0 flavoured.
    pub defs: Map<String, Value>,
    pub kinds: Vec<KindDef>,
}

impl Catalog {
    pub fn kind_def(&self, group: &str, version: &str, kind: &str) -> Option<&KindDef> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
    }
}

pub const DEFS_PREFIX: &str = "#/definitions/";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
pub const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
pub const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";
pub const VERSION_INFO: &str = "io.k8s.apimachinery.pkg.version.Info";
pub const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build)
}

fn build() -> Catalog {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/definitions".into();
    settings.transforms.clear();
    settings.meta_schema = None;
    let mut gen = SchemaGenerator::new(settings);
    let mut kinds: Vec<KindDef> = Vec::new();

    // Every kind a path of `registry::RESOURCES` speaks, including the subresource kinds.
    macro_rules! kinds {
        ($(($group:expr, $version:expr, $kind:expr, $ty:ty)),* $(,)?) => {$(
            gen.subschema_for::<$ty>();
            kinds.push(KindDef {
                group: $group,
                version: $version,
                kind: $kind.to_string(),
                name: <$ty as JsonSchema>::schema_name().into_owned(),
            });
        )*};
    }
    kinds!(
        ("", "v1", "Namespace", core::v1::Namespace),
        ("", "v1", "Pod", core::v1::Pod),
        ("", "v1", "Service", core::v1::Service),
        ("", "v1", "Endpoints", core::v1::Endpoints),
        ("", "v1", "ConfigMap", core::v1::ConfigMap),
        ("", "v1", "Secret", core::v1::Secret),
        ("", "v1", "Node", core::v1::Node),
        ("", "v1", "Event", core::v1::Event),
        ("", "v1", "ServiceAccount", core::v1::ServiceAccount),
        ("", "v1", "PersistentVolume", core::v1::PersistentVolume),
        (
            "",
            "v1",
            "PersistentVolumeClaim",
            core::v1::PersistentVolumeClaim
        ),
        ("", "v1", "LimitRange", core::v1::LimitRange),
        ("", "v1", "ResourceQuota", core::v1::ResourceQuota),
        ("", "v1", "Binding", core::v1::Binding),
        ("", "v1", "Status", meta::Status),
        ("apps", "v1", "Deployment", apps::v1::Deployment),
        ("apps", "v1", "ReplicaSet", apps::v1::ReplicaSet),
        ("apps", "v1", "StatefulSet", apps::v1::StatefulSet),
        ("apps", "v1", "DaemonSet", apps::v1::DaemonSet),
        (
            "apps",
            "v1",
            "ControllerRevision",
            apps::v1::ControllerRevision
        ),
        ("batch", "v1", "Job", batch::v1::Job),
        ("batch", "v1", "CronJob", batch::v1::CronJob),
        (
            "networking.k8s.io",
            "v1",
            "Ingress",
            networking::v1::Ingress
        ),
        (
            "networking.k8s.io",
            "v1",
            "IngressClass",
            networking::v1::IngressClass
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            networking::v1::NetworkPolicy
        ),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            coordination::v1::Lease
        ),
        (
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            discovery::v1::EndpointSlice
        ),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            autoscaling::v2::HorizontalPodAutoscaler
        ),
        (
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            autoscaling::v1::HorizontalPodAutoscaler
        ),
        ("autoscaling", "v1", "Scale", autoscaling::v1::Scale),
        (
            "storage.k8s.io",
            "v1",
            "StorageClass",
            storage::v1::StorageClass
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            policy::v1::PodDisruptionBudget
        ),
        ("policy", "v1", "Eviction", policy::v1::Eviction),
        ("rbac.authorization.k8s.io", "v1", "Role", rbac::v1::Role),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            rbac::v1::ClusterRole
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            rbac::v1::RoleBinding
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            rbac::v1::ClusterRoleBinding
        ),
        ("events.k8s.io", "v1", "Event", events::v1::Event),
    );
    // Types the paths use that are not kinds of one group.
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::WatchEvent<Value>>();
    gen.subschema_for::<meta::APIResourceList>();
    gen.subschema_for::<meta::APIGroup>();
    gen.subschema_for::<meta::APIGroupList>();
    gen.subschema_for::<meta::APIVersions>();
    gen.subschema_for::<k8s_openapi::apimachinery::pkg::version::Info>();

    let mut defs = gen.take_definitions(false);

    // List kinds: k8s-openapi models them as one generic `List<T>`, upstream has one
    // definition per kind.
    for r in RESOURCES {
        let Some(item) = kinds
            .iter()
            .find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
        else {
            continue;
        };
        let list_name = format!("{}List", item.name);
        if defs.contains_key(&list_name) {
            continue;
        }
        defs.insert(list_name.clone(), list_schema(r.kind, &item.name));
        kinds.push(KindDef {
            group: r.group,
            version: r.version,
            kind: r.list_kind(),
            name: list_name,
        });
    }

    fix_up(&mut defs, &kinds);
    Catalog { defs, kinds }
}

fn list_schema(kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": { "$ref": format!("{DEFS_PREFIX}{item}") }
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "$ref": format!("{DEFS_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        },
        "required": ["items"]
    })
}

/// Bring the generated definitions to upstream's shape.
fn fix_up(defs: &mut Map<String, Value>, kinds: &[KindDef]) {
    // k8s-openapi marks non-optional Rust fields `required`; upstream never requires the
    // metadata, spec or status of a top-level kind (core/v1 Event's metadata excepted).
    for k in kinds {
        let Some(Value::Object(def)) = defs.get_mut(&k.name) else {
            continue;
        };
        if let Some(Value::Array(req)) = def.get_mut("required") {
            let keep_metadata = k.name == "io.k8s.api.core.v1.Event";
            req.retain(|f| match f.as_str() {
                Some("spec") | Some("status") => false,
                Some("metadata") => keep_metadata,
                _ => true,
            });
            if req.is_empty() {
                def.shift_remove("required");
            }
        }
    }

    // Swagger 2.0 spelling of the two scalar types that are "int or string".
    if let Some(Value::Object(d)) = defs.get_mut(INT_OR_STRING) {
        d.insert("type".into(), "string".into());
        d.insert("format".into(), "int-or-string".into());
        d.shift_remove("x-kubernetes-int-or-string");
    }
    if let Some(Value::Object(d)) = defs.get_mut(QUANTITY) {
        d.insert("type".into(), "string".into());
        d.shift_remove("x-kubernetes-int-or-string");
    }

    // Patch strategies: what kubectl's client-side apply builds its patches from.
    for (ty, field, strategy, key) in crate::strategic_merge::PATCH_FIELDS {
        let Some(prop) = defs
            .get_mut(*ty)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), (*key).into());
        }
        prop.insert("x-kubernetes-patch-strategy".into(), (*strategy).into());
    }

    // Every kind names its group/version/kind. DeleteOptions and WatchEvent are shared by
    // every group version, as upstream lists them.
    for k in kinds {
        push_gvk(defs, &k.name, k.group, k.version, &k.kind);
    }
    for g in registry::groups() {
        for v in &g.versions {
            push_gvk(defs, DELETE_OPTIONS, g.name, v, "DeleteOptions");
            push_gvk(defs, WATCH_EVENT, g.name, v, "WatchEvent");
        }
    }
}

fn push_gvk(defs: &mut Map<String, Value>, name: &str, group: &str, version: &str, kind: &str) {
    let Some(Value::Object(def)) = defs.get_mut(name) else {
        return;
    };
    let entry = def
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    let gvk = json!({"group": group, "kind": kind, "version": version});
    if let Value::Array(list) = entry {
        if !list.contains(&gvk) {
            list.push(gvk);
        }
    }
}

/// Every definition name a schema refers to, transitively, into `out`.
pub fn collect_refs(
    defs: &Map<String, Value>,
    v: &Value,
    out: &mut std::collections::BTreeSet<String>,
) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or(r).to_string();
                if out.insert(name.clone()) {
                    if let Some(d) = defs.get(&name) {
                        collect_refs(defs, d, out);
                    }
                }
            }
            for (k, x) in m {
                if k != "$ref" {
                    collect_refs(defs, x, out);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                collect_refs(defs, x, out);
            }
        }
        _ => {}
    }
}
