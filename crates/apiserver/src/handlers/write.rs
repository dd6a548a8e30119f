//! create, update, patch, delete and deletecollection, with upstream's optimistic
//! concurrency (resourceVersion preconditions, 409 Conflict), dry runs, graceful and
//! finalizer-gated deletion, and namespace termination.

use hyper::Response;
use serde_json::{json, Value};

use api::registry::ResourceInfo;
use store::StoreError;

use super::pipeline::{self, UpdateScope};
use super::read::{self, Selectors};
use super::render;
use super::Ctx;
use crate::admission;
use crate::errors::{store_error, ApiError, ApiResult};
use crate::http::{self, Body};
use crate::objects::{self, Stored};
use crate::request::{ListOptions, Query};
use crate::ApiServer;

/// How many times a patch is re-applied when the object moved underneath it.
const PATCH_RETRIES: usize = 16;

pub async fn create(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let mut obj = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    pipeline::check_type_meta(info, &mut obj)?;
    let (obj, warnings) = pipeline::decode(info, &obj, ctx.query.field_validation()?)?;
    let created = create_stored(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        obj,
        ctx.query.dry_run()?,
        Some(&ctx.manager),
    )
    .await?;
    Ok(render::written(
        201,
        info,
        created,
        ctx.rendering,
        &warnings,
    ))
}

/// Create an already decoded object: metadata, defaults, validation, admission, store.
/// `manager` takes ownership of every field (None: the caller recorded ownership, as
/// server-side apply does).
pub async fn create_object(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    obj: Value,
    dry_run: bool,
    manager: Option<&str>,
) -> ApiResult<Value> {
    create_stored(server, info, namespace, obj, dry_run, manager)
        .await
        .map(|stored| stored.object)
}

/// `create_object`, with the stored JSON to answer with.
pub async fn create_stored(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    mut obj: Value,
    dry_run: bool,
    manager: Option<&str>,
) -> ApiResult<Stored> {
    pipeline::prepare_for_create(info, &mut obj, namespace)?;
    api::defaults::apply_defaults(info, &mut obj);
    api::defaults::apply_create_defaults_with(info, &mut obj, &server.config.admission);
    pipeline::validate_create(info, &obj)?;
    if let Some(manager) = manager {
        api::managed_fields::record_update(
            info,
            None,
            &mut obj,
            manager,
            None,
            &objects::now_rfc3339(),
        );
    }
    let name = objects::name_of(&obj).to_string();
    if let Some(ns) = namespace.filter(|_| info.namespaced) {
        admission::check_namespace_for_create(server, info, ns, &name).await?;
    }
    if info.kind == "PersistentVolumeClaim" && info.group.is_empty() {
        admission::default_storage_class(server, &mut obj).await?;
    }
    if let (true, Some(ns)) = (info.kind == "Pod" && info.group.is_empty(), namespace) {
        crate::service_accounts::admission::admit_pod(server, ns, &mut obj).await?;
    }
    let key = info.key(namespace, &name);
    let _allocation = if info.kind == "Service" && info.group.is_empty() {
        let mut guard = server.allocation_lock.lock().await;
        // A name that is taken is AlreadyExists, whatever IP it asked for.
        if server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, &name, e))?
            .is_some()
        {
            return Err(ApiError::already_exists(info, &name));
        }
        admission::allocate_service(server, &mut guard, info, &key, &mut obj).await?;
        Some(guard)
    } else {
        None
    };
    if dry_run {
        if server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, &name, e))?
            .is_some()
        {
            return Err(ApiError::already_exists(info, &name));
        }
        return Ok(Stored::tree(render::with_type_meta(info, obj)));
    }
    let encoded = objects::encode_owned(info, obj)?;
    let kv = server
        .store
        .create(&key, encoded.bytes.clone())
        .await
        .map_err(|e| store_error(info, &name, e))?;
    encoded.into_served(info, &kv)
}

