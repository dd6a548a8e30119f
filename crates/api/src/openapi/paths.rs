//! The REST operations of every served resource, as kube-apiserver lists them in its
//! OpenAPI documents (operation ids, `x-kubernetes-action`, `x-kubernetes-group-version-kind`,
//! query parameters, bodies and responses), in a neutral form that `super` renders as
//! Swagger 2.0 or OpenAPI 3.0. kubectl reads the PATCH operations: their
//! `fieldValidation` parameter tells it the server validates fields itself, and their
//! `application/strategic-merge-patch+json` body tells it to send strategic merge patches.

use crate::registry::{ResourceInfo, Subresource, RESOURCES};

use super::schemas::{self, catalog};

#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    /// `query` or `path`.
    pub location: &'static str,
    pub description: &'static str,
    /// `string`, `integer` or `boolean`.
    pub ty: &'static str,
    pub unique_items: bool,
    pub required: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    /// The object itself (create, replace).
    Object,
    /// A patch document in any of the four patch types.
    Patch,
    /// DeleteOptions.
    DeleteOptions,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub method: &'static str,
    pub operation_id: String,
    pub description: String,
    pub tag: String,
    pub action: &'static str,
    pub gvk: (String, String, String),
    pub params: Vec<Param>,
    pub body: Body,
    /// Definition of the object in the body (create, replace).
    pub body_def: String,
    /// (status code, definition name)
    pub responses: Vec<(u16, String)>,
    /// A watch: the response is a stream of WatchEvent.
    pub streams: bool,
}

#[derive(Clone, Debug)]
pub struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

const PRETTY: Param = q(
    "pretty",
    "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    "string",
);
const NAME: Param = Param {
    name: "name",
    location: "path",
    description: "name of the resource",
    ty: "string",
    unique_items: true,
    required: true,
};
const NAMESPACE: Param = Param {
    name: "namespace",
    location: "path",
    description: "object name and auth scope, such as for teams and projects",
    ty: "string",
    unique_items: true,
    required: true,
};
const DRY_RUN: Param = q(
    "dryRun",
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    "string",
);
const FIELD_MANAGER: Param = q(
    "fieldManager",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
    "string",
);
const FIELD_MANAGER_PATCH: Param = q(
    "fieldManager",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).",
    "string",
);
const FIELD_VALIDATION: Param = q(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    "string",
);
const FORCE: Param = q(
    "force",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
    "boolean",
);
const GRACE_PERIOD: Param = q(
    "gracePeriodSeconds",
    "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
    "integer",
);
const IGNORE_STORE_READ_ERROR: Param = q(
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it",
    "boolean",
);
const ORPHAN: Param = q(
    "orphanDependents",
    "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
    "boolean",
);
const PROPAGATION: Param = q(
    "propagationPolicy",
    "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
    "string",
);
const LIST_PARAMS: &[Param] = &[
    q(
        "allowWatchBookmarks",
        "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        "boolean",
    ),
    q(
        "continue",
        "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.",
        "string",
    ),
    q(
        "fieldSelector",
        "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        "string",
    ),
    q(
        "labelSelector",
        "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        "string",
    ),
    q(
        "limit",
        "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        "integer",
    ),
    q(
        "resourceVersion",
        "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        "string",
    ),
    q(
        "resourceVersionMatch",
        "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        "string",
    ),
    q(
        "sendInitialEvents",
        "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
        "boolean",
    ),
    q(
        "timeoutSeconds",
        "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        "integer",
    ),
    q(
        "watch",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        "boolean",
    ),
];

const fn q(name: &'static str, description: &'static str, ty: &'static str) -> Param {
    Param {
        name,
        location: "query",
        description,
        ty,
        unique_items: true,
        required: false,
    }
}

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, "" → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Upstream's operation tag: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
pub fn tag(group: &str, version: &str) -> String {
    if group.is_empty() {
        return format!("core_{version}");
    }
    let camel = group_camel(group);
    let mut c = camel.chars();
    let lower = match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// `/api/v1` or `/apis/apps/v1`.
pub fn gv_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// Every path of one group/version, in upstream's order.
pub fn group_version_paths(group: &str, version: &str) -> Vec<PathItem> {
    let prefix = gv_prefix(group, version);
    let tag = tag(group, version);
    let mut out = vec![PathItem {
        path: format!("{prefix}/"),
        params: Vec::new(),
        operations: vec![Operation {
            method: "get",
            operation_id: format!(
                "get{}{}APIResources",
                group_camel(group),
                capitalize(version)
            ),
            description: "get available resources".into(),
            tag: tag.clone(),
            action: "",
            gvk: (String::new(), String::new(), String::new()),
            params: Vec::new(),
            body: Body::None,
            body_def: String::new(),
            responses: vec![(200, schemas::API_RESOURCE_LIST.into())],
            streams: false,
        }],
    }];
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.extend(resource_paths(r, &prefix, &tag));
    }
    out
}

