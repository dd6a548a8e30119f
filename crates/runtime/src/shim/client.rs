//! The agent's side of the shim: start one (forked by the launcher, [`super::zygote`], or
//! spawned as `<binary> container-shim <state_dir>`; never libcontainer in the caller), read
//! its handshake, signal the container, wait for or read its exit record, and adopt shims
//! started by an earlier agent. Calls block (at most for the start timeout or the wait
//! asked for): from async code run them with `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;

use super::pidfd::{poll_readable, PidFd};
use super::process::SHIM_SUBCOMMAND;
use super::spec::{ContainerConfig, SpecError};
use super::state::{
    process_start_time, read_json, write_json_replace, ExitRecord, Handshake, HiddenMounts,
    RecordError, ShimRequest, StartErrorKind, StartedRecord, StateDir,
};
use super::zygote::Zygote;

/// How long `start` waits for the shim's handshake by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    InvalidConfig(#[from] SpecError),
    #[error("state directory {0} is already in use")]
    StateDirInUse(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The container could not be started; `kind` says why, for the agent's status reason.
    #[error("container {id} failed to start: {message}")]
    StartFailed {
        id: String,
        kind: StartErrorKind,
        message: String,
    },
    #[error("shim for {state_dir} ended without reporting: {log_tail}")]
    ShimDied {
        state_dir: PathBuf,
        log_tail: String,
    },
    #[error("shim for {0} did not report within the start timeout")]
    StartTimeout(PathBuf),
    #[error("no started container in {0}")]
    NotStarted(PathBuf),
    #[error("timed out waiting for container in {0} to exit")]
    WaitTimeout(PathBuf),
    #[error("signalling container pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
}

/// Spawns shims from a given binary (the skiff binary, or the test helper).
#[derive(Debug, Clone)]
pub struct ShimClient {
    binary: PathBuf,
    start_timeout: Duration,
    log_max_bytes: u64,
    /// The shim launcher ([`super::zygote`]), started at the first container; None: every
    /// shim is spawned directly.
    launcher: Option<Arc<Mutex<Option<Zygote>>>>,
}

/// What `kill` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    Signalled,
    /// The container's process had already exited; nothing was signalled.
    AlreadyExited,
}

