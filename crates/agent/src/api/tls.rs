//! The agent API's TLS: a client certificate signed by the cluster CA is required (no
//! anonymous access, kubelet's `--anonymous-auth=false`), and the serving certificate is
//! either given or generated self-signed for the node's name and addresses at start.
//!
//! A generated certificate is enough because the API server, like upstream kube-apiserver
//! without `--kubelet-certificate-authority`, does not verify the kubelet's serving
//! certificate; the client certificate is what protects the node.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum ServingCert {
    /// PEM certificate chain and private key.
    Pem { cert: String, key: String },
    /// Generate a self-signed one for these DNS names and IP addresses.
    Generate { names: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

fn invalid(what: &'static str) -> impl FnOnce(String) -> TlsError {
    move |reason| TlsError::Invalid { what, reason }
}

/// The server configuration: client certificates required and verified against
/// `client_ca_pem`; ALPN offers HTTP/1.1 only (upgrades for exec/attach/port-forward need it).
pub fn server_config(
    client_ca_pem: &str,
    serving: &ServingCert,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in parse_certs(client_ca_pem).map_err(invalid("client CA"))? {
        roots
            .add(ca)
            .map_err(|e| invalid("client CA")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("client CA")("no certificate in the PEM".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid("client certificate verifier")(e.to_string()))?;
    let (chain, key) = match serving {
        ServingCert::Pem { cert, key } => (
            parse_certs(cert).map_err(invalid("serving certificate"))?,
            parse_key(key).map_err(invalid("serving key"))?,
        ),
        ServingCert::Generate { names } => self_signed(names)?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| invalid("serving certificate")(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A self-signed serving certificate for `names` (DNS names or IP addresses).
pub fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let key = KeyPair::generate().map_err(|e| invalid("serving key")(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| invalid("serving certificate")(e.to_string()))?;
    let cn = names.first().map(String::as_str).unwrap_or("skiff-agent");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cn}@skiff-agent"));
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| invalid("serving certificate name")(format!("{n:?}: {e}"))),
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(|e| invalid("serving certificate")(e.to_string()))?;
    Ok((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    ))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no private key in the PEM".to_string())
}

/// Who a verified client certificate names: CN and O, as the API server reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

pub fn client_identity(der: &[u8]) -> Option<ClientIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(ClientIdentity { user, groups })
}
