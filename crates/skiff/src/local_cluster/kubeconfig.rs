//! The kubeconfig a user exports for a local cluster: the server's admin kubeconfig (its
//! URL is the server host's address, reachable from the machine over the cluster's
//! bridge) with the cluster, user and context named `skiff-<name>`, as k3d names its own
//! `k3d-<name>`, so several local clusters' files can be merged by `KUBECONFIG=a:b`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_yaml::Value;

/// Renames every cluster, user and context entry of `doc` to `name` (the server writes one
/// of each).
pub fn rename(doc: &str, name: &str) -> Result<String> {
    let mut v: Value = serde_yaml::from_str(doc).context("parsing the server's kubeconfig")?;
    for list in ["clusters", "users", "contexts"] {
        if let Some(items) = v.get_mut(list).and_then(Value::as_sequence_mut) {
            for item in items {
                item["name"] = Value::from(name);
            }
        }
    }
    if let Some(items) = v.get_mut("contexts").and_then(Value::as_sequence_mut) {
        for item in items {
            item["context"]["cluster"] = Value::from(name);
            item["context"]["user"] = Value::from(name);
        }
    }
    v["current-context"] = Value::from(name);
    serde_yaml::to_string(&v).context("writing the kubeconfig")
}

/// Writes the user's kubeconfig for cluster `cluster` from the server's.
pub fn write_for_user(server_kubeconfig: &Path, cluster: &str, to: &Path) -> Result<()> {
    let doc = std::fs::read_to_string(server_kubeconfig)
        .with_context(|| format!("reading {}", server_kubeconfig.display()))?;
    let renamed = rename(&doc, &format!("skiff-{cluster}"))?;
    crate::certs::write_private(to, &renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_becomes_the_clusters() {
        let doc = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://10.251.0.10:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {}\nusers:\n- name: default\n  user:\n    client-certificate-data: Qw==\n    client-key-data: Sw==\n";
        let out = rename(doc, "skiff-dev").expect("rename");
        let v: Value = serde_yaml::from_str(&out).expect("yaml");
        assert_eq!(v["current-context"], "skiff-dev");
        assert_eq!(v["clusters"][0]["name"], "skiff-dev");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.251.0.10:6443"
        );
        assert_eq!(v["contexts"][0]["context"]["cluster"], "skiff-dev");
        assert_eq!(v["contexts"][0]["context"]["user"], "skiff-dev");
        assert_eq!(v["users"][0]["name"], "skiff-dev");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "Sw==");
    }
}
