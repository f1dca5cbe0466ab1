//! Connections: dialling, accepting, graceful and abrupt closing, per-peer queues.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::config::MemberConnections;
use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{ConnId, NodeError, Output};
use crate::secure::{Channel, Handshake};
use crate::time::Instant;
use crate::wire::{self, FrameDecoder, Message, NONCE_LEN};

use super::acks::Flight;
use super::counters::Counter;
use super::liveness::MIN_STEP;
use super::timers::TimerKey;
use super::{Node, State};

#[derive(Debug)]
pub(super) struct Conn {
    /// The remote address ([`Conn::addr`]).
    addr: ConnAddr,
    pub(super) phase: Phase,
    /// What the connection holds only while it carries traffic ([`ConnIo`]): allocated on
    /// first use, released when the connection falls idle ([`Conn::release_idle`]). A
    /// plaintext connection gives it back as soon as it holds nothing ([`Conn::trim_io`]).
    pub(super) io: Option<Box<ConnIo>>,
    /// In use since it last fell idle: set on first use, cleared by [`Conn::release_idle`].
    /// Its buffers are allocated whenever this is set, except on a plaintext connection
    /// between inputs, which needs none; the idle check is armed when it becomes set.
    pub(super) in_use: bool,
    /// The largest frame body its decoder accepts (the handshake's limit until it opens).
    pub(super) max_frame: u32,
    /// An authenticated frame arrived after the handshake: from now on a plaintext refusal
    /// is not believed.
    pub(super) heard: bool,
    /// The peer dialled this connection: it decides when it is no longer needed (see
    /// [`Node::conn_timer`]).
    pub(super) accepted: bool,
    pub(super) opened: Instant,
    pub(super) last_active: Instant,
    /// When we sent our first handshake message: its answer gives a free round-trip sample.
    pub(super) handshake_sent: Option<Instant>,
    /// When we sent `Closing` on it: it carries nothing more from us and is forgotten when the
    /// peer closes its end (its answer).
    pub(super) closing: Option<Instant>,
    /// The node at the other end, meaningful if `ids` says so: the one we dialled
    /// ([`EXPECTED`], [`Conn::expected`]) and, once the handshake completed, the one it
    /// authenticated ([`PEER`], [`Conn::peer`]). The handshake refuses any node but the one
    /// dialled, so one id serves both: 16 bytes, and the record is 120 bytes (an allocator's
    /// 128-byte class; with two ids it took 136 and the 160-byte class).
    id: NodeId,
    /// Which roles `id` has ([`EXPECTED`], [`PEER`]), and the connection's other marks; the
    /// bits fit in the record's padding.
    ids: u8,
    /// This connection's entry in the timer table.
    pub(super) timer: Option<Instant>,
    /// Per-hop acknowledgement state, from the first routed message on.
    pub(super) flight: Option<Box<Flight>>,
    /// The transport keys, once an encrypted connection's handshake completed.
    pub(super) channel: Option<Box<Channel>>,
}

/// [`Conn::ids`]: the connection was dialled to a known id.
const EXPECTED: u8 = 1;
/// [`Conn::ids`]: the handshake authenticated the node at the other end.
const PEER: u8 = 2;
/// [`Conn::ids`]: dialled only to time its set-up (a candidate's round trip), closed once
/// established with nothing sent.
const TIMING: u8 = 4;
/// [`Conn::ids`]: its set-up outlasted `setup_patience` once ([`Node::setup_check`]).
const LATE: u8 = 8;

/// A connection's remote address: 16 bytes where a `SocketAddr` takes 32, IPv4 (the common
/// case) inline, others boxed.
#[derive(Debug)]
enum ConnAddr {
    V4(std::net::SocketAddrV4),
    Other(Box<SocketAddr>),
}

