//! One pod's worker: a task that owns everything the node does for that pod. Each turn it
//! reads what runs from disk ([`observe`]), asks [`decide`] what to do, writes the status if
//! it changed, and carries out the actions (sandbox, image pull, container start and stop,
//! teardown, the final delete). It sleeps until the pod changes in the API, one of its
//! containers exits (a pidfd on the container's shim), or a back-off ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use runtime::shim::{ClientError, KillOutcome, PidFd, RunningContainer, Signal};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use super::backoff;
use super::container::{self, StartError};
use super::context::NodeContext;
use super::decide::{decide, Action, Inputs, Waiting};
use super::hooks;
use super::layout::AttemptPaths;
use super::observe::{observe, AttemptState, Observed, StartFailure, START_FAILURE};
use super::probes::{self, Kind, ProbeBoard};
use super::sandbox::{self, PodRecord};

/// How long a retry waits after a failure that has no back-off of its own (a sandbox that
/// could not be made, a ConfigMap that is missing).
const RETRY: Duration = Duration::from_secs(5);
/// How long ErrImagePull shows before it turns into ImagePullBackOff.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);
/// How often a long pull reports how far it is (a `Pulling` event; kubelet has none).
const PULL_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often configMap, secret, downwardAPI and projected volumes are re-written from the
/// API (kubelet: its sync period, one minute, plus its object cache's TTL).
const VOLUME_REFRESH: Duration = Duration::from_secs(20);

/// What the worker hears from outside: the pod as the API has it now (None: gone).
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

/// A pod worker's running state that is not on disk.
struct Worker {
    ctx: Arc<NodeContext>,
    uid: String,
    record: Option<PodRecord>,
    waiting: BTreeMap<String, Waiting>,
    /// Per container: the image-pull back-off (duration, last failure).
    pull_backoff: BTreeMap<String, (Duration, Timestamp)>,
    /// When ErrImagePull turns into ImagePullBackOff, per container.
    pull_flip: BTreeMap<String, Timestamp>,
    /// (container, attempt) whose exit is being watched.
    watched: HashSet<(String, u32)>,
    /// (container, attempt) being stopped.
    stopping: HashSet<(String, u32)>,
    /// Exited attempts whose root filesystem has been released.
    released: HashSet<(String, u32)>,
    sandbox_retry_at: Option<Timestamp>,
    /// The previous turn made the sandbox: this turn's status (the pod's address, still
    /// ContainerCreating) is not written when the turn goes on to start a container, as
    /// kubelet makes the sandbox and starts the containers in one sync and reports the pod
    /// once after it. Saves a status write, and its round trip, per pod start.
    sandbox_just_made: bool,
    /// Container names whose CrashLoopBackOff event was recorded for the current attempt.
    backoff_reported: HashSet<(String, u32)>,
    /// When the pod's API-backed volumes were last re-written.
    volumes_refreshed: Instant,
    /// The status this worker last wrote and the resourceVersion the write produced: a
    /// turn that runs before the watch delivers that write sees the older pod and must not
    /// write the same status again.
    last_written: Option<(PodStatus, u64)>,
    /// What the probes concluded, shared with the probers.
    board: ProbeBoard,
    /// Running probers by (container, attempt, kind).
    probers: HashMap<(String, u32, Kind), tokio::task::JoinHandle<()>>,
    reports_tx: mpsc::UnboundedSender<probes::Report>,
    wake_tx: mpsc::UnboundedSender<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for (_, p) in self.probers.drain() {
            p.abort();
        }
    }
}