impl ShimClient {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            start_timeout: DEFAULT_START_TIMEOUT,
            log_max_bytes: super::cri_log::DEFAULT_MAX_BYTES,
            launcher: Some(Arc::default()),
        }
    }

    /// Spawn every shim directly (`<binary> container-shim <state_dir>`) instead of forking
    /// it from the launcher.
    pub fn without_launcher(mut self) -> Self {
        self.launcher = None;
        self
    }

    /// Shims run from the running binary itself (it must dispatch `container-shim`).
    pub fn current_exe() -> Self {
        Self::new("/proc/self/exe")
    }

    /// Rotate container logs at this size instead of kubelet's 10 MiB.
    pub fn with_log_max_bytes(mut self, bytes: u64) -> Self {
        self.log_max_bytes = bytes.max(1);
        self
    }

    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts `config` in a new shim whose state lives in `state_dir` (created; must not hold
    /// another container) and whose output goes to `log_path` in the CRI format. Returns once
    /// the container's process runs, or with the reason it could not start.
    pub fn start(
        &self,
        config: &ContainerConfig,
        state_dir: &Path,
        log_path: &Path,
    ) -> Result<RunningContainer, ClientError> {
        self.start_hiding(config, state_dir, log_path, None)
    }

    /// [`ShimClient::start`], with `hidden` mounts out of libcontainer's sight while it
    /// creates the container (see [`HiddenMounts`]).
    pub fn start_hiding(
        &self,
        config: &ContainerConfig,
        state_dir: &Path,
        log_path: &Path,
        hidden: Option<&HiddenMounts>,
    ) -> Result<RunningContainer, ClientError> {
        config.validate()?;
        let state = StateDir::new(state_dir);
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { what, path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io("creating", state_dir))?;
        if state.request().exists() || state.started().exists() {
            return Err(ClientError::StateDirInUse(state_dir.to_owned()));
        }
        let log_path = if log_path.is_absolute() {
            log_path.to_owned()
        } else {
            std::env::current_dir()
                .map_err(io("resolving", log_path))?
                .join(log_path)
        };
        write_json_replace(
            &state.request(),
            &ShimRequest {
                config: config.clone(),
                log_path,
                log_max_bytes: self.log_max_bytes,
                hidden_mounts: hidden.cloned(),
            },
        )?;
        let shim_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.shim_log())
            .map_err(io("opening", &state.shim_log()))?;
        let state_dir_abs = std::fs::canonicalize(state_dir).map_err(io("resolving", state_dir))?;

        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("making a handshake pipe for", state_dir)(e.into()))?;
        // The launcher is named after the directory the shims' state is kept under: the
        // agent's pods directory (the one hidden from them), else this one's parent.
        let shims_under = hidden
            .map(|h| h.under.clone())
            .or_else(|| state_dir_abs.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| state_dir_abs.clone());
        if self.launch(&state_dir_abs, &shims_under, &write_end, &shim_log) {
            // Only the shim holds the write end now: end of file means it is gone.
            drop(write_end);
            let mut pipe = File::from(read_end);
            return self.handshake(config, state_dir, &state, &mut pipe);
        }
        drop((read_end, write_end));

        let mut child = Command::new(&self.binary)
            .arg(SHIM_SUBCOMMAND)
            .arg(&state_dir_abs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(shim_log))
            .current_dir("/")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            // The skiff binary allocates with mimalloc, which by default commits its arena
            // up front: right for the server, ~3.7 MiB of private memory in every shim
            // (PSS 5.7 → 2.0 MiB per shim, BENCHMARKS.md session 5). Read at the shim's
            // start only; the container's environment comes from its config, not from here.
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .spawn()
            .map_err(io("spawning shim", &self.binary))?;
        let handshake = child.stdout.take();
        // The first shim process forks the real one and exits at once: reap it.
        let _ = child.wait();
        let Some(mut pipe) = handshake else {
            return Err(ClientError::ShimDied {
                state_dir: state_dir.to_owned(),
                log_tail: "no handshake pipe".into(),
            });
        };
        self.handshake(config, state_dir, &state, &mut pipe)
    }

    /// Asks the launcher for a shim; false when it cannot be reached (then the caller spawns
    /// the shim itself). A launcher that died is replaced once.
    fn launch(
        &self,
        state_dir: &Path,
        shims_under: &Path,
        handshake: &OwnedFd,
        log: &File,
    ) -> bool {
        let Some(launcher) = &self.launcher else {
            return false;
        };
        let mut launcher = launcher.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..2 {
            if launcher.is_none() {
                match Zygote::spawn(&self.binary, shims_under) {
                    Ok(z) => *launcher = Some(z),
                    Err(e) => {
                        tracing::warn!("starting the shim launcher: {e}; spawning shims directly");
                        return false;
                    }
                }
            }
            match launcher
                .as_ref()
                .map(|z| z.launch(state_dir, handshake, log))
            {
                Some(Ok(())) => return true,
                Some(Err(e)) => tracing::debug!("shim launcher: {e}; starting a new one"),
                None => {}
            }
            *launcher = None;
        }
        false
    }

    /// Reads the shim's handshake: the container started, or why not.
    fn handshake(
        &self,
        config: &ContainerConfig,
        state_dir: &Path,
        state: &StateDir,
        pipe: &mut (impl Read + AsRawFd),
    ) -> Result<RunningContainer, ClientError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { what, path, source }
        };
        let line = read_line(pipe, self.start_timeout)
            .map_err(io("reading handshake from shim for", state_dir))?;
        match line {
            Line::Timeout => Err(ClientError::StartTimeout(state_dir.to_owned())),
            Line::Eof => Err(ClientError::ShimDied {
                state_dir: state_dir.to_owned(),
                log_tail: log_tail(&state.shim_log()),
            }),
            Line::Text(text) => match serde_json::from_str::<Handshake>(&text) {
                Ok(Handshake::Started(started)) => Ok(RunningContainer {
                    state: state.clone(),
                    started,
                }),
                Ok(Handshake::Failed { kind, message }) => Err(ClientError::StartFailed {
                    id: config.id.clone(),
                    kind,
                    message,
                }),
                Err(e) => Err(ClientError::ShimDied {
                    state_dir: state_dir.to_owned(),
                    log_tail: format!("unreadable handshake {text:?}: {e}"),
                }),
            },
        }
    }
}

