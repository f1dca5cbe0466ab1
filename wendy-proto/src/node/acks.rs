//! Per-hop acknowledgements and rerouting (MSPastry's per-hop acks).
//!
//! Every routed message a node writes on a connection stays in that connection's in-flight
//! queue until the next hop acknowledges it. The queue is the connection's window: at most
//! [`Config::route_window`](crate::Config::route_window) messages are written and not yet handed on by the peer, the next wait in
//! the connection's queue (`Config::max_pending_per_peer`) and go out as the peer passes
//! earlier ones on. Acknowledgements are cumulative counts of routed
//! messages received on the connection, sent once per input (so a burst costs one ack), and
//! they are round-trip samples: the retransmission timeout of each peer is estimated from
//! them as TCP does (`srtt + 4 rttvar`, bounded by `ack_timeout_min` and `ack_timeout_max`).
//! A message unacknowledged after one timeout makes the hop suspect (it is probed, and
//! declared failed if the probe goes unanswered); after two it is routed again through the
//! next best hop, every suspect excluded (so that it meets each dead hop once, not back and
//! forth between two of them), or waits for a suspect that is its root by our leaf set
//! ([`Node::park`]). When a connection breaks or its peer is declared
//! failed, everything still in flight on it that the peer had not received is routed again at
//! once. A message that has been
//! rerouted `max_reroutes` times, or finds no route, is reported
//! [`NodeError::Undeliverable`] with its key and purpose at its origin (a [`Message::Bounce`]
//! carries the report back; it is a control frame, not acknowledged hop by hop, so a
//! connection that breaks while carrying it loses it). A graceful close needs none of this:
//! the peer has read everything before it closes its end in answer to `Closing`.
//!
//! An acknowledgement also counts the messages the peer has handed on, and the queue keeps a
//! message the peer received until then, so that a peer that crashes holding it does not take
//! it away ([`super::custody`]).

use std::collections::VecDeque;

use crate::id::NodeId;
use crate::output::{ConnId, NodeError};
use crate::time::{duration_micros, Instant};
use crate::wire::{Message, Route};

use super::counters::Counter;
use super::custody::Token;
use super::liveness::MIN_STEP;
use super::timers::TimerKey;
use super::window::ByteWindow;
use super::Node;

/// A connection's acknowledgement state, allocated on its first routed message.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// Routed messages received on the connection.
    routes_in: u64,
    /// The count we last acknowledged.
    acked_in: u64,
    /// Of the routed messages received, how many have been handed on, counted from the first
    /// (the index of `held_in`'s front).
    pub(super) passed_in: u64,
    /// The `passed_in` we last reported.
    reported_passed: u64,
    /// For each routed message received from `passed_in` on: whether it has been handed on.
    pub(super) held_in: VecDeque<bool>,
    /// The index of `unacked`'s front: the peer has handed on every message before it.
    base: u64,
    /// Routed messages the peer has acknowledged receiving.
    acked_out: u64,
    /// Sent and not yet handed on by the peer, oldest first (those from `acked_out` on not yet
    /// received either); `None` once rerouted or given up.
    unacked: VecDeque<Option<InFlight>>,
    /// Payload bytes of the messages in `unacked` (those not yet rerouted or given up).
    bytes: u64,
    /// How many of those bytes may be in flight ([`super::window`]).
    window: ByteWindow,
    /// The retransmission check's entry in the timer table.
    pub(super) timer: Option<Instant>,
    /// When the peer last acknowledged receiving one more: while that is within the ack
    /// timeout, the peer is behind (a backlog), not gone, and nothing it has yet to take is late.
    last_ack: Option<Instant>,
}

/// A rerouted message whose root, by our leaf set, is a suspect (or the hop that failed) while
/// every other route would deliver it here: delivering it here would only be right if the
/// suspect is dead, so it waits until the suspect's probe settles.
#[derive(Debug)]
pub(super) struct Parked {
    suspect: NodeId,
    pub(super) route: Route,
    reroutes: u8,
    /// Our custody of it towards the node that sent it to us, if any.
    token: Option<Token>,
}

