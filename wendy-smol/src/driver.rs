//! The node task: owns the [`Node`], feeds it inputs and carries out its outputs.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smol::channel;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Task, Timer};
use tracing::Instrument;
use wendy_proto::{ConnId, Event, Instant, Node, NodeError, Output};

use crate::{Command, Config, Error, Forwarded, NodeEvent, Options, Reply};

/// Inputs from the network side, in one channel so that a connection's data never overtakes
/// the news that it was established.
enum Net {
    Accepted(TcpStream, SocketAddr),
    Connected(ConnId, io::Result<TcpStream>),
    Data(ConnId, Bytes),
    Closed(ConnId),
}

/// Frames for one connection not yet handed to its writer.
struct Conn {
    writer: Option<channel::Sender<Bytes>>,
    /// Dropping it cancels the reader.
    reader: Option<Task<()>>,
    /// Frames of the current batch.
    batch: Vec<u8>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
}

struct Shared {
    /// Unwritten bytes of every connection together.
    queued: AtomicUsize,
    /// Signalled by writers whenever they have written something (a one-permit channel).
    drained_tx: channel::Sender<()>,
    drained_rx: channel::Receiver<()>,
}

impl Shared {
    fn notify(&self) {
        let _ = self.drained_tx.try_send(());
    }
}

struct Driver {
    node: Node,
    origin: std::time::Instant,
    opts: Options,
    conns: HashMap<ConnId, Conn>,
    dirty: Vec<ConnId>,
    net_tx: channel::Sender<Net>,
    events: channel::Sender<NodeEvent>,
    /// Events waiting for room in the event channel. While it is not empty the node reads no
    /// network input: a slow application slows its peers down instead of losing deliveries.
    outbox: VecDeque<NodeEvent>,
    events_dropped: u64,
    /// Tasks that are not a connection's reader (accept loop, dials, writers); dropped with the
    /// driver, which cancels them.
    tasks: Vec<Task<()>>,
    shared: Arc<Shared>,
    join_waiters: Vec<Reply<Result<(), Error>>>,
    connect_timeout: Duration,
}

/// Most inputs handled before the batched frames are handed to the writers.
const BATCH: usize = 256;

