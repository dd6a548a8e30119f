//! `GET /stats/summary`: kubelet's Summary API (stats/v1alpha1) for this node and its pods,
//! read straight from the kernel: `/proc/stat` and `/proc/meminfo` for the node, the pod
//! and container cgroups (v1 `cpuacct`/`memory`, or v2 `cpu.stat`/`memory.*`) for pods, and
//! statvfs of the agent and image-store directories for `fs` and `runtime.imageFs`.
//!
//! `usageNanoCores` is a rate, so it needs two samples: [`Sampler`] keeps the previous
//! cumulative CPU figure of every cgroup (and of the node) and the answer carries the rate
//! only from the second call on, as kubelet omits it before it has two samples.
//!
//! The parsing functions are pure and tested with file contents from v1 and v2 hosts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use runtime::sandbox::cgroups::{self, Layout as CgroupLayout};
use serde::Serialize;

use crate::node::host;
use crate::pods::layout::Layout;
use crate::pods::observe::{AttemptRecord, ATTEMPT_RECORD};
use crate::pods::sandbox;

/// `USER_HZ`: the unit of `/proc/stat` (100 on every Linux architecture skiff runs on).
const USER_HZ: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {what}: {message}")]
    Parse { what: String, message: String },
}

fn parse_err(what: &str, message: impl Into<String>) -> StatsError {
    StatsError::Parse {
        what: what.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// The answer (field names and omissions as stats/v1alpha1).

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    pub image_fs: FsStats,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    pub start_time: String,
    pub containers: Vec<ContainerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    pub start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    pub time: String,
    pub available_bytes: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Pure parsing.

/// Memory figures of a cgroup or of the node, before timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// `usage - inactive_file` (never below zero), kubelet's eviction signal.
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// The node's only: total minus working set.
    pub available: Option<u64>,
}

/// `key value` lines (memory.stat, cpu.stat, /proc/vmstat). Lines that are not a key and
/// an unsigned number are skipped.
pub fn flat_keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

fn single_number(what: &str, text: &str) -> Result<u64, StatsError> {
    text.trim()
        .parse()
        .map_err(|e| parse_err(what, format!("{:?}: {e}", text.trim())))
}

/// v1 `cpuacct.usage`: cumulative nanoseconds.
pub fn cpu_v1(cpuacct_usage: &str) -> Result<u64, StatsError> {
    single_number("cpuacct.usage", cpuacct_usage)
}

/// v2 `cpu.stat`: `usage_usec`, in nanoseconds.
pub fn cpu_v2(cpu_stat: &str) -> Result<u64, StatsError> {
    flat_keyed(cpu_stat)
        .get("usage_usec")
        .map(|us| us.saturating_mul(1000))
        .ok_or_else(|| parse_err("cpu.stat", "no usage_usec"))
}

/// v1 `memory.usage_in_bytes` and `memory.stat` (the hierarchical `total_*` figures).
pub fn memory_v1(usage_in_bytes: &str, stat: &str) -> Result<Memory, StatsError> {
    let usage = single_number("memory.usage_in_bytes", usage_in_bytes)?;
    let stat = flat_keyed(stat);
    let get = |k: &str| stat.get(k).copied();
    let inactive = get("total_inactive_file").unwrap_or(0);
    Ok(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: get("total_rss").unwrap_or(0),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        available: None,
    })
}

/// v2 `memory.current` and `memory.stat`.
pub fn memory_v2(current: &str, stat: &str) -> Result<Memory, StatsError> {
    let usage = single_number("memory.current", current)?;
    let stat = flat_keyed(stat);
    let get = |k: &str| stat.get(k).copied();
    let inactive = get("inactive_file").unwrap_or(0);
    Ok(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: get("anon").unwrap_or(0),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        available: None,
    })
}