pub async fn update(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let mut obj = pipeline::parse_body(&ctx.content_type, &ctx.body)?;
    pipeline::check_type_meta(info, &mut obj)?;
    check_name_matches(&obj, &name)?;
    let (mut obj, warnings) = pipeline::decode(info, &obj, ctx.query.field_validation()?)?;
    let namespace = ctx.target.namespace.as_deref();
    let dry_run = ctx.query.dry_run()?;
    let manager = Some(ctx.manager.as_str());
    let result = update_object(
        ctx.server,
        info,
        namespace,
        &name,
        obj.clone(),
        UpdateScope::Main,
        dry_run,
        manager,
    )
    .await;
    let (updated, code) = match result {
        Err(e) if e.code == 404 && allows_create_on_update(info) => {
            obj["metadata"]["name"] = json!(name);
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            (
                create_stored(ctx.server, info, namespace, obj, dry_run, manager).await?,
                201,
            )
        }
        other => (other?, 200),
    };
    Ok(render::written(
        code,
        info,
        updated,
        ctx.rendering,
        &warnings,
    ))
}

/// Kinds whose PUT creates a missing object, as upstream's strategies allow.
fn allows_create_on_update(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.kind),
        ("", "Endpoints")
            | ("", "Event")
            | ("events.k8s.io", "Event")
            | ("coordination.k8s.io", "Lease")
    )
}

fn check_name_matches(obj: &Value, name: &str) -> ApiResult<()> {
    match objects::meta_str(obj, "name") {
        Some(n) if !n.is_empty() && n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// Replace an object. The new object's resourceVersion, when set, is a precondition;
/// without one the update is unconditional (as upstream allows for built-in kinds).
#[allow(clippy::too_many_arguments)]
pub async fn update_object(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    new: Value,
    scope: UpdateScope,
    dry_run: bool,
    manager: Option<&str>,
) -> ApiResult<Stored> {
    let precondition = match objects::meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty())
    {
        Some(rv) => Some(objects::parse_resource_version(rv)?),
        None => None,
    };
    let key = info.key(namespace, name);
    loop {
        let kv = server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, name, e))?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if let Some(expected) = precondition {
            if expected != kv.mod_revision {
                return Err(ApiError::conflict(info, name));
            }
        }
        let old = objects::decode(info, &kv)?;
        match write_update(
            server,
            info,
            &key,
            &old,
            kv.mod_revision,
            new.clone(),
            scope,
            dry_run,
            manager,
        )
        .await
        {
            Err(WriteError::Moved) if precondition.is_none() => continue,
            Err(WriteError::Moved) => return Err(ApiError::conflict(info, name)),
            Err(WriteError::Api(e)) => return Err(e),
            Ok(v) => return Ok(v),
        }
    }
}

enum WriteError {
    /// The object changed between read and write.
    Moved,
    Api(ApiError),
}

impl From<ApiError> for WriteError {
    fn from(e: ApiError) -> Self {
        WriteError::Api(e)
    }
}

