//! Test harness: starts a real `skiff server` on free 127.0.0.1 ports with a temporary data
//! dir and drives it with the real `kubectl` (and `curl`), exactly as a user would.
//!
//! Every process started here is remembered by its PID and killed by that PID on drop, never
//! by name, so tests can run in parallel next to other skiff processes.
//!
//! ```ignore
//! let s = testkit::server!();                 // uses env!("CARGO_BIN_EXE_skiff")
//! let out = s.kubectl_ok(&["get", "ns"]);
//! assert!(out.contains("kube-system"));
//! ```

pub mod cluster;
pub mod hosts;
pub mod images;
pub mod node;
pub mod simulated;
pub use simulated::SimulatedNodes;

use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts a server from the `skiff` binary of the calling crate (integration tests only).
#[macro_export]
macro_rules! server {
    () => {
        $crate::TestServer::start($crate::ServerOptions::new(env!("CARGO_BIN_EXE_skiff")))
            .expect("start skiff server")
    };
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub bin: PathBuf,
    /// `--token`: also accept `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `--datastore-endpoint`, e.g. from [`Etcd::endpoint`].
    pub datastore_endpoint: Option<String>,
    /// Any further flags.
    pub extra_args: Vec<String>,
    pub ready_timeout: Duration,
    /// Run the embedded node agent (real containers on this machine); off by default.
    pub agent: bool,
    /// Run inside this test host's network namespace (multi-node tests): the server
    /// listens on the host's address, and kubectl and curl run in the host too.
    pub host: Option<hosts::TestHost>,
}

impl ServerOptions {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        ServerOptions {
            bin: bin.into(),
            token: None,
            datastore_endpoint: None,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            agent: false,
            host: None,
        }
    }
    /// Runs the server on `host` (see [`hosts`]).
    pub fn on_host(mut self, host: &hosts::TestHost) -> Self {
        self.host = Some(host.clone());
        self
    }
    /// Runs the embedded node agent too: pods become real containers. On drop, every
    /// container it started is killed and its sandbox removed (`skiff killall`).
    pub fn with_agent(mut self) -> Self {
        self.agent = true;
        self
    }
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }
    pub fn datastore_endpoint(mut self, endpoint: &str) -> Self {
        self.datastore_endpoint = Some(endpoint.to_string());
        self
    }
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }
}

/// A running `skiff server --disable-agent` with its own data dir and port.
pub struct TestServer {
    opts: ServerOptions,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    started: Instant,
    /// With an agent: this server's pod and Service ranges and bridge ([`node::NetworkSlot`]).
    network: Option<node::NetworkSlot>,
    /// The cluster DNS port and the (closed) upstream port its forwarding goes to, kept
    /// across restarts.
    dns_ports: (u16, u16),
}

impl TestServer {
    pub fn start(opts: ServerOptions) -> Result<TestServer> {
        let dir = tempfile::Builder::new().prefix("skiff-test-").tempdir()?;
        fs::create_dir_all(dir.path().join("data"))?;
        fs::create_dir_all(dir.path().join("files"))?;
        let mut s = TestServer {
            opts,
            dir,
            port: free_port()?,
            child: None,
            started: Instant::now(),
            network: None,
            dns_ports: (free_port()?, free_port()?),
        };
        if s.opts.agent {
            s.network = Some(node::NetworkSlot::claim()?);
        }
        s.spawn()?;
        Ok(s)
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    /// The admin kubeconfig the server wrote (`--write-kubeconfig`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn url(&self) -> String {
        match &self.opts.host {
            Some(h) => format!("https://{}:{}", h.ip, self.port),
            None => format!("https://127.0.0.1:{}", self.port),
        }
    }

