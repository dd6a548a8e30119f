//! The shim's state directory: its layout, the records the shim writes there (started,
//! exit) and the handshake line it sends its spawner, all as JSON written atomically.
//!
//! ```text
//! <state_dir>/
//!   request.json      what to run (ContainerConfig + log path), written by the client
//!   shim.log          the shim's own stderr (diagnostics)
//!   bundle/config.json  the OCI bundle (standard layout: an external runtime could run it)
//!   libcontainer/     libcontainer's state root while the container exists
//!   started.json      shim pid, container pid and its start time (for adopt/kill)
//!   attach.sock       the attach socket while the container runs (see attach.rs)
//!   console.sock      briefly, for a terminal container: libcontainer hands over the pty
//!   exit.json         the exit record, written last, after cleanup
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::ContainerConfig;

/// Where libcontainer sends a terminal container's pty master.
pub const CONSOLE_SOCKET_NAME: &str = "console.sock";

/// The file names inside a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn request(&self) -> PathBuf {
        self.root.join("request.json")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.root.join("shim.log")
    }
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }
    pub fn libcontainer_root(&self) -> PathBuf {
        self.root.join("libcontainer")
    }
    pub fn started(&self) -> PathBuf {
        self.root.join("started.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.root.join("exit.json")
    }
    pub fn attach_socket(&self) -> PathBuf {
        self.root.join(super::attach::SOCKET_NAME)
    }
    pub fn console_socket(&self) -> PathBuf {
        self.root.join(CONSOLE_SOCKET_NAME)
    }
}

/// What the client asks the shim to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRequest {
    pub config: ContainerConfig,
    /// Where the container's stdout/stderr go, in the CRI log format.
    pub log_path: PathBuf,
    /// Rotate the log once it is this large (kubelet's containerLogMaxSize, 10Mi).
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Mounts to hide from libcontainer while it creates the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_mounts: Option<HiddenMounts>,
}

/// Mounts a container never needs, hidden while libcontainer creates it: every mount
/// strictly under `under` except those at or under `keep` (on a node: the other pods'
/// root filesystems, volumes and network namespaces). libcontainer reads the whole mount
/// table several times per container and copies it into the container's namespace, so
/// without this a container start costs more with every pod the node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiddenMounts {
    pub under: PathBuf,
    pub keep: PathBuf,
}

pub fn default_log_max_bytes() -> u64 {
    super::cri_log::DEFAULT_MAX_BYTES
}

/// Written once the container runs; enough for a later agent process to adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    pub shim_pid: i32,
    /// Start time of the shim (see `pid_start_time`).
    pub shim_start_time: u64,
    /// Host pid of the container's first process.
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat: tells the container's process from a later one that
    /// reuses its pid.
    pub pid_start_time: u64,
    /// RFC 3339, UTC, nanoseconds.
    pub started_at: String,
}

/// How the container ended. Written after the cgroup and libcontainer state are removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status as kubelet reports it: the code, or 128+n for signal n.
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// The container's memory cgroup saw an OOM kill.
    pub oom_killed: bool,
    /// RFC 3339, UTC, nanoseconds.
    pub started_at: String,
    pub finished_at: String,
    /// Cleanup that failed (cgroup or libcontainer state left behind), for the agent to log.
    #[serde(default)]
    pub cleanup_error: Option<String>,
}

/// Why a container could not be started, classified for the agent's status reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StartErrorKind {
    /// args[0] is not in the image (kubelet: RunContainerError "executable file not found").
    ExecutableNotFound,
    /// args[0] exists but may not be executed.
    PermissionDenied,
    /// The request itself was refused (bad config).
    InvalidConfig,
    Other,
}

/// The one line the shim writes to its spawner over the handshake pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Handshake {
    Started(StartedRecord),
    Failed {
        kind: StartErrorKind,
        message: String,
    },
}

