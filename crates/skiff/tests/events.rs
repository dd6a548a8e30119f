//! `kubectl get events`, `kubectl events`, and events in `kubectl describe`.

mod common;
use common::*;
use testkit::Table;

fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pod no scheduler serves, so the only events about it are the ones the test makes
/// (the default scheduler would add FailedScheduling: there are no nodes).
fn unscheduled_pod(name: &str, image: &str) -> String {
    pod(name, image).replacen(
        "spec:\n",
        "spec:\n  schedulerName: test-scheduler-that-does-not-exist\n",
        1,
    )
}

fn event_for(name: &str, pod: &str, uid: &str) -> String {
    let now = now_rfc3339();
    format!(
        r#"apiVersion: v1
kind: Event
metadata:
  name: {name}
  namespace: default
involvedObject:
  apiVersion: v1
  kind: Pod
  name: {pod}
  namespace: default
  uid: {uid}
reason: Pulled
message: Container image "busybox:stable" already present on machine
type: Normal
source:
  component: kubelet
count: 1
firstTimestamp: "{now}"
lastTimestamp: "{now}"
"#
    )
}

#[test]
fn get_events_empty_then_listed() {
    let s = testkit::server!();
    let out = s.kubectl(&["get", "events"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found in default namespace."
    );

    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &unscheduled_pod("hello", "busybox:stable"),
    );
    let uid = s.kubectl_ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_stdin_ok(&["create", "-f", "-"], &event_for("hello.1", "hello", &uid));

    let out = s.kubectl_ok(&["get", "events"]);
    let t = Table::parse(&out);
    assert_eq!(
        t.headers,
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    assert_eq!(t.column("TYPE"), ["Normal"]);
    assert_eq!(t.column("REASON"), ["Pulled"]);
    assert_eq!(t.column("OBJECT"), ["pod/hello"]);
    assert_eq!(
        t.column("MESSAGE"),
        [r#"Container image "busybox:stable" already present on machine"#]
    );

    // The same event through events.k8s.io/v1.
    let ev = s.kubectl_json(&["get", "events.v1.events.k8s.io", "hello.1"]);
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    assert_eq!(ev["regarding"]["name"], "hello");
    assert_eq!(
        ev["note"],
        r#"Container image "busybox:stable" already present on machine"#
    );

    // `kubectl events` (lists events.k8s.io or core events, sorted by time).
    let out = s.kubectl_ok(&["events"]);
    assert_contains(&out, "Pulled");
    assert_contains(&out, "Pod/hello");
}

#[test]
fn describe_shows_the_objects_events() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &unscheduled_pod("hello", "busybox:stable"),
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &unscheduled_pod("other", "busybox:stable"),
    );
    let uid = s.kubectl_ok(&["get", "pod", "hello", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_stdin_ok(&["create", "-f", "-"], &event_for("hello.1", "hello", &uid));

    let out = s.kubectl_ok(&["describe", "pod", "hello"]);
    let events = out
        .split("\nEvents:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events: in\n{out}"));
    let t = Table::parse(events);
    assert_eq!(
        t.headers,
        ["Type", "Reason", "Age", "From", "Message"],
        "{events}"
    );
    assert_eq!(t.column("Reason"), ["------", "Pulled"]);
    assert_eq!(t.column("From"), ["----", "kubelet"]);

    // Another pod's describe does not show it (events are found by field selector).
    let out = s.kubectl_ok(&["describe", "pod", "other"]);
    assert_eq!(
        testkit::describe_field(&out, "Events").as_deref(),
        Some("<none>")
    );
}

#[test]
fn events_field_selectors() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &event_for("a.1", "a", "11111111-1111-1111-1111-111111111111"),
    );
    s.kubectl_stdin_ok(
        &["create", "-f", "-"],
        &event_for("b.1", "b", "22222222-2222-2222-2222-222222222222"),
    );
    let out = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=b,involvedObject.kind=Pod",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "event/b.1");
    let out = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Pulled",
        "-o",
        "name",
    ]);
    assert_eq!(lines(&out).len(), 2, "{out}");
}
