//! The shim's live streams for attach: the container's stdin (a pipe the shim holds, or the
//! master side of its terminal) and the clients of the attach socket (protocol in attach.rs).
//!
//! Output the shim reads from the container goes to the log (process.rs) and, through
//! [`Hub::broadcast`], to every client that asked for that stream; input from clients goes
//! to stdin. Nothing here blocks the shim: every descriptor is non-blocking and driven by
//! the shim's one poll loop. A client that falls [`MAX_BACKLOG`] behind is disconnected
//! rather than slowing the container or its log; input waits (and clients stop being read)
//! while the container does not read its stdin.
//!
//! The decisions — what a hello gets, what the end of a client's input does — are pure
//! functions, tested with tables.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::attach::{encode_chunked, Frame, FrameReader, FromShim, StreamSet, ToShim};
use super::cri_log::Stream;
use super::spec::StdioConfig;

/// Output bytes a client may have queued before it is disconnected.
pub const MAX_BACKLOG: usize = 4 << 20;
/// Input bytes queued for the container's stdin before clients stop being read.
const MAX_PENDING_INPUT: usize = 256 << 10;
/// At most this many clients at once; more are turned away.
const MAX_CLIENTS: usize = 64;
/// How long the shim still tries to hand queued output to clients after the container ended.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// The refusal for `stdin` on a container whose stdin is not kept open.
pub const STDIN_NOT_OPEN: &str =
    "stdin is not open: the container was not started with stdin: true";

/// What a client's hello gets: `Ok` (then `Ready`) or the reason it is refused.
pub fn answer_hello(req: StreamSet, stdio: StdioConfig) -> Result<(), String> {
    if !(req.stdin || req.stdout || req.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    if req.stdin && !stdio.stdin {
        return Err(STDIN_NOT_OPEN.into());
    }
    Ok(())
}

/// What the end of one client's input does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEnd {
    /// stdinOnce: the container's stdin is closed; the client still receives output.
    CloseContainerStdin,
    /// The client's session ends with its input (the container's stdin stays open).
    EndSession,
}

/// containerd's rule: with `stdinOnce` and no terminal the container's stdin is closed
/// after the first session's input ends; otherwise a session ends with its input.
pub fn on_input_end(stdio: StdioConfig) -> InputEnd {
    if stdio.stdin_once && !stdio.tty {
        InputEnd::CloseContainerStdin
    } else {
        InputEnd::EndSession
    }
}

/// What a poll slot of the hub stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Listener,
    Input,
    Client(usize),
}

enum Input {
    /// No stdin (it is /dev/null), or it has been closed.
    Closed,
    Open {
        fd: OwnedFd,
        pending: Vec<u8>,
        close_when_flushed: bool,
    },
}

struct Client {
    sock: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
    /// Set by the hello.
    streams: Option<StreamSet>,
    /// Its input has ended (counted once).
    input_ended: bool,
    /// Flush the queued output, then disconnect.
    ending: bool,
    /// Disconnect now.
    gone: bool,
}

