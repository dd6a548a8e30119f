//! The pod worker's decisions, without I/O: from the pod as the API has it, what runs for it
//! on disk ([`Observed`]), the transient reasons the worker is waiting on (a failed pull, a
//! missing ConfigMap) and the time, what to do next and the status upstream's kubelet would
//! report.
//!
//! The rules are kubelet's: init containers one at a time in order, each to success before
//! the next (sidecars — init containers with `restartPolicy: Always` — only have to start);
//! app containers after all of them; restarts by the pod's `restartPolicy` with the
//! CrashLoopBackOff back-off ([`super::backoff`]); the phase by upstream's `getPhase`; a
//! deleted pod's containers stopped within its grace period, then the pod deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::backoff;
use super::observe::{Attempt, AttemptState, Observed};
use super::probes::{self, Verdict};

/// The scheme of container IDs in statuses (`skiff://<64 hex>`).
pub const CONTAINER_ID_SCHEME: &str = "skiff://";
/// Upstream's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A reason a container is waiting that only the worker knows (the image could not be
/// pulled, its configuration could not be built), and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
    pub retry_at: Option<Timestamp>,
}

pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub observed: &'a Observed,
    /// By container name.
    pub waiting: &'a BTreeMap<String, Waiting>,
    pub host_ip: &'a str,
    /// The pod's address on the pod network, once its sandbox has one (hostNetwork pods
    /// have the node's).
    pub pod_ip: Option<&'a str>,
    pub now: Timestamp,
    /// What the probes concluded, by container name (absent: nothing yet).
    pub probes: &'a std::collections::HashMap<String, Verdict>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make the pod's directory, network namespace and shared files.
    CreateSandbox,
    /// Start attempt `attempt` of a container.
    Start {
        container: String,
        init: bool,
        attempt: u32,
    },
    /// Stop a running attempt: its stop signal, then SIGKILL after `grace`.
    Stop {
        container: String,
        attempt: u32,
        grace: Duration,
        /// It failed its liveness (or startup) probe and will be restarted.
        unhealthy: bool,
    },
    /// Nothing runs any more: release the network namespace and root filesystems.
    TeardownSandbox,
    /// The deleted pod has stopped: remove it from the API (grace 0, uid precondition).
    DeletePod,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// The status to report (the pod's current status with the fields the kubelet owns
    /// replaced); written only if it differs.
    pub status: PodStatus,
    /// Look again at this time even if nothing happens (a back-off ends).
    pub wake_at: Option<Timestamp>,
}

/// How one container stands, for its status and the pod's phase.
#[derive(Debug, Clone, PartialEq)]
enum Standing {
    /// Never started (or waiting on something before its first start).
    NotStarted,
    Running,
    /// Ended and will start again (now, or when `at` comes).
    Restarting {
        at: Timestamp,
        backoff: Duration,
    },
    /// Ended for good.
    Done {
        exit_code: i32,
    },
}

