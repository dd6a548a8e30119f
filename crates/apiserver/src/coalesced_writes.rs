//! Fewer, larger socket writes for a busy connection.
//!
//! Under load one HTTP/2 connection carries many streams at once (the control loops'
//! requests, watch events, responses), and hyper writes and flushes whatever is ready each
//! time its connection task wakes: with TLS, one `writev` per frame batch, ~15 syscalls per
//! scheduled pod on the server (session 15's `perf stat`). `CoalescedWrites` sits between
//! the TLS stream and the socket: writes are kept in memory, and a flush first yields once
//! to the runtime (the task wakes itself and goes to the back of the run queue), so the
//! other tasks that are ready — handlers finishing, watch events being rendered — add
//! their frames before the bytes go out in one write. On an idle runtime the task runs
//! again at once, so a lone response is not held back.
//!
//! Everything written is on the socket once a flush returns Ready, as with the socket
//! itself; what hyper, h2 and `copy_bidirectional` (the upgraded exec/attach streams) do.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write waits for the socket (backpressure for a slow reader).
const HIGH_WATER: usize = 256 * 1024;
/// A buffer that grew past this is released when drained, so idle connections stay small.
const KEEP_CAPACITY: usize = 64 * 1024;

/// An I/O stream whose writes are gathered until a (deferred) flush.
pub struct CoalescedWrites<T> {
    inner: T,
    pending: Vec<u8>,
    written: usize,
    yielded: bool,
}

impl<T> CoalescedWrites<T> {
    pub fn new(inner: T) -> Self {
        CoalescedWrites {
            inner,
            pending: Vec::new(),
            written: 0,
            yielded: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn unwritten(&self) -> usize {
        self.pending.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> CoalescedWrites<T> {
    /// Write out everything held, or Pending with the rest still held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}

/// A client connection (hyper's connectors) tells what the socket under it is.
impl<T: Connection> Connection for CoalescedWrites<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unwritten() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unwritten() >= HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let mut total = 0;
        for b in bufs {
            this.pending.extend_from_slice(b);
            total += b.len();
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unwritten() > 0 {
            if !this.yielded {
                // Let the other ready tasks add their bytes first.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_drain(cx))?;
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_reach_the_peer_in_order_once_flushed() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = CoalescedWrites::new(a);
        w.write_all(b"hello ").await.unwrap();
        w.write_all(b"world").await.unwrap();
        let mut probe = [0u8; 1];
        // Nothing is on the wire before the flush.
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut probe)).await;
        assert!(early.is_err(), "bytes went out before a flush");
        w.flush().await.unwrap();
        let mut got = vec![0u8; 11];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test]
    async fn a_slow_reader_holds_back_the_writer_past_the_high_water_mark() {
        // The peer's pipe takes 1 KiB; nobody reads it.
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = CoalescedWrites::new(a);
        let chunk = vec![7u8; 64 * 1024];
        let writes = async {
            for _ in 0..16 {
                w.write_all(&chunk).await.unwrap();
            }
        };
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(100), writes).await;
        assert!(blocked.is_err(), "1 MiB was accepted with no reader");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_held() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = CoalescedWrites::new(a);
        w.write_all(b"last words").await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
    }
}
