//! The shim's attach socket with real containers (the `runtime-shim` helper binary, a
//! busybox rootfs): live output to several attachers and none of the old, stdin kept open
//! and closed by stdinOnce, refusal of stdin that is not kept open, a terminal with window
//! sizes. Root only: each test prints a message and passes when not root.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use runtime::shim::attach::{self, Frame, FrameReader, FromShim, StreamSet, ToShim};
use runtime::shim::{ContainerConfig, RunningContainer, ShimClient, Signal, StdioConfig};

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

/// A busybox rootfs and state dir; kills what the test leaves running.
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
        let id = format!("attachtest-{name}-{}-{nanos}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "sleep", "cat", "ls", "stty", "tty", "true"] {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/0.log")).unwrap_or_default()
    }

    fn start(&mut self, args: &[&str], stdio: StdioConfig) -> RunningContainer {
        let config = ContainerConfig {
            id: self.id.clone(),
            rootfs: self.dir.path().join("rootfs"),
            readonly_rootfs: false,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            working_dir: None,
            hostname: Some("attach-test".into()),
            namespaces: Default::default(),
            cgroups_path: PathBuf::from(format!("/{}/ctr", self.id)),
            resources: Default::default(),
            mounts: vec![],
            user: Default::default(),
            oom_score_adj: None,
            stdio,
        };
        let running = ShimClient::new(SHIM)
            .start(
                &config,
                &self.state_dir(),
                &self.dir.path().join("logs/0.log"),
            )
            .expect("start");
        self.running = Some(running.clone());
        running
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
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if let Ok(entries) = std::fs::read_dir(root) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir(e.path().join(&self.id).join("ctr"));
                    let _ = std::fs::remove_dir(e.path().join(&self.id));
                }
            }
            let _ = std::fs::remove_dir(PathBuf::from(root).join(&self.id));
        }
    }
}

/// One attach connection, blocking with a read timeout.
struct Attached {
    sock: UnixStream,
    reader: FrameReader,
}

impl Attached {
    fn open(state_dir: &std::path::Path, streams: StreamSet) -> (Attached, FromShim) {
        let sock = attach::connect(state_dir).expect("connect to the attach socket");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut a = Attached {
            sock,
            reader: FrameReader::default(),
        };
        a.send(&ToShim::Hello(streams));
        let answer = a.next().expect("an answer to the hello");
        (a, answer)
    }

    fn send(&mut self, m: &ToShim) {
        self.sock.write_all(&m.encode()).expect("send");
    }

    /// The next message; None at the end of the connection.
    fn next(&mut self) -> Option<FromShim> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.reader.next_message::<FromShim>().expect("decode") {
                return Some(m);
            }
            match self.sock.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.reader.push(&buf[..n]),
                Err(e) => panic!("reading from the shim: {e}"),
            }
        }
    }

    /// Output (stdout) until `needle` has been seen; all of it.
    fn read_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        while !text.contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in {text:?}");
            match self.next() {
                Some(FromShim::Stdout(d)) | Some(FromShim::Stderr(d)) => {
                    text.push_str(&String::from_utf8_lossy(&d))
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("connection ended before {needle:?}: {text:?}"),
            }
        }
        text
    }
}

fn streams(stdin: bool, stdout: bool, stderr: bool) -> StreamSet {
    StreamSet {
        stdin,
        stdout,
        stderr,
    }
}

fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
        .collect()
}

