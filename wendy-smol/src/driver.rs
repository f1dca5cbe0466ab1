//! The node task over smol: sockets, tasks, timers and channels. The node logic itself is
//! [`wendy_driver::Core`].

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
use wendy_driver::{Command, Core, EventSender, Link, Net};
use wendy_proto::ConnId;

use crate::{Config, Options};

/// What the writers share with the node task.
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

/// The runtime side of the node task.
struct Smol {
    net_tx: channel::Sender<Net<TcpStream>>,
    /// Tasks that are not a connection's reader (accept loop, dials, writers); dropped with the
    /// driver, which cancels them.
    tasks: Vec<Task<()>>,
    shared: Arc<Shared>,
    read_buffer: usize,
    connect_timeout: Duration,
}

/// An attached socket.
struct SmolLink {
    /// Dropping it cancels the reader.
    _reader: Task<()>,
    /// The socket, for writing to it directly while the writer task has nothing queued.
    socket: Arc<Async<std::net::TcpStream>>,
    writer: channel::Sender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
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
    let (net_tx, net_rx) = channel::bounded(256);
    let (drained_tx, drained_rx) = channel::bounded(1);
    let mut rt = Smol {
        net_tx,
        tasks: Vec::new(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained_tx, drained_rx }),
        read_buffer: opts.read_buffer,
        connect_timeout: config.connect_timeout,
    };
    let mut d = Core::new(config, opts, events);
    let accept = accept_loop(listener, rt.net_tx.clone()).in_current_span();
    rt.spawn(accept);
    let mut timer = Timer::never();
    let mut armed: Option<std::time::Instant> = None;
    loop {
        let blocked = d.is_lagging();
        let deadline = d.deadline();
        if deadline != armed {
            match deadline {
                Some(t) => timer.set_at(t),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
        let congested = d.is_congested(&rt);
        let shared = rt.shared.clone();
        let events = d.events();
        // Biased towards the timer, then the network, then the application.
        let wake = async {
            (&mut timer).await;
            Wake::Timer
        }
        .or(async {
            if blocked {
                events.room().await;
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
                d.handle_timeout(&mut rt);
            }
            Wake::Net(ev) => {
                d.on_net(&mut rt, ev);
                for _ in 0..BATCH {
                    match net_rx.try_recv() {
                        Ok(ev) => d.on_net(&mut rt, ev),
                        Err(_) => break,
                    }
                }
            }
            Wake::Command(cmd) => {
                if let Some(stop) = d.on_commands(&mut rt, cmd, || commands.try_recv().ok()) {
                    d.flush(&mut rt);
                    rt.shutdown(&mut d).await;
                    stop(());
                    return;
                }
            }
            Wake::Drained => {}
            Wake::Room => {}
            // Every handle is gone.
            Wake::Closed => break,
        }
        d.flush(&mut rt);
    }
    d.flush(&mut rt);
    rt.shutdown(&mut d).await;
}

enum Wake {
    Timer,
    Net(Net<TcpStream>),
    Command(Command),
    Drained,
    Room,
    Closed,
}

async fn accept_loop(listener: TcpListener, tx: channel::Sender<Net<TcpStream>>) {
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

impl wendy_driver::Runtime for Smol {
    type Stream = TcpStream;
    type Link = SmolLink;

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
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

    fn attach(&mut self, conn: ConnId, stream: TcpStream, addr: SocketAddr) -> SmolLink {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = (stream.clone(), stream.clone());
        let socket = Arc::<Async<std::net::TcpStream>>::from(stream);
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = channel::unbounded();
        let span = tracing::debug_span!("conn", %conn, %addr);
        let reader = smol::spawn(read_loop(conn, rd, self.net_tx.clone(), self.read_buffer).instrument(span.clone()));
        self.spawn(
            write_loop(conn, wr, wrx, queued.clone(), self.shared.clone(), self.net_tx.clone()).instrument(span),
        );
        SmolLink { _reader: reader, socket, writer: wtx, queued, shared: self.shared.clone() }
    }

    fn peer_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
        stream.peer_addr()
    }

    fn unwritten(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl Smol {
    fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(smol::spawn(f));
    }

    /// Lets go of every connection, lets writers finish (for a short while), then ends every
    /// task.
    async fn shutdown(&mut self, core: &mut Core<Smol>) {
        core.close_all();
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

impl Link for SmolLink {
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn try_write(&self, buf: &[u8]) -> usize {
        // The socket is non-blocking: this never waits.
        self.socket.get_ref().write(buf).unwrap_or(0)
    }

    fn queue(&self, data: Bytes) {
        let n = data.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        self.shared.queued.fetch_add(n, Ordering::Relaxed);
        if self.writer.try_send(data).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

async fn read_loop(conn: ConnId, mut rd: TcpStream, tx: channel::Sender<Net<TcpStream>>, size: usize) {
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
    tx: channel::Sender<Net<TcpStream>>,
) {
    let mut joined = Vec::new();
    while let Ok(first) = rx.recv().await {
        // Coalesce whatever else is already queued into one write.
        let buf = wendy_driver::coalesce(&first, || rx.try_recv().ok(), &mut joined);
        let n = buf.len();
        let r = wr.write_all(buf).await;
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
