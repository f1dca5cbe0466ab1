//! Custody of routed messages: a message is held by two nodes until its next hop has it.
//!
//! With per-hop acknowledgements alone ([`super::acks`]) a node that acknowledged a message
//! is its only holder until its own next hop acknowledges it. If that node crashes meanwhile,
//! the message is gone, and under churn a node can hold a message for seconds: its next hop
//! may be dead (it waits for the ack timeout and reroutes), or the message may wait for a
//! suspected root's probe to settle ([`Node::park`], up to
//! [`Config::neighbour_probing_time`](crate::Config::neighbour_probing_time)). At a 5-minute
//! median session, 56 of the 59 lookups lost in two simulated hours were lost that way: the
//! node holding them had sent them to a dead hop and crashed before it could route them again.
//!
//! So every acknowledgement also says how many of the messages received on the connection
//! have been *handed on* (counted from the first, like the receipt count): delivered here,
//! dropped, or acknowledged as received by the next hop. The sender keeps its copy of a
//! message until the peer reports it handed on. When the peer is declared failed, the copies
//! it had received but not handed on are routed again around it (a copy it had handed on after
//! all is a duplicate, which its root drops ([`super::recent::Recent`]), or delivered again if
//! its root changed meanwhile). A copy the peer holds longer than [`Node::custody_hold`] makes
//! the peer a suspect (it is probed, and declared failed if it does not answer), unless we
//! heard from it since it took the copy. One held longer than [`Node::custody_give_up`] is
//! kept for another period and the peer probed whatever we heard from it, up to four times
//! (100 s in all at the defaults):
//! a peer alive after it took the message may still hold it for a reason (a joiner holds
//! messages until it is ready) and crash with it later (at a 5-minute median session, most of
//! the lookups still lost had been dropped at `custody_give_up` by a node whose peer crashed
//! after it was last heard from). A copy whose connection closed is kept for
//! `custody_give_up` from then, so that the probes that closed it can settle.
//!
//! A routed message a joining node holds until it is ready keeps its custody too: its sender
//! keeps its copy until the joiner hands it on.
//!
//! A custodian is probed on suspicion even once it has left our tables (a leaf-set member a
//! nearer node pushed out, a routing-table entry replaced by a nearer one): only its probes can
//! show it crashed with our messages ([`Node::holds_our_copies`]).
//!
//! Within a node, the custody of the message being handled travels in `Custody::ctx`, set
//! where a routed message is received, rerouted or released from parking: whatever holds the
//! message next takes it (an in-flight entry, a parked message, a queue of a connection being
//! set up), and if nothing does by the end, the message was delivered or dropped here and is
//! reported handed on.

use std::collections::VecDeque;

use thin_vec::ThinVec;

use crate::id::NodeId;
use crate::output::ConnId;
use crate::time::Instant;
use crate::wire::{Message, Route};

use super::acks::InFlight;
use super::counters::Counter;
use super::Node;

/// A routed message received on a connection: the connection and the message's index on it.
pub(super) type Token = (ConnId, u64);

/// Copies kept after their connection closed, at most this many per node.
pub(super) const MAX_ORPHANS: usize = 4096;

/// A node's custody state.
#[derive(Debug, Default)]
pub(super) struct Custody {
    /// The custody of the routed message being handled, until something holds it.
    pub(super) ctx: Option<Token>,
    /// How often the routed message being handled has been rerouted (read by `track_route`).
    pub(super) reroutes: u8,
    /// Custody of routed messages queued on a connection (being set up, or behind its window):
    /// the connection, the message's origin and number, and the token, in the order queued.
    /// A connection's queue is sent in order, so the entry looked for is the first of its
    /// connection's: near the front.
    pending: VecDeque<(ConnId, NodeId, u64, Token)>,
    /// Copies of messages a peer received but had not handed on when its connection closed:
    /// the peer, and the copy.
    orphans: VecDeque<(NodeId, InFlight)>,
    /// The tokens passed on by one acknowledgement (kept to reuse its memory).
    pub(super) buf: ThinVec<Token>,
    /// True while the application has no room for deliveries ([`Node::set_application_lagging`]).
    pub(super) app_lagging: bool,
    /// Routed messages delivered here while the application lagged: handed on once it has
    /// room again.
    awaiting_app: ThinVec<Token>,
}

