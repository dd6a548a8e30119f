//! Runs real containers through the shim (the `runtime-shim` helper binary) in a busybox
//! rootfs. Root only: each test prints a message and passes when not root. Every test uses
//! its own container id, temp dirs and cgroup, and a guard that kills and cleans up even when
//! the test fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::shim::{
    BindMount, ClientError, ContainerConfig, ExitRecord, KillOutcome, Resources, RunningContainer,
    ShimClient, Signal, StartErrorKind,
};

const SHIM: &str = env!("CARGO_BIN_EXE_runtime-shim");
const WAIT: Option<Duration> = Some(Duration::from_secs(60));

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: shim tests need root");
    }
    root
}

/// A busybox rootfs, a state dir and a log path, plus the cleanup of whatever the test
/// leaves running.
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
        let id = format!("shimtest-{name}-{}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        busybox_rootfs(&dir.path().join("rootfs"));
        Self {
            id,
            dir,
            running: None,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs/0.log")
    }
    /// A parent of its own (as a pod's cgroup) with the container below it.
    fn cgroups_path(&self) -> PathBuf {
        PathBuf::from(format!("/{}/ctr", self.id))
    }

    fn config(&self, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: self.id.clone(),
            rootfs: self.rootfs(),
            readonly_rootfs: false,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            working_dir: None,
            hostname: Some("shim-test".into()),
            namespaces: Default::default(),
            cgroups_path: self.cgroups_path(),
            resources: Resources::default(),
            mounts: vec![],
            user: Default::default(),
            oom_score_adj: None,
            stdio: Default::default(),
        }
    }

    fn start(&mut self, config: &ContainerConfig) -> Result<RunningContainer, ClientError> {
        let running = ShimClient::new(SHIM).start(config, &self.state_dir(), &self.log_path())?;
        self.running = Some(running.clone());
        Ok(running)
    }

    /// Runs a container to its end.
    fn run(&mut self, args: &[&str]) -> ExitRecord {
        let config = self.config(args);
        self.run_config(&config)
    }

    fn run_config(&mut self, config: &ContainerConfig) -> ExitRecord {
        let running = self.start(config).expect("start");
        running.wait_exit(WAIT).expect("exit record")
    }

    /// The content of the CRI log's records for one stream.
    fn log_lines(&self, stream: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(4, ' ');
                let (ts, s, tag) = (parts.next()?, parts.next()?, parts.next()?);
                assert!(
                    ts.ends_with('Z') && ts.contains('T'),
                    "timestamp in {line:?}"
                );
                assert!(tag == "F" || tag == "P", "tag in {line:?}");
                (s == stream).then(|| parts.next().unwrap_or("").to_string())
            })
            .collect()
    }

    /// cgroup directories of this container that still exist.
    fn cgroup_leftovers(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.id)
            .into_iter()
            .map(|d| d.join("ctr"))
            .filter(|d| d.exists())
            .collect()
    }

    fn assert_cleaned_up(&self) {
        assert!(
            !cgroup_dirs(&self.id).is_empty(),
            "the cgroup was created where the test looks for it"
        );
        assert_eq!(
            self.cgroup_leftovers(),
            Vec::<PathBuf>::new(),
            "cgroups left"
        );
        let lc = self.state_dir().join("libcontainer");
        assert!(!lc.join(&self.id).exists(), "libcontainer state left");
    }
}

/// A root filesystem at `rootfs`: /bin with busybox and the applets the tests run, /tmp.
fn busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::create_dir_all(rootfs.join("tmp")).expect("mkdir tmp");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
    for applet in [
        "sh", "echo", "sleep", "cat", "ls", "hostname", "true", "false", "touch", "readlink",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
}

