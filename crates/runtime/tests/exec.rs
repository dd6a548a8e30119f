//! Runs processes inside running containers through the exec helper (`runtime-exec`), the
//! containers started by the shim (`runtime-shim`) in a busybox rootfs. Root only: each test
//! prints a message and passes when not root.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use runtime::exec::{self, ExecError, ExecRequest};
use runtime::shim::{ContainerConfig, Resources, RunningContainer, ShimClient, Signal, UserIds};

const SHIM: &str = env!("CARGO_BIN_EXE_runtime-shim");
const EXEC: &str = env!("CARGO_BIN_EXE_runtime-exec");
const WAIT: Option<Duration> = Some(Duration::from_secs(60));

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: exec tests need root");
    }
    root
}

/// A busybox rootfs and state dir, and the cleanup of the container the test starts.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    running: Option<RunningContainer>,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("exectest-{name}-{}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::fs::create_dir_all(rootfs.join("tmp")).expect("mkdir tmp");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir etc");
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in [
            "sh", "echo", "sleep", "cat", "ls", "hostname", "true", "false", "id", "tty", "env",
            "grep",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
        }
        Self {
            id,
            dir,
            running: None,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn cgroups_path(&self) -> PathBuf {
        PathBuf::from(format!("/{}/ctr", self.id))
    }

    fn config(&self, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: self.id.clone(),
            rootfs: self.dir.path().join("rootfs"),
            readonly_rootfs: false,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "FROM_SPEC=yes".into()],
            working_dir: None,
            hostname: Some("exec-test".into()),
            namespaces: Default::default(),
            cgroups_path: self.cgroups_path(),
            resources: Resources::default(),
            mounts: vec![],
            user: Default::default(),
            oom_score_adj: None,
            stdio: Default::default(),
        }
    }

    fn start(&mut self, config: &ContainerConfig) -> RunningContainer {
        let running = ShimClient::new(SHIM)
            .start(
                config,
                &self.state_dir(),
                &self.dir.path().join("logs/0.log"),
            )
            .expect("start container");
        self.running = Some(running.clone());
        running
    }

    fn request(&self, argv: &[&str]) -> ExecRequest {
        ExecRequest {
            state_dir: self.state_dir(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn exec(&self, req: &ExecRequest) -> Output {
        exec::command(Path::new(EXEC), req)
            .stdin(Stdio::null())
            .output()
            .expect("run exec helper")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            if running.exit_record().ok().flatten().is_none() {
                let _ = running.kill(Signal::SIGKILL);
                let _ = running.wait_exit(Some(Duration::from_secs(10)));
            }
        }
        let root = Path::new("/sys/fs/cgroup");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|entries| entries.flatten().map(|e| e.path().join(&self.id)).collect())
            .unwrap_or_default();
        dirs.push(root.join(&self.id));
        for dir in dirs.into_iter().filter(|d| d.is_dir()) {
            let _ = std::fs::remove_dir(dir.join("ctr"));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn exec_joins_the_running_container() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("join");
    let mut config = f.config(&["sleep", "60"]);
    config.user = UserIds {
        uid: 1234,
        gid: 2345,
        additional_gids: vec![5],
    };
    let running = f.start(&config);

    let mut req = f.request(&[
        "sh",
        "-c",
        "echo $$; hostname; cat /proc/1/cmdline; echo; id; echo home=$HOME spec=$FROM_SPEC extra=$EXTRA; pwd",
    ]);
    req.env = vec!["EXTRA=1".into(), "FROM_SPEC=overridden".into()];
    req.cwd = Some("/tmp".into());
    let out = f.exec(&req);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let own_pid: i32 = lines[0].parse().expect("pid");
    assert!(own_pid > 1, "a pid of the container's namespace: {text}");
    assert!(
        own_pid < 100,
        "a small pid of the container's namespace: {text}"
    );
    assert_eq!(lines[1], "exec-test", "the container's hostname");
    assert_eq!(
        lines[2].trim_end_matches('\0'),
        "sleep\u{0}60",
        "pid 1 is the container's sleep"
    );
    assert!(
        lines[3].starts_with("uid=1234(app) gid=2345") && lines[3].ends_with("groups=5"),
        "the container's user: {}",
        lines[3]
    );
    assert_eq!(lines[4], "home=/home/app spec=overridden extra=1");
    assert_eq!(lines[5], "/tmp");

    // Capabilities as the container's own process has them.
    let out = f.exec(&f.request(&["cat", "/proc/self/status"]));
    assert!(out.status.success(), "{out:?}");
    let exec_status = stdout(&out);
    let init_status =
        std::fs::read_to_string(format!("/proc/{}/status", running.pid())).expect("init status");
    for key in [
        "CapBnd:",
        "CapEff:",
        "CapPrm:",
        "CapInh:",
        "CapAmb:",
        "NoNewPrivs:",
        "Uid:",
        "Gid:",
        "Groups:",
    ] {
        assert_eq!(
            status_field(&exec_status, key),
            status_field(&init_status, key),
            "{key}"
        );
    }
    assert_eq!(status_field(&exec_status, "CapBnd:"), "00000000a80425fb");
}

#[test]
fn root_exec_has_the_default_capabilities() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("caps");
    let running = f.start(&f.config(&["sleep", "60"]));
    let out = f.exec(&f.request(&["cat", "/proc/self/status"]));
    assert!(out.status.success(), "{out:?}");
    let exec_status = stdout(&out);
    let init_status =
        std::fs::read_to_string(format!("/proc/{}/status", running.pid())).expect("init status");
    for key in [
        "CapBnd:", "CapEff:", "CapPrm:", "CapInh:", "Uid:", "Gid:", "Groups:",
    ] {
        assert_eq!(
            status_field(&exec_status, key),
            status_field(&init_status, key),
            "{key}"
        );
    }
    assert_eq!(status_field(&exec_status, "CapEff:"), "00000000a80425fb");
}

#[test]
fn exit_codes_and_missing_executables() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("codes");
    f.start(&f.config(&["sleep", "60"]));
    let out = f.exec(&f.request(&["false"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = f.exec(&f.request(&["sh", "-c", "exit 42"]));
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    let out = f.exec(&f.request(&["sh", "-c", "kill -9 $$"]));
    assert_eq!(out.status.code(), Some(137), "{out:?}");

    let out = f.exec(&f.request(&["no-such-tool", "x"]));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"exec: "no-such-tool": executable file not found in $PATH"#),
        "{stderr}"
    );
    let out = f.exec(&f.request(&["/etc/passwd"]));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
}

#[test]
fn only_stdio_reaches_the_process_and_it_is_in_the_cgroup() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("fds");
    let running = f.start(&f.config(&["sleep", "60"]));
    // An inheritable descriptor in the caller must not reach the process.
    let leak = std::fs::File::open("/dev/null").expect("open");
    // SAFETY: clears FD_CLOEXEC on a descriptor we own.
    unsafe { libc::fcntl(leak.as_raw_fd(), libc::F_SETFD, 0) };
    let out = f.exec(&f.request(&["ls", "/proc/self/fd"]));
    drop(leak);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let fds: Vec<&str> = text.lines().collect();
    assert!(
        fds == ["0", "1", "2"] || fds == ["0", "1", "2", "3"],
        "open fds: {fds:?}"
    );

    let out = f.exec(&f.request(&["cat", "/proc/self/cgroup"]));
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let want = f.cgroups_path().to_string_lossy().into_owned();
    assert!(
        text.lines().any(|l| l.ends_with(&format!(":{want}"))),
        "{want} in {text}"
    );
    // Every hierarchy: the same cgroups as the container's own process.
    let init = std::fs::read_to_string(format!("/proc/{}/cgroup", running.pid())).expect("init");
    assert_eq!(text, init);
}

fn read_all(master: OwnedFd) -> String {
    let mut file = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // EIO: every slave descriptor is closed.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn tty_exec_gets_a_controlling_terminal() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("tty");
    f.start(&f.config(&["sleep", "60"]));
    let (master, slave) = exec::open_container_pty(&f.state_dir()).expect("pty");
    exec::resize(&master, 33, 101).expect("resize");
    let mut req = f.request(&[
        "sh",
        "-c",
        "tty; echo hi; stty size 2>/dev/null || true; cat /proc/self/stat",
    ]);
    req.tty = true;
    let mut child = exec::command(Path::new(EXEC), &req)
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn");
    let reader = std::thread::spawn(move || read_all(master));
    let status = child.wait().expect("wait");
    let text = reader.join().expect("reader");
    eprintln!("tty output: {text:?}");
    assert!(status.success(), "{status:?}: {text}");
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines[0].starts_with("/dev/pts/"),
        "the container's devpts: {text:?}"
    );
    assert_eq!(lines[1], "hi", "{text:?}");
    assert_eq!(
        lines[2], "33 101",
        "the window size set on the master: {text:?}"
    );
    // /proc/self/stat: field 7 (tty_nr) is non-zero, and the process leads its session.
    let stat = lines.last().expect("stat");
    let after = &stat[stat.rfind(')').expect(")") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    assert_ne!(fields[4], "0", "a controlling terminal: {stat}");
    assert!(
        text.contains("\r\n"),
        "output went through a terminal: {text:?}"
    );
}

#[test]
fn exec_into_a_stopped_container_fails_clearly() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("stopped");
    let running = f.start(&f.config(&["true"]));
    running.wait_exit(WAIT).expect("exit");
    let err = exec::check_running(&f.state_dir()).expect_err("not running");
    assert!(matches!(err, ExecError::NotRunning { .. }), "{err}");
    let out = f.exec(&f.request(&["true"]));
    assert_eq!(out.status.code(), Some(exec::EXIT_HELPER_FAILED), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("container is not running"), "{stderr}");
}