impl Custody {
    /// Gives back the room of its empty queues (called every tick): a node that forwarded a
    /// burst once must not keep its peak for its lifetime.
    pub(super) fn trim(&mut self) {
        fn free<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        free(&mut self.pending);
        free(&mut self.orphans);
        super::footprint::free_if_empty(&mut self.awaiting_app);
        super::footprint::free_if_empty(&mut self.buf);
    }

    /// Bytes it holds.
    pub(super) fn heap_bytes(&self) -> usize {
        self.pending.capacity() * core::mem::size_of::<(ConnId, NodeId, u64, Token)>()
            + self.orphans.capacity() * core::mem::size_of::<(NodeId, InFlight)>()
            + self.buf.capacity() * core::mem::size_of::<Token>()
            + self.awaiting_app.capacity() * core::mem::size_of::<Token>()
    }

    /// Messages held for others, for the invariant checks.
    pub(super) fn orphans(&self) -> usize {
        self.orphans.len()
    }

    /// True if copies `peer` held when its connection closed are kept here.
    pub(super) fn has_orphans_of(&self, peer: NodeId) -> bool {
        self.orphans.iter().any(|o| o.0 == peer)
    }
}

impl Node {
    /// Tells the node whether its application has room for more deliveries (a driver calls it
    /// when its event queue fills up and when it drains).
    ///
    /// While the application lags, routed messages delivered here for it (purposes 16 and
    /// up; a layer's are handed on at once) are acknowledged as
    /// received but not reported handed on, so their senders keep their copies, and each
    /// connection's window ([`Config::max_pending_per_peer`](crate::Config) times 4) bounds
    /// what its peer sends on before the application catches up. So a driver can keep reading
    /// the network, acknowledgements included, while the application lags, and an
    /// application that waits for room to send (refused with
    /// [`CommandError::Backpressure`](crate::CommandError::Backpressure)) before it reads its
    /// events cannot stall its own node. When it has room again, they are reported handed on
    /// at once.
    pub fn set_application_lagging(&mut self, now: Instant, lagging: bool) {
        if self.custody.app_lagging == lagging {
            return;
        }
        let _ = self.tick_now(now);
        self.custody.app_lagging = lagging;
        if !lagging {
            let mut tokens = std::mem::take(&mut self.custody.awaiting_app);
            for t in tokens.drain(..) {
                self.pass_custody(t);
            }
            if tokens.capacity() <= 64 {
                self.custody.awaiting_app = tokens;
            }
            self.finish();
        }
    }

    /// A routed message with the current custody was delivered here: handed on now, or once
    /// the application has room ([`Node::set_application_lagging`]). A layer's message
    /// (purpose below 16: the storage layer's) is handed on now: the layer, not the
    /// application, takes it.
    pub(super) fn delivered_in_custody(&mut self, purpose: u8) {
        if self.custody.app_lagging && purpose >= crate::config::MIN_APP_PURPOSE {
            if let Some(t) = self.custody.ctx.take() {
                self.custody.awaiting_app.push(t);
            }
        }
    }

    /// How long a peer may hold a message it received from us before it is probed: the
    /// longest it can wait for a suspected root ([`crate::Config::neighbour_probing_time`])
    /// plus a reroute (two `ack_timeout_max`), and one `ack_timeout_max` for its report.
    pub(super) fn custody_hold(&self) -> core::time::Duration {
        self.cfg.neighbour_probing_time() + self.cfg.ack_timeout_max * 3
    }

    /// How long we keep a copy of a message a peer received and has not handed on: once it
    /// was probed, long enough for the probe to settle.
    pub(super) fn custody_give_up(&self) -> core::time::Duration {
        self.custody_hold() + self.cfg.neighbour_probing_time() + self.cfg.ack_timeout_max
    }

    /// The message `token` names has been handed on: reported to its sender at the end of this
    /// input (promptly: a copy the sender keeps after we handed the message on would become a
    /// duplicate, possibly at another root, if we crashed before reporting it).
    pub(super) fn pass_custody(&mut self, token: Token) {
        let (conn, index) = token;
        let Some(f) = self.conns.get_mut(&conn).and_then(|c| c.flight.as_mut()) else { return };
        let Some(slot) = index.checked_sub(f.passed_in).and_then(|i| f.held_in.get_mut(i as usize)) else { return };
        *slot = true;
        let before = f.passed_in;
        while f.held_in.front() == Some(&true) {
            f.held_in.pop_front();
            f.passed_in += 1;
        }
        if f.passed_in != before && !self.ack_due.contains(&conn) {
            self.ack_due.push(conn);
        }
    }

