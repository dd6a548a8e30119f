//! The garbage collector, the Endpoints and EndpointSlice controllers and the
//! ServiceAccount controller, as a user meets them through kubectl: owners deleted with
//! background, foreground and orphan propagation; dependents of owners that never existed;
//! Endpoints and EndpointSlices following pods (ready, not ready, named target ports);
//! a `default` ServiceAccount in every new namespace.

mod common;
use std::time::Duration;
use testkit::{eventually, Table};

const WAIT: Duration = Duration::from_secs(60);

/// The uid of an object, e.g. `uid_of(&s, &["configmap", "owner"])`.
fn uid_of(s: &testkit::TestServer, what: &[&str]) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={.metadata.uid}"]);
    let uid = s.kubectl_ok(&args);
    assert!(!uid.trim().is_empty(), "no uid for {what:?}");
    uid.trim().to_string()
}

/// A ConfigMap owned by the ConfigMap `owner` (uid `owner_uid`).
fn dependent_configmap(
    name: &str,
    owner_uid: &str,
    block: bool,
    finalizer: Option<&str>,
) -> String {
    let finalizers = finalizer
        .map(|f| format!("  finalizers: [\"{f}\"]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{finalizers}  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {owner_uid}\n    blockOwnerDeletion: {block}\ndata:\n  k: v\n"
    )
}

fn exists(s: &testkit::TestServer, what: &[&str]) -> bool {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    s.kubectl(&args).status.success()
}

fn wait_gone(s: &testkit::TestServer, what: &[&str]) {
    eventually(WAIT, || {
        if exists(s, what) {
            anyhow::bail!("{what:?} still exists")
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
}

#[test]
fn background_deletion_of_an_owner_collects_its_dependents() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("dep-1", &uid, false, None),
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("dep-2", &uid, true, None),
    );
    // A dependent of a live owner stays.
    std::thread::sleep(Duration::from_secs(2));
    assert!(exists(&s, &["configmap", "dep-1"]));

    assert_eq!(
        s.kubectl_ok(&["delete", "configmap", "owner"]).trim(),
        r#"configmap "owner" deleted"#
    );
    wait_gone(&s, &["configmap", "dep-1"]);
    wait_gone(&s, &["configmap", "dep-2"]);
}

#[test]
fn foreground_deletion_keeps_the_owner_until_its_blocking_dependents_are_gone() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    // The dependent holds itself with a finalizer so the wait can be seen.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("dep", &uid, true, Some("example.com/hold")),
    );
    s.kubectl_ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);

    // The dependent is being deleted, the owner waits with the foregroundDeletion finalizer.
    eventually(WAIT, || {
        let dep = s.kubectl_json(&["get", "configmap", "dep", "-o", "json"]);
        if dep["metadata"]["deletionTimestamp"].is_null() {
            anyhow::bail!("dependent not being deleted yet")
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
    let owner = s.kubectl_json(&["get", "configmap", "owner", "-o", "json"]);
    assert!(
        owner["metadata"]["deletionTimestamp"].is_string(),
        "{owner}"
    );
    assert_eq!(
        owner["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"]),
        "{owner}"
    );

    // Once the dependent goes, so does the owner.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "dep",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_gone(&s, &["configmap", "dep"]);
    wait_gone(&s, &["configmap", "owner"]);
}

#[test]
fn orphan_deletion_leaves_dependents_without_the_owner_reference() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("dep", &uid, true, None),
    );
    s.kubectl_ok(&["delete", "configmap", "owner", "--cascade=orphan"]);
    wait_gone(&s, &["configmap", "owner"]);
    let dep = s.kubectl_json(&["get", "configmap", "dep", "-o", "json"]);
    assert!(dep["metadata"]["ownerReferences"].is_null(), "{dep}");
    // And it stays: nothing owns it any more.
    std::thread::sleep(Duration::from_secs(2));
    assert!(exists(&s, &["configmap", "dep"]));
}

#[test]
fn a_dependent_of_an_owner_that_never_existed_is_collected() {
    let s = testkit::server!();
    // The owner name exists, but with another uid: that is not its owner.
    s.kubectl_ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("stray", "00000000-0000-4000-8000-000000000000", false, None),
    );
    wait_gone(&s, &["configmap", "stray"]);
    assert!(exists(&s, &["configmap", "owner"]));
}

