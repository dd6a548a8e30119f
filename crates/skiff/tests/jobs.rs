//! Jobs, CronJobs, TTL-after-finished and the pod garbage collector, driven through the
//! real kubectl against a real server.
//!
//! There is no kubelet yet, so pods never run by themselves: [`kubelet_reports`] plays
//! the kubelet by patching a pod's status. Once simulated nodes land, replace its callers
//! with a simulated node that finishes pods.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use testkit::{eventually, Table, TestServer};

const WAIT: Duration = Duration::from_secs(60);

/// Stand-in for a kubelet: report `pod` in `phase` ("Running" makes it Ready too), with
/// `exit_code` on its container when it has terminated.
fn kubelet_reports(s: &TestServer, pod: &str, phase: &str, exit_code: Option<i32>) {
    let mut status = serde_json::json!({"phase": phase});
    if phase == "Running" {
        status["conditions"] = serde_json::json!([{"type": "Ready", "status": "True"}]);
    }
    if let Some(code) = exit_code {
        let reason = if code == 0 { "Completed" } else { "Error" };
        status["containerStatuses"] = serde_json::json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}
        }]);
    }
    let patch = serde_json::json!({ "status": status }).to_string();
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

fn job_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      # The test plays the kubelet for these pods; keep the default scheduler (there are
      # no nodes) from writing their status meanwhile.
      schedulerName: kubelet-stand-in
      containers:
      - name: main
        image: busybox
        command: ["true"]
"#
    )
}

/// Names of the pods of job `name` that are not being deleted and have not finished.
fn active_pods(s: &TestServer, job: &str) -> Vec<String> {
    let out = s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("job-name={job}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [name] => Some(name.to_string()),
                [name, phase] if *phase != "Succeeded" && *phase != "Failed" => {
                    Some(name.to_string())
                }
                _ => None,
            }
        })
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
        if !(out.contains(reason) && out.contains(message)) {
            bail!("no {reason} event in {out}");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn job_runs_pods_one_at_a_time_and_completes() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml("pi", "  completions: 3\n  parallelism: 1"),
    );
    let mut seen = Vec::new();
    for done in 1..=3 {
        let pods = wait_active(&s, "pi", 1);
        let pod = &pods[0];
        assert!(
            pod.starts_with("pi-") && pod.len() == "pi-".len() + 5,
            "{pod}"
        );
        assert!(!seen.contains(pod), "a finished pod came back: {pod}");
        let labels = s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.labels}"]);
        for key in [
            "batch.kubernetes.io/controller-uid",
            "batch.kubernetes.io/job-name",
            "controller-uid",
            "job-name",
        ] {
            assert!(labels.contains(key), "{labels}");
        }
        let finalizers =
            s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.finalizers}"]);
        assert!(
            finalizers.contains("batch.kubernetes.io/job-tracking"),
            "{finalizers}"
        );
        kubelet_reports(&s, pod, "Running", None);
        kubelet_reports(&s, pod, "Succeeded", Some(0));
        seen.push(pod.clone());
        if done < 3 {
            wait_job_row(&s, "pi", "Running", &format!("{done}/3"));
        }
    }
    wait_job_row(&s, "pi", "Complete", "3/3");
    let status: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "job", "pi", "-o", "json"])).unwrap();
    let status = &status["status"];
    assert_eq!(status["succeeded"], 3, "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"], "{status}");
    // Counted pods lose the tracking finalizer.
    for pod in &seen {
        let f = s.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.finalizers}"]);
        assert!(!f.contains("job-tracking"), "{pod}: {f}");
    }
    wait_event(
        &s,
        "job/pi",
        "SuccessfulCreate",
        &format!("Created pod: {}", seen[0]),
    );
    wait_event(&s, "job/pi", "Completed", "Job completed");
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
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml("slow", "  activeDeadlineSeconds: 2"),
    );
    let pods = wait_active(&s, "slow", 1);
    kubelet_reports(&s, &pods[0], "Running", None);
    wait_job_row(&s, "slow", "Failed", "0/1");
    let reason = s.kubectl_ok(&[
        "get",
        "job",
        "slow",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(reason, "DeadlineExceeded");
    wait_event(
        &s,
        "job/slow",
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    );
    // The running pod was stopped.
    wait_active(&s, "slow", 0);
}

#[test]
fn job_fails_after_backoff_limit() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml("flaky", "  backoffLimit: 1"),
    );
    let first = wait_active(&s, "flaky", 1);
    kubelet_reports(&s, &first[0], "Failed", Some(1));
    // One failure is within the limit: a replacement comes.
    let second = eventually(WAIT, || {
        let pods = active_pods(&s, "flaky");
        if pods.len() != 1 || pods[0] == first[0] {
            bail!("no replacement yet: {pods:?}");
        }
        Ok(pods)
    })
    .unwrap();
    kubelet_reports(&s, &second[0], "Failed", Some(1));
    wait_job_row(&s, "flaky", "Failed", "0/1");
    let failed = s.kubectl_ok(&["get", "job", "flaky", "-o", "jsonpath={.status.failed}"]);
    assert_eq!(failed, "2");
    wait_event(
        &s,
        "job/flaky",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    assert!(active_pods(&s, "flaky").is_empty());
}

#[test]
fn indexed_job_runs_each_index_once() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
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
    // Index 1 finishes first.
    let one = pods.iter().find(|p| p.starts_with("idx-1-")).unwrap();
    kubelet_reports(&s, one, "Succeeded", Some(0));
    eventually(WAIT, || {
        let done = s.kubectl_ok(&[
            "get",
            "job",
            "idx",
            "-o",
            "jsonpath={.status.completedIndexes}",
        ]);
        if done != "1" {
            bail!("completedIndexes {done:?}");
        }
        Ok(())
    })
    .unwrap();
    for pod in pods.iter().filter(|p| *p != one) {
        kubelet_reports(&s, pod, "Succeeded", Some(0));
    }
    wait_job_row(&s, "idx", "Complete", "3/3");
    let done = s.kubectl_ok(&[
        "get",
        "job",
        "idx",
        "-o",
        "jsonpath={.status.completedIndexes}",
    ]);
    assert_eq!(done, "0-2");
}

#[test]
fn suspended_job_stops_its_pods_and_resumes() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml("sus", "  completions: 2\n  parallelism: 2"),
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
    wait_active(&s, "sus", 0);
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
    for pod in &pods {
        kubelet_reports(&s, pod, "Succeeded", Some(0));
    }
    wait_job_row(&s, "sus", "Complete", "2/2");
}

#[test]
fn finished_job_is_removed_after_its_ttl() {
    let s = testkit::server!();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job_yaml("brief", "  ttlSecondsAfterFinished: 1"),
    );
    let pods = wait_active(&s, "brief", 1);
    kubelet_reports(&s, &pods[0], "Succeeded", Some(0));
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

/// Finish the one pod of job `job` successfully and wait for the Job to complete.
fn complete_job(s: &TestServer, job: &str) {
    let pods = wait_active(s, job, 1);
    kubelet_reports(s, &pods[0], "Succeeded", Some(0));
    wait_job_row(s, job, "Complete", "1/1");
}

#[test]
fn cronjob_every_minute_makes_named_jobs_and_keeps_history() {
    let s = testkit::server!();
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
        r#"{"spec":{"successfulJobsHistoryLimit":1}}"#,
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
    complete_job(&s, "tick-manual");

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
    complete_job(&s, &first);
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
    complete_job(&s, &second);
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
