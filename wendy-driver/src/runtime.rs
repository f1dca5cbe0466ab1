//! What a driver needs from an async runtime, and nothing more (quinn's `Runtime` is the
//! model): spawning, timers, and TCP listening, dialling, reading and writing.
//!
//! Everything else, the node task, its handle, reading the sockets, the connections' writers, is
//! written once in this crate over these traits. An adapter (`wendy-tokio`, `wendy-smol`)
//! implements them in a hundred or two lines.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// A boxed future the runtime runs to completion.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An async runtime, as the driver uses it. Cheap to clone.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A listening TCP socket.
    type Listener: Listener<Socket = Self::Socket>;
    /// A connected TCP socket.
    type Socket: Socket;
    /// A resettable timer.
    type Timer: Timer;

    /// The runtime the caller runs on; an error if it runs on none this runtime can use.
    fn current() -> io::Result<Self>;
    /// Runs `future` to completion on the runtime, detached: the driver keeps its own
    /// [`Task`](crate::Task) handle to cancel it.
    fn spawn(&self, future: BoxFuture<()>);
    /// A timer that fires at `at`.
    fn timer(&self, at: Instant) -> Self::Timer;
    /// Binds a listening socket.
    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener>;
    /// Dials `addr` (without a timeout: the driver adds one).
    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<Self::Socket>>;
}

/// A timer: fires once its instant has passed, and can be moved.
pub trait Timer: Send + Unpin + 'static {
    /// Fires at `at` instead.
    fn reset(&mut self, at: Instant);
    /// Ready once the instant has passed.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A listening TCP socket.
pub trait Listener: Send + Sync + 'static {
    /// The sockets it accepts.
    type Socket: Socket;
    /// Accepts a connection.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Socket, SocketAddr)>>;
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A connected TCP socket, read by the node task and written by it or by a writer task,
/// hence `&self` everywhere.
pub trait Socket: Send + Sync + 'static {
    /// Reads into `buf`; `Ok(0)` at the end of the stream. When `Pending`, `cx`'s waker is woken
    /// once the socket may be readable (the node task reads each socket with a waker of its
    /// own).
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`.
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Writes what the socket takes now, without waiting (`WouldBlock` if nothing).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Disables Nagle's algorithm (frames are batched by the driver already).
    fn set_nodelay(&self) -> io::Result<()>;
}

/// Waits until `at`.
pub(crate) async fn sleep_until<R: Runtime>(rt: &R, at: Instant) {
    let mut timer = rt.timer(at);
    std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
}

/// Runs `fut`, giving up with `TimedOut` at `deadline`.
pub(crate) async fn timeout<R: Runtime, T>(
    rt: &R,
    deadline: Instant,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let mut timer = rt.timer(deadline);
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match timer.poll_elapsed(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