/// The test's parent cgroup directories (`/<id>`) in every hierarchy (v1 controllers,
/// v2 unified mount, or a pure v2 root).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| entries.flatten().map(|e| e.path().join(id)).collect())
        .unwrap_or_default();
    found.push(root.join(id));
    found.retain(|p| p.is_dir());
    found
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            if running.exit_record().ok().flatten().is_none() {
                let _ = running.kill(Signal::SIGKILL);
                let _ = running.wait_exit(Some(Duration::from_secs(10)));
            }
        }
        // The shim removes the container's cgroup; the parent is the test's (as a pod's
        // cgroup is the agent's). After a failure, remove what is left, leaf first.
        for dir in cgroup_dirs(&self.id) {
            let _ = std::fs::remove_dir(dir.join("ctr"));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn echo_hello_reaches_the_cri_log() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("echo");
    let exit = f.run(&["sh", "-c", "echo hello; echo oops >&2; printf tail"]);
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert!(!exit.oom_killed);
    assert_eq!(f.log_lines("stdout"), ["hello", "tail"]);
    assert_eq!(f.log_lines("stderr"), ["oops"]);
    let bundle = f.state_dir().join("bundle/config.json");
    assert!(bundle.exists(), "OCI bundle kept for an external runtime");
    f.assert_cleaned_up();
}

#[test]
fn readonly_rootfs_and_bind_mounts() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("mounts");
    let vol = f.dir.path().join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir vol");
    std::fs::write(vol.join("f"), "from-volume\n").expect("write vol");
    let mut config = f.config(&[
        "sh",
        "-c",
        "cat /data/f; touch /x 2>/dev/null || echo ro-root; touch /data/y 2>/dev/null || echo ro-vol",
    ]);
    config.readonly_rootfs = true;
    config.mounts.push(BindMount {
        source: vol,
        destination: "/data".into(),
        readonly: true,
    });
    let exit = f.run_config(&config);
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert_eq!(f.log_lines("stdout"), ["from-volume", "ro-root", "ro-vol"]);
}

#[test]
fn joins_a_given_network_namespace() {
    if !is_root() {
        return;
    }
    // The first container's netns stands in for the pod netns the agent creates.
    let mut holder = Fixture::new("netns-holder");
    let running = holder
        .start(&holder.config(&["sleep", "1000"]))
        .expect("start holder");
    let netns = PathBuf::from(format!("/proc/{}/ns/net", running.pid()));
    let expected = std::fs::read_link(&netns).expect("holder netns");

    let mut f = Fixture::new("netns");
    let mut config = f.config(&["sh", "-c", "readlink /proc/self/ns/net"]);
    config.namespaces.network = Some(netns);
    let exit = f.run_config(&config);
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert_eq!(f.log_lines("stdout"), [expected.to_string_lossy()]);
    let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    assert_ne!(own, expected, "the holder has a netns of its own");
    running.kill(Signal::SIGKILL).expect("kill holder");
    running.wait_exit(WAIT).expect("holder exit");
}

#[test]
fn exit_code_propagates() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("exit3");
    let exit = f.run(&["sh", "-c", "exit 3"]);
    assert_eq!((exit.exit_code, exit.signal), (3, None), "{exit:?}");
    f.assert_cleaned_up();
}

#[test]
fn only_stdio_reaches_the_container() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("fds");
    let exit = f.run(&["ls", "/proc/self/fd"]);
    assert_eq!(exit.exit_code, 0);
    let fds = f.log_lines("stdout");
    // 0 1 2, plus the directory ls itself has open while listing.
    assert!(
        fds == ["0", "1", "2"] || fds == ["0", "1", "2", "3"],
        "open fds: {fds:?}"
    );
}

#[test]
fn hostname_and_pid_one() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("uts");
    let exit = f.run(&["sh", "-c", "hostname; echo $$"]);
    assert_eq!(exit.exit_code, 0);
    assert_eq!(f.log_lines("stdout"), ["shim-test", "1"]);
}

#[test]
fn the_container_sees_only_its_configured_environment() {
    if !is_root() {
        return;
    }
    // The shim runs with the spawner's environment plus its own settings (an allocator
    // variable); none of that may leak into the container.
    let mut f = Fixture::new("env");
    let mut config = f.config(&["sh", "-c", "env | sort"]);
    config.env.push("GREETING=hello".into());
    let exit = f.run_config(&config);
    assert_eq!(exit.exit_code, 0);
    let lines = f.log_lines("stdout");
    assert!(lines.iter().any(|l| l == "GREETING=hello"), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("MIMALLOC_") || l.starts_with("CARGO")),
        "{lines:?}"
    );
}