#[test]
fn never_started_or_recycled_pids_are_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = exec::check_running(dir.path()).expect_err("no started.json");
    assert!(
        err.to_string().contains("container is not running"),
        "{err}"
    );
    // A live pid (this test) whose start time does not match the record: a reused pid.
    let record = serde_json::json!({
        "shim_pid": std::process::id(),
        "shim_start_time": 0,
        "pid": std::process::id(),
        "pid_start_time": 1,
        "started_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(dir.path().join("started.json"), record.to_string()).expect("write");
    let err = exec::check_running(dir.path()).expect_err("reused pid");
    assert!(
        err.to_string().contains("container is not running"),
        "{err}"
    );
    let out = exec::command(
        Path::new(EXEC),
        &ExecRequest {
            state_dir: dir.path().to_owned(),
            argv: vec!["true".into()],
            ..Default::default()
        },
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(exec::EXIT_HELPER_FAILED));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container is not running"),
        "{out:?}"
    );
}

#[test]
fn signals_reach_the_process_and_it_dies_with_the_helper() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("signals");
    let running = f.start(&f.config(&["sleep", "60"]));
    let procs = || -> Vec<String> {
        // cgroup v1 (the memory hierarchy) or pure v2.
        let v1 = format!("/sys/fs/cgroup/memory{}", f.cgroups_path().display());
        let v2 = format!("/sys/fs/cgroup{}", f.cgroups_path().display());
        let dir = if Path::new(&v1).is_dir() { v1 } else { v2 };
        std::fs::read_to_string(format!("{dir}/cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let spawn = |secs: &str| {
        let child = exec::command(Path::new(EXEC), &f.request(&["sleep", secs]))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        // Wait until the process has joined the container's cgroup.
        for _ in 0..100 {
            if procs().len() >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    // SIGTERM to the helper is passed on: the process dies of it.
    let child = spawn("31");
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(143), "{out:?}");

    // SIGKILL to the helper takes the process with it (parent-death signal).
    let mut child = spawn("32");
    child.kill().expect("kill helper");
    child.wait().expect("reap helper");
    let mut left = procs();
    for _ in 0..100 {
        if left.len() <= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = procs();
    }
    assert_eq!(
        left,
        [running.pid().to_string()],
        "only the container's sleep is left"
    );
}