#[test]
fn a_dependent_naming_an_owner_in_another_namespace_is_warned_about_and_collected() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "namespace", "other"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "owner",
        "-n",
        "other",
        "--from-literal=a=b",
    ]);
    let uid = uid_of(&s, &["configmap", "owner", "-n", "other"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &dependent_configmap("cross", &uid, false, None),
    );
    let want = format!(
        "ownerRef [v1/ConfigMap, namespace: default, name: owner, uid: {uid}] does not exist in namespace \"default\""
    );
    eventually(WAIT, || {
        let out = s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=cross",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason} {.source.component}: {.message}{\"\\n\"}{end}",
        ]);
        let line = format!("Warning OwnerRefInvalidNamespace garbage-collector-controller: {want}");
        if !out.lines().any(|l| l == line) {
            anyhow::bail!("no {line:?} in {out}");
        }
        Ok(())
    })
    .unwrap();
    // An owner cannot live in another namespace: the dependent has none left.
    wait_gone(&s, &["configmap", "cross"]);
    assert!(exists(&s, &["configmap", "owner", "-n", "other"]));
}

#[test]
fn a_dependent_with_two_owners_outlives_one_of_them() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "keeper",
        "--from-literal=a=b",
    ]);
    let owner = uid_of(&s, &["configmap", "owner"]);
    let keeper = uid_of(&s, &["secret", "keeper"]);
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner}}}\n  - {{apiVersion: v1, kind: Secret, name: keeper, uid: {keeper}}}\n"
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    s.kubectl_ok(&["delete", "configmap", "owner"]);
    eventually(WAIT, || {
        let dep = s.kubectl_json(&["get", "configmap", "dep", "-o", "json"]);
        let refs = dep["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if refs.len() != 1 {
            anyhow::bail!("still {} owner references", refs.len())
        }
        assert_eq!(refs[0]["kind"], "Secret");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
    s.kubectl_ok(&["delete", "secret", "keeper"]);
    wait_gone(&s, &["configmap", "dep"]);
}

/// Stands in for a kubelet until simulated nodes exist: give the pod an IP and set its
/// Ready condition through the status subresource.
fn mark_pod_running(s: &testkit::TestServer, pod: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#
    );
    s.kubectl_ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// A pod labelled app=web whose container names `port_name` = `port`.
fn web_pod(name: &str, port_name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: web\nspec:\n  containers:\n  - name: main\n    image: busybox\n    ports:\n    - name: {port_name}\n      containerPort: {port}\n"
    )
}

const WEB_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n";

fn endpoints_column(s: &testkit::TestServer) -> String {
    let out = s.kubectl_ok(&["get", "endpoints", "web"]);
    let t = Table::parse(&out);
    assert_eq!(t.headers, ["NAME", "ENDPOINTS", "AGE"], "{out}");
    t.get("web", "ENDPOINTS").unwrap_or_default()
}