pub(crate) async fn run(
    config: Config,
    opts: Options,
    listener: TcpListener,
    commands: channel::Receiver<Command>,
    events: channel::Sender<NodeEvent>,
) {
    let origin = std::time::Instant::now();
    let connect_timeout = config.connect_timeout;
    let node = Node::new(config, Instant::ZERO);
    let (net_tx, net_rx) = channel::bounded(256);
    let (drained_tx, drained_rx) = channel::bounded(1);
    let mut d = Driver {
        node,
        origin,
        opts,
        conns: HashMap::new(),
        dirty: Vec::new(),
        net_tx,
        events,
        outbox: VecDeque::new(),
        events_dropped: 0,
        tasks: Vec::new(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained_tx, drained_rx }),
        join_waiters: Vec::new(),
        connect_timeout,
    };
    d.spawn(accept_loop(listener, d.net_tx.clone()).in_current_span());
    let mut timer = Timer::never();
    let mut armed: Option<std::time::Instant> = None;
    // The event being sent while the channel is full (kept across iterations: never lost).
    let mut sending: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    loop {
        if sending.is_none() {
            if let Some(ev) = d.outbox.pop_front() {
                let tx = d.events.clone();
                sending = Some(Box::pin(async move {
                    let _ = tx.send(ev).await;
                }));
            }
        }
        let blocked = sending.is_some();
        let deadline = d.node.poll_timeout().map(|t| origin + Duration::from_micros(t.as_micros()));
        if deadline != armed {
            match deadline {
                Some(t) => timer.set_at(t),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
        let congested = d.shared.queued.load(Ordering::Relaxed) > d.opts.max_queued_bytes;
        let shared = d.shared.clone();
        // Biased towards the timer, then the network, then the application.
        let wake = async {
            (&mut timer).await;
            Wake::Timer
        }
        .or(async {
            match sending.as_mut() {
                Some(f) => {
                    f.await;
                    Wake::Sent
                }
                None => std::future::pending().await,
            }
        })
        .or(async {
            if blocked {
                std::future::pending().await
            } else {
                net_rx.recv().await.map_or(Wake::Closed, Wake::Net)
            }
        })
        .or(async {
            if congested {
                let _ = shared.drained_rx.recv().await;
                Wake::Drained
            } else {
                commands.recv().await.map_or(Wake::Closed, Wake::Command)
            }
        })
        .await;
        match wake {
            Wake::Timer => {
                armed = None;
                let now = d.now();
                d.node.handle_timeout(now);
                d.drain();
            }
            Wake::Net(ev) => {
                d.on_net(ev);
                for _ in 0..BATCH {
                    match net_rx.try_recv() {
                        Ok(ev) => d.on_net(ev),
                        Err(_) => break,
                    }
                }
            }
            Wake::Command(cmd) => {
                let mut stop = d.on_command(cmd);
                while stop.is_none() && d.shared.queued.load(Ordering::Relaxed) <= d.opts.max_queued_bytes {
                    match commands.try_recv() {
                        Ok(cmd) => stop = d.on_command(cmd),
                        Err(_) => break,
                    }
                    if d.dirty_bytes() > 256 << 10 {
                        break;
                    }
                }
                if let Some(stop) = stop {
                    d.flush();
                    d.shutdown().await;
                    let _ = stop.try_send(());
                    return;
                }
            }
            Wake::Drained => {}
            Wake::Sent => {
                sending = None;
                d.push_events();
            }
            // Every handle is gone.
            Wake::Closed => break,
        }
        d.flush();
    }
    d.flush();
    d.shutdown().await;
}

enum Wake {
    Timer,
    Net(Net),
    Command(Command),
    Drained,
    Sent,
    Closed,
}

async fn accept_loop(listener: TcpListener, tx: channel::Sender<Net>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if tx.send(Net::Accepted(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn on_net(&mut self, ev: Net) {
        let now = self.now();
        match ev {
            Net::Accepted(stream, addr) => {
                let conn = self.node.handle_accepted(now, addr);
                tracing::debug!(%conn, %addr, "accepted");
                self.attach(conn, stream, addr);
            }
            Net::Connected(conn, Ok(stream)) => {
                if !self.conns.contains_key(&conn) {
                    // The node gave up on it meanwhile.
                    return;
                }
                let addr = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                tracing::debug!(%conn, %addr, "connected");
                self.attach(conn, stream, addr);
                self.node.handle_connected(now, conn);
            }
            Net::Connected(conn, Err(e)) => {
                if self.conns.remove(&conn).is_some() {
                    tracing::debug!(%conn, error = %e, "connect failed");
                    self.node.handle_connect_failed(now, conn);
                }
            }
            Net::Data(conn, data) => {
                if self.conns.contains_key(&conn) {
                    self.node.handle_data(now, conn, &data);
                }
            }
            Net::Closed(conn) => {
                if let Some(c) = self.conns.remove(&conn) {
                    tracing::debug!(%conn, "closed by peer");
                    self.release(c);
                    self.node.handle_closed(now, conn);
                }
            }
        }
        self.drain();
    }

    /// Handles one command; `Some` if the node task should end after answering it.
    fn on_command(&mut self, cmd: Command) -> Option<Reply<()>> {
        let now = self.now();
        match cmd {
            Command::Join(addr, reply) => match self.node.join(now, addr) {
                Ok(()) => self.join_waiters.push(reply),
                Err(e) => {
                    let _ = reply.try_send(Err(Error::Command(e)));
                }
            },
            Command::Send { key, purpose, payload } => {
                if let Err(e) = self.node.send(now, key, purpose, payload) {
                    self.emit(NodeEvent::SendFailed(e));
                }
            }
            Command::SendTo { target, purpose, payload } => {
                if let Err(e) = self.node.send_to(now, target, purpose, payload) {
                    self.emit(NodeEvent::SendFailed(e));
                }
            }
            Command::Hook(h) => self.node.set_forward_hook(h),
            Command::Inspect(f) => f(&self.node),
            Command::Leave(reply) => {
                tracing::info!("leaving");
                self.node.leave(now);
                self.drain();
                return Some(reply);
            }
            Command::Stop(reply) => return Some(reply),
        }
        self.drain();
        None
    }

    /// Carries out every output the node has.
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { conn, data } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if c.batch.is_empty() {
                            self.dirty.push(conn);
                        }
                        c.batch.extend_from_slice(&data);
                    }
                }
                Output::Connect { conn, addr } => self.connect(conn, addr),
                Output::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        tracing::debug!(%conn, "closing");
                        self.hand_over(&mut c);
                        self.release(c);
                    }
                }
                Output::Deliver(d) => self.emit(NodeEvent::Deliver(d)),
                Output::Forwarded { key, purpose, origin, next, hops } => {
                    if self.opts.report_forwarded {
                        self.emit(NodeEvent::Forwarded(Forwarded { key, purpose, origin, next, hops }));
                    }
                }
                Output::Event(ev) => self.on_event(ev),
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match &ev {
            Event::Joined => {
                tracing::info!("joined");
                for w in self.join_waiters.drain(..) {
                    let _ = w.try_send(Ok(()));
                }
            }
            Event::Error(e @ NodeError::JoinFailed { .. }) => {
                tracing::warn!(error = %e, "join failed");
                for w in self.join_waiters.drain(..) {
                    let _ = w.try_send(Err(Error::JoinFailed(e.clone())));
                }
            }
            Event::Error(e @ (NodeError::Decode { .. } | NodeError::Protocol { .. })) => {
                tracing::warn!(error = %e, "bad input from a peer; connection closed");
            }
            Event::Error(e) => tracing::debug!(error = %e, "node error"),
            Event::PeerRejected { addr, reason, .. } => tracing::warn!(%addr, ?reason, "peer rejected"),
            Event::NodeJoined(info) => tracing::debug!(peer = %info.id, "node joined"),
            Event::NodeLeft(info) => tracing::debug!(peer = %info.id, "node left"),
            Event::Heartbeat(_) if !self.opts.report_heartbeats => return,
            _ => {}
        }
        self.emit(NodeEvent::Event(ev));
    }

    /// Queues an event for the application. Deliveries are never dropped (the node stops
    /// reading the network until the application catches up); other events are dropped, and
    /// counted, when the application lags by more than the event channel's capacity again.
    fn emit(&mut self, ev: NodeEvent) {
        if self.outbox.is_empty() {
            match self.events.try_send(ev) {
                Ok(()) => return,
                Err(channel::TrySendError::Closed(_)) => return,
                Err(channel::TrySendError::Full(ev)) => {
                    self.outbox.push_back(ev);
                    return;
                }
            }
        }
        if matches!(ev, NodeEvent::Deliver(_)) || self.outbox.len() < self.opts.event_capacity {
            self.outbox.push_back(ev);
        } else {
            self.events_dropped += 1;
            if self.events_dropped.is_power_of_two() {
                tracing::warn!(dropped = self.events_dropped, "application lags: events dropped");
            }
        }
    }

    /// Moves queued events into the channel while it has room.
    fn push_events(&mut self) {
        while let Some(ev) = self.outbox.pop_front() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(channel::TrySendError::Full(ev)) => {
                    self.outbox.push_front(ev);
                    return;
                }
                Err(channel::TrySendError::Closed(_)) => {
                    self.outbox.clear();
                    return;
                }
            }
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        self.conns.insert(
            conn,
            Conn { writer: None, reader: None, batch: Vec::new(), queued: Arc::new(AtomicUsize::new(0)) },
        );
        let tx = self.net_tx.clone();
        let limit = self.connect_timeout;
        let span = tracing::debug_span!("connect", %conn, %addr);
        self.spawn(
            async move {
                let r = TcpStream::connect(addr)
                    .or(async {
                        Timer::after(limit).await;
                        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                    })
                    .await;
                let _ = tx.send(Net::Connected(conn, r)).await;
            }
            .instrument(span),
        );
    }

    /// Starts the reader and writer of a socket for `conn`.
    fn attach(&mut self, conn: ConnId, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = (stream.clone(), stream);
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = channel::unbounded();
        let span = tracing::debug_span!("conn", %conn, %addr);
        let reader =
            smol::spawn(read_loop(conn, rd, self.net_tx.clone(), self.opts.read_buffer).instrument(span.clone()));
        self.spawn(
            write_loop(conn, wr, wrx, queued.clone(), self.shared.clone(), self.net_tx.clone()).instrument(span),
        );
        let c = self.conns.entry(conn).or_insert_with(|| Conn {
            writer: None,
            reader: None,
            batch: Vec::new(),
            queued: queued.clone(),
        });
        c.writer = Some(wtx);
        c.reader = Some(reader);
        c.queued = queued;
    }

    /// Unwritten bytes in the current batches.
    fn dirty_bytes(&self) -> usize {
        self.dirty.iter().filter_map(|c| self.conns.get(c)).map(|c| c.batch.len()).sum()
    }

    /// Hands every connection's batch to its writer; disconnects peers that fell too far behind.
    fn flush(&mut self) {
        let mut slow = Vec::new();
        for conn in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            if c.queued.load(Ordering::Relaxed) > self.opts.max_conn_queue_bytes {
                slow.push(conn);
                continue;
            }
            Self::hand_over_with(&self.shared, c);
        }
        for conn in slow {
            if let Some(c) = self.conns.remove(&conn) {
                tracing::warn!(%conn, queued = c.queued.load(Ordering::Relaxed), "peer too slow: disconnected");
                self.release(c);
                let now = self.now();
                self.node.handle_closed(now, conn);
                self.drain();
            }
        }
        if !self.dirty.is_empty() {
            // Closing slow peers produced more frames: hand those over too (at most once more).
            for conn in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.conns.get_mut(&conn) {
                    Self::hand_over_with(&self.shared, c);
                }
            }
        }
    }

    fn hand_over(&mut self, c: &mut Conn) {
        Self::hand_over_with(&self.shared, c);
    }

    fn hand_over_with(shared: &Shared, c: &mut Conn) {
        if c.batch.is_empty() {
            return;
        }
        let data = Bytes::from(std::mem::take(&mut c.batch));
        let Some(w) = &c.writer else { return };
        let n = data.len();
        c.queued.fetch_add(n, Ordering::Relaxed);
        shared.queued.fetch_add(n, Ordering::Relaxed);
        if w.try_send(data).is_err() {
            c.queued.fetch_sub(n, Ordering::Relaxed);
            shared.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Stops reading a connection; its writer finishes what it has, then closes the socket.
    fn release(&mut self, c: Conn) {
        drop(c.reader);
        drop(c.writer);
        self.tasks.retain(|t| !t.is_finished());
    }

    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(smol::spawn(f));
    }

    /// Lets writers finish (for a short while), then ends every task.
    async fn shutdown(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.conns) {
            self.hand_over(&mut c);
            self.release(c);
        }
        let shared = self.shared.clone();
        let flushed = async {
            while shared.queued.load(Ordering::Relaxed) > 0 {
                let _ = shared.drained_rx.recv().await;
            }
        };
        flushed
            .or(async {
                Timer::after(Duration::from_secs(1)).await;
            })
            .await;
        self.tasks.clear();
        tracing::debug!("node stopped");
    }
}

