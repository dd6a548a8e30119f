//! Certificates for the HTTPS listener, chosen by SNI: each Ingress's `spec.tls[]` hosts
//! get the `kubernetes.io/tls` Secret it names (in the Ingress's namespace); a host whose
//! Secret is missing or invalid, and a client naming no known host, get the self-signed
//! default certificate (ingress-nginx's "fake certificate").

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The Secret type a TLS Secret must have.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Host → certificate, swapped whole on every change.
#[derive(Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` hosts, keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertTable {
    /// The certificates of the served `ingresses`, and one line per host left on the default
    /// certificate (why).
    pub fn build(
        ingresses: &[Arc<Ingress>],
        secrets: &[Arc<Secret>],
    ) -> (CertTable, BTreeSet<String>) {
        let mut table = CertTable::default();
        let mut problems = BTreeSet::new();
        let mut loaded: HashMap<(String, String), Result<Arc<CertifiedKey>, String>> =
            HashMap::new();
        for ingress in ingresses {
            let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
            let Some(spec) = &ingress.spec else { continue };
            for tls in spec.tls.as_deref().unwrap_or_default() {
                let Some(secret_name) = &tls.secret_name else {
                    continue;
                };
                let key = (namespace.clone(), secret_name.clone());
                let cert = loaded
                    .entry(key)
                    .or_insert_with(|| {
                        let secret = secrets.iter().find(|s| {
                            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                                && s.metadata.name.as_deref() == Some(secret_name.as_str())
                        });
                        match secret {
                            None => Err(format!("Secret {namespace}/{secret_name} not found")),
                            Some(s) => certified_key(s)
                                .map_err(|e| format!("Secret {namespace}/{secret_name}: {e:#}")),
                        }
                    })
                    .clone();
                for host in tls.hosts.as_deref().unwrap_or_default() {
                    let host = host.to_ascii_lowercase();
                    match &cert {
                        Ok(cert) => {
                            let slot = match host.strip_prefix("*.") {
                                Some(suffix) => table.wildcard.entry(suffix.to_string()),
                                None => table.exact.entry(host),
                            };
                            slot.or_insert_with(|| cert.clone());
                        }
                        Err(why) => {
                            problems.insert(format!(
                                "host {host:?} uses the default certificate: {why}"
                            ));
                        }
                    }
                }
            }
        }
        (table, problems)
    }

    fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        self.exact.get(&name).cloned().or_else(|| {
            name.split_once('.')
                .and_then(|(_, rest)| self.wildcard.get(rest).cloned())
        })
    }
}

/// The key and chain of a `kubernetes.io/tls` Secret.
fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>> {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_SECRET_TYPE {
        bail!("type is {kind}, not {TLS_SECRET_TYPE}");
    }
    let data = secret.data.as_ref().ok_or_else(|| anyhow!("no data"))?;
    let field = |name: &str| {
        data.get(name)
            .map(|b| b.0.clone())
            .ok_or_else(|| anyhow!("no {name}"))
    };
    certified_key_from_pem(&field("tls.crt")?, &field("tls.key")?)
}

fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .context("tls.crt is not PEM")?;
    if chain.is_empty() {
        bail!("tls.crt holds no certificate");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("tls.key is not PEM")?
        .ok_or_else(|| anyhow!("tls.key holds no private key"))?;
    let signing = any_supported_type(&key).context("tls.key is not a supported key")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("tls.key does not belong to tls.crt")?;
    Ok(Arc::new(certified))
}

/// The self-signed default certificate, made once per process.
pub fn default_certificate() -> Result<Arc<CertifiedKey>> {
    let key = rcgen::KeyPair::generate().context("generating the default certificate key")?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
        .context("default certificate parameters")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Skiff Ingress Controller Fake Certificate",
    );
    let cert = params
        .self_signed(&key)
        .context("signing the default certificate")?;
    certified_key_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// The listener's certificate resolver: reads the current table on every handshake.
#[derive(Debug)]
pub struct Resolver {
    pub table: RwLock<Arc<CertTable>>,
    pub fallback: Arc<CertifiedKey>,
}

impl std::fmt::Debug for CertTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertTable")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &self.wildcard.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        hello
            .server_name()
            .and_then(|name| table.lookup(name))
            .or_else(|| Some(self.fallback.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(name: &str, cert: &str, key: &str) -> Arc<Secret> {
        let mut s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"}, "type": TLS_SECRET_TYPE}))
        .unwrap();
        s.data = Some(
            [
                ("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec())),
                ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
            ]
            .into(),
        );
        Arc::new(s)
    }

    #[test]
    fn hosts_get_their_secret_or_the_default() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let secrets = vec![
            secret("good", &cert.pem(), &key.serialize_pem()),
            secret("bad", "not pem", "nor this"),
        ];
        let ingress: Arc<Ingress> = Arc::new(
            serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"tls": [
                {"hosts": ["a.example.com", "*.w.example.com"], "secretName": "good"},
                {"hosts": ["b.example.com"], "secretName": "bad"},
                {"hosts": ["c.example.com"], "secretName": "missing"},
            ]}}))
            .unwrap(),
        );
        let (table, problems) = CertTable::build(&[ingress], &secrets);
        assert!(table.lookup("A.example.com").is_some());
        assert!(table.lookup("x.w.example.com").is_some());
        assert!(table.lookup("b.example.com").is_none());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(default_certificate().is_ok());
    }
}
