//! The node task's logic: feeds the [`Node`] its inputs and carries out its outputs, leaving to
//! the runtime layer only what needs sockets, tasks and timers.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;

use bytes::BytesMut;
use wendy_proto::store::{OpId, Store};
use wendy_proto::{ConnId, Event, Instant, Node, NodeError, Output, RejectReason};

use crate::command::{Command, Reply, StoreResult};
use crate::events::Offered;
use crate::hostile::HostileLog;
use crate::{Error, EventSender, Forwarded, Metrics, NodeEvent, Options};

use crate::node_io::{hand_over, Batch, Conn};
pub(crate) use crate::node_io::{Io, Link, Net};

/// While the application lags, deliveries wait in the driver up to this many connection
/// windows' worth (65,536 at the default `max_pending_per_peer`) before the node stops reading
/// the network: as many peers as this can each fill their window towards a node whose
/// application lags without stopping it.
pub(crate) const LAG_WINDOWS: usize = 16;

/// The node task's state, apart from the runtime: the [`Node`], its connections' batches, the
/// events of the round and the callers waiting for a join.
///
/// A driver's loop: read the clock ([`tick`](Self::tick)) and feed inputs
/// ([`on_net`](Self::on_net), [`on_readable`](Self::on_readable), then
/// [`handle_timeout`](Self::handle_timeout), so that what came while the driver waited is seen
/// before the deadlines; then [`on_commands`](Self::on_commands)), then
/// [`flush`](Self::flush); sleep until
/// [`deadline`](Self::deadline) or the next input (and [`EventSender::poll_room`] while
/// [`is_lagging`](Self::is_lagging)), not reading the network while
/// [`is_saturated`](Self::is_saturated) and not taking commands while
/// [`is_congested`](Self::is_congested).
pub(crate) struct Core<R: Io> {
    node: Node,
    /// The storage layer, if the node runs one.
    store: Option<Store>,
    /// Callers waiting for a store operation.
    store_waiters: std::collections::BTreeMap<OpId, Reply<StoreResult>>,
    opts: Options,
    origin: std::time::Instant,
    /// The time of the current round of inputs (reading the clock per message costs).
    clock: Instant,
    conns: HashMap<ConnId, Conn<R::Link>>,
    /// Connections with frames in their batch.
    dirty: Vec<ConnId>,
    /// Bytes in the current batches of every connection.
    batched: usize,
    events: EventSender,
    /// Events of the current round, and events waiting for the application to make room.
    /// While the application lags, the node keeps reading the network (acknowledgements
    /// included) but does not report what it delivers handed on
    /// ([`Node::set_application_lagging`]): each peer's window bounds what it sends on, so a
    /// slow application slows its peers down instead of losing deliveries or stalling its
    /// own sends. Past [`LAG_WINDOWS`] windows' worth waiting here, it stops reading too.
    outbox: Vec<NodeEvent>,
    /// True while the application has no room for `outbox`.
    lagging: bool,
    /// What the node was last told of `lagging`.
    node_lagging: bool,
    /// A send waiting for room in the node ([`held`]).
    held: Option<held::Held>,
    /// The connections to read: left over from the last round, then those reported since.
    readable: Vec<ConnId>,
    /// The connections with more to read than a round's share (the memory is kept).
    read_again: Vec<ConnId>,
    /// Where sockets are read into; what a read filled is split off and handed to the node.
    read_buf: BytesMut,
    events_dropped: u64,
    join_waiters: Vec<Reply<Result<(), Error>>>,
    /// Rate-limited logging of hostile or broken peers.
    hostile: HostileLog,
    /// The last peer that refused us during the join, and why.
    rejected_by: Option<(SocketAddr, RejectReason)>,
    /// Callers waiting for the node to have left.
    leaving: Vec<Reply<()>>,
    /// When the node stops even if it has not drained.
    leave_deadline: Option<std::time::Instant>,
    /// The node said it holds nothing more to send (after leave).
    drained: bool,
}

