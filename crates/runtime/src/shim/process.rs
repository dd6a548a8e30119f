//! The shim process itself: `<binary> container-shim <state_dir>`. Called from `main()`
//! before any thread exists, it detaches (fork, setsid), runs the container with
//! libcontainer, reports start or failure over its stdout (the handshake pipe), copies the
//! container's output into the CRI log and to attach clients (streams.rs), feeds their input
//! to the container's stdin when it is kept open, waits for the exit, cleans up the cgroup
//! and libcontainer state, writes the exit record and exits. The only place libcontainer
//! runs. While libcontainer creates the container the shim can sit in a private mount
//! namespace without the other pods' mounts ([`HiddenMounts`]), then it goes back.
//!
//! stdio: stdin is /dev/null, or with `stdin` a pipe whose write end the shim holds;
//! stdout and stderr are pipes. With `tty` libcontainer makes a terminal inside the
//! container and hands its master over `console.sock`; the shim reads both streams from it
//! (logged as stdout, as containerd does) and writes input and window sizes to it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::attach;
use super::cgroup;
use super::cri_log::{self, LineSplitter, Stream};
use super::executor::ShimExecutor;
use super::pidfd::PidFd;
use super::spec::ContainerConfig;
use super::state::{
    self, classify_start_error, exit_code_of, read_json, rfc3339_nano, write_json_atomic,
    write_json_replace, ExitRecord, Handshake, HiddenMounts, ShimRequest, StartErrorKind,
    StartedRecord, StateDir, CONSOLE_SOCKET_NAME,
};
use super::streams::{self, Hub};
use super::template::{self, Template};

/// The hidden subcommand that turns a binary into a shim: `<binary> container-shim <dir>`.
pub const SHIM_SUBCOMMAND: &str = "container-shim";

/// How long output is still copied after the container's first process exited (other
/// processes of a joined pid namespace may hold the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How long the shim waits for libcontainer to hand over a terminal's master.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("usage: {SHIM_SUBCOMMAND} <state-dir>")]
    Usage,
    #[error("no request in {0}")]
    NoRequest(PathBuf),
    #[error(transparent)]
    Record(#[from] state::RecordError),
    #[error("container {id}: invalid config: {source}")]
    Config {
        id: String,
        source: super::spec::SpecError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: {what}: {message}")]
    Libcontainer {
        id: String,
        what: &'static str,
        message: String,
    },
    #[error("container {id}: {what}: {source}")]
    Sys {
        id: String,
        what: &'static str,
        source: std::io::Error,
    },
}

impl ShimError {
    fn kind(&self) -> StartErrorKind {
        match self {
            ShimError::Config { .. } | ShimError::Usage | ShimError::NoRequest(_) => {
                StartErrorKind::InvalidConfig
            }
            ShimError::Libcontainer { message, .. } => classify_start_error(message),
            _ => StartErrorKind::Other,
        }
    }
}

/// Runs the shim and exits the process. Must be called before any other thread exists:
/// libcontainer forks and changes the working directory.
pub fn run_shim(args: impl IntoIterator<Item = OsString>) -> ! {
    let mut args = args.into_iter();
    let state_dir = match (args.next(), args.next(), args.next()) {
        // `--zygote <dir>`: the launcher of the shims under <dir> (see zygote.rs).
        (Some(arg), Some(under), None) if arg == super::zygote::ZYGOTE_ARG => {
            close_inherited_fds();
            super::zygote::run_zygote(shim_main, PathBuf::from(under))
        }
        (Some(dir), None, None) => PathBuf::from(dir),
        _ => {
            eprintln!("{}", ShimError::Usage);
            std::process::exit(2);
        }
    };
    // Detach: the spawner reaps the first process at once; the second, in a session of its
    // own, is adopted by init (or a subreaper) and outlives the agent.
    // SAFETY: single-threaded at this point (the caller's contract), so fork is sound.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // SAFETY: _exit skips destructors and atexit handlers, which belong to the child.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            report(&Handshake::Failed {
                kind: StartErrorKind::Other,
                message: format!("shim: fork: {e}"),
            });
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    close_inherited_fds();
    std::process::exit(shim_main(state_dir))
}

