//! A pod's network namespace, kept alive by a bind mount of its nsfs file onto a regular file
//! (like `ip netns add`), so it outlives any process and the containers join it by path.
//!
//! No thread of the caller ever changes namespace: creating one unshares on a dedicated
//! thread, and `run_in` enters one on a dedicated thread, both of which end afterwards.
//! Sockets keep the namespace they were created in, so a socket made inside `run_in` (a
//! connection to a pod's 127.0.0.1 for port-forward or a probe) can be returned and used
//! from any thread.
//!
//! The bind mount is copied into any mount namespace created while it exists; a copy that is
//! not unmounted there keeps the namespace alive after `remove`. Containers do not keep one
//! (their runtime pivots away from the host's mounts), but the directory holding these files
//! is best a dedicated one, as `/run/netns` is for `ip netns`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;

use super::{io_err, mounts, on_fresh_thread, SandboxError};

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Creates a network namespace bound at `path` (a file it creates, with its parent
/// directories) with the loopback interface up. Anything half-made is undone on error.
pub fn create(path: &Path) -> Result<(), SandboxError> {
    if is_netns(path) {
        return Err(SandboxError::NetnsExists {
            path: path.to_path_buf(),
        });
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    let created = match created {
        Ok(_) => true,
        // A leftover empty file from an interrupted create is reused.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err("create", path)(e)),
    };
    let result = on_fresh_thread("netns-create", || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io_err("unshare netns for", path))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(
            Some(own.as_str()),
            path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io_err("bind mount netns onto", path))?;
        set_interface_up("lo").map_err(io_err("bring up lo in", path))
    })
    .and_then(|inner| inner);
    if result.is_err() {
        let _ = mounts::detach_all(path);
        if created {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

/// Unmounts the namespace at `path` and removes the file; Ok when already gone. The namespace
/// itself ends when no process is in it any more.
pub fn remove(path: &Path) -> Result<(), SandboxError> {
    mounts::detach_all(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Whether `path` is a (bind-mounted) network namespace: on nsfs, and of type net.
pub fn is_netns(path: &Path) -> bool {
    let on_nsfs = nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    on_nsfs
        && std::fs::File::open(path).is_ok_and(|file| {
            // SAFETY: NS_GET_NSTYPE takes no argument and returns the CLONE_NEW* type.
            let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
            kind == libc::CLONE_NEWNET
        })
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path`, and returns
/// its result (a panic in `f` is resumed here). Blocks the caller until `f` returns: async
/// callers wrap it in `spawn_blocking`.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, SandboxError> {
    let file = std::fs::File::open(path).map_err(io_err("open netns", path))?;
    on_fresh_thread("netns-run", move || {
        nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(io_err("enter netns", path))?;
        Ok(f())
    })?
}

/// Whether interface `name` is up, in the calling thread's network namespace (call it inside
/// `run_in` to ask about a pod's interfaces).
pub fn interface_up(name: &str) -> io::Result<bool> {
    let (_socket, req) = interface_flags(name)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(i32::from(flags) & libc::IFF_UP != 0)
}

/// Sets `IFF_UP` on interface `name` in the calling thread's network namespace.
fn set_interface_up(name: &str) -> io::Result<()> {
    let (socket, mut req) = interface_flags(name)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member; SIOCSIFFLAGS reads the same request.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An AF_INET socket (the handle interface ioctls go through) and the interface's flags.
fn interface_flags(name: &str) -> io::Result<(OwnedFd, libc::ifreq)> {
    let cname = CString::new(name).map_err(io::Error::other)?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is longer than IFNAMSIZ"),
        ));
    }
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket returned a new fd that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: valid socket and a properly sized ifreq with the name set.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((socket, req))
}