/// Reads of one connection per round of [`Core::on_readable`] (each up to
/// [`Options::read_buffer`] bytes); a connection with more waits for the next round.
const READS_PER_CONN: usize = 4;
/// Reads of all connections together per round of [`Core::on_readable`].
const READS_PER_ROUND: usize = 256;
/// Sends of a `send_batch` between two drains of the node's outputs.
const SEND_BATCH_DRAIN: usize = 256;
/// Bytes batched by a run of commands after which the frames are handed to the writers.
const COMMAND_BATCH_BYTES: usize = 256 << 10;

impl<R: Io> Core<R> {
    /// Drives `node`, whose clock started at [`Instant::ZERO`], from now on.
    pub fn new(node: Node, store: Option<Store>, opts: Options, events: EventSender) -> Self {
        Core {
            node,
            store,
            store_waiters: std::collections::BTreeMap::new(),
            opts,
            origin: std::time::Instant::now(),
            clock: Instant::ZERO,
            conns: HashMap::new(),
            dirty: Vec::new(),
            batched: 0,
            events,
            outbox: Vec::new(),
            lagging: false,
            node_lagging: false,
            held: None,
            readable: Vec::new(),
            read_again: Vec::new(),
            read_buf: BytesMut::new(),
            events_dropped: 0,
            join_waiters: Vec::new(),
            hostile: HostileLog::default(),
            rejected_by: None,
            leaving: Vec::new(),
            leave_deadline: None,
            drained: false,
        }
    }

    /// A graceful stop: the store's records reach the disk; the store is gone afterwards.
    pub fn close_store(&mut self) {
        if let Some(mut s) = self.store.take() {
            s.close();
        }
    }

    /// Reads the clock: the time of the next inputs.
    pub fn tick(&mut self) {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.clock = Instant::from_micros(micros);
    }

    /// Handles the node's timer.
    pub fn handle_timeout(&mut self, rt: &mut R) {
        self.tick();
        self.node.handle_timeout(self.clock);
        if let Some(s) = self.store.as_mut() {
            s.handle_timeout(self.clock, &mut self.node);
        }
        self.drain(rt);
    }

    /// Handles an input from the network.
    pub fn on_net(&mut self, rt: &mut R, ev: Net<R::Stream>) {
        self.tick();
        let now = self.clock;
        match ev {
            Net::Accepted(stream, addr) => {
                let conn = self.node.handle_accepted(now, addr);
                tracing::debug!(%conn, %addr, "accepted");
                self.attach(rt, conn, stream, addr);
            }
            Net::Connected(conn, Ok(stream)) => {
                if !self.conns.contains_key(&conn) {
                    // The node gave up on it meanwhile.
                    return;
                }
                let addr = R::peer_addr(&stream).unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                tracing::debug!(%conn, %addr, "connected");
                self.attach(rt, conn, stream, addr);
                self.node.handle_connected(now, conn);
            }
            Net::Connected(conn, Err(e)) => {
                if self.conns.remove(&conn).is_some() {
                    tracing::debug!(%conn, error = %e, "connect failed");
                    self.node.handle_connect_failed(now, conn);
                }
            }
            Net::Closed(conn) => self.closed_by_peer(conn, None),
        }
        self.drain(rt);
    }

