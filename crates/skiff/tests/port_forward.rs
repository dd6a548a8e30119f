//! `kubectl port-forward` to a real pod on a single-node `skiff server` (the embedded
//! agent): pages and a multi-MiB file fetched through the forwarded port, one after
//! another and concurrently, and a port nothing listens on, over both of kubectl's forms
//! (a SPDY session tunnelled in a WebSocket, kubectl's default, and a plain SPDY upgrade).
//! Needs root (namespaces, mounts, cgroups).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testkit::node::{status_column, wait_for, TEST_IMAGE as IMAGE};
use testkit::{Background, TestServer};

const PAGE: &str = "hello from skiff";
/// Where the pod's `nc` writes what it receives to `/www/up.txt` (once).
const UPLOAD_PORT: u16 = 9000;
/// A port nothing in the pod listens on.
const CLOSED_PORT: u16 = 9999;

fn server_with_node() -> TestServer {
    testkit::node::server_with_node(Path::new(env!("CARGO_BIN_EXE_skiff")))
}

/// ~10 MiB of text that differs line by line (so a dropped, repeated or reordered chunk
/// shows), the same every run.
fn big_file() -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(10 << 20);
    let mut line = 0u64;
    while out.len() < 10 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(&format!(
            "{line:08} {state:016x} {:016x}\n",
            state.rotate_left(29)
        ));
        line += 1;
    }
    out
}

/// Starts pod `web` (httpd on 8080 serving `/www`, and `nc` taking one upload on 9000),
/// puts the big file there, and returns the pod's UID.
fn start_web_pod(s: &TestServer, big: &str) -> String {
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
    command: ["sh", "-c", "mkdir -p /www && echo {PAGE} > /www/index.html && (sleep 100000 | nc -l -p {UPLOAD_PORT} > /www/up.txt &) && exec httpd -f -p 8080 -h /www"]
"#
        ),
    );
    wait_for(s, Duration::from_secs(60), "web Running", || {
        status_column(s, "web") == "Running"
    });
    s.kubectl_stdin_ok(
        &["exec", "-i", "web", "--", "sh", "-c", "cat > /www/big.txt"],
        big,
    );
    s.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"])
}

/// Local ports forwarded to the pod's 8080, 9000 and 9999.
struct Ports {
    web: u16,
    upload: u16,
    closed: u16,
}

/// Runs `kubectl [flags] port-forward pod/web` for [`Ports`] until they are ready.
fn port_forward(s: &TestServer, flags: &[&str], env: &[(&str, &str)]) -> (Background, Ports) {
    let free = || testkit::free_port().expect("free port");
    let ports = Ports {
        web: free(),
        upload: free(),
        closed: free(),
    };
    let forwards = [
        format!("{}:8080", ports.web),
        format!("{}:{UPLOAD_PORT}", ports.upload),
        format!("{}:{CLOSED_PORT}", ports.closed),
    ];
    let mut args = flags.to_vec();
    args.extend(["port-forward", "--address", "127.0.0.1", "pod/web"]);
    args.extend(forwards.iter().map(String::as_str));
    let mut cmd = s.kubectl_cmd(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl port-forward");
    let mut pf = Background::new(child);
    for port in [ports.web, ports.upload, ports.closed] {
        pf.wait_for_line(Duration::from_secs(30), |l| {
            l.starts_with(&format!("Forwarding from 127.0.0.1:{port} "))
        })
        .expect("port-forward ready");
    }
    (pf, ports)
}

fn curl(port: u16, path: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl")
}

fn fetch(port: u16, path: &str) -> Vec<u8> {
    let out = curl(port, path);
    assert!(
        out.status.success(),
        "curl {path}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn assert_same_file(got: &[u8], want: &str) {
    assert_eq!(got.len(), want.len(), "length of the fetched file");
    if let Some(at) = got.iter().zip(want.as_bytes()).position(|(a, b)| a != b) {
        panic!("the fetched file differs from byte {at} on");
    }
}

/// Sends `data` on a new connection to `port`, ends its side, and waits for the far end
/// to close.
fn upload(port: u16, data: &[u8]) {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    conn.write_all(data).expect("upload");
    conn.shutdown(std::net::Shutdown::Write)
        .expect("end the upload");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("the pod's side closes");
}

/// Through the forwarded ports: the page several times, then concurrently, then the big
/// file (twice at once, beside more pages), then the first `upload_len` bytes of it
/// uploaded and fetched back.
fn exercise(ports: &Ports, big: &str, upload_len: usize) {
    let port = ports.web;
    for _ in 0..3 {
        assert_eq!(String::from_utf8_lossy(&fetch(port, "/")).trim(), PAGE);
    }
    let pages: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || fetch(port, "/index.html")))
        .collect();
    for page in pages {
        let page = page.join().expect("curl thread");
        assert_eq!(String::from_utf8_lossy(&page).trim(), PAGE);
    }
    let bigs: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || fetch(port, "/big.txt")))
        .collect();
    for _ in 0..4 {
        assert_eq!(String::from_utf8_lossy(&fetch(port, "/")).trim(), PAGE);
    }
    for b in bigs {
        assert_same_file(&b.join().expect("curl thread"), big);
    }
    let sent = &big[..upload_len];
    upload(ports.upload, sent.as_bytes());
    assert_same_file(&fetch(port, "/up.txt"), sent);
}

