//! A multi-node cluster on one machine: a server (with its embedded agent) on one test
//! host and real `skiff agent`s on others, each host its own network namespace on a test
//! LAN ([`crate::hosts`]). Every node has the busybox test image. Dropping the cluster
//! stops the agents and the server by PID, kills their containers (`skiff killall`) and
//! removes the hosts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::hosts::{TestHost, TestNet};
use crate::node::{import_test_image, TEST_IMAGE};
use crate::{Background, ServerOptions, TestServer};

/// A joined `skiff agent` on a test host.
pub struct TestAgent {
    pub name: String,
    pub host: TestHost,
    bin: PathBuf,
    dir: tempfile::TempDir,
    process: Option<Background>,
}

impl TestAgent {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the agent process (SIGKILL, by PID); its containers keep running, as after a
    /// crash of the agent.
    pub fn kill(&mut self) -> Vec<String> {
        self.process
            .take()
            .map(|mut p| p.kill())
            .unwrap_or_default()
    }

    /// What the agent printed so far.
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.stderr())
            .unwrap_or_default()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            if std::thread::panicking() {
                let log = p.stderr();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- agent {} (last lines) ---\n{}",
                    self.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            p.kill();
        }
        // In the agent's host: the pod network it removes is that namespace's.
        let mut killall = Command::new(&self.bin);
        killall
            .arg("killall")
            .arg("--data-dir")
            .arg(self.data_dir());
        if self.host.enter(&mut killall).is_ok() {
            let _ = killall.output();
        }
    }
}

/// The server's node and `agents` more, all Ready.
pub struct TestCluster {
    // Fields drop in order: the server and agents before the LAN they live on.
    pub server: TestServer,
    pub agents: Vec<TestAgent>,
    /// hosts[0] is the server's; hosts[i + 1] is agents[i]'s.
    pub hosts: Vec<TestHost>,
    pub net: TestNet,
}

impl TestCluster {
    pub fn start(bin: &Path, agents: usize) -> Result<TestCluster> {
        TestCluster::start_with(bin, agents, &[], &[])
    }

    /// Like [`start`](Self::start) with extra flags for the server and for every agent
    /// (e.g. `--failover-profile=fast` and `--node-lease-duration-seconds=4`).
    pub fn start_with(
        bin: &Path,
        agents: usize,
        server_args: &[&str],
        agent_args: &[&str],
    ) -> Result<TestCluster> {
        TestCluster::start_with_ready(bin, agents, server_args, agent_args, agents + 1)
    }

    /// Like [`start_with`](Self::start_with), returning once `ready` nodes are Ready (for
    /// a test of a node that cannot become Ready).
    pub fn start_with_ready(
        bin: &Path,
        agents: usize,
        server_args: &[&str],
        agent_args: &[&str],
        ready: usize,
    ) -> Result<TestCluster> {
        let mut net = TestNet::new()?;
        let mut hosts = Vec::new();
        for i in 0..=agents {
            let name = if i == 0 {
                "server".to_string()
            } else {
                format!("agent{i}")
            };
            hosts.push(net.add_host(&name)?);
        }
        let mut options = ServerOptions::new(bin)
            .with_agent()
            .on_host(&hosts[0])
            .arg("--node-name")
            .arg("server");
        for a in server_args {
            options = options.arg(a);
        }
        let server = TestServer::start(options)?;
        import_test_image(bin, &server.data_dir(), TEST_IMAGE);
        let token = std::fs::read_to_string(server.data_dir().join("server/token"))
            .context("reading the join token")?;
        let mut joined = Vec::new();
        for host in &hosts[1..] {
            joined.push(start_agent(bin, &server, host, token.trim(), agent_args)?);
        }
        let cluster = TestCluster {
            server,
            agents: joined,
            hosts,
            net,
        };
        cluster.wait_ready(ready, Duration::from_secs(90))?;
        Ok(cluster)
    }

    fn wait_ready(&self, nodes: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.server.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status} {.spec.podCIDR}{\"\\n\"}{end}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let ready = text
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() == 3 && f[1] == "True"
                })
                .count();
            if ready == nodes {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.agents.iter().map(|a| a.log()).collect();
                bail!(
                    "{ready} of {nodes} nodes Ready after {timeout:?}:\n{text}\n{}\nagents:\n{}",
                    self.server.log_tail(40),
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn start_agent(
    bin: &Path,
    server: &TestServer,
    host: &TestHost,
    token: &str,
    extra: &[&str],
) -> Result<TestAgent> {
    let dir = tempfile::Builder::new().prefix("skiff-agent-").tempdir()?;
    let data_dir = dir.path().join("data");
    import_test_image(bin, &data_dir, TEST_IMAGE);
    let mut cmd = Command::new(bin);
    cmd.arg("agent")
        .arg("--server")
        .arg(server.url())
        .arg("--token")
        .arg(token)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--node-name")
        .arg(&host.name)
        .arg("--node-ip")
        .arg(host.ip.to_string());
    // The cluster's ranges come from the server; the bridge name is this host's own
    // business (its own namespace), kept as the server's for easy reading.
    if let Some(slot) = server.network() {
        cmd.args(["--pod-bridge", &slot.bridge()]);
    }
    cmd.args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SKIFF_") {
            cmd.env_remove(k);
        }
    }
    host.enter(&mut cmd)?;
    let child = cmd.spawn().context("starting skiff agent")?;
    Ok(TestAgent {
        name: host.name.clone(),
        host: host.clone(),
        bin: bin.to_path_buf(),
        dir,
        process: Some(Background::new(child)),
    })
}