pub async fn run(ctx: Arc<NodeContext>, uid: String, mut updates: PodUpdates) {
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let mut w = Worker {
        board: ProbeBoard::default(),
        probers: HashMap::new(),
        reports_tx,
        record: sandbox::read_record(&ctx.layout, &uid),
        ctx,
        uid,
        waiting: BTreeMap::new(),
        pull_backoff: BTreeMap::new(),
        pull_flip: BTreeMap::new(),
        watched: HashSet::new(),
        stopping: HashSet::new(),
        released: HashSet::new(),
        sandbox_retry_at: None,
        sandbox_just_made: false,
        backoff_reported: HashSet::new(),
        volumes_refreshed: Instant::now(),
        last_written: None,
        wake_tx,
    };
    loop {
        let pod = updates.borrow_and_update().clone();
        let Some(pod) = pod else {
            w.forget().await;
            return;
        };
        let (again, wake_at, finished) = w.turn(&pod).await;
        if finished {
            return;
        }
        if again {
            continue;
        }
        let sleep = wake_at.map(|t| {
            let d = t.duration_since(Timestamp::now());
            let secs = d.as_secs_f64().max(0.0);
            Duration::from_secs_f64(secs) + Duration::from_millis(5)
        });
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    // The manager is gone (agent shutting down): leave everything running.
                    return;
                }
            }
            _ = wake_rx.recv() => {}
            Some(report) = reports_rx.recv() => w.probe_report(&pod, report),
            _ = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

