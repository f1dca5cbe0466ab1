//! The join protocol: join requests routed to the root, state handed to the joiner, and the
//! announcement to the leaf set that makes the joiner a root (MSPastry's consistent join).

use core::time::Duration;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use thin_vec::ThinVec;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{CommandError, ConnId, Event, NodeError, Output};
use crate::routing_table::UNKNOWN_PROXIMITY;
use crate::time::{Instant, Span};
use crate::wire::{Message, Route};

use super::counters::Counter;
use super::custody::Token;
use super::membership::proximity;
use super::peer::Peer;
use super::routing::{Avoid, Hop};
use super::timers::NodeTimer;
use super::{Node, State};

/// Candidates measured at once in one round of nearest-node discovery, at most.
pub(super) const NEAR_PROBES: usize = 16;
/// Rounds of nearest-node discovery, at most: the bootstrap's leaf set, then the first row of
/// each nearer node found.
pub(super) const NEAR_ROUNDS: u8 = 6;
/// Entries of a candidate's first row kept for the next round, at most.
const NEAR_KEEP: usize = 32;

/// Nearest-node discovery, after Castro, Druschel, Hu and Rowstron ("Exploiting network
/// proximity in peer-to-peer overlay networks", 2002): before it asks to join, the joiner
/// walks towards the node nearest to it, so that the tables it is handed start near it.
///
/// The joiner asks the bootstrap for its leaf set, whose members lie anywhere in the
/// network. Each round then asks up to [`NEAR_PROBES`] candidates (a random choice among those
/// not asked before) for their first routing-table row, a row of nodes chosen near its owner;
/// the round trip of that request (or of the connection's handshake, if shorter) measures
/// the candidate, and the row of the nearest candidate is the next round's choice. The walk
/// stops when a round finds no node nearer than the nearest so far, after [`NEAR_ROUNDS`]
/// rounds, or after `join_timeout`. The bootstrap's answer is awaited `connect_timeout`; a
/// round ends when every candidate has answered, after `probe_timeout`, or once three round
/// trips of the nearest node so far have passed (a fresh connection's set-up, handshake and
/// request: a candidate still silent then is not nearer). The join request then goes through the nearest node found
/// (the bootstrap if none was nearer, or if it never answered), and the nodes measured on
/// the way enter the tables with their proximity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Near {
    /// Rounds completed.
    round: u8,
    /// Waiting for the bootstrap's leaf set.
    awaiting_bootstrap: bool,
    /// The nearest node measured so far, with its proximity.
    best: Option<(u64, NodeId)>,
    /// This round's candidates: when each was asked, and whether it answered.
    probing: Vec<(NodeId, Instant, bool)>,
    /// The nearest candidate of this round timed so far, with its proximity.
    next: Option<(u64, NodeId)>,
    /// The round's nearest candidate, asked for its first row (the next round's candidates).
    asking: Option<NodeId>,
    /// Every node measured or asked (at most [`NEAR_ROUNDS`] x [`NEAR_PROBES`] + 1).
    seen: BTreeSet<NodeId>,
    /// When the walk stops, wherever it is.
    give_up: Instant,
}

#[derive(Debug)]
pub(super) enum Held {
    /// A routed message, with our custody of it towards the node that sent it to us, if any:
    /// that node keeps its copy until we hand the message on, so that it survives our crash
    /// while we hold it ([`super::custody`]).
    Route(Route, Option<Token>),
    Join {
        joiner: NodeInfo,
        hops: u8,
        via: Option<ConnId>,
    },
}

