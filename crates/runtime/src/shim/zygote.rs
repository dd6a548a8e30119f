//! The shim launcher: one single-threaded `<binary> container-shim --zygote <dir>` process per
//! [`ShimClient`](super::ShimClient), started at its first container, that forks a shim for
//! each container it is asked for. A shim then starts as a copy of a process that has
//! already been exec'd, dynamically linked and relocated, instead of exec'ing the whole
//! binary again: ~2 ms of CPU and ~500 page faults less per container (BENCHMARKS.md,
//! session 11), the larger part of a shim's own start.
//!
//! Protocol: a SOCK_SEQPACKET socket pair; the launcher's end is its stdin. Each request
//! is one message: the state directory (bytes of an absolute path) with two descriptors,
//! the handshake pipe's write end (the shim's stdout) and the shim's log (its stderr). The
//! launcher forks; the child becomes the shim exactly as a freshly exec'd one would after
//! its detaching fork (own session, those descriptors as stdio, nothing else open) and
//! runs [`super::process`]'s shim; the launcher closes its copies and waits for the next
//! request. Nothing is answered: the handshake pipe says what became of the container
//! (end of file if the shim died first). Shims are not the launcher's business after the
//! fork: it ignores SIGCHLD (the kernel reaps them), they outlive it, and it exits when the
//! agent's end closes. Any failure to reach it makes the client spawn that shim directly.
//!
//! At its start the launcher makes the template mount namespace for the directory it is
//! named after ([`super::template`]); each shim it forks inherits a handle on it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::process::SHIM_SUBCOMMAND;
use super::state::{Handshake, StartErrorKind};
use super::template::{self, Template};

/// The launcher's template namespace, made before its first fork; each shim it forks
/// starts with this copy of it and takes it ([`take_template`]).
static TEMPLATE: std::sync::Mutex<Option<Template>> = std::sync::Mutex::new(None);

/// The argument (after `container-shim`, before a directory) that makes the process a
/// launcher.
pub const ZYGOTE_ARG: &str = "--zygote";

/// Longest state directory path a request carries.
const MAX_REQUEST: usize = 4096;

/// The agent's side: the launcher process and its socket.
#[derive(Debug)]
pub(crate) struct Zygote {
    socket: OwnedFd,
    child: Child,
}

impl Zygote {
    /// Starts a launcher; `shims_under` (the directory its shims' state directories are
    /// in) goes on its command line, which its shims inherit where they cannot set their
    /// own (without CAP_SYS_RESOURCE), so tools that look for the processes of a node's
    /// data directory find them all.
    pub(crate) fn spawn(binary: &Path, shims_under: &Path) -> std::io::Result<Zygote> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let child = Command::new(binary)
            .arg(SHIM_SUBCOMMAND)
            .arg(ZYGOTE_ARG)
            .arg(shims_under)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .current_dir("/")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("NOTIFY_SOCKET")
            // As for a directly spawned shim (client.rs): mimalloc's lazy arena commit.
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .spawn()?;
        Ok(Zygote {
            socket: ours,
            child,
        })
    }

    /// Asks for a shim for `state_dir`; its stdout is `handshake`, its stderr `log`.
    pub(crate) fn launch(
        &self,
        state_dir: &Path,
        handshake: &OwnedFd,
        log: &File,
    ) -> std::io::Result<()> {
        let path = state_dir.as_os_str().as_bytes();
        if path.len() > MAX_REQUEST {
            return Err(std::io::Error::other("state directory path too long"));
        }
        let fds = [handshake.as_raw_fd(), log.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(path)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        if sent != path.len() {
            return Err(std::io::Error::other("short write to the shim launcher"));
        }
        Ok(())
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The launcher's life (called from `run_shim`, before any thread exists); never returns.
/// `run` is the shim proper, given its state directory; it returns the exit code. `under`
/// is the directory the launcher is named after (the agent's pods directory).
pub(crate) fn run_zygote(run: fn(PathBuf) -> i32, under: PathBuf) -> ! {
    // Shims exit on their own schedule: let the kernel reap them.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    match template::make(&under) {
        Ok(t) => *TEMPLATE.lock().unwrap_or_else(|p| p.into_inner()) = Some(t),
        Err(e) => eprintln!(
            "skiff shim launcher: no template mount namespace for {}: {e}",
            under.display()
        ),
    }
    let socket: RawFd = 0;
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let (len, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                socket,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("skiff shim launcher: receiving: {e}");
                    std::process::exit(1);
                }
            };
            let mut fds: Vec<OwnedFd> = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        // SAFETY: the kernel just installed these descriptors in this
                        // process; nothing else owns them.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
            }
            (msg.bytes, fds)
        };
        if len == 0 && fds.is_empty() {
            // The agent's end is closed: it is gone.
            std::process::exit(0);
        }
        let [handshake, log] = match <[OwnedFd; 2]>::try_from(fds) {
            Ok(pair) => pair,
            Err(_) => continue,
        };
        let state_dir = PathBuf::from(OsString::from_vec(buf[..len].to_vec()));
        // SAFETY: this process is single-threaded (it never starts a thread), so the child
        // may run anything.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                become_shim(&state_dir, handshake, log);
                std::process::exit(run(state_dir));
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => {}
            Err(e) => {
                let failed = Handshake::Failed {
                    kind: StartErrorKind::Other,
                    message: format!("shim launcher: fork: {e}"),
                };
                if let Ok(mut line) = serde_json::to_vec(&failed) {
                    line.push(b'\n');
                    let _ = nix::unistd::write(&handshake, &line);
                }
            }
        }
        // The parent's copies close here.
    }
}