/// A connection's buffers and queues: what it needs only while frames come and go. An idle
/// connection (most connections to table members, which are kept open for their rare probes)
/// holds none of it.
#[derive(Debug)]
pub(super) struct ConnIo {
    pub(super) decoder: FrameDecoder,
    /// Messages waiting for the connection to open.
    pub(super) pending: VecDeque<Message>,
    /// Encrypted connections: the plaintext frames queued during this input, sealed together
    /// when the node's outputs are polled (a buffer of the node's pool while in use, empty
    /// and unallocated otherwise).
    pub(super) tx: Vec<u8>,
    /// Where in the node's output queue the `Transmit` that will carry `tx` sits.
    pub(super) tx_slot: Option<u64>,
    /// Encrypted connections: the buffer records are opened into. Each record's plaintext is
    /// split off it, and the frames' payloads are slices of that; once they are all dropped
    /// (delivered, or forwarded and acknowledged) the next record reuses the memory. One per
    /// connection, since payloads live as long as their next hop takes to acknowledge them;
    /// not kept after a record of more than 16 KiB.
    pub(super) rx: bytes::BytesMut,
}

impl ConnIo {
    pub(super) fn new(max_frame: usize) -> Self {
        ConnIo {
            decoder: FrameDecoder::new(max_frame),
            pending: VecDeque::new(),
            tx: Vec::new(),
            tx_slot: None,
            rx: bytes::BytesMut::new(),
        }
    }

    /// Holds nothing that must survive: no partial frame, queued message or unsealed frame.
    fn is_idle(&self) -> bool {
        self.decoder.buffered() == 0 && self.pending.is_empty() && self.tx_slot.is_none() && self.tx.is_empty()
    }
}

/// Where a connection's set-up stands. `AwaitHelloAck` and `AwaitAuth` belong to the
/// plaintext handshake, `AwaitReply` and `AwaitFinish` to the Noise one. What a phase holds is
/// boxed, so that it is 16 bytes: a connection is in these phases for a round trip or two of
/// its life, and open for the rest.
#[derive(Debug)]
pub(super) enum Phase {
    Dialing {
        nonce: Box<[u8; NONCE_LEN]>,
    },
    AwaitHelloAck {
        nonce: Box<[u8; NONCE_LEN]>,
    },
    /// Accepted: waiting for the dialler's first handshake message (either handshake).
    AwaitHello,
    AwaitAuth(Box<AwaitAuth>),
    /// Dialled, first Noise message sent: waiting for the acceptor's.
    AwaitReply(Box<Handshake>),
    /// Accepted, second Noise message sent: waiting for the dialler's last.
    AwaitFinish(Box<Handshake>),
    Open,
}

/// Accepted, plaintext handshake: the dialler's `Hello` answered, waiting for its `Auth`
/// (boxed: a connection is in this phase for one round trip of its life).
#[derive(Debug)]
pub(super) struct AwaitAuth {
    pub(super) dialer_nonce: [u8; NONCE_LEN],
    pub(super) my_nonce: [u8; NONCE_LEN],
    pub(super) info: NodeInfo,
}

impl Phase {
    /// True while we wait for the dialler to finish its handshake (an inbound connection).
    pub(super) fn is_inbound_setup(&self) -> bool {
        matches!(self, Phase::AwaitHello | Phase::AwaitAuth(_) | Phase::AwaitFinish(_))
    }
}

pub(super) enum SendFail {
    Unknown,
    Full,
}

impl Node {
    /// The peer closes `conn` gracefully (or answers our `Closing`, as nodes before this one
    /// did).
    pub(super) fn on_closing(&mut self, now: Instant, conn: ConnId, from: NodeId) {
        let we_asked = self.conns.get(&conn).is_some_and(|c| c.closing.is_some());
        if !we_asked {
            // The acknowledgement of what it carried is the last frame, and the close itself
            // is the answer: the peer reads what we wrote before it, and then the end of the
            // stream ([`Node::handle_closed`]). An answering `Closing` cost a frame per close.
            self.flush_ack(conn);
            self.detach(from, conn);
        }
        // What the peer acknowledged before its `Closing` stays in our custody until handed
        // on; what it did not may have crossed its `Closing` (or been lost), and is routed
        // again (`drop_conn`). Dropping it, as if the peer had read everything, lost a message
        // in 30,000 at 5 % dropped frames.
        self.close_conn(now, conn);
    }

