//! The HTTP server: accepts connections and serves each with hyper, bounding how long a
//! client may hold a connection without making progress.
//!
//! poem's own server keeps a connection as long as the client likes: an idle keep-alive
//! connection, or one that sends half a request and stalls, stays open for ever, so a few
//! thousand of them exhaust the server's file descriptors. This accept loop serves the same
//! poem endpoint through hyper and watches each connection:
//!
//! - **headers**: from connecting (or from the first byte of a later request on a kept-alive
//!   connection), the request's head must be complete within the header timeout;
//! - **idle**: between requests, a kept-alive connection may wait for the next one for the
//!   idle timeout;
//! - **body**: the request envelope (`middleware.rs`) gives the body its own timeout and
//!   answers 408.
//!
//! A request being handled is never timed out here: a command with `wait: true` may take up to
//! its `timeout_ms`. The watch is a deadline on the connection's reads, so a connection that is
//! past it fails its next read and hyper closes it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use crate::config::HttpTimeouts;

/// The body type poem converts its responses into for hyper.
type ResponseBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, asks every
/// connection to finish its request in flight and close, and waits up to `grace` for them.
pub async fn serve(
    listener: TcpListener,
    app: impl Endpoint + 'static,
    timeouts: HttpTimeouts,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let app = Arc::new(app);
    let local = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = Connection {
                        app: app.clone(),
                        local,
                        peer,
                        timeouts,
                    };
                    connections.spawn(connection.serve(stream, stopping.clone()));
                }
                // Out of file descriptors, most likely: the connections we hold will close by
                // their own timeouts, so wait a moment rather than spin.
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP connections still open {} s after the shutdown signal; closing them",
            grace.as_secs()
        );
    }
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Connection<E> {
    app: Arc<E>,
    local: SocketAddr,
    peer: SocketAddr,
    timeouts: HttpTimeouts,
}

impl<E: Endpoint + 'static> Connection<E> {
    async fn serve(self, stream: TcpStream, mut stopping: watch::Receiver<bool>) {
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ConnectionClock::new(self.timeouts, Instant::now()));
        let io = WatchedIo::new(stream, clock.clone());
        let local = LocalAddr(Addr::SocketAddr(self.local));
        let remote = RemoteAddr(Addr::SocketAddr(self.peer));
        let app = self.app;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let clock = clock.clone();
            let request = Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
            async move {
                let _in_flight = clock.request_started();
                let response = app.get_response(request).await;
                Ok::<_, Infallible>(hyper::Response::<ResponseBody>::from(response))
            }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(peer = %self.peer, error = %err, "HTTP connection ended");
                }
                return;
            }
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}

/// Where a connection is between requests, and so how long its next read may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight since `since`; `head_started` once a byte of the next one came.
    Waiting {
        since: Instant,
        head_started: Option<Instant>,
    },
    /// This many requests are being handled (more than one only on HTTP/2).
    Busy(usize),
}

/// The timing state of one connection, shared by its reads and its requests.
struct ConnectionClock {
    timeouts: HttpTimeouts,
    phase: Mutex<Phase>,
}

impl ConnectionClock {
    /// A new connection owes its first request's head within the header timeout.
    fn new(timeouts: HttpTimeouts, connected: Instant) -> ConnectionClock {
        ConnectionClock {
            timeouts,
            phase: Mutex::new(Phase::Waiting {
                since: connected,
                head_started: Some(connected),
            }),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The state is a plain value: one poisoned by a panic elsewhere is still consistent.
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes arrived: the first after a request ends starts the next request's header clock.
    fn bytes_arrived(&self, now: Instant) {
        let mut phase = self.phase();
        if let Phase::Waiting {
            since,
            head_started: None,
        } = *phase
        {
            *phase = Phase::Waiting {
                since,
                head_started: Some(now),
            };
        }
    }

    /// A request's head is complete and it is being handled, until the guard drops.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Waiting { .. } => Phase::Busy(1),
        };
        InFlight(self.clone())
    }

    fn request_finished(&self, now: Instant) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Waiting {
                since: now,
                head_started: None,
            },
        };
    }

    /// When a read that is still waiting must give up; `None` while a request is handled.
    fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Busy(_) => None,
            Phase::Waiting {
                head_started: Some(started),
                ..
            } => Some(started + self.timeouts.header),
            Phase::Waiting {
                since,
                head_started: None,
            } => Some(since + self.timeouts.idle),
        }
    }
}

/// Marks a request in flight for as long as it lives.
struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// The connection's socket, whose reads fail once the connection's deadline has passed.
struct WatchedIo {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    timer: Pin<Box<Sleep>>,
    /// The deadline `timer` is set to.
    armed: Option<Instant>,
}

impl WatchedIo {
    fn new(stream: TcpStream, clock: Arc<ConnectionClock>) -> WatchedIo {
        WatchedIo {
            stream,
            clock,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.clock.bytes_arrived(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                let Some(deadline) = self.clock.deadline() else {
                    return Poll::Pending;
                };
                if self.armed != Some(deadline) {
                    self.timer.as_mut().reset(deadline);
                    self.armed = Some(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent no complete request in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: HttpTimeouts = HttpTimeouts {
        header: Duration::from_secs(10),
        body: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    #[test]
    fn a_new_connection_owes_its_first_head_within_the_header_timeout() {
        let t0 = Instant::now();
        let clock = ConnectionClock::new(TIMEOUTS, t0);
        assert_eq!(clock.deadline(), Some(t0 + TIMEOUTS.header));
        // Bytes of that head do not move the deadline: slow headers still time out.
        clock.bytes_arrived(t0 + Duration::from_secs(5));
        assert_eq!(clock.deadline(), Some(t0 + TIMEOUTS.header));
    }

    #[test]
    fn a_request_in_flight_has_no_deadline_and_after_it_the_idle_timeout_runs() {
        let t0 = Instant::now();
        let clock = Arc::new(ConnectionClock::new(TIMEOUTS, t0));
        let request = clock.request_started();
        assert_eq!(clock.deadline(), None);
        drop(request);
        let idle_deadline = clock.deadline().unwrap();
        assert!(idle_deadline >= t0 + TIMEOUTS.idle);
    }

    #[test]
    fn the_first_byte_of_the_next_request_starts_its_header_clock() {
        let t0 = Instant::now();
        let clock = Arc::new(ConnectionClock::new(TIMEOUTS, t0));
        clock.request_started();
        let next = t0 + Duration::from_secs(30);
        clock.bytes_arrived(next);
        assert_eq!(clock.deadline(), Some(next + TIMEOUTS.header));
    }

    #[test]
    fn two_requests_in_flight_keep_the_connection_busy_until_both_end() {
        let t0 = Instant::now();
        let clock = Arc::new(ConnectionClock::new(TIMEOUTS, t0));
        let first = clock.request_started();
        let second = clock.request_started();
        drop(first);
        assert_eq!(clock.deadline(), None);
        drop(second);
        assert!(clock.deadline().is_some());
    }
}