/// The messages parked on suspects, in the order they were parked, and the suspects they wait
/// for, each once, in the order first parked on. Whether any may go is asked after every input
/// ([`Node::release_parked`]), of the suspects, not of every message: a loaded node that parked
/// thousands of messages on one slow peer spent most of its time asking the same question of
/// each. Nothing is allocated while nothing is parked (the node's struct has no room for more
/// than a pointer).
#[derive(Debug, Default)]
pub(super) struct ParkedSet(Option<Box<ParkedLists>>);

#[derive(Debug)]
struct ParkedLists {
    msgs: Vec<Parked>,
    suspects: Vec<NodeId>,
}

impl ParkedLists {
    /// Lists `suspect` among those waited for, once.
    fn note_suspect(&mut self, suspect: NodeId) {
        if !self.suspects.contains(&suspect) {
            self.suspects.push(suspect);
        }
    }
}

impl ParkedSet {
    /// The set of `msgs`, in their order (their vector kept).
    fn of(msgs: Vec<Parked>) -> Self {
        if msgs.is_empty() {
            return ParkedSet::default();
        }
        let mut lists = ParkedLists { msgs: Vec::new(), suspects: Vec::new() };
        for p in &msgs {
            lists.note_suspect(p.suspect);
        }
        lists.msgs = msgs;
        ParkedSet(Some(Box::new(lists)))
    }

    pub(super) fn push(&mut self, p: Parked) {
        let lists = self.0.get_or_insert_with(|| Box::new(ParkedLists { msgs: Vec::new(), suspects: Vec::new() }));
        lists.note_suspect(p.suspect);
        lists.msgs.push(p);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.msgs.len())
    }

    /// The suspects some parked message waits for.
    pub(super) fn suspects(&self) -> &[NodeId] {
        self.0.as_ref().map_or(&[], |l| &l.suspects)
    }

    /// Every parked message, in the order parked; the set is left empty.
    pub(super) fn take_all(&mut self) -> Vec<Parked> {
        self.0.take().map_or_else(Vec::new, |l| l.msgs)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |l| {
            size_of::<ParkedLists>()
                + l.msgs.capacity() * size_of::<Parked>()
                + l.suspects.capacity() * size_of::<NodeId>()
        })
    }
}

/// How many times a copy a peer has held past [`Node::custody_give_up`] is kept for another
/// such period, the peer probed each time, before it is dropped: five periods in all, 100 s
/// at the defaults (20 s each), longer than a joiner holds messages in the slowest joins seen
/// under fast churn.
const CUSTODY_ROUNDS: u8 = 4;

/// The most routed messages a connection's in-flight queue holds while it counts as carrying
/// one at a time: a vector's smallest allocation for entries of this size ([`Flight::drained`]).
const SPARSE_FLIGHT: usize = 4;

impl Flight {
    /// Bytes it holds: itself and its queue's allocation.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Flight>()
            + self.unacked.capacity() * std::mem::size_of::<Option<InFlight>>()
            + self.held_in.capacity()
    }

    /// True if the connection's window has no room: as many routed messages sent and not yet
    /// handed on by the peer as [`Config::route_window`](crate::Config::route_window) allows,
    /// or as many payload bytes as its byte window's limit, at most
    /// [`Config::route_window_bytes`](crate::Config::route_window_bytes) ([`super::window`]).
    pub(super) fn is_full(&self, cfg: &crate::Config) -> bool {
        self.unacked.len() >= cfg.route_window() || self.bytes >= self.window.limit(cfg.route_window_bytes())
    }

    /// True if the peer has received messages on this connection and not handed them on: we
    /// keep copies of them (custody).
    pub(super) fn holds_received(&self) -> bool {
        let received = (self.acked_out - self.base) as usize;
        self.unacked.iter().take(received).any(Option::is_some)
    }

    /// Everything sent was handed on: a queue that never held more than
    /// [`SPARSE_FLIGHT`] messages (a connection carrying one message at a time, the usual case
    /// on the many connections to table members) gives its allocation back now rather than
    /// when the connection falls idle, seconds later. One that grew in a burst keeps it, so
    /// that a stream of messages allocates nothing per message.
    pub(super) fn drained(&mut self) {
        if self.unacked.is_empty() && self.unacked.capacity() <= SPARSE_FLIGHT {
            self.unacked = VecDeque::new();
        }
    }

    /// The connection fell idle ([`Conn::release_idle`](super::connections::Conn::release_idle)):
    /// if everything sent was acknowledged, the queue gives back what its bursts grew it to
    /// (while busy it keeps it, so that forwarding allocates nothing per message).
    pub(super) fn release_idle(&mut self) {
        if self.unacked.is_empty() {
            self.unacked = VecDeque::new();
        }
        if self.held_in.is_empty() {
            self.held_in = VecDeque::new();
        }
    }
}

