//! The built-in ingress controller, driven with the real kubectl and curl from the host:
//! two Deployments (`api`, `web`: busybox httpd pages saying which they are) behind
//! Services, Ingresses routing by path and by host, a route to a missing Service (503
//! while the others work), HTTPS with a `kubernetes.io/tls` Secret chosen by SNI, the
//! `X-Forwarded-*` headers a backend sees (a busybox httpd CGI printing its environment),
//! and the ADDRESS column. The server listens for ingress traffic on free ports (parallel
//! test servers share this machine's network namespace). Needs root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::node::{curl, import_test_image, wait_for, wait_node_ready, TEST_IMAGE as IMAGE};
use testkit::{ServerOptions, TestServer};

/// A server with its node, serving ingress HTTP and HTTPS on the returned ports.
fn server() -> (TestServer, u16, u16) {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let http = testkit::free_port().expect("a free port");
    let https = testkit::free_port().expect("a free port");
    let s = TestServer::start(
        ServerOptions::new(bin)
            .with_agent()
            .arg(&format!("--ingress-http-port={http}"))
            .arg(&format!("--ingress-https-port={https}")),
    )
    .expect("start skiff server with its agent");
    import_test_image(bin, &s.data_dir(), IMAGE);
    wait_node_ready(&s);
    (s, http, https)
}

/// A Deployment of busybox httpd whose every page (`/`, `/<name>/`) says `this is <name>`,
/// with a CGI `/cgi-bin/env` printing the request's environment, and its Service (port 80
/// named `http` → 8080).
fn app(name: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        command:
        - sh
        - -c
        - |
          mkdir -p /www/{name} /www/cgi-bin
          echo this is {name} > /www/index.html
          cp /www/index.html /www/{name}/index.html
          hostname > /www/{name}/who
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\nenv\n' > /www/cgi-bin/env
          chmod +x /www/cgi-bin/env
          exec httpd -f -p 8080 -h /www
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"#
    )
}

const INGRESSES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: by-path}
spec:
  rules:
  - http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /web, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /cgi-bin, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /gone, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: by-host}
spec:
  ingressClassName: skiff
  tls:
  - {hosts: [secure.example.com], secretName: secure-tls}
  rules:
  - host: api.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]
  - host: web.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
  - host: secure.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]
"#;

/// Waits until `url` answers `status` with a body containing `want`.
fn wait_answer(s: &TestServer, url: &str, extra: &[&str], status: u16, want: &str) {
    let mut last = (0, String::new());
    let what = format!("{url} {extra:?} to answer {status} with {want:?}");
    wait_for(s, Duration::from_secs(60), &what, || {
        last = curl(url, extra);
        last.0 == status && last.1.contains(want)
    });
}

