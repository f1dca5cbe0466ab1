//! The join protocol: join requests routed to the root, state handed to the joiner, and the
//! announcement to the leaf set that makes the joiner a root (MSPastry's consistent join).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{CommandError, ConnId, Event, NodeError, Output};
use crate::time::Instant;
use crate::wire::{Message, Route};

use super::membership::Peer;
use super::routing::Hop;
use super::timers::NodeTimer;
use super::{Node, State};

#[derive(Debug)]
pub(super) enum Held {
    Route(Route),
    Join { joiner: NodeInfo, hops: u8, via: Option<ConnId> },
}

impl Node {
    /// A join-protocol message from an authenticated peer.
    pub(super) fn on_join_message(&mut self, now: Instant, conn: ConnId, from: NodeId, msg: Message) {
        match msg {
            Message::JoinRequest { joiner, hops } => self.route_join(now, joiner, hops, Some(conn)),
            Message::JoinState { rows, hood, leaves } => {
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
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
            Message::Announce { seq } => {
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                let leaves = if self.leaf.covers(from) { self.leaf_infos() } else { Vec::new() };
                let ready = self.is_ready();
                let _ = self.send_msg(now, from, Message::Welcome { seq, ready, leaves });
            }
            Message::Welcome { seq, ready, leaves } => {
                self.measure(now, from, seq);
                if ready {
                    if let Some(info) = self.peer_info(from) {
                        self.learn(now, info, true);
                    }
                }
                for i in leaves {
                    self.learn(now, i, false);
                }
                if let State::Announcing { awaiting, .. } = &mut self.state {
                    awaiting.remove(&from);
                    if awaiting.is_empty() {
                        self.become_ready(now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Joins the ring that the nodes at `bootstraps` belong to.
    ///
    /// Only a node that is still a ring of one may join. The node tries the addresses in
    /// turn, `join_attempts` rounds over the list, one attempt every `join_timeout` (sooner
    /// when a bootstrap cannot be reached or refuses us); from the second attempt on it also
    /// asks the node it has learned that is numerically closest to its own id, if any.
    /// [`Event::Joined`] follows when the node has its state and has been acknowledged by its
    /// leaf set; [`NodeError::JoinFailed`](crate::NodeError::JoinFailed) if every attempt failed.
    pub fn join(&mut self, now: Instant, bootstraps: &[SocketAddr]) -> Result<(), CommandError> {
        let now = self.tick_now(now);
        match self.state {
            State::Left => return Err(CommandError::Left),
            State::Alone if self.peers.is_empty() => {}
            _ => return Err(CommandError::AlreadyJoined),
        }
        let own = |a: &SocketAddr| *a == self.cfg.info.local || *a == self.cfg.info.global;
        let mut list: Vec<SocketAddr> = Vec::with_capacity(bootstraps.len());
        for a in bootstraps.iter().filter(|a| !own(a)) {
            if !list.contains(a) {
                list.push(*a);
            }
        }
        if list.is_empty() {
            return Err(if bootstraps.is_empty() { CommandError::NoBootstrap } else { CommandError::SelfBootstrap });
        }
        let first = list[0];
        self.state = State::Joining { bootstraps: list, attempt: 1 };
        self.timers.set(NodeTimer::Join, now + self.cfg.join_timeout);
        self.send_join_request(now, first);
        self.finish();
        Ok(())
    }

    /// The join deadline passed: try the next bootstrap (and the best node learned so far),
    /// or give up after `join_attempts` rounds over the list.
    pub(super) fn join_timer(&mut self, now: Instant) {
        let State::Joining { bootstraps, attempt } = &mut self.state else { return };
        let rounds = u64::from(self.cfg.join_attempts).saturating_mul(bootstraps.len() as u64);
        if u64::from(*attempt) >= rounds {
            let attempts = *attempt;
            self.state = State::Alone;
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
            let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 0 };
            if self.send_msg(now, via, msg).is_ok() {
                self.stats.join_messages += 1;
            }
        }
    }

    /// The leaf set had its chance to answer our announcement: act as root from now on.
    pub(super) fn announce_timer(&mut self, now: Instant) {
        if matches!(self.state, State::Announcing { .. }) {
            self.become_ready(now);
        }
    }

    /// A bootstrap could not be reached or refused us: retry soon rather than at the deadline.
    pub(super) fn bootstrap_failed(&mut self, now: Instant, addr: SocketAddr) {
        if let State::Joining { bootstraps, .. } = &self.state {
            let soon = now + self.cfg.heartbeat_interval.min(self.cfg.probe_timeout);
            if bootstraps.contains(&addr) && self.timers.get(NodeTimer::Join).is_none_or(|t| soon < t) {
                self.timers.set(NodeTimer::Join, soon);
            }
        }
    }

    /// Handles a join request; `via` is the connection it came on, used to answer the joiner
    /// directly when the joiner itself sent it (no new connection, no dial on a peer's say-so).
    pub(super) fn route_join(&mut self, now: Instant, joiner: NodeInfo, hops: u8, via: Option<ConnId>) {
        let me = self.id();
        if joiner.id == me || hops >= self.cfg.max_hops {
            return;
        }
        let hop = self.decide(joiner.id, Some(joiner.id));
        if let Hop::Hold = hop {
            if self.pending_total < self.cfg.max_pending_total {
                self.pending_total += 1;
                self.held.push_back(Held::Join { joiner, hops, via });
            }
            return;
        }
        if self.is_ready() {
            let depth = me.common_prefix_len(joiner.id);
            let mut rows: Vec<NodeInfo> = (0..=depth.min(crate::id::DIGITS - 1))
                .flat_map(|r| self.table.row(r).collect::<Vec<_>>())
                .filter(|c| c.id != joiner.id)
                .filter_map(|c| self.peers.get(&c.id).map(|p| p.info.clone()))
                .collect();
            rows.push(self.cfg.info.clone());
            let hood = if hops == 0 { self.infos(self.hood.iter().map(|e| e.1)) } else { Vec::new() };
            let leaves = matches!(hop, Hop::Here)
                .then(|| self.infos(self.leaf.members().into_iter().filter(|&x| x != joiner.id)));
            let state = Message::JoinState { rows, hood, leaves };
            let direct =
                via.filter(|c| self.conns.get(c).is_some_and(|c| c.peer == Some(joiner.id) && c.closing.is_none()));
            match direct {
                Some(conn) => {
                    self.enqueue(conn, state);
                }
                None => {
                    self.peers.entry(joiner.id).or_insert_with(|| Box::new(Peer::new(joiner.clone(), now)));
                    let _ = self.send_msg(now, joiner.id, state);
                }
            }
            self.stats.join_messages += 1;
        }
        if let Hop::Next(next) = hop {
            if self.send_msg(now, next, Message::JoinRequest { joiner, hops: hops + 1 }).is_ok() {
                self.stats.join_messages += 1;
            }
        }
    }

    pub(super) fn send_join_request(&mut self, now: Instant, bootstrap: SocketAddr) {
        let msg = Message::JoinRequest { joiner: self.cfg.info.clone(), hops: 0 };
        // If no connection can be had now, the join deadline retries.
        if let Some(conn) = self.conn_to_addr(now, bootstrap) {
            self.enqueue(conn, msg);
            self.stats.join_messages += 1;
        }
    }

    pub(super) fn announce(&mut self, now: Instant) {
        let targets = self.table_members();
        let awaiting: BTreeSet<NodeId> = self.leaf.members().into_iter().collect();
        for id in targets {
            self.probe(now, id, true);
            self.stats.join_messages += 1;
        }
        self.state = State::Announcing { awaiting };
        self.timers.stop(NodeTimer::Join);
        self.timers.set(NodeTimer::Announce, now + self.cfg.connect_timeout);
        if matches!(&self.state, State::Announcing { awaiting, .. } if awaiting.is_empty()) {
            self.become_ready(now);
        }
    }

    pub(super) fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.timers.stop(NodeTimer::Join);
        self.timers.stop(NodeTimer::Announce);
        // The first exchanges come soon (1/64 of `leaf_exchange_interval` after, at most a
        // heartbeat, then at doubling gaps): they find neighbours that joined at the same time.
        self.exchange_gap = (self.cfg.leaf_exchange_interval / 64).min(self.cfg.heartbeat_interval);
        self.timers.set(NodeTimer::LeafExchange, now + self.exchange_gap);
        self.out.push_back(Output::Event(Event::Joined));
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            match h {
                Held::Route(r) => {
                    let _ = self.route_app(now, r, false);
                }
                Held::Join { joiner, hops, via } => self.route_join(now, joiner, hops, via),
            }
        }
    }
}
