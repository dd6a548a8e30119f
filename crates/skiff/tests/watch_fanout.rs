//! Watch fan-out through the shared watch hub, over HTTPS as clients use it: many watchers
//! of one resource with different namespaces, selectors and shapes each see exactly their
//! events; a watcher from an old resourceVersion joins a running hub without a gap; a
//! watcher whose client stops reading does not hold up the others.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A watch request run by curl in the background, its stdout lines collected.
fn spawn_watch(s: &testkit::TestServer, path: &str, accept: Option<&str>) -> testkit::Background {
    let mut cmd = s.curl_cmd("GET", path);
    // curl_cmd bounds a request at 30 s; watches here end by their own timeoutSeconds.
    cmd.args(["--max-time", "120", "-N"]);
    if let Some(a) = accept {
        cmd.args(["-H", &format!("Accept: {a}")]);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    testkit::Background::new(cmd.spawn().expect("run curl"))
}

/// (type, namespace/name) of each non-bookmark event line; curl's final status line and
/// blank lines are skipped.
fn events(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e| e["type"] != "BOOKMARK")
        // The root CA publisher's ConfigMap may be created while a watch starts.
        .filter(|e| e["object"]["metadata"]["name"] != "kube-root-ca.crt")
        .map(|e| {
            let m = &e["object"]["metadata"];
            (
                e["type"].as_str().unwrap_or("?").to_string(),
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                ),
            )
        })
        .collect()
}

