//! Container probes as kubelet runs them: startup first (until it succeeds nothing else
//! runs), then liveness and readiness, each every `periodSeconds` after
//! `initialDelaySeconds`, with `timeoutSeconds`, and turning after `failureThreshold`
//! failures or `successThreshold` successes in a row. httpGet (HTTP or HTTPS, [`http`]),
//! tcpSocket and gRPC ([`grpc`]) probes connect from inside the pod's network namespace (to
//! the pod's loopback unless `host` is given); exec probes run a command in the container
//! through `skiff container-exec`.
//!
//! A prober is a task per probe of a running container attempt; it publishes what it
//! concludes into a shared [`ProbeBoard`] and wakes the pod worker when a result turns.

mod grpc;
mod http;
mod insecure_tls;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What the probes of one container attempt concluded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub attempt: u32,
    /// The startup probe succeeded (true when there is none).
    pub started: bool,
    /// The readiness probe's state (true when there is none; false until its first success).
    pub ready: bool,
    /// The liveness (or startup) probe failed for good: the container must be restarted.
    pub failed: bool,
}

/// Shared between the worker and its probers, by container name.
pub type ProbeBoard = Arc<Mutex<HashMap<String, Verdict>>>;

/// The initial verdict for a container attempt that just started.
pub fn initial(c: &Container, attempt: u32) -> Verdict {
    Verdict {
        attempt,
        started: c.startup_probe.is_none(),
        ready: c.readiness_probe.is_none(),
        failed: false,
    }
}

/// A probe's timing, with upstream's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// One probe run's result, with the message kubelet puts in its Unhealthy event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// One probe run as the prober sees it: kubelet's `probe.Result`, whose Warning counts as a
/// success but is told in a ProbeWarning event (an httpGet probe that ended on a redirect
/// to another host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    Success,
    Warning(String),
    Failure(String),
}

/// The host probes connect to when the probe names none. kubelet dials the pod's IP; these
/// probes run inside the pod's network namespace and dial its loopback instead, which
/// reaches every server listening on all addresses (and those bound to loopback too).
const POD_LOCAL_HOST: &str = "127.0.0.1";

/// The version in kubelet's `User-Agent: kube-probe/<major>.<minor>` (the API's version).
const KUBE_PROBE_VERSION: &str = "1.37";

/// Where and how to run probes of one container attempt.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's network namespace (None: host network).
    pub netns: Option<PathBuf>,
    /// The attempt's shim state directory (for exec probes).
    pub shim_dir: PathBuf,
    /// The skiff binary (`skiff container-exec`).
    pub binary: PathBuf,
    /// Environment of the container, for port names.
    pub ports: Vec<(String, i32)>,
}

/// Runs `probe` once against `target` (lifecycle hooks: a warning is a success). Blocking.
pub fn run_once(probe: &Probe, target: &Target, timeout: Duration) -> Outcome {
    match probe_once(probe, target, timeout) {
        Probed::Success | Probed::Warning(_) => Outcome::Success,
        Probed::Failure(m) => Outcome::Failure(m),
    }
}

/// Runs `probe` once against `target`, as kubelet's prober does. Blocking.
pub fn probe_once(probe: &Probe, target: &Target, timeout: Duration) -> Probed {
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, &target.ports) {
            Ok(p) => p,
            Err(m) => return Probed::Failure(m),
        };
        let host = tcp.host.clone().unwrap_or_else(|| POD_LOCAL_HOST.into());
        return in_pod(target, move || match connect(&host, port, timeout) {
            Ok(_) => Probed::Success,
            Err(e) => Probed::Failure(format!("dial tcp {}: {e}", join_host_port(&host, port))),
        });
    }
    if let Some(get) = &probe.http_get {
        let port = match resolve_port(&get.port, &target.ports) {
            Ok(p) => p,
            Err(m) => return Probed::Failure(m),
        };
        let scheme = match get.scheme.as_deref().unwrap_or("HTTP") {
            s if s.eq_ignore_ascii_case("HTTP") => http::Scheme::Http,
            s if s.eq_ignore_ascii_case("HTTPS") => http::Scheme::Https,
            other => return Probed::Failure(format!("unsupported scheme: {other:?}")),
        };
        let request = http::Request {
            scheme,
            host: get.host.clone().unwrap_or_else(|| POD_LOCAL_HOST.into()),
            port,
            path: get.path.clone().unwrap_or_default(),
            headers: get
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        };
        return in_pod(target, move || http::probe(&request, timeout));
    }
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match exec_probe(target, &argv, timeout) {
            Outcome::Success => Probed::Success,
            Outcome::Failure(m) => Probed::Failure(m),
        };
    }
    if let Some(g) = &probe.grpc {
        let port = match u16::try_from(g.port).ok().filter(|p| *p > 0) {
            Some(p) => p,
            None => return Probed::Failure(format!("invalid port number: {}", g.port)),
        };
        let service = g.service.clone().unwrap_or_default();
        return in_pod(target, move || {
            grpc::probe(POD_LOCAL_HOST, port, &service, timeout)
        });
    }
    Probed::Failure("probe has no handler".into())
}

/// `host:port`, with brackets around an IPv6 address (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn in_pod(target: &Target, f: impl FnOnce() -> Probed + Send) -> Probed {
    match &target.netns {
        None => f(),
        Some(ns) => runtime::sandbox::netns::run_in(ns, f)
            .unwrap_or_else(|e| Probed::Failure(format!("entering the pod's network: {e}"))),
    }
}

