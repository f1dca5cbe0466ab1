//! Runs a [`wendy_proto`] Pastry node over smol (async-io) TCP sockets and timers.
//!
//! This crate is a thin adapter: the node task, the handle, the reading of the sockets and
//! the connections' writers are written once in `wendy-driver` over its [`Runtime`](wendy_driver::Runtime) trait; this crate implements
//! that trait with smol and names [`NodeHandle`] for it. `wendy-tokio` has the same API over
//! Tokio; no Tokio crate is in this crate's dependency tree. Tasks run on smol's global
//! executor (`SMOL_THREADS` sets its thread count).
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wendy_driver::generate_identity;
//! use wendy_proto::Config;
//! use wendy_smol::{NodeEvent, NodeHandle};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: SocketAddr = "127.0.0.1:0".parse()?; // port 0: the OS picks
//! // Each node's id is derived from its static key (persist `Identity::secret` to keep it).
//! let mut a = NodeHandle::start(Config::new(generate_identity()?, addr)).await?;
//! let b = NodeHandle::start(Config::new(generate_identity()?, addr)).await?;
//! b.join(&[a.local_addr()]).await?;
//! b.send(a.id(), 16, &b"hello"[..]).await?;
//! while let Some(ev) = a.next_event().await {
//!     if let NodeEvent::Deliver(d) = ev {
//!         assert_eq!(&d.payload[..], b"hello");
//!         break;
//!     }
//! }
//! b.leave().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use smol::Async;
use wendy_driver::runtime::{self, BoxFuture};

pub use wendy_driver::{Error, Events, Forwarded, Metrics, NodeEvent, Options, Sender};
pub use wendy_proto;
pub use wendy_proto::{
    CommandError, Config, Delivery, Event, ForwardHook, Forwarding, Node, NodeError, NodeId, NodeInfo, Stats, Target,
};

/// A running node on smol's global executor. Create one with [`NodeHandle::start`].
pub type NodeHandle = wendy_driver::NodeHandle<Smol>;

/// smol's global executor and async-io's reactor, as `wendy-driver` uses them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

impl runtime::Runtime for Smol {
    type Listener = Listener;
    type Socket = Socket;
    type Timer = Timer;

    fn current() -> io::Result<Self> {
        Ok(Smol)
    }

    fn spawn(&self, future: BoxFuture<()>) {
        // Detached: the driver holds its own handle on the task.
        smol::spawn(future).detach();
    }

    fn timer(&self, at: Instant) -> Timer {
        Timer(smol::Timer::at(at))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        Async::<TcpListener>::bind(addr).map(Listener)
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<io::Result<Socket>> {
        Box::pin(async move { Async::<TcpStream>::connect(addr).await.map(Socket) })
    }
}

/// An async-io timer.
#[derive(Debug)]
pub struct Timer(smol::Timer);

impl runtime::Timer for Timer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// An async-io listening socket.
#[derive(Debug)]
pub struct Listener(Async<TcpListener>);

impl runtime::Listener for Listener {
    type Socket = Socket;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Socket, SocketAddr)>> {
        loop {
            ready!(self.0.poll_readable(cx))?;
            match self.0.get_ref().accept() {
                Ok((s, a)) => return Poll::Ready(Async::new(s).map(|s| (Socket(s), a))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}

/// An async-io TCP socket.
#[derive(Debug)]
pub struct Socket(Async<TcpStream>);

impl runtime::Socket for Socket {
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.0.poll_readable(cx))?,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.0.get_ref().write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.0.poll_writable(cx))?,
                r => return Poll::Ready(r),
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_ref().write(buf)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.0.get_ref().set_nodelay(true)
    }
}