/// The node's cumulative busy CPU time from `/proc/stat`'s `cpu` line, in nanoseconds:
/// user + nice + system + irq + softirq + steal (not idle or iowait; guest time is already
/// counted in user).
pub fn proc_stat_cpu(text: &str) -> Result<u64, StatsError> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or_else(|| parse_err("/proc/stat", "no cpu line"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| {
            f.parse()
                .map_err(|e| parse_err("/proc/stat", format!("{f:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if fields.len() < 7 {
        return Err(parse_err("/proc/stat", "short cpu line"));
    }
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    Ok(busy.saturating_mul(1_000_000_000 / USER_HZ))
}

/// The node's memory from `/proc/meminfo` (kB) and `/proc/vmstat` (page faults), as the
/// root cgroup would report it: usage = total - free, working set = usage - inactive file
/// pages, available = total - working set, rss = anonymous pages.
pub fn node_memory(meminfo: &str, vmstat: &str) -> Result<Memory, StatsError> {
    let kb: BTreeMap<&str, u64> = meminfo
        .lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let value = rest.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((key.trim(), value.saturating_mul(1024)))
        })
        .collect();
    let need = |k: &str| {
        kb.get(k)
            .copied()
            .ok_or_else(|| parse_err("/proc/meminfo", format!("no {k}")))
    };
    let total = need("MemTotal")?;
    let usage = total.saturating_sub(need("MemFree")?);
    let working_set = usage.saturating_sub(kb.get("Inactive(file)").copied().unwrap_or(0));
    let vm = flat_keyed(vmstat);
    Ok(Memory {
        usage,
        working_set,
        rss: kb.get("AnonPages").copied().unwrap_or(0),
        page_faults: vm.get("pgfault").copied(),
        major_page_faults: vm.get("pgmajfault").copied(),
        available: Some(total.saturating_sub(working_set)),
    })
}

/// Cores in use between two cumulative samples, in billionths of a core. `None` when the
/// counter went backwards (a new cgroup of the same name) or no time passed.
pub fn nano_cores(prev_ns: u64, now_ns: u64, elapsed_ns: u128) -> Option<u64> {
    if now_ns < prev_ns || elapsed_ns == 0 {
        return None;
    }
    let used = u128::from(now_ns - prev_ns);
    u64::try_from(used * 1_000_000_000 / elapsed_ns).ok()
}

// ---------------------------------------------------------------------------------------
// Previous samples, for rates.

/// The previous cumulative CPU figure of each cgroup (and `"node"`), kept between calls.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: Mutex<HashMap<String, (Instant, u64)>>,
}

/// One call's new samples, merged into the [`Sampler`] when the call ends (so cgroups
/// that are gone are forgotten).
struct Round<'a> {
    previous: HashMap<String, (Instant, u64)>,
    seen: HashMap<String, (Instant, u64)>,
    sampler: &'a Sampler,
}

impl Sampler {
    fn round(&self) -> Round<'_> {
        let previous = self.previous.lock().map(|m| m.clone()).unwrap_or_default();
        Round {
            previous,
            seen: HashMap::new(),
            sampler: self,
        }
    }
}

