//! Liveness: heartbeats, probes, failure detection and repair of the tables, and what a node
//! does when its driver did not run it for longer than peers wait (a stall).

use crate::id::NodeId;
use crate::info::NodeInfo;
use crate::leaf_set::Side;
use crate::output::{ConnId, Event, Output};
use crate::time::{Instant, Span};
use crate::wire::Message;

use super::peer::Peer;
use super::timers::NodeTimer;
use super::{Node, State};

/// A neighbour that has not answered this many probes in a row (and every this many after)
/// is reported to its other neighbours before it is declared failed ([`Node::ask_helpers`]).
const HELPER_ROUND: u32 = 3;

impl Node {
    /// The longest silence of the driver (no input at all, not even a timer) that is not a
    /// stall. A running node in the ring hears from its heartbeat timer every
    /// `heartbeat_interval`; a silence that is also long enough for a sender to have declared
    /// us failed (its ack timeout, then its probes) means we were not run: our process was
    /// stopped, our machine suspended.
    pub(super) fn stall_limit_of(cfg: &crate::config::Config) -> core::time::Duration {
        (cfg.ack_timeout_min + cfg.probing_time()).max(2 * cfg.heartbeat_interval)
    }

    /// We were not run for longer than a peer waits before it declares us failed and routes
    /// what it sent us elsewhere: what our connections hold from that time is stale (a routed
    /// message in it may have been delivered at another root meanwhile, and delivering it
    /// here would deliver it twice). Every connection is closed unread, as if we had crashed;
    /// what we had in flight is routed again (a copy that arrives twice is dropped at its
    /// root), and our peers, silent to us all that time, are probed as their deadlines have
    /// passed: those that had declared us failed learn us again.
    pub(super) fn recover_from_stall(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_conn(now, conn);
        }
    }

    /// A heartbeat, its answer, or a goodbye.
    pub(super) fn on_liveness_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        match msg {
            Message::Ping { seq } | Message::Heartbeat { seq, .. } => {
                self.pinged(now, from, Some(seq));
                if let Message::Heartbeat { leaves, .. } = msg {
                    if !leaves.is_empty() {
                        self.on_pushed_leaves(now, from, leaves);
                    }
                }
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
            Message::Failed { id } if id != self.id() => {
                if self.former_leaves.remove(&id).is_some() && !self.in_tables(id) {
                    // Not ours to probe: forgotten, so that it is trusted again only once it
                    // answers.
                    self.close_conns_of(now, id);
                    self.forget_peer(id);
                }
                let sides = [self.leaf.cw(), self.leaf.ccw()];
                if sides.iter().any(|s| s.first() == Some(&id) && s.get(1) == Some(&from)) {
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.set_reported(true);
                    }
                }
                self.suspect(now, id)
            }
            Message::Unreachable { id, by } => self.on_unreachable(now, from, id, by),
            _ => {}
        }
    }

    /// [`Message::Unreachable`]: passed on to the suspect by a helper, answered by the
    /// suspect with a ping to the node that cannot reach it. Each frame received sends at
    /// most one, and only to members of our tables, so it cannot be used to make us dial
    /// strangers; a helper passes on only what the suspecting node says of itself.
    fn on_unreachable(&mut self, now: Instant, from: NodeId, id: NodeId, by: NodeId) {
        if !self.is_ready() || !self.in_tables(by) {
            return;
        }
        if id == self.id() {
            // Someone could not reach us: show we are alive, over a fresh connection of our
            // own (unless a ping of ours is already on its way to it). Whatever connection we
            // have with it carried nothing to it lately, or it would not be asking.
            let pinging =
                self.peers.get(&by).and_then(|p| p.ping()).is_some_and(|(_, at)| now - at < self.cfg.probe_timeout);
            if !pinging {
                self.close_conns_of(now, by);
                self.probe(now, by, false);
            }
        } else if by == from && self.in_tables(id) && !self.failed.contains_key(&id) {
            let _ = self.send_msg(now, id, Message::Unreachable { id, by });
        }
    }

    /// A neighbour `id` has not answered several probes: before we declare it failed, ask
    /// the members of our leaf set nearest to it (its own neighbours, which hear from it
    /// over connections of their own) to tell it, so that a live node whose frames to or
    /// from us were lost contacts us (see [`Message::Unreachable`]).
    fn ask_helpers(&mut self, now: Instant, id: NodeId) {
        const HELPERS: usize = 2;
        let (near, far) = match self.leaf.side_of(id) {
            Side::Cw => (self.leaf.cw(), self.leaf.ccw()),
            Side::Ccw => (self.leaf.ccw(), self.leaf.cw()),
        };
        let beyond = near.iter().skip_while(|&&x| x != id).skip(1);
        let helpers: Vec<NodeId> = beyond.chain(far.iter()).copied().filter(|&x| x != id).take(HELPERS).collect();
        for h in helpers {
            let _ = self.send_msg(now, h, Message::Unreachable { id, by: self.id() });
        }
    }

    /// `from` probed us: it is learned as a live node, and answered if the probe was a
    /// message numbered `seq` (a probe that was a handshake had its answer, [`Probe`]).
    ///
    /// [`Probe`]: crate::wire::Probe
    pub(super) fn pinged(&mut self, now: Instant, from: NodeId, seq: Option<u32>) {
        self.out.push_back(Output::Event(Event::Heartbeat(from)));
        if let Some(info) = self.peer_info(from) {
            self.learn(now, info, true);
        }
        if let Some(seq) = seq {
            let ready = self.is_ready();
            let _ = self.send_msg(now, from, Message::Pong { seq, ready });
        }
    }

    /// Every `heartbeat_interval`: a heartbeat to our nearest counter-clockwise leaf-set
    /// member once it has been silent for more than `suspect_timeout` less two intervals
    /// (carrying our leaf set once an exchange interval), then housekeeping (expired failure
    /// records, peers that are in no table and have no connection).
    pub(super) fn heartbeat_timer(&mut self, now: Instant) {
        if self.state == State::Left {
            return;
        }
        self.timers.set(NodeTimer::Heartbeat, now + self.cfg.heartbeat_interval);
        if matches!(self.state, State::Ready | State::Announcing { .. }) {
            self.retune();
            // MSPastry: a heartbeat to the nearest member on one side only; it answers, so
            // each node hears from both its neighbours. The others are probed when silent for
            // `table_probe_interval`, and learn of a failure from the neighbour that detects
            // it (`Message::Failed`).
            let ccw = self.leaf.ccw().first().copied();
            if let Some((id, p)) = ccw.and_then(|id| self.peers.get(&id).map(|p| (id, p))) {
                let since = now - p.silent_since();
                // A neighbour heard from lately needs no heartbeat yet: the heartbeat goes at
                // the first tick where its silence exceeds `suspect_timeout` less two
                // intervals, which leaves its answer at least one interval before suspicion
                // (every third tick at the defaults). A suspected member is being probed
                // already, and one silent past the suspicion timeout is about to be (its own
                // timer).
                let wait = self.cfg.suspect_timeout.saturating_sub(2 * self.cfg.heartbeat_interval);
                let heard_lately = since <= wait && p.last_heard().is_some();
                if !heard_lately && p.suspected().is_none() && since < self.cfg.suspect_timeout {
                    self.heartbeat(now, id);
                }
            }
            if now >= self.rows.ask_at && self.state == State::Ready {
                self.ask_near_row(now, 1);
            }
            // A member that just became a neighbour is watched as one from now on.
            self.watch_neighbours();
        }
        self.housekeeping(now);
        self.sweep_orphans(now);
    }

    /// Self-tuned probing ([`super::tuning`]): accounts the members watched during the last
    /// tick and recomputes the table members' probe period. When it drops below half of the
    /// longest period the members' deadlines may still be armed with (a burst of failures, or a
    /// gradual fall), they are brought forward.
    pub(super) fn retune(&mut self) {
        let members = self.table_members();
        self.churn.observe(members.len(), self.cfg.heartbeat_interval);
        let period = self.tuned_probe_period();
        self.table_probe = Span::of(period);
        // Measured against the longest period still armed, not the last one: a period that
        // fell gradually (the prior's at a join, before any failure is seen: 354 s at a 5 %
        // stale target; then a little lower at each tick) never halved from one tick to the
        // next, and the members learned at the join kept their first deadlines. At a 5-minute
        // median session they were never probed in most nodes' lives, and join requests went
        // to members dead for minutes.
        self.armed_probe = self.armed_probe.max(Span::of(period));
        if period >= self.armed_probe.get() / 2 {
            return;
        }
        self.armed_probe = Span::of(period);
        for id in members {
            if !self.is_neighbour(id) && self.table.contains(id) {
                self.watch_within(id, self.silence_limit(id));
            }
        }
    }

    /// Brings a table member's liveness deadline forward to its last word plus `limit`, if it
    /// was armed later or not at all (a shorter probe period, a new place in a table, a member
    /// that became a neighbour). A suspect's deadline is its probes' and is left alone.
    pub(super) fn watch_within(&mut self, id: NodeId, limit: core::time::Duration) {
        let Some(p) = self.peers.get(&id).filter(|p| p.suspected().is_none()) else { return };
        let due = p.silent_since() + limit;
        if p.timer.is_none_or(|t| t > due) && self.in_tables(id) {
            self.arm_peer(id, due);
        }
    }

    /// The table members' probe period for the failure rate observed so far.
    pub(super) fn tuned_probe_period(&self) -> core::time::Duration {
        let c = &self.cfg;
        self.churn.period(c.table_stale_target, c.probing_time(), c.table_probe_min, c.table_probe_interval)
    }

    /// How long `id`, a table member, may stay silent before it is probed: `suspect_timeout`
    /// for a neighbour; the tuned period (at most `table_probe_interval`) for a routing-table
    /// entry, which messages are sent through; `table_probe_interval` for the others (leaf-set
    /// members beyond the neighbours, whose failure their own neighbours detect and report to
    /// us with `Message::Failed`, and neighbourhood members, which only help joiners and row
    /// asks find near nodes: one in no other table is dropped then, not probed, see
    /// [`Node::peer_timer`]). A routing-table entry that is also a leaf-set member is left to
    /// those reports while they are the faster way, that is while the tuned period is longer
    /// than [`Config::leaf_detection_time`](crate::Config::leaf_detection_time); after a burst
    /// of failures (both its neighbours may have died with it) it is probed at the tuned
    /// period again. So the probes a node sends grow with its routing table, not with
    /// everything it remembers (MSPastry probes only routing-table entries).
    pub(super) fn silence_limit(&self, id: NodeId) -> core::time::Duration {
        let left_to_reports = self.leaf.contains(id) && self.table_probe.get() > self.cfg.leaf_detection_time();
        if self.is_neighbour(id) {
            self.cfg.suspect_timeout
        } else if self.table.contains(id) && !left_to_reports {
            self.table_probe.get()
        } else {
            self.cfg.table_probe_interval
        }
    }

    /// True if `id` is in the neighbourhood set and in no other table.
    pub(super) fn hood_only(&self, id: NodeId) -> bool {
        self.hood.contains(id) && !self.leaf.contains(id) && !self.table.contains(id)
    }

    /// Expired failure records, and peers in no table and with no connection, are forgotten,
    /// and the room they took is given back ([`Node::trim`]).
    fn housekeeping(&mut self, now: Instant) {
        self.failed.retain(|_, until| *until > now);
        self.former_leaves.retain(|_, until| *until > now);
        self.measured.retain(|_, until| *until > now);
        self.expire_candidates(now);
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(&id, p)| !self.keeps(id) && !p.conn().is_some_and(|c| self.conns.contains_key(&c)))
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.forget_peer(id);
        }
        self.trim();
    }

    /// Every `leaf_exchange_interval` (and at doubling gaps from 1/64 of it after the join):
    /// exchange leaf sets with our neighbours (while the gaps double, by asking the nearest
    /// member on each side for its leaf set; then by sending ours to the counter-clockwise
    /// one with our next heartbeat, [`Node::on_pushed_leaves`]), route a
    /// [`Message::Locate`] towards our own id (at every exchange while the gaps double, then
    /// at one in [`LOCATE_ODDS`], drawn at random), and re-probe departed members we still
    /// remember; during the doubling gaps, also ask near nodes for rows (`ask_near_row`,
    /// [`EARLY_ROW_ASKS`](super::repair::EARLY_ROW_ASKS) of them while the asks win cells).
    pub(super) fn leaf_exchange_timer(&mut self, now: Instant) {
        if self.state == State::Left {
            return;
        }
        self.exchange_gap = Span::of((self.exchange_gap.get() * 2).min(self.cfg.leaf_exchange_interval));
        self.timers.set(NodeTimer::LeafExchange, now + self.exchange_gap.get());
        if self.state != State::Ready {
            return;
        }
        if self.exchange_gap.get() < self.cfg.leaf_exchange_interval {
            let near: Vec<NodeId> =
                self.leaf.cw().first().into_iter().chain(self.leaf.ccw().first()).copied().collect();
            let mut asked = Vec::new();
            for id in near {
                if !asked.contains(&id) {
                    asked.push(id);
                    let _ = self.send_msg(now, id, Message::LeafSetRequest);
                }
            }
        } else {
            self.push_leaves = true;
        }
        // Every early exchange routes a `Locate` (the interleaving concurrent joins leave is
        // mended within the joiner's first minutes); later, one exchange in `LOCATE_ODDS`, at
        // random: a backstop for a joiner's interleaving that its own early ones missed.
        if self.exchange_gap.get() < self.cfg.leaf_exchange_interval || self.rng.below(LOCATE_ODDS) == 0 {
            self.locate_self(now);
        }
        self.reprobe_lost_leaves(now);
        if self.exchange_gap.get() < self.cfg.leaf_exchange_interval {
            // Soon after the join, every exchange also asks near nodes for rows: the tables
            // a joiner starts with are improved within its first minute. Many at once while
            // they win cells (after a wave of joins), one once they stop winning (a joiner
            // whose nearest-node discovery found a settled ring's near nodes).
            let asks = if self.rows.won { super::repair::EARLY_ROW_ASKS } else { 1 };
            self.ask_near_row(now, asks);
        }
    }

    /// A table member's liveness deadline. A neighbour (nearest leaf-set member on either side)
    /// silent for `suspect_timeout`, any other table member silent for its
    /// [`Node::silence_limit`], or one that left a probe sent since its last word unanswered for
    /// `probe_timeout`, is suspected and probed (a neighbourhood member in no other table is
    /// dropped from the neighbourhood set instead of being probed for silence); one that does not answer within
    /// `probe_attempts` probes (`neighbour_probe_attempts` for a neighbour) `probe_timeout` apart
    /// is removed everywhere (and, if it was in the leaf set, reported to it).
    pub(super) fn peer_timer(&mut self, now: Instant, id: NodeId) {
        // A custodian of our messages that left our tables is still probed until its
        // suspicion settles ([`Node::holds_our_copies`]).
        let suspected = self.peers.get(&id).is_some_and(|p| p.suspected().is_some());
        let member = self.in_tables(id) || (suspected && self.holds_our_copies(id));
        let limit = self.silence_limit(id);
        let attempts = self.probe_attempts_for(id);
        let Some(p) = self.peers.get_mut(&id) else { return };
        p.timer = None;
        if self.state == State::Left || !member {
            // Not ours to watch any more; learning it again arms a new deadline.
            return;
        }
        if !matches!(self.state, State::Ready | State::Announcing { .. }) {
            // Members learned while joining are watched once we take part in the ring.
            self.arm_peer(id, now + self.cfg.heartbeat_interval);
            return;
        }
        let gap = self.cfg.probe_timeout;
        match p.suspected() {
            Some(t) => {
                let sent = u32::from(p.probes().max(1));
                if now - t < gap * sent {
                    self.arm_peer(id, t + gap * sent);
                } else if sent >= attempts {
                    self.detected_failure(now, id);
                } else {
                    // The last probe went unanswered: try again (a lost frame, a connection
                    // broken under it) before declaring a live node dead.
                    p.add_probe();
                    // Nothing came back on the connection the last probe took (hearing from
                    // the peer would have ended the suspicion): its set-up was lost, or a
                    // frame on it was, and an encrypted stream that lost a frame is broken for
                    // good. The next probe goes over a fresh connection, so that a live node
                    // is not declared dead for a connection's fault.
                    self.close_conns_of(now, id);
                    self.probe(now, id, false);
                    if self.is_neighbour(id) && (sent + 1) % HELPER_ROUND == 0 {
                        self.ask_helpers(now, id);
                    }
                    self.arm_peer(id, t + gap * (sent + 1));
                }
            }
            None => {
                let since = p.silent_since();
                let silent = now - since >= limit;
                // A probe sent since its last word and unanswered for `probe_timeout` (a join
                // request's next hop is probed so, [`Node::forward_join`]) makes it a suspect
                // as silence does.
                let unanswered = p.ping().is_some_and(|(_, sent)| sent >= since && now - sent >= gap);
                if silent && self.hood_only(id) {
                    // A neighbourhood member in no other table is not worth a probe: it only
                    // gives joiners and row asks a near node to start from. Silent this long,
                    // it makes room; a near node that contacts us enters again.
                    self.hood.remove(id);
                } else if silent || unanswered {
                    let Some(p) = self.peers.get_mut(&id) else { return };
                    p.suspect(now);
                    self.probe(now, id, false);
                    self.arm_peer(id, now + gap);
                } else {
                    self.arm_peer(id, since + limit);
                }
            }
        }
    }

    /// `id` stayed silent where it should have answered (a per-hop ack): suspect it and probe
    /// it now; it is declared failed if `probe_attempts` probes go unanswered ([`crate::Config::probing_time`]).
    /// Only table members are suspected, and custodians of our messages ([`Node::holds_our_copies`]).
    pub(super) fn suspect(&mut self, now: Instant, id: NodeId) {
        if self.state == State::Left || !(self.in_tables(id) || self.holds_our_copies(id)) {
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else { return };
        if p.suspected().is_some() {
            return;
        }
        p.suspect(now);
        self.probe(now, id, false);
        self.arm_peer(id, now + self.cfg.probe_timeout);
    }

    /// `from`, which we declared failed, has sent us `msg`: our probes were lost, not the
    /// node. If the message shows it takes part in the ring (only members route, acknowledge
    /// and repair), it is learned again at once; otherwise (it may be a restarted node still
    /// joining) it is probed, and learned again if it answers as a member. Until then the
    /// keys between it and our other leaf-set members would be delivered here.
    pub(super) fn heard_from_failed(&mut self, now: Instant, from: NodeId, msg: &Message) {
        let member = matches!(
            msg,
            Message::Route(_)
                | Message::Ack { .. }
                | Message::Bounce { .. }
                | Message::Locate { .. }
                | Message::Failed { .. }
        );
        if member {
            if let Some(info) = self.peer_info(from) {
                self.learn(now, info, true);
            }
        } else if !matches!(msg, Message::Pong { .. }) && self.peers.get(&from).is_some_and(|p| p.ping().is_none()) {
            self.probe(now, from, false);
        }
    }

    /// Probes a suspect gets before it is declared failed: more for a neighbour, whose false
    /// declaration would make us deliver its keys ([`crate::Config::neighbour_probe_attempts`]).
    fn probe_attempts_for(&self, id: NodeId) -> u32 {
        let c = &self.cfg;
        if self.is_neighbour(id) {
            c.neighbour_probe_attempts.max(c.probe_attempts)
        } else {
            c.probe_attempts
        }
    }

    /// The leaf set our clockwise neighbour sent with its heartbeat: learned, as an answer to
    /// a request is. Every node sends its own to its counter-clockwise neighbour, so news of
    /// the ring reaches each node from its clockwise neighbour, whose leaf set covers all but
    /// the farthest of ours. Ours goes back only if we know nodes (ourselves included) that
    /// belong in the sender's leaf set and are missing from it: a repair flows both ways, and
    /// costs no frame while the two agree. Such a member of ours is also probed, unless we
    /// heard from it within a heartbeat interval or it lies beyond the farthest node the
    /// sender named on that side, a side as full as its other (a node configured with a
    /// smaller leaf set rightly lacks it): the sender may have found it dead, and a leaf-set
    /// member beyond our neighbours is otherwise probed only after `table_probe_interval` of
    /// silence, or when a message meets it. Only a member of our tables is answered, so a
    /// stranger's heartbeats make us probe nobody.
    pub(super) fn on_pushed_leaves(&mut self, now: Instant, from: NodeId, leaves: Vec<NodeInfo>) {
        let mut theirs = crate::leaf_set::LeafSet::new(from, self.cfg.leaf_set_size);
        let pushed: Vec<NodeId> = leaves.iter().map(|i| i.id).collect();
        for &id in &pushed {
            theirs.insert(id);
        }
        self.warm_peers(pushed.iter().copied());
        for i in leaves {
            self.learn(now, i, false);
        }
        let me = self.id();
        for id in std::iter::once(me).chain(self.leaf.members()) {
            theirs.insert(id);
        }
        let missing: Vec<NodeId> = theirs.members().into_iter().filter(|id| !pushed.contains(id)).collect();
        if missing.is_empty() || !self.in_tables(from) {
            return;
        }
        // Only what we vouch for goes back ([`Node::vouched_infos`]): a missing member we have
        // not heard from, or suspect, is probed below instead, and sent once it answers.
        if missing.iter().any(|&id| id == me || self.vouches_for(id)) {
            let leaves = self.leaf_infos();
            let _ = self.send_msg(now, from, Message::LeafSet { leaves });
        }
        // The sender's reach on each side: its farthest member there, or round the ring if
        // that side holds fewer than its other one (it lacks nodes there).
        let half_ring = 1u128 << 127;
        let cw: Vec<u128> = pushed.iter().map(|&p| from.cw_distance(p)).filter(|&d| d <= half_ring).collect();
        let ccw: Vec<u128> = pushed.iter().map(|&p| p.cw_distance(from)).filter(|&d| d < half_ring).collect();
        let full = cw.len().max(ccw.len());
        let reach = |side: &[u128]| if side.len() < full { u128::MAX } else { side.iter().copied().max().unwrap_or(0) };
        let (reach_cw, reach_ccw) = (reach(&cw), reach(&ccw));
        let spanned = |id: NodeId| from.cw_distance(id) < reach_cw || id.cw_distance(from) < reach_ccw;
        for id in missing {
            let quiet = self
                .peers
                .get(&id)
                .is_some_and(|p| p.last_heard().is_none_or(|t| now - t >= self.cfg.heartbeat_interval));
            if quiet && spanned(id) && self.leaf.contains(id) {
                self.suspect(now, id);
            }
        }
    }

    /// Closes every connection we have with `id` (dropping one hands the peer the next): the
    /// next message to it goes over a fresh one.
    pub(super) fn close_conns_of(&mut self, now: Instant, id: NodeId) {
        while let Some(conn) = self.peers.get(&id).and_then(|p| p.conn()).filter(|c| self.conns.contains_key(c)) {
            self.close_conn(now, conn);
        }
    }

    /// Our nearest member on each side is watched as a neighbour: its deadline is brought
    /// forward to `suspect_timeout` after its last word, if it was armed for longer while it
    /// was not yet a neighbour.
    fn watch_neighbours(&mut self) {
        let near = [self.leaf.ccw().first().copied(), self.leaf.cw().first().copied()];
        for id in near.into_iter().flatten() {
            self.watch_within(id, self.cfg.suspect_timeout);
        }
    }

    /// True for our nearest leaf-set member on either side: they exchange heartbeats with us.
    pub(super) fn is_neighbour(&self, id: NodeId) -> bool {
        self.leaf.cw().first() == Some(&id) || self.leaf.ccw().first() == Some(&id)
    }

    /// We found `id` dead (its probe went unanswered): remove it, and if it was our neighbour,
    /// tell our leaf set, whose other members do not heartbeat it, so that they check it at
    /// once. (A member told so by a neighbour does not tell the others again: the leaf sets of
    /// a node's two neighbours cover its own, and a cascade would cost a message per pair.)
    ///
    /// If its other neighbour told us first, that neighbour's leaf set has been told: with a
    /// leaf set the size of ours, it holds all of ours but the farthest two on the side away
    /// from `id`. Only the farthest four of that side are told (two to spare, for a
    /// leaf set of the other neighbour's that lacked a member), unless our leaf set was not
    /// full, where the sets need not overlap so.
    fn detected_failure(&mut self, now: Instant, id: NodeId) {
        /// The members on the side away from a dead neighbour told when its other neighbour
        /// has told its own leaf set.
        const UNCOVERED: usize = 4;
        let was_neighbour = self.is_neighbour(id);
        let was_cw = self.leaf.cw().first() == Some(&id);
        let half = self.leaf.half();
        let full = self.leaf.cw().len() == half && self.leaf.ccw().len() == half;
        let reported = self.peers.get(&id).is_some_and(|p| p.reported());
        self.peer_failed(now, id);
        if was_neighbour && self.state != State::Left {
            let told: Vec<NodeId> = if reported && full {
                let away = if was_cw { self.leaf.ccw() } else { self.leaf.cw() };
                away.iter().skip(half.saturating_sub(UNCOVERED)).copied().collect()
            } else {
                self.leaf.members()
            };
            for m in told {
                let _ = self.send_msg(now, m, Message::Failed { id });
            }
        }
    }

    /// Watches `id` if it is a table member without a deadline (see [`Node::peer_timer`]).
    pub(super) fn watch_peer(&mut self, id: NodeId) {
        if self.state == State::Left {
            return;
        }
        let Some(p) = self.peers.get(&id) else { return };
        // Most are watched already: their record says so before the tables are searched.
        if p.timer.is_some() || !self.in_tables(id) {
            return;
        }
        let limit = self.silence_limit(id);
        let at = match p.suspected() {
            Some(t) => t + self.cfg.probe_timeout * u32::from(p.probes().max(1)),
            None => p.silent_since() + limit,
        };
        self.arm_peer(id, at);
    }

    /// An open connection ended under us without `Closing` (a graceful close says it first):
    /// reset, or ended by a process that died. If we are a member of the ring, it was our
    /// last one with a leaf-set member, it had been open for two `connect_timeout`s and we
    /// heard from the member since it opened, the member is probed at once, over a new
    /// connection: a crashed process is found in the probing time, not first at the next
    /// heartbeat or probe (`kill -9` of a node took 13-21 s to be seen by every member of its
    /// leaf set over real sockets).
    pub(super) fn conn_lost(&mut self, now: Instant, conn: ConnId) {
        // A connection whose set-up half failed (a lost handshake frame, the other side timing
        // out) or a joiner's new one says nothing of the process at the other end: probing
        // for those (or while joining) made 34 and 77 of 1,000 joins fail at 5 % dropped
        // frames (seeds 11 and 12; 1 and 1 without it).
        let settled = self.conns.get(&conn).and_then(|c| {
            let id = c.peer()?;
            let heard = self.peers.get(&id)?.last_heard().is_some_and(|t| t > c.opened);
            (heard && now - c.opened >= 2 * self.cfg.connect_timeout).then_some(id)
        });
        self.drop_conn(now, conn);
        let Some(id) = settled.filter(|&p| self.state == State::Ready && self.leaf.contains(p)) else { return };
        let connected = self.peers.get(&id).and_then(|p| p.conn()).is_some_and(|c| self.conns.contains_key(&c));
        if !connected {
            self.suspect(now, id);
        }
    }

    /// Forgets a peer and its deadline.
    pub(super) fn forget_peer(&mut self, id: NodeId) -> Option<Box<Peer>> {
        self.disarm_peer(id);
        self.peers.remove(&id)
    }

    /// `id` left or stopped answering: remove it everywhere and repair.
    pub(super) fn peer_failed(&mut self, now: Instant, id: NodeId) {
        let was_member = self.in_tables(id);
        if was_member {
            self.churn.failure();
        }
        self.former_leaves.remove(&id);
        if self.leaf.contains(id) {
            self.note_leaves();
        }
        let sides = self.leaf.remove(id);
        let slot = self.table.remove(id);
        self.hood.remove(id);
        self.failed.insert(id, now + self.cfg.detection_time() * 2);
        self.stop_awaiting(now, id);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer() == Some(id) || c.expected() == Some(id))
            .map(|(&k, _)| k)
            .collect();
        let info = self.forget_peer(id).map(|p| p.info(id));
        if let (false, Some(info)) = (sides.is_empty(), &info) {
            self.remember_lost_leaf(now, info.clone());
        }
        for conn in conns {
            self.close_conn(now, conn);
        }
        self.reroute_orphans(now, id);
        if let (true, Some(info)) = (was_member, info) {
            self.out.push_back(Output::Event(Event::NodeLeft(info)));
        }
        if self.state == State::Left {
            return;
        }
        if !sides.is_empty() {
            self.refill_leaf(now);
            self.repair_leaf(now, &sides);
            // Our new nearest members are watched as neighbours at once, not at the next tick:
            // when several neighbours in a row died, each link of the chain would otherwise
            // wait up to a heartbeat.
            self.watch_neighbours();
        }
        if let Some((row, col)) = slot.filter(|&(row, col)| !self.refill_cell(row, col)) {
            self.repair_row(now, row, col);
        }
    }

    /// A leaf-set member is gone: members of our other tables that now fit (a routing-table
    /// entry kept out of the leaf set only by nearer members) take its place at once, if we
    /// have heard from them and do not suspect them. Without this, after a crash of many
    /// nodes, a leaf set repaired from its far members' leaf sets jumped over live nodes our
    /// routing table named: it took a node beyond them for the root of their keys, and that
    /// node sent such a message back by its routing table, between the two until the loop
    /// guard (`LOOP_HOPS`) ended it (30 % of 1,000 nodes crashed, seed 11: one lookup took 18
    /// hops).
    fn refill_leaf(&mut self, now: Instant) {
        let fits = self.vouched_infos(self.known_members().filter(|&id| !self.leaf.contains(id)));
        for info in fits {
            self.learn(now, info, false);
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
}

/// The shortest step between now and a re-armed deadline, so that firing timers always ends.
pub(super) const MIN_STEP: core::time::Duration = core::time::Duration::from_micros(1);

/// Once the exchange gaps are long, a leaf-set exchange routes a [`Message::Locate`] with
/// probability one in this many.
const LOCATE_ODDS: u64 = 4;
