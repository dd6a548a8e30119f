//! Jobs, CronJobs, TTL-after-finished and the pod garbage collector, driven through the
//! real kubectl against a real server with simulated nodes: the scheduler binds the Job's
//! pods and the simulated kubelet runs them to Succeeded or Failed as the pod template's
//! annotations say (`skiff.dev/simulate-run-seconds`, `skiff.dev/simulate-exit-code`), so
//! every test goes the path a user's Job goes.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use testkit::{eventually, Table, TestServer};

const WAIT: Duration = Duration::from_secs(60);

/// A Job whose pods run `run_seconds` and exit with `exit_code` on a simulated node.
fn job_yaml(name: &str, extra_spec: &str, run_seconds: u32, exit_code: u8) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra_spec}
  template:
    metadata:
      annotations:
        skiff.dev/simulate-run-seconds: "{run_seconds}"
        skiff.dev/simulate-exit-code: "{exit_code}"
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "work"]
"#
    )
}

fn apply(s: &TestServer, manifest: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], manifest);
}

/// The pods of job `job` as JSON objects.
fn job_pods(s: &TestServer, job: &str) -> Vec<Value> {
    let list = s.kubectl_json(&[
        "get",
        "pods",
        "-l",
        &format!("job-name={job}"),
        "-o",
        "json",
    ]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod_name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("Pending")
}

/// Names of the pods of job `job` that are not being deleted and have not finished.
fn active_pods(s: &TestServer, job: &str) -> Vec<String> {
    job_pods(s, job)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| !matches!(pod_phase(p), "Succeeded" | "Failed"))
        .map(pod_name)
        .collect()
}

fn wait_active(s: &TestServer, job: &str, n: usize) -> Vec<String> {
    eventually(WAIT, || {
        let pods = active_pods(s, job);
        if pods.len() != n {
            bail!("{job}: want {n} active pods, have {pods:?}");
        }
        Ok(pods)
    })
    .unwrap()
}

/// Wait until job `job` has no pods at all (stopped and removed).
fn wait_no_pods(s: &TestServer, job: &str) {
    eventually(WAIT, || {
        let pods = job_pods(s, job);
        if !pods.is_empty() {
            bail!(
                "{job}: pods left: {:?}",
                pods.iter().map(pod_name).collect::<Vec<_>>()
            );
        }
        Ok(())
    })
    .unwrap();
}

fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// When the simulated kubelet says the pod's container finished.
fn finished_at(p: &Value) -> Timestamp {
    ts(&p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
}

/// `kubectl get job NAME` as (STATUS, COMPLETIONS).
fn job_row(s: &TestServer, name: &str) -> (String, String) {
    let t = Table::parse(&s.kubectl_ok(&["get", "job", name]));
    (
        t.column("STATUS")[0].clone(),
        t.column("COMPLETIONS")[0].clone(),
    )
}

fn wait_job_row(s: &TestServer, name: &str, status: &str, completions: &str) {
    eventually(WAIT, || {
        let row = job_row(s, name);
        if row != (status.to_string(), completions.to_string()) {
            bail!("{name}: {row:?}");
        }
        Ok(())
    })
    .unwrap();
}

fn job_json(s: &TestServer, name: &str) -> Value {
    s.kubectl_json(&["get", "job", name, "-o", "json"])
}

fn failed_reason(s: &TestServer, name: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "job",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ])
}

fn events_of(s: &TestServer, kind_name: &str) -> String {
    let name = kind_name.split('/').nth(1).unwrap_or(kind_name);
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])
}

fn wait_event(s: &TestServer, kind_name: &str, reason: &str, message: &str) {
    eventually(WAIT, || {
        let out = events_of(s, kind_name);
        if !out
            .lines()
            .any(|l| l.contains(reason) && l.contains(message))
        {
            bail!("no {reason} event saying {message:?} in {out}");
        }
        Ok(())
    })
    .unwrap();
}

