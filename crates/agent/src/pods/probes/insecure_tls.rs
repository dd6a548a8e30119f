//! The TLS client side of HTTPS probes, which checks no certificate on purpose.
//!
//! kubelet probes HTTPS endpoints with Go's `InsecureSkipVerify: true`. A pod's serving
//! certificate is usually self-signed or issued by a CA the node does not know, for a name
//! that is not the address the probe dials, and a probe asks "is the process answering?",
//! not "is this the server I trust?": verifying would fail most real HTTPS probes and
//! protect nothing, since the probe sends nothing secret (only its own headers) and acts on
//! nothing but the status code. So the chain and the name are accepted unchecked. The
//! handshake signature is still checked against the certificate the server presented (Go
//! does the same when skipping verification), so the session is a sound TLS session whose
//! peer is merely unauthenticated. Nothing else in skiff may use this configuration.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// A client configuration for probes: ring, TLS 1.2 and 1.3, any server certificate, and
/// ALPN `http/1.1` only (the prober speaks HTTP/1.1; kubelet's Go transport would also
/// offer h2, which changes nothing a probe can observe).
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AcceptAnyServerCert {
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server name of a TLS connection to `host`: a DNS name is sent as SNI, an IP address
/// is not (as Go's crypto/tls, which takes the name from the URL's host, not from a `Host`
/// header). A host that is neither (e.g. with an underscore) is dialed without SNI.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
    ))
}

/// Go's wording for a failed TLS exchange. `first_bytes` are the first bytes the server
/// sent: a plain-HTTP server answering a ClientHello is told apart as Go's transport does.
pub fn describe(e: &rustls::Error, first_bytes: &[u8]) -> String {
    match e {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. }
            if first_bytes.starts_with(b"HTTP/") =>
        {
            "http: server gave HTTP response to HTTPS client".into()
        }
        rustls::Error::InvalidMessage(_) => {
            "tls: first record does not look like a TLS handshake".into()
        }
        rustls::Error::AlertReceived(alert) => {
            format!(
                "remote error: tls: {}",
                go_alert_text(&format!("{alert:?}"))
            )
        }
        other => format!("tls: {other}"),
    }
}

/// `HandshakeFailure` -> `handshake failure` (Go's alert texts are the spaced names).
fn go_alert_text(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// Accepts any certificate chain for any name; verifies handshake signatures (see the
/// module header for why).
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hosts_send_no_sni_and_names_do() {
        assert!(matches!(server_name("10.42.0.5"), ServerName::IpAddress(_)));
        assert!(matches!(server_name("::1"), ServerName::IpAddress(_)));
        assert!(matches!(
            server_name("web.default.svc"),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn tls_failures_read_like_gos() {
        let bad = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(
            describe(&bad, b"HTTP/1.0 400 Bad Request"),
            "http: server gave HTTP response to HTTPS client"
        );
        assert_eq!(
            describe(&bad, b"\x00\x01"),
            "tls: first record does not look like a TLS handshake"
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(
            describe(&alert, b""),
            "remote error: tls: handshake failure"
        );
    }
}
