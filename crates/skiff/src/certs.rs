//! The cluster's certificates: a CA generated at first start, a serving certificate for
//! the API server and client certificates for the admin and for skiff's own components,
//! all kept under `<data-dir>/server/tls` and reused on later starts.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Paths of one certificate and its key.
#[derive(Clone, Debug)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the server needs from its TLS directory.
pub struct ClusterCerts {
    pub ca: CertPaths,
    pub serving: CertPaths,
    pub admin: CertPaths,
    pub controller: CertPaths,
    /// The API server's client certificate for agents (kubelets): `kubectl logs`, exec,
    /// attach and port-forward are proxied with it.
    pub kubelet_client: CertPaths,
}

fn paths(dir: &Path, name: &str) -> CertPaths {
    CertPaths {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    }
}

/// Load or create the CA and the certificates signed by it. The serving certificate is
/// re-issued when the names it must cover change (a new `--bind-address`, say).
pub fn ensure(tls_dir: &Path, serving_names: &[String]) -> Result<ClusterCerts> {
    fs::create_dir_all(tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    let ca = paths(tls_dir, "server-ca");
    if !ca.cert.exists() || !ca.key.exists() {
        let key = KeyPair::generate().context("generating CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn("skiff-server-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key).context("self-signing CA")?;
        write_private(&ca.key, &key.serialize_pem())?;
        fs::write(&ca.cert, cert.pem())
            .with_context(|| format!("writing {}", ca.cert.display()))?;
    }
    let ca_key_pem =
        fs::read_to_string(&ca.key).with_context(|| format!("reading {}", ca.key.display()))?;
    let ca_cert_pem =
        fs::read_to_string(&ca.cert).with_context(|| format!("reading {}", ca.cert.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing CA key")?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).context("parsing CA certificate")?;

    let serving = paths(tls_dir, "serving-kube-apiserver");
    let names_file = tls_dir.join("serving-kube-apiserver.names");
    let wanted = serving_names.join(",");
    let current = fs::read_to_string(&names_file).unwrap_or_default();
    if !serving.cert.exists() || current != wanted {
        issue(
            &issuer,
            &serving,
            "kube-apiserver",
            None,
            serving_names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        fs::write(&names_file, &wanted)?;
    }
    let admin = paths(tls_dir, "client-admin");
    if !admin.cert.exists() {
        issue(
            &issuer,
            &admin,
            "system:admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    let controller = paths(tls_dir, "client-controller");
    if !controller.cert.exists() {
        issue(
            &issuer,
            &controller,
            "system:kube-controller-manager",
            None,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    let kubelet_client = paths(tls_dir, "client-kube-apiserver-kubelet");
    if !kubelet_client.cert.exists() {
        issue(
            &issuer,
            &kubelet_client,
            agent::api::APISERVER_CLIENT_USER,
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    Ok(ClusterCerts {
        ca,
        serving,
        admin,
        controller,
        kubelet_client,
    })
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    out: &CertPaths,
    cn: &str,
    org: Option<&str>,
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<()> {
    let key = KeyPair::generate().with_context(|| format!("generating key for {cn}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(cn, org);
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("subject names for {cn}"))?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing certificate for {cn}"))?;
    write_private(&out.key, &key.serialize_pem())?;
    fs::write(&out.cert, cert.pem()).with_context(|| format!("writing {}", out.cert.display()))?;
    Ok(())
}

/// The API server's client for agents, from its kubelet client certificate.
pub fn kubelet_client(certs: &ClusterCerts) -> Result<apiserver::kubelet::KubeletClient> {
    let paths = &certs.kubelet_client;
    let cert = fs::read_to_string(&paths.cert)
        .with_context(|| format!("reading {}", paths.cert.display()))?;
    let key = fs::read_to_string(&paths.key)
        .with_context(|| format!("reading {}", paths.key.display()))?;
    apiserver::kubelet::KubeletClient::from_pem(&cert, &key).map_err(|e| anyhow::anyhow!(e))
}

/// Write a secret readable by its owner only.
/// The service-account signing key (`<tls-dir>/service.key`, as k3s keeps it): an ECDSA
/// P-256 key in PKCS#8 PEM, made at first start and kept, so tokens survive restarts.
/// Returns the key as PKCS#8 DER.
pub fn ensure_service_account_key(tls_dir: &Path) -> Result<Vec<u8>> {
    let path = tls_dir.join("service.key");
    if !path.exists() {
        let key = KeyPair::generate().context("generating the service-account key")?;
        write_private(&path, &key.serialize_pem())?;
    }
    let pem = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let key = KeyPair::from_pem(&pem)
        .with_context(|| format!("parsing the service-account key {}", path.display()))?;
    Ok(key.serialize_der())
}

pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Read PEM certificates and a private key for rustls.
pub fn load_rustls(
    cert: &Path,
    key: &Path,
) -> Result<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("parsing {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("parsing {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    Ok((certs, key))
}

/// Signs node client certificates (`system:node:<name>`, `system:nodes`) with the cluster
/// CA for the join endpoint; the subject the request asked for is never trusted.
pub struct NodeSigner {
    issuer: Issuer<'static, KeyPair>,
}

/// How long a node certificate lasts (upstream kubelet client certificates: one year).
const NODE_CERT_DAYS: i64 = 365;

impl NodeSigner {
    pub fn load(ca: &CertPaths) -> Result<NodeSigner> {
        let key_pem =
            fs::read_to_string(&ca.key).with_context(|| format!("reading {}", ca.key.display()))?;
        let cert_pem = fs::read_to_string(&ca.cert)
            .with_context(|| format!("reading {}", ca.cert.display()))?;
        let key = KeyPair::from_pem(&key_pem).context("parsing CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).context("parsing CA certificate")?;
        Ok(NodeSigner { issuer })
    }
}

impl apiserver::join::NodeCertificateSigner for NodeSigner {
    fn sign(&self, node_name: &str, csr_pem: &str) -> Result<String, String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("not a PEM certificate request: {e}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name = dn(&format!("system:node:{node_name}"), Some("system:nodes"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(NODE_CERT_DAYS);
        csr.params = params;
        csr.signed_by(&self.issuer)
            .map(|c| c.pem())
            .map_err(|e| format!("signing: {e}"))
    }
}
