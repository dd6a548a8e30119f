//! The life of a pod on a simulated node, decided without I/O: from the pod as the API has
//! it, the node, the pod's address and the time, what the kubelet would do next (report a
//! status, delete the stopped pod, look again later).
//!
//! The status written is what a kubelet reports: init containers terminated `Completed`
//! first (sidecars, `restartPolicy: Always` init containers, keep running), every container
//! running, started and ready with a container ID and an image ID, `PodReadyToStartContainers`,
//! `Initialized`, `Ready`, `ContainersReady` and `PodScheduled` conditions, pod IPs and host
//! IPs, `startTime`. Every timestamp is derived from `status.startTime` (and the
//! annotations), so the same inputs always give the same status and a status already in
//! the API is never written again.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

/// Exit code of every container of a Never/OnFailure pod (default 0: Succeeded).
pub const EXIT_CODE_ANNOTATION: &str = "skiff.dev/simulate-exit-code";
/// Seconds the containers of a Never/OnFailure pod run (default `--simulate-run-time`).
pub const RUN_SECONDS_ANNOTATION: &str = "skiff.dev/simulate-run-seconds";
/// Seconds after start before the pod's containers become ready (default 0).
pub const READY_AFTER_ANNOTATION: &str = "skiff.dev/simulate-ready-after-seconds";

/// What the node knows about itself that shows in a pod's status.
#[derive(Debug, Clone)]
pub struct NodeFacts<'a> {
    pub host_ip: Ipv4Addr,
    /// `skiff-sim`: the scheme of container IDs.
    pub runtime_scheme: &'a str,
    /// Run time of finite pods without the annotation.
    pub default_run_time: Duration,
    /// Longest a deleted pod takes to stop.
    pub termination_grace_cap: Duration,
}

/// What to do with one pod now.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    /// Nothing to report; look again after the duration if given.
    Wait(Option<Duration>),
    /// Merge-patch `status` with this value; look again after the duration if given.
    WriteStatus {
        status: Value,
        recheck_after: Option<Duration>,
    },
    /// Its containers have stopped: delete it with grace period 0 (uid precondition).
    Delete,
}

/// Kubelet's decision for `pod` at `now`. `pod_ip` is the address the node gave the pod
/// (ignored for hostNetwork pods, which use the node's address).
pub fn decide(pod: &Pod, node: &NodeFacts<'_>, pod_ip: Ipv4Addr, now: Timestamp) -> PodAction {
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        return decide_deleted(pod, node, deleted.0, now);
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Succeeded" || phase == "Failed" {
        return PodAction::Wait(None);
    }
    let plan = match Plan::of(pod, node) {
        Ok(plan) => plan,
        Err(message) => {
            let desired = rejected_status(pod, &message, now);
            return write_if_changed(pod, desired, None);
        }
    };
    let start = status
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let host_ip = node.host_ip;
    let ip = if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        host_ip
    } else {
        pod_ip
    };
    let ctx = StatusContext {
        pod,
        scheme: node.runtime_scheme,
        host_ip,
        pod_ip: ip,
        start,
    };
    let elapsed = now.duration_since(start);
    if let Some(run) = plan.run_for {
        let run = signed(run);
        if elapsed >= run {
            let desired = ctx.finished(start + run, plan.exit_code);
            return write_if_changed(pod, desired, None);
        }
    }
    let ready_after = signed(plan.ready_after);
    let ready_at = if elapsed >= ready_after {
        Some(start + ready_after)
    } else {
        None
    };
    // The next moment something changes: readiness, then the end of the run.
    let mut next: Option<SignedDuration> = None;
    if ready_at.is_none() {
        next = Some(ready_after - elapsed);
    }
    if let Some(run) = plan.run_for {
        let left = signed(run) - elapsed;
        next = Some(next.map_or(left, |n| n.min(left)));
    }
    let recheck = next.map(unsigned);
    write_if_changed(pod, ctx.running(ready_at), recheck)
}

fn decide_deleted(
    pod: &Pod,
    node: &NodeFacts<'_>,
    deleted: Timestamp,
    now: Timestamp,
) -> PodAction {
    // deletionTimestamp is the request time plus the grace period: the stop began then.
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(0)
        .max(0) as u64;
    let asked = deleted - SignedDuration::from_secs(grace as i64);
    let stop_takes = Duration::from_secs(grace).min(node.termination_grace_cap);
    let stopped_at = asked + signed(stop_takes);
    if now >= stopped_at {
        PodAction::Delete
    } else {
        PodAction::Wait(Some(unsigned(stopped_at.duration_since(now))))
    }
}

