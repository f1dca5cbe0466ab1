//! The node task, written once over any [`Runtime`]: it owns the [`Core`], reads every
//! connection's socket itself (each socket wakes it through a waker of its own that marks the
//! connection readable, so a read costs no task switch and no channel), accepts and dials
//! (in tasks of their own), runs each connection's writer, and sleeps until the node's next
//! deadline or the next input.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use wendy_proto::{ConnId, Node};

use crate::command::Command;
use crate::core::{Core, Io, Link, Net};
use crate::runtime::{self, Listener, Runtime, Socket, Timer};
use crate::task::{self, Gate, Task, TaskSet};
use crate::{EventSender, Options};

/// Most accepted sockets and dial results handled before the batched frames are handed to
/// the writers.
const BATCH: usize = 256;
/// Rounds of reading (each up to `core::READS_PER_ROUND` reads) a due timer waits for
/// while input is waiting ([`TimerGate`]).
const MAX_TIMER_DEFERRALS: u32 = 8;
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

/// The connections whose sockets may have bytes to read, as their wakers report them, and
/// the node task's waker, to wake when the first is reported.
#[derive(Default)]
struct Readable {
    state: Mutex<ReadableState>,
}

#[derive(Default)]
struct ReadableState {
    conns: Vec<ConnId>,
    /// The node task, waiting; taken by the first report.
    waker: Option<Waker>,
}

impl Readable {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReadableState> {
        // Every update is one step: a panic while holding the lock leaves it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready if some connection was reported; else the node task is woken by the next report.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if !s.conns.is_empty() {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// True if some connection was reported and not taken yet.
    fn is_reported(&self) -> bool {
        !self.lock().conns.is_empty()
    }

    /// Moves the reported connections into `into`.
    fn take(&self, into: &mut Vec<ConnId>) {
        let mut s = self.lock();
        if into.is_empty() {
            std::mem::swap(into, &mut s.conns);
        } else {
            into.append(&mut s.conns);
        }
    }