impl Node {
    /// A join-protocol message from an authenticated peer.
    pub(super) fn on_join_message(&mut self, now: Instant, conn: ConnId, from: NodeId, msg: Message) {
        match msg {
            Message::JoinRequest { joiner, hops } => self.route_join(now, joiner, hops, Some(conn)),
            // A state that arrives after we gave up joining (`JoinFailed`) is stale: learning
            // its sender would make us a member of its ring without a join (a ring of one
            // takes the first node that contacts it), unannounced and with the application
            // told the join failed.
            Message::JoinState { .. } if self.state == State::Alone => {}
            Message::JoinState { rows, hood, leaves } => {
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                self.warm_peers(rows.iter().chain(&hood).chain(leaves.iter().flatten()).map(|i| i.id));
                for i in rows.into_iter().chain(hood) {
                    self.learn(now, i, false);
                }
                let is_root = leaves.is_some();
                for i in leaves.unwrap_or_default() {
                    self.learn(now, i, false);
                }
                if is_root && matches!(self.state, State::Joining { .. }) {
                    self.announce(now);
                }
            }
            Message::Announce { seq } => self.announced(now, from, seq, true),
            Message::Welcome { seq, ready, leaves } => {
                self.measure(now, from, seq);
                if ready {
                    if let Some(info) = self.peer_info(from) {
                        self.learn(now, info, true);
                    }
                }
                self.warm_peers(leaves.iter().map(|i| i.id));
                for i in leaves {
                    self.learn(now, i, false);
                }
                if let Some(u) = self.unwelcomed.as_mut() {
                    u.ids.retain(|&id| id != from);
                }
                self.stop_awaiting(now, from);
            }
            _ => {}
        }
    }

    /// Joins the ring that the nodes at `bootstraps` belong to.
    ///
    /// Only a node that is still a ring of one may join. It first looks for the node nearest
    /// to it by round trip, starting from the first address, and sends its join request
    /// through that node, so that the tables it is handed start near it (nearest-node
    /// discovery: at most 6 rounds, each timing at most 16 candidates by a connection's
    /// set-up alone and asking the nearest for its first row, within `join_timeout`; the
    /// first attempt's deadline runs from its end). Then it tries the addresses in turn,
    /// `join_attempts` rounds over the list, one attempt every
    /// `join_timeout` (sooner when a bootstrap cannot be reached or refuses us); from the
    /// second attempt on it also asks the node it has learned that is numerically closest to
    /// its own id, if any.
    /// [`Event::Joined`] follows when the node has its state and has been acknowledged by its
    /// leaf set; [`NodeError::JoinFailed`] if every attempt failed.
    pub fn join(&mut self, now: Instant, bootstraps: &[SocketAddr]) -> Result<(), CommandError> {
        let now = self.tick_now(now);
        match self.state {
            State::Left => return Err(CommandError::Left),
            State::Alone if self.peers.is_empty() => {}
            _ => return Err(CommandError::AlreadyJoined),
        }
        let own = |a: &SocketAddr| *a == self.cfg.info.local || *a == self.cfg.info.global;
        let mut list: ThinVec<SocketAddr> = ThinVec::with_capacity(bootstraps.len());
        for a in bootstraps.iter().filter(|a| !own(a)) {
            if !list.contains(a) {
                list.push(*a);
            }
        }
        if list.is_empty() {
            return Err(if bootstraps.is_empty() { CommandError::NoBootstrap } else { CommandError::SelfBootstrap });
        }
        let first = list[0];
        let near = Near {
            round: 0,
            awaiting_bootstrap: true,
            best: None,
            probing: Vec::new(),
            next: None,
            asking: None,
            seen: BTreeSet::new(),
            give_up: now + self.cfg.join_timeout,
        };
        self.state = State::Joining { bootstraps: list, attempt: 1, near: Some(Box::new(near)) };
        match self.conn_to_addr(now, first) {
            Some(conn) if self.enqueue(conn, Message::LeafSetRequest) => {
                self.stats.add(Counter::JoinMessages, 1);
                self.timers.set(NodeTimer::Join, now + self.cfg.connect_timeout.min(self.cfg.join_timeout));
            }
            // No room for a connection now: join the plain way (the deadline retries).
            _ => self.near_done(now),
        }
        self.finish();
        Ok(())
    }

    /// True while the joiner looks for a node near it.
    pub(super) fn discovering(&self) -> bool {
        matches!(&self.state, State::Joining { near: Some(_), .. })
    }

    fn take_near(&mut self) -> Option<Box<Near>> {
        match &mut self.state {
            State::Joining { near, .. } => near.take(),
            _ => None,
        }
    }

    fn put_near(&mut self, n: Box<Near>) {
        if let State::Joining { near, .. } = &mut self.state {
            *near = Some(n);
        }
    }

