//! The API's HTTP/1.1 server: hyper, with the timeouts and the connection
//! limit of `[server]`.
//!
//! `axum::serve` sets no header-read timer and no limit, so a client that
//! opens connections and sends a request head a byte at a time (slowloris)
//! could hold every socket. Here:
//!
//! - `header_read_timeout`: hyper closes a connection whose next request
//!   head has not arrived in full this long after the connection opened or
//!   its previous response was sent (with a 408 if part of it came);
//! - `idle_timeout`: a connection with no request in flight that has
//!   received nothing for this long is closed;
//! - `max_connections`: connections past it are answered
//!   `503 too_many_connections` (with `Retry-After`) and closed; past
//!   [`OVERFLOW`] more, they are closed unanswered;
//! - `request_timeout` is the router's (see [`crate::api::guard`]).
//!
//! Only HTTP/1.1 is served: the API needs nothing of HTTP/2, and serving
//! both would mean reading a protocol preface with no timer of its own.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::ApiError;
use crate::config::ServerSection;

/// Connections past `max_connections` that are still answered with a 503
/// (each for at most `header_read_timeout`); beyond these, connections are
/// closed at once, so that a flood costs no more than this.
pub const OVERFLOW: usize = 64;

/// The limits this server applies, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long open connections may finish after shutdown is asked.
    pub shutdown_grace: Duration,
}

impl From<&ServerSection> for Limits {
    fn from(server: &ServerSection) -> Self {
        Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections,
            shutdown_grace: server.shutdown_grace,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests for up to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW));
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to be freed instead of spinning.
                    tracing::warn!("could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small request and response heads should not wait for an ACK.
        let _ = stream.set_nodelay(true);
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            connections.spawn(connection(
                stream,
                router.clone(),
                limits,
                permit,
                closing.clone(),
            ));
        } else if let Ok(permit) = overflow.clone().try_acquire_owned() {
            connections.spawn(refuse(stream, limits, permit));
        } else {
            drop(stream);
        }
    }
    let _ = closing_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("closing connections still open after the shutdown grace period");
    }
}

/// What the idle watchdog of one connection sees.
struct Activity {
    /// When the connection was accepted: the origin of `last_read`.
    start: Instant,
    /// Milliseconds from `start` to the last byte received.
    last_read: AtomicU64,
    /// Requests whose responses have not been sent in full.
    in_flight: AtomicUsize,
    /// Told when `in_flight` changes.
    changed: Notify,
}

impl Activity {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_read.store(now, Ordering::Relaxed);
    }

    /// When the connection counts as idle for too long, or `None` while a
    /// request is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_read.load(Ordering::Relaxed));
        Some(self.start + last + idle)
    }
}

/// Counts one request as in flight until dropped with its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A response that just ended counts as activity: the idle time
        // starts now, not at the request's last byte.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A socket that records when it last received a byte.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn http1(limits: Limits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
}

/// Serves one connection, holding `_permit` (its place under
/// `max_connections`) until it closes.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_read: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: Request<Incoming>| {
            let in_flight = InFlight::new(activity.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                // The request stays in flight until its body is sent in
                // full (or dropped): a log stream is not an idle connection.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &in_flight;
                        frame
                    }))
                }))
            }
        }
    });
    let builder = http1(limits);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closed = false;
    loop {
        let deadline = activity.idle_deadline(limits.idle_timeout);
        let idle = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = idle, if !closed => {
                // Bytes may have come in while this slept: look again.
                if activity
                    .idle_deadline(limits.idle_timeout)
                    .is_some_and(|deadline| deadline <= Instant::now())
                {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
            changed = closing.changed(), if !closed => {
                // Shutting down (or the server is gone): finish the
                // request in flight, if any, and close.
                let _ = changed;
                conn.as_mut().graceful_shutdown();
                closed = true;
            }
        }
    }
}

/// Answers one request on a connection past `max_connections` with a 503,
/// and closes it.
async fn refuse(stream: TcpStream, limits: Limits, _permit: OwnedSemaphorePermit) {
    let max = limits.max_connections;
    let answer = security_headers(Router::new().fallback(move || async move {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "the server already has {max} connections open (`[server] max_connections`); \
                 retry shortly"
            ),
        )
        .retry_after(2)
    }));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        answer.clone().oneshot(request)
    });
    let mut builder = http1(limits);
    builder.keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    // The header timer bounds the wait for the request; this bounds
    // writing the answer to a client that does not read.
    let _ = tokio::time::timeout(limits.header_read_timeout * 2, conn).await;
}

/// Adds the headers every response carries, outermost so that errors and
/// refusals have them too: no content sniffing of a task's log or output,
/// and no copy of a response (a minted token above all) in any cache.
pub fn security_headers<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}