async fn read_loop(conn: ConnId, mut rd: TcpStream, tx: channel::Sender<Net>, size: usize) {
    let mut buf = vec![0u8; size.max(1)];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Net::Data(conn, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "read failed");
                break;
            }
        }
    }
    let _ = tx.send(Net::Closed(conn)).await;
}

async fn write_loop(
    conn: ConnId,
    mut wr: TcpStream,
    rx: channel::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    tx: channel::Sender<Net>,
) {
    let mut joined = Vec::new();
    while let Ok(first) = rx.recv().await {
        let mut n = first.len();
        // Coalesce whatever else is already queued into one write.
        let r = match rx.try_recv() {
            Err(_) => wr.write_all(&first).await,
            Ok(second) => {
                joined.clear();
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&second);
                n += second.len();
                while joined.len() < (1 << 20) {
                    match rx.try_recv() {
                        Ok(more) => {
                            n += more.len();
                            joined.extend_from_slice(&more);
                        }
                        Err(_) => break,
                    }
                }
                wr.write_all(&joined).await
            }
        };
        queued.fetch_sub(n, Ordering::Relaxed);
        shared.queued.fetch_sub(n, Ordering::Relaxed);
        shared.notify();
        if let Err(e) = r {
            tracing::debug!(error = %e, "write failed");
            // Give back the accounting of what will never be written.
            rx.close();
            while let Ok(rest) = rx.try_recv() {
                queued.fetch_sub(rest.len(), Ordering::Relaxed);
                shared.queued.fetch_sub(rest.len(), Ordering::Relaxed);
            }
            shared.notify();
            let _ = tx.send(Net::Closed(conn)).await;
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown(std::net::Shutdown::Write);
}
