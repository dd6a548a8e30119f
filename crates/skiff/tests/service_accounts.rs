//! Service-account tokens end to end with real clients: `kubectl create token` (the
//! TokenRequest subresource and its discovery entry), the token as a bearer credential
//! for kubectl and the `kube` crate until it is tampered with, expires, names another
//! audience, or its ServiceAccount or bound Pod is deleted; the kube-root-ca.crt
//! ConfigMap in every namespace; the ServiceAccount admission plugin's volume; and a real
//! pod reading its token, CA and namespace (needs root for the container).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use testkit::node::{wait_for, TEST_IMAGE};
use testkit::TestServer;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn ca_path(s: &TestServer) -> PathBuf {
    s.data_dir().join("server/tls/server-ca.crt")
}

/// A kubeconfig that authenticates with `token` only (no client certificate).
fn token_kubeconfig(s: &TestServer, token: &str) -> PathBuf {
    let path = unique(s.data_dir().join("token-user"));
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": s.url(), "certificate-authority": ca_path(s)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    std::fs::write(&path, config.to_string()).expect("write token kubeconfig");
    path
}

fn unique(path: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let p = path.with_extension(format!("{n}.kubeconfig"));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

/// kubectl with only the token as credential.
fn kubectl_with_token(s: &TestServer, token: &str, args: &[&str]) -> Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(token_kubeconfig(s, token))
        .arg("--request-timeout=30s")
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl")
}

fn assert_unauthorized(s: &TestServer, token: &str, why: &str) {
    let out = kubectl_with_token(s, token, &["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Unauthorized"),
        "{why}: expected 401, got {:?}: {err}",
        out.status
    );
}

fn assert_authorized(s: &TestServer, token: &str, why: &str) {
    let out = kubectl_with_token(s, token, &["get", "pods"]);
    assert!(
        out.status.success(),
        "{why}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn claims(token: &str) -> Value {
    let body = token.trim().split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64url")).expect("json")
}

fn wait_default_account(s: &TestServer, ns: &str) -> String {
    wait_for(
        s,
        Duration::from_secs(30),
        "the default ServiceAccount",
        || {
            s.kubectl(&["get", "sa", "default", "-n", ns])
                .status
                .success()
        },
    );
    s.kubectl_ok(&[
        "get",
        "sa",
        "default",
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ])
    .trim()
    .to_string()
}

/// A token signed with the server's own key (from its data dir) with these claims.
fn forge(s: &TestServer, claims: &Value) -> String {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let pem = std::fs::read_to_string(s.data_dir().join("server/tls/service.key"))
        .expect("service-account key");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("pem body");
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        .expect("P-256 PKCS#8 key");
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn kubectl_create_token_authenticates_until_revoked() {
    let s = testkit::server!();
    let sa_uid = wait_default_account(&s, "default");

    // Discovery lists the subresource, so `kubectl create token` finds it.
    let core = s.kubectl_ok(&["get", "--raw", "/api/v1"]);
    let core: Value = serde_json::from_str(&core).unwrap();
    let token_entry = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .cloned()
        .expect("serviceaccounts/token in /api/v1");
    assert_eq!(token_entry["kind"], "TokenRequest");
    assert_eq!(token_entry["group"], "authentication.k8s.io");
    assert_eq!(token_entry["verbs"], json!(["create"]));

    let token = s
        .kubectl_ok(&["create", "token", "default"])
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let c = claims(&token);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], json!([ISSUER]));
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], sa_uid.as_str());
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(c["nbf"], c["iat"]);

    assert_authorized(&s, &token, "a fresh token");
    let out = kubectl_with_token(&s, &token, &["get", "pods", "-A"]);
    assert!(out.status.success());

    // Tampered: a changed subject breaks the signature; a cut signature too.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut forged = c.clone();
    forged["sub"] = json!("system:serviceaccount:kube-system:default");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert_unauthorized(&s, &parts.join("."), "tampered claims");
    assert_unauthorized(&s, &token[..token.len() - 4], "cut signature");

    // Expired (signed with the right key, past the minute of leeway).
    let mut expired = c.clone();
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 120);
    assert_authorized(
        &s,
        &forge(&s, &{
            let mut ok = expired.clone();
            ok["exp"] = json!(now() + 600);
            ok
        }),
        "a token forged with the key (the forgery itself works)",
    );
    assert_unauthorized(&s, &forge(&s, &expired), "expired");

    // Another audience is not accepted by the API server.
    let vault = s
        .kubectl_ok(&["create", "token", "default", "--audience", "vault"])
        .trim()
        .to_string();
    assert_eq!(claims(&vault)["aud"], json!(["vault"]));
    assert_unauthorized(&s, &vault, "audience vault");

    // Upstream's validation of the lifetime.
    let err = s.kubectl_err(&["create", "token", "default", "--duration", "5m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let long = s
        .kubectl_ok(&["create", "token", "default", "--duration", "2h"])
        .trim()
        .to_string();
    let lc = claims(&long);
    assert_eq!(
        lc["exp"].as_i64().unwrap() - lc["iat"].as_i64().unwrap(),
        7200
    );
    let err = s.kubectl_err(&["create", "token", "nobody"]);
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );

    // Bound to a pod: valid while the pod exists.
    s.kubectl_ok(&["run", "holder", "--image", TEST_IMAGE, "--restart", "Never"]);
    let pod_uid = s.kubectl_ok(&["get", "pod", "holder", "-o", "jsonpath={.metadata.uid}"]);
    let bound = s
        .kubectl_ok(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
        ])
        .trim()
        .to_string();
    let bc = claims(&bound);
    assert_eq!(bc["kubernetes.io"]["pod"]["name"], "holder");
    assert_eq!(bc["kubernetes.io"]["pod"]["uid"], pod_uid.trim());
    assert_authorized(&s, &bound, "a pod-bound token");
    let err = s.kubectl_err(&[
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "nope",
    ]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    s.kubectl_ok(&["delete", "pod", "holder", "--grace-period=0", "--force"]);
    wait_for(&s, Duration::from_secs(30), "the pod to be gone", || {
        !s.kubectl(&["get", "pod", "holder"]).status.success()
    });
    assert_unauthorized(&s, &bound, "bound pod deleted");

    // The kube crate with the token.
    let kubeconfig = token_kubeconfig(&s, &token);
    let names = kube_list_pods(&kubeconfig).expect("kube client with a service-account token");
    assert!(names.is_empty(), "{names:?}");

    // Deleting the ServiceAccount revokes its tokens, also once it is re-created.
    s.kubectl_ok(&["delete", "sa", "default"]);
    assert_unauthorized(&s, &token, "account deleted");
    let new_uid = wait_default_account(&s, "default");
    assert_ne!(new_uid, sa_uid);
    assert_unauthorized(&s, &token, "account re-created with a new uid");
    assert!(kube_list_pods(&kubeconfig).is_err());
    let fresh = s
        .kubectl_ok(&["create", "token", "default"])
        .trim()
        .to_string();
    assert_authorized(&s, &fresh, "a token of the new account");

    // Static bearer tokens still work.
    let admin = std::fs::read_to_string(s.data_dir().join("server/token")).unwrap();
    // `K10<ca hash>::server:<secret>`: the secret is the bearer token.
    let secret = admin.trim().rsplit(':').next().unwrap();
    assert_authorized(&s, secret, "the server's static token");
}