    /// Runs `f` with `token` as the custody of the message being handled; if nothing took it
    /// by the end, the message was delivered or dropped: handed on.
    pub(super) fn with_custody(&mut self, token: Option<Token>, f: impl FnOnce(&mut Self)) {
        let outer = core::mem::replace(&mut self.custody.ctx, token);
        f(self);
        if let Some(t) = core::mem::replace(&mut self.custody.ctx, outer) {
            self.pass_custody(t);
        }
    }

    /// A routed message with the current custody is queued on `conn`, being set up.
    pub(super) fn keep_pending_custody(&mut self, conn: ConnId, route: &Route) {
        if let Some(t) = self.custody.ctx.take() {
            self.custody.pending.push_back((conn, route.origin, route.seq, t));
        }
    }

    /// The custody of a message that was queued on `conn` and leaves the queue now (only a
    /// routed message has one).
    pub(super) fn take_pending_custody(&mut self, conn: ConnId, msg: &Message) -> Option<Token> {
        let Message::Route(route) = msg else { return None };
        let i = self.custody.pending.iter().position(|e| e.0 == conn && e.1 == route.origin && e.2 == route.seq)?;
        self.custody.pending.remove(i).map(|e| e.3)
    }

    /// `conn` is gone: what it still had queued was routed again or dropped.
    pub(super) fn drop_pending_custody(&mut self, conn: ConnId) {
        if !self.custody.pending.iter().any(|e| e.0 == conn) {
            return;
        }
        let mut gone = Vec::new();
        self.custody.pending.retain(|e| {
            if e.0 == conn {
                gone.push(e.3);
            }
            e.0 != conn
        });
        for t in gone {
            self.pass_custody(t);
        }
    }

    /// Keeps the copy of a message `peer` received and had not handed on when its connection
    /// closed.
    pub(super) fn orphan(&mut self, peer: NodeId, mut e: InFlight) {
        // Kept from now, however long the peer has held it: its connection closed, often
        // because the peer became a suspect, and the probes must have time to settle.
        e.sent = self.last_now;
        e.checked = false;
        if self.custody.orphans.len() >= MAX_ORPHANS {
            self.custody.orphans.pop_front();
        }
        self.custody.orphans.push_back((peer, e));
    }

