//! Joining a server with its token, as a k3s user does: the token pins the server's CA, the
//! agent fetches the CA from `/cacerts` and checks it before sending the secret, and a node
//! obtains its own client certificate from the join endpoint.

use std::process::{Command, Stdio};
use std::time::Duration;

fn sha256_hex(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

#[test]
fn the_token_pins_the_ca_and_an_agent_joins_with_server_and_token_only() {
    let s = testkit::server!();
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).expect("token file");
    let token = token.trim();
    assert_eq!(
        token.split("::").next(),
        Some(format!("K10{}", sha256_hex(&ca)).as_str()),
        "the token is K10<sha256 of the CA>::server:<secret>: {token}"
    );

    // `skiff token` prints it, as `k3s token` does.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["token", "--data-dir"])
        .arg(s.data_dir())
        .output()
        .expect("skiff token");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token);

    // The CA is public; everything else needs credentials.
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("{}/cacerts", s.url()))
        .output()
        .expect("curl");
    let (code, body) = testkit::split_status(&out);
    assert_eq!(code, 200);
    assert_eq!(
        body.trim(),
        std::fs::read_to_string(&ca).expect("CA").trim()
    );
    let out = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("{}/api", s.url()))
        .output()
        .expect("curl");
    assert_eq!(testkit::split_status(&out).0, 401);

    // Only --server and --token: the agent fetches and checks the CA itself.
    let mut agent = testkit::Background::new(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "agent",
                "--simulate",
                "2",
                "--node-name",
                "joined",
                "--server",
            ])
            .arg(s.url())
            .arg("--token")
            .arg(token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start skiff agent"),
    );
    agent
        .wait_for_line(Duration::from_secs(30), |l| l.starts_with("ready 2"))
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.stderr()));
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "node/joined-0",
        "node/joined-1",
        "--timeout=30s",
    ]);
    drop(agent);

    // A token for another CA is refused before anything is sent; nothing registers.
    let (hash, rest) = token[3..].split_at(64);
    let flipped = if hash.starts_with('0') { "1" } else { "0" };
    let wrong = format!("K10{flipped}{}{rest}", &hash[1..]);
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "agent",
            "--simulate",
            "1",
            "--node-name",
            "impostor",
            "--server",
        ])
        .arg(s.url())
        .arg("--token")
        .arg(&wrong)
        .stdin(Stdio::null())
        .output()
        .expect("run skiff agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not match the CA hash in the K10 token"),
        "{err}"
    );
    let nodes = s.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert!(!nodes.contains("impostor"), "{nodes}");
}