#[test]
fn attachers_see_live_output_and_none_of_the_old() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("live");
    let running = f.start(
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line-$i; echo err-$i >&2; i=$((i+1)); sleep 0.2; done",
        ],
        StdioConfig::default(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (mut a, answer) = Attached::open(&f.state_dir(), streams(false, true, false));
    assert_eq!(answer, FromShim::Ready { tty: false });
    let (mut b, _) = Attached::open(&f.state_dir(), streams(false, true, true));
    let seen_a = a.read_until("line-12\n");
    let seen_b = b.read_until("err-12\n");
    let first = numbers(&seen_a)[0];
    assert!(first >= 4, "old output was replayed: {seen_a:?}");
    assert!(
        !seen_a.contains("err-"),
        "stderr was not asked for: {seen_a:?}"
    );
    assert!(
        seen_b.contains("line-11\n") && seen_b.contains("err-11\n"),
        "{seen_b:?}"
    );
    // Output still reaches the log as before.
    assert!(f.log().contains(" stdout F line-12\n"), "{}", f.log());

    running.kill(Signal::SIGKILL).expect("kill");
    running.wait_exit(WAIT).expect("exit");
    // The container's end ends the attach connection.
    while let Some(m) = a.next() {
        assert!(matches!(m, FromShim::Stdout(_)), "{m:?}");
    }
    assert!(!f.state_dir().join(attach::SOCKET_NAME).exists());
}

#[test]
fn stdin_reaches_the_container_and_stdin_once_closes_it() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("stdin");
    let stdio = StdioConfig {
        stdin: true,
        stdin_once: true,
        tty: false,
    };
    let running = f.start(&["sh", "-c", "ls /proc/self/fd; cat; echo cat-done"], stdio);
    let (mut a, answer) = Attached::open(&f.state_dir(), streams(true, true, true));
    assert_eq!(answer, FromShim::Ready { tty: false });
    a.send(&ToShim::Stdin(b"hello there\n".to_vec()));
    a.read_until("hello there\n");
    // The end of this (first) session's input is the end of the container's stdin.
    a.send(&ToShim::CloseStdin);
    a.read_until("cat-done\n");
    let exit = running.wait_exit(WAIT).expect("exit");
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert!(a.next().is_none(), "the connection ends with the container");
    // Only stdio reached the container (3 is ls's own directory).
    let log = f.log();
    let fds: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .take_while(|l| l.parse::<u32>().is_ok())
        .collect();
    assert!(
        fds == ["0", "1", "2"] || fds == ["0", "1", "2", "3"],
        "{log}"
    );
}

#[test]
fn stdin_is_refused_when_not_kept_open() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("nostdin");
    let running = f.start(&["sleep", "1000"], StdioConfig::default());
    let (mut a, answer) = Attached::open(&f.state_dir(), streams(true, true, false));
    assert_eq!(
        answer,
        FromShim::Refused(runtime::shim::STDIN_NOT_OPEN.to_string())
    );
    assert!(a.next().is_none(), "a refused client is disconnected");
    let (_b, answer) = Attached::open(&f.state_dir(), streams(false, true, false));
    assert_eq!(answer, FromShim::Ready { tty: false });
    running.kill(Signal::SIGKILL).expect("kill");
    running.wait_exit(WAIT).expect("exit");
}

#[test]
fn a_terminal_takes_input_and_window_sizes() {
    if !is_root() {
        return;
    }
    let mut f = Fixture::new("tty");
    let stdio = StdioConfig {
        stdin: true,
        stdin_once: false,
        tty: true,
    };
    let running = f.start(&["sh"], stdio);
    let (mut a, answer) = Attached::open(&f.state_dir(), streams(true, true, false));
    assert_eq!(answer, FromShim::Ready { tty: true });
    a.send(&ToShim::Resize {
        rows: 33,
        cols: 111,
    });
    a.send(&ToShim::Stdin(b"tty; stty size; echo $TERM\n".to_vec()));
    let out = a.read_until("xterm");
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("33 111"), "{out:?}");
    a.send(&ToShim::Stdin(b"exit 4\n".to_vec()));
    let exit = running.wait_exit(WAIT).expect("exit");
    assert_eq!(exit.exit_code, 4, "{exit:?}");
    // A terminal's output is logged as stdout, as containerd does.
    assert!(f.log().contains(" stdout F 33 111"), "{}", f.log());
    assert!(!f.log().contains(" stderr "), "{}", f.log());
}