/// The simulated behaviour a pod asked for through its annotations.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// `None`: runs until deleted (restartPolicy Always).
    run_for: Option<Duration>,
    exit_code: i32,
    ready_after: Duration,
}

impl Plan {
    fn of(pod: &Pod, node: &NodeFacts<'_>) -> Result<Plan, String> {
        let annotations = pod.metadata.annotations.as_ref();
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let seconds = |key: &str| -> Result<Option<Duration>, String> {
            match get(key) {
                None => Ok(None),
                Some(text) => match text.trim().parse::<f64>() {
                    Ok(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
                    _ => Err(format!(
                        "annotation {key}: {text:?} is not a non-negative number of seconds"
                    )),
                },
            }
        };
        let exit_code = match get(EXIT_CODE_ANNOTATION) {
            None => 0,
            Some(text) => match text.trim().parse::<i32>() {
                Ok(code) if (0..=255).contains(&code) => code,
                _ => {
                    return Err(format!(
                        "annotation {EXIT_CODE_ANNOTATION}: {text:?} is not an exit code (0-255)"
                    ))
                }
            },
        };
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        let run_for = match restart_policy {
            "Never" | "OnFailure" => {
                Some(seconds(RUN_SECONDS_ANNOTATION)?.unwrap_or(node.default_run_time))
            }
            _ => None,
        };
        Ok(Plan {
            run_for,
            exit_code,
            ready_after: seconds(READY_AFTER_ANNOTATION)?.unwrap_or_default(),
        })
    }
}

struct StatusContext<'a> {
    pod: &'a Pod,
    scheme: &'a str,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
    start: Timestamp,
}

