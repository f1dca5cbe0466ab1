//! Membership: learning peers into the tables and measuring their proximity.

use std::collections::BTreeSet;

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::output::{ConnId, Event, Output};
use crate::routing_table::UNKNOWN_PROXIMITY;
use crate::time::{duration_micros, Instant};
use crate::wire::Message;

use super::join::Held;
use super::peer::Peer;
use super::routing::Hop;
use super::{Node, State};

impl Node {
    /// Starts this node as a member of a ring whose tables were computed elsewhere, instead of
    /// joining it: each of `members` (its address and the round trip to it) enters whichever
    /// of the leaf set, routing table and neighbourhood set take it, as a node heard from
    /// directly at `now` with that round trip measured, and the node is ready
    /// ([`Event::Joined`]) at once. From then on it is an ordinary member: it probes,
    /// heartbeats, repairs and routes as one that joined, and the members' own tables must
    /// hold it (they are started the same way), since nothing is announced to them.
    ///
    /// This is for building very large rings in a simulator from an oracle's view of the
    /// ring (a join of each node through the protocol costs about two hundred connections
    /// network-wide); a real deployment joins ([`Node::join`]). Errors: the node left
    /// ([`CommandError::Left`](crate::CommandError::Left)), or it is joining or joined
    /// already ([`CommandError::AlreadyJoined`](crate::CommandError::AlreadyJoined)).
    pub fn start_member(
        &mut self,
        now: Instant,
        members: &[(NodeInfo, core::time::Duration)],
    ) -> Result<(), crate::CommandError> {
        let now = self.tick_now(now);
        match self.state {
            State::Left => return Err(crate::CommandError::Left),
            State::Alone if self.peers.is_empty() => {}
            _ => return Err(crate::CommandError::AlreadyJoined),
        }
        self.state = State::Ready;
        // The first row ask comes one to two gaps after the start (a joined node's comes a gap
        // after its creation): a ring started at once then spreads its first asks over a
        // gap, after its first heartbeats rather than on top of them.
        let gap = super::repair::ROW_ASK_GAP;
        let spread = self.rng.below(duration_micros(gap));
        self.rows.ask_at = now + gap + core::time::Duration::from_micros(spread);
        // Nearest in the ring first: the leaf set fills with its members and never takes a
        // farther node only to push it out again (which would keep it as a former leaf).
        let me = self.id();
        let mut order: Vec<&(NodeInfo, core::time::Duration)> = members.iter().collect();
        order.sort_by_key(|(info, _)| (me.distance(info.id), info.id));
        for (info, rtt) in order {
            if info.id == self.id() || !info.is_valid() || self.peers.contains_key(&info.id) {
                continue;
            }
            let prox = proximity(*rtt, &info.region, &self.cfg.info.region, self.cfg.region_factor);
            let mut peer = Box::new(Peer::new(info.clone(), now));
            peer.set_proximity(prox);
            self.peers.insert(info.id, peer);
            self.learn(now, info.clone(), true);
        }
        // What no table took, or a later member displaced, is not kept.
        for (info, _) in members {
            if info.id != me && !self.in_tables(info.id) {
                self.forget_peer(info.id);
            }
        }
        // The maps grew a member at a time: give back the room beyond what they hold.
        self.trim();
        self.out.push_back(Output::Event(Event::Joined));
        self.finish();
        Ok(())
    }