#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) route: Route,
    /// When it was sent; once the peer received it, when that was acknowledged (and again
    /// when a custody period restarts: each `custody_give_up`, and when it is orphaned).
    pub(super) sent: Instant,
    reroutes: u8,
    /// Our custody of it towards the node that sent it to us, if any: passed once the peer
    /// acknowledges receiving it.
    token: Option<Token>,
    /// The peer received it and has held it past `custody_hold`: it has been probed.
    pub(super) checked: bool,
    /// Times the peer has held it past `custody_give_up` ([`CUSTODY_ROUNDS`]).
    pub(super) rounds: u8,
}

impl InFlight {
    /// Its payload's bytes, as the window counts them ([`Flight::is_full`]).
    fn bytes(&self) -> u64 {
        self.route.payload.len() as u64
    }
}

impl Node {
    /// Records a routed message written on `conn`, to be acknowledged.
    pub(super) fn track_route(&mut self, conn: ConnId, route: Route) {
        let now = self.last_now;
        let reroutes = self.custody.reroutes;
        let token = self.custody.ctx.take();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let f = c.flight.get_or_insert_with(Box::default);
        // Bounded by the window: a routed message is written only while it has room
        // ([`Node::enqueue`], [`Node::flush_window`]), so every one is tracked.
        debug_assert!(f.unacked.len() < self.cfg.route_window());
        let e = InFlight { route, sent: now, reroutes, token, checked: false, rounds: 0 };
        f.bytes += e.bytes();
        f.unacked.push_back(Some(e));
        if f.timer.is_none() {
            let peer = c.peer();
            let at = now + self.ack_timeout(peer);
            self.arm_ack(conn, at);
        }
    }

    /// A routed message arrived on `conn`: it is acknowledged at the end of this input, and
    /// reported handed on once it is ([`Node::pass_custody`] with the token returned).
    pub(super) fn route_received(&mut self, conn: ConnId) -> Option<Token> {
        let max = self.cfg.route_window();
        let c = self.conns.get_mut(&conn)?;
        let f = c.flight.get_or_insert_with(Box::default);
        let index = f.routes_in;
        f.routes_in += 1;
        f.held_in.push_back(false);
        while f.held_in.len() > max {
            // Bounded towards a peer that floods us: the oldest is reported handed on.
            f.held_in.pop_front();
            f.passed_in += 1;
        }
        if !self.ack_due.contains(&conn) {
            self.ack_due.push(conn);
        }
        Some((conn, index))
    }

    /// Sends the acknowledgements due (one per connection that received routed messages).
    pub(super) fn flush_acks(&mut self) {
        let mut due = std::mem::take(&mut self.ack_due);
        for conn in due.drain(..) {
            self.flush_ack(conn);
        }
        // Keep the list's memory: no allocation per input in steady state.
        self.ack_due = due;
    }

    /// Acknowledges what `conn` has received, if anything is unacknowledged.
    pub(super) fn flush_ack(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.closing.is_some() {
            return;
        }
        let Some(f) = c.flight.as_mut() else { return };
        if f.routes_in == f.acked_in && f.passed_in == f.reported_passed {
            return;
        }
        f.acked_in = f.routes_in;
        f.reported_passed = f.passed_in;
        let (count, passed) = (f.routes_in, f.passed_in);
        self.stats.add(Counter::AcksOut, 1);
        self.transmit(conn, &Message::Ack { count, passed });
    }