/// Prepare, validate and CAS-write `new` over `old` (read at `revision`).
#[allow(clippy::too_many_arguments)]
async fn write_update(
    server: &ApiServer,
    info: &ResourceInfo,
    key: &str,
    old: &Value,
    revision: i64,
    mut new: Value,
    scope: UpdateScope,
    dry_run: bool,
    manager: Option<&str>,
) -> Result<Stored, WriteError> {
    let name = objects::name_of(old).to_string();
    pipeline::prepare_for_update(info, &mut new, old, scope)?;
    api::defaults::apply_defaults(info, &mut new);
    if scope == UpdateScope::Main {
        // Keeps what the server allocated (a Service's cluster IP and node ports).
        api::defaults::apply_update_defaults(info, &mut new, old);
    }
    pipeline::validate_update(info, &new, old, scope)?;
    if let Some(manager) = manager {
        let subresource = match scope {
            UpdateScope::Main => None,
            UpdateScope::Status => Some("status"),
        };
        api::managed_fields::record_update(
            info,
            Some(old),
            &mut new,
            manager,
            subresource,
            &objects::now_rfc3339(),
        );
    }
    // A Service that asks for a cluster IP or node port it does not hold yet (a type
    // change, a new port) is allocated like a new one, under the lock until stored.
    let _allocation = if scope == UpdateScope::Main
        && info.kind == "Service"
        && info.group.is_empty()
        && admission::service_update_allocates(old, &new)
    {
        let mut guard = server.allocation_lock.lock().await;
        admission::allocate_service(server, &mut guard, info, key, &mut new).await?;
        Some(guard)
    } else {
        None
    };
    objects::set_resource_version(&mut new, revision);
    if objects::same_content(&new, old) {
        return Ok(Stored::tree(old.clone()));
    }
    if dry_run {
        return Ok(Stored::tree(new));
    }
    // An object being deleted goes once its last finalizer is removed.
    if objects::is_deleting(&new)
        && objects::finalizers(&new).is_empty()
        && deletion_grace_over(&new)
    {
        match server.store.delete(key, Some(revision)).await {
            Ok(_) => return Ok(Stored::tree(new)),
            Err(StoreError::Conflict { .. }) => return Err(WriteError::Moved),
            Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(info, &name).into()),
            Err(e) => return Err(store_error(info, &name, e).into()),
        }
    }
    let encoded = objects::encode_owned(info, new)?;
    match server
        .store
        .update(key, encoded.bytes.clone(), revision)
        .await
    {
        Ok(kv) => Ok(encoded.into_served(info, &kv)?),
        Err(StoreError::Conflict { .. }) => Err(WriteError::Moved),
        Err(StoreError::NotFound { .. }) => Err(ApiError::not_found(info, &name).into()),
        Err(e) => Err(store_error(info, &name, e).into()),
    }
}

fn deletion_grace_over(obj: &Value) -> bool {
    obj["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(0)
        == 0
}

/// The patch formats upstream accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Apply a patch document to the current object.
pub fn apply_patch(
    info: &ResourceInfo,
    current: &Value,
    patch_type: PatchType,
    body: &[u8],
) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &patch).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            api::strategic_merge::strategic_merge(info, current, &patch).map_err(patch_error)
        }
        PatchType::Apply => {
            let mut applied: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            pipeline::check_type_meta(info, &mut applied)?;
            api::managed_fields::apply(
                info,
                Some(current),
                &applied,
                "before-first-apply",
                true,
                &objects::now_rfc3339(),
            )
            .map_err(apply_conflict)
        }
    }
}

pub async fn patch(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let patch_type = PatchType::from_content_type(&ctx.content_type)?;
    let (obj, warnings, code) = patch_object(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &name,
        patch_type,
        &ctx.body,
        &ctx.query,
        UpdateScope::Main,
        &ctx.manager,
    )
    .await?;
    Ok(render::written(code, info, obj, ctx.rendering, &warnings))
}