fn resource_paths(r: &ResourceInfo, prefix: &str, tag: &str) -> Vec<PathItem> {
    let cat = catalog();
    let Some(def) = cat.kind_def(r.group, r.version, r.kind) else {
        return Vec::new();
    };
    let obj = def.name.clone();
    let list = format!("{obj}List");
    let gvk = (
        r.group.to_string(),
        r.version.to_string(),
        r.kind.to_string(),
    );
    let gv = format!("{}{}", group_camel(r.group), capitalize(r.version));
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let op = |method: &'static str,
              verb: &str,
              suffix: &str,
              description: String,
              action: &'static str| Operation {
        method,
        operation_id: format!("{verb}{gv}{ns}{kind}{suffix}"),
        description,
        tag: tag.to_string(),
        action,
        gvk: gvk.clone(),
        params: Vec::new(),
        body: Body::None,
        body_def: String::new(),
        responses: Vec::new(),
        streams: false,
    };
    let (coll, item) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        )
    } else {
        (
            format!("{prefix}/{}", r.plural),
            format!("{prefix}/{}/{{name}}", r.plural),
        )
    };
    let scope_params = |with_name: bool| {
        let mut p = Vec::new();
        if with_name {
            p.push(NAME);
        }
        if r.namespaced {
            p.push(NAMESPACE);
        }
        p.push(PRETTY);
        p
    };
    let mut delete_params = vec![
        DRY_RUN,
        GRACE_PERIOD,
        IGNORE_STORE_READ_ERROR,
        ORPHAN,
        PROPAGATION,
    ];
    let mut out = Vec::new();

    // The collection.
    let mut list_op = op(
        "get",
        "list",
        "",
        format!("list or watch objects of kind {kind}"),
        "list",
    );
    list_op.params = LIST_PARAMS.to_vec();
    list_op.responses = vec![(200, list.clone())];
    let mut create = op("post", "create", "", format!("create a {kind}"), "post");
    create.params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    create.body = Body::Object;
    create.body_def = obj.clone();
    create.responses = vec![(200, obj.clone()), (201, obj.clone()), (202, obj.clone())];
    let mut delete_coll = op(
        "delete",
        "deleteCollection",
        "",
        format!("delete collection of {kind}"),
        "deletecollection",
    );
    delete_coll.params = {
        let mut p = vec![
            LIST_PARAMS[1],
            DRY_RUN,
            LIST_PARAMS[2],
            GRACE_PERIOD,
            IGNORE_STORE_READ_ERROR,
            LIST_PARAMS[3],
            LIST_PARAMS[4],
            ORPHAN,
            PROPAGATION,
        ];
        p.extend_from_slice(&LIST_PARAMS[5..9]);
        p
    };
    delete_coll.body = Body::DeleteOptions;
    delete_coll.responses = vec![(200, schemas::STATUS.into())];
    out.push(PathItem {
        path: coll.clone(),
        params: scope_params(false),
        operations: vec![list_op, create, delete_coll],
    });

    // One object.
    let mut read = op(
        "get",
        "read",
        "",
        format!("read the specified {kind}"),
        "get",
    );
    read.responses = vec![(200, obj.clone())];
    let mut replace = op(
        "put",
        "replace",
        "",
        format!("replace the specified {kind}"),
        "put",
    );
    replace.params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    replace.body = Body::Object;
    replace.body_def = obj.clone();
    replace.responses = vec![(200, obj.clone()), (201, obj.clone())];
    let mut delete = op("delete", "delete", "", format!("delete a {kind}"), "delete");
    delete.params = std::mem::take(&mut delete_params);
    delete.body = Body::DeleteOptions;
    delete.responses = vec![(200, schemas::STATUS.into()), (202, schemas::STATUS.into())];
    let mut patch = op(
        "patch",
        "patch",
        "",
        format!("partially update the specified {kind}"),
        "patch",
    );
    patch.params = vec![DRY_RUN, FIELD_MANAGER_PATCH, FIELD_VALIDATION, FORCE];
    patch.body = Body::Patch;
    patch.responses = vec![(200, obj.clone()), (201, obj.clone())];
    out.push(PathItem {
        path: item.clone(),
        params: scope_params(true),
        operations: vec![read, replace, delete, patch],
    });

    // Subresources.
    for sub in r.subresources {
        let (sg, sv, sk) = sub.kind(r);
        let sub_def = match cat.kind_def(sg, sv, sk) {
            Some(d) => d.name.clone(),
            None => continue,
        };
        let sub_gvk = (sg.to_string(), sv.to_string(), sk.to_string());
        let suffix = capitalize(sub.name());
        let path = format!("{item}/{}", sub.name());
        let mut ops = Vec::new();
        match sub {
            Subresource::Status | Subresource::Scale => {
                let mut read = op(
                    "get",
                    "read",
                    &suffix,
                    format!("read {} of the specified {kind}", sub.name()),
                    "get",
                );
                read.gvk = sub_gvk.clone();
                read.responses = vec![(200, sub_def.clone())];
                let mut replace = op(
                    "put",
                    "replace",
                    &suffix,
                    format!("replace {} of the specified {kind}", sub.name()),
                    "put",
                );
                replace.gvk = sub_gvk.clone();
                replace.params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
                replace.body = Body::Object;
                replace.body_def = sub_def.clone();
                replace.responses = vec![(200, sub_def.clone()), (201, sub_def.clone())];
                let mut patch = op(
                    "patch",
                    "patch",
                    &suffix,
                    format!("partially update {} of the specified {kind}", sub.name()),
                    "patch",
                );
                patch.gvk = sub_gvk.clone();
                patch.params = vec![DRY_RUN, FIELD_MANAGER_PATCH, FIELD_VALIDATION, FORCE];
                patch.body = Body::Patch;
                patch.responses = vec![(200, sub_def.clone()), (201, sub_def.clone())];
                ops.extend([read, replace, patch]);
            }
            Subresource::Binding | Subresource::Eviction | Subresource::Token => {
                let mut create = op(
                    "post",
                    "create",
                    &suffix,
                    format!("create {} of a {kind}", sub.name()),
                    "post",
                );
                create.gvk = sub_gvk.clone();
                create.params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
                create.body = Body::Object;
                create.body_def = sub_def.clone();
                create.responses = vec![
                    (200, sub_def.clone()),
                    (201, sub_def.clone()),
                    (202, sub_def.clone()),
                ];
                ops.push(create);
            }
        }
        out.push(PathItem {
            path,
            params: scope_params(true),
            operations: ops,
        });
    }

    // All namespaces, and the watch paths.
    if r.namespaced {
        let mut all = op(
            "get",
            "list",
            "ForAllNamespaces",
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        all.operation_id = format!("list{gv}{kind}ForAllNamespaces");
        all.params = LIST_PARAMS.to_vec();
        all.responses = vec![(200, list.clone())];
        out.push(PathItem {
            path: format!("{prefix}/{}", r.plural),
            params: vec![PRETTY],
            operations: vec![all],
        });
    }
    let watch_coll = coll.replacen(prefix, &format!("{prefix}/watch"), 1);
    let watch_item = item.replacen(prefix, &format!("{prefix}/watch"), 1);
    let mut wl = op("get", "watch", "List", format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."), "watchlist");
    wl.params = LIST_PARAMS.to_vec();
    wl.responses = vec![(200, schemas::WATCH_EVENT.into())];
    wl.streams = true;
    out.push(PathItem {
        path: watch_coll,
        params: scope_params(false),
        operations: vec![wl],
    });
    let mut w = op("get", "watch", "", format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."), "watch");
    w.params = LIST_PARAMS.to_vec();
    w.responses = vec![(200, schemas::WATCH_EVENT.into())];
    w.streams = true;
    out.push(PathItem {
        path: watch_item,
        params: scope_params(true),
        operations: vec![w],
    });
    if r.namespaced {
        let mut wa = op("get", "watch", "ListForAllNamespaces", format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."), "watchlist");
        wa.operation_id = format!("watch{gv}{kind}ListForAllNamespaces");
        wa.params = LIST_PARAMS.to_vec();
        wa.responses = vec![(200, schemas::WATCH_EVENT.into())];
        wa.streams = true;
        out.push(PathItem {
            path: format!("{prefix}/watch/{}", r.plural),
            params: vec![PRETTY],
            operations: vec![wa],
        });
    }
    out
}

/// The discovery paths outside any group version: `/api/`, `/apis/`, `/apis/<group>/`,
/// `/version/`, keyed by their OpenAPI v3 document path (`api`, `apis`, `apis/apps`,
/// `version`).
pub fn discovery_paths(doc: &str) -> Option<Vec<PathItem>> {
    let simple = |path: String, id: String, description: &str, tag: &str, def: &str| PathItem {
        path,
        params: Vec::new(),
        operations: vec![Operation {
            method: "get",
            operation_id: id,
            description: description.into(),
            tag: tag.into(),
            action: "",
            gvk: (String::new(), String::new(), String::new()),
            params: Vec::new(),
            body: Body::None,
            body_def: String::new(),
            responses: vec![(200, def.into())],
            streams: false,
        }],
    };
    match doc {
        "api" => Some(vec![simple(
            "/api/".into(),
            "getCoreAPIVersions".into(),
            "get available API versions",
            "core",
            schemas::API_VERSIONS,
        )]),
        "apis" => Some(vec![simple(
            "/apis/".into(),
            "getAPIVersions".into(),
            "get available API versions",
            "apis",
            schemas::API_GROUP_LIST,
        )]),
        "version" => Some(vec![simple(
            "/version/".into(),
            "getCodeVersion".into(),
            "get the version information for this server",
            "version",
            schemas::VERSION_INFO,
        )]),
        _ => {
            let group = doc.strip_prefix("apis/")?;
            if group.contains('/') || !RESOURCES.iter().any(|r| r.group == group) {
                return None;
            }
            let camel = group_camel(group);
            let mut c = camel.chars();
            let tag = c
                .next()
                .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
                .unwrap_or_default();
            Some(vec![simple(
                format!("/apis/{group}/"),
                format!("get{camel}APIGroup"),
                "get information of a group",
                &tag,
                schemas::API_GROUP,
            )])
        }
    }
}