pub fn decide(inp: &Inputs<'_>) -> Decision {
    let pod = inp.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let api_phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let already_terminal = matches!(api_phase, "Succeeded" | "Failed");
    let may_start = !deleting && !already_terminal && inp.observed.sandbox_ready;

    let mut actions = Vec::new();
    let mut wake_at: Option<Timestamp> = None;
    let mut wake = |t: Timestamp| {
        wake_at = Some(wake_at.map_or(t, |w: Timestamp| w.min(t)));
    };
    if !deleting && !already_terminal && !inp.observed.sandbox_ready {
        actions.push(Action::CreateSandbox);
    }

    // Init containers, in order.
    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut init_standing = BTreeMap::new();
    let mut inits_done = true;
    let mut init_failed = false;
    for c in &inits {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let standing = standing_of(
            c,
            inp,
            if sidecar {
                "Always"
            } else {
                init_policy(policy)
            },
        );
        init_standing.insert(c.name.clone(), standing.clone());
        let blocks = match &standing {
            Standing::NotStarted => {
                start_if_allowed(c, true, 0, inp, may_start, &mut actions, &mut wake);
                true
            }
            Standing::Running => !sidecar,
            Standing::Restarting { at, .. } => {
                let next = inp.observed.latest(&c.name).map_or(0, |a| a.number + 1);
                if *at <= inp.now {
                    start_if_allowed(c, true, next, inp, may_start, &mut actions, &mut wake);
                } else {
                    wake(*at);
                }
                !sidecar
            }
            Standing::Done { exit_code } => {
                if *exit_code != 0 && !sidecar {
                    init_failed = true;
                }
                *exit_code != 0
            }
        };
        if blocks {
            inits_done = false;
            break;
        }
    }
    // Init containers after the one that blocks have not been looked at: not started.
    for c in &inits {
        init_standing
            .entry(c.name.clone())
            .or_insert(Standing::NotStarted);
    }

    // App containers, once every init container has done its part.
    let containers = spec.containers.clone();
    let mut app_standing = BTreeMap::new();
    for c in &containers {
        let standing = if inits_done {
            standing_of(c, inp, policy)
        } else {
            Standing::NotStarted
        };
        if inits_done {
            match &standing {
                Standing::NotStarted => {
                    start_if_allowed(c, false, 0, inp, may_start, &mut actions, &mut wake)
                }
                Standing::Restarting { at, .. } => {
                    let next = inp.observed.latest(&c.name).map_or(0, |a| a.number + 1);
                    if *at <= inp.now {
                        start_if_allowed(c, false, next, inp, may_start, &mut actions, &mut wake);
                    } else {
                        wake(*at);
                    }
                }
                Standing::Running | Standing::Done { .. } => {}
            }
        }
        app_standing.insert(c.name.clone(), standing);
    }

    // The phase, as upstream's getPhase.
    let all_done = inits_done
        && !containers.is_empty()
        && app_standing
            .values()
            .all(|s| matches!(s, Standing::Done { .. }));
    let phase: &str = if already_terminal {
        api_phase
    } else if init_failed {
        "Failed"
    } else if all_done {
        if app_standing
            .values()
            .all(|s| matches!(s, Standing::Done { exit_code: 0 }))
        {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if !inits_done
        || app_standing
            .values()
            .any(|s| matches!(s, Standing::NotStarted))
    {
        "Pending"
    } else {
        "Running"
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");

    // A container that failed its liveness or startup probe is stopped, to be restarted.
    if !deleting && !already_terminal {
        for (name, attempt) in inp.observed.running() {
            if inp
                .probes
                .get(name)
                .is_some_and(|v| v.attempt == attempt.number && v.failed)
            {
                actions.push(Action::Stop {
                    container: name.to_string(),
                    attempt: attempt.number,
                    grace: spec_grace(pod),
                    unhealthy: true,
                });
            }
        }
    }

    // Stop what should not run: everything of a deleted pod, sidecars of a finished one.
    if deleting || terminal {
        actions.retain(|a| !matches!(a, Action::Start { .. }));
        let grace = grace_period(pod);
        let mut any_running = false;
        for (name, attempt) in inp.observed.running() {
            any_running = true;
            actions.push(Action::Stop {
                container: name.to_string(),
                attempt: attempt.number,
                grace: if deleting {
                    grace
                } else {
                    DEFAULT_GRACE.min(grace)
                },
                unhealthy: false,
            });
        }
        if !any_running {
            if inp.observed.sandbox_ready {
                actions.push(Action::TeardownSandbox);
            }
            if deleting {
                actions.push(Action::DeletePod);
            }
        }
    }

    let status = status_of(
        inp,
        &spec,
        phase,
        inits_done,
        &init_standing,
        &app_standing,
        terminal,
    );
    Decision {
        actions,
        status,
        wake_at,
    }
}

/// Init containers of a pod that restarts always are retried like OnFailure ones.
fn init_policy(pod_policy: &str) -> &'static str {
    if pod_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    }
}

fn standing_of(c: &Container, inp: &Inputs<'_>, policy: &str) -> Standing {
    let attempts = inp.observed.attempts(&c.name);
    let Some(latest) = attempts.last() else {
        return Standing::NotStarted;
    };
    match &latest.state {
        AttemptState::Running { .. } => Standing::Running,
        AttemptState::Exited { exit_code, .. } => {
            let restart = match policy {
                "Always" => true,
                "OnFailure" => *exit_code != 0,
                _ => false,
            };
            if inp.pod.metadata.deletion_timestamp.is_some() || !restart {
                return Standing::Done {
                    exit_code: *exit_code,
                };
            }
            let finishes: Vec<Timestamp> =
                attempts.iter().filter_map(|a| a.finished_at()).collect();
            let (at, backoff) = backoff::restart_at(&finishes);
            Standing::Restarting { at, backoff }
        }
    }
}

fn start_if_allowed(
    c: &Container,
    init: bool,
    attempt: u32,
    inp: &Inputs<'_>,
    may_start: bool,
    actions: &mut Vec<Action>,
    wake: &mut impl FnMut(Timestamp),
) {
    if !may_start {
        return;
    }
    if let Some(retry_at) = inp.waiting.get(&c.name).and_then(|w| w.retry_at) {
        if retry_at > inp.now {
            wake(retry_at);
            return;
        }
    }
    actions.push(Action::Start {
        container: c.name.clone(),
        init,
        attempt,
    });
}

/// The pod's `terminationGracePeriodSeconds` (a container killed for failing a probe).
fn spec_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE.as_secs() as i64);
    Duration::from_secs(secs.max(0) as u64)
}