    /// The peer on `conn` has received `count` routed messages from us in all, and handed on
    /// the first `passed` of them: our custody of those it received passes on, and our copies
    /// of those it handed on are dropped.
    pub(super) fn on_ack(&mut self, now: Instant, conn: ConnId, count: u64, passed: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let peer = c.peer();
        let Some(f) = c.flight.as_mut() else { return };
        let mut sample = None;
        // The newest message acknowledged, if sent once, and the payload bytes acknowledged.
        let (mut newest, mut acked_bytes) = (None, 0);
        let mut passed_on = std::mem::take(&mut self.custody.buf);
        let count = count.min(f.base + f.unacked.len() as u64);
        if f.acked_out < count {
            f.last_ack = Some(now);
        }
        while f.acked_out < count {
            let i = (f.acked_out - f.base) as usize;
            f.acked_out += 1;
            let Some(Some(e)) = f.unacked.get_mut(i) else { continue };
            acked_bytes += e.bytes();
            newest = (e.reroutes == 0).then_some(e.sent);
            if e.reroutes == 0 {
                sample = Some(now - e.sent);
            }
            // The custody clock starts from its receipt.
            e.sent = now;
            passed_on.extend(e.token.take());
        }
        let limit = f.window.limit(self.cfg.route_window_bytes());
        if acked_bytes > 0 {
            f.window.acknowledged(now, newest, acked_bytes, self.cfg.ack_timeout_max, self.cfg.route_window_bytes());
        }
        let passed = passed.min(f.acked_out);
        let opened = f.base < passed || f.window.limit(self.cfg.route_window_bytes()) > limit;
        while f.base < passed {
            if let Some(Some(e)) = f.unacked.pop_front() {
                f.bytes = f.bytes.saturating_sub(e.bytes());
            }
            f.base += 1;
        }
        if f.unacked.is_empty() {
            debug_assert_eq!(f.bytes, 0, "the window's bytes are those of the messages in it");
            f.bytes = 0;
            let t = f.timer.take();
            self.timers.disarm(TimerKey::Ack(conn), t);
            f.drained();
        }
        for t in passed_on.drain(..) {
            self.pass_custody(t);
        }
        self.custody.buf = passed_on;
        if opened && self.conns.get(&conn).is_some_and(|c| c.pending_len() > 0) {
            self.flush_window(conn);
        }
        if let (Some(rtt), Some(p)) = (sample, peer.and_then(|p| self.peers.get_mut(&p))) {
            let s = u32::try_from(duration_micros(rtt)).unwrap_or(u32::MAX);
            if p.srtt == 0 {
                (p.srtt, p.rttvar) = (s, s / 2);
            } else {
                p.rttvar = (3 * u64::from(p.rttvar) / 4 + u64::from(p.srtt.abs_diff(s)) / 4) as u32;
                p.srtt = ((7 * u64::from(p.srtt) + u64::from(s)) / 8) as u32;
            }
        }
    }

    /// The retransmission timeout towards `peer`.
    pub(super) fn ack_timeout(&self, peer: Option<NodeId>) -> core::time::Duration {
        let (lo, hi) = (self.cfg.ack_timeout_min, self.cfg.ack_timeout_max);
        match peer.and_then(|p| self.peers.get(&p)).filter(|p| p.srtt > 0) {
            Some(p) => {
                let us = u64::from(p.srtt) + 4 * u64::from(p.rttvar);
                core::time::Duration::from_micros(us).clamp(lo, hi)
            }
            None => hi,
        }
    }