/// The Events section of `kubectl describe job NAME` as (type, reason, message) rows.
fn described_events(s: &TestServer, name: &str) -> Vec<(String, String, String)> {
    let out = s.kubectl_ok(&["describe", "job", name]);
    let section = out.split("Events:").nth(1).unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("  Normal") || l.starts_with("  Warning"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let from = cols
                .iter()
                .position(|c| *c == "job-controller")
                .unwrap_or(0);
            (
                cols[0].to_string(),
                cols[1].to_string(),
                cols[from + 1..].join(" "),
            )
        })
        .collect()
}

#[test]
fn job_runs_pods_one_at_a_time_and_completes() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(
        &s,
        &job_yaml("pi", "  completions: 3\n  parallelism: 1", 1, 0),
    );

    // Never more than one pod at a time while it runs.
    eventually(WAIT, || {
        let active = active_pods(&s, "pi");
        assert!(active.len() <= 1, "parallelism 1 but active {active:?}");
        let (status, done) = job_row(&s, "pi");
        if (status.as_str(), done.as_str()) != ("Complete", "3/3") {
            bail!("pi: {status} {done}");
        }
        Ok(())
    })
    .unwrap();

    let t = Table::parse(&s.kubectl_ok(&["get", "job", "pi"]));
    assert_eq!(
        t.headers,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    let duration = &t.column("DURATION")[0];
    let secs: u64 = duration
        .strip_suffix('s')
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("DURATION {duration:?}"));
    assert!(secs >= 3, "three 1 s pods in sequence took {duration}");

    let pods = job_pods(&s, "pi");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let mut pods_by_start = pods.clone();
    pods_by_start.sort_by_key(|p| ts(&p["metadata"]["creationTimestamp"]));
    for pair in pods_by_start.windows(2) {
        assert!(
            ts(&pair[1]["metadata"]["creationTimestamp"]) >= finished_at(&pair[0]),
            "{} started before {} finished",
            pod_name(&pair[1]),
            pod_name(&pair[0])
        );
    }
    for pod in &pods {
        let name = pod_name(pod);
        assert!(
            name.starts_with("pi-") && name.len() == "pi-".len() + 5,
            "{name}"
        );
        assert_eq!(pod_phase(pod), "Succeeded", "{name}");
        assert!(pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| n.starts_with("sim-")));
        let labels = &pod["metadata"]["labels"];
        for key in [
            "batch.kubernetes.io/controller-uid",
            "batch.kubernetes.io/job-name",
            "controller-uid",
            "job-name",
        ] {
            assert!(labels[key].is_string(), "{name}: {labels}");
        }
        // Counted pods lose the tracking finalizer.
        let finalizers = pod["metadata"]["finalizers"].to_string();
        assert!(!finalizers.contains("job-tracking"), "{name}: {finalizers}");
    }
    let out = s.kubectl_ok(&["get", "pods", "-l", "job-name=pi"]);
    let t = Table::parse(&out);
    assert_eq!(t.column("STATUS"), ["Completed"; 3], "{out}");

    let status = job_json(&s, "pi")["status"].clone();
    assert_eq!(status["succeeded"], 3, "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"], "{status}");

    wait_event(&s, "job/pi", "Completed", "Job completed");
    let events = described_events(&s, "pi");
    let created: Vec<&(String, String, String)> = events
        .iter()
        .filter(|(_, reason, _)| reason == "SuccessfulCreate")
        .collect();
    assert_eq!(created.len(), 3, "{events:?}");
    for pod in &pods {
        let message = format!("Created pod: {}", pod_name(pod));
        assert!(
            created
                .iter()
                .any(|(ty, _, m)| ty == "Normal" && *m == message),
            "{events:?}"
        );
    }
    assert!(
        events.contains(&("Normal".into(), "Completed".into(), "Job completed".into())),
        "{events:?}"
    );

    // Counts survive deleting the pods.
    s.kubectl_ok(&["delete", "pods", "-l", "job-name=pi"]);
    assert_eq!(
        job_row(&s, "pi"),
        ("Complete".to_string(), "3/3".to_string())
    );
}

