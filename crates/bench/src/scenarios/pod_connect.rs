//! New TCP connections per second from a pod, through a ClusterIP versus to the backend
//! pod's IP directly: the per-connection cost of the service proxy (the DNAT decision and
//! its conntrack entry, the routed hop instead of the bridged one), which keep-alive
//! traffic (the ingress scenario's ClusterIP row) does not show.
//!
//! A server with its node (testkit's network slot) and two busybox pods that `sleep`. The
//! backend is the benchmark's own accept-and-close listener on port 8080, opened by a thread
//! inside the backend pod's network namespace (so it is that pod's socket at the pod's IP),
//! behind a Service (port 80 → 8080, selector on the pod). The clients are threads inside
//! the client pod's namespace, each opening a connection (`connect`, timed: the three-way
//! handshake), then closing it with a reset (SO_LINGER 0, so no side keeps TIME_WAIT and
//! ephemeral ports recycle), as fast as they can for a fixed round. Rounds alternate the
//! two targets (A B, B A, ...), with 1 and `--clients` workers.
//!
//! Every connection leaves a conntrack entry (10 s in CLOSE) in the host's table, which
//! the whole machine shares: each round starts once the table is below
//! [`CONNTRACK_START`] entries, and stops early above [`CONNTRACK_STOP`]. Root only.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::StatusCode;

use super::pod_net::{
    conntrack_count, join_all, spawn_in_netns, wait_conntrack_below, PodInfo, PodNode, NS,
};
use super::Env;
use crate::stats::{ms, print_table, summarize};

const BACKEND_PORT: u16 = 8080;
const ROUND: Duration = Duration::from_secs(3);
/// Rounds per target and worker count.
const ROUNDS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNTRACK_START: u64 = 50_000;
pub const CONNTRACK_STOP: u64 = 150_000;

pub async fn run(env: &Env) -> Result<()> {
    let node = PodNode::start(env).await?;
    let result = measure(env, &node).await;
    if result.is_err() {
        eprintln!("{}", node.server.log_tail(30));
    }
    result
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    ClusterIp,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Direct => "pod IP directly",
            Target::ClusterIp => "through the ClusterIP",
        }
    }
}

/// One round against one target.
#[derive(Default)]
struct Round {
    latencies: Vec<Duration>,
    failed: usize,
    elapsed: Duration,
    cut_short: bool,
}

