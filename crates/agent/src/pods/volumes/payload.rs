//! The files of configMap, secret, downwardAPI and projected volumes, from the objects they
//! name (pure: the objects are fetched by the caller). Upstream: `configmap.MakePayload`,
//! `secret.MakePayload`, `downwardapi.CollectData` and the projected volume's `collectData`.

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret,
};

use super::atomic_writer::{clean, FileProjection, Payload};
use crate::pods::downward::{object_field_value, resource_selector_value, Allocatable};

/// Upstream's default `defaultMode` of these volumes.
pub const DEFAULT_MODE: i32 = 0o644;

/// The files of a configMap volume (or projected source). `None` is an optional ConfigMap
/// that does not exist (no files).
pub fn config_map(
    items: Option<&[KeyToPath]>,
    cm: Option<&ConfigMap>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let Some(cm) = cm else {
        return Ok(Payload::new());
    };
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    let lookup = |key: &str| -> Option<Vec<u8>> {
        data.get(key)
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| binary.get(key).map(|b| b.0.clone()))
    };
    let all: Vec<String> = data.keys().chain(binary.keys()).cloned().collect();
    project(items, &all, lookup, default_mode, optional, |key| {
        format!("configmap references non-existent config key: {key}")
    })
}

/// The files of a secret volume (or projected source); `None` as for [`config_map`].
pub fn secret(
    items: Option<&[KeyToPath]>,
    secret: Option<&Secret>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let Some(secret) = secret else {
        return Ok(Payload::new());
    };
    let data = secret.data.clone().unwrap_or_default();
    let lookup = |key: &str| data.get(key).map(|b| b.0.clone());
    let all: Vec<String> = data.keys().cloned().collect();
    project(items, &all, lookup, default_mode, optional, |key| {
        format!("references non-existent secret key: {key}")
    })
}

fn project(
    items: Option<&[KeyToPath]>,
    all_keys: &[String],
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(&str) -> String,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let items = items.filter(|i| !i.is_empty());
    let Some(items) = items else {
        for key in all_keys {
            if let Some(data) = lookup(key) {
                payload.insert(key.clone(), file(data, default_mode));
            }
        }
        return Ok(payload);
    };
    for item in items {
        let Some(data) = lookup(&item.key) else {
            if optional {
                continue;
            }
            return Err(missing(&item.key));
        };
        payload.insert(
            clean(&item.path),
            file(data, item.mode.unwrap_or(default_mode)),
        );
    }
    Ok(payload)
}

fn file(data: Vec<u8>, mode: i32) -> FileProjection {
    FileProjection {
        data,
        mode: mode as u32,
    }
}

/// The files of a downwardAPI volume (or projected source): every item is tried and the
/// errors are aggregated as upstream's `utilerrors.NewAggregate` prints them.
pub fn downward_api(
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: i32,
    allocatable: &Allocatable,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    let fallback = Container::default();
    let first = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .unwrap_or(&fallback);
    for item in items.into_iter().flatten() {
        let value = if let Some(f) = &item.field_ref {
            object_field_value(pod, &f.field_path)
        } else if let Some(r) = &item.resource_field_ref {
            resource_selector_value(pod, first, r, allocatable)
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                payload.insert(
                    clean(&item.path),
                    file(v.into_bytes(), item.mode.unwrap_or(default_mode)),
                );
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    match errors.len() {
        0 => Ok(payload),
        _ => Err(aggregate(&errors)),
    }
}

/// Upstream `utilerrors.NewAggregate(...).Error()`: one error as is, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm() -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "cfg"},
            "data": {"a": "alpha", "b": "beta"},
            "binaryData": {"bin": "AAE="}
        }))
        .unwrap()
    }

    fn items(v: serde_json::Value) -> Vec<KeyToPath> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn all_keys_with_the_default_mode() {
        let p = config_map(None, Some(&cm()), 0o600, false).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["a", "b", "bin"]);
        assert_eq!(p["a"].data, b"alpha");
        assert_eq!(p["bin"].data, [0u8, 1]);
        assert!(p.values().all(|f| f.mode == 0o600));
    }

    #[test]
    fn items_map_keys_to_paths_and_modes() {
        let it = items(
            json!([{"key": "a", "path": "dir//x"}, {"key": "b", "path": "y", "mode": 0o400}]),
        );
        let p = config_map(Some(&it), Some(&cm()), DEFAULT_MODE, false).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["dir/x", "y"]);
        assert_eq!(p["dir/x"].mode, 0o644);
        assert_eq!(p["y"].mode, 0o400);
        assert_eq!(p["y"].data, b"beta");
    }

    #[test]
    fn missing_keys_fail_unless_optional() {
        let it = items(json!([{"key": "nope", "path": "x"}]));
        assert_eq!(
            config_map(Some(&it), Some(&cm()), DEFAULT_MODE, false).unwrap_err(),
            "configmap references non-existent config key: nope"
        );
        assert!(config_map(Some(&it), Some(&cm()), DEFAULT_MODE, true)
            .unwrap()
            .is_empty());
        assert!(config_map(None, None, DEFAULT_MODE, true)
            .unwrap()
            .is_empty());
        let s: Secret = serde_json::from_value(json!({"data": {"k": "dg=="}})).unwrap();
        assert_eq!(
            secret(Some(&it), Some(&s), DEFAULT_MODE, false).unwrap_err(),
            "references non-existent secret key: nope"
        );
        assert_eq!(
            secret(None, Some(&s), DEFAULT_MODE, false).unwrap()["k"].data,
            b"v"
        );
    }

    #[test]
    fn downward_items_read_the_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"b": "2", "a": "1"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .unwrap();
        let it: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 0o400},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
        ]))
        .unwrap();
        let p = downward_api(&pod, Some(&it), DEFAULT_MODE, &Allocatable::default()).unwrap();
        assert_eq!(p["labels"].data, b"a=\"1\"\nb=\"2\"");
        assert_eq!(p["name"].data, b"p");
        assert_eq!(p["name"].mode, 0o400);
        assert_eq!(p["mem"].data, b"64");
        let bad: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
            {"path": "x", "fieldRef": {"fieldPath": "spec.nodeName"}}
        ]))
        .unwrap();
        assert_eq!(
            downward_api(&pod, Some(&bad), DEFAULT_MODE, &Allocatable::default()).unwrap_err(),
            "unsupported fieldPath: spec.nodeName"
        );
    }
}