    /// The in-flight check of `conn`: suspect a silent hop, reroute what it sat on too long.
    pub(super) fn ack_timer(&mut self, now: Instant, conn: ConnId) {
        let peer = self.conns.get(&conn).and_then(|c| c.peer());
        let rto = self.ack_timeout(peer);
        let (hold, give_up) = (self.custody_hold(), self.custody_give_up());
        let Some(f) = self.conns.get_mut(&conn).and_then(|c| c.flight.as_mut()) else { return };
        f.timer = None;
        let mut late = Vec::new();
        // Payload bytes of the messages taken out of the window below.
        let mut freed = 0u64;
        let mut oldest = None;
        let (mut custody_due, mut custody_overdue): (Option<Instant>, Option<Instant>) = (None, None);
        let mut custody_probe = false;
        let received = f.acked_out - f.base;
        let progress = f.last_ack.filter(|&t| now - t < rto);
        for (i, slot) in f.unacked.iter_mut().enumerate() {
            let Some(e) = slot else { continue };
            if (i as u64) < received {
                // Received, not yet handed on: the peer may be holding it (parked, rerouted) or
                // may have crashed with it. Probed after `hold` if silent since it took it, and
                // at every `give_up` whatever we heard; dropped after `CUSTODY_ROUNDS` more.
                let age = now - e.sent;
                if age >= give_up {
                    // Still not handed on, though the peer was alive after it took it (we
                    // heard from it, or it answered the probe at `hold`). It may hold it for a
                    // reason (a joiner holds messages until it is ready; a reroute can wait
                    // for a suspect's probes), or it may have crashed since, with the message.
                    // Our copy stays, and the peer is probed whatever we heard from it: if it
                    // is declared failed, the copy is routed again around it.
                    if e.rounds >= CUSTODY_ROUNDS {
                        freed += e.bytes();
                        *slot = None;
                        continue;
                    }
                    e.rounds += 1;
                    e.sent = now;
                    e.checked = false;
                    custody_probe = true;
                }
                if age >= hold && !e.checked {
                    e.checked = true;
                    custody_overdue = Some(custody_overdue.map_or(e.sent, |t| t.min(e.sent)));
                }
                let due = e.sent + if e.checked { give_up } else { hold };
                custody_due = Some(custody_due.map_or(due, |d| d.min(due)));
            } else if progress.is_none() && now - e.sent >= rto * 2 {
                freed += e.bytes();
                late.extend(slot.take());
            } else if oldest.is_none() {
                oldest = Some(e.sent);
            }
        }
        f.bytes = f.bytes.saturating_sub(freed);
        while f.base < f.acked_out && matches!(f.unacked.front(), Some(None)) {
            f.unacked.pop_front();
            f.base += 1;
        }
        let overdue = progress.is_none() && (!late.is_empty() || oldest.is_some_and(|t| now - t >= rto));
        let next = oldest.map(|t| {
            let at = if now - t >= rto { t + rto * 2 } else { t + rto };
            // Acknowledgements are coming: looked at again once they could have stopped.
            progress.map_or(at, |p| at.max(p + rto))
        });
        if let Some(at) = [next, custody_due].into_iter().flatten().min() {
            self.arm_ack(conn, at);
        }
        if let (Some(since), Some(p), false) = (custody_overdue, peer, overdue) {
            self.check_custodian(now, p, since);
        }
        if let (true, Some(p), false) = (custody_probe, peer, overdue) {
            self.suspect(now, p);
        }
        if overdue {
            if let Some(p) = peer.filter(|p| self.peers.get(p).is_some_and(|p| p.suspected().is_none())) {
                // An unacknowledged hop on a connection that works would be rare; a connection
                // that lost a frame is the usual cause (an encrypted stream that lost one is
                // broken for good). The suspect's probes go over a fresh connection, and what
                // this one carried is routed again around it.
                self.close_conns_of(now, p);
                if self.conns.contains_key(&conn) {
                    self.close_conn(now, conn);
                }
                self.suspect(now, p);
            }
        }
        for e in late {
            self.reroute(now, e, peer);
        }
    }

    /// Routes again everything still in flight on `conn`, which broke.
    pub(super) fn reroute_flight(
        &mut self,
        now: Instant,
        conn: ConnId,
        flight: Option<Box<Flight>>,
        peer: Option<NodeId>,
    ) {
        let Some(f) = flight else { return };
        self.timers.disarm(TimerKey::Ack(conn), f.timer);
        let received = (f.acked_out - f.base) as usize;
        for (i, e) in f.unacked.into_iter().enumerate() {
            let Some(e) = e else { continue };
            match peer {
                // The peer has it: kept until the peer is declared failed or the custody
                // times out.
                Some(p) if i < received => self.orphan(p, e),
                _ => self.reroute(now, e, peer),
            }
        }
    }

