//! Errors as upstream prints them: NotFound, AlreadyExists, Invalid (422 with field paths),
//! strict decoding of unknown fields, 413 for big bodies, 401 for anonymous requests, 415.
//! A rejected request changes nothing.

mod common;
use common::*;

#[test]
fn not_found_messages() {
    let s = testkit::server!();
    let err = s.kubectl_err(&["get", "cm", "nope"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): configmaps "nope" not found"#
    );
    let err = s.kubectl_err(&["get", "deploy", "nope"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): deployments.apps "nope" not found"#
    );
    let err = s.kubectl_err(&["get", "pod", "nope", "-n", "kube-system"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): pods "nope" not found"#
    );
    let err = s.kubectl_err(&["describe", "node", "nope"]);
    assert_contains(&err, r#"nodes "nope" not found"#);
    let (code, body) = s.https("GET", "/api/v1/namespaces/default/configmaps/nope", None);
    assert_eq!(code, 404);
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["apiVersion"], "v1");
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NotFound");
    assert_eq!(st["code"], 404);
    assert_eq!(st["details"]["name"], "nope");
    assert_eq!(st["details"]["kind"], "configmaps");
}

#[test]
fn unknown_resource_type() {
    let s = testkit::server!();
    let err = s.kubectl_err(&["get", "frobnicators"]);
    assert_contains(
        &err,
        r#"the server doesn't have a resource type "frobnicators""#,
    );
}

#[test]
fn already_exists() {
    let s = testkit::server!();
    let f = s.write_file("cm.yaml", &configmap("dup", "default", &[("a", "1")]));
    let f = f.to_str().unwrap();
    s.kubectl_ok(&["create", "-f", f]);
    let err = s.kubectl_err(&["create", "-f", f]);
    assert_eq!(
        err.trim(),
        format!(
            r#"Error from server (AlreadyExists): error when creating "{f}": configmaps "dup" already exists"#
        )
    );
}

#[test]
fn deployment_selector_must_match_template() {
    let s = testkit::server!();
    let bad = deployment("bad", 1, "busybox:stable").replace(
        "  template:\n    metadata:\n      labels:\n        app: bad",
        "  template:\n    metadata:\n      labels:\n        app: other",
    );
    let err = s.kubectl_stdin_err(&["apply", "-f", "-"], &bad);
    assert_contains(
        &err,
        r#"The Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#,
    );
    // Nothing was stored.
    let err = s.kubectl_err(&["get", "deploy", "bad"]);
    assert_contains(&err, r#"deployments.apps "bad" not found"#);
}

#[test]
fn invalid_name() {
    let s = testkit::server!();
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        &configmap("Bad_Name", "default", &[]),
    );
    assert_contains(
        &err,
        r#"The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"#,
    );
}

#[test]
fn invalid_service_port_and_pod_without_containers() {
    let s = testkit::server!();
    // (Without targetPort it defaults to port, and upstream reports both fields.)
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n    targetPort: 8080\n",
    );
    assert_contains(
        &err,
        r#"The Service "s" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"#,
    );

    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: empty\nspec:\n  containers: []\n",
    );
    assert_contains(
        &err,
        r#"The Pod "empty" is invalid: spec.containers: Required value"#,
    );
    assert!(!s.kubectl(&["get", "svc", "s"]).status.success());
    assert!(!s.kubectl(&["get", "pod", "empty"]).status.success());
}

#[test]
fn a_malformed_network_policy_is_refused_and_not_stored() {
    let s = testkit::server!();
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ports}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, endPort: 70}]
"#,
    );
    assert_contains(
        &err,
        "The NetworkPolicy \"ports\" is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 70: must be greater than or equal to `port`",
    );
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]
"#,
    );
    assert_contains(
        &err,
        "The NetworkPolicy \"block\" is invalid: spec.egress[0].to[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
    );
    let listed = s.kubectl_ok(&["get", "networkpolicies", "-o", "name"]);
    assert_eq!(listed.trim(), "", "nothing stored: {listed}");
}

