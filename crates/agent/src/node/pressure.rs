//! The node's pressure conditions (MemoryPressure, DiskPressure, PIDPressure) from real
//! measurements, as kubelet's eviction manager derives them: each signal is compared with
//! kubelet's default hard eviction thresholds, and a condition, once observed, stays True
//! until its signals have been clear for the pressure transition period (5 minutes), so it
//! does not flap. The node lifecycle controller turns the conditions into the
//! `node.kubernetes.io/*-pressure:NoSchedule` taints. Evicting pods is not done here.
//!
//! Deciding is pure ([`thresholds_met`], [`Tracker::observe`], [`apply`]);
//! [`Observations::read`] does the reads.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::host::{self, FsStats, HostError};

/// kubelet's `evictionPressureTransitionPeriod`.
pub const TRANSITION_PERIOD: Duration = Duration::from_secs(300);

/// What the thresholds are compared with; a signal that could not be read is `None` and
/// never counts as pressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    pub memory_available: Option<u64>,
    /// The filesystem of the agent's directory (pods' writable layers, logs, volumes).
    pub nodefs: Option<FsStats>,
    /// The filesystem of the image store.
    pub imagefs: Option<FsStats>,
    /// (pids in use, most pids there can be).
    pub pids: Option<(u64, u64)>,
}

impl Observations {
    pub fn read(nodefs: &Path, imagefs: &Path) -> Observations {
        let warn = |what: &str, e: &HostError| tracing::warn!("measuring {what}: {e}");
        let (memory_available, pids) = match host::memory_and_pids() {
            Ok((available, tasks, max)) => (Some(available), Some((tasks, max))),
            Err(e) => {
                warn("memory and pids", &e);
                (None, None)
            }
        };
        let fs = |path: &Path| {
            host::filesystem_stats(path)
                .map_err(|e| warn("a filesystem", &e))
                .ok()
        };
        Observations {
            memory_available,
            nodefs: fs(nodefs),
            imagefs: fs(imagefs),
            pids,
        }
    }
}

/// Hard eviction thresholds: kubelet's Linux defaults, plus a pid one (kubelet has none by
/// default; PIDPressure then needs `--eviction-hard=pid.available<...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub memory_available_bytes: u64,
    pub nodefs_available_percent: u64,
    pub nodefs_inodes_free_percent: u64,
    pub imagefs_available_percent: u64,
    pub imagefs_inodes_free_percent: u64,
    pub pid_available_percent: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available_bytes: 100 * 1024 * 1024,
            nodefs_available_percent: 10,
            nodefs_inodes_free_percent: 5,
            imagefs_available_percent: 15,
            imagefs_inodes_free_percent: 5,
            pid_available_percent: 5,
        }
    }
}

/// Which conditions' signals are past their thresholds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressures {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

/// `part < percent% of whole`, without overflow; an empty whole is no signal.
fn below(part: u64, whole: u64, percent: u64) -> bool {
    whole > 0 && (part as u128) * 100 < (whole as u128) * (percent as u128)
}

pub fn thresholds_met(o: &Observations, t: &Thresholds) -> Pressures {
    let fs_low = |fs: &Option<FsStats>, bytes_percent: u64, inodes_percent: u64| {
        fs.is_some_and(|fs| {
            below(fs.available_bytes, fs.capacity_bytes, bytes_percent)
                || below(fs.inodes_free, fs.inodes, inodes_percent)
        })
    };
    Pressures {
        memory: o
            .memory_available
            .is_some_and(|m| m < t.memory_available_bytes),
        disk: fs_low(
            &o.nodefs,
            t.nodefs_available_percent,
            t.nodefs_inodes_free_percent,
        ) || fs_low(
            &o.imagefs,
            t.imagefs_available_percent,
            t.imagefs_inodes_free_percent,
        ),
        pid: o.pids.is_some_and(|(used, max)| {
            below(max.saturating_sub(used), max, t.pid_available_percent)
        }),
    }
}

/// The conditions as reported, with when each last changed.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub reported: Pressures,
    /// RFC 3339 lastTransitionTime of MemoryPressure, DiskPressure, PIDPressure.
    pub since: [String; 3],
    last_met: [Option<Instant>; 3],
    period: Duration,
}

impl Tracker {
    /// All conditions False since `since` (the agent's start).
    pub fn new(since: &str, period: Duration) -> Tracker {
        Tracker {
            reported: Pressures::default(),
            since: [since.to_string(), since.to_string(), since.to_string()],
            last_met: [None; 3],
            period,
        }
    }

    /// Takes this moment's signals; true if a condition changed (status should be posted).
    pub fn observe(&mut self, met: Pressures, now: Instant, now_rfc3339: &str) -> bool {
        let mut changed = false;
        let flags = [met.memory, met.disk, met.pid];
        let mut reported = [self.reported.memory, self.reported.disk, self.reported.pid];
        for i in 0..3 {
            if flags[i] {
                self.last_met[i] = Some(now);
            }
            let on = self.last_met[i].is_some_and(|t| now.duration_since(t) < self.period);
            if on != reported[i] {
                reported[i] = on;
                self.since[i] = now_rfc3339.to_string();
                changed = true;
            }
        }
        self.reported = Pressures {
            memory: reported[0],
            disk: reported[1],
            pid: reported[2],
        };
        changed
    }
}