    fn report(&self, conn: ConnId) {
        let waker = {
            let mut s = self.lock();
            s.conns.push(conn);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The waker a connection's socket is read with: waking it reports the connection readable
/// (once until it is read again).
struct ReadWaker {
    conn: ConnId,
    /// Reported and not read since.
    reported: AtomicBool,
    readable: Arc<Readable>,
}

impl Wake for ReadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.reported.swap(true, Ordering::AcqRel) {
            self.readable.report(self.conn);
        }
    }
}

/// The runtime side of the node task: what [`Core`] asks of it.
pub(crate) struct Driver<R: Runtime> {
    rt: R,
    net_tx: async_channel::Sender<Net<R::Socket>>,
    /// Connections to read.
    readable: Arc<Readable>,
    tasks: TaskSet,
    shared: Arc<Shared>,
    connect_timeout: Duration,
    /// The node's gate (see [`crate::NodeHandle::freeze`]): every task spawned here is behind it.
    gate: Arc<Gate>,
}

/// An attached socket, as the node task holds it. Dropping it stops the reading; the writer
/// finishes what it has, then lets go of the socket (closing it).
pub(crate) struct SocketLink<S> {
    socket: Arc<S>,
    /// What reading the socket reports to.
    read_waker: Arc<ReadWaker>,
    /// `read_waker` as a [`Waker`].
    waker: Waker,
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
        readable: Arc::new(Readable::default()),
        tasks: TaskSet::default(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained_tx, drained_rx }),
        connect_timeout: node.config().connect_timeout,
        gate,
    };
    let mut core = Core::new(node, store, opts, events);
    let accept = io.spawn(accept_loop(rt.clone(), listener, io.net_tx.clone(), tracing::Span::current()));
    io.tasks.push(accept);
    let mut timer: Option<R::Timer> = None;
    let mut armed = None;
    let mut timer_gate = TimerGate::default();
    // The receivers are polled as streams, which wants them pinned.
    let mut net_rx = std::pin::pin!(net_rx);
    let mut commands = std::pin::pin!(commands);
    let mut drained = std::pin::pin!(io.shared.drained_rx.clone());
    let readable = io.readable.clone();
    loop {
        // The timer is moved only when the node wants it earlier than it is set: a later
        // deadline (an acknowledgement came, a retransmission check was moved back) leaves it
        // where it is, and firing early is harmless (the node finds nothing due and the timer
        // is set again). Moving a runtime's timer earlier can cost a wake-up of the thread
        // that waits on timers, and per-hop acknowledgements move the node's deadline back and
        // forth with every message.
        match core.deadline() {
            Some(t) if armed.is_none_or(|a| t < a) => {
                match timer.as_mut() {
                    Some(timer) => timer.reset(t),
                    None => timer = Some(rt.timer(t)),
                }
                armed = Some(t);
            }
            // It fired (or was never set) and nothing is due.
            None if armed.is_none() => timer = None,
            _ => {}
        }
        let lagging = core.is_lagging();
        let saturated = core.is_saturated();
        let unread = core.has_unread();
        let congested = core.is_congested(&io);
        let holding = core.is_holding();
        let events = core.events();
        // Everything ready is taken in one wake-up and handled before one flush, so that the
        // frames it produces go out together.
        let woken = poll_fn(|cx| {
            let mut w = Woken::default();
            if let Some(t) = timer.as_mut() {
                w.timer = t.poll_elapsed(cx).is_ready();
            }
            if lagging {
                w.room = events.poll_room(cx).is_ready();
            }
            if !saturated {
                w.readable = unread || readable.poll(cx).is_ready();
                // The driver holds a sender itself: the channel never closes here.
                if let Poll::Ready(ev) = net_rx.as_mut().poll_next(cx) {
                    w.net = ev;
                }
            }
            if congested {
                w.drained = drained.as_mut().poll_next(cx).is_ready();
            } else if holding {
                // A send waits for room: the next round of input may make it.
            } else if let Poll::Ready(cmd) = commands.as_mut().poll_next(cx) {
                // `None`: every handle is gone.
                w.closed = cmd.is_none();
                w.command = cmd;
            }
            if w.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(w)
            }
        })
        .await;
        if let Some(ev) = woken.net {
            core.on_net(&mut io, ev);
            for _ in 0..BATCH {
                match net_rx.try_recv() {
                    Ok(ev) => core.on_net(&mut io, ev),
                    Err(_) => break,
                }
            }
        }
        if woken.readable {
            core.on_readable(&mut io);
        }
        if woken.timer {
            // Set again (or dropped) at the top of the loop.
            armed = None;
            let input_waiting = !core.is_saturated() && (core.has_unread() || readable.is_reported());
            // If it waits, it fires again at once: the next round reads first.
            if timer_gate.fires(input_waiting) {
                core.handle_timeout(&mut io);
            }
        }
        if let Some(cmd) = woken.command {
            if let Some(stop) = core.on_commands(&mut io, cmd, || commands.try_recv().ok()) {
                core.flush(&mut io);
                io.shutdown(&mut core).await;
                stop.send(());
                return;
            }
        }
        if woken.closed {
            break;
        }
        core.flush(&mut io);
        if let Some(waiting) = core.left() {
            io.shutdown(&mut core).await;
            for w in waiting {
                w.send(());
            }
            return;
        }
        if woken.readable && (core.has_unread() || readable.is_reported()) {
            // Some connection has more than a round's share (or the runtime asked its tasks
            // to take turns, as Tokio's cooperative budget does): let other tasks run first.
            yield_now().await;
        }
    }
    core.flush(&mut io);
    io.shutdown(&mut core).await;
}

/// Whether a due timer fires in this round. While input is waiting (a loaded machine did not
/// run the node task for a while), it waits for that input to be read first, so that the
/// acknowledgements in it are seen before the node judges its peers late; but never more
/// than [`MAX_TIMER_DEFERRALS`] rounds in a row, so that a node with input always waiting
/// still keeps its deadlines.
#[derive(Debug, Default)]
struct TimerGate {
    /// Rounds in a row the due timer has waited.
    deferred: u32,
}