/// The names of pods in `default`, listed by the `kube` crate with this kubeconfig.
fn kube_list_pods(kubeconfig: &Path) -> Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, "default");
        let list = pods
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect())
    })
}

#[test]
fn kube_root_ca_is_published_in_every_namespace() {
    let s = testkit::server!();
    let ca = std::fs::read_to_string(ca_path(&s)).unwrap();
    s.kubectl_ok(&["create", "ns", "team"]);
    let get = |s: &TestServer| {
        let out = s.kubectl(&["get", "cm", "kube-root-ca.crt", "-n", "team", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    wait_for(
        &s,
        Duration::from_secs(30),
        "kube-root-ca.crt in team",
        || get(&s).is_some(),
    );
    let cm = get(&s).unwrap();
    assert_eq!(cm["data"], json!({"ca.crt": ca}));
    assert!(cm["metadata"]["annotations"]["kubernetes.io/description"]
        .as_str()
        .unwrap()
        .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver"));
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        wait_for(
            &s,
            Duration::from_secs(30),
            "kube-root-ca.crt everywhere",
            || {
                s.kubectl(&["get", "cm", "kube-root-ca.crt", "-n", ns])
                    .status
                    .success()
            },
        );
    }

    // Deleted: it comes back (a new object).
    let uid = cm["metadata"]["uid"].as_str().unwrap().to_string();
    s.kubectl_ok(&["delete", "cm", "kube-root-ca.crt", "-n", "team"]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "kube-root-ca.crt re-created",
        || get(&s).is_some_and(|cm| cm["metadata"]["uid"] != uid.as_str()),
    );
    // Edited: put back.
    s.kubectl_ok(&[
        "patch",
        "cm",
        "kube-root-ca.crt",
        "-n",
        "team",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered","extra":"x"}}"#,
    ]);
    wait_for(
        &s,
        Duration::from_secs(30),
        "kube-root-ca.crt restored",
        || get(&s).is_some_and(|cm| cm["data"] == json!({"ca.crt": ca})),
    );
}

#[test]
fn admission_adds_the_api_access_volume() {
    let s = testkit::server!();
    wait_default_account(&s, "default");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: auto}}
spec:
  initContainers: [{{name: init, image: {TEST_IMAGE}}}]
  containers: [{{name: c, image: {TEST_IMAGE}}}, {{name: d, image: {TEST_IMAGE}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: manual}}
spec:
  automountServiceAccountToken: false
  containers: [{{name: c, image: {TEST_IMAGE}}}]
"#
        ),
    );
    let pod = s.kubectl_json(&["get", "pod", "auto", "-o", "json"]);
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let volumes = spec["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let name = volumes[0]["name"].as_str().unwrap();
    assert!(
        name.len() == "kube-api-access-".len() + 5 && name.starts_with("kube-api-access-"),
        "{name}"
    );
    assert_eq!(
        volumes[0]["projected"],
        json!({
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        })
    );
    let mount = json!([{"name": name, "readOnly": true, "mountPath": MOUNT}]);
    assert_eq!(spec["initContainers"][0]["volumeMounts"], mount);
    assert_eq!(spec["containers"][0]["volumeMounts"], mount);
    assert_eq!(spec["containers"][1]["volumeMounts"], mount);

    let manual = s.kubectl_json(&["get", "pod", "manual", "-o", "json"]);
    assert!(
        manual["spec"].get("volumes").is_none(),
        "{}",
        manual["spec"]
    );
    assert!(manual["spec"]["containers"][0]
        .get("volumeMounts")
        .is_none());

    // An account that says no, and one that does not exist.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: quiet}\nautomountServiceAccountToken: false\n",
    );
    s.kubectl_ok(&[
        "run",
        "q",
        "--image",
        TEST_IMAGE,
        "--overrides",
        r#"{"spec":{"serviceAccountName":"quiet"}}"#,
    ]);
    let q = s.kubectl_json(&["get", "pod", "q", "-o", "json"]);
    assert!(q["spec"].get("volumes").is_none(), "{}", q["spec"]);
    let err = s.kubectl_err(&[
        "run",
        "n",
        "--image",
        TEST_IMAGE,
        "--overrides",
        r#"{"spec":{"serviceAccountName":"nope"}}"#,
    ]);
    assert!(
        err.contains(r#"pods "n" is forbidden: error looking up service account default/nope: serviceaccount "nope" not found"#),
        "{err}"
    );
}

#[test]
fn pods_read_their_token_ca_and_namespace() {
    let s = testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")));
    wait_default_account(&s, "default");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {TEST_IMAGE}, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers: [{{name: c, image: {TEST_IMAGE}, command: [sleep, "3600"]}}]
"#
        ),
    );
    for pod in ["reader", "plain"] {
        wait_for(&s, Duration::from_secs(90), "the pod to run", || {
            testkit::node::status_column(&s, pod) == "Running"
        });
    }
    let cat =
        |file: &str| s.kubectl_ok(&["exec", "reader", "--", "cat", &format!("{MOUNT}/{file}")]);
    let token = cat("token");
    assert_eq!(cat("namespace"), "default");
    assert_eq!(cat("ca.crt"), std::fs::read_to_string(ca_path(&s)).unwrap());

    let c = claims(&token);
    let pod = s.kubectl_json(&["get", "pod", "reader", "-o", "json"]);
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "reader");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(c["kubernetes.io"]["node"]["name"], pod["spec"]["nodeName"]);
    // The kubelet's 3607 s token, extended as upstream, with warnafter.
    assert_eq!(
        c["kubernetes.io"]["warnafter"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3607
    );
    // Used from outside (pods have no network to the server yet).
    assert_authorized(&s, &token, "the pod's token");
    let out = kubectl_with_token(&s, &token, &["get", "pod", "reader", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/reader");

    let out = s.kubectl(&["exec", "plain", "--", "ls", MOUNT]);
    assert!(!out.status.success(), "no token volume without automount");

    // `kubectl create token` bound to the pod: its claims name the pod and its node; a
    // stale uid and another service account are refused as upstream refuses them.
    let bound = |account: &str, uid: Option<&str>| {
        let mut args = vec![
            "create",
            "token",
            account,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "reader",
        ];
        if let Some(uid) = uid {
            args.extend(["--bound-object-uid", uid]);
        }
        s.kubectl(&args)
    };
    let out = bound("default", pod["metadata"]["uid"].as_str());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = claims(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(c["kubernetes.io"]["node"]["name"], pod["spec"]["nodeName"]);
    let out = bound("default", Some("00000000-0000-0000-0000-000000000000"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not match the UID in record"),
        "{err}"
    );
    s.kubectl_ok(&["create", "serviceaccount", "other"]);
    let out = bound("other", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name"),
        "{err}"
    );

    // The token dies with its pod.
    s.kubectl_ok(&["delete", "pod", "reader", "--grace-period=0", "--force"]);
    wait_for(&s, Duration::from_secs(60), "the pod to be gone", || {
        !s.kubectl(&["get", "pod", "reader"]).status.success()
    });
    assert_unauthorized(&s, &token, "pod deleted");
}
