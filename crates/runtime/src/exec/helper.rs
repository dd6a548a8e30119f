//! The helper process: `<binary> container-exec <state-dir> [--tty] [--env K=V]...
//! [--cwd DIR] -- <argv...>`. Called from `main()` before any thread exists (joining a mount
//! namespace needs a single-threaded process). It pins the container's first process with a
//! pidfd, opens its cgroups' `cgroup.procs` and its root, joins its namespaces in one
//! `setns(pidfd)`, chroots to its root and forks: the child (inside the container's pid
//! namespace) joins the cgroups, takes the container's user and capabilities and execs;
//! the parent forwards signals, waits and exits with the child's status.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use libcontainer::capabilities::CapabilityExt;
use oci_spec::runtime::{Capabilities, Process, Spec};
use serde::Deserialize;

use super::cgroup;
use super::target;
use super::{ExecError, ExecRequest, EXIT_CANNOT_EXECUTE, EXIT_HELPER_FAILED, EXIT_NOT_FOUND};
use crate::shim::{read_json, ContainerConfig};

/// The hidden subcommand that runs a process in a container.
pub const EXEC_SUBCOMMAND: &str = "container-exec";

/// PATH used when the container's environment has none (containerd's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parses the helper's arguments (after the subcommand).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<ExecRequest, ExecError> {
    let usage = |m: &str| ExecError::Usage(m.to_owned());
    let utf8 = |a: OsString| {
        a.into_string()
            .map_err(|a| ExecError::Usage(format!("{a:?} is not UTF-8")))
    };
    let mut it = args.into_iter();
    let mut req = ExecRequest::default();
    let mut state_dir = None;
    loop {
        let Some(arg) = it.next() else {
            return Err(usage("no command given (missing --)"));
        };
        let arg = utf8(arg)?;
        let mut value = |name: &str| -> Result<String, ExecError> {
            it.next()
                .map(utf8)
                .unwrap_or_else(|| Err(ExecError::Usage(format!("{name} needs a value"))))
        };
        match arg.as_str() {
            "--" => break,
            "--tty" | "-t" => req.tty = true,
            "--env" | "-e" => {
                let e = value("--env")?;
                if !e.contains('=') || e.starts_with('=') {
                    return Err(ExecError::Usage(format!("--env {e:?} is not KEY=VALUE")));
                }
                req.env.push(e);
            }
            "--cwd" => {
                let dir = PathBuf::from(value("--cwd")?);
                if !dir.is_absolute() {
                    return Err(usage("--cwd must be an absolute path"));
                }
                req.cwd = Some(dir);
            }
            s if s.starts_with('-') => {
                return Err(ExecError::Usage(format!("unknown option {s}")));
            }
            _ if state_dir.is_none() => state_dir = Some(PathBuf::from(arg)),
            _ => return Err(ExecError::Usage(format!("unexpected argument {arg:?}"))),
        }
    }
    req.state_dir = state_dir.ok_or_else(|| usage("no state directory given"))?;
    req.argv = it.map(utf8).collect::<Result<_, _>>()?;
    if req.argv.first().is_none_or(|a| a.is_empty()) {
        return Err(usage("no command given"));
    }
    Ok(req)
}

/// Runs the helper and exits the process with the status of the process it ran. Must be
/// called before any other thread exists.
pub fn run_exec(args: impl IntoIterator<Item = OsString>) -> ! {
    close_inherited_fds();
    let code = match parse_args(args).and_then(|req| run(&req)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{EXEC_SUBCOMMAND}: {e}");
            EXIT_HELPER_FAILED
        }
    };
    std::process::exit(code)
}

/// Closes every descriptor above stdio the spawner let through.
fn close_inherited_fds() {
    // SAFETY: only closes descriptors; nothing in this process holds one yet.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if ret != 0 {
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&fd| fd > 2)
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds {
            // SAFETY: closing a descriptor nothing in this process uses.
            unsafe { libc::close(fd) };
        }
    }
}

#[derive(Deserialize)]
struct Request {
    config: ContainerConfig,
}