#[test]
fn job_past_active_deadline_fails() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(&s, &job_yaml("slow", "  activeDeadlineSeconds: 2", 600, 0));
    wait_job_row(&s, "slow", "Failed", "0/1");
    assert_eq!(failed_reason(&s, "slow"), "DeadlineExceeded");
    // The running pod was stopped and removed.
    wait_no_pods(&s, "slow");
    wait_event(
        &s,
        "job/slow",
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    );
    let events = described_events(&s, "slow");
    assert!(
        events.iter().any(|(ty, reason, m)| ty == "Normal"
            && reason == "SuccessfulDelete"
            && m.starts_with("Deleted pod: slow-")),
        "{events:?}"
    );
    assert!(
        events.contains(&(
            "Warning".into(),
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        )),
        "{events:?}"
    );
}

#[test]
fn job_fails_after_backoff_limit_with_a_growing_delay() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(&s, &job_yaml("flaky", "  backoffLimit: 1", 1, 1));
    wait_job_row(&s, "flaky", "Failed", "0/1");
    assert_eq!(failed_reason(&s, "flaky"), "BackoffLimitExceeded");
    let failed = s.kubectl_ok(&["get", "job", "flaky", "-o", "jsonpath={.status.failed}"]);
    assert_eq!(failed, "2");
    assert!(active_pods(&s, "flaky").is_empty());

    let mut pods = job_pods(&s, "flaky");
    assert_eq!(pods.len(), 2, "{pods:?}");
    pods.sort_by_key(|p| ts(&p["metadata"]["creationTimestamp"]));
    for pod in &pods {
        assert_eq!(pod_phase(pod), "Failed", "{}", pod_name(pod));
    }
    // Upstream's pod failure back-off: the replacement of the first failure waits 10 s.
    let gap = ts(&pods[1]["metadata"]["creationTimestamp"]).as_second()
        - finished_at(&pods[0]).as_second();
    assert!(gap >= 9, "replacement created {gap}s after the failure");
    let out = s.kubectl_ok(&["get", "pods", "-l", "job-name=flaky"]);
    assert_eq!(Table::parse(&out).column("STATUS"), ["Error"; 2], "{out}");

    wait_event(
        &s,
        "job/flaky",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    let events = described_events(&s, "flaky");
    assert!(
        events.contains(&(
            "Warning".into(),
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        )),
        "{events:?}"
    );
}

#[test]
fn pod_failure_policy_fails_the_job_or_ignores_the_failure() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    let policy = |action: &str, code: u8| {
        format!(
            "  backoffLimit: 0\n  podFailurePolicy:\n    rules:\n    - action: {action}\n      onExitCodes:\n        containerName: main\n        operator: In\n        values: [{code}]"
        )
    };
    apply(&s, &job_yaml("fatal", &policy("FailJob", 42), 1, 42));
    apply(&s, &job_yaml("shrug", &policy("Ignore", 3), 1, 3));

    // FailJob: the first matching failure fails the whole Job, whatever the backoffLimit.
    wait_job_row(&s, "fatal", "Failed", "0/1");
    assert_eq!(failed_reason(&s, "fatal"), "PodFailurePolicy");
    let pod = pod_name(&job_pods(&s, "fatal")[0]);
    let message = s.kubectl_ok(&[
        "get",
        "job",
        "fatal",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].message}",
    ]);
    assert_eq!(
        message,
        format!("Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0")
    );

    // Ignore: the failure does not count against backoffLimit 0; a replacement runs.
    eventually(WAIT, || {
        let pods = job_pods(&s, "shrug");
        let failed = pods.iter().filter(|p| pod_phase(p) == "Failed").count();
        if failed < 2 {
            bail!("{failed} failed pods so far");
        }
        Ok(())
    })
    .unwrap();
    let job = job_json(&s, "shrug");
    assert!(
        job["status"]["failed"].as_i64().unwrap_or(0) == 0,
        "{}",
        job["status"]
    );
    assert_eq!(job_row(&s, "shrug").0, "Running");
}

