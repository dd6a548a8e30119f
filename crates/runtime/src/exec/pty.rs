//! Terminals for `exec --tty`. [`open_container_pty`] allocates the pty in the container's
//! own devpts instance (reached through /proc/<pid>/root, resolved inside that root), so the
//! process sees its terminal as `/dev/pts/N` as under runc; [`open_pty`] uses the host's.
//! The caller hands the slave to the helper as fds 0, 1 and 2, closes its own copy, talks to
//! the master and forwards window sizes with [`resize`].

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::target;
use super::ExecError;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Unlocks a fresh master and opens its slave through the master (TIOCGPTPEER: no path
/// lookup, so no race with the devpts directory).
fn with_slave(master: OwnedFd) -> io::Result<(OwnedFd, OwnedFd)> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer, which lives across the call.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let slave = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// A pty from the host's /dev/ptmx: `(master, slave)`.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: a plain open of a constant path; the result is checked.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd owned by nobody else.
    with_slave(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pty in the devpts instance of the running container of `state_dir`: `(master, slave)`.
pub fn open_container_pty(state_dir: &Path) -> Result<(OwnedFd, OwnedFd), ExecError> {
    let (target, _) = target::locate(state_dir)?;
    let root_path = format!("/proc/{}/root", target.pid);
    let root_c = CString::new(root_path.clone()).map_err(|e| ExecError::Other(e.to_string()))?;
    // SAFETY: open of a NUL-terminated path; checked below.
    let root = cvt(unsafe {
        libc::open(
            root_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(ExecError::io(format!("opening {root_path}")))?;
    // SAFETY: fresh fd owned by nobody else.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    if !target.alive() {
        return Err(ExecError::NotRunning {
            state_dir: state_dir.to_owned(),
            reason: "it has exited".into(),
        });
    }
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
    // Symlinks the container planted resolve inside its root, never on the host.
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dirfd, path and open_how of the size given.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c"dev/pts/ptmx".as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if ret < 0 {
        return Err(ExecError::io(format!("opening {root_path}/dev/pts/ptmx"))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fd owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(ret as i32) };
    let mut ptn: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int through the pointer: proves this is a ptmx.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut ptn) }).map_err(
        ExecError::io("the container's /dev/pts/ptmx is not a pty multiplexer"),
    )?;
    with_slave(master).map_err(ExecError::io("opening the pty slave"))
}

/// Sets the terminal's window size (the foreground process group gets SIGWINCH).
pub fn resize(master: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer, which lives across the call.
    cvt(unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pty_resizes() {
        let Ok((master, slave)) = open_pty() else {
            eprintln!("skipping: no /dev/ptmx");
            return;
        };
        resize(&master, 40, 120).expect("resize");
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize through the pointer.
        cvt(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) })
            .expect("get size");
        assert_eq!((size.ws_row, size.ws_col), (40, 120));
    }
}