/// The container's OCI spec: the bundle the shim ran, else rebuilt from its request.
fn load_spec(state_dir: &Path) -> Result<Spec, ExecError> {
    let bundle = state_dir.join("bundle/config.json");
    if bundle.exists() {
        return Spec::load(&bundle)
            .map_err(|e| ExecError::Other(format!("reading {}: {e}", bundle.display())));
    }
    let request: Request = read_json(&state_dir.join("request.json"))
        .map_err(|e| ExecError::Other(e.to_string()))?
        .ok_or_else(|| ExecError::NotRunning {
            state_dir: state_dir.to_owned(),
            reason: "no request.json".into(),
        })?;
    request
        .config
        .to_spec()
        .map_err(|e| ExecError::Other(e.to_string()))
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, ExecError> {
    CString::new(s).map_err(|e| ExecError::Other(format!("argument with a NUL byte: {e}")))
}

fn last_err(what: impl Into<String>) -> ExecError {
    ExecError::io(what)(io::Error::last_os_error())
}

/// Sets `KEY=VALUE` in `env`, replacing an entry with the same key in place.
pub(crate) fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split('=').next().unwrap_or("");
    match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
        Some(existing) => *existing = entry.to_owned(),
        None => env.push(entry.to_owned()),
    }
}

fn get_env<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
}

/// The home directory of `uid` in an /etc/passwd text.
pub(crate) fn passwd_home(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid)).then(|| f[5].to_owned())
    })
}

/// The environment of the exec'd process: the container's, HOME from its /etc/passwd when
/// unset (as libcontainer does for the container), TERM for a terminal, then the extras.
fn environment(process: &Process, req: &ExecRequest, passwd: Option<&str>) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if get_env(&env, "HOME").is_none_or(str::is_empty) {
        if let Some(home) = passwd.and_then(|p| passwd_home(p, process.user().uid())) {
            set_env(&mut env, &format!("HOME={home}"));
        }
    }
    if req.tty {
        set_env(&mut env, "TERM=xterm");
    }
    for e in &req.env {
        set_env(&mut env, e);
    }
    env
}

/// The helper up to the fork; returns the exit status to exit with.
fn run(req: &ExecRequest) -> Result<i32, ExecError> {
    let (target, _) = target::locate(&req.state_dir)?;
    let not_running = |reason: &str| ExecError::NotRunning {
        state_dir: req.state_dir.clone(),
        reason: reason.into(),
    };
    let spec = load_spec(&req.state_dir)?;
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| ExecError::Other("the container's spec has no process".into()))?;
    let cgroups = cgroup::open_procs_files(target.pid)?;
    let root_path = cstring(format!("/proc/{}/root", target.pid))?;
    // SAFETY: open of a NUL-terminated path; checked below.
    let root = unsafe {
        libc::open(
            root_path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if root < 0 {
        return Err(last_err(format!("opening {root_path:?}")));
    }
    // SAFETY: fresh fd owned by nobody else.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    // Everything above was found by pid: still alive now means it was the container's.
    if !target.alive() {
        return Err(not_running("it has exited"));
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(ExecError::io("setting oom_score_adj"))?;
    }

    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP;
    // SAFETY: setns with a pidfd we own; single-threaded (the caller's contract).
    if unsafe { libc::setns(target.pidfd.as_raw_fd(), flags) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Err(not_running("it has exited"));
        }
        return Err(ExecError::io("joining the container's namespaces")(e));
    }
    // /proc/<pid>/root: the container's root even if it was chrooted, not pivoted.
    // SAFETY: fchdir to a directory fd we own, then chroot to it.
    if unsafe { libc::fchdir(root.as_raw_fd()) } != 0 {
        return Err(last_err("entering the container's root"));
    }
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(last_err("chroot to the container's root"));
    }
    drop(root);

    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let env = environment(&process, req, passwd.as_deref());
    let cwd = req.cwd.clone().unwrap_or_else(|| process.cwd().clone());
    let prepared = Prepared {
        path_env: get_env(&env, "PATH").unwrap_or(DEFAULT_PATH).to_owned(),
        argv: req
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cstring(e.as_bytes()))
            .collect::<Result<_, _>>()?,
        cwd: cstring(cwd.as_os_str().as_bytes())?,
        tty: req.tty,
        process,
        cgroups,
    };

    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_err("pipe"));
    }
    // SAFETY: fresh fds owned by nobody else.
    let (alive_r, alive_w) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // Signals stay blocked across the fork until each side has set up its handlers.
    // SAFETY: plain sigset manipulation on local storage.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: single-threaded, so the child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    if pid == 0 {
        drop(alive_w);
        child(prepared, alive_r);
    }
    drop(alive_r);
    drop(prepared);
    CHILD.store(pid, Ordering::SeqCst);
    for sig in FORWARDED {
        // SAFETY: installs an async-signal-safe handler (an atomic load and kill).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let code = wait_child(pid)?;
    drop(alive_w);
    Ok(code)
}

