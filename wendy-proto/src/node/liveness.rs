//! Liveness: heartbeats, probes, failure detection and repair of the tables.

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::leaf_set::Side;
use crate::output::{ConnId, Event, Output};
use crate::time::Instant;
use crate::wire::Message;

use super::connections::Phase;
use super::membership::Peer;
use super::{Node, State};

impl Node {
    /// A heartbeat, its answer, or a goodbye.
    pub(super) fn on_liveness_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        match msg {
            Message::Ping { seq } => {
                self.out.push_back(Output::Event(Event::Heartbeat(from)));
                if let Some(info) = self.peer_info(from) {
                    self.learn(now, info, true);
                }
                let ready = self.is_ready();
                let _ = self.send_msg(now, from, Message::Pong { seq, ready });
            }
            Message::Pong { seq, ready } => {
                self.measure(now, from, seq);
                if ready {
                    if let Some(info) = self.peer_info(from) {
                        self.learn(now, info, true);
                    }
                }
            }
            Message::Leaving => self.peer_failed(now, from),
            _ => {}
        }
    }

    pub(super) fn maintenance(&mut self, now: Instant) {
        self.join_timer(now);
        match &self.state {
            State::Announcing { deadline, .. } if now >= *deadline => self.become_ready(now),
            _ => {}
        }
        if matches!(self.state, State::Ready | State::Announcing { .. }) {
            self.heartbeats(now);
        }
        self.sweep_connections(now);
        self.failed.retain(|_, until| *until > now);
        // Forget peers that are in no table and have no connection.
        let conns = &self.conns;
        let (leaf, table, hood) = (&self.leaf, &self.table, &self.hood);
        self.peers.retain(|&id, p| {
            leaf.contains(id)
                || table.contains(id)
                || hood.contains(id)
                || p.conn.is_some_and(|c| conns.contains_key(&c))
        });
        if self.state == State::Ready && now >= self.next_exchange {
            self.next_exchange = now + self.cfg.leaf_exchange_interval;
            let near: Vec<NodeId> =
                self.leaf.cw().first().into_iter().chain(self.leaf.ccw().first()).copied().collect();
            let mut asked = Vec::new();
            for id in near {
                if !asked.contains(&id) {
                    asked.push(id);
                    let _ = self.send_msg(now, id, Message::LeafSetRequest);
                }
            }
            self.reprobe_lost_leaves(now);
        }
    }

    /// Connections that took too long to set up or to answer our `Closing`, or sat idle.
    pub(super) fn sweep_connections(&mut self, now: Instant) {
        let mut slow = Vec::new();
        let mut idle = Vec::new();
        let mut unanswered = Vec::new();
        for (&id, c) in &self.conns {
            if !matches!(c.phase, Phase::Open) {
                if now - c.opened >= self.cfg.connect_timeout {
                    slow.push(id);
                }
            } else if let Some(t) = c.closing {
                if now - t >= self.cfg.connect_timeout {
                    unanswered.push(id);
                }
            } else if now - c.last_active >= self.cfg.idle_timeout && !c.peer.is_some_and(|p| self.leaf.contains(p)) {
                idle.push(id);
            }
        }
        for id in unanswered {
            self.out.push_back(Output::Close { conn: id });
            self.drop_conn(now, id);
        }
        for id in slow {
            // The driver still holds this socket (connecting, or a peer that stalls its
            // handshake): tell it to close before forgetting the connection.
            self.out.push_back(Output::Close { conn: id });
            self.conn_failed(now, id);
        }
        for id in idle {
            self.start_closing(now, id);
        }
    }

    /// Heartbeats to leaf-set members every tick; every other table member is pinged when it
    /// has been silent for `table_probe_interval`. A member silent that long is suspected and probed;
    /// one that does not answer within `probe_timeout` is removed.
    pub(super) fn heartbeats(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for id in self.table_members() {
            let is_leaf = self.leaf.contains(id);
            let Some(p) = self.peers.get_mut(&id) else { continue };
            let since = now - p.last_heard.unwrap_or(p.added);
            let silence_limit = if is_leaf { self.cfg.suspect_timeout } else { self.cfg.table_probe_interval };
            match p.suspected {
                Some(t) if now - t >= self.cfg.probe_timeout => dead.push(id),
                Some(_) => {}
                None if since >= silence_limit => {
                    p.suspected = Some(now);
                    self.probe(now, id, false);
                }
                None if !is_leaf => {}
                // Silence shorter than one interval needs no heartbeat: we just heard from it.
                None if since < self.cfg.heartbeat_interval && p.last_heard.is_some() => {}
                None => self.probe(now, id, false),
            }
        }
        for id in dead {
            self.peer_failed(now, id);
        }
    }

    /// `id` left or stopped answering: remove it everywhere and repair.
    pub(super) fn peer_failed(&mut self, now: Instant, id: NodeId) {
        let was_member = self.in_tables(id);
        let sides = self.leaf.remove(id);
        let slot = self.table.remove(id);
        self.hood.remove(id);
        self.failed.insert(id, now + self.cfg.detection_time() * 2);
        if let State::Announcing { awaiting, .. } = &mut self.state {
            awaiting.remove(&id);
            if awaiting.is_empty() {
                self.become_ready(now);
            }
        }
        let conns: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.peer == Some(id) || c.expected == Some(id)).map(|(&k, _)| k).collect();
        let info = self.peers.remove(&id).map(|p| p.info);
        if let (false, Some(info)) = (sides.is_empty(), &info) {
            self.remember_lost_leaf(now, info.clone());
        }
        for conn in conns {
            self.out.push_back(Output::Close { conn });
            self.drop_conn(now, conn);
        }
        if let (true, Some(info)) = (was_member, info) {
            self.out.push_back(Output::Event(Event::NodeLeft(info)));
        }
        if !sides.is_empty() {
            self.leaf_dirty = true;
        }
        if self.state == State::Left {
            return;
        }
        if !sides.is_empty() {
            self.repair_leaf(now, &sides);
        }
        if let Some((row, col)) = slot {
            self.repair_row(now, row, col);
        }
    }

    pub(super) fn repair_leaf(&mut self, now: Instant, sides: &[Side]) {
        let mut asked = Vec::new();
        for side in sides {
            let (same, other) = match side {
                Side::Cw => (self.leaf.cw(), self.leaf.ccw()),
                Side::Ccw => (self.leaf.ccw(), self.leaf.cw()),
            };
            let target = same.last().or(other.last()).copied();
            let target = target.or_else(|| self.table.iter().next().map(|c| c.id));
            if let Some(t) = target {
                if !asked.contains(&t) {
                    asked.push(t);
                    let _ = self.send_msg(now, t, Message::LeafSetRequest);
                }
            }
        }
    }

    pub(super) fn repair_row(&mut self, now: Instant, row: usize, col: usize) {
        let ask = self
            .table
            .row(row)
            .find(|c| usize::from(c.id.digit(row)) != col)
            .or_else(|| self.table.row(row + 1).next())
            .map(|c| c.id);
        if let (Some(id), Ok(row)) = (ask, u8::try_from(row)) {
            let _ = self.send_msg(now, id, Message::RowRequest { row });
        }
    }

    /// Keeps a departed leaf-set member's address for `LOST_LEAF_MEMORY`, at most L of them.
    pub(super) fn remember_lost_leaf(&mut self, now: Instant, info: NodeInfo) {
        if self.lost_leaves.contains_key(&info.id) {
            return;
        }
        self.lost_leaves.insert(info.id, (info, now + LOST_LEAF_MEMORY));
        while self.lost_leaves.len() > self.cfg.leaf_set_size.max(1) {
            let oldest = self.lost_leaves.iter().min_by_key(|(&id, (_, until))| (*until, id)).map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.lost_leaves.remove(&id);
            }
        }
    }

    /// Pings the departed leaf-set members we still remember: one that answers is alive (a
    /// healed partition, a false suspicion) and is learned again.
    pub(super) fn reprobe_lost_leaves(&mut self, now: Instant) {
        self.lost_leaves.retain(|_, (_, until)| *until > now);
        let lost: Vec<NodeInfo> = self.lost_leaves.values().map(|(info, _)| info.clone()).collect();
        for info in lost {
            let id = info.id;
            if self.peers.contains_key(&id) {
                continue;
            }
            self.peers.insert(id, Box::new(Peer::new(info, now)));
            self.probe(now, id, false);
        }
    }
}

/// How long a departed leaf-set member is re-probed before it is forgotten.
const LOST_LEAF_MEMORY: core::time::Duration = core::time::Duration::from_secs(600);
