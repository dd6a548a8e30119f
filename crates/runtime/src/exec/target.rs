//! Finding a running container from its shim state directory: started.json names the
//! container's first process, exit.json says it is gone, and a pidfd checked against the
//! recorded start time pins the process so a recycled pid is never joined.

use std::path::{Path, PathBuf};

use crate::shim::{process_start_time, read_json, PidFd, StartedRecord};

use super::ExecError;

/// The container's first process, pinned by a pidfd.
pub(crate) struct Target {
    pub pid: i32,
    pub pidfd: PidFd,
}

impl Target {
    /// Whether the pinned process is still alive (a pidfd turns readable on exit).
    pub fn alive(&self) -> bool {
        matches!(self.pidfd.wait_exited(std::time::Duration::ZERO), Ok(false))
    }
}

fn not_running(state_dir: &Path, reason: impl Into<String>) -> ExecError {
    ExecError::NotRunning {
        state_dir: state_dir.to_owned(),
        reason: reason.into(),
    }
}

/// Checks that the container of `state_dir` is running; its started record if so.
pub fn check_running(state_dir: &Path) -> Result<StartedRecord, ExecError> {
    locate(state_dir).map(|(_, started)| started)
}

pub(crate) fn locate(state_dir: &Path) -> Result<(Target, StartedRecord), ExecError> {
    let file = |name: &str| -> PathBuf { state_dir.join(name) };
    if file("exit.json").exists() {
        return Err(not_running(state_dir, "it has exited"));
    }
    let started: StartedRecord = read_json(&file("started.json"))
        .map_err(|e| ExecError::Other(e.to_string()))?
        .ok_or_else(|| not_running(state_dir, "it has not been started"))?;
    let pidfd = PidFd::open(started.pid).map_err(|e| {
        if e.raw_os_error() == Some(libc::ESRCH) {
            not_running(state_dir, format!("process {} is gone", started.pid))
        } else {
            ExecError::io(format!("pidfd_open({})", started.pid))(e)
        }
    })?;
    // Checked after the pidfd is open: if the start time matches now, the pidfd refers to the
    // container's process and not to a later one with the same pid.
    if process_start_time(started.pid) != Some(started.pid_start_time) {
        return Err(not_running(
            state_dir,
            format!("process {} is gone", started.pid),
        ));
    }
    let target = Target {
        pid: started.pid,
        pidfd,
    };
    if !target.alive() {
        return Err(not_running(state_dir, "it has exited"));
    }
    Ok((target, started))
}