/// The grace period a deleted pod's containers get: what the deletion set, else the spec's.
pub fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(DEFAULT_GRACE.as_secs() as i64);
    Duration::from_secs(secs.max(0) as u64)
}

fn status_of(
    inp: &Inputs<'_>,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    phase: &str,
    inits_done: bool,
    init_standing: &BTreeMap<String, Standing>,
    app_standing: &BTreeMap<String, Standing>,
    terminal: bool,
) -> PodStatus {
    let pod = inp.pod;
    let old = pod.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let pod_label = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    );

    let inits = spec.init_containers.clone().unwrap_or_default();
    let init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| {
            container_status(
                c,
                inp,
                &init_standing[&c.name],
                "PodInitializing",
                &pod_label,
            )
        })
        .collect();
    let app_default = if inits_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app_statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, inp, &app_standing[&c.name], app_default, &pod_label))
        .collect();

    let unready: Vec<&str> = app_statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let incomplete: Vec<&str> = inits
        .iter()
        .filter(|c| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            match &init_standing[&c.name] {
                Standing::Done { exit_code: 0 } => false,
                Standing::Running => !sidecar,
                _ => true,
            }
        })
        .map(|c| c.name.as_str())
        .collect();

    let done_reason = match phase {
        "Succeeded" => Some("PodCompleted"),
        "Failed" => Some("PodFailed"),
        _ => None,
    };
    let sandbox_ready = inp.observed.sandbox_ready && !terminal;
    let mut conditions = vec![
        condition(
            &old,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            None,
            inp.now,
        ),
        if inits_done || phase == "Succeeded" {
            condition(&old, "Initialized", true, None, None, inp.now)
        } else {
            condition(
                &old,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
                inp.now,
            )
        },
    ];
    let (ready, reason, message) = if terminal {
        (false, done_reason, None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    conditions.push(condition(
        &old,
        "Ready",
        ready,
        reason,
        message.clone(),
        inp.now,
    ));
    conditions.push(condition(
        &old,
        "ContainersReady",
        ready,
        reason,
        message,
        inp.now,
    ));
    if let Some(scheduled) = old
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.push(scheduled.clone());
    }

    status.phase = Some(phase.to_string());
    status.conditions = Some(conditions);
    status.host_ip = Some(inp.host_ip.to_string());
    status.host_ips = Some(vec![HostIP {
        ip: inp.host_ip.to_string(),
    }]);
    // A torn-down sandbox has no address any more; as kubelet, the last reported one stays.
    let pod_ip = if spec.host_network == Some(true) {
        Some(inp.host_ip)
    } else {
        inp.pod_ip
    };
    if let Some(ip) = pod_ip {
        status.pod_ip = Some(ip.to_string());
        status.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
            ip: ip.to_string(),
        }]);
    }
    status.start_time = old.start_time.clone().or(Some(api_time(inp.now)));
    status.container_statuses = Some(app_statuses);
    status.init_container_statuses = (!inits.is_empty()).then_some(init_statuses);
    status
}