    /// A leaf set or row arrived while discovering: the bootstrap's leaf set, or a
    /// candidate's first row, is consumed by the walk; any other message goes back to the caller.
    pub(super) fn on_near_reply(&mut self, now: Instant, conn: ConnId, from: NodeId, msg: Message) -> Option<Message> {
        let State::Joining { bootstraps, near: Some(n), .. } = &self.state else { return Some(msg) };
        match msg {
            Message::LeafSet { leaves }
                if n.awaiting_bootstrap
                    && self.conns.get(&conn).is_some_and(|c| bootstraps.first() == Some(&c.addr())) =>
            {
                let mut n = self.take_near()?;
                n.awaiting_bootstrap = false;
                n.seen.insert(from);
                // The bootstrap's proximity was measured by the handshake.
                let prox = self.peers.get(&from).map_or(UNKNOWN_PROXIMITY, |p| p.proximity());
                n.best = Some((prox, from));
                self.near_probe(now, n, leaves);
                None
            }
            Message::Row { row: 0, entries } if n.asking == Some(from) => {
                let mut n = self.take_near()?;
                n.asking = None;
                let me = self.id();
                let mut next: Vec<NodeInfo> = entries;
                next.retain(|i| i.id != me && i.is_valid());
                next.truncate(NEAR_KEEP);
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                self.near_probe(now, n, next);
                None
            }
            other => Some(other),
        }
    }

    /// Asks up to [`NEAR_PROBES`] of `infos` not asked before for their first row.
    fn near_probe(&mut self, now: Instant, mut n: Box<Near>, infos: Vec<NodeInfo>) {
        let me = self.id();
        let mut ids = BTreeSet::new();
        let mut fresh: Vec<NodeInfo> = Vec::new();
        for i in infos {
            let new = i.id != me && i.is_valid() && !n.seen.contains(&i.id) && !self.failed.contains_key(&i.id);
            if new && ids.insert(i.id) {
                fresh.push(i);
            }
        }
        // A random choice of at most NEAR_PROBES (a partial Fisher-Yates shuffle).
        let take = fresh.len().min(NEAR_PROBES);
        for k in 0..take {
            let j = k + self.rng.below((fresh.len() - k) as u64) as usize;
            fresh.swap(k, j);
        }
        fresh.truncate(take);
        n.probing.clear();
        n.next = None;
        for info in fresh {
            let id = info.id;
            n.seen.insert(id);
            let addr = info.addr_from(&self.cfg.info.region);
            self.peers.get_or_insert_with(id, || Box::new(Peer::new(info, now)));
            // Timed by a connection's set-up alone, closed once established: a candidate
            // costs no frame (asking each for its row cost seven: set-up, request, answer,
            // close). Only the round's nearest is asked for its row.
            if self.dial_to_time(now, addr, id) {
                n.probing.push((id, now, false));
            }
        }
        if n.probing.is_empty() {
            self.put_near(n);
            self.near_done(now);
        } else {
            let at = (now + self.cfg.probe_timeout).min(n.give_up);
            self.put_near(n);
            self.timers.set(NodeTimer::Join, at);
        }
    }

    /// A candidate of the walk was timed by its connection's set-up (`rtt`): true if it was
    /// one of this round's. It is learned (as hearsay, with its round trip, so that the
    /// joiner's tables start from measured nodes), and the round ends once every candidate
    /// is timed or three round trips of the nearest so far have passed.
    pub(super) fn near_timed(&mut self, now: Instant, id: NodeId, rtt: Duration) -> bool {
        let Some(mut n) = self.take_near() else { return false };
        let Some(k) = n.probing.iter().position(|p| p.0 == id && !p.2) else {
            self.put_near(n);
            return false;
        };
        n.probing[k].2 = true;
        let Some(p) = self.peers.get_mut(&id) else {
            self.put_near(n);
            return true;
        };
        let prox = proximity(rtt, p.region(), &self.cfg.info.region, self.cfg.region_factor);
        p.set_proximity(p.proximity().min(prox));
        let prox = p.proximity();
        let info = p.info(id);
        if n.next.is_none_or(|x| (prox, id) < x) {
            n.next = Some((prox, id));
        }
        let done = n.probing.iter().all(|p| p.2);
        let nearest = n.best.map_or(UNKNOWN_PROXIMITY, |b| b.0).min(prox);
        let wait = Duration::from_micros(nearest.saturating_mul(3)).min(self.cfg.probe_timeout);
        let cutoff = (n.probing[0].1 + wait).min(n.give_up);
        self.put_near(n);
        self.learn(now, info, false);
        self.table.update_proximity(id, prox);
        if done || now >= cutoff {
            self.near_round_end(now);
        } else if self.timers.get(NodeTimer::Join).is_none_or(|t| cutoff < t) {
            self.timers.set(NodeTimer::Join, cutoff);
        }
        true
    }