    pub(super) fn reroute(&mut self, now: Instant, e: InFlight, failed: Option<NodeId>) {
        self.with_custody(e.token, |n| {
            if e.reroutes >= n.cfg.max_reroutes {
                n.undeliverable(e.route);
                return;
            }
            n.stats.add(Counter::Reroutes, 1);
            n.custody.reroutes = e.reroutes + 1;
            n.route_excluding(now, e.route, failed);
            n.custody.reroutes = 0;
        });
    }

    /// Parks `route` until `suspect`, its root by our leaf set, is declared failed or answers
    /// (the suspect is probed now if it is not already; a probe settles within
    /// `Config::probing_time`). Counted against `max_pending_total`: beyond it the message is
    /// reported undeliverable.
    pub(super) fn park(&mut self, now: Instant, suspect: NodeId, route: Route) {
        if self.pending_total >= self.cfg.max_pending_total {
            self.undeliverable(route);
            return;
        }
        self.suspect(now, suspect);
        self.pending_total += 1;
        let reroutes = self.custody.reroutes;
        let token = self.custody.ctx.take();
        self.parked.push(Parked { suspect, route, reroutes, token });
    }

    /// Routes again the parked messages whose suspect is no longer one: it answered (routed to
    /// it) or was declared failed (delivered here, or wherever the repaired leaf set says; or
    /// parked again, on the next suspect).
    pub(super) fn release_parked(&mut self) {
        let now = self.last_now;
        let waiting = |n: &Node, s: NodeId| n.in_tables(s) && n.peers.get(&s).is_some_and(|q| q.suspected().is_some());
        if self.parked.suspects().iter().all(|&s| waiting(self, s)) {
            return;
        }
        let (still, settled): (Vec<Parked>, Vec<Parked>) =
            self.parked.take_all().into_iter().partition(|p| waiting(self, p.suspect));
        self.parked = ParkedSet::of(still);
        for p in settled {
            self.pending_total -= 1;
            self.with_custody(p.token, |n| {
                n.custody.reroutes = p.reroutes;
                n.route_excluding(now, p.route, None);
                n.custody.reroutes = 0;
            });
        }
    }

    /// The number of the next routed message we originate.
    pub(super) fn next_route_seq(&mut self) -> u64 {
        self.route_seq = self.route_seq.wrapping_add(1);
        self.route_seq
    }

    /// Gives up on a routed message: counted and reported with its key and purpose.
    ///
    /// The report goes to the message's origin: here if it is ours (or we are leaving), else
    /// a [`Message::Bounce`] routed back towards the origin, which reports it there.
    pub(super) fn undeliverable(&mut self, route: Route) {
        self.give_up(route.origin, route.key, route.purpose, route.seq);
    }

    /// [`Node::undeliverable`] of the message `seq` of `origin`, towards `key` for `purpose`
    /// (its payload is not needed to report it).
    pub(super) fn give_up(&mut self, origin: NodeId, key: NodeId, purpose: u8, seq: u64) {
        self.stats.add(Counter::Dropped, 1);
        self.stats.add(Counter::Undeliverable, 1);
        if origin == self.id() || self.state == super::State::Left {
            self.report(NodeError::Undeliverable { key, purpose });
            return;
        }
        let now = self.last_now;
        self.on_bounce(now, origin, key, purpose, seq, 0);
    }

    /// A bounce (see [`Node::undeliverable`]): reported here if we are its origin, else passed
    /// on towards the origin. One whose origin is gone, or that exceeds the hop limit, is
    /// dropped: nobody is left to tell.
    pub(super) fn on_bounce(&mut self, now: Instant, origin: NodeId, key: NodeId, purpose: u8, seq: u64, hops: u8) {
        if origin == self.id() {
            self.report(NodeError::Undeliverable { key, purpose });
            return;
        }
        if hops >= self.cfg.max_hops || !self.is_ready() {
            return;
        }
        if let super::routing::Hop::Next(next) = self.decide(origin, None) {
            let msg = Message::Bounce { origin, key, purpose, seq, hops: hops.saturating_add(1) };
            let _ = self.send_msg(now, next, msg);
        }
    }

