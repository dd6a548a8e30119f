//! Turning a request path and method into what the client asked for: a discovery
//! document, an OpenAPI document, a health check, or a verb on a resource. Pure parsing,
//! no I/O, so the whole URL grammar is tested with plain tables.

use api::registry::{self, ResourceInfo, Subresource};

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Health(&'static str),
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    GroupList,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiV2,
    OpenApiV3Index,
    /// `/openapi/v3/<path>`, e.g. `apis/apps/v1`.
    OpenApiV3(String),
    Metrics,
    Resource(ResourceTarget),
}

/// A request on a resource collection, one object, or one object's subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTarget {
    pub info: &'static ResourceInfo,
    /// The namespace in the path; `None` for cluster-scoped kinds and for
    /// all-namespaces collection requests of namespaced kinds.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<SubTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubTarget {
    Known(Subresource),
    /// `namespaces/<name>/finalize`, used by the namespace controller.
    Finalize,
    /// A pod subresource served by the pod's node (proxied to its agent).
    Node(NodeSub),
    /// `nodes/<name>/proxy/<path>`: forwarded to the node's agent as `/<path>` (the path
    /// is read back from the request URI).
    NodeProxy,
}

/// Pod subresources the node's agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSub {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl NodeSub {
    fn parse(sub: &str) -> Option<NodeSub> {
        Some(match sub {
            "log" => NodeSub::Log,
            "exec" => NodeSub::Exec,
            "attach" => NodeSub::Attach,
            "portforward" => NodeSub::PortForward,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeSub::Log => "log",
            NodeSub::Exec => "exec",
            NodeSub::Attach => "attach",
            NodeSub::PortForward => "portforward",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 404 with upstream's "the server could not find the requested resource".
    NotFound,
}

/// Parse a request path (without query string).
pub fn parse(path: &str) -> Result<Target, RouteError> {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/healthz" | "/livez" | "/readyz" => {
            return Ok(Target::Health(match trimmed {
                "/healthz" => "healthz",
                "/livez" => "livez",
                _ => "readyz",
            }))
        }
        "/version" => return Ok(Target::Version),
        "/api" => return Ok(Target::CoreVersions),
        "/apis" => return Ok(Target::GroupList),
        "/openapi/v2" => return Ok(Target::OpenApiV2),
        "/openapi/v3" => return Ok(Target::OpenApiV3Index),
        "/metrics" => return Ok(Target::Metrics),
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("/openapi/v3/") {
        return Ok(Target::OpenApiV3(rest.to_string()));
    }
    // Health sub-checks such as /readyz/ping answer like the parent.
    for h in ["healthz", "livez", "readyz"] {
        if trimmed.starts_with(&format!("/{h}/")) {
            return Ok(Target::Health(match h {
                "healthz" => "healthz",
                "livez" => "livez",
                _ => "readyz",
            }));
        }
    }
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            if !group.is_empty() && registry::RESOURCES.iter().any(|r| r.group == *group) {
                return Ok(Target::Group(group.to_string()));
            }
            return Err(RouteError::NotFound);
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(RouteError::NotFound),
    };
    // Every request passes here: look in the table instead of building the group list.
    if registry::resources_in(group, version).next().is_none() {
        return Err(RouteError::NotFound);
    }
    if rest.is_empty() {
        return Ok(Target::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    resource_target(group, version, rest).map(Target::Resource)
}

fn resource_target(
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<ResourceTarget, RouteError> {
    // Namespaced form: namespaces/<ns>/<plural>[/<name>[/<sub>]]. Note that
    // `namespaces/<name>[/status|finalize]` is the Namespace resource itself.
    let namespaced_form = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            Some((Some(ns.to_string()), *plural, tail))
        }
        _ => None,
    };
    let (namespace, plural, tail) = match namespaced_form {
        Some(x) => x,
        None => (None, rest[0], &rest[1..]),
    };
    let info = registry::lookup(group, version, plural).ok_or(RouteError::NotFound)?;
    if namespace.is_some() && !info.namespaced {
        return Err(RouteError::NotFound);
    }
    let node_proxy = info.plural == "nodes" && info.group.is_empty();
    let (name, subresource) = match tail {
        [] => (None, None),
        [name, "proxy", ..] if node_proxy => (Some(name.to_string()), Some(SubTarget::NodeProxy)),
        [name] => (Some(name.to_string()), None),
        [name, sub] => {
            let core_pod = info.plural == "pods" && info.group.is_empty();
            let sub = if info.plural == "namespaces" && info.group.is_empty() && *sub == "finalize"
            {
                SubTarget::Finalize
            } else if let Some(node_sub) = NodeSub::parse(sub).filter(|_| core_pod) {
                SubTarget::Node(node_sub)
            } else {
                let known = info
                    .subresources
                    .iter()
                    .find(|s| s.name() == *sub)
                    .ok_or(RouteError::NotFound)?;
                SubTarget::Known(*known)
            };
            (Some(name.to_string()), Some(sub))
        }
        _ => return Err(RouteError::NotFound),
    };
    Ok(ResourceTarget {
        info,
        namespace,
        name,
        subresource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourceTarget {
        match parse(path) {
            Ok(Target::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let r = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.info.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource, Some(SubTarget::Known(Subresource::Status)));

        let r = res("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));

        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));

        let r = res("/api/v1/namespaces/x/finalize");
        assert_eq!(r.subresource, Some(SubTarget::Finalize));

        let r = res("/apis/apps/v1/namespaces/a/deployments/web/scale");
        assert_eq!(r.subresource, Some(SubTarget::Known(Subresource::Scale)));

        let r = res("/api/v1/nodes/n1");
        assert_eq!(r.info.plural, "nodes");
        let r = res("/api/v1/nodes/n1/proxy/stats/summary");
        assert_eq!(r.name.as_deref(), Some("n1"));
        assert_eq!(r.subresource, Some(SubTarget::NodeProxy));
        assert_eq!(
            parse("/api/v1/namespaces/a/pods/web/proxy/x"),
            Err(RouteError::NotFound)
        );

        let r = res("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(r.subresource, Some(SubTarget::Node(NodeSub::Log)));
        let r = res("/api/v1/namespaces/default/pods/web/exec");
        assert_eq!(r.subresource, Some(SubTarget::Node(NodeSub::Exec)));
        assert_eq!(
            parse("/apis/apps/v1/namespaces/a/deployments/web/log"),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn rejects_unknown_paths() {
        for p in [
            "/api/v2/pods",
            "/apis/nope/v1/things",
            "/apis/apps/v1/widgets",
            "/api/v1/namespaces/a/nodes/n1",
            "/api/v1/namespaces/a/pods/web/logs/extra",
            "/api/v1/namespaces/a/configmaps/x/status",
            "/foo",
        ] {
            assert_eq!(parse(p), Err(RouteError::NotFound), "{p}");
        }
    }

    #[test]
    fn parses_discovery() {
        assert_eq!(parse("/api"), Ok(Target::CoreVersions));
        assert_eq!(parse("/apis/"), Ok(Target::GroupList));
        assert_eq!(parse("/apis/apps"), Ok(Target::Group("apps".into())));
        assert_eq!(
            parse("/apis/apps/v1"),
            Ok(Target::ResourceList {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1"),
            Ok(Target::OpenApiV3("apis/apps/v1".into()))
        );
        assert_eq!(parse("/readyz"), Ok(Target::Health("readyz")));
    }
}