    /// Makes `cmd` run where the server runs (its test host's network namespace, if any).
    pub fn enter(&self, cmd: &mut Command) {
        if let Some(h) = &self.opts.host {
            h.enter(cmd).expect("entering the server's test host");
        }
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    /// The network slot of a server with an agent (its `--cluster-cidr`, `--service-cidr`,
    /// `--cluster-dns` and `--pod-bridge`).
    pub fn network(&self) -> Option<&node::NetworkSlot> {
        self.network.as_ref()
    }
    /// Time from the last (re)start to readiness.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn spawn(&mut self) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "===== testkit: starting skiff server on port {} =====",
            self.port
        )?;
        let mut cmd = Command::new(&self.opts.bin);
        cmd.arg("server");
        if self.opts.agent {
            cmd.arg("--kubelet-port").arg(free_port()?.to_string());
        } else {
            cmd.arg("--disable-agent");
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .arg("--bind-address")
            .arg(match &self.opts.host {
                // Inside its own namespace: all of the host's addresses (the controllers
                // and the embedded agent use 127.0.0.1, other hosts the host's address).
                Some(_) => "0.0.0.0".to_string(),
                None => "127.0.0.1".to_string(),
            })
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig());
        if let Some(t) = &self.opts.token {
            cmd.arg("--token").arg(t);
        }
        if let Some(e) = &self.opts.datastore_endpoint {
            cmd.arg("--datastore-endpoint").arg(e);
        }
        // The binary also reads SKIFF_* variables; a developer's shell must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SKIFF_") {
                cmd.env_remove(k);
            }
        }
        if let Some(h) = &self.opts.host {
            cmd.arg("--node-ip").arg(h.ip.to_string());
            h.enter(&mut cmd)?;
        }
        // Cluster DNS: a port of its own (parallel servers share this host), and names
        // outside the cluster are forwarded nowhere (a closed local port), so no test can
        // ever send a query off the machine.
        let dns_flags = [
            ("--cluster-dns-port", self.dns_ports.0.to_string()),
            (
                "--cluster-dns-upstream",
                format!("127.0.0.1:{}", self.dns_ports.1),
            ),
            // The ingress controller only where a test asks for it (ports 80/443 are one
            // per host).
            ("--ingress-http-port", "0".to_string()),
            ("--ingress-https-port", "0".to_string()),
        ];
        for (flag, value) in self
            .network
            .iter()
            .flat_map(|n| n.server_flags())
            .chain(dns_flags)
        {
            let given = self
                .opts
                .extra_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if !given {
                cmd.arg(flag).arg(value);
            }
        }
        cmd.args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.opts.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        let mut last_err = String::from("(kubeconfig not written yet)");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "skiff server exited during start-up ({status})\n{}",
                        self.log_tail(40)
                    );
                }
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                    return Ok(());
                }
                last_err = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "skiff server not ready after {:?}; last /readyz: {}\n{}",
                    self.opts.ready_timeout,
                    last_err.trim(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Last `n` lines of the server log, framed for a test failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "----- server log tail ({}) -----\n{}\n-----",
            self.log_path().display(),
            lines[from..].join("\n")
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL the server (by PID), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the server and wait for it to exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("server not running"))?;
        // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "server did not exit within {timeout:?} of SIGTERM\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the server again on the same data dir and port (after `kill9` or `stop`).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    // ----- kubectl -----

    /// A `kubectl` command bound to this server (own kubeconfig and discovery cache).
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        self.kubectl_cmd_with(&[], args)
    }

    /// Like [`kubectl_cmd`](Self::kubectl_cmd) with global flags placed before `args`
    /// (so they never end up after a `--`).
    fn kubectl_cmd_with(&self, flags: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(flags)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        self.enter(&mut cmd);
        cmd
    }

    /// Runs kubectl to completion (each request times out after 60 s, so a hung server
    /// fails the test instead of hanging it).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd_with(&["--request-timeout=60s"], args)
            .output()
            .expect("run kubectl (is it on PATH?)")
    }

    /// Runs kubectl, panics (with stderr) unless it succeeds; returns stdout. The server log
    /// tail is printed when the TestServer is dropped during the panic.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.expect_ok(args, out)
    }

    /// Runs kubectl, panics if it succeeds; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        self.expect_err(args, out)
    }

    /// Runs kubectl with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd_with(&["--request-timeout=60s"], args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait kubectl");
        let _ = writer.join();
        out
    }

    pub fn kubectl_stdin_ok(&self, args: &[&str], input: &str) -> String {
        let out = self.kubectl_stdin(args, input);
        self.expect_ok(args, out)
    }

    pub fn kubectl_stdin_err(&self, args: &[&str], input: &str) -> String {
        let out = self.kubectl_stdin(args, input);
        self.expect_err(args, out)
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl {a:?}: output is not JSON ({e}):\n{out}"))
    }

    /// Runs a prepared command (e.g. from [`kubectl_cmd`](Self::kubectl_cmd) with extra env).
    pub fn run_ok(&self, cmd: &mut Command) -> String {
        let out = cmd.output().expect("run command");
        self.expect_ok(&[&format!("{cmd:?}")], out)
    }

    pub fn expect_ok(&self, args: &[&str], out: Output) -> String {
        if !out.status.success() {
            panic!(
                "kubectl {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn expect_err(&self, args: &[&str], out: Output) -> String {
        if out.status.success() {
            panic!(
                "kubectl {} succeeded but was expected to fail:\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Starts a long-running kubectl (e.g. `get ... -w`) whose stdout lines are collected.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Background {
        let child = self
            .kubectl_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        Background::new(child)
    }

    /// Writes a file under the test's temp dir (not the data dir) and returns its path.
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join("files").join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, content).expect("write file");
        p
    }

    // ----- direct HTTPS with curl -----

    /// The admin client credentials from the kubeconfig, written as PEM files:
    /// (ca, cert, key).
    pub fn client_pem_files(&self) -> Result<(PathBuf, PathBuf, PathBuf)> {
        let dir = self.dir.path().join("client-pem");
        let (ca, cert, key) = (
            dir.join("ca.crt"),
            dir.join("client.crt"),
            dir.join("client.key"),
        );
        if key.exists() {
            return Ok((ca, cert, key));
        }
        fs::create_dir_all(&dir)?;
        let kc: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(self.kubeconfig())?)?;
        let cluster = &kc["clusters"][0]["cluster"];
        let user = &kc["users"][0]["user"];
        write_pem(cluster, "certificate-authority", &ca)?;
        write_pem(user, "client-certificate", &cert)?;
        write_pem(user, "client-key", &key)?;
        Ok((ca, cert, key))
    }

    /// A `curl` command with the admin client certificate, to `self.url() + path`.
    /// Output is the body followed by a final line with the HTTP status code.
    pub fn curl_cmd(&self, method: &str, path: &str) -> Command {
        let (ca, cert, key) = self
            .client_pem_files()
            .expect("client credentials from kubeconfig");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method])
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{}", self.url(), path))
            .stdin(Stdio::null());
        self.enter(&mut cmd);
        cmd
    }

    /// Authenticated HTTPS request; returns (status, body). Status 0 means no response.
    pub fn https(&self, method: &str, path: &str, json_body: Option<&str>) -> (u16, String) {
        let mut cmd = self.curl_cmd(method, path);
        if let Some(b) = json_body {
            let f = tempfile::NamedTempFile::new().expect("tmp");
            fs::write(f.path(), b).expect("write body");
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", f.path().display()));
            let out = cmd.output().expect("run curl");
            return split_status(&out);
        }
        split_status(&cmd.output().expect("run curl"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(60));
        }
        self.kill9();
        if self.opts.agent {
            self.killall();
        }
    }
}