    /// `peer` was declared failed: the messages it had received from us and not handed on are
    /// routed again around it.
    pub(super) fn reroute_orphans(&mut self, now: Instant, peer: NodeId) {
        if !self.custody.orphans.iter().any(|o| o.0 == peer) {
            return;
        }
        let (theirs, others): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.custody.orphans).into_iter().partition(|o| o.0 == peer);
        self.custody.orphans = others;
        for (_, e) in theirs {
            self.stats.add(Counter::CustodyReroutes, 1);
            self.reroute(now, e, Some(peer));
        }
    }

    /// Every heartbeat: a peer still holding an orphaned copy `custody_hold` after it was
    /// orphaned is probed; copies orphaned longer than `custody_give_up` ago are dropped.
    pub(super) fn sweep_orphans(&mut self, now: Instant) {
        let (hold, give_up) = (self.custody_hold(), self.custody_give_up());
        self.custody.orphans.retain(|o| now - o.1.sent < give_up);
        let mut due = Vec::new();
        for (peer, e) in self.custody.orphans.iter_mut() {
            if now - e.sent >= hold && !e.checked {
                e.checked = true;
                due.push((*peer, e.sent));
            }
        }
        for (peer, since) in due {
            self.check_custodian(now, peer, since);
        }
    }

    /// True if `id` received messages from us that it has not handed on (on a connection, or
    /// when its connection closed): we keep copies of them. Such a custodian is probed on
    /// suspicion, and declared failed if it does not answer, even if it has left our tables
    /// meanwhile (a leaf-set member a nearer node pushed out, a table entry replaced): else
    /// nothing would ever route the copies again, and a crash would take them away.
    pub(super) fn holds_our_copies(&self, id: NodeId) -> bool {
        self.custody.has_orphans_of(id)
            || self
                .conns
                .values()
                .any(|c| c.peer() == Some(id) && c.flight.as_ref().is_some_and(|f| f.holds_received()))
    }

    /// Messages taken off `conn`'s queue before it carried them: each routed again around
    /// `peer` ([`Node::requeue`]) with the custody it had on the queue.
    pub(super) fn requeue_taken(&mut self, now: Instant, conn: ConnId, taken: VecDeque<Message>, peer: Option<NodeId>) {
        for m in taken {
            let token = self.take_pending_custody(conn, &m);
            self.with_custody(token, |n| n.requeue(now, m, peer));
        }
    }

    /// How long routed messages wait for a connection being set up before they are routed
    /// around its peer: twice the longest per-hop ack timeout, as long as a message written on
    /// an open connection waits for its ack before it is rerouted (capped by `connect_timeout`).
    /// Without it a message queued behind a dial to a crashed node waited the whole
    /// `connect_timeout`, and with connections to table members closed while idle
    /// ([`crate::MemberConnections`]) most hops are dialled first.
    pub(super) fn setup_patience(&self) -> core::time::Duration {
        (self.cfg.ack_timeout_max * 2).min(self.cfg.connect_timeout)
    }

    /// A routed message was queued on `conn`, not open yet: its connection timer comes
    /// forward to `setup_patience` after the set-up began.
    pub(super) fn arm_setup_check(&mut self, conn: ConnId) {
        let patience = self.setup_patience();
        let Some(c) = self.conns.get(&conn).filter(|c| !c.late()) else { return };
        let at = c.opened + patience;
        if c.timer.is_none_or(|t| at < t) {
            self.arm_conn(conn, at);
        }
    }

    /// The timer of `conn`, still being set up and within `connect_timeout`: once the set-up
    /// has taken `setup_patience`, the routed messages queued on it are routed again around
    /// its peer, which is suspected (its probe waits on this connection, which may still
    /// open). Other messages stay queued. That happens once per connection: a message queued
    /// on it later waits for the set-up's outcome (else two slow set-ups whose peers have no
    /// alternative could pass messages back and forth at every step). The timer is armed
    /// again for what comes next.
    pub(super) fn setup_check(&mut self, now: Instant, conn: ConnId) {
        let (patience, connect) = (self.setup_patience(), self.cfg.connect_timeout);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let (opened, peer) = (c.opened, c.peer().or(c.expected()));
        let routed = |c: &super::connections::Conn| {
            c.io.as_ref().is_some_and(|io| io.pending.iter().any(|m| matches!(m, Message::Route(_))))
        };
        if now - opened >= patience && !c.late() && routed(c) {
            c.set_late();
            let Some(io) = c.io.as_deref_mut() else { return };
            let (late, rest): (VecDeque<Message>, VecDeque<Message>) =
                core::mem::take(&mut io.pending).into_iter().partition(|m| matches!(m, Message::Route(_)));
            io.pending = rest;
            self.pending_total -= late.len();
            self.stats.add(Counter::SlowSetupReroutes, late.len() as u64);
            self.stats.add(Counter::Reroutes, late.len() as u64);
            if let Some(p) = peer {
                self.suspect(now, p);
            }
            self.requeue_taken(now, conn, late, peer);
        }
        let Some(c) = self.conns.get(&conn) else { return };
        let early = now - opened < patience && !c.late() && routed(c);
        let at = if early { opened + patience } else { opened + connect };
        self.arm_conn(conn, at);
    }

    /// `peer` has held a copy it received at `since` past `custody_hold`: probed, unless we
    /// heard from it since (it was alive after it took the message, so it has it in hand or
    /// handed it on and its report was lost; a probe would only risk a false declaration).
    pub(super) fn check_custodian(&mut self, now: Instant, peer: NodeId, since: Instant) {
        if self.peers.get(&peer).is_some_and(|p| p.last_heard().is_none_or(|t| t <= since)) {
            self.suspect(now, peer);
        }
    }
}

#[cfg(test)]
#[path = "custody_tests.rs"]
mod tests;
