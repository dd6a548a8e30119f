//! Simulated nodes for scenario tests: `skiff agent --simulate N` joined to a
//! [`TestServer`] with the server's own token file (so the server CA beside it is trusted),
//! driven through its stdin/stdout control channel, killed by PID on drop.
//!
//! ```ignore
//! let s = testkit::server!();
//! let mut nodes = testkit::simulated_nodes!(&s, 3);   // sim-0, sim-1, sim-2, all Ready
//! nodes.stop("sim-1")?;                               // its lease stops being renewed
//! nodes.start("sim-1")?;
//! ```

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::TestServer;

/// Starts `n` simulated nodes against a server, from the calling crate's `skiff` binary.
#[macro_export]
macro_rules! simulated_nodes {
    ($server:expr, $n:expr) => {
        $crate::SimulatedNodes::launch($server, env!("CARGO_BIN_EXE_skiff"), $n, &[] as &[&str])
            .expect("start simulated nodes")
    };
    ($server:expr, $n:expr, $extra:expr) => {
        $crate::SimulatedNodes::launch($server, env!("CARGO_BIN_EXE_skiff"), $n, $extra)
            .expect("start simulated nodes")
    };
}

/// A running `skiff agent --simulate N`.
pub struct SimulatedNodes {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    names: Vec<String>,
}

impl SimulatedNodes {
    /// Starts the fleet and waits until every node is registered (`ready N`).
    /// `extra_args` go to `skiff agent` (e.g. `--node-taint`, `--simulate-run-time`).
    pub fn launch(
        server: &TestServer,
        bin: impl AsRef<Path>,
        n: usize,
        extra_args: &[&str],
    ) -> Result<SimulatedNodes> {
        let dir = tempfile::Builder::new().prefix("skiff-sim-").tempdir()?;
        let log = dir.path().join("agent.log");
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(bin.as_ref());
        cmd.arg("agent")
            .arg("--simulate")
            .arg(n.to_string())
            .arg("--server")
            .arg(server.url())
            .arg("--token-file")
            .arg(server.data_dir().join("server").join("token"))
            .args(extra_args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SKIFF_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {} agent --simulate", bin.as_ref().display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let prefix = extra_args
            .iter()
            .position(|a| *a == "--node-name")
            .and_then(|i| extra_args.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "sim".to_string());
        let mut nodes = SimulatedNodes {
            child,
            stdin,
            replies,
            log,
            _dir: dir,
            names: (0..n).map(|i| format!("{prefix}-{i}")).collect(),
        };
        let ready = nodes.reply(Duration::from_secs(180))?;
        if ready != format!("ready {n}") {
            bail!(
                "expected `ready {n}`, got {ready:?}\n{}",
                nodes.log_tail(30)
            );
        }
        Ok(nodes)
    }

    /// The node names, `sim-0` .. `sim-<n-1>` (or with the `--node-name` prefix).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops a node: its lease and status stop being renewed, its pods are not updated.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        self.command(&format!("stop {name}"))
    }

    /// Starts a stopped node again.
    pub fn start(&mut self, name: &str) -> Result<()> {
        self.command(&format!("start {name}"))
    }

    fn command(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}").context("writing to the simulator's stdin")?;
        self.stdin.flush()?;
        let reply = self.reply(Duration::from_secs(30))?;
        if reply != format!("ok {line}") {
            bail!("`{line}`: simulator answered {reply:?}");
        }
        Ok(())
    }

    fn reply(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.replies.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => return Ok(line),
                Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout)
                    if self.child.try_wait()?.is_some() =>
                {
                    bail!("the simulator exited\n{}", self.log_tail(30));
                }
                Err(_) if Instant::now() > deadline => {
                    bail!(
                        "no answer from the simulator within {timeout:?}\n{}",
                        self.log_tail(30)
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// Last `n` lines of the simulator's log (stderr).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "----- simulated nodes log tail ({}) -----\n{}\n-----",
            self.log.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