    pub(super) fn alloc_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    /// Starts a connection to `addr`; `None` if `max_connections` are open and none can be
    /// given up (connections count against the limit in both directions).
    pub(super) fn dial(&mut self, now: Instant, addr: SocketAddr, expected: Option<NodeId>) -> Option<ConnId> {
        if self.conns.len() >= self.cfg.max_connections && !self.make_room(now) {
            return None;
        }
        let id = self.alloc_conn();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        self.conns.insert(
            id,
            Box::new(Conn::new(
                addr,
                Phase::Dialing { nonce: Box::new(nonce) },
                now,
                expected,
                self.cfg.max_frame_size,
            )),
        );
        self.arm_conn(id, now + self.cfg.connect_timeout);
        self.out.push_back(Output::Connect { conn: id, addr });
        Some(id)
    }

    /// Frees a connection slot at once: a connection already closing gracefully, else the least
    /// recently used open one that no leaf-set member depends on. This is the hard limit, so
    /// the close is abrupt (idle connections normally close gracefully long before).
    pub(super) fn make_room(&mut self, now: Instant) -> bool {
        let closing = self.conns.iter().filter(|(_, c)| c.closing.is_some()).min_by_key(|(&k, c)| (c.closing, k));
        let victim = closing.map(|(&k, _)| k).or_else(|| {
            self.conns
                .iter()
                .filter(|(_, c)| matches!(c.phase, Phase::Open))
                .filter(|(_, c)| !c.peer().is_some_and(|p| self.leaf.contains(p)))
                .min_by_key(|(&k, c)| (c.last_active, k))
                .map(|(&k, _)| k)
        });
        let Some(victim) = victim else { return false };
        self.out.push_back(Output::Close { conn: victim });
        self.drop_conn(now, victim);
        true
    }

    /// A connection's deadline: its set-up (dial and handshake) or its graceful close took
    /// `connect_timeout`, or it sat idle in both directions for `idle_timeout`. Connections to
    /// members of our tables stay open (their probes and heartbeats use them), and so do, for
    /// `table_probe_interval` more, connections the peer dialled: the dialler probes us at
    /// most that far apart while we are in its tables, and closes the connection itself once
    /// we are not. A probe then costs two frames, not a handshake and a close. That is the
    /// default, [`MemberConnections::Kept`]; the other settings keep fewer members' (and no
    /// dialled connection longer than `idle_timeout`). A connection idle for `idle_timeout`
    /// that stays open gives its buffers back ([`Conn::release_idle`]).
    pub(super) fn conn_timer(&mut self, now: Instant, conn: ConnId) {
        let member = self.conns.get(&conn).and_then(|c| c.peer()).is_some_and(|p| self.keeps_open(p));
        let kept = self.cfg.member_connections == MemberConnections::Kept;
        let first = self.conns.get(&conn).map_or(self.cfg.idle_timeout, |c| self.first_idle_check(c));
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.timer = None;
        let (connect, idle) = (self.cfg.connect_timeout, self.cfg.idle_timeout);
        if !matches!(c.phase, Phase::Open) {
            if now - c.opened >= connect {
                // The driver still holds this socket (connecting, or a peer that stalls its
                // handshake): tell it to close before forgetting the connection.
                self.out.push_back(Output::Close { conn });
                self.conn_failed(now, conn);
            } else {
                self.setup_check(now, conn);
            }
        } else if let Some(t) = c.closing {
            if now - t >= connect {
                self.close_conn(now, conn);
            } else {
                self.arm_conn(conn, t + connect);
            }
        } else if member {
            // Looked at again after `suspect_timeout` (or `idle_timeout`, if longer): a member
            // that leaves our tables has its connection closed that much later at most.
            if now - c.last_active >= idle {
                c.release_idle();
            }
            let recheck = self.cfg.suspect_timeout.max(idle);
            let at = if now - c.last_active >= idle { now + recheck } else { c.last_active + idle };
            self.arm_conn(conn, at);
        } else {
            // One the peer dialled waits longer than its dialler does, so that the dialler's
            // `Closing` comes first and is answered by a close, not crossed by ours (two
            // `Closing` frames for one connection, every other time in a join's hundreds).
            let limit = match (c.accepted, kept) {
                (true, true) => idle + self.cfg.table_probe_interval,
                (true, false) => 2 * idle,
                (false, _) => idle,
            };
            if now - c.last_active >= limit {
                self.start_closing(now, conn);
            } else {
                if now - c.last_active >= first {
                    c.release_idle();
                }
                let at = if now - c.last_active >= first { c.last_active + limit } else { c.last_active + first };
                self.arm_conn(conn, at);
            }
        }
    }

