//! Tables of CronJob syncs.

use super::*;
use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus};

const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

fn cronjob(schedule: &str, f: impl FnOnce(&mut CronJobSpec)) -> CronJob {
    let mut spec = CronJobSpec {
        schedule: schedule.into(),
        successful_jobs_history_limit: Some(3),
        failed_jobs_history_limit: Some(1),
        ..Default::default()
    };
    f(&mut spec);
    CronJob {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("default".into()),
            uid: Some("cj-uid".into()),
            creation_timestamp: Some(ts(T0)),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn job(name: &str, start: i64, finished: Option<&str>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: None,
        status: Some(JobStatus {
            start_time: Some(ts(start)),
            completion_time: (finished == Some("Complete")).then(|| ts(start + 5)),
            conditions: finished.map(|c| {
                vec![JobCondition {
                    type_: c.into(),
                    status: "True".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

fn with_active(mut cj: CronJob, jobs: &[&Job], last: i64) -> CronJob {
    cj.status = Some(CronJobStatus {
        active: Some(jobs.iter().map(|j| job_reference(j)).collect()),
        last_schedule_time: Some(ts(last)),
        last_successful_time: None,
    });
    cj
}

fn run(cj: &CronJob, jobs: &[&Job], now: i64) -> Plan {
    let schedule = Schedule::parse(&cj.spec.schedule).unwrap();
    decide(cj, jobs, &schedule, &Zone::utc(), now)
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn runs_are_created_with_upstream_names_when_due() {
    // (schedule, now, expected job name or none, requeue seconds)
    let cases = [
        ("*/1 * * * *", T0 + 30, None, 30),
        ("*/1 * * * *", T0 + 60, Some("hello-28401121"), 60),
        ("*/1 * * * *", T0 + 90, Some("hello-28401121"), 30),
        ("0 * * * *", T0 + 59 * 60, None, 60),
        (
            "0 * * * *",
            T0 + 3600 * 5 + 10,
            Some("hello-28401420"),
            3590,
        ),
    ];
    for (schedule, now, want, requeue) in cases {
        let cj = cronjob(schedule, |_| {});
        let plan = run(&cj, &[], now);
        assert_eq!(
            plan.create
                .as_ref()
                .and_then(|j| j.metadata.name.clone())
                .as_deref(),
            want,
            "{schedule} {now}"
        );
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_millis(requeue * 1000 + 100)),
            "{schedule} {now}"
        );
        if let Some(job) = &plan.create {
            let scheduled = (now / 60) * 60;
            let scheduled = if schedule.starts_with("0 ") {
                (now / 3600) * 3600
            } else {
                scheduled
            };
            assert_eq!(
                job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
                Zone::utc().rfc3339(scheduled)
            );
            assert_eq!(
                plan.status.as_ref().unwrap().last_schedule_time,
                Some(ts(scheduled))
            );
            let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("CronJob", Some(true))
            );
            assert_eq!(reasons(&plan), Vec::<&str>::new());
        }
    }
}

#[test]
fn a_handled_run_is_not_created_twice() {
    let j = job("hello-28401121", T0 + 60, None);
    let cj = with_active(cronjob("*/1 * * * *", |_| {}), &[&j], T0 + 60);
    let plan = run(&cj, &[&j], T0 + 100);
    assert_eq!(plan.create, None);
    assert_eq!(plan.status, None);
}

#[test]
fn concurrency_policies() {
    let running = job("hello-28401121", T0 + 60, None);
    // (policy, created?, deleted, events)
    let cases = [
        ("Allow", true, vec![], vec![]),
        ("Forbid", false, vec![], vec!["JobAlreadyActive"]),
        (
            "Replace",
            true,
            vec!["hello-28401121"],
            vec!["SuccessfulDelete"],
        ),
    ];
    for (policy, created, deleted, events) in cases {
        let cj = with_active(
            cronjob("*/1 * * * *", |s| {
                s.concurrency_policy = Some(policy.into())
            }),
            &[&running],
            T0 + 60,
        );
        let plan = run(&cj, &[&running], T0 + 125);
        assert_eq!(plan.create.is_some(), created, "{policy}");
        assert_eq!(plan.delete, deleted, "{policy}");
        assert_eq!(reasons(&plan), events, "{policy}");
        if created {
            assert_eq!(
                plan.create.unwrap().metadata.name.as_deref(),
                Some("hello-28401122")
            );
        }
    }
}

#[test]
fn finished_jobs_leave_active_and_set_last_successful_time() {
    let done = job("hello-28401121", T0 + 60, Some("Complete"));
    let cj = with_active(cronjob("*/1 * * * *", |_| {}), &[&done], T0 + 60);
    let plan = run(&cj, &[&done], T0 + 70);
    assert_eq!(reasons(&plan), ["SawCompletedJob"]);
    assert_eq!(
        plan.events[0].message,
        "Saw completed job: hello-28401121, condition: Complete"
    );
    let status = plan.status.unwrap();
    assert_eq!(status.active, None);
    assert_eq!(status.last_successful_time, Some(ts(T0 + 65)));
}

#[test]
fn unknown_and_missing_jobs_are_reported() {
    let manual = job("hello-manual-x", T0, None);
    let gone = job("hello-28401121", T0 + 60, None);
    let cj = with_active(cronjob("*/1 * * * *", |_| {}), &[&gone], T0 + 60);
    let plan = run(&cj, &[&manual], T0 + 70);
    assert_eq!(reasons(&plan), ["UnexpectedJob", "MissingJob"]);
    assert_eq!(plan.status.unwrap().active, None);
}

#[test]
fn history_limits_delete_the_oldest() {
    // (succeeded starts, failed starts, limits, expected deletions)
    let ok = |n: i64| job(&format!("ok-{n}"), T0 + n, Some("Complete"));
    let bad = |n: i64| job(&format!("bad-{n}"), T0 + n, Some("Failed"));
    let cases: Vec<(Vec<Job>, (Option<i32>, Option<i32>), Vec<&str>)> = vec![
        (vec![ok(1), ok(2), ok(3)], (Some(3), Some(1)), vec![]),
        (
            vec![ok(4), ok(1), ok(3), ok(2)],
            (Some(3), Some(1)),
            vec!["ok-1"],
        ),
        (
            vec![ok(1), ok(2), bad(3), bad(4), bad(5)],
            (Some(1), Some(1)),
            vec!["ok-1", "bad-3", "bad-4"],
        ),
        (vec![ok(1), ok(2)], (Some(0), None), vec!["ok-1", "ok-2"]),
        (
            vec![ok(1), job("running", T0, None)],
            (Some(0), Some(0)),
            vec!["ok-1"],
        ),
    ];
    for (jobs, (s, f), want) in cases {
        let cj = cronjob("0 0 1 1 *", |spec| {
            spec.successful_jobs_history_limit = s;
            spec.failed_jobs_history_limit = f;
        });
        let refs: Vec<&Job> = jobs.iter().collect();
        let plan = run(&cj, &refs, T0 + 100);
        assert_eq!(plan.delete, want);
        assert!(plan
            .events
            .iter()
            .filter(|e| e.reason == "SuccessfulDelete")
            .all(|e| e.message.starts_with("Deleted job ")));
    }
}

#[test]
fn starting_deadline_and_missed_runs() {
    // Last run at T0+60; now is 10 minutes later.
    let now = T0 + 60 + 600;
    // Within the deadline: the latest missed run starts.
    let cj = with_active(
        cronjob("*/1 * * * *", |s| s.starting_deadline_seconds = Some(30)),
        &[],
        T0 + 60,
    );
    let plan = run(&cj, &[], now);
    assert_eq!(
        plan.create.unwrap().metadata.name.as_deref(),
        Some("hello-28401131")
    );
    // Deadline shorter than the time since the latest run: missed.
    let cj = with_active(
        cronjob("*/10 * * * *", |s| s.starting_deadline_seconds = Some(30)),
        &[],
        T0,
    );
    let plan = run(&cj, &[], T0 + 600 + 45);
    assert_eq!(plan.create, None);
    assert_eq!(
        reasons(&plan),
        Vec::<&str>::new(),
        "no run inside the deadline window"
    );
    let cj = with_active(
        cronjob("*/10 * * * *", |s| s.starting_deadline_seconds = Some(60)),
        &[],
        T0,
    );
    let plan = run(&cj, &[], T0 + 600 + 45);
    assert!(plan.create.is_some());
    // Without a deadline, more than 100 missed runs are reported but the latest still runs.
    let cj = with_active(cronjob("*/1 * * * *", |_| {}), &[], T0);
    let plan = run(&cj, &[], T0 + 200 * 60 + 5);
    assert_eq!(reasons(&plan), ["TooManyMissedTimes"]);
    assert_eq!(
        plan.create.unwrap().metadata.name.as_deref(),
        Some(job_name("hello", T0 + 200 * 60).as_str())
    );
}

#[test]
fn miss_schedule_when_too_late() {
    // Scheduled at T0+60, deadline 10 s, seen at T0+75: too late, MissSchedule.
    let cj = with_active(
        cronjob("*/1 * * * *", |s| s.starting_deadline_seconds = Some(10)),
        &[],
        T0,
    );
    let plan = decide(
        &cj,
        &[],
        &Schedule::parse("*/1 * * * *").unwrap(),
        &Zone::utc(),
        T0 + 75,
    );
    // earliest = now - 10 = T0+65 > T0+60, so the run is not even considered.
    assert_eq!(plan.create, None);
    let s = Schedule::parse("*/1 * * * *").unwrap();
    assert_eq!(
        most_recent_schedule(T0, T0 + 75, &s, &Zone::utc()),
        (Some(T0 + 60), 1)
    );
    assert_eq!(rfc1123z(T0 + 60), "Mon, 01 Jan 2024 00:01:00 +0000");
}

#[test]
fn suspended_cronjobs_do_not_run() {
    let cj = cronjob("*/1 * * * *", |s| s.suspend = Some(true));
    let plan = run(&cj, &[], T0 + 600);
    assert_eq!(plan.create, None);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn most_recent_schedule_table() {
    let s = Schedule::parse("0 9 * * 1-5").unwrap();
    // (earliest, now, expected most recent, missed)
    let cases = [
        (T0, T0 + 3600, None, 0),
        (T0, T0 + 9 * 3600, Some(T0 + 9 * 3600), 1),
        (T0, T0 + 86_400 * 7, Some(T0 + 86_400 * 4 + 9 * 3600), 5),
    ];
    for (earliest, now, want, missed) in cases {
        let (recent, n) = most_recent_schedule(earliest, now, &s, &Zone::utc());
        assert_eq!(recent, want, "{now}");
        if want.is_some() {
            assert!(n >= 1 && (missed == 1) == (n == 1), "{n}");
        }
    }
}
