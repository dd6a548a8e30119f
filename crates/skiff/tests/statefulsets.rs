//! StatefulSets driven through the real kubectl on three simulated nodes: OrderedReady
//! creation (each pod Ready before the next exists, seen through `kubectl get -w`),
//! stable identity (names, hostname/subdomain, identity labels), a claim per
//! volumeClaimTemplate (`www-web-N`, kept on scale down), scale down from the highest
//! ordinal one at a time, `set image` with a partition, `rollout status|history|undo`,
//! self-healing under the same name, Parallel pod management, and bad specs refused.
//!
//! Claims stay Pending here (no PV binder needed): the controller does not wait for
//! binding, the simulated kubelet does not mount.

mod common;
use std::collections::BTreeMap;
use std::time::Duration;

use testkit::{eventually, Background, Table, TestServer};

const LONG: Duration = Duration::from_secs(90);

fn manifest(name: &str, replicas: u32, image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  clusterIP: None
  selector:
    app: {name}
  ports:
  - port: 80
    name: http
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}
  replicas: {replicas}
{extra_spec}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: {name}
        image: {image}
"#
    )
}

const CLAIMS: &str = r#"  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      storageClassName: local-path
      resources:
        requests:
          storage: 1Gi"#;

fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Pods of the set by name (all, including terminating ones).
fn pods(s: &TestServer, app: &str) -> BTreeMap<String, serde_json::Value> {
    let v = s.kubectl_json(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap_or("").to_string(), p))
        .collect()
}

fn label<'a>(pod: &'a serde_json::Value, key: &str) -> &'a str {
    pod["metadata"]["labels"][key].as_str().unwrap_or("")
}

/// Waits until exactly `names` exist, all Ready and not terminating, running `image`.
fn wait_for_pods(s: &TestServer, app: &str, names: &[&str], image: &str) {
    eventually(LONG, || {
        let got = pods(s, app);
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        anyhow::ensure!(keys == names, "pods {keys:?}, want {names:?}");
        for (name, p) in &got {
            anyhow::ensure!(
                p["metadata"]["deletionTimestamp"].is_null(),
                "{name} terminating"
            );
            anyhow::ensure!(is_ready(p), "{name} not ready");
            anyhow::ensure!(
                p["spec"]["containers"][0]["image"] == image,
                "{name} runs {}",
                p["spec"]["containers"][0]["image"]
            );
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("pods of {app} never settled: {e:#}\n{}", s.log_tail(60)));
}

/// `kubectl get pods -w` printing `name phase ready deleting` per event.
fn watch_pods(s: &TestServer, app: &str) -> Background {
    s.kubectl_spawn(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-w",
        "-o",
        r#"jsonpath={.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} deleting={.metadata.deletionTimestamp}{"\n"}"#,
    ])
}

/// Index of the first watch line about `pod` satisfying `pred`.
fn first_line(lines: &[String], pod: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    lines
        .iter()
        .position(|l| l.split(' ').next() == Some(pod) && pred(l))
}

fn last_line(lines: &[String], pod: &str) -> Option<usize> {
    lines.iter().rposition(|l| l.split(' ').next() == Some(pod))
}

fn ready_line(l: &str) -> bool {
    l.contains(" Running True ")
}

fn deleting_line(l: &str) -> bool {
    !l.ends_with("deleting=")
}

/// In the watch stream, pod `n` first appears only after pod `n-1` was seen Running
/// and Ready, for each n in `ordinals`.
fn assert_ordered_creation(lines: &[String], app: &str, ordinals: std::ops::Range<u32>) {
    for n in ordinals {
        let prev = format!("{app}-{}", n - 1);
        let this = format!("{app}-{n}");
        let prev_ready = first_line(lines, &prev, ready_line)
            .unwrap_or_else(|| panic!("{prev} never seen Ready in {lines:#?}"));
        let appeared = first_line(lines, &this, |_| true)
            .unwrap_or_else(|| panic!("{this} never seen in {lines:#?}"));
        assert!(
            prev_ready < appeared,
            "{this} existed before {prev} was Ready: {lines:#?}"
        );
    }
}

fn sts_row(s: &TestServer, name: &str) -> BTreeMap<String, String> {
    let t = Table::parse(&s.kubectl_ok(&["get", "sts", name]));
    assert_eq!(t.headers, ["NAME", "READY", "AGE"]);
    t.headers
        .iter()
        .cloned()
        .zip(t.rows.first().cloned().unwrap_or_default())
        .collect()
}

fn claim_names(s: &TestServer) -> Vec<String> {
    let t = Table::parse(&s.kubectl_ok(&["get", "pvc"]));
    assert_eq!(t.headers[0], "NAME");
    t.rows.iter().map(|r| r[0].clone()).collect()
}

/// `kubectl rollout history sts/<name>` rows (REVISION, CHANGE-CAUSE).
fn history(s: &TestServer, name: &str) -> Vec<Vec<String>> {
    let out = s.kubectl_ok(&["rollout", "history", &format!("sts/{name}")]);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    assert_eq!(lines[0], format!("statefulset.apps/{name}"), "{out}");
    let t = Table::parse(&lines[1..].join("\n"));
    assert_eq!(t.headers, ["REVISION", "CHANGE-CAUSE"], "{out}");
    t.rows
}

fn status_field(s: &TestServer, name: &str, field: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "sts",
        name,
        "-o",
        &format!("jsonpath={{.status.{field}}}"),
    ])
}