impl Round<'_> {
    fn cpu(&mut self, key: &str, usage_ns: u64, time: &str) -> CpuStats {
        let now = Instant::now();
        let rate = self
            .previous
            .get(key)
            .and_then(|(at, prev)| nano_cores(*prev, usage_ns, now.duration_since(*at).as_nanos()));
        self.seen.insert(key.to_string(), (now, usage_ns));
        CpuStats {
            time: time.to_string(),
            usage_nano_cores: rate,
            usage_core_nano_seconds: usage_ns,
        }
    }

    fn finish(self) {
        if let Ok(mut m) = self.sampler.previous.lock() {
            *m = self.seen;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the host.

fn read(path: &Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The directory of `cgroup` (absolute within each hierarchy) for a v1 controller, if the
/// host mounts that controller as v1.
fn v1_dir(layout: &CgroupLayout, controller: &str, cgroup: &Path) -> Option<PathBuf> {
    let hierarchies = match layout {
        CgroupLayout::V1 { hierarchies } | CgroupLayout::Hybrid { hierarchies, .. } => hierarchies,
        CgroupLayout::V2 { .. } => return None,
    };
    let h = hierarchies
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == controller))?;
    Some(
        h.mount_point
            .join(cgroup.strip_prefix("/").unwrap_or(cgroup)),
    )
}

fn v2_dir(layout: &CgroupLayout, cgroup: &Path) -> Option<PathBuf> {
    match layout {
        CgroupLayout::V2 { unified } | CgroupLayout::Hybrid { unified, .. } => {
            Some(unified.join(cgroup.strip_prefix("/").unwrap_or(cgroup)))
        }
        CgroupLayout::V1 { .. } => None,
    }
}

/// Cumulative CPU nanoseconds of a cgroup: v1 `cpuacct` when mounted, else v2.
fn cgroup_cpu(layout: &CgroupLayout, cgroup: &Path) -> Result<u64, StatsError> {
    if let Some(dir) = v1_dir(layout, "cpuacct", cgroup) {
        return cpu_v1(&read(&dir.join("cpuacct.usage"))?);
    }
    let dir = v2_dir(layout, cgroup).ok_or_else(|| parse_err("cgroups", "no cpu accounting"))?;
    cpu_v2(&read(&dir.join("cpu.stat"))?)
}

/// A cgroup's memory: the v1 `memory` controller when mounted, else v2.
fn cgroup_memory(layout: &CgroupLayout, cgroup: &Path) -> Result<Memory, StatsError> {
    if let Some(dir) = v1_dir(layout, "memory", cgroup) {
        return memory_v1(
            &read(&dir.join("memory.usage_in_bytes"))?,
            &read(&dir.join("memory.stat"))?,
        );
    }
    let dir = v2_dir(layout, cgroup).ok_or_else(|| parse_err("cgroups", "no memory controller"))?;
    memory_v2(
        &read(&dir.join("memory.current"))?,
        &read(&dir.join("memory.stat"))?,
    )
}

fn memory_stats(m: Memory, time: &str) -> MemoryStats {
    MemoryStats {
        time: time.to_string(),
        available_bytes: m.available,
        usage_bytes: m.usage,
        working_set_bytes: m.working_set,
        rss_bytes: m.rss,
        page_faults: m.page_faults,
        major_page_faults: m.major_page_faults,
    }
}

fn fs_stats(path: &Path, time: &str) -> Option<FsStats> {
    match host::filesystem_stats(path) {
        Ok(s) => Some(FsStats {
            time: time.to_string(),
            available_bytes: s.available_bytes,
            capacity_bytes: s.capacity_bytes,
            used_bytes: s.capacity_bytes.saturating_sub(s.available_bytes),
        }),
        Err(e) => {
            tracing::debug!("stats: {e}");
            None
        }
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn modified(path: &Path) -> Option<String> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(rfc3339)
}

/// The node's boot time from `/proc/stat`'s `btime` (seconds since the epoch).
fn boot_time(proc_stat: &str) -> Option<String> {
    let secs = flat_keyed(proc_stat).get("btime").copied()?;
    Some(rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    ))
}

/// Builds the summary. Figures that cannot be read (a cgroup gone mid-call, a controller
/// the host lacks) are omitted, with a debug log, rather than failing the whole answer.
pub fn summary(layout: &Layout, node_name: &str, sampler: &Sampler) -> Summary {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut round = sampler.round();
    let warn = |e: StatsError| tracing::debug!("stats: {e}");

    let proc_stat = read(Path::new("/proc/stat")).map_err(warn).ok();
    let node_cpu = proc_stat
        .as_deref()
        .map(proc_stat_cpu)
        .and_then(|r| r.map_err(warn).ok())
        .map(|ns| round.cpu("node", ns, &now));
    let node_memory = read(Path::new("/proc/meminfo"))
        .and_then(|m| {
            node_memory(
                &m,
                &std::fs::read_to_string("/proc/vmstat").unwrap_or_default(),
            )
        })
        .map_err(warn)
        .ok()
        .map(|m| memory_stats(m, &now));
    let node = NodeStats {
        node_name: node_name.to_string(),
        start_time: proc_stat
            .as_deref()
            .and_then(boot_time)
            .unwrap_or_else(|| now.clone()),
        cpu: node_cpu,
        memory: node_memory,
        fs: fs_stats(layout.agent_dir(), &now),
        runtime: fs_stats(&layout.image_store(), &now).map(|image_fs| RuntimeStats { image_fs }),
    };

    let mut pods = Vec::new();
    match cgroups::detect() {
        Ok(cgroup_layout) => {
            for uid in subdirectories(&layout.pods_root()) {
                if let Some(p) = pod_stats(layout, &cgroup_layout, &uid, &now, &mut round) {
                    pods.push(p);
                }
            }
        }
        Err(e) => tracing::debug!("stats: detecting cgroups: {e}"),
    }
    round.finish();
    Summary { node, pods }
}

fn subdirectories(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn pod_stats(
    layout: &Layout,
    cgroup_layout: &CgroupLayout,
    uid: &str,
    now: &str,
    round: &mut Round<'_>,
) -> Option<PodStats> {
    let record = sandbox::read_record(layout, uid)?;
    let parent = PathBuf::from(&record.cgroup_parent);
    let mut containers = Vec::new();
    let containers_dir = layout.pod_dir(uid).join("containers");
    for name in subdirectories(&containers_dir) {
        // The latest attempt is the one running (or last run).
        let Some(attempt) = subdirectories(&layout.container_dir(uid, &name))
            .iter()
            .filter_map(|a| a.parse::<u32>().ok())
            .max()
        else {
            continue;
        };
        let attempt_file = layout.attempt_dir(uid, &name, attempt).join(ATTEMPT_RECORD);
        let Ok(Some(rec)) = runtime::shim::read_json::<AttemptRecord>(&attempt_file) else {
            continue;
        };
        let cgroup = parent.join(&rec.container_id);
        let key = cgroup.display().to_string();
        // A container that is not running has no cgroup: kubelet lists running ones.
        let Ok(cpu_ns) = cgroup_cpu(cgroup_layout, &cgroup) else {
            continue;
        };
        containers.push(ContainerStats {
            start_time: modified(&attempt_file).unwrap_or_else(|| now.to_string()),
            cpu: Some(round.cpu(&key, cpu_ns, now)),
            memory: cgroup_memory(cgroup_layout, &cgroup)
                .map_err(|e| tracing::debug!("stats: {e}"))
                .ok()
                .map(|m| memory_stats(m, now)),
            name,
        });
    }
    let cpu = cgroup_cpu(cgroup_layout, &parent)
        .map_err(|e| tracing::debug!("stats: {e}"))
        .ok()
        .map(|ns| round.cpu(&record.cgroup_parent, ns, now));
    let memory = cgroup_memory(cgroup_layout, &parent)
        .map_err(|e| tracing::debug!("stats: {e}"))
        .ok()
        .map(|m| memory_stats(m, now));
    Some(PodStats {
        start_time: modified(&layout.pod_record(uid)).unwrap_or_else(|| now.to_string()),
        pod_ref: PodRef {
            name: record.name,
            namespace: record.namespace,
            uid: record.uid,
        },
        containers,
        cpu,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 4096\nrss 8192\ninactive_file 100\n\
total_cache 1052672\ntotal_rss 20971520\ntotal_inactive_file 1048576\n\
total_active_file 4096\ntotal_pgfault 5210\ntotal_pgmajfault 3\n";

    const V2_STAT: &str = "anon 20971520\nfile 1052672\nkernel 65536\n\
active_file 4096\ninactive_file 1048576\npgfault 5210\npgmajfault 3\n";

    #[test]
    fn reads_v1_cgroup_files() {
        assert_eq!(cpu_v1("123456789\n").expect("cpu"), 123_456_789);
        assert!(cpu_v1("lots").is_err());
        let m = memory_v1("22089728\n", V1_STAT).expect("memory");
        assert_eq!(m.usage, 22_089_728);
        assert_eq!(m.working_set, 22_089_728 - 1_048_576);
        assert_eq!(m.rss, 20_971_520);
        assert_eq!(m.page_faults, Some(5210));
        assert_eq!(m.major_page_faults, Some(3));
        // Inactive file pages beyond usage leave a working set of zero, not a wrap.
        assert_eq!(memory_v1("10", V1_STAT).expect("memory").working_set, 0);
    }

    #[test]
    fn reads_v2_cgroup_files() {
        let cpu_stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(cpu_v2(cpu_stat).expect("cpu"), 1_500_000);
        assert!(cpu_v2("user_usec 1\n").is_err());
        let m = memory_v2("22089728\n", V2_STAT).expect("memory");
        assert_eq!(m.usage, 22_089_728);
        assert_eq!(m.working_set, 22_089_728 - 1_048_576);
        assert_eq!(m.rss, 20_971_520);
        assert_eq!(m.page_faults, Some(5210));
        assert!(memory_v2("max\n", V2_STAT).is_err());
    }

    #[test]
    fn reads_the_node_from_proc() {
        let stat = "cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 50 10 15 2000 25 3 3 4 0 0\n\
intr 1 2 3\nbtime 1700000000\n";
        // (100 + 20 + 30 + 6 + 7 + 8) ticks of 10ms.
        assert_eq!(proc_stat_cpu(stat).expect("cpu"), 171 * 10_000_000);
        assert_eq!(boot_time(stat).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(proc_stat_cpu("intr 1\n").is_err());

        let meminfo = "MemTotal:       16000 kB\nMemFree:         4000 kB\n\
MemAvailable:   10000 kB\nInactive(file):  3000 kB\nAnonPages:       5000 kB\n";
        let m = node_memory(meminfo, "pgfault 77\npgmajfault 2\n").expect("memory");
        assert_eq!(m.usage, 12_000 * 1024);
        assert_eq!(m.working_set, 9_000 * 1024);
        assert_eq!(m.available, Some(7_000 * 1024));
        assert_eq!(m.rss, 5_000 * 1024);
        assert_eq!(m.page_faults, Some(77));
        assert!(node_memory("MemFree: 1 kB\n", "").is_err());
    }

    #[test]
    fn rates_need_two_samples() {
        // Half a core: 0.5s of CPU over one second.
        assert_eq!(
            nano_cores(1_000_000_000, 1_500_000_000, 1_000_000_000),
            Some(500_000_000)
        );
        assert_eq!(nano_cores(10, 5, 1_000), None);
        assert_eq!(nano_cores(10, 20, 0), None);

        let sampler = Sampler::default();
        let mut first = sampler.round();
        assert_eq!(first.cpu("c", 100, "t").usage_nano_cores, None);
        first.finish();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut second = sampler.round();
        let cpu = second.cpu("c", 200, "t");
        assert!(cpu.usage_nano_cores.is_some());
        assert_eq!(cpu.usage_core_nano_seconds, 200);
        // A cgroup not seen in a round is forgotten.
        second.finish();
        let third = sampler.round();
        third.finish();
        assert!(sampler.previous.lock().expect("lock").is_empty());
    }

    #[test]
    fn serializes_as_the_summary_api() {
        let cpu = CpuStats {
            time: "t".into(),
            usage_nano_cores: None,
            usage_core_nano_seconds: 5,
        };
        let v = serde_json::to_value(&cpu).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"time": "t", "usageCoreNanoSeconds": 5})
        );
        let pod = PodStats {
            pod_ref: PodRef {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
            },
            start_time: "t".into(),
            containers: vec![],
            cpu: None,
            memory: None,
        };
        let v = serde_json::to_value(&pod).expect("json");
        assert_eq!(v["podRef"]["namespace"], "ns");
        assert!(v.get("cpu").is_none());
    }
}
