//! Tables of Job syncs: given a Job and its pods, what the controller decides.

use super::*;
use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn job(spec: JobSpec, status: JobStatus) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("job-uid".into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(status),
    }
}

fn spec(completions: Option<i32>, parallelism: i32) -> JobSpec {
    JobSpec {
        completions,
        parallelism: Some(parallelism),
        ..Default::default()
    }
}

/// A pod in `phase`; `tracked` = still has the tracking finalizer.
fn pod(name: &str, phase: &str, tracked: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            finalizers: tracked.then(|| vec![TRACKING_FINALIZER.to_string()]),
            creation_timestamp: Some(Time(ts(0))),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

fn indexed_pod(name: &str, index: i32, phase: &str, tracked: bool) -> Pod {
    let mut p = pod(name, phase, tracked);
    p.metadata.annotations = Some([(COMPLETION_INDEX.to_string(), index.to_string())].into());
    p
}

fn deleting(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(ts(0)));
    p
}

fn with_exit_code(mut p: Pod, code: i32) -> Pod {
    let status = p.status.get_or_insert_with(Default::default);
    status.container_statuses = Some(vec![ContainerStatus {
        name: "main".into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    p
}

fn started() -> JobStatus {
    JobStatus {
        start_time: Some(Time(ts(0))),
        ..Default::default()
    }
}

fn cond(status: &JobStatus, ty: &str) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == ty)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn uncounted(succeeded: &[&str], failed: &[&str]) -> Option<UncountedTerminatedPods> {
    Some(UncountedTerminatedPods {
        succeeded: Some(succeeded.iter().map(|s| s.to_string()).collect()),
        failed: Some(failed.iter().map(|s| s.to_string()).collect()),
    })
}

fn run(j: &Job, pods: &[Pod], now: i64) -> Plan {
    let refs: Vec<&Pod> = pods.iter().collect();
    decide(j, &refs, &Backoff::default(), ts(now))
}

#[test]
fn pod_creation_follows_completions_and_parallelism() {
    // (completions, parallelism, pods, expected creations)
    let cases: Vec<(Option<i32>, i32, Vec<Pod>, usize)> = vec![
        (Some(3), 1, vec![], 1),
        (Some(3), 1, vec![pod("a", "Running", true)], 0),
        (Some(3), 2, vec![], 2),
        (Some(3), 5, vec![], 3),
        (None, 1, vec![], 1),
        (None, 4, vec![], 4),
        (Some(3), 1, vec![pod("a", "Pending", true)], 0),
        (Some(0), 1, vec![], 0),
        (Some(3), 0, vec![], 0),
    ];
    for (completions, parallelism, pods, want) in cases {
        let j = job(spec(completions, parallelism), started());
        let plan = run(&j, &pods, 1);
        assert_eq!(
            plan.create.len(),
            want,
            "{completions:?} {parallelism} {pods:?}"
        );
        assert!(plan.create.iter().all(Option::is_none));
    }
}

#[test]
fn a_new_job_gets_a_start_time() {
    let j = job(spec(Some(1), 1), JobStatus::default());
    let plan = run(&j, &[], 5);
    let status = plan.status.expect("status written");
    assert_eq!(status.start_time, Some(Time(ts(5))));
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn finished_pods_are_counted_in_two_steps() {
    let j = job(spec(Some(3), 1), started());
    // Step 1: the succeeded pod is recorded as uncounted and its finalizer removed.
    let pods = vec![pod("a", "Succeeded", true)];
    let plan = run(&j, &pods, 1);
    let status = plan.status.clone().expect("status");
    assert_eq!(status.uncounted_terminated_pods, uncounted(&["uid-a"], &[]));
    assert_eq!(status.succeeded, Some(0));
    assert_eq!(plan.remove_finalizers, vec!["a".to_string()]);
    // The replacement is made at once: the uncounted success already counts.
    assert_eq!(plan.create.len(), 1);

    // Step 2: the finalizer is gone, so the pod moves into `succeeded`.
    let j2 = job(spec(Some(3), 1), status);
    let pods = vec![pod("a", "Succeeded", false), pod("b", "Running", true)];
    let plan = run(&j2, &pods, 2);
    let status = plan.status.expect("status");
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.uncounted_terminated_pods, uncounted(&[], &[]));
    assert_eq!(status.active, Some(1));
    assert!(plan.remove_finalizers.is_empty());
    assert!(plan.create.is_empty());

    // A counted pod that is deleted later stays counted.
    let j3 = job(spec(Some(3), 1), status);
    let plan = run(&j3, &[pod("b", "Running", true)], 3);
    assert!(plan.status.is_none(), "{:?}", plan.status);
}

#[test]
fn completion_goes_through_success_criteria_met() {
    let mut status = started();
    status.succeeded = Some(2);
    status.uncounted_terminated_pods = uncounted(&["uid-c"], &[]);
    let j = job(spec(Some(3), 1), status);
    // The last pod's finalizer is gone: count it, mark SuccessCriteriaMet.
    let plan = run(&j, &[pod("c", "Succeeded", false)], 10);
    let status = plan.status.expect("status");
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(
        cond(&status, "SuccessCriteriaMet"),
        Some((
            "True".into(),
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into()
        ))
    );
    assert_eq!(cond(&status, "Complete"), None);
    assert!(plan.create.is_empty());

    // Next sync: nothing runs, so Complete with a completion time and an event.
    let j = job(spec(Some(3), 1), status);
    let plan = run(&j, &[pod("c", "Succeeded", false)], 11);
    let status = plan.status.expect("status");
    assert_eq!(cond(&status, "Complete").map(|c| c.0), Some("True".into()));
    assert_eq!(status.completion_time, Some(Time(ts(11))));
    assert_eq!(plan.events[0].reason, "Completed");
    assert_eq!(plan.events[0].message, "Job completed");
    assert!(is_finished(&job(spec(Some(3), 1), status.clone())));

    // And then nothing more happens.
    let j = job(spec(Some(3), 1), status);
    let plan = run(&j, &[], 100);
    assert_eq!(plan, Plan::default());
}

#[test]
fn failures_past_the_backoff_limit_fail_the_job() {
    // (backoffLimit, already failed, newly failed pods, fails?)
    let cases = [
        (Some(0), 0, 1, true),
        (Some(1), 1, 0, false),
        (Some(1), 1, 1, true),
        (None, 6, 0, false),
        (None, 6, 1, true),
    ];
    for (limit, already, new, fails) in cases {
        let mut s = spec(Some(1), 1);
        s.backoff_limit = limit;
        let mut status = started();
        status.failed = Some(already);
        let pods: Vec<Pod> = (0..new)
            .map(|i| pod(&format!("f{i}"), "Failed", true))
            .collect();
        let j = job(s.clone(), status);
        let plan = run(&j, &pods, 1);
        let status = plan
            .status
            .clone()
            .unwrap_or_else(|| j.status.clone().unwrap());
        let target = cond(&status, "FailureTarget");
        if fails {
            assert_eq!(
                target,
                Some((
                    "True".into(),
                    REASON_BACKOFF_LIMIT.into(),
                    MESSAGE_BACKOFF_LIMIT.into()
                )),
                "{limit:?} {already} {new}"
            );
            assert!(plan.create.is_empty());
        } else {
            assert_eq!(target, None, "{limit:?} {already} {new}");
            assert_eq!(plan.create.len(), 1);
        }
    }
}

#[test]
fn failure_target_becomes_failed_once_pods_are_gone() {
    let mut s = spec(Some(2), 2);
    s.backoff_limit = Some(0);
    let j = job(s.clone(), started());
    let pods = vec![pod("a", "Failed", true), pod("b", "Running", true)];
    let plan = run(&j, &pods, 1);
    assert_eq!(plan.delete, vec!["b".to_string()]);
    let status = plan.status.expect("status");
    assert_eq!(cond(&status, "Failed"), None);

    // b is now terminating: counted as failed, not final yet.
    let j = job(s.clone(), status);
    let pods = vec![
        pod("a", "Failed", false),
        deleting(pod("b", "Running", true)),
    ];
    let plan = run(&j, &pods, 2);
    let status = plan.status.expect("status");
    assert_eq!(status.terminating, Some(1));
    assert_eq!(plan.remove_finalizers, vec!["b".to_string()]);
    assert_eq!(cond(&status, "Failed"), None);

    let j = job(s, status);
    let plan = run(&j, &[pod("a", "Failed", false)], 3);
    let status = plan.status.expect("status");
    assert_eq!(status.failed, Some(2));
    assert_eq!(
        cond(&status, "Failed"),
        Some((
            "True".into(),
            REASON_BACKOFF_LIMIT.into(),
            MESSAGE_BACKOFF_LIMIT.into()
        ))
    );
    assert_eq!(status.completion_time, None);
    assert_eq!(
        plan.events,
        vec![JobEvent {
            warning: true,
            reason: REASON_BACKOFF_LIMIT.into(),
            message: MESSAGE_BACKOFF_LIMIT.into()
        }]
    );
}

#[test]
fn active_deadline() {
    // (deadline, now since start, past?)
    for (deadline, now, past) in [
        (10, 9, false),
        (10, 10, true),
        (10, 500, true),
        (1, 0, false),
    ] {
        let mut s = spec(Some(1), 1);
        s.active_deadline_seconds = Some(deadline);
        let j = job(s, started());
        let plan = run(&j, &[pod("a", "Running", true)], now);
        if past {
            let status = plan.status.expect("status");
            assert_eq!(
                cond(&status, "FailureTarget"),
                Some((
                    "True".into(),
                    REASON_DEADLINE.into(),
                    MESSAGE_DEADLINE.into()
                ))
            );
            assert_eq!(plan.delete, vec!["a".to_string()]);
            assert_eq!(plan.requeue_after, None);
        } else {
            assert!(plan.delete.is_empty());
            assert_eq!(
                plan.requeue_after,
                Some(Duration::from_secs((deadline - now) as u64))
            );
        }
    }
}

#[test]
fn suspend_and_resume() {
    let mut s = spec(Some(2), 2);
    s.suspend = Some(true);
    let j = job(s.clone(), started());
    let plan = run(
        &j,
        &[pod("a", "Running", true), pod("b", "Pending", true)],
        5,
    );
    assert_eq!(plan.delete, vec!["a".to_string(), "b".to_string()]);
    assert!(plan.create.is_empty());
    let status = plan.status.expect("status");
    assert_eq!(
        cond(&status, "Suspended"),
        Some(("True".into(), "JobSuspended".into(), "Job suspended".into()))
    );
    assert_eq!(plan.events[0].reason, "Suspended");
    assert_eq!(status.active, Some(0));

    // Suspended with no pods: nothing to do, and no pods are made.
    let j = job(s.clone(), status.clone());
    let plan = run(&j, &[], 6);
    assert!(plan.create.is_empty() && plan.events.is_empty());

    // Resume: condition False, start time reset, pods made again.
    s.suspend = Some(false);
    let j = job(s, status);
    let plan = run(&j, &[], 50);
    let status = plan.status.expect("status");
    assert_eq!(
        cond(&status, "Suspended"),
        Some(("False".into(), "JobResumed".into(), "Job resumed".into()))
    );
    assert_eq!(status.start_time, Some(Time(ts(50))));
    assert_eq!(plan.create.len(), 2);
    assert_eq!(plan.events[0].reason, "Resumed");
}

#[test]
fn a_job_created_suspended_gets_no_start_time() {
    let mut s = spec(Some(1), 1);
    s.suspend = Some(true);
    let j = job(s, JobStatus::default());
    let plan = run(&j, &[], 1);
    assert_eq!(plan.status.expect("status").start_time, None);
    assert!(plan.create.is_empty());
}

#[test]
fn indexed_jobs_create_missing_indexes_and_track_completed_ones() {
    let mut s = spec(Some(4), 2);
    s.completion_mode = Some("Indexed".into());
    // (pods, completedIndexes before, wanted creations, completedIndexes after)
    let cases: Vec<(Vec<Pod>, &str, Vec<i32>, &str)> = vec![
        (vec![], "", vec![0, 1], ""),
        (vec![indexed_pod("p0", 0, "Running", true)], "", vec![1], ""),
        (
            vec![indexed_pod("p0", 0, "Succeeded", true)],
            "",
            vec![1, 2],
            "0",
        ),
        (
            vec![indexed_pod("p2", 2, "Running", true)],
            "0-1",
            vec![3],
            "0-1",
        ),
        (
            vec![indexed_pod("p3", 3, "Succeeded", true)],
            "0-1",
            vec![2],
            "0-1,3",
        ),
    ];
    for (pods, before, want, after) in cases {
        let mut status = started();
        status.completed_indexes = Some(before.into());
        status.succeeded = Some(parse_indexes(before).len() as i32);
        let j = job(s.clone(), status);
        let plan = run(&j, &pods, 1);
        let want: Vec<Option<i32>> = want.into_iter().map(Some).collect();
        assert_eq!(plan.create, want, "{before}");
        let status = plan.status.unwrap_or_else(|| j.status.clone().unwrap());
        assert_eq!(status.completed_indexes.as_deref(), Some(after), "{before}");
        assert_eq!(status.succeeded, Some(parse_indexes(after).len() as i32));
    }
}

#[test]
fn indexed_duplicates_are_deleted() {
    let mut s = spec(Some(2), 2);
    s.completion_mode = Some("Indexed".into());
    let mut newer = indexed_pod("dup", 0, "Running", true);
    newer.metadata.creation_timestamp = Some(Time(ts(5)));
    let pods = vec![
        indexed_pod("p0", 0, "Running", true),
        newer,
        indexed_pod("p1", 1, "Running", true),
    ];
    let plan = run(&job(s, started()), &pods, 6);
    assert_eq!(plan.delete, vec!["dup".to_string()]);
    assert!(plan.create.is_empty());
}

#[test]
fn index_sets_format_like_upstream() {
    for (text, n) in [("", 0), ("0", 1), ("0-2", 3), ("1,3-5,7", 5)] {
        let set = parse_indexes(text);
        assert_eq!(set.len(), n);
        assert_eq!(format_indexes(&set), text);
    }
    assert_eq!(format_indexes(&[0, 1, 3].into_iter().collect()), "0-1,3");
}

#[test]
fn pod_failure_policy_rules() {
    let rule = |action: &str, op: &str, values: Vec<i32>| PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: op.into(),
            values,
        }),
        on_pod_conditions: None,
    };
    let disruption = PodFailurePolicyRule {
        action: "Ignore".into(),
        on_exit_codes: None,
        on_pod_conditions: Some(vec![
            k8s_openapi::api::batch::v1::PodFailurePolicyOnPodConditionsPattern {
                type_: "DisruptionTarget".into(),
                status: None,
            },
        ]),
    };
    let rules = vec![
        rule("FailJob", "In", vec![42]),
        disruption,
        rule("Ignore", "NotIn", vec![1, 2]),
    ];
    let mut s = spec(Some(1), 1);
    s.pod_failure_policy = Some(PodFailurePolicy { rules });
    s.backoff_limit = Some(3);
    let disrupted = {
        let mut p = with_exit_code(pod("d", "Failed", true), 1);
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        }]);
        p
    };
    // (pod, FailJob message?, counted as failed?)
    let cases: Vec<(Pod, Option<&str>, bool)> = vec![
        (with_exit_code(pod("a", "Failed", true), 42), Some("Container main for pod default/a failed with exit code 42 matching FailJob rule at index 0"), true),
        (with_exit_code(pod("b", "Failed", true), 1), None, true),
        (with_exit_code(pod("c", "Failed", true), 7), None, false),
        (disrupted, None, false),
    ];
    for (p, fail_message, counted) in cases {
        let j = job(s.clone(), started());
        let plan = run(&j, &[p.clone()], 1);
        let status = plan
            .status
            .clone()
            .unwrap_or_else(|| j.status.clone().unwrap());
        let target = cond(&status, "FailureTarget");
        assert_eq!(
            target.map(|t| t.2),
            fail_message.map(String::from),
            "{:?}",
            p.metadata.name
        );
        let unc = status
            .uncounted_terminated_pods
            .and_then(|u| u.failed)
            .unwrap_or_default();
        assert_eq!(!unc.is_empty(), counted, "{:?}", p.metadata.name);
        assert_eq!(
            plan.remove_finalizers,
            vec![p.metadata.name.clone().unwrap()]
        );
    }
}

