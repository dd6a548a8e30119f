//! The attach protocol between a shim and its clients (the agent's `attach` handler, tests).
//!
//! Each running container's shim listens on `<state_dir>/attach.sock` (mode 0600, in the
//! agent's root-only state tree). Messages in both directions are framed
//! `[kind: u8][length: u32 big-endian][payload]`. A client first sends [`ToShim::Hello`]
//! naming the streams it wants; the shim answers [`FromShim::Ready`] (saying whether the
//! container has a terminal) or [`FromShim::Refused`] with the reason. Then the client sends
//! stdin bytes, the end of its stdin and window sizes, and receives the container's output
//! produced from then on (never older output: that is in the log). The shim closes every
//! connection once the container has exited and its output is drained.
//!
//! Encoding and decoding are pure; [`connect`] and [`bind`] reach the socket through
//! `/proc/self/fd/<dir>/attach.sock`, so a state directory deeper than a socket address
//! allows (108 bytes) still works without changing the working directory.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket's file name inside a shim state directory.
pub const SOCKET_NAME: &str = "attach.sock";

/// The largest payload a frame may carry; bigger input is cut into several frames.
pub const MAX_PAYLOAD: usize = 1 << 20;

const HEADER: usize = 5;

/// The streams a client asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSet {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Client → shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToShim {
    Hello(StreamSet),
    Stdin(Vec<u8>),
    /// The client's input ended (kubectl's stdin reached EOF).
    CloseStdin,
    Resize {
        rows: u16,
        cols: u16,
    },
}

/// Shim → client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromShim {
    Ready { tty: bool },
    Refused(String),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("attach protocol: unknown message kind {0}")]
    UnknownKind(u8),
    #[error("attach protocol: a message of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("attach protocol: message kind {kind} is malformed: {reason}")]
    Malformed { kind: u8, reason: &'static str },
}

/// A message that can be framed.
pub trait Frame: Sized {
    /// The framed bytes.
    fn encode(&self) -> Vec<u8>;
    fn decode(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError>;
}

const HELLO: u8 = 1;
const STDIN: u8 = 2;
const CLOSE_STDIN: u8 = 3;
const RESIZE: u8 = 4;
const READY: u8 = 0x81;
const REFUSED: u8 = 0x82;
const STDOUT: u8 = 0x83;
const STDERR: u8 = 0x84;

/// Flag bytes carry booleans as bits.
fn bit(flags: u8, n: u8) -> bool {
    flags & (1 << n) != 0
}

impl Frame for ToShim {
    fn encode(&self) -> Vec<u8> {
        match self {
            ToShim::Hello(s) => frame(
                HELLO,
                &[s.stdin as u8 | (s.stdout as u8) << 1 | (s.stderr as u8) << 2],
            ),
            ToShim::Stdin(data) => frame(STDIN, data),
            ToShim::CloseStdin => frame(CLOSE_STDIN, &[]),
            ToShim::Resize { rows, cols } => {
                let [r0, r1] = rows.to_be_bytes();
                let [c0, c1] = cols.to_be_bytes();
                frame(RESIZE, &[r0, r1, c0, c1])
            }
        }
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        let malformed = |reason| ProtocolError::Malformed { kind, reason };
        match kind {
            HELLO => match payload {
                [flags] => Ok(ToShim::Hello(StreamSet {
                    stdin: bit(*flags, 0),
                    stdout: bit(*flags, 1),
                    stderr: bit(*flags, 2),
                })),
                _ => Err(malformed("expected one flag byte")),
            },
            STDIN => Ok(ToShim::Stdin(payload.to_vec())),
            CLOSE_STDIN if payload.is_empty() => Ok(ToShim::CloseStdin),
            CLOSE_STDIN => Err(malformed("expected no payload")),
            RESIZE => match payload {
                [r0, r1, c0, c1] => Ok(ToShim::Resize {
                    rows: u16::from_be_bytes([*r0, *r1]),
                    cols: u16::from_be_bytes([*c0, *c1]),
                }),
                _ => Err(malformed("expected rows and columns")),
            },
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

impl Frame for FromShim {
    fn encode(&self) -> Vec<u8> {
        match self {
            FromShim::Ready { tty } => frame(READY, &[*tty as u8]),
            FromShim::Refused(message) => frame(REFUSED, message.as_bytes()),
            FromShim::Stdout(data) => frame(STDOUT, data),
            FromShim::Stderr(data) => frame(STDERR, data),
        }
    }

    fn decode(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        match kind {
            READY => match payload {
                [flags] => Ok(FromShim::Ready {
                    tty: bit(*flags, 0),
                }),
                _ => Err(ProtocolError::Malformed {
                    kind,
                    reason: "expected one flag byte",
                }),
            },
            REFUSED => Ok(FromShim::Refused(
                String::from_utf8_lossy(payload).into_owned(),
            )),
            STDOUT => Ok(FromShim::Stdout(payload.to_vec())),
            STDERR => Ok(FromShim::Stderr(payload.to_vec())),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Frames bytes (output, or stdin input) as several messages when they exceed
/// [`MAX_PAYLOAD`].
pub fn encode_chunked<F: Frame>(data: &[u8], make: impl Fn(Vec<u8>) -> F) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + HEADER);
    for chunk in data.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&make(chunk.to_vec()).encode());
    }
    out
}

/// Collects bytes from a stream and hands out whole messages.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Where the first message not yet returned starts: consumed bytes are dropped in one
    /// move once they are half the buffer, not per message.
    start: usize,
}

impl FrameReader {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message<F: Frame>(&mut self) -> Result<Option<F>, ProtocolError> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        if rest.len() < HEADER + len {
            return Ok(None);
        }
        let message = F::decode(rest[0], &rest[HEADER..HEADER + len]);
        self.start += HEADER + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        message.map(Some)
    }

