//! The node task, written once over any [`Runtime`]: it owns the [`Core`], accepts, dials,
//! runs each connection's reader and writer, and sleeps until the node's next deadline or
//! the next input.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use wendy_proto::{ConnId, Node};

use crate::command::Command;
use crate::core::{Core, Io, Link, Net};
use crate::runtime::{self, Listener, Runtime, Socket, Timer};
use crate::task::{self, Gate, Task, TaskSet};
use crate::{EventSender, Options};

/// Most network inputs handled before the batched frames are handed to the writers.
const BATCH: usize = 256;
/// How long a stopping node waits for its writers to finish what they have.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// What the writers share with the node task.
struct Shared {
    /// Unwritten bytes of every connection together.
    queued: AtomicUsize,
    /// Signalled by writers whenever they have written something (a one-permit channel).
    drained_tx: async_channel::Sender<()>,
    drained_rx: async_channel::Receiver<()>,
}

impl Shared {
    fn notify(&self) {
        let _ = self.drained_tx.try_send(());
    }

    fn give_back(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The runtime side of the node task: what [`Core`] asks of it.
pub(crate) struct Driver<R: Runtime> {
    rt: R,
    net_tx: async_channel::Sender<Net<R::Socket>>,
    tasks: TaskSet,
    shared: Arc<Shared>,
    read_buffer: usize,
    connect_timeout: Duration,
    /// The node's gate (see [`crate::NodeHandle::freeze`]): every task spawned here is behind it.
    gate: Arc<Gate>,
}

/// An attached socket, as the node task holds it. Dropping it stops the reader; the writer
/// finishes what it has, then lets go of the socket (closing it).
pub(crate) struct SocketLink<S> {
    reader: Task,
    socket: Arc<S>,
    writer: async_channel::Sender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

/// Runs a node until it is told to stop or every handle is gone. The tasks it spawns are
/// behind `gate`, as the node task itself is.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<R: Runtime>(
    rt: R,
    gate: Arc<Gate>,
    node: Node,
    store: Option<wendy_proto::store::Store>,
    opts: Options,
    listener: R::Listener,
    commands: async_channel::Receiver<Command>,
    events: EventSender,
) {
    let (net_tx, net_rx) = async_channel::bounded(256);
    let (drained_tx, drained_rx) = async_channel::bounded(1);
    let mut io = Driver {
        rt: rt.clone(),
        net_tx,
        tasks: TaskSet::default(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained_tx, drained_rx }),
        read_buffer: opts.read_buffer.max(1),
        connect_timeout: node.config().connect_timeout,
        gate,
    };
    let mut core = Core::new(node, store, opts, events);
    let accept = io.spawn(accept_loop(rt.clone(), listener, io.net_tx.clone(), tracing::Span::current()));
    io.tasks.push(accept);
    let mut timer: Option<R::Timer> = None;
    let mut armed = None;
    // The receivers are polled as streams, which wants them pinned.
    let mut net_rx = std::pin::pin!(net_rx);
    let mut commands = std::pin::pin!(commands);
    let mut drained = std::pin::pin!(io.shared.drained_rx.clone());
    loop {
        let deadline = core.deadline();
        if deadline != armed {
            match (deadline, timer.as_mut()) {
                (Some(t), Some(timer)) => timer.reset(t),
                (Some(t), None) => timer = Some(rt.timer(t)),
                (None, _) => timer = None,
            }
            armed = deadline;
        }
        let lagging = core.is_lagging();
        let congested = core.is_congested(&io);
        let events = core.events();
        // Biased towards the timer, then the network, then the application.
        let wake = poll_fn(|cx| {
            if let Some(t) = timer.as_mut() {
                if t.poll_elapsed(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
            }
            if lagging {
                if events.poll_room(cx).is_ready() {
                    return Poll::Ready(Wake::Room);
                }
            } else if let Poll::Ready(ev) = net_rx.as_mut().poll_next(cx) {
                // The driver holds a sender itself: the channel never closes here.
                return Poll::Ready(ev.map_or(Wake::Closed, Wake::Net));
            }
            if congested {
                if drained.as_mut().poll_next(cx).is_ready() {
                    return Poll::Ready(Wake::Drained);
                }
            } else if let Poll::Ready(cmd) = commands.as_mut().poll_next(cx) {
                return Poll::Ready(cmd.map_or(Wake::Closed, Wake::Command));
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Timer => {
                // Re-armed (reset) at the top of the loop.
                armed = None;
                core.handle_timeout(&mut io);
            }
            Wake::Net(ev) => {
                core.on_net(&mut io, ev);
                for _ in 0..BATCH {
                    match net_rx.try_recv() {
                        Ok(ev) => core.on_net(&mut io, ev),
                        Err(_) => break,
                    }
                }
            }
            Wake::Command(cmd) => {
                if let Some(stop) = core.on_commands(&mut io, cmd, || commands.try_recv().ok()) {
                    core.flush(&mut io);
                    io.shutdown(&mut core).await;
                    stop.send(());
                    return;
                }
            }
            Wake::Drained | Wake::Room => {}
            Wake::Closed => break,
        }
        core.flush(&mut io);
        if let Some(waiting) = core.left() {
            io.shutdown(&mut core).await;
            for w in waiting {
                w.send(());
            }
            return;
        }
    }
    core.flush(&mut io);
    io.shutdown(&mut core).await;
}

/// Why the node task woke up.
enum Wake<S> {
    Timer,
    Net(Net<S>),
    Command(Command),
    Drained,
    Room,
    /// Every handle is gone.
    Closed,
}

/// Accepts connections until the node task ends (or stops reading them).
async fn accept_loop<R: Runtime>(
    rt: R,
    listener: R::Listener,
    tx: async_channel::Sender<Net<R::Socket>>,
    span: tracing::Span,
) {
    let mut failures = 0u64;
    loop {
        match poll_fn(|cx| listener.poll_accept(cx)).await {
            Ok((socket, addr)) => {
                if tx.send(Net::Accepted(socket, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin, and say so
                // now and then rather than every time.
                failures += 1;
                if failures.is_power_of_two() {
                    span.in_scope(|| tracing::warn!(error = %e, failures, "accept failed"));
                }
                runtime::sleep_until(&rt, std::time::Instant::now() + Duration::from_millis(50)).await;
            }
        }
    }
}

impl<R: Runtime> Io for Driver<R> {
    type Stream = R::Socket;
    type Link = SocketLink<R::Socket>;

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let tx = self.net_tx.clone();
        let deadline = std::time::Instant::now() + self.connect_timeout;
        let rt = self.rt.clone();
        let task = self.spawn(async move {
            let r = runtime::timeout(&rt, deadline, rt.connect(addr)).await;
            let _ = tx.send(Net::Connected(conn, r)).await;
        });
        self.tasks.push(task);
    }

    fn attach(&mut self, conn: ConnId, socket: R::Socket, _addr: SocketAddr) -> Self::Link {
        let _ = socket.set_nodelay();
        let socket = Arc::new(socket);
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = async_channel::unbounded();
        let reader = self.spawn(read_loop(conn, socket.clone(), self.net_tx.clone(), self.read_buffer));
        self.tasks.push(reader.clone());
        let writer =
            self.spawn(write_loop(conn, socket.clone(), wrx, queued.clone(), self.shared.clone(), self.net_tx.clone()));
        self.tasks.push(writer);
        SocketLink { reader, socket, writer: wtx, queued, shared: self.shared.clone() }
    }

    fn peer_addr(socket: &R::Socket) -> io::Result<SocketAddr> {
        socket.peer_addr()
    }

    fn unwritten(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    fn tasks(&self) -> usize {
        self.tasks.running()
    }
}

impl<R: Runtime> Driver<R> {
    /// Spawns one of the node's tasks, behind its gate.
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        task::spawn(&self.rt, &self.gate, fut)
    }

    /// Lets go of every connection, lets the writers finish (for a short while); every task
    /// still running is aborted when the driver is dropped.
    async fn shutdown(&mut self, core: &mut Core<Self>) {
        core.close_all();
        let shared = self.shared.clone();
        let flushed = async {
            while shared.queued.load(Ordering::Acquire) > 0 {
                let _ = shared.drained_rx.recv().await;
            }
            Ok(())
        };
        let _ = runtime::timeout(&self.rt, std::time::Instant::now() + FLUSH_LIMIT, flushed).await;
        // A graceful stop: the store's last writes reach the disk (one commit at most).
        core.close_store();
        tracing::debug!("node stopped");
    }
}

impl<S: Socket> Link for SocketLink<S> {
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn try_write(&self, buf: &[u8]) -> usize {
        self.socket.try_write(buf).unwrap_or(0)
    }

    fn queue(&self, data: Bytes) {
        let n = data.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if self.writer.try_send(data).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.give_back(n);
        }
    }
}

impl<S> Drop for SocketLink<S> {
    fn drop(&mut self) {
        // Stop reading; the writer finishes what it has (its channel is closed by this drop).
        self.reader.abort();
    }
}

/// Reads a connection until it ends, passing the bytes to the node task.
async fn read_loop<S: Socket>(conn: ConnId, socket: Arc<S>, tx: async_channel::Sender<Net<S>>, size: usize) {
    let mut buf = BytesMut::zeroed(size);
    loop {
        if buf.len() < size / 4 + 1 {
            buf = BytesMut::zeroed(size);
        }
        match poll_fn(|cx| socket.poll_read(cx, &mut buf)).await {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Net::Data(conn, buf.split_to(n).freeze())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%conn, error = %e, "read failed");
                break;
            }
        }
    }
    let _ = tx.send(Net::Closed(conn)).await;
}

/// Writes what the node task queues for a connection, many chunks per write.
async fn write_loop<S: Socket>(
    conn: ConnId,
    socket: Arc<S>,
    rx: async_channel::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    tx: async_channel::Sender<Net<S>>,
) {
    let mut joined = Vec::new();
    while let Ok(first) = rx.recv().await {
        let buf = crate::coalesce(&first, || rx.try_recv().ok(), &mut joined);
        let n = buf.len();
        let r = write_all(&*socket, buf).await;
        queued.fetch_sub(n, Ordering::AcqRel);
        shared.give_back(n);
        shared.notify();
        if let Err(e) = r {
            tracing::debug!(%conn, error = %e, "write failed");
            // Give back the accounting of what will never be written.
            rx.close();
            while let Ok(rest) = rx.try_recv() {
                queued.fetch_sub(rest.len(), Ordering::AcqRel);
                shared.give_back(rest.len());
            }
            shared.notify();
            let _ = tx.send(Net::Closed(conn)).await;
            return;
        }
    }
    // The last handle on the socket goes with this task: the socket is closed.
}

async fn write_all<S: Socket>(socket: &S, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx: &mut Context<'_>| socket.poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}
