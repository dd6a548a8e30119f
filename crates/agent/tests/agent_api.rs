//! The agent API over real TLS: client certificates required, container logs served from a
//! log tree written here (current, previous, tail, timestamps, follow).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::api::{AgentApi, ApiConfig, ServingCert, APISERVER_CLIENT_USER};
use agent::pods::layout::Layout;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-sign");
    let pem = cert.pem();
    Ca {
        issuer: Issuer::from_ca_cert_pem(&pem, key).expect("issuer"),
        pem,
    }
}

/// A client certificate and key (DER) signed by `ca`.
fn client_cert(
    ca: &Ca,
    cn: &str,
    org: Option<&str>,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    match cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    }
}

/// GET `path`; Err when the connection or TLS handshake fails.
async fn get(
    addr: std::net::SocketAddr,
    tls: &rustls::ClientConfig,
    path: &str,
) -> Result<hyper::Response<Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls.clone()))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

async fn text(addr: std::net::SocketAddr, tls: &rustls::ClientConfig, path: &str) -> (u16, String) {
    let resp = get(addr, tls, path).await.expect(path);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The next chunk of a streamed body; None at its end.
async fn next_chunk(body: &mut Incoming) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
        Ok(Some(Ok(f))) => {
            Some(String::from_utf8_lossy(&f.into_data().unwrap_or_default()).into_owned())
        }
        Ok(_) => None,
        Err(_) => panic!("no data from the followed log within 5s"),
    }
}

fn write_log(path: &Path, lines: &[&str]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
}

#[tokio::test]
async fn serves_container_logs_to_the_api_server_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let app0 = layout.container_log("default", "web", "uid-1", "app", 0);
    let app1 = layout.container_log("default", "web", "uid-1", "app", 1);
    let side0 = layout.container_log("default", "web", "uid-1", "side", 0);
    write_log(&app0, &["2026-01-01T00:00:00.1Z stdout F first run"]);
    write_log(
        &app1,
        &[
            "2026-01-01T00:00:01Z stdout F one",
            "2026-01-01T00:00:02Z stderr P tw",
            "2026-01-01T00:00:02.5Z stderr F o",
            "2026-01-01T00:00:03Z stdout F three",
        ],
    );
    write_log(&side0, &["2026-01-01T00:00:01Z stdout F side"]);

    let cluster = ca("cluster-ca");
    let api = AgentApi::bind(ApiConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        client_ca_pem: cluster.pem.clone(),
        serving: ServingCert::Generate {
            names: vec!["node-1".into(), "127.0.0.1".into()],
        },
        layout: layout.clone(),
    })
    .await
    .expect("bind");
    let addr = api.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api.run(async {
        let _ = stopped.await;
    }));

    // No client certificate, or one from another CA: the handshake is refused.
    assert!(get(addr, &client_config(None), "/healthz").await.is_err());
    let other = ca("other-ca");
    let stranger = client_config(Some(client_cert(&other, APISERVER_CLIENT_USER, None)));
    assert!(get(addr, &stranger, "/healthz").await.is_err());

    // A node's certificate is genuine but not allowed to read pods.
    let node = client_config(Some(client_cert(
        &cluster,
        "system:node:n2",
        Some("system:nodes"),
    )));
    let (code, body) = text(addr, &node, "/containerLogs/default/web/app").await;
    assert_eq!(code, 403, "{body}");

    let apiserver = client_config(Some(client_cert(&cluster, APISERVER_CLIENT_USER, None)));
    assert_eq!(text(addr, &apiserver, "/healthz").await, (200, "ok".into()));
    assert_eq!(
        text(addr, &apiserver, "/containerLogs/default/web/app").await,
        (200, "one\ntwo\nthree\n".into())
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/app?tailLines=1"
        )
        .await,
        (200, "three\n".into())
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/app?previous=true"
        )
        .await,
        (200, "first run\n".into())
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/app?timestamps=true&limitBytes=35"
        )
        .await,
        (200, "2026-01-01T00:00:01.000000000Z one\n".into())
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/app?sinceTime=2026-01-01T00:00:02.5Z"
        )
        .await,
        (200, "o\nthree\n".into())
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/side?previous=true"
        )
        .await,
        (
            400,
            "previous terminated container \"side\" in pod \"web\" not found".into()
        )
    );
    assert_eq!(
        text(addr, &apiserver, "/containerLogs/default/nope/app")
            .await
            .0,
        404
    );
    assert_eq!(
        text(
            addr,
            &apiserver,
            "/containerLogs/default/web/app?tailLines=x"
        )
        .await
        .0,
        400
    );

    // follow: appended lines stream out; a newer attempt ends the stream.
    let resp = get(
        addr,
        &apiserver,
        "/containerLogs/default/web/side?follow=true",
    )
    .await
    .expect("follow");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("side\n") {
        seen.push_str(&next_chunk(&mut body).await.expect("first chunk"));
    }
    write_log(&side0, &["2026-01-01T00:00:04Z stdout F appended"]);
    while !seen.contains("appended\n") {
        seen.push_str(&next_chunk(&mut body).await.expect("appended chunk"));
    }
    assert_eq!(seen, "side\nappended\n");
    write_log(&side0, &["2026-01-01T00:00:05Z stdout F last words"]);
    write_log(
        &layout.container_log("default", "web", "uid-1", "side", 1),
        &["2026-01-01T00:00:06Z stdout F restarted"],
    );
    while let Some(chunk) = next_chunk(&mut body).await {
        seen.push_str(&chunk);
    }
    assert_eq!(seen, "side\nappended\nlast words\n");

    let _ = stop.send(());
    server.await.expect("join").expect("serve");
}
