//! A single-node server with real containers (the embedded agent, as root) and what the
//! pod tests share: the busybox test image imported into the node's store, waiting with a
//! diagnosis (pods, events, server log) on timeout, kubectl's STATUS column, and the
//! network slot that keeps parallel servers' pod networks apart.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{ServerOptions, TestServer};

/// The busybox test image, as imported into a test node's store.
pub const TEST_IMAGE: &str = "skiff.test/busybox:1";

/// Imports the busybox test image as `name` into the image store under `data_dir`.
pub fn import_test_image(bin: &Path, data_dir: &Path, name: &str) {
    std::fs::create_dir_all(data_dir).expect("create the data dir");
    let tar = data_dir.join("busybox.tar");
    crate::images::TestImage::busybox()
        .expect("busybox test image")
        .write_oci_layout(&tar, name)
        .expect("write image");
    let out = std::process::Command::new(bin)
        .args(["image", "import", "--data-dir"])
        .arg(data_dir)
        .arg(&tar)
        .output()
        .expect("skiff image import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server with its node agent, the test image in the node's store, the node Ready.
pub fn server_with_node(bin: &Path) -> TestServer {
    let s = TestServer::start(ServerOptions::new(bin).with_agent())
        .expect("start skiff server with its agent");
    import_test_image(bin, &s.data_dir(), TEST_IMAGE);
    wait_node_ready(&s);
    s
}

/// Waits until the server's one node is Ready.
pub fn wait_node_ready(s: &TestServer) {
    wait_for(s, Duration::from_secs(60), "the node to be Ready", || {
        let out = s.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "True"
    });
}

/// Waits until `pod` (namespace default) is Running and has its IP.
pub fn wait_running(s: &TestServer, pod: &str) {
    wait_for(
        s,
        Duration::from_secs(120),
        &format!("{pod} Running"),
        || {
            status_column(s, pod) == "Running"
                && !s
                    .kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
                    .trim()
                    .is_empty()
        },
    );
}

/// `wget -qO- url` run once inside `pod`: the page (trimmed), or None when it failed.
/// (No `-T`: busybox 1.35's static wget crashes with a timeout.)
pub fn fetch(s: &TestServer, pod: &str, url: &str) -> Option<String> {
    let out = s.kubectl(&["exec", pod, "--", "wget", "-q", "-O", "-", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `wget` of `url` inside `pod`, tried up to ten times half a second apart (a server that
/// just started may not listen yet; each try bounded by timeout(1)); the page, untrimmed.
/// Panics when every try failed.
pub fn fetch_retrying(s: &TestServer, pod: &str, url: &str) -> String {
    let script = format!("for i in 1 2 3 4 5 6 7 8 9 10; do timeout 5 wget -q -O - {url} && exit 0; sleep 0.5; done; exit 1");
    s.kubectl_ok(&["exec", pod, "--", "sh", "-c", &script])
}

/// Polls `ok` every 200 ms; on timeout panics with the pods, events and server log.
pub fn wait_for(s: &TestServer, timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() > deadline {
            let pods = s.kubectl(&["get", "pods", "-A", "-o", "wide"]);
            let events = s.kubectl(&["get", "events", "-A"]);
            panic!(
                "timed out waiting for {what}\n{}\n{}\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout),
                s.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The STATUS column of `kubectl get pod NAME`.
pub fn status_column(s: &TestServer, pod: &str) -> String {
    let out = s.kubectl(&["get", "pod", pod, "--no-headers"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(2).unwrap_or("").to_string()
}

/// Servers with an agent share this machine's network namespace, so each gets a network
/// slot `s` (0..50, an flock'd `/run/skiff-test-slots/server-<s>.lock` held for the
/// server's lifetime: a crashed test frees it): pods in `10.{100+s}.0.0/16`, Services in
/// `10.{200+s}.0.0/16` with cluster DNS at `.0.10`, pod bridge `skt<s>`.
pub struct NetworkSlot {
    slot: crate::hosts::Slot,
}

impl NetworkSlot {
    /// Claims a free slot and removes what a crashed earlier holder may have left on it.
    pub fn claim() -> anyhow::Result<NetworkSlot> {
        let slot = NetworkSlot {
            slot: crate::hosts::claim_slot("server")?,
        };
        slot.remove_leftovers();
        Ok(slot)
    }

    pub fn number(&self) -> u32 {
        self.slot.number
    }

    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", 100 + self.slot.number)
    }

    pub fn service_cidr(&self) -> String {
        format!("10.{}.0.0/16", 200 + self.slot.number)
    }

    pub fn cluster_dns(&self) -> String {
        format!("10.{}.0.10", 200 + self.slot.number)
    }

    pub fn bridge(&self) -> String {
        format!("skt{}", self.slot.number)
    }

    /// The server flags for this slot, as (flag, value).
    pub fn server_flags(&self) -> Vec<(&'static str, String)> {
        vec![
            ("--cluster-cidr", self.cluster_cidr()),
            ("--service-cidr", self.service_cidr()),
            ("--cluster-dns", self.cluster_dns()),
            ("--pod-bridge", self.bridge()),
        ]
    }

    /// The pod network of a holder that died without `skiff killall`: its bridge, nftables
    /// tables (pods, host ports) and blackhole route. Best effort (nothing may be there).
    fn remove_leftovers(&self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        let bridge = self.bridge();
        quiet("ip", &["link", "del", &bridge]);
        quiet(
            "/usr/sbin/nft",
            &["delete", "table", "ip", &format!("{bridge}-pods")],
        );
        quiet(
            "/usr/sbin/nft",
            &["delete", "table", "ip", &format!("{bridge}-hostports")],
        );
        quiet(
            "/usr/sbin/nft",
            &["delete", "table", "ip", &format!("{bridge}-policy")],
        );
        quiet("ip", &["route", "del", "blackhole", &self.cluster_cidr()]);
    }
}

/// `skiff image ARGS --data-dir DATA_DIR`, run to completion.
pub fn skiff_image(bin: &Path, data_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .arg("image")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SKIFF_DATA_DIR")
        .output()
        .expect("run skiff image")
}

/// What `skiff image ls` prints for the store under `data_dir` (it must succeed).
pub fn image_list(bin: &Path, data_dir: &Path) -> String {
    let out = skiff_image(bin, data_dir, &["ls"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `curl -sS --max-time 10` from the test process: (HTTP status, body as sent); status 0
/// and curl's complaint when curl itself failed (refused, timed out, TLS).
pub fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run curl");
    if !out.status.success() {
        return (0, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