/// The shim's life once detached, with stdio set up; returns the exit code.
fn shim_main(state_dir: PathBuf) -> i32 {
    match run(&StateDir::new(state_dir)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiff shim: {e}");
            1
        }
    }
}

/// Closes every descriptor above stdio that the spawner let through (a listening socket
/// opened without CLOEXEC would otherwise stay open for the shim's whole life).
fn close_inherited_fds() {
    // SAFETY: close_range(3, MAX, 0) only closes descriptors; nothing in this process
    // holds one yet (the shim has opened nothing so far).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if ret != 0 {
        // Kernels before 5.9: close what /proc says is open.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&fd| fd > 2)
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds {
            // SAFETY: closing a descriptor number nothing in this process uses.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// The shim's whole life after detaching.
fn run(state: &StateDir) -> Result<(), ShimError> {
    let started = match start(state) {
        Ok(started) => started,
        Err(e) => {
            // libcontainer removed its own state on failure; drop the empty root too.
            let _ = std::fs::remove_dir(state.libcontainer_root());
            let _ = std::fs::remove_file(state.attach_socket());
            report(&Handshake::Failed {
                kind: e.kind(),
                message: e.to_string(),
            });
            return Err(e);
        }
    };
    let (mut running, record) = started;
    report(&Handshake::Started(record.clone()));
    let outcome = running.supervise();
    // Attach clients get the last output and see the connection end before exit.json.
    if let Some(hub) = running.hub.take() {
        hub.shutdown();
    }
    let cleanup_error = running.cleanup().err().map(|e| e.to_string());
    if let Some(e) = &cleanup_error {
        eprintln!("skiff shim: cleanup: {e}");
    }
    let exit = ExitRecord {
        exit_code: exit_code_of(outcome.exited, outcome.signal),
        signal: outcome.signal,
        oom_killed: outcome.oom_killed,
        started_at: record.started_at,
        finished_at: outcome.finished_at,
        cleanup_error,
    };
    write_json_atomic(&state.exit(), &exit)?;
    Ok(())
}

/// Writes the handshake line to the spawner, then points stdout at /dev/null so the pipe
/// closes and nothing later can write into it. A vanished spawner is not an error: an
/// adopting agent reads started.json instead.
fn report(handshake: &Handshake) {
    if let Ok(mut line) = serde_json::to_vec(handshake) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// A created and started container, with the read ends of its output pipes (for a
/// terminal: its master as `stdout`) and its attach side.
struct Running {
    id: String,
    cgroups_path: PathBuf,
    container: Container,
    pid: i32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    hub: Option<Hub>,
    log: File,
    log_path: PathBuf,
    log_max_bytes: u64,
    libcontainer_root: PathBuf,
}

/// What one poll slot of the supervise loop stands for.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Output(usize),
    Exit,
    Attach(streams::Token),
}

/// Moves the shim into a private copy of its mount namespace without the mounts `hidden`
/// names (see [`HiddenMounts`]) and returns the namespace it left. With its launcher's
/// `template` (made for `hidden.under`) and a container that lies wholly in its pod, the
/// copy is of the template, with the pod's mounts moved in (see template.rs). Otherwise
/// it is of the node's namespace, and `hidden.under` must be a
/// mount point of its own (the agent makes its pods directory one): then three calls do it
/// whatever the number of pods, a recursive clone of `keep`, one lazy unmount of `under`
/// (everything below goes with it) and the clone put back at `keep`, where unmounting the
/// other pods' mounts one by one would cost an RCU grace period each. The copy is made
/// private first, so nothing done in it reaches the node. Best effort: on any failure the
/// shim goes back to the node's namespace and libcontainer sees every mount.
fn hide_mounts(
    hidden: &HiddenMounts,
    config: &ContainerConfig,
    state_dir: &Path,
    template: Option<Template>,
) -> Option<File> {
    use std::os::unix::ffi::OsStrExt;
    let under = std::fs::canonicalize(&hidden.under).ok()?;
    let keep = std::fs::canonicalize(&hidden.keep).ok()?;
    if keep == under || !keep.starts_with(&under) {
        return None;
    }
    let keep_c = std::ffi::CString::new(keep.as_os_str().as_bytes()).ok()?;
    let original = File::open("/proc/self/ns/mnt")
        .map_err(|e| eprintln!("skiff shim: opening the mount namespace: {e}"))
        .ok()?;
    // Launched by a launcher with a template for these pods: a copy of that (see template.rs).
    if let Some(template) = template.filter(|t| t.under == under) {
        if template::serves(config, state_dir, &keep) {
            match template::enter(template.ns.as_fd(), &keep) {
                Ok(()) => return Some(original),
                Err(e) => {
                    eprintln!(
                        "skiff shim: the launcher's mount namespace: {e}; copying the node's"
                    );
                    return_to(&original);
                }
            }
        }
    }
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        eprintln!("skiff shim: a mount namespace of its own: {e}");
        return None;
    }
    let give_up = |what: &str, e: std::io::Error| {
        eprintln!("skiff shim: hiding other pods' mounts: {what}: {e}");
        return_to(&original);
        None
    };
    let private = template::set_propagation(Path::new("/"), nix::mount::MsFlags::MS_PRIVATE);
    if let Err(e) = private {
        return give_up("making the mounts private", e.into());
    }
    let tree = match template::clone_tree(&keep_c) {
        Ok(tree) => tree,
        Err(e) => return give_up("cloning the pod's mounts", e),
    };
    let flags = nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
    match nix::mount::umount2(&under, flags) {
        Ok(()) => {}
        // Not a mount point (pods started by an agent that did not make it one).
        Err(nix::errno::Errno::EINVAL) => {
            return_to(&original);
            return None;
        }
        Err(e) => return give_up("detaching the pods directory", e.into()),
    }
    if let Err(e) = template::attach_tree(&tree, &keep_c) {
        // The pod's own mounts are gone from this namespace: back to the node's.
        return give_up("putting the pod's mounts back", e);
    }
    Some(original)
}

/// Back to the node's mount namespace once the container exists, so the shim does not pin
/// a copy of the node's mounts for the container's whole life.
fn return_to(original: &File) {
    use std::os::fd::AsFd;
    if let Err(e) = nix::sched::setns(original.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS) {
        eprintln!("skiff shim: back to the node's mount namespace: {e}");
    }
}

/// Accepts libcontainer's connection on the console socket and takes the terminal master
/// it sends (SCM_RIGHTS), waiting at most `timeout`.
fn receive_master(
    listener: &std::os::unix::net::UnixListener,
    timeout: Duration,
) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no terminal was sent");
    if streams::poll(&[(listener.as_raw_fd(), libc::POLLIN)], Some(timeout))?[0] == 0 {
        return Err(timed_out());
    }
    let (conn, _) = listener.accept()?;
    if streams::poll(&[(conn.as_raw_fd(), libc::POLLIN)], Some(timeout))?[0] == 0 {
        return Err(timed_out());
    }
    let mut name = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut master = None;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if master.is_none() {
                    master = Some(owned);
                }
            }
        }
    }
    master.ok_or_else(|| std::io::Error::other("the console socket message carried no descriptor"))
}