fn resolve_port(port: &IntOrString, named: &[(String, i32)]) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => named
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("couldn't find port: {name}"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            std::io::Error::other("connect: connection refused")
        } else {
            e
        }
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

fn exec_probe(target: &Target, argv: &[String], timeout: Duration) -> Outcome {
    let mut cmd = std::process::Command::new(&target.binary);
    cmd.arg("container-exec")
        .arg(&target.shim_dir)
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("starting the exec probe: {e}")),
    };
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => Outcome::Success,
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let code = out.status.code().unwrap_or(-1);
            if text.trim().is_empty() {
                Outcome::Failure(format!("command {argv:?} exited with {code}"))
            } else {
                Outcome::Failure(text.trim_end().to_string())
            }
        }
        Ok(Err(e)) => Outcome::Failure(format!("exec probe: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped (its waiter holds it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Outcome::Failure(format!(
                "command {argv:?} timed out after {}s",
                timeout.as_secs()
            ))
        }
    }
}

/// What a prober reports to its worker.
#[derive(Debug, Clone)]
pub struct Report {
    pub container: String,
    pub kind: Kind,
    /// The failure that made the probe turn (for the Unhealthy event), if it failed.
    pub message: Option<String>,
    /// A run that succeeded with a warning (for the ProbeWarning event).
    pub warning: Option<String>,
}

/// Runs one probe of one container attempt until aborted: updates `board` and tells the
/// worker when the result turns (and, for failures, each failed run: kubelet records an
/// Unhealthy event per failure).
pub async fn prober(
    container: String,
    attempt: u32,
    kind: Kind,
    probe: Probe,
    target: Target,
    board: ProbeBoard,
    reports: mpsc::UnboundedSender<Report>,
) {
    let t = timing(&probe);
    tokio::time::sleep(t.initial_delay).await;
    let mut successes = 0u32;
    let mut failures = 0u32;
    let mut interval = tokio::time::interval(t.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if kind != Kind::Startup {
            // Liveness and readiness wait for the startup probe.
            let started = board
                .lock()
                .map(|b| {
                    b.get(&container)
                        .is_some_and(|v| v.attempt == attempt && v.started)
                })
                .unwrap_or(false);
            if !started {
                continue;
            }
        }
        let (p, tg) = (probe.clone(), target.clone());
        let probed = tokio::task::spawn_blocking(move || probe_once(&p, &tg, t.timeout))
            .await
            .unwrap_or_else(|e| Probed::Failure(format!("probe task: {e}")));
        let (turned, message) = match probed {
            Probed::Success | Probed::Warning(_) => {
                if let Probed::Warning(w) = probed {
                    let _ = reports.send(Report {
                        container: container.clone(),
                        kind,
                        message: None,
                        warning: Some(w),
                    });
                }
                failures = 0;
                successes += 1;
                (successes >= t.success_threshold, None)
            }
            Probed::Failure(m) => {
                successes = 0;
                failures += 1;
                let _ = reports.send(Report {
                    container: container.clone(),
                    kind,
                    message: Some(m.clone()),
                    warning: None,
                });
                (failures >= t.failure_threshold, Some(m))
            }
        };
        if !turned {
            continue;
        }
        let ok = message.is_none();
        let changed = {
            let Ok(mut b) = board.lock() else { return };
            let Some(v) = b.get_mut(&container).filter(|v| v.attempt == attempt) else {
                return;
            };
            let before = *v;
            match (kind, ok) {
                (Kind::Startup, true) => v.started = true,
                (Kind::Startup, false) | (Kind::Liveness, false) => v.failed = true,
                (Kind::Liveness, true) => {}
                (Kind::Readiness, r) => v.ready = r,
            }
            before != *v
        };
        if changed {
            let _ = reports.send(Report {
                container: container.clone(),
                kind,
                message: None,
                warning: None,
            });
        }
        if kind == Kind::Startup && ok {
            return; // A startup probe stops once it succeeds.
        }
        if !ok && kind != Kind::Readiness {
            return; // The container is being restarted.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};

    #[test]
    fn timing_defaults_are_upstreams() {
        let p: Probe = serde_json::from_value(json!({"tcpSocket": {"port": 80}})).unwrap();
        let t = timing(&p);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let named = vec![("http".to_string(), 8080)];
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &named),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &named), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &named),
            Err("couldn't find port: nope".into())
        );
    }

    #[test]
    fn http_and_tcp_probes_on_the_host_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let code = if i == 0 {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ =
                    s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        let target = Target {
            netns: None,
            shim_dir: PathBuf::new(),
            binary: PathBuf::new(),
            ports: vec![],
        };
        let probe = |v| -> Probe { serde_json::from_value(v).unwrap() };
        let http = probe(json!({"httpGet": {"port": port, "path": "/healthz"}}));
        assert_eq!(
            run_once(&http, &target, Duration::from_secs(1)),
            Outcome::Success
        );
        assert_eq!(
            run_once(&http, &target, Duration::from_secs(1)),
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let tcp = probe(json!({"tcpSocket": {"port": port}}));
        assert_eq!(
            run_once(&tcp, &target, Duration::from_secs(1)),
            Outcome::Success
        );
        let closed = probe(json!({"tcpSocket": {"port": 1}}));
        assert_eq!(
            run_once(&closed, &target, Duration::from_secs(1)),
            Outcome::Failure("dial tcp 127.0.0.1:1: connect: connection refused".into())
        );
    }
}
