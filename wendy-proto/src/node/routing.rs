//! Routing: the next-hop decision, application routing and delivery.

use crate::config::MIN_APP_PURPOSE;
use crate::id::NodeId;
use crate::output::{CommandError, ConnId, Delivery, Forwarding, NodeError, Output, Verdict};
use crate::time::Instant;
use crate::wire::{Message, Route};

use super::counters::Counter;
use super::join::Held;
use super::{Node, State};

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Hop {
    Here,
    Next(NodeId),
    /// Not ready and nobody better known: keep it until ready.
    Hold,
}

/// Which suspects (table members silent past an ack timeout or a liveness deadline, being
/// probed) [`Node::decide_with`] routes around.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Avoid {
    /// None: where the tables alone say.
    Nobody,
    /// Those outside the leaf set, where they are only a shortcut (MSPastry).
    Shortcuts,
    /// All of them, in the leaf set too: what rerouted application messages do. A suspect
    /// that is the key's root by our leaf set is waited for instead ([`Node::app_hop`]).
    /// (A message met for the first time still goes to a suspected root: under frame loss the
    /// suspect is mostly alive, and it delivers the message at once, while a message waiting
    /// for it would be delivered by its neighbour if the suspect were wrongly declared failed:
    /// 7 of 30,000 lookups at the wrong node on the sim-matrix line with 1 % dropped frames.)
    All,
}

/// Hops after which a routed message goes only to nodes numerically closer to its key
/// ([`Node::decide_route`]). Routes take about log16(N) hops, a few more when rerouted.
pub(super) const LOOP_HOPS: u8 = 16;

/// Where a rerouted application message goes next ([`Node::app_hop`]).
pub(super) enum AppHop {
    Hop(Hop),
    /// The closest node to the key that we know is a suspect (or the excluded hop): the
    /// message waits for its probe to settle ([`Node::park`]).
    Wait(NodeId),
}