#[test]
fn job_whose_pods_the_api_refuses_warns_and_others_still_run() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    // Job validation does not look at template finalizers; pod validation refuses this one.
    let bad = job_yaml("refused", "", 1, 0).replace(
        "    metadata:\n      annotations:",
        "    metadata:\n      finalizers: [\"not a finalizer\"]\n      annotations:",
    );
    apply(&s, &bad);
    apply(&s, &job_yaml("fine", "  completions: 2", 1, 0));
    wait_event(&s, "job/refused", "FailedCreate", "Error creating: ");
    let events = described_events(&s, "refused");
    let failed: Vec<_> = events
        .iter()
        .filter(|(_, reason, _)| reason == "FailedCreate")
        .collect();
    assert!(
        failed
            .iter()
            .all(|(ty, _, m)| ty == "Warning" && m.contains("metadata.finalizers[0]")),
        "{events:?}"
    );
    wait_job_row(&s, "fine", "Complete", "2/2");
    assert!(job_pods(&s, "refused").is_empty());
    assert_eq!(job_row(&s, "refused"), ("Running".into(), "0/1".into()));
}

#[test]
fn indexed_job_runs_each_index_once() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(
        &s,
        &job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
            3,
            0,
        ),
    );
    let pods = wait_active(&s, "idx", 3);
    let mut indexes = Vec::new();
    for pod in &pods {
        let index = s.kubectl_ok(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}",
        ]);
        assert!(
            pod.starts_with(&format!("idx-{index}-")),
            "{pod} has index {index}"
        );
        let hostname = s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.hostname}"]);
        assert_eq!(hostname, format!("idx-{index}"));
        indexes.push(index);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    wait_job_row(&s, "idx", "Complete", "3/3");
    let done = s.kubectl_ok(&[
        "get",
        "job",
        "idx",
        "-o",
        "jsonpath={.status.completedIndexes}",
    ]);
    assert_eq!(done, "0-2");
    assert_eq!(job_pods(&s, "idx").len(), 3, "each index ran once");
}