impl StatusContext<'_> {
    fn containers(&self) -> &[Container] {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[])
    }

    fn init_containers(&self) -> &[Container] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or(&[])
    }

    fn container_id(&self, name: &str) -> String {
        let uid = self.pod.metadata.uid.as_deref().unwrap_or("");
        format!("{}://{}", self.scheme, hex_digest(&[uid, name]))
    }

    fn base(&self, container: &Container) -> serde_json::Map<String, Value> {
        let image = container.image.as_deref().unwrap_or("");
        let (normalized, repository) = normalize_image(image);
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(container.name));
        m.insert("image".into(), json!(normalized));
        m.insert(
            "imageID".into(),
            json!(format!(
                "{repository}@sha256:{}",
                hex_digest(&[&normalized])
            )),
        );
        m.insert(
            "containerID".into(),
            json!(self.container_id(&container.name)),
        );
        m.insert("restartCount".into(), json!(0));
        m.insert("lastState".into(), json!({}));
        m
    }

    fn running_container(&self, c: &Container, ready: bool) -> Value {
        let mut m = self.base(c);
        m.insert("ready".into(), json!(ready));
        m.insert("started".into(), json!(true));
        m.insert(
            "state".into(),
            json!({"running": {"startedAt": time(self.start)}}),
        );
        Value::Object(m)
    }

    fn terminated_container(&self, c: &Container, exit_code: i32, end: Timestamp) -> Value {
        let mut m = self.base(c);
        // A completed init container counts as ready, as kubelet reports it.
        m.insert("ready".into(), json!(false));
        m.insert("started".into(), json!(false));
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        m.insert(
            "state".into(),
            json!({"terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": time(self.start),
                "finishedAt": time(end),
                "containerID": self.container_id(&c.name),
            }}),
        );
        Value::Object(m)
    }

    fn init_statuses(&self, finished: Option<Timestamp>) -> Vec<Value> {
        self.init_containers()
            .iter()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                match (sidecar, finished) {
                    (true, None) => self.running_container(c, true),
                    (true, Some(end)) => self.terminated_container(c, 0, end),
                    (false, _) => {
                        let mut v = self.terminated_container(c, 0, self.start);
                        v["ready"] = json!(true);
                        v
                    }
                }
            })
            .collect()
    }

    fn addresses(&self, status: &mut serde_json::Map<String, Value>) {
        status.insert("hostIP".into(), json!(self.host_ip.to_string()));
        status.insert("hostIPs".into(), json!([{"ip": self.host_ip.to_string()}]));
        status.insert("podIP".into(), json!(self.pod_ip.to_string()));
        status.insert("podIPs".into(), json!([{"ip": self.pod_ip.to_string()}]));
        status.insert("startTime".into(), json!(time(self.start)));
    }

    fn scheduled_condition(&self) -> Value {
        let existing = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.start);
        condition("PodScheduled", true, existing, None, None)
    }

    fn running(&self, ready_at: Option<Timestamp>) -> Value {
        let containers: Vec<Value> = self
            .containers()
            .iter()
            .map(|c| self.running_container(c, ready_at.is_some()))
            .collect();
        let (ready, reason, message) = match ready_at {
            Some(_) => (true, None, None),
            None => {
                let names: Vec<&str> = self.containers().iter().map(|c| c.name.as_str()).collect();
                (
                    false,
                    Some("ContainersNotReady"),
                    Some(format!(
                        "containers with unready status: [{}]",
                        names.join(" ")
                    )),
                )
            }
        };
        let ready_time = ready_at.unwrap_or(self.start);
        let mut status = serde_json::Map::new();
        status.insert("phase".into(), json!("Running"));
        status.insert(
            "conditions".into(),
            json!([
                condition("PodReadyToStartContainers", true, self.start, None, None),
                condition("Initialized", true, self.start, None, None),
                condition("Ready", ready, ready_time, reason, message.as_deref()),
                condition(
                    "ContainersReady",
                    ready,
                    ready_time,
                    reason,
                    message.as_deref()
                ),
                self.scheduled_condition(),
            ]),
        );
        self.addresses(&mut status);
        status.insert("containerStatuses".into(), Value::Array(containers));
        if !self.init_containers().is_empty() {
            status.insert(
                "initContainerStatuses".into(),
                Value::Array(self.init_statuses(None)),
            );
        }
        Value::Object(status)
    }

    fn finished(&self, end: Timestamp, exit_code: i32) -> Value {
        let succeeded = exit_code == 0;
        let containers: Vec<Value> = self
            .containers()
            .iter()
            .map(|c| self.terminated_container(c, exit_code, end))
            .collect();
        let done_reason = if succeeded {
            "PodCompleted"
        } else {
            "PodFailed"
        };
        let initialized_reason = if succeeded {
            Some("PodCompleted")
        } else {
            None
        };
        let mut status = serde_json::Map::new();
        status.insert(
            "phase".into(),
            json!(if succeeded { "Succeeded" } else { "Failed" }),
        );
        status.insert(
            "conditions".into(),
            json!([
                condition("PodReadyToStartContainers", false, end, None, None),
                condition("Initialized", true, self.start, initialized_reason, None),
                condition("Ready", false, end, Some(done_reason), None),
                condition("ContainersReady", false, end, Some(done_reason), None),
                self.scheduled_condition(),
            ]),
        );
        self.addresses(&mut status);
        status.insert("containerStatuses".into(), Value::Array(containers));
        if !self.init_containers().is_empty() {
            status.insert(
                "initContainerStatuses".into(),
                Value::Array(self.init_statuses(Some(end))),
            );
        }
        Value::Object(status)
    }
}

/// A pod the simulated kubelet refuses to run, reported as kubelet reports an admission
/// failure: phase Failed with a reason and a message.
fn rejected_status(pod: &Pod, message: &str, now: Timestamp) -> Value {
    let start = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    json!({
        "phase": "Failed",
        "reason": "SimulationRejected",
        "message": format!("Pod was rejected by the simulated node: {message}"),
        "startTime": time(start),
    })
}

fn condition(
    type_: &str,
    status: bool,
    at: Timestamp,
    reason: Option<&str>,
    message: Option<&str>,
) -> Value {
    let mut c = serde_json::Map::new();
    c.insert("type".into(), json!(type_));
    c.insert(
        "status".into(),
        json!(if status { "True" } else { "False" }),
    );
    c.insert("lastProbeTime".into(), Value::Null);
    c.insert("lastTransitionTime".into(), json!(time(at)));
    if let Some(r) = reason {
        c.insert("reason".into(), json!(r));
    }
    if let Some(m) = message {
        c.insert("message".into(), json!(m));
    }
    Value::Object(c)
}