    /// A request for, or an answer with, part of a peer's tables.
    pub(super) fn on_table_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        match msg {
            Message::LeafSetRequest => {
                let leaves = self.leaf_infos();
                let _ = self.send_msg(now, from, Message::LeafSet { leaves });
            }
            Message::RowRequest { row } => {
                let entries = self.vouched_infos(self.table.row(usize::from(row)).map(|c| c.id));
                let _ = self.send_msg(now, from, Message::Row { row, entries });
            }
            Message::Locate { origin, hops } => self.route_locate(now, origin, hops),
            Message::LeafSet { leaves } => {
                self.warm_peers(leaves.iter().map(|i| i.id));
                for i in leaves {
                    self.learn(now, i, false);
                }
            }
            // A row we asked of a node near us in the network (`ask_near_row`): its entries
            // are worth measuring against the ones we hold. (A row repair fills the empty cell.)
            Message::Row { row, entries } => {
                let asked = self.rows.asked.iter().position(|&a| a == (from, row));
                let near = asked.map(|i| self.rows.asked.swap_remove(i)).is_some();
                self.warm_peers(entries.iter().map(|i| i.id));
                for i in entries {
                    self.learn_as(now, i, false, near);
                }
            }
            _ => {}
        }
    }

    /// Adds what we heard of `info` to the tables. `direct`: heard from the node itself.
    pub(super) fn learn(&mut self, now: Instant, info: NodeInfo, direct: bool) {
        self.learn_as(now, info, direct, false);
    }

    /// [`Node::learn`]; `contend`: hearsay of a node that would contend for a routing-table
    /// cell held by another is measured, to win the cell if it is nearer (proximity neighbour
    /// selection). Only rows from nodes near us are worth it: leaf sets hold nodes from all
    /// over the network, and measuring each would cost a connection per entry.
    pub(super) fn learn_as(&mut self, now: Instant, info: NodeInfo, direct: bool, contend: bool) {
        let id = info.id;
        // A ring of one takes members only through the join protocol (`on_join_message`): a
        // node that gave up joining, or restarted and has not joined yet, must not be adopted
        // by a ring that still has it in its tables.
        if id == self.id() || matches!(self.state, State::Left | State::Alone) || !info.is_valid() {
            return;
        }
        if direct {
            self.failed.remove(&id);
            self.lost_leaves.remove(&id);
        } else if self.failed.contains_key(&id) {
            return;
        }
        let was_known = self.peers.contains_key(&id);
        if !direct && !was_known && !self.would_take(id, contend) {
            // Hearsay that no table would take is dropped before a record is made for it
            // (most of a leaf set or row we are sent is nodes we know or have no room for).
            return;
        }
        let was_member = self.in_tables(id);
        let peer = self.peers.get_or_insert_with(id, || Box::new(Peer::new(info, now)));
        if direct {
            peer.heard_directly(now);
        }
        let heard = peer.last_heard().is_some();
        let prox = peer.proximity();
        if self.leaves_before.is_none() && self.leaf.would_change(id) {
            self.note_leaves();
        }
        let (leaf_changed, pushed_out) = self.leaf.insert_evicting(id);
        for out in pushed_out.into_iter().flatten() {
            self.keep_former_leaf(now, out);
        }
        if leaf_changed {
            self.former_leaves.remove(&id);
        }
        self.table.insert(id, prox);
        if prox != UNKNOWN_PROXIMITY {
            self.hood.insert(id, prox);
        }
        // A member stays one: inserting it anywhere pushes others out, not it.
        if !was_member && !self.in_tables(id) {
            if contend && !was_known && !direct && self.contends(id) {
                // Proximity neighbour selection: a candidate for a routing-table cell held by
                // another node is measured before it can win the cell (`measure`).
                self.candidates.insert(id, now);
                self.time_candidate(now, id);
                return;
            }
            // Hearsay that found no place in any table is not kept: a peer cannot make us
            // remember more nodes than our tables hold.
            if !was_known {
                self.forget_peer(id);
            }
            return;
        }
        self.watch_peer(id);
        if !was_member {
            let info = self.peers[&id].info(id);
            self.out.push_back(Output::Event(Event::NodeJoined(info)));
        }
        let probing = matches!(self.state, State::Ready | State::Announcing { .. });
        if leaf_changed && !heard && probing && self.peers[&id].ping().is_none() {
            self.learned.push((id, true));
        } else if !was_member && !heard && probing {
            // Hearsay is not trusted until the node answers us: the peer that told us may not
            // have noticed it died. It is routed around from now on, probed once this input
            // is done, and removed after `probe_attempts` unanswered probes, as a suspect is.
            if let Some(p) = self.peers.get_mut(&id).filter(|p| p.suspected().is_none()) {
                p.suspect(now);
                self.arm_peer(id, now + self.cfg.probe_timeout);
                self.learned.push((id, false));
            }
        }
    }

    /// Contacts the hearsay learned during this input that is still in our tables now that
    /// the input is done: a new leaf-set member is announced to (it may not know us), other
    /// members are probed. Deferred because one message names many nodes: a leaf set that
    /// lost a member takes the nearest replacement from a peer's leaf set, and learning that
    /// leaf set one node at a time pushed a dozen farther nodes through the edge of ours
    /// before the nearest one came, each with a connection of its own (its set-up, an
    /// announcement and its answer, and a close: seven frames), where only the last one
    /// stays.
    pub(super) fn vet_learned(&mut self) {
        let now = self.last_now;
        for (id, entered_leaf) in std::mem::take(&mut self.learned) {
            let Some(p) = self.peers.get(&id) else { continue };
            if p.last_heard().is_some() || !self.in_tables(id) || p.ping().is_some() {
                continue;
            }
            if entered_leaf && self.leaf.contains(id) && p.suspected().is_none() {
                // Announced to, and a suspect until it answers: a dead node that a peer had
                // not yet removed is declared failed within `probing_time`, not after a
                // connection timeout first.
                self.probe(now, id, true);
                if let Some(p) = self.peers.get_mut(&id) {
                    p.suspect(now);
                }
                self.arm_peer(id, now + self.cfg.probe_timeout);
            } else if p.suspected().is_some() {
                self.probe(now, id, false);
            } else {
                self.suspect(now, id);
            }
        }
    }

    /// Looks for our own neighbours: a [`Message::Locate`] towards our id, through a random
    /// routing-table entry. Such an entry is far from us in the ring and routes by its own
    /// tables, so the Locate reaches whichever node the rest of the ring takes for our
    /// neighbour, even one our leaf set does not know.
    pub(super) fn locate_self(&mut self, now: Instant) {
        let entries: Vec<NodeId> = self.table.iter().map(|c| c.id).collect();
        if entries.is_empty() {
            return;
        }
        let via = entries[self.rng.below(entries.len() as u64) as usize];
        let _ = self.send_msg(now, via, Message::Locate { origin: self.cfg.info.clone(), hops: 0 });
    }

    /// Passes a [`Message::Locate`] on towards its origin's id; at the node closest to it
    /// (the origin aside), learns the origin if it is missing from the leaf set.
    fn route_locate(&mut self, now: Instant, origin: NodeInfo, hops: u8) {
        if origin.id == self.id() || hops >= self.cfg.max_hops || !self.is_ready() || !origin.is_valid() {
            return;
        }
        match self.decide(origin.id, Some(origin.id)) {
            Hop::Next(next) => {
                let _ = self.send_msg(now, next, Message::Locate { origin, hops: hops.saturating_add(1) });
            }
            // Hearsay: it enters the leaf set only if it fits (and is then probed). It gets our
            // leaf set, so that it learns our side of the ring as we learn it.
            Hop::Here if !self.leaf.contains(origin.id) => {
                let id = origin.id;
                self.learn(now, origin, false);
                if self.leaf.contains(id) {
                    let leaves = self.leaf_infos();
                    let _ = self.send_msg(now, id, Message::LeafSet { leaves });
                }
            }
            Hop::Here | Hop::Hold => {}
        }
    }

    /// Sends an `Announce` (or a `Ping`) to `id`, remembering when, to measure the round trip.
    pub(super) fn probe(&mut self, now: Instant, id: NodeId, announce: bool) {
        let seq = self.timed_seq(now, id);
        let msg = if announce { Message::Announce { seq } } else { Message::Ping { seq } };
        let _ = self.send_msg(now, id, msg);
    }

    /// A heartbeat to our nearest counter-clockwise leaf-set member: a probe, timed as one, that
    /// carries our leaf set when the periodic exchange is due ([`Node::on_pushed_leaves`]).
    pub(super) fn heartbeat(&mut self, now: Instant, id: NodeId) {
        let seq = self.timed_seq(now, id);
        let leaves = if std::mem::take(&mut self.push_leaves) { self.leaf_infos() } else { Vec::new() };
        let _ = self.send_msg(now, id, Message::Heartbeat { seq, leaves });
    }

    /// The number of a probe to `id` sent now, remembered with the time so that its answer
    /// measures the round trip ([`Node::measure`]).
    fn timed_seq(&mut self, now: Instant, id: NodeId) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if let Some(p) = self.peers.get_mut(&id) {
            p.set_ping(Some((self.seq, now)));
        }
        self.seq
    }

    pub(super) fn measure(&mut self, now: Instant, from: NodeId, seq: u32) {
        let region = &self.cfg.info.region;
        let factor = self.cfg.region_factor;
        let Some(p) = self.peers.get_mut(&from) else { return };
        let Some((s, sent)) = p.ping() else { return };
        if s != seq {
            return;
        }
        p.set_ping(None);
        let candidate = self.candidates.remove(&from).is_some();
        let prox = proximity(now - sent, p.region(), region, factor);
        p.set_proximity(prox);
        self.table.update_proximity(from, prox);
        if self.table.insert(from, prox) && candidate {
            self.rows.won = true;
        } else if candidate {
            self.remember_measured(now, from);
        }
        if self.in_tables(from) || self.hood.len() < self.cfg.neighbourhood_size {
            self.hood.insert(from, prox);
        }
        self.watch_peer(from);
    }

    /// True if hearsay of `id`, a node we hold no record of, would find a place: in the leaf
    /// set, in an empty routing-table cell, or (`contend`) as a candidate for a held cell.
    /// (Its proximity is unknown, so the neighbourhood set would not take it.)
    fn would_take(&self, id: NodeId, contend: bool) -> bool {
        self.leaf.would_take(id)
            || self.table.slot(id).is_some_and(|(row, col)| self.table.get(row, col).is_none())
            || (contend && self.contends(id))
    }

    /// True if `id` is worth measuring as a candidate for the routing-table cell it belongs
    /// to: the cell is held by another node, we take part in the ring, and fewer than
    /// [`CANDIDATE_PROBES`] candidates are being measured.
    fn contends(&self, id: NodeId) -> bool {
        if !matches!(self.state, State::Ready)
            || self.candidates.len() >= CANDIDATE_PROBES
            || self.measured.contains_key(&measured_key(id))
        {
            return false;
        }
        let Some((row, col)) = self.table.slot(id) else { return false };
        self.table.get(row, col).is_some_and(|c| c.id != id)
    }

    /// Measures a candidate's round trip: by a ping over the connection we have to it, or else
    /// by a connection dialled only to time its set-up (one round trip) and closed once
    /// established, with nothing sent on it (`timed`). A candidate that loses (most do) then
    /// costs no frame, where a connection of its own for a ping cost seven (set-up, ping,
    /// pong, close).
    pub(super) fn time_candidate(&mut self, now: Instant, id: NodeId) {
        let Some(p) = self.peers.get(&id) else { return };
        if p.conn().is_some_and(|c| self.conns.contains_key(&c)) {
            self.probe(now, id, false);
            return;
        }
        let addr = p.addr_from(&self.cfg.info.region);
        self.dial_to_time(now, addr, id);
    }

    /// The connection dialled to time candidate `id` was established `rtt` after it was
    /// asked for. A candidate nearer than the holder of its cell takes the cell, and is then
    /// probed before it is trusted, as any hearsay is (routed around until it answers); one
    /// that is not is not measured again for a while.
    pub(super) fn timed(&mut self, now: Instant, id: NodeId, rtt: core::time::Duration) {
        if self.discovering() && self.near_timed(now, id, rtt) {
            return;
        }
        if self.candidates.remove(&id).is_none() {
            return;
        }
        let (region, factor) = (&self.cfg.info.region, self.cfg.region_factor);
        let Some(p) = self.peers.get_mut(&id) else { return };
        let prox = proximity(rtt, p.region(), region, factor);
        p.set_proximity(prox);
        if self.table.insert(id, prox) {
            self.rows.won = true;
            self.suspect(now, id);
        } else {
            self.remember_measured(now, id);
        }
    }

    /// Candidates whose probe went unanswered for a whole probing time are dropped (and not
    /// measured again for a while).
    pub(super) fn expire_candidates(&mut self, now: Instant) {
        let limit = self.cfg.probing_time();
        let gone: Vec<NodeId> = self.candidates.iter().filter(|(_, &t)| now - t >= limit).map(|(&id, _)| id).collect();
        for id in gone {
            self.candidates.remove(&id);
            self.remember_measured(now, id);
        }
    }

    /// A candidate measured (or silent) that did not win its cell is not measured again for
    /// `table_probe_interval`: rows from near nodes overlap, and each measurement costs a
    /// connection. At most [`MEASURED_MEMORY`] are remembered (the soonest to expire go).
    fn remember_measured(&mut self, now: Instant, id: NodeId) {
        self.measured.insert(measured_key(id), now + self.cfg.table_probe_interval);
        while self.measured.len() > MEASURED_MEMORY {
            let first = self.measured.iter().min_by_key(|(&k, &until)| (until, k)).map(|(&k, _)| k);
            if let Some(k) = first {
                self.measured.remove(&k);
            }
        }
    }

    pub(super) fn peer_info(&self, id: NodeId) -> Option<NodeInfo> {
        self.peers.get(&id).map(|p| p.info(id))
    }

    pub(super) fn in_tables(&self, id: NodeId) -> bool {
        self.leaf.contains(id) || self.table.contains(id) || self.hood.contains(id)
    }

    /// True if we keep `id`'s peer record and connection: a table member, or a leaf-set
    /// member pushed out lately ([`Node::keep_former_leaf`]).
    pub(super) fn keeps(&self, id: NodeId) -> bool {
        self.in_tables(id) || self.former_leaves.contains_key(&id) || self.custody.has_orphans_of(id)
    }

    /// `id` was pushed out of the leaf set by a nearer node: if we heard from it (it is no
    /// hearsay), its record and connection are kept for `table_probe_interval`, at most half
    /// a leaf set's worth of them (the oldest go first). Should it come back into the leaf
    /// set meanwhile (the nearer node departs), it is a member again at once, with no
    /// announcement: the nodes at the edge of a leaf set come and go with every arrival and
    /// departure among its members, and each return cost a connection's set-up, an
    /// announcement and its answer, and a close (at a 30-minute median session, 0.37 of a
    /// node's 1.3 control messages a second).
    fn keep_former_leaf(&mut self, now: Instant, id: NodeId) {
        if !self.peers.get(&id).is_some_and(|p| p.answered()) {
            return;
        }
        self.former_leaves.insert(id, now + self.cfg.table_probe_interval);
        while self.former_leaves.len() > (self.cfg.leaf_set_size / 2).max(1) {
            let oldest = self.former_leaves.iter().min_by_key(|(&id, &until)| (until, id)).map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.former_leaves.remove(&id);
            }
        }
    }

    /// Everyone in the leaf set, routing table and neighbourhood, each once, in id order.
    pub(super) fn table_members(&self) -> Vec<NodeId> {
        let mut set: BTreeSet<NodeId> = self.leaf.members().into_iter().collect();
        set.extend(self.table.iter().map(|c| c.id));
        set.extend(self.hood.iter().map(|e| e.1));
        set.into_iter().collect()
    }

    pub(super) fn infos(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeInfo> {
        ids.into_iter().filter_map(|id| self.peers.get(&id).map(|p| p.info(id))).collect()
    }

    /// The leaf set is about to change: its members now are what this input's
    /// `Event::LeafSetChanged` is reported against ([`Node::finish`]), unless an earlier
    /// change in the same input noted them already.
    pub(super) fn note_leaves(&mut self) {
        if self.leaves_before.is_none() {
            self.leaves_before = Some(self.leaf.members().into_iter().collect());
        }
    }

    /// Our leaf-set members that we vouch for, to send ([`Node::vouched_infos`]).
    pub(super) fn leaf_infos(&self) -> Vec<NodeInfo> {
        self.vouched_infos(self.leaf.members())
    }

    /// What we tell other nodes of `ids`: only the members we heard from directly and do not
    /// suspect now. Hearsay we have not checked, and a member we are probing, are not passed
    /// on: a node that died is passed on only until its silence makes us suspect it (at most
    /// `table_probe_interval` after its last word), and no further by those that learn of it
    /// from us, who check it before they pass it on. So it reaches no table later than that,
    /// and [`Config::detection_time`](crate::Config::detection_time) bounds how long it stays.
    pub(super) fn vouched_infos(&self, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeInfo> {
        // Found first, read after: each record is a load from memory in a simulator of many
        // nodes, and started together the loads overlap (a leaf set is 32 of them). Ids listed
        // in increasing order (a leaf set's from the farthest counter-clockwise member, a
        // table row's) are each searched for from where the one before was.
        let ids = ids.into_iter();
        let mut found: Vec<(NodeId, &Peer)> = Vec::with_capacity(ids.size_hint().0);
        let mut last: Option<(NodeId, usize)> = None;
        for id in ids {
            let at = match last {
                Some((before, from)) if before < id => self.peers.find_after(&id, from),
                _ => self.peers.find_index(&id),
            };
            if let Ok(i) = at {
                found.extend(self.peers.get_indexed(i).map(|(_, p)| (id, &**p)));
            }
            last = Some((id, at.unwrap_or_else(|i| i)));
        }
        for (_, p) in &found {
            crate::hint::warm(*p);
        }
        // Sized for all of them at once (a filtered collect grows its vector step by step).
        let mut infos = Vec::with_capacity(found.len());
        infos.extend(found.into_iter().filter(|(_, p)| p.answered()).map(|(id, p)| p.info(id)));
        infos
    }

    /// Starts loading the records of the known nodes among `ids` (a hint, [`crate::hint`]),
    /// before a list of them is learned one by one.
    pub(super) fn warm_peers(&self, ids: impl IntoIterator<Item = NodeId>) {
        for id in ids {
            if let Some(p) = self.peers.get(&id) {
                crate::hint::warm(&**p);
            }
        }
    }

    /// True if we heard from `id` directly and do not suspect it now ([`Node::vouched_infos`]).
    pub(super) fn vouches_for(&self, id: NodeId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.answered())
    }

    pub(super) fn forget_all(&mut self, now: Instant) {
        self.note_leaves();
        for id in self.table_members() {
            self.leaf.remove(id);
            self.table.remove(id);
            self.hood.remove(id);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for c in conns {
            self.out.push_back(Output::Close { conn: c });
            self.drop_conn(now, c);
        }
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.forget_peer(id);
        }
        let held: Vec<Held> = self.held.drain(..).collect();
        self.pending_total -= held.len();
        for h in held {
            if let Held::Route(r, token) = h {
                // A ring of one is root for everything.
                self.with_custody(token, |n| {
                    let _ = n.route_app(now, r, false);
                });
            }
        }
    }
}

/// What `Node::measured` knows a candidate by: the first 64 bits of its id. Two candidates
/// that share them count as one, and the second is not measured until the first's entry
/// expires; ids are hashes of keys, so that takes a collision of 64-bit prefixes.
pub(super) fn measured_key(id: NodeId) -> u64 {
    (id.as_u128() >> 64) as u64
}

/// Candidates for occupied routing-table cells measured at once, at most.
const CANDIDATE_PROBES: usize = 16;
/// Candidates that lost their cell remembered, at most, so that they are not measured again.
const MEASURED_MEMORY: usize = 64;

/// Proximity of a node: the round trip in microseconds, times `factor` across regions.
pub(super) fn proximity(rtt: core::time::Duration, their_region: &str, our_region: &str, factor: u64) -> u64 {
    let rtt = duration_micros(rtt).max(1);
    if their_region == our_region {
        rtt
    } else {
        rtt.saturating_mul(factor)
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