#[test]
fn suspended_job_stops_its_pods_and_resumes() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(
        &s,
        &job_yaml("sus", "  completions: 2\n  parallelism: 2", 600, 0),
    );
    wait_active(&s, "sus", 2);
    s.kubectl_ok(&[
        "patch",
        "job",
        "sus",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    wait_job_row(&s, "sus", "Suspended", "0/2");
    wait_no_pods(&s, "sus");
    wait_event(&s, "job/sus", "Suspended", "Job suspended");
    s.kubectl_ok(&[
        "patch",
        "job",
        "sus",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let pods = wait_active(&s, "sus", 2);
    wait_job_row(&s, "sus", "Running", "0/2");
    wait_event(&s, "job/sus", "Resumed", "Job resumed");
    eventually(WAIT, || {
        let running = job_pods(&s, "sus")
            .iter()
            .filter(|p| pods.contains(&pod_name(p)) && pod_phase(p) == "Running")
            .count();
        if running != 2 {
            bail!("{running} of the resumed pods running");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn finished_job_is_removed_after_its_ttl() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    apply(&s, &job_yaml("brief", "  ttlSecondsAfterFinished: 1", 1, 0));
    wait_job_row(&s, "brief", "Complete", "1/1");
    eventually(WAIT, || {
        let out = s.kubectl(&["get", "job", "brief"]);
        if out.status.success() {
            bail!("job still there");
        }
        Ok(())
    })
    .context("ttlSecondsAfterFinished")
    .unwrap();
    // Its pods go with it (background propagation).
    wait_no_pods(&s, "brief");
}

/// Jobs of cronjob `cj`, by name.
fn cronjob_jobs(s: &TestServer, cj: &str) -> Vec<String> {
    let out = s.kubectl_ok(&[
        "get",
        "jobs",
        "-o",
        &format!("jsonpath={{range .items[?(@.metadata.ownerReferences[0].name==\"{cj}\")]}}{{.metadata.name}}{{\"\\n\"}}{{end}}"),
    ]);
    out.lines().map(String::from).collect()
}

/// Wait for job `job` (whose one pod the simulated kubelet runs) to complete.
fn wait_complete(s: &TestServer, job: &str) {
    wait_job_row(s, job, "Complete", "1/1");
}

#[test]
fn cronjob_every_minute_makes_named_jobs_and_keeps_history() {
    let s = testkit::server!();
    let _nodes = testkit::simulated_nodes!(&s, 2);
    s.kubectl_ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/1 * * * *",
    ]);
    s.kubectl_ok(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        // Runs long enough that the CronJob lists it as active before it completes.
        r#"{"spec":{"successfulJobsHistoryLimit":1,"jobTemplate":{"spec":{"template":{"metadata":{"annotations":{"skiff.dev/simulate-run-seconds":"8"}}}}}}}"#,
    ]);
    let t = Table::parse(&s.kubectl_ok(&["get", "cronjob", "tick"]));
    assert_eq!(
        t.headers,
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    assert_eq!(
        t.rows[0][1..6],
        ["*/1 * * * *", "<none>", "False", "0", "<none>"]
    );

    // The client-side path: kubectl makes a Job owned by the CronJob; the Job controller runs it.
    s.kubectl_ok(&["create", "job", "--from=cronjob/tick", "tick-manual"]);
    wait_complete(&s, "tick-manual");

    // Scheduled runs: named <cronjob>-<minutes since the epoch>, annotated with the time.
    let first = eventually(Duration::from_secs(130), || {
        let jobs: Vec<String> = cronjob_jobs(&s, "tick")
            .into_iter()
            .filter(|j| j != "tick-manual")
            .collect();
        if jobs.is_empty() {
            bail!("no scheduled job yet");
        }
        Ok(jobs[0].clone())
    })
    .unwrap();
    let minutes: i64 = first
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let stamp = s.kubectl_ok(&[
        "get",
        "job",
        &first,
        "-o",
        "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    ]);
    let expected = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", minutes * 60),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("run date");
    assert_eq!(stamp, String::from_utf8_lossy(&expected.stdout).trim());
    wait_event(
        &s,
        "cronjob/tick",
        "SuccessfulCreate",
        &format!("Created job {first}"),
    );
    let active = s.kubectl_ok(&[
        "get",
        "cronjob",
        "tick",
        "-o",
        "jsonpath={.status.active[*].name}",
    ]);
    assert!(active.contains(&first), "{active}");
    wait_complete(&s, &first);
    wait_event(
        &s,
        "cronjob/tick",
        "SawCompletedJob",
        &format!("Saw completed job: {first}, condition: Complete"),
    );

    // The next run; once it completes, only one successful job is kept.
    let second = format!("tick-{}", minutes + 1);
    eventually(Duration::from_secs(130), || {
        if !cronjob_jobs(&s, "tick").contains(&second) {
            bail!("no {second} yet");
        }
        Ok(())
    })
    .unwrap();
    wait_complete(&s, &second);
    eventually(WAIT, || {
        let jobs = cronjob_jobs(&s, "tick");
        if jobs != [second.clone()] {
            bail!("jobs {jobs:?}");
        }
        Ok(())
    })
    .unwrap();
    wait_event(
        &s,
        "cronjob/tick",
        "SuccessfulDelete",
        &format!("Deleted job {first}"),
    );
    let last = s.kubectl_ok(&[
        "get",
        "cronjob",
        "tick",
        "-o",
        "jsonpath={.status.lastSuccessfulTime}",
    ]);
    assert!(!last.is_empty());
}
