//! `kubectl get -w`: the initial list, then one line per change made afterwards.

mod common;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn get_watch_sees_new_objects() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "first"]);
    let mut w = s.kubectl_spawn(&["get", "configmaps", "-w"]);
    w.wait_for_line(T, |l| l.starts_with("NAME ")).unwrap();
    w.wait_for_line(T, |l| l.starts_with("first ")).unwrap();
    s.kubectl_ok(&["create", "configmap", "second", "--from-literal=a=1"]);
    let line = w.wait_for_line(T, |l| l.starts_with("second ")).unwrap();
    // Same columns as the table: NAME DATA AGE.
    assert_eq!(line.split_whitespace().nth(1), Some("1"), "{line}");
    let pid = w.pid();
    let all = w.kill();
    assert!(pid > 0);
    // The header is printed once.
    assert_eq!(
        all.iter().filter(|l| l.starts_with("NAME ")).count(),
        1,
        "{all:#?}"
    );
}

#[test]
fn watch_events_added_modified_deleted() {
    let s = testkit::server!();
    let mut w = s.kubectl_spawn(&["get", "deploy", "--watch-only", "--output-watch-events"]);
    // Give the watch time to be established before changing things.
    std::thread::sleep(Duration::from_secs(2));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &deployment("web", 1, "busybox:stable"),
    );
    w.wait_for_line(T, |l| l.starts_with("ADDED") && l.contains(" web "))
        .unwrap();
    s.kubectl_ok(&["scale", "deploy", "web", "--replicas=3"]);
    let l = w
        .wait_for_line(T, |l| {
            l.starts_with("MODIFIED") && l.contains(" web ") && l.contains("0/3")
        })
        .unwrap();
    assert!(l.contains("0/3"), "{l}");
    s.kubectl_ok(&["delete", "deploy", "web"]);
    w.wait_for_line(T, |l| l.starts_with("DELETED") && l.contains(" web "))
        .unwrap();
    let all = w.kill();
    // Nothing existed before the watch started, so no event precedes the ADDED.
    assert!(
        all.iter()
            .find(|l| !l.starts_with("EVENT"))
            .unwrap()
            .starts_with("ADDED"),
        "{all:#?}"
    );
}

#[test]
fn watch_all_namespaces_and_selector() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "other"]);
    let mut w = s.kubectl_spawn(&["get", "cm", "-A", "-l", "watch=me", "-w"]);
    std::thread::sleep(Duration::from_secs(2));
    s.kubectl_ok(&["create", "configmap", "ignored", "-n", "other"]);
    s.kubectl_ok(&["create", "configmap", "seen", "-n", "other"]);
    s.kubectl_ok(&["label", "cm", "seen", "-n", "other", "watch=me"]);
    let l = w.wait_for_line(T, |l| l.contains(" seen ")).unwrap();
    assert!(l.starts_with("other "), "namespace column first: {l}");
    let all = w.kill();
    assert!(!all.iter().any(|l| l.contains("ignored")), "{all:#?}");
}

#[test]
fn watch_from_resource_version_over_http() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "configmap", "before"]);
    let list = s.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["create", "configmap", "after"]);
    s.kubectl_ok(&["delete", "configmap", "before"]);
    // A watch from the list's resourceVersion replays exactly what happened since.
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
    );
    let mut cmd = s.curl_cmd("GET", &path);
    let out = cmd.output().unwrap();
    let (code, body) = testkit::split_status(&out);
    assert_eq!(code, 200, "{body}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seen: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        // The root CA publisher may create its ConfigMap meanwhile.
        .filter(|e| e["object"]["metadata"]["name"] != "kube-root-ca.crt")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED".to_string(), "after".to_string()),
            ("DELETED".to_string(), "before".to_string())
        ],
        "{body}"
    );
}
