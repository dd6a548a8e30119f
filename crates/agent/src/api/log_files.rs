//! Container logs, the I/O part: which file holds a container's current (or previous)
//! attempt under `logs/<ns>_<pod>_<uid>/<container>/<attempt>.log`, and a task that reads
//! it record by record into a channel, following appended records when asked until the
//! attempt is superseded, the pod's logs are removed, or the client goes away.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::logs::{parse_cri_line, tail_start, LogOptions, LogWriter};
use crate::pods::layout::Layout;

/// How often a followed log is checked for new records.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Why a log cannot be served; each maps to kubelet's status code and wording.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("pod \"{namespace}/{pod}\" does not exist")]
    PodNotFound { namespace: String, pod: String },
    #[error("container \"{container}\" in pod \"{pod}\" is not available")]
    ContainerNotAvailable { pod: String, container: String },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    /// kubelet's status: 404 for an unknown pod, 400 for a container without the asked
    /// log, 500 for I/O failures.
    pub fn status(&self) -> u16 {
        match self {
            LogError::PodNotFound { .. } => 404,
            LogError::ContainerNotAvailable { .. } | LogError::NoPrevious { .. } => 400,
            LogError::Io { .. } => 500,
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One container attempt's log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub attempt: u32,
    /// The container's directory, where a newer attempt would appear.
    pub container_dir: PathBuf,
}

/// Finds the log file to serve. Several directories for one pod name (a pod deleted and
/// created again) resolve to the most recently modified.
pub fn locate(
    layout: &Layout,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<LogFile, LogError> {
    let root = layout.logs_root();
    let prefix = format!("{namespace}_{pod}_");
    let mut pod_dir: Option<(std::time::SystemTime, PathBuf)> = None;
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&root)(e)),
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(io_error(&root))?;
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io_error(&entry.path()))?;
        if pod_dir.as_ref().is_none_or(|(m, _)| modified > *m) {
            pod_dir = Some((modified, entry.path()));
        }
    }
    let Some((_, pod_dir)) = pod_dir else {
        return Err(LogError::PodNotFound {
            namespace: namespace.into(),
            pod: pod.into(),
        });
    };
    let container_dir = pod_dir.join(container);
    let attempts = attempts(&container_dir)?;
    let not_available = || LogError::ContainerNotAvailable {
        pod: pod.into(),
        container: container.into(),
    };
    let chosen = if previous {
        let current = *attempts.last().ok_or_else(not_available)?;
        attempts
            .iter()
            .rev()
            .copied()
            .find(|a| *a < current)
            .ok_or_else(|| LogError::NoPrevious {
                pod: pod.into(),
                container: container.into(),
            })?
    } else {
        *attempts.last().ok_or_else(not_available)?
    };
    Ok(LogFile {
        path: container_dir.join(format!("{chosen}.log")),
        attempt: chosen,
        container_dir,
    })
}

/// The attempts with a log file in a container's directory, ascending.
fn attempts(container_dir: &Path) -> Result<Vec<u32>, LogError> {
    let entries = match std::fs::read_dir(container_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(container_dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(container_dir))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Whether following `file` should end: a newer attempt exists or the file is gone.
fn superseded(file: &LogFile) -> bool {
    if !file.path.exists() {
        return true;
    }
    attempts(&file.container_dir)
        .map(|a| a.last().is_some_and(|last| *last > file.attempt))
        .unwrap_or(true)
}

/// Streams `file` into `tx` as the options say. Returns when done, when the client hung up
/// (`tx` closed), or on a read error (logged: the response has started).
pub async fn stream(file: LogFile, opts: LogOptions, tx: mpsc::Sender<Bytes>) {
    if let Err(e) = stream_inner(&file, &opts, &tx).await {
        tracing::warn!(path = %file.path.display(), "streaming container log: {e}");
    }
}

async fn stream_inner(
    file: &LogFile,
    opts: &LogOptions,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), LogError> {
    let path = file.path.clone();
    let start = match opts.tail {
        None => 0,
        Some(n) => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || tail_offset(&p, n))
                .await
                .map_err(|e| io_error(&path)(std::io::Error::other(e)))?
                .map_err(io_error(&path))?
        }
    };
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(io_error(&path))?;
    f.seek(SeekFrom::Start(start))
        .await
        .map_err(io_error(&path))?;
    let mut reader = BufReader::new(f);
    let mut writer = LogWriter::new(opts);
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut last_look = false;
    loop {
        let n = reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(io_error(&path))?;
        let complete = line.last() == Some(&b'\n');
        if n > 0 && complete {
            line.pop();
        }
        if complete || (!line.is_empty() && !opts.follow) {
            // An incomplete last record is served when not following (as upstream); when
            // following, the rest of it is still being written.
            if let Ok(rec) = parse_cri_line(&line) {
                let written = writer.record(&rec);
                out.extend_from_slice(&written.bytes);
                if written.done {
                    let _ = tx.send(Bytes::from(out)).await;
                    return Ok(());
                }
            }
            line.clear();
            if complete {
                // Send in batches of about 32 KiB while reading through a file.
                if out.len() >= 32 * 1024
                    && tx
                        .send(Bytes::from(std::mem::take(&mut out)))
                        .await
                        .is_err()
                {
                    return Ok(());
                }
                continue;
            }
        }
        // End of what is written so far.
        if !out.is_empty()
            && tx
                .send(Bytes::from(std::mem::take(&mut out)))
                .await
                .is_err()
        {
            return Ok(());
        }
        if !opts.follow || last_look {
            return Ok(());
        }
        if superseded(file) {
            // Read once more: records written before the switch still belong here.
            last_look = true;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// The offset of the last `n` lines of the file at `path`.
fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    tail_start(len, n, |at| {
        let from = at.saturating_sub(BLOCK);
        f.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0; (at - from) as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"").expect("write");
    }

    #[test]
    fn locates_current_and_previous_attempts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        touch(&layout.container_log("ns", "web", "u1", "app", 0));
        touch(&layout.container_log("ns", "web", "u1", "app", 1));
        touch(&layout.container_log("ns", "web", "u1", "app", 2));
        touch(&layout.container_log("ns", "web", "u1", "side", 0));
        touch(&layout.container_log("ns", "web-2", "u2", "app", 7));

        let cur = locate(&layout, "ns", "web", "app", false).expect("current");
        assert_eq!(cur.attempt, 2);
        let prev = locate(&layout, "ns", "web", "app", true).expect("previous");
        assert_eq!(prev.attempt, 1);
        let err = locate(&layout, "ns", "web", "side", true).expect_err("no previous");
        assert_eq!(
            err.to_string(),
            "previous terminated container \"side\" in pod \"web\" not found"
        );
        assert_eq!(err.status(), 400);
        let err = locate(&layout, "ns", "web", "nope", false).expect_err("no container");
        assert_eq!(err.status(), 400);
        let err = locate(&layout, "ns", "gone", "app", false).expect_err("no pod");
        assert_eq!(err.status(), 404);
        // `web-2` is another pod, not a match for `web`.
        assert_eq!(
            locate(&layout, "ns", "web-2", "app", false)
                .expect("web-2")
                .attempt,
            7
        );
    }
}
