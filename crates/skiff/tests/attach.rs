//! `kubectl attach` and `kubectl run -it` with real containers on a single-node
//! `skiff server` (the embedded agent): live output only, stdin to a `stdin: true`
//! container (closed by stdinOnce), upstream's refusal of stdin that is not kept open, and
//! an interactive terminal with its window size, deleted afterwards by `--rm`. kubectl runs
//! under script(1) where it needs a terminal. Needs root (namespaces, mounts, cgroups).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use testkit::node::{status_column, wait_for, wait_running, TEST_IMAGE as IMAGE};
use testkit::TestServer;

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

fn apply(s: &TestServer, yaml: &str) {
    s.kubectl_stdin_ok(&["apply", "-f", "-"], yaml);
}

/// Kills a child we started (by its pid) when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `kubectl args` under script(1) (a 30x100 terminal), types `input` line by line,
/// waits for it to end; its exit status and everything it printed.
fn kubectl_in_terminal(
    s: &TestServer,
    args: &[&str],
    input: &[&str],
) -> (std::process::ExitStatus, String) {
    let kubectl = s.kubectl_cmd(args);
    let line = std::iter::once(kubectl.get_program())
        .chain(kubectl.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qec",
        &format!("stty rows 30 cols 100; exec {line}"),
        "/dev/null",
    ])
    .env_remove("KUBECONFIG")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Reaped(cmd.spawn().expect("run script"));
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    std::thread::sleep(Duration::from_secs(3));
    for l in input {
        stdin.write_all(l.as_bytes()).expect("type");
        stdin.write_all(b"\n").expect("type");
        std::thread::sleep(Duration::from_secs(1));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} did not end\n{}",
            s.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    (status, reader.join().unwrap_or_default())
}

#[test]
fn kubectl_attach_streams_new_output_and_stdin() {
    let s = server_with_node();
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: ticker}}
spec:
  containers:
  - name: tick
    image: {IMAGE}
    command: ["sh", "-c", "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.3; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: echo}}
spec:
  restartPolicy: Never
  containers:
  - name: cat
    image: {IMAGE}
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "cat; echo cat-done"]
"#
        ),
    );
    wait_running(&s, "ticker");
    std::thread::sleep(Duration::from_secs(2));

    // Output from now on: new lines keep coming, old ones are not replayed.
    let mut attach = Reaped(
        s.kubectl_cmd(&["attach", "ticker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl attach"),
    );
    let stdout = attach.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("attach ended after {seen:?}"))
            .expect("read");
        if let Some(n) = line
            .strip_prefix("line-")
            .and_then(|n| n.parse::<u32>().ok())
        {
            seen.push(n);
        }
    }
    assert!(seen[0] >= 3, "old output was replayed: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "lines are live and in order: {seen:?}"
    );
    drop(attach);

    // stdin without `stdin: true` is refused.
    let err = s.kubectl_err(&["attach", "-i", "ticker"]);
    assert!(
        err.contains("error attaching to container: stdin is not open"),
        "{err}"
    );

    // stdin reaches `cat`; its end (stdinOnce) closes the container's stdin.
    wait_running(&s, "echo");
    let out = s.kubectl_stdin_ok(&["attach", "-i", "echo"], "hello from stdin\n");
    assert!(out.contains("hello from stdin\n"), "{out:?}");
    wait_for(&s, Duration::from_secs(60), "echo Completed", || {
        status_column(&s, "echo") == "Completed"
    });
    let logs = s.kubectl_ok(&["logs", "echo"]);
    assert_eq!(logs, "hello from stdin\ncat-done\n");
}

#[test]
fn kubectl_run_it_rm_is_interactive_with_the_terminal_size() {
    let s = server_with_node();
    let (status, out) = kubectl_in_terminal(
        &s,
        &[
            "run",
            "-it",
            "--rm",
            &format!("--image={IMAGE}"),
            "--restart=Never",
            "shell",
            "--",
            "sh",
        ],
        &["echo $((6*7)); stty size; tty", "exit"],
    );
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("42\r\n"), "{out:?}");
    assert!(out.contains("30 100\r\n"), "the window size: {out:?}");
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains(r#"pod "shell" deleted"#), "{out:?}");
    let pods = s.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert!(!pods.contains("pod/shell"), "{pods}");
}