impl Node {
    /// A routed or direct application message from a peer.
    pub(super) fn on_app_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        match msg {
            Message::Route(r) => {
                let token = self.route_received(conn);
                if !self.accepts_purpose(r.purpose) {
                    self.protocol_error(now, conn, "routed message with a reserved purpose");
                    return;
                }
                // A failure was already counted and reported inside route_app.
                self.with_custody(token, |n| {
                    let _ = n.route_app(now, r, false);
                });
            }
            Message::Direct(d) => {
                if !self.accepts_purpose(d.purpose) {
                    self.protocol_error(now, conn, "direct message with a reserved purpose");
                    return;
                }
                let d = self.layer_origin(conn, d);
                self.deliver_direct(Message::Direct(d));
            }
            _ => {}
        }
    }

    /// The next hop towards `key`, `exclude` aside; suspects outside the leaf set are routed
    /// around ([`Avoid::Shortcuts`]).
    pub(super) fn decide(&self, key: NodeId, exclude: Option<NodeId>) -> Hop {
        self.decide_with(key, exclude, Avoid::Shortcuts)
    }

    /// True if `id` is being probed after a silence.
    fn is_suspect(&self, id: NodeId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.suspected().is_some())
    }

    /// The next hop of a rerouted application message towards `key`, `exclude` (the hop that
    /// just failed) and every suspect aside. If that would deliver it here while the tables name a
    /// closer node that is a suspect or excluded, the message waits for that node instead:
    /// delivering it here is right only once that node is declared failed. With 30 % of the
    /// nodes crashing at once, several dead members can lie between a message and its root;
    /// it is sent to each at most once, not back and forth between two of them.
    pub(super) fn app_hop(&self, key: NodeId, exclude: Option<NodeId>) -> AppHop {
        match self.decide_with(key, exclude, Avoid::All) {
            Hop::Here => match self.decide_with(key, None, Avoid::Nobody) {
                Hop::Next(s) => AppHop::Wait(s),
                h => AppHop::Hop(h),
            },
            h => AppHop::Hop(h),
        }
    }

    /// The next hop towards `key`, `exclude` and the suspects `avoid` names aside.
    pub(super) fn decide_with(&self, key: NodeId, exclude: Option<NodeId>, avoid: Avoid) -> Hop {
        let me = self.id();
        let ok = |id: NodeId| Some(id) != exclude;
        if !self.is_ready() {
            let best = self.table_members().into_iter().filter(|&x| ok(x)).fold(None, |b: Option<NodeId>, x| match b {
                Some(b) if !key.is_closer(x, b) => Some(b),
                _ => Some(x),
            });
            return match best {
                Some(b) if key.is_closer(b, me) => Hop::Next(b),
                _ => Hop::Hold,
            };
        }
        if self.leaf.covers(key) {
            if avoid != Avoid::All {
                let best = match exclude {
                    Some(x) => self.leaf.closest_excluding(key, x),
                    None => self.leaf.closest(key),
                };
                return if best == me { Hop::Here } else { Hop::Next(best) };
            }
            let best = self.leaf.closest(key);
            if best == me {
                return Hop::Here;
            }
            if ok(best) && !self.is_suspect(best) {
                return Hop::Next(best);
            }
            // The closest is excluded or a suspect: the closest member that is neither, if it
            // makes progress as a routing-table hop would (a prefix with the key at least as
            // long as ours, and numerically closer). A member closer but with a shorter prefix
            // could send the message straight back by its routing table, and so on until the
            // hop limit.
            let row = me.common_prefix_len(key);
            let fine = |x: NodeId| ok(x) && !self.is_suspect(x) && x.common_prefix_len(key) >= row;
            let members = self.leaf.cw().iter().chain(self.leaf.ccw()).copied();
            let best = members.filter(|&x| fine(x)).fold(me, |b, x| if key.is_closer(x, b) { x } else { b });
            return if best == me { Hop::Here } else { Hop::Next(best) };
        }
        let row = me.common_prefix_len(key);
        if row >= crate::id::DIGITS {
            return Hop::Here;
        }
        // Outside the leaf set, a suspect (silent past its ack timeout, being probed) is
        // routed around while an alternative exists (MSPastry): it is only a shortcut. (With
        // `Avoid::Nobody`, where the tables alone would send it.)
        let trusted = |id: NodeId| ok(id) && (avoid == Avoid::Nobody || !self.is_suspect(id));
        if let Some(cell) = self.table.get(row, usize::from(key.digit(row))) {
            if trusted(cell.id) {
                return Hop::Next(cell.id);
            }
        }
        // The rare case: anyone sharing as long a prefix and numerically closer.
        let mut best = me;
        let ok = trusted;
        for x in self.known_members() {
            if ok(x) && x.common_prefix_len(key) >= row && key.is_closer(x, best) {
                best = x;
            }
        }
        if best == me {
            Hop::Here
        } else {
            Hop::Next(best)
        }
    }

    /// Every member of our tables (leaf set, routing table, neighbourhood), with repeats.
    pub(super) fn known_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let leaf = self.leaf.cw().iter().chain(self.leaf.ccw()).copied();
        leaf.chain(self.table.iter().map(|c| c.id)).chain(self.hood.iter().map(|e| e.1))
    }

    /// The next hop of a routed message that has taken `hops` hops: by the tables, or past
    /// [`LOOP_HOPS`] only to a node numerically closer to the key than we are.
    ///
    /// While leaf sets repair after many nodes failed at once, one can miss members: a node
    /// whose leaf set jumps over a dozen live nodes takes the node beyond the gap for the
    /// key's root, while that node's own leaf set does not reach the key, and it sends the
    /// message back by its routing table (a longer prefix, numerically farther). The message
    /// circles until the hop limit (57 hops, and one dropped there, on sim-matrix's 30 % crash
    /// line). Each hop numerically closer ends any circle: once no node we know is closer, the
    /// tables decide again (so a root still delivers only by its leaf set).
    pub(super) fn decide_route(&self, key: NodeId, hops: u8) -> Hop {
        if hops < LOOP_HOPS || !self.is_ready() {
            return self.decide(key, None);
        }
        let known = self.known_members().filter(|&x| !self.is_suspect(x));
        let best = known.fold(self.id(), |b, x| if key.is_closer(x, b) { x } else { b });
        if best == self.id() {
            self.decide(key, None)
        } else {
            Hop::Next(best)
        }
    }

    pub(super) fn route_app(&mut self, now: Instant, mut route: Route, local: bool) -> Result<(), CommandError> {
        match self.decide_route(route.key, route.hops) {
            Hop::Here => {
                self.deliver_route(route, false);
                Ok(())
            }
            Hop::Hold => {
                if self.pending_total >= self.cfg.max_pending_total {
                    if local {
                        return Err(CommandError::Backpressure);
                    }
                    // Reported here and, through a bounce, at its origin.
                    self.report(NodeError::QueueFull { peer: None });
                    self.undeliverable(route);
                    return Ok(());
                }
                self.hold_route(route);
                Ok(())
            }
            Hop::Next(next) => {
                if route.hops >= self.cfg.max_hops {
                    self.report(NodeError::HopLimit { key: route.key });
                    if route.origin == self.id() {
                        self.stats.add(Counter::Dropped, 1);
                    } else {
                        // Its origin is told too (the bounce has a hop limit of its own).
                        self.undeliverable(route);
                    }
                    return Ok(());
                }
                // Layer messages (purposes below 16) are not the application's to judge.
                if let Some(hook) = self.hook.as_mut().filter(|_| route.purpose >= MIN_APP_PURPOSE) {
                    let info = self.peers[&next].info(next);
                    let mut f = Forwarding {
                        key: route.key,
                        purpose: route.purpose,
                        origin: route.origin,
                        hops: route.hops,
                        payload: route.payload,
                    };
                    let verdict = hook.on_forward(&mut f, &info);
                    route.purpose = f.purpose;
                    route.payload = f.payload;
                    match verdict {
                        // A purpose rewritten below 16 counts as a veto.
                        Verdict::Forward if route.purpose >= MIN_APP_PURPOSE => {}
                        Verdict::Consume if route.purpose >= MIN_APP_PURPOSE => {
                            self.deliver_route(route, true);
                            return Ok(());
                        }
                        _ => {
                            self.stats.add(Counter::Dropped, 1);
                            return Ok(());
                        }
                    }
                }
                route.hops = route.hops.saturating_add(1);
                if !local && self.refuses_route(next) {
                    // The queue towards the next hop is full (its window too): the origin is
                    // told, where the message was dropped here before, unseen by it.
                    self.undeliverable(route);
                    return Ok(());
                }
                let (key, purpose, origin, hops, seq) = (route.key, route.purpose, route.origin, route.hops, route.seq);
                match self.send_msg(now, next, Message::Route(route)) {
                    Ok(()) => {
                        self.stats.add(Counter::Forwarded, u64::from(!local));
                        self.out.push_back(Output::Forwarded { key, purpose, origin, next, hops });
                        Ok(())
                    }
                    Err(_) if local => Err(CommandError::Backpressure),
                    Err(_) => {
                        // No connection could take it (every slot held by one that may not be
                        // closed): reported here and at its origin.
                        self.report(NodeError::QueueFull { peer: Some(next) });
                        self.give_up(origin, key, purpose, seq);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Routes a message again after its hop failed: `exclude` is that hop. The forward hook
    /// already saw it here, and the failed hop stays counted in `hops`.
    ///
    /// Suspects are routed around ([`Node::app_hop`]). If the failed hop, or a suspect, is the
    /// root by our leaf set, so that only its exclusion would make us deliver here, the message
    /// waits for its probe to settle instead: delivered here once it is declared failed, sent
    /// to it again if it answers (see [`Node::park`]).
    pub(super) fn route_excluding(&mut self, now: Instant, route: Route, exclude: Option<NodeId>) {
        let hop = match self.app_hop(route.key, exclude) {
            AppHop::Hop(h) => h,
            AppHop::Wait(s) => {
                self.park(now, s, route);
                return;
            }
        };
        match hop {
            Hop::Here => self.deliver_route(route, false),
            Hop::Hold if self.pending_total < self.cfg.max_pending_total => self.hold_route(route),
            Hop::Hold => self.undeliverable(route),
            Hop::Next(next) => {
                let (key, purpose, origin, hops) = (route.key, route.purpose, route.origin, route.hops);
                let copy = route.clone();
                match self.send_msg(now, next, Message::Route(route)) {
                    Ok(()) => self.out.push_back(Output::Forwarded { key, purpose, origin, next, hops }),
                    Err(_) => self.undeliverable(copy),
                }
            }
        }
    }

    /// Holds a routed message until we are ready, with the custody of it we have: its sender
    /// keeps its copy until we hand it on (`Node::become_ready`), so that it survives our crash.
    fn hold_route(&mut self, route: Route) {
        self.pending_total += 1;
        let token = self.custody.ctx.take();
        self.held.push(Held::Route(route, token));
    }

    /// Delivers a routed message here: we are its root, or the forward hook consumed it.
    fn deliver_route(&mut self, route: Route, intercepted: bool) {
        if !self.recent.first(self.last_now, &self.cfg, route.origin, route.seq) {
            // A copy of one delivered here already: its sender rerouted it when an ack was
            // lost or late.
            self.stats.add(Counter::DuplicatesDropped, 1);
            return;
        }
        self.stats.add(Counter::Delivered, 1);
        self.delivered_in_custody(route.purpose);
        self.out.push_back(Output::Deliver(Delivery {
            key: route.key,
            purpose: route.purpose,
            origin: route.origin,
            hops: route.hops,
            direct: false,
            intercepted,
            payload: route.payload,
        }));
    }

    pub(super) fn check_app(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        if self.state == State::Left {
            return Err(CommandError::Left);
        }
        self.cfg.check_app_message(purpose, len)
    }

    pub(super) fn deliver_direct(&mut self, msg: Message) {
        if let Message::Direct(d) = msg {
            self.stats.add(Counter::Delivered, 1);
            self.out.push_back(Output::Deliver(Delivery {
                key: self.id(),
                purpose: d.purpose,
                origin: d.origin,
                hops: u8::from(d.origin != self.id()),
                direct: true,
                intercepted: false,
                payload: d.payload,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::Bytes;

    use crate::config::Config;
    use crate::id::NodeId;
    use crate::info::NodeInfo;
    use crate::output::{CommandError, NodeError, Output};
    use crate::time::Instant;
    use crate::wire::{Message, Route};

    use super::super::Node;
    use super::{AppHop, Hop};

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    /// A node with configuration `c`, a member of a ring (a ring of one learns nobody but
    /// through the join protocol).
    fn member(c: Config, now: Instant) -> Node {
        let mut n = Node::new(c, now).unwrap();
        n.state = super::State::Ready;
        n
    }

    #[test]
    fn a_message_dropped_for_want_of_a_connection_is_counted_once() {
        let now = Instant::from_secs(1);
        let mut c = Config::with_trusted_id(NodeId::from_u128(1 << 124), addr(1));
        c.max_connections = 1;
        let mut n = member(c, now);
        let (p1, p2) =
            (NodeInfo::new(NodeId::from_u128(2 << 124), addr(2)), NodeInfo::new(NodeId::from_u128(9 << 124), addr(3)));
        n.learn(now, p1.clone(), true);
        n.learn(now, p2.clone(), true);
        // The only connection slot is taken by a dial to p1 still in progress.
        let to_origin = n.dial(now, p1.global, Some(p1.id)).unwrap();
        n.peers.get_mut(&p1.id).unwrap().set_conn(Some(to_origin));
        while n.poll_output().is_some() {}
        let route = Route { key: p2.id, purpose: 16, origin: p1.id, hops: 1, seq: 7, payload: Bytes::new() };
        assert_eq!(n.route_app(now, route, false), Ok(()));
        assert_eq!(n.stats().dropped, 1);
        let errors = std::iter::from_fn(|| n.poll_output())
            .filter(|o| matches!(o, Output::Event(crate::Event::Error(NodeError::QueueFull { .. }))))
            .count();
        assert_eq!(errors, 1);
        // Its origin is told: a bounce waits for the connection to it being set up.
        assert_eq!(n.stats().undeliverable, 1);
        let bounce = Message::Bounce { origin: p1.id, key: p2.id, purpose: 16, seq: 7, hops: 1 };
        assert_eq!(n.conns.get_mut(&to_origin).unwrap().io().pending.iter().collect::<Vec<_>>(), [&bounce]);
        // The application's own send is refused, not dropped: it is not counted.
        assert_eq!(n.send(now, p2.id, 16, Bytes::new()), Err(CommandError::Backpressure));
        assert_eq!(n.stats().dropped, 1);
    }

    #[test]
    fn a_message_past_the_hop_limit_is_reported_here_and_at_its_origin() {
        let now = Instant::from_secs(1);
        let (mut n, ids) = node_knowing(0x10, &[0x20, 0x30]);
        let (origin, root) = (ids[0], ids[1]);
        let hops = n.cfg.max_hops;
        let route = Route { key: root, purpose: 16, origin, hops, seq: 3, payload: Bytes::new() };
        assert_eq!(n.route_app(now, route, false), Ok(()));
        let s = n.stats();
        assert_eq!((s.dropped, s.undeliverable, s.forwarded), (1, 1, 0));
        let outs: Vec<Output> = std::iter::from_fn(|| n.poll_output()).collect();
        assert!(outs
            .iter()
            .any(|o| matches!(o, Output::Event(crate::Event::Error(NodeError::HopLimit { key })) if *key == root)));
        let to_origin = n.peers[&origin].conn().expect("a dial to the origin");
        let bounce = Message::Bounce { origin, key: root, purpose: 16, seq: 3, hops: 1 };
        assert_eq!(n.conns.get_mut(&to_origin).unwrap().io().pending.iter().collect::<Vec<_>>(), [&bounce]);
    }

    /// A node at `me` that knows `others` directly (all in its leaf set).
    fn node_knowing(me: u128, others: &[u128]) -> (Node, Vec<NodeId>) {
        let now = Instant::from_secs(1);
        let mut n = member(Config::with_trusted_id(NodeId::from_u128(me << 120), addr(1)), now);
        let ids: Vec<NodeId> = others.iter().map(|&x| NodeId::from_u128(x << 120)).collect();
        for (i, &id) in ids.iter().enumerate() {
            n.learn(now, NodeInfo::new(id, addr(2 + i as u16)), true);
        }
        (n, ids)
    }

    /// A leaf set that lost members and has not repaired yet covers a key its neighbour's does
    /// not: by the tables, the neighbour sends the message back by prefix, and the two pass it
    /// to and fro until the hop limit. Past `LOOP_HOPS` each hop must be numerically closer.
    #[test]
    fn a_message_circling_between_tables_that_disagree_goes_numerically_closer() {
        let now = Instant::from_secs(1);
        let mut c = Config::with_trusted_id(NodeId::from_u128(0x80 << 120), addr(1));
        c.leaf_set_size = 2;
        let mut n = member(c, now);
        // Learned first, `far` holds the routing-table cell of digit 7; `near` is our only
        // leaf-set member below, and the key lies beyond it.
        let (far, near, above) =
            (NodeId::from_u128(0x70 << 120), NodeId::from_u128(0x7f8 << 116), NodeId::from_u128(0x81 << 120));
        for (i, id) in [far, near, above].into_iter().enumerate() {
            n.learn(now, NodeInfo::new(id, addr(2 + i as u16)), true);
        }
        assert_eq!(n.leaf.ccw(), &[near][..]);
        let key = NodeId::from_u128(0x7f0 << 116);
        assert!(!n.leaf.covers(key));
        assert_eq!(n.decide_route(key, 3), Hop::Next(far), "by prefix, as the tables say");
        assert_eq!(n.decide_route(key, super::LOOP_HOPS), Hop::Next(near), "numerically closer");
        // Once nothing we know is closer, the tables decide: a key just above us is ours.
        let mine = NodeId::from_u128((0x80 << 120) + 1);
        assert_eq!(n.decide_route(mine, super::LOOP_HOPS), Hop::Here);
    }

    #[test]
    fn an_application_message_skips_every_suspect_and_waits_for_a_suspected_root() {
        let now = Instant::from_secs(2);
        // Closest to the key first: b, c, a, then us.
        let (mut n, ids) = node_knowing(0x10, &[0x20, 0x30, 0x40]);
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let key = NodeId::from_u128(0x31 << 120);
        let next = |n: &Node, exclude| match n.app_hop(key, exclude) {
            AppHop::Hop(Hop::Next(x)) => Some(x),
            AppHop::Wait(x) => Some(NodeId::from_u128(!x.as_u128())),
            AppHop::Hop(_) => None,
        };
        assert_eq!(next(&n, None), Some(b));
        // The failed hop aside, and every suspect: never back to one of them.
        assert_eq!(next(&n, Some(b)), Some(c));
        n.suspect(now, b);
        assert_eq!(next(&n, None), Some(c));
        n.suspect(now, c);
        assert_eq!(next(&n, Some(b)), Some(a));
        // Only suspects are closer than us: wait for the root by our leaf set, not deliver.
        n.suspect(now, a);
        assert_eq!(next(&n, None), Some(NodeId::from_u128(!b.as_u128())));
    }

    #[test]
    fn a_suspect_is_not_skipped_for_a_member_with_a_shorter_prefix() {
        let now = Instant::from_secs(2);
        // Key 0x3f..: b (0x3e..) is its root; x (0x41..) is closer than us (0x35..) but shares
        // no digit with the key, and its routing table could send the message straight back.
        let (mut n, ids) = node_knowing(0x35, &[0x3e, 0x41]);
        let (b, x) = (ids[0], ids[1]);
        let key = NodeId::from_u128(0x3f << 120);
        assert!(matches!(n.app_hop(key, None), AppHop::Hop(Hop::Next(h)) if h == b));
        n.suspect(now, b);
        assert!(matches!(n.app_hop(key, None), AppHop::Wait(h) if h == b));
        assert!(matches!(n.app_hop(key, Some(b)), AppHop::Wait(h) if h == b), "not via {x}");
    }
}