/// Signals passed on to the exec'd process.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn wait_child(pid: i32) -> Result<i32, ExecError> {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ExecError::io("waiting for the process")(e));
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}

/// What the child needs, prepared before the fork.
struct Prepared {
    process: Process,
    cgroups: Vec<(PathBuf, File)>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_env: String,
    cwd: CString,
    tty: bool,
}

/// An errno as Go prints it: "no such file or directory".
fn errno_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn executable(path: &CString) -> bool {
    // SAFETY: access on a NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// argv[0] resolved as Go's exec.LookPath does (runc, containerd): a path with a slash as
/// is, a bare name through PATH. Errors carry the exit status and upstream's message.
pub(crate) fn look_path(name: &str, path_env: &str) -> Result<CString, (i32, String)> {
    let to_c = |p: &str| CString::new(p).map_err(|e| (EXIT_CANNOT_EXECUTE, e.to_string()));
    if name.contains('/') {
        let meta = std::fs::metadata(name).map_err(|e| {
            (
                EXIT_NOT_FOUND,
                format!("exec: {name:?}: stat {name}: {}", errno_text(&e)),
            )
        })?;
        let c = to_c(name)?;
        if meta.is_dir() || !executable(&c) {
            return Err((
                EXIT_CANNOT_EXECUTE,
                format!("exec: {name:?}: permission denied"),
            ));
        }
        return Ok(c);
    }
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{name}");
        let is_file = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file());
        if is_file {
            let c = to_c(&candidate)?;
            if executable(&c) {
                return Ok(c);
            }
        }
    }
    Err((
        EXIT_NOT_FOUND,
        format!("exec: {name:?}: executable file not found in $PATH"),
    ))
}

fn mask(set: &Option<Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .fold(0u64, |m, c| m | 1u64 << c.to_cap().index())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(ret: libc::c_int, what: &str) -> Result<(), String> {
    if ret < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// The container's user and capabilities: bounding set first (needs CAP_SETPCAP), then
/// groups and ids with the permitted set kept, then the spec's sets.
fn set_identity(process: &Process) -> Result<(), String> {
    let caps = process.capabilities().as_ref();
    // SAFETY (whole function): prctl, setgroups, setres[ug]id and capset with valid
    // arguments; each result is checked.
    if let Some(caps) = caps {
        let bounding = mask(caps.bounding());
        for cap in 0..64u64 {
            if bounding & (1 << cap) == 0 {
                let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
                if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(format!(
                        "dropping capability {cap}: {}",
                        io::Error::last_os_error()
                    ));
                }
            }
        }
    }
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
        "keepcaps",
    )?;
    let user = process.user();
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    check(
        unsafe { libc::setgroups(groups.len(), groups.as_ptr()) },
        "setgroups",
    )?;
    check(
        unsafe { libc::setresgid(user.gid(), user.gid(), user.gid()) },
        "setgid",
    )?;
    check(
        unsafe { libc::setresuid(user.uid(), user.uid(), user.uid()) },
        "setuid",
    )?;
    if let Some(caps) = caps {
        let (e, p, i) = (
            mask(caps.effective()),
            mask(caps.permitted()),
            mask(caps.inheritable()),
        );
        let header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            CapData {
                effective: e as u32,
                permitted: p as u32,
                inheritable: i as u32,
            },
            CapData {
                effective: (e >> 32) as u32,
                permitted: (p >> 32) as u32,
                inheritable: (i >> 32) as u32,
            },
        ];
        let ret = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
        check(ret as libc::c_int, "capset")?;
        check(
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                )
            },
            "clearing ambient capabilities",
        )?;
        let ambient = mask(caps.ambient());
        for cap in 0..64u64 {
            if ambient & (1 << cap) != 0 {
                check(
                    unsafe {
                        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0)
                    },
                    "raising an ambient capability",
                )?;
            }
        }
    }
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) },
        "keepcaps",
    )?;
    Ok(())
}