enum Line {
    Text(String),
    Eof,
    Timeout,
}

/// Reads one line from the handshake pipe, giving up after `timeout`.
fn read_line(pipe: &mut (impl Read + AsRawFd), timeout: Duration) -> std::io::Result<Line> {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.iter().position(|&b| b == b'\n') {
            data.truncate(end);
            return Ok(Line::Text(String::from_utf8_lossy(&data).into_owned()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Line::Timeout);
        }
        if !poll_readable(&[pipe.as_raw_fd()], Some(left))?[0] {
            continue;
        }
        match pipe.read(&mut buf) {
            Ok(0) => return Ok(Line::Eof),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The last lines of the shim's own log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(shim log empty)".into()
    } else {
        tail
    }
}

/// A container started by a shim (by this process, or adopted from its state directory).
#[derive(Debug, Clone)]
pub struct RunningContainer {
    state: StateDir,
    started: StartedRecord,
}

impl RunningContainer {
    /// Picks up a container whose shim was started earlier, possibly by another agent process.
    pub fn adopt(state_dir: &Path) -> Result<Self, ClientError> {
        let state = StateDir::new(state_dir);
        let started: StartedRecord = read_json(&state.started())?
            .ok_or_else(|| ClientError::NotStarted(state_dir.to_owned()))?;
        Ok(Self { state, started })
    }

    /// Host pid of the container's first process.
    pub fn pid(&self) -> i32 {
        self.started.pid
    }

    pub fn shim_pid(&self) -> i32 {
        self.started.shim_pid
    }

    pub fn started(&self) -> &StartedRecord {
        &self.started
    }

    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    /// The OCI bundle directory (config.json), the seam for an external runtime.
    pub fn bundle(&self) -> PathBuf {
        self.state.bundle()
    }

    /// The exit record, once the container has exited and the shim has cleaned up.
    pub fn exit_record(&self) -> Result<Option<ExitRecord>, ClientError> {
        Ok(read_json(&self.state.exit())?)
    }

    /// Signals the container's first process (SIGTERM to stop, SIGKILL after the grace
    /// period). A pid recycled since the container exited is never signalled: the process
    /// is pinned with a pidfd and its start time compared with the recorded one.
    pub fn kill(&self, signal: Signal) -> Result<KillOutcome, ClientError> {
        if self.exit_record()?.is_some() {
            return Ok(KillOutcome::AlreadyExited);
        }
        let pid = self.started.pid;
        let pidfd = match PidFd::open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Ok(KillOutcome::AlreadyExited)
            }
            Err(source) => return Err(ClientError::Signal { pid, source }),
        };
        if process_start_time(pid) != Some(self.started.pid_start_time) {
            return Ok(KillOutcome::AlreadyExited);
        }
        match pidfd.send_signal(signal as i32) {
            Ok(()) => Ok(KillOutcome::Signalled),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(KillOutcome::AlreadyExited),
            Err(source) => Err(ClientError::Signal { pid, source }),
        }
    }

    /// Waits for the exit record (None: without limit). Fails if the shim dies without
    /// writing one.
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Result<ExitRecord, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let shim = PidFd::open(self.started.shim_pid).ok().filter(|_| {
            process_start_time(self.started.shim_pid) == Some(self.started.shim_start_time)
        });
        loop {
            if let Some(exit) = self.exit_record()? {
                return Ok(exit);
            }
            let step = Duration::from_millis(200);
            let step = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ClientError::WaitTimeout(self.state.root().to_owned()));
                    }
                    left.min(step)
                }
                None => step,
            };
            let shim_gone = match &shim {
                Some(fd) => fd.wait_exited(step).unwrap_or(false),
                None => {
                    std::thread::sleep(step);
                    true
                }
            };
            if shim_gone {
                // The shim writes the record before it exits: one last look.
                return self.exit_record()?.ok_or_else(|| ClientError::ShimDied {
                    state_dir: self.state.root().to_owned(),
                    log_tail: log_tail(&self.state.shim_log()),
                });
            }
        }
    }
}