    /// True if an idle connection to `id` stays open ([`Config::member_connections`](crate::Config::member_connections)).
    fn keeps_open(&self, id: NodeId) -> bool {
        match self.cfg.member_connections {
            MemberConnections::Kept => self.keeps(id),
            MemberConnections::LeafSet => self.leaf.contains(id) || self.former_leaves.contains_key(&id),
            MemberConnections::Closed => false,
        }
    }

    /// `conn` allocated its buffers again ([`Conn::io`]): if it is open, it is looked at once
    /// it has been idle `idle_timeout` again, to give them back.
    pub(super) fn recheck_idle(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else { return };
        let at = self.last_now + self.first_idle_check(c);
        if c.closing.is_none() && matches!(c.phase, Phase::Open) && c.timer.is_none_or(|t| at < t) {
            self.arm_conn(conn, at);
        }
    }

    /// How long after its last activity an open connection is first looked at:
    /// `idle_timeout`, or twice that (its limit, [`Node::conn_timer`]) for one we accepted and
    /// do not keep open. Its dialler closes it at `idle_timeout`, and the close gives its
    /// buffers back a round trip later: a look of ours at `idle_timeout` would only cost a
    /// timer event.
    pub(super) fn first_idle_check(&self, c: &Conn) -> core::time::Duration {
        let idle = self.cfg.idle_timeout;
        let kept = self.cfg.member_connections == MemberConnections::Kept;
        if c.accepted && !kept && !c.peer().is_some_and(|p| self.keeps_open(p)) {
            2 * idle
        } else {
            idle
        }
    }

    /// Sets a connection's deadline (never before the next microsecond).
    pub(super) fn arm_conn(&mut self, conn: ConnId, at: Instant) {
        let at = at.max(self.last_now + MIN_STEP);
        if self.drained {
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.timer = self.timers.arm(TimerKey::Conn(conn), c.timer, at);
        }
    }

    /// Begins the graceful close of an open connection: `Closing` goes out, nothing more is
    /// sent on it, and it is forgotten when the peer closes its end, having read everything
    /// (or after `connect_timeout`).
    pub(super) fn start_closing(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.closing = Some(now);
        let peer = c.peer();
        self.arm_conn(conn, now + self.cfg.connect_timeout);
        self.transmit(conn, &Message::Closing);
        if let Some(pid) = peer {
            self.detach(pid, conn);
        }
    }