/// Waits for a background watch to end (its timeoutSeconds) and returns its lines.
fn finish(w: &mut testkit::Background) -> Vec<String> {
    // The last line curl prints is the status code, after the server ends the stream.
    testkit::eventually(T, || {
        let lines = w.lines();
        match lines.last() {
            Some(l) if l.trim() == "200" => Ok(lines),
            _ => anyhow::bail!("watch still running: {} lines", lines.len()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}; stderr: {}", w.stderr()))
}

fn list_rv(s: &testkit::TestServer, path: &str) -> String {
    let (code, body) = s.https("GET", path, None);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("list JSON");
    list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string()
}

fn ev(t: &str, key: &str) -> (String, String) {
    (t.to_string(), key.to_string())
}

#[test]
fn watchers_with_different_filters_each_see_exactly_their_events() {
    let s = testkit::server!();
    s.kubectl_ok(&["create", "ns", "other"]);
    let rv = list_rv(&s, "/api/v1/configmaps");
    let q = format!("watch=1&resourceVersion={rv}");
    let partial = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    // (what, path, accept, expected events)
    let watchers: Vec<(&str, String, Option<&str>, Vec<(String, String)>)> = vec![
        (
            "all namespaces",
            format!("/api/v1/configmaps?{q}"),
            None,
            vec![
                ev("ADDED", "default/c1"),
                ev("ADDED", "other/c2"),
                ev("ADDED", "default/c3"),
                ev("MODIFIED", "default/c3"),
                ev("MODIFIED", "default/c1"),
                ev("DELETED", "other/c2"),
                ev("DELETED", "default/c1"),
            ],
        ),
        (
            "namespace default",
            format!("/api/v1/namespaces/default/configmaps?{q}"),
            None,
            vec![
                ev("ADDED", "default/c1"),
                ev("ADDED", "default/c3"),
                ev("MODIFIED", "default/c3"),
                ev("MODIFIED", "default/c1"),
                ev("DELETED", "default/c1"),
            ],
        ),
        (
            "app=web everywhere",
            format!("/api/v1/configmaps?{q}&labelSelector=app%3Dweb"),
            None,
            vec![
                ev("ADDED", "default/c1"),
                ev("ADDED", "default/c3"),   // labelled into the selector
                ev("DELETED", "default/c1"), // relabelled out of it
            ],
        ),
        (
            "app=db everywhere",
            format!("/api/v1/configmaps?{q}&labelSelector=app%3Ddb"),
            None,
            vec![
                ev("ADDED", "other/c2"),
                ev("ADDED", "default/c1"), // relabelled into the selector
                ev("DELETED", "other/c2"),
                ev("DELETED", "default/c1"),
            ],
        ),
        (
            "metadata.name=c1 in default",
            format!("/api/v1/namespaces/default/configmaps?{q}&fieldSelector=metadata.name%3Dc1"),
            None,
            vec![
                ev("ADDED", "default/c1"),
                ev("MODIFIED", "default/c1"),
                ev("DELETED", "default/c1"),
            ],
        ),
        (
            "namespace other as PartialObjectMetadata",
            format!("/api/v1/namespaces/other/configmaps?{q}"),
            Some(partial),
            vec![ev("ADDED", "other/c2"), ev("DELETED", "other/c2")],
        ),
    ];
    // Started before the changes (live fan-out) and again after them (replay of history
    // while the hub runs); both must see the same.
    let live: Vec<_> = watchers
        .iter()
        .map(|(_, path, accept, _)| spawn_watch(&s, &format!("{path}&timeoutSeconds=25"), *accept))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    create_labelled(&s, "default", "c1", Some("web"));
    create_labelled(&s, "other", "c2", Some("db"));
    create_labelled(&s, "default", "c3", None);
    s.kubectl_ok(&["label", "cm", "c3", "app=web"]);
    s.kubectl_ok(&["label", "cm", "c1", "app=db", "--overwrite"]);
    s.kubectl_ok(&["delete", "cm", "c2", "-n", "other"]);
    s.kubectl_ok(&["delete", "cm", "c1"]);
    let replay: Vec<_> = watchers
        .iter()
        .map(|(_, path, accept, _)| spawn_watch(&s, &format!("{path}&timeoutSeconds=3"), *accept))
        .collect();
    for (mode, mut runs) in [("replayed", replay), ("live", live)] {
        for ((what, _, accept, want), w) in watchers.iter().zip(runs.iter_mut()) {
            let lines = finish(w);
            let got = events(&lines);
            assert_eq!(&got, want, "{mode} watcher {what}: {lines:#?}");
            if accept.is_some() {
                for l in lines.iter().filter(|l| l.starts_with('{')) {
                    let e: Value = serde_json::from_str(l).expect("JSON");
                    assert_eq!(e["object"]["kind"], "PartialObjectMetadata", "{l}");
                }
            }
        }
    }
}

fn create_labelled(s: &testkit::TestServer, ns: &str, name: &str, app: Option<&str>) {
    let mut meta = serde_json::json!({"name": name});
    if let Some(app) = app {
        meta["labels"] = serde_json::json!({"app": app});
    }
    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta});
    let (code, out) = s.https(
        "POST",
        &format!("/api/v1/namespaces/{ns}/configmaps"),
        Some(&body.to_string()),
    );
    assert_eq!(code, 201, "create {ns}/{name}: {out}");
}

/// Creates `n` ConfigMaps named `<prefix>-<i>` in `default` over HTTPS, in order.
fn create_configmaps(s: &testkit::TestServer, prefix: &str, n: usize, data_bytes: usize) {
    let filler = "x".repeat(data_bytes);
    for i in 0..n {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{prefix}-{i}")}, "data": {"filler": filler}})
        .to_string();
        let (code, out) = s.https("POST", "/api/v1/namespaces/default/configmaps", Some(&body));
        assert_eq!(code, 201, "create {prefix}-{i}: {out}");
    }
}

#[test]
fn a_watch_from_an_old_resource_version_joins_a_running_hub_without_a_gap() {
    let s = testkit::server!();
    let rv0 = list_rv(&s, "/api/v1/namespaces/default/configmaps");
    create_configmaps(&s, "early", 10, 10);
    // This watcher starts the hub at the current revision, after rv0.
    let mut keeper = spawn_watch(&s, "/api/v1/configmaps?watch=1&timeoutSeconds=40", None);
    keeper
        .wait_for_line(T, |l| l.contains("\"early-9\""))
        .unwrap();
    // Writes go on while the old watcher replays history and moves to the shared ring.
    let writer = {
        let kubeconfig = s.kubeconfig();
        std::thread::spawn(move || {
            for i in 0..20 {
                let out = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["create", "configmap", &format!("late-{i}")])
                    .output()
                    .expect("run kubectl");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        })
    };
    let mut old = spawn_watch(
        &s,
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv0}&timeoutSeconds=15"
        ),
        None,
    );
    writer.join().expect("writer");
    let lines = finish(&mut old);
    let got = events(&lines);
    let want: Vec<(String, String)> = (0..10)
        .map(|i| ev("ADDED", &format!("default/early-{i}")))
        .chain((0..20).map(|i| ev("ADDED", &format!("default/late-{i}"))))
        .collect();
    assert_eq!(got, want, "{lines:#?}");
    let rvs: Vec<i64> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let e: Value = serde_json::from_str(l).expect("JSON");
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .expect("resourceVersion")
        })
        .collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "revision order: {rvs:?}"
    );
}

