//! Routing: the next-hop decision, application routing and delivery.

use crate::config::MIN_APP_PURPOSE;
use crate::id::NodeId;
use crate::output::{CommandError, ConnId, Delivery, Forwarding, NodeError, Output, Verdict};
use crate::time::Instant;
use crate::wire::{Message, Route};

use super::join::Held;
use super::{Node, State};

pub(super) enum Hop {
    Here,
    Next(NodeId),
    /// Not ready and nobody better known: keep it until ready.
    Hold,
}

impl Node {
    /// A routed or direct application message from a peer.
    pub(super) fn on_app_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        match msg {
            Message::Route(r) => {
                self.route_received(conn);
                if !self.accepts_purpose(r.purpose) {
                    self.protocol_error(now, conn, "routed message with a reserved purpose");
                    return;
                }
                // A failure was already counted and reported inside route_app.
                let _ = self.route_app(now, r, false);
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

    pub(super) fn decide(&self, key: NodeId, exclude: Option<NodeId>) -> Hop {
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
            let best = match exclude {
                Some(x) => self.leaf.closest_excluding(key, x),
                None => self.leaf.closest(key),
            };
            return if best == me { Hop::Here } else { Hop::Next(best) };
        }
        let row = me.common_prefix_len(key);
        if row >= crate::id::DIGITS {
            return Hop::Here;
        }
        // Outside the leaf set, a suspect (silent past its ack timeout, being probed) is
        // routed around while an alternative exists (MSPastry): it is only a shortcut.
        let trusted = |id: NodeId| ok(id) && self.peers.get(&id).is_none_or(|p| p.suspected.is_none());
        if let Some(cell) = self.table.get(row, usize::from(key.digit(row))) {
            if trusted(cell.id) {
                return Hop::Next(cell.id);
            }
        }
        // The rare case: anyone sharing as long a prefix and numerically closer.
        let mut best = me;
        let ok = trusted;
        let candidates = self.leaf.cw().iter().chain(self.leaf.ccw()).copied();
        let candidates = candidates.chain(self.table.iter().map(|c| c.id)).chain(self.hood.iter().map(|e| e.1));
        for x in candidates {
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

    pub(super) fn route_app(&mut self, now: Instant, mut route: Route, local: bool) -> Result<(), CommandError> {
        match self.decide(route.key, None) {
            Hop::Here => {
                self.deliver_route(route, false);
                Ok(())
            }
            Hop::Hold => {
                if self.pending_total >= self.cfg.max_pending_total {
                    return self.drop_msg(None, local);
                }
                self.pending_total += 1;
                self.held.push_back(Held::Route(route));
                Ok(())
            }
            Hop::Next(next) => {
                if route.hops >= self.cfg.max_hops {
                    self.stats.dropped += 1;
                    self.report(NodeError::HopLimit { key: route.key });
                    return Ok(());
                }
                // Layer messages (purposes below 16) are not the application's to judge.
                if let Some(hook) = self.hook.as_mut().filter(|_| route.purpose >= MIN_APP_PURPOSE) {
                    let info = &self.peers[&next].info;
                    let mut f = Forwarding {
                        key: route.key,
                        purpose: route.purpose,
                        origin: route.origin,
                        hops: route.hops,
                        payload: route.payload,
                    };
                    let verdict = hook.on_forward(&mut f, info);
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
                            self.stats.dropped += 1;
                            return Ok(());
                        }
                    }
                }
                route.hops = route.hops.saturating_add(1);
                let (key, purpose, origin, hops) = (route.key, route.purpose, route.origin, route.hops);
                match self.send_msg(now, next, Message::Route(route)) {
                    Ok(()) => {
                        self.stats.forwarded += u64::from(!local);
                        self.out.push_back(Output::Forwarded { key, purpose, origin, next, hops });
                        Ok(())
                    }
                    Err(_) => self.drop_msg(Some(next), local),
                }
            }
        }
    }

    /// Routes a message again after its hop failed: `exclude` is that hop. The forward hook
    /// already saw it here, and the failed hop stays counted in `hops`.
    ///
    /// If the failed hop is the root by our leaf set, so that only its exclusion would make us
    /// deliver here, the message waits for the hop's probe to settle instead: delivered here
    /// once the hop is declared failed, sent to it again if it answers (see [`Node::park`]).
    pub(super) fn route_excluding(&mut self, now: Instant, route: Route, exclude: Option<NodeId>) {
        match self.decide(route.key, exclude) {
            Hop::Here => match (exclude, self.decide(route.key, None)) {
                (Some(x), Hop::Next(n)) if n == x => self.park(now, x, route),
                _ => self.deliver_route(route, false),
            },
            Hop::Hold if self.pending_total < self.cfg.max_pending_total => {
                self.pending_total += 1;
                self.held.push_back(Held::Route(route));
            }
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

    /// Delivers a routed message here: we are its root, or the forward hook consumed it.
    fn deliver_route(&mut self, route: Route, intercepted: bool) {
        if !self.recent.first(self.last_now, route.origin, route.seq) {
            // A copy of one delivered here already: its sender rerouted it when an ack was
            // lost or late.
            self.stats.duplicates_dropped += 1;
            return;
        }
        self.stats.delivered += 1;
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

    pub(super) fn drop_msg(&mut self, peer: Option<NodeId>, local: bool) -> Result<(), CommandError> {
        if local {
            return Err(CommandError::Backpressure);
        }
        self.stats.dropped += 1;
        self.report(NodeError::QueueFull { peer });
        Ok(())
    }

    pub(super) fn check_app(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        if self.state == State::Left {
            return Err(CommandError::Left);
        }
        self.cfg.check_app_message(purpose, len)
    }

    pub(super) fn deliver_direct(&mut self, msg: Message) {
        if let Message::Direct(d) = msg {
            self.stats.delivered += 1;
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
    use crate::wire::Route;

    use super::super::Node;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn a_message_dropped_for_want_of_a_connection_is_counted_once() {
        let now = Instant::from_secs(1);
        let mut c = Config::with_trusted_id(NodeId::from_u128(1 << 124), addr(1));
        c.max_connections = 1;
        let mut n = Node::new(c, now).unwrap();
        let (p1, p2) =
            (NodeInfo::new(NodeId::from_u128(2 << 124), addr(2)), NodeInfo::new(NodeId::from_u128(9 << 124), addr(3)));
        n.learn(now, p1.clone(), true);
        n.learn(now, p2.clone(), true);
        // The only connection slot is taken by a dial still in progress.
        n.dial(now, p1.global, Some(p1.id)).unwrap();
        while n.poll_output().is_some() {}
        let route = Route { key: p2.id, purpose: 16, origin: p1.id, hops: 1, seq: 0, payload: Bytes::new() };
        assert_eq!(n.route_app(now, route, false), Ok(()));
        assert_eq!(n.stats().dropped, 1);
        let errors = std::iter::from_fn(|| n.poll_output())
            .filter(|o| matches!(o, Output::Event(crate::Event::Error(NodeError::QueueFull { .. }))))
            .count();
        assert_eq!(errors, 1);
        // The application's own send is refused, not dropped: it is not counted.
        assert_eq!(n.send(now, p2.id, 16, Bytes::new()), Err(CommandError::Backpressure));
        assert_eq!(n.stats().dropped, 1);
    }
}
