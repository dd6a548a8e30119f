//! Containers: the runtime alone, without an API server. Containers are run through the
//! shim (`skiff container-shim`, DESIGN.md §4) in a busybox rootfs: the time from asking to
//! the container's process running (the shim's "started" handshake) and to its exit for
//! `true`, one at a time; then the RSS of the shims while many `sleep` containers run.
//! Root only (namespaces and cgroups); every container gets its own cgroup under one
//! parent that is removed at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime::shim::{ContainerConfig, RunningContainer, ShimClient, Signal};

use super::Env;
use crate::procs::{self, mib};
use crate::stats::{ms, print_table, summarize};

/// Sequential runs of `true`.
const RUNS: usize = 50;
/// `sleep` containers alive at once for the RSS reading.
const ALIVE: usize = 20;

/// The temp dir, the busybox rootfs, and the cgroup parent every container goes under;
/// dropping it kills what still runs and removes the cgroups.
struct Bench {
    dir: tempfile::TempDir,
    parent: String,
    running: Vec<RunningContainer>,
}

impl Bench {
    fn new() -> Result<Bench> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-containers-")
            .tempdir()
            .context("creating a temp dir")?;
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).context("creating the rootfs")?;
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .context("copying /bin/busybox (Debian's busybox-static) into the rootfs")?;
        for applet in ["sh", "true", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).context("applet link")?;
        }
        Ok(Bench {
            parent: format!("skiff-bench-{}", std::process::id()),
            dir,
            running: Vec::new(),
        })
    }

    fn config(&self, i: usize, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: format!("{}-{i}", self.parent),
            rootfs: self.dir.path().join("rootfs"),
            readonly_rootfs: false,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            working_dir: None,
            hostname: Some(format!("c{i}")),
            namespaces: Default::default(),
            cgroups_path: PathBuf::from(format!("/{}/c{i}", self.parent)),
            resources: Default::default(),
            mounts: vec![],
            user: Default::default(),
            oom_score_adj: None,
            stdio: Default::default(),
        }
    }

    fn start(&mut self, shim: &ShimClient, i: usize, args: &[&str]) -> Result<RunningContainer> {
        let state = self.dir.path().join(format!("state/{i}"));
        let log = self.dir.path().join(format!("logs/{i}.log"));
        let running = shim
            .start(&self.config(i, args), &state, &log)
            .with_context(|| format!("starting container {i}"))?;
        self.running.push(running.clone());
        Ok(running)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for c in &self.running {
            if c.exit_record().ok().flatten().is_none() {
                let _ = c.kill(Signal::SIGKILL);
                let _ = c.wait_exit(Some(Duration::from_secs(10)));
            }
        }
        for hierarchy in cgroup_hierarchies() {
            let parent = hierarchy.join(&self.parent);
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// The cgroup v1 controller mounts, or the v2 root.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.push(root.to_path_buf());
    found.retain(|p| p.is_dir());
    found
}

pub async fn run(env: &Env) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the containers scenario needs root (namespaces, cgroups)");
    }
    let skiff = env.skiff.clone();
    tokio::task::spawn_blocking(move || measure(&skiff))
        .await
        .context("the containers scenario panicked")?
}

fn measure(skiff: &Path) -> Result<()> {
    let shim = ShimClient::new(skiff);
    let mut bench = Bench::new()?;

    let mut to_started = Vec::with_capacity(RUNS);
    let mut to_exited = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let asked = Instant::now();
        let running = bench.start(&shim, i, &["true"])?;
        to_started.push(asked.elapsed());
        let exit = running
            .wait_exit(Some(Duration::from_secs(30)))
            .with_context(|| format!("waiting for container {i}"))?;
        to_exited.push(asked.elapsed());
        if exit.exit_code != 0 {
            bail!("container {i} (`true`) exited {}", exit.exit_code);
        }
    }
    let started = summarize(to_started);
    let exited = summarize(to_exited);
    print_table(
        &format!(
            "containers: `true` in a busybox rootfs through the shim, {RUNS} one after another"
        ),
        &["measure", "p50", "p99", "max"],
        &[
            vec![
                "ask → process running".into(),
                ms(started.p50),
                ms(started.p99),
                ms(started.max),
            ],
            vec![
                "ask → exit recorded".into(),
                ms(exited.p50),
                ms(exited.p99),
                ms(exited.max),
            ],
        ],
    );

    let mut shims = Vec::with_capacity(ALIVE);
    for i in 0..ALIVE {
        let running = bench.start(&shim, RUNS + i, &["sleep", "300"])?;
        shims.push(running.shim_pid() as u32);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss: Vec<u64> = shims
        .iter()
        .map(|pid| procs::rss_bytes(*pid))
        .collect::<Result<_>>()
        .context("reading the shims' RSS")?;
    // RSS counts the shared, file-backed pages of the skiff binary in every shim; PSS
    // splits them among the processes sharing them, which is what the node pays.
    let pss: Vec<u64> = shims
        .iter()
        .map(|pid| pss_bytes(*pid))
        .collect::<Result<_>>()
        .context("reading the shims' PSS")?;
    let total_pss: u64 = pss.iter().sum();
    let total: u64 = rss.iter().sum();
    let (lo, hi) = (
        rss.iter().copied().min().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    print_table(
        &format!("containers: shim processes with {ALIVE} `sleep` containers running"),
        &[
            "shims",
            "total RSS",
            "RSS per shim",
            "min",
            "max",
            "total PSS",
            "PSS per shim",
        ],
        &[vec![
            ALIVE.to_string(),
            mib(total),
            mib(total / ALIVE as u64),
            mib(lo),
            mib(hi),
            mib(total_pss),
            mib(total_pss / ALIVE as u64),
        ]],
    );
    Ok(())
}

/// Proportional set size of a process (`Pss:` of `/proc/<pid>/smaps_rollup`).
fn pss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no Pss line in {path}"))?;
    Ok(kb * 1024)
}
