//! Stopping everything a node runs, at once: every container killed, every sandbox torn
//! down and removed (k3s's `k3s-killall.sh`). Containers outlive the agent by design, so
//! this is how a user (`skiff killall`) or a test leaves a machine clean.

use std::time::Duration;

use runtime::shim::{RunningContainer, Signal};

use super::layout::Layout;
use super::observe::observe;
use super::sandbox;

/// What was stopped and what could not be cleaned.
#[derive(Debug, Default)]
pub struct Report {
    pub containers_killed: usize,
    pub pods_removed: usize,
    pub errors: Vec<String>,
}

/// Kills every container of every pod under `layout` and removes the pods' sandboxes and
/// files (logs included). Blocking.
pub fn kill_all(layout: &Layout) -> Report {
    let mut report = Report::default();
    let Ok(entries) = std::fs::read_dir(layout.pods_root()) else {
        return report;
    };
    for entry in entries.flatten() {
        let Ok(uid) = entry.file_name().into_string() else {
            continue;
        };
        let observed = observe(layout, &uid, false);
        for (name, attempt) in observed.running() {
            let shim = layout.attempt_dir(&uid, name, attempt.number).join("shim");
            match RunningContainer::adopt(&shim) {
                Ok(c) => {
                    let _ = c.kill(Signal::SIGKILL);
                    match c.wait_exit(Some(Duration::from_secs(10))) {
                        Ok(_) => report.containers_killed += 1,
                        Err(e) => report.errors.push(format!("{}: {e}", shim.display())),
                    }
                }
                Err(e) => report.errors.push(format!("{}: {e}", shim.display())),
            }
        }
        let record = sandbox::read_record(layout, &uid).unwrap_or_else(|| sandbox::PodRecord {
            namespace: String::new(),
            name: String::new(),
            uid: uid.clone(),
            host_network: false,
            cgroup_parent: format!("{}/pod{uid}", sandbox::CGROUP_ROOT),
        });
        // No per-pod network teardown: the caller removes the whole pod network after.
        match sandbox::remove(layout, &record, None) {
            Ok(()) => report.pods_removed += 1,
            Err(e) => report.errors.push(format!("pod {uid}: {e}")),
        }
    }
    // The pods directory's own mount (see `manager`), and anything a failed removal left.
    if let Err(e) = runtime::sandbox::mounts::unmount_all_under(&layout.pods_root()) {
        report
            .errors
            .push(format!("{}: {e}", layout.pods_root().display()));
    }
    report
}
