//! Kubeconfig files: the admin's (what `--write-kubeconfig` names, what the user exports
//! as KUBECONFIG) and the ones skiff's own components use to reach the API, all with the
//! certificates embedded, as k3s writes them.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;

use crate::certs::{self, CertPaths};

pub fn write(path: &Path, server_url: &str, ca_cert: &Path, client: &CertPaths) -> Result<()> {
    let b64 = |p: &Path| -> Result<String> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let doc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_cert)?,
        cert = b64(&client.cert)?,
        key = b64(&client.key)?,
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    certs::write_private(path, &doc)
}