impl Worker {
    /// One turn. Returns (look again at once, wake-up time, the worker is finished).
    async fn turn(&mut self, pod: &Pod) -> (bool, Option<Timestamp>, bool) {
        let now = Timestamp::now();
        self.flip_pull_errors(pod, now);
        let ready = sandbox::is_ready(&self.ctx.layout, &self.uid);
        let observed = observe(&self.ctx.layout, &self.uid, ready);
        self.watch_exits(&observed);
        self.run_probers(pod, &observed);
        self.release_exited(&observed).await;
        let pod_ip = sandbox::pod_ip(&self.ctx.layout, &self.uid);
        let decision = decide(&Inputs {
            pod,
            observed: &observed,
            waiting: &self.waiting,
            host_ip: &self.ctx.host_ip,
            pod_ip: pod_ip.as_deref(),
            now,
            probes: &self.board.lock().map(|b| b.clone()).unwrap_or_default(),
        });
        self.report_backoffs(pod, &decision.status);
        let starts_now = decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::Start { .. }));
        if !(std::mem::take(&mut self.sandbox_just_made) && starts_now) {
            self.write_status(pod, &decision.status).await;
        }

        let mut wake_at = decision.wake_at;
        for t in self.pull_flip.values().chain(self.sandbox_retry_at.iter()) {
            wake_at = Some(wake_at.map_or(*t, |w: Timestamp| w.min(*t)));
        }
        if ready && has_api_volumes(pod) {
            if self.volumes_refreshed.elapsed() >= VOLUME_REFRESH {
                super::volumes::refresh(&self.ctx, pod, &self.uid).await;
                self.volumes_refreshed = Instant::now();
            }
            let next = now + VOLUME_REFRESH.saturating_sub(self.volumes_refreshed.elapsed());
            wake_at = Some(wake_at.map_or(next, |w: Timestamp| w.min(next)));
        }
        let mut again = false;
        for action in decision.actions {
            match action {
                Action::CreateSandbox => {
                    if self.sandbox_retry_at.is_some_and(|t| t > now) {
                        continue;
                    }
                    let made = self.create_sandbox(pod).await;
                    self.sandbox_just_made = made;
                    again |= made;
                }
                Action::Start {
                    container,
                    init,
                    attempt,
                } => {
                    let Some(spec) = find_container(pod, &container, init) else {
                        continue;
                    };
                    self.start(pod, &spec, attempt).await;
                    again = true;
                }
                Action::Stop {
                    container,
                    attempt,
                    grace,
                    unhealthy,
                } => {
                    let message = if unhealthy {
                        format!("Container {container} failed liveness probe, will be restarted")
                    } else {
                        format!("Stopping container {container}")
                    };
                    self.stop(pod, &container, attempt, grace, message)
                }
                Action::TeardownSandbox => {
                    if let Some(record) = self.record.clone() {
                        let layout = self.ctx.layout.clone();
                        let network = self.ctx.network.clone();
                        let _permit = self.ctx.runtime_ops.acquire().await;
                        let result = tokio::task::spawn_blocking(move || {
                            sandbox::teardown(&layout, &record, Some(&network))
                        })
                        .await;
                        if let Ok(Err(e)) = result {
                            tracing::warn!(pod = %self.uid, "tearing the sandbox down: {e}");
                            wake_at = Some(now + Duration::from_secs(5));
                        }
                    }
                }
                Action::DeletePod => {
                    if self.delete_pod(pod).await {
                        self.remove_all().await;
                        return (false, None, true);
                    }
                    wake_at = Some(now + Duration::from_secs(1));
                }
            }
        }
        (again, wake_at, false)
    }

    async fn create_sandbox(&mut self, pod: &Pod) -> bool {
        let qos = super::resources::qos_class(pod).as_str();
        let record = PodRecord::of(pod, qos);
        let layout = self.ctx.layout.clone();
        let (p, r) = (pod.clone(), record.clone());
        let network = self.ctx.network.clone();
        let dns = super::dns_config::pod_dns(pod, &self.ctx.dns);
        for warning in &dns.warnings {
            self.event(
                pod,
                EventType::Warning,
                warning.reason,
                warning.message.clone(),
            );
        }
        let resolv_conf = dns.config.to_resolv_conf();
        let _permit = self.ctx.sandbox_ops.acquire().await;
        let result = tokio::task::spawn_blocking(move || {
            sandbox::create(&layout, &p, &r, &network, &resolv_conf)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                self.record = Some(record);
                self.sandbox_retry_at = None;
                true
            }
            Ok(Err(e)) => {
                self.event(
                    pod,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                self.sandbox_retry_at = Some(Timestamp::now() + RETRY);
                false
            }
            Err(e) => {
                tracing::error!("sandbox task: {e}");
                self.sandbox_retry_at = Some(Timestamp::now() + RETRY);
                false
            }
        }
    }

    /// Pulls the image if needed, builds the configuration, starts the shim. Anything that
    /// fails before the shim runs becomes a waiting reason; a container the shim could not
    /// start becomes an attempt that ended with StartError.
    async fn start(&mut self, pod: &Pod, c: &Container, attempt: u32) {
        let image = match self.ensure_image(pod, c).await {
            Some(image) => image,
            None => return,
        };
        let record = match &self.record {
            Some(r) => r.clone(),
            None => return,
        };
        let prepared = match container::prepare(&self.ctx, pod, &record, c, &image, attempt).await {
            Ok(p) => p,
            Err(StartError::Config { reason, message }) => {
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: reason.to_string(),
                        message,
                        retry_at: Some(Timestamp::now() + RETRY),
                    },
                );
                return;
            }
            Err(StartError::Volume { message }) => {
                self.event(pod, EventType::Warning, "FailedMount", message);
                let init = find_container(pod, &c.name, true).is_some();
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: if init {
                            "PodInitializing"
                        } else {
                            "ContainerCreating"
                        }
                        .into(),
                        message: String::new(),
                        retry_at: Some(Timestamp::now() + RETRY),
                    },
                );
                return;
            }
        };
        for (reason, message) in &prepared.warnings {
            self.event(pod, EventType::Warning, reason, message.clone());
        }
        self.waiting.remove(&c.name);
        let ctx = self.ctx.clone();
        let paths = prepared.paths.clone();
        let permit = self.ctx.runtime_ops.acquire().await;
        let outcome = tokio::task::spawn_blocking(move || {
            crate::node::image_gc::record_use(&ctx.layout, &prepared.record.image_id);
            container::launch(&ctx, &prepared)
        })
        .await;
        drop(permit);
        match outcome {
            Ok(Ok(_running)) => {
                self.event(
                    pod,
                    EventType::Normal,
                    "Created",
                    format!("Created container {}", c.name),
                );
                self.event(
                    pod,
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
                if let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                    let target = self.hook_target(pod, &c.name, attempt);
                    let failure = tokio::task::spawn_blocking(move || {
                        hooks::run(&handler, &target, Duration::from_secs(30))
                    })
                    .await
                    .unwrap_or_else(|e| Some(e.to_string()));
                    if let Some(m) = failure {
                        self.event(
                            pod,
                            EventType::Warning,
                            "FailedPostStartHook",
                            format!("PostStartHook failed: {m}"),
                        );
                        let grace = super::decide::grace_period(pod);
                        self.stop(
                            pod,
                            &c.name,
                            attempt,
                            grace,
                            format!(
                                "FailedPostStartHook: container {} will be restarted",
                                c.name
                            ),
                        );
                    }
                }
            }
            Ok(Err(e)) => {
                let message = container::start_error_message(c, &e);
                self.start_failed(pod, c, &paths, &message).await
            }
            Err(e) => self.start_failed(pod, c, &paths, &e.to_string()).await,
        }
    }

    async fn start_failed(
        &mut self,
        pod: &Pod,
        c: &Container,
        paths: &AttemptPaths,
        message: &str,
    ) {
        let failure = StartFailure {
            message: message.to_string(),
            at: Timestamp::now().to_string(),
        };
        if let Err(e) = runtime::shim::write_json_atomic(&paths.dir.join(START_FAILURE), &failure) {
            tracing::error!("recording the start failure of {}: {e}", c.name);
        }
        let merged = paths.rootfs_merged();
        let _ =
            tokio::task::spawn_blocking(move || runtime::sandbox::overlay::unmount(&merged)).await;
        self.event(
            pod,
            EventType::Warning,
            "Failed",
            format!("Error: {message}"),
        );
    }

    /// The image for `c`, by its pull policy; None (with a waiting reason set) when it is
    /// not available.
    async fn ensure_image(&mut self, pod: &Pod, c: &Container) -> Option<runtime::images::Image> {
        let name = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            // Upstream's default: Always for `:latest` or no tag, unless pinned by digest.
            let pinned = name.contains('@') || (tag_given(&name) && !name.ends_with(":latest"));
            if pinned {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let store = self.ctx.images.clone();
        let lookup = {
            let (store, name) = (store.clone(), name.clone());
            tokio::task::spawn_blocking(move || store.get(&name))
                .await
                .ok()
        };
        let present = lookup.and_then(|r| r.ok());
        match (policy.as_str(), present) {
            ("Never", Some(image)) | ("IfNotPresent", Some(image)) => {
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{name}\" already present on machine"),
                );
                Some(image)
            }
            ("Never", None) => {
                let message =
                    format!("Container image \"{name}\" is not present with pull policy of Never");
                self.event(
                    pod,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ErrImageNeverPull".into(),
                        message,
                        retry_at: Some(Timestamp::now() + RETRY),
                    },
                );
                None
            }
            _ => self.pull(pod, c, &name).await,
        }
    }

    async fn pull(
        &mut self,
        pod: &Pod,
        c: &Container,
        name: &str,
    ) -> Option<runtime::images::Image> {
        self.event(
            pod,
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{name}\""),
        );
        let started = Instant::now();
        let credentials = container::pull_credentials(&self.ctx, pod, name).await;
        let store = self.ctx.images.clone();
        let (progress_tx, progress) = watch::channel(runtime::images::Progress::default());
        let report = move |p| {
            progress_tx.send_replace(p);
        };
        let pulling = runtime::images::pull(&store, name, &credentials, &report);
        let result = reporting_progress(pulling, &progress, PULL_PROGRESS_EVERY, |now| {
            self.event(
                pod,
                EventType::Normal,
                "Pulling",
                format!("Pulling image \"{name}\": {now}"),
            );
        })
        .await;
        match result {
            Ok(image) => {
                // A tag that moved on leaves its old image behind; gone unless it runs.
                let ctx = self.ctx.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    crate::node::image_gc::prune_dangling(&ctx.images, &ctx.layout)
                })
                .await;
                let took = started.elapsed().as_secs_f64();
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{name}\" in {took:.3}s ({took:.3}s including waiting). Image size: {} bytes.",
                        image.size
                    ),
                );
                self.pull_backoff.remove(&c.name);
                self.pull_flip.remove(&c.name);
                Some(image)
            }
            Err(e) => {
                let now = Timestamp::now();
                let entry = backoff::next(self.pull_backoff.get(&c.name).copied(), now);
                self.pull_backoff.insert(c.name.clone(), entry);
                let message = format!("failed to pull and unpack image \"{name}\": {e}");
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{name}\": {message}"),
                );
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull".into(),
                );
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "ErrImagePull".into(),
                        message,
                        retry_at: Some(backoff::add(now, entry.0)),
                    },
                );
                self.pull_flip
                    .insert(c.name.clone(), now + PULL_ERROR_SHOWN);
                None
            }
        }
    }

    /// ErrImagePull shows for a moment, then the container waits in ImagePullBackOff.
    fn flip_pull_errors(&mut self, pod: &Pod, now: Timestamp) {
        let due: Vec<String> = self
            .pull_flip
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.pull_flip.remove(&name);
            let image = find_any_container(pod, &name)
                .and_then(|c| c.image)
                .unwrap_or_default();
            if let Some(w) = self.waiting.get_mut(&name) {
                if w.reason == "ErrImagePull" {
                    w.reason = "ImagePullBackOff".into();
                    w.message = format!("Back-off pulling image \"{image}\"");
                    self.event(
                        pod,
                        EventType::Normal,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                    );
                    self.event(
                        pod,
                        EventType::Warning,
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                    );
                }
            }
        }
    }

    /// Records kubelet's BackOff event once per crash-looping attempt.
    fn report_backoffs(&mut self, pod: &Pod, status: &PodStatus) {
        let statuses = status
            .container_statuses
            .iter()
            .chain(status.init_container_statuses.iter())
            .flatten();
        let mut events = Vec::new();
        for s in statuses {
            let crash_looping = s
                .state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
            if crash_looping
                && self
                    .backoff_reported
                    .insert((s.name.clone(), s.restart_count as u32))
            {
                events.push(format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    s.name,
                    pod.metadata.name.as_deref().unwrap_or(""),
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    self.uid
                ));
            }
        }
        for message in events {
            self.event(pod, EventType::Warning, "BackOff", message);
        }
    }

    fn stop(&mut self, pod: &Pod, container: &str, attempt: u32, grace: Duration, message: String) {
        if !self.stopping.insert((container.to_string(), attempt)) {
            return;
        }
        self.event(pod, EventType::Normal, "Killing", message);
        let dir = self.ctx.layout.attempt_dir(&self.uid, container, attempt);
        let shim = dir.join("shim");
        let stop_signal = container::stop_signal(&dir);
        let wake = self.wake_tx.clone();
        let pre_stop = find_any_container(pod, container)
            .and_then(|c| c.lifecycle.and_then(|l| l.pre_stop))
            .map(|h| (h, self.hook_target(pod, container, attempt)));
        let (events_pod, recorder) = (pod.clone(), self.ctx.recorder.clone());
        let name = container.to_string();
        tokio::task::spawn_blocking(move || {
            let mut grace = grace;
            if let Some((handler, target)) = pre_stop {
                let (left, failure) = hooks::pre_stop(&handler, &target, grace);
                grace = left;
                if let Some(m) = failure {
                    record(
                        &recorder,
                        &events_pod,
                        EventType::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed for container {name}: {m}"),
                    );
                }
            }
            if let Err(e) = stop_blocking(&shim, stop_signal, grace) {
                tracing::warn!("stopping the container in {}: {e}", shim.display());
            }
            let _ = wake.send(());
        });
    }

    /// Where hooks and probes of one attempt run.
    fn hook_target(&self, pod: &Pod, container: &str, attempt: u32) -> probes::Target {
        let netns = self
            .record
            .as_ref()
            .filter(|r| !r.host_network)
            .map(|_| self.ctx.layout.netns(&self.uid));
        probes::Target {
            netns,
            shim_dir: self
                .ctx
                .layout
                .attempt_dir(&self.uid, container, attempt)
                .join("shim"),
            binary: self.ctx.exec_binary.clone(),
            ports: find_any_container(pod, container)
                .and_then(|c| c.ports)
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p.name?, p.container_port)))
                .collect(),
        }
    }

    /// Starts the probers of running attempts and stops those of attempts that ended.
    fn run_probers(&mut self, pod: &Pod, observed: &Observed) {
        let running: HashMap<String, u32> = observed
            .running()
            .map(|(n, a)| (n.to_string(), a.number))
            .collect();
        // A prober that finished (a startup probe that succeeded) stays listed so it is
        // not started again for the same attempt.
        self.probers.retain(|(name, attempt, _), task| {
            let alive = running.get(name) == Some(attempt);
            if !alive {
                task.abort();
            }
            alive
        });
        let netns = self
            .record
            .as_ref()
            .filter(|r| !r.host_network)
            .map(|_| self.ctx.layout.netns(&self.uid));
        for (name, attempt) in running {
            let Some(c) = find_any_container(pod, &name) else {
                continue;
            };
            if let Ok(mut board) = self.board.lock() {
                let fresh = board.get(&name).is_none_or(|v| v.attempt != attempt);
                if fresh {
                    board.insert(name.clone(), probes::initial(&c, attempt));
                }
            }
            let kinds = [
                (Kind::Startup, c.startup_probe.clone()),
                (Kind::Liveness, c.liveness_probe.clone()),
                (Kind::Readiness, c.readiness_probe.clone()),
            ];
            for (kind, probe) in kinds {
                let Some(probe) = probe else { continue };
                let key = (name.clone(), attempt, kind);
                if self.probers.contains_key(&key) {
                    continue;
                }
                let target = probes::Target {
                    netns: netns.clone(),
                    shim_dir: self
                        .ctx
                        .layout
                        .attempt_dir(&self.uid, &name, attempt)
                        .join("shim"),
                    binary: self.ctx.exec_binary.clone(),
                    ports: c
                        .ports
                        .iter()
                        .flatten()
                        .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                        .collect(),
                };
                let task = tokio::spawn(probes::prober(
                    name.clone(),
                    attempt,
                    kind,
                    probe,
                    target,
                    self.board.clone(),
                    self.reports_tx.clone(),
                ));
                self.probers.insert(key, task);
            }
        }
    }

    /// A prober's news: a failed run is an Unhealthy event; any turn means a new status.
    fn probe_report(&mut self, pod: &Pod, report: probes::Report) {
        if let Some(message) = report.message {
            self.event(
                pod,
                EventType::Warning,
                "Unhealthy",
                format!("{} probe failed: {message}", report.kind.name()),
            );
        }
        // A success with a warning (an httpGet probe that ended on a redirect elsewhere).
        if let Some(warning) = report.warning {
            self.event(
                pod,
                EventType::Warning,
                "ProbeWarning",
                format!("{} probe warning: {warning}", report.kind.name()),
            );
        }
        let _ = report.container;
    }

    /// Watches each running attempt's shim: its exit wakes the worker.
    fn watch_exits(&mut self, observed: &Observed) {
        for (name, attempt) in observed.running() {
            let key = (name.to_string(), attempt.number);
            if self.watched.contains(&key) {
                continue;
            }
            let shim_dir = self
                .ctx
                .layout
                .attempt_dir(&self.uid, name, attempt.number)
                .join("shim");
            let Ok(running) = RunningContainer::adopt(&shim_dir) else {
                continue;
            };
            let Ok(pidfd) = PidFd::open(running.shim_pid()) else {
                continue;
            };
            self.watched.insert(key);
            let wake = self.wake_tx.clone();
            tokio::spawn(async move {
                // SAFETY: the pidfd is owned by the handle, which the AsyncFd owns for its
                // whole life, and always returns the same descriptor.
                let registered = unsafe {
                    AsyncFd::register_with_interest(
                        PidFdHandle(pidfd),
                        tokio::io::Interest::READABLE,
                    )
                };
                if let Ok(fd) = registered {
                    let _ = fd.readable().await;
                }
                let _ = wake.send(());
            });
        }
    }

    /// Unmounts the root filesystem of attempts that have ended (a restart gets a fresh
    /// one, as upstream's new container does) and drops their writable layer.
    async fn release_exited(&mut self, observed: &Observed) {
        let mut dirs = Vec::new();
        for (name, attempts) in &observed.containers {
            for a in attempts {
                if matches!(a.state, AttemptState::Exited { .. })
                    && self.released.insert((name.clone(), a.number))
                {
                    dirs.push(AttemptPaths {
                        dir: self.ctx.layout.attempt_dir(&self.uid, name, a.number),
                    });
                }
            }
        }
        if dirs.is_empty() {
            return;
        }
        let _permit = self.ctx.runtime_ops.acquire().await;
        let _ = tokio::task::spawn_blocking(move || {
            for paths in dirs {
                if runtime::sandbox::overlay::unmount(&paths.rootfs_merged()).is_ok() {
                    let _ = std::fs::remove_dir_all(paths.dir.join("rootfs"));
                }
            }
        })
        .await;
    }

    async fn write_status(&mut self, pod: &Pod, status: &PodStatus) {
        let old = pod.status.clone().unwrap_or_default();
        if &old == status || already_written(self.last_written.as_ref(), pod, status) {
            return;
        }
        let mut value = serde_json::to_value(status).unwrap_or_default();
        // Fields this kubelet once set and no longer does are removed explicitly.
        for key in ["reason", "message"] {
            if value.get(key).is_none() {
                value[key] = serde_json::Value::Null;
            }
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({ "status": value });
        match patch_status(&self.ctx.client, namespace, name, &patch).await {
            Ok(written_rv) => {
                self.last_written = written_rv.map(|rv| (status.clone(), rv));
            }
            Err(e) => {
                self.last_written = None;
                tracing::debug!(pod = name, "writing the pod status: {e}");
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> bool {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!("deleting the stopped pod {:?}: {e}", pod.metadata.name);
                false
            }
        }
    }

    /// The pod is gone from the API: stop what still runs, at once, and remove everything.
    async fn forget(&mut self) {
        let observed = observe(&self.ctx.layout, &self.uid, false);
        let mut stops = Vec::new();
        for (name, attempt) in observed.running() {
            let shim = self
                .ctx
                .layout
                .attempt_dir(&self.uid, name, attempt.number)
                .join("shim");
            stops.push(tokio::task::spawn_blocking(move || {
                stop_blocking(&shim, Signal::SIGTERM, Duration::from_secs(2))
            }));
        }
        for s in stops {
            let _ = s.await;
        }
        self.remove_all().await;
    }

    async fn remove_all(&mut self) {
        let record = self
            .record
            .clone()
            .or_else(|| sandbox::read_record(&self.ctx.layout, &self.uid));
        if let Some(record) = record {
            let layout = self.ctx.layout.clone();
            let network = self.ctx.network.clone();
            let result = tokio::task::spawn_blocking(move || {
                sandbox::remove(&layout, &record, Some(&network))
            })
            .await;
            if let Ok(Err(e)) = result {
                tracing::warn!(pod = %self.uid, "removing the pod's files: {e}");
            }
        } else {
            let _ = std::fs::remove_dir_all(self.ctx.layout.pod_dir(&self.uid));
        }
    }

    fn event(&self, pod: &Pod, type_: EventType, reason: &str, message: String) {
        record(&self.ctx.recorder, pod, type_, reason, message);
    }
}

/// Runs a pull to its end; while it runs, every `every` (the first time `every` after the
/// start, so a quick pull says nothing) hands `report` the latest progress, once the total
/// is known.
async fn reporting_progress<T>(
    pulling: impl std::future::Future<Output = T>,
    progress: &watch::Receiver<runtime::images::Progress>,
    every: Duration,
    mut report: impl FnMut(runtime::images::Progress),
) -> T {
    tokio::pin!(pulling);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut pulling => return result,
            _ = ticks.tick() => {
                let now = *progress.borrow();
                if now.total > 0 {
                    report(now);
                }
            }
        }
    }
}