impl TimerGate {
    /// True if the due timer fires now; `input_waiting`: some socket has input not yet read.
    fn fires(&mut self, input_waiting: bool) -> bool {
        if input_waiting && self.deferred < MAX_TIMER_DEFERRALS {
            self.deferred += 1;
            false
        } else {
            self.deferred = 0;
            true
        }
    }
}

/// What woke the node task: everything that was ready.
struct Woken<S> {
    timer: bool,
    /// Some connection may have bytes to read.
    readable: bool,
    net: Option<Net<S>>,
    command: Option<Command>,
    /// The writers wrote something.
    drained: bool,
    /// The application made room for events.
    room: bool,
    /// Every handle is gone.
    closed: bool,
}

impl<S> Default for Woken<S> {
    fn default() -> Self {
        Woken { timer: false, readable: false, net: None, command: None, drained: false, room: false, closed: false }
    }
}

impl<S> Woken<S> {
    fn is_empty(&self) -> bool {
        !(self.timer
            || self.readable
            || self.net.is_some()
            || self.command.is_some()
            || self.drained
            || self.room
            || self.closed)
    }
}

/// Lets the runtime run its other tasks before this one goes on.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
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
        let writer =
            self.spawn(write_loop(conn, socket.clone(), wrx, queued.clone(), self.shared.clone(), self.net_tx.clone()));
        self.tasks.push(writer);
        let read_waker =
            Arc::new(ReadWaker { conn, reported: AtomicBool::new(false), readable: self.readable.clone() });
        let waker = Waker::from(read_waker.clone());
        // Read it right away: the first read also registers the waker with the socket.
        waker.wake_by_ref();
        SocketLink { socket, read_waker, waker, writer: wtx, queued, shared: self.shared.clone() }
    }

    fn take_readable(&mut self, into: &mut Vec<ConnId>) {
        self.readable.take(into);
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

    fn try_read(&self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        // Cleared before reading: a wake-up from here on reports the connection again.
        self.read_waker.reported.store(false, Ordering::Release);
        self.socket.poll_read(&mut Context::from_waker(&self.waker), buf)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_socket_wake_reports_its_connection_once_and_wakes_the_node_task_once() {
        let readable = Arc::new(Readable::default());
        let node = Arc::new(Wakes::default());
        let node_waker = Waker::from(node.clone());
        let mut cx = Context::from_waker(&node_waker);
        assert!(readable.poll(&mut cx).is_pending());
        let conn = |c| Arc::new(ReadWaker { conn: c, reported: AtomicBool::new(false), readable: readable.clone() });
        let (a, b) = (conn(ConnId(1)), conn(ConnId(2)));
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        wa.wake_by_ref();
        wa.wake_by_ref();
        wb.wake_by_ref();
        // One wake-up of the node task for any number of reports; each connection once.
        assert_eq!(node.0.load(Ordering::SeqCst), 1);
        assert!(readable.poll(&mut cx).is_ready());
        let mut got = Vec::new();
        readable.take(&mut got);
        assert_eq!(got, [ConnId(1), ConnId(2)]);
        assert!(!readable.is_reported());
        // Not reported again until read (a read clears the mark).
        wa.wake_by_ref();
        assert!(!readable.is_reported());
        a.reported.store(false, Ordering::Release);
        assert!(readable.poll(&mut cx).is_pending());
        wa.wake_by_ref();
        assert_eq!(node.0.load(Ordering::SeqCst), 2);
        readable.take(&mut got);
        assert_eq!(got, [ConnId(1), ConnId(2), ConnId(1)]);
    }

    #[test]
    fn a_due_timer_waits_for_waiting_input_at_most_eight_rounds_in_a_row() {
        let mut gate = TimerGate::default();
        assert!(gate.fires(false), "nothing to read: it fires at once");
        for round in 0..3 {
            let waited = (0..).take_while(|_| !gate.fires(true)).count();
            assert_eq!(waited, MAX_TIMER_DEFERRALS as usize, "round {round}: input always waiting");
        }
        assert!(!gate.fires(true));
        assert!(gate.fires(false), "the input read, it fires");
        assert!(!gate.fires(true), "and the count starts again");
    }
}