async fn measure(env: &Env, node: &PodNode) -> Result<()> {
    let backend = node
        .run_pod(
            "conn-backend",
            serde_json::json!({"app": "bench-conn-backend"}),
        )
        .await?;
    let client = node
        .run_pod(
            "conn-client",
            serde_json::json!({"app": "bench-conn-client"}),
        )
        .await?;
    let acceptor = Acceptor::start(&backend)?;
    let result = async {
        node.create(
            &format!("/api/v1/namespaces/{NS}/services"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "conn-backend"},
                "spec": {"selector": {"app": "bench-conn-backend"},
                         "ports": [{"name": "tcp", "port": 80, "targetPort": BACKEND_PORT}]}
            }),
        )
        .await?;
        let svc = node
            .client
            .get(&format!("/api/v1/namespaces/{NS}/services/conn-backend"))
            .await?
            .expect(StatusCode::OK, "reading Service conn-backend")?
            .json()?;
        let cluster_ip: Ipv4Addr = svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("Service conn-backend has no ClusterIP")?;
        let addr = |t: Target| match t {
            Target::Direct => SocketAddr::from((backend.ip, BACKEND_PORT)),
            Target::ClusterIp => SocketAddr::from((cluster_ip, 80)),
        };
        // Both paths answer from the client pod before anything is timed.
        let (direct, via) = (addr(Target::Direct), addr(Target::ClusterIp));
        let client_ip = client.ip;
        let waited = join_all(vec![spawn_in_netns(&client.netns, move || {
            let t0 = Instant::now();
            // The connections leave from the client pod's address, so from its namespace.
            let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            probe.connect(direct)?;
            let from = probe.local_addr()?.ip();
            if from != std::net::IpAddr::V4(client_ip) {
                bail!("connections would leave from {from}, not from the pod's {client_ip}");
            }
            while TcpStream::connect_timeout(&direct, CONNECT_TIMEOUT).is_err()
                || TcpStream::connect_timeout(&via, CONNECT_TIMEOUT).is_err()
            {
                if t0.elapsed() > Duration::from_secs(60) {
                    bail!("{via} or {direct} not reachable from the client pod within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(t0.elapsed())
        })])
        .await?;
        println!(
            "  client pod {} → backend pod {}:{BACKEND_PORT} / ClusterIP {cluster_ip}:80 \
             (reachable {:.1} s after the Service's create); conntrack entries now {}",
            client.ip,
            backend.ip,
            waited[0].as_secs_f64(),
            conntrack_count().map_or("?".into(), |n| n.to_string())
        );

        let mut summary = Vec::new();
        let mut per_round = Vec::new();
        for workers in [1, env.args.clients.max(1)] {
            let mut direct_rounds = Vec::new();
            let mut via_rounds = Vec::new();
            for r in 0..ROUNDS {
                let order = if r % 2 == 0 {
                    [Target::Direct, Target::ClusterIp]
                } else {
                    [Target::ClusterIp, Target::Direct]
                };
                for target in order {
                    wait_conntrack_below(CONNTRACK_START, Duration::from_secs(30)).await;
                    let round = run_round(&client.netns, addr(target), workers).await?;
                    if round.cut_short {
                        eprintln!(
                            "pod-connect: round cut short at {:.1} s: conntrack table above \
                             {CONNTRACK_STOP}",
                            round.elapsed.as_secs_f64()
                        );
                    }
                    match target {
                        Target::Direct => direct_rounds.push(round),
                        Target::ClusterIp => via_rounds.push(round),
                    }
                }
            }
            let d = rate(&direct_rounds);
            let v = rate(&via_rounds);
            for (target, rounds) in [
                (Target::Direct, &direct_rounds),
                (Target::ClusterIp, &via_rounds),
            ] {
                summary.push(row(workers, target, rounds));
            }
            summary.push(vec![
                workers.to_string(),
                "ratio ClusterIP / direct".to_string(),
                format!("{:.2}", v / d.max(1e-9)),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            per_round.push(vec![
                workers.to_string(),
                direct_rounds
                    .iter()
                    .map(|r| format!("{:.0}", rate(std::slice::from_ref(r))))
                    .collect::<Vec<_>>()
                    .join(" / "),
                via_rounds
                    .iter()
                    .map(|r| format!("{:.0}", rate(std::slice::from_ref(r))))
                    .collect::<Vec<_>>()
                    .join(" / "),
                direct_rounds
                    .iter()
                    .zip(&via_rounds)
                    .map(|(d, v)| {
                        let (d, v) = (rate(std::slice::from_ref(d)), rate(std::slice::from_ref(v)));
                        format!("{:.2}", v / d.max(1e-9))
                    })
                    .collect::<Vec<_>>()
                    .join(" / "),
            ]);
        }
        print_table(
            &format!(
                "new TCP connections from a pod (connect, then close with RST), {ROUNDS} \
                 alternating rounds of {} s per target",
                ROUND.as_secs()
            ),
            &[
                "workers",
                "target",
                "conns/s",
                "failed",
                "connect p50 ms",
                "p99 ms",
                "max ms",
            ],
            &summary,
        );
        print_table(
            "conns/s per round, in the order run",
            &[
                "workers",
                "pod IP directly",
                "through the ClusterIP",
                "ClusterIP / direct, per pair",
            ],
            &per_round,
        );
        Ok(())
    }
    .await;
    acceptor.stop();
    result
}

fn rate(rounds: &[Round]) -> f64 {
    let conns: usize = rounds.iter().map(|r| r.latencies.len()).sum();
    let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    conns as f64 / secs.max(1e-9)
}

fn row(workers: usize, target: Target, rounds: &[Round]) -> Vec<String> {
    let latencies: Vec<Duration> = rounds
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    let s = summarize(latencies);
    vec![
        workers.to_string(),
        target.label().to_string(),
        format!("{:.0}", rate(rounds)),
        rounds.iter().map(|r| r.failed).sum::<usize>().to_string(),
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
    ]
}

/// `workers` threads in the client pod's namespace connecting to `target` for [`ROUND`].
async fn run_round(netns: &Path, target: SocketAddr, workers: usize) -> Result<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + ROUND;
    let threads = (0..workers)
        .map(|_| {
            let stop = stop.clone();
            spawn_in_netns(netns, move || {
                let mut round = Round::default();
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                        Ok(conn) => {
                            round.latencies.push(t.elapsed());
                            close_with_reset(conn);
                        }
                        Err(_) => round.failed += 1,
                    }
                }
                Ok(round)
            })
        })
        .collect();
    // The host's conntrack table is shared: stop the round before it fills.
    let guard = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                if conntrack_count().is_some_and(|n| n > CONNTRACK_STOP) {
                    stop.store(true, Ordering::Relaxed);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let results = join_all(threads).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let cut_short = guard.join().unwrap_or(false);
    let mut round = Round {
        elapsed,
        cut_short,
        ..Round::default()
    };
    for r in results? {
        round.latencies.extend(r.latencies);
        round.failed += r.failed;
    }
    Ok(round)
}

/// Closes with RST: SO_LINGER on with a zero timeout.
fn close_with_reset(conn: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized linger value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

/// The backend: a listening socket in the backend pod's namespace (0.0.0.0:8080, a
/// 4096-deep accept queue) and two threads accepting and closing.
struct Acceptor {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(backend: &PodInfo) -> Result<Acceptor> {
        let listener = spawn_in_netns(&backend.netns, listen)
            .join()
            .map_err(|_| anyhow::anyhow!("the listener thread panicked"))??;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let (listener, stop) = (listener.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Accept and drop: the client resets right after its connect.
                        let _ = listener.accept();
                    }
                })
            })
            .collect();
        Ok(Acceptor {
            listener,
            stop,
            threads,
        })
    }

    /// Wakes the accepting threads (shutdown makes a blocked accept fail), joins them, and
    /// closes the socket, which lets the pod's namespace go when the pod is removed.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: shutdown on the listener's open fd.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// 0.0.0.0:8080 in the calling thread's network namespace, with a deep accept queue.
fn listen() -> Result<TcpListener> {
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket");
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: BACKEND_PORT.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("binding 0.0.0.0:{BACKEND_PORT} in the backend pod"));
        }
        if libc::listen(fd, 4096) != 0 {
            return Err(std::io::Error::last_os_error()).context("listen");
        }
        Ok(listener)
    }
}