/// Patch an object (main resource or status), re-reading and re-applying on conflicts.
/// Returns the result, warnings and the HTTP code (201 when an apply created it).
#[allow(clippy::too_many_arguments)]
pub async fn patch_object(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    patch_type: PatchType,
    body: &[u8],
    query: &Query,
    scope: UpdateScope,
    manager: &str,
) -> ApiResult<(Stored, Vec<String>, u16)> {
    let force = query.bool("force")?;
    if force && patch_type != PatchType::Apply {
        return Err(ApiError::bad_request(
            "force: Invalid value: true: may not be specified for non-apply patch",
        ));
    }
    let dry_run = query.dry_run()?;
    let validation = query.field_validation()?;
    if patch_type == PatchType::Apply {
        if query.non_empty("fieldManager").is_none() {
            return Err(ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                .with_details(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]})));
        }
        let applied: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if applied["metadata"]["managedFields"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
    }
    let key = info.key(namespace, name);
    for _ in 0..PATCH_RETRIES {
        let kv = server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, name, e))?;
        let Some(kv) = kv else {
            if patch_type == PatchType::Apply && scope == UpdateScope::Main {
                let mut applied: Value = serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                pipeline::check_type_meta(info, &mut applied)?;
                check_name_matches(&applied, name)?;
                applied["metadata"]["name"] = json!(name);
                let merged = api::managed_fields::apply(
                    info,
                    None,
                    &applied,
                    manager,
                    force,
                    &objects::now_rfc3339(),
                )
                .map_err(apply_conflict)?;
                let (obj, warnings) = pipeline::decode(info, &merged, validation)?;
                let created = create_stored(server, info, namespace, obj, dry_run, None).await?;
                return Ok((created, warnings, 201));
            }
            return Err(ApiError::not_found(info, name));
        };
        let current = objects::decode(info, &kv)?;
        let mut patched = match patch_type {
            PatchType::Apply => {
                let mut applied: Value = serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                pipeline::check_type_meta(info, &mut applied)?;
                api::managed_fields::apply(
                    info,
                    Some(&current),
                    &applied,
                    manager,
                    force,
                    &objects::now_rfc3339(),
                )
                .map_err(apply_conflict)?
            }
            _ => apply_patch(info, &current, patch_type, body)?,
        };
        // A resourceVersion in the patch is a precondition on the object patched.
        let requested_rv = objects::meta_str(&patched, "resourceVersion").map(String::from);
        if let Some(rv) = requested_rv.filter(|rv| !rv.is_empty()) {
            if objects::parse_resource_version(&rv)? != kv.mod_revision {
                return Err(ApiError::conflict(info, name));
            }
        }
        pipeline::check_type_meta(info, &mut patched)?;
        check_name_matches(&patched, name)?;
        let (decoded, warnings) =
            pipeline::decode_update(info, patched, &current, scope, validation)?;
        // Apply recorded ownership itself; other patches are Update operations.
        let owner = if patch_type == PatchType::Apply {
            None
        } else {
            Some(manager)
        };
        match write_update(
            server,
            info,
            &key,
            &current,
            kv.mod_revision,
            decoded,
            scope,
            dry_run,
            owner,
        )
        .await
        {
            Ok(v) => return Ok((v, warnings, 200)),
            Err(WriteError::Moved) => continue,
            Err(WriteError::Api(e)) => return Err(e),
        }
    }
    Err(ApiError::conflict(info, name))
}

/// A strategic merge patch that cannot be applied, with upstream's code for the failure.
fn patch_error(e: api::strategic_merge::PatchError) -> ApiError {
    match e.status_code() {
        400 => ApiError::bad_request(e.to_string()),
        422 => ApiError::new(422, "Invalid", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// A server-side apply conflict, served as upstream's 409.
fn apply_conflict(c: api::managed_fields::ApplyConflicts) -> ApiError {
    let status = c.status();
    ApiError::new(409, "Conflict", c.message()).with_details(status["details"].clone())
}

/// Options of a delete, from the query and the DeleteOptions body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn from_request(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut opts = DeleteOptions {
            grace_period_seconds: query.i64("gracePeriodSeconds")?,
            propagation_policy: query.non_empty("propagationPolicy").map(String::from),
            dry_run: query.dry_run()?,
            ..Default::default()
        };
        if query.bool("orphanDependents")? {
            opts.propagation_policy
                .get_or_insert_with(|| "Orphan".into());
        }
        if !body.is_empty() {
            let b: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                opts.grace_period_seconds = Some(g);
            }
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                opts.propagation_policy = Some(p.to_string());
            }
            if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                opts.propagation_policy
                    .get_or_insert_with(|| "Orphan".into());
            }
            if let Some(uid) = b["preconditions"]["uid"].as_str() {
                opts.precondition_uid = Some(uid.to_string());
            }
            if let Some(rv) = b["preconditions"]["resourceVersion"].as_str() {
                opts.precondition_rv = Some(rv.to_string());
            }
            if let Some(dr) = b.get("dryRun").and_then(Value::as_array) {
                if dr.iter().any(|v| v == "All") {
                    opts.dry_run = true;
                }
            }
        }
        if let Some(p) = &opts.propagation_policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        }
        if opts.grace_period_seconds.is_some_and(|g| g < 0) {
            opts.grace_period_seconds = Some(0);
        }
        Ok(opts)
    }
}

/// What a delete did.
pub enum Deleted {
    /// Gone from the store; carries the last state.
    Now(Value),
    /// Marked for deletion (grace period or finalizers pending); carries the new state.
    Pending(Value),
}