fn wait_endpoints(s: &testkit::TestServer, want: &str) {
    eventually(WAIT, || {
        let got = endpoints_column(s);
        if got != want {
            anyhow::bail!("ENDPOINTS is {got:?}, want {want:?}")
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
}

#[test]
fn endpoints_follow_pod_readiness_with_named_target_ports() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(&["apply", "-f", "-"], WEB_SERVICE);
    wait_endpoints(&s, "<none>");

    // Two pods name the port "http" on different numbers, one lacks it.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("a", "http", 8080));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("b", "http", 9090));
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("c", "metrics", 9100));
    mark_pod_running(&s, "a", "10.42.0.11", true);
    mark_pod_running(&s, "b", "10.42.0.12", false);
    mark_pod_running(&s, "c", "10.42.0.13", true);

    // Only ready addresses show in ENDPOINTS; b waits as not ready, c has no such port.
    wait_endpoints(&s, "10.42.0.11:8080");
    let ep = s.kubectl_json(&["get", "endpoints", "web", "-o", "json"]);
    let subsets = ep["subsets"].as_array().cloned().unwrap_or_default();
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in &subsets {
        let port = subset["ports"][0]["port"].as_i64().unwrap_or(0);
        for a in subset["addresses"].as_array().into_iter().flatten() {
            ready.push(format!("{}:{port}", a["ip"].as_str().unwrap_or("")));
        }
        for a in subset["notReadyAddresses"].as_array().into_iter().flatten() {
            not_ready.push(format!("{}:{port}", a["ip"].as_str().unwrap_or("")));
        }
    }
    assert_eq!(ready, ["10.42.0.11:8080"], "{ep}");
    assert_eq!(not_ready, ["10.42.0.12:9090"], "{ep}");
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string(),
        "{ep}"
    );

    // b turns ready.
    mark_pod_running(&s, "b", "10.42.0.12", true);
    wait_endpoints(&s, "10.42.0.11:8080,10.42.0.12:9090");
    let describe = s.kubectl_ok(&["describe", "svc", "web"]);
    let line = describe
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_default();
    // kubectl 1.32 reads the EndpointSlices here, where the pod without the named port
    // is listed without a port (as upstream's slice controller does).
    let mut listed: Vec<&str> = line
        .trim_start_matches("Endpoints:")
        .trim()
        .split(',')
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["10.42.0.11:8080", "10.42.0.12:9090", "10.42.0.13"],
        "{describe}"
    );

    // The EndpointSlice carries all three, each with its conditions and resolved port.
    let slices = s.kubectl_json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ]);
    let items = slices["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(!items.is_empty(), "{slices}");
    for item in &items {
        assert_eq!(
            item["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{names:?}"
        );
        assert_eq!(item["metadata"]["ownerReferences"][0]["kind"], "Service");
    }
    let mut seen: Vec<(String, i64, bool)> = Vec::new();
    for item in &items {
        let port = item["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in item["endpoints"].as_array().into_iter().flatten() {
            seen.push((
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                port,
                e["conditions"]["ready"].as_bool().unwrap_or(false),
            ));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("10.42.0.11".to_string(), 8080, true),
            ("10.42.0.12".to_string(), 9090, true),
            ("10.42.0.13".to_string(), 0, true),
        ],
        "the pod without the named port is listed without ports: {slices}"
    );

    // Pods deleted: the address goes.
    s.kubectl_ok(&["delete", "pod", "a"]);
    wait_endpoints(&s, "10.42.0.12:9090");
}

#[test]
fn publish_not_ready_addresses_and_selectorless_services() {
    let s = testkit::server!();
    let svc = WEB_SERVICE.replace("spec:\n", "spec:\n  publishNotReadyAddresses: true\n");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &svc);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &web_pod("a", "http", 8080));
    mark_pod_running(&s, "a", "10.42.0.21", false);
    wait_endpoints(&s, "10.42.0.21:8080");

    // A service without a selector: the user's Endpoints are left as written.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: manual\nspec:\n  ports:\n  - port: 80\n",
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: manual\nsubsets:\n- addresses:\n  - ip: 192.0.2.7\n  ports:\n  - port: 80\n",
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = s.kubectl_ok(&["get", "endpoints", "manual"]);
    assert_eq!(
        Table::parse(&out).get("manual", "ENDPOINTS").as_deref(),
        Some("192.0.2.7:80"),
        "{out}"
    );
    let slices = s.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=manual",
        "-o",
        "name",
    ]);
    assert_eq!(slices.trim(), "", "no slices for a selectorless service");

    // Deleting the service removes its Endpoints and, through the collector, its slices.
    s.kubectl_ok(&["delete", "svc", "web"]);
    wait_gone(&s, &["endpoints", "web"]);
    eventually(WAIT, || {
        let out = s.kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ]);
        if !out.trim().is_empty() {
            anyhow::bail!("slices left: {out}")
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "namespace", "team-sa"]);
    let get = || {
        eventually(WAIT, || {
            let out = s.kubectl_ok(&["get", "sa", "-n", "team-sa"]);
            let t = Table::parse(&out);
            if t.get("default", "NAME").is_none() {
                anyhow::bail!("no default ServiceAccount yet:\n{out}")
            }
            assert_eq!(t.headers, ["NAME", "SECRETS", "AGE"], "{out}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(40)));
    };
    get();
    // Deleted, it comes back.
    s.kubectl_ok(&["delete", "sa", "default", "-n", "team-sa"]);
    get();
    // The built-in namespaces have one too.
    for ns in ["default", "kube-system"] {
        eventually(WAIT, || {
            s.kubectl(&["get", "sa", "default", "-n", ns])
                .status
                .success()
                .then_some(())
                .ok_or_else(|| anyhow::anyhow!("no default ServiceAccount in {ns}"))
        })
        .unwrap();
    }
}
