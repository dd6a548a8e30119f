//! Processes the benchmark starts — skiff servers and a private etcd — each on free
//! 127.0.0.1 ports with a temporary data dir, and what it reads about them from /proc.
//!
//! Every child is held by a [`Guard`] that kills it by its PID when dropped, so a failing
//! scenario (an `?` return, a panic) never leaves a server behind. Nothing is ever killed
//! by name: other engineers run skiff processes on the same machine.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A child process, killed (SIGKILL, by PID) and reaped when dropped.
pub struct Guard {
    child: Option<Child>,
    name: String,
}

impl Guard {
    pub fn new(name: &str, child: Child) -> Guard {
        Guard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> Result<u32> {
        match &self.child {
            Some(c) => Ok(c.id()),
            None => bail!("{} is not running", self.name),
        }
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{} is not running", self.name),
        }
    }

    /// SIGTERM, wait up to `timeout` for the exit, then SIGKILL.
    pub fn terminate(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `skiff server --disable-agent` process.
pub struct SkiffProc {
    pub guard: Guard,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// When `exec` was called.
    pub spawned: Instant,
}

impl SkiffProc {
    /// Starts skiff on `port` with `data_dir`, appending its output to `log`. Returns at
    /// once; readiness is the caller's to wait for (see `client::wait_ready`).
    pub fn spawn(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        endpoint: Option<&str>,
        log: &Path,
        extra_args: &[String],
    ) -> Result<SkiffProc> {
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(
            out,
            "===== skiff-bench: starting skiff on port {port} ====="
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--disable-agent")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--https-listen-port")
            .arg(port.to_string())
            .arg("--bind-address")
            .arg("127.0.0.1");
        if let Some(e) = endpoint {
            cmd.arg("--datastore-endpoint").arg(e);
        }
        cmd.args(extra_args);
        // The binary reads SKIFF_* variables; the caller's shell must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SKIFF_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(SkiffProc {
            guard: Guard::new("skiff server", child),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            spawned,
        })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    pub fn pid(&self) -> Result<u32> {
        self.guard.pid()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// `skiff agent --simulate N` joined to a server with its token file: simulated nodes,
/// driven by `stop NAME` / `start NAME` lines on stdin, answering one line each on stdout.
pub struct SimAgent {
    pub guard: Guard,
    stdin: std::process::ChildStdin,
    replies: std::sync::mpsc::Receiver<String>,
    pub log: PathBuf,
}

impl SimAgent {
    /// Starts `n` nodes against the server at `port` whose data dir is `data_dir`, and
    /// waits (up to `timeout`) until all are registered.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        port: u16,
        n: usize,
        extra_args: &[String],
        log: &Path,
        timeout: Duration,
    ) -> Result<SimAgent> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("agent")
            .arg("--simulate")
            .arg(n.to_string())
            .arg("--server")
            .arg(format!("https://127.0.0.1:{port}"))
            .arg("--token-file")
            .arg(data_dir.join("server").join("token"))
            .args(extra_args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SKIFF_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} agent --simulate {n}", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = SimAgent {
            guard: Guard::new("skiff agent --simulate", child),
            stdin,
            replies,
            log: log.to_path_buf(),
        };
        let ready = agent.reply(timeout)?;
        if ready != format!("ready {n}") {
            bail!(
                "expected `ready {n}` from the simulator, got {ready:?}\n{}",
                tail(log, 20)
            );
        }
        Ok(agent)
    }

    pub fn pid(&self) -> Result<u32> {
        self.guard.pid()
    }

    /// Sends a control line (`stop sim-3`) and waits for its `ok ...` answer.
    pub fn command(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}").context("writing to the simulator's stdin")?;
        self.stdin.flush()?;
        let reply = self.reply(Duration::from_secs(30))?;
        if !reply.starts_with("ok") {
            bail!("simulator answered {reply:?} to {line:?}");
        }
        Ok(())
    }

    fn reply(&mut self, timeout: Duration) -> Result<String> {
        match self.replies.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(_) => bail!(
                "no answer from the simulator within {timeout:?}\n{}",
                tail(&self.log, 20)
            ),
        }
    }
}

/// A private single-member etcd (Debian's `etcd-server`) on free ports.
pub struct Etcd {
    pub guard: Guard,
    pub client_port: u16,
    log: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data under `dir` and waits (up to 30 s) for `/health`.
    pub fn start(bin: &Path, dir: &Path) -> Result<Etcd> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("etcd.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--name")
            .arg("bench")
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} (apt-get install etcd-server)", bin.display()))?;
        let mut etcd = Etcd {
            guard: Guard::new("etcd", child),
            client_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = etcd.guard.exited()? {
                bail!(
                    "etcd exited during start-up ({status})\n{}",
                    tail(&etcd.log, 30)
                );
            }
            if etcd_healthy(client_port).unwrap_or(false) {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy after 30 s\n{}", tail(&etcd.log, 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

fn etcd_healthy(port: u16) -> Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.contains(" 200 ") && resp.contains("true"))
}

// ----- /proc -----

/// Resident set size of `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// Peak resident set size of `pid` in bytes (VmHWM).
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{path}: no {field}"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: parsing {line:?}"))
}

/// User + system CPU time consumed by a process (`pid`, or "self").
pub fn cpu_time(pid: &str) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .with_context(|| format!("{path}: no ')'"))?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// Busy CPU time of the whole machine since boot, all cores (`/proc/stat`: user, nice,
/// system, irq, softirq and steal; not idle or iowait).
pub fn machine_busy() -> Result<Duration> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat: no cpu line")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    let ticks = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// CPU used by the server and by this benchmark over a measured interval.
pub struct CpuMeter {
    pid: u32,
    server0: Duration,
    client0: Duration,
    wall0: Instant,
}

/// What a [`CpuMeter`] saw: cores busy on average over the interval.
pub struct CpuUse {
    pub server_cores: f64,
    pub client_cores: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            server0: cpu_time(&pid.to_string()).unwrap_or_default(),
            client0: cpu_time("self").unwrap_or_default(),
            wall0: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.wall0.elapsed().as_secs_f64().max(1e-9);
        let server = cpu_time(&self.pid.to_string()).unwrap_or_default();
        let client = cpu_time("self").unwrap_or_default();
        CpuUse {
            server_cores: server.saturating_sub(self.server0).as_secs_f64() / wall,
            client_cores: client.saturating_sub(self.client0).as_secs_f64() / wall,
        }
    }
}

/// Human-readable bytes (MiB with one decimal).
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