    /// Bytes received that do not yet make a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// A short path to `name` in `dir` through an open descriptor of the directory (which must
/// stay open while the path is used).
fn through_fd(dir: &OwnedFd, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open of a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connects to the attach socket of the shim whose state directory is `state_dir`.
/// `NotFound` or `ConnectionRefused` mean no shim serves it (the container has exited).
pub fn connect(state_dir: &Path) -> io::Result<UnixStream> {
    let dir = open_dir(state_dir)?;
    UnixStream::connect(through_fd(&dir, SOCKET_NAME))
}

/// Binds a socket `name` in `dir` (replacing a stale one), readable by root only.
pub(crate) fn bind(dir: &Path, name: &str) -> io::Result<UnixListener> {
    let dir_fd = open_dir(dir)?;
    let path = through_fd(&dir_fd, name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_any_chunking() {
        let to: Vec<ToShim> = vec![
            ToShim::Hello(StreamSet {
                stdin: true,
                stdout: true,
                stderr: false,
            }),
            ToShim::Stdin(b"ls\n".to_vec()),
            ToShim::Stdin(Vec::new()),
            ToShim::Resize {
                rows: 40,
                cols: 300,
            },
            ToShim::CloseStdin,
        ];
        let from: Vec<FromShim> = vec![
            FromShim::Ready { tty: true },
            FromShim::Ready { tty: false },
            FromShim::Refused("no stdin".into()),
            FromShim::Stdout(b"hello\n".to_vec()),
            FromShim::Stderr(b"oops".to_vec()),
        ];
        let to_bytes: Vec<u8> = to.iter().flat_map(Frame::encode).collect();
        let from_bytes: Vec<u8> = from.iter().flat_map(Frame::encode).collect();
        for chunk in [1, 2, 3, 7, 1000] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in to_bytes.chunks(chunk) {
                r.push(piece);
                while let Some(m) = r.next_message::<ToShim>().expect("decode") {
                    got.push(m);
                }
            }
            assert_eq!(got, to, "chunk {chunk}");
            assert_eq!(r.pending(), 0);

            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in from_bytes.chunks(chunk) {
                r.push(piece);
                while let Some(m) = r.next_message::<FromShim>().expect("decode") {
                    got.push(m);
                }
            }
            assert_eq!(got, from, "chunk {chunk}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let cases: [(Vec<u8>, ProtocolError); 4] = [
            (vec![9, 0, 0, 0, 0], ProtocolError::UnknownKind(9)),
            (
                vec![HELLO, 0, 0, 0, 2, 1, 1],
                ProtocolError::Malformed {
                    kind: HELLO,
                    reason: "expected one flag byte",
                },
            ),
            (
                vec![RESIZE, 0, 0, 0, 1, 1],
                ProtocolError::Malformed {
                    kind: RESIZE,
                    reason: "expected rows and columns",
                },
            ),
            (
                vec![STDIN, 0xff, 0, 0, 0],
                ProtocolError::TooLarge(0xff00_0000),
            ),
        ];
        for (bytes, want) in cases {
            let mut r = FrameReader::default();
            r.push(&bytes);
            assert_eq!(
                r.next_message::<ToShim>().expect_err("bad"),
                want,
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn large_output_is_cut_into_frames() {
        let data = vec![7u8; MAX_PAYLOAD * 2 + 10];
        let bytes = encode_chunked(&data, FromShim::Stdout);
        let mut r = FrameReader::default();
        r.push(&bytes);
        let mut total = 0;
        while let Some(FromShim::Stdout(d)) = r.next_message::<FromShim>().expect("decode") {
            total += d.len();
        }
        assert_eq!(total, data.len());
    }

    #[test]
    fn long_directories_are_reached_through_a_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&deep).expect("mkdir");
        let listener = bind(&deep, SOCKET_NAME).expect("bind");
        let mut client = connect(&deep).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        use std::io::{Read, Write};
        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        server.read_exact(&mut b).expect("read");
        assert_eq!(&b, b"x");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(deep.join(SOCKET_NAME))
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