    /// Sets `conn`'s in-flight check (never before the next microsecond).
    fn arm_ack(&mut self, conn: ConnId, at: Instant) {
        let at = at.max(self.last_now + MIN_STEP);
        if self.drained {
            return;
        }
        if let Some(f) = self.conns.get_mut(&conn).and_then(|c| c.flight.as_mut()) {
            f.timer = self.timers.arm(TimerKey::Ack(conn), f.timer, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A routed message in flight, sent at time zero and never rerouted.
    fn entry() -> Option<InFlight> {
        let route = Route {
            key: NodeId::from_u128(1),
            purpose: 16,
            origin: NodeId::from_u128(2),
            hops: 0,
            seq: 0,
            payload: Bytes::new(),
        };
        Some(InFlight { route, sent: Instant::ZERO, reroutes: 0, token: None, checked: false, rounds: 0 })
    }

    #[test]
    fn a_flight_of_one_message_at_a_time_gives_its_queue_back_once_handed_on() {
        let mut f = Flight::default();
        f.unacked.push_back(entry());
        assert!(f.unacked.capacity() <= SPARSE_FLIGHT, "one message takes the smallest allocation");
        f.drained();
        assert!(f.unacked.capacity() > 0, "not while it is in flight");
        f.unacked.clear();
        f.drained();
        assert_eq!(f.heap_bytes(), std::mem::size_of::<Flight>() + f.held_in.capacity());
        // A burst's queue is kept for the next burst.
        for _ in 0..40 {
            f.unacked.push_back(entry());
        }
        f.unacked.clear();
        let burst = f.unacked.capacity();
        f.drained();
        assert_eq!(f.unacked.capacity(), burst);
    }

    #[test]
    fn an_idle_flight_gives_its_queue_back_once_drained() {
        let mut f = Flight::default();
        for _ in 0..40 {
            f.unacked.push_back(entry());
        }
        let burst = f.heap_bytes();
        f.release_idle();
        assert_eq!(f.heap_bytes(), burst, "not while messages are in flight");
        f.unacked.clear();
        f.release_idle();
        assert_eq!(f.unacked.capacity(), 0);
        assert_eq!(f.heap_bytes(), std::mem::size_of::<Flight>());
    }

    #[test]
    fn the_parked_set_keeps_its_order_and_names_each_suspect_once() {
        let parked = |suspect: u128, seq: u64| {
            let mut route = entry().unwrap().route;
            route.seq = seq;
            Parked { suspect: NodeId::from_u128(suspect), route, reroutes: 0, token: None }
        };
        let mut set = ParkedSet::default();
        assert!(set.is_empty() && set.suspects().is_empty());
        assert_eq!(set.heap_bytes(), 0, "nothing allocated while nothing is parked");
        for (i, s) in [5, 9, 5, 5, 7, 9].into_iter().enumerate() {
            set.push(parked(s, i as u64));
        }
        assert_eq!(set.len(), 6);
        assert_eq!(set.suspects(), [5, 9, 7].map(NodeId::from_u128));
        assert!(set.heap_bytes() >= 6 * size_of::<Parked>() + 3 * size_of::<NodeId>());
        let all = set.take_all();
        assert_eq!(all.iter().map(|p| p.route.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        assert!(set.is_empty() && set.suspects().is_empty() && set.heap_bytes() == 0);
        // Rebuilt from what still waits: the suspects are those of the messages kept.
        let still: Vec<Parked> = all.into_iter().filter(|p| p.suspect != NodeId::from_u128(9)).collect();
        let set = ParkedSet::of(still);
        assert_eq!(set.suspects(), [5, 7].map(NodeId::from_u128));
        assert_eq!(set.len(), 4);
        assert!(ParkedSet::of(Vec::new()).is_empty());
    }
}
