//! Runs a [`wendy_proto`] Pastry node over Tokio TCP sockets and timers.
//!
//! This crate is a thin adapter: the node task, the handle, the reading of the sockets and
//! the connections' writers are written once in `wendy-driver` over its [`Runtime`](wendy_driver::Runtime) trait; this crate implements
//! that trait with Tokio and names [`NodeHandle`] for it. `wendy-smol` does the same over smol,
//! with the same API.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wendy_driver::generate_identity;
//! use wendy_proto::Config;
//! use wendy_tokio::{NodeEvent, NodeHandle};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: SocketAddr = "127.0.0.1:0".parse()?; // port 0: the OS picks
//! // Each node's id is derived from its static key (persist `Identity::secret` to keep it).
//! let mut a = NodeHandle::start(Config::new(generate_identity()?, addr)).await?;
//! let b = NodeHandle::start(Config::new(generate_identity()?, addr)).await?;
//! b.join(&[a.local_addr()]).await?; // resolves when b has joined a's ring
//! b.send(a.id(), 16, &b"hello"[..]).await?; // resolves with the node's verdict on it
//! while let Some(ev) = a.next_event().await {
//!     if let NodeEvent::Deliver(d) = ev {
//!         assert_eq!(&d.payload[..], b"hello");
//!         break;
//!     }
//! }
//! b.leave().await; // announced to the ring, then stopped
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use wendy_driver::runtime::{self, BoxFuture};

pub use wendy_driver::{Error, Events, Forwarded, Metrics, NodeEvent, Options, Sender};
pub use wendy_proto;
pub use wendy_proto::{
    CommandError, Config, Delivery, Event, ForwardHook, Forwarding, Node, NodeError, NodeId, NodeInfo, Stats, Target,
};

/// A running node on Tokio. Create one with [`NodeHandle::start`] inside a Tokio runtime.
pub type NodeHandle = wendy_driver::NodeHandle<Tokio>;

/// The Tokio runtime the node was started on, as `wendy-driver` uses it.
#[derive(Clone, Debug)]
pub struct Tokio(tokio::runtime::Handle);

impl runtime::Runtime for Tokio {
    type Listener = Listener;
    type Socket = Socket;
    type Timer = Timer;

    fn current() -> io::Result<Self> {
        tokio::runtime::Handle::try_current()
            .map(Tokio)
            .map_err(|e| io::Error::other(format!("wendy-tokio needs a Tokio runtime: {e}")))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        // Detached: the driver holds its own handle on the task, and the runtime frees the
        // task as soon as it ends.
        drop(self.0.spawn(future));
    }

    fn timer(&self, at: Instant) -> Timer {
        let _guard = self.0.enter();
        Timer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let _guard = self.0.enter();
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        Ok(Listener(TcpListener::from_std(std)?))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<Socket>> {
        Box::pin(async move { TcpStream::connect(addr).await.map(Socket) })
    }
}

/// A Tokio timer.
#[derive(Debug)]
pub struct Timer(Pin<Box<tokio::time::Sleep>>);

impl runtime::Timer for Timer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// A Tokio listening socket.
#[derive(Debug)]
pub struct Listener(TcpListener);

impl runtime::Listener for Listener {
    type Socket = Socket;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Socket, SocketAddr)>> {
        self.0.poll_accept(cx).map_ok(|(s, a)| (Socket(s), a))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A Tokio TCP socket.
#[derive(Debug)]
pub struct Socket(TcpStream);

impl runtime::Socket for Socket {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.0.set_nodelay(true)
    }
}
