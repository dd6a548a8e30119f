//! Subresources: `/status` (only status changes), `/scale` (an autoscaling/v1 Scale view of
//! spec.replicas), pods' `/binding` (the scheduler's assignment) and `/eviction`, and
//! namespaces' `/finalize` (the namespace controller's last step), and serviceaccounts'
//! `/token` (a TokenRequest).

use hyper::{Method, Response};
use serde_json::{json, Value};

use api::registry::{ResourceInfo, Subresource};
use api::selectors::LabelSelector;

use super::pipeline::{self, UpdateScope};
use super::read;
use super::render;
use super::write::{self, DeleteOptions, PatchType};
use super::Ctx;
use crate::errors::{store_error, ApiError, ApiResult};
use crate::http::{self, Body};
use crate::objects;
use crate::request::Rendering;
use crate::routes::{NodeSub, SubTarget};
use crate::ApiServer;

pub async fn handle(ctx: Ctx<'_>, method: Method, sub: SubTarget) -> ApiResult<Response<Body>> {
    let not_allowed = |m: &Method| {
        Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        )))
    };
    match sub {
        SubTarget::Known(Subresource::Status) => match method {
            Method::GET => read::get(ctx).await,
            Method::PUT => status_update(ctx).await,
            Method::PATCH => status_patch(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::Known(Subresource::Scale) => match method {
            Method::GET => scale_get(ctx).await,
            Method::PUT | Method::PATCH => scale_write(ctx, method).await,
            m => not_allowed(&m),
        },
        SubTarget::Known(Subresource::Binding) => match method {
            Method::POST => binding(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::Known(Subresource::Eviction) => match method {
            Method::POST => eviction(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::Known(Subresource::Token) => match method {
            Method::POST => token(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::Finalize => match method {
            Method::PUT => finalize(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::Node(NodeSub::Log) => match method {
            Method::GET => super::node_proxy::log(ctx).await,
            m => not_allowed(&m),
        },
        SubTarget::NodeProxy => Err(ApiError::internal("nodes/proxy reached the resource path")),
        // Upgrades are dispatched before the request becomes a `Ctx`.
        SubTarget::Node(sub) => Err(ApiError::internal(format!(
            "pods/{} reached the non-upgrade path",
            sub.name()
        ))),
    }
}

/// A TokenRequest for a ServiceAccount (see `service_accounts::token_request`).
async fn token(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let name = ctx.target.name.clone().unwrap_or_default();
    let namespace = ctx.target.namespace.clone().unwrap_or_default();
    let body = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    let out =
        crate::service_accounts::token_request::issue(ctx.server, &namespace, &name, &body).await?;
    Ok(http::object(201, &out, ctx.rendering))
}

async fn status_update(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let mut obj = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    pipeline::check_type_meta(info, &mut obj)?;
    let (obj, warnings) = pipeline::decode(info, &obj, ctx.query.field_validation()?)?;
    let updated = write::update_object(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &name,
        obj,
        UpdateScope::Status,
        ctx.query.dry_run()?,
        Some(&ctx.manager),
    )
    .await?;
    Ok(status_answer(200, info, updated, ctx.rendering, &warnings))
}

async fn status_patch(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let patch_type = PatchType::from_content_type(&ctx.content_type)?;
    let (obj, warnings, code) = write::patch_object(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &name,
        patch_type,
        &ctx.body,
        &ctx.query,
        UpdateScope::Status,
        &ctx.manager,
    )
    .await?;
    Ok(status_answer(code, info, obj, ctx.rendering, &warnings))
}

/// The answer to a status write: the object (never a Table), from the stored JSON when
/// the client asked for JSON.
fn status_answer(
    code: u16,
    info: &ResourceInfo,
    stored: objects::Stored,
    rendering: Rendering,
    warnings: &[String],
) -> Response<Body> {
    match (rendering, stored.json) {
        (Rendering::Json, Some(json)) => http::json_with_warnings(code, json, warnings),
        _ => http::object_with_warnings(
            code,
            &render::with_type_meta(info, stored.object),
            rendering,
            warnings,
        ),
    }
}

/// The Scale view of a scalable object.
fn scale_of(obj: &Value) -> ApiResult<Value> {
    let selector = match obj["spec"].get("selector") {
        Some(sel) if !sel.is_null() => {
            let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
                serde_json::from_value(sel.clone())
                    .map_err(|e| ApiError::internal(format!("stored selector: {e}")))?;
            LabelSelector::from_label_selector(&typed)
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let meta = &obj["metadata"];
    let mut scale_meta = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(f) {
            scale_meta[f] = v.clone();
        }
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    }))
}

async fn scale_get(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let name = ctx.target.name.clone().unwrap_or_default();
    let obj = read::get_object(
        ctx.server,
        ctx.target.info,
        ctx.target.namespace.as_deref(),
        &name,
    )
    .await?;
    Ok(http::object(200, &scale_of(&obj)?, ctx.rendering))
}

async fn scale_write(ctx: Ctx<'_>, method: Method) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let ns = ctx.target.namespace.clone();
    let dry_run = ctx.query.dry_run()?;
    for _ in 0..16 {
        let current = read::get_object(ctx.server, info, ns.as_deref(), &name).await?;
        let scale = scale_of(&current)?;
        let new_scale = if method == Method::PUT {
            pipeline::parse_body(&ctx.content_type, &ctx.body)?
        } else {
            let pt = PatchType::from_content_type(&ctx.content_type)?;
            let scales = api::registry::lookup("autoscaling", "v1", "horizontalpodautoscalers")
                .unwrap_or(info);
            write::apply_patch(scales, &scale, pt, &ctx.body)?
        };
        // Only a resourceVersion the client sent is a precondition: a patch is applied to
        // a Scale that already carries the current one.
        let client_rv = if method == Method::PUT {
            objects::meta_str(&new_scale, "resourceVersion").map(String::from)
        } else {
            serde_json::from_slice::<Value>(&ctx.body)
                .ok()
                .and_then(|b| objects::meta_str(&b, "resourceVersion").map(String::from))
        }
        .filter(|r| !r.is_empty());
        if let Some(rv) = client_rv.as_deref() {
            if Some(rv) != objects::meta_str(&current, "resourceVersion") {
                return Err(ApiError::conflict(info, &name));
            }
        }
        let replicas = new_scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::new(422, "Invalid", format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"))
                .with_details(json!({"name": name, "group": "autoscaling", "kind": "Scale", "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {replicas}: must be greater than or equal to 0"), "field": "spec.replicas"}]})));
        }
        let mut next = current.clone();
        next["spec"]["replicas"] = json!(replicas);
        // Pin the write to the revision the scale was computed from.
        match write::update_object(
            ctx.server,
            info,
            ns.as_deref(),
            &name,
            next,
            UpdateScope::Main,
            dry_run,
            Some(&ctx.manager),
        )
        .await
        {
            Ok(updated) => {
                return Ok(http::object(
                    200,
                    &scale_of(&updated.object)?,
                    ctx.rendering,
                ))
            }
            // Someone wrote in between: without a client precondition, recompute.
            Err(e) if e.code == 409 && e.reason == "Conflict" && client_rv.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(info, &name))
}

fn success_status(info: &ResourceInfo, code: u16) -> Value {
    let _ = info;
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

async fn binding(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let ns = ctx.target.namespace.clone();
    let binding = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::new(422, "Invalid", format!("Binding.core \"{name}\" is invalid: target.name: Required value"))
            .with_details(json!({"name": name, "kind": "Binding", "causes": [{"reason": "FieldValueRequired", "message": "Required value", "field": "target.name"}]})));
    }
    let key = info.key(ns.as_deref(), &name);
    loop {
        let kv = ctx
            .server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, &name, e))?
            .ok_or_else(|| ApiError::not_found(info, &name))?;
        // A dry run (or a dryRun the decoding path refuses) is decided there.
        let fast = match ctx.query.dry_run() {
            Ok(false) => bind_stored(info, &kv.value, &node),
            _ => None,
        };
        if let Some(bytes) = fast {
            match ctx.server.store.update(&key, bytes, kv.mod_revision).await {
                Ok(_) => return Ok(http::object(201, &success_status(info, 201), ctx.rendering)),
                Err(store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(info, &name, e)),
            }
        }
        let mut pod = objects::decode(info, &kv)?;
        if objects::is_deleting(&pod) {
            return Err(ApiError::conflict_message(
                info,
                &name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(existing) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_message(
                info,
                &name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        set_pod_condition(&mut pod, "PodScheduled", "True");
        if ctx.query.dry_run()? {
            return Ok(http::object(201, &success_status(info, 201), ctx.rendering));
        }
        match ctx
            .server
            .store
            .update(
                &key,
                objects::encode_owned(info, pod)?.bytes,
                kv.mod_revision,
            )
            .await
        {
            Ok(_) => return Ok(http::object(201, &success_status(info, 201), ctx.rendering)),
            Err(store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(info, &name, e)),
        }
    }
}

/// The stored bytes of `stored` (a pod) bound to `node`, without decoding the whole pod:
/// only `spec` and `status` are decoded, changed as the decoding path changes them, and
/// put back among the other members' stored bytes, which gives the bytes that path
/// writes. None when the pod is not in the plain case (being deleted, already assigned,
/// no spec object, or bytes not in the server's own form): the decoding path decides those.
fn bind_stored(info: &ResourceInfo, stored: &[u8], node: &str) -> Option<bytes::Bytes> {
    let members = objects::StoredMembers::of(info, stored)?;
    if members.has_inner("metadata", "deletionTimestamp")? {
        return None;
    }
    let mut spec: Value = serde_json::from_slice(members.get("spec")?).ok()?;
    let spec_map = spec.as_object_mut()?;
    if spec_map
        .get("nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
    {
        return None;
    }
    spec_map.insert("nodeName".into(), json!(node));
    let mut status = match members.get("status") {
        Some(bytes) => serde_json::from_slice::<Value>(bytes)
            .ok()
            .filter(Value::is_object)?,
        None => Value::Null,
    };
    set_condition(&mut status, "PodScheduled", "True");
    let spec = serde_json::to_vec(&spec).ok()?;
    let status = serde_json::to_vec(&status).ok()?;
    Some(members.with(&[("spec", &spec), ("status", &status)]).into())
}

fn set_pod_condition(pod: &mut Value, kind: &str, status: &str) {
    set_condition(&mut pod["status"], kind, status);
}

/// Replace (or add, last) the condition `kind` of a pod status (Null: none yet).
fn set_condition(pod_status: &mut Value, kind: &str, status: &str) {
    let now = objects::now_rfc3339();
    let conditions = pod_status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut next: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c["type"] != kind)
        .collect();
    next.push(
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
    );
    pod_status["conditions"] = Value::Array(next);
}

async fn eviction(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let ns = ctx.target.namespace.clone();
    let eviction = if ctx.body.is_empty() {
        json!({})
    } else {
        pipeline::parse_body(&ctx.content_type, &ctx.body)?
    };
    if let Some(ev_name) = objects::meta_str(&eviction, "name").filter(|n| !n.is_empty()) {
        if ev_name != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object".to_string(),
            ));
        }
    }
    let opts_body = eviction
        .get("deleteOptions")
        .map(|o| serde_json::to_vec(o).unwrap_or_default())
        .unwrap_or_default();
    let opts = DeleteOptions::from_request(&ctx.query, &opts_body)?;
    // The PodDisruptionBudget covering the pod is charged first (upstream's eviction
    // REST): refused when it allows no disruption, else disruptionsAllowed is decremented
    // and the pod recorded in disruptedPods before the pod is deleted.
    charge_disruption_budget(ctx.server, ns.as_deref().unwrap_or(""), &name, opts.dry_run).await?;
    write::delete_object(ctx.server, info, ns.as_deref(), &name, &opts).await?;
    Ok(http::object(201, &success_status(info, 201), ctx.rendering))
}

/// Upstream `MaxDisruptedPodSize`: evictions the disruption controller has not yet
/// confirmed beyond this many are refused.
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

/// How often a budget write that lost a race with another eviction (or the disruption
/// controller) is retried before giving up with 429 (upstream retries on conflict too).
const EVICTION_CONFLICT_RETRIES: usize = 20;

fn pdb_429(message: String) -> ApiError {
    ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": message}]}))
}

/// Check the eviction of `pod_name` against the PodDisruptionBudget covering it and, when
/// allowed, record it in the budget's status (disruptionsAllowed - 1, the pod added to
/// disruptedPods, the DisruptionAllowed condition turned False at 0) with a
/// compare-and-swap on the budget, as upstream's eviction REST `checkAndDecrement`.
/// The disruption controller drops the disruptedPods entry once the pod is going and
/// recounts. Pods that are not running (Pending, finished, already being deleted) are
/// evicted without touching any budget, as upstream `canIgnorePDB`.
async fn charge_disruption_budget(
    server: &ApiServer,
    namespace: &str,
    pod_name: &str,
    dry_run: bool,
) -> ApiResult<()> {
    let pods = api::registry::lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods not registered"))?;
    let pdbs = api::registry::lookup("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("pdbs not registered"))?;
    let pod = read::get_object(server, pods, Some(namespace), pod_name).await?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || objects::is_deleting(&pod) {
        return Ok(());
    }
    let pod_ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    for _attempt in 0..EVICTION_CONFLICT_RETRIES {
        let list = server
            .store
            .list(store::ListRequest {
                prefix: pdbs.collection_prefix(Some(namespace)),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                ApiError::internal(format!("listing disruption budgets in {namespace}: {e}"))
            })?;
        let mut covering = Vec::new();
        for kv in &list.items {
            let pdb = objects::decode(pdbs, kv)?;
            let Some(sel) = pdb["spec"].get("selector").filter(|s| !s.is_null()) else {
                continue;
            };
            let Ok(typed) = serde_json::from_value::<
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
            >(sel.clone()) else {
                continue;
            };
            let Ok(selector) = LabelSelector::from_label_selector(&typed) else {
                continue;
            };
            if selector.matches_object(&pod) {
                covering.push((kv.mod_revision, pdb));
            }
        }
        let (revision, mut pdb) = match covering.len() {
            0 => return Ok(()),
            1 => covering.remove(0),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        let pdb_name = objects::name_of(&pdb).to_string();
        let status = pdb["status"].clone();
        let int = |field: &str| status[field].as_i64().unwrap_or(0);
        // An unready pod does not count as healthy; evicting it cannot lower the healthy
        // count, so upstream (unhealthyPodEvictionPolicy IfHealthyBudget, or AlwaysAllow)
        // lets it go without charging the budget.
        if !pod_ready {
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always
                || (int("desiredHealthy") > 0 && int("currentHealthy") >= int("desiredHealthy"))
            {
                return Ok(());
            }
        }
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        if int("observedGeneration") < generation {
            return Err(pdb_429(format!(
                "The disruption budget {pdb_name} is still being processed by the server."
            )));
        }
        let allowed = int("disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: pdb disruptions allowed is negative"
            )));
        }
        if status["disruptedPods"].as_object().map_or(0, |m| m.len()) > MAX_DISRUPTED_POD_SIZE {
            return Err(ApiError::forbidden(format!(
                "poddisruptionbudgets.policy \"{pdb_name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            )));
        }
        if allowed == 0 {
            return Err(pdb_429(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                int("desiredHealthy"),
                int("currentHealthy")
            )));
        }
        if dry_run {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !pdb["status"]["disruptedPods"].is_object() {
            pdb["status"]["disruptedPods"] = json!({});
        }
        pdb["status"]["disruptedPods"][pod_name] = json!(now);
        if allowed - 1 == 0 {
            let conditions = pdb["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut next: Vec<Value> = Vec::new();
            for mut c in conditions {
                if c["type"] == "DisruptionAllowed" {
                    if c["status"] != "False" {
                        c["lastTransitionTime"] = json!(now);
                    }
                    c["status"] = json!("False");
                    c["reason"] = json!("InsufficientPods");
                }
                next.push(c);
            }
            pdb["status"]["conditions"] = Value::Array(next);
        }
        let key = pdbs.key(Some(namespace), &pdb_name);
        match server
            .store
            .update(&key, objects::encode(pdbs, &pdb)?, revision)
            .await
        {
            Ok(_) => return Ok(()),
            Err(store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(pdbs, &pdb_name, e)),
        }
    }
    Err(pdb_429(
        "The disruption budget is being updated by other evictions; try again".to_string(),
    ))
}

async fn finalize(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let body = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    let finalizers = body["spec"]["finalizers"].clone();
    let key = info.key(None, &name);
    loop {
        let kv = ctx
            .server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, &name, e))?
            .ok_or_else(|| ApiError::not_found(info, &name))?;
        let mut ns = objects::decode(info, &kv)?;
        ns["spec"]["finalizers"] = if finalizers.is_null() {
            json!([])
        } else {
            finalizers.clone()
        };
        let done = objects::is_deleting(&ns)
            && ns["spec"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            && objects::finalizers(&ns).is_empty();
        let result = if done {
            ctx.server
                .store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|_| ns.clone())
        } else {
            ctx.server
                .store
                .update(&key, objects::encode(info, &ns)?, kv.mod_revision)
                .await
                .and_then(|kv| {
                    objects::decode(info, &kv).map_err(|e| store::StoreError::Backend(e.message))
                })
        };
        match result {
            Ok(v) => {
                return Ok(http::object(
                    200,
                    &render::with_type_meta(info, v),
                    ctx.rendering,
                ))
            }
            Err(store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(info, &name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binding as the decoding path writes it: decode, assign, condition, encode.
    fn bound_by_decoding(info: &ResourceInfo, stored: &[u8], node: &str) -> Vec<u8> {
        let kv = store::KeyValue {
            key: "/registry/pods/d/p".into(),
            value: bytes::Bytes::copy_from_slice(stored),
            create_revision: 2,
            mod_revision: 9,
        };
        let mut pod = objects::decode(info, &kv).unwrap();
        pod["spec"]["nodeName"] = json!(node);
        set_pod_condition(&mut pod, "PodScheduled", "True");
        objects::encode_owned(info, pod).unwrap().bytes.to_vec()
    }

    #[test]
    fn bindings_without_decoding_write_what_decoding_writes() {
        let pods = api::registry::lookup("", "v1", "pods").unwrap();
        let meta = json!({"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "w\"é"},
            "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {}}}]});
        let spec = json!({"containers": [{"name": "c", "image": "i"}], "schedulerName": "default-scheduler"});
        let pods_stored = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                "status": {"phase": "Pending", "qosClass": "BestEffort"}}),
            json!({"kind": "Pod", "status": {"conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
                    {"type": "Other", "status": "True"}]},
                "spec": {"nodeName": "", "containers": []}, "metadata": meta, "apiVersion": "v1"}),
        ];
        for pod in pods_stored {
            let stored = serde_json::to_vec(&pod).unwrap();
            let same = (0..3).any(|_| {
                let fast = bind_stored(pods, &stored, "n1").expect("the plain case");
                fast == bound_by_decoding(pods, &stored, "n1")
            });
            assert!(same, "{pod}");
        }
        // Not the plain case: left to the decoding path.
        let declined = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "n2"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec, "status": null}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "3"}, "spec": spec}),
        ];
        for pod in declined {
            let stored = serde_json::to_vec(&pod).unwrap();
            assert!(bind_stored(pods, &stored, "n1").is_none(), "{pod}");
        }
    }
}
