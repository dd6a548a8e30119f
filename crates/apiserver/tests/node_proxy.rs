//! The API server's proxy to a node's kubelet, against a fake kubelet: `pods/log` streams
//! through, and `pods/exec` is upgraded end to end with bytes copied both ways.

use std::sync::Arc;

use apiserver::auth::TokenUser;
use apiserver::server::TlsMaterial;
use apiserver::{ApiConfig, ApiServer};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-sign");
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::from_ca_cert_pem(&cert.pem(), key).expect("issuer"),
    }
}

/// (cert PEM, key PEM, cert DER, key DER)
fn issue(
    ca: &Ca,
    cn: &str,
    org: Option<&str>,
    server: bool,
) -> (
    String,
    String,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    if server {
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

/// A kubelet that requires the CA's client certificates, answers one log and echoes
/// upgraded exec streams.
async fn fake_kubelet(ca: &Ca) -> u16 {
    let (_, _, cert, key) = issue(ca, "fake-kubelet", None, true);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(kubelet_handler);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn kubelet_handler(
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/containerLogs/default/web/app" {
        return Ok(Response::new(Full::new(Bytes::from(format!(
            "hello\nquery={query}\n"
        )))));
    }
    if path == "/exec/default/web/app" && req.headers().get("upgrade").is_some() {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgrade.await {
                let mut io = TokioIo::new(io);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "skiff-echo")
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    Ok(Response::builder()
        .status(400)
        .body(Full::new(Bytes::from(format!("no such thing: {path}\n"))))
        .expect("response"))
}

/// Sends a raw HTTP/1.1 request over TLS with the admin certificate; returns the stream
/// and the response head.
async fn raw_request(
    port: u16,
    admin: &(CertificateDer<'static>, PrivateKeyDer<'static>),
    ca: &Ca,
    request: &str,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![admin.0.clone()], admin.1.clone_key())
        .expect("client config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("handshake");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tls.read(&mut byte).await.expect("read head");
        assert!(n > 0, "connection closed in the response head: {head:?}");
        head.push(byte[0]);
    }
    (tls, String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn proxies_logs_and_upgrades_to_the_kubelet() {
    let ca = ca();
    let kubelet_port = fake_kubelet(&ca).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(None, &dir.path().join("state.db"))
        .await
        .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let api = ApiServer::new(
        store,
        ApiConfig {
            advertise_address: format!("127.0.0.1:{port}"),
            service_cidr: ("10.43.0.0".parse().expect("ip"), 16),
            node_port_range: (30000, 32767),
            tokens: Vec::<TokenUser>::new(),
            git_version: "v1.37.0+test".into(),
            admission: Default::default(),
        },
    );
    let (kcert, kkey, _, _) = issue(
        &ca,
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        false,
    );
    api.kubelet
        .set(apiserver::kubelet::KubeletClient::from_pem(&kcert, &kkey).expect("kubelet client"))
        .expect("set once");
    let (_, _, scert, skey) = issue(&ca, "kube-apiserver", None, true);
    let tls = apiserver::server::tls_config(TlsMaterial {
        cert_chain: vec![scert],
        key: skey,
        client_ca: vec![ca.der.clone()],
    })
    .expect("tls");
    tokio::spawn(apiserver::server::serve(api.clone(), listener, tls));
    apiserver::bootstrap::ensure_builtin_objects(&api, port)
        .await
        .expect("bootstrap");

    let nodes = api::registry::lookup("", "v1", "nodes").expect("nodes");
    let pods = api::registry::lookup("", "v1", "pods").expect("pods");
    apiserver::handlers::create_object(
        &api,
        nodes,
        None,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        }}),
        false,
        None,
    )
    .await
    .expect("node");
    // The ServiceAccount admission plugin needs the pod's account (no controller here).
    apiserver::handlers::create_object(
        &api,
        api::registry::lookup("", "v1", "serviceaccounts").expect("serviceaccounts"),
        Some("default"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        false,
        None,
    )
    .await
    .expect("service account");
    apiserver::handlers::create_object(
        &api,
        pods,
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]}}),
        false,
        None,
    )
    .await
    .expect("pod");

    let (_, _, acert, akey) = issue(&ca, "system:admin", Some("system:masters"), false);
    let admin = (acert, akey);

    // pods/log: the kubelet's body, with only the log options passed on.
    let (mut tls, head) = raw_request(
        port,
        &admin,
        &ca,
        "GET /api/v1/namespaces/default/pods/web/log?tailLines=2&pretty=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = Vec::new();
    let _ = tls.read_to_end(&mut body).await;
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("hello\n"), "{body}");
    assert!(body.contains("query=tailLines=2\n"), "{body}");

    // pods/exec: 101 passed back, then bytes both ways through the API server.
    let (mut tls, head) = raw_request(
        port,
        &admin,
        &ca,
        "GET /api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: skiff-echo\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: skiff-echo"),
        "{head}"
    );
    tls.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&echo, b"ping");

    // Without an Upgrade header exec is refused as upstream does.
    let (_, head) = raw_request(
        port,
        &admin,
        &ca,
        "GET /api/v1/namespaces/default/pods/web/exec?command=sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