#[test]
fn status_counts_ready_and_terminating() {
    let mut ready = pod("r", "Running", true);
    ready.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    }]);
    let pods = vec![
        ready,
        pod("n", "Running", true),
        deleting(pod("t", "Running", false)),
    ];
    let plan = run(&job(spec(Some(5), 3), started()), &pods, 1);
    let status = plan.status.expect("status");
    assert_eq!(
        (status.active, status.ready, status.terminating),
        (Some(2), Some(1), Some(1))
    );
    // The terminating pod does not hold back a replacement (podReplacementPolicy default).
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn finish_time_reads_the_final_condition() {
    let mut status = started();
    status.conditions = Some(vec![condition("Failed", "True", "x", "y", ts(42))]);
    assert_eq!(finish_time(&job(spec(Some(1), 1), status)), Some(ts(42)));
    assert_eq!(finish_time(&job(spec(Some(1), 1), started())), None);
}

#[test]
fn failure_backoff_doubles_from_ten_seconds_up_to_ten_minutes() {
    // (failures since the last success, seconds since the last failure, seconds to wait)
    let cases = [
        (0, 0, 0),
        (1, 0, 10),
        (1, 4, 6),
        (1, 10, 0),
        (1, 30, 0),
        (2, 0, 20),
        (3, 5, 35),
        (6, 0, 320),
        (7, 0, 600),
        (20, 0, 600),
        (20, 700, 0),
    ];
    for (failures, elapsed, wait) in cases {
        let b = Backoff {
            failures_after_last_success: failures,
            last_failure: Some(ts(0)),
            ..Default::default()
        };
        assert_eq!(
            b.remaining(ts(elapsed)),
            Duration::from_secs(wait),
            "{failures} failures, {elapsed}s ago"
        );
    }
}