pub async fn delete(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let name = ctx.target.name.clone().unwrap_or_default();
    let opts = DeleteOptions::from_request(&ctx.query, &ctx.body)?;
    match delete_object(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &name,
        &opts,
    )
    .await?
    {
        Deleted::Pending(obj) => Ok(http::object(
            200,
            &render::single(info, obj, ctx.rendering, Default::default()),
            ctx.rendering,
        )),
        Deleted::Now(obj) => {
            let uid = objects::meta_str(&obj, "uid").unwrap_or("").to_string();
            let mut details = json!({"name": name, "kind": info.plural, "uid": uid});
            if !info.group.is_empty() {
                details["group"] = json!(info.group);
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details});
            Ok(http::object(200, &status, ctx.rendering))
        }
    }
}

/// Delete (or begin deleting) one object, as upstream's graceful deletion and
/// finalizer rules say.
pub async fn delete_object(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Deleted> {
    if info.kind == "Namespace" && info.group.is_empty() {
        admission::check_namespace_delete(name)?;
    }
    let key = info.key(namespace, name);
    loop {
        let kv = server
            .store
            .get(&key)
            .await
            .map_err(|e| store_error(info, name, e))?
            .ok_or_else(|| ApiError::not_found(info, name))?;
        let current = objects::decode(info, &kv)?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = objects::meta_str(&current, "uid").unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict_message(
                    info,
                    name,
                    &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if objects::parse_resource_version(rv)? != kv.mod_revision {
                return Err(ApiError::conflict_message(info, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                )));
            }
        }
        let plan = plan_delete(info, &current, opts);
        if opts.dry_run {
            return Ok(match plan {
                DeletePlan::Remove => Deleted::Now(current),
                DeletePlan::Mark(v) => Deleted::Pending(v),
                DeletePlan::AlreadyPending => Deleted::Pending(current),
            });
        }
        match plan {
            DeletePlan::AlreadyPending => return Ok(Deleted::Pending(current)),
            DeletePlan::Remove => match server.store.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) => return Ok(Deleted::Now(current)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(info, name)),
                Err(e) => return Err(store_error(info, name, e)),
            },
            DeletePlan::Mark(mut marked) => {
                objects::set_resource_version(&mut marked, kv.mod_revision);
                match server
                    .store
                    .update(&key, objects::encode(info, &marked)?, kv.mod_revision)
                    .await
                {
                    Ok(kv) => return Ok(Deleted::Pending(objects::decode(info, &kv)?)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(ApiError::not_found(info, name))
                    }
                    Err(e) => return Err(store_error(info, name, e)),
                }
            }
        }
    }
}

/// Remove an object regardless of grace periods and finalizers' state checks; used by the
/// namespace finalizer once content is gone.
pub async fn delete_object_now(
    server: &ApiServer,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    match server.store.delete(&info.key(namespace, name), None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_error(info, name, e)),
    }
}

enum DeletePlan {
    Remove,
    /// Store this state (deletionTimestamp set) and wait.
    Mark(Value),
    /// Already being deleted and nothing to shorten.
    AlreadyPending,
}

