//! What runs for a pod, read back from disk (see [`super::layout`]): each container's
//! attempts, in order, with their shim's started and exit records. Reading is cheap (a few
//! small files per attempt) and is all the agent needs to know after a restart.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use runtime::shim::{process_start_time, read_json, ExitRecord, StartedRecord};
use serde::{Deserialize, Serialize};

use super::layout::{AttemptPaths, Layout};

/// Written by the agent into an attempt's directory before its shim starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub container_id: String,
    /// The image as the pod spec names it.
    pub image: String,
    /// Normalised reference (`docker.io/library/busybox:1.36`), shown as the status image.
    pub image_ref: String,
    /// `repo@sha256:...`, shown as the status imageID.
    pub image_id: String,
    /// The image's STOPSIGNAL, if it has one.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// Written by the agent when a shim reports that the container could not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartFailure {
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

pub const ATTEMPT_RECORD: &str = "attempt.json";
pub const START_FAILURE: &str = "start-error.json";
/// Upstream's cap on a termination message read from the file.
const TERMINATION_MESSAGE_MAX: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum AttemptState {
    Running {
        started_at: Timestamp,
    },
    Exited {
        exit_code: i32,
        /// Upstream's reason: Completed, Error, OOMKilled, StartError, ContainerStatusUnknown.
        reason: &'static str,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
        message: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub number: u32,
    pub record: AttemptRecord,
    pub state: AttemptState,
}

impl Attempt {
    pub fn is_running(&self) -> bool {
        matches!(self.state, AttemptState::Running { .. })
    }
    pub fn exit_code(&self) -> Option<i32> {
        match self.state {
            AttemptState::Exited { exit_code, .. } => Some(exit_code),
            AttemptState::Running { .. } => None,
        }
    }
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.state {
            AttemptState::Exited { finished_at, .. } => Some(finished_at),
            AttemptState::Running { .. } => None,
        }
    }
}

/// Everything on disk about one pod's containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub sandbox_ready: bool,
    /// By container name; attempts oldest first.
    pub containers: BTreeMap<String, Vec<Attempt>>,
}

impl Observed {
    pub fn attempts(&self, container: &str) -> &[Attempt] {
        self.containers
            .get(container)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
    pub fn latest(&self, container: &str) -> Option<&Attempt> {
        self.attempts(container).last()
    }
    pub fn running(&self) -> impl Iterator<Item = (&str, &Attempt)> {
        self.containers
            .iter()
            .filter_map(|(name, attempts)| Some((name.as_str(), attempts.last()?)))
            .filter(|(_, a)| a.is_running())
    }
}

/// Reads the pod's directory. Unreadable attempts are reported as ended (never as running),
/// so a damaged record can cost a restart but never an orphaned container.
pub fn observe(layout: &Layout, uid: &str, sandbox_ready: bool) -> Observed {
    let mut observed = Observed {
        sandbox_ready,
        ..Default::default()
    };
    let containers_dir = layout.pod_dir(uid).join("containers");
    let Ok(entries) = std::fs::read_dir(&containers_dir) else {
        return observed;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let mut attempts = Vec::new();
        if let Ok(dirs) = std::fs::read_dir(entry.path()) {
            for dir in dirs.flatten() {
                let Some(number) = dir.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(attempt) = read_attempt(&dir.path(), number) {
                    attempts.push(attempt);
                }
            }
        }
        attempts.sort_by_key(|a| a.number);
        if !attempts.is_empty() {
            observed.containers.insert(name, attempts);
        }
    }
    observed
}

fn read_attempt(dir: &Path, number: u32) -> Option<Attempt> {
    let record: AttemptRecord = read_json(&dir.join(ATTEMPT_RECORD)).ok().flatten()?;
    let paths = AttemptPaths {
        dir: dir.to_path_buf(),
    };
    let shim = paths.shim_state();
    let state = if let Ok(Some(failure)) = read_json::<StartFailure>(&dir.join(START_FAILURE)) {
        AttemptState::Exited {
            exit_code: 128,
            reason: "StartError",
            started_at: None,
            finished_at: parse_time(&failure.at).unwrap_or_else(Timestamp::now),
            message: Some(failure.message),
        }
    } else if let Ok(Some(exit)) = read_json::<ExitRecord>(&shim.join("exit.json")) {
        exited(&exit, &paths)
    } else if let Ok(Some(started)) = read_json::<StartedRecord>(&shim.join("started.json")) {
        if shim_alive(&started) {
            AttemptState::Running {
                started_at: parse_time(&started.started_at).unwrap_or_else(Timestamp::now),
            }
        } else if let Ok(Some(exit)) = read_json::<ExitRecord>(&shim.join("exit.json")) {
            // It exited between the two reads.
            exited(&exit, &paths)
        } else {
            lost(parse_time(&started.started_at))
        }
    } else {
        // The agent stopped between writing the record and the shim's handshake.
        lost(None)
    };
    Some(Attempt {
        number,
        record,
        state,
    })
}

fn exited(exit: &ExitRecord, paths: &AttemptPaths) -> AttemptState {
    let reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    AttemptState::Exited {
        exit_code: exit.exit_code,
        reason,
        started_at: parse_time(&exit.started_at),
        finished_at: parse_time(&exit.finished_at).unwrap_or_else(Timestamp::now),
        message: termination_message(&paths.termination_log()),
    }
}

/// A container whose shim vanished without an exit record (upstream reports these the same
/// way when containerd loses a container).
fn lost(started_at: Option<Timestamp>) -> AttemptState {
    AttemptState::Exited {
        exit_code: 137,
        reason: "ContainerStatusUnknown",
        started_at,
        finished_at: started_at.unwrap_or_else(Timestamp::now),
        message: Some("The container could not be located when the pod was terminated".into()),
    }
}

fn shim_alive(started: &StartedRecord) -> bool {
    process_start_time(started.shim_pid) == Some(started.shim_start_time)
}

fn termination_message(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(TERMINATION_MESSAGE_MAX)
        .read_to_string(&mut text)
        .ok()?;
    (!text.is_empty()).then_some(text)
}

pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}
