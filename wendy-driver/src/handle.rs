//! The application's handle on a running node, written once for every runtime.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;
use wendy_proto::store::{Outcome, Store, StoreError, Version};
use wendy_proto::{Config, ForwardHook, Instant, Node, NodeId, NodeInfo, Stats, Target};

use crate::command::{self, reply, Command, Inspector};
use crate::runtime::{Listener, Runtime};
use crate::task::{self, Gate, Task};
use crate::{node_task, Error, Events, Metrics, NodeEvent, Options};

/// A running node. Dropping it stops the node (abruptly: nothing is announced).
///
/// `R` is the runtime it runs on; the drivers name this type for theirs
/// (`wendy_tokio::NodeHandle`, `wendy_smol::NodeHandle`).
pub struct NodeHandle<R> {
    sender: Sender,
    info: NodeInfo,
    events: Option<Events>,
    task: Task,
    /// Every task of the node is behind it: see [`freeze`](Self::freeze).
    gate: Arc<Gate>,
    _runtime: PhantomData<fn() -> R>,
}

/// A cheap, cloneable handle for sending messages from many tasks. It does not keep the node
/// alive: once the [`NodeHandle`] is dropped, sends fail with [`Error::Stopped`].
#[derive(Clone)]
pub struct Sender {
    tx: async_channel::Sender<Command>,
    max_payload: usize,
}

impl<R: Runtime> NodeHandle<R> {
    /// Starts a node with default [`Options`]. See [`NodeHandle::start_with`].
    pub async fn start(config: Config) -> Result<Self, Error> {
        Self::start_with(config, Options::default()).await
    }

    /// Binds [`Options::listen`] (by default `config.info.local`) and starts the node task on
    /// the current runtime.
    ///
    /// Port 0 means the OS picks a port: the node's local address (and its global address, if
    /// it was the same or has port 0) is set to the bound one, reported by
    /// [`local_addr`](Self::local_addr).
    ///
    /// A config whose [`entropy`](Config::entropy) is all zeros (as [`Config::new`] leaves it)
    /// gets 32 bytes from the operating system: they seed every handshake's ephemeral keys.
    pub async fn start_with(mut config: Config, options: Options) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        if config.entropy == [0; 32] {
            config.entropy = crate::os_entropy()?;
        }
        let rt = R::current()?;
        let listener = rt.bind(options.listen.unwrap_or(config.info.local))?;
        let bound = listener.local_addr()?;
        if options.listen.is_none() {
            crate::fix_port(&mut config, bound);
        } else {
            for addr in [&mut config.info.local, &mut config.info.global] {
                if addr.port() == 0 {
                    addr.set_port(bound.port());
                }
            }
        }
        let info = config.info.clone();
        let max_payload = crate::max_payload(&config);
        let mut node = Node::new(config, Instant::ZERO).map_err(Error::Config)?;
        let store = match &options.store {
            None => None,
            Some(so) => {
                let backend: Box<dyn wendy_proto::store::Backend> = match &so.data_dir {
                    Some(dir) => {
                        std::fs::create_dir_all(dir)?;
                        Box::new(crate::RedbBackend::open(&dir.join("store.redb")).map_err(Error::Backend)?)
                    }
                    None => Box::new(wendy_proto::store::MemoryBackend::new()),
                };
                Some(Store::new(so.config.clone(), backend, &mut node).map_err(Error::Backend)?)
            }
        };
        let (tx, rx) = async_channel::bounded(options.command_capacity.max(1));
        let (ev_tx, ev_rx) = crate::events::channel(options.event_capacity);
        let span = tracing::info_span!("wendy", node = %info.id, addr = %bound);
        let gate = Arc::new(Gate::default());
        let run = node_task::run(rt.clone(), gate.clone(), node, store, options, listener, rx, ev_tx);
        let task = task::spawn(&rt, &gate, run.instrument(span));
        tracing::debug!(node = %info.id, addr = %bound, "node started");
        let sender = Sender { tx, max_payload };
        Ok(NodeHandle { sender, info, events: Some(ev_rx), task, gate, _runtime: PhantomData })
    }
}

impl<R> NodeHandle<R> {
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

    /// Joins the ring through `bootstraps` (the node tries each in turn, then the nodes it has
    /// learned); resolves once the join completed, or failed ([`Error::Rejected`] if a node
    /// refused our handshake and said why).
    pub async fn join(&self, bootstraps: &[SocketAddr]) -> Result<(), Error> {
        let (tx, rx) = reply();
        self.sender.command(Command::Join(bootstraps.to_vec(), tx)).await?;
        rx.recv().await.map_err(|_| Error::Stopped)?
    }