    /// The end of a round: go on from its nearest candidate if it is nearer than the nearest
    /// so far, else stop.
    fn near_round_end(&mut self, now: Instant) {
        let Some(mut n) = self.take_near() else { return };
        n.round = n.round.saturating_add(1);
        let next = n.next.take().filter(|x| n.best.is_none_or(|b| *x < b));
        match next {
            Some((prox, id)) => {
                n.best = Some((prox, id));
                if n.round < NEAR_ROUNDS
                    && now < n.give_up
                    && self.send_msg(now, id, Message::RowRequest { row: 0 }).is_ok()
                {
                    self.stats.add(Counter::JoinMessages, 1);
                    n.asking = Some(id);
                    n.probing.clear();
                    let at = (now + self.cfg.probe_timeout).min(n.give_up);
                    self.put_near(n);
                    self.timers.set(NodeTimer::Join, at);
                } else {
                    self.put_near(n);
                    self.near_done(now);
                }
            }
            None => {
                self.put_near(n);
                self.near_done(now);
            }
        }
    }

    /// The deadline of a discovery step passed.
    fn near_timer(&mut self, now: Instant) {
        let State::Joining { near: Some(n), .. } = &self.state else { return };
        if n.awaiting_bootstrap || n.asking.is_some() || now >= n.give_up {
            self.near_done(now);
        } else {
            self.near_round_end(now);
        }
    }