    /// Stops sending to `peer` over `conn`: its next message uses another open connection or a
    /// new one.
    pub(super) fn detach(&mut self, peer: NodeId, conn: ConnId) {
        // Only the peer's current connection needs a replacement, looked for among all only
        // if some other connection names the peer (rare: both sides dialled at once).
        let Some(p) = self.peers.get(&peer) else { return };
        if p.conn() != Some(conn) {
            return;
        }
        let this = usize::from(self.conns.get(&conn).is_some_and(|c| c.peer() == Some(peer)));
        let others = usize::from(p.named_by).saturating_sub(this);
        let other = (others > 0)
            .then(|| {
                self.conns
                    .iter()
                    .find(|(&k, x)| {
                        k != conn && x.peer() == Some(peer) && matches!(x.phase, Phase::Open) && x.closing.is_none()
                    })
                    .map(|(&k, _)| k)
            })
            .flatten();
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.conn() == Some(conn) {
                p.set_conn(other);
            }
        }
    }

    /// A connection to `addr` we dialled (open or opening), or a new one.
    pub(super) fn conn_to_addr(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let existing = self
            .conns
            .iter()
            .find(|(_, c)| c.addr() == addr && c.closing.is_none() && !c.phase.is_inbound_setup() && !c.timing())
            .map(|(&k, _)| k);
        existing.or_else(|| self.dial(now, addr, None))
    }

    /// Closes `conn` and forgets it ([`Node::drop_conn`]).
    pub(super) fn close_conn(&mut self, now: Instant, conn: ConnId) {
        self.out.push_back(Output::Close { conn });
        self.drop_conn(now, conn);
    }

    /// Forgets a connection; what was queued on it is re-routed or dropped.
    pub(super) fn drop_conn(&mut self, now: Instant, conn: ConnId) {
        // What was queued on it before it closed still goes out, ahead of the close.
        self.seal_conn(conn);
        let Some(mut c) = self.conns.remove(&conn) else { return };
        self.timers.disarm(TimerKey::Conn(conn), c.timer);
        if let Some(p) = c.peer().and_then(|id| self.peers.get_mut(&id)) {
            p.named_by = p.named_by.saturating_sub(1);
        }
        self.pending_total -= c.pending_len();
        if let Some(pid) = c.peer().or(c.expected()) {
            self.detach(pid, conn);
        }
        let flight = c.flight.take();
        let peer = c.peer().or(c.expected());
        self.requeue_taken(now, conn, c.io.take().map(|io| io.pending).unwrap_or_default(), peer);
        self.drop_pending_custody(conn);
        // What the peer had not acknowledged may be lost with the connection: route it again.
        if self.state != State::Left {
            self.reroute_flight(now, conn, flight, c.peer());
        }
    }

    /// A message whose connection to `failed` broke before it was written: route it again,
    /// around that peer (it already counted its hop and passed the forward hook here).
    pub(super) fn requeue(&mut self, now: Instant, m: Message, failed: Option<NodeId>) {
        if self.state == State::Left {
            return;
        }
        match m {
            Message::Route(r) => self.route_excluding(now, r, failed),
            Message::JoinRequest { joiner, hops } if joiner.id != self.id() => {
                self.reroute_join(now, joiner, hops, failed)
            }
            Message::Direct(_) => {
                self.stats.add(Counter::Dropped, 1);
            }
            _ => {}
        }
    }

    /// An outbound connection failed, or a connection failed before its handshake completed.
    pub(super) fn conn_failed(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (addr, expected) = (c.addr(), c.expected());
        self.stats.add(Counter::ConnectFailures, 1);
        self.report(NodeError::ConnectFailed { addr });
        self.bootstrap_failed(now, addr);
        match expected {
            Some(id) => {
                self.drop_conn(now, conn);
                self.unreachable(now, id);
            }
            None => self.drop_conn(now, conn),
        }
    }

    /// A connection to `id` could not be set up. A table member is suspected and probed again
    /// over a fresh connection (one lost handshake must not make a live node look dead); anyone
    /// else is forgotten, and hearsay of it is ignored for `suspect_timeout` only: one lost
    /// handshake is no proof of death, and the `detection_time() * 2` of a declared failure
    /// kept live nodes out of each other's leaf sets for twenty minutes (at 5 % dropped
    /// frames, two joiners that failed to reach each other while joining later became
    /// neighbours that each ignored the other, and both took the keys between them).
    fn unreachable(&mut self, now: Instant, id: NodeId) {
        if self.in_tables(id) && self.state != State::Left {
            self.suspect(now, id);
        } else {
            self.peer_failed(now, id);
            if let Some(until) = self.failed.get_mut(&id) {
                *until = (*until).min(now + self.cfg.suspect_timeout);
            }
        }
    }

    pub(super) fn decode_error(&mut self, now: Instant, conn: ConnId, error: wire::WireError) {
        self.stats.add(Counter::DecodeErrors, 1);
        self.report(NodeError::Decode { conn, error });
        self.close_bad(now, conn);
    }

    pub(super) fn protocol_error(&mut self, now: Instant, conn: ConnId, what: &'static str) {
        self.stats.add(Counter::ProtocolErrors, 1);
        self.report(NodeError::Protocol { conn, what });
        self.close_bad(now, conn);
    }

    pub(super) fn close_bad(&mut self, now: Instant, conn: ConnId) {
        let expected =
            self.conns.get(&conn).and_then(|c| if matches!(c.phase, Phase::Open) { None } else { c.expected() });
        self.close_conn(now, conn);
        if let Some(id) = expected {
            self.unreachable(now, id);
        }
    }
}