/// The attach side of one shim.
pub struct Hub {
    id: String,
    stdio: StdioConfig,
    listener: Option<UnixListener>,
    socket_path: PathBuf,
    input: Input,
    /// The terminal's master, for window sizes.
    terminal: Option<OwnedFd>,
    clients: Vec<Client>,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Hub {
    /// `input` is the write end of the stdin pipe or a duplicate of the terminal master
    /// (None: stdin is /dev/null); `terminal` the master for resizes.
    pub fn new(
        id: String,
        stdio: StdioConfig,
        listener: UnixListener,
        socket_path: PathBuf,
        input: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
    ) -> io::Result<Hub> {
        listener.set_nonblocking(true)?;
        let input = match input {
            Some(fd) => {
                set_nonblocking(fd.as_raw_fd())?;
                Input::Open {
                    fd,
                    pending: Vec::new(),
                    close_when_flushed: false,
                }
            }
            None => Input::Closed,
        };
        Ok(Hub {
            id,
            stdio,
            listener: Some(listener),
            socket_path,
            input,
            terminal,
            clients: Vec::new(),
        })
    }

    fn pending_input(&self) -> usize {
        match &self.input {
            Input::Open { pending, .. } => pending.len(),
            Input::Closed => 0,
        }
    }

    /// The descriptors to poll this turn, with the events wanted.
    pub fn interest(&self, slots: &mut Vec<(RawFd, i16, Token)>) {
        if let Some(l) = &self.listener {
            slots.push((l.as_raw_fd(), libc::POLLIN, Token::Listener));
        }
        if let Input::Open { fd, pending, .. } = &self.input {
            if !pending.is_empty() {
                slots.push((fd.as_raw_fd(), libc::POLLOUT, Token::Input));
            }
        }
        let read_clients = self.pending_input() < MAX_PENDING_INPUT;
        for (i, c) in self.clients.iter().enumerate() {
            let mut events = 0;
            if read_clients && !c.ending {
                events |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            slots.push((c.sock.as_raw_fd(), events, Token::Client(i)));
        }
    }

    /// Handles what poll reported for one of this hub's slots.
    pub fn ready(&mut self, token: Token, revents: i16) {
        match token {
            Token::Listener => self.accept(),
            Token::Input => self.flush_input(),
            Token::Client(i) if i < self.clients.len() => {
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_client(i);
                }
                if revents & libc::POLLOUT != 0 {
                    flush_client(&mut self.clients[i]);
                }
            }
            Token::Client(_) => {}
        }
    }

    /// Drops disconnected clients; call after handling a poll turn (indices change).
    pub fn sweep(&mut self) {
        let mut ended_input = false;
        for c in self.clients.iter().filter(|c| c.gone) {
            // A client that vanished with its input still open ends that input.
            if c.streams.is_some_and(|s| s.stdin) && !c.input_ended {
                ended_input = true;
            }
        }
        self.clients.retain(|c| !c.gone);
        if ended_input && on_input_end(self.stdio) == InputEnd::CloseContainerStdin {
            self.close_input();
        }
    }

    /// Queues output for every client that asked for `stream` (a terminal's output is
    /// stdout).
    pub fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut framed: Option<Vec<u8>> = None;
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            let wants = c.streams.is_some_and(|s| match stream {
                Stream::Stdout => s.stdout,
                Stream::Stderr => s.stderr,
            });
            if !wants {
                continue;
            }
            let bytes = framed.get_or_insert_with(|| match stream {
                Stream::Stdout => encode_chunked(data, FromShim::Stdout),
                Stream::Stderr => encode_chunked(data, FromShim::Stderr),
            });
            if c.out.len() + bytes.len() > MAX_BACKLOG {
                eprintln!(
                    "skiff shim {}: an attach client fell {} bytes behind: disconnected",
                    self.id,
                    c.out.len()
                );
                c.gone = true;
                continue;
            }
            c.out.extend_from_slice(bytes);
            flush_client(c);
        }
    }

    /// The container has ended: stop listening, hand queued output to clients (for a
    /// bounded time) and disconnect them.
    pub fn shutdown(mut self) {
        self.listener = None;
        let _ = std::fs::remove_file(&self.socket_path);
        self.input = Input::Closed;
        let deadline = Instant::now() + FLUSH_AT_EXIT;
        for c in self
            .clients
            .iter_mut()
            .filter(|c| !c.gone && !c.out.is_empty())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = c.sock.set_nonblocking(false);
            let _ = c.sock.set_write_timeout(Some(left));
            let _ = c.sock.write_all(&c.out);
        }
        for c in &self.clients {
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        sock,
                        reader: FrameReader::default(),
                        out: Vec::new(),
                        streams: None,
                        input_ended: false,
                        ending: false,
                        gone: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        eprintln!("skiff shim {}: attach accept: {e}", self.id);
                    }
                    return;
                }
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut buf = [0u8; 32 * 1024];
        // Bounded per turn so one busy client cannot starve the others or the output.
        for _ in 0..8 {
            let c = &mut self.clients[i];
            if c.gone || c.ending {
                return;
            }
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    c.gone = true;
                    return;
                }
                Ok(n) => c.reader.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.gone = true;
                    return;
                }
            }
            loop {
                let message = match self.clients[i].reader.next_message::<ToShim>() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("skiff shim {}: attach client: {e}", self.id);
                        self.clients[i].gone = true;
                        return;
                    }
                };
                self.handle(i, message);
            }
        }
    }

    fn handle(&mut self, i: usize, message: ToShim) {
        let stdio = self.stdio;
        let c = &mut self.clients[i];
        match (c.streams, message) {
            (None, ToShim::Hello(req)) => match answer_hello(req, stdio) {
                Ok(()) => {
                    c.streams = Some(req);
                    c.out
                        .extend_from_slice(&FromShim::Ready { tty: stdio.tty }.encode());
                    flush_client(c);
                }
                Err(reason) => {
                    c.out.extend_from_slice(&FromShim::Refused(reason).encode());
                    c.ending = true;
                    flush_client(c);
                }
            },
            // Anything before the hello, or a second one, is a broken client.
            (None, _) | (Some(_), ToShim::Hello(_)) => c.gone = true,
            (Some(s), ToShim::Stdin(data)) => {
                if s.stdin && !c.input_ended {
                    self.write_input(&data);
                }
            }
            (Some(s), ToShim::CloseStdin) => {
                if s.stdin && !c.input_ended {
                    c.input_ended = true;
                    match on_input_end(stdio) {
                        InputEnd::CloseContainerStdin => self.close_input(),
                        InputEnd::EndSession => {
                            c.ending = true;
                            flush_client(c);
                        }
                    }
                }
            }
            (Some(_), ToShim::Resize { rows, cols }) => {
                if let Some(master) = &self.terminal {
                    if let Err(e) = crate::exec::resize(master, rows, cols) {
                        eprintln!("skiff shim {}: resize: {e}", self.id);
                    }
                }
            }
        }
    }

    fn write_input(&mut self, data: &[u8]) {
        if let Input::Open {
            pending,
            close_when_flushed: false,
            ..
        } = &mut self.input
        {
            pending.extend_from_slice(data);
            self.flush_input();
        }
    }

    /// Closes the container's stdin once what was sent is written (stdinOnce).
    fn close_input(&mut self) {
        if let Input::Open {
            close_when_flushed, ..
        } = &mut self.input
        {
            *close_when_flushed = true;
        }
        self.flush_input();
    }

    fn flush_input(&mut self) {
        let Input::Open {
            fd,
            pending,
            close_when_flushed,
        } = &mut self.input
        else {
            return;
        };
        while !pending.is_empty() {
            match nix::unistd::write(&*fd, pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // EPIPE: the container closed its stdin; later input has nowhere to go.
                    self.input = Input::Closed;
                    return;
                }
            }
        }
        if *close_when_flushed {
            self.input = Input::Closed;
        }
    }
}