fn container_status(
    c: &Container,
    inp: &Inputs<'_>,
    standing: &Standing,
    default_waiting: &str,
    pod_label: &str,
) -> ContainerStatus {
    let attempts = inp.observed.attempts(&c.name);
    let latest = attempts.last();
    let previous = attempts.len().checked_sub(2).map(|i| &attempts[i]);
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()),
        }),
        ..Default::default()
    };
    let transient = inp.waiting.get(&c.name);
    let (state, last_state) = match (standing, latest) {
        (Standing::Running, Some(a)) => (running_state(a), previous.map(terminated_state)),
        (_, Some(a)) if transient.is_some() && !a.is_running() => {
            let w = transient.unwrap();
            (
                waiting(&w.reason, Some(w.message.clone())),
                Some(terminated_state(a)),
            )
        }
        (Standing::Restarting { at, backoff }, Some(a)) if *at > inp.now => (
            waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_label}",
                    backoff::go_duration(*backoff),
                    c.name
                )),
            ),
            Some(terminated_state(a)),
        ),
        (_, Some(a)) if !a.is_running() => (terminated_state(a), previous.map(terminated_state)),
        (_, Some(a)) => (running_state(a), previous.map(terminated_state)),
        (_, None) => match transient {
            Some(w) => (waiting(&w.reason, Some(w.message.clone())), None),
            None => (waiting(default_waiting, None), None),
        },
    };
    let running = state.running.is_some();
    let verdict = latest
        .and_then(|a| {
            inp.probes
                .get(&c.name)
                .filter(|v| v.attempt == a.number)
                .copied()
        })
        .unwrap_or_else(|| probes::initial(c, latest.map_or(0, |a| a.number)));
    let started = running && verdict.started;
    ContainerStatus {
        name: c.name.clone(),
        image: latest
            .map(|a| a.record.image_ref.clone())
            .unwrap_or_else(|| c.image.clone().unwrap_or_default()),
        image_id: latest
            .map(|a| a.record.image_id.clone())
            .unwrap_or_default(),
        container_id: latest.map(|a| format!("{CONTAINER_ID_SCHEME}{}", a.record.container_id)),
        ready: started && verdict.ready,
        started: Some(started),
        restart_count: latest.map_or(0, |a| a.number as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// A time as the API stores it: whole seconds (RFC 3339 without a fraction). The status is
/// compared with the stored one to decide whether to write it, so a time with a fraction
/// would never compare equal and every turn would write it again (kubelet's status manager
/// truncates for the same reason).
fn api_time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn running_state(a: &Attempt) -> ContainerState {
    let started_at = match a.state {
        AttemptState::Running { started_at } => Some(api_time(started_at)),
        _ => None,
    };
    ContainerState {
        running: Some(ContainerStateRunning { started_at }),
        ..Default::default()
    }
}

fn terminated_state(a: &Attempt) -> ContainerState {
    match &a.state {
        AttemptState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
            message,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(format!("{CONTAINER_ID_SCHEME}{}", a.record.container_id)),
                exit_code: *exit_code,
                reason: Some(reason.to_string()),
                message: message.clone(),
                started_at: started_at.map(api_time),
                finished_at: Some(api_time(*finished_at)),
                signal: None,
            }),
            ..Default::default()
        },
        AttemptState::Running { .. } => running_state(a),
    }
}