/// In the forked child: what a freshly exec'd shim is after its detaching fork. Signal
/// dispositions back to the defaults (libcontainer waits for its children), a session of
/// its own, stdio from the request, every other descriptor closed, and the command line
/// `container-shim <state_dir>` that tools look for.
fn become_shim(state_dir: &Path, handshake: OwnedFd, log: OwnedFd) {
    // SAFETY: restoring the default disposition installs no handler.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    let _ = nix::unistd::setsid();
    let null = File::options().read(true).open("/dev/null");
    if let Ok(null) = &null {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
    }
    let _ = nix::unistd::dup2(handshake.as_raw_fd(), 1);
    let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    drop((handshake, log, null));
    // Every descriptor above stdio but the template's: the launcher's socket copies, which
    // the shim must not hold.
    let keep = TEMPLATE
        .lock()
        .ok()
        .and_then(|t| t.as_ref().map(|t| t.ns.as_raw_fd() as u32));
    let ranges = match keep {
        Some(fd) if fd > 3 => vec![(3, fd - 1), (fd + 1, u32::MAX)],
        Some(3) => vec![(4, u32::MAX)],
        _ => vec![(3, u32::MAX)],
    };
    for (first, last) in ranges {
        // SAFETY: close_range only closes descriptors.
        unsafe {
            libc::syscall(libc::SYS_close_range, first, last, 0u32);
        }
    }
    set_command_line(state_dir);
}

/// In a shim: the template its launcher made, taken out so that it closes once the shim
/// is done with it. None for a shim spawned directly or when the launcher has none.
pub(crate) fn take_template() -> Option<Template> {
    TEMPLATE.lock().ok()?.take()
}

/// Points /proc/self/cmdline at `<binary> container-shim <state_dir>`, as a directly spawned
/// shim shows (needs CAP_SYS_RESOURCE).
fn set_command_line(state_dir: &Path) {
    let binary = std::env::args_os().next().unwrap_or_default();
    let mut args: Vec<u8> = Vec::new();
    for a in [
        binary.as_bytes(),
        SHIM_SUBCOMMAND.as_bytes(),
        state_dir.as_os_str().as_bytes(),
    ] {
        args.extend_from_slice(a);
        args.push(0);
    }
    // Lives as long as the process: the kernel reads the command line from it.
    let args: &'static mut [u8] = args.leak();
    let start = args.as_ptr() as libc::c_ulong;
    let end = start + args.len() as libc::c_ulong;
    // SAFETY: PR_SET_MM_ARG_START/END take addresses of memory this process keeps mapped
    // (leaked above); the kernel checks them. Every argument is passed as an unsigned long
    // (the kernel reads five of them). Start and end must stay ordered after each call, so
    // when the new range lies above the old one the end has to move first: both orders are
    // tried.
    let zero: libc::c_ulong = 0;
    let set = |what: libc::c_ulong, at: libc::c_ulong| unsafe {
        libc::prctl(libc::PR_SET_MM, what, at, zero, zero)
    };
    let (arg_start, arg_end) = (
        libc::PR_SET_MM_ARG_START as libc::c_ulong,
        libc::PR_SET_MM_ARG_END as libc::c_ulong,
    );
    // Without the capability the launcher's command line stays, which names the directory.
    let _ = (set(arg_start, start) == 0 && set(arg_end, end) == 0)
        || (set(arg_end, end) == 0 && set(arg_start, start) == 0);
}
