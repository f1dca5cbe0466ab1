//! The node task over Tokio: sockets, tasks, timers and channels. The node logic itself is
//! [`wendy_driver::Core`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;
use wendy_driver::{Command, Core, EventSender, Link, Net};
use wendy_proto::ConnId;

use crate::{Config, Options};

/// What the writers share with the node task.
struct Shared {
    /// Unwritten bytes of every connection together.
    queued: AtomicUsize,
    /// Signalled by writers whenever they have written something.
    drained: Notify,
}

/// The runtime side of the node task.
struct Tokio {
    net_tx: mpsc::Sender<Net<TcpStream>>,
    tasks: JoinSet<()>,
    shared: Arc<Shared>,
    read_buffer: usize,
    connect_timeout: Duration,
}

/// An attached socket.
struct TokioLink {
    /// Aborted when the link is dropped.
    reader: AbortHandle,
    /// The socket's write half, shared with the writer task: the node task writes to it
    /// directly while the writer has nothing queued. The last of the two to let go of it shuts
    /// the socket down.
    socket: Arc<OwnedWriteHalf>,
    writer: mpsc::UnboundedSender<Bytes>,
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
    mut commands: mpsc::Receiver<Command>,
    events: EventSender,
) {
    let (net_tx, mut net_rx) = mpsc::channel(256);
    let mut rt = Tokio {
        net_tx,
        tasks: JoinSet::new(),
        shared: Arc::new(Shared { queued: AtomicUsize::new(0), drained: Notify::new() }),
        read_buffer: opts.read_buffer,
        connect_timeout: config.connect_timeout,
    };
    let mut d = Core::new(config, opts, events);
    let origin = tokio::time::Instant::from_std(d.origin());
    rt.tasks.spawn(accept_loop(listener, rt.net_tx.clone()).in_current_span());
    let sleep = tokio::time::sleep_until(origin);
    tokio::pin!(sleep);
    loop {
        let deadline = d.deadline().map(tokio::time::Instant::from_std);
        if let Some(t) = deadline {
            if sleep.deadline() != t {
                sleep.as_mut().reset(t);
            }
        }
        let congested = d.is_congested(&rt);
        tokio::select! {
            biased;
            () = &mut sleep, if deadline.is_some() => d.handle_timeout(&mut rt),
            () = d.events().room(), if d.is_lagging() => {}
            Some(ev) = net_rx.recv(), if !d.is_lagging() => {
                d.on_net(&mut rt, ev);
                for _ in 0..BATCH {
                    match net_rx.try_recv() {
                        Ok(ev) => d.on_net(&mut rt, ev),
                        Err(_) => break,
                    }
                }
            }
            cmd = commands.recv(), if !congested => {
                // None: every handle is gone.
                let Some(cmd) = cmd else { break };
                if let Some(stop) = d.on_commands(&mut rt, cmd, || commands.try_recv().ok()) {
                    d.flush(&mut rt);
                    rt.shutdown(&mut d).await;
                    stop(());
                    return;
                }
            }
            () = rt.shared.drained.notified(), if congested => {}
        }
        d.flush(&mut rt);
    }
    d.flush(&mut rt);
    rt.shutdown(&mut d).await;
}

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<Net<TcpStream>>) {
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
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl wendy_driver::Runtime for Tokio {
    type Stream = TcpStream;
    type Link = TokioLink;

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let tx = self.net_tx.clone();
        let limit = self.connect_timeout;
        let span = tracing::debug_span!("connect", %conn, %addr);
        self.tasks.spawn(
            async move {
                let r = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                };
                let _ = tx.send(Net::Connected(conn, r)).await;
            }
            .instrument(span),
        );
    }

    fn attach(&mut self, conn: ConnId, stream: TcpStream, addr: SocketAddr) -> TokioLink {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let wr = Arc::new(wr);
        let queued = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = mpsc::unbounded_channel();
        let span = tracing::debug_span!("conn", %conn, %addr);
        let reader =
            self.tasks.spawn(read_loop(conn, rd, self.net_tx.clone(), self.read_buffer).instrument(span.clone()));
        self.tasks.spawn(
            write_loop(conn, wr.clone(), wrx, queued.clone(), self.shared.clone(), self.net_tx.clone())
                .instrument(span),
        );
        TokioLink { reader, socket: wr, writer: wtx, queued, shared: self.shared.clone() }
    }

    fn peer_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
        stream.peer_addr()
    }

    fn unwritten(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

impl Tokio {
    /// Lets go of every connection, lets writers finish (for a short while), then ends every
    /// task.
    async fn shutdown(&mut self, core: &mut Core<Tokio>) {
        core.close_all();
        let shared = self.shared.clone();
        let flushed = async {
            while shared.queued.load(Ordering::Relaxed) > 0 {
                shared.drained.notified().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flushed).await;
        self.tasks.abort_all();
        tracing::debug!("node stopped");
    }
}

impl Link for TokioLink {
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
        if self.writer.send(data).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.shared.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Drop for TokioLink {
    fn drop(&mut self) {
        // Stop reading; the writer finishes what it has.
        self.reader.abort();
    }
}

async fn read_loop(conn: ConnId, mut rd: OwnedReadHalf, tx: mpsc::Sender<Net<TcpStream>>, size: usize) {
    let mut buf = BytesMut::with_capacity(size);
    loop {
        buf.reserve(size);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                if tx.send(Net::Data(conn, buf.split().freeze())).await.is_err() {
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
    wr: Arc<OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Net<TcpStream>>,
) {
    let mut joined = Vec::new();
    while let Some(first) = rx.recv().await {
        // Coalesce whatever else is already queued into one write.
        let buf = wendy_driver::coalesce(&first, || rx.try_recv().ok(), &mut joined);
        let n = buf.len();
        let r = write_all(&wr, buf).await;
        queued.fetch_sub(n, Ordering::AcqRel);
        shared.queued.fetch_sub(n, Ordering::Relaxed);
        shared.drained.notify_one();
        if let Err(e) = r {
            tracing::debug!(error = %e, "write failed");
            // Give back the accounting of what will never be written.
            rx.close();
            while let Ok(rest) = rx.try_recv() {
                queued.fetch_sub(rest.len(), Ordering::Relaxed);
                shared.queued.fetch_sub(rest.len(), Ordering::Relaxed);
            }
            shared.drained.notify_one();
            let _ = tx.send(Net::Closed(conn)).await;
            return;
        }
    }
    // Dropping the last handle on the write half shuts the socket's sending side down.
}

/// Writes all of `buf` on a write half that the node task may also write to (never at the
/// same time: it only writes while this task has nothing queued).
async fn write_all(wr: &OwnedWriteHalf, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        wr.writable().await?;
        match wr.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