/// Writes the pressure conditions of a built node status as kubelet words them.
pub fn apply(status: &mut Value, tracker: &Tracker) {
    let p = tracker.reported;
    let rows = [
        (
            "MemoryPressure",
            p.memory,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        (
            "DiskPressure",
            p.disk,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        (
            "PIDPressure",
            p.pid,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
    ];
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    for (i, (type_, on, yes, no)) in rows.into_iter().enumerate() {
        let (reason, message) = if on { yes } else { no };
        for c in conditions.iter_mut().filter(|c| c["type"] == type_) {
            c["status"] = json!(if on { "True" } else { "False" });
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            c["lastTransitionTime"] = json!(tracker.since[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn fs(capacity: u64, available: u64) -> Option<FsStats> {
        Some(FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            inodes: 1000,
            inodes_free: 900,
        })
    }

    fn healthy() -> Observations {
        Observations {
            memory_available: Some(8 * GI),
            nodefs: fs(100 * GI, 50 * GI),
            imagefs: fs(100 * GI, 50 * GI),
            pids: Some((300, 32768)),
        }
    }

    #[test]
    fn default_thresholds_as_kubelet() {
        let t = Thresholds::default();
        let none = Pressures::default();
        let cases: Vec<(&str, Observations, Pressures)> = vec![
            ("healthy", healthy(), none),
            ("nothing measured", Observations::default(), none),
            (
                "memory just under 100Mi",
                Observations {
                    memory_available: Some(100 * 1024 * 1024 - 1),
                    ..healthy()
                },
                Pressures {
                    memory: true,
                    ..none
                },
            ),
            (
                "memory exactly 100Mi",
                Observations {
                    memory_available: Some(100 * 1024 * 1024),
                    ..healthy()
                },
                none,
            ),
            (
                "nodefs 9% available",
                Observations {
                    nodefs: fs(100 * GI, 9 * GI),
                    imagefs: fs(200 * GI, 100 * GI),
                    ..healthy()
                },
                Pressures { disk: true, ..none },
            ),
            (
                "nodefs 12% is fine, but as imagefs it is under 15%",
                Observations {
                    nodefs: fs(100 * GI, 12 * GI),
                    imagefs: fs(100 * GI, 12 * GI),
                    ..healthy()
                },
                Pressures { disk: true, ..none },
            ),
            (
                "nodefs 12% on its own",
                Observations {
                    nodefs: fs(100 * GI, 12 * GI),
                    imagefs: fs(200 * GI, 100 * GI),
                    ..healthy()
                },
                none,
            ),
            (
                "nodefs inodes 4% free",
                Observations {
                    nodefs: Some(FsStats {
                        capacity_bytes: 100 * GI,
                        available_bytes: 50 * GI,
                        inodes: 1000,
                        inodes_free: 40,
                    }),
                    ..healthy()
                },
                Pressures { disk: true, ..none },
            ),
            (
                "pids 96% used",
                Observations {
                    pids: Some((31_500, 32768)),
                    ..healthy()
                },
                Pressures { pid: true, ..none },
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(thresholds_met(&o, &t), want, "{name}");
        }
    }

    #[test]
    fn a_condition_stays_until_clear_for_the_transition_period() {
        let start = Instant::now();
        let mut t = Tracker::new("t0", Duration::from_secs(300));
        let disk = Pressures {
            disk: true,
            ..Default::default()
        };
        assert!(!t.observe(Pressures::default(), start, "t0"));
        assert!(t.observe(disk, start + Duration::from_secs(10), "t10"));
        assert!(t.reported.disk);
        assert_eq!(t.since[1], "t10");
        assert_eq!(t.since[0], "t0");
        // Clear again, but not for long enough.
        assert!(!t.observe(
            Pressures::default(),
            start + Duration::from_secs(200),
            "t200"
        ));
        assert!(t.reported.disk);
        assert!(t.observe(
            Pressures::default(),
            start + Duration::from_secs(311),
            "t311"
        ));
        assert!(!t.reported.disk);
        assert_eq!(t.since[1], "t311");
    }

    #[test]
    fn conditions_are_worded_as_kubelet() {
        let mut status = json!({"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "DiskPressure", "status": "False"},
            {"type": "PIDPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        ]});
        let mut t = Tracker::new("t0", TRANSITION_PERIOD);
        t.observe(
            Pressures {
                disk: true,
                ..Default::default()
            },
            Instant::now(),
            "t1",
        );
        apply(&mut status, &t);
        let c = &status["conditions"];
        assert_eq!(c[1]["status"], "True");
        assert_eq!(c[1]["reason"], "KubeletHasDiskPressure");
        assert_eq!(c[1]["message"], "kubelet has disk pressure");
        assert_eq!(c[1]["lastTransitionTime"], "t1");
        assert_eq!(c[0]["reason"], "KubeletHasSufficientMemory");
        assert_eq!(c[0]["lastTransitionTime"], "t0");
        assert_eq!(c[2]["reason"], "KubeletHasSufficientPID");
        assert_eq!(c[3]["reason"], "KubeletReady");
    }
}