    /// Reads the connections reported readable (and those left over from the last round), a
    /// few reads each and [`READS_PER_ROUND`] in all, feeding the node what they have; those
    /// with more, and those not reached, are read next round first
    /// ([`has_unread`](Self::has_unread)). Call it only while not
    /// [`is_saturated`](Self::is_saturated).
    pub fn on_readable(&mut self, rt: &mut R) {
        let mut ready = std::mem::take(&mut self.readable);
        rt.take_readable(&mut ready);
        if ready.is_empty() {
            self.readable = ready;
            return;
        }
        self.tick();
        let now = self.clock;
        let size = self.opts.read_buffer.max(1);
        let mut more = std::mem::take(&mut self.read_again);
        let mut budget = READS_PER_ROUND;
        let mut taken = 0;
        for &conn in &ready {
            if budget == 0 {
                break;
            }
            taken += 1;
            for reads in 1..=READS_PER_CONN {
                let Some(link) = self.conns.get(&conn).and_then(|c| c.link.as_ref()) else { break };
                if self.read_buf.len() < size / 4 + 1 {
                    self.read_buf = BytesMut::zeroed(size);
                }
                match link.try_read(&mut self.read_buf) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(0)) => {
                        self.closed_by_peer(conn, None);
                        break;
                    }
                    Poll::Ready(Err(e)) => {
                        self.closed_by_peer(conn, Some(e));
                        break;
                    }
                    Poll::Ready(Ok(n)) => {
                        let data = self.read_buf.split_to(n).freeze();
                        self.node.handle_bytes(now, conn, data);
                        self.drain(rt);
                        budget -= 1;
                        if reads == READS_PER_CONN || budget == 0 {
                            // It may have more (its socket's waker is not set until a read
                            // finds nothing).
                            more.push(conn);
                            break;
                        }
                    }
                }
            }
        }
        // Those not reached first, then those with more.
        ready.drain(..taken);
        ready.append(&mut more);
        self.readable = ready;
        self.read_again = more;
    }

    /// True if connections are left to read from the last [`on_readable`](Self::on_readable).
    pub fn has_unread(&self) -> bool {
        !self.readable.is_empty()
    }

    /// The peer closed `conn`, or it failed: the node forgets it (dropping its link, whose
    /// writer then ends).
    fn closed_by_peer(&mut self, conn: ConnId, error: Option<io::Error>) {
        if self.conns.remove(&conn).is_some() {
            match error {
                Some(error) => tracing::debug!(%conn, %error, "connection failed"),
                None => tracing::debug!(%conn, "closed by peer"),
            }
            self.node.handle_closed(self.clock, conn);
        }
    }

    /// Handles `first`, then the commands `next` has ready, while the writers keep up and the
    /// batches stay moderate. `Some` if the node task should end: flush, shut down, then
    /// answer it.
    pub fn on_commands(
        &mut self,
        rt: &mut R,
        first: Command,
        mut next: impl FnMut() -> Option<Command>,
    ) -> Option<Reply<()>> {
        self.tick();
        let mut stop = self.on_command(rt, first);
        let mut n = 0u32;
        while stop.is_none() && !self.is_congested(rt) && !self.is_holding() {
            match next() {
                Some(cmd) => stop = self.on_command(rt, cmd),
                None => break,
            }
            if self.batched > COMMAND_BATCH_BYTES {
                break;
            }
            n += 1;
            if n % 64 == 0 {
                self.tick();
            }
        }
        stop
    }

    /// Hands every connection's batch to its writer and the round's events to the application;
    /// disconnects peers that fell too far behind.
    pub fn flush(&mut self, rt: &mut R) {
        // Events first: the application's answer to a delivery is what a peer waits for,
        // while the frames of the round (acknowledgements, mostly, when a message is
        // delivered) can go out while it runs.
        self.retry_held(rt);
        self.publish();
        if self.node_lagging != self.lagging {
            // The node hands on (or stops handing on) what it delivered: the acknowledgements
            // that say so go out with this round's frames.
            self.node_lagging = self.lagging;
            self.tick();
            self.node.set_application_lagging(self.clock, self.lagging);
            self.drain(rt);
        }
        self.batched = 0;
        let mut slow = Vec::new();
        for conn in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            if c.link.as_ref().is_some_and(|l| l.queued() > self.opts.max_conn_queue_bytes) {
                slow.push(conn);
                continue;
            }
            hand_over(c);
        }
        for conn in slow {
            if let Some(c) = self.conns.remove(&conn) {
                let queued = c.link.as_ref().map_or(0, Link::queued);
                tracing::warn!(%conn, queued, "peer too slow: disconnected");
                drop(c);
                self.tick();
                self.node.handle_closed(self.clock, conn);
                self.drain(rt);
            }
        }
        if !self.dirty.is_empty() {
            // Closing slow peers produced more frames: hand those over too (at most once more).
            for conn in std::mem::take(&mut self.dirty) {
                if let Some(c) = self.conns.get_mut(&conn) {
                    hand_over(c);
                }
            }
        }
        self.batched = 0;
        if !self.outbox.is_empty() {
            // Events of the slow peers' closing.
            self.publish();
        }
    }

    /// Hands what is batched to the writers and lets go of every connection: the writers
    /// finish what they have, then close their sockets. For shutting down.
    pub fn close_all(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.conns) {
            hand_over(&mut c);
        }
        self.dirty.clear();
    }

    /// When the node next wants [`handle_timeout`](Self::handle_timeout), if ever (or, while
    /// leaving, when the leave gives up waiting for the node to drain).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        let store = self.store.as_ref().and_then(Store::poll_timeout);
        let node = match (self.node.poll_timeout(), store) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let node = node.map(|t| self.origin + std::time::Duration::from_micros(t.as_micros()));
        [node, self.leave_deadline, self.held_deadline()].into_iter().flatten().min()
    }

    /// After a leave: the callers to answer once the node task has stopped, when the node has
    /// drained (every frame it had to send was handed to the writers) or the leave took longer
    /// than [`Options::leave_limit`].
    pub fn left(&mut self) -> Option<Vec<Reply<()>>> {
        let deadline = self.leave_deadline?;
        if self.drained || std::time::Instant::now() >= deadline {
            if !self.drained {
                tracing::warn!("the node did not drain within {:?} of leaving: stopping", self.opts.leave_limit);
            }
            self.leave_deadline = None;
            return Some(std::mem::take(&mut self.leaving));
        }
        None
    }

    /// True while the application has no room for more events: wait for
    /// [`EventSender::poll_room`] too.
    pub fn is_lagging(&self) -> bool {
        self.lagging
    }

    /// True while the application lags by [`LAG_WINDOWS`] connection windows of deliveries
    /// more than its queue holds: read no network input until [`EventSender::poll_room`] resolves.
    ///
    /// Until then the node reads on, so that it answers its peers' probes and reads their
    /// acknowledgements: a node that stops reading looks dead to its peers once their probes
    /// time out, and they route its keys elsewhere.
    pub fn is_saturated(&self) -> bool {
        let window = self.node.config().route_window();
        self.lagging && self.outbox.len() >= window.saturating_mul(LAG_WINDOWS).max(self.opts.event_capacity)
    }

    /// True while more than [`Options::max_queued_bytes`] wait to be written: take no
    /// commands until the writers catch up.
    pub fn is_congested(&self, rt: &R) -> bool {
        rt.unwritten() > self.opts.max_queued_bytes
    }

    /// A snapshot of the node's metrics.
    pub fn metrics(&self, rt: &R) -> Metrics {
        let stats = self.node.stats();
        Metrics {
            ready: self.node.is_ready(),
            leaf_set_size: self.node.leaf_set().members().len(),
            routing_table_size: self.node.routing_table().len(),
            connections: self.node.connection_count(),
            pending_messages: self.node.pending_messages(),
            queued_bytes: rt.unwritten() + self.batched,
            tasks: rt.tasks(),
            events_dropped: self.events_dropped,
            stats,
            store: self.store.as_ref().map(Store::stats),
        }
    }

    /// The application's event stream, from the node task's side.
    pub fn events(&self) -> &EventSender {
        &self.events
    }

    /// Handles one command; `Some` if the node task should end after answering it.
    fn on_command(&mut self, rt: &mut R, cmd: Command) -> Option<Reply<()>> {
        let now = self.clock;
        match cmd {
            Command::Join(bootstraps, reply) => match self.node.join(now, &bootstraps) {
                Ok(()) => self.join_waiters.push(reply),
                Err(e) => reply.send(Err(Error::Command(e))),
            },
            // Answered at once, before the frames are written: the sender prepares its next
            // message meanwhile (answering after the write halved the rate of one `send` at a
            // time).
            // A send the node has no room for waits ([`held`]).
            Command::Send { key, purpose, payload, reply } => {
                self.send_one(rt, held::Dest::Key(key), purpose, payload, reply)
            }
            Command::SendTo { target, purpose, payload, reply } => {
                self.send_one(rt, held::Dest::Direct(target), purpose, payload, reply)
            }
            Command::SendBatch(batch, reply) => self.send_many(rt, batch, reply),
            Command::Hook(h) => self.node.set_forward_hook(h),
            Command::Write { key, value, ttl, reply } => {
                let r = match (self.store.as_mut(), value) {
                    (None, _) => Err(crate::Error::NoStore),
                    (Some(s), Some(v)) => s.put(now, &mut self.node, key, v, ttl).map_err(Error::Store),
                    (Some(s), None) => s.delete(now, &mut self.node, key).map_err(Error::Store),
                };
                match r {
                    Ok(op) => {
                        self.store_waiters.insert(op, reply);
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            Command::Read { key, reply } => {
                let r = match self.store.as_mut() {
                    None => Err(crate::Error::NoStore),
                    Some(s) => s.get(now, &mut self.node, key).map_err(Error::Store),
                };
                match r {
                    Ok(op) => {
                        self.store_waiters.insert(op, reply);
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            Command::Inspect(f) => f(&self.node),
            Command::Metrics(reply) => reply.send(self.metrics(rt)),
            Command::Leave(reply) => {
                tracing::info!("leaving");
                if self.leave_deadline.is_none() {
                    self.leave_deadline = Some(std::time::Instant::now() + self.opts.leave_limit);
                }
                self.leaving.push(reply);
                self.node.leave(now);
            }
            Command::Stop(reply) => return Some(reply),
        }
        self.drain(rt);
        None
    }

    /// Carries out every output the node has.
    fn drain(&mut self, rt: &mut R) {
        let now = self.clock;
        while let Some(out) = self.node.poll_output() {
            let out = match self.store.as_mut() {
                Some(s) => match s.handle_output(now, &mut self.node, out) {
                    Some(out) => out,
                    None => continue,
                },
                None => out,
            };
            match out {
                Output::Transmit { conn, data } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if c.batch.is_empty() {
                            self.dirty.push(conn);
                        }
                        self.batched += data.len();
                        c.batch.push(data);
                    }
                }
                Output::Connect { conn, addr } => {
                    self.conns.insert(conn, Conn { link: None, batch: Batch::default() });
                    rt.connect(conn, addr);
                }
                Output::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        tracing::debug!(%conn, "closing");
                        hand_over(&mut c);
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
        if let Some(s) = self.store.as_mut() {
            while let Some(e) = s.poll_event() {
                if let Some(w) = self.store_waiters.remove(&e.op) {
                    w.send(e.result.map_err(Error::Store));
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match &ev {
            Event::Joined => {
                tracing::info!("joined");
                for w in self.join_waiters.drain(..) {
                    w.send(Ok(()));
                }
            }
            Event::Error(e @ NodeError::JoinFailed { .. }) => {
                tracing::warn!(error = %e, "join failed");
                let rejected = self.rejected_by.take();
                for w in self.join_waiters.drain(..) {
                    w.send(Err(match rejected {
                        Some((addr, reason)) => Error::Rejected { addr, reason },
                        None => Error::JoinFailed(e.clone()),
                    }));
                }
            }
            Event::RejectedByPeer { addr, reason } => {
                tracing::warn!(%addr, "rejected by {addr}: {}", crate::hostile::describe(*reason));
                if !self.join_waiters.is_empty() {
                    self.rejected_by = Some((*addr, *reason));
                }
            }
            Event::Drained => {
                tracing::debug!("drained");
                self.drained = true;
            }
            Event::Error(e @ (NodeError::Decode { .. } | NodeError::Protocol { .. })) => {
                self.hostile.bad_input(e);
            }
            Event::Error(e) => tracing::debug!(error = %e, "node error"),
            Event::PeerRejected { addr, claimed, reason } => {
                self.hostile.rejected(*addr, *claimed, *reason);
                if !self.join_waiters.is_empty() {
                    self.rejected_by = Some((*addr, *reason));
                }
            }
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
        match self.events.offer(&mut self.outbox) {
            Offered::Sent => self.lagging = false,
            Offered::Full => self.lagging = true,
            Offered::Closed => {
                // Nobody reads events any more.
                self.outbox.clear();
                self.lagging = false;
            }
        }
    }

    /// Attaches a socket to `conn` (starts its writer; it is read from now on).
    fn attach(&mut self, rt: &mut R, conn: ConnId, stream: R::Stream, addr: SocketAddr) {
        let link = rt.attach(conn, stream, addr);
        self.conns.entry(conn).or_insert_with(|| Conn { link: None, batch: Batch::default() }).link = Some(link);
    }
}

mod held;
pub(crate) use held::SEND_WAIT;

#[cfg(test)]
mod tests;