/// Write `desired` unless the pod's status already says the same.
fn write_if_changed(pod: &Pod, desired: Value, recheck_after: Option<Duration>) -> PodAction {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    if summary(&current) == summary(&desired) {
        PodAction::Wait(recheck_after)
    } else {
        PodAction::WriteStatus {
            status: desired,
            recheck_after,
        }
    }
}

/// The parts of a status this kubelet decides, as a comparable value. Fields the API server
/// or other writers add (qosClass, resources, ...) are left out so they never cause a write.
fn summary(status: &Value) -> Value {
    let containers = |key: &str| -> Value {
        match status.get(key).and_then(Value::as_array) {
            None => Value::Null,
            Some(list) => Value::Array(
                list.iter()
                    .map(|c| {
                        json!([
                            c.get("name"),
                            c.get("ready"),
                            c.get("started"),
                            c.get("containerID"),
                            c.get("state"),
                        ])
                    })
                    .collect(),
            ),
        }
    };
    let conditions = match status.get("conditions").and_then(Value::as_array) {
        None => Value::Null,
        Some(list) => Value::Array(
            list.iter()
                .map(|c| json!([c.get("type"), c.get("status"), c.get("reason")]))
                .collect(),
        ),
    };
    json!([
        status.get("phase"),
        status.get("reason"),
        status.get("podIP"),
        status.get("hostIP"),
        status.get("startTime"),
        conditions,
        containers("containerStatuses"),
        containers("initContainerStatuses"),
    ])
}

