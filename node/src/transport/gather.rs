//! One socket write for what several tasks, woken together, have to send.
//!
//! A leader answers a whole commit batch at once: the event loop completes
//! every waiting write in one turn, and each gRPC answer is its own task.
//! HTTP/2 puts them on a connection's queue one by one, and tokio runs the
//! connection's task right after the first answer (its LIFO slot), so each
//! answer left in its own `writev`. On loopback every such write also runs
//! the receiving side of the TCP stack; at 64 clients that was about one
//! write system call per answer on the leader and two per request in the
//! benchmark client.
//!
//! [`Gathered`] wraps a connection's socket: writes are copied into a buffer,
//! and the first flush after new data lets the task yield once (it wakes
//! itself and returns `Pending`), so the tasks already woken in the same turn
//! add their frames first; the next flush writes everything in one call.
//! The cost when nothing else is queued is one extra poll of the connection
//! task, well under a microsecond. (Netty's flush consolidation and Nagle's
//! algorithm gather for the same reason, the latter by waiting for an ACK,
//! which is what `TCP_NODELAY` turns off.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes buffered before a write must wait for the socket. HTTP/2 frames
/// are at most 16 KiB by default, so a few fit; a snapshot stream is held to
/// this, never buffered whole.
const LIMIT: usize = 256 << 10;

/// A socket whose writes are gathered until the next flush; see the module.
pub struct Gathered<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    sent: usize,
    /// This flush already yielded once.
    yielded: bool,
}

impl<S> Gathered<S> {
    pub fn new(inner: S) -> Gathered<S> {
        Gathered {
            inner,
            buf: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }
}

impl<S: AsyncWrite + Unpin> Gathered<S> {
    /// Writes out the buffer. `Ready(Ok)` only when all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        // A burst (a snapshot stream) should not keep its buffer for the
        // life of the connection.
        if self.buf.capacity() > LIMIT {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Room for more: drains first when the buffer is full.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending() >= LIMIT {
            return self.poll_drain(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Connected> Connected for Gathered<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = std::task::ready!(this.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let n = data.len().min(LIMIT);
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = std::task::ready!(this.poll_room(cx)) {
            return Poll::Ready(Err(e));
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(LIMIT.saturating_sub(n));
            this.buf.extend_from_slice(&b[..take]);
            n += take;
            if take < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if !this.yielded {
                // Behind every task already runnable: woken from inside its
                // own poll, a tokio task goes to the back of the run queue.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Err(e) = std::task::ready!(this.poll_drain(cx)) {
                return Poll::Ready(Err(e));
            }
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = std::task::ready!(this.poll_drain(cx)) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the socket.
    struct Counting {
        out: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            // Takes at most 1000 bytes a call, like a socket with little room.
            let n = data.len().min(1000);
            self.out.extend_from_slice(&data[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_until_a_flush_reach_the_socket_together_and_in_order() {
        let mut g = Gathered::new(Counting {
            out: Vec::new(),
            writes: 0,
        });
        g.write_all(b"one ").await.unwrap();
        let n = g
            .write_vectored(&[io::IoSlice::new(b"two "), io::IoSlice::new(b"three")])
            .await
            .unwrap();
        assert_eq!(n, 9, "a vectored write is taken whole");
        assert_eq!(g.inner.writes, 0, "nothing is written before a flush");
        g.flush().await.unwrap();
        assert_eq!(g.inner.writes, 1);
        assert_eq!(g.inner.out, b"one two three");
        // A flush with nothing new writes nothing.
        g.flush().await.unwrap();
        assert_eq!(g.inner.writes, 1);
    }

    #[tokio::test]
    async fn a_large_write_is_taken_in_pieces_and_arrives_whole() {
        let (a, mut b) = tokio::io::duplex(4096);
        let data: Vec<u8> = (0..3 * LIMIT + 17).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            let mut g = Gathered::new(a);
            g.write_all(&data).await.unwrap();
            g.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, expect);
    }

    #[tokio::test]
    async fn a_flush_yields_once_so_tasks_woken_with_it_write_first() {
        let mut g = Gathered::new(Counting {
            out: Vec::new(),
            writes: 0,
        });
        g.write_all(b"x").await.unwrap();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut g).poll_flush(&mut cx).is_pending());
        assert_eq!(g.inner.writes, 0);
        assert!(Pin::new(&mut g).poll_flush(&mut cx).is_ready());
        assert_eq!(g.inner.writes, 1);
    }
}