/// A condition, keeping its old transition time when its status has not changed.
fn condition(
    old: &PodStatus,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let previous = old
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let at = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(api_time(now)),
    };
    PodCondition {
        type_: type_.to_string(),
        status,
        reason: reason.map(str::to_string),
        message,
        last_transition_time: at,
        last_probe_time: None,
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::observe::AttemptRecord;
    use serde_json::json;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn pod(restart: &str, inits: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "spec": {"restartPolicy": restart, "initContainers": inits,
                     "containers": [{"name": "app", "image": "busybox:1"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2027-01-15T08:00:00Z"}]}
        }))
        .unwrap()
    }

    fn attempt(number: u32, state: AttemptState) -> Attempt {
        Attempt {
            number,
            record: AttemptRecord {
                container_id: format!("id{number}"),
                image: "busybox:1".into(),
                image_ref: "docker.io/library/busybox:1".into(),
                image_id: "docker.io/library/busybox@sha256:ab".into(),
                stop_signal: None,
            },
            state,
        }
    }

    fn exited(number: u32, code: i32, started: i64, finished: i64) -> Attempt {
        attempt(
            number,
            AttemptState::Exited {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" },
                started_at: Some(t(started)),
                finished_at: t(finished),
                message: None,
            },
        )
    }

    fn running(number: u32, started: i64) -> Attempt {
        attempt(
            number,
            AttemptState::Running {
                started_at: t(started),
            },
        )
    }

    fn observed(ready: bool, containers: Vec<(&str, Vec<Attempt>)>) -> Observed {
        Observed {
            sandbox_ready: ready,
            containers: containers
                .into_iter()
                .map(|(n, a)| (n.to_string(), a))
                .collect(),
        }
    }

    fn run(pod: &Pod, observed: &Observed, now: i64) -> Decision {
        run_waiting(pod, observed, &BTreeMap::new(), now)
    }

    fn run_waiting(
        pod: &Pod,
        observed: &Observed,
        waiting: &BTreeMap<String, Waiting>,
        now: i64,
    ) -> Decision {
        decide(&Inputs {
            pod,
            observed,
            waiting,
            host_ip: "192.168.1.10",
            pod_ip: Some("10.42.0.7"),
            now: t(now),
            probes: &Default::default(),
        })
    }

    fn cond<'a>(s: &'a PodStatus, type_: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    fn app(s: &PodStatus) -> &ContainerStatus {
        &s.container_statuses.as_ref().unwrap()[0]
    }

    fn start(name: &str, init: bool, attempt: u32) -> Action {
        Action::Start {
            container: name.into(),
            init,
            attempt,
        }
    }

    #[test]
    fn a_new_pod_gets_its_sandbox_and_shows_container_creating() {
        let p = pod("Always", json!([]));
        let d = run(&p, &observed(false, vec![]), 0);
        assert_eq!(d.actions, vec![Action::CreateSandbox]);
        assert_eq!(d.status.phase.as_deref(), Some("Pending"));
        let w = app(&d.status)
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(cond(&d.status, "PodReadyToStartContainers").status, "False");
        assert_eq!(cond(&d.status, "PodScheduled").status, "True");
        assert_eq!(d.status.host_ip.as_deref(), Some("192.168.1.10"));

        let d = run(&p, &observed(true, vec![]), 0);
        assert_eq!(d.actions, vec![start("app", false, 0)]);
    }

    #[test]
    fn the_pod_ip_is_the_sandboxes_or_the_nodes_for_host_network() {
        let p = pod("Always", json!([]));
        let d = run(&p, &observed(true, vec![]), 0);
        assert_eq!(d.status.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(d.status.pod_ips.as_ref().unwrap()[0].ip, "10.42.0.7");

        let mut host = p.clone();
        host.spec.as_mut().unwrap().host_network = Some(true);
        let d = run(&host, &observed(true, vec![]), 0);
        assert_eq!(d.status.pod_ip.as_deref(), Some("192.168.1.10"));

        // A torn-down sandbox has no address; the one reported before stays.
        let mut reported = p.clone();
        reported.status.get_or_insert_with(Default::default).pod_ip = Some("10.42.0.9".into());
        let d = decide(&Inputs {
            pod: &reported,
            observed: &observed(false, vec![]),
            waiting: &BTreeMap::new(),
            host_ip: "192.168.1.10",
            pod_ip: None,
            now: t(0),
            probes: &Default::default(),
        });
        assert_eq!(d.status.pod_ip.as_deref(), Some("10.42.0.9"));
    }

    #[test]
    fn a_running_container_makes_the_pod_running_and_ready() {
        let p = pod("Always", json!([]));
        let d = run(&p, &observed(true, vec![("app", vec![running(0, 1)])]), 2);
        assert!(d.actions.is_empty());
        assert_eq!(d.status.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&d.status, "Ready").status, "True");
        let s = app(&d.status);
        assert!(s.ready);
        assert_eq!(s.container_id.as_deref(), Some("skiff://id0"));
        assert_eq!(s.image_id, "docker.io/library/busybox@sha256:ab");
    }

    #[test]
    fn a_written_status_read_back_is_not_written_again() {
        // Times with a fraction of a second, as the shim records them and as `now` is.
        let frac = |secs: i64| t(secs).checked_add(Duration::from_millis(437)).unwrap();
        let mut p = pod("Always", json!([]));
        let started = attempt(
            0,
            AttemptState::Running {
                started_at: frac(1),
            },
        );
        let seen = observed(true, vec![("app", vec![started])]);
        let decide_at = |p: &Pod| {
            decide(&Inputs {
                pod: p,
                observed: &seen,
                waiting: &BTreeMap::new(),
                host_ip: "192.168.1.10",
                pod_ip: Some("10.42.0.7"),
                now: frac(2),
                probes: &Default::default(),
            })
        };
        let written = decide_at(&p).status;
        // The API server keeps whole seconds: the status as the watch brings it back.
        let stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&written).unwrap()).unwrap();
        p.status = Some(stored.clone());
        assert_eq!(decide_at(&p).status, stored);
    }

    #[test]
    fn a_failing_container_restarts_at_once_then_backs_off() {
        let p = pod("Always", json!([]));
        // First failure: restart at once; the status meanwhile says Error.
        let d = run(
            &p,
            &observed(true, vec![("app", vec![exited(0, 1, 0, 1)])]),
            1,
        );
        assert_eq!(d.actions, vec![start("app", false, 1)]);
        let term = app(&d.status)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (1, Some("Error")));
        assert_eq!(d.status.phase.as_deref(), Some("Running"));

        // Second failure: CrashLoopBackOff for 10 s.
        let o = observed(
            true,
            vec![("app", vec![exited(0, 1, 0, 1), exited(1, 1, 1, 2)])],
        );
        let d = run(&p, &o, 3);
        assert!(d.actions.is_empty());
        assert_eq!(d.wake_at, Some(t(12)));
        let s = app(&d.status);
        assert_eq!(s.restart_count, 1);
        let w = s.state.as_ref().unwrap().waiting.clone().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(
            w.message.as_deref(),
            Some("back-off 10s restarting failed container=app pod=web_ns(u-1)")
        );
        let last = s.last_state.as_ref().unwrap().terminated.clone().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(cond(&d.status, "Ready").status, "False");
        assert_eq!(
            cond(&d.status, "Ready").message.as_deref(),
            Some("containers with unready status: [app]")
        );
        // When the back-off ends it starts again.
        assert_eq!(run(&p, &o, 12).actions, vec![start("app", false, 2)]);
    }

    #[test]
    fn never_and_on_failure_pods_finish() {
        let done = observed(true, vec![("app", vec![exited(0, 0, 0, 5)])]);
        let d = run(&pod("Never", json!([])), &done, 6);
        assert_eq!(d.status.phase.as_deref(), Some("Succeeded"));
        assert_eq!(d.actions, vec![Action::TeardownSandbox]);
        assert_eq!(
            cond(&d.status, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );
        let term = app(&d.status)
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(term.reason.as_deref(), Some("Completed"));

        let failed = observed(true, vec![("app", vec![exited(0, 2, 0, 5)])]);
        assert_eq!(
            run(&pod("Never", json!([])), &failed, 6)
                .status
                .phase
                .as_deref(),
            Some("Failed")
        );
        // OnFailure restarts a failure but not a success.
        assert_eq!(
            run(&pod("OnFailure", json!([])), &failed, 6).actions,
            vec![start("app", false, 1)]
        );
        assert_eq!(
            run(&pod("OnFailure", json!([])), &done, 6)
                .status
                .phase
                .as_deref(),
            Some("Succeeded")
        );
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_app() {
        let inits = json!([{"name": "one", "image": "b"}, {"name": "two", "image": "b"}]);
        let p = pod("Always", inits);
        let d = run(&p, &observed(true, vec![]), 0);
        assert_eq!(d.actions, vec![start("one", true, 0)]);
        assert_eq!(d.status.phase.as_deref(), Some("Pending"));
        assert_eq!(
            cond(&d.status, "Initialized").message.as_deref(),
            Some("containers with incomplete status: [one two]")
        );
        let w = app(&d.status)
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("PodInitializing"));

        let o = observed(true, vec![("one", vec![exited(0, 0, 0, 1)])]);
        assert_eq!(run(&p, &o, 2).actions, vec![start("two", true, 0)]);
        let o = observed(
            true,
            vec![
                ("one", vec![exited(0, 0, 0, 1)]),
                ("two", vec![exited(0, 0, 1, 2)]),
            ],
        );
        let d = run(&p, &o, 3);
        assert_eq!(d.actions, vec![start("app", false, 0)]);
        assert_eq!(cond(&d.status, "Initialized").status, "True");

        // A failed init container of a Never pod fails the pod.
        let p = pod("Never", json!([{"name": "one", "image": "b"}]));
        let o = observed(true, vec![("one", vec![exited(0, 1, 0, 1)])]);
        assert_eq!(run(&p, &o, 2).status.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn sidecars_only_have_to_start() {
        let p = pod(
            "Always",
            json!([{"name": "side", "image": "b", "restartPolicy": "Always"}]),
        );
        let o = observed(true, vec![("side", vec![running(0, 0)])]);
        assert_eq!(run(&p, &o, 1).actions, vec![start("app", false, 0)]);
    }

    #[test]
    fn a_deleted_pod_is_stopped_within_its_grace_then_deleted() {
        let mut p = pod("Always", json!([]));
        p.metadata.deletion_timestamp = Some(Time(t(100)));
        p.metadata.deletion_grace_period_seconds = Some(7);
        let d = run(&p, &observed(true, vec![("app", vec![running(0, 1)])]), 90);
        assert_eq!(
            d.actions,
            vec![Action::Stop {
                container: "app".into(),
                attempt: 0,
                grace: Duration::from_secs(7),
                unhealthy: false,
            }]
        );
        let d = run(
            &p,
            &observed(true, vec![("app", vec![exited(0, 143, 1, 91)])]),
            91,
        );
        assert_eq!(d.actions, vec![Action::TeardownSandbox, Action::DeletePod]);
        let d = run(
            &p,
            &observed(false, vec![("app", vec![exited(0, 143, 1, 91)])]),
            91,
        );
        assert_eq!(d.actions, vec![Action::DeletePod]);
    }

    #[test]
    fn a_failed_pull_waits_for_its_back_off() {
        let p = pod("Always", json!([]));
        let mut waiting = BTreeMap::new();
        waiting.insert(
            "app".to_string(),
            Waiting {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"busybox:1\"".into(),
                retry_at: Some(t(10)),
            },
        );
        let d = run_waiting(&p, &observed(true, vec![]), &waiting, 5);
        assert!(d.actions.is_empty());
        assert_eq!(d.wake_at, Some(t(10)));
        let w = app(&d.status)
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ImagePullBackOff"));
        let d = run_waiting(&p, &observed(true, vec![]), &waiting, 10);
        assert_eq!(d.actions, vec![start("app", false, 0)]);
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_times() {
        let p = pod("Always", json!([]));
        let o = observed(true, vec![("app", vec![running(0, 1)])]);
        let first = run(&p, &o, 2).status;
        let mut p2 = p.clone();
        p2.status = Some(first.clone());
        assert_eq!(run(&p2, &o, 50).status, first);
    }
}