#[test]
fn failure_backoff_record_resets_on_success() {
    let one = Backoff {
        failures_after_last_success: 1,
        last_failure: Some(ts(5)),
        ..Default::default()
    };
    // (record, new successes, new failures, expected count, expected last failure)
    let cases = [
        (Backoff::default(), vec![], vec![], 0, None),
        (
            Backoff::default(),
            vec![],
            vec![ts(3), ts(1)],
            2,
            Some(ts(3)),
        ),
        (one.clone(), vec![], vec![ts(9)], 2, Some(ts(9))),
        (one.clone(), vec![ts(8)], vec![], 0, None),
        // Only failures after the latest success count.
        (
            one.clone(),
            vec![ts(8)],
            vec![ts(7), ts(9), ts(12)],
            2,
            Some(ts(12)),
        ),
    ];
    for (record, succeeded, failed, count, last) in cases {
        let next = record.record(&succeeded, &failed);
        assert_eq!(
            (next.failures_after_last_success, next.last_failure),
            (count, last),
            "{record:?} {succeeded:?} {failed:?}"
        );
    }
}

#[test]
fn replacements_wait_out_the_failure_backoff() {
    let mut s = spec(Some(1), 1);
    s.backoff_limit = Some(6);
    let j = job(s, started());
    let mut failed = pod("f", "Failed", true);
    failed.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "Ready".into(),
        status: "False".into(),
        last_transition_time: Some(Time(ts(100))),
        ..Default::default()
    }]);
    // First sight of the failure at t=103: no replacement until t=110.
    let refs = [&failed];
    let plan = decide(&j, &refs, &Backoff::default(), ts(103));
    assert!(plan.create.is_empty(), "{plan:?}");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(7)));
    assert_eq!(plan.backoff.failures_after_last_success, 1);
    assert_eq!(plan.backoff.last_failure, Some(ts(100)));
    // Once counted (finalizer gone, uid recorded), the record decides.
    let j2 = job(j.spec.clone().unwrap(), plan.status.clone().unwrap());
    let mut counted = failed.clone();
    counted.metadata.finalizers = None;
    let refs = [&counted];
    for (now, creates) in [(108, 0), (110, 1), (200, 1)] {
        let plan = decide(&j2, &refs, &plan.backoff, ts(now));
        assert_eq!(plan.create.len(), creates, "at {now}");
    }
}

#[test]
fn ignored_failures_delay_the_replacement_once() {
    let mut s = spec(Some(1), 1);
    s.backoff_limit = Some(0);
    s.pod_failure_policy = Some(PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: "Ignore".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: None,
                operator: "In".into(),
                values: vec![3],
            }),
            on_pod_conditions: None,
        }],
    });
    let j = job(s, started());
    let ignored = with_exit_code(pod("i", "Failed", true), 3);
    let refs = [&ignored];
    let first = decide(&j, &refs, &Backoff::default(), ts(1));
    assert_eq!(first.backoff.failures_after_last_success, 1);
    assert_eq!(
        first.status.as_ref().and_then(|s| s.failed).unwrap_or(0),
        0,
        "ignored, not counted"
    );
    assert!(first.create.is_empty(), "the replacement waits 10 s");
    // Seen again before its finalizer removal shows: not counted twice.
    let again = decide(&j, &refs, &first.backoff, ts(2));
    assert_eq!(again.backoff.failures_after_last_success, 1);
}