/// Whether `status` is what this worker last wrote and `pod` is older than that write (the
/// watch has not delivered it yet), so writing it again would change nothing.
fn already_written(last: Option<&(PodStatus, u64)>, pod: &Pod, status: &PodStatus) -> bool {
    match (last, resource_version(pod)) {
        (Some((written, written_rv)), Some(seen_rv)) => written == status && seen_rv < *written_rv,
        _ => false,
    }
}

/// Merge-patches a pod's status as `Api::patch_status` does, and returns the written pod's
/// resourceVersion: of the pod the API server answers with, only that is decoded.
async fn patch_status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<Option<u64>, kube::Error> {
    use kube::Resource;
    #[derive(serde::Deserialize)]
    struct Written {
        metadata: WrittenMeta,
    }
    #[derive(serde::Deserialize)]
    struct WrittenMeta {
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
    }
    let mut req = kube::core::Request::new(Pod::url_path(&(), Some(namespace)))
        .patch_subresource(
            "status",
            name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("patch_status");
    let written: Written = client.request(req).await?;
    Ok(written
        .metadata
        .resource_version
        .and_then(|rv| rv.parse().ok()))
}

/// A pod's resourceVersion as a number (skiff's are; None if not).
fn resource_version(pod: &Pod) -> Option<u64> {
    pod.metadata.resource_version.as_deref()?.parse().ok()
}

/// Records kubelet's event about `pod` (never waits: see controllers::events).
fn record(
    recorder: &controllers::events::Recorder,
    pod: &Pod,
    type_: EventType,
    reason: &str,
    message: String,
) {
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    };
    recorder.record(
        Event {
            type_,
            reason: reason.to_string(),
            note: Some(message),
            action: reason.to_string(),
            secondary: None,
        },
        regarding,
    );
}

