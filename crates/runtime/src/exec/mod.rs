//! Running a process inside a running container (`kubectl exec`, exec probes).
//!
//! The agent never joins a container itself: [`command`] builds
//! `<binary> container-exec <state-dir> [--tty] [--env K=V]... [--cwd DIR] -- <argv...>`, a
//! single-threaded helper ([`run_exec`], dispatched at the top of `main()` before any thread
//! exists) that joins the container's namespaces through a pidfd (so a reused pid cannot be
//! joined), its cgroups and its root, takes on the container's user, capabilities and
//! environment from the OCI bundle the shim wrote, and runs the process. The caller decides
//! stdio: pipes, or the slave of a pty from [`open_container_pty`] with `--tty`. The helper's
//! exit status is the process's (128+n for signal n); 127 when argv[0] is not found, 126 when
//! it cannot be executed, [`EXIT_HELPER_FAILED`] (125) when the helper itself failed (for
//! example "container is not running"), with the reason on stderr.

mod cgroup;
mod helper;
mod pty;
mod target;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use helper::{parse_args, run_exec, EXEC_SUBCOMMAND};
pub use pty::{open_container_pty, open_pty, resize};
pub use target::check_running;

/// The helper's exit status when it failed before the process could be started.
pub const EXIT_HELPER_FAILED: i32 = 125;
/// argv[0] exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// argv[0] was not found in the container.
pub const EXIT_NOT_FOUND: i32 = 127;

/// What to run in which container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// The container's shim state directory (holds started.json and the OCI bundle).
    pub state_dir: PathBuf,
    /// The command line; argv[0] is looked up in the container's PATH.
    pub argv: Vec<String>,
    /// Extra `KEY=VALUE` entries, overriding the container's environment.
    pub env: Vec<String>,
    /// stdin is a terminal (the pty slave): make it the controlling terminal.
    pub tty: bool,
    /// Working directory inside the container (default: the container's).
    pub cwd: Option<PathBuf>,
}

impl ExecRequest {
    /// The helper's arguments after the subcommand.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![self.state_dir.to_string_lossy().into_owned()];
        if self.tty {
            args.push("--tty".into());
        }
        for e in &self.env {
            args.push("--env".into());
            args.push(e.clone());
        }
        if let Some(cwd) = &self.cwd {
            args.push("--cwd".into());
            args.push(cwd.to_string_lossy().into_owned());
        }
        args.push("--".into());
        args.extend(self.argv.iter().cloned());
        args
    }
}

/// `<binary> container-exec ...` for `req`; stdio is the caller's choice (pipes, or the pty
/// slave three times for `tty`). Run it with `std::process` or `tokio::process`.
pub fn command(binary: &Path, req: &ExecRequest) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg(EXEC_SUBCOMMAND).args(req.to_args());
    cmd
}

/// Why an exec could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container is not running: {reason} ({})", state_dir.display())]
    NotRunning { state_dir: PathBuf, reason: String },
    #[error(
        "usage: {EXEC_SUBCOMMAND} <state-dir> [--tty] [--env K=V]... [--cwd DIR] -- <argv...>: {0}"
    )]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl ExecError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
        let what = what.into();
        move |source| ExecError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_command_line() {
        let req = ExecRequest {
            state_dir: "/run/skiff/c1".into(),
            argv: vec!["sh".into(), "-c".into(), "echo --tty".into()],
            env: vec!["A=1".into(), "B=x y".into()],
            tty: true,
            cwd: Some("/tmp".into()),
        };
        let args: Vec<std::ffi::OsString> = req.to_args().into_iter().map(Into::into).collect();
        assert_eq!(parse_args(args).expect("parse"), req);
        let cmd = command(Path::new("/bin/skiff"), &req);
        assert_eq!(
            cmd.get_args().next().and_then(|a| a.to_str()),
            Some(EXEC_SUBCOMMAND)
        );
    }
}