#[test]
fn several_invalid_fields_are_listed_one_per_line() {
    let s = testkit::server!();
    // targetPort defaults to port, so both are out of range.
    let err = s.kubectl_stdin_err(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n",
    );
    assert_contains(
        &err,
        "The Service \"s\" is invalid: \n* spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n* spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
}

#[test]
fn invalid_status_has_causes_with_field_paths() {
    let s = testkit::server!();
    let (code, body) = s.https(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#),
    );
    assert_eq!(code, 422, "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["kind"], "ConfigMap");
    assert_eq!(st["details"]["name"], "Bad_Name");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueInvalid");
}

#[test]
fn unknown_field_is_rejected_by_strict_validation() {
    let s = testkit::server!();
    let typo = deployment("typo", 1, "busybox:stable").replace("  replicas: 1", "  replica: 1");
    let f = s.write_file("typo.yaml", &typo);
    let f = f.to_str().unwrap();
    let err = s.kubectl_err(&["apply", "-f", f]);
    assert_eq!(
        err.trim(),
        format!(
            r#"Error from server (BadRequest): error when creating "{f}": Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.replica""#
        )
    );
    assert!(!s.kubectl(&["get", "deploy", "typo"]).status.success());

    // --validate=warn creates it and warns; the unknown field is dropped.
    let out = s.kubectl(&["apply", "--validate=warn", "-f", f]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_contains(
        &String::from_utf8_lossy(&out.stderr),
        r#"unknown field "spec.replica""#,
    );
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "typo", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );
}

#[test]
fn undecodable_body_is_400() {
    let s = testkit::server!();
    let (code, body) = s.https(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("{not json"),
    );
    assert_eq!(code, 400, "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "BadRequest");
}

#[test]
fn unsupported_patch_content_type_is_415() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "c"]);
    let out = s
        .curl_cmd("PATCH", "/api/v1/namespaces/default/configmaps/c")
        .args(["-H", "Content-Type: text/plain", "--data-binary", "x"])
        .output()
        .unwrap();
    let (code, body) = testkit::split_status(&out);
    assert_eq!(code, 415, "{body}");
}

#[test]
fn body_over_3_mib_is_413() {
    let s = testkit::server!();
    let big = "x".repeat(3 * 1024 * 1024 + 100);
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big"}, "data": {"blob": big}
    })
    .to_string();
    let (code, resp) = s.https("POST", "/api/v1/namespaces/default/configmaps", Some(&body));
    assert_eq!(code, 413, "{}", &resp[..resp.len().min(500)]);
    let st: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(st["reason"], "RequestEntityTooLarge");
    assert_eq!(st["message"], "Request entity too large: limit is 3145728");

    let f = s.write_file("big.json", &body);
    let err = s.kubectl_err(&["create", "-f", f.to_str().unwrap()]);
    assert_contains(&err, "Request entity too large: limit is 3145728");
    assert!(!s.kubectl(&["get", "cm", "big"]).status.success());
}

#[test]
fn anonymous_requests_are_unauthorized() {
    let s = testkit::server!();
    for path in ["/api/v1/namespaces", "/readyz", "/version", "/apis"] {
        let out = std::process::Command::new("curl")
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("{}{}", s.url(), path))
            .output()
            .unwrap();
        let (code, body) = testkit::split_status(&out);
        assert_eq!(code, 401, "{path}: {body}");
        let st: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(st["kind"], "Status", "{path}: {body}");
        assert_eq!(st["reason"], "Unauthorized", "{path}: {body}");
        assert_eq!(st["code"], 401);
    }
    // With the admin client certificate the same request works.
    let (code, _) = s.https("GET", "/api/v1/namespaces", None);
    assert_eq!(code, 200);
}

#[test]
fn bearer_token() {
    let s = testkit::TestServer::start(
        testkit::ServerOptions::new(env!("CARGO_BIN_EXE_skiff")).token("s3cret-token"),
    )
    .unwrap();
    let get = |auth: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "-H",
                auth,
            ])
            .arg(format!("{}/api/v1/namespaces", s.url()))
            .output()
            .unwrap();
        testkit::split_status(&out).0
    };
    assert_eq!(get("Authorization: Bearer s3cret-token"), 200);
    assert_eq!(get("Authorization: Bearer wrong"), 401);
    // kubectl with the token instead of the client certificate.
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            "/dev/null",
            "--insecure-skip-tls-verify",
            "--token",
            "s3cret-token",
        ])
        .args(["--server", &s.url(), "get", "ns", "default", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rejected_requests_change_nothing() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "keep", "--from-literal=a=1"]);
    let rv = s.kubectl_ok(&[
        "get",
        "cm",
        "keep",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    // An invalid update (a label value the server must refuse).
    let err = s.kubectl_err(&[
        "patch",
        "cm",
        "keep",
        "-p",
        r#"{"metadata":{"labels":{"bad":"not valid!"}}}"#,
    ]);
    assert_contains(
        &err,
        r#"The ConfigMap "keep" is invalid: metadata.labels: Invalid value: "not valid!""#,
    );
    let rv2 = s.kubectl_ok(&[
        "get",
        "cm",
        "keep",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(rv, rv2, "a rejected update must not write");
}
