//! The node task's interface to the runtime side ([`Io`], [`Link`], [`Net`]) and what it
//! writes through it: each connection's batch of frames not yet handed to its writer
//! ([`Batch`], [`hand_over`]). [`Core`](crate::core::Core) drives both.

use std::io;
use std::net::SocketAddr;
use std::task::Poll;

use bytes::Bytes;
use wendy_proto::ConnId;

/// What the runtime side of the node task does for [`Core`](crate::core::Core): dial peers, tell which sockets to
/// read and run their writers. [`Core`](crate::core::Core) calls it while it carries out the node's outputs.
pub(crate) trait Io {
    /// A connected socket, not yet attached to a connection.
    type Stream;
    /// The node task's hold on an attached socket; dropping it stops the reading, and the
    /// writer closes the socket once it has written what it has.
    type Link: Link;

    /// Starts dialing `addr` for `conn`, giving up after the connect timeout; the outcome comes
    /// back as [`Net::Connected`].
    fn connect(&mut self, conn: ConnId, addr: SocketAddr);
    /// Attaches `stream` to `conn`: starts its writer, and reports the connection readable
    /// (through [`take_readable`](Self::take_readable)) whenever its socket may have bytes,
    /// first right away.
    fn attach(&mut self, conn: ConnId, stream: Self::Stream, addr: SocketAddr) -> Self::Link;
    /// Moves the connections reported readable since the last call into `into`.
    fn take_readable(&mut self, into: &mut Vec<ConnId>);
    /// The peer's address of a connected stream.
    fn peer_addr(stream: &Self::Stream) -> io::Result<SocketAddr>;
    /// Bytes handed to writers and not yet written, all connections together.
    fn unwritten(&self) -> usize;
    /// Tasks of the node still running (accept loop, dials, writers).
    fn tasks(&self) -> usize;
}

/// One attached socket, as the node task writes to it.
pub(crate) trait Link {
    /// Bytes handed to the writer and not yet written.
    fn queued(&self) -> usize;
    /// Writes what the socket takes now, without waiting; 0 if it takes nothing (or fails:
    /// the writer finds out).
    fn try_write(&self, buf: &[u8]) -> usize;
    /// Hands `data` to the writer, counting it as queued until written.
    fn queue(&self, data: Bytes);
    /// Reads what the socket has, without waiting: `Pending` if it has nothing now, and then
    /// the connection is reported readable again once it has. `Ok(0)` at the end of the stream.
    fn try_read(&self, buf: &mut [u8]) -> Poll<io::Result<usize>>;
}

/// An input from the network side other than bytes (which the node task reads itself, see
/// [`Core::on_readable`](crate::core::Core::on_readable)): a socket is only read once it was attached, so its data never
/// overtakes the news that it was established.
#[derive(Debug)]
pub(crate) enum Net<S> {
    /// A peer connected to us.
    Accepted(S, SocketAddr),
    /// A dial ended.
    Connected(ConnId, io::Result<S>),
    /// A connection failed (its writer could not write).
    Closed(ConnId),
}

/// Frames for one connection not yet handed to its writer.
pub(crate) struct Conn<L> {
    /// `None` while dialing.
    pub(crate) link: Option<L>,
    /// The current batch, as the node handed it over.
    pub(crate) batch: Batch,
}

/// A connection's frames not yet handed to its writer. The node hands over one `Transmit` per
/// connection per input (an encrypted connection's frames are sealed together), so a batch is
/// often a single one: it is kept as the node's [`Bytes`] and written from there, not copied.
/// Only a second transmit before the next flush joins them in `joined` (whose memory is kept
/// from batch to batch).
#[derive(Default)]
pub(crate) struct Batch {
    one: Option<Bytes>,
    joined: Vec<u8>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.one.as_ref().is_none_or(Bytes::is_empty) && self.joined.is_empty()
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        if self.is_empty() {
            self.one = Some(data);
            return;
        }
        if let Some(first) = self.one.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&data);
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.one {
            Some(b) => b,
            None => &self.joined,
        }
    }

    /// Forgets what the batch holds, keeping the memory of `joined`.
    pub(crate) fn clear(&mut self) {
        self.one = None;
        self.joined.clear();
    }

    /// What is left from byte `from` on, as one [`Bytes`] (no copy), leaving the batch empty.
    pub(crate) fn take_from(&mut self, from: usize) -> Bytes {
        match self.one.take() {
            Some(b) => b.slice(from..),
            None => Bytes::from(std::mem::take(&mut self.joined)).slice(from..),
        }
    }
}

/// Hands a connection's batch to its socket: straight away if its writer is idle (saving the
/// writer a wake-up), else (or what the socket does not take) to the writer.
pub(crate) fn hand_over<L: Link>(c: &mut Conn<L>) {
    if c.batch.is_empty() {
        return;
    }
    let Some(link) = &c.link else {
        c.batch.clear();
        return;
    };
    let mut written = 0;
    if link.queued() == 0 {
        let buf = c.batch.as_slice();
        while written < buf.len() {
            match link.try_write(&buf[written..]) {
                0 => break,
                n => written += n,
            }
        }
        if written == buf.len() {
            c.batch.clear();
            return;
        }
    }
    link.queue(c.batch.take_from(written));
}
