//! Container lifecycle hooks as kubelet runs them: `postStart` right after the container
//! starts (a failure kills the container, which restarts by policy: FailedPostStartHook),
//! `preStop` before the stop signal, within the grace period (FailedPreStopHook). Handlers
//! are exec, httpGet and sleep (tcpSocket is accepted and ignored, as upstream does); exec
//! and httpGet run exactly like probes.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};

use super::probes::{self, Outcome, Target};

/// Runs `handler` against the container; blocking, bounded by `timeout`. Returns the
/// failure message, if it failed.
pub fn run(handler: &LifecycleHandler, target: &Target, timeout: Duration) -> Option<String> {
    if let Some(sleep) = &handler.sleep {
        std::thread::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout));
        return None;
    }
    if handler.exec.is_none() && handler.http_get.is_none() {
        return None;
    }
    let as_probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        ..Default::default()
    };
    match probes::run_once(&as_probe, target, timeout) {
        Outcome::Success => None,
        Outcome::Failure(m) => Some(m),
    }
}

/// Runs a preStop hook and returns the grace period left for the stop signal.
pub fn pre_stop(
    handler: &LifecycleHandler,
    target: &Target,
    grace: Duration,
) -> (Duration, Option<String>) {
    let started = Instant::now();
    let failure = run(handler, target, grace);
    (grace.saturating_sub(started.elapsed()), failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sleep_handlers_are_bounded_by_the_timeout() {
        let h: LifecycleHandler =
            serde_json::from_value(json!({"sleep": {"seconds": 30}})).unwrap();
        let target = Target {
            netns: None,
            shim_dir: Default::default(),
            binary: Default::default(),
            ports: vec![],
        };
        let (left, failure) = pre_stop(&h, &target, Duration::from_millis(50));
        assert_eq!((left, failure), (Duration::ZERO, None));
    }
}