/// How the container ended.
struct Outcome {
    exited: Option<i32>,
    signal: Option<i32>,
    oom_killed: bool,
    finished_at: String,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ShimError {
    let path = path.to_owned();
    move |source| ShimError::Io { what, path, source }
}

/// The full cause chain of an error: libcontainer nests the init process's message deep.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

fn start(state: &StateDir) -> Result<(Running, StartedRecord), ShimError> {
    let request: ShimRequest =
        read_json(&state.request())?.ok_or_else(|| ShimError::NoRequest(state.root().into()))?;
    let config = &request.config;
    let id = config.id.clone();
    let spec = config.to_spec().map_err(|source| ShimError::Config {
        id: id.clone(),
        source,
    })?;

    let bundle = state.bundle();
    std::fs::create_dir_all(&bundle).map_err(io_err("creating bundle", &bundle))?;
    write_json_replace(&bundle.join("config.json"), &spec)?;

    if let Some(parent) = request.log_path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating log directory", parent))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&request.log_path)
        .map_err(io_err("opening log", &request.log_path))?;

    let sys = |what| {
        let id = id.clone();
        move |e: nix::Error| ShimError::Sys {
            id,
            what,
            source: std::io::Error::from(e),
        }
    };
    // The attach socket first: a shim that cannot offer it starts nothing.
    let attach_listener = attach::bind(state.root(), attach::SOCKET_NAME)
        .map_err(io_err("binding attach socket in", state.root()))?;
    let stdio = config.stdio;
    let lc_root = state.libcontainer_root();
    std::fs::create_dir_all(&lc_root).map_err(io_err("creating", &lc_root))?;
    let lc = |what: &'static str| {
        let id = id.clone();
        move |e: libcontainer::error::LibcontainerError| ShimError::Libcontainer {
            id,
            what,
            message: chain(&e),
        }
    };
    // From here to the container's creation the shim may be in a mount namespace of its own.
    let template = super::zygote::take_template();
    let state_root = std::fs::canonicalize(state.root()).unwrap_or_else(|_| state.root().into());
    let node_mounts = request
        .hidden_mounts
        .as_ref()
        .and_then(|hidden| hide_mounts(hidden, config, &state_root, template));
    let mut builder = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_executor(ShimExecutor)
        .with_root_path(&lc_root)
        .map_err(lc("libcontainer root"))?;
    // What the shim keeps: output read ends (or the terminal), the stdin write end.
    let (mut out_r, mut err_r, mut input) = (None, None, None);
    let console = if stdio.tty {
        let listener = attach::bind(state.root(), CONSOLE_SOCKET_NAME)
            .map_err(io_err("binding console socket in", state.root()))?;
        builder = builder.with_console_socket(Some(state.console_socket()));
        Some(listener)
    } else {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("stdout pipe"))?;
        out_r = Some(r);
        builder = builder.with_stdout(w);
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("stderr pipe"))?;
        err_r = Some(r);
        builder = builder.with_stderr(w);
        if stdio.stdin {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("stdin pipe"))?;
            input = Some(w);
            builder = builder.with_stdin(r);
        } else {
            let null =
                File::open("/dev/null").map_err(io_err("opening", Path::new("/dev/null")))?;
            builder = builder.with_stdin(OwnedFd::from(null));
        }
        None
    };
    let built = builder
        .validate_id()
        .map_err(lc("container id"))?
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    if let Some(original) = node_mounts {
        return_to(&original);
    }
    // The container's ends of the pipes went into the builder and were closed with it: EOF
    // on the read ends now means every process of the container has closed its output.
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(state.console_socket());
            return Err(lc("creating container")(e));
        }
    };
    let mut terminal = None;
    if let Some(listener) = console {
        let received = receive_master(&listener, CONSOLE_TIMEOUT);
        drop(listener);
        let _ = std::fs::remove_file(state.console_socket());
        match received {
            Ok(master) => terminal = Some(master),
            Err(source) => {
                let _ = container.delete(true);
                let _ = std::fs::remove_dir_all(&lc_root);
                return Err(ShimError::Sys {
                    id,
                    what: "receiving the terminal from libcontainer",
                    source,
                });
            }
        }
    }
    let mut resize_fd = None;
    if let Some(master) = &terminal {
        // Reads (into the log), input and window sizes share the master.
        let dup = |what| {
            master.try_clone().map_err(|source| ShimError::Sys {
                id: id.clone(),
                what,
                source,
            })
        };
        if stdio.stdin {
            input = Some(dup("duplicating the terminal")?);
        }
        resize_fd = Some(dup("duplicating the terminal")?);
        out_r = terminal;
    }
    let hub = match Hub::new(
        id.clone(),
        stdio,
        attach_listener,
        state.attach_socket(),
        input,
        resize_fd,
    ) {
        Ok(hub) => hub,
        Err(source) => {
            let _ = container.delete(true);
            let _ = std::fs::remove_dir_all(&lc_root);
            return Err(ShimError::Sys {
                id,
                what: "setting up attach",
                source,
            });
        }
    };

    if let Err(e) = container.start() {
        let err = lc("starting container")(e);
        let _ = container.delete(true);
        let _ = std::fs::remove_dir_all(&lc_root);
        return Err(err);
    }
    let pid = match container.pid() {
        Some(pid) => pid.as_raw(),
        None => {
            let _ = container.delete(true);
            return Err(ShimError::Libcontainer {
                id,
                what: "starting container",
                message: "libcontainer reported no pid".into(),
            });
        }
    };
    let record = StartedRecord {
        shim_pid: std::process::id() as i32,
        shim_start_time: state::process_start_time(std::process::id() as i32).unwrap_or(0),
        pid,
        // The process is our unreaped child: its /proc entry stays until we wait for it.
        pid_start_time: state::process_start_time(pid).unwrap_or(0),
        started_at: rfc3339_nano(chrono::Utc::now()),
    };
    let running = Running {
        id,
        cgroups_path: config.cgroups_path.clone(),
        container,
        pid,
        stdout: out_r,
        stderr: err_r,
        hub: Some(hub),
        log,
        log_path: request.log_path.clone(),
        log_max_bytes: request.log_max_bytes,
        libcontainer_root: lc_root,
    };
    if let Err(e) = write_json_replace(&state.started(), &record) {
        // Without started.json nobody could adopt or signal it: do not leave it running.
        let mut running = running;
        let _ = running
            .container
            .kill(nix::sys::signal::Signal::SIGKILL, true);
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
        let _ = running.cleanup();
        return Err(e.into());
    }
    Ok((running, record))
}

