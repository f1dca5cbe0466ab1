//! Runs a [`wendy_proto`] Pastry node over Tokio TCP sockets and timers.
//!
//! This crate is a thin driver: the protocol (routing, joins, failure detection, retries and
//! every timer policy) lives in `wendy-proto`. The driver only moves bytes between sockets and
//! the state machine, runs its timer, and maps the node's [`ConnId`](wendy_proto::ConnId)s to sockets.
//!
//! - one task owns the [`Node`] (no locks on it); it selects over application commands, bytes
//!   from per-connection reader tasks, accepted sockets, connect results and the timer;
//! - one persistent TCP connection per peer, reused for every message;
//! - frames produced while handling a batch of inputs are written together, many per syscall:
//!   straight from the node task when the socket takes them, else by a writer task per
//!   connection;
//! - batches all the way: [`Sender::send_batch`] hands the node many messages in one command,
//!   and [`Events::recv_batch`] takes every event of a round of inputs at once, so that a busy
//!   node costs one task wake-up per batch rather than per message;
//! - queues are bounded: the application's `send` waits while the node has more than
//!   [`Options::max_queued_bytes`] unwritten, and a peer that lets more than
//!   [`Options::max_conn_queue_bytes`] pile up is disconnected.
//!
//! `wendy-smol` has the same API over smol.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use wendy_proto::{Config, NodeId};
//! use wendy_tokio::{NodeEvent, NodeHandle};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: SocketAddr = "127.0.0.1:0".parse()?; // port 0: the OS picks
//! let mut a = NodeHandle::start(Config::new(NodeId::hash(b"a"), addr)).await?;
//! let b = NodeHandle::start(Config::new(NodeId::hash(b"b"), addr)).await?;
//! b.join(a.local_addr()).await?; // resolves when b has joined a's ring
//! b.send(a.id(), 16, &b"hello"[..]).await?;
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

mod driver;

use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;
use wendy_driver::{Command, Inspector, Responder};

pub use wendy_driver::{Error, Events, Forwarded, NodeEvent, Options};
pub use wendy_proto;
pub use wendy_proto::{
    CommandError, Config, Delivery, Event, ForwardHook, Forwarding, Node, NodeError, NodeId, NodeInfo, Stats, Target,
};

/// A one-shot answer from the node task, and where to wait for it.
fn reply<T: Send + 'static>() -> (Responder<T>, oneshot::Receiver<T>) {
    let (tx, rx) = oneshot::channel();
    (
        Box::new(move |v| {
            let _ = tx.send(v);
        }),
        rx,
    )
}

/// A running node. Dropping it stops the node (abruptly: nothing is announced).
///
/// Create one with [`NodeHandle::start`] inside a Tokio runtime.
pub struct NodeHandle {
    sender: Sender,
    info: NodeInfo,
    events: Option<Events>,
    task: JoinHandle<()>,
}

/// A cheap, cloneable handle for sending messages from many tasks. It does not keep the node
/// alive: once the [`NodeHandle`] is dropped, sends fail with [`Error::Stopped`].
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Command>,
    max_payload: usize,
}

impl NodeHandle {
    /// Starts a node with default [`Options`]. See [`NodeHandle::start_with`].
    pub async fn start(config: Config) -> io::Result<NodeHandle> {
        Self::start_with(config, Options::default()).await
    }

