//! The node task: owns the [`Node`], feeds it inputs and carries out its outputs.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smol::channel;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Async, Task, Timer};
use tracing::Instrument;
use wendy_proto::{ConnId, Event, Instant, Node, NodeError, Output};

use crate::events::EventSender;
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
    /// The socket, for writing to it directly while the writer task has nothing queued.
    socket: Option<Arc<Async<std::net::TcpStream>>>,
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
    events: EventSender,
    /// Events of the current round, and events waiting for the application to make room.
    /// While the application lags the node reads no network input: a slow application slows
    /// its peers down instead of losing deliveries.
    outbox: Vec<NodeEvent>,
    /// True while the application has no room for `outbox`.
    lagging: bool,
    /// The time of the current round of inputs (reading the clock per message costs).
    clock: Instant,
    /// Bytes in the current batches of every connection.
    batched: usize,
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
    events: EventSender,
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
        outbox: Vec::new(),
        lagging: false,
        clock: Instant::ZERO,
        batched: 0,
        events_dropped: 0,
        tasks: Vec::new(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained_tx, drained_rx }),
        join_waiters: Vec::new(),
        connect_timeout,
    };
    d.spawn(accept_loop(listener, d.net_tx.clone()).in_current_span());
    let mut timer = Timer::never();
    let mut armed: Option<std::time::Instant> = None;
    loop {
        let blocked = d.lagging;
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
            if blocked {
                d.events.room().await;
                Wake::Room
            } else {
                std::future::pending().await
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
                d.tick();
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
                d.tick();
                let mut stop = d.on_command(cmd);
                let mut n = 0u32;
                while stop.is_none() && d.shared.queued.load(Ordering::Relaxed) <= d.opts.max_queued_bytes {
                    match commands.try_recv() {
                        Ok(cmd) => stop = d.on_command(cmd),
                        Err(_) => break,
                    }
                    if d.batched > 256 << 10 {
                        break;
                    }
                    n += 1;
                    if n % 64 == 0 {
                        d.tick();
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
            Wake::Room => {}
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
    Room,
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
    /// The time of the current round of inputs.
    fn now(&self) -> Instant {
        self.clock
    }

    /// Reads the clock.
    fn tick(&mut self) {
        self.clock = Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    fn on_net(&mut self, ev: Net) {
        self.tick();
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
                    self.node.handle_bytes(now, conn, data);
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
            Command::SendBatch(batch) => {
                for (key, purpose, payload) in batch {
                    if let Err(e) = self.node.send(now, key, purpose, payload) {
                        self.emit(NodeEvent::SendFailed(e));
                    }
                    // Drain as we go: the node's output queue stays small.
                    self.drain();
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
                        self.batched += data.len();
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

    /// Queues an event for the application; the round's events are handed over together by
    /// [`publish`](Self::publish). Deliveries are never dropped (the node stops reading the
    /// network until the application catches up); other events are dropped, and counted, when
    /// the application lags by more than the event capacity again.
    fn emit(&mut self, ev: NodeEvent) {
        if self.lagging && !matches!(ev, NodeEvent::Deliver(_)) && self.outbox.len() >= self.opts.event_capacity {
            self.events_dropped += 1;
            if self.events_dropped.is_power_of_two() {
                tracing::warn!(dropped = self.events_dropped, "application lags: events dropped");
            }
            return;
        }
        self.outbox.push(ev);
    }

    /// Hands the queued events to the application, if it has room for them.
    fn publish(&mut self) {
        if self.outbox.is_empty() {
            self.lagging = false;
            return;
        }
        if self.events.is_closed() {
            // Nobody reads events any more.
            self.outbox.clear();
            self.lagging = false;
            return;
        }
        self.lagging = !self.events.has_room();
        if !self.lagging && self.events.send(std::mem::take(&mut self.outbox)).is_err() {
            self.outbox.clear();
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        self.conns.insert(
            conn,
            Conn { socket: None, writer: None, reader: None, batch: Vec::new(), queued: Arc::new(AtomicUsize::new(0)) },
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
        let (rd, wr) = (stream.clone(), stream.clone());
        let socket = Arc::<Async<std::net::TcpStream>>::from(stream);
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = channel::unbounded();
        let span = tracing::debug_span!("conn", %conn, %addr);
        let reader =
            smol::spawn(read_loop(conn, rd, self.net_tx.clone(), self.opts.read_buffer).instrument(span.clone()));
        self.spawn(
            write_loop(conn, wr, wrx, queued.clone(), self.shared.clone(), self.net_tx.clone()).instrument(span),
        );
        let c = self.conns.entry(conn).or_insert_with(|| Conn {
            socket: None,
            writer: None,
            reader: None,
            batch: Vec::new(),
            queued: queued.clone(),
        });
        c.socket = Some(socket);
        c.writer = Some(wtx);
        c.reader = Some(reader);
        c.queued = queued;
    }

    /// Hands every connection's batch to its writer; disconnects peers that fell too far behind.
    fn flush(&mut self) {
        self.batched = 0;
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
                self.tick();
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
        self.batched = 0;
        self.publish();
    }

    fn hand_over(&mut self, c: &mut Conn) {
        Self::hand_over_with(&self.shared, c);
    }

    fn hand_over_with(shared: &Shared, c: &mut Conn) {
        if c.batch.is_empty() {
            return;
        }
        let Some(w) = &c.writer else {
            c.batch.clear();
            return;
        };
        let mut written = 0;
        if let Some(socket) = &c.socket {
            if c.queued.load(Ordering::Acquire) == 0 {
                // The writer is idle: write straight away (the socket is non-blocking), saving
                // it a wake-up. What the socket does not take (or an error) goes to the writer.
                while written < c.batch.len() {
                    match socket.get_ref().write(&c.batch[written..]) {
                        Ok(n) if n > 0 => written += n,
                        _ => break,
                    }
                }
                if written == c.batch.len() {
                    c.batch.clear();
                    return;
                }
            }
        }
        let data = if written == 0 {
            Bytes::from(std::mem::take(&mut c.batch))
        } else {
            let rest = Bytes::copy_from_slice(&c.batch[written..]);
            c.batch.clear();
            rest
        };
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
        drop(c.socket);
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
        queued.fetch_sub(n, Ordering::AcqRel);
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