    /// Routes `payload` towards `key`; delivered at the live node numerically closest to it.
    /// See [`Sender::send`].
    pub async fn send(&self, key: NodeId, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send(key, purpose, payload).await
    }

    /// Stores `value` under `key` on the key's replica set. See [`Sender::put`].
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<Version, Error> {
        self.sender.put(key, value).await
    }

    /// Stores `value` under `key`, living `ttl`. See [`Sender::put_with_ttl`].
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: std::time::Duration,
    ) -> Result<Version, Error> {
        self.sender.put_with_ttl(key, value, ttl).await
    }

    /// The newest value of `key`. See [`Sender::get`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        self.sender.get(key).await
    }

    /// Deletes `key`. See [`Sender::delete`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        self.sender.delete(key).await
    }

    /// Routes many messages, `(key, purpose, payload)`, in one command: the cheap way to send a
    /// lot. See [`Sender::send_batch`].
    pub async fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), Error> {
        self.sender.send_batch(batch).await
    }

    /// Sends `payload` straight to a node, by id or address. See [`Sender::send_to`].
    pub async fn send_to(&self, target: Target, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send_to(target, purpose, payload).await
    }

    /// Installs the hook consulted before each routed message is forwarded (it may veto it).
    pub async fn set_forward_hook(&self, hook: impl ForwardHook + 'static) -> Result<(), Error> {
        self.sender.command(Command::Hook(Box::new(hook))).await
    }

    /// Runs `f` on the node inside its task and returns the result (state, stats, ...).
    pub async fn inspect<T: Send + 'static>(&self, f: impl FnOnce(&Node) -> T + Send + 'static) -> Result<T, Error> {
        let (tx, rx) = reply();
        let f: Inspector = Box::new(move |n| tx.send(f(n)));
        self.sender.command(Command::Inspect(f)).await?;
        rx.recv().await.map_err(|_| Error::Stopped)
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.inspect(|n| n.stats()).await
    }

    /// A snapshot of the node's metrics (what `wendy node --metrics` serves).
    pub async fn metrics(&self) -> Result<Metrics, Error> {
        self.sender.metrics().await
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

    /// Takes the event receiver (a [`Stream`](futures_core::Stream)), to read events from
    /// another task.
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Leaves the ring gracefully: tells the nodes it knows, writes everything the node still
    /// has to send (until [`Event::Drained`](wendy_proto::Event::Drained), at most
    /// [`Options::leave_limit`]), and stops.
    pub async fn leave(&self) {
        let (tx, rx) = reply();
        if self.sender.tx.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// Stops the node without announcing it: writes what is queued and closes every socket.
    pub async fn stop(&self) {
        let (tx, rx) = reply();
        if self.sender.tx.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// Kills the node at once, as a crash would: its tasks and sockets are dropped mid-flight.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Freezes the node, as stopping its process with `SIGSTOP` would: for fault-injection
    /// tests of the nodes around it.
    ///
    /// From their next wake-up on, none of the node's tasks runs: the node task handles no
    /// input, reads no socket, fires no timer (no heartbeats, no acknowledgements, no probes),
    /// and its connections' writers and its accept loop stop. Its listener and its
    /// connections stay open: peers can still connect (the kernel completes the handshake
    /// into the listen backlog) and write to it until the kernel's buffers are full, and they
    /// get no answer. Commands sent meanwhile (`send`, `inspect`, ...) wait for
    /// [`thaw`](Self::thaw); [`abort`](Self::abort) and dropping the handle still end the node
    /// at once. Freezing a frozen node does nothing.
    pub fn freeze(&self) {
        self.gate.close();
        tracing::debug!(node = %self.info.id, "node frozen");
    }

    /// Resumes a [frozen](Self::freeze) node where it stopped, as `SIGCONT` would: it reads
    /// what arrived meanwhile, and its overdue timers fire at once (it finds, for instance,
    /// that its peers have long been silent, and has been declared failed by them if it was
    /// frozen longer than [`Config::detection_time`]). Thawing a running node does nothing.
    pub fn thaw(&self) {
        self.gate.open();
        tracing::debug!(node = %self.info.id, "node thawed");
    }

    /// True while the node is [frozen](Self::freeze).
    pub fn is_frozen(&self) -> bool {
        self.gate.is_closed()
    }

    /// True once the node task has ended.
    pub fn is_stopped(&self) -> bool {
        self.task.is_finished()
    }
}

impl<R> Drop for NodeHandle<R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<R> fmt::Debug for NodeHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeHandle").field("id", &self.info.id).field("addr", &self.info.local).finish()
    }
}

