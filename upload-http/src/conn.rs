//! What one HTTP connection may cost: a deadline for its first bytes, an
//! idle deadline whenever nothing moves in either direction, and a floor on
//! the transfer rate of a request body or a download. Together with the
//! connection cap in [`crate::server`] and the transfer admission in the
//! handlers, these bound what a client that sends nothing, sends one byte a
//! minute, or never reads can hold on to.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream that fails with `TimedOut` once it has made no progress
/// (no byte read or written) for a while: `first_bytes` before the first
/// byte has been read, `idle` after. The clock starts when an operation has
/// to wait and stops at any progress, so a connection that moves data is
/// never cut, and one that stalls in either direction always is.
pub struct Deadlines<T> {
    inner: T,
    first_bytes: Duration,
    idle: Duration,
    read_any: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadlines<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, first_bytes: Duration, idle: Duration) -> Self {
        Deadlines {
            inner,
            first_bytes,
            idle,
            read_any: false,
            timer: None,
        }
    }

    fn progress(&mut self) {
        self.timer = None;
    }

    /// Books a write's outcome: bytes out are progress, waiting runs the clock.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    /// Called when an operation must wait: starts the clock if it is not
    /// running and reports whether it has run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = if self.read_any {
            self.idle
        } else {
            self.first_bytes
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                if self.read_any {
                    "connection idle too long"
                } else {
                    "client sent nothing"
                },
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.read_any = true;
                    this.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.stalled(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stalled(cx).map(Err),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A floor on a transfer's rate: after a grace period, a transfer must have
/// moved at least `bytes_per_sec` for every second past it (as Apache's
/// `mod_reqtimeout` MinRate). A trickle of one byte every few seconds keeps
/// a connection "active" but not above this floor.
#[derive(Debug, Clone, Copy)]
pub struct RateFloor {
    started: Instant,
    grace: Duration,
    bytes_per_sec: u64,
}

impl RateFloor {
    /// A floor starting now; `bytes_per_sec = 0` disables it.
    pub fn new(grace: Duration, bytes_per_sec: u64) -> Self {
        RateFloor {
            started: Instant::now(),
            grace,
            bytes_per_sec,
        }
    }

    /// The moment by which the transfer must have moved more than `moved`
    /// bytes to stay above the floor; `None` when there is no floor.
    pub fn deadline(&self, moved: u64) -> Option<Instant> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(moved as f64 / self.bytes_per_sec as f64);
        Some(self.started + self.grace + earned)
    }

    /// Whether a transfer that moved `moved` bytes so far is below the floor.
    pub fn is_below(&self, moved: u64) -> bool {
        self.deadline(moved).is_some_and(|d| Instant::now() > d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (_client, server) = tokio::io::duplex(64);
        let mut server = Deadlines::new(
            server,
            Duration::from_millis(100),
            Duration::from_millis(300),
        );
        let mut buf = [0u8; 8];
        let err = server.read(&mut buf).await.expect_err("silence times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Deadlines::new(
            server,
            Duration::from_millis(100),
            Duration::from_millis(300),
        );
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                client.write_all(b"x").await.expect("write");
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
            client
        });
        for _ in 0..5 {
            assert_eq!(server.read(&mut buf).await.expect("read"), 1);
        }
        let _client = talker.await.expect("talker");
        // Now idle: the longer limit applies, then it times out.
        let started = Instant::now();
        let err = server.read(&mut buf).await.expect_err("idle times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_times_out_on_write() {
        let (_client, server) = tokio::io::duplex(16);
        let mut server =
            Deadlines::new(server, Duration::from_millis(50), Duration::from_millis(50));
        let err = server
            .write_all(&[0u8; 1024])
            .await
            .expect_err("blocked write times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn the_rate_floor_earns_time_per_byte() {
        let floor = RateFloor::new(Duration::from_secs(10), 1000);
        let d0 = floor.deadline(0).expect("floor");
        let d1 = floor.deadline(5000).expect("floor");
        assert_eq!(d1 - d0, Duration::from_secs(5));
        assert!(!floor.is_below(0));
        assert!(RateFloor::new(Duration::ZERO, 0).deadline(0).is_none());
        let strict = RateFloor::new(Duration::ZERO, 1_000_000);
        std::thread::sleep(Duration::from_millis(5));
        assert!(strict.is_below(10));
    }
}