/// Writes what a client has queued, as far as its socket takes it.
fn flush_client(c: &mut Client) {
    while !c.out.is_empty() && !c.gone {
        match c.sock.write(&c.out) {
            Ok(0) => c.gone = true,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => c.gone = true,
        }
    }
    if c.ending && c.out.is_empty() {
        c.gone = true;
    }
}

/// poll(2) over `(fd, events)` slots; the `revents` of each (all 0 on timeout or EINTR).
pub fn poll(slots: &[(RawFd, i16)], timeout: Option<Duration>) -> io::Result<Vec<i16>> {
    let mut fds: Vec<libc::pollfd> = slots
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_millis()).unwrap_or(i32::MAX),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of its length.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![0; slots.len()]);
        }
        return Err(e);
    }
    Ok(fds.iter().map(|p| p.revents).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(stdin: bool, stdin_once: bool, tty: bool) -> StdioConfig {
        StdioConfig {
            stdin,
            stdin_once,
            tty,
        }
    }

    fn streams(stdin: bool, stdout: bool, stderr: bool) -> StreamSet {
        StreamSet {
            stdin,
            stdout,
            stderr,
        }
    }

    #[test]
    fn hellos_are_answered_as_the_container_allows() {
        let cases = [
            (
                streams(false, true, true),
                stdio(false, false, false),
                Ok(()),
            ),
            (streams(true, true, false), stdio(true, false, true), Ok(())),
            (
                streams(true, true, true),
                stdio(false, false, false),
                Err(STDIN_NOT_OPEN.to_string()),
            ),
            (
                streams(false, false, false),
                stdio(true, false, false),
                Err("you must specify at least 1 of stdin, stdout, stderr".to_string()),
            ),
        ];
        for (req, config, want) in cases {
            assert_eq!(answer_hello(req, config), want, "{req:?} {config:?}");
        }
    }

    #[test]
    fn the_end_of_input_follows_containerd() {
        let cases = [
            (stdio(true, false, false), InputEnd::EndSession),
            (stdio(true, true, false), InputEnd::CloseContainerStdin),
            (stdio(true, true, true), InputEnd::EndSession),
            (stdio(true, false, true), InputEnd::EndSession),
        ];
        for (config, want) in cases {
            assert_eq!(on_input_end(config), want, "{config:?}");
        }
    }
}