#[test]
fn ingress_routes_by_path_and_host_with_tls_and_forwarded_headers() {
    let (s, http, https) = server();

    // The default class exists from the start.
    let classes = s.kubectl_ok(&["get", "ingressclass", "skiff", "-o", "json"]);
    let class: serde_json::Value = serde_json::from_str(&classes).expect("IngressClass JSON");
    assert_eq!(class["spec"]["controller"], "skiff.dev/ingress");
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );

    // A TLS Secret for secure.example.com, made with openssl as a user would.
    let dir = tempfile::tempdir().expect("temp dir");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=secure.example.com"])
        .args(["-addext", "subjectAltName=DNS:secure.example.com"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);

    s.kubectl_stdin_ok(&["apply", "-f", "-"], &app("api"));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &app("web"));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], INGRESSES);

    let base = format!("http://127.0.0.1:{http}");
    // By path (Prefix is element-wise: /apifoo is not /api).
    wait_answer(&s, &format!("{base}/api/"), &[], 200, "this is api");
    wait_answer(&s, &format!("{base}/web/"), &[], 200, "this is web");
    assert_eq!(curl(&format!("{base}/apifoo"), &[]).0, 404);
    assert_eq!(curl(&format!("{base}/"), &[]).0, 404);
    // A route to a missing Service answers 503; the others keep working.
    let (code, body) = curl(&format!("{base}/gone/x"), &[]);
    assert_eq!(code, 503, "{body}");
    assert_eq!(curl(&format!("{base}/api/"), &[]).1.trim(), "this is api");

    // Requests are spread over both ready pods of the Deployment.
    // (The second pod may become ready a little after the first.)
    let mut pods = std::collections::BTreeSet::new();
    wait_for(
        &s,
        Duration::from_secs(60),
        "both api pods to answer",
        || {
            let (code, who) = curl(&format!("{base}/api/who"), &[]);
            if code == 200 {
                pods.insert(who.trim().to_string());
            }
            pods.len() == 2
        },
    );

    // By host.
    let (code, body) = curl(&format!("{base}/"), &["-H", "Host: api.example.com"]);
    assert_eq!((code, body.trim()), (200, "this is api"));
    let (code, body) = curl(&format!("{base}/"), &["-H", "Host: web.example.com"]);
    assert_eq!((code, body.trim()), (200, "this is web"));

    // What the backend sees: X-Forwarded-* and X-Real-IP (busybox httpd's CGI passes
    // request headers as HTTP_* variables).
    let (code, env) = curl(
        &format!("{base}/cgi-bin/env"),
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.7",
            "-H",
            "Host: shop.test:8080",
        ],
    );
    assert_eq!(code, 200, "{env}");
    assert!(
        env.contains("HTTP_X_FORWARDED_FOR=203.0.113.7, 127.0.0.1"),
        "{env}"
    );
    assert!(env.contains("HTTP_X_REAL_IP=127.0.0.1"), "{env}");
    assert!(env.contains("HTTP_X_FORWARDED_HOST=shop.test"), "{env}");
    assert!(env.contains("HTTP_X_FORWARDED_PROTO=http"), "{env}");
    assert!(
        env.contains(&format!("HTTP_X_FORWARDED_PORT={http}")),
        "{env}"
    );

    // HTTPS: the Secret's certificate, selected by SNI, verified by curl.
    let resolve = format!("secure.example.com:{https}:127.0.0.1");
    let cacert = crt.display().to_string();
    wait_answer(
        &s,
        &format!("https://secure.example.com:{https}/"),
        &["--resolve", &resolve, "--cacert", &cacert],
        200,
        "this is web",
    );
    // Another name gets the default (self-signed) certificate: curl does not trust it.
    let resolve_other = format!("other.example.com:{https}:127.0.0.1");
    let (code, _) = curl(
        &format!("https://other.example.com:{https}/"),
        &["--resolve", &resolve_other, "--cacert", &cacert],
    );
    assert_eq!(
        code, 0,
        "the default certificate must not verify as the Secret's"
    );
    let (code, _) = curl(
        &format!("https://other.example.com:{https}/api/"),
        &["--resolve", &resolve_other, "-k"],
    );
    assert_eq!(code, 200);

    // A changed Ingress applies to connections already open: api.example.com moves to
    // `web` while one keep-alive connection keeps asking.
    let mut conn = KeepAlive::open(http);
    assert_eq!(conn.get("api.example.com", "/").trim(), "this is api");
    s.kubectl_ok(&[
        "patch",
        "ingress",
        "by-host",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/rules/0/http/paths/0/backend/service/name", "value": "web"}]"#,
    ]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "api.example.com to move to web on the same connection",
        || conn.get("api.example.com", "/").trim() == "this is web",
    );

    // Changing an Ingress applies without restarting anything: the missing Service appears.
    // (its httpd has no /gone page: the 404 now comes from the backend).
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &app("missing"));
    wait_answer(&s, &format!("{base}/gone/"), &[], 404, "");
    assert_eq!(curl(&format!("{base}/api/"), &[]).1.trim(), "this is api");

    // kubectl shows the node's address in the ADDRESS column.
    let node_ip = s.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "the Ingress ADDRESS column",
        || {
            let table = s.kubectl_ok(&["get", "ingress", "by-host"]);
            table
                .lines()
                .nth(1)
                .is_some_and(|row| row.contains(node_ip.trim()))
        },
    );
    let table = s.kubectl_ok(&["get", "ingress"]);
    assert!(table.contains("skiff"), "{table}");
}

/// One HTTP/1.1 connection kept open across requests.
struct KeepAlive {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        KeepAlive {
            reader: std::io::BufReader::new(stream),
        }
    }

    /// GET `path` from `host` on this connection: the body (panics if the connection
    /// was closed, which is what this checks).
    fn get(&mut self, host: &str, path: &str) -> String {
        use std::io::{BufRead, Read, Write};
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("the kept-alive connection takes another request");
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read a header");
            assert!(n > 0, "the ingress closed the kept-alive connection");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("Content-Length");
                }
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).expect("read the body");
        String::from_utf8_lossy(&body).into_owned()
    }
}