    /// Binds `config.info.local` and starts the node task.
    ///
    /// Port 0 means the OS picks a port: the node's local address (and its global address, if
    /// it was the same or has port 0) is set to the bound one, reported by
    /// [`local_addr`](Self::local_addr).
    pub async fn start_with(mut config: Config, options: Options) -> io::Result<NodeHandle> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(config.info.local).await?;
        let bound = listener.local_addr()?;
        wendy_driver::fix_port(&mut config, bound);
        let info = config.info.clone();
        let max_payload = wendy_driver::max_payload(&config);
        let (tx, rx) = mpsc::channel(options.command_capacity.max(1));
        let (ev_tx, ev_rx) = wendy_driver::channel(options.event_capacity);
        let span = tracing::info_span!("wendy", node = %info.id, addr = %bound);
        let task = tokio::spawn(driver::run(config, options, listener, rx, ev_tx).instrument(span));
        tracing::debug!(node = %info.id, addr = %bound, "node started");
        Ok(NodeHandle { sender: Sender { tx, max_payload }, info, events: Some(ev_rx), task })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.info.id
    }

    /// The node's id, addresses and region (with the port actually bound).
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.info.local
    }

    /// A cloneable sender for `send` and `send_to` from other tasks.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Joins the ring of the node at `bootstrap`; resolves once the join completed.
    pub async fn join(&self, bootstrap: SocketAddr) -> Result<(), Error> {
        let (tx, rx) = reply();
        self.sender.command(Command::Join(bootstrap, tx)).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Routes `payload` towards `key`; delivered at the live node numerically closest to it.
    ///
    /// Waits while the node's write queues are full. Refusals found by the node itself (a
    /// full queue towards a peer) are reported as [`NodeEvent::SendFailed`].
    pub async fn send(&self, key: NodeId, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send(key, purpose, payload).await
    }

    /// Routes many messages, `(key, purpose, payload)`, in one command: the cheap way to send a
    /// lot. See [`Sender::send_batch`].
    pub async fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), Error> {
        self.sender.send_batch(batch).await
    }

    /// Sends `payload` straight to a node, by id or address.
    pub async fn send_to(&self, target: Target, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send_to(target, purpose, payload).await
    }

    /// Installs the hook consulted before each routed message is forwarded (it may veto it).
    pub async fn set_forward_hook(&self, hook: impl ForwardHook + 'static) -> Result<(), Error> {
        self.sender.command(Command::Hook(Box::new(hook))).await
    }

    /// Runs `f` on the node inside its task and returns the result (state, stats, ...).
    pub async fn inspect<T: Send + 'static>(&self, f: impl FnOnce(&Node) -> T + Send + 'static) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let f: Inspector = Box::new(move |n| {
            let _ = tx.send(f(n));
        });
        self.sender.command(Command::Inspect(f)).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.inspect(|n| n.stats()).await
    }

    /// The next event; `None` once the node has stopped and its events were read, or if the
    /// receiver was taken with [`take_events`](Self::take_events).
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        self.events.as_mut()?.recv().await
    }

    /// Waits for an event, then appends every event already available to `out`; returns how
    /// many (0 once stopped, or if the receiver was taken). See [`Events::recv_batch`].
    pub async fn next_events(&mut self, out: &mut Vec<NodeEvent>) -> usize {
        match self.events.as_mut() {
            Some(e) => e.recv_batch(out).await,
            None => 0,
        }
    }

    /// Takes the event receiver, to read events from another task.
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Leaves the ring gracefully: tells the nodes it knows, writes what is queued, and stops.
    pub async fn leave(&self) {
        let (tx, rx) = reply();
        if self.sender.tx.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the node without announcing it: writes what is queued and closes every socket.
    pub async fn stop(&self) {
        let (tx, rx) = reply();
        if self.sender.tx.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Kills the node at once, as a crash would: its task and sockets are dropped mid-flight.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// True once the node task has ended.
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.info.id).field("addr", &self.info.local).finish()
    }
}

impl Sender {
    /// See [`NodeHandle::send`].
    pub async fn send(&self, key: NodeId, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.command(Command::send(key, purpose, payload.into(), self.max_payload)?).await
    }

    /// Routes every `(key, purpose, payload)` of `batch`, in order, as one command: one channel
    /// operation and one wake-up of the node task for the whole batch.
    ///
    /// The batch is checked first (reserved purposes, payload sizes): if any message is
    /// refused, none is sent. Back-pressure applies between batches, so keep them moderate
    /// (hundreds of messages, not millions).
    pub async fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), Error> {
        match Command::send_batch(batch, self.max_payload)? {
            Some(c) => self.command(c).await,
            None => Ok(()),
        }
    }

    /// See [`NodeHandle::send_to`].
    pub async fn send_to(&self, target: Target, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.command(Command::send_to(target, purpose, payload.into(), self.max_payload)?).await
    }

    async fn command(&self, c: Command) -> Result<(), Error> {
        self.tx.send(c).await.map_err(|_| Error::Stopped)
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}
