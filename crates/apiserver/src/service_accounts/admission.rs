//! Upstream's ServiceAccount admission plugin, for new Pods: the pod's ServiceAccount
//! (`default` unless named; defaulting already filled the name) must exist, else 403
//! "error looking up service account"; the account's imagePullSecrets are copied to a
//! pod that has none; and unless `automountServiceAccountToken` is false (pod first, then
//! account), every container and init container mounts the projected volume
//! `kube-api-access-<5 chars>` (token, `ca.crt`, `namespace`) read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount`. [`mutate`] is the pure part.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use api::registry;

use crate::errors::{ApiError, ApiResult};
use crate::objects;
use crate::ApiServer;

/// Where the token, CA and namespace appear in containers.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected volume's name prefix.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The annotation that marks a mirror pod (static pods; left alone, as upstream).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Lookups of a missing `default` account: the ServiceAccount controller creates it in a
/// new namespace moments after the namespace, so upstream retries before refusing.
const DEFAULT_LOOKUP_ATTEMPTS: usize = 10;
const LOOKUP_RETRY: Duration = Duration::from_millis(200);

/// The projected volume source upstream's plugin adds (`TokenVolumeSource`), defaulted.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Whether the token is mounted: the pod's setting wins, then the account's, else yes.
fn automount(pod: &Value, sa: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// Applies the plugin's changes to a pod, given its ServiceAccount. `suffix` names a new
/// volume (`kube-api-access-<suffix>`); a taken name gets `fresh_suffix()` until free.
pub fn mutate(pod: &mut Value, sa: &Value, suffix: &str, fresh_suffix: &mut dyn FnMut() -> String) {
    let pull = &pod["spec"]["imagePullSecrets"];
    let no_pull_secrets = pull.as_array().is_none_or(Vec::is_empty);
    if no_pull_secrets {
        if let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|s| !s.is_empty()) {
            let refs: Vec<Value> = secrets
                .iter()
                .map(|s| json!({"name": s["name"].as_str().unwrap_or("")}))
                .collect();
            pod["spec"]["imagePullSecrets"] = Value::Array(refs);
        }
    }
    if !automount(pod, sa) {
        return;
    }
    let spec = &mut pod["spec"];
    let names: HashSet<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    let existing = names.iter().find(|n| n.starts_with(VOLUME_PREFIX)).cloned();
    let volume_name = existing.clone().unwrap_or_else(|| {
        let mut name = format!("{VOLUME_PREFIX}{suffix}");
        while names.contains(&name) {
            name = format!("{VOLUME_PREFIX}{}", fresh_suffix());
        }
        name
    });
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            let mounted = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == MOUNT_PATH);
            if mounted {
                continue;
            }
            match c["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needs_volume = true;
        }
    }
    if existing.is_none() && needs_volume {
        let volume = token_volume(&volume_name);
        match spec["volumes"].as_array_mut() {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
}

/// The plugin on a Pod being created in `namespace`.
pub async fn admit_pod(server: &ApiServer, namespace: &str, pod: &mut Value) -> ApiResult<()> {
    if !pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return Ok(());
    }
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let sa = lookup(server, namespace, &sa_name).await?.ok_or_else(|| {
        let name = objects::name_of(pod).to_string();
        ApiError::forbidden(format!(
            "pods {name:?} is forbidden: error looking up service account {namespace}/{sa_name}: serviceaccount {sa_name:?} not found"
        ))
        .with_details(json!({"name": name, "kind": "pods"}))
    })?;
    mutate(
        pod,
        &sa,
        &objects::random_suffix(),
        &mut objects::random_suffix,
    );
    Ok(())
}

async fn lookup(server: &ApiServer, namespace: &str, name: &str) -> ApiResult<Option<Value>> {
    let info = registry::lookup("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::internal("serviceaccounts are not registered"))?;
    let key = info.key(Some(namespace), name);
    let attempts = if name == "default" {
        DEFAULT_LOOKUP_ATTEMPTS
    } else {
        1
    };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(LOOKUP_RETRY).await;
        }
        let kv = server.store.get(&key).await.map_err(|e| {
            ApiError::internal(format!(
                "error looking up service account {namespace}/{name}: {e}"
            ))
        })?;
        if let Some(kv) = kv {
            return objects::decode(info, &kv).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    fn run(mut p: Value, sa: Value) -> Value {
        let mut n = 0;
        mutate(&mut p, &sa, "abcde", &mut || {
            n += 1;
            format!("fresh{n}")
        });
        p
    }

    #[test]
    fn mounts_the_token_volume_everywhere() {
        let got = run(
            pod(json!({
                "initContainers": [{"name": "i"}],
                "containers": [{"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}, {"name": "b"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            })),
            json!({}),
        );
        let mount =
            json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT_PATH});
        assert_eq!(
            got["spec"]["initContainers"][0]["volumeMounts"],
            json!([mount])
        );
        assert_eq!(got["spec"]["containers"][0]["volumeMounts"][1], mount);
        assert_eq!(got["spec"]["containers"][1]["volumeMounts"], json!([mount]));
        assert_eq!(
            got["spec"]["volumes"],
            json!([{"name": "data", "emptyDir": {}}, token_volume("kube-api-access-abcde")])
        );
        let sources = &got["spec"]["volumes"][1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
    }

    #[test]
    fn automount_and_existing_mounts() {
        let containers = json!({"containers": [{"name": "a"}]});
        let cases: Vec<(&str, Value, Value, bool)> = vec![
            ("default", containers.clone(), json!({}), true),
            (
                "pod says no",
                json!({"automountServiceAccountToken": false, "containers": [{"name": "a"}]}),
                json!({"automountServiceAccountToken": true}),
                false,
            ),
            (
                "account says no",
                containers.clone(),
                json!({"automountServiceAccountToken": false}),
                false,
            ),
            (
                "pod overrides account",
                json!({"automountServiceAccountToken": true, "containers": [{"name": "a"}]}),
                json!({"automountServiceAccountToken": false}),
                true,
            ),
            (
                "own mount at the path",
                json!({"containers": [{"name": "a", "volumeMounts": [{"name": "x", "mountPath": MOUNT_PATH}]}],
                       "volumes": [{"name": "x", "emptyDir": {}}]}),
                json!({}),
                false,
            ),
        ];
        for (name, spec, sa, want) in cases {
            let got = run(pod(spec), sa);
            let has = got["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"].as_str().unwrap_or("").starts_with(VOLUME_PREFIX));
            assert_eq!(has, want, "{name}: {got}");
        }
    }

    #[test]
    fn taken_names_and_pull_secrets() {
        let got = run(
            pod(
                json!({"containers": [{"name": "a"}], "volumes": [{"name": "kube-api-access-abcde-x"}, {"name": "other"}]}),
            ),
            json!({}),
        );
        // An existing kube-api-access-* volume is reused, not duplicated.
        assert_eq!(got["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(
            got["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde-x"
        );

        let got = run(
            pod(json!({"containers": [{"name": "a"}], "volumes": [{"name": "kubeapi"}]})),
            json!({"imagePullSecrets": [{"name": "reg"}]}),
        );
        assert_eq!(got["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        let got = run(
            pod(json!({"containers": [{"name": "a"}], "imagePullSecrets": [{"name": "mine"}]})),
            json!({"imagePullSecrets": [{"name": "reg"}]}),
        );
        assert_eq!(got["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }
}