impl TestServer {
    /// Kills every container the embedded agent started and removes their sandboxes.
    pub fn killall(&self) {
        let mut cmd = Command::new(&self.opts.bin);
        cmd.arg("killall").arg("--data-dir").arg(self.data_dir());
        // On a test host, the pod network to remove is that host's.
        self.enter(&mut cmd);
        let out = cmd.output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "skiff killall: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("skiff killall: {e}"),
        }
    }
}

/// Splits curl output made with `-w "\n%{http_code}"`.
pub fn split_status(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once('\n') {
        Some((body, code)) => (code.trim().parse().unwrap_or(0), body.to_string()),
        None => (text.trim().parse().unwrap_or(0), String::new()),
    }
}

fn write_pem(section: &serde_yaml::Value, field: &str, to: &Path) -> Result<()> {
    use base64::Engine;
    if let Some(data) = section[format!("{field}-data").as_str()].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("{field}-data is not base64"))?;
        fs::write(to, bytes)?;
    } else if let Some(path) = section[field].as_str() {
        fs::copy(path, to).with_context(|| format!("copy {path}"))?;
    } else {
        bail!("kubeconfig has neither {field}-data nor {field}");
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (the OS picks it; we release it right away).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `f` until it returns Ok or `timeout` passes; returns the last error then.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A long-running child process (e.g. `kubectl get -w`) whose stdout lines are collected
/// by a reader thread. Killed by PID on drop.
pub struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    pub fn new(mut child: Child) -> Background {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    // Appended in place: copying the whole text per read made a chatty
                    // process (kubectl -v=7) cost quadratic time.
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Background {
            child,
            lines,
            stderr,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a line (among all seen so far) satisfies `pred`; returns it.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return Ok(l);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader thread a moment to drain the pipe.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                    return Ok(l);
                }
                bail!(
                    "process exited ({status}) before the expected line; stdout:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "expected line not seen within {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own (e.g. `kubectl logs -f` when the log ends).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Give the reader threads a moment to drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "process still running after {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process by PID and returns what it printed.
    pub fn kill(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        self.lines()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private etcd (Debian's `etcd-server`) on free ports with a temp data dir.
pub struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    client_port: u16,
}

impl Etcd {
    /// The etcd binary: `$ETCD_BIN`, else /usr/bin/etcd, else `etcd` on PATH.
    pub fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("ETCD_BIN") {
            return PathBuf::from(p);
        }
        let debian = PathBuf::from("/usr/bin/etcd");
        if debian.exists() {
            return debian;
        }
        PathBuf::from("etcd")
    }

    pub fn start() -> Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("skiff-etcd-").tempdir()?;
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(Self::binary())
            .arg("--name")
            .arg("testkit")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("testkit={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "spawn {} (apt-get install etcd-server)",
                    Self::binary().display()
                )
            })?;
        let mut etcd = Etcd {
            child,
            dir,
            client_port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = etcd.child.try_wait()? {
                bail!("etcd exited during start-up ({status}):\n{}", etcd.log());
            }
            if http_get_ok(client_port, "/health").unwrap_or(false) {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!("etcd not healthy after 30s:\n{}", etcd.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, for `--datastore-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get_ok(port: u16, path: &str) -> Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.starts_with("HTTP/1.") && resp.contains(" 200 ") && resp.contains("true"))
}

/// A table as `kubectl get` prints it: a header line, then rows aligned under the headers.
/// Columns are cut at the header offsets, so values with single spaces survive.
#[derive(Debug, Clone)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Table {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().unwrap_or("");
        // Header names are separated by 2+ spaces ("NOMINATED NODE" is one column).
        let mut starts = Vec::new();
        let mut headers = Vec::new();
        let bytes: Vec<char> = header.chars().collect();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != ' ' {
                let start = i;
                while i < bytes.len()
                    && !(bytes[i] == ' ' && (i + 1 >= bytes.len() || bytes[i + 1] == ' '))
                {
                    i += 1;
                }
                starts.push(start);
                headers.push(bytes[start..i].iter().collect::<String>());
            } else {
                i += 1;
            }
        }
        let rows = lines
            .map(|l| {
                let chars: Vec<char> = l.chars().collect();
                (0..starts.len())
                    .map(|c| {
                        let from = starts[c].min(chars.len());
                        let to = if c + 1 < starts.len() {
                            starts[c + 1].min(chars.len())
                        } else {
                            chars.len()
                        };
                        chars[from..to]
                            .iter()
                            .collect::<String>()
                            .trim()
                            .to_string()
                    })
                    .collect()
            })
            .collect();
        Table { headers, rows }
    }

    fn col(&self, header: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == header)
    }

    /// The values of one column, top to bottom.
    pub fn column(&self, header: &str) -> Vec<String> {
        match self.col(header) {
            Some(c) => self.rows.iter().map(|r| r[c].clone()).collect(),
            None => Vec::new(),
        }
    }

    /// The value in column `header` of the row whose NAME (first column named NAME) is `name`.
    pub fn get(&self, name: &str, header: &str) -> Option<String> {
        let n = self.col("NAME")?;
        let c = self.col(header)?;
        self.rows
            .iter()
            .find(|r| r[n] == name)
            .map(|r| r[c].clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.column("NAME")
    }
}

/// The value of `Key:` in `kubectl describe` output (first match, trimmed).
pub fn describe_field(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
}

/// The repository root (found from this crate's location: crates/testkit/../..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