#[test]
fn a_node_gets_its_own_client_certificate_from_the_join_endpoint() {
    let s = testkit::server!();
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).expect("token file");
    let secret = token.trim().rsplit(':').next().expect("secret").to_string();
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    // The subject asked for is ignored: the server names the certificate after the node.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:admin");
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let body = serde_json::json!({"nodeName": "worker-1", "csr": csr}).to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).expect("write body");
    let ca = s.data_dir().join("server/tls/server-ca.crt");
    let post = |auth: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "-X",
                "POST",
            ])
            .arg("--cacert")
            .arg(&ca)
            .args(["-H", auth, "-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .arg(format!("{}/v1-skiff/node-certificate", s.url()))
            .output()
            .expect("curl");
        testkit::split_status(&out)
    };
    assert_eq!(post("Authorization: Bearer wrong").0, 401);
    let (code, reply) = post(&format!("Authorization: Bearer {secret}"));
    assert_eq!(code, 200, "{reply}");
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("json");
    let cert = reply["certificate"].as_str().expect("certificate");
    assert_eq!(
        reply["caCertificate"].as_str().map(str::trim),
        Some(std::fs::read_to_string(&ca).expect("CA").trim())
    );

    // kubectl with the node's certificate is trusted, as system:node:worker-1.
    let cert_file = dir.path().join("node.crt");
    let key_file = dir.path().join("node.key");
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("key");
    let out = Command::new("kubectl")
        .arg(format!("--server={}", s.url()))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--client-certificate={}", cert_file.display()))
        .arg(format!("--client-key={}", key_file.display()))
        .args(["--kubeconfig=/dev/null", "get", "namespaces", "-o", "name"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert_file)
        .output();
    if let Ok(subject) = subject {
        let subject = String::from_utf8_lossy(&subject.stdout);
        assert!(
            subject.contains("system:node:worker-1") && subject.contains("system:nodes"),
            "{subject}"
        );
    }

    // A bad node name is refused with nothing signed.
    std::fs::write(
        &body_file,
        serde_json::json!({"nodeName": "Not_A_Name", "csr": csr}).to_string(),
    )
    .expect("write body");
    let (code, reply) = post(&format!("Authorization: Bearer {secret}"));
    assert_eq!(code, 400, "{reply}");
}

#[test]
fn a_real_agent_joins_registers_its_machine_and_keeps_its_lease() {
    let s = testkit::server!();
    let token = std::fs::read_to_string(s.data_dir().join("server/token")).expect("token file");
    let agent_dir = tempfile::tempdir().expect("tmp");
    // A real agent shares this machine's network with other tests' agents: its own bridge
    // (and the nftables tables named after it), removed at the end even on failure.
    let bridge = format!("sktj{}", std::process::id() % 100_000);
    let _cleanup = Killall(agent_dir.path().to_path_buf());
    let start_agent = |with_token: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args([
            "agent",
            "--node-name",
            "worker-1",
            "--node-lease-duration-seconds",
            "4",
            "--pod-bridge",
            &bridge,
        ])
        .arg("--server")
        .arg(s.url())
        .arg("--data-dir")
        .arg(agent_dir.path())
        .arg("--kubelet-port")
        .arg(testkit::free_port().expect("a free port").to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if with_token {
            cmd.arg("--token").arg(token.trim());
        }
        testkit::Background::new(cmd.spawn().expect("start skiff agent"))
    };
    let lease_renewed = || {
        s.kubectl_ok(&[
            "get",
            "lease",
            "worker-1",
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.renewTime}",
        ])
    };

    let agent = start_agent(true);
    let info = testkit::eventually(Duration::from_secs(30), || {
        // NotFound until the agent has registered.
        let out = s.kubectl(&[
            "get", "node", "worker-1", "-o",
            r#"jsonpath={.status.nodeInfo.containerRuntimeVersion}|{.status.capacity.pods}|{.status.nodeInfo.operatingSystem}|{range .status.conditions[?(@.type=="Ready")]}{.status}/{.reason}{end}"#,
        ]);
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        // The Node is created first and its status written next (as kubelet does).
        if out.is_empty() || out.starts_with('|') {
            anyhow::bail!("node not registered yet, or its status not written yet: {out:?}");
        }
        Ok(out)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.stderr()));
    assert_eq!(
        info,
        format!(
            "skiff://{}|110|linux|True/KubeletReady",
            env!("CARGO_PKG_VERSION")
        ),
        "the node runs pods, so it is Ready"
    );
    // The node's own credentials, obtained once with the token.
    for f in [
        "client-kubelet.crt",
        "client-kubelet.key",
        "server-ca.crt",
        "kubelet.kubeconfig",
    ] {
        assert!(agent_dir.path().join("agent").join(f).is_file(), "{f}");
    }
    // The lease is held by the node and renewed (every second with 4 s leases).
    let first = testkit::eventually(Duration::from_secs(10), || {
        let l = lease_renewed();
        if l.starts_with("worker-1 ") {
            Ok(l)
        } else {
            anyhow::bail!("lease: {l:?}")
        }
    })
    .expect("lease created");
    testkit::eventually(Duration::from_secs(10), || {
        let l = lease_renewed();
        if l != first {
            Ok(())
        } else {
            anyhow::bail!("lease not renewed: {l:?}")
        }
    })
    .expect("lease renewed");
    drop(agent);

    // Restarted without the token, it uses the credentials it kept.
    let agent = start_agent(false);
    let before = lease_renewed();
    testkit::eventually(Duration::from_secs(15), || {
        let l = lease_renewed();
        if l != before {
            Ok(())
        } else {
            anyhow::bail!("lease not renewed after restart")
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.stderr()));
}

/// Runs `skiff killall` on an agent's data dir when dropped: what the agent made on this
/// machine (its pod network, its service proxy's tables) goes.
struct Killall(std::path::PathBuf);

impl Drop for Killall {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["killall", "--data-dir"])
            .arg(&self.0)
            .output();
    }
}
