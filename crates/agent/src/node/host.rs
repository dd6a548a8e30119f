//! What a real node reports about its machine, read from the host as kubelet reads it:
//! capacity (cpu, memory, ephemeral-storage, pods), the OS image and kernel for
//! `nodeInfo`. Parsing is pure (tested on fixed text); `HostFacts::read` does the reads.

use std::path::Path;

/// Pods a node takes unless told otherwise (kubelet's `--max-pods` default).
pub const DEFAULT_MAX_PODS: u32 = 110;

/// The machine as the Node's capacity and nodeInfo describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// Logical CPUs (capacity `cpu`).
    pub cpus: u32,
    /// `MemTotal` in bytes (capacity `memory`).
    pub memory_bytes: u64,
    /// Size of the filesystem holding the data dir (capacity `ephemeral-storage`).
    pub ephemeral_storage_bytes: u64,
    /// `/etc/os-release` PRETTY_NAME (nodeInfo `osImage`).
    pub os_image: String,
    /// `uname -r` (nodeInfo `kernelVersion`).
    pub kernel_version: String,
    /// `/etc/machine-id` (nodeInfo `machineID`), empty when absent.
    pub machine_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl HostFacts {
    /// Reads the host; `data_dir` is where pods' writable layers and logs live.
    pub fn read(data_dir: &Path) -> Result<HostFacts, HostError> {
        let meminfo = read("/proc/meminfo")?;
        let memory_bytes = mem_total_bytes(&meminfo).ok_or_else(|| HostError::Parse {
            path: "/proc/meminfo".into(),
            message: "no MemTotal line".into(),
        })?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let ephemeral_storage_bytes = filesystem_bytes(data_dir)?;
        Ok(HostFacts {
            cpus,
            memory_bytes,
            ephemeral_storage_bytes,
            os_image: read("/etc/os-release")
                .ok()
                .and_then(|t| pretty_name(&t))
                .unwrap_or_else(|| "Linux".into()),
            kernel_version: read("/proc/sys/kernel/osrelease")
                .map(|t| t.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            machine_id: read("/etc/machine-id")
                .map(|t| t.trim().to_string())
                .unwrap_or_default(),
        })
    }
}

fn read(path: &str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.into(),
        source,
    })
}

/// `MemTotal:  16384256 kB` → bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | Some("KB") => Some(value * 1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// PRETTY_NAME from os-release text, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
}

/// Total bytes of the filesystem holding `path` (statvfs blocks × fragment size).
fn filesystem_bytes(path: &Path) -> Result<u64, HostError> {
    Ok(filesystem_stats(path)?.capacity_bytes)
}

/// A filesystem's size and what is left of it, as cadvisor reports it to kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    /// Free to unprivileged users (`f_bavail`): what kubelet calls available.
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn filesystem_stats(path: &Path) -> Result<FsStats, HostError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| HostError::Parse {
            path: path.display().to_string(),
            message: "path holds a NUL byte".into(),
        })?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a writable statvfs.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(HostError::Read {
            path: path.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    let frsize = stat.f_frsize as u64;
    Ok(FsStats {
        capacity_bytes: stat.f_blocks as u64 * frsize,
        available_bytes: stat.f_bavail as u64 * frsize,
        inodes: stat.f_files as u64,
        inodes_free: stat.f_ffree as u64,
    })
}

/// `MemAvailable:` of /proc/meminfo in bytes.
pub fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut parts = line["MemAvailable:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | Some("KB") => Some(value * 1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Tasks (processes and threads: each takes a pid) from /proc/loadavg's `running/total`.
pub fn tasks_in_use(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Memory available, pids in use and the most pids there can be (the smaller of
/// `kernel.pid_max` and `kernel.threads-max`, as kubelet's rlimit stats).
pub fn memory_and_pids() -> Result<(u64, u64, u64), HostError> {
    let meminfo = read("/proc/meminfo")?;
    let available = mem_available_bytes(&meminfo).ok_or_else(|| HostError::Parse {
        path: "/proc/meminfo".into(),
        message: "no MemAvailable line".into(),
    })?;
    let loadavg = read("/proc/loadavg")?;
    let tasks = tasks_in_use(&loadavg).ok_or_else(|| HostError::Parse {
        path: "/proc/loadavg".into(),
        message: format!("no running/total field in {:?}", loadavg.trim()),
    })?;
    let number = |path: &str| -> Result<u64, HostError> {
        read(path)?.trim().parse().map_err(|_| HostError::Parse {
            path: path.into(),
            message: "not a number".into(),
        })
    };
    let max = number("/proc/sys/kernel/pid_max")?.min(number("/proc/sys/kernel/threads-max")?);
    Ok((available, tasks, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release_parse_as_kubelet_reads_them() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24576000 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 12 MB\n"), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn memory_available_and_tasks_parse() {
        let meminfo = "MemTotal: 100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available_bytes(meminfo), Some(2048 * 1024));
        assert_eq!(mem_available_bytes("MemTotal: 1 kB\n"), None);
        assert_eq!(tasks_in_use("1.79 0.58 0.20 3/110 9339\n"), Some(110));
        assert_eq!(tasks_in_use("1.79 0.58"), None);
        let (available, tasks, max) = memory_and_pids().expect("this host");
        assert!(available > 0 && tasks > 0 && max >= tasks);
    }

    #[test]
    fn this_host_reads() {
        let dir = tempfile::tempdir().expect("tmp");
        let facts = HostFacts::read(dir.path()).expect("host facts");
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 64 * 1024 * 1024);
        assert!(facts.ephemeral_storage_bytes > 0);
        assert!(!facts.kernel_version.is_empty());
    }
}
