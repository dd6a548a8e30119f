//! Discovery documents, derived from the resource registry: the legacy `/api`, `/apis`,
//! `/apis/<group>`, `/api/v1` and `/apis/<group>/<version>` lists, and the aggregated
//! `apidiscovery.k8s.io/v2` form that kubectl asks for first.

use serde_json::{json, Value};

use api::registry::{self, ResourceInfo, RESOURCE_VERBS};

/// The media type of aggregated discovery; kubectl only uses the aggregated answer when
/// the response carries exactly this content type.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("g=apidiscovery.k8s.io")
            && p.contains("v=v2")
            && !p.contains("v=v2beta1")
            && p.contains("as=APIGroupDiscoveryList")
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": {"groupVersion": format!("{}/{}", name, versions[0]), "version": versions[0]},
    })
}

pub fn group_list() -> Value {
    let groups: Vec<Value> = registry::groups()
        .iter()
        .filter(|g| !g.name.is_empty())
        .map(|g| group_json(g.name, &g.versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(name: &str) -> Option<Value> {
    let g = registry::groups()
        .into_iter()
        .find(|g| g.name == name && !name.is_empty())?;
    let mut v = group_json(g.name, &g.versions);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

fn verbs_json(verbs: &[&str]) -> Value {
    Value::Array(verbs.iter().map(|v| json!(v)).collect())
}

/// The legacy `APIResourceList` of one group/version.
pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in registry::resources_in(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs_json(RESOURCE_VERBS),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in subresources_of(r) {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": verbs_json(sub.verbs),
            });
            if !sub.group.is_empty() || sub.version != r.version {
                e["group"] = json!(sub.group);
                e["version"] = json!(sub.version);
            }
            resources.push(e);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

struct SubInfo {
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
}

fn subresources_of(r: &ResourceInfo) -> Vec<SubInfo> {
    let mut out: Vec<SubInfo> = r
        .subresources
        .iter()
        .map(|s| {
            let (group, version, kind) = s.kind(r);
            SubInfo {
                name: s.name(),
                group,
                version,
                kind,
                verbs: s.verbs(),
            }
        })
        .collect();
    if r.group.is_empty() && r.plural == "namespaces" {
        out.push(SubInfo {
            name: "finalize",
            group: "",
            version: "v1",
            kind: "Namespace",
            verbs: &["update"],
        });
    }
    out
}

/// The aggregated discovery document: the core group for `/api` (`core == true`),
/// every other group for `/apis`.
pub fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    for g in registry::groups() {
        if g.name.is_empty() != core {
            continue;
        }
        let versions: Vec<Value> = g
            .versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = registry::resources_in(g.name, v)
                    .map(|r| {
                        let subs: Vec<Value> = subresources_of(r)
                            .iter()
                            .map(|s| {
                                json!({
                                    "subresource": s.name,
                                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                                    "verbs": verbs_json(s.verbs),
                                })
                            })
                            .collect();
                        let mut e = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": verbs_json(RESOURCE_VERBS),
                        });
                        if !r.short_names.is_empty() {
                            e["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            e["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            e["subresources"] = Value::Array(subs);
                        }
                        e
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(
            json!({"metadata": {"name": g.name, "creationTimestamp": null}, "versions": versions}),
        );
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_accept_header_selects_v2() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
    }

    #[test]
    fn aggregated_lists_subresources() {
        let doc = aggregated(false);
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert!(deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale"));
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn legacy_list_has_pods_status() {
        let l = resource_list("", "v1");
        assert!(l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/status"));
        assert_eq!(l["groupVersion"], "v1");
    }
}