#[test]
fn a_watcher_that_stops_reading_does_not_hold_up_the_others() {
    let s = testkit::server!();
    let path = "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=50";
    let mut stalled = spawn_watch(&s, path, None);
    let mut live = spawn_watch(&s, path, None);
    std::thread::sleep(Duration::from_secs(1));
    // Stop the client process (ours, by PID): it reads nothing until continued, so the
    // server's buffers for it fill up.
    let stop = |sig: &str| {
        let signal = match sig {
            "-STOP" => libc::SIGSTOP,
            "-CONT" => libc::SIGCONT,
            other => panic!("no signal {other}"),
        };
        // SAFETY: kill(2) on the PID of a child this test spawned and has not reaped.
        let sent = unsafe { libc::kill(stalled.pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill {sig}: {}", std::io::Error::last_os_error());
    };
    stop("-STOP");
    // 100 events of ~200 KiB: far more than the stopped client's socket and HTTP/2
    // windows hold, and more than the hub keeps for a watcher that is behind.
    let n = 100;
    create_configmaps(&s, "big", n, 200 * 1024);
    let last = format!("\"big-{}\"", n - 1);
    let seen = live.wait_for_line(T, |l| l.contains(&last));
    stop("-CONT");
    seen.expect("the reading watcher gets every event while the other is stopped");
    let got = events(&live.lines());
    let want: Vec<(String, String)> = (0..n)
        .map(|i| ev("ADDED", &format!("default/big-{i}")))
        .collect();
    assert_eq!(got, want);
    // Whatever the stopped watcher received before it was closed for falling behind is
    // an in-order prefix of the events, with nothing skipped.
    let lines = finish(&mut stalled);
    let got = events(&lines);
    assert_eq!(got, want[..got.len()], "stalled watcher's events");
    eprintln!("the stopped watcher received {} of {n} events", got.len());
}

fn pod_manifest(name: &str, node: Option<&str>) -> String {
    // schedulerName "manual": no scheduler binds it; the test does.
    let node = node.map_or(String::new(), |n| format!(r#","nodeName":"{n}""#));
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"schedulerName":"manual","containers":[{{"name":"c","image":"busybox"}}]{node}}}}}"#
    )
}

/// A kubelet's kind of watch, `kubectl get pods --field-selector spec.nodeName=<node> -w`
/// (decided by the server on the stored bytes): a pod enters it when it is bound to the
/// node, changes in it, and leaves it when deleted; a pod not yet bound, or bound to
/// another node, never shows.
#[test]
fn a_node_field_selected_pod_watch_with_kubectl() {
    let s = testkit::server!();
    let mut on_a = s.kubectl_spawn(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=node-a",
        "--watch-only",
        "--output-watch-events",
    ]);
    let mut unbound = s.kubectl_spawn(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=",
        "--watch-only",
        "--output-watch-events",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    s.kubectl_stdin_ok(&["create", "-f", "-"], &pod_manifest("p1", None));
    s.kubectl_stdin_ok(&["create", "-f", "-"], &pod_manifest("p2", Some("node-b")));
    unbound
        .wait_for_line(T, |l| l.starts_with("ADDED") && l.contains(" p1 "))
        .unwrap();
    let (code, body) = s.https(
        "POST",
        "/api/v1/namespaces/default/pods/p1/binding",
        Some(r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p1"},"target":{"kind":"Node","name":"node-a"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    on_a.wait_for_line(T, |l| l.starts_with("ADDED") && l.contains(" p1 "))
        .unwrap();
    // Bound, it left the unbound watch.
    unbound
        .wait_for_line(T, |l| l.starts_with("DELETED") && l.contains(" p1 "))
        .unwrap();
    s.kubectl_ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    on_a.wait_for_line(T, |l| {
        l.starts_with("MODIFIED") && l.contains(" p1 ") && l.contains("Running")
    })
    .unwrap();
    s.kubectl_ok(&["delete", "pod", "p1", "p2", "--grace-period=0", "--force"]);
    on_a.wait_for_line(T, |l| l.starts_with("DELETED") && l.contains(" p1 "))
        .unwrap();
    let seen = on_a.lines().join("\n");
    assert!(
        !seen.contains(" p2 "),
        "node-b's pod in node-a's watch:\n{seen}"
    );
    assert_eq!(
        on_a.lines().iter().filter(|l| l.contains(" p1 ")).count(),
        3,
        "ADDED, MODIFIED, DELETED:\n{seen}"
    );
    let seen = unbound.lines().join("\n");
    assert!(
        !seen.contains(" p2 "),
        "a bound pod in the unbound watch:\n{seen}"
    );
}