struct PidFdHandle(PidFd);

impl AsRawFd for PidFdHandle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The stop signal, then SIGKILL once `grace` has passed; returns when the shim has
/// recorded the exit.
fn stop_blocking(
    shim: &std::path::Path,
    signal: Signal,
    grace: Duration,
) -> Result<(), ClientError> {
    let running = RunningContainer::adopt(shim)?;
    if running.kill(signal)? == KillOutcome::AlreadyExited {
        return Ok(());
    }
    match running.wait_exit(Some(grace.max(Duration::from_millis(1)))) {
        Ok(_) => Ok(()),
        Err(ClientError::WaitTimeout(_)) => {
            running.kill(Signal::SIGKILL)?;
            running.wait_exit(Some(Duration::from_secs(30))).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

fn find_container(pod: &Pod, name: &str, init: bool) -> Option<Container> {
    let spec = pod.spec.as_ref()?;
    let list = if init {
        spec.init_containers.as_ref()?
    } else {
        &spec.containers
    };
    list.iter().find(|c| c.name == name).cloned()
}

/// Whether the pod has volumes whose files come from the API (and so are refreshed).
fn has_api_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
}

fn find_any_container(pod: &Pod, name: &str) -> Option<Container> {
    find_container(pod, name, false).or_else(|| find_container(pod, name, true))
}

/// Whether an image reference names a tag (a `:` after the last `/`).
fn tag_given(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::images::Progress;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_long_pull_reports_its_progress_now_and_then() {
        let (tx, rx) = watch::channel(Progress::default());
        let every = Duration::from_millis(40);
        let mut reports = Vec::new();
        let slow = async {
            for done in 1..=10u64 {
                tx.send_replace(Progress {
                    done: done * 10,
                    total: 100,
                });
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            "pulled"
        };
        let got = rt().block_on(reporting_progress(slow, &rx, every, |p| reports.push(p)));
        assert_eq!(got, "pulled");
        // Fewer reports than updates, each the latest at the time, growing.
        assert!(!reports.is_empty() && reports.len() < 10, "{reports:?}");
        assert!(
            reports.windows(2).all(|w| w[0].done < w[1].done),
            "{reports:?}"
        );
        assert!(reports.iter().all(|p| p.total == 100));
    }

    #[test]
    fn a_quick_pull_or_one_without_a_total_reports_nothing() {
        let (tx, rx) = watch::channel(Progress::default());
        let mut reports = Vec::new();
        let quick = async {
            tx.send_replace(Progress { done: 1, total: 2 });
        };
        rt().block_on(reporting_progress(
            quick,
            &rx,
            Duration::from_secs(5),
            |p| reports.push(p),
        ));
        assert!(reports.is_empty());
        // No manifest yet (total unknown): nothing to say, however long it takes.
        let (_tx, rx) = watch::channel(Progress::default());
        let waiting = async { tokio::time::sleep(Duration::from_millis(100)).await };
        rt().block_on(reporting_progress(
            waiting,
            &rx,
            Duration::from_millis(10),
            |p| reports.push(p),
        ));
        assert!(reports.is_empty());
    }
}