    /// Discovery is over: the join request goes through the nearest node found, or to the
    /// bootstrap if none was measured.
    fn near_done(&mut self, now: Instant) {
        let best = self.take_near().and_then(|n| n.best);
        let State::Joining { bootstraps, .. } = &self.state else { return };
        let first = bootstraps[0];
        self.timers.set(NodeTimer::Join, now + self.cfg.join_timeout);
        let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 0 };
        match best {
            Some((_, via)) if self.send_msg(now, via, msg).is_ok() => self.stats.add(Counter::JoinMessages, 1),
            _ => self.send_join_request(now, first),
        }
    }

    /// The join deadline passed: try the next bootstrap (and the best node learned so far),
    /// or give up after `join_attempts` rounds over the list.
    pub(super) fn join_timer(&mut self, now: Instant) {
        if self.discovering() {
            self.near_timer(now);
            return;
        }
        let State::Joining { bootstraps, attempt, .. } = &mut self.state else { return };
        let rounds = u64::from(self.cfg.join_attempts).saturating_mul(bootstraps.len() as u64);
        if u64::from(*attempt) >= rounds {
            let attempts = *attempt;
            self.state = State::Alone;
            self.gave_up_join = Some(thin_vec::ThinVec::new());
            self.report(NodeError::JoinFailed { attempts });
            self.forget_all(now);
            return;
        }
        let next = bootstraps[*attempt as usize % bootstraps.len()];
        *attempt += 1;
        self.timers.set(NodeTimer::Join, now + self.cfg.join_timeout);
        self.send_join_request(now, next);
        let me = self.id();
        let learned = self.table_members().into_iter().reduce(|b, x| if me.is_closer(x, b) { x } else { b });
        if let Some(via) = learned {
            // Counted as a hop already: we reached `via` through a ring's tables, not by an
            // address we were given, so a ring of one that gave up its own join refuses it
            // (`Leaving`) rather than answer as the root of a ring it is not in.
            let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 1 };
            if self.send_msg(now, via, msg).is_ok() {
                self.stats.add(Counter::JoinMessages, 1);
            }
        }
    }

    /// `from` announced itself (an `Announce` numbered `seq`, or a handshake that stood for
    /// one, [`Probe`](crate::wire::Probe)): it is learned, and answered with a `Welcome` if it
    /// asked for one (`answer`) or if it falls in our leaf set's range (our leaves then go with
    /// the answer).
    pub(super) fn announced(&mut self, now: Instant, from: NodeId, seq: u32, answer: bool) {
        if self.state == State::Alone {
            // The first node to join through a ring of one makes it a ring of two.
            // After a failed join of our own, only a node whose join request we
            // answered as its root counts: another found us in its ring's tables,
            // which learned of us while we were joining, and is told we are not in
            // that ring.
            if self.gave_up_join.as_ref().is_some_and(|answered| !answered.contains(&from)) {
                let _ = self.send_msg(now, from, Message::Leaving);
                return;
            }
            self.gave_up_join = None;
            self.state = State::Ready;
        }
        if let Some(info) = self.peer_info(from) {
            self.learn(now, info, true);
        }
        let leaves = if self.leaf.covers(from) { self.leaf_infos() } else { Vec::new() };
        if answer || !leaves.is_empty() {
            let ready = self.is_ready();
            let _ = self.send_msg(now, from, Message::Welcome { seq, ready, leaves });
        }
    }

    /// The leaf set had its chance to answer our announcement: act as root from now on. The
    /// members that did not answer are announced to again, over fresh connections,
    /// `probe_attempts` times `probe_timeout` apart (see [`Node::reannounce`]).
    pub(super) fn announce_timer(&mut self, now: Instant) {
        match &mut self.state {
            State::Announcing { awaiting } => {
                let ids = std::mem::take(awaiting).into_iter().collect();
                self.unwelcomed = Some(Box::new(Unwelcomed { ids, rounds: 0 }));
                self.become_ready(now);
                self.reannounce(now);
            }
            State::Ready => self.reannounce(now),
            _ => {}
        }
    }

    /// Announces us again to the leaf-set members that have not answered our announcement.
    ///
    /// A member that missed it (its frame was lost, and with an encrypted connection the
    /// connection with it) would not know us, and would deliver the keys between it and us
    /// that are ours. Each round closes the connections the members had and dials them anew,
    /// since the old one may be broken. Members that stay silent are not declared failed
    /// here: their liveness is what the probes decide.
    fn reannounce(&mut self, now: Instant) {
        let leaf = &self.leaf;
        let Some(u) = self.unwelcomed.as_mut() else { return };
        u.ids.retain(|&id| leaf.contains(id));
        if u.ids.is_empty() || u.rounds >= self.cfg.probe_attempts {
            self.unwelcomed = None;
            return;
        }
        u.rounds += 1;
        for id in u.ids.clone() {
            self.close_conns_of(now, id);
            self.probe(now, id, true);
            self.stats.add(Counter::JoinMessages, 1);
        }
        self.timers.set(NodeTimer::Announce, now + self.cfg.probe_timeout);
    }

    /// A bootstrap could not be reached or refused us: retry soon rather than at the deadline.
    pub(super) fn bootstrap_failed(&mut self, now: Instant, addr: SocketAddr) {
        if let State::Joining { bootstraps, near, .. } = &mut self.state {
            if let Some(n) = near {
                if !n.awaiting_bootstrap || bootstraps.first() != Some(&addr) {
                    // The walk has left the bootstrap behind: its failure does not matter.
                    return;
                }
                // The bootstrap never answered: no discovery; the deadline tries the next one.
                *near = None;
            }
            let soon = now + self.cfg.heartbeat_interval.min(self.cfg.probe_timeout);
            if bootstraps.contains(&addr) && self.timers.get(NodeTimer::Join).is_none_or(|t| soon < t) {
                self.timers.set(NodeTimer::Join, soon);
            }
        }
    }

    /// Handles a join request; `via` is the connection it came on, used to answer the joiner
    /// directly when the joiner itself sent it (no new connection, no dial on a peer's say-so).
    pub(super) fn route_join(&mut self, now: Instant, joiner: NodeInfo, hops: u8, via: Option<ConnId>) {
        if joiner.id == self.id() || hops >= self.cfg.max_hops {
            return;
        }
        let hop = self.decide(joiner.id, Some(joiner.id));
        if let Hop::Hold = hop {
            self.hold_join(joiner, hops, via);
            return;
        }
        if self.is_ready() {
            self.answer_join(now, &joiner, hops, via, matches!(hop, Hop::Here));
        }
        if let Hop::Next(next) = hop {
            self.forward_join(now, next, joiner, hops);
        }
    }

    /// A join request we forwarded could not be written: the connection to `failed` broke or
    /// could not be set up. It is routed again around that peer and every suspect
    /// ([`Avoid::All`]), but never parked: if that leaves us the closest, we answer as its root. Routed again by the tables alone, it went back to the
    /// same unreachable peer, each time one hop further, until the hop limit dropped it: 18 of
    /// the 28 joins that failed in two simulated hours at a 5-minute median session (seed 3)
    /// had lost their every attempt that way, and the joiner was sent our rows each time. The
    /// joiner has our rows already; it is answered again only if we are the root now.
    pub(super) fn reroute_join(&mut self, now: Instant, joiner: NodeInfo, hops: u8, failed: Option<NodeId>) {
        if joiner.id == self.id() || hops >= self.cfg.max_hops {
            return;
        }
        let hop = match self.decide_with(joiner.id, failed, Avoid::All) {
            Hop::Next(x) if x == joiner.id => self.decide_with(joiner.id, Some(joiner.id), Avoid::All),
            hop => hop,
        };
        match hop {
            Hop::Hold => self.hold_join(joiner, hops, None),
            Hop::Here => self.answer_join(now, &joiner, hops, None, true),
            Hop::Next(next) => self.forward_join(now, next, joiner, hops),
        }
    }

    /// Keeps a join request until we are ready (at most `max_pending_total` held messages).
    fn hold_join(&mut self, joiner: NodeInfo, hops: u8, via: Option<ConnId>) {
        if self.pending_total < self.cfg.max_pending_total {
            self.pending_total += 1;
            self.held.push(Held::Join { joiner, hops, via });
        }
    }

    /// Sends the join request on to `next`. A join request has no per-hop acknowledgement, so
    /// a next hop we have not heard from for a heartbeat interval is probed with it, and
    /// suspected if the probe is not answered within `probe_timeout` ([`Node::peer_timer`]):
    /// dead, it is declared failed after its probes (`probing_time()`, 5 s at the defaults;
    /// `neighbour_probing_time()` if it is our neighbour), and the joiner's next attempt,
    /// `join_timeout` later, goes round it. Without the probe a dead root, a
    /// leaf-set member beyond its neighbours, took up to `leaf_detection_time()` (73 s) to be
    /// found, longer than a joiner with one bootstrap waits (three attempts 10 s apart): at a
    /// 5-minute median session (seed 3) each of the 14 joins that still failed had sent every
    /// attempt into a dead node, mostly one that its last hop had heard from 10 to 60 s before.
    /// The probes' round trips also refresh proximity: the mean stretch of 10,000 nodes joined
    /// at 500 a second moved from 1.57 to 1.59 with them (the target is 1.6).
    fn forward_join(&mut self, now: Instant, next: NodeId, joiner: NodeInfo, hops: u8) {
        if self.send_msg(now, next, Message::JoinRequest { joiner, hops: hops + 1 }).is_ok() {
            self.stats.add(Counter::JoinMessages, 1);
        }
        let quiet = self.cfg.heartbeat_interval;
        let stale = self.peers.get(&next).is_some_and(|p| {
            p.suspected().is_none()
                && p.last_heard().is_none_or(|t| now - t > quiet)
                && p.ping().is_none_or(|(_, sent)| now - sent > quiet)
        });
        if stale && self.is_ready() {
            self.probe(now, next, false);
            let at = now + self.cfg.probe_timeout;
            if self.peers.get(&next).is_some_and(|p| p.timer.is_none_or(|t| at < t)) {
                self.arm_peer(next, at);
            }
        }
    }

    /// Sends the joiner our rows it shares a prefix with (and, to a joiner that sent its request
    /// to us itself, our neighbourhood set), and our leaf set if we are its `root`.
    fn answer_join(&mut self, now: Instant, joiner: &NodeInfo, hops: u8, via: Option<ConnId>, root: bool) {
        let me = self.id();
        let depth = me.common_prefix_len(joiner.id);
        let ids = (0..=depth.min(crate::id::DIGITS - 1)).flat_map(|r| self.table.row(r).map(|c| c.id));
        let mut rows = self.vouched_infos(ids.filter(|&x| x != joiner.id));
        rows.push(self.cfg.info.clone());
        let hood = if hops == 0 { self.vouched_infos(self.hood.iter().map(|e| e.1)) } else { Vec::new() };
        let leaves = root.then(|| self.vouched_infos(self.leaf.members().into_iter().filter(|&x| x != joiner.id)));
        if let (State::Alone, Some(answered)) = (&self.state, self.gave_up_join.as_mut()) {
            // (At most a few joiners' worth: the oldest is forgotten.)
            if answered.len() >= ANSWERED_JOINERS {
                answered.remove(0);
            }
            answered.push(joiner.id);
        }
        let state = Message::JoinState { rows, hood, leaves };
        let direct =
            via.filter(|c| self.conns.get(c).is_some_and(|c| c.peer() == Some(joiner.id) && c.closing.is_none()));
        match direct {
            Some(conn) => {
                self.enqueue(conn, state);
            }
            None => {
                self.peers.get_or_insert_with(joiner.id, || Box::new(Peer::new(joiner.clone(), now)));
                let _ = self.send_msg(now, joiner.id, state);
            }
        }
        self.stats.add(Counter::JoinMessages, 1);
    }

    pub(super) fn send_join_request(&mut self, now: Instant, bootstrap: SocketAddr) {
        let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 0 };
        // If no connection can be had now, the join deadline retries.
        if let Some(conn) = self.conn_to_addr(now, bootstrap) {
            self.enqueue(conn, msg);
            self.stats.add(Counter::JoinMessages, 1);
        }
    }

    pub(super) fn announce(&mut self, now: Instant) {
        // The leaf set must know us, and the routing table's entries must answer before we
        // trust them; a neighbourhood member in no other table was measured (it answered) and
        // is only a near node to start row asks from.
        let targets: Vec<NodeId> = self.table_members().into_iter().filter(|&id| !self.hood_only(id)).collect();
        let mut awaiting: ThinVec<NodeId> = self.leaf.members().into_iter().collect();
        awaiting.sort_unstable();
        awaiting.dedup();
        for id in targets {
            self.probe(now, id, true);
            self.stats.add(Counter::JoinMessages, 1);
        }
        self.state = State::Announcing { awaiting };
        self.timers.stop(NodeTimer::Join);
        self.timers.set(NodeTimer::Announce, now + self.cfg.connect_timeout);
        if matches!(&self.state, State::Announcing { awaiting, .. } if awaiting.is_empty()) {
            self.become_ready(now);
        }
    }

    /// `id` answered our announcement, or failed: it is awaited no longer, and once no
    /// leaf-set member is, we act as root.
    pub(super) fn stop_awaiting(&mut self, now: Instant, id: NodeId) {
        if let State::Announcing { awaiting } = &mut self.state {
            if let Ok(i) = awaiting.binary_search(&id) {
                awaiting.remove(i);
            }
            if awaiting.is_empty() {
                self.become_ready(now);
            }
        }
    }

    pub(super) fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.timers.stop(NodeTimer::Join);
        self.timers.stop(NodeTimer::Announce);
        // The first exchanges come soon (1/64 of `leaf_exchange_interval` after, at most a
        // heartbeat, then at doubling gaps): they find neighbours that joined at the same time.
        self.exchange_gap = Span::of((self.cfg.leaf_exchange_interval / 64).min(self.cfg.heartbeat_interval));
        self.timers.set(NodeTimer::LeafExchange, now + self.exchange_gap.get());
        // The first of those asks near nodes for rows as if the last had won a cell: a
        // joiner's table is worth improving until asks show it is not.
        self.rows.won = true;
        self.out.push_back(Output::Event(Event::Joined));
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            match h {
                Held::Route(r, token) => self.with_custody(token, |n| {
                    let _ = n.route_app(now, r, false);
                }),
                Held::Join { joiner, hops, via } => self.route_join(now, joiner, hops, via),
            }
        }
    }
}

/// Leaf-set members that did not answer our announcement, and the rounds of
/// [`Node::reannounce`] done (boxed: a node holds them for a few probe timeouts after its join,
/// and nothing the rest of its life).
#[derive(Debug)]
pub(super) struct Unwelcomed {
    pub(super) ids: Vec<NodeId>,
    rounds: u32,
}

impl Unwelcomed {
    /// Members `ids` are waited for again from the first round.
    #[cfg(test)]
    pub(super) fn new(ids: Vec<NodeId>) -> Self {
        Unwelcomed { ids, rounds: 0 }
    }
}

/// Joiners a ring of one that gave up joining remembers having answered as their root: the
/// ones whose announcement makes it a ring of two.
const ANSWERED_JOINERS: usize = 16;

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