impl Conn {
    pub(super) fn new(
        addr: SocketAddr,
        phase: Phase,
        now: Instant,
        expected: Option<NodeId>,
        max_frame: usize,
    ) -> Self {
        let accepted = matches!(phase, Phase::AwaitHello);
        let addr = match addr {
            SocketAddr::V4(a) => ConnAddr::V4(a),
            other => ConnAddr::Other(Box::new(other)),
        };
        Conn {
            addr,
            phase,
            io: None,
            in_use: false,
            max_frame: u32::try_from(max_frame.min(wire::MAX_HANDSHAKE_FRAME)).unwrap_or(u32::MAX),
            heard: false,
            accepted,
            opened: now,
            last_active: now,
            handshake_sent: None,
            closing: None,
            id: expected.unwrap_or_default(),
            ids: if expected.is_some() { EXPECTED } else { 0 },
            timer: None,
            flight: None,
            channel: None,
        }
    }

    /// The node we dialled, if we know its id.
    pub(super) fn expected(&self) -> Option<NodeId> {
        (self.ids & EXPECTED != 0).then_some(self.id)
    }

    /// The authenticated node at the other end, once the handshake completed.
    pub(super) fn peer(&self) -> Option<NodeId> {
        (self.ids & PEER != 0).then_some(self.id)
    }

    /// True if it was dialled only to time its set-up ([`Node::time_candidate`]).
    pub(super) fn timing(&self) -> bool {
        self.ids & TIMING != 0
    }

    /// Marks it as dialled only to time its set-up.
    pub(super) fn set_timing(&mut self) {
        self.ids |= TIMING;
    }

    /// Makes it an ordinary connection: it goes on to its handshake once set up.
    pub(super) fn clear_timing(&mut self) {
        self.ids &= !TIMING;
    }

    /// True if its set-up outlasted `setup_patience` once; [`Conn::set_late`] marks it.
    pub(super) fn late(&self) -> bool {
        self.ids & LATE != 0
    }

    pub(super) fn set_late(&mut self) {
        self.ids |= LATE;
    }

    /// The handshake completed with `id`: the node dialled, if one was (the handshake rejects
    /// any other; were it called with another, that one would replace it as `expected` too).
    pub(super) fn set_peer(&mut self, id: NodeId) {
        debug_assert!(self.expected().is_none_or(|e| e == id), "a handshake with another node than the one dialled");
        self.id = id;
        self.ids |= PEER;
    }

    /// The remote address.
    pub(super) fn addr(&self) -> SocketAddr {
        match &self.addr {
            ConnAddr::V4(a) => SocketAddr::V4(*a),
            ConnAddr::Other(a) => **a,
        }
    }

    /// Bytes it holds beyond itself (an address other than IPv4).
    pub(super) fn addr_heap_bytes(&self) -> usize {
        match self.addr {
            ConnAddr::V4(_) => 0,
            ConnAddr::Other(_) => core::mem::size_of::<SocketAddr>(),
        }
    }

    /// Its buffers, allocated now if it had none; it is in use from now on.
    pub(super) fn io(&mut self) -> &mut ConnIo {
        let max_frame = self.max_frame as usize;
        self.in_use = true;
        self.io.get_or_insert_with(|| Box::new(ConnIo::new(max_frame)))
    }

    /// Frees its buffers if they hold nothing, keeping it in use: called on plaintext
    /// connections after each input. An encrypted connection keeps them while in use (its
    /// receive buffer is reused from record to record).
    pub(super) fn trim_io(&mut self) {
        if self.io.as_ref().is_some_and(|io| io.is_idle()) {
            self.io = None;
        }
    }

    /// Messages waiting for it to open.
    pub(super) fn pending_len(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.pending.len())
    }

    /// Sets the largest frame body accepted from now on.
    pub(super) fn set_max_frame(&mut self, limit: usize) {
        self.max_frame = u32::try_from(limit).unwrap_or(u32::MAX);
        if let Some(io) = self.io.as_mut() {
            io.decoder.set_max_frame(limit);
        }
    }

    /// Gives its buffers back if they hold nothing that must survive, and its in-flight queue
    /// if it is empty: called when it has been idle for `idle_timeout`, so that a connection
    /// kept open for rare probes costs only this struct (and its acknowledgement counters).
    pub(super) fn release_idle(&mut self) {
        if self.in_use && self.io.as_ref().is_none_or(|io| io.is_idle()) {
            self.io = None;
            self.in_use = false;
        }
        if let Some(f) = self.flight.as_mut() {
            f.release_idle();
        }
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