impl Running {
    /// Copies output into the log until the container's first process exits (and its
    /// output is drained), then reaps it.
    fn supervise(&mut self) -> Outcome {
        let pidfd = PidFd::open(self.pid).ok();
        let mut splitters = [LineSplitter::default(), LineSplitter::default()];
        let mut status: Option<WaitStatus> = None;
        let mut finished_at = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if status.is_none() && pidfd.is_none() {
                // No pidfd (should not happen on kernels >= 5.3): block on the child.
                status = waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::__WALL)).ok();
                finished_at = Some(rfc3339_nano(chrono::Utc::now()));
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            let pipes_open = self.stdout.is_some() || self.stderr.is_some();
            if status.is_some() && !pipes_open {
                break;
            }
            let timeout = match drain_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    Some(left)
                }
                None => None,
            };
            // Output first, then the exit, then the attach side (sockets, stdin).
            let mut slots: Vec<(RawFd, i16, Slot)> = Vec::new();
            for (i, fd) in [&self.stdout, &self.stderr].into_iter().enumerate() {
                if let Some(fd) = fd {
                    slots.push((fd.as_raw_fd(), libc::POLLIN, Slot::Output(i)));
                }
            }
            if let (Some(p), None) = (&pidfd, &status) {
                slots.push((p.raw(), libc::POLLIN, Slot::Exit));
            }
            if let Some(hub) = &self.hub {
                let mut hub_slots = Vec::new();
                hub.interest(&mut hub_slots);
                slots.extend(
                    hub_slots
                        .into_iter()
                        .map(|(fd, ev, token)| (fd, ev, Slot::Attach(token))),
                );
            }
            let polled: Vec<(RawFd, i16)> = slots.iter().map(|&(fd, ev, _)| (fd, ev)).collect();
            let revents = match streams::poll(&polled, timeout) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("skiff shim {}: poll: {e}", self.id);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let ready = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
            for (&(_, _, slot), &rev) in slots.iter().zip(&revents) {
                if rev == 0 {
                    continue;
                }
                match slot {
                    Slot::Output(i) if rev & ready != 0 => {
                        let stream = [Stream::Stdout, Stream::Stderr][i];
                        self.copy_output(i, stream, &mut splitters[i], &mut buf);
                    }
                    Slot::Exit if rev & ready != 0 => {
                        match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::__WALL)) {
                            Ok(s) => status = Some(s),
                            Err(e) => {
                                eprintln!("skiff shim {}: wait: {e}", self.id);
                                status = Some(WaitStatus::StillAlive);
                            }
                        }
                        finished_at = Some(rfc3339_nano(chrono::Utc::now()));
                        drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                    }
                    Slot::Attach(token) => {
                        if let Some(hub) = &mut self.hub {
                            hub.ready(token, rev);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(hub) = &mut self.hub {
                hub.sweep();
            }
        }
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            if let Some(rest) = splitters[i].finish() {
                self.write_log(stream, &[rest]);
            }
        }
        let _ = self.log.sync_data();
        let (exited, signal) = match status {
            Some(WaitStatus::Exited(_, code)) => (Some(code), None),
            Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
            _ => (None, None),
        };
        Outcome {
            exited,
            signal,
            oom_killed: cgroup::oom_killed(Path::new(cgroup::CGROUP_ROOT), &self.cgroups_path),
            finished_at: finished_at.unwrap_or_else(|| rfc3339_nano(chrono::Utc::now())),
        }
    }

    /// Reads what is available on one output pipe into the log; closes it at EOF.
    fn copy_output(
        &mut self,
        i: usize,
        stream: Stream,
        splitter: &mut LineSplitter,
        buf: &mut [u8],
    ) {
        let slot = if i == 0 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        let Some(fd) = slot.as_ref() else { return };
        let records = match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(0) => {
                *slot = None;
                return;
            }
            Ok(n) => {
                if let Some(hub) = &mut self.hub {
                    hub.broadcast(stream, &buf[..n]);
                }
                splitter.push(&buf[..n])
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => return,
            Err(_) => {
                *slot = None;
                return;
            }
        };
        self.write_log(stream, &records);
    }

    fn write_log(&mut self, stream: Stream, records: &[cri_log::Record]) {
        if let Err(e) = cri_log::write_records(&mut self.log, stream, records) {
            // A full disk must not stop the shim from reaping and recording the exit.
            eprintln!(
                "skiff shim {}: writing {}: {e}",
                self.id,
                self.log_path.display()
            );
        }
        self.rotate_log_if_full();
    }

    /// kubelet's size-based rotation: the full file is renamed `<log>.<time>`, a new one is
    /// started, and only the newest rotated files are kept.
    fn rotate_log_if_full(&mut self) {
        if self
            .log
            .metadata()
            .map_or(true, |m| m.len() < self.log_max_bytes)
        {
            return;
        }
        let (Some(dir), Some(name)) = (
            self.log_path.parent(),
            self.log_path.file_name().and_then(|n| n.to_str()),
        ) else {
            return;
        };
        let rotated = dir.join(cri_log::rotated_name(name, chrono::Utc::now()));
        if let Err(e) = std::fs::rename(&self.log_path, &rotated) {
            eprintln!(
                "skiff shim {}: rotating {}: {e}",
                self.id,
                self.log_path.display()
            );
            return;
        }
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.log_path)
        {
            Ok(f) => self.log = f,
            Err(e) => eprintln!(
                "skiff shim {}: reopening {}: {e}",
                self.id,
                self.log_path.display()
            ),
        }
        let names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for old in cri_log::rotated_to_delete(name, &names) {
            let _ = std::fs::remove_file(dir.join(old));
        }
    }

    /// Removes the container's cgroup and libcontainer's state.
    fn cleanup(&mut self) -> Result<(), ShimError> {
        let result = self
            .container
            .delete(true)
            .map_err(|e| ShimError::Libcontainer {
                id: self.id.clone(),
                what: "deleting container",
                message: chain(&e),
            });
        let _ = std::fs::remove_dir(&self.libcontainer_root);
        result
    }
}