/// The exit code kubelet shows for a wait status: the code itself, or 128 + signal.
pub fn exit_code_of(exited: Option<i32>, signal: Option<i32>) -> i32 {
    match (exited, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// Sorts a libcontainer start failure by the text it carries (libcontainer passes the
/// init process's error to its parent as a string).
pub fn classify_start_error(message: &str) -> StartErrorKind {
    let m = message.to_ascii_lowercase();
    if m.contains("not found in $path") {
        StartErrorKind::ExecutableNotFound
    } else if m.contains("does not have correct permissions") || m.contains("permission denied") {
        StartErrorKind::PermissionDenied
    } else {
        StartErrorKind::Other
    }
}

/// RFC 3339 with nanoseconds in UTC, the timestamp format of CRI logs and records.
pub fn rfc3339_nano(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `value` as JSON to `path` atomically (temp file, fsync, rename), so a reader never
/// sees half a record, even across a crash.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    write_json(path, value, true)
}

/// Like [`write_json_atomic`] without the fsync: readers never see half a record, but a
/// power loss may leave the file empty or missing. For records of what a reboot ends anyway
/// (a request, a running process, a sandbox): each fsync is a synchronous device write on
/// the pod start path, and their readers treat an unreadable record as absent.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    write_json(path, value, false)
}

fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), RecordError> {
    let err = |source| RecordError::Write {
        path: path.to_owned(),
        source,
    };
    let data = serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e)))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&data).map_err(err)?;
    if durable {
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

/// Reads a JSON record; `Ok(None)` when the file does not exist (yet).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RecordError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| RecordError::Parse {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Field 22 (starttime) of a /proc/<pid>/stat line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // after ')' come field 3 (state) onwards: starttime is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of a live process, or None if it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_kubelet() {
        let cases = [
            (Some(0), None, 0),
            (Some(3), None, 3),
            (None, Some(9), 137),
            (None, Some(15), 143),
            (None, None, 255),
        ];
        for (exited, signal, expected) in cases {
            assert_eq!(
                exit_code_of(exited, signal),
                expected,
                "{exited:?} {signal:?}"
            );
        }
    }

    #[test]
    fn start_errors_are_classified() {
        let cases = [
            (
                "failed to run container process: executable 'nope' not found in $PATH",
                StartErrorKind::ExecutableNotFound,
            ),
            (
                "executable 'x' at path \"/x\" does not have correct permissions",
                StartErrorKind::PermissionDenied,
            ),
            ("cgroup error: EBUSY", StartErrorKind::Other),
        ];
        for (message, kind) in cases {
            assert_eq!(classify_start_error(message), kind, "{message}");
        }
    }

    #[test]
    fn stat_start_time_survives_odd_command_names() {
        let fields: Vec<String> = (3..=22).map(|i| i.to_string()).collect();
        let cases = [
            format!("42 (sh) {}", fields.join(" ")),
            format!("42 (a b) c)) {} 23 24", fields.join(" ")),
        ];
        for stat in cases {
            assert_eq!(parse_stat_start_time(&stat), Some(22), "{stat}");
        }
        assert_eq!(parse_stat_start_time("42 (sh) S 1"), None);
        assert_eq!(parse_stat_start_time("garbage"), None);
    }

    #[test]
    fn handshake_is_one_json_line() {
        let h = Handshake::Failed {
            kind: StartErrorKind::ExecutableNotFound,
            message: "x\ny".into(),
        };
        let line = serde_json::to_string(&h).expect("serialize");
        assert!(!line.contains('\n'));
        let back: Handshake = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, h);
    }

    #[test]
    fn records_are_written_atomically_and_missing_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        assert!(read_json::<ExitRecord>(&path).expect("read").is_none());
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            started_at: "a".into(),
            finished_at: "b".into(),
            cleanup_error: None,
        };
        write_json_atomic(&path, &rec).expect("write");
        assert_eq!(read_json::<ExitRecord>(&path).expect("read"), Some(rec));
        assert!(!dir.path().join("exit.json.tmp").exists());
        std::fs::write(&path, b"{").expect("corrupt");
        assert!(matches!(
            read_json::<ExitRecord>(&path),
            Err(RecordError::Parse { .. })
        ));
    }
}
