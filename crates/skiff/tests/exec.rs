//! `kubectl exec` into real containers on a single-node `skiff server` (the embedded agent):
//! output, exit codes, stdin, a missing command and an interactive terminal, through the
//! API server's upgrade proxy and the agent's WebSocket channel protocol.
//! Needs root (namespaces, mounts, cgroups).

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::TestServer;

use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")))
}

#[test]
fn kubectl_exec_runs_commands_in_containers() {
    let s = server_with_node();
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: httpd
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo hello from skiff > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
        ),
    );
    wait_for(&s, Duration::from_secs(60), "web Running", || {
        status_column(&s, "web") == "Running"
    });

    // Output, inside the container's network namespace.
    let page = s.kubectl_ok(&[
        "exec",
        "web",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8080/",
    ]);
    assert_eq!(page.trim(), "hello from skiff");

    // stdout and stderr stay apart.
    let out = s.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // The exit code is kubectl's.
    let out = s.kubectl(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // stdin reaches the process and its end ends `cat`.
    let echoed = s.kubectl_stdin_ok(&["exec", "-i", "web", "--", "cat"], "line one\nline two\n");
    assert_eq!(echoed, "line one\nline two\n");

    // A missing command says so.
    let out = s.kubectl(&["exec", "web", "--", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#""nosuchcmd": executable file not found in $PATH"#),
        "{err}"
    );

    // An unknown container is the API server's 400.
    let err = s.kubectl_err(&["exec", "web", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );

    // An interactive shell on a terminal: kubectl runs under `script`, which gives it a pty.
    let kubectl = s.kubectl_cmd(&["exec", "-it", "web", "--", "sh"]);
    let line = std::iter::once(kubectl.get_program())
        .chain(kubectl.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = std::process::Command::new("script")
        .args(["-qec", line.as_str(), "/dev/null"])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    let mut stdin = script.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(b"echo $((6*7))\n").expect("type");
    std::thread::sleep(Duration::from_secs(1));
    stdin.write_all(b"exit\n").expect("type");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = script.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "kubectl exec -it did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    let mut out = String::new();
    script
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("42\r\n"), "{out:?}");
}