/// The child after the fork, inside the container's pid namespace: never returns.
fn child(p: Prepared, alive: OwnedFd) -> ! {
    let fail = |code: i32, msg: String| -> ! {
        eprintln!("{msg}");
        // SAFETY: _exit skips the parent's destructors and atexit handlers.
        unsafe { libc::_exit(code) }
    };
    let helper_fail =
        |msg: String| -> ! { fail(EXIT_HELPER_FAILED, format!("{EXEC_SUBCOMMAND}: {msg}")) };
    if let Err(e) = cgroup::join(&p.cgroups) {
        helper_fail(e);
    }
    // SAFETY (below): plain syscalls with checked results.
    unsafe { libc::setsid() };
    if p.tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        helper_fail(format!(
            "making stdin the controlling terminal: {}",
            io::Error::last_os_error()
        ));
    }
    let umask = p.process.user().umask().unwrap_or(0o022);
    unsafe { libc::umask(umask as libc::mode_t) };
    if let Err(e) = set_identity(&p.process) {
        helper_fail(e);
    }
    if p.process.no_new_privileges() == Some(true)
        && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0
    {
        helper_fail(format!("no_new_privs: {}", io::Error::last_os_error()));
    }
    if unsafe { libc::chdir(p.cwd.as_ptr()) } < 0 {
        helper_fail(format!(
            "chdir to {:?}: {}",
            p.cwd,
            errno_text(&io::Error::last_os_error())
        ));
    }
    // Die with the helper (set after the id changes, which clear it); the helper may have
    // died before: then the pipe's write end is gone.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut pfd = libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 && pfd.revents & libc::POLLHUP != 0 {
        unsafe { libc::_exit(EXIT_HELPER_FAILED) };
    }
    drop(alive);
    // Default dispositions (Rust's runtime ignores SIGPIPE; ignored signals survive exec)
    // and an empty mask.
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let name = p.argv[0].to_string_lossy().into_owned();
    let path = match look_path(&name, &p.path_env) {
        Ok(path) => path,
        Err((code, msg)) => fail(code, msg),
    };
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // Nothing above stdio reaches the process.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: NUL-terminated arrays of pointers into CStrings that live until exec.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => fail(
            EXIT_NOT_FOUND,
            format!("exec: {name:?}: no such file or directory"),
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => fail(
            EXIT_CANNOT_EXECUTE,
            format!("exec: {name:?}: permission denied"),
        ),
        _ => fail(
            EXIT_CANNOT_EXECUTE,
            format!("exec: {name:?}: {}", errno_text(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn bad_arguments_are_refused() {
        let cases: &[(&[&str], &str)] = &[
            (&["/s"], "no command"),
            (&["/s", "--"], "no command"),
            (&["--", "sh"], "no state directory"),
            (&["/s", "--env", "NOEQ", "--", "sh"], "KEY=VALUE"),
            (&["/s", "--cwd", "rel", "--", "sh"], "absolute"),
            (&["/s", "--bogus", "--", "sh"], "unknown option"),
            (&["/s", "/t", "--", "sh"], "unexpected"),
            (&["/s", "--env"], "needs a value"),
        ];
        for (a, needle) in cases {
            let err = parse_args(args(a)).expect_err(needle).to_string();
            assert!(err.contains(needle), "{a:?}: {err}");
        }
        let req = parse_args(args(&["/s", "--", "ls", "--tty"])).expect("parse");
        assert!(!req.tty, "options after -- belong to the command");
        assert_eq!(req.argv, ["ls", "--tty"]);
    }

    #[test]
    fn env_extras_override_in_place() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".into()];
        set_env(&mut env, "A=2");
        set_env(&mut env, "B=x=y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
        assert_eq!(get_env(&env, "B"), Some("x=y"));
        assert_eq!(get_env(&env, "PAT"), None);
    }

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n";
        assert_eq!(passwd_home(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(passwd_home(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(passwd_home(passwd, 5), None);
    }

    #[test]
    fn look_path_follows_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").expect("write");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let path_env = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(
            look_path("tool", &path_env).expect("found").to_str().ok(),
            exe.to_str()
        );
        let (code, msg) = look_path("nope", &path_env).expect_err("missing");
        assert_eq!(code, 127);
        assert_eq!(msg, r#"exec: "nope": executable file not found in $PATH"#);
        // Not executable in PATH counts as not found, as in Go.
        assert_eq!(look_path("plain", &path_env).expect_err("plain").0, 127);
        let abs = plain.to_string_lossy().into_owned();
        // (root may execute any file with an x bit; this one has none)
        let (code, msg) = look_path(&abs, &path_env).expect_err("no x bit");
        assert_eq!(code, 126, "{msg}");
        let (code, msg) = look_path("/no/such", &path_env).expect_err("missing");
        assert_eq!(code, 127);
        assert_eq!(
            msg,
            r#"exec: "/no/such": stat /no/such: no such file or directory"#
        );
    }
}