/// The image reference as containerd reports it (`busybox` is
/// `docker.io/library/busybox:latest`) and its repository (for the image ID).
pub fn normalize_image(image: &str) -> (String, String) {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_segment_start = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_segment_start..].rfind(':') {
        Some(i) => (
            &name[..last_segment_start + i],
            Some(&name[last_segment_start + i + 1..]),
        ),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full_repo = if has_registry {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    let reference = match (tag, digest) {
        (_, Some(d)) => format!("{full_repo}@{d}"),
        (Some(t), None) => format!("{full_repo}:{t}"),
        (None, None) => format!("{full_repo}:latest"),
    };
    (reference, full_repo)
}

/// A stable 64-hex-digit identifier from some strings (FNV-1a over four seeds): stands in
/// for container IDs and image digests, which only need to look like them and not change.
pub fn hex_digest(parts: &[&str]) -> String {
    let mut out = String::with_capacity(64);
    for seed in 0u64..4 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for part in parts {
            for b in part.bytes().chain(std::iter::once(0)) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// RFC 3339 with seconds, as metav1.Time is written.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

fn unsigned(d: SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml_json: Value) -> Pod {
        serde_json::from_value(yaml_json).expect("test pod")
    }

    fn facts() -> NodeFacts<'static> {
        NodeFacts {
            host_ip: Ipv4Addr::new(172, 20, 0, 1),
            runtime_scheme: "skiff-sim",
            default_run_time: Duration::from_secs(2),
            termination_grace_cap: Duration::from_secs(1),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 5);

    fn web(annotations: Value, restart: &str, status: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {
                "nodeName": "sim-0",
                "restartPolicy": restart,
                "initContainers": [
                    {"name": "setup", "image": "busybox"},
                    {"name": "proxy", "image": "envoy:v1", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "reg.local:5000/x/log"}]
            },
            "status": status
        }))
    }

    fn written(action: PodAction) -> (Value, Option<Duration>) {
        match action {
            PodAction::WriteStatus {
                status,
                recheck_after,
            } => (status, recheck_after),
            other => panic!("expected a status write, got {other:?}"),
        }
    }

    fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap()
    }

    #[test]
    fn a_new_pod_is_reported_running_and_ready_as_kubelet_does() {
        let now = at("2026-01-01T10:00:00Z");
        let (s, recheck) = written(decide(
            &web(
                json!({}),
                "Always",
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            ),
            &facts(),
            IP,
            now,
        ));
        assert_eq!(recheck, None);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.5");
        assert_eq!(s["podIPs"], json!([{"ip": "10.42.0.5"}]));
        assert_eq!(s["hostIP"], "172.20.0.1");
        assert_eq!(s["startTime"], "2026-01-01T10:00:00Z");
        let types: Vec<&str> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "True"));
        let app = &s["containerStatuses"][0];
        assert_eq!(app["name"], "app");
        assert_eq!(app["image"], "docker.io/library/nginx:1.27");
        assert!(app["imageID"]
            .as_str()
            .unwrap()
            .starts_with("docker.io/library/nginx@sha256:"));
        assert!(app["containerID"]
            .as_str()
            .unwrap()
            .starts_with("skiff-sim://"));
        assert_eq!(app["ready"], true);
        assert_eq!(app["started"], true);
        assert_eq!(app["restartCount"], 0);
        assert_eq!(app["state"]["running"]["startedAt"], "2026-01-01T10:00:00Z");
        assert_eq!(
            s["containerStatuses"][1]["image"],
            "reg.local:5000/x/log:latest"
        );
        // Init containers: the plain one terminated Completed, the sidecar running.
        let setup = &s["initContainerStatuses"][0];
        assert_eq!(setup["state"]["terminated"]["reason"], "Completed");
        assert_eq!(setup["state"]["terminated"]["exitCode"], 0);
        assert_eq!(setup["ready"], true);
        let proxy = &s["initContainerStatuses"][1];
        assert!(proxy["state"]["running"].is_object());
        assert_eq!(proxy["started"], true);
    }

    #[test]
    fn a_reported_status_is_not_written_again() {
        let now = at("2026-01-01T10:00:00Z");
        let first = web(json!({}), "Always", json!({"phase": "Pending"}));
        let (s, _) = written(decide(&first, &facts(), IP, now));
        let mut status = s.clone();
        status["qosClass"] = json!("BestEffort");
        let second = web(json!({}), "Always", status);
        let later = at("2026-01-01T10:05:00Z");
        assert_eq!(decide(&second, &facts(), IP, later), PodAction::Wait(None));
    }

    #[test]
    fn finite_pods_run_then_succeed_or_fail_by_annotation() {
        let start = at("2026-01-01T10:00:00Z");
        let cases: &[(Value, &str, i64, &str, &str, i64)] = &[
            // annotations, restartPolicy, seconds after start, phase, container reason, exit
            (json!({}), "Never", 1, "Running", "", 0),
            (json!({}), "Never", 2, "Succeeded", "Completed", 0),
            (json!({}), "OnFailure", 3, "Succeeded", "Completed", 0),
            (
                json!({EXIT_CODE_ANNOTATION: "3"}),
                "Never",
                2,
                "Failed",
                "Error",
                3,
            ),
            (
                json!({RUN_SECONDS_ANNOTATION: "30"}),
                "Never",
                29,
                "Running",
                "",
                0,
            ),
            (
                json!({RUN_SECONDS_ANNOTATION: "30"}),
                "Never",
                30,
                "Succeeded",
                "Completed",
                0,
            ),
            (
                json!({RUN_SECONDS_ANNOTATION: "1"}),
                "Always",
                3600,
                "Running",
                "",
                0,
            ),
        ];
        for (annotations, restart, after, phase, reason, exit) in cases {
            let running = web(
                annotations.clone(),
                restart,
                json!({"phase": "Running", "startTime": "2026-01-01T10:00:00Z"}),
            );
            let now = start + SignedDuration::from_secs(*after);
            let (s, _) = written(decide(&running, &facts(), IP, now));
            assert_eq!(s["phase"], *phase, "{annotations} {restart} +{after}s");
            if !reason.is_empty() {
                let t = &s["containerStatuses"][0]["state"]["terminated"];
                assert_eq!(t["reason"], *reason);
                assert_eq!(t["exitCode"], *exit);
                assert_eq!(s["containerStatuses"][0]["ready"], false);
                let want = if *exit == 0 {
                    "PodCompleted"
                } else {
                    "PodFailed"
                };
                assert_eq!(cond(&s, "Ready")["reason"], want);
                assert_eq!(cond(&s, "Ready")["status"], "False");
            }
        }
    }

    #[test]
    fn running_finite_pod_asks_to_be_looked_at_when_it_ends() {
        let p = web(
            json!({RUN_SECONDS_ANNOTATION: "10"}),
            "Never",
            json!({"phase": "Pending"}),
        );
        let (_, recheck) = written(decide(&p, &facts(), IP, at("2026-01-01T10:00:00Z")));
        assert_eq!(recheck, Some(Duration::from_secs(10)));
    }

    #[test]
    fn readiness_can_come_later() {
        let p = web(
            json!({READY_AFTER_ANNOTATION: "5"}),
            "Always",
            json!({"phase": "Pending"}),
        );
        let start = at("2026-01-01T10:00:00Z");
        let (s, recheck) = written(decide(&p, &facts(), IP, start));
        assert_eq!(recheck, Some(Duration::from_secs(5)));
        assert_eq!(s["phase"], "Running");
        assert_eq!(cond(&s, "Ready")["status"], "False");
        assert_eq!(cond(&s, "Ready")["reason"], "ContainersNotReady");
        assert_eq!(
            cond(&s, "Ready")["message"],
            "containers with unready status: [app log]"
        );
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        let not_ready = web(json!({READY_AFTER_ANNOTATION: "5"}), "Always", s);
        let later = start + SignedDuration::from_secs(6);
        let (s, recheck) = written(decide(&not_ready, &facts(), IP, later));
        assert_eq!(recheck, None);
        assert_eq!(cond(&s, "Ready")["status"], "True");
        assert_eq!(
            cond(&s, "Ready")["lastTransitionTime"],
            "2026-01-01T10:00:05Z"
        );
    }

    #[test]
    fn bad_annotations_reject_the_pod_with_a_message() {
        for (key, value) in [
            (EXIT_CODE_ANNOTATION, "boom"),
            (EXIT_CODE_ANNOTATION, "300"),
            (RUN_SECONDS_ANNOTATION, "-1"),
            (READY_AFTER_ANNOTATION, "soon"),
        ] {
            let p = web(json!({key: value}), "Never", json!({"phase": "Pending"}));
            let (s, _) = written(decide(&p, &facts(), IP, at("2026-01-01T10:00:00Z")));
            assert_eq!(s["phase"], "Failed", "{key}={value}");
            assert_eq!(s["reason"], "SimulationRejected");
            assert!(s["message"].as_str().unwrap().contains(key), "{s}");
        }
    }

    #[test]
    fn finished_pods_are_left_alone() {
        for phase in ["Succeeded", "Failed"] {
            let p = web(json!({}), "Never", json!({"phase": phase}));
            assert_eq!(
                decide(&p, &facts(), IP, at("2026-01-01T10:00:00Z")),
                PodAction::Wait(None)
            );
        }
    }

    #[test]
    fn deleted_pods_stop_within_the_cap_then_are_deleted() {
        // Deleted at 10:00:00 with grace 30 s: deletionTimestamp 10:00:30; cap 1 s.
        let p = pod(json!({
            "metadata": {"name": "web", "uid": "u1",
                "deletionTimestamp": "2026-01-01T10:00:30Z", "deletionGracePeriodSeconds": 30},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": "Running"}
        }));
        assert_eq!(
            decide(&p, &facts(), IP, at("2026-01-01T10:00:00Z")),
            PodAction::Wait(Some(Duration::from_secs(1)))
        );
        assert_eq!(
            decide(&p, &facts(), IP, at("2026-01-01T10:00:01Z")),
            PodAction::Delete
        );
        let mut no_cap = facts();
        no_cap.termination_grace_cap = Duration::ZERO;
        assert_eq!(
            decide(&p, &no_cap, IP, at("2026-01-01T10:00:00Z")),
            PodAction::Delete
        );
    }

    #[test]
    fn host_network_pods_use_the_node_address() {
        let p = pod(json!({
            "metadata": {"name": "h", "uid": "u2"},
            "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x"}]},
        }));
        let (s, _) = written(decide(&p, &facts(), IP, at("2026-01-01T10:00:00Z")));
        assert_eq!(s["podIP"], "172.20.0.1");
    }

    #[test]
    fn images_are_normalized_as_containerd_reports_them() {
        let cases = [
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
            ),
            (
                "nginx:1.27",
                "docker.io/library/nginx:1.27",
                "docker.io/library/nginx",
            ),
            (
                "bitnami/redis:7",
                "docker.io/bitnami/redis:7",
                "docker.io/bitnami/redis",
            ),
            (
                "localhost:5000/app",
                "localhost:5000/app:latest",
                "localhost:5000/app",
            ),
            (
                "quay.io/x/y@sha256:ab",
                "quay.io/x/y@sha256:ab",
                "quay.io/x/y",
            ),
        ];
        for (image, reference, repo) in cases {
            assert_eq!(
                normalize_image(image),
                (reference.into(), repo.into()),
                "{image}"
            );
        }
    }
}
