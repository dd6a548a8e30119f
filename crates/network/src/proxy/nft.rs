//! The side effect: a batch of commands fed to `nft -f -` on stdin. nft applies a file as
//! one kernel transaction, so a batch either takes effect entirely or not at all and the
//! previous rules keep serving.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::ProxyError;

/// The `nft` program.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: PathBuf,
}

impl Nft {
    /// `nft` from PATH, else Debian's `/usr/sbin/nft` (root's PATH may lack /usr/sbin).
    pub fn find() -> Option<Nft> {
        let from_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nft"))
                .find(|p| p.is_file())
        });
        from_path
            .or_else(|| {
                ["/usr/sbin/nft", "/sbin/nft"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .map(|binary| Nft { binary })
    }

    pub fn at(binary: impl AsRef<Path>) -> Nft {
        Nft {
            binary: binary.as_ref().to_path_buf(),
        }
    }

    /// Applies `batch` atomically.
    pub async fn apply(&self, batch: &str) -> Result<(), ProxyError> {
        let mut child = tokio::process::Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProxyError::Nft(format!("running {}: {e}", self.binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as nft's own failure below.
            let _ = stdin.write_all(batch.as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| ProxyError::Nft(format!("waiting for {}: {e}", self.binary.display())))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first_error: String = stderr.lines().take(6).collect::<Vec<_>>().join("\n");
        Err(ProxyError::Nft(format!(
            "nft -f - ({} lines) failed with {}: {}",
            batch.lines().count(),
            out.status,
            first_error.trim()
        )))
    }

    /// Runs `nft <args>` and returns its output (for cleanup and diagnostics).
    pub fn run_blocking(&self, args: &[&str]) -> Result<String, ProxyError> {
        let out = std::process::Command::new(&self.binary)
            .args(args)
            .output()
            .map_err(|e| ProxyError::Nft(format!("running {}: {e}", self.binary.display())))?;
        if !out.status.success() {
            return Err(ProxyError::Nft(format!(
                "nft {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch with one bad line changes nothing: the rules before it keep serving.
    /// Needs root and nft(8); skipped otherwise.
    #[tokio::test]
    async fn a_failed_batch_leaves_the_previous_rules() {
        // SAFETY: geteuid has no preconditions.
        let (Some(nft), true) = (Nft::find(), unsafe { libc::geteuid() } == 0) else {
            eprintln!("skipped: needs root and nft");
            return;
        };
        let table = format!("skiff-unit-{}", std::process::id());
        nft.apply(&format!(
            "add table ip {table}\nadd chain ip {table} kept\n"
        ))
        .await
        .unwrap();
        let err = nft
            .apply(&format!(
                "add chain ip {table} half\nflush chain ip {table} kept\nadd rule ip {table} nosuchchain accept\n"
            ))
            .await
            .unwrap_err();
        let listed = nft.run_blocking(&["list", "table", "ip", &table]).unwrap();
        nft.run_blocking(&["delete", "table", "ip", &table])
            .unwrap();
        assert!(err.to_string().contains("nosuchchain"), "{err}");
        assert!(listed.contains("chain kept"), "{listed}");
        assert!(!listed.contains("chain half"), "{listed}");
    }
}
