//! The nodes' `skiff server` / `skiff agent` processes: started detached inside their
//! hosts (own session, stdio to the node's log file), their PIDs recorded, and stopped by
//! those PIDs only, after checking that the PID still runs skiff with the node's data dir
//! (a PID can be reused by anything once the node is gone). `skiff killall` for a node
//! runs inside the node's namespace, where its pod network lives.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::hosts;

/// The skiff binary to start: the one running now.
fn skiff_binary() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("finding the skiff binary (/proc/self/exe)")
}

/// A command of this binary with no SKIFF_* variable of the caller's shell (they would
/// override what a node was planned with, e.g. SKIFF_DATASTORE_ENDPOINT).
fn skiff_command(args: &[String]) -> Result<Command> {
    let mut cmd = Command::new(skiff_binary()?);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SKIFF_") {
            cmd.env_remove(k);
        }
    }
    Ok(cmd)
}

/// Starts `skiff <args>` in `netns`, detached, logging to `log`; writes its PID to
/// `pid_file`. The caller keeps the child only to notice an early exit.
pub fn spawn_node(netns: &str, args: &[String], log: &Path, pid_file: &Path) -> Result<Child> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = skiff_command(args)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    hosts::enter(netns, &mut cmd, true)?;
    let child = cmd
        .spawn()
        .with_context(|| format!("starting skiff {} in {netns}", args[0]))?;
    std::fs::write(pid_file, child.id().to_string())
        .with_context(|| format!("writing {}", pid_file.display()))?;
    Ok(child)
}

pub fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and is the skiff process of the node whose data dir is `data_dir`
/// (its command line holds `--data-dir <data_dir>`). Zombies count as gone.
pub fn is_node_process(pid: i32, data_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let want = data_dir.as_os_str().as_encoded_bytes();
    let has_data_dir = args
        .windows(2)
        .any(|w| w[0] == b"--data-dir" && w[1] == want);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    has_data_dir && !zombie
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
pub fn stop(pid: i32, data_dir: &Path, grace: Duration) -> Result<()> {
    if !is_node_process(pid, data_dir) {
        return Ok(());
    }
    for (signal, wait) in [
        (libc::SIGTERM, grace),
        (libc::SIGKILL, Duration::from_secs(10)),
    ] {
        // SAFETY: kill(2) on a PID just checked to be this node's skiff process.
        unsafe {
            libc::kill(pid, signal);
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !is_node_process(pid, data_dir) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    bail!("process {pid} ({}) did not exit", data_dir.display())
}

/// `skiff killall --data-dir <data_dir>` inside the node's namespace: the node's containers
/// and sandboxes, its service proxy and pod network.
pub fn killall(netns: &str, data_dir: &Path) -> Result<()> {
    let mut cmd = skiff_command(&[
        "killall".to_string(),
        "--data-dir".to_string(),
        data_dir.display().to_string(),
    ])?;
    hosts::enter(netns, &mut cmd, false)?;
    let out = cmd
        .output()
        .with_context(|| format!("running skiff killall in {netns}"))?;
    if !out.status.success() {
        bail!(
            "skiff killall in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `skiff image import --data-dir <data_dir> <files>` for one node (no namespace needed:
/// it only writes the node's image store).
pub fn import_images(data_dir: &Path, files: &[std::path::PathBuf]) -> Result<()> {
    let mut args = vec![
        "image".to_string(),
        "import".to_string(),
        "--data-dir".to_string(),
        data_dir.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = skiff_command(&args)?
        .output()
        .context("running skiff image import")?;
    if !out.status.success() {
        bail!(
            "skiff image import into {}: {}",
            data_dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The last `n` lines of a node's log, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- {} (last {} lines) ---\n{}",
        log.display(),
        lines.len() - from,
        lines[from..].join("\n")
    )
}

/// PIDs of skiff processes whose command line mentions `dir` (a node's skiff, its
/// containers' shims), to wait for after a delete; never used to choose what to kill.
pub fn mentioning(dir: &Path) -> Vec<i32> {
    let needle = format!("{}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("skiff"))
            })
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}