#[test]
fn ordered_statefulset_with_claims_scales_rolls_and_heals() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let mut watch = watch_pods(&s, "web");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &manifest("web", 3, "nginx:1.27", CLAIMS),
    );
    wait_for_pods(&s, "web", &["web-0", "web-1", "web-2"], "nginx:1.27");
    watch
        .wait_for_line(LONG, |l| l.starts_with("web-2 Running True"))
        .unwrap_or_else(|e| panic!("watch: {e:#} {}", watch.stderr()));
    assert_ordered_creation(&watch.lines(), "web", 1..3);

    // Identity: hostname, subdomain, labels, the claim as a volume, the controller.
    let all = pods(&s, "web");
    for (ordinal, (name, p)) in all.iter().enumerate() {
        assert_eq!(p["spec"]["hostname"], name.as_str());
        assert_eq!(p["spec"]["subdomain"], "web");
        assert_eq!(label(p, "statefulset.kubernetes.io/pod-name"), name);
        assert_eq!(
            label(p, "apps.kubernetes.io/pod-index"),
            ordinal.to_string()
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        let volume = p["spec"]["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "www"))
            .unwrap_or_else(|| panic!("{name} has no www volume: {p}"));
        assert_eq!(
            volume["persistentVolumeClaim"]["claimName"],
            format!("www-{name}")
        );
    }
    let hash1 = label(&all["web-0"], "controller-revision-hash").to_string();
    assert!(!hash1.is_empty());
    assert_eq!(claim_names(&s), ["www-web-0", "www-web-1", "www-web-2"]);
    let claim = s.kubectl_json(&["get", "pvc", "www-web-0", "-o", "json"]);
    assert_eq!(claim["metadata"]["labels"]["app"], "web");
    assert_eq!(claim["spec"]["storageClassName"], "local-path");

    eventually(LONG, || {
        let row = sts_row(&s, "web");
        anyhow::ensure!(row["READY"] == "3/3", "{row:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // kubectl prints the partitioned message whenever rollingUpdate is set, and the API
    // defaults it (partition 0), exactly as against upstream.
    let out = s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    assert_eq!(
        out.trim(),
        "partitioned roll out complete: 3 new pods have been updated...",
    );
    assert_eq!(
        status_field(&s, "web", "currentRevision"),
        format!("web-{hash1}")
    );
    assert_eq!(
        status_field(&s, "web", "updateRevision"),
        format!("web-{hash1}")
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    for note in [
        "create Pod web-0 in StatefulSet web successful",
        "create Claim www-web-0 Pod web-0 in StatefulSet web success",
    ] {
        assert!(events.contains(note), "no event {note:?} in\n{events}");
    }

    let described = s.kubectl_ok(&["describe", "sts", "web"]);
    for want in [
        "Pods Status:        3 Running / 0 Waiting / 0 Succeeded / 0 Failed",
        "Volume Claims:",
        "statefulset-controller",
        "create Claim www-web-2 Pod web-2 in StatefulSet web success",
    ] {
        assert!(described.contains(want), "no {want:?} in\n{described}");
    }

    // Scale 3 -> 5 in order, then 5 -> 2 from the highest ordinal, one at a time.
    s.kubectl_ok(&["scale", "sts/web", "--replicas=5"]);
    wait_for_pods(
        &s,
        "web",
        &["web-0", "web-1", "web-2", "web-3", "web-4"],
        "nginx:1.27",
    );
    watch
        .wait_for_line(LONG, |l| l.starts_with("web-4 Running True"))
        .unwrap_or_else(|e| panic!("watch: {e:#}"));
    assert_ordered_creation(&watch.lines(), "web", 3..5);
    s.kubectl_ok(&["scale", "sts/web", "--replicas=2"]);
    wait_for_pods(&s, "web", &["web-0", "web-1"], "nginx:1.27");
    let lines = watch.lines();
    for (higher, lower) in [("web-4", "web-3"), ("web-3", "web-2")] {
        let gone = last_line(&lines, higher).expect("higher ordinal seen");
        let lower_deleting = first_line(&lines, lower, deleting_line)
            .unwrap_or_else(|| panic!("{lower} never seen terminating: {lines:#?}"));
        assert!(
            gone < lower_deleting,
            "{lower} began terminating before {higher} was gone: {lines:#?}"
        );
    }
    assert_eq!(
        claim_names(&s),
        [
            "www-web-0",
            "www-web-1",
            "www-web-2",
            "www-web-3",
            "www-web-4"
        ],
        "claims are kept on scale down (Retain)"
    );

    // Partition 1: set image updates ordinals >= 1 only, highest first.
    s.kubectl_ok(&["scale", "sts/web", "--replicas=3"]);
    wait_for_pods(&s, "web", &["web-0", "web-1", "web-2"], "nginx:1.27");
    s.kubectl_ok(&[
        "patch",
        "sts/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":1}}}}"#,
    ]);
    s.kubectl_ok(&[
        "annotate",
        "sts/web",
        "kubernetes.io/change-cause=image 1.28",
    ]);
    let rollout_start = watch.lines().len();
    s.kubectl_ok(&["set", "image", "sts/web", "web=nginx:1.28"]);
    eventually(LONG, || {
        let got = pods(&s, "web");
        let images: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|(n, p)| {
                (
                    n.as_str(),
                    p["spec"]["containers"][0]["image"].as_str().unwrap_or(""),
                    is_ready(p) && p["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect();
        anyhow::ensure!(
            images
                == [
                    ("web-0", "nginx:1.27", true),
                    ("web-1", "nginx:1.28", true),
                    ("web-2", "nginx:1.28", true)
                ],
            "{images:?}"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("partitioned rollout: {e:#}\n{}", s.log_tail(60)));
    let out = s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    assert!(
        out.contains("partitioned roll out complete: 2 new pods have been updated..."),
        "{out}"
    );
    let all = pods(&s, "web");
    let hash2 = label(&all["web-2"], "controller-revision-hash").to_string();
    assert_ne!(hash1, hash2);
    assert_eq!(label(&all["web-0"], "controller-revision-hash"), hash1);
    assert_eq!(label(&all["web-1"], "controller-revision-hash"), hash2);
    assert_eq!(
        status_field(&s, "web", "updateRevision"),
        format!("web-{hash2}")
    );
    assert_eq!(
        status_field(&s, "web", "currentRevision"),
        format!("web-{hash1}")
    );
    // The highest ordinal went first, and was Ready again before web-1 was touched.
    let lines = &watch.lines()[rollout_start..];
    let web2_deleted = first_line(lines, "web-2", deleting_line).expect("web-2 replaced");
    let web1_deleted = first_line(lines, "web-1", deleting_line).expect("web-1 replaced");
    let web2_back = lines[web2_deleted..]
        .iter()
        .position(|l| l.starts_with("web-2 Running True deleting=") && !deleting_line(l))
        .map(|i| i + web2_deleted)
        .expect("web-2 Ready again");
    assert!(
        web2_deleted < web1_deleted && web2_back < web1_deleted,
        "not highest ordinal first, one at a time: {lines:#?}"
    );

    // Partition 0 finishes the rollout; history shows both revisions.
    s.kubectl_ok(&[
        "patch",
        "sts/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let out = s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated..."),
        "{out}"
    );
    wait_for_pods(&s, "web", &["web-0", "web-1", "web-2"], "nginx:1.28");
    eventually(LONG, || {
        let current = status_field(&s, "web", "currentRevision");
        anyhow::ensure!(
            current == format!("web-{hash2}"),
            "currentRevision {current}"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("rollout never completed in status: {e:#}"));
    assert_eq!(status_field(&s, "web", "currentReplicas"), "3");
    assert_eq!(
        history(&s, "web"),
        [["1", "<none>"], ["2", "image 1.28"]],
        "change-cause comes from the set's annotation when the revision was made"
    );

    // Undo returns to revision 1's template, renumbered 3.
    let out = s.kubectl_ok(&["rollout", "undo", "sts/web"]);
    assert_eq!(out.trim(), "statefulset.apps/web rolled back");
    s.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=90s"]);
    wait_for_pods(&s, "web", &["web-0", "web-1", "web-2"], "nginx:1.27");
    let all = pods(&s, "web");
    assert_eq!(label(&all["web-0"], "controller-revision-hash"), hash1);
    let numbers: Vec<String> = history(&s, "web")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(numbers, ["2", "3"]);

    // A deleted pod comes back under the same name, with its claim.
    let old_uid = all["web-1"]["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    s.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    eventually(LONG, || {
        let got = pods(&s, "web");
        let p = got
            .get("web-1")
            .ok_or_else(|| anyhow::anyhow!("web-1 missing"))?;
        anyhow::ensure!(
            p["metadata"]["uid"] != old_uid.as_str(),
            "still the old web-1"
        );
        anyhow::ensure!(is_ready(p), "new web-1 not ready");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("web-1 never came back: {e:#}\n{}", s.log_tail(60)));
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(
        events.contains("delete Pod web-4 in StatefulSet web successful"),
        "{events}"
    );
}

#[test]
fn parallel_policy_creates_at_once_and_bad_specs_are_refused() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    // Pods that fit no node stay Pending, never Ready: OrderedReady would stop at db-0,
    // Parallel creates them all.
    let unschedulable = "  podManagementPolicy: Parallel\n  minReadySeconds: 0";
    let m = manifest("db", 3, "postgres:16", unschedulable).replace(
        "      containers:",
        "      nodeSelector:\n        disk: none\n      containers:",
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &m);
    eventually(LONG, || {
        let got = pods(&s, "db");
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        anyhow::ensure!(keys == ["db-0", "db-1", "db-2"], "{keys:?}");
        anyhow::ensure!(got.values().all(|p| !is_ready(p)), "a pod got ready");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("parallel creation: {e:#}\n{}", s.log_tail(60)));
    assert_eq!(sts_row(&s, "db")["READY"], "0/3");

    // Fixing the template rolls even the unready pods, and all become Ready.
    s.kubectl_ok(&[
        "patch",
        "sts/db",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]"#,
    ]);
    wait_for_pods(&s, "db", &["db-0", "db-1", "db-2"], "postgres:16");
    eventually(LONG, || {
        let row = sts_row(&s, "db");
        anyhow::ensure!(row["READY"] == "3/3", "{row:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    s.kubectl_ok(&["scale", "sts/db", "--replicas=0"]);
    eventually(LONG, || {
        anyhow::ensure!(pods(&s, "db").is_empty(), "pods left");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Bad specs: upstream's 422 with the field path, and nothing is stored.
    let cases = [
        (
            "replicas: 3",
            "replicas: -1",
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "  podManagementPolicy: Parallel",
            "  podManagementPolicy: Sometimes",
            r#"spec.podManagementPolicy: Invalid value: "Sometimes": must be 'OrderedReady' or 'Parallel'"#,
        ),
        (
            "      labels:\n        app: bad",
            "      labels:\n        app: other",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
        ),
    ];
    for (from, to, want) in cases {
        let m = manifest("bad", 3, "nginx", "  podManagementPolicy: Parallel").replace(from, to);
        assert_ne!(
            m,
            manifest("bad", 3, "nginx", "  podManagementPolicy: Parallel"),
            "{from}"
        );
        let out = s.kubectl_stdin(&["apply", "-f", "-"], &m);
        let err = s.expect_err(&["apply"], out);
        assert!(err.contains("is invalid"), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        let missing = s.kubectl_err(&["get", "sts", "bad"]);
        assert!(
            missing.contains("NotFound") || missing.contains("not found"),
            "{missing}"
        );
    }
}

#[test]
fn retention_policy_delete_removes_claims_and_failed_pods_are_replaced() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 3);
    let extra = format!(
        "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy:\n    whenDeleted: Delete\n    whenScaled: Delete\n{CLAIMS}"
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &manifest("cache", 3, "redis:7", &extra),
    );
    wait_for_pods(&s, "cache", &["cache-0", "cache-1", "cache-2"], "redis:7");
    assert_eq!(
        claim_names(&s),
        ["www-cache-0", "www-cache-1", "www-cache-2"]
    );
    let claim = s.kubectl_json(&["get", "pvc", "www-cache-0", "-o", "json"]);
    let owners = claim["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o["kind"] == "StatefulSet" && o["name"] == "cache"),
        "whenDeleted=Delete makes the set own its claims: {owners:?}"
    );

    // whenScaled=Delete: scaling down takes the condemned pods' claims with them.
    s.kubectl_ok(&["scale", "sts/cache", "--replicas=1"]);
    wait_for_pods(&s, "cache", &["cache-0"], "redis:7");
    eventually(LONG, || {
        let names = claim_names(&s);
        anyhow::ensure!(names == ["www-cache-0"], "claims {names:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("scaled-down claims stayed: {e:#}\n{}", s.log_tail(60)));

    // A pod that failed is deleted and recreated under its name.
    let old_uid = pods(&s, "cache")["cache-0"]["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    s.kubectl_ok(&[
        "patch",
        "pod",
        "cache-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    eventually(LONG, || {
        let got = pods(&s, "cache");
        let p = got
            .get("cache-0")
            .ok_or_else(|| anyhow::anyhow!("cache-0 missing"))?;
        anyhow::ensure!(
            p["metadata"]["uid"] != old_uid.as_str(),
            "still the failed pod"
        );
        anyhow::ensure!(is_ready(p), "new cache-0 not ready");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("failed pod never replaced: {e:#}\n{}", s.log_tail(60)));
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=cache",
    ]);
    assert!(
        events.contains("delete Pod cache-0 in StatefulSet cache successful"),
        "{events}"
    );

    // whenDeleted=Delete: deleting the set removes pods and claims.
    s.kubectl_ok(&["delete", "sts", "cache"]);
    eventually(LONG, || {
        anyhow::ensure!(pods(&s, "cache").is_empty(), "pods left");
        let claims = s.kubectl_ok(&["get", "pvc", "-o", "name"]);
        anyhow::ensure!(claims.trim().is_empty(), "claims left: {claims}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("set deletion left things: {e:#}\n{}", s.log_tail(60)));
}