#[test]
fn port_forward_over_websocket_reaches_pod_ports() {
    let s = server_with_node();
    let big = big_file();
    let uid = start_web_pod(&s, &big);
    // -v=7 so that kubectl says which form it negotiated.
    let (mut pf, ports) = port_forward(&s, &["-v=7"], &[]);
    wait_for(
        &s,
        Duration::from_secs(10),
        "kubectl to tunnel through a WebSocket",
        || {
            pf.stderr()
                .contains("negotiated protocol: portforward.k8s.io")
        },
    );

    exercise(&ports, &big, big.len());

    // Nothing listens on 9999 in the pod: that connection fails, and kubectl reports the
    // node's error, worded as kubelet words it.
    let out = curl(ports.closed, "/");
    assert!(
        !out.status.success(),
        "a connection to a closed port succeeded"
    );
    let want = format!(
        "error forwarding port {CLOSED_PORT} to pod {uid}, uid : failed to connect to localhost:{CLOSED_PORT} inside namespace"
    );
    wait_for(
        &s,
        Duration::from_secs(20),
        "kubectl to report the error",
        || pf.stderr().contains(&want),
    );
    let err = pf.stderr();
    assert!(err.contains("connect: connection refused"), "{err}");
    // kubectl (client-go >= 1.23) drops the whole session after an error on any
    // connection, as it does against kubelet: it exits saying it lost the pod.
    let status = pf
        .wait_exit(Duration::from_secs(20))
        .expect("kubectl exits");
    assert!(!status.success(), "{status}");
    assert!(
        pf.stderr().contains("lost connection to pod"),
        "{}",
        pf.stderr()
    );

    let err = s.kubectl_err(&["port-forward", "pod/nope", "8080:80"]);
    assert!(err.contains(r#"pods "nope" not found"#), "{err}");
}

#[test]
fn port_forward_over_spdy_upgrade_reaches_pod_ports() {
    let s = server_with_node();
    let big = big_file();
    let uid = start_web_pod(&s, &big);
    // kubectl's fallback form, forced.
    let (mut pf, ports) = port_forward(&s, &[], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]);

    exercise(&ports, &big, big.len());

    let out = curl(ports.closed, "/");
    assert!(
        !out.status.success(),
        "a connection to a closed port succeeded"
    );
    let want = format!("error forwarding port {CLOSED_PORT} to pod {uid}");
    wait_for(
        &s,
        Duration::from_secs(20),
        "kubectl to report the error",
        || pf.stderr().contains(&want),
    );
    let _ = pf.wait_exit(Duration::from_secs(20));
}
