//! Test and benchmark support: a private etcd server on free local ports, started from
//! Debian's `etcd-server` binary and killed when the guard is dropped (also when a test
//! panics), so the etcd conformance test and the benchmark share one way to get an etcd.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::client::{ClientOptions, EtcdClient};
use crate::etcd::proto::RangeRequest;

/// How long etcd may take to answer after being started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private etcd. Dropping it kills the process (SIGKILL, by PID) and removes
/// its data directory.
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

/// The etcd binary: `$ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    })
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

impl EtcdServer {
    /// Start etcd and wait until it serves requests. Fails (never skips) when the binary
    /// is missing, naming the package to install.
    pub async fn start() -> Result<EtcdServer, String> {
        let bin = etcd_binary().ok_or_else(|| {
            "etcd binary not found (looked at $ETCD_BIN, /usr/bin/etcd and PATH); \
             install Debian's etcd-server (apt-get install -y etcd-server)"
                .to_string()
        })?;
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skiff-store-etcd-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("etcd.log"))
            .map_err(|e| format!("creating etcd log in {}: {e}", dir.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("duplicating etcd log handle: {e}"))?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(&bin)
            .arg("--name=skiff-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=skiff-test={peer}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut server = EtcdServer {
            child,
            dir,
            endpoint: client,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "etcd exited during start-up ({status}); log:\n{}",
                    self.log_tail()
                ));
            }
            if self.answers().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd at {} not ready after {START_TIMEOUT:?}; log:\n{}",
                    self.endpoint,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether etcd answers a read within two seconds.
    async fn answers(&self) -> bool {
        let opts = ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
        };
        match EtcdClient::new(std::slice::from_ref(&self.endpoint), &opts) {
            Ok(client) => {
                let probe = RangeRequest {
                    key: b"/".to_vec(),
                    count_only: true,
                    ..Default::default()
                };
                client.range(probe).await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// `http://127.0.0.1:PORT`, for `EtcdStore::connect` or `--datastore-endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The data directory (etcd's files and `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