#[test]
fn memory_hog_is_oom_killed() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("oom");
    let mut config = f.config(&["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    config.resources.memory_limit = Some(16 << 20);
    let exit = f.run_config(&config);
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{exit:?}");
    f.assert_cleaned_up();
}

#[test]
fn sigterm_then_sigkill_stop_containers() {
    if !is_root() {
        return;
    }
    // A process with a TERM handler stops on SIGTERM.
    let mut f = Fixture::new("term");
    let running = f
        .start(&f.config(&[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ]))
        .expect("start");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        running.kill(Signal::SIGTERM).expect("kill"),
        KillOutcome::Signalled
    );
    let exit = running.wait_exit(WAIT).expect("exit");
    assert_eq!(exit.exit_code, 143, "{exit:?}");

    // A bare `sleep 1000` is pid 1 without a handler: the kernel drops SIGTERM from outside
    // (as upstream, where such pods wait out the grace period), and SIGKILL ends it.
    let mut g = Fixture::new("kill");
    let running = g.start(&g.config(&["sleep", "1000"])).expect("start");
    assert_eq!(
        running.kill(Signal::SIGTERM).expect("kill"),
        KillOutcome::Signalled
    );
    assert!(matches!(
        running.wait_exit(Some(Duration::from_millis(500))),
        Err(ClientError::WaitTimeout(_))
    ));
    assert_eq!(
        running.kill(Signal::SIGKILL).expect("kill"),
        KillOutcome::Signalled
    );
    let exit = running.wait_exit(WAIT).expect("exit");
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{exit:?}");
    assert_eq!(
        running.kill(Signal::SIGKILL).expect("kill"),
        KillOutcome::AlreadyExited
    );
    g.assert_cleaned_up();
}

#[test]
fn missing_executable_is_a_start_error() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("noexec");
    let config = f.config(&["no-such-command"]);
    match f.start(&config) {
        Err(ClientError::StartFailed { kind, message, .. }) => {
            assert_eq!(kind, StartErrorKind::ExecutableNotFound, "{message}");
            assert!(message.contains("no-such-command"), "{message}");
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    f.assert_cleaned_up();
}

/// Not a test on its own: the body of `shim_outlives_its_spawner`'s child process.
#[test]
fn spawner_helper() {
    let Ok(request) = std::env::var("SHIM_TEST_SPAWN") else {
        return;
    };
    let (config, state_dir, log): (ContainerConfig, PathBuf, PathBuf) =
        serde_json::from_str(&request).expect("spawn request");
    let running = ShimClient::new(SHIM)
        .start(&config, &state_dir, &log)
        .expect("start from the helper");
    println!("helper started pid {}", running.pid());
    // The helper process ends here, with the container still running.
}

#[test]
fn shim_outlives_its_spawner() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("adopt");
    let config = f.config(&[
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; echo adopted; exit 7",
    ]);
    let request = serde_json::to_string(&(&config, f.state_dir(), f.log_path())).expect("request");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "spawner_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHIM_TEST_SPAWN", request)
        .status()
        .expect("run helper");
    assert!(status.success(), "helper failed: {status:?}");

    let running = RunningContainer::adopt(&f.state_dir()).expect("adopt");
    f.running = Some(running.clone());
    assert!(
        running.exit_record().expect("read").is_none(),
        "still running"
    );
    let shim_parent = std::fs::read_to_string(format!("/proc/{}/stat", running.shim_pid()))
        .expect("shim alive after its spawner exited");
    assert!(!shim_parent.is_empty());
    std::fs::write(f.rootfs().join("tmp/go"), "").expect("release the container");
    let exit = running.wait_exit(WAIT).expect("exit");
    assert_eq!(exit.exit_code, 7, "{exit:?}");
    assert_eq!(f.log_lines("stdout"), ["adopted"]);
    f.assert_cleaned_up();
}

#[test]
fn bad_config_is_refused_before_anything_runs() {
    let f = Fixture::new("bad");
    let mut config = f.config(&["true"]);
    config.cgroups_path = "relative".into();
    let err = ShimClient::new(SHIM)
        .start(&config, &f.state_dir(), &f.log_path())
        .expect_err("refused");
    assert!(matches!(err, ClientError::InvalidConfig(_)), "{err}");
    assert!(!f.state_dir().exists(), "nothing written");
}

