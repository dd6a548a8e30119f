//! Process file descriptors (pidfd_open, pidfd_send_signal, poll): a handle on one process
//! that a recycled pid cannot alias. Used by the shim to notice its container's exit and
//! by the client to signal containers and wait for shims it did not spawn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A pidfd for one process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl PidFd {
    /// Opens a pidfd; `ESRCH` (as `io::ErrorKind::NotFound`-like raw error) if `pid` is gone.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = i32::try_from(ret).map_err(io::Error::other)?;
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Sends `signal` to the process this pidfd refers to.
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: valid pidfd, no siginfo, no flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits until the process exits or `timeout` passes; true if it has exited.
    pub fn wait_exited(&self, timeout: Duration) -> io::Result<bool> {
        let ready = poll_readable(&[self.fd.as_raw_fd()], Some(timeout))?;
        Ok(ready[0])
    }

    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// poll(2) for readability (or hang-up) on `fds`; negative fds are skipped. Returns which are
/// ready; all false on timeout. EINTR counts as a timeout-free wake-up with nothing ready.
pub fn poll_readable(fds: &[i32], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout_ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_millis()).unwrap_or(i32::MAX),
    };
    // SAFETY: pollfds is a valid, exclusively borrowed array of its length.
    let ret = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pollfds
        .iter()
        .map(|p| p.fd >= 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_a_child_exit() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("0.1")
            .spawn()
            .expect("spawn sleep");
        let pidfd = PidFd::open(child.id() as i32).expect("pidfd");
        assert!(pidfd.wait_exited(Duration::from_secs(10)).expect("poll"));
        child.wait().expect("reap");
    }

    #[test]
    fn signals_a_process() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("100")
            .spawn()
            .expect("spawn sleep");
        let pidfd = PidFd::open(child.id() as i32).expect("pidfd");
        assert!(!pidfd.wait_exited(Duration::from_millis(10)).expect("poll"));
        pidfd.send_signal(libc::SIGKILL).expect("kill");
        let status = child.wait().expect("reap");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