impl Sender {
    /// Routes `payload` towards `key`; delivered at the live node numerically closest to it.
    ///
    /// Waits while the node's write queues are full, and while its window and queue towards
    /// the next hop are (for at most [`Options::send_wait`](crate::Options::send_wait): the
    /// node reads on meanwhile, acknowledgements included), then for the node's verdict: an
    /// error here (a reserved purpose, a payload too large, a queue towards the next hop still
    /// full after that wait, a node that has left) is about this message. To send a lot, use
    /// [`send_batch`](Self::send_batch): one verdict per batch.
    pub async fn send(&self, key: NodeId, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        command::check_send(purpose, payload.len(), self.max_payload)?;
        let (tx, rx) = reply();
        self.command(Command::Send { key, purpose, payload, reply: tx }).await?;
        rx.recv().await.map_err(|_| Error::Stopped)?.map_err(Error::Command)
    }

    /// Routes every `(key, purpose, payload)` of `batch`, in order, as one command: one channel
    /// operation and one wake-up of the node task for the whole batch.
    ///
    /// The batch is checked first (reserved purposes, payload sizes): if any message is
    /// refused there, none is sent. Messages the node then refuses are reported together as
    /// [`Error::BatchRefused`] (the others were sent). Back-pressure applies between batches,
    /// so keep them moderate (hundreds of messages, not millions); within a batch, a message
    /// the next hop's window has no room for waits as in [`send`](Self::send), and the rest
    /// of the batch behind it.
    pub async fn send_batch(&self, batch: Vec<(NodeId, u8, Bytes)>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        for (_, purpose, payload) in &batch {
            command::check_send(*purpose, payload.len(), self.max_payload)?;
        }
        let (tx, rx) = reply();
        self.command(Command::SendBatch(batch, tx)).await?;
        let refused = rx.recv().await.map_err(|_| Error::Stopped)?;
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Error::BatchRefused(refused))
        }
    }

    /// Sends `payload` straight to a node, by id or address; like [`send`](Self::send), the
    /// result is the node's verdict on this message.
    pub async fn send_to(&self, target: Target, purpose: u8, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        command::check_send(purpose, payload.len(), self.max_payload)?;
        let (tx, rx) = reply();
        self.command(Command::SendTo { target, purpose, payload, reply: tx }).await?;
        rx.recv().await.map_err(|_| Error::Stopped)?.map_err(Error::Command)
    }

    /// A snapshot of the node's metrics; see [`NodeHandle::metrics`].
    pub async fn metrics(&self) -> Result<Metrics, Error> {
        let (tx, rx) = reply();
        self.command(Command::Metrics(tx)).await?;
        rx.recv().await.map_err(|_| Error::Stopped)
    }

    /// Stores `value` under `key` (hashed to a 128-bit key with [`NodeId::hash`]) on the key's
    /// replica set; the version written once every replica holds it, else
    /// [`Error::Store`] with [`StoreError::Partial`] (how many replicas took it),
    /// [`StoreError::StoreFull`], [`StoreError::ValueTooLarge`], ... The node must run a
    /// store ([`Options::store`]).
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<Version, Error> {
        self.write(NodeId::hash(key.as_ref()), Some(value.into()), None).await
    }

    /// As [`put`](Self::put), the value expiring after `ttl` (on the nodes' monotonic clocks).
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: std::time::Duration,
    ) -> Result<Version, Error> {
        self.write(NodeId::hash(key.as_ref()), Some(value.into()), Some(ttl)).await
    }

    /// The newest value of `key` on its replica set; [`StoreError::NotFound`] if there is none.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        let (tx, rx) = reply();
        self.command(Command::Read { key: NodeId::hash(key.as_ref()), reply: tx }).await?;
        match rx.recv().await.map_err(|_| Error::Stopped)?? {
            Outcome::Found { value, .. } => Ok(value),
            _ => Err(Error::Store(StoreError::NotFound)),
        }
    }

    /// Deletes `key`: a tombstone that wins over every older value, on the key's replica set.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        self.write(NodeId::hash(key.as_ref()), None, None).await.map(|_| ())
    }

    async fn write(
        &self,
        key: NodeId,
        value: Option<Bytes>,
        ttl: Option<std::time::Duration>,
    ) -> Result<Version, Error> {
        let (tx, rx) = reply();
        self.command(Command::Write { key, value, ttl, reply: tx }).await?;
        match rx.recv().await.map_err(|_| Error::Stopped)?? {
            Outcome::Stored { version, .. } | Outcome::Deleted { version, .. } | Outcome::Found { version, .. } => {
                Ok(version)
            }
        }
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