#[test]
fn logs_are_rotated_by_size_keeping_the_newest_files() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("rotate");
    // Eight bursts of ~4.6 KiB against a 4 KiB limit: a rotation after each.
    let config = f.config(&[
        "sh",
        "-c",
        "b=0; while [ $b -lt 8 ]; do i=0; while [ $i -lt 120 ]; do echo line-$b-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; b=$((b+1)); sleep 0.1; done; echo done",
    ]);
    let running = ShimClient::new(SHIM)
        .with_log_max_bytes(4096)
        .start(&config, &f.state_dir(), &f.log_path())
        .expect("start");
    f.running = Some(running.clone());
    let exit = running.wait_exit(WAIT).expect("exit record");
    assert_eq!(exit.exit_code, 0);
    let dir = f.log_path().parent().unwrap().to_path_buf();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        5,
        "the current log and four rotated ones: {names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("0.log.")).count() == 4,
        "{names:?}"
    );
    let current = std::fs::metadata(f.log_path()).unwrap().len();
    assert!(current < 4096 + 200, "current log {current} bytes");
    // The newest lines are in the current file, the last one intact (how much of the last
    // burst precedes it depends on how the shim's reads fell).
    let lines = f.log_lines("stdout");
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
    f.assert_cleaned_up();
}

/// The launchers this test process started for shims under `dir` (`container-shim --zygote
/// <dir>`, our children; other tests' launchers name their own directories).
fn launchers(dir: &Path) -> Vec<i32> {
    let needle = format!("--zygote\0{}", dir.display());
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent.as_deref() == Some(me.as_str())
                && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

#[test]
fn shims_start_through_a_launcher_that_is_replaced_when_it_dies_or_directly() {
    if !is_root() {
        return;
    }
    let client = ShimClient::new(SHIM);
    let mut first = Fixture::new("launch1");
    let running = client
        .start(
            &first.config(&["echo", "one"]),
            &first.state_dir(),
            &first.log_path(),
        )
        .expect("start through the launcher");
    first.running = Some(running.clone());
    assert_eq!(running.wait_exit(WAIT).expect("exit").exit_code, 0);
    assert_eq!(first.log_lines("stdout"), ["one"]);
    first.assert_cleaned_up();
    let under = |f: &Fixture| {
        std::fs::canonicalize(f.state_dir())
            .ok()
            .and_then(|d| d.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    };
    let before = launchers(&under(&first));
    assert_eq!(before.len(), 1, "one launcher: {before:?}");

    // A launcher that died is replaced at the next start.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(before[0], libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut second = Fixture::new("launch2");
    let running = client
        .start(
            &second.config(&["echo", "two"]),
            &second.state_dir(),
            &second.log_path(),
        )
        .expect("start through a new launcher");
    second.running = Some(running.clone());
    assert_eq!(running.wait_exit(WAIT).expect("exit").exit_code, 0);
    assert_eq!(second.log_lines("stdout"), ["two"]);
    second.assert_cleaned_up();
    let after = launchers(&under(&second));
    assert_eq!(after.len(), 1, "a new launcher: {after:?}");
    assert!(
        launchers(&under(&first)).is_empty(),
        "the killed one is reaped"
    );
    // The last client gone, its launcher goes too.
    drop(client);
    assert!(launchers(&under(&second)).is_empty());

    // Without a launcher the shim is spawned directly.
    let mut third = Fixture::new("direct");
    let running = ShimClient::new(SHIM)
        .without_launcher()
        .start(
            &third.config(&["echo", "three"]),
            &third.state_dir(),
            &third.log_path(),
        )
        .expect("start directly");
    third.running = Some(running.clone());
    assert_eq!(running.wait_exit(WAIT).expect("exit").exit_code, 0);
    assert_eq!(third.log_lines("stdout"), ["three"]);
    third.assert_cleaned_up();
    assert!(launchers(&under(&third)).is_empty());
}

/// Detaches the mounts a test made, last first, even when it fails.
struct Mounted(Vec<PathBuf>);

impl Drop for Mounted {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn mount_tmpfs(at: &Path) {
    std::fs::create_dir_all(at).expect("mkdir for tmpfs");
    nix::mount::mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount tmpfs");
}

fn node_mount_points() -> Vec<String> {
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    points.sort();
    points
}

/// A config for a fixture's container with its rootfs and state in `pod`, as the agent lays
/// a pod out; returns the config and the state directory.
fn in_pod(f: &Fixture, pod: &Path, args: &[&str]) -> (ContainerConfig, PathBuf) {
    let rootfs = pod.join(format!("rootfs-{}", f.id));
    busybox_rootfs(&rootfs);
    let mut config = f.config(args);
    config.rootfs = rootfs;
    (config, pod.join(format!("state-{}", f.id)))
}

/// With a pods directory to hide, a launcher makes a template mount namespace, and a
/// container whose files all lie in its pod is created in a copy of it, with its pod's
/// mounts moved in; one with a bind source elsewhere (a hostPath) gets a copy of the node's
/// namespace, which has the mount made after the launcher started. Both see the right
/// files (another pod's volume is mounted all along), and the node's mount table is left
/// as it was.
#[test]
fn containers_wholly_in_their_pod_start_from_the_launchers_template() {
    if !is_root() {
        return;
    }
    let mut own = Fixture::new("template-own");
    let mut host_path = Fixture::new("template-hostpath");
    let pods = std::fs::canonicalize(own.dir.path()).unwrap().join("pods");
    let mut mounted = Mounted(vec![]);
    assert!(runtime::sandbox::mounts::ensure_own_mount(&pods).expect("pods mount"));
    mounted.0.push(pods.clone());
    // Another pod's volume, which no container of pod a should see.
    mount_tmpfs(&pods.join("b/vol"));
    std::fs::write(pods.join("b/vol/secret"), "b's\n").unwrap();
    let pod = pods.join("a");
    let volume = pod.join("vol");
    mount_tmpfs(&volume);
    std::fs::write(volume.join("f"), "in-pod\n").unwrap();

    let client = ShimClient::new(SHIM);
    let hidden = runtime::shim::HiddenMounts {
        under: pods.clone(),
        keep: pod.clone(),
    };
    let (mut config, state) = in_pod(&own, &pod, &["cat", "/data/f"]);
    config.mounts.push(BindMount {
        source: volume.clone(),
        destination: "/data".into(),
        readonly: true,
    });
    let before = node_mount_points();
    let running = client
        .start_hiding(&config, &state, &own.log_path(), Some(&hidden))
        .expect("start in the template");
    own.running = Some(running.clone());
    assert_eq!(running.wait_exit(WAIT).expect("exit").exit_code, 0);
    assert_eq!(own.log_lines("stdout"), ["in-pod"]);
    let shim_log = std::fs::read_to_string(state.join("shim.log")).unwrap_or_default();
    assert!(
        !shim_log.contains("copying the node's"),
        "the template served: {shim_log}"
    );

    // The launcher holds the template: a mount namespace other than its own.
    let launcher = launchers(&pods);
    assert_eq!(launcher.len(), 1, "{launcher:?}");
    let its_own = std::fs::read_link(format!("/proc/{}/ns/mnt", launcher[0])).unwrap();
    let held: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", launcher[0]))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("mnt:"))
        .collect();
    assert!(
        held.iter().any(|l| *l != its_own),
        "template namespace held by the launcher: {held:?} (own {its_own:?})"
    );
    assert_eq!(
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        its_own,
        "the launcher itself stays in the node's namespace"
    );

    // A source outside the pod, mounted after the launcher made its template.
    let late = std::fs::canonicalize(host_path.dir.path())
        .unwrap()
        .join("late");
    mount_tmpfs(&late);
    mounted.0.push(late.clone());
    std::fs::write(late.join("f"), "late-mount\n").unwrap();
    let pod_c = pods.join("c");
    let (mut config, state) = in_pod(&host_path, &pod_c, &["cat", "/host/f"]);
    config.mounts.push(BindMount {
        source: late.clone(),
        destination: "/host".into(),
        readonly: true,
    });
    let hidden = runtime::shim::HiddenMounts {
        under: pods.clone(),
        keep: pod_c,
    };
    let running = client
        .start_hiding(&config, &state, &host_path.log_path(), Some(&hidden))
        .expect("start in a copy of the node's namespace");
    host_path.running = Some(running.clone());
    assert_eq!(running.wait_exit(WAIT).expect("exit").exit_code, 0);
    assert_eq!(host_path.log_lines("stdout"), ["late-mount"]);

    let mut expected = before.clone();
    expected.push(late.to_string_lossy().into_owned());
    expected.sort();
    assert_eq!(node_mount_points(), expected, "no mount left on the node");
    drop(client);
}