/// Decide what a delete does to `current` (pure).
fn plan_delete(info: &ResourceInfo, current: &Value, opts: &DeleteOptions) -> DeletePlan {
    let mut finalizers = objects::finalizers(current);
    match opts.propagation_policy.as_deref() {
        Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
            finalizers.push("orphan".into())
        }
        Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
            finalizers.push("foregroundDeletion".into())
        }
        _ => {}
    }
    let is_namespace = info.kind == "Namespace" && info.group.is_empty();
    let ns_finalizers = is_namespace
        && current["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    let grace = graceful_period(info, current, opts);
    let already = objects::is_deleting(current);
    if already {
        // A second delete may only shorten a pending grace period.
        let pending = current["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0);
        if grace < pending {
            let mut next = current.clone();
            next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            next["metadata"]["deletionTimestamp"] = json!(objects::rfc3339_after(grace));
            if grace == 0 && finalizers.is_empty() {
                return DeletePlan::Remove;
            }
            return DeletePlan::Mark(next);
        }
        return DeletePlan::AlreadyPending;
    }
    if finalizers.is_empty() && !ns_finalizers && grace == 0 {
        return DeletePlan::Remove;
    }
    let mut next = current.clone();
    next["metadata"]["deletionTimestamp"] = json!(objects::rfc3339_after(grace));
    next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if !finalizers.is_empty() {
        next["metadata"]["finalizers"] = json!(finalizers);
    }
    if is_namespace {
        next["status"]["phase"] = json!("Terminating");
    }
    DeletePlan::Mark(next)
}

/// The grace period a delete gets: only pods bound to a node and not yet finished wait
/// for their kubelet; everything else goes at once.
fn graceful_period(info: &ResourceInfo, current: &Value, opts: &DeleteOptions) -> i64 {
    if !(info.kind == "Pod" && info.group.is_empty()) {
        return 0;
    }
    let bound = current["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let phase = current["status"]["phase"].as_str().unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    opts.grace_period_seconds
        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

pub async fn delete_collection(ctx: Ctx<'_>) -> ApiResult<Response<Body>> {
    let info = ctx.target.info;
    let opts = DeleteOptions::from_request(&ctx.query, &ctx.body)?;
    let list_opts = ListOptions::from_query(&ctx.query)?;
    let selectors = Selectors::parse(info, &list_opts)?;
    let page = read::list_page(
        ctx.server,
        info,
        ctx.target.namespace.as_deref(),
        &ListOptions {
            limit: None,
            continue_token: None,
            ..list_opts.clone()
        },
        &selectors,
    )
    .await?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let name = objects::name_of(&obj).to_string();
        let ns = objects::meta_str(&obj, "namespace").map(String::from);
        match delete_object(ctx.server, info, ns.as_deref(), &name, &opts).await {
            Ok(Deleted::Now(v)) | Ok(Deleted::Pending(v)) => deleted.push(v),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let meta = render::ListMeta {
        resource_version: page.meta.resource_version,
        ..Default::default()
    };
    Ok(http::object(
        200,
        &render::list(
            info,
            deleted,
            &meta,
            ctx.rendering,
            list_opts.include_object,
        ),
        ctx.rendering,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceInfo {
        api::registry::lookup("", "v1", "pods").unwrap()
    }

    #[test]
    fn unbound_pods_go_at_once() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(matches!(
            plan_delete(pods(), &pod, &DeleteOptions::default()),
            DeletePlan::Remove
        ));
    }

    #[test]
    fn bound_pods_wait_for_their_grace_period() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        match plan_delete(pods(), &pod, &DeleteOptions::default()) {
            DeletePlan::Mark(v) => assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 10),
            _ => panic!("expected a graceful delete"),
        }
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            plan_delete(pods(), &pod, &now),
            DeletePlan::Remove
        ));
    }

    #[test]
    fn finalizers_and_foreground_hold_objects() {
        let cms = api::registry::lookup("", "v1", "configmaps").unwrap();
        let cm = json!({"metadata": {"name": "c", "finalizers": ["x/y"]}});
        assert!(matches!(
            plan_delete(cms, &cm, &DeleteOptions::default()),
            DeletePlan::Mark(_)
        ));
        let plain = json!({"metadata": {"name": "c"}});
        let fg = DeleteOptions {
            propagation_policy: Some("Foreground".into()),
            ..Default::default()
        };
        match plan_delete(cms, &plain, &fg) {
            DeletePlan::Mark(v) => {
                assert_eq!(v["metadata"]["finalizers"], json!(["foregroundDeletion"]))
            }
            _ => panic!("foreground deletion must wait"),
        }
    }

    #[test]
    fn namespaces_terminate() {
        let nss = api::registry::lookup("", "v1", "namespaces").unwrap();
        let ns = json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        match plan_delete(nss, &ns, &DeleteOptions::default()) {
            DeletePlan::Mark(v) => assert_eq!(v["status"]["phase"], "Terminating"),
            _ => panic!("namespaces must terminate first"),
        }
    }
}
